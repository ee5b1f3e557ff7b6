//! `floe bench kafka-ceiling`: how fast the broker itself takes and gives
//! records on this machine, measured with Floe's plain Kafka client and no
//! job around it — the ceiling a Kafka → Floe → Kafka job can approach.

use std::time::Instant;

use floe_kafka::client::{Acks, Isolation, Producer};
use floe_kafka::testing::TestBroker;
use floe_kafka::{ClientConfig, KafkaCluster, TopicPartition};
use serde::Serialize;

/// The broker to measure: the one named (kept, with its address as its
/// name), or a Tansu broker started for the run (stopped when dropped).
fn broker(named: Option<&str>) -> anyhow::Result<(Option<TestBroker>, String, String)> {
    Ok(match named {
        Some(s) => (None, s.to_string(), s.to_string()),
        None => {
            let b = TestBroker::start()?;
            let s = b.bootstrap_servers().to_string();
            (Some(b), s, "tansu".to_string())
        }
    })
}

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
        let (_broker, servers, name) = broker(self.bootstrap_servers.as_deref())?;
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

/// `floe bench kafka-keyed-count`: the keyed-count job from a Kafka topic
/// to a Kafka topic (the `kafka-keyed-count` example's pipeline), bounded
/// at the input's end, timed end to end.
#[derive(Debug, Clone)]
pub struct KafkaKeyedCountBench {
    /// The broker; a Tansu broker is started when absent.
    pub bootstrap_servers: Option<String>,
    /// Input records (keys `i mod keys`).
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Partitions of the input and output topics.
    pub partitions: i32,
    /// Parallelism of every operator.
    pub parallelism: u32,
    /// The sink's guarantee.
    pub guarantee: floe_kafka::sink::DeliveryGuarantee,
    /// The state backend.
    pub backend: floe::prelude::StateBackendKind,
    /// Checkpointing and other configuration.
    pub config: floe::core::Configuration,
}

/// The JSON line of `floe bench kafka-keyed-count`.
#[derive(Debug, Serialize)]
pub struct KafkaKeyedCountReport {
    /// Always `kafka-keyed-count`.
    pub bench: &'static str,
    /// The address given, or `tansu` when self-started.
    pub broker: String,
    /// Input records.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Topic partitions.
    pub partitions: i32,
    /// Parallelism.
    pub parallelism: u32,
    /// `exactly-once`, `at-least-once` or `none`.
    pub delivery_guarantee: String,
    /// The state backend.
    pub backend: String,
    /// The job's run time, start to end of input and final commit.
    pub seconds: f64,
    /// Input records per second through the whole job.
    pub records_per_sec: f64,
    /// Input value bytes read per second.
    pub input_bytes_per_sec: f64,
    /// Output value bytes written per second.
    pub output_bytes_per_sec: f64,
    /// Records in the output topic a read-committed consumer sees
    /// (checked: equals `records` for exactly-once).
    pub output_records: u64,
    /// How fast the bench filled the input topic (the broker's produce
    /// rate with Floe's plain client, acks=all).
    pub fill_records_per_sec: f64,
    /// Peak resident memory of this process while the job ran (the
    /// input fill included, the output check after it and the broker
    /// excluded).
    pub peak_rss_bytes: u64,
    /// Completed checkpoints.
    pub checkpoints_completed: usize,
}

