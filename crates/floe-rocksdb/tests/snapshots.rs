//! Checkpoints, canonical (heap-compatible) encoding, restore and rescale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use floe_rocksdb::{
    CheckpointFileKind, CheckpointReader, KeyGroupRange, KeyPrefix, KeyedDb, MAX_KEY_GROUP,
    RocksDbError, RocksDbResources, StateLayout,
};
use serde::Serialize;

const MAX_PARALLELISM: u16 = 128;

fn resources() -> RocksDbResources {
    RocksDbResources::new(64 << 20).unwrap()
}

fn range(start: u16, end: u16) -> KeyGroupRange {
    KeyGroupRange::new(start, end).unwrap()
}

/// Flink's `computeKeyGroupRangeForOperatorIndex`.
fn range_for(parallelism: u16, index: u16) -> KeyGroupRange {
    let (mp, p, i) = (
        u32::from(MAX_PARALLELISM),
        u32::from(parallelism),
        u32::from(index),
    );
    range(
        ((i * mp).div_ceil(p)) as u16,
        (((i + 1) * mp - 1) / p) as u16,
    )
}

fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

fn prefix(kg: u16, key: &[u8]) -> KeyPrefix {
    let mut p = KeyPrefix::new();
    p.set(kg, key);
    p
}

/// RocksDB's order of keys within a key group: by encoded length, then
/// bytes (the length varint precedes the key).
fn sort_like_rocksdb<K: Serialize, V>(pairs: &mut [(K, V)]) {
    pairs.sort_by_key(|(k, _)| {
        let e = enc(k);
        (e.len(), e)
    });
}

/// Canonical bytes of one key group through a checkpoint reader.
fn canonical(
    reader: &mut CheckpointReader,
    state: &str,
    layout: StateLayout,
    kg: u16,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .encode_key_group(state, layout, kg, &mut out)
        .unwrap()
        .then_some(out)
}

#[test]
fn canonical_value_state_matches_postcard() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut db = KeyedDb::open(dir.path().join("db"), &res, range(0, 127)).unwrap();
    let s = db.create_state("counts").unwrap();
    // Keys of different encoded lengths, values of different varint sizes.
    let mut kg5: Vec<(String, u64)> = vec![
        ("dddd".into(), 1),
        ("a".into(), 300),
        ("c".into(), u64::MAX),
        ("bb".into(), 0),
        ("ab".into(), 127),
    ];
    for (k, v) in &kg5 {
        db.put(s, &prefix(5, &enc(k)), &enc(v)).unwrap();
    }
    db.flush().unwrap();
    // Overwrite one after the flush and delete another: latest wins.
    db.put(s, &prefix(5, &enc("a")), &enc(&301u64)).unwrap();
    db.delete(s, &prefix(5, &enc("bb"))).unwrap();
    kg5[1].1 = 301;
    kg5.remove(3);
    db.put(s, &prefix(6, &enc("z")), &enc(&6u64)).unwrap();

    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    drop(db);

    let mut reader = CheckpointReader::open(&cp, &res).unwrap();
    assert_eq!(reader.state_names(), &["counts".to_string()]);
    sort_like_rocksdb(&mut kg5);
    assert_eq!(
        canonical(&mut reader, "counts", StateLayout::ValueLike, 5),
        Some(enc(&kg5))
    );
    let kg6: Vec<(String, u64)> = vec![("z".into(), 6)];
    assert_eq!(
        canonical(&mut reader, "counts", StateLayout::ValueLike, 6),
        Some(enc(&kg6))
    );
    // An empty key group appends nothing.
    let mut out = vec![0xAA];
    assert!(
        !reader
            .encode_key_group("counts", StateLayout::ValueLike, 7, &mut out)
            .unwrap()
    );
    assert_eq!(out, vec![0xAA]);
    // Appends after existing bytes.
    reader
        .encode_key_group("counts", StateLayout::ValueLike, 6, &mut out)
        .unwrap();
    assert_eq!(out[0], 0xAA);
    assert_eq!(&out[1..], enc(&kg6).as_slice());
    // Unknown state.
    assert!(
        reader
            .encode_key_group("nope", StateLayout::ValueLike, 6, &mut out)
            .is_err()
    );
}

