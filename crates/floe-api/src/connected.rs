//! Two streams processed by one operator (Flink's `ConnectedStreams`,
//! `CoMapFunction`, `CoFlatMapFunction`, `CoProcessFunction` and
//! `KeyedCoProcessFunction`): what regular joins and enrichment are
//! written with.
//!
//! `a.connect(&b)` gives [`ConnectedStreams`]; `map` and `flat_map` take a
//! closure per input, `process` a [`CoProcessFunction`] with operator
//! state. `key_by(key_a, key_b)` (or `keyed_a.connect(&keyed_b)`) gives
//! [`KeyedConnectedStreams`], whose [`KeyedCoProcessFunction`] sees both
//! inputs' records of a key with that key's state and timers.
//!
//! The operator is one vertex whose input is [`TwoInput`]: each incoming
//! edge's writer tags its records as first or second input (as the
//! broadcast pattern's edges do), so the task is an ordinary input task —
//! its watermark is the minimum over the channels of both inputs, and
//! barrier alignment, unaligned checkpoints and backpressure are those of
//! any operator. The keyed variant runs in the keyed operator (`KeyedOp`)
//! as a `KeyedProcessFunction` over `TwoInput`, so keyed state, timers,
//! side outputs, snapshots and rescaling are exactly a keyed process
//! function's.

use std::marker::PhantomData;
use std::sync::Arc;

use floe_runtime::graph::{StreamType, VertexKind, WriterArgs, WriterFactory, unbox};
use floe_runtime::writer::{BroadcastWriter, ForwardWriter, KeyGroupWriter, RebalanceWriter};
use floe_runtime::{
    CheckpointListener, CheckpointedFunction, KeyedContext, OnTimerContext, Operator, Partitioning,
    RuntimeContext, TaskInfo,
};
use floe_state::Key;

use crate::env::{BuildSettings, MakeKind, VertexSpec};
use crate::functions::{Collector, KeyedProcessFunction, ProcessContext, ProcessFunction};
use crate::keyed_op::ProcessLogic;
use crate::operators::{FlatMapOp, ProcessOp};
use crate::stream::{DataStream, KeyedStream, Prototype, Record, keyed_op_kind};
use crate::two_input::{TwoInput, tagged};

mod sealed {
    /// Keeps [`super::Connectable`] and [`super::KeyedConnectable`] closed:
    /// what can be connected is decided here, not by users.
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// What a `DataStream<A>` can be connected with: another stream (giving
/// [`ConnectedStreams`]) or a broadcast stream (giving a
/// [`BroadcastConnectedStream`](crate::BroadcastConnectedStream)). One
/// `connect` serves both, as in Flink.
pub trait Connectable<A>: Sealed {
    /// The connected pair.
    type Connected;

    /// Connects `first` with `self`; called by [`DataStream::connect`].
    fn connect_to(&self, first: &DataStream<A>) -> Self::Connected;
}

/// What a `KeyedStream<A, K, KS>` can be connected with: a keyed stream
/// with the same key type (giving [`KeyedConnectedStreams`]) or a
/// broadcast stream (giving a
/// [`KeyedBroadcastConnectedStream`](crate::KeyedBroadcastConnectedStream)).
pub trait KeyedConnectable<A, K, KS>: Sealed {
    /// The connected pair.
    type Connected;

    /// Connects `first` with `self`; called by [`KeyedStream::connect`].
    fn connect_to(&self, first: &KeyedStream<A, K, KS>) -> Self::Connected;
}

impl<T: Record> DataStream<T> {
    /// Connects this stream with `other` (Flink's `connect`): with a
    /// [`DataStream`], one operator then processes both (co-map,
    /// co-process, or keyed by both with `key_by`); with a
    /// [`BroadcastStream`](crate::BroadcastStream), the broadcast state
    /// pattern.
    pub fn connect<O: Connectable<T>>(&self, other: &O) -> O::Connected {
        other.connect_to(self)
    }
}

impl<A: Record, K: Key, KS> KeyedStream<A, K, KS>
where
    KS: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// Connects this keyed stream with `other` (Flink's `connect`): with a
    /// [`KeyedStream`] of the same key type, records of equal keys from
    /// both reach the same subtask (a keyed co-process); with a
    /// [`BroadcastStream`](crate::BroadcastStream), the keyed broadcast
    /// state pattern.
    pub fn connect<O: KeyedConnectable<A, K, KS>>(&self, other: &O) -> O::Connected {
        other.connect_to(self)
    }
}

impl<B> Sealed for DataStream<B> {}
impl<B, K, KB> Sealed for KeyedStream<B, K, KB> {}

impl<A: Record, B: Record> Connectable<A> for DataStream<B> {
    type Connected = ConnectedStreams<A, B>;

