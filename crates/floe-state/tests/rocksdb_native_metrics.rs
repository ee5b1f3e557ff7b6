//! RocksDB's native metrics read through the backend: every property Floe
//! accepts a switch for is one this RocksDB reports, per state, and the
//! figures follow what was written.
#![cfg(feature = "rocksdb")]

use floe_core::config::ROCKSDB_NATIVE_METRICS;
use floe_state::{
    HeapConfig, KeyGroupRange, KeyedStateBackend, ListStateDescriptor, NativeMetric, RocksDbConfig,
    StateBackendKind, StateBackendSettings, ValueStateDescriptor, key_group_for_key,
};

const MAX_P: u32 = 128;
const KEYS: u64 = 5_000;

fn settings(kind: StateBackendKind, native: &[&'static str]) -> StateBackendSettings {
    StateBackendSettings {
        kind,
        heap: HeapConfig::default(),
        rocksdb: RocksDbConfig {
            incremental: true,
            native_metrics: native.to_vec(),
            ..RocksDbConfig::default()
        },
    }
}

/// A backend holding `KEYS` values and one list element per key, flushed
/// to RocksDB's files by an incremental snapshot.
fn filled(settings: StateBackendSettings) -> KeyedStateBackend<u64> {
    let mut b = KeyedStateBackend::<u64>::new(
        settings,
        "count",
        KeyGroupRange::new(0, (MAX_P - 1) as u16),
        MAX_P,
    )
    .unwrap();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let seen = b
        .get_list_state(&ListStateDescriptor::<u64>::new("seen"))
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        count.update(&mut b, k).unwrap();
        seen.add(&mut b, k).unwrap();
    }
    let _ = b.snapshot_for_checkpoint(1, None);
    b
}

fn metrics(b: &KeyedStateBackend<u64>) -> Vec<NativeMetric> {
    let mut out = Vec::new();
    b.native_metrics(&mut out);
    out
}

fn value(m: &[NativeMetric], state: &str, property: &str) -> u64 {
    m.iter()
        .find(|m| m.state == state && m.property == property)
        .unwrap_or_else(|| panic!("no {property} of {state} in {m:?}"))
        .value
}

#[test]
fn every_accepted_property_is_reported_for_every_state() {
    let b = filled(settings(StateBackendKind::RocksDb, ROCKSDB_NATIVE_METRICS));
    let m = metrics(&b);
    for state in ["count", "seen"] {
        for property in ROCKSDB_NATIVE_METRICS {
            value(&m, state, property);
        }
    }
    // What was written: one entry per key in each state (the estimate is
    // exact here: every key was written once, nothing deleted), in SST
    // files after the snapshot flushed the memtables.
    assert_eq!(value(&m, "count", "estimate-num-keys"), KEYS);
    assert_eq!(value(&m, "seen", "estimate-num-keys"), KEYS);
    assert!(value(&m, "count", "total-sst-files-size") > 0);
    assert!(value(&m, "count", "live-sst-files-size") > 0);
    assert_eq!(value(&m, "count", "background-errors"), 0);
    assert_eq!(value(&m, "count", "is-write-stopped"), 0);
    assert!(value(&m, "count", "block-cache-capacity") > 0);
}

#[test]
fn only_what_is_switched_on_and_nothing_on_the_heap() {
    let b = filled(settings(StateBackendKind::RocksDb, &["estimate-num-keys"]));
    let mut m = metrics(&b);
    m.sort_by(|a, b| a.state.cmp(&b.state));
    let got: Vec<(&str, &str)> = m.iter().map(|m| (m.state.as_str(), m.property)).collect();
    assert_eq!(
        got,
        vec![
            ("count", "estimate-num-keys"),
            ("seen", "estimate-num-keys")
        ]
    );
    assert!(metrics(&filled(settings(StateBackendKind::RocksDb, &[]))).is_empty());
    let heap = filled(settings(StateBackendKind::HashMap, ROCKSDB_NATIVE_METRICS));
    assert!(metrics(&heap).is_empty(), "the heap backend has none");
}
