//! Reading: Fetch and ListOffsets, one request per partition leader.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest};

use super::cluster::{KafkaCluster, TopicPartition};
use super::topic_name;
use crate::error::KafkaError;

/// Fetch v4–v12 name topics (v13+ use topic ids).
const FETCH_CAP: i16 = 12;
/// ListOffsets v1–v7 share the fields Floe fills.
const LIST_OFFSETS_CAP: i16 = 7;

/// Which records a fetch sees (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything written, including open and aborted transactions.
    ReadUncommitted,
    /// Only up to the last stable offset, with the aborted transactions
    /// listed so the reader can drop their records.
    ReadCommitted,
}

/// One partition's part of a Fetch answer.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// The partition.
    pub tp: TopicPartition,
    /// The broker's refusal, if any (the other fields are then unset).
    pub error: Option<ResponseError>,
    /// The offset after the last record written.
    pub high_watermark: i64,
    /// The offset before which no transaction is open.
    pub last_stable_offset: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// Aborted transactions in range (read committed): producer id and
    /// first offset.
    pub aborted_transactions: Vec<(i64, i64)>,
    /// Whole record batches (a trailing partial batch is cut off).
    pub records: Bytes,
}

/// Where [`KafkaCluster::list_offsets`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset in the log.
    Earliest,
    /// The offset after the last record.
    Latest,
    /// The first offset whose record timestamp is at or after this one
    /// (ms); the end of the log if there is none.
    Timestamp(i64),
}

/// Cuts `records` after its last complete batch: a broker may end a Fetch
/// answer inside a batch when the size limit falls there.
pub fn complete_batches(records: Bytes) -> Bytes {
    let mut end = 0;
    let mut rest = &records[..];
    while rest.len() >= 12 {
        let len = (&rest[8..12]).get_i32();
        if len < 0 {
            break;
        }
        let total = 12 + len as usize;
        if rest.len() < total {
            break;
        }
        end += total;
        rest = &rest[total..];
    }
    records.slice(..end)
}

impl KafkaCluster {
    /// Fetches from broker `leader` the partitions at the given offsets.
    /// `max_wait_ms` and `min_bytes` let the broker wait for data; the
    /// byte limits bound the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn fetch(
        &mut self,
        leader: i32,
        partitions: &[(TopicPartition, i64)],
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
        partition_max_bytes: i32,
        isolation: Isolation,
    ) -> Result<Vec<FetchedPartition>, KafkaError> {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, offset) in partitions {
            topics.entry(&tp.topic).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_fetch_offset(*offset)
                    .with_partition_max_bytes(partition_max_bytes),
            );
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_isolation_level(match isolation {
                Isolation::ReadUncommitted => 0,
                Isolation::ReadCommitted => 1,
            })
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = match self
            .broker(leader)
            .and_then(|c| c.send(&request, FETCH_CAP))
        {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, KafkaError::Io { .. }) {
                    self.disconnect(leader);
                }
                return Err(e);
            }
        };
        crate::error::check("Fetch", response.error_code, || format!("broker {leader}"))?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in response.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                out.push(FetchedPartition {
                    tp: TopicPartition::new(topic.clone(), p.partition_index),
                    error: ResponseError::try_from_code(p.error_code),
                    high_watermark: p.high_watermark,
                    last_stable_offset: p.last_stable_offset,
                    log_start_offset: p.log_start_offset,
                    aborted_transactions: p
                        .aborted_transactions
                        .unwrap_or_default()
                        .into_iter()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect(),
                    records: complete_batches(p.records.unwrap_or_default()),
                });
            }
        }
        Ok(out)
    }

    /// The offset `spec` names in each partition, asking each leader.
    pub fn list_offsets(
        &mut self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            by_leader.entry(self.leader_of(tp)?).or_default().push(tp);
        }
        let mut out = BTreeMap::new();
        for (leader, tps) in by_leader {
            let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for tp in &tps {
                topics.entry(&tp.topic).or_default().push(
                    ListOffsetsPartition::default()
                        .with_partition_index(tp.partition)
                        .with_timestamp(timestamp),
                );
            }
            let request = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(topic_name(t))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            let response = self.broker(leader)?.send(&request, LIST_OFFSETS_CAP)?;
            for t in response.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    crate::error::check("ListOffsets", p.error_code, || tp.to_string())?;
                    out.insert(tp, p.offset);
                }
            }
        }
        Ok(out)
    }
}
