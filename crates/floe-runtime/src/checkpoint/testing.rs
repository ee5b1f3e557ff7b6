//! An in-memory [`CheckpointStore`] for the checkpoint module's unit tests:
//! it records what was written, completed and discarded, and can fail on
//! demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use floe_checkpoint::StateHandle;

use super::error::{PayloadError, StoreError};
use super::store::{CheckpointStore, SharedStateStore, StateFileKind};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checkpoint files and `_metadata` in memory, by path.
#[derive(Default)]
pub(crate) struct MemoryStore {
    /// State files by path (`chk-<n>/<name>`).
    pub(crate) files: Mutex<BTreeMap<String, Vec<u8>>>,
    /// `_metadata` of completed checkpoints.
    pub(crate) metadata: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// Ids whose `_metadata` write fails.
    pub(crate) fail_complete: Mutex<BTreeSet<u64>>,
    /// Ids passed to `discard` and `discard_incomplete`, in order.
    pub(crate) discarded: Mutex<Vec<u64>>,
    /// The shared directory, when the store has one.
    pub(crate) shared: Option<Arc<MemoryShared>>,
}

/// A shared directory in memory.
#[derive(Default)]
pub(crate) struct MemoryShared {
    /// Files by path (`job/shared/<name>`).
    pub(crate) files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// A store with a shared directory.
    pub(crate) fn with_shared_dir() -> Self {
        MemoryStore {
            shared: Some(Arc::default()),
            ..Default::default()
        }
    }

    /// Paths of the state files of checkpoint `id`.
    pub(crate) fn files_of(&self, id: u64) -> Vec<String> {
        let prefix = format!("chk-{id}/");
        lock(&self.files)
            .keys()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn remove_checkpoint(&self, id: u64) {
        let prefix = format!("chk-{id}/");
        lock(&self.files).retain(|p, _| !p.starts_with(&prefix));
        lock(&self.metadata).remove(&id);
        lock(&self.discarded).push(id);
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Other(format!("injected failure: {what}").into())
}

fn produce(
    size_hint: usize,
    produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(size_hint);
    produce(&mut out)?;
    Ok(out)
}

impl CheckpointStore for MemoryStore {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        _kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        let bytes = produce(size_hint, encode)?;
        let path = format!("chk-{checkpoint_id}/{name}");
        let size = bytes.len() as u64;
        lock(&self.files).insert(path.clone(), bytes);
        Ok(StateHandle {
            path,
            size,
            checksum: None,
        })
    }

    fn read_state(&self, file: &StateHandle, _kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        lock(&self.files)
            .get(&file.path)
            .cloned()
            .ok_or_else(|| injected(&format!("{} is missing", file.path)))
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
        if lock(&self.fail_complete).contains(&checkpoint_id) {
            return Err(injected("metadata write"));
        }
        lock(&self.metadata).insert(checkpoint_id, metadata.to_vec());
        Ok(())
    }

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        lock(&self.metadata)
            .get(&checkpoint_id)
            .cloned()
            .ok_or_else(|| injected("no such checkpoint"))
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.remove_checkpoint(checkpoint_id);
        Ok(())
    }

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.remove_checkpoint(checkpoint_id);
        Ok(())
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
        Ok(lock(&self.metadata).keys().copied().collect())
    }

    fn location(&self, _checkpoint_id: u64) -> Option<String> {
        None
    }

    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        self.shared.clone().map(|s| s as Arc<dyn SharedStateStore>)
    }
}

impl SharedStateStore for MemoryShared {
    fn prefix(&self) -> String {
        "job/shared/".into()
    }

    fn write_shared(
        &self,
        _checkpoint_id: u64,
        name: &str,
        size_hint: usize,
        payload: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        let bytes = produce(size_hint, payload)?;
        let path = format!("{}{name}", self.prefix());
        let size = bytes.len() as u64;
        lock(&self.files).insert(path.clone(), bytes);
        Ok(StateHandle {
            path,
            size,
            checksum: None,
        })
    }

    fn delete_shared(&self, file: &StateHandle) -> Result<(), StoreError> {
        lock(&self.files).remove(&file.path);
        Ok(())
    }

    fn discard_shared(&self) -> Result<(), StoreError> {
        lock(&self.files).clear();
        Ok(())
    }

    fn list_shared(&self) -> Result<Vec<StateHandle>, StoreError> {
        Ok(lock(&self.files)
            .iter()
            .map(|(path, bytes)| StateHandle {
                path: path.clone(),
                size: bytes.len() as u64,
                checksum: None,
            })
            .collect())
    }
}
