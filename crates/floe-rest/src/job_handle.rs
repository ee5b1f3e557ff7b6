//! What the routes need from a job ([`JobHandle`]), and `JobControl`'s
//! answer. The routes and the job directory are written against the trait
//! so that they can be tested with fake jobs (a `JobControl` only comes
//! from a running job).

use floe_core::JobId;
use floe_runtime::checkpoint::CheckpointHistoryView;
use floe_runtime::metrics::{NativeMetric, SubtaskMetrics};
use floe_runtime::queryable::QueryReply;
use floe_runtime::restart::RestartStrategy;
use floe_runtime::{
    ControlError, ExceptionHistory, JobControl, JobStatus, QueryError, SavepointMode,
    SavepointStatus, TriggerId, VertexInfo,
};
use serde_json::Value;

/// What the routes need from a job: the read side and the requests of
/// [`JobControl`].
pub(crate) trait JobHandle: Clone + Send + Sync + 'static {
    fn job_id(&self) -> JobId;
    fn job_name(&self) -> String;
    fn start_time_ms(&self) -> u64;
    fn end_time_ms(&self) -> Option<u64>;
    fn status(&self) -> JobStatus;
    fn vertices(&self) -> Vec<VertexInfo>;
    /// Ended and in-flight checkpoints with their counts.
    fn checkpoint_history(&self) -> CheckpointHistoryView;
    fn restored_from(&self) -> Option<(u64, String)>;
    fn trigger_savepoint(
        &self,
        target_directory: Option<&str>,
        mode: SavepointMode,
    ) -> Result<TriggerId, ControlError>;
    fn savepoint_status(&self, trigger: &TriggerId) -> Option<SavepointStatus>;
    fn cancel(&self);
    /// Sends a query for the state of the JSON `key` in the state queryable
    /// as `name`; the JSON answer goes to `reply`.
    fn query_state(&self, name: &str, key: &Value, reply: QueryReply) -> Result<(), QueryError>;
    /// Every operator subtask's metrics, per vertex (in `vertices()`
    /// order), then per subtask.
    fn metrics(&self) -> Vec<Vec<SubtaskMetrics>>;
    /// Every operator subtask's native state-backend metrics (RocksDB
    /// properties), per vertex, then per subtask.
    fn native_metrics(&self) -> Vec<Vec<Vec<NativeMetric>>> {
        Vec::new()
    }
    /// Restarts since submission.
    fn restarts(&self) -> u64;
    /// When the current run started (ms since the epoch), if one runs.
    fn run_started_ms(&self) -> Option<u64>;
    /// The job's failures so far, oldest first.
    fn exception_history(&self) -> ExceptionHistory;
    /// The configuration the job runs with, sorted by key (secrets as
    /// given: the routes mask them).
    fn configuration(&self) -> Vec<(String, String)>;
    /// The restart strategy in effect.
    fn restart_strategy(&self) -> RestartStrategy;
}

/// `per_vertex` (per vertex, then per subtask of the planned parallelism)
/// cut to as many subtasks per operator as the current run has.
fn per_running_subtask<T>(job: &JobControl, mut per_vertex: Vec<Vec<T>>) -> Vec<Vec<T>> {
    for (subtasks, v) in per_vertex.iter_mut().zip(job.running_vertices()) {
        subtasks.truncate(v.parallelism as usize);
    }
    per_vertex
}

impl JobHandle for JobControl {
    fn job_id(&self) -> JobId {
        JobControl::job_id(self)
    }
    fn metrics(&self) -> Vec<Vec<SubtaskMetrics>> {
        let mut metrics = per_running_subtask(self, JobControl::metrics(self).snapshot());
        // Each task's alignment in the latest completed checkpoint, for
        // every operator it runs.
        let history = JobControl::checkpoint_history(self);
        if let Some(last) = &history.latest_completed {
            for (task, ack) in &last.acks {
                let Some(pos) = last.layout.get(*task) else {
                    continue;
                };
                for &v in &pos.vertices {
                    if let Some(m) = metrics
                        .get_mut(v)
                        .and_then(|s| s.get_mut(pos.subtask as usize))
                    {
                        m.checkpoint_alignment_ns = Some(ack.alignment_duration.as_nanos() as u64);
                    }
                }
            }
        }
        metrics
    }
    fn native_metrics(&self) -> Vec<Vec<Vec<NativeMetric>>> {
        per_running_subtask(self, JobControl::metrics(self).native())
    }
    fn restarts(&self) -> u64 {
        JobControl::metrics(self).restarts()
    }
    fn run_started_ms(&self) -> Option<u64> {
        JobControl::metrics(self).run_started_ms()
    }
    fn exception_history(&self) -> ExceptionHistory {
        JobControl::exception_history(self)
    }
    fn configuration(&self) -> Vec<(String, String)> {
        JobControl::configuration(self).to_vec()
    }
    fn restart_strategy(&self) -> RestartStrategy {
        JobControl::restart_strategy(self).clone()
    }
    fn job_name(&self) -> String {
        JobControl::job_name(self).to_string()
    }
    fn start_time_ms(&self) -> u64 {
        JobControl::start_time_ms(self)
    }
    fn end_time_ms(&self) -> Option<u64> {
        JobControl::end_time_ms(self)
    }
    fn status(&self) -> JobStatus {
        JobControl::status(self)
    }
    fn vertices(&self) -> Vec<VertexInfo> {
        JobControl::running_vertices(self)
    }
    fn checkpoint_history(&self) -> CheckpointHistoryView {
        JobControl::checkpoint_history(self)
    }
    fn restored_from(&self) -> Option<(u64, String)> {
        JobControl::restored_from(self)
    }
    fn trigger_savepoint(
        &self,
        target_directory: Option<&str>,
        mode: SavepointMode,
    ) -> Result<TriggerId, ControlError> {
        JobControl::trigger_savepoint(self, target_directory, mode)
    }
    fn savepoint_status(&self, trigger: &TriggerId) -> Option<SavepointStatus> {
        JobControl::savepoint_status(self, trigger)
    }
    fn cancel(&self) {
        JobControl::cancel(self)
    }
    fn query_state(&self, name: &str, key: &Value, reply: QueryReply) -> Result<(), QueryError> {
        self.queryable_state().query_json(name, key, reply)
    }
}
