//! The keyed store: what a state backend's storage does, whatever it keeps
//! state in. [`KeyedStore`] is the one internal trait between the state
//! handles (and the backend's bookkeeping) and the storage: value, list and
//! map primitives at the current key and its key group, whole-state
//! iteration by key group, queries, and the store's side of snapshots and
//! restores.
//!
//! Two implementations, each in its own module: [`heap`] (typed values in one
//! hash map per key group, nothing serialized on the record path) and
//! `rocks` (feature `rocksdb`: postcard bytes in a column family per
//! state). [`dispatch`] holds the enum that picks one per backend and the
//! only `match` on it. The trait's methods are generic (a value type, a
//! closure), so it is used through that enum and never as `dyn`: every
//! call is a predictable branch on the variant and then inlined code, no
//! virtual call per record.
//!
//! A state is addressed by its [`StateId`] (registration order, the same in
//! every store) and the current position [`At`] (key and key-group offset,
//! which the backend keeps; a byte store also has the key it encoded in
//! [`KeyedStore::set_current_key`]). A handle keeps a [`StateRef`]: the
//! index with the shape it was registered with, which the store checks
//! once when the handle is made ([`KeyedStore::bind`]), so that the heap
//! store's record path needs no type check per access.
//!
//! *Timers* ([`crate::timer`]) are one more primitive family on the trait
//! (`register_timers`, `timer_add`, `timer_delete`, `timer_next`,
//! `timer_poll`). A timer queue takes a [`StateId`] like a state, so its
//! frozen view is one more [`FrozenTable`] in `freeze`'s list and
//! snapshots carry it per key group like any state (a rescale splits it
//! the same way). Per key group and time domain the heap store keeps a
//! hash set of typed timers plus their sort keys in vectors per range of
//! timestamps, each sorted when it fires (`heap_timers`), the RocksDB
//! store a column family whose keys are the timers, in firing order, with
//! the first ones of each group cached (`rocks_timers`); both find the
//! earliest group with a tournament tree (`timer_heads`). The firing
//! order, (timestamp, key group, key bytes, namespace bytes), is the one
//! RocksDB's byte order gives, and the heap store keeps the same.
//!
//! Growing it (the next layer, a change to this module and the two stores,
//! none to existing handles):
//! - *Namespaces* (window state, Flink's `InternalKvState<K, N, V>`): `At`
//!   gains the current namespace (`ns: &N`, set by the backend like the
//!   key); the heap tables key their maps by `(K, N)` for namespaced states
//!   (and stay keyed by `K` for the others, `N = ()`), RocksDB appends the
//!   namespace's bytes to the key prefix, and the canonical snapshot encodes
//!   `((key, namespace), value)` pairs under a new state kind code, so old
//!   snapshots read unchanged.

pub(crate) mod dispatch;
pub(crate) mod heap;
mod heap_timers;
#[cfg(feature = "rocksdb")]
pub(crate) mod rocks;
#[cfg(feature = "rocksdb")]
mod rocks_cache;
#[cfg(feature = "rocksdb")]
mod rocks_timers;
mod timer_heads;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use floe_core::KeyGroup;
use rustc_hash::FxHashMap;

use crate::codec;
use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeFetch, NativeKeyedStateFile, NativeSnapshot};
use crate::query::{QueryFormat, QueryValue};
use crate::query_view::QueryView;
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::ttl::TtlSpec;
use crate::types::{Key, MapKey, StateStorage, StateValue};

/// A registered state's index: registration order, the same in the backend
/// and its store.
pub(crate) type StateId = u32;

/// A registered state as its handle keeps it: the index, the shape it was
/// registered with (so every access through it uses those types), and the
/// stamp of the store that checked, when the handle was made, that the
/// state has that shape. That store then trusts the reference without
/// checking again on each access (the heap store's tables are typed, see
/// [`heap`]); any other store checks it on each access, as it does a
/// reference no store stamped.
pub(crate) struct StateRef<Sh> {
    id: StateId,
    /// The checking store's [`StoreStamp`]; 0 when none checked.
    stamp: u64,
    _shape: PhantomData<fn() -> Sh>,
}

impl<Sh> StateRef<Sh> {
    /// State `id`, checked by no store.
    pub(crate) fn unstamped(id: StateId) -> Self {
        StateRef {
            id,
            stamp: 0,
            _shape: PhantomData,
        }
    }

    /// The state's index.
    #[inline]
    pub(crate) fn id(&self) -> StateId {
        self.id
    }
}

impl<Sh> Clone for StateRef<Sh> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Sh> Copy for StateRef<Sh> {}

