//! State handles: small `Send` values a function keeps in its fields.
//!
//! A handle is obtained once, in `open()`, and used for every record. It holds
//! no data and no reference to the backend: each access passes the context of
//! the record being processed, which knows the current key. That keeps user
//! functions `Send` (they move to task threads) and keeps the hot path free of
//! locks and reference counting.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::backend::{KeyedStateAccess, KeyedStateBackend, StateCodec};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
use crate::error::StateError;
use crate::{Key, StateValue};

/// On the RocksDB backend, answers from the store (`$r`) and returns; on the
/// heap backend, falls through to the typed in-memory path.
macro_rules! on_rocks {
    ($backend:expr, $id:expr, |$r:ident| $body:expr) => {
        #[cfg(feature = "rocksdb")]
        if let Some($r) = $backend.rocks($id)? {
            return $body;
        }
    };
}

/// What a map state's user key must be.
pub trait MapKey: Hash + Eq + StateValue {}
impl<T: Hash + Eq + StateValue> MapKey for T {}

impl<K: Key> KeyedStateBackend<K> {
    /// Registers a value state (Flink's `getState`).
    pub fn get_state<T: StateValue>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<T>, StateError> {
        let id = self.register::<T, T>(
            &desc.name,
            StateKind::Value,
            desc.queryable.as_deref(),
            StateCodec::value::<T>(),
        )?;
        Ok(ValueState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers a list state (Flink's `getListState`).
    pub fn get_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListState<T>, StateError> {
        let id = self.register::<T, Vec<T>>(
            &desc.name,
            StateKind::List,
            desc.queryable.as_deref(),
            StateCodec::list::<T>(),
        )?;
        Ok(ListState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers a map state (Flink's `getMapState`).
    pub fn get_map_state<UK: MapKey, UV: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<UK, UV>, StateError> {
        let id = self.register::<(UK, UV), FxHashMap<UK, UV>>(
            &desc.name,
            StateKind::Map,
            desc.queryable.as_deref(),
            StateCodec::map::<UK, UV>(),
        )?;
        Ok(MapState {
            id,
            _t: PhantomData,
        })
    }

    /// Registers a reducing state (Flink's `getReducingState`).
    pub fn get_reducing_state<T: StateValue>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<T>, StateError> {
        let id = self.register::<T, T>(
            &desc.name,
            StateKind::Reducing,
            desc.queryable.as_deref(),
            StateCodec::value::<T>(),
        )?;
        Ok(ReducingState {
            id,
            reduce: desc.reduce.clone(),
        })
    }

    /// Registers an aggregating state (Flink's `getAggregatingState`).
    pub fn get_aggregating_state<F: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<F>,
    ) -> Result<AggregatingState<F>, StateError> {
        let id = self.register::<F::Acc, F::Acc>(
            &desc.name,
            StateKind::Aggregating,
            desc.queryable.as_deref(),
            StateCodec::value::<F::Acc>(),
        )?;
        Ok(AggregatingState {
            id,
            function: desc.function.clone(),
        })
    }
}

/// One value per key (Flink's `ValueState`).
pub struct ValueState<T> {
    id: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl<T: StateValue> ValueState<T> {
    /// The current key's value, `None` if it has none.
    #[inline]
    pub fn value<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Option<T>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.value_get(self.id));
        let (map, key) = b.heap_slot_ref::<T>(self.id)?;
        Ok(map.get(key).cloned())
    }

    /// Replaces the current key's value.
    #[inline]
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.value_put(self.id, &value));
        let (map, key) = b.heap_slot::<T>(self.id)?;
        match map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                map.insert(key.clone(), value);
            }
        }
        Ok(())
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.delete(self.id));
        let (map, key) = b.heap_slot::<T>(self.id)?;
        map.remove(key);
        Ok(())
    }
}

