//! Jobs on a cluster of real processes: `floe jobmanager` on 127.0.0.1 and
//! three `floe taskmanager`s on 127.0.0.2-4 (one slot each), a keyed job
//! submitted with `floe run -m` at parallelism 2, its keyed exchange
//! crossing TaskManagers over TCP, its running counts written exactly once
//! into part files. Every run's output is compared with the counts computed
//! here; failures are real signals (SIGKILL, SIGSTOP) to a TaskManager that
//! runs part of the job.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::Sandbox;
use common::cluster::{Role, get_json, start_jobmanager_with, start_taskmanager_with, wait_until};
use common::s3::S3Server;

const KEYS: u64 = 100;

/// One cluster at a time: each test starts four or five processes, and on
/// a 2-core machine several clusters at once starve each other's
/// heartbeats and deadlines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A JobManager and three TaskManagers with one slot each, checkpointing
/// to an S3 server (a local directory only where none is installed and
/// none is required).
struct Cluster {
    _jm: Option<Role>,
    rest: String,
    tms: Vec<Role>,
    /// `state.checkpoints.dir` of the cluster's jobs.
    checkpoints: String,
    _s3: Option<S3Server>,
}

impl Cluster {
    fn start(sandbox: &Sandbox) -> Cluster {
        Cluster::start_with(sandbox, &[])
    }

    /// With `jm_args` (`-D key=value` pairs) given to the JobManager.
    fn start_with(sandbox: &Sandbox, jm_args: &[&str]) -> Cluster {
        Cluster::start_with_roles(sandbox, jm_args, &[])
    }

    /// With `jm_args` given to the JobManager and `tm_args` to each
    /// TaskManager.
    fn start_with_roles(sandbox: &Sandbox, jm_args: &[&str], tm_args: &[&str]) -> Cluster {
        let s3 = S3Server::for_sandbox(sandbox);
        let (jm, rpc, rest) = start_jobmanager_with(sandbox, "127.0.0.1:0", jm_args);
        let tms: Vec<Role> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|host| start_taskmanager_with(sandbox, &rpc, host, "1", tm_args))
            .collect();
        wait_until("three TaskManagers", Duration::from_secs(30), || {
            get_json(&format!("{rest}/overview"))["taskmanagers"] == 3
        });
        Cluster {
            _jm: Some(jm),
            rest,
            tms,
            checkpoints: checkpoint_dir(sandbox, s3.as_ref()),
            _s3: s3,
        }
    }

    /// `host:port` of the REST endpoint, as `floe run -m` takes it.
    fn address(&self) -> &str {
        self.rest.trim_start_matches("http://")
    }

    /// The TaskManagers whose slot a job holds now (by position in `tms`).
    fn busy(&self) -> Vec<usize> {
        let taskmanagers = get_json(&format!("{}/taskmanagers", self.rest));
        let busy: Vec<String> = taskmanagers["taskmanagers"]
            .as_array()
            .expect("a list")
            .iter()
            .filter(|t| t["freeSlots"] == 0)
            .map(|t| t["path"].as_str().unwrap_or_default().to_string())
            .collect();
        let hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
        (0..3)
            .filter(|i| busy.iter().any(|p| p.contains(hosts[*i])))
            .collect()
    }

    fn job(&self, id: &str) -> serde_json::Value {
        get_json(&format!("{}/jobs/{id}", self.rest))
    }

    fn completed_checkpoints(&self, id: &str) -> u64 {
        get_json(&format!("{}/jobs/{id}/checkpoints", self.rest))["counts"]["completed"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Where a cluster's jobs checkpoint: on `s3` if there is one.
fn checkpoint_dir(sandbox: &Sandbox, s3: Option<&S3Server>) -> String {
    match s3 {
        Some(_) => format!("s3://{}/checkpoints", common::s3::BUCKET),
        None => format!("file://{}", sandbox.path("checkpoints").display()),
    }
}

/// `floe run -m` arguments for keyed-count of `records` at parallelism 2
/// (at most `rate` records/s), writing into `out`, checkpointing into the
/// cluster's checkpoint directory every 200 ms.
fn keyed_count(
    cluster: &Cluster,
    sandbox: &Sandbox,
    records: u64,
    rate: Option<u64>,
    detached: bool,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "-m".into(), cluster.address().into()];
    if detached {
        args.push("-d".into());
    }
    args.extend(
        [
            "-p",
            "2",
            "keyed-count",
            "--records",
            &records.to_string(),
            "--keys",
            &KEYS.to_string(),
            "--output",
            sandbox.path("out").to_str().unwrap(),
            "-D",
            "execution.checkpointing.interval=200 ms",
            "-D",
            &format!("state.checkpoints.dir={}", cluster.checkpoints),
        ]
        .map(String::from),
    );
    if let Some(rate) = rate {
        args.extend(["--rate".to_string(), rate.to_string()]);
    }
    args
}

/// The job id `floe run -m` printed.
fn submitted_id(stdout: &str) -> String {
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no JobID in: {stdout}"))
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

/// Every `<key> <count>` line keyed-count must write: each key's running
/// count from 1 to its number of records, once.
fn expected(records: u64) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    for k in 0..KEYS {
        let n = records / KEYS + u64::from(k < records % KEYS);
        for c in 1..=n {
            lines.insert(format!("{k} {c}"), 1);
        }
    }
    lines
}

/// The lines of the committed (visible) part files, with how often each
/// occurs.
fn committed(dir: &Path) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("output directory") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            *lines.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    lines
}

