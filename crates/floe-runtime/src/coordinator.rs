//! The checkpoint coordinator (JobManager role) and the asynchronous part of
//! snapshots (TaskManager role).
//!
//! The coordinator triggers checkpoint `n` at every source task; sources
//! inject barrier `n`; each task hands the synchronous part of its
//! operators' snapshots to the [`SnapshotUploader`], which encodes and
//! writes them off the task thread and acknowledges to the coordinator.
//! When every task has acknowledged, the coordinator writes the checkpoint's
//! metadata last — a checkpoint without metadata does not exist — and
//! discards checkpoints beyond the number to retain, oldest first, only
//! after the newer one completed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use floe_core::{CheckpointBarrier, CheckpointKind};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    AlignmentMode, OperatorRestore, OperatorState, RestoredState, TaskCommand, TaskSnapshot,
};

/// Where checkpoint files go; implemented over object stores by
/// `floe-checkpoint`, and in memory for tests.
pub trait CheckpointStore: Send + Sync {
    /// Writes one state file of checkpoint `checkpoint_id`.
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        payload: &[u8],
    ) -> Result<StateFile, String>;
    /// Reads a state file back (verifying it).
    fn read_state(&self, file: &StateFile) -> Result<Vec<u8>, String>;
    /// Writes the metadata last and atomically: the checkpoint now exists.
    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), String>;
    /// Reads a completed checkpoint's metadata.
    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, String>;
    /// Deletes everything of checkpoint `checkpoint_id`.
    fn discard(&self, checkpoint_id: u64) -> Result<(), String>;
    /// Ids of completed checkpoints, ascending.
    fn completed(&self) -> Result<Vec<u64>, String>;
}

/// A written state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Path relative to the job's checkpoint directory.
    pub path: String,
    /// Bytes written.
    pub size: u64,
}

/// One operator subtask's entry in a checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskStateMeta {
    /// The subtask index.
    pub subtask: u32,
    /// Its keyed state file.
    pub keyed: Option<StateFile>,
    /// Small raw state (a source position), inlined.
    pub raw: Option<Vec<u8>>,
}

/// The `_metadata` of a completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// When it was triggered (ms since the epoch).
    pub timestamp_ms: u64,
    /// Per operator uid, per subtask.
    pub operators: BTreeMap<String, Vec<SubtaskStateMeta>>,
}

impl CheckpointMetadata {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("metadata is serializable")
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("invalid checkpoint metadata: {e}"))
    }

    /// Loads every state file into what operators restore from.
    pub fn load(&self, store: &dyn CheckpointStore) -> Result<RestoredState, String> {
        let mut restored = RestoredState {
            checkpoint_id: self.checkpoint_id,
            ..Default::default()
        };
        for (uid, subtasks) in &self.operators {
            let mut op = OperatorRestore::default();
            for s in subtasks {
                if let Some(f) = &s.keyed {
                    op.keyed.push(Arc::new(store.read_state(f)?));
                }
                if let Some(raw) = &s.raw {
                    op.raw.insert(s.subtask, Arc::new(raw.clone()));
                }
            }
            restored.operators.insert(uid.clone(), op);
        }
        Ok(restored)
    }
}

/// Checkpoint settings the coordinator applies (Flink's `CheckpointConfig`).
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// Time between triggers.
    pub interval: Duration,
    /// Aligned (exactly-once) or not (at-least-once).
    pub alignment: AlignmentMode,
    /// A checkpoint not complete by then is aborted.
    pub timeout: Duration,
    /// Least time between a completion and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated before the job fails over.
    pub tolerable_failures: u32,
    /// Completed checkpoints kept.
    pub num_retained: usize,
    /// Keep the checkpoints when the job is cancelled (they are always kept
    /// when it fails, and always discarded when it finishes).
    pub retain_on_cancellation: bool,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            interval: Duration::from_secs(1),
            alignment: AlignmentMode::Aligned,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            num_retained: 1,
            retain_on_cancellation: false,
        }
    }
}

