//! State handles: small `Send` values a function keeps in its fields.
//!
//! A handle is obtained once, in `open()`, and used for every record. It holds
//! no data and no reference to the backend: each access passes the context of
//! the record being processed, which knows the current key. That keeps user
//! functions `Send` (they move to task threads) and keeps the hot path free of
//! locks and reference counting. Each access is one call into the backend's
//! store (`KeyedStore`) at the current key, with the handle's types: the
//! heap store works on typed values in place, a byte store encodes.
//!
//! A state with a TTL ([`crate::ttl`]) is registered with timestamped
//! values ([`TtlValue`]) and its handle wraps each access the way Flink's
//! TTL decorators do: stamps what it writes, checks what it reads.

use std::any::type_name;
use std::cell::Cell;
use std::sync::Arc;

use crate::backend::{Declaration, KeyedStateAccess, KeyedStateBackend};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
use crate::error::StateError;
use crate::schema::{
    ContentLayout, ContentMigration, SerializerIdentity, encoded_len, no_user_key,
};
use crate::store::dispatch::AnyStore;
use crate::store::{At, KeyedStore, ListShape, MapShape, StateId, StateRef, ValueShape};
use crate::ttl::{Ttl, TtlValue};
pub use crate::types::MapKey;
use crate::types::{Key, StateValue};

impl<K: Key> KeyedStateBackend<K> {
    /// Registers a value state (Flink's `getState`).
    pub fn get_state<T: StateValue>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<T>, StateError> {
        Ok(ValueState {
            state: Binding::bound(self.value_access(desc)?),
        })
    }

    fn value_access<T: StateValue>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueAccess<T>, StateError> {
        let decl = Declaration {
            name: &desc.name,
            kind: StateKind::Value,
            queryable: desc.queryable.as_deref(),
            serializer: SerializerIdentity::postcard(&[type_name::<T>()]),
            migration: ContentMigration::of(
                desc.migration.as_ref(),
                |old| vec![old],
                ContentLayout::Value,
                desc.ttl.is_some(),
                no_user_key,
            ),
        };
        let state = match &desc.ttl {
            None => Access::Plain(self.register::<T, ValueShape<T>>(decl)?),
            Some(c) => Access::ttl(self.register_ttl::<T, _>(decl, c)?),
        };
        Ok(state)
    }

    /// Registers a list state (Flink's `getListState`).
    pub fn get_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListState<T>, StateError> {
        Ok(ListState {
            state: Binding::bound(self.list_access(desc)?),
        })
    }

    fn list_access<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListAccess<T>, StateError> {
        let decl = Declaration {
            name: &desc.name,
            kind: StateKind::List,
            queryable: desc.queryable.as_deref(),
            serializer: SerializerIdentity::postcard(&[type_name::<T>()]),
            migration: ContentMigration::of(
                desc.migration.as_ref(),
                |old| vec![old],
                ContentLayout::List,
                desc.ttl.is_some(),
                no_user_key,
            ),
        };
        let state = match &desc.ttl {
            None => Access::Plain(self.register::<T, ListShape<T>>(decl)?),
            Some(c) => Access::ttl(self.register_ttl::<T, _>(decl, c)?),
        };
        Ok(state)
    }

    /// Registers a map state (Flink's `getMapState`).
    pub fn get_map_state<UK: MapKey, UV: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<UK, UV>, StateError> {
        Ok(MapState {
            state: Binding::bound(self.map_access(desc)?),
        })
    }

    fn map_access<UK: MapKey, UV: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapAccess<UK, UV>, StateError> {
        let decl = Declaration {
            name: &desc.name,
            kind: StateKind::Map,
            queryable: desc.queryable.as_deref(),
            serializer: SerializerIdentity::postcard(&[type_name::<UK>(), type_name::<UV>()]),
            migration: ContentMigration::of(
                desc.migration.as_ref(),
                |old| vec![type_name::<UK>(), old],
                ContentLayout::Map,
                desc.ttl.is_some(),
                encoded_len::<UK>,
            ),
        };
        let state = match &desc.ttl {
            None => Access::Plain(self.register::<(UK, UV), MapShape<UK, UV>>(decl)?),
            Some(c) => Access::ttl(self.register_ttl::<(UK, UV), _>(decl, c)?),
        };
        Ok(state)
    }

