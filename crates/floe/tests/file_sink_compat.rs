//! Snapshots written by the earlier file sink — one part file per
//! checkpoint through the two-phase-commit framework, its transactions in
//! operator state `two-phase-commit-transactions` — still restore into the
//! rolling `FileSink`: their pending files are committed where they were
//! written, and the new sink goes on from there, every record once.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::with_timeout;
use floe::connectors::FileTransaction;
use floe::prelude::*;

const RECORDS: u64 = 1_000_000;

/// The earlier sink's file handling, as far as its snapshots show it: an
/// in-progress file per transaction, renamed `.part-<s>-<n>-<t>.pending`
/// at checkpoint `n`, recorded with its committed name. It never commits,
/// like a job whose completion notification never arrived.
#[derive(Clone)]
struct EarlierFileSink {
    dir: PathBuf,
    subtask: u32,
}

impl TwoPhaseCommitSink<u64> for EarlierFileSink {
    type Transaction = FileTransaction;

    fn open(&mut self, info: &TaskInfo, _: Option<u64>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.subtask = info.subtask_index;
        Ok(())
    }

    fn begin_transaction(&mut self) -> anyhow::Result<FileTransaction> {
        let name = format!(".part-{}-0badf00d-1.inprogress", self.subtask);
        std::fs::File::create(self.dir.join(&name))?;
        Ok(FileTransaction {
            in_progress: name,
            pending: None,
            committed: None,
        })
    }

    fn write(&mut self, txn: &mut FileTransaction, records: &mut Vec<u64>) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join(&txn.in_progress))?;
        for r in records.drain(..) {
            writeln!(f, "{r}")?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut FileTransaction, id: u64) -> anyhow::Result<()> {
        let committed = format!("part-{}-{id:010}-0badf00d", self.subtask);
        let pending = format!(".{committed}.pending");
        std::fs::rename(self.dir.join(&txn.in_progress), self.dir.join(&pending))?;
        txn.pending = Some(pending);
        txn.committed = Some(committed);
        Ok(())
    }

    fn commit(&mut self, _: FileTransaction) -> anyhow::Result<()> {
        Ok(())
    }

    fn abort(&mut self, _: FileTransaction) -> anyhow::Result<()> {
        Ok(())
    }

    fn location(&self) -> Option<String> {
        Some(self.dir.display().to_string())
    }
}

fn env(dir: &Path, interval: Duration, restore: Option<&str>) -> StreamEnvironment {
    let env = StreamEnvironment::new();
    env.set_parallelism(1);
    env.enable_checkpointing(interval);
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.join("chk").display()),
    );
    env.set_config(
        "state.savepoints.dir",
        &format!("file://{}", dir.join("savepoints").display()),
    );
    if let Some(sp) = restore {
        env.set_restore_from_savepoint(sp, false);
    }
    env
}

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
    let _ = client.wait();
    location.strip_prefix("file://").unwrap().to_string()
}

/// Visible files' records, and hidden files' names, directly in `dir`.
fn scan(dir: &Path) -> (Vec<u64>, Vec<String>) {
    let (mut records, mut hidden) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
        } else {
            let text = std::fs::read_to_string(e.path()).unwrap();
            records.extend(text.lines().map(|l| l.parse::<u64>().unwrap()));
        }
    }
    (records, hidden)
}

#[test]
fn a_savepoint_of_the_earlier_file_sink_restores_into_the_rolling_one() {
    with_timeout(120, || {
        let dir = tempfile::tempdir().unwrap();
        let (out1, out2) = (dir.path().join("out1"), dir.path().join("out2"));
        // Only the savepoint: its transaction stays pending in out1.
        let e = env(dir.path(), Duration::from_secs(3600), None);
        e.from_source(
            GeneratorSource::new(RECORDS, |i| i).with_rate(5000.0),
            "Generator",
        )
        .uid("generator")
        .sink_to(
            TwoPhaseCommitSinkWriter::new(EarlierFileSink {
                dir: std::path::absolute(&out1).unwrap(),
                subtask: 0,
            }),
            "File Sink",
        )
        .uid("file-sink");
        let client = e.execute_async("earlier").unwrap();
        let started = Instant::now();
        let sp = savepoint_and_cancel(client, || started.elapsed() > Duration::from_millis(300));
        let (committed, hidden) = scan(&out1);
        assert!(committed.is_empty());
        assert!(hidden.iter().any(|n| n.ends_with(".pending")), "{hidden:?}");

        let e = env(dir.path(), Duration::from_millis(100), Some(&sp));
        e.from_source(
            GeneratorSource::new(RECORDS, |i| i).with_rate(5000.0),
            "Generator",
        )
        .uid("generator")
        .sink_to(
            FileSink::new(&out2)
                .with_rolling_policy(OnCheckpointRollingPolicy::build())
                .with_bucket_assigner(BasePathBucketAssigner),
            "File Sink",
        )
        .uid("file-sink");
        let client = e.execute_async("rolling").unwrap();
        savepoint_and_cancel(client, || out2.is_dir() && !scan(&out2).0.is_empty());

        let (mut all, hidden) = scan(&out1);
        assert!(
            hidden.iter().all(|n| !n.ends_with(".pending")),
            "the earlier sink's pending file was not committed: {hidden:?}"
        );
        let first = all.len();
        all.extend(scan(&out2).0);
        all.sort_unstable();
        assert!(first > 0 && all.len() > first);
        assert_eq!(
            all,
            (0..all.len() as u64).collect::<Vec<_>>(),
            "records missing or repeated"
        );
    });
}
