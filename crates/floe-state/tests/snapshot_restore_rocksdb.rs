//! The snapshot suite (`snapshot_restore/suite.rs`) on the RocksDB backend:
//! its canonical snapshots restore, rescale and fail exactly as the heap's.
#![cfg(feature = "rocksdb")]

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::RocksDb;

include!("snapshot_restore/suite.rs");
