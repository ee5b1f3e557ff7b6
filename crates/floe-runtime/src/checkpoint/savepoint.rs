//! Savepoint requests as the coordinator receives them, and what the
//! coordinator asks of the job around a savepoint (report the outcome,
//! cancel or stop the job). The job's control handle implements
//! [`JobHandle`]; keeping the trait here lets the coordinator know nothing
//! of the control handle, so the dependency points one way (control →
//! checkpoint).

use std::sync::Arc;

use floe_checkpoint::StorageError;
use floe_core::JobId;

use super::error::{CheckpointFailure, CheckpointFailureReason};
use crate::job_status::JobStatus;

/// How uids derived from the graph (operators without `uid(..)`) begin: a
/// savepoint holding state under such a uid is warned about, because the
/// uid changes when the graph does.
pub const DERIVED_UID_PREFIX: &str = "auto-";

/// Identifies one asynchronous savepoint or stop request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerId(pub String);

impl TriggerId {
    /// A fresh random id.
    pub(crate) fn random() -> Self {
        TriggerId(format!("{:032x}", rand::random::<u128>()))
    }
}

impl std::fmt::Display for TriggerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens around a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavepointMode {
    /// An intermediate savepoint: the job goes on (and, as in Flink since
    /// 1.15, the savepoint neither commits side effects nor is used for
    /// failure recovery). With `cancel_job`, the job is cancelled once the
    /// savepoint completed (`floe cancel -s`).
    Savepoint {
        /// Cancel the job after the savepoint completed.
        cancel_job: bool,
    },
    /// Stop with savepoint: sources stop right after the barrier, the
    /// savepoint commits side effects, and the job finishes. With `drain`,
    /// sources end their input first so everything in flight (windows,
    /// timers, buffers) is flushed before the savepoint is taken.
    Stop {
        /// End the input and flush before the savepoint.
        drain: bool,
    },
}

/// How a savepoint request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointStatus {
    /// Not finished yet.
    InProgress,
    /// Written: its location (the `savepoint-…` directory as a URL or path).
    Completed {
        /// The savepoint directory.
        location: String,
    },
    /// Not written, and why.
    Failed {
        /// What went wrong.
        reason: SavepointFailure,
    },
}

/// Why a savepoint request failed. Typed so a caller (the REST API, a test,
/// a tool retrying a stop) can tell a request the job's end cut short from
/// a directory that cannot be written or a checkpoint that failed; its
/// message is what the REST API reports as the failure cause.
///
/// `Clone + Eq` because [`SavepointStatus`] is: the status is kept per
/// trigger and handed out as a copy. Errors that are not `Clone` are shared
/// (`Arc`), and two such failures are equal when they are the very same
/// error, as for [`CheckpointFailureReason`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum SavepointFailure {
    /// Every task has ended (the job is finishing): no barrier can be
    /// injected any more.
    #[error("the job is finishing: every task has ended")]
    JobFinishing,
    /// The job's run ended before the request reached its checkpoint
    /// coordinator.
    #[error("the job ended before the savepoint could be triggered")]
    NotTriggered,
    /// The job reached a terminal status while the savepoint was in
    /// progress.
    #[error("the job ended ({status}) before the savepoint completed")]
    JobEnded {
        /// The status the job ended in.
        status: JobStatus,
    },
    /// The job's run ended (it finished, failed over or was cancelled)
    /// while the savepoint was pending.
    #[error("the job run ended first")]
    RunEnded,
    /// The job's run failed over because of its checkpoints while the
    /// savepoint was pending.
    #[error("the job run failed: {0}")]
    RunFailed(CheckpointFailure),
    /// The savepoint's directory could not be created under the target
    /// (not writable, not a path or URL, or `jobmanager` memory). The
    /// storage error names the target and the reason. It is kept whole,
    /// behind an `Arc` (a `StorageError` holds I/O errors, which are not
    /// `Clone`), rather than as text, so a caller can still match on it.
    #[error(transparent)]
    DirectoryNotCreated(Arc<StorageError>),
    /// The savepoint's checkpoint was triggered but did not complete.
    #[error("savepoint {checkpoint_id} failed: {reason}")]
    CheckpointFailed {
        /// The savepoint's checkpoint id.
        checkpoint_id: u64,
        /// Why it did not complete.
        reason: CheckpointFailureReason,
    },
}

