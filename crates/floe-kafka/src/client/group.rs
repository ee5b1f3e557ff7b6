//! Consumer-group offsets: OffsetCommit and OffsetFetch at the group's
//! coordinator, as a standalone member (generation -1, empty member id).
//!
//! Floe's Kafka source never joins a group — its partitions come from its
//! own assignment and its positions from checkpoints — so the group only
//! records where the job is, for monitoring tools (lag) and for a new job
//! starting from committed offsets. Kafka accepts such commits from a
//! client outside the group's membership (Flink's source does the same).

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{CoordinatorKind, KafkaCluster, TopicPartition};
use crate::error::{KafkaError, check};

/// OffsetCommit v2–v8 name topics and take a generation id (v9 is the
/// KIP-848 member epoch, v10 topic ids).
const OFFSET_COMMIT_CAP: i16 = 8;
/// OffsetFetch v1–v7 ask for one group (v8+ batch groups).
const OFFSET_FETCH_CAP: i16 = 7;
/// How often a coordinator that moved or is loading is looked up again.
const COORDINATOR_RETRIES: usize = 10;

fn group_id(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// True for the errors after which the group's coordinator must be found
/// again (it moved, or is loading the group).
fn coordinator_moved(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Connect { .. } | KafkaError::Io { .. })
        || matches!(
            e.broker_error(),
            Some(
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
            )
        )
}

impl KafkaCluster {
    /// Runs `request` at `group`'s coordinator, finding it again (with a
    /// short backoff) when it moved or is loading.
    fn at_group_coordinator<R>(
        &mut self,
        group: &str,
        mut request: impl FnMut(&mut KafkaCluster, i32) -> Result<R, KafkaError>,
    ) -> Result<R, KafkaError> {
        let mut attempt = 0;
        loop {
            let result = self
                .find_coordinator(CoordinatorKind::Group, group)
                .and_then(|id| {
                    let r = request(self, id);
                    if matches!(r, Err(KafkaError::Io { .. })) {
                        self.disconnect(id);
                    }
                    r
                });
            match result {
                Err(e) if attempt < COORDINATOR_RETRIES && coordinator_moved(&e) => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt.min(5)));
                }
                other => return other,
            }
        }
    }

    /// Commits `offsets` (the next offset to read, per partition) for
    /// `group` as a standalone client. Every partition's refusal is an
    /// error naming it.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), KafkaError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        self.at_group_coordinator(group, |cluster, id| {
            let response = cluster.broker(id)?.send(&request, OFFSET_COMMIT_CAP)?;
            for t in &response.topics {
                for p in &t.partitions {
                    check("OffsetCommit", p.error_code, || {
                        format!(
                            "group '{group}', {}-{}",
                            t.name.0.as_str(),
                            p.partition_index
                        )
                    })?;
                }
            }
            Ok(())
        })
    }

    /// The offsets `group` committed for `partitions`; a partition without
    /// a committed offset is absent from the answer.
    pub fn fetch_committed_offsets(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ));
        self.at_group_coordinator(group, |cluster, id| {
            let response = cluster.broker(id)?.send(&request, OFFSET_FETCH_CAP)?;
            check("OffsetFetch", response.error_code, || {
                format!("group '{group}'")
            })?;
            let mut out = BTreeMap::new();
            for t in &response.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    check("OffsetFetch", p.error_code, || {
                        format!("group '{group}', {tp}")
                    })?;
                    if p.committed_offset >= 0 {
                        out.insert(tp, p.committed_offset);
                    }
                }
            }
            Ok(out)
        })
    }
}
