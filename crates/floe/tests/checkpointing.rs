//! Fault injection with checkpoints: a job with keyed state, a key_by
//! exchange and a multi-input operator (union) fails at a random point,
//! restarts from its latest completed checkpoint, and must end with exactly
//! the state of a failure-free run.
//!
//! `FLOE_SOAK_SEEDS=<n>` runs n seeds instead of the few CI runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floe::checkpoint::StateHandle;
use floe::prelude::*;
use floe::runtime::checkpoint::{
    AlignmentMode, CheckpointFailureReason, CheckpointStatus, CheckpointStore, PayloadError,
    SharedStateStore, StateFileKind, StoreError,
};
use floe::runtime::restart::RestartStrategy;

/// Counts per key and fails once, after `fail_at` records in total.
#[derive(Clone)]
struct FlakyCount {
    count: Option<ValueState<u64>>,
    seen: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    fail_at: u64,
    /// Fail only once this checkpoint completed (0: at `fail_at` whatever
    /// completed), so a test that needs checkpoints before the failure
    /// waits for them instead of for time.
    fail_after_checkpoint: u64,
    /// The highest checkpoint id this function heard completed.
    completed: Arc<AtomicU64>,
    /// Sleep now and then, so input backs up.
    slow: bool,
    /// A checkpoint directory holding one job: just before failing, write
    /// a file into its `shared/` that no checkpoint references (what an
    /// upload finishing after its checkpoint was declined leaves).
    plant_stray: Option<std::path::PathBuf>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for FlakyCount {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        self.count = Some(ctx.get_state(&ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        if self.seen.fetch_add(1, Ordering::Relaxed) >= self.fail_at
            && self.completed.load(Ordering::Relaxed) >= self.fail_after_checkpoint
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            if let Some(dir) = &self.plant_stray {
                let job = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap();
                std::fs::create_dir_all(job.path().join("shared")).unwrap();
                // Named as Floe names its uploads: sweeps delete only those.
                std::fs::write(
                    job.path().join("shared/00000000deadbeef-999-000001.sst"),
                    b"orphan",
                )
                .unwrap();
            }
            panic!("injected failure after {} records", self.fail_at);
        }
        if self.slow && k == slow_key() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let state = self.count.as_ref().unwrap();
        let n = state.value(ctx)?.unwrap_or(0) + v;
        state.update(ctx, n)?;
        out.collect((k, n));
        Ok(())
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }
}

impl CheckpointListener for FlakyCount {
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        self.completed.fetch_max(checkpoint_id, Ordering::Relaxed);
        Ok(())
    }
}

struct Outcome {
    job_id: String,
    fail_at: u64,
    updates: Vec<(u64, u64)>,
    restarts: u32,
    completed_checkpoints: usize,
    checkpoints: Vec<floe::runtime::checkpoint::CheckpointStats>,
}

/// Two rate-limited generators (keys i mod K), unioned, keyed, counted.
fn run(seed: u64, records: u64, keys: u64, mode: AlignmentMode, fail: bool) -> Outcome {
    run_in(None, seed, records, keys, mode, fail)
}

fn run_in(
    dir: Option<&std::path::Path>,
    seed: u64,
    records: u64,
    keys: u64,
    mode: AlignmentMode,
    fail: bool,
) -> Outcome {
    run_with(Setup {
        dir,
        seed,
        records,
        keys,
        mode,
        fail,
        ..Setup::default()
    })
}

