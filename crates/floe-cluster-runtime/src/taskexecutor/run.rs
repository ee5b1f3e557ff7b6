//! One run's share on this TaskManager: built from its deployment on a
//! thread of its own, then its tasks' reports and checkpoint events sent
//! to the JobManager.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{RecvTimeoutError, Sender};
use floe_cluster::{JobAttempt, TaskEventSender};
use floe_core::JobId;
use floe_network::{NetworkEnvironment, Peer, TaskManagerId as DataId};
use floe_rest::{HostedJobMetrics, HostedSubtask};
use floe_runtime::channel::CancelFlag;
use floe_runtime::checkpoint::{
    AlignmentMode, CheckpointStore, OpenedSnapshot, RestoredState, SnapshotTargets, TaskCommand,
    TaskInit, read_checkpoint_metadata,
};
use floe_runtime::deployment::{BuildContext, TaskSummary, build_tasks, task_summaries};
use floe_runtime::gateway::{
    self, RestorePoint, RunDeployment, StateQueryAnswer, StateQueryRequest, TaskManagerCommand,
    TaskManagerEvent, TaskOutcome, TaskResult, answer_state_query,
};
use floe_runtime::metrics::JobMetrics;
use floe_runtime::plan::{PlanSignature, cap_parallelism};
use floe_runtime::queryable::QueryableStateRegistry;
use floe_runtime::task_manager::{RunSetup, TaskManager};
use floe_runtime::{JobManager, ProcessingTimeService};
use tokio::sync::oneshot;

use super::wiring::NetworkWiring;
use crate::endpoint::DataEndpoint;
use crate::registry::JobRegistry;

/// How often a run's metrics go to the JobManager (its sampler keeps one
/// sample a second).
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// A run on this TaskManager, as commands and cancellations reach it.
pub(crate) struct LocalRun {
    pub attempt: u64,
    /// Cancels its tasks.
    pub cancel: CancelFlag,
    job: JobAttempt,
    events: TaskEventSender,
    /// The tasks placed here, by index.
    tasks: Vec<u32>,
    state: Mutex<RunProgress>,
}

/// A running share's command channels (by task index) and snapshot targets.
type Started = (HashMap<usize, Sender<TaskCommand>>, Arc<SnapshotTargets>);

struct RunProgress {
    /// Once the graph is built: each task's name, subtask and parallelism
    /// (by index), for failures reported on its behalf.
    names: HashMap<u32, TaskSummary>,
    /// Until the tasks run: commands that arrived, in order.
    queued: Vec<TaskManagerCommand>,
    /// Once they run: each task's command channel, and where snapshots go.
    started: Option<Started>,
    /// Tasks reported to the JobManager (each exactly once).
    reported: Vec<u32>,
    /// Where the run's subtasks here announce their queryable states.
    queryable: Option<Arc<QueryableStateRegistry>>,
    /// While the tasks run: what this TaskManager's `/metrics` reports.
    metrics: Option<Arc<HostedRunMetrics>>,
}

/// A run's operator subtasks on this TaskManager and where they count:
/// what the TaskManager's own Prometheus endpoint reports of the run.
struct HostedRunMetrics {
    job_id: String,
    job_name: String,
    /// Each vertex's uid and name, by vertex index.
    operators: Vec<(String, String)>,
    /// The (vertex, subtask) pairs placed here.
    hosted: Vec<(usize, u32)>,
    metrics: Arc<JobMetrics>,
}

impl HostedRunMetrics {
    fn read(&self) -> HostedJobMetrics {
        let snapshot = self.metrics.snapshot();
        let native = self.metrics.native();
        HostedJobMetrics {
            job_id: self.job_id.clone(),
            job_name: self.job_name.clone(),
            subtasks: self
                .hosted
                .iter()
                .filter_map(|&(v, s)| {
                    let metrics = *snapshot.get(v)?.get(s as usize)?;
                    let (uid, name) = self.operators.get(v)?.clone();
                    Some(HostedSubtask {
                        uid,
                        name,
                        index: s,
                        metrics,
                        native: native
                            .get(v)
                            .and_then(|n| n.get(s as usize))
                            .cloned()
                            .unwrap_or_default(),
                    })
                })
                .collect(),
        }
    }
}

