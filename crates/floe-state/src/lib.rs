//! Managed state for Floe operators.
//!
//! Keyed state is partitioned into *key groups* exactly as in Flink, so that a
//! snapshot can later be split and merged by key-group range when a job is
//! rescaled. Users declare state with a descriptor (name + type) and get back a
//! small `Send` handle; every access goes through the keyed context of the
//! record being processed, which carries the current key and its key group.
//!
//! - [`key_group`]: key → key group → subtask, Flink's formulas.
//! - [`codec`]: the stable binary encoding (postcard) used for key hashing and,
//!   later, snapshots.
//! - [`descriptor`]: what a function declares.
//! - [`backend`]: [`KeyedStateBackend`], the per-subtask store, and the heap
//!   implementation behind it.
//! - [`handles`]: `ValueState`, `ListState`, `MapState`, `ReducingState`,
//!   `AggregatingState`.
//! - [`query`]: answers to queryable-state lookups.
//! - `rocks` (feature `rocksdb`): the RocksDB store behind the backend.
//! - [`operator`]: operator state (list, union list, broadcast) and raw
//!   state, redistributed by mode when the parallelism changes.

pub mod backend;
pub mod codec;
pub mod descriptor;
pub mod error;
pub mod handles;
pub mod key_group;
pub mod native;
pub mod operator;
pub mod query;
pub mod query_view;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "rocksdb")]
mod rocks_cache;
pub mod snapshot;
mod table_alloc;

pub use backend::{
    KeyedStateAccess, KeyedStateBackend, RocksDbConfig, StateBackendKind, StateBackendSettings,
};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
pub use error::StateError;
pub use handles::{AggregatingState, ListState, MapState, ReducingState, ValueState};
pub use key_group::{KeyGroupRange, KeyGroupRouter, key_group_for_key, key_hash};
pub use operator::{
    BroadcastState, OperatorListState, OperatorStateAccess, OperatorStateMode, OperatorStateRead,
    OperatorStateStore,
};
pub use query::{QueryFormat, QueryValue, QueryableStateInfo, decode_query_key};
pub use query_view::{QueryView, ViewLookup};
pub use snapshot::{KeyedStateFile, KeyedStateSnapshot, StateMeta};
pub use table_alloc::set_heap_huge_pages;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a key of a keyed stream must be: hashable for the heap backend,
/// serializable for stable key-group assignment and snapshots.
pub trait Key:
    std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T: std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Key
    for T
{
}

/// What a state value must be: cloneable (the heap backend hands out copies)
/// and serializable (snapshots and the RocksDB backend need bytes).
pub trait StateValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateValue for T {}
