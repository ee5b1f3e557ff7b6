//! Every route, status code and JSON shape, against a fake job served by a
//! real server on a free port (a `JobControl` only comes from a running job;
//! the end-to-end behaviour with a real job is tested through the CLI).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_core::JobId;
use floe_runtime::checkpoint::{
    CheckpointFailureReason, CheckpointHistory, CheckpointHistoryView, CheckpointStats,
    CheckpointStatus, SubtaskAck, TaskPosition,
};
use floe_runtime::metrics::SubtaskMetrics;
use floe_runtime::queryable::QueryReply;
use floe_runtime::restart::RestartStrategy;
use floe_runtime::{
    ControlError, ExceptionHistory, ExceptionRecord, JobStatus, QueryError, SavepointFailure,
    SavepointMode, SavepointStatus, TriggerId, VertexInfo,
};
use floe_state::QueryValue;
use serde_json::{Value, json};

use crate::auth::RestAuth;
use crate::directory::Directory;
use crate::job_handle::JobHandle;
use crate::routes::{HISTORY_SIZE, MAX_BODY, router};
use crate::server::{ConnectionLimits, RestServer};

mod multi_job;

const JOB: JobId = JobId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
const JOB_STR: &str = "0123456789abcdef0123456789abcdef";

struct FakeState {
    status: JobStatus,
    end: Option<u64>,
    stats: Vec<CheckpointStats>,
    restored: Option<(u64, String)>,
    default_dir: Option<String>,
    savepoints: HashMap<TriggerId, SavepointStatus>,
    requests: Vec<(String, SavepointMode)>,
    cancels: usize,
    exceptions: ExceptionHistory,
}

#[derive(Clone)]
struct FakeJob {
    id: JobId,
    name: &'static str,
    state: Arc<Mutex<FakeState>>,
}

impl FakeJob {
    fn new() -> Self {
        Self::named(JOB, "KeyedCount")
    }

    fn named(id: JobId, name: &'static str) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            status: JobStatus::Running,
            end: None,
            stats: Vec::new(),
            restored: None,
            default_dir: None,
            savepoints: HashMap::new(),
            requests: Vec::new(),
            cancels: 0,
            exceptions: ExceptionHistory::default(),
        }));
        FakeJob { id, name, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }
}

impl JobHandle for FakeJob {
    fn job_id(&self) -> JobId {
        self.id
    }
    fn job_name(&self) -> String {
        self.name.into()
    }
    fn start_time_ms(&self) -> u64 {
        1_700_000_000_000
    }
    fn end_time_ms(&self) -> Option<u64> {
        self.state().end
    }
    fn status(&self) -> JobStatus {
        self.state().status
    }
    fn vertices(&self) -> Vec<VertexInfo> {
        vec![
            VertexInfo {
                name: "Generator".into(),
                uid: "gen".into(),
                parallelism: 1,
                max_parallelism: 128,
                max_parallelism_explicit: false,
                inputs: Vec::new(),
            },
            VertexInfo {
                name: "Count".into(),
                uid: "count".into(),
                parallelism: 2,
                max_parallelism: 128,
                max_parallelism_explicit: false,
                inputs: vec![floe_runtime::VertexInput {
                    source: 0,
                    partitioning: floe_runtime::Partitioning::KeyGroup,
                    side_output: None,
                }],
            },
        ]
    }
    fn checkpoint_history(&self) -> CheckpointHistoryView {
        let history = CheckpointHistory::default();
        for s in &self.state().stats {
            match s.status {
                CheckpointStatus::InProgress => history.progress(s.clone()),
                _ => history.end(s.clone()),
            }
        }
        history.view()
    }
    fn restored_from(&self) -> Option<(u64, String)> {
        self.state().restored.clone()
    }
    fn trigger_savepoint(
        &self,
        target_directory: Option<&str>,
        mode: SavepointMode,
    ) -> Result<TriggerId, ControlError> {
        let mut s = self.state();
        let target = target_directory
            .map(str::to_string)
            .or_else(|| s.default_dir.clone())
            .ok_or(ControlError::NoTargetDirectory)?;
        if s.status != JobStatus::Running {
            return Err(ControlError::NotRunning {
                job_id: self.id,
                status: s.status,
                action: "a savepoint",
            });
        }
        let trigger = TriggerId(format!("{:032x}", s.requests.len() + 1));
        s.savepoints
            .insert(trigger.clone(), SavepointStatus::InProgress);
        s.requests.push((target, mode));
        Ok(trigger)
    }
    fn savepoint_status(&self, trigger: &TriggerId) -> Option<SavepointStatus> {
        self.state().savepoints.get(trigger).cloned()
    }
    fn cancel(&self) {
        let mut s = self.state();
        s.cancels += 1;
        s.status = JobStatus::Cancelling;
    }
    /// State `count` holds `key * 10` for keys 0..10, answered from another
    /// thread as a task would; key 7's task is "restarting".
    fn query_state(&self, name: &str, key: &Value, reply: QueryReply) -> Result<(), QueryError> {
        if name != "count" {
            return Err(QueryError::UnknownState {
                job_id: JOB_STR.into(),
                name: name.into(),
                available: "count".into(),
            });
        }
        let key = key.as_u64().ok_or_else(|| QueryError::WrongKeyType {
            name: name.into(),
            expected: "u64".into(),
            reason: format!("the key {key} does not convert"),
        })?;
        if key == 7 {
            return Err(QueryError::Unavailable {
                name: name.into(),
                operator: "Count".into(),
                subtask: 1,
                reason: "the job is restarting or not running".into(),
            });
        }
        std::thread::spawn(move || {
            reply(Ok((key < 10).then(|| QueryValue::Json(json!(key * 10)))))
        });
        Ok(())
    }
    fn metrics(&self) -> Vec<Vec<SubtaskMetrics>> {
        let m = |records: u64, busy: f64, idle: f64, bp: f64| SubtaskMetrics {
            records_in: records,
            records_out: records / 2,
            records_in_per_second: records as f64 / 10.0,
            records_out_per_second: records as f64 / 20.0,
            busy_ms_per_second: busy,
            idle_ms_per_second: idle,
            back_pressured_ms_per_second: bp,
            input_watermark: floe_runtime::metrics::NO_WATERMARK,
            output_watermark: 1_700_000_000_000,
            bytes_in: records * 8,
            bytes_in_per_second: records as f64 * 0.8,
            checkpoint_alignment_ns: Some(records * 1000),
        };
        vec![
            vec![m(1000, 100.0, 0.0, 900.0)],
            vec![m(600, 1000.0, 0.0, 0.0), m(400, 300.0, 650.0, 50.0)],
        ]
    }
    fn restarts(&self) -> u64 {
        2
    }
    fn run_started_ms(&self) -> Option<u64> {
        Some(1_700_000_000_000)
    }
    fn exception_history(&self) -> ExceptionHistory {
        self.state().exceptions.clone()
    }
    fn configuration(&self) -> Vec<(String, String)> {
        [
            ("execution.checkpointing.interval", "1s"),
            ("my.job.threshold", "42"),
            ("parallelism.default", "4"),
            ("rest.auth.token", "s3cret"),
            ("s3.secret-key", "hidden"),
            ("state.savepoints.dir", "file:///sp"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    }
    fn restart_strategy(&self) -> RestartStrategy {
        RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(1),
        }
    }
}

fn stats(id: u64, status: CheckpointStatus, savepoint: bool) -> CheckpointStats {
    CheckpointStats {
        id,
        status,
        trigger_timestamp_ms: 1_700_000_000_000 + id * 1000,
        duration: Duration::from_millis(40 + id),
        state_size: 1000 * id,
        // Incremental: the checkpoint references more than it wrote.
        full_state_size: 3000 * id,
        channel_state_size: 0,
        sync_duration: Duration::from_millis(1),
        async_duration: Duration::from_millis(2),
        alignment_duration: Duration::from_millis(3),
        acknowledged: (3, 3),
        unaligned: false,
        operators: BTreeMap::from([("count".to_string(), 1000 * id)]),
        is_savepoint: savepoint,
        external_path: Some(format!("file:///tmp/ck/chk-{id}")),
        // The fake job's tasks: the generator, then two count subtasks.
        layout: [(0, 0), (1, 0), (1, 1)]
            .map(|(v, subtask)| TaskPosition {
                vertices: vec![v],
                subtask,
            })
            .into(),
        acks: (0..3)
            .map(|task| {
                let ack = SubtaskAck {
                    ack_timestamp_ms: 1_700_000_000_000 + id * 1000 + 10 * (task as u64 + 1),
                    state_size: 500 * id * u64::from(task > 0),
                    channel_state_size: 0,
                    sync_duration: Duration::from_millis(1),
                    async_duration: Duration::from_millis(2),
                    alignment_duration: Duration::from_millis(task as u64 + 1),
                    unaligned: false,
                    operator_bytes: if task == 0 {
                        Vec::new()
                    } else {
                        vec![("count".to_string(), 500 * id)]
                    },
                };
                (task, ack)
            })
            .collect(),
    }
}

/// A directory listing `jobs`, in this order.
fn directory_of(jobs: &[&FakeJob]) -> Directory<FakeJob> {
    let directory = Directory::new(crate::DEFAULT_HISTORY);
    for job in jobs {
        directory.add((*job).clone()).unwrap();
    }
    directory
}

struct Fixture {
    job: FakeJob,
    server: RestServer,
    agent: ureq::Agent,
}

fn serve() -> Fixture {
    serve_with(RestAuth::default())
}

fn serve_with(auth: RestAuth) -> Fixture {
    let job = FakeJob::new();
    let (app, unreported) = router(directory_of(&[&job]), auth);
    let server = RestServer::start_router(app, unreported, "127.0.0.1", 0).unwrap();
    Fixture {
        job,
        server,
        agent: agent(),
    }
}

/// An HTTP client that returns error statuses as answers.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    fn read(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
        (status, json)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        Self::read(self.agent.get(&self.url(path)).call().unwrap())
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        Self::read(
            self.agent
                .post(&self.url(path))
                .header("Content-Type", "application/json")
                .send(body)
                .unwrap(),
        )
    }

    fn patch(&self, path: &str) -> (u16, Value) {
        Self::read(self.agent.patch(&self.url(path)).send_empty().unwrap())
    }

    /// A request with an optional `Authorization` header value; the status,
    /// the JSON body and the `WWW-Authenticate` header.
    fn with_auth(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let url = self.url(path);
        let resp = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = authorization {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            "POST" | "PATCH" => {
                let mut r = if method == "POST" {
                    self.agent.post(&url)
                } else {
                    self.agent.patch(&url)
                };
                if let Some(a) = authorization {
                    r = r.header("Authorization", a);
                }
                r.send_empty()
            }
            other => panic!("{other}"),
        }
        .unwrap();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, body) = Self::read(resp);
        (status, body, www)
    }
}

