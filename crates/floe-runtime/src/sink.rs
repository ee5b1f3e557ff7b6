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
///
/// Handing `sink_to` something that is not a sink of the stream's records
/// names the usual causes (a builder not yet built, a `Result` not yet
/// unwrapped, a sink of another record type) instead of only the
/// unsatisfied bound, e.g. for a Kafka sink builder without `.build()?`:
///
/// ```text
/// error[E0277]: `KafkaSinkBuilder<String>` is not a sink of `String` records
///   |     words.sink_to(builder, "Kafka");
///   |                   ^^^^^^^ not a `SinkWriter<String>`
///   = note: a builder is not a sink yet: finish it (`KafkaSink::builder()…build()?`);
///           `FileSink` and `StdoutSink` are sinks as they are
///   = note: a `Result` is not a sink: take the sink out of it with `?` first
///   = note: a sink of other records takes this stream after a `map` to its
///           record type
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sink of `{T}` records",
    label = "not a `SinkWriter<{T}>`",
    note = "a builder is not a sink yet: finish it (`KafkaSink::builder()…build()?`); `FileSink` and `StdoutSink` are sinks as they are",
    note = "a `Result` is not a sink: take the sink out of it with `?` first",
    note = "a sink of other records takes this stream after a `map` to its record type"
)]
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
