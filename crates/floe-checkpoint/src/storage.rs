//! Checkpoint storage: where checkpoint files live, laid out as Flink lays
//! them out, behind one blocking API for local disk, S3, GCS, Azure and
//! JobManager memory.
//!
//! ```text
//! <checkpoint dir>/<job id>/chk-<n>/<state file>…   state of checkpoint n
//! <checkpoint dir>/<job id>/chk-<n>/_metadata       written last: n is complete
//! <checkpoint dir>/<job id>/shared/                 incremental state shared by checkpoints
//! <checkpoint dir>/<job id>/taskowned/              state owned by the tasks, not the coordinator
//! ```
//!
//! A checkpoint exists exactly when its `_metadata` exists. `_metadata` is
//! written after every state file of the checkpoint, in one atomic
//! put-if-absent, so a reader never sees a half-written one and a checkpoint
//! can be completed only once; a `chk-<n>` directory without it (a checkpoint
//! that failed or was aborted) is ignored. Discarding deletes `_metadata`
//! first, so a checkpoint whose discard is interrupted is no longer listed.
//!
//! Every file is framed by [`crate::format`], so a truncated, corrupted or
//! mixed-up file is an error naming it rather than state restored from
//! garbage.
//!
//! The rest of Floe runs on plain threads, so this API blocks. Each storage
//! owns a small tokio runtime (one worker thread plus a few blocking-I/O
//! threads) on which the `object_store` futures run; any number of threads
//! may call it at once. It must not be called from inside an async runtime
//! (that is reported as an error, not a panic).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use floe_core::JobId;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use url::Url;

use crate::config::CheckpointConfig;
use crate::format::{self, FileKind, FormatError};
use crate::metadata::CheckpointMetadata;

/// The name of the file that completes a checkpoint (Flink's name).
pub const METADATA_FILE_NAME: &str = "_metadata";

/// The prefix of a checkpoint's directory name: `chk-<n>`.
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// The directory of a job's incremental state shared between checkpoints.
pub const SHARED_STATE_DIR: &str = "shared";

/// The directory of state that tasks own (not discarded with a checkpoint).
pub const TASK_OWNED_STATE_DIR: &str = "taskowned";

pub use crate::location::JOBMANAGER_STORAGE;

/// Largest state file JobManager-memory storage accepts: Flink's default
/// `MemoryStateBackend` limit of 5 MiB. Memory storage is for tests and
/// small jobs; anything larger belongs on disk or in an object store.
pub const JOBMANAGER_MAX_STATE_SIZE: usize = 5 * 1024 * 1024;

/// Longest state file name accepted, well below every store's key limit.
pub const MAX_FILE_NAME_LEN: usize = 200;

/// How many existence checks run at once while listing checkpoints.
const LIST_CONCURRENCY: usize = 16;

/// Why writing a state file whose payload a producer appends failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The storage refused or failed the write.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The producer failed; nothing was written.
    #[error("cannot produce the file's payload: {0}")]
    Produce(E),
}

/// Why a checkpoint storage operation failed. Every variant names the URL,
/// file or key concerned and the reason.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The checkpoint directory URL is malformed or of an unsupported kind.
    #[error(
        "unsupported checkpoint storage URL {url:?}: {reason} (use file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or jobmanager)"
    )]
    UnsupportedUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local checkpoint directory could not be created or opened.
    #[error("cannot create checkpoint directory {path}: {source}")]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A checkpoint directory to restore from does not exist.
    #[error("checkpoint directory {path} does not exist")]
    DirectoryNotFound {
        /// The directory.
        path: PathBuf,
    },
    /// The object store client could not be configured (bad settings or
    /// missing required ones such as an Azure account name).
    #[error("cannot set up checkpoint storage {url}: {source}")]
    Backend {
        /// The checkpoint directory URL.
        url: String,
        /// The client's reason.
        source: object_store::Error,
    },
    /// The I/O runtime could not be started (out of threads or memory).
    #[error("cannot start the I/O threads of checkpoint storage {url}: {source}")]
    Runtime {
        /// The checkpoint directory URL.
        url: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Called from inside an async runtime, where blocking would stall it.
    #[error(
        "checkpoint storage {url} was called from inside an async runtime; its API blocks, so call it from a plain thread (or spawn_blocking)"
    )]
    InsideAsyncRuntime {
        /// The checkpoint directory URL.
        url: String,
    },
    /// A state file name that is not a plain, safe file name.
    #[error("invalid state file name {name:?}: {reason}")]
    InvalidFileName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A state handle whose path cannot be a location in checkpoint storage.
    #[error("invalid state handle path {path:?}: {reason}")]
    InvalidHandle {
        /// The path in the handle.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A state file too large for JobManager-memory storage.
    #[error(
        "state file {location} is {size} bytes, more than the {limit}-byte (5 MiB) limit of jobmanager checkpoint storage; set state.checkpoints.dir to a file:// or object-store URL (s3://, gs://, az://) for state this large"
    )]
    StateTooLarge {
        /// Where it would have been written.
        location: String,
        /// Its payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A state file that already exists: files are written once.
    #[error("state file {location} already exists; checkpoint files are never overwritten")]
    AlreadyExists {
        /// The file.
        location: String,
    },
    /// `_metadata` already exists: the checkpoint was completed before.
    #[error("checkpoint {checkpoint_id} is already completed: {location} exists")]
    AlreadyCompleted {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Its `_metadata`.
        location: String,
    },
    /// No `_metadata`: the checkpoint never completed (or was discarded).
    #[error("checkpoint {checkpoint_id} is not a completed checkpoint: {location} does not exist")]
    NotCompleted {
        /// The checkpoint.
        checkpoint_id: u64,
        /// The missing `_metadata`.
        location: String,
    },
    /// A state file a handle refers to is gone.
    #[error("state file {location} does not exist")]
    NotFound {
        /// The file.
        location: String,
    },
    /// A state file whose size differs from the one recorded in its handle:
    /// it was replaced after the checkpoint completed.
    #[error(
        "state file {location} is {actual} bytes, but the checkpoint recorded {expected}; it was replaced after the checkpoint completed"
    )]
    SizeMismatch {
        /// The file.
        location: String,
        /// The size in the handle.
        expected: u64,
        /// The size read.
        actual: u64,
    },
    /// A state file whose bytes differ from the ones the checkpoint
    /// recorded: it is not the file the checkpoint wrote (another
    /// checkpoint's or subtask's file copied over it).
    #[error(
        "state file {location} is not the file the snapshot wrote: its checksum is {actual:#018x}, but the snapshot's _metadata recorded {expected:#018x}"
    )]
    ChecksumMismatch {
        /// The file.
        location: String,
        /// The checksum recorded in `_metadata`.
        expected: u64,
        /// The checksum of the bytes read.
        actual: u64,
    },
    /// The file's frame is wrong (truncated, corrupted, not a Floe file…);
    /// the inner error names the file.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A `_metadata` file whose frame is sound but whose payload does not
    /// decode.
    #[error("cannot read {location}: {source}")]
    InvalidMetadata {
        /// The `_metadata` file.
        location: String,
        /// Why it does not decode.
        source: crate::metadata::MetadataError,
    },
    /// A dispose or discard that would have to delete something the
    /// snapshot's verified `_metadata` does not vouch for; nothing was
    /// deleted.
    #[error("refusing to delete {location}: {reason}; nothing was deleted")]
    DeleteRefused {
        /// The savepoint or checkpoint directory.
        location: String,
        /// Why.
        reason: String,
    },
    /// A dispose deleted the snapshot's files, but its directory still
    /// holds entries that are not part of it, so it was kept.
    #[error(
        "deleted the files of {location}, but kept the directory: it also holds {} that the snapshot does not own, left untouched: {}",
        if left.len() == 1 { "an entry" } else { "entries" },
        left.join(", ")
    )]
    NotRemoved {
        /// The directory.
        location: String,
        /// What is left in it.
        left: Vec<String>,
    },
    /// The store refused or failed an operation.
    #[error("cannot {operation} {location}: {source}")]
    Io {
        /// What was being done: `write`, `read`, `delete`, `list`, `check`.
        operation: &'static str,
        /// The file or directory.
        location: String,
        /// The store's reason.
        source: object_store::Error,
    },
    /// A large state file could not be written to local disk directly.
    #[error("cannot write {path}: {source}")]
    LocalWrite {
        /// The file (or the staging file or directory being made for it).
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A local directory could not be removed while discarding.
    #[error("cannot delete {path}: {source}")]
    LocalDelete {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A `--fromCheckpoint` path that names neither a job's checkpoint
    /// directory nor one of its `chk-<n>` directories.
    #[error(
        "{path:?} is not a checkpoint path: {reason} (expected <checkpoint dir>/<job id>, <checkpoint dir>/<job id>/chk-<n> or its _metadata)"
    )]
    NotACheckpointPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A savepoint target directory that cannot hold savepoints.
    #[error("cannot write a savepoint under {target:?}: {reason}")]
    SavepointTarget {
        /// The target directory as given.
        target: String,
        /// Why not.
        reason: String,
    },
    /// A path given as a savepoint that is not a completed savepoint.
    #[error("{location} is not a savepoint: {reason}")]
    NotASavepoint {
        /// The path.
        location: String,
        /// What is missing.
        reason: String,
    },
    /// A job checkpoint directory that holds no completed checkpoint.
    #[error("no completed checkpoint in {location}")]
    NoCompletedCheckpoint {
        /// The job's checkpoint directory.
        location: String,
    },
}

