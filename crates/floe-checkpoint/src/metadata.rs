//! The `_metadata` payload of a checkpoint or savepoint: which state files
//! make up the snapshot, with each file's size and checksum.
//!
//! It lives here, beside the storage, because deciding what a snapshot
//! owns needs it: a dispose or discard reads and verifies `_metadata`
//! first and then deletes exactly the files it lists, nothing else. The
//! runtime writes it and loads the state it lists.
//!
//! The payload is postcard, with the format version as its first field.
//! Version 4 (this build) records a checksum per state file; versions 2
//! (before incremental checkpoints) and 3 (before checksums) still read,
//! their files with no checksum to verify.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::handle::StateHandle;

/// The version of the `_metadata` payload layout written by this build; a
/// snapshot of a version this build does not know is refused with a clear
/// error instead of misread.
pub const METADATA_FORMAT_VERSION: u32 = 4;

/// The oldest `_metadata` version this build still reads.
pub const OLDEST_READABLE_METADATA_VERSION: u32 = 2;

/// Why a `_metadata` payload cannot be read. The caller adds where the
/// file is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The payload does not even start with a format version.
    #[error("invalid checkpoint metadata: no format version ({reason})")]
    NoVersion {
        /// The decoder's reason (not the error's `source`: the message
        /// includes it).
        reason: postcard::Error,
    },
    /// Written by a Floe whose layout this build does not know.
    #[error(
        "checkpoint metadata of format version {found} cannot be read by this Floe (it reads versions {OLDEST_READABLE_METADATA_VERSION} to {METADATA_FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version in the payload.
        found: u32,
    },
    /// A known version whose body does not decode.
    #[error("invalid checkpoint metadata of format version {version}: {reason}")]
    Invalid {
        /// The version in the payload.
        version: u32,
        /// The decoder's reason (not the error's `source`: the message
        /// includes it).
        reason: postcard::Error,
    },
    /// A known version whose body decodes with bytes left after it: not
    /// what this version writes.
    #[error(
        "invalid checkpoint metadata of format version {version}: {extra} unexpected bytes after the end"
    )]
    TrailingBytes {
        /// The version in the payload.
        version: u32,
        /// How many bytes follow the body.
        extra: usize,
    },
}

/// One operator subtask's entry in a checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskStateMeta {
    /// The subtask index.
    pub subtask: u32,
    /// Its keyed state file.
    pub keyed: Option<StateHandle>,
    /// Small raw state (a source position), inlined.
    pub raw: Option<Vec<u8>>,
    /// Its operator state file.
    pub operator: Option<StateHandle>,
    /// In-flight records of an unaligned checkpoint, replayed into this
    /// operator subtask before new input.
    pub channel: Option<StateHandle>,
    /// Its keyed state in RocksDB's own files (an incremental checkpoint):
    /// the manifest, instead of `keyed`.
    pub keyed_native: Option<StateHandle>,
    /// The shared files its native keyed state references (each once):
    /// what the shared-state registry counts.
    pub shared: Vec<StateHandle>,
}

/// What a snapshot records about an operator besides its state: what a
/// restore checks (max parallelism) and what `floe info` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshotInfo {
    /// The operator's display name when the snapshot was taken.
    pub name: String,
    /// Its parallelism then.
    pub parallelism: u32,
    /// Its number of key groups, which a restore must keep.
    pub max_parallelism: u32,
    /// Whether the max parallelism was set explicitly (else derived from
    /// the parallelism, and adopted by a restore at another parallelism).
    pub max_parallelism_explicit: bool,
}

/// The `_metadata` of a completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// [`METADATA_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// When it was triggered (ms since the epoch).
    pub timestamp_ms: u64,
    /// A savepoint rather than a checkpoint.
    pub is_savepoint: bool,
    /// Per operator uid: name, parallelism, max parallelism.
    pub operator_info: BTreeMap<String, OperatorSnapshotInfo>,
    /// Per operator uid, per subtask.
    pub operators: BTreeMap<String, Vec<SubtaskStateMeta>>,
}

/// A state handle as versions 2 and 3 wrote it (no checksum).
#[derive(Deserialize)]
struct StateHandleV3 {
    path: String,
    size: u64,
}

impl From<StateHandleV3> for StateHandle {
    fn from(h: StateHandleV3) -> Self {
        StateHandle {
            path: h.path,
            size: h.size,
            checksum: None,
        }
    }
}

