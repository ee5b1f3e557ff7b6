//! Typed streams and their transformations.

use std::marker::PhantomData;
use std::ops::AddAssign;
use std::sync::{Arc, Mutex};

use floe_runtime::graph::{
    SideOutputEdge, StreamType, VertexKind, WriterArgs, WriterFactory, unbox,
};
use floe_runtime::side_output::{OutputTag, bind_side_output};
use floe_runtime::task::SourceTask;
use floe_runtime::writer::KeyGroupWriter;
use floe_runtime::{KeyedContext, Operator, Partitioning, RuntimeContext, WatermarkStrategy};
use floe_state::{Key, ReducingState, ReducingStateDescriptor, ValueState, ValueStateDescriptor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::{BuildSettings, EdgeSpec, MakeKind, StreamEnvironment, VertexSpec};
use crate::functions::{
    Collector, KeyedProcessFunction, ProcessFunction, RichFlatMapFunction, RichMapFunction,
    SinkWriter, Source,
};
use crate::keyed_op::{KeyedLogic, KeyedOp, ProcessLogic};
use crate::operators::{DeferredReader, FlatMapOp, ProcessOp, SinkOp};
use floe_runtime::{CheckpointListener, CheckpointedFunction};

/// What a record must be: cloneable (fan-out, broadcast), sendable between
/// task threads, and serializable (state, snapshots, network channels).
pub trait Record: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Record for T {}

/// A stream of records of type `T` (Flink's `DataStream`).
pub struct DataStream<T> {
    env: StreamEnvironment,
    /// Producing vertices with the partitioning requested towards the next
    /// consumer (several after `union`).
    inputs: Vec<StreamInput>,
    _t: PhantomData<fn() -> T>,
}

/// One producer of a stream: a vertex's main output or one of its side
/// outputs, and the partitioning asked for towards the next consumer.
#[derive(Clone)]
pub(crate) struct StreamInput {
    pub(crate) vertex: usize,
    pub(crate) partitioning: Option<Partitioning>,
    pub(crate) side: Option<SideOutputEdge>,
}

impl StreamInput {
    fn main(vertex: usize) -> Self {
        StreamInput {
            vertex,
            partitioning: None,
            side: None,
        }
    }

    /// The edge from this producer into `target`.
    pub(crate) fn edge_to(
        &self,
        target: usize,
        partitioning: Option<Partitioning>,
        writer: Option<WriterFactory>,
    ) -> EdgeSpec {
        EdgeSpec {
            source: self.vertex,
            target,
            partitioning,
            writer,
            side: self.side.clone(),
        }
    }
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            inputs: self.inputs.clone(),
            _t: PhantomData,
        }
    }
}

/// Wraps a `Clone + Send` value so a `Send + Sync` factory can hand out one
/// clone per subtask (factories only run while the job is built).
pub(crate) struct Prototype<F>(Mutex<F>);

impl<F: Clone> Prototype<F> {
    pub(crate) fn new(f: F) -> Arc<Self> {
        Arc::new(Prototype(Mutex::new(f)))
    }

