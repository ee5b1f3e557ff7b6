//! The runtime operators behind the API's transformations.
//!
//! Each operator drains its input batch through the user function into an
//! output batch and pushes that downstream: one virtual call per batch, user
//! code guarded once per batch (an error or panic becomes a failure naming
//! the operator and subtask).

use std::marker::PhantomData;
use std::sync::Arc;

use floe_core::{Batch, CheckpointBarrier, Watermark};
use floe_runtime::checkpoint::{
    CheckpointNotification, OperatorSnapshot, OperatorState, TaskInit, TaskSnapshot,
};
use floe_runtime::{
    KeyedContext, Operator, RuntimeContext, SourceReader, SourceStatus, TaskError, TaskInfo,
};
use floe_state::{Key, KeyGroupRange, KeyedStateBackend, StateBackendKind};

use crate::functions::{Collector, KeyedProcessFunction, SinkWriter, Source};

/// Forwarding of control elements for operators with a `next` and an `out`.
macro_rules! forward_control {
    () => {
        fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
            self.emit()?;
            self.next.process_watermark(wm)
        }

        fn process_barrier(
            &mut self,
            b: CheckpointBarrier,
            snapshot: &mut TaskSnapshot,
        ) -> Result<(), TaskError> {
            self.emit()?;
            self.snapshot_state(snapshot);
            self.next.process_barrier(b, snapshot)
        }

        fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
            self.next.notify_checkpoint(n)
        }

        fn flush(&mut self) -> Result<(), TaskError> {
            self.emit()?;
            self.next.flush()
        }
    };
}

/// `map`, `filter` and `flat_map`: a stateless function emitting through a
/// collector.
pub(crate) struct FlatMapOp<IN, OUT, F> {
    f: F,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    info: TaskInfo,
    _in: PhantomData<fn(IN)>,
}

impl<IN, OUT: Send, F> FlatMapOp<IN, OUT, F> {
    pub(crate) fn new(f: F, next: Box<dyn Operator<OUT>>, info: TaskInfo) -> Self {
        FlatMapOp {
            f,
            out: Batch::from_records(Vec::new()),
            next,
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
    fn snapshot_state(&mut self, _: &mut TaskSnapshot) {}
}

impl<IN: Send, OUT: Send, F: FnMut(IN, &mut Collector<'_, OUT>) + Send> Operator<IN>
    for FlatMapOp<IN, OUT, F>
{
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        let (f, out) = (&mut self.f, &mut self.out.records);
        self.info.guard(|| {
            let mut c = Collector::new(out);
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

/// Any keyed function: sets the current key of each record, then calls the
/// user's `process_element`.
pub(crate) struct KeyedProcessOp<K: Key, IN, OUT, P, KS> {
    function: P,
    key_selector: KS,
    backend: KeyedStateBackend<K>,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    info: TaskInfo,
    _in: PhantomData<fn(IN)>,
}

impl<K: Key, IN, OUT: Send, P, KS> KeyedProcessOp<K, IN, OUT, P, KS> {
    pub(crate) fn new(
        function: P,
        key_selector: KS,
        backend_kind: StateBackendKind,
        next: Box<dyn Operator<OUT>>,
        info: TaskInfo,
    ) -> Self {
        let range = KeyGroupRange::for_operator_index(
            info.max_parallelism,
            info.parallelism,
            info.subtask_index,
        );
        let backend = KeyedStateBackend::new(
            backend_kind,
            &*info.operator_name,
            range,
            info.max_parallelism,
        );
        KeyedProcessOp {
            function,
            key_selector,
            backend,
            out: Batch::from_records(Vec::new()),
            next,
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

    /// The synchronous part of the keyed state's snapshot.
    fn snapshot_state(&mut self, snapshot: &mut TaskSnapshot) {
        snapshot.operators.push(OperatorSnapshot {
            uid: self.info.uid.clone(),
            subtask: self.info.subtask_index,
            state: OperatorState::Keyed(self.backend.snapshot()),
        });
    }
}

impl<K, IN, OUT, P, KS> Operator<IN> for KeyedProcessOp<K, IN, OUT, P, KS>
where
    K: Key,
    IN: Send,
    OUT: Send,
    P: KeyedProcessFunction<K, IN, OUT>,
    KS: Fn(&IN) -> K + Send,
{
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)?;
        let (function, backend, info) = (&mut self.function, &mut self.backend, &self.info);
        if let Some(restore) = init.operator(&info.uid) {
            info.guard(|| {
                backend.restore(restore.keyed.iter().map(|f| f.as_slice()))?;
                Ok(())
            })?;
        }
        info.guard(|| function.open(&mut RuntimeContext::new(info, Some(backend))))
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        let Self {
            function,
            key_selector,
            backend,
            out,
            info,
            ..
        } = self;
        if batch.key_groups.len() != batch.records.len() {
            return Err(info.failure(floe_runtime::FailureCause::Panic(
                "keyed operator received records without key groups (not through key_by)".into(),
            )));
        }
        info.guard(|| {
            let mut collector = Collector::new(&mut out.records);
            for (r, kg) in batch.records.drain(..).zip(batch.key_groups.drain(..)) {
                backend.set_current_key(key_selector(&r), kg)?;
                function.process_element(
                    r,
                    &mut KeyedContext::new(info, backend),
                    &mut collector,
                )?;
            }
            Ok(())
        })?;
        self.emit()
    }

    forward_control!();

    fn finish(&mut self) -> Result<(), TaskError> {
        self.emit()?;
        self.backend.clear_current_key();
        let (function, info) = (&mut self.function, &self.info);
        info.guard(|| function.close())?;
        self.next.finish()
    }
}

/// The end of a pipeline: hands batches to a [`SinkWriter`].
pub(crate) struct SinkOp<IN, S> {
    sink: S,
    info: TaskInfo,
    _in: PhantomData<fn(IN)>,
}

impl<IN, S> SinkOp<IN, S> {
    pub(crate) fn new(sink: S, info: TaskInfo) -> Self {
        SinkOp {
            sink,
            info,
            _in: PhantomData,
        }
    }
}

impl<IN: Send, S: SinkWriter<IN>> Operator<IN> for SinkOp<IN, S> {
    fn open(&mut self, _init: &TaskInit) -> Result<(), TaskError> {
        let (sink, info) = (&mut self.sink, &self.info);
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

    fn process_barrier(
        &mut self,
        _: CheckpointBarrier,
        _: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        // Sink writers keep no managed state yet; two-phase-commit sinks
        // take part in checkpoints with the operator-state issue.
        self.flush()
    }

    fn notify_checkpoint(&mut self, _: CheckpointNotification) -> Result<(), TaskError> {
        Ok(())
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
    /// A position to resume from, applied once the reader exists.
    restore: Option<Vec<u8>>,
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
        if let Some(position) = self.restore.take() {
            reader.restore_state(&position)?;
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

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        match self.reader.as_mut() {
            Some(r) => r.snapshot_state(),
            None => Ok(Vec::new()),
        }
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore = Some(state.to_vec());
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        match self.reader.as_mut() {
            Some(r) => r.close(),
            None => Ok(()),
        }
    }
}