/// A list per key (Flink's `ListState`).
pub struct ListState<T> {
    id: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl<T: StateValue> ListState<T> {
    /// The current key's elements in insertion order (empty if none).
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Vec<T>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.list_get(self.id));
        let (map, key) = b.heap_slot_ref::<Vec<T>>(self.id)?;
        Ok(map.get(key).cloned().unwrap_or_default())
    }

    /// Appends one element.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.list_add(self.id, std::iter::once(&value)));
        let (map, key) = b.heap_slot::<Vec<T>>(self.id)?;
        match map.get_mut(key) {
            Some(list) => list.push(value),
            None => {
                map.insert(key.clone(), vec![value]);
            }
        }
        Ok(())
    }

    /// Appends every element of `values`.
    pub fn add_all<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| {
            let values: Vec<T> = values.into_iter().collect();
            r.list_add(self.id, &values)
        });
        let (map, key) = b.heap_slot::<Vec<T>>(self.id)?;
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return Ok(());
        }
        match map.get_mut(key) {
            Some(list) => list.extend(values),
            None => {
                map.insert(key.clone(), values.collect());
            }
        }
        Ok(())
    }

    /// Replaces the list; an empty `values` clears it.
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.list_put(self.id, &values));
        let (map, key) = b.heap_slot::<Vec<T>>(self.id)?;
        if values.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.clone(), values);
        }
        Ok(())
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.delete(self.id));
        let (map, key) = b.heap_slot::<Vec<T>>(self.id)?;
        map.remove(key);
        Ok(())
    }
}

/// A map per key (Flink's `MapState`).
pub struct MapState<UK, UV> {
    id: u32,
    _t: PhantomData<fn() -> (UK, UV)>,
}

impl<UK, UV> Clone for MapState<UK, UV> {
    fn clone(&self) -> Self {
        MapState {
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl<UK: MapKey, UV: StateValue> MapState<UK, UV> {
    fn with_map<K: Key, R>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        f: impl FnOnce(Option<&FxHashMap<UK, UV>>) -> R,
    ) -> Result<R, StateError> {
        let (map, key) = backend.heap_slot_ref::<FxHashMap<UK, UV>>(self.id)?;
        Ok(f(map.get(key)))
    }

    /// The value under `user_key`.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.map_get(self.id, user_key));
        self.with_map(b, |m| m.and_then(|m| m.get(user_key).cloned()))
    }

    /// True when `user_key` has a value.
    pub fn contains<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r
            .map_get::<UK, UV>(self.id, user_key)
            .map(|v| v.is_some()));
        self.with_map(b, |m| m.is_some_and(|m| m.contains_key(user_key)))
    }

    /// Sets `user_key` to `value`.
    pub fn put<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: UK,
        value: UV,
    ) -> Result<(), StateError> {
        self.put_all(ctx, [(user_key, value)])
    }

    /// Sets every pair of `entries`.
    pub fn put_all<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| entries
            .into_iter()
            .try_for_each(|(k, v)| r.map_put(self.id, &k, &v)));
        let (map, key) = b.heap_slot::<FxHashMap<UK, UV>>(self.id)?;
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        match map.get_mut(key) {
            Some(m) => m.extend(entries),
            None => {
                map.insert(key.clone(), entries.collect());
            }
        }
        Ok(())
    }

    /// Removes `user_key`; the key's map disappears with its last entry.
    pub fn remove<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| {
            let old = r.map_get::<UK, UV>(self.id, user_key)?;
            if old.is_some() {
                r.map_remove(self.id, user_key)?;
            }
            Ok(old)
        });
        let (map, key) = b.heap_slot::<FxHashMap<UK, UV>>(self.id)?;
        let Some(m) = map.get_mut(key) else {
            return Ok(None);
        };
        let removed = m.remove(user_key);
        if m.is_empty() {
            map.remove(key);
        }
        Ok(removed)
    }

    /// Every entry (in no particular order).
    pub fn entries<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.map_entries(self.id));
        self.with_map(b, |m| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }

    /// Every user key.
    pub fn keys<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Vec<UK>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r
            .map_entries::<UK, UV>(self.id)
            .map(|e| e.into_iter().map(|(k, _)| k).collect()));
        self.with_map(b, |m| {
            m.map(|m| m.keys().cloned().collect()).unwrap_or_default()
        })
    }

    /// Every value.
    pub fn values<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Vec<UV>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r
            .map_entries::<UK, UV>(self.id)
            .map(|e| e.into_iter().map(|(_, v)| v).collect()));
        self.with_map(b, |m| {
            m.map(|m| m.values().cloned().collect()).unwrap_or_default()
        })
    }

    /// True when the current key's map has no entry.
    pub fn is_empty<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<bool, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.map_is_empty(self.id));
        self.with_map(b, |m| m.is_none_or(|m| m.is_empty()))
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.map_clear(self.id));
        let (map, key) = b.heap_slot::<FxHashMap<UK, UV>>(self.id)?;
        map.remove(key);
        Ok(())
    }
}

