//! Floe's byte-level RocksDB storage layer for keyed state.
//!
//! This crate is what a RocksDB variant of `floe_state`'s keyed backend
//! (like Flink's `EmbeddedRocksDBStateBackend`) calls: it knows nothing of
//! user types. Keys, values, list elements and map user keys arrive already
//! encoded with postcard; this layer only arranges and moves bytes.
//!
//! * [`key`] — the RocksDB key layout (`key group | varint length | key |
//!   [user key]`), the reusable [`KeyPrefix`] and key-group bounds.
//! * [`resources`] — [`RocksDbResources`], the one memory budget (block
//!   cache + write buffer manager charged to it) shared by every database of
//!   the process.
//! * [`KeyedDb`] — one database per subtask, one column family per state:
//!   point reads and writes, list appends through a merge operator, map
//!   entries under a per-key prefix, key-group scans, checkpoints and
//!   restore with rescaling.
//! * [`ttl`] — State TTL on bytes: the timestamp prefix of TTL values
//!   and the compaction filter that drops expired entries.
//! * [`canonical`] — per state and key group, the exact bytes the heap
//!   backend writes into a savepoint, produced from a checkpoint.

pub mod canonical;
pub mod checkpoint;
mod db;
pub mod error;
pub mod key;
pub mod list;
mod options_file;
pub mod resources;
pub mod ttl;

pub use canonical::{CheckpointReader, StateLayout};
pub use checkpoint::{CheckpointFile, CheckpointFileKind, CheckpointFiles};
pub use db::{Entry, EntryIter, KeyedDb, ListValue, MapEntry, MapIter, StateId};
pub use error::RocksDbError;
pub use key::{KeyGroupRange, KeyPrefix, MAX_KEY_GROUP, key_group_range_bounds};
pub use resources::{RocksDbResources, WritePattern};
pub use ttl::{TtlClock, TtlCompaction, TtlDecision, TtlFilter};

/// RocksDB's pinned value handle, returned by point reads (re-exported so
/// callers need not depend on `rocksdb` directly).
pub use rocksdb::DBPinnableSlice;
