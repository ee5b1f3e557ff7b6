//! Declared state handles in a running job: keyed and broadcast state as
//! fields of the function (no `open`, no `initialize_state`, no
//! `Option`), broadcast entries read while the same context writes keyed
//! state, and inside `apply_to_keyed_state`.
//!
//! The job counts, per user and rule, the user's amounts at or above the
//! rule's threshold; its final counts are checked against counts computed
//! directly from the input.

mod common;

use std::collections::BTreeMap;

use common::with_timeout;
use floe::prelude::*;

const USERS: u64 = 7;
const EVENTS: u64 = 3_000;

fn amount(i: u64) -> u64 {
    (i * 37) % 250
}

fn rules() -> Vec<(String, u64)> {
    vec![
        ("small".into(), 10),
        ("big".into(), 100),
        ("huge".into(), 200),
    ]
}

fn rules_descriptor() -> MapStateDescriptor<String, u64> {
    MapStateDescriptor::new("thresholds")
}

#[derive(Clone)]
struct CountAboveThresholds {
    counts: MapState<String, u64>,
    pending: ListState<u64>,
    thresholds: BroadcastState<String, u64>,
}

impl CountAboveThresholds {
    fn new() -> Self {
        CountAboveThresholds {
            counts: MapState::new("counts"),
            pending: ListState::new("pending"),
            thresholds: BroadcastState::new(rules_descriptor()),
        }
    }

    /// Counts `amount` for every rule it reaches. The broadcast entries
    /// stay borrowed across keyed reads and writes of the same context
    /// (E0502 in the first port, which had to copy the rules).
    fn count(
        &self,
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        amount: u64,
        out: &mut Collector<'_, (u64, String, u64)>,
    ) -> anyhow::Result<()> {
        let user = *ctx.current_key();
        for (rule, threshold) in self.thresholds.entries(ctx)? {
            if amount >= *threshold {
                let n = self.counts.get(ctx, rule)?.unwrap_or(0) + 1;
                self.counts.put(ctx, rule.clone(), n)?;
                out.collect((user, rule.clone(), n));
            }
        }
        Ok(())
    }
}

impl KeyedBroadcastProcessFunction<u64, (u64, u64), Vec<(String, u64)>, (u64, String, u64)>
    for CountAboveThresholds
{
    fn process_element(
        &mut self,
        (_, amount): (u64, u64),
        ctx: &mut KeyedReadOnlyContext<'_, u64>,
        out: &mut Collector<'_, (u64, String, u64)>,
    ) -> anyhow::Result<()> {
        if self.thresholds.is_empty(ctx)? {
            return Ok(self.pending.add(ctx, amount)?);
        }
        self.count(ctx, amount, out)
    }

    fn process_broadcast_element(
        &mut self,
        rules: Vec<(String, u64)>,
        ctx: &mut KeyedBroadcastContext<'_, u64>,
        out: &mut Collector<'_, (u64, String, u64)>,
    ) -> anyhow::Result<()> {
        for (rule, threshold) in rules {
            self.thresholds.put(ctx, rule, threshold)?;
        }
        // Actions that came before the rules, counted with the rules
        // read inside the visit of every key.
        let me = &*self;
        ctx.apply_to_keyed_state(&me.pending, |_, kctx| {
            for amount in me.pending.get(kctx)? {
                me.count(kctx, amount, out)?;
            }
            me.pending.clear(kctx)?;
            Ok(())
        })
    }
}

#[test]
fn declared_keyed_and_broadcast_handles_count_like_the_input() {
    let got = with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        let thresholds = env
            .from_collection(vec![rules()])
            .broadcast_with(rules_descriptor());
        let (sink, out) = CollectSink::new();
        env.from_collection((0..EVENTS).map(|i| (i % USERS, amount(i))).collect())
            .key_by(|(user, _): &(u64, u64)| *user)
            .connect(&thresholds)
            .process(CountAboveThresholds::new())
            .sink_to(sink, "counts");
        env.execute("declared-state").unwrap();
        out.snapshot()
    });

    let mut want: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for i in 0..EVENTS {
        for (rule, threshold) in rules() {
            if amount(i) >= threshold {
                *want.entry((i % USERS, rule)).or_default() += 1;
            }
        }
    }
    let mut last: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for (user, rule, n) in got {
        let slot = last.entry((user, rule)).or_default();
        *slot = (*slot).max(n);
    }
    assert_eq!(last, want);
}
