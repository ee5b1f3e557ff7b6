//! The control plane in one process, over real sockets: a JobManager role
//! and TaskManager roles talking gRPC on loopback, with recording handlers.
//! (The multi-process tests, with real signals, are in
//! crates/floe-cli/tests/cluster_control.rs.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_cluster::proto::task_manager_client::TaskManagerClient;
use floe_cluster::{
    Attempt, ClusterError, JobAttempt, JobCounts, JobManagerOptions, JobManagerRole,
    JobMasterHandler, Registered, RpcError, TaskExecutorHandler, TaskManagerId, TaskManagerInfo,
    TaskManagerOptions, TaskManagerRole, proto,
};
use floe_core::{Configuration, JobId};

#[derive(Default)]
struct RecordingJobMaster {
    registered: Mutex<Vec<TaskManagerInfo>>,
    lost: Mutex<Vec<(TaskManagerId, String)>>,
    events: Mutex<Vec<(TaskManagerId, JobAttempt, Bytes)>>,
}

impl JobMasterHandler for RecordingJobMaster {
    fn taskmanager_registered(&self, info: &TaskManagerInfo) {
        self.registered.lock().unwrap().push(info.clone());
    }
    fn taskmanager_lost(&self, id: &TaskManagerId, reason: &str) {
        self.lost
            .lock()
            .unwrap()
            .push((id.clone(), reason.to_string()));
    }
    fn task_event(&self, from: &TaskManagerId, job: JobAttempt, payload: Bytes) {
        self.events
            .lock()
            .unwrap()
            .push((from.clone(), job, payload));
    }
    fn job_counts(&self) -> JobCounts {
        JobCounts {
            running: 1,
            ..JobCounts::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Deploy(JobAttempt, Bytes),
    Cancel(JobAttempt),
    Command(JobAttempt, Bytes),
    Release(JobAttempt),
}

#[derive(Default)]
struct RecordingExecutor {
    calls: Mutex<Vec<Call>>,
}

impl TaskExecutorHandler for RecordingExecutor {
    fn deploy(&self, job: JobAttempt, payload: Bytes) -> Result<(), String> {
        if payload.as_ref() == b"refuse" {
            return Err("the payload says no".into());
        }
        self.calls.lock().unwrap().push(Call::Deploy(job, payload));
        Ok(())
    }
    fn cancel(&self, job: JobAttempt) {
        self.calls.lock().unwrap().push(Call::Cancel(job));
    }
    fn command(&self, job: JobAttempt, payload: Bytes) -> Result<(), String> {
        self.calls.lock().unwrap().push(Call::Command(job, payload));
        Ok(())
    }
    fn release(&self, job: JobAttempt) {
        self.calls.lock().unwrap().push(Call::Release(job));
    }
}

fn fast_heartbeats() -> Configuration {
    let mut c = Configuration::new();
    c.set("heartbeat.interval", "100 ms")
        .set("heartbeat.timeout", "1 s")
        .set("rest.port", "0")
        .set("cluster.registration.max-timeout", "500 ms");
    c
}

fn start_jobmanager(handler: Arc<RecordingJobMaster>) -> JobManagerRole {
    JobManagerRole::start(
        &fast_heartbeats(),
        JobManagerOptions {
            rpc_address: Some("127.0.0.1:0".into()),
            serve_rest: true,
            job_routes: None,
        },
        handler,
    )
    .expect("start the JobManager")
}

fn start_taskmanager(
    jm: &JobManagerRole,
    handler: Arc<RecordingExecutor>,
    registrations: Arc<Mutex<Vec<Registered>>>,
) -> TaskManagerRole {
    let mut options = TaskManagerOptions::new(jm.rpc_address().to_string());
    options.bind = Some("127.0.0.1".into());
    options.slots = Some(2);
    options.data_address = Some("127.0.0.1:7000".into());
    options.on_registered = Some(Arc::new(move |r: &Registered| {
        registrations.lock().unwrap().push(r.clone())
    }));
    TaskManagerRole::start(&fast_heartbeats(), options, handler).expect("start the TaskManager")
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attempt(job: JobId, n: u64) -> JobAttempt {
    JobAttempt {
        job,
        attempt: Attempt(n),
    }
}

fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let body = ureq::get(&format!("http://{addr}{path}"))
        .call()
        .expect("GET")
        .into_body()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn deploy_commands_and_events_are_fenced_by_attempt_and_session() {
    let master = Arc::new(RecordingJobMaster::default());
    let jm = start_jobmanager(master.clone());
    let executor = Arc::new(RecordingExecutor::default());
    let registrations = Arc::new(Mutex::new(Vec::new()));
    let tm = start_taskmanager(&jm, executor.clone(), registrations.clone());
    wait_until("registration", Duration::from_secs(10), || {
        jm.taskmanagers().len() == 1 && tm.is_registered()
    });
    assert_eq!(registrations.lock().unwrap()[0].session, *jm.session());
    let info = master.registered.lock().unwrap()[0].clone();
    assert_eq!(info.id, *tm.id());
    assert_eq!(info.slots, 2);
    assert_eq!(info.data_address, "127.0.0.1:7000");

    let job = JobId::random();
    let gw = jm.taskmanager(tm.id()).expect("a gateway");
    jm.attempts().advance(attempt(job, 1)).unwrap();
    jm.block_on(gw.deploy(attempt(job, 1), Bytes::from_static(b"plan")))
        .unwrap();
    jm.block_on(gw.send_command(attempt(job, 1), Bytes::from_static(b"trigger 1")))
        .unwrap();

    // A stale deploy and a stale command are refused, naming both attempts.
    let stale = jm
        .block_on(gw.deploy(attempt(job, 0), Bytes::new()))
        .unwrap_err();
    assert_eq!(
        stale.code(),
        Some(tonic::Code::FailedPrecondition),
        "{stale}"
    );
    let msg = stale.to_string();
    assert!(
        msg.contains("stale attempt 0") && msg.contains("current attempt is 1"),
        "{msg}"
    );
    // A handler's refusal comes back as Aborted with its message.
    let refused = jm
        .block_on(gw.deploy(attempt(job, 1), Bytes::from_static(b"refuse")))
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::Aborted));
    assert!(
        refused.to_string().contains("the payload says no"),
        "{refused}"
    );

    // Task events of the current attempt reach the handler; stale ones do not.
    let events = tm.events();
    events
        .report_blocking(attempt(job, 1), Bytes::from_static(b"ack 1"))
        .unwrap();
    jm.attempts().advance(attempt(job, 2)).unwrap();
    let stale = events
        .report_blocking(attempt(job, 1), Bytes::from_static(b"ack late"))
        .unwrap_err();
    assert_eq!(stale.code(), Some(tonic::Code::FailedPrecondition));
    assert!(
        stale.to_string().contains("stale attempt 1")
            && stale.to_string().contains("current attempt is 2"),
        "{stale}"
    );
    {
        let got = master.events.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, *tm.id());
        assert_eq!(got[0].1, attempt(job, 1));
        assert_eq!(got[0].2.as_ref(), b"ack 1");
    }

