//! Checkpoint statistics: what each checkpoint cost and how it ended
//! (Flink's checkpoint history), kept for the REST API and the logs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::error::CheckpointFailureReason;

/// What happened to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Triggered, not every task has acknowledged yet.
    InProgress,
    /// Metadata written.
    Completed,
    /// Given up, and why.
    Failed(CheckpointFailureReason),
}

/// Statistics of one checkpoint (Flink's checkpoint history entry).
#[derive(Debug, Clone)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// Completed or failed.
    pub status: CheckpointStatus,
    /// Trigger time (ms since the epoch).
    pub trigger_timestamp_ms: u64,
    /// Trigger to completion (or failure): end-to-end duration.
    pub duration: Duration,
    /// Bytes persisted by this checkpoint: state files, inline state and
    /// channel state (for an incremental checkpoint only what it uploaded;
    /// Flink's "checkpointed data size").
    pub state_size: u64,
    /// Bytes the checkpoint consists of, shared files it references
    /// included (Flink's "full checkpoint data size").
    pub full_state_size: u64,
    /// Bytes of in-flight records persisted (unaligned checkpoints).
    pub channel_state_size: u64,
    /// Longest synchronous part of any task (processing paused meanwhile).
    pub sync_duration: Duration,
    /// Longest asynchronous part of any task (encode and upload).
    pub async_duration: Duration,
    /// Longest alignment of any task (first barrier to snapshot).
    pub alignment_duration: Duration,
    /// Tasks that acknowledged, out of all tasks.
    pub acknowledged: (usize, usize),
    /// Some task took it unaligned (persisting in-flight records).
    pub unaligned: bool,
    /// Bytes per operator uid.
    pub operators: BTreeMap<String, u64>,
    /// A savepoint, not a checkpoint.
    pub is_savepoint: bool,
    /// Where a completed savepoint (or checkpoint) lives, as a URL or path.
    pub external_path: Option<String>,
    /// Which operators and subtask each task of the run is, in task-index
    /// order: what [`CheckpointStats::acks`] refers to.
    pub layout: TaskLayout,
    /// The acknowledgement of each task that acknowledged, by task index
    /// (Flink's per-subtask checkpoint details; a missing task is the one
    /// an operator looks for when a checkpoint hangs).
    pub acks: BTreeMap<usize, SubtaskAck>,
}

/// One task of a run as the checkpoint history names it: the operators its
/// chain runs (indices into the job's vertices) and its subtask index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPosition {
    /// The chained operators, head first.
    pub vertices: Vec<usize>,
    /// The subtask index they run at.
    pub subtask: u32,
}

/// Every task of one run, in task-index order; shared by all the run's
/// checkpoint statistics rather than copied into each.
pub type TaskLayout = Arc<[TaskPosition]>;

/// What one task reported when it acknowledged a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtaskAck {
    /// When the coordinator received it (ms since the epoch).
    pub ack_timestamp_ms: u64,
    /// Bytes the task wrote for this checkpoint.
    pub state_size: u64,
    /// Bytes of in-flight records it persisted.
    pub channel_state_size: u64,
    /// Its synchronous part.
    pub sync_duration: Duration,
    /// Its asynchronous part.
    pub async_duration: Duration,
    /// Its alignment (first barrier to snapshot).
    pub alignment_duration: Duration,
    /// It snapshotted unaligned.
    pub unaligned: bool,
    /// Bytes it wrote per operator uid (a chain has several).
    pub operator_bytes: Vec<(String, u64)>,
}

impl CheckpointStats {
    /// The acknowledged and total subtasks of vertex `vertex` (a chained
    /// operator counts its task's acknowledgement).
    pub fn vertex_acks(&self, vertex: usize) -> (usize, usize) {
        let mut acked = 0;
        let mut total = 0;
        for (task, pos) in self.layout.iter().enumerate() {
            if pos.vertices.contains(&vertex) {
                total += 1;
                acked += usize::from(self.acks.contains_key(&task));
            }
        }
        (acked, total)
    }
}

/// What a task reports with its acknowledgement, besides its state handles.
#[derive(Debug, Clone, Default)]
pub struct AckStats {
    /// Bytes written per operator uid.
    pub operator_bytes: Vec<(String, u64)>,
    /// Bytes of channel state.
    pub channel_bytes: u64,
    /// The task's synchronous part.
    pub sync: Duration,
    /// The task's asynchronous part.
    pub async_: Duration,
    /// The task's alignment.
    pub alignment: Duration,
    /// The task snapshotted unaligned.
    pub unaligned: bool,
    /// Bytes of shared files referenced, not written (incremental).
    pub referenced_bytes: u64,
}

/// How many checkpoints and savepoints a job ever finished, kept apart
/// from the bounded list so the metrics' counts stay exact however long a
/// job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Completed checkpoints (savepoints not included).
    pub completed: u64,
    /// Failed checkpoints (savepoints not included).
    pub failed: u64,
    /// Completed savepoints.
    pub completed_savepoints: u64,
    /// Failed savepoints.
    pub failed_savepoints: u64,
}

