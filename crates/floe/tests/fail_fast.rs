//! Failures a restart cannot cure end the job at once instead of being
//! retried forever by the default restart strategy (fixed delay, unlimited,
//! with checkpointing on): a restore at another parallelism from an
//! unaligned checkpoint holding in-flight records (refused before the job
//! starts), state restored as another kind, and errors user code marks as
//! non-recoverable; by contrast an exactly-once file sink restored with
//! another output directory is no such failure: it commits where it wrote
//! and goes on. Every test is bounded by the job ending (a hang fails
//! it through `with_timeout`), never by sleeping.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{RunningCount, with_timeout};
use floe::prelude::*;
use floe::runtime::job_manager::JobManager;
use floe::runtime::restart::RestartStrategy;
use floe::runtime::{JobError, RestoreConflict};

const RECORDS: u64 = 1_000_000;
const KEYS: u64 = 12;

/// The same operator (uid "count") registering "count" as a list: state
/// of another kind than the snapshot holds.
#[derive(Clone, Default)]
struct CountAsList;

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for CountAsList {
    fn open(&mut self, ctx: &mut RuntimeContext<'_, u64>) -> anyhow::Result<()> {
        ctx.get_list_state::<u64>(&ListStateDescriptor::new("count"))?;
        Ok(())
    }

    fn process_element(
        &mut self,
        _: (u64, u64),
        _: &mut KeyedContext<'_, u64>,
        _: &mut Collector<'_, (u64, u64)>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An environment with checkpointing on (so the default restart strategy
/// restarts without limit) and storage under `dir`.
fn env_with_checkpoints(dir: &Path, parallelism: u32) -> StreamEnvironment {
    let env = StreamEnvironment::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(Duration::from_millis(100));
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.join("chk").display()),
    );
    env.set_config(
        "state.savepoints.dir",
        &format!("file://{}", dir.join("savepoints").display()),
    );
    env
}

/// Takes a savepoint of a running job with cancel-job once `ready` says
/// so; returns its path.
fn savepoint_and_cancel(
    client: floe::runtime::job_manager::JobClient,
    ready: impl Fn() -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "the job made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
        .expect("trigger");
    let location = loop {
        match control.savepoint_status(&trigger).expect("known trigger") {
            SavepointStatus::Completed { location } => break location,
            SavepointStatus::Failed { reason } => panic!("savepoint failed: {reason}"),
            SavepointStatus::InProgress => {}
        }
        assert!(Instant::now() < deadline, "savepoint did not complete");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(client.wait(), Err(JobError::Cancelled { .. })));
    location
        .strip_prefix("file://")
        .expect("a local savepoint")
        .to_string()
}

/// A savepoint of the keyed count (generator uid "generator", counter uid
/// "count") at parallelism 2.
fn counting_savepoint(dir: &Path) -> String {
    let env = env_with_checkpoints(dir, 2);
    let (sink, out) = CollectSink::new();
    env.from_source(
        GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)).with_rate(5000.0),
        "Generator",
    )
    .uid("generator")
    .key_by(|(k, _): &(u64, u64)| *k)
    .process(RunningCount::default())
    .uid("count")
    .sink_to(sink, "Collect");
    let client = env.execute_async("count").unwrap();
    savepoint_and_cancel(client, || out.len() >= 500)
}

/// The keyed count restored from `savepoint` at `parallelism`.
fn counting_job(dir: &Path, savepoint: &str, parallelism: u32) -> StreamEnvironment {
    let env = env_with_checkpoints(dir, parallelism);
    env.set_restore_from_savepoint(savepoint, false);
    let (sink, _) = CollectSink::new();
    env.from_source(
        GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)),
        "Generator",
    )
    .uid("generator")
    .key_by(|(k, _): &(u64, u64)| *k)
    .process(RunningCount::default())
    .uid("count")
    .sink_to(sink, "Collect");
    env
}