fn assert_exactly_once(dir: &Path, records: u64) {
    let got = committed(dir);
    let want = expected(records);
    let missing = want.keys().filter(|l| !got.contains_key(*l)).count();
    let extra = got.keys().filter(|l| !want.contains_key(*l)).count();
    let doubled = got.values().filter(|n| **n > 1).count();
    assert!(
        missing == 0 && extra == 0 && doubled == 0,
        "{missing} lines missing, {extra} unexpected, {doubled} written more than once"
    );
}

fn wait_finished(cluster: &Cluster, id: &str, timeout: Duration) {
    let what = format!(
        "job {id} to finish (JobManager so far:\n{})",
        cluster._jm.as_ref().map(Role::stderr).unwrap_or_default()
    );
    wait_until(&what, timeout, || {
        let state = cluster.job(id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !matches!(state.as_str(), "FAILED" | "CANCELED"),
            "job {id} ended {state}"
        );
        state == "FINISHED"
    });
}

#[test]
fn a_keyed_job_runs_across_taskmanagers_exactly_once() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let records = 50_000;
    let out =
        common::run(&mut sandbox.floe(keyed_count(&cluster, &sandbox, records, None, false))).ok();
    let id = submitted_id(&out.stdout);
    assert!(
        out.stdout
            .contains(&format!("Job with JobID {id} has finished.")),
        "{}",
        out.stdout
    );
    assert_exactly_once(&sandbox.path("out"), records);
    assert_eq!(cluster.job(&id)["state"], "FINISHED");
    assert!(
        cluster.completed_checkpoints(&id) >= 1,
        "the job's final checkpoint completed"
    );
    // The TaskManagers reported what their subtasks counted: the
    // JobManager serves the source's records out, all of them.
    let vertices = cluster.job(&id)["vertices"].clone();
    let source = vertices[0]["id"].as_str().expect("a vertex id");
    let out = get_json(&format!(
        "{}/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&agg=sum",
        cluster.rest
    ));
    assert_eq!(out[0]["sum"].as_f64(), Some(records as f64), "{out}");
    // The job ran on two TaskManagers and gave their slots back.
    assert!(cluster.busy().is_empty());
    // Each TaskManager's data port is the one its data plane listens on.
    let taskmanagers = get_json(&format!("{}/taskmanagers", cluster.rest));
    for tm in taskmanagers["taskmanagers"].as_array().unwrap() {
        let port = tm["dataPort"].as_i64().unwrap();
        let address = tm["dataAddress"].as_str().unwrap();
        assert!(port > 0 && address.contains(&format!(":{port}@")), "{tm}");
    }
}

/// One Prometheus scrape of `url`, parsed: (metric, labels, value).
fn scrape(url: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let text = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_body()
        .read_to_string()
        .expect("body");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{text}"));
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{} is not a gauge: {other:?}", s.metric),
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (s.metric, labels, value)
        })
        .collect()
}

