//! An exactly-once file sink (Flink's `FileSink` in row format): rolling
//! part files in buckets, committed on completed checkpoints.
//!
//! Records go to a bucket (a subdirectory of the output directory, chosen
//! per record by a [`BucketAssigner`]; Flink's default, a
//! [`DateTimeBucketAssigner`], makes one per hour). Each subtask keeps at
//! most one open part file per bucket. A [`RollingPolicy`] decides when
//! the file is closed ("rolled"): by size, age or inactivity
//! ([`DefaultRollingPolicy`], the default), or at every checkpoint
//! ([`OnCheckpointRollingPolicy`]). A rolled file is pending; the next
//! checkpoint records it, and once that checkpoint completes it is renamed
//! to its committed name. Readers see only committed files: until then the
//! name starts with `.` (see [`OutputFileConfig`]).
//!
//! An open file spans checkpoints. At each checkpoint the sink flushes and
//! fsyncs it and records its path and length (Flink's row-format
//! `RecoverableWriter`). Its bytes past that length belong to records the
//! restored job replays, so a restore truncates the file to the recorded
//! length and commits it; the records after it go into new files. Pending
//! files recorded by the checkpoint are committed on restore too (the
//! notification of its completion may have been lost).
//!
//! Every recorded file carries the absolute directory it was written in,
//! and a restore commits it there — also when the job now writes to
//! another output directory. A recorded file that is already committed, or
//! gone, is reported in one warning and skipped (as Flink's committer does),
//! so restoring never fails in a loop over files that cannot come back.
//! Recorded names come from a snapshot and are untrusted: the directory
//! must be absolute without `.` or `..`, the names plain names, and the
//! in-progress name `.<committed>.inprogress.<token>`, so a crafted
//! snapshot can only rename or truncate the sink's own hidden files.
//!
//! After a restore each subtask removes the hidden in-progress files, in
//! every bucket and in the directories the checkpoint recorded, that no
//! checkpoint refers to: those an old subtask whose index is its own
//! modulo the new parallelism wrote with a part counter at or past the one
//! the checkpoint recorded for that old subtask. One job per output
//! directory.
//!
//! The checkpointed state is versioned (`file-sink-writer-state`, a tagged
//! enum); state written by the earlier sink, which rolled on every
//! checkpoint through the two-phase-commit framework
//! (`two-phase-commit-transactions` of [`FileTransaction`]s), is still read
//! and committed. Compaction of small files is not supported.

mod bucket;
mod naming;
mod rolling;

pub use bucket::{
    BasePathBucketAssigner, BucketAssigner, BucketContext, DateTimeBucketAssigner,
    DateTimePatternError,
};
pub use naming::{OutputFileConfig, OutputFileConfigBuilder, OutputFileConfigError};
pub use rolling::{
    DefaultRollingPolicy, DefaultRollingPolicyBuilder, OnCheckpointRollingPolicy, PartFileInfo,
    RollingPolicy,
};

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use floe_core::failpoint;
use floe_runtime::two_phase::{LOCATION_STATE_NAME, TwoPhaseState};
use floe_runtime::{
    CheckpointListener, CheckpointedFunction, FunctionInitializationContext,
    FunctionSnapshotContext, NonRecoverable, SinkWriter, TaskInfo,
};
use floe_state::{ListStateDescriptor, OperatorListState};
use serde::{Deserialize, Serialize};

use crate::format::LineFormat;

/// The operator state holding each subtask's pending and in-progress
/// files.
pub const STATE_NAME: &str = "file-sink-writer-state";

/// The union operator state holding each subtask's index and next part
/// counter: a restore continues after the largest, so no new name can
/// collide with a restored one, and removes a subtask's hidden files at or
/// past its own (written after the checkpoint).
pub const COUNTER_STATE_NAME: &str = "file-sink-part-counter";

/// One part file's way through in progress → pending → committed, as the
/// earlier, roll-on-every-checkpoint sink recorded it (file names inside
/// the output directory). Only read from old snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransaction {
    /// The in-progress file.
    pub in_progress: String,
    /// The pending file, once pre-committed.
    pub pending: Option<String>,
    /// The committed file, once pre-committed.
    pub committed: Option<String>,
}

/// A closed part file waiting for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingFile {
    /// The absolute directory (bucket) it was written in.
    directory: String,
    /// Its hidden name until committed.
    in_progress_name: String,
    /// Its name once committed.
    committed_name: String,
}

/// An open part file as of a checkpoint: what is durable of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InProgressFile {
    file: PendingFile,
    /// Bytes fsynced when the checkpoint was taken.
    length: u64,
}

/// The versioned element of [`STATE_NAME`]: postcard writes the variant
/// index first, which is the version tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum FileSinkState {
    V1 {
        /// Rolled files by the checkpoint that recorded them, ascending.
        pending: Vec<(u64, Vec<PendingFile>)>,
        /// Open files with their checkpointed lengths.
        in_progress: Vec<InProgressFile>,
    },
}

/// Why the file sink refused a recorded file or a bucket; always a failure
/// no restart can cure.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// A recorded file that is not one of this sink's hidden part files
    /// inside an absolute directory: a crafted or altered snapshot.
    #[error(
        "refusing to touch recorded part file {name:?} in {directory:?} (operator state '{STATE_NAME}'): {reason} (was the snapshot written by this sink, or altered?); nothing was renamed, truncated or deleted"
    )]
    UnsafeRecordedFile {
        /// The recorded directory.
        directory: String,
        /// The recorded name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An in-progress file shorter than its checkpointed length: bytes a
    /// checkpoint counted as durable are gone, so exactly-once is lost.
    #[error(
        "in-progress part file {path} holds {actual} bytes but its checkpoint recorded {recorded}: data the checkpoint relied on is gone"
    )]
    Shrunk {
        /// The file.
        path: PathBuf,
        /// Its length now.
        actual: u64,
        /// Its checkpointed length.
        recorded: u64,
    },
    /// A bucket id that is not a relative path of plain names.
    #[error(
        "bucket id {bucket_id:?} is not a relative path of plain names (no empty, '.' or '..' parts, not absolute)"
    )]
    InvalidBucketId {
        /// The bucket id.
        bucket_id: String,
    },
}

