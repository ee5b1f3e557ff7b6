//! Job configuration: flat `key: value` pairs with Flink's key names.
//!
//! Sources are layered with Flink's precedence: values set in code win over
//! `-D key=value` flags, which win over the configuration file, which wins over
//! the built-in defaults. Every key is read through a typed [`ConfigOption`], so
//! a bad value is reported with the key that holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::parse_duration;

/// Why a configuration could not be read or a value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The configuration file is not valid YAML or not a mapping.
    #[error("configuration file {path} is not a valid YAML mapping: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong with its text. (Not the error's `source`: the
        /// message already includes it.)
        reason: YamlError,
    },
    /// A `-D` flag without `=`.
    #[error("invalid dynamic property {0:?}: expected key=value")]
    DynamicProperty(String),
    /// A value that does not parse as the key's type.
    #[error("invalid value {value:?} for configuration key '{key}': {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The offending value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// Why YAML text is not a configuration (see
/// [`Configuration::from_yaml_str`]): typed so a caller can tell text that
/// is not YAML from YAML that has no flat `key: value` reading.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML; the parser's error says where.
    #[error(transparent)]
    Parse(#[from] serde_yaml_ng::Error),
    /// The top level is a list or a scalar.
    #[error("the top level must be a mapping of keys to values")]
    NotAMapping,
    /// A mapping key that is not a string, number or boolean.
    #[error("unsupported key {key:?}")]
    UnsupportedKey {
        /// The key (boxed: a rare error that would make every
        /// `ConfigError` large).
        key: Box<serde_yaml_ng::Value>,
    },
    /// A list element that is not a string, number or boolean (lists
    /// become `;`-separated values).
    #[error("unsupported list item {item:?} under '{key}'")]
    UnsupportedListItem {
        /// The dotted key of the list.
        key: String,
        /// The element (boxed, as an unsupported key is).
        item: Box<serde_yaml_ng::Value>,
    },
    /// A value with a YAML tag (`!tag value`).
    #[error("tagged values are not supported under '{key}'")]
    Tagged {
        /// The dotted key.
        key: String,
    },
}

/// A typed, documented configuration key.
pub struct ConfigOption<T: 'static> {
    /// The key, with Flink's name where Flink has one.
    pub key: &'static str,
    /// One line for `--help` and the docs.
    pub description: &'static str,
    /// Parses and validates a raw value. The error is only the reason
    /// (`"must be at least 1"`), as serde's `de::Error::custom` is: every
    /// parser is called by [`Configuration::get`], which wraps it into a
    /// [`ConfigError::InvalidValue`] with the key and the value, and that
    /// typed error is what callers match on. A typed reason would add a
    /// type per parser and nothing a caller could act on beyond the key.
    pub parse: fn(&str) -> Result<T, String>,
}

/// Parses a positive integer that fits in `u32`.
pub fn parse_positive_u32(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("not a positive integer ({e})")),
    }
}

