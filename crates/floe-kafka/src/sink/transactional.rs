//! Exactly-once: one Kafka transaction per subtask and checkpoint, driven
//! by Floe's two-phase-commit sink framework.
//!
//! A transaction's id is `<prefix>-<subtask>-<n>`, where `n` is the id of
//! the checkpoint expected to pre-commit it (the last pre-committing
//! checkpoint + 1, or the restored checkpoint + 1). Records go into it as
//! they come; at the barrier it is flushed (durable, still invisible) and
//! its producer id and epoch go into the checkpoint; when the checkpoint
//! completes it is committed. After a failure the restored job commits
//! what the checkpoint recorded (from the stored id and epoch, from any
//! process), and aborts what the failed attempt left open by initialising
//! the ids after the restored checkpoint in sequence until one was never
//! used (Flink's probing): a fresh InitProducerId on an id aborts its
//! open transaction, and epoch 0 means the id is new. Every checkpoint
//! pre-commits a transaction, an empty one if need be, so the ids of one
//! attempt have no gaps for that probe to stop at.

use kafka_protocol::ResponseError;

use super::router::RecordRouter;
use super::serializer::KafkaRecordSerializationSchema;
use crate::client::{ClientConfig, KafkaCluster, Producer, TransactionHandle, end_transaction};
use floe_runtime::{TaskInfo, TwoPhaseCommitSink};

/// What a checkpoint keeps of one pre-committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaCommittable {
    /// The transactional id and the producer id and epoch to finish it.
    pub handle: TransactionHandle,
    /// False for a transaction no record went into: there is nothing to
    /// commit (the coordinator holds no transaction for it).
    pub wrote: bool,
}

/// The exactly-once side of [`super::KafkaSink`].
pub(crate) struct KafkaTransactions<T> {
    config: ClientConfig,
    prefix: String,
    transaction_timeout_ms: i32,
    max_request_bytes: usize,
    schema: KafkaRecordSerializationSchema<T>,
    router: Option<RecordRouter<T>>,
    producer: Option<Producer>,
    /// The producer of the next transaction, initialised ahead (at open):
    /// every attempt claims its first id at once, so the ids of old
    /// subtasks have no gaps for the probe of a later restore.
    prepared: Option<Producer>,
    /// The client between producers: connections and metadata kept from
    /// one checkpoint's transaction to the next.
    cluster: Option<KafkaCluster>,
    /// The client that commits (a commit may run while the next
    /// transaction's producer holds `cluster`).
    committer: Option<KafkaCluster>,
    subtask: u32,
    parallelism: u32,
    /// The number in the next transaction's id.
    next_id: u64,
}

impl<T> Clone for KafkaTransactions<T> {
    /// A fresh copy for another subtask: configuration only, no client,
    /// producer or position.
    fn clone(&self) -> Self {
        KafkaTransactions::new(
            self.config.clone(),
            self.prefix.clone(),
            self.transaction_timeout_ms,
            self.max_request_bytes,
            self.schema.clone(),
        )
    }
}

impl<T> KafkaTransactions<T> {
    pub(crate) fn new(
        config: ClientConfig,
        prefix: String,
        transaction_timeout_ms: i32,
        max_request_bytes: usize,
        schema: KafkaRecordSerializationSchema<T>,
    ) -> Self {
        KafkaTransactions {
            config,
            prefix,
            transaction_timeout_ms,
            max_request_bytes,
            schema,
            router: None,
            producer: None,
            prepared: None,
            cluster: None,
            committer: None,
            subtask: 0,
            parallelism: 1,
            next_id: 1,
        }
    }

    fn transactional_id(&self, subtask: u32, n: u64) -> String {
        format!("{}-{}-{}", self.prefix, subtask, n)
    }

    /// The shared client, created on first use.
    fn take_cluster(&mut self) -> KafkaCluster {
        self.cluster
            .take()
            .unwrap_or_else(|| KafkaCluster::new(self.config.clone()))
    }

    /// A transactional producer for id `id`, over the shared client.
    fn init_producer_for(&mut self, id: &str) -> Result<Producer, crate::KafkaError> {
        let cluster = self.take_cluster();
        Producer::transactional_on(cluster, id, self.transaction_timeout_ms)
    }

    /// A transactional producer for this subtask's id number `n`.
    fn init_producer(&mut self, n: u64) -> anyhow::Result<Producer> {
        let id = self.transactional_id(self.subtask, n);
        self.init_producer_for(&id).map_err(|e| {
            anyhow::anyhow!(e).context(format!("cannot start Kafka transaction '{id}'"))
        })
    }

    /// Commits or aborts `txn` from its stored handle over the shared
    /// client.
    fn finish(&mut self, txn: &KafkaCommittable, commit: bool) -> Result<(), crate::KafkaError> {
        let config = &self.config;
        let cluster = self
            .committer
            .get_or_insert_with(|| KafkaCluster::new(config.clone()));
        end_transaction(cluster, &txn.handle, commit)
    }

