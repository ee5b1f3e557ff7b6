//! `floe bench keyed-count`: the yardstick workload, measured in-process.
//!
//! N records `(i mod K, 1)` from a parallel generator, `key_by` key, a running
//! count per key in a `ValueState<u64>`, and a sink that discards (but counts)
//! the updates. `records_per_sec` is measured from the first record emitted by
//! any source subtask to the last record applied to state by any keyed
//! subtask; the job's whole wall time (deployment to end) is reported too.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use floe::prelude::*;
use floe::runtime::TaskInfo;
use serde::Serialize;

use crate::examples::keyed_count::{self, CountPerKey};
use crate::query_bench::QueryLoadReport;

/// Options of the keyed-count benchmark.
#[derive(Debug, Clone)]
pub struct KeyedCountBench {
    /// Records to generate.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism of every operator.
    pub parallelism: u32,
    /// State backend.
    pub backend: StateBackendKind,
    /// Extra configuration (`-D`), e.g. batch size.
    pub config: floe::core::Configuration,
    /// Query the `count` state from another process while the job runs.
    pub query_load: Option<QueryLoadOptions>,
}

/// How hard `--query-load` queries.
#[derive(Debug, Clone, Copy)]
pub struct QueryLoadOptions {
    /// Queries in flight at once.
    pub concurrency: usize,
    /// How long to query (the job should run longer).
    pub seconds: f64,
    /// Queries per second to pace to (`None`: as fast as answers come).
    pub rate: Option<f64>,
}

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Benchmark name.
    pub benchmark: &'static str,
    /// Records generated.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// First record emitted to last record applied, in seconds.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// Whole job wall time, in seconds.
    pub job_seconds: f64,
    /// Peak resident set size of the process.
    pub peak_rss_bytes: u64,
    /// Checkpoints completed during the run (0 with checkpointing off).
    pub checkpoints_completed: usize,
    /// Mean trigger-to-completion time of completed checkpoints, in ms.
    pub checkpoint_duration_ms_mean: f64,
    /// Mean bytes written per completed checkpoint (incremental: uploaded).
    pub checkpoint_bytes_mean: f64,
    /// Mean full size of completed checkpoints (shared files referenced
    /// included; equals the above unless checkpoints are incremental).
    pub checkpoint_full_bytes_mean: f64,
    /// What the query process measured, with `--query-load`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries: Option<QueryLoadReport>,
}

/// Earliest and latest instants reported by the subtasks: the
/// benchmarks' measured span, from the first record emitted to the last
/// one applied.
#[derive(Clone, Default)]
pub struct BenchSpan(Arc<Mutex<(Option<Instant>, Option<Instant>)>>);

/// The keyed-count benchmark's name for it.
type Span = BenchSpan;

impl BenchSpan {
    /// A subtask started at `t`.
    pub fn start(&self, t: Instant) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(g.0.map_or(t, |s| s.min(t)));
    }

    /// A subtask ended at `t`.
    pub fn end(&self, t: Instant) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = Some(g.1.map_or(t, |e| e.max(t)));
    }

    /// From the first start to the last end, once both were reported.
    pub fn seconds(&self) -> Option<f64> {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            (Some(s), Some(e)) => Some(e.saturating_duration_since(s).as_secs_f64()),
            _ => None,
        }
    }
}

/// The generator, noting when each subtask emits its first batch.
struct TimedSource {
    inner: GeneratorSource<(u64, u64)>,
    span: Span,
}

struct TimedReader {
    inner: Box<dyn SourceReader<(u64, u64)>>,
    span: Option<Span>,
}

impl Source<(u64, u64)> for TimedSource {
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(u64, u64)>>> {
        Ok(Box::new(TimedReader {
            inner: self.inner.create_reader(info)?,
            span: Some(self.span.clone()),
        }))
    }
}

impl SourceReader<(u64, u64)> for TimedReader {
    #[inline]
    fn poll_next(&mut self, out: &mut Vec<(u64, u64)>, max: usize) -> anyhow::Result<SourceStatus> {
        if let Some(span) = self.span.take() {
            span.start(Instant::now());
        }
        self.inner.poll_next(out, max)
    }
}

