//! Timer throughput on the record path (ignored; run in release):
//! `cargo test --release -p floe-state [--features rocksdb] --test
//! timer_throughput -- --ignored --nocapture`.
//!
//! The pattern of a keyed process function that updates a count and sets
//! a timer per record at the end of the record's second (a registration
//! that finds its timer set already is a no-op), with the watermark
//! advancing every batch of 1,000 records and every due timer polled,
//! against the same loop without timers; and the pattern of a timeout, a
//! timer a second after each record (a few timers per timestamp, about
//! one per timestamp and key group). Wall-clock times: run on a quiet
//! machine.

use std::time::Instant;

use floe_state::{
    KeyGroupRange, KeyedStateBackend, StateBackendKind, TimeDomain, ValueStateDescriptor,
    key_group_for_key,
};

const MAX_P: u32 = 128;
const RECORDS: u64 = 4_000_000;
/// Records per second of event time.
const PER_SECOND: u64 = 200_000;
const BATCH: u64 = 1_000;

/// When a record sets its timer.
#[derive(Clone, Copy, PartialEq)]
enum Timers {
    None,
    EndOfSecond,
    SecondLater,
}

fn run(kind: StateBackendKind, keys: u64, timers: Timers) -> (f64, u64) {
    let mut b =
        KeyedStateBackend::<u64>::new(kind, "op", KeyGroupRange::new(0, 127), MAX_P).unwrap();
    let count = b
        .get_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let q = b.timer_queue::<()>("user-timers").unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut fired = 0u64;
    let start = Instant::now();
    for i in 0..RECORDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = x % keys;
        let ts = (i * 1_000 / PER_SECOND) as i64;
        b.set_current_key(key, key_group_for_key(&key, MAX_P))
            .unwrap();
        count.update(&mut b, i).unwrap();
        if timers != Timers::None {
            let at = match timers {
                Timers::SecondLater => ts + 1_000,
                _ => ts / 1_000 * 1_000 + 999,
            };
            b.register_timer(&q, TimeDomain::EventTime, at, ()).unwrap();
            if i % BATCH == BATCH - 1 {
                let watermark = ts - 1;
                if b.next_timer(&q, TimeDomain::EventTime)
                    .is_some_and(|t| t <= watermark)
                {
                    while let Some(t) = b.poll_timer(&q, TimeDomain::EventTime, watermark).unwrap()
                    {
                        b.set_current_key(t.key, t.key_group).unwrap();
                        fired += 1;
                    }
                }
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / RECORDS as f64;
    (ns, fired)
}

/// With 100,000 keys most records set a new timer (a key sees about two
/// records a second); with 1,000 nearly all find theirs set already.
fn report(kind: StateBackendKind) {
    for keys in [100_000, 1_000] {
        let (base, _) = run(kind, keys, Timers::None);
        let (with, fired) = run(kind, keys, Timers::EndOfSecond);
        let (later, later_fired) = run(kind, keys, Timers::SecondLater);
        eprintln!(
            "{kind:?}: {RECORDS} records over {keys} keys: {base:.0} ns/record without timers, \
             {with:.0} with a timer per record ({:.0} ns more), {fired} fired; \
             {later:.0} with a timer a second later ({:.0} ns more), {later_fired} fired",
            with - base,
            later - base
        );
    }
}

#[test]
#[ignore]
fn timer_per_record_heap() {
    report(StateBackendKind::HashMap);
}

#[cfg(feature = "rocksdb")]
#[test]
#[ignore]
fn timer_per_record_rocksdb() {
    report(StateBackendKind::RocksDb);
}
