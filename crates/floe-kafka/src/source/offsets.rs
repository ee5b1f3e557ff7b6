//! Where a split starts and stops (Flink's `OffsetsInitializer`), and how
//! those offsets are looked up on the cluster.
//!
//! "Latest" is the high watermark of a Fetch (the last stable offset under
//! read_committed), not ListOffsets(LATEST): both are the protocol's
//! answer on a real broker, and the test broker gets only the first right.

use std::collections::BTreeMap;

use crate::client::{Isolation, KafkaCluster, OffsetSpec, TopicPartition};
use crate::error::KafkaError;

/// What to do where no offset is known — no committed offset, or an
/// offset that is out of range (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetStrategy {
    /// The first offset still in the log.
    Earliest,
    /// The end of the log: only records written from now on.
    Latest,
    /// Fail, naming the partition.
    None,
}

impl OffsetResetStrategy {
    /// Parses `earliest`, `latest` or `none` (Kafka's spelling).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "earliest" => Some(OffsetResetStrategy::Earliest),
            "latest" => Some(OffsetResetStrategy::Latest),
            "none" => Some(OffsetResetStrategy::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    Earliest,
    Latest,
    Committed(OffsetResetStrategy),
    Timestamp(i64),
    Specified(BTreeMap<TopicPartition, i64>, OffsetResetStrategy),
}

/// Which offset of each partition a source starts (or, bounded, stops)
/// at (Flink's `OffsetsInitializer`), resolved once when a reader opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsInitializer(Spec);

impl OffsetsInitializer {
    /// The first offset still in the log.
    pub fn earliest() -> Self {
        OffsetsInitializer(Spec::Earliest)
    }

    /// The end of the log when the reader opens (its high watermark, or
    /// last stable offset under read_committed).
    pub fn latest() -> Self {
        OffsetsInitializer(Spec::Latest)
    }

    /// The consumer group's committed offsets (needs a group id); where
    /// the group has none, `reset` decides.
    pub fn committed_offsets(reset: OffsetResetStrategy) -> Self {
        OffsetsInitializer(Spec::Committed(reset))
    }

    /// The first offset whose record timestamp is at or after `ms`
    /// (milliseconds since the epoch); the end of the log if none is.
    pub fn timestamp(ms: i64) -> Self {
        OffsetsInitializer(Spec::Timestamp(ms))
    }

    /// These offsets; partitions not in the map start at the earliest
    /// offset (Flink's default for `offsets(Map)`).
    pub fn offsets(offsets: BTreeMap<TopicPartition, i64>) -> Self {
        Self::offsets_or(offsets, OffsetResetStrategy::Earliest)
    }

    /// These offsets; partitions not in the map per `reset`.
    pub fn offsets_or(offsets: BTreeMap<TopicPartition, i64>, reset: OffsetResetStrategy) -> Self {
        OffsetsInitializer(Spec::Specified(offsets, reset))
    }

    /// True when resolving needs the consumer group.
    pub(crate) fn needs_group(&self) -> bool {
        matches!(self.0, Spec::Committed(_))
    }

    /// What an out-of-range offset resets to when `auto.offset.reset` is
    /// not set (Flink's `getAutoOffsetResetStrategy`).
    pub(crate) fn auto_offset_reset(&self) -> OffsetResetStrategy {
        match &self.0 {
            Spec::Earliest => OffsetResetStrategy::Earliest,
            Spec::Latest | Spec::Timestamp(_) => OffsetResetStrategy::Latest,
            Spec::Committed(r) | Spec::Specified(_, r) => *r,
        }
    }