impl FileSinkError {
    fn fatal(self) -> anyhow::Error {
        NonRecoverable::wrap(anyhow::Error::new(self))
    }
}

/// What became of a recorded file on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    AlreadyCommitted,
    Missing,
}

/// The processing-time source (ms since the epoch).
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An open part file.
struct PartFile {
    file: PendingFile,
    bucket_id: String,
    writer: BufWriter<File>,
    size: u64,
    created_at_ms: u64,
    last_updated_at_ms: u64,
}

impl PartFile {
    fn info(&self) -> PartFileInfo {
        PartFileInfo {
            bucket_id: self.bucket_id.clone(),
            size: self.size,
            created_at_ms: self.created_at_ms,
            last_updated_at_ms: self.last_updated_at_ms,
        }
    }

    fn path(&self) -> PathBuf {
        Path::new(&self.file.directory).join(&self.file.in_progress_name)
    }

    /// Flushes and fsyncs: the current size is durable.
    fn sync(&mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .and_then(|()| self.writer.get_ref().sync_data())
            .with_context(|| format!("cannot sync part file {}", self.path().display()))
    }
}

/// Writes lines into rolling part files in buckets under a directory,
/// exactly once with checkpointing (see the module docs). It is its own
/// sink writer: hand it to `sink_to` as built.
pub struct FileSink<T> {
    dir: PathBuf,
    format: LineFormat<T>,
    policy: RollingPolicy,
    assigner: BucketAssigner<T>,
    names: OutputFileConfig,
    clock: Clock,

    subtask: u32,
    token: String,
    next_counter: u64,
    /// The next part counter each old subtask recorded in the restored
    /// checkpoint.
    restored_counters: HashMap<u32, u64>,
    open_files: HashMap<String, PartFile>,
    rolled: Vec<PendingFile>,
    pending: Vec<(u64, Vec<PendingFile>)>,
    state: Option<OperatorListState<FileSinkState>>,
    counter_state: Option<OperatorListState<(u32, u64)>>,
    restored: bool,
    /// Directories the restored checkpoint recorded files in (checked).
    recorded_dirs: BTreeSet<PathBuf>,
    restored_checkpoint_id: Option<u64>,
    checkpointing: bool,
    last_time_check_ms: u64,
    line: String,
    bucket_id: String,
}

impl<T> Clone for FileSink<T> {
    /// A fresh, unopened sink with the same configuration, for another
    /// subtask.
    fn clone(&self) -> Self {
        FileSink {
            policy: self.policy,
            assigner: self.assigner.clone(),
            names: self.names.clone(),
            clock: self.clock.clone(),
            ..FileSink::for_row_format(self.dir.clone(), self.format.clone())
        }
    }
}

impl<T: std::fmt::Display> FileSink<T> {
    /// A sink writing each record's `Display` form as a line into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::for_row_format(dir, LineFormat::display())
    }
}

impl<T> FileSink<T> {
    /// A sink writing lines in `format` into part files under `dir`
    /// (Flink's `FileSink.forRowFormat`), with Flink's defaults: a
    /// [`DefaultRollingPolicy`], a [`DateTimeBucketAssigner`] (one bucket
    /// per hour) and [`OutputFileConfig::default`]. A relative `dir` is
    /// made absolute now, since checkpoints record absolute directories.
    pub fn for_row_format(dir: impl Into<PathBuf>, format: LineFormat<T>) -> Self {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        FileSink {
            dir,
            format,
            policy: RollingPolicy::default(),
            assigner: DateTimeBucketAssigner::new().into(),
            names: OutputFileConfig::default(),
            clock: Arc::new(system_clock),
            subtask: 0,
            token: String::new(),
            next_counter: 0,
            restored_counters: HashMap::new(),
            open_files: HashMap::new(),
            rolled: Vec::new(),
            pending: Vec::new(),
            state: None,
            counter_state: None,
            restored: false,
            recorded_dirs: BTreeSet::new(),
            restored_checkpoint_id: None,
            checkpointing: false,
            last_time_check_ms: 0,
            line: String::new(),
            bucket_id: String::new(),
        }
    }

    /// When part files roll: a [`DefaultRollingPolicy`] (or its builder)
    /// or an [`OnCheckpointRollingPolicy`].
    pub fn with_rolling_policy(mut self, policy: impl Into<RollingPolicy>) -> Self {
        self.policy = policy.into();
        self
    }

    /// Which bucket each record goes to: a [`DateTimeBucketAssigner`], a
    /// [`BasePathBucketAssigner`], or [`BucketAssigner::from_fn`].
    pub fn with_bucket_assigner(mut self, assigner: impl Into<BucketAssigner<T>>) -> Self {
        self.assigner = assigner.into();
        self
    }

    /// How part files are named.
    pub fn with_output_file_config(mut self, names: OutputFileConfig) -> Self {
        self.names = names;
        self
    }

    /// The processing-time clock (ms since the epoch) that rolling and the
    /// date-time buckets read; the system clock unless a test injects one.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The sink as configured (Flink's `build()`); optional, since the
    /// sink is its own writer.
    pub fn build(self) -> Self {
        self
    }

