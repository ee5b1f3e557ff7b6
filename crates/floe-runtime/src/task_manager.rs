//! The TaskManager role: runs its share of a job's tasks and reports how
//! each ended.
//!
//! In the embedded runtime it shares the process with the JobManager; the
//! boundary between them is [`TaskManager::start_run`] and channels (task
//! reports, commands to tasks, events to the checkpoint coordinator), which
//! a cluster carries over the network.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::channel::CancelFlag;
use crate::checkpoint::{
    AlignmentMode, CheckpointStore, CoordinatorEvent, SnapshotUploader, TaskCommand,
    TaskEnvironment, TaskInit,
};
use crate::context::panic_message;
use crate::deployment::BuiltTask;
use crate::error::TaskError;
use crate::queryable::{QueryableStateRegistry, QueryableTaskHandle};
use crate::task::TaskDriver;

/// Threads that write snapshots per TaskManager and run: snapshots of
/// several tasks upload in parallel while the tasks go on.
const UPLOADER_THREADS: usize = 2;

/// What the tasks of one run (attempt) need besides their chains.
pub struct RunSetup {
    /// The run's cancellation flag (the same one its tasks were built with).
    pub cancel: CancelFlag,
    /// State to restore and services every task gets.
    pub init: TaskInit,
    /// How tasks with several inputs handle barriers.
    pub alignment: AlignmentMode,
    /// Where snapshots are written.
    pub store: Arc<dyn CheckpointStore>,
    /// Where tasks and uploaders report to the checkpoint coordinator.
    pub events: Sender<CoordinatorEvent>,
    /// The job's queryable state, when it is enabled.
    pub queryable: Option<Arc<QueryableStateRegistry>>,
}

/// This TaskManager's tasks of one run.
pub struct HostedRun {
    /// How each task ended, one report per task.
    pub reports: Receiver<TaskReport>,
    /// Per task: its index, where its commands go, whether it is a source
    /// (the checkpoint coordinator triggers sources).
    pub commands: Vec<(usize, Sender<TaskCommand>, bool)>,
    threads: Vec<JoinHandle<()>>,
    uploaders: Vec<JoinHandle<()>>,
}

impl HostedRun {
    /// Number of tasks.
    pub fn task_count(&self) -> usize {
        self.commands.len()
    }

    /// Waits for every task thread (after each reported its end).
    pub fn join_tasks(&mut self) {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }

    /// Waits for the snapshot uploads the tasks handed over: they are
    /// written and acknowledged before this returns. Call after
    /// [`HostedRun::join_tasks`] (the tasks hold the uploaders' queue).
    pub fn join_uploaders(&mut self) {
        for u in std::mem::take(&mut self.uploaders) {
            let _ = u.join();
        }
    }
}

/// A task that could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start a thread for task {task}: {source}")]
pub struct SpawnError {
    /// The task's name.
    pub task: String,
    /// The operating system's reason.
    #[source]
    pub source: std::io::Error,
}

/// How a task ended, as reported to the JobManager.
#[derive(Debug)]
pub struct TaskReport {
    /// The task's index in its job's deployment.
    pub task: usize,
    /// The task's display name.
    pub name: String,
    /// Success, failure or cancellation.
    pub result: Result<(), TaskError>,
}

/// Runs tasks on threads, one thread per task.
pub struct TaskManager {
    reports: Sender<TaskReport>,
}

impl TaskManager {
    /// Starts `tasks` (built with `setup.cancel`), each on its own thread,
    /// with snapshot uploaders for them. If a thread cannot be started,
    /// the tasks already started are cancelled and joined.
    pub fn start_run(tasks: Vec<BuiltTask>, setup: RunSetup) -> Result<HostedRun, SpawnError> {
        let (tx, reports) = crossbeam_channel::unbounded();
        let tm = TaskManager { reports: tx };
        let (snap_tx, snap_rx) = crossbeam_channel::unbounded();
        let mut commands = Vec::with_capacity(tasks.len());
        let mut started = Vec::with_capacity(tasks.len());
        for task in tasks {
            let mut env = TaskEnvironment::new(setup.cancel.clone(), task.index);
            env.init = setup.init.clone();
            env.times = Some(task.times.clone());
            // Each task asks for its own wake-ups.
            env.init.time = setup.init.time.for_task();
            if let Some(registry) = setup.queryable.as_ref().filter(|r| r.is_enabled()) {
                let (inbox, queries) = crossbeam_channel::unbounded();
                env.queries = Some(queries);
                env.init.queryable = Some(QueryableTaskHandle {
                    registry: registry.clone(),
                    inbox,
                });
            }
            env.snapshots = Some(snap_tx.clone());
            env.coordinator = Some(setup.events.clone());
            env.alignment = setup.alignment;
            let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
            env.commands = Some(cmd_rx);
            commands.push((task.index, cmd_tx, task.is_source));
            started.push((task, env));
        }
        drop(snap_tx);
        let uploaders =
            SnapshotUploader::start(UPLOADER_THREADS, snap_rx, setup.store, setup.events);
        let mut threads = Vec::with_capacity(started.len());
        for (task, env) in started {
            match tm.spawn(task.index, task.name.clone(), task.driver, env) {
                Ok(t) => threads.push(t),
                Err(source) => {
                    setup.cancel.cancel();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(SpawnError {
                        task: task.name,
                        source,
                    });
                }
            }
        }
        Ok(HostedRun {
            reports,
            commands,
            threads,
            uploaders,
        })
    }

    /// Starts a task on its own thread.
    fn spawn(
        &self,
        task: usize,
        name: String,
        driver: Box<dyn TaskDriver>,
        env: TaskEnvironment,
    ) -> std::io::Result<JoinHandle<()>> {
        let reports = self.reports.clone();
        // Thread names are limited in length by the OS; keep the end, which
        // carries the subtask index.
        let thread_name: String = {
            let chars: Vec<char> = name.chars().collect();
            chars[chars.len().saturating_sub(60)..].iter().collect()
        };
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                tracing::debug!(task = %name, "task started");
                if let Some(times) = &env.times {
                    times.set_running(true);
                }
                crate::metrics::bind_task_times(env.times.clone());
                let result = match catch_unwind(AssertUnwindSafe(|| driver.run(&env))) {
                    Ok(r) => r,
                    // Drivers attribute panics to operators; this is a last resort
                    // for a panic inside the runtime itself.
                    Err(p) => Err(TaskError::Operator(Box::new(
                        crate::error::OperatorFailure {
                            operator: name.clone(),
                            uid: String::new(),
                            subtask: 0,
                            parallelism: 1,
                            cause: crate::error::FailureCause::Panic(panic_message(p.as_ref())),
                        },
                    ))),
                };
                tracing::debug!(task = %name, ok = result.is_ok(), "task ended");
                if let Some(times) = &env.times {
                    times.set_running(false);
                }
                crate::metrics::bind_task_times(None);
                let _ = reports.send(TaskReport { task, name, result });
            })
    }
}