/// Which kind of store a [`CheckpointStorage`] writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// A local (or mounted) directory, `file:///…`.
    LocalFileSystem,
    /// Amazon S3 or an S3-compatible store, `s3://bucket/prefix`.
    S3,
    /// Google Cloud Storage, `gs://bucket/prefix`.
    GoogleCloudStorage,
    /// Azure Blob Storage, `az://container/prefix`.
    Azure,
    /// The JobManager's memory (`jobmanager`): lost when the process ends.
    JobManager,
}

pub use crate::handle::StateHandle;

/// Where checkpoints of every job go: one checkpoint directory URL and the
/// client and I/O threads to reach it. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    inner: Arc<Inner>,
}

struct Inner {
    /// The checkpoint directory as a URL, for messages (`file:///…`, `s3://…`).
    url: String,
    kind: StorageKind,
    store: Arc<dyn ObjectStore>,
    /// The checkpoint directory inside the store (the URL's path for
    /// buckets and containers, empty for local disk and memory).
    root: Path,
    /// Prepended to a store path to show it as a URL.
    display_prefix: String,
    /// The canonical checkpoint directory on local disk, for discarding
    /// without following symbolic links out of it.
    local_root: Option<PathBuf>,
    /// Limit on a state file's payload (JobManager memory only).
    max_state_size: Option<usize>,
    /// `Some` until dropped; see `Drop`.
    runtime: Option<tokio::runtime::Runtime>,
    /// Write buffers of large state files, taken back after their upload.
    spare_buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Large files on local disk go around the page cache (see
    /// [`crate::direct_io`]) until the file system refuses direct I/O.
    #[cfg(target_os = "linux")]
    direct_io: std::sync::atomic::AtomicBool,
    /// Aligned buffers of direct writes, one per concurrent writer.
    #[cfg(target_os = "linux")]
    direct_buffers: std::sync::Mutex<Vec<crate::direct_io::AlignedBuf>>,
}

/// Write buffers at least this large are kept for the next state file:
/// every checkpoint writes about the same files again, and a fresh buffer
/// costs a page fault per 4 KiB of it.
const SPARE_BUFFER_MIN: usize = 1 << 20;
/// At most this many are kept (about one per concurrently uploading
/// subtask of a job).
const SPARE_BUFFERS: usize = 4;

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("url", &self.url)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    /// Stops the I/O threads without waiting, so dropping the last handle
    /// never blocks and never panics (tokio refuses to drop a runtime from
    /// inside another one).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where the cloud clients take their settings from.
pub(crate) enum Settings<'a> {
    /// The process environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), exactly as
    /// the clients' `from_env` constructors read it.
    ProcessEnv,
    /// Explicit variables, read the same way.
    Explicit(&'a [(&'a str, &'a str)]),
}

impl Settings<'_> {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            Settings::ProcessEnv => std::env::var(name).ok(),
            Settings::Explicit(vars) => vars
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()),
        }
    }

    /// `(lowercased key, value)` of the explicit variables with a prefix.
    fn explicit_with_prefix<'s>(&'s self, prefix: &'s str) -> Vec<(String, &'s str)> {
        match self {
            Settings::ProcessEnv => Vec::new(),
            Settings::Explicit(vars) => vars
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
        }
    }
}

impl CheckpointStorage {
    /// Opens the checkpoint storage a configuration names: its
    /// `state.checkpoints.dir`, or JobManager memory when that is unset
    /// (Flink's default).
    pub fn for_config(config: &CheckpointConfig) -> Result<Self, StorageError> {
        Self::from_url(config.checkpoint_dir().unwrap_or(JOBMANAGER_STORAGE))
    }

