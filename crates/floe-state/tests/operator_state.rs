//! Operator state: list, union list and broadcast state and raw state
//! survive a snapshot and restore — unchanged at the same parallelism,
//! redistributed by their mode at another — and the file format is pinned.

use std::collections::BTreeMap;

use floe_state::operator::{OperatorStateEntry, OperatorStateFile};
use floe_state::{
    KeyGroupRange, ListStateDescriptor, MapStateDescriptor, OperatorStateMode, OperatorStateStore,
    StateError,
};

fn list() -> ListStateDescriptor<String> {
    ListStateDescriptor::new("buffer")
}

fn union() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("offsets")
}

fn rules() -> MapStateDescriptor<String, u32> {
    MapStateDescriptor::new("rules")
}

/// Snapshots of `parallelism` subtasks: subtask `i` holds list elements
/// `i-0 .. i-(i+1)`, union element `100 + i`, the same two rules, raw
/// operator bytes `[i]` and raw keyed bytes for each key group it owns.
fn snapshots(parallelism: u32, max_parallelism: u32) -> Vec<Vec<u8>> {
    (0..parallelism)
        .map(|i| {
            let range = KeyGroupRange::for_operator_index(max_parallelism, parallelism, i);
            let mut s = OperatorStateStore::new("op", Some(range));
            let l = s.get_list_state(&list()).unwrap();
            for j in 0..=i {
                l.add(&mut s, format!("{i}-{j}")).unwrap();
            }
            let u = s.get_union_list_state(&union()).unwrap();
            u.add(&mut s, 100 + u64::from(i)).unwrap();
            let b = s.get_broadcast_state(&rules()).unwrap();
            b.put(&mut s, "a".into(), 1).unwrap();
            b.put(&mut s, "b".into(), 2).unwrap();
            s.raw_operator_output().push(i as u8);
            for kg in range.iter() {
                s.raw_keyed_output(kg)
                    .unwrap()
                    .extend_from_slice(&kg.to_be_bytes());
            }
            s.snapshot(i, parallelism).unwrap()
        })
        .collect()
}

struct Restored {
    list: Vec<String>,
    union: Vec<u64>,
    rules: BTreeMap<String, u32>,
    raw_operator: Vec<Vec<u8>>,
    raw_keyed: Vec<u16>,
}

fn restore(files: &[Vec<u8>], subtask: u32, parallelism: u32, max_parallelism: u32) -> Restored {
    let range = KeyGroupRange::for_operator_index(max_parallelism, parallelism, subtask);
    let mut s = OperatorStateStore::new("op", Some(range));
    let refs: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
    s.restore(&refs, subtask, parallelism).unwrap();
    assert!(s.is_restored());
    let l = s.get_list_state(&list()).unwrap();
    let u = s.get_union_list_state(&union()).unwrap();
    let b = s.get_broadcast_state(&rules()).unwrap();
    let mut union = u.get(&s).unwrap().to_vec();
    union.sort_unstable();
    Restored {
        list: l.get(&s).unwrap().to_vec(),
        union,
        rules: b
            .entries(&s)
            .unwrap()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        raw_operator: s.restored_raw_operator_state().to_vec(),
        raw_keyed: s
            .restored_raw_keyed_state()
            .iter()
            .map(|(kg, b)| {
                assert_eq!(b, &kg.to_be_bytes(), "raw bytes of key group {kg}");
                *kg
            })
            .collect(),
    }
}

fn expected_rules() -> BTreeMap<String, u32> {
    [("a".to_string(), 1), ("b".to_string(), 2)].into()
}

#[test]
fn same_parallelism_restores_each_subtask_unchanged() {
    let files = snapshots(3, 16);
    for i in 0..3u32 {
        let r = restore(&files, i, 3, 16);
        let want: Vec<String> = (0..=i).map(|j| format!("{i}-{j}")).collect();
        assert_eq!(r.list, want, "subtask {i}: its own list back");
        assert_eq!(r.union, vec![100, 101, 102], "union: everything");
        assert_eq!(r.rules, expected_rules());
        assert_eq!(r.raw_operator, vec![vec![i as u8]]);
        let range = KeyGroupRange::for_operator_index(16, 3, i);
        assert_eq!(r.raw_keyed, range.iter().collect::<Vec<_>>());
    }
}

