//! The jobs a binary can run on a cluster, by name.
//!
//! Every process of a cluster runs the same binary; a job reaches a
//! TaskManager as its name and arguments, and the TaskManager runs the
//! job's function from this registry to build the graph itself (see
//! ARCHITECTURE.md, "Cluster mode").

use std::collections::BTreeMap;
use std::sync::Arc;

use floe_api::executor::{CaptureError, CapturedJob, capture_job};
use floe_core::JobId;
use floe_runtime::gateway::JobEntry;

/// A job's function: what `floe run <name> [args]` runs.
pub type JobFunction = Arc<dyn Fn(Vec<String>) -> anyhow::Result<()> + Send + Sync>;

/// The jobs of this binary, by name.
#[derive(Clone, Default)]
pub struct JobRegistry {
    jobs: BTreeMap<String, JobFunction>,
}

/// Why a job's graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No job of that name in this binary.
    #[error("unknown job '{name}': this binary has {known}")]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The names it has.
        known: String,
    },
    /// The job's function failed or did not build a graph.
    #[error("job '{name}': {source}")]
    Capture {
        /// The job.
        name: String,
        /// Why.
        #[source]
        source: CaptureError,
    },
}

impl JobRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a job under `name`.
    pub fn register(&mut self, name: impl Into<String>, job: JobFunction) {
        self.jobs.insert(name.into(), job);
    }

    /// The names of the jobs, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.jobs.keys().map(String::as_str).collect()
    }

    /// Runs `entry`'s job function on this thread and returns the graph it
    /// builds for job `job_id`, without running it.
    pub fn build(&self, job_id: JobId, entry: &JobEntry) -> Result<CapturedJob, BuildError> {
        let job = self
            .jobs
            .get(&entry.name)
            .ok_or_else(|| BuildError::UnknownJob {
                name: entry.name.clone(),
                known: self.names().join(", "),
            })?;
        let args = entry.args.clone();
        capture_job(job_id, || job(args)).map_err(|source| BuildError::Capture {
            name: entry.name.clone(),
            source,
        })
    }
}
