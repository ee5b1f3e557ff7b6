//! Starting a run of a job on the cluster's TaskManagers: the JobManager's
//! [`TaskDeployer`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Select, Sender};
use floe_cluster::{Attempt, JobAttempt, JobManagerHandle, RegisteredTaskManager, TaskManagerId};
use floe_core::CheckpointKind;
use floe_runtime::checkpoint::{SnapshotTargets, TaskCommand};
use floe_runtime::deployer::{DeployError, DeployedRun, RunRequest, TaskDeployer};
use floe_runtime::deployment::{task_count, task_summaries};
use floe_runtime::gateway::{
    self, JobEntry, RunDeployment, RunPeer, TaskManagerCommand, WireTaskCommand,
};
use floe_runtime::placement::{place_subtasks, slots_needed};
use floe_runtime::plan::PlanSignature;
use floe_runtime::queryable::{QueryableStateRegistry, RemoteStateQueries};
use floe_runtime::task_manager::{SpawnError, TaskReport};

use super::SlotWait;
use super::queries::ClusterQueries;
use super::run::RunState;

/// How often threads waiting on something of a run look again.
const POLL: Duration = Duration::from_millis(20);
/// Longest the JobManager waits for TaskManagers to finish their share of
/// a run after every task reported (their uploads end in acks or declines
/// well before; a TaskManager that hangs is declared lost by heartbeats).
const END_WAIT: Duration = Duration::from_secs(120);

/// The runs of one job, shared with the JobMaster that routes task events
/// and TaskManager losses to the current one.
#[derive(Default)]
pub(crate) struct JobRuns {
    current: Mutex<Option<Arc<RunState>>>,
}

impl JobRuns {
    /// The current run, if it is attempt `attempt`.
    pub fn run(&self, attempt: u64) -> Option<Arc<RunState>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|r| r.attempt == attempt).cloned()
    }

    /// The current run, whatever its attempt.
    pub fn current(&self) -> Option<Arc<RunState>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, run: Option<Arc<RunState>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = run;
    }
}

/// Deploys each run of one job to the cluster's TaskManagers.
pub(crate) struct ClusterDeployer {
    pub cluster: JobManagerHandle,
    pub entry: JobEntry,
    pub runs: Arc<JobRuns>,
    /// How long a run waits for enough free slots.
    pub slot_wait: SlotWait,
    /// Whether the job's checkpoints are on storage every host sees.
    pub shared_storage: bool,
    /// This JobManager's generation of the job (0 without HA storage): runs
    /// are numbered above every run of an earlier generation, so the
    /// TaskManagers' fences take them.
    pub generation: u64,
}

impl ClusterDeployer {
    /// Waits until the registered TaskManagers have the slots the job
    /// needs; returns them and the placement. A run that may downscale
    /// gives up after the stabilization timeout if some slots are free, so
    /// that it is planned again at those.
    fn place(
        &self,
        run: &RunRequest<'_>,
    ) -> Result<(Vec<RegisteredTaskManager>, Vec<Vec<u32>>), DeployError> {
        let started = Instant::now();
        let deadline = started + self.slot_wait.request_timeout;
        // (A stabilization timeout longer than the request timeout still
        // downscales at the end rather than fail.)
        let stable = started
            + self
                .slot_wait
                .stabilization_timeout
                .min(self.slot_wait.request_timeout);
        loop {
            let taskmanagers = self.cluster.taskmanagers();
            let free: Vec<u32> = taskmanagers.iter().map(|t| t.free_slots).collect();
            match place_subtasks(run.graph, run.plan, &free) {
                Ok(placement) => return Ok((taskmanagers, placement)),
                Err(e) if run.may_downscale && e.available > 0 && Instant::now() >= stable => {
                    return Err(DeployError::NotEnoughSlots(e));
                }
                Err(e) if Instant::now() >= deadline || run.cancel.is_cancelled() => {
                    return Err(DeployError::Cluster(format!(
                        "{e} (waited {} ms for slots: slot.request.timeout)",
                        self.slot_wait.request_timeout.as_millis()
                    )));
                }
                Err(_) => std::thread::sleep(POLL * 5),
            }
        }
    }
}

