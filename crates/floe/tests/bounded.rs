//! Bounded jobs finish: end of input travels through multi-input operators
//! and multi-stage pipelines, empty sources finish, idle sources do not hold
//! records back, and `execute` reports the job's result.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TaggingSink, sorted, with_timeout};
use floe::prelude::*;

/// Records, per subtask, how many records it had received when `finish`
/// ran, so a finish that overtakes records is visible.
#[derive(Clone, Default)]
struct FinishAudit {
    shared: Arc<Mutex<Audit>>,
    subtask: u32,
    received: u64,
}

#[derive(Default)]
struct Audit {
    received: BTreeMap<u32, u64>,
    at_finish: BTreeMap<u32, u64>,
    writes_after_finish: u64,
}

impl<T: Send + 'static> SinkWriter<T> for FinishAudit {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.subtask = info.subtask_index;
        Ok(())
    }

    fn write(&mut self, _v: T) -> anyhow::Result<()> {
        self.received += 1;
        let mut a = self.shared.lock().unwrap();
        *a.received.entry(self.subtask).or_default() += 1;
        if a.at_finish.contains_key(&self.subtask) {
            a.writes_after_finish += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let mut a = self.shared.lock().unwrap();
        assert!(
            a.at_finish.insert(self.subtask, self.received).is_none(),
            "finish runs once per subtask"
        );
        Ok(())
    }
}

#[test]
fn end_of_input_waits_for_every_input_of_a_union() {
    // One input ends at once, one is long, one is in between; the union feeds
    // a keyed operator and then a sink of a third parallelism.
    let audit = FinishAudit::default();
    let shared = audit.shared.clone();
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let empty = env.from_collection(Vec::<u64>::new());
    let long = env.from_source(GeneratorSource::new(50_000, |i| i), "long");
    let mid = env
        .from_source(GeneratorSource::new(3_000, |i| 100_000 + i), "mid")
        .set_parallelism(3);
    empty
        .union(&[long, mid])
        .key_by(|x: &u64| x % 101)
        .reduce(|a: u64, b: u64| a.max(b))
        .sink_to(audit, "audit")
        .set_parallelism(3);
    env.execute("union-eoi").unwrap();
    let a = shared.lock().unwrap();
    assert_eq!(a.received.values().sum::<u64>(), 53_000);
    assert_eq!(a.at_finish.len(), 3, "every sink subtask finished");
    assert_eq!(a.at_finish, a.received, "finish after the last record");
    assert_eq!(a.writes_after_finish, 0);
}

#[test]
fn multi_stage_pipeline_finishes_with_exact_results() {
    for p in [1, 2, 4] {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = TaggingSink::new();
        env.from_sequence(1, 20_000)
            .map(|x: u64| (x % 97, x))
            .key_by(|(k, _): &(u64, u64)| *k)
            .sum(|(_, x): &mut (u64, u64)| x)
            .rebalance()
            .filter(|(k, _): &(u64, u64)| k % 2 == 0)
            .map(|(k, s): (u64, u64)| (k / 2, s))
            .set_parallelism(3)
            .key_by(|(k, _): &(u64, u64)| *k % 5)
            .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1.max(b.1)))
            .set_parallelism(2)
            .sink_to(sink, "collect");
        env.execute("multi-stage").unwrap();
        // Model: running sums per key k (even k only), then max per (k/2) % 5.
        let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
        for x in 1..=20_000u64 {
            *totals.entry(x % 97).or_default() += x;
        }
        let mut expected_max: BTreeMap<u64, u64> = BTreeMap::new();
        let mut expected_count = 0;
        for x in 1..=20_000u64 {
            if (x % 97) % 2 == 0 {
                expected_count += 1;
            }
        }
        for (k, t) in &totals {
            if k % 2 == 0 {
                let m = expected_max.entry((k / 2) % 5).or_default();
                *m = (*m).max(*t);
            }
        }
        let values = out.values();
        assert_eq!(values.len(), expected_count, "p={p}");
        let mut got_max: BTreeMap<u64, u64> = BTreeMap::new();
        for (k, s) in values {
            let m = got_max.entry(k % 5).or_default();
            *m = (*m).max(s);
        }
        assert_eq!(got_max, expected_max, "p={p}");
        assert_eq!(out.finished(), (0..p).collect::<BTreeSet<_>>());
    }
}

