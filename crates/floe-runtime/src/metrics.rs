//! A job's metrics, with Flink's names and meanings: what each operator
//! subtask counted (records in and out, watermarks) and how each task spent
//! its time (busy, idle, back-pressured).
//!
//! Counting stays off the per-record path: operators are counted once per
//! batch by the `metered` wrappers the job manager puts
//! around every operator of a chain, into relaxed atomics only that
//! subtask's thread writes; times are measured only where a task waits
//! (for input: idle; on a full channel: back-pressured). The REST API and
//! the Prometheus endpoint read the atomics, and a sampler thread keeps
//! one sample a second so that per-second rates are derived over
//! [`RATE_WINDOW`], as Flink's `MeterView` and `TimerGauge` do over their
//! update interval.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use floe_state::NativeMetric;

/// How far back per-second rates look: the newest samples within it
/// (Flink's views update every 5 seconds).
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// How often the sampler keeps a sample.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Flink's value for "no watermark yet" (`Long.MIN_VALUE`).
pub const NO_WATERMARK: i64 = i64::MIN;

/// How one task (a chain's subtask, one thread) spent its time. Written by
/// the task's thread only where it waits, read by reporters.
#[derive(Debug, Default)]
pub struct TaskTimes {
    idle_ns: AtomicU64,
    back_pressured_ns: AtomicU64,
    /// Bytes of frames the task's remote input channels received
    /// (`numBytesIn`; local channels carry values, not bytes).
    bytes_in: AtomicU64,
    /// The task's thread is not running (not deployed yet, or ended): it
    /// counts as idle, neither busy nor back-pressured.
    stopped: AtomicBool,
}

