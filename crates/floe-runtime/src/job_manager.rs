//! The JobManager role: plans, deploys and supervises a job.
//!
//! Planning turns the logical graph into tasks: it resolves every operator's
//! max parallelism and uid, validates the graph, and chains each operator
//! into its input's task when the edge is forward with equal parallelism and
//! nothing else consumes the input (no channel hop inside a chain). It then
//! creates one bounded channel per (sender, receiver) pair of every exchange,
//! builds each subtask's chain from its tail to its head, and deploys the
//! tasks to the TaskManager. The first failure cancels every other task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use floe_checkpoint::{CheckpointConfig, ExternalizedCheckpointRetention, OperatorSnapshotInfo};
use floe_core::JobId;
use floe_state::key_group::default_max_parallelism;

use crate::channel::CancelFlag;
use crate::checkpoint::{
    AlignmentMode, CheckpointCoordinator, CheckpointFailure, CheckpointHistory, CheckpointStats,
    CheckpointStore, Clock, CoordinatorEvent, CoordinatorSetup, DERIVED_UID_PREFIX, RestoreError,
    RestoredState, SnapshotTargets, StoreError, SystemClock, TaskInit, read_checkpoint_metadata,
};
use crate::control::{ControlShared, ExceptionRecord, JobControl, VertexInfo, VertexInput};
use crate::deployer::{DeployError, DeployedRun, LocalDeployer, RunRequest, TaskDeployer};
use crate::deployment::task_count;
use crate::error::{FailureCause, OperatorFailure, TaskError};
use crate::gateway::RestorePoint;
use crate::graph::{JobGraph, Partitioning, VertexId, VertexKind};
use crate::job_status::JobStatus;
use crate::metrics::JobMetrics;
use crate::placement::NotEnoughSlots;
pub use crate::plan::{ExecutionPlan, PlannedVertex};
use crate::processing_time::{ProcessingClock, ProcessingTimeService};
use crate::restart::{RestartStrategy, RestartTracker};

/// Why a job could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job graph is not executable (e.g. a forward edge between operators
    /// of different parallelism); the [`GraphError`] says which operator
    /// and why. (Not the error's `source`: the message already includes
    /// it, so an error chain printed with `{:#}` does not repeat it.)
    #[error("invalid job graph: {0}")]
    InvalidGraph(GraphError),
    /// The checkpoint configuration is invalid (a key's value, or a value
    /// set in code).
    #[error("checkpointing: {0}")]
    CheckpointConfig(#[from] floe_checkpoint::CheckpointConfigError),
    /// The checkpoint storage cannot be used.
    #[error("checkpointing: {0}")]
    CheckpointStorage(#[from] floe_checkpoint::StorageError),
    /// The restart strategy in the configuration is invalid. Its message
    /// names the key and the value, as a [`JobError::Config`] does.
    #[error(transparent)]
    RestartStrategy(#[from] crate::restart::RestartConfigError),
    /// The snapshot to start from does not fit the job (or two were
    /// given); the [`RestoreConflict`] says how to resolve it.
    #[error(transparent)]
    Restore(#[from] RestoreConflict),
    /// A snapshot to start or restart from could not be opened or read.
    #[error("{context}: {source}")]
    Snapshot {
        /// What was being restored.
        context: String,
        /// Why it could not be (boxed: a rare error that would make every
        /// `JobError` large).
        source: Box<RestoreError>,
    },
    /// The job's configuration is invalid.
    #[error(transparent)]
    Config(#[from] floe_core::ConfigError),
    /// A task failed and the job was cancelled.
    #[error("job '{job_name}' ({job_id}) failed: {failure}")]
    Failed {
        /// The job's name.
        job_name: String,
        /// The job's id.
        job_id: floe_core::JobId,
        /// The first failure.
        failure: Box<OperatorFailure>,
    },
    /// The job was cancelled before it finished.
    #[error("job '{job_name}' ({job_id}) was cancelled")]
    Cancelled {
        /// The job's name.
        job_name: String,
        /// The job's id.
        job_id: floe_core::JobId,
    },
    /// The job's graph was taken for a cluster (`capture_job` in
    /// floe-api), not run in this process.
    #[error("the job's graph was captured, not run")]
    PlanCaptured,
    /// A cluster could not run the job (see [`DeployError::Cluster`]).
    #[error("cannot deploy the job: {reason}")]
    Deploy {
        /// Why.
        reason: String,
    },
    /// The runtime could not start a task thread.
    #[error("cannot start task '{task}': {reason}")]
    Spawn {
        /// The task.
        task: String,
        /// The OS error.
        reason: std::io::Error,
    },
}

/// Why a job graph cannot be executed, found while planning it, before any
/// task runs: one variant per rule, carrying the operators and numbers
/// involved, so a caller (a test, a tool building graphs) can tell which
/// rule was broken without reading the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The job has no operators at all (Flink refuses to execute an empty
    /// environment too).
    #[error("no operators defined in the job: add a source and a sink before execute()")]
    NoOperators,
    /// An operator with no subtasks.
    #[error("operator '{operator}' has parallelism 0")]
    ZeroParallelism {
        /// The operator's name.
        operator: String,
    },
    /// A source that cannot run in parallel (a collection, a socket) was
    /// given more than one subtask.
    #[error("source '{operator}' is not parallel and must have parallelism 1, not {parallelism}")]
    NonParallelSource {
        /// The source's name.
        operator: String,
        /// The parallelism it was given.
        parallelism: u32,
    },
    /// A max parallelism (number of key groups) outside Flink's bounds.
    #[error("operator '{operator}' has max parallelism {max_parallelism}, outside 1..=32768")]
    MaxParallelismOutOfRange {
        /// The operator's name.
        operator: String,
        /// Its max parallelism (set, or adopted from a snapshot).
        max_parallelism: u32,
    },
    /// More subtasks than key groups: some subtask would own none.
    #[error(
        "operator '{operator}' has parallelism {parallelism} above its max parallelism {max_parallelism}"
    )]
    ParallelismAboveMax {
        /// The operator's name.
        operator: String,
        /// Its parallelism.
        parallelism: u32,
        /// Its max parallelism.
        max_parallelism: u32,
    },
    /// Two operators with one uid: their state in a snapshot could not be
    /// told apart.
    #[error(
        "uid '{uid}' is used by more than one operator ('{first}' and '{second}'); uids must be unique"
    )]
    DuplicateUid {
        /// The uid.
        uid: String,
        /// The operator that has it first.
        first: String,
        /// Another operator that has it.
        second: String,
    },
    /// A forward edge connects each sending subtask to one receiving
    /// subtask, so both sides need the same parallelism.
    #[error(
        "forward partitioning from '{upstream}' (parallelism {upstream_parallelism}) to '{downstream}' (parallelism {downstream_parallelism}) does not allow a change of parallelism; use rebalance()"
    )]
    ForwardChangesParallelism {
        /// The sending operator's name.
        upstream: String,
        /// Its parallelism.
        upstream_parallelism: u32,
        /// The receiving operator's name.
        downstream: String,
        /// Its parallelism.
        downstream_parallelism: u32,
    },
    /// An edge into a source.
    #[error("source '{operator}' cannot have inputs")]
    SourceWithInputs {
        /// The source's name.
        operator: String,
    },
    /// An operator (not a source) that nothing feeds.
    #[error("operator '{operator}' has no input")]
    NoInput {
        /// The operator's name.
        operator: String,
    },
}

