//! Operations of a live `KeyedDb` on real RocksDB instances in temp dirs.

use floe_rocksdb::{
    KeyGroupRange, KeyPrefix, KeyedDb, MAX_KEY_GROUP, RocksDbError, RocksDbResources, StateId,
};

fn resources() -> RocksDbResources {
    RocksDbResources::new(64 << 20).unwrap()
}

fn range(start: u16, end: u16) -> KeyGroupRange {
    KeyGroupRange::new(start, end).unwrap()
}

fn enc<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

fn open(dir: &tempfile::TempDir) -> KeyedDb {
    KeyedDb::open(dir.path().join("db"), &resources(), range(0, 127)).unwrap()
}

fn prefix(kg: u16, key: &[u8]) -> KeyPrefix {
    let mut p = KeyPrefix::new();
    p.set(kg, key);
    p
}

/// Elements of a list as `(count, bytes)` built from typed values.
fn elements(values: &[i64]) -> (u32, Vec<u8>) {
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(&enc(v));
    }
    (values.len() as u32, out)
}

fn list_of(db: &KeyedDb, id: StateId, key: &KeyPrefix) -> Option<(u32, Vec<u8>)> {
    db.list_get(id, key)
        .unwrap()
        .map(|l| (l.count(), l.elements().to_vec()))
}

#[test]
fn value_get_put_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let a = db.create_state("a").unwrap();
    let b = db.create_state("b").unwrap();
    assert_eq!(
        db.create_state("a").unwrap(),
        a,
        "registering again finds the same id"
    );
    let k = prefix(7, &enc("alice"));
    let other_kg = prefix(8, &enc("alice"));

    assert!(db.get(a, &k).unwrap().is_none());
    db.put(a, &k, &enc(&41u64)).unwrap();
    db.put(a, &k, &enc(&42u64)).unwrap();
    assert_eq!(&*db.get(a, &k).unwrap().unwrap(), enc(&42u64).as_slice());
    let mut buf = Vec::new();
    assert!(db.get_into(a, &k, &mut buf).unwrap());
    assert_eq!(buf, enc(&42u64));
    // Other states and other key groups are separate.
    assert!(db.get(b, &k).unwrap().is_none());
    assert!(db.get(a, &other_kg).unwrap().is_none());

    db.delete(a, &k).unwrap();
    assert!(db.get(a, &k).unwrap().is_none());
    assert!(!db.get_into(a, &k, &mut buf).unwrap());
    assert!(buf.is_empty());
}

#[test]
fn list_merge_operator_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let l = db.create_state("list").unwrap();
    let k = prefix(3, &enc(&1u32));

    // Append to nothing.
    let (n, e) = elements(&[1, 2]);
    db.list_append(l, &k, n, &e).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[1, 2])));
    // Appending zero elements is a no-op.
    db.list_append(l, &k, 0, &[]).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[1, 2])));

    // Append after put (replaces), then append.
    let (n, e) = elements(&[10]);
    db.list_put(l, &k, n, &e).unwrap();
    let (n, e) = elements(&[-3, 300_000]);
    db.list_append(l, &k, n, &e).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[10, -3, 300_000])));

    // Append after delete starts a new list.
    db.delete(l, &k).unwrap();
    assert_eq!(list_of(&db, l, &k), None);
    let (n, e) = elements(&[5]);
    db.list_append(l, &k, n, &e).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[5])));

    // Putting an empty list deletes.
    db.list_put(l, &k, 0, &[]).unwrap();
    assert_eq!(list_of(&db, l, &k), None);

    // Many operands, across flushes and a full compaction.
    let mut expected = Vec::new();
    for i in 0..1000i64 {
        let (n, e) = elements(&[i, -i]);
        db.list_append(l, &k, n, &e).unwrap();
        expected.extend([i, -i]);
        if i % 250 == 0 {
            db.flush().unwrap();
        }
    }
    assert_eq!(list_of(&db, l, &k), Some(elements(&expected)));
    db.flush().unwrap();
    db.compact_state(l).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&expected)));
    // Put in an SST, appends in the memtable, then compaction.
    let (n, e) = elements(&[7]);
    db.list_put(l, &k, n, &e).unwrap();
    db.flush().unwrap();
    let (n, e) = elements(&[8, 9]);
    db.list_append(l, &k, n, &e).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[7, 8, 9])));
    db.flush().unwrap();
    db.compact_state(l).unwrap();
    assert_eq!(list_of(&db, l, &k), Some(elements(&[7, 8, 9])));
    let mut buf = Vec::new();
    assert_eq!(db.list_get_into(l, &k, &mut buf).unwrap(), Some(3));
    assert_eq!(buf, elements(&[7, 8, 9]).1);
}

