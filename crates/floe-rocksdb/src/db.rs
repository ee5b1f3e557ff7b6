//! [`KeyedDb`]: the RocksDB instance holding one subtask's keyed state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_core::KeyGroup;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBPinnableSlice, DBRawIteratorWithThreadMode,
    DBWithThreadMode, ReadOptions, SingleThreaded, WriteBatch, WriteOptions,
};

use crate::error::RocksDbError;
use crate::key::{KeyGroupRange, KeyPrefix, decode_key, key_group_range_bounds, prefix_successor};
use crate::list::{encode_list_value, split_list_value};
use crate::options_file;
use crate::resources::{RocksDbResources, WritePattern, point_read_options, write_options};
use crate::ttl::{TtlCompaction, TtlFilterFactory, TtlRegistry};

/// The RocksDB handle type used throughout: column families are created
/// only by the owning subtask (`&mut self`), so the single-threaded mode's
/// plain `&ColumnFamily` handles suffice (no `Arc`/lock per access).
pub(crate) type Db = DBWithThreadMode<SingleThreaded>;

/// Column families holding Floe states are named `floe-state:<name>`, so a
/// state may be called `default` without colliding with RocksDB's own
/// column family, and foreign column families are ignored.
pub(crate) const CF_PREFIX: &str = "floe-state:";

/// The column family name of state `name`.
pub(crate) fn cf_name(name: &str) -> String {
    format!("{CF_PREFIX}{name}")
}

/// The state names of a database's column families (RocksDB's `default`
/// and foreign ones are skipped).
pub(crate) fn state_names_of(cfs: &[String]) -> Vec<String> {
    cfs.iter()
        .filter_map(|cf| cf.strip_prefix(CF_PREFIX).map(str::to_string))
        .collect()
}

/// The options of a state's column family `cf`, written as `pattern`
/// says: the shared ones plus the TTL compaction filter factory, which
/// finds the state's TTL (if any) in `ttl` when a compaction starts. Every
/// column family gets it, TTL or not, because a restored database opens
/// its column families before the function says which states have a TTL.
pub(crate) fn state_cf_options(
    resources: &RocksDbResources,
    ttl: &Arc<TtlRegistry>,
    cf: &str,
    pattern: WritePattern,
) -> rocksdb::Options {
    let mut opts = resources.cf_options_for(pattern);
    if let Some(state) = cf.strip_prefix(CF_PREFIX) {
        opts.set_compaction_filter_factory(TtlFilterFactory::new(state, ttl.clone()));
    }
    opts
}

/// Identifies a state registered with [`KeyedDb::create_state`]: an index in
/// registration order, like the heap backend's state ids, so a backend can
/// keep one id space for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// A registered state: its name and column family name.
#[derive(Debug)]
pub(crate) struct StateEntry {
    pub(crate) name: String,
    pub(crate) cf: String,
}

/// Removes the working directory when dropped, if asked to. Declared as
/// the last field of [`KeyedDb`] so it runs after the database is closed.
#[derive(Debug)]
pub(crate) struct DirCleanup {
    pub(crate) path: PathBuf,
    pub(crate) remove: bool,
}

impl Drop for DirCleanup {
    fn drop(&mut self) {
        if self.remove
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove RocksDB working directory");
        }
    }
}

/// One subtask's keyed state in RocksDB: one database in a local working
/// directory, one column family per state, keys laid out as described in
/// [`crate::key`].
///
/// Reads take `&self`; writes take `&mut self` (one writer: the task
/// thread). Every write skips the WAL (see [`crate::resources`]); durability
/// comes from [`KeyedDb::checkpoint`].
pub struct KeyedDb {
    // Field order matters: `db` is dropped (closed) before `cleanup`
    // removes its directory.
    pub(crate) db: Db,
    pub(crate) states: Vec<StateEntry>,
    /// Names of every state whose column family is open (registered or
    /// only restored), in open/creation order.
    pub(crate) present: Vec<String>,
    pub(crate) range: KeyGroupRange,
    pub(crate) resources: RocksDbResources,
    pub(crate) write_opts: WriteOptions,
    pub(crate) read_opts: ReadOptions,
    /// Reused buffer for list values and merge operands.
    pub(crate) scratch: Vec<u8>,
    /// The TTL states, which every column family's compaction filter
    /// consults (see [`crate::ttl`]).
    pub(crate) ttl: Arc<TtlRegistry>,
    pub(crate) cleanup: DirCleanup,
}

