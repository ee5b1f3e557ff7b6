//! The JobMaster: the JobManager's job side. It builds a submitted job's
//! graph, supervises it with the runtime's `JobClient` (restarts, the
//! checkpoint coordinator, savepoints) and deploys each run to the
//! TaskManagers through [`deployer::ClusterDeployer`]; task events and
//! TaskManager losses are routed to the run they belong to.

mod deployer;
mod ha;
mod queries;
pub mod rest;
mod run;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use floe_api::executor::CapturedJob;
use floe_checkpoint::ha::HaStorage;
use floe_cluster::{
    JobAttempt, JobCounts, JobManagerHandle, JobMasterHandler, TaskManagerId, TaskManagerInfo,
};
use floe_core::JobId;
use floe_rest::JobDirectory;
use floe_runtime::checkpoint::{CheckpointStore, RestoredState, read_checkpoint_metadata};
use floe_runtime::gateway::{self, JobEntry, TaskManagerEvent};
use floe_runtime::{JobControl, JobError, JobManager, JobStatus};

use crate::registry::{BuildError, JobRegistry};
use deployer::{ClusterDeployer, JobRuns};

/// How runs wait for free slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWait {
    /// How long a run waits for the slots it needs before its deployment
    /// fails (Flink's `slot.request.timeout`, 5 min).
    pub request_timeout: Duration,
    /// How long a restart waits for them before it runs at the slots that
    /// are left (Flink's
    /// `jobmanager.adaptive-scheduler.resource-stabilization-timeout`,
    /// 10 s): a lost TaskManager that is not replaced costs parallelism,
    /// not the job.
    pub stabilization_timeout: Duration,
}

