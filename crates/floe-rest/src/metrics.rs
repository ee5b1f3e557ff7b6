//! A job's metrics as the REST routes and the Prometheus endpoint report
//! them, with Flink's metric names and Flink's Prometheus naming: scope
//! components and the metric name joined by `_` (`floe_taskmanager_job_task_operator_numRecordsIn`),
//! labels for the variables (`job_id`, `job_name`, `task_id`, `task_name`,
//! `subtask_index`, `operator_id`, `operator_name`). Every value is a gauge,
//! as Flink's reporter exports counters (they may be reset by a restart in
//! Flink), so names carry no `_total` suffix.

use floe_runtime::VertexInfo;
use floe_runtime::checkpoint::{CheckpointHistoryView, CheckpointStats};
use floe_runtime::metrics::{NativeMetric, SubtaskMetrics};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The prefix of every exported name: Flink's reporter prefixes `flink`;
/// Floe's own name keeps its series apart from a real Flink's in one
/// Prometheus, and a Flink dashboard ports by renaming the prefix.
pub(crate) const PREFIX: &str = "floe";

/// The content type of [`prometheus_text`].
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Operator-scoped metric ids, as `GET /jobs/{id}/vertices/{vid}/metrics`
/// lists them after the subtask index.
pub(crate) const OPERATOR_METRICS: [&str; 6] = [
    "numRecordsIn",
    "numRecordsOut",
    "numRecordsInPerSecond",
    "numRecordsOutPerSecond",
    "currentInputWatermark",
    "currentOutputWatermark",
];

/// Task-scoped metric ids (the operator's task: chained operators share it).
pub(crate) const TASK_METRICS: [&str; 6] = [
    "busyTimeMsPerSecond",
    "idleTimeMsPerSecond",
    "backPressuredTimeMsPerSecond",
    "numBytesIn",
    "numBytesInPerSecond",
    "checkpointAlignmentTime",
];

/// The value of metric `id` of one subtask, if it is one.
pub(crate) fn subtask_value(m: &SubtaskMetrics, id: &str) -> Option<f64> {
    Some(match id {
        "numRecordsIn" => m.records_in as f64,
        "numRecordsOut" => m.records_out as f64,
        "numRecordsInPerSecond" => m.records_in_per_second,
        "numRecordsOutPerSecond" => m.records_out_per_second,
        "currentInputWatermark" => m.input_watermark as f64,
        "currentOutputWatermark" => m.output_watermark as f64,
        "busyTimeMsPerSecond" => m.busy_ms_per_second,
        "idleTimeMsPerSecond" => m.idle_ms_per_second,
        "backPressuredTimeMsPerSecond" => m.back_pressured_ms_per_second,
        "numBytesIn" => m.bytes_in as f64,
        "numBytesInPerSecond" => m.bytes_in_per_second,
        "checkpointAlignmentTime" => m.checkpoint_alignment_ns? as f64,
        _ => return None,
    })
}

/// What the job-scoped metrics are computed from.
pub(crate) struct JobView<'a> {
    pub(crate) history: &'a CheckpointHistoryView,
    pub(crate) restarts: u64,
    pub(crate) run_started_ms: Option<u64>,
    pub(crate) now_ms: u64,
}

/// Job-scoped metric ids (`GET /jobs/{id}/metrics`).
pub(crate) const JOB_METRICS: [&str; 9] = [
    "lastCheckpointDuration",
    "lastCheckpointSize",
    "lastCheckpointFullSize",
    "lastCheckpointAlignmentTime",
    "numberOfCompletedCheckpoints",
    "numberOfFailedCheckpoints",
    "numberOfInProgressCheckpoints",
    "numRestarts",
    "uptime",
];

