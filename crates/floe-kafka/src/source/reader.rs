//! A subtask's Kafka reader: finds the partitions it owns, fetches them
//! from their leaders, hands out one partition's records per poll, keeps
//! each partition's next offset for checkpoints, discovers new partitions,
//! and commits checkpointed offsets to the consumer group.
//!
//! Failures: a lost connection or a moved leader (any retriable error)
//! refreshes metadata and retries until `request.timeout.ms` passes
//! without a successful fetch, then fails the task; an offset out of range
//! resets per `auto.offset.reset`; anything else fails the task at once
//! with the partition and broker named. A failed task restarts from the
//! last checkpoint's offsets, so nothing is lost or repeated at the source.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use floe_runtime::context::TaskInfo;
use floe_runtime::{NonRecoverable, PositionRedistribution, SourceReader, SourceStatus, SplitId};
use kafka_protocol::ResponseError;

use super::builder::{SourceSettings, Subscription};
use super::offsets::{OffsetResetStrategy, reset_offsets};
use super::partition::{DrainError, Drained, FetchBuffer, PartitionSplit};
use super::split::{SplitPosition, decode_positions, encode_positions, split_owner};
use crate::client::{FetchedPartition, Isolation, KafkaCluster, TopicPartition};
use crate::error::KafkaError;

/// The longest a poll lets a broker hold a fetch: the source contract asks
/// a poll to return within about 100 ms.
const MAX_POLL_WAIT_MS: i32 = 100;
/// Offsets kept for checkpoints not yet complete (Flink keeps them until a
/// completion subsumes them; a bound keeps lost notifications from
/// growing the map).
const MAX_PENDING_COMMITS: usize = 100;
/// Internal topics a pattern never matches (Kafka's admin client leaves
/// them out of topic listings).
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// The reader of one subtask of a [`KafkaSource`](super::KafkaSource).
pub struct KafkaSourceReader<T> {
    settings: Arc<SourceSettings<T>>,
    subtask: u32,
    parallelism: u32,
    cluster: Option<KafkaCluster>,
    /// Positions handed over on restore (every old subtask's), by
    /// partition; `None` for a fresh start.
    restored: Option<BTreeMap<TopicPartition, SplitPosition>>,
    splits: BTreeMap<TopicPartition, PartitionSplit>,
    /// Partitions with fetched records, in the order they are handed out.
    ready: VecDeque<TopicPartition>,
    current: SplitId,
    timestamps: Vec<i64>,
    finished: Vec<SplitId>,
    pending_commits: BTreeMap<u64, BTreeMap<TopicPartition, i64>>,
    next_discovery: Option<Instant>,
    metadata_stale: bool,
    /// When fetching started failing with retriable errors.
    failing_since: Option<Instant>,
    /// Counts fetch rounds, to rotate the partitions' order in a request:
    /// a broker fills an answer in request order, so a fixed order would
    /// starve the partitions at its end (the Java consumer rotates too).
    fetch_round: usize,
}

fn broker_name(cluster: &mut KafkaCluster, id: i32) -> String {
    match cluster.broker(id) {
        Ok(c) => format!("{} (id {id})", c.broker()),
        Err(_) => format!("id {id}"),
    }
}