impl Default for SlotWait {
    fn default() -> Self {
        SlotWait {
            request_timeout: Duration::from_secs(300),
            stabilization_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The JobManager role has not started yet.
    #[error("the JobManager is not ready")]
    NotReady,
    /// The job's graph could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The graph is not executable, its configuration or state is refused.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The job could not be kept in the HA storage.
    #[error("high-availability storage: {0}")]
    Ha(String),
}

/// One submitted job.
struct JobRecord {
    control: JobControl,
    runs: Arc<JobRuns>,
}

/// The JobManager's job side; give it to `JobManagerRole::start` as its
/// handler, then [`ClusterJobMaster::attach`] the started role.
pub struct ClusterJobMaster {
    registry: JobRegistry,
    /// Where jobs are kept to survive a restart of this JobManager.
    ha: Option<HaStorage>,
    /// The jobs the REST endpoint serves.
    directory: JobDirectory,
    cluster: OnceLock<JobManagerHandle>,
    jobs: Mutex<BTreeMap<JobId, JobRecord>>,
    slot_wait: SlotWait,
}

impl ClusterJobMaster {
    /// A JobMaster running the jobs of `registry`, waiting for slots as
    /// `slot_wait` says, keeping its jobs in `ha` (if given) so that a
    /// restarted JobManager recovers them.
    pub fn new(registry: JobRegistry, slot_wait: SlotWait, ha: Option<HaStorage>) -> Arc<Self> {
        Arc::new(ClusterJobMaster {
            registry,
            ha,
            directory: JobDirectory::new(),
            cluster: OnceLock::new(),
            jobs: Mutex::new(BTreeMap::new()),
            slot_wait,
        })
    }

    /// Connects to the role this JobMaster is the handler of.
    pub fn attach(&self, cluster: JobManagerHandle) {
        let _ = self.cluster.set(cluster);
    }

    /// The jobs, as the REST endpoint serves them
    /// (`floe_rest::jobs_router`).
    pub fn directory(&self) -> JobDirectory {
        self.directory.clone()
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobId, JobRecord>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds `entry`'s graph, plans it and starts its first run on the
    /// TaskManagers; returns at once with the job's id while a thread
    /// supervises it to its end.
    pub fn submit(&self, entry: JobEntry) -> Result<JobId, SubmitError> {
        let job_id = JobId::random();
        let captured = self.registry.build(job_id, &entry)?;
        let generation = match &self.ha {
            None => 0,
            Some(ha) => ha
                .add_job(job_id, &ha::encode_submission(&entry))
                .and_then(|()| ha.claim(job_id))
                .map_err(|e| SubmitError::Ha(e.to_string()))?,
        };
        self.start(job_id, entry, captured, generation)
    }

    /// Takes over every job the HA storage holds (a JobManager restarted):
    /// claims the next generation of each, and starts it again from its
    /// latest completed checkpoint. Returns the ids recovered; a job that
    /// cannot be is logged and left for the next JobManager.
    pub fn recover(&self) -> Vec<JobId> {
        let Some(ha) = &self.ha else {
            return Vec::new();
        };
        let jobs = match ha.jobs() {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("cannot read the jobs of the HA storage {}: {e}", ha.url());
                return Vec::new();
            }
        };
        let mut recovered = Vec::new();
        for (job_id, submission) in jobs {
            match self.recover_job(ha, job_id, &submission) {
                Ok(()) => {
                    eprintln!("Job {job_id} recovered from {}", ha.url());
                    recovered.push(job_id);
                }
                Err(e) => eprintln!("Job {job_id} not recovered: {e}"),
            }
        }
        recovered
    }

    fn recover_job(&self, ha: &HaStorage, job_id: JobId, submission: &[u8]) -> Result<(), String> {
        let entry = ha::decode_submission(job_id, submission)?;
        let generation = ha
            .claim(job_id)
            .map_err(|e| format!("cannot claim it (another JobManager may have): {e}"))?;
        let mut captured = self
            .registry
            .build(job_id, &entry)
            .map_err(|e| e.to_string())?;
        if let Some((_, store)) = &captured.settings.checkpointing {
            let latest = store
                .completed()
                .map_err(|e| format!("cannot list its checkpoints: {e}"))?
                .last()
                .copied();
            if let Some(id) = latest {
                let meta = read_checkpoint_metadata(store.as_ref(), id)
                    .map_err(|e| format!("cannot read checkpoint {id}: {e}"))?;
                let restored = RestoredState::load(&meta, store.clone(), true)
                    .map_err(|e| format!("cannot load checkpoint {id}: {e}"))?;
                captured.settings.restore = Some(Arc::new(restored));
                captured.settings.restore_path = None;
            }
        }
        self.start(job_id, entry, captured, generation)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn start(
        &self,
        job_id: JobId,
        entry: JobEntry,
        mut captured: CapturedJob,
        generation: u64,
    ) -> Result<JobId, SubmitError> {
        let cluster = self.cluster.get().ok_or(SubmitError::NotReady)?.clone();
        let shared_storage = captured
            .settings
            .checkpointing
            .as_ref()
            .is_none_or(|(config, _)| {
                config
                    .checkpoint_dir()
                    .is_some_and(|dir| !dir.starts_with("file:") && !dir.starts_with('/'))
            });
        // With HA storage the job's checkpoints commit only while this
        // JobManager's generation is the newest (checked first: without
        // HA the checkpointing settings stay as they are).
        if let Some(ha) = &self.ha
            && let Some((config, store)) = captured.settings.checkpointing.take()
        {
            let fenced: Arc<dyn CheckpointStore> = Arc::new(ha::FencedStore {
                inner: store,
                ha: ha.clone(),
                job: job_id,
                generation,
            });
            captured.settings.checkpointing = Some((config, fenced));
        }
        let runs = Arc::new(JobRuns::default());
        let deployer = ClusterDeployer {
            cluster,
            entry,
            runs: runs.clone(),
            slot_wait: self.slot_wait,
            shared_storage,
            generation,
        };
        let client = JobManager::new(captured.settings).submit_to(
            &captured.job_name,
            &captured.graph,
            Box::new(deployer),
        )?;
        let control = client.control();
        self.jobs().insert(
            job_id,
            JobRecord {
                control: control.clone(),
                runs,
            },
        );
        if let Err(e) = self.directory.add(control) {
            tracing::warn!(job = %job_id, "the REST endpoint does not list the job: {e}");
        }
        let directory = self.directory.clone();
        let ha = self.ha.clone();
        std::thread::Builder::new()
            .name(format!("job-{}", &job_id.to_string()[..8]))
            .spawn(move || {
                match client.wait() {
                    Ok(r) => tracing::info!(job = %r.job_id, "job finished"),
                    Err(e) => tracing::warn!(job = %job_id, "job ended: {e}"),
                }
                directory.archive(job_id);
                // Globally terminal: nothing for a next JobManager to recover.
                if let Some(ha) = ha
                    && let Err(e) = ha.remove_job(job_id)
                {
                    tracing::warn!(job = %job_id, "cannot remove the job from the HA storage: {e}");
                }
            })
            .map_err(|reason| JobError::Spawn {
                task: "job supervisor".into(),
                reason,
            })?;
        Ok(job_id)
    }

    /// The handle of a submitted job (status, savepoints, stop, cancel).
    pub fn job(&self, id: JobId) -> Option<JobControl> {
        self.jobs().get(&id).map(|r| r.control.clone())
    }

    /// Every submitted job.
    pub fn job_controls(&self) -> Vec<JobControl> {
        self.jobs().values().map(|r| r.control.clone()).collect()
    }
}

impl JobMasterHandler for ClusterJobMaster {
    // Membership changes are the JobManager's log lines for operators (and
    // what scripts watching it wait for), like Flink's.
    fn taskmanager_registered(&self, info: &TaskManagerInfo) {
        eprintln!(
            "TaskManager {} registered from {} ({} slots)",
            info.id, info.rpc_address, info.slots
        );
    }

    fn taskmanager_lost(&self, id: &TaskManagerId, reason: &str) {
        eprintln!("TaskManager {id} lost: {reason}");
        let runs: Vec<_> = self
            .jobs()
            .values()
            .filter_map(|r| r.runs.current())
            .collect();
        for run in runs {
            run.on_taskmanager_lost(id, reason);
        }
    }

    fn task_event(&self, from: &TaskManagerId, job: JobAttempt, payload: Bytes) {
        let Some(run) = self
            .jobs()
            .get(&job.job)
            .and_then(|r| r.runs.run(job.attempt.0))
        else {
            tracing::debug!(taskmanager = %from, "an event for {job}, which is not running, is dropped");
            return;
        };
        match gateway::decode::<TaskManagerEvent>(&payload) {
            Ok(event) => run.on_event(from, event),
            Err(e) => {
                tracing::warn!(taskmanager = %from, "a task event of {job} does not decode: {e}")
            }
        }
    }

    fn job_counts(&self) -> JobCounts {
        let mut counts = JobCounts::default();
        for r in self.jobs().values() {
            match r.control.status() {
                JobStatus::Finished => counts.finished += 1,
                JobStatus::Canceled => counts.cancelled += 1,
                JobStatus::Failed => counts.failed += 1,
                _ => counts.running += 1,
            }
        }
        counts
    }
}
