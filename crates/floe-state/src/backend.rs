//! The per-subtask keyed state backend.
//!
//! One [`KeyedStateBackend`] serves one subtask of one keyed operator. It owns
//! the registrations of the states that operator's function declared, the
//! subtask's key-group range and the *current key*: the key of the record
//! being processed, set by the runtime before each call into user code, so
//! that state handles need no key argument (Flink's model).
//!
//! Storage is the store's business ([`crate::store`]): the backend picks one
//! by [`StateBackendKind`] and calls it through the [`KeyedStore`] trait, for
//! handles (one call per access, at the current key) and for its own work
//! (snapshots, restores, queries, key listings). It never looks at which
//! store it has.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floe_core::KeyGroup;

pub use crate::config::{HeapConfig, RocksDbConfig, StateBackendKind, StateBackendSettings};
use crate::descriptor::{StateKind, StateMeta};
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeFetch, NativeKeyedStateFile};
use crate::query::{QueryFormat, QueryValue, QueryableStateInfo};
use crate::query_view::QueryView;
use crate::schema::{self, ContentMigration, SchemaCompatibility, SerializerIdentity};
use crate::snapshot::{KeyedStateSnapshot, RestoreStaging};
use crate::store::dispatch::AnyStore;
use crate::store::{At, KeyedStore, Shape, StateId, StateRef};
use crate::timer::{Namespace, TimeDomain, Timer, TimerQueue};
use crate::ttl::{
    SharedClock, StateTtlConfig, Ttl, TtlContent, TtlSpec, TtlTimeProvider, system_time_ms,
};
use crate::types::Key;

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

/// Why restored state of `restored` kind (with a TTL or not) cannot be
/// registered as `requested` (with a TTL or not); `None` when it can. A
/// TTL change is refused like a kind change, as Flink does: the stored
/// values would not decode (they gain or lose their timestamps).
fn restore_mismatch(
    restored: StateKind,
    restored_ttl: bool,
    requested: StateKind,
    requested_ttl: bool,
) -> Option<String> {
    if restored != requested {
        return Some("the kinds differ".into());
    }
    match (restored_ttl, requested_ttl) {
        (true, false) => Some(
            "the snapshot's state has a time to live and the descriptor has none; \
             enabling or disabling TTL on existing state is not supported"
                .into(),
        ),
        (false, true) => Some(
            "the descriptor enables a time to live and the snapshot's state has none; \
             enabling or disabling TTL on existing state is not supported"
                .into(),
        ),
        _ => None,
    }
}

/// What a handle declares when it registers a state: the backend's side
/// of a descriptor, with the types spelled out.
pub(crate) struct Declaration<'a> {
    /// The state's name.
    pub(crate) name: &'a str,
    /// Its kind.
    pub(crate) kind: StateKind,
    /// The name queries use, when queryable.
    pub(crate) queryable: Option<&'a str>,
    /// How its values are written now.
    pub(crate) serializer: SerializerIdentity,
    /// How restored values of an older type are converted, if declared.
    pub(crate) migration: Option<ContentMigration<'a>>,
}

/// How restored state described by `meta` fits `decl` (declared type
/// `type_name`). A snapshot from before identities is accepted as it is,
/// unless the type name it recorded is the old type of the declared
/// migration (and not the declared type): then it is migrated.
fn schema_outcome(
    meta: &StateMeta,
    type_name: &str,
    decl: &Declaration<'_>,
) -> SchemaCompatibility {
    let migration = decl.migration.as_ref();
    if meta.serializer.is_none()
        && let Some(m) = migration
        && meta.value_type == m.legacy_from
        && meta.value_type != type_name
    {
        return SchemaCompatibility::CompatibleAfterMigration;
    }
    SchemaCompatibility::of(
        meta.serializer.as_ref(),
        &decl.serializer,
        migration.map(|m| &m.from),
    )
}

