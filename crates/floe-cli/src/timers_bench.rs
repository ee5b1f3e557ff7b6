//! `floe bench timers`: keyed state and event-time timers at full speed
//! (issue 18's yardstick; its Flink twin is `bench/flink/KeyedTimers.java`).
//!
//! N records `(i mod K, t)` from a parallel generator whose event time
//! advances one millisecond per 1,000 records of each source subtask
//! (monotonous watermarks per split). Per record, the keyed function
//! increments a `ValueState<u64>` and registers an event-time timer at the
//! end of the record's second (deduplicated per key and second, as timers
//! are unique); the timer clears the state. The final watermark fires what
//! is left, so every timer registered fires exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use floe::prelude::*;
use serde::Serialize;

use crate::bench::{BenchSpan, mean};

/// Records of one source subtask per millisecond of event time, by
/// default (the Flink twin uses the same).
pub const RECORDS_PER_MS: u64 = 1_000;

/// Options of the timers benchmark.
#[derive(Debug, Clone)]
pub struct TimersBench {
    /// Records to generate.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism of every operator.
    pub parallelism: u32,
    /// State backend.
    pub backend: StateBackendKind,
    /// Extra configuration (checkpointing, batch size, ...).
    pub config: floe::core::Configuration,
    /// Records of one source subtask per millisecond of event time
    /// ([`RECORDS_PER_MS`] by default).
    pub records_per_ms: u64,
}

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct TimersReport {
    /// `"timers"`.
    pub benchmark: &'static str,
    /// Records generated.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// First record emitted to the last timer fired, in seconds.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// Timers fired (each registered one fires once).
    pub timers_fired: u64,
    /// Whole job wall time, in seconds.
    pub job_seconds: f64,
    /// Peak resident set size of the process.
    pub peak_rss_bytes: u64,
    /// Checkpoints completed during the run.
    pub checkpoints_completed: usize,
    /// Mean trigger-to-completion time of completed checkpoints, in ms.
    pub checkpoint_duration_ms_mean: f64,
    /// Longest trigger-to-completion time, in ms.
    pub checkpoint_duration_ms_max: f64,
    /// Mean full size of completed checkpoints.
    pub checkpoint_full_bytes_mean: f64,
}

/// Event time of record `i` when `per_subtask` records go to each source
/// subtask: each subtask's time starts at 0 and advances alike, so the
/// watermark (the minimum over subtasks) is not held back by the split.
fn event_time(i: u64, per_subtask: u64, records_per_ms: u64) -> i64 {
    ((i % per_subtask.max(1)) / records_per_ms.max(1)) as i64
}

/// Counts per key, one timer per key and second that clears the count.
#[derive(Clone)]
struct CountUntilSecondEnds {
    count: ValueState<u64>,
    fired: u64,
    total_fired: Arc<AtomicU64>,
    span: BenchSpan,
}

impl KeyedProcessFunction<u64, (u64, i64), ()> for CountUntilSecondEnds {
    #[inline]
    fn process_element(
        &mut self,
        (_, t): (u64, i64),
        ctx: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, ()>,
    ) -> anyhow::Result<()> {
        let count = &self.count;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, n)?;
        let end_of_second = (t / 1_000 + 1) * 1_000 - 1;
        ctx.timer_service()
            .register_event_time_timer(end_of_second)?;
        Ok(())
    }

    #[inline]
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut OnTimerContext<'_, u64>,
        _: &mut Collector<'_, ()>,
    ) -> anyhow::Result<()> {
        self.count.clear(ctx)?;
        self.fired += 1;
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.total_fired.fetch_add(self.fired, Ordering::Relaxed);
        self.span.end(Instant::now());
        Ok(())
    }
}

/// The generator, noting when each subtask emits its first batch.
struct TimedGenerator {
    inner: GeneratorSource<(u64, i64)>,
    span: BenchSpan,
}

struct TimedGeneratorReader {
    inner: Box<dyn SourceReader<(u64, i64)>>,
    span: Option<BenchSpan>,
}

impl Source<(u64, i64)> for TimedGenerator {
    fn create_reader(
        &self,
        info: &floe::runtime::TaskInfo,
    ) -> anyhow::Result<Box<dyn SourceReader<(u64, i64)>>> {
        Ok(Box::new(TimedGeneratorReader {
            inner: self.inner.create_reader(info)?,
            span: Some(self.span.clone()),
        }))
    }
}

