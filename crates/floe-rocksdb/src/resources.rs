//! The process-wide memory budget shared by every RocksDB instance, and the
//! options every instance and column family is opened with.
//!
//! # Memory split
//!
//! As with Flink's managed memory for RocksDB, one budget `B` caps *all*
//! RocksDB memory of the process, however many subtasks and states exist:
//!
//! * one LRU block cache of capacity `B` holds data, index and filter blocks
//!   of every database;
//! * one [`WriteBufferManager`] with a limit of `B / 2` is **charged to that
//!   cache**: memtable memory is reserved in the cache as dummy entries, so
//!   memtables and blocks compete for the same `B` bytes, and when the
//!   memtables of all databases together reach about `B / 2` RocksDB
//!   flushes the largest ones. Blocks therefore get at least `B / 2`.
//! * index and filter blocks live in the cache (`cache_index_and_filter_blocks`)
//!   with high priority, so they are charged to the budget rather than
//!   growing outside it with the number of SST files, and are the last to be
//!   evicted; those of L0 files are pinned. (The C API cannot change the
//!   LRU's high-priority pool ratio; RocksDB's default is 0.5 of the cache.)
//! * each column family gets a small write buffer derived from the budget
//!   (`clamp(B / 16, 1 MiB, 64 MiB)`, two of them at most), so that a handful
//!   of states can fill a memtable before the shared manager intervenes, but
//!   dozens of states do not each reserve 64 MiB as RocksDB's defaults would.
//!
//! The cache is not strict (RocksDB's default): under pressure a pinned or
//! in-use block may briefly exceed the capacity instead of failing reads.

use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType, LogLevel, Options,
    ReadOptions, WriteBufferManager, WriteOptions,
};

use crate::error::RocksDbError;
use crate::list::{LIST_MERGE_OPERATOR_NAME, list_merge};

/// The smallest accepted budget: below this the write buffers would be
/// smaller than RocksDB's arena blocks and every write would flush.
pub const MIN_BUDGET_BYTES: usize = 8 << 20;

/// Smallest per-column-family write buffer.
const MIN_CF_WRITE_BUFFER: usize = 1 << 20;
/// Largest per-column-family write buffer (RocksDB's default).
const MAX_CF_WRITE_BUFFER: usize = 64 << 20;

struct Inner {
    budget: usize,
    cache: Cache,
    write_buffer_manager: WriteBufferManager,
    write_buffer_limit: usize,
    cf_write_buffer_size: usize,
}

/// The memory shared by all RocksDB instances of a process (one block cache,
/// one write buffer manager charged to it; see the module docs for the
/// split). Cheap to clone: clones share the same cache and manager, and
/// databases keep them alive while open.
#[derive(Clone)]
pub struct RocksDbResources {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RocksDbResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbResources")
            .field("budget", &self.inner.budget)
            .field("write_buffer_limit", &self.inner.write_buffer_limit)
            .field("cf_write_buffer_size", &self.inner.cf_write_buffer_size)
            .field("cache_usage", &self.cache_usage())
            .finish()
    }
}

