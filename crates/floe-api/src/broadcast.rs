//! The broadcast state pattern (Flink's `BroadcastStream`,
//! `BroadcastProcessFunction`, `KeyedBroadcastProcessFunction`).
//!
//! A low-volume stream (rules, patterns, configuration) is broadcast to
//! every subtask of an operator that also reads a regular or keyed stream.
//! Broadcast elements may change the operator's broadcast state — a map
//! every subtask holds a copy of — while regular elements only read it, so
//! the copies stay equal. Each subtask snapshots its own copy; on restore
//! every new subtask gets one, also at a different parallelism.
//!
//! Both inputs reach one task through channels of [`TwoInput`]: each edge's
//! writer tags its records as first or second input, so barrier alignment,
//! unaligned checkpoints and backpressure work as for any other task.

use std::marker::PhantomData;
use std::sync::Arc;

use floe_core::{Batch, CheckpointBarrier, Watermark, WatermarkStatus};
use floe_runtime::checkpoint::{
    CheckpointNotification, OperatorSnapshot, OperatorState, TaskInit, TaskSnapshot,
};
use floe_runtime::graph::{StreamType, VertexKind, WriterArgs, WriterFactory, unbox};
use floe_runtime::side_output::{OutputTag, SideOutputBuffers, SideOutputTypeError};
use floe_runtime::timer_service::{Fired, KeyedTimers};
use floe_runtime::writer::{BroadcastWriter, KeyGroupWriter, RebalanceWriter};
use floe_runtime::{
    CheckpointListener, CheckpointedFunction, FunctionHooks, KeyedContext, ManagedOperatorState,
    Operator, Partitioning, RuntimeContext, StateQuery, TaskError, TaskInfo, TimerService,
};
use floe_state::handles::MapKey;
use floe_state::{
    BroadcastStateRead, Key, KeyGroupRange, KeyedStateAccess, KeyedStateBackend, KeyedStateName,
    MapStateDescriptor, OperatorStateAccess, OperatorStateRead, OperatorStateStore, StateError,
    StateValue, TimeDomain,
};

use crate::connected::{Connectable, KeyedConnectable, Sealed};
use crate::env::{BuildSettings, MakeKind, VertexSpec};
use crate::functions::Collector;
use crate::stream::{DataStream, KeyedStream, Prototype, Record};
pub use crate::two_input::TwoInput;
use crate::two_input::tagged;

/// Registers one declared broadcast state in a store (so it exists, and
/// is type-checked against restored state, before the first element).
type Declaration = Arc<dyn Fn(&mut OperatorStateStore) -> Result<(), StateError> + Send + Sync>;

/// A stream broadcast to every subtask of the operator it is connected to,
/// with the broadcast states that operator keeps (Flink's
/// `BroadcastStream`, made by [`DataStream::broadcast_with`]).
pub struct BroadcastStream<T> {
    stream: DataStream<T>,
    declarations: Vec<Declaration>,
}

impl<T> Clone for BroadcastStream<T> {
    fn clone(&self) -> Self {
        BroadcastStream {
            stream: self.stream.clone(),
            declarations: self.declarations.clone(),
        }
    }
}

fn declaration<K: MapKey, V: StateValue>(desc: MapStateDescriptor<K, V>) -> Declaration {
    Arc::new(move |store| store.get_broadcast_state(&desc).map(|_| ()))
}

impl<T: Record> DataStream<T> {
    /// Broadcasts this stream, declaring the broadcast state `descriptor`
    /// that the connected operator keeps (Flink's `broadcast(descriptor)`);
    /// declare more with [`BroadcastStream::with_state`].
    pub fn broadcast_with<K: MapKey, V: StateValue>(
        &self,
        descriptor: MapStateDescriptor<K, V>,
    ) -> BroadcastStream<T> {
        BroadcastStream {
            stream: self.clone(),
            declarations: vec![declaration(descriptor)],
        }
    }
}

impl<B> Sealed for BroadcastStream<B> {}

/// `stream.connect(&broadcast)` (Flink's `connect` with a
/// `BroadcastStream`): the broadcast state pattern.
impl<A: Record, B: Record> Connectable<A> for BroadcastStream<B> {
    type Connected = BroadcastConnectedStream<A, B>;

    fn connect_to(&self, first: &DataStream<A>) -> BroadcastConnectedStream<A, B> {
        BroadcastConnectedStream {
            first: first.clone(),
            broadcast: self.clone(),
        }
    }
}

/// `keyed.connect(&broadcast)`: the keyed broadcast state pattern.
impl<A: Record, K: Key, KS, B: Record> KeyedConnectable<A, K, KS> for BroadcastStream<B>
where
    KS: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    type Connected = KeyedBroadcastConnectedStream<A, K, KS, B>;

    fn connect_to(&self, first: &KeyedStream<A, K, KS>) -> Self::Connected {
        KeyedBroadcastConnectedStream {
            first: first.clone(),
            broadcast: self.clone(),
        }
    }
}

