//! Bad command lines, configuration and input: each must fail with a non-zero
//! exit and an error naming what is wrong, and must not destroy anything (an
//! existing output file keeps its contents, an output directory its files).

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PRECIOUS: &str = "precious output, keep me\n";

/// An existing output file that a failing run must leave alone.
fn precious(sb: &Sandbox) -> PathBuf {
    sb.write("precious.txt", PRECIOUS)
}

#[track_caller]
fn assert_untouched(path: &Path) {
    assert_eq!(
        std::fs::read_to_string(path).expect("output file still exists"),
        PRECIOUS,
        "{} was modified",
        path.display()
    );
}

/// A small valid input file.
fn words(sb: &Sandbox) -> PathBuf {
    sb.write("words.txt", "to be or not to be\n")
}

#[test]
fn missing_input_file_is_named_and_output_kept() {
    let sb = Sandbox::new();
    let out_file = precious(&sb);
    let missing = sb.path("no-such-input.txt");
    let missing_s = missing.to_str().unwrap();
    for p in ["1", "2"] {
        run(sb
            .floe([
                "run",
                "wordcount",
                "--input",
                missing_s,
                "-p",
                p,
                "--output",
            ])
            .arg(&out_file))
        .fails_with(&[missing_s]);
        assert_untouched(&out_file);
    }
    run(sb
        .cmd(WORDCOUNT)
        .args(["--input", missing_s, "--output"])
        .arg(&out_file))
    .fails_with(&[missing_s]);
    assert_untouched(&out_file);
    run(sb
        .floe([
            "run",
            "count-window-average",
            "--input",
            missing_s,
            "--output",
        ])
        .arg(&out_file))
    .fails_with(&[missing_s]);
    assert_untouched(&out_file);
}

#[test]
fn bad_input_contents_are_named() {
    let sb = Sandbox::new();
    let pairs = sb.write("pairs.txt", "1 3\n1 5\n\n2 x\n");
    run(sb
        .floe(["run", "count-window-average", "--input"])
        .arg(&pairs))
    .fails_with(&[&format!("{}:4", pairs.display()), "2 x"]);
    let pairs = sb.write("pairs3.txt", "1 3 4\n");
    run(sb
        .floe(["run", "count-window-average", "--input"])
        .arg(&pairs))
    .fails_with(&[&format!("{}:1", pairs.display())]);
    let latin1 = sb.write("latin1.txt", b"ok line\ncaf\xe9\n");
    run(sb.floe(["run", "wordcount", "--input"]).arg(&latin1))
        .fails_with(&[latin1.to_str().unwrap(), "UTF-8"]);
}

#[test]
fn unknown_example_or_job_path() {
    let sb = Sandbox::new();
    run(&mut sb.floe(["run", "no-such-job"])).fails_with(&[
        "no-such-job",
        "wordcount",
        "keyed-count",
        "count-window-average",
    ]);
    // A directory is not a job binary.
    let dir = sb.path("jobs");
    std::fs::create_dir(&dir).unwrap();
    run(sb.floe(["run"]).arg(&dir)).fails_with(&[dir.to_str().unwrap()]);
    // A file that cannot be executed.
    let not_exe = sb.write("job.txt", "not a program");
    run(sb.floe(["run"]).arg(&not_exe)).fails_with(&[not_exe.to_str().unwrap()]);
}

#[test]
fn unknown_job_flag() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out_file)
        .arg("--bogus-flag"))
    .fails_with(&["--bogus-flag"]);
    assert_untouched(&out_file);
    run(sb
        .cmd(WORDCOUNT)
        .arg("--bogus-flag")
        .arg("--input")
        .arg(&input))
    .fails_with(&["--bogus-flag"]);
    run(&mut sb.floe(["run", "--bogus-flag", "wordcount"])).fails_with(&["--bogus-flag"]);
}

#[test]
fn invalid_parallelism() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    let cases: [&[&str]; 6] = [
        &["-p", "0", "wordcount"],
        &["--parallelism", "0", "wordcount"],
        &["wordcount", "-p", "0"],
        &["wordcount", "--parallelism=0"],
        &["wordcount", "-p", "zero"],
        &["wordcount", "-p", "-1"],
    ];
    for case in cases {
        run(sb
            .floe(["run"])
            .args(case)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out_file))
        .fails_with(&["parallelism"]);
        assert_untouched(&out_file);
    }
    run(sb
        .cmd(KEYED_COUNT)
        .args(["--records", "5", "--keys", "1", "-p", "0"]))
    .fails_with(&["parallelism", "\"0\""]);
}

