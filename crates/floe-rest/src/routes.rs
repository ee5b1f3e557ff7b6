//! The REST routes and their JSON, shaped after Flink's REST API so that
//! tools written against Flink's (and people who know it) find the same
//! paths, field names and status codes.
//!
//! Every route serves the jobs of a job directory ([`Directory`]): the
//! lists cover all of them and `/jobs/{jobid}/…` dispatches to the one
//! named. Handlers are written against [`JobHandle`] rather than
//! `JobControl` directly so that the routes can be tested with fake jobs (a
//! `JobControl` only comes from a running job).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use floe_core::JobId;
use floe_runtime::checkpoint::{
    CheckpointHistoryView, CheckpointStats, CheckpointStatus, Clock, StatsSummary, SubtaskAck,
    SystemClock,
};
use floe_runtime::metrics::SubtaskMetrics;
use floe_runtime::restart::RestartStrategy;
use floe_runtime::{
    ControlError, Partitioning, QueryError, SavepointMode, SavepointStatus, TriggerId, VertexInfo,
};
use floe_state::QueryValue;
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use crate::auth::RestAuth;
use crate::directory::Directory;
use crate::job_handle::JobHandle;
use crate::metrics::{
    CONTENT_TYPE, HostedJobMetrics, JOB_METRICS, JobMetrics, JobView, OPERATOR_METRICS,
    ProcessStats, TASK_METRICS, prometheus_text, subtask_value, taskmanager_prometheus_text,
};

/// The largest request body accepted. Bodies are a few small JSON fields
/// (a directory and a flag), so 64 KiB is generous; a larger body is
/// refused with 413 before it is buffered.
pub(crate) const MAX_BODY: usize = 64 << 10;

/// How many checkpoints `GET /jobs/{id}/checkpoints` lists in `history`,
/// newest first: Flink's default `web.checkpoints.history`. The counts and
/// the latest entries cover the whole history.
pub(crate) const HISTORY_SIZE: usize = 10;

/// Savepoint and stop requests triggered through one server whose final
/// status no client has fetched yet.
///
/// A stop with savepoint (or a cancel with savepoint) ends the job right
/// after the savepoint completes, and an embedded job then drops its
/// server: without this, the CLI polling for the savepoint's location could
/// find the endpoint gone. A [`RestServer`](crate::RestServer) lingers on
/// drop (briefly, bounded) while the set it was started with is not empty.
/// Requests are kept per job, as trigger ids are only unique per job.
#[derive(Clone, Default, Debug)]
pub struct UnfetchedResults(Arc<Mutex<HashSet<(JobId, String)>>>);

impl UnfetchedResults {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(JobId, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, job: JobId, trigger: &TriggerId) {
        self.lock().insert((job, trigger.0.clone()));
    }

    fn reported(&self, job: JobId, trigger: &TriggerId) {
        self.lock().remove(&(job, trigger.0.clone()));
    }

    /// How many requests still wait for their final status to be fetched.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What every handler gets: the served jobs and the unfetched results.
#[derive(Clone)]
struct AppState<J> {
    jobs: Directory<J>,
    unreported: UnfetchedResults,
}

/// The routes over `jobs`, also under Flink's version prefix `/v1`;
/// anything else is a 404 (405 for a known path with another method) with
/// Flink's error body.
pub(crate) fn router<J: JobHandle>(
    jobs: Directory<J>,
    auth: RestAuth,
) -> (Router, UnfetchedResults) {
    let unreported = UnfetchedResults::default();
    let state = AppState {
        jobs,
        unreported: unreported.clone(),
    };
    let api = Router::new()
        .route("/jobs", get(list_jobs::<J>))
        .route("/jobs/overview", get(overview::<J>))
        .route("/jobs/{jobid}", get(job_details::<J>).patch(terminate::<J>))
        .route("/jobs/{jobid}/checkpoints", get(checkpoints::<J>))
        .route(
            "/jobs/{jobid}/savepoints",
            axum::routing::post(trigger_savepoint::<J>),
        )
        .route(
            "/jobs/{jobid}/savepoints/{triggerid}",
            get(savepoint_status::<J>),
        )
        .route("/jobs/{jobid}/stop", axum::routing::post(stop::<J>))
        .route("/jobs/{jobid}/state/{name}", get(query_state::<J>))
        .route("/jobs/{jobid}/metrics", get(job_metrics::<J>))
        .route("/jobs/{jobid}/plan", get(plan::<J>))
        .route(
            "/jobs/{jobid}/checkpoints/details/{checkpointid}",
            get(checkpoint_details::<J>),
        )
        .route(
            "/jobs/{jobid}/checkpoints/details/{checkpointid}/subtasks/{vertexid}",
            get(checkpoint_subtasks::<J>),
        )
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/metrics",
            get(vertex_metrics::<J>),
        )
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics",
            get(subtask_metrics::<J>),
        )
        .route(
            "/jobs/{jobid}/vertices/{vertexid}/backpressure",
            get(backpressure::<J>),
        )
        .route("/jobs/{jobid}/exceptions", get(exceptions::<J>))
        .route("/jobs/{jobid}/config", get(job_config::<J>))
        .route(
            "/jobs/{jobid}/jobmanager/config",
            get(jobmanager_config::<J>),
        )
        .route("/metrics", get(prometheus::<J>))
        .method_not_allowed_fallback(method_not_allowed);
    let auth = Arc::new(auth);
    let app = Router::new()
        .merge(api.clone())
        .merge(crate::dashboard::router())
        .nest("/v1", api)
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| check_token(auth.clone(), request, next),
        ));
    (app, unreported)
}

/// Only `GET /metrics`: the Prometheus endpoint on its own port
/// (`metrics.reporter.prom.port`), open like Flink's reporter.
pub(crate) fn prometheus_router<J: JobHandle>(jobs: Directory<J>) -> Router {
    let state = AppState {
        jobs,
        unreported: UnfetchedResults::default(),
    };
    Router::new()
        .route("/metrics", get(prometheus::<J>))
        .fallback(not_found)
        .with_state(state)
}

