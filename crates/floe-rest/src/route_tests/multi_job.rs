//! One endpoint serving several jobs of a directory, as a cluster's
//! JobManager does: lists, dispatch by job id, per-job savepoints, ended
//! jobs in the history, Prometheus series per job, and the jobs router
//! merged with other routes.

use axum::Router;
use axum::routing::get;

use super::*;
use crate::directory::DirectoryError;
use crate::routes::UnfetchedResults;
use crate::{JobDirectory, jobs_router};

const JOB_B: JobId = JobId::from_u128(0xb0b0_0000_0000_0000_0000_0000_0000_000b);
const JOB_B_STR: &str = "b0b0000000000000000000000000000b";
const JOB_C: JobId = JobId::from_u128(0xc0c0_0000_0000_0000_0000_0000_0000_000c);
const JOB_C_STR: &str = "c0c0000000000000000000000000000c";
const JOB_D: JobId = JobId::from_u128(0xd0d0_0000_0000_0000_0000_0000_0000_000d);

/// Jobs A (`KeyedCount`), B (`Sessions`) and C (`Joins`), served by one
/// endpoint in this order.
struct Cluster {
    a: FakeJob,
    b: FakeJob,
    c: FakeJob,
    directory: Directory<FakeJob>,
    unfetched: UnfetchedResults,
    endpoint: Fixture,
}

