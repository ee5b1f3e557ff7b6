//! Where a job's tasks run: threads of this process (embedded, the
//! default), or the TaskManagers of a cluster. The JobClient supervises a
//! run the same way wherever its tasks are — restarts, the checkpoint
//! coordinator, savepoints — through [`TaskDeployer`] and [`DeployedRun`].

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use floe_core::JobId;

use crate::channel::CancelFlag;
use crate::checkpoint::{AlignmentMode, CoordinatorEvent, SnapshotTargets, TaskCommand, TaskInit};
use crate::deployment::{BuildContext, LocalWiring, build_tasks};
use crate::gateway::RestorePoint;
use crate::graph::JobGraph;
use crate::metrics::JobMetrics;
use crate::plan::ExecutionPlan;
use crate::queryable::QueryableStateRegistry;
use crate::task_manager::{HostedRun, RunSetup, SpawnError, TaskManager, TaskReport};

/// One run (attempt) of a job to start.
pub struct RunRequest<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its name.
    pub job_name: &'a str,
    /// The logical graph.
    pub graph: &'a JobGraph,
    /// Its plan.
    pub plan: &'a ExecutionPlan,
    /// The run's number within the job: 0, then one more per restart. A
    /// cluster fences every message of the run by it.
    pub attempt: u64,
    /// Set to cancel every task of the run.
    pub cancel: &'a CancelFlag,
    /// Where operators and tasks account (a cluster's TaskManagers report
    /// into it).
    pub metrics: &'a Arc<JobMetrics>,
    /// Messages per channel.
    pub channel_capacity: usize,
    /// Records per batch.
    pub batch_size: usize,
    /// What every task starts from (the state to restore, clocks).
    pub init: TaskInit,
    /// Where `init`'s state to restore was read from, for processes that
    /// must read it themselves.
    pub restore_point: Option<RestorePoint>,
    /// How tasks with several inputs handle barriers.
    pub alignment: AlignmentMode,
    /// Where snapshots go (checkpoints and this run's savepoints).
    pub store: Arc<SnapshotTargets>,
    /// Where tasks and uploaders report to the checkpoint coordinator.
    pub events: Sender<CoordinatorEvent>,
    /// The job's queryable state.
    pub queryable: Arc<QueryableStateRegistry>,
    /// The parallelism `graph` was capped at
    /// ([`crate::plan::cap_parallelism`]) because fewer slots than the job
    /// asks for were left; processes that rebuild the graph cap theirs.
    pub rescaled_to: Option<u32>,
    /// Whether the deployer may give up waiting for slots early, with
    /// [`DeployError::NotEnoughSlots`], so that the run is planned again at
    /// the slots there are: a restart from a snapshot that can be rescaled.
    /// A first run waits for the parallelism the user asked for.
    pub may_downscale: bool,
}

/// A started run, as the JobClient supervises it.
pub trait DeployedRun: Send {
    /// One report per task, as each ends.
    fn reports(&self) -> &Receiver<TaskReport>;
    /// Number of tasks (and reports to expect).
    fn task_count(&self) -> usize;
    /// Per task, in task-index order: where its commands go and whether it
    /// is a source (the checkpoint coordinator's view of the tasks).
    fn task_commands(&self) -> Vec<(Sender<TaskCommand>, bool)>;
    /// Waits for every task to be gone (after their reports).
    fn join_tasks(&mut self);
    /// Waits for the snapshot uploads the tasks handed over: written and
    /// acknowledged when this returns.
    fn join_uploaders(&mut self);
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A task thread could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The cluster cannot run it: too few slots, a TaskManager refused or
    /// could not be reached.
    #[error("cannot deploy the job: {0}")]
    Cluster(String),
    /// Fewer slots than the run needs are left (answered only when the
    /// request allows downscaling).
    #[error("cannot deploy the job: {0}")]
    NotEnoughSlots(crate::placement::NotEnoughSlots),
}

/// Starts runs of a job.
pub trait TaskDeployer: Send {
    /// Starts `run`'s tasks; they go on until they end, fail or are
    /// cancelled through `run.cancel`.
    fn start(&mut self, run: RunRequest<'_>) -> Result<Box<dyn DeployedRun>, DeployError>;
}

/// Every task on a thread of this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalDeployer;

impl TaskDeployer for LocalDeployer {
    fn start(&mut self, run: RunRequest<'_>) -> Result<Box<dyn DeployedRun>, DeployError> {
        let tasks = build_tasks(
            &BuildContext {
                job_id: run.job_id,
                job_name: run.job_name,
                graph: run.graph,
                plan: run.plan,
                cancel: run.cancel,
                metrics: run.metrics,
                channel_capacity: run.channel_capacity,
                batch_size: run.batch_size,
            },
            &mut LocalWiring,
        )
        .expect("an embedded job has no channel to another process");
        let hosted = TaskManager::start_run(
            tasks,
            RunSetup {
                cancel: run.cancel.clone(),
                init: run.init,
                alignment: run.alignment,
                store: run.store,
                events: run.events,
                queryable: Some(run.queryable),
            },
        )?;
        Ok(Box::new(hosted))
    }
}

impl DeployedRun for HostedRun {
    fn reports(&self) -> &Receiver<TaskReport> {
        &self.reports
    }

    fn task_count(&self) -> usize {
        HostedRun::task_count(self)
    }

    fn task_commands(&self) -> Vec<(Sender<TaskCommand>, bool)> {
        self.commands
            .iter()
            .map(|(_, tx, is_source)| (tx.clone(), *is_source))
            .collect()
    }

    fn join_tasks(&mut self) {
        HostedRun::join_tasks(self)
    }

    fn join_uploaders(&mut self) {
        HostedRun::join_uploaders(self)
    }
}
