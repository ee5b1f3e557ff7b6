//! Where a job is in its life. Its own module because both sides name it:
//! the control handle (`control`) reports it, and a savepoint the job's end
//! cut short (`checkpoint`'s `SavepointFailure`) says which end it was;
//! `control` depends on `checkpoint`, so `checkpoint` cannot import it
//! from `control`.

/// Where a job is in its life (Flink's `JobStatus` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Tasks are deployed and running.
    Running,
    /// A task failed; the job waits to restart.
    Restarting,
    /// Cancelled by the user; tasks are stopping.
    Cancelling,
    /// Cancelled by the user.
    Canceled,
    /// Ran to its end, or was stopped with a savepoint.
    Finished,
    /// Failed for good (restart strategy exhausted).
    Failed,
}

impl JobStatus {
    /// The name Flink's REST API uses (`RUNNING`, `CANCELED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "RUNNING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Failed => "FAILED",
        }
    }

    /// True once the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Canceled | JobStatus::Finished | JobStatus::Failed
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