/// Why the snapshot a job starts (or restarts) from cannot be restored into
/// it as the job stands. Found while planning, before any task runs; each
/// message says what to change. Typed so a caller can tell a setting to
/// change (max parallelism, parallelism) from state to map or skip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreConflict {
    /// The operator's max parallelism is set to another value than the
    /// snapshot's: its key groups would not match.
    #[error(
        "operator '{operator}' (uid {uid}) has max parallelism {max_parallelism}, but the snapshot was taken with max parallelism {snapshot_max_parallelism}: the number of key groups cannot change across a restore; set it back to {snapshot_max_parallelism} or remove the setting to adopt it"
    )]
    MaxParallelismChanged {
        /// The operator's name.
        operator: String,
        /// Its uid.
        uid: String,
        /// The max parallelism set now.
        max_parallelism: u32,
        /// The snapshot's.
        snapshot_max_parallelism: u32,
    },
    /// An unaligned checkpoint's in-flight records of the operator were
    /// partitioned for its old subtasks; replayed at another parallelism
    /// they would reach subtasks that do not own their keys.
    #[error(
        "cannot restore operator '{operator}' (uid {uid}) at parallelism {parallelism}: checkpoint {checkpoint_id} is unaligned and holds in-flight records of it taken at parallelism {snapshot_parallelism}, which cannot be redistributed; restore it at parallelism {snapshot_parallelism}, or take a savepoint or an aligned checkpoint to rescale"
    )]
    UnalignedRescale {
        /// The operator's name.
        operator: String,
        /// Its uid.
        uid: String,
        /// Its parallelism now.
        parallelism: u32,
        /// The checkpoint.
        checkpoint_id: u64,
        /// The parallelism the records were taken at.
        snapshot_parallelism: u32,
    },
    /// The snapshot holds state of operators the job does not have (and
    /// `-n`/`--allowNonRestoredState` was not given).
    #[error(
        "the snapshot holds state of operators that are not in this job: {} (uids). Give the operators these uids with uid(..), or pass -n/--allowNonRestoredState to skip that state",
        uids.join(", ")
    )]
    UnmatchedState {
        /// Their uids, sorted.
        uids: Vec<String>,
    },
    /// Both a savepoint (`-s`) and a checkpoint (`--fromCheckpoint`) to
    /// start from.
    #[error(
        "both -s {savepoint} and --fromCheckpoint {checkpoint} were given: restore from one snapshot"
    )]
    TwoSnapshots {
        /// The `-s` path.
        savepoint: String,
        /// The `--fromCheckpoint` path.
        checkpoint: String,
    },
}

/// Runtime settings that shape execution (from configuration).
#[derive(Debug, Clone)]
pub struct ExecutionSettings {
    /// Records per batch between tasks.
    pub batch_size: usize,
    /// Batches per channel before the sender blocks.
    pub channel_capacity: usize,
    /// Job-wide max parallelism, when configured.
    pub max_parallelism: Option<u32>,
    /// Checkpointing, when enabled: its configuration (validated, with an
    /// interval) and where checkpoints go.
    pub checkpointing: Option<(CheckpointConfig, Arc<dyn CheckpointStore>)>,
    /// What to do when a task fails.
    pub restart: RestartStrategy,
    /// Start from this checkpoint's state instead of empty state.
    pub restore: Option<Arc<RestoredState>>,
    /// The job's id, when chosen before submission (its checkpoint
    /// directory is named by it).
    pub job_id: Option<JobId>,
    /// Where savepoints go when a request names no directory
    /// (`state.savepoints.dir`).
    pub savepoint_dir: Option<String>,
    /// The path `restore` was loaded from (shown by the REST API).
    pub restore_path: Option<String>,
    /// `-n`: snapshot state that maps to no operator is skipped instead of
    /// refused.
    pub allow_non_restored_state: bool,
    /// `queryable-state.enable`: keyed operators announce their queryable
    /// states and tasks answer queries.
    pub queryable_state: bool,
    /// `queryable-state.max-staleness`: how old the published state a
    /// query is answered from may be (zero: always ask the task).
    pub queryable_state_max_staleness: std::time::Duration,
    /// Where tasks read processing time (a manual clock in tests).
    pub processing_clock: ProcessingClock,
    /// `pipeline.auto-watermark-interval`.
    pub auto_watermark_interval: Duration,
    /// `metrics.io.enabled`: operators count their records and watermarks.
    pub io_metrics: bool,
    /// The configuration the job runs with (keys and raw values, sorted by
    /// key), shown by the REST API and the web dashboard; it shapes nothing
    /// here (the fields above are what was read from it).
    pub configuration: Vec<(String, String)>,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        ExecutionSettings {
            batch_size: 1024,
            channel_capacity: 8,
            max_parallelism: None,
            checkpointing: None,
            restart: RestartStrategy::None,
            restore: None,
            job_id: None,
            savepoint_dir: None,
            restore_path: None,
            allow_non_restored_state: false,
            queryable_state: false,
            queryable_state_max_staleness: crate::queryable::DEFAULT_MAX_STALENESS,
            processing_clock: ProcessingClock::System,
            auto_watermark_interval: Duration::from_millis(200),
            io_metrics: true,
            configuration: Vec::new(),
        }
    }
}

