//! Floe's typed DataStream API.
//!
//! A job is an ordinary Rust `main`: it creates a [`StreamEnvironment`],
//! builds a pipeline of typed [`DataStream`]s and calls
//! [`StreamEnvironment::execute`]. Records are user types (`Clone + Send +
//! 'static`); keys of a [`KeyedStream`] must also be serializable so that their
//! key group is stable.
//!
//! Closures passed to `map`/`filter`/`flat_map` and the user function traits in
//! [`functions`] are cloned once per subtask, as Flink serializes a function
//! once per parallel instance.

pub mod broadcast;
pub mod connected;
pub mod env;
mod event_time;
pub mod executor;
pub mod functions;
pub mod interval_join;
pub mod job_args;
mod keyed_op;
mod operators;
pub mod stream;
mod two_input;
pub mod window;

pub use broadcast::{
    BroadcastConnectedStream, BroadcastContext, BroadcastProcessFunction, BroadcastStream,
    KeyedBroadcastConnectedStream, KeyedBroadcastContext, KeyedBroadcastOnTimerContext,
    KeyedBroadcastProcessFunction, KeyedReadOnlyContext, ReadOnlyContext,
};
pub use connected::{
    CoProcessFunction, Connectable, ConnectedStreams, KeyedCoProcessFunction, KeyedConnectable,
    KeyedConnectedStreams,
};
pub use env::StreamEnvironment;
pub use floe_core::{NO_TIMESTAMP, Watermark, WatermarkStatus};
pub use floe_runtime::{
    ManualClock, OnTimerContext, OutputTag, ProcessingClock, SplitId, TimerError, TimerService,
    WatermarkGenerator, WatermarkOutput, WatermarkStrategy,
};
pub use floe_state::TimeDomain;
pub use functions::{
    CheckpointListener, CheckpointedFunction, Collector, KeyedProcessFunction, ProcessContext,
    ProcessFunction, RichFlatMapFunction, RichMapFunction, SinkWriter, Source,
};
pub use interval_join::{IntervalJoin, IntervalJoinContext, IntervalJoined};
pub use job_args::{JobArgs, JobArgsError, absolute_location};
pub use stream::{DataStream, KeyedStream, QueryableStateDescriptor};
pub use two_input::TwoInput;
