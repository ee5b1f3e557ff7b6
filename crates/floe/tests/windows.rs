//! Windows through real jobs, against a brute-force model computed from
//! the generated events: tumbling and sliding windows with reduce,
//! aggregate and process functions, session windows merging, output
//! timestamps at the window's end, late elements to the side output, on
//! both backends and at several parallelisms.
//!
//! The events come from one source subtask, out of order within a bound,
//! with a watermark after every event (its maximum timestamp minus the
//! bound; the source forwards it after each polled batch), so no on-time
//! element is ever late. Past the first two batches every 37th event is
//! an hour behind, far behind the watermark of the batches before it, so
//! it is late whatever the batching. (Only while the window operator's
//! inputs all come from that one subtask: through a parallel stage in
//! between, another channel's watermark may lag behind.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TaggingSink, sorted, splitmix, with_timeout};
use floe::prelude::*;

const BOUND: i64 = 2_000;
const HOUR: i64 = 3_600_000;

/// Event `i`: `(key, timestamp, value)`; time advances 10 ms per event
/// with up to `BOUND` of disorder, or an hour late.
fn event(i: u64) -> (u64, i64, u64) {
    let r = splitmix(i);
    let base = 1_000_000 + i as i64 * 10;
    let ts = if is_late(i) {
        base - HOUR
    } else {
        base - (r % BOUND as u64) as i64
    };
    (r % 11, ts, r % 1_000)
}

/// Whether event `i` is an hour late (never in the first two batches of
/// 1,024, when the operator may not have a watermark yet).
fn is_late(i: u64) -> bool {
    i >= 2_048 && i % 37 == 36
}

/// A watermark after every event: the largest timestamp so far minus the
/// bound (the events' disorder), minus one.
#[derive(Default)]
struct BoundedEveryEvent {
    max: i64,
}

impl<T> WatermarkGenerator<T> for BoundedEveryEvent {
    fn on_event(&mut self, _: &T, ts: i64, output: &mut WatermarkOutput) {
        if ts > self.max {
            self.max = ts;
            output.emit_watermark(Watermark(self.max - BOUND - 1));
        }
    }

    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

fn events(env: &StreamEnvironment, n: u64) -> DataStream<(u64, i64, u64)> {
    let strategy = WatermarkStrategy::for_generator(|| BoundedEveryEvent { max: i64::MIN })
        .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1);
    env.from_source_with_watermarks(GeneratorSource::new(n, event), strategy, "events")
        .set_parallelism(1)
}

/// Every window `[s, s + size)` with `s ≡ 0 (mod slide)` holding `ts`.
fn windows_of(ts: i64, size: i64, slide: i64) -> Vec<(i64, i64)> {
    let mut s = ts - ts.rem_euclid(slide);
    let mut out = Vec::new();
    while s > ts - size {
        out.push((s, s + size));
        s -= slide;
    }
    out
}

/// `(key, window) -> values` of the on-time events.
fn model(n: u64, size: i64, slide: i64) -> BTreeMap<(u64, i64, i64), Vec<u64>> {
    let mut m: BTreeMap<(u64, i64, i64), Vec<u64>> = BTreeMap::new();
    for i in (0..n).filter(|i| !is_late(*i)) {
        let (k, ts, v) = event(i);
        for (s, e) in windows_of(ts, size, slide) {
            m.entry((k, s, e)).or_default().push(v);
        }
    }
    m
}

/// Passes each record on with the timestamp it carries.
#[derive(Clone)]
struct WithTimestamp;

impl<T: Clone + Send + 'static> ProcessFunction<T, (T, Option<i64>)> for WithTimestamp {
    fn process_element(
        &mut self,
        value: T,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (T, Option<i64>)>,
    ) -> anyhow::Result<()> {
        out.collect((value, ctx.timestamp()));
        Ok(())
    }
}

fn backends() -> Vec<StateBackendKind> {
    let mut b = vec![StateBackendKind::HashMap];
    if cfg!(feature = "rocksdb") {
        b.push(StateBackendKind::RocksDb);
    }
    b
}

/// Sum and count of a window's values.
#[derive(Clone)]
struct SumCount;

impl AggregateFunction for SumCount {
    type In = (u64, i64, u64);
    type Acc = (u64, u64);
    type Out = (u64, u64);

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    fn add(&self, (_, _, v): (u64, i64, u64), acc: &mut (u64, u64)) {
        acc.0 += v;
        acc.1 += 1;
    }

    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }

    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Tags an aggregate with its key and window.
#[derive(Clone)]
struct KeyAndWindow;