    /// Opens checkpoint storage at a URL:
    ///
    /// - `file:///absolute/path` (or `file:/absolute/path`) — a local or
    ///   mounted directory, created if missing; `file:relative` is refused
    ///   rather than read as `/relative`. Writes are fsynced, since a checkpoint that vanishes in a
    ///   power cut is no checkpoint.
    /// - `s3://bucket/prefix` — S3 or an S3-compatible store, configured from
    ///   the standard AWS variables (`AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    ///   `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, …). With an explicit endpoint
    ///   (MinIO, Ceph, a local test server) plain HTTP is allowed and
    ///   requests are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`
    ///   says otherwise.
    /// - `gs://bucket/prefix` — Google Cloud Storage, from `GOOGLE_*`
    ///   variables (`GOOGLE_SERVICE_ACCOUNT`, …).
    /// - `az://container/prefix` — Azure Blob Storage, from `AZURE_*`
    ///   variables (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, …).
    /// - `jobmanager` — the process's memory, limited to
    ///   [`JOBMANAGER_MAX_STATE_SIZE`] per state file and gone when the
    ///   process ends: for tests and small jobs, as in Flink.
    ///
    /// Nothing is contacted here; a wrong endpoint or credential shows on
    /// the first read or write.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::open(url, Settings::ProcessEnv, true)
    }

    /// Like [`CheckpointStorage::from_url`], but reads the cloud settings
    /// from `vars` (the same `AWS_*`, `GOOGLE_*`, `AZURE_*` names and values)
    /// instead of the process environment: for embedding Floe where
    /// credentials come from elsewhere, and for tests, since changing the
    /// process environment of a threaded program is unsound.
    pub fn from_url_with_vars(url: &str, vars: &[(&str, &str)]) -> Result<Self, StorageError> {
        Self::open(url, Settings::Explicit(vars), true)
    }

    /// Opens the storage; `create` makes a missing local directory (when
    /// writing checkpoints) rather than report it (when restoring).
    pub(crate) fn open(
        url: &str,
        settings: Settings<'_>,
        create: bool,
    ) -> Result<Self, StorageError> {
        let given = url.trim();
        let unsupported = |reason: String| StorageError::UnsupportedUrl {
            url: url.to_string(),
            reason,
        };
        if given.eq_ignore_ascii_case(JOBMANAGER_STORAGE) {
            return Self::build(Opened {
                url: JOBMANAGER_STORAGE.to_string(),
                kind: StorageKind::JobManager,
                store: Arc::new(InMemory::new()),
                root: Path::default(),
                display_prefix: format!("{JOBMANAGER_STORAGE}/"),
                local_root: None,
                max_state_size: Some(JOBMANAGER_MAX_STATE_SIZE),
            });
        }
        crate::location::check_url_syntax(given)
            .map_err(|reason| unsupported(reason.to_string()))?;
        let parsed = Url::parse(given).map_err(|e| unsupported(e.to_string()))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(unsupported("a query or fragment is not allowed".into()));
        }
        match parsed.scheme() {
            "file" => Self::open_local(url, &parsed, create),
            "s3" | "s3a" | "gs" | "az" | "azure" => {
                Self::open_bucket(url, &parsed, &settings, &unsupported)
            }
            other => Err(unsupported(format!("unknown scheme '{other}'"))),
        }
    }

    fn open_local(url: &str, parsed: &Url, create: bool) -> Result<Self, StorageError> {
        let unsupported = |reason: &str| StorageError::UnsupportedUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        match parsed.host_str() {
            None | Some("") | Some("localhost") => {}
            Some(_) => return Err(unsupported("a file URL must not name a remote host")),
        }
        let dir = parsed
            .to_file_path()
            .map_err(|()| unsupported("not an absolute local path"))?;
        if create {
            std::fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDirectory {
                path: dir.clone(),
                source,
            })?;
        } else if !dir.is_dir() {
            return Err(StorageError::DirectoryNotFound { path: dir });
        }
        let canonical =
            std::fs::canonicalize(&dir).map_err(|source| StorageError::CreateDirectory {
                path: dir.clone(),
                source,
            })?;
        let store = LocalFileSystem::new_with_prefix(&canonical)
            .map_err(|source| StorageError::Backend {
                url: url.to_string(),
                source,
            })?
            .with_fsync(true);
        let root_url = Url::from_directory_path(&canonical)
            .map_err(|()| unsupported("not an absolute local path"))?;
        let display_prefix = root_url.to_string();
        Self::build(Opened {
            url: display_prefix.trim_end_matches('/').to_string(),
            kind: StorageKind::LocalFileSystem,
            store: Arc::new(store),
            root: Path::default(),
            display_prefix,
            local_root: Some(canonical),
            max_state_size: None,
        })
    }

    fn open_bucket(
        url: &str,
        parsed: &Url,
        settings: &Settings<'_>,
        unsupported: &dyn Fn(String) -> StorageError,
    ) -> Result<Self, StorageError> {
        let scheme = parsed.scheme();
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| unsupported(format!("a {scheme}:// URL needs a bucket or container")))?
            .to_string();
        let root = Path::from_url_path(parsed.path())
            .map_err(|e| unsupported(format!("invalid path: {e}")))?;
        let backend = |source| StorageError::Backend {
            url: url.to_string(),
            source,
        };
        let (kind, store): (StorageKind, Arc<dyn ObjectStore>) = match scheme {
            "s3" | "s3a" => {
                let mut b = match settings {
                    Settings::ProcessEnv => AmazonS3Builder::from_env(),
                    Settings::Explicit(_) => AmazonS3Builder::new(),
                };
                for (key, value) in settings.explicit_with_prefix("AWS_") {
                    if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                        b = b.with_config(key, value);
                    }
                }
                b = b.with_bucket_name(&bucket);
                if b.get_config_value(&AmazonS3ConfigKey::Endpoint).is_some() {
                    // An explicit endpoint is an S3-compatible server (or a
                    // local test one): allow plain HTTP, and address buckets
                    // by path, which every such server understands, unless
                    // the user asked for virtual-hosted style.
                    b = b.with_allow_http(true);
                    if settings.var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
                        b = b.with_virtual_hosted_style_request(false);
                    }
                }
                (StorageKind::S3, Arc::new(b.build().map_err(backend)?))
            }
            "gs" => {
                let mut b = match settings {
                    Settings::ProcessEnv => GoogleCloudStorageBuilder::from_env(),
                    Settings::Explicit(_) => GoogleCloudStorageBuilder::new(),
                };
                for (key, value) in settings.explicit_with_prefix("GOOGLE_") {
                    if let Ok(key) = key.parse::<GoogleConfigKey>() {
                        b = b.with_config(key, value);
                    }
                }
                b = b.with_bucket_name(&bucket);
                (
                    StorageKind::GoogleCloudStorage,
                    Arc::new(b.build().map_err(backend)?),
                )
            }
            _ => {
                let mut b = match settings {
                    Settings::ProcessEnv => MicrosoftAzureBuilder::from_env(),
                    Settings::Explicit(_) => MicrosoftAzureBuilder::new(),
                };
                for (key, value) in settings.explicit_with_prefix("AZURE_") {
                    if let Ok(key) = key.parse::<AzureConfigKey>() {
                        b = b.with_config(key, value);
                    }
                }
                b = b.with_container_name(&bucket);
                (StorageKind::Azure, Arc::new(b.build().map_err(backend)?))
            }
        };
        let display_prefix = format!("{scheme}://{bucket}/");
        let url = if root.as_ref().is_empty() {
            format!("{scheme}://{bucket}")
        } else {
            format!("{display_prefix}{root}")
        };
        Self::build(Opened {
            url,
            kind,
            store,
            root,
            display_prefix,
            local_root: None,
            max_state_size: None,
        })
    }

    fn build(o: Opened) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("floe-checkpoint-io")
            .enable_all()
            .build()
            .map_err(|source| StorageError::Runtime {
                url: o.url.clone(),
                source,
            })?;
        Ok(CheckpointStorage {
            inner: Arc::new(Inner {
                url: o.url,
                kind: o.kind,
                store: o.store,
                root: o.root,
                display_prefix: o.display_prefix,
                max_state_size: o.max_state_size,
                #[cfg(target_os = "linux")]
                direct_io: std::sync::atomic::AtomicBool::new(o.local_root.is_some()),
                runtime: Some(runtime),
                spare_buffers: std::sync::Mutex::default(),
                #[cfg(target_os = "linux")]
                direct_buffers: std::sync::Mutex::default(),
                local_root: o.local_root,
            }),
        })
    }

    /// The checkpoint directory as a URL (`file:///…`, `s3://bucket/prefix`,
    /// `jobmanager`), as shown in messages.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Which kind of store this is.
    pub fn kind(&self) -> StorageKind {
        self.inner.kind
    }

    /// The checkpoint storage of one job: `<dir>/<job id>/`.
    pub fn job(&self, job_id: JobId) -> JobCheckpointStorage {
        let job_root = self.inner.root.clone().join(job_id.to_string());
        JobCheckpointStorage {
            storage: self.clone(),
            job_id,
            job_root,
            written: Arc::default(),
        }
    }

    /// Resolves a path given by a user to restore from (`--fromCheckpoint`):
    /// either a specific checkpoint (`<dir>/<job id>/chk-<n>`, or its
    /// `_metadata`), which must be completed, or a job's checkpoint
    /// directory (`<dir>/<job id>`), which resolves to its latest completed
    /// checkpoint. The path is a URL as for [`CheckpointStorage::from_url`];
    /// an absolute local path without a scheme is taken as `file://`, as a
    /// command line user would type it. Cloud settings come from the
    /// process environment.
    pub fn resolve_checkpoint(path: &str) -> Result<ResolvedCheckpoint, StorageError> {
        Self::resolve(path, Settings::ProcessEnv)
    }

    /// Like [`CheckpointStorage::resolve_checkpoint`], with cloud settings
    /// from `vars` (see [`CheckpointStorage::from_url_with_vars`]).
    pub fn resolve_checkpoint_with_vars(
        path: &str,
        vars: &[(&str, &str)],
    ) -> Result<ResolvedCheckpoint, StorageError> {
        Self::resolve(path, Settings::Explicit(vars))
    }

    fn resolve(path: &str, settings: Settings<'_>) -> Result<ResolvedCheckpoint, StorageError> {
        let not_a_path = |reason: &str| StorageError::NotACheckpointPath {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let given = path.trim();
        let mut url = if given.starts_with('/') {
            Url::from_file_path(given).map_err(|()| not_a_path("not an absolute local path"))?
        } else {
            Url::parse(given).map_err(|e| not_a_path(&e.to_string()))?
        };
        // The path's segments, last first, without empty ones (`…/chk-3/`).
        let mut segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        if segments.last().map(String::as_str) == Some(METADATA_FILE_NAME) {
            segments.pop();
        }
        let checkpoint_id = match segments.last().and_then(|s| parse_checkpoint_dir_name(s)) {
            Some(id) => {
                segments.pop();
                Some(id)
            }
            None => None,
        };
        let job_id: JobId = segments
            .last()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                not_a_path(if checkpoint_id.is_some() {
                    "the directory above chk-<n> is not a job id (32 hexadecimal characters)"
                } else {
                    "it ends neither in chk-<n> nor in a job id (32 hexadecimal characters)"
                })
            })?;
        segments.pop();
        url.set_path(&segments.join("/"));
        let storage = Self::open(url.as_str(), settings, false)?;
        let job = storage.job(job_id);
        let checkpoint_id = match checkpoint_id {
            Some(id) => {
                let metadata = job.metadata_path(id);
                if !job.storage.exists(&metadata)? {
                    return Err(StorageError::NotCompleted {
                        checkpoint_id: id,
                        location: job.storage.display(&metadata),
                    });
                }
                id
            }
            None => job
                .latest_completed()?
                .ok_or_else(|| StorageError::NoCompletedCheckpoint {
                    location: job.job_location(),
                })?,
        };
        Ok(ResolvedCheckpoint { job, checkpoint_id })
    }

    /// Runs a future on the storage's I/O threads and waits for it.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output, StorageError> {
        self.refuse_inside_async_runtime()?;
        match &self.inner.runtime {
            Some(runtime) => Ok(runtime.block_on(future)),
            // Only `Drop` takes the runtime, and it runs when no handle is left.
            None => Err(StorageError::Runtime {
                url: self.inner.url.clone(),
                source: std::io::Error::other("the I/O runtime has shut down"),
            }),
        }
    }

    /// This API blocks: called on an async runtime's thread it would stall
    /// the runtime, so that is an error.
    fn refuse_inside_async_runtime(&self) -> Result<(), StorageError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StorageError::InsideAsyncRuntime {
                url: self.inner.url.clone(),
            });
        }
        Ok(())
    }

    /// A store path shown as a URL.
    pub(crate) fn display(&self, path: &Path) -> String {
        format!("{}{}", self.inner.display_prefix, path)
    }

    /// Whether an object exists.
    pub(crate) fn exists(&self, path: &Path) -> Result<bool, StorageError> {
        let store = &self.inner.store;
        match self.block_on(store.head(path))? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StorageError::Io {
                operation: "check",
                location: self.display(path),
                source,
            }),
        }
    }

    /// Frames and writes a file once (put-if-absent); an existing file is
    /// reported by `on_exists`.
    pub(crate) fn put_new(
        &self,
        path: &Path,
        framed: Vec<u8>,
        on_exists: impl FnOnce(String) -> StorageError,
    ) -> Result<StateHandle, StorageError> {
        self.put(path, framed, PutMode::Create, on_exists)
    }

    /// Writes a framed file with `mode`, then keeps its buffer for the next
    /// large file; an existing file under `PutMode::Create` is reported by
    /// `on_exists`.
    fn put(
        &self,
        path: &Path,
        framed: Vec<u8>,
        mode: PutMode,
        on_exists: impl FnOnce(String) -> StorageError,
    ) -> Result<StateHandle, StorageError> {
        let size = framed.len() as u64;
        // One pass over bytes just written (still in cache); `_metadata`
        // records it and every read checks it.
        let checksum = Some(format::file_checksum(&framed));
        #[cfg(target_os = "linux")]
        if framed.len() >= SPARE_BUFFER_MIN
            && let Some(written) = self.put_direct(path, &framed, &mode)
        {
            self.keep_spare(framed);
            return match written? {
                true => Ok(StateHandle {
                    path: self.relative(path),
                    size,
                    checksum,
                }),
                false => Err(on_exists(self.display(path))),
            };
        }
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let store = &self.inner.store;
        let framed = bytes::Bytes::from(framed);
        let put = self.block_on(store.put_opts(path, framed.clone().into(), options))?;
        self.reclaim(framed);
        match put {
            Ok(_) => Ok(StateHandle {
                path: self.relative(path),
                size,
                checksum,
            }),
            Err(object_store::Error::AlreadyExists { .. }) => Err(on_exists(self.display(path))),
            Err(source) => Err(StorageError::Io {
                operation: "write",
                location: self.display(path),
                source,
            }),
        }
    }

    /// Writes a large file on local disk with direct I/O: `Some(Ok(true))`
    /// written, `Some(Ok(false))` refused as existing under
    /// `PutMode::Create`, `None` when direct I/O does not apply (not local
    /// disk, or a file system without it: then never again for this storage).
    #[cfg(target_os = "linux")]
    fn put_direct(
        &self,
        path: &Path,
        framed: &[u8],
        mode: &PutMode,
    ) -> Option<Result<bool, StorageError>> {
        use crate::direct_io::{self, AlignedBuf, Outcome, Publish};
        use std::sync::atomic::Ordering;

        let publish = match mode {
            PutMode::Create => Publish::Create,
            PutMode::Overwrite => Publish::Overwrite,
            PutMode::Update(_) => return None,
        };
        if !self.inner.direct_io.load(Ordering::Relaxed) {
            return None;
        }
        if let Err(e) = self.refuse_inside_async_runtime() {
            return Some(Err(e));
        }
        let dest = self.local_path(path)?;
        let buffers = || {
            self.inner
                .direct_buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        let mut buf = buffers().pop().unwrap_or_else(AlignedBuf::new);
        let outcome = direct_io::write_file(&dest, framed, publish, &mut buf);
        buffers().push(buf);
        match outcome {
            Ok(Outcome::Written) => Some(Ok(true)),
            Ok(Outcome::Exists) => Some(Ok(false)),
            Ok(Outcome::Unsupported) => {
                tracing::info!(
                    storage = %self.inner.url,
                    "the checkpoint directory's file system does not do direct I/O; large state files go through the page cache"
                );
                self.inner.direct_io.store(false, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Err(StorageError::LocalWrite {
                path: e.path,
                source: e.source,
            })),
        }
    }

    /// The local file of a store path (local disk only).
    fn local_path(&self, path: &Path) -> Option<PathBuf> {
        let root = self.inner.local_root.as_ref()?;
        Some(
            path.parts()
                .fold(root.clone(), |p, part| p.join(part.as_ref())),
        )
    }

    /// Reads a whole file; `None` if it does not exist.
    pub(crate) fn get(&self, path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        let store = &self.inner.store;
        let result = self.block_on(async {
            match store.get(path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        result
            .map(|bytes| bytes.map(|b| b.to_vec()))
            .map_err(|source| StorageError::Io {
                operation: "read",
                location: self.display(path),
                source,
            })
    }

    /// Frames and writes a new file at `path` whose payload `produce`
    /// appends in place (JobManager memory refuses payloads over its
    /// limit); shared by checkpoints and savepoints.
    pub(crate) fn write_framed<E>(
        &self,
        path: &Path,
        kind: FileKind,
        payload_hint: usize,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<StateHandle, WriteError<E>> {
        let buf = self.frame(path, kind, payload_hint, produce)?;
        Ok(
            self.put_new(path, buf, |location| StorageError::AlreadyExists {
                location,
            })?,
        )
    }

    /// A framed file for `path`: the payload produced in place after the
    /// header (no copy of a large payload into a frame), checked against
    /// the storage's size limit, sealed.
    fn frame<E>(
        &self,
        path: &Path,
        kind: FileKind,
        payload_hint: usize,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<u8>, WriteError<E>> {
        // Small files (metadata, operator state, a first snapshot without a
        // size hint) leave the kept buffers to the large ones.
        let spare = if payload_hint >= SPARE_BUFFER_MIN {
            self.inner
                .spare_buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
        } else {
            None
        };
        let mut buf = format::begin_in(spare.unwrap_or_default(), payload_hint);
        produce(&mut buf).map_err(WriteError::Produce)?;
        let payload_len = buf.len() - format::HEADER_LEN;
        if let Some(limit) = self.inner.max_state_size
            && payload_len > limit
        {
            return Err(StorageError::StateTooLarge {
                location: self.display(path),
                size: payload_len,
                limit,
            }
            .into());
        }
        format::seal(kind, &mut buf);
        Ok(buf)
    }

    /// Keeps the buffer of an uploaded file for the next one, if it is
    /// large and nothing else holds it (an in-memory store keeps what it
    /// stores; a retrying client may still hold a copy).
    fn reclaim(&self, written: bytes::Bytes) {
        if written.len() < SPARE_BUFFER_MIN {
            return;
        }
        if let Ok(unique) = written.try_into_mut() {
            self.keep_spare(Vec::from(unique));
        }
    }

    /// Keeps a large written buffer for the next large file, up to
    /// `SPARE_BUFFERS` of them.
    fn keep_spare(&self, buffer: Vec<u8>) {
        let mut spare = self
            .inner
            .spare_buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    }

    /// Reads the file of a handle and returns its payload, after checking
    /// its frame (magic, version, length, CRC, kind), then its size and
    /// checksum against the handle.
    pub(crate) fn read_framed(
        &self,
        handle: &StateHandle,
        kind: FileKind,
    ) -> Result<Vec<u8>, StorageError> {
        let path = self.resolve_handle(handle)?;
        let location = self.display(&path);
        let bytes = self.get(&path)?.ok_or_else(|| StorageError::NotFound {
            location: location.clone(),
        })?;
        let payload = format::decode(&bytes, kind, &location)?;
        if bytes.len() as u64 != handle.size {
            return Err(StorageError::SizeMismatch {
                location,
                expected: handle.size,
                actual: bytes.len() as u64,
            });
        }
        if let Some(expected) = handle.checksum {
            let actual = format::file_checksum(&bytes);
            if actual != expected {
                return Err(StorageError::ChecksumMismatch {
                    location,
                    expected,
                    actual,
                });
            }
        }
        Ok(payload.to_vec())
    }

    /// Reads and verifies a `_metadata` file (frame: magic, version, CRC,
    /// kind; then the payload) before anything it lists is trusted;
    /// `None` if it does not exist. Errors are reasons for a refusal.
    pub(crate) fn read_verified_metadata(
        &self,
        path: &Path,
    ) -> Result<Option<CheckpointMetadata>, StorageError> {
        let location = self.display(path);
        let Some(bytes) = self.get(path)? else {
            return Ok(None);
        };
        let payload = format::decode(&bytes, FileKind::Metadata, &location)?;
        CheckpointMetadata::decode(payload)
            .map(Some)
            .map_err(|source| StorageError::InvalidMetadata { location, source })
    }

    /// The entries directly in `dir`: files, and (with a trailing `/`)
    /// subdirectories. On local disk the directory is read as it is
    /// (symbolic links are entries, not followed; staging files that the
    /// store's own listings hide are included); a missing directory has
    /// none.
    pub(crate) fn dir_entries(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        if let Some(local) = self.local_path(dir) {
            let read = match std::fs::read_dir(&local) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => {
                    return Err(StorageError::LocalDelete {
                        path: local,
                        source,
                    });
                }
            };
            let mut names = Vec::new();
            for entry in read {
                let entry = entry.map_err(|source| StorageError::LocalDelete {
                    path: local.clone(),
                    source,
                })?;
                let mut name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    name.push('/');
                }
                names.push(name);
            }
            names.sort();
            return Ok(names);
        }
        let listing = self
            .block_on(self.inner.store.list_with_delimiter(Some(dir)))?
            .map_err(|source| StorageError::Io {
                operation: "list",
                location: self.display(dir),
                source,
            })?;
        let mut names: Vec<String> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .chain(
                listing
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(|n| format!("{n}/"))),
            )
            .collect();
        names.sort();
        Ok(names)
    }

    /// Checks, before deleting it, that the file at `path` is the one a
    /// handle of `_metadata` describes: its stored size, and a Floe frame
    /// header of a state-file kind. `Ok` also when it is already gone.
    pub(crate) fn verify_owned(
        &self,
        path: &Path,
        handle: &StateHandle,
    ) -> Result<(), StorageError> {
        let location = self.display(path);
        let store = &self.inner.store;
        let head = match self.block_on(store.head(path))? {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(source) => {
                return Err(StorageError::Io {
                    operation: "check",
                    location,
                    source,
                });
            }
        };
        if head.size != handle.size {
            return Err(StorageError::SizeMismatch {
                location,
                expected: handle.size,
                actual: head.size,
            });
        }
        if (head.size as usize) < format::HEADER_LEN {
            return Err(FormatError::TooShort {
                file: location,
                len: head.size as usize,
                min: format::framed_len(0),
            }
            .into());
        }
        let header = self
            .block_on(store.get_range(path, 0..format::HEADER_LEN as u64))?
            .map_err(|source| StorageError::Io {
                operation: "read",
                location: location.clone(),
                source,
            })?;
        if header[..4] != format::MAGIC {
            return Err(FormatError::BadMagic {
                file: location,
                found: header[..4].to_vec(),
            }
            .into());
        }
        match FileKind::from_u8(header[6]) {
            Some(FileKind::Metadata) | None => Err(FormatError::UnknownKind {
                file: location,
                found: header[6],
            }
            .into()),
            Some(_) => Ok(()),
        }
    }

    /// Deletes the entries of `dir` named in `names` and their staging
    /// sidecars (`<name>#<n>`, left by an interrupted local write), never
    /// anything else; then removes `dir` if nothing is left in it. Returns
    /// what it deleted and what it left.
    pub(crate) fn delete_owned(
        &self,
        dir: &Path,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<Removal, StorageError> {
        let owned = |entry: &str| {
            names.contains(entry)
                || entry.rsplit_once('#').is_some_and(|(base, n)| {
                    names.contains(base) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                })
        };
        let shown = |entry: &str| format!("{}/{entry}", self.display(dir));
        let mut removal = Removal::default();
        for entry in self.dir_entries(dir)? {
            if entry.ends_with('/') || !owned(&entry) {
                continue;
            }
            match self.local_path(dir) {
                // Names as they are on disk (a staging name's `#` is not
                // a store path character).
                Some(local) => remove_local_file(&local.join(&entry))?,
                None => self.delete_file(&dir.clone().join(entry.as_str()))?,
            }
            removal.deleted.push(shown(&entry));
        }
        removal.left = self
            .dir_entries(dir)?
            .iter()
            .map(|entry| shown(entry))
            .collect();
        if removal.left.is_empty()
            && let Some(local) = self.local_path(dir)
        {
            match std::fs::remove_dir(&local) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Something appeared meanwhile: it stays, and so does
                // the directory.
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
                Err(source) => {
                    return Err(StorageError::LocalDelete {
                        path: local,
                        source,
                    });
                }
            }
        }
        Ok(removal)
    }

    /// Deletes one file (on local disk a symbolic link is removed, never
    /// followed); a file already gone is fine.
    pub(crate) fn delete_file(&self, path: &Path) -> Result<(), StorageError> {
        if let Some(local) = self.local_path(path) {
            return remove_local_file(&local);
        }
        match self.block_on(self.inner.store.delete(path))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Io {
                operation: "delete",
                location: self.display(path),
                source,
            }),
        }
    }

    /// Every object under `dir` (whole path segments: `chk-1` does not
    /// list `chk-10`), not `dir` itself.
    fn list_under(&self, dir: &Path) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        let listed: Vec<_> = self
            .block_on(self.inner.store.list(Some(dir)).try_collect::<Vec<_>>())?
            .map_err(|source| StorageError::Io {
                operation: "list",
                location: self.display(dir),
                source,
            })?;
        Ok(listed
            .into_iter()
            .filter(|meta| meta.location.prefix_matches(dir) && meta.location != *dir)
            .collect())
    }

    /// The storage root as a store path.
    pub(crate) fn root(&self) -> &Path {
        &self.inner.root
    }

    /// A store path relative to the root, as recorded in a [`StateHandle`].
    fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.inner.root) {
            Some(parts) => Path::from_iter(parts).to_string(),
            None => path.to_string(),
        }
    }

    /// The store path of a [`StateHandle`], refusing anything that is not a
    /// plain relative path.
    pub(crate) fn resolve_handle(&self, handle: &StateHandle) -> Result<Path, StorageError> {
        validate_handle_path(&handle.path)?;
        let rel = Path::parse(&handle.path).map_err(|e| StorageError::InvalidHandle {
            path: handle.path.clone(),
            reason: e.to_string(),
        })?;
        if rel.as_ref().is_empty() {
            return Err(StorageError::InvalidHandle {
                path: handle.path.clone(),
                reason: "empty path".into(),
            });
        }
        Ok(self.inner.root.parts().chain(rel.parts()).collect())
    }
}