impl<T> BroadcastStream<T> {
    /// Declares one more broadcast state.
    pub fn with_state<K: MapKey, V: StateValue>(
        mut self,
        descriptor: MapStateDescriptor<K, V>,
    ) -> Self {
        self.declarations.push(declaration(descriptor));
        self
    }
}

/// A regular stream connected with a broadcast stream.
pub struct BroadcastConnectedStream<A, B> {
    first: DataStream<A>,
    broadcast: BroadcastStream<B>,
}

/// A keyed stream connected with a broadcast stream.
pub struct KeyedBroadcastConnectedStream<A, K, KS, B> {
    first: KeyedStream<A, K, KS>,
    broadcast: BroadcastStream<B>,
}

/// Read-only access to broadcast state while a regular element is processed.
pub struct ReadOnlyContext<'a> {
    info: &'a TaskInfo,
    store: &'a OperatorStateStore,
    side: &'a mut SideOutputBuffers,
    /// The element's timestamp, which its side-output records carry.
    timestamp: i64,
}

impl ReadOnlyContext<'_> {
    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    /// The event timestamp of the element, if it has one (Flink's
    /// `ctx.timestamp()`): rules can depend on when an event happened.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != floe_core::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// Emits `value` to the side output `tag` (Flink's
    /// `ReadOnlyContext.output`), so that elements the rules reject or do
    /// not match can leave as a stream of their own type instead of being
    /// dropped or forced into the main output. It carries the element's
    /// timestamp; a tag the job does not consume drops it, as in Flink.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        self.side.push(tag, value, self.timestamp)
    }
}

/// Broadcast state cannot change while a regular element is processed:
/// what is read from it lasts as long as the context.
impl<'a> BroadcastStateRead<'_, 'a> for ReadOnlyContext<'a> {
    fn broadcast_store(&self) -> &'a OperatorStateStore {
        self.store
    }
}

/// Read-write access to broadcast state while a broadcast element is
/// processed.
pub struct BroadcastContext<'a> {
    info: &'a TaskInfo,
    store: &'a mut OperatorStateStore,
    side: &'a mut SideOutputBuffers,
    /// The element's timestamp, which its side-output records carry.
    timestamp: i64,
}

impl BroadcastContext<'_> {
    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    /// The event timestamp of the element, if it has one (Flink's
    /// `ctx.timestamp()`): rules can depend on when an event happened.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != floe_core::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// Emits `value` to the side output `tag` (Flink's `Context.output`),
    /// so that what a broadcast element causes (a rule refused, an audit
    /// of rule changes) can leave without mixing into the main output.
    /// Every subtask processes every broadcast element: emit from one
    /// (`task_info().subtask_index`) when the record should exist once.
    /// It carries the element's timestamp; a tag the job does not consume
    /// drops it, as in Flink.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        self.side.push(tag, value, self.timestamp)
    }
}

impl OperatorStateRead for BroadcastContext<'_> {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self.store
    }
}

impl OperatorStateAccess for BroadcastContext<'_> {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }
}

/// A keyed element is processed: its key's keyed state, read-only
/// broadcast state.
pub struct KeyedReadOnlyContext<'a, K: Key> {
    ctx: KeyedContext<'a, K>,
    store: &'a OperatorStateStore,
}

impl<'a, K: Key> KeyedReadOnlyContext<'a, K> {
    /// The key of the element being processed.
    pub fn current_key(&self) -> &K {
        self.ctx.current_key()
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.ctx.task_info()
    }

    /// The event timestamp of the element, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.ctx.timestamp()
    }

    /// Time and timers for the current key, as in a `KeyedProcessFunction`
    /// (Flink's `ReadOnlyContext.timerService()`).
    pub fn timer_service(&mut self) -> TimerService<'_, 'a, K> {
        self.ctx.timer_service()
    }

    /// Emits `value` to the side output `tag` (Flink's
    /// `ReadOnlyContext.output`), so that elements the rules reject or do
    /// not match can leave as a stream of their own type. It carries the
    /// element's timestamp; a tag the job does not consume drops it, as in
    /// Flink.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        self.ctx.output(tag, value)
    }
}

impl<K: Key> KeyedStateAccess<K> for KeyedReadOnlyContext<'_, K> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self.ctx.keyed_state_backend()
    }
}

/// What a keyed broadcast function's `on_timer` sees (Flink's
/// `KeyedBroadcastProcessFunction.OnTimerContext`): the timer's key as the
/// current key with its state, read-only broadcast state, the time domain.
pub struct KeyedBroadcastOnTimerContext<'a, K: Key> {
    ro: KeyedReadOnlyContext<'a, K>,
    domain: TimeDomain,
    timestamp: i64,
}

