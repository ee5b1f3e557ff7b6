//! `floe bench recovery`: how long a keyed-count job with large state
//! takes to come back after its process is SIGKILLed (issue 24).
//!
//! **What runs.** `floe run keyed-count --discard` in a child process
//! (key = i mod K, a `ValueState<u64>` count per key, counts dropped), with
//! the backend, checkpoint interval and directory the flags give. The
//! child's stderr tells this command its JobID and REST address; the rest
//! comes from its REST API.
//!
//! **When it is killed.** The job generates N = K·(1 + 1000·P) records
//! (more than a benchmark's time lets it reach), so each of the generator's
//! P splits (subtask j reads indices from N·j/P on) starts at key j·K/P:
//! once every generator subtask has emitted K/P records, the keys seen
//! cover all K, with K records instead of the P·K that splits all starting
//! at key 0 would need. Once that is so and a
//! checkpoint triggered after that moment has completed, the latest
//! checkpoint holds the whole state, and the child gets SIGKILL at once,
//! with no chance to clean up, as a crashed machine would.
//!
//! **What recovery time is.** A new child is started with
//! `--fromCheckpoint <the job's checkpoint directory>` (its latest completed
//! checkpoint, as an operator restarting a crashed job would give), and the
//! time is taken from spawning it to the first record the keyed operator
//! emits after restoring: its `numRecordsOut`, summed over its subtasks
//! through `GET /jobs/:id/vertices/:vid/subtasks/metrics`, polled every
//! [`FAST_POLL`]. Process start, reading the checkpoint's metadata,
//! restoring every key group's state (downloading or linking RocksDB's
//! files, or reading a heap snapshot) and rewinding the source are all
//! inside it. The REST endpoint's start is reported on its own.
//!
//! **Before the kill** the command also reports what the first run
//! measured: records/s (the keyed operator's `numRecordsOut` over the time
//! between the first poll that saw records and the kill), every completed
//! checkpoint's duration, full size and incremental (uploaded) size, and
//! the child's peak RSS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use floe::runtime::checkpoint::{Clock, SystemClock};
use serde::Serialize;

use crate::child::{Rest, Role, STARTUP_TIMEOUT};

/// The benchmark's name in its JSON line.
const BENCH: &str = "recovery";

/// How often the first run's progress and checkpoints are asked for.
const POLL: Duration = Duration::from_millis(200);

/// How often the restored run's output count is asked for: the recovery
/// time's resolution.
const FAST_POLL: Duration = Duration::from_millis(2);

/// The keyed operator's uid in the keyed-count job (its REST vertex id).
const KEYED_VERTEX: &str = "count-per-key";

/// The source's uid in the keyed-count job.
const GENERATOR_VERTEX: &str = "generator";

/// Options of the recovery benchmark.
#[derive(Debug, Clone)]
pub struct RecoveryBench {
    /// Distinct keys: the state the checkpoint holds.
    pub keys: u64,
    /// Parallelism of every operator.
    pub parallelism: u32,
    /// `state.backend.type`.
    pub backend: String,
    /// RocksDB incremental checkpoints.
    pub incremental: bool,
    /// Checkpoint interval, in ms.
    pub checkpoint_interval_ms: u64,
    /// Where checkpoints go (`file:///…`, `s3://…`).
    pub checkpoint_dir: String,
    /// Further configuration (`-D key=value`), passed to both runs.
    pub dynamic: Vec<String>,
    /// Give up when the first run has not reached the kill point in this long.
    pub timeout: Duration,
}

/// One completed checkpoint of the first run, as its REST history showed it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSeen {
    /// Its id.
    pub id: u64,
    /// Trigger to completion, in ms.
    pub duration_ms: u64,
    /// Bytes of every file it references (Flink's "Full Checkpoint Data Size").
    pub full_bytes: u64,
    /// Bytes it wrote itself (Flink's "Checkpointed Data Size").
    pub checkpointed_bytes: u64,
}