    pub(crate) fn instance(&self) -> F {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl StreamEnvironment {
    /// Adds a source (Flink's `fromSource`) without event time: its
    /// records carry no timestamps until a strategy assigns them.
    pub fn from_source<T: Record, S: Source<T>>(&self, source: S, name: &str) -> DataStream<T> {
        self.add_source(source, None, name)
    }

    /// Adds a source whose records are stamped, and whose watermarks are
    /// generated, by `strategy` for each of its splits (Flink's
    /// `fromSource(source, watermarkStrategy, name)`): a split that lags
    /// holds back the source's event time, a finished one no longer does,
    /// and with [`WatermarkStrategy::with_idleness`] a quiet one stops
    /// holding it back until it has records again.
    pub fn from_source_with_watermarks<T: Record, S: Source<T>>(
        &self,
        source: S,
        strategy: WatermarkStrategy<T>,
        name: &str,
    ) -> DataStream<T> {
        self.add_source(source, Some(strategy), name)
    }

    fn add_source<T: Record, S: Source<T>>(
        &self,
        source: S,
        strategy: Option<WatermarkStrategy<T>>,
        name: &str,
    ) -> DataStream<T> {
        let non_parallel = !source.is_parallel();
        let source = Arc::new(source);
        let make: MakeKind = Box::new(move |s: &BuildSettings| {
            let source = source.clone();
            let strategy = strategy.clone();
            let batch_size = s.batch_size;
            VertexKind::Source(Arc::new(move |info, down| {
                let next = unbox::<Box<dyn Operator<T>>>(down, "source output");
                let task = SourceTask::new(
                    Box::new(DeferredReader::new(source.clone())),
                    next,
                    info.clone(),
                    batch_size,
                );
                Box::new(match &strategy {
                    Some(s) => task.with_watermarks(s.clone()),
                    None => task,
                })
            }))
        });
        let id = self.add_vertex(VertexSpec {
            name: format!("Source: {name}"),
            uid: None,
            parallelism: None,
            max_parallelism: None,
            non_parallel,
            make,
            input_type: None,
            output_type: StreamType::<T>::ops(),
        });
        DataStream {
            env: self.clone(),
            inputs: vec![StreamInput::main(id)],
            _t: PhantomData,
        }
    }
}

impl<T: Record> DataStream<T> {
    /// The environment this stream belongs to.
    pub fn environment(&self) -> &StreamEnvironment {
        &self.env
    }

    /// The producing vertices (several after `union`).
    pub(crate) fn inputs(&self) -> Vec<StreamInput> {
        self.inputs.clone()
    }

    /// The stream produced by vertex `id`.
    pub(crate) fn from_vertex(env: StreamEnvironment, id: usize) -> Self {
        DataStream {
            env,
            inputs: vec![StreamInput::main(id)],
            _t: PhantomData,
        }
    }

    fn single_vertex(&self, what: &str) -> usize {
        match self.inputs.as_slice() {
            [input] if input.side.is_none() => input.vertex,
            [_] => panic!("{what} applies to an operator, but this stream is a side output of one"),
            _ => panic!("{what} applies to one operator, but this stream is a union of several"),
        }
    }

    /// Adds a consumer vertex fed by every input of this stream.
    pub(crate) fn add_consumer<U: Record>(
        &self,
        name: &str,
        make: MakeKind,
        writer: Option<WriterFactory>,
        keyed: bool,
    ) -> DataStream<U> {
        let target = self.env.add_vertex(VertexSpec {
            name: name.to_string(),
            uid: None,
            parallelism: None,
            max_parallelism: None,
            non_parallel: false,
            make,
            input_type: Some(StreamType::<T>::ops()),
            output_type: StreamType::<U>::ops(),
        });
        for input in &self.inputs {
            let partitioning = if keyed {
                Some(Partitioning::KeyGroup)
            } else {
                input.partitioning
            };
            self.env
                .add_edge(input.edge_to(target, partitioning, writer.clone()));
        }
        DataStream {
            env: self.env.clone(),
            inputs: vec![StreamInput::main(target)],
            _t: PhantomData,
        }
    }

    /// Emits any number of records per input record (Flink's `flatMap`).
    pub fn flat_map<U: Record, F>(&self, f: F) -> DataStream<U>
    where
        F: FnMut(T, &mut Collector<'_, U>) + Clone + Send + 'static,
    {
        self.stateless("Flat Map", f)
    }

    fn stateless<U: Record, F>(&self, name: &str, f: F) -> DataStream<U>
    where
        F: FnMut(T, &mut Collector<'_, U>) + Clone + Send + 'static,
    {
        let proto = Prototype::new(f);
        let make: MakeKind = Box::new(move |_| {
            let proto = proto.clone();
            VertexKind::Operator(Arc::new(move |info, down, _side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "operator output");
                let op: Box<dyn Operator<T>> =
                    Box::new(FlatMapOp::new(proto.instance(), next, info.clone()));
                Box::new(op)
            }))
        });
        self.add_consumer(name, make, None, false)
    }

    /// Transforms every record (Flink's `map`).
    pub fn map<U: Record, F>(&self, mut f: F) -> DataStream<U>
    where
        F: FnMut(T) -> U + Clone + Send + 'static,
    {
        self.stateless("Map", move |v, out: &mut Collector<'_, U>| {
            out.collect(f(v))
        })
    }

    /// Keeps the records for which `predicate` is true (Flink's `filter`).
    pub fn filter<F>(&self, mut predicate: F) -> DataStream<T>
    where
        F: FnMut(&T) -> bool + Clone + Send + 'static,
    {
        self.stateless("Filter", move |v, out: &mut Collector<'_, T>| {
            if predicate(&v) {
                out.collect(v)
            }
        })
    }

