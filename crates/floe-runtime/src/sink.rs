//! The sink contract: one writer per sink subtask.

use crate::context::TaskInfo;

/// A sink subtask's writer.
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

    /// The input ended: flush and release resources.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}