/// The outcome of a job that ran to its end.
#[derive(Debug, Clone)]
pub struct JobExecutionResult {
    /// The job's id.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// Wall time from deployment to the last task's end.
    pub net_runtime: Duration,
    /// Times the job restarted after a failure.
    pub restarts: u32,
    /// Statistics of the checkpoints and savepoints, in the order they
    /// ended (the last [`crate::checkpoint::CHECKPOINT_HISTORY_LIMIT`]).
    pub checkpoints: Vec<CheckpointStats>,
}

/// Plans and runs jobs.
#[derive(Debug, Clone, Default)]
pub struct JobManager {
    settings: ExecutionSettings,
}

/// A submitted job: wait for it or cancel it. The job runs, and restarts
/// after failures, whether or not anyone waits (Flink's `executeAsync`):
/// a supervisor thread drives it from submission to its end, and
/// [`JobClient::wait`] only collects the result. A client dropped without
/// waiting leaves the job running until it ends or is cancelled through
/// its [`JobControl`] (REST, CLI).
pub struct JobClient {
    job_id: JobId,
    control: JobControl,
    supervisor: JoinHandle<Result<JobExecutionResult, JobError>>,
    /// Services that live as long as the job (its queryable-state
    /// endpoint registration): the supervisor drops them when the job
    /// ends.
    attached: Attached,
}

/// Resources kept alive for as long as a job runs; `None` once it ended
/// (a resource attached then is dropped at once).
type Attached = Arc<Mutex<Option<Vec<Box<dyn std::any::Any + Send>>>>>;

/// Drives one submitted job on its own thread: deploys its runs, watches
/// their tasks, restarts after failures, and ends it.
struct JobSupervisor {
    job_id: JobId,
    /// Where the runs' tasks go.
    deployer: Box<dyn TaskDeployer>,
    /// The number of the next run (attempt).
    attempt: u64,
    job_name: String,
    manager: JobManager,
    graph: JobGraph,
    plan: ExecutionPlan,
    user_cancel: CancelFlag,
    run: Option<JobRun>,
    next_checkpoint_id: u64,
    started: Instant,
    restarts: RestartTracker,
    checkpoint_history: CheckpointHistory,
    /// Aborted snapshots to remove once the run's uploads are over, with
    /// the run's targets.
    orphans: Vec<(Vec<u64>, Arc<SnapshotTargets>)>,
    /// The handle the REST API uses.
    control: JobControl,
}

fn derived_uid(index: usize, input_uids: &[&str]) -> String {
    // Stable for an unchanged graph: position plus the uids of the inputs.
    let h = floe_state::key_hash(&(index as u64, input_uids));
    format!("{}{index}-{h:08x}", DERIVED_UID_PREFIX)
}

impl JobManager {
    /// A JobManager with the given settings.
    pub fn new(settings: ExecutionSettings) -> Self {
        JobManager { settings }
    }