impl<'a, K: Key> KeyedBroadcastOnTimerContext<'a, K> {
    /// Which clock the firing timer follows.
    pub fn time_domain(&self) -> TimeDomain {
        self.domain
    }

    /// The firing timer's timestamp.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key the timer was set for.
    pub fn current_key(&self) -> &K {
        self.ro.current_key()
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.ro.task_info()
    }

    /// Time and timers, to set further timers.
    pub fn timer_service(&mut self) -> TimerService<'_, 'a, K> {
        self.ro.timer_service()
    }

    /// Emits `value` to the side output `tag` (Flink's
    /// `OnTimerContext.output`), so that what a timer concludes (a
    /// timeout, an expiry) can leave apart from the main output. It
    /// carries the timer's timestamp in event time and none in processing
    /// time, like the timer's main output; a tag the job does not consume
    /// drops it, as in Flink.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        self.ro.output(tag, value)
    }
}

impl<K: Key> KeyedStateAccess<K> for KeyedBroadcastOnTimerContext<'_, K> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self.ro.keyed_state_backend()
    }
}

impl<'a, K: Key> BroadcastStateRead<'_, 'a> for KeyedBroadcastOnTimerContext<'a, K> {
    fn broadcast_store(&self) -> &'a OperatorStateStore {
        self.ro.store
    }
}

/// Broadcast state cannot change while a keyed element is processed:
/// entries read from it stay usable while the context reads and writes
/// the key's state.
impl<'a, K: Key> BroadcastStateRead<'_, 'a> for KeyedReadOnlyContext<'a, K> {
    fn broadcast_store(&self) -> &'a OperatorStateStore {
        self.store
    }
}

/// A broadcast element is processed by a keyed operator: read-write
/// broadcast state, and every key's keyed state through
/// [`KeyedBroadcastContext::apply_to_keyed_state`].
pub struct KeyedBroadcastContext<'a, K: Key> {
    info: &'a TaskInfo,
    backend: &'a mut KeyedStateBackend<K>,
    store: &'a mut OperatorStateStore,
    side: &'a mut SideOutputBuffers,
    /// The element's timestamp, which its side-output records carry.
    timestamp: i64,
}

impl<K: Key> KeyedBroadcastContext<'_, K> {
    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    /// The event timestamp of the element, if it has one (Flink's
    /// `ctx.timestamp()`): rules can depend on when an event happened.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != floe_core::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// Emits `value` to the side output `tag` (Flink's `Context.output`),
    /// so that what a broadcast element causes (a rule refused, an audit
    /// of rule changes) can leave without mixing into the main output.
    /// Every subtask processes every broadcast element: emit from one
    /// (`task_info().subtask_index`) when the record should exist once.
    /// It carries the element's timestamp; a tag the job does not consume
    /// drops it, as in Flink.
    pub fn output<X: Send + 'static>(
        &mut self,
        tag: &OutputTag<X>,
        value: X,
    ) -> Result<(), SideOutputTypeError> {
        self.side.push(tag, value, self.timestamp)
    }

    /// Calls `f` for every key of this subtask that has a value in the
    /// keyed state `state` (a handle, or a name), with that key current (Flink's
    /// `applyToKeyedState`), so a broadcast element can act on all keys.
    /// `f`'s context is the broadcast element's: its timestamp, and its
    /// side outputs, so what `f` finds per key can be emitted there; it
    /// reads broadcast state as updated so far (as a keyed element's
    /// context does), not changing it while keys are visited.
    pub fn apply_to_keyed_state(
        &mut self,
        state: impl KeyedStateName,
        mut f: impl FnMut(&K, &mut KeyedReadOnlyContext<'_, K>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let state = state.registered_name(self.backend)?;
        let Some(keys) = self.backend.keys(&state) else {
            anyhow::bail!(
                "apply_to_keyed_state: no keyed state '{state}' is registered in operator '{}'",
                self.info.operator_name
            );
        };
        for (key, kg) in keys {
            self.backend.set_current_key(key.clone(), kg)?;
            let ctx = KeyedContext::new(self.info, self.backend)
                .with_timestamp(self.timestamp)
                .with_side_outputs(Some(&mut *self.side));
            f(
                &key,
                &mut KeyedReadOnlyContext {
                    ctx,
                    store: self.store,
                },
            )?;
        }
        self.backend.clear_current_key();
        Ok(())
    }
}

impl<K: Key> OperatorStateRead for KeyedBroadcastContext<'_, K> {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self.store
    }
}

impl<K: Key> OperatorStateAccess for KeyedBroadcastContext<'_, K> {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }
}

