//! The Kafka source in real Floe jobs against a real broker: every record
//! exactly once and in partition order at any parallelism.

mod common;

use common::*;
use floe::prelude::*;
use floe_kafka::OffsetsInitializer;
use floe_kafka::testing::TestBroker;

#[test]
fn every_record_once_in_partition_order_at_parallelism_1_2_3() {
    let Some(broker) = TestBroker::start_or_skip("parallelism") else {
        return;
    };
    topic_with(&broker, "orders", 4, 1_500);
    for parallelism in 1..=3 {
        let source = builder(&broker, &["orders"])
            .set_bounded(OffsetsInitializer::latest())
            .build()
            .unwrap();
        let out = with_timeout(60, move || {
            let env = StreamEnvironment::new();
            env.set_parallelism(parallelism);
            let (sink, out) = CollectSink::new();
            env.from_source(source, "Kafka").sink_to(sink, "Collect");
            env.execute("kafka-parallelism").unwrap();
            out
        });
        assert_exactly(&out.snapshot(), "orders", 4, 0..1_500);
    }
}

use std::collections::BTreeMap;
use std::time::Duration;

use floe::connectors::CollectedRecords;
use floe::runtime::job_manager::JobClient;
use floe_kafka::client::{Acks, Producer};
use floe_kafka::{ClientConfig, KafkaError, KafkaSource, TopicPartition};

fn checkpointed_env(dir: &std::path::Path, parallelism: u32) -> StreamEnvironment {
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

fn run_unbounded(
    env: &StreamEnvironment,
    source: floe_kafka::KafkaSource<Rec>,
) -> (JobClient, CollectedRecords<Rec>) {
    let (sink, out) = CollectSink::new();
    env.from_source(source, "Kafka")
        .uid("kafka")
        .sink_to(sink, "Collect");
    (env.execute_async("kafka-job").unwrap(), out)
}

fn cancel(client: JobClient) {
    client.control().cancel();
    let _ = client.wait();
}

#[test]
fn checkpointed_offsets_are_committed_to_the_group() {
    let Some(broker) = TestBroker::start_or_skip("commit") else {
        return;
    };
    topic_with(&broker, "orders", 4, 100);
    let dir = tempfile::tempdir().unwrap();
    let source = builder(&broker, &["orders"])
        .set_group_id("monitoring")
        .build()
        .unwrap();
    let committed = with_timeout(60, move || {
        let env = checkpointed_env(dir.path(), 2);
        let (client, out) = run_unbounded(&env, source);
        wait_until(30, "every record", || out.len() >= 400);
        let mut cluster = broker.cluster();
        let all: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("orders", p)).collect();
        let mut committed = BTreeMap::new();
        wait_until(30, "offsets committed after a checkpoint", || {
            committed = cluster.fetch_committed_offsets("monitoring", &all).unwrap();
            committed.len() == 4 && committed.values().all(|o| *o == 100)
        });
        cancel(client);
        committed
    });
    assert_eq!(committed.len(), 4);
}

#[test]
fn no_commits_without_a_group_or_when_switched_off() {
    let Some(broker) = TestBroker::start_or_skip("no-commit") else {
        return;
    };
    let err = builder(&broker, &["orders"])
        .set_property("commit.offsets.on.checkpoint", "true")
        .build()
        .err()
        .expect("commits need a group");
    assert!(
        err.to_string().contains("commit.offsets.on.checkpoint"),
        "{err}"
    );
    topic_with(&broker, "orders", 1, 10);
    let dir = tempfile::tempdir().unwrap();
    let source = builder(&broker, &["orders"])
        .set_group_id("quiet")
        .set_property("commit.offsets.on.checkpoint", "false")
        .build()
        .unwrap();
    let committed = with_timeout(60, move || {
        let env = checkpointed_env(dir.path(), 1);
        let (client, out) = run_unbounded(&env, source);
        wait_until(30, "every record", || out.len() >= 10);
        wait_until(30, "a checkpoint", || {
            client.control().checkpoint_stats().len() >= 3
        });
        cancel(client);
        broker
            .cluster()
            .fetch_committed_offsets("quiet", &[TopicPartition::new("orders", 0)])
            .unwrap()
    });
    assert!(committed.is_empty(), "{committed:?}");
}