    /// Registers a reducing state (Flink's `getReducingState`).
    pub fn get_reducing_state<T: StateValue>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<T>, StateError> {
        Ok(ReducingState {
            state: Binding::bound(self.reducing_access(desc)?),
            reduce: desc.reduce.clone(),
        })
    }

    fn reducing_access<T: StateValue>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ValueAccess<T>, StateError> {
        let decl = Declaration {
            name: &desc.name,
            kind: StateKind::Reducing,
            queryable: desc.queryable.as_deref(),
            serializer: SerializerIdentity::postcard(&[type_name::<T>()]),
            migration: ContentMigration::of(
                desc.migration.as_ref(),
                |old| vec![old],
                ContentLayout::Value,
                desc.ttl.is_some(),
                no_user_key,
            ),
        };
        let state = match &desc.ttl {
            None => Access::Plain(self.register::<T, ValueShape<T>>(decl)?),
            Some(c) => Access::ttl(self.register_ttl::<T, _>(decl, c)?),
        };
        Ok(state)
    }

    /// Registers an aggregating state (Flink's `getAggregatingState`).
    pub fn get_aggregating_state<F: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<F>,
    ) -> Result<AggregatingState<F>, StateError> {
        Ok(AggregatingState {
            state: Binding::bound(self.aggregating_access(desc)?),
            function: desc.function.clone(),
        })
    }

    fn aggregating_access<F: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<F>,
    ) -> Result<ValueAccess<F::Acc>, StateError> {
        let decl = Declaration {
            name: &desc.name,
            kind: StateKind::Aggregating,
            queryable: desc.queryable.as_deref(),
            serializer: SerializerIdentity::postcard(&[type_name::<F::Acc>()]),
            migration: ContentMigration::of(
                desc.accumulator_migration(),
                |old| vec![old],
                ContentLayout::Value,
                desc.ttl.is_some(),
                no_user_key,
            ),
        };
        let state = match &desc.ttl {
            None => Access::Plain(self.register::<F::Acc, ValueShape<F::Acc>>(decl)?),
            Some(c) => Access::ttl(self.register_ttl::<F::Acc, _>(decl, c)?),
        };
        Ok(state)
    }
}

/// How a handle reaches its state: directly, or through TTL's timestamps
/// ([`crate::ttl`]). Matching on it is all a state without TTL pays for
/// TTL: one predictable branch on a field of the handle, then the same
/// store call as before TTL existed.
enum Access<P, Q> {
    Plain(StateRef<P>),
    Ttl(StateRef<Q>, Ttl),
}

impl<P, Q> Clone for Access<P, Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, Q> Copy for Access<P, Q> {}

impl<P, Q> Access<P, Q> {
    fn ttl((state, ttl): (StateRef<Q>, Ttl)) -> Self {
        Access::Ttl(state, ttl)
    }

    fn id(&self) -> StateId {
        match self {
            Access::Plain(s) => s.id(),
            Access::Ttl(s, _) => s.id(),
        }
    }
}

/// A value-like TTL state's shape: one timestamped value per key.
type TtlValueShape<T> = ValueShape<TtlValue<T>>;

/// A value state's access (also reducing and aggregating states').
type ValueAccess<T> = Access<ValueShape<T>, TtlValueShape<T>>;
/// A list state's access.
type ListAccess<T> = Access<ListShape<T>, ListShape<TtlValue<T>>>;
/// What a map state's `entries`, `keys` and `values` return: an owning
/// iterator over a snapshot of the current key's map.
pub type MapStateIter<T> = std::vec::IntoIter<T>;

/// What a list state's `get` returns: an owning iterator over a snapshot
/// of the current key's list.
pub type ListStateIter<T> = std::vec::IntoIter<T>;

/// A map state's access.
type MapAccess<UK, UV> = Access<MapShape<UK, UV>, MapShape<UK, TtlValue<UV>>>;

