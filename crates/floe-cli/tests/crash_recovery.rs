//! A real process killed with SIGKILL — mid-run, or at an exact phase of a
//! checkpoint or of the file sink's two-phase commit — and started again
//! from its retained checkpoint leaves exactly the committed output of a
//! failure-free run: every running count once, none missing.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

fn completed_checkpoints(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(jobs) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    jobs.filter_map(|j| j.ok())
        .flat_map(|j| {
            std::fs::read_dir(j.path())
                .into_iter()
                .flatten()
                .filter_map(|c| c.ok())
        })
        .map(|c| c.path())
        .filter(|c| c.join("_metadata").is_file())
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn keyed_count(extra: &[&str], ckpt: &Path, out: &Path) -> Command {
    let mut c = Command::new(FLOE);
    c.args([
        "run",
        "keyed-count",
        "--records",
        "300000",
        "--keys",
        "13",
        "-p",
        "2",
    ])
    .args(["-D", "execution.checkpointing.interval=50ms"])
    .arg("-D")
    .arg(format!("state.checkpoints.dir=file://{}", ckpt.display()))
    .arg("--output")
    .arg(out)
    .args(extra)
    .env_remove("FLOE_CONF_DIR")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn sigkill_then_restart_from_retained_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("checkpoints");
    // Both runs commit into the same directory.
    let (out1, out2) = (tmp.path().join("out"), tmp.path().join("out"));

    // Run 1: rate limited so that it is killed mid-way.
    let mut child = keyed_count(&["--rate", "100000"], &ckpt, &out1)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed_checkpoints(&ckpt).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint completed in 30 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "job ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed process reported success");

    // Run 2 from the job's checkpoint directory (its latest checkpoint).
    let job_dir = std::fs::read_dir(&ckpt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // First, copies of it with one state file corrupted or truncated: the
    // restore fails naming that file, and deletes nothing.
    for damage in ["corrupt", "truncate"] {
        let copy_root = tmp.path().join(damage);
        copy_tree(&ckpt, &copy_root);
        let copy_job = copy_root.join(job_dir.file_name().unwrap());
        // The checkpoint `--fromCheckpoint <job dir>` restores: the latest
        // (a second retained one may still be there, in any listing order).
        let chk = completed_checkpoints(&copy_root)
            .into_iter()
            .max_by_key(|c| {
                let name = c.file_name().unwrap().to_string_lossy().into_owned();
                name.trim_start_matches("chk-").parse::<u64>().unwrap()
            })
            .unwrap();
        // A state file: not `_metadata`, nor a staging file (`<name>#<n>`)
        // that the SIGKILL may have left mid-publish, which no restore reads.
        let victim = std::fs::read_dir(&chk)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name != "_metadata" && !name.contains('#')
            })
            .expect("a state file");
        let mut bytes = std::fs::read(&victim).unwrap();
        if damage == "corrupt" {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        } else {
            bytes.truncate(bytes.len() - 3);
        }
        std::fs::write(&victim, &bytes).unwrap();
        let files_before = std::fs::read_dir(&chk).unwrap().count();
        let o = keyed_count(
            &["--fromCheckpoint", copy_job.to_str().unwrap()],
            &copy_root,
            &tmp.path().join(format!("{damage}.txt")),
        )
        .output()
        .unwrap();
        assert!(!o.status.success(), "{damage}: restore from a damaged file");
        let err = String::from_utf8_lossy(&o.stderr);
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name),
            "{damage}: error does not name {name}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(&chk).unwrap().count(),
            files_before,
            "{damage}: files were deleted"
        );
    }
    let output = keyed_count(
        &["--fromCheckpoint", job_dir.to_str().unwrap()],
        &ckpt,
        &out2,
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_exactly_once(&common::read_committed(&out2), "SIGKILL mid-run");
}

