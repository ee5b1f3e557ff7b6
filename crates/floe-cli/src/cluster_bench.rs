//! `floe bench cluster-keyed-count`: the keyed-count job on a local
//! cluster of TaskManager processes versus the same job embedded (issue 21).
//!
//! The command starts its own cluster from the running executable: one
//! JobManager on 127.0.0.1 and P TaskManagers with one slot each on
//! 127.0.0.2, 127.0.0.3, …, so subtask *i* of every chain runs in its own
//! process and every record keyed to another subtask crosses a TCP
//! connection. Then, for each of R pairs, it runs `keyed-count` once
//! embedded and once on the cluster, alternating which goes first so that
//! slow drift of the machine does not favour one side.
//!
//! **The same work on both sides.** A cluster can only run the binary's
//! example jobs, so both sides run `keyed-count --discard`: the counts are
//! dropped by a sink that does nothing, as the `floe bench keyed-count`
//! yardstick and Flink's harness (`DiscardingSink`) do. The summary also
//! reports one yardstick run (its own job, in-process) for reference.
//!
//! **Embedded as a child process.** The embedded run is `floe run -p P
//! keyed-count …` in a fresh process, not a job in this one: it is then the
//! very job function, sink and configuration the cluster runs, its stdout
//! can go to `/dev/null` without silencing this command's JSON, and, like
//! the TaskManagers, it does not share an allocator or page cache state with
//! the process that measures it.
//!
//! **What is measured.** Cluster: records/s from the job's REST
//! `start-time` and `end-time` (taken where the JobManager plans the job,
//! to its end), and the wall time from `POST /jars/keyed-count/run` to
//! seeing `FINISHED`. Embedded: records/s from the child's `Job … started
//! with JobID` line (printed at the same point of the same code as the
//! cluster's `start-time`) to its exit, and the wall time from spawning it to
//! its exit.
//!
//! **Network bytes per record.** Floe has no counter of its data
//! connections' bytes, and the TaskManagers' `rchar`/`wchar` in
//! `/proc/<pid>/io` do not see them: those count `read`/`write` calls
//! through the VFS, while `std::net::TcpStream` uses `recv`/`send`
//! (measured: 0.0004 bytes per record). So the figure is the kernel's own
//! per-socket count, `bytes_received` of `TCP_INFO`, read with `ss` for the
//! established connections with a TaskManager's data address at either end:
//! summed over both ends it is every payload byte of the data plane, both
//! directions, Floe's framing, credits and barriers included, TCP/IP
//! headers not. A TaskManager pair keeps its connection from one job to the
//! next, so the figure is the difference between before and after the run.
//! As a cross-check, `loopback_bytes_per_record` is an upper bound: the
//! growth of the loopback interface's received bytes (`/proc/net/dev`, per
//! network namespace: headers, heartbeats, this command's REST polls and
//! any other process's loopback traffic included) over the run, less the
//! rate seen during an idle second just before it.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use floe::state::StateBackendKind;
use serde::Serialize;
use serde_json::{Value, json};

use crate::child::{Rest, Role, STARTUP_TIMEOUT, die_with_this_process};

/// The benchmark's name in its JSON lines.
const BENCH: &str = "cluster-keyed-count";

/// How long the TaskManagers are watched idle before each cluster run, to
/// learn what they read without a job (heartbeats).
const IDLE_BASELINE: Duration = Duration::from_secs(1);

/// How often a running cluster job's state is asked for. Only the wall
/// time depends on it; records/s comes from the job's own times.
const POLL: Duration = Duration::from_millis(20);

/// The highest parallelism: TaskManagers bind 127.0.0.2 up to 127.0.0.254.
const MAX_PARALLELISM: u32 = 253;

/// Options of the cluster benchmark.
#[derive(Debug, Clone)]
pub struct ClusterKeyedCountBench {
    /// Records to generate.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism of every operator, and TaskManagers started.
    pub parallelism: u32,
    /// State backend.
    pub backend: StateBackendKind,
    /// Take a checkpoint every this many milliseconds.
    pub checkpoint_interval: Option<u64>,
    /// Where checkpoints go.
    pub checkpoint_dir: Option<String>,
    /// Embedded/cluster pairs to run.
    pub pairs: u32,
}

