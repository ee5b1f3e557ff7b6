//! Processing-time and event-time timers in one keyed function:
//! `floe run delayed-echo [--events N] [--keys K] [--delay <duration>]
//! [--window <duration>] [--rate <events/s>] [--output <dir>] [-p N]`.
//!
//! Events are generated (event `i` has key `mix(i) mod K` and an event time
//! 100 ms after event `i - 1`'s, up to 299 ms out of order). Per key, the
//! function
//!
//! - echoes each event a processing-time delay after the source made it: a
//!   processing-time timer per due time, the ids waiting for it in a
//!   `MapState`; its `on_timer` prints `<key> echo <id>`;
//! - counts events per tumbling event-time window: a `MapState` of counts
//!   and an event-time timer at each window's last millisecond; its
//!   `on_timer` prints `<key> window <start ms> <count>`.
//!
//! The output is the same on every run however fast it goes: every id is
//! echoed once, every window's count printed once. Processing-time timers
//! not yet due when the input ends are dropped (as in Flink), so the source
//! stamps each event with the time it is due back and, at the end of its
//! input, waits until `--delay` has passed since its last event and since
//! it opened (a restored run's timers were set before that) before it
//! finishes.

use std::time::Duration;

use clap::Parser;
use floe::JobArgs;
use floe::prelude::*;
use serde::{Deserialize, Serialize};

/// The example's own arguments.
#[derive(Debug, Parser)]
#[command(
    name = "delayed-echo",
    about = "Echoes events after a processing-time delay; counts them per event-time window"
)]
pub struct Args {
    /// How many events to generate.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Over how many keys.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// How long after the source made it an event comes back, in
    /// processing time (Flink's duration notation: `200 ms`, `1s`).
    #[arg(long, value_parser = parse_duration, default_value = "200 ms")]
    pub delay: Duration,
    /// The length of the event-time windows events are counted in.
    #[arg(long, value_parser = parse_duration, default_value = "10 s")]
    pub window: Duration,
    /// Generate at most this many events per second (all subtasks).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the echoes and counts into part files in this directory
    /// (exactly once with checkpointing) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    floe::core::parse_duration(s).map_err(|e| e.to_string())
}

/// Event time of event 0.
const START_MS: i64 = 1_700_000_000_000;
/// Event time between two events.
const STEP_MS: i64 = 100;
/// How far out of order an event may be (and the watermark allows).
const DISORDER_MS: i64 = 300;

/// One generated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its index.
    pub id: u64,
    /// Its key.
    pub key: u64,
    /// Event time, ms since the epoch.
    pub time: i64,
    /// Processing time (ms since the epoch) at which it is echoed.
    pub echo_at: i64,
}

/// Event `i` of a run over `keys` keys: its key and event time (what the
/// output depends on; the echo time is the source's).
pub fn event(i: u64, keys: u64) -> (u64, i64) {
    let r = mix(i);
    let jitter = ((r >> 32) % DISORDER_MS as u64) as i64;
    (r % keys.max(1), START_MS + i as i64 * STEP_MS - jitter)
}

/// SplitMix64's finalizer: a fixed, well-spread function of the index.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The start of the window of `window_ms` that `time` falls in.
fn window_start(time: i64, window_ms: i64) -> i64 {
    time - time.rem_euclid(window_ms)
}

/// The output of a run, computed without Floe (for tests): `<key> echo
/// <id>` for every event and `<key> window <start> <count>` for every
/// window of every key, sorted.
pub fn expected_output(events: u64, keys: u64, window: Duration) -> Vec<String> {
    let window_ms = duration_ms(window);
    let mut counts: std::collections::BTreeMap<(u64, i64), u64> = Default::default();
    let mut out = Vec::new();
    for i in 0..events {
        let (key, time) = event(i, keys);
        out.push(format!("{key} echo {i}"));
        *counts
            .entry((key, window_start(time, window_ms)))
            .or_default() += 1;
    }
    for ((key, start), n) in counts {
        out.push(format!("{key} window {start} {n}"));
    }
    out.sort();
    out
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4).max(1)
}

/// Per key: the ids waiting for each echo time, and the counts of the open
/// windows.
#[derive(Clone)]
pub struct DelayedEcho {
    window_ms: i64,
    waiting: MapState<i64, Vec<u64>>,
    counts: MapState<i64, u64>,
}

impl DelayedEcho {
    /// Counting in windows of `window`.
    pub fn new(window: Duration) -> Self {
        DelayedEcho {
            window_ms: duration_ms(window),
            waiting: MapState::new("waiting"),
            counts: MapState::new("window-counts"),
        }
    }
}

