//! Savepoints: user-triggered, self-contained snapshots that Floe never
//! deletes on its own.
//!
//! ```text
//! <target dir>/savepoint-<first 6 of job id>-<random>/<state file>…
//! <target dir>/savepoint-<first 6 of job id>-<random>/_metadata   written last
//! ```
//!
//! Unlike a checkpoint, whose state handles are relative to the checkpoint
//! storage root, a savepoint's handles are relative to the savepoint
//! directory itself: the directory can be moved, renamed or copied to
//! another store and still restores. Like a checkpoint, it exists exactly
//! when its `_metadata` exists.

use object_store::path::Path;
use url::Url;

use floe_core::JobId;

use crate::format::{self, FileKind};
use crate::storage::{
    CheckpointStorage, METADATA_FILE_NAME, Settings, StateHandle, StorageError, WriteError,
    validate_file_name,
};

/// The prefix of a savepoint directory's name (Flink's).
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// One savepoint directory: written by a savepoint, read by a restore,
/// removed only by an explicit dispose.
#[derive(Debug, Clone)]
pub struct SavepointStorage {
    /// Rooted at the savepoint directory, so handles are relative to it.
    storage: CheckpointStorage,
}

/// A user-typed path or URL as a URL: an absolute path without a scheme is
/// a local path, as a command-line user types it.
pub(crate) fn path_to_url(path: &str) -> Result<Url, String> {
    let given = path.trim();
    if given.starts_with('/') {
        Url::from_file_path(given).map_err(|()| "not an absolute local path".to_string())
    } else if given.contains("://") {
        Url::parse(given).map_err(|e| e.to_string())
    } else {
        Err("expected an absolute path or a URL (file:///…, s3://…, gs://…, az://…)".to_string())
    }
}