impl ProcessWindowFunction<u64, (u64, u64), (u64, i64, i64, u64, u64), TimeWindow>
    for KeyAndWindow
{
    fn process(
        &mut self,
        key: &u64,
        ctx: &mut WindowContext<'_, u64, TimeWindow>,
        elements: Vec<(u64, u64)>,
        out: &mut Collector<'_, (u64, i64, i64, u64, u64)>,
    ) -> anyhow::Result<()> {
        let w = *ctx.window();
        anyhow::ensure!(elements.len() == 1, "one aggregate per window");
        let (sum, count) = elements[0];
        out.collect((*key, w.start, w.end, sum, count));
        Ok(())
    }
}

#[test]
fn tumbling_windows_aggregate_and_send_late_elements_aside() {
    with_timeout(240, || {
        let n = 20_000;
        let size = 1_000;
        let expected = model(n, size, size);
        let expected_late: Vec<(u64, i64, u64)> =
            sorted((0..n).filter(|i| is_late(*i)).map(event).collect());
        for backend in backends() {
            for p in [1u32, 3] {
                let env = StreamEnvironment::new();
                env.set_parallelism(p);
                env.set_state_backend(backend);
                let late = OutputTag::<(u64, i64, u64)>::new("late");
                let (sink, handle) = TaggingSink::new();
                let (late_sink, late_handle) = TaggingSink::new();
                let result = events(&env, n)
                    .key_by(|e: &(u64, i64, u64)| e.0)
                    .window(TumblingWindows::event_time(Duration::from_millis(
                        size as u64,
                    )))
                    .side_output_late_data(&late)
                    .aggregate_with(SumCount, KeyAndWindow);
                result.process(WithTimestamp).sink_to(sink, "windows");
                result.side_output(&late).sink_to(late_sink, "late");
                env.execute("tumbling windows").unwrap();

                let want: Vec<_> = expected
                    .iter()
                    .map(|(&(k, s, e), vs)| {
                        (
                            (k, s, e, vs.iter().sum::<u64>(), vs.len() as u64),
                            Some(e - 1),
                        )
                    })
                    .collect();
                let got = sorted(handle.values());
                assert_eq!(got.len(), want.len(), "{backend} p={p}: windows fired");
                assert_eq!(got, sorted(want), "{backend} p={p}");
                assert_eq!(
                    sorted(late_handle.values()),
                    expected_late,
                    "{backend} p={p}"
                );
            }
        }
    });
}

#[test]
fn sliding_windows_reduce_every_window_an_element_is_in() {
    with_timeout(240, || {
        let n = 10_000;
        let (size, slide) = (3_000, 1_000);
        let expected = model(n, size, slide);
        for backend in backends() {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_state_backend(backend);
            let (sink, handle) = TaggingSink::new();
            events(&env, n)
                .map(|(k, ts, v)| (k, ts, v, 1u64))
                // Chained to the source: the window operator's one input
                // is the source's, so late elements are late at any
                // speed (see the module comment).
                .set_parallelism(1)
                .key_by(|e: &(u64, i64, u64, u64)| e.0)
                .window(SlidingWindows::event_time(
                    Duration::from_millis(size as u64),
                    Duration::from_millis(slide as u64),
                ))
                .reduce(|a, b| (a.0, a.1.max(b.1), a.2 + b.2, a.3 + b.3))
                .process(WithTimestamp)
                .sink_to(sink, "windows");
            env.execute("sliding windows").unwrap();
            // Per key and window end: the sum and count of its values, and
            // the latest timestamp in it; emitted at the window's end.
            let want: Vec<_> = expected
                .iter()
                .map(|(&(k, s, e), vs)| {
                    let max_ts = (0..n)
                        .filter(|i| !is_late(*i))
                        .map(event)
                        .filter(|(key, ts, _)| *key == k && *ts >= s && *ts < e)
                        .map(|(_, ts, _)| ts)
                        .max()
                        .expect("a window has an element");
                    (
                        (k, max_ts, vs.iter().sum::<u64>(), vs.len() as u64),
                        Some(e - 1),
                    )
                })
                .collect();
            assert_eq!(sorted(handle.values()), sorted(want), "{backend}");
        }
    });
}

/// Emits `(key, start, end, values in arrival order... sorted)`.
fn session_summary(
    key: &u64,
    w: &TimeWindow,
    elements: Vec<(u64, i64, u64)>,
    out: &mut Collector<'_, (u64, i64, i64, Vec<i64>)>,
) -> anyhow::Result<()> {
    let mut ts: Vec<i64> = elements.iter().map(|e| e.1).collect();
    ts.sort_unstable();
    out.collect((*key, w.start, w.end, ts));
    Ok(())
}