/// The fields a storage is built from.
struct Opened {
    url: String,
    kind: StorageKind,
    store: Arc<dyn ObjectStore>,
    root: Path,
    display_prefix: String,
    local_root: Option<PathBuf>,
    max_state_size: Option<usize>,
}

/// A checkpoint to restore from, found by
/// [`CheckpointStorage::resolve_checkpoint`].
#[derive(Debug, Clone)]
pub struct ResolvedCheckpoint {
    /// The checkpoint storage of the job that wrote the checkpoint.
    pub job: JobCheckpointStorage,
    /// The completed checkpoint's id.
    pub checkpoint_id: u64,
}

/// The checkpoint storage of one job, `<dir>/<job id>/`: what the checkpoint
/// coordinator and the tasks of that job write to and read from.
#[derive(Debug, Clone)]
pub struct JobCheckpointStorage {
    storage: CheckpointStorage,
    job_id: JobId,
    job_root: Path,
    /// The state files this handle (and its clones) started writing, per
    /// checkpoint not yet completed: all a discard of an incomplete
    /// checkpoint may delete, since it has no `_metadata` to list them.
    written: Arc<std::sync::Mutex<std::collections::HashMap<u64, BTreeSet<String>>>>,
}

impl JobCheckpointStorage {
    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The storage the job's directory is in.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The job's checkpoint directory as a URL, `<dir>/<job id>`.
    pub fn job_location(&self) -> String {
        self.storage.display(&self.job_root)
    }

