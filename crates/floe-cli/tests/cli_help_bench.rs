//! `--help` output of the CLI and the jobs, `floe examples`, and the JSON line
//! of `floe bench keyed-count`.

mod common;

use common::*;

#[track_caller]
fn assert_mentions(out: &Output, needles: &[&str]) {
    for n in needles {
        assert!(
            out.stdout.contains(n),
            "{}: help should mention {n:?}\n{}",
            out.what,
            out.stdout
        );
    }
}

#[test]
fn floe_help() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe(["--help"])).ok();
    assert_mentions(&out, &["run", "examples", "bench", "--help", "--version"]);
    let out = run(&mut sb.floe(["--version"])).ok();
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
    // No subcommand: usage on stderr, non-zero.
    run(&mut sb.cmd(FLOE)).fails_with(&["Usage"]);
}

#[test]
fn floe_run_help() {
    let sb = Sandbox::new();
    for help in ["--help", "-h"] {
        let out = run(&mut sb.floe(["run", help])).ok();
        assert_mentions(
            &out,
            &[
                "-p",
                "--parallelism",
                "--config",
                "-D",
                "KEY=VALUE",
                "<JOB>",
            ],
        );
    }
    let out = run(&mut sb.floe(["help", "run"])).ok();
    assert_mentions(&out, &["--parallelism", "--config"]);
}

#[test]
fn floe_bench_keyed_count_help() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe(["bench", "keyed-count", "--help"])).ok();
    assert_mentions(
        &out,
        &["--records", "--keys", "--parallelism", "--backend", "-D"],
    );
    let out = run(&mut sb.floe(["bench", "--help"])).ok();
    assert_mentions(&out, &["keyed-count"]);
}

#[test]
fn job_help_shows_the_jobs_own_flags() {
    let sb = Sandbox::new();
    let jobs: [(&str, &str, &[&str]); 8] = [
        ("wordcount", WORDCOUNT, &["--input", "--socket", "--output"]),
        (
            "keyed-count",
            KEYED_COUNT,
            &["--records", "--keys", "--rate", "--output"],
        ),
        (
            "count-window-average",
            COUNT_WINDOW_AVERAGE,
            &["--input", "--output"],
        ),
        (
            "fraud-detection",
            FRAUD_DETECTION,
            &["--transactions", "--accounts", "--rate", "--output"],
        ),
        (
            "sessionize",
            SESSIONIZE,
            &[
                "--input",
                "--socket",
                "--gap",
                "--out-of-orderness",
                "--rate",
                "--output",
            ],
        ),
        (
            "delayed-echo",
            DELAYED_ECHO,
            &[
                "--events", "--keys", "--delay", "--window", "--rate", "--output",
            ],
        ),
        (
            "timer-burst",
            TIMER_BURST,
            &["--timers", "--keys", "--output"],
        ),
        (
            "nexmark",
            NEXMARK,
            &[
                "--query", "--events", "--tps", "--seed", "--rate", "--output",
            ],
        ),
    ];
    for (name, binary, flags) in jobs {
        // By example name, with --help first or after other arguments, and
        // with Floe's flags before the job.
        for args in [
            vec!["run", name, "--help"],
            vec!["run", name, "-h"],
            vec!["run", "-p", "2", name, "--output", "x", "--help"],
        ] {
            let out = run(&mut sb.floe(&args)).ok();
            assert_mentions(&out, flags);
            assert!(
                !out.stderr.contains("error"),
                "{}: {}",
                out.what,
                out.stderr
            );
        }
        // The stand-alone binary, directly and through `floe run <path>`.
        let out = run(sb.cmd(binary).arg("--help")).ok();
        assert_mentions(&out, flags);
        let out = run(&mut sb.floe(["run", binary, "--help"])).ok();
        assert_mentions(&out, flags);
    }
    assert!(
        !sb.path("x").exists(),
        "--help must not run the job (it created its --output)"
    );
}

#[test]
fn floe_examples_lists_the_examples() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe(["examples"])).ok();
    let names: Vec<&str> = out
        .lines()
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "wordcount",
            "keyed-count",
            "kafka-keyed-count",
            "dynamic-rules",
            "buffering-sink",
            "fraud-detection",
            "sessionize",
            "delayed-echo",
            "timer-burst",
            "count-window-average",
            "nexmark"
        ]
    );
}

