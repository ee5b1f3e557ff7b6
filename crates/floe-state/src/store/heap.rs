//! The heap store: typed values in one hash map per key group per state
//! (Flink's `HashMapStateBackend`). Nothing is serialized on the record
//! path; snapshots share the maps copy-on-write and encode them off the
//! task thread; queryable states publish the same maps as read views.

use std::any::TypeId;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use floe_core::KeyGroup;
use serde::Serialize;

use crate::codec;
use crate::config::HeapConfig;
use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeFetch, NativeKeyedStateFile, NativeSnapshot};
use crate::query::{QueryFormat, QueryValue};
use crate::query_view::{QueryView, ViewPublisher};
use crate::store::heap_timers::TimerTable;
use crate::store::{
    At, FrozenTable, KeyedStore, ListShape, MapShape, Shape, StateId, StateRef, StoreStamp,
    ValueShape,
};
use crate::table_alloc::{GroupMap, StateTableAlloc, group_map};
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::ttl::{Purged, SnapshotPurge, TtlSpec};
use crate::types::{Key, MapKey, StateStorage, StateValue};

/// The heap storage of one subtask's keyed state.
pub(crate) struct HeapStore<K> {
    /// One `HeapTable<K, S>` per registered state, in registration order,
    /// with the `TypeId` of that concrete type. Tables are only ever
    /// added, never removed or replaced.
    tables: Vec<(TypeId, Box<dyn ErasedHeapTable<K>>)>,
    /// Key groups in the subtask's range.
    groups: usize,
    /// What this store stamps on the references it checked in
    /// [`bind`](KeyedStore::bind).
    stamp: StoreStamp,
    /// The allocator of every table's key-group maps.
    alloc: StateTableAlloc,
    /// The first key group of the range (key group − this = group offset).
    first: KeyGroup,
    /// A prefetched batch's group offsets; reused across batches.
    offsets: Vec<usize>,
}

/// Entries a state must hold before batches are prefetched: below this its
/// table stays in the CPU's caches and a touch pass would be pure cost.
const PREFETCH_MIN_ENTRIES: usize = 1 << 20;

impl<K: Key> HeapStore<K> {
    /// An empty store for the key groups of `range`, configured by `config`.
    pub(crate) fn new(range: KeyGroupRange, config: &HeapConfig) -> Self {
        HeapStore {
            tables: Vec::new(),
            groups: range.len(),
            stamp: StoreStamp::new(),
            alloc: StateTableAlloc::new(config.huge_pages),
            first: range.start,
            offsets: Vec::new(),
        }
    }

    /// Whether this store stamped `state` (see [`StateRef`]).
    #[inline(always)]
    pub(crate) fn stamped<Sh>(&self, state: StateRef<Sh>) -> bool {
        self.stamp.stamped(state)
    }

    /// The table of `state`. A reference this store stamped was checked
    /// when its handle was made, so the record path pays one compare here
    /// instead of a bounds check and a `TypeId` compare per access.
    #[inline(always)]
    fn table<Sh: Shape>(&mut self, state: StateRef<Sh>) -> &mut HeapTable<K, Sh::PerKey> {
        if !self.stamp.stamped(state) {
            return self.checked_table::<Sh::PerKey>(state.id());
        }
        // SAFETY: this store stamped `state` in `bind`, and only after
        // checking that table `state.id()` exists and is a
        // `HeapTable<K, Sh::PerKey>` (stamps are unique per store, so no
        // other store's reference matches). Tables are never removed or
        // replaced, so it still exists and has that type.
        let (_, table) = unsafe { self.tables.get_unchecked_mut(state.id() as usize) };
        let erased: *mut dyn ErasedHeapTable<K> = &mut **table;
        // SAFETY: as above, the data pointer has exactly this type.
        unsafe { &mut *(erased as *mut HeapTable<K, Sh::PerKey>) }
    }

    /// State `id`'s table, checked to be a `HeapTable<K, S>`: for a
    /// reference this store did not stamp (a handle made by another
    /// backend).
    #[cold]
    #[inline(never)]
    fn checked_table<S: StateStorage>(&mut self, id: StateId) -> &mut HeapTable<K, S> {
        let (type_id, table) = &mut self.tables[id as usize];
        assert!(
            *type_id == TypeId::of::<HeapTable<K, S>>(),
            "state handle used with a backend that did not register it"
        );
        let erased: *mut dyn ErasedHeapTable<K> = &mut **table;
        // SAFETY: the table at `id` was created as `HeapTable<K, S>` (its
        // `TypeId` was recorded at registration and just compared), so the
        // data pointer has exactly that type.
        unsafe { &mut *(erased as *mut HeapTable<K, S>) }
    }

    /// Timer queue `id`, registered with namespaces `N`: a cast after one
    /// `TypeId` compare (the backend hands out a queue only for the
    /// registration it made, so the compare never fails).
    #[inline]
    fn timers<N: Namespace>(&mut self, id: StateId) -> &mut TimerTable<K, N> {
        let (type_id, table) = &mut self.tables[id as usize];
        assert!(
            *type_id == TypeId::of::<TimerTable<K, N>>(),
            "timer queue used with a backend that did not register it"
        );
        let erased: *mut dyn ErasedHeapTable<K> = &mut **table;
        // SAFETY: the table at `id` was created as `TimerTable<K, N>` (its
        // `TypeId`, recorded at registration, was just compared).
        unsafe { &mut *(erased as *mut TimerTable<K, N>) }
    }