/// [`SubtaskStateMeta`] as format version 2 wrote it (no native state).
#[derive(Deserialize)]
struct SubtaskStateMetaV2 {
    subtask: u32,
    keyed: Option<StateHandleV3>,
    raw: Option<Vec<u8>>,
    operator: Option<StateHandleV3>,
    channel: Option<StateHandleV3>,
}

/// [`SubtaskStateMeta`] as format version 3 wrote it.
#[derive(Deserialize)]
struct SubtaskStateMetaV3 {
    subtask: u32,
    keyed: Option<StateHandleV3>,
    raw: Option<Vec<u8>>,
    operator: Option<StateHandleV3>,
    channel: Option<StateHandleV3>,
    keyed_native: Option<StateHandleV3>,
    shared: Vec<StateHandleV3>,
}

/// [`CheckpointMetadata`] as versions 2 and 3 wrote it, over their
/// subtask entries.
#[derive(Deserialize)]
struct CheckpointMetadataOld<S> {
    format_version: u32,
    checkpoint_id: u64,
    timestamp_ms: u64,
    is_savepoint: bool,
    operator_info: BTreeMap<String, OperatorSnapshotInfo>,
    operators: BTreeMap<String, Vec<S>>,
}

impl<S> CheckpointMetadataOld<S> {
    fn upgrade(self, subtask: impl Fn(S) -> SubtaskStateMeta) -> CheckpointMetadata {
        CheckpointMetadata {
            format_version: self.format_version,
            checkpoint_id: self.checkpoint_id,
            timestamp_ms: self.timestamp_ms,
            is_savepoint: self.is_savepoint,
            operator_info: self.operator_info,
            operators: self
                .operators
                .into_iter()
                .map(|(uid, subtasks)| (uid, subtasks.into_iter().map(&subtask).collect()))
                .collect(),
        }
    }
}

/// Decodes the whole of `bytes` as one `T`: trailing bytes are an error.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], version: u32) -> Result<T, MetadataError> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|reason| MetadataError::Invalid { version, reason })?;
    if !rest.is_empty() {
        return Err(MetadataError::TrailingBytes {
            version,
            extra: rest.len(),
        });
    }
    Ok(value)
}

impl CheckpointMetadata {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("metadata is serializable")
    }

    /// Decodes stored bytes of any readable version.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        let version: u32 = postcard::take_from_bytes::<u32>(bytes)
            .map(|(v, _)| v)
            .map_err(|reason| MetadataError::NoVersion { reason })?;
        match version {
            2 => Ok(
                decode_exact::<CheckpointMetadataOld<SubtaskStateMetaV2>>(bytes, version)?.upgrade(
                    |s| SubtaskStateMeta {
                        subtask: s.subtask,
                        keyed: s.keyed.map(Into::into),
                        raw: s.raw,
                        operator: s.operator.map(Into::into),
                        channel: s.channel.map(Into::into),
                        keyed_native: None,
                        shared: Vec::new(),
                    },
                ),
            ),
            3 => Ok(
                decode_exact::<CheckpointMetadataOld<SubtaskStateMetaV3>>(bytes, version)?.upgrade(
                    |s| SubtaskStateMeta {
                        subtask: s.subtask,
                        keyed: s.keyed.map(Into::into),
                        raw: s.raw,
                        operator: s.operator.map(Into::into),
                        channel: s.channel.map(Into::into),
                        keyed_native: s.keyed_native.map(Into::into),
                        shared: s.shared.into_iter().map(Into::into).collect(),
                    },
                ),
            ),
            METADATA_FORMAT_VERSION => decode_exact(bytes, version),
            found => Err(MetadataError::UnsupportedVersion { found }),
        }
    }

    /// Every shared file the snapshot references, each once.
    pub fn shared_files(&self) -> Vec<StateHandle> {
        let mut seen = HashSet::new();
        self.operators
            .values()
            .flatten()
            .flat_map(|s| s.shared.iter())
            .filter(|f| seen.insert(f.path.clone()))
            .cloned()
            .collect()
    }

    /// Every state file the snapshot wrote for itself (keyed, native
    /// manifest, operator and channel state), not the shared files it
    /// references: what disposing of it deletes.
    pub fn own_files(&self) -> Vec<StateHandle> {
        self.operators
            .values()
            .flatten()
            .flat_map(|s| [&s.keyed, &s.keyed_native, &s.operator, &s.channel])
            .flatten()
            .cloned()
            .collect()
    }
}
