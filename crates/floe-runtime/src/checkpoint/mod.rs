//! Checkpoints and savepoints, task side and JobManager side.
//!
//! One concern per file:
//!
//! - [`task_snapshot`](self::TaskSnapshot), [`aligner`](self::BarrierAligner),
//!   [`task_env`](self::TaskEnvironment): the task side — what operators
//!   hand over at a barrier, when a task with several inputs takes its
//!   snapshot, and what a task is given to take part.
//! - `messages`: commands to tasks, events to the coordinator.
//! - `store`: the [`CheckpointStore`] trait everything writes and reads
//!   through; `storage`: its implementations over `floe-checkpoint`'s
//!   storages; `targets`: routing each snapshot id to a checkpoint or a
//!   savepoint directory.
//! - `uploader`: the asynchronous part of a snapshot (TaskManager role).
//! - `coordinator`: trigger, acknowledge, complete, abort (JobManager role),
//!   with `stats` and the `shared_registry` of incremental files.
//! - `savepoint`: savepoint requests, and what the coordinator asks of the
//!   job around one ([`JobHandle`]).
//! - `restore`: loading a completed snapshot for a restore.

mod aligner;
mod clock;
mod coordinator;
mod error;
mod messages;
mod restore;
mod savepoint;
mod shared_registry;
mod stats;
mod storage;
mod store;
mod targets;
mod task_env;
mod task_snapshot;
#[cfg(test)]
mod testing;
mod uploader;

pub use aligner::{AlignmentAction, AlignmentMode, BarrierAligner};
pub use clock::{Clock, SystemClock};
pub use coordinator::{CheckpointCoordinator, CoordinatorSetup};
pub use error::{CheckpointFailure, CheckpointFailureReason, PayloadError, StoreError};
pub use messages::{CheckpointNotification, CoordinatorEvent, TaskCommand};
pub use restore::{
    OpenedSnapshot, OperatorRestore, RestoreError, RestoredState, SharedStateFetcher,
};
pub use savepoint::{
    DERIVED_UID_PREFIX, JobHandle, SavepointFailure, SavepointMode, SavepointRequest,
    SavepointStatus, TriggerId,
};
pub use shared_registry::{SharedStateRegistry, sweep_unreferenced};
pub use stats::{
    AckStats, CHECKPOINT_HISTORY_DETAILS, CHECKPOINT_HISTORY_LIMIT, CheckpointCounts,
    CheckpointHistory, CheckpointHistoryView, CheckpointStats, CheckpointStatus, CheckpointSummary,
    StatsSummary, SubtaskAck, TaskLayout, TaskPosition,
};
pub use store::{
    CheckpointStore, FRAME_OVERHEAD, SharedStateStore, StateFileKind, read_checkpoint_metadata,
};
pub use targets::SnapshotTargets;
pub use task_env::{TaskEnvironment, TaskInit};
pub use task_snapshot::{OperatorSnapshot, OperatorState, TaskSnapshot};
pub use uploader::SnapshotUploader;
