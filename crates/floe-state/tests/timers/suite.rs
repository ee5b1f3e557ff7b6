// Timers as keyed state, for the backend `BACKEND` with the `settings()`
// of the including file (`timers_heap.rs`, `timers_rocksdb.rs`,
// `timers_rocksdb_small_cache.rs`): the firing order against an
// independent model (`model.rs`), uniqueness, snapshots, restores at
// other parallelisms, the pinned encoding, and errors.

#[path = "model.rs"]
mod model;

use floe_state::{
    KeyGroupRange, KeyedStateBackend, KeyedStateFile, KeyedStateSnapshot, StateError, StateKind,
    TimeDomain, TimerQueue, ValueStateDescriptor, key_group_for_key,
};
use model::{Model, assert_drains_as, drain, fill, fired, poll, register, set_key};
use proptest::prelude::*;

const MAX_P: u32 = 128;
const QUEUE: &str = "user-timers";

fn backend_at(max_p: u32, p: u32, i: u32) -> KeyedStateBackend<u64> {
    KeyedStateBackend::new(
        settings(),
        "op",
        KeyGroupRange::for_operator_index(max_p, p, i),
        max_p,
    )
    .expect("the backend opens")
}

fn backend(p: u32, i: u32) -> KeyedStateBackend<u64> {
    backend_at(MAX_P, p, i)
}

/// Keys whose varints have 1 to 10 bytes, so their byte order differs
/// from their numeric order.
const KEYS: [u64; 13] = [
    0,
    1,
    2,
    3,
    127,
    128,
    200,
    255,
    300,
    16_384,
    70_000,
    1 << 40,
    u64::MAX,
];
const NAMESPACES: [u32; 4] = [0, 1, 128, 300];

