// Keyed state snapshots: round trips, frozen copies, rescaling by key-group
// range, carried state, and clear errors on incompatible or corrupt input —
// for the backend `BACKEND` of the including file (`snapshot_restore_heap.rs`,
// `snapshot_restore_rocksdb.rs`).

use std::collections::HashMap;

use floe_state::{
    AggregateFunction, AggregatingStateDescriptor, KeyGroupRange, KeyedStateBackend,
    KeyedStateFile, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateError, ValueStateDescriptor, key_group_for_key,
};

const MAX_P: u32 = 128;

fn backend(p: u32, i: u32) -> KeyedStateBackend<u64> {
    KeyedStateBackend::new(
        BACKEND,
        "op",
        KeyGroupRange::for_operator_index(MAX_P, p, i),
        MAX_P,
    )
    .expect("the backend opens")
}

fn owner(key: u64, p: u32) -> u32 {
    let kg = key_group_for_key(&key, MAX_P);
    (0..p)
        .find(|i| KeyGroupRange::for_operator_index(MAX_P, p, *i).contains(kg))
        .unwrap()
}

#[derive(Clone)]
struct Avg;
impl AggregateFunction for Avg {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, v: u64, acc: &mut (u64, u64)) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Expected per-key contents of every state kind, computed independently.
#[derive(Default, Debug, PartialEq)]
struct Model {
    value: HashMap<u64, u64>,
    list: HashMap<u64, Vec<u64>>,
    map: HashMap<u64, HashMap<String, u64>>,
    reduce: HashMap<u64, u64>,
    avg: HashMap<u64, (u64, u64)>,
}

fn fill(b: &mut KeyedStateBackend<u64>, keys: impl Iterator<Item = u64>, model: &mut Model) {
    let value = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let map = b
        .get_map_state(&MapStateDescriptor::<String, u64>::new("map"))
        .unwrap();
    let reduce = b
        .get_reducing_state(&ReducingStateDescriptor::new("reduce", |a: u64, c: u64| {
            a.max(c)
        }))
        .unwrap();
    let avg = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))
        .unwrap();
    for k in keys {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        let v = k * 7 % 13;
        value.update(b, v).unwrap();
        model.value.insert(k, v);
        list.add(b, v).unwrap();
        list.add(b, v + 1).unwrap();
        model.list.entry(k).or_default().extend([v, v + 1]);
        map.put(b, format!("u{v}"), k).unwrap();
        model.map.entry(k).or_default().insert(format!("u{v}"), k);
        reduce.add(b, v).unwrap();
        let r = model.reduce.entry(k).or_insert(v);
        *r = (*r).max(v);
        avg.add(b, v).unwrap();
        let a = model.avg.entry(k).or_insert((0, 0));
        a.0 += v;
        a.1 += 1;
    }
}

/// Reads every state of every key in `keys` back into a model.
fn read(b: &mut KeyedStateBackend<u64>, keys: impl Iterator<Item = u64>) -> Model {
    let value = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let map = b
        .get_map_state(&MapStateDescriptor::<String, u64>::new("map"))
        .unwrap();
    let reduce = b
        .get_reducing_state(&ReducingStateDescriptor::new("reduce", |a: u64, c: u64| {
            a.max(c)
        }))
        .unwrap();
    let avg = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))
        .unwrap();
    let mut m = Model::default();
    for k in keys {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        if let Some(v) = value.value(b).unwrap() {
            m.value.insert(k, v);
        }
        let l: Vec<_> = list.get(b).unwrap().collect();
        if !l.is_empty() {
            m.list.insert(k, l);
        }
        let entries: HashMap<String, u64> = map.entries(b).unwrap().collect();
        if !entries.is_empty() {
            m.map.insert(k, entries);
        }
        if let Some(r) = reduce.get(b).unwrap() {
            m.reduce.insert(k, r);
        }
        if let Some(a) = avg.get(b).unwrap() {
            // Recover the accumulator through the model's count to compare
            // exactly: the restored average must equal sum / count.
            m.avg.insert(k, ((a * 1e6) as u64, 0));
        }
    }
    m
}

fn avg_view(model: &Model) -> HashMap<u64, (u64, u64)> {
    model
        .avg
        .iter()
        .map(|(k, (s, c))| (*k, (((*s as f64 / *c as f64) * 1e6) as u64, 0)))
        .collect()
}

#[test]
fn round_trip_every_state_kind() {
    let mut b = backend(1, 0);
    let mut model = Model::default();
    fill(&mut b, 0..500, &mut model);
    fill(&mut b, (0..500).step_by(3), &mut model);
    let bytes = b.snapshot().encode().unwrap();

    let mut restored = backend(1, 0);
    restored.restore([bytes.as_slice()]).unwrap();
    let mut got = read(&mut restored, 0..600);
    let want_avg = avg_view(&model);
    got.avg = got.avg.into_iter().collect();
    assert_eq!(got.value, model.value);
    assert_eq!(got.list, model.list);
    assert_eq!(got.map, model.map);
    assert_eq!(got.reduce, model.reduce);
    assert_eq!(got.avg, want_avg);
}

