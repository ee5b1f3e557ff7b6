//! Checkpoint statistics: what each checkpoint cost and how it ended
//! (Flink's checkpoint history), kept for the REST API and the logs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::CheckpointFailureReason;

/// What happened to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Metadata written.
    Completed,
    /// Given up, and why.
    Failed(CheckpointFailureReason),
}

/// Statistics of one checkpoint (Flink's checkpoint history entry).
#[derive(Debug, Clone)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// Completed or failed.
    pub status: CheckpointStatus,
    /// Trigger time (ms since the epoch).
    pub trigger_timestamp_ms: u64,
    /// Trigger to completion (or failure): end-to-end duration.
    pub duration: Duration,
    /// Bytes persisted by this checkpoint: state files, inline state and
    /// channel state (for an incremental checkpoint only what it uploaded;
    /// Flink's "checkpointed data size").
    pub state_size: u64,
    /// Bytes the checkpoint consists of, shared files it references
    /// included (Flink's "full checkpoint data size").
    pub full_state_size: u64,
    /// Bytes of in-flight records persisted (unaligned checkpoints).
    pub channel_state_size: u64,
    /// Longest synchronous part of any task (processing paused meanwhile).
    pub sync_duration: Duration,
    /// Longest asynchronous part of any task (encode and upload).
    pub async_duration: Duration,
    /// Longest alignment of any task (first barrier to snapshot).
    pub alignment_duration: Duration,
    /// Tasks that acknowledged, out of all tasks.
    pub acknowledged: (usize, usize),
    /// Some task took it unaligned (persisting in-flight records).
    pub unaligned: bool,
    /// Bytes per operator uid.
    pub operators: BTreeMap<String, u64>,
    /// A savepoint, not a checkpoint.
    pub is_savepoint: bool,
    /// Where a completed savepoint (or checkpoint) lives, as a URL or path.
    pub external_path: Option<String>,
}

/// What a task reports with its acknowledgement, besides its state handles.
#[derive(Debug, Clone, Default)]
pub struct AckStats {
    /// Bytes written per operator uid.
    pub operator_bytes: Vec<(String, u64)>,
    /// Bytes of channel state.
    pub channel_bytes: u64,
    /// The task's synchronous part.
    pub sync: Duration,
    /// The task's asynchronous part.
    pub async_: Duration,
    /// The task's alignment.
    pub alignment: Duration,
    /// The task snapshotted unaligned.
    pub unaligned: bool,
    /// Bytes of shared files referenced, not written (incremental).
    pub referenced_bytes: u64,
}

/// The checkpoint history of a job, shared between its coordinator (which
/// appends) and its client (which reads while the job runs).
pub type CheckpointHistory = Arc<Mutex<Vec<CheckpointStats>>>;
