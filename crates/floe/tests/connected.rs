//! Connected streams (Flink's `ConnectedStreams`) through real jobs:
//! co-map and co-flat-map over both inputs and their partitionings, a
//! co-process function with side outputs, the watermark of a two-input
//! operator (the minimum of its inputs'), and a keyed co-process
//! enrichment join (keyed state and event-time timers for either input's
//! records) checked against an independent model — failure-free at two
//! parallelisms, after an injected failure with checkpoints, and across a
//! savepoint restored at another parallelism; on the heap backend and,
//! with the `rocksdb` feature, on RocksDB.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{sorted, splitmix, with_timeout};
use floe::connectors::CollectedRecords;
use floe::prelude::*;
use floe::runtime::JobError;
use floe::runtime::job_manager::JobClient;
use floe::runtime::restart::RestartStrategy;
use serde::{Deserialize, Serialize};

#[test]
fn co_map_and_co_flat_map_see_every_record_of_both_inputs() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_parallelism(3);
        let numbers = env.from_collection((0..500u64).collect());
        let words = env.from_collection(
            (0..200u64)
                .map(|i| format!("w{i} x{i}"))
                .collect::<Vec<_>>(),
        );
        let (sink, mapped) = CollectSink::new();
        numbers
            .connect(&words)
            .map(|n| format!("n{n}"), |w: String| format!("s{w}"))
            .sink_to(sink, "mapped");
        let (sink, flat) = CollectSink::new();
        numbers
            .connect(&words)
            .flat_map(
                |n, out: &mut Collector<'_, String>| {
                    for _ in 0..n % 3 {
                        out.collect(format!("n{n}"));
                    }
                },
                |w: String, out: &mut Collector<'_, String>| {
                    for part in w.split_whitespace() {
                        out.collect(part.to_string());
                    }
                },
            )
            .sink_to(sink, "flat");
        // A broadcast input reaches every subtask of the co-operator.
        let (sink, broadcast) = CollectSink::new();
        numbers
            .connect(&words.broadcast())
            .flat_map(
                |_, _: &mut Collector<'_, String>| {},
                |w: String, out: &mut Collector<'_, String>| out.collect(w),
            )
            .sink_to(sink, "broadcast");
        env.execute("co-map").unwrap();

        let mut want: Vec<String> = (0..500u64).map(|n| format!("n{n}")).collect();
        want.extend((0..200u64).map(|i| format!("sw{i} x{i}")));
        assert_eq!(sorted(mapped.snapshot()), sorted(want));

        let mut want: Vec<String> = (0..500u64)
            .flat_map(|n| std::iter::repeat_n(format!("n{n}"), (n % 3) as usize))
            .collect();
        want.extend((0..200u64).flat_map(|i| [format!("w{i}"), format!("x{i}")]));
        assert_eq!(sorted(flat.snapshot()), sorted(want));

        let want: Vec<String> = (0..200u64)
            .flat_map(|i| std::iter::repeat_n(format!("w{i} x{i}"), 3))
            .collect();
        assert_eq!(sorted(broadcast.snapshot()), sorted(want));
    });
}

/// Counts each input's records in operator state, emits the counts at the
/// end, and sends odd numbers to a side output.
#[derive(Clone, Default)]
struct CountBoth {
    firsts: u64,
    seconds: u64,
}

const ODD: &str = "odd";

impl CoProcessFunction<u64, String, String> for CountBoth {
    fn process_element1(
        &mut self,
        n: u64,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, String>,
    ) -> anyhow::Result<()> {
        self.firsts += 1;
        if n % 2 == 1 {
            ctx.output(&OutputTag::<u64>::new(ODD), n)?;
        } else {
            out.collect(format!("even {n}"));
        }
        Ok(())
    }

    fn process_element2(
        &mut self,
        s: String,
        _: &mut ProcessContext<'_>,
        out: &mut Collector<'_, String>,
    ) -> anyhow::Result<()> {
        self.seconds += 1;
        out.collect(s);
        Ok(())
    }

    fn close(&mut self, out: &mut Collector<'_, String>) -> anyhow::Result<()> {
        out.collect(format!("counted {} {}", self.firsts, self.seconds));
        Ok(())
    }
}

