// State TTL through `floe-state`'s public API, for the backend `BACKEND`
// of the test file that includes this suite (`ttl_heap.rs`,
// `ttl_rocksdb.rs`). Time is a manual clock: no test sleeps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use floe_state::ttl::{StateTtlConfig, TtlValue};
use floe_state::{
    AggregateFunction, AggregatingStateDescriptor, KeyGroupRange, KeyedStateBackend,
    KeyedStateFile, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, StateError,
    StateMeta, ValueStateDescriptor, key_group_for_key,
};
use proptest::prelude::*;

const MAX_P: u32 = 128;
const TTL: Duration = Duration::from_millis(10);

fn everything() -> KeyGroupRange {
    KeyGroupRange::for_operator_index(MAX_P, 1, 0)
}

/// A backend for `range` whose TTL clock is `clock`.
fn backend_at(range: KeyGroupRange, clock: &Arc<AtomicI64>) -> KeyedStateBackend<u64> {
    let mut b = KeyedStateBackend::new(BACKEND, "ttl-op", range, MAX_P).expect("opens");
    let clock = clock.clone();
    b.set_ttl_time_provider(move || clock.load(Ordering::Relaxed));
    b
}

fn set_key(b: &mut KeyedStateBackend<u64>, key: u64) {
    let kg = key_group_for_key(&key, MAX_P);
    b.set_current_key(key, kg).unwrap();
}

/// TTL of 10 ms without background cleanup: what a read sees depends on
/// the semantics alone.
fn config(update_on_read: bool, return_expired: bool) -> StateTtlConfig {
    let mut b = StateTtlConfig::new_builder(TTL).disable_cleanup_in_background();
    if update_on_read {
        b = b.update_ttl_on_read_and_write();
    }
    if return_expired {
        b = b.return_expired_if_not_cleaned_up();
    }
    b.build()
}

fn restore(
    range: KeyGroupRange,
    clock: &Arc<AtomicI64>,
    files: &[Vec<u8>],
) -> KeyedStateBackend<u64> {
    let mut b = backend_at(range, clock);
    b.restore(files.iter().map(Vec::as_slice)).unwrap();
    b
}

/// The decoded entries of state `name` in a snapshot file.
fn entries_of<V: serde::de::DeserializeOwned>(bytes: &[u8], name: &str) -> Vec<(u64, V)> {
    let file = KeyedStateFile::decode(bytes).unwrap();
    let idx = file.states.iter().position(|s| s.name == name).unwrap() as u32;
    let mut out = Vec::new();
    for g in &file.key_groups {
        for (i, e) in &g.states {
            if *i == idx {
                out.extend(floe_state::codec::decode::<Vec<(u64, V)>>(e, "entries").unwrap());
            }
        }
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

// ---------------------------------------------------------------------------
// Semantics
// ---------------------------------------------------------------------------

#[test]
fn value_expires_after_ttl_and_is_removed_by_the_read() {
    let clock = Arc::new(AtomicI64::new(100));
    let mut b = backend_at(everything(), &clock);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(config(false, false)))
        .unwrap();
    set_key(&mut b, 1);
    v.update(&mut b, 7).unwrap();
    clock.store(109, Ordering::Relaxed);
    assert_eq!(v.value(&mut b).unwrap(), Some(7), "alive until ttl");
    clock.store(110, Ordering::Relaxed);
    assert_eq!(v.value(&mut b).unwrap(), None, "expired at write + ttl");
    assert_eq!(b.keys_per_key_group("v").unwrap().iter().sum::<usize>(), 0);
    // A write stamps again.
    v.update(&mut b, 8).unwrap();
    clock.store(119, Ordering::Relaxed);
    assert_eq!(v.value(&mut b).unwrap(), Some(8));
}

#[test]
fn return_expired_if_not_cleaned_up_returns_it_once() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(config(false, true)))
        .unwrap();
    set_key(&mut b, 1);
    v.update(&mut b, 7).unwrap();
    clock.store(50, Ordering::Relaxed);
    assert_eq!(v.value(&mut b).unwrap(), Some(7));
    assert_eq!(v.value(&mut b).unwrap(), None, "the read removed it");
}

#[test]
fn on_read_and_write_refreshes_on_reads() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let cfg = config(true, false);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    let w = b
        .get_state(&ValueStateDescriptor::<u64>::new("w").enable_time_to_live(config(false, false)))
        .unwrap();
    set_key(&mut b, 1);
    v.update(&mut b, 1).unwrap();
    w.update(&mut b, 2).unwrap();
    for t in [8, 16, 24] {
        clock.store(t, Ordering::Relaxed);
        assert_eq!(v.value(&mut b).unwrap(), Some(1), "refreshed at each read");
    }
    assert_eq!(w.value(&mut b).unwrap(), None, "reads do not refresh");
    clock.store(34, Ordering::Relaxed);
    assert_eq!(v.value(&mut b).unwrap(), None);
}

