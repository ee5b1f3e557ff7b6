//! [`CheckpointStore`] over `floe-checkpoint`'s storages: a job's checkpoint
//! storage and a savepoint directory.

use floe_checkpoint::StateHandle;

use floe_checkpoint::WriteError;

use super::error::{PayloadError, StoreError};
use super::store::{CheckpointStore, StateFileKind};

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
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        self.write_state_file_with(&state_file_name(name), file_kind(kind), size_hint, encode)
            .map_err(from_write)
    }

    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        self.read_state_file(file, file_kind(kind))
            .map_err(StoreError::from)
    }

    fn complete(&self, _checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
        floe_checkpoint::SavepointStorage::complete(self, metadata)
            .map(|_| ())
            .map_err(StoreError::from)
    }

    fn read_metadata(&self, _checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        floe_checkpoint::SavepointStorage::read_metadata(self).map_err(StoreError::from)
    }

    fn discard(&self, _checkpoint_id: u64) -> Result<(), StoreError> {
        // A completed savepoint is the user's: only `floe savepoint -d`
        // disposes of it; this removes an aborted one.
        warn_left(
            "an aborted savepoint",
            floe_checkpoint::SavepointStorage::discard_incomplete(self),
        )
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
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
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        self.write_state_file_with(
            checkpoint_id,
            &state_file_name(name),
            file_kind(kind),
            size_hint,
            encode,
        )
        .map_err(from_write)
    }

    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        self.read_state_file(file, file_kind(kind))
            .map_err(StoreError::from)
    }

    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
        self.complete_checkpoint(checkpoint_id, metadata)
            .map(|_| ())
            .map_err(StoreError::from)
    }

    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        floe_checkpoint::JobCheckpointStorage::read_metadata(self, checkpoint_id)
            .map_err(StoreError::from)
    }

    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        warn_left(
            "a discarded checkpoint",
            self.discard_checkpoint(checkpoint_id),
        )
    }

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        warn_left(
            "an aborted checkpoint",
            floe_checkpoint::JobCheckpointStorage::discard_incomplete(self, checkpoint_id),
        )
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
        self.completed_checkpoints().map_err(StoreError::from)
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
        produce: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        self.write_shared_file(name, size_hint, produce)
            .map_err(from_write)
    }

    fn shared_prefix(&self) -> Option<String> {
        Some(floe_checkpoint::JobCheckpointStorage::shared_prefix(self))
    }

    fn delete_shared(&self, file: &StateHandle) -> Result<(), StoreError> {
        self.delete_shared_file(file).map_err(StoreError::from)
    }

    fn discard_shared(&self) -> Result<(), StoreError> {
        warn_left(
            "the shared state directory",
            floe_checkpoint::JobCheckpointStorage::discard_shared(self),
        )
    }

    fn list_shared(&self) -> Result<Vec<StateHandle>, StoreError> {
        self.list_shared_files().map_err(StoreError::from)
    }
}

/// Reports what a discard left because the snapshot did not own it.
fn warn_left(
    what: &str,
    result: Result<floe_checkpoint::Removal, floe_checkpoint::StorageError>,
) -> Result<(), StoreError> {
    let removal = result.map_err(StoreError::from)?;
    if !removal.left.is_empty() {
        tracing::warn!(
            "kept the directory of {what}: it holds entries the snapshot does not own, left untouched: {}",
            removal.left.join(", ")
        );
    }
    Ok(())
}

/// A failed write of a file whose payload a producer appends: the storage's
/// fault, or the producer's.
fn from_write(e: WriteError<PayloadError>) -> StoreError {
    match e {
        WriteError::Storage(e) => StoreError::Storage(e),
        WriteError::Produce(e) => StoreError::Payload(e),
    }
}
