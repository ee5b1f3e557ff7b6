//! What a JobManager keeps so that a restarted one recovers its jobs
//! (`high-availability.storageDir`): per job, the submission (how to
//! build it again) and the generations of JobManagers that ran it.
//!
//! The layout under the storage directory is `jobs/<job id>/submission`
//! and `jobs/<job id>/generation-<n>`. A JobManager that takes a job over
//! claims the next generation with a put-if-absent (`PutMode::Create`), so
//! two JobManagers can never both hold one, and it checks that its claim is
//! still the newest before it commits a checkpoint: a stale JobManager
//! (one that was thought dead and comes back) cannot commit.

use floe_core::JobId;
use object_store::path::Path;

use crate::storage::{CheckpointStorage, Settings, StorageError};

const JOBS_DIR: &str = "jobs";
const SUBMISSION: &str = "submission";
const GENERATION_PREFIX: &str = "generation-";

/// The high-availability storage of a JobManager.
#[derive(Clone)]
pub struct HaStorage {
    storage: CheckpointStorage,
}

impl std::fmt::Debug for HaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HaStorage({})", self.storage.url())
    }
}

impl HaStorage {
    /// Opens (creating a missing local directory) the storage at `url`, a
    /// `file://`, `s3://`, `gs://` or `az://` URL.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Ok(HaStorage {
            storage: CheckpointStorage::open(url, Settings::ProcessEnv, true)?,
        })
    }

    /// The storage as a URL.
    pub fn url(&self) -> &str {
        self.storage.url()
    }

    fn job_dir(&self, job: JobId) -> Path {
        self.storage
            .root()
            .clone()
            .join(JOBS_DIR)
            .join(job.to_string())
    }

    /// Records a new job's submission; refused if the job has one.
    pub fn add_job(&self, job: JobId, submission: &[u8]) -> Result<(), StorageError> {
        let path = self.job_dir(job).join(SUBMISSION);
        self.storage
            .put_new(&path, submission.to_vec(), |location| {
                StorageError::AlreadyExists { location }
            })
            .map(|_| ())
    }

    /// Every job with a submission, and the submission.
    pub fn jobs(&self) -> Result<Vec<(JobId, Vec<u8>)>, StorageError> {
        let dir = self.storage.root().clone().join(JOBS_DIR);
        let mut jobs = Vec::new();
        for name in self.storage.dir_entries(&dir)? {
            // Directories are listed with a trailing `/`.
            let Ok(job) = name.trim_end_matches('/').parse::<JobId>() else {
                continue;
            };
            if let Some(bytes) = self.storage.get(&self.job_dir(job).join(SUBMISSION))? {
                jobs.push((job, bytes));
            }
        }
        Ok(jobs)
    }

    /// The newest generation claimed for `job` (0: none).
    pub fn generation(&self, job: JobId) -> Result<u64, StorageError> {
        Ok(self
            .storage
            .dir_entries(&self.job_dir(job))?
            .iter()
            .filter_map(|n| n.strip_prefix(GENERATION_PREFIX)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0))
    }

    /// Claims the next generation of `job` for this JobManager and returns
    /// it; a concurrent claim of the same generation makes this one fail
    /// with [`StorageError::AlreadyExists`].
    pub fn claim(&self, job: JobId) -> Result<u64, StorageError> {
        let next = self.generation(job)? + 1;
        let path = self.job_dir(job).join(format!("{GENERATION_PREFIX}{next}"));
        self.storage
            .put_new(&path, Vec::new(), |location| StorageError::AlreadyExists {
                location,
            })?;
        Ok(next)
    }

    /// Forgets `job` (it ended): its submission and generations, and its
    /// directory on local disk once empty. Nothing else is touched.
    pub fn remove_job(&self, job: JobId) -> Result<(), StorageError> {
        let dir = self.job_dir(job);
        let ours: std::collections::BTreeSet<String> = self
            .storage
            .dir_entries(&dir)?
            .into_iter()
            .filter(|n| n == SUBMISSION || n.starts_with(GENERATION_PREFIX))
            .collect();
        self.storage.delete_owned(&dir, &ours).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u128) -> JobId {
        format!("{n:032x}").parse().unwrap()
    }

    #[test]
    fn jobs_generations_and_removal_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ha = HaStorage::open(&format!("file://{}", dir.path().display())).unwrap();
        assert!(ha.jobs().unwrap().is_empty());
        ha.add_job(job(1), b"{\"name\":\"a\"}").unwrap();
        ha.add_job(job(2), b"{}").unwrap();
        assert!(matches!(
            ha.add_job(job(1), b"{}"),
            Err(StorageError::AlreadyExists { .. })
        ));
        let mut jobs = ha.jobs().unwrap();
        jobs.sort();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0], (job(1), b"{\"name\":\"a\"}".to_vec()));
        assert_eq!(ha.generation(job(1)).unwrap(), 0);
        assert_eq!(ha.claim(job(1)).unwrap(), 1);
        assert_eq!(ha.claim(job(1)).unwrap(), 2);
        assert_eq!(ha.generation(job(1)).unwrap(), 2);
        ha.remove_job(job(1)).unwrap();
        assert_eq!(ha.jobs().unwrap(), vec![(job(2), b"{}".to_vec())]);
        let jobs_dir = dir.path().join("jobs");
        assert!(
            !jobs_dir.join(job(1).to_string()).exists(),
            "its directory goes too"
        );
        assert_eq!(ha.generation(job(1)).unwrap(), 0);
    }
}
