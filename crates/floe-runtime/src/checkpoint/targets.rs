//! Routing a snapshot's files by id: checkpoints to the job's checkpoint
//! storage, each savepoint to its own directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use floe_checkpoint::StateHandle;

use super::error::{PayloadError, StoreError};
use super::store::{CheckpointStore, SharedStateStore, StateFileKind};

/// Where each snapshot's files go: checkpoints to the job's checkpoint
/// storage, each savepoint to its own directory. Shared by the coordinator
/// and the uploaders, which only know checkpoint ids.
pub struct SnapshotTargets {
    checkpoints: Option<Arc<dyn CheckpointStore>>,
    savepoints: Arc<Savepoints>,
}

/// The savepoints in flight or completed in this run, by id, with whether
/// each one completed.
type Savepoints = Mutex<BTreeMap<u64, (Arc<floe_checkpoint::SavepointStorage>, bool)>>;

impl SnapshotTargets {
    /// Targets writing checkpoints to `checkpoints` (none: checkpointing
    /// is off, only savepoints are written).
    pub fn new(checkpoints: Option<Arc<dyn CheckpointStore>>) -> Self {
        SnapshotTargets {
            checkpoints,
            savepoints: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn savepoint(&self, id: u64) -> Option<(Arc<floe_checkpoint::SavepointStorage>, bool)> {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub(super) fn register_savepoint(
        &self,
        id: u64,
        storage: Arc<floe_checkpoint::SavepointStorage>,
    ) {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (storage, false));
    }

    /// Where savepoint `id` of this run is written, if it is one.
    pub fn savepoint_location(&self, id: u64) -> Option<String> {
        self.savepoint(id).map(|(s, _)| s.location().to_string())
    }

    /// Routes snapshot `id` to the savepoint directory at `location`, which
    /// another process created: a TaskManager told by its JobManager,
    /// before the savepoint's barrier reaches its tasks.
    pub fn attach_savepoint(&self, id: u64, location: &str) -> Result<(), StoreError> {
        let storage = floe_checkpoint::SavepointStorage::attach(location)?;
        self.register_savepoint(id, Arc::new(storage));
        Ok(())
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

    fn checkpoints(&self, id: u64) -> Result<&Arc<dyn CheckpointStore>, StoreError> {
        self.checkpoints
            .as_ref()
            .ok_or(StoreError::CheckpointingOff { checkpoint_id: id })
    }
}

impl CheckpointStore for SnapshotTargets {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
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

    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        self.checkpoints(0)?.read_state(file, kind)
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
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

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        self.checkpoints(checkpoint_id)?
            .read_metadata(checkpoint_id)
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
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

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        match self.savepoint(checkpoint_id) {
            Some((_, true)) => Ok(()),
            Some((sp, false)) => CheckpointStore::discard_incomplete(sp.as_ref(), checkpoint_id),
            None => match &self.checkpoints {
                Some(c) => c.discard_incomplete(checkpoint_id),
                None => Ok(()),
            },
        }
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
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

    /// The checkpoint storage's shared directory, refusing savepoint ids.
    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        let inner = self.checkpoints.as_ref()?.shared_state()?;
        Some(Arc::new(RoutedShared {
            inner,
            savepoints: self.savepoints.clone(),
        }))
    }
}

/// The checkpoint storage's shared directory as the uploaders see it: a
/// savepoint is self-contained, so incremental state for a savepoint id is
/// refused.
struct RoutedShared {
    inner: Arc<dyn SharedStateStore>,
    savepoints: Arc<Savepoints>,
}

impl SharedStateStore for RoutedShared {
    fn prefix(&self) -> String {
        self.inner.prefix()
    }

    fn write_shared(
        &self,
        checkpoint_id: u64,
        name: &str,
        size_hint: usize,
        produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        let is_savepoint = self
            .savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&checkpoint_id);
        if is_savepoint {
            return Err(StoreError::NoSharedDirectory {
                checkpoint_id,
                reason: "savepoints are self-contained",
            });
        }
        self.inner
            .write_shared(checkpoint_id, name, size_hint, produce)
    }

    fn delete_shared(&self, file: &StateHandle) -> Result<(), StoreError> {
        self.inner.delete_shared(file)
    }

    fn discard_shared(&self) -> Result<(), StoreError> {
        self.inner.discard_shared()
    }

    fn list_shared(&self) -> Result<Vec<StateHandle>, StoreError> {
        self.inner.list_shared()
    }
}
