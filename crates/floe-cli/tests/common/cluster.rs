//! Cluster processes for the cluster tests: `floe jobmanager` and
//! `floe taskmanager` as children whose stderr is collected, killed and
//! reaped when dropped; the JobManager's REST answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Sandbox;

/// Heartbeats shortened so that failure detection takes seconds.
pub const HEARTBEATS: [&str; 4] = [
    "-D",
    "heartbeat.interval=200 ms",
    "-D",
    "heartbeat.timeout=1500 ms",
];

/// A role process whose stderr is collected; killed (SIGKILL) and reaped
/// when dropped, so a failing test leaves nothing behind.
pub struct Role {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Role {
    pub fn start(sandbox: &Sandbox, args: &[&str]) -> Role {
        Role::spawn(sandbox.floe(args))
    }

    /// Starts `cmd` (a `floe` role, possibly under a wrapper such as `ip
    /// netns exec`) with its stderr collected.
    pub fn spawn(mut cmd: Command) -> Role {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start floe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Role { child, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// The value after `prefix` on the first stderr line that has it,
    /// waiting for it.
    pub fn wait_line(&self, prefix: &str) -> String {
        let mut found = None;
        wait_until(
            &format!("'{prefix}' on stderr"),
            Duration::from_secs(30),
            || {
                found = self
                    .stderr()
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()));
                found.is_some()
            },
        );
        found.unwrap()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "still running after {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn get_json(url: &str) -> Value {
    let body = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_body()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("JSON")
}

/// `GET /taskmanagers`: (id, path, slots, free slots) of each.
pub fn taskmanagers(rest: &str) -> Vec<(String, String, u64, u64)> {
    get_json(&format!("{rest}/taskmanagers"))["taskmanagers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["path"].as_str().unwrap().to_string(),
                t["slotsNumber"].as_u64().unwrap(),
                t["freeSlots"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn start_jobmanager(sandbox: &Sandbox, rpc_address: &str) -> (Role, String, String) {
    start_jobmanager_with(sandbox, rpc_address, &[])
}

/// A JobManager with `extra` arguments (`-D key=value` pairs).
pub fn start_jobmanager_with(
    sandbox: &Sandbox,
    rpc_address: &str,
    extra: &[&str],
) -> (Role, String, String) {
    let mut args = vec![
        "jobmanager",
        "--rpc-address",
        rpc_address,
        "-D",
        "rest.port=0",
    ];
    args.extend(HEARTBEATS);
    args.extend(extra);
    let jm = Role::start(sandbox, &args);
    let rpc = jm.wait_line("JobManager RPC: ");
    let rest = jm.wait_line("REST endpoint: ");
    assert!(rpc.starts_with("127.0.0.1:"), "{rpc}");
    assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
    (jm, rpc, rest)
}

pub fn start_taskmanager(sandbox: &Sandbox, jobmanager: &str, bind: &str, slots: &str) -> Role {
    start_taskmanager_with(sandbox, jobmanager, bind, slots, &[])
}

/// [`start_taskmanager`] with `extra` arguments (`-D key=value` pairs).
pub fn start_taskmanager_with(
    sandbox: &Sandbox,
    jobmanager: &str,
    bind: &str,
    slots: &str,
    extra: &[&str],
) -> Role {
    let mut args = vec![
        "taskmanager",
        "--jobmanager",
        jobmanager,
        "--bind",
        bind,
        "--slots",
        slots,
    ];
    args.extend(HEARTBEATS);
    args.extend(extra);
    Role::start(sandbox, &args)
}

/// The id a TaskManager printed on registering.
pub fn registered_id(tm: &Role, jobmanager: &str) -> String {
    let line = tm.wait_line("TaskManager ");
    line.strip_suffix(&format!(" registered with {jobmanager}"))
        .unwrap_or_else(|| panic!("unexpected line: TaskManager {line}"))
        .to_string()
}
