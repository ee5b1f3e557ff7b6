//! What user functions see of the runtime.
//!
//! [`TaskInfo`] identifies the subtask (and is what failures are attributed
//! to). [`RuntimeContext`] is handed to `open()`, where state is registered by
//! descriptor. [`KeyedContext`] is handed to every per-record call of a keyed
//! function; it carries the current key, so state handles read and write that
//! key's state.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use floe_core::JobId;
use floe_state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, Key, KeyedStateAccess,
    KeyedStateBackend, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    OperatorStateAccess, OperatorStateRead, OperatorStateStore, ReducingState,
    ReducingStateDescriptor, StateError, StateValue, ValueState, ValueStateDescriptor,
    handles::MapKey,
};

use crate::error::{FailureCause, OperatorFailure, TaskError};

/// Identity of one subtask of one operator.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The job's id.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: Arc<str>,
    /// The operator's name.
    pub operator_name: Arc<str>,
    /// The operator's uid (explicit or derived from the graph).
    pub uid: Arc<str>,
    /// Zero-based subtask index.
    pub subtask_index: u32,
    /// Number of subtasks of the operator.
    pub parallelism: u32,
    /// Number of key groups of the operator.
    pub max_parallelism: u32,
}

impl TaskInfo {
    /// A failure of this subtask.
    pub fn failure(&self, cause: FailureCause) -> TaskError {
        TaskError::Operator(Box::new(OperatorFailure {
            operator: self.operator_name.to_string(),
            uid: self.uid.to_string(),
            subtask: self.subtask_index,
            parallelism: self.parallelism,
            cause,
        }))
    }

    /// Runs user code, turning its error or panic into a failure of this
    /// subtask. Costs nothing when the code neither fails nor panics.
    #[inline]
    pub fn guard<R>(&self, f: impl FnOnce() -> anyhow::Result<R>) -> Result<R, TaskError> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failure(FailureCause::Error(e))),
            Err(panic) => Err(self.failure(FailureCause::Panic(panic_message(panic.as_ref())))),
        }
    }

    /// Like [`TaskInfo::guard`] for code whose errors already are task errors
    /// (so a downstream operator's failure keeps its own attribution).
    #[inline]
    pub fn guard_task<R>(&self, f: impl FnOnce() -> Result<R, TaskError>) -> Result<R, TaskError> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(panic) => Err(self.failure(FailureCause::Panic(panic_message(panic.as_ref())))),
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Handed to a function's `open()`: task identity and state registration
/// (Flink's `getRuntimeContext()`). `K` is the key type of a keyed operator;
/// non-keyed operators use `()` and have no keyed state.
pub struct RuntimeContext<'a, K: Key = ()> {
    info: &'a TaskInfo,
    keyed: Option<&'a mut KeyedStateBackend<K>>,
}

impl<'a, K: Key> RuntimeContext<'a, K> {
    /// A context; `keyed` is `None` for non-keyed operators.
    pub fn new(info: &'a TaskInfo, keyed: Option<&'a mut KeyedStateBackend<K>>) -> Self {
        RuntimeContext { info, keyed }
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    fn backend(&mut self, name: &str) -> Result<&mut KeyedStateBackend<K>, StateError> {
        let operator = &self.info.operator_name;
        self.keyed
            .as_deref_mut()
            .ok_or_else(|| StateError::NotKeyed {
                name: name.to_string(),
                operator: operator.to_string(),
            })
    }

    /// Registers a [`ValueState`].
    pub fn get_state<T: StateValue>(
        &mut self,
        desc: &ValueStateDescriptor<T>,
    ) -> Result<ValueState<T>, StateError> {
        self.backend(desc.name())?.get_state(desc)
    }

    /// Registers a [`ListState`].
    pub fn get_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<ListState<T>, StateError> {
        self.backend(desc.name())?.get_list_state(desc)
    }

    /// Registers a [`MapState`].
    pub fn get_map_state<UK: MapKey, UV: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<UK, UV>, StateError> {
        self.backend(desc.name())?.get_map_state(desc)
    }

    /// Registers a [`ReducingState`].
    pub fn get_reducing_state<T: StateValue>(
        &mut self,
        desc: &ReducingStateDescriptor<T>,
    ) -> Result<ReducingState<T>, StateError> {
        self.backend(desc.name())?.get_reducing_state(desc)
    }

    /// Registers an [`AggregatingState`].
    pub fn get_aggregating_state<F: AggregateFunction>(
        &mut self,
        desc: &AggregatingStateDescriptor<F>,
    ) -> Result<AggregatingState<F>, StateError> {
        self.backend(desc.name())?.get_aggregating_state(desc)
    }
}

/// Handed to each per-record call of a keyed function: the current key and
/// its state. State handles take it as their context.
pub struct KeyedContext<'a, K: Key> {
    info: &'a TaskInfo,
    backend: &'a mut KeyedStateBackend<K>,
    timestamp: i64,
    /// The operator's timers, for functions that have them.
    pub(crate) timers: Option<TimerAccess<'a>>,
    /// The operator's side outputs (a `SideOutputBuffers`, named here
    /// only as `Any` so that this module does not depend on the operator
    /// machinery; the side-output module gives the context its `output`).
    pub(crate) side: Option<&'a mut (dyn std::any::Any + Send)>,
}