    /// Validates the graph and decides chains, uids and max parallelism.
    pub fn plan(&self, graph: &JobGraph) -> Result<ExecutionPlan, JobError> {
        let mut vertices: Vec<PlannedVertex> = Vec::with_capacity(graph.vertices.len());
        // Uid → the name of the operator that has it.
        let mut seen_uids: HashMap<String, &String> = HashMap::new();
        for (i, v) in graph.vertices.iter().enumerate() {
            let id = VertexId(i);
            if v.parallelism == 0 {
                return Err(JobError::InvalidGraph(GraphError::ZeroParallelism {
                    operator: v.name.clone(),
                }));
            }
            if v.non_parallel && v.parallelism != 1 {
                return Err(JobError::InvalidGraph(GraphError::NonParallelSource {
                    operator: v.name.clone(),
                    parallelism: v.parallelism,
                }));
            }
            let input_uids: Vec<&str> = graph
                .inputs(id)
                .map(|(_, e)| &*vertices[e.source.0].uid)
                .collect();
            let uid = match &v.uid {
                Some(u) => u.clone(),
                None => derived_uid(i, &input_uids),
            };
            let explicit = v.max_parallelism.or(self.settings.max_parallelism);
            let snapshot = self
                .settings
                .restore
                .as_ref()
                .and_then(|r| r.operator_info.get(&uid));
            let max_p = match (explicit, snapshot) {
                (Some(m), Some(s)) if m != s.max_parallelism => {
                    return Err(RestoreConflict::MaxParallelismChanged {
                        operator: v.name.clone(),
                        uid,
                        max_parallelism: m,
                        snapshot_max_parallelism: s.max_parallelism,
                    }
                    .into());
                }
                (Some(m), _) => m,
                // A derived max parallelism adopts the snapshot's, as in
                // Flink, so rescaling keeps the key groups.
                (None, Some(s)) => s.max_parallelism,
                (None, None) => default_max_parallelism(v.parallelism),
            };
            if let Some(restore) = &self.settings.restore
                && let Some(op) = restore.operators.get(&uid)
                && !op.channel.is_empty()
            {
                // In-flight records were partitioned for the old subtasks:
                // replayed at another parallelism they reach subtasks that
                // do not own their keys, on every attempt.
                let old_p = snapshot.map_or_else(
                    || op.channel.keys().max().map_or(0, |m| m + 1),
                    |s| s.parallelism,
                );
                if old_p != v.parallelism || op.channel.keys().any(|s| *s >= v.parallelism) {
                    return Err(RestoreConflict::UnalignedRescale {
                        operator: v.name.clone(),
                        uid,
                        parallelism: v.parallelism,
                        checkpoint_id: restore.checkpoint_id,
                        snapshot_parallelism: old_p,
                    }
                    .into());
                }
            }
            if !(1..=32768).contains(&max_p) {
                return Err(JobError::InvalidGraph(
                    GraphError::MaxParallelismOutOfRange {
                        operator: v.name.clone(),
                        max_parallelism: max_p,
                    },
                ));
            }
            if v.parallelism > max_p {
                return Err(JobError::InvalidGraph(GraphError::ParallelismAboveMax {
                    operator: v.name.clone(),
                    parallelism: v.parallelism,
                    max_parallelism: max_p,
                }));
            }
            if let Some(first) = seen_uids.insert(uid.clone(), &v.name) {
                return Err(JobError::InvalidGraph(GraphError::DuplicateUid {
                    uid,
                    first: first.clone(),
                    second: v.name.clone(),
                }));
            }
            vertices.push(PlannedVertex {
                uid: uid.into(),
                max_parallelism: max_p,
                max_parallelism_explicit: explicit.is_some(),
            });
        }
        if let Some(restore) = &self.settings.restore {
            let mut unmatched: Vec<&str> = restore
                .operators
                .keys()
                .map(String::as_str)
                .filter(|u| !seen_uids.contains_key(*u))
                .collect();
            unmatched.sort_unstable();
            if !unmatched.is_empty() {
                if !self.settings.allow_non_restored_state {
                    return Err(RestoreConflict::UnmatchedState {
                        uids: unmatched.iter().map(|u| u.to_string()).collect(),
                    }
                    .into());
                }
                tracing::warn!(
                    "skipping the snapshot's state of operators not in this job (allowNonRestoredState): {}",
                    unmatched.join(", ")
                );
            }
        }
        for e in &graph.edges {
            let (s, t) = (&graph.vertices[e.source.0], &graph.vertices[e.target.0]);
            if e.partitioning == Partitioning::Forward && s.parallelism != t.parallelism {
                return Err(JobError::InvalidGraph(
                    GraphError::ForwardChangesParallelism {
                        upstream: s.name.clone(),
                        upstream_parallelism: s.parallelism,
                        downstream: t.name.clone(),
                        downstream_parallelism: t.parallelism,
                    },
                ));
            }
            if matches!(t.kind, VertexKind::Source(_)) {
                return Err(JobError::InvalidGraph(GraphError::SourceWithInputs {
                    operator: t.name.clone(),
                }));
            }
        }
        let mut chained_edges = HashSet::new();
        let mut chain_of: Vec<usize> = Vec::with_capacity(graph.vertices.len());
        let mut chains: Vec<Vec<VertexId>> = Vec::new();
        for (i, v) in graph.vertices.iter().enumerate() {
            let id = VertexId(i);
            let inputs: Vec<(usize, _)> = graph.inputs(id).collect();
            let chain_into = match inputs.as_slice() {
                [(ei, e)]
                    if e.partitioning == Partitioning::Forward
                        && e.side_output.is_none()
                        && graph.vertices[e.source.0].parallelism == v.parallelism
                        && graph.outputs(e.source).count() == 1 =>
                {
                    Some((*ei, chain_of[e.source.0]))
                }
                _ => None,
            };
            if matches!(v.kind, VertexKind::Operator(_)) && inputs.is_empty() {
                return Err(JobError::InvalidGraph(GraphError::NoInput {
                    operator: v.name.clone(),
                }));
            }
            match chain_into {
                Some((ei, c)) => {
                    chained_edges.insert(ei);
                    chains[c].push(id);
                    chain_of.push(c);
                }
                None => {
                    chains.push(vec![id]);
                    chain_of.push(chains.len() - 1);
                }
            }
        }
        Ok(ExecutionPlan {
            vertices,
            chains,
            chained_edges,
        })
    }

    /// Plans, deploys and waits for a job.
    pub fn execute(
        &self,
        job_name: &str,
        graph: &JobGraph,
    ) -> Result<JobExecutionResult, JobError> {
        self.submit(job_name, graph)?.wait()
    }

    /// Plans and deploys a job; returns at once.
    pub fn submit(&self, job_name: &str, graph: &JobGraph) -> Result<JobClient, JobError> {
        self.submit_to(job_name, graph, Box::new(LocalDeployer))
    }