    /// The output directory (absolute).
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// The directory of bucket `id`, refusing ids that would leave the
    /// output directory.
    fn bucket_dir(&self, id: &str) -> anyhow::Result<PathBuf> {
        if id.is_empty() {
            return Ok(self.dir.clone());
        }
        if id.split('/').all(is_plain_file_name) {
            Ok(self.dir.join(id))
        } else {
            Err(FileSinkError::InvalidBucketId {
                bucket_id: id.to_string(),
            }
            .fatal())
        }
    }

    /// Opens a new part file in bucket `id` at processing time `now`.
    fn open_part_file(&mut self, id: &str, now: u64) -> anyhow::Result<PartFile> {
        let dir = self.bucket_dir(id)?;
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create bucket directory {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let (committed, in_progress) = self.new_part_names(&dir);
        let path = dir.join(&in_progress);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create part file {}", path.display()))?;
        Ok(PartFile {
            file: PendingFile {
                directory: dir.display().to_string(),
                in_progress_name: in_progress,
                committed_name: committed,
            },
            bucket_id: id.to_string(),
            writer: BufWriter::with_capacity(64 * 1024, f),
            size: 0,
            created_at_ms: now,
            last_updated_at_ms: now,
        })
    }

    /// The committed and in-progress names of the next part file in `dir`.
    /// A fresh start into a directory that already holds committed files
    /// skips their names rather than overwrite them.
    fn new_part_names(&mut self, dir: &Path) -> (String, String) {
        let committed = loop {
            let name = self.names.committed_name(self.subtask, self.next_counter);
            self.next_counter += 1;
            if !dir.join(&name).exists() {
                break name;
            }
        };
        let in_progress = OutputFileConfig::in_progress_name(&committed, &self.token);
        (committed, in_progress)
    }

    /// Closes `part`: flushed, fsynced, pending until the next checkpoint
    /// completes.
    fn roll(&mut self, mut part: PartFile) -> anyhow::Result<()> {
        part.sync()?;
        self.rolled.push(part.file);
        Ok(())
    }

    /// Rolls every open file for which `should` holds.
    fn roll_where(&mut self, should: impl Fn(&PartFile) -> bool) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .open_files
            .iter()
            .filter(|(_, p)| should(p))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let part = self.open_files.remove(&id).expect("listed above");
            self.roll(part)?;
        }
        Ok(())
    }

    /// Commits pending files (rename, then fsync the directory).
    fn commit_pending(&mut self, files: Vec<PendingFile>) -> anyhow::Result<()> {
        let mut report = RestoreReport::default();
        for f in files {
            failpoint::hit("sink.commit");
            let outcome = commit_file(&f)?;
            report.note(&f, outcome);
        }
        report.warn("committing");
        Ok(())
    }

    /// Commits what the restored checkpoint recorded (see the module docs).
    fn restore(
        &mut self,
        states: Vec<FileSinkState>,
        report: &mut RestoreReport,
    ) -> anyhow::Result<()> {
        for s in states {
            let FileSinkState::V1 {
                pending,
                in_progress,
            } = s;
            for f in pending.into_iter().flat_map(|(_, files)| files) {
                report.note(&f, commit_file(&f)?);
                self.recorded_dirs.insert(PathBuf::from(&f.directory));
            }
            for f in in_progress {
                report.note(&f.file, recover_in_progress(&f)?);
                self.recorded_dirs.insert(PathBuf::from(&f.file.directory));
            }
        }
        Ok(())
    }

    /// Commits the transactions of a snapshot written by the earlier sink:
    /// in this directory or in one the snapshot recorded.
    fn restore_legacy(
        &self,
        txns: Vec<(u64, FileTransaction)>,
        locations: &[String],
        report: &mut RestoreReport,
    ) -> anyhow::Result<()> {
        let mut dirs = vec![self.dir.clone()];
        dirs.extend(
            locations
                .iter()
                .map(PathBuf::from)
                .filter(|d| is_safe_directory(d)),
        );
        for (_, txn) in txns {
            check_legacy_transaction(&self.dir, &txn)?;
            let (Some(pending), Some(committed)) = (&txn.pending, &txn.committed) else {
                continue;
            };
            let mut outcome = Outcome::Missing;
            for d in &dirs {
                if d.join(pending).exists() {
                    rename_in(d, pending, committed)?;
                    outcome = Outcome::Committed;
                    break;
                }
                if d.join(committed).exists() {
                    outcome = Outcome::AlreadyCommitted;
                    break;
                }
            }
            let as_file = PendingFile {
                directory: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                in_progress_name: pending.clone(),
                committed_name: committed.clone(),
            };
            report.note(&as_file, outcome);
        }
        Ok(())
    }

    /// Removes hidden in-progress files no checkpoint refers to after a
    /// restore (see the module docs), and the earlier sink's leftovers:
    /// under the output directory, and in the directories the restored
    /// checkpoint recorded files in (a restore into another directory
    /// cleans up the old one too).
    fn remove_leftovers(&self, info: &TaskInfo, restored_checkpoint: u64) -> anyhow::Result<()> {
        let mut dirs = vec![(self.dir.clone(), true)];
        dirs.extend(
            self.recorded_dirs
                .iter()
                .filter(|d| !d.starts_with(&self.dir) && d.is_dir())
                .map(|d| (d.clone(), false)),
        );
        while let Some((dir, recurse)) = dirs.pop() {
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list output directory {}", dir.display()))?;
            for e in entries {
                let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
                let ty = e
                    .file_type()
                    .with_context(|| format!("cannot inspect {}", e.path().display()))?;
                if ty.is_dir() && recurse {
                    dirs.push((e.path(), true));
                    continue;
                }
                if !ty.is_file() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let remove = if let Some((subtask, counter)) = self.names.parse_in_progress(&name) {
                    subtask % info.parallelism == info.subtask_index
                        && self
                            .restored_counters
                            .get(&subtask)
                            .is_some_and(|next| counter >= *next)
                } else if dir == self.dir
                    && let Some(l) = Leftover::parse(&name)
                {
                    l.subtask % info.parallelism == info.subtask_index
                        && l.checkpoint.is_none_or(|n| n > restored_checkpoint)
                } else {
                    false
                };
                if remove {
                    tracing::info!(file = %e.path().display(), "removing an uncommitted part file no checkpoint refers to");
                    remove_if_exists(&e.path())?;
                }
            }
        }
        Ok(())
    }
}