#[test]
fn flag_without_value() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    for flag in ["-p", "--parallelism", "-D", "--config"] {
        run(sb
            .floe(["run", "wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out_file)
            .arg(flag))
        .fails_with(&[flag]);
        assert_untouched(&out_file);
    }
    run(&mut sb.floe(["run", "-p"])).fails_with(&["parallelism"]);
    run(sb
        .cmd(KEYED_COUNT)
        .args(["--records", "5", "--keys", "1", "-p"]))
    .fails_with(&["-p"]);
}

#[test]
fn config_file_missing_or_invalid() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    let run_with = |config: &Path| {
        run(sb
            .floe(["run", "wordcount", "--input"])
            .arg(&input)
            .arg("--config")
            .arg(config)
            .arg("--output")
            .arg(&out_file))
    };

    let missing = sb.path("missing-conf.yaml");
    run_with(&missing).fails_with(&[missing.to_str().unwrap()]);
    assert_untouched(&out_file);

    let bad_value = sb.write("bad-value.yaml", "parallelism.default: zero\n");
    run_with(&bad_value).fails_with(&["parallelism.default", "zero"]);
    assert_untouched(&out_file);

    let nested_bad = sb.write("nested-bad.yaml", "floe:\n  runtime:\n    batch-size: 0\n");
    run_with(&nested_bad).fails_with(&["floe.runtime.batch-size"]);
    assert_untouched(&out_file);

    let not_yaml = sb.write("broken.yaml", "parallelism.default: [1\n");
    run_with(&not_yaml).fails_with(&[not_yaml.to_str().unwrap()]);
    assert_untouched(&out_file);

    // FLOE_CONF_DIR names a directory that must hold floe-conf.yaml.
    let empty_dir = sb.path("empty-conf-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    run(sb
        .floe(["run", "wordcount", "--input"])
        .arg(&input)
        .env("FLOE_CONF_DIR", &empty_dir))
    .fails_with(&["floe-conf.yaml"]);

    // A bad value given with -D names its key too.
    run(sb
        .floe([
            "run",
            "wordcount",
            "-D",
            "floe.runtime.batch-size=many",
            "--input",
        ])
        .arg(&input))
    .fails_with(&["floe.runtime.batch-size", "many"]);
}

#[test]
fn dynamic_property_without_equals() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    for args in [
        ["run", "-D", "parallelism.default"],
        ["run", "wordcount", "-Dparallelism.default"],
    ] {
        run(sb
            .floe(args)
            .args(if args[1] == "-D" {
                vec!["wordcount"]
            } else {
                vec![]
            })
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out_file))
        .fails_with(&["parallelism.default", "key=value"]);
        assert_untouched(&out_file);
    }
}

#[test]
fn wordcount_needs_exactly_one_source() {
    let sb = Sandbox::new();
    run(&mut sb.floe(["run", "wordcount"])).fails_with(&["--input"]);
    run(&mut sb.floe(["run", "wordcount", "-p", "2"])).fails_with(&["--input"]);
    let input = words(&sb);
    run(sb
        .floe(["run", "wordcount", "--socket", "127.0.0.1:9", "--input"])
        .arg(&input))
    .fails_with(&["--socket", "--input"]);
}

#[test]
fn keyed_count_bad_arguments() {
    let sb = Sandbox::new();
    let out_file = precious(&sb);
    for (args, named) in [
        (vec!["--records", "10", "--keys", "0"], "--keys"),
        (vec!["--records", "10"], "--keys"),
        (vec!["--keys", "3"], "--records"),
        (vec!["--records", "ten", "--keys", "3"], "--records"),
        (
            vec!["--records", "10", "--keys", "3", "--rate", "0"],
            "--rate",
        ),
        (
            vec!["--records", "10", "--keys", "3", "--rate", "NaN"],
            "--rate",
        ),
    ] {
        run(sb
            .floe(["run", "keyed-count"])
            .args(&args)
            .arg("--output")
            .arg(&out_file))
        .fails_with(&[named]);
        assert_untouched(&out_file);
    }
}