#[track_caller]
fn assert_error(reply: (u16, Value), status: u16, needles: &[&str]) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let errors = reply.1["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {}", reply.1));
    assert_eq!(errors.len(), 1, "{}", reply.1);
    let msg = errors[0].as_str().unwrap();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
}

#[test]
fn jobs_and_overview() {
    let f = serve();
    let (status, body) = f.get("/jobs");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"jobs": [{"id": JOB_STR, "status": "RUNNING"}]})
    );
    let (status, body) = f.get("/jobs/overview");
    assert_eq!(status, 200);
    let job = &body["jobs"][0];
    assert_eq!(job["jid"], JOB_STR);
    assert_eq!(job["name"], "KeyedCount");
    assert_eq!(job["state"], "RUNNING");
    assert_eq!(job["start-time"], 1_700_000_000_000u64);
    assert_eq!(job["end-time"], -1);
    assert!(job["duration"].as_u64().unwrap() > 0);
    assert_eq!(job["tasks"]["total"], 3);
    // Flink's version prefix.
    assert_eq!(f.get("/v1/jobs").1, f.get("/jobs").1);
}

#[test]
fn job_details_list_vertices_by_uid_and_end_time_once_terminal() {
    let f = serve();
    let (status, body) = f.get(&format!("/jobs/{JOB_STR}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jid"], JOB_STR);
    assert_eq!(body["name"], "KeyedCount");
    assert_eq!(body["state"], "RUNNING");
    assert_eq!(body["end-time"], -1);
    assert!(body["now"].as_u64().unwrap() >= 1_700_000_000_000);
    assert_eq!(
        body["vertices"],
        json!([
            {"id": "gen", "name": "Generator", "parallelism": 1, "maxParallelism": 128},
            {"id": "count", "name": "Count", "parallelism": 2, "maxParallelism": 128},
        ])
    );
    {
        let mut s = f.job.state();
        s.status = JobStatus::Canceled;
        s.end = Some(1_700_000_005_000);
    }
    let (_, body) = f.get(&format!("/v1/jobs/{JOB_STR}"));
    assert_eq!(body["state"], "CANCELED");
    assert_eq!(body["end-time"], 1_700_000_005_000u64);
    assert_eq!(body["duration"], 5000);
}

#[test]
fn unknown_malformed_job_ids_and_routes_are_errors_in_flinks_shape() {
    let f = serve();
    let other = "ffffffffffffffffffffffffffffffff";
    for path in [
        format!("/jobs/{other}"),
        format!("/jobs/{other}/checkpoints"),
        format!("/jobs/{other}/savepoints/abc"),
    ] {
        assert_error(f.get(&path), 404, &[other, "not found"]);
    }
    assert_error(
        f.post(&format!("/jobs/{other}/savepoints"), "{}"),
        404,
        &[other],
    );
    assert_error(f.patch(&format!("/jobs/{other}")), 404, &[other]);
    assert_error(f.get("/jobs/not-a-job"), 400, &["not-a-job", "jobid"]);
    assert_error(f.get("/nothing/here"), 404, &["/nothing/here"]);
    assert_error(f.get("/v2/jobs"), 404, &["/v2/jobs"]);
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/stop")),
        405,
        &["GET", "stop"],
    );
    assert_eq!(f.job.state().cancels, 0);
    assert!(f.job.state().requests.is_empty());
}

