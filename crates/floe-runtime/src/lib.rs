//! Floe's runtime: how a job graph becomes running tasks, and how they
//! checkpoint, recover and are controlled.
//!
//! - [`graph`]: the logical [`graph::JobGraph`] the API builds (vertices with
//!   type-erased operator factories, edges with a partitioning).
//! - [`job_manager`]: the JobManager role. It turns the graph into tasks
//!   (chaining forward edges of equal parallelism), deploys them with a
//!   checkpoint coordinator per run, watches them, and on a failure
//!   cancels the run and restarts it from the latest checkpoint as the
//!   [`restart`] strategy allows.
//! - [`task_manager`]: the TaskManager role. It runs each deployed task on its
//!   own thread and reports the task's final state.
//! - [`task`]: the per-task loops: a source loop and an input loop.
//! - [`operator`]: the chainable [`operator::Operator`] trait through which
//!   batches, watermarks, barriers and the end of input flow, and the guard
//!   that turns a user error or panic into a failure naming the operator.
//! - [`channel`], [`writer`]: bounded channels between tasks (backpressure) and
//!   the record writers that partition batches onto them.
//! - [`checkpoint`]: checkpoints and savepoints, task side (snapshots,
//!   barrier alignment, the uploader) and JobManager side (the
//!   coordinator, the storage trait, restore).
//! - [`control`]: [`JobControl`], the handle the REST API drives (status,
//!   checkpoint history, savepoint, stop, cancel).
//! - [`job_status`]: [`JobStatus`], where a job is in its life.
//! - [`metrics`], [`metered`]: the job's metrics with Flink's names
//!   (records in/out per operator subtask counted per batch, busy, idle
//!   and back-pressured time per task) and the chain links that count.
//! - [`context`], [`managed_state`]: what user functions see (task info,
//!   keyed and operator state) and how an operator hosts a function's
//!   operator state.
//! - [`function`]: the checkpoint hooks a function may add
//!   ([`CheckpointedFunction`], [`CheckpointListener`]).
//! - [`source`], [`sink`], [`two_phase`]: the connector contracts, and
//!   exactly-once sinks by two-phase commit.
//! - [`queryable`]: where queryable states live and how queries reach the
//!   subtask owning their key.
//! - [`error`]: failures of operators and tasks, naming whose fault they
//!   are.
//! - [`side_output`]: `OutputTag` and the side outputs a process function
//!   emits to.
//! - [`timer_service`]: keyed functions' timers (the service they set
//!   them through, `on_timer`'s context, firing in slices).
//! - [`watermark`], [`processing_time`]: event time (watermark strategies,
//!   per-split generation, the valve combining input channels) and the
//!   task's processing-time clock and wake-ups.

pub mod channel;
pub mod checkpoint;
pub mod context;
pub mod control;
pub mod deployer;
pub mod deployment;
pub mod error;
pub mod function;
pub mod gateway;
pub mod graph;
pub mod job_manager;
pub mod job_status;
pub mod managed_state;
pub mod metered;
pub mod metrics;
pub mod operator;
pub mod placement;
pub mod plan;
pub mod processing_time;
pub mod queryable;
pub mod remote;
pub mod restart;
pub mod side_output;
pub mod sink;
pub mod source;
pub mod task;
pub mod task_manager;
pub mod timer_service;
pub mod two_phase;
pub mod watermark;
pub mod writer;

pub use context::{
    FunctionInitializationContext, FunctionSnapshotContext, KeyedContext, RuntimeContext, TaskInfo,
};
pub use control::{
    ControlError, EXCEPTION_HISTORY_SIZE, ExceptionHistory, ExceptionRecord, JobControl,
    SavepointFailure, SavepointMode, SavepointStatus, TriggerId, VertexInfo, VertexInput,
};
pub use error::{FailureCause, NonRecoverable, OperatorFailure, TaskError};
pub use function::{CheckpointListener, CheckpointedFunction, FunctionHooks};
pub use graph::{JobGraph, Partitioning, VertexId};
pub use job_manager::{GraphError, JobError, JobExecutionResult, JobManager, RestoreConflict};
pub use job_status::JobStatus;
pub use managed_state::ManagedOperatorState;
pub use metrics::{JobMetrics, SubtaskMetrics};
pub use operator::{Operator, OperatorMeta};
pub use processing_time::{ManualClock, ProcessingClock, ProcessingTimeService};
pub use queryable::{QueryError, QueryableStateRegistry, StateQuery};
pub use side_output::OutputTag;
pub use sink::SinkWriter;
pub use source::{PositionRedistribution, Source, SourceReader, SourceStatus};
pub use timer_service::{OnTimerContext, TimerError, TimerService};
pub use two_phase::{TwoPhaseCommitSink, TwoPhaseCommitSinkWriter};
pub use watermark::{SplitId, WatermarkGenerator, WatermarkOutput, WatermarkStrategy};
