//! The sink contract: one writer per sink subtask.

use crate::context::{FunctionInitializationContext, FunctionSnapshotContext, TaskInfo};

/// A sink subtask's writer.
///
/// Like every Floe function it may keep operator state and hear about
/// checkpoints (Flink's `CheckpointedFunction` and `CheckpointListener`):
/// `initialize_state` runs before `open`, `snapshot_state` at every
/// checkpoint barrier (after `flush`), and the notifications when a
/// checkpoint completed or was aborted. Ids only grow, completing `n`
/// subsumes every lower id, and a notification may be lost (a restore must
/// finish what it would have done): [`crate::two_phase`] builds exactly-once
/// sinks on this.
pub trait SinkWriter<T>: Send + 'static {
    /// Registers and restores operator state; `ctx.is_restored()` says
    /// whether the job started from a snapshot.
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

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

    /// A checkpoint barrier passed: bring operator state up to date (every
    /// record before the barrier has been written).
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` (and every lower one) completed.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// The input ended: flush and release resources.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}