    // Attempt 2 supersedes attempt 1 on the TaskManager: 1 is cancelled.
    jm.block_on(gw.deploy(attempt(job, 2), Bytes::from_static(b"plan 2")))
        .unwrap();
    let stale = jm
        .block_on(gw.send_command(attempt(job, 1), Bytes::new()))
        .unwrap_err();
    assert_eq!(stale.code(), Some(tonic::Code::FailedPrecondition));
    jm.block_on(gw.release_job(attempt(job, 2))).unwrap();
    assert_eq!(
        *executor.calls.lock().unwrap(),
        vec![
            Call::Deploy(attempt(job, 1), Bytes::from_static(b"plan")),
            Call::Command(attempt(job, 1), Bytes::from_static(b"trigger 1")),
            Call::Cancel(attempt(job, 1)),
            Call::Deploy(attempt(job, 2), Bytes::from_static(b"plan 2")),
            Call::Release(attempt(job, 2)),
        ]
    );

    // A JobManager of another session is refused by the TaskManager.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            let mut client = TaskManagerClient::connect(format!("http://{}", tm.rpc_address()))
                .await
                .unwrap();
            client
                .deploy(proto::DeployRequest {
                    jobmanager_session_id: "an-impostor".into(),
                    job: Some(proto::JobAttempt {
                        job_id: job.to_string(),
                        attempt: 9,
                    }),
                    payload: Bytes::new(),
                })
                .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("an-impostor"), "{}", err.message());
    assert!(
        err.message().contains(jm.session().as_str()),
        "{}",
        err.message()
    );

    // The REST overview and TaskManager list, Flink's shapes.
    let rest = jm.rest_address().expect("REST served");
    let overview = get_json(rest, "/overview");
    assert_eq!(overview["taskmanagers"], 1);
    assert_eq!(overview["slots-total"], 2);
    assert_eq!(overview["slots-available"], 2);
    assert_eq!(overview["jobs-running"], 1);
    assert_eq!(overview["flink-version"], env!("CARGO_PKG_VERSION"));
    jm.reserve_slots(tm.id(), 1).unwrap();
    let list = get_json(rest, "/v1/taskmanagers");
    let entry = &list["taskmanagers"][0];
    assert_eq!(entry["id"], tm.id().as_str());
    assert_eq!(entry["slotsNumber"], 2);
    assert_eq!(entry["freeSlots"], 1);
    assert_eq!(entry["dataPort"], 7000);
    assert!(entry["timeSinceLastHeartbeat"].as_u64().unwrap() > 1_600_000_000_000);
    let one = get_json(rest, &format!("/taskmanagers/{}", tm.id()));
    assert_eq!(one["path"], format!("grpc://{}", tm.rpc_address()));
    let missing = ureq::get(&format!("http://{rest}/taskmanagers/nobody")).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );
}

