//! The checkpoint coordinator (JobManager role): triggers checkpoints and
//! savepoints, collects acknowledgements, completes or aborts, counts
//! failures, and keeps the retained checkpoints and their shared files.
//!
//! The coordinator triggers checkpoint `n` at every source task; sources
//! inject barrier `n`; each task hands the synchronous part of its
//! operators' snapshots to the [`SnapshotUploader`](super::SnapshotUploader),
//! which encodes and writes them off the task thread and acknowledges to
//! the coordinator. When every task has acknowledged, the coordinator
//! writes the checkpoint's metadata last — a checkpoint without metadata
//! does not exist — and discards checkpoints beyond the number to retain,
//! oldest first, only after the newer one completed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use floe_checkpoint::{
    CheckpointConfig, CheckpointMetadata, METADATA_FORMAT_VERSION, OperatorSnapshotInfo,
    StateHandle,
};
use floe_core::{CheckpointBarrier, CheckpointKind};

use super::clock::{Clock, SystemClock};
use super::error::{CheckpointFailure, CheckpointFailureReason};
use super::messages::{CheckpointNotification, CoordinatorEvent, TaskCommand};
use super::savepoint::{
    DERIVED_UID_PREFIX, JobHandle, SavepointFailure, SavepointMode, SavepointRequest,
    SavepointStatus,
};
use super::shared_registry::SharedStateRegistry;
use super::stats::{CheckpointHistory, CheckpointStats, CheckpointStatus, SubtaskAck, TaskLayout};
use super::store::{CheckpointStore, read_checkpoint_metadata};
use super::targets::SnapshotTargets;

struct Pending {
    barrier: CheckpointBarrier,
    started: Instant,
    /// Each acknowledging task's report, by task index.
    acks: BTreeMap<usize, SubtaskAck>,
    metadata: CheckpointMetadata,
    bytes: u64,
    referenced_bytes: u64,
    channel_bytes: u64,
    sync: Duration,
    async_: Duration,
    alignment: Duration,
    unaligned: bool,
    operator_bytes: BTreeMap<String, u64>,
    /// For a savepoint: the request and where it is written.
    savepoint: Option<(SavepointRequest, Arc<floe_checkpoint::SavepointStorage>)>,
}

impl Pending {
    /// The statistics of this checkpoint as it ends with `status`.
    fn stats(
        &self,
        status: CheckpointStatus,
        layout: &TaskLayout,
        now: Instant,
    ) -> CheckpointStats {
        let mut stats = CheckpointStats {
            id: self.barrier.id,
            status,
            trigger_timestamp_ms: self.barrier.timestamp_ms,
            duration: Duration::ZERO,
            state_size: 0,
            full_state_size: 0,
            channel_state_size: 0,
            sync_duration: Duration::ZERO,
            async_duration: Duration::ZERO,
            alignment_duration: Duration::ZERO,
            acknowledged: (0, layout.len()),
            unaligned: false,
            operators: BTreeMap::new(),
            is_savepoint: self.savepoint.is_some(),
            external_path: None,
            layout: layout.clone(),
            acks: self.acks.clone(),
        };
        self.totals_into(&mut stats, now);
        stats
    }

    /// Writes what the acknowledgements so far add up to into `stats`
    /// (everything but the per-task acknowledgements themselves).
    fn totals_into(&self, stats: &mut CheckpointStats, now: Instant) {
        stats.duration = now.saturating_duration_since(self.started);
        stats.state_size = self.bytes;
        stats.full_state_size = self.bytes + self.referenced_bytes;
        stats.channel_state_size = self.channel_bytes;
        stats.sync_duration = self.sync;
        stats.async_duration = self.async_;
        stats.alignment_duration = self.alignment;
        stats.acknowledged.0 = self.acks.len();
        stats.unaligned = self.unaligned;
        stats.operators.clone_from(&self.operator_bytes);
    }
}

/// Forgets a run's checkpoints in flight when dropped.
struct ClearInProgress(CheckpointHistory);

impl Drop for ClearInProgress {
    fn drop(&mut self) {
        self.0.clear_in_progress();
    }
}

/// Triggers, collects and completes checkpoints for one job run.
pub struct CheckpointCoordinator<C: Clock = SystemClock> {
    /// Where the time comes from.
    clock: C,
    /// When the coordinator started: the first trigger is an interval later.
    started: Instant,
    settings: CheckpointConfig,
    /// Periodic checkpoints are on (otherwise only savepoints are taken).
    periodic: bool,
    store: Arc<SnapshotTargets>,
    /// The job: savepoint outcomes, cancel or stop after a savepoint
    /// (none in tests of checkpoints alone).
    job: Option<Arc<dyn JobHandle>>,
    /// What the metadata records about each operator, by uid.
    operator_info: BTreeMap<String, OperatorSnapshotInfo>,
    /// A stop with drain under way: its savepoint is the final checkpoint.
    drain: Option<SavepointRequest>,
    /// A stop with savepoint is under way: no periodic trigger meanwhile.
    stopping: bool,
    /// Every task's command channel, and whether it is a source (sources
    /// are triggered; every task is notified).
    tasks: Vec<(Sender<TaskCommand>, bool)>,
    /// Which operators and subtask each task runs, for the statistics.
    layout: TaskLayout,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    finished_tasks: HashSet<usize>,
    /// Once every task finished: the checkpoint taken after that, whose
    /// completion ends the job (two-phase-commit sinks commit their last
    /// transaction on its notification).
    final_checkpoint: Option<u64>,
    /// Tasks were told to exit: the job is ending, no savepoint can start.
    ending: bool,
    consecutive_failures: u32,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    /// Completed ids still retained, ascending.
    retained: Vec<u64>,
    /// Shared files each retained checkpoint references.
    retained_shared: HashMap<u64, Vec<StateHandle>>,
    /// Which shared files are still needed.
    shared_registry: SharedStateRegistry,
    /// Every checkpoint's statistics, in the order they ended.
    history: CheckpointHistory,
    /// Aborted checkpoints some task had not acknowledged: its upload may
    /// still write files after the abort, so they are removed again once
    /// the run's uploads are over.
    orphans: Vec<u64>,
}