fn serve_three(history: usize) -> Cluster {
    let a = FakeJob::new();
    let b = FakeJob::named(JOB_B, "Sessions");
    let c = FakeJob::named(JOB_C, "Joins");
    let directory = Directory::new(history);
    for job in [&a, &b, &c] {
        directory.add(job.clone()).unwrap();
    }
    let (app, unfetched) = router(directory.clone(), RestAuth::default());
    let server = RestServer::start_router(app, unfetched.clone(), "127.0.0.1", 0).unwrap();
    Cluster {
        a: a.clone(),
        b,
        c,
        directory,
        unfetched,
        endpoint: Fixture {
            job: a,
            server,
            agent: agent(),
        },
    }
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j[field].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_job_is_listed_and_each_answers_its_own_routes() {
    let f = serve_three(crate::DEFAULT_HISTORY);
    f.c.state().status = JobStatus::Restarting;
    let e = &f.endpoint;
    assert_eq!(
        e.get("/jobs"),
        (
            200,
            json!({"jobs": [
                {"id": JOB_STR, "status": "RUNNING"},
                {"id": JOB_B_STR, "status": "RUNNING"},
                {"id": JOB_C_STR, "status": "RESTARTING"},
            ]})
        )
    );
    let (status, overview) = e.get("/v1/jobs/overview");
    assert_eq!(status, 200);
    assert_eq!(ids(&overview, "jid"), [JOB_STR, JOB_B_STR, JOB_C_STR]);
    assert_eq!(ids(&overview, "name"), ["KeyedCount", "Sessions", "Joins"]);
    assert_eq!(overview["jobs"][2]["state"], "RESTARTING");
    assert_eq!(overview["jobs"][2]["tasks"]["restarting"], 3);

    for (id, name) in [(JOB_STR, "KeyedCount"), (JOB_B_STR, "Sessions")] {
        let (status, details) = e.get(&format!("/jobs/{id}"));
        assert_eq!(status, 200, "{details}");
        assert_eq!(
            (details["jid"].as_str(), details["name"].as_str()),
            (Some(id), Some(name))
        );
        assert_eq!(e.get(&format!("/jobs/{id}/plan")).1["plan"]["name"], name);
        assert_eq!(e.get(&format!("/jobs/{id}/config")).1["name"], name);
    }
    // Checkpoints are each job's own.
    f.b.state().stats = vec![
        stats(1, CheckpointStatus::Completed, false),
        stats(2, CheckpointStatus::Completed, false),
    ];
    let (_, a) = e.get(&format!("/jobs/{JOB_STR}/checkpoints"));
    let (_, b) = e.get(&format!("/jobs/{JOB_B_STR}/checkpoints"));
    assert_eq!(a["counts"]["completed"], 0);
    assert_eq!(b["counts"]["completed"], 2);
    assert_eq!(
        e.get(&format!("/jobs/{JOB_B_STR}/checkpoints/details/2")).0,
        200
    );
    assert_error(
        e.get(&format!("/jobs/{JOB_STR}/checkpoints/details/2")),
        404,
        &["checkpoint 2"],
    );
    // A cancel reaches only the job named.
    assert_eq!(e.patch(&format!("/jobs/{JOB_B_STR}?mode=cancel")).0, 202);
    assert_eq!(
        (
            f.a.state().cancels,
            f.b.state().cancels,
            f.c.state().cancels
        ),
        (0, 1, 0)
    );
}

#[test]
fn an_unknown_job_id_is_a_404_naming_it_on_every_job_route() {
    let f = serve_three(crate::DEFAULT_HISTORY);
    let e = &f.endpoint;
    let other = "ffffffffffffffffffffffffffffffff";
    for suffix in [
        "",
        "/checkpoints",
        "/checkpoints/details/1",
        "/savepoints/abc",
        "/plan",
        "/metrics",
        "/exceptions",
        "/config",
        "/jobmanager/config",
        "/vertices/count/metrics",
        "/vertices/count/subtasks/metrics",
        "/vertices/count/backpressure",
        "/state/count?key=1",
    ] {
        assert_error(
            e.get(&format!("/jobs/{other}{suffix}")),
            404,
            &[other, "not found", "GET /jobs"],
        );
    }
    assert_error(
        e.post(
            &format!("/jobs/{other}/stop"),
            r#"{"targetDirectory": "/sp"}"#,
        ),
        404,
        &[other],
    );
    assert_error(e.patch(&format!("/v1/jobs/{other}")), 404, &[other]);
    // A malformed id is a bad request naming it, as in Flink.
    assert_error(e.get("/jobs/B0B0/checkpoints"), 400, &["B0B0", "jobid"]);
    for job in [&f.a, &f.b, &f.c] {
        assert!(job.state().requests.is_empty());
        assert_eq!(job.state().cancels, 0);
    }
}

#[test]
fn savepoints_are_triggered_and_polled_per_job_and_linger_per_server() {
    let f = serve_three(crate::DEFAULT_HISTORY);
    let e = &f.endpoint;
    let (status, a) = e.post(
        &format!("/jobs/{JOB_STR}/savepoints"),
        r#"{"target-directory": "/sp-a"}"#,
    );
    assert_eq!(status, 202, "{a}");
    let (status, b) = e.post(
        &format!("/jobs/{JOB_B_STR}/stop"),
        r#"{"targetDirectory": "/sp-b", "drain": true}"#,
    );
    assert_eq!(status, 202, "{b}");
    // The fake numbers its triggers per job: both are the same id, and
    // still two requests, one per job.
    let trigger = a["request-id"].as_str().unwrap().to_string();
    assert_eq!(b["request-id"], trigger.as_str());
    assert_eq!(f.a.state().requests[0].0, "/sp-a");
    assert_eq!(f.b.state().requests[0].0, "/sp-b");
    assert_eq!(
        f.b.state().requests[0].1,
        SavepointMode::Stop { drain: true }
    );
    assert!(f.c.state().requests.is_empty());
    assert_eq!(f.unfetched.len(), 2);

    f.a.state().savepoints.insert(
        TriggerId(trigger.clone()),
        SavepointStatus::Completed {
            location: "/sp-a/savepoint-0123-aaaa".into(),
        },
    );
    let (_, a) = e.get(&format!("/jobs/{JOB_STR}/savepoints/{trigger}"));
    let (_, b) = e.get(&format!("/jobs/{JOB_B_STR}/savepoints/{trigger}"));
    assert_eq!(a["operation"]["location"], "/sp-a/savepoint-0123-aaaa");
    assert_eq!(b["status"]["id"], "IN_PROGRESS");
    assert_error(
        e.get(&format!("/jobs/{JOB_C_STR}/savepoints/{trigger}")),
        404,
        &[&trigger, JOB_C_STR],
    );
    // A's result was fetched; B's is still owed, so a dropped server
    // would linger for it.
    assert_eq!(f.unfetched.len(), 1);
    f.b.state().savepoints.insert(
        TriggerId(trigger.clone()),
        SavepointStatus::Completed {
            location: "/sp-b/savepoint-b0b0-bbbb".into(),
        },
    );
    let (_, b) = e.get(&format!("/jobs/{JOB_B_STR}/savepoints/{trigger}"));
    assert_eq!(b["operation"]["location"], "/sp-b/savepoint-b0b0-bbbb");
    assert_eq!(f.unfetched.len(), 0);
}

#[test]
fn ended_jobs_stay_listed_with_their_final_status_within_the_history() {
    let f = serve_three(2);
    let e = &f.endpoint;
    // A finishes on its own; B's JobManager archives it once cancelled.
    {
        let mut a = f.a.state();
        a.status = JobStatus::Finished;
        a.end = Some(1_700_000_005_000);
    }
    {
        let mut b = f.b.state();
        b.status = JobStatus::Canceled;
        b.end = Some(1_700_000_006_000);
    }
    assert!(f.directory.archive(JOB_B));
    assert!(!f.directory.archive(JOB_D), "no such job");
    let (_, list) = e.get("/jobs");
    assert_eq!(
        list,
        json!({"jobs": [
            {"id": JOB_STR, "status": "FINISHED"},
            {"id": JOB_B_STR, "status": "CANCELED"},
            {"id": JOB_C_STR, "status": "RUNNING"},
        ]})
    );
    let (_, a) = e.get(&format!("/jobs/{JOB_STR}"));
    assert_eq!(
        (a["state"].as_str(), a["duration"].as_u64()),
        (Some("FINISHED"), Some(5000))
    );
    let (_, b) = e.get(&format!("/jobs/{JOB_B_STR}/checkpoints"));
    assert_eq!(b["counts"]["total"], 0);
    // An ended job takes no more requests, with the reason.
    assert_error(
        e.post(
            &format!("/jobs/{JOB_B_STR}/savepoints"),
            r#"{"target-directory": "/sp"}"#,
        ),
        409,
        &["CANCELED"],
    );

    // A third ended job: the history keeps two, dropping the one that
    // ended first (A). Running jobs are never dropped.
    let d = FakeJob::named(JOB_D, "Late");
    f.directory.add(d.clone()).unwrap();
    {
        let mut d = d.state();
        d.status = JobStatus::Failed;
        d.end = Some(1_700_000_009_000);
    }
    let (_, list) = e.get("/jobs/overview");
    assert_eq!(ids(&list, "state"), ["CANCELED", "RUNNING", "FAILED"]);
    assert_eq!(
        ids(&list, "jid")[..2],
        [JOB_B_STR.to_string(), JOB_C_STR.to_string()]
    );
    assert_error(e.get(&format!("/jobs/{JOB_STR}")), 404, &[JOB_STR]);
    assert_eq!(f.directory.listed().len(), 3);
}

#[test]
fn a_job_id_is_listed_once_and_an_ended_one_may_be_resubmitted() {
    let f = serve_three(crate::DEFAULT_HISTORY);
    let again = FakeJob::named(JOB_B, "Sessions (again)");
    let err = f.directory.add(again.clone()).unwrap_err();
    assert_eq!(err, DirectoryError::AlreadyListed { job_id: JOB_B });
    assert!(err.to_string().contains(JOB_B_STR), "{err}");
    f.b.state().status = JobStatus::Failed;
    f.directory.add(again).unwrap();
    let (_, list) = f.endpoint.get("/jobs/overview");
    // The resubmission replaces the ended entry, listed as the newest.
    assert_eq!(
        ids(&list, "name"),
        ["KeyedCount", "Joins", "Sessions (again)"]
    );
    assert_eq!(ids(&list, "state"), ["RUNNING", "RUNNING", "RUNNING"]);
}

#[test]
fn prometheus_exports_every_job_not_archived_with_its_labels() {
    let f = serve_three(crate::DEFAULT_HISTORY);
    f.b.state().stats = vec![stats(4, CheckpointStatus::Completed, false)];
    assert!(f.directory.archive(JOB_C));
    let mut resp = f
        .endpoint
        .agent
        .get(&f.endpoint.url("/metrics"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let samples = |name: &str, labels: &[(&str, &str)]| -> Vec<f64> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name} is not a gauge: {other:?}"),
            })
            .collect()
    };
    for (id, name) in [(JOB_STR, "KeyedCount"), (JOB_B_STR, "Sessions")] {
        let job = [("job_id", id), ("job_name", name)];
        let subtask = [
            job[0],
            job[1],
            ("operator_id", "count"),
            ("subtask_index", "1"),
        ];
        assert_eq!(
            samples("floe_taskmanager_job_task_operator_numRecordsIn", &subtask),
            [400.0],
            "{id}"
        );
        assert_eq!(samples("floe_jobmanager_job_numRestarts", &job), [2.0]);
    }
    assert_eq!(
        samples(
            "floe_jobmanager_job_numberOfCompletedCheckpoints",
            &[("job_id", JOB_B_STR)]
        ),
        [1.0]
    );
    assert_eq!(
        samples(
            "floe_jobmanager_job_operator_lastCheckpointStateSize",
            &[("job_id", JOB_B_STR), ("operator_id", "count")]
        ),
        [4000.0]
    );
    // Three subtasks per job, two jobs; the archived job is gone.
    assert_eq!(
        samples("floe_taskmanager_job_task_operator_numRecordsIn", &[]).len(),
        6
    );
    assert!(
        !text.contains(JOB_C_STR),
        "archived job C exported:\n{text}"
    );
    // Each metric is described once, however many jobs it covers.
    assert_eq!(
        text.matches("# TYPE floe_jobmanager_job_numRestarts ")
            .count(),
        1
    );
    // The process's figures once, without job labels.
    assert_eq!(
        samples("floe_jobmanager_Status_Process_Threads_Count", &[]).len(),
        1
    );
}

