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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use floe_core::{CheckpointBarrier, CheckpointKind};

use crate::checkpoint::{
    AlignmentMode, CheckpointNotification, OperatorRestore, OperatorState, RestoredState,
    TaskCommand, TaskSnapshot,
};
use crate::control::{JobControl, SavepointMode, SavepointRequest, SavepointStatus};
use crate::shared_state::SharedStateRegistry;

/// What a state file holds (its frame records it, so a file restored as the
/// wrong kind is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFileKind {
    /// Keyed state of one operator subtask.
    Keyed,
    /// In-flight records of an unaligned checkpoint.
    Channel,
    /// Operator state (list, union list, broadcast, raw) of one subtask.
    Operator,
    /// Keyed state of one subtask in RocksDB's own files (incremental
    /// checkpoints): the manifest.
    KeyedNative,
    /// A file under the job's `shared/` directory (an SST file).
    Shared,
}

/// Where checkpoint files go; implemented over object stores by
/// `floe-checkpoint`, and in memory for tests.
pub trait CheckpointStore: Send + Sync {
    /// Writes one state file of checkpoint `checkpoint_id` whose payload
    /// `encode` appends to the buffer it is given (in place, so a large
    /// snapshot is never copied); `size_hint` is the expected payload size.
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String>;
    /// Reads a state file back (verifying it).
    fn read_state(&self, file: &StateFile, kind: StateFileKind) -> Result<Vec<u8>, String>;
    /// Writes the metadata last and atomically: the checkpoint now exists.
    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), String>;
    /// Reads a completed checkpoint's metadata.
    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, String>;
    /// Deletes completed checkpoint `checkpoint_id`: what its `_metadata`
    /// lists, nothing else.
    fn discard(&self, checkpoint_id: u64) -> Result<(), String>;
    /// Deletes what was written for checkpoint `checkpoint_id`, which did
    /// not complete (no `_metadata` lists its files): only the files this
    /// store wrote for it.
    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), String> {
        self.discard(checkpoint_id)
    }
    /// Ids of completed checkpoints, ascending.
    fn completed(&self) -> Result<Vec<u64>, String>;
    /// Where checkpoint `checkpoint_id` is, as a URL, when it has a place
    /// a user can name (not for memory storage).
    fn location(&self, _checkpoint_id: u64) -> Option<String> {
        None
    }
    /// Writes a file of incremental state for checkpoint `checkpoint_id`
    /// into the job's `shared/` directory under `name`; `produce` appends
    /// its payload (about `size_hint` bytes) in place.
    fn write_shared(
        &self,
        checkpoint_id: u64,
        _name: &str,
        _size_hint: usize,
        _produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        Err(format!(
            "snapshot {checkpoint_id} cannot hold incremental state: its storage has no shared directory"
        ))
    }
    /// The relative path prefix of the job's shared files (`<job>/shared/`),
    /// when the storage has a shared directory.
    fn shared_prefix(&self) -> Option<String> {
        None
    }
    /// Deletes a shared file no retained checkpoint references any more.
    fn delete_shared(&self, _file: &StateFile) -> Result<(), String> {
        Ok(())
    }
    /// Deletes the job's whole shared directory (its last checkpoint went).
    fn discard_shared(&self) -> Result<(), String> {
        Ok(())
    }
    /// Every file in the job's shared directory (none without one).
    fn list_shared(&self) -> Result<Vec<StateFile>, String> {
        Ok(Vec::new())
    }
}

/// Bytes a frame adds to a payload (header and checksum): the stored size
/// of a shared file is its local size plus this.
pub const FRAME_OVERHEAD: u64 =
    (floe_checkpoint::format::HEADER_LEN + floe_checkpoint::format::TRAILER_LEN) as u64;

/// A written state file: its path relative to the storage root (the
/// checkpoint storage's, or the savepoint directory) and its size.
pub type StateFile = floe_checkpoint::StateHandle;

pub use floe_checkpoint::metadata::{
    CheckpointMetadata, METADATA_FORMAT_VERSION, MetadataError, OperatorSnapshotInfo,
    SubtaskStateMeta,
};

/// How uids derived from the graph (operators without `uid(..)`) begin.
pub const DERIVED_UID_PREFIX: &str = "auto-";

