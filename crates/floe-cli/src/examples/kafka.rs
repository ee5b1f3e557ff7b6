//! Kafka in the examples: the flags every Kafka example shares and the
//! source and sink they build from them.

use clap::Args;
use floe::prelude::*;
use floe_kafka::sink::{DeliveryGuarantee, KafkaRecordSerializationSchema, KafkaSink};
use floe_kafka::source::{KafkaSource, OffsetsInitializer};

/// Where the cluster is and what the sink promises.
#[derive(Debug, Clone, Args)]
pub struct KafkaFlags {
    /// The Kafka cluster (host:port,…).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// The consumer group offsets are committed to (for monitoring).
    #[arg(long)]
    pub group_id: Option<String>,
    /// What the Kafka sink promises after failures.
    #[arg(long, default_value = "exactly-once", value_parser = parse_guarantee)]
    pub delivery_guarantee: DeliveryGuarantee,
    /// The prefix of the sink's transactional ids (exactly-once); default:
    /// the example's name and output topic.
    #[arg(long)]
    pub transactional_id_prefix: Option<String>,
}

fn parse_guarantee(s: &str) -> Result<DeliveryGuarantee, String> {
    s.parse().map_err(|e: floe_kafka::KafkaError| e.to_string())
}

impl KafkaFlags {
    fn servers(&self, what: &str) -> anyhow::Result<&str> {
        self.bootstrap_servers
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{what} needs --bootstrap-servers"))
    }

    /// A source of `topic`'s values, parsed by `parse`; bounded at the end
    /// offsets found at start if `bounded`.
    pub fn source<T: Send + 'static>(
        &self,
        topic: &str,
        default_group: &str,
        bounded: bool,
        parse: impl Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<KafkaSource<T>> {
        let mut b = KafkaSource::<T>::builder()
            .set_bootstrap_servers(self.servers("--kafka input")?)
            .set_topics([topic])
            .set_group_id(self.group_id.as_deref().unwrap_or(default_group))
            .set_starting_offsets(OffsetsInitializer::earliest())
            .set_value_only_deserializer(parse);
        if bounded {
            b = b.set_bounded(OffsetsInitializer::latest());
        }
        Ok(b.build()?)
    }

    /// A sink writing `<a> <b>` values keyed by `a` to `topic`.
    pub fn pairs_sink<A, B>(
        &self,
        topic: &str,
        default_prefix: &str,
    ) -> anyhow::Result<KafkaSink<(A, B)>>
    where
        A: std::fmt::Display + Send + 'static,
        B: std::fmt::Display + Send + 'static,
    {
        use std::io::Write;
        let schema = KafkaRecordSerializationSchema::builder()
            .set_topic(topic)
            .set_key_serializer(|(a, _): &(A, B), out: &mut Vec<u8>| {
                let _ = write!(out, "{a}");
            })
            .set_value_serializer(|(a, b): &(A, B), out: &mut Vec<u8>| {
                let _ = write!(out, "{a} {b}");
            })
            .build()?;
        let prefix = self
            .transactional_id_prefix
            .clone()
            .unwrap_or_else(|| format!("{default_prefix}-{topic}"));
        Ok(KafkaSink::builder()
            .set_bootstrap_servers(self.servers("--kafka output")?)
            .set_record_serializer(schema)
            .set_delivery_guarantee(self.delivery_guarantee)
            .set_transactional_id_prefix(&prefix)
            .build()?)
    }
}

/// Holds a subtask to `per_second` records per second (the examples'
/// `--rate`, split over the subtasks), so a run can be watched, stopped
/// and killed midway.
#[derive(Clone)]
pub struct Throttle {
    per_second: f64,
    started: Option<std::time::Instant>,
    passed: u64,
}

impl Throttle {
    /// At most `total_per_second` over `parallelism` subtasks.
    pub fn new(total_per_second: f64, parallelism: u32) -> Self {
        Throttle {
            per_second: total_per_second / parallelism.max(1) as f64,
            started: None,
            passed: 0,
        }
    }
}

impl<T: floe::api::stream::Record> ProcessFunction<T, T> for Throttle {
    fn process_element(
        &mut self,
        value: T,
        _ctx: &mut ProcessContext<'_>,
        out: &mut Collector<'_, T>,
    ) -> anyhow::Result<()> {
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        self.passed += 1;
        let due = std::time::Duration::from_secs_f64(self.passed as f64 / self.per_second);
        // Sleep in steps of a millisecond or more: sleeping per record at
        // high rates would cost more than the records.
        if let Some(wait) = due.checked_sub(started.elapsed())
            && wait >= std::time::Duration::from_millis(1)
        {
            std::thread::sleep(wait);
        }
        out.collect(value);
        Ok(())
    }
}