/// `--output` names a directory of part files: an existing file there is
/// refused with an error naming it, and kept as it was.
#[test]
fn file_as_output_directory_is_refused_and_kept() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let pairs = sb.write("pairs.txt", "1 2\n1 4\n");
    let out_file = precious(&sb);
    let out_s = out_file.to_str().unwrap().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "wordcount".into(),
            "--input".into(),
            input.to_str().unwrap().into(),
        ],
        vec![
            "keyed-count".into(),
            "--records".into(),
            "100".into(),
            "--keys".into(),
            "3".into(),
        ],
        vec![
            "count-window-average".into(),
            "--input".into(),
            pairs.to_str().unwrap().into(),
        ],
    ];
    for case in cases {
        for p in ["1", "2"] {
            run(sb
                .floe(["run"])
                .args(&case)
                .args(["--output", &out_s, "-p", p]))
            .fails_with(&[&out_s, "is a file"]);
            assert_untouched(&out_file);
        }
    }
}

/// Committed part files of an earlier run in the output directory are
/// never touched: a new run adds its own part files beside them.
#[test]
fn earlier_committed_output_is_kept() {
    let sb = Sandbox::new();
    let dir = sb.path("results");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("part-0-0000000001-00000000"), "old results\n").unwrap();
    std::fs::write(dir.join("sub/keep.txt"), "keep\n").unwrap();
    run(sb
        .floe([
            "run",
            "keyed-count",
            "--records",
            "100",
            "--keys",
            "3",
            "--output",
        ])
        .arg(&dir))
    .ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("part-0-0000000001-00000000")).unwrap(),
        "old results\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/keep.txt")).unwrap(),
        "keep\n"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 2,
        "no part files added"
    );
}

#[test]
fn bench_bad_arguments() {
    let sb = Sandbox::new();
    let bench = |args: &[&str]| run(sb.floe(["bench", "keyed-count"]).args(args));
    bench(&["--records", "10", "--keys", "0"]).fails_with(&["--keys"]);
    bench(&["--records", "10", "--keys", "2", "--parallelism", "0"]).fails_with(&["parallelism"]);
    bench(&[
        "--records",
        "10",
        "--keys",
        "2",
        "--backend",
        "rocks-in-a-box",
    ])
    .fails_with(&["--backend", "rocks-in-a-box"]);
    bench(&["--records", "10", "--keys", "2", "-D", "novalue"]).fails_with(&["novalue"]);
    bench(&[
        "--records",
        "10",
        "--keys",
        "2",
        "-D",
        "floe.runtime.batch-size=0",
    ])
    .fails_with(&["floe.runtime.batch-size"]);
}

/// A source that fails while the job starts (here: a refused connection)
/// names the address and leaves the output directory as it was.
#[test]
fn refused_socket_keeps_existing_output() {
    let sb = Sandbox::new();
    let out_dir = sb.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out_file = out_dir.join("part-0-0000000001-00000000");
    std::fs::write(&out_file, PRECIOUS).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    run(sb
        .floe(["run", "wordcount", "--socket", &addr, "--output"])
        .arg(&out_dir))
    .fails_with(&[&addr]);
    assert_untouched(&out_file);
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "files added"
    );
}

/// `file:relative` parses as `file:///relative`: before it was refused, a
/// job with this setting wrote its checkpoints under `/relative/<job id>` at
/// the file-system root without a word.
#[test]
fn relative_checkpoint_directory_is_refused_by_key() {
    let sb = Sandbox::new();
    let input = words(&sb);
    let out_file = precious(&sb);
    let name = format!("floe-relative-{}", std::process::id());
    for dir in [format!("file:{name}"), name.clone()] {
        run(sb
            .floe(["run", "wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out_file)
            .args(["-D", "execution.checkpointing.interval=1s", "-D"])
            .arg(format!("state.checkpoints.dir={dir}")))
        .fails_with(&["state.checkpoints.dir", &dir]);
        assert_untouched(&out_file);
        assert!(
            !Path::new("/").join(&name).exists(),
            "{dir} created a directory at the file-system root"
        );
    }
}