/// One fault-injection run.
struct Setup<'a> {
    dir: Option<&'a std::path::Path>,
    seed: u64,
    records: u64,
    keys: u64,
    mode: AlignmentMode,
    /// Panic once in the counting function.
    fail: bool,
    /// Checkpoints go here instead of `dir`.
    store: Option<Arc<dyn CheckpointStore>>,
    timeout: Option<Duration>,
    /// Sources this many times faster than the counter drains them at first:
    /// channels fill up (backpressure), so barriers queue behind records.
    slow_consumer: bool,
    /// `state.backend.type`.
    backend: &'static str,
    /// `state.backend.incremental`.
    incremental: bool,
    /// No restart strategy: the injected failure fails the job, which
    /// keeps its checkpoints.
    no_restart: bool,
    /// Plant an unreferenced file in `shared/` before the failure.
    plant_stray: bool,
    /// See [`FlakyCount::fail_after_checkpoint`].
    fail_after_checkpoint: u64,
    /// How long each source takes to emit its records.
    source_seconds: f64,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            dir: None,
            seed: 0,
            records: 20_000,
            keys: 37,
            mode: AlignmentMode::Aligned,
            fail: false,
            store: None,
            timeout: None,
            slow_consumer: false,
            backend: "hashmap",
            incremental: false,
            no_restart: false,
            plant_stray: false,
            fail_after_checkpoint: 0,
            source_seconds: 0.6,
        }
    }
}

fn run_with(setup: Setup<'_>) -> Outcome {
    let Setup {
        dir,
        seed,
        records,
        keys,
        mode,
        fail,
        store,
        timeout,
        slow_consumer,
        backend,
        incremental,
        no_restart,
        plant_stray,
        fail_after_checkpoint,
        source_seconds,
    } = setup;
    let env = StreamEnvironment::new();
    env.set_config("state.backend.type", backend);
    env.set_config("state.backend.incremental", &incremental.to_string());
    if let Some(dir) = dir {
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.display()),
        );
        env.set_config("state.checkpoints.num-retained", "2");
    }
    if let Some(store) = store {
        env.set_checkpoint_store(store);
    }
    env.set_parallelism(2);
    env.set_config("floe.runtime.channel-capacity", "2");
    env.set_config("floe.runtime.batch-size", "64");
    env.enable_checkpointing(Duration::from_millis(30));
    env.configure_checkpointing(move |c| {
        let c = mode.apply_to(c);
        match timeout {
            Some(t) => c.with_timeout(t),
            None => c,
        }
    });
    env.set_restart_strategy(if no_restart {
        RestartStrategy::None
    } else {
        RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        }
    });
    let rate = records as f64 / source_seconds;
    let a = env
        .from_source(
            GeneratorSource::new(records, move |i| (i % keys, 1)).with_rate(rate),
            "A",
        )
        .uid("a");
    let b = env
        .from_source(
            GeneratorSource::new(records, move |i| (b_key(i, keys, slow_consumer), 1))
                .with_rate(rate),
            "B",
        )
        .uid("b")
        .set_parallelism(1);
    let fail_at = if fail {
        records / 4 + seed * 7919 % records
    } else {
        u64::MAX
    };
    let (sink, out) = CollectSink::new();
    a.union(&[b])
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(FlakyCount {
            count: None,
            seen: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicBool::new(false)),
            fail_at,
            fail_after_checkpoint,
            completed: Arc::new(AtomicU64::new(0)),
            slow: slow_consumer,
            plant_stray: plant_stray.then(|| dir.expect("a checkpoint dir").to_path_buf()),
        })
        .uid("count")
        .sink_to(sink, "collect");
    let result = match env.execute("flaky-count") {
        Ok(r) => r,
        Err(e) if no_restart => {
            return Outcome {
                job_id: format!("failed: {e}"),
                fail_at,
                updates: out.snapshot(),
                restarts: 0,
                completed_checkpoints: 0,
                checkpoints: Vec::new(),
            };
        }
        Err(e) => panic!("the job recovers and finishes: {e}"),
    };
    Outcome {
        job_id: result.job_id.to_string(),
        fail_at,
        updates: out.snapshot(),
        restarts: result.restarts,
        completed_checkpoints: result
            .checkpoints
            .iter()
            .filter(|c| c.status == CheckpointStatus::Completed)
            .count(),
        checkpoints: result.checkpoints,
    }
}

/// The subtask (of 2) that owns `key`.
fn owner(key: u64) -> u32 {
    let kg = floe::state::key_group_for_key(&key, 128);
    floe::state::key_group::operator_index_for_key_group(128, 2, kg)
}

