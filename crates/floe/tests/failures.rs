//! Failures of user code: an error or a panic in a map closure, a keyed
//! process function, a sink writer or a source reader fails `execute` with
//! `JobError::Failed` naming the operator, its uid, the subtask (`i/p`) and
//! the cause, and cancels every other task, also when they are blocked on
//! backpressure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TaggingSink, with_timeout};
use floe::prelude::*;
use floe::runtime::{FailureCause, JobError, OperatorFailure};
use floe::state::key_group::operator_index_for_key_group;
use floe::state::{StateError, key_group_for_key};

/// Runs a job built by `build` (on its own thread, with a deadline) and
/// returns its failure.
fn expect_failure(
    build: impl FnOnce(&StreamEnvironment) + Send + 'static,
) -> (String, Box<OperatorFailure>) {
    let err = with_timeout(30, move || {
        let env = StreamEnvironment::new();
        build(&env);
        env.execute("failing-job").map(|_| ())
    })
    .expect_err("the job must fail");
    let text = err.to_string();
    match err {
        JobError::Failed {
            job_name, failure, ..
        } => {
            assert_eq!(job_name, "failing-job");
            assert!(text.contains("failing-job"), "{text}");
            (text, failure)
        }
        other => panic!("expected JobError::Failed, got {other:?}"),
    }
}

/// Asserts that the failure names `operator`, `uid`, subtask `i/p` (1-based)
/// and contains `cause`.
fn assert_names(
    text: &str,
    f: &OperatorFailure,
    operator: &str,
    uid: &str,
    i: u32,
    p: u32,
    cause: &str,
) {
    assert_eq!(f.operator, operator, "{text}");
    assert_eq!(f.uid, uid, "{text}");
    assert_eq!((f.subtask + 1, f.parallelism), (i, p), "{text}");
    for part in [
        format!("'{operator}'"),
        format!("'{uid}'"),
        format!("{i}/{p}"),
        cause.to_string(),
    ] {
        assert!(text.contains(&part), "{text:?} should contain {part:?}");
    }
}

/// The 1-based subtask of a keyed operator that owns `key`.
fn owner<K: floe::state::Key>(key: &K, p: u32) -> u32 {
    operator_index_for_key_group(128, p, key_group_for_key(key, 128)) + 1
}

// ---------------------------------------------------------------------------
// Map closures
// ---------------------------------------------------------------------------

#[test]
fn panic_in_map_closure() {
    let (text, f) = expect_failure(|env| {
        env.set_parallelism(2);
        let (sink, _) = CollectSink::new();
        // Generator shares are contiguous: 75 belongs to subtask 2 of 2.
        env.from_source(GeneratorSource::new(100, |i| i), "gen")
            .map(|x: u64| {
                if x == 75 {
                    panic!("bad record {x}");
                }
                x
            })
            .name("risky map")
            .uid("map-uid")
            .sink_to(sink, "collect");
    });
    assert_names(
        &text,
        &f,
        "risky map",
        "map-uid",
        2,
        2,
        "panicked: bad record 75",
    );
    assert!(matches!(f.cause, FailureCause::Panic(_)));
}

#[test]
fn panic_in_flat_map_and_filter_closures() {
    let (text, f) = expect_failure(|env| {
        env.set_parallelism(3);
        let (sink, _) = CollectSink::new();
        env.from_collection((0..100u64).collect())
            .filter(|x: &u64| {
                assert!(*x < 1000, "filter never fails here");
                true
            })
            .flat_map(|x: u64, out: &mut Collector<'_, u64>| {
                let v: Option<u64> = (x != 50).then_some(x);
                out.collect(v.expect("no value for 50"));
            })
            .name("splitter")
            .uid("fm")
            .set_parallelism(1)
            .sink_to(sink, "collect");
    });
    assert_names(&text, &f, "splitter", "fm", 1, 1, "no value for 50");

    let (text, f) = expect_failure(|env| {
        env.set_parallelism(1);
        let (sink, _) = CollectSink::new();
        env.from_collection((0..10u64).collect())
            .filter(|x: &u64| 10 / (5 - *x as i64) > -100)
            .name("divider")
            .uid("div")
            .sink_to(sink, "collect");
    });
    assert_names(&text, &f, "divider", "div", 1, 1, "divide by zero");
}

