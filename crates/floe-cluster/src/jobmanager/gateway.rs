//! How the job deployment layer talks to one TaskManager: deploy, cancel,
//! commands and release, each stamped with the JobManager's session and the
//! job's attempt.

use std::sync::Arc;

use bytes::Bytes;
use tonic::Request;

use crate::error::RpcError;
use crate::ids::{JobAttempt, TaskManagerId};
use crate::jobmanager::state::{JobManagerState, TaskManagerConnection};
use crate::proto;
use crate::wire;

/// One registered TaskManager, as the job deployment layer addresses it.
/// Calls go to the registration current when the gateway was made; after
/// the TaskManager is lost they fail with [`RpcError::NotConnected`] or
/// the TaskManager's refusal.
#[derive(Clone)]
pub struct TaskManagerGateway {
    id: TaskManagerId,
    state: Arc<JobManagerState>,
    connection: TaskManagerConnection,
}

impl TaskManagerGateway {
    pub(crate) fn new(state: Arc<JobManagerState>, id: TaskManagerId) -> Option<Self> {
        let connection = state.connection(&id)?;
        Some(TaskManagerGateway {
            id,
            state,
            connection,
        })
    }

    /// The TaskManager.
    pub fn id(&self) -> &TaskManagerId {
        &self.id
    }

    fn session(&self) -> String {
        self.state.session.as_str().to_string()
    }

    fn peer(&self) -> String {
        format!("TaskManager {} at {}", self.id, self.connection.rpc_address)
    }

    fn check_current(&self) -> Result<(), RpcError> {
        let registry = self.state.registry.lock().expect("registry lock");
        if registry.is_current(&self.id, &self.connection.registration) {
            Ok(())
        } else {
            Err(RpcError::NotConnected(format!(
                "TaskManager {} is no longer registered (registration {})",
                self.id, self.connection.registration
            )))
        }
    }

    /// Deploys (part of) `job` on the TaskManager.
    pub async fn deploy(&self, job: JobAttempt, payload: Bytes) -> Result<(), RpcError> {
        self.check_current()?;
        let request = proto::DeployRequest {
            jobmanager_session_id: self.session(),
            job: Some(wire::to_proto(job)),
            payload,
        };
        let mut client = self.connection.client.clone();
        client
            .deploy(Request::new(request))
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&self.peer(), s))
    }

    /// Cancels `job`'s attempt on the TaskManager.
    pub async fn cancel_job(&self, job: JobAttempt) -> Result<(), RpcError> {
        self.check_current()?;
        let request = proto::CancelJobRequest {
            jobmanager_session_id: self.session(),
            job: Some(wire::to_proto(job)),
        };
        let mut client = self.connection.client.clone();
        client
            .cancel_job(Request::new(request))
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&self.peer(), s))
    }

    /// Sends a command to the tasks of `job`'s current attempt.
    pub async fn send_command(&self, job: JobAttempt, payload: Bytes) -> Result<(), RpcError> {
        self.check_current()?;
        let request = proto::TaskCommandRequest {
            jobmanager_session_id: self.session(),
            job: Some(wire::to_proto(job)),
            payload,
        };
        let mut client = self.connection.client.clone();
        client
            .send_task_command(Request::new(request))
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&self.peer(), s))
    }

    /// Asks the TaskManager about the keyed state of `job`'s tasks there;
    /// returns its answer.
    pub async fn query_state(&self, job: JobAttempt, payload: Bytes) -> Result<Bytes, RpcError> {
        self.check_current()?;
        let request = proto::TaskCommandRequest {
            jobmanager_session_id: self.session(),
            job: Some(wire::to_proto(job)),
            payload,
        };
        let mut client = self.connection.client.clone();
        client
            .query_state(Request::new(request))
            .await
            .map(|r| r.into_inner().payload)
            .map_err(|s| RpcError::from_status(&self.peer(), s))
    }

    /// Tells the TaskManager that `job`'s attempt is over there.
    pub async fn release_job(&self, job: JobAttempt) -> Result<(), RpcError> {
        self.check_current()?;
        let request = proto::ReleaseJobRequest {
            jobmanager_session_id: self.session(),
            job: Some(wire::to_proto(job)),
        };
        let mut client = self.connection.client.clone();
        client
            .release_job(Request::new(request))
            .await
            .map(|_| ())
            .map_err(|s| RpcError::from_status(&self.peer(), s))
    }
}