/// Where a run ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `floe run keyed-count` in a child process.
    Embedded,
    /// Submitted to the local cluster.
    Cluster,
}

/// The JSON line of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Always `cluster-keyed-count`.
    pub bench: &'static str,
    /// Embedded or cluster.
    pub mode: Mode,
    /// Records generated.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// The job's own span in seconds (see the module's documentation).
    pub seconds: f64,
    /// Submission (cluster) or spawn (embedded) to the end, in seconds.
    pub wall_secs: f64,
    /// Payload bytes on the TaskManagers' data connections per record
    /// (cluster runs; `null` embedded, or when `ss` is missing).
    pub net_bytes_per_record: Option<f64>,
    /// Upper bound: loopback bytes per record, less an idle baseline
    /// (cluster runs; `null` embedded, or when `/proc/net/dev` is
    /// unreadable).
    pub loopback_bytes_per_record: Option<f64>,
    /// Which pair, from 0.
    pub pair: u32,
    /// Whether this run went first in its pair.
    pub first: bool,
    /// The cluster job's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The embedded run's process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Process ids of everything the benchmark started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pids {
    /// The JobManager.
    pub jobmanager: u32,
    /// The TaskManagers.
    pub taskmanagers: Vec<u32>,
    /// The embedded runs and the yardstick run.
    pub runs: Vec<u32>,
}

/// The summary line after all pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always `cluster-keyed-count`.
    pub bench: &'static str,
    /// Always `summary`.
    pub mode: &'static str,
    /// Records generated per run.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// Pairs run.
    pub pairs: u32,
    /// Per pair, cluster records/s divided by embedded records/s.
    pub ratios: Vec<f64>,
    /// The median of `ratios`: the figure to quote.
    pub median_ratio: f64,
    /// The same from the wall times (embedded wall / cluster wall).
    pub median_wall_ratio: f64,
    /// Issue 21's target for `median_ratio`.
    pub target_ratio: f64,
    /// Median records/s of the embedded runs.
    pub embedded_records_per_sec: f64,
    /// Median records/s of the cluster runs.
    pub cluster_records_per_sec: f64,
    /// Median network bytes per record of the cluster runs.
    pub net_bytes_per_record: Option<f64>,
    /// Median loopback bytes per record of the cluster runs (upper bound).
    pub loopback_bytes_per_record: Option<f64>,
    /// How `net_bytes_per_record` was measured.
    pub net_bytes_measure: &'static str,
    /// What the job's sink does with its updates, on both sides.
    pub sink: &'static str,
    /// `floe bench keyed-count` (discarding sink, in-process span) with
    /// the same settings, run once: the yardstick's records/s.
    pub yardstick_records_per_sec: f64,
    /// Median cluster records/s divided by the yardstick's.
    pub cluster_vs_yardstick: f64,
    /// Everything started, all stopped by now.
    pub pids: Pids,
}

impl ClusterKeyedCountBench {
    /// Starts the cluster, runs the pairs and the yardstick, writing one
    /// JSON line per run and the summary to `out`, and stops every process
    /// it started, whatever happens.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<Summary> {
        ensure!(self.pairs >= 1, "--pairs must be at least 1");
        ensure!(
            (1..=MAX_PARALLELISM).contains(&self.parallelism),
            "-p must be between 1 and {MAX_PARALLELISM} (one TaskManager per 127.0.0.x address)"
        );
        let exe = std::env::current_exe().context("cannot find the floe executable")?;
        let mut cluster = LocalCluster::start(&exe, self.parallelism)?;
        let mut pids = Pids {
            jobmanager: cluster.jobmanager.pid(),
            taskmanagers: cluster.taskmanagers.iter().map(Role::pid).collect(),
            runs: Vec::new(),
        };
        eprintln!(
            "{BENCH}: JobManager pid {} at {}, TaskManager pids {:?}",
            pids.jobmanager, cluster.rest, pids.taskmanagers
        );
        let (mut embedded, mut clustered) = (Vec::new(), Vec::new());
        for pair in 0..self.pairs {
            let cluster_first = pair % 2 == 1;
            let mut reports = Vec::with_capacity(2);
            for mode in if cluster_first {
                [Mode::Cluster, Mode::Embedded]
            } else {
                [Mode::Embedded, Mode::Cluster]
            } {
                let first = reports.is_empty();
                let report = match mode {
                    Mode::Embedded => {
                        let r = self.embedded_run(&exe, pair, first)?;
                        pids.runs.extend(r.pid);
                        r
                    }
                    Mode::Cluster => self.cluster_run(&mut cluster, pair, first)?,
                };
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
                out.flush()?;
                reports.push(report);
            }
            for r in reports {
                match r.mode {
                    Mode::Embedded => embedded.push(r),
                    Mode::Cluster => clustered.push(r),
                }
            }
        }
        let (yardstick, yardstick_pid) = self.yardstick_run(&exe)?;
        pids.runs.push(yardstick_pid);
        cluster.stop()?;