#[test]
fn session_windows_merge_exactly_as_the_model() {
    with_timeout(240, || {
        // Sparse keys so that sessions form and close: 11 keys, one event
        // per 10 ms, gaps of 150 ms: many sessions per key, merged from
        // out-of-order events.
        let n = 6_000;
        let gap = 150;
        // Model: per key, the on-time timestamps sorted; a session is a
        // run whose consecutive timestamps are less than `gap` apart
        // (windows [t, t + gap) touching merge), ending at last + gap.
        let mut per_key: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for i in (0..n).filter(|i| !is_late(*i)) {
            let (k, ts, _) = event(i);
            per_key.entry(k).or_default().push(ts);
        }
        let mut want = BTreeSet::new();
        for (k, mut ts) in per_key {
            ts.sort_unstable();
            let mut run = vec![ts[0]];
            for t in ts.into_iter().skip(1) {
                if t <= run.last().unwrap() + gap {
                    run.push(t);
                } else {
                    want.insert((k, run[0], run.last().unwrap() + gap, run.clone()));
                    run = vec![t];
                }
            }
            want.insert((k, run[0], run.last().unwrap() + gap, run));
        }
        for backend in backends() {
            for p in [1u32, 2] {
                let env = StreamEnvironment::new();
                env.set_parallelism(p);
                env.set_state_backend(backend);
                let (sink, handle) = TaggingSink::new();
                events(&env, n)
                    .key_by(|e: &(u64, i64, u64)| e.0)
                    .window(SessionWindows::event_time_with_gap(Duration::from_millis(
                        gap as u64,
                    )))
                    .apply(session_summary)
                    .sink_to(sink, "sessions");
                env.execute("session windows").unwrap();
                let got: BTreeSet<_> = handle.values().into_iter().collect();
                assert_eq!(got.len(), handle.values().len(), "no session fired twice");
                assert_eq!(got, want, "{backend} p={p}");
            }
        }
    });
}

#[test]
fn count_windows_fire_every_n_elements_of_a_key() {
    with_timeout(120, || {
        // Global windows with a purging count trigger: Flink's countWindow.
        let n = 5_000u64;
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let (sink, handle) = TaggingSink::new();
        env.from_collection((0..n).map(|i| (i % 7, i)).collect::<Vec<_>>())
            .key_by(|e: &(u64, u64)| e.0)
            .window(GlobalWindows::create())
            .trigger(PurgingTrigger::of(CountTrigger::of(10)))
            .reduce(|a, b| (a.0, a.1 + b.1))
            .sink_to(sink, "counts");
        env.execute("count windows").unwrap();
        // Per key, its values in order, summed ten at a time; a last
        // incomplete group never fires.
        let mut want = Vec::new();
        for k in 0..7 {
            let values: Vec<u64> = (0..n).filter(|i| i % 7 == k).collect();
            for chunk in values.chunks(10).filter(|c| c.len() == 10) {
                want.push((k, chunk.iter().sum::<u64>()));
            }
        }
        assert_eq!(sorted(handle.values()), sorted(want));
    });
}

/// Emits its items one per poll (with `floe.runtime.batch-size` 1, one per
/// batch, each followed by its watermark), counting them in `emitted`,
/// then stays open until `done`.
#[derive(Clone)]
struct Scripted<T> {
    items: Vec<T>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    emitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<T> Scripted<T> {
    fn new(items: Vec<T>, done: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Scripted {
            items,
            done,
            emitted: Default::default(),
        }
    }
}

struct ScriptedReader<T>(Scripted<T>, usize);

impl<T: Clone + Send + Sync + 'static> Source<T> for Scripted<T> {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(ScriptedReader(self.clone(), 0)))
    }
}

impl<T: Clone + Send + 'static> SourceReader<T> for ScriptedReader<T> {
    fn poll_next(&mut self, out: &mut Vec<T>, _: usize) -> anyhow::Result<SourceStatus> {
        if let Some(item) = self.0.items.get(self.1) {
            out.push(item.clone());
            self.1 += 1;
            self.0
                .emitted
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            return Ok(SourceStatus::MoreAvailable);
        }
        if self.0.done.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::NothingAvailable)
    }
}

/// A watermark right behind every event (Flink's monotonous timestamps,
/// emitted per event).
struct EveryEvent;

