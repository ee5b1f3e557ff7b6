//! Floe jobs on a cluster (issue 21): the layer between the control plane
//! (`floe-cluster`: processes, heartbeats, fenced RPCs carrying opaque
//! payloads) and the runtime (`floe-runtime`: tasks, checkpoints, the
//! payloads in `gateway.rs`).
//!
//! On the JobManager, the [`jobmaster`] builds a submitted job's graph,
//! supervises it with the same `JobClient` an embedded job has, and starts
//! each run on the TaskManagers' slots. On each TaskManager, the
//! [`taskexecutor`] builds the same graph, checks it plans the same, and
//! runs the tasks placed on it, their channels to other TaskManagers on the
//! data plane (`floe-network`).
//!
//! | module | what |
//! | --- | --- |
//! | [`registry`] | the jobs a binary can run, by name |
//! | [`endpoint`] | a TaskManager's data endpoint, `host:port@<id>` |
//! | [`jobmaster`] | the JobManager's job side: submission, deployment, routing |
//! | [`taskexecutor`] | a TaskManager's job side: building and running its share of a run |

#![warn(missing_docs)]

pub mod endpoint;
pub mod jobmaster;
pub mod registry;
pub mod taskexecutor;

pub use endpoint::DataEndpoint;
pub use jobmaster::{ClusterJobMaster, SlotWait, SubmitError};
pub use registry::{BuildError, JobFunction, JobRegistry};
pub use taskexecutor::ClusterTaskExecutor;
