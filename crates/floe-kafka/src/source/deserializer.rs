//! Turning Kafka records into a job's records (Flink's
//! `KafkaRecordDeserializationSchema`).
//!
//! The schema sees each record borrowed from the fetched batch — topic,
//! partition, offset, timestamp, key, value, headers — so the only
//! allocation per record is the one that builds the user's `T`.

use crate::client::Headers;

/// How the broker or producer stamped a record (Kafka's `TimestampType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer (`CreateTime`).
    CreateTime,
    /// Set by the broker when it appended the record (`LogAppendTime`).
    LogAppendTime,
}

/// One Kafka record as a deserializer sees it, borrowed from the fetched
/// batch (Kafka's `ConsumerRecord<byte[], byte[]>`).
#[derive(Debug, Clone, Copy)]
pub struct ConsumerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp, milliseconds since the epoch.
    pub timestamp: i64,
    /// Who set `timestamp`.
    pub timestamp_type: TimestampType,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The headers, parsed as they are iterated.
    pub headers: Headers<'a>,
}

/// Deserializes Kafka records into a job's records (Flink's
/// `KafkaRecordDeserializationSchema`). A record may yield zero, one or
/// several elements; an error fails the task, naming the record's topic,
/// partition and offset.
///
/// Any `Fn(&ConsumerRecord) -> anyhow::Result<T>` is a schema yielding one
/// element per record; [`value_only`] and [`string_values`] cover the
/// common cases.
pub trait KafkaRecordDeserializationSchema<T>: Send + Sync + 'static {
    /// Appends what `record` deserializes to onto `out`.
    fn deserialize(&self, record: &ConsumerRecord<'_>, out: &mut Vec<T>) -> anyhow::Result<()>;
}

impl<T, F> KafkaRecordDeserializationSchema<T> for F
where
    F: Fn(&ConsumerRecord<'_>) -> anyhow::Result<T> + Send + Sync + 'static,
{
    fn deserialize(&self, record: &ConsumerRecord<'_>, out: &mut Vec<T>) -> anyhow::Result<()> {
        out.push(self(record)?);
        Ok(())
    }
}

/// A schema reading only the value (Flink's
/// `KafkaRecordDeserializationSchema.valueOnly`); see [`value_only`].
pub struct ValueOnly<F>(F);

/// Deserializes each record's value with `f`. Records with a null value
/// (tombstones, which carry no value to deserialize) are skipped.
pub fn value_only<T, F>(f: F) -> ValueOnly<F>
where
    F: Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
{
    ValueOnly(f)
}

impl<T, F> KafkaRecordDeserializationSchema<T> for ValueOnly<F>
where
    F: Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
{
    #[inline]
    fn deserialize(&self, record: &ConsumerRecord<'_>, out: &mut Vec<T>) -> anyhow::Result<()> {
        if let Some(v) = record.value {
            out.push((self.0)(v)?);
        }
        Ok(())
    }
}

/// The function [`string_values`] deserializes a value with.
pub type Utf8Value = fn(&[u8]) -> anyhow::Result<String>;

/// Each record's value as a UTF-8 `String` (Flink's `SimpleStringSchema`
/// through `valueOnly`); invalid UTF-8 fails the task, null values are
/// skipped.
pub fn string_values() -> ValueOnly<Utf8Value> {
    fn utf8(v: &[u8]) -> anyhow::Result<String> {
        Ok(std::str::from_utf8(v)
            .map_err(|e| anyhow::anyhow!("the value is not UTF-8: {e}"))?
            .to_string())
    }
    ValueOnly(utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(value: Option<&'a [u8]>) -> ConsumerRecord<'a> {
        ConsumerRecord {
            topic: "t",
            partition: 2,
            offset: 9,
            timestamp: 1,
            timestamp_type: TimestampType::CreateTime,
            key: Some(b"k"),
            value,
            headers: Headers::default(),
        }
    }

    #[test]
    fn schemas_yield_what_they_say() {
        let mut out = Vec::new();
        string_values()
            .deserialize(&record(Some(b"hi")), &mut out)
            .unwrap();
        string_values()
            .deserialize(&record(None), &mut out)
            .unwrap();
        assert_eq!(out, ["hi"]);
        let err = string_values()
            .deserialize(&record(Some(&[0xff])), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let closure =
            |r: &ConsumerRecord<'_>| Ok(format!("{}-{}@{}", r.topic, r.partition, r.offset));
        let mut out = Vec::new();
        closure.deserialize(&record(None), &mut out).unwrap();
        assert_eq!(out, ["t-2@9"]);

        let lengths = value_only(|v: &[u8]| Ok(v.len()));
        let mut out = Vec::new();
        lengths
            .deserialize(&record(Some(b"abc")), &mut out)
            .unwrap();
        assert_eq!(out, [3]);
    }
}
