//! The keyed-state suite (`keyed_state/suite.rs`) on the RocksDB backend:
//! every state kind must behave exactly as on the heap.
#![cfg(feature = "rocksdb")]

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::RocksDb;

include!("keyed_state/suite.rs");
