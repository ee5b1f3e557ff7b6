//! What the control plane hands to the layers above it: the job deployment
//! layer implements [`JobMasterHandler`] on the JobManager and
//! [`TaskExecutorHandler`] on each TaskManager. Payloads are opaque bytes
//! whose format is that layer's; the control plane only fences and carries
//! them.
//!
//! Handlers are called on the control plane's runtime threads: they must
//! return quickly (hand work to a thread or channel) and must not call the
//! `*_blocking` methods of this crate.

use bytes::Bytes;

use crate::ids::{JobAttempt, RegistrationId, TaskManagerId};

/// What a TaskManager says about its machine when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// CPU cores the process may use.
    pub cpu_cores: u32,
    /// The machine's physical memory in bytes.
    pub physical_memory_bytes: u64,
}

/// A TaskManager as registered with the JobManager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskManagerInfo {
    /// Its id (stable for its process's lifetime).
    pub id: TaskManagerId,
    /// This registration.
    pub registration: RegistrationId,
    /// `host:port` of its RPC endpoint.
    pub rpc_address: String,
    /// `host:port` of its data plane.
    pub data_address: String,
    /// The slots it offers.
    pub slots: u32,
    /// Its machine, if it said.
    pub hardware: Option<Hardware>,
}

/// Jobs by state, for the JobManager's `GET /overview`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Running (or restarting) jobs.
    pub running: u32,
    /// Jobs that finished.
    pub finished: u32,
    /// Jobs that were cancelled.
    pub cancelled: u32,
    /// Jobs that failed.
    pub failed: u32,
}

/// The JobManager's job side, told about membership and task events.
pub trait JobMasterHandler: Send + Sync + 'static {
    /// A TaskManager registered (a new registration: also after it was lost
    /// or after it re-registered on its own).
    fn taskmanager_registered(&self, info: &TaskManagerInfo);
    /// A TaskManager is gone: heartbeat timeout, its endpoint refusing
    /// connections, or a new registration replacing this one (`reason` says
    /// which). It has been dropped from the registry; its slots are gone.
    fn taskmanager_lost(&self, id: &TaskManagerId, reason: &str);
    /// A task event from a TaskManager, already fenced: the attempt is the
    /// job's current one (see [`crate::fence`]).
    fn task_event(&self, from: &TaskManagerId, job: JobAttempt, payload: Bytes);
    /// The jobs by state, for the REST overview.
    fn job_counts(&self) -> JobCounts;
}

/// A TaskManager's task side, told what the JobManager asks.
pub trait TaskExecutorHandler: Send + Sync + 'static {
    /// Deploys (part of) `job`'s attempt; an `Err` is returned to the
    /// JobManager as an `Aborted` status with the message.
    fn deploy(&self, job: JobAttempt, payload: Bytes) -> Result<(), String>;
    /// Cancels the tasks of `job`'s attempt: asked by the JobManager, when a
    /// newer attempt supersedes it, or when the JobManager is lost.
    fn cancel(&self, job: JobAttempt);
    /// A command for the tasks of `job`'s current attempt (trigger a
    /// checkpoint, notify one complete, ...); an `Err` becomes `Aborted`.
    fn command(&self, job: JobAttempt, payload: Bytes) -> Result<(), String>;
    /// The attempt is over here: free what it holds.
    fn release(&self, job: JobAttempt);
    /// A question about the keyed state of `job`'s tasks here (queryable
    /// state); the answer goes to `answer` once a task gave it, possibly
    /// from another thread. An `Err` becomes `Aborted`.
    fn query(
        &self,
        job: JobAttempt,
        payload: Bytes,
        answer: tokio::sync::oneshot::Sender<Bytes>,
    ) -> Result<(), String> {
        let _ = (job, payload, answer);
        Err("this TaskManager serves no queryable state".into())
    }
}