/// Whether `address` (`host:port`) is on this machine's loopback.
fn is_loopback(address: &str) -> bool {
    address
        .rsplit_once(':')
        .and_then(|(h, _)| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

impl TaskDeployer for ClusterDeployer {
    fn start(&mut self, run: RunRequest<'_>) -> Result<Box<dyn DeployedRun>, DeployError> {
        let (registered, placement) = self.place(&run)?;
        // Only the TaskManagers that got a subtask take part.
        let mut used: Vec<u32> = placement.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        let index_of: BTreeMap<u32, u32> = used
            .iter()
            .enumerate()
            .map(|(i, &tm)| (tm, i as u32))
            .collect();
        let taskmanagers: Vec<&RegisteredTaskManager> =
            used.iter().map(|&i| &registered[i as usize]).collect();
        if !self.shared_storage
            && taskmanagers.len() > 1
            && !taskmanagers
                .iter()
                .all(|t| is_loopback(&t.info.rpc_address))
        {
            return Err(DeployError::Cluster(
                "the job's checkpoint storage is a local directory and its TaskManagers are on \
                 several hosts: every TaskManager must write checkpoints where the JobManager \
                 reads them; use S3, GCS, Azure or a shared file system \
                 (state.checkpoints.dir)"
                    .into(),
            ));
        }
        let placement: Vec<Vec<u32>> = placement
            .iter()
            .map(|chain| chain.iter().map(|tm| index_of[tm]).collect())
            .collect();
        let peers: Vec<RunPeer> = taskmanagers
            .iter()
            .map(|t| RunPeer {
                id: t.info.id.as_str().to_string(),
                data_address: t.info.data_address.clone(),
            })
            .collect();
        let ids: Vec<TaskManagerId> = taskmanagers.iter().map(|t| t.info.id.clone()).collect();
        let task_peer: Vec<u32> = placement.iter().flatten().copied().collect();
        debug_assert_eq!(task_peer.len(), task_count(run.graph, run.plan));
        let attempt = (self.generation << 32) | run.attempt;
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let state = Arc::new(RunState::new(
            attempt,
            ids.clone(),
            task_peer.clone(),
            task_summaries(run.graph, run.plan),
            reports_tx,
            run.events.clone(),
            run.metrics.clone(),
        ));
        let job = JobAttempt {
            job: run.job_id,
            attempt: Attempt(attempt),
        };
        self.cluster
            .attempts()
            .advance(job)
            .map_err(|e| DeployError::Cluster(e.to_string()))?;
        self.runs.set(Some(state.clone()));
        let slots_used = slots_needed(run.graph);
        let mut reserved: Vec<(TaskManagerId, u32)> = Vec::new();
        for (peer, id) in ids.iter().enumerate() {
            let n = (0..slots_used as usize)
                .filter(|s| {
                    placement
                        .iter()
                        .any(|c| c.get(*s).is_some_and(|p| *p as usize == peer))
                })
                .count() as u32;
            if self.cluster.reserve_slots(id, n).is_ok() {
                reserved.push((id.clone(), n));
            }
        }
        let mut remote = RemoteRun {
            job,
            cluster: self.cluster.clone(),
            runs: self.runs.clone(),
            state,
            reports,
            commands: Vec::new(),
            done: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            reserved,
            queryable: None,
        };
        let signature = PlanSignature::of(run.graph, run.plan);
        for (peer, id) in ids.iter().enumerate() {
            let deployment = RunDeployment {
                job: self.entry.clone(),
                signature: signature.clone(),
                peers: peers.clone(),
                placement: placement.clone(),
                this_peer: peer as u32,
                restore: run.restore_point.clone(),
                rescaled_to: run.rescaled_to,
            };
            let payload = Bytes::from(gateway::encode(&deployment));
            let sent = match self.cluster.taskmanager(id) {
                Some(gw) => self
                    .cluster
                    .call("deploy", gw.deploy(job, payload))
                    .map_err(|e| e.to_string()),
                None => Err(format!("TaskManager {id} is no longer registered")),
            };
            if let Err(reason) = sent {
                // Dropping `remote` cancels what was deployed.
                remote.cancel_all();
                return Err(DeployError::Cluster(format!(
                    "TaskManager {id} did not take its part of {job}: {reason}"
                )));
            }
        }
        // Queries of the job's state go to this run's TaskManagers.
        let queries: Arc<dyn RemoteStateQueries> = Arc::new(ClusterQueries {
            job,
            cluster: self.cluster.clone(),
            taskmanagers: ids.clone(),
        });
        run.queryable.set_remote(queries.clone());
        remote.queryable = Some((run.queryable.clone(), queries));
        tracing::info!(job = %run.job_id, attempt, taskmanagers = ids.len(), "run deployed");
        if let Err(e) = remote.start_forwarding(run.store.clone(), run.cancel.clone()) {
            // Dropping `remote` releases what was deployed.
            remote.cancel_all();
            return Err(DeployError::Spawn(e));
        }
        Ok(Box::new(remote))
    }
}

/// A run on the cluster, supervised by the JobClient.
struct RemoteRun {
    job: JobAttempt,
    cluster: JobManagerHandle,
    runs: Arc<JobRuns>,
    state: Arc<RunState>,
    reports: Receiver<TaskReport>,
    /// Per task: where the coordinator's commands go (forwarded).
    commands: Vec<(Sender<TaskCommand>, bool)>,
    /// Set when the run is over: its threads stop.
    done: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Slots reserved per TaskManager, given back at the end.
    reserved: Vec<(TaskManagerId, u32)>,
    /// The job's queryable state, routed to this run while it lasts.
    queryable: Option<(Arc<QueryableStateRegistry>, Arc<dyn RemoteStateQueries>)>,
}

impl RemoteRun {
    /// Starts the threads that forward the coordinator's commands and a
    /// cancellation to the TaskManagers.
    fn start_forwarding(
        &mut self,
        store: Arc<SnapshotTargets>,
        cancel: floe_runtime::channel::CancelFlag,
    ) -> Result<(), SpawnError> {
        let mut receivers = Vec::with_capacity(self.state.tasks.len());
        for is_source in self.state.tasks.iter().map(|t| t.is_source) {
            let (tx, rx) = crossbeam_channel::unbounded();
            self.commands.push((tx, is_source));
            receivers.push(rx);
        }
        let forwarder = Forwarder {
            job: self.job,
            cluster: self.cluster.clone(),
            state: self.state.clone(),
            store,
            done: self.done.clone(),
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| SpawnError {
                    task: name.into(),
                    source,
                })
        };
        self.threads.push(spawn(
            "run-commands",
            Box::new(move || forwarder.forward_commands(receivers)),
        )?);
        let (job, cluster, state, done) = (
            self.job,
            self.cluster.clone(),
            self.state.clone(),
            self.done.clone(),
        );
        self.threads.push(spawn(
            "run-cancel",
            Box::new(move || {
                while !done.load(Ordering::Acquire) {
                    if cancel.is_cancelled() {
                        cancel_on(&cluster, &state, job);
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            }),
        )?);
        Ok(())
    }

    fn cancel_all(&self) {
        cancel_on(&self.cluster, &self.state, self.job);
    }
}

/// Tells every TaskManager of the run to cancel its tasks.
fn cancel_on(cluster: &JobManagerHandle, state: &RunState, job: JobAttempt) {
    for id in &state.taskmanagers {
        if let Some(gw) = cluster.taskmanager(id)
            && let Err(e) = cluster.call("cancel", gw.cancel_job(job))
        {
            tracing::warn!(taskmanager = %id, "cannot cancel {job}: {e}");
        }
    }
}

/// Forwards the checkpoint coordinator's commands to the TaskManagers.
struct Forwarder {
    job: JobAttempt,
    cluster: JobManagerHandle,
    state: Arc<RunState>,
    store: Arc<SnapshotTargets>,
    done: Arc<AtomicBool>,
}

impl Forwarder {
    fn forward_commands(self, receivers: Vec<Receiver<TaskCommand>>) {
        let mut open = vec![true; receivers.len()];
        while !self.done.load(Ordering::Acquire) && open.iter().any(|o| *o) {
            let mut sel = Select::new();
            let indices: Vec<usize> = (0..receivers.len()).filter(|i| open[*i]).collect();
            for &i in &indices {
                sel.recv(&receivers[i]);
            }
            let Ok(op) = sel.select_timeout(POLL * 5) else {
                continue;
            };
            let task = indices[op.index()];
            match op.recv(&receivers[task]) {
                Ok(cmd) => self.forward(task, cmd),
                Err(_) => open[task] = false,
            }
        }
    }

    fn send(&self, peer: usize, command: &TaskManagerCommand) {
        let id = &self.state.taskmanagers[peer];
        let payload = Bytes::from(gateway::encode(command));
        let sent = match self.cluster.taskmanager(id) {
            Some(gw) => self
                .cluster
                .call("command", gw.send_command(self.job, payload))
                .map_err(|e| e.to_string()),
            None => Err("not registered".into()),
        };
        if let Err(e) = sent {
            // The TaskManager is gone or moved on: its loss fails the run.
            tracing::warn!(taskmanager = %id, "cannot forward a command of {}: {e}", self.job);
        }
    }

    fn forward(&self, task: usize, cmd: TaskCommand) {
        if let TaskCommand::TriggerCheckpoint(b) = &cmd
            && b.kind != CheckpointKind::Checkpoint
            && let Some(directory) = self.store.savepoint_location(b.id)
        {
            // Every TaskManager learns where the savepoint goes before its
            // barrier can reach any of them.
            let target = TaskManagerCommand::SavepointTarget {
                checkpoint_id: b.id,
                directory,
            };
            for peer in 0..self.state.taskmanagers.len() {
                self.send(peer, &target);
            }
        }
        let peer = self.state.task_peer[task] as usize;
        self.send(
            peer,
            &TaskManagerCommand::Task {
                task: task as u32,
                command: WireTaskCommand::from(&cmd),
            },
        );
    }
}

impl DeployedRun for RemoteRun {
    fn reports(&self) -> &Receiver<TaskReport> {
        &self.reports
    }

    fn task_count(&self) -> usize {
        self.state.task_peer.len()
    }

    fn task_commands(&self) -> Vec<(Sender<TaskCommand>, bool)> {
        self.commands.clone()
    }

    fn join_tasks(&mut self) {}

    fn join_uploaders(&mut self) {
        let open = self.state.wait_ended(END_WAIT);
        if !open.is_empty() {
            tracing::warn!(
                "TaskManagers {open:?} did not end their part of {} in {} s",
                self.job,
                END_WAIT.as_secs()
            );
        }
    }
}

impl Drop for RemoteRun {
    fn drop(&mut self) {
        if let Some((registry, queries)) = self.queryable.take() {
            registry.clear_remote(&queries);
        }
        self.done.store(true, Ordering::Release);
        self.commands.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for id in &self.state.taskmanagers {
            if let Some(gw) = self.cluster.taskmanager(id) {
                let _ = self.cluster.call("release", gw.release_job(self.job));
            }
        }
        for (id, n) in self.reserved.drain(..) {
            let _ = self.cluster.release_slots(&id, n);
        }
        if self
            .runs
            .current()
            .is_some_and(|r| Arc::ptr_eq(&r, &self.state))
        {
            self.runs.set(None);
        }
    }
}