#[test]
fn canonical_list_state_matches_postcard() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut db = KeyedDb::open(dir.path().join("db"), &res, range(0, 127)).unwrap();
    let s = db.create_state("lists").unwrap();
    let append = |db: &mut KeyedDb, key: u32, values: &[i64]| {
        let bytes: Vec<u8> = values.iter().flat_map(enc).collect();
        db.list_append(s, &prefix(9, &enc(&key)), values.len() as u32, &bytes)
            .unwrap();
    };
    let mut expected: Vec<(u32, Vec<i64>)> = Vec::new();
    // Appends only, some before and some after a flush (unmerged operands
    // in an SST and the memtable).
    append(&mut db, 1, &[1, -1]);
    db.flush().unwrap();
    append(&mut db, 1, &[i64::MIN]);
    expected.push((1, vec![1, -1, i64::MIN]));
    // put then append.
    let put_bytes: Vec<u8> = [100i64, 200].iter().flat_map(enc).collect();
    db.list_put(s, &prefix(9, &enc(&300u32)), 2, &put_bytes)
        .unwrap();
    append(&mut db, 300, &[300]);
    expected.push((300, vec![100, 200, 300]));
    // A list emptied by put([]) is absent, as on the heap.
    append(&mut db, 2, &[5]);
    db.list_put(s, &prefix(9, &enc(&2u32)), 0, &[]).unwrap();
    // A long list.
    let long: Vec<i64> = (0..500).map(|i| i * 1_000_003).collect();
    for chunk in long.chunks(7) {
        append(&mut db, 70_000, chunk);
    }
    expected.push((70_000, long));

    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    let mut reader = CheckpointReader::open(&cp, &res).unwrap();
    sort_like_rocksdb(&mut expected);
    assert_eq!(
        canonical(&mut reader, "lists", StateLayout::List, 9),
        Some(enc(&expected))
    );
    assert_eq!(canonical(&mut reader, "lists", StateLayout::List, 8), None);
}

#[test]
fn canonical_map_state_matches_postcard() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut db = KeyedDb::open(dir.path().join("db"), &res, range(0, 127)).unwrap();
    let s = db.create_state("maps").unwrap();
    // User keys of one length, so RocksDB's byte order is BTreeMap's order.
    let mut expected: Vec<(String, BTreeMap<String, u64>)> = Vec::new();
    for (key, n) in [("alice", 3u64), ("bob", 1), ("carol", 40)] {
        let mut k = prefix(17, &enc(key));
        let mut m = BTreeMap::new();
        for j in 0..n {
            let uk = format!("u{j:03}");
            db.map_put(s, &mut k, &enc(&uk), &enc(&(j * j))).unwrap();
            m.insert(uk, j * j);
        }
        if key == "alice" {
            db.flush().unwrap();
        }
        expected.push((key.to_string(), m));
    }
    // Removing an entry, and a map cleared entirely (absent afterwards).
    db.map_remove(s, &mut prefix(17, &enc("carol")), &enc("u005"))
        .unwrap();
    expected[2].1.remove("u005");
    let mut dave = prefix(17, &enc("dave"));
    db.map_put(s, &mut dave, &enc("u000"), &enc(&1u64)).unwrap();
    db.map_clear(s, &dave).unwrap();

    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    let mut reader = CheckpointReader::open(&cp, &res).unwrap();
    sort_like_rocksdb(&mut expected);
    assert_eq!(
        canonical(&mut reader, "maps", StateLayout::Map, 17),
        Some(enc(&expected))
    );

    // A postcard map is `varint(len) ++ pairs`, like a sequence of pairs
    // (what the heap's FxHashMap encodes to as well).
    let single: BTreeMap<String, u64> = [("k".to_string(), 1)].into();
    assert_eq!(enc(&single), enc(&vec![("k".to_string(), 1u64)]));
}