    /// Checkpoint `n`'s directory as a URL, `<dir>/<job id>/chk-<n>`.
    pub fn checkpoint_location(&self, checkpoint_id: u64) -> String {
        self.storage.display(&self.checkpoint_path(checkpoint_id))
    }

    /// The job's shared-state directory as a URL, `<dir>/<job id>/shared`,
    /// reserved for incremental checkpoints (files referenced by several
    /// checkpoints, never deleted with one).
    pub fn shared_location(&self) -> String {
        self.storage
            .display(&self.job_root.clone().join(SHARED_STATE_DIR))
    }

    /// The job's task-owned directory as a URL, `<dir>/<job id>/taskowned`,
    /// reserved for state whose lifecycle the tasks manage.
    pub fn task_owned_location(&self) -> String {
        self.storage
            .display(&self.job_root.clone().join(TASK_OWNED_STATE_DIR))
    }

    /// Where the file of a handle is, as a URL (for messages and tools).
    pub fn location_of(&self, handle: &StateHandle) -> Result<String, StorageError> {
        Ok(self.storage.display(&self.storage.resolve_handle(handle)?))
    }

    fn checkpoint_path(&self, checkpoint_id: u64) -> Path {
        self.job_root
            .clone()
            .join(format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}"))
    }

    fn metadata_path(&self, checkpoint_id: u64) -> Path {
        self.checkpoint_path(checkpoint_id).join(METADATA_FILE_NAME)
    }