#[test]
fn each_taskmanager_serves_the_metrics_of_its_own_subtasks() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let prom = ["-D", "metrics.reporter.prom.port=0"];
    let cluster = Cluster::start_with_roles(&sandbox, &prom, &prom);
    // Each TaskManager's endpoint and id, as it printed them.
    let tms: Vec<(String, String)> = cluster
        .tms
        .iter()
        .map(|tm| {
            let url = tm.wait_line("Prometheus endpoint: ");
            let line = tm.wait_line("TaskManager ");
            let id = line.split(" registered with").next().unwrap().to_string();
            (url, id)
        })
        .collect();
    let records = 120_000;
    let id = submit_slowly_past_two_checkpoints(&cluster, &sandbox, records);
    let source = cluster.job(&id)["vertices"][0]["id"]
        .as_str()
        .expect("a vertex id")
        .to_string();
    let count = cluster.job(&id)["vertices"][1]["id"]
        .as_str()
        .expect("the keyed operator's id")
        .to_string();
    let served_by_jobmanager = || {
        get_json(&format!(
            "{}/jobs/{id}/vertices/{source}/subtasks/metrics?get=numRecordsOut&agg=sum",
            cluster.rest
        ))[0]["sum"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let before = served_by_jobmanager();
    // The source subtasks' records out, as the TaskManagers count them.
    let mut on_taskmanagers = 0.0;
    let mut bytes_in = 0.0;
    let mut hosting = Vec::new();
    for (i, (url, tm_id)) in tms.iter().enumerate() {
        let samples = scrape(url);
        let process = |name: &str| {
            samples
                .iter()
                .find(|(m, l, _)| m == name && l.get("tm_id") == Some(tm_id))
                .map(|(_, _, v)| *v)
                .unwrap_or_else(|| panic!("no {name} for {tm_id} at {url}"))
        };
        assert!(process("floe_taskmanager_Status_Process_Memory_RSS") > 1e6);
        let cpu = process("floe_taskmanager_Status_Process_CPU_Time");
        let out: Vec<f64> = samples
            .iter()
            .filter(|(m, l, _)| {
                m == "floe_taskmanager_job_task_operator_numRecordsOut"
                    && l.get("job_id") == Some(&id)
                    && l.get("operator_id") == Some(&source)
            })
            .inspect(|(_, l, _)| assert_eq!(l.get("tm_id"), Some(tm_id), "{l:?}"))
            .map(|(_, _, v)| *v)
            .collect();
        // The keyed exchange crosses between the two TaskManagers: what
        // arrives over the network counts into the receiving task.
        bytes_in += samples
            .iter()
            .filter(|(m, l, _)| {
                m == "floe_taskmanager_job_task_numBytesIn"
                    && l.get("job_id") == Some(&id)
                    && l.get("task_id") == Some(&count)
            })
            .map(|(_, _, v)| *v)
            .sum::<f64>();
        if !out.is_empty() {
            hosting.push(i);
            // (An idle TaskManager may not have used a clock tick yet.)
            assert!(cpu > 0.0, "{tm_id} ran subtasks for seconds");
        }
        on_taskmanagers += out.iter().sum::<f64>();
    }
    assert_eq!(
        hosting,
        cluster.busy(),
        "exactly the TaskManagers running the job's subtasks report them"
    );
    // The JobManager hears each TaskManager's counts a second later: it
    // never reports more than they counted, and soon as much.
    assert!(
        on_taskmanagers >= before && on_taskmanagers > 0.0,
        "TaskManagers {on_taskmanagers}, JobManager before {before}"
    );
    wait_until(
        "the JobManager to catch up with the TaskManagers",
        Duration::from_secs(10),
        || served_by_jobmanager() >= on_taskmanagers,
    );
    assert!(bytes_in > 0.0, "no bytes received over the network");
    wait_until(
        "the JobManager to serve the bytes received",
        Duration::from_secs(10),
        || {
            get_json(&format!(
                "{}/jobs/{id}/vertices/{count}/subtasks/metrics?get=numBytesIn&agg=sum",
                cluster.rest
            ))[0]["sum"]
                .as_f64()
                .is_some_and(|b| b >= bytes_in)
        },
    );
    // The JobManager's reporter port serves the job's metrics as its
    // REST port does.
    let jm_url = cluster
        ._jm
        .as_ref()
        .unwrap()
        .wait_line("Prometheus endpoint: ");
    let completed = scrape(&jm_url)
        .into_iter()
        .find(|(m, l, _)| {
            m == "floe_jobmanager_job_numberOfCompletedCheckpoints" && l.get("job_id") == Some(&id)
        })
        .map(|(_, _, v)| v);
    assert!(completed.is_some_and(|c| c >= 2.0), "{completed:?}");
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&sandbox.path("out"), records);
    // A finished job's subtasks are gone from the TaskManagers' metrics.
    for (url, _) in &tms {
        assert!(
            !scrape(url)
                .iter()
                .any(|(_, l, _)| l.get("job_id") == Some(&id)),
            "{url} still reports job {id}"
        );
    }
}

