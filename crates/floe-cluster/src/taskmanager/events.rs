//! How tasks on a TaskManager report to the JobManager: acknowledgements,
//! declines, finished and failed, as opaque payloads stamped with this
//! TaskManager's id, its JobManager session and the job's attempt.

use std::sync::Arc;

use bytes::Bytes;
use tonic::transport::Channel;

use crate::error::RpcError;
use crate::ids::JobAttempt;
use crate::proto;
use crate::proto::job_manager_client::JobManagerClient;
use crate::taskmanager::state::TaskManagerState;
use crate::wire;

/// Sends task events to the JobManager this TaskManager is registered with
/// (cheap to clone; one per task thread is fine).
#[derive(Clone)]
pub struct TaskEventSender {
    state: Arc<TaskManagerState>,
    client: JobManagerClient<Channel>,
    jobmanager: String,
    runtime: tokio::runtime::Handle,
}

impl TaskEventSender {
    pub(crate) fn new(
        state: Arc<TaskManagerState>,
        client: JobManagerClient<Channel>,
        jobmanager: String,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        TaskEventSender {
            state,
            client,
            jobmanager,
            runtime,
        }
    }

    /// Reports an event of `job`'s attempt. Fails with
    /// [`RpcError::NotConnected`] while not registered, and with the
    /// JobManager's refusal (`FailedPrecondition`) for a stale attempt.
    pub async fn report(&self, job: JobAttempt, payload: Bytes) -> Result<(), RpcError> {
        let session = self.state.session.current().ok_or_else(|| {
            RpcError::NotConnected(format!(
                "TaskManager {} is not registered with a JobManager",
                self.state.id
            ))
        })?;
        let request = proto::TaskEventRequest {
            taskmanager_id: self.state.id.as_str().to_string(),
            jobmanager_session_id: session.as_str().to_string(),
            job: Some(wire::to_proto(job)),
            payload,
        };
        let mut client = self.client.clone();
        client
            .report_task_event(request)
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&format!("JobManager at {}", self.jobmanager), s))
    }

    /// [`TaskEventSender::report`] from a plain (task) thread. Panics when
    /// called from inside an async context, such as a handler method.
    pub fn report_blocking(&self, job: JobAttempt, payload: Bytes) -> Result<(), RpcError> {
        self.runtime.block_on(self.report(job, payload))
    }
}
