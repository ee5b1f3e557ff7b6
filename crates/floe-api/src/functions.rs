//! The traits user code implements.
//!
//! Keyed state is registered in `open()` through the [`RuntimeContext`] and
//! used in the per-record method through the [`KeyedContext`], which knows
//! the current key. Every function may also keep operator state and listen
//! to checkpoints by implementing [`CheckpointedFunction`] and
//! [`CheckpointListener`] (Flink's interfaces of the same names) and
//! returning itself from the defaulted `checkpointed_function` and
//! `checkpoint_listener` accessors. Every method returns `anyhow::Result`:
//! an error (or a panic) fails the job with the operator's name, uid and
//! subtask.

pub use floe_runtime::{CheckpointListener, CheckpointedFunction};
use floe_runtime::{KeyedContext, OnTimerContext, RuntimeContext, TaskInfo};
pub use floe_runtime::{SinkWriter, Source, SourceReader, SourceStatus};
use floe_state::Key;
use floe_state::{OperatorStateAccess, OperatorStateRead, OperatorStateStore};

/// Where a function emits its output records.
pub struct Collector<'a, T> {
    buf: &'a mut Vec<T>,
}

impl<'a, T> Collector<'a, T> {
    /// A collector appending to `buf`.
    pub fn new(buf: &'a mut Vec<T>) -> Self {
        Collector { buf }
    }

    /// Emits one record.
    #[inline]
    pub fn collect(&mut self, record: T) {
        self.buf.push(record);
    }

    /// Records in the output so far (the operator stamps new ones with
    /// their input's timestamp).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// What a non-keyed [`ProcessFunction`] sees while it processes a record:
/// who is running, and the operator's own state (operator state may be
/// changed at any time; it is snapshotted at the next barrier).
pub struct ProcessContext<'a> {
    info: &'a TaskInfo,
    store: &'a mut OperatorStateStore,
    timestamp: i64,
    side: Option<&'a mut floe_runtime::side_output::SideOutputBuffers>,
}

impl<'a> ProcessContext<'a> {
    /// A context over the operator's state store.
    pub fn new(info: &'a TaskInfo, store: &'a mut OperatorStateStore) -> Self {
        ProcessContext {
            info,
            store,
            timestamp: floe_core::NO_TIMESTAMP,
            side: None,
        }
    }

    /// The same context with the operator's side outputs.
    pub(crate) fn with_side_outputs(
        mut self,
        side: &'a mut floe_runtime::side_output::SideOutputBuffers,
    ) -> Self {
        self.side = Some(side);
        self
    }

    /// Emits `value` to the side output `tag` (Flink's `ctx.output`), with
    /// the current record's timestamp; dropped when the job does not
    /// consume that side output.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &floe_runtime::OutputTag<X>,
        value: X,
    ) -> Result<(), floe_runtime::side_output::SideOutputTypeError> {
        match self.side.as_deref_mut() {
            Some(side) => side.push(tag, value, self.timestamp),
            None => Ok(()),
        }
    }

    /// The event timestamp of the record being processed, if it has one
    /// (Flink's `Context.timestamp()`).
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != floe_core::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// Sets the timestamp of the record about to be processed.
    pub(crate) fn set_timestamp(&mut self, timestamp: i64) {
        self.timestamp = timestamp;
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }
}

impl OperatorStateAccess for ProcessContext<'_> {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }
}

impl OperatorStateRead for ProcessContext<'_> {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self.store
    }
}

/// A function applied to every record of a (non-keyed) stream, with
/// operator state (Flink's `ProcessFunction`).
pub trait ProcessFunction<IN, OUT>: Send + 'static {
    /// Called once per subtask before the first record (after
    /// `initialize_state`).
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes one record.
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Called once after the last record of a bounded input.
    fn close(&mut self, _out: &mut Collector<'_, OUT>) -> anyhow::Result<()> {
        Ok(())
    }

    /// The function's operator state hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointedFunction`].
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    /// The function's checkpoint notification hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointListener`].
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }
}

/// A function applied to every record of a keyed stream, with keyed state
/// and timers (Flink's `KeyedProcessFunction`): `ctx.timer_service()` sets
/// event-time and processing-time timers for the current key, and
/// `on_timer` is called when one fires.
pub trait KeyedProcessFunction<K: Key, IN, OUT>: Send + 'static {
    /// Registers state; called once per subtask before the first record.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes one record of key `ctx.current_key()`.
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// A timer set through `ctx.timer_service()` fired: `ctx` has the
    /// timer's key as the current key, with its state, and tells the time
    /// domain. Event-time timers fire when the watermark reaches them,
    /// before the watermark goes on; output then carries the timer's
    /// timestamp (processing-time timers' output carries none).
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut OnTimerContext<'_, K>,
        _out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Called once after the last record of a bounded input.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The function's operator state hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointedFunction`].
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    /// The function's checkpoint notification hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointListener`].
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }
}

/// A one-to-one function on a keyed stream with access to keyed state
/// (Flink's `RichMapFunction` after `keyBy`).
pub trait RichMapFunction<K: Key, IN, OUT>: Send + 'static {
    /// Registers state.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Maps one record.
    fn map(&mut self, value: IN, ctx: &mut KeyedContext<'_, K>) -> anyhow::Result<OUT>;

    /// Called once after the last record.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The function's operator state hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointedFunction`].
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    /// The function's checkpoint notification hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointListener`].
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }
}

/// A one-to-many function on a keyed stream with access to keyed state
/// (Flink's `RichFlatMapFunction` after `keyBy`).
pub trait RichFlatMapFunction<K: Key, IN, OUT>: Send + 'static {
    /// Registers state.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Emits any number of records for one input record.
    fn flat_map(
        &mut self,
        value: IN,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Called once after the last record.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The function's operator state hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointedFunction`].
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        None
    }

    /// The function's checkpoint notification hooks, if it has any: return
    /// `Some(self)` from an implementation of [`CheckpointListener`].
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        None
    }
}
