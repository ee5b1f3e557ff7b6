//! The Kafka source (Flink's `KafkaSource`): its splits are topic
//! partitions, its position is each partition's next offset, kept in
//! checkpoints, so a restored job reads every record exactly once.
//!
//! ```no_run
//! use floe_kafka::source::{KafkaSource, OffsetsInitializer, string_values};
//! let source = KafkaSource::<String>::builder()
//!     .set_bootstrap_servers("localhost:9092")
//!     .set_topics(["orders"])
//!     .set_group_id("order-job")
//!     .set_starting_offsets(OffsetsInitializer::earliest())
//!     .set_deserializer(string_values())
//!     .build()?;
//! # Ok::<(), floe_kafka::KafkaError>(())
//! ```
//!
//! The builder is not a source: without `.build()?`, `from_source` is a
//! compile error (`` `KafkaSourceBuilder<String>` is not a source ``)
//! whose note says to finish the builder (see [`Source`]).
//!
//! ```compile_fail,E0277
//! use floe::prelude::*;
//! use floe_kafka::source::KafkaSource;
//! let env = StreamEnvironment::new();
//! let builder = KafkaSource::<String>::builder().set_bootstrap_servers("localhost:9092");
//! let orders: DataStream<String> = env.from_source(builder, "Kafka");
//! ```
//!
//! One file per concern: `builder.rs` (the builder and what it checks),
//! `config.rs` (properties and defaults), `offsets.rs` (starting and
//! stopping offsets), `split.rs` (owners, split ids, the saved position
//! format), `deserializer.rs` (the user's schema), `partition.rs` (one
//! partition's fetched records: filtering, stopping), `reader.rs` (the
//! subtask's reader: fetching, errors, discovery, commits).

mod builder;
mod config;
mod deserializer;
mod offsets;
mod partition;
mod reader;
mod split;

use std::sync::Arc;

use floe_runtime::context::TaskInfo;
use floe_runtime::{PositionRedistribution, Source, SourceReader};

pub use builder::{KafkaSourceBuilder, Subscription};
pub use config::{DEFAULT_DISCOVERY_INTERVAL_MS, SourceProperties};
pub use deserializer::{
    ConsumerRecord, KafkaRecordDeserializationSchema, TimestampType, Utf8Value, ValueOnly,
    string_values, value_only,
};
pub use offsets::{OffsetResetStrategy, OffsetsInitializer};
pub use reader::KafkaSourceReader;
pub use split::{
    SplitPosition, decode_positions, encode_positions, java_string_hash, split_id, split_owner,
};

use builder::SourceSettings;

/// A source reading Kafka topics (Flink's `KafkaSource`), made by
/// [`KafkaSource::builder`]. Each subtask reads the partitions Flink's
/// owner formula gives it, so no coordinator is needed; on restore every
/// subtask is handed every saved position and keeps its own.
pub struct KafkaSource<T> {
    settings: Arc<SourceSettings<T>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            settings: self.settings.clone(),
        }
    }
}

impl<T: Send + 'static> KafkaSource<T> {
    /// A builder with Flink's defaults.
    pub fn builder() -> KafkaSourceBuilder<T> {
        KafkaSourceBuilder::default()
    }

    /// True when the source stops (it was given stopping offsets).
    pub fn is_bounded(&self) -> bool {
        self.settings.stopping.is_some()
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn position_redistribution(&self) -> PositionRedistribution {
        PositionRedistribution::Union
    }

    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(KafkaSourceReader::new(
            self.settings.clone(),
            info.subtask_index,
            info.parallelism,
        )))
    }
}
