//! The messages of the checkpoint protocol: commands from the coordinator
//! to tasks, and events from tasks, uploaders and the job's control handle
//! to the coordinator.

use floe_checkpoint::SubtaskStateMeta;
use floe_core::CheckpointBarrier;

use super::error::StoreError;
use super::savepoint::SavepointRequest;
use super::stats::AckStats;

/// A command from the JobManager (its checkpoint coordinator) to a task.
#[derive(Debug, Clone)]
pub enum TaskCommand {
    /// Sources only: take a checkpoint now, i.e. inject `barrier`.
    TriggerCheckpoint(CheckpointBarrier),
    /// Every task: a checkpoint completed or was aborted.
    Notify(CheckpointNotification),
    /// Every task, after the job's final checkpoint or a stop's savepoint
    /// completed (and was notified): exit.
    Terminate,
    /// Stop with drain: sources end their input now, as if it were over.
    EndInput,
}

/// The outcome of a checkpoint, as the coordinator tells every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointNotification {
    /// `_metadata` of this checkpoint is written: it (and every lower id)
    /// is durable, so side effects held for it may be committed.
    Complete(u64),
    /// This checkpoint will never complete; what was prepared for it may be
    /// dropped (a later completion may still subsume it).
    Aborted(u64),
}

/// Events the coordinator reacts to.
pub enum CoordinatorEvent {
    /// A task's snapshot was written.
    Ack {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The task.
        task: usize,
        /// Its operators' entries.
        states: Vec<(String, SubtaskStateMeta)>,
        /// Bytes written.
        bytes: u64,
        /// Durations and sizes.
        stats: AckStats,
    },
    /// A task could not take or write its snapshot.
    Decline {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The task.
        task: usize,
        /// Why.
        reason: StoreError,
    },
    /// A task's input ended and its chain finished; it stays to take part
    /// in checkpoints until the job's final checkpoint completes.
    TaskFinished(usize),
    /// A user asked for a savepoint (or a stop with savepoint).
    TriggerSavepoint(SavepointRequest),
    /// The job is over: stop.
    Shutdown,
}