#[test]
fn bench_keyed_count_prints_a_json_report() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe([
        "bench",
        "keyed-count",
        "--records",
        "200000",
        "--keys",
        "1000",
        "--parallelism",
        "2",
    ]))
    .ok();
    assert_job_started(&out, "KeyedCountBench");
    let last = out.stdout.lines().last().expect("a stdout line");
    let report: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last:?}"));
    let obj = report.as_object().expect("a JSON object");
    for field in [
        "records",
        "keys",
        "parallelism",
        "backend",
        "seconds",
        "records_per_sec",
        "job_seconds",
        "peak_rss_bytes",
    ] {
        assert!(obj.contains_key(field), "missing {field} in {last}");
    }
    assert_eq!(report["records"].as_u64(), Some(200_000), "{last}");
    assert_eq!(report["keys"].as_u64(), Some(1000), "{last}");
    assert_eq!(report["parallelism"].as_u64(), Some(2), "{last}");
    assert!(report["backend"].is_string(), "{last}");
    for f in ["seconds", "records_per_sec", "job_seconds"] {
        let v = report[f]
            .as_f64()
            .unwrap_or_else(|| panic!("{f} not a number: {last}"));
        assert!(v >= 0.0, "{f} negative: {last}");
    }
    assert!(
        report["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{last}"
    );

    // Short flags, another backend name and a -D value are accepted.
    let out = run(&mut sb.floe([
        "bench",
        "keyed-count",
        "--records",
        "5000",
        "--keys",
        "10",
        "-p",
        "3",
        "--backend",
        "hashmap",
        "-D",
        "floe.runtime.batch-size=7",
    ]))
    .ok();
    let last = out.stdout.lines().last().expect("a stdout line");
    let report: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(report["records"].as_u64(), Some(5000));
    assert_eq!(report["parallelism"].as_u64(), Some(3));
}

#[test]
fn bench_pairs_runs_interleaved_pairs_and_reports_the_overhead() {
    let sb = Sandbox::new();
    let dir = format!("file://{}", sb.path("ck").display());
    let out = run(&mut sb.floe([
        "bench",
        "keyed-count",
        "--records",
        "50000",
        "--keys",
        "100",
        "-p",
        "2",
        "--pairs",
        "2",
        "--checkpoint-interval",
        "20",
        "--checkpoint-dir",
        &dir,
    ]))
    .ok();
    let last = out.stdout.lines().last().expect("a stdout line");
    let report: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last:?}"));
    assert_eq!(report["benchmark"], "checkpoint-overhead", "{last}");
    assert_eq!(report["pairs"].as_u64(), Some(2), "{last}");
    for (side, with_checkpoints) in [("off", false), ("on", true)] {
        let runs = report[side].as_array().expect("runs");
        assert_eq!(runs.len(), 2, "{side}: {last}");
        for r in runs {
            assert!(
                r["records_per_sec"].as_f64().is_some_and(|v| v > 0.0),
                "{last}"
            );
            // A bounded job with checkpointing takes a final checkpoint.
            let completed = r["checkpoints_completed"].as_u64().unwrap();
            assert_eq!(completed > 0, with_checkpoints, "{side}: {last}");
        }
    }
    // The overheads are what the runs say.
    let rate = |side: &str, i: usize| report[side][i]["records_per_sec"].as_f64().unwrap();
    let want = (0..2)
        .map(|i| (rate("off", i) - rate("on", i)) / rate("off", i) * 100.0)
        .sum::<f64>()
        / 2.0;
    let mean = report["overhead_pct_mean"].as_f64().unwrap();
    assert!((mean - want).abs() < 1e-6, "{mean} != {want}: {last}");
    assert!(report["overhead_pct_of_medians"].is_number(), "{last}");

    // Pairs need something to compare.
    run(&mut sb.floe([
        "bench",
        "keyed-count",
        "--records",
        "10",
        "--keys",
        "1",
        "--pairs",
        "1",
    ]))
    .fails_with(&["--pairs", "--checkpoint-interval"]);
}
