//! A TaskManager's gRPC service: the JobManager's half of the heartbeats,
//! and deploy, cancel, commands and release, each checked against the
//! session fence and the attempt fence (rules in [`crate::fence`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::ids::{RegistrationId, SessionId};
use crate::proto;
use crate::taskmanager::state::TaskManagerState;
use crate::wire;

/// Serves [`proto::task_manager_server::TaskManager`].
pub(crate) struct TaskManagerService {
    pub(crate) state: Arc<TaskManagerState>,
}

impl TaskManagerService {
    fn check_session(&self, session: String) -> Result<(), Status> {
        Ok(self.state.session.check(&SessionId::new(session))?)
    }
}

#[tonic::async_trait]
impl proto::task_manager_server::TaskManager for TaskManagerService {
    async fn heartbeat(
        &self,
        request: Request<proto::JobManagerHeartbeat>,
    ) -> Result<Response<proto::JobManagerHeartbeatReply>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let received = RegistrationId::new(r.registration_id);
        let current = self
            .state
            .registration
            .lock()
            .expect("registration lock")
            .clone();
        if current.as_ref() != Some(&received) {
            return Err(Status::failed_precondition(format!(
                "heartbeat for registration {received}, but this TaskManager's registration is {}",
                current.map_or("none".to_string(), |c| c.to_string())
            )));
        }
        self.state.jobmanager_contact();
        Ok(Response::new(proto::JobManagerHeartbeatReply {
            taskmanager_id: self.state.id.as_str().to_string(),
        }))
    }

    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let job = wire::job_attempt(r.job)?;
        self.state.fence.advance(job)?;
        self.state.deployed(job);
        self.state
            .handler
            .deploy(job, r.payload)
            .map_err(|e| Status::aborted(format!("deploying {job} failed: {e}")))?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn cancel_job(
        &self,
        request: Request<proto::CancelJobRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let job = wire::job_attempt(r.job)?;
        self.state.fence.advance(job)?;
        if let Some(attempt) = self.state.undeployed(job) {
            self.state.handler.cancel(crate::ids::JobAttempt {
                job: job.job,
                attempt,
            });
        }
        Ok(Response::new(proto::Empty {}))
    }

    async fn send_task_command(
        &self,
        request: Request<proto::TaskCommandRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let job = wire::job_attempt(r.job)?;
        self.state.fence.check(job)?;
        self.state
            .handler
            .command(job, r.payload)
            .map_err(|e| Status::aborted(format!("command for {job} failed: {e}")))?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn query_state(
        &self,
        request: Request<proto::TaskCommandRequest>,
    ) -> Result<Response<proto::QueryStateReply>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let job = wire::job_attempt(r.job)?;
        self.state.fence.check(job)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.state
            .handler
            .query(job, r.payload, tx)
            .map_err(|e| Status::aborted(format!("query of {job} failed: {e}")))?;
        let payload = rx
            .await
            .map_err(|_| Status::aborted(format!("the query of {job} was dropped unanswered")))?;
        Ok(Response::new(proto::QueryStateReply { payload }))
    }

    async fn release_job(
        &self,
        request: Request<proto::ReleaseJobRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let r = request.into_inner();
        self.check_session(r.jobmanager_session_id)?;
        let job = wire::job_attempt(r.job)?;
        self.state.fence.check(job)?;
        self.state.undeployed(job);
        self.state.handler.release(job);
        Ok(Response::new(proto::Empty {}))
    }
}
