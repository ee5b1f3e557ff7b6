//! Capturing a job instead of running it, for cluster mode.
//!
//! A Floe job is a Rust function that builds a graph of closures and calls
//! `execute`; closures cannot be shipped to another process. So every
//! process of a cluster runs the same job function with the same arguments
//! and takes the graph it builds: inside [`capture_job`], `execute` and
//! `execute_async` hand their graph over and return
//! [`JobError::PlanCaptured`] instead of running it (as Flink's client
//! takes a program's plan by running its `main` up to `execute`). A job
//! function that returns the error from `execute` with `?`, as every
//! example does, stops there.

use std::cell::RefCell;

use floe_core::JobId;
use floe_runtime::JobError;
use floe_runtime::graph::JobGraph;
use floe_runtime::job_manager::ExecutionSettings;

/// A job's graph as its function built it, not run.
pub struct CapturedJob {
    /// The name given to `execute`.
    pub job_name: String,
    /// The logical graph.
    pub graph: JobGraph,
    /// The execution settings the job's configuration and code resolved to.
    pub settings: ExecutionSettings,
}

/// Why a job function yielded no graph.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The function returned without calling `execute`.
    #[error("the job did not call execute")]
    NoExecute,
    /// The function failed before `execute` (bad arguments, say).
    #[error(transparent)]
    Job(anyhow::Error),
}

/// A capture in progress on this thread.
struct Capture {
    /// The id the job gets (its checkpoints are stored under it, so every
    /// process of a cluster must build the job with the same one).
    job_id: JobId,
    /// Where `execute` puts the graph.
    captured: Option<CapturedJob>,
}

thread_local! {
    /// `Some` while [`capture_job`] runs on this thread.
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// Runs `job` on this thread and returns the graph its `execute` built for
/// a job with id `job_id`, without running it.
pub fn capture_job(
    job_id: JobId,
    job: impl FnOnce() -> anyhow::Result<()>,
) -> Result<CapturedJob, CaptureError> {
    let outer = CAPTURE.with(|c| {
        c.borrow_mut().replace(Capture {
            job_id,
            captured: None,
        })
    });
    let result = job();
    let capture = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    match (capture.and_then(|c| c.captured), result) {
        (Some(job), _) => Ok(job),
        (None, Ok(())) => Err(CaptureError::NoExecute),
        (None, Err(e)) => Err(CaptureError::Job(e)),
    }
}

/// The job id a capture in progress on this thread gives the job.
pub(crate) fn captured_job_id() -> Option<JobId> {
    CAPTURE.with(|c| c.borrow().as_ref().map(|c| c.job_id))
}

/// Inside [`capture_job`]: keeps the graph and returns the error that
/// stops the job function. Outside: gives the graph back to be run.
pub(crate) fn offer(
    job_name: &str,
    graph: JobGraph,
    settings: ExecutionSettings,
) -> Result<(JobGraph, ExecutionSettings), JobError> {
    CAPTURE.with(|c| match &mut *c.borrow_mut() {
        Some(capture) => {
            capture.captured = Some(CapturedJob {
                job_name: job_name.to_string(),
                graph,
                settings,
            });
            Err(JobError::PlanCaptured)
        }
        None => Ok((graph, settings)),
    })
}