#[test]
fn checkpoint_lists_shareable_sst_files() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut db = KeyedDb::open(dir.path().join("db"), &res, range(0, 127)).unwrap();
    let s = db.create_state("v").unwrap();
    for i in 0u32..1000 {
        db.put(s, &prefix((i % 128) as u16, &enc(&i)), &enc(&i))
            .unwrap();
    }
    let first = db.checkpoint(dir.path().join("cp1")).unwrap();
    assert!(first.sst_files().count() >= 1);
    assert!(first.meta_files().any(|f| f.name == "CURRENT"));
    assert!(first.meta_files().any(|f| f.name.starts_with("MANIFEST-")));
    assert!(first.meta_files().any(|f| f.name.starts_with("OPTIONS-")));
    for f in &first.files {
        let len = std::fs::metadata(first.dir.join(&f.name)).unwrap().len();
        assert_eq!(f.size, len, "{}", f.name);
        assert_eq!(f.kind == CheckpointFileKind::Sst, f.name.ends_with(".sst"));
    }
    assert_eq!(
        first.total_size(),
        first.files.iter().map(|f| f.size).sum::<u64>()
    );

    // The next checkpoint shares the first one's SST files (incremental).
    for i in 1000u32..1100 {
        db.put(s, &prefix((i % 128) as u16, &enc(&i)), &enc(&i))
            .unwrap();
    }
    let second = db.checkpoint(dir.path().join("cp2")).unwrap();
    for f in first.sst_files() {
        assert!(second.sst_files().any(|g| g == f), "{} shared", f.name);
    }
    assert!(second.sst_files().count() > first.sst_files().count());
    // An existing target directory is refused.
    assert!(db.checkpoint(dir.path().join("cp2")).is_err());
}

/// Every entry of every state: `(state, raw key) -> value`.
type Dump = BTreeMap<(String, Vec<u8>), Vec<u8>>;

fn dump(db: &mut KeyedDb) -> Dump {
    let mut out = Dump::new();
    for name in db.state_names() {
        let id = db.create_state(&name).unwrap();
        let mut it = db.iter_key_groups(id, 0, MAX_KEY_GROUP).unwrap();
        while let Some(e) = it.next_entry().unwrap() {
            out.insert((name.clone(), e.raw_key.to_vec()), e.value.to_vec());
        }
    }
    out
}