/// Two failures are equal when they are the same failure: the same variant
/// and values, and for a storage error the very same error.
impl PartialEq for SavepointFailure {
    fn eq(&self, other: &Self) -> bool {
        use SavepointFailure::*;
        match (self, other) {
            (JobFinishing, JobFinishing) | (NotTriggered, NotTriggered) | (RunEnded, RunEnded) => {
                true
            }
            (JobEnded { status: a }, JobEnded { status: b }) => a == b,
            (RunFailed(a), RunFailed(b)) => a == b,
            (DirectoryNotCreated(a), DirectoryNotCreated(b)) => Arc::ptr_eq(a, b),
            (
                CheckpointFailed {
                    checkpoint_id: a,
                    reason: x,
                },
                CheckpointFailed {
                    checkpoint_id: b,
                    reason: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl Eq for SavepointFailure {}

/// A savepoint request on its way to the checkpoint coordinator.
#[derive(Debug, Clone)]
pub struct SavepointRequest {
    /// Its id, for status updates.
    pub trigger: TriggerId,
    /// The directory under which `savepoint-<job>-<random>/` is created.
    pub target_directory: String,
    /// Intermediate, cancel-after or stop.
    pub mode: SavepointMode,
}

/// What the coordinator needs of the job it runs for, besides its tasks:
/// savepoint outcomes go to whoever asked, and a savepoint may end the job.
pub trait JobHandle: Send + Sync {
    /// The job's id (it names a savepoint's directory).
    fn job_id(&self) -> JobId;
    /// Records how savepoint request `trigger` went.
    fn set_savepoint_status(&self, trigger: &TriggerId, status: SavepointStatus);
    /// Cancels the job (a savepoint with `cancel_job` completed).
    fn cancel(&self);
    /// Marks the job stopped: a stop with savepoint completed, so it ends
    /// as finished rather than cancelled.
    fn mark_stopped(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages the REST API reports as the failure cause read as they
    /// did when the reason was text.
    #[test]
    fn savepoint_failures_read_as_before() {
        for (failure, text) in [
            (
                SavepointFailure::JobFinishing,
                "the job is finishing: every task has ended",
            ),
            (
                SavepointFailure::NotTriggered,
                "the job ended before the savepoint could be triggered",
            ),
            (
                SavepointFailure::JobEnded {
                    status: JobStatus::Canceled,
                },
                "the job ended (CANCELED) before the savepoint completed",
            ),
            (SavepointFailure::RunEnded, "the job run ended first"),
            (
                SavepointFailure::CheckpointFailed {
                    checkpoint_id: 4,
                    reason: CheckpointFailureReason::Subsumed(5),
                },
                "savepoint 4 failed: subsumed by checkpoint 5",
            ),
            (
                SavepointFailure::RunFailed(CheckpointFailure::DrainSavepointNotStarted),
                "the job run failed: the savepoint of stop with drain could not be started",
            ),
        ] {
            assert_eq!(failure.to_string(), text);
        }
    }

    /// A storage error is shared, not copied: a status and its clone are
    /// equal, two separate errors with the same text are not.
    #[test]
    fn a_directory_failure_equals_only_its_clones() {
        let error = || StorageError::NoCompletedCheckpoint {
            location: "/x".into(),
        };
        let a = SavepointFailure::DirectoryNotCreated(Arc::new(error()));
        assert_eq!(a, a.clone());
        assert_ne!(a, SavepointFailure::DirectoryNotCreated(Arc::new(error())));
        assert_eq!(a.to_string(), error().to_string());
    }
}