    /// Applies a process function with operator state (Flink's `process`
    /// on a `DataStream`).
    pub fn process<U: Record, P>(&self, function: P) -> DataStream<U>
    where
        P: ProcessFunction<T, U> + Clone,
    {
        let proto = Prototype::new(function);
        let make: MakeKind = Box::new(move |_| {
            let proto = proto.clone();
            VertexKind::Operator(Arc::new(move |info, down, side| {
                let next = unbox::<Box<dyn Operator<U>>>(down, "operator output");
                let op: Box<dyn Operator<T>> =
                    Box::new(ProcessOp::new(proto.instance(), next, side, info.clone()));
                Box::new(op)
            }))
        });
        self.add_consumer("Process", make, None, false)
    }

    /// Partitions by key: records with equal keys reach the same subtask, whose
    /// keyed state is scoped to that key (Flink's `keyBy`). The selector must be
    /// deterministic.
    pub fn key_by<K: Key, KS>(&self, key_selector: KS) -> KeyedStream<T, K, KS>
    where
        KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key_selector,
            _k: PhantomData,
        }
    }

    fn partitioned(&self, p: Partitioning) -> DataStream<T> {
        DataStream {
            env: self.env.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|i| StreamInput {
                    partitioning: Some(p),
                    ..i.clone()
                })
                .collect(),
            _t: PhantomData,
        }
    }

    /// Distributes records round robin to the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        self.partitioned(Partitioning::Rebalance)
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        self.partitioned(Partitioning::Broadcast)
    }

    /// Sends subtask i's records to subtask i of the next operator (which must
    /// have the same parallelism); such operators are chained into one task.
    pub fn forward(&self) -> DataStream<T> {
        self.partitioned(Partitioning::Forward)
    }

    /// The side output `tag` of the operator producing this stream (Flink's
    /// `getSideOutput`): what its process function emits with
    /// `ctx.output(&tag, value)`, as a stream of its own, with the
    /// timestamps of the records it was emitted for. Operators that cannot
    /// emit side outputs give an empty stream.
    ///
    /// # Panics
    /// When this stream is a union or itself a side output, or when the tag
    /// was asked for with another type on the same operator (Flink refuses
    /// both when the graph is built).
    pub fn side_output<X: Record>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        let vertex = self.single_vertex("side_output");
        self.env
            .claim_side_output(vertex, tag.id(), std::any::type_name::<X>());
        DataStream {
            env: self.env.clone(),
            inputs: vec![StreamInput {
                vertex,
                partitioning: None,
                side: Some(SideOutputEdge {
                    tag: tag.id().into(),
                    output_type: StreamType::<X>::ops(),
                    bind: bind_side_output::<X>,
                }),
            }],
            _t: PhantomData,
        }
    }

    /// Merges streams of the same type (Flink's `union`).
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let mut inputs = self.inputs.clone();
        for o in others {
            inputs.extend(o.inputs.iter().cloned());
        }
        DataStream {
            env: self.env.clone(),
            inputs,
            _t: PhantomData,
        }
    }

    /// Writes every record to `sink`, one clone of it per subtask.
    pub fn sink_to<S: SinkWriter<T> + Clone>(&self, sink: S, name: &str) -> DataStreamSink {
        let proto = Prototype::new(sink);
        let make: MakeKind = Box::new(move |_| {
            let proto = proto.clone();
            VertexKind::Operator(Arc::new(move |info, _down, _side| {
                let op: Box<dyn Operator<T>> =
                    Box::new(SinkOp::new(proto.instance(), info.clone()));
                Box::new(op)
            }))
        });
        let s = self.add_consumer::<()>(&format!("Sink: {name}"), make, None, false);
        DataStreamSink { stream: s }
    }

    /// Names the operator that produces this stream (shown in logs and errors).
    pub fn name(self, name: &str) -> Self {
        let id = self.single_vertex("name()");
        self.env.with_vertex(id, |v| v.name = name.to_string());
        self
    }

    /// Sets the operator's uid: the stable identity of its state across job
    /// versions (savepoints map state to operators by uid).
    pub fn uid(self, uid: &str) -> Self {
        let id = self.single_vertex("uid()");
        self.env.with_vertex(id, |v| v.uid = Some(uid.to_string()));
        self
    }

    /// Sets the operator's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        let id = self.single_vertex("set_parallelism()");
        self.env
            .with_vertex(id, |v| v.parallelism = Some(parallelism));
        self
    }

    /// Sets the operator's number of key groups.
    pub fn set_max_parallelism(self, max_parallelism: u32) -> Self {
        let id = self.single_vertex("set_max_parallelism()");
        self.env
            .with_vertex(id, |v| v.max_parallelism = Some(max_parallelism));
        self
    }
}