/// Where a TaskManager's `/metrics` reads its subtasks from, asked on
/// every scrape.
pub type HostedMetricsSource = Arc<dyn Fn() -> Vec<HostedJobMetrics> + Send + Sync>;

/// Only `GET /metrics` of a TaskManager (its `metrics.reporter.prom.port`):
/// the operator subtasks running there and its process figures.
pub(crate) fn taskmanager_prometheus_router(
    tm_id: Arc<std::sync::OnceLock<String>>,
    source: HostedMetricsSource,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (tm_id, source) = (tm_id.clone(), source.clone());
                async move {
                    let id = tm_id.get().map_or("", String::as_str);
                    let text = taskmanager_prometheus_text(id, &source(), ProcessStats::read());
                    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
                }
            }),
        )
        .fallback(not_found)
}

/// Methods that change nothing: open without a token unless
/// `rest.auth.protect-reads` is set.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Lets a request through when no token is configured, when it reads and
/// reads are open, or when it carries `Authorization: Bearer <token>`;
/// otherwise answers 401 with Flink's error body.
async fn check_token(auth: Arc<RestAuth>, request: Request, next: Next) -> Response {
    let Some(token) = auth.token.as_deref() else {
        return next.run(request).await;
    };
    if is_read(request.method()) && !auth.protect_reads {
        return next.run(request).await;
    }
    // The dashboard's page, script and styles are the same for every job
    // and hold no job data; a browser cannot send a bearer token when it
    // navigates, so they load without one and the page asks for the token
    // when the API refuses it.
    if is_read(request.method()) && crate::dashboard::is_asset(request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110); the token is not.
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
    let message = match given {
        Some(given) if constant_time_eq(given, token.as_bytes()) => None,
        Some(_) => Some(format!(
            "{} {} refused: the bearer token does not match the job's rest.auth.token",
            request.method(),
            request.uri().path()
        )),
        None => Some(format!(
            "{} {} requires the job's REST token (rest.auth.token): send the header Authorization: Bearer <token> (the floe CLI sends $FLOE_REST_TOKEN or --token)",
            request.method(),
            request.uri().path()
        )),
    };
    let Some(message) = message else {
        return next.run(request).await;
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right (only whether the length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// A failed request: an HTTP status and Flink's `{"errors": [...]}` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": [self.message] }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            // The client can fix it by passing a directory.
            ControlError::NoTargetDirectory => StatusCode::BAD_REQUEST,
            // The job's state does not allow it now.
            ControlError::NotRunning { .. } | ControlError::AlreadyStopping(_) => {
                StatusCode::CONFLICT
            }
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("not found: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("bad path parameter: {e}")))
}

/// The served job `id` names: 400 when it is no job id at all, 404 (naming
/// it) when no such job is listed.
fn find_job<J: JobHandle>(jobs: &Directory<J>, id: &str) -> Result<J, ApiError> {
    let parsed: JobId = id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "bad path parameter jobid: {id:?} is not a job id (32 hexadecimal characters)"
        ))
    })?;
    jobs.get(parsed).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {id} not found: GET /jobs lists the jobs this endpoint serves"),
        )
    })
}

/// `end-time` and `duration` as Flink reports them: -1 while running.
fn times<J: JobHandle>(job: &J) -> (u64, i64, u64) {
    let start = job.start_time_ms();
    let end = job.end_time_ms();
    let now = SystemClock.epoch_ms();
    let duration = end.unwrap_or(now).saturating_sub(start);
    (start, end.map_or(-1, |e| e as i64), duration)
}

/// `GET /jobs`: `{"jobs": [{"id", "status"}]}`, every listed job in the
/// order added.
async fn list_jobs<J: JobHandle>(State(AppState { jobs, .. }): State<AppState<J>>) -> Response {
    let list: Vec<Value> = jobs
        .listed()
        .iter()
        .map(|l| json!({ "id": l.job.job_id().to_string(), "status": l.job.status().as_str() }))
        .collect();
    Json(json!({ "jobs": list })).into_response()
}

#[derive(Serialize)]
struct JobOverview {
    jid: String,
    name: String,
    state: &'static str,
    #[serde(rename = "start-time")]
    start_time: u64,
    #[serde(rename = "end-time")]
    end_time: i64,
    duration: u64,
    #[serde(rename = "last-modification")]
    last_modification: u64,
    tasks: Map<String, Value>,
}

/// `GET /jobs/overview`: `{"jobs": [{"jid", "name", "state", "start-time",
/// "end-time", "duration", "last-modification", "tasks"}]}`, every listed
/// job in the order added.
async fn overview<J: JobHandle>(State(AppState { jobs, .. }): State<AppState<J>>) -> Response {
    let list: Vec<JobOverview> = jobs.listed().iter().map(|l| job_overview(&l.job)).collect();
    Json(json!({ "jobs": list })).into_response()
}

/// One job's entry of `GET /jobs/overview`.
fn job_overview<J: JobHandle>(job: &J) -> JobOverview {
    let (start, end, duration) = times(job);
    let status = job.status();
    let subtasks: u32 = job.vertices().iter().map(|v| v.parallelism).sum();
    let mut tasks = Map::new();
    tasks.insert("total".into(), json!(subtasks));
    tasks.insert(status.as_str().to_ascii_lowercase(), json!(subtasks));
    JobOverview {
        jid: job.job_id().to_string(),
        name: job.job_name(),
        state: status.as_str(),
        start_time: start,
        end_time: end,
        duration,
        last_modification: job.end_time_ms().unwrap_or(start),
        tasks,
    }
}

#[derive(Serialize)]
struct VertexDetails {
    /// Floe's operator uid (Flink shows a generated vertex id here).
    id: String,
    name: String,
    parallelism: u32,
    #[serde(rename = "maxParallelism")]
    max_parallelism: u32,
}