#[test]
fn other_parallelism_splits_lists_evenly_and_copies_the_rest() {
    let files = snapshots(3, 16); // 1 + 2 + 3 = 6 list elements
    for new_p in [1u32, 2, 4, 5] {
        let mut all_list = Vec::new();
        let mut all_raw = Vec::new();
        let mut all_kg = Vec::new();
        for i in 0..new_p {
            let r = restore(&files, i, new_p, 16);
            let n = r.list.len();
            assert!(
                n == 6 / new_p as usize || n == 6 / new_p as usize + 1,
                "p={new_p} subtask {i}: uneven share {n}"
            );
            all_list.extend(r.list);
            assert_eq!(r.union, vec![100, 101, 102], "p={new_p}: union in full");
            assert_eq!(r.rules, expected_rules(), "p={new_p}: broadcast copy");
            all_raw.extend(r.raw_operator);
            all_kg.extend(r.raw_keyed);
        }
        all_list.sort();
        let want: Vec<String> = (0..3)
            .flat_map(|i| (0..=i).map(move |j| format!("{i}-{j}")))
            .collect();
        assert_eq!(all_list, want, "p={new_p}: every element once");
        all_raw.sort();
        assert_eq!(
            all_raw,
            vec![vec![0], vec![1], vec![2]],
            "p={new_p}: raw parts once"
        );
        all_kg.sort_unstable();
        assert_eq!(
            all_kg,
            (0..16).collect::<Vec<u16>>(),
            "p={new_p}: key groups once"
        );
    }
}

#[test]
fn unregistered_restored_state_is_carried_into_the_next_snapshot() {
    let files = snapshots(1, 4);
    let mut s = OperatorStateStore::new("op", Some(KeyGroupRange::new(0, 3)));
    s.restore(&[&files[0]], 0, 1).unwrap();
    // Only the list is registered; union and broadcast are not touched.
    s.get_list_state(&list()).unwrap();
    let again = s.snapshot(0, 1).unwrap();
    let r = restore(&[again], 0, 1, 4);
    assert_eq!(r.union, vec![100]);
    assert_eq!(r.rules, expected_rules());
    assert_eq!(r.list, vec!["0-0".to_string()]);
}