// ---------------------------------------------------------------------------
// Keyed process functions
// ---------------------------------------------------------------------------

/// Fails on one value: with an error or with a panic.
#[derive(Clone)]
struct FailOn {
    value: u64,
    panic: bool,
}

impl KeyedProcessFunction<u64, u64, u64> for FailOn {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        if v == self.value {
            let key = *ctx.current_key();
            if self.panic {
                panic!("keyed panic on {v} (key {key})");
            }
            anyhow::bail!("cannot handle {v} (key {key})");
        }
        out.collect(v);
        Ok(())
    }
}

#[test]
fn error_in_keyed_process_function() {
    let p = 3;
    let (text, f) = expect_failure(move |env| {
        env.set_parallelism(p);
        let (sink, _) = CollectSink::new();
        env.from_collection((0..1000u64).collect())
            .key_by(|x: &u64| x % 10)
            .process(FailOn {
                value: 437,
                panic: false,
            })
            .name("validator")
            .uid("validator-uid")
            .sink_to(sink, "collect");
    });
    assert_names(
        &text,
        &f,
        "validator",
        "validator-uid",
        owner(&7u64, p),
        p,
        "cannot handle 437 (key 7)",
    );
    assert!(matches!(f.cause, FailureCause::Error(_)));
}

#[test]
fn panic_in_keyed_process_function() {
    let p = 4;
    let (text, f) = expect_failure(move |env| {
        env.set_parallelism(p);
        let (sink, _) = CollectSink::new();
        env.from_source(GeneratorSource::new(5000, |i| i), "gen")
            .key_by(|x: &u64| x % 100)
            .process(FailOn {
                value: 4321,
                panic: true,
            })
            .name("panicker")
            .uid("panicker-uid")
            .sink_to(sink, "collect");
    });
    assert_names(
        &text,
        &f,
        "panicker",
        "panicker-uid",
        owner(&21u64, p),
        p,
        "panicked: keyed panic on 4321 (key 21)",
    );
}

/// Fails in `open` or `close`.
#[derive(Clone)]
struct FailIn(&'static str);

impl KeyedProcessFunction<u64, u64, u64> for FailIn {
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        if self.0 == "open" {
            anyhow::bail!("open refused");
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        v: u64,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        out.collect(v);
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if self.0 == "close" {
            anyhow::bail!("close refused");
        }
        Ok(())
    }
}

#[test]
fn error_in_open_or_close_of_a_keyed_function() {
    for phase in ["open", "close"] {
        let (text, f) = expect_failure(move |env| {
            env.set_parallelism(1);
            let (sink, _) = CollectSink::new();
            env.from_collection(vec![1u64, 2, 3])
                .key_by(|x: &u64| *x)
                .process(FailIn(phase))
                .name("phased")
                .uid("phased-uid")
                .sink_to(sink, "collect");
        });
        assert_names(
            &text,
            &f,
            "phased",
            "phased-uid",
            1,
            1,
            &format!("{phase} refused"),
        );
    }
}

// ---------------------------------------------------------------------------
// Sink writers
// ---------------------------------------------------------------------------

/// Fails on its `fail_subtask`-th subtask at the first write.
#[derive(Clone)]
struct FailingSink {
    fail_subtask: u32,
    panic: bool,
    subtask: u32,
}

impl SinkWriter<u64> for FailingSink {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.subtask = info.subtask_index;
        Ok(())
    }

    fn write(&mut self, v: u64) -> anyhow::Result<()> {
        if self.subtask == self.fail_subtask {
            if self.panic {
                panic!("sink panic at {v}");
            }
            anyhow::bail!("disk full on subtask {}", self.subtask);
        }
        Ok(())
    }
}

#[test]
fn error_and_panic_in_sink_writer() {
    for panic in [false, true] {
        let (text, f) = expect_failure(move |env| {
            env.set_parallelism(3);
            env.from_collection((0..1000u64).collect())
                .sink_to(
                    FailingSink {
                        fail_subtask: 2,
                        panic,
                        subtask: u32::MAX,
                    },
                    "failing",
                )
                .uid("sink-uid");
        });
        let cause = if panic {
            "panicked: sink panic at"
        } else {
            "disk full on subtask 2"
        };
        assert_names(&text, &f, "Sink: failing", "sink-uid", 3, 3, cause);
    }
}