/// Parses a duration in Flink's notation.
pub fn parse_duration_value(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Parses a memory size as Flink writes them: a number with an optional
/// unit (`b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`, powers of 1024; case
/// and spaces ignored). A bare number is bytes.
pub fn parse_memory_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a memory size (e.g. 64mb, 1 gb, 268435456)"))?;
    let shift = match unit.trim() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        other => {
            return Err(format!(
                "unknown memory unit '{other}' in '{s}' (use b, kb, mb, gb or tb)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses `true`/`false`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Options every job understands.
pub mod options {
    use super::*;

    /// Parallelism of operators that do not set their own.
    pub const PARALLELISM: ConfigOption<u32> = ConfigOption {
        key: "parallelism.default",
        description: "Parallelism of operators that do not set their own (default 1).",
        parse: parse_positive_u32,
    };

    /// Upper bound for rescaling: the number of key groups.
    pub const MAX_PARALLELISM: ConfigOption<u32> = ConfigOption {
        key: "pipeline.max-parallelism",
        description: "Number of key groups, the upper bound for rescaling (1..=32768; default derived from parallelism).",
        parse: |s| {
            let v = parse_positive_u32(s)?;
            if v > 32768 {
                Err("must be at most 32768".into())
            } else {
                Ok(v)
            }
        },
    };

    /// Records per batch on a channel between tasks.
    pub const BATCH_SIZE: ConfigOption<u32> = ConfigOption {
        key: "floe.runtime.batch-size",
        description: "Records per batch exchanged between tasks (default 1024).",
        parse: parse_positive_u32,
    };

    /// Batches a channel holds before its sender blocks (backpressure).
    pub const CHANNEL_CAPACITY: ConfigOption<u32> = ConfigOption {
        key: "floe.runtime.channel-capacity",
        description: "Batches a channel buffers before the sender blocks (default 8).",
        parse: parse_positive_u32,
    };

    /// Which keyed state backend jobs use unless their code chooses one.
    pub const STATE_BACKEND: ConfigOption<String> = ConfigOption {
        key: "state.backend.type",
        description: "Keyed state backend: hashmap (state on the heap, the default) or rocksdb.",
        parse: |s| match s.trim().to_ascii_lowercase().as_str() {
            "hashmap" | "heap" => Ok("hashmap".to_string()),
            "rocksdb" => Ok("rocksdb".to_string()),
            _ => Err("expected hashmap or rocksdb".into()),
        },
    };

    /// Incremental checkpoints (RocksDB backend).
    pub const INCREMENTAL: ConfigOption<bool> = ConfigOption {
        key: "state.backend.incremental",
        description: "Upload only new state files in each checkpoint (RocksDB backend; default false).",
        parse: parse_bool,
    };

    /// Transparent huge pages for the heap backend's large tables.
    pub const HEAP_HUGE_PAGES: ConfigOption<bool> = ConfigOption {
        key: "state.backend.heap.huge-pages",
        description: "Back the heap backend's key-group tables of 2 MiB or more with transparent huge pages (MADV_HUGEPAGE), fewer TLB misses with millions of keys; applies to the job's own backends (default true; no effect where the kernel has none).",
        parse: parse_bool,
    };

    /// Where RocksDB keeps its working files.
    pub const ROCKSDB_LOCAL_DIR: ConfigOption<String> = ConfigOption {
        key: "state.backend.rocksdb.localdir",
        description: "Directory for the RocksDB backend's working files (one database per keyed subtask; removed when the job ends). Default: floe-rocksdb under the system temp dir.",
        parse: |s| {
            if s.trim().is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(s.trim().to_string())
            }
        },
    };

    /// The memory budget RocksDB shares across the whole process.
    pub const MANAGED_MEMORY_SIZE: ConfigOption<u64> = ConfigOption {
        key: "taskmanager.memory.managed.size",
        description: "Memory the RocksDB backend may use in this process, shared by every state and subtask (block cache, write buffers, index and filter blocks, and the write-back cache): 64mb, 1 gb, 268435456 (default 256mb, at least 16mb).",
        parse: |s| {
            let size = parse_memory_size(s)?;
            if size < 16 << 20 {
                return Err(format!(
                    "{size} bytes is below the minimum of 16mb (RocksDB needs 8 MiB besides its write-back cache)"
                ));
            }
            Ok(size)
        },
    };

    /// The RocksDB backend's write-back cache.
    pub const ROCKSDB_WRITE_CACHE_SIZE: ConfigOption<u64> = ConfigOption {
        key: "state.backend.rocksdb.write-cache.size",
        description: "Part of taskmanager.memory.managed.size kept by the RocksDB backend's write-back cache of value, reducing and aggregating states (recently used keys on the heap, written to RocksDB in batches); 0 turns it off (default: a quarter of the managed memory).",
        parse: parse_memory_size,
    };

    /// Timers per key group the RocksDB backend keeps in memory.
    pub const ROCKSDB_TIMER_CACHE_SIZE: ConfigOption<u32> = ConfigOption {
        key: "state.backend.rocksdb.timer-service.cache-size",
        description: "Timers of each key group and time domain the RocksDB backend keeps in memory in front of RocksDB, so the next timer to fire is known without a read (default 128, as in Flink; at least 1).",
        parse: parse_positive_u32,
    };

    /// Timer changes the RocksDB backend buffers before writing them.
    pub const ROCKSDB_TIMER_WRITE_BUFFER: ConfigOption<u32> = ConfigOption {
        key: "state.backend.rocksdb.timer-service.write-buffer",
        description: "Timer registrations and deletions each RocksDB timer queue buffers in memory and writes to RocksDB in one batch (also at every checkpoint): a timer set again and again is written once, one that fires before the buffer is written is never written (default 65536; 0 writes every change at once).",
        parse: |s| {
            s.trim()
                .parse::<u32>()
                .map_err(|e| format!("not a count 0..=4294967295 ({e})"))
        },
    };

    /// Where savepoints go when a request names no directory.
    pub const SAVEPOINT_DIR: ConfigOption<String> = ConfigOption {
        key: "state.savepoints.dir",
        description: "Default savepoint target directory: a path or a file://, s3://, gs://, az:// URL (default: unset; a savepoint request must then name one).",
        parse: |s| {
            if s.trim().is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(s.trim().to_string())
            }
        },
    };

    /// Whether operators count their records and watermarks.
    pub const METRICS_IO_ENABLED: ConfigOption<bool> = ConfigOption {
        key: "metrics.io.enabled",
        description: "Count each operator's records and watermarks (numRecordsIn/Out, their rates, current watermarks), once per batch (default true); false leaves them at 0, for the last per-batch cycles.",
        parse: parse_bool,
    };

    /// The port of the Prometheus endpoint besides the REST API's.
    pub const PROMETHEUS_PORT: ConfigOption<PortRanges> = ConfigOption {
        key: "metrics.reporter.prom.port",
        description: "Also serve GET /metrics (Prometheus text format) on the first free one of these ports, as Flink's PrometheusReporter does: a port, a range (9250-9260, for several processes on one host) or a comma-separated list; 0 picks any free port; unset: only on the REST port.",
        parse: PortRanges::parse,
    };

    /// The REST API's port.
    pub const REST_PORT: ConfigOption<u16> = ConfigOption {
        key: "rest.port",
        description: "Port of the job's REST API; 0 picks a free port (default 0, so jobs on one host never clash; the CLI finds them through the job registry).",
        parse: |s| {
            s.trim()
                .parse::<u16>()
                .map_err(|e| format!("not a port number 0..=65535 ({e})"))
        },
    };

    /// The REST API's bind address.
    pub const REST_ADDRESS: ConfigOption<String> = ConfigOption {
        key: "rest.address",
        description: "Address the job's REST API binds to (default 127.0.0.1: reachable from this host only).",
        parse: |s| {
            if s.trim().is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(s.trim().to_string())
            }
        },
    };

    /// A bearer token the REST API's mutating routes require.
    pub const REST_AUTH_TOKEN: ConfigOption<String> = ConfigOption {
        key: "rest.auth.token",
        description: "Bearer token that POST, PATCH and DELETE requests to the job's REST API must carry (Authorization: Bearer <token>); the floe CLI sends $FLOE_REST_TOKEN or --token (default: unset, no token required; see docs/security.md).",
        parse: |s| {
            let t = s.trim();
            if t.is_empty() {
                Err("must not be empty (leave the key out to require no token)".into())
            } else if !t.bytes().all(|b| b.is_ascii_graphic()) {
                Err("must be printable ASCII without spaces (it is sent in an HTTP header)".into())
            } else {
                Ok(t.to_string())
            }
        },
    };

    /// Whether the REST API's read routes need the token too.
    pub const REST_AUTH_PROTECT_READS: ConfigOption<bool> = ConfigOption {
        key: "rest.auth.protect-reads",
        description: "With rest.auth.token set, require the token on every route, status and state queries included (default false: reads stay open).",
        parse: parse_bool,
    };

    /// Queryable state (read keyed state of a running job from outside).
    pub const QUERYABLE_STATE_ENABLE: ConfigOption<bool> = ConfigOption {
        key: "queryable-state.enable",
        description: "Serve queryable keyed state (default false).",
        parse: parse_bool,
    };

    /// How often periodic watermark generators emit.
    pub const AUTO_WATERMARK_INTERVAL: ConfigOption<Duration> = ConfigOption {
        key: "pipeline.auto-watermark-interval",
        description: "How often periodic watermark generators (bounded out-of-orderness, monotonous timestamps, custom ones) are asked to emit, and how often idleness is checked (default 200 ms; at least 1 ms).",
        parse: |s| {
            let d = parse_duration_value(s)?;
            if d < Duration::from_millis(1) {
                Err("must be at least 1 ms (Flink's 0, which turns periodic watermarks off, is not supported)".into())
            } else {
                Ok(d)
            }
        },
    };

    /// How old the state a query is answered from off the task thread may be.
    pub const QUERYABLE_STATE_MAX_STALENESS: ConfigOption<Duration> = ConfigOption {
        key: "queryable-state.max-staleness",
        description: "How old the heap state a query is answered from may be: tasks publish their queryable tables this often while queries come, and the proxy answers from them without waiting for the task; 0 sends every query to the task that owns the key (default 10 ms; RocksDB state is always read by its task).",
        parse: parse_duration_value,
    };

    /// Ports the queryable-state proxy (where clients connect) may bind.
    pub const QUERYABLE_STATE_PROXY_PORTS: ConfigOption<PortRanges> = ConfigOption {
        key: "queryable-state.proxy.ports",
        description: "Ports the queryable-state proxy may bind, the first free one is taken: a port, a range (9069-9075) or a comma-separated list of both; 0 picks any free port (default 9069, as in Flink).",
        parse: PortRanges::parse,
    };

    /// Ports the queryable-state server of this TaskManager may bind.
    pub const QUERYABLE_STATE_SERVER_PORTS: ConfigOption<PortRanges> = ConfigOption {
        key: "queryable-state.server.ports",
        description: "Ports the queryable-state server may bind, like queryable-state.proxy.ports (default 9067, as in Flink).",
        parse: PortRanges::parse,
    };

    /// Connections each queryable-state port serves at once.
    pub const QUERYABLE_STATE_MAX_CONNECTIONS: ConfigOption<u32> = ConfigOption {
        key: "queryable-state.max-connections",
        description: "Connections the queryable-state proxy and the server each serve at once; further connections are closed on arrival (default 256).",
        parse: parse_positive_u32,
    };

    /// The largest query the queryable-state ports accept.
    pub const QUERYABLE_STATE_MAX_REQUEST_SIZE: ConfigOption<u64> = ConfigOption {
        key: "queryable-state.max-request-size",
        description: "Largest query frame (job id, state name and key) the queryable-state ports accept, at most 64 mb; a client announcing a larger one is disconnected before it is read (default 64 kb).",
        parse: |s| match parse_memory_size(s)? {
            n if n < 64 => Err("must be at least 64 bytes".into()),
            n if n > 64 << 20 => Err("must be at most 64 mb (the protocol's frame limit)".into()),
            n => Ok(n),
        },
    };

    /// How long a queryable-state connection may stay without a complete frame.
    pub const QUERYABLE_STATE_IDLE_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "queryable-state.idle-timeout",
        description: "How long a queryable-state connection may go without sending a complete query (or its hello) before it is closed; clients reconnect on their next query (default 5 min).",
        parse: |s| match parse_duration_value(s)? {
            d if d.is_zero() => Err("must be greater than 0".into()),
            d => Ok(d),
        },
    };

    /// How long a task waits for buffered output before flushing it anyway.
    pub const BUFFER_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "execution.buffer-timeout.interval",
        description: "Longest time a partly filled batch waits before it is sent (default 100 ms).",
        parse: parse_duration_value,
    };
}

