//! Checkpoint configuration, checkpoint storage and the checkpoint file
//! format: what Floe's checkpoint coordinator needs to decide when to take a
//! checkpoint, where to put it, and how to write files a restore can trust.
//!
//! - [`config`]: [`CheckpointConfig`], Flink's checkpoint settings with its
//!   key names, defaults and range checks.
//! - [`format`](mod@format): the frame around every checkpoint file (magic, version,
//!   kind, length, CRC-32), so a truncated, corrupted or mixed-up file is an
//!   error naming the file.
//! - [`metadata`]: [`CheckpointMetadata`], the `_metadata` payload: the
//!   files of a snapshot with their sizes and checksums, what a restore
//!   reads and a dispose deletes.
//! - [`storage`]: [`CheckpointStorage`] on local disk, S3, GCS, Azure or
//!   JobManager memory with Flink's directory layout
//!   (`<dir>/<job id>/chk-<n>/_metadata`), a blocking API over
//!   `object_store`, and `_metadata` written last and atomically.
//!
//! The crate knows files and bytes, not state: what goes into a state file
//! or `_metadata` is up to the state backends and the coordinator.

#![warn(missing_docs)]

pub mod config;
#[cfg(target_os = "linux")]
mod direct_io;
pub mod format;
pub mod ha;
mod handle;
mod location;
pub mod metadata;
pub mod savepoint;
pub mod storage;

pub use config::{
    CheckpointConfig, CheckpointConfigError, CheckpointingMode, ExternalizedCheckpointRetention,
};
pub use format::{FileKind, FormatError};
pub use metadata::{
    CheckpointMetadata, METADATA_FORMAT_VERSION, MetadataError, OperatorSnapshotInfo,
    SubtaskStateMeta,
};
pub use savepoint::{SAVEPOINT_DIR_PREFIX, SavepointStorage, SnapshotLocation};
pub use storage::{
    CheckpointStorage, JobCheckpointStorage, Removal, ResolvedCheckpoint, StateHandle,
    StorageError, StorageKind, WriteError,
};
