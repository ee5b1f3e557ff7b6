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
//! and committed.
//!
//! With [`FileSink::enable_compact`] (Flink's `enableCompact`) rolled files
//! are not committed one by one: they wait, hidden under their in-progress
//! names, until the [`FileCompactStrategy`] fires for their bucket; the
//! checkpoint then records a compaction plan (the inputs and a new part
//! file's names), and once that checkpoint completes the plan runs on
//! compaction threads: the [`FileCompactor`] writes the inputs into the
//! new file under its hidden name, the file is synced and renamed to its
//! committed name, and only then are the inputs removed. Inputs are never
//! visible, so a reader never sees a record twice; a restore runs the
//! plans its checkpoint recorded again, idempotently (a published target
//! means only the inputs may be left to remove), and keeps the files that
//! were waiting. The state of a compacting sink is version 2 of
//! `file-sink-writer-state`; without compaction the sink writes version 1
//! as before.

mod bucket;
mod compact;
mod naming;
mod rolling;

pub use bucket::{
    BasePathBucketAssigner, BucketAssigner, BucketContext, DateTimeBucketAssigner,
    DateTimePatternError,
};
pub use compact::{
    ConcatFileCompactor, FileCompactStrategy, FileCompactStrategyBuilder, FileCompactStrategyError,
    FileCompactor, IdenticalFileCompactor, RecordWiseFileCompactor,
};
pub use naming::{OutputFileConfig, OutputFileConfigBuilder, OutputFileConfigError};
pub use rolling::{
    DefaultRollingPolicy, DefaultRollingPolicyBuilder, OnCheckpointRollingPolicy, PartFileInfo,
    RollingPolicy,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use compact::{CompactService, Waiting};

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

/// A rolled part file with its size: pending, or waiting (hidden) for
/// its bucket's compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WaitingFile {
    file: PendingFile,
    /// Its length in bytes (final: it is closed).
    size: u64,
}

/// The files of one bucket directory waiting for compaction, as a
/// checkpoint records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WaitingBucket {
    /// The absolute directory.
    directory: String,
    /// The checkpoint from which the checkpoint trigger counts.
    since_checkpoint: u64,
    /// In the order they rolled.
    files: Vec<WaitingFile>,
}

/// Part files to merge into one: recorded by the checkpoint at which the
/// strategy fired, carried out once that checkpoint completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CompactionPlan {
    /// Hidden files of one directory, in order.
    inputs: Vec<PendingFile>,
    /// The compacted file, in the same directory (the one input itself
    /// when a single file is committed as it is).
    target: PendingFile,
}