impl<T: Send + 'static> KafkaSourceReader<T> {
    pub(crate) fn new(settings: Arc<SourceSettings<T>>, subtask: u32, parallelism: u32) -> Self {
        KafkaSourceReader {
            settings,
            subtask,
            parallelism,
            cluster: None,
            restored: None,
            splits: BTreeMap::new(),
            ready: VecDeque::new(),
            current: 0,
            timestamps: Vec::new(),
            finished: Vec::new(),
            pending_commits: BTreeMap::new(),
            next_discovery: None,
            metadata_stale: false,
            failing_since: None,
            fetch_round: 0,
        }
    }

    /// The partitions this reader owns now, after the subtask's share of
    /// the cluster's current metadata.
    fn owned_partitions(&mut self) -> Result<Vec<TopicPartition>, KafkaError> {
        let cluster = self.cluster.as_mut().expect("opened");
        let counts = match &self.settings.subscription {
            Subscription::Topics(topics) => cluster.refresh_metadata(Some(topics))?,
            Subscription::Pattern(_) => cluster.refresh_metadata(None)?,
        };
        let mut owned = Vec::new();
        for (topic, count) in counts {
            if INTERNAL_TOPICS.contains(&topic.as_str())
                || !self.settings.subscription.matches(&topic)
            {
                continue;
            }
            for p in 0..count {
                let tp = TopicPartition::new(topic.clone(), p);
                if split_owner(&tp, self.parallelism) == self.subtask {
                    owned.push(tp);
                }
            }
        }
        Ok(owned)
    }

    fn isolation(&self) -> Isolation {
        self.settings.properties.isolation
    }

    /// Adds splits for `partitions`, which this reader does not read yet:
    /// at restored positions where there are some, else from `start`
    /// (the starting offsets at a fresh start, earliest otherwise).
    fn add_splits(
        &mut self,
        partitions: Vec<TopicPartition>,
        fresh_start: bool,
    ) -> Result<(), KafkaError> {
        let isolation = self.isolation();
        let group = self.settings.properties.group_id.clone();
        let cluster = self.cluster.as_mut().expect("opened");
        let mut unknown = Vec::new();
        for tp in partitions {
            match self.restored.as_ref().and_then(|r| r.get(&tp)) {
                Some(p) => {
                    let split = PartitionSplit::new(tp.clone(), p.next_offset, p.stopping_offset);
                    if split.finished {
                        self.finished.push(split.id);
                    }
                    self.splits.insert(tp, split);
                }
                None => unknown.push(tp),
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let starts = if fresh_start {
            self.settings
                .starting
                .resolve(cluster, &unknown, group.as_deref(), isolation)?
        } else {
            reset_offsets(
                cluster,
                &unknown,
                OffsetResetStrategy::Earliest,
                isolation,
                |_| String::new(),
            )?
        };
        let stops = match &self.settings.stopping {
            Some(stopping) => stopping.resolve(cluster, &unknown, group.as_deref(), isolation)?,
            None => BTreeMap::new(),
        };
        for tp in unknown {
            let start = starts.get(&tp).copied().ok_or_else(|| {
                KafkaError::Metadata(format!("no starting offset was found for {tp}"))
            })?;
            let split = PartitionSplit::new(tp.clone(), start, stops.get(&tp).copied());
            tracing::info!(partition = %tp, offset = start, stop = ?split.stopping_offset, "Kafka split added");
            if split.finished {
                self.finished.push(split.id);
            }
            self.splits.insert(tp, split);
        }
        Ok(())
    }

    /// Looks for partitions created since the last look; they start at
    /// their earliest offset. A failure is logged and retried at the next
    /// interval: discovery must not fail a running job.
    fn discover(&mut self) {
        let result = self.owned_partitions().and_then(|owned| {
            let new: Vec<TopicPartition> = owned
                .into_iter()
                .filter(|tp| !self.splits.contains_key(tp))
                .collect();
            if !new.is_empty() {
                tracing::info!(subtask = self.subtask, partitions = ?new, "Kafka partitions discovered");
                self.add_splits(new, false)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "Kafka partition discovery failed; retrying at the next interval");
        }
        self.next_discovery = self.settings.discovery_interval.map(|d| Instant::now() + d);
    }

    /// A retriable failure: forget metadata, back off, and fail once
    /// failures have lasted longer than `request.timeout.ms`.
    fn retry_later(&mut self, error: KafkaError, what: &str) -> anyhow::Result<()> {
        self.metadata_stale = true;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let timeout = self.settings.properties.request_timeout;
        if since.elapsed() > timeout {
            return Err(anyhow::Error::new(error).context(format!(
                "{what}: retried for {} ms (request.timeout.ms) without success",
                timeout.as_millis()
            )));
        }
        tracing::warn!(error = %error, "{what}; refreshing metadata and retrying");
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    /// One Fetch per partition leader for every split without buffered
    /// records.
    fn fetch(&mut self) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        let props = &settings.properties;
        let (isolation, check_crcs) = (props.isolation, props.check_crcs);
        let cluster = self.cluster.as_mut().expect("opened");
        if self.metadata_stale {
            let mut topics: Vec<String> = self.splits.keys().map(|tp| tp.topic.clone()).collect();
            topics.dedup();
            if let Err(e) = cluster.refresh_metadata(Some(&topics)) {
                if e.is_retriable() || matches!(e, KafkaError::UnknownTopic(_)) {
                    return self.retry_later(e, "refreshing Kafka metadata failed");
                }
                return Err(e.into());
            }
            self.metadata_stale = false;
        }
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for split in self.splits.values() {
            if split.finished || split.buffer.is_some() {
                continue;
            }
            match cluster.leader(&split.tp) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((split.tp.clone(), split.next_offset)),
                None => self.metadata_stale = true,
            }
        }
        if by_leader.is_empty() {
            std::thread::sleep(Duration::from_millis(MAX_POLL_WAIT_MS as u64));
            return Ok(());
        }
        self.fetch_round = self.fetch_round.wrapping_add(1);
        for partitions in by_leader.values_mut() {
            let n = partitions.len();
            partitions.rotate_left(self.fetch_round % n);
        }
        let wait = props.fetch_max_wait_ms.min(MAX_POLL_WAIT_MS) / by_leader.len() as i32;
        let (min, max, per_partition) = (
            props.fetch_min_bytes,
            props.fetch_max_bytes,
            props.max_partition_fetch_bytes,
        );
        for (leader, partitions) in by_leader {
            let cluster = self.cluster.as_mut().expect("opened");
            match cluster.fetch(
                leader,
                &partitions,
                wait,
                min,
                max,
                per_partition,
                isolation,
            ) {
                Ok(answers) => {
                    self.failing_since = None;
                    for answer in answers {
                        self.on_fetched(leader, answer, check_crcs)?;
                    }
                }
                Err(e) if e.is_retriable() => {
                    if matches!(e, KafkaError::Connect { .. }) {
                        cluster.disconnect(leader);
                    }
                    self.retry_later(e, &format!("fetching from Kafka broker {leader} failed"))?;
                }
                Err(e) => {
                    let broker = broker_name(cluster, leader);
                    let names: Vec<String> =
                        partitions.iter().map(|(tp, _)| tp.to_string()).collect();
                    return Err(anyhow::Error::new(e).context(format!(
                        "fetching {} from Kafka broker {broker}",
                        names.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// One partition's part of a Fetch answer.
    fn on_fetched(
        &mut self,
        leader: i32,
        answer: FetchedPartition,
        check_crcs: bool,
    ) -> anyhow::Result<()> {
        let isolation = self.isolation();
        let Some(split) = self.splits.get_mut(&answer.tp) else {
            return Ok(());
        };
        match answer.error {
            None => {
                let read_committed = isolation == Isolation::ReadCommitted;
                let buffer = FetchBuffer::new(answer, leader, read_committed, check_crcs);
                if !buffer.is_empty() {
                    split.buffer = Some(buffer);
                    self.ready.push_back(split.tp.clone());
                }
                Ok(())
            }
            Some(ResponseError::OffsetOutOfRange) => {
                let (tp, offset) = (split.tp.clone(), split.next_offset);
                let strategy = self.settings.auto_offset_reset;
                let cluster = self.cluster.as_mut().expect("opened");
                let reset = reset_offsets(
                    cluster,
                    std::slice::from_ref(&tp),
                    strategy,
                    isolation,
                    |tp| format!("offset {offset} is out of range on broker {leader} for {tp}"),
                )?;
                let to = reset[&tp];
                tracing::warn!(partition = %tp, offset, reset_to = to, ?strategy, "Kafka offset out of range; reset per auto.offset.reset");
                self.splits.get_mut(&tp).expect("present").next_offset = to;
                Ok(())
            }
            Some(error) if error.is_retriable() => {
                let tp = split.tp.clone();
                self.retry_later(
                    KafkaError::Broker {
                        api: "Fetch",
                        context: Some(format!("{tp} on broker {leader}")),
                        error,
                    },
                    &format!("fetching {tp} failed"),
                )
            }
            Some(error) => {
                let context = format!(
                    "{} on broker {}",
                    split.tp,
                    broker_name(self.cluster.as_mut().expect("opened"), leader)
                );
                Err(KafkaError::Broker {
                    api: "Fetch",
                    context: Some(context),
                    error,
                }
                .into())
            }
        }
    }

    fn positions(&self) -> Vec<SplitPosition> {
        self.splits
            .values()
            .map(|s| SplitPosition {
                partition: s.tp.clone(),
                next_offset: s.next_offset,
                stopping_offset: s.stopping_offset,
            })
            .collect()
    }

    fn all_finished(&self) -> bool {
        self.settings.stopping.is_some() && self.splits.values().all(|s| s.finished)
    }
}

impl<T: Send + 'static> SourceReader<T> for KafkaSourceReader<T> {
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        let mut client = self.settings.client.clone();
        client.client_id = self.settings.properties.client_id_for(self.subtask);
        self.cluster = Some(KafkaCluster::new(client));
        let owned = self.owned_partitions()?;
        if let Some(restored) = &self.restored {
            let dropped: Vec<String> = restored
                .keys()
                .filter(|tp| {
                    split_owner(tp, self.parallelism) == self.subtask && !owned.contains(tp)
                })
                .map(ToString::to_string)
                .collect();
            if !dropped.is_empty() {
                tracing::warn!(partitions = ?dropped, "restored Kafka partitions are no longer subscribed or no longer exist; not read");
            }
        }
        let fresh = self.restored.is_none();
        self.add_splits(owned, fresh)?;
        self.next_discovery = self.settings.discovery_interval.map(|d| Instant::now() + d);
        tracing::info!(
            subtask = self.subtask,
            parallelism = self.parallelism,
            splits = self.splits.len(),
            restored = !fresh,
            "Kafka source reader opened"
        );
        Ok(())
    }

    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus> {
        self.timestamps.clear();
        if self.next_discovery.is_some_and(|at| Instant::now() >= at) {
            self.discover();
        }
        for fetched in [false, true] {
            while let Some(tp) = self.ready.front() {
                let split = self.splits.get_mut(tp).expect("a ready split exists");
                let drained =
                    split.drain(&*self.settings.deserializer, out, &mut self.timestamps, max);
                let id = split.id;
                let leader = split.buffer.as_ref().map_or(-1, |b| b.leader);
                let cluster = &mut self.cluster;
                let drained = drained.map_err(|e| match e {
                    DrainError::Corrupt(c) => anyhow::Error::new(KafkaError::CorruptRecords {
                        partition: tp.to_string(),
                        broker: cluster
                            .as_mut()
                            .map_or(format!("id {leader}"), |c| broker_name(c, leader)),
                        message: c.0,
                    }),
                    DrainError::Deserialize { offset, error } => error.context(format!(
                        "cannot deserialize the Kafka record at {tp} offset {offset}"
                    )),
                })?;
                // One poll's worth per partition in turn: a broker may
                // answer with much more for one partition than another.
                let tp = self.ready.pop_front().expect("front exists");
                if drained == Drained::Full {
                    self.ready.push_back(tp);
                }
                if drained == Drained::Finished {
                    self.finished.push(id);
                }
                if !out.is_empty() {
                    self.current = id;
                    return Ok(SourceStatus::MoreAvailable);
                }
            }
            if self.all_finished() {
                return Ok(SourceStatus::Finished);
            }
            if !fetched {
                self.fetch()?;
            }
        }
        Ok(if self.ready.is_empty() {
            SourceStatus::NothingAvailable
        } else {
            SourceStatus::MoreAvailable
        })
    }

    fn current_split(&self) -> SplitId {
        self.current
    }

    fn record_timestamps(&self) -> &[i64] {
        &self.timestamps
    }

    fn finished_splits(&mut self, out: &mut Vec<SplitId>) {
        out.append(&mut self.finished);
    }

    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(encode_positions(&self.positions()))
    }

    fn snapshot_checkpoint(&mut self, checkpoint_id: u64) -> anyhow::Result<Vec<u8>> {
        if self.settings.commit_on_checkpoint {
            let offsets = self
                .splits
                .values()
                .map(|s| (s.tp.clone(), s.next_offset))
                .collect();
            self.pending_commits.insert(checkpoint_id, offsets);
            while self.pending_commits.len() > MAX_PENDING_COMMITS {
                self.pending_commits.pop_first();
            }
        }
        self.snapshot_state()
    }

    /// Commits the offsets of checkpoint `checkpoint_id` to the group (for
    /// monitoring: a failure is logged, never fails the job, as in Flink).
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        let offsets = self.pending_commits.remove(&checkpoint_id);
        self.pending_commits = self.pending_commits.split_off(&(checkpoint_id + 1));
        let (Some(offsets), Some(group), Some(cluster)) = (
            offsets,
            self.settings.properties.group_id.as_deref(),
            self.cluster.as_mut(),
        ) else {
            return Ok(());
        };
        if offsets.is_empty() {
            return Ok(());
        }
        match cluster.commit_offsets(group, &offsets) {
            Ok(()) => tracing::debug!(checkpoint_id, group, "Kafka offsets committed"),
            Err(e) => tracing::warn!(
                checkpoint_id,
                group,
                error = %e,
                "committing Kafka offsets failed (they are for monitoring; the job goes on)"
            ),
        }
        Ok(())
    }

    fn position_redistribution(&self) -> PositionRedistribution {
        PositionRedistribution::Union
    }

    fn restore_state(&mut self, state: &[u8]) -> anyhow::Result<()> {
        self.restore_splits(vec![state.to_vec()])
    }

    /// Every old subtask's positions (union redistribution); the reader
    /// keeps those of the partitions it owns when it opens.
    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let mut restored = BTreeMap::new();
        for state in &states {
            let positions = decode_positions(state)
                .map_err(NonRecoverable::wrap)
                .context("restoring the Kafka source")?;
            for p in positions {
                restored.insert(p.partition.clone(), p);
            }
        }
        self.restored = Some(restored);
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.cluster = None;
        self.ready.clear();
        for split in self.splits.values_mut() {
            split.buffer = None;
        }
        Ok(())
    }
}
