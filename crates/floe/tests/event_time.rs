//! Record timestamps through real jobs: assigned per split at a source or
//! on any stream, carried across chains, rebalancing, key_by exchanges and
//! user functions, and visible as `ctx.timestamp()` — checked against the
//! timestamps computed independently from the input.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TaggingSink, sorted, splitmix};
use floe::prelude::*;

/// `(user, event time)`: event times jump around within a few seconds.
fn event(i: u64) -> (u64, i64) {
    let r = splitmix(i);
    (
        r % 17,
        1_700_000_000_000 + (i as i64) * 10 - (r % 3_000) as i64,
    )
}

/// Emits `(user, its timestamp as the function saw it)`.
#[derive(Clone)]
struct SeeTimestamp;

impl KeyedProcessFunction<u64, (u64, i64), (u64, i64, Option<i64>)> for SeeTimestamp {
    fn process_element(
        &mut self,
        (user, t): (u64, i64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64, Option<i64>)>,
    ) -> anyhow::Result<()> {
        out.collect((user, t, ctx.timestamp()));
        Ok(())
    }
}

#[test]
fn timestamps_assigned_at_the_source_reach_keyed_functions() {
    common::with_timeout(120, || {
        for p in [1u32, 3] {
            let n = 20_000;
            let env = StreamEnvironment::new();
            env.set_parallelism(p);
            let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(3))
                .with_timestamp_assigner(|e: &(u64, i64), _| e.1);
            let (sink, handle) = TaggingSink::new();
            env.from_source_with_watermarks(GeneratorSource::new(n, event), strategy, "events")
                // A chained map keeps each record's timestamp.
                .map(|(u, t)| (u, t))
                .key_by(|e: &(u64, i64)| e.0)
                .process(SeeTimestamp)
                .sink_to(sink, "collect");
            env.execute("timestamps at the source").unwrap();
            let got = sorted(handle.values());
            let expected = sorted((0..n).map(event).map(|(u, t)| (u, t, Some(t))).collect());
            assert_eq!(got, expected, "parallelism {p}");
        }
    });
}

#[test]
fn assign_timestamps_on_a_stream_replaces_them_and_flat_map_outputs_inherit_them() {
    common::with_timeout(120, || {
        let n = 5_000u64;
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let (sink, handle) = TaggingSink::new();
        env.from_sequence(0, n - 1)
            .map(event)
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|e: &(u64, i64), _| e.1 + 1),
            )
            .rebalance()
            // Every output of a record carries the record's timestamp.
            .flat_map(|(u, t): (u64, i64), out: &mut Collector<'_, (u64, i64)>| {
                out.collect((u, t));
                out.collect((u + 100, t));
            })
            .key_by(|e: &(u64, i64)| e.0)
            .process(SeeTimestamp)
            .sink_to(sink, "collect");
        env.execute("assigned timestamps").unwrap();
        let got = sorted(handle.values());
        let mut expected = Vec::new();
        for (u, t) in (0..n).map(event) {
            expected.push((u, t, Some(t + 1)));
            expected.push((u + 100, t, Some(t + 1)));
        }
        assert_eq!(got, sorted(expected));
    });
}

#[test]
fn a_stream_without_event_time_has_no_timestamps() {
    common::with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let (sink, handle) = TaggingSink::new();
        env.from_sequence(0, 999)
            .map(event)
            .key_by(|e: &(u64, i64)| e.0)
            .process(SeeTimestamp)
            .sink_to(sink, "collect");
        env.execute("no event time").unwrap();
        let by_ts: BTreeMap<Option<i64>, usize> =
            handle
                .values()
                .into_iter()
                .fold(BTreeMap::new(), |mut m, (_, _, ts)| {
                    *m.entry(ts).or_default() += 1;
                    m
                });
        assert_eq!(by_ts, BTreeMap::from([(None, 1000)]));
    });
}