#[test]
fn checkpoint_statistics_counts_latest_and_history_newest_first() {
    let f = serve();
    let path = format!("/jobs/{JOB_STR}/checkpoints");
    let (status, body) = f.get(&path);
    assert_eq!(status, 200);
    assert_eq!(
        body["counts"],
        json!({"restored": 0, "total": 0, "in_progress": 0, "completed": 0, "failed": 0})
    );
    assert_eq!(
        body["latest"],
        json!({"completed": null, "savepoint": null, "failed": null, "restored": null})
    );
    assert_eq!(body["history"], json!([]));

    {
        let mut s = f.job.state();
        for id in 1..=12 {
            s.stats.push(stats(id, CheckpointStatus::Completed, false));
        }
        s.stats.push(stats(
            13,
            CheckpointStatus::Failed(CheckpointFailureReason::Expired(Duration::from_secs(3))),
            false,
        ));
        let mut sp = stats(14, CheckpointStatus::Completed, true);
        sp.external_path = Some("file:///tmp/sp/savepoint-012345-abcdef".into());
        s.stats.push(sp);
        s.restored = Some((7, "file:///old/savepoint-aaaaaa-bbbbbb".into()));
    }
    let (_, body) = f.get(&path);
    assert_eq!(
        body["counts"],
        json!({"restored": 1, "total": 14, "in_progress": 0, "completed": 13, "failed": 1})
    );
    let latest = &body["latest"];
    assert_eq!(latest["completed"]["id"], 12);
    assert_eq!(latest["completed"]["status"], "COMPLETED");
    assert_eq!(latest["completed"]["is_savepoint"], false);
    assert_eq!(
        latest["completed"]["external_path"],
        "file:///tmp/ck/chk-12"
    );
    assert_eq!(latest["savepoint"]["id"], 14);
    assert_eq!(latest["savepoint"]["is_savepoint"], true);
    assert_eq!(latest["savepoint"]["checkpoint_type"], "SAVEPOINT");
    assert_eq!(
        latest["savepoint"]["external_path"],
        "file:///tmp/sp/savepoint-012345-abcdef"
    );
    assert_eq!(latest["failed"]["id"], 13);
    assert_eq!(latest["failed"]["status"], "FAILED");
    assert_eq!(latest["failed"]["failure_message"], "expired after 3s");
    assert_eq!(
        latest["restored"],
        json!({
            "id": 7,
            "restore_timestamp": 1_700_000_000_000u64,
            "is_savepoint": true,
            "external_path": "file:///old/savepoint-aaaaaa-bbbbbb",
        })
    );
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), HISTORY_SIZE);
    let ids: Vec<u64> = history.iter().map(|h| h["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (5..=14).rev().collect::<Vec<u64>>());
    let h = &history[2]; // checkpoint 12
    assert_eq!(h["className"], "completed");
    assert_eq!(h["trigger_timestamp"], 1_700_000_012_000u64);
    assert_eq!(h["end_to_end_duration"], 52);
    assert_eq!(h["latest_ack_timestamp"], 1_700_000_012_052u64);
    // Flink's "Full Checkpoint Data Size" and "Checkpointed Data Size".
    assert_eq!(h["state_size"], 36_000);
    assert_eq!(h["checkpointed_size"], 12_000);
    assert_eq!(h["num_subtasks"], 3);
    assert_eq!(h["num_acknowledged_subtasks"], 3);
    assert_eq!(h["unaligned"], false);
    assert_eq!(h["tasks"]["count"]["state_size"], 12_000);
    assert_eq!(body["summary"]["state_size"]["max"], 42_000);
    assert_eq!(body["summary"]["state_size"]["min"], 3_000);
    assert_eq!(body["summary"]["checkpointed_size"]["max"], 14_000);
    assert_eq!(body["summary"]["checkpointed_size"]["min"], 1_000);
}

#[test]
fn savepoint_trigger_and_status_through_completion_and_failure() {
    let f = serve();
    let (status, body) = f.post(
        &format!("/jobs/{JOB_STR}/savepoints"),
        r#"{"target-directory": "file:///tmp/sp", "cancel-job": false}"#,
    );
    assert_eq!(status, 202, "{body}");
    let trigger = body["request-id"].as_str().unwrap().to_string();
    assert_eq!(
        f.job.state().requests,
        vec![(
            "file:///tmp/sp".to_string(),
            SavepointMode::Savepoint { cancel_job: false }
        )]
    );
    let status_path = format!("/jobs/{JOB_STR}/savepoints/{trigger}");
    assert_eq!(
        f.get(&status_path),
        (200, json!({"status": {"id": "IN_PROGRESS"}}))
    );
    f.job.state().savepoints.insert(
        TriggerId(trigger.clone()),
        SavepointStatus::Completed {
            location: "file:///tmp/sp/savepoint-012345-abcdef".into(),
        },
    );
    assert_eq!(
        f.get(&status_path),
        (
            200,
            json!({
                "status": {"id": "COMPLETED"},
                "operation": {"location": "file:///tmp/sp/savepoint-012345-abcdef"},
            })
        )
    );
    f.job.state().savepoints.insert(
        TriggerId(trigger.clone()),
        SavepointStatus::Failed {
            reason: SavepointFailure::CheckpointFailed {
                checkpoint_id: 7,
                reason: CheckpointFailureReason::Expired(std::time::Duration::from_secs(600)),
            },
        },
    );
    let (status, body) = f.get(&status_path);
    assert_eq!(status, 200);
    assert_eq!(body["status"]["id"], "COMPLETED");
    // The failure's message, as Flink's stack trace string.
    assert_eq!(
        body["operation"]["failure-cause"]["stack-trace"],
        "savepoint 7 failed: expired after 600s"
    );
    assert!(body["operation"]["failure-cause"]["class"].is_string());
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/savepoints/0000")),
        404,
        &["0000"],
    );
}

