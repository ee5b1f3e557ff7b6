//! `floe bench nexmark`: a Nexmark query at full speed, measured as
//! Flink's harness (`bench/nexmark` in the shared tree) measures it.
//!
//! The job is the one `floe run nexmark` runs, with the rows going to a
//! sink that only counts them. `seconds` runs from the first event any
//! source subtask generates to the last sink subtask's end of input, which
//! comes after the final watermark has fired everything: the harness's
//! "first source subtask running → last sink end-of-input", without the
//! deployment the harness also leaves out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floe::prelude::*;
use floe::runtime::{SplitId, TaskInfo};
use floe_nexmark::{Event, NexmarkConfig, NexmarkSource, watermark_strategy};
use serde::Serialize;

use crate::bench::{BenchSpan, mean};
use crate::examples::nexmark::{Query, Row, RowsSink, build};

/// Options of the Nexmark benchmark.
#[derive(Debug, Clone)]
pub struct NexmarkBench {
    /// The query.
    pub query: Query,
    /// Events to generate.
    pub events: u64,
    /// Events per second of event time.
    pub tps: u32,
    /// Parallelism of every operator (and the number of generators).
    pub parallelism: u32,
    /// State backend.
    pub backend: StateBackendKind,
    /// Extra configuration (checkpointing, batch size, ...).
    pub config: floe::core::Configuration,
}

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct NexmarkReport {
    /// `"nexmark"`.
    pub benchmark: &'static str,
    /// `q0`, `q1`, ...
    pub query: String,
    /// Events generated.
    pub events: u64,
    /// Events per second of event time.
    pub tps: u32,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// First event generated to the last sink's end of input, in seconds.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Rows the query emitted.
    pub output_rows: u64,
    /// Whole job wall time (deployment to end), in seconds.
    pub job_seconds: f64,
    /// Peak resident set size of the process, bytes.
    pub peak_rss_bytes: u64,
    /// The same in MiB, as the Flink harness reports it.
    pub peak_rss_mb: u64,
    /// Checkpoints completed during the run.
    pub checkpoints_completed: usize,
    /// Mean trigger-to-completion time of completed checkpoints, in ms.
    pub checkpoint_duration_ms_mean: f64,
    /// Longest trigger-to-completion time, in ms.
    pub checkpoint_duration_ms_max: f64,
    /// Mean full size of completed checkpoints, bytes.
    pub checkpoint_full_bytes_mean: f64,
    /// Event time the stream spans, ms (`events / tps`), as the Flink
    /// harness reports it.
    pub event_time_span_ms: u64,
    /// Median event-to-result latency, ms: from when the sources had
    /// emitted every event up to a row's timestamp to when the row reached
    /// the sink (see [`Latency`]). `null` when the query emitted no row
    /// with an event timestamp.
    pub latency_ms_p50: Option<f64>,
    /// The 99th percentile of the same.
    pub latency_ms_p99: Option<f64>,
    /// Rows the latency figures were computed from (a systematic sample
    /// of at most 65,536 per sink subtask, spread over the whole run).
    pub latency_samples: usize,
    /// The 1-minute load average before the run and after it (-1 if
    /// unknown): a loaded machine makes the figures meaningless.
    pub loadavg1_before: f64,
    /// See `loadavg1_before`.
    pub loadavg1_after: f64,
}

/// The 1-minute load average (Linux), -1 where there is none.
fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// The source, noting when each subtask generates its first events and
/// how far in event time each split has got when.
struct TimedSource {
    inner: NexmarkSource,
    span: BenchSpan,
    latency: Latency,
}

struct TimedReader {
    inner: Box<dyn SourceReader<Event>>,
    span: Option<BenchSpan>,
    latency: Latency,
}

impl Source<Event> for TimedSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(TimedReader {
            inner: self.inner.create_reader(info)?,
            span: Some(self.span.clone()),
            latency: self.latency.clone(),
        }))
    }
}