    /// Writes one state file of checkpoint `checkpoint_id` into its
    /// `chk-<n>/` directory, framed as `kind`, and returns the handle to put
    /// into the checkpoint's metadata.
    ///
    /// The name must be a plain file name (letters, digits, `.`, `_`, `-`;
    /// not `_metadata`), unique within the checkpoint: a file is written at
    /// most once (put-if-absent), so state a completed checkpoint refers to
    /// is never overwritten. JobManager-memory storage refuses payloads over
    /// [`JOBMANAGER_MAX_STATE_SIZE`].
    pub fn write_state_file(
        &self,
        checkpoint_id: u64,
        file_name: &str,
        kind: FileKind,
        payload: &[u8],
    ) -> Result<StateHandle, StorageError> {
        self.write_state_file_with(checkpoint_id, file_name, kind, payload.len(), |out| {
            out.extend_from_slice(payload);
            Ok::<_, std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            WriteError::Storage(e) => e,
        })
    }

    /// Writes a state file whose payload `produce` appends to the buffer
    /// it is given, in place after the file's header: a large snapshot is
    /// encoded straight into the bytes that are uploaded, never copied into
    /// a frame. `payload_hint` sizes the buffer. An error of `produce`
    /// writes nothing.
    pub fn write_state_file_with<E>(
        &self,
        checkpoint_id: u64,
        file_name: &str,
        kind: FileKind,
        payload_hint: usize,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<StateHandle, WriteError<E>> {
        validate_file_name(file_name)?;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(checkpoint_id)
            .or_default()
            .insert(file_name.to_string());
        let path = self.checkpoint_path(checkpoint_id).join(file_name);
        self.storage
            .write_framed(&path, kind, payload_hint, produce)
    }

    /// Writes a file of incremental state into the job's `shared/`
    /// directory, framed as [`FileKind::SharedState`]. Shared files are
    /// immutable and their names unique per writer (database identity and
    /// file name), so a file that already exists — uploaded by an earlier
    /// attempt whose checkpoint then failed — holds the same bytes and is
    /// replaced rather than refused.
    pub fn write_shared_file<E>(
        &self,
        file_name: &str,
        payload_hint: usize,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<StateHandle, WriteError<E>> {
        validate_file_name(file_name)?;
        let path = self.shared_path().join(file_name);
        // An SST file is read straight into the upload buffer.
        let buf = self
            .storage
            .frame(&path, FileKind::SharedState, payload_hint, produce)?;
        Ok(self
            .storage
            .put(&path, buf, PutMode::Overwrite, |location| {
                StorageError::AlreadyExists { location }
            })?)
    }

    /// The relative path prefix of this job's shared files
    /// (`<job id>/shared/`): only handles under it are this job's to delete.
    pub fn shared_prefix(&self) -> String {
        format!("{}/", self.storage.relative(&self.shared_path()))
    }

    /// Deletes one of this job's shared files once no retained checkpoint
    /// refers to it. A handle outside this job's `shared/` directory (state
    /// of the job this one was restored from) is refused: it belongs to
    /// that job's checkpoints. A file already gone is not an error.
    pub fn delete_shared_file(&self, handle: &StateHandle) -> Result<(), StorageError> {
        let path = self.storage.resolve_handle(handle)?;
        let own_name = handle
            .path
            .strip_prefix(&self.shared_prefix())
            .is_some_and(is_shared_file_name);
        if !own_name {
            return Err(StorageError::InvalidHandle {
                path: handle.path.clone(),
                reason: format!(
                    "not a file of Floe's naming in this job's shared directory {}",
                    self.shared_location()
                ),
            });
        }
        self.storage.delete_file(&path)
    }

    /// Every file of Floe's naming ([`is_shared_file_name`]) directly in
    /// this job's `shared/` directory, as handles (path relative to the
    /// storage root, stored size, no checksum): what a sweep compares with
    /// the files its retained checkpoints reference. Other files there are
    /// not Floe's and never listed, so never swept.
    pub fn list_shared_files(&self) -> Result<Vec<StateHandle>, StorageError> {
        let dir = self.shared_path();
        Ok(self
            .storage
            .list_under(&dir)?
            .into_iter()
            .filter(|meta| {
                meta.location.prefix_match(&dir).is_some_and(|mut rest| {
                    rest.next()
                        .is_some_and(|name| is_shared_file_name(name.as_ref()))
                        && rest.next().is_none()
                })
            })
            .map(|meta| StateHandle {
                path: self.storage.relative(&meta.location),
                size: meta.size,
                checksum: None,
            })
            .collect())
    }

    /// Deletes the Floe-named files of the job's `shared/` directory (when
    /// the job's last checkpoint is discarded), and the directory if that
    /// empties it; anything else there is left, and reported.
    pub fn discard_shared(&self) -> Result<Removal, StorageError> {
        let dir = self.shared_path();
        let names = self
            .storage
            .dir_entries(&dir)?
            .into_iter()
            .filter(|n| is_shared_file_name(n))
            .collect();
        self.storage.delete_owned(&dir, &names)
    }

    fn shared_path(&self) -> Path {
        self.job_root.clone().join(SHARED_STATE_DIR)
    }

    /// Reads the state file of a handle and returns its payload, after
    /// checking its frame (magic, version, length, checksum, kind) and its
    /// size against the handle. Handles are relative to the storage root, so
    /// this also reads files of other jobs in the same storage (a job
    /// restored from another job's checkpoint).
    pub fn read_state_file(
        &self,
        handle: &StateHandle,
        kind: FileKind,
    ) -> Result<Vec<u8>, StorageError> {
        self.storage.read_framed(handle, kind)
    }

    /// Completes checkpoint `checkpoint_id` by writing its `_metadata`. Call
    /// it only after every state file of the checkpoint is written: from
    /// this moment on the checkpoint exists. The write is atomic and
    /// put-if-absent, so a reader never sees a partial `_metadata`, and a
    /// second completion of the same checkpoint fails with
    /// [`StorageError::AlreadyCompleted`] instead of replacing the first.
    pub fn complete_checkpoint(
        &self,
        checkpoint_id: u64,
        metadata_payload: &[u8],
    ) -> Result<StateHandle, StorageError> {
        let path = self.metadata_path(checkpoint_id);
        let handle = self.storage.put_new(
            &path,
            format::encode(FileKind::Metadata, metadata_payload),
            |location| StorageError::AlreadyCompleted {
                checkpoint_id,
                location,
            },
        )?;
        // From now on `_metadata` lists the files.
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&checkpoint_id);
        Ok(handle)
    }

    /// Reads the `_metadata` payload of a completed checkpoint.
    pub fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.metadata_path(checkpoint_id);
        let location = self.storage.display(&path);
        let bytes = self
            .storage
            .get(&path)?
            .ok_or_else(|| StorageError::NotCompleted {
                checkpoint_id,
                location: location.clone(),
            })?;
        Ok(format::decode(&bytes, FileKind::Metadata, &location)?.to_vec())
    }