fn domain_of(processing: bool) -> TimeDomain {
    if processing {
        TimeDomain::ProcessingTime
    } else {
        TimeDomain::EventTime
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        key: usize,
        ns: usize,
        processing: bool,
        ts: i64,
    },
    /// `len` timers of one key at consecutive timestamps: fills a key
    /// group past the RocksDB store's cached head.
    RegisterRun {
        key: usize,
        ns: usize,
        processing: bool,
        from: i64,
        len: u16,
    },
    Delete {
        key: usize,
        ns: usize,
        processing: bool,
        ts: i64,
    },
    /// Polls up to `max` due timers.
    Poll {
        processing: bool,
        up_to: i64,
        max: u16,
    },
    /// Polls one due timer and, as `on_timer` may, registers another for
    /// its key `delta` later (already due when `delta` is small) and
    /// deletes one `delta` earlier.
    Fire {
        processing: bool,
        up_to: i64,
        delta: i64,
    },
    /// Deletes the `nth` pending timer (modulo their number) of a domain.
    DeletePending { processing: bool, nth: usize },
    /// Snapshot, restore into a new backend, go on with that one.
    SnapshotRestore,
    /// Deletes a timer and registers it again, `times` times: it stays
    /// one timer (the heap store keeps a copy per registration until
    /// it polls or compacts them).
    Churn {
        key: usize,
        ns: usize,
        processing: bool,
        ts: i64,
        times: u8,
    },
    /// Polls up to `max` due timers; after each, as `on_timer` may,
    /// registers a timer at the fired one's timestamp (due at once) for
    /// the key `stride` further in `KEYS`, and deletes the one for the
    /// key `2 * stride` further.
    FireAtSameTimestamp {
        processing: bool,
        up_to: i64,
        max: u16,
        stride: usize,
    },
    /// A snapshot kept with the model as it is now, encoded only at the
    /// end of the run (after everything that follows changed the queue),
    /// restored, and drained against that model.
    SnapshotForLater,
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -3i64..40,
        // Across the heap store's chunks of 1,024 timestamps.
        2 => -3_000i64..3_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(-(1i64 << 40)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let ns = 0..NAMESPACES.len();
    prop_oneof![
        6 => (key.clone(), ns.clone(), any::<bool>(), timestamp())
            .prop_map(|(key, ns, processing, ts)| Op::Register { key, ns, processing, ts }),
        1 => (key.clone(), ns.clone(), any::<bool>(), -3i64..40, 0u16..300)
            .prop_map(|(key, ns, processing, from, len)| Op::RegisterRun { key, ns, processing, from, len }),
        3 => (key.clone(), ns.clone(), any::<bool>(), timestamp())
            .prop_map(|(key, ns, processing, ts)| Op::Delete { key, ns, processing, ts }),
        3 => (any::<bool>(), timestamp(), 0u16..400)
            .prop_map(|(processing, up_to, max)| Op::Poll { processing, up_to, max }),
        2 => (any::<bool>(), timestamp(), -3i64..10)
            .prop_map(|(processing, up_to, delta)| Op::Fire { processing, up_to, delta }),
        2 => (any::<bool>(), any::<usize>())
            .prop_map(|(processing, nth)| Op::DeletePending { processing, nth }),
        1 => Just(Op::SnapshotRestore),
        1 => (key.clone(), ns.clone(), any::<bool>(), timestamp(), 1u8..40)
            .prop_map(|(key, ns, processing, ts, times)| Op::Churn { key, ns, processing, ts, times }),
        1 => (any::<bool>(), timestamp(), 0u16..200, 1..KEYS.len())
            .prop_map(|(processing, up_to, max, stride)| Op::FireAtSameTimestamp { processing, up_to, max, stride }),
        1 => Just(Op::SnapshotForLater),
    ]
}

fn cases() -> u32 {
    match BACKEND {
        floe_state::StateBackendKind::HashMap => 256,
        floe_state::StateBackendKind::RocksDb => 48,
    }
}

/// The snapshot of a new backend holding exactly the model's timers: what
/// any backend with those timers pending must write, whatever it went
/// through to get there.
fn canonical_bytes(max_p: u32, m: &Model) -> Vec<u8> {
    let mut b = backend_at(max_p, 1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut copy = Model::new(max_p);
    for domain in TimeDomain::ALL {
        for t in &m.sets[usize::from(domain == TimeDomain::ProcessingTime)] {
            register(&mut b, &q, &mut copy, domain, t.key, t.ns, t.ts);
        }
    }
    b.snapshot().encode().unwrap()
}

/// Runs `ops` against a backend with `max_p` key groups and the model;
/// after every step the earliest timestamps agree, and every poll returns
/// exactly the model's timer.
fn run(max_p: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut b = backend_at(max_p, 1, 0);
    let mut q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(max_p);
    let mut for_later: Vec<(KeyedStateSnapshot, Model)> = Vec::new();
    let mut encoded = Vec::new();
    for op in ops {
        match op {
            Op::Register {
                key,
                ns,
                processing,
                ts,
            } => register(
                &mut b,
                &q,
                &mut m,
                domain_of(processing),
                KEYS[key],
                NAMESPACES[ns],
                ts,
            ),
            Op::RegisterRun {
                key,
                ns,
                processing,
                from,
                len,
            } => {
                for ts in from..from + i64::from(len) {
                    register(
                        &mut b,
                        &q,
                        &mut m,
                        domain_of(processing),
                        KEYS[key],
                        NAMESPACES[ns],
                        ts,
                    );
                }
            }
            Op::Delete {
                key,
                ns,
                processing,
                ts,
            } => {
                let domain = domain_of(processing);
                set_key(&mut b, KEYS[key]);
                b.delete_timer(&q, domain, ts, &NAMESPACES[ns]).unwrap();
                m.delete(domain, KEYS[key], NAMESPACES[ns], ts);
            }
            Op::Poll {
                processing,
                up_to,
                max,
            } => {
                let domain = domain_of(processing);
                for _ in 0..max {
                    let want = m.poll(domain, up_to);
                    let got = poll(&mut b, &q, domain, up_to);
                    prop_assert_eq!(&got, &want);
                    if got.is_none() {
                        break;
                    }
                }
            }
            Op::Fire {
                processing,
                up_to,
                delta,
            } => {
                let domain = domain_of(processing);
                let want = m.poll(domain, up_to);
                let got = poll(&mut b, &q, domain, up_to);
                prop_assert_eq!(&got, &want);
                if let Some(t) = got {
                    let later = t.ts.saturating_add(delta);
                    register(&mut b, &q, &mut m, domain, t.key, t.ns, later);
                    let earlier = t.ts.saturating_sub(delta);
                    b.delete_timer(&q, domain, earlier, &t.ns).unwrap();
                    m.delete(domain, t.key, t.ns, earlier);
                }
            }
            Op::DeletePending { processing, nth } => {
                let domain = domain_of(processing);
                let set = &m.sets[usize::from(processing)];
                if let Some(t) = set.iter().nth(nth % set.len().max(1)).cloned() {
                    set_key(&mut b, t.key);
                    b.delete_timer(&q, domain, t.ts, &t.ns).unwrap();
                    m.delete(domain, t.key, t.ns, t.ts);
                }
            }
            Op::SnapshotRestore => {
                // A RocksDB snapshot is encoded while its backend lives.
                encoded.extend(for_later.drain(..).map(|(s, m)| (s.encode().unwrap(), m)));
                let bytes = b.snapshot().encode().unwrap();
                prop_assert_eq!(&bytes, &canonical_bytes(max_p, &m));
                let mut r = backend_at(max_p, 1, 0);
                r.restore([bytes.as_slice()]).unwrap();
                q = r.timer_queue::<u32>(QUEUE).unwrap();
                b = r;
            }
            Op::Churn {
                key,
                ns,
                processing,
                ts,
                times,
            } => {
                let domain = domain_of(processing);
                for _ in 0..times {
                    set_key(&mut b, KEYS[key]);
                    b.delete_timer(&q, domain, ts, &NAMESPACES[ns]).unwrap();
                    m.delete(domain, KEYS[key], NAMESPACES[ns], ts);
                    register(&mut b, &q, &mut m, domain, KEYS[key], NAMESPACES[ns], ts);
                }
            }
            Op::FireAtSameTimestamp {
                processing,
                up_to,
                max,
                stride,
            } => {
                let domain = domain_of(processing);
                for i in 0..max {
                    let want = m.poll(domain, up_to);
                    let got = poll(&mut b, &q, domain, up_to);
                    prop_assert_eq!(&got, &want);
                    let Some(t) = got else { break };
                    let at = KEYS.iter().position(|k| *k == t.key).unwrap();
                    let ns = NAMESPACES[usize::from(i) % NAMESPACES.len()];
                    let other = KEYS[(at + stride) % KEYS.len()];
                    register(&mut b, &q, &mut m, domain, other, ns, t.ts);
                    let gone = KEYS[(at + 2 * stride) % KEYS.len()];
                    set_key(&mut b, gone);
                    b.delete_timer(&q, domain, t.ts, &t.ns).unwrap();
                    m.delete(domain, gone, t.ns, t.ts);
                }
            }
            Op::SnapshotForLater => for_later.push((b.snapshot(), m.clone())),
        }
        for domain in TimeDomain::ALL {
            prop_assert_eq!(b.next_timer(&q, domain), m.next(domain), "{}", domain);
        }
    }
    // What is left fires in the model's order; so does what each kept
    // snapshot held when it was taken.
    assert_drains_as(&mut b, &q, &m);
    encoded.extend(for_later.drain(..).map(|(s, m)| (s.encode().unwrap(), m)));
    for (bytes, at_snapshot) in encoded {
        prop_assert_eq!(&bytes, &canonical_bytes(max_p, &at_snapshot));
        let mut r = backend_at(max_p, 1, 0);
        r.restore([bytes.as_slice()]).unwrap();
        let rq = r.timer_queue::<u32>(QUEUE).unwrap();
        assert_drains_as(&mut r, &rq, &at_snapshot);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Random registrations, deletions, polls and on-timer registrations
    /// over 8 key groups (so groups hold hundreds of timers): the polled
    /// sequence is the model's.
    #[test]
    fn polled_timers_follow_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(8, ops)?;
    }

    /// The same over 128 key groups, one subtask.
    #[test]
    fn polled_timers_follow_the_model_over_many_key_groups(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(MAX_P, ops)?;
    }
}

#[test]
fn a_timer_is_unique_per_key_namespace_and_timestamp() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    set_key(&mut b, 7);
    for _ in 0..3 {
        b.register_timer(&q, TimeDomain::EventTime, 10, 1).unwrap();
    }
    // Another namespace, timestamp, domain or key is another timer.
    b.register_timer(&q, TimeDomain::EventTime, 10, 2).unwrap();
    b.register_timer(&q, TimeDomain::EventTime, 11, 1).unwrap();
    b.register_timer(&q, TimeDomain::ProcessingTime, 10, 1)
        .unwrap();
    set_key(&mut b, 8);
    b.register_timer(&q, TimeDomain::EventTime, 10, 1).unwrap();
    let fired: Vec<(i64, u64, u32)> = drain(&mut b, &q, TimeDomain::EventTime, i64::MAX)
        .into_iter()
        .map(|t| (t.ts, t.key, t.ns))
        .collect();
    assert_eq!(fired.len(), 4, "{fired:?}");
    assert_eq!(
        fired.iter().filter(|t| **t == (10, 7, 1)).count(),
        1,
        "{fired:?}"
    );
    assert_eq!(
        drain(&mut b, &q, TimeDomain::ProcessingTime, i64::MAX).len(),
        1
    );
}

#[test]
fn deleting_a_timer_that_does_not_exist_changes_nothing() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    register(&mut b, &q, &mut m, TimeDomain::EventTime, 5, 0, 100);
    set_key(&mut b, 5);
    b.delete_timer(&q, TimeDomain::EventTime, 101, &0).unwrap();
    b.delete_timer(&q, TimeDomain::EventTime, 100, &1).unwrap();
    b.delete_timer(&q, TimeDomain::ProcessingTime, 100, &0)
        .unwrap();
    set_key(&mut b, 6);
    b.delete_timer(&q, TimeDomain::EventTime, 100, &0).unwrap();
    // Deleted twice: the second is a no-op too.
    set_key(&mut b, 5);
    register(&mut b, &q, &mut m, TimeDomain::EventTime, 5, 0, 50);
    b.delete_timer(&q, TimeDomain::EventTime, 50, &0).unwrap();
    b.delete_timer(&q, TimeDomain::EventTime, 50, &0).unwrap();
    m.delete(TimeDomain::EventTime, 5, 0, 50);
    assert_drains_as(&mut b, &q, &m);
}

