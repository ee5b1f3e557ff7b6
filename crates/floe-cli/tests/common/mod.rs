//! Helpers shared by the CLI integration tests: running the real binaries as
//! child processes (with a timeout and no leaked children), generating
//! inputs, and parsing the jobs' output.

#![allow(dead_code)]

pub mod cluster;
pub mod s3;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a single job process may run before the test kills it and fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub const FLOE: &str = env!("CARGO_BIN_EXE_floe");
pub const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
pub const KEYED_COUNT: &str = env!("CARGO_BIN_EXE_keyed-count");
pub const COUNT_WINDOW_AVERAGE: &str = env!("CARGO_BIN_EXE_count-window-average");
pub const FRAUD_DETECTION: &str = env!("CARGO_BIN_EXE_fraud-detection");
pub const SESSIONIZE: &str = env!("CARGO_BIN_EXE_sessionize");
pub const DELAYED_ECHO: &str = env!("CARGO_BIN_EXE_delayed-echo");
pub const TIMER_BURST: &str = env!("CARGO_BIN_EXE_timer-burst");
pub const NEXMARK: &str = env!("CARGO_BIN_EXE_nexmark");

/// A scratch directory; commands run with it as their working directory and
/// without the caller's `FLOE_CONF_DIR` / `RUST_LOG`, so no stray
/// configuration file or log filter changes what a test sees.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// Variables every command of the sandbox gets (a test server's
    /// credentials).
    env: std::sync::Mutex<Vec<(String, String)>>,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("create temp dir"),
            env: Default::default(),
        }
    }

    /// Gives every later command of the sandbox `vars`.
    #[allow(dead_code)]
    pub fn add_env<K: Into<String>>(&self, vars: impl IntoIterator<Item = (K, String)>) {
        self.env
            .lock()
            .unwrap()
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v)));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    /// A command for `program`, isolated from the caller's Floe environment.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir())
            .env_remove("FLOE_CONF_DIR")
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "0")
            .envs(self.env.lock().unwrap().iter().cloned());
        c
    }

    /// `floe` with `args`.
    pub fn floe<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.cmd(FLOE);
        c.args(args);
        c
    }
}

/// A finished process.
#[derive(Debug)]
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit code 0 and returns `self`.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "{} failed with {}\n--- stderr ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
            self.what,
            self.status,
            self.stderr,
            &self.stdout[..self.stdout.len().min(2000)]
        );
        self
    }

    /// Asserts a non-zero exit (not a signal, not a panic) whose stderr
    /// contains every one of `needles`; returns `self`.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Self {
        let code = self.status.code();
        assert!(
            matches!(code, Some(c) if c != 0),
            "{} should exit non-zero, got {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.what,
            self.status,
            self.stderr,
            self.stdout
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{}: error output should mention {n:?}\n--- stderr ---\n{}",
                self.what,
                self.stderr
            );
        }
        assert!(
            !self.stderr.contains("panicked"),
            "{}: an error, not a panic, expected\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Non-empty stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.is_empty()).collect()
    }
}

/// A process started by a test; killed and reaped if dropped unfinished.
pub struct Running {
    what: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// When each stdout line of a process started by [`start_timed`] arrived.
pub type LineTimes = Arc<Mutex<Vec<Instant>>>;

/// Like [`drain`], noting when each line arrives.
fn drain_timed(r: impl Read + Send + 'static, times: LineTimes) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            times.lock().unwrap().push(Instant::now());
        }
        buf
    })
}

/// Starts `cmd` with stdin closed and stdout/stderr captured.
pub fn start(cmd: &mut Command) -> Running {
    start_with(cmd, drain)
}

/// [`start`], also noting when each stdout line arrived (for rates).
pub fn start_timed(cmd: &mut Command) -> (Running, LineTimes) {
    let times = LineTimes::default();
    let noted = times.clone();
    (start_with(cmd, move |out| drain_timed(out, noted)), times)
}

