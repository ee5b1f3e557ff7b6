//! The one place that chooses a store: [`AnyStore`] holds the backend's
//! store and forwards every [`KeyedStore`] call to it, inlined into the
//! handle: a test of whether the backend has a RocksDB store (in builds
//! with RocksDB), then the store's primitive. A third store is one more
//! field here and one more arm in `dispatch!` and `primitive!`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use floe_core::KeyGroup;

use crate::config::StateBackendSettings;
use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeFetch, NativeKeyedStateFile, NativeSnapshot};
use crate::query::{QueryFormat, QueryValue};
use crate::query_view::QueryView;
use crate::store::heap::HeapStore;
use crate::store::{
    At, FrozenTable, KeyedStore, ListShape, MapShape, Shape, StateId, StateRef, ValueShape,
};
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::ttl::TtlSpec;
use crate::types::{Key, MapKey, StateValue};

/// The store of one backend.
pub(crate) struct AnyStore<K> {
    /// Typed values on the heap: the store of the heap backend. On the
    /// RocksDB backend it stays empty (nothing registers into it) and costs
    /// no allocation; always having it keeps the heap's path free of a
    /// variant match and of `unreachable!` arms.
    heap: HeapStore<K>,
    /// Bytes in RocksDB, on the RocksDB backend (boxed: it is large).
    #[cfg(feature = "rocksdb")]
    rocks: Option<Box<crate::store::rocks::RocksStore>>,
}

impl<K: Key> AnyStore<K> {
    /// The store `settings` ask for, for `operator`'s subtask owning `range`.
    pub(crate) fn open(
        settings: &StateBackendSettings,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Self, StateError> {
        use crate::config::StateBackendKind;
        let heap = HeapStore::new(range, &settings.heap);
        match settings.kind {
            StateBackendKind::HashMap => Ok(AnyStore {
                heap,
                #[cfg(feature = "rocksdb")]
                rocks: None,
            }),
            #[cfg(feature = "rocksdb")]
            StateBackendKind::RocksDb => Ok(AnyStore {
                heap,
                rocks: Some(Box::new(crate::store::rocks::RocksStore::open(
                    &settings.rocksdb,
                    operator,
                    range,
                )?)),
            }),
            #[cfg(not(feature = "rocksdb"))]
            StateBackendKind::RocksDb => Err(StateError::Backend {
                operator: operator.to_string(),
                reason: "this build of Floe has no RocksDB backend (it was built without the `rocksdb` feature)".into(),
            }),
        }
    }
}

#[cfg(feature = "rocksdb")]
impl<K> AnyStore<K> {
    /// The RocksDB store, on the RocksDB backend.
    pub(crate) fn rocks(&mut self) -> Option<&mut crate::store::rocks::RocksStore> {
        self.rocks.as_deref_mut()
    }
}

/// Marks the branch that calls it as unlikely (a handle used with a heap
/// store that did not make it), so that the heap's record path stays
/// straight-line code (`std::hint::cold_path` is newer than the
/// workspace's minimum Rust).
#[cold]
#[inline(never)]
fn cold() {}

/// `$call` on the backend's store, bound to `$s` (`&mut`, or `&` with
/// `&self`).
#[cfg(feature = "rocksdb")]
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.rocks {
            Some(boxed) => {
                let $s: &mut crate::store::rocks::RocksStore = boxed;
                $call
            }
            None => {
                let $s = &mut $self.heap;
                $call
            }
        }
    };
    (&$self:ident, $s:ident => $call:expr) => {
        match &$self.rocks {
            Some(boxed) => {
                let $s: &crate::store::rocks::RocksStore = boxed;
                $call
            }
            None => {
                let $s = &$self.heap;
                $call
            }
        }
    };
}

/// `$call` on the backend's store, bound to `$s` (`&mut`, or `&` with
/// `&self`).
#[cfg(not(feature = "rocksdb"))]
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {{
        let $s = &mut $self.heap;
        $call
    }};
    (&$self:ident, $s:ident => $call:expr) => {{
        let $s = &$self.heap;
        $call
    }};
}

