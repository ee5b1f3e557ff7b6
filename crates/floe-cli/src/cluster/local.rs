//! `floe cluster start` and `floe cluster stop`: a local JobManager and N
//! TaskManagers as detached processes (Flink's `start-cluster.sh` and
//! `stop-cluster.sh`). Each process logs to `<dir>/<role>.log` and is
//! recorded in `<dir>/<role>.pid`; `<dir>` is `--cluster-dir`, else
//! `$FLOE_CLUSTER_DIR`, else `./.floe-cluster`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long `start` waits for the JobManager's endpoints and for every
/// TaskManager to register.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable naming the cluster directory.
pub const CLUSTER_DIR_ENV: &str = "FLOE_CLUSTER_DIR";

/// The cluster directory: the flag, else `$FLOE_CLUSTER_DIR`, else
/// `./.floe-cluster`.
pub fn cluster_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CLUSTER_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".floe-cluster"))
}

/// What `floe cluster start` starts.
pub struct StartOptions {
    /// Where pid files and logs go.
    pub dir: PathBuf,
    /// TaskManagers to start.
    pub taskmanagers: u32,
    /// Slots per TaskManager (default: the configuration's).
    pub slots: Option<u32>,
    /// `--config`, passed to every process.
    pub config: Option<String>,
    /// `-D` flags, passed to every process.
    pub dynamic: Vec<String>,
}

/// Starts the cluster and waits until every TaskManager is registered;
/// on any failure stops what it started.
pub fn start(options: StartOptions) -> anyhow::Result<()> {
    // Fail early, in this process, on a bad configuration.
    crate::cluster::settings::load(options.config.as_deref(), &options.dynamic)?;
    let dir = &options.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the cluster directory {}", dir.display()))?;
    let running = pid_files(dir)?
        .into_iter()
        .filter_map(|(_, f)| read_pid(&f).filter(|&p| is_running(p)))
        .collect::<Vec<_>>();
    if !running.is_empty() {
        bail!(
            "a cluster is already running from {} (pids {running:?}); run `floe cluster stop` first",
            dir.display()
        );
    }
    let started = start_processes(&options);
    if started.is_err() {
        let _ = stop(dir, Duration::from_secs(5), false);
    }
    started
}

fn start_processes(options: &StartOptions) -> anyhow::Result<()> {
    let dir = &options.dir;
    let mut common: Vec<String> = Vec::new();
    if let Some(c) = &options.config {
        common.extend(["--config".into(), absolute(c)]);
    }
    for d in &options.dynamic {
        common.extend(["-D".into(), d.clone()]);
    }
    let mut jm_args = vec!["jobmanager".to_string()];
    jm_args.extend(common.iter().cloned());
    let mut jobmanager = spawn(dir, "jobmanager", &jm_args)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let (rpc, rest) = loop {
        let log = std::fs::read_to_string(dir.join("jobmanager.log")).unwrap_or_default();
        let rpc = line_value(&log, "JobManager RPC: ");
        let rest = line_value(&log, "REST endpoint: ");
        if let (Some(rpc), Some(rest)) = (rpc, rest) {
            break (rpc, rest);
        }
        exited(&mut jobmanager, dir, "jobmanager")?;
        if Instant::now() > deadline {
            bail!(
                "the JobManager did not start within {START_TIMEOUT:?}; see {}",
                dir.join("jobmanager.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("JobManager RPC: {rpc}");
    println!("REST endpoint: {rest}");
    let mut taskmanagers = Vec::new();
    for i in 1..=options.taskmanagers {
        let mut args = vec![
            "taskmanager".to_string(),
            "--jobmanager".into(),
            rpc.clone(),
        ];
        if let Some(s) = options.slots {
            args.extend(["--slots".into(), s.to_string()]);
        }
        args.extend(common.iter().cloned());
        let name = format!("taskmanager-{i}");
        taskmanagers.push((spawn(dir, &name, &args)?, name));
    }
    let overview = format!("{rest}/taskmanagers");
    loop {
        let list = ureq::get(&overview)
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
        let registered = list
            .as_ref()
            .and_then(|l| l["taskmanagers"].as_array().cloned())
            .unwrap_or_default();
        if registered.len() >= options.taskmanagers as usize {
            for tm in registered {
                println!(
                    "TaskManager {} at {} ({} slots)",
                    tm["id"].as_str().unwrap_or("?"),
                    tm["path"].as_str().unwrap_or("?"),
                    tm["slotsNumber"]
                );
            }
            println!(
                "Cluster started: 1 JobManager and {} TaskManager(s); pid files and logs in {}",
                options.taskmanagers,
                dir.display()
            );
            return Ok(());
        }
        exited(&mut jobmanager, dir, "jobmanager")?;
        for (child, name) in &mut taskmanagers {
            exited(child, dir, name)?;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} TaskManagers registered within {START_TIMEOUT:?}; see the logs in {}",
                registered.len(),
                options.taskmanagers,
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `floe <args>` detached (its own process group, so a Ctrl-C in
/// this terminal does not reach it), logging to `<dir>/<name>.log`, and
/// writes `<dir>/<name>.pid`.
fn spawn(dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the floe binary")?;
    let log_path = dir.join(format!("{name}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the {name} process"))?;
    std::fs::write(dir.join(format!("{name}.pid")), format!("{}\n", child.id()))?;
    Ok(child)
}

/// An error when `child` has exited, with the end of its log.
fn exited(child: &mut Child, dir: &Path, name: &str) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("the {name} process exited ({status}):\n{}", tail.join("\n"));
    }
    Ok(())
}

/// The rest of the last line starting with `prefix`.
fn line_value(log: &str, prefix: &str) -> Option<String> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_string())
}

fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}

/// The pid files in `dir`: TaskManagers first, the JobManager last.
fn pid_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pid")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.push((stem.to_string(), path));
        }
    }
    files.sort_by_key(|(name, _)| (name == "jobmanager", name.clone()));
    Ok(files)
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) `floe` cluster role: the pid of a
/// role that ended may have been reused by an unrelated process, which
/// must not be signalled.
fn is_running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == b"jobmanager" || arg == b"taskmanager")
}

/// Stops every process recorded in `dir`: SIGTERM, then SIGKILL to those
/// still running after `grace`; removes the pid files.
pub fn stop(dir: &Path, grace: Duration, verbose: bool) -> anyhow::Result<()> {
    let files = pid_files(dir)?;
    if files.is_empty() {
        if verbose {
            println!("No cluster to stop in {}", dir.display());
        }
        return Ok(());
    }
    let mut live = Vec::new();
    for (name, file) in &files {
        match read_pid(file) {
            Some(pid) if is_running(pid) => {
                // SAFETY: sending a signal to a process we started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                live.push((name.clone(), pid));
            }
            _ => {
                if verbose {
                    println!("{name} was not running");
                }
            }
        }
    }
    let deadline = Instant::now() + grace;
    while live.iter().any(|&(_, p)| is_running(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid) in &live {
        if is_running(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            if verbose {
                println!("Killed {name} (pid {pid}): still running after {grace:?}");
            }
        } else if verbose {
            println!("Stopped {name} (pid {pid})");
        }
    }
    // A killed process takes a moment to disappear.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.iter().any(|&(_, p)| is_running(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, file) in &files {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}
