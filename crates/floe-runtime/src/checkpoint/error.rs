//! Why a step of a checkpoint failed, typed, so that a caller can tell a
//! storage fault from a format error or state that could not be encoded,
//! and the coordinator can tell a failure that counts against the
//! tolerable number from a checkpoint that was merely cut short.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use floe_checkpoint::{MetadataError, StorageError};

/// Why the payload of a state file could not be produced; nothing was
/// written.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Keyed state could not be encoded.
    #[error(transparent)]
    State(#[from] floe_state::StateError),
    /// A local file of a native (RocksDB) snapshot could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Why an operation of a [`CheckpointStore`](super::CheckpointStore)
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage failed or refused: I/O, a file that exists or is
    /// missing, a file whose frame or checksum does not verify
    /// ([`StorageError::Format`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The payload could not be produced (state encoding, a local file).
    #[error("cannot produce the file's payload: {0}")]
    Payload(#[from] PayloadError),
    /// A checkpoint's `_metadata` does not decode.
    #[error("checkpoint {checkpoint_id}: {source}")]
    Metadata {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Why it does not decode.
        source: MetadataError,
    },
    /// Incremental state was written to a store that has no shared
    /// directory (or for a savepoint, which is self-contained).
    #[error("snapshot {checkpoint_id} cannot hold incremental state: {reason}")]
    NoSharedDirectory {
        /// The snapshot.
        checkpoint_id: u64,
        /// Why it has none.
        reason: &'static str,
    },
    /// A checkpoint file was written or read while checkpointing is off
    /// (only savepoints have a place then).
    #[error("checkpoint {checkpoint_id} has no storage: checkpointing is off")]
    CheckpointingOff {
        /// The checkpoint.
        checkpoint_id: u64,
    },
    /// A store implemented outside Floe failed in its own way.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Why a checkpoint or savepoint did not complete.
///
/// Cloned into the checkpoint history, hence the shared store errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckpointFailureReason {
    /// A task could not write its snapshot: the store failed or its state
    /// could not be encoded (the source tells which).
    #[error("task {task} declined: {source}")]
    Declined {
        /// The task's index in the job's deployment.
        task: usize,
        /// Why.
        source: Arc<StoreError>,
    },
    /// Every task acknowledged, but `_metadata` could not be written.
    #[error("cannot write metadata: {0}")]
    Finalize(Arc<StoreError>),
    /// Not complete within `execution.checkpointing.timeout`.
    #[error("expired after {0:?}")]
    Expired(Duration),
    /// A newer checkpoint completed first.
    #[error("subsumed by checkpoint {0}")]
    Subsumed(u64),
    /// The job run ended first (it finished, failed over or was cancelled).
    #[error("the job run ended first")]
    RunEnded,
}

impl CheckpointFailureReason {
    /// Whether this counts against `tolerable-failed-checkpoints` (as in
    /// Flink, a subsumed checkpoint or one cut short by the end of its run
    /// does not).
    pub fn counts_as_failure(&self) -> bool {
        !matches!(self, Self::Subsumed(_) | Self::RunEnded)
    }

    /// The store error behind this failure, if any: tells a storage fault
    /// ([`StoreError::Storage`]) from state that could not be encoded
    /// ([`StoreError::Payload`]).
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Declined { source, .. } | Self::Finalize(source) => Some(source),
            Self::Expired(_) | Self::Subsumed(_) | Self::RunEnded => None,
        }
    }
}

/// Two reasons are equal when they are the same failure: the same variant
/// and values, and for a store error the very same error.
impl PartialEq for CheckpointFailureReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Declined { task: a, source: x }, Self::Declined { task: b, source: y }) => {
                a == b && Arc::ptr_eq(x, y)
            }
            (Self::Finalize(x), Self::Finalize(y)) => Arc::ptr_eq(x, y),
            (Self::Expired(a), Self::Expired(b)) => a == b,
            (Self::Subsumed(a), Self::Subsumed(b)) => a == b,
            (Self::RunEnded, Self::RunEnded) => true,
            _ => false,
        }
    }
}

impl Eq for CheckpointFailureReason {}

/// Why the coordinator asks the job to fail over.
///
/// `Clone + Eq` so that a savepoint the failure cut short can carry it
/// ([`SavepointFailure::RunFailed`](super::SavepointFailure::RunFailed)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointFailure {
    /// More consecutive checkpoints failed than
    /// `execution.checkpointing.tolerable-failed-checkpoints` allows.
    #[error(
        "checkpoint {checkpoint_id} failed ({reason}) and {failures} consecutive failed checkpoints exceed the tolerable {tolerable}"
    )]
    TooManyFailures {
        /// The checkpoint whose failure was one too many.
        checkpoint_id: u64,
        /// Why it failed.
        reason: CheckpointFailureReason,
        /// Consecutive failures, this one included.
        failures: u32,
        /// The tolerable number.
        tolerable: u32,
    },
    /// The savepoint of a stop with drain failed after the input had
    /// ended: the job cannot go on.
    #[error("the savepoint of stop with drain failed ({0}); the job fails over")]
    DrainSavepointFailed(CheckpointFailureReason),
    /// The savepoint of a stop with drain could not be started (its
    /// directory could not be made) after the input had ended.
    #[error("the savepoint of stop with drain could not be started")]
    DrainSavepointNotStarted,
}
