//! Savepoint requests as the coordinator receives them, and what the
//! coordinator asks of the job around a savepoint (report the outcome,
//! cancel or stop the job). The job's control handle implements
//! [`JobHandle`]; keeping the trait here lets the coordinator know nothing
//! of the control handle, so the dependency points one way (control →
//! checkpoint).

use floe_core::JobId;

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
        reason: String,
    },
}

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