/// Where RocksDB's native metrics are switched on, one boolean key per
/// metric (`state.backend.rocksdb.metrics.estimate-num-keys: true`), as in
/// Flink.
pub const ROCKSDB_NATIVE_METRICS_PREFIX: &str = "state.backend.rocksdb.metrics.";

/// RocksDB's native metrics Floe reports when switched on, with Flink's
/// names: each is RocksDB's integer property `rocksdb.<name>` of every
/// state's column family, read by the task about once a second. Off by
/// default, as in Flink: a property read is cheap, but some (the
/// `estimate-*` ones) walk the column family's files.
pub const ROCKSDB_NATIVE_METRICS: &[&str] = &[
    "actual-delayed-write-rate",
    "background-errors",
    "block-cache-capacity",
    "block-cache-pinned-usage",
    "block-cache-usage",
    "compaction-pending",
    "cur-size-active-mem-table",
    "cur-size-all-mem-tables",
    "estimate-live-data-size",
    "estimate-num-keys",
    "estimate-pending-compaction-bytes",
    "estimate-table-readers-mem",
    "is-write-stopped",
    "live-sst-files-size",
    "mem-table-flush-pending",
    "num-deletes-active-mem-table",
    "num-deletes-imm-mem-tables",
    "num-entries-active-mem-table",
    "num-entries-imm-mem-tables",
    "num-immutable-mem-table",
    "num-live-versions",
    "num-running-compactions",
    "num-running-flushes",
    "num-snapshots",
    "size-all-mem-tables",
    "total-sst-files-size",
];