/// Timers set again after they were written (a snapshot writes every
/// buffered change), past a group's cached head, and then deleted or
/// fired: none comes back, none is lost. What a function that sets the
/// same timer for every record of its key does, across checkpoints.
#[test]
fn timers_set_again_after_a_snapshot_are_deleted_for_good() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    // One key (one key group): 300 timers, past the default cache of 128.
    for ts in 0..300 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, 7, 0, ts);
    }
    b.snapshot().encode().unwrap();
    for round in 0..2 {
        for ts in 0..300 {
            register(&mut b, &q, &mut m, TimeDomain::EventTime, 7, 0, ts);
        }
        set_key(&mut b, 7);
        for ts in (round..300).step_by(3) {
            b.delete_timer(&q, TimeDomain::EventTime, ts, &0).unwrap();
            m.delete(TimeDomain::EventTime, 7, 0, ts);
        }
        b.snapshot().encode().unwrap();
    }
    // Half of what is left fires, then the rest is set again and drained.
    let fired: Vec<_> = (0..100)
        .map_while(|_| poll(&mut b, &q, TimeDomain::EventTime, 200))
        .collect();
    assert_eq!(fired, (0..100).map_while(|_| m.poll(TimeDomain::EventTime, 200)).collect::<Vec<_>>());
    for ts in 150..300 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, 7, 0, ts);
    }
    assert_drains_as(&mut b, &q, &m);
}