/// What a restore found, reported once.
#[derive(Default)]
struct RestoreReport {
    committed: usize,
    already_committed: Vec<String>,
    missing: Vec<String>,
}

impl RestoreReport {
    fn note(&mut self, f: &PendingFile, outcome: Outcome) {
        let describe = || format!("{}/{}", f.directory, f.committed_name);
        match outcome {
            Outcome::Committed => self.committed += 1,
            Outcome::AlreadyCommitted => self.already_committed.push(describe()),
            Outcome::Missing => self.missing.push(describe()),
        }
    }

    /// One warning for everything skipped, if anything was.
    fn warn(&self, what: &str) {
        if self.already_committed.is_empty() && self.missing.is_empty() {
            return;
        }
        let list = |v: &[String]| {
            let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 5 {
                s.push_str(&format!(" and {} more", v.len() - 5));
            }
            s
        };
        tracing::warn!(
            "file sink: {what}: {} part file(s) committed; {} already committed, skipped: [{}]; {} neither pending nor committed (removed, or the directory is gone), skipped: [{}]",
            self.committed,
            self.already_committed.len(),
            list(&self.already_committed),
            self.missing.len(),
            list(&self.missing),
        );
    }
}

/// Refuses a recorded file that is not this sink's hidden part file in an
/// absolute directory (see the module docs).
fn check_recorded(f: &PendingFile) -> anyhow::Result<()> {
    let refuse = |name: &str, reason: &str| {
        Err(FileSinkError::UnsafeRecordedFile {
            directory: f.directory.clone(),
            name: name.to_string(),
            reason: reason.to_string(),
        }
        .fatal())
    };
    if !is_safe_directory(Path::new(&f.directory)) {
        return refuse(
            &f.in_progress_name,
            "the directory is not absolute, or has '.' or '..' parts",
        );
    }
    for n in [&f.in_progress_name, &f.committed_name] {
        if !is_plain_file_name(n) {
            return refuse(n, "it is not a single file name");
        }
    }
    if f.committed_name.starts_with('.') {
        return refuse(&f.committed_name, "a committed name is not hidden");
    }
    let token = f
        .in_progress_name
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(f.committed_name.as_str()))
        .and_then(|r| r.strip_prefix(".inprogress."));
    if !token.is_some_and(naming::is_token) {
        return refuse(
            &f.in_progress_name,
            &format!(
                "an in-progress name is .{}.inprogress.<8 hex digits>",
                f.committed_name
            ),
        );
    }
    Ok(())
}

/// Commits a pending file where it was written; idempotent.
fn commit_file(f: &PendingFile) -> anyhow::Result<Outcome> {
    check_recorded(f)?;
    let dir = Path::new(&f.directory);
    if dir.join(&f.in_progress_name).exists() {
        rename_in(dir, &f.in_progress_name, &f.committed_name)?;
        return Ok(Outcome::Committed);
    }
    Ok(committed_or_missing(f))
}

/// Truncates a restored in-progress file to its checkpointed length and
/// commits it (Flink's `commitAfterRecovery`).
fn recover_in_progress(f: &InProgressFile) -> anyhow::Result<Outcome> {
    if truncate_in_progress(f)? {
        rename_in(
            Path::new(&f.file.directory),
            &f.file.in_progress_name,
            &f.file.committed_name,
        )?;
        return Ok(Outcome::Committed);
    }
    Ok(committed_or_missing(&f.file))
}

/// Truncates a restored in-progress file to its checkpointed length, and
/// syncs it; false if it is not there.
fn truncate_in_progress(f: &InProgressFile) -> anyhow::Result<bool> {
    check_recorded(&f.file)?;
    let path = Path::new(&f.file.directory).join(&f.file.in_progress_name);
    if !path.exists() {
        return Ok(false);
    }
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open part file {}", path.display()))?;
    let actual = file
        .metadata()
        .with_context(|| format!("cannot inspect part file {}", path.display()))?
        .len();
    if actual < f.length {
        return Err(FileSinkError::Shrunk {
            path,
            actual,
            recorded: f.length,
        }
        .fatal());
    }
    if actual > f.length {
        tracing::info!(
            file = %path.display(),
            from = actual,
            to = f.length,
            "truncating a restored in-progress part file to its checkpointed length"
        );
    }
    file.set_len(f.length)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot truncate part file {}", path.display()))?;
    Ok(true)
}

/// What became of a recorded file whose hidden name is gone.
fn committed_or_missing(f: &PendingFile) -> Outcome {
    if Path::new(&f.directory).join(&f.committed_name).exists() {
        Outcome::AlreadyCommitted
    } else {
        Outcome::Missing
    }
}

