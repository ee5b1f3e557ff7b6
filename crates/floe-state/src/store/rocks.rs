//! The RocksDB store (feature `rocksdb`, Flink's
//! `EmbeddedRocksDBStateBackend`): one `floe_rocksdb::KeyedDb` per subtask,
//! one column family per state, keys laid out as key group | key | (user
//! key).
//!
//! The store encodes the current key once per record
//! ([`RocksStore::set_key`]) into a reused prefix; the [`KeyedStore`]
//! primitives then read and write postcard bytes through it. Snapshots are canonical: the
//! synchronous part takes a RocksDB checkpoint (a flush plus hard links),
//! and the asynchronous part reads it back per key group into exactly the
//! bytes the heap backend writes, so checkpoints and savepoints restore on
//! either backend.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use floe_core::KeyGroup;
use floe_rocksdb::{
    CheckpointReader, KeyPrefix, KeyedDb, RocksDbResources, StateLayout, TtlCompaction, TtlFilter,
    WritePattern,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::config::RocksDbConfig;
use crate::descriptor::{StateKind, StateMeta};
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeFetch, NativeKeyedStateFile, NativeSnapshot, NativeSstFile, SstSource};
use crate::query::{QueryFormat, QueryValue};
use crate::query_view::QueryView;
use crate::store::rocks_cache::{Cached, ValueCache, order_prefix, sort_by_key_bytes};
use crate::store::rocks_timers::{self, RocksTimers, TimerSettings};
use crate::store::{
    At, FrozenTable, KeyedStore, Layout, ListShape, MapShape, Shape, StateId, StateRef, ValueShape,
    restore_through,
};
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::ttl::{TtlSpec, TtlTimeProvider};
use crate::types::{Key, MapKey, StateStorage, StateValue};

fn backend_error(operator: &str, action: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Backend {
        operator: operator.to_string(),
        reason: format!("RocksDB {action}: {e}"),
    }
}

/// The process's RocksDB memory: one budget shared by every database (a
/// later job asking for another size shares the first one's, as one
/// TaskManager has one managed memory).
fn shared_resources(budget: u64, operator: &str) -> Result<RocksDbResources, StateError> {
    static SHARED: OnceLock<Mutex<Option<RocksDbResources>>> = OnceLock::new();
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = shared.as_ref() {
        if r.budget() as u64 != budget {
            tracing::warn!(
                "RocksDB memory budget {budget} ignored: this process already shares {} bytes",
                r.budget()
            );
        }
        return Ok(r.clone());
    }
    let r = RocksDbResources::new(budget as usize)
        .map_err(|e| backend_error(operator, "memory budget", e))?;
    *shared = Some(r.clone());
    Ok(r)
}

