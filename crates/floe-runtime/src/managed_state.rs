//! Operator state hosted by an operator on behalf of its user function:
//! restored and handed to `initialize_state` when the operator opens,
//! brought up to date by `snapshot_state` at every barrier and added to the
//! task's snapshot. Every operator that runs a user function uses it, so
//! each one follows Flink's `CheckpointedFunction` contract the same way.

use std::sync::Arc;

use floe_core::CheckpointBarrier;
use floe_state::{KeyGroupRange, OperatorStateStore};

use crate::checkpoint::{OperatorSnapshot, OperatorState, TaskInit, TaskSnapshot};
use crate::context::{FunctionInitializationContext, FunctionSnapshotContext, TaskInfo};
use crate::error::{FailureCause, TaskError};

/// The operator state store of one operator subtask.
pub struct ManagedOperatorState {
    store: OperatorStateStore,
}

impl ManagedOperatorState {
    /// A store for the operator of `info`; `key_groups` when it is keyed
    /// (for raw keyed state).
    pub fn new(info: &TaskInfo, key_groups: Option<KeyGroupRange>) -> Self {
        ManagedOperatorState {
            store: OperatorStateStore::new(&*info.operator_name, key_groups),
        }
    }

    /// Restores this subtask's share of the operator's state, then runs the
    /// function's `initialize_state` (`init_fn`) on it.
    pub fn initialize(
        &mut self,
        init: &TaskInit,
        info: &TaskInfo,
        init_fn: impl FnOnce(&mut FunctionInitializationContext<'_>) -> anyhow::Result<()>,
    ) -> Result<(), TaskError> {
        let restored = init.restore.as_ref().map(|r| r.checkpoint_id);
        if let Some(r) = init.operator(&info.uid) {
            let files: Vec<&[u8]> = r.operator.iter().map(|f| f.as_slice()).collect();
            self.store
                .restore(&files, info.subtask_index, info.parallelism)
                .map_err(|e| info.failure(FailureCause::Error(e.into())))?;
        }
        let store = &mut self.store;
        info.guard(|| {
            init_fn(&mut FunctionInitializationContext::new(
                info,
                store,
                restored,
                init.checkpointing,
            ))
        })
    }

    /// Runs the function's `snapshot_state` (`snapshot_fn`) for `barrier`
    /// and adds the operator state to `snapshot` (nothing when the function
    /// keeps none).
    pub fn snapshot(
        &mut self,
        barrier: CheckpointBarrier,
        info: &TaskInfo,
        snapshot: &mut TaskSnapshot,
        snapshot_fn: impl FnOnce(&mut FunctionSnapshotContext<'_>) -> anyhow::Result<()>,
    ) -> Result<(), TaskError> {
        let store = &mut self.store;
        info.guard(|| {
            snapshot_fn(&mut FunctionSnapshotContext::new(
                info,
                store,
                barrier.id,
                barrier.timestamp_ms,
            ))
        })?;
        if self.store.is_empty() {
            return Ok(());
        }
        let bytes =
            info.guard(|| Ok(self.store.snapshot(info.subtask_index, info.parallelism)?))?;
        snapshot.operators.push(OperatorSnapshot {
            uid: Arc::clone(&info.uid),
            subtask: info.subtask_index,
            state: OperatorState::Operator(bytes),
        });
        Ok(())
    }

    /// The store, for contexts that read or change it while records flow
    /// (broadcast state).
    pub fn store(&mut self) -> &mut OperatorStateStore {
        &mut self.store
    }
}
