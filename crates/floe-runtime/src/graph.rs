//! The logical job graph.
//!
//! The typed API builds a [`JobGraph`]: one [`JobVertex`] per operator and one
//! [`JobEdge`] per connection. Types are erased here so the runtime can plan,
//! chain and schedule without knowing them; each vertex carries factories,
//! built by the API where the types are known, that produce a subtask's typed
//! operator, channels and input loop. Downcasts happen once, when a task is
//! built, never per record.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::channel::{CancelFlag, CreditReturn, InputChannel, OutputChannel, local_channel};
use crate::context::TaskInfo;
use crate::metered::{Metered, MeteredSide};
use crate::metrics::OperatorIo;
use crate::operator::{Discard, FanOut, Operator};
use crate::remote::{FrameHandler, FrameSink, RemoteOutputChannel};
use crate::task::{InputTask, TaskDriver};
use crate::writer::{BroadcastWriter, ChannelSet, ForwardWriter, RebalanceWriter};

/// A value whose type only the factories that made it know.
pub type AnyBox = Box<dyn Any + Send>;

/// Index of a vertex in its graph; vertices are numbered in creation order,
/// which is a topological order because inputs are created first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexId(pub usize);

/// How an edge distributes records over the downstream subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i to subtask i; requires equal parallelism. Chainable.
    Forward,
    /// Round robin over all downstream subtasks.
    Rebalance,
    /// Every record to every downstream subtask.
    Broadcast,
    /// By key group of the record's key (`key_by`).
    KeyGroup,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Partitioning::Forward => "FORWARD",
            Partitioning::Rebalance => "REBALANCE",
            Partitioning::Broadcast => "BROADCAST",
            Partitioning::KeyGroup => "HASH",
        })
    }
}

/// Builds a source subtask's task driver around its downstream chain
/// (a `Box<dyn Operator<OUT>>` inside the [`AnyBox`]).
pub type SourceFactory = Arc<dyn Fn(&TaskInfo, AnyBox) -> Box<dyn TaskDriver> + Send + Sync>;

/// Builds an operator subtask (`Box<dyn Operator<IN>>`) around its downstream
/// chain (`Box<dyn Operator<OUT>>`) and the downstream of its side outputs
/// (empty unless the job consumes side outputs of this operator).
pub type OperatorFactory =
    Arc<dyn Fn(&TaskInfo, AnyBox, crate::side_output::SideOutputs) -> AnyBox + Send + Sync>;

/// What a vertex is.
#[derive(Clone)]
pub enum VertexKind {
    /// Produces records, has no inputs.
    Source(SourceFactory),
    /// Consumes records from its input edges.
    Operator(OperatorFactory),
}

/// Arguments for building one sending subtask's record writer.
pub struct WriterArgs {
    /// `Box<dyn OutputChannel<T>>` per downstream subtask (one for forward).
    pub channels: Vec<AnyBox>,
    /// The sending subtask's index.
    pub sender_index: usize,
    /// Number of key groups of the receiving operator.
    pub target_max_parallelism: u32,
    /// Records per batch.
    pub batch_size: usize,
    /// The job's cancellation flag.
    pub cancel: CancelFlag,
    /// The sending operator (last of its chain): failures of code that runs
    /// in the writer, such as a key selector, are attributed to it.
    pub sender: TaskInfo,
    /// The receiving operator's name, for error messages.
    pub target_name: Arc<str>,
}

/// Builds a record writer (`Box<dyn Operator<T>>`) for an edge.
pub type WriterFactory = Arc<dyn Fn(WriterArgs) -> AnyBox + Send + Sync>;