    fn connect_to(&self, first: &DataStream<A>) -> ConnectedStreams<A, B> {
        ConnectedStreams {
            first: first.clone(),
            second: self.clone(),
        }
    }
}

impl<A: Record, B: Record, K: Key, KA, KB> KeyedConnectable<A, K, KA> for KeyedStream<B, K, KB>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    type Connected = KeyedConnectedStreams<A, B, K, KA, KB>;

    fn connect_to(&self, first: &KeyedStream<A, K, KA>) -> Self::Connected {
        KeyedConnectedStreams {
            first: first.stream().clone(),
            second: self.stream().clone(),
            key1: first.key_selector().clone(),
            key2: self.key_selector().clone(),
            _k: PhantomData,
        }
    }
}

/// Two streams, possibly of different types, connected for one operator
/// (Flink's `ConnectedStreams`). Records of the two inputs interleave in
/// no guaranteed order: only event time (timestamps, watermarks, timers)
/// orders them.
pub struct ConnectedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

impl<A, B> Clone for ConnectedStreams<A, B> {
    fn clone(&self) -> Self {
        ConnectedStreams {
            first: self.first.clone(),
            second: self.second.clone(),
        }
    }
}

/// Two connected streams partitioned by key (Flink's `ConnectedStreams`
/// after `keyBy`): records of equal keys from both inputs reach the same
/// subtask, whose keyed state and timers are scoped to the key.
pub struct KeyedConnectedStreams<A, B, K, KA, KB> {
    first: DataStream<A>,
    second: DataStream<B>,
    key1: KA,
    key2: KB,
    _k: PhantomData<fn() -> K>,
}

impl<A, B, K, KA: Clone, KB: Clone> Clone for KeyedConnectedStreams<A, B, K, KA, KB> {
    fn clone(&self) -> Self {
        KeyedConnectedStreams {
            first: self.first.clone(),
            second: self.second.clone(),
            key1: self.key1.clone(),
            key2: self.key2.clone(),
            _k: PhantomData,
        }
    }
}

