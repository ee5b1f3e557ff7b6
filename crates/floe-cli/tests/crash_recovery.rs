//! A real process killed with SIGKILL mid-run and started again from its
//! retained checkpoint ends with exactly the keyed counts of a failure-free
//! run.

use std::collections::HashMap;
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
    let (out1, out2) = (tmp.path().join("run1.txt"), tmp.path().join("run2.txt"));

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
        let chk = completed_checkpoints(&copy_root).pop().unwrap();
        let victim = std::fs::read_dir(&chk)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap() != "_metadata")
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

    let expected: u64 = 300_000 / 13; // 300000 = 13 × 23076 + 12
    let mut runs: HashMap<u64, Vec<u64>> = HashMap::new();
    for line in std::fs::read_to_string(&out2).unwrap().lines() {
        let (k, n) = line.split_once(' ').unwrap();
        runs.entry(k.parse().unwrap())
            .or_default()
            .push(n.parse().unwrap());
    }
    assert_eq!(runs.len(), 13);
    let mut resumed = 0;
    for (k, mut counts) in runs {
        counts.sort_unstable();
        let want = expected + u64::from(k < 300_000 % 13);
        assert_eq!(*counts.last().unwrap(), want, "key {k}: final count");
        // Run 2 continues exactly where the checkpoint left off: every
        // count after it once, none before it.
        let first = counts[0];
        assert_eq!(counts, (first..=want).collect::<Vec<_>>(), "key {k}");
        if first > 1 {
            resumed += 1;
        }
    }
    assert!(
        resumed > 0,
        "run 2 started from empty state, not from the checkpoint"
    );
}

#[test]
fn bad_checkpoint_paths_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.txt");
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