/// `GET /jobs/{id}`: Flink's job details (jid, name, state, times, now,
/// vertices).
async fn job_details<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let (start, end, duration) = times(&job);
    let status = job.status();
    let vertices: Vec<VertexDetails> = job
        .vertices()
        .into_iter()
        .map(|v| VertexDetails {
            id: v.uid,
            name: v.name,
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism,
        })
        .collect();
    let mut timestamps = Map::new();
    timestamps.insert("RUNNING".into(), json!(start));
    if let Some(end) = job.end_time_ms() {
        timestamps.insert(status.as_str().into(), json!(end));
    }
    Ok(Json(json!({
        "jid": job.job_id().to_string(),
        "name": job.job_name(),
        "isStoppable": false,
        "state": status.as_str(),
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "maxParallelism": -1,
        "now": SystemClock.epoch_ms(),
        "timestamps": timestamps,
        "vertices": vertices,
    }))
    .into_response())
}

/// Flink's status name of a checkpoint and the class name that tells the
/// kinds of history entries apart.
fn status_names(status: &CheckpointStatus) -> (&'static str, &'static str) {
    match status {
        CheckpointStatus::InProgress => ("in_progress", "IN_PROGRESS"),
        CheckpointStatus::Completed => ("completed", "COMPLETED"),
        CheckpointStatus::Failed(_) => ("failed", "FAILED"),
    }
}

/// The tasks of `s` that run vertex `vertex`, with their acknowledgement
/// if they sent one, in subtask order.
fn vertex_tasks(s: &CheckpointStats, vertex: usize) -> Vec<(u32, Option<&SubtaskAck>)> {
    let mut tasks: Vec<(u32, Option<&SubtaskAck>)> = s
        .layout
        .iter()
        .enumerate()
        .filter(|(_, pos)| pos.vertices.contains(&vertex))
        .map(|(task, pos)| (pos.subtask, s.acks.get(&task)))
        .collect();
    tasks.sort_by_key(|(subtask, _)| *subtask);
    tasks
}

/// Bytes a task wrote for operator `uid`.
fn operator_bytes(ack: &SubtaskAck, uid: &str) -> u64 {
    ack.operator_bytes
        .iter()
        .find(|(u, _)| u == uid)
        .map_or(0, |(_, b)| *b)
}

/// Flink's per-vertex entry of a checkpoint (`TaskCheckpointStatistics`):
/// how many of the vertex's subtasks acknowledged, its latest
/// acknowledgement, its state and the longest alignment among them.
fn task_checkpoint_json(s: &CheckpointStats, vertex: usize, uid: &str) -> Value {
    let tasks = vertex_tasks(s, vertex);
    let acked: Vec<&SubtaskAck> = tasks.iter().filter_map(|(_, a)| *a).collect();
    let latest_ack = acked.iter().map(|a| a.ack_timestamp_ms).max();
    // The checkpoint's status, as in Flink: how far this vertex got is in
    // the acknowledgement counts.
    let status = status_names(&s.status).1;
    let bytes: u64 = acked.iter().map(|a| operator_bytes(a, uid)).sum();
    json!({
        "id": s.id,
        "status": status,
        "latest_ack_timestamp": latest_ack.unwrap_or(0),
        "checkpointed_size": bytes,
        "state_size": bytes,
        "end_to_end_duration": latest_ack.map_or(0, |t| t.saturating_sub(s.trigger_timestamp_ms)),
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": acked.iter().map(|a| a.channel_state_size).sum::<u64>(),
        "num_subtasks": tasks.len(),
        "num_acknowledged_subtasks": acked.len(),
        "alignment_duration": acked.iter().map(|a| a.alignment_duration.as_millis() as u64).max().unwrap_or(0),
    })
}

/// One history entry, with Flink's field names (`className` tells a
/// completed entry from a failed or in-progress one, as in Flink); `tasks`
/// has an entry per vertex of the job.
fn checkpoint_json(s: &CheckpointStats, vertices: &[VertexInfo]) -> Value {
    let duration_ms = s.duration.as_millis() as u64;
    let (class, status) = status_names(&s.status);
    let latest_ack = s.acks.values().map(|a| a.ack_timestamp_ms).max();
    let tasks: Map<String, Value> = vertices
        .iter()
        .enumerate()
        .map(|(i, v)| (v.uid.clone(), task_checkpoint_json(s, i, &v.uid)))
        .collect();
    let mut v = json!({
        "className": class,
        "id": s.id,
        "status": status,
        "is_savepoint": s.is_savepoint,
        "checkpoint_type": if s.is_savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
        "trigger_timestamp": s.trigger_timestamp_ms,
        "latest_ack_timestamp": match s.status {
            CheckpointStatus::InProgress => latest_ack.unwrap_or(0),
            _ => s.trigger_timestamp_ms + duration_ms,
        },
        // Flink's "Full Checkpoint Data Size" and "Checkpointed Data
        // Size" (what an incremental checkpoint uploaded). The full size
        // is known once the checkpoint completes; before, what the
        // acknowledgements so far persisted.
        "state_size": s.full_state_size.max(s.state_size),
        "checkpointed_size": s.state_size,
        "end_to_end_duration": duration_ms,
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": s.channel_state_size,
        "num_subtasks": s.acknowledged.1,
        "num_acknowledged_subtasks": s.acknowledged.0,
        "unaligned": s.unaligned,
        "sync_duration": s.sync_duration.as_millis() as u64,
        "async_duration": s.async_duration.as_millis() as u64,
        "alignment_duration": s.alignment_duration.as_millis() as u64,
        "tasks": tasks,
    });
    let obj = v.as_object_mut().expect("an object");
    match &s.status {
        CheckpointStatus::InProgress => {}
        CheckpointStatus::Completed => {
            obj.insert("external_path".into(), json!(s.external_path));
        }
        CheckpointStatus::Failed(reason) => {
            obj.insert(
                "failure_timestamp".into(),
                json!(s.trigger_timestamp_ms + duration_ms),
            );
            obj.insert("failure_message".into(), json!(reason.to_string()));
        }
    }
    v
}

/// Flink's summary entry of a cumulative summary.
fn summary_json(s: &StatsSummary) -> Value {
    json!({ "min": s.min, "max": s.max, "avg": s.avg() })
}

/// Min, max and average of `values` (Flink's summary entries).
fn summary(values: impl Iterator<Item = u64>) -> Value {
    let mut s = StatsSummary::default();
    values.for_each(|v| s.add(v));
    summary_json(&s)
}