/// Polling leaves the current key alone, and timers registered while
/// firing (already due or not) come out of later polls in order.
#[test]
fn timers_registered_while_firing_fire_in_order() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    for k in 0..50 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, k, 0, 10);
    }
    set_key(&mut b, 1_000);
    let mut fired_count = 0;
    while let Some(t) = b.poll_timer(&q, TimeDomain::EventTime, 20).unwrap() {
        assert_eq!(b.current_key(), Some(&1_000));
        let t = fired(&b, t);
        assert_eq!(Some(&t), m.poll(TimeDomain::EventTime, 20).as_ref());
        fired_count += 1;
        if t.ts < 20 {
            // Due within this watermark, and one that is not.
            register(&mut b, &q, &mut m, TimeDomain::EventTime, t.key, 0, t.ts + 5);
            register(&mut b, &q, &mut m, TimeDomain::EventTime, t.key, 1, 25);
            set_key(&mut b, 1_000);
        }
    }
    assert_eq!(fired_count, 150);
    assert_eq!(b.next_timer(&q, TimeDomain::EventTime), Some(25));
    assert_drains_as(&mut b, &q, &m);
}

/// A timer deleted and set again, over and over, while its timestamp
/// holds other timers of its key group (and while that timestamp fires):
/// it is one timer, fires once, and a snapshot holds it once.
#[test]
fn a_timer_deleted_and_set_again_is_one_timer() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    // One key, so one key group: namespaces make the other timers.
    const KEY: u64 = 7;
    for ns in 0..20 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, KEY, ns * 10, 10);
    }
    let churn = |b: &mut KeyedStateBackend<u64>, m: &mut Model, ns: u32, times: usize| {
        for _ in 0..times {
            set_key(b, KEY);
            b.delete_timer(&q, TimeDomain::EventTime, 10, &ns).unwrap();
            m.delete(TimeDomain::EventTime, KEY, ns, 10);
            register(b, &q, m, TimeDomain::EventTime, KEY, ns, 10);
        }
    };
    churn(&mut b, &mut m, 70, 500);
    churn(&mut b, &mut m, 1_000, 3);
    let snap = b.snapshot();
    let at_snapshot = m.clone();
    // Half fires; then timers fired, pending and new are churned while
    // their timestamp fires.
    for _ in 0..10 {
        let want = m.poll(TimeDomain::EventTime, 10);
        assert_eq!(poll(&mut b, &q, TimeDomain::EventTime, 10), want);
    }
    for ns in [30, 70, 130, 190, 1_000, 5] {
        churn(&mut b, &mut m, ns, 100);
    }
    for _ in 0..5 {
        let want = m.poll(TimeDomain::EventTime, 10);
        assert_eq!(poll(&mut b, &q, TimeDomain::EventTime, 10), want);
    }
    let bytes = snap.encode().unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let rq = r.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut r, &rq, &at_snapshot);
    let bytes = b.snapshot().encode().unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let rq = r.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut r, &rq, &m);
    assert_drains_as(&mut b, &q, &m);
}