/// What a keyed context needs to reach its operator's timers (see
/// the timer-service module, which also gives the context its
/// `timer_service()`).
#[derive(Clone, Copy)]
pub struct TimerAccess<'a> {
    pub(crate) queue: &'a floe_state::TimerQueue<()>,
    pub(crate) watermark: i64,
    pub(crate) time: &'a crate::processing_time::ProcessingTimeService,
}

impl<'a, K: Key> KeyedContext<'a, K> {
    /// A context over a backend whose current key is set.
    pub fn new(info: &'a TaskInfo, backend: &'a mut KeyedStateBackend<K>) -> Self {
        KeyedContext {
            info,
            backend,
            timestamp: floe_core::NO_TIMESTAMP,
            timers: None,
            side: None,
        }
    }

    /// The same context with the operator's timers (`None`: a function
    /// without a timer service).
    #[inline]
    pub fn with_timers(mut self, timers: Option<TimerAccess<'a>>) -> Self {
        self.timers = timers;
        self
    }

    /// The same context for a record with event timestamp `timestamp`
    /// ([`floe_core::NO_TIMESTAMP`] for none).
    #[inline]
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The event timestamp of the record being processed, if it has one
    /// (Flink's `Context.timestamp()`).
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != floe_core::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// The key of the record being processed.
    pub fn current_key(&self) -> &K {
        self.backend
            .current_key()
            .expect("a keyed context always has a current key")
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }
}

impl<K: Key> KeyedStateAccess<K> for KeyedContext<'_, K> {
    fn keyed_state_backend(&mut self) -> &mut KeyedStateBackend<K> {
        self.backend
    }
}

/// Handed to a function's `initialize_state` (Flink's
/// `FunctionInitializationContext`): the operator state store, whether the
/// subtask was restored, and the raw state restored to it.
pub struct FunctionInitializationContext<'a> {
    info: &'a TaskInfo,
    store: &'a mut OperatorStateStore,
    restored_checkpoint: Option<u64>,
    checkpointing: bool,
}

impl<'a> FunctionInitializationContext<'a> {
    /// A context over `store`.
    pub fn new(
        info: &'a TaskInfo,
        store: &'a mut OperatorStateStore,
        restored_checkpoint: Option<u64>,
        checkpointing: bool,
    ) -> Self {
        FunctionInitializationContext {
            info,
            store,
            restored_checkpoint,
            checkpointing,
        }
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    /// True when the job started from a checkpoint or savepoint, so state
    /// registered now holds what was restored (Flink's `isRestored()`).
    pub fn is_restored(&self) -> bool {
        self.restored_checkpoint.is_some()
    }

    /// The checkpoint the job was restored from.
    pub fn restored_checkpoint_id(&self) -> Option<u64> {
        self.restored_checkpoint
    }

    /// True when checkpointing is on: side effects should wait for
    /// checkpoints to complete (and be committed on their notification).
    pub fn is_checkpointing_enabled(&self) -> bool {
        self.checkpointing
    }

    /// Where list, union list and broadcast state are registered.
    pub fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }

    /// Raw operator state restored to this subtask (one part per old
    /// subtask assigned to it).
    pub fn raw_operator_state(&self) -> &[Vec<u8>] {
        self.store.restored_raw_operator_state()
    }

    /// Raw keyed state restored to this subtask, per key group of its range.
    pub fn raw_keyed_state(&self) -> &[(floe_core::KeyGroup, Vec<u8>)] {
        self.store.restored_raw_keyed_state()
    }
}

impl OperatorStateAccess for FunctionInitializationContext<'_> {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }
}

impl OperatorStateRead for FunctionInitializationContext<'_> {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self.store
    }
}

/// Handed to a function's `snapshot_state` (Flink's
/// `FunctionSnapshotContext`): the checkpoint being taken, operator state
/// to bring up to date, and the outputs for raw state.
pub struct FunctionSnapshotContext<'a> {
    info: &'a TaskInfo,
    store: &'a mut OperatorStateStore,
    checkpoint_id: u64,
    timestamp_ms: u64,
}

impl<'a> FunctionSnapshotContext<'a> {
    /// A context for checkpoint `checkpoint_id`.
    pub fn new(
        info: &'a TaskInfo,
        store: &'a mut OperatorStateStore,
        checkpoint_id: u64,
        timestamp_ms: u64,
    ) -> Self {
        FunctionSnapshotContext {
            info,
            store,
            checkpoint_id,
            timestamp_ms,
        }
    }

    /// Who is running.
    pub fn task_info(&self) -> &TaskInfo {
        self.info
    }

    /// The checkpoint being taken.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// When the coordinator triggered it (ms since the epoch).
    pub fn checkpoint_timestamp(&self) -> u64 {
        self.timestamp_ms
    }

    /// Raw operator state of this subtask for this checkpoint (a custom
    /// operator's own bytes).
    pub fn raw_operator_output(&mut self) -> &mut Vec<u8> {
        self.store.raw_operator_output()
    }

    /// Raw keyed state of key group `kg` (one of this subtask's) for this
    /// checkpoint; restored to whichever subtask owns `kg` then.
    pub fn raw_keyed_output(
        &mut self,
        kg: floe_core::KeyGroup,
    ) -> Result<&mut Vec<u8>, floe_state::StateError> {
        self.store.raw_keyed_output(kg)
    }
}

impl OperatorStateAccess for FunctionSnapshotContext<'_> {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self.store
    }
}

impl OperatorStateRead for FunctionSnapshotContext<'_> {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self.store
    }
}
