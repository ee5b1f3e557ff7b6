//! Savepoints in running jobs: taken with the same barriers as
//! checkpoints, written to `savepoint-<job>-<random>/` and restored by uid,
//! at the same or another parallelism (keyed state by key group, source
//! positions by split), after being moved; stop with and without drain;
//! restore errors (unmatched uids without `-n`, a changed max parallelism,
//! an incompatible state).
//!
//! The job is a keyed running count over generated records (key `i mod
//! K`): exactly once means the highest count the last run emits for every
//! key is exactly N / K, and each run continues where the snapshot it
//! restored from left off.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{RunningCount, with_timeout};
use floe::connectors::CollectedRecords;
use floe::prelude::*;
use floe::runtime::job_manager::JobClient;
use floe::runtime::{JobError, RestoreConflict};

const RECORDS: u64 = 24_000;
const KEYS: u64 = 12;

/// How a run of the counting job is set up.
struct Run<'a> {
    parallelism: u32,
    rate: Option<f64>,
    restore: Option<&'a str>,
    allow_non_restored: bool,
    count_uid: &'a str,
    max_parallelism: Option<u32>,
    checkpointing: bool,
    backend: &'a str,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            parallelism: 2,
            rate: Some(6000.0),
            restore: None,
            allow_non_restored: false,
            count_uid: "count",
            max_parallelism: None,
            checkpointing: true,
            backend: "hashmap",
        }
    }
}

fn start(run: Run<'_>, dir: &Path) -> (Result<JobClient, JobError>, CollectedRecords<(u64, u64)>) {
    let env = StreamEnvironment::new();
    env.set_parallelism(run.parallelism);
    env.set_config("state.backend.type", run.backend);
    env.set_config(
        "state.backend.rocksdb.localdir",
        &dir.join("rocksdb").display().to_string(),
    );
    if let Some(m) = run.max_parallelism {
        env.set_max_parallelism(m);
    }
    if run.checkpointing {
        env.enable_checkpointing(Duration::from_millis(100));
        env.set_config(
            "state.checkpoints.dir",
            &format!("file://{}", dir.join("chk").display()),
        );
    }
    env.set_config(
        "state.savepoints.dir",
        &format!("file://{}", dir.join("savepoints").display()),
    );
    if let Some(path) = run.restore {
        env.set_restore_from_savepoint(path, run.allow_non_restored);
    }
    let mut source = GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64));
    if let Some(r) = run.rate {
        source = source.with_rate(r);
    }
    let (sink, out) = CollectSink::new();
    env.from_source(source, "Generator")
        .uid("generator")
        .key_by(|(k, _): &(u64, u64)| *k)
        .process(RunningCount::default())
        .uid(run.count_uid)
        .sink_to(sink, "Collect");
    (env.execute_async("savepoint-test"), out)
}