/// The refusal of restored state `meta` declared now as `declared`.
fn incompatible_schema(
    meta: &StateMeta,
    kind: StateKind,
    declared: &SerializerIdentity,
) -> StateError {
    let old = meta.serializer.as_ref();
    StateError::IncompatibleSchema {
        name: meta.name.clone(),
        old: old.map_or_else(|| meta.value_type.clone(), |o| o.describe(kind)),
        new: declared.describe(kind),
        old_value_type: old
            .and_then(|o| o.types.last().cloned())
            .unwrap_or_else(|| meta.value_type.clone()),
    }
}

/// Rewrites canonical key groups (per group the postcard sequence of
/// `(key, content)` pairs) with `content` migrating each key's content;
/// the keys are kept byte for byte.
fn migrate_key_groups<K: Key>(
    groups: &[(KeyGroup, Vec<u8>)],
    content: &schema::MigrateContent<'_>,
) -> Result<Vec<(KeyGroup, Vec<u8>)>, String> {
    groups
        .iter()
        .map(|(kg, bytes)| {
            let in_group = |e: String| format!("in key group {kg}: {e}");
            let (n, rest) =
                postcard::take_from_bytes::<usize>(bytes).map_err(|e| in_group(e.to_string()))?;
            let mut at = bytes.len() - rest.len();
            let mut out = Vec::with_capacity(bytes.len());
            schema::push_len(&mut out, n).map_err(in_group)?;
            for _ in 0..n {
                let key_len = schema::encoded_len::<K>(&bytes[at..]).map_err(in_group)?;
                out.extend_from_slice(&bytes[at..at + key_len]);
                at += key_len;
                at += content(&bytes[at..], &mut out).map_err(in_group)?;
            }
            if at != bytes.len() {
                return Err(in_group(format!("{} trailing bytes", bytes.len() - at)));
            }
            Ok((*kg, out))
        })
        .collect()
}

/// Metadata of one registered state.
#[derive(Debug, Clone)]
struct Registration {
    name: String,
    kind: StateKind,
    type_id: TypeId,
    type_name: &'static str,
    /// The name queries use, when the state is queryable.
    queryable: Option<String>,
    /// Whether the state has a TTL (its values carry timestamps).
    ttl: bool,
    /// How its values are written, recorded in every snapshot.
    serializer: SerializerIdentity,
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
    store: AnyStore<K>,
    /// Restored state not yet registered by the function: loaded when
    /// registered, carried into every snapshot until then.
    staged: RestoreStaging,
    /// Encoded size of the latest snapshot (see `KeyedStateSnapshot`).
    snapshot_size_hint: Arc<AtomicUsize>,
    /// Set by readers of this backend's query views: publish them again.
    views_wanted: Arc<AtomicBool>,
    /// Whether any query view was started, and how many calls of
    /// `publish_query_views` found no reader since it last looked for
    /// views to retire.
    views: bool,
    views_idle: u32,
    /// This backend's identity in the timer queues it hands out.
    owner: u64,
    /// The processing-time clock TTL states read on the record path.
    ttl_clock: TtlTimeProvider,
    /// The same clock for work off the record path (compactions,
    /// snapshots), replaced in place when the clock is.
    ttl_shared_clock: SharedClock,
    /// TTL states cleaned up incrementally on every record: (state, entries).
    ttl_every_record: Vec<(StateId, u32)>,
    /// Why a registration of restored state was refused, if one was.
    restore_refusal: Option<String>,
}