impl std::fmt::Debug for KeyedDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedDb")
            .field("path", &self.cleanup.path)
            .field("range", &self.range)
            .field("states", &self.states)
            .finish()
    }
}

/// The column family of state `id` (a free function so callers can borrow
/// other fields mutably at the same time).
#[inline]
pub(crate) fn cf_of<'a>(
    db: &'a Db,
    states: &[StateEntry],
    id: StateId,
    operation: &'static str,
) -> Result<&'a ColumnFamily, RocksDbError> {
    let entry = states
        .get(id.0 as usize)
        .ok_or_else(|| RocksDbError::invalid(operation, format!("unknown state id {}", id.0)))?;
    db.cf_handle(&entry.cf).ok_or_else(|| {
        RocksDbError::invalid(
            operation,
            format!("column family of state '{}' is not open", entry.name),
        )
    })
}

impl KeyedDb {
    /// Opens (or creates) the database in `working_dir` for the subtask
    /// owning `range`, with the process's shared `resources`. Column
    /// families already in the directory (a reopened or restored database)
    /// are opened and found again by [`KeyedDb::create_state`].
    ///
    /// The directory is removed when the `KeyedDb` is dropped unless
    /// [`KeyedDb::set_remove_on_drop`]`(false)` is called.
    pub fn open(
        working_dir: impl Into<PathBuf>,
        resources: &RocksDbResources,
        range: KeyGroupRange,
    ) -> Result<Self, RocksDbError> {
        let range = range.validate("KeyedDb::open")?;
        let path = working_dir.into();
        std::fs::create_dir_all(&path)
            .map_err(|e| RocksDbError::io("create working directory", &path, e))?;
        let cleanup = DirCleanup {
            path,
            remove: false,
        };
        Self::open_in(cleanup, resources, range, false)
    }

    /// Opens the database in `cleanup.path` (which exists). On failure the
    /// guard removes the directory only if `remove_on_failure`: a database
    /// we failed to open may be the only copy the caller wants to inspect,
    /// whereas a half-restored copy is garbage.
    pub(crate) fn open_in(
        cleanup: DirCleanup,
        resources: &RocksDbResources,
        range: KeyGroupRange,
        remove_on_failure: bool,
    ) -> Result<Self, RocksDbError> {
        let mut cleanup = cleanup;
        cleanup.remove = remove_on_failure;
        let path = cleanup.path.clone();
        let opts = resources.db_options();
        let existing = if path.join("CURRENT").exists() {
            Db::list_cf(&opts, &path)
                .map_err(|e| RocksDbError::db("list column families", &path, None, e))?
        } else {
            Vec::new()
        };
        let ttl = Arc::new(TtlRegistry::default());
        // Each column family keeps the write pattern its state was created
        // with, as RocksDB recorded it (column families of older databases
        // recorded none: written back, as they were then).
        let patterns = options_file::write_patterns(&path);
        let descriptors = existing
            .iter()
            .filter(|cf| cf.as_str() != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .map(|cf| {
                let pattern = patterns.get(cf).copied().unwrap_or(WritePattern::WriteBack);
                ColumnFamilyDescriptor::new(cf, state_cf_options(resources, &ttl, cf, pattern))
            });
        let db = Db::open_cf_descriptors(&opts, &path, descriptors)
            .map_err(|e| RocksDbError::db("open", &path, None, e))?;
        // Once open, the working directory is removed on drop by default.
        cleanup.remove = true;
        Ok(KeyedDb {
            db,
            states: Vec::new(),
            present: state_names_of(&existing),
            range,
            resources: resources.clone(),
            write_opts: write_options(),
            read_opts: point_read_options(),
            scratch: Vec::with_capacity(256),
            ttl,
            cleanup,
        })
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        &self.cleanup.path
    }

    /// The key groups this database serves.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The shared resources the database was opened with.
    pub fn resources(&self) -> &RocksDbResources {
        &self.resources
    }

    /// Whether the working directory is deleted on drop (default: yes, it
    /// is a local cache of state that checkpoints make durable).
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        self.cleanup.remove = remove;
    }

