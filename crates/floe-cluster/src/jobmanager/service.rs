//! The JobManager's gRPC service: registrations, the TaskManagers' half of
//! the heartbeats, and fenced task events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use crate::handler::TaskManagerInfo;
use crate::ids::{RegistrationId, SessionId, TaskManagerId};
use crate::jobmanager::monitor::spawn_heartbeat_sender;
use crate::jobmanager::state::{JobManagerState, TaskManagerConnection};
use crate::proto;
use crate::proto::task_manager_client::TaskManagerClient;
use crate::rpc;
use crate::wire;

/// Serves [`proto::job_manager_server::JobManager`].
pub(crate) struct JobManagerService {
    pub(crate) state: Arc<JobManagerState>,
}

#[tonic::async_trait]
impl proto::job_manager_server::JobManager for JobManagerService {
    async fn register_task_manager(
        &self,
        request: Request<proto::RegisterTaskManagerRequest>,
    ) -> Result<Response<proto::RegisterTaskManagerReply>, Status> {
        let r = request.into_inner();
        if r.taskmanager_id.is_empty() {
            return Err(Status::invalid_argument("taskmanager_id is empty"));
        }
        if r.slots == 0 {
            return Err(Status::invalid_argument(
                "a TaskManager needs at least 1 slot",
            ));
        }
        if rpc::split_host_port(&r.rpc_address).is_none() {
            return Err(Status::invalid_argument(format!(
                "rpc_address {:?} is not host:port",
                r.rpc_address
            )));
        }
        let info = TaskManagerInfo {
            id: TaskManagerId::new(r.taskmanager_id),
            registration: RegistrationId::random(),
            rpc_address: r.rpc_address,
            data_address: r.data_address,
            slots: r.slots,
            hardware: wire::hardware(r.hardware),
        };
        let channel = rpc::channel(
            &info.rpc_address,
            self.state
                .heartbeat
                .interval
                .max(Duration::from_millis(100)),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let replaced = {
            // Connection first: the heartbeat sender looks it up.
            self.state
                .connections
                .lock()
                .expect("connections lock")
                .insert(
                    info.id.clone(),
                    TaskManagerConnection {
                        registration: info.registration.clone(),
                        rpc_address: info.rpc_address.clone(),
                        client: TaskManagerClient::new(channel),
                    },
                );
            self.state
                .registry
                .lock()
                .expect("registry lock")
                .register(info.clone(), Instant::now())
        };
        if replaced.is_some() {
            // The TaskManager dropped its old registration (and cancelled
            // its jobs) before registering again.
            self.state.handler.taskmanager_lost(
                &info.id,
                "the TaskManager registered again, replacing its previous registration",
            );
        }
        tracing::info!(taskmanager = %info.id, rpc = %info.rpc_address, slots = info.slots, "TaskManager registered");
        self.state.handler.taskmanager_registered(&info);
        spawn_heartbeat_sender(
            self.state.clone(),
            info.id.clone(),
            info.registration.clone(),
        );
        Ok(Response::new(proto::RegisterTaskManagerReply {
            jobmanager_session_id: self.state.session.as_str().to_string(),
            registration_id: info.registration.as_str().to_string(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::TaskManagerHeartbeat>,
    ) -> Result<Response<proto::TaskManagerHeartbeatReply>, Status> {
        let r = request.into_inner();
        let registered = SessionId::new(r.jobmanager_session_id) == self.state.session
            && self.state.registry.lock().expect("registry lock").contact(
                &TaskManagerId::new(r.taskmanager_id),
                &RegistrationId::new(r.registration_id),
                Instant::now(),
            );
        Ok(Response::new(proto::TaskManagerHeartbeatReply {
            jobmanager_session_id: self.state.session.as_str().to_string(),
            registered,
        }))
    }

    async fn report_task_event(
        &self,
        request: Request<proto::TaskEventRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let r = request.into_inner();
        let session = SessionId::new(r.jobmanager_session_id);
        if session != self.state.session {
            return Err(Status::failed_precondition(format!(
                "task event for JobManager session {session}, but this JobManager's session is {}",
                self.state.session
            )));
        }
        let from = TaskManagerId::new(r.taskmanager_id);
        if self
            .state
            .registry
            .lock()
            .expect("registry lock")
            .get(&from)
            .is_none()
        {
            return Err(Status::failed_precondition(format!(
                "TaskManager {from} is not registered with this JobManager"
            )));
        }
        let job = wire::job_attempt(r.job)?;
        self.state.fence.check(job)?;
        self.state.handler.task_event(&from, job, r.payload);
        Ok(Response::new(proto::Empty {}))
    }
}
