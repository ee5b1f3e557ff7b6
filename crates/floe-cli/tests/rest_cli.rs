//! Controlling running jobs as a user would: a real `floe run keyed-count`
//! process serves its REST API and registers itself in a job registry (a
//! per-test directory through `FLOE_REGISTRY_DIR`); `floe list`,
//! `checkpoints`, `savepoint`, `cancel` and `stop` — separate processes —
//! find it there (or through `-m host:port`) and act on it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Output, Running, Sandbox, run, start};
use serde_json::Value;

/// Long enough that no test sees the job end by itself: 20 s of input.
const RECORDS: &str = "100000";
const RATE: &str = "5000";

/// A running keyed-count job and where it is registered.
struct Job {
    process: Running,
    registry: PathBuf,
    id: String,
    rest: String,
}

/// `floe` with the sandbox's registry.
fn floe(sb: &Sandbox, registry: &Path, args: &[&str]) -> Output {
    run(sb.floe(args).env("FLOE_REGISTRY_DIR", registry))
}

fn url_of(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Starts keyed-count with checkpoints every 200 ms (and `extra` flags) and
/// waits for its registry entry.
fn start_job(sb: &Sandbox, name: &str, extra: &[&str]) -> Job {
    let registry = sb.path(&format!("{name}-registry"));
    let checkpoints = sb.path(&format!("{name}-checkpoints"));
    let mut cmd = sb.floe([
        "run",
        "keyed-count",
        "--records",
        RECORDS,
        "--keys",
        "13",
        "--rate",
        RATE,
        "-D",
        "execution.checkpointing.interval=200ms",
    ]);
    cmd.arg("-D")
        .arg(format!("state.checkpoints.dir={}", url_of(&checkpoints)))
        .args(extra)
        .env("FLOE_REGISTRY_DIR", &registry);
    let mut process = start(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = std::fs::read_dir(&registry).ok().and_then(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.ends_with(".json") && !n.starts_with('.')
                })
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        });
        if let Some(entry) = entry {
            assert_eq!(entry["name"], "KeyedCount", "{entry}");
            return Job {
                process,
                registry,
                id: entry["job_id"].as_str().unwrap().to_string(),
                rest: entry["rest_address"].as_str().unwrap().to_string(),
            };
        }
        assert!(
            !process.has_exited(),
            "the job ended before it registered:\n{}",
            process.finish().stderr
        );
        assert!(
            Instant::now() < deadline,
            "no registry entry in {} after 30 s",
            registry.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Job {
    fn get(&self, path: &str) -> Value {
        let mut resp = ureq::get(&format!("http://{}{path}", self.rest))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        resp.body_mut().read_json().expect("a JSON answer")
    }

    fn completed_checkpoints(&self) -> u64 {
        self.get(&format!("/jobs/{}/checkpoints", self.id))["counts"]["completed"]
            .as_u64()
            .expect("counts.completed")
    }

    /// Waits until at least `n` checkpoints completed.
    fn wait_for_checkpoints(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.completed_checkpoints() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} checkpoints after 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn entry_file(&self) -> PathBuf {
        self.registry.join(format!("{}.json", self.id))
    }

    /// Waits for the job's process to end; its output.
    fn ended(self) -> Output {
        let out = self.process.finish();
        assert!(
            out.stderr
                .contains(&format!("REST endpoint: http://{}", self.rest)),
            "the job prints where its REST endpoint listens\n{}",
            out.stderr
        );
        assert!(
            !self.registry.join(format!("{}.json", self.id)).exists(),
            "the job's registry entry is removed when it ends"
        );
        out
    }
}

/// The path of a `Savepoint completed. Path: <location>` line.
#[track_caller]
fn savepoint_path(out: &Output) -> String {
    let loc = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| {
            panic!(
                "{}: no `Savepoint completed. Path:` line\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.what, out.stdout, out.stderr
            )
        });
    loc.to_string()
}