/// Submits keyed-count of `records` at 15 000 records/s (detached) and
/// waits until two of its checkpoints completed; returns the job's id.
fn submit_slowly_past_two_checkpoints(
    cluster: &Cluster,
    sandbox: &Sandbox,
    records: u64,
) -> String {
    let args = keyed_count(cluster, sandbox, records, Some(15_000), true);
    let id = submitted_id(&common::run(&mut sandbox.floe(args)).ok().stdout);
    wait_until("two completed checkpoints", Duration::from_secs(30), || {
        cluster.completed_checkpoints(&id) >= 2
    });
    id
}

/// Starts a slow job, waits for two completed checkpoints, hits one of
/// the TaskManagers running it with `signal`, and expects the job to
/// finish on the others with output equal to a failure-free run.
fn survives_losing_a_taskmanager(signal: i32) {
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let records = 120_000;
    let id = submit_slowly_past_two_checkpoints(&cluster, &sandbox, records);
    let busy = cluster.busy();
    assert_eq!(busy.len(), 2, "parallelism 2 over one-slot TaskManagers");
    let victim = &cluster.tms[busy[0]];
    victim.signal(signal);
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&sandbox.path("out"), records);
    let exceptions = get_json(&format!("{}/jobs/{id}/exceptions", cluster.rest));
    let entries = exceptions["exceptionHistory"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["restarted"] == true),
        "the loss, and the restart it caused, are in the exception history: {exceptions}"
    );
    // Failures reported for tasks of a lost process name the tasks.
    assert!(
        entries.iter().all(|e| e["taskName"]
            .as_str()
            .is_some_and(|n| n.contains('(') && !n.starts_with("task "))),
        "{exceptions}"
    );
    // (A restart from scratch instead of the latest checkpoint would have
    // committed the lines before it twice.)
}

#[test]
fn a_killed_taskmanager_costs_a_restart_not_a_record() {
    let _serial = one_cluster_at_a_time();
    survives_losing_a_taskmanager(libc::SIGKILL);
}

#[test]
fn a_frozen_taskmanager_is_declared_lost_and_costs_a_restart_not_a_record() {
    let _serial = one_cluster_at_a_time();
    survives_losing_a_taskmanager(libc::SIGSTOP);
}

#[test]
fn a_lost_taskmanager_nobody_replaces_costs_parallelism_not_records() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let cluster = Cluster::start_with(
        &sandbox,
        &[
            "-D",
            "jobmanager.adaptive-scheduler.resource-stabilization-timeout=1 s",
        ],
    );
    let records = 120_000;
    let mut args = keyed_count(&cluster, &sandbox, records, Some(15_000), true);
    let p = args.iter().position(|a| a == "2").expect("-p 2");
    args[p] = "3".into(); // one subtask per TaskManager
    let id = submitted_id(&common::run(&mut sandbox.floe(&args)).ok().stdout);
    wait_until("two completed checkpoints", Duration::from_secs(30), || {
        cluster.completed_checkpoints(&id) >= 2
    });
    assert_eq!(cluster.busy(), [0, 1, 2]);
    cluster.tms[1].signal(libc::SIGKILL);
    // Two slots are left for three subtasks: after the stabilization
    // timeout the job runs at parallelism 2, its 128 key groups and its
    // generator's splits spread over two subtasks.
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&sandbox.path("out"), records);
    let jm_log = cluster._jm.as_ref().unwrap().stderr();
    assert!(
        jm_log.contains(&format!(
            "Job {id} restarts at parallelism 2: the cluster offers 2 of the 3 task slots it needs"
        )),
        "{jm_log}"
    );
    // The REST API shows the parallelism the job ran at last.
    let vertices = cluster.job(&id)["vertices"].clone();
    let parallelism: Vec<u64> = vertices
        .as_array()
        .expect("vertices")
        .iter()
        .map(|v| v["parallelism"].as_u64().unwrap())
        .collect();
    assert_eq!(parallelism.iter().max(), Some(&2), "{vertices}");
    // (Had a restart lost the state of the key groups its third subtask
    // held, their counts would have started again at 1; had it restored
    // them twice, lines would be doubled.)
}