    /// Registers state `name`, written through (see [`WritePattern`]), or
    /// finds it again; returns its id.
    pub fn create_state(&mut self, name: &str) -> Result<StateId, RocksDbError> {
        self.create_state_with(name, WritePattern::WriteThrough)
    }

    /// Registers state `name` (or finds it again) and returns its id. The
    /// column family is created, written as `pattern` says, unless the
    /// database already has it, e.g. after a restore: that is how restored
    /// states are matched, by name, and a restored column family keeps the
    /// pattern it was created with.
    pub fn create_state_with(
        &mut self,
        name: &str,
        pattern: WritePattern,
    ) -> Result<StateId, RocksDbError> {
        if let Some(pos) = self.states.iter().position(|s| s.name == name) {
            return Ok(StateId(pos as u32));
        }
        let cf = self.ensure_cf(name, pattern)?;
        self.states.push(StateEntry {
            name: name.to_string(),
            cf,
        });
        Ok(StateId((self.states.len() - 1) as u32))
    }

    /// Creates the column family of state `name`, written as `pattern`
    /// says, if missing; returns its name.
    pub(crate) fn ensure_cf(
        &mut self,
        name: &str,
        pattern: WritePattern,
    ) -> Result<String, RocksDbError> {
        let cf = cf_name(name);
        if self.db.cf_handle(&cf).is_none() {
            let opts = state_cf_options(&self.resources, &self.ttl, &cf, pattern);
            self.db.create_cf(&cf, &opts).map_err(|e| {
                RocksDbError::db("create column family", self.path(), Some(name), e)
            })?;
            self.present.push(name.to_string());
        }
        Ok(cf)
    }

    /// Sets (or, with `None`, removes) state `name`'s TTL: from the next
    /// compaction of its column family on, entries expired by then are
    /// dropped (see [`crate::ttl`]).
    pub fn set_state_ttl(&mut self, name: &str, ttl: Option<TtlCompaction>) {
        self.ttl.set(name, ttl);
    }

    /// The id of registered state `name`.
    pub fn state_id(&self, name: &str) -> Option<StateId> {
        self.states
            .iter()
            .position(|s| s.name == name)
            .map(|p| StateId(p as u32))
    }

    /// The name of state `id`.
    pub fn state_name(&self, id: StateId) -> Option<&str> {
        self.states.get(id.0 as usize).map(|s| s.name.as_str())
    }

    /// Every state present in the database, registered or not (restored
    /// states the function has not registered yet are included, so a
    /// backend can carry them into snapshots). Sorted by name.
    pub fn state_names(&self) -> Vec<String> {
        let mut names = self.present.clone();
        names.sort();
        names
    }

    #[inline]
    fn cf(&self, id: StateId, operation: &'static str) -> Result<&ColumnFamily, RocksDbError> {
        cf_of(&self.db, &self.states, id, operation)
    }

    /// A RocksDB error of `operation` on state `id`.
    #[cold]
    fn err(&self, operation: &'static str, id: StateId, e: rocksdb::Error) -> RocksDbError {
        RocksDbError::db(operation, self.path(), self.state_name(id), e)
    }

    #[cold]
    fn corrupt(&self, id: StateId, reason: impl Into<String>) -> RocksDbError {
        RocksDbError::corrupt(self.path(), self.state_name(id), reason)
    }