#[test]
fn map_operations_stay_within_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let m = db.create_state("map").unwrap();
    // Keys "a" and "ab" in the same key group: "a"'s entries must not
    // include anything of "ab" and vice versa.
    let mut a = prefix(5, &enc("a"));
    let mut ab = prefix(5, &enc("ab"));
    assert!(db.map_is_empty(m, &a).unwrap());
    for uk in ["z", "b", "y"] {
        db.map_put(m, &mut a, &enc(uk), &enc(&(uk.len() as u64)))
            .unwrap();
    }
    db.map_put(m, &mut ab, &enc("c"), &enc(&9u64)).unwrap();
    // A neighbour in the previous and next key group.
    let mut before = prefix(4, &enc("a"));
    let mut after = prefix(6, &enc("a"));
    db.map_put(m, &mut before, &enc("q"), &enc(&0u64)).unwrap();
    db.map_put(m, &mut after, &enc("q"), &enc(&0u64)).unwrap();

    assert_eq!(
        &*db.map_get(m, &mut a, &enc("b")).unwrap().unwrap(),
        enc(&1u64).as_slice()
    );
    assert!(db.map_get(m, &mut a, &enc("c")).unwrap().is_none());
    assert!(db.map_get(m, &mut ab, &enc("b")).unwrap().is_none());

    let collect = |db: &KeyedDb, k: &KeyPrefix| {
        let mut it = db.map_iter(m, k).unwrap();
        let mut out = Vec::new();
        while let Some(e) = it.next_entry().unwrap() {
            out.push((e.user_key.to_vec(), e.value.to_vec()));
        }
        out
    };
    let one = enc(&1u64);
    assert_eq!(
        collect(&db, &a),
        vec![
            (enc("b"), one.clone()),
            (enc("y"), one.clone()),
            (enc("z"), one.clone())
        ]
    );
    assert_eq!(collect(&db, &ab), vec![(enc("c"), enc(&9u64))]);

    db.map_remove(m, &mut a, &enc("y")).unwrap();
    db.map_remove(m, &mut a, &enc("absent")).unwrap();
    assert_eq!(collect(&db, &a).len(), 2);

    db.flush().unwrap();
    db.map_clear(m, &a).unwrap();
    assert!(db.map_is_empty(m, &a).unwrap());
    assert!(collect(&db, &a).is_empty());
    assert!(!db.map_is_empty(m, &ab).unwrap());
    assert!(!db.map_is_empty(m, &before).unwrap());
    assert!(!db.map_is_empty(m, &after).unwrap());
    // Clearing an empty map is fine.
    db.map_clear(m, &a).unwrap();
}

#[test]
fn key_group_iteration_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = KeyedDb::open(dir.path().join("db"), &resources(), range(10, 13)).unwrap();
    let v = db.create_state("v").unwrap();
    let m = db.create_state("m").unwrap();
    for i in 0u32..40 {
        let kg = 10 + (i % 4) as u16;
        let mut k = prefix(kg, &enc(&i));
        db.put(v, &k, &enc(&i)).unwrap();
        for j in 0..(i % 3 + 1) {
            db.map_put(m, &mut k, &enc(&j), &enc(&(i * j))).unwrap();
        }
    }
    assert_eq!(db.key_counts(v).unwrap(), vec![10, 10, 10, 10]);
    assert_eq!(db.key_counts(m).unwrap(), vec![10, 10, 10, 10]);

    // Entries of key group 11, in key order.
    let mut it = db.iter_key_group(v, 11).unwrap();
    let mut keys = Vec::new();
    while let Some(e) = it.next_entry().unwrap() {
        assert_eq!(e.key_group, 11);
        assert!(e.user_key.is_empty());
        assert_eq!(e.value, e.key, "value was the key's own encoding");
        keys.push(e.key.to_vec());
    }
    let mut expected: Vec<Vec<u8>> = (0u32..40).filter(|i| i % 4 == 1).map(|i| enc(&i)).collect();
    expected.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    assert_eq!(keys, expected);

    // Map entries: next_entry sees every entry, next_key each key once.
    let mut it = db.iter_key_group(m, 11).unwrap();
    let mut n = 0;
    while it.next_entry().unwrap().is_some() {
        n += 1;
    }
    let expected_entries: u32 = (0u32..40).filter(|i| i % 4 == 1).map(|i| i % 3 + 1).sum();
    assert_eq!(n, expected_entries);
    let mut it = db.iter_key_group(m, 11).unwrap();
    let mut distinct = Vec::new();
    while let Some(e) = it.next_key().unwrap() {
        distinct.push(e.key.to_vec());
    }
    assert_eq!(distinct, expected);

    // An empty key group and a key group outside the range.
    assert!(
        db.iter_key_group(v, 100)
            .unwrap()
            .next_entry()
            .unwrap()
            .is_none()
    );
    assert!(db.iter_key_groups(v, 5, 4).is_err());
}

