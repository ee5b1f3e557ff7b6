//! Savepoints end to end through the CLI, as a user drives them: run the
//! keyed-count job, `floe savepoint`, `floe cancel`, `floe run -s … -p 4`,
//! `floe stop`, `floe run -s … -p 1`, and the counts come out as in a
//! failure-free run; a moved and copied savepoint restores, `floe info`
//! describes it and `floe savepoint -d` removes it; a savepoint whose
//! state matches no operator of the new job needs `-n`; a rate-limited
//! generator keeps its rate when restored at a higher parallelism.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{LineTimes, Output, Running, Sandbox, read_committed, run, start, start_timed};

const KEYS: u64 = 13;
const RECORDS: u64 = 26_000;

/// A keyed-count job started through `floe run`, found in the registry.
struct Job {
    process: Running,
    id: String,
}

fn registry(sb: &Sandbox) -> PathBuf {
    sb.path("registry")
}

fn floe(sb: &Sandbox, args: &[&str]) -> Output {
    run(sb.floe(args).env("FLOE_REGISTRY_DIR", registry(sb)))
}

/// The `floe run [flags] keyed-count …` command line writing into `out`,
/// checkpointing every 200 ms.
fn job_args(sb: &Sandbox, flags: &[&str], rate: Option<&str>, out: &Path) -> Vec<String> {
    let records = RECORDS.to_string();
    let keys = KEYS.to_string();
    let mut args: Vec<&str> = vec!["run"];
    args.extend(flags);
    args.extend([
        "keyed-count",
        "--records",
        &records,
        "--keys",
        &keys,
        "--output",
        out.to_str().unwrap(),
        "-D",
        "execution.checkpointing.interval=200ms",
    ]);
    if let Some(r) = rate {
        args.extend(["--rate", r]);
    }
    let checkpoints = format!("state.checkpoints.dir=file://{}", sb.path("chk").display());
    args.extend(["-D", &checkpoints]);
    args.into_iter().map(str::to_string).collect()
}

/// Runs the job at full speed to its end.
fn run_to_end(sb: &Sandbox, flags: &[&str], out: &Path) {
    run(sb
        .floe(job_args(sb, flags, None, out))
        .env("FLOE_REGISTRY_DIR", registry(sb)))
    .ok();
}

/// Starts the job and waits for its registry entry.
fn start_job(sb: &Sandbox, flags: &[&str], rate: Option<&str>, out: &Path) -> Job {
    let before: BTreeSet<String> = entries(sb);
    let args = job_args(sb, flags, rate, out);
    let process = start(sb.floe(&args).env("FLOE_REGISTRY_DIR", registry(sb)));
    registered(sb, &before, process)
}