/// `GET /jobs/{id}/checkpoints`: counts, latest (completed, savepoint,
/// failed, restored), summary, and the most recent history entries, newest
/// first.
async fn checkpoints<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let view = job.checkpoint_history();
    let vertices = job.vertices();
    let restored = job.restored_from();
    let entry = |s: &CheckpointStats| checkpoint_json(s, &vertices);
    let latest_completed = view.latest_completed.as_ref().map(entry);
    let latest_savepoint = view.latest_savepoint.as_ref().map(entry);
    let latest_failed = view.latest_failed.as_ref().map(entry);
    let latest_restored = restored.as_ref().map(|(id, path)| {
        json!({
            "id": id,
            "restore_timestamp": job.start_time_ms(),
            "is_savepoint": is_savepoint_path(path),
            "external_path": path,
        })
    });
    // Newest first by id, as Flink lists it: checkpoints in flight have the
    // highest ids.
    let mut recent: Vec<&CheckpointStats> = view.recent.iter().chain(&view.in_progress).collect();
    recent.sort_by_key(|s| std::cmp::Reverse(s.id));
    let history: Vec<Value> = recent.into_iter().take(HISTORY_SIZE).map(entry).collect();
    let c = view.counts;
    let completed_n = c.completed + c.completed_savepoints;
    let failed_n = c.failed + c.failed_savepoints;
    let in_progress = view.in_progress.len() as u64;
    Ok(Json(json!({
        "counts": {
            "restored": u64::from(restored.is_some()),
            "total": completed_n + failed_n + in_progress,
            "in_progress": in_progress,
            "completed": completed_n,
            "failed": failed_n,
        },
        "summary": {
            "state_size": summary_json(&view.summary.full_state_size),
            "checkpointed_size": summary_json(&view.summary.state_size),
            "end_to_end_duration": summary_json(&view.summary.duration_ms),
            "persisted_data": summary_json(&view.summary.persisted),
        },
        "latest": {
            "completed": latest_completed,
            "savepoint": latest_savepoint,
            "failed": latest_failed,
            "restored": latest_restored,
        },
        "history": history,
    }))
    .into_response())
}

/// Savepoints live in `savepoint-…` directories, checkpoints in `chk-<n>`.
fn is_savepoint_path(path: &str) -> bool {
    path.trim_end_matches('/')
        .rsplit('/')
        .find(|seg| !seg.is_empty() && *seg != "_metadata")
        .is_some_and(|seg| seg.starts_with("savepoint-"))
}

/// JSON that refuses an object naming a key twice: serde_json keeps the
/// last value silently, so `{"drain": true, "drain": false}` would do
/// something its sender may not have meant.
struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "key {key:?} appears twice in one object"
                )));
            }
            let StrictJson(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text, refusing duplicate keys (see [`StrictJson`]).
fn strict_json(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<StrictJson>(text).map(|StrictJson(v)| v)
}

/// A request body: a JSON object (an empty body counts as `{}`), at most
/// [`MAX_BODY`] bytes.
fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("the request body cannot be read: {e} (the limit is {MAX_BODY} bytes)"),
        )
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match strict_json(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, got {}",
            ellipsis(&other.to_string())
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// At most 200 characters of `s`, so an error never echoes a whole body.
fn ellipsis(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Query parameters, refusing one given twice (`?mode=cancel&mode=x`
/// would otherwise mean whichever came last).
fn query_params(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) = q.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.contains_key(&k) {
            return Err(ApiError::bad_request(format!(
                "query parameter {:?} is given twice",
                ellipsis(&k)
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The fields of a trigger request, checked one by one so that every error
/// names the field.
struct TriggerBody {
    target_directory: Option<String>,
    flag: bool,
}

fn parse_trigger_body(
    body: Result<Bytes, BytesRejection>,
    directory_field: &str,
    flag_field: &str,
) -> Result<TriggerBody, ApiError> {
    let mut target_directory = None;
    let mut flag = false;
    for (key, value) in body_object(body)? {
        match key.as_str() {
            k if k == directory_field => match value {
                Value::Null => {}
                Value::String(s) if s.trim().is_empty() => {
                    return Err(ApiError::bad_request(format!(
                        "field {directory_field:?} must not be empty"
                    )));
                }
                Value::String(s) => target_directory = Some(s),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field {directory_field:?} must be a string, got {}",
                        ellipsis(&other.to_string())
                    )));
                }
            },
            k if k == flag_field => match value {
                Value::Null => {}
                Value::Bool(b) => flag = b,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field {flag_field:?} must be true or false, got {}",
                        ellipsis(&other.to_string())
                    )));
                }
            },
            "formatType" => match value.as_str() {
                Some(f) if f.eq_ignore_ascii_case("CANONICAL") => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "field \"formatType\" must be \"CANONICAL\" (Floe writes savepoints in the canonical format only), got {}",
                        ellipsis(&value.to_string())
                    )));
                }
            },
            "triggerId" => {
                return Err(ApiError::bad_request(
                    "field \"triggerId\" is not supported: the job assigns the trigger id and returns it as \"request-id\"",
                ));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {:?} in the request body; expected {directory_field:?}, {flag_field:?}",
                    ellipsis(other)
                )));
            }
        }
    }
    Ok(TriggerBody {
        target_directory,
        flag,
    })
}

fn accepted(trigger: TriggerId) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "request-id": trigger.0 })),
    )
        .into_response()
}