/// Identifies one store instance for the lifetime of the process (never 0,
/// never reused), so that a [`StateRef`] it stamped is recognised by it and
/// by no other store. A store keeps its stamp private: only it can stamp
/// with it, which is what makes a stamp proof of its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreStamp(u64);

impl StoreStamp {
    /// A stamp no other store has had.
    pub(crate) fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        StoreStamp(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// `state` stamped by this store.
    pub(crate) fn stamp<Sh>(self, state: StateRef<Sh>) -> StateRef<Sh> {
        StateRef {
            stamp: self.0,
            ..state
        }
    }

    /// Whether this store stamped `state`.
    #[inline(always)]
    pub(crate) fn stamped<Sh>(self, state: StateRef<Sh>) -> bool {
        state.stamp == self.0
    }
}

/// Where a primitive acts: the current key and its key group's offset in
/// the subtask's range.
#[derive(Debug)]
pub(crate) struct At<'a, K> {
    /// The current key.
    pub(crate) key: &'a K,
    /// Its key group minus the range's first.
    pub(crate) offset: usize,
}

impl<K> Clone for At<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for At<'_, K> {}

/// The three per-key layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) enum Layout {
    /// One value per key (value, reducing, aggregating).
    ValueLike,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

/// A state's per-key shape and types, fixed by the handle that registers
/// it: what one key holds, and how restored content goes back into a store
/// through its primitives.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) trait Shape: Sized + 'static {
    /// What one key holds: `T`, `Vec<T>` or a map (the heap's typed
    /// storage and the canonical snapshot's per-key value).
    type PerKey: StateStorage;
    /// The layout a byte store gives it.
    const LAYOUT: Layout;

    /// Writes one key's restored content at `at`.
    fn put<K: Key, St: KeyedStore<K>>(
        store: &mut St,
        at: At<'_, K>,
        state: StateRef<Self>,
        content: Self::PerKey,
    ) -> Result<(), StateError>;
}

/// One `T` per key.
pub(crate) struct ValueShape<T>(PhantomData<fn() -> T>);

impl<T: StateValue> Shape for ValueShape<T> {
    type PerKey = T;
    const LAYOUT: Layout = Layout::ValueLike;

    fn put<K: Key, St: KeyedStore<K>>(
        store: &mut St,
        at: At<'_, K>,
        state: StateRef<Self>,
        content: T,
    ) -> Result<(), StateError> {
        store.value_put(at, state, content)
    }
}

/// A list of `T` per key.
pub(crate) struct ListShape<T>(PhantomData<fn() -> T>);

impl<T: StateValue> Shape for ListShape<T> {
    type PerKey = Vec<T>;
    const LAYOUT: Layout = Layout::List;

    fn put<K: Key, St: KeyedStore<K>>(
        store: &mut St,
        at: At<'_, K>,
        state: StateRef<Self>,
        content: Vec<T>,
    ) -> Result<(), StateError> {
        store.list_put(at, state, content)
    }
}

/// A map of `UK` to `UV` per key.
pub(crate) struct MapShape<UK, UV>(PhantomData<fn() -> (UK, UV)>);

impl<UK: MapKey, UV: StateValue> Shape for MapShape<UK, UV> {
    type PerKey = FxHashMap<UK, UV>;
    const LAYOUT: Layout = Layout::Map;

    fn put<K: Key, St: KeyedStore<K>>(
        store: &mut St,
        at: At<'_, K>,
        state: StateRef<Self>,
        content: FxHashMap<UK, UV>,
    ) -> Result<(), StateError> {
        store.map_put_all(at, state, content)
    }
}

/// Storage for one subtask's keyed state. Every per-key primitive acts at
/// `at`, the current key (a byte store also has it from
/// [`set_current_key`](Self::set_current_key)), in state `id`, which the
/// handle registered with the types it passes.
pub(crate) trait KeyedStore<K: Key>: Send {
    // --- registration and the current key ---

