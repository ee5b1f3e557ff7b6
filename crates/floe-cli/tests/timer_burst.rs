//! Timers never stall checkpoints: `floe run timer-burst` registers
//! millions of event-time timers, then one watermark makes them all due
//! while the job stays up. While they fire, periodic checkpoints complete
//! (each commits the timers fired before its barrier: the committed output
//! grows in steps while the firing goes on), each within one checkpoint
//! interval, and the REST API keeps answering quickly. Every timer fires
//! exactly once.
//!
//! The suite runs 1 million timers (about 5 s in a debug build on two
//! cores). The 5 million run is `#[ignore]`d for its time (about
//! 25 s here; the job peaks at about 530 MB):
//! `cargo test -p floe-cli --test timer_burst -- --ignored --nocapture`
//! runs it alone and prints its measurements.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Running, Sandbox, run, start};
use floe_cli::examples::timer_burst::{START_MS, timer};
use serde_json::Value;

/// Longest a REST answer may take while the timers fire (it takes a few
/// ms; a task holding up the job's control would take seconds).
const REST_BOUND: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The running job's registry entry: REST address and id.
fn registered(process: &mut Running, registry: &Path) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = std::fs::read_dir(registry).ok().and_then(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.ends_with(".json") && !n.starts_with('.')
                })
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        });
        if let Some(e) = entry {
            return (
                e["rest_address"].as_str().unwrap().to_string(),
                e["job_id"].as_str().unwrap().to_string(),
            );
        }
        assert!(!process.has_exited(), "the job ended before it registered");
        assert!(Instant::now() < deadline, "the job never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `path`: the JSON answer and how long it took.
fn get(rest: &str, path: &str) -> (Value, Duration) {
    let started = Instant::now();
    let mut resp = ureq::get(&format!("http://{rest}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let v = resp.body_mut().read_json().expect("a JSON answer");
    (v, started.elapsed())
}

/// Committed lines in `out`, counting each committed part file once (they
/// never change after their commit).
#[derive(Default)]
struct Committed {
    counted: BTreeMap<String, usize>,
}

impl Committed {
    fn lines(&mut self, out: &Path) -> usize {
        if let Ok(dir) = std::fs::read_dir(out) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || self.counted.contains_key(&name) {
                    continue;
                }
                let bytes = std::fs::read(e.path()).unwrap();
                let n = bytes.iter().filter(|b| **b == b'\n').count();
                self.counted.insert(name, n);
            }
        }
        self.counted.values().sum()
    }
}

/// Whether anything was written to `out` yet, committed or in progress.
fn any_output(out: &Path) -> bool {
    std::fs::read_dir(out).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
    })
}

/// A checkpoint or savepoint as REST reports it.
struct Snapshot {
    /// When it was triggered (ms since the epoch).
    trigger_ms: u64,
    /// Trigger to completion.
    duration_ms: u64,
    completed: bool,
    savepoint: bool,
}

/// What one burst measured.
struct Burst {
    /// Every checkpoint and savepoint that ended, by id.
    checkpoints: BTreeMap<u64, Snapshot>,
    /// When output first appeared and when all of it was committed (ms
    /// since the epoch): the firing lies within.
    firing: (u64, u64),
    /// The checkpoints (and savepoints) that completed, committing some of
    /// the output, while the timers fired, but not the last: their
    /// barriers passed while the timers fired.
    mid_firing: BTreeSet<u64>,
    /// The slowest REST answer while the timers fired, and over the run.
    rest_while_firing: Duration,
    rest_max: Duration,
    rest_calls_while_firing: usize,
    /// The savepoint triggered as soon as output appeared: how long it
    /// took (at most; its status is polled), and the key groups that
    /// still had timers in it.
    savepoint: (Duration, u64),
}

/// How many key groups hold timers in the snapshot at `path`, as `floe
/// info` reports it.
fn key_groups_with_timers(sb: &Sandbox, path: &str) -> u64 {
    let info = run(&mut sb.floe(["info", path])).ok();
    info.stdout
        .lines()
        .find(|l| l.contains("keyed state 'user-timers'"))
        .and_then(|l| l.split("entries in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no timers in {path}:\n{}", info.stdout))
}