/// Everything a coordinator starts from, apart from its clock.
///
/// One value instead of nine positional arguments, because the job manager
/// and the tests build it in different ways and a swapped `last_id` and
/// list of retained ids would still compile.
pub struct CoordinatorSetup {
    /// Interval, pause, timeout, concurrency, retention. Without an
    /// interval (checkpointing off) the coordinator only takes savepoints.
    pub settings: CheckpointConfig,
    /// Where checkpoints and savepoints are written and read.
    pub store: Arc<SnapshotTargets>,
    /// The job, told about completed checkpoints and failures; `None` in
    /// the coordinator's unit tests.
    pub job: Option<Arc<dyn JobHandle>>,
    /// What each snapshot's metadata records about the operators, by uid.
    pub operator_info: BTreeMap<String, OperatorSnapshotInfo>,
    /// Each task's command channel, with a flag for sources (which are the
    /// ones a barrier is injected into).
    pub tasks: Vec<(Sender<TaskCommand>, bool)>,
    /// Which operators and subtask each of `tasks` runs (same order).
    pub layout: TaskLayout,
    /// Ids continue after this one: ids are never reused within a job, so
    /// files of a checkpoint abandoned by a failed run cannot collide with
    /// a new one.
    pub last_id: u64,
    /// Completed checkpoints still retained from earlier runs, ascending;
    /// their shared files stay registered.
    pub retained: Vec<u64>,
    /// Statistics of every checkpoint, shared with the REST API.
    pub history: CheckpointHistory,
}

impl<C: Clock> CheckpointCoordinator<C> {
    /// A coordinator for one job run, started from `setup`. `clock`:
    /// [`SystemClock`] in a job, a hand-moved clock in tests.
    pub fn new(setup: CoordinatorSetup, clock: C) -> Self {
        let CoordinatorSetup {
            settings,
            store,
            job,
            operator_info,
            tasks,
            layout,
            last_id,
            retained,
            history,
        } = setup;
        // Rebuild the shared-state registry from the retained checkpoints
        // (a restarted run keeps their shared files and builds on them).
        let mut shared_registry =
            SharedStateRegistry::new(store.shared_state().map(|s| s.prefix()));
        let mut retained_shared = HashMap::new();
        for &id in &retained {
            let files = read_checkpoint_metadata(store.as_ref(), id).map(|m| m.shared_files());
            match files {
                Ok(files) => {
                    shared_registry.register(files.iter());
                    retained_shared.insert(id, files);
                }
                Err(e) => tracing::warn!(
                    checkpoint = id,
                    "cannot read a retained checkpoint's shared files: {e}"
                ),
            }
        }
        CheckpointCoordinator {
            started: clock.now(),
            clock,
            periodic: settings.is_checkpointing_enabled(),
            settings,
            store,
            retained_shared,
            shared_registry,
            job,
            operator_info,
            drain: None,
            stopping: false,
            tasks,
            layout,
            next_id: last_id + 1,
            pending: BTreeMap::new(),
            finished_tasks: HashSet::new(),
            final_checkpoint: None,
            ending: false,
            consecutive_failures: 0,
            last_trigger: None,
            last_completion: None,
            retained,
            history,
            orphans: Vec::new(),
        }
    }

    /// Aborted checkpoints and savepoints whose files a late upload may
    /// have written, with the targets that know where each one's files are;
    /// the job removes them once the run's uploaders have stopped.
    pub fn take_orphans(&mut self) -> (Vec<u64>, Arc<SnapshotTargets>) {
        (std::mem::take(&mut self.orphans), self.store.clone())
    }

    /// The newest checkpoint in flight.
    fn max_pending(&self) -> Option<u64> {
        self.pending.keys().next_back().copied()
    }

    /// Deletes the shared files that no retained or pending checkpoint can
    /// reference any more.
    fn delete_unreferenced_shared(&mut self) {
        let min_pending = self.pending.keys().next().copied();
        let deletable = self.shared_registry.take_deletable(min_pending);
        let Some(shared) = self.store.shared_state() else {
            // Nothing is deletable without a shared directory: the
            // registry owns no prefix then.
            return;
        };
        for f in deletable {
            if let Err(e) = shared.delete_shared(&f) {
                tracing::warn!("cannot delete unreferenced shared state {}: {e}", f.path);
            }
        }
    }

    /// The highest id triggered so far (or the id it started after).
    pub fn last_triggered(&self) -> u64 {
        self.next_id - 1
    }

    /// Checkpoints allowed in flight: one while a minimum pause applies
    /// (Flink's rule), else the configured maximum.
    fn max_concurrent(&self) -> usize {
        if self.settings.min_pause() > Duration::ZERO {
            1
        } else {
            (self.settings.max_concurrent_checkpoints() as usize).max(1)
        }
    }

    /// When the next periodic trigger is due (`None`: checkpointing is
    /// off).
    fn next_trigger(&self, started: Instant) -> Option<Instant> {
        let interval = self.settings.interval()?;
        let mut at = self
            .last_trigger
            .map_or(started + interval, |t| t + interval);
        if let Some(c) = self.last_completion {
            at = at.max(c + self.settings.min_pause());
        }
        Some(at)
    }

    fn record(&self, stats: CheckpointStats) {
        self.history.end(stats);
    }

    /// Publishes a checkpoint just triggered.
    fn publish_progress(&self, id: u64) {
        if let Some(p) = self.pending.get(&id) {
            let stats = p.stats(CheckpointStatus::InProgress, &self.layout, self.clock.now());
            self.history.progress(stats);
        }
    }

    fn notify(&self, n: CheckpointNotification) {
        for (tx, _) in &self.tasks {
            let _ = tx.send(TaskCommand::Notify(n));
        }
    }