/// The end of a pipeline, returned by `sink_to`, to name and size the sink.
pub struct DataStreamSink {
    stream: DataStream<()>,
}

impl DataStreamSink {
    /// Names the sink.
    pub fn name(self, name: &str) -> Self {
        DataStreamSink {
            stream: self.stream.name(name),
        }
    }

    /// Sets the sink's uid.
    pub fn uid(self, uid: &str) -> Self {
        DataStreamSink {
            stream: self.stream.uid(uid),
        }
    }

    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        DataStreamSink {
            stream: self.stream.set_parallelism(parallelism),
        }
    }
}

/// A stream partitioned by key (Flink's `KeyedStream`): operators applied to it
/// have keyed state.
pub struct KeyedStream<T, K, KS> {
    stream: DataStream<T>,
    key_selector: KS,
    _k: PhantomData<fn() -> K>,
}

impl<T, K, KS: Clone> Clone for KeyedStream<T, K, KS> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key_selector: self.key_selector.clone(),
            _k: PhantomData,
        }
    }
}

impl<T, K, KS> KeyedStream<T, K, KS> {
    /// The stream before partitioning.
    pub(crate) fn stream(&self) -> &DataStream<T> {
        &self.stream
    }

    /// The key selector.
    pub(crate) fn key_selector(&self) -> &KS {
        &self.key_selector
    }
}