/// Flink's switch between a column-family label and the column family in
/// the metric's name; Floe always labels (names would otherwise depend on
/// state names), so only `true` is accepted.
pub const ROCKSDB_METRICS_COLUMN_FAMILY_AS_VARIABLE: &str =
    "state.backend.rocksdb.metrics.column-family-as-variable";

/// The RocksDB native metrics `config` switches on, in
/// [`ROCKSDB_NATIVE_METRICS`] order.
pub fn rocksdb_native_metrics(config: &Configuration) -> Result<Vec<&'static str>, ConfigError> {
    let invalid = |key: &str, value: &str, reason: String| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    if let Some(v) = config.get_raw(ROCKSDB_METRICS_COLUMN_FAMILY_AS_VARIABLE) {
        let on =
            parse_bool(v).map_err(|r| invalid(ROCKSDB_METRICS_COLUMN_FAMILY_AS_VARIABLE, v, r))?;
        if !on {
            return Err(invalid(
                ROCKSDB_METRICS_COLUMN_FAMILY_AS_VARIABLE,
                v,
                "Floe always reports the column family (the state's name) as the label `column_family`".into(),
            ));
        }
    }
    let mut on = Vec::new();
    for name in ROCKSDB_NATIVE_METRICS {
        let key = format!("{ROCKSDB_NATIVE_METRICS_PREFIX}{name}");
        if let Some(v) = config.get_raw(&key)
            && parse_bool(v).map_err(|r| invalid(&key, v, r))?
        {
            on.push(*name);
        }
    }
    Ok(on)
}

/// Whether some part of Floe reads `key`.
pub fn is_known_key(key: &str) -> bool {
    KNOWN_KEYS.iter().any(|(known, _)| *known == key)
        || key == ROCKSDB_METRICS_COLUMN_FAMILY_AS_VARIABLE
        || key
            .strip_prefix(ROCKSDB_NATIVE_METRICS_PREFIX)
            .is_some_and(|m| ROCKSDB_NATIVE_METRICS.contains(&m))
}