/// Runs `floe run -p 2 timer-burst` with `timers` over `keys`, checkpoints
/// every `interval`, polling REST until every timer's output is committed
/// (and triggering a savepoint over REST as soon as the first output
/// appears); then cancels it and checks that output.
fn burst(timers: u64, keys: u64, interval: Duration) -> Burst {
    let sb = Sandbox::new();
    let (out, registry) = (sb.path("out"), sb.path("registry"));
    let checkpoints = format!("state.checkpoints.dir=file://{}", sb.path("chk").display());
    let interval_flag = format!(
        "execution.checkpointing.interval={}ms",
        interval.as_millis()
    );
    let (timers_s, keys_s) = (timers.to_string(), keys.to_string());
    let mut process = start(
        sb.floe([
            "run",
            "-p",
            "2",
            "timer-burst",
            "--timers",
            &timers_s,
            "--keys",
            &keys_s,
            "--output",
            out.to_str().unwrap(),
            "-D",
            &interval_flag,
            "-D",
            &checkpoints,
        ])
        .env("FLOE_REGISTRY_DIR", &registry),
    );
    let (rest, id) = registered(&mut process, &registry);
    let mut committed = Committed::default();
    let mut result = Burst {
        checkpoints: BTreeMap::new(),
        firing: (0, 0),
        mid_firing: BTreeSet::new(),
        rest_while_firing: Duration::ZERO,
        rest_max: Duration::ZERO,
        rest_calls_while_firing: 0,
        savepoint: (Duration::ZERO, 0),
    };
    let mut fire_start = None;
    let mut savepoint: Option<(Instant, String)> = None;
    let mut savepoint_location = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            !process.has_exited(),
            "the job ended while its timers fired"
        );
        assert!(Instant::now() < deadline, "not all timers fired in 300 s");
        if fire_start.is_none() && any_output(&out) {
            fire_start = Some(now_ms());
            let target = serde_json::json!({
                "target-directory": sb.path("savepoints").to_str().unwrap(),
                "cancel-job": false,
            });
            let sent = Instant::now();
            let mut resp = ureq::post(&format!("http://{rest}/jobs/{id}/savepoints"))
                .send_json(&target)
                .expect("POST savepoints");
            let answer: Value = resp.body_mut().read_json().unwrap();
            savepoint = Some((sent, answer["request-id"].as_str().unwrap().to_string()));
        }
        if let Some((sent, trigger)) = savepoint.as_ref().filter(|_| savepoint_location.is_none()) {
            let (status, _) = get(&rest, &format!("/jobs/{id}/savepoints/{trigger}"));
            if status["status"]["id"] == "COMPLETED" {
                let location = status["operation"]["location"]
                    .as_str()
                    .unwrap_or_else(|| panic!("the savepoint failed: {status}"));
                result.savepoint.0 = sent.elapsed();
                savepoint_location = Some(location.to_string());
            }
        }
        let (details, t1) = get(&rest, &format!("/jobs/{id}"));
        assert_eq!(details["state"], "RUNNING", "{details}");
        let (stats, t2) = get(&rest, &format!("/jobs/{id}/checkpoints"));
        let slowest = t1.max(t2);
        result.rest_max = result.rest_max.max(slowest);
        if fire_start.is_some() {
            result.rest_while_firing = result.rest_while_firing.max(slowest);
            result.rest_calls_while_firing += 2;
        }
        for c in stats["history"].as_array().unwrap() {
            result.checkpoints.insert(
                c["id"].as_u64().unwrap(),
                Snapshot {
                    trigger_ms: c["trigger_timestamp"].as_u64().unwrap(),
                    duration_ms: c["end_to_end_duration"].as_u64().unwrap(),
                    completed: c["status"] == "COMPLETED",
                    savepoint: c["is_savepoint"] == true,
                },
            );
        }
        let n = committed.lines(&out);
        if n as u64 == timers {
            result.firing = (fire_start.expect("output appeared"), now_ms());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run(sb.floe(["cancel", &id]).env("FLOE_REGISTRY_DIR", &registry)).ok();
    drop(process.finish());
    // The snapshots that completed, and so committed output, while the
    // timers fired: their barriers passed mid-firing. (The file sink names
    // part files by a counter, not by the committing checkpoint.) The last
    // is the commit that ended the firing.
    let (from, to) = result.firing;
    let mut committed_by: BTreeSet<u64> = result
        .checkpoints
        .iter()
        .filter(|(_, c)| c.completed && (from..=to).contains(&(c.trigger_ms + c.duration_ms)))
        .map(|(id, _)| *id)
        .collect();
    committed_by.pop_last();
    result.mid_firing = committed_by;
    let location = savepoint_location.expect("the savepoint completed before the last commit");
    result.savepoint.1 = key_groups_with_timers(&sb, &location);

    // Every timer fired exactly once.
    let mut fired = vec![false; timers as usize];
    for line in common::read_committed(&out).lines() {
        let (key, ts) = line.split_once(' ').expect("`<key> <timestamp>`");
        let (key, ts): (u64, i64) = (key.parse().unwrap(), ts.parse().unwrap());
        let i = (ts - START_MS - 1) as u64 * keys + key;
        assert!(key < keys && i < timers, "no such timer: {line}");
        assert_eq!(timer(i, keys), (key, ts));
        assert!(!fired[i as usize], "fired twice: {line}");
        fired[i as usize] = true;
    }
    assert!(fired.iter().all(|f| *f), "timers did not fire");
    result
}

