//! State time-to-live (Flink's "State TTL", `StateTtlConfig`).
//!
//! A keyed state descriptor with [`StateTtlConfig`] (see
//! `enable_time_to_live` on every descriptor) makes the state forget
//! values that were not written (or, with [`UpdateType::OnReadAndWrite`],
//! read either) for the configured time. As in Flink:
//!
//! - Time is processing time, read from the backend's clock
//!   ([`crate::KeyedStateBackend::set_ttl_time_provider`]; the system
//!   clock unless the runtime or a test sets another).
//! - The state stores each value with the time it was last written (or
//!   read), a [`TtlValue`]: one per key of a value, reducing or
//!   aggregating state, one per *element* of a list and per *entry* of a
//!   map, which expire one by one. A value stamped at `t` is expired from
//!   `t + ttl` on.
//! - A read never returns an expired value
//!   ([`StateVisibility::NeverReturnExpired`]) or returns it once, if no
//!   cleanup removed it first
//!   ([`StateVisibility::ReturnExpiredIfNotCleanedUp`]); either way the read
//!   removes it.
//! - Expired values are also removed without reads: from full snapshots
//!   ([`StateTtlConfigBuilder::cleanup_full_snapshot`]), a few entries at a
//!   time on the heap backend
//!   ([`StateTtlConfigBuilder::cleanup_incrementally`]), and by RocksDB's
//!   compactions ([`StateTtlConfigBuilder::cleanup_in_rocksdb_compact_filter`]).
//!   The last two are on by default ("cleanup in background").
//! - A TTL state's snapshots keep the timestamps (the state kind code gets
//!   [`TTL_KIND_FLAG`]), and enabling or disabling TTL on an existing state
//!   is refused on restore, since the stored values change shape (Flink's
//!   `StateMigrationException` for a TTL change).
//!
//! The encoding of a [`TtlValue`] is the timestamp as 8 big-endian bytes,
//! then the value: a fixed-size prefix, so that RocksDB's compaction filter
//! reads the timestamp without knowing the value's type (see
//! `floe_rocksdb::ttl`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::types::{MapKey, StateValue};

/// In a snapshot's state kind code: the state has a TTL, its values are
/// [`TtlValue`]s. Kind codes are small, so old snapshots never set it.
pub const TTL_KIND_FLAG: u8 = 0x80;

/// When a value's timestamp is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateType {
    /// When the value is created or written (Flink's default).
    OnCreateAndWrite,
    /// Also when it is read.
    OnReadAndWrite,
}

/// Whether a read may return a value that expired but was not removed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateVisibility {
    /// Expired values are never returned (Flink's default).
    NeverReturnExpired,
    /// An expired value still stored is returned (once: the read removes it).
    ReturnExpiredIfNotCleanedUp,
}

/// Which time TTL is measured in. Only processing time, as in Flink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlTimeCharacteristic {
    /// The backend's processing-time clock.
    ProcessingTime,
}

/// Incremental cleanup on the heap backend (Flink's
/// `IncrementalCleanupStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IncrementalCleanup {
    /// Entries checked per state access (and per record, see below).
    pub cleanup_size: u32,
    /// Whether every record processed also checks `cleanup_size` entries,
    /// besides every access of the state.
    pub run_for_every_record: bool,
}

/// How expired values are removed without being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CleanupStrategies {
    /// Expired values are left out of full (canonical) snapshots.
    pub full_snapshot: bool,
    /// Heap backend: entries checked a few at a time.
    pub incremental: Option<IncrementalCleanup>,
    /// RocksDB backend: compactions drop expired entries; the value is how
    /// many entries a compaction filters between two reads of the clock.
    pub rocksdb_compaction_filter: Option<u32>,
}

/// A state's time to live and how it behaves (Flink's `StateTtlConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateTtlConfig {
    ttl: Duration,
    update_type: UpdateType,
    visibility: StateVisibility,
    time_characteristic: TtlTimeCharacteristic,
    cleanup: CleanupStrategies,
}

impl StateTtlConfig {
    /// Flink's defaults for background cleanup: 5 entries per access on the
    /// heap, the clock read every 1000 entries in RocksDB compactions.
    pub const DEFAULT_INCREMENTAL_CLEANUP_SIZE: u32 = 5;
    /// See [`DEFAULT_INCREMENTAL_CLEANUP_SIZE`](Self::DEFAULT_INCREMENTAL_CLEANUP_SIZE).
    pub const DEFAULT_QUERY_TIME_AFTER_ENTRIES: u32 = 1000;

