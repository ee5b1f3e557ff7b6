//! Timers of keyed process functions through real jobs, against an
//! independent model.
//!
//! A scripted source emits timer registrations and deletions per key and
//! punctuated watermarks; the function fires timers (registering follow-up
//! timers from `on_timer`, some already due) and reports each firing with
//! the watermark it saw. The exact sequence of firings must equal a model
//! that knows only Flink's rules: a timer is unique per key and timestamp,
//! fires once the watermark reaches it, in order of timestamp, key group,
//! key; follow-ups due at the current watermark fire in the same round; the
//! end of the input fires the rest. Random scripts (proptest), on the heap
//! backend and, with the `rocksdb` feature, on RocksDB.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TaggingSink, with_timeout};
use floe::prelude::*;
use floe::state::key_group_for_key;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const MAX_PARALLELISM: u32 = 128;

/// One scripted step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Step {
    Register { key: u64, ts: i64 },
    Delete { key: u64, ts: i64 },
    Watermark(i64),
}

/// Plays a script, one poll per step up to and including each watermark
/// (so a watermark is emitted right after the steps before it).
#[derive(Clone)]
struct Script(Vec<Step>);

struct ScriptReader {
    steps: std::vec::IntoIter<Step>,
}

impl Source<Step> for Script {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<Step>>> {
        Ok(Box::new(ScriptReader {
            steps: self.0.clone().into_iter(),
        }))
    }
}

impl SourceReader<Step> for ScriptReader {
    fn poll_next(&mut self, out: &mut Vec<Step>, _: usize) -> anyhow::Result<SourceStatus> {
        for step in self.steps.by_ref() {
            out.push(step);
            if let Step::Watermark(_) = step {
                return Ok(SourceStatus::MoreAvailable);
            }
        }
        Ok(SourceStatus::Finished)
    }
}

/// Emits a script's watermark steps as watermarks.
struct ScriptWatermarks;