#[test]
fn list_elements_and_map_entries_expire_one_by_one() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let l = b
        .get_list_state(&ListStateDescriptor::<u64>::new("l").enable_time_to_live(config(false, false)))
        .unwrap();
    let m = b
        .get_map_state(
            &MapStateDescriptor::<String, u64>::new("m").enable_time_to_live(config(false, false)),
        )
        .unwrap();
    set_key(&mut b, 3);
    l.add(&mut b, 1).unwrap();
    m.put(&mut b, "a".into(), 1).unwrap();
    clock.store(5, Ordering::Relaxed);
    l.add_all(&mut b, [2, 3]).unwrap();
    m.put(&mut b, "b".into(), 2).unwrap();
    clock.store(10, Ordering::Relaxed);
    assert_eq!(l.get(&mut b).unwrap().collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(m.get(&mut b, &"a".to_string()).unwrap(), None);
    assert!(!m.contains(&mut b, &"a".to_string()).unwrap());
    assert_eq!(m.entries(&mut b).unwrap().collect::<Vec<_>>(), vec![("b".to_string(), 2)]);
    assert!(!m.is_empty(&mut b).unwrap());
    clock.store(15, Ordering::Relaxed);
    assert!(l.get(&mut b).unwrap().collect::<Vec<_>>().is_empty());
    assert!(m.is_empty(&mut b).unwrap());
    assert_eq!(b.keys_per_key_group("l").unwrap().iter().sum::<usize>(), 0);
    assert_eq!(b.keys_per_key_group("m").unwrap().iter().sum::<usize>(), 0);
}

struct Sum;

impl AggregateFunction for Sum {
    type In = u64;
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, value: u64, acc: &mut u64) {
        *acc += value;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

#[test]
fn reducing_and_aggregating_start_over_once_expired() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let r = b
        .get_reducing_state(
            &ReducingStateDescriptor::<u64>::new("r", |a, b| a + b)
                .enable_time_to_live(config(false, false)),
        )
        .unwrap();
    let a = b
        .get_aggregating_state(
            &AggregatingStateDescriptor::new("a", Sum).enable_time_to_live(config(false, false)),
        )
        .unwrap();
    set_key(&mut b, 9);
    assert_eq!(r.add(&mut b, 1).unwrap(), 1);
    a.add(&mut b, 1).unwrap();
    clock.store(9, Ordering::Relaxed);
    assert_eq!(r.add(&mut b, 2).unwrap(), 3, "the add stamps again");
    a.add(&mut b, 2).unwrap();
    assert_eq!(a.get(&mut b).unwrap(), Some(3));
    clock.store(19, Ordering::Relaxed);
    assert_eq!(r.add(&mut b, 5).unwrap(), 5, "expired: folded into nothing");
    a.add(&mut b, 5).unwrap();
    assert_eq!(a.get(&mut b).unwrap(), Some(5));
    clock.store(29, Ordering::Relaxed);
    assert_eq!(r.get(&mut b).unwrap(), None);
    assert_eq!(a.get(&mut b).unwrap(), None);
}

#[test]
fn queryable_ttl_state_and_zero_ttl_are_refused() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let err = b
        .get_state(
            &ValueStateDescriptor::<u64>::new("q")
                .set_queryable("q")
                .enable_time_to_live(StateTtlConfig::new(TTL)),
        )
        .unwrap_err();
    assert!(matches!(err, StateError::InvalidTtl { .. }), "{err}");
    let err = b
        .get_state(
            &ValueStateDescriptor::<u64>::new("z")
                .enable_time_to_live(StateTtlConfig::new(Duration::ZERO)),
        )
        .unwrap_err();
    assert!(matches!(err, StateError::InvalidTtl { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// Against a model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Key(u64),
    Advance(i64),
    ValueUpdate(u8),
    ValueRead,
    ValueClear,
    ListAdd(u8),
    ListGet,
    MapPut(u8, u8),
    MapGet(u8),
    MapRemove(u8),
    MapEntries,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u64).prop_map(Op::Key),
        (0..8i64).prop_map(Op::Advance),
        any::<u8>().prop_map(Op::ValueUpdate),
        Just(Op::ValueRead),
        Just(Op::ValueClear),
        any::<u8>().prop_map(Op::ListAdd),
        Just(Op::ListGet),
        (0..3u8, any::<u8>()).prop_map(|(k, v)| Op::MapPut(k, v)),
        (0..3u8).prop_map(Op::MapGet),
        (0..3u8).prop_map(Op::MapRemove),
        Just(Op::MapEntries),
    ]
}