impl RocksDbResources {
    /// Creates the shared cache and write buffer manager for a budget of
    /// `budget_bytes` (at least [`MIN_BUDGET_BYTES`]).
    pub fn new(budget_bytes: usize) -> Result<Self, RocksDbError> {
        if budget_bytes < MIN_BUDGET_BYTES {
            return Err(RocksDbError::invalid(
                "RocksDbResources::new",
                format!(
                    "budget of {budget_bytes} bytes is below the minimum of {MIN_BUDGET_BYTES}"
                ),
            ));
        }
        let cache = Cache::new_lru_cache(budget_bytes);
        let write_buffer_limit = budget_bytes / 2;
        // allow_stall = false: writers are never blocked by the manager; it
        // triggers flushes instead (a stalled task thread would also stall
        // checkpoint barriers).
        let write_buffer_manager = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_limit,
            false,
            cache.clone(),
        );
        let cf_write_buffer_size =
            (budget_bytes / 16).clamp(MIN_CF_WRITE_BUFFER, MAX_CF_WRITE_BUFFER);
        Ok(RocksDbResources {
            inner: Arc::new(Inner {
                budget: budget_bytes,
                cache,
                write_buffer_manager,
                write_buffer_limit,
                cf_write_buffer_size,
            }),
        })
    }

    /// The total budget in bytes (the block cache's capacity).
    pub fn budget(&self) -> usize {
        self.inner.budget
    }

    /// The memtable limit across all databases (half the budget).
    pub fn write_buffer_limit(&self) -> usize {
        self.inner.write_buffer_limit
    }

    /// The write buffer size of each column family.
    pub fn cf_write_buffer_size(&self) -> usize {
        self.inner.cf_write_buffer_size
    }

    /// Bytes currently charged to the shared cache (blocks plus memtable
    /// reservations), for metrics.
    pub fn cache_usage(&self) -> usize {
        self.inner.cache.get_usage()
    }

    /// Bytes of the shared cache held by pinned entries, for metrics.
    pub fn cache_pinned_usage(&self) -> usize {
        self.inner.cache.get_pinned_usage()
    }

    /// Memtable bytes of all databases, as tracked by the shared manager.
    pub fn write_buffer_usage(&self) -> usize {
        self.inner.write_buffer_manager.get_usage()
    }

    /// True when both handles share one cache and manager.
    pub fn same_as(&self, other: &RocksDbResources) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Database-wide options (also carrying the column family defaults):
    /// the shared manager, no periodic stats, a quiet info log.
    pub(crate) fn db_options(&self) -> Options {
        let mut opts = self.cf_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_write_buffer_manager(&self.inner.write_buffer_manager);
        opts.set_stats_dump_period_sec(0);
        opts.set_stats_persist_period_sec(0);
        opts.set_log_level(LogLevel::Warn);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts.set_max_background_jobs(2);
        // One writer per database (the task thread): the memtable's
        // single-writer insert, which needs no atomics and reuses the last
        // insert's position for a sorted batch.
        opts.set_allow_concurrent_memtable_write(false);
        opts
    }

    /// Options of a state's column family written as `pattern` says.
    ///
    /// A state written through, update by update (map and list states, a
    /// value state without a write-back cache), updates a key's entry in
    /// the memtable in place when the new value is no larger: a key updated
    /// again and again (a session window's accumulator) then holds one
    /// entry instead of one per update, the memtable stays small and
    /// flushes less (Nexmark q11 on RocksDB: 478–481 k → 573–578 k events/s,
    /// peak RSS 114 → 95 MB). A state written back by the write-back cache
    /// reaches RocksDB once per key and flush, in key order, so there the
    /// in-place search (one more skiplist seek per put) buys nothing and
    /// cost a third of the keyed thread when flushing 10 M new keys.
    /// In-place updates need single-threaded memtable writes, which
    /// [`Self::db_options`] sets; RocksDB's caveat (no consistent
    /// point-in-time reads under concurrent writes) does not apply: a
    /// database has one writer, and checkpoints read files, not the
    /// memtable.
    pub(crate) fn cf_options_for(&self, pattern: WritePattern) -> Options {
        let mut opts = self.cf_options();
        opts.set_inplace_update_support(pattern.updates_in_place());
        opts
    }

    /// Options of every state's column family: the shared cache, bloom
    /// filters, budget-derived write buffers and the list merge operator.
    ///
    /// The merge operator is set on every column family, not only list
    /// states: a column family is identified by name alone when a database
    /// is reopened or restored, and RocksDB refuses to read merge operands
    /// without an operator.
    pub(crate) fn cf_options(&self) -> Options {
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&self.inner.cache);
        // Full (not block-based) bloom filters, 10 bits/key (~1% false
        // positives): point lookups of absent keys (first access of a key,
        // map_get misses) skip SST files without touching data blocks.
        block.set_bloom_filter(10.0, false);
        block.set_whole_key_filtering(true);
        // Index/filter blocks are charged to the budget and kept hot.
        block.set_cache_index_and_filter_blocks(true);
        block.set_cache_index_and_filter_blocks_with_high_priority(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned index and filters: with state larger than the budget,
        // a full filter of a large SST file (10 bits per key, megabytes)
        // would be evicted and read back — and checksummed — whole on a
        // lookup; partitions are read 4 KB at a time, and only the small
        // top-level index stays pinned (Flink's
        // `state.backend.rocksdb.memory.partitioned-index-filters`).
        block.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        block.set_partition_filters(true);
        block.set_metadata_block_size(4 << 10);
        block.set_pin_top_level_index_and_filter(true);
        block.set_block_size(4 << 10);
        // Binary search + hash index inside data blocks for point lookups.
        block.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        block.set_data_block_hash_ratio(0.75);
        block.set_format_version(6);

        let mut opts = Options::default();
        opts.set_block_based_table_factory(&block);
        opts.set_merge_operator_associative(LIST_MERGE_OPERATOR_NAME, list_merge);
        opts.set_write_buffer_size(self.inner.cf_write_buffer_size);
        opts.set_max_write_buffer_number(2);
        // No in-place memtable updates by default; see
        // `state_cf_options_for` for the states that want them.
        opts.set_inplace_update_support(false);
        opts.set_min_write_buffer_number_to_merge(1);
        opts.set_target_file_size_base((self.inner.cf_write_buffer_size as u64).max(8 << 20));
        // A bloom filter on memtables too: gets of keys not in the memtable
        // skip its skiplist search (no measurable effect in `rmw_bench`,
        // where puts dominate the memtable's cost; cheap, so kept).
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.02);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(DBCompressionType::Lz4);
        opts
    }
}

/// How a state's writes reach its column family, which decides whether
/// the memtable updates a key's entry in place (see
/// [`RocksDbResources`]' `cf_options_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePattern {
    /// Every update is written as it happens (map and list states, value
    /// states without a write-back cache): in-place memtable updates.
    WriteThrough,
    /// Writes come from the write-back cache, once per key and flush, in
    /// key order: no in-place updates.
    WriteBack,
}

impl WritePattern {
    /// Whether the memtable updates a key in place.
    pub fn updates_in_place(self) -> bool {
        self == WritePattern::WriteThrough
    }

    /// The pattern RocksDB recorded for a column family with
    /// `inplace_update_support` set as `in_place`.
    pub(crate) fn from_in_place(in_place: bool) -> Self {
        if in_place {
            WritePattern::WriteThrough
        } else {
            WritePattern::WriteBack
        }
    }
}

/// Write options of every state write: no WAL. Durability comes from
/// checkpoints (which flush memtables first), as in Flink; after a crash the
/// job restores from the last checkpoint, never from a local WAL.
pub(crate) fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

/// Read options of point lookups.
pub(crate) fn point_read_options() -> ReadOptions {
    ReadOptions::default()
}
