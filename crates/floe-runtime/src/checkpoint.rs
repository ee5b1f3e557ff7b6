//! The task side of checkpointing: what operators hand over at a barrier,
//! what they get back on restore, and barrier alignment.
//!
//! A barrier traverses a task's chain synchronously (`process_barrier`):
//! each operator takes the synchronous part of its snapshot, appends it to
//! the [`TaskSnapshot`], and forwards the barrier. The task then hands the
//! snapshot to the asynchronous part (encode, upload, acknowledge) and goes
//! on processing records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floe_core::CheckpointBarrier;
use floe_state::KeyedStateSnapshot;

/// The state one operator subtask contributes to a checkpoint.
pub enum OperatorState {
    /// Keyed state, frozen; encoded off the task thread.
    Keyed(KeyedStateSnapshot),
    /// A source reader's position (and any other bytes an operator owns).
    Raw(Vec<u8>),
    /// Operator state (list, union list, broadcast, raw), encoded on the
    /// task thread: it is small and redistributed as bytes on restore.
    Operator(Vec<u8>),
}

/// One operator subtask's part of a checkpoint.
pub struct OperatorSnapshot {
    /// The operator's uid: the key its state is restored by.
    pub uid: Arc<str>,
    /// The subtask index.
    pub subtask: u32,
    /// The state.
    pub state: OperatorState,
}

/// Everything a task's operators produced for one checkpoint.
pub struct TaskSnapshot {
    /// The barrier that triggered it.
    pub barrier: CheckpointBarrier,
    /// Per-operator parts, in chain order.
    pub operators: Vec<OperatorSnapshot>,
    /// In-flight records of an unaligned checkpoint (encoded), with the uid
    /// and subtask of the task's head operator they are replayed into.
    pub channel_state: Option<(Arc<str>, u32, Vec<u8>)>,
    /// From the first barrier to the snapshot (aligned: waiting for the
    /// other channels' barriers).
    pub alignment: Duration,
    /// The synchronous part on the task thread.
    pub sync: Duration,
    /// Taken unaligned (at the first barrier, with channel state).
    pub unaligned: bool,
}

impl TaskSnapshot {
    /// An empty snapshot for `barrier`.
    pub fn new(barrier: CheckpointBarrier) -> Self {
        TaskSnapshot {
            barrier,
            operators: Vec::new(),
            channel_state: None,
            alignment: Duration::ZERO,
            sync: Duration::ZERO,
            unaligned: false,
        }
    }
}

/// State restored for one operator (all subtasks), from a completed checkpoint.
#[derive(Debug, Default, Clone)]
pub struct OperatorRestore {
    /// Keyed state files of every old subtask: a new subtask keeps the key
    /// groups of its own range from each.
    pub keyed: Vec<Arc<Vec<u8>>>,
    /// Raw state by old subtask index.
    pub raw: HashMap<u32, Arc<Vec<u8>>>,
    /// Operator state files of every old subtask: each new subtask picks
    /// its share by each state's redistribution mode.
    pub operator: Vec<Arc<Vec<u8>>>,
    /// In-flight records of an unaligned checkpoint by subtask index, to
    /// replay before new input.
    pub channel: HashMap<u32, Arc<Vec<u8>>>,
    /// Native keyed state manifests of every old subtask (an incremental
    /// RocksDB checkpoint); their shared files come through
    /// [`RestoredState::shared`].
    pub keyed_native: Vec<Arc<Vec<u8>>>,
}

/// Reads shared (incremental) state files from the storage a snapshot was
/// loaded from, when a backend restores native keyed state: only the files
/// the snapshot's `_metadata` lists, each verified against the size and
/// checksum recorded there.
#[derive(Clone)]
pub struct SharedStateFetcher {
    store: Arc<dyn crate::coordinator::CheckpointStore>,
    listed: Arc<HashMap<String, crate::coordinator::StateFile>>,
}

impl SharedStateFetcher {
    /// Fetches from `store` the shared files in `listed` (the snapshot
    /// metadata's).
    pub fn new(
        store: Arc<dyn crate::coordinator::CheckpointStore>,
        listed: Vec<crate::coordinator::StateFile>,
    ) -> Self {
        let listed = listed.into_iter().map(|f| (f.path.clone(), f)).collect();
        SharedStateFetcher {
            store,
            listed: Arc::new(listed),
        }
    }

