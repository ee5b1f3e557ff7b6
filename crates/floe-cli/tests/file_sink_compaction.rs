//! The file sink compacting small files, end to end through the `floe`
//! CLI: `floe run keyed-count --output <dir> --compact-threshold <bytes>
//! --compact-every <n>` rolls a part file per subtask at every checkpoint
//! (every 50 ms) and concatenates them into files of at least 256 KiB. A
//! reader polling the directory never sees a record twice nor a record
//! vanish; the process killed by SIGKILL at each phase of a compaction
//! (and of a checkpoint) and restored with `--fromCheckpoint` — at its
//! parallelism or another — or rescaled through `floe stop` and `-s`,
//! leaves exactly the failure-free output: every count of every key once,
//! as the job's input implies, in a few files where rolling alone leaves
//! one per subtask and checkpoint.

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Sandbox, assert_keyed_counts_once, checkpointed_floe, read_committed};

const RECORDS: u64 = 300_000;
const KEYS: u64 = 13;

/// Compaction as the tests run it: 256 KiB units (about a dozen
/// checkpoints' files), and every 40 checkpoints at the latest.
const COMPACT: [&str; 4] = ["--compact-threshold", "262144", "--compact-every", "40"];

/// `floe run keyed-count` at parallelism `p`, 100 000 records a second
/// (3 s), checkpointing every 50 ms into `ckpt`, writing into `out` with
/// `extra` flags.
fn keyed_count(p: &str, ckpt: &Path, out: &Path, extra: &[&str]) -> Command {
    let (records, keys) = (RECORDS.to_string(), KEYS.to_string());
    let mut c = checkpointed_floe(
        &[
            "keyed-count",
            "--records",
            &records,
            "--keys",
            &keys,
            "-p",
            p,
            "--rate",
            "100000",
            "--output",
            out.to_str().unwrap(),
        ],
        ckpt,
    );
    c.args(extra);
    c
}

fn assert_once(committed: &str, what: &str) {
    assert_keyed_counts_once(committed, RECORDS, KEYS, what);
}

/// The lines of the visible (not `.`-hidden) files directly in `dir`, as
/// a reader lists and reads them; panics on a line read twice.
fn visible_lines(dir: &Path) -> HashSet<String> {
    let mut lines = HashSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // A visible file never changes nor disappears.
        let text = std::fs::read_to_string(e.path())
            .unwrap_or_else(|err| panic!("visible file {name} could not be read: {err}"));
        for l in text.lines() {
            assert!(
                lines.insert(l.to_string()),
                "{l:?} is visible twice (again in {name})"
            );
        }
    }
    lines
}

/// A reader polling `dir` until told to stop: every look must show each
/// record at most once and everything an earlier look showed. Returns
/// how many looks saw output.
fn watch(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let (mut seen, mut looks) = (HashSet::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            let now = visible_lines(&dir);
            if let Some(gone) = seen.difference(&now).next() {
                panic!("{gone:?} was visible and is not any more");
            }
            looks += usize::from(!now.is_empty());
            seen = now;
            std::thread::sleep(Duration::from_millis(10));
        }
        looks
    })
}

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

/// Visible part files in `dir`.
fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// The failure-free compacting run: its output, and how many files it
/// left.
fn failure_free(sb: &Sandbox) -> (String, usize) {
    let out = sb.path("clean-out");
    common::assert_ok(
        &keyed_count("2", &sb.path("clean-ckpt"), &out, &COMPACT)
            .output()
            .unwrap(),
    );
    let committed = read_committed(&out);
    assert_once(&committed, "failure-free compacting run");
    (committed, file_count(&out))
}

#[test]
fn compaction_leaves_few_files_and_a_reader_never_sees_a_record_twice() {
    let sb = Sandbox::new();
    let out = sb.path("out");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = watch(out.clone(), stop.clone());
    let o = keyed_count("2", &sb.path("ckpt"), &out, &COMPACT)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let looks = reader.join().expect("the reader saw no record twice");
    common::assert_ok(&o);
    assert!(looks >= 3, "the reader saw output only {looks} times");
    let committed = read_committed(&out); // no hidden file is left
    assert_once(&committed, "compacting run");
    let compacted = file_count(&out);

    // The same job without compaction: a file per subtask and checkpoint.
    let plain = sb.path("plain-out");
    common::assert_ok(
        &keyed_count("2", &sb.path("plain-ckpt"), &plain, &[])
            .output()
            .unwrap(),
    );
    let per_checkpoint = file_count(&plain);
    assert!(
        compacted * 6 < per_checkpoint,
        "{compacted} compacted files against {per_checkpoint} rolled at every checkpoint"
    );
    let sizes: Vec<u64> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert!(
        sizes.iter().filter(|s| **s >= 262_144).count() >= compacted.saturating_sub(2),
        "files below the threshold besides each subtask's last: {sizes:?}"
    );
}