#[test]
fn snapshot_is_a_frozen_copy() {
    let mut b = backend(1, 0);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    for k in 0..100u64 {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        v.update(&mut b, 1).unwrap();
    }
    let snap = b.snapshot();
    // Processing goes on after the synchronous part…
    for k in 0..200u64 {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        v.update(&mut b, 2).unwrap();
    }
    // …and the asynchronous part still sees the state at snapshot time.
    let bytes = std::thread::spawn(move || snap.encode().unwrap())
        .join()
        .unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let v = r
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    for k in 0..200u64 {
        r.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        let want = if k < 100 { Some(1) } else { None };
        assert_eq!(v.value(&mut r).unwrap(), want, "key {k}");
    }
}

/// Checkpoint after checkpoint, each snapshot encodes exactly its own
/// state, while the key set shrinks and grows between them (the heap
/// backend reuses the buffers it encoded groups into on write, so a reused
/// buffer must start empty).
#[test]
fn successive_snapshots_encode_exactly_their_own_state() {
    let mut b = backend(1, 0);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let mut live: HashMap<u64, u64> = HashMap::new();
    for (round, keys) in [(1u64, 500u64), (2, 50), (3, 800), (4, 10), (5, 300)] {
        // Keys at or above `keys` are cleared: the state shrinks or grows.
        for k in 0..800u64 {
            b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            if k < keys {
                v.update(&mut b, round * 1_000_000_007 + k).unwrap();
                live.insert(k, round * 1_000_000_007 + k);
            } else {
                v.clear(&mut b).unwrap();
                live.remove(&k);
            }
        }
        let snap = b.snapshot();
        let want = live.clone();
        // The first write to every group after the barrier encodes it for
        // the snapshot.
        for k in 0..800u64 {
            b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            v.update(&mut b, u64::MAX - k).unwrap();
        }
        let bytes = snap.encode().unwrap();
        let mut r = backend(1, 0);
        r.restore([bytes.as_slice()]).unwrap();
        let rv = r
            .get_state(&ValueStateDescriptor::<u64>::new("value"))
            .unwrap();
        for k in 0..800u64 {
            r.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            assert_eq!(rv.value(&mut r).unwrap(), want.get(&k).copied(), "round {round}, key {k}");
        }
    }
}

/// Copy-on-write: two snapshots in flight at once, with writes before,
/// between and after them, each encode exactly the state at their barrier,
/// and the live state keeps every write.
#[test]
fn overlapping_snapshots_each_see_their_own_state() {
    let mut b = backend(1, 0);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, u64>::new("map"))
        .unwrap();
    let write = |b: &mut KeyedStateBackend<u64>, round: u64| {
        for k in 0..300u64 {
            b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            v.update(b, round).unwrap();
            m.put(b, round as u32, k * round).unwrap();
        }
    };
    write(&mut b, 1);
    let first = b.snapshot();
    write(&mut b, 2);
    let second = b.snapshot();
    write(&mut b, 3);
    let encoded = |snap: floe_state::KeyedStateSnapshot| {
        std::thread::spawn(move || snap.encode().unwrap())
            .join()
            .unwrap()
    };
    for (bytes, rounds) in [(encoded(second), 2u64), (encoded(first), 1)] {
        let mut r = backend(1, 0);
        r.restore([bytes.as_slice()]).unwrap();
        let v = r
            .get_state(&ValueStateDescriptor::<u64>::new("value"))
            .unwrap();
        let m = r
            .get_map_state(&MapStateDescriptor::<u32, u64>::new("map"))
            .unwrap();
        for k in 0..300u64 {
            r.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
            assert_eq!(v.value(&mut r).unwrap(), Some(rounds), "key {k}");
            let mut entries = m.entries(&mut r).unwrap().collect::<Vec<_>>();
            entries.sort();
            let want: Vec<(u32, u64)> = (1..=rounds).map(|i| (i as u32, k * i)).collect();
            assert_eq!(entries, want, "key {k}");
        }
    }
    for k in 0..300u64 {
        b.set_current_key(k, key_group_for_key(&k, MAX_P)).unwrap();
        assert_eq!(v.value(&mut b).unwrap(), Some(3));
        assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>().len(), 3);
    }
}