#[test]
fn queryable_state_is_read_from_the_taskmanager_that_owns_the_key() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let records = 1_000_000;
    let mut args = keyed_count(&cluster, &sandbox, records, Some(15_000), true);
    // Settings from a file here travel with the submission.
    let conf = sandbox.write("job-conf.yaml", "queryable-state:\n  enable: true\n");
    args.extend(["--config".into(), conf.to_str().unwrap().into()]);
    let id = submitted_id(&common::run(&mut sandbox.floe(&args)).ok().stdout);
    let query = |key: &str| {
        common::run(&mut sandbox.floe(["query", "-m", cluster.address(), &id, "count", key]))
    };
    // Keys 0..10 are spread over both subtasks, so over both TaskManagers:
    // each count is read where its key group lives, and only grows.
    let mut last = [0u64; 10];
    wait_until(
        "every key's count to be read",
        Duration::from_secs(30),
        || {
            for (k, last) in last.iter_mut().enumerate() {
                let out = query(&k.to_string());
                // Until a subtask first uses its state, the state is not
                // announced anywhere (as embedded).
                if !out.status.success() && out.stderr.contains("no queryable state 'count'") {
                    continue;
                }
                let out = out.ok();
                let text = out.stdout.trim();
                if text.starts_with("not found") {
                    continue;
                }
                let count: u64 = text
                    .parse()
                    .unwrap_or_else(|_| panic!("not a count: {text:?}"));
                assert!(
                    count >= *last && count <= records / KEYS,
                    "{count} after {last}"
                );
                *last = count;
            }
            last.iter().all(|c| *c > 0)
        },
    );
    let rest = get_json(&format!("{}/jobs/{id}/state/count?key=7", cluster.rest));
    assert_eq!(rest["found"], true, "{rest}");
    assert!(rest["value"].as_u64().unwrap() >= last[7], "{rest}");
    assert_eq!(
        query("100000").ok().stdout.trim(),
        "not found: key 100000 has no state in 'count'"
    );
    common::run(&mut sandbox.floe(["query", "-m", cluster.address(), &id, "counts", "3"]))
        .fails_with(&["no queryable state 'counts'", "count"]);
    query("three").fails_with(&["wrong key type for queryable state 'count'", "u64"]);
    common::run(&mut sandbox.floe(["cancel", "-m", cluster.address(), &id])).ok();
}

#[test]
fn unaligned_checkpoints_across_taskmanagers_cost_a_restart_not_a_record() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    // As fast as it goes, so that the keyed exchange between TaskManagers
    // is full when barriers pass and checkpoints persist in-flight records.
    let records = 3_000_000;
    let mut args = keyed_count(&cluster, &sandbox, records, None, true);
    args.extend(["-D", "execution.checkpointing.unaligned.enabled=true"].map(String::from));
    let id = submitted_id(&common::run(&mut sandbox.floe(&args)).ok().stdout);
    wait_until(
        "a completed unaligned checkpoint holding in-flight records",
        Duration::from_secs(60),
        || {
            let history = get_json(&format!("{}/jobs/{id}/checkpoints", cluster.rest));
            history["history"].as_array().is_some_and(|h| {
                h.iter().any(|c| {
                    c["status"] == "COMPLETED"
                        && c["unaligned"] == true
                        && c["persisted_data"].as_u64().unwrap_or(0) > 0
                })
            })
        },
    );
    let busy = cluster.busy();
    assert_eq!(busy.len(), 2, "parallelism 2 over one-slot TaskManagers");
    cluster.tms[busy[1]].signal(libc::SIGKILL);
    wait_finished(&cluster, &id, Duration::from_secs(180));
    assert_exactly_once(&sandbox.path("out"), records);
    let exceptions = get_json(&format!("{}/jobs/{id}/exceptions", cluster.rest));
    assert!(
        exceptions["exceptionHistory"]["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["restarted"] == true)),
        "the kill cost a restart: {exceptions}"
    );
}

