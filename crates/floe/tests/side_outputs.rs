//! Side outputs through real jobs: what process functions (and broadcast
//! process functions) emit with `ctx.output(&tag, value)` arrives on
//! `stream.side_output(&tag)`, of its own type, across exchanges, with
//! timestamps, before the watermarks after it, through checkpoints —
//! checked against the input.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TaggingSink, sorted, with_timeout};
use floe::prelude::*;

/// Evens to the main output; odds, as text, to a side output.
#[derive(Clone)]
struct SplitOdd(OutputTag<String>);

impl ProcessFunction<u64, u64> for SplitOdd {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        if v % 2 == 0 {
            out.collect(v);
        } else {
            ctx.output(&self.0, format!("odd-{v}"))?;
        }
        Ok(())
    }
}

#[test]
fn a_process_function_splits_a_stream_by_type() {
    with_timeout(60, || {
        for p in [1u32, 3] {
            let env = StreamEnvironment::new();
            env.set_parallelism(p);
            let odd = OutputTag::<String>::new("odd");
            let (evens, evens_h) = TaggingSink::new();
            let (odds, odds_h) = TaggingSink::new();
            let (lens, lens_h) = TaggingSink::new();
            let main = env.from_sequence(0, 999).process(SplitOdd(odd.clone()));
            main.sink_to(evens, "evens");
            let side = main.side_output(&odd);
            side.sink_to(odds, "odds");
            // A second consumer of the side output, behind an exchange.
            side.rebalance()
                .map(|s: String| s.len() as u64)
                .sink_to(lens, "lengths");
            env.execute("side outputs").unwrap();
            assert_eq!(
                sorted(evens_h.values()),
                (0..1000).step_by(2).collect::<Vec<u64>>()
            );
            let expected: Vec<String> = (1..1000).step_by(2).map(|v| format!("odd-{v}")).collect();
            assert_eq!(sorted(odds_h.values()), sorted(expected.clone()), "p = {p}");
            assert_eq!(
                sorted(lens_h.values()),
                sorted(expected.iter().map(|s| s.len() as u64).collect()),
                "p = {p}"
            );
        }
    });
}

/// Per key, a timer at each record's time + 10; the timer reports the key
/// on a side output (with the timer's timestamp), records pass through.
#[derive(Clone)]
struct Expire(OutputTag<(u64, i64)>);

impl KeyedProcessFunction<u64, (u64, i64), (u64, i64)> for Expire {
    fn process_element(
        &mut self,
        r: (u64, i64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        ctx.timer_service().register_event_time_timer(r.1 + 10)?;
        out.collect(r);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        let key = *ctx.current_key();
        ctx.output(&self.0, (key, ts))?;
        Ok(())
    }
}

/// Reports each record with the timestamp it carries.
#[derive(Clone)]
struct WithTimestamp;

impl ProcessFunction<(u64, i64), (u64, i64, Option<i64>)> for WithTimestamp {
    fn process_element(
        &mut self,
        r: (u64, i64),
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (u64, i64, Option<i64>)>,
    ) -> anyhow::Result<()> {
        out.collect((r.0, r.1, ctx.timestamp()));
        Ok(())
    }
}

#[test]
fn timers_emit_to_side_outputs_with_their_timestamp() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let expired = OutputTag::<(u64, i64)>::new("expired");
        let (sink, handle) = TaggingSink::new();
        let (main_sink, main_handle) = TaggingSink::new();
        let records: Vec<(u64, i64)> = (0..200u64).map(|i| (i % 7, i as i64 * 3)).collect();
        let main = env
            .from_collection(records.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|r: &(u64, i64), _| r.1),
            )
            .key_by(|r: &(u64, i64)| r.0)
            .process(Expire(expired.clone()));
        main.sink_to(main_sink, "records");
        main.side_output(&expired)
            .process(WithTimestamp)
            .sink_to(sink, "expired");
        env.execute("timer side outputs").unwrap();
        assert_eq!(sorted(main_handle.values()), sorted(records.clone()));
        // One timer per (key, time + 10), deduplicated; each reported once,
        // carrying its own timestamp.
        let mut expected: Vec<(u64, i64, Option<i64>)> = records
            .iter()
            .map(|&(k, t)| (k, t + 10, Some(t + 10)))
            .collect();
        expected.sort();
        expected.dedup();
        assert_eq!(sorted(handle.values()), expected);
    });
}