/// Ended checkpoints a history keeps: a job checkpointing every second
/// would otherwise grow its history by the day (the counts, the latest
/// entries and the summary stay exact).
pub const CHECKPOINT_HISTORY_LIMIT: usize = 1000;

/// Ended checkpoints whose per-task acknowledgements are kept and shown
/// (Flink's `web.checkpoints.history`, 10); older entries keep their
/// totals only, so memory does not grow with the number of tasks times
/// [`CHECKPOINT_HISTORY_LIMIT`].
pub const CHECKPOINT_HISTORY_DETAILS: usize = 10;

/// Minimum, maximum and average of one figure over every completed
/// checkpoint and savepoint (Flink's cumulative `summary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSummary {
    /// Smallest value (0 before the first).
    pub min: u64,
    /// Largest value.
    pub max: u64,
    /// Sum of all values.
    pub sum: u128,
    /// Number of values.
    pub count: u64,
}

impl StatsSummary {
    /// Takes one more value into account.
    pub fn add(&mut self, v: u64) {
        self.min = if self.count == 0 { v } else { self.min.min(v) };
        self.max = self.max.max(v);
        self.sum += u128::from(v);
        self.count += 1;
    }

    /// The average (0 before the first value).
    pub fn avg(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }
}

/// The cumulative summary of the completed checkpoints and savepoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// Bytes persisted (incremental: uploaded).
    pub state_size: StatsSummary,
    /// Bytes referenced, shared files included.
    pub full_state_size: StatsSummary,
    /// End-to-end duration, ms.
    pub duration_ms: StatsSummary,
    /// In-flight bytes persisted.
    pub persisted: StatsSummary,
}

/// A job's checkpoint history at one moment, as readers need it: cheap to
/// take (a few entries), whatever the number of checkpoints or tasks.
#[derive(Debug, Clone, Default)]
pub struct CheckpointHistoryView {
    /// The most recent ended checkpoints and savepoints, in the order they
    /// ended (at most [`CHECKPOINT_HISTORY_DETAILS`]), with their per-task
    /// acknowledgements.
    pub recent: Vec<CheckpointStats>,
    /// Those in flight, by ascending id, with the acknowledgements so far.
    pub in_progress: Vec<CheckpointStats>,
    /// Every one that ever ended.
    pub counts: CheckpointCounts,
    /// The latest completed checkpoint (not a savepoint).
    pub latest_completed: Option<CheckpointStats>,
    /// The latest completed savepoint.
    pub latest_savepoint: Option<CheckpointStats>,
    /// The latest failed checkpoint or savepoint.
    pub latest_failed: Option<CheckpointStats>,
    /// Over every completed checkpoint and savepoint.
    pub summary: CheckpointSummary,
}

#[derive(Debug, Default)]
struct HistoryInner {
    ended: VecDeque<CheckpointStats>,
    in_progress: BTreeMap<u64, CheckpointStats>,
    counts: CheckpointCounts,
    latest_completed: Option<CheckpointStats>,
    latest_savepoint: Option<CheckpointStats>,
    latest_failed: Option<CheckpointStats>,
    summary: CheckpointSummary,
}

/// The checkpoint history of a job, shared between its coordinators (which
/// write) and its client and REST endpoint (which read while it runs).
#[derive(Debug, Clone, Default)]
pub struct CheckpointHistory {
    inner: Arc<Mutex<HistoryInner>>,
}

impl CheckpointHistory {
    fn lock(&self) -> MutexGuard<'_, HistoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a checkpoint just triggered (or its state as a whole).
    pub fn progress(&self, stats: CheckpointStats) {
        self.lock().in_progress.insert(stats.id, stats);
    }

    /// Updates checkpoint `id` in flight in place (an acknowledgement):
    /// nothing is copied but what `update` changes.
    pub fn update_in_progress(&self, id: u64, update: impl FnOnce(&mut CheckpointStats)) {
        if let Some(s) = self.lock().in_progress.get_mut(&id) {
            update(s);
        }
    }

