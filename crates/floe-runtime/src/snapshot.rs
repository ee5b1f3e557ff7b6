//! Opening a completed snapshot — a savepoint or a retained checkpoint —
//! named by a user's path, for a restore (`-s`, `--fromCheckpoint`) and for
//! the tools that inspect or dispose of it (`floe info`, `floe savepoint -d`).

use floe_checkpoint::SnapshotLocation;

use crate::checkpoint::RestoredState;
use crate::coordinator::{CheckpointMetadata, CheckpointStore, LoadSnapshot};

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
    pub fn open(path: &str) -> Result<Self, String> {
        let location = SnapshotLocation::resolve(path).map_err(|e| e.to_string())?;
        let (store, id): (std::sync::Arc<dyn CheckpointStore>, u64) = match &location {
            SnapshotLocation::Savepoint(sp) => (std::sync::Arc::new(sp.clone()), 0),
            SnapshotLocation::Checkpoint(c) => {
                (std::sync::Arc::new(c.job.clone()), c.checkpoint_id)
            }
        };
        let metadata =
            CheckpointMetadata::decode(&store.read_metadata(id)?).map_err(|e| e.to_string())?;
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
    pub fn load(&self) -> Result<RestoredState, String> {
        // A user-named snapshot: the job restoring it is another job, so
        // its shared files stay that job's (never referenced, never deleted).
        self.metadata.load(self.store.clone(), false)
    }

    /// The snapshot's location as a URL.
    pub fn url(&self) -> String {
        match &self.location {
            SnapshotLocation::Savepoint(sp) => sp.location().to_string(),
            SnapshotLocation::Checkpoint(c) => c.job.checkpoint_location(c.checkpoint_id),
        }
    }
}