#[test]
fn a_topic_created_while_running_is_read_from_its_earliest_offset() {
    let Some(broker) = TestBroker::start_or_skip("discovery") else {
        return;
    };
    topic_with(&broker, "ev-a", 2, 50);
    broker.cluster().create_topic("other", 1, 1, false).unwrap();
    produce(&broker, "other", 1, 0, 5);
    let dir = tempfile::tempdir().unwrap();
    let source = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers(broker.bootstrap_servers())
        .set_topic_pattern("ev-.*")
        .set_deserializer(located)
        .set_property("partition.discovery.interval.ms", "200")
        .build()
        .unwrap();
    let records = with_timeout(60, move || {
        let env = checkpointed_env(dir.path(), 2);
        let (client, out) = run_unbounded(&env, source);
        wait_until(30, "ev-a", || out.len() >= 100);
        topic_with(&broker, "ev-b", 3, 40);
        wait_until(30, "ev-b, discovered", || out.len() >= 220);
        std::thread::sleep(Duration::from_millis(300));
        cancel(client);
        out.snapshot()
    });
    let (a, b): (Vec<Rec>, Vec<Rec>) = records.into_iter().partition(|r| r.0 == "ev-a");
    assert_exactly(&a, "ev-a", 2, 0..50);
    assert_exactly(&b, "ev-b", 3, 0..40);
}

#[test]
fn after_a_restore_a_new_topic_is_read_from_earliest_and_old_ones_resume() {
    let Some(broker) = TestBroker::start_or_skip("discovery-restore") else {
        return;
    };
    topic_with(&broker, "ev-a", 2, 50);
    let dir = tempfile::tempdir().unwrap();
    let make = |servers: &str| {
        KafkaSource::<Rec>::builder()
            .set_bootstrap_servers(servers)
            .set_topic_pattern("ev-.*")
            .set_deserializer(located)
            // Only what is written after a fresh start: a restore must not
            // apply it to partitions it has no offset for.
            .set_starting_offsets(OffsetsInitializer::latest())
            .set_property("partition.discovery.interval.ms", "-1")
            .build()
            .unwrap()
    };
    let first = make(broker.bootstrap_servers());
    let second = make(broker.bootstrap_servers());
    let (r1, r2) = with_timeout(90, move || {
        let env = checkpointed_env(dir.path(), 2);
        let (client, out1) = run_unbounded(&env, first);
        // The source starts at the end; what is written now is read.
        std::thread::sleep(Duration::from_millis(500));
        produce(&broker, "ev-a", 2, 50, 10);
        wait_until(30, "the new ev-a records", || out1.len() >= 20);
        let control = client.control();
        let trigger = control
            .trigger_savepoint(None, SavepointMode::Stop { drain: false })
            .unwrap();
        let savepoint = loop {
            match control.savepoint_status(&trigger).unwrap() {
                SavepointStatus::InProgress => std::thread::sleep(Duration::from_millis(20)),
                SavepointStatus::Completed { location } => break location,
                other => panic!("{other:?}"),
            }
        };
        client.wait().unwrap();
        produce(&broker, "ev-a", 2, 60, 10);
        topic_with(&broker, "ev-c", 2, 30);
        let env = checkpointed_env(dir.path(), 3);
        env.set_restore_from_savepoint(&savepoint, false);
        let (client, out2) = run_unbounded(&env, second);
        wait_until(30, "ev-a's rest and all of ev-c", || out2.len() >= 20 + 60);
        std::thread::sleep(Duration::from_millis(300));
        cancel(client);
        (out1.snapshot(), out2.snapshot())
    });
    assert_exactly(&r1, "ev-a", 2, 50..60);
    let (a, c): (Vec<Rec>, Vec<Rec>) = r2.into_iter().partition(|r| r.0 == "ev-a");
    assert_exactly(&a, "ev-a", 2, 60..70);
    assert_exactly(&c, "ev-c", 2, 0..30);
}

/// Emits each record's offset with the timestamp the stream gave it.
#[derive(Clone)]
struct Stamps;

impl ProcessFunction<Rec, (i64, Option<i64>)> for Stamps {
    fn process_element(
        &mut self,
        value: Rec,
        ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, (i64, Option<i64>)>,
    ) -> anyhow::Result<()> {
        out.collect((value.2, ctx.timestamp()));
        Ok(())
    }
}

