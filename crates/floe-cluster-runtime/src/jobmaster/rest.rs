//! Submitting a job to the JobManager over REST, Flink's shape: a job is
//! a "jar" named by its job name (this binary holds every job), run with
//! `POST /jars/{name}/run` and a body of `programArgsList`; `GET /jars`
//! lists the jobs this binary can run.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floe_runtime::gateway::JobEntry;
use serde_json::{Value, json};

use super::{ClusterJobMaster, SubmitError};

/// The submission routes (also under `/v1`).
pub fn router(master: Arc<ClusterJobMaster>) -> Router {
    let routes = Router::new()
        .route("/jars", get(jars))
        .route("/jars/{name}/run", post(run));
    Router::new()
        .nest("/v1", routes.clone())
        .merge(routes)
        .with_state(master)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "errors": [message] }))).into_response()
}

async fn jars(State(master): State<Arc<ClusterJobMaster>>) -> Json<Value> {
    let files: Vec<Value> = master
        .registry
        .names()
        .into_iter()
        .map(|n| json!({ "id": n, "name": n, "entry": [{ "name": n }] }))
        .collect();
    Json(json!({ "address": "", "files": files }))
}

async fn run(
    State(master): State<Arc<ClusterJobMaster>>,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let args = match body.get("programArgsList") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => match a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
        {
            Some(args) => args,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "programArgsList must be a list of strings".into(),
                );
            }
        },
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "programArgsList must be a list of strings".into(),
            );
        }
    };
    // Building the graph runs the job's function: off the async threads.
    let submitted = tokio_blocking(move || master.submit(JobEntry { name, args })).await;
    match submitted {
        Ok(id) => Json(json!({ "jobid": id.to_string() })).into_response(),
        Err(e @ SubmitError::NotReady) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ SubmitError::Build(crate::registry::BuildError::UnknownJob { .. })) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

/// Runs `f` on a thread of its own and awaits its result.
async fn tokio_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("the submitting thread answers")
}