/// `POST /jobs/{id}/savepoints` with `{"target-directory", "cancel-job"}`:
/// 202 `{"request-id"}`.
async fn trigger_savepoint<J: JobHandle>(
    State(AppState { jobs, unreported }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let body = parse_trigger_body(body, "target-directory", "cancel-job")?;
    let trigger = job.trigger_savepoint(
        body.target_directory.as_deref(),
        SavepointMode::Savepoint {
            cancel_job: body.flag,
        },
    )?;
    tracing::info!(job = %job.job_id(), %trigger, "savepoint requested over REST");
    unreported.add(job.job_id(), &trigger);
    Ok(accepted(trigger))
}

/// `POST /jobs/{id}/stop` with `{"targetDirectory", "drain"}`: 202
/// `{"request-id"}`; its status is read at `savepoints/{triggerid}`.
async fn stop<J: JobHandle>(
    State(AppState { jobs, unreported }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let body = parse_trigger_body(body, "targetDirectory", "drain")?;
    let trigger = job.trigger_savepoint(
        body.target_directory.as_deref(),
        SavepointMode::Stop { drain: body.flag },
    )?;
    tracing::info!(job = %job.job_id(), %trigger, drain = body.flag, "stop with savepoint requested over REST");
    unreported.add(job.job_id(), &trigger);
    Ok(accepted(trigger))
}

/// `GET /jobs/{id}/savepoints/{triggerid}`: Flink's asynchronous operation
/// result.
async fn savepoint_status<J: JobHandle>(
    State(AppState { jobs, unreported }): State<AppState<J>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (id, trigger) = path(ids)?;
    let job = find_job(&jobs, &id)?;
    let trigger_id = TriggerId(trigger.clone());
    let Some(status) = job.savepoint_status(&trigger_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no savepoint or stop request with trigger id {trigger} for job {id}"),
        ));
    };
    if status != SavepointStatus::InProgress {
        unreported.reported(job.job_id(), &trigger_id);
    }
    let body = match status {
        SavepointStatus::InProgress => json!({ "status": { "id": "IN_PROGRESS" } }),
        SavepointStatus::Completed { location } => json!({
            "status": { "id": "COMPLETED" },
            "operation": { "location": location },
        }),
        SavepointStatus::Failed { reason } => json!({
            "status": { "id": "COMPLETED" },
            "operation": {
                "failure-cause": {
                    "class": "floe.SavepointFailure",
                    "stack-trace": reason.to_string(),
                }
            },
        }),
    };
    Ok(Json(body).into_response())
}

/// `PATCH /jobs/{id}?mode=cancel` (mode may be left out): cancels the job,
/// 202 `{}`.
async fn terminate<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let id = path(id)?;
    let job = find_job(&jobs, &id)?;
    let query = query_params(query)?;
    for key in query.keys() {
        if key != "mode" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {:?}; expected \"mode\"",
                ellipsis(key)
            )));
        }
    }
    match query.get("mode").map(String::as_str) {
        None => {}
        Some(m) if m.eq_ignore_ascii_case("cancel") => {}
        Some(m) if m.eq_ignore_ascii_case("stop") => {
            return Err(ApiError::bad_request(
                "query parameter \"mode\": stop is not supported here; use POST /jobs/{jobid}/stop (stop with savepoint)",
            ));
        }
        Some(m) => {
            return Err(ApiError::bad_request(format!(
                "query parameter \"mode\" must be \"cancel\", got {:?}",
                ellipsis(m)
            )));
        }
    }
    let status = job.status();
    if status.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} is {status}: there is nothing to cancel"),
        ));
    }
    tracing::info!(job = %job.job_id(), "cancel requested over REST");
    job.cancel();
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

/// How long a state query may wait for the task that owns its key (it
/// answers between two batches; a task blocked by backpressure answers
/// once it moves again).
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match e {
            QueryError::UnknownJob { .. } | QueryError::UnknownState { .. } => {
                StatusCode::NOT_FOUND
            }
            QueryError::WrongKeyType { .. } | QueryError::Disabled { .. } => {
                StatusCode::BAD_REQUEST
            }
            QueryError::Unavailable { .. } | QueryError::NotRunning { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `GET /jobs/{id}/state/{name}?key=<json>`: the live state of one key in
/// a queryable state: `{"name", "key", "found": true, "value"}`, or
/// `"found": false` (and no value) when the key has no state.
async fn query_state<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let (id, name) = path(p)?;
    let job = find_job(&jobs, &id)?;
    let params = query_params(q)?;
    if let Some(other) = params.keys().find(|k| *k != "key") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {:?}; expected \"key\"",
            ellipsis(other)
        )));
    }
    let raw = params.get("key").ok_or_else(|| {
        ApiError::bad_request(
            "missing query parameter 'key' (the key as JSON, e.g. key=42 or key=%22word%22)",
        )
    })?;
    let key: Value = strict_json(raw.as_bytes()).map_err(|e| {
        ApiError::bad_request(format!(
            "query parameter 'key' is not JSON ({e}): pass the key as JSON, e.g. key=42 or key=%22word%22"
        ))
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    job.query_state(
        &name,
        &key,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    )?;
    let answer = tokio::time::timeout(QUERY_TIMEOUT, rx)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "query of state '{name}' got no answer within {}s",
                    QUERY_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("query of state '{name}' was dropped: its task ended"),
            )
        })??;
    let body = match answer {
        None => json!({ "name": name, "key": key, "found": false }),
        Some(QueryValue::Json(value)) => {
            json!({ "name": name, "key": key, "found": true, "value": value })
        }
        Some(QueryValue::Postcard(_)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the task answered in binary instead of JSON",
            ));
        }
    };
    Ok(Json(body).into_response())
}

/// The comma-separated values of query parameter `name` (Flink's `get`
/// and `agg`), in order, without empty items.
fn list_param(query: &[(String, String)], name: &str) -> Option<Vec<String>> {
    let mut found = None;
    for (_, v) in query.iter().filter(|(k, _)| k == name) {
        let items = found.get_or_insert_with(Vec::new);
        items.extend(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    found
}

fn query_pairs(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))
}

/// The vertex `vid` names (its id as `GET /jobs/{id}` lists it): its index
/// and info, or 404.
fn find_vertex<J: JobHandle>(job: &J, vid: &str) -> Result<(usize, VertexInfo), ApiError> {
    job.vertices()
        .into_iter()
        .enumerate()
        .find(|(_, v)| v.uid == vid)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("vertex {vid} not found in job {}", job.job_id()),
            )
        })
}

