// Semantics of keyed state through `floe-state`'s public API only, for the
// backend `BACKEND` of the test file that includes this suite (one suite,
// every backend: `keyed_state_heap.rs`, `keyed_state_rocksdb.rs`).
//
// Every read is checked against an independent expectation: a literal value,
// or a plain `std::collections::HashMap` model updated in parallel with the
// backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use floe_state::{
    AggregateFunction, AggregatingStateDescriptor, KeyGroupRange, KeyedStateAccess,
    KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateBackendKind, StateError, StateKind, ValueStateDescriptor, key_group_for_key,
};
use proptest::prelude::*;

const MAX_P: u32 = 128;

/// Keys of the property tests: small, so keys are revisited often; every
/// half of the key groups gets some, and some of them share a key group.
const PROP_KEYS: u64 = 32;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Subtask 0 of 2: key groups [0, 63].
fn lower_half() -> KeyGroupRange {
    KeyGroupRange::for_operator_index(MAX_P, 2, 0)
}

/// Subtask 1 of 2: key groups [64, 127].
fn upper_half() -> KeyGroupRange {
    KeyGroupRange::for_operator_index(MAX_P, 2, 1)
}

/// Subtask 2 of 3: key groups [86, 127]. Its start is not a multiple of its
/// length, so a wrong key group → slot mapping cannot pass by accident.
fn last_third() -> KeyGroupRange {
    KeyGroupRange::for_operator_index(MAX_P, 3, 2)
}

/// The only subtask: key groups [0, 127].
fn everything() -> KeyGroupRange {
    KeyGroupRange::for_operator_index(MAX_P, 1, 0)
}

fn backend_for<K: floe_state::Key>(range: KeyGroupRange) -> KeyedStateBackend<K> {
    KeyedStateBackend::new(BACKEND, "op-name", range, MAX_P).expect("the backend opens")
}

/// A backend for subtask 0 of 2 (key groups [0, 63]).
fn backend() -> KeyedStateBackend<u64> {
    backend_for(lower_half())
}

fn kg<K: serde::Serialize + ?Sized>(key: &K) -> u16 {
    key_group_for_key(key, MAX_P)
}

/// Makes `key` current, computing its key group; panics if out of range.
fn set_key<K: floe_state::Key>(b: &mut KeyedStateBackend<K>, key: K) {
    let group = kg(&key);
    b.set_current_key(key, group)
        .expect("test keys are chosen inside the backend's range");
}

/// The first `n` u64 keys (from 0 upwards) whose key group lies in `range`.
fn keys_in(range: KeyGroupRange, n: usize) -> Vec<u64> {
    (0u64..).filter(|k| range.contains(kg(k))).take(n).collect()
}

/// The first u64 key whose key group lies outside `range`.
fn key_outside(range: KeyGroupRange) -> u64 {
    (0u64..).find(|k| !range.contains(kg(k))).unwrap()
}

/// Two distinct keys of `range` that share a key group (so isolation is
/// checked inside one per-group map, not only across maps).
fn two_keys_same_group(range: KeyGroupRange) -> (u64, u64) {
    let mut seen: HashMap<u16, u64> = HashMap::new();
    for k in 0u64.. {
        let g = kg(&k);
        if !range.contains(g) {
            continue;
        }
        if let Some(&first) = seen.get(&g) {
            return (first, k);
        }
        seen.insert(g, k);
    }
    unreachable!()
}

/// Two keys of `range` in different key groups.
fn two_keys_different_groups(range: KeyGroupRange) -> (u64, u64) {
    let a = keys_in(range, 1)[0];
    let b = (0u64..)
        .find(|k| range.contains(kg(k)) && kg(k) != kg(&a))
        .unwrap();
    (a, b)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Expected `keys_per_key_group` for a set of keys holding a value.
fn expected_counts<'a, K: serde::Serialize + 'a>(
    range: KeyGroupRange,
    keys: impl IntoIterator<Item = &'a K>,
) -> Vec<usize> {
    let mut counts = vec![0usize; range.len()];
    for k in keys {
        let g = kg(k);
        assert!(range.contains(g));
        counts[(g - range.start) as usize] += 1;
    }
    counts
}

/// An average: Acc = (sum, count), Out = sum / count.
struct Average;

impl AggregateFunction for Average {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;

    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }

    fn add(&self, value: i64, acc: &mut (i64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }

    fn get_result(&self, acc: &(i64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }

    fn merge(&self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

fn avg(values: &[i64]) -> f64 {
    values.iter().sum::<i64>() as f64 / values.len() as f64
}

fn assert_no_current_key<T: std::fmt::Debug>(r: Result<T, StateError>, state: &str) {
    let e = match r {
        Err(e @ StateError::NoCurrentKey { .. }) => e,
        other => panic!("expected NoCurrentKey for '{state}', got {other:?}"),
    };
    if let StateError::NoCurrentKey { name } = &e {
        assert_eq!(name, state);
    }
    assert!(
        e.to_string().contains(&format!("'{state}'")),
        "message should name the state: {e}"
    );
}

// ---------------------------------------------------------------------------
// Backend basics
// ---------------------------------------------------------------------------

#[test]
fn backend_reports_its_configuration() {
    let b = backend_for::<u64>(upper_half());
    assert_eq!(b.kind(), BACKEND);
    assert_eq!(b.key_group_range(), KeyGroupRange::new(64, 127));
    assert_eq!(b.max_parallelism(), 128);
    assert_eq!(b.operator(), "op-name");
    assert!(b.current_key().is_none());
    assert!(b.current_key_group().is_none());
    assert_eq!(b.registered_states().count(), 0);
    assert_eq!(last_third(), KeyGroupRange::new(86, 127));
}

#[test]
fn set_current_key_exposes_key_and_key_group() {
    for range in [lower_half(), upper_half(), last_third()] {
        let mut b = backend_for::<u64>(range);
        for k in keys_in(range, 20) {
            set_key(&mut b, k);
            assert_eq!(b.current_key(), Some(&k));
            assert_eq!(b.current_key_group(), Some(kg(&k)));
        }
        b.clear_current_key();
        assert!(b.current_key().is_none());
        assert!(b.current_key_group().is_none());
    }
}

#[test]
fn backend_kind_parses_and_displays() {
    assert_eq!(
        "hashmap".parse::<StateBackendKind>(),
        Ok(StateBackendKind::HashMap)
    );
    assert_eq!(
        " HEAP ".parse::<StateBackendKind>(),
        Ok(StateBackendKind::HashMap)
    );
    assert_eq!(
        "RocksDB".parse::<StateBackendKind>(),
        Ok(StateBackendKind::RocksDb)
    );
    assert!(
        "memory"
            .parse::<StateBackendKind>()
            .unwrap_err()
            .contains("hashmap, rocksdb")
    );
    assert_eq!(StateBackendKind::RocksDb.to_string(), "rocksdb");
    assert_eq!(StateBackendKind::HashMap.to_string(), "hashmap");
    assert_eq!(StateBackendKind::default(), StateBackendKind::HashMap);
}

#[test]
fn registered_states_lists_names_and_kinds_in_order() {
    let mut b = backend();
    b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    b.get_list_state(&ListStateDescriptor::<u64>::new("l"))
        .unwrap();
    b.get_map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
    b.get_reducing_state(&ReducingStateDescriptor::<u64>::new("r", |a, b| a + b))
        .unwrap();
    b.get_aggregating_state(&AggregatingStateDescriptor::new("a", Average))
        .unwrap();
    // Re-registration does not add a second entry.
    b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let states: Vec<(String, StateKind)> = b
        .registered_states()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
    assert_eq!(
        states,
        vec![
            ("v".to_string(), StateKind::Value),
            ("l".to_string(), StateKind::List),
            ("m".to_string(), StateKind::Map),
            ("r".to_string(), StateKind::Reducing),
            ("a".to_string(), StateKind::Aggregating),
        ]
    );
}

// ---------------------------------------------------------------------------
// ValueState
// ---------------------------------------------------------------------------

#[test]
fn value_state_is_none_before_first_update() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    for k in keys_in(lower_half(), 10) {
        set_key(&mut b, k);
        assert_eq!(count.value(&mut b).unwrap(), None);
    }
}

#[test]
fn value_state_update_then_value_and_overwrite() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    count.update(&mut b, 5).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), Some(5));
    count.update(&mut b, 7).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), Some(7));
    // Reading does not consume.
    assert_eq!(count.value(&mut b).unwrap(), Some(7));
    count.update(&mut b, 0).unwrap();
    assert_eq!(
        count.value(&mut b).unwrap(),
        Some(0),
        "zero is a value, not absence"
    );
}

