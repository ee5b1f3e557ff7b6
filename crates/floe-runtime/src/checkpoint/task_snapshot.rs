//! What a task's operators hand over at a barrier: the synchronous part of
//! a snapshot, which the uploader encodes and writes off the task thread.
//!
//! A barrier traverses a task's chain synchronously (`process_barrier`):
//! each operator takes the synchronous part of its snapshot, appends it to
//! the [`TaskSnapshot`], and forwards the barrier. The task then hands the
//! snapshot to the asynchronous part (encode, upload, acknowledge) and goes
//! on processing records.

use std::sync::Arc;
use std::time::Duration;

use floe_core::CheckpointBarrier;
use floe_state::KeyedStateSnapshot;

/// The state one operator subtask contributes to a checkpoint.
pub enum OperatorState {
    /// Keyed state, frozen; encoded off the task thread.
    Keyed(KeyedStateSnapshot),
    /// A source reader's position (and any other bytes an operator owns).
    Raw(Vec<u8>),
    /// Operator state (list, union list, broadcast, raw), encoded on the
    /// task thread: it is small and redistributed as bytes on restore.
    Operator(Vec<u8>),
}

/// One operator subtask's part of a checkpoint.
pub struct OperatorSnapshot {
    /// The operator's uid: the key its state is restored by.
    pub uid: Arc<str>,
    /// The subtask index.
    pub subtask: u32,
    /// The state.
    pub state: OperatorState,
}

/// Everything a task's operators produced for one checkpoint.
pub struct TaskSnapshot {
    /// The barrier that triggered it.
    pub barrier: CheckpointBarrier,
    /// Per-operator parts, in chain order.
    pub operators: Vec<OperatorSnapshot>,
    /// In-flight records of an unaligned checkpoint (encoded), with the uid
    /// and subtask of the task's head operator they are replayed into.
    pub channel_state: Option<(Arc<str>, u32, Vec<u8>)>,
    /// From the first barrier to the snapshot (aligned: waiting for the
    /// other channels' barriers).
    pub alignment: Duration,
    /// The synchronous part on the task thread.
    pub sync: Duration,
    /// Taken unaligned (at the first barrier, with channel state).
    pub unaligned: bool,
}

impl TaskSnapshot {
    /// An empty snapshot for `barrier`.
    pub fn new(barrier: CheckpointBarrier) -> Self {
        TaskSnapshot {
            barrier,
            operators: Vec::new(),
            channel_state: None,
            alignment: Duration::ZERO,
            sync: Duration::ZERO,
            unaligned: false,
        }
    }
}