    /// Records a checkpoint that ended (completed or failed): no longer in
    /// flight, counted, summarized and listed.
    pub fn end(&self, stats: CheckpointStats) {
        let mut h = self.lock();
        h.in_progress.remove(&stats.id);
        let c = &mut h.counts;
        match (&stats.status, stats.is_savepoint) {
            (CheckpointStatus::Completed, false) => c.completed += 1,
            (CheckpointStatus::Completed, true) => c.completed_savepoints += 1,
            (CheckpointStatus::Failed(_), false) => c.failed += 1,
            (CheckpointStatus::Failed(_), true) => c.failed_savepoints += 1,
            (CheckpointStatus::InProgress, _) => {}
        }
        match (&stats.status, stats.is_savepoint) {
            (CheckpointStatus::Completed, savepoint) => {
                h.summary.state_size.add(stats.state_size);
                h.summary.full_state_size.add(stats.full_state_size);
                h.summary.duration_ms.add(stats.duration.as_millis() as u64);
                h.summary.persisted.add(stats.channel_state_size);
                if savepoint {
                    h.latest_savepoint = Some(stats.clone());
                } else {
                    h.latest_completed = Some(stats.clone());
                }
            }
            (CheckpointStatus::Failed(_), _) => h.latest_failed = Some(stats.clone()),
            (CheckpointStatus::InProgress, _) => {}
        }
        if h.ended.len() == CHECKPOINT_HISTORY_LIMIT {
            h.ended.pop_front();
        }
        h.ended.push_back(stats);
        // Only the most recent entries keep their per-task details.
        let n = h.ended.len();
        if n > CHECKPOINT_HISTORY_DETAILS {
            h.ended[n - 1 - CHECKPOINT_HISTORY_DETAILS].acks.clear();
        }
    }

    /// Forgets what was in flight (a run ended without ending them, e.g.
    /// its coordinator is gone after a failure).
    pub fn clear_in_progress(&self) {
        self.lock().in_progress.clear();
    }

    /// The ended checkpoints, in the order they ended (the last
    /// [`CHECKPOINT_HISTORY_LIMIT`]; per-task details only on the last
    /// [`CHECKPOINT_HISTORY_DETAILS`]).
    pub fn ended(&self) -> Vec<CheckpointStats> {
        self.lock().ended.iter().cloned().collect()
    }

    /// What readers need, at one moment.
    pub fn view(&self) -> CheckpointHistoryView {
        let h = self.lock();
        let skip = h.ended.len().saturating_sub(CHECKPOINT_HISTORY_DETAILS);
        CheckpointHistoryView {
            recent: h.ended.iter().skip(skip).cloned().collect(),
            in_progress: h.in_progress.values().cloned().collect(),
            counts: h.counts,
            latest_completed: h.latest_completed.clone(),
            latest_savepoint: h.latest_savepoint.clone(),
            latest_failed: h.latest_failed.clone(),
            summary: h.summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointFailureReason;

    fn stats(id: u64, status: CheckpointStatus) -> CheckpointStats {
        CheckpointStats {
            id,
            status,
            trigger_timestamp_ms: id,
            duration: Duration::from_millis(id),
            state_size: id,
            full_state_size: id,
            channel_state_size: 0,
            sync_duration: Duration::ZERO,
            async_duration: Duration::ZERO,
            alignment_duration: Duration::ZERO,
            acknowledged: (1, 1),
            unaligned: false,
            operators: BTreeMap::new(),
            is_savepoint: false,
            external_path: None,
            layout: Arc::from([TaskPosition {
                vertices: vec![0],
                subtask: 0,
            }]),
            acks: BTreeMap::from([(
                0,
                SubtaskAck {
                    ack_timestamp_ms: id,
                    state_size: id,
                    channel_state_size: 0,
                    sync_duration: Duration::ZERO,
                    async_duration: Duration::ZERO,
                    alignment_duration: Duration::ZERO,
                    unaligned: false,
                    operator_bytes: Vec::new(),
                },
            )]),
        }
    }

    #[test]
    fn the_history_is_bounded_but_its_latest_counts_and_summary_are_not() {
        let h = CheckpointHistory::default();
        for id in 1..=3 {
            h.end(stats(id, CheckpointStatus::Completed));
        }
        // More failures than the history holds.
        let failures = CHECKPOINT_HISTORY_LIMIT as u64 + 5;
        for id in 4..4 + failures {
            let reason = CheckpointFailureReason::Expired(Duration::from_secs(1));
            h.end(stats(id, CheckpointStatus::Failed(reason)));
        }
        let ended = h.ended();
        assert_eq!(ended.len(), CHECKPOINT_HISTORY_LIMIT);
        let with_acks = ended.iter().filter(|s| !s.acks.is_empty()).count();
        assert_eq!(
            with_acks, CHECKPOINT_HISTORY_DETAILS,
            "details only on the last"
        );
        let view = h.view();
        assert_eq!(view.recent.len(), CHECKPOINT_HISTORY_DETAILS);
        assert_eq!(view.counts.completed, 3);
        assert_eq!(view.counts.failed, failures);
        let latest = view.latest_completed.expect("kept past the window");
        assert_eq!(latest.id, 3);
        assert_eq!(latest.acks.len(), 1, "with its details");
        assert_eq!(view.latest_failed.map(|s| s.id), Some(3 + failures));
        let sizes = view.summary.state_size;
        assert_eq!(
            (sizes.min, sizes.max, sizes.avg(), sizes.count),
            (1, 3, 2, 3)
        );
    }
}