/// Every running count of keyed-count (300000 records, 13 keys) exactly
/// once: for each key, the counts 1..=N/K with nothing missing or repeated.
fn assert_exactly_once(committed: &str, what: &str) {
    common::assert_keyed_counts_once(committed, 300_000, 13, what);
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

/// The two-phase-commit file sink, with the process killed by SIGKILL at
/// each phase — before a pre-commit, after one, after `_metadata` was
/// written but before the commit notification, and between two commits —
/// then restarted from the retained checkpoint into the same output
/// directory: the committed output equals the failure-free run's, line for
/// line, and nothing uncommitted is left behind.
#[test]
fn two_phase_commit_file_sink_survives_sigkill_at_each_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let clean_out = tmp.path().join("clean-out");
    let o = keyed_count(&[], &tmp.path().join("clean-ckpt"), &clean_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let clean = common::read_committed(&clean_out);
    assert_exactly_once(&clean, "failure-free run");

    // With two sink subtasks and one checkpoint in flight at a time, the
    // third pass through a sink point is in checkpoint 2 (so checkpoint 1
    // completed); the second commit is the middle of committing one.
    for point in [
        "sink.before-pre-commit@3",
        "sink.after-pre-commit@3",
        "checkpoint.after-metadata@2",
        "sink.commit@2",
    ] {
        let case = tmp.path().join(point.replace(['.', '@'], "_"));
        let (ckpt, out) = (case.join("ckpt"), case.join("out"));
        let o = keyed_count(&["--rate", "100000"], &ckpt, &out)
            .env("FLOE_KILL_AT", point)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: not killed by SIGKILL ({:?}): {err}",
            o.status
        );
        let name = point.split('@').next().unwrap();
        assert!(
            err.contains(&format!("crash point {name} reached")),
            "{err}"
        );
        assert!(
            !completed_checkpoints(&ckpt).is_empty(),
            "{point}: killed before any checkpoint completed"
        );
        let job_dir = std::fs::read_dir(&ckpt)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let o = keyed_count(
            &["--fromCheckpoint", job_dir.to_str().unwrap()],
            &ckpt,
            &out,
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{point}: restart failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let committed = common::read_committed(&out);
        assert_exactly_once(&committed, point);
        assert_eq!(
            sorted_lines(&committed),
            sorted_lines(&clean),
            "{point}: committed output differs from the failure-free run"
        );
    }
}

/// The highest checkpoint id under `ckpt` (older ones are not retained).
fn last_checkpoint_id(ckpt: &Path) -> u64 {
    completed_checkpoints(ckpt)
        .iter()
        .filter_map(|c| {
            let name = c.file_name()?.to_string_lossy().into_owned();
            name.strip_prefix("chk-")?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The file sink rolling by size (192 KiB, so files span checkpoints) into
/// hourly date-time buckets, killed by SIGKILL mid-run and at phases of a
/// checkpoint, then restored from the retained checkpoint: the committed
/// output equals the failure-free run's exactly once — the in-progress
/// files a checkpoint recorded were truncated to their checkpointed length
/// — in fewer files than one per subtask and checkpoint.
#[test]
fn rolling_file_sink_with_buckets_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let rolling = [
        "--roll-size",
        "196608",
        "--roll-interval",
        "1h",
        "--roll-inactivity",
        "1h",
        "--bucket-format",
        "yyyy-MM-dd--HH",
    ];
    let clean_out = tmp.path().join("clean-out");
    let o = keyed_count(&rolling, &tmp.path().join("clean-ckpt"), &clean_out)
        .args(["--rate", "100000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = common::read_committed_tree(&clean_out);
    let clean: String = files.iter().map(|(_, c)| c.as_str()).collect();
    assert_exactly_once(&clean, "failure-free rolling run");
    assert!(
        files
            .iter()
            .all(|(p, _)| p.contains("--") && p.contains('/')),
        "part files outside date-time buckets: {files:?}"
    );
    // The same job rolling on every checkpoint (the examples' default):
    // one file per subtask and checkpoint.
    let per_checkpoint_out = tmp.path().join("per-checkpoint-out");
    let o = keyed_count(
        &[],
        &tmp.path().join("per-checkpoint-ckpt"),
        &per_checkpoint_out,
    )
    .args(["--rate", "100000"])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let per_checkpoint = common::read_committed_tree(&per_checkpoint_out).len();
    assert!(
        files.len() * 2 < per_checkpoint,
        "{} rolling files against {per_checkpoint} rolled on every checkpoint",
        files.len()
    );
    assert!(
        files.iter().any(|(_, c)| c.len() >= 65536),
        "no file rolled by size"
    );

    for point in [None, Some("sink.after-pre-commit@5"), Some("sink.commit@3")] {
        let what = point.unwrap_or("mid-run");
        let case = tmp.path().join(what.replace(['.', '@'], "_"));
        let (ckpt, out) = (case.join("ckpt"), case.join("out"));
        let mut cmd = keyed_count(&rolling, &ckpt, &out);
        cmd.args(["--rate", "100000"]);
        match point {
            Some(p) => {
                let o = cmd.env("FLOE_KILL_AT", p).output().unwrap();
                assert_eq!(o.status.signal(), Some(9), "{what}: {:?}", o.status);
            }
            None => {
                let mut child = cmd.spawn().unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while last_checkpoint_id(&ckpt) < 3 {
                    assert!(Instant::now() < deadline, "no checkpoints in 30 s");
                    assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(300));
                child.kill().unwrap(); // SIGKILL
                assert!(!child.wait().unwrap().success());
            }
        }
        assert!(
            !completed_checkpoints(&ckpt).is_empty(),
            "{what}: killed before any checkpoint completed"
        );
        let job_dir = std::fs::read_dir(&ckpt)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let o = keyed_count(
            &[
                &rolling[..],
                &["--fromCheckpoint", job_dir.to_str().unwrap()],
            ]
            .concat(),
            &ckpt,
            &out,
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{what}: restore failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let committed: String = common::read_committed_tree(&out)
            .iter()
            .map(|(_, c)| c.as_str())
            .collect();
        assert_exactly_once(&committed, what);
        assert_eq!(
            sorted_lines(&committed),
            sorted_lines(&clean),
            "{what}: committed output differs from the failure-free run"
        );
    }
}

#[test]
fn bad_checkpoint_paths_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = tmp.path().join("no-such-job");
    let o = keyed_count(
        &["--fromCheckpoint", missing.to_str().unwrap()],
        tmp.path(),
        &out,
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-job"), "{err}");
    // A chk directory without _metadata is not a checkpoint.
    let chk = tmp.path().join("job").join("chk-3");
    std::fs::create_dir_all(&chk).unwrap();
    std::fs::write(chk.join("state"), b"x").unwrap();
    let o = keyed_count(
        &["--fromCheckpoint", chk.to_str().unwrap()],
        tmp.path(),
        &out,
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(chk.join("state").is_file(), "nothing is deleted");
    assert!(
        !out.exists(),
        "no output written by a job that could not start"
    );
}

/// The same crash on the RocksDB backend: killed mid-run, restarted from
/// its retained checkpoint (restored into fresh RocksDB instances), every
/// count committed exactly once; the killed process's working directories
/// are cleaned up by the next start.
#[cfg(feature = "rocksdb")]
#[test]
fn sigkill_on_rocksdb_then_restart_from_retained_checkpoint() {
    sigkill_on_rocksdb(false);
}

/// The same with incremental checkpoints: the retained checkpoint is
/// RocksDB's own files under the killed job's `shared/`, which the new job
/// downloads and never deletes (they belong to the old job's checkpoint).
#[cfg(feature = "rocksdb")]
#[test]
fn sigkill_on_rocksdb_incremental_then_restart_from_retained_checkpoint() {
    sigkill_on_rocksdb(true);
}

#[cfg(feature = "rocksdb")]
fn sigkill_on_rocksdb(incremental: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("checkpoints");
    let out = tmp.path().join("out");
    let local = tmp.path().join("rocksdb");
    let local_flag = format!("state.backend.rocksdb.localdir={}", local.display());
    let incremental_flag = format!("state.backend.incremental={incremental}");
    let rocks = [
        "-D",
        "state.backend.type=rocksdb",
        "-D",
        &local_flag,
        "-D",
        &incremental_flag,
    ];
    let mut first: Vec<&str> = vec!["--rate", "100000"];
    first.extend(rocks);
    let mut child = keyed_count(&first, &ckpt, &out).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed_checkpoints(&ckpt).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint completed in 30 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "job ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success());
    assert!(
        std::fs::read_dir(&local).unwrap().count() > 0,
        "the killed job had RocksDB working directories"
    );

    let job_dir = std::fs::read_dir(&ckpt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let shared_files = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("shared"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let old_shared = shared_files(&job_dir);
    assert_eq!(
        !old_shared.is_empty(),
        incremental,
        "shared files only in incremental mode: {old_shared:?}"
    );
    let mut second: Vec<&str> = vec!["--fromCheckpoint", job_dir.to_str().unwrap()];
    second.extend(rocks);
    let output = keyed_count(&second, &ckpt, &out).output().unwrap();
    for f in &old_shared {
        assert!(f.exists(), "the restored job deleted {}", f.display());
    }
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_exactly_once(
        &common::read_committed(&out),
        &format!("SIGKILL on RocksDB (incremental {incremental})"),
    );
    let left: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "RocksDB directories left behind: {left:?}");
}
