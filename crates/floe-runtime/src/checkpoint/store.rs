//! The storage side of a checkpoint as the runtime sees it: the
//! [`CheckpointStore`] trait the uploaders, the coordinator and a restore
//! write and read through, and what a state file holds.

use floe_checkpoint::{CheckpointMetadata, StateHandle};

use super::error::{PayloadError, StoreError};

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
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError>;
    /// Reads a state file back (verifying it).
    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError>;
    /// Writes the metadata last and atomically: the checkpoint now exists.
    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError>;
    /// Reads a completed checkpoint's metadata.
    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError>;
    /// Deletes completed checkpoint `checkpoint_id`: what its `_metadata`
    /// lists, nothing else.
    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError>;
    /// Deletes what was written for checkpoint `checkpoint_id`, which did
    /// not complete (no `_metadata` lists its files): only the files this
    /// store wrote for it.
    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.discard(checkpoint_id)
    }
    /// Ids of completed checkpoints, ascending.
    fn completed(&self) -> Result<Vec<u64>, StoreError>;
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
        _produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        Err(StoreError::NoSharedDirectory {
            checkpoint_id,
            reason: "its storage has no shared directory",
        })
    }
    /// The relative path prefix of the job's shared files (`<job>/shared/`),
    /// when the storage has a shared directory.
    fn shared_prefix(&self) -> Option<String> {
        None
    }
    /// Deletes a shared file no retained checkpoint references any more.
    fn delete_shared(&self, _file: &StateHandle) -> Result<(), StoreError> {
        Ok(())
    }
    /// Deletes the job's whole shared directory (its last checkpoint went).
    fn discard_shared(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Every file in the job's shared directory (none without one).
    fn list_shared(&self) -> Result<Vec<StateHandle>, StoreError> {
        Ok(Vec::new())
    }
}

/// Bytes a frame adds to a payload (header and checksum): the stored size
/// of a shared file is its local size plus this.
pub const FRAME_OVERHEAD: u64 =
    (floe_checkpoint::format::HEADER_LEN + floe_checkpoint::format::TRAILER_LEN) as u64;

impl std::fmt::Debug for dyn CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointStore")
    }
}

/// Reads and decodes the `_metadata` of completed checkpoint
/// `checkpoint_id`.
pub fn read_checkpoint_metadata(
    store: &dyn CheckpointStore,
    checkpoint_id: u64,
) -> Result<CheckpointMetadata, StoreError> {
    let bytes = store.read_metadata(checkpoint_id)?;
    CheckpointMetadata::decode(&bytes).map_err(|source| StoreError::Metadata {
        checkpoint_id,
        source,
    })
}
