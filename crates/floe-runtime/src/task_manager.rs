//! The TaskManager role: runs deployed tasks and reports how each ended.
//!
//! In the embedded runtime it shares the process with the JobManager; the
//! boundary between them is a deployment call and a report channel, which a
//! multi-process cluster will carry over the network.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::checkpoint::TaskEnvironment;
use crate::context::panic_message;
use crate::error::TaskError;
use crate::task::TaskDriver;

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
    /// A TaskManager that reports to `reports`.
    pub fn new(reports: Sender<TaskReport>) -> Self {
        TaskManager { reports }
    }

    /// Starts a task on its own thread.
    pub fn deploy(
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
