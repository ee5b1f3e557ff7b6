//! [`CheckpointStore`] over `floe-checkpoint`'s storages: a job's checkpoint
//! storage and a savepoint directory.

use floe_checkpoint::StateHandle;

use std::sync::Arc;

use floe_checkpoint::WriteError;

use super::error::{PayloadError, StoreError};
use super::store::{CheckpointStore, SharedStateStore, StateFileKind};

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

    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        CheckpointStore::discard(self, checkpoint_id)
    }

    fn completed(&self) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }

    fn location(&self, _checkpoint_id: u64) -> Option<String> {
        Some(floe_checkpoint::SavepointStorage::location(self).to_string())
    }

    /// None: a savepoint is self-contained, so it never holds incremental
    /// state.
    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        None
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

    /// Every kind of checkpoint storage has one: `<job id>/shared/`.
    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        Some(Arc::new(self.clone()))
    }
}

impl SharedStateStore for floe_checkpoint::JobCheckpointStorage {
    fn prefix(&self) -> String {
        self.shared_prefix()
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

#[cfg(test)]
mod tests {
    use floe_checkpoint::{CheckpointConfig, CheckpointStorage, JobCheckpointStorage};
    use floe_core::JobId;

    use super::*;

    /// The wrapper of `CheckpointStore`'s `compile_fail` example, with
    /// `shared_state` forwarded: it compiles, so the example fails for the
    /// one method it leaves out.
    struct Counting(JobCheckpointStorage);

    impl CheckpointStore for Counting {
        fn write_state(
            &self,
            checkpoint_id: u64,
            name: &str,
            kind: StateFileKind,
            size_hint: usize,
            encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
        ) -> Result<StateHandle, StoreError> {
            self.0
                .write_state(checkpoint_id, name, kind, size_hint, encode)
        }
        fn read_state(
            &self,
            file: &StateHandle,
            kind: StateFileKind,
        ) -> Result<Vec<u8>, StoreError> {
            self.0.read_state(file, kind)
        }
        fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
            CheckpointStore::complete(&self.0, checkpoint_id, metadata)
        }
        fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
            CheckpointStore::read_metadata(&self.0, checkpoint_id)
        }
        fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
            self.0.discard(checkpoint_id)
        }
        fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
            CheckpointStore::discard_incomplete(&self.0, checkpoint_id)
        }
        fn completed(&self) -> Result<Vec<u64>, StoreError> {
            self.0.completed()
        }
        fn location(&self, checkpoint_id: u64) -> Option<String> {
            self.0.location(checkpoint_id)
        }
        fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
            self.0.shared_state()
        }
    }

    #[test]
    fn a_forwarding_wrapper_keeps_the_shared_directory() {
        let storage = CheckpointStorage::for_config(&CheckpointConfig::default()).unwrap();
        let job = JobId::random();
        let wrapper = Counting(storage.job(job));
        let shared = wrapper.shared_state().expect("forwarded");
        assert_eq!(shared.prefix(), format!("{job}/shared/"));
        let file = shared
            .write_shared(1, "000000000000000a-1-000001.sst", 3, &mut |out| {
                out.extend_from_slice(b"sst");
                Ok(())
            })
            .unwrap();
        let listed: Vec<String> = shared
            .list_shared()
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(listed, vec![file.path.clone()]);
        shared.delete_shared(&file).unwrap();
        assert!(shared.list_shared().unwrap().is_empty());
    }
}
