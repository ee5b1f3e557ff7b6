//! The event-time examples as a user runs them — `floe run fraud-detection`
//! and `floe run sessionize` in a real process — checked against results
//! computed here without Floe, failure-free and after a SIGKILL and a
//! restart from the retained checkpoint (exactly-once file sink): no timer
//! lost, none fired twice.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};

use std::time::{Duration, Instant};

use floe_cli::examples::delayed_echo;
use floe_cli::examples::fraud_detection::expected_alerts;

fn assert_killed(o: &Output, point: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(9), "not killed at {point}: {err}");
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Lines committed so far in `out` (hidden files are in progress).
fn committed_lines(out: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(out) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .sum()
}

/// Runs `args` killed at `point`, then again from its retained
/// checkpoint; returns the committed output lines, sorted.
fn killed_and_restored(args: &[&str], throttle: &[&str], point: &str, tmp: &Path) -> Vec<String> {
    let (ckpt, out) = (tmp.join("ckpt"), tmp.join("out"));
    let mut args = args.to_vec();
    let out_s = out.to_str().unwrap().to_string();
    args.extend(["--output", &out_s]);
    let mut first = args.clone();
    first.extend(throttle);
    let o = common::checkpointed_floe(&first, &ckpt)
        .env("FLOE_KILL_AT", point)
        .output()
        .unwrap();
    assert_killed(&o, point);
    let dir = common::job_dir(&ckpt);
    let dir_s = dir.to_str().unwrap().to_string();
    args.extend(["--fromCheckpoint", &dir_s]);
    common::assert_ok(&common::checkpointed_floe(&args, &ckpt).output().unwrap());
    sorted_lines(&common::read_committed(&out))
}

#[test]
fn fraud_detection_alerts_exactly_once_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (n, accounts) = (20_000u64, 7u64);
    let mut expected: Vec<String> = expected_alerts(n, accounts)
        .into_iter()
        .map(|(a, rest)| format!("{a} {rest}"))
        .collect();
    expected.sort();
    assert!(
        expected.len() > 20,
        "the input raises alerts: {}",
        expected.len()
    );
    let (n_s, a_s) = (n.to_string(), accounts.to_string());
    let base = [
        "-p",
        "2",
        "fraud-detection",
        "--transactions",
        &n_s,
        "--accounts",
        &a_s,
    ];

    let o = common::checkpointed_floe(&base, &tmp.path().join("c0"))
        .output()
        .unwrap();
    assert_eq!(
        sorted_lines(&common::assert_ok(&o)),
        expected,
        "failure-free run"
    );

    let got = killed_and_restored(
        &base,
        &["--rate", "20000"],
        "sink.after-pre-commit@3",
        tmp.path(),
    );
    assert_eq!(got, expected, "committed alerts after SIGKILL and restore");
}

/// `(user, ms)` events of `users` users over `files` files: per file,
/// times increase with a jitter of up to `disorder` ms; users interleave.
fn session_input(
    dir: &Path,
    files: usize,
    per_file: usize,
    users: u64,
    disorder: i64,
) -> Vec<(String, i64)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = common::Rng::new(7);
    let mut all = Vec::new();
    for f in 0..files {
        let mut text = String::new();
        let mut t = 1_000_000i64;
        for _ in 0..per_file {
            t += rng.below(400) as i64;
            let user = format!("u{}", rng.below(users));
            // Out of order by at most `disorder`.
            let ts = t - rng.below(disorder as u64 + 1) as i64;
            text.push_str(&format!("{user} {ts}\n"));
            all.push((user, ts));
        }
        std::fs::write(dir.join(format!("part-{f}.txt")), text).unwrap();
    }
    all
}

/// Sessions computed without Floe: each user's events sorted by time,
/// split where two neighbours are `gap` or more apart.
fn expected_sessions(events: &[(String, i64)], gap: i64) -> Vec<String> {
    let mut by_user: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (u, t) in events {
        by_user.entry(u).or_default().push(*t);
    }
    let mut out = Vec::new();
    for (u, mut ts) in by_user {
        ts.sort_unstable();
        let (mut first, mut last, mut n) = (ts[0], ts[0], 0u64);
        for t in ts {
            if t - last >= gap {
                out.push(format!("{u} {first} {last} {n}"));
                first = t;
                n = 0;
            }
            last = t;
            n += 1;
        }
        out.push(format!("{u} {first} {last} {n}"));
    }
    out.sort();
    out
}