#[test]
fn checkpoints_complete_through_side_outputs() {
    with_timeout(120, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(50));
        let odd = OutputTag::<String>::new("odd");
        let (evens, evens_h) = TaggingSink::new();
        let (odds, odds_h) = TaggingSink::new();
        let n = 20_000u64;
        let main = env
            .from_source(
                GeneratorSource::new(n, |i| i).with_rate(40_000.0),
                "numbers",
            )
            .process(SplitOdd(odd.clone()));
        main.sink_to(evens, "evens");
        main.side_output(&odd).rebalance().sink_to(odds, "odds");
        let result = env.execute("side outputs with checkpoints").unwrap();
        let completed = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .count();
        assert!(completed >= 2, "checkpoints completed: {completed}");
        assert_eq!(evens_h.values().len() as u64, n / 2);
        assert_eq!(odds_h.values().len() as u64, n / 2);
    });
}

#[test]
#[should_panic(expected = "side output 'x' is already used with type")]
fn a_tag_asked_for_with_two_types_is_refused() {
    let env = StreamEnvironment::new();
    let s = env
        .from_sequence(0, 9)
        .process(SplitOdd(OutputTag::new("x")));
    let _ = s.side_output(&OutputTag::<String>::new("x"));
    let _ = s.side_output(&OutputTag::<u64>::new("x"));
}

/// Emits `items` in chunks once `gate` has counted `need` (the broadcast
/// elements every subtask of the function has processed), so that the
/// rules are in place before the first element and the split is
/// deterministic; then, when `hold` is given, stays open until it is set.
#[derive(Clone)]
struct AfterRules<T> {
    items: Vec<T>,
    gate: Arc<AtomicUsize>,
    need: usize,
    hold: Option<Arc<AtomicBool>>,
}

struct AfterRulesReader<T> {
    items: std::vec::IntoIter<T>,
    gate: Arc<AtomicUsize>,
    need: usize,
    hold: Option<Arc<AtomicBool>>,
}

impl<T: Clone + Send + Sync + 'static> Source<T> for AfterRules<T> {
    fn is_parallel(&self) -> bool {
        false
    }

    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(AfterRulesReader {
            items: self.items.clone().into_iter(),
            gate: self.gate.clone(),
            need: self.need,
            hold: self.hold.clone(),
        }))
    }
}

impl<T: Send + 'static> SourceReader<T> for AfterRulesReader<T> {
    fn poll_next(&mut self, out: &mut Vec<T>, _: usize) -> anyhow::Result<SourceStatus> {
        if self.gate.load(Ordering::Acquire) < self.need {
            std::thread::sleep(Duration::from_millis(2));
            return Ok(SourceStatus::NothingAvailable);
        }
        // Small chunks: watermarks come between them.
        out.extend(self.items.by_ref().take(37));
        if self.items.len() > 0 {
            return Ok(SourceStatus::MoreAvailable);
        }
        match &self.hold {
            Some(hold) if !hold.load(Ordering::Acquire) => {
                std::thread::sleep(Duration::from_millis(2));
                Ok(SourceStatus::NothingAvailable)
            }
            _ => Ok(SourceStatus::Finished),
        }
    }
}

/// A watermark after every event (just below it): as many chances as
/// possible for a watermark to overtake side-output records.
struct EveryEvent;

