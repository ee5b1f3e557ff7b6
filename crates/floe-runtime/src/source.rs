//! The source contract: a pull-based reader polled by its task.
//!
//! The task, not the reader, owns the loop. Between two polls the task can
//! react to cancellation and (with checkpoints) inject a barrier, so a source
//! never needs a lock shared with the runtime, and the records of one poll are
//! emitted as one batch.

use crate::context::TaskInfo;

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records can be read right away.
    MoreAvailable,
    /// Nothing to read right now (the reader waited briefly); poll again.
    NothingAvailable,
    /// The source has ended (bounded input exhausted).
    Finished,
}

/// How a restored source's saved positions are handed to the subtasks of
/// the new run (Flink's split versus union redistribution of operator list
/// state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionRedistribution {
    /// Subtask `index` gets the positions of the old subtasks `s` with
    /// `s mod parallelism == index`: right for readers whose splits follow
    /// their subtask index (a generator's ranges, a directory's files).
    #[default]
    Modulo,
    /// Every subtask gets the positions of every old subtask and keeps what
    /// it owns under the new parallelism: right for readers that compute
    /// their splits' owners themselves (Kafka partitions by Flink's owner
    /// formula), which modulo redistribution cannot follow.
    Union,
}

/// A reader of one subtask's share of a source.
pub trait SourceReader<T>: Send {
    /// Called once on the task thread before the first poll; a failure here
    /// (a missing file, a refused connection) fails the job.
    fn open(&mut self, _info: &TaskInfo) -> anyhow::Result<()> {
        Ok(())
    }

    /// Appends up to `max` records to `out`. Must return within roughly
    /// 100 ms even when no data arrives, so the task stays responsive.
    fn poll_next(&mut self, out: &mut Vec<T>, max: usize) -> anyhow::Result<SourceStatus>;

    /// The split the records of the last poll came from, when the reader
    /// reads several (a directory's files, a generator's ranges after
    /// rescaling, later Kafka partitions): with a watermark strategy each
    /// split has its own generator, so a slow split holds back event time
    /// and a finished one stops doing so. Every record of one poll must
    /// come from this split. A reader of one split keeps the default.
    fn current_split(&self) -> crate::watermark::SplitId {
        0
    }

    /// The native event timestamps (milliseconds) of the records the last
    /// poll appended, parallel to them, for sources whose records carry
    /// one (a Kafka record's timestamp): a watermark strategy's timestamp
    /// assigner sees it as the record's previous timestamp, and without an
    /// assigner the record keeps it (Flink's `SourceOutput.collect(record,
    /// timestamp)`). Empty (the default) when the source has none.
    fn record_timestamps(&self) -> &[i64] {
        &[]
    }

    /// Moves the ids of the splits that ended since the last call into
    /// `out`, so they no longer hold back the watermark.
    fn finished_splits(&mut self, _out: &mut Vec<crate::watermark::SplitId>) {}

    /// The reader's position for a checkpoint (a generator's next index, a
    /// file and byte offset), taken between two polls. Readers that cannot
    /// rewind return nothing and are at-most-once across failures.
    fn snapshot_state(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// The position for checkpoint `checkpoint_id` (Flink's
    /// `snapshotState(checkpointId)`): what the task calls at a barrier, so
    /// a reader that acts once a checkpoint completes (commits Kafka
    /// offsets) can remember which position belongs to which checkpoint.
    /// The default is [`snapshot_state`](Self::snapshot_state).
    fn snapshot_checkpoint(&mut self, _checkpoint_id: u64) -> anyhow::Result<Vec<u8>> {
        self.snapshot_state()
    }

    /// Checkpoint `checkpoint_id` completed: the position taken for it by
    /// [`snapshot_checkpoint`](Self::snapshot_checkpoint) is durable.
    /// Flink's contract holds: ids only grow, a completion subsumes every
    /// lower id, and a notification may be lost, so nothing a job's
    /// correctness needs may depend on it (Kafka offsets committed here are
    /// for monitoring). Not called after `close`.
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// How saved positions are handed to this reader on restore; asked
    /// before [`restore_splits`](Self::restore_splits).
    fn position_redistribution(&self) -> PositionRedistribution {
        PositionRedistribution::Modulo
    }

    /// Resumes from a position taken by `snapshot_state`; called before
    /// `open` when the job restarts from a checkpoint.
    fn restore_state(&mut self, _state: &[u8]) -> anyhow::Result<()> {
        Ok(())
    }

    /// Restores the positions of the source subtasks this reader takes
    /// over, each as `snapshot_state` wrote it. Under
    /// [`PositionRedistribution::Union`] that is every old subtask's
    /// position, at any parallelism. Otherwise, at an unchanged
    /// parallelism that is exactly its own position. After rescaling it is
    /// the positions of the old subtasks `s` with `s mod parallelism ==
    /// index`: several when scaling down (the reader must read all their
    /// remaining input), none when scaling up (the input belongs to the
    /// others; the reader then has nothing to read). Sources whose state is
    /// a list of splits (the generator's ranges, the file source's files)
    /// support this; the default restores exactly one position and refuses
    /// a change of parallelism.
    fn restore_splits(&mut self, states: Vec<Vec<u8>>) -> anyhow::Result<()> {
        match states.as_slice() {
            [one] => self.restore_state(one),
            _ => anyhow::bail!(
                "this source cannot be restored at another parallelism ({} saved positions for one reader); restore it at the parallelism it had",
                states.len()
            ),
        }
    }

    /// Called once after the last poll, also when the job is cancelled.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A source: creates one reader per subtask (Flink's FLIP-27 `Source`).
///
/// Handing `from_source` something that is not a source names the usual
/// causes (a builder not yet built, a `Result` not yet unwrapped) instead
/// of only the unsatisfied bound, e.g. for a Kafka source builder without
/// `.build()?`:
///
/// ```text
/// error[E0277]: `KafkaSourceBuilder<String>` is not a source
///   |     let orders: DataStream<String> = env.from_source(builder, "Kafka");
///   |                                                      ^^^^^^^ not a `Source`
///   = note: a builder is not a source yet: finish it (`KafkaSource::builder()…build()?`)
///   = note: a `Result` is not a source: take the source out of it with `?`
///           first (`NexmarkSource::new(config)?`)
/// ```
// The record type is left out: at `from_source` it is often not yet
// inferred, and would read `_`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a source",
    label = "not a `Source`",
    note = "a builder is not a source yet: finish it (`KafkaSource::builder()…build()?`)",
    note = "a `Result` is not a source: take the source out of it with `?` first (`NexmarkSource::new(config)?`)"
)]
pub trait Source<T>: Send + Sync + 'static {
    /// False for sources that can only run as one subtask (a socket, an
    /// in-memory collection).
    fn is_parallel(&self) -> bool {
        true
    }

    /// How the positions its readers saved are redistributed on restore
    /// (what [`SourceReader::position_redistribution`] reports for a
    /// reader that does not exist yet).
    fn position_redistribution(&self) -> PositionRedistribution {
        PositionRedistribution::Modulo
    }

    /// The reader of subtask `info.subtask_index` of `info.parallelism`.
    fn create_reader(&self, info: &TaskInfo) -> anyhow::Result<Box<dyn SourceReader<T>>>;
}
