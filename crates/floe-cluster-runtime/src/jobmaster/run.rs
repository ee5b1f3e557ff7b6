//! One run (attempt) of a job on the cluster, as the JobManager sees it:
//! which TaskManager runs which task, the reports and checkpoint events
//! that come back, and what a lost TaskManager means for them.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use floe_cluster::TaskManagerId;
use floe_runtime::checkpoint::CoordinatorEvent;
use floe_runtime::deployment::TaskSummary;
use floe_runtime::error::{FailureCause, OperatorFailure, TaskError};
use floe_runtime::gateway::TaskManagerEvent;
use floe_runtime::metrics::{JobMetrics, SubtaskCounters};
use floe_runtime::task_manager::TaskReport;

/// The routing state of one run.
pub(crate) struct RunState {
    /// The run's attempt.
    pub attempt: u64,
    /// Its TaskManagers, in the order the deployment lists them.
    pub taskmanagers: Vec<TaskManagerId>,
    /// Per task (by index): its TaskManager's position in `taskmanagers`.
    pub task_peer: Vec<u32>,
    /// Per task: name, subtask, whether a source.
    pub tasks: Vec<TaskSummary>,
    /// Where the JobClient reads task reports.
    pub reports: Sender<TaskReport>,
    /// Where the checkpoint coordinator reads acks.
    pub events: Sender<CoordinatorEvent>,
    /// The job's metrics, which the TaskManagers' reports add to.
    metrics: Arc<JobMetrics>,
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// What has come back so far.
struct Progress {
    /// Per task: reported (each task is reported exactly once).
    reported: Vec<bool>,
    /// Per TaskManager: its share of the run is over (it said so, or it
    /// was lost).
    ended: Vec<bool>,
    /// Per TaskManager: the counters of its last metrics report.
    counters: Vec<Vec<SubtaskCounters>>,
}

impl RunState {
    pub fn new(
        attempt: u64,
        taskmanagers: Vec<TaskManagerId>,
        task_peer: Vec<u32>,
        tasks: Vec<TaskSummary>,
        reports: Sender<TaskReport>,
        events: Sender<CoordinatorEvent>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        let progress = Progress {
            reported: vec![false; task_peer.len()],
            ended: vec![false; taskmanagers.len()],
            counters: vec![Vec::new(); taskmanagers.len()],
        };
        RunState {
            attempt,
            taskmanagers,
            task_peer,
            tasks,
            reports,
            events,
            metrics,
            progress: Mutex::new(progress),
            changed: Condvar::new(),
        }
    }

