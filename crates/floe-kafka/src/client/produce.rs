//! Producing: plain, or inside a transaction whose producer id and epoch
//! the caller can store and later finish from another process.
//!
//! Records are gathered per partition into [`BatchBuilder`]s and sent by
//! [`Producer::flush`] as one Produce request per partition leader. An
//! idempotent or transactional producer numbers each partition's batches;
//! a batch resent after a lost answer carries the same sequence, so the
//! broker keeps it once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProduceRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{ClientConfig, CoordinatorKind, KafkaCluster, TopicPartition};
use super::records::{BatchBuilder, ProducerIdentity};
use super::topic_name;
use crate::error::{KafkaError, check};

/// Produce v3–v12 share the fields Floe fills (v13 names topics by id).
const PRODUCE_CAP: i16 = 12;
/// InitProducerId v4 (KIP-360); v5+ adds preparing 2PC, which Floe does
/// not use.
const INIT_PRODUCER_ID_CAP: i16 = 4;
/// AddPartitionsToTxn v0–v3 is the client form; v4+ is broker to broker.
const ADD_PARTITIONS_CAP: i16 = 3;
/// EndTxn v0–v4 (v5 changes epoch handling, KIP-890).
const END_TXN_CAP: i16 = 4;
/// How often a retriable failure (leader moved, coordinator loading) is
/// retried before it is returned.
const RETRIES: usize = 20;

/// When a write counts as done (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget (`acks=0`).
    None,
    /// The leader has it (`acks=1`).
    Leader,
    /// Every in-sync replica has it (`acks=all`); required for
    /// idempotent and transactional producers.
    All,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// A transactional producer's durable identity: enough to commit or
/// abort its open transaction from any process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransactionHandle {
    /// The transactional id (`<prefix>-<subtask>-<checkpoint id>`).
    pub transactional_id: String,
    /// The producer id and epoch InitProducerId gave it.
    pub producer: ProducerIdentity,
}

fn txn_id(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.to_string()))
}