impl<T> WatermarkGenerator<T> for EveryEvent {
    fn on_event(&mut self, _: &T, ts: i64, output: &mut WatermarkOutput) {
        output.emit_watermark(Watermark(ts - 1));
    }

    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

#[test]
fn late_elements_within_the_allowed_lateness_fire_the_window_again() {
    with_timeout(60, || {
        // One key; window [0, 1000) with 10 s of allowed lateness.
        let script: Vec<(u64, i64)> = vec![
            (1, 100),
            (2, 200),
            // The watermark passes 999: the window fires (3).
            (4, 5_000),
            // Late but within the lateness: added, fires again (3 + 8).
            (8, 300),
            // The watermark passes 999 + 10 000: the window is gone.
            (16, 20_000),
            // Too late: to the side output.
            (32, 400),
        ];
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.set_config("floe.runtime.batch-size", "1");
        let late = OutputTag::<(u64, i64)>::new("late");
        let (sink, handle) = TaggingSink::new();
        let (late_sink, late_handle) = TaggingSink::new();
        let strategy = WatermarkStrategy::for_generator(|| EveryEvent)
            .with_timestamp_assigner(|e: &(u64, i64), _| e.1);
        let sums = env
            .from_source_with_watermarks(Scripted::new(script, done), strategy, "script")
            .key_by(|_: &(u64, i64)| 0u64)
            .window(TumblingWindows::event_time(Duration::from_secs(1)))
            .allowed_lateness(Duration::from_secs(10))
            .side_output_late_data(&late)
            .reduce(|a, b| (a.0 + b.0, a.1.max(b.1)));
        sums.process(WithTimestamp).sink_to(sink, "sums");
        sums.side_output(&late).sink_to(late_sink, "late");
        env.execute("allowed lateness").unwrap();
        let got = handle.values();
        // In firing order: [0, 1000) twice, then [5000, 6000) and
        // [20000, 21000) at the end of input.
        assert_eq!(
            got,
            vec![
                ((3, 200), Some(999)),
                ((11, 300), Some(999)),
                ((4, 5_000), Some(5_999)),
                ((16, 20_000), Some(20_999)),
            ]
        );
        assert_eq!(late_handle.values(), vec![(32, 400)]);
    });
}

#[test]
fn processing_time_windows_fire_on_the_clock() {
    with_timeout(60, || {
        let clock = ManualClock::new(1_000_500);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_processing_clock(ProcessingClock::Manual(clock.clone()));
        let (sink, handle) = TaggingSink::new();
        let items: Vec<u64> = (0..100).collect();
        env.from_source(Scripted::new(items, done.clone()), "items")
            .key_by(|v: &u64| v % 4)
            .window(TumblingWindows::processing_time(Duration::from_secs(1)))
            .apply(|key: &u64, w: &TimeWindow, vs: Vec<u64>, out| {
                out.collect((*key, w.start, w.end, vs.iter().sum::<u64>(), vs.len()));
                Ok(())
            })
            .sink_to(sink, "windows");
        let client = env.execute_async("processing-time windows").unwrap();
        // Nothing fires while the clock stays inside [1 000 000, 1 001 000).
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            handle.values().is_empty(),
            "fired early: {:?}",
            handle.values()
        );
        clock.set_ms(1_001_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while handle.values().len() < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        client.wait().unwrap();
        let want: Vec<_> = (0..4u64)
            .map(|k| {
                let vs: Vec<u64> = (0..100).filter(|v| v % 4 == k).collect();
                (k, 1_000_000, 1_001_000, vs.iter().sum::<u64>(), vs.len())
            })
            .collect();
        assert_eq!(sorted(handle.values()), want);
    });
}

/// Window state survives a savepoint, a rescale (2 -> 3) and a change of
/// backend: the windows fired before the savepoint and those fired after
/// the restore are together exactly the model's, none twice.
#[test]
fn windows_resume_from_a_savepoint_at_another_parallelism_and_backend() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let savepoints = format!("file://{}", dir.path().join("sp").display());
        let size = 10_000i64;
        let on_time = |range: std::ops::Range<u64>| -> Vec<(u64, i64, u64)> {
            range.filter(|i| !is_late(*i)).map(event).collect()
        };
        let (first, second) = (on_time(0..5_000), on_time(5_000..10_000));
        let job = |items: Vec<(u64, i64, u64)>,
                   p: u32,
                   backend: StateBackendKind,
                   restore: Option<&str>,
                   done: bool| {
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(done));
            let env = StreamEnvironment::new();
            env.set_parallelism(p);
            env.set_state_backend(backend);
            env.set_config("state.savepoints.dir", &savepoints);
            if let Some(path) = restore {
                env.set_restore_from_savepoint(path, false);
            }
            let source = Scripted::new(items, done);
            let emitted = source.emitted.clone();
            let strategy = WatermarkStrategy::for_generator(|| BoundedEveryEvent { max: i64::MIN })
                .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1);
            let (sink, handle) = TaggingSink::new();
            env.from_source_with_watermarks(source, strategy, "events")
                .uid("events")
                .key_by(|e: &(u64, i64, u64)| e.0)
                .window(TumblingWindows::event_time(Duration::from_millis(
                    size as u64,
                )))
                .aggregate_with(SumCount, KeyAndWindow)
                .uid("windows")
                .sink_to(sink, "windows");
            (
                env.execute_async("windows across a savepoint").unwrap(),
                handle,
                emitted,
            )
        };

        let n1 = first.len();
        let (client, before, emitted) = job(first, 2, StateBackendKind::HashMap, None, false);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while emitted.load(std::sync::atomic::Ordering::Acquire) < n1 {
            assert!(std::time::Instant::now() < deadline, "the source stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let control = client.control();
        let trigger = control
            .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
            .unwrap();
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
            !before.values().is_empty(),
            "some windows fired before the savepoint"
        );

        let backend = *backends().last().unwrap();
        let (client, after, _) = job(second, 3, backend, Some(&location), true);
        client.wait().unwrap();

        let all: Vec<_> = before.values().into_iter().chain(after.values()).collect();
        let want: Vec<_> = model(10_000, size, size)
            .into_iter()
            .map(|((k, s, e), vs)| (k, s, e, vs.iter().sum::<u64>(), vs.len() as u64))
            .collect();
        assert_eq!(sorted(all), want, "restored on {backend}");
    });
}

