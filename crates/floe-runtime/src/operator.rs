//! The chainable operator contract.
//!
//! A task is a chain of operators: each one receives a batch, applies its
//! function and pushes its own output batch into the next one, the last of
//! which is a record writer (channels to other tasks) or a sink. Dispatch is
//! one virtual call per batch per operator, never per record. Control elements
//! (watermarks, barriers, the end of input) travel the same path between
//! batches, so their order relative to records is preserved.

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};

use crate::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
pub use crate::context::TaskInfo as OperatorMeta;
use crate::error::TaskError;
use crate::queryable::StateQuery;

/// One link of a chain, consuming elements of type `IN`.
pub trait Operator<IN>: Send {
    /// Opens this operator after everything downstream of it is open (so an
    /// operator may emit from `open`): restores its state from `init`, then
    /// calls user `open()`.
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError>;

    /// Processes and drains `batch` (the caller reuses its allocation).
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError>;

    /// Event time advanced; forward it (after emitting anything it triggers).
    fn process_watermark(&mut self, watermark: Watermark) -> Result<(), TaskError>;

    /// The task's input became idle or active again; forward it, so tasks
    /// downstream stop (or resume) waiting for this one's event time.
    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError>;

    /// Processing time reached a wake-up some operator of the chain asked
    /// for (through the task's
    /// [`ProcessingTimeService`](crate::processing_time::ProcessingTimeService)):
    /// act on what is due at `now_ms`, ask again for what is still to come,
    /// and forward the call. Required, like the other control methods, so
    /// that no operator forgets to pass it on.
    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError>;

    /// A checkpoint barrier: every earlier record has been processed.
    /// Operators add the synchronous part of their snapshot to `snapshot`,
    /// then forward the barrier.
    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError>;

    /// The coordinator completed or aborted a checkpoint: act on it (a
    /// two-phase-commit sink commits), then forward it down the chain.
    /// Flink's contract holds: ids only grow, completing `n` subsumes every
    /// lower id, and a notification may be lost.
    fn notify_checkpoint(&mut self, notification: CheckpointNotification) -> Result<(), TaskError>;

    /// The task is about to wait for input: push partly filled output
    /// batches downstream so that records are not held back while idle.
    fn flush(&mut self) -> Result<(), TaskError>;

    /// The input ended: emit what is left, then finish downstream.
    fn finish(&mut self) -> Result<(), TaskError>;

    /// A queryable-state query reached this task: a keyed operator holding
    /// the state answers it (returning `None`); any other operator passes
    /// it down the chain. What comes back unanswered has no holder here.
    fn query_state(&mut self, query: StateQuery) -> Option<StateQuery> {
        Some(query)
    }

    /// Appends this operator's state backend's native metrics (RocksDB
    /// properties, where switched on); not forwarded down the chain: the
    /// link metering each operator asks it, about once a second.
    fn native_metrics(&mut self, _out: &mut Vec<crate::metrics::NativeMetric>) {}
}

/// Terminal operator for vertices without consumers: drops everything.
pub struct Discard;

impl<T: Send> Operator<T> for Discard {
    fn open(&mut self, _: &TaskInit) -> Result<(), TaskError> {
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        batch.clear();
        Ok(())
    }

    fn process_watermark(&mut self, _: Watermark) -> Result<(), TaskError> {
        Ok(())
    }

    fn process_watermark_status(&mut self, _: WatermarkStatus) -> Result<(), TaskError> {
        Ok(())
    }

    fn on_processing_time(&mut self, _: i64) -> Result<(), TaskError> {
        Ok(())
    }

    fn process_barrier(
        &mut self,
        _: CheckpointBarrier,
        _: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    fn notify_checkpoint(&mut self, _: CheckpointNotification) -> Result<(), TaskError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Sends every element to several downstream operators (one stream consumed
/// by several operators). Records are cloned for all but the last output.
pub struct FanOut<T> {
    outputs: Vec<Box<dyn Operator<T>>>,
    scratch: Batch<T>,
}

impl<T> FanOut<T> {
    /// Fans out to `outputs` (at least two).
    pub fn new(outputs: Vec<Box<dyn Operator<T>>>) -> Self {
        FanOut {
            outputs,
            scratch: Batch::from_records(Vec::new()),
        }
    }
}

impl<T: Clone + Send> Operator<T> for FanOut<T> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.outputs.iter_mut().try_for_each(|o| o.open(init))
    }

    fn process_batch(&mut self, batch: &mut Batch<T>) -> Result<(), TaskError> {
        let last = self.outputs.len() - 1;
        for o in &mut self.outputs[..last] {
            self.scratch.records.clone_from(&batch.records);
            self.scratch.key_groups.clone_from(&batch.key_groups);
            self.scratch.timestamps.clone_from(&batch.timestamps);
            o.process_batch(&mut self.scratch)?;
        }
        self.outputs[last].process_batch(batch)
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.process_watermark(wm))
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.process_watermark_status(status))
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.on_processing_time(now_ms))
    }

    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.process_barrier(b, snapshot))
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.notify_checkpoint(n))
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        self.outputs.iter_mut().try_for_each(|o| o.flush())
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.outputs.iter_mut().try_for_each(|o| o.finish())
    }

    fn query_state(&mut self, query: StateQuery) -> Option<StateQuery> {
        self.outputs
            .iter_mut()
            .try_fold(query, |q, o| o.query_state(q))
    }
}
