//! Child `floe` processes of the benchmarks that measure whole processes
//! (`cluster-keyed-count`, `recovery`): spawning one that dies with its
//! parent, keeping what it writes to stderr, stopping or killing it, and
//! talking to its REST endpoint.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// How long a child gets to start and print the line a benchmark waits for.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child gets to stop after SIGTERM before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Makes the kernel SIGKILL the child if this process dies without
/// unwinding (SIGKILL, abort), where no `Drop` runs. The kernel watches
/// the spawning thread: children are spawned from the thread that runs the
/// benchmark to its end.
pub(crate) fn die_with_this_process(cmd: &mut Command) {
    // SAFETY: between fork and exec the closure only calls prctl, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The first and the latest lines a child wrote to stderr, each first
/// line with the instant it was read: enough to find and time its start-up
/// lines and to show why it failed, without keeping a chatty process's
/// whole log.
#[derive(Clone, Default)]
pub(crate) struct StderrLog(Arc<Mutex<KeptLines>>);

#[derive(Default)]
struct KeptLines {
    head: Vec<(Instant, String)>,
    tail: VecDeque<String>,
}

impl StderrLog {
    const KEEP: usize = 200;

    pub(crate) fn push(&self, line: String) {
        let at = Instant::now();
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.head.len() < Self::KEEP {
            g.head.push((at, line));
        } else {
            if g.tail.len() == Self::KEEP {
                g.tail.pop_front();
            }
            g.tail.push_back(line);
        }
    }

    /// The first of the kept first lines that matches, with when it came.
    pub(crate) fn find(&self, matches: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.head.iter().find(|(_, l)| matches(l)).cloned()
    }

    /// The last lines, for an error message.
    pub(crate) fn tail(&self) -> String {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let head = g.head.iter().map(|(_, l)| l.as_str());
        let all: Vec<&str> = head.chain(g.tail.iter().map(String::as_str)).collect();
        all[all.len().saturating_sub(30)..].join("\n")
    }
}

/// A `floe` child process, SIGKILLed and reaped when dropped, so that an
/// error or a panic anywhere in the benchmark leaves nothing running. Its
/// stdout goes to `/dev/null` (where keyed-count's sink writes), its
/// stderr to a [`StderrLog`].
pub(crate) struct Role {
    what: String,
    child: Child,
    /// What it wrote to stderr.
    pub(crate) log: StderrLog,
}

impl Role {
    pub(crate) fn spawn(
        what: &str,
        exe: &std::path::Path,
        args: &[String],
    ) -> anyhow::Result<Role> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_this_process(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {what} ({})", exe.display()))?;
        let log = StderrLog::default();
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.push(line);
            }
        });
        Ok(Role {
            what: what.to_string(),
            child,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self.child.wait()?;
        // Let the reader thread take the last lines from the pipe.
        std::thread::sleep(Duration::from_millis(20));
        Ok(status)
    }

    /// An error if the process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            std::thread::sleep(Duration::from_millis(50));
            bail!("the {} exited ({status}):\n{}", self.what, self.log.tail());
        }
        Ok(())
    }

    /// The value after `prefix` on the first stderr line that has it.
    pub(crate) fn wait_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            if let Some((_, line)) = self.log.find(|l| l.starts_with(prefix)) {
                return Ok(line[prefix.len()..].trim().to_string());
            }
            self.check_alive()?;
            ensure!(
                started.elapsed() < STARTUP_TIMEOUT,
                "the {} printed no `{prefix}` line within {STARTUP_TIMEOUT:?}:\n{}",
                self.what,
                self.log.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL at once (a crash: no cleanup), and reap it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .with_context(|| format!("cannot kill the {}", self.what))?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: signalling our own child, which has not been reaped (so
        // its pid is not reused).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_GRACE {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "floe bench: the {} did not stop within {STOP_GRACE:?} of SIGTERM; killing it",
            self.what
        );
        Ok(())
        // Drop kills and reaps it.
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JobManager's REST endpoint.
pub(crate) struct Rest {
    agent: ureq::Agent,
    base: String,
}

impl Rest {
    pub(crate) fn new(base: String) -> Rest {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Rest { agent, base }
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.agent.get(&format!("{}{path}", self.base)).call();
        Self::answer("GET", path, resp)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_json(body);
        Self::answer("POST", path, resp)
    }

    fn answer(
        method: &str,
        path: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut resp = resp.with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string()?;
        ensure!(
            (200..300).contains(&status),
            "{method} {path}: status {status}: {body}"
        );
        serde_json::from_str(&body).with_context(|| format!("{method} {path}: not JSON: {body}"))
    }
}

impl std::fmt::Display for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}
