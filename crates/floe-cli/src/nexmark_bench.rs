//! `floe bench nexmark`: a Nexmark query at full speed, measured as
//! Flink's harness (`bench/nexmark` in the shared tree) measures it.
//!
//! The job is the one `floe run nexmark` runs, with the rows going to a
//! sink that only counts them. `seconds` runs from the first event any
//! source subtask generates to the last sink subtask's end of input, which
//! comes after the final watermark has fired everything: the harness's
//! "first source subtask running → last sink end-of-input", without the
//! deployment the harness also leaves out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The source, noting when each subtask generates its first events.
struct TimedSource {
    inner: NexmarkSource,
    span: BenchSpan,
}

struct TimedReader {
    inner: Box<dyn SourceReader<Event>>,
    span: Option<BenchSpan>,
}

impl Source<Event> for TimedSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(TimedReader {
            inner: self.inner.create_reader(info)?,
            span: Some(self.span.clone()),
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
        self.inner.poll_next(out, max)
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

/// Rows into a [`CountingSink`].
struct CountRows<'a> {
    rows: &'a Arc<AtomicU64>,
    span: &'a BenchSpan,
}

impl RowsSink for CountRows<'_> {
    fn accept<T: Row>(self, rows: DataStream<T>) {
        rows.sink_to(CountingSink::new(self.rows, self.span), "Count");
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
        let config = NexmarkConfig::new(self.events).with_tps(self.tps);
        let events = env
            .from_source_with_watermarks(
                TimedSource {
                    inner: NexmarkSource::new(config)?,
                    span: span.clone(),
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
            loadavg1_before,
            loadavg1_after: loadavg1(),
        })
    }
}