/// The key the slow consumer sleeps on: owned by subtask 0, so that
/// subtask's inputs back up.
fn slow_key() -> u64 {
    (0..).find(|k| owner(*k) == 0).unwrap()
}

/// Source B's key for record `i`. With `skew`, B only feeds subtask 1: its
/// barriers reach the backed-up subtask 0 at once, ahead of source A's
/// queued records, which an unaligned checkpoint then persists.
fn b_key(i: u64, keys: u64, skew: bool) -> u64 {
    let k = (i * 7 + 3) % keys;
    if !skew {
        return k;
    }
    let owned: Vec<u64> = (0..keys).filter(|k| owner(*k) == 1).collect();
    owned[(k as usize) % owned.len()]
}

fn expected(records: u64, keys: u64) -> HashMap<u64, u64> {
    expected_with(records, keys, false)
}

fn expected_with(records: u64, keys: u64, skew: bool) -> HashMap<u64, u64> {
    let mut m = HashMap::new();
    for i in 0..records {
        *m.entry(i % keys).or_insert(0) += 1;
        *m.entry(b_key(i, keys, skew)).or_insert(0) += 1;
    }
    m
}

/// Per key: the largest count emitted, and whether every count 1..=max was seen.
fn finals(updates: &[(u64, u64)]) -> HashMap<u64, (u64, bool)> {
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    for (k, n) in updates {
        seen.entry(*k).or_default().push(*n);
    }
    seen.into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            v.dedup();
            let max = *v.last().unwrap();
            (k, (max, v.len() as u64 == max))
        })
        .collect()
}