/// Loading the state a snapshot's metadata lists (the metadata format
/// lives in `floe-checkpoint`; what operators restore from is the
/// runtime's).
pub trait LoadSnapshot {
    /// Loads every state file into what operators restore from; shared
    /// files of native keyed state are fetched later, by the backend that
    /// restores them, through `store`, and only those the metadata lists
    /// (verified against their recorded size and checksum). `same_job`:
    /// the snapshot is a checkpoint of the job restoring it (a failover),
    /// whose shared files the job's next checkpoints may reference.
    fn load(
        &self,
        store: Arc<dyn CheckpointStore>,
        same_job: bool,
    ) -> Result<RestoredState, String>;
}

impl LoadSnapshot for CheckpointMetadata {
    fn load(
        &self,
        store: Arc<dyn CheckpointStore>,
        same_job: bool,
    ) -> Result<RestoredState, String> {
        let mut restored = RestoredState {
            checkpoint_id: self.checkpoint_id,
            operator_info: self.operator_info.clone(),
            same_job,
            ..Default::default()
        };
        let store_: &dyn CheckpointStore = store.as_ref();
        for (uid, subtasks) in &self.operators {
            let mut op = OperatorRestore::default();
            for s in subtasks {
                if let Some(f) = &s.keyed {
                    op.keyed
                        .push(Arc::new(store_.read_state(f, StateFileKind::Keyed)?));
                }
                if let Some(f) = &s.keyed_native {
                    op.keyed_native
                        .push(Arc::new(store_.read_state(f, StateFileKind::KeyedNative)?));
                }
                if let Some(f) = &s.channel {
                    op.channel.insert(
                        s.subtask,
                        Arc::new(store_.read_state(f, StateFileKind::Channel)?),
                    );
                }
                if let Some(raw) = &s.raw {
                    op.raw.insert(s.subtask, Arc::new(raw.clone()));
                }
                if let Some(f) = &s.operator {
                    op.operator
                        .push(Arc::new(store_.read_state(f, StateFileKind::Operator)?));
                }
            }
            restored.operators.insert(uid.clone(), op);
        }
        if self
            .operators
            .values()
            .flatten()
            .any(|s| s.keyed_native.is_some())
        {
            restored.shared = Some(crate::checkpoint::SharedStateFetcher::new(
                store,
                self.shared_files(),
            ));
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

impl CheckpointSettings {
    /// Checks the ranges the configuration keys enforce, for settings
    /// changed in code (`configure_checkpointing`).
    pub fn validate(&self) -> Result<(), String> {
        let min = Duration::from_millis(10);
        if self.interval < min {
            return Err(format!(
                "checkpoint interval {:?} is too short: it must be at least 10 ms",
                self.interval
            ));
        }
        if self.timeout < min {
            return Err(format!(
                "checkpoint timeout {:?} is too short: it must be at least 10 ms",
                self.timeout
            ));
        }
        if self.max_concurrent == 0 {
            return Err("max concurrent checkpoints must be at least 1".into());
        }
        if self.num_retained == 0 {
            return Err("the number of retained checkpoints must be at least 1".into());
        }
        Ok(())
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
}

impl CheckpointStats {
    fn of(p: &Pending, status: CheckpointStatus, tasks: usize) -> Self {
        CheckpointStats {
            id: p.barrier.id,
            status,
            trigger_timestamp_ms: p.barrier.timestamp_ms,
            duration: p.started.elapsed(),
            state_size: p.bytes,
            full_state_size: p.bytes + p.referenced_bytes,
            channel_state_size: p.channel_bytes,
            sync_duration: p.sync,
            async_duration: p.async_,
            alignment_duration: p.alignment,
            acknowledged: (p.acked.len(), tasks),
            unaligned: p.unaligned,
            operators: p.operator_bytes.clone(),
            is_savepoint: p.savepoint.is_some(),
            external_path: None,
        }
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

/// The checkpoint history of a job, shared between its coordinator (which
/// appends) and its client (which reads while the job runs).
pub type CheckpointHistory = Arc<Mutex<Vec<CheckpointStats>>>;

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
        /// Durations and sizes.
        stats: AckStats,
    },
    /// A task could not take or write its snapshot.
    Decline {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
    /// A task's input ended and its chain finished; it stays to take part
    /// in checkpoints until the job's final checkpoint completes.
    TaskFinished(usize),
    /// A user asked for a savepoint (or a stop with savepoint).
    TriggerSavepoint(SavepointRequest),
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
                            let started = Instant::now();
                            let (sync, alignment, unaligned) =
                                (snapshot.sync, snapshot.alignment, snapshot.unaligned);
                            let event = match Self::write(snapshot, store.as_ref()) {
                                Ok((states, bytes, mut stats)) => {
                                    stats.sync = sync;
                                    stats.alignment = alignment;
                                    stats.unaligned = unaligned;
                                    stats.async_ = started.elapsed();
                                    CoordinatorEvent::Ack {
                                        checkpoint_id: id,
                                        task,
                                        states,
                                        bytes,
                                        stats,
                                    }
                                }
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

    #[allow(clippy::type_complexity)]
    fn write(
        snapshot: TaskSnapshot,
        store: &dyn CheckpointStore,
    ) -> Result<(Vec<(String, SubtaskStateMeta)>, u64, AckStats), String> {
        let id = snapshot.barrier.id;
        let mut states: Vec<(String, SubtaskStateMeta)> =
            Vec::with_capacity(snapshot.operators.len() + 1);
        let mut stats = AckStats::default();
        let mut bytes = 0;
        // One metadata entry per (uid, subtask), whatever kinds of state
        // the operator contributed.
        fn entry<'a>(
            states: &'a mut Vec<(String, SubtaskStateMeta)>,
            uid: &str,
            subtask: u32,
        ) -> &'a mut SubtaskStateMeta {
            let i = match states
                .iter()
                .position(|(u, m)| u == uid && m.subtask == subtask)
            {
                Some(i) => i,
                None => {
                    states.push((
                        uid.to_string(),
                        SubtaskStateMeta {
                            subtask,
                            keyed: None,
                            raw: None,
                            operator: None,
                            channel: None,
                            keyed_native: None,
                            shared: Vec::new(),
                        },
                    ));
                    states.len() - 1
                }
            };
            &mut states[i].1
        }
        let write_bytes = |name: &str, kind: StateFileKind, payload: &[u8]| {
            store.write_state(id, name, kind, payload.len(), &mut |out| {
                out.extend_from_slice(payload);
                Ok(())
            })
        };
        for op in snapshot.operators {
            let size = match op.state {
                OperatorState::Keyed(k) if k.native().is_some() => {
                    let meta = entry(&mut states, &op.uid, op.subtask);
                    let (size, referenced) = Self::write_native(id, &op.uid, &k, store, meta)?;
                    stats.referenced_bytes += referenced;
                    size
                }
                OperatorState::Keyed(k) => {
                    let name = format!("{}-{}-keyed", op.uid, op.subtask);
                    let file = store.write_state(
                        id,
                        &name,
                        StateFileKind::Keyed,
                        k.size_hint(),
                        &mut |out| k.encode_into(out).map_err(|e| e.to_string()),
                    )?;
                    let size = file.size;
                    entry(&mut states, &op.uid, op.subtask).keyed = Some(file);
                    size
                }
                OperatorState::Operator(payload) => {
                    let name = format!("{}-{}-operator", op.uid, op.subtask);
                    let file = write_bytes(&name, StateFileKind::Operator, &payload)?;
                    let size = file.size;
                    entry(&mut states, &op.uid, op.subtask).operator = Some(file);
                    size
                }
                OperatorState::Raw(raw) => {
                    let size = raw.len() as u64;
                    entry(&mut states, &op.uid, op.subtask).raw = Some(raw);
                    size
                }
            };
            bytes += size;
            stats.operator_bytes.push((op.uid.to_string(), size));
        }
        if let Some((uid, subtask, records)) = snapshot.channel_state {
            let name = format!("{uid}-{subtask}-channel");
            let file = write_bytes(&name, StateFileKind::Channel, &records)?;
            bytes += file.size;
            stats.channel_bytes = file.size;
            stats.operator_bytes.push((uid.to_string(), file.size));
            // Beside the head operator's own state, when it has any.
            entry(&mut states, &uid, subtask).channel = Some(file);
        }
        Ok((states, bytes, stats))
    }
}

impl SnapshotUploader {
    /// Writes a native keyed snapshot: uploads its new SST files to the
    /// job's `shared/` directory, references the others, and writes the
    /// manifest. Returns the bytes written and the bytes referenced.
    fn write_native(
        id: u64,
        uid: &str,
        k: &floe_state::KeyedStateSnapshot,
        store: &dyn CheckpointStore,
        meta: &mut SubtaskStateMeta,
    ) -> Result<(u64, u64), String> {
        use floe_state::native::{NativeSharedFile, SharedFileRef, SstSource};
        let native = k.native().expect("checked by the caller");
        let prefix = store.shared_prefix().ok_or_else(|| {
            format!("checkpoint {id}: incremental state needs checkpoint storage with a shared directory")
        })?;
        let (mut written, mut referenced) = (0, 0);
        let mut shared = Vec::with_capacity(native.sst().len());
        for f in native.sst() {
            let file = match &f.source {
                // Referenced: the coordinator fills in the checksum the
                // registry carries from the checkpoint that uploaded it.
                SstSource::At(r) => StateFile {
                    path: r.path.clone(),
                    size: r.size,
                    checksum: None,
                },
                SstSource::OwnShared => StateFile {
                    path: format!("{prefix}{}", f.shared_name),
                    size: f.size + FRAME_OVERHEAD,
                    checksum: None,
                },
                SstSource::Upload => {
                    let path = native.dir().join(&f.name);
                    let file =
                        store.write_shared(id, &f.shared_name, f.size as usize, &mut |out| {
                            use std::io::Read;
                            std::fs::File::open(&path)
                                .and_then(|mut file| file.read_to_end(out))
                                .map(|_| ())
                                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                        })?;
                    written += file.size;
                    file
                }
            };
            if !matches!(f.source, SstSource::Upload) {
                referenced += file.size;
            }
            shared.push(NativeSharedFile {
                name: f.name.clone(),
                shared_name: f.shared_name.clone(),
                file: SharedFileRef {
                    path: file.path.clone(),
                    size: file.size,
                },
            });
            if !meta.shared.iter().any(|s| s.path == file.path) {
                meta.shared.push(file);
            }
        }
        let manifest = store.write_state(
            id,
            &format!("{uid}-{}-keyed-native", meta.subtask),
            StateFileKind::KeyedNative,
            4096,
            &mut |out| {
                k.encode_native_into(shared.clone(), out)
                    .map_err(|e| e.to_string())
            },
        )?;
        written += manifest.size;
        meta.keyed_native = Some(manifest);
        Ok((written, referenced))
    }
}

struct Pending {
    barrier: CheckpointBarrier,
    started: Instant,
    acked: HashSet<usize>,
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

/// Where each snapshot's files go: checkpoints to the job's checkpoint
/// storage, each savepoint to its own directory. Shared by the coordinator
/// and the uploaders, which only know checkpoint ids.
pub struct SnapshotTargets {
    checkpoints: Option<Arc<dyn CheckpointStore>>,
    savepoints: Mutex<BTreeMap<u64, (Arc<floe_checkpoint::SavepointStorage>, bool)>>,
}

impl SnapshotTargets {
    /// Targets writing checkpoints to `checkpoints` (none: checkpointing
    /// is off, only savepoints are written).
    pub fn new(checkpoints: Option<Arc<dyn CheckpointStore>>) -> Self {
        SnapshotTargets {
            checkpoints,
            savepoints: Mutex::new(BTreeMap::new()),
        }
    }

    fn savepoint(&self, id: u64) -> Option<(Arc<floe_checkpoint::SavepointStorage>, bool)> {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn register_savepoint(&self, id: u64, storage: Arc<floe_checkpoint::SavepointStorage>) {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (storage, false));
    }

    fn mark_savepoint_completed(&self, id: u64) {
        if let Some(e) = self
            .savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            e.1 = true;
        }
    }

    fn checkpoints(&self, id: u64) -> Result<&Arc<dyn CheckpointStore>, String> {
        self.checkpoints
            .as_ref()
            .ok_or_else(|| format!("checkpoint {id} has no storage: checkpointing is off"))
    }
}

impl CheckpointStore for SnapshotTargets {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        match self.savepoint(checkpoint_id) {
            Some((sp, _)) => sp.write_state(checkpoint_id, name, kind, size_hint, encode),
            None => self.checkpoints(checkpoint_id)?.write_state(
                checkpoint_id,
                name,
                kind,
                size_hint,
                encode,
            ),
        }
    }

    fn read_state(&self, file: &StateFile, kind: StateFileKind) -> Result<Vec<u8>, String> {
        self.checkpoints(0)?.read_state(file, kind)
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), String> {
        match self.savepoint(checkpoint_id) {
            Some((sp, _)) => {
                CheckpointStore::complete(sp.as_ref(), checkpoint_id, metadata)?;
                self.mark_savepoint_completed(checkpoint_id);
                Ok(())
            }
            None => self
                .checkpoints(checkpoint_id)?
                .complete(checkpoint_id, metadata),
        }
    }

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        self.checkpoints(checkpoint_id)?
            .read_metadata(checkpoint_id)
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), String> {
        match self.savepoint(checkpoint_id) {
            // A completed savepoint belongs to the user: never deleted here.
            Some((_, true)) => Ok(()),
            Some((sp, false)) => CheckpointStore::discard_incomplete(sp.as_ref(), checkpoint_id),
            None => match &self.checkpoints {
                Some(c) => c.discard(checkpoint_id),
                None => Ok(()),
            },
        }
    }

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), String> {
        match self.savepoint(checkpoint_id) {
            Some((_, true)) => Ok(()),
            Some((sp, false)) => CheckpointStore::discard_incomplete(sp.as_ref(), checkpoint_id),
            None => match &self.checkpoints {
                Some(c) => c.discard_incomplete(checkpoint_id),
                None => Ok(()),
            },
        }
    }

    fn completed(&self) -> Result<Vec<u64>, String> {
        match &self.checkpoints {
            Some(c) => c.completed(),
            None => Ok(Vec::new()),
        }
    }

    fn location(&self, checkpoint_id: u64) -> Option<String> {
        match self.savepoint(checkpoint_id) {
            Some((sp, _)) => Some(sp.location().to_string()),
            None => self.checkpoints.as_ref()?.location(checkpoint_id),
        }
    }

    fn write_shared(
        &self,
        checkpoint_id: u64,
        name: &str,
        size_hint: usize,
        produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        if self.savepoint(checkpoint_id).is_some() {
            return Err(format!(
                "savepoint {checkpoint_id} cannot hold incremental state: savepoints are self-contained"
            ));
        }
        self.checkpoints(checkpoint_id)?
            .write_shared(checkpoint_id, name, size_hint, produce)
    }

    fn shared_prefix(&self) -> Option<String> {
        self.checkpoints.as_ref()?.shared_prefix()
    }

    fn delete_shared(&self, file: &StateFile) -> Result<(), String> {
        match &self.checkpoints {
            Some(c) => c.delete_shared(file),
            None => Ok(()),
        }
    }

    fn discard_shared(&self) -> Result<(), String> {
        match &self.checkpoints {
            Some(c) => c.discard_shared(),
            None => Ok(()),
        }
    }

    fn list_shared(&self) -> Result<Vec<StateFile>, String> {
        match &self.checkpoints {
            Some(c) => c.list_shared(),
            None => Ok(Vec::new()),
        }
    }
}

/// Why the coordinator asks the job to fail over.
#[derive(Debug, Clone)]
pub struct CheckpointFailure(pub String);

/// Triggers, collects and completes checkpoints for one job run.
pub struct CheckpointCoordinator {
    settings: CheckpointSettings,
    /// Periodic checkpoints are on (otherwise only savepoints are taken).
    periodic: bool,
    store: Arc<SnapshotTargets>,
    /// The job's control handle: savepoint results and cancel-after.
    control: Option<JobControl>,
    /// A stop with drain under way: its savepoint is the final checkpoint.
    drain: Option<SavepointRequest>,
    /// A stop with savepoint is under way: no periodic trigger meanwhile.
    stopping: bool,
    /// Every task's command channel, and whether it is a source (sources
    /// are triggered; every task is notified).
    tasks: Vec<(Sender<TaskCommand>, bool)>,
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
    retained_shared: HashMap<u64, Vec<StateFile>>,
    /// Which shared files are still needed.
    shared_registry: SharedStateRegistry,
    /// Every checkpoint's statistics, in the order they ended.
    history: CheckpointHistory,
    /// Aborted checkpoints some task had not acknowledged: its upload may
    /// still write files after the abort, so they are removed again once
    /// the run's uploads are over.
    orphans: Vec<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CheckpointCoordinator {
    /// A coordinator for a job run whose tasks listen on `tasks` (with a
    /// flag for sources). Checkpoint ids continue after `last_id`: ids are
    /// never reused within a job, so files of a checkpoint abandoned by a
    /// failed run cannot collide with a new one.
    /// `periodic` is false when checkpointing is off: the coordinator then
    /// only takes savepoints.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: CheckpointSettings,
        periodic: bool,
        store: Arc<SnapshotTargets>,
        control: Option<JobControl>,
        tasks: Vec<(Sender<TaskCommand>, bool)>,
        last_id: u64,
        retained: Vec<u64>,
        history: CheckpointHistory,
    ) -> Self {
        // Rebuild the shared-state registry from the retained checkpoints
        // (a restarted run keeps their shared files and builds on them).
        let mut shared_registry = SharedStateRegistry::new(store.shared_prefix());
        let mut retained_shared = HashMap::new();
        for &id in &retained {
            let files = store
                .read_metadata(id)
                .and_then(|m| CheckpointMetadata::decode(&m).map_err(|e| e.to_string()))
                .map(|m| m.shared_files());
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
            settings,
            periodic,
            store,
            retained_shared,
            shared_registry,
            control,
            drain: None,
            stopping: false,
            tasks,
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
        for f in self.shared_registry.take_deletable(min_pending) {
            if let Err(e) = self.store.delete_shared(&f) {
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
        if self.settings.min_pause > Duration::ZERO {
            1
        } else {
            self.settings.max_concurrent.max(1)
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

    fn record(&self, stats: CheckpointStats) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stats);
    }

    fn notify(&self, n: CheckpointNotification) {
        for (tx, _) in &self.tasks {
            let _ = tx.send(TaskCommand::Notify(n));
        }
    }

    fn trigger(&mut self) {
        self.trigger_kind(CheckpointKind::Checkpoint, None);
    }

    /// What the metadata records about each operator.
    fn operator_info(&self) -> BTreeMap<String, OperatorSnapshotInfo> {
        self.control
            .as_ref()
            .map(|c| {
                c.vertices()
                    .iter()
                    .map(|v| {
                        (
                            v.uid.clone(),
                            OperatorSnapshotInfo {
                                name: v.name.clone(),
                                parallelism: v.parallelism,
                                max_parallelism: v.max_parallelism,
                                max_parallelism_explicit: v.max_parallelism_explicit,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn trigger_kind(
        &mut self,
        kind: CheckpointKind,
        savepoint: Option<(SavepointRequest, Arc<floe_checkpoint::SavepointStorage>)>,
    ) {
        let barrier = CheckpointBarrier {
            id: self.next_id,
            timestamp_ms: now_ms(),
            kind,
            last_completed: self.retained.last().copied(),
        };
        self.next_id += 1;
        if let Some((_, storage)) = &savepoint {
            self.store.register_savepoint(barrier.id, storage.clone());
        } else {
            self.last_trigger = Some(Instant::now());
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
                started: Instant::now(),
                acked: HashSet::new(),
                metadata: CheckpointMetadata {
                    format_version: METADATA_FORMAT_VERSION,
                    checkpoint_id: barrier.id,
                    timestamp_ms: barrier.timestamp_ms,
                    is_savepoint: savepoint.is_some(),
                    operator_info: self.operator_info(),
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
    }

    /// Starts a savepoint request: a stop with drain first ends the input
    /// (the savepoint is taken once every task finished); any other is
    /// triggered at once, regardless of the checkpoints in flight.
    fn start_savepoint(&mut self, request: SavepointRequest) {
        let Some(control) = self.control.clone() else {
            return;
        };
        if self.ending {
            control.set_savepoint_status(
                &request.trigger,
                SavepointStatus::Failed {
                    reason: "the job is finishing: every task has ended".into(),
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
        let Some(storage) = Self::create_savepoint_dir(&control, &request) else {
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
        control: &JobControl,
        request: &SavepointRequest,
    ) -> Option<Arc<floe_checkpoint::SavepointStorage>> {
        match floe_checkpoint::SavepointStorage::create(&request.target_directory, control.job_id())
        {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                control.set_savepoint_status(
                    &request.trigger,
                    SavepointStatus::Failed {
                        reason: e.to_string(),
                    },
                );
                None
            }
        }
    }

    /// Starts the savepoint of a stop with drain, now that every task
    /// finished: it is the job's final checkpoint.
    fn start_drain_savepoint(&mut self, request: SavepointRequest) -> bool {
        let Some(control) = self.control.clone() else {
            return false;
        };
        let Some(storage) = Self::create_savepoint_dir(&control, &request) else {
            return false;
        };
        self.trigger_kind(CheckpointKind::Savepoint, Some((request, storage)));
        true
    }

    /// Aborts pending checkpoint `id`: its files are removed and tasks are
    /// told. `counts` says whether it counts against the tolerable failures
    /// (a subsumed checkpoint or one cut short by the end of input does not).
    fn abort(&mut self, id: u64, reason: String, counts: bool) -> Result<(), CheckpointFailure> {
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
        if p.acked.len() < self.tasks.len() {
            self.orphans.push(id);
        }
        self.record(CheckpointStats::of(
            &p,
            CheckpointStatus::Failed(reason.clone()),
            self.tasks.len(),
        ));
        // Sources paused by a failed stop resume on this notification.
        self.notify(CheckpointNotification::Aborted(id));
        if let Some((request, _)) = &p.savepoint {
            if let Some(control) = &self.control {
                control.set_savepoint_status(
                    &request.trigger,
                    SavepointStatus::Failed {
                        reason: format!("savepoint {id} failed: {reason}"),
                    },
                );
            }
            if let SavepointMode::Stop { drain } = request.mode {
                self.stopping = false;
                if drain {
                    // The input has ended already: the job cannot go on.
                    return Err(CheckpointFailure(format!(
                        "the savepoint of stop with drain failed ({reason}); the job fails over"
                    )));
                }
            }
            // A failed savepoint never fails the job.
            return Ok(());
        }
        if !counts {
            return Ok(());
        }
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
            return self.abort(id, format!("cannot write metadata: {e}"), true);
        }
        if let Some((request, storage)) = &p.savepoint {
            return self.complete_savepoint(id, &p, request.clone(), storage.location());
        }
        self.consecutive_failures = 0;
        self.last_completion = Some(Instant::now());
        let shared = p.metadata.shared_files();
        self.shared_registry.register(shared.iter());
        self.retained_shared.insert(id, shared);
        let mut stats = CheckpointStats::of(&p, CheckpointStatus::Completed, self.tasks.len());
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
            self.abort(o, format!("subsumed by checkpoint {id}"), false)?;
        }
        self.retained.push(id);
        while self.retained.len() > self.settings.num_retained.max(1) {
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
        let mut stats = CheckpointStats::of(p, CheckpointStatus::Completed, self.tasks.len());
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
        let Some(control) = self.control.clone() else {
            return Ok(());
        };
        control.set_savepoint_status(
            &request.trigger,
            SavepointStatus::Completed {
                location: location.to_string(),
            },
        );
        match request.mode {
            SavepointMode::Savepoint { cancel_job } => {
                if cancel_job {
                    tracing::info!("cancelling the job after savepoint {id}");
                    control.cancel();
                }
            }
            SavepointMode::Stop { .. } => {
                control.mark_stopped();
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
                        let shared: Vec<StateFile> =
                            states.iter().flat_map(|(_, m)| m.shared.clone()).collect();
                        self.shared_registry
                            .release(shared.iter(), self.max_pending());
                        self.delete_unreferenced_shared();
                    }
                    return Ok(true);
                };
                p.acked.insert(task);
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
                if p.acked.len() == self.tasks.len() {
                    self.complete(checkpoint_id)?;
                }
            }
            CoordinatorEvent::Decline {
                checkpoint_id,
                reason,
            } => self.abort(checkpoint_id, reason, true)?,
            CoordinatorEvent::TaskFinished(task) => {
                self.finished_tasks.insert(task);
            }
            CoordinatorEvent::TriggerSavepoint(request) => self.start_savepoint(request),
            CoordinatorEvent::Shutdown => {
                let pending: Vec<u64> = self.pending.keys().copied().collect();
                for id in pending {
                    self.abort(id, "the job run ended first".into(), false)?;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs until shutdown; returns an error when checkpoint failures exceed
    /// the tolerable number (the job must fail over).
    pub fn run(&mut self, events: &Receiver<CoordinatorEvent>) -> Result<(), CheckpointFailure> {
        let result = self.run_loop(events);
        self.fail_outstanding_savepoints(match &result {
            Ok(()) => "the job run ended first".to_string(),
            Err(f) => format!("the job run failed: {}", f.0),
        });
        result
    }

    /// Fails every savepoint request still open when the run ends (pending
    /// ones and a drain waiting for its tasks), so no request stays in
    /// progress and the job can be stopped again after a restart.
    fn fail_outstanding_savepoints(&mut self, reason: String) {
        let Some(control) = self.control.clone() else {
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
                control.set_savepoint_status(
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
            control.set_savepoint_status(&request.trigger, SavepointStatus::Failed { reason });
        }
    }

    fn run_loop(&mut self, events: &Receiver<CoordinatorEvent>) -> Result<(), CheckpointFailure> {
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
                self.abort(
                    id,
                    format!("expired after {:?}", self.settings.timeout),
                    true,
                )?;
            }
            let due = self.next_trigger(started);
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
                        return Err(CheckpointFailure(
                            "the savepoint of stop with drain could not be started".into(),
                        ));
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
            let periodic_due = self.periodic && !self.stopping && now >= due;
            if (periodic_due || final_due) && self.pending.len() < self.max_concurrent() {
                self.trigger();
                if final_due {
                    self.final_checkpoint = Some(self.last_triggered());
                }
                continue;
            }
            // Sleep until the next trigger only when one may happen; with
            // checkpointing off, while the job ends, or while the allowed
            // number of checkpoints is in flight, wait for events (bounded,
            // for the timeout check) instead of spinning on a past due time.
            const IDLE_POLL: Duration = Duration::from_millis(50);
            let may_trigger = self.periodic
                && !self.stopping
                && !self.ending
                && self.pending.len() < self.max_concurrent();
            let wait = if may_trigger {
                due.saturating_duration_since(now).min(IDLE_POLL)
            } else {
                IDLE_POLL
            };
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

fn file_kind(kind: StateFileKind) -> floe_checkpoint::FileKind {
    match kind {
        StateFileKind::Keyed => floe_checkpoint::FileKind::KeyedState,
        StateFileKind::Operator => floe_checkpoint::FileKind::OperatorState,
        StateFileKind::Channel => floe_checkpoint::FileKind::ChannelState,
        StateFileKind::KeyedNative => floe_checkpoint::FileKind::KeyedStateNative,
        StateFileKind::Shared => floe_checkpoint::FileKind::SharedState,
    }
}

impl CheckpointStore for floe_checkpoint::SavepointStorage {
    fn write_state(
        &self,
        _checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        self.write_state_file_with(&state_file_name(name), file_kind(kind), size_hint, encode)
            .map_err(|e| e.to_string())
    }

    fn read_state(&self, file: &StateFile, kind: StateFileKind) -> Result<Vec<u8>, String> {
        self.read_state_file(file, file_kind(kind))
            .map_err(|e| e.to_string())
    }

    fn complete(&self, _checkpoint_id: u64, metadata: &[u8]) -> Result<(), String> {
        floe_checkpoint::SavepointStorage::complete(self, metadata)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn read_metadata(&self, _checkpoint_id: u64) -> Result<Vec<u8>, String> {
        floe_checkpoint::SavepointStorage::read_metadata(self).map_err(|e| e.to_string())
    }

    fn discard(&self, _checkpoint_id: u64) -> Result<(), String> {
        // A completed savepoint is the user's: only `floe savepoint -d`
        // disposes of it; this removes an aborted one.
        warn_left(
            "an aborted savepoint",
            floe_checkpoint::SavepointStorage::discard_incomplete(self),
        )
    }

    fn completed(&self) -> Result<Vec<u64>, String> {
        Ok(Vec::new())
    }
}

impl CheckpointStore for floe_checkpoint::JobCheckpointStorage {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        self.write_state_file_with(
            checkpoint_id,
            &state_file_name(name),
            file_kind(kind),
            size_hint,
            encode,
        )
        .map_err(|e| e.to_string())
    }

    fn read_state(&self, file: &StateFile, kind: StateFileKind) -> Result<Vec<u8>, String> {
        self.read_state_file(file, file_kind(kind))
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
        warn_left(
            "a discarded checkpoint",
            self.discard_checkpoint(checkpoint_id),
        )
    }

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), String> {
        warn_left(
            "an aborted checkpoint",
            floe_checkpoint::JobCheckpointStorage::discard_incomplete(self, checkpoint_id),
        )
    }

    fn completed(&self) -> Result<Vec<u64>, String> {
        self.completed_checkpoints().map_err(|e| e.to_string())
    }

    fn location(&self, checkpoint_id: u64) -> Option<String> {
        (self.storage().kind() != floe_checkpoint::StorageKind::JobManager)
            .then(|| self.checkpoint_location(checkpoint_id))
    }

    fn write_shared(
        &self,
        _checkpoint_id: u64,
        name: &str,
        size_hint: usize,
        produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<StateFile, String> {
        self.write_shared_file(name, size_hint, produce)
            .map_err(|e| match e {
                floe_checkpoint::WriteError::Storage(e) => e.to_string(),
                floe_checkpoint::WriteError::Produce(e) => e,
            })
    }

    fn shared_prefix(&self) -> Option<String> {
        Some(floe_checkpoint::JobCheckpointStorage::shared_prefix(self))
    }

    fn delete_shared(&self, file: &StateFile) -> Result<(), String> {
        self.delete_shared_file(file).map_err(|e| e.to_string())
    }

    fn discard_shared(&self) -> Result<(), String> {
        warn_left(
            "the shared state directory",
            floe_checkpoint::JobCheckpointStorage::discard_shared(self),
        )
    }

    fn list_shared(&self) -> Result<Vec<StateFile>, String> {
        self.list_shared_files().map_err(|e| e.to_string())
    }
}

/// Reports what a discard left because the snapshot did not own it.
fn warn_left(
    what: &str,
    result: Result<floe_checkpoint::Removal, floe_checkpoint::StorageError>,
) -> Result<(), String> {
    let removal = result.map_err(|e| e.to_string())?;
    if !removal.left.is_empty() {
        tracing::warn!(
            "kept the directory of {what}: it holds entries the snapshot does not own, left untouched: {}",
            removal.left.join(", ")
        );
    }
    Ok(())
}