impl SavepointStorage {
    /// Creates a new, empty savepoint directory
    /// `savepoint-<first 6 of job id>-<12 random hex>` under `target` (a
    /// local path or a `file://`, `s3://`, `gs://`, `az://` URL). Savepoints
    /// must outlive the process, so `jobmanager` memory is refused.
    pub fn create(target: &str, job_id: JobId) -> Result<Self, StorageError> {
        let refused = |reason: String| StorageError::SavepointTarget {
            target: target.to_string(),
            reason,
        };
        if target
            .trim()
            .eq_ignore_ascii_case(crate::storage::JOBMANAGER_STORAGE)
        {
            return Err(refused(
                "savepoints must outlive the job, so they cannot be kept in JobManager memory"
                    .into(),
            ));
        }
        let mut url = path_to_url(target).map_err(refused)?;
        let name = format!(
            "{SAVEPOINT_DIR_PREFIX}{}-{:012x}",
            &job_id.to_string()[..6],
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        url.path_segments_mut()
            .map_err(|()| refused("the URL cannot have a path".into()))?
            .pop_if_empty()
            .push(&name);
        let storage = CheckpointStorage::open(url.as_str(), Settings::ProcessEnv, true)?;
        Ok(SavepointStorage { storage })
    }

    /// Opens an existing, completed savepoint: its directory, or its
    /// `_metadata` file.
    pub fn open(path: &str) -> Result<Self, StorageError> {
        let not_a_savepoint = |reason: String| StorageError::NotASavepoint {
            location: path.to_string(),
            reason,
        };
        let mut url = path_to_url(path).map_err(not_a_savepoint)?;
        let is_metadata = url
            .path_segments()
            .and_then(|mut s| s.rfind(|s| !s.is_empty()))
            .is_some_and(|last| last == METADATA_FILE_NAME);
        if is_metadata {
            url.path_segments_mut()
                .map_err(|()| not_a_savepoint("the URL cannot have a path".into()))?
                .pop_if_empty()
                .pop();
        }
        let storage = match CheckpointStorage::open(url.as_str(), Settings::ProcessEnv, false) {
            Ok(s) => s,
            Err(StorageError::DirectoryNotFound { path: dir }) => {
                return Err(not_a_savepoint(format!(
                    "the directory {} does not exist",
                    dir.display()
                )));
            }
            Err(e) => return Err(e),
        };
        let sp = SavepointStorage { storage };
        if !sp.storage.exists(&sp.metadata_path())? {
            return Err(not_a_savepoint(format!(
                "it has no {METADATA_FILE_NAME} (an incomplete savepoint, or not a savepoint directory)"
            )));
        }
        Ok(sp)
    }

    /// The savepoint directory as a URL (what `floe run -s` takes).
    pub fn location(&self) -> &str {
        self.storage.url()
    }

    fn metadata_path(&self) -> Path {
        self.storage.root().clone().join(METADATA_FILE_NAME)
    }

    /// Writes one state file into the savepoint directory; the handle is
    /// the bare file name (relative to the savepoint, hence relocatable).
    pub fn write_state_file_with<E>(
        &self,
        file_name: &str,
        kind: FileKind,
        payload_hint: usize,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<StateHandle, WriteError<E>> {
        validate_file_name(file_name)?;
        let path = self.storage.root().clone().join(file_name);
        self.storage
            .write_framed(&path, kind, payload_hint, produce)
    }

    /// Reads and verifies a state file of this savepoint.
    pub fn read_state_file(
        &self,
        handle: &StateHandle,
        kind: FileKind,
    ) -> Result<Vec<u8>, StorageError> {
        self.storage.read_framed(handle, kind)
    }

    /// Writes `_metadata`, last and once: the savepoint now exists.
    pub fn complete(&self, metadata_payload: &[u8]) -> Result<StateHandle, StorageError> {
        let path = self.metadata_path();
        self.storage.put_new(
            &path,
            format::encode(FileKind::Metadata, metadata_payload),
            |location| StorageError::NotASavepoint {
                location,
                reason: "its _metadata already exists".into(),
            },
        )
    }

    /// Reads the `_metadata` payload.
    pub fn read_metadata(&self) -> Result<Vec<u8>, StorageError> {
        let path = self.metadata_path();
        let location = self.storage.display(&path);
        let bytes = self
            .storage
            .get(&path)?
            .ok_or_else(|| StorageError::NotASavepoint {
                location: self.location().to_string(),
                reason: format!("{location} does not exist"),
            })?;
        Ok(format::decode(&bytes, FileKind::Metadata, &location)?.to_vec())
    }

    /// Deletes the savepoint directory and everything in it: `_metadata`
    /// first, so an interrupted dispose leaves no restorable half.
    pub fn dispose(self) -> Result<(), StorageError> {
        self.storage
            .delete_snapshot_dir(self.storage.root(), &self.metadata_path())
    }

    /// Removes what an aborted savepoint wrote (it has no `_metadata`).
    pub fn discard_incomplete(&self) -> Result<(), StorageError> {
        self.clone().dispose()
    }
}

/// What a `-s` path names: a savepoint, or a retained checkpoint (Flink
/// restores from either with `-s`).
#[derive(Debug, Clone)]
pub enum SnapshotLocation {
    /// A `savepoint-…` directory (or any directory holding `_metadata`
    /// that is not a `chk-<n>`).
    Savepoint(SavepointStorage),
    /// A retained checkpoint.
    Checkpoint(crate::storage::ResolvedCheckpoint),
}

impl SnapshotLocation {
    /// Resolves a path given by a user: `…/chk-<n>[/_metadata]` and
    /// `…/<job id>` are checkpoints, anything else must be a savepoint.
    pub fn resolve(path: &str) -> Result<Self, StorageError> {
        let url = path_to_url(path).map_err(|reason| StorageError::NotASavepoint {
            location: path.to_string(),
            reason,
        })?;
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let mut last = segments.iter().rev().copied();
        let mut name = last.next().unwrap_or("");
        if name == METADATA_FILE_NAME {
            name = last.next().unwrap_or("");
        }
        let is_checkpoint = name
            .strip_prefix(crate::storage::CHECKPOINT_DIR_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            || name.parse::<JobId>().is_ok();
        if is_checkpoint {
            Ok(SnapshotLocation::Checkpoint(
                CheckpointStorage::resolve_checkpoint(path)?,
            ))
        } else {
            Ok(SnapshotLocation::Savepoint(SavepointStorage::open(path)?))
        }
    }
}
