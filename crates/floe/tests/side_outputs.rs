//! Side outputs through real jobs: what process functions emit with
//! `ctx.output(&tag, value)` arrives on `stream.side_output(&tag)`, of its
//! own type, across exchanges, with timestamps, through checkpoints —
//! checked against the input.

mod common;

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