#[test]
fn empty_sources_finish() {
    for p in [1, 2, 4] {
        with_timeout(20, move || {
            let env = StreamEnvironment::new();
            env.set_parallelism(p);
            let (sink, out) = TaggingSink::<(u64, u64)>::new();
            let a = env.from_collection(Vec::<u64>::new());
            let b = env.from_source(GeneratorSource::new(0, |i| i), "nothing");
            let c = env.from_sequence(0, 0).filter(|_: &u64| false);
            a.union(&[b, c])
                .map(|x: u64| (x, x))
                .key_by(|(k, _): &(u64, u64)| *k)
                .sum(|(_, x): &mut (u64, u64)| x)
                .sink_to(sink, "collect");
            env.execute("empty").unwrap();
            assert!(out.records().is_empty());
            assert_eq!(
                out.finished(),
                (0..p).collect::<BTreeSet<_>>(),
                "every sink subtask finished (p={p})"
            );
        });
    }
}

#[test]
fn fewer_records_than_subtasks() {
    let env = StreamEnvironment::new();
    env.set_parallelism(4);
    let (sink, out) = CollectSink::new();
    env.from_source(GeneratorSource::new(2, |i| i), "two")
        .key_by(|x: &u64| *x)
        .sum(|x: &mut u64| x)
        .sink_to(sink, "collect");
    env.execute("two").unwrap();
    assert_eq!(sorted(out.snapshot()), vec![0, 1]);
}

#[test]
fn a_stream_without_sink_still_runs_to_its_end() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.from_sequence(1, 1000).map(move |x: u64| {
        s.fetch_add(1, Ordering::SeqCst);
        x
    });
    env.execute("no-sink").unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1000);
}

/// Emits `n` records, then reports `NothingAvailable` until a sink has seen
/// them all (or a deadline passes), then finishes.
#[derive(Clone)]
struct IdleAfter {
    n: u64,
    seen: Arc<AtomicU64>,
    timed_out: Arc<AtomicBool>,
}

struct IdleReader {
    src: IdleAfter,
    emitted: bool,
    deadline: Instant,
}

impl Source<u64> for IdleAfter {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(IdleReader {
            src: self.clone(),
            emitted: false,
            deadline: Instant::now() + Duration::from_secs(5),
        }))
    }
}

impl SourceReader<u64> for IdleReader {
    fn poll_next(&mut self, out: &mut Vec<u64>, _max: usize) -> anyhow::Result<SourceStatus> {
        if !self.emitted {
            self.emitted = true;
            out.extend(0..self.src.n);
            return Ok(SourceStatus::NothingAvailable);
        }
        if self.src.seen.load(Ordering::SeqCst) >= self.src.n {
            return Ok(SourceStatus::Finished);
        }
        if Instant::now() > self.deadline {
            self.src.timed_out.store(true, Ordering::SeqCst);
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(1));
        Ok(SourceStatus::NothingAvailable)
    }
}

#[test]
fn idle_sources_do_not_hold_records_back() {
    let src = IdleAfter {
        n: 5,
        seen: Arc::new(AtomicU64::new(0)),
        timed_out: Arc::new(AtomicBool::new(false)),
    };
    let (seen, timed_out) = (src.seen.clone(), src.timed_out.clone());
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let s = seen.clone();
    env.from_source(src, "idle")
        .rebalance()
        .map(|x: u64| x + 1)
        .key_by(|x: &u64| *x)
        .sum(|x: &mut u64| x)
        .map(move |x: u64| {
            s.fetch_add(1, Ordering::SeqCst);
            x
        });
    env.execute("idle").unwrap();
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "records waited in buffers while the source was idle"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

#[test]
fn execute_returns_the_job_result() {
    let run = || {
        let env = StreamEnvironment::new();
        let (sink, out) = CollectSink::new();
        env.from_collection(vec![1u64, 2, 3])
            .sink_to(sink, "collect");
        let r = env.execute("My Job").unwrap();
        assert_eq!(out.len(), 3);
        r
    };
    let (a, b) = (run(), run());
    for r in [&a, &b] {
        let id = r.job_id.to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{id} is lowercase hex"
        );
        assert_eq!(id.parse::<floe::core::JobId>().unwrap(), r.job_id);
        assert_eq!(r.job_name, "My Job");
    }
    assert_ne!(a.job_id, b.job_id, "every run has its own id");
}