#[test]
fn a_co_process_function_sees_both_inputs_and_emits_side_outputs() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        let numbers = env.from_collection((0..100u64).collect());
        let words = env.from_collection(vec!["a".to_string(), "b".to_string()]);
        let processed = numbers.connect(&words).process(CountBoth::default());
        let (sink, main) = CollectSink::new();
        processed.sink_to(sink, "main");
        let (sink, odd) = CollectSink::new();
        processed
            .side_output(&OutputTag::<u64>::new(ODD))
            .sink_to(sink, "odd");
        env.execute("co-process").unwrap();
        let mut want: Vec<String> = (0..100u64)
            .filter(|n| n % 2 == 0)
            .map(|n| format!("even {n}"))
            .collect();
        want.extend(["a".into(), "b".into(), "counted 100 2".into()]);
        assert_eq!(sorted(main.snapshot()), sorted(want));
        assert_eq!(
            sorted(odd.snapshot()),
            (0..100u64).filter(|n| n % 2 == 1).collect::<Vec<_>>()
        );
    });
}

/// Records, for every first-input record, the watermark the operator had
/// and the highest second-input timestamp it had received (and the other
/// way round).
#[derive(Clone)]
struct WatchWatermarks {
    /// Highest timestamp received on each input.
    seen: [i64; 2],
    violations: Arc<AtomicU64>,
    highest_watermark: Arc<AtomicI64>,
}

impl WatchWatermarks {
    fn check(&mut self, input: usize, ctx: &mut KeyedContext<'_, u64>) {
        let ts = ctx.timestamp().expect("timestamped");
        self.seen[input] = self.seen[input].max(ts);
        let wm = ctx.timer_service().current_watermark();
        // Neither input's watermark can be past what it sent: an operator
        // whose watermark reaches it took the other input's alone.
        if self.seen.iter().all(|s| *s > i64::MIN) && wm >= self.seen[0].min(self.seen[1]) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        self.highest_watermark.fetch_max(wm, Ordering::Relaxed);
    }
}

impl KeyedCoProcessFunction<u64, i64, i64, ()> for WatchWatermarks {
    fn process_element1(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, ()>,
    ) -> anyhow::Result<()> {
        self.check(0, ctx);
        Ok(())
    }

    fn process_element2(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, ()>,
    ) -> anyhow::Result<()> {
        self.check(1, ctx);
        Ok(())
    }
}

/// A fast input far ahead in event time and a slow one that outlasts it:
/// the operator's watermark stays behind what the slow one has delivered,
/// and still advances.
#[test]
fn the_watermark_of_a_two_input_operator_is_the_minimum_of_both_inputs() {
    with_timeout(60, || {
        let env = StreamEnvironment::new();
        env.set_config("pipeline.auto-watermark-interval", "5ms");
        let strategy = || {
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|t: &i64, _| *t)
        };
        let fast = env.from_source_with_watermarks(
            GeneratorSource::new(2_000, |i| 1_000_000 + i as i64).with_rate(4_000.0),
            strategy(),
            "fast",
        );
        let slow = env.from_source_with_watermarks(
            GeneratorSource::new(100, |i| i as i64 * 10).with_rate(100.0),
            strategy(),
            "slow",
        );
        let violations = Arc::new(AtomicU64::new(0));
        let highest = Arc::new(AtomicI64::new(i64::MIN));
        for (a, b) in [(&fast, &slow), (&slow, &fast)] {
            a.connect(b)
                .key_by(|_: &i64| 0u64, |_: &i64| 0u64)
                .process(WatchWatermarks {
                    seen: [i64::MIN, i64::MIN],
                    violations: violations.clone(),
                    highest_watermark: highest.clone(),
                })
                .sink_to(CollectSink::new().0, "discard");
        }
        env.execute("two-input watermarks").unwrap();
        assert_eq!(violations.load(Ordering::Relaxed), 0);
        let highest = highest.load(Ordering::Relaxed);
        assert!(
            highest > 100 && highest < 1_000,
            "the watermark advanced with the slow input: {highest}"
        );
    });
}

/// Sets a processing-time timer for every record: due now for the first
/// input's, an hour ahead for the second's.
#[derive(Clone)]
struct ProcessingTimers;