/// The counting function, noting when its last record was applied.
#[derive(Clone)]
struct TimedCount {
    inner: CountPerKey,
    span: Span,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for TimedCount {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.inner.open(ctx)
    }

    #[inline]
    fn process_element(
        &mut self,
        value: (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        self.inner.process_element(value, ctx, out)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.span.end(Instant::now());
        Ok(())
    }
}

/// Drops every record but counts them, to check nothing was lost.
#[derive(Clone)]
struct CountingDiscard(Arc<std::sync::atomic::AtomicU64>);

impl SinkWriter<(u64, u64)> for CountingDiscard {
    fn write(&mut self, _: (u64, u64)) -> anyhow::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn write_batch(&mut self, batch: &mut Vec<(u64, u64)>) -> anyhow::Result<()> {
        self.0
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        batch.clear();
        Ok(())
    }
}

impl KeyedCountBench {
    /// Runs the benchmark once.
    pub fn run(&self) -> anyhow::Result<BenchReport> {
        let env = StreamEnvironment::with_configuration(self.config.clone());
        env.set_parallelism(self.parallelism);
        env.set_state_backend(self.backend);
        let span = Span::default();
        let emitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        env.from_source(
            TimedSource {
                inner: keyed_count::source(self.records, self.keys, None),
                span: span.clone(),
            },
            "Generator",
        )
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(TimedCount {
            inner: CountPerKey::default(),
            span: span.clone(),
        })
        .name("Count per Key")
        .sink_to(CountingDiscard(emitted.clone()), "Discard");
        let (result, queries) = match self.query_load {
            None => (env.execute("KeyedCountBench")?, None),
            Some(load) => {
                env.set_config("queryable-state.enable", "true");
                env.set_config("queryable-state.proxy.ports", "0");
                env.set_config("queryable-state.server.ports", "0");
                let client = env.execute_async("KeyedCountBench")?;
                let proxy = floe::queryable::QueryableStateService::running()
                    .ok_or_else(|| anyhow::anyhow!("the queryable-state service did not start"))?
                    .proxy_address();
                let child = std::process::Command::new(std::env::current_exe()?)
                    .args(["bench", "query-load", "--proxy", &proxy.to_string()])
                    .args(["--job", &client.job_id().to_string()])
                    .args(["--keys", &self.keys.to_string()])
                    .args(["--concurrency", &load.concurrency.to_string()])
                    .args(["--seconds", &load.seconds.to_string()])
                    .args(load.rate.map(|r| format!("--rate={r}")))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .spawn()?;
                let result = client.wait();
                let out = child.wait_with_output()?;
                let result = result?;
                anyhow::ensure!(
                    out.status.success(),
                    "the query process failed ({})",
                    out.status
                );
                let report: QueryLoadReport = serde_json::from_slice(&out.stdout)?;
                (result, Some(report))
            }
        };
        let updates = emitted.load(std::sync::atomic::Ordering::Relaxed);
        anyhow::ensure!(
            updates == self.records,
            "benchmark lost records: {updates} updates for {} records",
            self.records
        );
        let done: Vec<_> = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .collect();
        let (start, end) = *span.0.lock().unwrap_or_else(|p| p.into_inner());
        let seconds = match (start, end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).as_secs_f64(),
            _ => result.net_runtime.as_secs_f64(),
        };
        Ok(BenchReport {
            benchmark: "keyed-count",
            records: self.records,
            keys: self.keys,
            parallelism: self.parallelism,
            backend: self.backend.to_string(),
            seconds,
            records_per_sec: if seconds > 0.0 {
                self.records as f64 / seconds
            } else {
                f64::INFINITY
            },
            job_seconds: result.net_runtime.as_secs_f64(),
            peak_rss_bytes: crate::peak_rss_bytes().unwrap_or(0),
            checkpoints_completed: done.len(),
            checkpoint_duration_ms_mean: mean(done.iter().map(|c| c.duration.as_secs_f64() * 1e3)),
            checkpoint_bytes_mean: mean(done.iter().map(|c| c.state_size as f64)),
            checkpoint_full_bytes_mean: mean(done.iter().map(|c| c.full_state_size as f64)),
            queries,
        })
    }
}

/// The mean, 0 for none.
pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}
