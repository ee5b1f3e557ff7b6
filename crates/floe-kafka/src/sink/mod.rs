//! The Kafka sink (Flink's `KafkaSink`): records of a stream written to a
//! topic with the delivery guarantee the job asks for.
//!
//! ```no_run
//! use floe_kafka::sink::{DeliveryGuarantee, KafkaRecordSerializationSchema, KafkaSink, display_bytes};
//! let sink = KafkaSink::<String>::builder()
//!     .set_bootstrap_servers("localhost:9092")
//!     .set_record_serializer(
//!         KafkaRecordSerializationSchema::builder()
//!             .set_topic("counts")
//!             .set_value_serializer(display_bytes)
//!             .build()?,
//!     )
//!     .set_delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
//!     .set_transactional_id_prefix("word-count")
//!     .build()?;
//! # Ok::<(), floe_kafka::KafkaError>(())
//! ```
//!
//! The builder is not a sink: without `.build()?`, `sink_to` is a compile
//! error (`` `KafkaSinkBuilder<String>` is not a sink of `String` records ``)
//! whose note says to finish the builder (see [`SinkWriter`]).
//!
//! ```compile_fail,E0277
//! use floe::prelude::*;
//! use floe_kafka::sink::KafkaSink;
//! let env = StreamEnvironment::new();
//! let builder = KafkaSink::<String>::builder().set_bootstrap_servers("localhost:9092");
//! env.from_collection(vec![String::from("a")]).sink_to(builder, "Kafka");
//! ```

mod partitioner;
mod router;
mod serializer;
mod transactional;
mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use floe_runtime::{
    CheckpointListener, CheckpointedFunction, SinkWriter, TaskInfo, TwoPhaseCommitSinkWriter,
};

pub use partitioner::{murmur2, partition_for_key};
pub use serializer::{
    KafkaRecordSerializationSchema, KafkaRecordSerializationSchemaBuilder, ProducerRecord,
    display_bytes,
};
pub use transactional::KafkaCommittable;

use crate::client::{Acks, ClientConfig};
use crate::error::KafkaError;
use transactional::KafkaTransactions;
use writer::PlainWriter;

/// What a sink promises about each record after failures (Flink's
/// `DeliveryGuarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Records are sent as they come; nothing is awaited at checkpoints,
    /// so a failure may lose what was buffered or repeat what was sent
    /// since the last checkpoint.
    None,
    /// Every checkpoint waits until the brokers acknowledged every record
    /// before it: nothing is lost, records since the last checkpoint may
    /// be written again after a failure.
    AtLeastOnce,
    /// Records go into Kafka transactions committed when the checkpoint
    /// completes: a read-committed consumer sees each exactly once, as
    /// late as one checkpoint interval after it was written.
    ExactlyOnce,
}

impl std::fmt::Display for DeliveryGuarantee {
    /// Flink's spelling, as `from_str` reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeliveryGuarantee::None => "none",
            DeliveryGuarantee::AtLeastOnce => "at-least-once",
            DeliveryGuarantee::ExactlyOnce => "exactly-once",
        })
    }
}

impl std::str::FromStr for DeliveryGuarantee {
    type Err = KafkaError;

    /// Flink's spellings: `exactly-once`, `at-least-once`, `none`.
    fn from_str(s: &str) -> Result<Self, KafkaError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Ok(DeliveryGuarantee::None),
            "at-least-once" => Ok(DeliveryGuarantee::AtLeastOnce),
            "exactly-once" => Ok(DeliveryGuarantee::ExactlyOnce),
            _ => Err(KafkaError::Config(format!(
                "unknown delivery guarantee '{s}': expected exactly-once, at-least-once or none"
            ))),
        }
    }
}

/// The producer properties the sink understands, with Kafka's defaults
/// where Floe keeps them.
const PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "request.timeout.ms",
    "transaction.timeout.ms",
    "max.request.size",
    "acks",
];

/// Builds a [`KafkaSink`].
pub struct KafkaSinkBuilder<T> {
    properties: BTreeMap<String, String>,
    schema: Option<KafkaRecordSerializationSchema<T>>,
    guarantee: DeliveryGuarantee,
    prefix: Option<String>,
}

/// A sink writing a stream to Kafka; pass it to `sink_to`.
pub struct KafkaSink<T: Send + 'static> {
    inner: Inner<T>,
}

enum Inner<T: Send + 'static> {
    Plain(Box<PlainWriter<T>>),
    Transactional(Box<TwoPhaseCommitSinkWriter<T, KafkaTransactions<T>>>),
}

impl<T: Send + 'static> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        KafkaSink {
            inner: match &self.inner {
                Inner::Plain(w) => Inner::Plain(Box::new((**w).clone())),
                Inner::Transactional(w) => Inner::Transactional(Box::new((**w).clone())),
            },
        }
    }
}

impl<T: Send + 'static> KafkaSink<T> {
    /// Starts a sink: bootstrap servers and a record serializer are
    /// required, and a transactional id prefix for exactly-once.
    pub fn builder() -> KafkaSinkBuilder<T> {
        KafkaSinkBuilder {
            properties: BTreeMap::new(),
            schema: None,
            guarantee: DeliveryGuarantee::None,
            prefix: None,
        }
    }
}