#[test]
fn mode_or_type_mismatch_is_a_clear_error() {
    let files = snapshots(1, 4);
    let mut s = OperatorStateStore::new("op", None);
    s.restore(&[&files[0]], 0, 1).unwrap();
    // Restored as a split list, requested as a union list.
    let e = s
        .get_union_list_state(&ListStateDescriptor::<String>::new("buffer"))
        .err()
        .unwrap();
    assert!(matches!(e, StateError::IncompatibleOperatorState { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("'buffer'") && msg.contains("UnionListState"),
        "{msg}"
    );
    // Restored as String elements, requested as u64.
    let e = s
        .get_union_list_state(&ListStateDescriptor::<Vec<u64>>::new("offsets"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("'offsets'"), "{e}");
    // Registered twice with different shapes.
    let mut s = OperatorStateStore::new("op", None);
    s.get_list_state(&list()).unwrap();
    assert!(s.get_union_list_state(&list()).is_err());
    assert!(
        s.get_list_state(&list()).is_ok(),
        "same shape again is fine"
    );
}

#[test]
fn raw_keyed_output_outside_the_range_is_refused() {
    let mut s = OperatorStateStore::new("op", Some(KeyGroupRange::new(4, 7)));
    assert!(matches!(
        s.raw_keyed_output(8),
        Err(StateError::KeyGroupOutOfRange { key_group: 8, .. })
    ));
    let mut s = OperatorStateStore::new("op", None);
    assert!(matches!(
        s.raw_keyed_output(0),
        Err(StateError::NotKeyed { .. })
    ));
}

#[test]
fn corrupt_file_is_an_error() {
    let mut files = snapshots(1, 4);
    let n = files[0].len();
    files[0].truncate(n - 2);
    let mut s = OperatorStateStore::new("op", None);
    let e = s.restore(&[&files[0]], 0, 1).unwrap_err();
    assert!(e.to_string().contains("operator state"), "{e}");
}

/// The payload layout of an operator state file, byte for byte.
#[test]
fn pinned_encoding() {
    let f = OperatorStateFile {
        subtask: 1,
        parallelism: 2,
        states: vec![OperatorStateEntry {
            name: "b".into(),
            mode: OperatorStateMode::Union,
            type_name: "u8".into(),
            serializer: None,
            elements: vec![vec![7], vec![]],
        }],
        raw_operator: Some(vec![0xAB]),
        raw_keyed: vec![(300, vec![1, 2])],
    };
    let bytes = f.encode().unwrap();
    assert_eq!(
        bytes,
        [
            1, 2, // subtask, parallelism
            1, // one state
            1, b'b', // name
            1,    // mode: Union
            2, b'u', b'8', // type name
            2, 1, 7, 0, // two elements: [7], []
            1, 1, 0xAB, // raw operator: Some([0xAB])
            1, 0xAC, 0x02, 2, 1, 2, // raw keyed: [(300, [1, 2])]
        ]
    );
    assert_eq!(OperatorStateFile::decode(&bytes).unwrap(), f);
}

/// A state's serializer identity follows its type name, flagged in the
/// mode's code (0x40), byte for byte; without one (above) the bytes are
/// those of files written before identities existed.
#[test]
fn pinned_encoding_with_a_serializer_identity() {
    let f = OperatorStateFile {
        subtask: 0,
        parallelism: 1,
        states: vec![OperatorStateEntry {
            name: "b".into(),
            mode: OperatorStateMode::Broadcast,
            type_name: "x".into(),
            serializer: Some(floe_state::SerializerIdentity::postcard(&["u8", "u16"])),
            elements: vec![vec![7]],
        }],
        raw_operator: None,
        raw_keyed: vec![],
    };
    let bytes = f.encode().unwrap();
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0, 1, // subtask, parallelism
        1, // one state
        1, b'b', // name
        0x42, // mode: Broadcast (2) | identity (0x40)
        1, b'x', // type name
        8, b'p', b'o', b's', b't', b'c', b'a', b'r', b'd', // codec
        1, // format version
        2, 2, b'u', b'8', 3, b'u', b'1', b'6', // types
        0, // no schema
        1, 1, 7, // one element: [7]
        0, // no raw operator state
        0, // no raw keyed state
    ];
    assert_eq!(bytes, expected);
    assert_eq!(OperatorStateFile::decode(&bytes).unwrap(), f);
}

/// An operator state restored as another element type is refused with
/// both types named; the same type restores.
#[test]
fn operator_state_of_another_type_is_refused() {
    let mut s = OperatorStateStore::new("op", None);
    let list = s
        .get_list_state(&ListStateDescriptor::<u64>::new("offsets"))
        .unwrap();
    list.add(&mut s, 7).unwrap();
    let file = s.snapshot(0, 1).unwrap();

    let mut same = OperatorStateStore::new("op", None);
    same.restore(&[&file], 0, 1).unwrap();
    let list = same
        .get_list_state(&ListStateDescriptor::<u64>::new("offsets"))
        .unwrap();
    assert_eq!(list.get(&same).unwrap(), &[7]);

    let mut other = OperatorStateStore::new("op", None);
    other.restore(&[&file], 0, 1).unwrap();
    let Err(err) = other.get_list_state(&ListStateDescriptor::<u32>::new("offsets")) else {
        panic!("a u64 list restored as u32 must be refused");
    };
    assert!(
        matches!(err, StateError::IncompatibleSchema { .. }),
        "{err}"
    );
    let msg = err.to_string();
    for needle in [
        "'offsets'",
        "ListState<u64>",
        "ListState<u32>",
        "with_migration",
    ] {
        assert!(msg.contains(needle), "missing {needle}: {msg}");
    }
}

/// Files of two different snapshots (other parallelisms) restored together
/// are refused as inconsistent, not as undecodable.
#[test]
fn files_of_different_snapshots_are_inconsistent() {
    let two = snapshots(2, 128);
    let three = snapshots(3, 128);
    let mut s = OperatorStateStore::new("op", None);
    let err = s
        .restore(&[two[0].as_slice(), three[1].as_slice()], 0, 2)
        .unwrap_err();
    assert!(
        matches!(err, StateError::InconsistentSnapshots { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("parallelism"), "{err}");
}