/// A per-key primitive on `$state`: `$call` on the RocksDB store if the
/// backend has one, else on the heap store, whose primitive is called once
/// so that it is inlined. A reference the heap store did not stamp (a
/// handle another backend made) is checked there, out of line. The RocksDB
/// arm comes first and is not marked cold: the compiler would not inline
/// the RocksDB primitives into a cold branch, and they are the RocksDB
/// backend's record path (testing the stamp first costs it 0.8 % more
/// instructions at 100 k keys, for 1.4 % fewer on the heap).
macro_rules! primitive {
    ($self:ident, $state:ident, $s:ident => $call:expr) => {{
        #[cfg(feature = "rocksdb")]
        if let Some(boxed) = &mut $self.rocks {
            let $s: &mut crate::store::rocks::RocksStore = boxed;
            return $call;
        }
        if !$self.heap.stamped($state) {
            cold();
        }
        let $s = &mut $self.heap;
        $call
    }};
}

impl<K: Key> KeyedStore<K> for AnyStore<K> {
    #[inline]
    fn register<Sh: Shape>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
        ttl: Option<TtlSpec<Sh::PerKey>>,
    ) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::register::<Sh>(s, id, name, restored, range, ttl))
    }

    #[inline]
    fn restored_meta(&self, name: &str) -> Option<&StateMeta> {
        dispatch!(&self, s => KeyedStore::<K>::restored_meta(s, name))
    }

    #[inline]
    fn ttl_cleanup(&mut self, id: StateId, entries: u32, now: i64) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::ttl_cleanup(s, id, entries, now))
    }

    #[inline]
    fn set_current_key(&mut self, key: &K, key_group: KeyGroup) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::set_current_key(s, key, key_group))
    }

    fn native_metrics(&self, out: &mut Vec<crate::metrics::NativeMetric>) {
        dispatch!(&self, s => KeyedStore::<K>::native_metrics(s, out))
    }

    #[inline]
    fn prefetches(&mut self) -> bool {
        dispatch!(self, s => KeyedStore::<K>::prefetches(s))
    }

    fn prefetch(&mut self, keys: &[K], key_groups: &[KeyGroup]) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::prefetch(s, keys, key_groups))
    }

    #[inline]
    fn bind<Sh: Shape>(&self, id: StateId) -> StateRef<Sh> {
        dispatch!(&self, s => KeyedStore::<K>::bind::<Sh>(s, id))
    }

    #[inline(always)]
    fn value_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
    ) -> Result<Option<T>, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::value_get::<T>(s, at, state))
    }

    #[inline]
    fn value_read<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::value_read::<T, R>(s, at, state, f))
    }

    #[inline(always)]
    fn value_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        value: T,
    ) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::value_put::<T>(s, at, state, value))
    }

    #[inline]
    fn value_upsert<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&mut T>) -> (Option<T>, R),
    ) -> Result<R, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::value_upsert::<T, R>(s, at, state, f))
    }

    #[inline]
    fn list_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
    ) -> Result<Vec<T>, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::list_get::<T>(s, at, state))
    }

    #[inline]
    fn list_add<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::list_add::<T>(s, at, state, values))
    }

    #[inline]
    fn list_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::list_put::<T>(s, at, state, values))
    }

    #[inline]
    fn map_get<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_get::<UK, UV>(s, at, state, user_key))
    }

    #[inline]
    fn map_contains<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_contains::<UK, UV>(s, at, state, user_key))
    }

    #[inline]
    fn map_put_all<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_put_all::<UK, UV>(s, at, state, entries))
    }

    #[inline]
    fn map_remove<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_remove::<UK, UV>(s, at, state, user_key))
    }

    #[inline]
    fn map_entries<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_entries::<UK, UV>(s, at, state))
    }

    #[inline]
    fn map_for_each<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        f: impl FnMut(&UK, &UV),
    ) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_for_each::<UK, UV>(s, at, state, f))
    }

    #[inline]
    fn map_is_empty<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<bool, StateError> {
        primitive!(self, state, s => KeyedStore::<K>::map_is_empty::<UK, UV>(s, at, state))
    }

    #[inline]
    fn clear<Sh: Shape>(&mut self, at: At<'_, K>, state: StateRef<Sh>) -> Result<(), StateError> {
        primitive!(self, state, s => KeyedStore::<K>::clear::<Sh>(s, at, state))
    }

    #[inline]
    fn register_timers<N: Namespace>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
    ) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::register_timers::<N>(s, id, name, restored, range))
    }

    #[inline]
    fn timer_add<N: Namespace>(
        &mut self,
        at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: N,
    ) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::timer_add::<N>(s, at, id, domain, timestamp, namespace))
    }

    #[inline]
    fn timer_delete<N: Namespace>(
        &mut self,
        at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        dispatch!(self, s => KeyedStore::<K>::timer_delete::<N>(s, at, id, domain, timestamp, namespace))
    }

    #[inline]
    fn timer_next<N: Namespace>(&self, id: StateId, domain: TimeDomain) -> Option<i64> {
        dispatch!(&self, s => KeyedStore::<K>::timer_next::<N>(s, id, domain))
    }

    #[inline]
    fn timer_poll<N: Namespace>(
        &mut self,
        id: StateId,
        domain: TimeDomain,
        up_to: i64,
        first: KeyGroup,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        dispatch!(self, s => KeyedStore::<K>::timer_poll::<N>(s, id, domain, up_to, first))
    }

    #[inline]
    fn keys(
        &mut self,
        id: StateId,
        range: KeyGroupRange,
    ) -> Result<Vec<(K, KeyGroup)>, StateError> {
        dispatch!(self, s => KeyedStore::<K>::keys(s, id, range))
    }

    #[inline]
    fn key_counts(&mut self, id: StateId, range: KeyGroupRange) -> Result<Vec<usize>, StateError> {
        dispatch!(self, s => KeyedStore::<K>::key_counts(s, id, range))
    }

    #[inline]
    fn query(
        &mut self,
        id: StateId,
        key: &K,
        key_group: KeyGroup,
        offset: usize,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        dispatch!(self, s => KeyedStore::<K>::query(s, id, key, key_group, offset, format, what))
    }

    #[inline]
    fn start_query_view(
        &mut self,
        id: StateId,
        first_key_group: KeyGroup,
        max_staleness: Duration,
        wanted: Arc<AtomicBool>,
    ) -> Option<QueryView> {
        dispatch!(self, s => KeyedStore::<K>::start_query_view(s, id, first_key_group, max_staleness, wanted))
    }

    #[inline]
    fn publish_query_views(&mut self, now: Instant) -> bool {
        dispatch!(self, s => KeyedStore::<K>::publish_query_views(s, now))
    }

    #[inline]
    fn retire_query_views(&mut self, now: Instant) {
        dispatch!(self, s => KeyedStore::<K>::retire_query_views(s, now))
    }

    #[inline]
    fn freeze(&mut self, range: KeyGroupRange) -> Vec<Box<dyn FrozenTable>> {
        dispatch!(self, s => KeyedStore::<K>::freeze(s, range))
    }

    #[inline]
    fn carried_states(&self) -> Vec<StateMeta> {
        dispatch!(&self, s => KeyedStore::<K>::carried_states(s))
    }

    #[inline]
    fn snapshot_native(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> Option<Result<NativeSnapshot, StateError>> {
        dispatch!(self, s => KeyedStore::<K>::snapshot_native(s, checkpoint_id, base))
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn restore_native(
        &mut self,
        manifests: &[NativeKeyedStateFile],
        range: KeyGroupRange,
        checkpoint_id: u64,
        reusable: bool,
        fetch: &NativeFetch<'_>,
        operator: &str,
    ) -> Result<Vec<(StateMeta, KeyGroup, Vec<u8>)>, StateError> {
        dispatch!(self, s => KeyedStore::<K>::restore_native(s, manifests, range, checkpoint_id, reusable, fetch, operator))
    }
}
