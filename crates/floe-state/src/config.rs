//! Which keyed state backend a job uses and its settings (Flink's
//! `state.backend.*` options). A leaf module: the stores read it, the
//! backend chooses a store by it.

use std::fmt;
use std::str::FromStr;

/// Which state backend holds keyed state (`state.backend.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// Typed values on the heap (Flink's `HashMapStateBackend`).
    #[default]
    HashMap,
    /// An embedded RocksDB per subtask on local disk, for state larger
    /// than memory (Flink's `EmbeddedRocksDBStateBackend`; feature
    /// `rocksdb`).
    RocksDb,
}

impl fmt::Display for StateBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateBackendKind::HashMap => "hashmap",
            StateBackendKind::RocksDb => "rocksdb",
        })
    }
}

impl FromStr for StateBackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hashmap" | "heap" => Ok(StateBackendKind::HashMap),
            "rocksdb" => Ok(StateBackendKind::RocksDb),
            other => Err(format!(
                "unknown state backend {other:?} (supported: hashmap, rocksdb)"
            )),
        }
    }
}

/// Where and with how much memory the RocksDB backend works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Working directories go under this one
    /// (`state.backend.rocksdb.localdir`); each subtask's is removed when
    /// its backend is dropped.
    pub local_dir: std::path::PathBuf,
    /// The process's memory budget for RocksDB, shared by every state and
    /// subtask (`taskmanager.memory.managed.size`).
    pub managed_memory: u64,
    /// Checkpoints upload RocksDB's own files, only the new ones
    /// (`state.backend.incremental`); savepoints stay canonical.
    pub incremental: bool,
    /// The write-back cache's share of `managed_memory`
    /// (`state.backend.rocksdb.write-cache.size`; `None`: a quarter).
    pub write_cache: Option<u64>,
    /// Timers of each key group and time domain kept in memory in front
    /// of RocksDB (`state.backend.rocksdb.timer-service.cache-size`, as in
    /// Flink): the head of every group is known without a read.
    pub timer_cache_size: usize,
    /// Timer registrations and deletions a timer queue buffers before it
    /// writes them to RocksDB in one batch
    /// (`state.backend.rocksdb.timer-service.write-buffer`): a timer set
    /// again and again is written once, and one that fires before the
    /// buffer is written never touches RocksDB. 0 writes every change at
    /// once.
    pub timer_write_buffer: usize,
    /// RocksDB properties reported per state as native metrics
    /// (`state.backend.rocksdb.metrics.<name>`, Flink's names without the
    /// `rocksdb.` prefix; empty: none, the default).
    pub native_metrics: Vec<&'static str>,
}

impl RocksDbConfig {
    /// The smallest managed memory the backend accepts.
    pub const MIN_MANAGED_MEMORY: u64 = 16 << 20;

    /// Flink's default of `state.backend.rocksdb.timer-service.cache-size`.
    pub const DEFAULT_TIMER_CACHE_SIZE: usize = 128;

    /// The default of `state.backend.rocksdb.timer-service.write-buffer`:
    /// some megabytes per timer queue, about one second of timers of a
    /// busy subtask.
    pub const DEFAULT_TIMER_WRITE_BUFFER: usize = 65_536;

    /// How the managed memory splits: (RocksDB's budget, the write-back
    /// cache's), or why it cannot. The error is only the reason, like a
    /// configuration value parser's (`ConfigOption::parse`): its one
    /// caller, opening the RocksDB store, wraps it with the operator into a
    /// typed `StateError::Backend`.
    pub fn memory_split(&self) -> Result<(u64, u64), String> {
        let cache = self.write_cache.unwrap_or(self.managed_memory / 4);
        let rocks = self.managed_memory.saturating_sub(cache);
        if rocks < 8 << 20 {
            return Err(format!(
                "taskmanager.memory.managed.size of {} bytes leaves RocksDB {rocks} bytes besides the write-back cache's {cache}; it needs at least 8 MiB (use at least 16mb, or a smaller state.backend.rocksdb.write-cache.size)",
                self.managed_memory
            ));
        }
        Ok((rocks, cache))
    }
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            local_dir: std::env::temp_dir().join("floe-rocksdb"),
            managed_memory: 256 << 20,
            incremental: false,
            write_cache: None,
            timer_cache_size: Self::DEFAULT_TIMER_CACHE_SIZE,
            timer_write_buffer: Self::DEFAULT_TIMER_WRITE_BUFFER,
            native_metrics: Vec::new(),
        }
    }
}

/// How the heap backend allocates its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapConfig {
    /// Key-group tables of 2 MiB or more are advised for transparent huge
    /// pages (`state.backend.heap.huge-pages`): fewer TLB misses with
    /// millions of keys. Off is for machines where the kernel's on-fault
    /// compaction stalls more than that gains. Per backend, so one job's
    /// setting leaves other jobs in the process alone.
    pub huge_pages: bool,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig { huge_pages: true }
    }
}

/// A backend kind with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateBackendSettings {
    /// Heap or RocksDB.
    pub kind: StateBackendKind,
    /// Used when `kind` is the heap.
    pub heap: HeapConfig,
    /// Used when `kind` is RocksDB.
    pub rocksdb: RocksDbConfig,
}

impl From<StateBackendKind> for StateBackendSettings {
    fn from(kind: StateBackendKind) -> Self {
        StateBackendSettings {
            kind,
            ..StateBackendSettings::default()
        }
    }
}
