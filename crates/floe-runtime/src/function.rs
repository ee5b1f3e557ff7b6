//! The checkpoint hooks every user function may add: operator state
//! (Flink's `CheckpointedFunction`) and checkpoint notifications (Flink's
//! `CheckpointListener`).
//!
//! They are declared once, here, instead of as defaulted methods on each
//! function trait. A function trait ([`crate::SinkWriter`], and the API's
//! process, map, flat-map and broadcast functions) only has two accessors,
//! `checkpointed_function` and `checkpoint_listener`, that return `None`
//! unless the implementation opts in — the Rust counterpart of Flink's
//! `instanceof CheckpointedFunction`:
//!
//! ```ignore
//! impl MapFunction<u64, u64> for Buffering { /* … */
//!     fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
//!         Some(self)
//!     }
//! }
//! impl CheckpointedFunction for Buffering { /* initialize_state, snapshot_state */ }
//! ```
//!
//! The operators that run functions call the hooks only through
//! [`FunctionHooks`], so what a hook means (when it runs, what it may
//! assume) lives in one place.

use crate::checkpoint::CheckpointNotification;
use crate::context::{FunctionInitializationContext, FunctionSnapshotContext};

/// A function with operator state (Flink's `CheckpointedFunction`).
pub trait CheckpointedFunction {
    /// Registers and restores operator state; runs once per subtask before
    /// `open`. `ctx.is_restored()` says whether the job started from a
    /// snapshot.
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()>;

    /// Brings operator state up to date for the checkpoint whose barrier
    /// just passed: every record before the barrier has been processed,
    /// none after it. The states registered in `initialize_state` are
    /// snapshotted by the runtime after this; a function that changes them
    /// as it goes (broadcast state, for one) has nothing to add.
    fn snapshot_state(&mut self, _ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A function that hears when checkpoints complete or are aborted (Flink's
/// `CheckpointListener`).
///
/// Ids only grow and completing `n` subsumes every lower id. A notification
/// may be lost (a failure between the checkpoint's completion and its
/// delivery): what it would have done must also happen on the restore of
/// that checkpoint, which is how [`crate::TwoPhaseCommitSinkWriter`] stays
/// exactly-once.
pub trait CheckpointListener {
    /// Checkpoint `checkpoint_id` and every lower one completed.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()>;

    /// Checkpoint `checkpoint_id` will not complete. Most functions have
    /// nothing to undo: the next completed checkpoint subsumes it.
    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Calls a function's hooks if it has them: what every operator running a
/// user function does at initialization, at a barrier and on a
/// notification.
pub struct FunctionHooks;

impl FunctionHooks {
    /// Runs `initialize_state` of a [`CheckpointedFunction`], if any.
    pub fn initialize(
        function: Option<&mut dyn CheckpointedFunction>,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        function.map_or(Ok(()), |f| f.initialize_state(ctx))
    }

    /// Runs `snapshot_state` of a [`CheckpointedFunction`], if any.
    pub fn snapshot(
        function: Option<&mut dyn CheckpointedFunction>,
        ctx: &mut FunctionSnapshotContext<'_>,
    ) -> anyhow::Result<()> {
        function.map_or(Ok(()), |f| f.snapshot_state(ctx))
    }

    /// Delivers a notification to a [`CheckpointListener`], if any.
    pub fn notify(
        listener: Option<&mut dyn CheckpointListener>,
        notification: CheckpointNotification,
    ) -> anyhow::Result<()> {
        match (listener, notification) {
            (None, _) => Ok(()),
            (Some(l), CheckpointNotification::Complete(id)) => l.notify_checkpoint_complete(id),
            (Some(l), CheckpointNotification::Aborted(id)) => l.notify_checkpoint_aborted(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl CheckpointListener for Recorder {
        fn notify_checkpoint_complete(&mut self, id: u64) -> anyhow::Result<()> {
            self.0.push(format!("complete {id}"));
            Ok(())
        }
    }

    #[test]
    fn notifications_reach_a_listener_and_aborts_default_to_nothing() {
        let mut r = Recorder::default();
        FunctionHooks::notify(Some(&mut r), CheckpointNotification::Complete(3)).unwrap();
        FunctionHooks::notify(Some(&mut r), CheckpointNotification::Aborted(4)).unwrap();
        FunctionHooks::notify(None, CheckpointNotification::Complete(5)).unwrap();
        assert_eq!(r.0, vec!["complete 3".to_string()]);
    }
}