/// Many timers at one timestamp, and while it fires, more at that same
/// timestamp (before and after the one firing, in firing order) and
/// deletions of some still pending: each poll is the model's.
#[test]
fn timers_set_at_the_timestamp_firing_fire_in_order() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    for k in 0..2_000 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, k * 3, 0, 50);
    }
    register(&mut b, &q, &mut m, TimeDomain::EventTime, 1, 0, 51);
    let mut fired = 0;
    while let Some(t) = poll(&mut b, &q, TimeDomain::EventTime, 50) {
        assert_eq!(Some(&t), m.poll(TimeDomain::EventTime, 50).as_ref());
        fired += 1;
        if fired <= 1_500 {
            // A key of its own (not a multiple of 3) and, below 600, one
            // that may be among the fired ones.
            register(&mut b, &q, &mut m, TimeDomain::EventTime, t.key * 7 + 1, 1, 50);
            register(&mut b, &q, &mut m, TimeDomain::EventTime, fired % 600, 2, 50);
            let gone = (t.key * 11 + 3) % 6_000;
            set_key(&mut b, gone);
            b.delete_timer(&q, TimeDomain::EventTime, 50, &0).unwrap();
            m.delete(TimeDomain::EventTime, gone, 0, 50);
        }
    }
    assert!(fired > 3_000, "{fired}");
    assert_eq!(b.next_timer(&q, TimeDomain::EventTime), Some(51));
    assert_drains_as(&mut b, &q, &m);
}

/// A snapshot taken while a timestamp fires, with deleted and set-again
/// timers pending in it: the restored queue fires exactly the pending
/// ones, as does the original.
#[test]
fn a_snapshot_taken_mid_firing_holds_exactly_the_pending_timers() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = Model::new(MAX_P);
    for k in 0..1_000 {
        register(&mut b, &q, &mut m, TimeDomain::EventTime, k, k as u32 % 3, 5);
        register(&mut b, &q, &mut m, TimeDomain::ProcessingTime, k, 0, k as i64 % 4);
    }
    for _ in 0..400 {
        let want = m.poll(TimeDomain::EventTime, 5);
        assert_eq!(poll(&mut b, &q, TimeDomain::EventTime, 5), want);
    }
    for k in (0..1_000).step_by(3) {
        let ns = k as u32 % 3;
        set_key(&mut b, k);
        b.delete_timer(&q, TimeDomain::EventTime, 5, &ns).unwrap();
        m.delete(TimeDomain::EventTime, k, ns, 5);
        if k % 2 == 0 {
            // Set again: fired ones come back, pending ones stay.
            register(&mut b, &q, &mut m, TimeDomain::EventTime, k, ns, 5);
        }
    }
    let bytes = b.snapshot().encode().unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let rq = r.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut r, &rq, &m);
    assert_drains_as(&mut b, &q, &m);
}

