//! The runtime operators behind the API's transformations.
//!
//! Each operator drains its input batch through the user function into an
//! output batch and pushes that downstream: one virtual call per batch, user
//! code guarded once per batch (an error or panic becomes a failure naming
//! the operator and subtask).

use std::marker::PhantomData;
use std::sync::Arc;

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};
use floe_runtime::checkpoint::{CheckpointNotification, TaskInit, TaskSnapshot};
use floe_runtime::side_output::{SideOutputBuffers, SideOutputs};
use floe_runtime::{
    FunctionHooks, ManagedOperatorState, Operator, SourceReader, SourceStatus, StateQuery,
    TaskError, TaskInfo,
};
use floe_state::{
    Key, KeyGroupRange, KeyedStateBackend, StateBackendKind, StateBackendSettings, StateError,
};

use crate::functions::{Collector, ProcessContext, ProcessFunction, SinkWriter, Source};

/// Forwarding of control elements for operators with a `next`, an `out`
/// and side outputs (the keyed operator, in `keyed_op`, has its own).
macro_rules! forward_control {
    () => {
        forward_control!(@common);

        fn query_state(&mut self, q: StateQuery) -> Option<StateQuery> {
            let q = self.next.query_state(q)?;
            self.side.query_state(q)
        }
    };
    (@common) => {
        fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
            self.emit()?;
            self.next.process_watermark(wm)?;
            self.side.process_watermark(wm)
        }

        fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
            self.emit()?;
            self.next.process_watermark_status(status)?;
            self.side.process_watermark_status(status)
        }

        fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
            self.next.on_processing_time(now_ms)?;
            self.side.on_processing_time(now_ms)
        }

        fn process_barrier(
            &mut self,
            b: CheckpointBarrier,
            snapshot: &mut TaskSnapshot,
        ) -> Result<(), TaskError> {
            self.emit()?;
            self.snapshot_state(b, snapshot)?;
            self.next.process_barrier(b, snapshot)?;
            self.side.process_barrier(b, snapshot)
        }

        fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
            self.notify_function(n)?;
            self.next.notify_checkpoint(n)?;
            self.side.notify_checkpoint(n)
        }

        fn flush(&mut self) -> Result<(), TaskError> {
            self.emit()?;
            self.next.flush()?;
            self.side.flush()
        }
    };
}

/// `map`, `filter` and `flat_map`: a stateless function emitting through a
/// collector.
pub(crate) struct FlatMapOp<IN, OUT, F> {
    f: F,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    /// Always empty: a closure has no context to emit side outputs with.
    side: SideOutputBuffers,
    info: TaskInfo,
    _in: PhantomData<fn(IN)>,
}

impl<IN, OUT: Send, F> FlatMapOp<IN, OUT, F> {
    pub(crate) fn new(f: F, next: Box<dyn Operator<OUT>>, info: TaskInfo) -> Self {
        FlatMapOp {
            f,
            out: Batch::from_records(Vec::new()),
            next,
            side: SideOutputBuffers::default(),
            info,
            _in: PhantomData,
        }
    }

    fn emit(&mut self) -> Result<(), TaskError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.next.process_batch(&mut self.out)
    }

    /// Stateless: contributes nothing to a checkpoint.
    fn snapshot_state(
        &mut self,
        _: CheckpointBarrier,
        _: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// A closure does not listen to checkpoints.
    fn notify_function(&mut self, _: CheckpointNotification) -> Result<(), TaskError> {
        Ok(())
    }
}

impl<IN: Send, OUT: Send, F: FnMut(IN, &mut Collector<'_, OUT>) + Send> Operator<IN>
    for FlatMapOp<IN, OUT, F>
{
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        let f = &mut self.f;
        self.info.guard(|| {
            if batch.is_timed() {
                // Every output record carries its input's timestamp
                // (Flink's TimestampedCollector).
                let Batch {
                    records,
                    timestamps,
                    ..
                } = &mut self.out;
                for (r, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                    f(r, &mut Collector::new(records));
                    timestamps.resize(records.len(), ts);
                }
                return Ok(());
            }
            let mut c = Collector::new(&mut self.out.records);
            for r in batch.records.drain(..) {
                f(r, &mut c);
            }
            Ok(())
        })?;
        batch.key_groups.clear();
        self.emit()
    }

    forward_control!();

    fn finish(&mut self) -> Result<(), TaskError> {
        self.emit()?;
        self.next.finish()
    }
}