/// `Binding::owner` of a handle registered through the backend
/// (`get_state` in `open()`): valid wherever it is used, as before
/// declared handles existed.
const BOUND: u64 = u64::MAX;

/// How a handle reaches its state. A handle registered in `open()` is
/// bound for good. A *declared* handle (`ValueState::new("count")` in a
/// field, no `open()` needed) holds its descriptor and registers it with
/// the first backend it meets, remembering that backend's identity: a
/// restart, or a clone of the function in another subtask, meets another
/// backend and registers again. The record path pays one load and
/// compare for it; a registration happens once per backend.
struct Binding<A: Copy, D> {
    access: Cell<Option<A>>,
    /// [`BOUND`], the identity of the backend `access` belongs to, or 0.
    owner: Cell<u64>,
    declared: Option<Arc<D>>,
}

impl<A: Copy, D> Clone for Binding<A, D> {
    fn clone(&self) -> Self {
        Binding {
            access: self.access.clone(),
            owner: self.owner.clone(),
            declared: self.declared.clone(),
        }
    }
}

impl<A: Copy, D> Binding<A, D> {
    fn bound(access: A) -> Self {
        Binding {
            access: Cell::new(Some(access)),
            owner: Cell::new(BOUND),
            declared: None,
        }
    }

    fn declared(descriptor: D) -> Self {
        Binding {
            access: Cell::new(None),
            owner: Cell::new(0),
            declared: Some(Arc::new(descriptor)),
        }
    }

    /// The access on `backend`, registering a declared handle's
    /// descriptor through `register` the first time it meets `backend`.
    #[inline(always)]
    fn resolve<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        register: impl FnOnce(&mut KeyedStateBackend<K>, &D) -> Result<A, StateError>,
    ) -> Result<A, StateError> {
        let owner = self.owner.get();
        if owner != BOUND && owner != backend.owner() {
            // The cold path binds and returns nothing but an error: the
            // access is read from the cell below on both paths, so the
            // hot path never merges with a value returned through memory
            // (which cost 15 % of keyed-count in store-forwarding stalls).
            self.bind(backend, register)?;
        }
        match self.access.get() {
            Some(access) => Ok(access),
            None => Err(StateError::UnboundHandle),
        }
    }

    #[cold]
    #[inline(never)]
    fn bind<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
        register: impl FnOnce(&mut KeyedStateBackend<K>, &D) -> Result<A, StateError>,
    ) -> Result<(), StateError> {
        let Some(descriptor) = &self.declared else {
            return Err(StateError::UnboundHandle);
        };
        let access = register(backend, descriptor)?;
        self.access.set(Some(access));
        self.owner.set(backend.owner());
        Ok(())
    }

    /// The state's id, for `Debug` (`None` until a declared handle is
    /// first used).
    fn id(&self) -> Option<StateId>
    where
        A: AccessId,
    {
        self.access.get().map(|a| a.state_id())
    }

    fn has_ttl(&self) -> bool
    where
        A: AccessId,
    {
        self.access.get().is_some_and(|a| a.has_ttl())
    }
}

/// What `Debug` shows of an access.
trait AccessId {
    fn state_id(&self) -> StateId;
    fn has_ttl(&self) -> bool;
}

impl<P, Q> AccessId for Access<P, Q> {
    fn state_id(&self) -> StateId {
        self.id()
    }
    fn has_ttl(&self) -> bool {
        matches!(self, Access::Ttl(..))
    }
}