/// Event `i` of the right-hand stream of the join tests: the left's
/// times and keys, other draws, never late.
fn other_event(i: u64) -> (u64, i64, u64) {
    let r = splitmix(i + 1_000_000);
    let ts = 1_000_000 + i as i64 * 10 - (r % BOUND as u64) as i64;
    (r % 11, ts, 5_000 + r % 1_000)
}

fn on_time(n: u64, f: fn(u64) -> (u64, i64, u64)) -> Vec<(u64, i64, u64)> {
    (0..n).filter(|i| !is_late(*i)).map(f).collect()
}

/// A stream of `items` from one source subtask with a watermark per event.
fn scripted(env: &StreamEnvironment, items: Vec<(u64, i64, u64)>) -> DataStream<(u64, i64, u64)> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let strategy = WatermarkStrategy::for_generator(|| BoundedEveryEvent { max: i64::MIN })
        .with_timestamp_assigner(|e: &(u64, i64, u64), _| e.1);
    env.from_source_with_watermarks(Scripted::new(items, done), strategy, "events")
}

/// `(key, window start) -> values` of `events` in tumbling windows.
fn by_key_and_window(events: &[(u64, i64, u64)], size: i64) -> BTreeMap<(u64, i64), Vec<u64>> {
    let mut m: BTreeMap<(u64, i64), Vec<u64>> = BTreeMap::new();
    for &(k, ts, v) in events {
        m.entry((k, ts - ts.rem_euclid(size))).or_default().push(v);
    }
    m
}

#[test]
fn window_joins_pair_equal_keys_of_a_window_and_co_groups_see_both_sides() {
    with_timeout(120, || {
        let size = 1_000;
        // The two streams' times overlap; their keys are the same 11.
        let (left, right) = (on_time(1_500, event), on_time(1_500, other_event));
        let (lw, rw) = (
            by_key_and_window(&left, size),
            by_key_and_window(&right, size),
        );
        let mut want_join = Vec::new();
        for (kw, ls) in &lw {
            for a in ls {
                for b in rw.get(kw).into_iter().flatten() {
                    want_join.push((kw.0, *a, *b));
                }
            }
        }
        let keys: BTreeSet<_> = lw.keys().chain(rw.keys()).copied().collect();
        let want_groups: Vec<_> = keys
            .iter()
            .map(|kw| {
                let l = sorted(lw.get(kw).cloned().unwrap_or_default());
                let r = sorted(rw.get(kw).cloned().unwrap_or_default());
                (kw.0, l, r)
            })
            .collect();
        assert!(want_join.len() > 1_000, "the streams overlap");

        for backend in backends() {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_state_backend(backend);
            let l = scripted(&env, left.clone());
            let r = scripted(&env, right.clone());
            let (join_sink, joined) = TaggingSink::new();
            let (group_sink, grouped) = TaggingSink::new();
            l.join(&r)
                .where_key(|a: &(u64, i64, u64)| a.0)
                .equal_to(|b: &(u64, i64, u64)| b.0)
                .window(TumblingWindows::event_time(Duration::from_millis(
                    size as u64,
                )))
                .apply(|a, b| (a.0, a.2, b.2))
                .sink_to(join_sink, "joined");
            l.co_group(&r)
                .where_key(|a: &(u64, i64, u64)| a.0)
                .equal_to(|b: &(u64, i64, u64)| b.0)
                .window(TumblingWindows::event_time(Duration::from_millis(
                    size as u64,
                )))
                .apply(
                    |k: &u64, ls: Vec<(u64, i64, u64)>, rs: Vec<(u64, i64, u64)>, out| {
                        let l = sorted(ls.into_iter().map(|e| e.2).collect());
                        let r = sorted(rs.into_iter().map(|e| e.2).collect());
                        out.collect((*k, l, r));
                        Ok(())
                    },
                )
                .sink_to(group_sink, "grouped");
            env.execute("window joins").unwrap();
            assert_eq!(
                sorted(joined.values()),
                sorted(want_join.clone()),
                "{backend}: join"
            );
            assert_eq!(
                sorted(grouped.values()),
                sorted(want_groups.clone()),
                "{backend}: co-group"
            );
        }
    });
}