/// Removes working directories left by processes that no longer run (a
/// job killed with SIGKILL cannot clean up; the next one on the host does).
/// Names are `<operator>-<pid>-<random>`; a live pid's are never touched.
fn remove_dead_processes_dirs(local_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(local_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplit('-');
        let (Some(_random), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing RocksDB directory {name} of ended process {pid}");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A name unique in this process, for working and snapshot directories.
fn unique_name(operator: &str) -> String {
    let clean: String = operator
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!(
        "{clean}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// A prefetch that finds fewer than one key in this many missing from the
/// write-back cache pauses prefetching for [`PREFETCH_PAUSE`] batches:
/// with a state that fits the cache, sorting and probing a batch's keys
/// up front only adds work.
const PREFETCH_MISS_RATIO: usize = 16;
const PREFETCH_PAUSE: u32 = 32;

/// One registered state in the database.
struct RocksState {
    id: floe_rocksdb::StateId,
    layout: StateLayout,
    name: String,
    /// Renders the state's per-key canonical bytes as JSON (queries).
    json: JsonFn,
    /// A timer queue's cached heads (`None` for every other state).
    timers: Option<Box<RocksTimers>>,
    /// A TTL state cleaned up in full snapshots: how its values expire,
    /// and the clock that says when a snapshot is taken.
    snapshot_ttl: Option<(TtlFilter, TtlTimeProvider)>,
    /// The function read this (value-like) state since the last batch was
    /// prefetched: the next batch's keys are worth looking up for it.
    read: bool,
}

/// Decodes a state's canonical per-key bytes with its types and renders
/// them as JSON.
type JsonFn = fn(&[u8], &str) -> Result<serde_json::Value, StateError>;

/// The RocksDB storage of one subtask's keyed state.
pub(crate) struct RocksStore {
    db: KeyedDb,
    resources: RocksDbResources,
    operator: String,
    states: Vec<RocksState>,
    /// The current key's prefix (key group | length | key).
    prefix: KeyPrefix,
    /// Value-like states' recent keys, written back in batches.
    cache: ValueCache,
    /// Scratch buffers, reused across records.
    key_buf: Vec<u8>,
    buf: Vec<u8>,
    /// A prefetched batch's encoded keys, back to back, and each key's
    /// span in them; reused across batches.
    batch_keys: Vec<u8>,
    batch_spans: Vec<(u64, (u32, u32))>,
    /// Batches to process without prefetching: the last prefetch found
    /// (almost) every key cached, so looking again soon would be waste.
    prefetch_pause: u32,
    /// Where snapshot checkpoints go (beside the working directory).
    snapshot_root: PathBuf,
    /// Checkpoints are native and incremental (`state.backend.incremental`).
    incremental: bool,
    /// How timer queues cache and buffer (from the RocksDB settings).
    timer_settings: TimerSettings,
    /// RocksDB properties reported per state (`state.backend.rocksdb.metrics.*`).
    native_metrics: Vec<&'static str>,
    /// This database instance's identity in shared file names.
    db_id: String,
    /// Per native snapshot (by checkpoint id): each SST file's name, shared
    /// name and where it is once that checkpoint completed — what a later
    /// snapshot built on it references instead of uploading.
    native_history: BTreeMap<u64, Vec<(String, String, SstSource)>>,
    /// States restored natively that the function has not registered
    /// (again): they live in the database and go into every snapshot.
    native_states: Vec<StateMeta>,
    /// The native state the latest registration took from `native_states`,
    /// put back if that registration fails.
    abandoned_native: Option<StateMeta>,
    /// Removes the subtask's directory; declared last, so it runs after
    /// the database (an earlier field) closed.
    _root: RootDir,
}

/// A subtask's RocksDB directory (database and snapshot checkpoints),
/// removed when the backend goes.
struct RootDir(PathBuf);

impl Drop for RootDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove RocksDB directory {}: {e}", self.0.display());
        }
    }
}

impl RocksStore {
    /// Opens a fresh database for `operator`'s subtask owning `range`
    /// under the configured local directory.
    pub(crate) fn open(
        config: &RocksDbConfig,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Self, StateError> {
        // The budget splits between RocksDB and the write-back caches
        // (a quarter by default; see `rocks_cache`).
        let (rocks_budget, cache_budget) =
            config
                .memory_split()
                .map_err(|reason| StateError::Backend {
                    operator: operator.to_string(),
                    reason,
                })?;
        let resources = shared_resources(rocks_budget, operator)?;
        remove_dead_processes_dirs(&config.local_dir);
        let name = unique_name(operator);
        let root = config.local_dir.join(&name);
        let range = floe_rocksdb::KeyGroupRange::new(range.start, range.end)
            .map_err(|e| backend_error(operator, "key-group range", e))?;
        let db = KeyedDb::open(root.join("db"), &resources, range)
            .map_err(|e| backend_error(operator, "open", e))?;
        Ok(RocksStore {
            db,
            resources,
            operator: operator.to_string(),
            states: Vec::new(),
            cache: ValueCache::new(cache_budget as usize),
            prefix: KeyPrefix::new(),
            key_buf: Vec::with_capacity(64),
            buf: Vec::with_capacity(256),
            batch_keys: Vec::new(),
            batch_spans: Vec::new(),
            prefetch_pause: 0,
            snapshot_root: root.join("snapshots"),
            incremental: config.incremental,
            timer_settings: TimerSettings {
                cache_size: config.timer_cache_size,
                write_buffer: config.timer_write_buffer,
            },
            native_metrics: config.native_metrics.clone(),
            db_id: format!("{:016x}", rand::random::<u64>()),
            native_history: BTreeMap::new(),
            native_states: Vec::new(),
            abandoned_native: None,
            _root: RootDir(root),
        })
    }

    /// Adds a column family for a newly registered state.
    fn create_state(
        &mut self,
        name: &str,
        layout: StateLayout,
        json: JsonFn,
    ) -> Result<(), StateError> {
        // Value-like states reach RocksDB through the write-back cache, once
        // per key and flush, and timers once per timer: no in-place memtable
        // updates for them. Map and list states are written update by
        // update, and a key updated again and again is overwritten in place.
        let pattern = match layout {
            StateLayout::ValueLike if self.cache.enabled() => WritePattern::WriteBack,
            StateLayout::Timers => WritePattern::WriteBack,
            StateLayout::ValueLike | StateLayout::List | StateLayout::Map => {
                WritePattern::WriteThrough
            }
        };
        let id = self
            .db
            .create_state_with(name, pattern)
            .map_err(|e| backend_error(&self.operator, "create state", e))?;
        self.states.push(RocksState {
            id,
            layout,
            name: name.to_string(),
            json,
            timers: None,
            snapshot_ttl: None,
            read: false,
        });
        self.cache.push_state(layout == StateLayout::ValueLike);
        self.abandoned_native = self
            .native_states
            .iter()
            .position(|m| m.name == name)
            .map(|i| self.native_states.remove(i));
        Ok(())
    }

    /// Forgets the state added last (its registration failed), so state
    /// indices stay aligned with the backend's registrations. Entries it
    /// restored before failing stay in its column family, which a later
    /// registration under the same name finds again.
    fn abandon_last_state(&mut self) {
        self.states.pop();
        self.cache.pop_state();
        // Its natively restored data is still in the database: carried on.
        if let Some(meta) = self.abandoned_native.take() {
            self.native_states.push(meta);
        }
    }

    /// Makes `key` (in `kg`) the key that state access goes to.
    #[inline]
    fn set_key<K: Serialize>(&mut self, kg: KeyGroup, key: &K) -> Result<(), StateError> {
        self.key_buf.clear();
        codec::encode_into(key, &mut self.key_buf, "key")?;
        self.prefix.set(kg, &self.key_buf);
        Ok(())
    }

    /// The column family id of state `name` (registered or restored).
    fn state_cf(&mut self, name: &str) -> Result<floe_rocksdb::StateId, StateError> {
        match self.states.iter().find(|s| s.name == name) {
            Some(s) => Ok(s.id),
            None if self.native_states.iter().any(|m| m.name == name) => self
                .db
                .create_state(name)
                .map_err(|e| backend_error(&self.operator, "open state", e)),
            None => Err(backend_error(
                &self.operator,
                "find state",
                format!("no state '{name}'"),
            )),
        }
    }

    /// Writes the cache back, flushes, and compacts state `name`'s column
    /// family fully: expired TTL entries go (see `floe_rocksdb::ttl`).
    pub(crate) fn compact_state(&mut self, name: &str) -> Result<(), StateError> {
        let id = self.state_cf(name)?;
        self.flush_cache()?;
        self.db.flush().map_err(|e| self.err("flush", e))?;
        self.db
            .compact_state(id)
            .map_err(|e| self.err("compact", e))
    }

    /// An integer property of state `name`'s column family (e.g.
    /// `rocksdb.estimate-num-keys`, `rocksdb.total-sst-files-size`).
    pub(crate) fn state_property(
        &mut self,
        name: &str,
        property: &str,
    ) -> Result<Option<u64>, StateError> {
        let id = self.state_cf(name)?;
        self.db
            .state_property_int(id, property)
            .map_err(|e| self.err("read property", e))
    }

    fn err(&self, action: &str, e: impl std::fmt::Display) -> StateError {
        backend_error(&self.operator, action, e)
    }

    /// Writes the restored timers of queue `idx` (just created) into its
    /// column family, then reads the heads of its key groups.
    fn load_timers<K: Key, N: Namespace>(
        &mut self,
        idx: u32,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
    ) -> Result<(), StateError> {
        let state = &self.states[idx as usize];
        let cf = state.id;
        let name = state.name.clone();
        for (kg, bytes) in restored {
            let what = format!("timer queue '{name}' in key group {kg}");
            rocks_timers::restore_key_group::<K, N>(
                &mut self.db,
                cf,
                *kg,
                bytes,
                &what,
                &self.operator,
            )?;
        }
        let timers = RocksTimers::open(
            &mut self.db,
            cf,
            range.start,
            range.len(),
            self.timer_settings,
            &self.operator,
        )?;
        self.states[idx as usize].timers = Some(Box::new(timers));
        Ok(())
    }

    /// The database, timer queue `idx`, the current key's bytes and the
    /// operator: what a timer primitive works with, borrowed apart.
    #[inline]
    fn timers_mut(
        &mut self,
        idx: u32,
    ) -> Result<(&mut KeyedDb, &mut RocksTimers, &[u8], &str), StateError> {
        match self
            .states
            .get_mut(idx as usize)
            .and_then(|s| s.timers.as_deref_mut())
        {
            Some(t) => Ok((&mut self.db, t, &self.key_buf, &self.operator)),
            None => Err(backend_error(
                &self.operator,
                "timers",
                format!("state {idx} is not a timer queue"),
            )),
        }
    }

    fn id(&self, idx: u32) -> floe_rocksdb::StateId {
        self.states[idx as usize].id
    }

    // --- value-like states (value, reducing, aggregating) ---

    /// The current key's value: from the write-back cache, else from
    /// RocksDB (and then cached).
    #[inline]
    fn get_value<T: DeserializeOwned>(&mut self, idx: u32) -> Result<Option<T>, StateError> {
        let state = &mut self.states[idx as usize];
        state.read = true;
        let name = &state.name;
        if let Cached::Hit(bytes) = self.cache.get(idx, self.prefix.as_bytes()) {
            return bytes.map(|b| codec::decode(b, name)).transpose();
        }
        let id = self.id(idx);
        let bytes = self
            .db
            .get(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "get", e))?;
        let value = bytes
            .as_deref()
            .map(|b| codec::decode(b, &self.states[idx as usize].name))
            .transpose()?;
        if self.cache.caches(idx) {
            self.cache
                .insert_clean(idx, self.prefix.as_bytes(), bytes.as_deref());
            drop(bytes);
            self.evict_if_over_budget()?;
        }
        Ok(value)
    }

    /// Looks a batch's keys up for every value-like state the function
    /// read during the previous batch, with one batched RocksDB lookup per
    /// state for the keys the write-back cache lacks, and caches what it
    /// finds: the records then hit the cache one by one. Keys are sorted
    /// first (key group first, as RocksDB orders them) and repeats dropped.
    fn prefetch_batch<K: Serialize>(
        &mut self,
        keys: &[K],
        key_groups: &[KeyGroup],
    ) -> Result<(), StateError> {
        if !self.states.iter().any(|s| s.read) {
            // Nothing read lately (lists and maps are never prefetched).
            self.prefetch_pause = PREFETCH_PAUSE;
            return Ok(());
        }
        // Room for the batch: a cache emptied halfway would drop keys
        // looked up for it.
        self.evict_if_over_budget()?;
        self.batch_keys.clear();
        self.batch_spans.clear();
        for (key, &kg) in keys.iter().zip(key_groups) {
            self.key_buf.clear();
            codec::encode_into(key, &mut self.key_buf, "key")?;
            let start = self.batch_keys.len();
            floe_rocksdb::key::encode_key(&mut self.batch_keys, kg, &self.key_buf, &[]);
            let span = (start as u32, (self.batch_keys.len() - start) as u32);
            let prefix = order_prefix(&self.batch_keys[start..]);
            self.batch_spans.push((prefix, span));
        }
        let arena = &self.batch_keys;
        let bytes = |(at, len): (u32, u32)| &arena[at as usize..(at + len) as usize];
        sort_by_key_bytes(&mut self.batch_spans, bytes);
        self.batch_spans
            .dedup_by(|a, b| a.0 == b.0 && bytes(a.1) == bytes(b.1));
        let mut missing: Vec<&[u8]> = Vec::with_capacity(self.batch_spans.len());
        let mut missed = 0;
        for idx in 0..self.states.len() as u32 {
            let state = &mut self.states[idx as usize];
            if !std::mem::take(&mut state.read) || !self.cache.caches(idx) {
                continue;
            }
            let id = state.id;
            missing.clear();
            missing.extend(
                self.batch_spans
                    .iter()
                    .map(|&(_, span)| bytes(span))
                    .filter(|k| matches!(self.cache.get(idx, k), Cached::Miss)),
            );
            missed += missing.len();
            if missing.is_empty() {
                continue;
            }
            let cache = &mut self.cache;
            self.db
                .multi_get(id, &missing, true, |i, value| {
                    cache.insert_clean(idx, missing[i], value);
                })
                .map_err(|e| backend_error(&self.operator, "multi get", e))?;
        }
        // Hot keys all cached (small state): check again only now and then.
        if missed * PREFETCH_MISS_RATIO < self.batch_spans.len() {
            self.prefetch_pause = PREFETCH_PAUSE;
        }
        Ok(())
    }

    /// Replaces the current key's value (in the cache; RocksDB sees it at
    /// the next flush).
    #[inline]
    fn put_value<T: Serialize>(&mut self, idx: u32, value: &T) -> Result<(), StateError> {
        let name = &self.states[idx as usize].name;
        self.cache.put(
            idx,
            self.prefix.as_bytes(),
            Some(|buf: &mut Vec<u8>| codec::encode_into(value, buf, name)),
        )?;
        self.evict_if_over_budget()
    }

    /// Removes the current key's value (or list).
    fn delete_key(&mut self, idx: u32) -> Result<(), StateError> {
        if self.cache.caches(idx) {
            self.cache.put(
                idx,
                self.prefix.as_bytes(),
                None::<fn(&mut Vec<u8>) -> Result<(), StateError>>,
            )?;
            return self.evict_if_over_budget();
        }
        let id = self.id(idx);
        self.db
            .delete(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "delete", e))
    }

    /// Writes the cache's dirty entries to RocksDB in one batch per state,
    /// and the timer queues' pending changes: before a checkpoint and
    /// before iterating the database.
    fn flush_cache(&mut self) -> Result<(), StateError> {
        for state in &mut self.states {
            if let Some(timers) = state.timers.as_deref_mut() {
                timers.flush(&mut self.db, &self.operator)?;
            }
        }
        if !self.cache.is_dirty() {
            return Ok(());
        }
        let (db, states, operator) = (&mut self.db, &self.states, &self.operator);
        self.cache.flush(|idx, entries| {
            db.write_values(states[idx as usize].id, entries)
                .map_err(|e| backend_error(operator, "write back cached values", e))
        })
    }

    /// When the process's caches are over budget, writes this one back and
    /// empties it.
    #[inline]
    fn evict_if_over_budget(&mut self) -> Result<(), StateError> {
        if self.cache.over_budget() {
            self.flush_cache()?;
            self.cache.clear();
        }
        Ok(())
    }

    // --- list states ---

    /// The current key's list.
    fn get_list<T: DeserializeOwned>(&mut self, idx: u32) -> Result<Vec<T>, StateError> {
        let id = self.id(idx);
        let Some(list) = self
            .db
            .list_get(id, &self.prefix)
            .map_err(|e| self.err("list get", e))?
        else {
            return Ok(Vec::new());
        };
        let what = &self.states[idx as usize].name;
        let mut rest = list.elements();
        // The count comes from stored bytes (restorable from a snapshot):
        // never reserve more elements than bytes remain to decode them.
        let mut out = Vec::with_capacity((list.count() as usize).min(rest.len()));
        for _ in 0..list.count() {
            let (v, r) = postcard::take_from_bytes::<T>(rest).map_err(|e| StateError::Codec {
                action: "decode",
                what: format!("an element of list state '{what}'"),
                reason: e.to_string(),
            })?;
            out.push(v);
            rest = r;
        }
        Ok(out)
    }

    /// Appends elements through the merge operator (no read).
    fn append_list<T: Serialize>(
        &mut self,
        idx: u32,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        let mut count = 0u32;
        for v in values {
            codec::encode_into(&v, &mut self.buf, &self.states[idx as usize].name)?;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        self.db
            .list_append(id, &self.prefix, count, &self.buf)
            .map_err(|e| backend_error(&self.operator, "list append", e))
    }

    /// Replaces the current key's list (an empty one removes it).
    fn put_list<T: Serialize>(&mut self, idx: u32, values: &[T]) -> Result<(), StateError> {
        if values.is_empty() {
            return self.delete_key(idx);
        }
        let id = self.id(idx);
        self.buf.clear();
        for v in values {
            codec::encode_into(v, &mut self.buf, &self.states[idx as usize].name)?;
        }
        self.db
            .list_put(id, &self.prefix, values.len() as u32, &self.buf)
            .map_err(|e| backend_error(&self.operator, "list put", e))
    }

    // --- map states ---

    /// The value under `user_key`.
    fn get_entry<UK: Serialize, UV: DeserializeOwned>(
        &mut self,
        idx: u32,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let id = self.id(idx);
        self.buf.clear();
        codec::encode_into(user_key, &mut self.buf, "map key")?;
        let found = self
            .db
            .map_get(id, &mut self.prefix, &self.buf)
            .map_err(|e| backend_error(&self.operator, "map get", e))?;
        match found {
            Some(bytes) => codec::decode(&bytes, &self.states[idx as usize].name).map(Some),
            None => Ok(None),
        }
    }

    /// Sets `user_key` to `value`.
    fn put_entry<UK: Serialize, UV: Serialize>(
        &mut self,
        idx: u32,
        user_key: &UK,
        value: &UV,
    ) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        codec::encode_into(user_key, &mut self.buf, "map key")?;
        let split = self.buf.len();
        codec::encode_into(value, &mut self.buf, "map value")?;
        let (uk, uv) = self.buf.split_at(split);
        self.db
            .map_put(id, &mut self.prefix, uk, uv)
            .map_err(|e| backend_error(&self.operator, "map put", e))
    }

    /// Removes `user_key`.
    fn remove_entry<UK: Serialize>(&mut self, idx: u32, user_key: &UK) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        codec::encode_into(user_key, &mut self.buf, "map key")?;
        self.db
            .map_remove(id, &mut self.prefix, &self.buf)
            .map_err(|e| backend_error(&self.operator, "map remove", e))
    }

    /// Every entry of the current key's map.
    fn entries<UK: DeserializeOwned, UV: DeserializeOwned>(
        &mut self,
        idx: u32,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        let id = self.id(idx);
        let what = &self.states[idx as usize].name;
        let mut it = self
            .db
            .map_iter(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "map iterate", e))?;
        let mut out = Vec::new();
        while let Some(e) = it
            .next_entry()
            .map_err(|e| backend_error(&self.operator, "map iterate", e))?
        {
            out.push((
                codec::decode(e.user_key, what)?,
                codec::decode(e.value, what)?,
            ));
        }
        Ok(out)
    }

    /// True when the current key's map has no entry.
    fn is_map_empty(&mut self, idx: u32) -> Result<bool, StateError> {
        let id = self.id(idx);
        self.db
            .map_is_empty(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "map iterate", e))
    }

    /// Removes every entry of the current key's map.
    fn clear_map(&mut self, idx: u32) -> Result<(), StateError> {
        let id = self.id(idx);
        self.db
            .map_clear(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "map clear", e))
    }

    // --- whole-state operations ---

    /// The canonical per-key bytes (postcard of the heap backend's per-key
    /// value) of `key` in state `idx`, for a query; `None` without state.
    fn per_key_bytes<K: Serialize>(
        &mut self,
        idx: u32,
        kg: KeyGroup,
        key: &K,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let mut prefix = KeyPrefix::new();
        let mut key_bytes = Vec::new();
        codec::encode_into(key, &mut key_bytes, "key")?;
        prefix.set(kg, &key_bytes);
        if let Cached::Hit(bytes) = self.cache.get(idx, prefix.as_bytes()) {
            return Ok(bytes.map(<[u8]>::to_vec));
        }
        let state = &self.states[idx as usize];
        let err = |e| backend_error(&self.operator, "query", e);
        match state.layout {
            StateLayout::ValueLike => Ok(self
                .db
                .get(state.id, &prefix)
                .map_err(err)?
                .map(|b| b.to_vec())),
            StateLayout::List => {
                let Some(list) = self.db.list_get(state.id, &prefix).map_err(err)? else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(list.elements().len() + 5);
                floe_rocksdb::key::write_varint(&mut out, list.count() as u64);
                out.extend_from_slice(list.elements());
                Ok(Some(out))
            }
            StateLayout::Map => {
                let mut it = self.db.map_iter(state.id, &prefix).map_err(err)?;
                let (mut n, mut body) = (0u64, Vec::new());
                while let Some(e) = it.next_entry().map_err(err)? {
                    body.extend_from_slice(e.user_key);
                    body.extend_from_slice(e.value);
                    n += 1;
                }
                if n == 0 {
                    return Ok(None);
                }
                let mut out = Vec::with_capacity(body.len() + 5);
                floe_rocksdb::key::write_varint(&mut out, n);
                out.extend_from_slice(&body);
                Ok(Some(out))
            }
            // Not per key, and never queryable.
            StateLayout::Timers => Ok(None),
        }
    }

    /// Entries per key group of state `idx`, in range order.
    fn count_keys(&mut self, idx: u32) -> Result<Vec<usize>, StateError> {
        self.flush_cache()?;
        self.db
            .key_counts(self.id(idx))
            .map_err(|e| self.err("count keys", e))
    }

    /// Every key of state `idx` with its key group.
    fn keys_in<K: DeserializeOwned>(
        &mut self,
        idx: u32,
        range: KeyGroupRange,
    ) -> Result<Vec<(K, KeyGroup)>, StateError> {
        self.flush_cache()?;
        let id = self.id(idx);
        let mut out = Vec::new();
        for kg in range.iter() {
            let mut it = self
                .db
                .iter_key_group(id, kg)
                .map_err(|e| self.err("iterate", e))?;
            while let Some(e) = it.next_key().map_err(|e| self.err("iterate", e))? {
                out.push((codec::decode(e.key, "key")?, kg));
            }
        }
        Ok(out)
    }

    /// Writes the cache back and takes a RocksDB checkpoint (flush and hard
    /// links) into a new directory named after `what` under the snapshot
    /// root: the synchronous part of every snapshot, canonical or native.
    fn take_checkpoint(
        &mut self,
        what: &str,
    ) -> Result<(PathBuf, floe_rocksdb::CheckpointFiles), StateError> {
        self.flush_cache()?;
        // An idle subtask's cache gives its share back at checkpoints.
        self.evict_if_over_budget()?;
        std::fs::create_dir_all(&self.snapshot_root)
            .map_err(|e| self.err(&format!("create {}", self.snapshot_root.display()), e))?;
        let dir = self.snapshot_root.join(unique_name(what));
        let files = self
            .db
            .checkpoint(&dir)
            .map_err(|e| self.err("checkpoint", e))?;
        Ok((dir, files))
    }

    /// The synchronous part of a snapshot: a RocksDB checkpoint (flush and
    /// hard links); one frozen view per state reads it back off the task
    /// thread. The checkpoint directory goes when the last view does.
    fn take_frozen(
        &mut self,
        range: KeyGroupRange,
    ) -> Result<Vec<Box<dyn FrozenTable>>, StateError> {
        let (dir, _) = self.take_checkpoint("snapshot")?;
        let snapshot = Arc::new(RocksSnapshot {
            dir,
            resources: self.resources.clone(),
            operator: self.operator.clone(),
            reader: Mutex::new(None),
            encoded: Mutex::new(HashMap::new()),
        });
        let carried = self
            .native_states
            .iter()
            .map(|m| (m.name.clone(), layout_of_kind(m.kind), None));
        Ok(self
            .states
            .iter()
            .map(|s| {
                // Full-snapshot cleanup leaves out what expired by now.
                let ttl = s.snapshot_ttl.as_ref().map(|(f, clock)| (*f, clock()));
                (s.name.clone(), s.layout, ttl)
            })
            .chain(carried)
            .enumerate()
            .map(|(index, (state, layout, ttl))| {
                Box::new(RocksFrozenTable {
                    snapshot: snapshot.clone(),
                    index,
                    state,
                    layout,
                    range,
                    ttl,
                }) as Box<dyn FrozenTable>
            })
            .collect())
    }
}