/// A value folded by a reduce function (Flink's `ReducingState`).
pub struct ReducingState<T> {
    id: u32,
    reduce: ReduceFn<T>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            id: self.id,
            reduce: self.reduce.clone(),
        }
    }
}

impl<T: StateValue> ReducingState<T> {
    /// The reduced value, `None` before the first `add`.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Option<T>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.value_get(self.id));
        let (map, key) = b.heap_slot_ref::<T>(self.id)?;
        Ok(map.get(key).cloned())
    }

    /// Folds `value` into the stored value and returns the new one.
    #[inline]
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<T, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| {
            let next = match r.value_get::<T>(self.id)? {
                Some(old) => (self.reduce)(old, value),
                None => value,
            };
            r.value_put(self.id, &next)?;
            Ok(next)
        });
        let (map, key) = b.heap_slot::<T>(self.id)?;
        match map.get_mut(key) {
            Some(slot) => {
                // Move the old value out without cloning: replace it with the
                // new input, reduce, and store the result back.
                let old = std::mem::replace(slot, value.clone());
                let reduced = (self.reduce)(old, value);
                *slot = reduced.clone();
                Ok(reduced)
            }
            None => {
                map.insert(key.clone(), value.clone());
                Ok(value)
            }
        }
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.delete(self.id));
        let (map, key) = b.heap_slot::<T>(self.id)?;
        map.remove(key);
        Ok(())
    }
}

/// An accumulator folded by an [`AggregateFunction`] (Flink's `AggregatingState`).
pub struct AggregatingState<F> {
    id: u32,
    function: Arc<F>,
}

impl<F> Clone for AggregatingState<F> {
    fn clone(&self) -> Self {
        AggregatingState {
            id: self.id,
            function: self.function.clone(),
        }
    }
}

impl<F: AggregateFunction> AggregatingState<F> {
    /// The result for the current key, `None` before the first `add`.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Option<F::Out>, StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r
            .value_get::<F::Acc>(self.id)
            .map(|acc| acc.map(|acc| self.function.get_result(&acc))));
        let (map, key) = b.heap_slot_ref::<F::Acc>(self.id)?;
        Ok(map.get(key).map(|acc| self.function.get_result(acc)))
    }

    /// Folds `value` into the current key's accumulator.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: F::In,
    ) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| {
            let mut acc = match r.value_get(self.id)? {
                Some(acc) => acc,
                None => self.function.create_accumulator(),
            };
            self.function.add(value, &mut acc);
            r.value_put(self.id, &acc)
        });
        let (map, key) = b.heap_slot::<F::Acc>(self.id)?;
        match map.get_mut(key) {
            Some(acc) => self.function.add(value, acc),
            None => {
                let mut acc = self.function.create_accumulator();
                self.function.add(value, &mut acc);
                map.insert(key.clone(), acc);
            }
        }
        Ok(())
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let b = ctx.keyed_state_backend();
        on_rocks!(b, self.id, |r| r.delete(self.id));
        let (map, key) = b.heap_slot::<F::Acc>(self.id)?;
        map.remove(key);
        Ok(())
    }
}

macro_rules! debug_handle {
    ($($name:ident<$($g:ident),+>),+) => {
        $(impl<$($g),+> std::fmt::Debug for $name<$($g),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.id).finish()
            }
        })+
    };
}

debug_handle!(
    ValueState<T>,
    ListState<T>,
    MapState<UK, UV>,
    ReducingState<T>,
    AggregatingState<F>
);