fn seeds() -> u64 {
    std::env::var("FLOE_SOAK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

#[test]
fn exactly_once_aligned_recovers_exact_state() {
    let (records, keys) = (20_000, 37);
    let want = expected(records, keys);
    for seed in 0..seeds() {
        let o = run(seed, records, keys, AlignmentMode::Aligned, true);
        assert_eq!(o.restarts, 1, "seed {seed}: exactly one injected failure");
        let got = finals(&o.updates);
        assert_eq!(got.len(), want.len(), "seed {seed}");
        for (k, n) in &want {
            let (max, contiguous) = got[k];
            assert_eq!(max, *n, "seed {seed}: key {k} counted {max}, expected {n}");
            assert!(contiguous, "seed {seed}: key {k} skipped a count");
        }
        assert!(
            o.completed_checkpoints > 0,
            "seed {seed}: no checkpoint completed"
        );
        // Restored from a checkpoint, not from scratch: only the records
        // after the last completed checkpoint were processed twice.
        assert!(
            (o.updates.len() as u64) < 2 * records + o.fail_at,
            "seed {seed}: {} updates suggest a replay from the start",
            o.updates.len()
        );
    }
}

#[test]
fn failure_free_run_matches_expectation() {
    let (records, keys) = (5_000, 11);
    let o = run(0, records, keys, AlignmentMode::Aligned, false);
    assert_eq!(o.restarts, 0);
    let got = finals(&o.updates);
    for (k, n) in expected(records, keys) {
        assert_eq!(got[&k], (n, true), "key {k}");
    }
    // Without failures every update is emitted exactly once.
    assert_eq!(o.updates.len() as u64, 2 * records);
}

/// The same failure and recovery with keyed state in RocksDB (its
/// checkpoints are canonical snapshots read back from RocksDB checkpoints).
#[cfg(feature = "rocksdb")]
#[test]
fn exactly_once_on_rocksdb_recovers_exact_state() {
    let (records, keys) = (20_000, 37);
    for seed in 0..seeds() {
        for mode in [
            AlignmentMode::Aligned,
            AlignmentMode::Unaligned {
                aligned_timeout: Duration::ZERO,
            },
        ] {
            let o = run_with(Setup {
                seed,
                records,
                keys,
                mode,
                fail: true,
                backend: "rocksdb",
                ..Setup::default()
            });
            assert_eq!(o.restarts, 1, "seed {seed} {mode:?}: one injected failure");
            assert_exact(
                &o,
                records,
                keys,
                false,
                &format!("rocksdb {mode:?} seed {seed}"),
            );
            assert!(o.completed_checkpoints > 0, "seed {seed}: none completed");
        }
    }
}

/// The same with incremental checkpoints on local disk: tasks upload only
/// new RocksDB files and reference the rest; recovery downloads them.
#[cfg(feature = "rocksdb")]
#[test]
fn exactly_once_on_rocksdb_incremental_recovers_exact_state() {
    let (records, keys) = (20_000, 37);
    for seed in 0..seeds() {
        for mode in [
            AlignmentMode::Aligned,
            AlignmentMode::Unaligned {
                aligned_timeout: Duration::ZERO,
            },
        ] {
            let dir = tempfile::tempdir().unwrap();
            let o = run_with(Setup {
                dir: Some(dir.path()),
                seed,
                records,
                keys,
                mode,
                fail: true,
                backend: "rocksdb",
                incremental: true,
                ..Setup::default()
            });
            let what = format!("rocksdb incremental {mode:?} seed {seed}");
            assert_eq!(o.restarts, 1, "{what}: one injected failure");
            assert_exact(&o, records, keys, false, &what);
            let completed: Vec<_> = o
                .checkpoints
                .iter()
                .filter(|c| c.status == CheckpointStatus::Completed && !c.is_savepoint)
                .collect();
            assert!(completed.len() > 1, "{what}: {completed:?}");
            assert!(
                completed.iter().any(|c| c.full_state_size > c.state_size),
                "{what}: no checkpoint referenced an earlier one's files"
            );
            // The job finished: its checkpoints and shared state are gone.
            let job_dir = dir.path().join(&o.job_id);
            assert!(
                !job_dir.join("shared").exists()
                    || std::fs::read_dir(job_dir.join("shared"))
                        .unwrap()
                        .next()
                        .is_none(),
                "{what}: shared state left behind"
            );
        }
    }
}

/// After many incremental checkpoints with num-retained = 2, `shared/`
/// holds exactly the files the two retained checkpoints reference: every
/// other uploaded file was deleted once no checkpoint needed it.
#[cfg(feature = "rocksdb")]
#[test]
fn shared_directory_holds_only_what_retained_checkpoints_reference() {
    let dir = tempfile::tempdir().unwrap();
    let records = 40_000;
    let o = run_with(Setup {
        dir: Some(dir.path()),
        seed: 4,
        records,
        keys: 500,
        fail: true,
        no_restart: true,
        backend: "rocksdb",
        incremental: true,
        plant_stray: true,
        // Two retained checkpoints after several: the failure waits for
        // the fifth, and the sources run long enough for it on a loaded
        // machine (a fixed record count failed when checkpoints lagged).
        fail_after_checkpoint: 5,
        source_seconds: 6.0,
        ..Setup::default()
    });
    assert!(
        o.job_id.starts_with("failed"),
        "the job fails: {}",
        o.job_id
    );
    let jobs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job_dir = &jobs[0];
    let storage =
        floe::checkpoint::CheckpointStorage::from_url(&format!("file://{}", dir.path().display()))
            .unwrap();
    let job: floe::core::JobId = job_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let job = storage.job(job);
    let retained = job.completed_checkpoints().unwrap();
    assert_eq!(retained.len(), 2, "num-retained: {retained:?}");
    assert!(
        retained[0] >= 4,
        "too few checkpoints before the failure: {retained:?}"
    );
    let mut referenced = std::collections::BTreeSet::new();
    for id in &retained {
        let meta =
            floe::checkpoint::CheckpointMetadata::decode(&job.read_metadata(*id).unwrap()).unwrap();
        for f in meta.shared_files() {
            referenced.insert(f.path.rsplit('/').next().unwrap().to_string());
        }
    }
    let stored: std::collections::BTreeSet<String> = std::fs::read_dir(job_dir.join("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!stored.is_empty());
    // The stray file planted before the failure is swept when the run ends.
    assert_eq!(
        stored, referenced,
        "shared/ against the retained checkpoints"
    );
}

/// At-least-once recovers from a checkpoint: counts may include records
/// twice but never miss one. A restart from scratch would also reach every
/// count, so the test fails unless the state was restored: the failure
/// comes after checkpoint 2 completed, when every key had been counted,
/// so a restored counter never emits a count of 1 again.
#[test]
fn at_least_once_never_loses() {
    let (records, keys) = (20_000, 37);
    let want = expected(records, keys);
    let o = run_with(Setup {
        seed: 1,
        records,
        keys,
        mode: AlignmentMode::AtLeastOnce,
        fail: true,
        fail_after_checkpoint: 2,
        ..Setup::default()
    });
    assert_eq!(o.restarts, 1, "the injected failure restarts the job once");
    let got = finals(&o.updates);
    for (k, n) in &want {
        assert!(got[k].0 >= *n, "key {k}: {} < {n}: records lost", got[k].0);
        let firsts = o.updates.iter().filter(|u| **u == (*k, 1)).count();
        assert_eq!(
            firsts, 1,
            "key {k} was counted from 1 again after the restart: its state was not restored"
        );
    }
}

/// The same recovery through checkpoints on local disk, with Flink's layout:
/// `<dir>/<job id>/chk-<n>/_metadata`, at most num-retained (2) kept.
#[test]
fn exactly_once_with_file_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (records, keys) = (20_000, 37);
    let o = run_in(
        Some(dir.path()),
        7,
        records,
        keys,
        AlignmentMode::Aligned,
        true,
    );
    assert_eq!(o.restarts, 1);
    let got = finals(&o.updates);
    for (k, n) in expected(records, keys) {
        assert_eq!(got[&k], (n, true), "key {k}");
    }
    // A finished job's checkpoints are discarded, as in Flink.
    assert!(
        completed_in(&dir.path().join(&o.job_id)).is_empty(),
        "checkpoints of a finished job were kept"
    );
}

/// State files of more than 1 MiB per subtask (written with direct I/O on a
/// file system that has it) through a failure and a restore from local
/// disk: still exactly once.
#[test]
fn exactly_once_with_large_file_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // 600,000 keys: about 300,000 per subtask, 1.3-1.5 MB per state file.
    let (records, keys) = (600_000, 600_000);
    let o = run_with(Setup {
        dir: Some(dir.path()),
        seed: 3,
        records,
        keys,
        fail: true,
        ..Setup::default()
    });
    assert_eq!(o.restarts, 1);
    assert_exact(&o, records, keys, false, "large files");
    let largest = o
        .checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Completed)
        .map(|c| c.full_state_size)
        .max()
        .unwrap_or(0);
    assert!(
        largest > 2 << 20,
        "no checkpoint with state files over 1 MiB (largest {largest} bytes)"
    );
}

fn completed_in(job_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(job_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("_metadata").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A job that fails for good keeps its checkpoints (at most num-retained)
/// so it can be started again with `--fromCheckpoint`.
#[test]
fn failed_job_keeps_its_latest_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(20));
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.path().display()),
    );
    env.set_config("state.checkpoints.num-retained", "2");
    env.set_restart_strategy(RestartStrategy::None);
    let records = 20_000u64;
    let (sink, _) = CollectSink::new();
    env.from_source(
        GeneratorSource::new(records, |i| (i % 5, 1)).with_rate(records as f64 / 0.5),
        "gen",
    )
    .key_by(|(k, _): &(u64, u64)| *k)
    .process(FlakyCount {
        count: None,
        seen: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicBool::new(false)),
        fail_at: records * 3 / 4,
        fail_after_checkpoint: 0,
        completed: Arc::new(AtomicU64::new(0)),
        slow: false,
        plant_stray: None,
    })
    .sink_to(sink, "collect");
    let err = env.execute("fails-for-good").unwrap_err().to_string();
    assert!(err.contains("injected failure"), "{err}");
    let jobs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(jobs.len(), 1);
    let kept = completed_in(&jobs[0].path());
    assert!(!kept.is_empty(), "a failed job lost its checkpoints");
    assert!(kept.len() <= 2, "more than num-retained kept: {kept:?}");
    assert!(kept.iter().all(|c| c.starts_with("chk-")), "{kept:?}");
}

