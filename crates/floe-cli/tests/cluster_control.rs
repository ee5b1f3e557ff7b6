//! The cluster control plane as real processes: `floe jobmanager` on
//! 127.0.0.1 and `floe taskmanager`s on 127.0.0.2-4, observed through the
//! JobManager's REST API and the processes' stderr, failures made with real
//! signals (SIGSTOP/SIGCONT, SIGKILL). Heartbeats are shortened (200 ms,
//! timeout 1.5 s) so failure detection takes seconds.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::Value;

const HEARTBEATS: [&str; 4] = [
    "-D",
    "heartbeat.interval=200 ms",
    "-D",
    "heartbeat.timeout=1500 ms",
];

/// A role process whose stderr is collected; killed (SIGKILL) and reaped
/// when dropped, so a failing test leaves nothing behind.
struct Role {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Role {
    fn start(sandbox: &Sandbox, args: &[&str]) -> Role {
        let mut cmd: Command = sandbox.floe(args);
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

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// The value after `prefix` on the first stderr line that has it,
    /// waiting for it.
    fn wait_line(&self, prefix: &str) -> String {
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

    fn count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
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

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_json(url: &str) -> Value {
    let body = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_body()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("JSON")
}

/// `GET /taskmanagers`: (id, path, slots, free slots) of each.
fn taskmanagers(rest: &str) -> Vec<(String, String, u64, u64)> {
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

fn start_jobmanager(sandbox: &Sandbox, rpc_address: &str) -> (Role, String, String) {
    let mut args = vec![
        "jobmanager",
        "--rpc-address",
        rpc_address,
        "-D",
        "rest.port=0",
    ];
    args.extend(HEARTBEATS);
    let jm = Role::start(sandbox, &args);
    let rpc = jm.wait_line("JobManager RPC: ");
    let rest = jm.wait_line("REST endpoint: ");
    assert!(rpc.starts_with("127.0.0.1:"), "{rpc}");
    assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
    (jm, rpc, rest)
}

fn start_taskmanager(sandbox: &Sandbox, jobmanager: &str, bind: &str, slots: &str) -> Role {
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
    Role::start(sandbox, &args)
}

/// The id a TaskManager printed on registering.
fn registered_id(tm: &Role, jobmanager: &str) -> String {
    let line = tm.wait_line("TaskManager ");
    line.strip_suffix(&format!(" registered with {jobmanager}"))
        .unwrap_or_else(|| panic!("unexpected line: TaskManager {line}"))
        .to_string()
}

#[test]
fn taskmanagers_register_and_frozen_or_killed_ones_are_declared_lost() {
    let sandbox = Sandbox::new();
    let (jm, rpc, rest) = start_jobmanager(&sandbox, "127.0.0.1:0");
    let tms: Vec<Role> = [("127.0.0.2", "1"), ("127.0.0.3", "2"), ("127.0.0.4", "3")]
        .iter()
        .map(|(host, slots)| start_taskmanager(&sandbox, &rpc, host, slots))
        .collect();
    let ids: Vec<String> = tms.iter().map(|tm| registered_id(tm, &rpc)).collect();
    wait_until(
        "three TaskManagers in /taskmanagers",
        Duration::from_secs(20),
        || taskmanagers(&rest).len() == 3,
    );
    let listed = taskmanagers(&rest);
    for (i, (host, slots)) in [("127.0.0.2", 1), ("127.0.0.3", 2), ("127.0.0.4", 3)]
        .iter()
        .enumerate()
    {
        let entry = listed
            .iter()
            .find(|t| t.0 == ids[i])
            .unwrap_or_else(|| panic!("{} not listed: {listed:?}", ids[i]));
        assert!(entry.1.starts_with(&format!("grpc://{host}:")), "{entry:?}");
        assert_eq!((entry.2, entry.3), (*slots, *slots), "{entry:?}");
    }
    let overview = get_json(&format!("{rest}/overview"));
    assert_eq!(overview["taskmanagers"], 3);
    assert_eq!(overview["slots-total"], 6);
    assert_eq!(overview["slots-available"], 6);
    assert_eq!(overview["flink-version"], env!("CARGO_PKG_VERSION"));

    // Frozen: declared lost after the heartbeat timeout, back after SIGCONT.
    let frozen = &tms[1];
    frozen.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    wait_until(
        "the frozen TaskManager to leave /taskmanagers",
        Duration::from_secs(15),
        || !taskmanagers(&rest).iter().any(|t| t.0 == ids[1]),
    );
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "declared lost after {took:?}, before the 1.5 s timeout"
    );
    assert!(
        jm.stderr()
            .contains(&format!("TaskManager {} lost: heartbeat timed out", ids[1])),
        "{}",
        jm.stderr()
    );
    frozen.signal(libc::SIGCONT);
    wait_until(
        "the thawed TaskManager to register again",
        Duration::from_secs(15),
        || taskmanagers(&rest).iter().any(|t| t.0 == ids[1]),
    );
    // The JobManager lists it as soon as it has answered; the TaskManager
    // prints on reading the answer.
    let again = format!("TaskManager {} registered with {rpc}", ids[1]);
    wait_until(
        "the second registration line",
        Duration::from_secs(10),
        || frozen.count(&again) >= 2,
    );

    // Killed: declared lost (its endpoint refuses connections).
    let killed = &tms[2];
    killed.signal(libc::SIGKILL);
    wait_until(
        "the killed TaskManager to leave /taskmanagers",
        Duration::from_secs(15),
        || !taskmanagers(&rest).iter().any(|t| t.0 == ids[2]),
    );
    assert!(
        jm.stderr()
            .contains(&format!("TaskManager {} lost: ", ids[2])),
        "{}",
        jm.stderr()
    );
    let left = taskmanagers(&rest);
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn taskmanagers_re_register_with_a_restarted_jobmanager() {
    let sandbox = Sandbox::new();
    let (jm, rpc, _) = start_jobmanager(&sandbox, "127.0.0.1:0");
    let tms: Vec<Role> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|host| start_taskmanager(&sandbox, &rpc, host, "2"))
        .collect();
    let ids: Vec<String> = tms.iter().map(|tm| registered_id(tm, &rpc)).collect();
    jm.signal(libc::SIGKILL);
    drop(jm);
    // The same address, a new process: a new session.
    let (_jm, rpc_again, rest) = start_jobmanager(&sandbox, &rpc);
    assert_eq!(rpc_again, rpc);
    wait_until(
        "both TaskManagers in the new JobManager",
        Duration::from_secs(20),
        || taskmanagers(&rest).len() == 2,
    );
    for (tm, id) in tms.iter().zip(&ids) {
        let again = format!("TaskManager {id} registered with {rpc}");
        wait_until(
            &format!("{id} to print its second registration"),
            Duration::from_secs(10),
            || tm.count(&again) >= 2,
        );
        assert!(tm.stderr().contains("JobManager lost"), "{}", tm.stderr());
    }
}

#[test]
fn a_taskmanager_without_a_jobmanager_exits_after_the_registration_timeout() {
    let sandbox = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut tm = Role::start(
        &sandbox,
        &[
            "taskmanager",
            "--jobmanager",
            &address,
            "--bind",
            "127.0.0.2",
            "-D",
            "taskmanager.registration.timeout=1 s",
        ],
    );
    let started = Instant::now();
    let status = tm.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(started.elapsed() >= Duration::from_millis(900));
    let err = tm.stderr();
    assert!(err.contains("error: TaskManager "), "{err}");
    assert!(
        err.contains(&format!(
            "could not register with the JobManager at {address} within 1000 ms"
        )),
        "{err}"
    );
}

#[test]
fn unknown_configuration_keys_are_refused() {
    let sandbox = Sandbox::new();
    for args in [
        vec!["jobmanager", "-D", "heartbeat.intervall=1 s"],
        vec![
            "taskmanager",
            "--jobmanager",
            "127.0.0.1:1",
            "-D",
            "heartbeat.intervall=1 s",
        ],
        vec![
            "cluster",
            "start",
            "--taskmanagers",
            "1",
            "-D",
            "heartbeat.intervall=1 s",
        ],
    ] {
        let out = sandbox.floe(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error: unknown configuration key(s): heartbeat.intervall"),
            "{args:?}: {err}"
        );
    }
    let out = sandbox
        .floe(["jobmanager", "-D", "heartbeat.timeout=soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat.timeout"));
}

fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

#[test]
fn cluster_start_and_stop_leave_no_process_behind() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("cluster");
    let floe = |args: &[&str]| {
        let mut c = sandbox.floe(args);
        c.env("FLOE_CLUSTER_DIR", &dir);
        c
    };
    let mut start = vec![
        "cluster",
        "start",
        "--taskmanagers",
        "2",
        "--slots",
        "2",
        "-D",
        "jobmanager.rpc.address=127.0.0.1",
        "-D",
        "jobmanager.rpc.port=0",
        "-D",
        "rest.port=0",
    ];
    start.extend(HEARTBEATS);
    let out = floe(&start).output().unwrap();
    let pids: Vec<i32> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // Whatever happens below, nothing outlives the test.
    struct Reaper(Vec<i32>);
    impl Drop for Reaper {
        fn drop(&mut self) {
            for &pid in &self.0 {
                // SAFETY: processes this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _reaper = Reaper(pids.clone());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pids.len(), 3, "{stdout}");
    assert!(pids.iter().all(|&p| is_alive(p)), "{pids:?}");
    assert!(stdout.contains("JobManager RPC: 127.0.0.1:"), "{stdout}");
    let rest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("REST endpoint: "))
        .expect("the REST endpoint")
        .to_string();
    assert_eq!(stdout.matches("(2 slots)").count(), 2, "{stdout}");
    assert_eq!(get_json(&format!("{rest}/overview"))["slots-total"], 4);

    // A second start refuses while the first runs.
    let again = floe(&["cluster", "start", "--taskmanagers", "1"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let out = floe(&["cluster", "stop"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("Stopped ").count(), 3, "{stdout}");
    for pid in &pids {
        assert!(!is_alive(*pid), "pid {pid} still running after stop");
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let out = floe(&["cluster", "stop"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("No cluster to stop"));
}