/// In-flight records of an unaligned checkpoint were partitioned for the
/// old subtasks: at another parallelism the restore is refused while
/// planning, before any task runs, with the reason and the fix. (Before,
/// the tasks failed on a key group outside their range and restarted
/// forever.) At the old parallelism the same state plans.
#[test]
fn unaligned_in_flight_records_refuse_another_parallelism_before_start() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let savepoint = counting_savepoint(dir.path());
        for (parallelism, refused) in [(3, true), (1, true), (2, false)] {
            let env = counting_job(dir.path(), &savepoint, parallelism);
            let (graph, mut settings) = env.job_graph().unwrap();
            settings.restart = RestartStrategy::default_with_checkpointing();
            // The snapshot as an unaligned checkpoint carries it: records
            // in flight into both old subtasks of the counter.
            let mut restore = (*settings.restore.take().expect("a restore")).clone();
            let op = restore.operators.get_mut("count").expect("count's state");
            for subtask in 0..2 {
                op.channel.insert(subtask, Arc::new(vec![0]));
            }
            let checkpoint = restore.checkpoint_id;
            settings.restore = Some(Arc::new(restore));
            let planned = JobManager::new(settings).plan(&graph);
            if !refused {
                assert!(planned.is_ok(), "{:?}", planned.err());
                continue;
            }
            let err = planned.expect_err("another parallelism must be refused");
            assert!(
                matches!(
                    &err,
                    JobError::Restore(RestoreConflict::UnalignedRescale {
                        uid,
                        parallelism: p,
                        checkpoint_id,
                        snapshot_parallelism: 2,
                        ..
                    }) if uid == "count" && *p == parallelism && *checkpoint_id == checkpoint
                ),
                "{err:?}"
            );
            let msg = err.to_string();
            for needle in [
                "uid count".to_string(),
                format!("at parallelism {parallelism}"),
                format!("checkpoint {checkpoint} is unaligned"),
                "in-flight records".into(),
                "taken at parallelism 2".into(),
                "take a savepoint or an aligned checkpoint to rescale".into(),
            ] {
                assert!(msg.contains(&needle), "missing {needle:?}: {msg}");
            }
        }
    });
}

/// State restored as another kind than it was written fails the same way
/// on every attempt: the job fails at the first one.
#[test]
fn incompatible_restored_state_fails_the_job_without_restarting() {
    let err = with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let savepoint = counting_savepoint(dir.path());
        let env = env_with_checkpoints(dir.path(), 2);
        env.set_restore_from_savepoint(&savepoint, false);
        let (sink, _) = CollectSink::new();
        env.from_source(
            GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)),
            "Generator",
        )
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(CountAsList)
        .uid("count")
        .sink_to(sink, "Collect");
        env.execute("incompatible").map(|_| ())
    })
    .expect_err("an incompatible state must fail the job");
    assert!(matches!(err, JobError::Failed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("'count'"), "{msg}");
}

/// A source whose readers fail to open with a given error, counting the
/// attempts.
struct FailingSource {
    opens: Arc<AtomicU32>,
    non_recoverable: bool,
}

struct FailingReader {
    opens: Arc<AtomicU32>,
    non_recoverable: bool,
}

impl Source<u64> for FailingSource {
    fn create_reader(&self, _: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(FailingReader {
            opens: self.opens.clone(),
            non_recoverable: self.non_recoverable,
        }))
    }
}

impl SourceReader<u64> for FailingReader {
    fn open(&mut self, _: &TaskInfo) -> anyhow::Result<()> {
        let attempt = self.opens.fetch_add(1, Ordering::SeqCst) + 1;
        if self.non_recoverable {
            Err(NonRecoverable::new("the configured topic does not exist").into())
        } else {
            anyhow::bail!("connection refused (attempt {attempt})")
        }
    }

    fn poll_next(&mut self, _: &mut Vec<u64>, _: usize) -> anyhow::Result<SourceStatus> {
        Ok(SourceStatus::Finished)
    }
}