        let ratios: Vec<f64> = embedded
            .iter()
            .zip(&clustered)
            .map(|(e, c)| c.records_per_sec / e.records_per_sec)
            .collect();
        let wall_ratios: Vec<f64> = embedded
            .iter()
            .zip(&clustered)
            .map(|(e, c)| e.wall_secs / c.wall_secs)
            .collect();
        let rate = |runs: &[RunReport]| median(runs.iter().map(|r| r.records_per_sec).collect());
        // A median only when every cluster run has the figure.
        let median_of = |figure: fn(&RunReport) -> Option<f64>| {
            clustered
                .iter()
                .map(figure)
                .collect::<Option<Vec<f64>>>()
                .map(median)
        };
        let cluster_rate = rate(&clustered);
        let summary = Summary {
            bench: BENCH,
            mode: "summary",
            records: self.records,
            keys: self.keys,
            parallelism: self.parallelism,
            backend: self.backend.to_string(),
            pairs: self.pairs,
            median_ratio: median(ratios.clone()),
            ratios,
            median_wall_ratio: median(wall_ratios),
            target_ratio: 0.5,
            embedded_records_per_sec: rate(&embedded),
            cluster_records_per_sec: cluster_rate,
            net_bytes_per_record: median_of(|r| r.net_bytes_per_record),
            loopback_bytes_per_record: median_of(|r| r.loopback_bytes_per_record),
            net_bytes_measure: "TCP payload bytes received on the TaskManagers' data \
                                connections (TCP_INFO bytes_received via ss), both directions",
            sink: "keyed-count --discard (counts dropped, as Flink's DiscardingSink)",
            yardstick_records_per_sec: yardstick,
            cluster_vs_yardstick: cluster_rate / yardstick,
            pids,
        };
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
        out.flush()?;
        Ok(summary)
    }

    /// Floe's flags for the job (`-p`, backend, checkpointing), as both
    /// `floe run` and the cluster's `programArgsList` take them, followed
    /// by the job's own arguments.
    fn job_argv(&self) -> Vec<String> {
        let mut argv = vec!["-p".to_string(), self.parallelism.to_string()];
        argv.extend(["-D".into(), format!("state.backend.type={}", self.backend)]);
        if let Some(ms) = self.checkpoint_interval {
            argv.extend([
                "-D".into(),
                format!("execution.checkpointing.interval={ms}ms"),
            ]);
        }
        if let Some(dir) = &self.checkpoint_dir {
            argv.extend(["-D".into(), format!("state.checkpoints.dir={dir}")]);
        }
        argv
    }

    /// The job's own arguments (counts dropped, as the yardstick and
    /// Flink's harness do).
    fn keyed_count_args(&self) -> Vec<String> {
        vec![
            "--records".into(),
            self.records.to_string(),
            "--keys".into(),
            self.keys.to_string(),
            "--discard".into(),
        ]
    }

    fn report(&self, mode: Mode, pair: u32, first: bool, seconds: f64, wall: f64) -> RunReport {
        // A run shorter than the clock's resolution still gets a finite
        // rate (JSON has no infinity).
        let seconds = seconds.max(1e-3);
        RunReport {
            bench: BENCH,
            mode,
            records: self.records,
            keys: self.keys,
            parallelism: self.parallelism,
            backend: self.backend.to_string(),
            records_per_sec: self.records as f64 / seconds,
            seconds,
            wall_secs: wall,
            net_bytes_per_record: None,
            loopback_bytes_per_record: None,
            pair,
            first,
            job_id: None,
            pid: None,
        }
    }

    /// `floe run -p P … keyed-count …` in a child with stdout on
    /// `/dev/null`.
    fn embedded_run(
        &self,
        exe: &std::path::Path,
        pair: u32,
        first: bool,
    ) -> anyhow::Result<RunReport> {
        let mut argv = vec!["run".to_string()];
        argv.extend(self.job_argv());
        argv.push("keyed-count".into());
        argv.extend(self.keyed_count_args());
        let spawned = Instant::now();
        let mut run = Role::spawn("embedded keyed-count", exe, &argv)?;
        let status = run.wait()?;
        let ended = Instant::now();
        ensure!(
            status.success(),
            "the embedded run `floe {}` failed ({status}):\n{}",
            argv.join(" "),
            run.log.tail()
        );
        let started = run
            .log
            .find(|l| l.starts_with("Job ") && l.contains(" started with JobID "));
        let started = match started {
            Some((at, _)) => at,
            None => {
                eprintln!(
                    "{BENCH}: the embedded run printed no `Job … started` line; timing it from its spawn"
                );
                spawned
            }
        };
        let mut report = self.report(
            Mode::Embedded,
            pair,
            first,
            ended.saturating_duration_since(started).as_secs_f64(),
            ended.duration_since(spawned).as_secs_f64(),
        );
        report.pid = Some(run.pid());
        Ok(report)
    }

    /// Submits the job to `cluster` and waits for it to finish.
    fn cluster_run(
        &self,
        cluster: &mut LocalCluster,
        pair: u32,
        first: bool,
    ) -> anyhow::Result<RunReport> {
        cluster.wait_idle()?;
        let idle_before = loopback_bytes();
        let idle_started = Instant::now();
        std::thread::sleep(IDLE_BASELINE);
        let idle_after = loopback_bytes();
        let idle_ended = Instant::now();
        let data_before = cluster.data_connection_bytes();

        let mut argv = self.job_argv();
        argv.extend(self.keyed_count_args());
        let submitted = Instant::now();
        let answer = cluster
            .rest
            .post("/jars/keyed-count/run", &json!({ "programArgsList": argv }))?;
        let job_id = answer["jobid"]
            .as_str()
            .ok_or_else(|| anyhow!("the JobManager answered without a jobid: {answer}"))?
            .to_string();
        // Generous, so that only a stuck job trips it: a minute more than a
        // debug build needs at a million records per second.
        let deadline = Duration::from_secs(120 + self.records / 1_000_000);
        let details = loop {
            cluster.check_alive()?;
            let details = cluster.rest.get(&format!("/jobs/{job_id}"))?;
            match details["state"].as_str() {
                Some("FINISHED") => break details,
                Some(state @ ("FAILED" | "CANCELED")) => {
                    let cause = cluster
                        .rest
                        .get(&format!("/jobs/{job_id}/exceptions"))
                        .ok()
                        .and_then(|e| e["root-exception"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    bail!("the cluster run's job {job_id} ended {state}: {cause}");
                }
                _ => {}
            }
            ensure!(
                submitted.elapsed() < deadline,
                "the cluster run's job {job_id} did not finish within {deadline:?}"
            );
            std::thread::sleep(POLL);
        };
        let wall = submitted.elapsed().as_secs_f64();
        let data_after = cluster.data_connection_bytes();
        let loopback_after = loopback_bytes();
        let since_idle = idle_ended.elapsed().as_secs_f64();

        let (start, end) = (
            details["start-time"].as_i64().unwrap_or(-1),
            details["end-time"].as_i64().unwrap_or(-1),
        );
        ensure!(
            start > 0 && end >= start,
            "job {job_id} finished without its start-time and end-time: {details}"
        );
        let mut report = self.report(Mode::Cluster, pair, first, (end - start) as f64 / 1e3, wall);
        report.job_id = Some(job_id);
        let per_record = |bytes: f64| bytes / self.records.max(1) as f64;
        report.net_bytes_per_record = match (data_before, data_after) {
            (Some(before), Some(after)) => {
                // A connection opened during the run started from zero.
                let bytes: u64 = after
                    .iter()
                    .map(|(conn, n)| n.saturating_sub(before.get(conn).copied().unwrap_or(0)))
                    .sum();
                Some(per_record(bytes as f64))
            }
            _ => None,
        };
        report.loopback_bytes_per_record = match (idle_before, idle_after, loopback_after) {
            (Some(i0), Some(i1), Some(l1)) => {
                let idle_secs = idle_ended.duration_since(idle_started).as_secs_f64();
                let idle_rate = i1.saturating_sub(i0) as f64 / idle_secs;
                let during = l1.saturating_sub(i1) as f64;
                Some(per_record((during - idle_rate * since_idle).max(0.0)))
            }
            _ => None,
        };
        Ok(report)
    }

    /// `floe bench keyed-count` with the same settings, in a child: the
    /// yardstick's records/s and its pid.
    fn yardstick_run(&self, exe: &std::path::Path) -> anyhow::Result<(f64, u32)> {
        let mut argv: Vec<String> = ["bench", "keyed-count", "-p"].map(String::from).to_vec();
        argv.push(self.parallelism.to_string());
        argv.extend(["--backend".into(), self.backend.to_string()]);
        if let Some(ms) = self.checkpoint_interval {
            argv.extend(["--checkpoint-interval".into(), ms.to_string()]);
        }
        if let Some(dir) = &self.checkpoint_dir {
            argv.extend(["--checkpoint-dir".into(), dir.clone()]);
        }
        // The yardstick's own job has no sink to choose.
        argv.extend(
            self.keyed_count_args()
                .into_iter()
                .filter(|a| a != "--discard"),
        );
        let mut cmd = Command::new(exe);
        die_with_this_process(&mut cmd);
        let child = cmd
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the yardstick run")?;
        let pid = child.id();
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "the yardstick run `floe {}` failed ({})",
            argv.join(" "),
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let report: Value = serde_json::from_str(line)
            .with_context(|| format!("the yardstick printed no JSON report: {line:?}"))?;
        let rate = report["records_per_sec"]
            .as_f64()
            .ok_or_else(|| anyhow!("the yardstick's report has no records_per_sec: {line}"))?;
        Ok((rate, pid))
    }
}

/// `ss -tinH` output: per socket, a line `Recv-Q Send-Q local peer` and an
/// indented line of `TCP_INFO` fields, where `bytes_received:` is missing
/// while it is 0.
fn parse_ss(text: &str) -> HashMap<(String, String), u64> {
    let mut sockets = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = (fields.len() >= 4).then(|| (fields[2].to_string(), fields[3].to_string()));
            if let Some(conn) = &current {
                sockets.insert(conn.clone(), 0);
            }
        } else if let Some(conn) = &current {
            let received = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            sockets.insert(conn.clone(), received);
        }
    }
    sockets
}