impl WatermarkGenerator<Step> for ScriptWatermarks {
    fn on_event(&mut self, event: &Step, _: i64, output: &mut WatermarkOutput) {
        if let Step::Watermark(w) = event {
            output.emit_watermark(Watermark(*w));
        }
    }

    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// A firing: key, timer, the watermark the function saw.
type Firing = (u64, i64, i64);

/// Sets and deletes timers as scripted; on a timer at `ts` with
/// `ts % 3 == 0`, sets a follow-up at `ts + ts % 7` (at `ts` itself when
/// `ts % 7 == 0`: that one is a duplicate of the firing timer, already
/// gone, so it fires again at once — Flink's rule for a timer set at or
/// below the current watermark).
#[derive(Clone)]
struct TimerScript;

impl KeyedProcessFunction<u64, Step, Firing> for TimerScript {
    fn process_element(
        &mut self,
        step: Step,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, Firing>,
    ) -> anyhow::Result<()> {
        match step {
            Step::Register { ts, .. } => ctx.timer_service().register_event_time_timer(ts)?,
            Step::Delete { ts, .. } => ctx.timer_service().delete_event_time_timer(ts)?,
            Step::Watermark(_) => unreachable!("filtered out"),
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, Firing>,
    ) -> anyhow::Result<()> {
        assert_eq!(ctx.time_domain(), TimeDomain::EventTime);
        let wm = ctx.timer_service().current_watermark();
        out.collect((*ctx.current_key(), ts, wm));
        if ts % 3 == 0 && ts % 7 != 0 {
            ctx.timer_service().register_event_time_timer(ts + ts % 7)?;
        }
        Ok(())
    }
}

/// The model: Flink's rules, nothing of Floe's.
fn model(script: &[Step]) -> Vec<Firing> {
    let order = |key: u64, ts: i64| (ts, key_group_for_key(&key, MAX_PARALLELISM), key);
    let mut timers: BTreeSet<(i64, u16, u64)> = BTreeSet::new();
    let mut fired = Vec::new();
    let mut watermark = i64::MIN;
    let advance = |timers: &mut BTreeSet<(i64, u16, u64)>, w: i64, fired: &mut Vec<Firing>| {
        while let Some(&(ts, kg, key)) = timers.first() {
            if ts > w {
                break;
            }
            timers.remove(&(ts, kg, key));
            fired.push((key, ts, w));
            if ts % 3 == 0 && ts % 7 != 0 {
                timers.insert(order(key, ts + ts % 7));
            }
        }
    };
    for step in script {
        match *step {
            Step::Register { key, ts } => {
                timers.insert(order(key, ts));
            }
            Step::Delete { key, ts } => {
                timers.remove(&order(key, ts));
            }
            // Only a watermark that advances reaches the operator.
            Step::Watermark(w) if w > watermark => {
                watermark = w;
                advance(&mut timers, w, &mut fired);
            }
            Step::Watermark(_) => {}
        }
    }
    advance(&mut timers, i64::MAX, &mut fired);
    fired
}

fn run(script: Vec<Step>, backend: StateBackendKind) -> Vec<Firing> {
    with_timeout(120, move || {
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.set_max_parallelism(MAX_PARALLELISM);
        env.set_state_backend(backend);
        let (sink, handle) = TaggingSink::new();
        env.from_source_with_watermarks(
            Script(script),
            WatermarkStrategy::for_generator(|| ScriptWatermarks),
            "script",
        )
        .filter(|s: &Step| !matches!(s, Step::Watermark(_)))
        .key_by(|s: &Step| match s {
            Step::Register { key, .. } | Step::Delete { key, .. } => *key,
            Step::Watermark(_) => 0,
        })
        .process(TimerScript)
        .sink_to(sink, "firings");
        env.execute("timers").unwrap();
        handle.values()
    })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (0u64..12, 0i64..200).prop_map(|(key, ts)| Step::Register { key, ts }),
        2 => (0u64..12, 0i64..200).prop_map(|(key, ts)| Step::Delete { key, ts }),
        2 => (0i64..220).prop_map(Step::Watermark),
    ];
    proptest::collection::vec(step, 0..120)
}

fn backends() -> Vec<StateBackendKind> {
    let mut b = vec![StateBackendKind::HashMap];
    if cfg!(feature = "rocksdb") {
        b.push(StateBackendKind::RocksDb);
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn firings_follow_the_model(script in steps()) {
        let expected = model(&script);
        for backend in backends() {
            prop_assert_eq!(&run(script.clone(), backend), &expected, "backend {:?}", backend);
        }
    }
}

#[test]
fn a_pinned_script_fires_as_the_model_says() {
    // Two keys, a duplicate registration, a deletion, a watermark that does
    // not advance, follow-ups in the same round, the end of input.
    let script = vec![
        Step::Register { key: 1, ts: 10 },
        Step::Register { key: 2, ts: 10 },
        Step::Register { key: 1, ts: 10 },
        Step::Register { key: 2, ts: 30 },
        Step::Register { key: 1, ts: 12 },
        Step::Delete { key: 2, ts: 30 },
        Step::Watermark(11),
        Step::Watermark(5),
        Step::Register { key: 3, ts: 9 },
        Step::Watermark(12),
        Step::Register { key: 2, ts: 100 },
    ];
    let expected = model(&script);
    // Pinned: key 2 is in a lower key group than key 1 (Flink's murmur
    // hash of the key's bytes), so it fires first at the same timestamp.
    let max = i64::MAX;
    assert_eq!(
        expected,
        vec![
            (2, 10, 11),
            (1, 10, 11),
            (3, 9, 12),
            (3, 11, 12),
            (1, 12, 12),
            (1, 17, max),
            (2, 100, max)
        ]
    );
    for backend in backends() {
        assert_eq!(run(script.clone(), backend), expected, "{backend:?}");
    }
}

/// Processing-time timers follow the job's clock: a manual one here.
/// Reports each registration (`false`) and each firing (`true`).
#[derive(Clone)]
struct Remind;

type Reminder = (u64, i64, bool);

impl KeyedProcessFunction<u64, u64, Reminder> for Remind {
    fn process_element(
        &mut self,
        key: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        let at = ctx.timer_service().current_processing_time() + 1_000;
        ctx.timer_service().register_processing_time_timer(at)?;
        out.collect((key, at, false));
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        assert_eq!(ctx.time_domain(), TimeDomain::ProcessingTime);
        out.collect((*ctx.current_key(), ts, true));
        Ok(())
    }
}

/// Emits `0..n` once, then stays open until told to finish.
#[derive(Clone)]
struct HoldOpen(u64, std::sync::Arc<std::sync::atomic::AtomicBool>);

struct HoldOpenReader(u64, bool, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Source<u64> for HoldOpen {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(HoldOpenReader(self.0, false, self.1.clone())))
    }
}

impl SourceReader<u64> for HoldOpenReader {
    fn poll_next(&mut self, out: &mut Vec<u64>, _: usize) -> anyhow::Result<SourceStatus> {
        if !self.1 {
            out.extend(0..self.0);
            self.1 = true;
            return Ok(SourceStatus::MoreAvailable);
        }
        if self.2.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::NothingAvailable)
    }
}