/// Waits for a savepoint request to end and returns its location.
fn await_savepoint(control: &JobControl, trigger: &floe::runtime::TriggerId) -> String {
    match await_end(control, trigger) {
        SavepointStatus::Completed { location } => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// Waits for a savepoint request to end, either way.
fn await_end(control: &JobControl, trigger: &floe::runtime::TriggerId) -> SavepointStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match control.savepoint_status(trigger).expect("known trigger") {
            SavepointStatus::InProgress => {}
            ended => return ended,
        }
        assert!(Instant::now() < deadline, "savepoint request never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A collection source that says when its reader reported the end of its
/// input, so a test can wait for that instead of for time.
#[derive(Clone)]
struct SignalsEnd {
    inner: CollectionSource<(u64, u64)>,
    ended: Arc<AtomicBool>,
}

struct SignalsEndReader {
    inner: Box<dyn SourceReader<(u64, u64)>>,
    ended: Arc<AtomicBool>,
}

impl Source<(u64, u64)> for SignalsEnd {
    fn is_parallel(&self) -> bool {
        self.inner.is_parallel()
    }

    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<(u64, u64)>>> {
        Ok(Box::new(SignalsEndReader {
            inner: self.inner.create_reader(info)?,
            ended: self.ended.clone(),
        }))
    }
}

impl SourceReader<(u64, u64)> for SignalsEndReader {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.inner.open(info)
    }

    fn poll_next(&mut self, out: &mut Vec<(u64, u64)>, max: usize) -> anyhow::Result<SourceStatus> {
        let status = self.inner.poll_next(out, max)?;
        if status == SourceStatus::Finished {
            self.ended.store(true, Ordering::SeqCst);
        }
        Ok(status)
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        self.inner.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.inner.restore_state(state)
    }

    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        self.inner.restore_splits(states)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.inner.close()
    }
}

/// Lets the job run until it emitted at least `n` records.
fn run_until(out: &CollectedRecords<(u64, u64)>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(Instant::now() < deadline, "the job made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Highest and lowest count per key in what a run emitted.
fn counts(out: &[(u64, u64)]) -> BTreeMap<u64, (u64, u64)> {
    let mut m: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for &(k, c) in out {
        let e = m.entry(k).or_insert((c, c));
        e.0 = e.0.min(c);
        e.1 = e.1.max(c);
    }
    m
}

/// Takes a savepoint with cancel-job, waits for the job to be cancelled,
/// and returns the savepoint and the highest count per key it emitted.
fn savepoint_and_cancel(client: JobClient) -> String {
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: true })
        .expect("trigger");
    let location = await_savepoint(&control, &trigger);
    assert!(matches!(client.wait(), Err(JobError::Cancelled { .. })));
    assert_eq!(control.status(), JobStatus::Canceled);
    location
}

fn local(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").expect("a local savepoint"))
}

#[test]
fn rescaling_through_savepoints_keeps_every_count_exactly_once() {
    rescale_2_4_1(["hashmap", "hashmap", "hashmap"]);
}

/// The same on RocksDB: its savepoints are canonical, so they rescale.
#[cfg(feature = "rocksdb")]
#[test]
fn rescaling_through_savepoints_on_rocksdb() {
    rescale_2_4_1(["rocksdb", "rocksdb", "rocksdb"]);
}

/// Savepoints are backend-independent: heap → RocksDB → heap.
#[cfg(feature = "rocksdb")]
#[test]
fn savepoints_switch_between_heap_and_rocksdb() {
    rescale_2_4_1(["hashmap", "rocksdb", "hashmap"]);
    rescale_2_4_1(["rocksdb", "hashmap", "rocksdb"]);
}

/// p = 2 → savepoint → p = 4 → savepoint → p = 1 to the end, each run on
/// its own backend; every count ends exactly at N / K.
fn rescale_2_4_1(backends: [&'static str; 3]) {
    with_timeout(120, move || {
        let dir = tempfile::tempdir().unwrap();
        let (client, out) = start(
            Run {
                backend: backends[0],
                ..Run::default()
            },
            dir.path(),
        );
        run_until(&out, 3000);
        let sp1 = savepoint_and_cancel(client.unwrap());
        let name = local(&sp1)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            name.starts_with("savepoint-") && name.len() == "savepoint-".len() + 6 + 1 + 12,
            "{name}"
        );
        assert!(local(&sp1).join("_metadata").is_file());

        let (client, out2) = start(
            Run {
                parallelism: 4,
                restore: Some(&sp1),
                backend: backends[1],
                ..Run::default()
            },
            dir.path(),
        );
        run_until(&out2, 3000);
        let sp2 = savepoint_and_cancel(client.unwrap());

        let (client, out3) = start(
            Run {
                parallelism: 1,
                rate: None,
                restore: Some(&sp2),
                backend: backends[2],
                ..Run::default()
            },
            dir.path(),
        );
        client.unwrap().wait().expect("the last run ends");
        let first = counts(&out.snapshot());
        let second = counts(&out2.snapshot());
        let last = counts(&out3.snapshot());
        assert_eq!(last.len() as u64, KEYS);
        for (k, (low, high)) in &last {
            assert_eq!(*high, RECORDS / KEYS, "key {k}: final count");
            // Each run starts above where the earlier one's savepoint was:
            // restored state, not a fresh start.
            assert!(*low > 1, "key {k} restarted from zero");
            assert!(second[k].0 > 1, "key {k} restarted from zero at p = 4");
            assert!(first[k].0 == 1);
        }
        // Savepoints are the user's: the jobs kept them.
        assert!(local(&sp1).join("_metadata").is_file());
        assert!(local(&sp2).join("_metadata").is_file());
        // The RocksDB working directories went with the jobs.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("rocksdb"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "RocksDB directories left: {left:?}");
    });
}

#[test]
fn a_moved_savepoint_restores_and_unmatched_state_needs_allow_non_restored() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let (client, out) = start(Run::default(), dir.path());
        run_until(&out, 2000);
        let sp = local(&savepoint_and_cancel(client.unwrap()));
        // Move (rename) the savepoint elsewhere, then copy it.
        let moved = dir.path().join("elsewhere").join("renamed-savepoint");
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::rename(&sp, &moved).unwrap();
        let copy = dir.path().join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(&moved).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        let copy_str = copy.to_str().unwrap().to_string();

        // The counting operator under another uid: its state matches nothing.
        let err = start(
            Run {
                restore: Some(&copy_str),
                count_uid: "count-v2",
                ..Run::default()
            },
            dir.path(),
        )
        .0
        .err()
        .expect("unmatched state is refused");
        assert!(
            matches!(
                &err,
                JobError::Restore(RestoreConflict::UnmatchedState { uids }) if uids == &["count"]
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("count") && msg.contains("allowNonRestoredState"),
            "{msg}"
        );

        // With -n it starts: the source resumes, the renamed operator is new
        // (starts empty), so its counts begin at 1 again.
        let (client, out2) = start(
            Run {
                restore: Some(&copy_str),
                count_uid: "count-v2",
                allow_non_restored: true,
                rate: None,
                ..Run::default()
            },
            dir.path(),
        );
        client.unwrap().wait().unwrap();
        let c = counts(&out2.snapshot());
        let resumed: u64 = c.values().map(|(_, high)| high).sum();
        assert!(
            resumed < RECORDS && resumed > 0,
            "the source resumed from the savepoint: {resumed} of {RECORDS} records read"
        );
        assert!(c.values().all(|(low, _)| *low == 1));

        // The moved original restores the old uid exactly.
        let moved_str = moved.to_str().unwrap().to_string();
        let (client, out3) = start(
            Run {
                restore: Some(&moved_str),
                rate: None,
                ..Run::default()
            },
            dir.path(),
        );
        client.unwrap().wait().unwrap();
        assert!(
            counts(&out3.snapshot())
                .values()
                .all(|(_, high)| *high == RECORDS / KEYS)
        );
    });
}

