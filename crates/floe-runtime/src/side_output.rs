//! Side outputs: a second (third, ...) stream a process function emits
//! to, of its own type, named by an [`OutputTag`] (Flink's side outputs:
//! late data, errors, alerts next to the main results).
//!
//! In the job graph a side output is an edge from the function's vertex
//! that carries the tag; the function's task builds a writer (or chain) for
//! it like for any edge and hands it to the operator as [`SideOutputs`].
//! The operator keeps them as [`SideOutputBuffers`]: records emitted with
//! `ctx.output(&tag, value)` are buffered per tag and sent with the main
//! output's batches, and every control element (watermarks, barriers, the
//! end of input) goes to the side outputs too, so checkpoints align and
//! windows fire downstream of them as downstream of the main output.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use floe_core::{Batch, CheckpointBarrier, NO_TIMESTAMP, Watermark, WatermarkStatus};

use crate::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use crate::context::KeyedContext;
use crate::error::TaskError;
use crate::operator::Operator;
use crate::queryable::StateQuery;

/// A type-erased downstream, as the graph hands them around.
type AnyBox = Box<dyn Any + Send>;

/// Names a side output and its record type (Flink's `OutputTag<T>`). Two
/// tags with the same id are the same side output.
pub struct OutputTag<T> {
    id: Arc<str>,
    _t: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// The tag `id` (unique within the operator that emits to it).
    pub fn new(id: &str) -> Self {
        OutputTag {
            id: id.into(),
            _t: PhantomData,
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            id: self.id.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OutputTag({:?}: {})",
            self.id,
            std::any::type_name::<T>()
        )
    }
}

/// The downstream of each side output of one subtask, as its task built
/// them, each bound to its tag's record type.
#[derive(Default)]
pub struct SideOutputs(Vec<BoundSideOutput>);

impl SideOutputs {
    /// Side outputs, one per tag.
    pub fn new(outputs: Vec<BoundSideOutput>) -> Self {
        SideOutputs(outputs)
    }

    /// True when no side output is consumed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tag ids.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|b| b.0.tag())
    }
}

/// Binds a side output's downstream to its record type; the graph keeps
/// one per side-output edge ([`bind_side_output`] for the tag's type).
pub type SideOutputBinder = fn(&str, AnyBox) -> BoundSideOutput;

/// Why a side output record could not be emitted.
#[derive(Debug, thiserror::Error)]
#[error(
    "side output '{tag}' is consumed as {consumed}, but a record of another type was emitted to it"
)]
pub struct SideOutputTypeError {
    /// The tag.
    pub tag: String,
    /// The type its consumers expect.
    pub consumed: &'static str,
}

/// One tag's downstream and its pending batch.
struct SideOutput<X> {
    tag: Arc<str>,
    next: Box<dyn Operator<X>>,
    buf: Batch<X>,
}

/// What the operator does with a side output without knowing its type.
trait SideSink: Send {
    fn tag(&self) -> &str;
    fn as_any(&mut self) -> &mut dyn Any;
    fn consumed_type(&self) -> &'static str;
    fn emit(&mut self) -> Result<(), TaskError>;
    fn next(&mut self) -> &mut dyn ControlSink;
}

/// The control methods of an operator, whatever its input type.
trait ControlSink {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError>;
    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError>;
    fn process_watermark_status(&mut self, s: WatermarkStatus) -> Result<(), TaskError>;
    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError>;
    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        s: &mut TaskSnapshot,
    ) -> Result<(), TaskError>;
    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError>;
    fn flush(&mut self) -> Result<(), TaskError>;
    fn finish(&mut self) -> Result<(), TaskError>;
    fn query_state(&mut self, q: StateQuery) -> Option<StateQuery>;
}

impl<X: Send> ControlSink for Box<dyn Operator<X>> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        (**self).open(init)
    }
    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        (**self).process_watermark(wm)
    }
    fn process_watermark_status(&mut self, s: WatermarkStatus) -> Result<(), TaskError> {
        (**self).process_watermark_status(s)
    }
    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        (**self).on_processing_time(now_ms)
    }
    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        s: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        (**self).process_barrier(b, s)
    }
    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        (**self).notify_checkpoint(n)
    }
    fn flush(&mut self) -> Result<(), TaskError> {
        (**self).flush()
    }
    fn finish(&mut self) -> Result<(), TaskError> {
        (**self).finish()
    }
    fn query_state(&mut self, q: StateQuery) -> Option<StateQuery> {
        (**self).query_state(q)
    }
}

impl<X: Send + 'static> SideSink for SideOutput<X> {
    fn tag(&self) -> &str {
        &self.tag
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn consumed_type(&self) -> &'static str {
        std::any::type_name::<X>()
    }

    fn emit(&mut self) -> Result<(), TaskError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.next.process_batch(&mut self.buf)
    }

    fn next(&mut self) -> &mut dyn ControlSink {
        &mut self.next
    }
}

