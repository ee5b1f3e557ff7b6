//! The text file source and sink through the DataStream API.

mod common;

use std::fs;
use std::path::Path;

use common::{sorted, with_timeout};
use floe::prelude::*;
use floe::runtime::JobError;

/// Writes the test input directory; returns every line it holds.
fn write_input(dir: &Path) -> Vec<String> {
    fs::write(dir.join("a.txt"), "first\r\nsecond\r\n\r\nfourth\n").unwrap();
    fs::write(dir.join("b.txt"), "no trailing newline\nlast line").unwrap();
    fs::write(dir.join("c.txt"), "").unwrap();
    fs::write(dir.join("d.txt"), "  spaced  \n\tтабуляция ünïcödé\n").unwrap();
    let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    fs::write(dir.join("e.txt"), big).unwrap();
    // Subdirectories are not input files.
    fs::create_dir(dir.join("nested")).unwrap();
    fs::write(dir.join("nested").join("x.txt"), "not read\n").unwrap();
    let mut lines: Vec<String> = [
        "first",
        "second",
        "",
        "fourth",
        "no trailing newline",
        "last line",
        "  spaced  ",
        "\tтабуляция ünïcödé",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lines.extend((0..5000).map(|i| format!("line {i}")));
    lines
}

#[test]
fn reading_a_directory_yields_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let expected = sorted(write_input(dir.path()));
    for p in [1, 2, 3] {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.read_text_file(dir.path()).sink_to(sink, "collect");
        env.execute("read-dir").unwrap();
        assert_eq!(sorted(out.snapshot()), expected, "parallelism {p}");
    }
}

#[test]
fn reading_a_single_file_keeps_line_order_at_parallelism_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.txt");
    fs::write(&file, "3\r\n1\n2\n").unwrap();
    let env = StreamEnvironment::new();
    let (sink, out) = CollectSink::new();
    env.read_text_file(&file).sink_to(sink, "collect");
    env.execute("read-file").unwrap();
    assert_eq!(out.snapshot(), vec!["3", "1", "2"]);
}

/// Runs a job reading `path` and returns its failure text.
fn read_failure(path: std::path::PathBuf, p: u32) -> String {
    let err = with_timeout(20, move || {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, _) = CollectSink::<String>::new();
        env.read_text_file(&path).sink_to(sink, "collect");
        env.execute("read").map(|_| ())
    })
    .expect_err("the job must fail");
    assert!(matches!(err, JobError::Failed { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn a_missing_input_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.txt");
    let text = read_failure(missing.clone(), 2);
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("'Text File'") || text.contains("Source: Text File"),
        "{text}"
    );
}

#[test]
fn a_non_utf8_file_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("good.txt"), "fine\n").unwrap();
    let bad = dir.path().join("bad.txt");
    fs::write(&bad, b"ok line\nbad \xff\xfe bytes\n").unwrap();
    let text = read_failure(dir.path().to_path_buf(), 2);
    assert!(text.contains(&bad.display().to_string()), "{text}");
    assert!(text.contains("UTF-8"), "{text}");
}

#[test]
fn writing_at_parallelism_two_creates_part_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.from_collection((0..1000u64).collect())
        .map(|x: u64| format!("value {x}"))
        .write_as_text(&out_dir);
    env.execute("write").unwrap();
    let mut names: Vec<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["part-0", "part-1"]);
    let mut lines = Vec::new();
    for n in &names {
        let content = fs::read_to_string(out_dir.join(n)).unwrap();
        assert!(content.ends_with('\n'), "{n} ends with a newline");
        let part: Vec<String> = content.lines().map(str::to_string).collect();
        assert_eq!(part.len(), 500, "{n}: rebalanced evenly");
        lines.extend(part);
    }
    assert_eq!(
        sorted(lines),
        sorted((0..1000).map(|x| format!("value {x}")).collect())
    );
}

#[test]
fn writing_at_parallelism_one_creates_one_file_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub").join("result.txt");
    let env = StreamEnvironment::new();
    env.from_collection(vec!["a".to_string(), "b c".to_string(), String::new()])
        .write_as_text(&file);
    env.execute("write-one").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "a\nb c\n\n");

    // And back through the source.
    let env = StreamEnvironment::new();
    let (sink, out) = CollectSink::new();
    env.read_text_file(&file).sink_to(sink, "collect");
    env.execute("read-back").unwrap();
    assert_eq!(out.snapshot(), vec!["a", "b c", ""]);
}