/// What happened to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Metadata written.
    Completed,
    /// Given up (timeout, a task declined, a task finished, storage error).
    Failed(String),
}

/// Statistics of one checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// Completed or failed.
    pub status: CheckpointStatus,
    /// Trigger time (ms since the epoch).
    pub trigger_timestamp_ms: u64,
    /// Trigger to completion.
    pub duration: Duration,
    /// Bytes of state files written.
    pub state_size: u64,
}

/// Events the coordinator reacts to.
pub enum CoordinatorEvent {
    /// A task's snapshot was written.
    Ack {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The task.
        task: usize,
        /// Its operators' entries.
        states: Vec<(String, SubtaskStateMeta)>,
        /// Bytes written.
        bytes: u64,
    },
    /// A task could not take or write its snapshot.
    Decline {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
    /// A task ended: no checkpoint including it can complete any more.
    TaskFinished(usize),
    /// The job is over: stop.
    Shutdown,
}

/// Encodes and writes task snapshots off the task threads, then acknowledges.
pub struct SnapshotUploader;

impl SnapshotUploader {
    /// Starts `threads` upload threads reading `snapshots`.
    pub fn start(
        threads: usize,
        snapshots: Receiver<(usize, TaskSnapshot)>,
        store: Arc<dyn CheckpointStore>,
        events: Sender<CoordinatorEvent>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..threads.max(1))
            .map(|i| {
                let (snapshots, store, events) = (snapshots.clone(), store.clone(), events.clone());
                std::thread::Builder::new()
                    .name(format!("snapshot-uploader-{i}"))
                    .spawn(move || {
                        for (task, snapshot) in snapshots.iter() {
                            let id = snapshot.barrier.id;
                            let event = match Self::write(snapshot, store.as_ref()) {
                                Ok((states, bytes)) => CoordinatorEvent::Ack {
                                    checkpoint_id: id,
                                    task,
                                    states,
                                    bytes,
                                },
                                Err(reason) => CoordinatorEvent::Decline {
                                    checkpoint_id: id,
                                    reason,
                                },
                            };
                            if events.send(event).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawn snapshot uploader")
            })
            .collect()
    }

    fn write(
        snapshot: TaskSnapshot,
        store: &dyn CheckpointStore,
    ) -> Result<(Vec<(String, SubtaskStateMeta)>, u64), String> {
        let id = snapshot.barrier.id;
        let mut states = Vec::with_capacity(snapshot.operators.len());
        let mut bytes = 0;
        for op in snapshot.operators {
            let mut meta = SubtaskStateMeta {
                subtask: op.subtask,
                keyed: None,
                raw: None,
            };
            match op.state {
                OperatorState::Keyed(k) => {
                    let payload = k.encode().map_err(|e| e.to_string())?;
                    let name = format!("{}-{}-keyed", op.uid, op.subtask);
                    let file = store.write_state(id, &name, &payload)?;
                    bytes += file.size;
                    meta.keyed = Some(file);
                }
                OperatorState::Raw(raw) => {
                    bytes += raw.len() as u64;
                    meta.raw = Some(raw);
                }
            }
            states.push((op.uid.to_string(), meta));
        }
        Ok((states, bytes))
    }
}

struct Pending {
    barrier: CheckpointBarrier,
    started: Instant,
    acked: HashSet<usize>,
    metadata: CheckpointMetadata,
    bytes: u64,
}

/// Why the coordinator asks the job to fail over.
#[derive(Debug, Clone)]
pub struct CheckpointFailure(pub String);

/// Triggers, collects and completes checkpoints for one job run.
pub struct CheckpointCoordinator {
    settings: CheckpointSettings,
    store: Arc<dyn CheckpointStore>,
    sources: Vec<Sender<TaskCommand>>,
    tasks: usize,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    finished_tasks: HashSet<usize>,
    consecutive_failures: u32,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    /// Completed ids still retained, ascending.
    retained: Vec<u64>,
    /// Every checkpoint's statistics, in id order.
    pub history: Vec<CheckpointStats>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CheckpointCoordinator {
    /// A coordinator for a job run with `tasks` tasks whose sources listen on
    /// `sources`. Checkpoint ids continue after `last_id` (a restored one).
    pub fn new(
        settings: CheckpointSettings,
        store: Arc<dyn CheckpointStore>,
        sources: Vec<Sender<TaskCommand>>,
        tasks: usize,
        last_id: u64,
        retained: Vec<u64>,
    ) -> Self {
        CheckpointCoordinator {
            settings,
            store,
            sources,
            tasks,
            next_id: last_id + 1,
            pending: BTreeMap::new(),
            finished_tasks: HashSet::new(),
            consecutive_failures: 0,
            last_trigger: None,
            last_completion: None,
            retained,
            history: Vec::new(),
        }
    }

    /// When the next trigger is due.
    fn next_trigger(&self, started: Instant) -> Instant {
        let mut at = self
            .last_trigger
            .map_or(started + self.settings.interval, |t| {
                t + self.settings.interval
            });
        if let Some(c) = self.last_completion {
            at = at.max(c + self.settings.min_pause);
        }
        at
    }

    fn trigger(&mut self) {
        let barrier = CheckpointBarrier {
            id: self.next_id,
            timestamp_ms: now_ms(),
            kind: CheckpointKind::Checkpoint,
        };
        self.next_id += 1;
        self.last_trigger = Some(Instant::now());
        for s in &self.sources {
            let _ = s.send(TaskCommand::TriggerCheckpoint(barrier));
        }
        tracing::debug!(checkpoint = barrier.id, "checkpoint triggered");
        self.pending.insert(
            barrier.id,
            Pending {
                barrier,
                started: Instant::now(),
                acked: HashSet::new(),
                metadata: CheckpointMetadata {
                    checkpoint_id: barrier.id,
                    timestamp_ms: barrier.timestamp_ms,
                    operators: BTreeMap::new(),
                },
                bytes: 0,
            },
        );
    }

    fn fail(&mut self, id: u64, reason: String) -> Result<(), CheckpointFailure> {
        let Some(p) = self.pending.remove(&id) else {
            return Ok(());
        };
        tracing::warn!(checkpoint = id, "checkpoint failed: {reason}");
        let _ = self.store.discard(id);
        self.history.push(CheckpointStats {
            id,
            status: CheckpointStatus::Failed(reason.clone()),
            trigger_timestamp_ms: p.barrier.timestamp_ms,
            duration: p.started.elapsed(),
            state_size: p.bytes,
        });
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.settings.tolerable_failures {
            return Err(CheckpointFailure(format!(
                "checkpoint {id} failed ({reason}) and {} consecutive failed checkpoints exceed the tolerable {}",
                self.consecutive_failures, self.settings.tolerable_failures
            )));
        }
        Ok(())
    }

    fn complete(&mut self, id: u64) -> Result<(), CheckpointFailure> {
        let p = self
            .pending
            .remove(&id)
            .expect("completing a pending checkpoint");
        if let Err(e) = self.store.complete(id, &p.metadata.encode()) {
            self.pending.insert(id, p);
            return self.fail(id, format!("cannot write metadata: {e}"));
        }
        self.consecutive_failures = 0;
        self.last_completion = Some(Instant::now());
        self.history.push(CheckpointStats {
            id,
            status: CheckpointStatus::Completed,
            trigger_timestamp_ms: p.barrier.timestamp_ms,
            duration: p.started.elapsed(),
            state_size: p.bytes,
        });
        tracing::info!(
            checkpoint = id,
            bytes = p.bytes,
            ms = p.started.elapsed().as_millis() as u64,
            "checkpoint completed"
        );
        // Older pending checkpoints are subsumed.
        let older: Vec<u64> = self.pending.range(..id).map(|(k, _)| *k).collect();
        for o in older {
            self.fail(o, format!("subsumed by checkpoint {id}"))?;
        }
        self.retained.push(id);
        while self.retained.len() > self.settings.num_retained {
            let old = self.retained.remove(0);
            if let Err(e) = self.store.discard(old) {
                tracing::warn!(checkpoint = old, "cannot discard subsumed checkpoint: {e}");
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
            } => {
                let Some(p) = self.pending.get_mut(&checkpoint_id) else {
                    return Ok(true);
                };
                p.acked.insert(task);
                p.bytes += bytes;
                for (uid, meta) in states {
                    p.metadata.operators.entry(uid).or_default().push(meta);
                }
                if p.acked.len() == self.tasks {
                    self.complete(checkpoint_id)?;
                }
            }
            CoordinatorEvent::Decline {
                checkpoint_id,
                reason,
            } => self.fail(checkpoint_id, reason)?,
            CoordinatorEvent::TaskFinished(task) => {
                self.finished_tasks.insert(task);
                let stuck: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| !p.acked.contains(&task))
                    .map(|(id, _)| *id)
                    .collect();
                for id in stuck {
                    // Not a failure of the job: the input ended first.
                    if let Some(p) = self.pending.remove(&id) {
                        let _ = self.store.discard(id);
                        self.history.push(CheckpointStats {
                            id,
                            status: CheckpointStatus::Failed(format!(
                                "task {task} finished before acknowledging"
                            )),
                            trigger_timestamp_ms: p.barrier.timestamp_ms,
                            duration: p.started.elapsed(),
                            state_size: p.bytes,
                        });
                    }
                }
            }
            CoordinatorEvent::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// Runs until shutdown; returns an error when checkpoint failures exceed
    /// the tolerable number (the job must fail over).
    pub fn run(&mut self, events: &Receiver<CoordinatorEvent>) -> Result<(), CheckpointFailure> {
        let started = Instant::now();
        loop {
            let now = Instant::now();
            // Timeouts.
            let expired: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| now.duration_since(p.started) >= self.settings.timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.fail(id, format!("expired after {:?}", self.settings.timeout))?;
            }
            let due = self.next_trigger(started);
            if now >= due
                && self.pending.len() < self.settings.max_concurrent
                && self.finished_tasks.is_empty()
            {
                self.trigger();
                continue;
            }
            let wait = due
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            select! {
                recv(events) -> e => match e {
                    Ok(e) => if !self.on_event(e)? { return Ok(()) },
                    Err(_) => return Ok(()),
                },
                default(wait) => {}
            }
        }
    }
}

/// A state file name the storage accepts: the uid's safe characters, a hash
/// of the uid (so distinct uids never collide) and the subtask.
fn state_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("{safe}-{:08x}", floe_state::key_hash(name))
}

impl CheckpointStore for floe_checkpoint::JobCheckpointStorage {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        payload: &[u8],
    ) -> Result<StateFile, String> {
        let h = self
            .write_state_file(
                checkpoint_id,
                &state_file_name(name),
                floe_checkpoint::FileKind::KeyedState,
                payload,
            )
            .map_err(|e| e.to_string())?;
        Ok(StateFile {
            path: h.path,
            size: h.size,
        })
    }

    fn read_state(&self, file: &StateFile) -> Result<Vec<u8>, String> {
        let h = floe_checkpoint::StateHandle {
            path: file.path.clone(),
            size: file.size,
        };
        self.read_state_file(&h, floe_checkpoint::FileKind::KeyedState)
            .map_err(|e| e.to_string())
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), String> {
        self.complete_checkpoint(checkpoint_id, metadata)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        floe_checkpoint::JobCheckpointStorage::read_metadata(self, checkpoint_id)
            .map_err(|e| e.to_string())
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), String> {
        self.discard_checkpoint(checkpoint_id)
            .map_err(|e| e.to_string())
    }

    fn completed(&self) -> Result<Vec<u64>, String> {
        self.completed_checkpoints().map_err(|e| e.to_string())
    }
}
