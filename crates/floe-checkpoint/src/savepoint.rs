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
//!
//! Floe deletes a savepoint only when asked to dispose of it, and then only
//! what its verified `_metadata` vouches for: the directory must hold a
//! Floe `_metadata` of a savepoint, the files it lists (each checked), and
//! nothing else. A directory that is anything else is refused untouched.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use url::Url;

use floe_core::JobId;

use crate::format::{self, FileKind};
use crate::storage::{
    CheckpointStorage, METADATA_FILE_NAME, Removal, Settings, StateHandle, StorageError,
    WriteError, validate_file_name,
};

/// The prefix of a savepoint directory's name (Flink's).
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// One savepoint directory: written by a savepoint, read by a restore,
/// removed only by an explicit dispose.
#[derive(Debug, Clone)]
pub struct SavepointStorage {
    /// Rooted at the savepoint directory, so handles are relative to it.
    storage: CheckpointStorage,
    /// The files this handle (and its clones) started writing: all that
    /// discarding an incomplete savepoint may delete.
    written: Arc<Mutex<BTreeSet<String>>>,
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
        Ok(SavepointStorage {
            storage,
            written: Arc::default(),
        })
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
        let sp = SavepointStorage {
            storage,
            written: Arc::default(),
        };
        if !sp.storage.exists(&sp.metadata_path())? {
            return Err(not_a_savepoint(format!(
                "it has no {METADATA_FILE_NAME} (an incomplete savepoint, or not a savepoint directory)"
            )));
        }
        Ok(sp)
    }

    /// Opens the directory of a savepoint in progress that another process
    /// created (a cluster's JobManager), so that this one (a TaskManager)
    /// writes its state files into it. Nothing is checked but that the
    /// location can be opened: the savepoint completes only when the
    /// JobManager writes its `_metadata`.
    pub fn attach(location: &str) -> Result<Self, StorageError> {
        let url = path_to_url(location).map_err(|reason| StorageError::SavepointTarget {
            target: location.to_string(),
            reason,
        })?;
        Ok(SavepointStorage {
            storage: CheckpointStorage::open(url.as_str(), Settings::ProcessEnv, false)?,
            written: Arc::default(),
        })
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
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file_name.to_string());
        let path = self.storage.root().clone().join(file_name);
        self.storage
            .write_framed(&path, kind, payload_hint, produce)
    }

    /// Reads and verifies a state file of this savepoint. Its handle must
    /// be a plain file name: a savepoint is self-contained, so `_metadata`
    /// naming a file anywhere else is refused.
    pub fn read_state_file(
        &self,
        handle: &StateHandle,
        kind: FileKind,
    ) -> Result<Vec<u8>, StorageError> {
        if validate_file_name(&handle.path).is_err() {
            return Err(StorageError::InvalidHandle {
                path: handle.path.clone(),
                reason: "a savepoint's state files are plain file names in its directory".into(),
            });
        }
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

    /// Deletes the savepoint, refusing (and deleting nothing) unless the
    /// directory is provably one: its `_metadata` must be a Floe file
    /// (magic, version, CRC, kind) whose payload decodes and says
    /// "savepoint"; each file it lists must be a plain name in the
    /// directory with the recorded size and a Floe frame; and the
    /// directory must hold nothing else (other files, subdirectories) but
    /// staging sidecars of those. Then `_metadata` goes first (so an
    /// interrupted dispose leaves no restorable half), then the listed
    /// files, then the directory.
    pub fn dispose(self) -> Result<(), StorageError> {
        let dir = self.storage.root().clone();
        let refuse = |reason: String| StorageError::DeleteRefused {
            location: self.location().to_string(),
            reason,
        };
        let metadata_path = self.metadata_path();
        let meta = match self.storage.read_verified_metadata(&metadata_path) {
            Ok(Some(meta)) => meta,
            Ok(None) => return Err(refuse(format!("it has no {METADATA_FILE_NAME}"))),
            Err(e) => {
                return Err(refuse(format!(
                    "its {METADATA_FILE_NAME} is not a Floe snapshot's: {e}"
                )));
            }
        };
        if !meta.is_savepoint {
            return Err(refuse(format!(
                "its {METADATA_FILE_NAME} is checkpoint {}'s, not a savepoint's (a copied chk-<n> directory?); checkpoints are removed by their job",
                meta.checkpoint_id
            )));
        }
        if !meta.shared_files().is_empty() {
            return Err(refuse(format!(
                "its {METADATA_FILE_NAME} references shared incremental state, which no savepoint does"
            )));
        }
        let mut names = BTreeSet::from([METADATA_FILE_NAME.to_string()]);
        let files = meta.own_files();
        for handle in &files {
            if validate_file_name(&handle.path).is_err() {
                return Err(refuse(format!(
                    "its {METADATA_FILE_NAME} lists {:?}, which is not a file name in the savepoint directory",
                    handle.path
                )));
            }
            names.insert(handle.path.clone());
        }
        let sidecar = |entry: &str| {
            entry.rsplit_once('#').is_some_and(|(base, n)| {
                names.contains(base) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            })
        };
        let foreign: Vec<String> = self
            .storage
            .dir_entries(&dir)?
            .into_iter()
            .filter(|e| e.ends_with('/') || !(names.contains(e) || sidecar(e)))
            .collect();
        if !foreign.is_empty() {
            return Err(refuse(format!(
                "it also holds {} that the savepoint's {METADATA_FILE_NAME} does not list: {} (move or delete {} first)",
                if foreign.len() == 1 {
                    "an entry"
                } else {
                    "entries"
                },
                foreign.join(", "),
                if foreign.len() == 1 { "it" } else { "them" },
            )));
        }
        for handle in &files {
            self.storage
                .verify_owned(&dir.clone().join(handle.path.as_str()), handle)
                .map_err(|e| refuse(format!("{e}")))?;
        }
        self.storage.delete_file(&metadata_path)?;
        let removal = self.storage.delete_owned(&dir, &names)?;
        if removal.left.is_empty() {
            Ok(())
        } else {
            Err(StorageError::NotRemoved {
                location: self.location().to_string(),
                left: removal.left,
            })
        }
    }

    /// Removes what this handle wrote for a savepoint that did not
    /// complete (it has no `_metadata`): exactly those files and their
    /// staging sidecars, then the directory if that empties it. A completed
    /// savepoint is refused: it belongs to the user.
    pub fn discard_incomplete(&self) -> Result<Removal, StorageError> {
        if self.storage.exists(&self.metadata_path())? {
            return Err(StorageError::DeleteRefused {
                location: self.location().to_string(),
                reason: "it is a completed savepoint; only `floe savepoint -d` disposes of it"
                    .into(),
            });
        }
        let names = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        self.storage.delete_owned(self.storage.root(), &names)
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