/// A metric value as Flink's REST API writes it: a string.
fn metric_string(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Flink's metric list answer: `[{"id"}]` without `get`, `[{"id",
/// "value"}]` with it (unknown ids are left out, as in Flink).
fn metric_list(
    ids: Vec<String>,
    get: Option<Vec<String>>,
    value: impl Fn(&str) -> Option<f64>,
) -> Value {
    match get {
        None => Value::Array(ids.into_iter().map(|id| json!({ "id": id })).collect()),
        Some(wanted) => Value::Array(
            wanted
                .into_iter()
                .filter_map(|id| value(&id).map(|v| json!({ "id": id, "value": metric_string(v) })))
                .collect(),
        ),
    }
}

fn job_view<'a, J: JobHandle>(job: &J, history: &'a CheckpointHistoryView) -> JobView<'a> {
    JobView {
        history,
        restarts: job.restarts(),
        run_started_ms: job.run_started_ms(),
        now_ms: SystemClock.epoch_ms(),
    }
}

/// `GET /jobs/{id}/metrics[?get=a,b]`: the job-scoped metrics (checkpoint
/// counts and sizes, restarts, uptime).
async fn job_metrics<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let get = list_param(&query_pairs(q)?, "get");
    let history = job.checkpoint_history();
    let view = job_view(&job, &history);
    let ids = JOB_METRICS.iter().map(|s| s.to_string()).collect();
    Ok(Json(metric_list(ids, get, |id| view.value(id))).into_response())
}

/// The job a `/jobs/{id}/vertices/{vid}/…` route names and the metrics of
/// each subtask of its vertex, after checking both exist.
fn vertex_subtasks<J: JobHandle>(
    jobs: &Directory<J>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<(J, Vec<SubtaskMetrics>), ApiError> {
    let (id, vid) = path(ids)?;
    let job = find_job(jobs, &id)?;
    let (index, _) = find_vertex(&job, &vid)?;
    let subtasks = job.metrics().swap_remove(index);
    Ok((job, subtasks))
}

/// `GET /jobs/{id}/vertices/{vid}/metrics[?get=0.numRecordsIn,…]`: Flink's
/// per-vertex metric ids, `<subtask>.<metric>`.
async fn vertex_metrics<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    ids: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let (_, subtasks) = vertex_subtasks(&jobs, ids)?;
    let get = list_param(&query_pairs(q)?, "get");
    let names = || OPERATOR_METRICS.iter().chain(&TASK_METRICS);
    let ids = (0..subtasks.len())
        .flat_map(|i| names().map(move |m| format!("{i}.{m}")))
        .collect();
    let value = |id: &str| {
        let (i, name) = id.split_once('.')?;
        subtask_value(subtasks.get(i.parse::<usize>().ok()?)?, name)
    };
    Ok(Json(metric_list(ids, get, value)).into_response())
}

/// `GET /jobs/{id}/vertices/{vid}/subtasks/metrics[?get=…&agg=min,max,avg,sum]`:
/// each metric aggregated over the vertex's subtasks (all four without
/// `agg`).
async fn subtask_metrics<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    ids: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let (_, subtasks) = vertex_subtasks(&jobs, ids)?;
    let query = query_pairs(q)?;
    let aggs = list_param(&query, "agg")
        .unwrap_or_else(|| ["min", "max", "avg", "sum"].map(String::from).to_vec());
    if let Some(bad) = aggs
        .iter()
        .find(|a| !["min", "max", "avg", "sum", "skew"].contains(&a.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "bad query parameter agg: {bad:?} is none of min, max, avg, sum, skew"
        )));
    }
    let Some(get) = list_param(&query, "get") else {
        let ids = OPERATOR_METRICS.iter().chain(&TASK_METRICS);
        return Ok(Json(Value::Array(ids.map(|id| json!({ "id": id })).collect())).into_response());
    };
    let out: Vec<Value> = get
        .into_iter()
        .filter_map(|id| {
            let values: Vec<f64> = subtasks
                .iter()
                .map(|m| subtask_value(m, &id))
                .collect::<Option<_>>()?;
            let mut entry = Map::new();
            entry.insert("id".into(), json!(id));
            let sum: f64 = values.iter().sum();
            let n = values.len().max(1) as f64;
            let avg = sum / n;
            for a in &aggs {
                let v = match a.as_str() {
                    "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                    "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    "avg" => avg,
                    "sum" => sum,
                    // Flink's skew: how far the maximum is above the
                    // average, in percent of the maximum.
                    _ => {
                        let max = values.iter().copied().fold(0.0, f64::max);
                        if max == 0.0 {
                            0.0
                        } else {
                            (max - avg) / max * 100.0
                        }
                    }
                };
                entry.insert(a.clone(), json!(v));
            }
            Some(Value::Object(entry))
        })
        .collect();
    Ok(Json(Value::Array(out)).into_response())
}

/// Flink's backpressure level of a back-pressured ratio: up to 10 % ok, up
/// to 50 % low, above high.
fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

/// `GET /jobs/{id}/vertices/{vid}/backpressure`: Flink's shape, from
/// `backPressuredTimeMsPerSecond` (the ratio), `idleTimeMsPerSecond` and
/// `busyTimeMsPerSecond` of each subtask; the vertex's level is its worst
/// subtask's.
async fn backpressure<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (job, subtasks) = vertex_subtasks(&jobs, ids)?;
    let mut worst = 0.0f64;
    let entries: Vec<Value> = subtasks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ratio = m.back_pressured_ms_per_second / 1000.0;
            worst = worst.max(ratio);
            json!({
                "subtask": i,
                "attempt-number": job.restarts(),
                "backpressureLevel": backpressure_level(ratio),
                "ratio": ratio,
                "idleRatio": m.idle_ms_per_second / 1000.0,
                "busyRatio": m.busy_ms_per_second / 1000.0,
                "other-concurrent-attempts": [],
            })
        })
        .collect();
    Ok(Json(json!({
        "status": "ok",
        "backpressureLevel": backpressure_level(worst),
        "end-timestamp": SystemClock.epoch_ms(),
        "subtasks": entries,
    }))
    .into_response())
}

