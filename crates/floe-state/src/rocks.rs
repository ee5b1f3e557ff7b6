//! The RocksDB store behind a [`KeyedStateBackend`](crate::KeyedStateBackend)
//! (feature `rocksdb`): one `floe_rocksdb::KeyedDb` per subtask, one column
//! family per state, keys laid out as key group | key | (user key).
//!
//! The backend encodes the current key once per record
//! ([`RocksStore::set_key`]) into a reused prefix; state handles then read
//! and write postcard bytes through it. Snapshots are canonical: the
//! synchronous part takes a RocksDB checkpoint (a flush plus hard links),
//! and the asynchronous part reads it back per key group into exactly the
//! bytes the heap backend writes, so checkpoints and savepoints restore on
//! either backend.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use floe_core::KeyGroup;
use floe_rocksdb::{CheckpointReader, KeyPrefix, KeyedDb, RocksDbResources, StateId, StateLayout};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{FrozenTable, RocksDbConfig};
use crate::codec;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;

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

/// One registered state in the database.
struct RocksState {
    id: StateId,
    layout: StateLayout,
    name: String,
}

/// The RocksDB storage of one subtask's keyed state.
pub(crate) struct RocksStore {
    db: KeyedDb,
    resources: RocksDbResources,
    operator: String,
    states: Vec<RocksState>,
    /// The current key's prefix (key group | length | key).
    prefix: KeyPrefix,
    /// Scratch buffers, reused across records.
    key_buf: Vec<u8>,
    buf: Vec<u8>,
    /// Where snapshot checkpoints go (beside the working directory).
    snapshot_root: PathBuf,
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
        let resources = shared_resources(config.managed_memory, operator)?;
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
            prefix: KeyPrefix::new(),
            key_buf: Vec::with_capacity(64),
            buf: Vec::with_capacity(256),
            snapshot_root: root.join("snapshots"),
            _root: RootDir(root),
        })
    }

    /// Adds a column family for a newly registered state.
    pub(crate) fn create_state(
        &mut self,
        name: &str,
        layout: StateLayout,
    ) -> Result<(), StateError> {
        let id = self
            .db
            .create_state(name)
            .map_err(|e| backend_error(&self.operator, "create state", e))?;
        self.states.push(RocksState {
            id,
            layout,
            name: name.to_string(),
        });
        Ok(())
    }

    /// Forgets the state added last (its registration failed), so state
    /// indices stay aligned with the backend's registrations. Entries it
    /// restored before failing stay in its column family, which a later
    /// registration under the same name finds again.
    pub(crate) fn abandon_last_state(&mut self) {
        self.states.pop();
    }

    /// Makes `key` (in `kg`) the key that state access goes to.
    #[inline]
    pub(crate) fn set_key<K: Serialize>(
        &mut self,
        kg: KeyGroup,
        key: &K,
    ) -> Result<(), StateError> {
        self.key_buf.clear();
        codec::encode_into(key, &mut self.key_buf, "key")?;
        self.prefix.set(kg, &self.key_buf);
        Ok(())
    }

    fn err(&self, action: &str, e: impl std::fmt::Display) -> StateError {
        backend_error(&self.operator, action, e)
    }

    fn id(&self, idx: u32) -> StateId {
        self.states[idx as usize].id
    }

    // --- value-like states (value, reducing, aggregating) ---

    /// The current key's value.
    #[inline]
    pub(crate) fn value_get<T: DeserializeOwned>(
        &mut self,
        idx: u32,
    ) -> Result<Option<T>, StateError> {
        let id = self.id(idx);
        let Some(bytes) = self
            .db
            .get(id, &self.prefix)
            .map_err(|e| self.err("get", e))?
        else {
            return Ok(None);
        };
        codec::decode(&bytes, &self.states[idx as usize].name).map(Some)
    }

    /// Replaces the current key's value.
    #[inline]
    pub(crate) fn value_put<T: Serialize>(
        &mut self,
        idx: u32,
        value: &T,
    ) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        codec::encode_into(value, &mut self.buf, &self.states[idx as usize].name)?;
        self.db
            .put(id, &self.prefix, &self.buf)
            .map_err(|e| backend_error(&self.operator, "put", e))
    }

    /// Removes the current key's value (or list).
    pub(crate) fn delete(&mut self, idx: u32) -> Result<(), StateError> {
        let id = self.id(idx);
        self.db
            .delete(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "delete", e))
    }

    // --- list states ---

    /// The current key's list.
    pub(crate) fn list_get<T: DeserializeOwned>(&mut self, idx: u32) -> Result<Vec<T>, StateError> {
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
        let mut out = Vec::with_capacity(list.count() as usize);
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
    pub(crate) fn list_add<'a, T: Serialize + 'a>(
        &mut self,
        idx: u32,
        values: impl IntoIterator<Item = &'a T>,
    ) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        let mut count = 0u32;
        for v in values {
            codec::encode_into(v, &mut self.buf, &self.states[idx as usize].name)?;
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
    pub(crate) fn list_put<T: Serialize>(
        &mut self,
        idx: u32,
        values: &[T],
    ) -> Result<(), StateError> {
        if values.is_empty() {
            return self.delete(idx);
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
    pub(crate) fn map_get<UK: Serialize, UV: DeserializeOwned>(
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
    pub(crate) fn map_put<UK: Serialize, UV: Serialize>(
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
    pub(crate) fn map_remove<UK: Serialize>(
        &mut self,
        idx: u32,
        user_key: &UK,
    ) -> Result<(), StateError> {
        let id = self.id(idx);
        self.buf.clear();
        codec::encode_into(user_key, &mut self.buf, "map key")?;
        self.db
            .map_remove(id, &mut self.prefix, &self.buf)
            .map_err(|e| backend_error(&self.operator, "map remove", e))
    }

    /// Every entry of the current key's map.
    pub(crate) fn map_entries<UK: DeserializeOwned, UV: DeserializeOwned>(
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
    pub(crate) fn map_is_empty(&mut self, idx: u32) -> Result<bool, StateError> {
        let id = self.id(idx);
        self.db
            .map_is_empty(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "map iterate", e))
    }

    /// Removes every entry of the current key's map.
    pub(crate) fn map_clear(&mut self, idx: u32) -> Result<(), StateError> {
        let id = self.id(idx);
        self.db
            .map_clear(id, &self.prefix)
            .map_err(|e| backend_error(&self.operator, "map clear", e))
    }

    // --- whole-state operations ---

    /// The canonical per-key bytes (postcard of the heap backend's per-key
    /// value) of `key` in state `idx`, for a query; `None` without state.
    pub(crate) fn per_key_bytes<K: Serialize>(
        &mut self,
        idx: u32,
        kg: KeyGroup,
        key: &K,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let mut prefix = KeyPrefix::new();
        let mut key_bytes = Vec::new();
        codec::encode_into(key, &mut key_bytes, "key")?;
        prefix.set(kg, &key_bytes);
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
        }
    }

    /// Entries per key group of state `idx`, in range order.
    pub(crate) fn key_counts(&self, idx: u32) -> Result<Vec<usize>, StateError> {
        self.db
            .key_counts(self.id(idx))
            .map_err(|e| self.err("count keys", e))
    }

    /// Every key of state `idx` with its key group.
    pub(crate) fn keys<K: DeserializeOwned>(
        &self,
        idx: u32,
        range: KeyGroupRange,
    ) -> Result<Vec<(K, KeyGroup)>, StateError> {
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

    /// The synchronous part of a snapshot: a RocksDB checkpoint (flush and
    /// hard links); one frozen view per state reads it back off the task
    /// thread. The checkpoint directory goes when the last view does.
    pub(crate) fn freeze(
        &mut self,
        range: KeyGroupRange,
    ) -> Result<Vec<Box<dyn FrozenTable>>, StateError> {
        std::fs::create_dir_all(&self.snapshot_root)
            .map_err(|e| self.err(&format!("create {}", self.snapshot_root.display()), e))?;
        let dir = self.snapshot_root.join(unique_name("snapshot"));
        self.db
            .checkpoint(&dir)
            .map_err(|e| self.err("checkpoint", e))?;
        let snapshot = Arc::new(RocksSnapshot {
            dir,
            resources: self.resources.clone(),
            operator: self.operator.clone(),
            reader: Mutex::new(None),
            encoded: Mutex::new(HashMap::new()),
        });
        Ok(self
            .states
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Box::new(RocksFrozenTable {
                    snapshot: snapshot.clone(),
                    index,
                    state: s.name.clone(),
                    layout: s.layout,
                    range,
                }) as Box<dyn FrozenTable>
            })
            .collect())
    }
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
            .encode_key_group(&table.state, table.layout, kg, &mut out)
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
}

/// A snapshot whose synchronous part failed: the error surfaces when it is
/// encoded, so the checkpoint is declined instead of the task failing.
pub(crate) struct FailedFrozenTable(pub(crate) Arc<String>, pub(crate) String);

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
        if bytes.is_empty() {
            return Ok(false);
        }
        out.extend_from_slice(&bytes);
        Ok(true)
    }
}

/// Writes a state's restored canonical key groups into RocksDB, with the
/// state's types (a function per layout, monomorphized by the handle
/// constructors).
pub(crate) type RestoreFn =
    fn(&mut RocksStore, u32, &[(KeyGroup, Vec<u8>)], &str) -> Result<(), StateError>;

impl From<crate::backend::Layout> for StateLayout {
    fn from(l: crate::backend::Layout) -> Self {
        match l {
            crate::backend::Layout::ValueLike => StateLayout::ValueLike,
            crate::backend::Layout::List => StateLayout::List,
            crate::backend::Layout::Map => StateLayout::Map,
        }
    }
}

/// Restores a value-like state: `(key, value)` pairs per key group.
pub(crate) fn restore_values<K: crate::Key, T: crate::StateValue>(
    store: &mut RocksStore,
    idx: u32,
    groups: &[(KeyGroup, Vec<u8>)],
    name: &str,
) -> Result<(), StateError> {
    for (kg, bytes) in groups {
        let entries: Vec<(K, T)> =
            codec::decode(bytes, &format!("state '{name}' in key group {kg}"))?;
        for (key, value) in entries {
            store.set_key(*kg, &key)?;
            store.value_put(idx, &value)?;
        }
    }
    Ok(())
}

/// Restores a list state: `(key, elements)` pairs per key group.
pub(crate) fn restore_lists<K: crate::Key, T: crate::StateValue>(
    store: &mut RocksStore,
    idx: u32,
    groups: &[(KeyGroup, Vec<u8>)],
    name: &str,
) -> Result<(), StateError> {
    for (kg, bytes) in groups {
        let entries: Vec<(K, Vec<T>)> =
            codec::decode(bytes, &format!("state '{name}' in key group {kg}"))?;
        for (key, values) in entries {
            store.set_key(*kg, &key)?;
            store.list_put(idx, &values)?;
        }
    }
    Ok(())
}

/// Restores a map state: `(key, map)` pairs per key group.
pub(crate) fn restore_maps<K: crate::Key, UK: crate::handles::MapKey, UV: crate::StateValue>(
    store: &mut RocksStore,
    idx: u32,
    groups: &[(KeyGroup, Vec<u8>)],
    name: &str,
) -> Result<(), StateError> {
    for (kg, bytes) in groups {
        let entries: Vec<(K, rustc_hash::FxHashMap<UK, UV>)> =
            codec::decode(bytes, &format!("state '{name}' in key group {kg}"))?;
        for (key, map) in entries {
            store.set_key(*kg, &key)?;
            for (uk, uv) in &map {
                store.map_put(idx, uk, uv)?;
            }
        }
    }
    Ok(())
}