/// A sink whose `finish` (the end of a bounded input) fails.
#[derive(Clone)]
struct FailingCommit;

impl SinkWriter<u64> for FailingCommit {
    fn write(&mut self, _v: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        anyhow::bail!("commit failed")
    }
}

#[test]
fn error_in_sink_finish_and_in_a_chained_sink() {
    let (text, f) = expect_failure(|env| {
        env.set_parallelism(2);
        env.from_sequence(0, 99)
            .sink_to(FailingCommit, "committer")
            .uid("commit-uid");
    });
    assert!(f.subtask < 2, "{text}");
    assert_names(
        &text,
        &f,
        "Sink: committer",
        "commit-uid",
        f.subtask + 1,
        2,
        "commit failed",
    );

    // Source, map and sink chained into one task: the failure still names
    // the sink, not the head of the chain.
    let (text, f) = expect_failure(|env| {
        env.set_parallelism(2);
        env.from_sequence(0, 999)
            .map(|x: u64| x + 1)
            .sink_to(
                FailingSink {
                    fail_subtask: 0,
                    panic: true,
                    subtask: u32::MAX,
                },
                "chained",
            )
            .uid("chained-uid");
    });
    assert_names(
        &text,
        &f,
        "Sink: chained",
        "chained-uid",
        1,
        2,
        "panicked: sink panic at 1",
    );
}

/// A panicking key selector fails the job. It runs where records are routed,
/// at the end of the upstream task, so the failure names that operator (the
/// one whose output is keyed) and says it happened in the key selector of the
/// key_by into the keyed operator.
#[test]
fn panic_in_key_selector_fails_the_job() {
    let (text, f) = expect_failure(|env| {
        env.set_parallelism(2);
        let (sink, _) = CollectSink::new();
        env.from_sequence(0, 100)
            .map(|x| x)
            .name("Identity")
            .uid("identity-uid")
            .key_by(|x: &u64| {
                assert!(*x != 50, "no key for 50");
                *x
            })
            .sum(|x: &mut u64| x)
            .name("Summer")
            .sink_to(sink, "collect");
    });
    assert!(matches!(f.cause, FailureCause::Panic(_)), "{text}");
    assert!(text.contains("no key for 50"), "{text}");
    assert_eq!(f.operator, "Identity", "{text}");
    assert_eq!(f.uid, "identity-uid", "{text}");
    assert!(
        text.contains("key selector of the key_by into 'Summer'"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Source readers
// ---------------------------------------------------------------------------

/// How a [`TestSource`] subtask fails.
#[derive(Clone, Copy, PartialEq)]
enum SourceFailure {
    None,
    ErrorInPoll,
    PanicInPoll,
    ErrorInOpen,
}

/// Emits `0..count` per subtask (`count` may be effectively infinite);
/// subtask `fail_subtask` fails after `fail_after` records as configured.
/// Counts the readers' `close` calls.
#[derive(Clone)]
struct TestSource {
    count: u64,
    fail_subtask: u32,
    fail_after: u64,
    failure: SourceFailure,
    closed: Arc<AtomicU32>,
}

struct TestReader {
    next: u64,
    source: TestSource,
    fails: bool,
}

impl Source<u64> for TestSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(TestReader {
            next: 0,
            source: self.clone(),
            fails: info.subtask_index == self.fail_subtask,
        }))
    }
}

