//! Native snapshots: the RocksDB backend's own files, for incremental
//! checkpoints (`state.backend.incremental: true`).
//!
//! A canonical snapshot rewrites every entry at every checkpoint. A native
//! one hands over the files of a RocksDB checkpoint instead: SST files are
//! immutable, so one that an earlier, still retained checkpoint already
//! stored under the job's `shared/` directory is referenced, not uploaded
//! again; only new SST files and the small metadata files (`MANIFEST`,
//! `CURRENT`, `OPTIONS`) travel. The runtime uploads what
//! [`NativeSnapshot::sst`] marks as new, then writes the subtask's manifest
//! ([`NativeKeyedStateFile`]) with the references.
//!
//! Savepoints stay canonical (backend-independent); a native checkpoint
//! restores on RocksDB at any parallelism, and on the heap backend through a
//! conversion when Floe is built with RocksDB.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use floe_core::KeyGroup;

use crate::codec;
use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;

/// A file in checkpoint storage: its path relative to the storage root and
/// its stored size (the same fields as the runtime's state handles).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharedFileRef {
    /// Path relative to the checkpoint storage root.
    pub path: String,
    /// Size in bytes as stored.
    pub size: u64,
}

/// Where an SST file of a native snapshot comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SstSource {
    /// Not stored yet: upload it to the job's `shared/` directory under its
    /// shared name.
    Upload,
    /// Stored by the checkpoint this one builds on, in the job's `shared/`
    /// directory under its shared name: reference it.
    OwnShared,
    /// Stored at this path (restored from a checkpoint of this job):
    /// reference it.
    At(SharedFileRef),
}

/// One SST file of a native snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSstFile {
    /// Its name in the RocksDB checkpoint directory (`000123.sst`).
    pub name: String,
    /// Its name under `shared/`: the database's identity and the file name,
    /// unique because file names are only unique within one database.
    pub shared_name: String,
    /// Size in bytes.
    pub size: u64,
    /// Upload or reference.
    pub source: SstSource,
}

/// The synchronous part of a native snapshot: a RocksDB checkpoint
/// directory (hard links) and what to do with each of its files. The
/// directory is removed when this is dropped, after the upload.
#[derive(Debug)]
pub struct NativeSnapshot {
    pub(crate) dir: PathBuf,
    pub(crate) sst: Vec<NativeSstFile>,
    pub(crate) private: Vec<String>,
}

impl NativeSnapshot {
    /// The local checkpoint directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SST files, each to upload or to reference.
    pub fn sst(&self) -> &[NativeSstFile] {
        &self.sst
    }

    /// Bytes to upload (new SST files and the metadata files).
    pub fn upload_size(&self) -> u64 {
        let sst: u64 = self
            .sst
            .iter()
            .filter(|f| f.source == SstSource::Upload)
            .map(|f| f.size)
            .sum();
        let private: u64 = self
            .private
            .iter()
            .filter_map(|n| std::fs::metadata(self.dir.join(n)).ok())
            .map(|m| m.len())
            .sum();
        sst + private
    }
}

impl Drop for NativeSnapshot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                "cannot remove snapshot checkpoint {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// An SST file of a native keyed state file, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSharedFile {
    /// Its name in the database directory.
    pub name: String,
    /// Its name under `shared/`.
    pub shared_name: String,
    /// Where it is stored.
    pub file: SharedFileRef,
}

/// The payload of a subtask's native keyed state file: enough to rebuild
/// its RocksDB database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeKeyedStateFile {
    /// The job's number of key groups when the snapshot was taken.
    pub max_parallelism: u32,
    /// First key group owned by the subtask that wrote it.
    pub key_group_start: KeyGroup,
    /// Last key group owned by the subtask that wrote it.
    pub key_group_end: KeyGroup,
    /// Every state (column family) in the database.
    pub states: Vec<StateMeta>,
    /// The SST files, in shared storage.
    pub shared: Vec<NativeSharedFile>,
    /// The other files (`MANIFEST-*`, `CURRENT`, `OPTIONS-*`), inline.
    pub private: Vec<(String, Vec<u8>)>,
}

impl NativeKeyedStateFile {
    /// Decodes a native keyed state payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        codec::decode(bytes, "native keyed state snapshot")
    }

    /// The key-group range of the subtask that wrote it.
    pub fn key_group_range(&self) -> KeyGroupRange {
        KeyGroupRange::new(self.key_group_start, self.key_group_end)
    }

    /// Writes the database files into `dir` (which must exist): the
    /// private files from the manifest, each SST file through `fetch`
    /// (several at once: downloads are latency-bound).
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn materialize(
        &self,
        dir: &Path,
        fetch: &NativeFetch<'_>,
        operator: &str,
    ) -> Result<(), StateError> {
        let io = |what: &str, path: &Path, e: std::io::Error| StateError::Backend {
            operator: operator.to_string(),
            reason: format!("cannot {what} {}: {e}", path.display()),
        };
        for (name, bytes) in &self.private {
            check_file_name(name, operator)?;
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| io("write", &path, e))?;
        }
        const PARALLEL_DOWNLOADS: usize = 4;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let first_error = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_DOWNLOADS.min(self.shared.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = self.shared.get(i) else { break };
                        let result = check_file_name(&f.name, operator).and_then(|()| {
                            let bytes =
                                fetch(&f.file).map_err(|reason| StateError::FetchSharedFile {
                                    operator: operator.to_string(),
                                    path: f.file.path.clone(),
                                    reason,
                                })?;
                            let path = dir.join(&f.name);
                            std::fs::write(&path, bytes).map_err(|e| io("write", &path, e))
                        });
                        if let Err(e) = result {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Reads a shared file's payload from checkpoint storage. The storage is
/// the runtime's, so its error type is too (floe-runtime's `RestoreError`):
/// it comes back boxed, whole, inside [`StateError::FetchSharedFile`].
pub type NativeFetch<'a> =
    dyn Fn(&SharedFileRef) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> + Sync + 'a;

/// A restored file name must be a plain name: a manifest cannot write
/// outside the directory it is restored into.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
fn check_file_name(name: &str, operator: &str) -> Result<(), StateError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(())
    } else {
        Err(StateError::Backend {
            operator: operator.to_string(),
            reason: format!("native snapshot names an invalid file {name:?}"),
        })
    }
}