/// A non-keyed [`ProcessFunction`] with operator state.
pub(crate) struct ProcessOp<IN, OUT, P> {
    function: P,
    operator_state: ManagedOperatorState,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    side: SideOutputBuffers,
    info: TaskInfo,
    _in: PhantomData<fn(IN)>,
}

impl<IN, OUT: Send, P: ProcessFunction<IN, OUT>> ProcessOp<IN, OUT, P> {
    pub(crate) fn new(
        function: P,
        next: Box<dyn Operator<OUT>>,
        side: SideOutputs,
        info: TaskInfo,
    ) -> Self {
        ProcessOp {
            function,
            operator_state: ManagedOperatorState::new(&info, None),
            out: Batch::from_records(Vec::new()),
            next,
            side: SideOutputBuffers::new(side),
            info,
            _in: PhantomData,
        }
    }

    fn emit(&mut self) -> Result<(), TaskError> {
        self.side.emit()?;
        if self.out.is_empty() {
            return Ok(());
        }
        self.next.process_batch(&mut self.out)
    }

    fn snapshot_state(
        &mut self,
        barrier: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        let function = &mut self.function;
        self.operator_state
            .snapshot(barrier, &self.info, snapshot, |ctx| {
                FunctionHooks::snapshot(function.checkpointed_function(), ctx)
            })
    }

    fn notify_function(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        let (function, info) = (&mut self.function, &self.info);
        info.guard(|| FunctionHooks::notify(function.checkpoint_listener(), n))
    }
}

impl<IN: Send, OUT: Send, P: ProcessFunction<IN, OUT>> Operator<IN> for ProcessOp<IN, OUT, P> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)?;
        self.side.open(init)?;
        let (function, info) = (&mut self.function, &self.info);
        self.operator_state.initialize(init, info, |ctx| {
            FunctionHooks::initialize(function.checkpointed_function(), ctx)
        })?;
        info.guard(|| function.open(info))
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        let (function, info, out) = (&mut self.function, &self.info, &mut self.out);
        let store = self.operator_state.store();
        let side = &mut self.side;
        info.guard(|| {
            let mut ctx = ProcessContext::new(info, store).with_side_outputs(side);
            if batch.is_timed() {
                let Batch {
                    records,
                    timestamps,
                    ..
                } = out;
                for (r, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                    ctx.set_timestamp(ts);
                    function.process_element(r, &mut ctx, &mut Collector::new(records))?;
                    timestamps.resize(records.len(), ts);
                }
                return Ok(());
            }
            let mut c = Collector::new(&mut out.records);
            for r in batch.records.drain(..) {
                function.process_element(r, &mut ctx, &mut c)?;
            }
            Ok(())
        })?;
        batch.key_groups.clear();
        self.emit()
    }

    forward_control!();

    fn finish(&mut self) -> Result<(), TaskError> {
        let (function, info, out) = (&mut self.function, &self.info, &mut self.out.records);
        info.guard(|| function.close(&mut Collector::new(out)))?;
        self.emit()?;
        self.next.finish()?;
        self.side.finish()
    }
}

/// The keyed state backend of subtask `info`. A backend that cannot be
/// created (RocksDB cannot open its directory) is replaced by an empty heap
/// backend and its error returned, to fail the subtask when it opens (the
/// operator factories that call this cannot fail).
pub(crate) fn keyed_backend<K: Key>(
    settings: &StateBackendSettings,
    info: &TaskInfo,
    range: KeyGroupRange,
) -> (KeyedStateBackend<K>, Option<StateError>) {
    let create = |s: StateBackendSettings| {
        KeyedStateBackend::new(s, &*info.operator_name, range, info.max_parallelism)
    };
    match create(settings.clone()) {
        Ok(b) => (b, None),
        Err(e) => match create(StateBackendKind::HashMap.into()) {
            Ok(heap) => (heap, Some(e)),
            Err(_) => unreachable!("the heap backend has nothing that can fail"),
        },
    }
}

