//! The keyed operator: everything a keyed function's operator does besides
//! the function itself (Flink's `AbstractStreamOperator` with a keyed
//! state backend and an `InternalTimerService`).
//!
//! [`KeyedOp`] sets each record's key, restores and snapshots keyed and
//! operator state, fires due timers in slices (a watermark is forwarded
//! once its timers have fired), answers queries and feeds side outputs.
//! What runs per record and per timer is a [`KeyedLogic`]: a user's
//! `KeyedProcessFunction` ([`ProcessLogic`]), or a window operator's
//! windowing, whose timers are namespaced by window.

use std::marker::PhantomData;

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};
use floe_runtime::checkpoint::{
    CheckpointNotification, OperatorSnapshot, OperatorState, TaskInit, TaskSnapshot,
};
use floe_runtime::queryable::{QueryableTaskHandle, answer_query};
use floe_runtime::side_output::{SideOutputBuffers, SideOutputs};
use floe_runtime::timer_service::{Fired, KeyedTimers};
use floe_runtime::{
    CheckpointListener, CheckpointedFunction, FailureCause, FunctionHooks, KeyedContext,
    ManagedOperatorState, NonRecoverable, OnTimerContext, Operator, RuntimeContext, StateQuery,
    TaskError, TaskInfo,
};
use floe_state::{
    Key, KeyGroupRange, KeyedStateBackend, Namespace, StateBackendSettings, StateError, TimeDomain,
    Timer,
};

use crate::functions::{Collector, KeyedProcessFunction};
use crate::operators::keyed_backend;

/// What a keyed operator hands its logic for one record or timer: the
/// current key is set in `backend`.
pub(crate) struct KeyedCx<'a, K: Key, N: Namespace> {
    pub(crate) info: &'a TaskInfo,
    pub(crate) backend: &'a mut KeyedStateBackend<K>,
    /// The record's (or an event-time timer's) timestamp, or
    /// `NO_TIMESTAMP`.
    pub(crate) timestamp: i64,
    /// Whether the input carries timestamps: when it does not, the output
    /// batch has none so far, and a process function's output needs none.
    pub(crate) timed: bool,
    /// The operator's timers, when its logic has a queue.
    pub(crate) timers: Option<&'a KeyedTimers<N>>,
    pub(crate) side: &'a mut SideOutputBuffers,
}

/// What runs per record and per timer in a [`KeyedOp`].
pub(crate) trait KeyedLogic<K: Key, IN, OUT>: Send {
    /// The namespace of its timers.
    type N: Namespace;

    /// Its timer queue's name in snapshots, if it has timers.
    fn timer_queue(&self) -> Option<&'static str>;

    /// Registers its state (after keyed state was restored).
    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()>;

    /// One record; what it emits goes to `out` with the timestamps the
    /// logic gives it (see [`stamp`]): a process function's output carries
    /// the record's, a window's result the window's end.
    fn process_element(
        &mut self,
        value: IN,
        cx: KeyedCx<'_, K, Self::N>,
        out: &mut Batch<OUT>,
    ) -> anyhow::Result<()>;

    /// One due timer of `domain` (`cx.timestamp` is the timer's in event
    /// time, none in processing time).
    fn on_timer(
        &mut self,
        domain: TimeDomain,
        timer: Timer<K, Self::N>,
        cx: KeyedCx<'_, K, Self::N>,
        out: &mut Batch<OUT>,
    ) -> anyhow::Result<()>;

    /// The end of input (or of the task).
    fn close(&mut self) -> anyhow::Result<()>;

    /// Its operator-state hooks.
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction>;

    /// Its checkpoint-completion hooks.
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener>;
}

/// A [`KeyedProcessFunction`] as a keyed operator's logic; `timers`: it
/// has a timer service (`process`, not keyed `map`/`reduce`, as in Flink).
#[derive(Clone)]
pub(crate) struct ProcessLogic<P> {
    pub(crate) function: P,
    pub(crate) timers: bool,
}