/// Type-specific operations on the records of one stream type, so the
/// runtime can wire channels and fan-outs without knowing the type.
pub trait StreamTypeOps: Send + Sync {
    /// A bounded channel: (`Box<dyn OutputChannel<T>>`, `InputChannel<T>`).
    fn channel(&self, capacity: usize) -> (AnyBox, AnyBox);
    /// The sending end of a channel to another process
    /// (`Box<dyn OutputChannel<T>>`) over the network stack's `sink`.
    fn remote_output(&self, sink: Box<dyn FrameSink>) -> AnyBox;
    /// The receiving end of a channel from another process: the frame
    /// handler the network stack feeds and the task's `InputChannel<T>`,
    /// holding at most `capacity` messages (the credits the network stack
    /// may grant in all).
    fn remote_input(
        &self,
        capacity: usize,
        credits: Arc<dyn CreditReturn>,
        times: Arc<crate::metrics::TaskTimes>,
    ) -> (Box<dyn FrameHandler>, AnyBox);
    /// One `Box<dyn Operator<T>>` out of several (or none: a discarding one).
    fn fan_out(&self, outputs: Vec<AnyBox>) -> AnyBox;
    /// `op` (a `Box<dyn Operator<T>>`) behind a link counting into `io`.
    fn metered(&self, op: AnyBox, io: Arc<OperatorIo>, side: MeteredSide) -> AnyBox;
    /// The input loop of a task whose head consumes `T`.
    fn input_task(
        &self,
        receivers: Vec<AnyBox>,
        head: AnyBox,
        info: TaskInfo,
    ) -> Box<dyn TaskDriver>;
    /// A writer factory for a type-only partitioning (not key group).
    fn writer_factory(&self, partitioning: Partitioning) -> WriterFactory;
}

/// [`StreamTypeOps`] for records of type `T`.
pub struct StreamType<T>(PhantomData<fn() -> T>);

impl<T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static> StreamType<T> {
    /// The operations for `T`.
    pub fn ops() -> Arc<dyn StreamTypeOps> {
        Arc::new(StreamType::<T>(PhantomData))
    }
}

/// Downcasts a boxed value built by a factory of the same graph.
pub fn unbox<T: 'static>(b: AnyBox, what: &str) -> T {
    *b.downcast::<T>().unwrap_or_else(|_| {
        panic!("type mismatch wiring {what}: this is a bug in the graph builder")
    })
}

impl WriterArgs {
    /// Takes the channels as a typed [`ChannelSet`]; `keyed` batches carry
    /// key groups.
    pub fn take_channel_set<T: Send + Clone + 'static>(&mut self, keyed: bool) -> ChannelSet<T> {
        let channels = std::mem::take(&mut self.channels)
            .into_iter()
            .map(|c| unbox::<Box<dyn OutputChannel<T>>>(c, "output channel"))
            .collect();
        ChannelSet::new(channels, self.batch_size, keyed, self.cancel.clone())
    }
}

impl<T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static> StreamTypeOps
    for StreamType<T>
{
    fn channel(&self, capacity: usize) -> (AnyBox, AnyBox) {
        let (tx, rx) = local_channel::<T>(capacity);
        let tx: Box<dyn OutputChannel<T>> = Box::new(tx);
        (Box::new(tx), Box::new(InputChannel::from(rx)))
    }

    fn remote_output(&self, sink: Box<dyn FrameSink>) -> AnyBox {
        let tx: Box<dyn OutputChannel<T>> = Box::new(RemoteOutputChannel::<T>::new(sink));
        Box::new(tx)
    }

    fn remote_input(
        &self,
        capacity: usize,
        credits: Arc<dyn CreditReturn>,
        times: Arc<crate::metrics::TaskTimes>,
    ) -> (Box<dyn FrameHandler>, AnyBox) {
        let (handler, input) = crate::remote::remote_input::<T>(capacity, credits, times);
        (handler, Box::new(input))
    }

    fn fan_out(&self, outputs: Vec<AnyBox>) -> AnyBox {
        let mut ops: Vec<Box<dyn Operator<T>>> = outputs
            .into_iter()
            .map(|o| unbox::<Box<dyn Operator<T>>>(o, "fan-out"))
            .collect();
        let op: Box<dyn Operator<T>> = match ops.len() {
            0 => Box::new(Discard),
            1 => ops.pop().expect("one output"),
            _ => Box::new(FanOut::new(ops)),
        };
        Box::new(op)
    }

    fn metered(&self, op: AnyBox, io: Arc<OperatorIo>, side: MeteredSide) -> AnyBox {
        let op = unbox::<Box<dyn Operator<T>>>(op, "metered operator");
        let op: Box<dyn Operator<T>> = Box::new(Metered::new(op, io, side));
        Box::new(op)
    }

    fn input_task(
        &self,
        receivers: Vec<AnyBox>,
        head: AnyBox,
        info: TaskInfo,
    ) -> Box<dyn TaskDriver> {
        let receivers = receivers
            .into_iter()
            .map(|r| unbox::<InputChannel<T>>(r, "input channel"))
            .collect::<Vec<_>>();
        let head = unbox::<Box<dyn Operator<T>>>(head, "chain head");
        Box::new(InputTask::new(receivers, head, info))
    }

    fn writer_factory(&self, partitioning: Partitioning) -> WriterFactory {
        Arc::new(move |mut args: WriterArgs| {
            let set = args.take_channel_set::<T>(false);
            let w: Box<dyn Operator<T>> = match partitioning {
                Partitioning::Forward => Box::new(ForwardWriter::new(set)),
                Partitioning::Rebalance => Box::new(RebalanceWriter::new(set, args.sender_index)),
                Partitioning::Broadcast => Box::new(BroadcastWriter::new(set)),
                Partitioning::KeyGroup => {
                    panic!("a key-group writer needs the key selector; the API builds it")
                }
            };
            Box::new(w)
        })
    }
}