    /// Aborts what earlier attempts left open for old subtask `subtask`
    /// from id number `from` on; returns how many ids were in use.
    fn abort_lingering_of(&mut self, subtask: u32, from: u64) -> anyhow::Result<u64> {
        let mut n = from;
        loop {
            let id = self.transactional_id(subtask, n);
            let producer = self.init_producer_for(&id).map_err(|e| {
                anyhow::anyhow!(e)
                    .context(format!("cannot abort lingering Kafka transaction '{id}'"))
            })?;
            let epoch = producer.transaction().map_or(0, |t| t.producer.epoch);
            self.cluster = Some(producer.into_cluster());
            if epoch == 0 {
                return Ok(n - from);
            }
            tracing::info!(transactional_id = %id, epoch, "aborted a lingering Kafka transaction");
            n += 1;
        }
    }
}

fn is_already_finished(e: &crate::KafkaError) -> bool {
    matches!(
        e.broker_error(),
        Some(
            ResponseError::ProducerFenced
                | ResponseError::InvalidProducerEpoch
                | ResponseError::InvalidTxnState
                | ResponseError::InvalidProducerIdMapping
        )
    )
}

impl<T: Send + 'static> TwoPhaseCommitSink<T> for KafkaTransactions<T> {
    type Transaction = KafkaCommittable;

    fn open(&mut self, info: &TaskInfo, restored_checkpoint: Option<u64>) -> anyhow::Result<()> {
        self.subtask = info.subtask_index;
        self.parallelism = info.parallelism;
        let from = restored_checkpoint.map_or(1, |c| c + 1);
        // This subtask's own ids, then those of old subtasks that no
        // longer exist (scaled down) that fall to it: subtask + k * p, up
        // to the first that never wrote.
        let mut old = self.subtask;
        loop {
            let used = self.abort_lingering_of(old, from)?;
            if used == 0 && old != self.subtask {
                break;
            }
            old += self.parallelism;
        }
        self.next_id = from;
        let mut router = RecordRouter::new(self.schema.clone(), self.subtask);
        let mut probe = Producer::on(self.take_cluster(), crate::client::Acks::All);
        router.refresh_partitions(&mut probe)?;
        self.cluster = Some(probe.into_cluster());
        self.router = Some(router);
        self.prepared = Some(self.init_producer(self.next_id)?);
        Ok(())
    }

    fn transaction_per_checkpoint(&self) -> bool {
        true
    }

    fn begin_transaction(&mut self) -> anyhow::Result<KafkaCommittable> {
        let expected = self.transactional_id(self.subtask, self.next_id);
        let producer = match self.prepared.take() {
            Some(p)
                if p.transaction()
                    .is_some_and(|t| t.transactional_id == expected) =>
            {
                p
            }
            _ => self.init_producer(self.next_id)?,
        };
        let handle = producer.transaction().expect("transactional").clone();
        self.producer = Some(producer);
        Ok(KafkaCommittable {
            handle,
            wrote: false,
        })
    }

    fn write(&mut self, txn: &mut KafkaCommittable, records: &mut Vec<T>) -> anyhow::Result<()> {
        let producer = self.producer.as_mut().expect("a transaction is open");
        let router = self.router.as_mut().expect("opened");
        router.route(records, producer)?;
        txn.wrote |= !records.is_empty();
        if producer.buffered_bytes() >= self.max_request_bytes {
            producer.flush()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut KafkaCommittable, checkpoint_id: u64) -> anyhow::Result<()> {
        if let Some(mut producer) = self.producer.take() {
            producer.flush().map_err(|e| {
                anyhow::anyhow!(e).context(format!(
                    "cannot pre-commit Kafka transaction '{}'",
                    txn.handle.transactional_id
                ))
            })?;
            self.cluster = Some(producer.into_cluster());
        }
        self.next_id = checkpoint_id + 1;
        Ok(())
    }

    fn commit(&mut self, txn: KafkaCommittable) -> anyhow::Result<()> {
        if !txn.wrote {
            return Ok(());
        }
        self.finish(&txn, true).map_err(|e| {
            anyhow::anyhow!(e).context(format!(
                "cannot commit Kafka transaction '{}'",
                txn.handle.transactional_id
            ))
        })
    }

    fn abort(&mut self, txn: KafkaCommittable) -> anyhow::Result<()> {
        self.producer = None;
        if !txn.wrote {
            return Ok(());
        }
        self.finish(&txn, false)?;
        Ok(())
    }

    fn recover_and_commit(&mut self, txn: KafkaCommittable) -> anyhow::Result<()> {
        if !txn.wrote {
            return Ok(());
        }
        match self.finish(&txn, true) {
            Ok(()) => Ok(()),
            // A later producer of the id fenced this one: the transaction
            // was finished before (committed by an earlier restore, or
            // aborted by the broker's transaction timeout). Flink's
            // committer logs and goes on, as does Floe.
            Err(e) if is_already_finished(&e) => {
                tracing::warn!(
                    transactional_id = %txn.handle.transactional_id,
                    error = %e,
                    "a restored Kafka transaction was already finished; if the broker's transaction timeout aborted it, its records are lost: keep transaction.timeout.ms well above the time a restore can take"
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(e).context(format!(
                "cannot commit restored Kafka transaction '{}'",
                txn.handle.transactional_id
            ))),
        }
    }
}