#[test]
fn changing_an_explicit_max_parallelism_is_refused() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let (client, out) = start(
            Run {
                max_parallelism: Some(64),
                ..Run::default()
            },
            dir.path(),
        );
        run_until(&out, 1000);
        let sp = savepoint_and_cancel(client.unwrap());
        let err = start(
            Run {
                restore: Some(&sp),
                max_parallelism: Some(32),
                ..Run::default()
            },
            dir.path(),
        )
        .0
        .err()
        .expect("a changed max parallelism is refused");
        assert!(
            matches!(
                &err,
                JobError::Restore(RestoreConflict::MaxParallelismChanged {
                    max_parallelism: 32,
                    snapshot_max_parallelism: 64,
                    ..
                })
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("max parallelism 32") && msg.contains("64"),
            "{msg}"
        );
        // Without the setting the snapshot's 64 is adopted, also at a new
        // parallelism.
        let (client, out2) = start(
            Run {
                restore: Some(&sp),
                parallelism: 3,
                rate: None,
                ..Run::default()
            },
            dir.path(),
        );
        client.unwrap().wait().unwrap();
        assert!(
            counts(&out2.snapshot())
                .values()
                .all(|(_, high)| *high == RECORDS / KEYS)
        );
    });
}

#[test]
fn stop_with_savepoint_finishes_the_job_and_drain_flushes_first() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        for drain in [false, true] {
            for checkpointing in [true, false] {
                let (client, out) = start(
                    Run {
                        checkpointing,
                        ..Run::default()
                    },
                    dir.path(),
                );
                let client = client.unwrap();
                let control = client.control();
                run_until(&out, 2000);
                let trigger = control
                    .trigger_savepoint(None, SavepointMode::Stop { drain })
                    .unwrap();
                let sp = await_savepoint(&control, &trigger);
                client.wait().expect("a stopped job finishes");
                assert_eq!(control.status(), JobStatus::Finished);
                assert!(control.was_stopped());
                // A second stop is refused: the job is over.
                assert!(
                    control
                        .trigger_savepoint(None, SavepointMode::Stop { drain })
                        .is_err()
                );
                let stopped_at = counts(&out.snapshot());
                // Nothing was emitted after the savepoint: resuming from it
                // continues every count at the next value.
                let (client, out2) = start(
                    Run {
                        restore: Some(&sp),
                        rate: None,
                        checkpointing,
                        ..Run::default()
                    },
                    dir.path(),
                );
                client.unwrap().wait().unwrap();
                for (k, (low, high)) in counts(&out2.snapshot()) {
                    assert_eq!(low, stopped_at[&k].1 + 1, "key {k} (drain {drain})");
                    assert_eq!(high, RECORDS / KEYS, "key {k} (drain {drain})");
                }
            }
        }
    });
}