impl<T> WatermarkGenerator<T> for EveryEvent {
    fn on_event(&mut self, _: &T, ts: i64, output: &mut WatermarkOutput) {
        output.emit_watermark(Watermark(ts - 1));
    }

    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// Divisibility rules, broadcast: a number goes to the main output once
/// per rule that divides it, as `(rule, number)`; a number no rule
/// divides goes to the `unmatched` side output. Every subtask reports each
/// rule it learns on the `learned` side output.
#[derive(Clone)]
struct Divisible {
    rules: MapStateDescriptor<String, u64>,
    state: Option<BroadcastState<String, u64>>,
    unmatched: OutputTag<u64>,
    learned: OutputTag<(u32, String)>,
    gate: Arc<AtomicUsize>,
}

impl CheckpointedFunction for Divisible {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        self.state = Some(
            ctx.operator_state_store()
                .get_broadcast_state(&self.rules)?,
        );
        Ok(())
    }
}

impl BroadcastProcessFunction<u64, (String, u64), (String, u64)> for Divisible {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ReadOnlyContext<'_>,
        out: &mut Collector<'_, (String, u64)>,
    ) -> anyhow::Result<()> {
        // The numbers carry event time 2v; the rules none.
        anyhow::ensure!(
            ctx.timestamp() == Some(v as i64 * 2),
            "{v} at {:?}",
            ctx.timestamp()
        );
        let state = self.state.as_ref().expect("initialized");
        let matched: Vec<String> = state
            .entries(ctx)?
            .filter(|(_, d)| v % **d == 0)
            .map(|(name, _)| name.clone())
            .collect();
        if matched.is_empty() {
            ctx.output(&self.unmatched, v)?;
        }
        for name in matched {
            out.collect((name, v));
        }
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        (name, d): (String, u64),
        ctx: &mut BroadcastContext<'_>,
        _: &mut Collector<'_, (String, u64)>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(ctx.timestamp().is_none(), "rule {name} has a timestamp");
        self.state
            .as_ref()
            .expect("initialized")
            .put(ctx, name.clone(), d)?;
        let subtask = ctx.task_info().subtask_index;
        ctx.output(&self.learned, (subtask, name))?;
        self.gate.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }
}

/// Reports each record with the timestamp it carries, failing on a record
/// the watermark already passed (one a side output sent late), and sets
/// `timer_fired` once a watermark made one of its event-time timers fire:
/// the source waits for it, so a side output that does not forward
/// watermarks hangs the job.
#[derive(Clone)]
struct NotLate {
    timer_fired: Arc<AtomicBool>,
}

impl KeyedProcessFunction<u64, u64, (u64, Option<i64>)> for NotLate {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, Option<i64>)>,
    ) -> anyhow::Result<()> {
        let ts = ctx
            .timestamp()
            .expect("side output records carry timestamps");
        let wm = ctx.timer_service().current_watermark();
        anyhow::ensure!(ts > wm, "record {v} at {ts} came after watermark {wm}");
        ctx.timer_service().register_event_time_timer(ts)?;
        out.collect((v, Some(ts)));
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: i64,
        _: &mut OnTimerContext<'_, u64>,
        _: &mut Collector<'_, (u64, Option<i64>)>,
    ) -> anyhow::Result<()> {
        self.timer_fired.store(true, Ordering::Release);
        Ok(())
    }
}

