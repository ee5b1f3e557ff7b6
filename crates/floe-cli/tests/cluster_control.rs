//! The cluster control plane as real processes: `floe jobmanager` on
//! 127.0.0.1 and `floe taskmanager`s on 127.0.0.2-4, observed through the
//! JobManager's REST API and the processes' stderr, failures made with real
//! signals (SIGSTOP/SIGCONT, SIGKILL). Heartbeats are shortened (200 ms,
//! timeout 1.5 s) so failure detection takes seconds.

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;
use common::cluster::{
    HEARTBEATS, Role, get_json, registered_id, start_jobmanager, start_taskmanager, taskmanagers,
    wait_until,
};

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