#[test]
fn savepoint_defaults_cancel_job_and_empty_bodies() {
    let f = serve();
    let path = format!("/jobs/{JOB_STR}/savepoints");
    // No directory, none configured: the control error, as a 400.
    assert_error(f.post(&path, ""), 400, &["state.savepoints.dir"]);
    f.job.state().default_dir = Some("file:///default".into());
    assert_eq!(f.post(&path, "").0, 202);
    assert_eq!(f.post(&path, "{}").0, 202);
    assert_eq!(
        f.post(&path, r#"{"cancel-job": true, "target-directory": null}"#)
            .0,
        202
    );
    assert_eq!(f.post(&path, r#"{"formatType": "CANONICAL"}"#).0, 202);
    let requests = f.job.state().requests.clone();
    assert_eq!(
        requests,
        vec![
            (
                "file:///default".into(),
                SavepointMode::Savepoint { cancel_job: false }
            ),
            (
                "file:///default".into(),
                SavepointMode::Savepoint { cancel_job: false }
            ),
            (
                "file:///default".into(),
                SavepointMode::Savepoint { cancel_job: true }
            ),
            (
                "file:///default".into(),
                SavepointMode::Savepoint { cancel_job: false }
            ),
        ]
    );
}

#[test]
fn bad_trigger_bodies_name_the_field() {
    let f = serve();
    let sp = format!("/jobs/{JOB_STR}/savepoints");
    let stop = format!("/jobs/{JOB_STR}/stop");
    assert_error(
        f.post(&sp, r#"{"cancel-job": "yes"}"#),
        400,
        &["cancel-job", "\"yes\""],
    );
    assert_error(
        f.post(&sp, r#"{"target-directory": 5}"#),
        400,
        &["target-directory"],
    );
    assert_error(
        f.post(&sp, r#"{"target-directory": " "}"#),
        400,
        &["target-directory", "empty"],
    );
    // The stop route's spelling on the savepoint route: a typo caught.
    assert_error(
        f.post(&sp, r#"{"targetDirectory": "/x"}"#),
        400,
        &["targetDirectory", "target-directory"],
    );
    assert_error(f.post(&sp, r#"{"triggerId": "abc"}"#), 400, &["triggerId"]);
    assert_error(
        f.post(&sp, r#"{"formatType": "NATIVE"}"#),
        400,
        &["formatType", "NATIVE"],
    );
    assert_error(f.post(&sp, "{not json"), 400, &["not valid JSON"]);
    assert_error(f.post(&sp, "[1]"), 400, &["JSON object"]);
    assert_error(f.post(&stop, r#"{"drain": 1}"#), 400, &["drain"]);
    assert_error(
        f.post(&stop, r#"{"target-directory": "/x"}"#),
        400,
        &["target-directory", "targetDirectory"],
    );
    assert!(f.job.state().requests.is_empty());
}

#[test]
fn stop_with_savepoint_and_drain() {
    let f = serve();
    let (status, body) = f.post(
        &format!("/jobs/{JOB_STR}/stop"),
        r#"{"targetDirectory": "file:///tmp/sp", "drain": true}"#,
    );
    assert_eq!(status, 202, "{body}");
    let trigger = body["request-id"].as_str().unwrap();
    assert_eq!(
        f.job.state().requests,
        vec![(
            "file:///tmp/sp".to_string(),
            SavepointMode::Stop { drain: true }
        )]
    );
    // Its status is read where savepoints' are.
    assert_eq!(
        f.get(&format!("/jobs/{JOB_STR}/savepoints/{trigger}")).1["status"]["id"],
        "IN_PROGRESS"
    );
    assert_eq!(
        f.post(
            &format!("/v1/jobs/{JOB_STR}/stop"),
            r#"{"targetDirectory": "/d"}"#
        )
        .0,
        202
    );
    assert_eq!(
        f.job.state().requests[1],
        ("/d".to_string(), SavepointMode::Stop { drain: false })
    );
}

#[test]
fn requests_on_a_job_that_is_not_running_are_conflicts() {
    let f = serve();
    f.job.state().status = JobStatus::Finished;
    assert_error(
        f.post(
            &format!("/jobs/{JOB_STR}/savepoints"),
            r#"{"target-directory": "/x"}"#,
        ),
        409,
        &["FINISHED", "RUNNING"],
    );
    assert_error(
        f.patch(&format!("/jobs/{JOB_STR}?mode=cancel")),
        409,
        &["FINISHED"],
    );
    assert_eq!(f.job.state().cancels, 0);
}

#[test]
fn cancel_with_and_without_mode_and_bad_modes() {
    let f = serve();
    let path = format!("/jobs/{JOB_STR}");
    assert_error(
        f.patch(&format!("{path}?mode=stop")),
        400,
        &["mode", "stop"],
    );
    assert_error(
        f.patch(&format!("{path}?mode=later")),
        400,
        &["mode", "later"],
    );
    assert_error(f.patch(&format!("{path}?when=now")), 400, &["when"]);
    assert_eq!(f.job.state().cancels, 0);
    assert_eq!(f.patch(&format!("{path}?mode=cancel")), (202, json!({})));
    assert_eq!(f.job.state().cancels, 1);
    assert_eq!(f.get("/jobs").1["jobs"][0]["status"], "CANCELLING");
    // Still cancelling, not terminal: cancelling again is accepted.
    assert_eq!(f.patch(&path), (202, json!({})));
    assert_eq!(f.job.state().cancels, 2);
}

#[test]
fn a_dropped_server_lingers_until_the_final_status_was_fetched() {
    use std::time::Instant;

    let f = serve();
    let (status, body) = f.post(
        &format!("/jobs/{JOB_STR}/stop"),
        r#"{"targetDirectory": "/sp"}"#,
    );
    assert_eq!(status, 202);
    let trigger = body["request-id"].as_str().unwrap().to_string();
    let status_path = format!("/jobs/{JOB_STR}/savepoints/{trigger}");
    // Fetched while in progress: not final, so still unreported.
    assert_eq!(f.get(&status_path).1["status"]["id"], "IN_PROGRESS");
    // The stop completed and the job ended: the job drops its server.
    f.job.state().savepoints.insert(
        TriggerId(trigger.clone()),
        SavepointStatus::Completed {
            location: "/sp/savepoint-012345-abcdef".into(),
        },
    );
    let Fixture {
        job: _job,
        server,
        agent,
    } = f;
    let url = format!("http://{}{status_path}", server.local_addr());
    let dropper = std::thread::spawn(move || {
        let started = Instant::now();
        drop(server);
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = Fixture::read(agent.get(&url).call().unwrap());
    assert_eq!(status, 200);
    assert_eq!(body["operation"]["location"], "/sp/savepoint-012345-abcdef");
    let lingered = dropper.join().unwrap();
    assert!(
        lingered >= Duration::from_millis(250) && lingered < crate::server::LINGER,
        "lingered {lingered:?}"
    );
    assert!(agent.get(&url).call().is_err(), "the endpoint is gone");
}

#[test]
fn lingering_is_bounded_when_nobody_fetches_the_result() {
    use std::time::Instant;

    let f = serve();
    assert_eq!(
        f.post(
            &format!("/jobs/{JOB_STR}/savepoints"),
            r#"{"target-directory": "/sp"}"#
        )
        .0,
        202
    );
    let started = Instant::now();
    drop(f);
    let took = started.elapsed();
    assert!(
        took >= crate::server::LINGER && took < crate::server::LINGER + Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn state_queries_answer_found_not_found_and_clear_errors() {
    let f = serve();
    let base = format!("/jobs/{JOB_STR}/state");
    assert_eq!(
        f.get(&format!("{base}/count?key=3")),
        (
            200,
            json!({"name": "count", "key": 3, "found": true, "value": 30})
        )
    );
    assert_eq!(
        f.get(&format!("/v1{base}/count?key=42")),
        (200, json!({"name": "count", "key": 42, "found": false}))
    );
    assert_error(
        f.get(&format!("{base}/nope?key=1")),
        404,
        &["no queryable state 'nope'", "count"],
    );
    assert_error(
        f.get(&format!("{base}/count?key=%22a%22")),
        400,
        &["wrong key type", "u64"],
    );
    assert_error(
        f.get(&format!("{base}/count?key=not-json")),
        400,
        &["'key' is not JSON"],
    );
    assert_error(
        f.get(&format!("{base}/count")),
        400,
        &["missing query parameter 'key'"],
    );
    assert_error(
        f.get(&format!("{base}/count?key=7")),
        503,
        &["not available", "restarting"],
    );
    assert_error(
        f.get("/jobs/00000000000000000000000000000000/state/count?key=1"),
        404,
        &["not found"],
    );
}

/// Satisfies [`assert_error`] from a [`Fixture::with_auth`] answer.
fn no_header(reply: (u16, Value, Option<String>)) -> (u16, Value) {
    (reply.0, reply.1)
}

#[test]
fn duplicate_keys_in_bodies_and_parameters_are_refused_naming_the_key() {
    let f = serve();
    let savepoints = format!("/jobs/{JOB_STR}/savepoints");
    assert_error(
        f.post(
            &savepoints,
            r#"{"target-directory": "/a", "target-directory": "/b"}"#,
        ),
        400,
        &["\"target-directory\"", "twice"],
    );
    assert_error(
        f.post(
            &savepoints,
            r#"{"cancel-job": false, "target-directory": "/a", "cancel-job": true}"#,
        ),
        400,
        &["\"cancel-job\"", "twice"],
    );
    assert_error(
        f.post(
            &format!("/jobs/{JOB_STR}/stop"),
            r#"{"drain": false, "drain": true}"#,
        ),
        400,
        &["\"drain\"", "twice"],
    );
    // Nested objects too (the key of a state query is JSON).
    assert_error(
        f.get(&format!(
            "/jobs/{JOB_STR}/state/count?key=%7B%22a%22%3A1%2C%22a%22%3A2%7D"
        )),
        400,
        &["\"a\"", "twice", "'key'"],
    );
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/state/count?key=1&key=2")),
        400,
        &["\"key\"", "twice"],
    );
    assert_error(
        f.patch(&format!("/jobs/{JOB_STR}?mode=cancel&mode=cancel")),
        400,
        &["\"mode\"", "twice"],
    );
    // A state name carrying its own query string is not a second key.
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/state/count?key=9&other=1")),
        400,
        &["\"other\""],
    );
    assert!(f.job.state().requests.is_empty());
    assert_eq!(f.job.state().cancels, 0);
}

#[test]
fn bodies_over_the_limit_are_refused_with_413_before_they_are_read() {
    let f = serve();
    let big = format!(r#"{{"target-directory": "{}"}}"#, "d".repeat(MAX_BODY + 1));
    assert_error(
        f.post(&format!("/jobs/{JOB_STR}/savepoints"), &big),
        413,
        &["limit", &MAX_BODY.to_string()],
    );
    // Just under the limit is parsed (and then judged on its content).
    let fits = format!(r#"{{"target-directory": "{}"}}"#, "d".repeat(MAX_BODY - 64));
    let (status, body) = f.post(&format!("/jobs/{JOB_STR}/savepoints"), &fits);
    assert_eq!(status, 202, "{body}");
    assert!(f.job.state().requests.len() == 1);
}

#[test]
fn a_token_guards_the_mutating_routes_and_reads_stay_open() {
    let f = serve_with(RestAuth {
        token: Some("s3cret-Token".into()),
        protect_reads: false,
    });
    let savepoints = format!("/jobs/{JOB_STR}/savepoints");
    let cancel = format!("/jobs/{JOB_STR}?mode=cancel");
    let stop = format!("/jobs/{JOB_STR}/stop");
    for (method, path) in [("POST", &savepoints), ("POST", &stop), ("PATCH", &cancel)] {
        let reply = f.with_auth(method, path, None);
        assert_eq!(reply.2.as_deref(), Some("Bearer"), "{method} {path}");
        assert_error(no_header(reply), 401, &["rest.auth.token", "Bearer"]);
        for wrong in [
            "Bearer s3cret-Toke",
            "Bearer s3cret-Token2",
            "Bearer S3CRET-TOKEN",
            "Basic s3cret-Token",
            "s3cret-Token",
            "Bearer",
        ] {
            let reply = f.with_auth(method, path, Some(wrong));
            assert_eq!(reply.0, 401, "{method} {path} with {wrong:?}: {}", reply.1);
        }
    }
    // Unknown routes do not reveal whether they exist.
    assert_eq!(f.with_auth("POST", "/nothing", None).0, 401);
    assert!(f.job.state().requests.is_empty());
    assert_eq!(f.job.state().cancels, 0);
    // Reads need no token.
    assert_eq!(f.with_auth("GET", &format!("/jobs/{JOB_STR}"), None).0, 200);
    assert_eq!(
        f.with_auth("GET", &format!("/jobs/{JOB_STR}/state/count?key=3"), None)
            .0,
        200
    );
    // The right token, with the scheme in any case.
    let (status, body, _) = f.with_auth("POST", &savepoints, Some("Bearer s3cret-Token"));
    assert_eq!(status, 400, "no directory configured: {body}");
    f.job.state().default_dir = Some("/sp".into());
    let (status, body, _) = f.with_auth("POST", &savepoints, Some("bearer s3cret-Token"));
    assert_eq!(status, 202, "{body}");
    let (status, body, _) = f.with_auth("PATCH", &cancel, Some("Bearer s3cret-Token"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(f.job.state().cancels, 1);
}

#[test]
fn protect_reads_guards_every_route() {
    let f = serve_with(RestAuth {
        token: Some("t0ken".into()),
        protect_reads: true,
    });
    for path in [
        "/jobs".to_string(),
        "/v1/jobs/overview".to_string(),
        format!("/jobs/{JOB_STR}/checkpoints"),
        format!("/jobs/{JOB_STR}/state/count?key=3"),
    ] {
        assert_error(no_header(f.with_auth("GET", &path, None)), 401, &["GET"]);
        assert_eq!(
            f.with_auth("GET", &path, Some("Bearer t0ken")).0,
            200,
            "{path}"
        );
    }
}

/// A raw connection that sends nothing: it holds a slot until closed.
fn idle_connection(addr: SocketAddr) -> std::net::TcpStream {
    std::net::TcpStream::connect(addr).unwrap()
}

#[test]
fn connections_over_the_limit_get_503_and_idle_ones_are_closed() {
    use std::io::{Read, Write};
    let job = FakeJob::new();
    let (app, unreported) = router(directory_of(&[&job]), RestAuth::default());
    let server = RestServer::start_limited(
        app,
        unreported,
        "127.0.0.1",
        0,
        ConnectionLimits {
            max_connections: 4,
            idle_timeout: Duration::from_millis(300),
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let mut held: Vec<_> = (0..4).map(|_| idle_connection(addr)).collect();
    // The fifth is answered 503 and closed, without waiting for a request.
    let mut fifth = idle_connection(addr);
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    fifth.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("limit of 4 connections"), "{answer}");
    // The idle ones are closed by the server (read sees the end) ...
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    }
    held.clear();
    // ... which frees their slots: a request is served again.
    let mut ok = None;
    for _ in 0..100 {
        let mut s = idle_connection(addr);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /jobs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 200") {
            ok = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        ok.is_some(),
        "no request was served after the idle connections closed"
    );
}

mod fuzz {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    fn runner(cases: u32) -> TestRunner {
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
    }

    /// The answer is JSON; an error is a 4xx with Flink's error body.
    fn well_formed(reply: &(u16, Value), allowed: &[u16]) -> Result<(), TestCaseError> {
        prop_assert!(
            allowed.contains(&reply.0),
            "status {}: {}",
            reply.0,
            reply.1
        );
        if reply.0 >= 400 {
            prop_assert!(reply.1["errors"][0].is_string(), "{}", reply.1);
        }
        Ok(())
    }

    #[test]
    fn arbitrary_bodies_are_accepted_or_refused_with_4xx() {
        let f = serve();
        f.job.state().default_dir = Some("/sp".into());
        let bodies = prop_oneof![
            vec(any::<u8>(), 0..600),
            ".{0,200}".prop_map(String::into_bytes),
        ];
        runner(300)
            .run(&bodies, |body| {
                for route in ["savepoints", "stop"] {
                    let resp = f
                        .agent
                        .post(&f.url(&format!("/jobs/{JOB_STR}/{route}")))
                        .header("Content-Type", "application/json")
                        .send(&body[..])
                        .unwrap();
                    well_formed(&Fixture::read(resp), &[202, 400])?;
                }
                Ok(())
            })
            .unwrap();
    }

    /// A field value of each JSON type.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z/]{0,12}".prop_map(Value::String),
            Just(json!([1, {"a": 2}])),
        ]
    }

    /// Objects of known and unknown fields, duplicates included, written
    /// by hand (a map could not hold a duplicate), judged by an oracle
    /// written from the documented rules rather than from the parser.
    #[test]
    fn trigger_bodies_are_judged_by_the_documented_rules() {
        let f = serve();
        f.job.state().default_dir = Some("/sp".into());
        let fields = vec(
            (
                prop_oneof![
                    Just("target-directory"),
                    Just("cancel-job"),
                    Just("formatType"),
                    Just("other"),
                ],
                value(),
            ),
            0..4,
        );
        runner(300)
            .run(&fields, |fields| {
                let body = format!(
                    "{{{}}}",
                    fields
                        .iter()
                        .map(|(k, v)| format!("{k:?}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let mut seen = std::collections::HashSet::new();
                let duplicate = fields.iter().find(|(k, _)| !seen.insert(*k));
                let bad_value = fields.iter().any(|(k, v)| match *k {
                    "target-directory" => match v {
                        Value::Null => false,
                        Value::String(s) => s.trim().is_empty(),
                        _ => true,
                    },
                    "cancel-job" => !matches!(v, Value::Null | Value::Bool(_)),
                    "formatType" => v.as_str() != Some("CANONICAL"),
                    _ => true,
                });
                let reply = f.post(&format!("/jobs/{JOB_STR}/savepoints"), &body);
                if let Some((k, _)) = duplicate {
                    prop_assert_eq!(reply.0, 400, "{} -> {}", body, reply.1);
                    let msg = reply.1["errors"][0].as_str().unwrap_or("");
                    prop_assert!(
                        msg.contains(&format!("{k:?}")) && msg.contains("twice"),
                        "{}",
                        msg
                    );
                } else if bad_value {
                    prop_assert_eq!(reply.0, 400, "{} -> {}", body, reply.1);
                } else {
                    prop_assert_eq!(reply.0, 202, "{} -> {}", body, reply.1);
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn arbitrary_state_names_keys_and_modes_are_answered_or_refused_with_4xx() {
        let f = serve();
        let inputs = (".{0,40}", ".{0,80}", ".{0,20}");
        runner(300)
            .run(&inputs, |(name, key, mode)| {
                let mut url = url_of(&f, &["jobs", JOB_STR, "state", &name]);
                url.query_pairs_mut().append_pair("key", &key);
                let reply = Fixture::read(f.agent.get(url.as_str()).call().unwrap());
                // 503: the fake's key 7 is "restarting".
                well_formed(&reply, &[200, 400, 404, 503])?;
                let mut url = url_of(&f, &["jobs", JOB_STR]);
                url.query_pairs_mut().append_pair("mode", &mode);
                let reply = Fixture::read(f.agent.patch(url.as_str()).send_empty().unwrap());
                well_formed(&reply, &[202, 400, 409])?;
                Ok(())
            })
            .unwrap();
    }

    fn url_of(f: &Fixture, segments: &[&str]) -> url::Url {
        let mut url = url::Url::parse(&f.url("/")).unwrap();
        url.path_segments_mut()
            .unwrap()
            .pop_if_empty()
            .extend(segments);
        url
    }
}

#[test]
fn vertex_metrics_list_ids_and_answer_get_with_string_values() {
    let f = serve();
    let base = format!("/jobs/{JOB_STR}/vertices/count/metrics");
    let (status, list) = f.get(&base);
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for id in [
        "0.numRecordsIn",
        "1.numRecordsOutPerSecond",
        "1.backPressuredTimeMsPerSecond",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, got) = f.get(&format!(
        "{base}?get=0.numRecordsIn,1.idleTimeMsPerSecond,9.nope"
    ));
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!([
            { "id": "0.numRecordsIn", "value": "600" },
            { "id": "1.idleTimeMsPerSecond", "value": "650" },
        ])
    );
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/vertices/nope/metrics")),
        404,
        &["nope"],
    );
}

#[test]
fn subtask_metrics_aggregate_as_flink_does() {
    let f = serve();
    let base = format!("/jobs/{JOB_STR}/vertices/count/subtasks/metrics");
    let (_, list) = f.get(&base);
    assert!(
        list.as_array()
            .unwrap()
            .contains(&json!({ "id": "numRecordsIn" }))
    );
    let (status, got) = f.get(&format!("{base}?get=numRecordsIn&agg=min,max,avg,sum"));
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!([{ "id": "numRecordsIn", "min": 400.0, "max": 600.0, "avg": 500.0, "sum": 1000.0 }])
    );
    assert_error(
        f.get(&format!("{base}?get=numRecordsIn&agg=median")),
        400,
        &["median"],
    );
}

#[test]
fn job_metrics_come_from_the_checkpoint_history() {
    let f = serve();
    f.job.state().stats = vec![
        stats(1, CheckpointStatus::Completed, false),
        stats(2, CheckpointStatus::Completed, true),
        stats(
            3,
            CheckpointStatus::Failed(CheckpointFailureReason::Expired(Duration::from_secs(3))),
            false,
        ),
    ];
    let (status, got) = f.get(&format!(
        "/jobs/{JOB_STR}/metrics?get=lastCheckpointDuration,lastCheckpointSize,numberOfCompletedCheckpoints,numberOfFailedCheckpoints,numRestarts"
    ));
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!([
            { "id": "lastCheckpointDuration", "value": "41" },
            { "id": "lastCheckpointSize", "value": "1000" },
            { "id": "numberOfCompletedCheckpoints", "value": "1" },
            { "id": "numberOfFailedCheckpoints", "value": "1" },
            { "id": "numRestarts", "value": "2" },
        ])
    );
}

#[test]
fn backpressure_levels_follow_flinks_thresholds() {
    let f = serve();
    let (status, source) = f.get(&format!("/jobs/{JOB_STR}/vertices/gen/backpressure"));
    assert_eq!(status, 200);
    assert_eq!(source["status"], "ok");
    assert_eq!(source["backpressureLevel"], "high");
    assert_eq!(source["subtasks"][0]["subtask"], 0);
    assert_eq!(source["subtasks"][0]["ratio"], 0.9);
    assert_eq!(source["subtasks"][0]["busyRatio"], 0.1);
    assert_eq!(source["subtasks"][0]["idleRatio"], 0.0);
    assert_eq!(source["subtasks"][0]["backpressureLevel"], "high");
    assert!(source["end-timestamp"].is_u64());
    let (_, count) = f.get(&format!("/jobs/{JOB_STR}/vertices/count/backpressure"));
    assert_eq!(count["backpressureLevel"], "ok");
    assert_eq!(count["subtasks"][1]["ratio"], 0.05);
}

#[test]
fn plan_lists_nodes_with_inputs_and_ship_strategies() {
    let f = serve();
    let (status, got) = f.get(&format!("/jobs/{JOB_STR}/plan"));
    assert_eq!(status, 200);
    let plan = &got["plan"];
    assert_eq!(plan["jid"], JOB_STR);
    assert_eq!(plan["name"], "KeyedCount");
    assert_eq!(plan["type"], "STREAMING");
    assert_eq!(plan["nodes"][0]["id"], "gen");
    assert!(plan["nodes"][0].get("inputs").is_none());
    assert_eq!(plan["nodes"][1]["id"], "count");
    assert_eq!(plan["nodes"][1]["parallelism"], 2);
    assert_eq!(plan["nodes"][1]["description"], "Count");
    assert_eq!(
        plan["nodes"][1]["inputs"],
        json!([{ "num": 0, "id": "gen", "ship_strategy": "HASH", "exchange": "pipelined_bounded" }])
    );
}

#[test]
fn checkpoint_details_by_id_or_404() {
    let f = serve();
    f.job.state().stats = vec![stats(4, CheckpointStatus::Completed, false)];
    let (status, got) = f.get(&format!("/jobs/{JOB_STR}/checkpoints/details/4"));
    assert_eq!(status, 200);
    assert_eq!(got["id"], 4);
    assert_eq!(got["status"], "COMPLETED");
    assert_eq!(got["state_size"], 12_000);
    assert_eq!(got["checkpointed_size"], 4000);
    assert_eq!(got["end_to_end_duration"], 44);
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/checkpoints/details/5")),
        404,
        &["checkpoint 5"],
    );
    assert_error(
        f.get(&format!("/jobs/{JOB_STR}/checkpoints/details/x")),
        400,
        &["checkpointid"],
    );
}

/// Checkpoint 5 in flight: the generator and count subtask 1
/// acknowledged, count subtask 0 did not.
fn in_flight(id: u64) -> CheckpointStats {
    let mut s = stats(id, CheckpointStatus::InProgress, false);
    s.acks.remove(&1);
    s.acknowledged = (2, 3);
    s.state_size = 500 * id;
    // The full size is known only once the checkpoint completes.
    s.full_state_size = 0;
    s
}

#[test]
fn a_checkpoint_in_flight_is_counted_listed_first_and_detailed_per_vertex() {
    let f = serve();
    f.job.state().stats = vec![stats(4, CheckpointStatus::Completed, false), in_flight(5)];
    let (_, body) = f.get(&format!("/jobs/{JOB_STR}/checkpoints"));
    assert_eq!(
        body["counts"],
        json!({"restored": 0, "total": 2, "in_progress": 1, "completed": 1, "failed": 0})
    );
    let first = &body["history"][0];
    assert_eq!(first["id"], 5);
    assert_eq!(first["className"], "in_progress");
    assert_eq!(first["status"], "IN_PROGRESS");
    assert_eq!(first["num_acknowledged_subtasks"], 2);
    assert!(first.get("external_path").is_none());
    assert_eq!(first["latest_ack_timestamp"], 1_700_000_005_030u64);
    assert_eq!(
        body["latest"]["completed"]["id"], 4,
        "in flight is not latest"
    );
    // Per vertex (the checkpoint's status, as in Flink): the generator
    // acknowledged, one of two count subtasks did.
    assert_eq!(
        first["tasks"]["gen"],
        json!({
            "id": 5, "status": "IN_PROGRESS", "latest_ack_timestamp": 1_700_000_005_010u64,
            "checkpointed_size": 0, "state_size": 0, "end_to_end_duration": 10,
            "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0,
            "num_subtasks": 1, "num_acknowledged_subtasks": 1, "alignment_duration": 1,
        })
    );
    assert_eq!(first["tasks"]["count"]["status"], "IN_PROGRESS");
    assert_eq!(first["tasks"]["count"]["num_subtasks"], 2);
    assert_eq!(first["tasks"]["count"]["num_acknowledged_subtasks"], 1);
    let (status, details) = f.get(&format!("/jobs/{JOB_STR}/checkpoints/details/5"));
    assert_eq!(status, 200);
    assert_eq!(details, *first);
    let (_, metrics) = f.get(&format!(
        "/jobs/{JOB_STR}/metrics?get=numberOfInProgressCheckpoints"
    ));
    assert_eq!(
        metrics,
        json!([{ "id": "numberOfInProgressCheckpoints", "value": "1" }])
    );
}

#[test]
fn checkpoint_subtask_details_have_flinks_shape() {
    let f = serve();
    f.job.state().stats = vec![in_flight(5)];
    let (status, got) = f.get(&format!(
        "/jobs/{JOB_STR}/checkpoints/details/5/subtasks/count"
    ));
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({
            "id": 5, "status": "IN_PROGRESS", "latest_ack_timestamp": 1_700_000_005_030u64,
            "checkpointed_size": 2500, "state_size": 2500, "end_to_end_duration": 30,
            "alignment_buffered": 0, "processed_data": 0, "persisted_data": 0,
            "num_subtasks": 2, "num_acknowledged_subtasks": 1, "alignment_duration": 3,
            "summary": {
                "checkpointed_size": { "min": 2500, "max": 2500, "avg": 2500 },
                "state_size": { "min": 2500, "max": 2500, "avg": 2500 },
                "end_to_end_duration": { "min": 30, "max": 30, "avg": 30 },
                "checkpoint_duration": {
                    "sync": { "min": 1, "max": 1, "avg": 1 },
                    "async": { "min": 2, "max": 2, "avg": 2 },
                },
                "alignment": {
                    "buffered": { "min": 0, "max": 0, "avg": 0 },
                    "processed": { "min": 0, "max": 0, "avg": 0 },
                    "persisted": { "min": 0, "max": 0, "avg": 0 },
                    "duration": { "min": 3, "max": 3, "avg": 3 },
                },
            },
            "subtasks": [
                { "className": "pending", "index": 0, "status": "pending_or_failed" },
                {
                    "className": "completed", "index": 1, "status": "completed",
                    "ack_timestamp": 1_700_000_005_030u64, "end_to_end_duration": 30,
                    "state_size": 2500, "checkpointed_size": 2500,
                    "checkpoint": { "sync": 1, "async": 2 },
                    "alignment": { "buffered": 0, "processed": 0, "persisted": 0, "duration": 3 },
                    "unaligned_checkpoint": false, "aborted": false,
                },
            ],
        })
    );
    assert_error(
        f.get(&format!(
            "/jobs/{JOB_STR}/checkpoints/details/5/subtasks/nope"
        )),
        404,
        &["vertex nope"],
    );
    assert_error(
        f.get(&format!(
            "/jobs/{JOB_STR}/checkpoints/details/6/subtasks/count"
        )),
        404,
        &["checkpoint 6"],
    );
}

#[test]
fn a_taskmanagers_exposition_has_its_subtasks_and_process_labelled_with_its_id() {
    let subtask = |index: u32, records: u64| crate::HostedSubtask {
        uid: "count".into(),
        name: "Count".into(),
        index,
        metrics: SubtaskMetrics {
            records_in: records,
            records_out: records,
            records_in_per_second: 10.0,
            records_out_per_second: 10.0,
            busy_ms_per_second: 250.0,
            idle_ms_per_second: 750.0,
            back_pressured_ms_per_second: 0.0,
            input_watermark: floe_runtime::metrics::NO_WATERMARK,
            output_watermark: floe_runtime::metrics::NO_WATERMARK,
            bytes_in: 2048,
            bytes_in_per_second: 512.0,
            checkpoint_alignment_ns: None,
        },
        native: vec![floe_runtime::metrics::NativeMetric {
            state: "counts".into(),
            property: "estimate-num-keys",
            value: 97,
        }],
    };
    let source: crate::HostedMetricsSource = Arc::new(move || {
        vec![crate::HostedJobMetrics {
            job_id: JOB_STR.into(),
            job_name: "KeyedCount".into(),
            // Subtask 1 only: subtask 0 runs on another TaskManager.
            subtasks: vec![subtask(1, 321)],
        }]
    });
    let server = RestServer::start_app(
        crate::taskmanager_metrics_router(Arc::new("tm-a".to_string().into()), source),
        "127.0.0.1",
        0,
    )
    .unwrap();
    let agent = ureq::Agent::new_with_defaults();
    let url = |p: &str| format!("http://{}{p}", server.local_addr());
    let text = agent
        .get(&url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let find = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    };
    let records = find("floe_taskmanager_job_task_operator_numRecordsIn");
    assert_eq!(records.len(), 1, "only the subtask here: {text}");
    let labels = &records[0].labels;
    assert_eq!(labels.get("tm_id"), Some("tm-a"));
    assert_eq!(labels.get("job_id"), Some(JOB_STR));
    assert_eq!(labels.get("subtask_index"), Some("1"));
    assert_eq!(labels.get("operator_id"), Some("count"));
    assert!(matches!(records[0].value, prometheus_parse::Value::Gauge(v) if v == 321.0));
    // RocksDB's native metric: Flink's name with `-` as `_`, the column
    // family (the state) as a label.
    let keys = find("floe_taskmanager_job_task_operator_rocksdb_estimate_num_keys");
    assert_eq!(keys.len(), 1, "{text}");
    assert_eq!(keys[0].labels.get("column_family"), Some("counts"));
    assert_eq!(keys[0].labels.get("operator_id"), Some("count"));
    assert_eq!(keys[0].labels.get("tm_id"), Some("tm-a"));
    assert!(matches!(keys[0].value, prometheus_parse::Value::Gauge(v) if v == 97.0));
    let busy = find("floe_taskmanager_job_task_busyTimeMsPerSecond");
    assert_eq!(busy[0].labels.get("tm_id"), Some("tm-a"));
    assert!(busy[0].labels.get("operator_id").is_none(), "a task metric");
    let rss = find("floe_taskmanager_Status_Process_Memory_RSS");
    assert_eq!(rss.len(), 1, "{text}");
    assert_eq!(rss[0].labels.get("tm_id"), Some("tm-a"));
    assert!(matches!(rss[0].value, prometheus_parse::Value::Gauge(v) if v > 1e6));
    assert!(
        find("floe_jobmanager_job_numRestarts").is_empty(),
        "no job scope on a TaskManager"
    );
    assert!(
        find("floe_taskmanager_job_task_checkpointAlignmentTime").is_empty(),
        "no alignment without the checkpoint history: {text}"
    );
    let status = agent.get(&url("/jobs")).call().map(|r| r.status().as_u16());
    assert!(
        matches!(status, Err(ureq::Error::StatusCode(404))),
        "only /metrics: {status:?}"
    );
}

#[test]
fn a_reporter_takes_the_first_free_port_of_its_range() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let app = || axum::Router::new().route("/metrics", axum::routing::get(|| async { "x" }));
    // The first port is in use: the next one of the list is taken.
    let ranges = floe_core::PortRanges::parse(&format!("{port},0")).unwrap();
    let server = RestServer::start_app_on_first(app(), "127.0.0.1", &ranges).unwrap();
    assert_ne!(server.local_addr().port(), port);
    // Every port in use: the error names the address and the reason.
    let only = floe_core::PortRanges::parse(&port.to_string()).unwrap();
    let Err(err) = RestServer::start_app_on_first(app(), "127.0.0.1", &only) else {
        panic!("the only port is taken");
    };
    let err = err.to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(taken);
}

#[test]
fn prometheus_exposition_parses_with_flinks_names_and_labels() {
    let f = serve();
    let mut resp = f.agent.get(&f.url("/metrics")).call().unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name} is not a gauge: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    let labels = [
        ("job_id", JOB_STR),
        ("job_name", "KeyedCount"),
        ("operator_id", "count"),
        ("operator_name", "Count"),
        ("task_name", "Count"),
        ("subtask_index", "1"),
    ];
    assert_eq!(
        sample("floe_taskmanager_job_task_operator_numRecordsIn", &labels),
        400.0
    );
    assert_eq!(
        sample(
            "floe_taskmanager_job_task_backPressuredTimeMsPerSecond",
            &[("task_id", "gen")]
        ),
        900.0
    );
    assert_eq!(
        sample("floe_jobmanager_job_numRestarts", &[("job_id", JOB_STR)]),
        2.0
    );
    assert!(sample("floe_jobmanager_Status_Process_Memory_RSS", &[]) > 0.0);
}

fn exception(n: u64, restarted: bool) -> ExceptionRecord {
    ExceptionRecord {
        timestamp_ms: 1_700_000_000_000 + n,
        kind: "floe.Error",
        message: format!("failure {n}\ncaused by: disk full"),
        task: "Count (2/2)".into(),
        operator_uid: "count".into(),
        restarted,
    }
}

#[test]
fn exceptions_list_failures_newest_first_in_flinks_shape() {
    let f = serve();
    let path = format!("/jobs/{JOB_STR}/exceptions");
    let (status, got) = f.get(&path);
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({"exceptionHistory": {"entries": [], "truncated": false}})
    );
    f.job.state().exceptions = ExceptionHistory {
        entries: vec![exception(1, true), exception(2, false)],
        truncated: false,
    };
    let (_, got) = f.get(&path);
    let entries = got["exceptionHistory"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0],
        json!({
            "exceptionName": "floe.Error",
            "stacktrace": "failure 2\ncaused by: disk full",
            "timestamp": 1_700_000_000_002u64,
            "taskName": "Count (2/2)",
            "operatorId": "count",
            "endpoint": null,
            "taskManagerId": null,
            "failureLabels": {},
            "concurrentExceptions": [],
            "restarted": false,
        })
    );
    assert_eq!(entries[1]["restarted"], true);
    assert_eq!(got["exceptionHistory"]["truncated"], false);
    // Fewer than kept: the newest, and the answer says it is cut.
    let (_, got) = f.get(&format!("{path}?maxExceptions=1"));
    assert_eq!(
        got["exceptionHistory"]["entries"][0]["timestamp"],
        1_700_000_000_002u64
    );
    assert_eq!(
        got["exceptionHistory"]["entries"].as_array().unwrap().len(),
        1
    );
    assert_eq!(got["exceptionHistory"]["truncated"], true);
    // Older failures dropped by the job are reported as truncation too.
    f.job.state().exceptions.truncated = true;
    let (_, got) = f.get(&path);
    assert_eq!(got["exceptionHistory"]["truncated"], true);
    assert_error(
        f.get(&format!("{path}?maxExceptions=-1")),
        400,
        &["maxExceptions"],
    );
    assert_error(f.get(&format!("{path}?max=1")), 400, &["max"]);
    assert_error(
        f.get("/jobs/ffffffffffffffffffffffffffffffff/exceptions"),
        404,
        &["not found"],
    );
}

#[test]
fn configuration_routes_show_the_keys_in_effect_with_secrets_masked() {
    let f = serve();
    let (status, got) = f.get(&format!("/v1/jobs/{JOB_STR}/jobmanager/config"));
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!([
            {"key": "execution.checkpointing.interval", "value": "1s"},
            {"key": "my.job.threshold", "value": "42"},
            {"key": "parallelism.default", "value": "4"},
            {"key": "rest.auth.token", "value": "******"},
            {"key": "s3.secret-key", "value": "******"},
            {"key": "state.savepoints.dir", "value": "file:///sp"},
        ])
    );
    let (status, got) = f.get(&format!("/jobs/{JOB_STR}/config"));
    assert_eq!(status, 200);
    assert_eq!(got["jid"], JOB_STR);
    assert_eq!(got["name"], "KeyedCount");
    let ec = &got["execution-config"];
    assert_eq!(ec["job-parallelism"], 4);
    assert_eq!(ec["execution-mode"], "PIPELINED");
    assert_eq!(ec["object-reuse-mode"], false);
    assert_eq!(
        ec["restart-strategy"],
        "Restart with fixed delay (1s): 3 restart attempts."
    );
    // Only keys Floe does not read are its user config (Flink's global
    // job parameters: the job's own settings), secrets masked there too.
    assert_eq!(
        ec["user-config"],
        json!({"my.job.threshold": "42", "s3.secret-key": "******"})
    );
    let text = got.to_string()
        + &f.get(&format!("/jobs/{JOB_STR}/jobmanager/config"))
            .1
            .to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("hidden"),
        "{text}"
    );
}

/// A GET answered with its status, headers and body as text.
fn get_raw(f: &Fixture, path: &str) -> (u16, ureq::http::HeaderMap, String) {
    let mut resp = f.agent.get(&f.url(path)).call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string().unwrap();
    (status, headers, body)
}

#[test]
fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let f = serve();
    let (status, headers, page) = get_raw(&f, "/");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        page.contains("<script src=\"/web/dashboard.js\">"),
        "{page}"
    );
    // Nothing is loaded from another origin: every src and href is local.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let url = &page[i + attr.len()..];
            assert!(
                url.starts_with('/') || url.starts_with('#'),
                "non-local reference {}",
                &url[..url.find('"').unwrap()]
            );
        }
    }
    for (path, kind) in [
        ("/web/dashboard.js", "text/javascript"),
        ("/web/dashboard.css", "text/css"),
        ("/web/favicon.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = get_raw(&f, path);
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {:?}",
            headers["content-type"]
        );
        assert!(!body.is_empty());
        // The SVG namespace is a name, never fetched; no other URL may be
        // in a file.
        let rest = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !rest.contains("http://") && !rest.contains("https://") && !rest.contains("//cdn"),
            "{path} refers to another origin"
        );
    }
    assert_error(f.get("/web/nothing.js"), 404, &["/web/nothing.js"]);
    assert_error(f.get("/web/../src/lib.rs"), 404, &[]);
    // The dashboard is only at the root, not under the API's /v1.
    assert_error(f.get("/v1/"), 404, &[]);
}

#[test]
fn the_dashboard_loads_without_a_token_but_its_api_calls_need_one() {
    let f = serve_with(RestAuth {
        token: Some("t0ken".into()),
        protect_reads: true,
    });
    for path in [
        "/",
        "/web/dashboard.js",
        "/web/dashboard.css",
        "/web/favicon.svg",
    ] {
        let (status, _, _) = get_raw(&f, path);
        assert_eq!(status, 200, "{path}");
    }
    for path in [
        "/web/nothing.js".to_string(),
        format!("/jobs/{JOB_STR}/config"),
        format!("/jobs/{JOB_STR}/jobmanager/config"),
        format!("/jobs/{JOB_STR}/exceptions"),
    ] {
        assert_eq!(f.with_auth("GET", &path, None).0, 401, "{path}");
    }
    assert_eq!(
        f.with_auth(
            "GET",
            &format!("/jobs/{JOB_STR}/config"),
            Some("Bearer t0ken")
        )
        .0,
        200
    );
}

/// The `floe_…` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("floe_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_names_the_exposition_has() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../docs/grafana/floe-dashboard.json")).unwrap();
    let f = serve();
    f.job.state().stats = vec![stats(1, CheckpointStatus::Completed, false)];
    let (_, _, text) = get_raw(&f, "/metrics");
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    exported.contains(name.as_str()),
                    "panel {:?} queries {name}, which /metrics does not export ({exported:?})",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 15, "only {used} metric references");
    // Every panel's data source is the dashboard's variable, so it imports
    // into any Grafana without editing.
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
}
