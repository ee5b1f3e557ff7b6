//! The per-subtask keyed state store.
//!
//! One [`KeyedStateBackend`] serves one subtask of one keyed operator. It owns
//! the states registered by that operator's function, the subtask's key-group
//! range and the *current key*: the key of the record being processed, set by
//! the runtime before each call into user code, so that state handles need no
//! key argument (Flink's model).
//!
//! Storage is chosen by [`StateBackendKind`]. The heap backend keeps typed
//! values in hash maps, one map per key group per state, so nothing is ever
//! serialized on the hot path and a snapshot can be cut by key-group range. A
//! byte-oriented backend (RocksDB) is another variant of the private `Store`
//! enum: handles dispatch on it, and only that variant encodes keys and values.

use std::any::TypeId;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use floe_core::KeyGroup;
use rustc_hash::FxHashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Key;
use crate::codec;
use crate::descriptor::StateKind;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::query::{QueryFormat, QueryValue, QueryableStateInfo};
use crate::query_view::{QueryView, ViewPublisher};
use crate::snapshot::RestoredState;

/// Which state backend holds keyed state (`state.backend.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// Typed values on the heap (Flink's `HashMapStateBackend`).
    #[default]
    HashMap,
    /// An embedded RocksDB per subtask on local disk, for state larger
    /// than memory (Flink's `EmbeddedRocksDBStateBackend`; feature
    /// `rocksdb`).
    RocksDb,
}

impl fmt::Display for StateBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateBackendKind::HashMap => "hashmap",
            StateBackendKind::RocksDb => "rocksdb",
        })
    }
}

impl FromStr for StateBackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hashmap" | "heap" => Ok(StateBackendKind::HashMap),
            "rocksdb" => Ok(StateBackendKind::RocksDb),
            other => Err(format!(
                "unknown state backend {other:?} (supported: hashmap, rocksdb)"
            )),
        }
    }
}

/// Where and with how much memory the RocksDB backend works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Working directories go under this one
    /// (`state.backend.rocksdb.localdir`); each subtask's is removed when
    /// its backend is dropped.
    pub local_dir: std::path::PathBuf,
    /// The process's memory budget for RocksDB, shared by every state and
    /// subtask (`taskmanager.memory.managed.size`).
    pub managed_memory: u64,
    /// Checkpoints upload RocksDB's own files, only the new ones
    /// (`state.backend.incremental`); savepoints stay canonical.
    pub incremental: bool,
    /// The write-back cache's share of `managed_memory`
    /// (`state.backend.rocksdb.write-cache.size`; `None`: a quarter).
    pub write_cache: Option<u64>,
}

impl RocksDbConfig {
    /// The smallest managed memory the backend accepts.
    pub const MIN_MANAGED_MEMORY: u64 = 16 << 20;

    /// How the managed memory splits: (RocksDB's budget, the write-back
    /// cache's), or why it cannot.
    pub fn memory_split(&self) -> Result<(u64, u64), String> {
        let cache = self.write_cache.unwrap_or(self.managed_memory / 4);
        let rocks = self.managed_memory.saturating_sub(cache);
        if rocks < 8 << 20 {
            return Err(format!(
                "taskmanager.memory.managed.size of {} bytes leaves RocksDB {rocks} bytes besides the write-back cache's {cache}; it needs at least 8 MiB (use at least 16mb, or a smaller state.backend.rocksdb.write-cache.size)",
                self.managed_memory
            ));
        }
        Ok((rocks, cache))
    }
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            local_dir: std::env::temp_dir().join("floe-rocksdb"),
            managed_memory: 256 << 20,
            incremental: false,
            write_cache: None,
        }
    }
}

/// A backend kind with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateBackendSettings {
    /// Heap or RocksDB.
    pub kind: StateBackendKind,
    /// Used when `kind` is RocksDB.
    pub rocksdb: RocksDbConfig,
}

impl From<StateBackendKind> for StateBackendSettings {
    fn from(kind: StateBackendKind) -> Self {
        StateBackendSettings {
            kind,
            rocksdb: RocksDbConfig::default(),
        }
    }
}