#[test]
fn value_state_clear_removes_value_and_is_idempotent() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let k = keys_in(lower_half(), 1)[0];
    set_key(&mut b, k);
    // Clearing an absent value is a no-op.
    count.clear(&mut b).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), None);
    count.update(&mut b, 3).unwrap();
    count.clear(&mut b).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), None);
    count.clear(&mut b).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), None);
    // Usable again after clearing.
    count.update(&mut b, 9).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), Some(9));
    assert_eq!(
        b.keys_per_key_group("count").unwrap().iter().sum::<usize>(),
        1
    );
}

#[test]
fn value_state_keys_are_isolated() {
    for (a, c) in [
        two_keys_same_group(lower_half()),
        two_keys_different_groups(lower_half()),
    ] {
        let mut b = backend();
        let count = b
            .get_state(&ValueStateDescriptor::<u64>::new("count"))
            .unwrap();
        set_key(&mut b, a);
        count.update(&mut b, 11).unwrap();
        set_key(&mut b, c);
        assert_eq!(
            count.value(&mut b).unwrap(),
            None,
            "key {a}'s value leaked to {c}"
        );
        count.update(&mut b, 22).unwrap();
        set_key(&mut b, a);
        assert_eq!(count.value(&mut b).unwrap(), Some(11));
        count.clear(&mut b).unwrap();
        set_key(&mut b, c);
        assert_eq!(
            count.value(&mut b).unwrap(),
            Some(22),
            "clearing {a} touched {c}"
        );
        set_key(&mut b, a);
        assert_eq!(count.value(&mut b).unwrap(), None);
    }
}

#[test]
fn value_state_many_keys_match_model() {
    let mut b = backend();
    let st = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let keys = keys_in(lower_half(), 200);
    let mut model: HashMap<u64, u64> = HashMap::new();
    for round in 0..3u64 {
        for (i, &k) in keys.iter().enumerate() {
            set_key(&mut b, k);
            match (i as u64 + round) % 3 {
                0 => {
                    let v = k * 1000 + round;
                    st.update(&mut b, v).unwrap();
                    model.insert(k, v);
                }
                1 => {
                    st.clear(&mut b).unwrap();
                    model.remove(&k);
                }
                _ => {}
            }
        }
        for &k in &keys {
            set_key(&mut b, k);
            assert_eq!(st.value(&mut b).unwrap(), model.get(&k).copied(), "key {k}");
        }
        assert_eq!(
            b.keys_per_key_group("count").unwrap(),
            expected_counts(lower_half(), model.keys())
        );
    }
}

#[test]
fn several_value_states_are_isolated() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let total = b
        .get_state(&ValueStateDescriptor::<u64>::new("total"))
        .unwrap();
    let label = b
        .get_state(&ValueStateDescriptor::<String>::new("label"))
        .unwrap();
    let k = keys_in(lower_half(), 1)[0];
    set_key(&mut b, k);
    count.update(&mut b, 1).unwrap();
    assert_eq!(total.value(&mut b).unwrap(), None);
    assert_eq!(label.value(&mut b).unwrap(), None);
    total.update(&mut b, 100).unwrap();
    label.update(&mut b, "hello".to_string()).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), Some(1));
    assert_eq!(total.value(&mut b).unwrap(), Some(100));
    assert_eq!(label.value(&mut b).unwrap().as_deref(), Some("hello"));
    count.clear(&mut b).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), None);
    assert_eq!(total.value(&mut b).unwrap(), Some(100));
    assert_eq!(label.value(&mut b).unwrap().as_deref(), Some("hello"));
    assert_eq!(
        b.keys_per_key_group("count").unwrap().iter().sum::<usize>(),
        0
    );
    assert_eq!(
        b.keys_per_key_group("total").unwrap().iter().sum::<usize>(),
        1
    );
    assert_eq!(
        b.keys_per_key_group("label").unwrap().iter().sum::<usize>(),
        1
    );
}

#[test]
fn cloned_handle_reads_the_same_state() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let copy = count.clone();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    count.update(&mut b, 42).unwrap();
    assert_eq!(copy.value(&mut b).unwrap(), Some(42));
    copy.clear(&mut b).unwrap();
    assert_eq!(count.value(&mut b).unwrap(), None);
}

/// Handles work through any `KeyedStateAccess` context, not only the backend.
#[test]
fn handles_work_through_a_custom_context() {
    struct Ctx<'a> {
        backend: &'a mut KeyedStateBackend<u64>,
        accesses: usize,
    }
    impl KeyedStateAccess<u64> for Ctx<'_> {
        fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<u64> {
            self.accesses += 1;
            self.backend
        }
    }

    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let k = keys_in(lower_half(), 1)[0];
    set_key(&mut b, k);
    let mut ctx = Ctx {
        backend: &mut b,
        accesses: 0,
    };
    count.update(&mut ctx, 3).unwrap();
    list.add(&mut ctx, 4).unwrap();
    assert_eq!(count.value(&mut ctx).unwrap(), Some(3));
    assert_eq!(list.get(&mut ctx).unwrap().collect::<Vec<_>>(), vec![4]);
    assert_eq!(ctx.accesses, 4);
    assert_eq!(count.value(&mut b).unwrap(), Some(3));
}

// ---------------------------------------------------------------------------
// ListState
// ---------------------------------------------------------------------------

#[test]
fn list_state_is_empty_before_first_add() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), Vec::<u64>::new());
    assert_eq!(
        b.keys_per_key_group("list").unwrap().iter().sum::<usize>(),
        0
    );
}

#[test]
fn list_state_add_preserves_order() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    let mut expected = Vec::new();
    for v in [5u64, 3, 9, 3, 0, 100, 1] {
        list.add(&mut b, v).unwrap();
        expected.push(v);
        assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), expected);
    }
}

#[test]
fn list_state_add_all_appends_and_empty_is_a_noop() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<String>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    // Empty add_all on an absent list leaves it absent.
    list.add_all(&mut b, std::iter::empty()).unwrap();
    assert!(list.get(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert_eq!(
        b.keys_per_key_group("list").unwrap().iter().sum::<usize>(),
        0
    );
    // First add_all creates the list.
    list.add_all(&mut b, ["a", "b"].map(String::from)).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), ["a", "b"]);
    list.add(&mut b, "c".to_string()).unwrap();
    // add_all appends after existing elements, in iteration order.
    list.add_all(&mut b, (0..3).map(|i| format!("x{i}")))
        .unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), ["a", "b", "c", "x0", "x1", "x2"]);
    // Empty add_all on an existing list changes nothing.
    list.add_all(&mut b, Vec::new()).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), ["a", "b", "c", "x0", "x1", "x2"]);
    assert_eq!(
        b.keys_per_key_group("list").unwrap().iter().sum::<usize>(),
        1
    );
}

#[test]
fn list_state_update_replaces_and_empty_update_clears() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    list.add_all(&mut b, [1, 2, 3]).unwrap();
    list.update(&mut b, vec![7, 8]).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![7, 8]);
    list.add(&mut b, 9).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![7, 8, 9]);
    list.update(&mut b, vec![]).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), Vec::<u64>::new());
    assert_eq!(
        b.keys_per_key_group("list").unwrap().iter().sum::<usize>(),
        0,
        "an empty update must remove the key's list"
    );
    // Update on an absent list creates it.
    list.update(&mut b, vec![4]).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![4]);
    // Empty update on an absent list is fine too.
    list.clear(&mut b).unwrap();
    list.update(&mut b, vec![]).unwrap();
    assert!(list.get(&mut b).unwrap().collect::<Vec<_>>().is_empty());
}