#[test]
fn reopen_finds_states_by_name_and_drop_removes_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let res = resources();
    let k = prefix(1, &enc("k"));
    {
        let mut db = KeyedDb::open(&path, &res, range(0, 127)).unwrap();
        let a = db.create_state("default").unwrap(); // no clash with RocksDB's CF
        let b = db.create_state("b").unwrap();
        db.put(a, &k, b"va").unwrap();
        let (n, e) = elements(&[1]);
        db.list_append(b, &k, n, &e).unwrap();
        db.set_remove_on_drop(false);
    }
    assert!(path.exists());
    {
        let mut db = KeyedDb::open(&path, &res, range(0, 127)).unwrap();
        assert_eq!(
            db.state_names(),
            vec!["b".to_string(), "default".to_string()]
        );
        // Registration order may differ from the first run.
        let b = db.create_state("b").unwrap();
        let a = db.create_state("default").unwrap();
        assert_eq!(b, StateId(0));
        assert_eq!(&*db.get(a, &k).unwrap().unwrap(), b"va");
        assert_eq!(list_of(&db, b, &k), Some(elements(&[1])));
    }
    assert!(!path.exists(), "working directory removed on drop");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let k = prefix(1, b"k");
    assert!(matches!(
        db.get(StateId(9), &k),
        Err(RocksDbError::InvalidArgument { .. })
    ));
    assert!(db.put(StateId(9), &k, b"v").is_err());
    assert!(RocksDbResources::new(1024).is_err());
    assert!(KeyGroupRange::new(0, MAX_KEY_GROUP + 1).is_err());
    assert!(
        KeyedDb::open(
            dir.path().join("x"),
            &resources(),
            KeyGroupRange { start: 5, end: 1 }
        )
        .is_err()
    );

    // A list value without its header reads as corrupt…
    let l = db.create_state("l").unwrap();
    db.put(l, &k, &[1, 2]).unwrap();
    let err = db.list_get(l, &k).unwrap_err();
    assert!(matches!(err, RocksDbError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("state 'l'"), "{err}");
    // …and a merge onto it fails the read instead of panicking.
    db.list_append(l, &k, 1, &[0]).unwrap();
    let err = db.list_get(l, &k).unwrap_err();
    assert!(matches!(err, RocksDbError::Db { .. }), "{err}");

    // A working directory that is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        KeyedDb::open(&file, &resources(), range(0, 1)),
        Err(RocksDbError::Io { .. })
    ));
}