#[test]
fn processing_time_timers_fire_when_the_clock_reaches_them() {
    with_timeout(60, || {
        let clock = ManualClock::new(1_000_000);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        let (sink, handle) = TaggingSink::new();
        env.from_source(HoldOpen(10, done.clone()), "keys")
            .key_by(|k: &u64| *k)
            .process(Remind)
            .sink_to(sink, "fired");
        let client = env.execute_async("processing time").unwrap();
        let await_count = |n: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while handle.values().len() < n && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            handle.values().len()
        };
        // All ten registered at 1_000_000, for 1_001_000.
        assert_eq!(await_count(10), 10);
        clock.set_ms(1_000_999);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            handle.values().len(),
            10,
            "fired early: {:?}",
            handle.values()
        );
        clock.set_ms(1_001_000);
        assert_eq!(await_count(20), 20);
        done.store(true, std::sync::atomic::Ordering::Release);
        client.wait().unwrap();
        let mut got = handle.values();
        got.sort();
        let mut expected: Vec<Reminder> = (0..10)
            .flat_map(|k| [(k, 1_001_000, false), (k, 1_001_000, true)])
            .collect();
        expected.sort();
        assert_eq!(got, expected);
    });
}

/// Emits `0..n` once, then stays open until told to finish; its position
/// (whether it emitted) is checkpointed, so a restored run emits nothing
/// again.
#[derive(Clone)]
struct EmitOnce {
    n: u64,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct EmitOnceReader {
    n: u64,
    emitted: bool,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Source<u64> for EmitOnce {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(EmitOnceReader {
            n: self.n,
            emitted: false,
            done: self.done.clone(),
        }))
    }
}

impl SourceReader<u64> for EmitOnceReader {
    fn poll_next(&mut self, out: &mut Vec<u64>, _: usize) -> anyhow::Result<SourceStatus> {
        if !self.emitted {
            out.extend(0..self.n);
            self.emitted = true;
            return Ok(SourceStatus::MoreAvailable);
        }
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::NothingAvailable)
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(vec![u8::from(self.emitted)])
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.emitted = state == [1];
        Ok(())
    }
}

/// Waits until `handle` holds at least `n` records (at most 20 s); returns
/// how many it holds.
fn await_records<T: Clone>(handle: &common::TaggedHandle<T>, n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while handle.values().len() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.values().len()
}