    /// The payload of the shared file at `path` (relative to the storage
    /// root) of stored size `size`, verified. A file the snapshot's
    /// `_metadata` does not list, or lists with another size, is refused:
    /// a native manifest cannot make a restore read anything else.
    pub fn fetch(&self, path: &str, size: u64) -> Result<Vec<u8>, String> {
        let file = self.listed.get(path).ok_or_else(|| {
            format!("shared state file {path} is not listed in the snapshot's _metadata")
        })?;
        if file.size != size {
            return Err(format!(
                "shared state file {path}: the native manifest says {size} bytes, the snapshot's _metadata {}",
                file.size
            ));
        }
        self.store
            .read_state(file, crate::coordinator::StateFileKind::Shared)
    }
}

impl std::fmt::Debug for SharedStateFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStateFetcher")
    }
}

/// State to restore, by operator uid.
#[derive(Debug, Default, Clone)]
pub struct RestoredState {
    /// What the snapshot recorded about each operator, by uid.
    pub operator_info: std::collections::BTreeMap<String, crate::coordinator::OperatorSnapshotInfo>,
    /// The checkpoint it comes from.
    pub checkpoint_id: u64,
    /// Per uid.
    pub operators: HashMap<String, OperatorRestore>,
    /// A checkpoint of the job restoring it (a failover), not a user's
    /// savepoint or another job's checkpoint: its shared files may be
    /// referenced by the job's next checkpoints.
    pub same_job: bool,
    /// Fetches shared files of native keyed state.
    pub shared: Option<SharedStateFetcher>,
}

/// What operators receive when they open.
#[derive(Debug, Default, Clone)]
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
}

impl TaskInit {
    /// The restored state of operator `uid`, if any.
    pub fn operator(&self, uid: &str) -> Option<&OperatorRestore> {
        self.restore.as_ref()?.operators.get(uid)
    }
}

/// How a task with several input channels treats barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlignmentMode {
    /// Hold each channel after its barrier until every channel delivered it
    /// (exactly-once).
    #[default]
    Aligned,
    /// Hold nothing; snapshot when the last barrier arrives (at-least-once:
    /// records after the barrier on early channels may be in the snapshot's
    /// state and be replayed again after a failure).
    AtLeastOnce,
    /// Exactly-once without waiting: snapshot at the first barrier and
    /// persist the records that were still in flight on the other channels
    /// (channel state), replayed before new input on restore. With a
    /// non-zero `aligned_timeout` a task starts aligned and switches to
    /// unaligned when its alignment has lasted that long.
    Unaligned {
        /// How long to align before switching (zero: never align).
        aligned_timeout: Duration,
    },
}

/// What the aligner asks of its task.
#[derive(Debug, PartialEq, Eq)]
pub enum AlignmentAction {
    /// Nothing yet.
    Wait,
    /// Stop reading this channel until the checkpoint is taken.
    Block(usize),
    /// Every channel delivered the barrier: snapshot, forward, unblock all.
    Complete(CheckpointBarrier),
    /// A newer checkpoint's barrier arrived while an older one was aligning
    /// (the older one was aborted upstream): unblock every channel, then
    /// block `block` for the newer one.
    Superseded {
        /// The channel to hold for the newer checkpoint (aligned mode).
        block: Option<usize>,
    },
}

/// Tracks which channels have delivered the barrier of the checkpoint in
/// progress. Channels that have ended count as delivered.
#[derive(Debug)]
pub struct BarrierAligner {
    mode: AlignmentMode,
    ended: Vec<bool>,
    current: Option<(CheckpointBarrier, Vec<bool>)>,
}

impl BarrierAligner {
    /// An aligner for `channels` input channels.
    pub fn new(channels: usize, mode: AlignmentMode) -> Self {
        BarrierAligner {
            mode,
            ended: vec![false; channels],
            current: None,
        }
    }

    /// True while a checkpoint is being aligned.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// The barrier being aligned, if any.
    pub fn current_barrier(&self) -> Option<CheckpointBarrier> {
        self.current.as_ref().map(|(b, _)| *b)
    }

    fn complete_if_done(&mut self) -> Option<AlignmentAction> {
        let (_, seen) = self.current.as_ref()?;
        if seen.iter().zip(&self.ended).all(|(s, e)| *s || *e) {
            let (b, _) = self.current.take().expect("checked above");
            return Some(AlignmentAction::Complete(b));
        }
        None
    }

