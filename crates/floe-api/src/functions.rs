//! The traits user code implements.
//!
//! Keyed state is registered in `open()` through the [`RuntimeContext`] and
//! used in the per-record method through the [`KeyedContext`], which knows
//! the current key. Every function may also keep operator state and listen
//! to checkpoints — Flink's `CheckpointedFunction` and `CheckpointListener`
//! — by overriding the defaulted `initialize_state`, `snapshot_state`,
//! `notify_checkpoint_complete` and `notify_checkpoint_aborted`. Every method returns `anyhow::Result`: an error (or a panic)
//! fails the job with the operator's name, uid and subtask.

use floe_runtime::{
    FunctionInitializationContext, FunctionSnapshotContext, KeyedContext, RuntimeContext, TaskInfo,
};
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
}

/// What a non-keyed [`ProcessFunction`] sees while it processes a record:
/// who is running, and the operator's own state (operator state may be
/// changed at any time; it is snapshotted at the next barrier).
pub struct ProcessContext<'a> {
    info: &'a TaskInfo,
    store: &'a mut OperatorStateStore,
}

impl<'a> ProcessContext<'a> {
    /// A context over the operator's state store.
    pub fn new(info: &'a TaskInfo, store: &'a mut OperatorStateStore) -> Self {
        ProcessContext { info, store }
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

    /// Registers and restores operator state (Flink's
    /// `CheckpointedFunction.initializeState`); runs before `open`.
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Brings operator state up to date for a checkpoint (Flink's
    /// `CheckpointedFunction.snapshotState`).
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` and every lower one completed (Flink's
    /// `CheckpointListener`; may be lost, see [`SinkWriter`]).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A function applied to every record of a keyed stream, with keyed state
/// (Flink's `KeyedProcessFunction`). Event-time and processing-time timers
/// will arrive as a defaulted `on_timer` method and a timer service on the
/// context, so implementations written today keep compiling.
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

    /// Called once after the last record of a bounded input.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Registers and restores operator state (Flink's
    /// `CheckpointedFunction.initializeState`); runs before `open`.
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Brings operator state up to date for a checkpoint (Flink's
    /// `CheckpointedFunction.snapshotState`).
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` and every lower one completed (Flink's
    /// `CheckpointListener`; may be lost, see [`SinkWriter`]).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
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

    /// Registers and restores operator state (Flink's
    /// `CheckpointedFunction.initializeState`); runs before `open`.
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Brings operator state up to date for a checkpoint (Flink's
    /// `CheckpointedFunction.snapshotState`).
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` and every lower one completed (Flink's
    /// `CheckpointListener`; may be lost, see [`SinkWriter`]).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
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

    /// Registers and restores operator state (Flink's
    /// `CheckpointedFunction.initializeState`); runs before `open`.
    fn initialize_state(
        &mut self,
        _ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Brings operator state up to date for a checkpoint (Flink's
    /// `CheckpointedFunction.snapshotState`).
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` and every lower one completed (Flink's
    /// `CheckpointListener`; may be lost, see [`SinkWriter`]).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint_id` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }
}