/// Long keys and namespaces (past the heap's inline bytes) fire in the
/// order of their encoded bytes too.
#[test]
fn long_keys_and_namespaces_fire_in_byte_order() {
    let mut b = KeyedStateBackend::<String>::new(
        settings(),
        "op",
        KeyGroupRange::for_operator_index(4, 1, 0),
        4,
    )
    .unwrap();
    let q = b.timer_queue::<String>(QUEUE).unwrap();
    let mut want = Vec::new();
    for i in 0..40u32 {
        let key = "k".repeat((i % 7 * 9) as usize) + &i.to_string();
        let kg = key_group_for_key(&key, 4);
        b.set_current_key(key.clone(), kg).unwrap();
        for ns in ["", "a", &"n".repeat(30)] {
            let ts = i64::from(i % 3);
            b.register_timer(&q, TimeDomain::EventTime, ts, ns.to_string())
                .unwrap();
            want.push((
                ts,
                kg,
                postcard::to_allocvec(&key).unwrap(),
                postcard::to_allocvec(ns).unwrap(),
                key.clone(),
                ns.to_string(),
            ));
        }
    }
    want.sort();
    let bytes = b.snapshot().encode().unwrap();
    let mut r = KeyedStateBackend::<String>::new(
        settings(),
        "op",
        KeyGroupRange::for_operator_index(4, 1, 0),
        4,
    )
    .unwrap();
    r.restore([bytes.as_slice()]).unwrap();
    let rq = r.timer_queue::<String>(QUEUE).unwrap();
    for (b, q) in [(&mut b, &q), (&mut r, &rq)] {
        let mut got = Vec::new();
        while let Some(t) = b.poll_timer(q, TimeDomain::EventTime, i64::MAX).unwrap() {
            got.push((t.timestamp, t.key_group, t.key, t.namespace));
        }
        let want: Vec<_> = want
            .iter()
            .map(|(ts, kg, _, _, k, n)| (*ts, *kg, k.clone(), n.clone()))
            .collect();
        assert_eq!(got, want);
    }
}

/// Snapshot and restore at the same parallelism, alongside states
/// registered before and after the queue: exactly the pending timers.
#[test]
fn a_snapshot_restores_exactly_the_pending_timers() {
    let mut b = backend(1, 0);
    let before = b
        .get_state(&ValueStateDescriptor::<u64>::new("before"))
        .unwrap();
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let after = b
        .get_state(&ValueStateDescriptor::<u64>::new("after"))
        .unwrap();
    let m = fill(&mut b, &q, 3_000, 500);
    for k in 0..10u64 {
        set_key(&mut b, k);
        before.update(&mut b, k).unwrap();
        after.update(&mut b, k + 1).unwrap();
    }
    let bytes = b.snapshot().encode().unwrap();
    let file = KeyedStateFile::decode(&bytes).unwrap();
    let kinds: Vec<(&str, Option<StateKind>)> = file
        .states
        .iter()
        .map(|s| (s.name.as_str(), StateKind::from_code(s.kind)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("before", Some(StateKind::Value)),
            (QUEUE, Some(StateKind::Timers)),
            ("after", Some(StateKind::Value)),
        ]
    );
    // Registered in another order on restore: mapped by name.
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let after = r
        .get_state(&ValueStateDescriptor::<u64>::new("after"))
        .unwrap();
    let rq = r.timer_queue::<u32>(QUEUE).unwrap();
    for k in 0..10u64 {
        set_key(&mut r, k);
        assert_eq!(after.value(&mut r).unwrap(), Some(k + 1));
    }
    assert_drains_as(&mut r, &rq, &m);
    // The original is untouched by the snapshot.
    assert_drains_as(&mut b, &q, &m);
}

/// Changes after the synchronous part of a snapshot (registrations,
/// deletions, polls) are not in it.
#[test]
fn a_snapshot_is_a_frozen_copy_of_the_timers() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let mut m = fill(&mut b, &q, 1_000, 200);
    let snap = b.snapshot();
    let at_snapshot = m.clone();
    for _ in 0..100 {
        let want = m.poll(TimeDomain::EventTime, i64::MAX);
        assert_eq!(poll(&mut b, &q, TimeDomain::EventTime, i64::MAX), want);
    }
    for k in 0..300 {
        register(&mut b, &q, &mut m, TimeDomain::ProcessingTime, k, 9, -(k as i64));
    }
    let bytes = std::thread::spawn(move || snap.encode().unwrap())
        .join()
        .unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let rq = r.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut r, &rq, &at_snapshot);
    assert_drains_as(&mut b, &q, &m);
}

