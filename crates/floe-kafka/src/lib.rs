//! Kafka for Floe: a source whose splits are topic partitions, with their
//! offsets in checkpoints, and a sink that writes exactly once through
//! Kafka transactions committed when a checkpoint completes.

pub mod client;
pub mod error;
pub mod sink;
pub mod source;
pub mod testing;

pub use client::{ClientConfig, KafkaCluster, TopicPartition};
pub use error::KafkaError;
pub use source::{KafkaSource, OffsetResetStrategy, OffsetsInitializer};