/// Renames `from` to `to` inside `dir` and makes the rename durable.
fn rename_in(dir: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let (a, b) = (dir.join(from), dir.join(to));
    std::fs::rename(&a, &b)
        .with_context(|| format!("cannot rename {} to {}", a.display(), b.display()))?;
    sync_dir(dir)
}

/// Absolute, and no `.` or `..` parts.
fn is_safe_directory(d: &Path) -> bool {
    d.is_absolute()
        && d.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !d.as_os_str().as_encoded_bytes().contains(&0)
}

/// Refuses an earlier sink's transaction whose names are not its part-file
/// names (they may come from a crafted snapshot).
fn check_legacy_transaction(dir: &Path, txn: &FileTransaction) -> anyhow::Result<()> {
    let refuse = |role: &str, name: &str, why: &str| -> anyhow::Result<()> {
        Err(NonRecoverable::new(format!(
            "refusing to touch {role} part file {name:?} of a transaction in operator state '{}': {why} (was the snapshot written by this sink, or altered?); nothing in {} was renamed or deleted",
            floe_runtime::two_phase::STATE_NAME,
            dir.display()
        ))
        .into())
    };
    let mut names = vec![(
        "in-progress",
        txn.in_progress.as_str(),
        ".part-",
        ".inprogress",
    )];
    if let Some(p) = &txn.pending {
        names.push(("pending", p, ".part-", ".pending"));
    }
    if let Some(c) = &txn.committed {
        names.push(("committed", c, "part-", ""));
    }
    for (role, name, prefix, suffix) in names {
        if !is_plain_file_name(name) {
            return refuse(
                role,
                name,
                "it is not a single file name inside the output directory",
            );
        }
        if !(name.starts_with(prefix) && name.ends_with(suffix)) {
            return refuse(
                role,
                name,
                &format!("a file sink's {role} file is named {prefix}…{suffix}"),
            );
        }
    }
    if let (Some(p), Some(c)) = (&txn.pending, &txn.committed)
        && *p != format!(".{c}.pending")
    {
        return refuse(
            "pending",
            p,
            &format!("it does not belong to the committed name {c:?}"),
        );
    }
    Ok(())
}

/// An uncommitted part file of the earlier sink: its subtask, and its
/// checkpoint if pending.
struct Leftover {
    subtask: u32,
    checkpoint: Option<u64>,
}

impl Leftover {
    fn parse(name: &str) -> Option<Leftover> {
        let rest = name.strip_prefix(".part-")?;
        if let Some(rest) = rest.strip_suffix(".inprogress") {
            let subtask = rest.split('-').next()?.parse().ok()?;
            return Some(Leftover {
                subtask,
                checkpoint: None,
            });
        }
        let rest = rest.strip_suffix(".pending")?;
        let mut parts = rest.split('-');
        let subtask = parts.next()?.parse().ok()?;
        let checkpoint = parts.next()?.parse().ok()?;
        Some(Leftover {
            subtask,
            checkpoint: Some(checkpoint),
        })
    }
}

/// One normal path component: not empty, no separator, not `.` or `..`,
/// not absolute, no NUL.
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    !name.contains(['/', '\0'])
        && matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(c)), None) if c == name
        )
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync output directory {}", dir.display()))
}

impl<T: Send + 'static> SinkWriter<T> for FileSink<T> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        if self.dir.is_file() {
            anyhow::bail!(
                "output path {} is a file; the file sink writes a directory of part files",
                self.dir.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create output directory {}", self.dir.display()))?;
        self.subtask = info.subtask_index;
        self.token = format!("{:08x}", rand::random::<u32>());
        if self.restored {
            self.remove_leftovers(info, self.restored_checkpoint_or_any())?;
        }
        Ok(())
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = (self.clock)();
        if now >= self.last_time_check_ms.saturating_add(1000) {
            self.last_time_check_ms = now;
            let policy = self.policy;
            self.roll_where(|p| policy.should_roll_on_processing_time(&p.info(), now))?;
        }
        let ctx = BucketContext {
            current_processing_time_ms: now,
        };
        let mut id = std::mem::take(&mut self.bucket_id);
        let mut line = std::mem::take(&mut self.line);
        let result = batch.drain(..).try_for_each(|r| {
            self.assigner.assign(&r, &ctx, &mut id);
            line.clear();
            self.format.format(&r, &mut line);
            line.push('\n');
            if let Some(p) = self.open_files.get(id.as_str())
                && self.policy.should_roll_at_size(p.size)
            {
                let part = self.open_files.remove(id.as_str()).expect("found above");
                self.roll(part)?;
            }
            if !self.open_files.contains_key(id.as_str()) {
                let part = self.open_part_file(&id, now)?;
                self.open_files.insert(id.clone(), part);
            }
            let part = self.open_files.get_mut(id.as_str()).expect("opened above");
            part.writer
                .write_all(line.as_bytes())
                .with_context(|| format!("cannot write part file {}", part.path().display()))?;
            part.size += line.len() as u64;
            part.last_updated_at_ms = now;
            Ok::<_, anyhow::Error>(())
        });
        batch.clear();
        self.bucket_id = id;
        self.line = line;
        result
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        // End of input closes every open file (Flink's `endInput`).
        self.roll_where(|_| true)?;
        if self.checkpointing {
            // The job's final checkpoint records and then commits them.
            return Ok(());
        }
        let mut files: Vec<PendingFile> = std::mem::take(&mut self.pending)
            .into_iter()
            .flat_map(|(_, f)| f)
            .collect();
        files.append(&mut self.rolled);
        self.commit_pending(files)
    }
}