    /// Plans a job and deploys its tasks with `deployer` (a cluster's
    /// TaskManagers); returns at once.
    pub fn submit_to(
        &self,
        job_name: &str,
        graph: &JobGraph,
        deployer: Box<dyn TaskDeployer>,
    ) -> Result<JobClient, JobError> {
        let plan = self.plan(graph)?;
        let job_id = self.settings.job_id.unwrap_or_else(JobId::random);
        eprintln!("Job {job_name} started with JobID {job_id}");
        let checkpoint_history = CheckpointHistory::default();
        let user_cancel = CancelFlag::new();
        let metrics = plan.new_metrics(graph);
        metrics.set_io_counting(self.settings.io_metrics);
        let control = JobControl {
            shared: Arc::new(ControlShared {
                job_id,
                job_name: job_name.to_string(),
                start_time_ms: SystemClock.epoch_ms(),
                end_time_ms: Mutex::new(None),
                status: Mutex::new(JobStatus::Running),
                vertices: graph
                    .vertices
                    .iter()
                    .zip(&plan.vertices)
                    .enumerate()
                    .map(|(i, (v, p))| VertexInfo {
                        inputs: graph
                            .edges
                            .iter()
                            .filter(|e| e.target.0 == i)
                            .map(|e| VertexInput {
                                source: e.source.0,
                                partitioning: e.partitioning,
                                side_output: e.side_output.as_ref().map(|s| s.tag.to_string()),
                            })
                            .collect(),
                        name: v.name.clone(),
                        uid: p.uid.to_string(),
                        parallelism: v.parallelism,
                        max_parallelism: p.max_parallelism,
                        max_parallelism_explicit: p.max_parallelism_explicit,
                    })
                    .collect(),
                run_parallelism: Mutex::new(None),
                history: checkpoint_history.clone(),
                user_cancel: user_cancel.clone(),
                default_savepoint_dir: self.settings.savepoint_dir.clone(),
                savepoints: Mutex::new(Default::default()),
                coordinator: Mutex::new(None),
                restored_from: self.settings.restore.as_ref().map(|r| {
                    (
                        r.checkpoint_id,
                        self.settings.restore_path.clone().unwrap_or_default(),
                    )
                }),
                stopping: Mutex::new(None),
                stopped: Default::default(),
                metrics: metrics.clone(),
                configuration: self.settings.configuration.clone(),
                restart_strategy: self.settings.restart.clone(),
                exceptions: Mutex::new(Default::default()),
                queryable: Arc::new(
                    crate::queryable::QueryableStateRegistry::new(
                        job_id,
                        self.settings.queryable_state,
                    )
                    .with_max_staleness(self.settings.queryable_state_max_staleness),
                ),
            }),
        };
        // The supervisor's thread first: once the first run is deployed,
        // nothing may fail before it is supervised.
        let (hand_over, handed) = crossbeam_channel::bounded::<JobSupervisor>(1);
        let attached: Attached = Arc::new(Mutex::new(Some(Vec::new())));
        let supervisor = {
            let attached = attached.clone();
            std::thread::Builder::new()
                .name(format!("job-{job_id}"))
                .spawn(move || {
                    let Ok(supervisor) = handed.recv() else {
                        // The first deployment failed: submit reported it.
                        return Err(JobError::Deploy {
                            reason: "the job was never deployed".into(),
                        });
                    };
                    let control = supervisor.control.clone();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        supervisor.wait()
                    }));
                    let ended = attached.lock().unwrap_or_else(|p| p.into_inner()).take();
                    drop(ended);
                    match result {
                        Ok(result) => result,
                        Err(panic) => {
                            // A job nobody waits for must still end: its
                            // status, and the sampler that follows it.
                            control.set_status(JobStatus::Failed);
                            std::panic::resume_unwind(panic)
                        }
                    }
                })
                .map_err(|reason| JobError::Spawn {
                    task: "job supervisor".into(),
                    reason,
                })?
        };
        let mut client = JobSupervisor {
            job_id,
            deployer,
            attempt: 0,
            job_name: job_name.to_string(),
            manager: self.clone(),
            graph: graph.clone(),
            plan,
            user_cancel,
            run: None,
            next_checkpoint_id: 0,
            started: Instant::now(),
            restarts: RestartTracker::new(self.settings.restart.clone()),
            checkpoint_history,
            orphans: Vec::new(),
            control,
        };
        client.deploy(self.settings.restore.clone())?;
        let control = client.control.clone();
        hand_over
            .send(client)
            .expect("the supervisor thread waits for its job");
        let shared = Arc::downgrade(&control.shared);
        let alive = move || {
            shared
                .upgrade()
                .is_some_and(|s| !s.status.lock().is_ok_and(|s| s.is_terminal()))
        };
        if let Err(e) = JobMetrics::start_sampler(&metrics, alive) {
            // Counters still work; only per-second rates stay at zero.
            tracing::warn!(job = %job_id, "cannot start the metrics sampler: {e}");
        }
        Ok(JobClient {
            job_id,
            control,
            supervisor,
            attached,
        })
    }
}

impl CheckpointFailure {
    /// The job failure it causes, attributed to the checkpoint coordinator.
    fn into_failure(self) -> Box<OperatorFailure> {
        Box::new(OperatorFailure {
            operator: "checkpoint coordinator".into(),
            uid: String::new(),
            subtask: 0,
            parallelism: 1,
            cause: FailureCause::Error(anyhow::Error::new(self)),
        })
    }
}

/// What each snapshot's metadata records about the job's operators.
/// `run_graph` is the graph the run executes: a restart on fewer slots
/// snapshots at its lower parallelism.
fn operator_info(
    vertices: &[VertexInfo],
    run_graph: &JobGraph,
) -> BTreeMap<String, OperatorSnapshotInfo> {
    vertices
        .iter()
        .zip(&run_graph.vertices)
        .map(|(v, run)| {
            (
                v.uid.clone(),
                OperatorSnapshotInfo {
                    name: v.name.clone(),
                    parallelism: run.parallelism,
                    max_parallelism: v.max_parallelism,
                    max_parallelism_explicit: v.max_parallelism_explicit,
                },
            )
        })
        .collect()
}

/// The coordinator thread of a run and the channel to its events.
type CoordinatorThread = (
    crossbeam_channel::Sender<CoordinatorEvent>,
    JoinHandle<(Result<(), CheckpointFailure>, CheckpointCoordinator)>,
);

/// The threads and channels of one run (attempt) of a job.
struct JobRun {
    cancel: CancelFlag,
    hosted: Box<dyn DeployedRun>,
    coordinator: Option<CoordinatorThread>,
}

