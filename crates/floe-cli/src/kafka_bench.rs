//! `floe bench kafka-ceiling`: how fast the broker itself takes and gives
//! records on this machine, measured with Floe's plain Kafka client and no
//! job around it — the ceiling a Kafka → Floe → Kafka job can approach.

use std::time::Instant;

use floe_kafka::client::{Acks, Isolation, Producer};
use floe_kafka::testing::TestBroker;
use floe_kafka::{ClientConfig, KafkaCluster, TopicPartition};
use serde::Serialize;

/// What the ceiling measures.
#[derive(Debug, Clone)]
pub struct KafkaCeiling {
    /// The broker (`host:port,…`); a Tansu test broker is started when
    /// absent.
    pub bootstrap_servers: Option<String>,
    /// Records to write, then read.
    pub records: u64,
    /// Partitions of the fresh topic.
    pub partitions: i32,
    /// Bytes per record value.
    pub value_bytes: usize,
}

/// The JSON line.
#[derive(Debug, Serialize)]
pub struct KafkaCeilingReport {
    /// Always `kafka-ceiling`.
    pub bench: &'static str,
    /// Which broker: the address given, or `tansu` when self-started.
    pub broker: String,
    /// Records written and read.
    pub records: u64,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Produce (acks=all, 1 MiB requests): records per second.
    pub produce_records_per_s: f64,
    /// Produce: value megabytes per second.
    pub produce_mb_per_s: f64,
    /// Fetch of the whole topic: records per second.
    pub consume_records_per_s: f64,
    /// Fetch: value megabytes per second.
    pub consume_mb_per_s: f64,
}

impl KafkaCeiling {
    /// Writes the records, reads them back, and reports both rates.
    pub fn run(&self) -> anyhow::Result<KafkaCeilingReport> {
        let (_broker, servers, name) = match &self.bootstrap_servers {
            Some(s) => (None, s.clone(), s.clone()),
            None => {
                let b = TestBroker::start()?;
                let s = b.bootstrap_servers().to_string();
                (Some(b), s, "tansu".to_string())
            }
        };
        let config = ClientConfig::new(&servers)?;
        let topic = format!("floe-ceiling-{}", std::process::id());
        let mut cluster = KafkaCluster::new(config.clone());
        cluster.create_topic(&topic, self.partitions, 1, false)?;
        let tps: Vec<TopicPartition> = (0..self.partitions)
            .map(|p| TopicPartition::new(topic.clone(), p))
            .collect();

        let value = vec![b'x'; self.value_bytes];
        let mut producer = Producer::new(config, Acks::All);
        let started = Instant::now();
        for i in 0..self.records {
            producer.send(&tps[(i % tps.len() as u64) as usize], None, Some(&value), 0);
            if producer.buffered_bytes() >= 1 << 20 {
                producer.flush()?;
            }
        }
        producer.flush()?;
        let produce_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut read = 0u64;
        let mut offsets: Vec<i64> = vec![0; tps.len()];
        cluster.refresh_metadata(Some(std::slice::from_ref(&topic)))?;
        let mut by_leader: std::collections::BTreeMap<i32, Vec<usize>> = Default::default();
        for (i, tp) in tps.iter().enumerate() {
            by_leader.entry(cluster.leader_of(tp)?).or_default().push(i);
        }
        while read < self.records {
            let mut fetched = Vec::new();
            for (leader, indexes) in &by_leader {
                let asked: Vec<(TopicPartition, i64)> = indexes
                    .iter()
                    .map(|&i| (tps[i].clone(), offsets[i]))
                    .collect();
                fetched.extend(cluster.fetch(
                    *leader,
                    &asked,
                    100,
                    1,
                    50 << 20,
                    4 << 20,
                    Isolation::ReadUncommitted,
                )?);
            }
            for f in fetched {
                if let Some(e) = f.error {
                    anyhow::bail!("fetch of {} failed: {e}", f.tp);
                }
                let mut rest = &f.records[..];
                while rest.len() >= 61 {
                    let len = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
                    let base = i64::from_be_bytes(rest[0..8].try_into().unwrap());
                    let count = i32::from_be_bytes(rest[57..61].try_into().unwrap()) as i64;
                    read += count as u64;
                    offsets[f.tp.partition as usize] = base + count;
                    rest = &rest[12 + len..];
                }
            }
        }
        let consume_s = started.elapsed().as_secs_f64();
        let mb = (self.records as f64 * self.value_bytes as f64) / 1e6;
        Ok(KafkaCeilingReport {
            bench: "kafka-ceiling",
            broker: name,
            records: self.records,
            partitions: self.partitions,
            value_bytes: self.value_bytes,
            produce_records_per_s: self.records as f64 / produce_s,
            produce_mb_per_s: mb / produce_s,
            consume_records_per_s: self.records as f64 / consume_s,
            consume_mb_per_s: mb / consume_s,
        })
    }
}
