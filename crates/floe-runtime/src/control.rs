//! Controlling a running job from outside its threads: the handle the REST
//! API (and through it the `floe` CLI) uses to read a job's status and
//! checkpoint history, trigger savepoints, stop and cancel it.
//!
//! A [`JobControl`] is cheap to clone and thread-safe. Requests are
//! asynchronous, as in Flink's REST API: triggering a savepoint returns a
//! [`TriggerId`] at once, and [`JobControl::savepoint_status`] tells how it
//! went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use floe_core::JobId;

use crate::channel::CancelFlag;
use crate::checkpoint::{
    CheckpointHistory, CheckpointHistoryView, CheckpointStats, Clock, CoordinatorEvent, JobHandle,
    SystemClock,
};
pub use crate::checkpoint::{
    SavepointFailure, SavepointMode, SavepointRequest, SavepointStatus, TriggerId,
};
pub use crate::job_status::JobStatus;

/// One operator of the job, as the REST API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexInfo {
    /// Its display name.
    pub name: String,
    /// Its uid (explicit, or derived from the graph).
    pub uid: String,
    /// Its number of subtasks.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: u32,
    /// Whether the max parallelism was set explicitly (a restore may not
    /// change it) or derived (a restore adopts the snapshot's).
    pub max_parallelism_explicit: bool,
    /// The edges feeding it, in graph order (the job plan's inputs).
    pub inputs: Vec<VertexInput>,
}

/// One edge into a vertex, as the job plan shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexInput {
    /// The upstream vertex's index in [`JobControl::vertices`].
    pub source: usize,
    /// How records are distributed over the vertex's subtasks.
    pub partitioning: crate::graph::Partitioning,
    /// The side output the edge carries, if not the main output.
    pub side_output: Option<String>,
}

/// One failure of the job, as its exception history lists it (Flink's
/// `exceptionHistory`): an operator that knows the job failed sees what
/// failed, where and when, and whether the job restarted after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRecord {
    /// When the failure was seen (ms since the epoch).
    pub timestamp_ms: u64,
    /// What kind of failure: `floe.Panic` (a function panicked),
    /// `floe.NonRecoverable` (no restart can cure it) or `floe.Error`.
    pub kind: &'static str,
    /// The whole message, with its chain of causes.
    pub message: String,
    /// The failed operator's name and subtask, as `Name (2/4)`.
    pub task: String,
    /// The failed operator's uid.
    pub operator_uid: String,
    /// Whether the job restarted after this failure (false: it failed the
    /// job).
    pub restarted: bool,
}

impl ExceptionRecord {
    /// The record of `failure`, seen at `timestamp_ms`.
    pub fn of(failure: &crate::error::OperatorFailure, timestamp_ms: u64, restarted: bool) -> Self {
        use crate::error::FailureCause;
        let kind = match &failure.cause {
            FailureCause::Panic(_) => "floe.Panic",
            _ if failure.is_non_recoverable() => "floe.NonRecoverable",
            FailureCause::Error(_) => "floe.Error",
        };
        ExceptionRecord {
            timestamp_ms,
            kind,
            message: failure.cause.to_string(),
            task: format!(
                "{} ({}/{})",
                failure.operator,
                failure.subtask + 1,
                failure.parallelism
            ),
            operator_uid: failure.uid.clone(),
            restarted,
        }
    }
}

/// How many failures the exception history keeps, newest last: Flink's
/// default `web.exception-history-size`. Older ones are dropped, and the
/// history says it was truncated.
pub const EXCEPTION_HISTORY_SIZE: usize = 16;

/// The job's failures, bounded to [`EXCEPTION_HISTORY_SIZE`].
#[derive(Debug, Clone, Default)]
pub struct ExceptionHistory {
    /// The kept failures, oldest first.
    pub entries: Vec<ExceptionRecord>,
    /// Whether older failures were dropped.
    pub truncated: bool,
}

/// Why a control request was refused at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Neither a target directory nor `state.savepoints.dir` was given.
    #[error(
        "no savepoint target directory: pass one, or set state.savepoints.dir in the configuration"
    )]
    NoTargetDirectory,
    /// The job is not running (finished, failed, cancelled, restarting).
    #[error("job {job_id} is {status}, not RUNNING: {action} is not possible")]
    NotRunning {
        /// The job.
        job_id: JobId,
        /// Its status.
        status: JobStatus,
        /// What was asked.
        action: &'static str,
    },
    /// A stop is already under way.
    #[error("job {0} is already being stopped")]
    AlreadyStopping(JobId),
}