/// Snapshots of 2 subtasks restore into 4 and into 1: every key ends up in
/// exactly the subtask that owns its key group, with its value.
#[test]
fn rescale_by_key_group_range() {
    let keys = 0..2000u64;
    let mut files = Vec::new();
    let mut model = Model::default();
    for i in 0..2 {
        let mut b = backend(2, i);
        fill(
            &mut b,
            keys.clone().filter(|k| owner(*k, 2) == i),
            &mut model,
        );
        files.push(b.snapshot().encode().unwrap());
    }
    for new_p in [4u32, 1, 3] {
        let mut union = Model::default();
        for j in 0..new_p {
            let mut b = backend(new_p, j);
            b.restore(files.iter().map(|f| f.as_slice())).unwrap();
            let mine: Vec<u64> = keys.clone().filter(|k| owner(*k, new_p) == j).collect();
            let got = read(&mut b, mine.iter().copied());
            // A key owned elsewhere must not be here: reading it is refused.
            if let Some(other) = keys.clone().find(|k| owner(*k, new_p) != j) {
                assert!(matches!(
                    b.set_current_key(other, key_group_for_key(&other, MAX_P)),
                    Err(StateError::KeyGroupOutOfRange { .. })
                ));
            }
            let sizes: usize = b.keys_per_key_group("value").unwrap().iter().sum();
            assert_eq!(sizes, mine.len(), "subtask {j}/{new_p} holds only its keys");
            union.value.extend(got.value);
            union.list.extend(got.list);
            union.map.extend(got.map);
            union.reduce.extend(got.reduce);
        }
        assert_eq!(union.value, model.value, "p={new_p}");
        assert_eq!(union.list, model.list, "p={new_p}");
        assert_eq!(union.map, model.map, "p={new_p}");
        assert_eq!(union.reduce, model.reduce, "p={new_p}");
    }
}

#[test]
fn unregistered_state_is_carried_into_the_next_snapshot() {
    let mut b = backend(1, 0);
    let mut model = Model::default();
    fill(&mut b, 0..50, &mut model);
    let first = b.snapshot().encode().unwrap();
    // A new job version only uses "value"; the rest must survive a checkpoint.
    let mut v2 = backend(1, 0);
    v2.restore([first.as_slice()]).unwrap();
    v2.get_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    let second = v2.snapshot().encode().unwrap();
    let names: Vec<String> = KeyedStateFile::decode(&second)
        .unwrap()
        .states
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["value", "list", "map", "reduce", "avg"]);
    let mut v3 = backend(1, 0);
    v3.restore([second.as_slice()]).unwrap();
    let got = read(&mut v3, 0..50);
    assert_eq!(got.list, model.list);
    assert_eq!(got.map, model.map);
}

#[test]
fn incompatible_or_corrupt_snapshots_are_clear_errors() {
    let mut b = backend(1, 0);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    b.set_current_key(5, key_group_for_key(&5u64, MAX_P))
        .unwrap();
    v.update(&mut b, 9).unwrap();
    let bytes = b.snapshot().encode().unwrap();

    // Another kind under the same name.
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let err = r
        .get_list_state(&ListStateDescriptor::<u64>::new("count"))
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRestore { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("'count'"), "{err}");
    // The restored state is kept: the right registration still works.
    let v = r
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    r.set_current_key(5, key_group_for_key(&5u64, MAX_P))
        .unwrap();
    assert_eq!(v.value(&mut r).unwrap(), Some(9));

    // Another value type: refused by the serializer identity the
    // snapshot recorded, before any byte is decoded.
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let err = r
        .get_state(&ValueStateDescriptor::<(u64, u64, u64)>::new("count"))
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { .. }),
        "{err}"
    );
    assert!(r.restore_refusal().is_some());

    // Another number of key groups.
    let mut other = KeyedStateBackend::<u64>::new(
        BACKEND,
        "op",
        KeyGroupRange::for_operator_index(256, 1, 0),
        256,
    )
    .expect("the backend opens");
    let err = other.restore([bytes.as_slice()]).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::MaxParallelismMismatch {
                snapshot: 128,
                operator: 256
            }
        ),
        "{err}"
    );

    // Truncated bytes.
    let mut r = backend(1, 0);
    let err = r.restore([&bytes[..bytes.len() - 3]]).unwrap_err();
    assert!(matches!(err, StateError::Codec { .. }), "{err}");
    // Restoring after registration is refused.
    let mut r = backend(1, 0);
    r.get_state(&ValueStateDescriptor::<u64>::new("x")).unwrap();
    let err = r.restore([bytes.as_slice()]).unwrap_err();
    assert!(
        matches!(err, StateError::RestoreAfterRegistration { .. }),
        "{err}"
    );
    assert!(err.is_permanent());
    // The same key group from two snapshots is refused.
    let mut r = backend(1, 0);
    let err = r
        .restore([bytes.as_slice(), bytes.as_slice()])
        .unwrap_err();
    assert!(
        matches!(err, StateError::InconsistentSnapshots { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("'count'"), "{err}");
    // A state kind this version does not know.
    let mut file = KeyedStateFile::decode(&bytes).unwrap();
    file.states[0].kind = 30;
    let unknown = postcard::to_allocvec(&file).unwrap();
    let err = backend(1, 0).restore([unknown.as_slice()]).unwrap_err();
    assert!(
        matches!(err, StateError::UnknownStateKind { code: 30, .. }),
        "{err}"
    );
    // A canonical snapshot has no native files to write a manifest of.
    let snapshot = b.snapshot();
    let err = snapshot
        .encode_native_into(Vec::new(), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, StateError::NoNativeFiles), "{err}");
    // A heap snapshot hands its key groups over as it encodes them: it is
    // encoded once.
    snapshot.encode().unwrap();
    if BACKEND == floe_state::StateBackendKind::HashMap {
        let err = snapshot.encode().unwrap_err();
        assert!(
            matches!(err, StateError::SnapshotEncodedTwice { .. }),
            "{err}"
        );
    }
}