/// A process-unique backend identity (never 0, never `u64::MAX`).
fn next_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<K: Key> KeyedStateBackend<K> {
    /// This backend's process-unique identity: what declared state
    /// handles remember to know they are registered here.
    #[inline(always)]
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

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
        let store = AnyStore::open(&settings, &operator, range)?;
        let ttl_clock: TtlTimeProvider = Arc::new(system_time_ms);
        Ok(KeyedStateBackend {
            operator,
            range,
            max_parallelism,
            kind: settings.kind,
            current: None,
            registrations: Vec::new(),
            staged: RestoreStaging::default(),
            snapshot_size_hint: Default::default(),
            views_wanted: Default::default(),
            views: false,
            views_idle: 0,
            owner: next_owner(),
            ttl_shared_clock: SharedClock::new(ttl_clock.clone()),
            ttl_clock,
            ttl_every_record: Vec::new(),
            restore_refusal: None,
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

    /// Whether [`prefetch`](Self::prefetch) is worth calling for the next
    /// batch: true on a backend that pays per lookup (RocksDB) while its
    /// recent batches brought keys it had not cached, where an operator
    /// should gather the batch's keys before processing its records.
    #[inline]
    pub fn prefetches(&mut self) -> bool {
        self.store.prefetches()
    }

    /// Appends the backend's native metrics (RocksDB properties of each
    /// state, those `state.backend.rocksdb.metrics.*` switched on; none on
    /// the heap backend). Off the record path: a task asks about once a
    /// second.
    pub fn native_metrics(&self, out: &mut Vec<crate::metrics::NativeMetric>) {
        self.store.native_metrics(out)
    }

    /// Tells the backend the keys (and key groups) of the batch about to be
    /// processed, in order, so it can look them up together. A hint only:
    /// state reads and writes per record are unchanged by it.
    pub fn prefetch(&mut self, keys: &[K], key_groups: &[KeyGroup]) -> Result<(), StateError> {
        self.store.prefetch(keys, key_groups)
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
        self.store.set_current_key(&key, key_group)?;
        self.current = Some((key, offset));
        if !self.ttl_every_record.is_empty() {
            self.ttl_cleanup_per_record()?;
        }
        Ok(())
    }

    /// Sets the processing-time clock that TTL states read (milliseconds;
    /// the system clock by default). The runtime sets the task's clock, so
    /// that a job run on a manual clock expires state on it; tests set
    /// their own. Applies to states registered before too, including
    /// RocksDB's compaction filters.
    pub fn set_ttl_time_provider(&mut self, provider: impl Fn() -> i64 + Send + Sync + 'static) {
        let provider: TtlTimeProvider = Arc::new(provider);
        self.ttl_shared_clock.set(provider.clone());
        self.ttl_clock = provider;
    }

    /// RocksDB backend: compacts state `name`'s column family fully now
    /// (after writing back cached values and flushing), so that its TTL
    /// compaction filter drops what expired; for maintenance and tests.
    /// An error on the heap backend.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb_compact_state(&mut self, name: &str) -> Result<(), StateError> {
        match self.store.rocks() {
            Some(r) => r.compact_state(name),
            None => Err(self.not_rocksdb()),
        }
    }

    /// RocksDB backend: an integer property of state `name`'s column
    /// family (`rocksdb.estimate-num-keys`, `rocksdb.total-sst-files-size`,
    /// ...), for metrics and tests. An error on the heap backend.
    #[cfg(feature = "rocksdb")]
    pub fn rocksdb_state_property(
        &mut self,
        name: &str,
        property: &str,
    ) -> Result<Option<u64>, StateError> {
        match self.store.rocks() {
            Some(r) => r.state_property(name, property),
            None => Err(self.not_rocksdb()),
        }
    }

    #[cfg(feature = "rocksdb")]
    fn not_rocksdb(&self) -> StateError {
        StateError::Backend {
            operator: self.operator.clone(),
            reason: "not a RocksDB backend".into(),
        }
    }

    /// The current time of TTL states.
    #[inline]
    pub(crate) fn ttl_now(&self) -> i64 {
        (self.ttl_clock)()
    }

    /// After an access of TTL state `id`: its incremental cleanup.
    #[inline]
    pub(crate) fn ttl_accessed(
        &mut self,
        id: StateId,
        ttl: Ttl,
        now: i64,
    ) -> Result<(), StateError> {
        if ttl.cleanup_size == 0 {
            return Ok(());
        }
        self.store.ttl_cleanup(id, ttl.cleanup_size, now)
    }

    /// The incremental cleanup of the TTL states that run it on every record.
    #[cold]
    fn ttl_cleanup_per_record(&mut self) -> Result<(), StateError> {
        let now = self.ttl_now();
        for &(id, entries) in &self.ttl_every_record {
            self.store.ttl_cleanup(id, entries, now)?;
        }
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

    /// The store and the current position, for state `id`'s handle: what
    /// every state access goes through (always inlined, like the handle
    /// methods that call it).
    #[inline(always)]
    pub(crate) fn store_at(
        &mut self,
        id: StateId,
    ) -> Result<(&mut AnyStore<K>, At<'_, K>), StateError> {
        match &self.current {
            Some((key, offset)) => Ok((
                &mut self.store,
                At {
                    key,
                    offset: *offset,
                },
            )),
            None => Err(self.no_current_key(id)),
        }
    }

    #[cold]
    fn no_current_key(&self, id: StateId) -> StateError {
        StateError::NoCurrentKey {
            name: self.registrations[id as usize].name.clone(),
        }
    }

    /// Registers (or finds again) the state `decl` declares, of shape `Sh`;
    /// `T` is the declared value type, checked for compatibility. Returns
    /// the reference its handle keeps, bound by the store.
    pub(crate) fn register<T: 'static, Sh: Shape>(
        &mut self,
        decl: Declaration<'_>,
    ) -> Result<StateRef<Sh>, StateError> {
        let name = decl.name;
        let id = self.register_with::<T>(decl, false, |store, id, groups, range| {
            store.register::<Sh>(id, name, groups, range, None)
        })?;
        Ok(self.store.bind(id))
    }

    /// [`register`](Self::register) for a state with a TTL: its per-key
    /// content `Sh::PerKey` holds `TtlValue`s. Refused for a queryable
    /// state (as in Flink) and for a TTL under a millisecond.
    pub(crate) fn register_ttl<T: 'static, Sh: Shape>(
        &mut self,
        decl: Declaration<'_>,
        config: &StateTtlConfig,
    ) -> Result<(StateRef<Sh>, Ttl), StateError>
    where
        Sh::PerKey: TtlContent,
    {
        let name = decl.name;
        let invalid = |reason: &str| StateError::InvalidTtl {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if decl.queryable.is_some() {
            return Err(invalid("queryable state does not support TTL"));
        }
        if config.ttl_ms() < 1 {
            return Err(invalid("the time to live must be at least a millisecond"));
        }
        let spec = TtlSpec::<Sh::PerKey>::of(config, self.ttl_shared_clock.provider());
        let id = self.register_with::<T>(decl, true, |store, id, groups, range| {
            store.register::<Sh>(id, name, groups, range, Some(spec))
        })?;
        if let Some(c) = config.cleanup_strategies().incremental
            && c.run_for_every_record
            && c.cleanup_size > 0
            && !self.ttl_every_record.iter().any(|(i, _)| *i == id)
        {
            self.ttl_every_record.push((id, c.cleanup_size));
        }
        Ok((self.store.bind(id), Ttl::of(config)))
    }

    /// Registers (or finds again) the state or timer queue `decl`
    /// declares, with declared type `T`, loading it into the store with
    /// `load` (its index, its restored key groups, the range) when it is
    /// new; returns its index. Names are one space for states and timer
    /// queues. Restored state is checked against the declaration first:
    /// its kind, its TTL and its serializer identity (see
    /// [`crate::schema`]), and migrated when the declaration says how.
    fn register_with<T: 'static>(
        &mut self,
        decl: Declaration<'_>,
        ttl: bool,
        load: impl FnOnce(
            &mut AnyStore<K>,
            StateId,
            &[(KeyGroup, Vec<u8>)],
            KeyGroupRange,
        ) -> Result<(), StateError>,
    ) -> Result<StateId, StateError> {
        let (name, kind, queryable) = (decl.name, decl.kind, decl.queryable);
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
            if r.kind != kind || r.type_id != type_id || r.ttl != ttl {
                return Err(StateError::IncompatibleRegistration {
                    name: name.to_string(),
                    existing_kind: r.kind,
                    existing_type: r.type_name,
                    requested_kind: kind,
                    requested_type: type_name,
                });
            }
            return Ok(idx as StateId);
        }
        let incompatible =
            |restored_kind: StateKind, reason: String| StateError::IncompatibleRestore {
                name: name.to_string(),
                restored_kind,
                requested_kind: kind,
                requested_type: type_name,
                reason,
            };
        if let Some(meta) = self.store.restored_meta(name) {
            let restored_kind = meta.state_kind().unwrap_or(kind);
            let refusal =
                if let Some(reason) = restore_mismatch(restored_kind, meta.has_ttl(), kind, ttl) {
                    Some(incompatible(restored_kind, reason))
                } else {
                    match schema_outcome(meta, type_name, &decl) {
                        SchemaCompatibility::CompatibleAsIs => None,
                        SchemaCompatibility::CompatibleAfterMigration => Some(incompatible(
                            restored_kind,
                            "it needs the declared migration, and this incremental RocksDB \
                         checkpoint is restored natively, without rewriting its values; \
                         take a savepoint of the job that wrote it and restore that"
                                .into(),
                        )),
                        SchemaCompatibility::Incompatible => {
                            Some(incompatible_schema(meta, kind, &decl.serializer))
                        }
                    }
                };
            if let Some(err) = refusal {
                return Err(self.refuse(err));
            }
        }
        let staged = self.staged.take(name);
        let mut migrated = None;
        if let Some(s) = staged.as_ref() {
            let meta = s.meta();
            let refusal = if let Some(reason) = restore_mismatch(s.kind, s.ttl, kind, ttl) {
                Some(incompatible(s.kind, reason))
            } else {
                match schema_outcome(&meta, type_name, &decl) {
                    SchemaCompatibility::CompatibleAsIs => None,
                    SchemaCompatibility::CompatibleAfterMigration => {
                        let migration = decl.migration.as_ref().expect("a migration was matched");
                        match migrate_key_groups::<K>(&s.key_groups, &*migration.content) {
                            Ok(groups) => {
                                migrated = Some(groups);
                                None
                            }
                            Err(reason) => Some(incompatible(
                                s.kind,
                                format!(
                                    "its values do not decode as the migration's old type {}: {reason}",
                                    migration.from.describe(kind)
                                ),
                            )),
                        }
                    }
                    SchemaCompatibility::Incompatible => {
                        Some(incompatible_schema(&meta, kind, &decl.serializer))
                    }
                }
            };
            if let Some(err) = refusal {
                self.staged.put_back(staged.expect("just matched"));
                return Err(self.refuse(err));
            }
        }
        // The new state's storage, with its restored entries. On failure
        // the store adds nothing: the state's index stays that of the next
        // registration.
        let id = self.registrations.len() as StateId;
        let groups = match (&migrated, staged.as_ref()) {
            (Some(m), _) => &m[..],
            (None, Some(s)) => &s.key_groups[..],
            (None, None) => &[][..],
        };
        let loaded = load(&mut self.store, id, groups, self.range);
        // Restoring moved a byte store's current key; put it back.
        if let Some((key, offset)) = &self.current {
            self.store
                .set_current_key(key, self.range.start + *offset as KeyGroup)?;
        }
        if let Err(e) = loaded {
            // Restored entries that do not decode as the declared types are
            // an incompatible restore; a storage fault stays what it is.
            // Either way the entries stay staged (and carried).
            let Some(staged) = staged else {
                return Err(e);
            };
            let err = match e {
                StateError::Codec { .. } => self.refuse(incompatible(staged.kind, e.to_string())),
                other => other,
            };
            self.staged.put_back(staged);
            return Err(err);
        }
        self.registrations.push(Registration {
            name: name.to_string(),
            kind,
            type_id,
            type_name,
            queryable: queryable.map(str::to_string),
            ttl,
            serializer: decl.serializer,
        });
        Ok(id)
    }

    /// Remembers that restored state was refused (see
    /// [`restore_refusal`](Self::restore_refusal)) and returns the error.
    #[cold]
    fn refuse(&mut self, err: StateError) -> StateError {
        if self.restore_refusal.is_none() {
            self.restore_refusal = Some(err.to_string());
        }
        err
    }

    /// Why the first registration of restored state that could not be
    /// used was refused (another kind, TTL or type without a migration,
    /// values that do not decode), if one was. Such a restore fails the
    /// same way on every attempt, so the runtime fails the job at once,
    /// without restarting it, even when the function turned the error
    /// into another one or a panic.
    pub fn restore_refusal(&self) -> Option<&str> {
        self.restore_refusal.as_deref()
    }

    // --- timers ---

    /// Registers (or finds again) the timer queue `name` with namespaces of
    /// type `N` (`()` when a function has none): during the operator's
    /// open, like a state, and before any timer is set. Its restored
    /// timers, if a snapshot holds a queue of that name, are loaded now.
    /// Queue and state names share one name space; registering a name
    /// again with another namespace type, or that a state has, is an
    /// [`StateError::IncompatibleRegistration`].
    pub fn timer_queue<N: Namespace>(&mut self, name: &str) -> Result<TimerQueue<N>, StateError> {
        let decl = Declaration {
            name,
            kind: StateKind::Timers,
            queryable: None,
            serializer: SerializerIdentity::postcard(&[std::any::type_name::<N>()]),
            migration: None,
        };
        let id = self.register_with::<N>(decl, false, |store, id, groups, range| {
            store.register_timers::<N>(id, name, groups, range)
        })?;
        Ok(TimerQueue::new(id, self.owner))
    }

    /// Refuses a queue another backend registered.
    #[inline]
    fn check_queue<N>(&self, queue: &TimerQueue<N>) -> Result<(), StateError> {
        if queue.owner == self.owner {
            return Ok(());
        }
        Err(self.foreign_queue())
    }

    #[cold]
    fn foreign_queue(&self) -> StateError {
        StateError::ForeignHandle {
            what: "timer queue".into(),
            operator: self.operator.clone(),
        }
    }

    /// Registers a timer at the current key: `on_timer` is called for it
    /// with `namespace` once `domain`'s time reaches `timestamp`. A timer
    /// is unique per (key, namespace, timestamp) in its domain: setting it
    /// again is a no-op, so a function may set one per record.
    #[inline]
    pub fn register_timer<N: Namespace>(
        &mut self,
        queue: &TimerQueue<N>,
        domain: TimeDomain,
        timestamp: i64,
        namespace: N,
    ) -> Result<(), StateError> {
        self.check_queue(queue)?;
        let (store, at) = self.store_at(queue.id)?;
        store.timer_add(at, queue.id, domain, timestamp, namespace)
    }

    /// Deletes the current key's timer `(namespace, timestamp)` in
    /// `domain`, so it does not fire; a no-op if there is none.
    pub fn delete_timer<N: Namespace>(
        &mut self,
        queue: &TimerQueue<N>,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        self.check_queue(queue)?;
        let (store, at) = self.store_at(queue.id)?;
        store.timer_delete(at, queue.id, domain, timestamp, namespace)
    }

    /// The earliest timestamp among the timers of `domain` in every key
    /// group of this subtask (`None`: none pending): what a watermark or a
    /// processing-time tick compares with, from memory on both backends.
    /// `None` also for a queue another backend registered.
    #[inline]
    pub fn next_timer<N: Namespace>(
        &self,
        queue: &TimerQueue<N>,
        domain: TimeDomain,
    ) -> Option<i64> {
        if queue.owner != self.owner {
            return None;
        }
        self.store.timer_next::<N>(queue.id, domain)
    }

    /// Removes and returns the first pending timer of `domain` in firing
    /// order — by timestamp, key group, key bytes, namespace bytes, the same
    /// on every backend — if its timestamp is at most `up_to`; `None` when
    /// no timer is due. The runtime calls it once per timer it fires
    /// (making the timer's key current before `on_timer`), so timers that
    /// `on_timer` registers or deletes are seen by the next call, and it
    /// may stop between two calls to serve a barrier. The current key is
    /// left as it was.
    pub fn poll_timer<N: Namespace>(
        &mut self,
        queue: &TimerQueue<N>,
        domain: TimeDomain,
        up_to: i64,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        self.check_queue(queue)?;
        self.store
            .timer_poll::<N>(queue.id, domain, up_to, self.range.start)
    }

    /// What snapshots record about every state in the store: the
    /// registered ones, then those the store holds unregistered.
    fn state_metas(&self) -> Vec<StateMeta> {
        let mut metas: Vec<_> = self
            .registrations
            .iter()
            .map(|r| StateMeta {
                name: r.name.clone(),
                kind: StateMeta::code_of(r.kind, r.ttl),
                value_type: r.type_name.to_string(),
                serializer: Some(r.serializer.clone()),
            })
            .collect();
        metas.extend(self.store.carried_states());
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
        self.store
            .query(idx as StateId, key, key_group, offset, format, &what)
    }

    /// The registration index of the state queryable as `queryable_name`.
    fn queryable_index(&self, queryable_name: &str) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.queryable.as_deref() == Some(queryable_name))
    }

    /// A view of the state queryable as `queryable_name` that queries can
    /// read on their own thread, at most `max_staleness` old (see
    /// [`crate::query_view`]); the same view on every call. `None` on the
    /// RocksDB backend (its reads go through the task) or for a name that
    /// is not queryable here.
    pub fn query_view(
        &mut self,
        queryable_name: &str,
        max_staleness: Duration,
    ) -> Option<QueryView> {
        let idx = self.queryable_index(queryable_name)?;
        let view = self.store.start_query_view(
            idx as StateId,
            self.range.start,
            max_staleness,
            self.views_wanted.clone(),
        )?;
        self.views = true;
        Some(view)
    }

    /// Publishes the query views that are due, if their readers asked
    /// since the last publish: between two batches, on the task thread.
    /// Without readers this is one relaxed load, and now and then a look
    /// for views nobody reads any more, whose maps are then freed.
    #[inline]
    pub fn publish_query_views(&mut self) {
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
        if !self.store.publish_query_views(Instant::now()) {
            // Not due yet: look again after the next batch.
            self.views_wanted.store(true, Ordering::Relaxed);
        }
    }

    #[cold]
    fn retire_query_views(&mut self) {
        self.store.retire_query_views(Instant::now());
    }

    /// The registration index of state `name` (not a timer queue, whose
    /// entries are timers, not keys).
    /// The name of registered state `id`.
    pub(crate) fn state_name(&self, id: StateId) -> Option<&str> {
        self.registrations.get(id as usize).map(|r| r.name.as_str())
    }

    fn state_index(&self, name: &str) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.name == name && r.kind != StateKind::Timers)
    }

    /// Names and kinds of the registered states and timer queues, in
    /// registration order.
    pub fn registered_states(&self) -> impl Iterator<Item = (&str, StateKind)> {
        self.registrations.iter().map(|r| (r.name.as_str(), r.kind))
    }

    /// Every key that holds a value in state `name`, with its key group
    /// (Flink's `applyToKeyedState` visits these). `None` for an unknown
    /// name.
    pub fn keys(&mut self, name: &str) -> Option<Vec<(K, KeyGroup)>> {
        let idx = self.state_index(name)?;
        Some(
            self.store
                .keys(idx as StateId, self.range)
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot list the keys of state '{name}': {e}");
                    Vec::new()
                }),
        )
    }

    /// Number of keys that hold a value in state `name`, per key group of this
    /// subtask's range (in range order). `None` for an unknown name.
    pub fn keys_per_key_group(&mut self, name: &str) -> Option<Vec<usize>> {
        let idx = self.state_index(name)?;
        Some(
            self.store
                .key_counts(idx as StateId, self.range)
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot count the keys of state '{name}': {e}");
                    vec![0; self.range.len()]
                }),
        )
    }

    /// The synchronous part of a snapshot: the store freezes a view of
    /// every state (copy-on-write on the heap: no entry is copied here).
    /// Processing may continue as soon as this returns.
    pub fn snapshot(&mut self) -> KeyedStateSnapshot {
        let metas = self.state_metas();
        let frozen = self.store.freeze(self.range);
        KeyedStateSnapshot::canonical(
            self.range,
            self.max_parallelism,
            metas,
            frozen,
            &self.staged,
            self.snapshot_size_hint.clone(),
        )
    }

    /// The snapshot for checkpoint `checkpoint_id`: native and incremental
    /// on RocksDB with `state.backend.incremental` (building on checkpoint
    /// `base`, the latest completed one when this was triggered), else the
    /// canonical [`snapshot`](Self::snapshot). Savepoints always use the
    /// canonical one.
    pub fn snapshot_for_checkpoint(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> KeyedStateSnapshot {
        // Staged (canonically restored, unregistered) state is not in the
        // store's files: only a canonical snapshot carries it.
        if self.staged.is_empty() {
            match self.store.snapshot_native(checkpoint_id, base) {
                Some(Ok(native)) => {
                    return KeyedStateSnapshot::native_files(
                        self.range,
                        self.max_parallelism,
                        self.state_metas(),
                        native,
                        self.snapshot_size_hint.clone(),
                    );
                }
                Some(Err(e)) => tracing::warn!(
                    checkpoint = checkpoint_id,
                    "native snapshot failed, taking a canonical one: {e}"
                ),
                None => {}
            }
        }
        self.snapshot()
    }

    /// Refuses a restore once states are registered.
    fn check_restorable(&self) -> Result<(), StateError> {
        if self.registrations.is_empty() {
            return Ok(());
        }
        Err(StateError::RestoreAfterRegistration {
            operator: self.operator.clone(),
        })
    }

    /// Loads snapshot payloads written by any number of subtasks at any
    /// parallelism, keeping the key groups this subtask owns. Must run before
    /// the function registers its states; each state's entries are decoded
    /// when it is registered (with its type).
    pub fn restore<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StateError> {
        self.check_restorable()?;
        for bytes in files {
            self.staged
                .add_file(bytes, self.range, self.max_parallelism)?;
        }
        Ok(())
    }

    /// Loads native snapshots (the manifests of checkpoint `checkpoint_id`,
    /// written at any parallelism) before any state is registered. On
    /// RocksDB the database is rebuilt from their files; `reusable` says the
    /// checkpoint belongs to this job (a failover), so its shared files may
    /// be referenced by the next checkpoints. On the heap the entries of
    /// this subtask's key groups are read out of the files into the same
    /// staging as a canonical restore (needs the `rocksdb` feature).
    pub fn restore_native<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a [u8]>,
        checkpoint_id: u64,
        reusable: bool,
        fetch: &NativeFetch<'_>,
    ) -> Result<(), StateError> {
        let mut manifests = Vec::new();
        for bytes in files {
            let m = NativeKeyedStateFile::decode(bytes)?;
            if m.max_parallelism != self.max_parallelism {
                return Err(StateError::MaxParallelismMismatch {
                    snapshot: m.max_parallelism,
                    operator: self.max_parallelism,
                });
            }
            manifests.push(m);
        }
        if manifests.is_empty() {
            return Ok(());
        }
        self.check_restorable()?;
        let converted = self.store.restore_native(
            &manifests,
            self.range,
            checkpoint_id,
            reusable,
            fetch,
            &self.operator,
        )?;
        for (meta, kg, bytes) in converted {
            self.staged.stage(&meta, kg, bytes)?;
        }
        Ok(())
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