/// Waits until `dir` holds at least `n` committed lines.
fn wait_committed(dir: &Path, n: usize) {
    wait_until(
        &format!("{n} committed lines in {}", dir.display()),
        Duration::from_secs(60),
        || std::fs::read_dir(dir).is_ok() && committed(dir).values().sum::<usize>() >= n,
    );
}

#[test]
fn a_savepoint_moves_between_a_cluster_and_an_embedded_job_both_ways() {
    let _serial = one_cluster_at_a_time();
    let sandbox = Sandbox::new();
    let cluster = Cluster::start(&sandbox);
    let records = 90_000;
    let savepoints = sandbox.path("savepoints");
    let savepoints = savepoints.to_str().unwrap();
    let out = sandbox.path("out");

    // On the cluster at p = 2, stopped with a savepoint.
    let submitted = common::run(&mut sandbox.floe(keyed_count(
        &cluster,
        &sandbox,
        records,
        Some(10_000),
        true,
    )))
    .ok();
    let id = submitted_id(&submitted.stdout);
    wait_committed(&out, 5_000);
    let stopped = common::run(&mut sandbox.floe([
        "stop",
        "-m",
        cluster.address(),
        "--savepointPath",
        savepoints,
        &id,
    ]))
    .ok();
    let from_cluster = common::savepoint_path(&stopped);
    wait_finished(&cluster, &id, Duration::from_secs(30));
    let after_cluster = committed(&out).values().sum::<usize>();
    assert!(after_cluster < records as usize, "stopped before its end");

    // Embedded at p = 1 from it, stopped with a savepoint again.
    let registry = sandbox.path("registry");
    let mut args = keyed_count(&cluster, &sandbox, records, Some(10_000), false);
    args.drain(1..3); // no -m: embedded
    args.splice(
        1..1,
        ["-s".to_string(), from_cluster, "-p".into(), "1".into()],
    );
    // (keyed_count's own `-p 2` follows; the later flag wins, so drop it.)
    let p2 = args.iter().position(|a| a == "2").expect("-p 2");
    args.drain(p2 - 1..=p2);
    let embedded = common::start(sandbox.floe(&args).env("FLOE_REGISTRY_DIR", &registry));
    wait_until(
        "the embedded job to register",
        Duration::from_secs(30),
        || common::registered_job(&registry).is_some(),
    );
    let embedded_id = common::registered_job(&registry).unwrap();
    wait_committed(&out, after_cluster + 5_000);
    let stopped = common::run(
        sandbox
            .floe(["stop", "--savepointPath", savepoints, &embedded_id])
            .env("FLOE_REGISTRY_DIR", &registry),
    )
    .ok();
    let from_embedded = common::savepoint_path(&stopped);
    assert!(embedded.finish().status.success());

    // Back on the cluster at p = 3 (all three TaskManagers), to the end.
    let mut args = keyed_count(&cluster, &sandbox, records, None, false);
    let p2 = args.iter().position(|a| a == "2").expect("-p 2");
    args[p2] = "3".into();
    args.splice(3..3, ["-s".to_string(), from_embedded, "-d".to_string()]);
    let id = submitted_id(&common::run(&mut sandbox.floe(&args)).ok().stdout);
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&out, records);
}

