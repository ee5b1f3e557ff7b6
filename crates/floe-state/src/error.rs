//! Errors at the state layer's boundary.

use crate::descriptor::StateKind;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The same name was registered before as another kind or type.
    #[error(
        "state '{name}' is already registered as {existing_kind} of {existing_type}; cannot register it again as {requested_kind} of {requested_type}"
    )]
    IncompatibleRegistration {
        /// The state name.
        name: String,
        /// Kind registered first.
        existing_kind: StateKind,
        /// Value type registered first.
        existing_type: &'static str,
        /// Kind requested now.
        requested_kind: StateKind,
        /// Value type requested now.
        requested_type: &'static str,
    },
    /// Restored state does not fit the state registered under its name.
    #[error(
        "state '{name}' restored from a snapshot as {restored_kind} cannot be used as {requested_kind} of {requested_type}: {reason}"
    )]
    IncompatibleRestore {
        /// The state name.
        name: String,
        /// Kind in the snapshot.
        restored_kind: StateKind,
        /// Kind requested now.
        requested_kind: StateKind,
        /// Value type requested now.
        requested_type: &'static str,
        /// Why (kind differs, or the bytes do not decode as that type).
        reason: String,
    },
    /// Restored state was written as other types (or with another codec)
    /// than the state declares now, and no migration the descriptor
    /// declares reads them (see [`crate::schema`]): its bytes could be
    /// misread, so the restore is refused. No restart can cure it.
    #[error(
        "state '{name}' in the snapshot is {old}, but the job now declares it as {new}: its stored values cannot be read as the new type. Register a migration from the old type on the state's descriptor (`.with_migration(|old: {old_value_type}| ...)`), declare the old type again, or start the state empty: give it a new name, or run without the snapshot (no -s; a renamed operator uid restores the rest with -n)"
    )]
    IncompatibleSchema {
        /// The state name.
        name: String,
        /// The state as the snapshot recorded it, e.g. `ValueState<u64>`.
        old: String,
        /// The state as the job declares it now.
        new: String,
        /// The old value type (what a migration must take).
        old_value_type: String,
    },
    /// A state's TTL configuration cannot be used as declared.
    #[error("state '{name}' cannot have a time to live: {reason}")]
    InvalidTtl {
        /// The state name.
        name: String,
        /// Why (queryable, a TTL under a millisecond).
        reason: String,
    },
    /// A snapshot from a job with another number of key groups.
    #[error(
        "snapshot has max parallelism {snapshot} but the operator has {operator}; key groups cannot be remapped (keep pipeline.max-parallelism unchanged)"
    )]
    MaxParallelismMismatch {
        /// In the snapshot.
        snapshot: u32,
        /// Of the operator now.
        operator: u32,
    },
    /// Keyed state was used where there is no current key (outside
    /// `process_element`/`on_timer` of a keyed operator).
    #[error(
        "keyed state '{name}' accessed without a current key: keyed state can only be used while a keyed operator processes a record"
    )]
    NoCurrentKey {
        /// The state name.
        name: String,
    },
    /// Keyed state requested by an operator that does not follow `key_by`.
    #[error(
        "keyed state '{name}' requested in non-keyed operator '{operator}': keyed state is only available on a KeyedStream (apply key_by first)"
    )]
    NotKeyed {
        /// The state name.
        name: String,
        /// The operator's name.
        operator: String,
    },
    /// A declared broadcast state read before anything declared it: the
    /// stream's `broadcast_with` names the broadcast states it carries.
    #[error(
        "broadcast state '{name}' is not declared in operator '{operator}': pass its descriptor to broadcast_with(...)"
    )]
    UndeclaredBroadcastState {
        /// The state name.
        name: String,
        /// The operator's name.
        operator: String,
    },
    /// A handle with neither a registration nor a declaration: cannot
    /// happen through the public API, reported rather than panicking.
    #[error("a state handle was used that was neither registered nor declared")]
    UnboundHandle,
    /// A key group outside this subtask's range reached it: a routing bug.
    #[error("key group {key_group} is outside this subtask's range {range}")]
    KeyGroupOutOfRange {
        /// The offending key group.
        key_group: u16,
        /// This subtask's range.
        range: crate::key_group::KeyGroupRange,
    },
    /// Bytes could not be encoded or decoded.
    #[error("cannot {action} {what}: {reason}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being coded.
        what: String,
        /// The codec's reason.
        reason: String,
    },
    /// An operator state name registered (or restored) with another
    /// redistribution mode or type.
    #[error("operator state '{name}' is {existing}; cannot use it as {requested}: {reason}")]
    IncompatibleOperatorState {
        /// The state name.
        name: String,
        /// Mode and type it has.
        existing: String,
        /// Mode and type requested now.
        requested: String,
        /// Why they do not fit.
        reason: String,
    },
    /// Two states of one operator made queryable under the same name.
    #[error(
        "queryable state name '{queryable}' is used by states '{first}' and '{second}' of operator '{operator}'; queryable names must be unique within a job"
    )]
    DuplicateQueryableName {
        /// The queryable name.
        queryable: String,
        /// The state registered first under it.
        first: String,
        /// The state registered now.
        second: String,
        /// The operator.
        operator: String,
    },
    /// The state backend's storage failed (RocksDB: open, read, write,
    /// snapshot).
    #[error("state backend of operator '{operator}': {reason}")]
    Backend {
        /// The operator.
        operator: String,
        /// What failed and why.
        reason: String,
    },
    /// A shared file of a native (incremental RocksDB) snapshot could not
    /// be fetched from checkpoint storage during a restore. The fetch
    /// hook's error (the runtime's `RestoreError`: the storage failed, or
    /// `_metadata` does not list the file or gives it another size) is
    /// kept whole, so a caller can downcast it. (Not the error's `source`:
    /// the message already includes it, and a `{:#}` chain would print it
    /// twice.)
    #[error(
        "state backend of operator '{operator}': cannot download shared state file {path}: {reason}"
    )]
    FetchSharedFile {
        /// The operator restoring.
        operator: String,
        /// The file, relative to the checkpoint storage root.
        path: String,
        /// The fetch hook's error.
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A restore was asked for after the function registered state: a
    /// restore must come first, so that each state is decoded with its
    /// types when it is registered.
    #[error(
        "keyed state of operator '{operator}' can only be restored before any state is registered"
    )]
    RestoreAfterRegistration {
        /// The operator.
        operator: String,
    },
    /// Snapshot files restored together contradict each other (a state's
    /// kind or mode, a key group held twice, the old parallelism): they
    /// are not the files of one snapshot.
    #[error("the restored snapshots of {what} disagree: {reason}")]
    InconsistentSnapshots {
        /// The state or operator they disagree about.
        what: String,
        /// How they disagree.
        reason: String,
    },
    /// A snapshot names a state kind this version does not know (written
    /// by a newer Floe, or damaged).
    #[error("state '{name}' in the snapshot has unknown kind code {code}")]
    UnknownStateKind {
        /// The state name.
        name: String,
        /// The kind code read.
        code: u8,
    },
    /// A native manifest was asked of a canonical snapshot, which has no
    /// native files.
    #[error("the keyed state snapshot is canonical: it has no native files to write a manifest of")]
    NoNativeFiles,
    /// A snapshot was encoded a second time: its frozen key groups are
    /// handed over as they are encoded, so each snapshot is encoded once.
    #[error("{what} was already encoded: a snapshot is encoded once")]
    SnapshotEncodedTwice {
        /// What was being encoded.
        what: String,
    },
    /// A local file of a snapshot could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state handle used with another operator's store.
    #[error(
        "{what} handle used with the state of operator '{operator}', which did not register it"
    )]
    ForeignHandle {
        /// What kind of handle.
        what: String,
        /// The operator whose store it was used with.
        operator: String,
    },
}

impl StateError {
    /// Whether the error recurs however often the job restarts: state that
    /// does not fit or decode, or a misuse of the state API. Only the
    /// backend's storage, reading local files and fetching shared files
    /// from checkpoint storage may fail transiently.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            StateError::Backend { .. }
                | StateError::ReadFile { .. }
                | StateError::FetchSharedFile { .. }
        )
    }
}