#[test]
fn sessionize_closes_every_session_exactly_once_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // Disorder below the allowed out-of-orderness: no event is late.
    let events = session_input(&input, 2, 6_000, 9, 250);
    let expected = expected_sessions(&events, 2_000);
    assert!(expected.len() > 100, "{} sessions", expected.len());
    let input_s = input.to_str().unwrap();
    let base = [
        "-p",
        "2",
        "sessionize",
        "--input",
        input_s,
        "--gap",
        "2 s",
        "--out-of-orderness",
        "300 ms",
    ];

    let o = common::checkpointed_floe(&base, &tmp.path().join("c0"))
        .output()
        .unwrap();
    assert_eq!(
        sorted_lines(&common::assert_ok(&o)),
        expected,
        "failure-free run"
    );

    let got = killed_and_restored(
        &base,
        &["--rate", "4000"],
        "sink.after-pre-commit@3",
        tmp.path(),
    );
    assert_eq!(
        got, expected,
        "committed sessions after SIGKILL and restore"
    );
}

/// The delayed echo (`floe run delayed-echo`): every event comes back
/// through a processing-time timer, every window's count through an
/// event-time timer. Killed with SIGKILL at four phases of checkpointing
/// and committing, and once from outside in the middle of its run, then
/// restored from the retained checkpoint each time: the committed output
/// equals the failure-free run's and the one computed without Floe, so no
/// timer of either kind was lost or fired twice (restored processing-time
/// timers are overdue and fire at once; pending echoes are in every
/// checkpoint, since 200 ms of events wait at any time).
#[test]
fn delayed_echo_fires_every_timer_exactly_once_across_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let (n, keys) = (6_000u64, 10u64);
    let expected = delayed_echo::expected_output(n, keys, Duration::from_secs(10));
    // 10 s windows over 600 s of event time, most keys in each.
    let windows = expected.len() as u64 - n;
    assert!(windows >= 590, "{windows} windows");
    let (n_s, k_s) = (n.to_string(), keys.to_string());
    let base = [
        "-p",
        "2",
        "delayed-echo",
        "--events",
        &n_s,
        "--keys",
        &k_s,
        "--delay",
        "200 ms",
        "--window",
        "10 s",
    ];
    // 3000 events a second: a run lasts 2 s, checkpoints every 50 ms.
    let throttle = ["--rate", "3000"];

    let o = common::checkpointed_floe(&base, &tmp.path().join("c0"))
        .output()
        .unwrap();
    assert_eq!(
        sorted_lines(&common::assert_ok(&o)),
        expected,
        "failure-free run"
    );

    for point in [
        "sink.before-pre-commit@4",
        "sink.after-pre-commit@9",
        "checkpoint.after-metadata@6",
        "sink.commit@12",
    ] {
        let case = tmp.path().join(point.replace(['.', '@'], "_"));
        let got = killed_and_restored(&base, &throttle, point, &case);
        assert_eq!(got, expected, "committed output after SIGKILL at {point}");
    }

    // Killed from outside once a third of the output is committed.
    let case = tmp.path().join("timed");
    let (ckpt, out) = (case.join("ckpt"), case.join("out"));
    let out_s = out.to_str().unwrap().to_string();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--output", &out_s]);
    let mut first = args.clone();
    first.extend(throttle);
    let mut child = common::checkpointed_floe(&first, &ckpt)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_lines(&out) < expected.len() / 3 {
        assert!(Instant::now() < deadline, "no progress in 30 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    let dir = common::job_dir(&ckpt);
    args.extend(["--fromCheckpoint", dir.to_str().unwrap()]);
    common::assert_ok(&common::checkpointed_floe(&args, &ckpt).output().unwrap());
    assert_eq!(
        sorted_lines(&common::read_committed(&out)),
        expected,
        "committed output after a SIGKILL mid-run"
    );
}

/// The id of the job registered in `registry` (the only one there).
#[cfg(feature = "rocksdb")]
fn registered_job(registry: &Path) -> Option<String> {
    std::fs::read_dir(registry).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_suffix(".json")
            .filter(|n| !n.starts_with('.'))
            .map(str::to_string)
    })
}