/// Asserts the exactly-once outcome of a run with one restart.
fn assert_exact(o: &Outcome, records: u64, keys: u64, skew: bool, what: &str) {
    let got = finals(&o.updates);
    let want = expected_with(records, keys, skew);
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, n) in &want {
        let (max, contiguous) = got[k];
        assert_eq!(max, *n, "{what}: key {k} counted {max}, expected {n}");
        assert!(contiguous, "{what}: key {k} skipped a count");
    }
}

/// Unaligned checkpoints: barriers overtake in-flight records, which are
/// persisted with the checkpoint and replayed on restore; the result is
/// still exactly once.
#[test]
fn exactly_once_unaligned_recovers_exact_state() {
    let (records, keys) = (20_000, 37);
    let mut channel_bytes = 0;
    for seed in 0..seeds() {
        let o = run_with(Setup {
            seed,
            records,
            keys,
            mode: AlignmentMode::Unaligned {
                aligned_timeout: Duration::ZERO,
            },
            fail: true,
            slow_consumer: true,
            ..Setup::default()
        });
        assert_eq!(o.restarts, 1, "seed {seed}: exactly one injected failure");
        assert_exact(&o, records, keys, true, &format!("unaligned seed {seed}"));
        assert!(o.completed_checkpoints > 0, "seed {seed}: none completed");
        channel_bytes += o
            .checkpoints
            .iter()
            .map(|c| c.channel_state_size)
            .sum::<u64>();
    }
    // Under backpressure some records were in flight at a barrier.
    assert!(
        channel_bytes > 0,
        "no in-flight records were ever persisted"
    );
}