/// A savepoint holds processing-time timers not yet due; the job restored
/// from it runs on a clock already past them, which never moves: they fire
/// at once, each exactly once, while the source still runs.
#[test]
fn restored_processing_time_timers_already_due_fire_at_once() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let savepoints = format!("file://{}", dir.path().join("sp").display());
        let job = |clock: &ManualClock, restore: Option<&str>| {
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
            env.set_config("state.savepoints.dir", &savepoints);
            if let Some(path) = restore {
                env.set_restore_from_savepoint(path, false);
            }
            let (sink, handle) = TaggingSink::new();
            env.from_source(
                EmitOnce {
                    n: 10,
                    done: done.clone(),
                },
                "keys",
            )
            .uid("keys")
            .key_by(|k: &u64| *k)
            .process(Remind)
            .uid("remind")
            .sink_to(sink, "fired");
            (env.execute_async("restored timers").unwrap(), handle, done)
        };

        // Ten timers at 1_001_000, registered at 1_000_000; savepoint, cancel.
        let clock = ManualClock::new(1_000_000);
        let (client, handle, _) = job(&clock, None);
        assert_eq!(await_records(&handle, 10), 10);
        let control = client.control();
        let trigger = control
            .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let location = loop {
            match control.savepoint_status(&trigger).unwrap() {
                SavepointStatus::InProgress => {}
                SavepointStatus::Completed { location } => break location,
                other => panic!("savepoint failed: {other:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "no savepoint");
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = client.wait();
        assert!(
            handle.values().iter().all(|(_, _, fired)| !fired),
            "nothing was due before the savepoint: {:?}",
            handle.values()
        );

        // Restored on a clock standing past them, which never moves.
        let clock = ManualClock::new(1_005_000);
        let (client, handle, done) = job(&clock, Some(&location));
        assert_eq!(await_records(&handle, 10), 10, "{:?}", handle.values());
        done.store(true, std::sync::atomic::Ordering::Release);
        client.wait().unwrap();
        assert_eq!(clock.now_ms(), 1_005_000);
        let expected: Vec<Reminder> = (0..10).map(|k| (k, 1_001_000, true)).collect();
        assert_eq!(common::sorted(handle.values()), expected);
    });
}

/// A sink that advances the job's manual clock when it finishes and
/// records whether each write came after its finish.
#[derive(Clone)]
struct AdvancesOnFinish {
    clock: ManualClock,
    to_ms: i64,
    finished: bool,
    writes: std::sync::Arc<std::sync::Mutex<Vec<(Reminder, bool)>>>,
}

impl SinkWriter<Reminder> for AdvancesOnFinish {
    fn write(&mut self, value: Reminder) -> anyhow::Result<()> {
        self.writes.lock().unwrap().push((value, self.finished));
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.finished = true;
        self.clock.set_ms(self.to_ms);
        Ok(())
    }
}

/// Timers a second ahead, then more five seconds ahead (per key).
#[derive(Clone)]
struct RemindTwice;

