//! What a TaskManager's service, its connection loop and its event sender
//! share: who it is, the session and registration it obeys, the attempt
//! fence, the attempts deployed here, and when the JobManager was last
//! heard from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floe_core::JobId;

use crate::fence::{AttemptFence, SessionFence};
use crate::handler::TaskExecutorHandler;
use crate::heartbeat::Liveness;
use crate::ids::{Attempt, JobAttempt, RegistrationId, TaskManagerId};

/// A TaskManager's shared state.
pub(crate) struct TaskManagerState {
    pub(crate) id: TaskManagerId,
    pub(crate) session: SessionFence,
    pub(crate) registration: Mutex<Option<RegistrationId>>,
    pub(crate) fence: AttemptFence,
    /// Attempts deployed and neither cancelled nor released.
    pub(crate) deployed: Mutex<HashMap<JobId, Attempt>>,
    pub(crate) jobmanager: Mutex<Liveness>,
    pub(crate) handler: Arc<dyn TaskExecutorHandler>,
}

impl TaskManagerState {
    /// The JobManager was heard from.
    pub(crate) fn jobmanager_contact(&self) {
        self.jobmanager
            .lock()
            .expect("liveness lock")
            .contact(Instant::now());
    }

    /// Records `job` as deployed; cancels an older attempt it supersedes.
    pub(crate) fn deployed(&self, job: JobAttempt) {
        let superseded = {
            let mut deployed = self.deployed.lock().expect("deployed lock");
            match deployed.insert(job.job, job.attempt) {
                Some(old) if old < job.attempt => Some(old),
                _ => None,
            }
        };
        if let Some(old) = superseded {
            self.handler.cancel(JobAttempt {
                job: job.job,
                attempt: old,
            });
        }
    }

    /// Forgets `job`'s deployed attempt (any at or below `job.attempt`);
    /// returns the attempt that was deployed.
    pub(crate) fn undeployed(&self, job: JobAttempt) -> Option<Attempt> {
        let mut deployed = self.deployed.lock().expect("deployed lock");
        match deployed.get(&job.job) {
            Some(&a) if a <= job.attempt => deployed.remove(&job.job),
            _ => None,
        }
    }

    /// The JobManager is gone: obey no session any more and cancel every
    /// attempt deployed here.
    pub(crate) fn jobmanager_lost(&self) {
        self.session.leave();
        *self.registration.lock().expect("registration lock") = None;
        let cancelled: Vec<(JobId, Attempt)> = self
            .deployed
            .lock()
            .expect("deployed lock")
            .drain()
            .collect();
        for (job, attempt) in cancelled {
            self.handler.cancel(JobAttempt { job, attempt });
        }
    }
}
