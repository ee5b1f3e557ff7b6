//! What travels on a channel between two tasks.
//!
//! Records travel in batches so that the per-record cost of a channel hop is a
//! `Vec::push`; control elements (watermarks, checkpoint barriers, the end of
//! input) travel in-band between batches, which is what keeps a barrier from
//! overtaking the records sent before it.

/// Index of a key group: the atom of keyed state that is redistributed when a
/// job is rescaled. Flink's upper bound on max parallelism (32768) fits in 16 bits.
pub type KeyGroup = u16;

/// The timestamp of a record that has none, in a batch whose other records
/// have one (Flink's `StreamRecord` without a timestamp; its context then
/// reports none).
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A batch of records, with the key group of each record when it crossed a
/// keyed (`key_by`) exchange, so the receiver never hashes a key twice, and
/// each record's event timestamp on a stream that has event time.
///
/// Both are columns beside the records rather than fields of a per-record
/// envelope: a stream without event time or keys carries two empty vectors
/// and pays nothing per record, and a timestamped stream pays one `i64`
/// push per record, never an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The records, in the order the sender emitted them.
    pub records: Vec<T>,
    /// Parallel to `records` after a keyed exchange; empty otherwise.
    pub key_groups: Vec<KeyGroup>,
    /// Parallel to `records` on a stream with event time (milliseconds
    /// since the epoch, [`NO_TIMESTAMP`] for a record without one); empty
    /// on a stream without.
    pub timestamps: Vec<i64>,
}

impl<T> Batch<T> {
    /// An empty batch with room for `cap` records.
    pub fn with_capacity(cap: usize, keyed: bool) -> Self {
        Self::with_layout(cap, keyed, false)
    }

    /// An empty batch with room for `cap` records, and for their key groups
    /// (`keyed`) and timestamps (`timed`).
    pub fn with_layout(cap: usize, keyed: bool, timed: bool) -> Self {
        fn column<C>(on: bool, cap: usize) -> Vec<C> {
            if on {
                Vec::with_capacity(cap)
            } else {
                Vec::new()
            }
        }
        Batch {
            records: Vec::with_capacity(cap),
            key_groups: column(keyed, cap),
            timestamps: column(timed, cap),
        }
    }

    /// A batch from plain records (no key groups, no timestamps).
    pub fn from_records(records: Vec<T>) -> Self {
        Batch {
            records,
            key_groups: Vec::new(),
            timestamps: Vec::new(),
        }
    }

    /// True when the records carry timestamps.
    #[inline]
    pub fn is_timed(&self) -> bool {
        !self.timestamps.is_empty()
    }

    /// Record `i`'s timestamp, `None` when it has none.
    #[inline]
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        self.timestamps
            .get(i)
            .copied()
            .filter(|t| *t != NO_TIMESTAMP)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes every record, keeping the allocations for reuse.
    pub fn clear(&mut self) {
        self.records.clear();
        self.key_groups.clear();
        self.timestamps.clear();
    }
}

/// Event-time progress: no record with a timestamp at or below it follows
/// (Flink's definition: a watermark `t` declares that event time reached
/// `t`, so timers at `t` fire and later records should be newer than `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

impl Watermark {
    /// Before any event: where every input starts.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// The end of event time, sent when a bounded input ends so every
    /// event-time timer and window fires (Flink's `MAX_WATERMARK`).
    pub const MAX: Watermark = Watermark(i64::MAX);
}

/// Whether an input currently takes part in event time. An idle input
/// (a source split without data for its idle timeout, a source subtask
/// with no split) must not hold back the watermark of the operators
/// downstream; it becomes active again with its next record or watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatermarkStatus {
    /// The input's watermark counts.
    Active,
    /// The input's watermark is ignored until it is active again.
    Idle,
}

/// Whether a barrier belongs to a periodic checkpoint or a user savepoint;
/// both use the same barrier mechanism but differ in format and ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// Periodic, owned by Floe, may be deleted when subsumed.
    Checkpoint,
    /// User-triggered, owned by the user, never deleted by Floe.
    Savepoint,
    /// A savepoint after which the sources stop (stop with savepoint,
    /// without drain): they resume only if it fails.
    StopSavepoint,
}

impl CheckpointKind {
    /// Savepoints are always aligned, never unaligned: their state must be
    /// canonical and free of in-flight records.
    pub fn is_savepoint(self) -> bool {
        !matches!(self, CheckpointKind::Checkpoint)
    }
}

/// The marker a source injects into its output for checkpoint `id`: every
/// record before it belongs to the snapshot, every record after it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointBarrier {
    /// Monotonically increasing checkpoint id.
    pub id: u64,
    /// Milliseconds since the epoch when the coordinator triggered it.
    pub timestamp_ms: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The latest completed checkpoint when this one was triggered: an
    /// incremental snapshot may reference the shared files that checkpoint
    /// uploaded (the coordinator keeps them until this one is done).
    pub last_completed: Option<u64>,
}

/// One element of a channel between tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMessage<T> {
    /// A batch of data records.
    Records(Batch<T>),
    /// Event-time progress.
    Watermark(Watermark),
    /// The sender became idle or active again.
    WatermarkStatus(WatermarkStatus),
    /// A checkpoint barrier, aligned by receivers with several inputs.
    Barrier(CheckpointBarrier),
    /// The sender has ended and will send nothing more.
    EndOfInput,
}