/// How a state's per-key value is laid out, and the typed functions a
/// byte-oriented backend needs for it (monomorphized where the state's
/// types are known: the handle constructors).
pub(crate) struct StateCodec<K> {
    /// Value, list or map layout.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) layout: Layout,
    /// The per-key canonical bytes as JSON (queries on RocksDB).
    pub(crate) json: fn(&[u8], &str) -> Result<serde_json::Value, StateError>,
    /// Writes restored canonical key groups into RocksDB.
    #[cfg(feature = "rocksdb")]
    pub(crate) restore: crate::rocks::RestoreFn,
    pub(crate) _k: std::marker::PhantomData<fn(K)>,
}

impl<K: Key> StateCodec<K> {
    /// A value, reducing or aggregating state storing `T` per key.
    pub(crate) fn value<T: crate::StateValue>() -> Self {
        StateCodec {
            layout: Layout::ValueLike,
            json: json_of::<T>,
            #[cfg(feature = "rocksdb")]
            restore: crate::rocks::restore_values::<K, T>,
            _k: std::marker::PhantomData,
        }
    }

    /// A list state of `T`.
    pub(crate) fn list<T: crate::StateValue>() -> Self {
        StateCodec {
            layout: Layout::List,
            json: json_of::<Vec<T>>,
            #[cfg(feature = "rocksdb")]
            restore: crate::rocks::restore_lists::<K, T>,
            _k: std::marker::PhantomData,
        }
    }

    /// A map state of `UK` to `UV`.
    pub(crate) fn map<UK: crate::handles::MapKey, UV: crate::StateValue>() -> Self {
        StateCodec {
            layout: Layout::Map,
            json: json_of::<FxHashMap<UK, UV>>,
            #[cfg(feature = "rocksdb")]
            restore: crate::rocks::restore_maps::<K, UK, UV>,
            _k: std::marker::PhantomData,
        }
    }
}

/// Decodes canonical per-key bytes as `S` and renders them as JSON.
fn json_of<S: Serialize + DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<serde_json::Value, StateError> {
    let value: S = codec::decode(bytes, what)?;
    serde_json::to_value(&value).map_err(|e| StateError::Codec {
        action: "encode",
        what: format!("{what} as JSON"),
        reason: e.to_string(),
    })
}

/// The three per-key layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One value per key (value, reducing, aggregating).
    ValueLike,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

/// Gives state handles access to the keyed backend of the current operator.
/// Implemented by every runtime context in which a current key exists.
pub trait KeyedStateAccess<K: Key> {
    /// The backend, with its current key set.
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K>;
}

impl<K: Key> KeyedStateAccess<K> for KeyedStateBackend<K> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self
    }
}

/// Metadata of one registered state.
#[derive(Debug, Clone)]
struct Registration {
    name: String,
    kind: StateKind,
    type_id: TypeId,
    type_name: &'static str,
    /// `TypeId` of the concrete table (`HeapTable<K, S>`), checked on every
    /// access before the table is used as that type.
    table_type: TypeId,
    /// The name queries use, when the state is queryable.
    queryable: Option<String>,
    /// The per-key canonical bytes as JSON.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    json: fn(&[u8], &str) -> Result<serde_json::Value, StateError>,
}

/// One key group's entries of one state: a hash table in huge-page backed
/// memory once it is large (see `table_alloc`), hashed with FxHash (keys
/// arrive already spread over key groups by murmur3, and FxHash is the
/// cheapest hash that keeps probing short).
pub(crate) type GroupMap<K, S> =
    hashbrown::HashMap<K, S, rustc_hash::FxBuildHasher, crate::table_alloc::StateTableAlloc>;

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
pub(crate) struct HeapTable<K, S> {
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
    fn new(groups: usize) -> Self {
        HeapTable {
            groups: (0..groups).map(|_| Arc::new(GroupMap::default())).collect(),
            shared: vec![false; groups],
            frozen: None,
            buffers: Arc::default(),
            view: None,
        }
    }