impl<T> FileSink<T> {
    /// The checkpoint a restore started from, for the earlier sink's
    /// leftovers (named by checkpoint); any id if unknown.
    fn restored_checkpoint_or_any(&self) -> u64 {
        self.restored_checkpoint_id.unwrap_or(u64::MAX)
    }
}

/// Pending and in-progress files are operator state: restored (and
/// committed) before `open`, recorded at every barrier.
impl<T: Send + 'static> CheckpointedFunction for FileSink<T> {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        let state = ctx
            .operator_state_store()
            .get_list_state(&ListStateDescriptor::<FileSinkState>::new(STATE_NAME))?;
        let counter_state = ctx
            .operator_state_store()
            .get_union_list_state(&ListStateDescriptor::<(u32, u64)>::new(COUNTER_STATE_NAME))?;
        self.checkpointing = ctx.is_checkpointing_enabled();
        if ctx.is_restored() {
            self.restored = true;
            self.restored_checkpoint_id = ctx.restored_checkpoint_id();
            let mut report = RestoreReport::default();
            // The earlier sink's state, under its recorded type.
            let legacy = ctx
                .operator_state_store()
                .get_list_state(&ListStateDescriptor::<TwoPhaseState<FileTransaction>>::new(
                    floe_runtime::two_phase::STATE_NAME,
                ))?;
            let locations = ctx
                .operator_state_store()
                .get_union_list_state(&ListStateDescriptor::<String>::new(LOCATION_STATE_NAME))?;
            let txns: Vec<(u64, FileTransaction)> = legacy
                .get(ctx)?
                .iter()
                .flat_map(|s| s.pending.iter().cloned())
                .collect();
            let locations = locations.get(ctx)?.to_vec();
            self.restore_legacy(txns, &locations, &mut report)?;
            legacy.clear(ctx)?;

            let restored = state.get(ctx)?.to_vec();
            self.restore(restored, &mut report)?;
            state.clear(ctx)?;
            self.restored_counters = counter_state.get(ctx)?.iter().copied().collect();
            self.next_counter = self.restored_counters.values().copied().max().unwrap_or(0);
            report.warn("restoring from a checkpoint");
        }
        self.state = Some(state);
        self.counter_state = Some(counter_state);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        let id = ctx.checkpoint_id();
        failpoint::hit("sink.before-pre-commit");
        let now = (self.clock)();
        let policy = self.policy;
        self.roll_where(|p| policy.should_roll_on_checkpoint(&p.info(), now))?;
        let mut in_progress = Vec::with_capacity(self.open_files.len());
        for part in self.open_files.values_mut() {
            part.sync()?;
            in_progress.push(InProgressFile {
                file: part.file.clone(),
                length: part.size,
            });
        }
        if !self.rolled.is_empty() {
            self.pending.push((id, std::mem::take(&mut self.rolled)));
        }
        failpoint::hit("sink.after-pre-commit");
        let state = self.state.as_ref().expect("initialized");
        state.update(
            ctx,
            vec![FileSinkState::V1 {
                pending: self.pending.clone(),
                in_progress,
            }],
        )?;
        let counter = self.counter_state.as_ref().expect("initialized");
        counter.update(ctx, vec![(self.subtask, self.next_counter)])?;
        Ok(())
    }
}