#[test]
fn window_all_windows_the_whole_stream() {
    with_timeout(60, || {
        let size = 2_000;
        let events = on_time(3_000, event);
        let want: Vec<(i64, u64, usize)> = {
            let mut m: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
            for &(_, ts, v) in &events {
                m.entry(ts - ts.rem_euclid(size)).or_default().push(v);
            }
            m.into_iter()
                .map(|(s, vs)| (s, vs.iter().sum(), vs.len()))
                .collect()
        };
        let env = StreamEnvironment::new();
        env.set_parallelism(3);
        let (sink, handle) = TaggingSink::new();
        scripted(&env, events)
            .window_all(TumblingWindows::event_time(Duration::from_millis(
                size as u64,
            )))
            .apply(|_: &(), w: &TimeWindow, vs: Vec<(u64, i64, u64)>, out| {
                out.collect((w.start, vs.iter().map(|e| e.2).sum::<u64>(), vs.len()));
                Ok(())
            })
            .sink_to(sink, "all");
        env.execute("window all").unwrap();
        assert_eq!(sorted(handle.values()), want);
    });
}

#[test]
fn interval_joins_pair_every_element_within_the_bounds() {
    with_timeout(120, || {
        let (left, right) = (on_time(2_000, event), on_time(2_000, other_event));
        // Brute force: every pair of equal keys with lower <= b - a <= upper,
        // inclusive or not at each end.
        let pairs = |lower: i64, upper: i64, lower_in: bool, upper_in: bool| {
            let mut out = Vec::new();
            for a in &left {
                for b in &right {
                    let d = b.1 - a.1;
                    let above = if lower_in { d >= lower } else { d > lower };
                    let below = if upper_in { d <= upper } else { d < upper };
                    if a.0 == b.0 && above && below {
                        out.push(((a.0, a.2, b.2), Some(a.1.max(b.1))));
                    }
                }
            }
            sorted(out)
        };
        for backend in backends() {
            for (lower, upper, exclusive) in [(-30, 20, false), (-30, 20, true), (5, 40, false)] {
                let want = pairs(lower, upper, !exclusive, !exclusive);
                assert!(want.len() > 100, "the bounds pair some elements");
                let env = StreamEnvironment::new();
                env.set_parallelism(2);
                env.set_state_backend(backend);
                let l = scripted(&env, left.clone()).key_by(|a: &(u64, i64, u64)| a.0);
                let r = scripted(&env, right.clone()).key_by(|b: &(u64, i64, u64)| b.0);
                let mut joined = l.interval_join(&r).between(lower, upper);
                if exclusive {
                    joined = joined.lower_bound_exclusive().upper_bound_exclusive();
                }
                let (sink, handle) = TaggingSink::new();
                joined
                    .process(|a, b, ctx, out| {
                        anyhow::ensure!(ctx.left_timestamp == a.1 && ctx.right_timestamp == b.1);
                        out.collect((a.0, a.2, b.2));
                        Ok(())
                    })
                    .process(WithTimestamp)
                    .sink_to(sink, "pairs");
                env.execute("interval join").unwrap();
                assert_eq!(
                    sorted(handle.values()),
                    want,
                    "{backend} [{lower}, {upper}] exclusive {exclusive}"
                );
            }
        }
    });
}

#[test]
fn sliding_count_windows_keep_the_last_n_with_an_evictor() {
    with_timeout(120, || {
        // Flink's countWindow(5, 2): every 2 elements of a key, the sum of
        // its last 5.
        let n = 3_000u64;
        let items: Vec<(u64, u64)> = (0..n).map(|i| (i % 7, splitmix(i) % 100)).collect();
        let mut want = Vec::new();
        for k in 0..7 {
            let values: Vec<u64> = items.iter().filter(|e| e.0 == k).map(|e| e.1).collect();
            for seen in (2..=values.len()).step_by(2) {
                let last = &values[seen.saturating_sub(5)..seen];
                want.push((k, last.iter().sum::<u64>(), last.len()));
            }
        }
        for backend in backends() {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_state_backend(backend);
            let (sink, handle) = TaggingSink::new();
            env.from_collection(items.clone())
                .key_by(|e: &(u64, u64)| e.0)
                .window(GlobalWindows::create())
                .trigger(CountTrigger::of(2))
                .evictor(CountEvictor::of(5))
                .apply(|k: &u64, _: &GlobalWindow, vs: Vec<(u64, u64)>, out| {
                    out.collect((*k, vs.iter().map(|e| e.1).sum::<u64>(), vs.len()));
                    Ok(())
                })
                .sink_to(sink, "counts");
            env.execute("sliding count windows").unwrap();
            assert_eq!(sorted(handle.values()), sorted(want.clone()), "{backend}");
        }
    });
}

