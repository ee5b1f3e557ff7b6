//! Batch prefetching on the heap backend: it starts once a state outgrows
//! the CPU's caches, and a prefetched batch reads exactly what it would
//! have read without it. (RocksDB's prefetch is checked against a model in
//! `rocksdb_write_back.rs`.)

use floe_state::{KeyGroupRange, KeyedStateBackend, StateBackendKind, ValueStateDescriptor};

const MAX_P: u32 = 128;

#[test]
fn heap_prefetches_only_large_state_and_reads_are_unchanged() {
    let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
    let mut b =
        KeyedStateBackend::<u64>::new(StateBackendKind::HashMap, "op", range, MAX_P).unwrap();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let set = |b: &mut KeyedStateBackend<u64>, k: u64| {
        let kg = floe_state::key_group_for_key(&k, MAX_P);
        b.set_current_key(k, kg).unwrap();
    };
    for k in 0..1_000u64 {
        set(&mut b, k);
        count.update(&mut b, k * 3).unwrap();
    }
    assert!(!b.prefetches(), "1,000 keys stay in the CPU's caches");
    for k in 1_000..1_100_000u64 {
        set(&mut b, k);
        count.update(&mut b, k * 3).unwrap();
    }
    assert!(b.prefetches(), "1.1 M keys are worth prefetching");
    // A batch with repeats, absent keys and keys of every group.
    let keys: Vec<u64> = (0..2_000u64)
        .map(|i| (i * 7_919) % 1_200_000)
        .chain([5, 5, 5])
        .collect();
    let groups: Vec<_> = keys
        .iter()
        .map(|k| floe_state::key_group_for_key(k, MAX_P))
        .collect();
    b.prefetch(&keys, &groups).unwrap();
    for &k in &keys {
        set(&mut b, k);
        let want = (k < 1_100_000).then_some(k * 3);
        assert_eq!(count.value(&mut b).unwrap(), want, "key {k}");
    }
}