impl JobSupervisor {
    /// Deploys one run of the job, restoring `restore` if given.
    fn deploy(&mut self, restore: Option<Arc<RestoredState>>) -> Result<(), JobError> {
        let cancel = CancelFlag::new();
        tracing::info!(job_id = %self.job_id, job = %self.job_name, tasks = task_count(&self.graph, &self.plan), attempt = self.attempt, restored = restore.as_ref().map(|r| r.checkpoint_id), "deploying job");
        // The coordinator always runs: without periodic checkpointing it
        // still takes savepoints.
        let (settings, checkpoint_store) = match &self.manager.settings.checkpointing {
            Some((settings, store)) => (settings.clone(), Some(store.clone())),
            None => (CheckpointConfig::default(), None),
        };
        let store = Arc::new(SnapshotTargets::new(checkpoint_store));
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        self.control
            .shared
            .metrics
            .run_started(SystemClock.epoch_ms());
        let restore_point = restore.as_ref().map(|r| {
            // The state the job started from is named by its path; a
            // restart's by its id in the job's checkpoints.
            match (
                &self.manager.settings.restore,
                &self.manager.settings.restore_path,
            ) {
                (Some(first), Some(path)) if Arc::ptr_eq(first, r) => {
                    RestorePoint::Snapshot(path.clone())
                }
                _ => RestorePoint::Checkpoint(r.checkpoint_id),
            }
        });
        // A restart whose slots are gone runs at the slots left, with the
        // key groups spread over fewer subtasks (Flink's adaptive
        // scheduler); so does a job a restarted JobManager recovers from
        // its checkpoint. A first run waits for the parallelism it was
        // given. In-flight records of an unaligned checkpoint were
        // partitioned for the subtasks of their time: a run restoring them
        // runs at that parallelism and waits for its slots.
        let in_flight = restore.as_ref().filter(|r| r.has_in_flight_records());
        let mut rescaled_to = match in_flight {
            Some(r) => self.in_flight_parallelism(r)?,
            None => None,
        };
        let may_downscale = in_flight.is_none()
            && (self.attempt > 0 || matches!(restore_point, Some(RestorePoint::Checkpoint(_))));
        let (mut hosted, run_graph) = loop {
            let graph = match rescaled_to {
                None => self.graph.clone(),
                Some(p) => crate::plan::cap_parallelism(&self.graph, p),
            };
            let started = self.deployer.start(RunRequest {
                job_id: self.job_id,
                job_name: &self.job_name,
                graph: &graph,
                plan: &self.plan,
                attempt: self.attempt,
                cancel: &cancel,
                metrics: &self.control.shared.metrics,
                channel_capacity: self.manager.settings.channel_capacity,
                batch_size: self.manager.settings.batch_size,
                init: TaskInit {
                    restore: restore.clone(),
                    checkpointing: self.manager.settings.checkpointing.is_some(),
                    queryable: None,
                    time: ProcessingTimeService::new(
                        self.manager.settings.processing_clock.clone(),
                    ),
                    auto_watermark_interval: self.manager.settings.auto_watermark_interval,
                },
                restore_point: restore_point.clone(),
                alignment: AlignmentMode::of(&settings),
                store: store.clone(),
                events: event_tx.clone(),
                queryable: self.control.queryable_state().clone(),
                rescaled_to,
                may_downscale,
            });
            match started {
                Ok(hosted) => break (hosted, graph),
                // Fewer slots each time (slots lost while waiting), so this
                // ends.
                Err(DeployError::NotEnoughSlots(NotEnoughSlots { needed, available }))
                    if may_downscale && available > 0 && available < needed =>
                {
                    eprintln!(
                        "Job {} restarts at parallelism {available}: the cluster offers {available} of the {needed} task slots it needs",
                        self.job_id
                    );
                    rescaled_to = Some(available);
                }
                Err(e) => {
                    return Err(match e {
                        DeployError::Spawn(e) => JobError::Spawn {
                            task: e.task,
                            reason: e.source,
                        },
                        DeployError::Cluster(reason) => JobError::Deploy { reason },
                        DeployError::NotEnoughSlots(e) => JobError::Deploy {
                            reason: e.to_string(),
                        },
                    });
                }
            }
        };
        self.control.set_run_parallelism(
            rescaled_to.map(|_| run_graph.vertices.iter().map(|v| v.parallelism).collect()),
        );
        self.attempt += 1;
        let last_id = self
            .next_checkpoint_id
            .max(restore.as_ref().map_or(0, |r| r.checkpoint_id));
        let retained = store.completed().unwrap_or_default();
        let mut c = CheckpointCoordinator::new(
            CoordinatorSetup {
                settings,
                store,
                job: Some(Arc::new(self.control.clone())),
                operator_info: operator_info(self.control.vertices(), &run_graph),
                tasks: hosted.task_commands(),
                layout: crate::deployment::task_layout(&run_graph, &self.plan),
                last_id,
                retained,
                history: self.checkpoint_history.clone(),
            },
            SystemClock,
        );
        let handle = match std::thread::Builder::new()
            .name("checkpoint-coordinator".into())
            .spawn(move || {
                let r = c.run(&event_rx);
                (r, c)
            }) {
            Ok(h) => h,
            Err(reason) => {
                cancel.cancel();
                hosted.join_tasks();
                return Err(JobError::Spawn {
                    task: "checkpoint coordinator".into(),
                    reason,
                });
            }
        };
        self.control.set_coordinator(Some(event_tx.clone()));
        self.run = Some(JobRun {
            cancel,
            hosted,
            coordinator: Some((event_tx, handle)),
        });
        Ok(())
    }