/// Every key Floe knows, with its description; anything else draws a
/// warning. (RocksDB's native metric switches, a family of keys, are
/// [`ROCKSDB_NATIVE_METRICS`]; [`is_known_key`] knows them too.)
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    (options::PARALLELISM.key, options::PARALLELISM.description),
    (
        options::MAX_PARALLELISM.key,
        options::MAX_PARALLELISM.description,
    ),
    (options::BATCH_SIZE.key, options::BATCH_SIZE.description),
    (
        options::CHANNEL_CAPACITY.key,
        options::CHANNEL_CAPACITY.description,
    ),
    (
        options::BUFFER_TIMEOUT.key,
        options::BUFFER_TIMEOUT.description,
    ),
    (
        options::STATE_BACKEND.key,
        options::STATE_BACKEND.description,
    ),
    (options::INCREMENTAL.key, options::INCREMENTAL.description),
    (
        options::HEAP_HUGE_PAGES.key,
        options::HEAP_HUGE_PAGES.description,
    ),
    (
        options::ROCKSDB_LOCAL_DIR.key,
        options::ROCKSDB_LOCAL_DIR.description,
    ),
    (
        options::MANAGED_MEMORY_SIZE.key,
        options::MANAGED_MEMORY_SIZE.description,
    ),
    (
        options::ROCKSDB_WRITE_CACHE_SIZE.key,
        options::ROCKSDB_WRITE_CACHE_SIZE.description,
    ),
    (
        options::ROCKSDB_TIMER_CACHE_SIZE.key,
        options::ROCKSDB_TIMER_CACHE_SIZE.description,
    ),
    (
        options::ROCKSDB_TIMER_WRITE_BUFFER.key,
        options::ROCKSDB_TIMER_WRITE_BUFFER.description,
    ),
    (
        options::SAVEPOINT_DIR.key,
        options::SAVEPOINT_DIR.description,
    ),
    (options::REST_PORT.key, options::REST_PORT.description),
    (
        options::PROMETHEUS_PORT.key,
        options::PROMETHEUS_PORT.description,
    ),
    (
        options::METRICS_IO_ENABLED.key,
        options::METRICS_IO_ENABLED.description,
    ),
    (options::REST_ADDRESS.key, options::REST_ADDRESS.description),
    (
        options::REST_AUTH_TOKEN.key,
        options::REST_AUTH_TOKEN.description,
    ),
    (
        options::REST_AUTH_PROTECT_READS.key,
        options::REST_AUTH_PROTECT_READS.description,
    ),
    (
        options::QUERYABLE_STATE_ENABLE.key,
        options::QUERYABLE_STATE_ENABLE.description,
    ),
    (
        options::QUERYABLE_STATE_MAX_STALENESS.key,
        options::QUERYABLE_STATE_MAX_STALENESS.description,
    ),
    (
        options::AUTO_WATERMARK_INTERVAL.key,
        options::AUTO_WATERMARK_INTERVAL.description,
    ),
    (
        options::QUERYABLE_STATE_PROXY_PORTS.key,
        options::QUERYABLE_STATE_PROXY_PORTS.description,
    ),
    (
        options::QUERYABLE_STATE_SERVER_PORTS.key,
        options::QUERYABLE_STATE_SERVER_PORTS.description,
    ),
    (
        options::QUERYABLE_STATE_MAX_CONNECTIONS.key,
        options::QUERYABLE_STATE_MAX_CONNECTIONS.description,
    ),
    (
        options::QUERYABLE_STATE_MAX_REQUEST_SIZE.key,
        options::QUERYABLE_STATE_MAX_REQUEST_SIZE.description,
    ),
    (
        options::QUERYABLE_STATE_IDLE_TIMEOUT.key,
        options::QUERYABLE_STATE_IDLE_TIMEOUT.description,
    ),
    // Checkpointing: the options are defined in floe-checkpoint's config.rs
    // (`floe_checkpoint::config::options`); a test there keeps these in step.
    (
        "execution.checkpointing.interval",
        "Time between the start of two checkpoints, at least 10 ms (default: unset, checkpointing off).",
    ),
    (
        "execution.checkpointing.mode",
        "Checkpointing guarantee: EXACTLY_ONCE or AT_LEAST_ONCE (default EXACTLY_ONCE).",
    ),
    (
        "execution.checkpointing.timeout",
        "Time after which a checkpoint in progress is aborted, at least 10 ms (default 10 min).",
    ),
    (
        "execution.checkpointing.min-pause",
        "Least time between the end of one checkpoint and the start of the next (default 0).",
    ),
    (
        "execution.checkpointing.max-concurrent-checkpoints",
        "Checkpoints that may be in progress at the same time, at least 1 (default 1).",
    ),
    (
        "execution.checkpointing.tolerable-failed-checkpoints",
        "Consecutive checkpoint failures tolerated before the job fails (default 0).",
    ),
    (
        "execution.checkpointing.externalized-checkpoint-retention",
        "Keep or delete checkpoints when the job is cancelled: DELETE_ON_CANCELLATION or RETAIN_ON_CANCELLATION (default DELETE_ON_CANCELLATION).",
    ),
    (
        "execution.checkpointing.unaligned.enabled",
        "Let barriers overtake buffered records and store those records in the checkpoint; EXACTLY_ONCE only (default false).",
    ),
    (
        "execution.checkpointing.aligned-checkpoint-timeout",
        "With unaligned checkpoints enabled, how long alignment may take before the checkpoint switches to unaligned; 0 = start unaligned (default 0).",
    ),
    (
        "state.checkpoints.num-retained",
        "Completed checkpoints kept in checkpoint storage, at least 1 (default 1).",
    ),
    (
        "state.checkpoints.dir",
        "Checkpoint storage: file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or jobmanager (default: unset, jobmanager: kept in memory).",
    ),
    // Cluster control plane: the options are defined in floe-cluster's
    // config.rs (`floe_cluster::config::options`); a test there keeps these in step.
    (
        "heartbeat.interval",
        "Time between two heartbeats, sent both ways between the JobManager and each TaskManager (default 10 s; at least 1 ms, less than heartbeat.timeout).",
    ),
    (
        "heartbeat.timeout",
        "Time without any heartbeat after which the JobManager declares a TaskManager lost, and a TaskManager its JobManager (default 50 s).",
    ),
    (
        "heartbeat.rpc-failure-threshold",
        "Heartbeat RPCs in a row that find the target's endpoint refusing connections (its process is gone) after which it is declared lost without waiting for heartbeat.timeout (default 2, as in Flink).",
    ),
    (
        "jobmanager.rpc.address",
        "Host the JobManager's RPC endpoint binds to and TaskManagers connect to (default localhost).",
    ),
    (
        "jobmanager.rpc.port",
        "Port of the JobManager's RPC endpoint; 0 picks a free port (default 6123, as in Flink).",
    ),
    (
        "taskmanager.numberOfTaskSlots",
        "Task slots a TaskManager offers: how many parallel subtask pipelines it runs (default 1).",
    ),
    (
        "taskmanager.host",
        "Address a TaskManager binds its RPC endpoint to and advertises to the JobManager (default: the local address of the interface that routes to the JobManager).",
    ),
    (
        "taskmanager.rpc.port",
        "Port of a TaskManager's RPC endpoint; 0 picks a free port (default 0).",
    ),
    (
        "taskmanager.data.port",
        "Port of a TaskManager's data plane (the connections between TaskManagers), advertised at registration; 0 picks a free port (default 0).",
    ),
    (
        "taskmanager.registration.timeout",
        "How long a TaskManager tries to register with the JobManager (at start, and again after losing it) before it gives up and exits (default 5 min).",
    ),
    (
        "cluster.registration.initial-timeout",
        "Time a first registration attempt may take, and the wait after it fails; each further attempt doubles it up to cluster.registration.max-timeout (default 100 ms).",
    ),
    (
        "cluster.registration.max-timeout",
        "Longest time a registration attempt may take, and longest wait between attempts (default 30 s).",
    ),
    (
        "slot.request.timeout",
        "How long a job's run waits for enough free task slots on the registered TaskManagers before its deployment fails (default 5 min, as in Flink).",
    ),
    (
        "jobmanager.adaptive-scheduler.resource-stabilization-timeout",
        "How long a restart waits for the task slots its job needs before it runs at the slots that are left, with the key groups spread over fewer subtasks (default 10 s, as in Flink; a first run always waits slot.request.timeout for its full parallelism).",
    ),
    (
        "high-availability.storageDir",
        "Where the JobManager keeps its jobs (submissions and generation claims) so that a restarted JobManager recovers them from their latest checkpoints: a file://, s3://, gs:// or az:// URL every JobManager process sees (Flink's key; unset: jobs do not survive a JobManager restart).",
    ),
    // Restart strategy: the options are defined in floe-runtime's restart.rs
    // (`floe_runtime::restart::options`); a test there keeps these in step.
    (
        "restart-strategy.type",
        "Restart strategy after a failure: none (also off, disable), fixed-delay, failure-rate or exponential-delay (default: none without checkpointing, else fixed-delay with unlimited attempts every 1 s).",
    ),
    (
        "restart-strategy.fixed-delay.attempts",
        "With fixed-delay, restarts allowed before the job fails, at least 1 (default 1).",
    ),
    (
        "restart-strategy.fixed-delay.delay",
        "With fixed-delay, wait before each restart (default 1 s).",
    ),
    (
        "restart-strategy.failure-rate.max-failures-per-interval",
        "With failure-rate, failures tolerated within the interval before the job fails, at least 1 (default 1).",
    ),
    (
        "restart-strategy.failure-rate.failure-rate-interval",
        "With failure-rate, sliding window in which failures are counted, at least 1 ms (default 1 min).",
    ),
    (
        "restart-strategy.failure-rate.delay",
        "With failure-rate, wait before each restart (default 1 s).",
    ),
    (
        "restart-strategy.exponential-delay.initial-backoff",
        "With exponential-delay, wait before the first restart, at least 1 ms (default 1 s).",
    ),
    (
        "restart-strategy.exponential-delay.max-backoff",
        "With exponential-delay, longest wait before a restart, at least the initial backoff (default 1 min).",
    ),
    (
        "restart-strategy.exponential-delay.backoff-multiplier",
        "With exponential-delay, factor the wait grows by after each failure, at least 1 (default 1.5).",
    ),
    (
        "restart-strategy.exponential-delay.reset-backoff-threshold",
        "With exponential-delay, failure-free time after which the wait starts over from the initial backoff, at least 1 ms (default 1 h).",
    ),
    (
        "restart-strategy.exponential-delay.jitter-factor",
        "With exponential-delay, random spread of each wait as a fraction of it, 0 to 1 (default 0.1).",
    ),
];