    /// Deletes completed checkpoint `checkpoint_id`, owning nothing it
    /// cannot prove: its `_metadata` is read and verified first (frame,
    /// payload, a checkpoint's and not a savepoint's, this id), every file
    /// it lists in the `chk-<n>/` directory is checked (size, frame
    /// header), then `_metadata` is deleted (from then on it no longer
    /// counts as completed, even if the rest fails), then exactly those
    /// files (and their staging sidecars), then the directory if that
    /// empties it. Anything else in `chk-<n>/` is left and reported in the
    /// [`Removal`]; nothing outside it is touched (`shared/` belongs to the
    /// registry). A checkpoint without `_metadata` (never completed, or
    /// discarded already) deletes nothing and succeeds, so a discard can be
    /// retried; a `_metadata` that does not verify is refused, deleting
    /// nothing.
    pub fn discard_checkpoint(&self, checkpoint_id: u64) -> Result<Removal, StorageError> {
        let dir = self.checkpoint_path(checkpoint_id);
        let metadata_path = self.metadata_path(checkpoint_id);
        let refuse = |reason: String| StorageError::DeleteRefused {
            location: self.checkpoint_location(checkpoint_id),
            reason,
        };
        let meta = match self.storage.read_verified_metadata(&metadata_path) {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                return Ok(Removal {
                    deleted: Vec::new(),
                    left: self
                        .storage
                        .dir_entries(&dir)?
                        .iter()
                        .map(|e| format!("{}/{e}", self.storage.display(&dir)))
                        .collect(),
                });
            }
            Err(e) => return Err(refuse(format!("its _metadata cannot be verified: {e}"))),
        };
        if meta.is_savepoint {
            return Err(refuse(
                "its _metadata is a savepoint's (dispose of savepoints with `floe savepoint -d`)"
                    .into(),
            ));
        }
        if meta.checkpoint_id != checkpoint_id {
            return Err(refuse(format!(
                "its _metadata is checkpoint {}'s, not checkpoint {checkpoint_id}'s",
                meta.checkpoint_id
            )));
        }
        let prefix = format!("{}/", self.storage.relative(&dir));
        let mut names = BTreeSet::new();
        for handle in meta.own_files() {
            // Files listed elsewhere are not this directory's to delete.
            let Some(name) = handle.path.strip_prefix(&prefix) else {
                continue;
            };
            if validate_file_name(name).is_err() {
                continue;
            }
            self.storage
                .verify_owned(&dir.clone().join(name), &handle)
                .map_err(|e| refuse(format!("{e}")))?;
            names.insert(name.to_string());
        }
        self.storage.delete_file(&metadata_path)?;
        names.insert(METADATA_FILE_NAME.to_string());
        self.storage.delete_owned(&dir, &names)
    }

    /// Deletes what this storage handle started writing for checkpoint
    /// `checkpoint_id`, which never completed (aborted, declined, expired,
    /// or the run ended): exactly those files and their staging sidecars,
    /// then the `chk-<n>/` directory if that empties it. A completed
    /// checkpoint is refused: it is discarded with its `_metadata`
    /// ([`JobCheckpointStorage::discard_checkpoint`]).
    pub fn discard_incomplete(&self, checkpoint_id: u64) -> Result<Removal, StorageError> {
        if self.storage.exists(&self.metadata_path(checkpoint_id))? {
            return Err(StorageError::DeleteRefused {
                location: self.checkpoint_location(checkpoint_id),
                reason: "it is a completed checkpoint (its _metadata exists), not an aborted one"
                    .into(),
            });
        }
        let names = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&checkpoint_id)
            .unwrap_or_default();
        self.storage
            .delete_owned(&self.checkpoint_path(checkpoint_id), &names)
    }

    /// The ids of the job's completed checkpoints, ascending: every
    /// `chk-<n>` whose `_metadata` exists. Directories of checkpoints that
    /// never completed are not checkpoints and are left out.
    pub fn completed_checkpoints(&self) -> Result<Vec<u64>, StorageError> {
        let storage = &self.storage;
        let store = &storage.inner.store;
        let listing = storage
            .block_on(store.list_with_delimiter(Some(&self.job_root)))?
            .map_err(|source| StorageError::Io {
                operation: "list",
                location: self.job_location(),
                source,
            })?;
        let candidates: Vec<(u64, Path)> = listing
            .common_prefixes
            .iter()
            .filter_map(|dir| {
                let id = parse_checkpoint_dir_name(dir.filename()?)?;
                Some((id, self.metadata_path(id)))
            })
            .collect();
        let checks = storage.block_on(
            stream::iter(candidates)
                .map(|(id, metadata)| async move {
                    let result = store.head(&metadata).await;
                    (id, metadata, result)
                })
                .buffer_unordered(LIST_CONCURRENCY)
                .collect::<Vec<_>>(),
        )?;
        let mut completed = Vec::new();
        for (id, metadata, result) in checks {
            match result {
                Ok(_) => completed.push(id),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(StorageError::Io {
                        operation: "check",
                        location: storage.display(&metadata),
                        source,
                    });
                }
            }
        }
        completed.sort_unstable();
        Ok(completed)
    }

    /// The id of the job's latest completed checkpoint, if any.
    pub fn latest_completed(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.completed_checkpoints()?.last().copied())
    }
}