    /// The parallelism cap a run restoring `restore`'s in-flight records
    /// must run at: the one they were taken at (`None`: the job's own).
    fn in_flight_parallelism(&self, restore: &RestoredState) -> Result<Option<u32>, JobError> {
        let taken_at = |i: usize| {
            restore
                .operator_info
                .get(&*self.plan.vertices[i].uid)
                .map(|o| o.parallelism)
        };
        let cap = (0..self.graph.vertices.len())
            .filter_map(|i| taken_at(i).filter(|p| *p != self.graph.vertices[i].parallelism))
            .max();
        let Some(cap) = cap else {
            return Ok(None);
        };
        let capped = crate::plan::cap_parallelism(&self.graph, cap);
        if let Some((v, p)) = capped
            .vertices
            .iter()
            .enumerate()
            .find_map(|(i, v)| taken_at(i).filter(|p| *p != v.parallelism).map(|p| (v, p)))
        {
            return Err(JobError::Deploy {
                reason: format!(
                    "checkpoint {} holds in-flight records of operator '{}' taken at parallelism {p}, which this job cannot run at (its other operators were taken at parallelism {cap})",
                    restore.checkpoint_id, v.name
                ),
            });
        }
        Ok(Some(cap))
    }

    /// Stops the current run's coordinator and uploaders, keeping the
    /// checkpoint statistics and the next checkpoint id.
    fn stop_checkpointing(&mut self, run: &mut JobRun) -> Option<CheckpointFailure> {
        let (events, handle) = run.coordinator.take()?;
        self.control.set_coordinator(None);
        let _ = events.send(CoordinatorEvent::Shutdown);
        drop(events);
        let (result, mut coordinator) = handle.join().ok()?;
        self.next_checkpoint_id = self.next_checkpoint_id.max(coordinator.last_triggered());
        let (orphans, targets) = coordinator.take_orphans();
        if !orphans.is_empty() {
            self.orphans.push((orphans, targets));
        }
        result.err()
    }

    /// Removes what late uploads wrote for aborted checkpoints (the run's
    /// uploaders have stopped, so nothing is written after this).
    fn remove_orphans(&mut self) {
        for (ids, targets) in self.orphans.drain(..) {
            for id in ids {
                // The run's targets: an aborted savepoint's directory is
                // its own, not under the checkpoint storage.
                if let Err(e) = targets.discard_incomplete(id) {
                    tracing::warn!(checkpoint = id, "cannot remove an aborted snapshot: {e}");
                }
            }
        }
    }

    /// Deletes shared (incremental) state files no completed checkpoint
    /// references; between runs, when no upload is in flight.
    fn sweep_shared_state(&self) {
        let Some((_, store)) = &self.manager.settings.checkpointing else {
            return;
        };
        match crate::checkpoint::sweep_unreferenced(store.as_ref()) {
            Ok(stray) if !stray.is_empty() => tracing::info!(
                job = %self.job_id,
                files = stray.len(),
                "deleted shared state files no retained checkpoint references"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                job = %self.job_id,
                "cannot sweep the shared state directory (nothing deleted): {e}"
            ),
        }
    }

    /// The latest completed checkpoint, loaded for a restart.
    fn latest_checkpoint(&self) -> Result<Option<Arc<RestoredState>>, StoreError> {
        let Some((_, store)) = &self.manager.settings.checkpointing else {
            // Without checkpointing a restart goes back to where the job
            // started: the checkpoint it was started from, if any.
            return Ok(self.manager.settings.restore.clone());
        };
        let Some(id) = store.completed()?.last().copied() else {
            return Ok(self.manager.settings.restore.clone());
        };
        let meta = read_checkpoint_metadata(store.as_ref(), id)?;
        Ok(Some(Arc::new(RestoredState::load(
            &meta,
            store.clone(),
            true,
        )?)))
    }

    /// Discards every completed checkpoint of the job (Flink discards
    /// checkpoints of a finished job, and of a cancelled one unless they are
    /// retained on cancellation; a failed job keeps them for a restart).
    fn discard_checkpoints(&self, cancelled: bool) {
        let Some((settings, store)) = &self.manager.settings.checkpointing else {
            return;
        };
        if cancelled
            && settings.externalized_checkpoint_retention()
                == ExternalizedCheckpointRetention::RetainOnCancellation
        {
            return;
        }
        let mut all_gone = true;
        for id in store.completed().unwrap_or_default() {
            if let Err(e) = store.discard(id) {
                all_gone = false;
                tracing::warn!(checkpoint = id, "cannot discard checkpoint: {e}");
            }
        }
        // Incremental state goes with the last checkpoint referencing it.
        if all_gone
            && let Some(shared) = store.shared_state()
            && let Err(e) = shared.discard_shared()
        {
            tracing::warn!("cannot discard the job's shared state: {e}");
        }
    }
}