#[test]
fn a_restarted_jobmanager_recovers_its_job_from_the_latest_checkpoint() {
    let _serial = one_cluster_at_a_time();
    use common::cluster::HEARTBEATS;
    let sandbox = Sandbox::new();
    let s3 = S3Server::for_sandbox(&sandbox);
    // The jobs and their checkpoints on the S3 server, where any
    // JobManager process finds them.
    let (ha, ha_jobs) = match &s3 {
        Some(s3) => (
            format!("s3://{}/ha", common::s3::BUCKET),
            s3.root().join(common::s3::BUCKET).join("ha/jobs"),
        ),
        None => (
            format!("file://{}", sandbox.path("ha").display()),
            sandbox.path("ha/jobs"),
        ),
    };
    let ha = format!("high-availability.storageDir={ha}");
    let jobmanager = |rpc: &str| {
        let mut args = vec![
            "jobmanager",
            "--rpc-address",
            rpc,
            "-D",
            "rest.port=0",
            "-D",
            &ha,
        ];
        args.extend(HEARTBEATS);
        let jm = Role::start(&sandbox, &args);
        let rpc = jm.wait_line("JobManager RPC: ");
        let rest = jm.wait_line("REST endpoint: ");
        (jm, rpc, rest)
    };
    let (mut jm, rpc, rest) = jobmanager("127.0.0.1:0");
    let tms: Vec<Role> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|host| {
            let mut args = vec![
                "taskmanager",
                "--jobmanager",
                &rpc,
                "--bind",
                host,
                "--slots",
                "1",
                "-D",
                "cluster.registration.max-timeout=500 ms",
            ];
            args.extend(HEARTBEATS);
            Role::start(&sandbox, &args)
        })
        .collect();
    wait_until("two TaskManagers", Duration::from_secs(30), || {
        get_json(&format!("{rest}/overview"))["taskmanagers"] == 2
    });
    // `jm` stays outside: the test kills it.
    let cluster = Cluster {
        _jm: None,
        rest: rest.clone(),
        tms,
        checkpoints: checkpoint_dir(&sandbox, s3.as_ref()),
        _s3: s3,
    };
    let records = 120_000;
    let id = submit_slowly_past_two_checkpoints(&cluster, &sandbox, records);
    assert!(
        files_under(&ha_jobs) > 0,
        "the job is kept in the HA storage"
    );
    jm.signal(libc::SIGKILL);
    let _ = jm.wait_exit(Duration::from_secs(10));

    // A new JobManager on the same RPC address, with the same HA storage.
    let (jm2, _, rest2) = jobmanager(&rpc);
    jm2.wait_line(&format!("Job {id} recovered from "));
    let cluster = Cluster {
        _jm: Some(jm2),
        rest: rest2,
        ..cluster
    };
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&sandbox.path("out"), records);
    // Finished: nothing is left for a next JobManager to recover.
    wait_until(
        "the HA storage to forget the job",
        Duration::from_secs(10),
        || {
            // (s3s-fs leaves a deleted object's directories behind.)
            files_under(&ha_jobs) == 0
        },
    );
}

/// How many files are in `dir` and its subdirectories (0 if it is gone).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum()
    })
}

/// A network namespace joined to this host by a veth pair: a host of its
/// own for one TaskManager, which an nft rule inside it can cut off.
/// Removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    /// A namespace, or `None` (with the reason) when this process cannot
    /// make one: not root, or `ip`/`nft` missing.
    fn create() -> Result<Netns, String> {
        // SAFETY: reading our own effective uid.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        for tool in ["ip", "nft"] {
            let found = std::process::Command::new(tool)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!("`{tool}` is not installed"));
            }
        }
        let n = 20 + std::process::id() % 200;
        let ns = Netns {
            name: format!("floe-part-{n}"),
            host_if: format!("flh{n}"),
            host_ip: format!("10.77.{n}.1"),
            ns_ip: format!("10.77.{n}.2"),
        };
        let ns_if = format!("flt{n}");
        let _ = Netns::run(&["netns", "del", &ns.name]);
        let _ = Netns::run(&["link", "del", &ns.host_if]);
        for args in [
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &ns.name],
            vec![
                "addr",
                "add",
                &format!("{}/24", ns.host_ip),
                "dev",
                &ns.host_if,
            ],
            vec!["link", "set", &ns.host_if, "up"],
            vec![
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/24", ns.ns_ip),
                "dev",
                &ns_if,
            ],
            vec!["-n", &ns.name, "link", "set", &ns_if, "up"],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
        ] {
            Netns::run(&args)?;
        }
        Ok(ns)
    }

    fn run(args: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Drops every packet between the namespace and the host (the links
    /// stay up: a partition, not a closed port).
    fn partition(&self) {
        for rule in [
            "add table inet floe".to_string(),
            "add chain inet floe input { type filter hook input priority 0; policy accept; }"
                .into(),
            "add chain inet floe output { type filter hook output priority 0; policy accept; }"
                .into(),
            format!("add rule inet floe input ip saddr {} drop", self.host_ip),
            format!("add rule inet floe output ip daddr {} drop", self.host_ip),
        ] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.name, "nft"])
                .args(rule.split(' '))
                .output()
                .expect("nft");
            assert!(
                out.status.success(),
                "nft {rule}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Netns::run(&["netns", "del", &self.name]);
        let _ = Netns::run(&["link", "del", &self.host_if]);
    }
}