    /// The map of group `offset`, for reading.
    #[inline]
    fn group(&self, offset: usize) -> &GroupMap<K, S> {
        &self.groups[offset]
    }

    /// The map of group `offset`, for writing: copied first if a snapshot
    /// still holds it.
    #[inline]
    fn group_mut(&mut self, offset: usize) -> &mut GroupMap<K, S>
    where
        K: Key,
        S: StateStorage,
    {
        if self.shared[offset] {
            self.shared[offset] = false;
            self.encode_frozen(offset);
            // With a query view, what the copy costs is its budget.
            let start = self.view.is_some().then(std::time::Instant::now);
            let group = Arc::make_mut(&mut self.groups[offset]);
            if let (Some(view), Some(start)) = (&mut self.view, start) {
                view.copied(start.elapsed());
            }
            return group;
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
            if encode_group(group, &mut out, "keyed state").is_ok() {
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
pub(crate) trait ErasedHeapTable: Send {
    fn sizes(&self) -> Vec<usize>;
    /// Every key with an entry and its key group's offset, as a boxed
    /// `Vec<(K, usize)>`.
    fn keys_any(&self) -> Box<dyn std::any::Any>;
    /// The synchronous part of a snapshot: shares every key group's map
    /// with the snapshot (copy-on-write from now on).
    fn freeze(&mut self) -> Box<dyn FrozenTable>;
    /// The encoded per-key state of `key` (a `&K`) in group `offset`, for
    /// a query; `None` when the key has none.
    fn lookup(
        &self,
        offset: usize,
        key: &dyn std::any::Any,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError>;
    /// Starts publishing a view of this table for queries off the task
    /// thread (at most `max_staleness` old); `wanted` is the backend's
    /// shared "queries are coming" flag.
    fn start_view(
        &mut self,
        first_key_group: KeyGroup,
        max_staleness: std::time::Duration,
        wanted: Arc<std::sync::atomic::AtomicBool>,
    ) -> QueryView;
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
}

/// A frozen view of one state's table, encoded off the task thread.
pub(crate) trait FrozenTable: Send {
    /// True when key group `offset` has at least one entry.
    fn has_entries(&self, offset: usize) -> bool;
    /// Sets `out` to the canonical bytes of one key group's entries (the
    /// postcard sequence of `(key, value)` pairs), discarding what it held
    /// (an implementation may swap in a buffer it already encoded into);
    /// returns false, leaving `out` empty, when the group has no entry.
    fn encode_key_group(
        &self,
        offset: usize,
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<bool, StateError>;
}

/// What the heap backend stores per key: a value, a list, a map, an accumulator.
pub(crate) trait StateStorage:
    Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateStorage for S {}

impl<K: Key, S: StateStorage> ErasedHeapTable for HeapTable<K, S> {
    fn sizes(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.len()).collect()
    }

    fn keys_any(&self) -> Box<dyn std::any::Any> {
        let keys: Vec<(K, usize)> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(o, g)| g.keys().map(move |k| (k.clone(), o)))
            .collect();
        Box::new(keys)
    }

    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        self.shared.iter_mut().for_each(|s| *s = true);
        let groups: Arc<FrozenGroups<K, S>> = self
            .groups
            .iter()
            .map(|g| std::sync::Mutex::new(FrozenGroup::Shared(g.clone())))
            .collect();
        self.frozen = Some(Arc::downgrade(&groups));
        Box::new(FrozenHeapTable {
            groups,
            buffers: self.buffers.clone(),
            encoded: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn lookup(
        &self,
        offset: usize,
        key: &dyn std::any::Any,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        let key = key
            .downcast_ref::<K>()
            .expect("a key of this backend's key type");
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
    ) -> QueryView {
        let groups = self.groups.len();
        self.view
            .get_or_insert_with(|| {
                Box::new(ViewPublisher::new(
                    first_key_group,
                    groups,
                    max_staleness,
                    wanted,
                ))
            })
            .view()
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
}

/// Appends a key group's entries in the canonical encoding (the postcard
/// sequence of `(key, value)` pairs, in the map's order).
fn encode_group<K: Key, S: StateStorage>(
    group: &GroupMap<K, S>,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), StateError> {
    if codec::encode_int_pairs(group.len(), group.iter(), out) {
        return Ok(());
    }
    codec::encode_into(&Entries(group), out, what)
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
                encode_group(&group, out, what)?;
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
            FrozenGroup::Taken { .. } => Err(StateError::Codec {
                action: "encode",
                what: what.to_string(),
                reason: "the key group was encoded twice".into(),
            }),
        }
    }
}

pub(crate) enum Store {
    /// One `HeapTable<K, S>` per registered state, in registration order.
    Heap(Vec<Box<dyn ErasedHeapTable>>),
    /// One column family per registered state.
    #[cfg(feature = "rocksdb")]
    Rocks(Box<crate::rocks::RocksStore>),
}

/// The keyed state of one subtask of one operator.
pub struct KeyedStateBackend<K: Key> {
    operator: String,
    range: KeyGroupRange,
    max_parallelism: u32,
    kind: StateBackendKind,
    /// The current key and its key group's offset in `range`.
    current: Option<(K, usize)>,
    registrations: Vec<Registration>,
    pub(crate) store: Store,
    /// Restored state not yet registered by the function, by name. It is
    /// loaded when registered and carried into every snapshot until then, so
    /// state a function stops using is not lost silently.
    pub(crate) restored: Vec<RestoredState>,
    /// Encoded size of the latest snapshot (see `KeyedStateSnapshot`).
    pub(crate) snapshot_size_hint: Arc<std::sync::atomic::AtomicUsize>,
    /// Set by readers of this backend's query views: publish them again.
    views_wanted: Arc<std::sync::atomic::AtomicBool>,
    /// Whether any query view was started, and how many calls of
    /// `publish_query_views` found no reader since it last looked for
    /// views to retire.
    views: bool,
    views_idle: u32,
}

impl<K: Key> KeyedStateBackend<K> {
    /// An empty backend for the subtask owning `range`: on the heap, or in
    /// a new RocksDB database under the configured local directory.
    pub fn new(
        settings: impl Into<StateBackendSettings>,
        operator: impl Into<String>,
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> Result<Self, StateError> {
        let settings = settings.into();
        let operator = operator.into();
        let store = match settings.kind {
            StateBackendKind::HashMap => Store::Heap(Vec::new()),
            #[cfg(feature = "rocksdb")]
            StateBackendKind::RocksDb => Store::Rocks(Box::new(crate::rocks::RocksStore::open(
                &settings.rocksdb,
                &operator,
                range,
            )?)),
            #[cfg(not(feature = "rocksdb"))]
            StateBackendKind::RocksDb => {
                return Err(StateError::Backend {
                    operator,
                    reason: "this build of Floe has no RocksDB backend (it was built without the `rocksdb` feature)".into(),
                });
            }
        };
        Ok(KeyedStateBackend {
            operator,
            range,
            max_parallelism,
            kind: settings.kind,
            current: None,
            registrations: Vec::new(),
            restored: Vec::new(),
            snapshot_size_hint: Default::default(),
            views_wanted: Default::default(),
            views: false,
            views_idle: 0,
            store,
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> StateBackendKind {
        self.kind
    }

    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The job's number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The operator this backend belongs to (for error messages).
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// Makes `key` (in `key_group`) the key that state handles read and write.
    #[inline]
    pub fn set_current_key(&mut self, key: K, key_group: KeyGroup) -> Result<(), StateError> {
        let offset = key_group.wrapping_sub(self.range.start) as usize;
        if offset >= self.range.len() {
            self.current = None;
            return Err(StateError::KeyGroupOutOfRange {
                key_group,
                range: self.range,
            });
        }
        #[cfg(feature = "rocksdb")]
        if let Store::Rocks(r) = &mut self.store {
            r.set_key(key_group, &key)?;
        }
        self.current = Some((key, offset));
        Ok(())
    }

    /// The current key, if a record is being processed.
    pub fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|(k, _)| k)
    }

    /// The current key's key group.
    pub fn current_key_group(&self) -> Option<KeyGroup> {
        self.current
            .as_ref()
            .map(|(_, off)| self.range.start + *off as KeyGroup)
    }

    /// Forgets the current key, so that stray state access fails loudly.
    pub fn clear_current_key(&mut self) {
        self.current = None;
    }

    /// Registers (or finds again) state `name` of `kind` whose per-key storage
    /// is `S`; `T` is the declared value type, checked for compatibility.
    pub(crate) fn register<T: 'static, S: StateStorage>(
        &mut self,
        name: &str,
        kind: StateKind,
        queryable: Option<&str>,
        codec: StateCodec<K>,
    ) -> Result<u32, StateError> {
        let type_id = TypeId::of::<T>();
        let type_name = std::any::type_name::<T>();
        if let Some(q) = queryable
            && let Some(other) = self
                .registrations
                .iter()
                .find(|r| r.name != name && r.queryable.as_deref() == Some(q))
        {
            return Err(StateError::DuplicateQueryableName {
                queryable: q.to_string(),
                first: other.name.clone(),
                second: name.to_string(),
                operator: self.operator.clone(),
            });
        }
        if let Some((idx, r)) = self
            .registrations
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == name)
        {
            if r.kind != kind || r.type_id != type_id {
                return Err(StateError::IncompatibleRegistration {
                    name: name.to_string(),
                    existing_kind: r.kind,
                    existing_type: r.type_name,
                    requested_kind: kind,
                    requested_type: type_name,
                });
            }
            return Ok(idx as u32);
        }
        let restored = match self.restored.iter().position(|r| r.name == name) {
            Some(pos) => Some(self.restored.remove(pos)),
            None => None,
        };
        let incompatible =
            |restored: &RestoredState, reason: String| StateError::IncompatibleRestore {
                name: name.to_string(),
                restored_kind: restored.kind,
                requested_kind: kind,
                requested_type: type_name,
                reason,
            };
        if let Some(r) = restored.as_ref().filter(|r| r.kind != kind) {
            let err = incompatible(r, "the kinds differ".into());
            self.restored.extend(restored);
            return Err(err);
        }
        // The new state's storage, with its restored entries. On failure
        // nothing is added: the state's index stays that of the next
        // registration in every store.
        let groups = restored.as_ref().map_or(&[][..], |r| &r.key_groups[..]);
        let start = self.range.start;
        let loaded = match &mut self.store {
            Store::Heap(tables) => {
                let mut table = HeapTable::<K, S>::new(self.range.len());
                groups
                    .iter()
                    .try_for_each(|(kg, bytes)| {
                        let what = format!("state '{name}' in key group {kg}");
                        table.restore_key_group((*kg - start) as usize, bytes, &what)
                    })
                    .map(|()| tables.push(Box::new(table)))
            }
            #[cfg(feature = "rocksdb")]
            Store::Rocks(r) => {
                if let Some(restored_kind) = r.native_kind(name).filter(|k| *k != kind) {
                    return Err(StateError::IncompatibleRestore {
                        name: name.to_string(),
                        restored_kind,
                        requested_kind: kind,
                        requested_type: type_name,
                        reason: "the kinds differ".into(),
                    });
                }
                r.create_state(name, codec.layout.into())?;
                let idx = self.registrations.len() as u32;
                (codec.restore)(r, idx, groups, name).inspect_err(|_| r.abandon_last_state())
            }
        };
        if let Err(e) = loaded {
            let restored = restored.expect("only restored entries can fail to load");
            let err = incompatible(&restored, e.to_string());
            self.restored.push(restored);
            return Err(err);
        }
        self.registrations.push(Registration {
            name: name.to_string(),
            kind,
            type_id,
            type_name,
            table_type: TypeId::of::<HeapTable<K, S>>(),
            queryable: queryable.map(str::to_string),
            json: codec.json,
        });
        Ok((self.registrations.len() - 1) as u32)
    }

    /// The current key and state `id`'s table, checked to be a
    /// `HeapTable<K, S>`.
    #[inline]
    fn heap_table<S: StateStorage>(
        &mut self,
        id: u32,
    ) -> Result<(&mut HeapTable<K, S>, &K, usize), StateError> {
        let Some((key, offset)) = self.current.as_ref() else {
            return Err(StateError::NoCurrentKey {
                name: self.registrations[id as usize].name.clone(),
            });
        };
        match &mut self.store {
            #[cfg(feature = "rocksdb")]
            Store::Rocks(_) => unreachable!("heap access on the RocksDB backend"),
            Store::Heap(tables) => {
                // A cheap check of a constant against a stored id, instead of
                // two virtual calls through `Any` on every state access.
                assert!(
                    self.registrations[id as usize].table_type == TypeId::of::<HeapTable<K, S>>(),
                    "state handle used with a backend that did not register it"
                );
                let erased: *mut dyn ErasedHeapTable = &mut *tables[id as usize];
                // SAFETY: the table at `id` was created as `HeapTable<K, S>`
                // (its `TypeId` was recorded at registration and just
                // compared), so the data pointer has exactly that type.
                let table = unsafe { &mut *(erased as *mut HeapTable<K, S>) };
                Ok((table, key, *offset))
            }
        }
    }

    /// The RocksDB store, when this is the RocksDB backend and a current
    /// key is set (state `id` is accessed); `None` on the heap backend.
    #[cfg(feature = "rocksdb")]
    #[inline]
    pub(crate) fn rocks(
        &mut self,
        id: u32,
    ) -> Result<Option<&mut crate::rocks::RocksStore>, StateError> {
        match &mut self.store {
            Store::Heap(_) => Ok(None),
            Store::Rocks(r) => {
                if self.current.is_none() {
                    return Err(StateError::NoCurrentKey {
                        name: self.registrations[id as usize].name.clone(),
                    });
                }
                Ok(Some(r))
            }
        }
    }

    /// The current key and the map of its key group for state `id`, to
    /// write (copied first if a snapshot still shares it).
    #[inline]
    pub(crate) fn heap_slot<S: StateStorage>(
        &mut self,
        id: u32,
    ) -> Result<(&mut GroupMap<K, S>, &K), StateError> {
        let (table, key, offset) = self.heap_table::<S>(id)?;
        Ok((table.group_mut(offset), key))
    }

    /// The current key and the map of its key group for state `id`, to read
    /// (never copies).
    #[inline]
    pub(crate) fn heap_slot_ref<S: StateStorage>(
        &mut self,
        id: u32,
    ) -> Result<(&GroupMap<K, S>, &K), StateError> {
        let (table, key, offset) = self.heap_table::<S>(id)?;
        Ok((table.group(offset), key))
    }

    /// Metadata and frozen views of the registered tables, in registration
    /// order (the synchronous part of a snapshot).
    pub(crate) fn freeze_tables(
        &mut self,
    ) -> (Vec<crate::snapshot::StateMeta>, Vec<Box<dyn FrozenTable>>) {
        let metas = self.state_metas();
        let frozen = match &mut self.store {
            Store::Heap(tables) => tables.iter_mut().map(|t| t.freeze()).collect(),
            #[cfg(feature = "rocksdb")]
            Store::Rocks(r) => match r.freeze(self.range) {
                Ok(frozen) => frozen,
                Err(e) => {
                    // `e` already names the operator; each state's view
                    // reports it when encoded.
                    let reason = Arc::new(match e {
                        StateError::Backend { reason, .. } => reason,
                        other => other.to_string(),
                    });
                    (0..metas.len())
                        .map(|_| {
                            Box::new(crate::rocks::FailedFrozenTable(
                                reason.clone(),
                                self.operator.clone(),
                            )) as Box<dyn FrozenTable>
                        })
                        .collect()
                }
            },
        };
        (metas, frozen)
    }

    /// What snapshots record about every state in the backend: the
    /// registered ones, then (RocksDB) those restored natively and not
    /// registered again yet.
    pub(crate) fn state_metas(&self) -> Vec<crate::snapshot::StateMeta> {
        #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
        let mut metas: Vec<_> = self
            .registrations
            .iter()
            .map(|r| crate::snapshot::StateMeta {
                name: r.name.clone(),
                kind: r.kind.code(),
                value_type: r.type_name.to_string(),
            })
            .collect();
        #[cfg(feature = "rocksdb")]
        if let Store::Rocks(r) = &self.store {
            metas.extend(r.unregistered_native_states().cloned());
        }
        metas
    }

    /// How many states are registered.
    #[inline]
    pub fn num_registered(&self) -> usize {
        self.registrations.len()
    }

    /// The registered states that are queryable.
    pub fn queryable_states(&self) -> impl Iterator<Item = QueryableStateInfo<'_>> {
        self.registrations.iter().filter_map(|r| {
            Some(QueryableStateInfo {
                queryable_name: r.queryable.as_deref()?,
                state_name: &r.name,
                kind: r.kind,
                declared_type: r.type_name,
            })
        })
    }

    /// Reads the live state of `key` (in `key_group`) in the state
    /// queryable as `queryable_name`, encoded as `format`: a query served
    /// between two batches on the task thread, so it sees every record
    /// processed so far and no torn update. The state's published query
    /// view, if older than this answer, is withdrawn until the next publish.
    /// `Ok(None)`: the key has no state (or the name is not queryable here).
    pub fn query(
        &mut self,
        queryable_name: &str,
        key: &K,
        key_group: KeyGroup,
        format: QueryFormat,
    ) -> Result<Option<QueryValue>, StateError> {
        let Some(idx) = self.queryable_index(queryable_name) else {
            return Ok(None);
        };
        let offset = key_group.wrapping_sub(self.range.start) as usize;
        if offset >= self.range.len() {
            return Err(StateError::KeyGroupOutOfRange {
                key_group,
                range: self.range,
            });
        }
        let what = format!("queryable state '{queryable_name}'");
        match &mut self.store {
            Store::Heap(tables) => {
                // If this answer is newer than the state's published view,
                // withdraw the view: the asker's next query must not read
                // older state.
                tables[idx].withdraw_view();
                tables[idx].lookup(offset, key, format, &what)
            }
            #[cfg(feature = "rocksdb")]
            Store::Rocks(r) => {
                let Some(bytes) = r.per_key_bytes(idx as u32, key_group, key)? else {
                    return Ok(None);
                };
                Ok(Some(match format {
                    QueryFormat::Postcard => QueryValue::Postcard(bytes),
                    QueryFormat::Json => {
                        QueryValue::Json((self.registrations[idx].json)(&bytes, &what)?)
                    }
                }))
            }
        }
    }

    /// The registration index of the state queryable as `queryable_name`.
    fn queryable_index(&self, queryable_name: &str) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.queryable.as_deref() == Some(queryable_name))
    }

    /// The heap backend's tables (none on RocksDB).
    fn heap_tables(&mut self) -> &mut [Box<dyn ErasedHeapTable>] {
        match &mut self.store {
            Store::Heap(tables) => tables,
            #[cfg(feature = "rocksdb")]
            Store::Rocks(_) => &mut [],
        }
    }

    /// A view of the state queryable as `queryable_name` that queries can
    /// read on their own thread, at most `max_staleness` old (see
    /// [`crate::query_view`]); the same view on every call. `None` on the
    /// RocksDB backend (its reads go through the task) or for a name that
    /// is not queryable here.
    pub fn query_view(
        &mut self,
        queryable_name: &str,
        max_staleness: std::time::Duration,
    ) -> Option<QueryView> {
        let idx = self.queryable_index(queryable_name)?;
        match &mut self.store {
            Store::Heap(tables) => {
                self.views = true;
                Some(tables[idx].start_view(
                    self.range.start,
                    max_staleness,
                    self.views_wanted.clone(),
                ))
            }
            #[cfg(feature = "rocksdb")]
            Store::Rocks(_) => None,
        }
    }

    /// Publishes the query views that are due, if their readers asked
    /// since the last publish: between two batches, on the task thread.
    /// Without readers this is one relaxed load, and now and then a look
    /// for views nobody reads any more, whose maps are then freed.
    #[inline]
    pub fn publish_query_views(&mut self) {
        use std::sync::atomic::Ordering;
        /// Calls without readers between two looks for unused views.
        const RETIRE_EVERY: u32 = 1024;
        if !self.views_wanted.load(Ordering::Relaxed) {
            if self.views {
                self.views_idle += 1;
                if self.views_idle >= RETIRE_EVERY {
                    self.views_idle = 0;
                    self.retire_query_views();
                }
            }
            return;
        }
        self.views_wanted.store(false, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut all = true;
        for table in self.heap_tables() {
            all &= table.publish_view(now);
        }
        if !all {
            // Not due yet: look again after the next batch.
            self.views_wanted.store(true, Ordering::Relaxed);
        }
    }

    #[cold]
    fn retire_query_views(&mut self) {
        let now = std::time::Instant::now();
        self.heap_tables()
            .iter_mut()
            .for_each(|t| t.retire_view(now));
    }

    /// Names and kinds of the registered states, in registration order.
    pub fn registered_states(&self) -> impl Iterator<Item = (&str, StateKind)> {
        self.registrations.iter().map(|r| (r.name.as_str(), r.kind))
    }

    /// Every key that holds a value in state `name`, with its key group
    /// (Flink's `applyToKeyedState` visits these). `None` for an unknown
    /// name.
    pub fn keys(&mut self, name: &str) -> Option<Vec<(K, KeyGroup)>> {
        let idx = self.registrations.iter().position(|r| r.name == name)?;
        let keys = match &mut self.store {
            Store::Heap(tables) => tables[idx].keys_any(),
            #[cfg(feature = "rocksdb")]
            Store::Rocks(r) => {
                return match r.keys::<K>(idx as u32, self.range) {
                    Ok(keys) => Some(keys),
                    Err(e) => {
                        tracing::warn!("cannot list the keys of state '{name}': {e}");
                        Some(Vec::new())
                    }
                };
            }
        };
        let keys = keys
            .downcast::<Vec<(K, usize)>>()
            .expect("a table of this backend's key type");
        let start = self.range.start;
        Some(
            keys.into_iter()
                .map(|(k, o)| (k, start + o as KeyGroup))
                .collect(),
        )
    }

    /// Number of keys that hold a value in state `name`, per key group of this
    /// subtask's range (in range order). `None` for an unknown name.
    pub fn keys_per_key_group(&mut self, name: &str) -> Option<Vec<usize>> {
        let idx = self.registrations.iter().position(|r| r.name == name)?;
        match &mut self.store {
            Store::Heap(tables) => Some(tables[idx].sizes()),
            #[cfg(feature = "rocksdb")]
            Store::Rocks(r) => Some(r.key_counts(idx as u32).unwrap_or_else(|e| {
                tracing::warn!("cannot count the keys of state '{name}': {e}");
                vec![0; self.range.len()]
            })),
        }
    }
}

impl<K: Key> fmt::Debug for KeyedStateBackend<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStateBackend")
            .field("operator", &self.operator)
            .field("kind", &self.kind)
            .field("range", &self.range)
            .field("states", &self.registrations.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One hot key group and many small ones, checkpoint after checkpoint:
    /// the encode buffers kept between snapshots stay within twice the
    /// latest snapshot's bytes instead of drifting towards the number of
    /// groups times the largest one.
    #[test]
    fn kept_encode_buffers_stay_within_twice_the_snapshot() {
        let groups = 32;
        let mut table: HeapTable<u64, u64> = HeapTable::new(groups);
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