/// Flink's ship strategy name for a partitioning.
fn ship_strategy(p: Partitioning) -> &'static str {
    match p {
        Partitioning::Forward => "FORWARD",
        Partitioning::Rebalance => "REBALANCE",
        Partitioning::Broadcast => "BROADCAST",
        Partitioning::KeyGroup => "HASH",
    }
}

/// `GET /jobs/{id}/plan`: Flink's job plan (one node per vertex, with the
/// edges feeding it and their ship strategies).
async fn plan<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let vertices = job.vertices();
    let nodes: Vec<Value> = vertices
        .iter()
        .map(|v| {
            let inputs: Vec<Value> = v
                .inputs
                .iter()
                .enumerate()
                .map(|(num, input)| {
                    let mut i = json!({
                        "num": num,
                        "id": vertices[input.source].uid,
                        "ship_strategy": ship_strategy(input.partitioning),
                        "exchange": "pipelined_bounded",
                    });
                    if let Some(tag) = &input.side_output {
                        i["side_output"] = json!(tag);
                    }
                    i
                })
                .collect();
            let mut node = json!({
                "id": v.uid,
                "parallelism": v.parallelism,
                "operator": "",
                "operator_strategy": "",
                "description": v.name,
                "optimizer_properties": {},
            });
            if !inputs.is_empty() {
                node["inputs"] = Value::Array(inputs);
            }
            node
        })
        .collect();
    Ok(Json(json!({
        "plan": {
            "jid": job.job_id().to_string(),
            "name": job.job_name(),
            "type": "STREAMING",
            "nodes": nodes,
        }
    }))
    .into_response())
}

/// `GET /jobs/{id}/checkpoints/details/{cid}`: one history entry, or 404.
async fn checkpoint_details<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (id, cid) = path(ids)?;
    let job = find_job(&jobs, &id)?;
    let entry = find_checkpoint(&job, &cid)?;
    Ok(Json(checkpoint_json(&entry, &job.vertices())).into_response())
}

/// The history entry (ended or in flight) of checkpoint `cid`, or 404.
fn find_checkpoint<J: JobHandle>(job: &J, cid: &str) -> Result<CheckpointStats, ApiError> {
    let cid: u64 = cid.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "bad path parameter checkpointid: {cid:?} is not a number"
        ))
    })?;
    // Details are kept for the most recent checkpoints and the latest of
    // each kind, as Flink keeps `web.checkpoints.history` of them.
    let view = job.checkpoint_history();
    view.in_progress
        .into_iter()
        .chain(view.recent.into_iter().rev())
        .chain(view.latest_completed)
        .chain(view.latest_savepoint)
        .chain(view.latest_failed)
        .find(|s| s.id == cid)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Could not find checkpointing statistics for checkpoint {cid}."),
            )
        })
}

/// `GET /jobs/{id}/checkpoints/details/{cid}/subtasks/{vid}`: one vertex's
/// part of a checkpoint, subtask by subtask (Flink's
/// `TaskCheckpointStatisticsWithSubtaskDetails`): which subtasks
/// acknowledged, when, and what each one's snapshot cost. A subtask that
/// has not acknowledged is `pending_or_failed`, as in Flink.
async fn checkpoint_subtasks<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    ids: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult {
    let (id, cid, vid) = path(ids)?;
    let job = find_job(&jobs, &id)?;
    let (vertex, info) = find_vertex(&job, &vid)?;
    let entry = find_checkpoint(&job, &cid)?;
    let mut detail = task_checkpoint_json(&entry, vertex, &info.uid);
    let tasks = vertex_tasks(&entry, vertex);
    let acked: Vec<&SubtaskAck> = tasks.iter().filter_map(|(_, a)| *a).collect();
    let state_of = |a: &SubtaskAck| operator_bytes(a, &info.uid);
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    let end_to_end = |a: &SubtaskAck| {
        a.ack_timestamp_ms
            .saturating_sub(entry.trigger_timestamp_ms)
    };
    let subtasks: Vec<Value> = tasks
        .iter()
        .map(|(index, ack)| match ack {
            None => json!({
                "className": "pending",
                "index": index,
                "status": "pending_or_failed",
            }),
            Some(a) => json!({
                "className": "completed",
                "index": index,
                "status": "completed",
                "ack_timestamp": a.ack_timestamp_ms,
                "end_to_end_duration": end_to_end(a),
                "state_size": state_of(a),
                "checkpointed_size": state_of(a),
                "checkpoint": {
                    "sync": millis(a.sync_duration),
                    "async": millis(a.async_duration),
                },
                "alignment": {
                    "buffered": 0,
                    "processed": 0,
                    "persisted": a.channel_state_size,
                    "duration": millis(a.alignment_duration),
                },
                "unaligned_checkpoint": a.unaligned,
                "aborted": false,
            }),
        })
        .collect();
    let obj = detail.as_object_mut().expect("an object");
    obj.insert(
        "summary".into(),
        json!({
            "checkpointed_size": summary(acked.iter().map(|a| state_of(a))),
            "state_size": summary(acked.iter().map(|a| state_of(a))),
            "end_to_end_duration": summary(acked.iter().map(|a| end_to_end(a))),
            "checkpoint_duration": {
                "sync": summary(acked.iter().map(|a| millis(a.sync_duration))),
                "async": summary(acked.iter().map(|a| millis(a.async_duration))),
            },
            "alignment": {
                "buffered": summary(acked.iter().map(|_| 0)),
                "processed": summary(acked.iter().map(|_| 0)),
                "persisted": summary(acked.iter().map(|a| a.channel_state_size)),
                "duration": summary(acked.iter().map(|a| millis(a.alignment_duration))),
            },
        }),
    );
    obj.insert("subtasks".into(), Value::Array(subtasks));
    Ok(Json(detail).into_response())
}