impl RocksStore {
    /// The synchronous part of a native (incremental) snapshot for
    /// checkpoint `checkpoint_id`: flushes the cache, takes a RocksDB
    /// checkpoint, and marks each SST file to upload or to reference. Files
    /// of `base` (the latest completed checkpoint when this one was
    /// triggered, which the coordinator keeps until this one is done) are
    /// referenced; every other file is uploaded.
    fn take_native_snapshot(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> Result<NativeSnapshot, StateError> {
        let (dir, files) = self.take_checkpoint("native")?;
        let mut snapshot = NativeSnapshot {
            dir,
            sst: Vec::new(),
            private: Vec::new(),
        };
        let previous: HashMap<&str, (&str, &SstSource)> = base
            .and_then(|b| self.native_history.get(&b))
            .map(|files| {
                files
                    .iter()
                    .map(|(n, sn, src)| (n.as_str(), (sn.as_str(), src)))
                    .collect()
            })
            .unwrap_or_default();
        for f in files.files {
            if f.kind != floe_rocksdb::CheckpointFileKind::Sst {
                snapshot.private.push(f.name);
                continue;
            }
            let (shared_name, source) = match previous.get(f.name.as_str()) {
                Some((shared_name, src)) => (shared_name.to_string(), (*src).clone()),
                // The checkpoint id makes every upload's name unique: a
                // later checkpoint on the same base uploads the file again
                // under its own name, never over a file the registry may
                // be about to delete.
                None => (
                    format!("{}-{checkpoint_id}-{}", self.db_id, f.name),
                    SstSource::Upload,
                ),
            };
            snapshot.sst.push(NativeSstFile {
                name: f.name,
                shared_name,
                size: f.size,
                source,
            });
        }
        // Once this checkpoint completes, what it uploaded is in the job's
        // shared directory; what it referenced stays where it was.
        let stored = snapshot
            .sst
            .iter()
            .map(|f| {
                let at = match &f.source {
                    SstSource::At(r) => SstSource::At(r.clone()),
                    SstSource::Upload | SstSource::OwnShared => SstSource::OwnShared,
                };
                (f.name.clone(), f.shared_name.clone(), at)
            })
            .collect();
        self.native_history.insert(checkpoint_id, stored);
        // Snapshots older than the base can no longer be one; keep a few
        // when nothing completes, in case an older one does.
        if let Some(b) = base {
            self.native_history.retain(|id, _| *id >= b);
        }
        while self.native_history.len() > 16 {
            self.native_history.pop_first();
        }
        Ok(snapshot)
    }

    /// Rebuilds the database from native snapshots of checkpoint
    /// `checkpoint_id` (any parallelism): downloads the files of every
    /// snapshot overlapping `range`, then restores through
    /// [`KeyedDb::restore`] (opened in place, or clipped and ingested when
    /// rescaling). When `reusable` (a checkpoint of this job) and the
    /// database is the one snapshot's at the same range, the next
    /// checkpoint references its files instead of uploading them again.
    fn rebuild_from_native(
        &mut self,
        manifests: &[NativeKeyedStateFile],
        range: KeyGroupRange,
        checkpoint_id: u64,
        reusable: bool,
        fetch: &NativeFetch<'_>,
    ) -> Result<(), StateError> {
        if !self.states.is_empty() {
            return Err(StateError::RestoreAfterRegistration {
                operator: self.operator.clone(),
            });
        }
        let root = self._root.0.clone();
        let rocks_range = |r: KeyGroupRange| {
            floe_rocksdb::KeyGroupRange::new(r.start, r.end)
                .map_err(|e| backend_error(&self.operator, "key-group range", e))
        };
        let mut sources = Vec::new();
        let mut overlapping = Vec::new();
        for (i, m) in manifests.iter().enumerate() {
            let from = m.key_group_range();
            if !from.overlaps(&range) {
                continue;
            }
            let dir = root.join(format!("restore-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| self.err(&format!("create {}", dir.display()), e))?;
            m.materialize(&dir, fetch, &self.operator)?;
            sources.push((dir, rocks_range(from)?));
            overlapping.push(m);
        }
        let dirs: Vec<PathBuf> = sources.iter().map(|(d, _)| d.clone()).collect();
        let restored = KeyedDb::restore(
            root.join(unique_name("db")),
            &self.resources,
            rocks_range(range)?,
            sources,
        );
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        // The empty database opened at start is dropped (and removed) here.
        self.db = restored.map_err(|e| self.err("restore", e))?;
        for m in &overlapping {
            for meta in &m.states {
                if !self.native_states.iter().any(|n| n.name == meta.name) {
                    self.native_states.push(meta.clone());
                }
            }
        }
        if let [m] = overlapping[..]
            && reusable
            && m.key_group_range() == range
        {
            let files = m
                .shared
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        f.shared_name.clone(),
                        SstSource::At(f.file.clone()),
                    )
                })
                .collect();
            self.native_history.insert(checkpoint_id, files);
        }
        Ok(())
    }
}