impl KeyedCoProcessFunction<u64, u64, u64, (u64, i64)> for ProcessingTimers {
    fn process_element1(
        &mut self,
        _: u64,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        let mut timers = ctx.timer_service();
        let now = timers.current_processing_time();
        timers.register_processing_time_timer(now)?;
        Ok(())
    }

    fn process_element2(
        &mut self,
        _: u64,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        let mut timers = ctx.timer_service();
        let later = timers.current_processing_time() + 3_600_000;
        timers.register_processing_time_timer(later)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, (u64, i64)>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(ctx.time_domain() == TimeDomain::ProcessingTime);
        out.collect((*ctx.current_key(), ts));
        Ok(())
    }
}

/// On a clock that stands still: the first input's timers are due and
/// fire once each, for their key; the second input's are not and never
/// do (dropped at the end of input, as in a keyed process function).
#[test]
fn keyed_co_process_functions_have_processing_time_timers() {
    with_timeout(60, || {
        let clock = ManualClock::new(5_000_000);
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.set_processing_clock(ProcessingClock::Manual(clock));
        let (sink, fired) = CollectSink::new();
        env.from_collection((0..20u64).collect())
            .key_by(|k: &u64| *k)
            .connect(
                &env.from_collection((10..30u64).collect())
                    .key_by(|k: &u64| *k),
            )
            .process(ProcessingTimers)
            .sink_to(sink, "fired");
        env.execute("processing-time timers").unwrap();
        let want: Vec<(u64, i64)> = (0..20).map(|k| (k, 5_000_000)).collect();
        assert_eq!(sorted(fired.snapshot()), want);
    });
}

// ---------------------------------------------------------------------
// The enrichment join.

/// An order of a customer (first input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    customer: u64,
    id: u64,
    ts: i64,
}

/// A new version of a customer's profile (second input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProfileUpdate {
    customer: u64,
    version: u64,
    ts: i64,
}

/// An order with the customer's profile version valid at the order's
/// time, and how many orders of that customer were emitted before
/// (keyed state: a replayed or lost update would shift it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Enriched {
    customer: u64,
    order: u64,
    version: u64,
    seq: u64,
}

const CUSTOMERS: u64 = 60;
const ORDERS: u64 = 12_000;
const UPDATES: u64 = 3_000;
/// Orders of customers without a profile yet leave here.
const NO_PROFILE: &str = "no-profile";

fn order(i: u64) -> Order {
    Order {
        customer: splitmix(i) % CUSTOMERS,
        id: i,
        ts: i as i64 * 10,
    }
}

fn update(i: u64) -> ProfileUpdate {
    ProfileUpdate {
        customer: splitmix(1_000_000 + i) % CUSTOMERS,
        version: i,
        ts: i as i64 * 37 + 500,
    }
}

/// Enriches each order with the profile version valid at its timestamp
/// once the watermark (of both inputs) passed it: orders wait in keyed
/// state with an event-time timer, profile updates are kept until a newer
/// one is due.
#[derive(Clone, Default)]
struct Enrich {
    pending: Option<MapState<i64, Vec<u64>>>,
    profiles: Option<MapState<i64, u64>>,
    emitted: Option<ValueState<u64>>,
}

impl KeyedCoProcessFunction<u64, Order, ProfileUpdate, Enriched> for Enrich {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.pending = Some(ctx.get_map_state(&MapStateDescriptor::new("pending-orders"))?);
        self.profiles = Some(ctx.get_map_state(&MapStateDescriptor::new("profiles"))?);
        self.emitted = Some(ctx.get_state(&ValueStateDescriptor::new("emitted"))?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        o: Order,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(ctx.timestamp() == Some(o.ts), "the record's timestamp");
        anyhow::ensure!(*ctx.current_key() == o.customer, "the record's key");
        let pending = self.pending.as_ref().unwrap();
        let mut ids = pending.get(ctx, &o.ts)?.unwrap_or_default();
        ids.push(o.id);
        pending.put(ctx, o.ts, ids)?;
        let mut timers = ctx.timer_service();
        timers.register_event_time_timer(o.ts)?;
        // A timer set and deleted again never fires.
        if o.id % 5 == 0 {
            timers.register_event_time_timer(o.ts + 1)?;
            timers.delete_event_time_timer(o.ts + 1)?;
        }
        Ok(())
    }