    fn trigger(&mut self) {
        self.trigger_kind(CheckpointKind::Checkpoint, None);
    }

    fn trigger_kind(
        &mut self,
        kind: CheckpointKind,
        savepoint: Option<(SavepointRequest, Arc<floe_checkpoint::SavepointStorage>)>,
    ) {
        let barrier = CheckpointBarrier {
            id: self.next_id,
            timestamp_ms: self.clock.epoch_ms(),
            kind,
            last_completed: self.retained.last().copied(),
        };
        self.next_id += 1;
        if let Some((_, storage)) = &savepoint {
            self.store.register_savepoint(barrier.id, storage.clone());
        } else {
            self.last_trigger = Some(self.clock.now());
        }
        for (tx, is_source) in &self.tasks {
            if *is_source {
                let _ = tx.send(TaskCommand::TriggerCheckpoint(barrier));
            }
        }
        tracing::debug!(checkpoint = barrier.id, "checkpoint triggered");
        self.pending.insert(
            barrier.id,
            Pending {
                barrier,
                started: self.clock.now(),
                acks: BTreeMap::new(),
                metadata: CheckpointMetadata {
                    format_version: METADATA_FORMAT_VERSION,
                    checkpoint_id: barrier.id,
                    timestamp_ms: barrier.timestamp_ms,
                    is_savepoint: savepoint.is_some(),
                    operator_info: self.operator_info.clone(),
                    operators: BTreeMap::new(),
                },
                bytes: 0,
                referenced_bytes: 0,
                channel_bytes: 0,
                sync: Duration::ZERO,
                async_: Duration::ZERO,
                alignment: Duration::ZERO,
                unaligned: false,
                operator_bytes: BTreeMap::new(),
                savepoint,
            },
        );
        self.publish_progress(barrier.id);
    }

    /// Starts a savepoint request: a stop with drain first ends the input
    /// (the savepoint is taken once every task finished); any other is
    /// triggered at once, regardless of the checkpoints in flight.
    fn start_savepoint(&mut self, request: SavepointRequest) {
        let Some(job) = self.job.clone() else {
            return;
        };
        if self.ending {
            job.set_savepoint_status(
                &request.trigger,
                SavepointStatus::Failed {
                    reason: SavepointFailure::JobFinishing,
                },
            );
            return;
        }
        if let SavepointMode::Stop { drain: true } = request.mode {
            self.stopping = true;
            self.drain = Some(request);
            tracing::info!("stop with drain: ending the input of every source");
            for (tx, _) in &self.tasks {
                let _ = tx.send(TaskCommand::EndInput);
            }
            return;
        }
        let Some(storage) = Self::create_savepoint_dir(job.as_ref(), &request) else {
            return;
        };
        let kind = match request.mode {
            SavepointMode::Stop { .. } => {
                self.stopping = true;
                CheckpointKind::StopSavepoint
            }
            SavepointMode::Savepoint { .. } => CheckpointKind::Savepoint,
        };
        tracing::info!(
            checkpoint = self.next_id,
            "triggering savepoint into {}",
            storage.location()
        );
        self.trigger_kind(kind, Some((request, storage)));
    }

