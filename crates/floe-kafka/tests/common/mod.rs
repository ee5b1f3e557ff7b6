//! Helpers shared by the Kafka source tests (each file uses a subset).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use floe::runtime::{SourceReader, SourceStatus, TaskInfo};
use floe_kafka::client::{Acks, Producer};
use floe_kafka::source::{ConsumerRecord, KafkaSource, KafkaSourceBuilder};
use floe_kafka::testing::TestBroker;
use floe_kafka::{ClientConfig, TopicPartition};

/// What the tests' jobs emit per Kafka record: topic, partition, offset,
/// value.
pub type Rec = (String, i32, i64, String);

/// A deserializer keeping where each record came from.
pub fn located(r: &ConsumerRecord<'_>) -> anyhow::Result<Rec> {
    Ok((
        r.topic.to_string(),
        r.partition,
        r.offset,
        String::from_utf8(r.value.unwrap_or_default().to_vec())?,
    ))
}

/// A builder for `topics` on `broker` with the locating deserializer.
pub fn builder(broker: &TestBroker, topics: &[&str]) -> KafkaSourceBuilder<Rec> {
    KafkaSource::<Rec>::builder()
        .set_bootstrap_servers(broker.bootstrap_servers())
        .set_topics(topics.iter().copied())
        .set_deserializer(located)
}

/// The value of record `i` of a partition.
pub fn value(topic: &str, partition: i32, i: i64) -> String {
    format!("{topic}/{partition}/{i}")
}

/// Writes `count` records to each of `partitions` of `topic`, numbered
/// from `from` (offset = number when the partition was empty), record `i`
/// stamped `1_000 + i`.
pub fn produce(broker: &TestBroker, topic: &str, partitions: i32, from: i64, count: i64) {
    let mut p = Producer::new(
        ClientConfig::new(broker.bootstrap_servers()).unwrap(),
        Acks::All,
    );
    for i in from..from + count {
        for partition in 0..partitions {
            let tp = TopicPartition::new(topic, partition);
            let v = value(topic, partition, i);
            p.send(
                &tp,
                Some(format!("k{i}").as_bytes()),
                Some(v.as_bytes()),
                1_000 + i,
            );
        }
        if (i - from) % 500 == 499 {
            p.flush().unwrap();
        }
    }
    p.flush().unwrap();
}

/// Creates `topic` and fills it.
pub fn topic_with(broker: &TestBroker, topic: &str, partitions: i32, count: i64) {
    broker
        .cluster()
        .create_topic(topic, partitions, 1, false)
        .unwrap();
    produce(broker, topic, partitions, 0, count);
}

/// Records by partition, in arrival order.
pub fn by_partition(records: &[Rec]) -> BTreeMap<(String, i32), Vec<(i64, String)>> {
    let mut out: BTreeMap<(String, i32), Vec<(i64, String)>> = BTreeMap::new();
    for (t, p, o, v) in records {
        out.entry((t.clone(), *p))
            .or_default()
            .push((*o, v.clone()));
    }
    out
}

/// Asserts that `records` hold, per partition and in order, exactly the
/// records numbered `range` of each of `partitions` of `topic`.
pub fn assert_exactly(records: &[Rec], topic: &str, partitions: i32, range: std::ops::Range<i64>) {
    let got = by_partition(records);
    for p in 0..partitions {
        let expected: Vec<(i64, String)> = range.clone().map(|i| (i, value(topic, p, i))).collect();
        let actual = got
            .get(&(topic.to_string(), p))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            actual.len(),
            expected.len(),
            "{topic}-{p}: {} records, expected {}",
            actual.len(),
            expected.len()
        );
        assert_eq!(actual, expected, "{topic}-{p}");
    }
    let others: Vec<_> = got.keys().filter(|(t, _)| t != topic).collect();
    assert!(others.is_empty(), "records of other topics: {others:?}");
}

/// The identity of subtask `index` of `parallelism` of a test source.
pub fn info(index: u32, parallelism: u32) -> TaskInfo {
    TaskInfo {
        job_id: floe::core::JobId::from_u128(1),
        job_name: "kafka-test".into(),
        operator_name: "Kafka".into(),
        uid: "kafka".into(),
        subtask_index: index,
        parallelism,
        max_parallelism: 128,
    }
}

/// An opened reader of subtask `index` of `parallelism`.
pub fn reader(
    source: &KafkaSource<Rec>,
    index: u32,
    parallelism: u32,
) -> Box<dyn SourceReader<Rec>> {
    use floe::runtime::Source;
    let info = info(index, parallelism);
    let mut r = source.create_reader(&info).unwrap();
    r.open(&info).unwrap();
    r
}

/// Polls `reader` until it has `n` records (or finished), within 20 s.
pub fn read_n(reader: &mut dyn SourceReader<Rec>, n: usize) -> (Vec<Rec>, SourceStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        let status = reader.poll_next(&mut batch, 1000).unwrap();
        out.extend(batch);
        if out.len() >= n || status == SourceStatus::Finished {
            return (out, status);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records within 20 s",
            out.len()
        );
    }
}

/// Polls a bounded reader to its end, within 20 s.
pub fn read_to_end(reader: &mut dyn SourceReader<Rec>) -> Vec<Rec> {
    let (out, status) = read_n(reader, usize::MAX);
    assert_eq!(status, SourceStatus::Finished);
    out
}

/// Runs `f` on its own thread and fails the test if it does not return
/// within `secs` seconds.
pub fn with_timeout<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {secs} s (hang?)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("closure returned without sending"),
        },
    }
}

/// Waits until `cond` holds, within `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