/// The directory of a `file://` location, checked to hold a savepoint.
#[track_caller]
fn assert_savepoint_dir(location: &str, under: &Path, job_id: &str) -> PathBuf {
    let dir = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
    assert_eq!(dir.parent(), Some(under), "{location}");
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("savepoint-{}-", &job_id[..6])),
        "{name}"
    );
    assert!(
        dir.join("_metadata").is_file(),
        "{location} has a _metadata"
    );
    dir
}

#[test]
fn list_rest_checkpoints_and_cancel() {
    let sb = Sandbox::new();
    let job = start_job(&sb, "a", &[]);
    let id = job.id.clone();

    let out = floe(&sb, &job.registry, &["list"]).ok();
    let lines = out.lines();
    assert_eq!(
        lines[0],
        "------------------ Running/Restarting Jobs -------------------"
    );
    assert!(
        lines[1].ends_with(&format!(" : {id} : KeyedCount (RUNNING)")),
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 3, "{}", out.stdout);

    // The REST API, as any HTTP client sees it.
    let jobs = job.get("/jobs");
    assert_eq!(jobs["jobs"][0]["id"], id.as_str());
    assert_eq!(jobs["jobs"][0]["status"], "RUNNING");
    let details = job.get(&format!("/jobs/{id}"));
    assert_eq!(details["jid"], id.as_str());
    assert_eq!(details["name"], "KeyedCount");
    assert_eq!(details["state"], "RUNNING");
    assert_eq!(details["end-time"], -1);
    let uids: Vec<&str> = details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert!(uids.contains(&"generator"), "{details}");
    assert_eq!(job.get("/v1/jobs/overview")["jobs"][0]["jid"], id.as_str());

    job.wait_for_checkpoints(1);
    let first = job.completed_checkpoints();
    job.wait_for_checkpoints(first + 2);
    let stats = job.get(&format!("/jobs/{id}/checkpoints"));
    let latest = &stats["latest"]["completed"];
    assert_eq!(latest["status"], "COMPLETED");
    assert_eq!(latest["is_savepoint"], false);
    assert_eq!(stats["history"][0]["id"], latest["id"], "newest first");

    // A unique prefix is enough.
    let out = floe(&sb, &job.registry, &["checkpoints", &id[..8]]).ok();
    let header = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with("ID "))
        .unwrap_or_else(|| panic!("no table header\n{}", out.stdout));
    for col in ["STATUS", "TYPE", "DURATION", "SIZE", "PATH"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        out.stdout.contains("COMPLETED  checkpoint"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .starts_with(&format!("Job {id} (KeyedCount, RUNNING): ")),
        "{}",
        out.stdout
    );

    // A wrong id is refused and leaves the job alone.
    floe(
        &sb,
        &job.registry,
        &["cancel", "ffffffffffffffffffffffffffffffff"],
    )
    .fails_with(&["ffffffffffffffffffffffffffffffff", "no running job"]);
    floe(
        &sb,
        &job.registry,
        &["checkpoints", "-m", &job.rest, "ffffffff"],
    )
    .fails_with(&["no job with id ffffffff", &job.rest, &id]);

    let out = floe(&sb, &job.registry, &["cancel", &id]).ok();
    assert!(
        out.stdout.contains(&format!("Cancelled job {id}.")),
        "{}",
        out.stdout
    );
    let registry = job.registry.clone();
    let out = job.ended();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a cancelled job does not succeed"
    );
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);
    let out = floe(&sb, &registry, &["list"]).ok();
    assert_eq!(out.stdout, "No running jobs.\n");
}