    /// A builder for a time to live of `ttl` (at least a millisecond), with
    /// Flink's defaults: timestamps refreshed on create and write, expired
    /// values never returned, cleanup in background.
    pub fn new_builder(ttl: Duration) -> StateTtlConfigBuilder {
        StateTtlConfigBuilder {
            config: StateTtlConfig {
                ttl,
                update_type: UpdateType::OnCreateAndWrite,
                visibility: StateVisibility::NeverReturnExpired,
                time_characteristic: TtlTimeCharacteristic::ProcessingTime,
                cleanup: CleanupStrategies {
                    full_snapshot: false,
                    incremental: None,
                    rocksdb_compaction_filter: None,
                },
            },
            background: true,
        }
    }

    /// A time to live of `ttl` with every default.
    pub fn new(ttl: Duration) -> Self {
        Self::new_builder(ttl).build()
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When timestamps are refreshed.
    pub fn update_type(&self) -> UpdateType {
        self.update_type
    }

    /// Whether reads may see expired values.
    pub fn state_visibility(&self) -> StateVisibility {
        self.visibility
    }

    /// The time TTL is measured in.
    pub fn time_characteristic(&self) -> TtlTimeCharacteristic {
        self.time_characteristic
    }

    /// How expired values are removed without reads.
    pub fn cleanup_strategies(&self) -> CleanupStrategies {
        self.cleanup
    }

    /// The time to live in whole milliseconds, the unit of the clock.
    pub(crate) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Builds a [`StateTtlConfig`].
#[derive(Debug, Clone)]
pub struct StateTtlConfigBuilder {
    config: StateTtlConfig,
    /// Whether the default background cleanup applies where no strategy
    /// was chosen (Flink's `cleanupInBackground`, on by default).
    background: bool,
}

impl StateTtlConfigBuilder {
    /// When timestamps are refreshed.
    pub fn update_type(mut self, update_type: UpdateType) -> Self {
        self.config.update_type = update_type;
        self
    }

    /// Refresh on create and write (the default).
    pub fn update_ttl_on_create_and_write(self) -> Self {
        self.update_type(UpdateType::OnCreateAndWrite)
    }

    /// Refresh on reads too.
    pub fn update_ttl_on_read_and_write(self) -> Self {
        self.update_type(UpdateType::OnReadAndWrite)
    }

    /// Whether reads may see expired values.
    pub fn state_visibility(mut self, visibility: StateVisibility) -> Self {
        self.config.visibility = visibility;
        self
    }

    /// Never return expired values (the default).
    pub fn never_return_expired(self) -> Self {
        self.state_visibility(StateVisibility::NeverReturnExpired)
    }

    /// Return an expired value a read finds before any cleanup did.
    pub fn return_expired_if_not_cleaned_up(self) -> Self {
        self.state_visibility(StateVisibility::ReturnExpiredIfNotCleanedUp)
    }

    /// The time TTL is measured in (only processing time exists).
    pub fn ttl_time_characteristic(mut self, characteristic: TtlTimeCharacteristic) -> Self {
        self.config.time_characteristic = characteristic;
        self
    }

    /// Sets the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Leaves expired values out of full snapshots (checkpoints that are
    /// not RocksDB-incremental, and savepoints): they are gone after the
    /// next restore, and the snapshot is smaller. The live state keeps
    /// them until something else removes them.
    pub fn cleanup_full_snapshot(mut self) -> Self {
        self.config.cleanup.full_snapshot = true;
        self
    }

    /// Heap backend: every access of the state checks `cleanup_size`
    /// entries of it (going round all its keys over time) and removes the
    /// expired ones; with `run_for_every_record`, every record the operator
    /// processes does too. Costs those checks on every access; a state
    /// that is not accessed is not cleaned. Ignored by RocksDB.
    pub fn cleanup_incrementally(mut self, cleanup_size: u32, run_for_every_record: bool) -> Self {
        self.config.cleanup.incremental = Some(IncrementalCleanup {
            cleanup_size,
            run_for_every_record,
        });
        self
    }

    /// RocksDB backend: compactions drop expired entries (and list
    /// elements) of the state, reading the clock once per
    /// `query_time_after_entries` entries. Ignored by the heap backend.
    pub fn cleanup_in_rocksdb_compact_filter(mut self, query_time_after_entries: u32) -> Self {
        self.config.cleanup.rocksdb_compaction_filter = Some(query_time_after_entries);
        self
    }

    /// No cleanup beyond what is configured explicitly (by default,
    /// incremental cleanup and the compaction filter are on).
    pub fn disable_cleanup_in_background(mut self) -> Self {
        self.background = false;
        self
    }

    /// The configuration.
    pub fn build(mut self) -> StateTtlConfig {
        if self.background {
            let cleanup = &mut self.config.cleanup;
            cleanup.incremental.get_or_insert(IncrementalCleanup {
                cleanup_size: StateTtlConfig::DEFAULT_INCREMENTAL_CLEANUP_SIZE,
                run_for_every_record: false,
            });
            cleanup
                .rocksdb_compaction_filter
                .get_or_insert(StateTtlConfig::DEFAULT_QUERY_TIME_AFTER_ENTRIES);
        }
        self.config
    }
}

/// The clock TTL reads: processing time in milliseconds.
pub type TtlTimeProvider = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in milliseconds since the epoch.
pub(crate) fn system_time_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The backend's clock as its background users (RocksDB compactions,
/// snapshots) see it: replaced in place when the runtime sets another, so
/// that a state registered before still reads the new one.
#[derive(Clone)]
pub(crate) struct SharedClock(Arc<RwLock<TtlTimeProvider>>);

impl SharedClock {
    pub(crate) fn new(provider: TtlTimeProvider) -> Self {
        SharedClock(Arc::new(RwLock::new(provider)))
    }

    pub(crate) fn set(&self, provider: TtlTimeProvider) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = provider;
    }

    /// A provider that reads whichever clock is set when it is called.
    pub(crate) fn provider(&self) -> TtlTimeProvider {
        let cell = self.0.clone();
        Arc::new(move || (cell.read().unwrap_or_else(|p| p.into_inner()))())
    }
}

/// A stored value with the time it was last written (or read): what a TTL
/// state keeps per value, list element or map entry (Flink's `TtlValue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlValue<T> {
    /// The timestamp, big-endian, so that it is a fixed-size prefix of the
    /// encoding (`floe_rocksdb::ttl` reads it there).
    stamp: [u8; 8],
    value: T,
}