/// Reads a value-like TTL state through `f`, as Flink's TTL decorators
/// do: an expired value is removed (and returned only with
/// `ReturnExpiredIfNotCleanedUp`), a live one refreshed if reads update
/// the timestamp.
#[cold]
#[inline(never)]
fn ttl_read<K: Key, T: StateValue, R>(
    backend: &mut KeyedStateBackend<K>,
    state: StateRef<TtlValueShape<T>>,
    ttl: Ttl,
    f: impl FnOnce(&T) -> R,
) -> Result<Option<R>, StateError> {
    let now = backend.ttl_now();
    let (store, at) = backend.store_at(state.id())?;
    let (result, expired) = if ttl.update_on_read {
        store.value_upsert(at, state, |slot: Option<&mut TtlValue<T>>| match slot {
            None => (None, (None, false)),
            Some(v) if ttl.expired(v, now) => {
                (None, (ttl.return_expired.then(|| f(v.value())), true))
            }
            Some(v) => {
                v.set_timestamp(now);
                (None, (Some(f(v.value())), false))
            }
        })?
    } else {
        store.value_read(at, state, |slot: Option<&TtlValue<T>>| match slot {
            None => (None, false),
            Some(v) if ttl.expired(v, now) => (ttl.return_expired.then(|| f(v.value())), true),
            Some(v) => (Some(f(v.value())), false),
        })?
    };
    if expired {
        store.clear::<TtlValueShape<T>>(at, state)?;
    }
    backend.ttl_accessed(state.id(), ttl, now)?;
    Ok(result)
}

/// Runs `op` on the store at the current key with the TTL clock's time,
/// then the state's incremental cleanup.
#[cold]
#[inline(never)]
fn ttl_op<K: Key, Sh, R>(
    backend: &mut KeyedStateBackend<K>,
    state: StateRef<Sh>,
    ttl: Ttl,
    op: impl FnOnce(&mut AnyStore<K>, At<'_, K>, i64) -> Result<R, StateError>,
) -> Result<R, StateError> {
    let now = backend.ttl_now();
    let (store, at) = backend.store_at(state.id())?;
    let r = op(store, at, now)?;
    backend.ttl_accessed(state.id(), ttl, now)?;
    Ok(r)
}

/// One value per key (Flink's `ValueState`).
pub struct ValueState<T> {
    state: Binding<ValueAccess<T>, ValueStateDescriptor<T>>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        ValueState {
            state: self.state.clone(),
        }
    }
}

impl<T: StateValue> ValueState<T> {
    /// A value state called `name`, declared in a field of the function:
    /// registered when first used, with no `open()` (see
    /// [`from_descriptor`](Self::from_descriptor) for TTL, queryability or
    /// a migration).
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_descriptor(ValueStateDescriptor::new(name))
    }

    /// A value state declared by `descriptor`, registered when first used.
    pub fn from_descriptor(descriptor: ValueStateDescriptor<T>) -> Self {
        ValueState {
            state: Binding::declared(descriptor),
        }
    }

    #[inline(always)]
    fn access<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<ValueAccess<T>, StateError> {
        self.state.resolve(backend, |b, d| b.value_access(d))
    }

    /// The current key's value, `None` if it has none (or it expired).
    ///
    /// Always inlined: this is the per-record state access, and whether
    /// the compiler inlines it otherwise moves with unrelated code (it
    /// stopped doing so once more examples were linked into the binary,
    /// 14 % more instructions on the keyed-count benchmark).
    #[inline(always)]
    pub fn value<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Option<T>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.value_get(at, state)
            }
            Access::Ttl(state, ttl) => ttl_read(backend, state, ttl, T::clone),
        }
    }

    /// Replaces the current key's value (always inlined, as `value`).
    #[inline(always)]
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.value_put(at, state, value)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                store.value_put(at, state, TtlValue::new(value, now))
            }),
        }
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.clear::<ValueShape<T>>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, _| {
                store.clear::<TtlValueShape<T>>(at, state)
            }),
        }
    }
}

/// A list per key (Flink's `ListState`). With a TTL, each element expires
/// on its own.
pub struct ListState<T> {
    state: Binding<ListAccess<T>, ListStateDescriptor<T>>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        ListState {
            state: self.state.clone(),
        }
    }
}