impl SourceReader<Event> for TimedReader {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.inner.open(info)
    }

    #[inline]
    fn poll_next(&mut self, out: &mut Vec<Event>, max: usize) -> anyhow::Result<SourceStatus> {
        if let Some(span) = self.span.take() {
            span.start(Instant::now());
        }
        let before = out.len();
        let status = self.inner.poll_next(out, max)?;
        if let Some(newest) = out[before..].iter().map(Event::date_time).max() {
            self.latency.emitted(self.inner.current_split(), newest);
        }
        Ok(status)
    }

    fn current_split(&self) -> SplitId {
        self.inner.current_split()
    }

    fn finished_splits(&mut self, out: &mut Vec<SplitId>) {
        self.inner.finished_splits(out)
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

/// Event-to-result latency, measured without touching the records: the
/// sources log, per split and per batch, how far in event time they have
/// emitted and when; a step before the sink samples rows' timestamps and
/// arrival times. A row with timestamp `t` (a window's last millisecond,
/// a joined or selected event's time) depends on events up to `t`, so its
/// latency runs from the moment every split had emitted past `t` to the
/// row's arrival. For event-time windows that includes waiting for the
/// watermark (4 s of event time behind the newest event), as it does for
/// any user of such a query.
#[derive(Clone)]
struct Latency(Arc<LatencyLog>);

struct LatencyLog {
    origin: Instant,
    /// Per split: (newest event time emitted, ns since `origin`), in
    /// emission order.
    emitted: Mutex<HashMap<SplitId, Vec<(i64, u64)>>>,
    /// Per sink subtask: (row timestamp, ns since `origin` it arrived).
    arrived: Mutex<Vec<Vec<(i64, u64)>>>,
}

/// Samples kept per sink subtask; when full, every other one is dropped
/// and the stride doubles, so that the sample spans the whole run.
const LATENCY_SAMPLES: usize = 1 << 16;

impl Latency {
    fn new() -> Self {
        Latency(Arc::new(LatencyLog {
            origin: Instant::now(),
            emitted: Mutex::new(HashMap::new()),
            arrived: Mutex::new(Vec::new()),
        }))
    }

    fn now_ns(&self) -> u64 {
        self.0.origin.elapsed().as_nanos() as u64
    }

    /// A source batch of `split` reached event time `newest`.
    fn emitted(&self, split: SplitId, newest: i64) {
        let now = self.now_ns();
        let mut log = self.0.emitted.lock().unwrap_or_else(|p| p.into_inner());
        let entries = log.entry(split).or_default();
        if entries.last().is_none_or(|&(t, _)| newest > t) {
            entries.push((newest, now));
        }
    }

    /// When every split had emitted past `t` (its last batch if it never
    /// did): the moment a row with timestamp `t` could first exist.
    fn emitted_past(&self, t: i64, log: &HashMap<SplitId, Vec<(i64, u64)>>) -> Option<u64> {
        log.values()
            .filter_map(|entries| {
                let i = entries.partition_point(|&(newest, _)| newest < t);
                entries.get(i).or(entries.last()).map(|&(_, ns)| ns)
            })
            .max()
    }

    /// (p50, p99, samples) in ms over every sink subtask's samples.
    fn percentiles(&self) -> (Option<f64>, Option<f64>, usize) {
        let log = self.0.emitted.lock().unwrap_or_else(|p| p.into_inner());
        let arrived = self.0.arrived.lock().unwrap_or_else(|p| p.into_inner());
        let mut ms: Vec<f64> = arrived
            .iter()
            .flatten()
            .filter_map(|&(t, at)| {
                let from = self.emitted_past(t, &log)?;
                Some(at.saturating_sub(from) as f64 / 1e6)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let at =
            |q: f64| (!ms.is_empty()).then(|| ms[((ms.len() - 1) as f64 * q).round() as usize]);
        (at(0.50), at(0.99), ms.len())
    }
}

/// The step before the sink: forwards every row, samples the
/// timestamps and arrival times of some.
#[derive(Clone)]
struct LatencySampler {
    latency: Latency,
    samples: Vec<(i64, u64)>,
    stride: u64,
    seen: u64,
}

impl LatencySampler {
    fn new(latency: &Latency) -> Self {
        LatencySampler {
            latency: latency.clone(),
            samples: Vec::new(),
            stride: 1,
            seen: 0,
        }
    }
}

impl<T: Send + 'static> ProcessFunction<T, T> for LatencySampler {
    #[inline]
    fn process_element(
        &mut self,
        row: T,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, T>,
    ) -> anyhow::Result<()> {
        if let Some(t) = ctx.timestamp()
            && self.seen % self.stride == 0
        {
            if self.samples.len() == LATENCY_SAMPLES {
                let mut keep = false;
                self.samples.retain(|_| {
                    keep = !keep;
                    keep
                });
                self.stride *= 2;
            }
            if self.seen % self.stride == 0 {
                self.samples.push((t, self.latency.now_ns()));
            }
        }
        self.seen += 1;
        out.collect(row);
        Ok(())
    }

    fn close(&mut self, _: &mut Collector<'_, T>) -> anyhow::Result<()> {
        let samples = std::mem::take(&mut self.samples);
        let mut arrived = self
            .latency
            .0
            .arrived
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        arrived.push(samples);
        Ok(())
    }
}

/// Counts the rows (no formatting, no output) and notes when its input
/// ended.
struct CountingSink<T> {
    rows: Arc<AtomicU64>,
    span: BenchSpan,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T> CountingSink<T> {
    fn new(rows: &Arc<AtomicU64>, span: &BenchSpan) -> Self {
        CountingSink {
            rows: rows.clone(),
            span: span.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<T> Clone for CountingSink<T> {
    fn clone(&self) -> Self {
        CountingSink {
            rows: self.rows.clone(),
            span: self.span.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Send + 'static> SinkWriter<T> for CountingSink<T> {
    fn write(&mut self, _: T) -> anyhow::Result<()> {
        self.rows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        self.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.span.end(Instant::now());
        Ok(())
    }
}

/// Rows through a [`LatencySampler`] into a [`CountingSink`].
struct CountRows<'a> {
    rows: &'a Arc<AtomicU64>,
    span: &'a BenchSpan,
    latency: &'a Latency,
}

impl RowsSink for CountRows<'_> {
    fn accept<T: Row>(self, rows: DataStream<T>) {
        rows.process(LatencySampler::new(self.latency))
            .name("Latency")
            .uid("latency")
            .sink_to(CountingSink::new(self.rows, self.span), "Count");
    }
}

impl NexmarkBench {
    /// Runs the benchmark once.
    pub fn run(&self) -> anyhow::Result<NexmarkReport> {
        let loadavg1_before = loadavg1();
        let env = StreamEnvironment::with_configuration(self.config.clone());
        env.set_parallelism(self.parallelism);
        env.set_state_backend(self.backend);
        let span = BenchSpan::default();
        let rows = Arc::new(AtomicU64::new(0));
        let latency = Latency::new();
        let config = NexmarkConfig::new(self.events).with_tps(self.tps);
        let events = env
            .from_source_with_watermarks(
                TimedSource {
                    inner: NexmarkSource::new(config)?,
                    span: span.clone(),
                    latency: latency.clone(),
                },
                watermark_strategy(),
                "Nexmark Source",
            )
            .uid("nexmark-source");
        build(
            self.query,
            &events,
            CountRows {
                rows: &rows,
                span: &span,
                latency: &latency,
            },
        );
        let result = env.execute(&format!("Nexmark {} bench", self.query))?;
        let done: Vec<_> = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .collect();
        let seconds = span.seconds().unwrap_or(result.net_runtime.as_secs_f64());
        let peak = crate::peak_rss_bytes().unwrap_or(0);
        let (latency_ms_p50, latency_ms_p99, latency_samples) = if self.query.has_event_time_rows()
        {
            latency.percentiles()
        } else {
            (None, None, 0)
        };
        Ok(NexmarkReport {
            benchmark: "nexmark",
            query: self.query.to_string(),
            events: self.events,
            tps: self.tps,
            parallelism: self.parallelism,
            backend: self.backend.to_string(),
            seconds,
            events_per_sec: self.events as f64 / seconds.max(f64::MIN_POSITIVE),
            output_rows: rows.load(Ordering::Relaxed),
            job_seconds: result.net_runtime.as_secs_f64(),
            peak_rss_bytes: peak,
            peak_rss_mb: peak / (1024 * 1024),
            checkpoints_completed: done.len(),
            checkpoint_duration_ms_mean: mean(done.iter().map(|c| c.duration.as_secs_f64() * 1e3)),
            checkpoint_duration_ms_max: done
                .iter()
                .map(|c| c.duration.as_secs_f64() * 1e3)
                .fold(0.0, f64::max),
            checkpoint_full_bytes_mean: mean(done.iter().map(|c| c.full_state_size as f64)),
            event_time_span_ms: self.events * 1000 / u64::from(self.tps),
            latency_ms_p50,
            latency_ms_p99,
            latency_samples,
            loadavg1_before,
            loadavg1_after: loadavg1(),
        })
    }
}