/// How many key groups hold timers of `operator` in the snapshot at
/// `path`, as `floe info` reports it.
#[cfg(feature = "rocksdb")]
fn key_groups_with_timers(sb: &common::Sandbox, path: &str) -> u64 {
    let info = common::run(&mut sb.floe(["info", path])).ok();
    let line = info
        .stdout
        .lines()
        .find(|l| l.contains("keyed state 'user-timers'"))
        .unwrap_or_else(|| panic!("no timers in {path}:\n{}", info.stdout));
    line.split("entries in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

/// Sessionize with many sessions open (300 users, a 60 s gap: each user's
/// session stays open for a minute of event time after its last event),
/// rescaled through savepoints: p = 2 on the heap, stopped with a savepoint
/// while running, restored at p = 4 on RocksDB, stopped with a savepoint
/// again, restored at p = 1 on the heap to the end. The pending
/// event-time timers move with their key groups between backends and
/// parallelisms: every session is committed exactly once, as computed
/// without Floe.
#[cfg(feature = "rocksdb")]
#[test]
fn sessionize_rescaled_2_4_1_heap_rocksdb_heap_through_savepoints() {
    let sb = common::Sandbox::new();
    let input = sb.path("in");
    let events = session_input(&input, 2, 5_000, 300, 250);
    let gap = 60_000;
    let expected = expected_sessions(&events, gap);
    assert!(expected.len() > 1_000, "{} sessions", expected.len());
    let (out, registry, savepoints) = (sb.path("out"), sb.path("registry"), sb.path("sp"));
    let checkpoints = format!("state.checkpoints.dir=file://{}", sb.path("chk").display());
    let rocksdb_dir = format!(
        "state.backend.rocksdb.localdir={}",
        sb.path("rocksdb").display()
    );
    let job = |flags: &[&str], rate: Option<&str>| {
        let mut args: Vec<&str> = vec!["run"];
        args.extend(flags);
        args.extend([
            "sessionize",
            "--input",
            input.to_str().unwrap(),
            "--gap",
            "60 s",
            "--out-of-orderness",
            "300 ms",
            "--output",
            out.to_str().unwrap(),
            "-D",
            "execution.checkpointing.interval=200ms",
            "-D",
            &checkpoints,
            // Small batches: the rate limit sleeps per line, and barriers
            // enter between two batches of the source.
            "-D",
            "floe.runtime.batch-size=50",
        ]);
        if let Some(r) = rate {
            args.extend(["--rate", r]);
        }
        let mut cmd = sb.floe(&args);
        cmd.env("FLOE_REGISTRY_DIR", &registry);
        cmd
    };
    let ctl = |args: &[&str]| common::run(sb.floe(args).env("FLOE_REGISTRY_DIR", &registry)).ok();
    let savepoint_path = |o: &common::Output| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
            .unwrap_or_else(|| panic!("no savepoint path in\n{}\n{}", o.stdout, o.stderr))
            .to_string()
    };
    let sessions = || committed_lines(&out);
    // Stops the job once it registered and `n` sessions are committed;
    // returns the stop's savepoint.
    let stop_at = |n: usize, mut process: common::Running| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            if process.has_exited() {
                panic!(
                    "the job ended before it was stopped:\n{}",
                    process.finish().stderr
                );
            }
            assert!(Instant::now() < deadline, "no progress in 30 s");
            if let Some(id) = registered_job(&registry).filter(|_| sessions() >= n) {
                break id;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stop = ctl(&["stop", "--savepointPath", savepoints.to_str().unwrap(), &id]);
        process.finish().ok();
        savepoint_path(&stop)
    };
    let step = expected.len() / 6;

    // p = 2 on the heap, 500 lines a second per file.
    let first = common::start(&mut job(&["-p", "2"], Some("500")));
    let sp1 = stop_at(step, first);
    let after_first = sessions();
    let open = key_groups_with_timers(&sb, &sp1);
    eprintln!("first savepoint: {after_first} sessions committed, timers in {open} key groups");
    assert!(
        open >= 64,
        "timers in {open} key groups of the first savepoint"
    );

    // p = 4 on RocksDB from it.
    let second = common::start(&mut job(
        &[
            "-s",
            &sp1,
            "-p",
            "4",
            "-D",
            "state.backend.type=rocksdb",
            "-D",
            &rocksdb_dir,
        ],
        Some("500"),
    ));
    let sp2 = stop_at(after_first + step, second);
    assert!(
        sb.path("rocksdb").is_dir(),
        "the second run kept its state in RocksDB"
    );
    let open = key_groups_with_timers(&sb, &sp2);
    eprintln!(
        "second savepoint: {} sessions committed, timers in {open} key groups",
        sessions()
    );
    assert!(
        open >= 64,
        "timers in {open} key groups of the second savepoint"
    );

    // p = 1 on the heap from that, to the end.
    common::run(&mut job(&["-s", &sp2, "-p", "1"], None)).ok();
    assert_eq!(
        sorted_lines(&common::read_committed(&out)),
        expected,
        "sessions after rescaling 2 -> 4 -> 1, heap -> RocksDB -> heap"
    );
}
