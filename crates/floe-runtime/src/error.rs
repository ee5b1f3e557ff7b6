//! Failures of operators and tasks, naming whose fault they are (a
//! job's own errors, which wrap these, are `job_manager::JobError`).

use std::fmt;

/// Why an operator failed.
#[derive(Debug)]
pub enum FailureCause {
    /// A user function (or a connector) returned an error.
    Error(anyhow::Error),
    /// A user function panicked; the panic message.
    Panic(String),
}

impl FailureCause {
    /// Whether a restart cannot cure this failure (see [`NonRecoverable`]):
    /// the job then fails at once, whatever its restart strategy.
    pub fn is_non_recoverable(&self) -> bool {
        match self {
            FailureCause::Error(e) => NonRecoverable::is_in(e),
            FailureCause::Panic(_) => false,
        }
    }
}

/// An error that no restart can cure — incompatible or corrupt state, a bad
/// configuration, a restore that can never succeed — so the restart
/// strategy must not retry it (Flink's `SuppressRestartsException`).
///
/// Runtime, connectors and user functions raise it the same way: return
/// `Err(NonRecoverable::new(..).into())`, or wrap an error with
/// [`NonRecoverable::wrap`]. It is found anywhere in an error's chain, so
/// context added on the way up keeps the classification.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NonRecoverable {
    message: String,
}

impl NonRecoverable {
    /// An error a restart cannot cure; `message` says what and how to fix it.
    pub fn new(message: impl Into<String>) -> Self {
        NonRecoverable {
            message: message.into(),
        }
    }

    /// Marks `err` as not curable by a restart, keeping its whole message.
    pub fn wrap(err: impl Into<anyhow::Error>) -> anyhow::Error {
        let err = err.into();
        if Self::is_in(&err) {
            return err;
        }
        anyhow::Error::new(NonRecoverable::new(format!("{err:#}")))
    }

    /// Whether `err` or any error in its chain is a [`NonRecoverable`], or
    /// a state error that recurs on every restart (state that does not fit
    /// or decode: see [`floe_state::StateError::is_permanent`]).
    pub fn is_in(err: &anyhow::Error) -> bool {
        err.chain().any(|e| {
            e.is::<NonRecoverable>()
                || e.downcast_ref::<floe_state::StateError>()
                    .is_some_and(|s| s.is_permanent())
        })
    }
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

impl OperatorFailure {
    /// Whether a restart cannot cure this failure.
    pub fn is_non_recoverable(&self) -> bool {
        self.cause.is_non_recoverable()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_recoverable_is_found_through_context_and_keeps_its_message() {
        let e: anyhow::Error = NonRecoverable::new("state is corrupt").into();
        let e = e.context("cannot restore operator x");
        assert!(NonRecoverable::is_in(&e));
        assert_eq!(
            format!("{e:#}"),
            "cannot restore operator x: state is corrupt"
        );
        let wrapped = NonRecoverable::wrap(anyhow::anyhow!("inner").context("outer"));
        assert!(NonRecoverable::is_in(&wrapped));
        assert_eq!(wrapped.to_string(), "outer: inner");
        assert!(!NonRecoverable::is_in(&anyhow::anyhow!("disk full")));
        assert!(!FailureCause::Panic("boom".into()).is_non_recoverable());
    }
}