    // ----- value-like states (value, reducing, aggregating) -----

    /// The value of the current key, pinned in RocksDB's memory (block
    /// cache or memtable) rather than copied: decode it and drop it.
    #[inline]
    pub fn get(
        &self,
        id: StateId,
        key: &KeyPrefix,
    ) -> Result<Option<DBPinnableSlice<'_>>, RocksDbError> {
        let cf = self.cf(id, "get")?;
        self.db
            .get_pinned_cf_opt(cf, key.as_bytes(), &self.read_opts)
            .map_err(|e| self.err("get", id, e))
    }

    /// Reads many keys of state `id` in one batched lookup and hands each
    /// key's index and value (`None`: absent) to `found`, in order.
    /// `sorted` says the keys are in RocksDB's (bytewise) order, which lets
    /// RocksDB skip its own sort. One batched lookup probes the memtable,
    /// the filters and each file's index once for all keys that land in
    /// it, instead of once per key: what a keyed operator needs when a
    /// batch of records brings keys its cache has not seen.
    pub fn multi_get(
        &self,
        id: StateId,
        keys: &[&[u8]],
        sorted: bool,
        mut found: impl FnMut(usize, Option<&[u8]>),
    ) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "multi get")?;
        let results = self
            .db
            .batched_multi_get_cf_opt(cf, keys, sorted, &self.read_opts);
        for (i, result) in results.into_iter().enumerate() {
            let value = result.map_err(|e| self.err("multi get", id, e))?;
            found(i, value.as_deref());
        }
        Ok(())
    }

    /// Copies the value of the current key into `out` (cleared first);
    /// returns false, leaving `out` empty, when there is none. Reusing `out`
    /// across records makes the read allocation-free on the Rust side.
    #[inline]
    pub fn get_into(
        &self,
        id: StateId,
        key: &KeyPrefix,
        out: &mut Vec<u8>,
    ) -> Result<bool, RocksDbError> {
        out.clear();
        match self.get(id, key)? {
            Some(v) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sets the value of the current key (for list states: the raw stored
    /// format; prefer [`KeyedDb::list_put`]).
    #[inline]
    pub fn put(&mut self, id: StateId, key: &KeyPrefix, value: &[u8]) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "put")?;
        self.db
            .put_cf_opt(cf, key.as_bytes(), value, &self.write_opts)
            .map_err(|e| self.err("put", id, e))
    }

    /// Clears the current key's value or list (for maps use
    /// [`KeyedDb::map_clear`], which removes every entry).
    #[inline]
    pub fn delete(&mut self, id: StateId, key: &KeyPrefix) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "delete")?;
        self.db
            .delete_cf_opt(cf, key.as_bytes(), &self.write_opts)
            .map_err(|e| self.err("delete", id, e))
    }

    /// Writes many values of state `id` in one write batch: `Some` puts,
    /// `None` deletes. Keys are whole prefixes ([`KeyPrefix::as_bytes`]) or
    /// raw keys (as [`Self::put_raw`] takes them). One batch costs one
    /// memtable insertion pass instead of one write per entry, which is
    /// what a write-back cache flushing at a barrier needs, and a timer
    /// queue writing its buffered changes.
    pub fn write_values<'a>(
        &mut self,
        id: StateId,
        entries: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "write batch")?;
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            match value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| self.err("write batch", id, e))
    }

    // ----- list states -----

    /// Appends `count` elements (their concatenated postcard bytes) to the
    /// current key's list with a merge: no read, whatever the list's size.
    /// Appending zero elements is a no-op.
    #[inline]
    pub fn list_append(
        &mut self,
        id: StateId,
        key: &KeyPrefix,
        count: u32,
        elements: &[u8],
    ) -> Result<(), RocksDbError> {
        if count == 0 {
            return Ok(());
        }
        encode_list_value(&mut self.scratch, count, elements);
        let cf = self.cf(id, "list_append")?;
        self.db
            .merge_cf_opt(cf, key.as_bytes(), &self.scratch, &self.write_opts)
            .map_err(|e| self.err("list_append", id, e))
    }

    /// Replaces the current key's list with `count` elements; an empty list
    /// deletes the key (the heap backend keeps no empty lists either).
    pub fn list_put(
        &mut self,
        id: StateId,
        key: &KeyPrefix,
        count: u32,
        elements: &[u8],
    ) -> Result<(), RocksDbError> {
        if count == 0 {
            return self.delete(id, key);
        }
        encode_list_value(&mut self.scratch, count, elements);
        let cf = self.cf(id, "list_put")?;
        self.db
            .put_cf_opt(cf, key.as_bytes(), &self.scratch, &self.write_opts)
            .map_err(|e| self.err("list_put", id, e))
    }

    /// The current key's list: element count and concatenated element
    /// bytes, pinned (merge operands are folded by RocksDB on the read).
    pub fn list_get(
        &self,
        id: StateId,
        key: &KeyPrefix,
    ) -> Result<Option<ListValue<'_>>, RocksDbError> {
        let Some(raw) = self.get(id, key)? else {
            return Ok(None);
        };
        let Some((count, _)) = split_list_value(&raw) else {
            return Err(self.corrupt(
                id,
                format!("list value of {} bytes has no count header", raw.len()),
            ));
        };
        Ok(Some(ListValue { raw, count }))
    }

    /// Copies the current key's list elements into `out` (cleared first) and
    /// returns their count, `None` when the key has no list.
    pub fn list_get_into(
        &self,
        id: StateId,
        key: &KeyPrefix,
        out: &mut Vec<u8>,
    ) -> Result<Option<u32>, RocksDbError> {
        out.clear();
        Ok(self.list_get(id, key)?.map(|l| {
            out.extend_from_slice(l.elements());
            l.count()
        }))
    }

    // ----- map states -----

    /// The value of map entry `user_key` of the current key, pinned. The
    /// RocksDB key is composed in `key`'s reused buffer.
    #[inline]
    pub fn map_get(
        &self,
        id: StateId,
        key: &mut KeyPrefix,
        user_key: &[u8],
    ) -> Result<Option<DBPinnableSlice<'_>>, RocksDbError> {
        let cf = self.cf(id, "map_get")?;
        self.db
            .get_pinned_cf_opt(cf, key.with_user_key(user_key), &self.read_opts)
            .map_err(|e| self.err("map_get", id, e))
    }

    /// Sets map entry `user_key` of the current key.
    #[inline]
    pub fn map_put(
        &mut self,
        id: StateId,
        key: &mut KeyPrefix,
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "map_put")?;
        self.db
            .put_cf_opt(cf, key.with_user_key(user_key), value, &self.write_opts)
            .map_err(|e| self.err("map_put", id, e))
    }

    /// Removes map entry `user_key` of the current key (a no-op if absent;
    /// no read is made to find out).
    #[inline]
    pub fn map_remove(
        &mut self,
        id: StateId,
        key: &mut KeyPrefix,
        user_key: &[u8],
    ) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "map_remove")?;
        self.db
            .delete_cf_opt(cf, key.with_user_key(user_key), &self.write_opts)
            .map_err(|e| self.err("map_remove", id, e))
    }

    /// A cursor over the current key's map entries, in user-key byte order.
    pub fn map_iter(&self, id: StateId, key: &KeyPrefix) -> Result<MapIter<'_>, RocksDbError> {
        let cf = self.cf(id, "map_iter")?;
        let prefix = key.as_bytes();
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(prefix.to_vec());
        let mut upper = Vec::with_capacity(prefix.len());
        if prefix_successor(prefix, &mut upper) {
            opts.set_iterate_upper_bound(upper);
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek(prefix);
        Ok(MapIter {
            it,
            prefix_len: prefix.len(),
            started: false,
            path: self.path(),
            state: self.state_name(id).unwrap_or_default(),
        })
    }

    /// True when the current key has no map entry.
    pub fn map_is_empty(&self, id: StateId, key: &KeyPrefix) -> Result<bool, RocksDbError> {
        Ok(self.map_iter(id, key)?.next_entry()?.is_none())
    }

    /// Removes every map entry of the current key. The entries are found
    /// with a prefix scan and deleted one by one in a single write batch, as
    /// Flink does: a range tombstone per cleared map would have to be
    /// consulted by every later read of the column family until compacted.
    pub fn map_clear(&mut self, id: StateId, key: &KeyPrefix) -> Result<(), RocksDbError> {
        let mut batch = WriteBatch::default();
        {
            let cf = self.cf(id, "map_clear")?;
            let mut it = self.map_iter(id, key)?;
            while it.advance()? {
                if let Some(raw) = it.it.key() {
                    batch.delete_cf(cf, raw);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| self.err("map_clear", id, e))
    }

    // ----- raw keys (timer queues) -----

    /// Writes `value` under the raw RocksDB key `key` of state `id`: for a
    /// caller that lays out its own keys within the layout of
    /// [`crate::key`], as timer queues do ([`crate::key::encode_timer_key`]).
    #[inline]
    pub fn put_raw(&mut self, id: StateId, key: &[u8], value: &[u8]) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "put_raw")?;
        self.db
            .put_cf_opt(cf, key, value, &self.write_opts)
            .map_err(|e| self.err("put_raw", id, e))
    }

    /// Deletes the raw RocksDB key `key` of state `id` (no read is made to
    /// find out whether it exists).
    #[inline]
    pub fn delete_raw(&mut self, id: StateId, key: &[u8]) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "delete_raw")?;
        self.db
            .delete_cf_opt(cf, key, &self.write_opts)
            .map_err(|e| self.err("delete_raw", id, e))
    }

    /// Calls `f` on the raw keys of state `id` in `[from, until)`, in
    /// order, at most `limit` of them; returns how many it saw. One seek
    /// and a short forward scan: what refills a timer queue's in-memory
    /// head from RocksDB. Unlike snapshot scans it fills the block cache,
    /// since the next refill reads the blocks after these.
    pub fn scan_raw(
        &self,
        id: StateId,
        from: &[u8],
        until: &[u8],
        limit: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, RocksDbError> {
        let cf = self.cf(id, "scan_raw")?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(until.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek(from);
        let mut n = 0;
        while n < limit {
            match it.key() {
                Some(k) => f(k),
                None => break,
            }
            n += 1;
            it.next();
        }
        it.status().map_err(|e| self.err("scan_raw", id, e))?;
        Ok(n)
    }

    // ----- whole key groups -----

    /// A cursor over every entry of state `id` in key group `kg`, in key
    /// order (for `keys()` and snapshots). Scans do not fill the block
    /// cache, so they do not evict the blocks of the hot path.
    pub fn iter_key_group(&self, id: StateId, kg: KeyGroup) -> Result<EntryIter<'_>, RocksDbError> {
        let cf = self.cf(id, "iter_key_group")?;
        Ok(EntryIter::new(
            &self.db,
            cf,
            kg,
            kg,
            self.path(),
            self.state_name(id).unwrap_or_default(),
        ))
    }

    /// A cursor over every entry of state `id` in key groups
    /// `first..=last` (whole ranges in one pass: dumps, counts, snapshots).
    pub fn iter_key_groups(
        &self,
        id: StateId,
        first: KeyGroup,
        last: KeyGroup,
    ) -> Result<EntryIter<'_>, RocksDbError> {
        if first > last {
            return Err(RocksDbError::invalid(
                "iter_key_groups",
                format!("empty key group range {first}..={last}"),
            ));
        }
        let cf = self.cf(id, "iter_key_groups")?;
        Ok(EntryIter::new(
            &self.db,
            cf,
            first,
            last,
            self.path(),
            self.state_name(id).unwrap_or_default(),
        ))
    }

    /// The number of distinct keys of state `id` per key group of this
    /// database's range, in range order (the heap backend's
    /// `keys_per_key_group`: a map key counts once whatever its entries).
    pub fn key_counts(&self, id: StateId) -> Result<Vec<usize>, RocksDbError> {
        let cf = self.cf(id, "key_counts")?;
        let mut counts = vec![0usize; self.range.len()];
        let mut it = EntryIter::new(
            &self.db,
            cf,
            self.range.start,
            self.range.end,
            self.path(),
            self.state_name(id).unwrap_or_default(),
        );
        while let Some(e) = it.next_key()? {
            let offset = usize::from(e.key_group - self.range.start);
            if let Some(c) = counts.get_mut(offset) {
                *c += 1;
            }
        }
        Ok(counts)
    }

    /// Flushes every state's memtable to SST files and waits for it.
    pub fn flush(&self) -> Result<(), RocksDbError> {
        let cfs: Vec<&ColumnFamily> = self
            .present
            .iter()
            .filter_map(|name| self.db.cf_handle(&cf_name(name)))
            .collect();
        if cfs.is_empty() {
            return Ok(());
        }
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db
            .flush_cfs_opt(&cfs, &fo)
            .map_err(|e| RocksDbError::db("flush", self.path(), None, e))
    }

    /// Compacts state `id` fully (tests, and maintenance after a rescale).
    pub fn compact_state(&self, id: StateId) -> Result<(), RocksDbError> {
        let cf = self.cf(id, "compact_state")?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// An integer property of the database (e.g. `rocksdb.block-cache-usage`),
    /// for metrics and tests.
    pub fn property_int(&self, name: &str) -> Result<Option<u64>, RocksDbError> {
        self.db
            .property_int_value(name)
            .map_err(|e| RocksDbError::db("read property", self.path(), None, e))
    }

    /// An integer property of state `id`'s column family (e.g.
    /// `rocksdb.total-sst-files-size`, `rocksdb.estimate-num-keys`).
    pub fn state_property_int(&self, id: StateId, name: &str) -> Result<Option<u64>, RocksDbError> {
        let cf = self.cf(id, "read property")?;
        self.db
            .property_int_value_cf(cf, name)
            .map_err(|e| self.err("read property", id, e))
    }
}

