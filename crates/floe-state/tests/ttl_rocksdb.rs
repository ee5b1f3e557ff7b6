//! The State TTL suite (`ttl/suite.rs`) on the RocksDB backend, its
//! compaction filter, and TTL state moving between the backends through
//! canonical snapshots.
#![cfg(feature = "rocksdb")]

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::RocksDb;

include!("ttl/suite.rs");

fn heap_at(range: KeyGroupRange, clock: &Arc<AtomicI64>) -> KeyedStateBackend<u64> {
    let mut b = KeyedStateBackend::new(
        floe_state::StateBackendKind::HashMap,
        "ttl-op",
        range,
        MAX_P,
    )
    .expect("opens");
    let clock = clock.clone();
    b.set_ttl_time_provider(move || clock.load(Ordering::Relaxed));
    b
}

fn property(b: &mut KeyedStateBackend<u64>, name: &str, p: &str) -> u64 {
    b.rocksdb_state_property(name, p).unwrap().unwrap()
}

/// Expired entries vanish from the column family at its next compaction,
/// without a single read: fewer keys, fewer bytes.
#[test]
fn compaction_filter_drops_expired_entries() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let cfg = StateTtlConfig::new_builder(Duration::from_millis(100))
        .disable_cleanup_in_background()
        .cleanup_in_rocksdb_compact_filter(10)
        .build();
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    let m = b
        .get_map_state(
            &MapStateDescriptor::<u64, String>::new("m").enable_time_to_live(cfg.clone()),
        )
        .unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<String>::new("l").enable_time_to_live(cfg))
        .unwrap();
    let plain = b
        .get_state(&ValueStateDescriptor::<u64>::new("plain"))
        .unwrap();
    let payload = "x".repeat(100);
    for k in 0..2000u64 {
        // Even keys written at 0, odd keys at 50.
        clock.store(if k % 2 == 0 { 0 } else { 50 }, Ordering::Relaxed);
        set_key(&mut b, k);
        v.update(&mut b, k).unwrap();
        plain.update(&mut b, k).unwrap();
        m.put_all(&mut b, (0..4).map(|i| (i, payload.clone())))
            .unwrap();
        // One element per generation in every list.
        l.update(&mut b, vec![payload.clone()]).unwrap();
        clock.store(0, Ordering::Relaxed);
        l.add(&mut b, payload.clone()).unwrap();
    }
    for s in ["v", "m", "l", "plain"] {
        b.rocksdb_compact_state(s).unwrap();
    }
    let keys = |b: &mut KeyedStateBackend<u64>, s| property(b, s, "rocksdb.estimate-num-keys");
    let size = |b: &mut KeyedStateBackend<u64>, s| property(b, s, "rocksdb.total-sst-files-size");
    assert_eq!(keys(&mut b, "v"), 2000);
    assert_eq!(keys(&mut b, "m"), 8000);
    let (v_size, m_size, l_size) = (size(&mut b, "v"), size(&mut b, "m"), size(&mut b, "l"));

    clock.store(120, Ordering::Relaxed);
    for s in ["v", "m", "l", "plain"] {
        b.rocksdb_compact_state(s).unwrap();
    }
    assert_eq!(keys(&mut b, "v"), 1000, "expired values dropped");
    assert_eq!(keys(&mut b, "m"), 4000, "expired map entries dropped");
    assert_eq!(keys(&mut b, "plain"), 2000, "no TTL, nothing dropped");
    assert!(
        size(&mut b, "v") < v_size * 3 / 4,
        "{v_size} -> {}",
        size(&mut b, "v")
    );
    assert!(
        size(&mut b, "m") < m_size * 3 / 4,
        "{m_size} -> {}",
        size(&mut b, "m")
    );
    // Every list lost its old element; the even keys' lists are gone.
    assert!(
        size(&mut b, "l") < l_size * 3 / 4,
        "{l_size} -> {}",
        size(&mut b, "l")
    );
    assert_eq!(keys(&mut b, "l"), 1000);
    set_key(&mut b, 1);
    assert_eq!(
        l.get(&mut b).unwrap().collect::<Vec<_>>(),
        vec![payload.clone()]
    );

    clock.store(1000, Ordering::Relaxed);
    for s in ["v", "m", "l"] {
        b.rocksdb_compact_state(s).unwrap();
        assert_eq!(keys(&mut b, s), 0, "{s}: everything expired");
    }
}