fn parse_ms(key: &str, value: &str) -> Result<u64, KafkaError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| KafkaError::Config(format!("{key}='{value}' is not a number of milliseconds")))
}

impl<T: Send + 'static> KafkaSinkBuilder<T> {
    /// The cluster (Kafka's `bootstrap.servers`).
    pub fn set_bootstrap_servers(self, servers: &str) -> Self {
        self.set_property("bootstrap.servers", servers)
    }

    /// How elements become records.
    pub fn set_record_serializer(mut self, schema: KafkaRecordSerializationSchema<T>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The guarantee (default [`DeliveryGuarantee::None`], as Flink's).
    pub fn set_delivery_guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// The prefix of transactional ids (exactly-once): unique per job
    /// writing to the cluster, and the same across restores of one job,
    /// so a restore finds what the failed attempt left open.
    pub fn set_transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// A producer property (`client.id`, `request.timeout.ms`,
    /// `transaction.timeout.ms`, `max.request.size`, `acks`).
    pub fn set_property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    /// The sink, or what is missing or wrong.
    pub fn build(self) -> Result<KafkaSink<T>, KafkaError> {
        for key in self.properties.keys() {
            if !PROPERTIES.contains(&key.as_str()) {
                return Err(KafkaError::Config(format!(
                    "unknown Kafka sink property '{key}' (known: {})",
                    PROPERTIES.join(", ")
                )));
            }
        }
        let servers = self.properties.get("bootstrap.servers").ok_or_else(|| {
            KafkaError::Config(
                "the Kafka sink needs bootstrap servers (set_bootstrap_servers)".into(),
            )
        })?;
        let mut config = ClientConfig::new(servers)?;
        if let Some(id) = self.properties.get("client.id") {
            config.client_id = id.clone();
        }
        if let Some(v) = self.properties.get("request.timeout.ms") {
            config.request_timeout =
                Duration::from_millis(parse_ms("request.timeout.ms", v)?.max(1));
        }
        let max_request_bytes = match self.properties.get("max.request.size") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    KafkaError::Config(format!(
                        "max.request.size='{v}' is not a positive number of bytes"
                    ))
                })?,
            None => 1 << 20,
        };
        // The broker's default cap (transaction.max.timeout.ms).
        let timeout = match self.properties.get("transaction.timeout.ms") {
            Some(v) => parse_ms("transaction.timeout.ms", v)?,
            None => 900_000,
        };
        let timeout = i32::try_from(timeout).map_err(|_| {
            KafkaError::Config(format!("transaction.timeout.ms={timeout} is too large"))
        })?;
        let schema = self.schema.ok_or_else(|| {
            KafkaError::Config(
                "the Kafka sink needs a record serializer (set_record_serializer)".into(),
            )
        })?;
        let inner = match self.guarantee {
            DeliveryGuarantee::ExactlyOnce => {
                let prefix = self.prefix.filter(|p| !p.is_empty()).ok_or_else(|| {
                    KafkaError::Config(
                        "an exactly-once Kafka sink needs a transactional id prefix (set_transactional_id_prefix)".into(),
                    )
                })?;
                if self
                    .properties
                    .get("acks")
                    .is_some_and(|a| a != "all" && a != "-1")
                {
                    return Err(KafkaError::Config(
                        "an exactly-once Kafka sink needs acks=all".into(),
                    ));
                }
                Inner::Transactional(Box::new(TwoPhaseCommitSinkWriter::new(
                    KafkaTransactions::new(config, prefix, timeout, max_request_bytes, schema),
                )))
            }
            guarantee => {
                let acks = match self.properties.get("acks").map(String::as_str) {
                    None | Some("all") | Some("-1") => Acks::All,
                    Some("1") => Acks::Leader,
                    Some("0") => Acks::None,
                    Some(other) => {
                        return Err(KafkaError::Config(format!(
                            "acks='{other}': expected all, -1, 1 or 0"
                        )));
                    }
                };
                Inner::Plain(Box::new(PlainWriter::new(
                    config,
                    acks,
                    guarantee == DeliveryGuarantee::AtLeastOnce,
                    max_request_bytes,
                    schema,
                )))
            }
        };
        Ok(KafkaSink { inner })
    }
}

impl<T: Send + 'static> SinkWriter<T> for KafkaSink<T> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.open(info),
            Inner::Transactional(w) => w.open(info),
        }
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.write_batch(batch),
            Inner::Transactional(w) => w.write_batch(batch),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            // Transactional records become visible at commit, not before.
            Inner::Transactional(w) => w.flush(),
        }
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        match &mut self.inner {
            Inner::Plain(w) => Some(w.as_mut()),
            Inner::Transactional(w) => w.checkpointed_function(),
        }
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        match &mut self.inner {
            Inner::Plain(_) => None,
            Inner::Transactional(w) => w.checkpoint_listener(),
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Transactional(w) => w.finish(),
        }
    }
}