impl KeyedProcessFunction<u64, Event, (u64, String)> for DelayedEcho {
    fn process_element(
        &mut self,
        e: Event,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        let waiting = &self.waiting;
        let mut ids = waiting.get(ctx, &e.echo_at)?.unwrap_or_default();
        ids.push(e.id);
        waiting.put(ctx, e.echo_at, ids)?;
        ctx.timer_service()
            .register_processing_time_timer(e.echo_at)?;

        let start = window_start(e.time, self.window_ms);
        let last = start + self.window_ms - 1;
        if last <= ctx.timer_service().current_watermark() {
            // Its window was already counted: late, counted nowhere (the
            // generated events are never this late).
            return Ok(());
        }
        let counts = &self.counts;
        let n = counts.get(ctx, &start)?.unwrap_or(0);
        counts.put(ctx, start, n + 1)?;
        ctx.timer_service().register_event_time_timer(last)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        out: &mut Collector<'_, (u64, String)>,
    ) -> anyhow::Result<()> {
        let key = *ctx.current_key();
        match ctx.time_domain() {
            TimeDomain::ProcessingTime => {
                let waiting = &self.waiting;
                for id in waiting.get(ctx, &timestamp)?.unwrap_or_default() {
                    out.collect((key, format!("echo {id}")));
                }
                waiting.remove(ctx, &timestamp)?;
            }
            TimeDomain::EventTime => {
                let start = timestamp + 1 - self.window_ms;
                let counts = &self.counts;
                if let Some(n) = counts.get(ctx, &start)? {
                    out.collect((key, format!("window {start} {n}")));
                    counts.remove(ctx, &start)?;
                }
            }
        }
        Ok(())
    }
}

/// The generator, stamping each event with its echo time, and finishing
/// only once the echoes of its events (and of a restored run's) are due.
struct EchoSource {
    events: GeneratorSource<Event>,
    delay_ms: i64,
}

struct EchoReader {
    inner: Box<dyn SourceReader<Event>>,
    delay_ms: i64,
    /// When the reader opened, or made its last event, if later.
    last: i64,
}

impl Source<Event> for EchoSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(EchoReader {
            inner: self.events.create_reader(info)?,
            delay_ms: self.delay_ms,
            last: i64::MIN,
        }))
    }
}

impl SourceReader<Event> for EchoReader {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.last = ProcessingClock::System.now_ms();
        self.inner.open(info)
    }

    fn poll_next(&mut self, out: &mut Vec<Event>, max: usize) -> anyhow::Result<SourceStatus> {
        let from = out.len();
        let status = self.inner.poll_next(out, max)?;
        if out.len() > from {
            self.last = ProcessingClock::System.now_ms();
        }
        if status != SourceStatus::Finished {
            return Ok(status);
        }
        // Every echo this source's events (or the restored timers) wait
        // for is due by then.
        let left = self.last.saturating_add(self.delay_ms) - ProcessingClock::System.now_ms();
        if left < 0 {
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(left.clamp(1, 50) as u64));
        Ok(SourceStatus::NothingAvailable)
    }

    fn current_split(&self) -> floe::api::SplitId {
        self.inner.current_split()
    }

    fn finished_splits(&mut self, out: &mut Vec<floe::api::SplitId>) {
        self.inner.finished_splits(out);
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        self.inner.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.inner.restore_state(state)
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        self.inner.restore_splits(states)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.inner.close()
    }
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let opts: Args = super::parse_job_args("delayed-echo", &args);
    let env = StreamEnvironment::from_job_args(&args);
    let keys = opts.keys;
    let delay_ms = duration_ms(opts.delay);
    let mut events = GeneratorSource::new(opts.events, move |i| {
        let (key, time) = event(i, keys);
        Event {
            id: i,
            key,
            time,
            echo_at: ProcessingClock::System.now_ms().saturating_add(delay_ms),
        }
    });
    if let Some(rate) = opts.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be positive, got {rate}");
        events = events.with_rate(rate);
    }
    let strategy =
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(DISORDER_MS as u64))
            .with_timestamp_assigner(|e: &Event, _| e.time);
    let output = env
        .from_source_with_watermarks(EchoSource { events, delay_ms }, strategy, "Events")
        .uid("events")
        .key_by(|e: &Event| e.key)
        .process(DelayedEcho::new(opts.window))
        .name("Delayed Echo")
        .uid("delayed-echo");
    super::write_pairs(&output, opts.output.as_deref());
    env.execute("Delayed Echo")?;
    Ok(())
}
