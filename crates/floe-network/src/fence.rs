//! Attempt fencing: which job attempts this TaskManager still serves.
//!
//! After a failure the JobManager restarts a job as a new attempt; frames
//! and credits of the old attempt may still be in flight on connections
//! that survived. Every message names its attempt, and this table decides
//! whether it is current, so an old attempt can never feed a new one.

use std::collections::HashMap;
use std::sync::Mutex;

use floe_core::JobId;

use crate::error::NetworkError;

#[derive(Debug, Clone, Copy)]
struct Fence {
    /// The newest attempt registered here.
    newest: u64,
    /// Attempts up to this one were released.
    released_through: Option<u64>,
}

/// Per job, the newest attempt registered and the newest released.
#[derive(Debug, Default)]
pub(crate) struct Fences(Mutex<HashMap<JobId, Fence>>);

/// What admitting a registration changed.
pub(crate) enum Admission {
    /// The attempt is the newest already.
    Current,
    /// The attempt is newer than any before: older ones must be released.
    Newer,
}

impl Fences {
    /// Admits a local registration for `attempt`, refusing stale and
    /// released attempts.
    pub(crate) fn admit(&self, job: JobId, attempt: u64) -> Result<Admission, NetworkError> {
        let mut map = self.0.lock().expect("fence lock");
        let fence = map.entry(job).or_insert(Fence {
            newest: attempt,
            released_through: None,
        });
        if fence.released_through.is_some_and(|r| attempt <= r) {
            return Err(NetworkError::Released { job, attempt });
        }
        if attempt < fence.newest {
            return Err(NetworkError::StaleAttempt {
                job,
                requested: attempt,
                newest: fence.newest,
            });
        }
        if attempt > fence.newest {
            fence.newest = attempt;
            return Ok(Admission::Newer);
        }
        Ok(Admission::Current)
    }

    /// True if messages of `attempt` may still be acted on: not older than
    /// the newest registered here (a peer may be ahead) and not released.
    pub(crate) fn is_live(&self, job: JobId, attempt: u64) -> bool {
        match self.0.lock().expect("fence lock").get(&job) {
            None => true,
            Some(f) => attempt >= f.newest && f.released_through.is_none_or(|r| attempt > r),
        }
    }

    /// Marks `attempt` and every older one released.
    pub(crate) fn release(&self, job: JobId, attempt: u64) {
        let mut map = self.0.lock().expect("fence lock");
        let fence = map.entry(job).or_insert(Fence {
            newest: attempt,
            released_through: None,
        });
        fence.released_through = Some(fence.released_through.map_or(attempt, |r| r.max(attempt)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_released_attempts_are_refused() {
        let f = Fences::default();
        let job = JobId::from_u128(7);
        assert!(matches!(f.admit(job, 2), Ok(Admission::Current)));
        assert!(matches!(f.admit(job, 3), Ok(Admission::Newer)));
        let e = f.admit(job, 2).err().expect("stale");
        assert!(e.to_string().contains("attempt 2") && e.to_string().contains("attempt 3"));
        assert!(!f.is_live(job, 2));
        assert!(f.is_live(job, 3) && f.is_live(job, 4));
        f.release(job, 3);
        assert!(!f.is_live(job, 3));
        assert!(matches!(
            f.admit(job, 3),
            Err(NetworkError::Released { .. })
        ));
        assert!(f.is_live(JobId::from_u128(8), 0));
    }
}
