//! End-to-end tests of the `floe` CLI and the stand-alone job binaries: each
//! test runs the real executables as child processes and checks their output
//! against expectations computed independently (a shell pipeline, or counts
//! known by construction).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Writes a generated text to `input.txt` and returns it with the shell
/// reference counts, checked against the counts known by construction.
fn text_fixture(
    sb: &Sandbox,
    seed: u64,
    lines: usize,
) -> (std::path::PathBuf, BTreeMap<String, u64>) {
    let text = generate_text(seed, lines);
    let input = sb.write("input.txt", &text.text);
    let reference = shell_word_counts(&[&input]);
    assert_eq!(
        reference, text.counts,
        "shell reference and generated counts disagree"
    );
    (input, reference)
}

#[test]
fn wordcount_file_matches_shell_reference_at_parallelism_1_2_4() {
    let sb = Sandbox::new();
    let (input, reference) = text_fixture(&sb, 0x5EED_0001, 3000);
    assert!(reference.values().sum::<u64>() > 10_000);
    let input = input.to_str().unwrap();
    for p in ["1", "2", "4"] {
        let before = ["run", "-p", p, "wordcount", "--input", input];
        let after = ["run", "wordcount", "--input", input, "-p", p];
        for args in [&before, &after] {
            let out = run(sb.floe(args).env("RUST_LOG", DEPLOY_LOG)).ok();
            let what = format!("floe {}", args.join(" "));
            assert_running_counts(&out.stdout, &reference, &what);
            assert_job_started(&out, "WordCount");
            // Source+tokenizer and sum+print chains, each `p` wide.
            let p: u32 = p.parse().unwrap();
            assert_eq!(deployed_tasks(&out), 2 * p, "{what}: parallelism in effect");
        }
    }
}

#[test]
fn wordcount_output_dir_holds_committed_part_files() {
    let sb = Sandbox::new();
    let (input, reference) = text_fixture(&sb, 0x5EED_0002, 2000);
    for p in ["1", "2"] {
        let output = sb.path(&format!("nested/dir/counts-{p}"));
        let out = run(sb
            .floe(["run", "wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(["-p", p]))
        .ok();
        assert!(out.stdout.is_empty(), "counts go to the file, not stdout");
        assert_job_started(&out, "WordCount");
        let written = read_committed(&output);
        assert!(written.ends_with('\n'));
        assert_running_counts(&written, &reference, &format!("--output at -p {p}"));
    }
}

#[test]
fn wordcount_directory_input_counts_every_file() {
    let sb = Sandbox::new();
    let mut parts = Vec::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (i, seed) in [11u64, 12, 13].into_iter().enumerate() {
        let t = generate_text(seed, 400 + 100 * i);
        for (w, n) in &t.counts {
            *expected.entry(w.clone()).or_insert(0) += n;
        }
        parts.push(sb.write(&format!("in/part-{i}.txt"), &t.text));
    }
    let refs: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let reference = shell_word_counts(&refs);
    assert_eq!(reference, expected);
    // Four source subtasks share three files.
    let out = run(sb
        .floe(["run", "wordcount", "-p", "4", "--input"])
        .arg(sb.path("in")))
    .ok();
    assert_running_counts(&out.stdout, &reference, "directory input at -p 4");
}

#[test]
fn wordcount_standalone_binary_matches_shell_reference() {
    let sb = Sandbox::new();
    let (input, reference) = text_fixture(&sb, 0x5EED_0003, 1500);
    let out = run(sb.cmd(WORDCOUNT).args(["-p", "2", "--input"]).arg(&input)).ok();
    assert_running_counts(&out.stdout, &reference, "wordcount binary");
    assert_job_started(&out, "WordCount");
}

/// Accepts one connection on a non-blocking listener, failing early if the
/// job exits without connecting.
fn accept_from(listener: &TcpListener, job: &mut Running) -> std::net::TcpStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(!job.has_exited(), "job exited without connecting");
                assert!(Instant::now() < deadline, "job did not connect");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn wordcount_socket_counts_lines_and_ends_when_the_server_closes() {
    let sb = Sandbox::new();
    let text = generate_text(0x5EED_0004, 600);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut job = start(&mut sb.floe(["run", "wordcount", "--socket", &addr, "-p", "2"]));
    let mut conn = accept_from(&listener, &mut job);
    // Send in chunks cut at arbitrary byte offsets (also inside lines and
    // inside multi-byte characters), with pauses so reads see partial lines.
    let bytes = text.text.as_bytes();
    let mut rng = Rng::new(7);
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + 1 + rng.below(700) as usize).min(bytes.len());
        conn.write_all(&bytes[at..end]).unwrap();
        conn.flush().unwrap();
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        at = end;
    }
    // Closing the connection ends the (bounded) stream and so the job.
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);
    let out = job.finish().ok();
    assert_running_counts(&out.stdout, &text.counts, "socket word count");
    assert_job_started(&out, "WordCount");
}

