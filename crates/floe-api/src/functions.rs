//! The traits user code implements.
//!
//! State is registered in `open()` through the [`RuntimeContext`] and used
//! in the per-record method through the [`KeyedContext`], which knows the
//! current key. Every method returns `anyhow::Result`: an error (or a panic)
//! fails the job with the operator's name, uid and subtask.

use floe_runtime::{KeyedContext, RuntimeContext};
pub use floe_runtime::{SinkWriter, Source, SourceReader, SourceStatus};
use floe_state::Key;

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
}