/// Flink's semantics on one stored `(value, timestamp)`: what a read
/// returns and whether it is kept.
fn model_read<V: Clone>(
    slot: &mut Option<(V, i64)>,
    now: i64,
    on_read: bool,
    return_expired: bool,
) -> Option<V> {
    let (v, ts) = slot.as_mut()?;
    if *ts + TTL.as_millis() as i64 <= now {
        let v = v.clone();
        *slot = None;
        return return_expired.then_some(v);
    }
    if on_read {
        *ts = now;
    }
    Some(v.clone())
}

#[derive(Default)]
struct Model {
    values: HashMap<u64, (u8, i64)>,
    lists: HashMap<u64, Vec<(u8, i64)>>,
    maps: HashMap<u64, BTreeMap<u8, (u8, i64)>>,
}

fn run_model(ops: Vec<Op>, on_read: bool, return_expired: bool) -> Result<(), TestCaseError> {
    let clock = Arc::new(AtomicI64::new(1000));
    let mut b = backend_at(everything(), &clock);
    let cfg = config(on_read, return_expired);
    let v = b
        .get_state(&ValueStateDescriptor::<u8>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<u8>::new("l").enable_time_to_live(cfg.clone()))
        .unwrap();
    let m = b
        .get_map_state(&MapStateDescriptor::<u8, u8>::new("m").enable_time_to_live(cfg))
        .unwrap();
    let mut model = Model::default();
    let mut key = 0u64;
    set_key(&mut b, key);
    let expired = |ts: i64, now: i64| ts + TTL.as_millis() as i64 <= now;
    for op in ops {
        let now = clock.load(Ordering::Relaxed);
        match op {
            Op::Key(k) => {
                key = k;
                set_key(&mut b, k);
            }
            Op::Advance(d) => {
                clock.fetch_add(d, Ordering::Relaxed);
            }
            Op::ValueUpdate(x) => {
                v.update(&mut b, x).unwrap();
                model.values.insert(key, (x, now));
            }
            Op::ValueRead => {
                let mut slot = model.values.remove(&key);
                let want = model_read(&mut slot, now, on_read, return_expired);
                if let Some(s) = slot {
                    model.values.insert(key, s);
                }
                prop_assert_eq!(v.value(&mut b).unwrap(), want);
            }
            Op::ValueClear => {
                v.clear(&mut b).unwrap();
                model.values.remove(&key);
            }
            Op::ListAdd(x) => {
                l.add(&mut b, x).unwrap();
                model.lists.entry(key).or_default().push((x, now));
            }
            Op::ListGet => {
                let list = model.lists.remove(&key).unwrap_or_default();
                let mut want = Vec::new();
                let mut keep = Vec::new();
                for (x, ts) in list {
                    if expired(ts, now) {
                        if return_expired {
                            want.push(x);
                        }
                    } else {
                        want.push(x);
                        keep.push((x, if on_read { now } else { ts }));
                    }
                }
                if !keep.is_empty() {
                    model.lists.insert(key, keep);
                }
                prop_assert_eq!(l.get(&mut b).unwrap().collect::<Vec<_>>(), want);
            }
            Op::MapPut(k, x) => {
                m.put(&mut b, k, x).unwrap();
                model.maps.entry(key).or_default().insert(k, (x, now));
            }
            Op::MapGet(k) => {
                let map = model.maps.entry(key).or_default();
                let mut slot = map.remove(&k);
                let want = model_read(&mut slot, now, on_read, return_expired);
                if let Some(s) = slot {
                    map.insert(k, s);
                }
                prop_assert_eq!(m.get(&mut b, &k).unwrap(), want);
            }
            Op::MapRemove(k) => {
                let want = model
                    .maps
                    .entry(key)
                    .or_default()
                    .remove(&k)
                    .filter(|(_, ts)| return_expired || !expired(*ts, now))
                    .map(|(x, _)| x);
                prop_assert_eq!(m.remove(&mut b, &k).unwrap(), want);
            }
            Op::MapEntries => {
                let map = model.maps.entry(key).or_default();
                let mut want = Vec::new();
                map.retain(|k, (x, ts)| {
                    if expired(*ts, now) {
                        if return_expired {
                            want.push((*k, *x));
                        }
                        return false;
                    }
                    if on_read {
                        *ts = now;
                    }
                    want.push((*k, *x));
                    true
                });
                let mut got = m.entries(&mut b).unwrap().collect::<Vec<_>>();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ttl_matches_the_model(
        ops in prop::collection::vec(op(), 1..120),
        on_read in any::<bool>(),
        return_expired in any::<bool>(),
    ) {
        run_model(ops, on_read, return_expired)?;
    }
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/// 100 keys written at 0 and 100 at 50, TTL 100.
fn two_generations(b: &mut KeyedStateBackend<u64>, clock: &AtomicI64, cfg: StateTtlConfig) {
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
        .unwrap();
    let l = b
        .get_list_state(&ListStateDescriptor::<u64>::new("l").enable_time_to_live(cfg))
        .unwrap();
    for k in 0..200u64 {
        clock.store(if k < 100 { 0 } else { 50 }, Ordering::Relaxed);
        set_key(b, k);
        v.update(b, k).unwrap();
        l.add(b, k).unwrap();
        // One old element in every list.
        if k >= 100 {
            clock.store(0, Ordering::Relaxed);
            l.add(b, 1000 + k).unwrap();
        }
    }
}

fn full_snapshot_cleanup() -> StateTtlConfig {
    StateTtlConfig::new_builder(Duration::from_millis(100))
        .disable_cleanup_in_background()
        .cleanup_full_snapshot()
        .build()
}

#[test]
fn full_snapshot_cleanup_leaves_expired_entries_out() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    two_generations(&mut b, &clock, full_snapshot_cleanup());
    clock.store(60, Ordering::Relaxed);
    let before = b.snapshot().encode().unwrap();
    assert_eq!(entries_of::<TtlValue<u64>>(&before, "v").len(), 200);
    clock.store(120, Ordering::Relaxed);
    let after = b.snapshot().encode().unwrap();
    assert!(
        after.len() < before.len() * 2 / 3,
        "expired entries are gone from the snapshot: {} -> {} bytes",
        before.len(),
        after.len()
    );
    // Only the keys written at 50 are left, with their timestamps, and
    // the lists without their old elements.
    let values = entries_of::<TtlValue<u64>>(&after, "v");
    assert_eq!(values.len(), 100);
    assert!(values.iter().all(|(k, v)| *k >= 100 && v.timestamp() == 50 && *v.value() == *k));
    let lists = entries_of::<Vec<TtlValue<u64>>>(&after, "l");
    assert_eq!(lists.len(), 100);
    assert!(lists.iter().all(|(k, l)| l.len() == 1 && *l[0].value() == *k));
    // The live state still holds them (no read, no other cleanup).
    assert_eq!(b.keys_per_key_group("v").unwrap().iter().sum::<usize>(), 200);
    // A restore has what the snapshot has.
    let mut r = restore(everything(), &clock, &[after]);
    let v = r
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(full_snapshot_cleanup()))
        .unwrap();
    assert_eq!(r.keys_per_key_group("v").unwrap().iter().sum::<usize>(), 100);
    set_key(&mut r, 150);
    assert_eq!(v.value(&mut r).unwrap(), Some(150));
}

#[test]
fn timestamps_survive_snapshots_and_rescaling() {
    let clock = Arc::new(AtomicI64::new(0));
    let cfg = StateTtlConfig::new_builder(Duration::from_millis(100))
        .disable_cleanup_in_background()
        .build();
    let mut b = backend_at(everything(), &clock);
    two_generations(&mut b, &clock, cfg.clone());
    let snap = b.snapshot().encode().unwrap();
    // Without full-snapshot cleanup, expired entries stay, timestamps too.
    assert_eq!(entries_of::<TtlValue<u64>>(&snap, "v").len(), 200);
    clock.store(120, Ordering::Relaxed);
    let mut seen = 0;
    for i in 0..2 {
        let range = KeyGroupRange::for_operator_index(MAX_P, 2, i);
        let mut r = restore(range, &clock, std::slice::from_ref(&snap));
        let v = r
            .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(cfg.clone()))
            .unwrap();
        let l = r
            .get_list_state(&ListStateDescriptor::<u64>::new("l").enable_time_to_live(cfg.clone()))
            .unwrap();
        for k in 0..200u64 {
            let kg = key_group_for_key(&k, MAX_P);
            if !range.contains(kg) {
                continue;
            }
            seen += 1;
            set_key(&mut r, k);
            let (want_v, want_l) = if k < 100 { (None, vec![]) } else { (Some(k), vec![k]) };
            assert_eq!(v.value(&mut r).unwrap(), want_v, "key {k}");
            assert_eq!(l.get(&mut r).unwrap().collect::<Vec<_>>(), want_l, "key {k}");
        }
        // At 150 the second generation expires too.
        clock.store(150, Ordering::Relaxed);
        for k in 100..200u64 {
            if range.contains(key_group_for_key(&k, MAX_P)) {
                set_key(&mut r, k);
                assert_eq!(v.value(&mut r).unwrap(), None);
            }
        }
        clock.store(120, Ordering::Relaxed);
    }
    assert_eq!(seen, 200);
}

#[test]
fn enabling_or_disabling_ttl_on_restored_state_is_refused() {
    let clock = Arc::new(AtomicI64::new(0));
    let mut b = backend_at(everything(), &clock);
    let with = b
        .get_state(&ValueStateDescriptor::<u64>::new("with").enable_time_to_live(StateTtlConfig::new(TTL)))
        .unwrap();
    let without = b
        .get_state(&ValueStateDescriptor::<u64>::new("without"))
        .unwrap();
    set_key(&mut b, 1);
    with.update(&mut b, 1).unwrap();
    without.update(&mut b, 2).unwrap();
    let snap = b.snapshot().encode().unwrap();
    let metas = KeyedStateFile::decode(&snap).unwrap().states;
    assert!(metas[0].has_ttl() && !metas[1].has_ttl());

    let mut r = restore(everything(), &clock, std::slice::from_ref(&snap));
    let err = r
        .get_state(&ValueStateDescriptor::<u64>::new("with"))
        .unwrap_err();
    assert!(
        matches!(&err, StateError::IncompatibleRestore { reason, .. } if reason.contains("TTL")),
        "{err}"
    );
    let err = r
        .get_state(&ValueStateDescriptor::<u64>::new("without").enable_time_to_live(StateTtlConfig::new(TTL)))
        .unwrap_err();
    assert!(
        matches!(&err, StateError::IncompatibleRestore { reason, .. } if reason.contains("TTL")),
        "{err}"
    );
    // Declared as they were, both restore; a TTL's duration may change.
    let with = r
        .get_state(
            &ValueStateDescriptor::<u64>::new("with")
                .enable_time_to_live(StateTtlConfig::new(Duration::from_secs(5))),
        )
        .unwrap();
    let without = r.get_state(&ValueStateDescriptor::<u64>::new("without")).unwrap();
    set_key(&mut r, 1);
    assert_eq!(with.value(&mut r).unwrap(), Some(1));
    assert_eq!(without.value(&mut r).unwrap(), Some(2));
}

/// The canonical bytes of a TTL state are pinned: a checkpoint or
/// savepoint taken today must restore in every later version.
#[test]
fn ttl_snapshot_format_is_pinned() {
    let clock = Arc::new(AtomicI64::new(0x0102));
    let mut b = backend_at(everything(), &clock);
    let v = b
        .get_state(&ValueStateDescriptor::<u64>::new("v").enable_time_to_live(StateTtlConfig::new(TTL)))
        .unwrap();
    set_key(&mut b, 1);
    v.update(&mut b, 5).unwrap();
    let bytes = b.snapshot().encode().unwrap();
    let kg = key_group_for_key(&1u64, MAX_P);
    assert!(kg < 128, "one varint byte");
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x80, 0x01, 0x00, 0x7f,             // max parallelism 128, key groups 0..=127
        0x01,                               // one state:
        0x01, b'v',                         //   name "v"
        0xc0,                               //   kind: value (0) | TTL (0x80) | identity (0x40)
        0x03, b'u', b'6', b'4',             //   declared type "u64"
        0x08, b'p', b'o', b's', b't',       //   identity: codec "postcard",
        b'c', b'a', b'r', b'd',
        0x01,                               //     format version 1,
        0x01, 0x03, b'u', b'6', b'4',       //     types ["u64"],
        0x00,                               //     no schema
        0x01,                               // one key group:
        kg as u8, 0x01,                     //   its number, one state in it
        0x00, 0x0b,                         //   state 0, 11 bytes:
        0x01,                               //     one (key, value) pair:
        0x01,                               //     key 1
        0, 0, 0, 0, 0, 0, 0x01, 0x02,       //     timestamp 0x0102, big-endian
        0x05,                               //     value 5
    ];
    assert_eq!(bytes, expected);
    assert_eq!(
        KeyedStateFile::decode(&bytes).unwrap().states,
        vec![StateMeta {
            name: "v".into(),
            kind: 0x80,
            value_type: "u64".into(),
            serializer: Some(floe_state::SerializerIdentity::postcard(&["u64"])),
        }]
    );
}