/// Sleeps a little longer at each retry (10 ms, 20 ms, … up to 1 s).
fn backoff(attempt: usize) {
    let ms = (10u64 << attempt.min(7)).min(1000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// A producer writing to one cluster.
pub struct Producer {
    cluster: KafkaCluster,
    acks: Acks,
    timeout_ms: i32,
    transaction: Option<TransactionHandle>,
    /// The next sequence number by partition (idempotent/transactional).
    sequences: HashMap<TopicPartition, i32>,
    /// Partitions already added to the open transaction.
    in_transaction: BTreeSet<TopicPartition>,
    batches: BTreeMap<TopicPartition, BatchBuilder>,
    buffered_bytes: usize,
}

impl Producer {
    /// A plain producer (no ids, no sequences).
    pub fn new(config: ClientConfig, acks: Acks) -> Self {
        Producer::on(KafkaCluster::new(config), acks)
    }

    /// A plain producer over an existing client, keeping its connections
    /// and metadata.
    pub fn on(cluster: KafkaCluster, acks: Acks) -> Self {
        let timeout_ms = cluster.config().request_timeout.as_millis() as i32;
        Producer {
            cluster,
            acks,
            timeout_ms,
            transaction: None,
            sequences: HashMap::new(),
            in_transaction: BTreeSet::new(),
            batches: BTreeMap::new(),
            buffered_bytes: 0,
        }
    }

    /// A transactional producer for `transactional_id`: InitProducerId
    /// fences every earlier producer of that id and aborts the
    /// transaction it left open. The returned epoch is 0 only for an id
    /// never used before — what lingering-transaction probing looks for.
    pub fn transactional(
        config: ClientConfig,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<Self, KafkaError> {
        Producer::transactional_on(
            KafkaCluster::new(config),
            transactional_id,
            transaction_timeout_ms,
        )
    }

    /// [`Self::transactional`] over an existing client: a sink starting a
    /// transaction per checkpoint keeps its connections.
    pub fn transactional_on(
        cluster: KafkaCluster,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<Self, KafkaError> {
        let mut producer = Producer::on(cluster, Acks::All);
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(transactional_id)))
            .with_transaction_timeout_ms(transaction_timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = producer.coordinator_request(transactional_id, |conn| {
            let r = conn.send(&request, INIT_PRODUCER_ID_CAP)?;
            check("InitProducerId", r.error_code, || {
                format!("transactional id '{transactional_id}'")
            })?;
            Ok(r)
        })?;
        producer.transaction = Some(TransactionHandle {
            transactional_id: transactional_id.to_string(),
            producer: ProducerIdentity {
                producer_id: response.producer_id.0,
                epoch: response.producer_epoch,
            },
        });
        Ok(producer)
    }

    /// The transactional identity, for a checkpoint.
    pub fn transaction(&self) -> Option<&TransactionHandle> {
        self.transaction.as_ref()
    }

    /// Records buffered and not yet sent.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Buffers a record for `tp`; [`Self::flush`] sends it.
    #[inline]
    pub fn send(
        &mut self,
        tp: &TopicPartition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) {
        let batch = match self.batches.get_mut(tp) {
            Some(b) => b,
            None => self.batches.entry(tp.clone()).or_default(),
        };
        let before = batch.size_bytes();
        batch.push(key, value, timestamp);
        self.buffered_bytes += batch.size_bytes() - before;
    }

    /// The partition count of `topic` (for partitioning records).
    pub fn partitions(&mut self, topic: &str) -> Result<i32, KafkaError> {
        let counts = self.cluster.refresh_metadata(Some(&[topic.to_string()]))?;
        Ok(counts.get(topic).copied().unwrap_or(0))
    }

    /// Runs `f` against the transaction coordinator of `transactional_id`,
    /// finding it again and retrying while the error is retriable.
    fn coordinator_request<R>(
        &mut self,
        transactional_id: &str,
        mut f: impl FnMut(&mut super::BrokerConnection) -> Result<R, KafkaError>,
    ) -> Result<R, KafkaError> {
        let mut attempt = 0;
        loop {
            let result = self
                .cluster
                .find_coordinator(CoordinatorKind::Transaction, transactional_id)
                .and_then(|id| {
                    let r = self.cluster.broker(id).and_then(&mut f);
                    if matches!(r, Err(KafkaError::Io { .. })) {
                        self.cluster.disconnect(id);
                    }
                    r
                });
            match result {
                Err(e) if e.is_retriable() && attempt < RETRIES => {
                    if matches!(e, KafkaError::Connect { .. } | KafkaError::Io { .. }) {
                        self.cluster.disconnect_all();
                    }
                    backoff(attempt);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Adds the partitions of the buffered batches to the open
    /// transaction (a broker refuses transactional writes to partitions
    /// the coordinator was not told about).
    fn add_partitions(&mut self) -> Result<(), KafkaError> {
        let Some(txn) = self.transaction.clone() else {
            return Ok(());
        };
        let new: Vec<TopicPartition> = self
            .batches
            .keys()
            .filter(|tp| !self.in_transaction.contains(*tp))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &new {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(&txn.transactional_id))
            .with_v3_and_below_producer_id(ProducerId(txn.producer.producer_id))
            .with_v3_and_below_producer_epoch(txn.producer.epoch)
            .with_v3_and_below_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let id = txn.transactional_id.clone();
        self.coordinator_request(&id, |conn| {
            let r = conn.send(&request, ADD_PARTITIONS_CAP)?;
            check("AddPartitionsToTxn", r.error_code, || {
                format!("transactional id '{id}'")
            })?;
            for t in &r.results_by_topic_v3_and_below {
                for p in &t.results_by_partition {
                    check("AddPartitionsToTxn", p.partition_error_code, || {
                        format!(
                            "{}-{} in transaction '{id}'",
                            t.name.0.as_str(),
                            p.partition_index
                        )
                    })?;
                }
            }
            Ok(())
        })?;
        self.in_transaction.extend(new);
        Ok(())
    }

    /// Sends every buffered record and waits for the brokers' answers
    /// (with `acks` other than `None`). After it returns, what was sent is
    /// durable per `acks` (and, in a transaction, still invisible).
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        if self.batches.is_empty() {
            return Ok(());
        }
        self.add_partitions()?;
        let producer = self
            .transaction
            .as_ref()
            .map_or(ProducerIdentity::NONE, |t| t.producer);
        let transactional = self.transaction.is_some();
        // Seal each partition's batch once; a retry resends the same bytes
        // (same sequence), which the broker deduplicates.
        let mut sealed: Vec<(TopicPartition, bytes::Bytes, i32)> =
            Vec::with_capacity(self.batches.len());
        for (tp, mut batch) in std::mem::take(&mut self.batches) {
            let count = batch.len() as i32;
            let sequence = if transactional {
                *self.sequences.get(&tp).unwrap_or(&0)
            } else {
                -1
            };
            sealed.push((tp, batch.finish(producer, sequence, transactional), count));
        }
        self.buffered_bytes = 0;
        let mut attempt = 0;
        while !sealed.is_empty() {
            let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            for (i, (tp, _, _)) in sealed.iter().enumerate() {
                by_leader
                    .entry(self.cluster.leader_of(tp)?)
                    .or_default()
                    .push(i);
            }
            let mut failed: Vec<usize> = Vec::new();
            let mut last_error = None;
            for (leader, indexes) in by_leader {
                match self.produce_to(leader, &sealed, &indexes) {
                    Ok(errors) => {
                        for (i, e) in errors {
                            failed.push(i);
                            last_error = Some(e);
                        }
                    }
                    Err(e) => {
                        if matches!(e, KafkaError::Io { .. } | KafkaError::Connect { .. }) {
                            self.cluster.disconnect(leader);
                        }
                        failed.extend(indexes);
                        last_error = Some(e);
                    }
                }
            }
            let done: Vec<bool> = (0..sealed.len()).map(|i| !failed.contains(&i)).collect();
            let mut kept = Vec::new();
            for (i, s) in sealed.into_iter().enumerate() {
                if done[i] {
                    if transactional {
                        *self.sequences.entry(s.0.clone()).or_insert(0) += s.2;
                    }
                } else {
                    kept.push(s);
                }
            }
            sealed = kept;
            if let Some(e) = last_error {
                if !e.is_retriable() || attempt >= RETRIES {
                    return Err(e);
                }
                let topics: Vec<String> = sealed.iter().map(|s| s.0.topic.clone()).collect();
                let _ = self.cluster.refresh_metadata(Some(&topics));
                backoff(attempt);
                attempt += 1;
            }
        }
        Ok(())
    }

    /// One Produce request to `leader` with the batches at `indexes`;
    /// returns the batches the broker refused, with why.
    fn produce_to(
        &mut self,
        leader: i32,
        sealed: &[(TopicPartition, bytes::Bytes, i32)],
        indexes: &[usize],
    ) -> Result<Vec<(usize, KafkaError)>, KafkaError> {
        let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        for &i in indexes {
            let (tp, bytes, _) = &sealed[i];
            topics.entry(&tp.topic).or_default().push(
                PartitionProduceData::default()
                    .with_index(tp.partition)
                    .with_records(Some(bytes.clone())),
            );
        }
        let request = ProduceRequest::default()
            .with_transactional_id(
                self.transaction
                    .as_ref()
                    .map(|t| txn_id(&t.transactional_id)),
            )
            .with_acks(self.acks.code())
            .with_timeout_ms(self.timeout_ms)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TopicProduceData::default()
                            .with_name(topic_name(t))
                            .with_partition_data(ps)
                    })
                    .collect(),
            );
        let conn = self.cluster.broker(leader)?;
        if self.acks == Acks::None {
            conn.send_no_response(&request, PRODUCE_CAP)?;
            return Ok(Vec::new());
        }
        let response = conn.send(&request, PRODUCE_CAP)?;
        let mut refused = Vec::new();
        for t in &response.responses {
            for p in &t.partition_responses {
                let Some(error) = ResponseError::try_from_code(p.error_code) else {
                    continue;
                };
                // A duplicate is a batch the broker already has: a resend
                // after a lost answer. It counts as written.
                if error == ResponseError::DuplicateSequenceNumber {
                    continue;
                }
                if let Some(&i) = indexes.iter().find(|&&i| {
                    sealed[i].0.topic == t.name.0.as_str() && sealed[i].0.partition == p.index
                }) {
                    refused.push((
                        i,
                        KafkaError::Broker {
                            api: "Produce",
                            context: Some(format!(
                                "{}{}",
                                sealed[i].0,
                                p.error_message
                                    .as_ref()
                                    .map(|m| format!(" ({})", m.as_str()))
                                    .unwrap_or_default()
                            )),
                            error,
                        },
                    ));
                }
            }
        }
        Ok(refused)
    }

    /// Starts the next transaction of this producer (after a commit or
    /// abort): the coordinator learns its partitions anew.
    pub fn begin_transaction(&mut self) {
        self.in_transaction.clear();
    }

    /// Flushes and commits the open transaction.
    pub fn commit_transaction(&mut self) -> Result<(), KafkaError> {
        self.flush()?;
        self.end_transaction(true)
    }

    /// Drops what was buffered and aborts the open transaction.
    pub fn abort_transaction(&mut self) -> Result<(), KafkaError> {
        self.batches.clear();
        self.buffered_bytes = 0;
        self.end_transaction(false)
    }

    fn end_transaction(&mut self, commit: bool) -> Result<(), KafkaError> {
        let Some(txn) = self.transaction.clone() else {
            return Ok(());
        };
        if self.in_transaction.is_empty() {
            // Nothing was written: the coordinator holds no transaction.
            return Ok(());
        }
        end_transaction(&mut self.cluster, &txn, commit)?;
        self.in_transaction.clear();
        Ok(())
    }

    /// The cluster this producer writes to.
    pub fn cluster(&mut self) -> &mut KafkaCluster {
        &mut self.cluster
    }

    /// The client, with its connections, for the next producer.
    pub fn into_cluster(self) -> KafkaCluster {
        self.cluster
    }
}

/// Commits or aborts the transaction of `txn` from any process, with the
/// producer id and epoch stored when it was pre-committed: how a restored
/// job finishes what the failed attempt pre-committed. Committing a
/// transaction that is already committed succeeds (the coordinator takes
/// it as a retry).
pub fn end_transaction(
    cluster: &mut KafkaCluster,
    txn: &TransactionHandle,
    commit: bool,
) -> Result<(), KafkaError> {
    let request = EndTxnRequest::default()
        .with_transactional_id(txn_id(&txn.transactional_id))
        .with_producer_id(ProducerId(txn.producer.producer_id))
        .with_producer_epoch(txn.producer.epoch)
        .with_committed(commit);
    let mut attempt = 0;
    loop {
        let result = cluster
            .find_coordinator(CoordinatorKind::Transaction, &txn.transactional_id)
            .and_then(|id| {
                let r = cluster
                    .broker(id)
                    .and_then(|c| c.send(&request, END_TXN_CAP));
                if matches!(r, Err(KafkaError::Io { .. })) {
                    cluster.disconnect(id);
                }
                r
            })
            .and_then(|r| {
                check("EndTxn", r.error_code, || {
                    format!(
                        "transactional id '{}' (producer id {}, epoch {}, {})",
                        txn.transactional_id,
                        txn.producer.producer_id,
                        txn.producer.epoch,
                        if commit { "commit" } else { "abort" }
                    )
                })
            });
        match result {
            Err(e) if e.is_retriable() && attempt < RETRIES => {
                if matches!(e, KafkaError::Connect { .. } | KafkaError::Io { .. }) {
                    cluster.disconnect_all();
                }
                backoff(attempt);
                attempt += 1;
            }
            other => return other,
        }
    }
}