/// An operator's side outputs: per tag, a pending batch and its
/// downstream. Empty (and free) for an operator whose side outputs nobody
/// consumes.
#[derive(Default)]
pub struct SideOutputBuffers {
    outputs: Vec<Box<dyn SideSink>>,
}

impl SideOutputBuffers {
    /// The side outputs a task built for an operator.
    pub fn new(outputs: SideOutputs) -> Self {
        SideOutputBuffers {
            outputs: outputs.0.into_iter().map(|b| b.0).collect(),
        }
    }

    /// True when no side output is consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Buffers `value` (with timestamp `ts`) for side output `tag`; a tag
    /// nobody consumes drops it, as in Flink.
    pub fn push<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
        ts: i64,
    ) -> Result<(), SideOutputTypeError> {
        let Some(out) = self.outputs.iter_mut().find(|o| o.tag() == tag.id()) else {
            return Ok(());
        };
        let consumed = out.consumed_type();
        let Some(out) = out.as_any().downcast_mut::<SideOutput<X>>() else {
            return Err(SideOutputTypeError {
                tag: tag.id().to_string(),
                consumed,
            });
        };
        let b = &mut out.buf;
        if ts != NO_TIMESTAMP || !b.timestamps.is_empty() {
            b.timestamps.resize(b.records.len(), NO_TIMESTAMP);
            b.timestamps.push(ts);
        }
        b.records.push(value);
        Ok(())
    }

    /// Sends every pending side batch downstream.
    #[inline]
    pub fn emit(&mut self) -> Result<(), TaskError> {
        self.outputs.iter_mut().try_for_each(|o| o.emit())
    }

    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn ControlSink) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        for o in &mut self.outputs {
            o.emit()?;
            f(o.next())?;
        }
        Ok(())
    }

    /// Opens every side output's downstream.
    pub fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.next().open(init))
    }

    /// Forwards a watermark (after the side records before it).
    pub fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        self.each(|n| n.process_watermark(wm))
    }

    /// Forwards a status change.
    pub fn process_watermark_status(&mut self, s: WatermarkStatus) -> Result<(), TaskError> {
        self.each(|n| n.process_watermark_status(s))
    }

    /// Forwards a processing-time wake-up.
    pub fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.next().on_processing_time(now_ms))
    }

    /// Forwards a barrier (after the side records before it).
    pub fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        s: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.each(|n| n.process_barrier(b, s))
    }

    /// Forwards a checkpoint notification.
    pub fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.next().notify_checkpoint(n))
    }

    /// Sends pending side records and flushes downstream.
    pub fn flush(&mut self) -> Result<(), TaskError> {
        self.each(|n| n.flush())
    }

    /// The input ended: sends what is pending and finishes downstream.
    pub fn finish(&mut self) -> Result<(), TaskError> {
        self.each(|n| n.finish())
    }

    /// Passes a query to the side outputs' chains.
    pub fn query_state(&mut self, mut q: StateQuery) -> Option<StateQuery> {
        for o in &mut self.outputs {
            q = o.next().query_state(q)?;
        }
        Some(q)
    }
}

/// A side output bound to its record type.
pub struct BoundSideOutput(Box<dyn SideSink>);

/// Binds side output `tag`'s downstream as carrying records of type `X`
/// (what the graph builder knows from the tag it was created with).
pub fn bind_side_output<X: Send + 'static>(tag: &str, next: AnyBox) -> BoundSideOutput {
    let next = *next.downcast::<Box<dyn Operator<X>>>().unwrap_or_else(|_| {
        panic!("type mismatch wiring side output '{tag}': this is a bug in the graph builder")
    });
    BoundSideOutput(Box::new(SideOutput {
        tag: tag.into(),
        next,
        buf: Batch::from_records(Vec::new()),
    }))
}

impl<'a, K: floe_state::Key> KeyedContext<'a, K> {
    /// The same context with the operator's side outputs.
    #[inline]
    pub fn with_side_outputs(mut self, side: Option<&'a mut SideOutputBuffers>) -> Self {
        self.side = side.map(|s| s as &mut (dyn Any + Send));
        self
    }

    /// Emits `value` to the side output `tag` (Flink's `ctx.output`), with
    /// the current record's timestamp; dropped when the job does not
    /// consume that side output.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        let ts = self.timestamp().unwrap_or(NO_TIMESTAMP);
        match self
            .side
            .as_deref_mut()
            .and_then(|s| s.downcast_mut::<SideOutputBuffers>())
        {
            Some(side) => side.push(tag, value, ts),
            None => Ok(()),
        }
    }
}