/// The RocksDB layout of a store layout.
fn rocks_layout(layout: Layout) -> StateLayout {
    match layout {
        Layout::ValueLike => StateLayout::ValueLike,
        Layout::List => StateLayout::List,
        Layout::Map => StateLayout::Map,
    }
}

/// The JSON of a timer queue's per-key bytes: there are none, timer
/// queues are not queryable.
fn no_json(_bytes: &[u8], what: &str) -> Result<serde_json::Value, StateError> {
    Err(StateError::Codec {
        action: "encode",
        what: format!("{what} as JSON"),
        reason: "timer queues cannot be queried".into(),
    })
}

/// Decodes canonical per-key bytes as `S` and renders them as JSON.
fn json_of<S: StateStorage>(bytes: &[u8], what: &str) -> Result<serde_json::Value, StateError> {
    let value: S = codec::decode(bytes, what)?;
    serde_json::to_value(&value).map_err(|e| StateError::Codec {
        action: "encode",
        what: format!("{what} as JSON"),
        reason: e.to_string(),
    })
}

/// The primitives on bytes: the position `at` is unused, the prefix that
/// [`set_current_key`](KeyedStore::set_current_key) encoded is the key.
impl<K: Key> KeyedStore<K> for RocksStore {
    fn register<Sh: Shape>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
        ttl: Option<TtlSpec<Sh::PerKey>>,
    ) -> Result<(), StateError> {
        debug_assert_eq!(id as usize, self.states.len());
        let layout = rocks_layout(Sh::LAYOUT);
        self.create_state(name, layout, json_of::<Sh::PerKey>)?;
        if let Some(spec) = ttl {
            let filter = TtlFilter {
                ttl_ms: spec.ttl_ms,
                element_len: (layout == StateLayout::List).then_some(spec.element_len),
            };
            let compaction = spec
                .cleanup
                .rocksdb_compaction_filter
                .map(|query_time_after| TtlCompaction {
                    filter,
                    clock: spec.clock.clone(),
                    query_time_after,
                });
            self.db.set_state_ttl(name, compaction);
            if spec.cleanup.full_snapshot {
                self.states[id as usize].snapshot_ttl = Some((filter, spec.clock));
            }
        }
        restore_through::<K, Self, Sh>(self, id, restored, range, name)
            .inspect_err(|_| self.abandon_last_state())
    }

    fn restored_meta(&self, name: &str) -> Option<&StateMeta> {
        self.native_states.iter().find(|m| m.name == name)
    }

    fn ttl_cleanup(&mut self, _id: StateId, _entries: u32, _now: i64) -> Result<(), StateError> {
        Ok(())
    }

    #[inline]
    fn set_current_key(&mut self, key: &K, key_group: KeyGroup) -> Result<(), StateError> {
        self.set_key(key_group, key)
    }

    fn native_metrics(&self, out: &mut Vec<crate::metrics::NativeMetric>) {
        let mut property = String::new();
        for state in &self.states {
            for &name in &self.native_metrics {
                property.clear();
                property.push_str("rocksdb.");
                property.push_str(name);
                match self.db.state_property_int(state.id, &property) {
                    Ok(Some(value)) => out.push(crate::metrics::NativeMetric {
                        state: state.name.clone(),
                        property: name,
                        value,
                    }),
                    // Not reported by this RocksDB (e.g. no block cache).
                    Ok(None) => {}
                    Err(e) => tracing::debug!(
                        operator = %self.operator,
                        "cannot read {property} of state {}: {e}",
                        state.name
                    ),
                }
            }
        }
    }

    fn prefetches(&mut self) -> bool {
        if self.prefetch_pause > 0 {
            self.prefetch_pause -= 1;
            return false;
        }
        self.cache.enabled()
    }

    fn prefetch(&mut self, keys: &[K], key_groups: &[KeyGroup]) -> Result<(), StateError> {
        self.prefetch_batch(keys, key_groups)
    }

    /// Unstamped: every access reads bytes and decodes them as the
    /// handle's types, which is its check.
    fn bind<Sh: Shape>(&self, id: StateId) -> StateRef<Sh> {
        StateRef::unstamped(id)
    }

    #[inline]
    fn value_get<T: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
    ) -> Result<Option<T>, StateError> {
        self.get_value(state.id())
    }

    fn value_read<T: StateValue, R>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, StateError> {
        let value = self.get_value::<T>(state.id())?;
        Ok(f(value.as_ref()))
    }

    #[inline]
    fn value_put<T: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        value: T,
    ) -> Result<(), StateError> {
        self.put_value(state.id(), &value)
    }

    fn value_upsert<T: StateValue, R>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ValueShape<T>>,
        f: impl FnOnce(Option<&mut T>) -> (Option<T>, R),
    ) -> Result<R, StateError> {
        let mut current = self.get_value::<T>(state.id())?;
        let (new, result) = f(current.as_mut());
        if let Some(value) = current.or(new) {
            self.put_value(state.id(), &value)?;
        }
        Ok(result)
    }

    fn list_get<T: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ListShape<T>>,
    ) -> Result<Vec<T>, StateError> {
        self.get_list(state.id())
    }

    fn list_add<T: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        self.append_list(state.id(), values)
    }

    fn list_put<T: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<ListShape<T>>,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        self.put_list(state.id(), &values)
    }

    fn map_get<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        self.get_entry(state.id(), user_key)
    }

    fn map_contains<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<bool, StateError> {
        Ok(self.get_entry::<UK, UV>(state.id(), user_key)?.is_some())
    }

    fn map_put_all<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<(), StateError> {
        entries
            .into_iter()
            .try_for_each(|(k, v)| self.put_entry(state.id(), &k, &v))
    }

    fn map_remove<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        user_key: &UK,
    ) -> Result<Option<UV>, StateError> {
        let old = self.get_entry::<UK, UV>(state.id(), user_key)?;
        if old.is_some() {
            self.remove_entry(state.id(), user_key)?;
        }
        Ok(old)
    }

    fn map_entries<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<Vec<(UK, UV)>, StateError> {
        self.entries(state.id())
    }

    fn map_for_each<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
        mut f: impl FnMut(&UK, &UV),
    ) -> Result<(), StateError> {
        for (k, v) in self.entries::<UK, UV>(state.id())? {
            f(&k, &v);
        }
        Ok(())
    }

    fn map_is_empty<UK: MapKey, UV: StateValue>(
        &mut self,
        _at: At<'_, K>,
        state: StateRef<MapShape<UK, UV>>,
    ) -> Result<bool, StateError> {
        self.is_map_empty(state.id())
    }

    fn clear<Sh: Shape>(&mut self, _at: At<'_, K>, state: StateRef<Sh>) -> Result<(), StateError> {
        match Sh::LAYOUT {
            Layout::Map => self.clear_map(state.id()),
            Layout::ValueLike | Layout::List => self.delete_key(state.id()),
        }
    }

    fn register_timers<N: Namespace>(
        &mut self,
        id: StateId,
        name: &str,
        restored: &[(KeyGroup, Vec<u8>)],
        range: KeyGroupRange,
    ) -> Result<(), StateError> {
        debug_assert_eq!(id as usize, self.states.len());
        self.create_state(name, StateLayout::Timers, no_json)?;
        self.load_timers::<K, N>(id, restored, range)
            .inspect_err(|_| self.abandon_last_state())
    }

    #[inline]
    fn timer_add<N: Namespace>(
        &mut self,
        _at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: N,
    ) -> Result<(), StateError> {
        let kg = self.prefix.key_group();
        let (db, timers, key, operator) = self.timers_mut(id)?;
        timers.add(db, kg, key, domain, timestamp, &namespace, operator)
    }

    fn timer_delete<N: Namespace>(
        &mut self,
        _at: At<'_, K>,
        id: StateId,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        let kg = self.prefix.key_group();
        let (db, timers, key, operator) = self.timers_mut(id)?;
        timers.delete(db, kg, key, domain, timestamp, namespace, operator)
    }

    #[inline]
    fn timer_next<N: Namespace>(&self, id: StateId, domain: TimeDomain) -> Option<i64> {
        self.states
            .get(id as usize)
            .and_then(|s| s.timers.as_ref())
            .and_then(|t| t.next(domain))
    }

    fn timer_poll<N: Namespace>(
        &mut self,
        id: StateId,
        domain: TimeDomain,
        up_to: i64,
        _first: KeyGroup,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        let (db, timers, _, operator) = self.timers_mut(id)?;
        timers.poll::<K, N>(db, domain, up_to, operator)
    }

    fn keys(
        &mut self,
        id: StateId,
        range: KeyGroupRange,
    ) -> Result<Vec<(K, KeyGroup)>, StateError> {
        self.keys_in(id, range)
    }

    fn key_counts(&mut self, id: StateId, _range: KeyGroupRange) -> Result<Vec<usize>, StateError> {
        self.count_keys(id)
    }

    fn query(
        &mut self,
        id: StateId,
        key: &K,
        key_group: KeyGroup,
        _offset: usize,
        format: QueryFormat,
        what: &str,
    ) -> Result<Option<QueryValue>, StateError> {
        let Some(bytes) = self.per_key_bytes(id, key_group, key)? else {
            return Ok(None);
        };
        Ok(Some(match format {
            QueryFormat::Postcard => QueryValue::Postcard(bytes),
            QueryFormat::Json => QueryValue::Json((self.states[id as usize].json)(&bytes, what)?),
        }))
    }

    /// None: reads go through the task (a view would have to copy the
    /// database).
    fn start_query_view(
        &mut self,
        _id: StateId,
        _first_key_group: KeyGroup,
        _max_staleness: std::time::Duration,
        _wanted: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<QueryView> {
        None
    }

    fn publish_query_views(&mut self, _now: std::time::Instant) -> bool {
        true
    }

    fn retire_query_views(&mut self, _now: std::time::Instant) {}

    fn freeze(&mut self, range: KeyGroupRange) -> Vec<Box<dyn FrozenTable>> {
        match self.take_frozen(range) {
            Ok(frozen) => frozen,
            Err(e) => {
                // `e` already names the operator; each state's view
                // reports it when encoded.
                let reason = Arc::new(match e {
                    StateError::Backend { reason, .. } => reason,
                    other => other.to_string(),
                });
                (0..self.states.len() + self.native_states.len())
                    .map(|_| {
                        Box::new(FailedFrozenTable(reason.clone(), self.operator.clone()))
                            as Box<dyn FrozenTable>
                    })
                    .collect()
            }
        }
    }

    fn carried_states(&self) -> Vec<StateMeta> {
        self.native_states.clone()
    }

    fn snapshot_native(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> Option<Result<NativeSnapshot, StateError>> {
        self.incremental
            .then(|| self.take_native_snapshot(checkpoint_id, base))
    }

    fn restore_native(
        &mut self,
        manifests: &[NativeKeyedStateFile],
        range: KeyGroupRange,
        checkpoint_id: u64,
        reusable: bool,
        fetch: &NativeFetch<'_>,
        _operator: &str,
    ) -> Result<Vec<(StateMeta, KeyGroup, Vec<u8>)>, StateError> {
        self.rebuild_from_native(manifests, range, checkpoint_id, reusable, fetch)?;
        Ok(Vec::new())
    }
}

/// How a state kind is laid out in RocksDB.
pub(crate) fn layout_of_kind(code: u8) -> StateLayout {
    match StateKind::from_code(code & !crate::ttl::TTL_KIND_FLAG) {
        Some(StateKind::List) => StateLayout::List,
        Some(StateKind::Map) => StateLayout::Map,
        Some(StateKind::Timers) => StateLayout::Timers,
        _ => StateLayout::ValueLike,
    }
}

/// Reads the canonical bytes of every state in the key groups of `range`
/// from a native snapshot's files in `dir` (a heap backend restoring a
/// RocksDB checkpoint): `(state, key group, bytes)`.
pub(crate) fn canonical_from_native(
    dir: &std::path::Path,
    manifest: &NativeKeyedStateFile,
    range: KeyGroupRange,
    operator: &str,
) -> Result<Vec<(usize, KeyGroup, Vec<u8>)>, StateError> {
    let default_budget = RocksDbConfig::default()
        .memory_split()
        .map_or(64 << 20, |(rocks, _)| rocks);
    let resources = shared_resources(default_budget, operator)?;
    let mut reader = CheckpointReader::open(dir, &resources)
        .map_err(|e| backend_error(operator, "open native snapshot", e))?;
    let from = manifest.key_group_range();
    let mut out = Vec::new();
    for (i, meta) in manifest.states.iter().enumerate() {
        let layout = layout_of_kind(meta.kind);
        for kg in range.iter().filter(|kg| from.contains(*kg)) {
            let mut bytes = Vec::new();
            reader
                .encode_key_group(&meta.name, layout, kg, &mut bytes)
                .map_err(|e| backend_error(operator, "read native snapshot", e))?;
            if !bytes.is_empty() {
                out.push((i, kg, bytes));
            }
        }
    }
    Ok(out)
}

/// A RocksDB checkpoint taken for one snapshot, read back lazily.
struct RocksSnapshot {
    dir: PathBuf,
    resources: RocksDbResources,
    operator: String,
    reader: Mutex<Option<CheckpointReader>>,
    /// Canonical bytes already produced, by (state index, key group),
    /// until the encoder takes them.
    encoded: Mutex<HashMap<(usize, KeyGroup), Vec<u8>>>,
}

impl RocksSnapshot {
    /// Encodes key group `kg` of `state` (once) and keeps the bytes for
    /// `take`; true when it has entries.
    fn prepare(&self, table: &RocksFrozenTable, kg: KeyGroup) -> Result<bool, StateError> {
        let mut encoded = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = encoded.get(&(table.index, kg)) {
            return Ok(!b.is_empty());
        }
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(
                CheckpointReader::open(&self.dir, &self.resources)
                    .map_err(|e| backend_error(&self.operator, "open snapshot", e))?,
            );
        }
        let mut out = Vec::new();
        reader
            .as_mut()
            .expect("opened above")
            .encode_key_group_ttl(
                &table.state,
                table.layout,
                kg,
                &mut out,
                table.ttl.as_ref().map(|(f, now)| (f, *now)),
            )
            .map_err(|e| backend_error(&self.operator, "read snapshot", e))?;
        let has = !out.is_empty();
        encoded.insert((table.index, kg), out);
        Ok(has)
    }

    fn take(&self, table: &RocksFrozenTable, kg: KeyGroup) -> Option<Vec<u8>> {
        self.encoded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(table.index, kg))
    }
}

