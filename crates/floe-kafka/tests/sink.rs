//! The Kafka sink in real jobs against a real broker: what a
//! read-committed consumer finally sees, decided by the marker-aware
//! reader, after failures and restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floe::prelude::*;
use floe::runtime::restart::RestartStrategy;
use floe_kafka::sink::{
    DeliveryGuarantee, KafkaRecordSerializationSchema, KafkaSink, display_bytes,
};
use floe_kafka::testing::{TestBroker, read_committed, read_log};

/// Fails once, the first time it sees record `at` after a checkpoint
/// completed, so the restart has something to restore.
#[derive(Clone)]
struct FailOnce {
    at: u64,
    failed: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
}

impl ProcessFunction<u64, u64> for FailOnce {
    fn process_element(
        &mut self,
        v: u64,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, u64>,
    ) -> anyhow::Result<()> {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        if seen >= self.at && !self.failed.swap(true, Ordering::SeqCst) {
            anyhow::bail!("injected failure after {seen} records");
        }
        out.collect(v);
        Ok(())
    }
}

/// Runs `records` numbers through a sink with `guarantee` to a 4-partition
/// topic at parallelism 2, failing once midway; returns the values a
/// read-committed consumer sees and the number of restarts.
fn run(
    guarantee: DeliveryGuarantee,
    records: u64,
    fail: bool,
) -> Option<(Vec<u64>, u32, TestBroker)> {
    let broker = TestBroker::start_or_skip("sink")?;
    broker.cluster().create_topic("out", 4, 1, false).unwrap();
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    env.set_config("floe.runtime.batch-size", "100");
    env.enable_checkpointing(Duration::from_millis(50));
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay: Duration::from_millis(10),
    });
    let sink = KafkaSink::<u64>::builder()
        .set_bootstrap_servers(broker.bootstrap_servers())
        .set_record_serializer(
            KafkaRecordSerializationSchema::builder()
                .set_topic("out")
                .set_key_serializer(|v: &u64, out: &mut Vec<u8>| {
                    out.extend_from_slice(&v.to_be_bytes())
                })
                .set_value_serializer(display_bytes)
                .build()
                .unwrap(),
        )
        .set_delivery_guarantee(guarantee)
        .set_transactional_id_prefix("sink-test")
        // Small requests: records reach the broker inside the open
        // transaction long before its checkpoint, so a failure leaves
        // some there for the restart to abort.
        .set_property("max.request.size", "256")
        .build()
        .unwrap();
    let fail_once = FailOnce {
        at: if fail { records * 11 / 20 } else { u64::MAX },
        failed: Arc::new(AtomicBool::new(false)),
        seen: Arc::new(AtomicU64::new(0)),
    };
    env.from_source(
        GeneratorSource::new(records, |i| i).with_rate(records as f64 / 1.5),
        "numbers",
    )
    .uid("numbers")
    .process(fail_once)
    .uid("fail-once")
    .sink_to(sink, "kafka")
    .uid("kafka");
    let result = env
        .execute("kafka-sink")
        .expect("the job recovers and finishes");
    let read = read_committed(&mut broker.cluster(), "out").unwrap();
    let mut values: Vec<u64> = read
        .values()
        .flatten()
        .map(|r| {
            String::from_utf8(r.value.clone().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    values.sort_unstable();
    Some((values, result.restarts, broker))
}

#[test]
fn exactly_once_sees_every_record_once_across_a_failure() {
    let Some((values, restarts, broker)) = run(DeliveryGuarantee::ExactlyOnce, 20_000, true) else {
        return;
    };
    assert_eq!(restarts, 1);
    assert_eq!(values, (0..20_000).collect::<Vec<_>>());
    // The failed attempt did write records after its last checkpoint;
    // they were aborted, not lost or shown, and no transaction is left
    // open to hold back read-committed consumers. (Decided from the log:
    // the test broker's last stable offset is not reliable.)
    let log = read_log(&mut broker.cluster(), "out").unwrap();
    assert!(
        log.hidden > 0,
        "the failure left no aborted records to drop"
    );
    assert_eq!(log.open_transactions, 0, "a transaction is still open");
}

#[test]
fn at_least_once_loses_nothing_across_a_failure() {
    let Some((values, restarts, _broker)) = run(DeliveryGuarantee::AtLeastOnce, 20_000, true)
    else {
        return;
    };
    assert_eq!(restarts, 1);
    let mut distinct = values.clone();
    distinct.dedup();
    assert_eq!(distinct, (0..20_000).collect::<Vec<_>>());
    assert!(values.len() >= 20_000);
}

#[test]
fn keyed_records_land_where_kafkas_partitioner_puts_them() {
    let Some((_, _, broker)) = run(DeliveryGuarantee::None, 2_000, false) else {
        return;
    };
    let read = read_committed(&mut broker.cluster(), "out").unwrap();
    let mut total = 0;
    for (partition, records) in &read {
        for r in records {
            let key = r.key.as_deref().unwrap();
            assert_eq!(floe_kafka::sink::partition_for_key(key, 4), *partition);
            total += 1;
        }
    }
    assert_eq!(total, 2_000);
}

#[test]
fn bad_sink_settings_are_refused_by_name() {
    let schema = || {
        KafkaRecordSerializationSchema::<u64>::builder()
            .set_topic("t")
            .set_value_serializer(display_bytes)
            .build()
            .unwrap()
    };
    let err =
        |b: floe_kafka::sink::KafkaSinkBuilder<u64>| b.build().err().expect("refused").to_string();
    let e = err(KafkaSink::builder().set_record_serializer(schema()));
    assert!(e.contains("bootstrap servers"), "{e}");
    let e = err(KafkaSink::builder()
        .set_bootstrap_servers("h:1")
        .set_record_serializer(schema())
        .set_property("linger.msec", "5"));
    assert!(e.contains("'linger.msec'"), "{e}");
    let e = err(KafkaSink::builder()
        .set_bootstrap_servers("h:1")
        .set_record_serializer(schema())
        .set_delivery_guarantee(DeliveryGuarantee::ExactlyOnce));
    assert!(e.contains("transactional id prefix"), "{e}");
    let e = err(KafkaSink::builder()
        .set_bootstrap_servers("h:1")
        .set_record_serializer(schema())
        .set_property("transaction.timeout.ms", "soon"));
    assert!(e.contains("transaction.timeout.ms='soon'"), "{e}");
    let e = KafkaRecordSerializationSchema::<u64>::builder()
        .set_value_serializer(display_bytes)
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("topic"), "{e}");
    assert!("exactly_once".parse::<DeliveryGuarantee>().is_ok());
    assert!(
        "twice"
            .parse::<DeliveryGuarantee>()
            .unwrap_err()
            .to_string()
            .contains("'twice'")
    );
}

#[test]
fn a_missing_topic_fails_the_job_naming_it() {
    let Some(broker) = TestBroker::start_or_skip("missing topic") else {
        return;
    };
    let env = StreamEnvironment::new();
    let sink = KafkaSink::<u64>::builder()
        .set_bootstrap_servers(broker.bootstrap_servers())
        .set_record_serializer(
            KafkaRecordSerializationSchema::builder()
                .set_topic("nowhere")
                .set_value_serializer(display_bytes)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    env.from_source(GeneratorSource::new(10, |i| i), "n")
        .sink_to(sink, "kafka");
    let Err(e) = env.execute("missing-topic") else {
        panic!("a sink to a missing topic must fail the job");
    };
    let e = e.to_string();
    assert!(e.contains("'nowhere'"), "{e}");
}

fn exactly_once_sink(broker: &TestBroker, prefix: &str) -> KafkaSink<u64> {
    KafkaSink::<u64>::builder()
        .set_bootstrap_servers(broker.bootstrap_servers())
        .set_record_serializer(
            KafkaRecordSerializationSchema::builder()
                .set_topic("out")
                .set_value_serializer(display_bytes)
                .build()
                .unwrap(),
        )
        .set_delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
        .set_transactional_id_prefix(prefix)
        .set_property("max.request.size", "512")
        .build()
        .unwrap()
}

fn savepoint_env(dir: &std::path::Path, parallelism: u32) -> StreamEnvironment {
    let env = StreamEnvironment::new();
    env.set_parallelism(parallelism);
    env.set_config("floe.runtime.batch-size", "50");
    env.set_config("state.savepoints.dir", &format!("file://{}", dir.display()));
    env.enable_checkpointing(Duration::from_millis(100));
    env
}

/// Stopped with a savepoint at parallelism 3 and resumed at 2: the
/// transactions the savepoint recorded are committed, what old subtask 2
/// left open (a planted transaction under its next id) is aborted by new
/// subtask 0, which inherits its ids, and every number is read once.
#[test]
fn rescaling_through_a_savepoint_commits_the_saved_and_aborts_the_lingering() {
    let Some(broker) = TestBroker::start_or_skip("rescale") else {
        return;
    };
    const N: u64 = 30_000;
    broker.cluster().create_topic("out", 4, 1, false).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let env = savepoint_env(dir.path(), 3);
    env.from_source(
        GeneratorSource::new(N, |i| i).with_rate(10_000.0),
        "numbers",
    )
    .uid("numbers")
    .sink_to(exactly_once_sink(&broker, "rescale"), "kafka")
    .uid("kafka");
    let client = env.execute_async("rescale-1").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let control = client.control();
    let trigger = control
        .trigger_savepoint(None, SavepointMode::Stop { drain: false })
        .unwrap();
    let savepoint = loop {
        match control.savepoint_status(&trigger).unwrap() {
            SavepointStatus::InProgress => std::thread::sleep(Duration::from_millis(20)),
            SavepointStatus::Completed { location } => break location,
            other => panic!("savepoint failed: {other:?}"),
        }
    };
    client.wait().unwrap();
    let id = floe::runtime::checkpoint::OpenedSnapshot::open(&savepoint)
        .unwrap()
        .metadata
        .checkpoint_id;

    // Old subtask 2's next transaction, left open with a record in it.
    let config = floe_kafka::ClientConfig::new(broker.bootstrap_servers()).unwrap();
    let mut planted = floe_kafka::client::Producer::transactional(
        config,
        &format!("rescale-2-{}", id + 1),
        60_000,
    )
    .unwrap();
    planted.begin_transaction();
    planted.send(
        &floe_kafka::TopicPartition::new("out", 1),
        None,
        Some(b"planted"),
        0,
    );
    planted.flush().unwrap();

    let env = savepoint_env(dir.path(), 2);
    env.set_restore_from_savepoint(&savepoint, false);
    env.from_source(GeneratorSource::new(N, |i| i), "numbers")
        .uid("numbers")
        .sink_to(exactly_once_sink(&broker, "rescale"), "kafka")
        .uid("kafka");
    env.execute("rescale-2").unwrap();

    let log = read_log(&mut broker.cluster(), "out").unwrap();
    let mut values: Vec<String> = log
        .committed
        .values()
        .flatten()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert!(!values.iter().any(|v| v == "planted"));
    let mut numbers: Vec<u64> = values.drain(..).map(|v| v.parse().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..N).collect::<Vec<_>>());
    assert_eq!(log.open_transactions, 0, "a transaction is still open");
    assert!(log.hidden >= 1, "the planted record was not dropped");
}
