//! Two-input operators' records and edges: each edge into a two-input
//! operator tags its records with the input they belong to, in front of
//! its real writer, so the operator's task is an ordinary input task over
//! [`TwoInput`] records (barrier alignment, unaligned checkpoints,
//! backpressure and the watermark valve unchanged). Used by the broadcast
//! state pattern and by connected streams.

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};
use floe_runtime::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use floe_runtime::graph::AnyBox;
use floe_runtime::{Operator, TaskError};
use serde::{Deserialize, Serialize};

/// A record of a two-input operator, tagged with the input it came in on:
/// the first (the stream `connect` was called on) or the second (the
/// broadcast stream, or the other stream of [`crate::ConnectedStreams`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoInput<A, B> {
    /// From the first input.
    First(A),
    /// From the second input.
    Second(B),
}

/// Tags a sender's records as one input of a two-input operator in front
/// of the edge's real writer.
struct IntoTwoInput<A, X> {
    inner: Box<dyn Operator<X>>,
    wrap: fn(A) -> X,
    buf: Batch<X>,
}

impl<A: Send, X: Send> Operator<A> for IntoTwoInput<A, X> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.inner.open(init)
    }

    fn process_batch(&mut self, batch: &mut Batch<A>) -> Result<(), TaskError> {
        let wrap = self.wrap;
        self.buf.records.extend(batch.records.drain(..).map(wrap));
        std::mem::swap(&mut self.buf.key_groups, &mut batch.key_groups);
        std::mem::swap(&mut self.buf.timestamps, &mut batch.timestamps);
        batch.key_groups.clear();
        batch.timestamps.clear();
        self.inner.process_batch(&mut self.buf)
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        self.inner.process_watermark(wm)
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
        self.inner.process_watermark_status(status)
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.inner.on_processing_time(now_ms)
    }

    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.inner.process_barrier(b, snapshot)
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        self.inner.notify_checkpoint(n)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        self.inner.flush()
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        self.inner.finish()
    }
}

/// `inner` (an edge's writer of two-input records) behind a tagger that
/// wraps each record of type `A` with `wrap` (`TwoInput::First` or
/// `TwoInput::Second`).
pub(crate) fn tagged<A: Send + 'static, X: Send + 'static>(
    inner: Box<dyn Operator<X>>,
    wrap: fn(A) -> X,
) -> AnyBox {
    let op: Box<dyn Operator<A>> = Box::new(IntoTwoInput {
        inner,
        wrap,
        buf: Batch::from_records(Vec::new()),
    });
    Box::new(op)
}