#[test]
fn existing_output_is_not_overwritten_by_default() {
    let dir = tempfile::tempdir().unwrap();

    // Parallelism 1: an existing file.
    let file = dir.path().join("result.txt");
    fs::write(&file, "precious\n").unwrap();
    let f = file.clone();
    let err = with_timeout(20, move || {
        let env = StreamEnvironment::new();
        env.from_collection(vec![1u64, 2]).write_as_text(&f);
        env.execute("no-overwrite").map(|_| ())
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, JobError::Failed { .. }), "{err:?}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("already exists"), "{text}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");

    // Parallelism 2: an existing part file in the output directory.
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("part-1"), "old\n").unwrap();
    let d = out_dir.clone();
    let err = with_timeout(20, move || {
        let env = StreamEnvironment::new();
        env.set_parallelism(2);
        env.from_collection(vec![1u64, 2]).write_as_text(&d);
        env.execute("no-overwrite-2").map(|_| ())
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("part-1") && text.contains("already exists"),
        "{text}"
    );
    assert_eq!(fs::read_to_string(out_dir.join("part-1")).unwrap(), "old\n");

    // Overwriting when asked to.
    let env = StreamEnvironment::new();
    env.from_collection(vec![1u64, 2])
        .sink_to(TextFileSink::new(&file).overwrite(true), "overwrite");
    env.execute("overwrite").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "1\n2\n");
}

#[test]
fn custom_line_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.csv");
    let env = StreamEnvironment::new();
    env.from_collection(vec![(1u64, "x".to_string()), (2, "y".to_string())])
        .sink_to(
            TextFileSink::with_format(
                &file,
                LineFormat::new(|(n, s): &(u64, String), buf: &mut String| {
                    buf.push_str(&format!("{n},{s}"))
                }),
            ),
            "csv",
        );
    env.execute("csv").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "1,x\n2,y\n");
}

#[test]
fn empty_input_still_writes_every_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.from_collection(vec![7u64]).write_as_text(&out_dir);
    env.execute("one-record").unwrap();
    let parts: Vec<String> = ["part-0", "part-1"]
        .iter()
        .map(|p| fs::read_to_string(out_dir.join(p)).unwrap())
        .collect();
    assert_eq!(sorted(parts), vec!["".to_string(), "7\n".to_string()]);

    let file = dir.path().join("empty.txt");
    let env = StreamEnvironment::new();
    env.from_collection(Vec::<u64>::new()).write_as_text(&file);
    env.execute("empty").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "");
}

#[test]
fn a_job_failing_at_start_leaves_an_existing_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("result.txt");
    fs::write(&output, "previous result\n").unwrap();
    let missing = dir.path().join("missing-input");
    let o = output.clone();
    let err = with_timeout(20, move || {
        let env = StreamEnvironment::new();
        env.read_text_file(&missing)
            .sink_to(TextFileSink::new(&o).overwrite(true), "out");
        env.execute("fails-at-start").map(|_| ())
    })
    .expect_err("missing input");
    assert!(err.to_string().contains("missing-input"), "{err}");
    assert_eq!(fs::read_to_string(&output).unwrap(), "previous result\n");
}

/// In a directory, names starting with `.` or `_` are hidden (a file
/// sink's in-progress and pending files, `_SUCCESS` markers), as in
/// Flink's file sources; a broken link is skipped; a hidden file named
/// explicitly is read.
#[test]
fn hidden_files_and_broken_links_in_a_directory_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("part-0-0000000001-ab12cd34"), "a\nb\n").unwrap();
    fs::write(dir.path().join("part-1-0000000001-ab12cd34"), "c\n").unwrap();
    fs::write(dir.path().join(".part-0-ab12cd34-2.inprogress"), "x\n").unwrap();
    fs::write(
        dir.path().join(".part-1-0000000002-ab12cd34.pending"),
        "y\n",
    )
    .unwrap();
    fs::write(dir.path().join("_SUCCESS"), "z\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("link")).unwrap();
    for p in [1, 2] {
        let env = StreamEnvironment::new();
        env.set_parallelism(p);
        let (sink, out) = CollectSink::new();
        env.read_text_file(dir.path()).sink_to(sink, "collect");
        env.execute("read-visible").unwrap();
        assert_eq!(
            sorted(out.snapshot()),
            vec!["a", "b", "c"],
            "parallelism {p}"
        );
    }
    let env = StreamEnvironment::new();
    let (sink, out) = CollectSink::new();
    env.read_text_file(dir.path().join(".part-0-ab12cd34-2.inprogress"))
        .sink_to(sink, "collect");
    env.execute("read-named").unwrap();
    assert_eq!(out.snapshot(), vec!["x"]);
}
