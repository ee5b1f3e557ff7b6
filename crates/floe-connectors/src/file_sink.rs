//! An exactly-once file sink (Flink's `FileSink` in row format, rolling on
//! every checkpoint), built on the two-phase-commit framework.
//!
//! Each subtask writes its records into an in-progress part file; at a
//! checkpoint barrier the file is synced, closed and renamed to a pending
//! name; when the checkpoint completes it is renamed to its committed name.
//! Readers see only committed files: in-progress and pending names start
//! with `.`. All renames stay inside the output directory, so each one is
//! atomic.
//!
//! File names (`<s>` the subtask, `<n>` the checkpoint, `<t>` a token drawn
//! when the subtask starts, so runs never overwrite each other's files):
//! - in progress: `.part-<s>-<t>-<k>.inprogress`
//! - pending: `.part-<s>-<n>-<t>.pending`
//! - committed: `part-<s>-<n>-<t>` (`<n>` zero-padded, so names sort in
//!   commit order within a subtask)
//!
//! After a restore from checkpoint `c`, subtask `i` of `p` removes the
//! in-progress files, and the pending files of checkpoints after `c`, of
//! every old subtask `s` with `s mod p = i`: no checkpoint refers to them,
//! and their records are written again. One job per output directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use floe_runtime::{TaskInfo, TwoPhaseCommitSink, TwoPhaseCommitSinkWriter};
use serde::{Deserialize, Serialize};

use crate::format::LineFormat;

/// One part file's way through in progress → pending → committed, by file
/// name inside the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransaction {
    /// The in-progress file.
    pub in_progress: String,
    /// The pending file, once pre-committed.
    pub pending: Option<String>,
    /// The committed file, once pre-committed.
    pub committed: Option<String>,
}

/// Writes lines into part files of a directory, exactly once with
/// checkpointing (see the module docs).
pub struct FileSink<T> {
    dir: PathBuf,
    format: LineFormat<T>,
    subtask: u32,
    token: String,
    counter: u64,
    writer: Option<BufWriter<File>>,
    buf: String,
}

impl<T> Clone for FileSink<T> {
    /// A fresh, unopened sink for another subtask.
    fn clone(&self) -> Self {
        FileSink::for_row_format(self.dir.clone(), self.format.clone())
    }
}

impl<T: std::fmt::Display> FileSink<T> {
    /// A sink writing each record's `Display` form as a line into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::for_row_format(dir, LineFormat::display())
    }
}

impl<T> FileSink<T> {
    /// A sink writing lines in `format` into part files in `dir` (Flink's
    /// `FileSink.forRowFormat`).
    pub fn for_row_format(dir: impl Into<PathBuf>, format: LineFormat<T>) -> Self {
        FileSink {
            dir: dir.into(),
            format,
            subtask: 0,
            token: String::new(),
            counter: 0,
            writer: None,
            buf: String::new(),
        }
    }
}

impl<T: Send + 'static> FileSink<T> {
    /// The sink writer to hand to `sink_to`: it takes part in checkpoints
    /// and commits on their completion.
    pub fn build(self) -> TwoPhaseCommitSinkWriter<T, FileSink<T>> {
        TwoPhaseCommitSinkWriter::new(self)
    }
}

impl<T> FileSink<T> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Renames `from` to `to` inside the output directory and makes the
    /// rename durable.
    fn rename(&self, from: &str, to: &str) -> anyhow::Result<()> {
        std::fs::rename(self.path(from), self.path(to)).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path(from).display(),
                self.path(to).display()
            )
        })?;
        sync_dir(&self.dir)
    }

    /// Removes what no checkpoint refers to after a restore from
    /// checkpoint `restored` (see the module docs).
    fn remove_leftovers(&self, info: &TaskInfo, restored: u64) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list output directory {}", self.dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(leftover) = Leftover::parse(&name) else {
                continue;
            };
            if leftover.subtask % info.parallelism != info.subtask_index {
                continue;
            }
            let remove = match leftover.checkpoint {
                None => true,
                Some(n) => n > restored,
            };
            if remove {
                tracing::info!(file = %name, "removing an uncommitted part file no checkpoint refers to");
                remove_if_exists(&e.path())?;
            }
        }
        Ok(())
    }
}