/// The compaction filter reads the clock set after registration.
#[test]
fn compaction_filter_follows_a_clock_set_later() {
    let mut b = KeyedStateBackend::new(BACKEND, "ttl-op", everything(), MAX_P).unwrap();
    let v = b
        .get_state(
            &ValueStateDescriptor::<u64>::new("v").enable_time_to_live(StateTtlConfig::new(TTL)),
        )
        .unwrap();
    let clock = Arc::new(AtomicI64::new(0));
    let c = clock.clone();
    b.set_ttl_time_provider(move || c.load(Ordering::Relaxed));
    for k in 0..100u64 {
        set_key(&mut b, k);
        v.update(&mut b, k).unwrap();
    }
    clock.store(100, Ordering::Relaxed);
    b.rocksdb_compact_state("v").unwrap();
    assert_eq!(property(&mut b, "v", "rocksdb.estimate-num-keys"), 0);
}

/// Heap -> RocksDB -> heap through canonical snapshots (savepoints): the
/// bytes are the same and the timestamps intact.
#[test]
fn ttl_state_round_trips_between_backends_with_its_timestamps() {
    let clock = Arc::new(AtomicI64::new(0));
    let cfg = StateTtlConfig::new_builder(Duration::from_millis(100))
        .disable_cleanup_in_background()
        .build();
    let mut heap = heap_at(everything(), &clock);
    two_generations(&mut heap, &clock, cfg.clone());
    let m = heap
        .get_map_state(&MapStateDescriptor::<u64, u64>::new("m").enable_time_to_live(cfg.clone()))
        .unwrap();
    for k in 0..50u64 {
        clock.store(k as i64, Ordering::Relaxed);
        set_key(&mut heap, k);
        m.put(&mut heap, k, k).unwrap();
    }
    let from_heap = heap.snapshot().encode().unwrap();

    let mut rocks = restore(everything(), &clock, std::slice::from_ref(&from_heap));
    rocks
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    rocks
        .get_list_state(&ListStateDescriptor::<u64>::new("l").enable_time_to_live(cfg.clone()))
        .unwrap();
    rocks
        .get_map_state(&MapStateDescriptor::<u64, u64>::new("m").enable_time_to_live(cfg.clone()))
        .unwrap();
    let from_rocks = rocks.snapshot().encode().unwrap();
    assert_eq!(
        entries_of::<TtlValue<u64>>(&from_heap, "v"),
        entries_of::<TtlValue<u64>>(&from_rocks, "v")
    );
    assert_eq!(
        entries_of::<Vec<TtlValue<u64>>>(&from_heap, "l"),
        entries_of::<Vec<TtlValue<u64>>>(&from_rocks, "l")
    );
    let sorted_maps = |bytes: &[u8]| {
        entries_of::<HashMap<u64, TtlValue<u64>>>(bytes, "m")
            .into_iter()
            .map(|(k, m)| (k, m.into_iter().collect::<BTreeMap<_, _>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(sorted_maps(&from_heap), sorted_maps(&from_rocks));
    assert_eq!(sorted_maps(&from_rocks).len(), 50);

    // Back on the heap, at 120: the first generation is expired there too.
    clock.store(120, Ordering::Relaxed);
    let mut back = {
        let mut b = heap_at(everything(), &clock);
        b.restore([from_rocks.as_slice()]).unwrap();
        b
    };
    let v = back
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    let m = back
        .get_map_state(&MapStateDescriptor::<u64, u64>::new("m").enable_time_to_live(cfg))
        .unwrap();
    set_key(&mut back, 10);
    assert_eq!(v.value(&mut back).unwrap(), None, "written at 0");
    assert_eq!(m.get(&mut back, &10).unwrap(), None, "written at 10");
    set_key(&mut back, 30);
    assert_eq!(m.get(&mut back, &30).unwrap(), Some(30), "written at 30");
    set_key(&mut back, 150);
    assert_eq!(v.value(&mut back).unwrap(), Some(150), "written at 50");
}
