//! Floe: stateful stream processing in Rust, with Apache Flink's model of
//! keyed state, checkpoints and savepoints.
//!
//! This crate is what a job depends on. It re-exports the layers:
//! [`core`] (ids, messages, configuration), [`state`] (key groups, state
//! descriptors and handles), [`runtime`] (job graph and execution),
//! [`api`] (the DataStream API), [`connectors`] (sources and sinks) and
//! [`queryable`] (the queryable-state client).
//! `use floe::prelude::*;` brings in what a typical job needs.
//!
//! ```no_run
//! use floe::prelude::*;
//!
//! fn main() -> anyhow::Result<()> {
//!     let args = JobArgs::from_env()?;
//!     floe::init_logging();
//!     let env = StreamEnvironment::from_job_args(&args);
//!     env.from_collection(vec!["to be or not to be".to_string()])
//!         .flat_map(|line: String, out: &mut Collector<'_, (String, u64)>| {
//!             for w in line.split_whitespace() {
//!                 out.collect((w.to_string(), 1));
//!             }
//!         })
//!         .key_by(|(w, _): &(String, u64)| w.clone())
//!         .sum(|(_, n): &mut (String, u64)| n)
//!         .map(|(w, n)| format!("{w} {n}"))
//!         .print();
//!     env.execute("WordCount")?;
//!     Ok(())
//! }
//! ```

pub use floe_api as api;
pub use floe_checkpoint as checkpoint;
pub use floe_connectors as connectors;
pub use floe_core as core;
pub use floe_queryable as queryable;
pub use floe_rest as rest;
pub use floe_runtime as runtime;
pub use floe_state as state;

pub use floe_api::{DataStream, JobArgs, KeyedStream, StreamEnvironment};

/// What a typical job needs.
pub mod prelude {
    pub use floe_api::functions::{SinkWriter, Source, SourceReader, SourceStatus};
    pub use floe_api::window::{
        ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger, CountEvictor, CountTrigger,
        DeltaEvictor, DynamicSessionWindows, EventTimeTrigger, Evictor, EvictorContext,
        GlobalWindow, GlobalWindows, ProcessWindowFunction, ProcessingTimeTrigger, PurgingTrigger,
        SessionWindows, SlidingWindows, TimeEvictor, TimeWindow, TimestampedValue, Trigger,
        TriggerContext, TriggerResult, TumblingWindows, Window, WindowAssigner, WindowContext,
        WindowedStream,
    };
    pub use floe_api::{
        BroadcastContext, BroadcastProcessFunction, BroadcastStream, CheckpointListener,
        CheckpointedFunction, CoProcessFunction, Collector, ConnectedStreams, DataStream, JobArgs,
        KeyedBroadcastContext, KeyedBroadcastOnTimerContext, KeyedBroadcastProcessFunction,
        KeyedCoProcessFunction, KeyedConnectedStreams, KeyedProcessFunction, KeyedReadOnlyContext,
        KeyedStream, ProcessContext, ProcessFunction, ReadOnlyContext, RichFlatMapFunction,
        RichMapFunction, StreamEnvironment,
    };
    pub use floe_api::{IntervalJoinContext, window::JoinSide};
    pub use floe_api::{
        ManualClock, OnTimerContext, OutputTag, ProcessingClock, TimeDomain, TimerService,
        Watermark, WatermarkGenerator, WatermarkOutput, WatermarkStrategy,
    };
    pub use floe_connectors::{
        BasePathBucketAssigner, BucketAssigner, CollectSink, CollectionSource, ConcatFileCompactor,
        DateTimeBucketAssigner, DefaultRollingPolicy, FileCompactStrategy, FileCompactor, FileSink,
        GeneratorSource, IdenticalFileCompactor, LineFormat, OnCheckpointRollingPolicy,
        OutputFileConfig, RecordWiseFileCompactor, SocketTextSource, StdoutSink, TextFileSink,
        TextFileSource,
    };
    pub use floe_runtime::{
        FunctionInitializationContext, FunctionSnapshotContext, JobControl, JobStatus,
        KeyedContext, NonRecoverable, RuntimeContext, SavepointFailure, SavepointMode,
        SavepointStatus, TaskInfo, TwoPhaseCommitSink, TwoPhaseCommitSinkWriter,
    };
    pub use floe_state::{
        AggregateFunction, AggregatingState, AggregatingStateDescriptor, BroadcastState, ListState,
        ListStateDescriptor, MapState, MapStateDescriptor, OperatorListState, ReducingState,
        ReducingStateDescriptor, StateBackendKind, StateTtlConfig, StateVisibility, UpdateType,
        ValueState, ValueStateDescriptor,
    };
}

/// Logs to stderr at the level in `RUST_LOG` (default `warn`), as job
/// binaries do. Safe to call more than once.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
