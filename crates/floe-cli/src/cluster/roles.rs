//! `floe jobmanager` and `floe taskmanager`: start a role, print where it
//! is, serve until SIGTERM or SIGINT. Jobs cannot be deployed yet (issue
//! 21's job deployment comes next), so the handlers here only report
//! membership and refuse deployments.

use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use floe_cluster::{
    JobAttempt, JobCounts, JobManagerOptions, JobManagerRole, JobMasterHandler, Registered,
    TaskExecutorHandler, TaskManagerId, TaskManagerInfo, TaskManagerOptions, TaskManagerRole,
};

use crate::cluster::settings::{Termination, load};

/// The JobManager's job side until job deployment exists: reports
/// membership on stderr, runs no jobs.
struct MembershipReporter;

impl JobMasterHandler for MembershipReporter {
    fn taskmanager_registered(&self, info: &TaskManagerInfo) {
        eprintln!(
            "TaskManager {} registered from {} ({} slots)",
            info.id, info.rpc_address, info.slots
        );
    }
    fn taskmanager_lost(&self, id: &TaskManagerId, reason: &str) {
        eprintln!("TaskManager {id} lost: {reason}");
    }
    fn task_event(&self, from: &TaskManagerId, job: JobAttempt, _payload: Bytes) {
        tracing::warn!(taskmanager = %from, "task event for {job} ignored: no job runs here");
    }
    fn job_counts(&self) -> JobCounts {
        JobCounts::default()
    }
}

/// A TaskManager's task side until job deployment exists: refuses work.
struct NoJobs;

const NO_DEPLOYMENT: &str =
    "this TaskManager cannot run jobs yet (job deployment to a cluster is not part of this build)";

impl TaskExecutorHandler for NoJobs {
    fn deploy(&self, _job: JobAttempt, _payload: Bytes) -> Result<(), String> {
        Err(NO_DEPLOYMENT.into())
    }
    fn cancel(&self, _job: JobAttempt) {}
    fn command(&self, _job: JobAttempt, _payload: Bytes) -> Result<(), String> {
        Err(NO_DEPLOYMENT.into())
    }
    fn release(&self, _job: JobAttempt) {}
}

/// `floe jobmanager`.
pub fn jobmanager(
    rpc_address: Option<String>,
    config: Option<&str>,
    dynamic: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load(config, dynamic)?;
    floe::init_logging();
    let mut termination = Termination::install()?;
    let role = JobManagerRole::start(
        &config,
        JobManagerOptions {
            rpc_address,
            serve_rest: true,
            job_routes: None,
        },
        Arc::new(MembershipReporter),
    )?;
    eprintln!("JobManager RPC: {}", role.rpc_address());
    if let Some(rest) = role.rest_address() {
        eprintln!("REST endpoint: http://{rest}");
    }
    let _ = termination.wait(std::future::pending::<()>());
    eprintln!("JobManager stopping");
    drop(role);
    Ok(ExitCode::SUCCESS)
}

/// `floe taskmanager`.
pub fn taskmanager(
    jobmanager: String,
    bind: Option<String>,
    slots: Option<u32>,
    config: Option<&str>,
    dynamic: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load(config, dynamic)?;
    floe::init_logging();
    let mut termination = Termination::install()?;
    let mut options = TaskManagerOptions::new(jobmanager);
    options.bind = bind;
    options.slots = slots;
    options.on_registered = Some(Arc::new(|r: &Registered| {
        eprintln!(
            "TaskManager {} registered with {}",
            r.taskmanager, r.jobmanager
        );
    }));
    let mut role = TaskManagerRole::start(&config, options, Arc::new(NoJobs))?;
    let id = role.id().clone();
    match termination.wait(role.failed()) {
        Ok(()) => {
            eprintln!("TaskManager {id} stopping");
            drop(role);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow::anyhow!("TaskManager {id}: {e}")),
    }
}