/// `chk-<n>` → `n`; only the canonical spelling (no sign, no leading zero),
/// so one checkpoint has one directory.
fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// Refuses names that could escape the checkpoint directory, collide with
/// `_metadata`, be hidden, or be mangled by a store.
pub(crate) fn validate_file_name(name: &str) -> Result<(), StorageError> {
    let invalid = |reason| {
        Err(StorageError::InvalidFileName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return invalid("longer than 200 bytes");
    }
    if name == METADATA_FILE_NAME {
        return invalid("reserved for the checkpoint metadata, written by complete_checkpoint");
    }
    if name.starts_with('.') {
        return invalid("must not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Removes one local file (a symbolic link itself, never its target); a
/// file already gone is fine.
fn remove_local_file(path: &std::path::Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::LocalDelete {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Refuses a handle path read from `_metadata` that is not a plain
/// relative path inside its root: absolute, empty, with an empty, `.` or
/// `..` segment, a backslash or a control character. A crafted `_metadata`
/// thus cannot make a restore read, or a discard delete, anything outside
/// the checkpoint storage or savepoint directory.
pub fn validate_handle_path(path: &str) -> Result<(), StorageError> {
    let invalid = |reason: &str| {
        Err(StorageError::InvalidHandle {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return invalid("empty path");
    }
    if path.starts_with('/') {
        return invalid("an absolute path; handles are relative to their snapshot's root");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return invalid("contains a backslash or a control character");
    }
    for segment in path.split('/') {
        match segment {
            "" => return invalid("empty path segment"),
            "." | ".." => return invalid("'.' and '..' segments are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `name` is a file name of Floe's incremental state under
/// `shared/`: `<16 hex digits: the database>-<checkpoint id>-<SST file>`,
/// as the RocksDB backend names its uploads. The sweeps of `shared/` delete
/// only files named so: anything else there is not Floe's.
pub fn is_shared_file_name(name: &str) -> bool {
    let mut parts = name.splitn(3, '-');
    let (Some(db), Some(id), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    db.len() == 16
        && db.bytes().all(|b| b.is_ascii_hexdigit())
        && digits(id)
        && file.strip_suffix(".sst").is_some_and(digits)
}

/// What a discard deleted, and what it left because the snapshot does
/// not own it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The files deleted, as URLs.
    pub deleted: Vec<String>,
    /// The entries left in the directory, as URLs (a trailing `/` marks a
    /// subdirectory); the directory itself was kept when this is not empty.
    pub left: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_dir_names() {
        assert_eq!(parse_checkpoint_dir_name("chk-0"), Some(0));
        assert_eq!(parse_checkpoint_dir_name("chk-42"), Some(42));
        for bad in [
            "chk-", "chk-01", "chk-+1", "chk--1", "chk-1a", "chk1", "shared",
        ] {
            assert_eq!(parse_checkpoint_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_names() {
        for good in ["a", "9f1c-uuid_state.bin", "op-3_sub-0"] {
            validate_file_name(good).unwrap();
        }
        for bad in [
            "",
            "_metadata",
            ".hidden",
            "a/b",
            "..",
            "a#1",
            "sp ace",
            "ü",
            &"x".repeat(201),
        ] {
            let err = validate_file_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid state file name"), "{err}");
        }
    }
}
