//! Turning a stream element into a Kafka record (Flink's
//! `KafkaRecordSerializationSchema`): its value, optional key, partition
//! and timestamp, written into buffers the sink reuses, so serializing
//! allocates nothing per record.

use std::sync::Arc;

/// The record a serializer fills for one element. The sink clears it
/// before each element.
#[derive(Debug, Default)]
pub struct ProducerRecord {
    /// The key's bytes (used only if `has_key`).
    pub key: Vec<u8>,
    /// Whether the record has a key (an empty key differs from none).
    pub has_key: bool,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The partition, if the serializer chooses it; otherwise Kafka's
    /// default partitioner places the record (by key, or spread over the
    /// partitions if it has none).
    pub partition: Option<i32>,
    /// The record's timestamp (ms since the epoch); the wall clock if none.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub(crate) fn clear(&mut self) {
        self.key.clear();
        self.has_key = false;
        self.value.clear();
        self.partition = None;
        self.timestamp = None;
    }
}

type WriteBytes<T> = Arc<dyn Fn(&T, &mut Vec<u8>) + Send + Sync>;
type ChoosePartition<T> = Arc<dyn Fn(&T, i32) -> i32 + Send + Sync>;
type ChooseTimestamp<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// How a sink turns elements into records of its topic. Build it with
/// [`KafkaRecordSerializationSchema::builder`].
pub struct KafkaRecordSerializationSchema<T> {
    pub(crate) topic: String,
    value: WriteBytes<T>,
    key: Option<WriteBytes<T>>,
    partition: Option<ChoosePartition<T>>,
    timestamp: Option<ChooseTimestamp<T>>,
}

impl<T> Clone for KafkaRecordSerializationSchema<T> {
    fn clone(&self) -> Self {
        KafkaRecordSerializationSchema {
            topic: self.topic.clone(),
            value: self.value.clone(),
            key: self.key.clone(),
            partition: self.partition.clone(),
            timestamp: self.timestamp.clone(),
        }
    }
}

impl<T> KafkaRecordSerializationSchema<T> {
    /// Starts a schema: a topic and a value serializer are required.
    pub fn builder() -> KafkaRecordSerializationSchemaBuilder<T> {
        KafkaRecordSerializationSchemaBuilder {
            topic: None,
            value: None,
            key: None,
            partition: None,
            timestamp: None,
        }
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Fills `record` for `element`; `partitions` is the topic's
    /// partition count (for a partition function).
    #[inline]
    pub fn serialize(&self, element: &T, partitions: i32, record: &mut ProducerRecord) {
        record.clear();
        (self.value)(element, &mut record.value);
        if let Some(key) = &self.key {
            key(element, &mut record.key);
            record.has_key = true;
        }
        if let Some(p) = &self.partition {
            record.partition = Some(p(element, partitions));
        }
        if let Some(t) = &self.timestamp {
            record.timestamp = Some(t(element));
        }
    }
}

/// Writes an element's `Display` form as UTF-8: the counterpart of
/// Flink's `SimpleStringSchema` for any printable type.
pub fn display_bytes<T: std::fmt::Display>(element: &T, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{element}");
}

/// Builds a [`KafkaRecordSerializationSchema`].
pub struct KafkaRecordSerializationSchemaBuilder<T> {
    topic: Option<String>,
    value: Option<WriteBytes<T>>,
    key: Option<WriteBytes<T>>,
    partition: Option<ChoosePartition<T>>,
    timestamp: Option<ChooseTimestamp<T>>,
}

impl<T> KafkaRecordSerializationSchemaBuilder<T> {
    /// The topic every record goes to.
    pub fn set_topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_string());
        self
    }

    /// Writes an element's value bytes (e.g. [`display_bytes`]).
    pub fn set_value_serializer(
        mut self,
        f: impl Fn(&T, &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        self.value = Some(Arc::new(f));
        self
    }

    /// Writes an element's key bytes; keyed records are partitioned by
    /// key as Kafka's default partitioner does.
    pub fn set_key_serializer(
        mut self,
        f: impl Fn(&T, &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    /// Chooses each record's partition from the element and the topic's
    /// partition count (Flink's `setPartitioner`).
    pub fn set_partitioner(mut self, f: impl Fn(&T, i32) -> i32 + Send + Sync + 'static) -> Self {
        self.partition = Some(Arc::new(f));
        self
    }

    /// Gives each record a timestamp from its element (ms since the
    /// epoch); without it records carry the wall clock at write time.
    pub fn set_timestamp(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        self.timestamp = Some(Arc::new(f));
        self
    }

    /// The schema, or which required setting is missing.
    pub fn build(self) -> Result<KafkaRecordSerializationSchema<T>, crate::KafkaError> {
        let topic = self.topic.filter(|t| !t.is_empty()).ok_or_else(|| {
            crate::KafkaError::Config("the record serializer needs a topic (set_topic)".into())
        })?;
        let value = self.value.ok_or_else(|| {
            crate::KafkaError::Config(
                "the record serializer needs a value serializer (set_value_serializer)".into(),
            )
        })?;
        Ok(KafkaRecordSerializationSchema {
            topic,
            value,
            key: self.key,
            partition: self.partition,
            timestamp: self.timestamp,
        })
    }
}