/// Snapshots of 2 subtasks restore into 1, 4 and 3 subtasks (each takes
/// exactly its key groups' timers), and the 4 restored ones' snapshots
/// merge back into 1.
#[test]
fn timers_rescale_by_key_group() {
    let mut all = Model::new(MAX_P);
    let mut files = Vec::new();
    for i in 0..2 {
        let mut b = backend(2, i);
        let q = b.timer_queue::<u32>(QUEUE).unwrap();
        let range = b.key_group_range();
        // Only keys this subtask owns.
        let mut m = Model::new(MAX_P);
        for k in (0..4_000u64).filter(|k| range.contains(key_group_for_key(k, MAX_P))) {
            let domain = domain_of(k % 3 == 0);
            register(&mut b, &q, &mut m, domain, k, (k % 5) as u32, (k * 7919 % 500) as i64);
            register(&mut b, &q, &mut m, domain, k, 0, (k % 13) as i64);
        }
        for (d, set) in m.sets.into_iter().enumerate() {
            all.sets[d].extend(set);
        }
        files.push(b.snapshot().encode().unwrap());
    }
    let mut quarters = Vec::new();
    for p in [1u32, 4, 3] {
        let mut restored = 0;
        for j in 0..p {
            let mut r = backend(p, j);
            r.restore(files.iter().map(Vec::as_slice)).unwrap();
            let q = r.timer_queue::<u32>(QUEUE).unwrap();
            let mine = all.restrict(r.key_group_range());
            restored += mine.len();
            if p == 4 {
                quarters.push(r.snapshot().encode().unwrap());
            }
            assert_drains_as(&mut r, &q, &mine);
        }
        assert_eq!(restored, all.len(), "p={p}");
    }
    let mut merged = backend(1, 0);
    merged.restore(quarters.iter().map(Vec::as_slice)).unwrap();
    let q = merged.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut merged, &q, &all);
}

/// Pinned: the canonical encoding of a tiny snapshot with timers (kind
/// code 5; per key group the postcard sequence of `(domain, timestamp,
/// key, namespace)`, event time first, each domain in firing order). Both
/// backends write exactly these bytes.
#[test]
fn pinned_encoding() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<()>("t").unwrap();
    b.set_current_key(42, key_group_for_key(&42u64, MAX_P))
        .unwrap();
    b.register_timer(&q, TimeDomain::ProcessingTime, -1, ())
        .unwrap();
    b.register_timer(&q, TimeDomain::EventTime, 1_000, ())
        .unwrap();
    b.register_timer(&q, TimeDomain::EventTime, 7, ()).unwrap();
    let bytes = b.snapshot().encode().unwrap();
    let type_name = std::any::type_name::<()>();
    let mut want = vec![
        0x80,
        0x01, // max parallelism 128 (varint)
        0x00, // key group start 0
        0x7f, // key group end 127
        0x01, // one state
        0x01,
        b't', // name
        0x45, // kind: timers (5) | serializer identity (0x40)
        type_name.len() as u8,
    ];
    want.extend_from_slice(type_name.as_bytes());
    // The identity: "postcard", format 1, the namespace type, no schema.
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
        0x0b, // 11 bytes of timers:
        0x03, // three
        0x00, 0x0e, 0x2a, // event time, 7 (zigzag 14), key 42
        0x00, 0xd0, 0x0f, 0x2a, // event time, 1000 (zigzag 2000), key 42
        0x01, 0x01, 0x2a, // processing time, -1 (zigzag 1), key 42
    ]);
    assert_eq!(bytes, want);
}