#[test]
fn bad_ids_flags_and_unreachable_endpoints_are_clear_errors() {
    let sb = Sandbox::new();
    let registry = sb.path("empty-registry");
    let id = "0123456789abcdef0123456789abcdef";
    floe(&sb, &registry, &["checkpoints", id]).fails_with(&[
        id,
        "no running job",
        &registry.display().to_string(),
    ]);
    floe(&sb, &registry, &["savepoint", id, "/tmp/x"]).fails_with(&[id, "no running job"]);
    for args in [
        vec!["list", "-m", "127.0.0.1:1"],
        vec!["cancel", "-m", "127.0.0.1:1", id],
        vec!["savepoint", "-m", "127.0.0.1:1", id, "/tmp/x"],
        vec!["stop", "-m", "127.0.0.1:1", id],
        vec!["checkpoints", "--jobmanager", "127.0.0.1:1", id],
    ] {
        floe(&sb, &registry, &args).fails_with(&[
            "127.0.0.1:1",
            "connection refused",
            "the job may have ended",
        ]);
    }
    floe(&sb, &registry, &["cancel", "-m", "nowhere", id])
        .fails_with(&["-m/--jobmanager nowhere", "host:port"]);
    assert_eq!(
        floe(&sb, &registry, &["list"]).ok().stdout,
        "No running jobs.\n"
    );
    // Usage errors: clap's exit code 2.
    for args in [
        vec!["cancel"],
        vec!["cancel", "--bogus", id],
        vec!["stop"],
        vec!["savepoint"],
        vec!["savepoint", "-d", "/tmp/x", id],
        vec!["checkpoints"],
    ] {
        let out = floe(&sb, &registry, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", out.stderr);
    }
}

#[test]
fn a_killed_job_leaves_no_registry_entry_behind() {
    let sb = Sandbox::new();
    let job = start_job(&sb, "killed", &[]);
    let entry = job.entry_file();
    assert!(entry.is_file());
    let registry = job.registry.clone();
    let rest = job.rest.clone();
    let id = job.id.clone();
    drop(job.process); // SIGKILL: no chance to unregister
    assert!(entry.is_file(), "the entry of a killed job stays behind");
    assert_eq!(
        floe(&sb, &registry, &["list"]).ok().stdout,
        "No running jobs.\n"
    );
    assert!(!entry.exists(), "list removes the stale entry");
    floe(&sb, &registry, &["cancel", &id]).fails_with(&["no running job", &id]);
    floe(&sb, &registry, &["cancel", "-m", &rest, &id]).fails_with(&[&rest, "connection refused"]);
}

#[test]
fn savepoint_then_cancel_with_savepoint() {
    let sb = Sandbox::new();
    let default_dir = sb.path("default-savepoints");
    let job = start_job(
        &sb,
        "sp",
        &[
            "-D",
            &format!("state.savepoints.dir={}", url_of(&default_dir)),
        ],
    );
    let id = job.id.clone();
    job.wait_for_checkpoints(1);

    let explicit = sb.path("explicit-savepoints");
    let out = floe(&sb, &job.registry, &["savepoint", &id, &url_of(&explicit)]).ok();
    let location = savepoint_path(&out);
    assert_savepoint_dir(&location, &explicit, &id);
    assert!(
        out.stderr.contains("Waiting for response"),
        "{}",
        out.stderr
    );
    let stats = job.get(&format!("/jobs/{id}/checkpoints"));
    assert_eq!(
        stats["latest"]["savepoint"]["external_path"],
        location.as_str(),
        "{stats}"
    );
    assert!(job.get("/jobs")["jobs"][0]["status"] == "RUNNING");

    // Cancel with a savepoint to the configured default directory: `-s`
    // directly before the id takes no directory.
    let out = floe(&sb, &job.registry, &["cancel", "-s", &id]).ok();
    let location = savepoint_path(&out);
    assert_savepoint_dir(&location, &default_dir, &id);
    assert!(
        out.stdout.contains(&format!("Cancelled job {id}.")),
        "{}",
        out.stdout
    );
    let out = job.ended();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn a_savepoint_without_any_directory_fails_and_the_job_goes_on() {
    let sb = Sandbox::new();
    let job = start_job(&sb, "nodir", &[]);
    floe(&sb, &job.registry, &["savepoint", &job.id])
        .fails_with(&["no savepoint target directory", "state.savepoints.dir"]);
    floe(&sb, &job.registry, &["stop", &job.id]).fails_with(&["no savepoint target directory"]);
    assert_eq!(job.get("/jobs")["jobs"][0]["status"], "RUNNING");
    let out = floe(&sb, &job.registry, &["cancel", "-m", &job.rest, &job.id]).ok();
    assert!(out.stdout.contains("Cancelled job"), "{}", out.stdout);
    job.ended();
}

#[test]
fn stop_with_savepoint_finishes_the_job() {
    let sb = Sandbox::new();
    for (name, drain) in [("stop", false), ("drain", true)] {
        let job = start_job(&sb, name, &[]);
        job.wait_for_checkpoints(1);
        let dir = sb.path(&format!("{name}-savepoints"));
        let dir_url = url_of(&dir);
        let mut args = vec!["stop", "--savepointPath", dir_url.as_str()];
        if drain {
            args.push("--drain");
        }
        args.push(&job.id);
        let out = floe(&sb, &job.registry, &args).ok();
        let location = savepoint_path(&out);
        assert_savepoint_dir(&location, &dir, &job.id);
        let out = job.ended();
        assert_eq!(
            out.status.code(),
            Some(0),
            "a stopped job finishes ({name})\n{}",
            out.stderr
        );
    }
}

/// `floe query` and `GET /jobs/{id}/state/{name}` on a running keyed-count
/// with queryable state: counts only grow and never pass N / K; a key
/// without state is "not found"; unknown names, wrong key types and a job
/// without queryable state are clear errors.
#[test]
fn query_reads_live_counts_through_the_cli_and_rest() {
    let sb = Sandbox::new();
    let job = start_job(
        &sb,
        "query",
        &[
            "-D",
            "queryable-state.enable=true",
            "-D",
            "queryable-state.proxy.ports=0",
            "-D",
            "queryable-state.server.ports=0",
        ],
    );
    let max: u64 = RECORDS.parse::<u64>().unwrap() / 13;
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while last < 100 {
        let out = floe(&sb, &job.registry, &["query", &job.id, "count", "3"]).ok();
        let text = out.stdout.trim();
        let count: u64 = if text.starts_with("not found") {
            0
        } else {
            text.parse()
                .unwrap_or_else(|_| panic!("not a count: {text:?}"))
        };
        assert!(count >= last && count <= max, "{count} after {last}");
        last = count;
        assert!(
            Instant::now() < deadline,
            "the count of key 3 stays at {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rest = job.get(&format!("/jobs/{}/state/count?key=3", job.id));
    assert_eq!(rest["found"], true, "{rest}");
    assert!(rest["value"].as_u64().unwrap() >= last, "{rest}");
    let out = floe(&sb, &job.registry, &["query", &job.id, "count", "999"]).ok();
    assert_eq!(
        out.stdout.trim(),
        "not found: key 999 has no state in 'count'"
    );
    floe(&sb, &job.registry, &["query", &job.id, "counts", "3"])
        .fails_with(&["no queryable state 'counts'", "queryable states: count"]);
    floe(&sb, &job.registry, &["query", &job.id, "count", "three"]).fails_with(&[
        "wrong key type for queryable state 'count'",
        "u64",
        "\"three\"",
    ]);
    floe(
        &sb,
        &job.registry,
        &["query", &job.id, "count", "3", "-m", &job.rest],
    )
    .ok();
    floe(&sb, &job.registry, &["cancel", &job.id]).ok();
    job.process.finish();

    let plain = start_job(&sb, "noquery", &[]);
    floe(&sb, &plain.registry, &["query", &plain.id, "count", "3"]).fails_with(&[
        "queryable state is disabled",
        "queryable-state.enable: true",
    ]);
    floe(&sb, &plain.registry, &["cancel", &plain.id]).ok();
    plain.process.finish();
}

/// Issue 23: a job with `rest.auth.token` refuses changes without it (and
/// keeps running), the CLI sends the token from `$FLOE_REST_TOKEN` or
/// `--token`; odd query input is a one-line error, not a panic, and a state
/// name is one path segment; relative paths are the current directory's.
#[test]
fn token_odd_queries_and_relative_paths() {
    let sb = Sandbox::new();
    let job = start_job(
        &sb,
        "token",
        &[
            "-D",
            "rest.auth.token=s3cret",
            "-D",
            "queryable-state.enable=true",
            "-D",
            "queryable-state.proxy.ports=0",
            "-D",
            "queryable-state.server.ports=0",
        ],
    );
    // Without the token (or with a wrong one) nothing changes.
    floe(&sb, &job.registry, &["cancel", &job.id]).fails_with(&[
        "rest.auth.token",
        "HTTP 401",
        "FLOE_REST_TOKEN",
    ]);
    floe(
        &sb,
        &job.registry,
        &["savepoint", &job.id, "sp", "--token", "wrong"],
    )
    .fails_with(&["does not match", "HTTP 401"]);
    assert_eq!(job.get(&format!("/jobs/{}", job.id))["state"], "RUNNING");
    // Reads stay open.
    floe(&sb, &job.registry, &["checkpoints", &job.id]).ok();

    // A key far beyond what a URL can carry: one error line.
    let long = "7".repeat(65_500);
    let out = floe(&sb, &job.registry, &["query", &job.id, "count", &long])
        .fails_with(&["too long", "key"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    // A name with a query string of its own names an unknown state instead
    // of asking `count` for key 99999999 (or 7).
    let deadline = Instant::now() + Duration::from_secs(20);
    while floe(&sb, &job.registry, &["query", &job.id, "count", "7"])
        .stdout
        .trim()
        .parse::<u64>()
        .is_err()
    {
        assert!(Instant::now() < deadline, "key 7 never got a count");
        std::thread::sleep(Duration::from_millis(50));
    }
    floe(
        &sb,
        &job.registry,
        &["query", &job.id, "count?key=99999999", "7"],
    )
    .fails_with(&["no queryable state 'count?key=99999999'"]);
    for name in ["a/../count", "..", "%63ount"] {
        floe(&sb, &job.registry, &["query", &job.id, name, "7"])
            .fails_with(&[&format!("no queryable state '{name}'")]);
    }

    // A relative target directory is the CLI's current directory's (the
    // sandbox), and so is a relative path to `floe info`.
    let out = run(sb
        .floe(["savepoint", &job.id, "relative-sp"])
        .env("FLOE_REGISTRY_DIR", &job.registry)
        .env("FLOE_REST_TOKEN", "s3cret"))
    .ok();
    let location = savepoint_path(&out);
    let dir = assert_savepoint_dir(&location, &sb.path("relative-sp"), &job.id);
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    let info = floe(
        &sb,
        &job.registry,
        &["info", &format!("relative-sp/./{name}")],
    )
    .ok();
    assert!(
        info.stdout.starts_with("Savepoint file://"),
        "{}",
        info.stdout
    );
    assert!(info.stdout.contains(&name), "{}", info.stdout);
    floe(
        &sb,
        &job.registry,
        &["cancel", "--token", "s3cret", &job.id],
    )
    .ok();
    job.process.finish();
}

/// Issue 23: an address of no local interface is blamed on `rest.address`
/// with the operating system's reason, not on `rest.port`.
#[test]
fn an_unbindable_rest_address_is_named() {
    let sb = Sandbox::new();
    for extra in [
        vec!["-D", "rest.address=192.0.2.1"],
        vec![
            "-D",
            "rest.address=192.0.2.1",
            "-D",
            "queryable-state.enable=true",
        ],
    ] {
        let mut args = vec!["run", "keyed-count", "--records", "10", "--keys", "2"];
        args.extend(extra);
        let out = run(&mut sb.floe(&args)).fails_with(&[
            "'rest.address'",
            "192.0.2.1",
            "assign requested address",
        ]);
        assert!(!out.stderr.contains("rest.port"), "{}", out.stderr);
        assert!(
            !out.stderr.contains("key 'queryable-state"),
            "{}",
            out.stderr
        );
    }
}