/// Asserts what the issue asks and prints the measurements.
fn check(b: &Burst, timers: u64, interval: Duration, min_mid_firing: usize) {
    let (from, to) = b.firing;
    let during: Vec<(u64, &Snapshot)> = b
        .checkpoints
        .iter()
        .filter(|(_, c)| (from..=to).contains(&c.trigger_ms))
        .map(|(id, c)| (*id, c))
        .collect();
    eprintln!(
        "{timers} timers: output from first write to all committed in {} ms; \
         checkpoints every {} ms",
        to - from,
        interval.as_millis()
    );
    for (id, c) in &during {
        eprintln!(
            "  {} {id} triggered {} ms into the firing: {} in {} ms",
            if c.savepoint {
                "savepoint"
            } else {
                "checkpoint"
            },
            c.trigger_ms - from,
            if c.completed { "completed" } else { "FAILED" },
            c.duration_ms
        );
    }
    let slowest = b
        .checkpoints
        .values()
        .map(|c| c.duration_ms)
        .max()
        .unwrap_or(0);
    eprintln!(
        "  {} checkpoints in the run, the slowest {slowest} ms",
        b.checkpoints.len()
    );
    eprintln!(
        "  snapshots whose barrier passed while the timers fired (each committed part of the output): {:?}",
        b.mid_firing
    );
    eprintln!(
        "  savepoint triggered at the first output: completed within {} ms, \
         timers still in {} key groups",
        b.savepoint.0.as_millis(),
        b.savepoint.1
    );
    eprintln!(
        "  REST: slowest answer {} ms while firing ({} calls), {} ms over the run",
        b.rest_while_firing.as_millis(),
        b.rest_calls_while_firing,
        b.rest_max.as_millis()
    );
    for (id, c) in &b.checkpoints {
        assert!(c.completed, "checkpoint {id} failed");
    }
    assert!(
        !during.is_empty(),
        "no checkpoint triggered while the timers fired"
    );
    let mid = b.mid_firing.iter().map(|id| (*id, &b.checkpoints[id]));
    for (id, c) in during.into_iter().chain(mid) {
        assert!(
            u128::from(c.duration_ms) < interval.as_millis(),
            "checkpoint {id}, taken while the timers fired, took {} ms: more than one interval",
            c.duration_ms
        );
    }
    // Taken while they fired: some had fired (output existed), some were
    // still to fire.
    assert!(b.savepoint.1 > 0, "no timers left in the savepoint");
    assert!(
        b.savepoint.0 < interval,
        "the savepoint took {:?}, more than one checkpoint interval",
        b.savepoint.0
    );
    assert!(
        b.mid_firing.len() >= min_mid_firing,
        "fewer than {min_mid_firing} checkpoints were taken while the timers fired: {:?}",
        b.mid_firing
    );
    assert!(
        b.rest_while_firing < REST_BOUND,
        "REST took {:?} while the timers fired",
        b.rest_while_firing
    );
}

#[test]
fn a_million_timers_due_at_once_never_stall_checkpoints_or_rest() {
    let interval = Duration::from_secs(2);
    let b = burst(1_000_000, 100_000, interval);
    check(&b, 1_000_000, interval, 0);
}

/// The size. `--ignored`: about 25 s in a debug build.
#[test]
#[ignore = "5 million timers: about 25 s in a debug build; run with --ignored"]
fn five_million_timers_due_at_once_never_stall_checkpoints_or_rest() {
    let interval = Duration::from_secs(3);
    let b = burst(5_000_000, 100_000, interval);
    check(&b, 5_000_000, interval, 2);
}
