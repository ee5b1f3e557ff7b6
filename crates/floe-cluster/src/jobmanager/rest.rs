//! The JobManager's REST routes, Flink's shapes: `GET /overview`,
//! `GET /taskmanagers`, `GET /taskmanagers/{id}` (also under `/v1`),
//! served by floe-rest's server (connection limits, idle timeouts,
//! graceful shutdown).
//!
//! As in Flink, a TaskManager's `timeSinceLastHeartbeat` is the time of its
//! last heartbeat in milliseconds since the epoch, despite the name.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::ids::TaskManagerId;
use crate::jobmanager::state::JobManagerState;
use crate::registry::RegisteredTaskManager;
use crate::rpc::split_host_port;

/// The routes over the JobManager's state, with the job deployment
/// layer's `jobs` routes (which then answer what no route matches).
pub(crate) fn router(state: Arc<JobManagerState>, jobs: Option<Router>) -> Router {
    let routes = Router::new()
        .route("/overview", get(overview))
        .route("/taskmanagers", get(taskmanagers))
        .route("/taskmanagers/{id}", get(taskmanager));
    let cluster = Router::new()
        .nest("/v1", routes.clone())
        .merge(routes)
        .with_state(state);
    match jobs {
        Some(jobs) => cluster.merge(jobs),
        None => cluster
            .fallback(|| async { not_found("not found: see /overview and /taskmanagers".into()) }),
    }
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "errors": [message] }))).into_response()
}

async fn overview(State(state): State<Arc<JobManagerState>>) -> Json<Value> {
    let (taskmanagers, (total, free)) = {
        let registry = state.registry.lock().expect("registry lock");
        (registry.len(), registry.slots())
    };
    let jobs = state.handler.job_counts();
    Json(json!({
        "taskmanagers": taskmanagers,
        "slots-total": total,
        "slots-available": free,
        "jobs-running": jobs.running,
        "jobs-finished": jobs.finished,
        "jobs-cancelled": jobs.cancelled,
        "jobs-failed": jobs.failed,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-commit": "",
    }))
}

fn taskmanager_json(tm: &RegisteredTaskManager) -> Value {
    // The job layer may append an id to the address (`host:port@<id>`).
    let data_host_port = tm
        .info
        .data_address
        .split_once('@')
        .map_or(tm.info.data_address.as_str(), |(a, _)| a);
    let data_port = split_host_port(data_host_port)
        .map(|(_, p)| i64::from(p))
        .unwrap_or(-1);
    let hardware = tm.info.hardware.map(|h| {
        json!({
            "cpuCores": h.cpu_cores,
            "physicalMemory": h.physical_memory_bytes,
        })
    });
    json!({
        "id": tm.info.id.as_str(),
        "path": format!("grpc://{}", tm.info.rpc_address),
        "dataPort": data_port,
        "dataAddress": tm.info.data_address,
        "jmxPort": -1,
        "timeSinceLastHeartbeat": tm.last_heartbeat_ms(),
        "slotsNumber": tm.info.slots,
        "freeSlots": tm.free_slots,
        "hardware": hardware,
    })
}

async fn taskmanagers(State(state): State<Arc<JobManagerState>>) -> Json<Value> {
    let registry = state.registry.lock().expect("registry lock");
    let list: Vec<Value> = registry.iter().map(taskmanager_json).collect();
    Json(json!({ "taskmanagers": list }))
}

async fn taskmanager(
    State(state): State<Arc<JobManagerState>>,
    Path(id): Path<String>,
) -> Response {
    let registry = state.registry.lock().expect("registry lock");
    match registry.get(&TaskManagerId::new(id.clone())) {
        Some(tm) => Json(taskmanager_json(tm)).into_response(),
        None => not_found(format!("TaskManager {id} is not registered")),
    }
}