/// An uncommitted part file: its subtask, and its checkpoint if pending.
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

impl<T: Send + 'static> TwoPhaseCommitSink<T> for FileSink<T> {
    type Transaction = FileTransaction;

    fn open(&mut self, info: &TaskInfo, restored_checkpoint: Option<u64>) -> anyhow::Result<()> {
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
        if let Some(c) = restored_checkpoint {
            self.remove_leftovers(info, c)?;
        }
        Ok(())
    }

    fn begin_transaction(&mut self) -> anyhow::Result<FileTransaction> {
        self.counter += 1;
        let name = format!(
            ".part-{}-{}-{}.inprogress",
            self.subtask, self.token, self.counter
        );
        let f = File::create(self.path(&name))
            .with_context(|| format!("cannot create part file {}", self.path(&name).display()))?;
        self.writer = Some(BufWriter::with_capacity(256 * 1024, f));
        Ok(FileTransaction {
            in_progress: name,
            pending: None,
            committed: None,
        })
    }

    fn write(&mut self, txn: &mut FileTransaction, records: &mut Vec<T>) -> anyhow::Result<()> {
        self.buf.clear();
        self.format.format_batch(records, &mut self.buf);
        let w = self
            .writer
            .as_mut()
            .expect("a transaction is open while records are written");
        w.write_all(self.buf.as_bytes())
            .with_context(|| format!("cannot write part file {}", txn.in_progress))
    }

    fn pre_commit(&mut self, txn: &mut FileTransaction, checkpoint_id: u64) -> anyhow::Result<()> {
        let w = self
            .writer
            .take()
            .expect("the open transaction has a writer");
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write part file {}", txn.in_progress))?;
        f.sync_all()
            .with_context(|| format!("cannot sync part file {}", txn.in_progress))?;
        drop(f);
        let pending = format!(
            ".part-{}-{checkpoint_id:010}-{}.pending",
            self.subtask, self.token
        );
        let committed = format!("part-{}-{checkpoint_id:010}-{}", self.subtask, self.token);
        self.rename(&txn.in_progress, &pending)?;
        txn.pending = Some(pending);
        txn.committed = Some(committed);
        Ok(())
    }

    fn commit(&mut self, txn: FileTransaction) -> anyhow::Result<()> {
        let (Some(pending), Some(committed)) = (&txn.pending, &txn.committed) else {
            anyhow::bail!(
                "cannot commit part file {}: it was never pre-committed",
                txn.in_progress
            );
        };
        if self.path(pending).exists() {
            return self.rename(pending, committed);
        }
        if self.path(committed).exists() {
            // Committed before the failure.
            return Ok(());
        }
        anyhow::bail!(
            "cannot commit part file {}: neither it nor its committed name {} exists in {}",
            pending,
            committed,
            self.dir.display()
        )
    }

    fn abort(&mut self, txn: FileTransaction) -> anyhow::Result<()> {
        self.writer = None;
        remove_if_exists(&self.path(&txn.in_progress))?;
        if let Some(p) = &txn.pending {
            remove_if_exists(&self.path(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_parse() {
        let l = Leftover::parse(".part-3-0000000012-ab12cd34.pending").unwrap();
        assert_eq!((l.subtask, l.checkpoint), (3, Some(12)));
        let l = Leftover::parse(".part-1-ab12cd34-7.inprogress").unwrap();
        assert_eq!((l.subtask, l.checkpoint), (1, None));
        assert!(Leftover::parse("part-1-0000000012-ab12cd34").is_none());
        assert!(Leftover::parse(".hidden").is_none());
    }
}
