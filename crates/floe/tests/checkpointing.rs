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

use floe::prelude::*;
use floe::runtime::checkpoint::AlignmentMode;
use floe::runtime::coordinator::CheckpointStatus;
use floe::runtime::restart::RestartStrategy;

/// Counts per key and fails once, after `fail_at` records in total.
#[derive(Clone)]
struct FlakyCount {
    count: Option<ValueState<u64>>,
    seen: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    fail_at: u64,
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
        if self.seen.fetch_add(1, Ordering::Relaxed) == self.fail_at
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            panic!("injected failure after {} records", self.fail_at);
        }
        let state = self.count.as_ref().unwrap();
        let n = state.value(ctx)?.unwrap_or(0) + v;
        state.update(ctx, n)?;
        out.collect((k, n));
        Ok(())
    }
}

struct Outcome {
    job_id: String,
    fail_at: u64,
    updates: Vec<(u64, u64)>,
    restarts: u32,
    completed_checkpoints: usize,
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
    let env = StreamEnvironment::new();
    if let Some(dir) = dir {
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.display()),
        );
        env.set_config("state.checkpoints.num-retained", "2");
    }
    env.set_parallelism(2);
    env.enable_checkpointing(Duration::from_millis(30));
    env.configure_checkpointing(move |c| c.alignment = mode);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay: Duration::from_millis(10),
    });
    let rate = records as f64 / 0.6; // each source takes about 0.6 s
    let a = env
        .from_source(
            GeneratorSource::new(records, move |i| (i % keys, 1)).with_rate(rate),
            "A",
        )
        .uid("a");
    let b = env
        .from_source(
            GeneratorSource::new(records, move |i| ((i * 7 + 3) % keys, 1)).with_rate(rate),
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
        })
        .uid("count")
        .sink_to(sink, "collect");
    let result = env
        .execute("flaky-count")
        .expect("the job recovers and finishes");
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
    }
}

fn expected(records: u64, keys: u64) -> HashMap<u64, u64> {
    let mut m = HashMap::new();
    for i in 0..records {
        *m.entry(i % keys).or_insert(0) += 1;
        *m.entry((i * 7 + 3) % keys).or_insert(0) += 1;
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

#[test]
fn at_least_once_never_loses() {
    let (records, keys) = (20_000, 37);
    let want = expected(records, keys);
    let o = run(1, records, keys, AlignmentMode::AtLeastOnce, true);
    let got = finals(&o.updates);
    for (k, n) in &want {
        assert!(got[k].0 >= *n, "key {k}: {} < {n}: records lost", got[k].0);
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