impl KeyedProcessFunction<u64, u64, Reminder> for RemindTwice {
    fn process_element(
        &mut self,
        key: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        let now = ctx.timer_service().current_processing_time();
        for at in [now + 1_000, now + 5_000] {
            ctx.timer_service().register_processing_time_timer(at)?;
            out.collect((key, at, false));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        out.collect((*ctx.current_key(), ts, true));
        Ok(())
    }
}

/// At the end of the input, processing-time timers already due fire before
/// the operator finishes, as Flink runs the timers that already triggered;
/// the others are dropped, and none fires after the operator finished even
/// when the clock passes it while the job waits for its final checkpoint.
#[test]
fn processing_time_timers_due_at_the_end_fire_and_later_ones_never_do() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let env = StreamEnvironment::new();
        // One subtask: the sink finishes (and moves the shared clock) only
        // after the keyed operator did.
        env.set_parallelism(1);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        // A final checkpoint to wait for after the input ended.
        env.enable_checkpointing(Duration::from_secs(3600));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().display()),
        );
        let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        env.from_source(
            EmitOnce {
                n: 10,
                done: done.clone(),
            },
            "keys",
        )
        .key_by(|k: &u64| *k)
        .process(RemindTwice)
        .sink_to(
            AdvancesOnFinish {
                clock: clock.clone(),
                to_ms: 1_010_000,
                finished: false,
                writes: writes.clone(),
            },
            "fired",
        );
        let client = env.execute_async("timers at the end").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while writes.lock().unwrap().len() < 20 {
            assert!(std::time::Instant::now() < deadline, "no registrations");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The first ten are due; the input ends.
        clock.set_ms(1_001_000);
        done.store(true, std::sync::atomic::Ordering::Release);
        client.wait().unwrap();
        let writes = writes.lock().unwrap().clone();
        let late: Vec<&(Reminder, bool)> = writes.iter().filter(|(_, after)| *after).collect();
        assert!(late.is_empty(), "written after the sink finished: {late:?}");
        let fired: Vec<Reminder> = writes
            .iter()
            .map(|(r, _)| *r)
            .filter(|(_, _, fired)| *fired)
            .collect();
        let expected: Vec<Reminder> = (0..10).map(|k| (k, 1_001_000, true)).collect();
        assert_eq!(common::sorted(fired), expected);
    });
}

/// A keyed broadcast function with timers: each keyed element sets an
/// event-time timer 5 ms after it; the timer reports the key, its
/// timestamp and the broadcast factor it reads then.
#[derive(Clone)]
struct RemindWithFactor(
    MapStateDescriptor<String, u64>,
    Option<BroadcastState<String, u64>>,
);

impl CheckpointedFunction for RemindWithFactor {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        self.1 = Some(ctx.operator_state_store().get_broadcast_state(&self.0)?);
        Ok(())
    }
}

impl KeyedBroadcastProcessFunction<u64, (u64, i64), (String, u64), (u64, i64, u64)>
    for RemindWithFactor
{
    fn process_element(
        &mut self,
        (_, t): (u64, i64),
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64, u64)>,
    ) -> anyhow::Result<()> {
        assert_eq!(ctx.timestamp(), Some(t));
        ctx.timer_service().register_event_time_timer(t + 5)?;
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        (k, v): (String, u64),
        ctx: &mut KeyedBroadcastContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64, u64)>,
    ) -> anyhow::Result<()> {
        self.1.as_ref().expect("initialized").put(ctx, k, v)?;
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedBroadcastOnTimerContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64, u64)>,
    ) -> anyhow::Result<()> {
        assert_eq!(ctx.time_domain(), TimeDomain::EventTime);
        let factor = self
            .1
            .as_ref()
            .expect("initialized")
            .get(ctx, &"factor".to_string())?
            .copied()
            .unwrap_or(0);
        out.collect((*ctx.current_key(), ts, factor));
        Ok(())
    }
}

#[test]
fn keyed_broadcast_functions_fire_timers() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let rules = MapStateDescriptor::<String, u64>::new("rules");
        let factors = env
            .from_collection(vec![("factor".to_string(), 7u64)])
            .broadcast_with(rules.clone());
        let (sink, handle) = TaggingSink::new();
        let events: Vec<(u64, i64)> = (0..300u64).map(|i| (i % 5, i as i64 * 2)).collect();
        env.from_collection(events.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
            )
            .key_by(|e: &(u64, i64)| e.0)
            .connect(&factors)
            .process(RemindWithFactor(rules, None))
            .sink_to(sink, "reminders");
        env.execute("keyed broadcast timers").unwrap();
        let mut expected: Vec<(u64, i64, u64)> =
            events.iter().map(|&(k, t)| (k, t + 5, 7)).collect();
        expected.sort();
        let mut got = handle.values();
        got.sort();
        assert_eq!(got, expected);
    });
}