/// A completed checkpoint commits the files it recorded as pending.
impl<T: Send + 'static> CheckpointListener for FileSink<T> {
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        let split = self.pending.partition_point(|(id, _)| *id <= checkpoint_id);
        let files: Vec<PendingFile> = self.pending.drain(..split).flat_map(|(_, f)| f).collect();
        self.commit_pending(files)
    }

    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        // Its pending files stay pending: the next completed checkpoint
        // subsumes the aborted one and commits them too.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn info() -> TaskInfo {
        TaskInfo {
            job_id: floe_core::JobId::from_u128(1),
            job_name: "test".into(),
            operator_name: "File Sink".into(),
            uid: "file-sink".into(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
        }
    }

    /// Every visible file under `dir` (relative path, contents), and every
    /// hidden one.
    fn files(dir: &Path) -> (Vec<(String, String)>, Vec<String>) {
        let (mut visible, mut hidden) = (Vec::new(), Vec::new());
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                    hidden.push(rel);
                } else {
                    visible.push((rel, std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        visible.sort();
        hidden.sort();
        (visible, hidden)
    }

    fn clock() -> (Arc<AtomicU64>, impl Fn() -> u64 + Send + Sync + 'static) {
        let now = Arc::new(AtomicU64::new(0));
        let c = now.clone();
        (now, move || c.load(Ordering::Relaxed))
    }

    #[test]
    fn rolls_by_size_into_named_part_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, clock) = clock();
        let mut sink = FileSink::<String>::new(tmp.path())
            .with_bucket_assigner(BasePathBucketAssigner)
            .with_rolling_policy(DefaultRollingPolicy::builder().with_max_part_size(10))
            .with_output_file_config(
                OutputFileConfig::builder()
                    .with_part_suffix(".txt")
                    .build()
                    .unwrap(),
            )
            .with_clock(clock)
            .build();
        sink.open(&info()).unwrap();
        let mut batch: Vec<String> = (0..5).map(|i| format!("rec{i}")).collect();
        sink.write_batch(&mut batch).unwrap();
        let (visible, hidden) = files(tmp.path());
        assert!(visible.is_empty(), "nothing is visible before commit");
        assert_eq!(hidden.len(), 3, "{hidden:?}");
        assert!(
            hidden[0].starts_with(".part-0-0.txt.inprogress."),
            "{hidden:?}"
        );
        sink.finish().unwrap();
        let (visible, hidden) = files(tmp.path());
        assert!(hidden.is_empty(), "{hidden:?}");
        assert_eq!(
            visible,
            [
                ("part-0-0.txt".into(), "rec0\nrec1\n".into()),
                ("part-0-1.txt".into(), "rec2\nrec3\n".into()),
                ("part-0-2.txt".into(), "rec4\n".into()),
            ]
        );
    }

    #[test]
    fn rolls_on_inactivity_and_rollover_by_the_injected_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let (now, clock) = clock();
        let mut sink = FileSink::<u32>::new(tmp.path())
            .with_bucket_assigner(BasePathBucketAssigner)
            .with_rolling_policy(
                DefaultRollingPolicy::builder()
                    .with_inactivity_interval(Duration::from_secs(5))
                    .with_rollover_interval(Duration::from_secs(20)),
            )
            .with_clock(clock);
        sink.open(&info()).unwrap();
        sink.write(1).unwrap();
        now.store(4_999, Ordering::Relaxed);
        sink.write(2).unwrap(); // active: same file
        now.store(9_999, Ordering::Relaxed);
        sink.write(3).unwrap(); // idle 5 s: rolls first
        for t in [13_000, 17_000, 21_000, 25_000, 29_000, 30_000] {
            now.store(t, Ordering::Relaxed);
            sink.write(4).unwrap(); // never idle; open 20 s at 30 s
        }
        sink.finish().unwrap();
        let (visible, _) = files(tmp.path());
        let contents: Vec<&str> = visible.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(contents, ["1\n2\n", "3\n4\n4\n4\n4\n4\n", "4\n"]);
    }

    #[test]
    fn date_time_buckets_are_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let (now, clock) = clock();
        // 2026-12-06T07:59:59Z, then a second later.
        now.store(1_796_543_999_000, Ordering::Relaxed);
        let mut sink = FileSink::<u32>::new(tmp.path()).with_clock(clock);
        sink.open(&info()).unwrap();
        sink.write(1).unwrap();
        now.store(1_796_544_000_000, Ordering::Relaxed);
        sink.write(2).unwrap();
        sink.finish().unwrap();
        let (visible, _) = files(tmp.path());
        assert_eq!(
            visible,
            [
                ("2026-12-06--07/part-0-0".into(), "1\n".into()),
                ("2026-12-06--08/part-0-1".into(), "2\n".into()),
            ]
        );
    }

    #[test]
    fn bucket_ids_cannot_leave_the_output_directory() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["..", "../x", "a//b", "/etc", "a/./b"] {
            let mut sink = FileSink::<u32>::new(tmp.path().join("out"))
                .with_bucket_assigner(BucketAssigner::from_fn(move |_: &u32| bad.to_string()));
            sink.open(&info()).unwrap();
            let err = sink.write(1).unwrap_err();
            assert!(NonRecoverable::is_in(&err), "{bad}: {err:#}");
        }
        let mut sink = FileSink::<u32>::new(tmp.path().join("out"))
            .with_bucket_assigner(BucketAssigner::from_fn(|n: &u32| format!("k={n}/day")));
        sink.open(&info()).unwrap();
        sink.write(7).unwrap();
        sink.finish().unwrap();
        assert!(tmp.path().join("out/k=7/day/part-0-0").is_file());
    }

    #[test]
    fn a_fresh_start_skips_committed_names() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("part-0-0"), "old\n").unwrap();
        let mut sink =
            FileSink::<u32>::new(tmp.path()).with_bucket_assigner(BasePathBucketAssigner);
        sink.open(&info()).unwrap();
        sink.write(1).unwrap();
        sink.finish().unwrap();
        let (visible, _) = files(tmp.path());
        assert_eq!(
            visible,
            [
                ("part-0-0".into(), "old\n".into()),
                ("part-0-1".into(), "1\n".into())
            ]
        );
    }

    fn recorded(dir: &Path, committed: &str) -> PendingFile {
        PendingFile {
            directory: dir.display().to_string(),
            in_progress_name: format!(".{committed}.inprogress.0badf00d"),
            committed_name: committed.into(),
        }
    }

    #[test]
    fn restore_truncates_an_in_progress_file_to_its_checkpointed_length() {
        let tmp = tempfile::tempdir().unwrap();
        let f = recorded(tmp.path(), "part-0-3");
        let hidden = tmp.path().join(&f.in_progress_name);
        std::fs::write(&hidden, "before\nafter the checkpoint\n").unwrap();
        let ip = InProgressFile {
            file: f.clone(),
            length: 7,
        };
        assert_eq!(recover_in_progress(&ip).unwrap(), Outcome::Committed);
        assert!(!hidden.exists());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("part-0-3")).unwrap(),
            "before\n"
        );
        // Again (a second restore from the same checkpoint): already done.
        assert_eq!(recover_in_progress(&ip).unwrap(), Outcome::AlreadyCommitted);
        // Shorter than recorded: the checkpoint's data is gone.
        std::fs::write(&hidden, "bef").unwrap();
        std::fs::remove_file(tmp.path().join("part-0-3")).unwrap();
        let err = recover_in_progress(&ip).unwrap_err();
        assert!(NonRecoverable::is_in(&err), "{err:#}");
        assert!(format!("{err:#}").contains("holds 3 bytes"), "{err:#}");
    }

    #[test]
    fn pending_files_commit_in_their_recorded_directory_or_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let f = recorded(tmp.path(), "part-1-9");
        std::fs::write(tmp.path().join(&f.in_progress_name), "x\n").unwrap();
        assert_eq!(commit_file(&f).unwrap(), Outcome::Committed);
        assert_eq!(commit_file(&f).unwrap(), Outcome::AlreadyCommitted);
        let gone = recorded(&tmp.path().join("removed"), "part-1-9");
        assert_eq!(commit_file(&gone).unwrap(), Outcome::Missing);
    }

    /// Recorded files as a crafted snapshot would carry them: commit and
    /// recovery refuse them, and no file anywhere changes.
    #[test]
    fn crafted_recorded_files_are_refused_and_nothing_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let victim = tmp.path().join("victim.txt");
        std::fs::write(&victim, "not the sink's").unwrap();
        std::fs::write(out.join(".part-0-1.inprogress.0badf00d"), "1\n").unwrap();
        let before = files(tmp.path());
        let good = recorded(&out, "part-0-1");
        let with = |dir: &str, ip: &str, c: &str| PendingFile {
            directory: dir.into(),
            in_progress_name: ip.into(),
            committed_name: c.into(),
        };
        let out_s = out.display().to_string();
        let cases = [
            with("out", &good.in_progress_name, "part-0-1"),
            with(&format!("{out_s}/.."), "victim.txt", "part-0-1"),
            with(&out_s, "../victim.txt", "part-0-1"),
            with(&out_s, &good.in_progress_name, "../stolen"),
            with(&out_s, victim.to_str().unwrap(), "part-0-1"),
            with(&out_s, ".part-0-1.inprogress.0badf00d", "part-0-2"),
            with(&out_s, ".part-0-1.inprogress.nothex!!", "part-0-1"),
            with(&out_s, ".x.inprogress.0badf00d", ".x"),
            with(&out_s, "", "part-0-1"),
            with(&out_s, &good.in_progress_name, "part-0-1\0"),
        ];
        for f in cases {
            for (what, r) in [
                ("commit", commit_file(&f).map(|_| ())),
                (
                    "recover",
                    recover_in_progress(&InProgressFile {
                        file: f.clone(),
                        length: 0,
                    })
                    .map(|_| ()),
                ),
            ] {
                let err = r.expect_err(&format!("{what} of {f:?} must be refused"));
                assert!(NonRecoverable::is_in(&err), "{err:#}");
                assert!(format!("{err:#}").contains("refusing to touch"), "{err:#}");
                assert_eq!(files(tmp.path()), before, "{what} of {f:?} changed files");
            }
        }
        assert_eq!(commit_file(&good).unwrap(), Outcome::Committed);
    }

    /// The bytes of one `file-sink-writer-state` element as every snapshot
    /// written so far holds it (postcard: the variant index, then the
    /// fields in order), and the type name snapshots record beside it: a
    /// change to either would stop those snapshots from restoring.
    #[test]
    fn the_v1_state_format_is_pinned() {
        const V1: &[u8] = b"\x00\x01\x03\x01\x04/out\x1d.part-0-1.inprogress.0badf00d\x08part-0-1\
            \x01\x04/out\x1d.part-0-2.inprogress.0badf00d\x08part-0-2\xac\x02";
        let file = |n: u32| PendingFile {
            directory: "/out".into(),
            in_progress_name: format!(".part-0-{n}.inprogress.0badf00d"),
            committed_name: format!("part-0-{n}"),
        };
        let state = FileSinkState::V1 {
            pending: vec![(3, vec![file(1)])],
            in_progress: vec![InProgressFile {
                file: file(2),
                length: 300,
            }],
        };
        let decoded: FileSinkState = floe_state::codec::decode(V1, "pinned V1").unwrap();
        assert_eq!(decoded, state);
        assert_eq!(floe_state::codec::encode(&state, "V1").unwrap(), V1);
        assert_eq!(
            std::any::type_name::<FileSinkState>(),
            "floe_connectors::file_sink::FileSinkState"
        );
    }

    #[test]
    fn legacy_names_parse_and_crafted_legacy_transactions_are_refused() {
        let l = Leftover::parse(".part-3-0000000012-ab12cd34.pending").unwrap();
        assert_eq!((l.subtask, l.checkpoint), (3, Some(12)));
        let l = Leftover::parse(".part-1-ab12cd34-7.inprogress").unwrap();
        assert_eq!((l.subtask, l.checkpoint), (1, None));
        assert!(Leftover::parse("part-1-0000000012-ab12cd34").is_none());

        let tmp = tempfile::tempdir().unwrap();
        let sink = FileSink::<u32>::new(tmp.path());
        let txn = |p: &str, c: &str| {
            (
                1,
                FileTransaction {
                    in_progress: ".part-0-ab12cd34-1.inprogress".into(),
                    pending: Some(p.into()),
                    committed: Some(c.into()),
                },
            )
        };
        let pending = ".part-0-0000000001-ab12cd34.pending";
        for bad in [
            txn("../victim", "part-0-0000000001-ab12cd34"),
            txn(pending, "../stolen"),
            txn(pending, "part-0-0000000001-other"),
        ] {
            let err = sink
                .restore_legacy(vec![bad], &[], &mut RestoreReport::default())
                .unwrap_err();
            assert!(NonRecoverable::is_in(&err), "{err:#}");
        }
        // A legacy transaction commits in this directory, or in the one the
        // snapshot recorded.
        let elsewhere = tmp.path().join("old-out");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join(pending), "1\n").unwrap();
        let mut report = RestoreReport::default();
        sink.restore_legacy(
            vec![txn(pending, "part-0-0000000001-ab12cd34")],
            &[elsewhere.display().to_string()],
            &mut report,
        )
        .unwrap();
        assert_eq!(report.committed, 1);
        assert!(elsewhere.join("part-0-0000000001-ab12cd34").is_file());
    }
}