#[test]
fn a_partitioned_taskmanager_is_declared_lost_and_costs_a_restart_not_a_record() {
    let _serial = one_cluster_at_a_time();
    use common::cluster::HEARTBEATS;
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) if std::env::var_os("FLOE_REQUIRE_NETNS").is_none() => {
            eprintln!("skipped: cannot make a network namespace ({why})");
            return;
        }
        Err(why) => panic!("FLOE_REQUIRE_NETNS is set and: {why}"),
    };
    let s3 = match common::s3::S3Server::start(&ns.host_ip) {
        Ok(s3) => s3,
        Err(why) if std::env::var_os("FLOE_REQUIRE_S3").is_none() => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(why) => panic!("FLOE_REQUIRE_S3 is set and: {why}"),
    };
    let sandbox = Sandbox::new();
    let mut jm_args = vec![
        "jobmanager".to_string(),
        "--rpc-address".into(),
        format!("{}:0", ns.host_ip),
        "-D".into(),
        "rest.port=0".into(),
    ];
    jm_args.extend(HEARTBEATS.map(String::from));
    let mut cmd = sandbox.floe(&jm_args);
    cmd.envs(s3.env());
    let jm = Role::spawn(cmd);
    let rpc = jm.wait_line("JobManager RPC: ");
    let rest = jm.wait_line("REST endpoint: ");
    let host_tm = |sandbox: &Sandbox| {
        let mut args = vec!["taskmanager", "--jobmanager", &rpc, "--bind", &ns.host_ip];
        args.extend(["--slots", "1"]);
        args.extend(HEARTBEATS);
        let mut cmd = sandbox.floe(&args);
        cmd.envs(s3.env());
        Role::spawn(cmd)
    };
    let mut tms = vec![host_tm(&sandbox), host_tm(&sandbox)];
    let mut cmd = sandbox.cmd("ip");
    cmd.args(["netns", "exec", &ns.name, common::FLOE, "taskmanager"])
        .args(["--jobmanager", &rpc, "--bind", &ns.ns_ip, "--slots", "1"])
        .args(HEARTBEATS)
        .envs(s3.env());
    tms.push(Role::spawn(cmd));
    wait_until("three TaskManagers", Duration::from_secs(30), || {
        get_json(&format!("{rest}/overview"))["taskmanagers"] == 3
    });
    // Checkpoints on the S3 server every host reaches.
    let mut cluster = Cluster {
        _jm: Some(jm),
        rest,
        tms,
        checkpoints: checkpoint_dir(&sandbox, Some(&s3)),
        _s3: None,
    };
    let records = 120_000;
    let mut args = keyed_count(&cluster, &sandbox, records, Some(15_000), true);
    let p = args.iter().position(|a| a == "2").expect("-p 2");
    args[p] = "3".into(); // every TaskManager runs a subtask
    let id = submitted_id(&common::run(&mut sandbox.floe(&args)).ok().stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.completed_checkpoints(&id) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two checkpoints in 30 s: {}\nJobManager:\n{}\nTaskManagers:\n{}",
            get_json(&format!("{}/jobs/{id}/checkpoints", cluster.rest)),
            cluster._jm.as_ref().unwrap().stderr(),
            cluster
                .tms
                .iter()
                .map(|t| t.stderr())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ns.partition();
    // A TaskManager that registers now takes the partitioned one's place.
    cluster.tms.push(host_tm(&sandbox));
    wait_finished(&cluster, &id, Duration::from_secs(90));
    assert_exactly_once(&sandbox.path("out"), records);
    let jm_log = cluster._jm.as_ref().unwrap().stderr();
    assert!(
        jm_log.contains("lost: heartbeat timed out"),
        "the partitioned TaskManager is declared lost by heartbeats:\n{jm_log}"
    );
}