/// Pinned: the canonical encoding of a tiny snapshot. Savepoints are written
/// in this format; a change must be deliberate (and versioned).
#[test]
fn pinned_encoding() {
    let mut b = backend(1, 0);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    b.set_current_key(42, key_group_for_key(&42u64, MAX_P))
        .unwrap();
    v.update(&mut b, 7).unwrap();
    let bytes = b.snapshot().encode().unwrap();
    let type_name = std::any::type_name::<u64>();
    let mut want = vec![
        0x80,
        0x01, // max parallelism 128 (varint)
        0x00, // key group start 0
        0x7f, // key group end 127
        0x01, // one state
        0x05,
        b'c',
        b'o',
        b'u',
        b'n',
        b't', // name
        0x40, // kind: value (0) | serializer identity (0x40)
        type_name.len() as u8,
    ];
    want.extend_from_slice(type_name.as_bytes());
    // The serializer identity: codec "postcard", format version 1, the
    // types ["u64"], no schema.
    want.push(0x08);
    want.extend_from_slice(b"postcard");
    want.extend_from_slice(&[0x01, 0x01, type_name.len() as u8]);
    want.extend_from_slice(type_name.as_bytes());
    want.push(0x00);
    want.extend_from_slice(&[
        0x01, // one key group with data
        0x1c, // key group 28 (key 42)
        0x01, // one state in it
        0x00, // state index 0
        0x03, // 3 bytes of entries:
        0x01, 0x2a, 0x07, // [(42, 7)]
    ]);
    assert_eq!(bytes, want);
}

/// A snapshot written before serializer identities (its states record
/// only a type name): accepted as it is, and migrated when the recorded
/// type name is the declared migration's old type.
#[test]
fn a_snapshot_without_identities_restores_as_before_and_migrates() {
    use floe_state::snapshot::KeyGroupData;
    let kg = key_group_for_key(&5u64, MAX_P);
    let legacy = floe_state::KeyedStateFile {
        max_parallelism: MAX_P,
        key_group_start: 0,
        key_group_end: (MAX_P - 1) as u16,
        states: vec![floe_state::StateMeta {
            name: "count".into(),
            kind: 0,
            value_type: std::any::type_name::<u32>().into(),
            serializer: None,
        }],
        key_groups: vec![KeyGroupData {
            key_group: kg,
            states: vec![(0, postcard::to_allocvec(&vec![(5u64, 9u32)]).unwrap())],
        }],
    };
    let bytes = postcard::to_allocvec(&legacy).unwrap();
    assert_eq!(KeyedStateFile::decode(&bytes).unwrap().states[0].serializer, None);

    // As it is: the bytes decode as the declared type.
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let v = r.get_state(&ValueStateDescriptor::<u32>::new("count")).unwrap();
    r.set_current_key(5, kg).unwrap();
    assert_eq!(v.value(&mut r).unwrap(), Some(9));

    // Migrated: the recorded type name is the migration's old type.
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let v = r
        .get_state(
            &ValueStateDescriptor::<String>::new("count")
                .with_migration(|old: u32| format!("#{old}")),
        )
        .unwrap();
    r.set_current_key(5, kg).unwrap();
    assert_eq!(v.value(&mut r).unwrap(), Some("#9".to_string()));
    // Its next snapshot records the new identity.
    let meta = &floe_state::KeyedStateFile::decode(&r.snapshot().encode().unwrap())
        .unwrap()
        .states[0];
    assert_eq!(
        meta.serializer,
        Some(floe_state::SerializerIdentity::postcard(&[
            std::any::type_name::<String>()
        ]))
    );
}