impl Drop for RocksSnapshot {
    fn drop(&mut self) {
        // Close the read-only database before its files go.
        self.reader
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                "cannot remove snapshot checkpoint {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// One state's view of a RocksDB snapshot.
struct RocksFrozenTable {
    snapshot: Arc<RocksSnapshot>,
    /// The state's registration index (the cache key).
    index: usize,
    state: String,
    layout: StateLayout,
    range: KeyGroupRange,
    /// A TTL state's full-snapshot cleanup: the filter and the time the
    /// snapshot was taken at.
    ttl: Option<(TtlFilter, i64)>,
}

/// A snapshot whose synchronous part failed: the error surfaces when it is
/// encoded, so the checkpoint is declined instead of the task failing.
struct FailedFrozenTable(Arc<String>, String);

impl FrozenTable for FailedFrozenTable {
    fn has_entries(&self, _offset: usize) -> bool {
        true
    }

    fn encode_key_group(&self, _: usize, _: &mut Vec<u8>, _: &str) -> Result<bool, StateError> {
        Err(StateError::Backend {
            operator: self.1.clone(),
            reason: format!("the snapshot could not be taken: {}", self.0),
        })
    }
}

impl FrozenTable for RocksFrozenTable {
    fn has_entries(&self, offset: usize) -> bool {
        let kg = self.range.start + offset as KeyGroup;
        // An error surfaces again (and is reported) when the group is
        // encoded; here it only means "look at it".
        self.snapshot.prepare(self, kg).unwrap_or(true)
    }

    fn encode_key_group(
        &self,
        offset: usize,
        out: &mut Vec<u8>,
        _what: &str,
    ) -> Result<bool, StateError> {
        let kg = self.range.start + offset as KeyGroup;
        let bytes = match self.snapshot.take(self, kg) {
            Some(b) => b,
            None => {
                self.snapshot.prepare(self, kg)?;
                self.snapshot.take(self, kg).unwrap_or_default()
            }
        };
        // Already encoded in a buffer of its own: hand it over.
        *out = bytes;
        Ok(!out.is_empty())
    }
}