/// The versioned element of [`STATE_NAME`]: postcard writes the variant
/// index first, which is the version tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum FileSinkState {
    /// Without compaction (and every snapshot taken before compaction
    /// existed).
    V1 {
        /// Rolled files by the checkpoint that recorded them, ascending.
        pending: Vec<(u64, Vec<PendingFile>)>,
        /// Open files with their checkpointed lengths.
        in_progress: Vec<InProgressFile>,
    },
    /// With compaction.
    V2 {
        /// As in V1 (empty while compacting; kept for one format).
        pending: Vec<(u64, Vec<PendingFile>)>,
        /// As in V1.
        in_progress: Vec<InProgressFile>,
        /// Rolled files waiting for their bucket's compaction.
        waiting: Vec<WaitingBucket>,
        /// Plans not known to be done, by the checkpoint that recorded
        /// them.
        compacting: Vec<(u64, CompactionPlan)>,
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

/// What a compacting sink compacts with.
struct Compaction<T> {
    strategy: FileCompactStrategy,
    compactor: FileCompactor<T>,
}

impl<T> Clone for Compaction<T> {
    fn clone(&self) -> Self {
        Compaction {
            strategy: self.strategy,
            compactor: self.compactor.clone(),
        }
    }
}

/// A compaction plan in memory.
struct PlanEntry {
    /// Names it to the compaction threads.
    id: u64,
    /// The checkpoint that recorded it: it runs once that completed.
    checkpoint: u64,
    plan: CompactionPlan,
    submitted: bool,
}

/// The compaction threads: plans in, outcomes out.
type Compactions = CompactService<CompactionPlan, Outcome>;

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
    compaction: Option<Compaction<T>>,

    subtask: u32,
    token: String,
    next_counter: u64,
    /// The next part counter each old subtask recorded in the restored
    /// checkpoint.
    restored_counters: HashMap<u32, u64>,
    open_files: HashMap<String, PartFile>,
    rolled: Vec<WaitingFile>,
    pending: Vec<(u64, Vec<PendingFile>)>,
    /// Compacting: rolled files waiting, by directory.
    waiting: BTreeMap<String, Waiting<WaitingFile>>,
    /// Compacting: plans recorded and not yet done, oldest first.
    plans: Vec<PlanEntry>,
    next_plan_id: u64,
    compactions: Option<Compactions>,
    /// `finish` ran: the next checkpoint compacts every waiting file.
    end_of_input: bool,
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
            compaction: self.compaction.clone(),
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
            compaction: None,
            subtask: 0,
            token: String::new(),
            next_counter: 0,
            restored_counters: HashMap::new(),
            open_files: HashMap::new(),
            rolled: Vec::new(),
            pending: Vec::new(),
            waiting: BTreeMap::new(),
            plans: Vec::new(),
            next_plan_id: 0,
            compactions: None,
            end_of_input: false,
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

    /// Compacts small part files (Flink's `enableCompact`): rolled files
    /// wait, hidden, until `strategy` fires for their bucket, and are then
    /// merged by `compactor` (a [`ConcatFileCompactor`],
    /// [`IdenticalFileCompactor`] or [`RecordWiseFileCompactor`]) into one
    /// part file, which becomes visible as its inputs are dropped; see the
    /// module docs for the guarantees. Output becomes visible later than
    /// without compaction: when its bucket is compacted.
    pub fn enable_compact(
        mut self,
        strategy: FileCompactStrategy,
        compactor: impl Into<FileCompactor<T>>,
    ) -> Self {
        self.compaction = Some(Compaction {
            strategy,
            compactor: compactor.into(),
        });
        self
    }

    /// No compaction (the default; Flink's `disableCompact`). A restore of
    /// a compacting sink's snapshot then commits the files it recorded as
    /// waiting or planned as they are.
    pub fn disable_compact(mut self) -> Self {
        self.compaction = None;
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
    /// completes (or, compacting, waiting for its bucket's compaction).
    fn roll(&mut self, mut part: PartFile) -> anyhow::Result<()> {
        part.sync()?;
        self.rolled.push(WaitingFile {
            file: part.file,
            size: part.size,
        });
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
        restored_checkpoint: u64,
        report: &mut RestoreReport,
    ) -> anyhow::Result<()> {
        for s in states {
            let (pending, in_progress, waiting, compacting) = match s {
                FileSinkState::V1 {
                    pending,
                    in_progress,
                } => (pending, in_progress, Vec::new(), Vec::new()),
                FileSinkState::V2 {
                    pending,
                    in_progress,
                    waiting,
                    compacting,
                } => (pending, in_progress, waiting, compacting),
            };
            for f in pending.into_iter().flat_map(|(_, files)| files) {
                report.note(&f, commit_file(&f)?);
                self.recorded_dirs.insert(PathBuf::from(&f.directory));
            }
            // The plans the checkpoint recorded run (again) first: their
            // inputs are in no other list.
            let with = self
                .compaction
                .as_ref()
                .map(|c| (&c.compactor, &self.format));
            for (_, plan) in compacting {
                report.note(&plan.target, run_plan(&plan, with)?);
                self.recorded_dirs
                    .insert(PathBuf::from(&plan.target.directory));
            }
            for bucket in waiting {
                for f in bucket.files {
                    self.recorded_dirs.insert(PathBuf::from(&f.file.directory));
                    if self.compaction.is_none() {
                        report.note(&f.file, commit_file(&f.file)?);
                        continue;
                    }
                    check_recorded(&f.file)?;
                    let dir = Path::new(&f.file.directory);
                    if dir.join(&f.file.in_progress_name).exists() {
                        self.keep_waiting(f, bucket.since_checkpoint);
                    } else if dir.join(&f.file.committed_name).exists() {
                        report.note(&f.file, Outcome::AlreadyCommitted);
                    } else {
                        // A restore of an older checkpoint: a later one
                        // compacted it.
                        report.note(&f.file, Outcome::Missing);
                    }
                }
            }
            for f in in_progress {
                self.recorded_dirs.insert(PathBuf::from(&f.file.directory));
                if self.compaction.is_none() {
                    report.note(&f.file, recover_in_progress(&f)?);
                } else if truncate_in_progress(&f)? {
                    let size = f.length;
                    self.keep_waiting(WaitingFile { file: f.file, size }, restored_checkpoint);
                } else {
                    report.note(&f.file, committed_or_missing(&f.file));
                }
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

/// Refuses a recorded plan whose files are not this sink's part files of
/// one directory (see [`check_recorded`]).
fn check_plan(plan: &CompactionPlan) -> anyhow::Result<()> {
    check_recorded(&plan.target)?;
    for f in &plan.inputs {
        check_recorded(f)?;
        if f.directory != plan.target.directory {
            return Err(FileSinkError::UnsafeRecordedFile {
                directory: f.directory.clone(),
                name: f.in_progress_name.clone(),
                reason: format!(
                    "a compaction's inputs are in its target's directory {:?}",
                    plan.target.directory
                ),
            }
            .fatal());
        }
    }
    if plan.inputs.is_empty() {
        return Err(FileSinkError::UnsafeRecordedFile {
            directory: plan.target.directory.clone(),
            name: plan.target.committed_name.clone(),
            reason: "a compaction without inputs".into(),
        }
        .fatal());
    }
    Ok(())
}

/// Carries out a compaction plan, idempotently: a restore runs the plans
/// its checkpoint recorded again, whatever a crash cut short. The target
/// is written under its hidden name, synced, and renamed to its committed
/// name; only then are the inputs (hidden all along) removed, so no reader
/// ever sees a record in two files, and a published target means only the
/// inputs may be left to remove. A plan of one file the compactor would
/// copy byte for byte commits that file instead. Without a compactor
/// (compaction disabled since the plan was recorded) the inputs are
/// committed as they are.
fn run_plan<T>(
    plan: &CompactionPlan,
    with: Option<(&FileCompactor<T>, &LineFormat<T>)>,
) -> anyhow::Result<Outcome> {
    check_plan(plan)?;
    failpoint::hit("compact.start");
    if plan.inputs.len() == 1 && plan.inputs[0] == plan.target {
        return commit_file(&plan.target);
    }
    let dir = Path::new(&plan.target.directory);
    let temp = dir.join(&plan.target.in_progress_name);
    if dir.join(&plan.target.committed_name).exists() {
        remove_if_exists(&temp)?;
        remove_inputs(plan)?;
        return Ok(Outcome::AlreadyCommitted);
    }
    let Some((compactor, format)) = with else {
        remove_if_exists(&temp)?;
        let mut outcome = Outcome::Missing;
        for f in &plan.inputs {
            if commit_file(f)? == Outcome::Committed {
                outcome = Outcome::Committed;
            }
        }
        return Ok(outcome);
    };
    let inputs: Vec<PathBuf> = plan
        .inputs
        .iter()
        .map(|f| dir.join(&f.in_progress_name))
        .filter(|p| p.exists())
        .collect();
    if inputs.is_empty() {
        remove_if_exists(&temp)?;
        return Ok(Outcome::Missing);
    }
    if inputs.len() < plan.inputs.len() {
        tracing::warn!(
            target = %dir.join(&plan.target.committed_name).display(),
            missing = plan.inputs.len() - inputs.len(),
            "file sink: compacting the inputs that are left; the others are gone (a restore of an older checkpoint?)"
        );
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .with_context(|| format!("cannot create compacted file {}", temp.display()))?;
    compactor
        .compact(&inputs, format, &mut out)
        .and_then(|()| out.sync_all().map_err(Into::into))
        .with_context(|| format!("cannot compact into {}", temp.display()))?;
    drop(out);
    failpoint::hit("compact.before-publish");
    rename_in(
        dir,
        &plan.target.in_progress_name,
        &plan.target.committed_name,
    )?;
    failpoint::hit("compact.after-publish");
    remove_inputs(plan)?;
    Ok(Outcome::Committed)
}

/// Removes a published plan's inputs and makes that durable.
fn remove_inputs(plan: &CompactionPlan) -> anyhow::Result<()> {
    let dir = Path::new(&plan.target.directory);
    for f in &plan.inputs {
        failpoint::hit("compact.remove-input");
        remove_if_exists(&dir.join(&f.in_progress_name))?;
    }
    sync_dir(dir)
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
            self.finish_compactions(false)?;
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
        self.end_of_input = true;
        if self.checkpointing {
            // The job's final checkpoint records and then commits them (and
            // compacts every waiting file).
            return Ok(());
        }
        if self.compaction.is_some() {
            self.plan_compactions(u64::MAX);
            return self.run_plans_here();
        }
        let mut files: Vec<PendingFile> = std::mem::take(&mut self.pending)
            .into_iter()
            .flat_map(|(_, f)| f)
            .collect();
        files.extend(self.rolled.drain(..).map(|f| f.file));
        self.commit_pending(files)
    }
}

impl<T> FileSink<T> {
    /// The checkpoint a restore started from, for the earlier sink's
    /// leftovers (named by checkpoint); any id if unknown.
    fn restored_checkpoint_or_any(&self) -> u64 {
        self.restored_checkpoint_id.unwrap_or(u64::MAX)
    }

    /// Keeps a restored file waiting for its bucket's compaction; a bucket
    /// merged from several recorded ones counts from the earliest.
    fn keep_waiting(&mut self, f: WaitingFile, since_checkpoint: u64) {
        let w = self.waiting.entry(f.file.directory.clone()).or_default();
        if w.files.is_empty() || since_checkpoint < w.since_checkpoint {
            w.since_checkpoint = since_checkpoint;
        }
        w.files.push(f);
    }

    /// Compacting, at checkpoint `id`: the files rolled since the last
    /// checkpoint join their buckets' waiting files, and every bucket the
    /// strategy fires for (all of them at the end of the input) is cut into
    /// plans that this checkpoint records. Before the part counter is
    /// recorded, since targets take new part-file names.
    fn plan_compactions(&mut self, id: u64) {
        let Some(c) = &self.compaction else { return };
        let strategy = c.strategy;
        let max_inputs = c.compactor.max_inputs();
        let keep_single = c.compactor.keeps_a_single_file();
        let mut rolled: BTreeMap<String, Vec<WaitingFile>> = BTreeMap::new();
        for f in self.rolled.drain(..) {
            rolled.entry(f.file.directory.clone()).or_default().push(f);
        }
        for (dir, files) in rolled {
            self.waiting.entry(dir).or_default().add(files, id);
        }
        let end = self.end_of_input;
        let units: Vec<Vec<WaitingFile>> = self
            .waiting
            .values_mut()
            .flat_map(|w| w.cut(&strategy, |f| f.size, id, end, max_inputs))
            .collect();
        self.waiting.retain(|_, w| !w.files.is_empty());
        for unit in units {
            let target = if unit.len() == 1 && keep_single {
                unit[0].file.clone()
            } else {
                let directory = unit[0].file.directory.clone();
                let (committed_name, in_progress_name) = self.new_part_names(Path::new(&directory));
                PendingFile {
                    directory,
                    in_progress_name,
                    committed_name,
                }
            };
            self.plans.push(PlanEntry {
                id: self.next_plan_id,
                checkpoint: id,
                plan: CompactionPlan {
                    inputs: unit.into_iter().map(|f| f.file).collect(),
                    target,
                },
                submitted: false,
            });
            self.next_plan_id += 1;
        }
    }

    /// Runs every plan on this thread (no checkpointing: at the end of the
    /// input).
    fn run_plans_here(&mut self) -> anyhow::Result<()> {
        let with = self
            .compaction
            .as_ref()
            .map(|c| (&c.compactor, &self.format));
        let mut report = RestoreReport::default();
        for p in std::mem::take(&mut self.plans) {
            report.note(&p.plan.target, run_plan(&p.plan, with)?);
        }
        report.warn("compacting");
        Ok(())
    }
}

impl<T: Send + 'static> FileSink<T> {
    /// Hands the plans of checkpoints up to `checkpoint_id` (completed) to
    /// the compaction threads, started on first use.
    fn submit_compactions(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        let due = |p: &PlanEntry| !p.submitted && p.checkpoint <= checkpoint_id;
        if !self.plans.iter().any(due) {
            return Ok(());
        }
        if self.compactions.is_none() {
            let c = self
                .compaction
                .clone()
                .expect("plans only while compacting");
            let format = self.format.clone();
            // As Flink: no more threads than cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let service = CompactService::start(
                &format!("file-sink-compact-{}", self.subtask),
                c.strategy.num_compact_threads().min(cores),
                move |plan: CompactionPlan| run_plan(&plan, Some((&c.compactor, &format))),
            )
            .context("cannot start the file sink's compaction threads")?;
            self.compactions = Some(service);
        }
        let service = self.compactions.as_mut().expect("started above");
        for p in self.plans.iter_mut().filter(|p| due(p)) {
            service.submit(p.id, p.plan.clone());
            p.submitted = true;
        }
        Ok(())
    }

    /// Takes the outcomes of finished compactions (waiting for every one
    /// if `wait`): done plans are forgotten, a failure fails the subtask
    /// (its restart runs the plan again).
    fn finish_compactions(&mut self, wait: bool) -> anyhow::Result<()> {
        let Some(service) = &mut self.compactions else {
            return Ok(());
        };
        let done = if wait {
            service.wait_all()
        } else {
            service.ready()
        };
        let mut report = RestoreReport::default();
        let mut failure = None;
        for (id, outcome) in done {
            let Some(i) = self.plans.iter().position(|p| p.id == id) else {
                continue;
            };
            let target = &self.plans[i].plan.target;
            match outcome {
                Ok(o) => {
                    report.note(target, o);
                    self.plans.remove(i);
                }
                Err(e) => {
                    let e = e.context(format!(
                        "cannot compact part files into {}/{}",
                        target.directory, target.committed_name
                    ));
                    failure.get_or_insert(e);
                }
            }
        }
        report.warn("compacting");
        failure.map_or(Ok(()), Err)
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
            let id = self.restored_checkpoint_id.unwrap_or(0);
            self.restore(restored, id, &mut report)?;
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
        self.finish_compactions(false)?;
        if self.compaction.is_some() {
            self.plan_compactions(id);
        } else if !self.rolled.is_empty() {
            let files = self.rolled.drain(..).map(|f| f.file).collect();
            self.pending.push((id, files));
        }
        failpoint::hit("sink.after-pre-commit");
        let element = if self.compaction.is_some() {
            FileSinkState::V2 {
                pending: self.pending.clone(),
                in_progress,
                waiting: self
                    .waiting
                    .iter()
                    .map(|(directory, w)| WaitingBucket {
                        directory: directory.clone(),
                        since_checkpoint: w.since_checkpoint,
                        files: w.files.clone(),
                    })
                    .collect(),
                compacting: self
                    .plans
                    .iter()
                    .map(|p| (p.checkpoint, p.plan.clone()))
                    .collect(),
            }
        } else {
            FileSinkState::V1 {
                pending: self.pending.clone(),
                in_progress,
            }
        };
        let state = self.state.as_ref().expect("initialized");
        state.update(ctx, vec![element])?;
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
        self.commit_pending(files)?;
        if self.compaction.is_some() {
            // The plans it recorded are final: they run now, off this
            // thread (at the end of the input, this waits for them).
            self.finish_compactions(false)?;
            self.submit_compactions(checkpoint_id)?;
            if self.end_of_input {
                self.finish_compactions(true)?;
            }
        }
        Ok(())
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

    /// A version 2 element (a compacting sink's) in its exact bytes.
    #[test]
    fn the_v2_state_format_is_pinned() {
        const V2: &[u8] = b"\x01\x00\
            \x01\x04/out\x1d.part-0-3.inprogress.0badf00d\x08part-0-3\x07\
            \x01\x04/out\x02\x01\x04/out\x1d.part-0-1.inprogress.0badf00d\x08part-0-1\x04\
            \x01\x02\x01\x04/out\x1d.part-0-0.inprogress.0badf00d\x08part-0-0\
            \x04/out\x1d.part-0-2.inprogress.0badf00d\x08part-0-2";
        let file = |n: u32| PendingFile {
            directory: "/out".into(),
            in_progress_name: format!(".part-0-{n}.inprogress.0badf00d"),
            committed_name: format!("part-0-{n}"),
        };
        let state = FileSinkState::V2 {
            pending: Vec::new(),
            in_progress: vec![InProgressFile {
                file: file(3),
                length: 7,
            }],
            waiting: vec![WaitingBucket {
                directory: "/out".into(),
                since_checkpoint: 2,
                files: vec![WaitingFile {
                    file: file(1),
                    size: 4,
                }],
            }],
            compacting: vec![(
                2,
                CompactionPlan {
                    inputs: vec![file(0)],
                    target: file(2),
                },
            )],
        };
        let decoded: FileSinkState = floe_state::codec::decode(V2, "pinned V2").unwrap();
        assert_eq!(decoded, state);
        assert_eq!(floe_state::codec::encode(&state, "V2").unwrap(), V2);
    }

    /// A sink subtask driven as the runtime drives it: state initialized
    /// (from operator state files, when restored), opened, snapshotted and
    /// told of completed checkpoints.
    struct Subtask {
        sink: FileSink<u32>,
        store: floe_state::OperatorStateStore,
        info: TaskInfo,
    }

    impl Subtask {
        fn start(
            sink: FileSink<u32>,
            subtask: u32,
            parallelism: u32,
            restore: Option<(u64, &[Vec<u8>])>,
        ) -> anyhow::Result<Subtask> {
            let info = TaskInfo {
                subtask_index: subtask,
                parallelism,
                ..info()
            };
            let mut store = floe_state::OperatorStateStore::new("file-sink", None);
            let restored = match restore {
                Some((id, files)) => {
                    let files: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
                    store.restore(&files, subtask, parallelism)?;
                    Some(id)
                }
                None => None,
            };
            let mut sink = sink;
            sink.initialize_state(&mut FunctionInitializationContext::new(
                &info, &mut store, restored, true,
            ))?;
            sink.open(&info)?;
            Ok(Subtask { sink, store, info })
        }

        fn write(&mut self, records: &[u32]) {
            self.sink.write_batch(&mut records.to_vec()).unwrap();
        }

        /// Checkpoint `id`'s barrier: this subtask's operator state file.
        fn checkpoint(&mut self, id: u64) -> Vec<u8> {
            self.sink
                .snapshot_state(&mut FunctionSnapshotContext::new(
                    &self.info,
                    &mut self.store,
                    id,
                    0,
                ))
                .unwrap();
            self.store
                .snapshot(self.info.subtask_index, self.info.parallelism)
                .unwrap()
        }

        /// Checkpoint `id` completed; waits for the compactions it started.
        fn complete(&mut self, id: u64) {
            self.sink.notify_checkpoint_complete(id).unwrap();
            self.sink.finish_compactions(true).unwrap();
        }

        /// The end of the input and the final checkpoint `id`.
        fn end(mut self, id: u64) {
            self.sink.finish().unwrap();
            self.checkpoint(id);
            self.complete(id);
        }
    }

    fn compacting(dir: &Path, threshold: u64) -> FileSink<u32> {
        FileSink::<u32>::new(dir)
            .with_bucket_assigner(BasePathBucketAssigner)
            .with_rolling_policy(OnCheckpointRollingPolicy::build())
            .enable_compact(
                FileCompactStrategy::builder()
                    .size_threshold(threshold)
                    .build()
                    .unwrap(),
                ConcatFileCompactor::new(),
            )
    }

    /// Every record of the visible files, sorted; panics on a record seen
    /// twice.
    fn visible_records(dir: &Path) -> Vec<u32> {
        let mut all: Vec<u32> = files(dir)
            .0
            .iter()
            .flat_map(|(_, c)| c.lines().map(|l| l.parse::<u32>().unwrap()))
            .collect();
        all.sort_unstable();
        let mut unique = all.clone();
        unique.dedup();
        assert_eq!(all, unique, "a record is visible twice");
        all
    }

    #[test]
    fn compaction_merges_a_buckets_small_files_into_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Subtask::start(compacting(tmp.path(), 10), 0, 1, None).unwrap();
        s.write(&[1, 2]);
        s.checkpoint(1);
        s.complete(1);
        let (visible, hidden) = files(tmp.path());
        assert!(visible.is_empty(), "4 bytes wait, hidden: {visible:?}");
        assert_eq!(hidden.len(), 1);
        s.write(&[3, 4, 5]);
        s.checkpoint(2);
        assert!(files(tmp.path()).0.is_empty(), "nothing before completion");
        s.complete(2);
        assert_eq!(
            files(tmp.path()),
            (vec![("part-0-2".into(), "1\n2\n3\n4\n5\n".into())], vec![])
        );
        // The end of the input compacts what waits; one file is committed
        // as it is.
        s.write(&[6]);
        s.checkpoint(3);
        s.complete(3);
        assert_eq!(files(tmp.path()).0.len(), 1, "6 waits");
        s.end(4);
        assert_eq!(
            files(tmp.path()),
            (
                vec![
                    ("part-0-2".into(), "1\n2\n3\n4\n5\n".into()),
                    ("part-0-3".into(), "6\n".into())
                ],
                vec![]
            )
        );
    }

    #[test]
    fn each_bucket_waits_and_compacts_on_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = FileSink::<u32>::new(tmp.path())
            .with_bucket_assigner(BucketAssigner::from_fn(|n: &u32| format!("b{}", n % 2)))
            .with_rolling_policy(OnCheckpointRollingPolicy::build())
            .enable_compact(
                FileCompactStrategy::builder()
                    .size_threshold(8)
                    .enable_compaction_on_checkpoint(3)
                    .build()
                    .unwrap(),
                ConcatFileCompactor::new(),
            );
        let mut s = Subtask::start(sink, 0, 1, None).unwrap();
        // Each checkpoint b0 gets 6 bytes, b1 3 (and part counters 0-3).
        for id in 1..=2 {
            s.write(&[10, 12, 13]);
            s.checkpoint(id);
            s.complete(id);
        }
        let (visible, hidden) = files(tmp.path());
        assert_eq!(visible, [("b0/part-0-4".into(), "10\n12\n10\n12\n".into())]);
        assert_eq!(hidden.len(), 2, "b1 waits: {hidden:?}");
        // The third checkpoint since b1's first file.
        s.checkpoint(3);
        s.complete(3);
        let (visible, hidden) = files(tmp.path());
        assert!(hidden.is_empty(), "{hidden:?}");
        assert_eq!(visible[1], ("b1/part-0-5".into(), "13\n13\n".into()));
    }

    #[test]
    fn without_checkpointing_the_end_of_the_input_compacts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sink = FileSink::<u32>::new(tmp.path())
            .with_bucket_assigner(BasePathBucketAssigner)
            .with_rolling_policy(DefaultRollingPolicy::builder().with_max_part_size(4))
            .enable_compact(
                FileCompactStrategy::builder()
                    .enable_compaction_on_checkpoint(5)
                    .build()
                    .unwrap(),
                RecordWiseFileCompactor::new(|l: &str| Ok(l.parse::<u32>()? + 100)),
            );
        sink.open(&info()).unwrap();
        sink.write_batch(&mut (1..=9).collect()).unwrap();
        sink.finish().unwrap();
        let (visible, hidden) = files(tmp.path());
        assert!(hidden.is_empty(), "{hidden:?}");
        let lines: Vec<String> = (101..=109).map(|n| format!("{n}\n")).collect();
        assert_eq!(visible, [("part-0-5".into(), lines.concat())]);
    }

    /// A compacting sink's files when checkpoint 3 was taken: checkpoint 2
    /// (whose completion was never heard of) recorded a plan merging
    /// `part-0-0` (1 2 3) and `part-0-1` (4 5) into `part-0-2`, and
    /// `part-0-3` (60) waits. Checkpoint 3's state and the plan.
    fn planned(dir: &Path) -> (Vec<u8>, CompactionPlan) {
        let mut s = Subtask::start(compacting(dir, 10), 0, 1, None).unwrap();
        s.write(&[1, 2, 3]);
        s.checkpoint(1);
        s.complete(1);
        s.write(&[4, 5]);
        s.checkpoint(2);
        s.write(&[60]);
        let snapshot = s.checkpoint(3);
        let plan = s.sink.plans[0].plan.clone();
        assert_eq!(plan.target.committed_name, "part-0-2");
        assert_eq!(plan.inputs.len(), 2);
        (snapshot, plan)
    }

    #[test]
    fn a_restore_finishes_a_compaction_wherever_a_crash_cut_it_short() {
        let expected: Vec<u32> = vec![1, 2, 3, 4, 5, 60];
        type Crash = fn(&Path, &CompactionPlan);
        let crashes: [(&str, Crash); 5] = [
            ("before it started", |_, _| {}),
            ("mid-write", |d, p| {
                std::fs::write(d.join(&p.target.in_progress_name), "garbage").unwrap()
            }),
            ("after publishing", |d, p| publish(d, p, 0)),
            ("between removals", |d, p| publish(d, p, 1)),
            ("after it finished", |d, p| publish(d, p, p.inputs.len())),
        ];
        fn publish(dir: &Path, p: &CompactionPlan, removed: usize) {
            let text: String = p
                .inputs
                .iter()
                .map(|f| std::fs::read_to_string(dir.join(&f.in_progress_name)).unwrap())
                .collect();
            std::fs::write(dir.join(&p.target.committed_name), text).unwrap();
            for f in &p.inputs[..removed] {
                std::fs::remove_file(dir.join(&f.in_progress_name)).unwrap();
            }
        }
        for (what, crash) in crashes {
            let tmp = tempfile::tempdir().unwrap();
            let (snapshot, plan) = planned(tmp.path());
            crash(tmp.path(), &plan);
            // Whatever the crash left, no record is visible twice.
            visible_records(tmp.path());
            let s = Subtask::start(
                compacting(tmp.path(), 10),
                0,
                1,
                Some((3, std::slice::from_ref(&snapshot))),
            )
            .unwrap();
            let (visible, hidden) = files(tmp.path());
            assert_eq!(
                visible,
                [(plan.target.committed_name.clone(), "1\n2\n3\n4\n5\n".into())],
                "{what}"
            );
            assert_eq!(hidden.len(), 1, "{what}: 60 waits: {hidden:?}");
            s.end(4);
            assert_eq!(visible_records(tmp.path()), expected, "{what}");
            assert!(files(tmp.path()).1.is_empty(), "{what}");
            // Restoring the same checkpoint again changes nothing visible.
            let before = files(tmp.path()).0;
            let s = Subtask::start(
                compacting(tmp.path(), 10),
                0,
                1,
                Some((3, std::slice::from_ref(&snapshot))),
            )
            .unwrap();
            s.end(4);
            assert_eq!(files(tmp.path()).0, before, "{what}: second restore");
        }
    }

    #[test]
    fn a_restore_without_compaction_commits_planned_and_waiting_files_as_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let (snapshot, plan) = planned(tmp.path());
        let plain = FileSink::<u32>::new(tmp.path())
            .with_bucket_assigner(BasePathBucketAssigner)
            .with_rolling_policy(OnCheckpointRollingPolicy::build())
            .disable_compact();
        let s = Subtask::start(plain, 0, 1, Some((3, std::slice::from_ref(&snapshot)))).unwrap();
        let (visible, hidden) = files(tmp.path());
        assert!(hidden.is_empty(), "{hidden:?}");
        assert!(
            visible
                .iter()
                .all(|(n, _)| *n != plan.target.committed_name)
        );
        assert_eq!(visible.len(), 3, "{visible:?}");
        s.end(4);
        assert_eq!(visible_records(tmp.path()), [1, 2, 3, 4, 5, 60]);
    }

    #[test]
    fn rescaling_keeps_every_waiting_and_planned_file_once() {
        // At parallelism 1 both old subtasks' waiting files and the replay
        // are compacted into one file; at 3, new subtasks 1 and 2 get one
        // old state each (split state by ranges) and commit its one waiting
        // file as it is, and subtask 0 the replay.
        for (new_parallelism, files_left) in [(1, 3), (3, 5)] {
            let tmp = tempfile::tempdir().unwrap();
            let mut snapshots = Vec::new();
            for subtask in 0..2u32 {
                let mut s = Subtask::start(compacting(tmp.path(), 12), subtask, 2, None).unwrap();
                let base = subtask * 100;
                s.write(&[base + 10, base + 11]);
                s.checkpoint(1);
                s.complete(1);
                s.write(&[base + 12, base + 13]);
                s.checkpoint(2); // plans 10..13
                s.write(&[base + 14]);
                snapshots.push(s.checkpoint(3)); // the plan, and 14 waiting
                s.complete(3); // ran the plan
                s.write(&[base + 15]);
                drop(s); // a crash: 15 was never recorded
            }
            let mut tasks: Vec<Subtask> = (0..new_parallelism)
                .map(|i| {
                    Subtask::start(
                        compacting(tmp.path(), 12),
                        i,
                        new_parallelism,
                        Some((3, &snapshots)),
                    )
                    .unwrap()
                })
                .collect();
            // The replay of what followed checkpoint 3.
            tasks[0].write(&[15, 115]);
            for t in tasks {
                t.end(4);
            }
            let (visible, hidden) = files(tmp.path());
            assert!(hidden.is_empty(), "p={new_parallelism}: {hidden:?}");
            assert_eq!(
                visible.len(),
                files_left,
                "p={new_parallelism}: {visible:?}"
            );
            assert_eq!(
                visible_records(tmp.path()),
                [10, 11, 12, 13, 14, 15, 110, 111, 112, 113, 114, 115],
                "p={new_parallelism}: {visible:?}"
            );
        }
    }

    /// Plans as a crafted snapshot could carry them are refused before any
    /// file moves.
    #[test]
    fn crafted_plans_are_refused_and_nothing_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        let input = recorded(&a, "part-0-1");
        std::fs::write(a.join(&input.in_progress_name), "1\n").unwrap();
        let victim = recorded(&b, "part-0-9");
        std::fs::write(b.join(&victim.in_progress_name), "9\n").unwrap();
        let before = files(tmp.path());
        let with = Some((
            &FileCompactor::from(ConcatFileCompactor::new()),
            &LineFormat::<u32>::display(),
        ));
        let plans = [
            CompactionPlan {
                inputs: vec![input.clone(), victim.clone()],
                target: recorded(&a, "part-0-2"),
            },
            CompactionPlan {
                inputs: vec![],
                target: recorded(&a, "part-0-2"),
            },
            CompactionPlan {
                inputs: vec![input.clone()],
                target: PendingFile {
                    committed_name: "../escaped".into(),
                    ..recorded(&a, "part-0-2")
                },
            },
            CompactionPlan {
                inputs: vec![PendingFile {
                    in_progress_name: "../b/victim".into(),
                    ..input.clone()
                }],
                target: recorded(&a, "part-0-2"),
            },
        ];
        for plan in plans {
            let err = run_plan(&plan, with).unwrap_err();
            assert!(NonRecoverable::is_in(&err), "{err:#}");
            assert!(format!("{err:#}").contains("refusing to touch"), "{err:#}");
            assert_eq!(files(tmp.path()), before, "{plan:?} moved files");
        }
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
