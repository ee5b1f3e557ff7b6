//! The TaskExecutor: a TaskManager's job side. It runs the share of each
//! run the JobManager deploys here (see [`run`]), routes the JobManager's
//! commands to its tasks, and fails a run at once when a data connection
//! it uses breaks.

mod run;
mod wiring;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use floe_cluster::{JobAttempt, TaskEventSender, TaskExecutorHandler};
use floe_core::JobId;
use floe_network::{NetworkEnvironment, NetworkEvent};
use floe_runtime::gateway::{self, RunDeployment, TaskManagerCommand};

use crate::registry::JobRegistry;
use run::{LocalRun, RunHost};

/// A TaskManager's job side; give it to `TaskManagerRole::start` as its
/// handler, then [`ClusterTaskExecutor::attach`] the started role's event
/// sender.
pub struct ClusterTaskExecutor {
    registry: JobRegistry,
    network: Arc<NetworkEnvironment>,
    events: OnceLock<TaskEventSender>,
    /// The current run of each job here.
    runs: Mutex<HashMap<JobId, Arc<LocalRun>>>,
}

impl ClusterTaskExecutor {
    /// A TaskExecutor running the jobs of `registry` with `network` as its
    /// data plane; a thread watches the data plane for broken connections.
    pub fn new(registry: JobRegistry, network: Arc<NetworkEnvironment>) -> Arc<Self> {
        let executor = Arc::new(ClusterTaskExecutor {
            registry,
            network: network.clone(),
            events: OnceLock::new(),
            runs: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&executor);
        let events = network.events();
        let _ = std::thread::Builder::new()
            .name("data-plane-events".into())
            .spawn(move || {
                for event in events.iter() {
                    let Some(executor) = weak.upgrade() else {
                        return;
                    };
                    if let NetworkEvent::ConnectionLost { peer, addr, reason } = event {
                        let why = format!(
                            "the data connection to TaskManager {peer} at {addr} broke: {reason}"
                        );
                        for run in executor.all_runs() {
                            run.fail(&why, false);
                        }
                    }
                }
            });
        executor
    }

    /// Connects to the role this TaskExecutor is the handler of.
    pub fn attach(&self, events: TaskEventSender) {
        let _ = self.events.set(events);
    }

    /// The metrics of every operator subtask running here, per job: what
    /// this TaskManager's Prometheus endpoint reports on each scrape.
    pub fn hosted_metrics(&self) -> Vec<floe_rest::HostedJobMetrics> {
        self.all_runs()
            .iter()
            .filter_map(|r| r.hosted_metrics())
            .collect()
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<LocalRun>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all_runs(&self) -> Vec<Arc<LocalRun>> {
        self.runs().values().cloned().collect()
    }

    fn run(&self, job: JobAttempt) -> Option<Arc<LocalRun>> {
        self.runs()
            .get(&job.job)
            .filter(|r| r.attempt == job.attempt.0)
            .cloned()
    }
}

impl TaskExecutorHandler for ClusterTaskExecutor {
    fn deploy(&self, job: JobAttempt, payload: Bytes) -> Result<(), String> {
        let events = self
            .events
            .get()
            .ok_or("the TaskManager is still starting")?
            .clone();
        let deployment: RunDeployment =
            gateway::decode(&payload).map_err(|e| format!("deployment of {job}: {e}"))?;
        let run = Arc::new(LocalRun::new(job, events, &deployment));
        if let Some(old) = self.runs().insert(job.job, run.clone()) {
            // A newer attempt replaces the old one, which must stop.
            old.cancel.cancel();
        }
        let host = RunHost {
            registry: self.registry.clone(),
            network: self.network.clone(),
            run,
            deployment,
        };
        std::thread::Builder::new()
            .name(format!("run-{}-{}", &job.job.to_string()[..8], job.attempt))
            .spawn(move || host.run())
            .map(|_| ())
            .map_err(|e| format!("cannot start a thread for {job}: {e}"))
    }

    fn cancel(&self, job: JobAttempt) {
        if let Some(run) = self.runs().get(&job.job)
            && run.attempt <= job.attempt.0
        {
            run.cancel.cancel();
        }
        self.network.release_job(job.job, job.attempt.0);
    }

    fn command(&self, job: JobAttempt, payload: Bytes) -> Result<(), String> {
        let command: TaskManagerCommand =
            gateway::decode(&payload).map_err(|e| format!("command of {job}: {e}"))?;
        let run = self
            .run(job)
            .ok_or_else(|| format!("{job} does not run on this TaskManager"))?;
        run.command(command)
    }

    fn query(
        &self,
        job: JobAttempt,
        payload: Bytes,
        answer: tokio::sync::oneshot::Sender<Bytes>,
    ) -> Result<(), String> {
        let run = self
            .run(job)
            .ok_or_else(|| format!("{job} does not run on this TaskManager"))?;
        run.query(&payload, answer)
    }

    fn release(&self, job: JobAttempt) {
        let mut runs = self.runs();
        if runs
            .get(&job.job)
            .is_some_and(|r| r.attempt == job.attempt.0)
        {
            runs.remove(&job.job);
        }
        drop(runs);
        self.network.release_job(job.job, job.attempt.0);
    }
}
