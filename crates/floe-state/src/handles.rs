//! State handles: small `Send` values a function keeps in its fields.
//!
//! A handle is obtained once, in `open()`, and used for every record. It holds
//! no data and no reference to the backend: each access passes the context of
//! the record being processed, which knows the current key. That keeps user
//! functions `Send` (they move to task threads) and keeps the hot path free of
//! locks and reference counting. Each access is one call into the backend's
//! store (`KeyedStore`) at the current key, with the handle's types: the
//! heap store works on typed values in place, a byte store encodes.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::backend::{KeyedStateAccess, KeyedStateBackend};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
use crate::error::StateError;
use crate::store::{KeyedStore, ListShape, MapShape, StateRef, ValueShape};
pub use crate::types::MapKey;
use crate::types::{Key, StateValue};

impl<K: Key> KeyedStateBackend<K> {
    /// Registers a value state (Flink's `getState`).
    pub fn get_state<T: StateValue>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<T>, StateError> {
        let state = self.register::<T, ValueShape<T>>(
            &desc.name,
            StateKind::Value,
            desc.queryable.as_deref(),
        )?;
        Ok(ValueState {
            state,
            _t: PhantomData,
        })
    }

    /// Registers a list state (Flink's `getListState`).
    pub fn get_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListState<T>, StateError> {
        let state = self.register::<T, ListShape<T>>(
            &desc.name,
            StateKind::List,
            desc.queryable.as_deref(),
        )?;
        Ok(ListState {
            state,
            _t: PhantomData,
        })
    }

    /// Registers a map state (Flink's `getMapState`).
    pub fn get_map_state<UK: MapKey, UV: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<UK, UV>, StateError> {
        let state = self.register::<(UK, UV), MapShape<UK, UV>>(
            &desc.name,
            StateKind::Map,
            desc.queryable.as_deref(),
        )?;
        Ok(MapState {
            state,
            _t: PhantomData,
        })
    }

    /// Registers a reducing state (Flink's `getReducingState`).
    pub fn get_reducing_state<T: StateValue>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<T>, StateError> {
        let state = self.register::<T, ValueShape<T>>(
            &desc.name,
            StateKind::Reducing,
            desc.queryable.as_deref(),
        )?;
        Ok(ReducingState {
            state,
            reduce: desc.reduce.clone(),
        })
    }

    /// Registers an aggregating state (Flink's `getAggregatingState`).
    pub fn get_aggregating_state<F: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<F>,
    ) -> Result<AggregatingState<F>, StateError> {
        let state = self.register::<F::Acc, ValueShape<F::Acc>>(
            &desc.name,
            StateKind::Aggregating,
            desc.queryable.as_deref(),
        )?;
        Ok(AggregatingState {
            state,
            function: desc.function.clone(),
        })
    }
}

/// One value per key (Flink's `ValueState`).
pub struct ValueState<T> {
    state: StateRef<ValueShape<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            state: self.state,
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
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_get(at, self.state)
    }

    /// Replaces the current key's value.
    #[inline]
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_put(at, self.state, value)
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.clear::<ValueShape<T>>(at, self.state)
    }
}

/// A list per key (Flink's `ListState`).
pub struct ListState<T> {
    state: StateRef<ListShape<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            state: self.state,
            _t: PhantomData,
        }
    }
}

impl<T: StateValue> ListState<T> {
    /// The current key's elements in insertion order (empty if none).
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Vec<T>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.list_get(at, self.state)
    }

    /// Appends one element.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<(), StateError> {
        self.add_all(ctx, std::iter::once(value))
    }

    /// Appends every element of `values`.
    pub fn add_all<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.list_add(at, self.state, values)
    }

    /// Replaces the list; an empty `values` clears it.
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.list_put(at, self.state, values)
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.clear::<ListShape<T>>(at, self.state)
    }
}

/// A map per key (Flink's `MapState`).
pub struct MapState<UK, UV> {
    state: StateRef<MapShape<UK, UV>>,
    _t: PhantomData<fn() -> (UK, UV)>,
}