/// A layer of configuration values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    entries: BTreeMap<String, String>,
}

impl Configuration {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a raw value (a later `set` of the same key wins).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.entries.insert(key.into(), value.into());
        self
    }

    /// The raw value of a key.
    pub fn get_raw(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The typed value of an option, `None` when unset.
    pub fn get<T>(&self, option: &ConfigOption<T>) -> Result<Option<T>, ConfigError> {
        match self.entries.get(option.key) {
            None => Ok(None),
            Some(raw) => {
                (option.parse)(raw)
                    .map(Some)
                    .map_err(|reason| ConfigError::InvalidValue {
                        key: option.key.to_string(),
                        value: raw.clone(),
                        reason,
                    })
            }
        }
    }

    /// All entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Copies every entry of `higher` over this one (higher precedence wins).
    pub fn merge(&mut self, higher: &Configuration) {
        for (k, v) in &higher.entries {
            self.entries.insert(k.clone(), v.clone());
        }
    }

    /// Parses one `-D key=value` flag into this layer.
    pub fn set_dynamic_property(&mut self, property: &str) -> Result<(), ConfigError> {
        match property.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                self.set(k.trim(), v.trim());
                Ok(())
            }
            _ => Err(ConfigError::DynamicProperty(property.to_string())),
        }
    }

    /// Keys that no part of Floe reads; the caller warns about them.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.entries
            .keys()
            .map(String::as_str)
            .filter(|k| !is_known_key(k))
            .collect()
    }

    /// Reads a YAML file. Nested mappings flatten to dotted keys
    /// (`parallelism: {default: 2}` is `parallelism.default: 2`), as in
    /// Flink's `config.yaml`.
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Io {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::from_yaml_str(&text).map_err(|reason| ConfigError::Syntax {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Reads YAML text; see [`Configuration::from_yaml_file`], which
    /// names the file in the error.
    pub fn from_yaml_str(text: &str) -> Result<Self, YamlError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        let mut config = Configuration::new();
        match value {
            serde_yaml_ng::Value::Null => {}
            serde_yaml_ng::Value::Mapping(map) => flatten("", &map, &mut config)?,
            _ => return Err(YamlError::NotAMapping),
        }
        Ok(config)
    }
}

fn flatten(
    prefix: &str,
    map: &serde_yaml_ng::Mapping,
    out: &mut Configuration,
) -> Result<(), YamlError> {
    use serde_yaml_ng::Value;
    for (k, v) in map {
        let key = match k {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(YamlError::UnsupportedKey {
                    key: Box::new(other.clone()),
                });
            }
        };
        let full = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Mapping(inner) => flatten(&full, inner, out)?,
            Value::String(s) => {
                out.set(full, s.clone());
            }
            Value::Number(n) => {
                out.set(full, n.to_string());
            }
            Value::Bool(b) => {
                out.set(full, b.to_string());
            }
            Value::Null => {}
            Value::Sequence(items) => {
                let parts: Result<Vec<String>, YamlError> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        Value::Bool(b) => Ok(b.to_string()),
                        other => Err(YamlError::UnsupportedListItem {
                            key: full.clone(),
                            item: Box::new(other.clone()),
                        }),
                    })
                    .collect();
                out.set(full, parts?.join(";"));
            }
            Value::Tagged(_) => {
                return Err(YamlError::Tagged { key: full });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_yaml_agree() {
        let flat = Configuration::from_yaml_str("parallelism.default: 4\n").unwrap();
        let nested = Configuration::from_yaml_str("parallelism:\n  default: 4\n").unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.get(&options::PARALLELISM).unwrap(), Some(4));
    }

    #[test]
    fn bad_value_names_the_key() {
        let mut c = Configuration::new();
        c.set("parallelism.default", "zero");
        let err = c.get(&options::PARALLELISM).unwrap_err().to_string();
        assert!(err.contains("parallelism.default"), "{err}");
        assert!(err.contains("zero"), "{err}");
    }

    #[test]
    fn later_layers_win_and_unknown_keys_are_listed() {
        let mut file = Configuration::from_yaml_str("parallelism.default: 2\nfoo.bar: 1").unwrap();
        let mut dynamic = Configuration::new();
        dynamic
            .set_dynamic_property("parallelism.default=3")
            .unwrap();
        file.merge(&dynamic);
        assert_eq!(file.get(&options::PARALLELISM).unwrap(), Some(3));
        assert_eq!(file.unknown_keys(), vec!["foo.bar"]);
        assert!(dynamic.set_dynamic_property("novalue").is_err());
    }

    #[test]
    fn rocksdb_native_metrics_are_switched_on_one_key_each() {
        let mut c = Configuration::new();
        c.set("state.backend.rocksdb.metrics.estimate-num-keys", "true");
        c.set("state.backend.rocksdb.metrics.block-cache-usage", "false");
        c.set("state.backend.rocksdb.metrics.total-sst-files-size", "true");
        c.set(
            "state.backend.rocksdb.metrics.column-family-as-variable",
            "true",
        );
        c.set("state.backend.rocksdb.metrics.no-such-metric", "true");
        assert_eq!(
            rocksdb_native_metrics(&c).unwrap(),
            vec!["estimate-num-keys", "total-sst-files-size"]
        );
        assert_eq!(
            c.unknown_keys(),
            vec!["state.backend.rocksdb.metrics.no-such-metric"]
        );
        c.set(
            "state.backend.rocksdb.metrics.estimate-num-keys",
            "yes please",
        );
        let err = rocksdb_native_metrics(&c).unwrap_err().to_string();
        assert!(
            err.contains("state.backend.rocksdb.metrics.estimate-num-keys"),
            "{err}"
        );
        c.set("state.backend.rocksdb.metrics.estimate-num-keys", "true");
        c.set(
            "state.backend.rocksdb.metrics.column-family-as-variable",
            "false",
        );
        let err = rocksdb_native_metrics(&c).unwrap_err().to_string();
        assert!(err.contains("column_family"), "{err}");
    }

    #[test]
    fn missing_file_and_bad_yaml_are_clear_errors() {
        let err = Configuration::from_yaml_file(Path::new("/nonexistent/floe-conf.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/floe-conf.yaml"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "- a\n- b\n").unwrap();
        let err = Configuration::from_yaml_file(&p).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Syntax {
                    reason: YamlError::NotAMapping,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("mapping"), "{err}");
    }

    #[test]
    fn yaml_that_has_no_flat_reading_is_a_typed_error() {
        assert!(matches!(
            Configuration::from_yaml_str("a: [b"),
            Err(YamlError::Parse(_))
        ));
        let err = Configuration::from_yaml_str("a:\n  b: [1, [2]]\n").unwrap_err();
        assert!(
            matches!(&err, YamlError::UnsupportedListItem { key, .. } if key == "a.b"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unsupported list item Sequence [Number(2)] under 'a.b'"
        );
        assert!(matches!(
            Configuration::from_yaml_str("? [1]\n: x\n"),
            Err(YamlError::UnsupportedKey { .. })
        ));
        assert!(matches!(
            Configuration::from_yaml_str("a: !t 1\n"),
            Err(YamlError::Tagged { key }) if key == "a"
        ));
    }
}

/// Ports a server may bind, tried in order (Flink's port-range syntax:
/// `9069`, `9069-9075`, `9069,9080-9085`; `0` is any free port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges(pub Vec<(u16, u16)>);

impl PortRanges {
    /// Parses the port-range syntax. It is the parser of the port-range
    /// options, so its error is only the reason: see [`ConfigOption::parse`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .map_err(|e| format!("'{p}' is not a port number 0..=65535 ({e})"))
            };
            let range = match part.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if range.0 > range.1 {
                return Err(format!("range {part} is empty (start after end)"));
            }
            ranges.push(range);
        }
        Ok(PortRanges(ranges))
    }

    /// Every port, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|&(a, b)| a..=b)
    }
}