/// A list state's value as stored: the element count and the concatenated
/// postcard elements, borrowed from RocksDB.
pub struct ListValue<'a> {
    raw: DBPinnableSlice<'a>,
    count: u32,
}

impl ListValue<'_> {
    /// Number of elements.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The concatenated postcard elements.
    pub fn elements(&self) -> &[u8] {
        split_list_value(&self.raw).map_or(&[][..], |(_, e)| e)
    }
}

impl std::fmt::Debug for ListValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListValue")
            .field("count", &self.count)
            .field("bytes", &self.elements().len())
            .finish()
    }
}

/// A cursor over one key's map entries (a lending iterator: each entry
/// borrows the cursor until the next call, so nothing is copied).
pub struct MapIter<'a> {
    it: DBRawIteratorWithThreadMode<'a, Db>,
    prefix_len: usize,
    started: bool,
    path: &'a Path,
    state: &'a str,
}

impl MapIter<'_> {
    fn advance(&mut self) -> Result<bool, RocksDbError> {
        if self.started {
            self.it.next();
        }
        self.started = true;
        if self.it.valid() {
            return Ok(true);
        }
        self.it
            .status()
            .map_err(|e| RocksDbError::db("map_iter", self.path, Some(self.state), e))?;
        Ok(false)
    }

    /// The next entry, `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<MapEntry<'_>>, RocksDbError> {
        if !self.advance()? {
            return Ok(None);
        }
        let prefix_len = self.prefix_len;
        match self.it.item() {
            Some((k, v)) if k.len() >= prefix_len => Ok(Some(MapEntry {
                user_key: &k[prefix_len..],
                value: v,
            })),
            _ => Err(RocksDbError::corrupt(
                self.path,
                Some(self.state),
                "map entry key shorter than its prefix",
            )),
        }
    }
}