#[test]
fn savepoint_requests_fail_clearly() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnvironment::new();
        env.from_source(
            GeneratorSource::new(1_000_000, |i| i).with_rate(1000.0),
            "Gen",
        )
        .sink_to(CollectSink::new().0, "Collect");
        let client = env.execute_async("no-savepoint-dir").unwrap();
        let control = client.control();
        // No target and no state.savepoints.dir.
        assert!(matches!(
            control.trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: false }),
            Err(floe::runtime::ControlError::NoTargetDirectory)
        ));
        // A target that cannot be created: the request fails, the job runs on.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let t = control
            .trigger_savepoint(
                Some(file.join("sub").to_str().unwrap()),
                SavepointMode::Savepoint { cancel_job: false },
            )
            .unwrap();
        let SavepointStatus::Failed {
            reason: SavepointFailure::DirectoryNotCreated(reason),
        } = await_end(&control, &t)
        else {
            panic!("a savepoint under a file cannot be written");
        };
        assert!(reason.to_string().contains("a-file"), "{reason}");
        assert_eq!(control.status(), JobStatus::Running);
        // jobmanager memory is refused as a savepoint target.
        let t = control
            .trigger_savepoint(
                Some("jobmanager"),
                SavepointMode::Savepoint { cancel_job: false },
            )
            .unwrap();
        match await_end(&control, &t) {
            SavepointStatus::Failed {
                reason: reason @ SavepointFailure::DirectoryNotCreated(_),
            } => assert!(reason.to_string().contains("JobManager memory"), "{reason}"),
            other => panic!("jobmanager is not a savepoint target: {other:?}"),
        }
        client.cancel();
        assert!(client.wait().is_err());
        // A path that is not a savepoint is a clear restore error.
        let env = StreamEnvironment::new();
        env.set_restore_from_savepoint(dir.path().to_str().unwrap(), false);
        env.from_source(GeneratorSource::new(10, |i| i), "Gen")
            .sink_to(CollectSink::new().0, "Collect");
        let msg = env.execute_async("bad-restore").err().unwrap().to_string();
        assert!(
            msg.contains("is not a savepoint") && msg.contains("_metadata"),
            "{msg}"
        );
    });
}

