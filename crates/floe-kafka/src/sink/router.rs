//! From element to buffered record: serialize into reused buffers, pick the
//! partition, hand the bytes to the producer.

use std::time::{SystemTime, UNIX_EPOCH};

use super::partitioner::partition_for_key;
use super::serializer::{KafkaRecordSerializationSchema, ProducerRecord};
use crate::client::{Producer, TopicPartition};
use crate::error::KafkaError;

/// Routes one subtask's elements into a producer.
pub(crate) struct RecordRouter<T> {
    schema: KafkaRecordSerializationSchema<T>,
    /// The topic's partitions, indexed by partition number.
    partitions: Vec<TopicPartition>,
    record: ProducerRecord,
    /// Where records without key or partition go: one partition per
    /// batch of input, moving on each batch (Kafka's sticky partitioning:
    /// large batches, yet every partition used).
    sticky: usize,
}

impl<T> RecordRouter<T> {
    pub(crate) fn new(schema: KafkaRecordSerializationSchema<T>, subtask: u32) -> Self {
        RecordRouter {
            schema,
            partitions: Vec::new(),
            record: ProducerRecord::default(),
            sticky: subtask as usize,
        }
    }

    pub(crate) fn topic(&self) -> &str {
        self.schema.topic()
    }

    /// Learns the topic's partitions (at open); a missing topic is an
    /// error naming it.
    pub(crate) fn refresh_partitions(&mut self, producer: &mut Producer) -> Result<(), KafkaError> {
        let topic = self.schema.topic().to_string();
        let n = producer.partitions(&topic)?;
        if n <= 0 {
            return Err(KafkaError::UnknownTopic(topic));
        }
        self.partitions = (0..n)
            .map(|p| TopicPartition::new(topic.clone(), p))
            .collect();
        Ok(())
    }

    /// Serializes `batch` into `producer`'s buffers.
    pub(crate) fn route(&mut self, batch: &[T], producer: &mut Producer) -> Result<(), KafkaError> {
        let n = self.partitions.len() as i32;
        self.sticky = self.sticky.wrapping_add(1);
        let sticky = self.sticky % self.partitions.len();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for element in batch {
            self.schema.serialize(element, n, &mut self.record);
            let r = &self.record;
            let partition = match r.partition {
                Some(p) if (0..n).contains(&p) => p as usize,
                Some(p) => {
                    return Err(KafkaError::Config(format!(
                        "the record serializer chose partition {p} of topic '{}', which has {n}",
                        self.schema.topic()
                    )));
                }
                None if r.has_key => partition_for_key(&r.key, n) as usize,
                None => sticky,
            };
            producer.send(
                &self.partitions[partition],
                r.has_key.then_some(&r.key[..]),
                Some(&r.value),
                r.timestamp.unwrap_or(now),
            );
        }
        Ok(())
    }
}