/// Processes a regular stream with read access to broadcast state, and a
/// broadcast stream that maintains it (Flink's `BroadcastProcessFunction`).
pub trait BroadcastProcessFunction<IN1, IN2, OUT>: Send + 'static {
    /// Called once per subtask before the first element.
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes a regular element; broadcast state is read-only here.
    fn process_element(
        &mut self,
        value: IN1,
        ctx: &mut ReadOnlyContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Processes a broadcast element; it may change broadcast state (the
    /// same way on every subtask: keep it deterministic).
    fn process_broadcast_element(
        &mut self,
        value: IN2,
        ctx: &mut BroadcastContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

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

/// Processes a keyed stream with keyed state and read access to broadcast
/// state, and a broadcast stream that maintains it and may visit every
/// key's state (Flink's `KeyedBroadcastProcessFunction`).
pub trait KeyedBroadcastProcessFunction<K: Key, IN1, IN2, OUT>: Send + 'static {
    /// Registers keyed state; called once per subtask before the first
    /// element.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes a keyed element of key `ctx.current_key()`; broadcast
    /// state is read-only here.
    fn process_element(
        &mut self,
        value: IN1,
        ctx: &mut KeyedReadOnlyContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Processes a broadcast element; it may change broadcast state (the
    /// same way on every subtask: keep it deterministic) and visit keyed
    /// state with `apply_to_keyed_state`.
    fn process_broadcast_element(
        &mut self,
        value: IN2,
        ctx: &mut KeyedBroadcastContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// A timer set in `process_element` fired, with its key current
    /// (Flink's `onTimer`): event-time timers when the watermark (the
    /// minimum of both inputs) reaches them, processing-time timers on the
    /// clock.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut KeyedBroadcastOnTimerContext<'_, K>,
        _out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
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

/// Writer of the broadcast edge: every record to every subtask.
fn broadcast_writer<A: Record, B: Record>() -> WriterFactory {
    Arc::new(|mut args: WriterArgs| {
        let set = args.take_channel_set::<TwoInput<A, B>>(false);
        tagged::<B, TwoInput<A, B>>(Box::new(BroadcastWriter::new(set)), TwoInput::Second)
    })
}

/// Adds the two-input vertex and its two edges.
fn add_two_input<A: Record, B: Record, U: Record>(
    first: &DataStream<A>,
    broadcast: &BroadcastStream<B>,
    name: &str,
    make: MakeKind,
    first_writer: WriterFactory,
    first_partitioning: Option<Partitioning>,
) -> DataStream<U> {
    let env = first.environment().clone();
    let target = env.add_vertex(VertexSpec {
        name: name.to_string(),
        uid: None,
        parallelism: None,
        max_parallelism: None,
        non_parallel: false,
        make,
        input_type: Some(StreamType::<TwoInput<A, B>>::ops()),
        output_type: StreamType::<U>::ops(),
    });
    for input in first.inputs() {
        env.add_edge(input.edge_to(target, first_partitioning, Some(first_writer.clone())));
    }
    for input in broadcast.stream.inputs() {
        env.add_edge(input.edge_to(
            target,
            Some(Partitioning::Broadcast),
            Some(broadcast_writer::<A, B>()),
        ));
    }
    DataStream::from_vertex(env, target)
}

impl<A: Record, B: Record> BroadcastConnectedStream<A, B> {
    /// Applies a broadcast process function (Flink's `process`).
    pub fn process<U: Record, F>(&self, function: F) -> DataStream<U>
    where
        F: BroadcastProcessFunction<A, B, U> + Clone,
    {
        let proto = Prototype::new(function);
        let declarations = self.broadcast.declarations.clone();
        let make: MakeKind = Box::new(move |_: &BuildSettings| {
            let (proto, declarations) = (proto.clone(), declarations.clone());
            VertexKind::Operator(Arc::new(move |info, down, side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "broadcast operator output");
                let op: Box<dyn Operator<TwoInput<A, B>>> = Box::new(CoBroadcastOp {
                    side: NonKeyed(proto.instance()),
                    operator_state: ManagedOperatorState::new(info, None),
                    declarations: declarations.clone(),
                    out: Batch::from_records(Vec::new()),
                    next,
                    side_outputs: SideOutputBuffers::new(side),
                    info: info.clone(),
                    _t: PhantomData,
                });
                Box::new(op)
            }))
        });
        let writer: WriterFactory = Arc::new(|mut args: WriterArgs| {
            let set = args.take_channel_set::<TwoInput<A, B>>(false);
            let sender = args.sender_index;
            tagged::<A, TwoInput<A, B>>(
                Box::new(RebalanceWriter::new(set, sender)),
                TwoInput::First,
            )
        });
        add_two_input(
            &self.first,
            &self.broadcast,
            "Broadcast Process",
            make,
            writer,
            None,
        )
    }
}

impl<A: Record, K: Key, KS, B: Record> KeyedBroadcastConnectedStream<A, K, KS, B>
where
    KS: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// Applies a keyed broadcast process function (Flink's `process`).
    pub fn process<U: Record, F>(&self, function: F) -> DataStream<U>
    where
        F: KeyedBroadcastProcessFunction<K, A, B, U> + Clone,
    {
        let proto = Prototype::new(function);
        let declarations = self.broadcast.declarations.clone();
        let ks = self.first.key_selector().clone();
        let make: MakeKind = Box::new(move |s: &BuildSettings| {
            let (proto, declarations, backend) =
                (proto.clone(), declarations.clone(), s.backend.clone());
            let ks = ks.clone();
            VertexKind::Operator(Arc::new(move |info, down, side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "broadcast operator output");
                let range = KeyGroupRange::for_operator_index(
                    info.max_parallelism,
                    info.parallelism,
                    info.subtask_index,
                );
                let (keyed_backend, backend_error) =
                    crate::operators::keyed_backend::<K>(&backend, info, range);
                let op: Box<dyn Operator<TwoInput<A, B>>> = Box::new(CoBroadcastOp {
                    side: Keyed {
                        function: proto.instance(),
                        backend: keyed_backend,
                        backend_error,
                        key_selector: ks.clone(),
                        timers: None,
                    },
                    operator_state: ManagedOperatorState::new(info, Some(range)),
                    declarations: declarations.clone(),
                    out: Batch::from_records(Vec::new()),
                    next,
                    side_outputs: SideOutputBuffers::new(side),
                    info: info.clone(),
                    _t: PhantomData,
                });
                Box::new(op)
            }))
        });
        let ks = self.first.key_selector().clone();
        let writer: WriterFactory = Arc::new(move |mut args: WriterArgs| {
            let set = args.take_channel_set::<TwoInput<A, B>>(true);
            let ks = ks.clone();
            let w = KeyGroupWriter::new(
                set,
                args.target_max_parallelism,
                move |r: &TwoInput<A, B>| match r {
                    TwoInput::First(a) => ks(a),
                    TwoInput::Second(_) => {
                        unreachable!("the keyed edge carries first-input records")
                    }
                },
                args.sender.clone(),
                args.target_name.clone(),
            );
            tagged::<A, TwoInput<A, B>>(Box::new(w), TwoInput::First)
        });
        add_two_input(
            self.first.stream(),
            &self.broadcast,
            "Keyed Broadcast Process",
            make,
            writer,
            Some(Partitioning::KeyGroup),
        )
    }
}

/// The operator behind both broadcast functions.
struct CoBroadcastOp<A, B, OUT, S> {
    side: S,
    operator_state: ManagedOperatorState,
    declarations: Vec<Declaration>,
    out: Batch<OUT>,
    next: Box<dyn Operator<OUT>>,
    /// What the function emits with `ctx.output`. Sent with every main
    /// batch and ahead of every control element forwarded to it, as from
    /// a process operator, so checkpoints align and watermarks hold
    /// downstream of a side output as downstream of the main output.
    side_outputs: SideOutputBuffers,
    info: TaskInfo,
    _t: PhantomData<fn(A, B)>,
}

/// The non-keyed side: a [`BroadcastProcessFunction`].
struct NonKeyed<F>(F);

/// The keyed side: a [`KeyedBroadcastProcessFunction`], keyed state and
/// the key selector of the keyed input.
struct Keyed<K: Key, F, KS> {
    function: F,
    backend: KeyedStateBackend<K>,
    /// Why the configured backend could not be created (reported at open).
    backend_error: Option<floe_state::StateError>,
    key_selector: KS,
    /// The function's timers, once open.
    timers: Option<KeyedTimers>,
}

/// What differs between the keyed and the non-keyed broadcast operator.
trait BroadcastSide<A, B, OUT>: Send {
    /// Restores keyed state (if any) and calls the function's `open`.
    fn open(&mut self, init: &TaskInit, info: &TaskInfo) -> Result<(), TaskError>;
    /// Processes one batch (all from one input channel).
    fn process(
        &mut self,
        batch: &mut Batch<TwoInput<A, B>>,
        store: &mut OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<()>;
    /// The function's operator state hooks.
    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction>;
    /// The function's checkpoint notification hooks.
    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener>;
    /// Keyed state's part of a snapshot.
    fn snapshot_keyed(&mut self, info: &TaskInfo, snapshot: &mut TaskSnapshot);
    /// The keyed state backend's native metrics (none without keyed state).
    fn native_metrics(&self, _out: &mut Vec<floe_state::NativeMetric>) {}
    /// A watermark arrived: fires the timers it made due (one slice) and
    /// returns it once all have fired, to be forwarded.
    fn on_watermark(
        &mut self,
        wm: Watermark,
        store: &OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>>;
    /// The processing time now, on the job's clock, when the function has
    /// processing-time timers (what `finish` fires them up to).
    fn processing_time(&self) -> Option<i64>;
    /// Goes on firing: the pending watermark's timers (one slice when
    /// `sliced`, else all), then processing-time timers due at `now_ms`;
    /// returns the pending watermark once its timers have all fired.
    fn fire_due(
        &mut self,
        now_ms: Option<i64>,
        sliced: bool,
        store: &OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>>;
}

impl<A, B, OUT, F: BroadcastProcessFunction<A, B, OUT>> BroadcastSide<A, B, OUT> for NonKeyed<F> {
    fn open(&mut self, _init: &TaskInit, info: &TaskInfo) -> Result<(), TaskError> {
        info.guard(|| self.0.open(info))
    }

    fn process(
        &mut self,
        batch: &mut Batch<TwoInput<A, B>>,
        store: &mut OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<()> {
        let Batch {
            records: out,
            timestamps: out_ts,
            ..
        } = out;
        let mut c = Collector::new(out);
        batch.key_groups.clear();
        let mut timestamps = batch.timestamps.drain(..);
        for r in batch.records.drain(..) {
            let ts = timestamps.next();
            let timestamp = ts.unwrap_or(floe_core::NO_TIMESTAMP);
            match r {
                TwoInput::First(a) => self.0.process_element(
                    a,
                    &mut ReadOnlyContext {
                        info,
                        store,
                        side,
                        timestamp,
                    },
                    &mut c,
                )?,
                TwoInput::Second(b) => self.0.process_broadcast_element(
                    b,
                    &mut BroadcastContext {
                        info,
                        store,
                        side,
                        timestamp,
                    },
                    &mut c,
                )?,
            }
            if let Some(ts) = ts {
                out_ts.resize(c.len(), ts);
            }
        }
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        self.0.checkpointed_function()
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        self.0.checkpoint_listener()
    }

    fn snapshot_keyed(&mut self, _: &TaskInfo, _: &mut TaskSnapshot) {}

    fn processing_time(&self) -> Option<i64> {
        None
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        _: &OperatorStateStore,
        _: &TaskInfo,
        _: &mut Batch<OUT>,
        _: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>> {
        Ok(Some(wm))
    }

    fn fire_due(
        &mut self,
        _: Option<i64>,
        _: bool,
        _: &OperatorStateStore,
        _: &TaskInfo,
        _: &mut Batch<OUT>,
        _: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>> {
        Ok(None)
    }
}

impl<K, A, B, OUT, F, KS> BroadcastSide<A, B, OUT> for Keyed<K, F, KS>
where
    K: Key,
    F: KeyedBroadcastProcessFunction<K, A, B, OUT>,
    KS: Fn(&A) -> K + Send,
{
    fn open(&mut self, init: &TaskInit, info: &TaskInfo) -> Result<(), TaskError> {
        if let Some(e) = self.backend_error.take() {
            return Err(info.failure(floe_runtime::FailureCause::Error(e.into())));
        }
        let (function, backend) = (&mut self.function, &mut self.backend);
        if let Some(restore) = init.operator(&info.uid) {
            info.guard(|| {
                backend.restore(restore.keyed.iter().map(|f| f.as_slice()))?;
                Ok(())
            })?;
        }
        // TTL follows the job's processing-time clock, as timers do.
        let time = init.time.clone();
        backend.set_ttl_time_provider(move || time.now_ms());
        let timers = info.guard(|| Ok(KeyedTimers::open(backend, init.time.clone())?))?;
        self.timers = Some(timers);
        info.guard(|| function.open(&mut RuntimeContext::new(info, Some(backend))))
    }

    fn process(
        &mut self,
        batch: &mut Batch<TwoInput<A, B>>,
        store: &mut OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<()> {
        let (function, backend, ks) = (&mut self.function, &mut self.backend, &self.key_selector);
        let timers = self.timers.as_ref().map(|t| t.access());
        let Batch {
            records: out,
            timestamps: out_ts,
            ..
        } = out;
        let mut c = Collector::new(out);
        let mut key_groups = batch.key_groups.drain(..);
        let mut timestamps = batch.timestamps.drain(..);
        for r in batch.records.drain(..) {
            let ts = timestamps.next();
            let timestamp = ts.unwrap_or(floe_core::NO_TIMESTAMP);
            match r {
                TwoInput::First(a) => {
                    let kg = key_groups
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("keyed element without a key group"))?;
                    backend.set_current_key(ks(&a), kg)?;
                    let ctx = KeyedContext::new(info, backend)
                        .with_timestamp(timestamp)
                        .with_timers(timers)
                        .with_side_outputs(Some(&mut *side));
                    function.process_element(
                        a,
                        &mut KeyedReadOnlyContext { ctx, store },
                        &mut c,
                    )?;
                }
                TwoInput::Second(b) => function.process_broadcast_element(
                    b,
                    &mut KeyedBroadcastContext {
                        info,
                        backend,
                        store,
                        side,
                        timestamp,
                    },
                    &mut c,
                )?,
            }
            if let Some(ts) = ts {
                out_ts.resize(c.len(), ts);
            }
        }
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        self.function.checkpointed_function()
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        self.function.checkpoint_listener()
    }

    fn native_metrics(&self, out: &mut Vec<floe_state::NativeMetric>) {
        self.backend.native_metrics(out)
    }

    fn snapshot_keyed(&mut self, info: &TaskInfo, snapshot: &mut TaskSnapshot) {
        snapshot.operators.push(OperatorSnapshot {
            uid: info.uid.clone(),
            subtask: info.subtask_index,
            state: OperatorState::Keyed(self.backend.snapshot()),
        });
    }

    fn processing_time(&self) -> Option<i64> {
        self.timers.as_ref().map(KeyedTimers::now_ms)
    }

    fn on_watermark(
        &mut self,
        wm: Watermark,
        store: &OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>> {
        match self.timers.as_mut() {
            Some(timers) => timers.advance_watermark(wm),
            None => return Ok(Some(wm)),
        }
        self.fire_due(None, true, store, info, out, side)
    }

    fn fire_due(
        &mut self,
        now_ms: Option<i64>,
        sliced: bool,
        store: &OperatorStateStore,
        info: &TaskInfo,
        out: &mut Batch<OUT>,
        side: &mut SideOutputBuffers,
    ) -> anyhow::Result<Option<Watermark>> {
        let Some(timers) = self.timers.as_mut() else {
            return Ok(None);
        };
        let mut forward = None;
        if timers.has_pending() {
            let fired = fire_keyed_broadcast_timers(
                &mut self.function,
                &mut self.backend,
                timers,
                TimeDomain::EventTime,
                0,
                sliced,
                store,
                info,
                out,
                side,
            )?;
            if fired == Fired::AllDue {
                forward = timers.take_pending();
            }
        }
        if let Some(now) = now_ms {
            fire_keyed_broadcast_timers(
                &mut self.function,
                &mut self.backend,
                timers,
                TimeDomain::ProcessingTime,
                now,
                sliced,
                store,
                info,
                out,
                side,
            )?;
        }
        Ok(forward)
    }
}

/// Fires a keyed broadcast function's due timers of `domain` through its
/// `on_timer`; output (main and side) carries the timer's timestamp in
/// event time.
#[allow(clippy::too_many_arguments)]
fn fire_keyed_broadcast_timers<K, A, B, OUT, F>(
    function: &mut F,
    backend: &mut KeyedStateBackend<K>,
    timers: &mut KeyedTimers,
    domain: TimeDomain,
    now_ms: i64,
    sliced: bool,
    store: &OperatorStateStore,
    info: &TaskInfo,
    out: &mut Batch<OUT>,
    side: &mut SideOutputBuffers,
) -> anyhow::Result<Fired>
where
    K: Key,
    F: KeyedBroadcastProcessFunction<K, A, B, OUT>,
{
    timers.fire(backend, domain, now_ms, sliced, |backend, timers, timer| {
        let ts = match domain {
            TimeDomain::EventTime => timer.timestamp,
            TimeDomain::ProcessingTime => floe_core::NO_TIMESTAMP,
        };
        let from = out.records.len();
        let ctx = KeyedContext::new(info, backend)
            .with_timestamp(ts)
            .with_timers(Some(timers.access()))
            .with_side_outputs(Some(&mut *side));
        function.on_timer(
            timer.timestamp,
            &mut KeyedBroadcastOnTimerContext {
                ro: KeyedReadOnlyContext { ctx, store },
                domain,
                timestamp: timer.timestamp,
            },
            &mut Collector::new(&mut out.records),
        )?;
        if ts != floe_core::NO_TIMESTAMP || !out.timestamps.is_empty() {
            out.timestamps.resize(from, floe_core::NO_TIMESTAMP);
            out.timestamps.resize(out.records.len(), ts);
        }
        Ok::<_, anyhow::Error>(())
    })
}

impl<A, B, OUT: Send, S: BroadcastSide<A, B, OUT>> CoBroadcastOp<A, B, OUT, S> {
    fn emit(&mut self) -> Result<(), TaskError> {
        self.side_outputs.emit()?;
        if self.out.is_empty() {
            return Ok(());
        }
        self.next.process_batch(&mut self.out)
    }

    /// Forwards a watermark whose timers have all fired, to the side
    /// outputs too: windows downstream of them close on it as well.
    fn forward_watermark(&mut self, wm: Option<Watermark>) -> Result<(), TaskError> {
        match wm {
            Some(wm) => {
                self.next.process_watermark(wm)?;
                self.side_outputs.process_watermark(wm)
            }
            None => Ok(()),
        }
    }

    /// Fires due timers (see [`BroadcastSide::fire_due`]) and forwards a
    /// watermark whose timers have all fired.
    fn fire(&mut self, now_ms: Option<i64>, sliced: bool) -> Result<(), TaskError> {
        let (side, info, out) = (&mut self.side, &self.info, &mut self.out);
        let side_outputs = &mut self.side_outputs;
        let store = self.operator_state.store();
        let forward =
            info.guard(|| side.fire_due(now_ms, sliced, store, info, out, side_outputs))?;
        self.emit()?;
        self.forward_watermark(forward)
    }
}

impl<A: Send, B: Send, OUT: Send, S: BroadcastSide<A, B, OUT>> Operator<TwoInput<A, B>>
    for CoBroadcastOp<A, B, OUT, S>
{
    fn open(&mut self, init: &TaskInit) -> Result<(), TaskError> {
        self.next.open(init)?;
        self.side_outputs.open(init)?;
        let (side, declarations, info) = (&mut self.side, &self.declarations, &self.info);
        self.operator_state.initialize(init, info, |ctx| {
            for declare in declarations {
                declare(ctx.operator_state_store())?;
            }
            FunctionHooks::initialize(side.checkpointed_function(), ctx)
        })?;
        side.open(init, info)
    }

    fn process_batch(&mut self, batch: &mut Batch<TwoInput<A, B>>) -> Result<(), TaskError> {
        // Elements after a watermark come after its timers.
        self.fire(None, false)?;
        let (side, info, out) = (&mut self.side, &self.info, &mut self.out);
        let side_outputs = &mut self.side_outputs;
        let store = self.operator_state.store();
        info.guard(|| side.process(batch, store, info, out, side_outputs))?;
        self.emit()
    }

    fn process_watermark(&mut self, wm: Watermark) -> Result<(), TaskError> {
        self.emit()?;
        let (side, info, out) = (&mut self.side, &self.info, &mut self.out);
        let side_outputs = &mut self.side_outputs;
        let store = self.operator_state.store();
        let forward = info.guard(|| side.on_watermark(wm, store, info, out, side_outputs))?;
        self.emit()?;
        self.forward_watermark(forward)
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus) -> Result<(), TaskError> {
        self.emit()?;
        self.next.process_watermark_status(status)?;
        self.side_outputs.process_watermark_status(status)
    }

    fn on_processing_time(&mut self, now_ms: i64) -> Result<(), TaskError> {
        self.fire(Some(now_ms), true)?;
        self.next.on_processing_time(now_ms)?;
        self.side_outputs.on_processing_time(now_ms)
    }

    fn process_barrier(
        &mut self,
        b: CheckpointBarrier,
        snapshot: &mut TaskSnapshot,
    ) -> Result<(), TaskError> {
        self.emit()?;
        let side = &mut self.side;
        self.operator_state
            .snapshot(b, &self.info, snapshot, |ctx| {
                FunctionHooks::snapshot(side.checkpointed_function(), ctx)
            })?;
        self.side.snapshot_keyed(&self.info, snapshot);
        self.next.process_barrier(b, snapshot)?;
        self.side_outputs.process_barrier(b, snapshot)
    }

    fn notify_checkpoint(&mut self, n: CheckpointNotification) -> Result<(), TaskError> {
        let (side, info) = (&mut self.side, &self.info);
        info.guard(|| FunctionHooks::notify(side.checkpoint_listener(), n))?;
        self.next.notify_checkpoint(n)?;
        self.side_outputs.notify_checkpoint(n)
    }

    fn flush(&mut self) -> Result<(), TaskError> {
        self.emit()?;
        self.next.flush()?;
        self.side_outputs.flush()
    }

    fn query_state(&mut self, q: StateQuery) -> Option<StateQuery> {
        let q = self.next.query_state(q)?;
        self.side_outputs.query_state(q)
    }

    fn native_metrics(&mut self, out: &mut Vec<floe_state::NativeMetric>) {
        self.side.native_metrics(out)
    }

    fn finish(&mut self) -> Result<(), TaskError> {
        // Whatever the last watermark made due fires before the end, and
        // so do processing-time timers already due once it has (Flink runs
        // the timers that triggered before it finishes an operator, and
        // so does a keyed process function); later ones are dropped: the
        // task calls no operator after `finish`.
        self.fire(None, false)?;
        if let Some(now) = self.side.processing_time() {
            self.fire(Some(now), false)?;
        }
        self.emit()?;
        self.next.finish()?;
        self.side_outputs.finish()
    }
}
