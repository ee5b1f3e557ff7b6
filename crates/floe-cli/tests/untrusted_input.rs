//! Inputs a user hands `floe run` that used to be retried forever: a
//! savepoint restored with another `--output` directory (the run fails at
//! once with a one-line error naming both directories).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Committed `(key, count)` lines of a file sink's output directory.
fn committed_lines(out: &Path) -> usize {
    std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
                .sum()
        })
        .unwrap_or(0)
}

fn keyed_count(sb: &Sandbox, flags: &[&str], out: &Path) -> std::process::Command {
    let mut c = sb.floe(["run"]);
    c.args(flags)
        .args([
            "keyed-count",
            "--records",
            "1000000",
            "--keys",
            "7",
            "--rate",
            "4000",
        ])
        .arg("--output")
        .arg(out)
        .args(["-D", "execution.checkpointing.interval=200ms", "-D"])
        .arg(format!(
            "state.checkpoints.dir=file://{}",
            sb.path("chk").display()
        ))
        .env("FLOE_REGISTRY_DIR", sb.path("registry"));
    c
}

/// The id of the one job in the registry, once it registered.
fn registered_job(sb: &Sandbox, job: &mut Running) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ids: Vec<String> = std::fs::read_dir(sb.path("registry"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(".json")
                            .filter(|n| !n.starts_with('.'))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let [id] = ids.as_slice() {
            return id.clone();
        }
        assert!(!job.has_exited(), "the job ended before it registered");
        assert!(Instant::now() < deadline, "the job never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A savepoint of the exactly-once file sink restored with another
/// `--output`: its transactions are in the first directory and can never
/// be committed in the second, so `floe run` exits non-zero at once with
/// one `error:` line naming both, instead of restarting forever.
#[test]
fn restoring_a_file_sink_savepoint_into_another_directory_fails_at_once() {
    let sb = Sandbox::new();
    let (out1, out2) = (sb.path("out1"), sb.path("out2"));
    let mut job = start(&mut keyed_count(&sb, &[], &out1));
    let id = registered_job(&sb, &mut job);
    let deadline = Instant::now() + TIMEOUT;
    while committed_lines(&out1) < 200 {
        assert!(Instant::now() < deadline, "no committed output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sps = sb.path("savepoints");
    let cancelled = run(sb
        .floe(["cancel", "-s", sps.to_str().unwrap(), &id])
        .env("FLOE_REGISTRY_DIR", sb.path("registry")))
    .ok();
    let sp = cancelled
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path in {}", cancelled.stdout))
        .to_string();
    job.finish();

    let failed = run(&mut keyed_count(&sb, &["-s", &sp], &out2)).fails_with(&[
        "cannot commit the restored transaction",
        out1.to_str().unwrap(),
        out2.to_str().unwrap(),
    ]);
    let errors: Vec<&str> = failed
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", failed.stderr);
    for d in [&out1, &out2] {
        assert!(errors[0].contains(d.to_str().unwrap()), "{}", errors[0]);
    }
    assert!(
        !failed.stderr.contains("restarting after failure"),
        "the job was restarted:\n{}",
        failed.stderr
    );
}