impl<T: Record, K: Key, KS> KeyedStream<T, K, KS>
where
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Applies a keyed process function (Flink's `process`).
    pub fn process<U: Record, P>(&self, function: P) -> DataStream<U>
    where
        P: KeyedProcessFunction<K, T, U> + Clone,
    {
        self.keyed_op_with("Keyed Process", function, true)
    }

    fn keyed_op<U: Record, P>(&self, name: &str, function: P) -> DataStream<U>
    where
        P: KeyedProcessFunction<K, T, U> + Clone,
    {
        self.keyed_op_with(name, function, false)
    }

    /// A keyed operator; `timers`: it has a timer service (process
    /// functions, as in Flink), whose queue is part of its keyed state.
    fn keyed_op_with<U: Record, P>(&self, name: &str, function: P, timers: bool) -> DataStream<U>
    where
        P: KeyedProcessFunction<K, T, U> + Clone,
    {
        self.keyed_logic(name, ProcessLogic { function, timers })
    }

    /// A keyed operator running `logic` (a process function, a window),
    /// fed through a key-group exchange.
    pub(crate) fn keyed_logic<U: Record, L>(&self, name: &str, logic: L) -> DataStream<U>
    where
        L: KeyedLogic<K, T, U> + Clone + 'static,
    {
        let make = keyed_op_kind(logic, self.key_selector.clone());
        let ks = self.key_selector.clone();
        let writer: WriterFactory = Arc::new(move |mut args: WriterArgs| {
            let set = args.take_channel_set::<T>(true);
            let w: Box<dyn Operator<T>> = Box::new(KeyGroupWriter::new(
                set,
                args.target_max_parallelism,
                ks.clone(),
                args.sender.clone(),
                args.target_name.clone(),
            ));
            Box::new(w)
        });
        self.stream.add_consumer(name, make, Some(writer), true)
    }

    /// Keeps each key's latest record (a value descriptor) or the records
    /// folded by a reduce function (a reducing descriptor) in keyed state
    /// queryable as `queryable_name` (Flink's `asQueryableState`). The
    /// returned stream emits nothing; name it or give it a uid like any
    /// operator.
    pub fn as_queryable_state(
        &self,
        queryable_name: &str,
        descriptor: impl Into<QueryableStateDescriptor<T>>,
    ) -> DataStream<()> {
        let descriptor = match descriptor.into() {
            QueryableStateDescriptor::Value(d) => {
                QueryableStateDescriptor::Value(d.set_queryable(queryable_name))
            }
            QueryableStateDescriptor::Reducing(d) => {
                QueryableStateDescriptor::Reducing(d.set_queryable(queryable_name))
            }
        };
        self.keyed_op(
            &format!("Queryable state: {queryable_name}"),
            QueryableStateUpdater {
                descriptor,
                value: None,
                reducing: None,
            },
        )
    }

    /// A one-to-one function with keyed state (Flink's `map` after `keyBy`).
    pub fn map<U: Record, F>(&self, function: F) -> DataStream<U>
    where
        F: RichMapFunction<K, T, U> + Clone,
    {
        self.keyed_op("Map", MapAdapter(function))
    }

    /// A one-to-many function with keyed state (Flink's `flatMap` after `keyBy`).
    pub fn flat_map<U: Record, F>(&self, function: F) -> DataStream<U>
    where
        F: RichFlatMapFunction<K, T, U> + Clone,
    {
        self.keyed_op("Flat Map", FlatMapAdapter(function))
    }

    /// Folds each key's records with `reduce(accumulated, new)` and emits the
    /// new accumulated value for every record (Flink's `reduce`).
    pub fn reduce<F>(&self, reduce: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        self.keyed_op(
            "Keyed Reduce",
            ReduceProcess {
                reduce,
                state: None,
            },
        )
    }

    /// Running sum of one field per key; the other fields are those of the
    /// key's first record (Flink's `sum(field)`).
    pub fn sum<N, FA>(&self, field: FA) -> DataStream<T>
    where
        N: AddAssign + Clone,
        FA: Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    {
        self.reduce(move |mut acc, mut v| {
            let x = field(&mut v).clone();
            *field(&mut acc) += x;
            acc
        })
        .name("Keyed Aggregation")
    }

    /// Running minimum of one field per key (Flink's `min(field)`).
    pub fn min<N, FA>(&self, field: FA) -> DataStream<T>
    where
        N: PartialOrd + Clone + 'static,
        FA: Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    {
        self.keep_field(field, |new, old| new < old)
    }

    /// Running maximum of one field per key (Flink's `max(field)`).
    pub fn max<N, FA>(&self, field: FA) -> DataStream<T>
    where
        N: PartialOrd + Clone + 'static,
        FA: Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    {
        self.keep_field(field, |new, old| new > old)
    }

    /// Replaces the accumulated field with the new record's when `better`.
    fn keep_field<N, FA>(&self, field: FA, better: fn(&N, &N) -> bool) -> DataStream<T>
    where
        N: Clone + 'static,
        FA: Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    {
        self.reduce(move |mut acc, mut v| {
            let x = field(&mut v).clone();
            if better(&x, field(&mut acc)) {
                *field(&mut acc) = x;
            }
            acc
        })
        .name("Keyed Aggregation")
    }
}

