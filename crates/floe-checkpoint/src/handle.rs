//! The reference a checkpoint's metadata keeps to each state file.
//!
//! Its own module because both the metadata format and the storage use it,
//! and the storage reads metadata (to verify what it may delete): with the
//! handle in either, the two would import each other.

/// A reference to one state file in checkpoint storage, as recorded in a
/// checkpoint's metadata.
///
/// The path is relative to the storage root (`<job id>/chk-<n>/<file>`),
/// not absolute, so a checkpoint directory tree that is copied, moved or
/// mounted elsewhere still restores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StateHandle {
    /// The file's path relative to the checkpoint storage root.
    pub path: String,
    /// The file's size in bytes as stored (frame included), checked on read.
    pub size: u64,
    /// [`crate::format::file_checksum`] of the stored bytes, checked on read: a
    /// file replaced by another of the same size (another checkpoint's,
    /// another subtask's) is refused. `None` only for files listed by
    /// `_metadata` older than format version 4, which recorded none.
    pub checksum: Option<u64>,
}