impl std::fmt::Display for PortRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod port_range_tests {
    use super::PortRanges;

    #[test]
    fn parses_flink_port_ranges() {
        let r = PortRanges::parse("9069, 9080-9082").unwrap();
        assert_eq!(r.ports().collect::<Vec<_>>(), vec![9069, 9080, 9081, 9082]);
        assert_eq!(r.to_string(), "9069,9080-9082");
        assert_eq!(PortRanges::parse("0").unwrap().0, vec![(0, 0)]);
        assert!(
            PortRanges::parse("9070-9069")
                .unwrap_err()
                .contains("empty")
        );
        assert!(PortRanges::parse("70000").unwrap_err().contains("'70000'"));
        assert!(PortRanges::parse("a-b").is_err());
    }
}

#[cfg(test)]
mod memory_size_tests {
    use super::parse_memory_size;

    #[test]
    fn parses_flink_memory_sizes() {
        assert_eq!(parse_memory_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_memory_size("1 GB"), Ok(1 << 30));
        assert_eq!(parse_memory_size("512k"), Ok(512 << 10));
        assert_eq!(parse_memory_size("268435456"), Ok(268_435_456));
        assert!(
            parse_memory_size("64 parsecs")
                .unwrap_err()
                .contains("parsecs")
        );
        assert!(
            parse_memory_size("mb")
                .unwrap_err()
                .contains("not a memory size")
        );
        assert!(
            parse_memory_size("99999999999tb")
                .unwrap_err()
                .contains("too large")
        );
    }
}