#[test]
fn each_side_notices_the_others_loss() {
    let master = Arc::new(RecordingJobMaster::default());
    let jm = start_jobmanager(master.clone());
    let executor = Arc::new(RecordingExecutor::default());
    let registrations = Arc::new(Mutex::new(Vec::new()));
    let tm = start_taskmanager(&jm, executor.clone(), registrations.clone());
    let gone = start_taskmanager(
        &jm,
        Arc::new(RecordingExecutor::default()),
        Arc::new(Mutex::new(Vec::new())),
    );
    wait_until("registration", Duration::from_secs(10), || {
        jm.taskmanagers().len() == 2
    });

    // A TaskManager whose process is gone: its endpoint refuses connections.
    let gone_id = gone.id().clone();
    let stopped = Instant::now();
    drop(gone);
    wait_until(
        "the JobManager declares it lost",
        Duration::from_secs(10),
        || {
            master
                .lost
                .lock()
                .unwrap()
                .iter()
                .any(|(id, _)| *id == gone_id)
        },
    );
    assert_eq!(jm.taskmanagers().len(), 1);
    let reason = master.lost.lock().unwrap()[0].1.clone();
    assert!(
        reason.contains("refused") || reason.contains("timed out"),
        "{reason}"
    );
    eprintln!("lost after {:?}: {reason}", stopped.elapsed());

    // The JobManager goes: the TaskManager cancels its deployed attempt.
    let job = JobId::random();
    jm.attempts().advance(attempt(job, 3)).unwrap();
    let gw = jm.taskmanager(tm.id()).unwrap();
    jm.block_on(gw.deploy(attempt(job, 3), Bytes::new()))
        .unwrap();
    drop(jm);
    wait_until(
        "the TaskManager cancels its job",
        Duration::from_secs(10),
        || {
            executor
                .calls
                .lock()
                .unwrap()
                .contains(&Call::Cancel(attempt(job, 3)))
        },
    );
    assert!(!tm.is_registered());
    let err = tm
        .events()
        .report_blocking(attempt(job, 3), Bytes::new())
        .unwrap_err();
    assert!(matches!(err, RpcError::NotConnected(_)), "{err:?}");
}

#[test]
fn a_taskmanager_gives_up_when_no_jobmanager_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = fast_heartbeats();
    c.set("taskmanager.registration.timeout", "700 ms");
    let mut options = TaskManagerOptions::new(format!("127.0.0.1:{port}"));
    options.bind = Some("127.0.0.1".into());
    let mut tm =
        TaskManagerRole::start(&c, options, Arc::new(RecordingExecutor::default())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let err = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), tm.failed())
            .await
            .expect("the TaskManager gives up")
    });
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(
        matches!(err, ClusterError::RegistrationTimeout { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("refused"), "{msg}");
}