    /// Channel `ch` delivered `barrier`.
    pub fn on_barrier(&mut self, ch: usize, barrier: CheckpointBarrier) -> AlignmentAction {
        let mut superseded = false;
        match &mut self.current {
            Some((b, seen)) if b.id == barrier.id => seen[ch] = true,
            // A late barrier of a checkpoint already given up here.
            Some((b, _)) if barrier.id < b.id => return AlignmentAction::Wait,
            current => {
                superseded = current.is_some();
                let mut seen = vec![false; self.ended.len()];
                seen[ch] = true;
                *current = Some((barrier, seen));
            }
        }
        if let Some(done) = self.complete_if_done() {
            return done;
        }
        let block = matches!(
            self.mode,
            AlignmentMode::Aligned | AlignmentMode::Unaligned { .. }
        )
        .then_some(ch);
        match (superseded, block) {
            (true, block) => AlignmentAction::Superseded { block },
            (false, Some(ch)) => AlignmentAction::Block(ch),
            (false, None) => AlignmentAction::Wait,
        }
    }

    /// Gives up aligning the checkpoint in progress (it switches to
    /// unaligned): its barrier and the channels that have not delivered it.
    pub fn abandon(&mut self) -> Option<(CheckpointBarrier, Vec<usize>)> {
        let (barrier, seen) = self.current.take()?;
        let pending = (0..seen.len())
            .filter(|i| !seen[*i] && !self.ended[*i])
            .collect();
        Some((barrier, pending))
    }

    /// Channel `ch` ended; it may complete the alignment in progress.
    pub fn on_end(&mut self, ch: usize) -> AlignmentAction {
        self.ended[ch] = true;
        self.complete_if_done().unwrap_or(AlignmentAction::Wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_core::CheckpointKind;

    fn b(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            timestamp_ms: 0,
            kind: CheckpointKind::Checkpoint,
            last_completed: None,
        }
    }

    #[test]
    fn aligned_blocks_until_every_channel_delivered() {
        let mut a = BarrierAligner::new(3, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(1, b(1)), AlignmentAction::Block(1));
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Block(0));
        assert!(a.in_progress());
        assert_eq!(a.on_barrier(2, b(1)), AlignmentAction::Complete(b(1)));
        assert!(!a.in_progress());
    }

    #[test]
    fn ended_channels_count_as_delivered() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(0, b(4)), AlignmentAction::Block(0));
        assert_eq!(a.on_end(1), AlignmentAction::Complete(b(4)));
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_end(1), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(0, b(5)), AlignmentAction::Complete(b(5)));
    }

    #[test]
    fn unaligned_mode_never_blocks() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AtLeastOnce);
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(1, b(1)), AlignmentAction::Complete(b(1)));
    }

    #[test]
    fn newer_barrier_supersedes_and_older_is_ignored() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Block(0));
        assert_eq!(
            a.on_barrier(1, b(2)),
            AlignmentAction::Superseded { block: Some(1) }
        );
        assert_eq!(a.on_barrier(0, b(1)), AlignmentAction::Wait);
        assert_eq!(a.on_barrier(0, b(2)), AlignmentAction::Complete(b(2)));
    }
}

/// A command from the JobManager (its checkpoint coordinator) to a task.
#[derive(Debug, Clone)]
pub enum TaskCommand {
    /// Sources only: take a checkpoint now, i.e. inject `barrier`.
    TriggerCheckpoint(CheckpointBarrier),
    /// Every task: a checkpoint completed or was aborted.
    Notify(CheckpointNotification),
    /// Every task, after the job's final checkpoint or a stop's savepoint
    /// completed (and was notified): exit.
    Terminate,
    /// Stop with drain: sources end their input now, as if it were over.
    EndInput,
}

/// The outcome of a checkpoint, as the coordinator tells every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointNotification {
    /// `_metadata` of this checkpoint is written: it (and every lower id)
    /// is durable, so side effects held for it may be committed.
    Complete(u64),
    /// This checkpoint will never complete; what was prepared for it may be
    /// dropped (a later completion may still subsume it).
    Aborted(u64),
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
    pub coordinator: Option<crossbeam_channel::Sender<crate::coordinator::CoordinatorEvent>>,
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
        if let Some(c) = &self.coordinator {
            let _ = c.send(crate::coordinator::CoordinatorEvent::TaskFinished(
                self.task_index,
            ));
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
