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
//!
//! Names restored from a snapshot are untrusted: before any rename or
//! delete each must be a single file name of the shape above (no `/`, no
//! `..`, not absolute), so a crafted savepoint cannot move or remove a
//! file outside the output directory, nor one the sink did not write.
//! A restored transaction that is not in the directory (the savepoint was
//! taken with another output directory) fails the job without restarts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use floe_runtime::{NonRecoverable, TaskInfo, TwoPhaseCommitSink, TwoPhaseCommitSinkWriter};
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

    /// Refuses a transaction whose names are not this sink's part-file
    /// names inside its directory (see the module docs): they may come
    /// from a crafted snapshot, and are about to be renamed or deleted.
    fn check_transaction(&self, txn: &FileTransaction) -> anyhow::Result<()> {
        let refuse = |role: &str, name: &str, why: &str| -> anyhow::Result<()> {
            Err(NonRecoverable::new(format!(
                "refusing to touch {role} part file {name:?} of a transaction in operator state '{}': {why} (was the snapshot written by this sink, or altered?); nothing in {} was renamed or deleted",
                floe_runtime::two_phase::STATE_NAME,
                self.dir.display()
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

    fn location(&self) -> Option<String> {
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        Some(dir.display().to_string())
    }

    fn commit(&mut self, txn: FileTransaction) -> anyhow::Result<()> {
        self.check_transaction(&txn)?;
        let (Some(pending), Some(committed)) = (&txn.pending, &txn.committed) else {
            return Err(NonRecoverable::new(format!(
                "cannot commit part file {}: it was never pre-committed",
                txn.in_progress
            ))
            .into());
        };
        if self.path(pending).exists() {
            return self.rename(pending, committed);
        }
        if self.path(committed).exists() {
            // Committed before the failure.
            return Ok(());
        }
        // Gone, or never in this directory: a restart finds it missing too.
        Err(NonRecoverable::new(format!(
            "cannot commit part file {}: neither it nor its committed name {} exists in {}",
            pending,
            committed,
            self.dir.display()
        ))
        .into())
    }

    fn abort(&mut self, txn: FileTransaction) -> anyhow::Result<()> {
        self.check_transaction(&txn)?;
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

#[cfg(test)]
mod restore_tests {
    use super::*;
    use floe_runtime::NonRecoverable;

    fn txn(pending: &str, committed: &str) -> FileTransaction {
        FileTransaction {
            in_progress: ".part-0-ab12cd34-1.inprogress".into(),
            pending: Some(pending.into()),
            committed: Some(committed.into()),
        }
    }

    /// Every entry under `dir`, recursively, with its contents.
    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                out.extend(tree(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
        out.sort();
        out
    }

    /// Transaction names as a crafted savepoint would carry them: absolute,
    /// `../`, and names that are not this sink's. Committing or aborting
    /// them renames or deletes nothing, anywhere.
    #[test]
    fn crafted_names_are_refused_and_no_file_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let victim = tmp.path().join("victim.txt");
        std::fs::write(&victim, "not the sink's").unwrap();
        let pending = ".part-0-0000000001-ab12cd34.pending";
        std::fs::write(out.join(pending), "1\n").unwrap();
        std::fs::write(out.join("unrelated.db"), "x").unwrap();
        let before = tree(tmp.path());
        let abs = victim.to_str().unwrap();
        let outside = tmp.path().join("stolen");
        let cases = [
            txn(abs, "part-0-0000000001-ab12cd34"),
            txn(pending, "../stolen"),
            txn(pending, outside.to_str().unwrap()),
            txn("../victim.txt", "part-0-0000000001-ab12cd34"),
            txn(
                ".part-0-0000000001-ab12cd34/../../victim.txt.pending",
                "part-x",
            ),
            txn("", "part-0-0000000001-ab12cd34"),
            txn(pending, "part-0-0000000001-ab12cd34\0"),
            // Inside the directory, but not a file this sink wrote.
            txn("unrelated.db", "part-0-0000000001-ab12cd34"),
            txn(pending, "unrelated.db"),
            txn(pending, "part-0-0000000001-other"),
            FileTransaction {
                in_progress: "/tmp/anything".into(),
                pending: None,
                committed: None,
            },
        ];
        let mut sink = FileSink::<String>::new(&out);
        for t in cases {
            for (what, result) in [
                ("commit", sink.recover_and_commit(t.clone())),
                ("abort", sink.recover_and_abort(t.clone())),
            ] {
                let err = result.expect_err(&format!("{what} of {t:?} must be refused"));
                let msg = format!("{err:#}");
                assert!(NonRecoverable::is_in(&err), "{what} {t:?}: {msg}");
                assert!(msg.contains("refusing to touch"), "{msg}");
                assert!(msg.contains("two-phase-commit-transactions"), "{msg}");
                assert_eq!(tree(tmp.path()), before, "{what} of {t:?} changed files");
            }
        }
        assert!(!outside.exists());
        // The sink's own names still commit.
        sink.recover_and_commit(txn(pending, "part-0-0000000001-ab12cd34"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("part-0-0000000001-ab12cd34")).unwrap(),
            "1\n"
        );
    }

    /// A transaction that is in neither of its names in the directory
    /// (restored with another output directory) cannot be cured by a
    /// restart.
    #[test]
    fn a_missing_transaction_is_non_recoverable_and_names_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sink = FileSink::<String>::new(tmp.path());
        let err = sink
            .recover_and_commit(txn(
                ".part-0-0000000003-ab12cd34.pending",
                "part-0-0000000003-ab12cd34",
            ))
            .unwrap_err();
        assert!(NonRecoverable::is_in(&err), "{err:#}");
        assert!(
            err.to_string().contains(&tmp.path().display().to_string()),
            "{err:#}"
        );
    }
}
