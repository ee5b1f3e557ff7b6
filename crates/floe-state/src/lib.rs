//! Managed state for Floe operators.
//!
//! Keyed state is partitioned into *key groups* exactly as in Flink: a
//! restore at another parallelism takes the key groups of its new range from
//! every snapshot file. Users declare state with a descriptor (name + type)
//! and get back a small `Send` handle; every access goes through the keyed
//! context of the record being processed, which carries the current key and
//! its key group.
//!
//! Modules, leaves first (each uses only modules above it; the
//! `module_cycles` test keeps it so):
//! - `types`, `key_bytes`, `config`, `table_alloc`: the bounds on keys and
//!   values, the key-hashing buffer, backend settings, the heap tables'
//!   allocator (huge pages).
//! - [`ttl`]: State TTL's configuration, the timestamped value it stores,
//!   and how cleanup finds what expired.
//! - [`schema`]: the serializer identity snapshots record per state, the
//!   compatibility check on restore and the migrations descriptors declare.
//! - [`descriptor`] (what a function declares), [`key_group`] (key → key
//!   group → subtask, Flink's formulas), [`error`], [`codec`] (the stable
//!   postcard encoding of keys, values and snapshots), [`query`],
//!   [`timer`] (time domains, timer queues, timers: the public types).
//! - [`native`]: the RocksDB-native (incremental) snapshot format.
//! - [`query_view`]: heap state published for queries off the task thread.
//! - `store`: the keyed-store trait every backend's storage implements,
//!   with the heap store, the RocksDB store (feature `rocksdb`) and the
//!   enum that picks one (`store/dispatch.rs`).
//! - [`snapshot`]: the canonical keyed snapshot, cut by key group, written
//!   from any store's frozen views and restored into any store.
//! - [`backend`]: [`KeyedStateBackend`], the per-subtask registrations,
//!   current key, snapshots and restores over its store.
//! - [`handles`]: `ValueState`, `ListState`, `MapState`, `ReducingState`,
//!   `AggregatingState`, each access one call into the store.
//! - [`operator`]: operator state (list, union list, broadcast) and raw
//!   state, redistributed by mode when the parallelism changes.

pub mod backend;
pub mod codec;
mod config;
pub mod descriptor;
pub mod error;
pub mod handles;
mod key_bytes;
pub mod key_group;
pub mod metrics;
pub mod native;
pub mod operator;
pub mod query;
pub mod query_view;
pub mod schema;
pub mod snapshot;
mod store;
mod table_alloc;
pub mod timer;
pub mod ttl;
mod types;

pub use backend::{
    HeapConfig, KeyedStateAccess, KeyedStateBackend, RocksDbConfig, StateBackendKind,
    StateBackendSettings,
};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateKind, ValueStateDescriptor,
};
pub use error::StateError;
pub use handles::{
    AggregatingState, KeyedStateName, ListState, ListStateIter, MapState, MapStateIter,
    ReducingState, ValueState,
};
pub use key_group::{KeyGroupRange, KeyGroupRouter, key_group_for_key, key_hash};
pub use metrics::NativeMetric;
pub use operator::{
    BroadcastEntries, BroadcastState, BroadcastStateRead, OperatorListState, OperatorStateAccess,
    OperatorStateMode, OperatorStateRead, OperatorStateStore,
};
pub use query::{QueryFormat, QueryKeyError, QueryValue, QueryableStateInfo, decode_query_key};
pub use query_view::{QueryView, ViewLookup};
pub use schema::{SchemaCompatibility, SerializerIdentity, StateMigration};
pub use snapshot::{KeyedStateFile, KeyedStateSnapshot, StateMeta};
pub use timer::{Namespace, TimeDomain, Timer, TimerQueue};
pub use ttl::{StateTtlConfig, StateVisibility, TtlTimeProvider, UpdateType};
pub use types::{Key, StateValue};
