//! The State TTL suite (`ttl/suite.rs`) on the heap backend, and the
//! heap's incremental cleanup.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

include!("ttl/suite.rs");

fn stored(b: &mut KeyedStateBackend<u64>, name: &str) -> usize {
    b.keys_per_key_group(name).unwrap().iter().sum()
}

/// Incremental cleanup removes expired entries that are never read: each
/// access of the state checks a few more keys.
#[test]
fn incremental_cleanup_removes_entries_without_reading_them() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let cfg = StateTtlConfig::new_builder(TTL)
        .disable_cleanup_in_background()
        .cleanup_incrementally(10, false)
        .build();
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg))
        .unwrap();
    for k in 0..1000u64 {
        set_key(&mut b, k);
        v.update(&mut b, k).unwrap();
    }
    assert_eq!(stored(&mut b, "v"), 1000);
    // Expired; only key 5000 is touched from now on.
    clock.store(100, Ordering::Relaxed);
    set_key(&mut b, 5000);
    for _ in 0..50 {
        v.update(&mut b, 0).unwrap();
    }
    let left = stored(&mut b, "v");
    assert!(
        left <= 1000 - 450 && left > 1,
        "50 accesses x 10 checked: {left} left"
    );
    for _ in 0..200 {
        v.update(&mut b, 0).unwrap();
    }
    assert_eq!(stored(&mut b, "v"), 1, "only the key still written is left");
}

/// With `run_for_every_record`, every record (every current key) cleans,
/// even when the function does not touch the state.
#[test]
fn incremental_cleanup_can_run_on_every_record() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let cfg = StateTtlConfig::new_builder(TTL)
        .disable_cleanup_in_background()
        .cleanup_incrementally(10, true)
        .build();
    let l = b
        .get_list_state(&ListStateDescriptor::<u64>::new("l").enable_time_to_live(cfg))
        .unwrap();
    for k in 0..500u64 {
        set_key(&mut b, k);
        l.add(&mut b, k).unwrap();
    }
    clock.store(5, Ordering::Relaxed);
    for k in 0..500u64 {
        set_key(&mut b, k);
        l.add(&mut b, k).unwrap();
    }
    // The first elements expire, the second ones not yet.
    clock.store(12, Ordering::Relaxed);
    for k in 0..100u64 {
        set_key(&mut b, 10_000 + k);
    }
    assert_eq!(stored(&mut b, "l"), 500, "lists keep their live elements");
    clock.store(20, Ordering::Relaxed);
    for k in 0..100u64 {
        set_key(&mut b, 10_000 + k);
    }
    assert_eq!(stored(&mut b, "l"), 0);
}

/// Without TTL nothing runs: a TTL state's incremental cleanup on other
/// states' accesses does not touch them.
#[test]
fn states_without_ttl_keep_everything() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let plain = b
        .get_state(&ValueStateDescriptor::<u64>::new("plain"))
        .unwrap();
    let ttl = b
        .get_state(
            &ValueStateDescriptor::<u64>::new("ttl").enable_time_to_live(StateTtlConfig::new(TTL)),
        )
        .unwrap();
    for k in 0..100u64 {
        set_key(&mut b, k);
        plain.update(&mut b, k).unwrap();
        ttl.update(&mut b, k).unwrap();
    }
    clock.store(1_000_000, Ordering::Relaxed);
    for _ in 0..100 {
        ttl.value(&mut b).unwrap();
    }
    assert_eq!(stored(&mut b, "plain"), 100);
    assert_eq!(stored(&mut b, "ttl"), 0, "default background cleanup");
}