/// `GET /metrics`: every metric of every job not archived, in the
/// Prometheus (OpenMetrics) text format; each job's series carry its
/// `job_id` and `job_name` labels.
async fn prometheus<J: JobHandle>(State(AppState { jobs, .. }): State<AppState<J>>) -> Response {
    let live: Vec<J> = jobs
        .listed()
        .into_iter()
        .filter(|l| !l.archived)
        .map(|l| l.job)
        .collect();
    let stats: Vec<CheckpointHistoryView> = live.iter().map(|j| j.checkpoint_history()).collect();
    let exported: Vec<JobMetrics<'_>> = live
        .iter()
        .zip(&stats)
        .map(|(job, stats)| JobMetrics {
            job_id: job.job_id().to_string(),
            job_name: job.job_name(),
            vertices: job.vertices(),
            subtasks: job.metrics(),
            native: job.native_metrics(),
            view: job_view(job, stats),
        })
        .collect();
    let text = prometheus_text(&exported, ProcessStats::read());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Fragments of configuration keys whose values are secrets (tokens,
/// passwords, cloud credentials): their values are never served. Matched
/// case-insensitively anywhere in the key, as Flink masks its own.
const SENSITIVE_KEY_PARTS: [&str; 14] = [
    "password",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "access-key",
    "account.key",
    "auth-params",
    "service-key",
    "basic-auth",
    "jaas.config",
    "http-headers",
    "credentials",
];

/// What a masked value is served as.
pub(crate) const MASK: &str = "******";

/// The value of `key` as the configuration routes serve it: [`MASK`] for a
/// secret.
fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    let key = key.to_ascii_lowercase();
    if SENSITIVE_KEY_PARTS.iter().any(|part| key.contains(part)) {
        MASK
    } else {
        value
    }
}

/// `GET /jobs/{id}/jobmanager/config`: the configuration the job runs with,
/// `[{"key", "value"}]` sorted by key, secrets masked (Flink's per-job
/// JobManager configuration).
async fn jobmanager_config<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let entries: Vec<Value> = job
        .configuration()
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": shown_value(k, v) }))
        .collect();
    Ok(Json(Value::Array(entries)).into_response())
}

/// A restart strategy as Flink's job configuration describes it: one line
/// a person reads.
fn describe_restart(strategy: &RestartStrategy) -> String {
    match strategy {
        RestartStrategy::None => "No restarts.".to_string(),
        RestartStrategy::FixedDelay { attempts, delay } => {
            let attempts = match *attempts {
                u32::MAX => "unlimited".to_string(),
                n => n.to_string(),
            };
            format!("Restart with fixed delay ({delay:?}): {attempts} restart attempts.")
        }
        RestartStrategy::FailureRate {
            max_failures,
            interval,
            delay,
        } => format!(
            "Failure rate restart with maximum of {max_failures} failures within interval {interval:?} and fixed delay {delay:?}."
        ),
        RestartStrategy::ExponentialDelay {
            initial_backoff,
            max_backoff,
            multiplier,
            reset_threshold,
            jitter,
        } => format!(
            "Restart with exponential delay: initial backoff {initial_backoff:?}, maximum backoff {max_backoff:?}, multiplier {multiplier}, reset after {reset_threshold:?} without failure, jitter {jitter}."
        ),
    }
}

/// `GET /jobs/{id}/config`: Flink's job configuration, `{"jid", "name",
/// "execution-config": {"execution-mode", "restart-strategy",
/// "job-parallelism", "object-reuse-mode", "user-config"}}`. The user
/// config is what Flink calls global job parameters: the keys Floe itself
/// does not know (a job's own settings), secrets masked.
async fn job_config<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let pairs = job.configuration();
    let mut config = floe_core::Configuration::new();
    for (k, v) in &pairs {
        config.set(k.clone(), v.clone());
    }
    let user: Map<String, Value> = config
        .unknown_keys()
        .into_iter()
        .filter_map(|k| {
            let v = config.get_raw(k)?;
            Some((k.to_string(), json!(shown_value(k, v))))
        })
        .collect();
    // Floe's default parallelism is 1, as Flink's `parallelism.default`.
    let parallelism = config
        .get_raw("parallelism.default")
        .and_then(|p| p.trim().parse::<u32>().ok())
        .unwrap_or(1);
    Ok(Json(json!({
        "jid": job.job_id().to_string(),
        "name": job.job_name(),
        "execution-config": {
            "execution-mode": "PIPELINED",
            "restart-strategy": describe_restart(&job.restart_strategy()),
            "job-parallelism": parallelism,
            // Records are moved between operators, never reused.
            "object-reuse-mode": false,
            "user-config": user,
        },
    }))
    .into_response())
}

/// `GET /jobs/{id}/exceptions[?maxExceptions=N]`: Flink's exception
/// history, newest first: `{"exceptionHistory": {"entries": [{"exceptionName",
/// "stacktrace", "timestamp", "taskName", "endpoint", "taskManagerId",
/// "failureLabels", "concurrentExceptions"}], "truncated"}}`; each entry
/// also says whether the job restarted after it (`restarted`, Floe's own)
/// and which operator failed (`operatorId`).
async fn exceptions<J: JobHandle>(
    State(AppState { jobs, .. }): State<AppState<J>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let job = find_job(&jobs, &path(id)?)?;
    let params = query_params(q)?;
    if let Some(other) = params.keys().find(|k| *k != "maxExceptions") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {:?}; expected \"maxExceptions\"",
            ellipsis(other)
        )));
    }
    let max = match params.get("maxExceptions") {
        None => usize::MAX,
        Some(raw) => raw.trim().parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter \"maxExceptions\" must be a non-negative number, got {:?}",
                ellipsis(raw)
            ))
        })?,
    };
    let history = job.exception_history();
    let truncated = history.truncated || history.entries.len() > max;
    let entries: Vec<Value> = history
        .entries
        .iter()
        .rev()
        .take(max)
        .map(|e| {
            json!({
                "exceptionName": e.kind,
                "stacktrace": e.message,
                "timestamp": e.timestamp_ms,
                "taskName": e.task,
                "operatorId": e.operator_uid,
                "endpoint": Value::Null,
                "taskManagerId": Value::Null,
                "failureLabels": {},
                "concurrentExceptions": [],
                "restarted": e.restarted,
            })
        })
        .collect();
    Ok(Json(json!({
        "exceptionHistory": { "entries": entries, "truncated": truncated }
    }))
    .into_response())
}
