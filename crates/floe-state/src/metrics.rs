//! What a state backend reports about itself besides its state: RocksDB's
//! native metrics (a module of its own so that every store can name it
//! without depending on the crate root).

/// One native metric of a state backend: RocksDB's integer property
/// `rocksdb.<property>` of one state's column family (Flink's RocksDB
/// native metrics), as a task last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeMetric {
    /// The state (its column family).
    pub state: String,
    /// The property, Flink's metric name (`estimate-num-keys`).
    pub property: &'static str,
    /// Its value.
    pub value: u64,
}