/// A function over two non-keyed inputs with operator state (Flink's
/// `CoProcessFunction`); timers need a keyed stream
/// ([`KeyedCoProcessFunction`]), as in Flink.
pub trait CoProcessFunction<IN1, IN2, OUT>: Send + 'static {
    /// Called once per subtask before the first record (after
    /// `initialize_state`).
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes one record of the first input.
    fn process_element1(
        &mut self,
        value: IN1,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Processes one record of the second input.
    fn process_element2(
        &mut self,
        value: IN2,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Called once after the last record of both inputs.
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

/// A function over two keyed inputs with keyed state and timers (Flink's
/// `KeyedCoProcessFunction`): the context of either `process_element` is a
/// [`KeyedContext`] for the record's key (state, `timestamp()`,
/// `timer_service()`, `current_key()`, side outputs with `output`), as in a
/// [`KeyedProcessFunction`]; a timer fires once for its key, whichever
/// input set it.
pub trait KeyedCoProcessFunction<K: Key, IN1, IN2, OUT>: Send + 'static {
    /// Registers state; called once per subtask before the first record.
    fn open(&mut self, _ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Processes one record of the first input, of key `ctx.current_key()`.
    fn process_element1(
        &mut self,
        value: IN1,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// Processes one record of the second input, of key
    /// `ctx.current_key()`.
    fn process_element2(
        &mut self,
        value: IN2,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()>;

    /// A timer fired: `ctx` has the timer's key as the current key, with
    /// its state, and tells the time domain. Event-time timers fire when
    /// the watermark (the minimum of both inputs') reaches them, before
    /// the watermark goes on; their output carries the timer's timestamp.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut OnTimerContext<'_, K>,
        _out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Called once after the last record of both inputs.
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

/// The writer of one non-keyed input's edge: the partitioning asked for
/// on that input (`rebalance`, `broadcast`; otherwise forward when the
/// parallelism matches, else round robin, as for any edge), behind a
/// tagger for its side.
fn input_writer<X: Record, T: Record>(
    partitioning: Option<Partitioning>,
    wrap: fn(X) -> T,
) -> WriterFactory {
    Arc::new(move |mut args: WriterArgs| {
        let set = args.take_channel_set::<T>(false);
        let w: Box<dyn Operator<T>> = match partitioning {
            // A forward edge has the one channel; any other with one
            // channel behaves the same.
            _ if set.len() == 1 => Box::new(ForwardWriter::new(set)),
            Some(Partitioning::Broadcast) => Box::new(BroadcastWriter::new(set)),
            _ => Box::new(RebalanceWriter::new(set, args.sender_index)),
        };
        tagged::<X, T>(w, wrap)
    })
}

/// The writer of one keyed input's edge: `key` (over both inputs' tagged
/// records) picks the key group, behind a tagger for its side.
fn keyed_writer<X, T, K, KS>(key: KS, wrap: fn(X) -> T) -> WriterFactory
where
    X: Record,
    T: Record,
    K: Key,
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    Arc::new(move |mut args: WriterArgs| {
        let set = args.take_channel_set::<T>(true);
        let w: Box<dyn Operator<T>> = Box::new(KeyGroupWriter::new(
            set,
            args.target_max_parallelism,
            key.clone(),
            args.sender.clone(),
            args.target_name.clone(),
        ));
        tagged::<X, T>(w, wrap)
    })
}

/// Adds the two-input vertex `name` and an edge from every producer of
/// each input; `edge` gives an input's edge partitioning and writer from
/// the partitioning asked for on it.
fn add_co_vertex<A: Record, B: Record, U: Record>(
    first: &DataStream<A>,
    second: &DataStream<B>,
    name: &str,
    make: MakeKind,
    edge: impl Fn(Option<Partitioning>, bool) -> (Option<Partitioning>, WriterFactory),
) -> DataStream<U> {
    let env = first.environment().clone();
    assert!(
        std::rc::Rc::ptr_eq(&env.inner, &second.environment().inner),
        "connect: both streams must belong to the same StreamEnvironment"
    );
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
        let (partitioning, writer) = edge(input.partitioning, true);
        env.add_edge(input.edge_to(target, partitioning, Some(writer)));
    }
    for input in second.inputs() {
        let (partitioning, writer) = edge(input.partitioning, false);
        env.add_edge(input.edge_to(target, partitioning, Some(writer)));
    }
    DataStream::from_vertex(env, target)
}

impl<A: Record, B: Record> ConnectedStreams<A, B> {
    /// The first input.
    pub fn first_input(&self) -> &DataStream<A> {
        &self.first
    }

    /// The second input.
    pub fn second_input(&self) -> &DataStream<B> {
        &self.second
    }

    /// One operator over both inputs, non-keyed.
    fn co_operator<U: Record>(&self, name: &str, make: MakeKind) -> DataStream<U> {
        add_co_vertex(&self.first, &self.second, name, make, |p, first| {
            let writer = if first {
                input_writer::<A, TwoInput<A, B>>(p, TwoInput::First)
            } else {
                input_writer::<B, TwoInput<A, B>>(p, TwoInput::Second)
            };
            (p, writer)
        })
    }

    /// Emits any number of records per record of either input (Flink's
    /// `flatMap(CoFlatMapFunction)`): `f1` is its `flatMap1`, `f2` its
    /// `flatMap2`. Output carries the input record's timestamp.
    pub fn flat_map<U: Record, F1, F2>(&self, f1: F1, f2: F2) -> DataStream<U>
    where
        F1: FnMut(A, &mut Collector<'_, U>) + Clone + Send + 'static,
        F2: FnMut(B, &mut Collector<'_, U>) + Clone + Send + 'static,
    {
        let proto = Prototype::new((f1, f2));
        let make: MakeKind = Box::new(move |_: &BuildSettings| {
            let proto = proto.clone();
            VertexKind::Operator(Arc::new(move |info, down, _side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "operator output");
                let (mut f1, mut f2) = proto.instance();
                let f = move |v: TwoInput<A, B>, out: &mut Collector<'_, U>| match v {
                    TwoInput::First(a) => f1(a, out),
                    TwoInput::Second(b) => f2(b, out),
                };
                let op: Box<dyn Operator<TwoInput<A, B>>> =
                    Box::new(FlatMapOp::new(f, next, info.clone()));
                Box::new(op)
            }))
        });
        self.co_operator("Co-Flat Map", make)
    }

    /// Transforms every record of either input into the output type
    /// (Flink's `map(CoMapFunction)`): `f1` is its `map1`, `f2` its
    /// `map2`.
    pub fn map<U: Record, F1, F2>(&self, mut f1: F1, mut f2: F2) -> DataStream<U>
    where
        F1: FnMut(A) -> U + Clone + Send + 'static,
        F2: FnMut(B) -> U + Clone + Send + 'static,
    {
        self.flat_map(
            move |a, out: &mut Collector<'_, U>| out.collect(f1(a)),
            move |b, out: &mut Collector<'_, U>| out.collect(f2(b)),
        )
        .name("Co-Map")
    }

    /// Applies a co-process function with operator state (Flink's
    /// `process(CoProcessFunction)`).
    pub fn process<U: Record, P>(&self, function: P) -> DataStream<U>
    where
        P: CoProcessFunction<A, B, U> + Clone,
    {
        let proto = Prototype::new(CoProcess(function));
        let make: MakeKind = Box::new(move |_: &BuildSettings| {
            let proto = proto.clone();
            VertexKind::Operator(Arc::new(move |info, down, side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "operator output");
                let op: Box<dyn Operator<TwoInput<A, B>>> =
                    Box::new(ProcessOp::new(proto.instance(), next, side, info.clone()));
                Box::new(op)
            }))
        });
        self.co_operator("Co-Process", make)
    }

    /// Partitions both inputs by key (Flink's `keyBy(key1, key2)`): records
    /// whose selectors give equal keys reach the same subtask. Both
    /// selectors must be deterministic.
    pub fn key_by<K: Key, KA, KB>(
        &self,
        key1: KA,
        key2: KB,
    ) -> KeyedConnectedStreams<A, B, K, KA, KB>
    where
        KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
        KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        KeyedConnectedStreams {
            first: self.first.clone(),
            second: self.second.clone(),
            key1,
            key2,
            _k: PhantomData,
        }
    }
}

