//! Fencing: who may still speak for a job, and for which JobManager.
//!
//! The rules (both sides, docs/cluster.md):
//!
//! 1. **Attempts only grow.** Each side keeps, per job, the current attempt
//!    in an [`AttemptFence`]. A message for an older attempt is *stale* and
//!    refused with `FAILED_PRECONDITION` naming both attempts.
//! 2. **Starting an attempt moves the fence** ([`AttemptFence::advance`]):
//!    on the TaskManager a `Deploy` or `CancelJob` for a newer attempt
//!    supersedes the current one; on the JobManager the job deployment layer
//!    advances the fence when it starts an attempt. Repeating the current
//!    attempt is allowed (an attempt is deployed in several calls).
//! 3. **Everything else must name the current attempt**
//!    ([`AttemptFence::check`]): task commands on the TaskManager, task
//!    events on the JobManager. A newer attempt than the current one is
//!    refused too (it was never deployed here), as is an unknown job.
//! 4. **Sessions.** A TaskManager takes job-scoped messages and heartbeats
//!    only from the JobManager session it registered with
//!    ([`SessionFence`]); a JobManager takes task events only from
//!    TaskManagers registered in its own session. A restarted JobManager is
//!    a new session, so a TaskManager never obeys a JobManager that no
//!    longer holds its registration.
//!
//! The fence keeps every job it has seen (one `u64` each) so that a late
//! message of a released job is still recognised as stale.

use std::collections::HashMap;
use std::sync::Mutex;

use floe_core::JobId;

use crate::ids::{Attempt, JobAttempt, SessionId};

/// Why a job-scoped message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The message is for an attempt that has been superseded.
    #[error("stale attempt {received} of job {job}: the current attempt is {current}")]
    Stale {
        /// The job.
        job: JobId,
        /// The attempt this side is at.
        current: Attempt,
        /// The attempt the message named.
        received: Attempt,
    },
    /// The message is for an attempt newer than the one this side is at.
    #[error("attempt {received} of job {job} is not known here: the current attempt is {current}")]
    Ahead {
        /// The job.
        job: JobId,
        /// The attempt this side is at.
        current: Attempt,
        /// The attempt the message named.
        received: Attempt,
    },
    /// No attempt of the job is known here.
    #[error("job {job} (attempt {received}) is not known here")]
    UnknownJob {
        /// The job.
        job: JobId,
        /// The attempt the message named.
        received: Attempt,
    },
}

impl From<FenceError> for tonic::Status {
    fn from(e: FenceError) -> Self {
        tonic::Status::failed_precondition(e.to_string())
    }
}

/// Per job, the current attempt (see the module docs for the rules).
#[derive(Debug, Default)]
pub struct AttemptFence {
    current: Mutex<HashMap<JobId, Attempt>>,
}

impl AttemptFence {
    /// An empty fence: no job known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `to` if it is the current attempt or a newer one, and makes
    /// it current; refuses an older one ([`FenceError::Stale`]).
    pub fn advance(&self, to: JobAttempt) -> Result<(), FenceError> {
        let mut current = self.current.lock().expect("fence lock");
        match current.get(&to.job) {
            Some(&now) if to.attempt < now => Err(FenceError::Stale {
                job: to.job,
                current: now,
                received: to.attempt,
            }),
            _ => {
                current.insert(to.job, to.attempt);
                Ok(())
            }
        }
    }

    /// Accepts only the current attempt of a known job.
    pub fn check(&self, message: JobAttempt) -> Result<(), FenceError> {
        let current = self.current.lock().expect("fence lock");
        match current.get(&message.job) {
            None => Err(FenceError::UnknownJob {
                job: message.job,
                received: message.attempt,
            }),
            Some(&now) if message.attempt < now => Err(FenceError::Stale {
                job: message.job,
                current: now,
                received: message.attempt,
            }),
            Some(&now) if message.attempt > now => Err(FenceError::Ahead {
                job: message.job,
                current: now,
                received: message.attempt,
            }),
            Some(_) => Ok(()),
        }
    }

