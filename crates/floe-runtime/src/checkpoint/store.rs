//! The storage side of a checkpoint as the runtime sees it: the
//! [`CheckpointStore`] trait the uploaders, the coordinator and a restore
//! write and read through, and what a state file holds.

use std::sync::Arc;

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
/// `floe-checkpoint` (`storage.rs`), by the routing of snapshot ids
/// (`targets.rs`), and in memory by tests.
///
/// No method has a default body: a wrapper around another store (fault
/// injection, metrics, encryption) must say what each one does, so one it
/// forgets to forward is a compile error rather than cleanup that silently
/// stops. The shared directory of incremental checkpoints is one required
/// accessor, [`CheckpointStore::shared_state`], rather than five methods,
/// so a store without one says so once and incremental checkpoints through
/// it fail with a clear error. A wrapper that forgets it does not compile:
///
/// ```compile_fail
/// use floe_checkpoint::{JobCheckpointStorage, StateHandle};
/// use floe_runtime::checkpoint::{CheckpointStore, PayloadError, StateFileKind, StoreError};
///
/// struct Counting(JobCheckpointStorage);
///
/// impl CheckpointStore for Counting {
///     fn write_state(
///         &self,
///         checkpoint_id: u64,
///         name: &str,
///         kind: StateFileKind,
///         size_hint: usize,
///         encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
///     ) -> Result<StateHandle, StoreError> {
///         self.0.write_state(checkpoint_id, name, kind, size_hint, encode)
///     }
///     fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
///         self.0.read_state(file, kind)
///     }
///     fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
///         CheckpointStore::complete(&self.0, checkpoint_id, metadata)
///     }
///     fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
///         CheckpointStore::read_metadata(&self.0, checkpoint_id)
///     }
///     fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
///         self.0.discard(checkpoint_id)
///     }
///     fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
///         CheckpointStore::discard_incomplete(&self.0, checkpoint_id)
///     }
///     fn completed(&self) -> Result<Vec<u64>, StoreError> {
///         self.0.completed()
///     }
///     fn location(&self, checkpoint_id: u64) -> Option<String> {
///         self.0.location(checkpoint_id)
///     }
///     // `shared_state` forgotten: error[E0046], not a silent `None`.
/// }
/// ```
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
    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError>;
    /// Ids of completed checkpoints, ascending.
    fn completed(&self) -> Result<Vec<u64>, StoreError>;
    /// Where checkpoint `checkpoint_id` is, as a URL, when it has a place
    /// a user can name (`None` for memory storage).
    fn location(&self, checkpoint_id: u64) -> Option<String>;
    /// The job's shared directory of incremental state, or `None` when
    /// this store has none (memory, a savepoint): incremental checkpoints
    /// through it are then refused ([`StoreError::NoSharedDirectory`]).
    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>>;
}

/// The job's `shared/` directory: files of incremental (RocksDB native)
/// state that several checkpoints reference, written once and deleted when
/// the last retained checkpoint referencing them goes. Reached through
/// [`CheckpointStore::shared_state`]; every method is required.
pub trait SharedStateStore: Send + Sync {
    /// The relative path prefix of the job's shared files
    /// (`<job>/shared/`): only files under it are this job's to delete.
    fn prefix(&self) -> String;
    /// Writes a file of incremental state for checkpoint `checkpoint_id`
    /// under `name`; `produce` appends its payload (about `size_hint`
    /// bytes) in place.
    fn write_shared(
        &self,
        checkpoint_id: u64,
        name: &str,
        size_hint: usize,
        produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError>;
    /// Deletes a shared file no retained checkpoint references any more.
    fn delete_shared(&self, file: &StateHandle) -> Result<(), StoreError>;
    /// Deletes the whole shared directory (the job's last checkpoint went).
    fn discard_shared(&self) -> Result<(), StoreError>;
    /// Every file in the shared directory.
    fn list_shared(&self) -> Result<Vec<StateHandle>, StoreError>;
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