#[test]
fn list_state_clear() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    list.clear(&mut b).unwrap();
    list.add_all(&mut b, [1, 2]).unwrap();
    list.clear(&mut b).unwrap();
    assert!(list.get(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert_eq!(
        b.keys_per_key_group("list").unwrap().iter().sum::<usize>(),
        0
    );
    list.add(&mut b, 3).unwrap();
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn list_state_get_returns_a_copy() {
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    list.add_all(&mut b, [1, 2]).unwrap();
    let mut copy: Vec<u64> = list.get(&mut b).unwrap().collect();
    copy.push(99);
    copy[0] = 42;
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn list_state_keys_are_isolated() {
    let (a, c) = two_keys_same_group(lower_half());
    let mut b = backend();
    let list = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    set_key(&mut b, a);
    list.add_all(&mut b, [1, 2]).unwrap();
    set_key(&mut b, c);
    assert!(list.get(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    list.add(&mut b, 3).unwrap();
    set_key(&mut b, a);
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![1, 2]);
    list.update(&mut b, vec![]).unwrap();
    set_key(&mut b, c);
    assert_eq!(list.get(&mut b).unwrap().collect::<Vec<_>>(), vec![3]);
}

// ---------------------------------------------------------------------------
// MapState
// ---------------------------------------------------------------------------

#[test]
fn map_state_get_put_contains() {
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<String, u64>::new("map"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert_eq!(m.get(&mut b, &"a".to_string()).unwrap(), None);
    assert!(!m.contains(&mut b, &"a".to_string()).unwrap());
    m.put(&mut b, "a".to_string(), 1).unwrap();
    m.put(&mut b, "b".to_string(), 2).unwrap();
    assert_eq!(m.get(&mut b, &"a".to_string()).unwrap(), Some(1));
    assert_eq!(m.get(&mut b, &"b".to_string()).unwrap(), Some(2));
    assert_eq!(m.get(&mut b, &"c".to_string()).unwrap(), None);
    assert!(m.contains(&mut b, &"a".to_string()).unwrap());
    assert!(!m.contains(&mut b, &"c".to_string()).unwrap());
    // put overwrites.
    m.put(&mut b, "a".to_string(), 10).unwrap();
    assert_eq!(m.get(&mut b, &"a".to_string()).unwrap(), Some(10));
    assert_eq!(m.keys(&mut b).unwrap().collect::<Vec<_>>().len(), 2);
}

#[test]
fn map_state_put_all_merges_and_last_duplicate_wins() {
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, String>::new("map"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    // Empty put_all leaves the map absent.
    m.put_all(&mut b, Vec::new()).unwrap();
    assert!(m.is_empty(&mut b).unwrap());
    assert_eq!(
        b.keys_per_key_group("map").unwrap().iter().sum::<usize>(),
        0
    );
    // Duplicates within one call: the last one wins (also on creation).
    m.put_all(&mut b, [(1, "a".into()), (2, "b".into()), (1, "c".into())])
        .unwrap();
    assert_eq!(
        sorted(m.entries(&mut b).unwrap().collect::<Vec<_>>()),
        vec![(1, "c".to_string()), (2, "b".to_string())]
    );
    // Into an existing map: new keys added, existing overwritten.
    m.put_all(&mut b, [(2, "x".into()), (3, "y".into()), (3, "z".into())])
        .unwrap();
    assert_eq!(
        sorted(m.entries(&mut b).unwrap().collect::<Vec<_>>()),
        vec![
            (1, "c".to_string()),
            (2, "x".to_string()),
            (3, "z".to_string())
        ]
    );
    m.put_all(&mut b, std::iter::empty()).unwrap();
    assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>().len(), 3);
}

#[test]
fn map_state_remove_returns_old_value_and_last_removal_empties() {
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, u64>::new("map"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    // Removing from an absent map.
    assert_eq!(m.remove(&mut b, &1).unwrap(), None);
    assert!(m.is_empty(&mut b).unwrap());
    m.put_all(&mut b, [(1, 10), (2, 20)]).unwrap();
    assert_eq!(m.remove(&mut b, &3).unwrap(), None, "absent user key");
    assert_eq!(m.remove(&mut b, &1).unwrap(), Some(10));
    assert_eq!(m.remove(&mut b, &1).unwrap(), None, "already removed");
    assert!(!m.is_empty(&mut b).unwrap());
    assert_eq!(m.get(&mut b, &2).unwrap(), Some(20));
    assert_eq!(
        b.keys_per_key_group("map").unwrap().iter().sum::<usize>(),
        1
    );
    assert_eq!(m.remove(&mut b, &2).unwrap(), Some(20));
    assert!(m.is_empty(&mut b).unwrap());
    assert!(m.entries(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert_eq!(
        b.keys_per_key_group("map").unwrap().iter().sum::<usize>(),
        0,
        "removing the last entry must drop the key's map"
    );
    // Still usable after becoming empty.
    m.put(&mut b, 5, 50).unwrap();
    assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>(), vec![(5, 50)]);
}

#[test]
fn map_state_entries_keys_values() {
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, String>::new("map"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert!(m.entries(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert!(m.keys(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert!(m.values(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    let mut model: BTreeMap<u32, String> = BTreeMap::new();
    for i in (0..50u32).rev() {
        let v = format!("v{}", i * 7 % 13);
        m.put(&mut b, i, v.clone()).unwrap();
        model.insert(i, v);
    }
    for i in (0..50u32).step_by(3) {
        assert_eq!(m.remove(&mut b, &i).unwrap(), model.remove(&i));
    }
    assert_eq!(
        sorted(m.entries(&mut b).unwrap().collect::<Vec<_>>()),
        model.clone().into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        sorted(m.keys(&mut b).unwrap().collect::<Vec<_>>()),
        model.keys().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        sorted(m.values(&mut b).unwrap().collect::<Vec<_>>()),
        sorted(model.values().cloned().collect::<Vec<_>>())
    );
}

#[test]
fn map_state_is_empty_and_clear() {
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, u32>::new("map"))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert!(m.is_empty(&mut b).unwrap());
    m.clear(&mut b).unwrap();
    assert!(m.is_empty(&mut b).unwrap());
    m.put_all(&mut b, (0..10).map(|i| (i, i * i))).unwrap();
    assert!(!m.is_empty(&mut b).unwrap());
    m.clear(&mut b).unwrap();
    assert!(m.is_empty(&mut b).unwrap());
    for i in 0..10 {
        assert_eq!(m.get(&mut b, &i).unwrap(), None);
        assert!(!m.contains(&mut b, &i).unwrap());
    }
    assert_eq!(
        b.keys_per_key_group("map").unwrap().iter().sum::<usize>(),
        0
    );
}

#[test]
fn map_state_keys_are_isolated() {
    let (a, c) = two_keys_same_group(lower_half());
    let mut b = backend();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, u32>::new("map"))
        .unwrap();
    set_key(&mut b, a);
    m.put(&mut b, 1, 100).unwrap();
    set_key(&mut b, c);
    assert!(m.is_empty(&mut b).unwrap());
    assert_eq!(m.get(&mut b, &1).unwrap(), None);
    assert_eq!(m.remove(&mut b, &1).unwrap(), None);
    m.put(&mut b, 1, 200).unwrap();
    set_key(&mut b, a);
    assert_eq!(m.get(&mut b, &1).unwrap(), Some(100));
    m.clear(&mut b).unwrap();
    set_key(&mut b, c);
    assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>(), vec![(1, 200)]);
}

// ---------------------------------------------------------------------------
// ReducingState
// ---------------------------------------------------------------------------

#[test]
fn reducing_state_sum() {
    let mut b = backend();
    let sum = b
        .get_reducing_state(&ReducingStateDescriptor::<i64>::new("sum", |a, b| a + b))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert_eq!(sum.get(&mut b).unwrap(), None);
    let mut expected = 0i64;
    for v in [3i64, -1, 10, 0, 7] {
        expected += v;
        assert_eq!(
            sum.add(&mut b, v).unwrap(),
            expected,
            "add returns the new value"
        );
        assert_eq!(sum.get(&mut b).unwrap(), Some(expected));
    }
    sum.clear(&mut b).unwrap();
    assert_eq!(sum.get(&mut b).unwrap(), None);
    assert_eq!(sum.add(&mut b, 4).unwrap(), 4, "starts afresh after clear");
}

#[test]
fn reducing_state_max() {
    let mut b = backend();
    let max = b
        .get_reducing_state(&ReducingStateDescriptor::<i32>::new("max", i32::max))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    let inputs = [-5, -7, 3, 2, 3, 10, -100, 9];
    let mut expected: Option<i32> = None;
    for v in inputs {
        let e = expected.map_or(v, |m| m.max(v));
        expected = Some(e);
        assert_eq!(max.add(&mut b, v).unwrap(), e);
    }
    assert_eq!(max.get(&mut b).unwrap(), Some(10));
}

/// `reduce(stored, new)`: a non-commutative function pins the argument order,
/// and the first value is stored without calling the function.
#[test]
fn reducing_state_argument_order_and_first_value() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let mut b = backend();
    let concat = b
        .get_reducing_state(&ReducingStateDescriptor::<String>::new(
            "concat",
            move |stored: String, new: String| {
                counter.fetch_add(1, Ordering::SeqCst);
                format!("{stored}{new}")
            },
        ))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert_eq!(concat.add(&mut b, "a".into()).unwrap(), "a");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(concat.add(&mut b, "b".into()).unwrap(), "ab");
    assert_eq!(concat.add(&mut b, "c".into()).unwrap(), "abc");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(concat.get(&mut b).unwrap().as_deref(), Some("abc"));
}

#[test]
fn reducing_state_keys_are_isolated() {
    let (a, c) = two_keys_same_group(lower_half());
    let mut b = backend();
    let sum = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    set_key(&mut b, a);
    sum.add(&mut b, 5).unwrap();
    sum.add(&mut b, 6).unwrap();
    set_key(&mut b, c);
    assert_eq!(sum.get(&mut b).unwrap(), None);
    assert_eq!(sum.add(&mut b, 1).unwrap(), 1);
    set_key(&mut b, a);
    assert_eq!(sum.get(&mut b).unwrap(), Some(11));
    sum.clear(&mut b).unwrap();
    set_key(&mut b, c);
    assert_eq!(sum.get(&mut b).unwrap(), Some(1));
}

// ---------------------------------------------------------------------------
// AggregatingState
// ---------------------------------------------------------------------------

#[test]
fn aggregating_state_average() {
    let mut b = backend();
    let mean = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("mean", Average))
        .unwrap();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    assert_eq!(mean.get(&mut b).unwrap(), None);
    let mut seen = Vec::new();
    for v in [4i64, 8, -3, 15, 0] {
        mean.add(&mut b, v).unwrap();
        seen.push(v);
        assert_eq!(mean.get(&mut b).unwrap(), Some(avg(&seen)));
    }
    assert_eq!(mean.get(&mut b).unwrap(), Some(24.0 / 5.0));
    mean.clear(&mut b).unwrap();
    assert_eq!(mean.get(&mut b).unwrap(), None);
    mean.add(&mut b, 7).unwrap();
    assert_eq!(mean.get(&mut b).unwrap(), Some(7.0));
}

#[test]
fn aggregating_state_keys_are_isolated() {
    let (a, c) = two_keys_same_group(lower_half());
    let mut b = backend();
    let mean = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("mean", Average))
        .unwrap();
    set_key(&mut b, a);
    mean.add(&mut b, 10).unwrap();
    mean.add(&mut b, 20).unwrap();
    set_key(&mut b, c);
    assert_eq!(mean.get(&mut b).unwrap(), None);
    mean.add(&mut b, 1).unwrap();
    set_key(&mut b, a);
    assert_eq!(mean.get(&mut b).unwrap(), Some(15.0));
    mean.clear(&mut b).unwrap();
    set_key(&mut b, c);
    assert_eq!(mean.get(&mut b).unwrap(), Some(1.0));
}

#[test]
fn aggregate_function_merge() {
    let f = Average;
    let left = [1i64, 2, 3];
    let right = [10i64, 20];
    let mut a = f.create_accumulator();
    left.iter().for_each(|&v| f.add(v, &mut a));
    let mut b = f.create_accumulator();
    right.iter().for_each(|&v| f.add(v, &mut b));
    assert_eq!(a, (6, 3));
    assert_eq!(b, (30, 2));
    let merged = f.merge(a, b);
    assert_eq!(merged, (36, 5));
    let all: Vec<i64> = left.iter().chain(&right).copied().collect();
    assert_eq!(f.get_result(&merged), avg(&all));
    // A fresh accumulator is the identity of merge.
    assert_eq!(f.merge(f.create_accumulator(), merged), merged);
    assert_eq!(f.merge(merged, f.create_accumulator()), merged);
    // Merging is commutative for an average.
    assert_eq!(f.merge(b, a), merged);
    // Merging partial results equals aggregating through the state.
    let mut backend = backend();
    let mean = backend
        .get_aggregating_state(&AggregatingStateDescriptor::new("mean", Average))
        .unwrap();
    set_key(&mut backend, keys_in(lower_half(), 1)[0]);
    for v in all {
        mean.add(&mut backend, v).unwrap();
    }
    assert_eq!(mean.get(&mut backend).unwrap(), Some(f.get_result(&merged)));
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

#[test]
fn registering_same_name_twice_returns_the_same_state() {
    let mut b = backend();
    let k = keys_in(lower_half(), 1)[0];

    let v1 = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l1 = b
        .get_list_state(&ListStateDescriptor::<u64>::new("l"))
        .unwrap();
    let m1 = b
        .get_map_state(&MapStateDescriptor::<u32, u64>::new("m"))
        .unwrap();
    let r1 = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("r", |a, b| a + b))
        .unwrap();
    let a1 = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("a", Average))
        .unwrap();

    set_key(&mut b, k);
    v1.update(&mut b, 1).unwrap();
    l1.add(&mut b, 2).unwrap();
    m1.put(&mut b, 3, 4).unwrap();
    r1.add(&mut b, 5).unwrap();
    a1.add(&mut b, 6).unwrap();

    let v2 = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l2 = b
        .get_list_state(&ListStateDescriptor::<u64>::new("l"))
        .unwrap();
    let m2 = b
        .get_map_state(&MapStateDescriptor::<u32, u64>::new("m"))
        .unwrap();
    let r2 = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("r", |a, b| a + b))
        .unwrap();
    let a2 = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("a", Average))
        .unwrap();

    // Registration keeps the current key.
    assert_eq!(b.current_key(), Some(&k));
    assert_eq!(v2.value(&mut b).unwrap(), Some(1));
    assert_eq!(l2.get(&mut b).unwrap().collect::<Vec<_>>(), vec![2]);
    assert_eq!(m2.get(&mut b, &3).unwrap(), Some(4));
    assert_eq!(r2.get(&mut b).unwrap(), Some(5));
    assert_eq!(a2.get(&mut b).unwrap(), Some(6.0));

    // Writes through the second handle are seen through the first.
    v2.update(&mut b, 10).unwrap();
    l2.add(&mut b, 20).unwrap();
    m2.put(&mut b, 30, 40).unwrap();
    r2.add(&mut b, 50).unwrap();
    a2.add(&mut b, 8).unwrap();
    assert_eq!(v1.value(&mut b).unwrap(), Some(10));
    assert_eq!(l1.get(&mut b).unwrap().collect::<Vec<_>>(), vec![2, 20]);
    assert_eq!(sorted(m1.entries(&mut b).unwrap().collect::<Vec<_>>()), vec![(3, 4), (30, 40)]);
    assert_eq!(r1.get(&mut b).unwrap(), Some(55));
    assert_eq!(a1.get(&mut b).unwrap(), Some(7.0));

    assert_eq!(b.registered_states().count(), 5);
}

fn expect_incompatible<T>(
    r: Result<T, StateError>,
    state: &str,
    existing: StateKind,
    requested: StateKind,
) -> StateError {
    let e = match r {
        Ok(_) => panic!("registering '{state}' again should fail"),
        Err(e) => e,
    };
    match &e {
        StateError::IncompatibleRegistration {
            name,
            existing_kind,
            requested_kind,
            ..
        } => {
            assert_eq!(name, state);
            assert_eq!(*existing_kind, existing);
            assert_eq!(*requested_kind, requested);
        }
        other => panic!("expected IncompatibleRegistration, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("'{state}'")),
        "message should name the state: {msg}"
    );
    assert!(
        msg.contains(&existing.to_string()),
        "message should name {existing}: {msg}"
    );
    assert!(
        msg.contains(&requested.to_string()),
        "message should name {requested}: {msg}"
    );
    e
}

#[test]
fn same_name_with_a_different_kind_is_incompatible() {
    let mut b = backend();
    b.get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    expect_incompatible(
        b.get_list_state(&ListStateDescriptor::<u64>::new("count")),
        "count",
        StateKind::Value,
        StateKind::List,
    );
    // Same value type, different kind: still incompatible.
    expect_incompatible(
        b.get_reducing_state(&ReducingStateDescriptor::<u64>::new("count", |a, b| a + b)),
        "count",
        StateKind::Value,
        StateKind::Reducing,
    );
    expect_incompatible(
        b.get_map_state(&MapStateDescriptor::<u64, u64>::new("count")),
        "count",
        StateKind::Value,
        StateKind::Map,
    );
    expect_incompatible(
        b.get_aggregating_state(&AggregatingStateDescriptor::new("count", Average)),
        "count",
        StateKind::Value,
        StateKind::Aggregating,
    );

    b.get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    expect_incompatible(
        b.get_state(&ValueStateDescriptor::<u64>::new("sum")),
        "sum",
        StateKind::Reducing,
        StateKind::Value,
    );
    // Aggregating over (i64, u64) vs a value state of (i64, u64).
    b.get_aggregating_state(&AggregatingStateDescriptor::new("mean", Average))
        .unwrap();
    expect_incompatible(
        b.get_state(&ValueStateDescriptor::<(i64, u64)>::new("mean")),
        "mean",
        StateKind::Aggregating,
        StateKind::Value,
    );
}

#[test]
fn same_name_with_a_different_type_is_incompatible() {
    let mut b = backend();
    b.get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let e = expect_incompatible(
        b.get_state(&ValueStateDescriptor::<i64>::new("count")),
        "count",
        StateKind::Value,
        StateKind::Value,
    );
    let StateError::IncompatibleRegistration {
        existing_type,
        requested_type,
        ..
    } = e
    else {
        unreachable!()
    };
    assert!(existing_type.contains("u64"), "{existing_type}");
    assert!(requested_type.contains("i64"), "{requested_type}");

    b.get_list_state(&ListStateDescriptor::<String>::new("names"))
        .unwrap();
    expect_incompatible(
        b.get_list_state(&ListStateDescriptor::<u64>::new("names")),
        "names",
        StateKind::List,
        StateKind::List,
    );

    b.get_map_state(&MapStateDescriptor::<u32, String>::new("m"))
        .unwrap();
    // Swapped key and value types.
    expect_incompatible(
        b.get_map_state(&MapStateDescriptor::<String, u32>::new("m")),
        "m",
        StateKind::Map,
        StateKind::Map,
    );
    // Different value type only.
    expect_incompatible(
        b.get_map_state(&MapStateDescriptor::<u32, u32>::new("m")),
        "m",
        StateKind::Map,
        StateKind::Map,
    );

    b.get_reducing_state(&ReducingStateDescriptor::<u64>::new("r", |a, b| a + b))
        .unwrap();
    expect_incompatible(
        b.get_reducing_state(&ReducingStateDescriptor::<u32>::new("r", |a, b| a + b)),
        "r",
        StateKind::Reducing,
        StateKind::Reducing,
    );
}

#[test]
fn failed_registration_leaves_existing_state_intact() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let k = keys_in(lower_half(), 1)[0];
    set_key(&mut b, k);
    count.update(&mut b, 77).unwrap();
    assert!(
        b.get_list_state(&ListStateDescriptor::<u64>::new("count"))
            .is_err()
    );
    assert!(
        b.get_state(&ValueStateDescriptor::<u32>::new("count"))
            .is_err()
    );
    assert_eq!(b.registered_states().count(), 1);
    assert_eq!(count.value(&mut b).unwrap(), Some(77));
    // A new name still registers afresh.
    let other = b
        .get_state(&ValueStateDescriptor::<u32>::new("other"))
        .unwrap();
    assert_eq!(other.value(&mut b).unwrap(), None);
    assert_eq!(b.registered_states().count(), 2);
}

// ---------------------------------------------------------------------------
// Current key errors
// ---------------------------------------------------------------------------

#[test]
fn access_without_current_key_fails_naming_the_state() {
    let mut b = backend();
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let m = b
        .get_map_state(&MapStateDescriptor::<u32, u64>::new("map"))
        .unwrap();
    let r = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    let a = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("mean", Average))
        .unwrap();

    let k = keys_in(lower_half(), 1)[0];
    // Before any key, then after a key was cleared (with data present).
    for phase in 0..2 {
        if phase == 1 {
            set_key(&mut b, k);
            v.update(&mut b, 1).unwrap();
            l.add(&mut b, 1).unwrap();
            m.put(&mut b, 1, 1).unwrap();
            r.add(&mut b, 1).unwrap();
            a.add(&mut b, 1).unwrap();
            b.clear_current_key();
        }
        assert_no_current_key(v.value(&mut b), "count");
        assert_no_current_key(v.update(&mut b, 5), "count");
        assert_no_current_key(v.clear(&mut b), "count");

        assert_no_current_key(l.get(&mut b), "list");
        assert_no_current_key(l.add(&mut b, 5), "list");
        assert_no_current_key(l.add_all(&mut b, [5, 6]), "list");
        assert_no_current_key(l.update(&mut b, vec![5]), "list");
        assert_no_current_key(l.update(&mut b, vec![]), "list");
        assert_no_current_key(l.clear(&mut b), "list");

        assert_no_current_key(m.get(&mut b, &1), "map");
        assert_no_current_key(m.contains(&mut b, &1), "map");
        assert_no_current_key(m.put(&mut b, 1, 2), "map");
        assert_no_current_key(m.put_all(&mut b, [(1, 2)]), "map");
        assert_no_current_key(m.remove(&mut b, &1), "map");
        assert_no_current_key(m.entries(&mut b), "map");
        assert_no_current_key(m.keys(&mut b), "map");
        assert_no_current_key(m.values(&mut b), "map");
        assert_no_current_key(m.is_empty(&mut b), "map");
        assert_no_current_key(m.clear(&mut b), "map");

        assert_no_current_key(r.get(&mut b), "sum");
        assert_no_current_key(r.add(&mut b, 1), "sum");
        assert_no_current_key(r.clear(&mut b), "sum");

        assert_no_current_key(a.get(&mut b), "mean");
        assert_no_current_key(a.add(&mut b, 1), "mean");
        assert_no_current_key(a.clear(&mut b), "mean");
    }

    // The failed calls changed nothing.
    set_key(&mut b, k);
    assert_eq!(v.value(&mut b).unwrap(), Some(1));
    assert_eq!(l.get(&mut b).unwrap().collect::<Vec<_>>(), vec![1]);
    assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>(), vec![(1, 1)]);
    assert_eq!(r.get(&mut b).unwrap(), Some(1));
    assert_eq!(a.get(&mut b).unwrap(), Some(1.0));
}

#[test]
fn set_current_key_outside_the_range_fails() {
    let range = lower_half();
    let mut b = backend_for::<u64>(range);
    let k = key_outside(range);
    let g = kg(&k);
    assert!(g > 63);
    let e = b.set_current_key(k, g).unwrap_err();
    assert!(
        matches!(e, StateError::KeyGroupOutOfRange { key_group, range: r } if key_group == g && r == range),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("key group {g} is outside this subtask's range [0, 63]")
    );
    assert!(
        b.current_key().is_none(),
        "a rejected key must not become current"
    );
    // The boundary key groups.
    assert!(b.set_current_key(0, 63).is_ok());
    assert!(b.set_current_key(0, 0).is_ok());
    assert!(matches!(
        b.set_current_key(0, 64),
        Err(StateError::KeyGroupOutOfRange { key_group: 64, .. })
    ));

    // Below the start of a range that does not begin at 0.
    let mut upper = backend_for::<u64>(upper_half());
    for g in [0u16, 1, 63] {
        assert!(
            matches!(
                upper.set_current_key(7, g),
                Err(StateError::KeyGroupOutOfRange { key_group, range })
                    if key_group == g && range == upper_half()
            ),
            "key group {g}"
        );
    }
    assert!(upper.set_current_key(7, 64).is_ok());
    assert!(upper.set_current_key(7, 127).is_ok());
    // Beyond max parallelism.
    for g in [128u16, 1000, u16::MAX] {
        assert!(matches!(
            upper.set_current_key(7, g),
            Err(StateError::KeyGroupOutOfRange { .. })
        ));
    }
    let mut all = backend_for::<u64>(everything());
    assert!(all.set_current_key(7, 127).is_ok());
    assert!(matches!(
        all.set_current_key(7, 128),
        Err(StateError::KeyGroupOutOfRange { key_group: 128, .. })
    ));
}

#[test]
fn rejected_key_does_not_receive_writes() {
    let mut b = backend();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let outside = key_outside(lower_half());
    assert!(b.set_current_key(outside, kg(&outside)).is_err());
    assert_ne!(b.current_key(), Some(&outside));
    assert!(count.update(&mut b, 1).is_err(), "no key was ever accepted");
    assert_eq!(
        b.keys_per_key_group("count").unwrap().iter().sum::<usize>(),
        0
    );
}

// ---------------------------------------------------------------------------
// keys_per_key_group
// ---------------------------------------------------------------------------

#[test]
fn keys_per_key_group_unknown_name_is_none() {
    let mut b = backend();
    assert_eq!(b.keys_per_key_group("nope"), None);
    b.get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    assert_eq!(b.keys_per_key_group("nope"), None);
    assert_eq!(
        b.keys_per_key_group("Count"),
        None,
        "names are case sensitive"
    );
    assert_eq!(b.keys_per_key_group("count"), Some(vec![0; 64]));
}

#[test]
fn keys_per_key_group_counts_each_key_in_its_own_group() {
    for range in [lower_half(), upper_half(), last_third(), everything()] {
        let mut b = backend_for::<u64>(range);
        let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
        let l = b
            .get_list_state(&ListStateDescriptor::<u64>::new("l"))
            .unwrap();
        let m = b
            .get_map_state(&MapStateDescriptor::<u32, u32>::new("m"))
            .unwrap();
        assert_eq!(b.keys_per_key_group("v").unwrap(), vec![0; range.len()]);

        let keys = keys_in(range, 300);
        let mut v_keys = Vec::new();
        let mut l_keys = Vec::new();
        let mut m_keys = Vec::new();
        for (i, &k) in keys.iter().enumerate() {
            set_key(&mut b, k);
            v.update(&mut b, k).unwrap();
            v_keys.push(k);
            if i % 2 == 0 {
                l.add(&mut b, k).unwrap();
                l_keys.push(k);
            }
            if i % 3 == 0 {
                m.put(&mut b, 1, 1).unwrap();
                m_keys.push(k);
            }
        }
        assert_eq!(
            b.keys_per_key_group("v").unwrap(),
            expected_counts(range, &v_keys)
        );
        assert_eq!(
            b.keys_per_key_group("l").unwrap(),
            expected_counts(range, &l_keys)
        );
        assert_eq!(
            b.keys_per_key_group("m").unwrap(),
            expected_counts(range, &m_keys)
        );

        // Writing again to an existing key does not count it twice.
        for &k in &keys[..50] {
            set_key(&mut b, k);
            v.update(&mut b, 0).unwrap();
        }
        assert_eq!(
            b.keys_per_key_group("v").unwrap(),
            expected_counts(range, &v_keys)
        );

        // Removing values lowers the counts of the right groups.
        for &k in keys.iter().step_by(5) {
            set_key(&mut b, k);
            v.clear(&mut b).unwrap();
            l.update(&mut b, vec![]).unwrap();
            m.remove(&mut b, &1).unwrap();
        }
        let removed: Vec<u64> = keys.iter().step_by(5).copied().collect();
        let keep = |ks: &[u64]| -> Vec<u64> {
            ks.iter()
                .filter(|k| !removed.contains(k))
                .copied()
                .collect()
        };
        assert_eq!(
            b.keys_per_key_group("v").unwrap(),
            expected_counts(range, &keep(&v_keys))
        );
        assert_eq!(
            b.keys_per_key_group("l").unwrap(),
            expected_counts(range, &keep(&l_keys))
        );
        assert_eq!(
            b.keys_per_key_group("m").unwrap(),
            expected_counts(range, &keep(&m_keys))
        );
    }
}

/// Slot i of the result is key group `range.start + i`: pin one key in the
/// middle of the upper half and of the last third.
#[test]
fn keys_per_key_group_slot_is_offset_from_range_start() {
    let range = upper_half();
    let mut b = backend_for::<u64>(range);
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    // u64::MAX hashes to key group 114 (pinned in key_group.rs).
    assert_eq!(kg(&u64::MAX), 114);
    set_key(&mut b, u64::MAX);
    v.update(&mut b, 1).unwrap();
    let counts = b.keys_per_key_group("v").unwrap();
    assert_eq!(counts.len(), 64);
    let mut expected = vec![0; 64];
    expected[114 - 64] = 1;
    assert_eq!(counts, expected);

    let range = last_third();
    let mut b = backend_for::<u64>(range);
    let v = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    set_key(&mut b, u64::MAX);
    assert_eq!(b.current_key_group(), Some(114));
    v.update(&mut b, 1).unwrap();
    let mut expected = vec![0; 42];
    expected[114 - 86] = 1;
    assert_eq!(b.keys_per_key_group("v").unwrap(), expected);
}

// ---------------------------------------------------------------------------
// String keys
// ---------------------------------------------------------------------------

#[test]
fn string_keys() {
    let range = everything();
    let mut b = backend_for::<String>(range);
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let words = b
        .get_list_state(&ListStateDescriptor::<String>::new("words"))
        .unwrap();
    let seen = b
        .get_map_state(&MapStateDescriptor::<String, u32>::new("seen"))
        .unwrap();

    // Key groups pinned in key_group.rs.
    assert_eq!(kg("flink"), 118);
    assert_eq!(kg("floe"), 20);
    assert_eq!(kg(""), 55);
    assert_eq!(kg(&"floe".to_string()), 20);

    let long = "x".repeat(1000); // longer than the stack buffer used for hashing
    let keys: Vec<String> = ["flink", "floe", "", "hello world", "Floe", "floe "]
        .iter()
        .map(|s| s.to_string())
        .chain([long.clone()])
        .collect();
    let text = "floe flink floe  floe hello world Floe floe flink";
    let mut model_count: HashMap<String, u64> = HashMap::new();
    let mut model_words: HashMap<String, Vec<String>> = HashMap::new();
    for (i, w) in text.split(' ').enumerate() {
        let key = w.to_string();
        set_key(&mut b, key.clone());
        assert_eq!(b.current_key_group(), Some(kg(w)));
        let c = count.value(&mut b).unwrap().unwrap_or(0) + 1;
        count.update(&mut b, c).unwrap();
        words.add(&mut b, format!("#{i}")).unwrap();
        let n = seen.get(&mut b, &key).unwrap().unwrap_or(0);
        seen.put(&mut b, key.clone(), n + 1).unwrap();
        *model_count.entry(key.clone()).or_default() += 1;
        model_words.entry(key).or_default().push(format!("#{i}"));
    }
    set_key(&mut b, long.clone());
    count.update(&mut b, 1000).unwrap();
    model_count.insert(long.clone(), 1000);

    for key in &keys {
        set_key(&mut b, key.clone());
        assert_eq!(
            count.value(&mut b).unwrap(),
            model_count.get(key).copied(),
            "{key:?}"
        );
        assert_eq!(
            words.get(&mut b).unwrap().collect::<Vec<_>>(),
            model_words.get(key).cloned().unwrap_or_default(),
            "{key:?}"
        );
        let expected_seen: Vec<(String, u32)> = model_count
            .get(key)
            .filter(|_| *key != long)
            .map(|&c| vec![(key.clone(), c as u32)])
            .unwrap_or_default();
        assert_eq!(seen.entries(&mut b).unwrap().collect::<Vec<_>>(), expected_seen, "{key:?}");
    }
    assert_eq!(
        b.keys_per_key_group("count").unwrap(),
        expected_counts(range, model_count.keys())
    );
    assert_eq!(
        b.keys_per_key_group("words").unwrap(),
        expected_counts(range, model_words.keys())
    );

    // Keys that differ only in case or trailing space are distinct keys.
    set_key(&mut b, "floe".to_string());
    assert_eq!(count.value(&mut b).unwrap(), Some(4));
    set_key(&mut b, "Floe".to_string());
    assert_eq!(count.value(&mut b).unwrap(), Some(1));
    set_key(&mut b, "floe ".to_string());
    assert_eq!(count.value(&mut b).unwrap(), None);
}

#[test]
fn string_keys_on_a_partial_range() {
    let range = lower_half();
    let mut b = backend_for::<String>(range);
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    // "flink" → 118 is not ours; "floe" → 20 is.
    assert!(matches!(
        b.set_current_key("flink".to_string(), kg("flink")),
        Err(StateError::KeyGroupOutOfRange { key_group: 118, .. })
    ));
    set_key(&mut b, "floe".to_string());
    count.update(&mut b, 1).unwrap();
    let mut expected = vec![0; 64];
    expected[20] = 1;
    assert_eq!(b.keys_per_key_group("count").unwrap(), expected);
}

// ---------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    ValueUpdate(u64, u32),
    ValueClear(u64),
    ValueGet(u64),
    ListAdd(u64, u32),
    ListAddAll(u64, Vec<u32>),
    ListUpdate(u64, Vec<u32>),
    ListGet(u64),
    ListClear(u64),
    MapPut(u64, u8, u32),
    MapRemove(u64, u8),
    MapGet(u64, u8),
    MapClear(u64),
    ReduceAdd(u64, u32),
    ReduceGet(u64),
    Unset,
}

impl Op {
    fn key(&self) -> Option<u64> {
        use Op::*;
        match *self {
            ValueUpdate(k, _)
            | ValueClear(k)
            | ValueGet(k)
            | ListAdd(k, _)
            | ListAddAll(k, _)
            | ListUpdate(k, _)
            | ListGet(k)
            | ListClear(k)
            | MapPut(k, _, _)
            | MapRemove(k, _)
            | MapGet(k, _)
            | MapClear(k)
            | ReduceAdd(k, _)
            | ReduceGet(k) => Some(k),
            Unset => None,
        }
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u64..PROP_KEYS;
    let small_vec = prop::collection::vec(0u32..100, 0..4);
    prop_oneof![
        3 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::ValueUpdate(k, v)),
        1 => key.clone().prop_map(Op::ValueClear),
        3 => key.clone().prop_map(Op::ValueGet),
        3 => (key.clone(), 0u32..100).prop_map(|(k, v)| Op::ListAdd(k, v)),
        2 => (key.clone(), small_vec.clone()).prop_map(|(k, v)| Op::ListAddAll(k, v)),
        1 => (key.clone(), small_vec).prop_map(|(k, v)| Op::ListUpdate(k, v)),
        3 => key.clone().prop_map(Op::ListGet),
        1 => key.clone().prop_map(Op::ListClear),
        3 => (key.clone(), 0u8..4, any::<u32>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
        2 => (key.clone(), 0u8..4).prop_map(|(k, u)| Op::MapRemove(k, u)),
        2 => (key.clone(), 0u8..4).prop_map(|(k, u)| Op::MapGet(k, u)),
        1 => key.clone().prop_map(Op::MapClear),
        2 => (key.clone(), 0u32..1000).prop_map(|(k, v)| Op::ReduceAdd(k, v)),
        2 => key.prop_map(Op::ReduceGet),
        1 => Just(Op::Unset),
    ]
}

#[derive(Default)]
struct Model {
    value: HashMap<u64, u32>,
    list: HashMap<u64, Vec<u32>>,
    map: HashMap<u64, HashMap<u8, u32>>,
    sum: HashMap<u64, u64>,
}

fn run_model(range: KeyGroupRange, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut b = backend_for::<u64>(range);
    let value = b
        .get_state(&ValueStateDescriptor::<u32>::new("value"))
        .unwrap();
    let list = b
        .get_list_state(&ListStateDescriptor::<u32>::new("list"))
        .unwrap();
    let map = b
        .get_map_state(&MapStateDescriptor::<u8, u32>::new("map"))
        .unwrap();
    let sum = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b))
        .unwrap();
    let mut m = Model::default();

    for op in ops {
        let Some(k) = op.key() else {
            b.clear_current_key();
            let no_key = matches!(value.value(&mut b), Err(StateError::NoCurrentKey { .. }));
            prop_assert!(no_key, "value state readable without a current key");
            continue;
        };
        let g = kg(&k);
        if !range.contains(g) {
            let r = b.set_current_key(k, g);
            let rejected = matches!(r, Err(StateError::KeyGroupOutOfRange { key_group, .. }) if key_group == g);
            prop_assert!(
                rejected,
                "key {} in group {} must be rejected by {}",
                k,
                g,
                range
            );
            continue;
        }
        b.set_current_key(k, g).unwrap();
        match op.clone() {
            Op::ValueUpdate(_, v) => {
                value.update(&mut b, v).unwrap();
                m.value.insert(k, v);
            }
            Op::ValueClear(_) => {
                value.clear(&mut b).unwrap();
                m.value.remove(&k);
            }
            Op::ValueGet(_) => {
                prop_assert_eq!(value.value(&mut b).unwrap(), m.value.get(&k).copied());
            }
            Op::ListAdd(_, v) => {
                list.add(&mut b, v).unwrap();
                m.list.entry(k).or_default().push(v);
            }
            Op::ListAddAll(_, vs) => {
                list.add_all(&mut b, vs.clone()).unwrap();
                if !vs.is_empty() {
                    m.list.entry(k).or_default().extend(vs);
                }
            }
            Op::ListUpdate(_, vs) => {
                list.update(&mut b, vs.clone()).unwrap();
                if vs.is_empty() {
                    m.list.remove(&k);
                } else {
                    m.list.insert(k, vs);
                }
            }
            Op::ListGet(_) => {
                prop_assert_eq!(
                    list.get(&mut b).unwrap().collect::<Vec<_>>(),
                    m.list.get(&k).cloned().unwrap_or_default()
                );
            }
            Op::ListClear(_) => {
                list.clear(&mut b).unwrap();
                m.list.remove(&k);
            }
            Op::MapPut(_, u, v) => {
                map.put(&mut b, u, v).unwrap();
                m.map.entry(k).or_default().insert(u, v);
            }
            Op::MapRemove(_, u) => {
                let expected = m.map.get_mut(&k).and_then(|mm| mm.remove(&u));
                if m.map.get(&k).is_some_and(|mm| mm.is_empty()) {
                    m.map.remove(&k);
                }
                prop_assert_eq!(map.remove(&mut b, &u).unwrap(), expected);
            }
            Op::MapGet(_, u) => {
                let expected = m.map.get(&k).and_then(|mm| mm.get(&u)).copied();
                prop_assert_eq!(map.get(&mut b, &u).unwrap(), expected);
                prop_assert_eq!(map.contains(&mut b, &u).unwrap(), expected.is_some());
                prop_assert_eq!(map.is_empty(&mut b).unwrap(), !m.map.contains_key(&k));
            }
            Op::MapClear(_) => {
                map.clear(&mut b).unwrap();
                m.map.remove(&k);
            }
            Op::ReduceAdd(_, v) => {
                let e = m.sum.entry(k).or_default();
                *e += v as u64;
                prop_assert_eq!(sum.add(&mut b, v as u64).unwrap(), *e);
            }
            Op::ReduceGet(_) => {
                prop_assert_eq!(sum.get(&mut b).unwrap(), m.sum.get(&k).copied());
            }
            Op::Unset => unreachable!(),
        }
    }

    // Full comparison at the end: every key of the key space, every state.
    for k in 0u64..PROP_KEYS {
        let g = kg(&k);
        if !range.contains(g) {
            continue;
        }
        b.set_current_key(k, g).unwrap();
        prop_assert_eq!(value.value(&mut b).unwrap(), m.value.get(&k).copied());
        prop_assert_eq!(
            list.get(&mut b).unwrap().collect::<Vec<_>>(),
            m.list.get(&k).cloned().unwrap_or_default()
        );
        let mut expected_entries: Vec<(u8, u32)> = m
            .map
            .get(&k)
            .map(|mm| mm.iter().map(|(a, b)| (*a, *b)).collect())
            .unwrap_or_default();
        expected_entries.sort();
        prop_assert_eq!(sorted(map.entries(&mut b).unwrap().collect::<Vec<_>>()), expected_entries);
        prop_assert_eq!(sum.get(&mut b).unwrap(), m.sum.get(&k).copied());
    }
    prop_assert_eq!(
        b.keys_per_key_group("value").unwrap(),
        expected_counts(range, m.value.keys())
    );
    prop_assert_eq!(
        b.keys_per_key_group("list").unwrap(),
        expected_counts(range, m.list.keys())
    );
    prop_assert_eq!(
        b.keys_per_key_group("map").unwrap(),
        expected_counts(range, m.map.keys())
    );
    prop_assert_eq!(
        b.keys_per_key_group("sum").unwrap(),
        expected_counts(range, m.sum.keys())
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// All key groups owned: every key is accepted.
    #[test]
    fn random_ops_match_model_full_range(ops in prop::collection::vec(op_strategy(), 0..120)) {
        run_model(everything(), &ops)?;
    }

    /// Half the key groups owned: keys outside are rejected and leave no trace.
    #[test]
    fn random_ops_match_model_lower_half(ops in prop::collection::vec(op_strategy(), 0..120)) {
        run_model(lower_half(), &ops)?;
    }

    #[test]
    fn random_ops_match_model_upper_half(ops in prop::collection::vec(op_strategy(), 0..120)) {
        run_model(upper_half(), &ops)?;
    }

    #[test]
    fn random_ops_match_model_last_third(ops in prop::collection::vec(op_strategy(), 0..120)) {
        run_model(last_third(), &ops)?;
    }
}

/// Sanity check of the key space used by the property tests: both halves get
/// some of the keys, and in each half some keys share a key group, so neither
/// run is trivial and same-group isolation is exercised.
#[test]
fn property_key_space_spans_both_halves() {
    for range in [lower_half(), upper_half()] {
        let mut per_group: HashMap<u16, usize> = HashMap::new();
        for k in 0..PROP_KEYS {
            if range.contains(kg(&k)) {
                *per_group.entry(kg(&k)).or_default() += 1;
            }
        }
        assert!(
            per_group.values().sum::<usize>() >= 8,
            "{range}: {per_group:?}"
        );
        assert!(per_group.values().any(|&n| n > 1), "{range}: {per_group:?}");
    }
}

// ---------------------------------------------------------------------------
// Declared handles: a field of the function, registered on first use
// ---------------------------------------------------------------------------

/// Each kind of declared handle registers its state the first time it is
/// used, and then reads and writes exactly what a handle registered
/// through the backend (the `open()` way) under the same name sees.
#[test]
fn declared_handles_register_on_first_use_and_share_the_registered_state() {
    let mut b = backend();
    let key = keys_in(lower_half(), 1)[0];
    set_key(&mut b, key);

    let value = floe_state::ValueState::<u64>::new("v");
    let list = floe_state::ListState::<u64>::new("l");
    let map = floe_state::MapState::<String, u64>::new("m");
    let reducing = floe_state::ReducingState::<u64>::new("r", |a, b| a + b);
    let aggregating = floe_state::AggregatingState::new("a", Average);

    assert_eq!(value.value(&mut b).unwrap(), None);
    value.update(&mut b, 7).unwrap();
    list.add_all(&mut b, [1, 2, 3]).unwrap();
    map.put(&mut b, "x".into(), 9).unwrap();
    reducing.add(&mut b, 4).unwrap();
    reducing.add(&mut b, 5).unwrap();
    aggregating.add(&mut b, 2).unwrap();
    aggregating.add(&mut b, 4).unwrap();

    let registered = b.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    assert_eq!(registered.value(&mut b).unwrap(), Some(7));
    let registered = b.get_list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    assert_eq!(registered.get(&mut b).unwrap().collect::<Vec<_>>(), vec![1, 2, 3]);
    let registered = b
        .get_map_state(&MapStateDescriptor::<String, u64>::new("m"))
        .unwrap();
    assert_eq!(registered.get(&mut b, &"x".to_string()).unwrap(), Some(9));
    let registered = b
        .get_reducing_state(&ReducingStateDescriptor::<u64>::new("r", |a, b| a + b))
        .unwrap();
    assert_eq!(registered.get(&mut b).unwrap(), Some(9));
    let registered = b
        .get_aggregating_state(&AggregatingStateDescriptor::new("a", Average))
        .unwrap();
    assert_eq!(registered.get(&mut b).unwrap(), Some(3.0));

    let mut names: Vec<&str> = b.registered_states().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["a", "l", "m", "r", "v"]);
}

/// One declared handle (one function value) used with two backends — a
/// restart, or two subtasks of a function cloned after first use —
/// registers with each and keeps their contents apart.
#[test]
fn a_declared_handle_registers_again_with_each_backend() {
    let (mut first, mut second) = (backend(), backend());
    let key = keys_in(lower_half(), 1)[0];
    set_key(&mut first, key);
    set_key(&mut second, key);
    // Another state first, so the handle's state gets another index in
    // `second` than in `first`.
    second
        .get_state(&ValueStateDescriptor::<String>::new("other"))
        .unwrap();
    let count = floe_state::ValueState::<u64>::new("count");
    count.update(&mut first, 1).unwrap();
    assert_eq!(count.value(&mut second).unwrap(), None);
    count.update(&mut second, 2).unwrap();
    let cloned = count.clone();
    assert_eq!(cloned.value(&mut first).unwrap(), Some(1));
    assert_eq!(count.value(&mut second).unwrap(), Some(2));
}

/// A declared handle that conflicts with what the backend holds under its
/// name is refused with the backend's error on first use, never read as
/// the other type (and never panics).
#[test]
fn a_declared_handle_with_a_conflicting_registration_is_refused() {
    let mut b = backend();
    set_key(&mut b, keys_in(lower_half(), 1)[0]);
    b.get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let wrong = floe_state::ListState::<u64>::new("count");
    let err = wrong.add(&mut b, 1).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRegistration { .. }),
        "{err}"
    );
    // Still refused on the next use: a failed registration binds nothing.
    assert!(wrong.get(&mut b).is_err());
}