impl<T> TtlValue<T> {
    /// `value` stamped at `timestamp`.
    #[inline]
    pub fn new(value: T, timestamp: i64) -> Self {
        TtlValue {
            stamp: timestamp.to_be_bytes(),
            value,
        }
    }

    /// When the value was last written (or read).
    #[inline]
    pub fn timestamp(&self) -> i64 {
        i64::from_be_bytes(self.stamp)
    }

    /// The user value.
    #[inline]
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The user value, owned.
    #[inline]
    pub fn into_value(self) -> T {
        self.value
    }

    #[inline]
    pub(crate) fn value_mut(&mut self) -> &mut T {
        &mut self.value
    }

    #[inline]
    pub(crate) fn set_timestamp(&mut self, timestamp: i64) {
        self.stamp = timestamp.to_be_bytes();
    }
}

/// Flink's expiry rule (`TtlUtils.expired`): stamped at `timestamp`, a
/// value is expired from `timestamp + ttl` on.
#[inline]
pub(crate) fn expired(timestamp: i64, ttl_ms: i64, now: i64) -> bool {
    timestamp.saturating_add(ttl_ms) <= now
}

/// A TTL state's behaviour as its handle applies it on every access.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    pub(crate) ttl_ms: i64,
    pub(crate) update_on_read: bool,
    pub(crate) return_expired: bool,
    /// Entries checked per access (0: no incremental cleanup).
    pub(crate) cleanup_size: u32,
}

impl Ttl {
    pub(crate) fn of(config: &StateTtlConfig) -> Self {
        Ttl {
            ttl_ms: config.ttl_ms(),
            update_on_read: config.update_type == UpdateType::OnReadAndWrite,
            return_expired: config.visibility == StateVisibility::ReturnExpiredIfNotCleanedUp,
            cleanup_size: config.cleanup.incremental.map_or(0, |c| c.cleanup_size),
        }
    }

    #[inline]
    pub(crate) fn expired<T>(&self, v: &TtlValue<T>, now: i64) -> bool {
        expired(v.timestamp(), self.ttl_ms, now)
    }
}

/// What cleanup does with one key's content.
pub(crate) enum Purged<P> {
    /// Nothing in it expired.
    Keep,
    /// Everything in it expired.
    Drop,
    /// Some list elements or map entries expired: the rest.
    Trim(P),
}

/// The per-key content of a TTL state (a [`TtlValue`], a list of them, a
/// map to them): how cleanup finds what expired, without the handle.
pub(crate) trait TtlContent: Sized + 'static {
    /// What is left of `self` at `now`.
    fn purge(&self, ttl_ms: i64, now: i64) -> Purged<Self>;

    /// For a list: the encoded length of its first element in `bytes`.
    fn element_len(_bytes: &[u8]) -> Option<usize> {
        None
    }
}