    /// Adds state `id` (the next index) of shape `Sh`, with the restored
    /// canonical entries of its key groups in `range`; `ttl` for a TTL
    /// state, whose per-key content holds `TtlValue`s (the store's cleanup
    /// of expired entries uses it). On error nothing is added, so indices
    /// stay aligned with the backend's registrations.
    fn register<Sh: Shape>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
        ttl: Option<TtlSpec<Sh::PerKey>>,
    ) -> Result<(), StateError>;

    /// What the snapshot recorded about a state the store restored itself
    /// (a native snapshot) and that is not registered yet: its kind, TTL
    /// and serializer identity.
    fn restored_meta(&self, name: &str) -> Option<&StateMeta>;

    /// Incremental TTL cleanup: checks the next `entries` keys of TTL
    /// state `id` (round robin over all its keys) and removes what expired
    /// at `now`. A no-op where the store has no such cleanup (RocksDB has
    /// its compaction filter instead).
    fn ttl_cleanup(&mut self, id: StateId, entries: u32, now: i64) -> Result<(), StateError>;

    /// The key that per-key primitives act on from now on (a byte store
    /// encodes it once here).
    fn set_current_key(&mut self, key: &K, key_group: KeyGroup) -> Result<(), StateError>;

    /// Appends the store's native metrics (RocksDB properties per state,
    /// as configured); nothing by default. Asked about once a second by the
    /// task, off the record path.
    fn native_metrics(&self, _out: &mut Vec<crate::metrics::NativeMetric>) {}

    /// Whether [`prefetch`](Self::prefetch) would do anything for the next
    /// batch: a keyed operator gathers a batch's keys up front only for a
    /// store that uses them. Asked once per batch.
    fn prefetches(&mut self) -> bool {
        false
    }

    /// Prepares for a batch whose records have these keys (in order,
    /// repeats possible), so the per-record accesses that follow are cheap:
    /// a store that pays per lookup (RocksDB) looks them all up at once.
    /// Purely a hint: what a record reads afterwards is the same with or
    /// without it.
    fn prefetch(&mut self, _keys: &[K], _key_groups: &[KeyGroup]) -> Result<(), StateError> {
        Ok(())
    }

    /// The reference a handle keeps to state `id`, registered with shape
    /// `Sh`: stamped by a store that checked the shape and trusts its stamp
    /// on every access.
    fn bind<Sh: Shape>(&self, id: StateId) -> StateRef<Sh>;

    // --- one value per key ---

    /// The value, copied out.
    fn value_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
    ) -> Result<Option<T>, StateError>;

    /// `f` of the value, read in place where the store can.
    fn value_read<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, StateError>;

    /// Replaces the value.
    fn value_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        value: T,
    ) -> Result<(), StateError>;

    /// Changes the value in place: `f` gets it (`None`: the key has none)
    /// and returns what to insert when it was absent, and its result.
    fn value_upsert<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&mut T>) -> (Option<T>, R),
    ) -> Result<R, StateError>;

    // --- a list per key ---

    /// The elements in insertion order (empty if none).
    fn list_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
    ) -> Result<Vec<T>, StateError>;

    /// Appends `values`.
    fn list_add<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError>;

    /// Replaces the list; an empty one removes it.
    fn list_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: Vec<T>,
    ) -> Result<(), StateError>;

    // --- a map per key ---

    /// The value under `user_key`.
    fn map_get<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError>;

    /// Whether `user_key` has a value.
    fn map_contains<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<bool, StateError>;

    /// Sets every pair of `entries`.
    fn map_put_all<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<(), StateError>;

    /// Removes `user_key`, returning its value; the key's map goes with
    /// its last entry.
    fn map_remove<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError>;

    /// Every entry, copied out.
    fn map_entries<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<Vec<(UK, UV)>, StateError>;

    /// Calls `f` on every entry (in no particular order).
    fn map_for_each<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        f: impl FnMut(&UK, &UV),
    ) -> Result<(), StateError>;

    /// Whether the map has no entry.
    fn map_is_empty<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<bool, StateError>;

    // --- any shape ---

    /// Removes everything the key holds in state `id` (of shape `Sh`).
    fn clear<Sh: Shape>(&mut self, at: At<'_, K>, state: StateRef<Sh>) -> Result<(), StateError>;

    // --- timers ---

    /// Adds timer queue `id` (the next index, shared with states) with
    /// namespaces of type `N`, with the restored canonical timers of its
    /// key groups in `range`. On error nothing is added, as with
    /// [`register`](Self::register).
    fn register_timers<N: Namespace>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
    ) -> Result<(), StateError>;

    /// Registers the timer `(timestamp, at's key, namespace)` in `domain`
    /// of queue `id`; a no-op if it exists.
    fn timer_add<N: Namespace>(
        &mut self,
        at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: N,
    ) -> Result<(), StateError>;

    /// Deletes that timer; a no-op if it does not exist.
    fn timer_delete<N: Namespace>(
        &mut self,
        at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError>;

    /// The earliest timestamp in `domain` of queue `id`, over all key
    /// groups (from memory on both stores).
    fn timer_next<N: Namespace>(&self, id: StateId, domain: TimeDomain) -> Option<i64>;

    /// Removes and returns the first timer in `domain` of queue `id` in
    /// firing order if its timestamp is at most `up_to`; `first` is the
    /// range's first key group.
    fn timer_poll<N: Namespace>(
        &mut self,
        id: StateId,
        domain: TimeDomain,
        up_to: i64,
        first: KeyGroup,
    ) -> Result<Option<Timer<K, N>>, StateError>;

    // --- whole states, by key group ---

    /// Every key with an entry in state `id`, with its key group.
    fn keys(&mut self, id: StateId, range: KeyGroupRange)
    -> Result<Vec<(K, KeyGroup)>, StateError>;

    /// Keys with an entry in state `id`, per key group of `range`.
    fn key_counts(&mut self, id: StateId, range: KeyGroupRange) -> Result<Vec<usize>, StateError>;

    // --- queries ---

    /// The per-key content of `key` (in `key_group`, at `offset` in the
    /// range) in state `id`, encoded as `format`; `None` without state.
    fn query(
        &mut self,
        id: StateId,
        key: &K,
        key_group: KeyGroup,
        offset: usize,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError>;

    /// A view of state `id` that queries can read off the task thread
    /// (see [`crate::query_view`]); `None` when the store has none.
    fn start_query_view(
        &mut self,
        id: StateId,
        first_key_group: KeyGroup,
        max_staleness: Duration,
        wanted: Arc<AtomicBool>,
    ) -> Option<QueryView>;

    /// Publishes the views due at `now`; false if one is left for later.
    fn publish_query_views(&mut self, now: Instant) -> bool;

    /// Frees the maps of views no reader may use any more.
    fn retire_query_views(&mut self, now: Instant);

    // --- snapshots and restores ---

    /// The synchronous part of a canonical snapshot: one frozen view per
    /// state, registered ones first, then [`carried_states`](Self::carried_states).
    /// A store that cannot freeze returns views that fail when encoded, so
    /// the checkpoint is declined rather than the task failed.
    fn freeze(&mut self, range: KeyGroupRange) -> Vec<Box<dyn FrozenTable>>;

    /// States the store holds that are not registered (restored natively):
    /// carried into every snapshot.
    fn carried_states(&self) -> Vec<StateMeta>;

    /// A native (incremental) snapshot for checkpoint `checkpoint_id`
    /// building on checkpoint `base`; `None` when the store takes none.
    fn snapshot_native(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> Option<Result<NativeSnapshot, StateError>>;

    /// Loads native snapshots before any registration: a store that can
    /// reads them in itself and returns nothing; another converts them to
    /// canonical key groups `(state, key group, entries)` of `range` for the
    /// backend to stage like a canonical restore.
    #[allow(clippy::too_many_arguments)]
    fn restore_native(
        &mut self,
        manifests: &[NativeKeyedStateFile],
        range: KeyGroupRange,
        checkpoint_id: u64,
        reusable: bool,
        fetch: &NativeFetch<'_>,
        operator: &str,
    ) -> Result<Vec<(StateMeta, KeyGroup, Vec<u8>)>, StateError>;
}

/// A frozen view of one state, encoded off the task thread: what a store
/// hands the canonical snapshot.
pub(crate) trait FrozenTable: Send {
    /// True when key group `offset` has at least one entry.
    fn has_entries(&self, offset: usize) -> bool;
    /// Sets `out` to the canonical bytes of one key group's entries (the
    /// postcard sequence of `(key, per-key content)` pairs), discarding
    /// what it held (an implementation may swap in a buffer it already
    /// encoded into); returns false, leaving `out` empty, when the group
    /// has no entry.
    fn encode_key_group(
        &self,
        offset: usize,
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<bool, StateError>;
}

/// Restores canonical key groups of state `id` through the store's own
/// per-key primitives (a store with no faster path of its own).
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) fn restore_through<K: Key, St: KeyedStore<K>, Sh: Shape>(
    store: &mut St,
    id: StateId,
    groups: &[(KeyGroup, Vec<u8>)],
    range: KeyGroupRange,
    name: &str,
) -> Result<(), StateError> {
    for (kg, bytes) in groups {
        let entries: Vec<(K, Sh::PerKey)> =
            codec::decode(bytes, &format!("state '{name}' in key group {kg}"))?;
        let offset = kg.wrapping_sub(range.start) as usize;
        for (key, content) in entries {
            store.set_current_key(&key, *kg)?;
            Sh::put(
                store,
                At { key: &key, offset },
                StateRef::unstamped(id),
                content,
            )?;
        }
    }
    Ok(())
}