/// One entry of a key's map, borrowed from the iterator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry<'a> {
    /// The user key's postcard bytes.
    pub user_key: &'a [u8],
    /// The user value's postcard bytes.
    pub value: &'a [u8],
}

/// One stored entry of a state, split by the key layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key group.
    pub key_group: KeyGroup,
    /// The serialized key.
    pub key: &'a [u8],
    /// The map user key (empty for value and list states).
    pub user_key: &'a [u8],
    /// The stored value (list states: count header + elements).
    pub value: &'a [u8],
    /// The full RocksDB key.
    pub raw_key: &'a [u8],
}

/// A cursor over the entries of a range of key groups of one state (a
/// lending iterator).
pub struct EntryIter<'a> {
    it: DBRawIteratorWithThreadMode<'a, Db>,
    started: bool,
    /// Prefix of the key last returned by `next_key`, to skip its other
    /// map entries.
    last_prefix: Vec<u8>,
    path: &'a Path,
    state: &'a str,
}

impl<'a> EntryIter<'a> {
    /// Entries of key groups `first..=last` of `cf`, without filling the
    /// block cache.
    pub(crate) fn new(
        db: &'a Db,
        cf: &ColumnFamily,
        first: KeyGroup,
        last: KeyGroup,
        path: &'a Path,
        state: &'a str,
    ) -> Self {
        let (lo, hi) = key_group_range_bounds(first, last);
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_iterate_lower_bound(lo.to_vec());
        if last < KeyGroup::MAX {
            opts.set_iterate_upper_bound(hi.to_vec());
        }
        let mut it = db.raw_iterator_cf_opt(cf, opts);
        it.seek(lo);
        EntryIter {
            it,
            started: false,
            last_prefix: Vec::new(),
            path,
            state,
        }
    }