    /// The offset of each of `partitions`.
    pub(crate) fn resolve(
        &self,
        cluster: &mut KafkaCluster,
        partitions: &[TopicPartition],
        group: Option<&str>,
        isolation: Isolation,
    ) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        match &self.0 {
            Spec::Earliest => cluster.list_offsets(partitions, OffsetSpec::Earliest),
            Spec::Latest => end_offsets(cluster, partitions, isolation),
            Spec::Timestamp(ms) => {
                let mut found = cluster.list_offsets(partitions, OffsetSpec::Timestamp(*ms))?;
                let missing: Vec<TopicPartition> = found
                    .iter()
                    .filter(|(_, o)| **o < 0)
                    .map(|(tp, _)| tp.clone())
                    .collect();
                found.extend(end_offsets(cluster, &missing, isolation)?);
                Ok(found)
            }
            Spec::Committed(reset) => {
                let group = group.ok_or(KafkaError::MissingSetting(
                    "group.id (for committed offsets)",
                ))?;
                let committed = cluster.fetch_committed_offsets(group, partitions)?;
                fill(cluster, partitions, committed, *reset, isolation, |tp| {
                    format!("group '{group}' has no committed offset for {tp}")
                })
            }
            Spec::Specified(offsets, reset) => {
                let given = partitions
                    .iter()
                    .filter_map(|tp| offsets.get(tp).map(|o| (tp.clone(), *o)))
                    .collect();
                fill(cluster, partitions, given, *reset, isolation, |tp| {
                    format!("no offset was given for {tp}")
                })
            }
        }
    }
}

/// `known` plus the partitions it lacks, per `reset`.
fn fill(
    cluster: &mut KafkaCluster,
    partitions: &[TopicPartition],
    mut known: BTreeMap<TopicPartition, i64>,
    reset: OffsetResetStrategy,
    isolation: Isolation,
    what: impl Fn(&TopicPartition) -> String,
) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
    let missing: Vec<TopicPartition> = partitions
        .iter()
        .filter(|tp| !known.contains_key(*tp))
        .cloned()
        .collect();
    known.extend(reset_offsets(cluster, &missing, reset, isolation, what)?);
    Ok(known)
}

/// Where `partitions` go under `reset`.
pub(crate) fn reset_offsets(
    cluster: &mut KafkaCluster,
    partitions: &[TopicPartition],
    reset: OffsetResetStrategy,
    isolation: Isolation,
    what: impl Fn(&TopicPartition) -> String,
) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    match reset {
        OffsetResetStrategy::Earliest => cluster.list_offsets(partitions, OffsetSpec::Earliest),
        OffsetResetStrategy::Latest => end_offsets(cluster, partitions, isolation),
        OffsetResetStrategy::None => Err(KafkaError::NoOffset {
            partition: partitions[0].to_string(),
            what: what(&partitions[0]),
        }),
    }
}

/// The end of each partition's log: the high watermark a Fetch reports
/// (the last stable offset under read_committed), asked at the earliest
/// offset so the fetch position is always valid.
pub(crate) fn end_offsets(
    cluster: &mut KafkaCluster,
    partitions: &[TopicPartition],
    isolation: Isolation,
) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let earliest = cluster.list_offsets(partitions, OffsetSpec::Earliest)?;
    let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    for (tp, offset) in earliest {
        by_leader
            .entry(cluster.leader_of(&tp)?)
            .or_default()
            .push((tp, offset));
    }
    let mut out = BTreeMap::new();
    for (leader, parts) in by_leader {
        // One byte per partition: only the watermarks are wanted (a broker
        // still sends the first batch whole).
        let fetched = cluster.fetch(leader, &parts, 100, 1, 1, 1, isolation)?;
        for p in fetched {
            if let Some(error) = p.error {
                return Err(KafkaError::Broker {
                    api: "Fetch",
                    context: Some(format!("the end offset of {}", p.tp)),
                    error,
                });
            }
            let end = match isolation {
                Isolation::ReadCommitted if p.last_stable_offset >= 0 => p.last_stable_offset,
                _ => p.high_watermark,
            };
            out.insert(p.tp, end);
        }
    }
    if let Some(tp) = partitions.iter().find(|tp| !out.contains_key(*tp)) {
        return Err(KafkaError::Metadata(format!(
            "the broker leading {tp} did not report its end offset"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_strategies_follow_flink() {
        assert_eq!(
            OffsetsInitializer::earliest().auto_offset_reset(),
            OffsetResetStrategy::Earliest
        );
        assert_eq!(
            OffsetsInitializer::latest().auto_offset_reset(),
            OffsetResetStrategy::Latest
        );
        assert_eq!(
            OffsetsInitializer::committed_offsets(OffsetResetStrategy::None).auto_offset_reset(),
            OffsetResetStrategy::None
        );
        assert_eq!(
            OffsetResetStrategy::parse(" Latest"),
            Some(OffsetResetStrategy::Latest)
        );
        assert_eq!(OffsetResetStrategy::parse("smallest"), None);
    }
}