    fn process_element2(
        &mut self,
        u: ProfileUpdate,
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(ctx.timestamp() == Some(u.ts), "the record's timestamp");
        self.profiles.as_ref().unwrap().put(ctx, u.ts, u.version)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(ctx.time_domain() == TimeDomain::EventTime);
        anyhow::ensure!(ctx.timer_service().current_watermark() >= ts);
        let pending = self.pending.as_ref().unwrap();
        let Some(mut ids) = pending.get(ctx, &ts)? else {
            anyhow::bail!("a timer at {ts} without orders: a deleted timer fired");
        };
        pending.remove(ctx, &ts)?;
        ids.sort_unstable();
        let profiles = self.profiles.as_ref().unwrap();
        // The latest update at or before the order; older ones are no
        // longer needed (later orders have later timestamps).
        let due: Vec<(i64, u64)> = profiles.entries(ctx)?.filter(|(t, _)| *t <= ts).collect();
        let latest = due.iter().max_by_key(|(t, _)| *t).copied();
        for (t, _) in &due {
            if Some(*t) != latest.map(|l| l.0) {
                profiles.remove(ctx, t)?;
            }
        }
        let customer = *ctx.current_key();
        let emitted = self.emitted.as_ref().unwrap();
        let mut seq = emitted.value(ctx)?.unwrap_or(0);
        for id in ids {
            match latest {
                Some((_, version)) => {
                    seq += 1;
                    out.collect(Enriched {
                        customer,
                        order: id,
                        version,
                        seq,
                    });
                }
                None => ctx.output(&OutputTag::<u64>::new(NO_PROFILE), id)?,
            }
        }
        emitted.update(ctx, seq)?;
        Ok(())
    }
}

/// The join computed directly: per order, the latest update of its
/// customer at or before it; `seq` counts the customer's enriched orders
/// in time order. Also the orders with no profile yet.
fn model() -> (BTreeSet<Enriched>, BTreeSet<u64>) {
    let mut updates: BTreeMap<u64, Vec<ProfileUpdate>> = BTreeMap::new();
    for u in (0..UPDATES).map(update) {
        updates.entry(u.customer).or_default().push(u);
    }
    let mut seqs: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut enriched, mut none) = (BTreeSet::new(), BTreeSet::new());
    for o in (0..ORDERS).map(order) {
        let latest = updates
            .get(&o.customer)
            .into_iter()
            .flatten()
            .filter(|u| u.ts <= o.ts)
            .max_by_key(|u| u.ts);
        match latest {
            Some(u) => {
                let seq = seqs.entry(o.customer).or_insert(0);
                *seq += 1;
                enriched.insert(Enriched {
                    customer: o.customer,
                    order: o.id,
                    version: u.version,
                    seq: *seq,
                });
            }
            None => {
                none.insert(o.id);
            }
        }
    }
    (enriched, none)
}

/// How a run of the join is set up.
struct JoinRun<'a> {
    parallelism: u32,
    backend: &'a str,
    /// Records per second of the order source (the update source keeps
    /// pace in event time).
    rate: Option<f64>,
    checkpoint_dir: Option<&'a std::path::Path>,
    restore: Option<&'a str>,
    /// Panic once after this many order records, once a checkpoint
    /// completed.
    fail_after: Option<u64>,
}

impl Default for JoinRun<'_> {
    fn default() -> Self {
        JoinRun {
            parallelism: 2,
            backend: "hashmap",
            rate: None,
            checkpoint_dir: None,
            restore: None,
            fail_after: None,
        }
    }
}

/// The enrichment join with a failure injected once.
#[derive(Clone)]
struct Flaky {
    inner: Enrich,
    fail_after: u64,
    seen: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
}

