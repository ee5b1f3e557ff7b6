//! One partition's split while it is read: its position, where it stops,
//! and the records of its last Fetch, handed out in order.
//!
//! Everything that decides which fetched records a job sees lives here:
//! records before the position (a Fetch answers with whole batches, so a
//! restore mid-batch sees earlier records again) are skipped, control
//! batches are always skipped, under read_committed the batches of aborted
//! transactions are dropped (Kafka's `abortedTransactions` walk) and
//! nothing at or past the last stable offset is emitted, and a bounded
//! split ends at its stopping offset.

use std::collections::HashSet;

#[cfg(test)]
use bytes::Bytes;

use super::deserializer::{ConsumerRecord, KafkaRecordDeserializationSchema, TimestampType};
use crate::client::{BatchReader, CorruptBatch, FetchedPartition, RecordCursor, TopicPartition};
use floe_runtime::SplitId;

/// A partition this reader owns.
pub(crate) struct PartitionSplit {
    pub(crate) tp: TopicPartition,
    pub(crate) id: SplitId,
    /// The offset of the next record to emit: the checkpointed position.
    pub(crate) next_offset: i64,
    /// Where a bounded split ends (exclusive).
    pub(crate) stopping_offset: Option<i64>,
    /// Reached its stopping offset.
    pub(crate) finished: bool,
    /// Records fetched and not yet handed out.
    pub(crate) buffer: Option<FetchBuffer>,
}

/// The records of one Fetch for one partition.
pub(crate) struct FetchBuffer {
    /// The broker that sent the records (named when they are corrupt).
    pub(crate) leader: i32,
    batches: BatchReader,
    /// The batch being read, and its last offset.
    current: Option<(RecordCursor, i64)>,
    /// Records at or past this offset are held back (the last stable
    /// offset under read_committed).
    limit: i64,
    /// Aborted transactions not yet reached: (producer id, first offset),
    /// sorted by first offset, descending (the next one is last).
    aborted: Vec<(i64, i64)>,
    /// Producers whose current transaction is aborted.
    aborting: HashSet<i64>,
    read_committed: bool,
}

impl FetchBuffer {
    /// The records of `fetched`, read under `read_committed` or not.
    pub(crate) fn new(
        fetched: FetchedPartition,
        leader: i32,
        read_committed: bool,
        check_crcs: bool,
    ) -> Self {
        let mut aborted = fetched.aborted_transactions;
        aborted.sort_by_key(|a| std::cmp::Reverse(a.1));
        let limit = if read_committed && fetched.last_stable_offset >= 0 {
            fetched.last_stable_offset
        } else {
            i64::MAX
        };
        FetchBuffer {
            leader,
            batches: BatchReader::new(fetched.records, check_crcs),
            current: None,
            limit,
            aborted,
            aborting: HashSet::new(),
            read_committed,
        }
    }

    /// True if the fetch brought no bytes at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.current.is_none()
    }
}

/// What draining a split's buffer ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// `max` elements were emitted; the buffer has more.
    Full,
    /// The buffer is used up (or held back): fetch again.
    Exhausted,
    /// The split reached its stopping offset.
    Finished,
}

/// A record batch could not be read, or the deserializer failed.
#[derive(Debug)]
pub(crate) enum DrainError {
    Corrupt(CorruptBatch),
    Deserialize { offset: i64, error: anyhow::Error },
}

impl From<CorruptBatch> for DrainError {
    fn from(e: CorruptBatch) -> Self {
        DrainError::Corrupt(e)
    }
}

impl PartitionSplit {
    /// A split of `tp` starting at `next_offset`.
    pub(crate) fn new(tp: TopicPartition, next_offset: i64, stopping_offset: Option<i64>) -> Self {
        let id = super::split::split_id(&tp);
        let mut split = PartitionSplit {
            tp,
            id,
            next_offset,
            stopping_offset,
            finished: false,
            buffer: None,
        };
        split.finished = split.reached_stop();
        split
    }

    fn reached_stop(&self) -> bool {
        self.stopping_offset.is_some_and(|s| self.next_offset >= s)
    }