impl<K: Key, IN, OUT, P: KeyedProcessFunction<K, IN, OUT>> KeyedLogic<K, IN, OUT>
    for ProcessLogic<P>
{
    type N = ();

    fn timer_queue(&self) -> Option<&'static str> {
        self.timers
            .then_some(floe_runtime::timer_service::USER_TIMERS)
    }

    fn open(&mut self, info: &TaskInfo, backend: &mut KeyedStateBackend<K>) -> anyhow::Result<()> {
        self.function
            .open(&mut RuntimeContext::new(info, Some(backend)))
    }

    #[inline(always)]
    fn process_element(
        &mut self,
        value: IN,
        cx: KeyedCx<'_, K, ()>,
        out: &mut Batch<OUT>,
    ) -> anyhow::Result<()> {
        let (timestamp, cx_timed) = (cx.timestamp, cx.timed);
        let mut ctx = KeyedContext::new(cx.info, cx.backend)
            .with_timestamp(timestamp)
            .with_timers(cx.timers.map(KeyedTimers::access))
            .with_side_outputs(Some(cx.side));
        if !cx_timed {
            return self.function.process_element(
                value,
                &mut ctx,
                &mut Collector::new(&mut out.records),
            );
        }
        let from = out.records.len();
        self.function
            .process_element(value, &mut ctx, &mut Collector::new(&mut out.records))?;
        stamp(out, from, timestamp);
        Ok(())
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        timer: Timer<K, ()>,
        cx: KeyedCx<'_, K, ()>,
        out: &mut Batch<OUT>,
    ) -> anyhow::Result<()> {
        let timestamp = cx.timestamp;
        let ctx = KeyedContext::new(cx.info, cx.backend)
            .with_timestamp(timestamp)
            .with_timers(cx.timers.map(KeyedTimers::access))
            .with_side_outputs(Some(cx.side));
        let from = out.records.len();
        self.function.on_timer(
            timer.timestamp,
            &mut OnTimerContext::new(ctx, domain, timer.timestamp),
            &mut Collector::new(&mut out.records),
        )?;
        stamp(out, from, timestamp);
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.function.close()
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        self.function.checkpointed_function()
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        self.function.checkpoint_listener()
    }
}

/// A keyed operator: sets the current key of each record, then runs its
/// logic.
pub(crate) struct KeyedOp<K: Key, IN, OUT, L: KeyedLogic<K, IN, OUT>, KS> {
    logic: L,
    key_selector: KS,
    backend: KeyedStateBackend<K>,
    /// Why the configured backend could not be created (reported at open).
    backend_error: Option<StateError>,
    operator_state: ManagedOperatorState,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    info: TaskInfo,
    /// Where queryable states are announced (`queryable-state.enable`),
    /// and how many states were registered when they last were.
    queryable: Option<(QueryableTaskHandle, usize)>,
    /// Once open, the logic's timers (if it has a queue).
    timers: Option<KeyedTimers<L::N>>,
    side: SideOutputBuffers,
    /// A batch's keys, selected up front when the backend prefetches
    /// (RocksDB); reused across batches.
    batch_keys: Vec<K>,
    _in: PhantomData<fn(IN)>,
}