#[test]
fn broadcast_functions_send_unmatched_elements_to_a_side_output() {
    with_timeout(60, || {
        let rules = vec![("three".to_string(), 3u64), ("five".to_string(), 5)];
        let n = 3_000u64;
        for p in [1u32, 3] {
            let env = StreamEnvironment::new();
            env.set_parallelism(p);
            let gate = Arc::new(AtomicUsize::new(0));
            let timer_fired = Arc::new(AtomicBool::new(false));
            let descriptor = MapStateDescriptor::<String, u64>::new("rules");
            let unmatched = OutputTag::<u64>::new("unmatched");
            let learned = OutputTag::<(u32, String)>::new("learned");
            let (main_sink, main_h) = TaggingSink::new();
            let (unmatched_sink, unmatched_h) = TaggingSink::new();
            let (learned_sink, learned_h) = TaggingSink::new();
            let broadcast = env
                .from_collection(rules.clone())
                .broadcast_with(descriptor.clone());
            let numbers = env.from_source_with_watermarks(
                AfterRules {
                    items: (0..n).collect(),
                    gate: gate.clone(),
                    need: rules.len() * p as usize,
                    hold: Some(timer_fired.clone()),
                },
                WatermarkStrategy::for_generator(|| EveryEvent)
                    .with_timestamp_assigner(|v: &u64, _| *v as i64 * 2),
                "numbers",
            );
            let main = numbers.connect(&broadcast).process(Divisible {
                rules: descriptor,
                state: None,
                unmatched: unmatched.clone(),
                learned: learned.clone(),
                gate,
            });
            main.sink_to(main_sink, "matched");
            // Behind an exchange, checked for timestamps, lateness and
            // watermarks.
            main.side_output(&unmatched)
                .key_by(|v: &u64| *v % 7)
                .process(NotLate { timer_fired })
                .sink_to(unmatched_sink, "unmatched");
            main.side_output(&learned).sink_to(learned_sink, "learned");
            env.execute("broadcast side outputs").unwrap();

            let mut expected_main = Vec::new();
            let mut expected_unmatched = Vec::new();
            for v in 0..n {
                let matched: Vec<&(String, u64)> =
                    rules.iter().filter(|(_, d)| v % d == 0).collect();
                if matched.is_empty() {
                    expected_unmatched.push((v, Some(v as i64 * 2)));
                }
                expected_main.extend(matched.into_iter().map(|(name, _)| (name.clone(), v)));
            }
            assert_eq!(sorted(main_h.values()), sorted(expected_main), "p = {p}");
            assert_eq!(
                sorted(unmatched_h.values()),
                sorted(expected_unmatched),
                "p = {p}"
            );
            let expected_learned: Vec<(u32, String)> = (0..p)
                .flat_map(|s| rules.iter().map(move |(name, _)| (s, name.clone())))
                .collect();
            assert_eq!(
                sorted(learned_h.values()),
                sorted(expected_learned),
                "p = {p}"
            );
        }
    });
}

/// Keyed, with broadcast blocked keys: an event of a blocked key goes to
/// the `rejected` side output; any other passes and sets an event-time
/// timer 5 ms after it, which reports `(key, timer)` on the `expired`
/// side output.
#[derive(Clone)]
struct BlockOrExpire {
    blocked: MapStateDescriptor<u64, bool>,
    state: Option<BroadcastState<u64, bool>>,
    rejected: OutputTag<(u64, i64)>,
    expired: OutputTag<(u64, i64)>,
    gate: Arc<AtomicUsize>,
}

impl CheckpointedFunction for BlockOrExpire {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        self.state = Some(
            ctx.operator_state_store()
                .get_broadcast_state(&self.blocked)?,
        );
        Ok(())
    }
}

impl KeyedBroadcastProcessFunction<u64, (u64, i64), u64, (u64, i64)> for BlockOrExpire {
    fn process_element(
        &mut self,
        e: (u64, i64),
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        if self
            .state
            .as_ref()
            .expect("initialized")
            .contains(ctx, &e.0)?
        {
            ctx.output(&self.rejected, e)?;
            return Ok(());
        }
        ctx.timer_service().register_event_time_timer(e.1 + 5)?;
        out.collect(e);
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        key: u64,
        ctx: &mut KeyedBroadcastContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        self.state
            .as_ref()
            .expect("initialized")
            .put(ctx, key, true)?;
        self.gate.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut KeyedBroadcastOnTimerContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        let key = *ctx.current_key();
        ctx.output(&self.expired, (key, ts))?;
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }
}

