//! Floe's cluster control plane (the control-plane part of issue 21): the
//! JobManager and TaskManager process roles, how TaskManagers register and
//! how each side notices the other's loss, and the fenced, job-scoped RPCs
//! through which a job deployment layer deploys, cancels and commands tasks
//! and receives their events.
//!
//! Why a crate of its own: the control plane is the only part of Floe that
//! speaks gRPC (tonic), owns a long-running async runtime per process, and
//! knows about other processes; the runtime and the data plane
//! (`floe-network`) should not depend on any of it. Payloads stay opaque
//! bytes here so the job deployment layer defines its own messages without
//! changing this crate.
//!
//! | module | what |
//! | --- | --- |
//! | [`proto`] | the generated messages and services (`proto/floe_cluster.proto`) |
//! | [`ids`] | TaskManager, session, registration and attempt identities |
//! | [`config`] | the cluster's keys (Flink's names and defaults), per-role settings |
//! | [`fence`] | attempt and session fencing, and its rules |
//! | [`heartbeat`] | when a heartbeat target is lost |
//! | [`registry`] | the JobManager's TaskManagers: addresses, slots, last heartbeat |
//! | [`handler`] | the traits the job deployment layer implements |
//! | [`jobmanager`] | the JobManager role: service, heartbeat monitor, REST, gateways |
//! | [`taskmanager`] | the TaskManager role: service, registration and heartbeat loop |
//! | [`error`] | typed errors |
//!
//! Starting a role from code: [`JobManagerRole::start`] and
//! [`TaskManagerRole::start`]; the `floe jobmanager` and `floe taskmanager`
//! commands are thin wrappers around them. docs/cluster.md describes the
//! ports, keys, heartbeats and fencing.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod fence;
pub mod handler;
pub mod heartbeat;
pub mod ids;
pub mod jobmanager;
pub mod proto;
pub mod registry;
mod rpc;
pub mod taskmanager;
mod wire;

pub use config::{ClusterConfigError, HeartbeatConfig, JobManagerConfig, TaskManagerConfig};
pub use error::{ClusterError, RpcError};
pub use fence::{AttemptFence, FenceError, SessionError, SessionFence};
pub use handler::{Hardware, JobCounts, JobMasterHandler, TaskExecutorHandler, TaskManagerInfo};
pub use ids::{Attempt, JobAttempt, RegistrationId, SessionId, TaskManagerId};
pub use jobmanager::{JobManagerHandle, JobManagerOptions, JobManagerRole, TaskManagerGateway};
pub use registry::{RegisteredTaskManager, SlotError, TaskManagerRegistry};
pub use taskmanager::{Registered, TaskEventSender, TaskManagerOptions, TaskManagerRole};
