//! The timer suite (`timers/suite.rs`) on the RocksDB backend — the same
//! firing order as the heap's, through its cached heads — and timers moving
//! between the two backends through canonical snapshots.
#![cfg(feature = "rocksdb")]

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::RocksDb;

/// The backend's default settings.
fn settings() -> floe_state::StateBackendSettings {
    BACKEND.into()
}

include!("timers/suite.rs");

fn on(kind: floe_state::StateBackendKind, p: u32, i: u32) -> KeyedStateBackend<u64> {
    KeyedStateBackend::new(
        kind,
        "op",
        KeyGroupRange::for_operator_index(MAX_P, p, i),
        MAX_P,
    )
    .unwrap()
}

/// The timer bytes of each key group in a canonical snapshot.
fn timer_groups(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let file = KeyedStateFile::decode(bytes).unwrap();
    let idx = file.states.iter().position(|s| s.name == QUEUE).unwrap() as u32;
    file.key_groups
        .into_iter()
        .filter_map(|g| {
            let (_, b) = g.states.into_iter().find(|(i, _)| *i == idx)?;
            Some((g.key_group, b))
        })
        .collect()
}

/// The same timers on the heap and on RocksDB snapshot to the same bytes,
/// and each backend's snapshot restores on the other, also rescaled.
#[test]
fn timers_move_between_heap_and_rocksdb() {
    use floe_state::StateBackendKind::{HashMap, RocksDb};
    let mut heap = on(HashMap, 1, 0);
    let mut rocks = on(RocksDb, 1, 0);
    let hq = heap.timer_queue::<u32>(QUEUE).unwrap();
    let rq = rocks.timer_queue::<u32>(QUEUE).unwrap();
    let m = fill(&mut heap, &hq, 4_000, 600);
    let m2 = fill(&mut rocks, &rq, 4_000, 600);
    assert_eq!(m.sets, m2.sets);
    let from_heap = heap.snapshot().encode().unwrap();
    let from_rocks = rocks.snapshot().encode().unwrap();
    assert_eq!(timer_groups(&from_heap), timer_groups(&from_rocks));
    for (bytes, kind) in [(&from_heap, RocksDb), (&from_rocks, HashMap)] {
        for (p, i) in [(1, 0), (2, 1), (4, 0)] {
            let mut r = on(kind, p, i);
            r.restore([bytes.as_slice()]).unwrap();
            let q = r.timer_queue::<u32>(QUEUE).unwrap();
            let mine = m.restrict(r.key_group_range());
            assert_drains_as(&mut r, &q, &mine);
        }
    }
}