impl<K: Key, IN, OUT: Send, L: KeyedLogic<K, IN, OUT>, KS> KeyedOp<K, IN, OUT, L, KS> {
    pub(crate) fn new(
        logic: L,
        key_selector: KS,
        backend: &StateBackendSettings,
        next: Box<dyn Operator<OUT>>,
        side: SideOutputs,
        info: TaskInfo,
    ) -> Self {
        let range = KeyGroupRange::for_operator_index(
            info.max_parallelism,
            info.parallelism,
            info.subtask_index,
        );
        let (backend, backend_error) = keyed_backend(backend, &info, range);
        KeyedOp {
            logic,
            key_selector,
            backend,
            backend_error,
            operator_state: ManagedOperatorState::new(&info, Some(range)),
            out: Batch::from_records(Vec::new()),
            next,
            info,
            queryable: None,
            timers: None,
            side: SideOutputBuffers::new(side),
            batch_keys: Vec::new(),
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

    /// Announces queryable states registered since the last announcement
    /// (one comparison per batch when nothing changed), and publishes
    /// their query views when readers want them (one load otherwise).
    #[inline]
    fn announce_queryable(&mut self) -> Result<(), TaskError> {
        if let Some((handle, announced)) = &mut self.queryable {
            let registered = self.backend.num_registered();
            if registered != *announced {
                handle.announce(&mut self.backend, &self.info)?;
                *announced = registered;
            }
            self.backend.publish_query_views();
        }
        Ok(())
    }

    /// The synchronous part of the snapshot: the logic's own
    /// `snapshot_state`, then keyed and operator state.
    fn snapshot_state(
        &mut self,
        barrier: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        let logic = &mut self.logic;
        self.operator_state
            .snapshot(barrier, &self.info, snapshot, |ctx| {
                FunctionHooks::snapshot(logic.checkpointed_function(), ctx)
            })?;
        snapshot.operators.push(OperatorSnapshot {
            uid: self.info.uid.clone(),
            subtask: self.info.subtask_index,
            state: OperatorState::Keyed(if barrier.kind.is_savepoint() {
                self.backend.snapshot()
            } else {
                self.backend
                    .snapshot_for_checkpoint(barrier.id, barrier.last_completed)
            }),
        });
        Ok(())
    }

    /// Restores keyed state (canonical files, and native RocksDB files of
    /// the same job) from `init`, if it has some for this operator.
    fn restore_keyed(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        let (backend, info) = (&mut self.backend, &self.info);
        let Some(restore) = init.operator(&info.uid) else {
            return Ok(());
        };
        info.guard(|| {
            backend.restore(restore.keyed.iter().map(|f| f.as_slice()))?;
            if !restore.keyed_native.is_empty() {
                let snapshot = init
                    .restore
                    .as_ref()
                    .expect("an operator restore has a snapshot");
                let fetcher = snapshot.shared.clone().ok_or_else(|| {
                    anyhow::anyhow!("native keyed state without a way to fetch its shared files")
                })?;
                backend.restore_native(
                    restore.keyed_native.iter().map(|f| f.as_slice()),
                    snapshot.checkpoint_id,
                    snapshot.same_job,
                    &|f: &floe_state::native::SharedFileRef| {
                        // The RestoreError, whole: the state error
                        // wrapping it names the operator and the file.
                        fetcher.fetch(&f.path, f.size).map_err(Into::into)
                    },
                )?;
            }
            Ok(())
        })
    }

    /// Fires due timers of `domain` (one slice when `sliced`); their
    /// output carries the timer's timestamp in event time and none in
    /// processing time, as in Flink.
    fn fire_timers(
        &mut self,
        domain: TimeDomain,
        now_ms: i64,
        sliced: bool,
    ) -> Result<Fired, TaskError> {
        let Self {
            logic,
            backend,
            out,
            info,
            timers,
            side,
            ..
        } = self;
        let Some(timers) = timers.as_mut() else {
            return Ok(Fired::AllDue);
        };
        let fired = info
            .guard(|| {
                timers.fire(backend, domain, now_ms, sliced, |backend, timers, timer| {
                    let timestamp = match domain {
                        TimeDomain::EventTime => timer.timestamp,
                        TimeDomain::ProcessingTime => floe_core::NO_TIMESTAMP,
                    };
                    let cx = KeyedCx {
                        info,
                        backend,
                        timestamp,
                        timed: true,
                        timers: Some(timers),
                        side: &mut *side,
                    };
                    logic.on_timer(domain, timer, cx, &mut *out)
                })
            })
            .map_err(|e| refused_restore_is_final(e, backend))?;
        self.emit()?;
        Ok(fired)
    }

    /// Fires the pending watermark's timers, all of them or one slice;
    /// forwards the watermark once they have all fired.
    fn fire_event_time(&mut self, sliced: bool) -> Result<(), TaskError> {
        if !self.timers.as_ref().is_some_and(|t| t.has_pending()) {
            return Ok(());
        }
        if self.fire_timers(TimeDomain::EventTime, 0, sliced)? == Fired::AllDue
            && let Some(wm) = self.timers.as_mut().and_then(|t| t.take_pending())
        {
            self.next.process_watermark(wm)?;
            self.side.process_watermark(wm)?;
        }
        Ok(())
    }
}

/// Gives the output records from index `from` on the timestamp `ts`,
/// keeping the batch's timestamp column whole (and empty while no record
/// has one).
#[inline]
pub(crate) fn stamp<OUT>(out: &mut Batch<OUT>, from: usize, ts: i64) {
    if ts == floe_core::NO_TIMESTAMP && out.timestamps.is_empty() {
        return;
    }
    out.timestamps.resize(from, floe_core::NO_TIMESTAMP);
    out.timestamps.resize(out.records.len(), ts);
}

impl<K, IN, OUT, L, KS> Operator<IN> for KeyedOp<K, IN, OUT, L, KS>
where
    K: Key,
    IN: Send,
    OUT: Send,
    L: KeyedLogic<K, IN, OUT>,
    KS: Fn(&IN) -> K + Send,
{
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)?;
        self.side.open(init)?;
        if let Some(e) = self.backend_error.take() {
            return Err(self
                .info
                .failure(floe_runtime::FailureCause::Error(e.into())));
        }
        // State TTL reads the task's processing-time clock (a manual one in
        // tests), like its processing-time timers.
        let time = init.time.clone();
        self.backend.set_ttl_time_provider(move || time.now_ms());
        self.restore_keyed(init)?;
        let (logic, backend, info) = (&mut self.logic, &mut self.backend, &self.info);
        self.operator_state.initialize(init, info, |ctx| {
            FunctionHooks::initialize(logic.checkpointed_function(), ctx)
        })?;
        if let Some(queue) = logic.timer_queue() {
            let timers =
                info.guard(|| Ok(KeyedTimers::open_queue(backend, queue, init.time.clone())?))?;
            self.timers = Some(timers);
        }
        info.guard(|| logic.open(info, backend))
            .map_err(|e| refused_restore_is_final(e, backend))?;
        if let Some(handle) = &init.queryable {
            self.queryable = Some((handle.clone(), 0));
            self.announce_queryable()?;
        }
        Ok(())
    }