impl KafkaKeyedCountBench {
    /// Fills the input, runs the job, checks and reports.
    pub fn run(&self) -> anyhow::Result<KafkaKeyedCountReport> {
        use crate::examples::kafka_keyed_count::parse_key;
        use crate::examples::keyed_count::CountPerKey;
        use floe::prelude::*;
        use floe_kafka::sink::{KafkaRecordSerializationSchema, KafkaSink};
        use floe_kafka::source::{KafkaSource, OffsetsInitializer};
        use std::io::Write;

        let (_broker, servers, name) = broker(self.bootstrap_servers.as_deref())?;
        let config = ClientConfig::new(&servers)?;
        let tag = format!("{}-{}", std::process::id(), rand_tag());
        let (input, output) = (
            format!("floe-bench-in-{tag}"),
            format!("floe-bench-out-{tag}"),
        );
        let mut cluster = KafkaCluster::new(config.clone());
        cluster.create_topic(&input, self.partitions, 1, false)?;
        cluster.create_topic(&output, self.partitions, 1, false)?;

        let mut producer = Producer::new(config.clone(), Acks::All);
        let tps: Vec<TopicPartition> = (0..self.partitions)
            .map(|p| TopicPartition::new(input.clone(), p))
            .collect();
        let mut input_bytes = 0u64;
        let mut value = Vec::new();
        let started = Instant::now();
        for i in 0..self.records {
            value.clear();
            let _ = write!(value, "{}", i % self.keys);
            input_bytes += value.len() as u64;
            producer.send(&tps[(i % tps.len() as u64) as usize], None, Some(&value), 0);
            if producer.buffered_bytes() >= 1 << 20 {
                producer.flush()?;
            }
        }
        producer.flush()?;
        let fill_s = started.elapsed().as_secs_f64();

        let env = StreamEnvironment::with_configuration(self.config.clone());
        env.set_parallelism(self.parallelism);
        env.set_state_backend(self.backend);
        let source = KafkaSource::<u64>::builder()
            .set_bootstrap_servers(&servers)
            .set_topics([input.as_str()])
            .set_group_id(&format!("floe-bench-{tag}"))
            .set_starting_offsets(OffsetsInitializer::earliest())
            .set_bounded(OffsetsInitializer::latest())
            .set_value_only_deserializer(parse_key)
            .build()?;
        let schema = KafkaRecordSerializationSchema::builder()
            .set_topic(&output)
            .set_key_serializer(|(k, _): &(u64, u64), out: &mut Vec<u8>| {
                let _ = write!(out, "{k}");
            })
            .set_value_serializer(|(k, n): &(u64, u64), out: &mut Vec<u8>| {
                let _ = write!(out, "{k} {n}");
            })
            .build()?;
        let sink = KafkaSink::builder()
            .set_bootstrap_servers(&servers)
            .set_record_serializer(schema)
            .set_delivery_guarantee(self.guarantee)
            .set_transactional_id_prefix(&format!("floe-bench-{tag}"))
            .build()?;
        env.from_source(source, "Kafka Source")
            .map(|k: u64| (k, 1u64))
            .key_by(|(k, _): &(u64, u64)| *k)
            .process(CountPerKey::default())
            .name("Count per Key")
            .sink_to(sink, "Kafka Sink");
        let result = env.execute("KafkaKeyedCountBench")?;
        let seconds = result.net_runtime.as_secs_f64();
        // Before the check below, which holds the whole output in memory.
        let peak_rss_bytes = crate::peak_rss_bytes().unwrap_or(0);

        let log = floe_kafka::testing::read_log(&mut cluster, &output)?;
        let committed: Vec<&floe_kafka::testing::ReadRecord> =
            log.committed.values().flatten().collect();
        let output_bytes: u64 = committed
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
            .sum();
        let output_records = committed.len() as u64;
        if self.guarantee == floe_kafka::sink::DeliveryGuarantee::ExactlyOnce {
            anyhow::ensure!(
                output_records == self.records && log.open_transactions == 0,
                "exactly-once output has {output_records} records for {} inputs ({} transactions open)",
                self.records,
                log.open_transactions
            );
        }
        let done = result
            .checkpoints
            .iter()
            .filter(|c| c.status == floe::runtime::checkpoint::CheckpointStatus::Completed)
            .count();
        Ok(KafkaKeyedCountReport {
            bench: "kafka-keyed-count",
            broker: name,
            records: self.records,
            keys: self.keys,
            partitions: self.partitions,
            parallelism: self.parallelism,
            delivery_guarantee: self.guarantee.to_string(),
            backend: self.backend.to_string(),
            seconds,
            records_per_sec: self.records as f64 / seconds,
            input_bytes_per_sec: input_bytes as f64 / seconds,
            output_bytes_per_sec: output_bytes as f64 / seconds,
            output_records,
            fill_records_per_sec: self.records as f64 / fill_s,
            peak_rss_bytes,
            checkpoints_completed: done,
        })
    }
}

/// A short random tag, so topics of two runs on one broker differ.
fn rand_tag() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