/// The key of a tagged record: `key1` for the first input's, `key2` for
/// the second's.
fn either_key<A, B, K, KA, KB>(
    key1: KA,
    key2: KB,
) -> impl Fn(&TwoInput<A, B>) -> K + Clone + Send + Sync + 'static
where
    A: 'static,
    B: 'static,
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    move |r: &TwoInput<A, B>| match r {
        TwoInput::First(a) => key1(a),
        TwoInput::Second(b) => key2(b),
    }
}

impl<A, B, K, KA, KB> KeyedConnectedStreams<A, B, K, KA, KB>
where
    A: Record,
    B: Record,
    K: Key,
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Applies a keyed co-process function (Flink's
    /// `process(KeyedCoProcessFunction)`): keyed state and timers for the
    /// current key of either input. Name it and give it a uid like any
    /// operator: its state (with its timers) is restored by uid, at any
    /// parallelism.
    pub fn process<U: Record, P>(&self, function: P) -> DataStream<U>
    where
        P: KeyedCoProcessFunction<K, A, B, U> + Clone,
    {
        let key = either_key::<A, B, K, _, _>(self.key1.clone(), self.key2.clone());
        let logic = ProcessLogic {
            function: KeyedCoProcess(function),
            timers: true,
        };
        let make = keyed_op_kind::<TwoInput<A, B>, K, U, _, _>(logic, key.clone());
        add_co_vertex(
            &self.first,
            &self.second,
            "Keyed Co-Process",
            make,
            |_, first| {
                let writer = if first {
                    keyed_writer::<A, TwoInput<A, B>, K, _>(key.clone(), TwoInput::First)
                } else {
                    keyed_writer::<B, TwoInput<A, B>, K, _>(key.clone(), TwoInput::Second)
                };
                (Some(Partitioning::KeyGroup), writer)
            },
        )
    }
}

/// A [`CoProcessFunction`] as a process function over tagged records.
#[derive(Clone)]
struct CoProcess<F>(F);

impl<A, B, OUT, F: CoProcessFunction<A, B, OUT>> ProcessFunction<TwoInput<A, B>, OUT>
    for CoProcess<F>
{
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.0.open(info)
    }

    #[inline]
    fn process_element(
        &mut self,
        value: TwoInput<A, B>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        match value {
            TwoInput::First(a) => self.0.process_element1(a, ctx, out),
            TwoInput::Second(b) => self.0.process_element2(b, ctx, out),
        }
    }

    fn close(&mut self, out: &mut Collector<'_, OUT>) -> anyhow::Result<()> {
        self.0.close(out)
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        self.0.checkpointed_function()
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        self.0.checkpoint_listener()
    }
}

/// A [`KeyedCoProcessFunction`] as a keyed process function over tagged
/// records, so the keyed operator runs it unchanged.
#[derive(Clone)]
struct KeyedCoProcess<F>(F);

impl<K, A, B, OUT, F> KeyedProcessFunction<K, TwoInput<A, B>, OUT> for KeyedCoProcess<F>
where
    K: Key,
    F: KeyedCoProcessFunction<K, A, B, OUT>,
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.0.open(ctx)
    }

    #[inline]
    fn process_element(
        &mut self,
        value: TwoInput<A, B>,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        match value {
            TwoInput::First(a) => self.0.process_element1(a, ctx, out),
            TwoInput::Second(b) => self.0.process_element2(b, ctx, out),
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut OnTimerContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        self.0.on_timer(timestamp, ctx, out)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.0.close()
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        self.0.checkpointed_function()
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        self.0.checkpoint_listener()
    }
}