    #[inline]
    fn process_batch(&mut self, batch: &mut Batch<IN>) -> Result<(), TaskError> {
        // Records after a watermark come after its timers.
        self.fire_event_time(false)?;
        let Self {
            logic,
            key_selector,
            backend,
            out,
            info,
            timers,
            side,
            batch_keys,
            ..
        } = self;
        let timers = timers.as_ref();
        if batch.key_groups.len() != batch.records.len() {
            return Err(info.failure(floe_runtime::FailureCause::Panic(
                "keyed operator received records without key groups (not through key_by)".into(),
            )));
        }
        info.guard(|| {
            // A backend that pays per lookup gets the batch's keys first;
            // each record then takes its key from them instead of
            // selecting it again.
            batch_keys.clear();
            if backend.prefetches() {
                batch_keys.extend(batch.records.iter().map(&*key_selector));
                backend.prefetch(batch_keys, &batch.key_groups)?;
            }
            let mut selected = batch_keys.drain(..);
            let mut key_of = |r: &IN| selected.next().unwrap_or_else(|| key_selector(r));
            if batch.is_timed() {
                let input = batch
                    .records
                    .drain(..)
                    .zip(batch.key_groups.drain(..))
                    .zip(batch.timestamps.drain(..));
                for ((r, kg), timestamp) in input {
                    backend.set_current_key(key_of(&r), kg)?;
                    let cx = KeyedCx {
                        info,
                        backend: &mut *backend,
                        timestamp,
                        timed: true,
                        timers,
                        side: &mut *side,
                    };
                    logic.process_element(r, cx, out)?;
                }
                return Ok(());
            }
            for (r, kg) in batch.records.drain(..).zip(batch.key_groups.drain(..)) {
                backend.set_current_key(key_of(&r), kg)?;
                let cx = KeyedCx {
                    info,
                    backend: &mut *backend,
                    timestamp: floe_core::NO_TIMESTAMP,
                    timed: false,
                    timers,
                    side: &mut *side,
                };
                logic.process_element(r, cx, out)?;
            }
            Ok::<_, anyhow::Error>(())
        })
        // A declared handle registers on its first record: its refusal
        // of restored state is as final as one in `open`.
        .map_err(|e| refused_restore_is_final(e, backend))?;
        self.announce_queryable()?;
        self.emit()
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        self.emit()?;
        match self.timers.as_mut() {
            Some(timers) => {
                // A newer watermark while an older one's timers still
                // fire: the older one is subsumed.
                timers.advance_watermark(wm);
                self.fire_event_time(true)
            }
            None => {
                self.next.process_watermark(wm)?;
                self.side.process_watermark(wm)
            }
        }
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
        self.emit()?;
        self.next.process_watermark_status(status)?;
        self.side.process_watermark_status(status)
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        if self.timers.is_some() {
            self.fire_event_time(true)?;
            self.fire_timers(TimeDomain::ProcessingTime, now_ms, true)?;
        }
        self.next.on_processing_time(now_ms)?;
        self.side.on_processing_time(now_ms)
    }

    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        // Timers still to fire are in the keyed state the snapshot takes.
        self.emit()?;
        self.snapshot_state(b, snapshot)?;
        self.next.process_barrier(b, snapshot)?;
        self.side.process_barrier(b, snapshot)
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        let (logic, info) = (&mut self.logic, &self.info);
        info.guard(|| FunctionHooks::notify(logic.checkpoint_listener(), n))?;
        self.next.notify_checkpoint(n)?;
        self.side.notify_checkpoint(n)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        self.emit()?;
        self.next.flush()?;
        self.side.flush()
    }

    fn query_state(&mut self, q: StateQuery) -> Option<StateQuery> {
        let q = answer_query(&mut self.backend, q)?;
        let q = self.next.query_state(q)?;
        self.side.query_state(q)
    }

    fn native_metrics(&mut self, out: &mut Vec<floe_state::NativeMetric>) {
        self.backend.native_metrics(out)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        // Whatever the last watermark made due fires before the end, and
        // so do processing-time timers already due (Flink runs the timers
        // that triggered before it finishes an operator); later ones are
        // dropped: the task calls no operator after `finish`.
        self.fire_event_time(false)?;
        if let Some(now) = self.timers.as_ref().map(KeyedTimers::now_ms) {
            self.fire_timers(TimeDomain::ProcessingTime, now, false)?;
        }
        self.emit()?;
        self.backend.clear_current_key();
        let (logic, info) = (&mut self.logic, &self.info);
        info.guard(|| logic.close())?;
        self.next.finish()?;
        self.side.finish()
    }
}

/// A function that failed (to open, or on a record or timer with a
/// declared handle registering then) after its backend refused restored state
/// (another kind, TTL or type without a migration; values that do not
/// decode) fails the same way on every attempt: the failure is made
/// non-recoverable, with the refusal as its reason, however the function
/// reported it (an error it re-wrapped as text, a panic on `unwrap`), so
/// the restart strategy never retries it.
fn refused_restore_is_final<K: Key>(err: TaskError, backend: &KeyedStateBackend<K>) -> TaskError {
    let Some(reason) = backend.restore_refusal() else {
        return err;
    };
    match err {
        TaskError::Operator(mut failure) if !failure.is_non_recoverable() => {
            failure.cause = FailureCause::Error(NonRecoverable::new(reason).into());
            TaskError::Operator(failure)
        }
        other => other,
    }
}