#[test]
fn kafka_timestamps_drive_per_partition_watermarks() {
    let Some(broker) = TestBroker::start_or_skip("event-time") else {
        return;
    };
    // Partition 0 lives around t = 1 s, partition 1 around t = 100 s: a
    // watermark per subtask would make one of them late, a watermark per
    // partition (split) keeps both on time.
    broker
        .cluster()
        .create_topic("clicks", 2, 1, false)
        .unwrap();
    let mut p = Producer::new(
        ClientConfig::new(broker.bootstrap_servers()).unwrap(),
        Acks::All,
    );
    for i in 0..300i64 {
        for (partition, base) in [(0, 1_000), (1, 100_000)] {
            let v = value("clicks", partition, i);
            p.send(
                &TopicPartition::new("clicks", partition),
                None,
                Some(v.as_bytes()),
                base + i,
            );
        }
        if i % 50 == 49 {
            p.flush().unwrap();
        }
    }
    p.flush().unwrap();
    let source = || {
        builder(&broker, &["clicks"])
            .set_bounded(OffsetsInitializer::latest())
            .set_property("max.partition.fetch.bytes", "512")
            .build()
            .unwrap()
    };
    let (stamps, counts) = (source(), source());
    let (stamps, counts) = with_timeout(60, move || {
        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        let (sink, stamped) = CollectSink::new();
        env.from_source_with_watermarks(
            stamps,
            WatermarkStrategy::for_monotonous_timestamps(),
            "Kafka",
        )
        .process(Stamps)
        .sink_to(sink, "Collect");
        env.execute("kafka-stamps").unwrap();

        let env = StreamEnvironment::new();
        env.set_parallelism(1);
        let (sink, counted) = CollectSink::new();
        env.from_source_with_watermarks(
            counts,
            WatermarkStrategy::for_monotonous_timestamps(),
            "Kafka",
        )
        .map(|r: Rec| (r.1, 1u64))
        .key_by(|r: &(i32, u64)| r.0)
        .window(TumblingWindows::event_time(Duration::from_secs(10)))
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink_to(sink, "Collect");
        env.execute("kafka-windows").unwrap();
        (stamped.snapshot(), counted.snapshot())
    });
    assert_eq!(stamps.len(), 600);
    for (offset, ts) in &stamps {
        let base = if ts.unwrap() >= 100_000 {
            100_000
        } else {
            1_000
        };
        assert_eq!(*ts, Some(base + offset), "the Kafka timestamp, kept");
    }
    let mut counts = counts;
    counts.sort();
    assert_eq!(counts, [(0, 300), (1, 300)], "no record was late");
}

#[test]
fn bad_input_fails_clearly() {
    // An unknown or unparsable property, a missing setting: at build.
    let err = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers("localhost:9092")
        .set_topics(["t"])
        .set_deserializer(located)
        .set_property("fetch.max.wait.msec", "5")
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, KafkaError::UnknownProperty(k) if k == "fetch.max.wait.msec"),
        "{err}"
    );
    let err = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers("localhost:9092")
        .set_topics(["t"])
        .set_deserializer(located)
        .set_property("isolation.level", "dirty")
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("isolation.level"), "{err}");
    let err = KafkaSource::<Rec>::builder()
        .set_topics(["t"])
        .set_deserializer(located)
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(err, KafkaError::MissingSetting(s) if s.contains("bootstrap")),
        "{err}"
    );
    let err = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers("localhost:9092")
        .set_deserializer(located)
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(err, KafkaError::MissingSetting(s) if s.contains("set_topics")),
        "{err}"
    );
    let err = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers("localhost:9092")
        .set_topic_pattern("(unclosed")
        .set_deserializer(located)
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("(unclosed"), "{err}");

    // A refused connection: the job fails, naming the broker.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = KafkaSource::<Rec>::builder()
        .set_bootstrap_servers(&format!("127.0.0.1:{port}"))
        .set_topics(["t"])
        .set_deserializer(located)
        .build()
        .unwrap();
    let err = with_timeout(60, move || {
        let env = StreamEnvironment::new();
        let (sink, _out) = CollectSink::new();
        env.from_source(source, "Kafka").sink_to(sink, "Collect");
        env.execute("kafka-refused").unwrap_err()
    });
    assert!(
        format!("{err:#}").contains(&format!("127.0.0.1:{port}")),
        "{err:#}"
    );

    // An unknown topic: the job fails, naming the topic.
    let Some(broker) = TestBroker::start_or_skip("bad-input") else {
        return;
    };
    let source = builder(&broker, &["missing-topic"]).build().unwrap();
    let err = with_timeout(60, move || {
        let env = StreamEnvironment::new();
        let (sink, _out) = CollectSink::new();
        env.from_source(source, "Kafka").sink_to(sink, "Collect");
        env.execute("kafka-unknown-topic").unwrap_err()
    });
    assert!(format!("{err:#}").contains("missing-topic"), "{err:#}");
}