#[test]
fn keyed_broadcast_functions_emit_side_outputs_from_elements_and_timers() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let blocked_keys = vec![2u64, 5];
        let gate = Arc::new(AtomicUsize::new(0));
        let descriptor = MapStateDescriptor::<u64, bool>::new("blocked");
        let rejected = OutputTag::<(u64, i64)>::new("rejected");
        let expired = OutputTag::<(u64, i64)>::new("expired");
        let (main_sink, main_h) = TaggingSink::new();
        let (rejected_sink, rejected_h) = TaggingSink::new();
        let (expired_sink, expired_h) = TaggingSink::new();
        let events: Vec<(u64, i64)> = (0..600u64).map(|i| (i % 7, i as i64 * 3)).collect();
        let blocked = env
            .from_collection(blocked_keys.clone())
            .broadcast_with(descriptor.clone());
        let main = env
            .from_source_with_watermarks(
                AfterRules {
                    items: events.clone(),
                    gate: gate.clone(),
                    need: blocked_keys.len() * 2,
                    hold: None,
                },
                WatermarkStrategy::for_generator(|| EveryEvent)
                    .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
                "events",
            )
            .key_by(|e: &(u64, i64)| e.0)
            .connect(&blocked)
            .process(BlockOrExpire {
                blocked: descriptor,
                state: None,
                rejected: rejected.clone(),
                expired: expired.clone(),
                gate,
            });
        main.sink_to(main_sink, "passed");
        main.side_output(&rejected)
            .process(WithTimestamp)
            .sink_to(rejected_sink, "rejected");
        main.side_output(&expired)
            .process(WithTimestamp)
            .sink_to(expired_sink, "expired");
        env.execute("keyed broadcast side outputs").unwrap();

        let (blocked_events, passed): (Vec<_>, Vec<_>) = events
            .iter()
            .copied()
            .partition(|(k, _)| blocked_keys.contains(k));
        assert_eq!(sorted(main_h.values()), sorted(passed.clone()));
        assert_eq!(
            sorted(rejected_h.values()),
            sorted(
                blocked_events
                    .iter()
                    .map(|&(k, t)| (k, t, Some(t)))
                    .collect()
            )
        );
        // One timer per (key, time + 5), deduplicated; each reported once,
        // carrying its own timestamp.
        let mut expected: Vec<(u64, i64, Option<i64>)> = passed
            .iter()
            .map(|&(k, t)| (k, t + 5, Some(t + 5)))
            .collect();
        expected.sort();
        expected.dedup();
        assert_eq!(sorted(expired_h.values()), expected);
    });
}

/// Numbers, checked against broadcast rules that never change the split:
/// evens to the main output, odds to a side output.
#[derive(Clone)]
struct EvenOdd(OutputTag<u64>);

impl BroadcastProcessFunction<u64, u64, u64> for EvenOdd {
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut ReadOnlyContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        if v % 2 == 0 {
            out.collect(v);
        } else {
            ctx.output(&self.0, v)?;
        }
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        _: u64,
        _: &mut BroadcastContext<'_>,
        _: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

#[test]
fn checkpoints_complete_through_broadcast_side_outputs() {
    with_timeout(120, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.enable_checkpointing(Duration::from_millis(50));
        let odd = OutputTag::<u64>::new("odd");
        let (evens, evens_h) = TaggingSink::new();
        let (odds, odds_h) = TaggingSink::new();
        let n = 20_000u64;
        let rules = env
            .from_collection(vec![1u64])
            .broadcast_with(MapStateDescriptor::<u64, u64>::new("rules"));
        let main = env
            .from_source(
                GeneratorSource::new(n, |i| i).with_rate(40_000.0),
                "numbers",
            )
            .connect(&rules)
            .process(EvenOdd(odd.clone()));
        main.sink_to(evens, "evens");
        main.side_output(&odd).rebalance().sink_to(odds, "odds");
        let result = env
            .execute("broadcast side outputs with checkpoints")
            .unwrap();
        let completed = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .count();
        assert!(completed >= 2, "checkpoints completed: {completed}");
        assert_eq!(
            sorted(evens_h.values()),
            (0..n).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(
            sorted(odds_h.values()),
            (1..n).step_by(2).collect::<Vec<_>>()
        );
    });
}