#[test]
fn the_jobs_router_merges_with_cluster_routes_without_clashing() {
    let directory = JobDirectory::new();
    let cluster = Router::new()
        .route(
            "/overview",
            get(|| async { axum::Json(json!({"taskmanagers": 2})) }),
        )
        .route(
            "/v1/overview",
            get(|| async { axum::Json(json!({"taskmanagers": 2})) }),
        );
    let (jobs, unfetched) = jobs_router(directory.clone(), RestAuth::default());
    let server =
        RestServer::start_jobs_app(jobs.merge(cluster), unfetched, "127.0.0.1", 0).unwrap();
    let e = Fixture {
        job: FakeJob::new(),
        server,
        agent: agent(),
    };
    assert_eq!(e.get("/overview"), (200, json!({"taskmanagers": 2})));
    assert_eq!(e.get("/v1/overview"), (200, json!({"taskmanagers": 2})));
    assert_eq!(e.get("/jobs/overview"), (200, json!({"jobs": []})));
    assert_eq!(e.get("/v1/jobs"), (200, json!({"jobs": []})));
    assert!(directory.is_empty());
    assert_error(e.get(&format!("/jobs/{JOB_STR}")), 404, &[JOB_STR]);
    assert_error(
        e.get("/taskmanagers/x/nothing"),
        404,
        &["/taskmanagers/x/nothing"],
    );
    assert_eq!(get_raw(&e, "/").0, 200, "the dashboard");
}
