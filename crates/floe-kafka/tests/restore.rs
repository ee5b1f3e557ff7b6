//! Offsets as split state: a restored Kafka source resumes exactly at its
//! checkpointed offsets — from a retained checkpoint, and through
//! savepoints while rescaling 2 → 3 → 2 — so the records read before and
//! after together are the input exactly once, in partition order.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use floe::connectors::CollectedRecords;
use floe::prelude::*;
use floe::runtime::checkpoint::OpenedSnapshot;
use floe::runtime::job_manager::JobClient;
use floe_kafka::TopicPartition;
use floe_kafka::source::decode_positions;
use floe_kafka::testing::TestBroker;

const PARTITIONS: i32 = 4;
const RECORDS: i64 = 2_000;

/// An unbounded job reading "orders" at `parallelism`, slowed down so
/// that checkpoints and savepoints fall mid-stream.
fn start(
    broker: &TestBroker,
    dir: &Path,
    parallelism: u32,
    restore: Option<&str>,
) -> (JobClient, CollectedRecords<Rec>) {
    let env = StreamEnvironment::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(Duration::from_millis(100));
    env.set_config(
        "state.checkpoints.dir",
        &format!("file://{}", dir.join("chk").display()),
    );
    env.set_config(
        "execution.checkpointing.externalized-checkpoint-retention",
        "RETAIN_ON_CANCELLATION",
    );
    env.set_config(
        "state.savepoints.dir",
        &format!("file://{}", dir.join("savepoints").display()),
    );
    if let Some(path) = restore {
        env.set_restore_from_savepoint(path, false);
    }
    let source = builder(broker, &["orders"])
        // Small fetches, so a poll's batch is small too.
        .set_property("max.partition.fetch.bytes", "2048")
        .build()
        .unwrap();
    let (sink, out) = CollectSink::new();
    env.from_source(source, "Kafka")
        .uid("kafka")
        .map(|r: Rec| {
            std::thread::sleep(Duration::from_micros(400));
            r
        })
        .sink_to(sink, "Collect");
    (env.execute_async("kafka-restore").unwrap(), out)
}

fn await_savepoint(control: &JobControl, trigger: &floe::runtime::TriggerId) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match control.savepoint_status(trigger).expect("known trigger") {
            SavepointStatus::InProgress => {}
            SavepointStatus::Completed { location } => return location,
            other => panic!("savepoint did not complete: {other:?}"),
        }
        assert!(Instant::now() < deadline, "savepoint never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the job with a savepoint once it emitted `at_least` records: the
/// source emits nothing after the savepoint's barrier.
fn stop_with_savepoint(client: JobClient, out: &CollectedRecords<Rec>, at_least: usize) -> String {
    wait_until(60, "records before the savepoint", || out.len() >= at_least);
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Stop { drain: false })
        .expect("trigger");
    let location = await_savepoint(&control, &trigger);
    client.wait().expect("a stopped job ends well");
    location
}

/// The saved positions of the source in a snapshot, by partition.
fn saved_offsets(path: &str) -> BTreeMap<TopicPartition, i64> {
    let restored = OpenedSnapshot::open(path).unwrap().load().unwrap();
    let op = &restored.operators["kafka"];
    let mut out = BTreeMap::new();
    for raw in op.raw.values() {
        for p in decode_positions(raw).unwrap() {
            assert!(
                out.insert(p.partition, p.next_offset).is_none(),
                "a partition saved twice"
            );
        }
    }
    out
}

