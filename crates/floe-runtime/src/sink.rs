//! The sink contract: one writer per sink subtask.

use crate::context::TaskInfo;
use crate::function::{CheckpointListener, CheckpointedFunction};

/// A sink subtask's writer.
///
/// Like every Floe function it may keep operator state and hear about
/// checkpoints by implementing [`CheckpointedFunction`] and
/// [`CheckpointListener`] and returning itself from the accessors below:
/// `initialize_state` runs before `open`, `snapshot_state` at every
/// checkpoint barrier (after `flush`). The exactly-once
/// [`TwoPhaseCommitSinkWriter`](crate::TwoPhaseCommitSinkWriter) is built
/// on this.
pub trait SinkWriter<T>: Send + 'static {
    /// Opens resources (files, connections) on the task thread.
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    /// Writes one record.
    fn write(&mut self, value: T) -> anyhow::Result<()>;

    /// Writes a batch; override to amortize per-record costs.
    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        batch.drain(..).try_for_each(|v| self.write(v))
    }

    /// The task is idle: make written records visible.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The writer's operator state hooks, if it has any (return
    /// `Some(self)` from an implementation of [`CheckpointedFunction`]).
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    /// The writer's checkpoint notification hooks, if it has any (return
    /// `Some(self)` from an implementation of [`CheckpointListener`]).
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }

    /// The input ended: flush and release resources.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}