#[test]
fn a_time_evictor_leaves_the_newest_span_of_a_window_to_its_reduce() {
    with_timeout(120, || {
        let size = 1_000;
        let span = 300;
        let events = on_time(4_000, event);
        // Per key and window: the values of elements newer than the
        // window's newest minus the span (Flink's TimeEvictor).
        let mut groups: BTreeMap<(u64, i64), Vec<(i64, u64)>> = BTreeMap::new();
        for &(k, ts, v) in &events {
            groups
                .entry((k, ts - ts.rem_euclid(size)))
                .or_default()
                .push((ts, v));
        }
        let want: Vec<_> = groups
            .into_iter()
            .map(|((k, _), es)| {
                let newest = es.iter().map(|e| e.0).max().unwrap();
                let kept: Vec<u64> = es
                    .iter()
                    .filter(|e| e.0 > newest - span)
                    .map(|e| e.1)
                    .collect();
                (k, newest, kept.iter().sum::<u64>(), kept.len() as u64)
            })
            .collect();
        for backend in backends() {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_state_backend(backend);
            let (sink, handle) = TaggingSink::new();
            scripted(&env, events.clone())
                .map(|(k, ts, v)| (k, ts, v, 1u64))
                .set_parallelism(1)
                .key_by(|e: &(u64, i64, u64, u64)| e.0)
                .window(TumblingWindows::event_time(Duration::from_millis(
                    size as u64,
                )))
                .evictor(TimeEvictor::of(Duration::from_millis(span as u64)))
                .reduce(|a, b| (a.0, a.1.max(b.1), a.2 + b.2, a.3 + b.3))
                .sink_to(sink, "kept");
            env.execute("time evictor").unwrap();
            assert_eq!(sorted(handle.values()), sorted(want.clone()), "{backend}");
        }
    });
}

#[test]
fn sliding_windows_kept_per_slice_aggregate_exactly_as_per_window() {
    with_timeout(120, || {
        // Size 2.5 s every 1 s: slices of 500 ms, an element in 3 windows.
        let n = 8_000;
        let (size, slide) = (2_500, 1_000);
        let want: Vec<_> = model(n, size, slide)
            .into_iter()
            .map(|((k, s, e), vs)| (k, s, e, vs.iter().sum::<u64>(), vs.len() as u64))
            .collect();
        for backend in backends() {
            for explicit_trigger in [false, true] {
                let env = StreamEnvironment::new();
                env.set_parallelism(3);
                env.set_state_backend(backend);
                let (sink, handle) = TaggingSink::new();
                let windowed = events(&env, n).key_by(|e: &(u64, i64, u64)| e.0).window(
                    SlidingWindows::event_time(
                        Duration::from_millis(size as u64),
                        Duration::from_millis(slide as u64),
                    ),
                );
                let result = if explicit_trigger {
                    windowed
                        .trigger(EventTimeTrigger)
                        .aggregate_with(SumCount, KeyAndWindow)
                } else {
                    windowed.aggregate_with(SumCount, KeyAndWindow)
                };
                result.sink_to(sink, "windows");
                env.execute("sliced windows").unwrap();
                assert_eq!(sorted(handle.values()), want, "{backend}");
            }
        }
    });
}

/// Every element of a window, sorted, with its key and bounds.
#[derive(Clone)]
struct AllValues;

impl ProcessWindowFunction<u64, (u64, i64, u64), (u64, i64, i64, Vec<u64>), TimeWindow>
    for AllValues
{
    fn process(
        &mut self,
        key: &u64,
        ctx: &mut WindowContext<'_, u64, TimeWindow>,
        elements: Vec<(u64, i64, u64)>,
        out: &mut Collector<'_, (u64, i64, i64, Vec<u64>)>,
    ) -> anyhow::Result<()> {
        let w = *ctx.window();
        for (k, ts, _) in &elements {
            anyhow::ensure!(k == key, "element of key {k} in a window of {key}");
            anyhow::ensure!(w.start <= *ts && *ts < w.end, "{ts} outside {w:?}");
        }
        let mut values: Vec<u64> = elements.into_iter().map(|e| e.2).collect();
        values.sort_unstable();
        out.collect((*key, w.start, w.end, values));
        Ok(())
    }
}

#[test]
fn sliding_process_windows_kept_per_slice_see_every_element_of_the_window() {
    with_timeout(120, || {
        // Size 2.5 s every 1 s: slices of 500 ms, an element in 3 windows
        // but stored once (per slice) with the default trigger, once per
        // window with an explicit one.
        let n = 6_000;
        let (size, slide) = (2_500, 1_000);
        let want: Vec<_> = model(n, size, slide)
            .into_iter()
            .map(|((k, s, e), mut vs)| {
                vs.sort_unstable();
                (k, s, e, vs)
            })
            .collect();
        for backend in backends() {
            for explicit_trigger in [false, true] {
                let env = StreamEnvironment::new();
                env.set_parallelism(3);
                env.set_state_backend(backend);
                let (sink, handle) = TaggingSink::new();
                let windowed = events(&env, n).key_by(|e: &(u64, i64, u64)| e.0).window(
                    SlidingWindows::event_time(
                        Duration::from_millis(size as u64),
                        Duration::from_millis(slide as u64),
                    ),
                );
                let result = if explicit_trigger {
                    windowed.trigger(EventTimeTrigger).process(AllValues)
                } else {
                    windowed.process(AllValues)
                };
                result.sink_to(sink, "windows");
                env.execute("sliced process windows").unwrap();
                assert_eq!(
                    sorted(handle.values()),
                    want,
                    "{backend}, explicit trigger: {explicit_trigger}"
                );
            }
        }
    });
}