/// State shared between a job's control handles and its JobManager.
pub(crate) struct ControlShared {
    pub(crate) job_id: JobId,
    pub(crate) job_name: String,
    pub(crate) start_time_ms: u64,
    pub(crate) end_time_ms: Mutex<Option<u64>>,
    pub(crate) status: Mutex<JobStatus>,
    pub(crate) vertices: Vec<VertexInfo>,
    /// Per vertex, the parallelism of the current (or last) run when it
    /// differs from the planned one (a restart on fewer slots).
    pub(crate) run_parallelism: Mutex<Option<Vec<u32>>>,
    pub(crate) history: CheckpointHistory,
    pub(crate) user_cancel: CancelFlag,
    pub(crate) default_savepoint_dir: Option<String>,
    pub(crate) savepoints: Mutex<HashMap<TriggerId, SavepointStatus>>,
    /// The current run's coordinator (replaced at every restart).
    pub(crate) coordinator: Mutex<Option<Sender<CoordinatorEvent>>>,
    /// The id of the checkpoint the job was restored from, if any.
    pub(crate) restored_from: Option<(u64, String)>,
    /// The stop request under way, if any.
    pub(crate) stopping: Mutex<Option<TriggerId>>,
    /// A stop with savepoint completed: the job ends as FINISHED.
    pub(crate) stopped: std::sync::atomic::AtomicBool,
    /// The job's queryable states.
    pub(crate) queryable: Arc<crate::queryable::QueryableStateRegistry>,
    /// The job's metrics (kept across restarts).
    pub(crate) metrics: Arc<crate::metrics::JobMetrics>,
    /// The configuration the job runs with (keys and raw values).
    pub(crate) configuration: Vec<(String, String)>,
    /// The restart strategy in effect.
    pub(crate) restart_strategy: crate::restart::RestartStrategy,
    /// The failures so far.
    pub(crate) exceptions: Mutex<ExceptionHistory>,
}

