//! Exactly-once sinks by two-phase commit (Flink's
//! `TwoPhaseCommitSinkFunction`).
//!
//! Records go into a transaction. At a checkpoint barrier the transaction
//! is pre-committed (made durable, still invisible) and recorded in the
//! sink's operator state under that checkpoint's id; a fresh transaction
//! starts with the next record. When the coordinator reports checkpoint
//! `n` complete, every pre-committed transaction up to `n` is committed
//! (made visible). A failure rewinds the job to the last completed
//! checkpoint: what it recorded as pre-committed is committed again —
//! idempotently, since the notification may have been lost or cut short —
//! and the transaction that was open at that checkpoint is aborted, so
//! every record becomes visible exactly once.
//!
//! Without checkpointing nothing can be rewound exactly, so the last
//! transaction is committed when the input ends.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{FunctionInitializationContext, FunctionSnapshotContext, TaskInfo};
use crate::error::NonRecoverable;
use crate::function::{CheckpointListener, CheckpointedFunction};
use crate::sink::SinkWriter;
use floe_core::failpoint;
use floe_state::{ListStateDescriptor, OperatorListState};

/// A transactional external system, as a two-phase-commit sink sees it.
pub trait TwoPhaseCommitSink<T>: Send + 'static {
    /// What identifies a transaction durably (stored in checkpoints, so it
    /// must be enough to commit or abort it from another process).
    type Transaction: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// Prepares the subtask (after recovery finished), e.g. removes
    /// leftovers of transactions no checkpoint knows about.
    /// `restored_checkpoint` is the checkpoint the job restarted from.
    fn open(&mut self, info: &TaskInfo, restored_checkpoint: Option<u64>) -> anyhow::Result<()>;

    /// Starts a transaction.
    fn begin_transaction(&mut self) -> anyhow::Result<Self::Transaction>;

    /// Writes records into the open transaction.
    fn write(&mut self, txn: &mut Self::Transaction, records: &mut Vec<T>) -> anyhow::Result<()>;

    /// Makes the transaction durable but not yet visible; after this it can
    /// be committed even by another process. `checkpoint_id` is the
    /// checkpoint it belongs to.
    fn pre_commit(&mut self, txn: &mut Self::Transaction, checkpoint_id: u64)
    -> anyhow::Result<()>;

    /// Makes a pre-committed transaction visible. Must be idempotent: after
    /// a failure it is called again for transactions it may already have
    /// committed.
    fn commit(&mut self, txn: Self::Transaction) -> anyhow::Result<()>;

    /// Drops a transaction that will never be committed.
    fn abort(&mut self, txn: Self::Transaction) -> anyhow::Result<()>;

    /// Where this sink's transactions live (e.g. an output directory),
    /// recorded beside them in checkpoints so that a restore
    /// whose transactions cannot be found can say where they were written.
    fn location(&self) -> Option<String> {
        None
    }

    /// True if every checkpoint must pre-commit a transaction, an empty
    /// one if no record arrived since the last: for systems whose
    /// transaction names follow checkpoint ids and whose restore finds
    /// leftovers by probing names in sequence (Kafka), a checkpoint
    /// without a transaction would leave a gap in the sequence.
    fn transaction_per_checkpoint(&self) -> bool {
        false
    }

    /// Commits a pre-committed transaction found in restored state.
    fn recover_and_commit(&mut self, txn: Self::Transaction) -> anyhow::Result<()> {
        self.commit(txn)
    }

    /// Aborts the transaction that was open when the restored checkpoint
    /// was taken.
    fn recover_and_abort(&mut self, txn: Self::Transaction) -> anyhow::Result<()> {
        self.abort(txn)
    }
}

/// What one subtask keeps in its operator state (under [`STATE_NAME`]).
///
/// Public so that a sink that moved off this framework can still register
/// the state under its recorded type and read snapshots written through
/// it (the file sink does): the state's type name is part of its recorded
/// schema.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TwoPhaseState<X> {
    /// Pre-committed transactions by checkpoint id, ascending.
    pub pending: Vec<(u64, X)>,
}

/// Runs a [`TwoPhaseCommitSink`] as a [`SinkWriter`] that takes part in
/// checkpoints.
pub struct TwoPhaseCommitSinkWriter<T, S: TwoPhaseCommitSink<T>> {
    sink: S,
    current: Option<S::Transaction>,
    pending: Vec<(u64, S::Transaction)>,
    state: Option<OperatorListState<TwoPhaseState<S::Transaction>>>,
    location_state: Option<OperatorListState<String>>,
    restored_checkpoint: Option<u64>,
    checkpointing: bool,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T, S: TwoPhaseCommitSink<T> + Clone> Clone for TwoPhaseCommitSinkWriter<T, S> {
    fn clone(&self) -> Self {
        TwoPhaseCommitSinkWriter::new(self.sink.clone())
    }
}

/// The operator state name under which pre-committed transactions are kept.
pub const STATE_NAME: &str = "two-phase-commit-transactions";

/// The operator state name under which each subtask keeps its sink's
/// [`TwoPhaseCommitSink::location`] (union: every subtask sees all of them
/// on restore). Snapshots older than it lack it, which only shortens an
/// error message.
pub const LOCATION_STATE_NAME: &str = "two-phase-commit-location";

impl<T, S: TwoPhaseCommitSink<T>> TwoPhaseCommitSinkWriter<T, S> {
    /// Wraps `sink`.
    pub fn new(sink: S) -> Self {
        TwoPhaseCommitSinkWriter {
            sink,
            current: None,
            pending: Vec::new(),
            state: None,
            location_state: None,
            restored_checkpoint: None,
            checkpointing: false,
            _t: std::marker::PhantomData,
        }
    }