/// The factory of a keyed operator running `logic` on records of type `T`
/// keyed by `key_selector` (one [`KeyedOp`] per subtask): a keyed stream's
/// operators and two-input keyed operators share it.
pub(crate) fn keyed_op_kind<T, K, U, L, KS>(logic: L, key_selector: KS) -> MakeKind
where
    T: Record,
    K: Key,
    U: Record,
    L: KeyedLogic<K, T, U> + Clone + 'static,
    KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    let proto = Prototype::new(logic);
    Box::new(move |s: &BuildSettings| {
        let (proto, ks, backend) = (proto.clone(), key_selector.clone(), s.backend.clone());
        VertexKind::Operator(Arc::new(move |info, down, side| {
            let next = unbox::<Box<dyn Operator<U>>>(down, "keyed operator output");
            let op: Box<dyn Operator<T>> = Box::new(KeyedOp::new(
                proto.instance(),
                ks.clone(),
                &backend,
                next,
                side,
                info.clone(),
            ));
            Box::new(op)
        }))
    })
}

#[derive(Clone)]
struct MapAdapter<F>(F);

impl<K: Key, IN, OUT, F: RichMapFunction<K, IN, OUT>> KeyedProcessFunction<K, IN, OUT>
    for MapAdapter<F>
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.0.open(ctx)
    }

    #[inline]
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        out.collect(self.0.map(value, ctx)?);
        Ok(())
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

#[derive(Clone)]
struct FlatMapAdapter<F>(F);

impl<K: Key, IN, OUT, F: RichFlatMapFunction<K, IN, OUT>> KeyedProcessFunction<K, IN, OUT>
    for FlatMapAdapter<F>
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.0.open(ctx)
    }

    #[inline]
    fn process_element(
        &mut self,
        value: IN,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, OUT>,
    ) -> anyhow::Result<()> {
        self.0.flat_map(value, ctx, out)
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

/// What [`KeyedStream::as_queryable_state`] keeps per key.
#[derive(Debug, Clone)]
pub enum QueryableStateDescriptor<T> {
    /// The latest record.
    Value(ValueStateDescriptor<T>),
    /// The records folded by the descriptor's reduce function.
    Reducing(ReducingStateDescriptor<T>),
}

impl<T> From<ValueStateDescriptor<T>> for QueryableStateDescriptor<T> {
    fn from(d: ValueStateDescriptor<T>) -> Self {
        QueryableStateDescriptor::Value(d)
    }
}

impl<T> From<ReducingStateDescriptor<T>> for QueryableStateDescriptor<T> {
    fn from(d: ReducingStateDescriptor<T>) -> Self {
        QueryableStateDescriptor::Reducing(d)
    }
}

/// The function behind `as_queryable_state`: writes every record into the
/// queryable state, emits nothing.
#[derive(Clone)]
struct QueryableStateUpdater<T> {
    descriptor: QueryableStateDescriptor<T>,
    value: Option<ValueState<T>>,
    reducing: Option<ReducingState<T>>,
}

impl<K: Key, T: Record> KeyedProcessFunction<K, T, ()> for QueryableStateUpdater<T> {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        match &self.descriptor {
            QueryableStateDescriptor::Value(d) => self.value = Some(ctx.get_state(d)?),
            QueryableStateDescriptor::Reducing(d) => {
                self.reducing = Some(ctx.get_reducing_state(d)?)
            }
        }
        Ok(())
    }

    #[inline]
    fn process_element(
        &mut self,
        value: T,
        ctx: &mut KeyedContext<'_, K>,
        _: &mut Collector<'_, ()>,
    ) -> anyhow::Result<()> {
        match (&self.value, &self.reducing) {
            (Some(state), _) => state.update(ctx, value)?,
            (_, Some(state)) => {
                state.add(ctx, value)?;
            }
            _ => anyhow::bail!("queryable state used before open"),
        }
        Ok(())
    }
}