impl JobClient {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Keeps `resource` alive as long as the job runs: a service serving
    /// the job from outside (queryable state) goes when the job does.
    pub fn attach(&mut self, resource: Box<dyn std::any::Any + Send>) {
        let unneeded = match self
            .attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(resources) => {
                resources.push(resource);
                None
            }
            // The job has ended: nothing to keep it for.
            None => Some(resource),
        };
        drop(unneeded);
    }

    /// A handle to control the job from other threads (status,
    /// savepoints, stop, cancel).
    pub fn control(&self) -> JobControl {
        self.control.clone()
    }

    /// Asks every task to stop; `wait` then reports the cancellation.
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// Statistics of this job's checkpoints that have ended so far
    /// (completed or failed; the last
    /// [`crate::checkpoint::CHECKPOINT_HISTORY_LIMIT`]), readable while the
    /// job runs.
    pub fn checkpoint_stats(&self) -> Vec<CheckpointStats> {
        self.control.checkpoint_stats()
    }

    /// Whether the job has ended (`wait` returns at once).
    pub fn is_finished(&self) -> bool {
        self.supervisor.is_finished()
    }

    /// Waits for the job to end. A task failure cancels the run; the restart
    /// strategy then either restarts it from the latest completed checkpoint
    /// or fails the job with the first failure.
    pub fn wait(self) -> Result<JobExecutionResult, JobError> {
        match self.supervisor.join() {
            Ok(result) => result,
            // The supervisor's panic is the waiter's, as if it had run the
            // job on this thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl JobSupervisor {
    /// Supervises the job until it ends and records how it ended.
    fn wait(self) -> Result<JobExecutionResult, JobError> {
        let control = self.control.clone();
        let result = self.wait_inner();
        control.set_status(match &result {
            Ok(_) => JobStatus::Finished,
            Err(JobError::Cancelled { .. }) => JobStatus::Canceled,
            Err(_) => JobStatus::Failed,
        });
        result
    }

    fn wait_inner(mut self) -> Result<JobExecutionResult, JobError> {
        loop {
            let mut run = self.run.take().expect("a deployed run");
            let mut failure: Option<Box<OperatorFailure>> = None;
            let mut cancelled = false;
            let mut remaining = run.hosted.task_count();
            while remaining > 0 {
                // A coordinator that gave up (too many failed checkpoints)
                // fails the run — also while finished tasks wait for the
                // final checkpoint and report nothing.
                if failure.is_none()
                    && run
                        .coordinator
                        .as_ref()
                        .is_some_and(|(_, h)| h.is_finished())
                    && let Some(f) = self.stop_checkpointing(&mut run)
                {
                    run.cancel.cancel();
                    failure = Some(f.into_failure());
                }
                let report = crossbeam_channel::select! {
                    recv(run.hosted.reports()) -> r => match r { Ok(r) => r, Err(_) => break },
                    default(Duration::from_millis(100)) => {
                        if self.user_cancel.is_cancelled() {
                            run.cancel.cancel();
                        }
                        continue;
                    }
                };
                remaining -= 1;
                match report.result {
                    Ok(()) => {}
                    Err(TaskError::Operator(f)) => {
                        tracing::info!(task = %report.name, "task failed: {f}");
                        run.cancel.cancel();
                        // A failure no restart can cure explains the job's
                        // end better than one that came before it.
                        match &failure {
                            Some(first)
                                if first.is_non_recoverable() || !f.is_non_recoverable() => {}
                            _ => failure = Some(f),
                        }
                    }
                    Err(TaskError::Cancelled) => {
                        cancelled = true;
                        // After a stop's savepoint, a task cut off by an
                        // upstream that terminated first must not cancel
                        // the others before they heard of the commit.
                        if !self.control.was_stopped() {
                            run.cancel.cancel();
                        }
                    }
                }
            }
            run.hosted.join_tasks();
            self.control.shared.metrics.run_ended();
            self.control.queryable_state().end_run();
            // Snapshots the tasks handed over are written and acknowledged
            // before the coordinator stops (it may still complete one).
            run.hosted.join_uploaders();
            if let Some(f) = self.stop_checkpointing(&mut run)
                && failure.is_none()
                && !cancelled
            {
                failure = Some(f.into_failure());
            }
            // The run is over: what it holds (a cluster's slots) is given
            // back before the next one asks.
            drop(run);
            self.remove_orphans();
            self.sweep_shared_state();
            if self.control.was_stopped() {
                // Stopped with a savepoint: tasks that ended by the stop's
                // terminate (or were cut off by it) are a finished job.
                failure = None;
                cancelled = false;
            }
            if self.user_cancel.is_cancelled() && !self.control.was_stopped() {
                self.discard_checkpoints(true);
                return Err(JobError::Cancelled {
                    job_name: self.job_name,
                    job_id: self.job_id,
                });
            }
            let Some(failure) = failure else {
                if cancelled {
                    self.discard_checkpoints(true);
                    return Err(JobError::Cancelled {
                        job_name: self.job_name,
                        job_id: self.job_id,
                    });
                }
                self.discard_checkpoints(false);
                let checkpoints = self.checkpoint_history.ended();
                return Ok(JobExecutionResult {
                    job_id: self.job_id,
                    job_name: self.job_name,
                    net_runtime: self.started.elapsed(),
                    restarts: self.restarts.restarts(),
                    checkpoints,
                });
            };
            let failed_at = SystemClock.epoch_ms();
            if failure.is_non_recoverable() {
                // Retrying would fail the same way forever.
                tracing::error!(
                    job = %self.job_name,
                    "not restarting: a restart cannot cure this failure: {failure}"
                );
                self.control
                    .record_exception(ExceptionRecord::of(&failure, failed_at, false));
                return Err(JobError::Failed {
                    job_name: self.job_name,
                    job_id: self.job_id,
                    failure,
                });
            }
            let restart = self.restarts.on_failure(Instant::now());
            self.control.record_exception(ExceptionRecord::of(
                &failure,
                failed_at,
                restart.is_some(),
            ));
            let Some(delay) = restart else {
                return Err(JobError::Failed {
                    job_name: self.job_name,
                    job_id: self.job_id,
                    failure,
                });
            };
            let restore = self
                .latest_checkpoint()
                .map_err(|source| JobError::Snapshot {
                    context: format!(
                        "cannot restart job '{}' after `{failure}`: cannot load the latest checkpoint",
                        self.job_name
                    ),
                    source: Box::new(source.into()),
                })?;
            self.control.set_status(JobStatus::Restarting);
            tracing::warn!(
                job = %self.job_name,
                restart = self.restarts.restarts(),
                checkpoint = restore.as_ref().map(|r| r.checkpoint_id),
                "restarting after failure: {failure}"
            );
            std::thread::sleep(delay);
            if self.user_cancel.is_cancelled() {
                self.discard_checkpoints(true);
                return Err(JobError::Cancelled {
                    job_name: self.job_name,
                    job_id: self.job_id,
                });
            }
            self.control.shared.metrics.count_restart();
            self.deploy(restore)?;
            self.control.set_status(JobStatus::Running);
        }
    }
}