/// A keyed broadcast function with timers of both domains: per element an
/// event-time timer at its timestamp, and per key processing-time timers
/// a second and five seconds ahead (each reported as registered). The
/// event-time timers fire only at the end of the input, slowly enough
/// that the operator finishes while they still fire; the last of them
/// moves the clock past the one-second timers, so those are due when the
/// operator finishes and only its `finish` can fire them.
#[derive(Clone)]
struct DueAtTheEnd {
    clock: ManualClock,
    last: i64,
    slept: bool,
}

impl KeyedBroadcastProcessFunction<u64, (u64, i64), u64, Reminder> for DueAtTheEnd {
    fn process_element(
        &mut self,
        (key, t): (u64, i64),
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        ctx.timer_service().register_event_time_timer(t)?;
        let now = ctx.timer_service().current_processing_time();
        for at in [now + 1_000, now + 5_000] {
            ctx.timer_service().register_processing_time_timer(at)?;
            out.collect((key, at, false));
        }
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        _: u64,
        _: &mut KeyedBroadcastContext<'_, u64>,
        _: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedBroadcastOnTimerContext<'_, u64>,
        out: &mut Collector<'_, Reminder>,
    ) -> anyhow::Result<()> {
        if ctx.time_domain() == TimeDomain::ProcessingTime {
            out.collect((*ctx.current_key(), ts, true));
            return Ok(());
        }
        // The first firing waits for the rest of the input's end to
        // arrive; the others make every slice of firing end after 256
        // timers, so that most are left when the operator finishes.
        if !self.slept {
            self.slept = true;
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(Duration::from_micros(50));
        if ts == self.last {
            self.clock.set_ms(1_001_000);
        }
        Ok(())
    }
}

/// At the end of the input, a keyed broadcast function's processing-time
/// timers already due fire before the operator finishes, as in a keyed
/// process function; later ones never fire, also not when the clock
/// passes them while the job waits for its final checkpoint.
#[test]
fn keyed_broadcast_processing_time_timers_due_at_the_end_fire() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let env = StreamEnvironment::new();
        // One subtask: the sink is chained to the function and finishes
        // (moving the clock) right after it.
        env.set_parallelism(1);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        // A final checkpoint to wait for after the input ended.
        env.enable_checkpointing(Duration::from_secs(3600));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.path().display()),
        );
        let n = 3_000u64;
        let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let rules = env
            .from_collection(vec![1u64])
            .broadcast_with(MapStateDescriptor::<u64, u64>::new("rules"));
        env.from_source(
            EmitOnce {
                n,
                done: done.clone(),
            },
            "events",
        )
        .map(|i: u64| (i % 10, i as i64))
        // Event time ends with the input: every event-time timer is due
        // at once then.
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::no_watermarks().with_timestamp_assigner(|e: &(u64, i64), _| e.1),
        )
        .key_by(|e: &(u64, i64)| e.0)
        .connect(&rules)
        .process(DueAtTheEnd {
            clock: clock.clone(),
            last: n as i64 - 1,
            slept: false,
        })
        .sink_to(
            AdvancesOnFinish {
                clock: clock.clone(),
                to_ms: 1_010_000,
                finished: false,
                writes: writes.clone(),
            },
            "fired",
        );
        let client = env
            .execute_async("keyed broadcast timers at the end")
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while writes.lock().unwrap().len() < 2 * n as usize {
            assert!(std::time::Instant::now() < deadline, "no registrations");
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        client.wait().unwrap();
        let writes = writes.lock().unwrap().clone();
        let late: Vec<&(Reminder, bool)> = writes.iter().filter(|(_, after)| *after).collect();
        assert!(late.is_empty(), "written after the sink finished: {late:?}");
        let fired: Vec<Reminder> = writes
            .iter()
            .map(|(r, _)| *r)
            .filter(|(_, _, fired)| *fired)
            .collect();
        let expected: Vec<Reminder> = (0..10).map(|k| (k, 1_001_000, true)).collect();
        assert_eq!(common::sorted(fired), expected);
    });
}
