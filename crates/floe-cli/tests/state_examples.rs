//! The operator-state examples across a real SIGKILL and a restart from
//! the retained checkpoint: the broadcast dynamic-rules job commits exactly
//! the matches computed here independently, and the BufferingSink loses
//! none of the records it held in its operator ListState.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use floe_cli::examples::dynamic_rules::action_of;

fn assert_killed(o: &Output, point: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(9), "not killed at {point}: {err}");
    assert!(err.contains("crash point"), "{err}");
}

/// `<user> <pattern>` lines for every two consecutive actions of a user
/// that form one of the default patterns, sorted.
fn expected_matches(actions: u64, users: u64) -> Vec<String> {
    let patterns = [
        ("browse-buy", "browse", "buy"),
        ("login-logout", "login", "logout"),
    ];
    let mut last: BTreeMap<u64, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for i in 0..actions {
        let (user, action) = (i % users, action_of(i));
        if let Some(prev) = last.insert(user, action) {
            for (name, first, second) in patterns {
                if prev == first && action == second {
                    out.push(format!("{user} {name}"));
                }
            }
        }
    }
    out.sort();
    out
}

/// Compares sorted line lists without printing thousands of lines.
fn assert_same_lines(actual: &[String], expected: &[String], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} lines, expected {}; first difference at {first}: {:?} vs {:?}",
        actual.len(),
        expected.len(),
        actual.get(first),
        expected.get(first)
    );
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter(|l| !l.starts_with("Job "))
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn dynamic_rules_commits_every_match_exactly_once_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (actions, users) = (60_000u64, 13u64);
    let expected = expected_matches(actions, users);
    assert!(expected.len() > 1000, "the input has matches");
    let a = actions.to_string();
    let u = users.to_string();
    let base = ["-p", "2", "dynamic-rules", "--actions", &a, "--users", &u];

    // Failure-free, printed.
    let o = common::checkpointed_floe(&base, &tmp.path().join("c0"))
        .output()
        .unwrap();
    assert_same_lines(
        &sorted_lines(&common::assert_ok(&o)),
        &expected,
        "failure-free run",
    );

    // Killed after a pre-commit of checkpoint 2, restarted: the patterns
    // come back from broadcast state (their source does not send them
    // again), waiting actions from keyed state.
    let (ckpt, out) = (tmp.path().join("c1"), tmp.path().join("out"));
    let out_s = out.to_str().unwrap();
    let mut args = base.to_vec();
    args.extend(["--output", out_s]);
    let mut first = args.clone();
    first.extend(["--rate", "40000"]);
    let o = common::checkpointed_floe(&first, &ckpt)
        .env("FLOE_KILL_AT", "sink.after-pre-commit@3")
        .output()
        .unwrap();
    assert_killed(&o, "sink.after-pre-commit@3");
    let dir = common::job_dir(&ckpt);
    args.extend(["--fromCheckpoint", dir.to_str().unwrap()]);
    common::assert_ok(&common::checkpointed_floe(&args, &ckpt).output().unwrap());
    assert_same_lines(
        &sorted_lines(&common::read_committed(&out)),
        &expected,
        "committed matches after SIGKILL and restore",
    );
}

#[test]
fn buffering_sink_keeps_its_buffer_across_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, out) = (tmp.path().join("ckpt"), tmp.path().join("blocks.txt"));
    let n = 30_000u64;
    let n_s = n.to_string();
    let out_s = out.to_str().unwrap();
    let args = [
        "buffering-sink",
        "--records",
        &n_s,
        "--threshold",
        "1000",
        "--output",
        out_s,
    ];
    let mut first = args.to_vec();
    first.extend(["--rate", "20000"]);
    let o = common::checkpointed_floe(&first, &ckpt)
        .env("FLOE_KILL_AT", "checkpoint.after-metadata@3")
        .output()
        .unwrap();
    assert_killed(&o, "checkpoint.after-metadata@3");
    let before: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        before.len() < n as usize,
        "run 1 was killed before sending everything"
    );
    let dir = common::job_dir(&ckpt);
    let mut second = args.to_vec();
    second.extend(["--fromCheckpoint", dir.to_str().unwrap()]);
    common::assert_ok(&common::checkpointed_floe(&second, &ckpt).output().unwrap());
    let mut seen = vec![0u32; n as usize];
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        seen[l.parse::<usize>().unwrap()] += 1;
    }
    // The source resumes after the checkpoint; what was buffered at the
    // checkpoint comes back only from operator state. At-least-once: a
    // block sent after the checkpoint may be sent again, nothing is lost.
    let missing: Vec<usize> = (0..n as usize).filter(|i| seen[*i] == 0).collect();
    assert!(
        missing.is_empty(),
        "lost records: {:?}…",
        &missing[..missing.len().min(10)]
    );
    assert!(
        seen.iter().all(|c| *c <= 2),
        "a record sent more than twice"
    );
}