/// Aligned checkpoint timeout: alignment starts, takes too long under
/// backpressure, and the checkpoint switches to unaligned; exactly once.
#[test]
fn aligned_checkpoint_timeout_switches_to_unaligned() {
    let (records, keys) = (20_000, 37);
    let o = run_with(Setup {
        seed: 2,
        records,
        keys,
        mode: AlignmentMode::Unaligned {
            aligned_timeout: Duration::from_micros(200),
        },
        fail: true,
        slow_consumer: true,
        ..Setup::default()
    });
    assert_eq!(o.restarts, 1);
    assert_exact(&o, records, keys, true, "aligned timeout");
    let completed: Vec<_> = o
        .checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Completed)
        .collect();
    assert!(!completed.is_empty());
    assert!(
        completed.iter().any(|c| c.unaligned),
        "no checkpoint switched to unaligned: {completed:?}"
    );
}

/// Checkpoint storage on local disk whose writes fail or stall on demand:
/// the real store underneath, with faults injected in front of it.
struct FaultyStore {
    inner: floe::checkpoint::JobCheckpointStorage,
    /// State writes of this checkpoint fail.
    fail_writes_of: Option<u64>,
    /// State writes of this checkpoint take this long.
    stall: Option<(u64, Duration)>,
}

impl CheckpointStore for FaultyStore {
    fn write_state(
        &self,
        checkpoint_id: u64,
        name: &str,
        kind: StateFileKind,
        size_hint: usize,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<StateHandle, StoreError> {
        if self.fail_writes_of == Some(checkpoint_id) {
            return Err(StoreError::Other(
                format!("injected write failure of {name}").into(),
            ));
        }
        if let Some((id, d)) = self.stall
            && id == checkpoint_id
        {
            std::thread::sleep(d);
        }
        self.inner
            .write_state(checkpoint_id, name, kind, size_hint, encode)
    }
    fn read_state(&self, file: &StateHandle, kind: StateFileKind) -> Result<Vec<u8>, StoreError> {
        self.inner.read_state(file, kind)
    }
    fn complete(&self, checkpoint_id: u64, metadata: &[u8]) -> Result<(), StoreError> {
        self.inner.complete(checkpoint_id, metadata)
    }
    fn read_metadata(&self, checkpoint_id: u64) -> Result<Vec<u8>, StoreError> {
        CheckpointStore::read_metadata(&self.inner, checkpoint_id)
    }
    fn discard(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        self.inner.discard(checkpoint_id)
    }
    fn discard_incomplete(&self, checkpoint_id: u64) -> Result<(), StoreError> {
        CheckpointStore::discard_incomplete(&self.inner, checkpoint_id)
    }
    fn completed(&self) -> Result<Vec<u64>, StoreError> {
        self.inner.completed()
    }
    fn location(&self, checkpoint_id: u64) -> Option<String> {
        self.inner.location(checkpoint_id)
    }
    fn shared_state(&self) -> Option<Arc<dyn SharedStateStore>> {
        self.inner.shared_state()
    }
}

fn faulty_store(
    dir: &std::path::Path,
    fail_writes_of: Option<u64>,
    stall: Option<(u64, Duration)>,
) -> (Arc<FaultyStore>, std::path::PathBuf) {
    let job = floe::core::JobId::random();
    let storage =
        floe::checkpoint::CheckpointStorage::from_url(&format!("file://{}", dir.display()))
            .unwrap();
    let store = Arc::new(FaultyStore {
        inner: storage.job(job),
        fail_writes_of,
        stall,
    });
    (store, dir.join(job.to_string()))
}

/// A storage write that fails fails the checkpoint; with no tolerable
/// failures the job fails over, restores the latest completed checkpoint and
/// still ends exactly once. The failed checkpoint leaves no files.
#[test]
fn failed_storage_write_fails_over_and_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (records, keys) = (20_000, 37);
    for mode in [
        AlignmentMode::Aligned,
        AlignmentMode::Unaligned {
            aligned_timeout: Duration::ZERO,
        },
    ] {
        let (store, job_dir) = faulty_store(dir.path(), Some(4), None);
        let o = run_with(Setup {
            records,
            keys,
            mode,
            store: Some(store),
            ..Setup::default()
        });
        assert_eq!(o.restarts, 1, "{mode:?}: the failed checkpoint fails over");
        assert_exact(&o, records, keys, false, &format!("{mode:?}"));
        let failed = o
            .checkpoints
            .iter()
            .find(|c| c.id == 4)
            .expect("stats of 4");
        assert!(
            matches!(&failed.status, CheckpointStatus::Failed(r @ CheckpointFailureReason::Declined { .. })
                if r.to_string().contains("injected write failure")),
            "{failed:?}"
        );
        assert!(
            !job_dir.join("chk-4").exists(),
            "files of the failed checkpoint were left behind"
        );
    }
}