impl TaskTimes {
    /// Time spent waiting for input.
    #[inline]
    pub fn add_idle(&self, d: Duration) {
        self.idle_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Time spent blocked on a full output channel.
    #[inline]
    pub fn add_back_pressured(&self, d: Duration) {
        self.back_pressured_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A frame of `n` bytes arrived for the task over the network (added
    /// by the network's reader threads, once per frame).
    #[inline]
    pub fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Marks the task's thread as running (true) or gone (false).
    pub fn set_running(&self, running: bool) {
        self.stopped.store(!running, Ordering::Relaxed);
    }
}

thread_local! {
    /// The times of the task running on this thread, so that a channel
    /// blocked on a full queue can account for it without a handle being
    /// threaded through every writer.
    static CURRENT_TASK: RefCell<Option<Arc<TaskTimes>>> = const { RefCell::new(None) };
}

/// Makes `times` the current thread's task times (the task manager calls
/// this when a task's thread starts).
pub fn bind_task_times(times: Option<Arc<TaskTimes>>) {
    CURRENT_TASK.with(|c| *c.borrow_mut() = times);
}

/// Adds `d` to the back-pressured time of the task on this thread, if any.
/// Only called after a send found its channel full (never per record).
pub(crate) fn record_back_pressure(d: Duration) {
    CURRENT_TASK.with(|c| {
        if let Some(t) = c.borrow().as_ref() {
            t.add_back_pressured(d);
        }
    });
}

/// What one operator subtask counted. Single writer (its task's thread),
/// relaxed atomics, updated once per batch or control element.
#[derive(Debug)]
pub struct OperatorIo {
    records_in: AtomicU64,
    records_out: AtomicU64,
    input_watermark: AtomicI64,
    output_watermark: AtomicI64,
    /// Its state backend's native metrics as last read (about once a
    /// second, by the task: never per batch, so a lock is fine).
    native: Mutex<Vec<NativeMetric>>,
}

impl Default for OperatorIo {
    fn default() -> Self {
        OperatorIo {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            input_watermark: AtomicI64::new(NO_WATERMARK),
            output_watermark: AtomicI64::new(NO_WATERMARK),
            native: Mutex::new(Vec::new()),
        }
    }
}

impl OperatorIo {
    /// `n` records entered the operator.
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` records left the operator.
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The operator received watermark `ts`.
    #[inline]
    pub fn set_input_watermark(&self, ts: i64) {
        self.input_watermark.store(ts, Ordering::Relaxed);
    }

    /// The operator emitted watermark `ts`.
    #[inline]
    pub fn set_output_watermark(&self, ts: i64) {
        self.output_watermark.store(ts, Ordering::Relaxed);
    }

    /// The operator's state backend reported these native metrics.
    pub fn set_native(&self, metrics: &[NativeMetric]) {
        let mut native = self.native.lock().unwrap_or_else(|p| p.into_inner());
        native.clear();
        native.extend_from_slice(metrics);
    }

    /// The native metrics last reported.
    pub fn native(&self) -> Vec<NativeMetric> {
        self.native
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One operator subtask's metrics as reported (Flink's names in the docs of
/// each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubtaskMetrics {
    /// `numRecordsIn`: records the operator received, since the job started
    /// (a restart replays from the checkpoint, and those count again).
    pub records_in: u64,
    /// `numRecordsOut`: records the operator emitted (main output).
    pub records_out: u64,
    /// `numRecordsInPerSecond` over the rate window.
    pub records_in_per_second: f64,
    /// `numRecordsOutPerSecond` over the rate window.
    pub records_out_per_second: f64,
    /// `busyTimeMsPerSecond` of the operator's task: neither idle nor
    /// back-pressured.
    pub busy_ms_per_second: f64,
    /// `idleTimeMsPerSecond` of the operator's task: waiting for input.
    pub idle_ms_per_second: f64,
    /// `backPressuredTimeMsPerSecond` of the operator's task: blocked on a
    /// full output channel.
    pub back_pressured_ms_per_second: f64,
    /// `currentInputWatermark` ([`NO_WATERMARK`] before the first).
    pub input_watermark: i64,
    /// `currentOutputWatermark` ([`NO_WATERMARK`] before the first).
    pub output_watermark: i64,
    /// `numBytesIn` of the operator's task: bytes received over the
    /// network since the job started (0 for a task whose inputs are all
    /// in its process: local channels carry values, not bytes).
    pub bytes_in: u64,
    /// `numBytesInPerSecond` over the rate window.
    pub bytes_in_per_second: f64,
    /// `checkpointAlignmentTime` of the operator's task: how long its
    /// barrier alignment took in the latest completed checkpoint, ns.
    /// Known where the checkpoint history is (the job's endpoint, a
    /// cluster's JobManager); `None` elsewhere and before a checkpoint.
    pub checkpoint_alignment_ns: Option<u64>,
}

/// One operator subtask's cumulative counters as the process running it
/// (a TaskManager) reports them to the JobManager, whose REST endpoint and
/// Prometheus exposition serve the job's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubtaskCounters {
    /// The operator (vertex index).
    pub vertex: u32,
    /// Its subtask.
    pub subtask: u32,
    /// Records in, since the run started.
    pub records_in: u64,
    /// Records out, since the run started.
    pub records_out: u64,
    /// The subtask's task's idle time, ns.
    pub idle_ns: u64,
    /// The subtask's task's back-pressured time, ns.
    pub back_pressured_ns: u64,
    /// Bytes the subtask's task received over the network.
    pub bytes_in: u64,
    /// Whether the task's thread runs.
    pub running: bool,
    /// `currentInputWatermark`.
    pub input_watermark: i64,
    /// `currentOutputWatermark`.
    pub output_watermark: i64,
}

/// Raw cumulative values of one subtask at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Raw {
    records_in: u64,
    records_out: u64,
    idle_ns: u64,
    back_pressured_ns: u64,
    bytes_in: u64,
}

/// One operator of the job and its subtasks' counters.
#[derive(Debug)]
struct VertexSlots {
    operators: Vec<Arc<OperatorIo>>,
    /// Index into [`JobMetrics::tasks`] of each subtask's task.
    tasks: Vec<usize>,
}

/// Every counter of one job, kept across restarts (counters stay monotonic
/// for scrapers).
#[derive(Debug)]
pub struct JobMetrics {
    vertices: Vec<VertexSlots>,
    tasks: Vec<Arc<TaskTimes>>,
    restarts: AtomicU64,
    /// When the current run was deployed (ms since the epoch), 0 when none
    /// runs.
    run_started_ms: AtomicU64,
    samples: Mutex<VecDeque<(Instant, Vec<Vec<Raw>>)>>,
    /// Operators' records and watermarks are counted (`metrics.io.enabled`).
    io_counting: AtomicBool,
}

impl JobMetrics {
    /// Metrics for a job whose vertices have `parallelism[v]` subtasks;
    /// `chains` lists the vertices each task runs (chained operators share
    /// a task's times).
    pub fn new(parallelism: &[u32], chains: &[Vec<usize>]) -> Arc<Self> {
        let mut tasks = Vec::new();
        let mut task_of: Vec<Vec<usize>> = parallelism.iter().map(|_| Vec::new()).collect();
        for chain in chains {
            let p = chain.first().map_or(0, |v| parallelism[*v]);
            let first = tasks.len();
            for _ in 0..p {
                let t = TaskTimes::default();
                t.set_running(false);
                tasks.push(Arc::new(t));
            }
            for v in chain {
                task_of[*v] = (0..p as usize).map(|i| first + i).collect();
            }
        }
        let vertices = parallelism
            .iter()
            .zip(task_of)
            .map(|(p, tasks)| VertexSlots {
                operators: (0..*p).map(|_| Arc::new(OperatorIo::default())).collect(),
                tasks,
            })
            .collect();
        Arc::new(JobMetrics {
            vertices,
            tasks,
            restarts: AtomicU64::new(0),
            run_started_ms: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
            io_counting: AtomicBool::new(true),
        })
    }

    /// Whether runs built from now on count each operator's records and
    /// watermarks (`metrics.io.enabled`, on by default). Off, operators'
    /// `numRecordsIn`/`Out`, their rates and watermarks stay 0; task times
    /// are still measured.
    pub fn set_io_counting(&self, on: bool) {
        self.io_counting.store(on, Ordering::Relaxed);
    }

    /// See [`JobMetrics::set_io_counting`].
    pub fn counts_io(&self) -> bool {
        self.io_counting.load(Ordering::Relaxed)
    }

    /// The counters of subtask `subtask` of vertex `vertex`.
    pub fn operator(&self, vertex: usize, subtask: u32) -> Arc<OperatorIo> {
        self.vertices[vertex].operators[subtask as usize].clone()
    }

    /// The times of the task running subtask `subtask` of vertex `vertex`.
    pub fn task(&self, vertex: usize, subtask: u32) -> Arc<TaskTimes> {
        self.tasks[self.vertices[vertex].tasks[subtask as usize]].clone()
    }

    /// A run was deployed at `epoch_ms`.
    pub fn run_started(&self, epoch_ms: u64) {
        self.run_started_ms.store(epoch_ms, Ordering::Relaxed);
    }

    /// The run ended (failed, finished or cancelled).
    pub fn run_ended(&self) {
        self.run_started_ms.store(0, Ordering::Relaxed);
    }

    /// When the current run started (ms since the epoch), if one runs.
    pub fn run_started_ms(&self) -> Option<u64> {
        Some(self.run_started_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// The job restarted once more.
    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// `numRestarts`.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    fn raw(&self) -> Vec<Vec<Raw>> {
        self.vertices
            .iter()
            .map(|v| {
                v.operators
                    .iter()
                    .zip(&v.tasks)
                    .map(|(io, t)| {
                        let t = &self.tasks[*t];
                        Raw {
                            records_in: io.records_in.load(Ordering::Relaxed),
                            records_out: io.records_out.load(Ordering::Relaxed),
                            idle_ns: t.idle_ns.load(Ordering::Relaxed),
                            back_pressured_ns: t.back_pressured_ns.load(Ordering::Relaxed),
                            bytes_in: t.bytes_in.load(Ordering::Relaxed),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The counters of the operator subtasks `hosted` (vertex, subtask)
    /// since these metrics were made, for a report to the JobManager.
    pub fn counters(&self, hosted: &[(usize, u32)]) -> Vec<SubtaskCounters> {
        hosted
            .iter()
            .filter_map(|&(v, s)| {
                let vertex = self.vertices.get(v)?;
                let io = vertex.operators.get(s as usize)?;
                let task = &self.tasks[*vertex.tasks.get(s as usize)?];
                Some(SubtaskCounters {
                    vertex: v as u32,
                    subtask: s,
                    records_in: io.records_in.load(Ordering::Relaxed),
                    records_out: io.records_out.load(Ordering::Relaxed),
                    idle_ns: task.idle_ns.load(Ordering::Relaxed),
                    back_pressured_ns: task.back_pressured_ns.load(Ordering::Relaxed),
                    bytes_in: task.bytes_in.load(Ordering::Relaxed),
                    running: !task.stopped.load(Ordering::Relaxed),
                    input_watermark: io.input_watermark.load(Ordering::Relaxed),
                    output_watermark: io.output_watermark.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// Adds what a remote run counted between two of its reports (`before`,
    /// empty for its first, and `now`) to these counters, which stay
    /// monotonic across runs; watermarks and whether a task runs are taken
    /// as reported. A task's times are added once, however many of its
    /// chained operators the report lists.
    pub fn absorb(&self, before: &[SubtaskCounters], now: &[SubtaskCounters]) {
        let mut tasks_done: HashSet<usize> = HashSet::new();
        for c in now {
            let Some(vertex) = self.vertices.get(c.vertex as usize) else {
                continue;
            };
            let (Some(io), Some(&t)) = (
                vertex.operators.get(c.subtask as usize),
                vertex.tasks.get(c.subtask as usize),
            ) else {
                continue;
            };
            let old = before
                .iter()
                .find(|b| b.vertex == c.vertex && b.subtask == c.subtask);
            let delta = |f: fn(&SubtaskCounters) -> u64| f(c).saturating_sub(old.map_or(0, f));
            io.add_in(delta(|c| c.records_in) as usize);
            io.add_out(delta(|c| c.records_out) as usize);
            io.set_input_watermark(c.input_watermark);
            io.set_output_watermark(c.output_watermark);
            if tasks_done.insert(t) {
                let task = &self.tasks[t];
                task.add_idle(Duration::from_nanos(delta(|c| c.idle_ns)));
                task.add_back_pressured(Duration::from_nanos(delta(|c| c.back_pressured_ns)));
                task.add_bytes_in(delta(|c| c.bytes_in) as usize);
                task.set_running(c.running);
            }
        }
    }

    /// Keeps a sample for rates, dropping those older than the window.
    pub fn sample(&self) {
        self.sample_at(Instant::now());
    }

    fn sample_at(&self, now: Instant) {
        let raw = self.raw();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, raw));
        // Keep one sample at least a window old, so the rate spans it.
        while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
            samples.pop_front();
        }
    }

    /// Every operator subtask's state backend's native metrics (RocksDB
    /// properties), per vertex in graph order, then per subtask; empty
    /// where none are switched on or read yet.
    pub fn native(&self) -> Vec<Vec<Vec<NativeMetric>>> {
        self.vertices
            .iter()
            .map(|v| v.operators.iter().map(|io| io.native()).collect())
            .collect()
    }

    /// Every operator subtask's metrics, per vertex in graph order, then
    /// per subtask. Rates compare with the oldest sample of the window (all
    /// zero until the sampler kept one).
    pub fn snapshot(&self) -> Vec<Vec<SubtaskMetrics>> {
        let now = Instant::now();
        let raw = self.raw();
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let base = samples
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= RATE_WINDOW + SAMPLE_EVERY)
            .filter(|(at, _)| now.duration_since(*at) >= Duration::from_millis(200));
        raw.iter()
            .enumerate()
            .map(|(v, subtasks)| {
                subtasks
                    .iter()
                    .enumerate()
                    .map(|(s, cur)| {
                        let io = &self.vertices[v].operators[s];
                        let task = &self.tasks[self.vertices[v].tasks[s]];
                        let mut m = SubtaskMetrics {
                            records_in: cur.records_in,
                            records_out: cur.records_out,
                            records_in_per_second: 0.0,
                            records_out_per_second: 0.0,
                            busy_ms_per_second: 0.0,
                            idle_ms_per_second: 0.0,
                            back_pressured_ms_per_second: 0.0,
                            input_watermark: io.input_watermark.load(Ordering::Relaxed),
                            output_watermark: io.output_watermark.load(Ordering::Relaxed),
                            bytes_in: cur.bytes_in,
                            bytes_in_per_second: 0.0,
                            checkpoint_alignment_ns: None,
                        };
                        if let Some((at, old)) = base {
                            let old = old[v][s];
                            let secs = now.duration_since(*at).as_secs_f64();
                            let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                            m.records_in_per_second = per_sec(cur.records_in, old.records_in);
                            m.records_out_per_second = per_sec(cur.records_out, old.records_out);
                            m.bytes_in_per_second = per_sec(cur.bytes_in, old.bytes_in);
                            let ms = |a: u64, b: u64| (per_sec(a, b) / 1e6).min(1000.0);
                            if task.stopped.load(Ordering::Relaxed) {
                                m.idle_ms_per_second = 1000.0;
                            } else {
                                m.idle_ms_per_second = ms(cur.idle_ns, old.idle_ns);
                                m.back_pressured_ms_per_second =
                                    ms(cur.back_pressured_ns, old.back_pressured_ns)
                                        .min(1000.0 - m.idle_ms_per_second);
                                m.busy_ms_per_second =
                                    1000.0 - m.idle_ms_per_second - m.back_pressured_ms_per_second;
                            }
                        }
                        m
                    })
                    .collect()
            })
            .collect()
    }

    /// Starts the thread that samples `metrics` every second for as long as
    /// `alive` says the job may still be read.
    pub fn start_sampler(
        metrics: &Arc<JobMetrics>,
        alive: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<()> {
        let weak: Weak<JobMetrics> = Arc::downgrade(metrics);
        metrics.sample();
        std::thread::Builder::new()
            .name("metrics-sampler".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SAMPLE_EVERY);
                    let Some(m) = weak.upgrade() else { return };
                    if !alive() {
                        return;
                    }
                    m.sample();
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_runs_reports_add_up_once_per_task_and_across_runs() {
        // Two chained operators (vertices 0 and 1) in one task, p = 1.
        let remote = JobMetrics::new(&[1, 1], &[vec![0, 1]]);
        let here = JobMetrics::new(&[1, 1], &[vec![0, 1]]);
        let hosted = [(0, 0), (1, 0)];
        remote.task(0, 0).set_running(true);
        remote.operator(0, 0).add_out(10);
        remote.operator(1, 0).add_in(10);
        remote.task(0, 0).add_idle(Duration::from_millis(5));
        let first = remote.counters(&hosted);
        assert_eq!(first.len(), 2);
        here.absorb(&[], &first);
        remote.operator(0, 0).add_out(5);
        remote.task(0, 0).add_idle(Duration::from_millis(5));
        let second = remote.counters(&hosted);
        here.absorb(&first, &second);
        let raw = here.raw();
        assert_eq!(raw[0][0].records_out, 15);
        assert_eq!(raw[1][0].records_in, 10);
        assert_eq!(
            raw[0][0].idle_ns, 10_000_000,
            "once per task, not per operator"
        );
        // A next run counts from zero again; the job's counters go on.
        let next = JobMetrics::new(&[1, 1], &[vec![0, 1]]);
        next.operator(0, 0).add_out(3);
        here.absorb(&[], &next.counters(&hosted));
        assert_eq!(here.raw()[0][0].records_out, 18);
        assert!(
            here.tasks[0].stopped.load(Ordering::Relaxed),
            "the new run's task is not running"
        );
        // Out of range (a report of another plan) is ignored.
        here.absorb(
            &[],
            &[SubtaskCounters {
                vertex: 9,
                ..second[0]
            }],
        );
    }

    #[test]
    fn rates_and_times_come_from_the_window() {
        let m = JobMetrics::new(&[2], &[vec![0]]);
        let start = Instant::now() - Duration::from_secs(2);
        m.task(0, 0).set_running(true);
        m.sample_at(start);
        m.operator(0, 0).add_in(4000);
        m.operator(0, 0).add_out(2000);
        m.task(0, 0).add_idle(Duration::from_millis(500));
        m.task(0, 0).add_back_pressured(Duration::from_millis(1000));
        let snap = m.snapshot();
        let s = snap[0][0];
        assert_eq!((s.records_in, s.records_out), (4000, 2000));
        assert!(
            (1900.0..=2000.0).contains(&s.records_in_per_second),
            "{s:?}"
        );
        assert!((240.0..=250.0).contains(&s.idle_ms_per_second), "{s:?}");
        assert!(
            (490.0..=500.0).contains(&s.back_pressured_ms_per_second),
            "{s:?}"
        );
        let total = s.busy_ms_per_second + s.idle_ms_per_second + s.back_pressured_ms_per_second;
        assert!((total - 1000.0).abs() < 1e-6);
        // Subtask 1's task never ran: idle.
        assert_eq!(snap[0][1].idle_ms_per_second, 1000.0);
        assert_eq!(snap[0][0].input_watermark, NO_WATERMARK);
    }
}