impl<UK, UV> Clone for MapState<UK, UV> {
    fn clone(&self) -> Self {
        MapState {
            state: self.state,
            _t: PhantomData,
        }
    }
}

impl<UK: MapKey, UV: StateValue> MapState<UK, UV> {
    /// The value under `user_key`.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_get(at, self.state, user_key)
    }

    /// True when `user_key` has a value.
    pub fn contains<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_contains::<UK, UV>(at, self.state, user_key)
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
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_put_all(at, self.state, entries)
    }

    /// Removes `user_key`; the key's map disappears with its last entry.
    pub fn remove<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_remove(at, self.state, user_key)
    }

    /// Every entry (in no particular order).
    pub fn entries<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_entries(at, self.state)
    }

    /// Every user key.
    pub fn keys<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Vec<UK>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        let mut keys = Vec::new();
        store.map_for_each::<UK, UV>(at, self.state, |k, _| keys.push(k.clone()))?;
        Ok(keys)
    }

    /// Every value.
    pub fn values<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Vec<UV>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        let mut values = Vec::new();
        store.map_for_each::<UK, UV>(at, self.state, |_, v| values.push(v.clone()))?;
        Ok(values)
    }

    /// True when the current key's map has no entry.
    pub fn is_empty<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<bool, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.map_is_empty::<UK, UV>(at, self.state)
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.clear::<MapShape<UK, UV>>(at, self.state)
    }
}

/// A value folded by a reduce function (Flink's `ReducingState`).
pub struct ReducingState<T> {
    state: StateRef<ValueShape<T>>,
    reduce: ReduceFn<T>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            state: self.state,
            reduce: self.reduce.clone(),
        }
    }
}

impl<T: StateValue> ReducingState<T> {
    /// The reduced value, `None` before the first `add`.
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Option<T>, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_get(at, self.state)
    }

    /// Folds `value` into the stored value and returns the new one.
    #[inline]
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<T, StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_upsert(at, self.state, |slot: Option<&mut T>| match slot {
            Some(slot) => {
                // Move the old value out without cloning: replace it with
                // the new input, reduce, and store the result back.
                let old = std::mem::replace(slot, value.clone());
                let reduced = (self.reduce)(old, value);
                *slot = reduced.clone();
                (None, reduced)
            }
            None => (Some(value.clone()), value),
        })
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.clear::<ValueShape<T>>(at, self.state)
    }
}

/// An accumulator folded by an [`AggregateFunction`] (Flink's `AggregatingState`).
pub struct AggregatingState<F: AggregateFunction> {
    state: StateRef<ValueShape<F::Acc>>,
    function: Arc<F>,
}

impl<F: AggregateFunction> Clone for AggregatingState<F> {
    fn clone(&self) -> Self {
        AggregatingState {
            state: self.state,
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
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_read(at, self.state, |acc: Option<&F::Acc>| {
            acc.map(|acc| self.function.get_result(acc))
        })
    }

    /// Folds `value` into the current key's accumulator.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: F::In,
    ) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.value_upsert(at, self.state, |acc: Option<&mut F::Acc>| match acc {
            Some(acc) => {
                self.function.add(value, acc);
                (None, ())
            }
            None => {
                let mut acc = self.function.create_accumulator();
                self.function.add(value, &mut acc);
                (Some(acc), ())
            }
        })
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let (store, at) = ctx.keyed_state_backend().store_at(self.state.id())?;
        store.clear::<ValueShape<F::Acc>>(at, self.state)
    }
}

macro_rules! debug_handle {
    ($($name:ident<$($g:ident $(: $b:path)?),+>),+) => {
        $(impl<$($g $(: $b)?),+> std::fmt::Debug for $name<$($g),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.state.id()).finish()
            }
        })+
    };
}

debug_handle!(
    ValueState<T>,
    ListState<T>,
    MapState<UK, UV>,
    ReducingState<T>,
    AggregatingState<F: AggregateFunction>
);