fn clip(d: &Dump, r: KeyGroupRange) -> Dump {
    d.iter()
        .filter(|((_, k), _)| r.contains(u16::from_be_bytes([k[0], k[1]])))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Fills the subtask owning `r` with value, list and map state (and a state
/// only subtask 1 has); leaves part of it in memtables.
fn populate(db: &mut KeyedDb, r: KeyGroupRange, subtask: u32) {
    let v = db.create_state("value").unwrap();
    let l = db.create_state("list").unwrap();
    let m = db.create_state("map").unwrap();
    let only = (subtask == 1).then(|| db.create_state("only-b").unwrap());
    for i in 0u32..3000 {
        let kg = (i % u32::from(MAX_PARALLELISM)) as u16;
        if !r.contains(kg) {
            continue;
        }
        let mut k = prefix(kg, &enc(&format!("key-{i}")));
        db.put(v, &k, &enc(&u64::from(i))).unwrap();
        db.list_append(l, &k, 1, &enc(&i)).unwrap();
        db.map_put(m, &mut k, &enc(&(i % 5)), &enc(&i)).unwrap();
        db.map_put(m, &mut k, &enc(&(i % 7 + 100)), &enc(&i))
            .unwrap();
        if let Some(o) = only {
            db.put(o, &k, b"b").unwrap();
        }
        if i == 1500 {
            db.flush().unwrap();
        }
    }
    // More list appends after the flush: unmerged operands in the checkpoint.
    for i in 0u32..3000 {
        let kg = (i % u32::from(MAX_PARALLELISM)) as u16;
        if r.contains(kg) && i % 3 == 0 {
            db.list_append(l, &prefix(kg, &enc(&format!("key-{i}"))), 2, &[1, 2])
                .unwrap();
        }
    }
}

/// Two subtasks (0..=63 and 64..=127) checkpointed; returns their dumps
/// and `(checkpoint dir, range)` sources.
fn two_subtasks(root: &Path, res: &RocksDbResources) -> (Dump, Vec<(PathBuf, KeyGroupRange)>) {
    let mut all = Dump::new();
    let mut sources = Vec::new();
    for i in 0..2u16 {
        let r = range_for(2, i);
        let mut db = KeyedDb::open(root.join(format!("old-{i}")), res, r).unwrap();
        populate(&mut db, r, u32::from(i));
        let cp = root.join(format!("cp-{i}"));
        db.checkpoint(&cp).unwrap();
        let d = dump(&mut db);
        assert_eq!(clip(&d, r), d, "subtask {i} holds only its key groups");
        assert!(!d.is_empty());
        all.extend(d);
        sources.push((cp, r));
    }
    (all, sources)
}

#[test]
fn restore_same_range_is_identical_and_links_files() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (all, sources) = two_subtasks(dir.path(), &res);
    let (cp, r) = sources[0].clone();
    let mut db = KeyedDb::restore(dir.path().join("new"), &res, r, vec![(cp, r)]).unwrap();
    assert_eq!(dump(&mut db), clip(&all, r));
    // SST files were hard-linked, not copied.
    use std::os::unix::fs::MetadataExt;
    let linked = std::fs::read_dir(db.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .filter(|e| e.metadata().unwrap().nlink() > 1)
        .count();
    assert!(linked > 0);
    // The restored database is live: list appends merge onto restored lists.
    let l = db.create_state("list").unwrap();
    let k = prefix(1, &enc(&"key-1".to_string()));
    let before = db.list_get(l, &k).unwrap().unwrap().count();
    db.list_append(l, &k, 1, &[9]).unwrap();
    assert_eq!(db.list_get(l, &k).unwrap().unwrap().count(), before + 1);
}

#[test]
fn rescale_two_to_four_three_and_one() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (all, sources) = two_subtasks(dir.path(), &res);
    for parallelism in [4u16, 3, 1] {
        let mut union = Dump::new();
        for i in 0..parallelism {
            let r = range_for(parallelism, i);
            let work = dir.path().join(format!("p{parallelism}-{i}"));
            let mut db = KeyedDb::restore(&work, &res, r, sources.clone()).unwrap();
            assert_eq!(db.key_group_range(), r);
            let got = dump(&mut db);
            let want = clip(&all, r);
            assert_eq!(got.len(), want.len(), "p={parallelism} subtask {i} {r}");
            assert_eq!(got, want, "p={parallelism} subtask {i} {r}");
            // Key counts agree with the entries.
            let v = db.create_state("value").unwrap();
            let counted: usize = db.key_counts(v).unwrap().iter().sum();
            assert_eq!(counted, want.keys().filter(|(s, _)| s == "value").count());
            union.extend(got);
            // No temporary ingest files are left behind.
            assert!(!work.join("restore-ingest").exists());
        }
        assert_eq!(
            union, all,
            "p={parallelism}: nothing missing, nothing extra"
        );
    }
}

#[test]
fn rescaled_checkpoint_encodes_like_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (_, sources) = two_subtasks(dir.path(), &res);
    let all = range(0, 127);
    let db = KeyedDb::restore(dir.path().join("one"), &res, all, sources.clone()).unwrap();
    let cp = dir.path().join("cp-one");
    db.checkpoint(&cp).unwrap();
    let mut merged = CheckpointReader::open(&cp, &res).unwrap();
    let mut originals: Vec<CheckpointReader> = sources
        .iter()
        .map(|(d, _)| CheckpointReader::open(d, &res).unwrap())
        .collect();
    let layouts = [
        ("value", StateLayout::ValueLike),
        ("list", StateLayout::List),
        ("map", StateLayout::Map),
        ("only-b", StateLayout::ValueLike),
    ];
    for kg in all.iter() {
        let src = &mut originals[usize::from(kg >= 64)];
        for (state, layout) in layouts {
            let want = if src.state_names().iter().any(|s| s == state) {
                canonical(src, state, layout, kg)
            } else {
                None
            };
            assert_eq!(
                canonical(&mut merged, state, layout, kg),
                want,
                "{state} kg {kg}"
            );
        }
    }
}