    /// Hands out records of the buffer, deserialized into `out` (and their
    /// timestamps into `timestamps`), until `out` holds `max` elements,
    /// the buffer is used up, or the split ends.
    pub(crate) fn drain<T: 'static>(
        &mut self,
        schema: &dyn KafkaRecordDeserializationSchema<T>,
        out: &mut Vec<T>,
        timestamps: &mut Vec<i64>,
        max: usize,
    ) -> Result<Drained, DrainError> {
        let PartitionSplit {
            tp,
            next_offset,
            stopping_offset,
            finished,
            buffer,
            ..
        } = self;
        let stop = stopping_offset.unwrap_or(i64::MAX);
        let Some(buf) = buffer.as_mut() else {
            return Ok(Drained::Exhausted);
        };
        let ended = loop {
            if *next_offset >= stop {
                break Drained::Finished;
            }
            if out.len() >= max {
                return Ok(Drained::Full);
            }
            let Some((cursor, last)) = &mut buf.current else {
                let Some(batch) = buf.batches.next_batch()? else {
                    break Drained::Exhausted;
                };
                let h = batch.header;
                if h.base_offset >= buf.limit {
                    break Drained::Exhausted;
                }
                // Transaction bookkeeping sees every batch, also those
                // before the position, so a marker there still ends its
                // transaction.
                if buf.read_committed {
                    while let Some(&(pid, first)) = buf.aborted.last() {
                        if first > h.last_offset {
                            break;
                        }
                        buf.aborted.pop();
                        buf.aborting.insert(pid);
                    }
                    if h.is_control() {
                        if buf.aborting.contains(&h.producer_id) && batch.is_abort_marker()? {
                            buf.aborting.remove(&h.producer_id);
                        }
                    } else if h.is_transactional() && buf.aborting.contains(&h.producer_id) {
                        *next_offset = (*next_offset).max(h.last_offset + 1);
                        continue;
                    }
                }
                if h.last_offset < *next_offset {
                    continue;
                }
                if h.is_control() {
                    *next_offset = (*next_offset).max(h.last_offset + 1);
                    continue;
                }
                buf.current = Some((batch.records()?, h.last_offset));
                continue;
            };
            let last = *last;
            let Some(r) = cursor.next_record()? else {
                // Compaction may have removed the batch's last records:
                // the position still moves past the whole batch.
                *next_offset = (*next_offset).max(last + 1);
                buf.current = None;
                continue;
            };
            if r.offset < *next_offset {
                continue;
            }
            if r.offset >= stop {
                break Drained::Finished;
            }
            if r.offset >= buf.limit {
                break Drained::Exhausted;
            }
            let record = ConsumerRecord {
                topic: &tp.topic,
                partition: tp.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: if r.log_append_time {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                },
                key: r.key,
                value: r.value,
                headers: r.headers,
            };
            let before = out.len();
            schema
                .deserialize(&record, out)
                .map_err(|error| DrainError::Deserialize {
                    offset: r.offset,
                    error,
                })?;
            timestamps.resize(timestamps.len() + (out.len() - before), r.timestamp);
            *next_offset = r.offset + 1;
        };
        *buffer = None;
        if ended == Drained::Finished {
            *finished = true;
        }
        Ok(ended)
    }
}