/// The end of a pipeline: hands batches to a [`SinkWriter`].
pub(crate) struct SinkOp<IN, S> {
    sink: S,
    info: TaskInfo,
    operator_state: ManagedOperatorState,
    _in: PhantomData<fn(IN)>,
}

impl<IN, S> SinkOp<IN, S> {
    pub(crate) fn new(sink: S, info: TaskInfo) -> Self {
        SinkOp {
            sink,
            operator_state: ManagedOperatorState::new(&info, None),
            info,
            _in: PhantomData,
        }
    }
}

impl<IN: Send, S: SinkWriter<IN>> Operator<IN> for SinkOp<IN, S> {
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        let (sink, info) = (&mut self.sink, &self.info);
        self.operator_state.initialize(init, info, |ctx| {
            FunctionHooks::initialize(sink.checkpointed_function(), ctx)
        })?;
        info.guard(|| sink.open(info))
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        batch.key_groups.clear();
        let (sink, info) = (&mut self.sink, &self.info);
        info.guard(|| sink.write_batch(&mut batch.records))
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
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.flush()?;
        let sink = &mut self.sink;
        self.operator_state
            .snapshot(b, &self.info, snapshot, |ctx| {
                FunctionHooks::snapshot(sink.checkpointed_function(), ctx)
            })
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        let (sink, info) = (&mut self.sink, &self.info);
        info.guard(|| FunctionHooks::notify(sink.checkpoint_listener(), n))
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        let (sink, info) = (&mut self.sink, &self.info);
        info.guard(|| sink.flush())
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        let (sink, info) = (&mut self.sink, &self.info);
        info.guard(|| sink.finish())
    }
}

/// Creates the subtask's reader from its [`Source`] on the task thread, so a
/// failure to create it is a task failure with the source's name.
pub(crate) struct DeferredReader<T, S> {
    source: Arc<S>,
    reader: Option<Box<dyn SourceReader<T>>>,
    /// Positions to resume from, applied once the reader exists.
    restore: Option<Vec<Vec<u8>>>,
}

impl<T, S> DeferredReader<T, S> {
    pub(crate) fn new(source: Arc<S>) -> Self {
        DeferredReader {
            source,
            reader: None,
            restore: None,
        }
    }
}

impl<T: Send + 'static, S: Source<T>> SourceReader<T> for DeferredReader<T, S> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        let mut reader = self.source.create_reader(info)?;
        if let Some(positions) = self.restore.take() {
            reader.restore_splits(positions)?;
        }
        reader.open(info)?;
        self.reader = Some(reader);
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        self.reader
            .as_mut()
            .expect("poll_next after a successful open")
            .poll_next(out, max)
    }

    fn current_split(&self) -> floe_runtime::SplitId {
        self.reader.as_ref().map_or(0, |r| r.current_split())
    }

    fn finished_splits(&mut self, out: &mut Vec<floe_runtime::SplitId>) {
        if let Some(r) = self.reader.as_mut() {
            r.finished_splits(out);
        }
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        match self.reader.as_mut() {
            Some(r) => r.snapshot_state(),
            None => Ok(Vec::new()),
        }
    }

    fn snapshot_checkpoint(&mut self, checkpoint_id: u64) -> anyhow::Result<Vec<u8>> {
        match self.reader.as_mut() {
            Some(r) => r.snapshot_checkpoint(checkpoint_id),
            None => Ok(Vec::new()),
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        match self.reader.as_mut() {
            Some(r) => r.notify_checkpoint_complete(checkpoint_id),
            None => Ok(()),
        }
    }

    fn record_timestamps(&self) -> &[i64] {
        self.reader.as_ref().map_or(&[], |r| r.record_timestamps())
    }

    /// The source's, since the reader is created only at `open`, after the
    /// restore.
    fn position_redistribution(&self) -> floe_runtime::PositionRedistribution {
        self.source.position_redistribution()
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore = Some(vec![state.to_vec()]);
        Ok(())
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        self.restore = Some(states);
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        match self.reader.as_mut() {
            Some(r) => r.close(),
            None => Ok(()),
        }
    }
}