fn start_with(
    cmd: &mut Command,
    drain_stdout: impl FnOnce(ChildStdout) -> JoinHandle<Vec<u8>>,
) -> Running {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = drain_stdout(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    Running {
        what,
        child: Some(child),
        stdout: Some(stdout),
        stderr: Some(stderr),
    }
}

/// Runs `cmd` to its end (at most [`TIMEOUT`]).
pub fn run(cmd: &mut Command) -> Output {
    start(cmd).finish()
}

impl Running {
    /// Whether the process has already exited.
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("not finished");
        child.try_wait().expect("try_wait").is_some()
    }

    /// Waits for the process to end by itself (at most [`TIMEOUT`]).
    pub fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("not finished");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let err = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "{} did not end within {TIMEOUT:?}; killed it\n--- stderr ---\n{}",
                    self.what,
                    String::from_utf8_lossy(&err.unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let take = |h: Option<JoinHandle<Vec<u8>>>| h.expect("reader").join().expect("reader");
        let stdout = take(self.stdout.take());
        let stderr = take(self.stderr.take());
        Output {
            what: self.what.clone(),
            status,
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// xorshift64*: a small fixed-seed PRNG, so inputs are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Words with mixed case, punctuation, digits, hyphens and non-ASCII text.
/// None contains a character that either `tr`'s `[:space:]` (C locale) or
/// Rust's `split_whitespace` treats as whitespace.
pub const VOCABULARY: &[&str] = &[
    "the",
    "The",
    "THE",
    "fox",
    "fox,",
    "fox.",
    "Fox!",
    "jumps",
    "over",
    "lazy",
    "dog",
    "dog's",
    "\"quoted\"",
    "(paren)",
    "a-b",
    "x_y",
    "42",
    "3.14",
    "-",
    "--input",
    "-p",
    "Straße",
    "straße",
    "naïve",
    "café",
    "Café",
    "日本語",
    "über",
    "😀",
    "ÆØÅ",
    "a",
    "I",
];

/// Whitespace between words: single and multiple spaces and tabs.
const SEPARATORS: &[&str] = &[" ", " ", " ", " ", "  ", "\t", " \t ", "   ", "\t\t"];

/// Generated text and its word counts, known by construction.
pub struct Text {
    pub text: String,
    pub counts: BTreeMap<String, u64>,
}

impl Text {
    pub fn total_words(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// `lines` lines of text over [`VOCABULARY`]: empty and blank lines, leading
/// and trailing whitespace, an occasional CRLF ending, and a last line
/// without a newline.
pub fn generate_text(seed: u64, lines: usize) -> Text {
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    let mut counts = BTreeMap::new();
    for i in 0..lines {
        let last = i + 1 == lines;
        match rng.below(20) {
            0 if !last => {}                     // empty line
            1 if !last => text.push_str(" \t "), // whitespace only
            _ => {
                if rng.below(5) == 0 {
                    text.push_str(rng.pick_str(SEPARATORS));
                }
                let n = 1 + rng.below(12);
                for j in 0..n {
                    if j > 0 {
                        text.push_str(rng.pick_str(SEPARATORS));
                    }
                    let w = rng.pick_str(VOCABULARY);
                    text.push_str(w);
                    *counts.entry(w.to_string()).or_insert(0) += 1;
                }
                if rng.below(5) == 0 {
                    text.push_str(rng.pick_str(SEPARATORS));
                }
            }
        }
        if !last {
            text.push_str(if rng.below(50) == 0 { "\r\n" } else { "\n" });
        }
    }
    Text { text, counts }
}

/// The reference word count of the brief: `tr -s '[:space:]' '\n' | sort |
/// uniq -c` over `paths` (each file is followed by a line break, so words
/// never join across files), byte-wise (C locale). The empty word that
/// leading whitespace produces is ignored.
pub fn shell_word_counts(paths: &[&Path]) -> BTreeMap<String, u64> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            r#"export LC_ALL=C
for f in "$@"; do tr -s '[:space:]' '\n' < "$f"; echo; done | sort | uniq -c"#,
        )
        .arg("sh")
        .args(paths)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the shell reference pipeline");
    assert!(out.status.success(), "reference pipeline failed");
    let text = String::from_utf8(out.stdout).expect("UTF-8 words");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let (n, word) = line
            .trim_start()
            .split_once(' ')
            .unwrap_or_else(|| panic!("unexpected uniq -c line {line:?}"));
        if word.is_empty() {
            continue;
        }
        let n: u64 = n.parse().expect("uniq count");
        assert!(
            counts.insert(word.to_string(), n).is_none(),
            "uniq repeated {word:?}"
        );
    }
    counts
}

/// Parses `<key> <count>` lines into each key's counts in output order.
pub fn parse_updates(lines: &str) -> BTreeMap<String, Vec<u64>> {
    let mut updates: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in lines.lines() {
        let (key, n) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a `<key> <count>` line: {line:?}"));
        assert!(!key.is_empty(), "empty key in {line:?}");
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        updates.entry(key.to_string()).or_default().push(n);
    }
    updates
}

/// Checks running-count output against the expected totals: the keys are
/// exactly the expected ones, there is one line per input record, each key's
/// final (largest) count is its total, and its counts are 1..=total, each
/// exactly once and in order (one update per record, the last line carries
/// the total).
#[track_caller]
pub fn assert_running_counts(output: &str, expected: &BTreeMap<String, u64>, what: &str) {
    let updates = parse_updates(output);
    let finals: BTreeMap<String, u64> = updates
        .iter()
        .map(|(k, v)| (k.clone(), *v.iter().max().expect("non-empty")))
        .collect();
    assert_eq!(&finals, expected, "{what}: final counts per key");
    let lines = output.lines().count() as u64;
    let total: u64 = expected.values().sum();
    assert_eq!(lines, total, "{what}: one output line per record");
    for (key, counts) in &updates {
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        let want: Vec<u64> = (1..=expected[key]).collect();
        assert_eq!(
            sorted, want,
            "{what}: counts of {key:?} should be 1..=total, each once"
        );
        assert_eq!(
            counts, &want,
            "{what}: updates of {key:?} should arrive in order"
        );
    }
}

/// Every running count of `keyed-count --records <records> --keys <keys>`
/// in `committed` exactly once, in any order: for each key `k`, the counts
/// `1..=` its share of the records (`records / keys`, one more for the
/// first `records % keys` keys), nothing missing or repeated.
#[track_caller]
pub fn assert_keyed_counts_once(committed: &str, records: u64, keys: u64, what: &str) {
    let mut runs: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in committed.lines() {
        let (k, n) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{what}: not a `<key> <count>` line: {line:?}"));
        runs.entry(k.parse().unwrap())
            .or_default()
            .push(n.parse().unwrap());
    }
    assert_eq!(runs.len() as u64, keys, "{what}: keys");
    for (k, mut counts) in runs {
        counts.sort_unstable();
        let want = records / keys + u64::from(k < records % keys);
        assert_eq!(
            counts,
            (1..=want).collect::<Vec<_>>(),
            "{what}: key {k} has duplicated or missing counts"
        );
    }
}

/// The job IDs announced as `Job <name> started with JobID <32 hex>` lines
/// (the equivalent of the regex `^Job <name> started with JobID [0-9a-f]{32}$`).
pub fn job_ids(stderr: &str, name: &str) -> Vec<String> {
    let prefix = format!("Job {name} started with JobID ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|id| !id.bytes().any(|b| b.is_ascii_uppercase()))
        .map(str::to_string)
        .collect()
}

/// Asserts exactly one well-formed `Job <name> started with JobID …` line;
/// returns the ID.
#[track_caller]
pub fn assert_job_started(out: &Output, name: &str) -> String {
    let ids = job_ids(&out.stderr, name);
    assert_eq!(
        ids.len(),
        1,
        "{}: expected one line `Job {name} started with JobID <32 hex>` on stderr\n{}",
        out.what,
        out.stderr
    );
    ids.into_iter().next().expect("one id")
}

/// Log filter that makes the job manager report how many tasks it deploys.
pub const DEPLOY_LOG: &str = "floe_runtime::job_manager=info";

/// The `tasks=N` of the job manager's "deploying job" log line (needs
/// `RUST_LOG` = [`DEPLOY_LOG`]).
#[track_caller]
pub fn deployed_tasks(out: &Output) -> u32 {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("deploying job"))
        .unwrap_or_else(|| panic!("{}: no `deploying job` log line\n{}", out.what, out.stderr));
    let n = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tasks="))
        .unwrap_or_else(|| panic!("no tasks= in {line:?}"));
    n.parse().expect("tasks=N")
}

/// The output a file sink committed in `dir`: its part files (names not
/// starting with `.`) read in name order. Panics when uncommitted files
/// are left behind (`.`-prefixed in-progress or pending files), since a
/// job that ended normally commits everything.
pub fn read_committed(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list output directory {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let hidden: Vec<&String> = names.iter().filter(|n| n.starts_with('.')).collect();
    assert!(
        hidden.is_empty(),
        "uncommitted files left in {}: {hidden:?}",
        dir.display()
    );
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect()
}

/// The committed files under `dir` and its bucket subdirectories, in
/// path order (relative path, contents); panics if an uncommitted (hidden)
/// file is left anywhere.
pub fn read_committed_tree(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
        {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.starts_with('.'),
                "uncommitted file left: {}",
                p.display()
            );
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                files.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// `floe run <args>` with checkpoints every 50 ms into `ckpt` (so a
/// killed run can be restored with `--fromCheckpoint`), no configuration
/// directory and no crash point from the environment.
pub fn checkpointed_floe(args: &[&str], ckpt: &Path) -> Command {
    let mut c = Command::new(FLOE);
    c.arg("run")
        .args(args)
        .args(["-D", "execution.checkpointing.interval=50ms"])
        .arg("-D")
        .arg(format!("state.checkpoints.dir=file://{}", ckpt.display()))
        .env_remove("FLOE_CONF_DIR")
        .env_remove("FLOE_KILL_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The one job directory under a checkpoint directory.
pub fn job_dir(ckpt: &Path) -> PathBuf {
    std::fs::read_dir(ckpt)
        .unwrap()
        .next()
        .expect("a job checkpoint directory")
        .unwrap()
        .path()
}

/// The stdout of a run that must have succeeded (its stderr otherwise).
pub fn assert_ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

impl Running {
    /// Kills the process with SIGKILL (a crash, not a shutdown) and
    /// returns what it printed.
    pub fn kill(mut self) -> Output {
        if let Some(child) = self.child.as_mut() {
            child.kill().expect("SIGKILL");
        }
        self.finish()
    }
}

/// Whether a checkpoint directory holds a completed checkpoint (a
/// `chk-<n>/_metadata` of any job).
pub fn completed_checkpoint(ckpt: &Path) -> bool {
    std::fs::read_dir(ckpt).into_iter().flatten().any(|job| {
        std::fs::read_dir(job.unwrap().path())
            .into_iter()
            .flatten()
            .any(|c| c.unwrap().path().join("_metadata").is_file())
    })
}

/// The id of the one job registered in `registry` (`FLOE_REGISTRY_DIR`).
pub fn registered_job(registry: &Path) -> Option<String> {
    std::fs::read_dir(registry).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_suffix(".json")
            .filter(|n| !n.starts_with('.'))
            .map(str::to_string)
    })
}

/// The savepoint path `floe stop`/`floe savepoint` printed.
pub fn savepoint_path(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path in\n{}\n{}", out.stdout, out.stderr))
        .to_string()
}

/// Waits until the run has completed a checkpoint into `ckpt` (and is
/// still running), then a little longer, so that a kill lands between
/// checkpoints with records processed since the last. `what` names the
/// run in failures.
pub fn wait_for_checkpoint(ckpt: &Path, process: &mut Running, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !completed_checkpoint(ckpt) {
        assert!(Instant::now() < deadline, "{what}: no checkpoint in 60 s");
        assert!(
            !process.has_exited(),
            "{what}: the run ended before the failure"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !process.has_exited(),
        "{what}: the run ended before the failure"
    );
}