impl<T: StateValue> ListState<T> {
    /// A list state called `name`, declared in a field of the function:
    /// registered when first used, with no `open()`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_descriptor(ListStateDescriptor::new(name))
    }

    /// A list state declared by `descriptor`, registered when first used.
    pub fn from_descriptor(descriptor: ListStateDescriptor<T>) -> Self {
        ListState {
            state: Binding::declared(descriptor),
        }
    }

    #[inline(always)]
    fn access<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<ListAccess<T>, StateError> {
        self.state.resolve(backend, |b, d| b.list_access(d))
    }

    /// The current key's elements in insertion order (none if it has
    /// none), as an iterator like Flink's `Iterable`: over a snapshot of
    /// the list, so the loop may add to or clear it through the same
    /// context.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<ListStateIter<T>, StateError> {
        self.get_vec(ctx).map(Vec::into_iter)
    }

    fn get_vec<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Vec<T>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.list_get(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                let stored = store.list_get(at, state)?;
                let any_expired = stored.iter().any(|v| ttl.expired(v, now));
                if !any_expired && !ttl.update_on_read {
                    return Ok(stored.into_iter().map(TtlValue::into_value).collect());
                }
                let mut out = Vec::with_capacity(stored.len());
                let mut keep = Vec::with_capacity(stored.len());
                for mut v in stored {
                    if ttl.expired(&v, now) {
                        if ttl.return_expired {
                            out.push(v.into_value());
                        }
                    } else {
                        if ttl.update_on_read {
                            v.set_timestamp(now);
                        }
                        out.push(v.value().clone());
                        keep.push(v);
                    }
                }
                if any_expired || !keep.is_empty() {
                    store.list_put(at, state, keep)?;
                }
                Ok(out)
            }),
        }
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
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.list_add(at, state, values)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                store.list_add(at, state, values.into_iter().map(|v| TtlValue::new(v, now)))
            }),
        }
    }

    /// Replaces the list; an empty `values` clears it.
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.list_put(at, state, values)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                let stamped = values.into_iter().map(|v| TtlValue::new(v, now));
                store.list_put(at, state, stamped.collect())
            }),
        }
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.clear::<ListShape<T>>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, _| {
                store.clear::<ListShape<TtlValue<T>>>(at, state)
            }),
        }
    }
}

/// A map per key (Flink's `MapState`). With a TTL, each entry expires on
/// its own.
pub struct MapState<UK, UV> {
    state: Binding<MapAccess<UK, UV>, MapStateDescriptor<UK, UV>>,
}

impl<UK, UV> Clone for MapState<UK, UV> {
    fn clone(&self) -> Self {
        MapState {
            state: self.state.clone(),
        }
    }
}

/// A map TTL state's reference.
type TtlMapRef<UK, UV> = StateRef<MapShape<UK, TtlValue<UV>>>;