/// Bytes of a fetched partition as [`FetchBuffer`] reads them (for tests).
#[cfg(test)]
pub(crate) fn fetched(tp: TopicPartition, records: Bytes, lso: i64) -> FetchedPartition {
    FetchedPartition {
        tp,
        error: None,
        high_watermark: lso,
        last_stable_offset: lso,
        log_start_offset: 0,
        aborted_transactions: Vec::new(),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{BatchBuilder, ProducerIdentity};
    use bytes::BytesMut;

    /// Batches of `(base offset, values, transactional producer or none,
    /// control marker: Some(commit))`.
    type Batch<'a> = (i64, &'a [&'a str], Option<i64>, Option<bool>);

    fn log(batches: &[Batch<'_>]) -> Bytes {
        let mut out = BytesMut::new();
        for (base, values, producer, marker) in batches {
            let mut b = BatchBuilder::new();
            let id = producer.map_or(ProducerIdentity::NONE, |p| ProducerIdentity {
                producer_id: p,
                epoch: 0,
            });
            match marker {
                Some(commit) => b.push(Some(&[0, 0, 0, u8::from(*commit)]), Some(&[0; 6]), 1),
                None => {
                    for v in *values {
                        b.push(None, Some(v.as_bytes()), 1);
                    }
                }
            }
            let mut batch = b.finish(id, 0, producer.is_some()).to_vec();
            batch[..8].copy_from_slice(&base.to_be_bytes());
            if marker.is_some() {
                batch[22] |= 0x20;
            }
            // The CRC covers the attributes: seal it again.
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            out.extend_from_slice(&batch);
        }
        out.freeze()
    }

    fn read_all(split: &mut PartitionSplit, max: usize) -> (Vec<String>, Drained) {
        let schema = super::super::deserializer::string_values();
        let (mut out, mut ts) = (Vec::new(), Vec::new());
        let mut all = Vec::new();
        loop {
            let d = split.drain(&schema, &mut out, &mut ts, max).unwrap();
            assert_eq!(out.len(), ts.len());
            all.append(&mut out);
            ts.clear();
            if d != Drained::Full {
                return (all, d);
            }
        }
    }

    #[test]
    fn restores_mid_batch_without_repeats_and_stops_exactly() {
        let tp = TopicPartition::new("t", 0);
        let bytes = log(&[
            (0, &["a", "b", "c"], None, None),
            (3, &["d", "e"], None, None),
        ]);
        let mut split = PartitionSplit::new(tp.clone(), 1, Some(4));
        split.buffer = Some(FetchBuffer::new(
            fetched(tp.clone(), bytes.clone(), 5),
            1,
            false,
            true,
        ));
        let (values, end) = read_all(&mut split, 2);
        assert_eq!(
            (values, end),
            (vec!["b".into(), "c".into(), "d".into()], Drained::Finished)
        );
        assert!(split.finished);
        assert_eq!(split.next_offset, 4);

        let mut split = PartitionSplit::new(tp.clone(), 5, Some(5));
        assert!(
            split.finished,
            "a split at its stop is finished from the start"
        );
        split.next_offset = 0;
        split.stopping_offset = None;
        split.finished = false;
        split.buffer = Some(FetchBuffer::new(fetched(tp, bytes, 5), 1, false, true));
        let (values, end) = read_all(&mut split, 100);
        assert_eq!(values.len(), 5);
        assert_eq!((end, split.next_offset), (Drained::Exhausted, 5));
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_control_batches() {
        let tp = TopicPartition::new("t", 0);
        let bytes = log(&[
            (0, &["plain"], None, None),
            (1, &["p7-aborted"], Some(7), None),
            (2, &["p8-committed"], Some(8), None),
            (3, &[], Some(7), Some(false)),
            (4, &[], Some(8), Some(true)),
            (5, &["p7-committed"], Some(7), None),
            (6, &[], Some(7), Some(true)),
            (7, &["open"], Some(9), None),
        ]);
        let mut f = fetched(tp.clone(), bytes.clone(), 7);
        f.aborted_transactions = vec![(7, 1)];
        let mut split = PartitionSplit::new(tp.clone(), 0, None);
        split.buffer = Some(FetchBuffer::new(f, 1, true, true));
        let (values, _) = read_all(&mut split, 100);
        assert_eq!(values, ["plain", "p8-committed", "p7-committed"]);
        assert_eq!(split.next_offset, 7, "held back at the last stable offset");

        // read_uncommitted sees every data record, never a marker.
        let mut split = PartitionSplit::new(tp.clone(), 0, None);
        split.buffer = Some(FetchBuffer::new(fetched(tp, bytes, 8), 1, false, true));
        let (values, _) = read_all(&mut split, 100);
        assert_eq!(
            values,
            [
                "plain",
                "p7-aborted",
                "p8-committed",
                "p7-committed",
                "open"
            ]
        );
        assert_eq!(split.next_offset, 8);
    }
}