/// A handle to a running job: status, checkpoints, savepoints, stop, cancel.
#[derive(Clone)]
pub struct JobControl {
    pub(crate) shared: Arc<ControlShared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobControl {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.shared.job_id
    }

    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.shared.job_name
    }

    /// When the job started (ms since the epoch).
    pub fn start_time_ms(&self) -> u64 {
        self.shared.start_time_ms
    }

    /// When the job reached a terminal status, if it has.
    pub fn end_time_ms(&self) -> Option<u64> {
        *lock(&self.shared.end_time_ms)
    }

    /// The job's current status.
    pub fn status(&self) -> JobStatus {
        *lock(&self.shared.status)
    }

    /// The job's queryable states and where queries for them go.
    pub fn queryable_state(&self) -> &Arc<crate::queryable::QueryableStateRegistry> {
        &self.shared.queryable
    }

    /// The job's metrics: per operator subtask (in the order of
    /// [`JobControl::vertices`]) and per job.
    pub fn metrics(&self) -> &Arc<crate::metrics::JobMetrics> {
        &self.shared.metrics
    }

    /// The job's operators as planned, in graph order.
    pub fn vertices(&self) -> &[VertexInfo] {
        &self.shared.vertices
    }

    /// The job's operators with the parallelism its current (or last) run
    /// has: lower than planned after a restart on fewer slots.
    pub fn running_vertices(&self) -> Vec<VertexInfo> {
        let run = lock(&self.shared.run_parallelism).clone();
        let mut vertices = self.shared.vertices.clone();
        if let Some(run) = run {
            for (v, p) in vertices.iter_mut().zip(run) {
                v.parallelism = p;
            }
        }
        vertices
    }

    /// Records the parallelism a run was deployed at (`None`: as planned).
    pub(crate) fn set_run_parallelism(&self, parallelism: Option<Vec<u32>>) {
        *lock(&self.shared.run_parallelism) = parallelism;
    }

    /// The checkpoints and savepoints that ended so far, in order (the
    /// most recent [`crate::checkpoint::CHECKPOINT_HISTORY_LIMIT`]).
    pub fn checkpoint_stats(&self) -> Vec<CheckpointStats> {
        self.shared.history.ended()
    }

    /// The whole checkpoint history at one moment: ended, in flight (with
    /// each task's acknowledgement so far) and the counts.
    pub fn checkpoint_history(&self) -> CheckpointHistoryView {
        self.shared.history.view()
    }

    /// The checkpoint or savepoint the job was started from: id and path.
    pub fn restored_from(&self) -> Option<(u64, String)> {
        self.shared.restored_from.clone()
    }

    /// The configuration the job runs with: every key set in the
    /// configuration file, by `-D` or in code, with its raw value, sorted by
    /// key. Secrets are in it as given; whoever shows it masks them.
    pub fn configuration(&self) -> &[(String, String)] {
        &self.shared.configuration
    }

    /// The restart strategy in effect (configured, set in code, or the
    /// default that depends on checkpointing).
    pub fn restart_strategy(&self) -> &crate::restart::RestartStrategy {
        &self.shared.restart_strategy
    }

    /// The job's failures so far, oldest first (at most
    /// [`EXCEPTION_HISTORY_SIZE`]).
    pub fn exception_history(&self) -> ExceptionHistory {
        lock(&self.shared.exceptions).clone()
    }

    /// Adds a failure to the exception history, dropping the oldest beyond
    /// [`EXCEPTION_HISTORY_SIZE`].
    pub(crate) fn record_exception(&self, record: ExceptionRecord) {
        let mut history = lock(&self.shared.exceptions);
        history.entries.push(record);
        if history.entries.len() > EXCEPTION_HISTORY_SIZE {
            let excess = history.entries.len() - EXCEPTION_HISTORY_SIZE;
            history.entries.drain(..excess);
            history.truncated = true;
        }
    }

    /// The configured default savepoint directory (`state.savepoints.dir`).
    pub fn default_savepoint_dir(&self) -> Option<&str> {
        self.shared.default_savepoint_dir.as_deref()
    }

    /// Asks for a savepoint (or a stop with savepoint) under
    /// `target_directory`, or the configured default. Returns at once.
    pub fn trigger_savepoint(
        &self,
        target_directory: Option<&str>,
        mode: SavepointMode,
    ) -> Result<TriggerId, ControlError> {
        let target = target_directory
            .map(str::to_string)
            .or_else(|| self.shared.default_savepoint_dir.clone())
            .filter(|t| !t.trim().is_empty())
            .ok_or(ControlError::NoTargetDirectory)?;
        let status = self.status();
        if status != JobStatus::Running {
            return Err(ControlError::NotRunning {
                job_id: self.shared.job_id,
                status,
                action: match mode {
                    SavepointMode::Stop { .. } => "stop with savepoint",
                    SavepointMode::Savepoint { .. } => "a savepoint",
                },
            });
        }
        let trigger = TriggerId::random();
        if let SavepointMode::Stop { .. } = mode {
            let mut stopping = lock(&self.shared.stopping);
            if stopping.is_some() {
                return Err(ControlError::AlreadyStopping(self.shared.job_id));
            }
            *stopping = Some(trigger.clone());
        }
        lock(&self.shared.savepoints).insert(trigger.clone(), SavepointStatus::InProgress);
        let request = SavepointRequest {
            trigger: trigger.clone(),
            target_directory: target,
            mode,
        };
        let sent = match lock(&self.shared.coordinator).as_ref() {
            Some(c) => c.send(CoordinatorEvent::TriggerSavepoint(request)).is_ok(),
            None => false,
        };
        if !sent {
            self.set_savepoint_status(
                &trigger,
                SavepointStatus::Failed {
                    reason: SavepointFailure::NotTriggered,
                },
            );
        }
        Ok(trigger)
    }

    /// How a savepoint request went; `None` for an unknown trigger id.
    pub fn savepoint_status(&self, trigger: &TriggerId) -> Option<SavepointStatus> {
        lock(&self.shared.savepoints).get(trigger).cloned()
    }

    /// Cancels the job (its checkpoints are kept only when retained on
    /// cancellation).
    pub fn cancel(&self) {
        let mut status = lock(&self.shared.status);
        if !status.is_terminal() {
            *status = JobStatus::Cancelling;
        }
        drop(status);
        self.shared.user_cancel.cancel();
    }

    pub(crate) fn set_savepoint_status(&self, trigger: &TriggerId, status: SavepointStatus) {
        if let SavepointStatus::Failed { .. } = status {
            // A failed stop leaves the job running; it may be stopped again.
            let mut stopping = lock(&self.shared.stopping);
            if stopping.as_ref() == Some(trigger) {
                *stopping = None;
            }
        }
        lock(&self.shared.savepoints).insert(trigger.clone(), status);
    }

    pub(crate) fn set_coordinator(&self, coordinator: Option<Sender<CoordinatorEvent>>) {
        *lock(&self.shared.coordinator) = coordinator;
    }

    pub(crate) fn mark_stopped(&self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// True once a stop with savepoint completed (the job is finishing).
    pub fn was_stopped(&self) -> bool {
        self.shared
            .stopped
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_status(&self, status: JobStatus) {
        let mut s = lock(&self.shared.status);
        if *s == JobStatus::Cancelling && !status.is_terminal() {
            return;
        }
        *s = status;
        if status.is_terminal() {
            *lock(&self.shared.end_time_ms) = Some(SystemClock.epoch_ms());
            // Requests still waiting will not be served.
            for st in lock(&self.shared.savepoints).values_mut() {
                if *st == SavepointStatus::InProgress {
                    *st = SavepointStatus::Failed {
                        reason: SavepointFailure::JobEnded { status },
                    };
                }
            }
        }
    }
}

/// The coordinator reports savepoint outcomes and ends the job through the
/// job's control handle, which the REST API reads.
impl JobHandle for JobControl {
    fn job_id(&self) -> JobId {
        JobControl::job_id(self)
    }

    fn set_savepoint_status(&self, trigger: &TriggerId, status: SavepointStatus) {
        JobControl::set_savepoint_status(self, trigger, status);
    }

    fn cancel(&self) {
        JobControl::cancel(self);
    }

    fn mark_stopped(&self) {
        JobControl::mark_stopped(self);
    }
}