    fn peer(&self, id: &TaskManagerId) -> Option<usize> {
        self.taskmanagers.iter().position(|t| t == id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes an event a TaskManager of the run sent.
    pub fn on_event(&self, from: &TaskManagerId, event: TaskManagerEvent) {
        let Some(peer) = self.peer(from) else {
            tracing::warn!(taskmanager = %from, "an event from a TaskManager not in the run is ignored");
            return;
        };
        match event {
            TaskManagerEvent::TaskEnded(outcome) => {
                let task = outcome.task as usize;
                if self.task_peer.get(task) != Some(&(peer as u32)) {
                    tracing::warn!(taskmanager = %from, task, "a report for a task the TaskManager does not run is ignored");
                    return;
                }
                let mut p = self.lock();
                if !std::mem::replace(&mut p.reported[task], true) {
                    let _ = self.reports.send(outcome.into_report(from.as_str()));
                }
            }
            TaskManagerEvent::RunEnded => {
                self.lock().ended[peer] = true;
                self.changed.notify_all();
            }
            TaskManagerEvent::Metrics(counters) => {
                let mut p = self.lock();
                let before = std::mem::replace(&mut p.counters[peer], counters);
                self.metrics.absorb(&before, &p.counters[peer]);
            }
            other => {
                if let Some(e) = other.into_coordinator_event(from.as_str()) {
                    let _ = self.events.send(e);
                }
            }
        }
    }

    /// A TaskManager of the run is gone: each of its tasks that has not
    /// reported fails (once), and its share of the run is over.
    pub fn on_taskmanager_lost(&self, id: &TaskManagerId, reason: &str) {
        let Some(peer) = self.peer(id) else { return };
        let mut p = self.lock();
        for (task, &on) in self.task_peer.iter().enumerate() {
            if on as usize == peer && !std::mem::replace(&mut p.reported[task], true) {
                let t = &self.tasks[task];
                let _ = self.reports.send(TaskReport {
                    task,
                    name: t.name.clone(),
                    result: Err(TaskError::Operator(Box::new(OperatorFailure {
                        operator: t.name.clone(),
                        uid: String::new(),
                        subtask: t.subtask,
                        parallelism: t.parallelism,
                        cause: FailureCause::Error(anyhow::anyhow!(
                            "TaskManager {id} was lost: {reason}"
                        )),
                    }))),
                });
            }
        }
        p.ended[peer] = true;
        // Its tasks no longer run (what they counted stays counted).
        let last = std::mem::take(&mut p.counters[peer]);
        let stopped: Vec<SubtaskCounters> = last
            .iter()
            .map(|c| SubtaskCounters {
                running: false,
                ..*c
            })
            .collect();
        self.metrics.absorb(&last, &stopped);
        drop(p);
        self.changed.notify_all();
    }

    /// Waits until every TaskManager's share of the run is over, at most
    /// `limit`; returns the TaskManagers still running.
    pub fn wait_ended(&self, limit: Duration) -> Vec<TaskManagerId> {
        let deadline = Instant::now() + limit;
        let mut p = self.lock();
        loop {
            let open: Vec<TaskManagerId> = p
                .ended
                .iter()
                .enumerate()
                .filter(|(_, e)| !**e)
                .map(|(i, _)| self.taskmanagers[i].clone())
                .collect();
            let now = Instant::now();
            if open.is_empty() || now >= deadline {
                return open;
            }
            p = self
                .changed
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_runtime::gateway::{TaskOutcome, TaskResult};

    fn run() -> (
        RunState,
        crossbeam_channel::Receiver<TaskReport>,
        crossbeam_channel::Receiver<CoordinatorEvent>,
    ) {
        let (rtx, rrx) = crossbeam_channel::unbounded();
        let (etx, erx) = crossbeam_channel::unbounded();
        let state = RunState::new(
            3,
            vec![TaskManagerId::new("a"), TaskManagerId::new("b")],
            vec![0, 1, 0],
            (0..3)
                .map(|i| TaskSummary {
                    name: format!("t{i}"),
                    subtask: i,
                    parallelism: 3,
                    is_source: false,
                })
                .collect(),
            rtx,
            etx,
            JobMetrics::new(&[3], &[vec![0]]),
        );
        (state, rrx, erx)
    }

    #[test]
    fn each_task_is_reported_once_even_when_its_taskmanager_is_lost_later() {
        let (state, reports, _) = run();
        let a = TaskManagerId::new("a");
        state.on_event(
            &a,
            TaskManagerEvent::TaskEnded(TaskOutcome {
                task: 0,
                name: "t0".into(),
                result: TaskResult::Finished,
            }),
        );
        state.on_taskmanager_lost(&a, "heartbeat timeout");
        let got: Vec<TaskReport> = reports.try_iter().collect();
        assert_eq!(
            got.len(),
            2,
            "task 0 finished, task 2 failed; task 1 is elsewhere"
        );
        assert!(got[0].result.is_ok());
        let Err(TaskError::Operator(f)) = &got[1].result else {
            panic!("a failure")
        };
        assert_eq!(got[1].task, 2);
        assert!(
            f.to_string()
                .contains("TaskManager a was lost: heartbeat timeout"),
            "{f}"
        );
        // A late report of the lost TaskManager's task changes nothing.
        state.on_event(
            &a,
            TaskManagerEvent::TaskEnded(TaskOutcome {
                task: 2,
                name: "t2".into(),
                result: TaskResult::Cancelled,
            }),
        );
        assert!(reports.try_recv().is_err());
        assert_eq!(state.wait_ended(Duration::ZERO), [TaskManagerId::new("b")]);
    }

    #[test]
    fn reports_from_the_wrong_taskmanager_and_strangers_are_ignored() {
        let (state, reports, events) = run();
        state.on_event(
            &TaskManagerId::new("b"),
            TaskManagerEvent::TaskEnded(TaskOutcome {
                task: 0,
                name: "t0".into(),
                result: TaskResult::Finished,
            }),
        );
        state.on_event(&TaskManagerId::new("c"), TaskManagerEvent::TaskFinished(1));
        assert!(reports.try_recv().is_err());
        assert!(events.try_recv().is_err());
        state.on_event(&TaskManagerId::new("b"), TaskManagerEvent::TaskFinished(1));
        assert!(matches!(
            events.try_recv(),
            Ok(CoordinatorEvent::TaskFinished(1))
        ));
    }
}