#[test]
fn misuse_is_a_clear_error() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    // The same name again: the same queue; with another namespace type, or
    // as a state, an error.
    let again = b.timer_queue::<u32>(QUEUE).unwrap();
    let err = b.timer_queue::<u64>(QUEUE).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRegistration { .. }),
        "{err}"
    );
    let err = b
        .get_state(&ValueStateDescriptor::<u32>::new(QUEUE))
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRegistration { .. }),
        "{err}"
    );
    b.get_state(&ValueStateDescriptor::<u32>::new("v")).unwrap();
    let err = b.timer_queue::<u32>("v").unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRegistration { .. }),
        "{err}"
    );
    // No current key.
    let err = b
        .register_timer(&q, TimeDomain::EventTime, 1, 0)
        .unwrap_err();
    assert!(matches!(err, StateError::NoCurrentKey { .. }), "{err}");
    set_key(&mut b, 3);
    b.register_timer(&again, TimeDomain::EventTime, 1, 0)
        .unwrap();
    assert_eq!(b.next_timer(&q, TimeDomain::EventTime), Some(1));
    // A queue another backend registered.
    let mut other = backend(1, 0);
    let foreign = other.timer_queue::<u32>(QUEUE).unwrap();
    let err = b
        .register_timer(&foreign, TimeDomain::EventTime, 1, 0)
        .unwrap_err();
    assert!(matches!(err, StateError::ForeignHandle { .. }), "{err}");
    assert_eq!(b.next_timer(&foreign, TimeDomain::EventTime), None);
    assert!(
        b.poll_timer(&foreign, TimeDomain::EventTime, 10).is_err()
    );
    // Timers are not keys.
    assert_eq!(b.keys(QUEUE), None);
    assert_eq!(b.keys_per_key_group(QUEUE), None);
    assert!(
        b.registered_states()
            .any(|(n, k)| n == QUEUE && k == StateKind::Timers)
    );
}

/// A restored queue registered with a namespace type its bytes do not
/// decode as, or as a state, is refused and stays restorable.
#[test]
fn an_incompatible_restore_is_refused() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<()>(QUEUE).unwrap();
    for k in 0..20u64 {
        set_key(&mut b, k);
        b.register_timer(&q, TimeDomain::EventTime, k as i64, ())
            .unwrap();
    }
    let bytes = b.snapshot().encode().unwrap();
    let mut r = backend(1, 0);
    r.restore([bytes.as_slice()]).unwrap();
    let err = r.timer_queue::<(u64, u64, u64)>(QUEUE).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { .. }),
        "{err}"
    );
    let err = r
        .get_state(&ValueStateDescriptor::<u64>::new(QUEUE))
        .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleRestore { .. }),
        "{err}"
    );
    let q = r.timer_queue::<()>(QUEUE).unwrap();
    let fired: Vec<i64> = std::iter::from_fn(|| {
        r.poll_timer(&q, TimeDomain::EventTime, i64::MAX)
            .unwrap()
            .map(|t| t.timestamp)
    })
    .collect();
    assert_eq!(fired, (0..20).collect::<Vec<_>>());
}

/// A queue the restored job does not register again is carried into its
/// next snapshot, and a later version that registers it finds the timers.
#[test]
fn an_unregistered_queue_is_carried() {
    let mut b = backend(1, 0);
    let q = b.timer_queue::<u32>(QUEUE).unwrap();
    let m = fill(&mut b, &q, 500, 100);
    let first = b.snapshot().encode().unwrap();
    let mut v2 = backend(1, 0);
    v2.restore([first.as_slice()]).unwrap();
    v2.get_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let second = v2.snapshot().encode().unwrap();
    let mut v3 = backend(1, 0);
    v3.restore([second.as_slice()]).unwrap();
    let q = v3.timer_queue::<u32>(QUEUE).unwrap();
    assert_drains_as(&mut v3, &q, &m);
}

/// Two queues of one backend are independent.
#[test]
fn queues_are_independent() {
    let mut b = backend(1, 0);
    let a: TimerQueue<u32> = b.timer_queue(QUEUE).unwrap();
    let c: TimerQueue<u32> = b.timer_queue("other").unwrap();
    let mut ma = Model::new(MAX_P);
    let mut mc = Model::new(MAX_P);
    for k in 0..100 {
        register(&mut b, &a, &mut ma, TimeDomain::EventTime, k, 0, k as i64);
        register(&mut b, &c, &mut mc, TimeDomain::EventTime, k, 0, -(k as i64));
    }
    assert_eq!(b.next_timer(&a, TimeDomain::EventTime), Some(0));
    assert_eq!(b.next_timer(&c, TimeDomain::EventTime), Some(-99));
    assert_drains_as(&mut b, &a, &ma);
    assert_drains_as(&mut b, &c, &mc);
}