impl KeyedCoProcessFunction<u64, Order, ProfileUpdate, Enriched> for Flaky {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.inner.open(ctx)
    }

    fn process_element1(
        &mut self,
        o: Order,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        if self.seen.fetch_add(1, Ordering::Relaxed) >= self.fail_after
            && self.completed.load(Ordering::Relaxed) >= 2
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            panic!("injected failure");
        }
        self.inner.process_element1(o, ctx, out)
    }

    fn process_element2(
        &mut self,
        u: ProfileUpdate,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        self.inner.process_element2(u, ctx, out)
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, Enriched>,
    ) -> anyhow::Result<()> {
        self.inner.on_timer(ts, ctx, out)
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }
}

impl CheckpointListener for Flaky {
    fn notify_checkpoint_complete(&mut self, id: u64) -> anyhow::Result<()> {
        self.completed.fetch_max(id, Ordering::Relaxed);
        Ok(())
    }
}

/// What a run emitted.
struct JoinOutput {
    enriched: CollectedRecords<Enriched>,
    no_profile: CollectedRecords<u64>,
    failed: Arc<AtomicBool>,
}

fn start_join(run: JoinRun<'_>) -> (Result<JobClient, JobError>, JoinOutput) {
    let env = StreamEnvironment::new();
    env.set_parallelism(run.parallelism);
    env.set_config("state.backend.type", run.backend);
    env.set_config("pipeline.auto-watermark-interval", "10ms");
    if let Some(dir) = run.checkpoint_dir {
        env.enable_checkpointing(Duration::from_millis(50));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.join("chk").display()),
        );
        env.set_config(
            "state.savepoints.dir",
            &format!("file://{}", dir.join("savepoints").display()),
        );
        env.set_config(
            "state.backend.rocksdb.localdir",
            &dir.join("rocksdb").display().to_string(),
        );
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(10),
        });
    }
    if let Some(sp) = run.restore {
        env.set_restore_from_savepoint(sp, false);
    }
    let mut orders = GeneratorSource::new(ORDERS, order);
    let mut updates = GeneratorSource::new(UPDATES, update);
    if let Some(rate) = run.rate {
        // Both cover the same stretch of event time in the same time.
        orders = orders.with_rate(rate);
        updates = updates.with_rate(rate * UPDATES as f64 / ORDERS as f64);
    }
    let orders = env
        .from_source_with_watermarks(
            orders,
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|o: &Order, _| o.ts),
            "orders",
        )
        .uid("orders")
        .set_parallelism(1);
    let updates = env
        .from_source_with_watermarks(
            updates,
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|u: &ProfileUpdate, _| u.ts),
            "updates",
        )
        .uid("updates")
        .set_parallelism(1);
    let failed = Arc::new(AtomicBool::new(run.fail_after.is_none()));
    let function = Flaky {
        inner: Enrich::default(),
        fail_after: run.fail_after.unwrap_or(u64::MAX),
        seen: Arc::new(AtomicU64::new(0)),
        failed: failed.clone(),
        completed: Arc::new(AtomicU64::new(0)),
    };
    let joined = orders
        .key_by(|o: &Order| o.customer)
        .connect(&updates.key_by(|u: &ProfileUpdate| u.customer))
        .process(function)
        .uid("enrich");
    let (sink, enriched) = CollectSink::new();
    joined.sink_to(sink, "enriched");
    let (sink, no_profile) = CollectSink::new();
    joined
        .side_output(&OutputTag::<u64>::new(NO_PROFILE))
        .sink_to(sink, "no-profile");
    (
        env.execute_async("enrichment"),
        JoinOutput {
            enriched,
            no_profile,
            failed,
        },
    )
}

/// Distinct records: a restarted or restored run repeats what it emitted
/// after its snapshot (the collecting sink is not transactional), but
/// never anything else.
fn distinct<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}

/// Fails with what is missing and what is extra (a few of each), not with
/// thousands of records.
fn assert_same<T: Ord + std::fmt::Debug>(got: &BTreeSet<T>, want: &BTreeSet<T>, what: &str) {
    let missing: Vec<&T> = want.difference(got).take(5).collect();
    let extra: Vec<&T> = got.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} missing, e.g. {missing:?}; {} extra, e.g. {extra:?}",
        want.difference(got).count(),
        got.difference(want).count()
    );
}