    /// Timer queue `id`, to read (see [`timers`](Self::timers)).
    #[inline]
    fn timers_ref<N: Namespace>(&self, id: StateId) -> &TimerTable<K, N> {
        let (type_id, table) = &self.tables[id as usize];
        assert!(
            *type_id == TypeId::of::<TimerTable<K, N>>(),
            "timer queue used with a backend that did not register it"
        );
        let erased: *const dyn ErasedHeapTable<K> = &**table;
        // SAFETY: as in `timers`.
        unsafe { &*(erased as *const TimerTable<K, N>) }
    }

    /// The map of `at`'s key group in `state`, to write (copied first if
    /// a snapshot or a query view still shares it).
    #[inline(always)]
    fn slot<Sh: Shape>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<Sh>,
    ) -> &mut GroupMap<K, Sh::PerKey> {
        self.table(state).group_mut(at.offset)
    }

    /// The map of `at`'s key group in `state`, to read (never copies).
    #[inline(always)]
    fn slot_ref<Sh: Shape>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<Sh>,
    ) -> &GroupMap<K, Sh::PerKey> {
        self.table(state).group(at.offset)
    }
}

impl<K: Key> KeyedStore<K> for HeapStore<K> {
    fn register<Sh: Shape>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
        ttl: Option<TtlSpec<Sh::PerKey>>,
    ) -> Result<(), StateError> {
        debug_assert_eq!(id as usize, self.tables.len());
        let mut table = HeapTable::<K, Sh::PerKey>::new(self.groups, self.alloc);
        table.ttl = ttl.map(|spec| {
            Box::new(HeapTtl {
                spec,
                offset: 0,
                keys: Vec::new(),
                pos: 0,
            })
        });
        for (kg, bytes) in restored {
            let what = format!("state '{name}' in key group {kg}");
            table.restore_key_group(kg.wrapping_sub(range.start) as usize, bytes, &what)?;
        }
        self.tables
            .push((TypeId::of::<HeapTable<K, Sh::PerKey>>(), Box::new(table)));
        Ok(())
    }

    fn restored_meta(&self, _name: &str) -> Option<&StateMeta> {
        None
    }

    fn ttl_cleanup(&mut self, id: StateId, entries: u32, now: i64) -> Result<(), StateError> {
        if let Some((_, table)) = self.tables.get_mut(id as usize) {
            table.ttl_cleanup(entries as usize, now);
        }
        Ok(())
    }

    #[inline]
    fn set_current_key(&mut self, _key: &K, _key_group: KeyGroup) -> Result<(), StateError> {
        Ok(())
    }

    /// Once some state outgrows the CPU's caches.
    fn prefetches(&mut self) -> bool {
        self.tables
            .iter()
            .any(|(_, t)| t.len() >= PREFETCH_MIN_ENTRIES)
    }

    fn prefetch(&mut self, keys: &[K], key_groups: &[KeyGroup]) -> Result<(), StateError> {
        self.offsets.clear();
        self.offsets.extend(
            key_groups
                .iter()
                .map(|kg| kg.wrapping_sub(self.first) as usize),
        );
        for (_, table) in &self.tables {
            if table.len() >= PREFETCH_MIN_ENTRIES {
                table.touch(keys, &self.offsets);
            }
        }
        Ok(())
    }

    /// Stamped when table `id` is a `HeapTable<K, Sh::PerKey>` (the
    /// registration that made the handle checked the declared types, so it
    /// always is); unstamped otherwise, so that each access is checked and
    /// the misuse reported there.
    fn bind<Sh: Shape>(&self, id: StateId) -> StateRef<Sh> {
        let state = StateRef::unstamped(id);
        match self.tables.get(id as usize) {
            Some((type_id, _)) if *type_id == TypeId::of::<HeapTable<K, Sh::PerKey>>() => {
                self.stamp.stamp(state)
            }
            _ => state,
        }
    }

    #[inline(always)]
    fn value_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
    ) -> Result<Option<T>, StateError> {
        Ok(self.slot_ref(at, state).get(at.key).cloned())
    }

    #[inline]
    fn value_read<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, StateError> {
        Ok(f(self.slot_ref(at, state).get(at.key)))
    }

    #[inline(always)]
    fn value_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        value: T,
    ) -> Result<(), StateError> {
        let map = self.slot(at, state);
        match map.get_mut(at.key) {
            Some(slot) => *slot = value,
            None => {
                map.insert(at.key.clone(), value);
            }
        }
        Ok(())
    }

    #[inline]
    fn value_upsert<T: StateValue, R>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&mut T>) -> (Option<T>, R),
    ) -> Result<R, StateError> {
        let map = self.slot(at, state);
        match map.get_mut(at.key) {
            Some(slot) => Ok(f(Some(slot)).1),
            None => {
                let (new, result) = f(None);
                if let Some(value) = new {
                    map.insert(at.key.clone(), value);
                }
                Ok(result)
            }
        }
    }

    fn list_get<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
    ) -> Result<Vec<T>, StateError> {
        Ok(self
            .slot_ref(at, state)
            .get(at.key)
            .cloned()
            .unwrap_or_default())
    }

    fn list_add<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return Ok(());
        }
        let map = self.slot(at, state);
        match map.get_mut(at.key) {
            Some(list) => list.extend(values),
            None => {
                map.insert(at.key.clone(), values.collect());
            }
        }
        Ok(())
    }

    fn list_put<T: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        let map = self.slot(at, state);
        if values.is_empty() {
            map.remove(at.key);
        } else {
            map.insert(at.key.clone(), values);
        }
        Ok(())
    }

    fn map_get<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        Ok(self
            .slot_ref(at, state)
            .get(at.key)
            .and_then(|m| m.get(user_key).cloned()))
    }

    fn map_contains<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        Ok(self
            .slot_ref(at, state)
            .get(at.key)
            .is_some_and(|m| m.contains_key(user_key)))
    }

    fn map_put_all<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<(), StateError> {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        let map = self.slot(at, state);
        match map.get_mut(at.key) {
            Some(m) => m.extend(entries),
            None => {
                map.insert(at.key.clone(), entries.collect());
            }
        }
        Ok(())
    }

    fn map_remove<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let map = self.slot(at, state);
        let Some(m) = map.get_mut(at.key) else {
            return Ok(None);
        };
        let removed = m.remove(user_key);
        if m.is_empty() {
            map.remove(at.key);
        }
        Ok(removed)
    }

    fn map_entries<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        Ok(self
            .slot_ref(at, state)
            .get(at.key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn map_for_each<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        mut f: impl FnMut(&UK, &UV),
    ) -> Result<(), StateError> {
        if let Some(m) = self.slot_ref(at, state).get(at.key) {
            m.iter().for_each(|(k, v)| f(k, v));
        }
        Ok(())
    }

    fn map_is_empty<UK: MapKey, UV: StateValue>(
        &mut self,
        at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<bool, StateError> {
        Ok(self
            .slot_ref(at, state)
            .get(at.key)
            .is_none_or(|m| m.is_empty()))
    }

    fn clear<Sh: Shape>(&mut self, at: At<'_, K>, state: StateRef<Sh>) -> Result<(), StateError> {
        self.slot(at, state).remove(at.key);
        Ok(())
    }

    fn register_timers<N: Namespace>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
    ) -> Result<(), StateError> {
        debug_assert_eq!(id as usize, self.tables.len());
        let mut table = TimerTable::<K, N>::new(self.groups);
        for (kg, bytes) in restored {
            let what = format!("timer queue '{name}' in key group {kg}");
            table.restore_key_group(kg.wrapping_sub(range.start) as usize, bytes, &what)?;
        }
        self.tables
            .push((TypeId::of::<TimerTable<K, N>>(), Box::new(table)));
        Ok(())
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
        self.timers::<N>(id)
            .add(at.key, at.offset, domain, timestamp, namespace)
    }

    fn timer_delete<N: Namespace>(
        &mut self,
        at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        self.timers::<N>(id)
            .delete(at.key, at.offset, domain, timestamp, namespace)
    }

    #[inline]
    fn timer_next<N: Namespace>(&self, id: StateId, domain: TimeDomain) -> Option<i64> {
        self.timers_ref::<N>(id).next(domain)
    }

    fn timer_poll<N: Namespace>(
        &mut self,
        id: StateId,
        domain: TimeDomain,
        up_to: i64,
        first: KeyGroup,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        self.timers::<N>(id).poll(domain, up_to, first)
    }

    fn keys(
        &mut self,
        id: StateId,
        range: KeyGroupRange,
    ) -> Result<Vec<(K, KeyGroup)>, StateError> {
        Ok(self.tables[id as usize]
            .1
            .keys()
            .into_iter()
            .map(|(k, o)| (k, range.start + o as KeyGroup))
            .collect())
    }

    fn key_counts(&mut self, id: StateId, _range: KeyGroupRange) -> Result<Vec<usize>, StateError> {
        Ok(self.tables[id as usize].1.sizes())
    }

    fn query(
        &mut self,
        id: StateId,
        key: &K,
        _key_group: KeyGroup,
        offset: usize,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        let table = &self.tables[id as usize].1;
        // If this answer is newer than the state's published view, withdraw
        // the view: the asker's next query must not read older state.
        table.withdraw_view();
        table.lookup(offset, key, format, what)
    }

    fn start_query_view(
        &mut self,
        id: StateId,
        first_key_group: KeyGroup,
        max_staleness: Duration,
        wanted: Arc<AtomicBool>,
    ) -> Option<QueryView> {
        self.tables[id as usize]
            .1
            .start_view(first_key_group, max_staleness, wanted)
    }

    fn publish_query_views(&mut self, now: Instant) -> bool {
        let mut all = true;
        for (_, table) in &mut self.tables {
            all &= table.publish_view(now);
        }
        all
    }

    fn retire_query_views(&mut self, now: Instant) {
        for (_, table) in &mut self.tables {
            table.retire_view(now);
        }
    }

    fn freeze(&mut self, _range: KeyGroupRange) -> Vec<Box<dyn FrozenTable>> {
        self.tables.iter_mut().map(|(_, t)| t.freeze()).collect()
    }

    fn carried_states(&self) -> Vec<StateMeta> {
        Vec::new()
    }

    fn snapshot_native(
        &mut self,
        _checkpoint_id: u64,
        _base: Option<u64>,
    ) -> Option<Result<NativeSnapshot, StateError>> {
        None
    }

    #[cfg(not(feature = "rocksdb"))]
    fn restore_native(
        &mut self,
        _manifests: &[NativeKeyedStateFile],
        _range: KeyGroupRange,
        _checkpoint_id: u64,
        _reusable: bool,
        _fetch: &NativeFetch<'_>,
        operator: &str,
    ) -> Result<Vec<(StateMeta, KeyGroup, Vec<u8>)>, StateError> {
        Err(StateError::Backend {
            operator: operator.to_string(),
            reason: "the checkpoint holds RocksDB files (an incremental checkpoint), and this build of Floe has no RocksDB (built without the `rocksdb` feature); restore it with a build that has it, or from a savepoint".into(),
        })
    }

    /// Reads the entries of this subtask's key groups out of the RocksDB
    /// files, through a temporary directory per snapshot.
    #[cfg(feature = "rocksdb")]
    fn restore_native(
        &mut self,
        manifests: &[NativeKeyedStateFile],
        range: KeyGroupRange,
        _checkpoint_id: u64,
        _reusable: bool,
        fetch: &NativeFetch<'_>,
        operator: &str,
    ) -> Result<Vec<(StateMeta, KeyGroup, Vec<u8>)>, StateError> {
        let mut out = Vec::new();
        for m in manifests {
            if !m.key_group_range().overlaps(&range) {
                continue;
            }
            let dir = std::env::temp_dir().join(format!(
                "floe-native-restore-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| StateError::Backend {
                operator: operator.to_string(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
            let result = m.materialize(&dir, fetch, operator).and_then(|()| {
                crate::store::rocks::canonical_from_native(&dir, m, range, operator)
            });
            let _ = std::fs::remove_dir_all(&dir);
            out.extend(
                result?
                    .into_iter()
                    .map(|(i, kg, bytes)| (m.states[i].clone(), kg, bytes)),
            );
        }
        Ok(out)
    }
}

/// Per-state storage of the heap backend: one hash map per key group of the
/// subtask's range, holding the per-key state `S` (a value, a `Vec`, a map…).
///
/// Key groups are copy-on-write: a snapshot shares every group's map (an
/// `Arc` clone each, no entry copied). The first write to a group the
/// snapshot still holds encodes that group into the snapshot's bytes right
/// there and lets the snapshot drop its reference, so the write goes in
/// place: encoding is work the snapshot needs anyway, whereas copying the
/// map (memory, page faults, freeing it again) is pure overhead. Only a
/// group the encoder is encoding at that very moment is copied.
struct HeapTable<K, S> {
    groups: Vec<Arc<GroupMap<K, S>>>,
    /// `shared[o]`: a snapshot was taken since group `o` was last written, so
    /// its `Arc` may have other owners and the next write goes through
    /// `Arc::make_mut`. While false, this table is the only owner and writes
    /// skip the atomic reference-count check entirely.
    shared: Vec<bool>,
    /// The latest snapshot's per-group cells, for encode-on-write (weak:
    /// a snapshot dropped unencoded, e.g. aborted, is not encoded for).
    frozen: Option<std::sync::Weak<FrozenGroups<K, S>>>,
    /// Buffers groups were encoded into on write, handed back by the
    /// encoder once copied, for the next snapshot's encode-on-write.
    buffers: Arc<EncodeBuffers>,
    /// The published view of a queryable state (see `query_view`).
    view: Option<Box<ViewPublisher<K, S>>>,
    /// A TTL state's cleanup (`None` for every other state).
    ttl: Option<Box<HeapTtl<K, S>>>,
    /// The latest snapshot's full-snapshot cleanup, for encode-on-write.
    frozen_purge: Option<SnapshotPurge<S>>,
}

/// A TTL state's cleanup on the heap: its purge function, and where
/// incremental cleanup stands (the keys of one key group, taken when it
/// got there, and how many of them it checked), like Flink's iterator over
/// the state table.
struct HeapTtl<K, S> {
    spec: TtlSpec<S>,
    offset: usize,
    keys: Vec<K>,
    pos: usize,
}

/// Encode buffers kept from one snapshot to the next. Every checkpoint
/// encodes about the whole state again; fresh buffers would cost a page
/// fault (and a zeroed page) per 4 KiB each time, reused ones cost nothing.
///
/// Bounded twice: at most one buffer per key group, and at most twice the
/// bytes the table's latest snapshot encoded (buffers move between tables
/// and groups of very different sizes, so a count alone would let the
/// capacity drift up to the largest group times the number of groups).
#[derive(Default)]
struct EncodeBuffers {
    pool: std::sync::Mutex<BufferPool>,
}

#[derive(Default)]
struct BufferPool {
    free: Vec<Vec<u8>>,
    /// Total capacity of `free`.
    bytes: usize,
    /// Most capacity `free` may hold: twice the latest snapshot's bytes
    /// (nothing before the first snapshot was encoded).
    budget: usize,
}

impl EncodeBuffers {
    fn pool(&self) -> std::sync::MutexGuard<'_, BufferPool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer, with the capacity of one given back if any.
    fn take(&self) -> Vec<u8> {
        let mut pool = self.pool();
        let buffer = pool.free.pop().unwrap_or_default();
        pool.bytes -= buffer.capacity();
        buffer
    }

    /// Keeps `buffer` for a later `take`, unless `limit` buffers are kept
    /// already or it does not fit the byte budget (then it is freed).
    fn give(&self, mut buffer: Vec<u8>, limit: usize) {
        buffer.clear();
        let mut pool = self.pool();
        let capacity = buffer.capacity();
        if capacity > 0 && pool.free.len() < limit && pool.bytes + capacity <= pool.budget {
            pool.bytes += capacity;
            pool.free.push(buffer);
        }
    }

    /// A snapshot of the table encoded `bytes` in all.
    fn snapshot_encoded(&self, bytes: usize) {
        let mut pool = self.pool();
        pool.budget = bytes.saturating_mul(2);
        while pool.bytes > pool.budget {
            let dropped = pool.free.pop().map_or(0, |b| b.capacity());
            pool.bytes -= dropped;
        }
    }
}

/// A snapshot's key group: still shared with the live table, already
/// encoded (by the task on its first write, or by the encoder), or taken
/// by the encoder.
enum FrozenGroup<K, S> {
    Shared(Arc<GroupMap<K, S>>),
    Encoded(Vec<u8>),
    Taken { has_entries: bool },
}

type FrozenGroups<K, S> = [std::sync::Mutex<FrozenGroup<K, S>>];

impl<K, S> FrozenGroup<K, S> {
    fn has_entries(&self) -> bool {
        match self {
            FrozenGroup::Shared(g) => !g.is_empty(),
            FrozenGroup::Encoded(bytes) => !bytes.is_empty(),
            FrozenGroup::Taken { has_entries } => *has_entries,
        }
    }
}

impl<K, S> HeapTable<K, S> {
    fn new(groups: usize, alloc: StateTableAlloc) -> Self {
        HeapTable {
            groups: (0..groups).map(|_| Arc::new(group_map(alloc))).collect(),
            shared: vec![false; groups],
            frozen: None,
            buffers: Arc::default(),
            view: None,
            ttl: None,
            frozen_purge: None,
        }
    }

    /// The map of group `offset`, for reading.
    #[inline]
    fn group(&self, offset: usize) -> &GroupMap<K, S> {
        &self.groups[offset]
    }

    /// The map of group `offset`, for writing: copied first if a snapshot
    /// still holds it. Always inlined: this is every state write's path,
    /// and the copy is out of line so that it stays a flag test.
    #[inline(always)]
    fn group_mut(&mut self, offset: usize) -> &mut GroupMap<K, S>
    where
        K: Key,
        S: StateStorage,
    {
        if self.shared[offset] {
            return self.unshare(offset);
        }
        let ptr = Arc::as_ptr(&self.groups[offset]) as *mut GroupMap<K, S>;
        // SAFETY: `shared[offset]` is false, so since the last `make_mut` (or
        // creation) no snapshot cloned this `Arc`: this table is its only
        // owner, no weak reference exists, and `&mut self` excludes any other
        // borrow of it. That is exactly the condition under which
        // `Arc::get_mut` would succeed; we skip its atomic check.
        unsafe { &mut *ptr }
    }
}

impl<K: Key, S: StateStorage> HeapTable<K, S> {
    /// The first write to group `offset` since a snapshot or a query view
    /// shared it: hands the group to the snapshot (see
    /// [`encode_frozen`](Self::encode_frozen)) and takes it back, copying it
    /// only if someone still holds it.
    #[cold]
    #[inline(never)]
    fn unshare(&mut self, offset: usize) -> &mut GroupMap<K, S> {
        self.shared[offset] = false;
        self.encode_frozen(offset);
        // With a query view, what the copy costs is its budget.
        let start = self.view.is_some().then(std::time::Instant::now);
        let group = Arc::make_mut(&mut self.groups[offset]);
        if let (Some(view), Some(start)) = (&mut self.view, start) {
            view.copied(start.elapsed());
        }
        group
    }

    /// Before the first write to group `offset` since a snapshot: if the
    /// snapshot still shares the group, encode it for the snapshot now and
    /// release the snapshot's reference (then `make_mut` copies nothing).
    /// Should encoding fail, the snapshot keeps its reference (and reports
    /// the error when it encodes the group itself); the write then copies.
    #[cold]
    fn encode_frozen(&mut self, offset: usize) {
        let Some(frozen) = self.frozen.as_ref().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let mut cell = frozen[offset].lock().unwrap_or_else(|p| p.into_inner());
        if let FrozenGroup::Shared(group) = &*cell {
            if group.is_empty() {
                *cell = FrozenGroup::Encoded(Vec::new());
                return;
            }
            let mut out = self.buffers.take();
            if encode_group(group, &mut out, "keyed state", self.frozen_purge).is_ok() {
                *cell = FrozenGroup::Encoded(out);
            } else {
                self.buffers.give(out, self.groups.len());
            }
        }
    }
}

/// A snapshot's view of one state's table: the key-group maps as they were
/// at the barrier, shared with the live table until it writes them (see
/// [`HeapTable`]).
struct FrozenHeapTable<K, S> {
    groups: Arc<FrozenGroups<K, S>>,
    /// A TTL state's full-snapshot cleanup.
    purge: Option<SnapshotPurge<S>>,
    /// The live table's buffer pool: encoded groups go back to it.
    buffers: Arc<EncodeBuffers>,
    /// Bytes encoded so far, the pool's budget once the snapshot is done.
    encoded: std::sync::atomic::AtomicUsize,
}

impl<K, S> Drop for FrozenHeapTable<K, S> {
    fn drop(&mut self) {
        let encoded = *self.encoded.get_mut();
        // An aborted snapshot (nothing encoded) leaves the budget alone.
        if encoded > 0 {
            self.buffers.snapshot_encoded(encoded);
        }
    }
}

/// Type-erased view of a `HeapTable<K, S>`, so the backend can hold tables of
/// different per-key types side by side.
trait ErasedHeapTable<K>: Send {
    fn sizes(&self) -> Vec<usize>;
    /// Entries in all key groups.
    fn len(&self) -> usize {
        0
    }
    /// Looks each key up in its group (`offsets[i]`) and discards the
    /// answer: a tight loop of independent lookups lets the CPU overlap
    /// their cache misses, which the record-at-a-time loop after it
    /// cannot, so its lookups then hit the cache.
    fn touch(&self, _keys: &[K], _offsets: &[usize]) {}
    /// Every key with an entry and its key group's offset.
    fn keys(&self) -> Vec<(K, usize)>;
    /// The synchronous part of a snapshot: shares every key group's map
    /// with the snapshot (copy-on-write from now on).
    fn freeze(&mut self) -> Box<dyn FrozenTable>;
    /// The encoded per-key state of `key` in group `offset`, for a query;
    /// `None` when the key has none.
    fn lookup(
        &self,
        offset: usize,
        key: &K,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError>;
    /// Starts publishing a view of this table for queries off the task
    /// thread (at most `max_staleness` old); `wanted` is the backend's
    /// shared "queries are coming" flag. `None` for a table queries do not
    /// read (timers).
    fn start_view(
        &mut self,
        first_key_group: KeyGroup,
        max_staleness: std::time::Duration,
        wanted: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<QueryView>;
    /// Publishes the view if it has one and a publish is due at `now`;
    /// false if a view is left unpublished (not due yet).
    fn publish_view(&mut self, now: std::time::Instant) -> bool;
    /// Drops the view's maps if no reader may use them any more.
    fn retire_view(&mut self, now: std::time::Instant);
    /// Withdraws the published view, if any and if it is behind the
    /// table, until the next publish.
    fn withdraw_view(&self);
    /// Adds the entries of one key group from a snapshot.
    fn restore_key_group(
        &mut self,
        offset: usize,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), StateError>;
    /// A TTL state's incremental cleanup: checks the next `entries` keys.
    fn ttl_cleanup(&mut self, entries: usize, now: i64);
}

impl<K: Key, S: StateStorage> ErasedHeapTable<K> for HeapTable<K, S> {
    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.len()).sum()
    }

    fn touch(&self, keys: &[K], offsets: &[usize]) {
        let mut found = 0usize;
        for (key, &offset) in keys.iter().zip(offsets) {
            if let Some(group) = self.groups.get(offset) {
                found += usize::from(group.contains_key(key));
            }
        }
        std::hint::black_box(found);
    }

    fn sizes(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.len()).collect()
    }

    fn keys(&self) -> Vec<(K, usize)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(o, g)| g.keys().map(move |k| (k.clone(), o)))
            .collect()
    }

    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        self.shared.iter_mut().for_each(|s| *s = true);
        // Full-snapshot cleanup leaves out what expired at the barrier.
        self.frozen_purge = self
            .ttl
            .as_ref()
            .filter(|t| t.spec.cleanup.full_snapshot)
            .map(|t| SnapshotPurge {
                purge: t.spec.purge,
                ttl_ms: t.spec.ttl_ms,
                now: (t.spec.clock)(),
            });
        let groups: Arc<FrozenGroups<K, S>> = self
            .groups
            .iter()
            .map(|g| std::sync::Mutex::new(FrozenGroup::Shared(g.clone())))
            .collect();
        self.frozen = Some(Arc::downgrade(&groups));
        Box::new(FrozenHeapTable {
            groups,
            purge: self.frozen_purge,
            buffers: self.buffers.clone(),
            encoded: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn lookup(
        &self,
        offset: usize,
        key: &K,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        self.groups[offset]
            .get(key)
            .map(|value| QueryValue::encode(value, format, what))
            .transpose()
    }

    fn start_view(
        &mut self,
        first_key_group: KeyGroup,
        max_staleness: std::time::Duration,
        wanted: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<QueryView> {
        let groups = self.groups.len();
        Some(
            self.view
                .get_or_insert_with(|| {
                    Box::new(ViewPublisher::new(
                        first_key_group,
                        groups,
                        max_staleness,
                        wanted,
                    ))
                })
                .view(),
        )
    }

    fn publish_view(&mut self, now: std::time::Instant) -> bool {
        let Some(view) = &mut self.view else {
            return true;
        };
        if !view.due(now) {
            return false;
        }
        view.publish(&self.groups, now);
        self.shared.iter_mut().for_each(|s| *s = true);
        true
    }

    fn retire_view(&mut self, now: std::time::Instant) {
        if let Some(view) = &mut self.view {
            view.retire_if_unused(now);
        }
    }

    fn withdraw_view(&self) {
        if let Some(view) = &self.view {
            view.withdraw_if_behind();
        }
    }

    fn restore_key_group(
        &mut self,
        offset: usize,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), StateError> {
        let entries: Vec<(K, S)> = codec::decode(bytes, what)?;
        self.group_mut(offset).extend(entries);
        Ok(())
    }

    fn ttl_cleanup(&mut self, entries: usize, now: i64) {
        let Some(mut ttl) = self.ttl.take() else {
            return;
        };
        let groups = self.groups.len();
        let (mut budget, mut hops) = (entries, 0);
        while budget > 0 {
            if ttl.pos >= ttl.keys.len() {
                // On to the next key group (at most once round per call,
                // so an empty state costs one pass over its groups).
                if hops >= groups {
                    break;
                }
                hops += 1;
                ttl.offset = (ttl.offset + 1) % groups;
                ttl.keys.clear();
                ttl.keys.extend(self.groups[ttl.offset].keys().cloned());
                ttl.pos = 0;
                continue;
            }
            budget -= 1;
            let key = &ttl.keys[ttl.pos];
            ttl.pos += 1;
            let Some(content) = self.groups[ttl.offset].get(key) else {
                continue; // removed since
            };
            match (ttl.spec.purge)(content, ttl.spec.ttl_ms, now) {
                Purged::Keep => {}
                Purged::Drop => {
                    self.group_mut(ttl.offset).remove(key);
                }
                Purged::Trim(rest) => {
                    self.group_mut(ttl.offset).insert(key.clone(), rest);
                }
            }
        }
        self.ttl = Some(ttl);
    }
}

/// A timer queue among the state tables (it shares their index space, so
/// snapshots carry it in registration order): only freezing and restoring
/// apply to it; it has no keys to list and nothing to query.
impl<K: Key, N: Namespace> ErasedHeapTable<K> for TimerTable<K, N> {
    fn sizes(&self) -> Vec<usize> {
        Vec::new()
    }

    fn keys(&self) -> Vec<(K, usize)> {
        Vec::new()
    }

    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        TimerTable::freeze(self)
    }

    fn lookup(
        &self,
        _offset: usize,
        _key: &K,
        _format: QueryFormat,
        _what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        Ok(None)
    }

    fn start_view(
        &mut self,
        _first_key_group: KeyGroup,
        _max_staleness: std::time::Duration,
        _wanted: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<QueryView> {
        None
    }

    fn publish_view(&mut self, _now: std::time::Instant) -> bool {
        true
    }

    fn retire_view(&mut self, _now: std::time::Instant) {}

    fn withdraw_view(&self) {}

    fn restore_key_group(
        &mut self,
        offset: usize,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), StateError> {
        TimerTable::restore_key_group(self, offset, bytes, what)
    }

    fn ttl_cleanup(&mut self, _entries: usize, _now: i64) {}
}

/// Appends a key group's entries in the canonical encoding (the postcard
/// sequence of `(key, value)` pairs, in the map's order); with `purge` (a
/// TTL state's full-snapshot cleanup), without what expired.
fn encode_group<K: Key, S: StateStorage>(
    group: &GroupMap<K, S>,
    out: &mut Vec<u8>,
    what: &str,
    purge: Option<SnapshotPurge<S>>,
) -> Result<(), StateError> {
    if let Some(p) = purge {
        return encode_purged(group, out, what, p);
    }
    if codec::encode_int_pairs(group.len(), group.iter(), out) {
        return Ok(());
    }
    codec::encode_into(&Entries(group), out, what)
}

/// [`encode_group`] for a TTL state cleaned up in full snapshots.
#[cold]
fn encode_purged<K: Key, S: StateStorage>(
    group: &GroupMap<K, S>,
    out: &mut Vec<u8>,
    what: &str,
    p: SnapshotPurge<S>,
) -> Result<(), StateError> {
    let mut trimmed = Vec::new();
    let mut kept: Vec<(&K, Option<usize>)> = Vec::with_capacity(group.len());
    for (k, v) in group.iter() {
        match (p.purge)(v, p.ttl_ms, p.now) {
            Purged::Keep => kept.push((k, None)),
            Purged::Drop => {}
            Purged::Trim(rest) => {
                kept.push((k, Some(trimmed.len())));
                trimmed.push(rest);
            }
        }
    }
    let pairs = kept.iter().map(|(k, t)| {
        let v = match t {
            Some(i) => &trimmed[*i],
            None => &group[*k],
        };
        (*k, v)
    });
    codec::encode_into(
        &Pairs(std::cell::RefCell::new(Some(pairs)), kept.len()),
        out,
        what,
    )
}

/// Serializes an iterator of `len` pairs as a sequence, once.
struct Pairs<I>(std::cell::RefCell<Option<I>>, usize);

impl<I: Iterator<Item = (A, B)>, A: Serialize, B: Serialize> Serialize for Pairs<I> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.1))?;
        for pair in self.0.borrow_mut().take().into_iter().flatten() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

/// Serializes a map as the sequence of its `(key, value)` pairs, in the
/// map's order, without collecting them first.
struct Entries<'a, K, S>(&'a GroupMap<K, S>);