impl<T: StateValue> TtlContent for TtlValue<T> {
    fn purge(&self, ttl_ms: i64, now: i64) -> Purged<Self> {
        if expired(self.timestamp(), ttl_ms, now) {
            Purged::Drop
        } else {
            Purged::Keep
        }
    }
}

impl<T: StateValue> TtlContent for Vec<TtlValue<T>> {
    fn purge(&self, ttl_ms: i64, now: i64) -> Purged<Self> {
        let live = |v: &&TtlValue<T>| !expired(v.timestamp(), ttl_ms, now);
        let n = self.iter().filter(live).count();
        match n {
            0 => Purged::Drop,
            n if n == self.len() => Purged::Keep,
            _ => Purged::Trim(self.iter().filter(live).cloned().collect()),
        }
    }

    fn element_len(bytes: &[u8]) -> Option<usize> {
        let (_, rest) = postcard::take_from_bytes::<TtlValue<T>>(bytes).ok()?;
        Some(bytes.len() - rest.len())
    }
}

impl<UK: MapKey, UV: StateValue> TtlContent for FxHashMap<UK, TtlValue<UV>> {
    fn purge(&self, ttl_ms: i64, now: i64) -> Purged<Self> {
        let live = |(_, v): &(&UK, &TtlValue<UV>)| !expired(v.timestamp(), ttl_ms, now);
        let n = self.iter().filter(live).count();
        match n {
            0 => Purged::Drop,
            n if n == self.len() => Purged::Keep,
            _ => Purged::Trim(
                self.iter()
                    .filter(live)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }
}

/// What a store needs of a TTL state's configuration and content type.
pub(crate) struct TtlSpec<P> {
    pub(crate) ttl_ms: i64,
    pub(crate) cleanup: CleanupStrategies,
    pub(crate) purge: fn(&P, i64, i64) -> Purged<P>,
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) element_len: fn(&[u8]) -> Option<usize>,
    /// The backend's clock, for work off the record path.
    pub(crate) clock: TtlTimeProvider,
}

impl<P: TtlContent> TtlSpec<P> {
    pub(crate) fn of(config: &StateTtlConfig, clock: TtlTimeProvider) -> Self {
        TtlSpec {
            ttl_ms: config.ttl_ms(),
            cleanup: config.cleanup,
            purge: P::purge,
            element_len: P::element_len,
            clock,
        }
    }
}

/// Full-snapshot cleanup of one state: its purge function and the time the
/// snapshot was taken at.
pub(crate) struct SnapshotPurge<P> {
    pub(crate) purge: fn(&P, i64, i64) -> Purged<P>,
    pub(crate) ttl_ms: i64,
    pub(crate) now: i64,
}

impl<P> Clone for SnapshotPurge<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for SnapshotPurge<P> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_value_encoding_is_pinned() {
        // The timestamp first, 8 bytes big-endian, then the value.
        let bytes = postcard::to_allocvec(&TtlValue::new(5u32, 0x0102)).unwrap();
        assert_eq!(bytes, [0, 0, 0, 0, 0, 0, 1, 2, 5]);
        let back: TtlValue<u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((back.timestamp(), *back.value()), (0x0102, 5));
        assert_eq!(
            <Vec<TtlValue<String>> as TtlContent>::element_len(
                &postcard::to_allocvec(&TtlValue::new("ab".to_string(), 1)).unwrap()
            ),
            Some(11)
        );
    }

    #[test]
    fn defaults_are_flinks() {
        let c = StateTtlConfig::new(Duration::from_secs(1));
        assert_eq!(c.update_type(), UpdateType::OnCreateAndWrite);
        assert_eq!(c.state_visibility(), StateVisibility::NeverReturnExpired);
        assert_eq!(
            c.cleanup_strategies(),
            CleanupStrategies {
                full_snapshot: false,
                incremental: Some(IncrementalCleanup {
                    cleanup_size: 5,
                    run_for_every_record: false
                }),
                rocksdb_compaction_filter: Some(1000),
            }
        );
        let c = StateTtlConfig::new_builder(Duration::from_millis(10))
            .disable_cleanup_in_background()
            .cleanup_full_snapshot()
            .build();
        assert_eq!(
            c.cleanup_strategies(),
            CleanupStrategies {
                full_snapshot: true,
                incremental: None,
                rocksdb_compaction_filter: None,
            }
        );
        assert!(expired(0, 10, 10) && !expired(0, 10, 9));
    }
}
