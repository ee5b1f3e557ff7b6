//! Failures of tasks and jobs, naming whose fault they are.

use std::fmt;

/// Why an operator failed.
#[derive(Debug)]
pub enum FailureCause {
    /// A user function (or a connector) returned an error.
    Error(anyhow::Error),
    /// A user function panicked; the panic message.
    Panic(String),
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Error(e) => write!(f, "{e:#}"),
            FailureCause::Panic(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// A failure attributed to one subtask of one operator.
#[derive(Debug)]
pub struct OperatorFailure {
    /// The operator's name.
    pub operator: String,
    /// The operator's uid.
    pub uid: String,
    /// Zero-based subtask index.
    pub subtask: u32,
    /// Parallelism of the operator.
    pub parallelism: u32,
    /// What went wrong.
    pub cause: FailureCause,
}

impl fmt::Display for OperatorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "operator '{}' (uid '{}', subtask {}/{}) failed: {}",
            self.operator,
            self.uid,
            self.subtask + 1,
            self.parallelism,
            self.cause
        )
    }
}

/// How a task ended other than successfully.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// An operator of the task failed.
    #[error("{0}")]
    Operator(Box<OperatorFailure>),
    /// The job was cancelled (or a neighbouring task failed) and this task stopped.
    #[error("task was cancelled")]
    Cancelled,
}

/// Why a job could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job graph is not executable (e.g. a forward edge between operators
    /// of different parallelism).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    /// Checkpointing is misconfigured or its storage unusable.
    #[error("checkpointing: {0}")]
    Checkpointing(String),
    /// The restart strategy in the configuration is invalid.
    #[error("restart strategy: {0}")]
    RestartStrategy(String),
    /// The job could not be restored or restarted from a checkpoint.
    #[error("{0}")]
    Restore(String),
    /// The job asks for something this version of Floe cannot do.
    #[error("{0}")]
    Unsupported(String),
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
    /// The runtime could not start a task thread.
    #[error("cannot start task '{task}': {reason}")]
    Spawn {
        /// The task.
        task: String,
        /// The OS error.
        reason: std::io::Error,
    },
}
