//! What a task is given besides its chain: its commands, where its
//! snapshots go, how it aligns barriers, and the state it restores.

use std::sync::Arc;

use super::aligner::AlignmentMode;
use super::messages::{CoordinatorEvent, TaskCommand};
use super::restore::{OperatorRestore, RestoredState};
use super::task_snapshot::TaskSnapshot;

/// What operators receive when they open.
#[derive(Debug, Clone)]
pub struct TaskInit {
    /// State to restore, when the job (re)starts from a checkpoint.
    pub restore: Option<Arc<RestoredState>>,
    /// Checkpointing is on: side effects wait for checkpoints to complete
    /// (a two-phase-commit sink commits on notification, not at the end of
    /// its input).
    pub checkpointing: bool,
    /// Where keyed operators announce their queryable states (only when
    /// `queryable-state.enable` is on); per task.
    pub queryable: Option<crate::queryable::QueryableTaskHandle>,
    /// The task's processing time: its clock, and the wake-ups its
    /// operators ask for (timers, periodic watermarks).
    pub time: crate::processing_time::ProcessingTimeService,
    /// `pipeline.auto-watermark-interval`: how often periodic watermark
    /// generators are asked to emit (Flink's default is 200 ms).
    pub auto_watermark_interval: std::time::Duration,
}

impl Default for TaskInit {
    fn default() -> Self {
        TaskInit {
            restore: None,
            checkpointing: false,
            queryable: None,
            time: Default::default(),
            auto_watermark_interval: std::time::Duration::from_millis(200),
        }
    }
}

impl TaskInit {
    /// The periodic watermark interval in milliseconds (at least 1).
    pub fn auto_watermark_interval_ms(&self) -> i64 {
        i64::try_from(self.auto_watermark_interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// The restored state of operator `uid`, if any.
    pub fn operator(&self, uid: &str) -> Option<&OperatorRestore> {
        self.restore.as_ref()?.operators.get(uid)
    }
}

/// What a running task is given by its TaskManager besides its chain.
#[derive(Clone)]
pub struct TaskEnvironment {
    /// Set when the job is cancelled.
    pub cancel: crate::channel::CancelFlag,
    /// The task's index in its job's deployment.
    pub task_index: usize,
    /// State to restore, handed to every operator's `open`.
    pub init: TaskInit,
    /// Commands for this task.
    pub commands: Option<crossbeam_channel::Receiver<TaskCommand>>,
    /// Where synchronous snapshot parts go for their asynchronous part.
    pub snapshots: Option<crossbeam_channel::Sender<(usize, TaskSnapshot)>>,
    /// Barrier handling for tasks with several input channels.
    pub alignment: AlignmentMode,
    /// This task's queryable-state inbox, drained between batches.
    pub queries: Option<crossbeam_channel::Receiver<crate::queryable::StateQuery>>,
    /// Where a task reports that its input ended; it then stays until the
    /// coordinator ends the job.
    pub coordinator: Option<crossbeam_channel::Sender<CoordinatorEvent>>,
    /// Where the task accounts for its idle and back-pressured time.
    pub times: Option<std::sync::Arc<crate::metrics::TaskTimes>>,
}

impl TaskEnvironment {
    /// An environment without checkpointing (and nothing to restore).
    pub fn new(cancel: crate::channel::CancelFlag, task_index: usize) -> Self {
        TaskEnvironment {
            cancel,
            task_index,
            init: TaskInit::default(),
            commands: None,
            snapshots: None,
            alignment: AlignmentMode::Aligned,
            coordinator: None,
            queries: None,
            times: None,
        }
    }

    /// True when the task stays after its input ended, until the
    /// coordinator ends the job: it must still take part in the job's
    /// final checkpoint, in savepoints triggered while other tasks run
    /// (finished tasks snapshot their end state, as in Flink), and in a
    /// stop with drain. Only a task without a coordinator exits at once.
    pub fn awaits_final_checkpoint(&self) -> bool {
        self.commands.is_some()
    }

    /// Tells the coordinator that this task's input ended and its chain
    /// finished.
    pub fn report_finished(&self) {
        // From now on the task only waits: idle, for its metrics.
        if let Some(times) = &self.times {
            times.set_running(false);
        }
        if let Some(c) = &self.coordinator {
            let _ = c.send(CoordinatorEvent::TaskFinished(self.task_index));
        }
    }

    /// Hands a completed synchronous snapshot over for its asynchronous part.
    pub fn submit(&self, snapshot: TaskSnapshot) -> Result<(), crate::error::TaskError> {
        match &self.snapshots {
            Some(tx) => tx
                .send((self.task_index, snapshot))
                .map_err(|_| crate::error::TaskError::Cancelled),
            None => Ok(()),
        }
    }
}