    /// The current attempt of `job`, if any is known.
    pub fn current(&self, job: JobId) -> Option<Attempt> {
        self.current.lock().expect("fence lock").get(&job).copied()
    }
}

/// Why a message from a JobManager is refused by a TaskManager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The TaskManager is registered with another JobManager session.
    #[error(
        "message from JobManager session {received}, but this TaskManager is registered with session {expected}"
    )]
    Mismatch {
        /// The session the TaskManager registered with.
        expected: SessionId,
        /// The session the message named.
        received: SessionId,
    },
    /// The TaskManager is not registered with any JobManager right now.
    #[error("message from JobManager session {received}, but this TaskManager is not registered")]
    NotRegistered {
        /// The session the message named.
        received: SessionId,
    },
}

impl From<SessionError> for tonic::Status {
    fn from(e: SessionError) -> Self {
        tonic::Status::failed_precondition(e.to_string())
    }
}

/// The JobManager session a TaskManager currently obeys (none while it is
/// not registered).
#[derive(Debug, Default)]
pub struct SessionFence {
    current: Mutex<Option<SessionId>>,
}

impl SessionFence {
    /// A fence that obeys no session yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on obey `session` (a successful registration).
    pub fn enter(&self, session: SessionId) {
        *self.current.lock().expect("session lock") = Some(session);
    }

    /// Obey no session (the JobManager was lost).
    pub fn leave(&self) {
        *self.current.lock().expect("session lock") = None;
    }

    /// The session obeyed now.
    pub fn current(&self) -> Option<SessionId> {
        self.current.lock().expect("session lock").clone()
    }

    /// Accepts a message of `received` only if it is the session obeyed.
    pub fn check(&self, received: &SessionId) -> Result<(), SessionError> {
        match &*self.current.lock().expect("session lock") {
            Some(s) if s == received => Ok(()),
            Some(s) => Err(SessionError::Mismatch {
                expected: s.clone(),
                received: received.clone(),
            }),
            None => Err(SessionError::NotRegistered {
                received: received.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(job: u128, attempt: u64) -> JobAttempt {
        JobAttempt {
            job: JobId::from_u128(job),
            attempt: Attempt(attempt),
        }
    }

    #[test]
    fn attempts_only_grow_and_checks_need_the_current_one() {
        let fence = AttemptFence::new();
        assert!(matches!(
            fence.check(at(1, 0)),
            Err(FenceError::UnknownJob { .. })
        ));
        fence.advance(at(1, 2)).unwrap();
        fence.advance(at(1, 2)).unwrap();
        fence.check(at(1, 2)).unwrap();
        let stale = fence.advance(at(1, 1)).unwrap_err();
        assert_eq!(
            stale.to_string(),
            format!(
                "stale attempt 1 of job {}: the current attempt is 2",
                JobId::from_u128(1)
            )
        );
        assert!(matches!(
            fence.check(at(1, 1)),
            Err(FenceError::Stale { .. })
        ));
        assert!(matches!(
            fence.check(at(1, 3)),
            Err(FenceError::Ahead { .. })
        ));
        fence.advance(at(1, 3)).unwrap();
        assert_eq!(fence.current(JobId::from_u128(1)), Some(Attempt(3)));
        // Jobs are fenced independently.
        fence.advance(at(2, 0)).unwrap();
        assert_eq!(
            tonic::Status::from(fence.check(at(1, 2)).unwrap_err()).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn a_session_fence_obeys_one_session() {
        let fence = SessionFence::new();
        let a = SessionId::new("a");
        assert!(matches!(
            fence.check(&a),
            Err(SessionError::NotRegistered { .. })
        ));
        fence.enter(a.clone());
        fence.check(&a).unwrap();
        let err = fence.check(&SessionId::new("b")).unwrap_err();
        assert!(err.to_string().contains("session b"), "{err}");
        assert!(err.to_string().contains("session a"), "{err}");
        fence.leave();
        assert!(fence.check(&a).is_err());
    }
}