/// One operator of the job.
#[derive(Clone)]
pub struct JobVertex {
    /// Display name (`name(..)`).
    pub name: String,
    /// Explicit uid (`uid(..)`), the identity of the operator's state.
    pub uid: Option<String>,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Explicit number of key groups, if set on the operator.
    pub max_parallelism: Option<u32>,
    /// True for sources that cannot run in parallel (socket, collection).
    pub non_parallel: bool,
    /// Source or operator, with its factory.
    pub kind: VertexKind,
    /// Operations on the vertex's input type (operators only).
    pub input_type: Option<Arc<dyn StreamTypeOps>>,
    /// Operations on the vertex's output type.
    pub output_type: Arc<dyn StreamTypeOps>,
}

/// One connection between two vertices.
#[derive(Clone)]
pub struct JobEdge {
    /// Producer.
    pub source: VertexId,
    /// Consumer.
    pub target: VertexId,
    /// Distribution over the consumer's subtasks.
    pub partitioning: Partitioning,
    /// Builds a producer subtask's writer.
    pub writer: WriterFactory,
    /// Set when the edge carries a side output of its producer rather than
    /// its main output.
    pub side_output: Option<SideOutputEdge>,
}

/// What the runtime needs to wire a side output: which tag, and the
/// tag's record type (to fan out to several consumers and to bind the
/// result for the producing operator).
#[derive(Clone)]
pub struct SideOutputEdge {
    /// The tag's id.
    pub tag: Arc<str>,
    /// The side output's record type.
    pub output_type: Arc<dyn StreamTypeOps>,
    /// Binds the built downstream to that type.
    pub bind: crate::side_output::SideOutputBinder,
}

/// The whole logical job.
#[derive(Clone, Default)]
pub struct JobGraph {
    /// Vertices in topological order.
    pub vertices: Vec<JobVertex>,
    /// Edges in creation order.
    pub edges: Vec<JobEdge>,
}

impl JobGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex and returns its id.
    pub fn add_vertex(&mut self, vertex: JobVertex) -> VertexId {
        self.vertices.push(vertex);
        VertexId(self.vertices.len() - 1)
    }

    /// Connects two vertices.
    pub fn add_edge(&mut self, edge: JobEdge) {
        self.edges.push(edge);
    }

    /// Edges into `v`.
    pub fn inputs(&self, v: VertexId) -> impl Iterator<Item = (usize, &JobEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.target == v)
    }

    /// Edges out of `v`.
    pub fn outputs(&self, v: VertexId) -> impl Iterator<Item = (usize, &JobEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.source == v)
    }
}
