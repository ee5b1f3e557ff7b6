//! The timer suite (`timers/suite.rs`) on the RocksDB backend with two
//! cached timers per key group and a write buffer of five changes: every
//! path of the cache and the buffer (refills, overflowing caches, writes
//! in the middle of firing, changes buffered across snapshots) runs many
//! times in each case, where the defaults (128 and 65,536) would need
//! thousands of timers per key group.
#![cfg(feature = "rocksdb")]

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::RocksDb;

/// RocksDB with a tiny timer cache and write buffer.
fn settings() -> floe_state::StateBackendSettings {
    floe_state::StateBackendSettings {
        kind: BACKEND,
        rocksdb: floe_state::RocksDbConfig {
            timer_cache_size: 2,
            timer_write_buffer: 5,
            ..floe_state::RocksDbConfig::default()
        },
        ..floe_state::StateBackendSettings::default()
    }
}

include!("timers/suite.rs");