/// The JSON line the benchmark prints.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// Benchmark name.
    pub benchmark: &'static str,
    /// Distinct keys.
    pub keys: u64,
    /// Parallelism.
    pub parallelism: u32,
    /// State backend.
    pub backend: String,
    /// Incremental checkpoints.
    pub incremental: bool,
    /// Checkpoint interval, in ms.
    pub checkpoint_interval_ms: u64,
    /// Records the keyed operator had emitted when the first run was killed.
    pub records_before_kill: u64,
    /// The first run's records/s (keyed operator's output over the time
    /// between the first poll that saw records and the kill).
    pub records_per_sec: f64,
    /// The first run's peak RSS, read just before the kill.
    pub peak_rss_bytes: u64,
    /// Completed checkpoints of the first run, oldest first.
    pub checkpoints: Vec<CheckpointSeen>,
    /// The first checkpoint triggered after every key had state.
    pub covering_checkpoint_id: u64,
    /// Where it was written.
    pub covering_checkpoint_path: String,
    /// The checkpoint the second run restored (the latest completed: the
    /// covering one or a later one that completed before the kill).
    pub restored_checkpoint_id: u64,
    /// Its full size.
    pub restored_full_bytes: u64,
    /// Spawning the second run to its REST endpoint's `REST endpoint:` line.
    pub rest_up_seconds: f64,
    /// Spawning the second run to the first record its keyed operator
    /// emitted: the recovery time.
    pub recovery_seconds: f64,
    /// The second run's peak RSS when that record came.
    pub restore_peak_rss_bytes: u64,
}

/// A job child and what its stderr and REST API told about it.
struct Job {
    role: Role,
    rest: Rest,
    job_id: String,
    /// Spawn to the `REST endpoint:` line.
    rest_up: Duration,
}

impl RecoveryBench {
    /// Runs the job, kills it, restores it; one report.
    pub fn run(&self) -> anyhow::Result<RecoveryReport> {
        ensure!(self.keys >= 1, "--keys must be at least 1");
        ensure!(
            self.checkpoint_interval_ms > 0,
            "--checkpoint-interval must be above 0"
        );
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let first = self.start(&exe, None)?;
        eprintln!(
            "{BENCH}: first run pid {}, job {}, REST {}",
            first.role.pid(),
            first.job_id,
            first.rest
        );
        let killed = self.run_until_checkpointed(first)?;
        eprintln!(
            "{BENCH}: killed after {} records; checkpoint {} ({} bytes) covers every key",
            killed.records, killed.covering.id, killed.covering.full_bytes
        );
        let job_dir = parent_dir(&killed.covering_path)?;
        let spawned = Instant::now();
        let mut second = self.start(&exe, Some(&job_dir))?;
        let (recovery, rss) = first_output(&mut second, spawned, self.timeout)?;
        let restored = second
            .rest
            .get(&format!("/jobs/{}/checkpoints", second.job_id))?;
        let restored_id = restored["latest"]["restored"]["id"]
            .as_u64()
            .ok_or_else(|| {
                anyhow!("the restored run reports no restored checkpoint: {restored}")
            })?;
        let restored_full_bytes = killed
            .checkpoints
            .iter()
            .find(|c| c.id == restored_id)
            .map_or(0, |c| c.full_bytes);
        second.role.stop()?;
        Ok(RecoveryReport {
            benchmark: BENCH,
            keys: self.keys,
            parallelism: self.parallelism,
            backend: self.backend.clone(),
            incremental: self.incremental,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            records_before_kill: killed.records,
            records_per_sec: killed.records_per_sec,
            peak_rss_bytes: killed.peak_rss_bytes,
            checkpoints: killed.checkpoints,
            covering_checkpoint_id: killed.covering.id,
            covering_checkpoint_path: killed.covering_path.clone(),
            restored_checkpoint_id: restored_id,
            restored_full_bytes,
            rest_up_seconds: second.rest_up.as_secs_f64(),
            recovery_seconds: recovery.as_secs_f64(),
            restore_peak_rss_bytes: rss,
        })
    }

    /// `floe run … keyed-count …`, restoring from `from` if given; returns
    /// once its REST endpoint answers and the keyed vertex is known.
    fn start(&self, exe: &Path, from: Option<&str>) -> anyhow::Result<Job> {
        let spawned = Instant::now();
        let mut role = Role::spawn("job", exe, &self.argv(from))?;
        let base = role.wait_line("REST endpoint: ")?;
        let rest_up = spawned.elapsed();
        let job_line = role
            .log
            .find(|l| l.starts_with("Job ") && l.contains(" started with JobID "))
            .ok_or_else(|| anyhow!("the job printed its REST endpoint but no JobID line"))?
            .1;
        let job_id = job_line.rsplit(' ').next().unwrap_or_default().to_string();
        let rest = Rest::new(base);
        let job = rest.get(&format!("/jobs/{job_id}"))?;
        for uid in [KEYED_VERTEX, GENERATOR_VERTEX] {
            let mut vertices = job["vertices"].as_array().into_iter().flatten();
            if !vertices.any(|v| v["id"] == uid) {
                bail!("job {job_id} has no vertex {uid:?}: {job}");
            }
        }
        Ok(Job {
            role,
            rest,
            job_id,
            rest_up,
        })
    }

