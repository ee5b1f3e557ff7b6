//! State larger than the memory budget: with 16 MB of managed memory the
//! RocksDB backend holds 500,000 keys of 80 incompressible bytes each —
//! several times the budget on disk — while the process's peak resident
//! memory stays bounded, and every value reads back exactly. Its own test binary, so the
//! process-wide budget and the peak RSS are this test's alone.
//!
//! The full-size check (64 MB budget, 50,000,000 keys, peak RSS
//! under 256 MB) runs on a release build with
//! `floe bench keyed-count --backend rocksdb --records 50000000 --keys 50000000 -p 2 -D taskmanager.memory.managed.size=64mb`
//! (BENCHMARKS.md).
#![cfg(feature = "rocksdb")]

use floe_state::{
    HeapConfig, KeyGroupRange, KeyedStateBackend, RocksDbConfig, StateBackendKind,
    StateBackendSettings, ValueStateDescriptor, key_group_for_key,
};

const MAX_P: u32 = 128;
const KEYS: u64 = 500_000;
const BUDGET: u64 = 16 << 20;

/// 80 bytes that depend on `k` and do not compress (splitmix64).
fn value_of(k: u64) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..10)
        .flat_map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}

/// Peak resident set size of this process (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn state_larger_than_the_budget_stays_within_bounded_memory() {
    let local = tempfile::tempdir().unwrap();
    let settings = StateBackendSettings {
        kind: StateBackendKind::RocksDb,
        heap: HeapConfig::default(),
        rocksdb: RocksDbConfig {
            local_dir: local.path().to_path_buf(),
            managed_memory: BUDGET,
            ..RocksDbConfig::default()
        },
    };
    let range = KeyGroupRange::new(0, (MAX_P - 1) as u16);
    let before = peak_rss();
    let mut b = KeyedStateBackend::<u64>::new(settings, "count", range, MAX_P).unwrap();
    let state = b
        .get_state(&ValueStateDescriptor::<Vec<u8>>::new("blob"))
        .unwrap();
    // Read (a miss: the key is new) and write every key, as a process
    // function would.
    for k in 0..KEYS {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        assert_eq!(state.value(&mut b).unwrap(), None);
        state.update(&mut b, value_of(k)).unwrap();
    }
    // Snapshot (flushes everything) so the on-disk size is the whole state.
    drop(b.snapshot());
    let on_disk = dir_size(local.path());
    let peak = peak_rss();
    eprintln!(
        "{KEYS} keys, budget {} MB: {} MB on disk, peak RSS {} MB (before the backend {} MB)",
        BUDGET >> 20,
        on_disk >> 20,
        peak >> 20,
        before >> 20
    );
    assert!(
        on_disk > 2 * BUDGET,
        "the state ({on_disk} bytes) must exceed the budget for this test to mean anything"
    );
    // Budget, plus RocksDB's own overhead outside the cache (table readers,
    // iterators, arenas) and the allocator's slack: well under what the
    // same values take on the heap (over 100 bytes per key here).
    assert!(
        peak < before + 4 * BUDGET,
        "peak RSS {peak} bytes with a {BUDGET}-byte budget"
    );
    for k in (0..KEYS).step_by(331) {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        assert_eq!(state.value(&mut b).unwrap(), Some(value_of(k)), "key {k}");
    }
}