/// Flink's grouped reduce: the accumulated value of each key in a
/// `ValueState` named `_op_state`.
#[derive(Clone)]
struct ReduceProcess<T, F> {
    reduce: F,
    state: Option<ValueState<T>>,
}

impl<K: Key, T: Record, F> KeyedProcessFunction<K, T, T> for ReduceProcess<T, F>
where
    F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
{
    fn open(&mut self, ctx: &mut RuntimeContext<'_, K>) -> anyhow::Result<()> {
        self.state = Some(ctx.get_state(&ValueStateDescriptor::<T>::new("_op_state"))?);
        Ok(())
    }

    #[inline]
    fn process_element(
        &mut self,
        value: T,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut Collector<'_, T>,
    ) -> anyhow::Result<()> {
        let state = self.state.as_ref().expect("opened");
        let next = match state.value(ctx)? {
            Some(acc) => (self.reduce)(acc, value),
            None => value,
        };
        state.update(ctx, next.clone())?;
        out.collect(next);
        Ok(())
    }
}

impl StreamEnvironment {
    /// The elements of `items`, in order, from one subtask (Flink's `fromCollection`).
    pub fn from_collection<T: Record + Sync>(&self, items: Vec<T>) -> DataStream<T> {
        self.from_source(
            floe_connectors::CollectionSource::new(items),
            "Collection Source",
        )
    }

    /// The numbers `from..=to`, split over the source's subtasks (Flink's `fromSequence`).
    pub fn from_sequence(&self, from: u64, to: u64) -> DataStream<u64> {
        self.from_source(
            floe_connectors::GeneratorSource::sequence(from, to),
            "Sequence Source",
        )
    }

    /// The lines of text files or directories (Flink's `readTextFile`); in a
    /// directory, names starting with `.` or `_` (a file sink's uncommitted
    /// part files) are skipped, as Flink does.
    pub fn read_text_file(&self, path: impl AsRef<std::path::Path>) -> DataStream<String> {
        self.from_source(floe_connectors::TextFileSource::new([path]), "Text File")
    }

    /// The lines a server sends on `host:port` (Flink's `socketTextStream`).
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DataStream<String> {
        self.from_source(
            floe_connectors::SocketTextSource::new(format!("{host}:{port}")),
            "Socket Stream",
        )
    }
}

impl<T: Record + std::fmt::Debug> DataStream<T> {
    /// Prints every record on its own line to stdout (Flink's `print`):
    /// its `Debug` form, so any record type prints (a `String` as it is,
    /// without quotes), after `<subtask index + 1>> ` when the sink runs
    /// in more than one subtask.
    pub fn print(&self) -> DataStreamSink {
        self.sink_to(floe_connectors::StdoutSink::new(), "Print to Std. Out")
    }

    /// [`print`](Self::print) to stderr (Flink's `printToErr`).
    pub fn print_to_err(&self) -> DataStreamSink {
        self.sink_to(
            floe_connectors::StdoutSink::new().to_stderr(),
            "Print to Std. Err",
        )
    }
}

impl<T: Record + std::fmt::Display> DataStream<T> {
    /// Writes every record on its own line to `path` (Flink's `writeAsText`).
    pub fn write_as_text(&self, path: impl Into<std::path::PathBuf>) -> DataStreamSink {
        self.sink_to(floe_connectors::TextFileSink::new(path), "Text File")
    }
}