    fn commit_up_to(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        let split = self.pending.partition_point(|(id, _)| *id <= checkpoint_id);
        for (id, txn) in self.pending.drain(..split) {
            failpoint::hit("sink.commit");
            self.sink.commit(txn).map_err(|e| {
                e.context(format!("cannot commit the transaction of checkpoint {id}"))
            })?;
        }
        Ok(())
    }
}

impl<T: Send + 'static, S: TwoPhaseCommitSink<T>> SinkWriter<T> for TwoPhaseCommitSinkWriter<T, S> {
    fn open(&mut self, info: &TaskInfo) -> anyhow::Result<()> {
        self.sink.open(info, self.restored_checkpoint)
    }

    fn write(&mut self, value: T) -> anyhow::Result<()> {
        self.write_batch(&mut vec![value])
    }

    fn write_batch(&mut self, batch: &mut Vec<T>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = match &mut self.current {
            Some(t) => t,
            None => self.current.insert(self.sink.begin_transaction()?),
        };
        self.sink.write(txn, batch)?;
        batch.clear();
        Ok(())
    }

    fn checkpointed_function(&mut self) -> Option<&mut dyn CheckpointedFunction> {
        Some(self)
    }

    fn checkpoint_listener(&mut self) -> Option<&mut dyn CheckpointListener> {
        Some(self)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if self.checkpointing {
            // The job's final checkpoint pre-commits and then commits it.
            return Ok(());
        }
        if let Some(mut txn) = self.current.take() {
            let next = self.pending.last().map_or(1, |(id, _)| id + 1);
            self.sink.pre_commit(&mut txn, next)?;
            self.pending.push((next, txn));
        }
        self.commit_up_to(u64::MAX)
    }
}

/// Pre-committed transactions are operator state: restored (and committed)
/// before `open`, recorded at every barrier.
impl<T, S: TwoPhaseCommitSink<T>> CheckpointedFunction for TwoPhaseCommitSinkWriter<T, S> {
    fn initialize_state(
        &mut self,
        ctx: &mut FunctionInitializationContext<'_>,
    ) -> anyhow::Result<()> {
        let state = ctx
            .operator_state_store()
            .get_list_state(&ListStateDescriptor::new(STATE_NAME))?;
        let location_state = ctx
            .operator_state_store()
            .get_union_list_state(&ListStateDescriptor::new(LOCATION_STATE_NAME))?;
        self.restored_checkpoint = ctx.restored_checkpoint_id();
        self.checkpointing = ctx.is_checkpointing_enabled();
        if ctx.is_restored() {
            // The notification of the restored checkpoint may never have
            // arrived: everything it recorded as pre-committed is final.
            let restored: Vec<TwoPhaseState<S::Transaction>> = state.get(ctx)?.to_vec();
            let mut all: Vec<(u64, S::Transaction)> =
                restored.into_iter().flat_map(|s| s.pending).collect();
            all.sort_by_key(|(id, _)| *id);
            let here = self.sink.location();
            let mut elsewhere: Vec<String> = location_state
                .get(ctx)?
                .iter()
                .filter(|l| Some(*l) != here.as_ref())
                .cloned()
                .collect();
            elsewhere.sort_unstable();
            elsewhere.dedup();
            for (id, txn) in all {
                self.sink.recover_and_commit(txn).map_err(|e| {
                    let e = match &here {
                        // Restoring elsewhere can never find them: no
                        // restart will help.
                        Some(here) if !elsewhere.is_empty() => {
                            NonRecoverable::wrap(e.context(format!(
                                "the snapshot's transactions were written to {}, but this sink writes to {here}; restore it with the location it was taken with, or start the job without the snapshot",
                                elsewhere.join(", ")
                            )))
                        }
                        _ => e,
                    };
                    e.context(format!(
                        "cannot commit the restored transaction of checkpoint {id} (operator state '{STATE_NAME}')"
                    ))
                })?;
            }
            state.clear(ctx)?;
        }
        self.state = Some(state);
        self.location_state = Some(location_state);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_>) -> anyhow::Result<()> {
        let id = ctx.checkpoint_id();
        failpoint::hit("sink.before-pre-commit");
        if self.current.is_none() && self.sink.transaction_per_checkpoint() {
            self.current = Some(self.sink.begin_transaction()?);
        }
        if let Some(mut txn) = self.current.take() {
            self.sink.pre_commit(&mut txn, id)?;
            self.pending.push((id, txn));
        }
        failpoint::hit("sink.after-pre-commit");
        let state = self.state.as_ref().expect("initialized");
        state.update(
            ctx,
            vec![TwoPhaseState {
                pending: self.pending.clone(),
            }],
        )?;
        let location = self.location_state.as_ref().expect("initialized");
        location.update(ctx, self.sink.location().into_iter().collect())?;
        Ok(())
    }
}

/// A completed checkpoint makes its transactions visible.
impl<T, S: TwoPhaseCommitSink<T>> CheckpointListener for TwoPhaseCommitSinkWriter<T, S> {
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> anyhow::Result<()> {
        self.commit_up_to(checkpoint_id)
    }

    fn notify_checkpoint_aborted(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        // Its pre-committed transaction stays pending: the next completed
        // checkpoint subsumes the aborted one and commits it too.
        Ok(())
    }
}