    /// N = K·(1 + 1000·P): split j starts at key j·K/P (module docs), and
    /// the job does not end before the kill.
    fn records(&self) -> u64 {
        let m = 1000 * u64::from(self.parallelism);
        self.keys.saturating_mul(1 + m)
    }

    /// Records every generator subtask must have emitted before the keys
    /// seen cover all K: its K/P, rounded up, plus P for the rounding of
    /// the splits' starts.
    fn per_split_cover(&self) -> u64 {
        let p = u64::from(self.parallelism);
        self.keys.div_ceil(p) + p
    }

    /// The child's command line.
    fn argv(&self, from: Option<&str>) -> Vec<String> {
        let mut argv: Vec<String> = vec!["run".into(), "-p".into(), self.parallelism.to_string()];
        let mut set = |kv: String| argv.extend(["-D".into(), kv]);
        set(format!("state.backend.type={}", self.backend));
        set(format!(
            "execution.checkpointing.interval={}ms",
            self.checkpoint_interval_ms
        ));
        set(format!("state.checkpoints.dir={}", self.checkpoint_dir));
        if self.incremental {
            set("state.backend.incremental=true".into());
        }
        for d in &self.dynamic {
            set(d.clone());
        }
        if let Some(dir) = from {
            argv.extend(["--fromCheckpoint".into(), dir.to_string()]);
        }
        argv.extend(["keyed-count".into(), "--discard".into()]);
        argv.extend(["--records".into(), self.records().to_string()]);
        argv.extend(["--keys".into(), self.keys.to_string()]);
        argv
    }

