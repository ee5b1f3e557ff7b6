//! The JobManager's heartbeats: one task per TaskManager registration sends
//! the JobManager's heartbeat every `heartbeat.interval` and records the
//! answer; one failure detector declares TaskManagers lost (see
//! [`crate::heartbeat`] for when).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use crate::ids::{RegistrationId, TaskManagerId};
use crate::jobmanager::state::JobManagerState;
use crate::proto;
use crate::rpc::is_connection_refused;

/// Heartbeats `id`'s `registration` until it is no longer current.
pub(crate) fn spawn_heartbeat_sender(
    state: Arc<JobManagerState>,
    id: TaskManagerId,
    registration: RegistrationId,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(state.heartbeat.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(conn) = state.connection(&id) else {
                return;
            };
            if conn.registration != registration {
                return;
            }
            let mut client = conn.client;
            let request = proto::JobManagerHeartbeat {
                jobmanager_session_id: state.session.as_str().to_string(),
                registration_id: registration.as_str().to_string(),
            };
            // A reply slower than the interval is not waited for: the next
            // heartbeat is due.
            let reply =
                tokio::time::timeout(state.heartbeat.interval, client.heartbeat(request)).await;
            let mut registry = state.registry.lock().expect("registry lock");
            match reply {
                Ok(Ok(_)) => {
                    registry.contact(&id, &registration, Instant::now());
                }
                Ok(Err(status)) if is_connection_refused(&status) => {
                    registry.refused(&id, &registration);
                }
                Ok(Err(status)) => {
                    tracing::debug!(taskmanager = %id, %status, "heartbeat failed");
                }
                Err(_) => tracing::debug!(taskmanager = %id, "heartbeat unanswered"),
            }
        }
    });
}

/// Checks for lost TaskManagers twice per heartbeat interval (at most every
/// 100 ms), forever.
pub(crate) fn spawn_failure_detector(state: Arc<JobManagerState>) {
    tokio::spawn(async move {
        let period = (state.heartbeat.interval / 2)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let lost = state
                .registry
                .lock()
                .expect("registry lock")
                .lost(Instant::now(), &state.heartbeat);
            for (id, registration, reason) in lost {
                state.declare_lost(&id, &registration, &reason);
            }
        }
    });
}
