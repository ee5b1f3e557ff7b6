//! The restore side: what operators restore from, loading it from a
//! snapshot's `_metadata`, and opening a completed snapshot — a savepoint
//! or a retained checkpoint — named by a user's path, for a restore (`-s`,
//! `--fromCheckpoint`) and for the tools that inspect or dispose of it
//! (`floe info`, `floe savepoint -d`).

use std::collections::HashMap;
use std::sync::Arc;

use floe_checkpoint::SnapshotLocation;

use floe_checkpoint::{CheckpointMetadata, MetadataError, OperatorSnapshotInfo, StateHandle};

use super::error::StoreError;
use super::store::{CheckpointStore, StateFileKind};

/// Why a snapshot could not be opened or its state read for a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot's files could not be read (or verified).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot's `_metadata` does not decode.
    #[error("{location}: {source}")]
    Metadata {
        /// The snapshot as named.
        location: String,
        /// Why it does not decode.
        source: MetadataError,
    },
    /// A native manifest names a shared file the snapshot's `_metadata`
    /// does not list: a restore reads nothing else.
    #[error("shared state file {path} is not listed in the snapshot's _metadata")]
    NotListed {
        /// The file, relative to the storage root.
        path: String,
    },
    /// A native manifest gives a shared file another size than
    /// `_metadata` does.
    #[error(
        "shared state file {path}: the native manifest says {manifest} bytes, the snapshot's _metadata {listed}"
    )]
    SizeMismatch {
        /// The file, relative to the storage root.
        path: String,
        /// The size the manifest gives.
        manifest: u64,
        /// The size `_metadata` lists.
        listed: u64,
    },
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
    store: Arc<dyn CheckpointStore>,
    listed: Arc<HashMap<String, StateHandle>>,
}

impl SharedStateFetcher {
    /// Fetches from `store` the shared files in `listed` (the snapshot
    /// metadata's).
    pub fn new(store: Arc<dyn CheckpointStore>, listed: Vec<StateHandle>) -> Self {
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
    pub fn fetch(&self, path: &str, size: u64) -> Result<Vec<u8>, RestoreError> {
        let file = self
            .listed
            .get(path)
            .ok_or_else(|| RestoreError::NotListed {
                path: path.to_string(),
            })?;
        if file.size != size {
            return Err(RestoreError::SizeMismatch {
                path: path.to_string(),
                manifest: size,
                listed: file.size,
            });
        }
        Ok(self.store.read_state(file, StateFileKind::Shared)?)
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
    pub operator_info: std::collections::BTreeMap<String, OperatorSnapshotInfo>,
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

impl RestoredState {
    /// Whether the snapshot holds in-flight records (an unaligned
    /// checkpoint): they were partitioned for the subtasks of its time, so
    /// it restores only at the parallelism it was taken at.
    pub fn has_in_flight_records(&self) -> bool {
        self.operators.values().any(|o| !o.channel.is_empty())
    }

    /// Loads every state file `metadata` lists from `store` into what
    /// operators restore from; shared files of native keyed state are
    /// fetched later, by the backend that restores them, through `store`,
    /// and only those the metadata lists (verified against their recorded
    /// size and checksum). `same_job`: the snapshot is a checkpoint of the
    /// job restoring it (a failover), whose shared files the job's next
    /// checkpoints may reference.
    pub fn load(
        metadata: &CheckpointMetadata,
        store: Arc<dyn CheckpointStore>,
        same_job: bool,
    ) -> Result<RestoredState, StoreError> {
        let mut restored = RestoredState {
            checkpoint_id: metadata.checkpoint_id,
            operator_info: metadata.operator_info.clone(),
            same_job,
            ..Default::default()
        };
        let store_: &dyn CheckpointStore = store.as_ref();
        for (uid, subtasks) in &metadata.operators {
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
        if metadata
            .operators
            .values()
            .flatten()
            .any(|s| s.keyed_native.is_some())
        {
            restored.shared = Some(SharedStateFetcher::new(store, metadata.shared_files()));
        }
        Ok(restored)
    }
}

/// A completed snapshot: its metadata and the store its files are in.
pub struct OpenedSnapshot {
    /// Where it is: a savepoint directory or a checkpoint of a job.
    pub location: SnapshotLocation,
    /// Its `_metadata`.
    pub metadata: CheckpointMetadata,
    store: std::sync::Arc<dyn CheckpointStore>,
}

impl OpenedSnapshot {
    /// Opens the snapshot at `path` (a savepoint directory, a `chk-<n>`
    /// directory, either's `_metadata`, or a job's checkpoint directory for
    /// its latest checkpoint) and reads its metadata.
    pub fn open(path: &str) -> Result<Self, RestoreError> {
        let location = SnapshotLocation::resolve(path).map_err(StoreError::from)?;
        let (store, id): (std::sync::Arc<dyn CheckpointStore>, u64) = match &location {
            SnapshotLocation::Savepoint(sp) => (std::sync::Arc::new(sp.clone()), 0),
            SnapshotLocation::Checkpoint(c) => {
                (std::sync::Arc::new(c.job.clone()), c.checkpoint_id)
            }
        };
        let metadata = CheckpointMetadata::decode(&store.read_metadata(id)?).map_err(|source| {
            RestoreError::Metadata {
                location: path.to_string(),
                source,
            }
        })?;
        Ok(OpenedSnapshot {
            location,
            metadata,
            store,
        })
    }

    /// The store the snapshot's state files are read from.
    pub fn store(&self) -> &dyn CheckpointStore {
        self.store.as_ref()
    }

    /// Reads every state file into what operators restore from.
    pub fn load(&self) -> Result<RestoredState, RestoreError> {
        // A user-named snapshot: the job restoring it is another job, so
        // its shared files stay that job's (never referenced, never deleted).
        Ok(RestoredState::load(
            &self.metadata,
            self.store.clone(),
            false,
        )?)
    }

    /// The snapshot's location as a URL.
    pub fn url(&self) -> String {
        match &self.location {
            SnapshotLocation::Savepoint(sp) => sp.location().to_string(),
            SnapshotLocation::Checkpoint(c) => c.job.checkpoint_location(c.checkpoint_id),
        }
    }
}