#[test]
fn resources_are_shared_between_databases() {
    let dir = tempfile::tempdir().unwrap();
    let res = RocksDbResources::new(32 << 20).unwrap();
    assert!(res.same_as(&res.clone()));
    assert_eq!(res.write_buffer_limit(), 16 << 20);
    assert_eq!(res.cf_write_buffer_size(), 2 << 20);
    let mut db1 = KeyedDb::open(dir.path().join("one"), &res, range(0, 63)).unwrap();
    let mut db2 = KeyedDb::open(dir.path().join("two"), &res.clone(), range(64, 127)).unwrap();
    let s1 = db1.create_state("s").unwrap();
    let s2 = db2.create_state("s").unwrap();

    // Both report the shared cache: same capacity, same usage.
    for db in [&db1, &db2] {
        assert_eq!(
            db.property_int("rocksdb.block-cache-capacity").unwrap(),
            Some(32 << 20)
        );
    }

    // Memtable writes in both databases are tracked by the one manager.
    let wb0 = res.write_buffer_usage();
    let value = vec![7u8; 100];
    for i in 0u32..5000 {
        db1.put(s1, &prefix((i % 64) as u16, &enc(&i)), &value)
            .unwrap();
    }
    let wb1 = res.write_buffer_usage();
    assert!(wb1 > wb0, "db1 writes charged: {wb0} -> {wb1}");
    for i in 0u32..5000 {
        db2.put(s2, &prefix(64 + (i % 64) as u16, &enc(&i)), &value)
            .unwrap();
    }
    let wb2 = res.write_buffer_usage();
    assert!(
        wb2 > wb1,
        "db2 writes charged to the same manager: {wb1} -> {wb2}"
    );
    // …and the manager's reservations are charged to the one cache.
    assert!(
        res.cache_usage() >= wb2 / 2,
        "cache {} wb {wb2}",
        res.cache_usage()
    );

    // Reading flushed data of db1 grows the shared cache that db2 reports.
    db1.flush().unwrap();
    db2.flush().unwrap();
    // Flushing frees the memtables, and their reservations leave the cache
    // in the background: measure once the usage has stopped moving, or a
    // late release can hide the reads' growth (seen on a loaded machine).
    let usage = || {
        db2.property_int("rocksdb.block-cache-usage")
            .unwrap()
            .unwrap()
    };
    let mut before = usage();
    let mut unchanged = 0;
    for _ in 0..500 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = usage();
        unchanged = if now == before { unchanged + 1 } else { 0 };
        before = now;
        if unchanged == 10 {
            break;
        }
    }
    for i in 0u32..5000 {
        assert!(
            db1.get(s1, &prefix((i % 64) as u16, &enc(&i)))
                .unwrap()
                .is_some()
        );
    }
    let after = db2
        .property_int("rocksdb.block-cache-usage")
        .unwrap()
        .unwrap();
    assert!(
        after > before,
        "db1's reads show in db2's cache: {before} -> {after}"
    );
    // Same number through both databases and the resources (sampled until
    // no background job changes it between the reads).
    let same = (0..100).any(|_| {
        let u1 = db1
            .property_int("rocksdb.block-cache-usage")
            .unwrap()
            .unwrap();
        let u2 = db2
            .property_int("rocksdb.block-cache-usage")
            .unwrap()
            .unwrap();
        let r = res.cache_usage() as u64;
        u1 == u2 && u2 == r
    });
    assert!(same, "one cache");
}

#[test]
fn handles_can_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    // The backend moves to its task thread; checkpoint readers run on
    // snapshot threads; resources are shared by all.
    send::<KeyedDb>();
    send::<floe_rocksdb::CheckpointReader>();
    send_sync::<RocksDbResources>();
    send_sync::<RocksDbError>();
}

#[test]
fn in_place_overwrites_read_back_everywhere() {
    // Values shrink and grow while the key stays in the mutable memtable,
    // exercising RocksDB's in-place update path and its fallback.
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let s = db.create_state("v").unwrap();
    let keys: Vec<KeyPrefix> = (0u32..50).map(|i| prefix(9, &enc(&i))).collect();
    let mut expected = vec![0u64; keys.len()];
    for round in 0u64..200 {
        for (i, k) in keys.iter().enumerate() {
            // Alternate between 1-byte and up to 10-byte varints.
            let v = if (round + i as u64) % 3 == 0 {
                round
            } else {
                u64::MAX - round
            };
            db.put(s, k, &enc(&v)).unwrap();
            expected[i] = v;
            if round % 50 == 7 && i == 10 {
                db.delete(s, k).unwrap();
                db.put(s, k, &enc(&v)).unwrap();
            }
        }
        if round == 120 {
            db.flush().unwrap();
        }
    }
    for (k, v) in keys.iter().zip(&expected) {
        let got: u64 = postcard::from_bytes(&db.get(s, k).unwrap().unwrap()).unwrap();
        assert_eq!(got, *v);
    }
    let mut it = db.iter_key_group(s, 9).unwrap();
    let mut n = 0;
    while let Some(e) = it.next_entry().unwrap() {
        let i: u32 = postcard::from_bytes(e.key).unwrap();
        let v: u64 = postcard::from_bytes(e.value).unwrap();
        assert_eq!(v, expected[i as usize]);
        n += 1;
    }
    assert_eq!(n, keys.len());
    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    let restored = KeyedDb::restore(
        dir.path().join("r"),
        &resources(),
        range(0, 127),
        vec![(cp, range(0, 127))],
    );
    let mut restored = restored.unwrap();
    let s2 = restored.create_state("v").unwrap();
    for (k, v) in keys.iter().zip(&expected) {
        assert_eq!(&*restored.get(s2, k).unwrap().unwrap(), enc(v).as_slice());
    }
}