fn join_matches_the_model(backend: &'static str) {
    let (want, want_none) = model();
    assert!(want.len() > ORDERS as usize / 2 && !want_none.is_empty());
    for parallelism in [1, 3] {
        let (client, out) = start_join(JoinRun {
            parallelism,
            backend,
            ..JoinRun::default()
        });
        client.unwrap().wait().expect("the join finishes");
        let got = out.enriched.snapshot();
        assert_eq!(got.len(), want.len(), "p = {parallelism}: no duplicates");
        assert_same(&distinct(&got), &want, &format!("p = {parallelism}"));
        assert_same(
            &distinct(&out.no_profile.snapshot()),
            &want_none,
            "no profile",
        );
    }
}

#[test]
fn a_keyed_co_process_enrichment_join_equals_the_model() {
    with_timeout(120, || join_matches_the_model("hashmap"));
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_keyed_co_process_enrichment_join_equals_the_model_on_rocksdb() {
    with_timeout(240, || join_matches_the_model("rocksdb"));
}

fn recovers_exactly_once(backend: &'static str) {
    let (want, want_none) = model();
    let dir = tempfile::tempdir().unwrap();
    let (client, out) = start_join(JoinRun {
        backend,
        rate: Some(8_000.0),
        checkpoint_dir: Some(dir.path()),
        fail_after: Some(ORDERS / 3),
        ..JoinRun::default()
    });
    let result = client
        .unwrap()
        .wait()
        .expect("the join recovers and finishes");
    assert!(
        out.failed.load(Ordering::Relaxed),
        "the failure was injected"
    );
    assert_eq!(result.restarts, 1);
    let got = out.enriched.snapshot();
    // Restored from a checkpoint, not replayed from the start.
    assert!(got.len() < 2 * want.len(), "{} records", got.len());
    assert_same(&distinct(&got), &want, "after recovery");
    assert_same(
        &distinct(&out.no_profile.snapshot()),
        &want_none,
        "no profile",
    );
}

#[test]
fn the_join_recovers_from_a_failure_with_exactly_once_state() {
    with_timeout(120, || recovers_exactly_once("hashmap"));
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_join_recovers_from_a_failure_with_exactly_once_state_on_rocksdb() {
    with_timeout(240, || recovers_exactly_once("rocksdb"));
}

fn rescales_through_a_savepoint(backends: [&'static str; 2]) {
    let (want, want_none) = model();
    let dir = tempfile::tempdir().unwrap();
    let (client, first) = start_join(JoinRun {
        parallelism: 2,
        backend: backends[0],
        rate: Some(6_000.0),
        checkpoint_dir: Some(dir.path()),
        ..JoinRun::default()
    });
    let client = client.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.enriched.len() < want.len() / 4 {
        assert!(Instant::now() < deadline, "the join made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
        .expect("trigger");
    let savepoint = loop {
        match control.savepoint_status(&trigger).expect("known trigger") {
            SavepointStatus::InProgress => std::thread::sleep(Duration::from_millis(20)),
            SavepointStatus::Completed { location } => break location,
            other => panic!("savepoint failed: {other:?}"),
        }
    };
    assert!(matches!(client.wait(), Err(JobError::Cancelled { .. })));
    let before = first.enriched.snapshot();
    assert!(before.len() < want.len(), "cancelled before the end");

    let (client, second) = start_join(JoinRun {
        parallelism: 3,
        backend: backends[1],
        checkpoint_dir: Some(dir.path()),
        restore: Some(&savepoint),
        ..JoinRun::default()
    });
    client.unwrap().wait().expect("the restored join finishes");
    let after = second.enriched.snapshot();
    // The restored run continued: it did not emit the first orders again.
    assert!(
        after.len() < want.len(),
        "{} records after restore",
        after.len()
    );
    let mut all = before;
    all.extend(after);
    assert_same(&distinct(&all), &want, "across the savepoint");
    let mut none = first.no_profile.snapshot();
    none.extend(second.no_profile.snapshot());
    assert_same(&distinct(&none), &want_none, "no profile");
}

#[test]
fn the_join_rescales_from_a_savepoint() {
    with_timeout(120, || rescales_through_a_savepoint(["hashmap", "hashmap"]));
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_join_rescales_from_a_savepoint_on_rocksdb() {
    with_timeout(240, || rescales_through_a_savepoint(["rocksdb", "rocksdb"]));
}