#[test]
fn wordcount_socket_refused_connection_is_a_clear_error() {
    let sb = Sandbox::new();
    // A port that was free a moment ago and has nothing listening now.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    run(&mut sb.floe(["run", "wordcount", "--socket", &addr])).fails_with(&[&addr]);
    run(&mut sb.floe(["run", "wordcount", "--socket", "no-port-here"]))
        .fails_with(&["no-port-here"]);
}

/// Records per key of keyed-count's generator (key = i mod keys).
fn keyed_count_expectation(records: u64, keys: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in 0..records {
        *m.entry((i % keys).to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn keyed_count_emits_every_running_count_once() {
    let sb = Sandbox::new();
    let expected = keyed_count_expectation(10_000, 7);
    let out = run(&mut sb.floe([
        "run",
        "keyed-count",
        "--records",
        "10000",
        "--keys",
        "7",
        "-p",
        "3",
    ]))
    .ok();
    assert_running_counts(&out.stdout, &expected, "keyed-count -p 3");
    assert_job_started(&out, "KeyedCount");

    let output = sb.path("keyed.txt");
    let out = run(sb
        .floe([
            "run",
            "-p",
            "3",
            "keyed-count",
            "--records",
            "10000",
            "--keys",
            "7",
        ])
        .arg("--output")
        .arg(&output))
    .ok();
    assert!(out.stdout.is_empty());
    let written = read_committed(&output);
    assert_running_counts(&written, &expected, "keyed-count --output");
}

/// The `(key, count)` lines `print()` wrote, each key's counts in
/// output order under the one prefix all its lines carried. Panics on a
/// line that is not `<prefix>(<key>, <count>)`.
fn printed_tuples<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<u64, (&'a str, Vec<u64>)> {
    let mut keys: BTreeMap<u64, (&str, Vec<u64>)> = BTreeMap::new();
    for line in lines {
        let open = line
            .find('(')
            .unwrap_or_else(|| panic!("no tuple in {line:?}"));
        let (prefix, tuple) = line.split_at(open);
        let (k, c) = tuple
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.split_once(", "))
            .unwrap_or_else(|| panic!("not a printed (u64, u64): {line:?}"));
        let (k, c): (u64, u64) = (k.parse().unwrap(), c.parse().unwrap());
        let entry = keys.entry(k).or_insert((prefix, Vec::new()));
        assert_eq!(entry.0, prefix, "key {k} printed by two subtasks");
        entry.1.push(c);
    }
    keys
}

/// `print()` on keyed-count's `DataStream<(u64, u64)>` (`--print`):
/// Flink's print format, each tuple's `Debug` form alone at parallelism 1
/// and after `<subtask index + 1>> ` at parallelism 2, where a key's lines
/// all come from the subtask owning it; `--print stderr` is
/// `print_to_err()`, the same lines on stderr.
#[test]
fn print_shows_tuples_with_flinks_subtask_prefix() {
    let sb = Sandbox::new();
    let (records, keys) = (600u64, 7u64);
    let job = |p: &str, target: &str| {
        let mut args = vec![
            "run",
            "-p",
            p,
            "keyed-count",
            "--records",
            "600",
            "--keys",
            "7",
        ];
        args.push("--print");
        if !target.is_empty() {
            args.push(target);
        }
        run(&mut sb.floe(args)).ok()
    };

    // One subtask: the generator's order, record i the (i / 7 + 1)-th of
    // key i mod 7, without prefix.
    let expected: Vec<String> = (0..records)
        .map(|i| format!("({}, {})", i % keys, i / keys + 1))
        .collect();
    assert_eq!(job("1", "").lines(), expected);

    // Two subtasks: every count of every key once and in order, each key
    // under one of the prefixes `1> ` and `2> `, both in use.
    let want: BTreeMap<u64, Vec<u64>> = (0..keys)
        .map(|k| (k, (1..=(records - k).div_ceil(keys)).collect()))
        .collect();
    for target in ["", "stderr"] {
        let out = job("2", target);
        let printed = if target.is_empty() {
            printed_tuples(out.lines().into_iter())
        } else {
            assert!(out.stdout.is_empty(), "{}", out.stdout);
            // The job's log lines (job id, REST endpoint) are on stderr too.
            let is_printed = |l: &&str| {
                l.split_once("> (")
                    .is_some_and(|(p, _)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            };
            printed_tuples(out.stderr.lines().filter(is_printed))
        };
        let counts: BTreeMap<u64, Vec<u64>> =
            printed.iter().map(|(k, (_, c))| (*k, c.clone())).collect();
        assert_eq!(counts, want, "--print {target}");
        let prefixes: std::collections::BTreeSet<&str> =
            printed.values().map(|(p, _)| *p).collect();
        assert_eq!(
            prefixes,
            ["1> ", "2> "].into(),
            "--print {target}: subtask prefixes"
        );
    }
}

#[test]
fn keyed_count_edge_sizes() {
    let sb = Sandbox::new();
    // No records: a clean, empty run.
    let out = run(&mut sb.floe(["run", "keyed-count", "--records", "0", "--keys", "3"])).ok();
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    // More subtasks than keys, and more keys than records.
    for (records, keys, p) in [("50", "2", "4"), ("5", "100", "2")] {
        let out = run(&mut sb.floe([
            "run",
            "keyed-count",
            "--records",
            records,
            "--keys",
            keys,
            "-p",
            p,
        ]))
        .ok();
        let expected = keyed_count_expectation(records.parse().unwrap(), keys.parse().unwrap());
        assert_running_counts(&out.stdout, &expected, "keyed-count edge size");
    }
}

#[test]
fn count_window_average_default_input_gives_flinks_result() {
    let sb = Sandbox::new();
    let out = run(&mut sb.floe(["run", "count-window-average"])).ok();
    assert_eq!(out.stdout, "1 4\n1 5\n");
    assert_job_started(&out, "CountWindowAverage");
    // The stand-alone binary agrees.
    let out = run(&mut sb.cmd(COUNT_WINDOW_AVERAGE)).ok();
    assert_eq!(out.stdout, "1 4\n1 5\n");
    assert_job_started(&out, "CountWindowAverage");
}

/// Expected averages per key: every second value of a key emits the integer
/// average of the pair; a trailing odd value emits nothing.
fn pair_averages(pairs: &[(u64, u64)]) -> BTreeMap<u64, Vec<u64>> {
    let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(k, v) in pairs {
        match pending.remove(&k) {
            Some(first) => out.entry(k).or_default().push((first + v) / 2),
            None => {
                pending.insert(k, v);
            }
        }
    }
    out
}

fn parse_averages(text: &str) -> BTreeMap<u64, Vec<u64>> {
    let mut m: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let (k, a) = line.split_once(' ').expect("`<key> <average>`");
        m.entry(k.parse().unwrap())
            .or_default()
            .push(a.parse().unwrap());
    }
    m
}

#[test]
fn count_window_average_input_file_several_keys() {
    let sb = Sandbox::new();
    let mut rng = Rng::new(0xA7E);
    let pairs: Vec<(u64, u64)> = (0..501)
        .map(|_| (rng.below(6) * 1000 + 3, rng.below(1_000_000)))
        .collect();
    let mut text = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        // Blank lines and extra spaces are allowed around pairs.
        if i % 97 == 0 {
            text.push('\n');
        }
        text.push_str(&format!("{k}  {v}\n"));
    }
    let input = sb.write("pairs.txt", &text);
    let expected = pair_averages(&pairs);
    assert!(expected.len() == 6 && expected.values().all(|v| v.len() > 10));

    let out = run(sb
        .floe(["run", "count-window-average", "-p", "2", "--input"])
        .arg(&input))
    .ok();
    assert_eq!(parse_averages(&out.stdout), expected, "stdout at -p 2");

    let output = sb.path("averages.txt");
    let out = run(sb
        .floe(["run", "count-window-average", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["-p", "2"]))
    .ok();
    assert!(out.stdout.is_empty());
    let written = read_committed(&output);
    assert_eq!(parse_averages(&written), expected, "--output at -p 2");
}

#[test]
fn floe_run_job_binary_by_path_passes_flags_through() {
    let sb = Sandbox::new();
    let expected = keyed_count_expectation(100, 3);

    let out = run(&mut sb.floe(["run", KEYED_COUNT, "--records", "100", "--keys", "3"])).ok();
    assert_running_counts(&out.stdout, &expected, "floe run <path>");
    assert_job_started(&out, "KeyedCount");

    // Floe's flags before the path reach the binary: -p 2 gives two
    // generator and two count+print tasks.
    let out = run(sb
        .floe([
            "run",
            "-p",
            "2",
            "-D",
            "floe.runtime.batch-size=3",
            KEYED_COUNT,
        ])
        .args(["--records", "100", "--keys", "3"])
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_running_counts(&out.stdout, &expected, "floe run -p 2 <path>");
    assert_eq!(deployed_tasks(&out), 4);

    // ... and so do flags after it.
    let out = run(sb
        .floe([
            "run",
            KEYED_COUNT,
            "--records",
            "100",
            "-p",
            "3",
            "--keys",
            "3",
        ])
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_running_counts(&out.stdout, &expected, "floe run <path> -p 3");
    assert_eq!(deployed_tasks(&out), 6);

    // The binary's failure is floe's failure.
    run(&mut sb.floe(["run", KEYED_COUNT, "--records", "100", "--keys", "0"]))
        .fails_with(&["--keys"]);
}

#[test]
fn standalone_keyed_count_binary() {
    let sb = Sandbox::new();
    let out = run(sb
        .cmd(KEYED_COUNT)
        .args(["--records", "100", "-p", "2", "--keys", "3"])
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_running_counts(
        &out.stdout,
        &keyed_count_expectation(100, 3),
        "keyed-count binary",
    );
    assert_job_started(&out, "KeyedCount");
    assert_eq!(deployed_tasks(&out), 4);
}

#[test]
fn every_job_announces_its_job_id() {
    let sb = Sandbox::new();
    let input = sb.write("words.txt", "a b a\n");
    let mut ids = Vec::new();
    let runs: Vec<(std::process::Command, &str)> = vec![
        (
            {
                let mut c = sb.floe(["run", "wordcount", "--input"]);
                c.arg(&input);
                c
            },
            "WordCount",
        ),
        (
            {
                let mut c = sb.cmd(WORDCOUNT);
                c.arg("--input").arg(&input);
                c
            },
            "WordCount",
        ),
        (
            sb.floe(["run", "keyed-count", "--records", "10", "--keys", "2"]),
            "KeyedCount",
        ),
        (
            {
                let mut c = sb.cmd(KEYED_COUNT);
                c.args(["--records", "10", "--keys", "2"]);
                c
            },
            "KeyedCount",
        ),
        (
            sb.floe(["run", "count-window-average"]),
            "CountWindowAverage",
        ),
        (sb.cmd(COUNT_WINDOW_AVERAGE), "CountWindowAverage"),
        (
            sb.floe(["bench", "keyed-count", "--records", "10", "--keys", "2"]),
            "KeyedCountBench",
        ),
    ];
    for (mut cmd, name) in runs {
        let out = run(&mut cmd).ok();
        ids.push(assert_job_started(&out, name));
    }
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "job IDs repeat: {ids:?}");
}

#[test]
fn config_file_is_honoured() {
    let sb = Sandbox::new();
    let (input, reference) = text_fixture(&sb, 0x5EED_0005, 800);
    let flat = sb.write("flat.yaml", "parallelism.default: 2\n");
    let nested = sb.write("nested.yaml", "parallelism:\n  default: 3\n");

    // File parallelism, given before the job or after its arguments.
    for (args, tasks) in [
        (
            vec!["run", "--config", flat.to_str().unwrap(), "wordcount"],
            4,
        ),
        (
            vec!["run", "wordcount", "--config", nested.to_str().unwrap()],
            6,
        ),
    ] {
        let out = run(sb
            .floe(&args)
            .arg("--input")
            .arg(&input)
            .env("RUST_LOG", DEPLOY_LOG))
        .ok();
        assert_running_counts(&out.stdout, &reference, &args.join(" "));
        assert_eq!(deployed_tasks(&out), tasks, "{}", args.join(" "));
    }

    // -p wins over the file.
    let out = run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&flat)
        .args(["-p", "1"])
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_eq!(deployed_tasks(&out), 2);

    // $FLOE_CONF_DIR/floe-conf.yaml, then ./conf/floe-conf.yaml.
    sb.write("confdir/floe-conf.yaml", "parallelism.default: 4\n");
    let out = run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .env("FLOE_CONF_DIR", sb.path("confdir"))
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_eq!(deployed_tasks(&out), 8, "FLOE_CONF_DIR");
    sb.write("conf/floe-conf.yaml", "parallelism.default: 3\n");
    let out = run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_eq!(deployed_tasks(&out), 6, "./conf/floe-conf.yaml");
    assert_running_counts(&out.stdout, &reference, "./conf/floe-conf.yaml");
}

#[test]
fn tiny_batches_and_channels_still_count_correctly() {
    let sb = Sandbox::new();
    let (input, reference) = text_fixture(&sb, 0x5EED_0006, 1500);
    let conf = sb.write(
        "floe-conf.yaml",
        "parallelism.default: 2\nfloe.runtime.channel-capacity: 1\n",
    );
    let out = run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&conf)
        .args(["-D", "floe.runtime.batch-size=1"])
        .env("RUST_LOG", DEPLOY_LOG))
    .ok();
    assert_eq!(deployed_tasks(&out), 4);
    assert_running_counts(&out.stdout, &reference, "batch-size 1, channel-capacity 1");

    // The same through the stand-alone binary, -Dkey=value form, -p 3.
    let out = run(sb
        .cmd(WORDCOUNT)
        .arg("-Dfloe.runtime.batch-size=1")
        .arg("--input")
        .arg(&input)
        .args(["-p", "3", "--config"])
        .arg(&conf))
    .ok();
    assert_running_counts(&out.stdout, &reference, "binary, batch-size 1");

    let out = run(&mut sb.floe([
        "run",
        "keyed-count",
        "--records",
        "3000",
        "--keys",
        "5",
        "-p",
        "2",
        "-D",
        "floe.runtime.batch-size=1",
        "-D",
        "floe.runtime.channel-capacity=1",
    ]))
    .ok();
    assert_running_counts(
        &out.stdout,
        &keyed_count_expectation(3000, 5),
        "keyed-count batch 1",
    );
}