    /// Makes the savepoint's directory; a failure fails the request.
    fn create_savepoint_dir(
        job: &dyn JobHandle,
        request: &SavepointRequest,
    ) -> Option<Arc<floe_checkpoint::SavepointStorage>> {
        match floe_checkpoint::SavepointStorage::create(&request.target_directory, job.job_id()) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                job.set_savepoint_status(
                    &request.trigger,
                    SavepointStatus::Failed {
                        reason: SavepointFailure::DirectoryNotCreated(Arc::new(e)),
                    },
                );
                None
            }
        }
    }

    /// Starts the savepoint of a stop with drain, now that every task
    /// finished: it is the job's final checkpoint.
    fn start_drain_savepoint(&mut self, request: SavepointRequest) -> bool {
        let Some(job) = self.job.clone() else {
            return false;
        };
        let Some(storage) = Self::create_savepoint_dir(job.as_ref(), &request) else {
            return false;
        };
        self.trigger_kind(CheckpointKind::Savepoint, Some((request, storage)));
        true
    }

    /// Aborts pending checkpoint `id`: its files are removed and tasks are
    /// told. Whether it counts against the tolerable failures depends on
    /// `reason` ([`CheckpointFailureReason::counts_as_failure`]).
    fn abort(&mut self, id: u64, reason: CheckpointFailureReason) -> Result<(), CheckpointFailure> {
        let counts = reason.counts_as_failure();
        let Some(p) = self.pending.remove(&id) else {
            return Ok(());
        };
        if self.final_checkpoint == Some(id) {
            // Taken again right away.
            self.final_checkpoint = None;
        }
        if counts {
            tracing::warn!(checkpoint = id, "checkpoint failed: {reason}");
        } else {
            tracing::debug!(checkpoint = id, "checkpoint aborted: {reason}");
        }
        if let Err(e) = self.store.discard_incomplete(id) {
            tracing::warn!(
                checkpoint = id,
                "cannot remove the files of an aborted checkpoint: {e}"
            );
        }
        let shared = p.metadata.shared_files();
        self.shared_registry
            .release(shared.iter(), self.max_pending().max(Some(id)));
        self.delete_unreferenced_shared();
        if p.acks.len() < self.tasks.len() {
            self.orphans.push(id);
        }
        self.record(p.stats(
            CheckpointStatus::Failed(reason.clone()),
            &self.layout,
            self.clock.now(),
        ));
        // Sources paused by a failed stop resume on this notification.
        self.notify(CheckpointNotification::Aborted(id));
        if let Some((request, _)) = &p.savepoint {
            if let Some(job) = &self.job {
                job.set_savepoint_status(
                    &request.trigger,
                    SavepointStatus::Failed {
                        reason: SavepointFailure::CheckpointFailed {
                            checkpoint_id: id,
                            reason: reason.clone(),
                        },
                    },
                );
            }
            if let SavepointMode::Stop { drain } = request.mode {
                self.stopping = false;
                if drain {
                    // The input has ended already: the job cannot go on.
                    return Err(CheckpointFailure::DrainSavepointFailed(reason));
                }
            }
            // A failed savepoint never fails the job.
            return Ok(());
        }
        if !counts {
            return Ok(());
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failed_checkpoints() {
            return Err(CheckpointFailure::TooManyFailures {
                checkpoint_id: id,
                reason,
                failures: self.consecutive_failures,
                tolerable: self.settings.tolerable_failed_checkpoints(),
            });
        }
        Ok(())
    }

    fn complete(&mut self, id: u64) -> Result<(), CheckpointFailure> {
        let mut p = self
            .pending
            .remove(&id)
            .expect("completing a pending checkpoint");
        // Shared files this checkpoint references rather than uploads
        // carry the checksum of the checkpoint that uploaded them.
        for f in p
            .metadata
            .operators
            .values_mut()
            .flatten()
            .flat_map(|s| s.shared.iter_mut())
            .filter(|f| f.checksum.is_none())
        {
            f.checksum = self.shared_registry.checksum_of(&f.path);
        }
        if let Err(e) = self.store.complete(id, &p.metadata.encode()) {
            self.pending.insert(id, p);
            return self.abort(id, CheckpointFailureReason::Finalize(Arc::new(e)));
        }
        if let Some((request, storage)) = &p.savepoint {
            return self.complete_savepoint(id, &p, request.clone(), storage.location());
        }
        self.consecutive_failures = 0;
        self.last_completion = Some(self.clock.now());
        let shared = p.metadata.shared_files();
        self.shared_registry.register(shared.iter());
        self.retained_shared.insert(id, shared);
        let mut stats = p.stats(CheckpointStatus::Completed, &self.layout, self.clock.now());
        stats.external_path = self.store.location(id);
        tracing::info!(
            checkpoint = id,
            bytes = stats.state_size,
            channel_bytes = stats.channel_state_size,
            duration_ms = stats.duration.as_millis() as u64,
            sync_ms = stats.sync_duration.as_millis() as u64,
            async_ms = stats.async_duration.as_millis() as u64,
            alignment_ms = stats.alignment_duration.as_millis() as u64,
            "checkpoint completed"
        );
        self.record(stats);
        // Older pending checkpoints are subsumed: not failures.
        // Savepoints in flight are the user's requests: never subsumed.
        let older: Vec<u64> = self
            .pending
            .range(..id)
            .filter(|(_, p)| p.savepoint.is_none())
            .map(|(k, _)| *k)
            .collect();
        for o in older {
            self.abort(o, CheckpointFailureReason::Subsumed(id))?;
        }
        self.retained.push(id);
        while self.retained.len() > (self.settings.num_retained() as usize).max(1) {
            let old = self.retained.remove(0);
            match self.store.discard(old) {
                Err(e) => {
                    // Its metadata may still be there: keep its shared files.
                    tracing::warn!(checkpoint = old, "cannot discard subsumed checkpoint: {e}");
                }
                Ok(()) => {
                    if let Some(files) = self.retained_shared.remove(&old) {
                        let max_pending = self.max_pending();
                        self.shared_registry.unregister(files.iter(), max_pending);
                    }
                }
            }
        }
        self.delete_unreferenced_shared();
        floe_core::failpoint::hit("checkpoint.after-metadata");
        self.notify(CheckpointNotification::Complete(id));
        if self.final_checkpoint.is_some_and(|f| f <= id) && p.savepoint.is_none() {
            tracing::debug!(
                checkpoint = id,
                "final checkpoint completed; ending the job"
            );
            self.terminate_tasks();
        }
        Ok(())
    }

    /// Tells every task to exit: the job ends.
    fn terminate_tasks(&mut self) {
        self.ending = true;
        for (tx, _) in &self.tasks {
            let _ = tx.send(TaskCommand::Terminate);
        }
    }

    /// A savepoint's `_metadata` is written. An intermediate savepoint has
    /// no side effects (tasks are not notified, as in Flink since 1.15); a
    /// stop's savepoint commits them and ends the job.
    fn complete_savepoint(
        &mut self,
        id: u64,
        p: &Pending,
        request: SavepointRequest,
        location: &str,
    ) -> Result<(), CheckpointFailure> {
        let mut stats = p.stats(CheckpointStatus::Completed, &self.layout, self.clock.now());
        stats.external_path = Some(location.to_string());
        tracing::info!(
            checkpoint = id,
            bytes = stats.state_size,
            duration_ms = stats.duration.as_millis() as u64,
            "savepoint completed: {location}"
        );
        self.record(stats);
        let derived: Vec<&str> = p
            .metadata
            .operators
            .keys()
            .filter(|u| u.starts_with(DERIVED_UID_PREFIX))
            .map(String::as_str)
            .collect();
        if !derived.is_empty() {
            tracing::warn!(
                "savepoint {id} holds state of operators without an explicit uid ({}): their uids are derived from the job graph and change when it changes, so set uid(..) on them to restore this state after an upgrade",
                derived.join(", ")
            );
        }
        let Some(job) = self.job.clone() else {
            return Ok(());
        };
        job.set_savepoint_status(
            &request.trigger,
            SavepointStatus::Completed {
                location: location.to_string(),
            },
        );
        match request.mode {
            SavepointMode::Savepoint { cancel_job } => {
                if cancel_job {
                    tracing::info!("cancelling the job after savepoint {id}");
                    job.cancel();
                }
            }
            SavepointMode::Stop { .. } => {
                job.mark_stopped();
                floe_core::failpoint::hit("checkpoint.after-metadata");
                self.notify(CheckpointNotification::Complete(id));
                tracing::info!("stop with savepoint {id} completed; ending the job");
                self.terminate_tasks();
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: CoordinatorEvent) -> Result<bool, CheckpointFailure> {
        match event {
            CoordinatorEvent::Ack {
                checkpoint_id,
                task,
                states,
                bytes,
                stats,
            } => {
                let Some(p) = self.pending.get_mut(&checkpoint_id) else {
                    // A late acknowledgement of a checkpoint aborted
                    // meanwhile (expired, declined): what it just wrote
                    // must not outlive the abort.
                    if !self.retained.contains(&checkpoint_id) {
                        let _ = self.store.discard_incomplete(checkpoint_id);
                        let shared: Vec<StateHandle> =
                            states.iter().flat_map(|(_, m)| m.shared.clone()).collect();
                        self.shared_registry
                            .release(shared.iter(), self.max_pending());
                        self.delete_unreferenced_shared();
                    }
                    return Ok(true);
                };
                let ack = SubtaskAck {
                    ack_timestamp_ms: self.clock.epoch_ms(),
                    state_size: bytes,
                    channel_state_size: stats.channel_bytes,
                    sync_duration: stats.sync,
                    async_duration: stats.async_,
                    alignment_duration: stats.alignment,
                    unaligned: stats.unaligned,
                    operator_bytes: stats.operator_bytes.clone(),
                };
                p.acks.insert(task, ack.clone());
                p.bytes += bytes;
                p.referenced_bytes += stats.referenced_bytes;
                p.channel_bytes += stats.channel_bytes;
                p.sync = p.sync.max(stats.sync);
                p.async_ = p.async_.max(stats.async_);
                p.alignment = p.alignment.max(stats.alignment);
                p.unaligned |= stats.unaligned;
                for (uid, b) in stats.operator_bytes {
                    *p.operator_bytes.entry(uid).or_default() += b;
                }
                for (uid, meta) in states {
                    p.metadata.operators.entry(uid).or_default().push(meta);
                }
                if p.acks.len() == self.tasks.len() {
                    self.complete(checkpoint_id)?;
                } else {
                    // In place: one acknowledgement more, not a copy of
                    // all of them per acknowledgement.
                    let now = self.clock.now();
                    self.history.update_in_progress(checkpoint_id, |s| {
                        s.acks.insert(task, ack);
                        p.totals_into(s, now);
                    });
                }
            }
            CoordinatorEvent::Decline {
                checkpoint_id,
                task,
                reason,
            } => self.abort(
                checkpoint_id,
                CheckpointFailureReason::Declined {
                    task,
                    source: Arc::new(reason),
                },
            )?,
            CoordinatorEvent::TaskFinished(task) => {
                self.finished_tasks.insert(task);
            }
            CoordinatorEvent::TriggerSavepoint(request) => self.start_savepoint(request),
            CoordinatorEvent::Shutdown => {
                let pending: Vec<u64> = self.pending.keys().copied().collect();
                for id in pending {
                    self.abort(id, CheckpointFailureReason::RunEnded)?;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs until shutdown; returns an error when checkpoint failures exceed
    /// the tolerable number (the job must fail over).
    pub fn run(&mut self, events: &Receiver<CoordinatorEvent>) -> Result<(), CheckpointFailure> {
        // Whatever is still in flight ends with the run, even if the loop
        // panics.
        let _in_flight = ClearInProgress(self.history.clone());
        let result = self.run_loop(events);
        self.fail_outstanding_savepoints(match &result {
            Ok(()) => SavepointFailure::RunEnded,
            Err(f) => SavepointFailure::RunFailed(f.clone()),
        });
        result
    }

    /// Fails every savepoint request still open when the run ends (pending
    /// ones and a drain waiting for its tasks), so no request stays in
    /// progress and the job can be stopped again after a restart.
    fn fail_outstanding_savepoints(&mut self, reason: SavepointFailure) {
        let Some(job) = self.job.clone() else {
            return;
        };
        let open: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.savepoint.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            if let Some((request, _)) = &p.savepoint {
                job.set_savepoint_status(
                    &request.trigger,
                    SavepointStatus::Failed {
                        reason: reason.clone(),
                    },
                );
            }
            if let Err(e) = self.store.discard_incomplete(id) {
                tracing::warn!(checkpoint = id, "cannot remove an aborted savepoint: {e}");
            }
            self.orphans.push(id);
        }
        if let Some(request) = self.drain.take() {
            job.set_savepoint_status(&request.trigger, SavepointStatus::Failed { reason });
        }
    }

    fn run_loop(&mut self, events: &Receiver<CoordinatorEvent>) -> Result<(), CheckpointFailure> {
        loop {
            let wait = self.poll()?;
            select! {
                recv(events) -> e => match e {
                    Ok(e) => if !self.on_event(e)? { return Ok(()) },
                    Err(_) => return Ok(()),
                },
                default(wait) => {}
            }
        }
    }

    /// Takes every decision that is due now (expire, trigger, end the job)
    /// and returns how long to wait for events before the next one may be.
    /// The run loop alternates it with [`Self::on_event`]; tests call both
    /// directly, with a clock they move.
    fn poll(&mut self) -> Result<Duration, CheckpointFailure> {
        // Bounded, for the timeout check, when no trigger is due sooner.
        const IDLE_POLL: Duration = Duration::from_millis(50);
        loop {
            let now = self.clock.now();
            // Timeouts.
            let expired: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| now.duration_since(p.started) >= self.settings.timeout())
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.abort(
                    id,
                    CheckpointFailureReason::Expired(self.settings.timeout()),
                )?;
            }
            let due = self.next_trigger(self.started);
            // Every task finished: the final checkpoint is due at once (its
            // state is the end state of the job, and its completion lets
            // side effects held for checkpoints go out). After a stop with
            // drain, it is the stop's savepoint.
            let all_finished = self.finished_tasks.len() == self.tasks.len();
            if all_finished && self.final_checkpoint.is_none() {
                if let Some(request) = self.drain.take() {
                    if self.start_drain_savepoint(request) {
                        self.final_checkpoint = Some(self.last_triggered());
                    } else {
                        return Err(CheckpointFailure::DrainSavepointNotStarted);
                    }
                    continue;
                }
            }
            // Without checkpointing nothing waits for a final checkpoint:
            // once every task finished and no savepoint is in flight, the
            // job ends.
            if !self.periodic
                && all_finished
                && !self.ending
                && self.pending.is_empty()
                && self.final_checkpoint.is_none()
            {
                tracing::debug!("every task finished; ending the job");
                self.terminate_tasks();
                continue;
            }
            let final_due = self.periodic && all_finished && self.final_checkpoint.is_none();
            let periodic_due = !self.stopping && due.is_some_and(|due| now >= due);
            if (periodic_due || final_due) && self.pending.len() < self.max_concurrent() {
                self.trigger();
                if final_due {
                    self.final_checkpoint = Some(self.last_triggered());
                }
                continue;
            }
            // Sleep until the next trigger only when one may happen; with
            // checkpointing off, while the job ends, or while the allowed
            // number of checkpoints is in flight, wait for events instead
            // of spinning on a past due time.
            let may_trigger = self.periodic
                && !self.stopping
                && !self.ending
                && self.pending.len() < self.max_concurrent();
            return Ok(match due {
                Some(due) if may_trigger => due.saturating_duration_since(now).min(IDLE_POLL),
                _ => IDLE_POLL,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    //! The coordinator's decisions, driven directly: a clock the test
    //! moves, an in-memory store, and a fake task side (the tasks' command
    //! channels, and acknowledgements sent as the uploader would).

    use std::sync::Mutex;

    use crossbeam_channel::Receiver;
    use floe_checkpoint::SubtaskStateMeta;

    use super::super::error::StoreError;
    use super::super::messages::CoordinatorEvent;
    use super::super::stats::{AckStats, TaskPosition};
    use super::super::store::StateFileKind;
    use super::super::testing::MemoryStore;
    use super::*;

    /// A clock that moves only when the test says.
    #[derive(Clone)]
    struct ManualClock {
        base: Instant,
        offset: Arc<Mutex<Duration>>,
    }

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.base + *self.offset.lock().unwrap()
        }

        fn epoch_ms(&self) -> u64 {
            self.offset.lock().unwrap().as_millis() as u64
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// A coordinator over two tasks: task 0 a source, task 1 not.
    struct Harness {
        c: CheckpointCoordinator<ManualClock>,
        clock: ManualClock,
        store: Arc<MemoryStore>,
        tasks: Vec<Receiver<TaskCommand>>,
        history: CheckpointHistory,
    }

    fn harness(config: CheckpointConfig) -> Harness {
        harness_over(config, Arc::new(MemoryStore::default()))
    }

    fn harness_over(config: CheckpointConfig, store: Arc<MemoryStore>) -> Harness {
        let clock = ManualClock {
            base: Instant::now(),
            offset: Arc::default(),
        };
        let (senders, tasks): (Vec<_>, Vec<_>) = [true, false]
            .into_iter()
            .map(|is_source| {
                let (tx, rx) = crossbeam_channel::unbounded();
                ((tx, is_source), rx)
            })
            .unzip();
        let history = CheckpointHistory::default();
        let retained = store.completed().unwrap();
        let last_id = retained.last().copied().unwrap_or(0);
        let c = CheckpointCoordinator::new(
            CoordinatorSetup {
                settings: config,
                store: Arc::new(SnapshotTargets::new(Some(store.clone()))),
                job: None,
                operator_info: BTreeMap::new(),
                tasks: senders,
                layout: [0, 1]
                    .map(|v| TaskPosition {
                        vertices: vec![v],
                        subtask: 0,
                    })
                    .into(),
                last_id,
                retained,
                history: history.clone(),
            },
            clock.clone(),
        );
        Harness {
            c,
            clock,
            store,
            tasks,
            history,
        }
    }

    fn every(interval_ms: u32) -> CheckpointConfig {
        CheckpointConfig::default().with_interval(Some(MS * interval_ms))
    }

    impl Harness {
        /// Moves the clock and lets the coordinator decide.
        fn at(&mut self, by: Duration) -> Result<Duration, CheckpointFailure> {
            self.clock.advance(by);
            self.c.poll()
        }

        /// The checkpoints the source was told to take since last asked.
        fn triggered(&self) -> Vec<u64> {
            self.tasks[0]
                .try_iter()
                .filter_map(|c| match c {
                    TaskCommand::TriggerCheckpoint(b) => Some(b.id),
                    _ => None,
                })
                .collect()
        }

        /// What task `task` was told about outcomes since last asked.
        fn notified(&self, task: usize) -> Vec<CheckpointNotification> {
            self.tasks[task]
                .try_iter()
                .filter_map(|c| match c {
                    TaskCommand::Notify(n) => Some(n),
                    _ => None,
                })
                .collect()
        }

        /// Task `task` writes its state for checkpoint `id` and
        /// acknowledges, as the uploader would.
        fn ack(&mut self, id: u64, task: usize) -> Result<bool, CheckpointFailure> {
            let file = self
                .store
                .write_state(
                    id,
                    &format!("op-{task}"),
                    StateFileKind::Keyed,
                    4,
                    &mut |out| {
                        out.extend_from_slice(b"keys");
                        Ok(())
                    },
                )
                .unwrap();
            self.c.on_event(CoordinatorEvent::Ack {
                checkpoint_id: id,
                task,
                bytes: file.size,
                states: vec![(
                    "op".into(),
                    SubtaskStateMeta {
                        subtask: task as u32,
                        keyed: Some(file),
                        raw: None,
                        operator: None,
                        channel: None,
                        keyed_native: None,
                        shared: Vec::new(),
                    },
                )],
                stats: AckStats::default(),
            })
        }

        /// Every task acknowledges checkpoint `id`.
        fn complete(&mut self, id: u64) -> Result<(), CheckpointFailure> {
            self.ack(id, 0)?;
            self.ack(id, 1)?;
            Ok(())
        }

        fn decline(&mut self, id: u64) -> Result<bool, CheckpointFailure> {
            self.c.on_event(CoordinatorEvent::Decline {
                checkpoint_id: id,
                task: 1,
                reason: StoreError::Other("disk full".into()),
            })
        }

        fn status(&self, id: u64) -> Option<CheckpointStatus> {
            let view = self.history.view();
            view.recent
                .iter()
                .chain(&view.in_progress)
                .find(|s| s.id == id)
                .map(|s| s.status.clone())
        }

        fn completed(&self) -> Vec<u64> {
            self.store.completed().unwrap()
        }
    }

    #[test]
    fn a_checkpoint_in_flight_shows_which_tasks_acknowledged() {
        let mut h = harness(every(100));
        h.at(100 * MS).unwrap();
        assert_eq!(h.status(1), Some(CheckpointStatus::InProgress));
        assert!(h.history.view().in_progress[0].acks.is_empty());
        h.clock.advance(7 * MS);
        h.ack(1, 0).unwrap();
        let view = h.history.view();
        let [p] = &view.in_progress[..] else {
            panic!("one checkpoint in flight: {:?}", view.in_progress);
        };
        assert_eq!(p.acknowledged, (1, 2));
        assert_eq!(p.vertex_acks(0), (1, 1), "the source acknowledged");
        assert_eq!(p.vertex_acks(1), (0, 1), "the other task did not");
        assert_eq!(p.acks[&0].ack_timestamp_ms, 107, "the coordinator's clock");
        h.ack(1, 1).unwrap();
        let view = h.history.view();
        assert!(
            view.in_progress.is_empty(),
            "completed: no longer in flight"
        );
        assert_eq!(view.recent[0].acks.len(), 2);
        assert_eq!(view.counts.completed, 1);
    }

    #[test]
    fn triggers_every_interval_and_completes_when_every_task_acknowledged() {
        let mut h = harness(every(100));
        assert_eq!(h.at(Duration::ZERO).unwrap(), 50 * MS, "bounded wait");
        assert!(h.triggered().is_empty());
        assert_eq!(h.at(99 * MS).unwrap(), MS, "wakes when the trigger is due");
        h.at(MS).unwrap();
        assert_eq!(h.triggered(), vec![1]);
        assert!(h.tasks[1].try_recv().is_err(), "only sources are triggered");
        h.ack(1, 0).unwrap();
        assert!(h.completed().is_empty(), "one task acknowledged of two");
        h.ack(1, 1).unwrap();
        assert_eq!(h.completed(), vec![1]);
        assert_eq!(h.status(1), Some(CheckpointStatus::Completed));
        for task in 0..2 {
            assert_eq!(h.notified(task), vec![CheckpointNotification::Complete(1)]);
        }
        h.at(100 * MS).unwrap();
        assert_eq!(h.triggered(), vec![2], "ids are never reused");
    }

    #[test]
    fn max_concurrent_bounds_the_checkpoints_in_flight() {
        let mut h = harness(every(100).with_max_concurrent_checkpoints(2));
        h.at(100 * MS).unwrap();
        h.at(100 * MS).unwrap();
        h.at(100 * MS).unwrap();
        assert_eq!(h.triggered(), vec![1, 2], "a third waits");
        h.complete(1).unwrap();
        h.at(Duration::ZERO).unwrap();
        assert_eq!(h.triggered(), vec![3], "due since, and now allowed");
    }

    #[test]
    fn min_pause_separates_a_completion_from_the_next_trigger() {
        // A pause also means one checkpoint at a time, whatever the
        // maximum (Flink's rule).
        let mut h = harness(
            every(100)
                .with_min_pause(300 * MS)
                .with_max_concurrent_checkpoints(3),
        );
        h.at(100 * MS).unwrap();
        assert_eq!(h.triggered(), vec![1]);
        h.at(100 * MS).unwrap();
        assert!(h.triggered().is_empty(), "one in flight under a pause");
        h.clock.advance(50 * MS);
        h.complete(1).unwrap(); // at 250 ms
        assert_eq!(h.at(Duration::ZERO).unwrap(), 50 * MS);
        h.at(299 * MS).unwrap();
        assert!(h.triggered().is_empty(), "the pause runs until 550 ms");
        h.at(MS).unwrap();
        assert_eq!(h.triggered(), vec![2]);
    }

    #[test]
    fn a_completion_subsumes_older_pending_checkpoints_without_counting_them() {
        // No failure tolerated: a subsumed checkpoint must not count.
        let mut h = harness(every(100).with_max_concurrent_checkpoints(2));
        h.at(100 * MS).unwrap();
        h.at(100 * MS).unwrap();
        assert_eq!(h.triggered(), vec![1, 2]);
        h.ack(1, 0).unwrap();
        h.complete(2).unwrap();
        assert_eq!(h.completed(), vec![2]);
        assert_eq!(
            h.status(1),
            Some(CheckpointStatus::Failed(CheckpointFailureReason::Subsumed(
                2
            )))
        );
        assert!(h.store.files_of(1).is_empty(), "its files are removed");
        assert_eq!(
            h.notified(1),
            vec![
                CheckpointNotification::Aborted(1),
                CheckpointNotification::Complete(2)
            ]
        );
        // A late acknowledgement of the subsumed one changes nothing.
        assert!(h.ack(1, 1).unwrap());
        assert_eq!(h.completed(), vec![2]);
        assert!(h.store.files_of(1).is_empty());
    }

    #[test]
    fn the_oldest_retained_checkpoint_goes_only_after_a_newer_one_completed() {
        let mut h = harness(every(100).with_num_retained(2));
        for id in 1..=2 {
            h.at(100 * MS).unwrap();
            h.complete(id).unwrap();
        }
        assert_eq!(h.completed(), vec![1, 2]);
        h.at(100 * MS).unwrap();
        h.ack(3, 0).unwrap();
        assert_eq!(h.completed(), vec![1, 2], "3 is not complete yet");
        h.ack(3, 1).unwrap();
        assert_eq!(h.completed(), vec![2, 3]);
        assert!(h.store.files_of(1).is_empty());
        assert_eq!(h.store.files_of(2).len(), 2);
    }

    #[test]
    fn retained_checkpoints_of_a_previous_run_count_towards_the_number_kept() {
        let store = Arc::new(MemoryStore::default());
        let mut first = harness_over(every(100), store.clone());
        first.at(100 * MS).unwrap();
        first.complete(1).unwrap();
        // The next run continues the ids and discards 1 once 2 completed.
        let mut h = harness_over(every(100), store);
        h.at(100 * MS).unwrap();
        assert_eq!(h.triggered(), vec![2]);
        h.complete(2).unwrap();
        assert_eq!(h.completed(), vec![2]);
    }

    #[test]
    fn tolerable_failed_checkpoints_counts_consecutive_failures_like_flink() {
        let mut h = harness(every(100).with_tolerable_failed_checkpoints(2));
        for id in 1..=2 {
            h.at(100 * MS).unwrap();
            h.decline(id).unwrap();
        }
        // A completion resets the count.
        h.at(100 * MS).unwrap();
        h.complete(3).unwrap();
        for id in 4..=5 {
            h.at(100 * MS).unwrap();
            h.decline(id).unwrap();
        }
        h.at(100 * MS).unwrap();
        let err = h.decline(6).unwrap_err();
        match &err {
            CheckpointFailure::TooManyFailures {
                checkpoint_id: 6,
                failures: 3,
                tolerable: 2,
                reason: CheckpointFailureReason::Declined { task: 1, source },
            } => assert!(matches!(**source, StoreError::Other(_))),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    #[test]
    fn a_checkpoint_past_its_timeout_expires_and_counts_as_a_failure() {
        let mut h = harness(
            every(100)
                .with_timeout(Duration::from_secs(1))
                .with_tolerable_failed_checkpoints(1),
        );
        h.at(100 * MS).unwrap();
        h.ack(1, 0).unwrap();
        h.at(999 * MS).unwrap();
        assert_eq!(h.status(1), Some(CheckpointStatus::InProgress), "not yet");
        h.at(MS).unwrap();
        assert_eq!(
            h.status(1),
            Some(CheckpointStatus::Failed(CheckpointFailureReason::Expired(
                Duration::from_secs(1)
            )))
        );
        assert!(h.store.files_of(1).is_empty(), "its files are removed");
        assert_eq!(h.notified(1), vec![CheckpointNotification::Aborted(1)]);
        // Task 1 had not acknowledged: its upload may still write files,
        // so the id is an orphan the job removes after the run.
        assert_eq!(h.c.take_orphans().0, vec![1]);
        // The second expiry in a row exceeds the one tolerated.
        let mut tries = 0;
        let err = loop {
            tries += 1;
            assert!(tries < 100, "never failed");
            if let Err(e) = h.at(100 * MS) {
                break e;
            }
        };
        assert!(
            matches!(err, CheckpointFailure::TooManyFailures { failures: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_late_acknowledgement_of_an_expired_checkpoint_is_ignored_and_its_files_removed() {
        let mut h = harness(
            every(100)
                .with_timeout(Duration::from_millis(500))
                .with_tolerable_failed_checkpoints(5),
        );
        h.at(100 * MS).unwrap();
        h.ack(1, 0).unwrap();
        h.at(500 * MS).unwrap();
        assert!(matches!(h.status(1), Some(CheckpointStatus::Failed(_))));
        // Task 1's upload finishes after the abort: what it wrote goes.
        assert!(h.ack(1, 1).unwrap());
        assert!(h.completed().is_empty(), "never completed");
        assert!(h.store.files_of(1).is_empty(), "{:?}", h.store.files_of(1));
    }

    #[test]
    fn a_metadata_write_failure_fails_the_checkpoint_and_leaves_no_orphan() {
        let store = Arc::new(MemoryStore::default());
        store.fail_complete.lock().unwrap().insert(1);
        let mut h = harness_over(every(100).with_tolerable_failed_checkpoints(1), store);
        h.at(100 * MS).unwrap();
        h.complete(1).unwrap();
        assert!(matches!(
            h.status(1),
            Some(CheckpointStatus::Failed(CheckpointFailureReason::Finalize(
                _
            )))
        ));
        assert!(h.store.files_of(1).is_empty());
        assert!(
            h.c.take_orphans().0.is_empty(),
            "every task acknowledged: no upload can still write"
        );
    }

    #[test]
    fn the_end_of_a_run_aborts_pending_checkpoints_without_counting_them() {
        let mut h = harness(every(100));
        h.at(100 * MS).unwrap();
        assert!(!h.c.on_event(CoordinatorEvent::Shutdown).unwrap());
        assert_eq!(
            h.status(1),
            Some(CheckpointStatus::Failed(CheckpointFailureReason::RunEnded))
        );
        assert_eq!(h.c.take_orphans().0, vec![1]);
    }

    #[test]
    fn without_an_interval_nothing_is_triggered_and_finished_tasks_end_the_job() {
        let mut h = harness(CheckpointConfig::default());
        h.at(Duration::from_secs(3600)).unwrap();
        assert!(h.triggered().is_empty());
        h.c.on_event(CoordinatorEvent::TaskFinished(0)).unwrap();
        h.c.on_event(CoordinatorEvent::TaskFinished(1)).unwrap();
        h.at(Duration::ZERO).unwrap();
        assert!(
            h.tasks[1]
                .try_iter()
                .any(|c| matches!(c, TaskCommand::Terminate))
        );
    }
}
