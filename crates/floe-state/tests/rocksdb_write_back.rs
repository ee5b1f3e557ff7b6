//! The RocksDB backend's write-back cache under a budget so small that it
//! evicts all the time: every read must still see the latest write, clears
//! must stick, and snapshots (taken at random points, with dirty entries in
//! the cache) must hold exactly the model's state, with batches of keys
//! prefetched (as a keyed operator does before each batch) in between. Its own test binary, so
//! the process-wide memory budget is this file's.
#![cfg(feature = "rocksdb")]

use std::collections::HashMap;

use floe_state::{
    HeapConfig, KeyGroupRange, KeyedStateBackend, ReducingStateDescriptor, RocksDbConfig,
    StateBackendKind, StateBackendSettings, ValueStateDescriptor, key_group_for_key,
};
use proptest::prelude::*;

const MAX_P: u32 = 128;

/// RocksDB with the minimum managed memory and a write-back cache of
/// `cache` bytes.
fn rocksdb(cache: u64) -> StateBackendSettings {
    StateBackendSettings {
        kind: StateBackendKind::RocksDb,
        heap: HeapConfig::default(),
        rocksdb: RocksDbConfig {
            managed_memory: RocksDbConfig::MIN_MANAGED_MEMORY,
            write_cache: Some(cache),
            ..RocksDbConfig::default()
        },
    }
}

fn set_key(b: &mut KeyedStateBackend<u64>, key: u64) {
    let kg = key_group_for_key(&key, MAX_P);
    b.set_current_key(key, kg).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Add(u64, u64),
    Clear(u64),
    Snapshot,
    /// The keys of the next records, looked up together.
    Prefetch(Vec<u64>),
}

fn op(keys: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0..keys, 1..1000u64).prop_map(|(k, v)| Op::Add(k, v)),
        2 => (0..keys).prop_map(Op::Clear),
        1 => Just(Op::Snapshot),
        3 => proptest::collection::vec(0..keys, 1..64).prop_map(Op::Prefetch),
    ]
}

/// Restores `bytes` into a heap backend and reads every key of the model.
fn restored_heap(bytes: &[u8], keys: u64) -> HashMap<u64, u64> {
    let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", range, MAX_P).unwrap();
    h.restore([bytes]).unwrap();
    let sum = h
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    let mut out = HashMap::new();
    for k in 0..keys {
        set_key(&mut h, k);
        if let Some(v) = sum.get(&mut h).unwrap() {
            out.insert(k, v);
        }
    }
    out
}

/// A budget too small to split is refused with the keys to change.
#[test]
fn too_little_managed_memory_is_a_clear_error() {
    let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
    let settings = StateBackendSettings {
        kind: StateBackendKind::RocksDb,
        heap: HeapConfig::default(),
        rocksdb: RocksDbConfig {
            managed_memory: 8 << 20,
            ..RocksDbConfig::default()
        },
    };
    let err = KeyedStateBackend::<u64>::new(settings, "op", range, MAX_P)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("taskmanager.memory.managed.size") && err.contains("at least 16mb"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A 16 KB cache holds about 200 entries for up to 3,000 keys, so most
    /// operations evict.
    #[test]
    fn evicting_cache_matches_a_model(ops in proptest::collection::vec(op(3_000), 1..4_000)) {
        let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
        let mut b = KeyedStateBackend::<u64>::new(rocksdb(16 << 10), "op", range, MAX_P).unwrap();
        let sum = b
            .get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
            .unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for op in &ops {
            match *op {
                Op::Add(k, v) => {
                    set_key(&mut b, k);
                    let got = sum.add(&mut b, v).unwrap();
                    let want = model.entry(k).or_default();
                    *want += v;
                    prop_assert_eq!(got, *want);
                }
                Op::Clear(k) => {
                    set_key(&mut b, k);
                    sum.clear(&mut b).unwrap();
                    model.remove(&k);
                    prop_assert_eq!(sum.get(&mut b).unwrap(), None);
                }
                Op::Snapshot => {
                    let bytes = b.snapshot().encode().unwrap();
                    prop_assert_eq!(restored_heap(&bytes, 3_000), model.clone());
                }
                Op::Prefetch(ref keys) => {
                    b.prefetches();
                    let groups: Vec<_> =
                        keys.iter().map(|k| key_group_for_key(k, MAX_P)).collect();
                    b.prefetch(keys, &groups).unwrap();
                }
            }
        }
        let bytes = b.snapshot().encode().unwrap();
        prop_assert_eq!(restored_heap(&bytes, 3_000), model.clone());
        let keys: usize = b.keys_per_key_group("sum").unwrap().iter().sum();
        prop_assert_eq!(keys, model.len());
    }
}

/// A value written only to the cache is visible to key iteration and to
/// the next snapshot, and a later clear removes it from both.
#[test]
fn cached_writes_reach_iteration_and_snapshots() {
    let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
    let mut b = KeyedStateBackend::<u64>::new(rocksdb(4 << 20), "op", range, MAX_P).unwrap();
    let v = b
        .get_state(&ValueStateDescriptor::<String>::new("label"))
        .unwrap();
    for k in 0..10u64 {
        set_key(&mut b, k);
        v.update(&mut b, format!("key {k}")).unwrap();
    }
    let mut keys: Vec<u64> = b
        .keys("label")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    assert_eq!(keys, (0..10).collect::<Vec<_>>());
    set_key(&mut b, 3);
    v.clear(&mut b).unwrap();
    assert_eq!(b.keys("label").unwrap().len(), 9);
    let bytes = b.snapshot().encode().unwrap();
    let mut h =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", range, MAX_P).unwrap();
    h.restore([bytes.as_slice()]).unwrap();
    let hv = h
        .get_state(&ValueStateDescriptor::<String>::new("label"))
        .unwrap();
    for k in 0..10u64 {
        set_key(&mut h, k);
        let want = (k != 3).then(|| format!("key {k}"));
        assert_eq!(hv.value(&mut h).unwrap(), want);
    }
}