impl<UK: MapKey, UV: StateValue> MapState<UK, UV> {
    /// A map state called `name`, declared in a field of the function:
    /// registered when first used, with no `open()`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_descriptor(MapStateDescriptor::new(name))
    }

    /// A map state declared by `descriptor`, registered when first used.
    pub fn from_descriptor(descriptor: MapStateDescriptor<UK, UV>) -> Self {
        MapState {
            state: Binding::declared(descriptor),
        }
    }

    #[inline(always)]
    fn access<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<MapAccess<UK, UV>, StateError> {
        self.state.resolve(backend, |b, d| b.map_access(d))
    }

    /// The value under `user_key`.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_get(at, state, user_key)
            }
            Access::Ttl(state, ttl) => Self::ttl_get(backend, state, ttl, user_key),
        }
    }

    /// A TTL map's entry, as [`ttl_read`] reads a value.
    #[cold]
    #[inline(never)]
    fn ttl_get<K: Key>(
        ctx: &mut impl KeyedStateAccess<K>,
        state: TtlMapRef<UK, UV>,
        ttl: Ttl,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        ttl_op(ctx.keyed_state_backend(), state, ttl, |store, at, now| {
            let Some(v) = store.map_get(at, state, user_key)? else {
                return Ok(None);
            };
            if ttl.expired(&v, now) {
                store.map_remove(at, state, user_key)?;
                return Ok(ttl.return_expired.then(|| v.into_value()));
            }
            if ttl.update_on_read {
                let refreshed = TtlValue::new(v.value().clone(), now);
                store.map_put_all(at, state, [(user_key.clone(), refreshed)])?;
            }
            Ok(Some(v.into_value()))
        })
    }

    /// True when `user_key` has a value.
    pub fn contains<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_contains::<UK, UV>(at, state, user_key)
            }
            Access::Ttl(state, ttl) => Ok(Self::ttl_get(backend, state, ttl, user_key)?.is_some()),
        }
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
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_put_all(at, state, entries)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                let stamped = entries.into_iter().map(|(k, v)| (k, TtlValue::new(v, now)));
                store.map_put_all(at, state, stamped)
            }),
        }
    }

    /// Removes `user_key`; the key's map disappears with its last entry.
    /// Returns the value it had, unless that had expired (and is not
    /// visible).
    pub fn remove<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_remove(at, state, user_key)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                Ok(store
                    .map_remove(at, state, user_key)?
                    .filter(|v| ttl.return_expired || !ttl.expired(v, now))
                    .map(TtlValue::into_value))
            }),
        }
    }

    /// A TTL map's visible entries; expired ones are removed, live ones
    /// refreshed if reads update the timestamp.
    #[cold]
    #[inline(never)]
    fn ttl_entries<K: Key>(
        ctx: &mut impl KeyedStateAccess<K>,
        state: TtlMapRef<UK, UV>,
        ttl: Ttl,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        ttl_op(ctx.keyed_state_backend(), state, ttl, |store, at, now| {
            let stored = store.map_entries(at, state)?;
            let mut out = Vec::with_capacity(stored.len());
            let mut refreshed = Vec::new();
            for (k, v) in stored {
                if ttl.expired(&v, now) {
                    store.map_remove(at, state, &k)?;
                    if ttl.return_expired {
                        out.push((k, v.into_value()));
                    }
                    continue;
                }
                if ttl.update_on_read {
                    refreshed.push((k.clone(), TtlValue::new(v.value().clone(), now)));
                }
                out.push((k, v.into_value()));
            }
            if !refreshed.is_empty() {
                store.map_put_all(at, state, refreshed)?;
            }
            Ok(out)
        })
    }

    /// Every entry (in no particular order), as an iterator like broadcast
    /// state's. It iterates a snapshot of the current key's map, so the
    /// loop may change the map through the same context.
    pub fn entries<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<MapStateIter<(UK, UV)>, StateError> {
        let backend = ctx.keyed_state_backend();
        let entries = match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_entries(at, state)?
            }
            Access::Ttl(state, ttl) => Self::ttl_entries(backend, state, ttl)?,
        };
        Ok(entries.into_iter())
    }

    /// Every user key (a snapshot, as [`entries`](Self::entries)).
    pub fn keys<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<MapStateIter<UK>, StateError> {
        let backend = ctx.keyed_state_backend();
        let keys = match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                let mut keys = Vec::new();
                store.map_for_each::<UK, UV>(at, state, |k, _| keys.push(k.clone()))?;
                keys
            }
            Access::Ttl(state, ttl) => Self::ttl_entries(backend, state, ttl)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        Ok(keys.into_iter())
    }

    /// Every value (a snapshot, as [`entries`](Self::entries)).
    pub fn values<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<MapStateIter<UV>, StateError> {
        let backend = ctx.keyed_state_backend();
        let values = match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                let mut values = Vec::new();
                store.map_for_each::<UK, UV>(at, state, |_, v| values.push(v.clone()))?;
                values
            }
            Access::Ttl(state, ttl) => Self::ttl_entries(backend, state, ttl)?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        };
        Ok(values.into_iter())
    }

    /// True when the current key's map has no entry (no visible one, with
    /// a TTL: expired entries are removed, none is refreshed).
    pub fn is_empty<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<bool, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.map_is_empty::<UK, UV>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, now| {
                let mut visible = false;
                for (k, v) in store.map_entries(at, state)? {
                    if ttl.expired(&v, now) {
                        store.map_remove(at, state, &k)?;
                        visible |= ttl.return_expired;
                    } else {
                        visible = true;
                    }
                }
                Ok(!visible)
            }),
        }
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.clear::<MapShape<UK, UV>>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, _| {
                store.clear::<MapShape<UK, TtlValue<UV>>>(at, state)
            }),
        }
    }
}

/// A value folded by a reduce function (Flink's `ReducingState`).
pub struct ReducingState<T> {
    state: Binding<ValueAccess<T>, ReducingStateDescriptor<T>>,
    reduce: ReduceFn<T>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState {
            state: self.state.clone(),
            reduce: self.reduce.clone(),
        }
    }
}