/// A TTL value as `floe_state` stores it: the big-endian timestamp, then
/// the postcard value.
fn stamped(ts: i64, v: u64) -> Vec<u8> {
    let mut out = ts.to_be_bytes().to_vec();
    out.extend_from_slice(&enc(&v));
    out
}

/// Postcard `u64`s below 128 take one byte: a stamped one takes nine.
fn nine(bytes: &[u8]) -> Option<usize> {
    (bytes.len() >= 9).then_some(9)
}

#[test]
fn ttl_compaction_filter_drops_expired_entries_without_reads() {
    use floe_rocksdb::{TtlCompaction, TtlFilter};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let mut db = open(&dir);
    let now = Arc::new(AtomicI64::new(0));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::Relaxed)) as floe_rocksdb::TtlClock
    };
    let ttl = |element_len| TtlCompaction {
        filter: TtlFilter {
            ttl_ms: 100,
            element_len,
        },
        clock: clock.clone(),
        query_time_after: 10,
    };
    let values = db.create_state("values").unwrap();
    let lists = db.create_state("lists").unwrap();
    let plain = db.create_state("plain").unwrap();
    db.set_state_ttl("values", Some(ttl(None)));
    db.set_state_ttl("lists", Some(ttl(Some(nine))));
    for i in 0..1000u64 {
        let k = prefix((i % 128) as u16, &enc(&i));
        // Half the keys written at 0, half at 50.
        let ts = if i % 2 == 0 { 0 } else { 50 };
        db.put(values, &k, &stamped(ts, i % 100)).unwrap();
        db.put(plain, &k, &stamped(0, i % 100)).unwrap();
        db.list_append(lists, &k, 1, &stamped(0, 1)).unwrap();
        db.list_append(lists, &k, 1, &stamped(ts, 2)).unwrap();
    }
    db.flush().unwrap();
    let keys = |id| {
        db.state_property_int(id, "rocksdb.estimate-num-keys")
            .unwrap()
            .unwrap()
    };
    let size = |id| {
        db.state_property_int(id, "rocksdb.total-sst-files-size")
            .unwrap()
            .unwrap()
    };
    // Nothing expired yet: compaction keeps everything (and merges the
    // list appends into one value per key).
    db.compact_state(values).unwrap();
    db.compact_state(lists).unwrap();
    assert_eq!(keys(values), 1000);
    let list_size = size(lists);
    // At 120 the values written at 0 expired, those written at 50 not.
    now.store(120, Ordering::Relaxed);
    for id in [values, lists, plain] {
        db.compact_state(id).unwrap();
    }
    assert_eq!(keys(values), 500, "expired values dropped");
    assert_eq!(keys(plain), 1000, "a state without TTL keeps everything");
    assert!(size(lists) < list_size, "expired list elements dropped");
    let k_even = prefix(0, &enc(&0u64));
    let k_odd = prefix(1, &enc(&1u64));
    assert!(db.get(values, &k_even).unwrap().is_none());
    assert!(db.get(values, &k_odd).unwrap().is_some());
    assert!(
        list_of(&db, lists, &k_even).is_none(),
        "all elements expired"
    );
    assert_eq!(
        list_of(&db, lists, &k_odd),
        Some((1, stamped(50, 2))),
        "only the unexpired element is left"
    );
    // Later everything has expired.
    now.store(1000, Ordering::Relaxed);
    db.compact_state(values).unwrap();
    db.compact_state(lists).unwrap();
    assert_eq!(keys(values), 0);
    assert_eq!(keys(lists), 0);
}