impl SourceReader<u64> for TestReader {
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        if self.fails && self.source.failure == SourceFailure::ErrorInOpen {
            anyhow::bail!("cannot connect to the test broker");
        }
        Ok(())
    }

    fn poll_next(&mut self, out: &mut Vec<u64>, max: usize) -> anyhow::Result<SourceStatus> {
        for _ in 0..max {
            if self.next >= self.source.count {
                return Ok(SourceStatus::Finished);
            }
            if self.fails && self.next == self.source.fail_after {
                match self.source.failure {
                    SourceFailure::ErrorInPoll => {
                        anyhow::bail!("source broke at record {}", self.next)
                    }
                    SourceFailure::PanicInPoll => panic!("source panicked at {}", self.next),
                    _ => {}
                }
            }
            out.push(self.next);
            self.next += 1;
        }
        Ok(SourceStatus::MoreAvailable)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.source.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn error_and_panic_in_source_reader() {
    for (failure, cause) in [
        (SourceFailure::ErrorInPoll, "source broke at record 5000"),
        (
            SourceFailure::PanicInPoll,
            "panicked: source panicked at 5000",
        ),
        (
            SourceFailure::ErrorInOpen,
            "cannot connect to the test broker",
        ),
    ] {
        let closed = Arc::new(AtomicU32::new(0));
        let closed2 = closed.clone();
        let (text, f) = expect_failure(move |env| {
            env.set_parallelism(2);
            let (sink, _) = CollectSink::new();
            env.from_source(
                TestSource {
                    count: 100_000,
                    fail_subtask: 1,
                    fail_after: 5000,
                    failure,
                    closed: closed2,
                },
                "test",
            )
            .name("flaky source")
            .uid("src-uid")
            .rebalance()
            .sink_to(sink, "collect");
        });
        assert_names(&text, &f, "flaky source", "src-uid", 2, 2, cause);
        if failure != SourceFailure::ErrorInOpen {
            assert_eq!(
                closed.load(Ordering::SeqCst),
                2,
                "both readers are closed, also the cancelled one"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Failure while other tasks are blocked on backpressure
// ---------------------------------------------------------------------------

/// Subtask 0 is slow (so everything upstream is backpressured); subtask 1
/// fails after `fail_after_batches` batches.
#[derive(Clone)]
struct SlowOrFailing {
    subtask: u32,
    batches: u64,
    fail_after_batches: u64,
}

impl SinkWriter<u64> for SlowOrFailing {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.subtask = info.subtask_index;
        Ok(())
    }

    fn write(&mut self, _v: u64) -> anyhow::Result<()> {
        unreachable!("batches only")
    }

    fn write_batch(&mut self, batch: &mut Vec<u64>) -> anyhow::Result<()> {
        batch.clear();
        self.batches += 1;
        if self.subtask == 0 {
            std::thread::sleep(Duration::from_millis(5));
        } else if self.batches == self.fail_after_batches {
            // Give the source time to fill every channel to subtask 0.
            std::thread::sleep(Duration::from_millis(300));
            anyhow::bail!("sink 1 gave up after {} batches", self.batches);
        }
        Ok(())
    }
}

#[test]
fn failure_while_other_subtasks_are_blocked_on_backpressure() {
    let generated = Arc::new(AtomicU64::new(0));
    let g = generated.clone();
    let started = Instant::now();
    let (text, f) = expect_failure(move |env| {
        env.set_parallelism(2);
        env.from_source(
            GeneratorSource::new(u64::MAX / 2, move |i| {
                g.fetch_add(1, Ordering::Relaxed);
                i
            }),
            "endless",
        )
        .rebalance()
        .sink_to(
            SlowOrFailing {
                subtask: 0,
                batches: 0,
                fail_after_batches: 20,
            },
            "slow",
        )
        .name("slow sink")
        .uid("slow-uid");
    });
    assert_names(
        &text,
        &f,
        "slow sink",
        "slow-uid",
        2,
        2,
        "sink 1 gave up after 20 batches",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancellation is prompt: {:?}",
        started.elapsed()
    );
    // The sources were throttled by the slow subtask, not running free.
    let n = generated.load(Ordering::Relaxed);
    assert!(n < 10_000_000, "generated {n} records");
}

/// A keyed operator fails while an endless source feeds it through a
/// bottleneck; the sources' readers are closed and no sink subtask is
/// finished as if the input had ended.
#[test]
fn failure_downstream_of_an_endless_source_cancels_everything() {
    let closed = Arc::new(AtomicU32::new(0));
    let closed2 = closed.clone();
    let (sink, out) = TaggingSink::<u64>::new();
    let started = Instant::now();
    let (text, f) = expect_failure(move |env| {
        env.set_parallelism(2);
        env.from_source(
            TestSource {
                count: u64::MAX,
                fail_subtask: u32::MAX,
                fail_after: 0,
                failure: SourceFailure::None,
                closed: closed2,
            },
            "endless",
        )
        .key_by(|x: &u64| x % 1000)
        .process(FailOn {
            value: 200_003,
            panic: false,
        })
        .name("late failure")
        .uid("late")
        .sink_to(sink, "tagged");
    });
    assert_names(
        &text,
        &f,
        "late failure",
        "late",
        owner(&3u64, 2),
        2,
        "cannot handle 200003 (key 3)",
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(closed.load(Ordering::SeqCst), 2, "both readers closed");
    assert!(
        out.finished().is_empty(),
        "no sink finished: {:?}",
        out.finished()
    );
}

// ---------------------------------------------------------------------------
// State registration errors
// ---------------------------------------------------------------------------

/// Registers state "dup" twice, as configured.
#[derive(Clone)]
struct DoubleRegistration(&'static str);

impl KeyedProcessFunction<u64, u64, u64> for DoubleRegistration {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        let first = ctx.get_state(&ValueStateDescriptor::<u64>::new("dup"))?;
        match self.0 {
            "list" => {
                ctx.get_list_state(&ListStateDescriptor::<u64>::new("dup"))?;
            }
            "type" => {
                ctx.get_state(&ValueStateDescriptor::<String>::new("dup"))?;
            }
            _ => {
                // Same kind and type: the same state again, which is fine.
                let again = ctx.get_state(&ValueStateDescriptor::<u64>::new("dup"))?;
                let _ = (first, again);
            }
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        v: u64,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        out.collect(v);
        Ok(())
    }
}

#[test]
fn registering_a_state_name_twice_with_another_type_fails_naming_it() {
    for (mode, requested) in [("list", "ListState"), ("type", "String")] {
        let (text, f) = expect_failure(move |env| {
            let (sink, _) = CollectSink::new();
            env.from_collection(vec![1u64])
                .key_by(|x: &u64| *x)
                .process(DoubleRegistration(mode))
                .name("registrar")
                .uid("reg")
                .sink_to(sink, "collect");
        });
        assert_names(&text, &f, "registrar", "reg", 1, 1, "state 'dup'");
        assert!(
            text.contains("ValueState") && text.contains(requested),
            "{text}"
        );
    }

    // Registering the same name with the same kind and type is allowed.
    let env = StreamEnvironment::new();
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![1u64, 2])
        .key_by(|x: &u64| *x)
        .process(DoubleRegistration("same"))
        .sink_to(sink, "collect");
    env.execute("same").unwrap();
    assert_eq!(common::sorted(out.snapshot()), vec![1, 2]);
}

/// The DataStream API gives non-keyed functions no `RuntimeContext` at all
/// (sinks and sources get a `TaskInfo`; `RichMapFunction` and friends only
/// exist on a `KeyedStream`), so keyed state in a non-keyed operator cannot
/// be written through the API. The runtime context still refuses it.
#[test]
fn keyed_state_in_a_non_keyed_context_is_refused() {
    let info = TaskInfo {
        job_id: floe::core::JobId::from_u128(1),
        job_name: "job".into(),
        operator_name: "plain map".into(),
        uid: "u".into(),
        subtask_index: 0,
        parallelism: 1,
        max_parallelism: 128,
    };
    let mut ctx: RuntimeContext<'_, ()> = RuntimeContext::new(&info, None);
    let err = ctx
        .get_state(&ValueStateDescriptor::<u64>::new("counter"))
        .expect_err("no keyed state without a key");
    assert!(matches!(err, StateError::NotKeyed { .. }));
    let text = err.to_string();
    assert!(
        text.contains("'counter'") && text.contains("'plain map'"),
        "{text}"
    );
    assert!(
        ctx.get_list_state(&ListStateDescriptor::<u64>::new("l"))
            .is_err()
    );
    assert!(
        ctx.get_map_state(&MapStateDescriptor::<u64, u64>::new("m"))
            .is_err()
    );
}
