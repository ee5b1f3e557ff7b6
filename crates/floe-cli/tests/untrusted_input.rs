//! Inputs a user hands `floe run` that used to be read too eagerly or
//! retried forever: a directory holding a file sink's uncommitted files and
//! other hidden names (only the committed files are counted), and a
//! savepoint restored with another `--output` directory (the run fails at
//! once with a one-line error naming both directories).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Word count over a file sink's output directory as a killed job leaves
/// it: committed part files, an in-progress and a pending part file, a
/// `_`-prefixed marker and a dot-file, a subdirectory and a broken link.
/// Only the committed files count, as the shell reference over exactly
/// those files says; the skipped subdirectory and link are warned about.
#[test]
fn wordcount_reads_only_the_committed_files_of_a_directory() {
    let sb = Sandbox::new();
    let mut committed = Vec::new();
    for (i, seed) in [21u64, 22].into_iter().enumerate() {
        let t = generate_text(seed, 300 + 50 * i);
        committed.push(sb.write(&format!("out/part-{i}-0000000003-5eed0001"), &t.text));
    }
    // Uncommitted and hidden files: counting any of them would change the
    // counts.
    let extra = generate_text(23, 200).text;
    for hidden in [
        "out/.part-0-5eed0001-4.inprogress",
        "out/.part-1-0000000004-5eed0001.pending",
        "out/.hidden",
        "out/_SUCCESS",
        "out/nested/part-9",
    ] {
        sb.write(hidden, &extra);
    }
    std::os::unix::fs::symlink(sb.path("nowhere"), sb.path("out/part-broken")).unwrap();
    let refs: Vec<&Path> = committed.iter().map(|p| p.as_path()).collect();
    let reference = shell_word_counts(&refs);
    for p in ["1", "3"] {
        let out = run(sb
            .floe(["run", "wordcount", "-p", p, "--input"])
            .arg(sb.path("out")))
        .ok();
        assert_running_counts(
            &out.stdout,
            &reference,
            &format!("committed only at -p {p}"),
        );
        for warned in ["nested", "part-broken"] {
            assert!(
                out.stderr
                    .lines()
                    .any(|l| l.contains("WARN") && l.contains(warned)),
                "no warning about {warned}:\n{}",
                out.stderr
            );
        }
    }
}

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

fn hidden_files(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// A savepoint of the exactly-once file sink restored with another
/// `--output`: the files it recorded belong to the first directory and are
/// committed there (or, when a later checkpoint already did, reported in
/// one warning per subtask), and the job goes on writing into the second,
/// without an error and without a restart.
#[test]
fn restoring_a_file_sink_savepoint_into_another_directory_commits_in_the_first() {
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
    let before = committed_lines(&out1);

    let mut restored = start(&mut keyed_count(&sb, &["-s", &sp], &out2));
    let deadline = Instant::now() + TIMEOUT;
    while committed_lines(&out2) < 200 {
        assert!(!restored.has_exited(), "the restored job ended");
        assert!(Instant::now() < deadline, "no committed output in out2");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = restored.kill();
    assert!(
        hidden_files(&out1).is_empty(),
        "out1 keeps uncommitted files: {:?}",
        hidden_files(&out1)
    );
    assert!(committed_lines(&out1) >= before);
    assert!(
        !out.stderr.contains("restarting after failure") && !out.stderr.contains("error:"),
        "the restored job failed:\n{}",
        out.stderr
    );
    // One sink subtask (the default parallelism): at most one report.
    assert!(
        out.stderr.matches("file sink: restoring").count() <= 1,
        "{}",
        out.stderr
    );
}