impl<K: Serialize, S: Serialize> Serialize for Entries<'_, K, S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<K: Key, S: StateStorage> FrozenTable for FrozenHeapTable<K, S> {
    fn has_entries(&self, offset: usize) -> bool {
        self.groups[offset]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_entries()
    }

    fn encode_key_group(
        &self,
        offset: usize,
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<bool, StateError> {
        let taken = {
            let mut cell = self.groups[offset]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let has_entries = cell.has_entries();
            std::mem::replace(&mut *cell, FrozenGroup::Taken { has_entries })
        };
        // Encoded outside the lock: a write to this group meanwhile copies
        // it instead of waiting.
        match taken {
            FrozenGroup::Shared(group) => {
                out.clear();
                if group.is_empty() {
                    return Ok(false);
                }
                encode_group(&group, out, what, self.purge)?;
                self.encoded
                    .fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            FrozenGroup::Encoded(mut bytes) => {
                // Hand over the encoded buffer instead of copying it; the
                // caller's old one goes to the pool in its place.
                std::mem::swap(out, &mut bytes);
                self.buffers.give(bytes, self.groups.len());
                self.encoded
                    .fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
                Ok(!out.is_empty())
            }
            FrozenGroup::Taken { .. } => Err(StateError::SnapshotEncodedTwice {
                what: what.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key-group map of a store allocates as the store's
    /// configuration says, also once a snapshot made a write copy it: the
    /// setting belongs to the backend, not to the process.
    #[test]
    fn maps_allocate_as_their_store_is_configured() {
        let range = KeyGroupRange::new(0, 3);
        for huge_pages in [true, false] {
            let mut store = HeapStore::<u64>::new(range, &HeapConfig { huge_pages });
            KeyedStore::<u64>::register::<ValueShape<u64>>(&mut store, 0, "v", &[], range, None)
                .unwrap();
            let state = KeyedStore::<u64>::bind::<ValueShape<u64>>(&store, 0);
            let table = store.table(state);
            let frozen = table.freeze();
            table.group_mut(1).insert(7, 1);
            assert!(
                table
                    .groups
                    .iter()
                    .all(|g| g.allocator().huge_pages() == huge_pages)
            );
            drop(frozen);
        }
    }

    /// One hot key group and many small ones, checkpoint after checkpoint:
    /// the encode buffers kept between snapshots stay within twice the
    /// latest snapshot's bytes instead of drifting towards the number of
    /// groups times the largest one.
    #[test]
    fn kept_encode_buffers_stay_within_twice_the_snapshot() {
        let groups = 32;
        let mut table: HeapTable<u64, u64> = HeapTable::new(groups, StateTableAlloc::new(true));
        let fill = |table: &mut HeapTable<u64, u64>, round: u64| {
            for g in 0..groups {
                let keys = if g == 0 { 300_000 } else { 50 };
                let map = table.group_mut(g);
                for k in 0..keys {
                    map.insert(k * groups as u64 + g as u64, round);
                }
            }
        };
        fill(&mut table, 1);
        for round in 2..30u64 {
            let frozen = table.freeze();
            // Writes after the barrier encode the groups for the snapshot
            // (encode-on-write), in a rotating order so buffers change
            // hands between the hot group and the small ones.
            for i in 0..groups {
                let g = (i + round as usize) % groups;
                table.group_mut(g).insert(g as u64, round);
            }
            let mut scratch = Vec::new();
            let mut snapshot_bytes = 0;
            for g in 0..groups {
                scratch.clear();
                frozen.encode_key_group(g, &mut scratch, "t").unwrap();
                snapshot_bytes += scratch.len();
            }
            drop(frozen);
            let pool = table.buffers.pool();
            assert!(
                pool.bytes <= 2 * snapshot_bytes,
                "round {round}: {} bytes kept for a {snapshot_bytes}-byte snapshot",
                pool.bytes
            );
            assert!(pool.free.len() <= groups);
            drop(pool);
            fill(&mut table, round);
        }
        // And they are reused: a pool that is never drawn from would not
        // hold anything after the first rounds either, so check it holds
        // something.
        assert!(!table.buffers.pool().free.is_empty());
    }
}