impl SourceReader<(u64, i64)> for TimedGeneratorReader {
    #[inline]
    fn poll_next(&mut self, out: &mut Vec<(u64, i64)>, max: usize) -> anyhow::Result<SourceStatus> {
        if let Some(span) = self.span.take() {
            span.start(Instant::now());
        }
        self.inner.poll_next(out, max)
    }

    fn current_split(&self) -> floe::runtime::SplitId {
        self.inner.current_split()
    }

    fn finished_splits(&mut self, out: &mut Vec<floe::runtime::SplitId>) {
        self.inner.finished_splits(out)
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        self.inner.snapshot_state()
    }
}

impl TimersBench {
    /// Runs the benchmark once.
    pub fn run(&self) -> anyhow::Result<TimersReport> {
        anyhow::ensure!(
            self.records % self.parallelism as u64 == 0,
            "--records must be a multiple of the parallelism, so every source subtask's event time advances alike"
        );
        let env = StreamEnvironment::with_configuration(self.config.clone());
        env.set_parallelism(self.parallelism);
        env.set_state_backend(self.backend);
        let span = BenchSpan::default();
        let fired = Arc::new(AtomicU64::new(0));
        let (keys, per_subtask) = (self.keys, self.records / self.parallelism as u64);
        let per_ms = self.records_per_ms;
        let source = GeneratorSource::new(self.records, move |i| {
            (i % keys, event_time(i, per_subtask, per_ms))
        });
        let strategy = WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|r: &(u64, i64), _| r.1);
        env.from_source_with_watermarks(
            TimedGenerator {
                inner: source,
                span: span.clone(),
            },
            strategy,
            "Generator",
        )
        .key_by(|(k, _): &(u64, i64)| *k)
        .process(CountUntilSecondEnds {
            count: ValueState::new("count"),
            fired: 0,
            total_fired: fired.clone(),
            span: span.clone(),
        })
        .name("Count until the second ends")
        .sink_to(DiscardingSink, "Discard");
        let result = env.execute("TimersBench")?;
        let timers_fired = fired.load(Ordering::Relaxed);
        anyhow::ensure!(timers_fired > 0, "no timer fired");
        let done: Vec<_> = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .collect();
        let seconds = span.seconds().unwrap_or(result.net_runtime.as_secs_f64());
        Ok(TimersReport {
            benchmark: "timers",
            records: self.records,
            keys: self.keys,
            parallelism: self.parallelism,
            backend: self.backend.to_string(),
            seconds,
            records_per_sec: self.records as f64 / seconds.max(f64::MIN_POSITIVE),
            timers_fired,
            job_seconds: result.net_runtime.as_secs_f64(),
            peak_rss_bytes: crate::peak_rss_bytes().unwrap_or(0),
            checkpoints_completed: done.len(),
            checkpoint_duration_ms_mean: mean(done.iter().map(|c| c.duration.as_secs_f64() * 1e3)),
            checkpoint_duration_ms_max: done
                .iter()
                .map(|c| c.duration.as_secs_f64() * 1e3)
                .fold(0.0, f64::max),
            checkpoint_full_bytes_mean: mean(done.iter().map(|c| c.full_state_size as f64)),
        })
    }
}

/// Drops everything (the function emits nothing anyway).
#[derive(Clone)]
struct DiscardingSink;

impl SinkWriter<()> for DiscardingSink {
    fn write(&mut self, _: ()) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_advances_alike_in_every_subtask() {
        // Two subtasks of 4,000 records: both start at 0 ms and end at 3 ms.
        assert_eq!(event_time(0, 4_000, 1_000), 0);
        assert_eq!(event_time(3_999, 4_000, 1_000), 3);
        assert_eq!(event_time(4_000, 4_000, 1_000), 0);
        assert_eq!(event_time(7_999, 4_000, 1_000), 3);
    }

    #[test]
    fn every_timer_fires_once() {
        // 2 subtasks of 2,500 records at one per ms = 2.5 s of event time
        // each; 10 keys each have records in seconds 0, 1 and 2: 30 timers.
        let r = TimersBench {
            records: 5_000,
            keys: 10,
            parallelism: 2,
            backend: StateBackendKind::HashMap,
            config: floe::core::Configuration::new(),
            records_per_ms: 1,
        }
        .run()
        .unwrap();
        assert_eq!(r.timers_fired, 30);
    }
}
