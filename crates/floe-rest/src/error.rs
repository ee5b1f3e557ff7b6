//! The crate's error type: every way starting the endpoint or using the job
//! registry can fail, each naming what was being done, to what, and why.

use std::path::PathBuf;

/// Why the REST endpoint could not start, or why the job registry could not
/// be written, read or searched.
///
/// Typed (rather than `anyhow`) so that a caller can tell a taken port from a
/// missing job, and so that every message carries the address, path or id
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The listening socket could not be bound (address in use, no such
    /// interface, permission denied, unresolvable host name).
    #[error("cannot start the REST endpoint on {address}: {source}")]
    Bind {
        /// The requested `address:port`.
        address: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server's own runtime or thread could not be created.
    #[error("cannot start the REST server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A file or directory of the job registry could not be created, written,
    /// read or removed.
    #[error("job registry {}: {source}", path.display())]
    Registry {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The registry directory belongs to another user, so its entries cannot
    /// be trusted (anyone could point the CLI at their own server).
    #[error(
        "job registry {} belongs to user {owner}, not to you (user {me}); set FLOE_REGISTRY_DIR to a directory of your own",
        dir.display()
    )]
    RegistryNotOwned {
        /// The registry directory.
        dir: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's uid.
        me: u32,
    },
    /// No running job on this host has this id (or an id starting with it).
    #[error(
        "no running job with id {job_id} on this host (job registry {}); `floe list` shows the running jobs, and -m/--jobmanager host:port addresses a job directly",
        dir.display()
    )]
    UnknownJob {
        /// The id or prefix asked for.
        job_id: String,
        /// The registry directory that was searched.
        dir: PathBuf,
    },
    /// The prefix matches more than one running job.
    #[error("job id prefix {prefix} is ambiguous: it matches {}", matches.join(", "))]
    AmbiguousJobId {
        /// The prefix asked for.
        prefix: String,
        /// The full ids it matches.
        matches: Vec<String>,
    },
}