#[test]
fn sliced_sliding_windows_fire_again_for_late_elements_within_the_lateness() {
    with_timeout(60, || {
        let script: Vec<(u64, i64)> = vec![
            (1, 100),
            (2, 200),
            (4, 5_000),
            (8, 300),
            (16, 20_000),
            (32, 400),
        ];
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.set_config("floe.runtime.batch-size", "1");
        let late = OutputTag::<(u64, i64)>::new("late");
        let (sink, handle) = TaggingSink::new();
        let (late_sink, late_handle) = TaggingSink::new();
        let strategy = WatermarkStrategy::for_generator(|| EveryEvent)
            .with_timestamp_assigner(|e: &(u64, i64), _| e.1);
        let sums = env
            .from_source_with_watermarks(Scripted::new(script, done), strategy, "script")
            .key_by(|_: &(u64, i64)| 0u64)
            .window(SlidingWindows::event_time(
                Duration::from_secs(2),
                Duration::from_secs(1),
            ))
            .allowed_lateness(Duration::from_secs(10))
            .side_output_late_data(&late)
            .reduce(|a, b| (a.0 + b.0, a.1.max(b.1)));
        sums.process(WithTimestamp).sink_to(sink, "sums");
        sums.side_output(&late).sink_to(late_sink, "late");
        env.execute("sliced lateness").unwrap();
        assert_eq!(
            handle.values(),
            vec![
                // The watermark passes 999, then 1999.
                ((3, 200), Some(999)),
                ((3, 200), Some(1_999)),
                // 300 is late within the lateness: both windows again,
                // the later one first (as Flink lists sliding windows).
                ((11, 300), Some(1_999)),
                ((11, 300), Some(999)),
                ((4, 5_000), Some(5_999)),
                ((4, 5_000), Some(6_999)),
                ((16, 20_000), Some(20_999)),
                ((16, 20_000), Some(21_999)),
            ]
        );
        assert_eq!(late_handle.values(), vec![(32, 400)]);
    });
}

/// Numbers each firing of a window with per-window state.
#[derive(Clone)]
struct NumberFirings;

impl ProcessWindowFunction<u64, (u64, i64), (i64, u32, usize), TimeWindow> for NumberFirings {
    fn process(
        &mut self,
        _: &u64,
        ctx: &mut WindowContext<'_, u64, TimeWindow>,
        elements: Vec<(u64, i64)>,
        out: &mut Collector<'_, (i64, u32, usize)>,
    ) -> anyhow::Result<()> {
        let n = ctx.window_value::<u32>("firings")?.unwrap_or(0) + 1;
        ctx.set_window_value("firings", &n)?;
        out.collect((ctx.window().start, n, elements.len()));
        Ok(())
    }
}

#[test]
fn process_window_functions_keep_state_per_window() {
    with_timeout(60, || {
        // One key, an element every 10 ms for 10 s; 5 s windows firing
        // early every second of event time.
        let script: Vec<(u64, i64)> = (0..1_000).map(|i| (i, i as i64 * 10)).collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        env.set_config("floe.runtime.batch-size", "1");
        let (sink, handle) = TaggingSink::new();
        let strategy = WatermarkStrategy::for_generator(|| EveryEvent)
            .with_timestamp_assigner(|e: &(u64, i64), _| e.1);
        env.from_source_with_watermarks(Scripted::new(script, done), strategy, "script")
            .key_by(|_: &(u64, i64)| 0u64)
            .window(TumblingWindows::event_time(Duration::from_secs(5)))
            .trigger(ContinuousEventTimeTrigger::of(Duration::from_secs(1)))
            .process(NumberFirings)
            .sink_to(sink, "firings");
        env.execute("per-window state").unwrap();
        // Each window fires at each whole second of event time after its
        // first element (Flink's continuous trigger: when the watermark,
        // one behind each element, reaches it, so two elements past it are
        // in) and at its end, numbered from 1 again in the second window:
        // its state is its own.
        let want: Vec<(i64, u32, usize)> = [0i64, 5_000]
            .into_iter()
            .flat_map(|start| {
                (1..=5u32).map(move |n| (start, n, if n < 5 { n as usize * 100 + 2 } else { 500 }))
            })
            .collect();
        assert_eq!(handle.values(), want);
    });
}