fn run_failing(non_recoverable: bool, restart: RestartStrategy) -> (JobError, u32) {
    let opens = Arc::new(AtomicU32::new(0));
    let counted = opens.clone();
    let err = with_timeout(60, move || {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_checkpoints(dir.path(), 1);
        env.set_restart_strategy(restart);
        let (sink, _) = CollectSink::new();
        env.from_source(
            FailingSource {
                opens: counted,
                non_recoverable,
            },
            "Failing",
        )
        .sink_to(sink, "Collect");
        env.execute("failing").map(|_| ())
    })
    .expect_err("the job must fail");
    (err, opens.load(Ordering::SeqCst))
}

/// User code (here a source) marks an error a restart cannot cure: the job
/// fails at the first attempt even with unlimited restarts; an ordinary
/// error is retried as the strategy says.
#[test]
fn a_non_recoverable_error_of_user_code_is_not_retried() {
    let (err, opens) = run_failing(true, RestartStrategy::default_with_checkpointing());
    assert!(matches!(err, JobError::Failed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the configured topic does not exist"),
        "{err}"
    );
    assert_eq!(opens, 1, "a non-recoverable failure was retried");

    let (err, opens) = run_failing(
        false,
        RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::ZERO,
        },
    );
    assert!(err.to_string().contains("attempt 3"), "{err}");
    assert_eq!(opens, 3, "an ordinary failure is restarted twice");
}

/// Committed part files (names not starting with `.`) of a file sink's
/// output directory.
fn committed_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn file_sink_job(dir: &Path, out: &Path, restore: Option<&str>) -> StreamEnvironment {
    let env = env_with_checkpoints(dir, 1);
    if let Some(sp) = restore {
        env.set_restore_from_savepoint(sp, false);
    }
    env.from_source(
        GeneratorSource::new(RECORDS, |i| i).with_rate(5000.0),
        "Generator",
    )
    .uid("generator")
    .sink_to(
        FileSink::new(out)
            .with_rolling_policy(OnCheckpointRollingPolicy::build())
            .with_bucket_assigner(BasePathBucketAssigner),
        "File Sink",
    )
    .uid("file-sink");
    env
}

/// Every record number in the committed files under `dir`.
fn committed_records(dir: &Path) -> Vec<u64> {
    committed_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// A savepoint of an exactly-once file sink records files in its output
/// directory; restored with another directory, the job commits them where
/// they were written and goes on in the new one, without failing or
/// restarting: the two directories together hold every record once.
#[test]
fn a_file_sink_restored_with_another_directory_commits_where_they_were_written() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let (out1, out2) = (dir.path().join("out1"), dir.path().join("out2"));
        // No checkpoint but the savepoint, which commits nothing: its
        // pending files stay in out1 when the job is cancelled.
        let env = file_sink_job(dir.path(), &out1, None);
        env.enable_checkpointing(Duration::from_secs(3600));
        let client = env.execute_async("file-sink").unwrap();
        let started = Instant::now();
        let savepoint = savepoint_and_cancel(client, || {
            started.elapsed() > Duration::from_millis(300)
                && out1.is_dir()
                && !hidden_files(&out1).is_empty()
        });
        assert!(
            committed_files(&out1).is_empty(),
            "committed before the restore"
        );
        let client = file_sink_job(dir.path(), &out2, Some(&savepoint))
            .execute_async("file-sink-elsewhere")
            .unwrap();
        savepoint_and_cancel(client, || !committed_files(&out2).is_empty());
        assert_eq!(hidden_files(&out1), Vec::<PathBuf>::new(), "left pending");
        let mut all = committed_records(&out1);
        let first_run = all.len();
        all.extend(committed_records(&out2));
        all.sort_unstable();
        assert!(first_run > 0 && all.len() > first_run);
        assert_eq!(
            all,
            (0..all.len() as u64).collect::<Vec<_>>(),
            "records missing or duplicated"
        );
    });
}