/// A checkpoint that passes its timeout is aborted: never completed, its
/// files removed (also those its slow write produced after the abort), and
/// `_metadata` never written.
#[test]
fn expired_checkpoint_is_aborted_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (records, keys) = (20_000, 37);
    let (store, job_dir) = faulty_store(dir.path(), None, Some((3, Duration::from_millis(400))));
    let o = run_with(Setup {
        records,
        keys,
        store: Some(store.clone()),
        timeout: Some(Duration::from_millis(150)),
        ..Setup::default()
    });
    assert_exact(&o, records, keys, false, "timeout");
    let expired = o
        .checkpoints
        .iter()
        .find(|c| c.id == 3)
        .expect("stats of 3");
    assert!(
        matches!(
            &expired.status,
            CheckpointStatus::Failed(CheckpointFailureReason::Expired(_))
        ),
        "{expired:?}"
    );
    let left: Vec<_> = std::fs::read_dir(job_dir.join("chk-3"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !job_dir.join("chk-3").exists(),
        "files of the expired checkpoint were left behind: {left:?}"
    );
    // Statistics of completed checkpoints carry their parts.
    let done = o
        .checkpoints
        .iter()
        .find(|c| c.status == CheckpointStatus::Completed)
        .expect("a completed checkpoint");
    assert!(
        done.state_size > 0 && done.operators.contains_key("count"),
        "{done:?}"
    );
    assert_eq!(done.acknowledged.0, done.acknowledged.1);
}