impl JobView<'_> {
    /// The latest completed checkpoint (savepoints are not checkpoints
    /// here, as in Flink's checkpoint metrics).
    fn last(&self) -> Option<&CheckpointStats> {
        self.history.latest_completed.as_ref()
    }

    /// The value of job metric `id` (Flink: -1 where no checkpoint
    /// completed yet, uptime 0 once the job no longer runs).
    pub(crate) fn value(&self, id: &str) -> Option<f64> {
        let last = self.last();
        let of = |f: fn(&CheckpointStats) -> u64| last.map_or(-1.0, |s| f(s) as f64);
        let counts = self.history.counts;
        let in_progress = self
            .history
            .in_progress
            .iter()
            .filter(|s| !s.is_savepoint)
            .count();
        Some(match id {
            "lastCheckpointDuration" => of(|s| s.duration.as_millis() as u64),
            "lastCheckpointSize" => of(|s| s.state_size),
            "lastCheckpointFullSize" => of(|s| s.full_state_size),
            "lastCheckpointAlignmentTime" => of(|s| s.alignment_duration.as_millis() as u64),
            "numberOfCompletedCheckpoints" => counts.completed as f64,
            "numberOfFailedCheckpoints" => counts.failed as f64,
            "numberOfInProgressCheckpoints" => in_progress as f64,
            "numRestarts" => self.restarts as f64,
            "uptime" => self
                .run_started_ms
                .map_or(0.0, |t| self.now_ms.saturating_sub(t) as f64),
            _ => return None,
        })
    }

    /// Bytes of operator `uid`'s state in the latest completed checkpoint.
    pub(crate) fn operator_state_size(&self, uid: &str) -> Option<u64> {
        self.last().and_then(|s| s.operators.get(uid).copied())
    }
}

/// This process's CPU time and resident memory, from `/proc/self` (Linux;
/// `None` elsewhere).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessStats {
    /// User plus system CPU time, in nanoseconds.
    pub(crate) cpu_time_ns: u64,
    /// Resident set size, in bytes.
    pub(crate) rss_bytes: u64,
    /// Threads of the process.
    pub(crate) threads: u64,
}

impl ProcessStats {
    pub(crate) fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: fields follow its ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime, stime, num_threads: fields 14, 15 and 20 (1-based), here
        // shifted by the two fields before the name's end.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let threads = fields.get(17)?.parse().ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if hz <= 0 || page <= 0 {
            return None;
        }
        Some(ProcessStats {
            cpu_time_ns: ticks.saturating_mul(1_000_000_000) / hz as u64,
            rss_bytes: pages.saturating_mul(page as u64),
            threads,
        })
    }
}

type Labels = Vec<(String, String)>;

/// Gauges of one name, by label set.
struct Gauges {
    family: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Gauges {
    fn register(registry: &mut Registry, name: &str, help: &str) -> Gauges {
        let family = Family::default();
        registry.register(name, help, family.clone());
        Gauges { family }
    }

    fn set(&self, labels: &Labels, value: f64) {
        self.family.get_or_create(labels).set(value);
    }
}

/// One line of help per metric: Flink's meaning.
fn help(id: &str) -> &'static str {
    match id {
        "numRecordsIn" => "Records this operator subtask received.",
        "numRecordsOut" => "Records this operator subtask emitted.",
        "numRecordsInPerSecond" => "Records received per second (5 s window).",
        "numRecordsOutPerSecond" => "Records emitted per second (5 s window).",
        "currentInputWatermark" => "Last watermark received (ms); minimum i64 before the first.",
        "currentOutputWatermark" => "Last watermark emitted (ms); minimum i64 before the first.",
        "busyTimeMsPerSecond" => {
            "Milliseconds per second the task was neither idle nor back-pressured."
        }
        "idleTimeMsPerSecond" => "Milliseconds per second the task waited for input.",
        "backPressuredTimeMsPerSecond" => {
            "Milliseconds per second the task was blocked on a full output channel."
        }
        "numBytesIn" => "Bytes the task received over the network (local channels carry no bytes).",
        "numBytesInPerSecond" => "Bytes received over the network per second (5 s window).",
        "checkpointAlignmentTime" => {
            "Barrier alignment of the task in the latest completed checkpoint (ns)."
        }
        "lastCheckpointDuration" => {
            "Duration of the last completed checkpoint (ms); -1 before the first."
        }
        "lastCheckpointSize" => {
            "Bytes the last completed checkpoint persisted (incremental: what it uploaded)."
        }
        "lastCheckpointFullSize" => "Full size of the last completed checkpoint in bytes.",
        "lastCheckpointAlignmentTime" => {
            "Longest barrier alignment of the last completed checkpoint (ms)."
        }
        "numberOfCompletedCheckpoints" => "Checkpoints completed.",
        "numberOfFailedCheckpoints" => "Checkpoints failed.",
        "numberOfInProgressCheckpoints" => "Checkpoints in progress.",
        "numRestarts" => "Restarts since the job was submitted.",
        "uptime" => "Milliseconds the job has run without interruption; 0 when not running.",
        _ => "",
    }
}

