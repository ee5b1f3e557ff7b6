//! The jobs one REST endpoint serves: a job directory that jobs join when
//! they are submitted and are archived from when they end, while the server
//! runs.
//!
//! Why a directory: an embedded job serves only itself, but a cluster's
//! JobManager runs many jobs behind one endpoint, as Flink's does. Flink
//! keeps a job that ended listed with its final status (the JobManager's
//! job history, `jobstore.*`); so does the directory, for the most recent
//! [`DEFAULT_HISTORY`] ended jobs (or the number given to
//! [`JobDirectory::with_history`]): a bound on the count rather than an
//! expiry, so that memory stays bounded however fast jobs come and go.
//! Running jobs are never dropped.

use std::sync::{Arc, Mutex, MutexGuard};

use floe_core::JobId;
use floe_runtime::JobControl;
use floe_runtime::checkpoint::{Clock, SystemClock};

use crate::job_handle::JobHandle;

/// How many ended jobs a directory keeps listed by default.
pub const DEFAULT_HISTORY: usize = 100;

/// Why a job could not join a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// A job with this id is listed and has not ended: two jobs behind one
    /// endpoint cannot share an id (Flink refuses a duplicate submission).
    #[error("job {job_id} is already listed and has not ended: a job id is served once")]
    AlreadyListed {
        /// The id both jobs have.
        job_id: JobId,
    },
}

/// The jobs a REST endpoint serves, shared between the server and whoever
/// submits and supervises jobs (clone it: clones are the same directory).
///
/// A job is listed from [`JobDirectory::add`] on. It has *ended* once its
/// status is terminal or it was [`JobDirectory::archive`]d; ended jobs stay
/// listed with the status their handle reports, the oldest dropped first
/// beyond the history's capacity. An archived job's metrics leave the
/// Prometheus exposition (Flink unregisters a job's metrics when it ends).
#[derive(Clone, Debug)]
pub struct JobDirectory(pub(crate) Directory<JobControl>);

impl JobDirectory {
    /// An empty directory keeping the [`DEFAULT_HISTORY`] most recently
    /// ended jobs.
    pub fn new() -> JobDirectory {
        JobDirectory(Directory::new(DEFAULT_HISTORY))
    }

    /// An empty directory keeping the `capacity` most recently ended jobs
    /// (0: an ended job disappears at the next change or listing).
    pub fn with_history(capacity: usize) -> JobDirectory {
        JobDirectory(Directory::new(capacity))
    }

    /// A directory listing just `control`'s job: what an embedded job
    /// serves.
    pub fn of_one(control: JobControl) -> JobDirectory {
        let directory = JobDirectory::new();
        directory
            .add(control)
            .expect("an empty directory has no job to clash with");
        directory
    }

    /// Lists the job, served from now on under `/jobs/{its id}`. An ended
    /// job of the same id (a resubmission) is replaced; a listed job of the
    /// same id that has not ended is an error.
    pub fn add(&self, control: JobControl) -> Result<(), DirectoryError> {
        self.0.add(control)
    }

    /// Marks the job ended (the JobManager is done with it), whatever its
    /// handle's status: it stays listed in the history and leaves the
    /// Prometheus exposition. False when no such job is listed.
    pub fn archive(&self, job_id: JobId) -> bool {
        self.0.archive(job_id)
    }

    /// The listed job with this id.
    pub fn get(&self, job_id: JobId) -> Option<JobControl> {
        self.0.get(job_id)
    }

    /// Every listed job, in the order they were added.
    pub fn jobs(&self) -> Vec<JobControl> {
        self.0.listed().into_iter().map(|l| l.job).collect()
    }

    /// How many jobs are listed (running and ended).
    pub fn len(&self) -> usize {
        self.0.listed().len()
    }

    /// Whether no job is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for JobDirectory {
    fn default() -> Self {
        JobDirectory::new()
    }
}

/// One listed job as the routes see it.
#[derive(Clone)]
pub(crate) struct Listed<J> {
    pub(crate) job: J,
    /// Archived: no longer in the Prometheus exposition.
    pub(crate) archived: bool,
}

/// A listed job and when it was archived (ms since the epoch), if it was.
struct Entry<J> {
    id: JobId,
    job: J,
    archived_ms: Option<u64>,
}

/// The directory over any [`JobHandle`], so that the routes can be tested
/// with fake jobs; [`JobDirectory`] is its public face over `JobControl`.
pub(crate) struct Directory<J> {
    inner: Arc<Mutex<Inner<J>>>,
}

struct Inner<J> {
    /// In the order added.
    entries: Vec<Entry<J>>,
    history: usize,
}

impl<J> Clone for Directory<J> {
    fn clone(&self) -> Self {
        Directory {
            inner: self.inner.clone(),
        }
    }
}

impl<J> std::fmt::Debug for Directory<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("JobDirectory")
            .field(
                "jobs",
                &inner.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            )
            .field("history", &inner.history)
            .finish()
    }
}

impl<J> Directory<J> {
    fn lock(&self) -> MutexGuard<'_, Inner<J>> {
        // The lock guards plain data and no invariant spans a panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<J: JobHandle> Directory<J> {
    pub(crate) fn new(history: usize) -> Self {
        Directory {
            inner: Arc::new(Mutex::new(Inner {
                entries: Vec::new(),
                history,
            })),
        }
    }

    pub(crate) fn add(&self, job: J) -> Result<(), DirectoryError> {
        let id = job.job_id();
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| e.id == id) {
            if !ended(&inner.entries[i]) {
                return Err(DirectoryError::AlreadyListed { job_id: id });
            }
            inner.entries.remove(i);
        }
        inner.entries.push(Entry {
            id,
            job,
            archived_ms: None,
        });
        inner.prune();
        Ok(())
    }

    pub(crate) fn archive(&self, id: JobId) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.iter_mut().find(|e| e.id == id) else {
            return false;
        };
        if entry.archived_ms.is_none() {
            entry.archived_ms = Some(SystemClock.epoch_ms());
        }
        inner.prune();
        true
    }

    pub(crate) fn get(&self, id: JobId) -> Option<J> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.job.clone())
    }

    /// Every listed job, in the order added (pruning the history first).
    pub(crate) fn listed(&self) -> Vec<Listed<J>> {
        let mut inner = self.lock();
        inner.prune();
        inner
            .entries
            .iter()
            .map(|e| Listed {
                job: e.job.clone(),
                archived: e.archived_ms.is_some(),
            })
            .collect()
    }
}

/// Whether the entry's job has ended: archived, or terminal.
fn ended<J: JobHandle>(entry: &Entry<J>) -> bool {
    entry.archived_ms.is_some() || entry.job.status().is_terminal()
}

impl<J: JobHandle> Inner<J> {
    /// Drops the ended jobs beyond the history's capacity, those that ended
    /// first (by end time, else archive time) going first.
    fn prune(&mut self) {
        let mut ended: Vec<(u64, usize)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| ended(e))
            .map(|(i, e)| {
                let at = e.job.end_time_ms().or(e.archived_ms).unwrap_or(0);
                (at, i)
            })
            .collect();
        if ended.len() <= self.history {
            return;
        }
        ended.sort_unstable();
        let mut drop: Vec<usize> = ended[..ended.len() - self.history]
            .iter()
            .map(|&(_, i)| i)
            .collect();
        drop.sort_unstable();
        for i in drop.into_iter().rev() {
            let gone = self.entries.remove(i);
            tracing::debug!(job = %gone.id, "job dropped from the REST job history");
        }
    }
}