/// Bytes received by the loopback interface of this network namespace.
fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The median, 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One JobManager and P single-slot TaskManagers, children of this
/// process.
struct LocalCluster {
    // Declared before the JobManager: dropped (killed) first, as `floe
    // cluster stop` stops them.
    taskmanagers: Vec<Role>,
    jobmanager: Role,
    rest: Rest,
    slots: u64,
    /// Each TaskManager's data address, `host:port`.
    data_addresses: Vec<String>,
}

impl LocalCluster {
    fn start(exe: &std::path::Path, taskmanagers: u32) -> anyhow::Result<LocalCluster> {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut jobmanager = Role::spawn(
            "JobManager",
            exe,
            &args(&[
                "jobmanager",
                "--rpc-address",
                "127.0.0.1:0",
                "-D",
                "rest.port=0",
            ]),
        )?;
        let rpc = jobmanager.wait_line("JobManager RPC: ")?;
        let rest = Rest::new(jobmanager.wait_line("REST endpoint: ")?);
        let mut cluster = LocalCluster {
            taskmanagers: Vec::new(),
            jobmanager,
            rest,
            slots: u64::from(taskmanagers),
            data_addresses: Vec::new(),
        };
        for i in 0..taskmanagers {
            let bind = format!("127.0.0.{}", 2 + i);
            cluster.taskmanagers.push(Role::spawn(
                &format!("TaskManager on {bind}"),
                exe,
                &args(&[
                    "taskmanager",
                    "--jobmanager",
                    &rpc,
                    "--bind",
                    &bind,
                    "--slots",
                    "1",
                ]),
            )?);
        }
        cluster.wait_until("every TaskManager registered", |o| {
            o["taskmanagers"].as_u64() == Some(u64::from(taskmanagers))
        })?;
        // `dataAddress` is `host:port@id`.
        let listed = cluster.rest.get("/taskmanagers")?;
        cluster.data_addresses = listed["taskmanagers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tm| tm["dataAddress"].as_str())
            .map(|a| a.split('@').next().unwrap_or(a).to_string())
            .collect();
        ensure!(
            cluster.data_addresses.len() == taskmanagers as usize,
            "GET /taskmanagers did not list every TaskManager's data address: {listed}"
        );
        Ok(cluster)
    }

    /// Waits until `/overview` satisfies `done`, while every role lives.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let overview = self.rest.get("/overview")?;
            if done(&overview) {
                return Ok(());
            }
            ensure!(
                started.elapsed() < STARTUP_TIMEOUT,
                "not {what} within {STARTUP_TIMEOUT:?}: {overview}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every slot is free again (the last job released them).
    fn wait_idle(&mut self) -> anyhow::Result<()> {
        let slots = self.slots;
        self.wait_until("every slot free", |o| {
            o["slots-available"].as_u64() == Some(slots)
                && o["jobs-running"].as_u64().unwrap_or(0) == 0
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.jobmanager.check_alive()?;
        self.taskmanagers.iter_mut().try_for_each(Role::check_alive)
    }

    /// `bytes_received` of every established TCP socket with a
    /// TaskManager's data address at either end, by (local, peer)
    /// address; `None` if `ss` cannot tell.
    fn data_connection_bytes(&self) -> Option<HashMap<(String, String), u64>> {
        let ends: Vec<String> = self
            .data_addresses
            .iter()
            .map(|a| format!("src {a} or dst {a}"))
            .collect();
        let out = Command::new("ss")
            .args(["-tinH", "state", "established"])
            .arg(format!("( {} )", ends.join(" or ")))
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                Some(parse_ss(&String::from_utf8_lossy(&out.stdout)))
            }
            _ => {
                eprintln!("{BENCH}: `ss` failed: no network bytes per record");
                None
            }
        }
    }

    /// Stops the TaskManagers, then the JobManager.
    fn stop(self) -> anyhow::Result<()> {
        let LocalCluster {
            taskmanagers,
            jobmanager,
            ..
        } = self;
        for tm in taskmanagers {
            tm.stop()?;
        }
        jobmanager.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ss_output_gives_bytes_received_per_socket() {
        let text = "0      0      127.0.0.3:33421 127.0.0.2:60787\n\t bbr wscale:10,10 \
                    bytes_sent:134518 bytes_acked:100001 segs_out:6\n\
                    100000 0      127.0.0.2:60787 127.0.0.3:33421\n\t bbr mss:32768 \
                    bytes_received:100000 segs_out:2\n";
        let sockets = parse_ss(text);
        assert_eq!(sockets.len(), 2);
        let key = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(sockets[&key("127.0.0.3:33421", "127.0.0.2:60787")], 0);
        assert_eq!(sockets[&key("127.0.0.2:60787", "127.0.0.3:33421")], 100_000);
    }

    #[test]
    fn the_job_gets_the_same_flags_on_both_sides() {
        let bench = ClusterKeyedCountBench {
            records: 10,
            keys: 2,
            parallelism: 2,
            backend: StateBackendKind::HashMap,
            checkpoint_interval: Some(500),
            checkpoint_dir: Some("file:///tmp/c".into()),
            pairs: 1,
        };
        assert_eq!(
            bench.job_argv(),
            [
                "-p",
                "2",
                "-D",
                "state.backend.type=hashmap",
                "-D",
                "execution.checkpointing.interval=500ms",
                "-D",
                "state.checkpoints.dir=file:///tmp/c",
            ]
        );
    }
}