    fn advance(&mut self) -> Result<bool, RocksDbError> {
        if self.started {
            self.it.next();
        }
        self.started = true;
        if self.it.valid() {
            return Ok(true);
        }
        self.it
            .status()
            .map_err(|e| RocksDbError::db("iterate", self.path, Some(self.state), e))?;
        Ok(false)
    }

    fn current(&self) -> Result<Entry<'_>, RocksDbError> {
        let corrupt = |reason: &str| RocksDbError::corrupt(self.path, Some(self.state), reason);
        let (raw_key, value) = self
            .it
            .item()
            .ok_or_else(|| corrupt("iterator lost its entry"))?;
        let d = decode_key(raw_key).ok_or_else(|| corrupt("key does not follow the layout"))?;
        Ok(Entry {
            key_group: d.key_group,
            key: d.key,
            user_key: d.user_key,
            value,
            raw_key,
        })
    }

    /// The next entry, `None` at the end of the range.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, RocksDbError> {
        if !self.advance()? {
            return Ok(None);
        }
        self.current().map(Some)
    }

    /// The first entry of the next distinct key (skipping the remaining map
    /// entries of the previous one), `None` at the end of the range.
    pub fn next_key(&mut self) -> Result<Option<Entry<'_>>, RocksDbError> {
        loop {
            if !self.advance()? {
                return Ok(None);
            }
            let same = !self.last_prefix.is_empty()
                && self
                    .it
                    .key()
                    .is_some_and(|k| k.starts_with(&self.last_prefix));
            if same {
                continue;
            }
            let prefix_len = {
                let e = self.current()?;
                e.raw_key.len() - e.user_key.len()
            };
            self.last_prefix.clear();
            if let Some(k) = self.it.key() {
                self.last_prefix.extend_from_slice(&k[..prefix_len]);
            }
            return self.current().map(Some);
        }
    }
}