#[test]
fn restore_rejects_bad_sources() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (_, sources) = two_subtasks(dir.path(), &res);
    let r = range(0, 127);

    // Overlapping sources.
    let overlapping = vec![sources[0].clone(), (sources[1].0.clone(), range(60, 127))];
    assert!(matches!(
        KeyedDb::restore(dir.path().join("a"), &res, r, overlapping),
        Err(RocksDbError::InvalidArgument { .. })
    ));
    // A non-empty working directory.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    assert!(KeyedDb::restore(&busy, &res, r, sources.clone()).is_err());
    // A missing checkpoint: error, and the half-built directory is removed.
    let work = dir.path().join("b");
    let missing = vec![(dir.path().join("nope"), range(0, 127))];
    let err = KeyedDb::restore(&work, &res, r, missing).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!work.exists());
    // A corrupt checkpoint (garbage CURRENT and MANIFEST).
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    std::fs::write(bad.join("MANIFEST-000001"), b"garbage").unwrap();
    let work = dir.path().join("c");
    let err = KeyedDb::restore(&work, &res, r, vec![(bad.clone(), r)]).unwrap_err();
    assert!(matches!(err, RocksDbError::Db { .. }), "{err}");
    assert!(!work.exists());
    assert!(CheckpointReader::open(&bad, &res).is_err());
    assert!(CheckpointReader::open(dir.path().join("nope"), &res).is_err());
    // The corrupt one as a secondary source (ingest path) fails cleanly too.
    let work = dir.path().join("d");
    let mixed = vec![sources[0].clone(), (bad, range(64, 127))];
    assert!(KeyedDb::restore(&work, &res, r, mixed).is_err());
    assert!(!work.exists());
    // No overlapping source: an empty database.
    let mut db = KeyedDb::restore(dir.path().join("e"), &res, r, vec![]).unwrap();
    assert!(dump(&mut db).is_empty());
}

/// Whether the newest OPTIONS file RocksDB wrote in `dir` has in-place
/// memtable updates on for state `state`'s column family (read here from
/// RocksDB's own text, independently of the crate's reader).
fn in_place_updates(dir: &Path, state: &str) -> Option<bool> {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: u64 = name.strip_prefix("OPTIONS-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max()?
        .1;
    let text = std::fs::read_to_string(newest).unwrap();
    // RocksDB escapes the ':' of a section's name.
    let header = format!("[CFOptions \"floe-state\\:{state}\"]");
    let section = text.split(&header).nth(1)?;
    let section = section.split("\n[").next()?;
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("inplace_update_support="))
        .map(|v| v == "true")
}

#[test]
fn each_state_keeps_its_write_pattern_through_reopen_restore_and_rescale() {
    use floe_rocksdb::WritePattern;
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut sources = Vec::new();
    for i in 0..2u16 {
        let r = range_for(2, i);
        let mut db = KeyedDb::open(dir.path().join(format!("db-{i}")), &res, r).unwrap();
        let counts = db
            .create_state_with("counts", WritePattern::WriteBack)
            .unwrap();
        let windows = db
            .create_state_with("windows", WritePattern::WriteThrough)
            .unwrap();
        // The default for a state created without a pattern.
        let lists = db.create_state("lists").unwrap();
        for kg in r.start..=r.end {
            let mut k = prefix(kg, &enc(&u64::from(kg)));
            db.put(counts, &k, &enc(&1u64)).unwrap();
            db.map_put(windows, &mut k, &enc(&7u64), &enc(&2u64))
                .unwrap();
            db.list_append(lists, &k, 1, &enc(&3u64)).unwrap();
        }
        assert_eq!(in_place_updates(db.path(), "counts"), Some(false));
        assert_eq!(in_place_updates(db.path(), "windows"), Some(true));
        assert_eq!(in_place_updates(db.path(), "lists"), Some(true));
        let cp = dir.path().join(format!("cp-{i}"));
        db.checkpoint(&cp).unwrap();
        // Reopened in place: the column families are opened before any
        // state is registered, and keep their patterns.
        db.set_remove_on_drop(false);
        let path = db.path().to_path_buf();
        drop(db);
        let db = KeyedDb::open(&path, &res, r).unwrap();
        assert_eq!(
            in_place_updates(db.path(), "counts"),
            Some(false),
            "reopened"
        );
        assert_eq!(
            in_place_updates(db.path(), "windows"),
            Some(true),
            "reopened"
        );
        sources.push((cp, r));
    }
    // Restored at the same parallelism (files linked) and rescaled to one
    // subtask (files ingested into new column families).
    let (cp, r) = sources[0].clone();
    let same = KeyedDb::restore(dir.path().join("same"), &res, r, vec![(cp, r)]).unwrap();
    let all = range(0, MAX_PARALLELISM - 1);
    let one = KeyedDb::restore(dir.path().join("one"), &res, all, sources).unwrap();
    for db in [&same, &one] {
        assert_eq!(in_place_updates(db.path(), "counts"), Some(false));
        assert_eq!(in_place_updates(db.path(), "windows"), Some(true));
        assert_eq!(in_place_updates(db.path(), "lists"), Some(true));
    }
}
