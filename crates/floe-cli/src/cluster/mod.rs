//! The cluster's process roles in the `floe` binary: `floe jobmanager`,
//! `floe taskmanager` (thin wrappers around floe-cluster's roles), and
//! `floe cluster start/stop`, which run a local cluster as detached
//! processes like Flink's `start-cluster.sh`.

pub mod local;
pub mod roles;
mod settings;
