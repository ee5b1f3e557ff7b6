//! Floe's REST API: every running job serves its status, checkpoint
//! statistics, savepoints, stop and cancel over HTTP/JSON, shaped after
//! Apache Flink's REST API, and records itself in a per-host job registry so
//! that the `floe` CLI finds it by job id.
//!
//! Why a server per job: an embedded job is its own JobManager, so each
//! job serves its own endpoint (on any free port by default, so that
//! several jobs on one host never clash) and the [`registry`] maps job ids
//! to endpoints. A cluster's JobManager serves the jobs of a
//! [`JobDirectory`] behind one endpoint instead ([`jobs_router`]); the
//! routes are the same, the lists then hold every job.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /jobs` | `{"jobs": [{"id", "status"}]}`, every listed job |
//! | `GET /jobs/overview` | name, state, start/end time, duration of every listed job |
//! | `GET /jobs/{id}` | details and vertices (uid, name, parallelism, max parallelism) |
//! | `GET /jobs/{id}/checkpoints` | counts, latest, summary, history (newest first) |
//! | `POST /jobs/{id}/savepoints` | `{"target-directory", "cancel-job"}` → 202 `{"request-id"}` |
//! | `GET /jobs/{id}/savepoints/{triggerid}` | `IN_PROGRESS`, or `COMPLETED` with a location or a failure cause |
//! | `POST /jobs/{id}/stop` | `{"targetDirectory", "drain"}` → 202 `{"request-id"}` |
//! | `PATCH /jobs/{id}?mode=cancel` | cancel → 202 `{}` |
//! | `GET /jobs/{id}/exceptions` | the exception history of failures and restarts, newest first |
//! | `GET /jobs/{id}/config`, `/jobs/{id}/jobmanager/config` | the configuration in effect (secrets masked) |
//! | `GET /metrics` | every job's metrics (not archived ones) and the process's, Prometheus text |
//! | `GET /` | the web dashboard (`dashboard`: page, script and styles embedded in the binary) |
//!
//! Every route is also served under Flink's version prefix `/v1`. Errors are
//! `{"errors": ["…"]}` with 400 (bad body or parameter, naming it), 401
//! (a token is required, see [`RestAuth`]), 404 (unknown job, trigger id or
//! route), 405, 409 (the job's state forbids the request) or 413 (a body
//! over 64 KiB). The endpoint serves at most 64 connections at once and
//! closes a connection idle for a minute (docs/security.md).

#![warn(missing_docs)]

mod auth;
mod dashboard;
mod directory;
mod error;
mod job_handle;
mod metrics;
pub mod registry;
mod routes;
mod server;

use floe_runtime::JobControl;

pub use auth::RestAuth;
pub use directory::{DEFAULT_HISTORY, DirectoryError, JobDirectory};
pub use error::RestError;
pub use metrics::{HostedJobMetrics, HostedSubtask};
pub use registry::{Registration, RegistryEntry};
pub use routes::{HostedMetricsSource, UnfetchedResults};
pub use server::RestServer;

/// The job routes (every route of the table above, also under `/v1`, and
/// the dashboard) over `directory`'s jobs, for a process that serves other
/// routes beside them: a cluster's JobManager merges its own (`/overview`,
/// `/taskmanagers`; routes without a fallback of their own: this router
/// answers unknown paths with Flink's 404) and serves the result with
/// [`RestServer::start_jobs_app`], handing it the [`UnfetchedResults`] so
/// that the server lingers for savepoint results nobody fetched yet.
///
/// `auth` guards these routes only: a router merged in afterwards keeps
/// its own guards.
pub fn jobs_router(directory: JobDirectory, auth: RestAuth) -> (axum::Router, UnfetchedResults) {
    routes::router(directory.0, auth)
}

/// A TaskManager's Prometheus endpoint (`GET /metrics` only): the operator
/// subtasks `source` lists when scraped, and the process's CPU time,
/// memory and threads, each series labelled `tm_id` (set once the
/// TaskManager registered: the port is bound before, so a port taken
/// fails the process before it offers slots). Serve it with
/// [`RestServer::start_app_on_first`] on `metrics.reporter.prom.port`.
pub fn taskmanager_metrics_router(
    tm_id: std::sync::Arc<std::sync::OnceLock<String>>,
    source: HostedMetricsSource,
) -> axum::Router {
    routes::taskmanager_prometheus_router(tm_id, source)
}

/// Starts the job's REST endpoint on `address:port` and registers it in the
/// job registry, logging and printing (to stderr, one line)
/// `REST endpoint: http://<addr>` so a user sees where it listens.
///
/// Keep both values for the job's lifetime. Drop the [`Registration`] first
/// and then the [`RestServer`], so that the CLI never finds an entry whose
/// endpoint is gone.
pub fn serve_job(
    control: JobControl,
    address: &str,
    port: u16,
    auth: RestAuth,
) -> Result<(RestServer, Registration), RestError> {
    let job_id = control.job_id();
    let name = control.job_name().to_string();
    let server = RestServer::start(control, address, port, auth)?;
    let addr = server.local_addr();
    let registration = registry::register(job_id, &name, addr)?;
    tracing::info!(job = %job_id, "REST endpoint: http://{addr}");
    eprintln!("REST endpoint: http://{addr}");
    Ok((server, registration))
}

#[cfg(test)]
mod route_tests;
