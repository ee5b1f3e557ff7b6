//! What travels on a channel between two tasks.
//!
//! Records travel in batches so that the per-record cost of a channel hop is a
//! `Vec::push`; control elements (watermarks, checkpoint barriers, the end of
//! input) travel in-band between batches, which is what keeps a barrier from
//! overtaking the records sent before it.

/// Index of a key group: the atom of keyed state that is redistributed when a
/// job is rescaled. Flink's upper bound on max parallelism (32768) fits in 16 bits.
pub type KeyGroup = u16;

/// A batch of records, with the key group of each record when it crossed a
/// keyed (`key_by`) exchange, so the receiver never hashes a key twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The records, in the order the sender emitted them.
    pub records: Vec<T>,
    /// Parallel to `records` after a keyed exchange; empty otherwise.
    pub key_groups: Vec<KeyGroup>,
}

impl<T> Batch<T> {
    /// An empty batch with room for `cap` records.
    pub fn with_capacity(cap: usize, keyed: bool) -> Self {
        Batch {
            records: Vec::with_capacity(cap),
            key_groups: if keyed {
                Vec::with_capacity(cap)
            } else {
                Vec::new()
            },
        }
    }

    /// A batch from plain records (no key groups).
    pub fn from_records(records: Vec<T>) -> Self {
        Batch {
            records,
            key_groups: Vec::new(),
        }
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
    }
}

/// Event-time progress: no record with a smaller timestamp follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

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
    /// A checkpoint barrier, aligned by receivers with several inputs.
    Barrier(CheckpointBarrier),
    /// The sender has ended and will send nothing more.
    EndOfInput,
}
