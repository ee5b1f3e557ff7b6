//! What the JobManager's service, heartbeat monitor, REST routes and
//! gateways share: its session, the registry, the attempt fence, the
//! clients to each TaskManager, and the handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tonic::transport::Channel;

use crate::config::HeartbeatConfig;
use crate::fence::AttemptFence;
use crate::handler::JobMasterHandler;
use crate::ids::{RegistrationId, SessionId, TaskManagerId};
use crate::proto::task_manager_client::TaskManagerClient;
use crate::registry::TaskManagerRegistry;

/// A client to one registration of a TaskManager.
#[derive(Clone)]
pub(crate) struct TaskManagerConnection {
    pub(crate) registration: RegistrationId,
    pub(crate) rpc_address: String,
    pub(crate) client: TaskManagerClient<Channel>,
}

/// The JobManager's shared state.
pub(crate) struct JobManagerState {
    pub(crate) session: SessionId,
    pub(crate) started_at: SystemTime,
    pub(crate) heartbeat: HeartbeatConfig,
    pub(crate) registry: Mutex<TaskManagerRegistry>,
    pub(crate) fence: AttemptFence,
    pub(crate) connections: Mutex<HashMap<TaskManagerId, TaskManagerConnection>>,
    pub(crate) handler: Arc<dyn JobMasterHandler>,
}

impl JobManagerState {
    /// Drops `id`'s `registration` (if still current) and tells the handler.
    pub(crate) fn declare_lost(
        &self,
        id: &TaskManagerId,
        registration: &RegistrationId,
        reason: &str,
    ) {
        let removed = self
            .registry
            .lock()
            .expect("registry lock")
            .remove(id, registration);
        if removed.is_some() {
            {
                let mut connections = self.connections.lock().expect("connections lock");
                if connections
                    .get(id)
                    .is_some_and(|c| &c.registration == registration)
                {
                    connections.remove(id);
                }
            }
            tracing::info!(taskmanager = %id, "TaskManager lost: {reason}");
            self.handler.taskmanager_lost(id, reason);
        }
    }

    /// The client to `id`'s current registration.
    pub(crate) fn connection(&self, id: &TaskManagerId) -> Option<TaskManagerConnection> {
        self.connections
            .lock()
            .expect("connections lock")
            .get(id)
            .cloned()
    }
}