    /// Polls the first run until a checkpoint taken after every key got
    /// state has completed, then SIGKILLs it.
    fn run_until_checkpointed(&self, mut job: Job) -> anyhow::Result<Killed> {
        let started = Instant::now();
        let mut seen: BTreeMap<u64, (CheckpointSeen, String, u64)> = BTreeMap::new();
        let mut first_records: Option<Instant> = None;
        let mut all_keys_at_ms: Option<u64> = None;
        loop {
            job.role.check_alive()?;
            ensure!(
                started.elapsed() < self.timeout,
                "no checkpoint covering all {} keys completed within {:?}",
                self.keys,
                self.timeout
            );
            let records = job.records_out()?;
            if records > 0 && first_records.is_none() {
                first_records = Some(Instant::now());
            }
            if all_keys_at_ms.is_none() && job.generated_per_split()? >= self.per_split_cover() {
                // The clock the coordinator stamps trigger times with.
                all_keys_at_ms = Some(SystemClock.epoch_ms());
                eprintln!(
                    "{BENCH}: every key has state after {:.1} s; waiting for the next checkpoint",
                    started.elapsed().as_secs_f64()
                );
            }
            let history = job.rest.get(&format!("/jobs/{}/checkpoints", job.job_id))?;
            for h in history["history"].as_array().into_iter().flatten() {
                if h["status"] != "COMPLETED" {
                    continue;
                }
                let (Some(id), Some(path)) = (h["id"].as_u64(), h["external_path"].as_str()) else {
                    continue;
                };
                let number = |k: &str| h[k].as_u64().unwrap_or(0);
                seen.entry(id).or_insert_with(|| {
                    (
                        CheckpointSeen {
                            id,
                            duration_ms: number("end_to_end_duration"),
                            full_bytes: number("state_size"),
                            checkpointed_bytes: number("checkpointed_size"),
                        },
                        path.to_string(),
                        number("trigger_timestamp"),
                    )
                });
            }
            let covering = all_keys_at_ms.and_then(|at| {
                seen.values()
                    .find(|(_, _, triggered)| *triggered >= at)
                    .cloned()
            });
            if let Some((covering, covering_path, _)) = covering {
                let peak_rss_bytes = crate::peak_rss_bytes_of(job.role.pid()).unwrap_or(0);
                let records = job.records_out()?;
                let running = first_records.map_or(Duration::ZERO, |t| t.elapsed());
                job.role.kill()?;
                return Ok(Killed {
                    records,
                    records_per_sec: records as f64 / running.as_secs_f64().max(1e-3),
                    peak_rss_bytes,
                    checkpoints: seen.into_values().map(|(c, _, _)| c).collect(),
                    covering,
                    covering_path,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// What the first run left.
struct Killed {
    records: u64,
    records_per_sec: f64,
    peak_rss_bytes: u64,
    checkpoints: Vec<CheckpointSeen>,
    covering: CheckpointSeen,
    covering_path: String,
}

impl Job {
    /// The keyed operator's `numRecordsOut`, summed over its subtasks.
    fn records_out(&self) -> anyhow::Result<u64> {
        self.records_out_of(KEYED_VERTEX, "sum")
    }

    /// The fewest records any generator subtask has emitted.
    fn generated_per_split(&self) -> anyhow::Result<u64> {
        self.records_out_of(GENERATOR_VERTEX, "min")
    }

    /// A vertex's `numRecordsOut` aggregated over its subtasks by `agg`.
    fn records_out_of(&self, vertex: &str, agg: &str) -> anyhow::Result<u64> {
        let answer = self.rest.get(&format!(
            "/jobs/{}/vertices/{vertex}/subtasks/metrics?get=numRecordsOut&agg={agg}",
            self.job_id
        ))?;
        let value = answer
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == "numRecordsOut"))
            .and_then(|m| m[agg].as_f64())
            .unwrap_or(0.0);
        Ok(value as u64)
    }
}

/// Polls the restored run until its keyed operator has emitted a record:
/// the time since `spawned`, and the run's peak RSS then.
fn first_output(
    job: &mut Job,
    spawned: Instant,
    timeout: Duration,
) -> anyhow::Result<(Duration, u64)> {
    loop {
        if job.records_out()? > 0 {
            let at = spawned.elapsed();
            return Ok((at, crate::peak_rss_bytes_of(job.role.pid()).unwrap_or(0)));
        }
        job.role.check_alive()?;
        ensure!(
            spawned.elapsed() < timeout.max(STARTUP_TIMEOUT),
            "the restored job processed no record within {:?}",
            timeout.max(STARTUP_TIMEOUT)
        );
        std::thread::sleep(FAST_POLL);
    }
}

/// The directory holding a checkpoint's `chk-<n>` directory: the job's
/// checkpoint directory, which `--fromCheckpoint` resolves to its latest
/// completed checkpoint.
fn parent_dir(external_path: &str) -> anyhow::Result<String> {
    let trimmed = external_path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, last)) if last.starts_with("chk-") && !parent.is_empty() => {
            Ok(parent.to_string())
        }
        _ => bail!("checkpoint path {external_path:?} does not end in chk-<n>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_directory_is_the_checkpoints_parent() {
        assert_eq!(
            parent_dir("file:///tmp/ck/0123abcd/chk-7").unwrap(),
            "file:///tmp/ck/0123abcd"
        );
        assert_eq!(
            parent_dir("s3://bucket/ck/job/chk-12/").unwrap(),
            "s3://bucket/ck/job"
        );
        assert!(parent_dir("file:///tmp/ck/savepoint-1").is_err());
    }

    #[test]
    fn both_runs_get_the_same_job_and_configuration() {
        let bench = RecoveryBench {
            keys: 1000,
            parallelism: 2,
            backend: "rocksdb".into(),
            incremental: true,
            checkpoint_interval_ms: 10_000,
            checkpoint_dir: "file:///tmp/ck".into(),
            dynamic: vec!["taskmanager.memory.managed.size=64mb".into()],
            timeout: Duration::from_secs(60),
        };
        let first = bench.argv(None);
        let second = bench.argv(Some("file:///tmp/ck/job"));
        assert_eq!(
            first.join(" "),
            "run -p 2 -D state.backend.type=rocksdb -D execution.checkpointing.interval=10000ms \
             -D state.checkpoints.dir=file:///tmp/ck -D state.backend.incremental=true \
             -D taskmanager.memory.managed.size=64mb keyed-count --discard --records 2001000 --keys 1000"
        );
        // Splits start at keys 0 and 500: 502 records each cover all keys.
        assert_eq!(bench.per_split_cover(), 502);
        let without: Vec<&String> = second
            .iter()
            .filter(|a| *a != "--fromCheckpoint" && *a != "file:///tmp/ck/job")
            .collect();
        assert_eq!(without, first.iter().collect::<Vec<_>>());
    }
}