impl<T: StateValue> ReducingState<T> {
    /// A reducing state called `name` folding with `reduce(stored, new)`,
    /// declared in a field of the function: registered when first used.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(T, T) -> T + Send + Sync + 'static,
    ) -> Self {
        Self::from_descriptor(ReducingStateDescriptor::new(name, reduce))
    }

    /// A reducing state declared by `descriptor`, registered when first used.
    pub fn from_descriptor(descriptor: ReducingStateDescriptor<T>) -> Self {
        ReducingState {
            reduce: descriptor.reduce.clone(),
            state: Binding::declared(descriptor),
        }
    }

    #[inline(always)]
    fn access<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<ValueAccess<T>, StateError> {
        self.state.resolve(backend, |b, d| b.reducing_access(d))
    }

    /// The reduced value, `None` before the first `add` (or once expired).
    pub fn get<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<Option<T>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.value_get(at, state)
            }
            Access::Ttl(state, ttl) => ttl_read(backend, state, ttl, T::clone),
        }
    }

    /// Folds `value` into the stored value and returns the new one. With a
    /// TTL, an expired stored value counts as absent (unless expired
    /// values are visible), as in Flink.
    #[inline]
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: T,
    ) -> Result<T, StateError> {
        let backend = ctx.keyed_state_backend();
        let state = match self.access(backend)? {
            Access::Plain(state) => state,
            Access::Ttl(state, ttl) => return self.ttl_add(ctx, state, ttl, value),
        };
        let (store, at) = backend.store_at(state.id())?;
        store.value_upsert(at, state, |slot: Option<&mut T>| match slot {
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

    #[cold]
    #[inline(never)]
    fn ttl_add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        state: StateRef<TtlValueShape<T>>,
        ttl: Ttl,
        value: T,
    ) -> Result<T, StateError> {
        ttl_op(ctx.keyed_state_backend(), state, ttl, |store, at, now| {
            store.value_upsert(at, state, |slot: Option<&mut TtlValue<T>>| match slot {
                Some(slot) => {
                    let reduced = if ttl.return_expired || !ttl.expired(slot, now) {
                        let old = std::mem::replace(slot.value_mut(), value.clone());
                        (self.reduce)(old, value)
                    } else {
                        value
                    };
                    *slot.value_mut() = reduced.clone();
                    slot.set_timestamp(now);
                    (None, reduced)
                }
                None => (Some(TtlValue::new(value.clone(), now)), value),
            })
        })
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.clear::<ValueShape<T>>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, _| {
                store.clear::<TtlValueShape<T>>(at, state)
            }),
        }
    }
}

/// An accumulator folded by an [`AggregateFunction`] (Flink's `AggregatingState`).
pub struct AggregatingState<F: AggregateFunction> {
    state: Binding<ValueAccess<F::Acc>, AggregatingStateDescriptor<F>>,
    function: Arc<F>,
}

impl<F: AggregateFunction> Clone for AggregatingState<F> {
    fn clone(&self) -> Self {
        AggregatingState {
            state: self.state.clone(),
            function: self.function.clone(),
        }
    }
}

impl<F: AggregateFunction> AggregatingState<F> {
    /// An aggregating state called `name` folding with `function`,
    /// declared in a field of the function: registered when first used.
    pub fn new(name: impl Into<String>, function: F) -> Self {
        Self::from_descriptor(AggregatingStateDescriptor::new(name, function))
    }

    /// An aggregating state declared by `descriptor`, registered when
    /// first used.
    pub fn from_descriptor(descriptor: AggregatingStateDescriptor<F>) -> Self {
        AggregatingState {
            function: descriptor.function.clone(),
            state: Binding::declared(descriptor),
        }
    }

    #[inline(always)]
    fn access<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<ValueAccess<F::Acc>, StateError> {
        self.state.resolve(backend, |b, d| b.aggregating_access(d))
    }

