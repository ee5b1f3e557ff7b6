//! A TaskManager's connection to its JobManager: register (retrying with
//! backoff until `taskmanager.registration.timeout`), heartbeat, and on
//! losing the JobManager cancel every attempt and register again — with
//! whichever JobManager session answers. Gives up only when a registration
//! round times out.

use std::sync::Arc;
use std::time::Instant;

use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

use crate::config::TaskManagerConfig;
use crate::error::ClusterError;
use crate::handler::Hardware;
use crate::heartbeat::Liveness;
use crate::ids::{RegistrationId, SessionId};
use crate::proto;
use crate::proto::job_manager_client::JobManagerClient;
use crate::rpc::is_connection_refused;
use crate::taskmanager::state::TaskManagerState;
use crate::wire;

/// A successful registration, as told to the role's observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The TaskManager.
    pub taskmanager: crate::ids::TaskManagerId,
    /// The JobManager's RPC address as configured.
    pub jobmanager: String,
    /// The JobManager session registered with.
    pub session: SessionId,
    /// The registration.
    pub registration: RegistrationId,
}

/// What the loop needs besides the shared state.
pub(crate) struct Connection {
    pub(crate) state: Arc<TaskManagerState>,
    pub(crate) client: JobManagerClient<Channel>,
    pub(crate) jobmanager: String,
    pub(crate) rpc_address: String,
    pub(crate) data_address: String,
    pub(crate) hardware: Option<Hardware>,
    pub(crate) config: TaskManagerConfig,
    pub(crate) on_registered: Arc<dyn Fn(&Registered) + Send + Sync>,
}

impl Connection {
    /// Registers, heartbeats, re-registers after a loss; returns only the
    /// error that made it give up.
    pub(crate) async fn run(mut self) -> ClusterError {
        loop {
            let (session, registration) = match self.register().await {
                Ok(r) => r,
                Err(e) => return e,
            };
            *self.state.jobmanager.lock().expect("liveness lock") = Liveness::new(Instant::now());
            *self.state.registration.lock().expect("registration lock") =
                Some(registration.clone());
            self.state.session.enter(session.clone());
            tracing::info!(jobmanager = %self.jobmanager, %session, "registered");
            (self.on_registered)(&Registered {
                taskmanager: self.state.id.clone(),
                jobmanager: self.jobmanager.clone(),
                session: session.clone(),
                registration: registration.clone(),
            });
            let reason = self.heartbeat_until_lost(&session, &registration).await;
            tracing::warn!(jobmanager = %self.jobmanager, "JobManager lost: {reason}; cancelling this TaskManager's jobs and registering again");
            self.state.jobmanager_lost();
        }
    }

    /// One registration round: attempts with doubling timeouts and waits
    /// until one succeeds or `taskmanager.registration.timeout` passes.
    async fn register(&mut self) -> Result<(SessionId, RegistrationId), ClusterError> {
        let settings = self.config.registration;
        let deadline = Instant::now() + settings.timeout;
        let mut backoff = settings.initial_backoff;
        let mut last_error: Option<String> = None;
        loop {
            let request = proto::RegisterTaskManagerRequest {
                taskmanager_id: self.state.id.as_str().to_string(),
                rpc_address: self.rpc_address.clone(),
                data_address: self.data_address.clone(),
                slots: self.config.slots,
                hardware: self.hardware.map(wire::hardware_to_proto),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = backoff.min(left);
            let attempt =
                tokio::time::timeout(budget, self.client.register_task_manager(request)).await;
            let cut_short = attempt.is_err() && budget < backoff;
            let error = match attempt {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    return Ok((
                        SessionId::new(reply.jobmanager_session_id),
                        RegistrationId::new(reply.registration_id),
                    ));
                }
                Ok(Err(status)) if is_connection_refused(&status) => {
                    "connection refused".to_string()
                }
                Ok(Err(status)) => status.message().to_string(),
                Err(_) => format!("no answer within {} ms", budget.as_millis()),
            };
            tracing::debug!(jobmanager = %self.jobmanager, %error, "registration attempt failed");
            // An attempt cut short by the deadline says nothing about the
            // JobManager; keep the reason a full attempt gave (a refused
            // connection, a wrong address) for the operator.
            if !cut_short || last_error.is_none() {
                last_error = Some(error);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClusterError::RegistrationTimeout {
                    jobmanager: self.jobmanager.clone(),
                    timeout: settings.timeout,
                    last_error: last_error.unwrap_or_default(),
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = settings.next_backoff(backoff);
        }
    }

    /// Heartbeats the JobManager until it is lost; returns why.
    async fn heartbeat_until_lost(
        &mut self,
        session: &SessionId,
        registration: &RegistrationId,
    ) -> String {
        let heartbeat = self.config.heartbeat;
        let mut ticks = tokio::time::interval(heartbeat.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let request = proto::TaskManagerHeartbeat {
                taskmanager_id: self.state.id.as_str().to_string(),
                registration_id: registration.as_str().to_string(),
                jobmanager_session_id: session.as_str().to_string(),
            };
            match tokio::time::timeout(heartbeat.interval, self.client.heartbeat(request)).await {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    if reply.jobmanager_session_id != session.as_str() {
                        return format!(
                            "the JobManager restarted: session {} replaced {session}",
                            reply.jobmanager_session_id
                        );
                    }
                    if !reply.registered {
                        return "the JobManager no longer knows this registration (it declared this TaskManager lost)".to_string();
                    }
                    self.state.jobmanager_contact();
                }
                Ok(Err(status)) if is_connection_refused(&status) => {
                    self.state
                        .jobmanager
                        .lock()
                        .expect("liveness lock")
                        .refused();
                }
                Ok(Err(status)) => {
                    tracing::debug!(%status, "heartbeat to the JobManager failed");
                }
                Err(_) => tracing::debug!("heartbeat to the JobManager unanswered"),
            }
            let verdict = self
                .state
                .jobmanager
                .lock()
                .expect("liveness lock")
                .verdict(
                    Instant::now(),
                    heartbeat.timeout,
                    heartbeat.rpc_failure_threshold,
                );
            if let Some(reason) = verdict.reason() {
                return reason;
            }
        }
    }
}