#[test]
fn a_retained_checkpoint_restores_through_the_savepoint_flag() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().to_path_buf();
        let (client, out) = {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.enable_checkpointing(Duration::from_millis(100));
            env.set_config(
                "state.checkpoints.dir",
                &format!("file://{}", env_dir.join("chk").display()),
            );
            env.set_config(
                "execution.checkpointing.externalized-checkpoint-retention",
                "RETAIN_ON_CANCELLATION",
            );
            let (sink, out) = CollectSink::new();
            env.from_source(
                GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64)).with_rate(6000.0),
                "Generator",
            )
            .uid("generator")
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(RunningCount::default())
            .uid("count")
            .sink_to(sink, "Collect");
            (env.execute_async("retained").unwrap(), out)
        };
        run_until(&out, 2000);
        let control = client.control();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !control
            .checkpoint_stats()
            .iter()
            .any(|s| s.external_path.is_some())
        {
            assert!(Instant::now() < deadline, "no completed checkpoint");
            std::thread::sleep(Duration::from_millis(20));
        }
        client.cancel();
        assert!(client.wait().is_err());
        let job_dir = dir.path().join("chk").join(control.job_id().to_string());
        let chk = std::fs::read_dir(&job_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("_metadata").is_file())
            .expect("a retained checkpoint");
        let chk = chk.to_str().unwrap().to_string();
        let (client, out2) = start(
            Run {
                restore: Some(&chk),
                rate: None,
                parallelism: 3,
                ..Run::default()
            },
            dir.path(),
        );
        client.unwrap().wait().unwrap();
        for (k, (low, high)) in counts(&out2.snapshot()) {
            assert!(low > 1, "key {k} resumed from the checkpoint");
            assert_eq!(high, RECORDS / KEYS);
        }
    });
}

/// With checkpointing off, a task whose input ended stays until the job
/// ends: a savepoint taken after a bounded input of a union finished
/// completes (the finished source snapshots its end position), a stop with
/// drain completes, and a restore from the savepoint neither replays the
/// finished input nor loses any of the running one.
#[test]
fn savepoints_and_drain_work_after_some_tasks_finished() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let bounded_ended = Arc::new(AtomicBool::new(false));
        let build = |restore: Option<&str>, rate: Option<f64>| {
            let env = StreamEnvironment::new();
            env.set_parallelism(2);
            env.set_config(
                "state.savepoints.dir",
                &format!("file://{}", dir.path().join("savepoints").display()),
            );
            if let Some(path) = restore {
                env.set_restore_from_savepoint(path, false);
            }
            let mut source = GeneratorSource::new(RECORDS, |i| (i % KEYS, 1u64));
            if let Some(r) = rate {
                source = source.with_rate(r);
            }
            let bounded = env
                .from_source(
                    SignalsEnd {
                        inner: CollectionSource::new(
                            (0..10u64).map(|i| (1000 + i, 1u64)).collect(),
                        ),
                        ended: bounded_ended.clone(),
                    },
                    "Collection Source",
                )
                .uid("bounded");
            let (sink, out) = CollectSink::new();
            env.from_source(source, "Generator")
                .uid("generator")
                .union(&[bounded])
                .key_by(|(k, _): &(u64, u64)| *k)
                .process(RunningCount::default())
                .uid("count")
                .sink_to(sink, "Collect");
            (env.execute_async("finished-tasks").unwrap(), out)
        };
        let (client, out) = build(None, Some(6000.0));
        let control = client.control();
        run_until(&out, 2000);
        // The bounded source has ended (its task then finishes and stays
        // for the savepoint) and its records were counted.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bounded_ended.load(Ordering::SeqCst)
            || !out.snapshot().iter().any(|(k, _)| *k == 1009)
        {
            assert!(Instant::now() < deadline, "the bounded input never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        let trigger = control
            .trigger_savepoint(None, SavepointMode::Savepoint { cancel_job: false })
            .unwrap();
        let sp = await_savepoint(&control, &trigger);
        let trigger = control
            .trigger_savepoint(None, SavepointMode::Stop { drain: true })
            .unwrap();
        await_savepoint(&control, &trigger);
        client.wait().expect("a drained job finishes");
        assert_eq!(control.status(), JobStatus::Finished);

        let (client, out2) = build(Some(&sp), None);
        client.wait().unwrap();
        let resumed = counts(&out2.snapshot());
        for k in 1000..1010 {
            assert!(!resumed.contains_key(&k), "key {k} was replayed");
        }
        for k in 0..KEYS {
            assert_eq!(resumed[&k].1, RECORDS / KEYS, "key {k}");
        }
    });
}