    /// The result for the current key, `None` before the first `add` (or
    /// once expired).
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
    ) -> Result<Option<F::Out>, StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.value_read(at, state, |acc: Option<&F::Acc>| {
                    acc.map(|acc| self.function.get_result(acc))
                })
            }
            Access::Ttl(state, ttl) => {
                ttl_read(backend, state, ttl, |acc| self.function.get_result(acc))
            }
        }
    }

    /// Folds `value` into the current key's accumulator. With a TTL, an
    /// expired accumulator starts over (unless expired values are
    /// visible), as in Flink.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        value: F::In,
    ) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        let state = match self.access(backend)? {
            Access::Plain(state) => state,
            Access::Ttl(state, ttl) => return self.ttl_add(ctx, state, ttl, value),
        };
        let (store, at) = backend.store_at(state.id())?;
        store.value_upsert(at, state, |acc: Option<&mut F::Acc>| match acc {
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

    #[cold]
    #[inline(never)]
    fn ttl_add<K: Key>(
        &self,
        ctx: &mut impl KeyedStateAccess<K>,
        state: StateRef<TtlValueShape<F::Acc>>,
        ttl: Ttl,
        value: F::In,
    ) -> Result<(), StateError> {
        ttl_op(ctx.keyed_state_backend(), state, ttl, |store, at, now| {
            store.value_upsert(at, state, |acc: Option<&mut TtlValue<F::Acc>>| match acc {
                Some(acc) => {
                    if !ttl.return_expired && ttl.expired(acc, now) {
                        *acc.value_mut() = self.function.create_accumulator();
                    }
                    self.function.add(value, acc.value_mut());
                    acc.set_timestamp(now);
                    (None, ())
                }
                None => {
                    let mut acc = self.function.create_accumulator();
                    self.function.add(value, &mut acc);
                    (Some(TtlValue::new(acc, now)), ())
                }
            })
        })
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Key>(&self, ctx: &mut impl KeyedStateAccess<K>) -> Result<(), StateError> {
        let backend = ctx.keyed_state_backend();
        match self.access(backend)? {
            Access::Plain(state) => {
                let (store, at) = backend.store_at(state.id())?;
                store.clear::<ValueShape<F::Acc>>(at, state)
            }
            Access::Ttl(state, ttl) => ttl_op(backend, state, ttl, |store, at, _| {
                store.clear::<TtlValueShape<F::Acc>>(at, state)
            }),
        }
    }
}

macro_rules! debug_handle {
    ($($name:ident<$($g:ident $(: $b:path)?),+>),+) => {
        $(impl<$($g $(: $b)?),+> std::fmt::Debug for $name<$($g),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.state.id())
                    .field("ttl", &self.state.has_ttl())
                    .finish()
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

/// A keyed state named to visit its keys (a broadcast function's
/// `apply_to_keyed_state`): a handle, registered first if it is a
/// declared one that no record has used yet on this subtask — its
/// restored keys are visited all the same — or a state's name.
pub trait KeyedStateName {
    /// The state's registered name on `backend`.
    fn registered_name<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<String, StateError>;
}

impl KeyedStateName for str {
    fn registered_name<K: Key>(&self, _: &mut KeyedStateBackend<K>) -> Result<String, StateError> {
        Ok(self.to_string())
    }
}

impl<T: KeyedStateName + ?Sized> KeyedStateName for &T {
    fn registered_name<K: Key>(
        &self,
        backend: &mut KeyedStateBackend<K>,
    ) -> Result<String, StateError> {
        (**self).registered_name(backend)
    }
}

macro_rules! keyed_state_name {
    ($($name:ident<$($g:ident $(: $b:path)?),+>),+) => {
        $(impl<$($g $(: $b)?),+> KeyedStateName for $name<$($g),+> {
            fn registered_name<K: Key>(
                &self,
                backend: &mut KeyedStateBackend<K>,
            ) -> Result<String, StateError> {
                let id = self.access(backend)?.id();
                Ok(backend.state_name(id).unwrap_or_default().to_string())
            }
        })+
    };
}

keyed_state_name!(
    ValueState<T: StateValue>,
    ListState<T: StateValue>,
    MapState<UK: MapKey, UV: StateValue>,
    ReducingState<T: StateValue>,
    AggregatingState<F: AggregateFunction>
);