/// What one job contributes to the exposition.
pub(crate) struct JobMetrics<'a> {
    pub(crate) job_id: String,
    pub(crate) job_name: String,
    pub(crate) vertices: Vec<VertexInfo>,
    /// Per vertex (in `vertices` order), then per subtask.
    pub(crate) subtasks: Vec<Vec<SubtaskMetrics>>,
    /// Native state-backend metrics in the same order (may be empty).
    pub(crate) native: Vec<Vec<Vec<NativeMetric>>>,
    pub(crate) view: JobView<'a>,
}

impl JobMetrics<'_> {
    fn labels(&self) -> Labels {
        vec![
            ("job_id".into(), self.job_id.clone()),
            ("job_name".into(), self.job_name.clone()),
        ]
    }
}

/// One operator subtask's series: the labels of its job (and process),
/// its operator and its index.
struct SubtaskSeries<'a> {
    scope: Labels,
    uid: &'a str,
    name: &'a str,
    index: usize,
    metrics: &'a SubtaskMetrics,
    native: &'a [NativeMetric],
}

/// Registers the operator- and task-scoped metrics of `series`.
fn register_subtasks(registry: &mut Registry, series: &[SubtaskSeries<'_>]) {
    // Operator metrics carry the task's labels and the operator's; task
    // metrics only the task's (the first three).
    let scopes = [
        (
            "taskmanager_job_task_operator",
            &OPERATOR_METRICS[..],
            usize::MAX,
        ),
        ("taskmanager_job_task", &TASK_METRICS[..], 3),
    ];
    for (scope, ids, task_labels) in scopes {
        for id in ids {
            let g = Gauges::register(registry, &format!("{PREFIX}_{scope}_{id}"), help(id));
            for s in series {
                let mut labels = s.scope.clone();
                labels.extend(
                    operator_labels(s.uid, s.name, s.index)
                        .into_iter()
                        .take(task_labels),
                );
                // A value not known here (alignment without the
                // checkpoint history) is left out, not reported as 0.
                if let Some(v) = subtask_value(s.metrics, id) {
                    g.set(&labels, v);
                }
            }
        }
    }
    // RocksDB's native metrics: one name per property, the state's column
    // family as a label (Flink's `column-family-as-variable`).
    let mut native: Vec<(&str, Gauges)> = Vec::new();
    for s in series {
        for m in s.native {
            let at = match native.iter().position(|(p, _)| *p == m.property) {
                Some(at) => at,
                None => {
                    let name = format!(
                        "{PREFIX}_taskmanager_job_task_operator_rocksdb_{}",
                        m.property.replace('-', "_")
                    );
                    let help = "RocksDB's property of the state's column family (Flink's RocksDB native metric).";
                    native.push((m.property, Gauges::register(registry, &name, help)));
                    native.len() - 1
                }
            };
            let mut labels = s.scope.clone();
            labels.extend(operator_labels(s.uid, s.name, s.index));
            labels.push(("column_family".into(), m.state.clone()));
            native[at].1.set(&labels, m.value as f64);
        }
    }
}

/// Registers the process's CPU time, memory and threads under `role`
/// (`jobmanager` or `taskmanager`, as Flink scopes its `Status` metrics).
fn register_process(registry: &mut Registry, role: &str, labels: &Labels, p: ProcessStats) {
    for (name, help, value) in [
        (
            "CPU_Time",
            "CPU time of the process (ns).",
            p.cpu_time_ns as f64,
        ),
        (
            "Memory_RSS",
            "Resident memory of the process (bytes).",
            p.rss_bytes as f64,
        ),
        ("Threads_Count", "Threads of the process.", p.threads as f64),
    ] {
        Gauges::register(
            registry,
            &format!("{PREFIX}_{role}_Status_Process_{name}"),
            help,
        )
        .set(labels, value);
    }
}

fn encode_registry(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The whole exposition of the jobs, in the OpenMetrics text format (which
/// Prometheus scrapes natively): each metric once, with a series per job
/// (and per subtask or operator), then the process's own figures.
pub(crate) fn prometheus_text(jobs: &[JobMetrics<'_>], process: Option<ProcessStats>) -> String {
    let mut registry = Registry::default();
    let series: Vec<SubtaskSeries<'_>> = jobs
        .iter()
        .flat_map(|job| {
            job.vertices.iter().zip(&job.subtasks).enumerate().flat_map(
                move |(vi, (v, per_subtask))| {
                    per_subtask
                        .iter()
                        .enumerate()
                        .map(move |(index, metrics)| SubtaskSeries {
                            scope: job.labels(),
                            uid: &v.uid,
                            name: &v.name,
                            index,
                            metrics,
                            native: job
                                .native
                                .get(vi)
                                .and_then(|n| n.get(index))
                                .map_or(&[][..], Vec::as_slice),
                        })
                },
            )
        })
        .collect();
    register_subtasks(&mut registry, &series);
    for id in JOB_METRICS {
        let g = Gauges::register(
            &mut registry,
            &format!("{PREFIX}_jobmanager_job_{id}"),
            help(id),
        );
        for job in jobs {
            g.set(&job.labels(), job.view.value(id).unwrap_or_default());
        }
    }
    let sizes = Gauges::register(
        &mut registry,
        &format!("{PREFIX}_jobmanager_job_operator_lastCheckpointStateSize"),
        "Bytes of the operator's state in the last completed checkpoint.",
    );
    for job in jobs {
        for v in &job.vertices {
            if let Some(bytes) = job.view.operator_state_size(&v.uid) {
                let mut labels = job.labels();
                labels.push(("operator_id".into(), v.uid.clone()));
                labels.push(("operator_name".into(), v.name.clone()));
                sizes.set(&labels, bytes as f64);
            }
        }
    }
    if let Some(p) = process {
        register_process(&mut registry, "jobmanager", &Vec::new(), p);
    }
    encode_registry(&registry)
}

/// One job's operator subtasks running on a TaskManager: what that
/// TaskManager's own `/metrics` reports (Flink's reporters run in every
/// process and export the metrics of the tasks there).
#[derive(Debug, Clone)]
pub struct HostedJobMetrics {
    /// The job's id.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// Every operator subtask here.
    pub subtasks: Vec<HostedSubtask>,
}

/// One operator subtask on a TaskManager.
#[derive(Debug, Clone)]
pub struct HostedSubtask {
    /// Its operator's uid (Flink's `operator_id` and, a vertex being one
    /// operator in Floe, `task_id`).
    pub uid: String,
    /// Its operator's name.
    pub name: String,
    /// Its subtask index.
    pub index: u32,
    /// Its counters, times and rates.
    pub metrics: SubtaskMetrics,
    /// Its state backend's native metrics (RocksDB properties).
    pub native: Vec<NativeMetric>,
}

/// A TaskManager's exposition: its subtasks' operator and task metrics and
/// its process figures, every series labelled `tm_id` as Flink's are.
pub(crate) fn taskmanager_prometheus_text(
    tm_id: &str,
    jobs: &[HostedJobMetrics],
    process: Option<ProcessStats>,
) -> String {
    let mut registry = Registry::default();
    let tm: Labels = vec![("tm_id".into(), tm_id.to_string())];
    let series: Vec<SubtaskSeries<'_>> = jobs
        .iter()
        .flat_map(|job| {
            let mut scope = tm.clone();
            scope.push(("job_id".into(), job.job_id.clone()));
            scope.push(("job_name".into(), job.job_name.clone()));
            job.subtasks.iter().map(move |s| SubtaskSeries {
                scope: scope.clone(),
                uid: &s.uid,
                name: &s.name,
                index: s.index as usize,
                metrics: &s.metrics,
                native: &s.native,
            })
        })
        .collect();
    register_subtasks(&mut registry, &series);
    if let Some(p) = process {
        register_process(&mut registry, "taskmanager", &tm, p);
    }
    encode_registry(&registry)
}

/// Flink's task and operator variables for subtask `index` of the
/// operator `uid` (a Floe vertex is one operator: its task id and name are
/// the operator's).
fn operator_labels(uid: &str, name: &str, index: usize) -> Labels {
    vec![
        ("task_id".into(), uid.to_string()),
        ("task_name".into(), name.to_string()),
        ("subtask_index".into(), index.to_string()),
        ("operator_id".into(), uid.to_string()),
        ("operator_name".into(), name.to_string()),
    ]
}