/// Waits for the registry entry `process` adds to the ids in `before`.
fn registered(sb: &Sandbox, before: &BTreeSet<String>, mut process: Running) -> Job {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = entries(sb).difference(before).next() {
            return Job {
                process,
                id: id.clone(),
            };
        }
        assert!(
            !process.has_exited(),
            "the job ended before it registered:\n{}",
            process.finish().stderr
        );
        assert!(Instant::now() < deadline, "the job never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Job ids in the registry.
fn entries(sb: &Sandbox) -> BTreeSet<String> {
    std::fs::read_dir(registry(sb))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".json")
                        .filter(|n| !n.starts_with('.'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Committed `(key, count)` lines in `out` (hidden files are in progress).
fn committed(out: &Path) -> Vec<(u64, u64)> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let (k, c) = l.split_once(' ').unwrap();
            lines.push((k.parse().unwrap(), c.parse().unwrap()));
        }
    }
    lines
}

/// Highest count per key.
fn finals(lines: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for &(k, c) in lines {
        let e = m.entry(k).or_insert(0);
        *e = (*e).max(c);
    }
    m
}

fn savepoint_path(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path in\n{}\n{}", out.stdout, out.stderr))
        .to_string()
}

/// Lets a job commit at least `n` lines.
fn wait_for_output(out: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(out).is_err() || committed(out).len() < n {
        assert!(
            Instant::now() < deadline,
            "no progress in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn savepoint_cancel_rescale_up_and_down_matches_a_failure_free_run() {
    let sb = Sandbox::new();
    let sps = sb.path("savepoints");
    let sps_str = sps.to_str().unwrap();

    // The failure-free reference: the same job to its end.
    let reference_out = sb.path("reference");
    run_to_end(&sb, &["-p", "2"], &reference_out);
    let expected = finals(&committed(&reference_out));
    assert_eq!(expected.len() as u64, KEYS);
    assert!(expected.values().all(|c| *c == RECORDS / KEYS));

    // p = 2, then `floe savepoint` and `floe cancel`.
    let out = sb.path("out");
    let job = start_job(&sb, &["-p", "2"], Some("4000"), &out);
    wait_for_output(&out, 2000);
    let sp1 = savepoint_path(&floe(&sb, &["savepoint", &job.id, sps_str]).ok());
    floe(&sb, &["cancel", &job.id]).ok();
    job.process.finish();
    let after_first = committed(&out);

    // p = 4 from it, then `floe stop` (a savepoint, then the job finishes).
    let job = start_job(&sb, &["-s", &sp1, "-p", "4"], Some("4000"), &out);
    wait_for_output(&out, after_first.len() + 2000);
    let sp2 = savepoint_path(&floe(&sb, &["stop", "--savepointPath", sps_str, &job.id]).ok());
    let stopped = job.process.finish();
    assert!(
        stopped.status.success(),
        "a stopped job exits 0\n{}",
        stopped.stderr
    );
    let after_second = committed(&out);

    // p = 1 from the stop's savepoint, to the end.
    run_to_end(&sb, &["-s", &sp2, "-p", "1"], &out);
    read_committed(&out); // nothing left uncommitted
    let all = committed(&out);

    // Final counts equal the failure-free run's.
    assert_eq!(finals(&all), expected);
    // No gap: every key has every count 1..=N/K.
    let per_key: BTreeMap<u64, BTreeSet<u64>> =
        all.iter().fold(BTreeMap::new(), |mut m, &(k, c)| {
            m.entry(k).or_default().insert(c);
            m
        });
    for (k, counts) in &per_key {
        assert_eq!(
            counts.len() as u64,
            RECORDS / KEYS,
            "key {k} is missing counts"
        );
    }
    // Between `floe savepoint` and `floe cancel` the first job went on
    // committing; the restored job recounts those, so only counts up to
    // the first job's last committed ones may repeat. The stop's savepoint
    // is exact: nothing after the p = 4 run repeats.
    let first_max = finals(&after_first);
    let mut seen = BTreeSet::new();
    for &(k, c) in &all {
        if !seen.insert((k, c)) {
            assert!(c <= first_max[&k], "key {k} count {c} was committed twice");
        }
    }
    let second: BTreeSet<(u64, u64)> = after_second.iter().copied().collect();
    let third: Vec<&(u64, u64)> = all.iter().filter(|l| !after_second.contains(l)).collect();
    assert!(third.iter().all(|l| !second.contains(l)));
    assert!(!third.is_empty(), "the last run continued the counts");
}

#[test]
fn a_moved_savepoint_restores_info_describes_it_and_dispose_removes_it() {
    let sb = Sandbox::new();
    let sps = sb.path("savepoints");
    let out = sb.path("out");
    let job = start_job(&sb, &["-p", "2"], Some("4000"), &out);
    wait_for_output(&out, 1000);
    let sp = savepoint_path(&floe(&sb, &["cancel", "-s", sps.to_str().unwrap(), &job.id]).ok());
    job.process.finish();
    let sp_dir = PathBuf::from(sp.strip_prefix("file://").unwrap());

    // Rename it, then copy it elsewhere.
    let moved = sb.path("moved/my-savepoint");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&sp_dir, &moved).unwrap();
    let copy = sb.path("copied");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&moved).unwrap().flatten() {
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }

    // `floe info` describes it.
    let info = floe(&sb, &["info", copy.to_str().unwrap()]).ok();
    for needle in [
        "Savepoint",
        "uid generator",
        "uid count-per-key",
        "uid file-sink",
        "parallelism 2",
        "max parallelism 128",
        "keyed state 'count': ValueState<u64>",
        " UTC (",
        "key groups 0..=63",
        "key groups 64..=127",
        "operator state 'file-sink-writer-state'",
    ] {
        assert!(
            info.stdout.contains(needle),
            "{needle:?} in\n{}",
            info.stdout
        );
    }

    // The copy restores and the job runs to the exact end.
    run_to_end(&sb, &["-s", copy.to_str().unwrap(), "-p", "3"], &out);
    assert!(
        finals(&committed(&out))
            .values()
            .all(|c| *c == RECORDS / KEYS)
    );

    // Dispose removes it; then it is no savepoint any more.
    let disposed = floe(&sb, &["savepoint", "-d", moved.to_str().unwrap()]).ok();
    assert!(disposed.stdout.contains("disposed"), "{}", disposed.stdout);
    assert!(!moved.exists());
    floe(&sb, &["info", moved.to_str().unwrap()]).fails_with(&["is not a savepoint"]);
    floe(&sb, &["savepoint", "-d", moved.to_str().unwrap()]).fails_with(&["is not a savepoint"]);
    // The copy is untouched.
    assert!(copy.join("_metadata").is_file());
}

#[test]
fn state_matching_no_operator_needs_allow_non_restored_state() {
    let sb = Sandbox::new();
    let sps = sb.path("savepoints");
    let out = sb.path("out");
    let job = start_job(&sb, &[], Some("4000"), &out);
    wait_for_output(&out, 500);
    let sp = savepoint_path(&floe(&sb, &["cancel", "-s", sps.to_str().unwrap(), &job.id]).ok());
    job.process.finish();

    // Word count (writing to stdout) has none of keyed-count's uids.
    let input = sb.write("words.txt", "a b a\nc a\n");
    let args = |n: bool| {
        let mut a = vec!["run", "-s", sp.as_str()];
        if n {
            a.push("-n");
        }
        a.extend(["wordcount", "--input", input.to_str().unwrap()]);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let refused = run(sb.floe(args(false)).env("FLOE_REGISTRY_DIR", registry(&sb)));
    let refused = refused.fails_with(&["count-per-key", "generator", "allowNonRestoredState"]);
    assert!(refused.stdout.is_empty(), "a refused restore runs nothing");
    let counted = run(sb.floe(args(true)).env("FLOE_REGISTRY_DIR", registry(&sb))).ok();
    assert!(counted.lines().contains(&"a 3"), "{}", counted.stdout);
}

/// A savepoint of the `u64` count restored into the job declaring it as
/// `u32` (`--count-type u32`): `floe run -s` exits non-zero at once —
/// checkpointing and its unlimited default restarts on — with one error
/// naming the uid, the state, both types and the fix, and emits nothing.
#[test]
fn a_state_of_another_type_is_refused_without_restarting() {
    let sb = Sandbox::new();
    let sps = sb.path("savepoints");
    let out = sb.path("out");
    let job = start_job(&sb, &[], Some("4000"), &out);
    wait_for_output(&out, 500);
    let sp = savepoint_path(&floe(&sb, &["cancel", "-s", sps.to_str().unwrap(), &job.id]).ok());
    job.process.finish();

    // The savepoint's pending output is committed on restore (the sink
    // opens before a record flows); nothing is added to it.
    let mut args = job_args(&sb, &["-s", &sp], None, &out);
    args.extend(["--count-type".into(), "u32".into()]);
    let started = Instant::now();
    let refused = run(sb.floe(&args).env("FLOE_REGISTRY_DIR", registry(&sb)));
    let took = started.elapsed();
    let refused = refused.fails_with(&[
        "uid 'count-per-key'",
        "state 'count'",
        "ValueState<u64>",
        "ValueState<u32>",
        "with_migration",
    ]);
    assert!(
        !refused.stderr.contains("restarting after failure"),
        "a refusal is never retried:\n{}",
        refused.stderr
    );
    let finals_before = finals(&committed(&out));
    let counted: u64 = finals_before.values().sum();
    assert!(
        counted < RECORDS,
        "the job was stopped before its end: {counted}"
    );
    assert_eq!(
        committed(&out).len() as u64,
        counted,
        "a refused restore emits nothing"
    );
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
}

/// `floe savepoint -d` on a directory that merely holds a file named
/// `_metadata` (here empty, beside a user's files) exits non-zero with a
/// one-line reason and deletes nothing.
#[test]
fn dispose_refuses_a_directory_that_is_not_a_savepoint() {
    let sb = Sandbox::new();
    let dir = sb.path("my-notes");
    std::fs::create_dir_all(dir.join("drafts")).unwrap();
    std::fs::write(dir.join("_metadata"), b"").unwrap();
    std::fs::write(dir.join("thesis.tex"), b"keep me").unwrap();
    std::fs::write(dir.join("drafts/v1.tex"), b"keep me").unwrap();
    floe(&sb, &["savepoint", "-d", dir.to_str().unwrap()]).fails_with(&[
        "refusing to delete",
        "nothing was deleted",
        "_metadata",
    ]);
    assert_eq!(std::fs::read(dir.join("_metadata")).unwrap(), b"");
    assert_eq!(std::fs::read(dir.join("thesis.tex")).unwrap(), b"keep me");
    assert_eq!(
        std::fs::read(dir.join("drafts/v1.tex")).unwrap(),
        b"keep me"
    );
}

/// When the process printed its `n`-th stdout line (waiting at most 30 s).
fn await_lines(times: &LineTimes, n: usize, process: &mut Running) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = times.lock().unwrap().get(n - 1) {
            return *t;
        }
        assert!(!process.has_exited(), "the job ended early");
        assert!(Instant::now() < deadline, "fewer than {n} lines in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines per second between `from` and `to`: the least-squares slope of
/// the running line count over the lines' arrival times, so one stall
/// and the catch-up after it barely move it.
fn lines_per_second(times: &LineTimes, from: Instant, to: Instant) -> f64 {
    let points: Vec<(f64, f64)> = times
        .lock()
        .unwrap()
        .iter()
        .filter(|t| (from..to).contains(t))
        .enumerate()
        .map(|(i, t)| (t.duration_since(from).as_secs_f64(), i as f64))
        .collect();
    assert!(points.len() > 100, "{} lines to measure", points.len());
    let n = points.len() as f64;
    let (mean_t, mean_i) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, i)| (a + t / n, b + i / n));
    let (cov, var) = points.iter().fold((0.0, 0.0), |(c, v), (t, i)| {
        (
            c + (t - mean_t) * (i - mean_i),
            v + (t - mean_t) * (t - mean_t),
        )
    });
    cov / var
}

/// `--rate R` is the whole generator's rate, also after a rescaling
/// restore: keyed-count (one stdout line per record) savepointed at p = 2
/// (two index ranges) and restored at p = 3, where one reader has no
/// range left, still prints R lines a second (±10 %), measured over 4 s
/// after a 1 s start. (When each of the three readers took a third of R,
/// the restored job ran at two thirds of R.)
#[test]
fn a_rate_limited_generator_keeps_its_rate_when_rescaled_up() {
    const RATE: f64 = 2000.0;
    let sb = Sandbox::new();
    let sps = sb.path("savepoints");
    let rate = RATE.to_string();
    let args = |flags: &[&str]| {
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend(["keyed-count", "--records", "10000000", "--keys", "13"]);
        args.extend(["--rate", &rate]);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };

    let before = entries(&sb);
    let (process, times) = start_timed(
        sb.floe(args(&["-p", "2"]))
            .env("FLOE_REGISTRY_DIR", registry(&sb)),
    );
    let mut job = registered(&sb, &before, process);
    await_lines(&times, 1000, &mut job.process);
    let sp = savepoint_path(&floe(&sb, &["cancel", "-s", sps.to_str().unwrap(), &job.id]).ok());
    job.process.finish();

    let (mut process, times) = start_timed(
        sb.floe(args(&["-s", &sp, "-p", "3"]))
            .env("FLOE_REGISTRY_DIR", registry(&sb)),
    );
    let first = await_lines(&times, 1, &mut process);
    let (from, to) = (
        first + Duration::from_secs(1),
        first + Duration::from_secs(5),
    );
    // A little past the window, so its last lines have been read.
    let read = to + Duration::from_millis(200);
    std::thread::sleep(read.saturating_duration_since(Instant::now()));
    assert!(!process.has_exited(), "the restored job ended early");
    let rate = lines_per_second(&times, from, to);
    process.kill();
    assert!(
        (rate - RATE).abs() <= RATE * 0.1,
        "restored at p = 3: {rate:.0} records/s, not {RATE} ± 10 %"
    );
}