#[test]
fn rescaling_2_3_2_through_savepoints_reads_every_record_once() {
    let Some(broker) = TestBroker::start_or_skip("rescale") else {
        return;
    };
    topic_with(&broker, "orders", PARTITIONS, RECORDS);
    let total = (PARTITIONS as i64 * RECORDS) as usize;
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let (r1, r2, r3, sp1, sp2) = with_timeout(180, move || {
        let (client, out1) = start(&broker, &dir_path, 2, None);
        let sp1 = stop_with_savepoint(client, &out1, total / 4);
        let (client, out2) = start(&broker, &dir_path, 3, Some(&sp1));
        let sp2 = stop_with_savepoint(client, &out2, total / 4);
        let (client, out3) = start(&broker, &dir_path, 2, Some(&sp2));
        let before = out1.len() + out2.len();
        wait_until(60, "the rest of the input", || before + out3.len() >= total);
        std::thread::sleep(Duration::from_millis(300));
        client.control().cancel();
        let _ = client.wait();
        drop(broker);
        (out1.snapshot(), out2.snapshot(), out3.snapshot(), sp1, sp2)
    });
    // Each run started exactly where the savepoint says.
    for (records, savepoint) in [(&r2, &sp1), (&r3, &sp2)] {
        let saved = saved_offsets(savepoint);
        assert_eq!(saved.len(), PARTITIONS as usize, "{saved:?}");
        for ((topic, p), recs) in by_partition(records) {
            assert_eq!(
                recs[0].0,
                saved[&TopicPartition::new(topic, p)],
                "first offset read after the restore"
            );
        }
    }
    let sizes = [r1.len(), r2.len(), r3.len()];
    assert!(
        sizes.iter().all(|n| *n > 0),
        "every run read some: {sizes:?}"
    );
    let all: Vec<Rec> = [r1, r2, r3].concat();
    assert_exactly(&all, "orders", PARTITIONS, 0..RECORDS);
}

fn latest_checkpoint(dir: &Path) -> PathBuf {
    let mut found = Vec::new();
    for job in std::fs::read_dir(dir.join("chk")).unwrap().flatten() {
        for chk in std::fs::read_dir(job.path()).unwrap().flatten() {
            let name = chk.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
                && chk.path().join("_metadata").exists()
            {
                found.push((n, chk.path()));
            }
        }
    }
    found.sort();
    found.pop().expect("a retained checkpoint").1
}

#[test]
fn a_restored_checkpoint_resumes_exactly_at_its_offsets() {
    let Some(broker) = TestBroker::start_or_skip("checkpoint-restore") else {
        return;
    };
    topic_with(&broker, "orders", PARTITIONS, RECORDS);
    let total = (PARTITIONS as i64 * RECORDS) as usize;
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let (r1, r2, saved) = with_timeout(180, move || {
        let (client, out1) = start(&broker, &dir_path, 2, None);
        // Cancel mid-stream, after some checkpoints completed.
        wait_until(60, "a completed checkpoint mid-stream", || {
            out1.len() >= total / 3
                && client
                    .control()
                    .checkpoint_stats()
                    .iter()
                    .any(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
        });
        client.control().cancel();
        let _ = client.wait();
        let checkpoint = latest_checkpoint(&dir_path);
        let checkpoint = checkpoint.to_str().unwrap().to_string();
        let saved = saved_offsets(&checkpoint);
        let (client, out2) = start(&broker, &dir_path, 2, Some(&checkpoint));
        let expected: i64 = saved.values().map(|o| RECORDS - o).sum();
        wait_until(60, "the rest of the input", || {
            out2.len() as i64 >= expected
        });
        std::thread::sleep(Duration::from_millis(300));
        client.control().cancel();
        let _ = client.wait();
        (out1.snapshot(), out2.snapshot(), saved)
    });
    assert_eq!(saved.len(), PARTITIONS as usize);
    assert!(
        saved.values().any(|o| *o > 0 && *o < RECORDS),
        "the checkpoint is mid-stream: {saved:?}"
    );
    // Before the checkpoint: exactly offsets 0..saved, once each (the
    // first run may have gone on past it; those records are replayed).
    let before: Vec<Rec> = r1
        .into_iter()
        .filter(|(t, p, o, _)| *o < saved[&TopicPartition::new(t.clone(), *p)])
        .collect();
    // After the restore: exactly saved..end.
    for ((topic, p), recs) in by_partition(&r2) {
        assert_eq!(recs[0].0, saved[&TopicPartition::new(topic, p)]);
    }
    let all: Vec<Rec> = [before, r2].concat();
    assert_exactly(&all, "orders", PARTITIONS, 0..RECORDS);
}