/// Killed by SIGKILL at each phase of a compaction — as it starts, with
/// the compacted file written but hidden, just published with every input
/// still there, between two removals of inputs — and of a checkpoint
/// (after a pre-commit, after `_metadata`), and at a random moment; then
/// restored from the retained checkpoint into the same directory. What a
/// reader sees right after the kill holds no record twice and nothing the
/// failure-free run lacks; after the restore, exactly what it holds.
#[test]
fn compaction_survives_sigkill_at_each_phase() {
    let sb = Sandbox::new();
    let (clean, clean_files) = failure_free(&sb);
    let clean_lines: HashSet<&str> = clean.lines().collect();
    for point in [
        Some("compact.start@2"),
        Some("compact.before-publish@2"),
        Some("compact.after-publish@1"),
        Some("compact.remove-input@2"),
        Some("sink.after-pre-commit@7"),
        Some("checkpoint.after-metadata@9"),
        None,
    ] {
        let what = point.unwrap_or("mid-run");
        let case = sb.path(&what.replace(['.', '@'], "_"));
        let (ckpt, out) = (case.join("ckpt"), case.join("out"));
        let mut cmd = keyed_count("2", &ckpt, &out, &COMPACT);
        match point {
            Some(p) => {
                let o = cmd.env("FLOE_KILL_AT", p).output().unwrap();
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(o.status.signal(), Some(9), "{what}: {:?}: {err}", o.status);
                let name = p.split('@').next().unwrap();
                assert!(
                    err.contains(&format!("crash point {name} reached")),
                    "{what}: {err}"
                );
            }
            None => {
                let mut run = common::start(&mut cmd);
                common::wait_for_checkpoint(&ckpt, &mut run, what);
                std::thread::sleep(Duration::from_millis(500));
                run.kill();
            }
        }
        assert!(
            common::completed_checkpoint(&ckpt),
            "{what}: killed before any checkpoint completed"
        );
        for line in visible_lines(&out) {
            assert!(
                clean_lines.contains(line.as_str()),
                "{what}: {line:?} is not output"
            );
        }
        let job = common::job_dir(&ckpt).display().to_string();
        let restore = [&COMPACT[..], &["--fromCheckpoint", &job]].concat();
        common::assert_ok(
            &keyed_count("2", &ckpt, &out, &restore)
                .env_remove("FLOE_KILL_AT")
                .output()
                .unwrap(),
        );
        let committed = read_committed(&out);
        assert_once(&committed, what);
        assert_eq!(
            sorted_lines(&committed),
            sorted_lines(&clean),
            "{what}: committed output differs from the failure-free run"
        );
        let files = file_count(&out);
        assert!(
            files <= clean_files + 6,
            "{what}: {files} files, the failure-free run {clean_files}"
        );
    }
}

/// Rescaling a compacting job: killed at parallelism 2 just after
/// publishing a compacted file, restored from its checkpoint at 3, killed
/// again in the middle of a compaction, restored at 1; and, separately,
/// stopped with a savepoint at 2 and restored from it at 3. Each ends with
/// every count once and nothing hidden left.
#[test]
fn compacted_output_restores_at_other_parallelisms() {
    let sb = Sandbox::new();
    let out = sb.path("out");
    // Each run checkpoints into its own directory, so that the next one
    // restores the latest checkpoint of its predecessor.
    let ckpt = |p: &str| sb.path(&format!("ckpt-{p}"));
    let o = keyed_count("2", &ckpt("2"), &out, &COMPACT)
        .env("FLOE_KILL_AT", "compact.after-publish@2")
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(9), "{o:?}");
    let job = common::job_dir(&ckpt("2")).display().to_string();
    let from = [&COMPACT[..], &["--fromCheckpoint", &job]].concat();
    let o = keyed_count("3", &ckpt("3"), &out, &from)
        .env("FLOE_KILL_AT", "compact.before-publish@2")
        .output()
        .unwrap();
    assert_eq!(
        o.status.signal(),
        Some(9),
        "the restored run at 3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    visible_lines(&out);
    let job = common::job_dir(&ckpt("3")).display().to_string();
    let from = [&COMPACT[..], &["--fromCheckpoint", &job]].concat();
    common::assert_ok(&keyed_count("1", &ckpt("1"), &out, &from).output().unwrap());
    assert_once(&read_committed(&out), "2 -> 3 -> 1 through checkpoints");

    // Through a savepoint.
    let (ckpt, out, registry) = (sb.path("sp-ckpt"), sb.path("sp-out"), sb.path("registry"));
    let mut first =
        common::start(keyed_count("2", &ckpt, &out, &COMPACT).env("FLOE_REGISTRY_DIR", &registry));
    common::wait_for_checkpoint(&ckpt, &mut first, "savepoint run");
    std::thread::sleep(Duration::from_millis(700));
    let id = common::registered_job(&registry).expect("a registered job");
    let savepoints = sb.path("savepoints").display().to_string();
    let stop = common::run(
        sb.floe(["stop", "--savepointPath", &savepoints, &id])
            .env("FLOE_REGISTRY_DIR", &registry),
    )
    .ok();
    first.finish().ok();
    let savepoint = common::savepoint_path(&stop);
    assert!(
        file_count(&out) > 0,
        "compacted output before the savepoint"
    );
    visible_lines(&out);
    let from = [&COMPACT[..], &["-s", &savepoint]].concat();
    common::assert_ok(&keyed_count("3", &ckpt, &out, &from).output().unwrap());
    assert_once(&read_committed(&out), "2 -> 3 through a savepoint");
}

#[test]
fn bad_compaction_flags_name_the_flag() {
    let sb = Sandbox::new();
    let out = sb.path("out");
    for (flag, value) in [("--compact-threshold", "0"), ("--compact-every", "0")] {
        common::run(&mut sb.floe([
            "run",
            "keyed-count",
            "--records",
            "10",
            "--keys",
            "2",
            "--output",
            out.to_str().unwrap(),
            flag,
            value,
        ]))
        .fails_with(&[flag]);
    }
    assert!(!out.exists(), "nothing written by a job that did not start");
}
