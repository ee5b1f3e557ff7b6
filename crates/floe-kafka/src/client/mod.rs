//! A small synchronous Kafka client on the wire protocol
//! (`kafka-protocol` encodes and decodes every message): connections,
//! cluster metadata, and the requests Floe's source and sink send.
//!
//! Floe speaks the protocol itself rather than through librdkafka because
//! its exactly-once sink must commit a transaction another process
//! pre-committed, from the producer id and epoch stored in a checkpoint;
//! librdkafka cannot resume a transaction (Flink reaches into the Java
//! client by reflection for the same reason).

mod admin;
mod batches;
mod cluster;
mod connection;
mod fetch;
mod group;
mod produce;
mod records;

pub use batches::{
    BatchHeader, BatchReader, CorruptBatch, Headers, RawBatch, RecordCursor, RecordView,
};
pub use cluster::{ClientConfig, CoordinatorKind, KafkaCluster, TopicPartition};
pub use connection::BrokerConnection;
pub use fetch::{FetchedPartition, Isolation, OffsetSpec, complete_batches};
pub use produce::{Acks, Producer, TransactionHandle, end_transaction};
pub use records::{BatchBuilder, ProducerIdentity};

/// A topic name as the protocol types carry it.
pub(crate) fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        s.to_string(),
    ))
}
