//! The identities the control plane fences and reports on: which
//! TaskManager, which registration of it, which JobManager process
//! (session), and which attempt of a job.

use std::fmt;

use floe_core::JobId;

/// A TaskManager for its process's lifetime, as Flink's `ResourceID`:
/// `<host>:<rpc port>-<6 hex digits>`, readable in logs and unique even when
/// a restarted process gets the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskManagerId(String);

impl TaskManagerId {
    /// A fresh id for a TaskManager whose RPC endpoint is `rpc_address`.
    pub fn generate(rpc_address: &str) -> Self {
        TaskManagerId(format!(
            "{rpc_address}-{:06x}",
            rand::random::<u32>() & 0xff_ffff
        ))
    }

    /// An id received over the wire or given by a caller.
    pub fn new(id: impl Into<String>) -> Self {
        TaskManagerId(id.into())
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskManagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One JobManager process: a new session each time a JobManager starts, so
/// a TaskManager can tell a restarted JobManager (which knows nothing of
/// its jobs) from the one it registered with, and refuse the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random session (128 bits, 32 hex digits).
    pub fn random() -> Self {
        SessionId(format!("{:032x}", rand::random::<u128>()))
    }

    /// A session received over the wire.
    pub fn new(id: impl Into<String>) -> Self {
        SessionId(id.into())
    }

    /// The session's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One registration of a TaskManager with a JobManager: heartbeats name it,
/// so heartbeats of a registration the JobManager has dropped (it declared
/// the TaskManager lost) are told apart from those of the current one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistrationId(String);

impl RegistrationId {
    /// A fresh random registration id.
    pub fn random() -> Self {
        RegistrationId(format!("{:032x}", rand::random::<u128>()))
    }

    /// A registration id received over the wire.
    pub fn new(id: impl Into<String>) -> Self {
        RegistrationId(id.into())
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The generation of a job: it grows each time the job is (re)started, and
/// every job-scoped message carries it so that messages of an attempt that
/// has been superseded are refused (the fencing rules are in the `fence`
/// module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt(pub u64);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A job and one of its attempts: what every job-scoped message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobAttempt {
    /// The job.
    pub job: JobId,
    /// Its attempt.
    pub attempt: Attempt,
}

impl fmt::Display for JobAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} attempt {}", self.job, self.attempt)
    }
}