impl LocalRun {
    pub fn new(job: JobAttempt, events: TaskEventSender, deployment: &RunDeployment) -> Self {
        let mut tasks = Vec::new();
        let mut index = 0u32;
        for chain in &deployment.placement {
            for &peer in chain {
                if peer == deployment.this_peer {
                    tasks.push(index);
                }
                index += 1;
            }
        }
        LocalRun {
            attempt: job.attempt.0,
            cancel: CancelFlag::new(),
            job,
            events,
            tasks,
            state: Mutex::new(RunProgress {
                names: HashMap::new(),
                queued: Vec::new(),
                started: None,
                reported: Vec::new(),
                queryable: None,
                metrics: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunProgress> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metrics of the run's operator subtasks here, while they run.
    pub fn hosted_metrics(&self) -> Option<HostedJobMetrics> {
        let hosted = self.lock().metrics.clone();
        hosted.map(|h| h.read())
    }

    /// Answers a question of the JobManager about the keyed state of the
    /// run's subtasks here (`StateQueryRequest`), through `answer`.
    pub fn query(&self, payload: &[u8], answer: oneshot::Sender<Bytes>) -> Result<(), String> {
        let request: StateQueryRequest =
            gateway::decode(payload).map_err(|e| format!("state query of {}: {e}", self.job))?;
        let done: Box<dyn FnOnce(StateQueryAnswer) + Send> = Box::new(move |a| {
            let _ = answer.send(Bytes::from(gateway::encode(&a)));
        });
        // (Not under the run's lock: the registry and a task answer.)
        let registry = self.lock().queryable.clone();
        match registry {
            Some(registry) => answer_state_query(&registry, request, done),
            // Not built yet: nothing here serves state.
            None => done(StateQueryAnswer::NotHere { states: Vec::new() }),
        }
        Ok(())
    }

    /// Applies (or keeps until the tasks run) a command of the JobManager.
    pub fn command(&self, command: TaskManagerCommand) -> Result<(), String> {
        let mut state = self.lock();
        match &state.started {
            None => {
                state.queued.push(command);
                Ok(())
            }
            Some((senders, targets)) => apply(senders, targets, command),
        }
    }

    fn send(&self, event: &TaskManagerEvent) {
        let payload = Bytes::from(gateway::encode(event));
        if let Err(e) = self.events.report_blocking(self.job, payload) {
            tracing::warn!("cannot report to the JobManager for {}: {e}", self.job);
        }
    }

    /// Reports a task's end unless it was reported already.
    fn report(&self, mut outcome: TaskOutcome) {
        // Nothing here cancels a run but the JobManager (and `fail`): a
        // task that stopped as cancelled otherwise lost a channel to
        // another TaskManager, which fails the run.
        if outcome.result == TaskResult::Cancelled && !self.cancel.is_cancelled() {
            let (subtask, parallelism) = self
                .lock()
                .names
                .get(&outcome.task)
                .map_or((0, 1), |t| (t.subtask, t.parallelism));
            outcome.result = TaskResult::Failed {
                operator: outcome.name.clone(),
                uid: String::new(),
                subtask,
                parallelism,
                message: "a channel to another TaskManager broke".into(),
                panic: false,
                non_recoverable: false,
            };
        }
        {
            let mut state = self.lock();
            if state.reported.contains(&outcome.task) {
                return;
            }
            state.reported.push(outcome.task);
        }
        self.send(&TaskManagerEvent::TaskEnded(outcome));
    }

    /// Fails every task of the run here that has not reported, and cancels
    /// the run: it cannot go on (it could not be built, or a connection to
    /// another TaskManager broke).
    pub fn fail(&self, reason: &str, non_recoverable: bool) {
        self.cancel.cancel();
        for &task in &self.tasks {
            let (name, subtask, parallelism) = match self.lock().names.get(&task) {
                Some(t) => (t.name.clone(), t.subtask, t.parallelism),
                None => (format!("task {task}"), 0, 1),
            };
            self.report(TaskOutcome {
                task,
                name: name.clone(),
                result: TaskResult::Failed {
                    operator: name,
                    uid: String::new(),
                    subtask,
                    parallelism,
                    message: reason.to_string(),
                    panic: false,
                    non_recoverable,
                },
            });
        }
    }
}

fn apply(
    senders: &HashMap<usize, Sender<TaskCommand>>,
    targets: &SnapshotTargets,
    command: TaskManagerCommand,
) -> Result<(), String> {
    match command {
        TaskManagerCommand::Task { task, command } => {
            let cmd = TaskCommand::try_from(command)?;
            match senders.get(&(task as usize)) {
                // A task that ended no longer takes commands.
                Some(tx) => {
                    let _ = tx.send(cmd);
                    Ok(())
                }
                None => Err(format!("task {task} does not run on this TaskManager")),
            }
        }
        TaskManagerCommand::SavepointTarget {
            checkpoint_id,
            directory,
        } => targets
            .attach_savepoint(checkpoint_id, &directory)
            .map_err(|e| format!("savepoint {checkpoint_id} at {directory}: {e}")),
    }
}

/// What building and running a run here needs.
pub(crate) struct RunHost {
    pub registry: JobRegistry,
    pub network: Arc<NetworkEnvironment>,
    pub run: Arc<LocalRun>,
    pub deployment: RunDeployment,
}

impl RunHost {
    /// Builds the run's tasks here and runs them to their end (on the
    /// calling thread, which it keeps until then).
    pub fn run(self) {
        let run = self.run.clone();
        if let Err((reason, non_recoverable)) = self.host() {
            tracing::warn!("{}: {reason}", run.job);
            run.fail(&reason, non_recoverable);
            run.send(&TaskManagerEvent::RunEnded);
        }
    }

    fn host(self) -> Result<(), (String, bool)> {
        let RunHost {
            registry,
            network,
            run,
            deployment,
        } = self;
        let job_id: JobId = run.job.job;
        // A build or plan that differs will differ again: no restart helps.
        let final_ = |e: &dyn std::fmt::Display| (e.to_string(), true);
        let captured = registry
            .build(job_id, &deployment.job)
            .map_err(|e| final_(&e))?;
        let settings = captured.settings;
        let plan = JobManager::new(settings.clone())
            .plan(&captured.graph)
            .map_err(|e| final_(&e))?;
        // A restart on fewer slots runs the graph capped as the JobManager
        // capped it; the plan (uids, key groups, chains) holds for both.
        let graph = match deployment.rescaled_to {
            Some(p) => cap_parallelism(&captured.graph, p),
            None => captured.graph,
        };
        if let Some(why) = PlanSignature::of(&graph, &plan).mismatch(&deployment.signature) {
            return Err((
                format!(
                    "this TaskManager builds job '{}' differently from the JobManager ({why}): \
                     run the same Floe build with the same arguments everywhere",
                    deployment.job.name
                ),
                true,
            ));
        }
        run.lock().names = task_summaries(&graph, &plan)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i as u32, t))
            .collect();
        let checkpoints: Option<Arc<dyn CheckpointStore>> =
            settings.checkpointing.as_ref().map(|(_, s)| s.clone());
        let restore = restore(&deployment.restore, &settings.restore, checkpoints.as_ref())
            .map_err(|e| (e, false))?;
        let peers: Vec<Peer> = deployment
            .peers
            .iter()
            .map(|p| {
                p.data_address
                    .parse::<DataEndpoint>()
                    .map(|e| Peer {
                        id: DataId(e.id),
                        data_addr: e.address,
                    })
                    .map_err(|e| (format!("TaskManager {}: {e}", p.id), true))
            })
            .collect::<Result<_, _>>()?;
        let metrics = plan.new_metrics(&graph);
        metrics.set_io_counting(settings.io_metrics);
        let mut wiring = NetworkWiring {
            network: &network,
            job: job_id,
            attempt: run.attempt,
            placement: &deployment.placement,
            peers: &peers,
            this_peer: deployment.this_peer,
            edge_chains: NetworkWiring::edge_chains(&graph, &plan),
        };
        let tasks = build_tasks(
            &BuildContext {
                job_id,
                job_name: &captured.job_name,
                graph: &graph,
                plan: &plan,
                cancel: &run.cancel,
                metrics: &metrics,
                channel_capacity: settings.channel_capacity,
                batch_size: settings.batch_size,
            },
            &mut wiring,
        )
        .map_err(|e| (e.to_string(), false))?;
        let targets = Arc::new(SnapshotTargets::new(checkpoints));
        let queryable = Arc::new(
            QueryableStateRegistry::new(job_id, settings.queryable_state)
                .with_max_staleness(settings.queryable_state_max_staleness),
        );
        run.lock().queryable = Some(queryable.clone());
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let alignment = settings
            .checkpointing
            .as_ref()
            .map(|(c, _)| AlignmentMode::of(c))
            .unwrap_or(AlignmentMode::Aligned);
        let mut hosted = TaskManager::start_run(
            tasks,
            RunSetup {
                cancel: run.cancel.clone(),
                init: TaskInit {
                    restore,
                    checkpointing: settings.checkpointing.is_some(),
                    queryable: None,
                    time: ProcessingTimeService::new(settings.processing_clock.clone()),
                    auto_watermark_interval: settings.auto_watermark_interval,
                },
                alignment,
                store: targets.clone(),
                events: events_tx,
                queryable: Some(queryable),
            },
        )
        .map_err(|e| (e.to_string(), false))?;
        {
            let mut state = run.lock();
            let senders: HashMap<usize, Sender<TaskCommand>> = hosted
                .commands
                .iter()
                .map(|(i, tx, _)| (*i, tx.clone()))
                .collect();
            for command in std::mem::take(&mut state.queued) {
                if let Err(e) = apply(&senders, &targets, command) {
                    tracing::warn!("{}: a queued command failed: {e}", run.job);
                }
            }
            state.started = Some((senders, targets));
        }
        tracing::info!(job = %job_id, attempt = run.attempt, tasks = hosted.task_count(), "run started");
        let forward = {
            let run = run.clone();
            std::thread::Builder::new()
                .name("run-events".into())
                .spawn(move || {
                    for event in events_rx.iter() {
                        if let Some(e) = TaskManagerEvent::of_coordinator_event(&event) {
                            run.send(&e);
                        }
                    }
                })
                .map_err(|e| (e.to_string(), false))?
        };
        // The JobManager serves the job's metrics: the counters of the
        // operator subtasks here go to it every second.
        let hosted_operators: Vec<(usize, u32)> = plan
            .chains
            .iter()
            .zip(&deployment.placement)
            .flat_map(|(chain, peers)| {
                let here = peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p == deployment.this_peer);
                here.flat_map(move |(s, _)| chain.iter().map(move |v| (v.0, s as u32)))
            })
            .collect();
        run.lock().metrics = Some(Arc::new(HostedRunMetrics {
            job_id: job_id.to_string(),
            job_name: captured.job_name.clone(),
            operators: plan
                .vertices
                .iter()
                .zip(&graph.vertices)
                .map(|(p, v)| (p.uid.to_string(), v.name.clone()))
                .collect(),
            hosted: hosted_operators.clone(),
            metrics: metrics.clone(),
        }));
        let (stop_reporting, stopped) = crossbeam_channel::bounded::<()>(0);
        let reporter = {
            let (reporting, metrics, hosted) =
                (run.clone(), metrics.clone(), hosted_operators.clone());
            std::thread::Builder::new()
                .name("run-metrics".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(METRICS_EVERY) {
                        // Also the sample this TaskManager's own rates use.
                        metrics.sample();
                        reporting.send(&TaskManagerEvent::Metrics(metrics.counters(&hosted)));
                    }
                })
                .inspect_err(|e| tracing::warn!("{}: no metrics reports: {e}", run.job))
                .ok()
        };
        for _ in 0..hosted.task_count() {
            let Ok(report) = hosted.reports.recv() else {
                break;
            };
            run.report(TaskOutcome::from(&report));
        }
        hosted.join_tasks();
        hosted.join_uploaders();
        // The tasks and uploaders held the events' senders; the commands'
        // senders go with the run's state. Its subtasks are gone from this
        // TaskManager's metrics, as a finished task's are in Flink.
        {
            let mut state = run.lock();
            state.started = None;
            state.metrics = None;
        }
        drop(hosted);
        let _ = forward.join();
        drop(stop_reporting);
        if let Some(reporter) = reporter {
            let _ = reporter.join();
        }
        // The final counts, before the JobManager hears the run ended.
        run.send(&TaskManagerEvent::Metrics(
            metrics.counters(&hosted_operators),
        ));
        run.send(&TaskManagerEvent::RunEnded);
        tracing::info!(job = %job_id, attempt = run.attempt, "run ended");
        Ok(())
    }
}

/// The state the run starts from, read here.
fn restore(
    point: &Option<RestorePoint>,
    loaded: &Option<Arc<RestoredState>>,
    checkpoints: Option<&Arc<dyn CheckpointStore>>,
) -> Result<Option<Arc<RestoredState>>, String> {
    match point {
        None => Ok(None),
        // The job's arguments named it (`-s`): building the graph read it.
        Some(RestorePoint::Snapshot(path)) => match loaded {
            Some(r) => Ok(Some(r.clone())),
            None => OpenedSnapshot::open(path)
                .and_then(|s| s.load())
                .map(|r| Some(Arc::new(r)))
                .map_err(|e| format!("cannot restore from {path}: {e}")),
        },
        Some(RestorePoint::Checkpoint(id)) => {
            let store = checkpoints.ok_or_else(|| {
                format!("checkpoint {id} to restore, but the job has no checkpoint storage here")
            })?;
            let meta = read_checkpoint_metadata(store.as_ref(), *id)
                .map_err(|e| format!("cannot read checkpoint {id}: {e}"))?;
            RestoredState::load(&meta, store.clone(), true)
                .map(|r| Some(Arc::new(r)))
                .map_err(|e| format!("cannot restore checkpoint {id}: {e}"))
        }
    }
}
