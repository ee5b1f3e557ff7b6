//! Snapshots of keyed state, in a canonical format cut by key group.
//!
//! A snapshot has two parts, as in Flink. The synchronous part,
//! [`KeyedStateBackend::snapshot`](crate::KeyedStateBackend::snapshot), runs
//! on the task thread between two records and only has the store freeze a
//! private view of every state ([`FrozenTable`]). The asynchronous part,
//! [`KeyedStateSnapshot::encode`], turns those views into bytes on any
//! thread while the task goes on processing.
//!
//! This module knows the store only through [`FrozenTable`] (writing) and
//! hands restored bytes to the backend through [`RestoreStaging`]
//! (reading): it reads and writes the same bytes whichever store made or
//! takes them.
//!
//! The encoding is backend-independent: per key group, per state, the
//! postcard sequence of `(key, value)` pairs, where the value is the state's
//! per-key content (a value, a list, a map of user keys, an accumulator).
//! Because entries are grouped by key group, a restore at another
//! parallelism takes exactly the key groups of its new range from every file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use floe_core::KeyGroup;

use crate::codec;
use crate::descriptor::StateKind;
pub use crate::descriptor::StateMeta;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::native::{NativeKeyedStateFile, NativeSharedFile, NativeSnapshot};
use crate::schema::SerializerIdentity;
use crate::store::FrozenTable;

/// One key group's entries: `(state index, encoded entries)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupData {
    /// The key group.
    pub key_group: KeyGroup,
    /// Entries per state index into [`KeyedStateFile::states`]; states with
    /// no entry in this key group are absent.
    pub states: Vec<(u32, Vec<u8>)>,
}

/// The decoded contents of one subtask's keyed state snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateFile {
    /// The job's number of key groups when the snapshot was taken.
    pub max_parallelism: u32,
    /// First key group owned by the subtask that wrote it.
    pub key_group_start: KeyGroup,
    /// Last key group owned by the subtask that wrote it.
    pub key_group_end: KeyGroup,
    /// The states, indexed by [`KeyGroupData::states`].
    pub states: Vec<StateMeta>,
    /// Key groups with at least one entry, in ascending order.
    pub key_groups: Vec<KeyGroupData>,
}

impl KeyedStateFile {
    /// Decodes a snapshot payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        codec::decode(bytes, "keyed state snapshot")
    }

    /// The key-group range of the subtask that wrote it.
    pub fn key_group_range(&self) -> KeyGroupRange {
        KeyGroupRange::new(self.key_group_start, self.key_group_end)
    }
}

/// Restored bytes of a state that the function has not registered (yet).
#[derive(Debug, Clone)]
pub(crate) struct StagedState {
    pub(crate) name: String,
    pub(crate) kind: StateKind,
    /// Whether its values carry TTL timestamps.
    pub(crate) ttl: bool,
    pub(crate) value_type: String,
    /// How its values were written (`None`: a snapshot from before
    /// identities).
    pub(crate) serializer: Option<SerializerIdentity>,
    pub(crate) key_groups: Vec<(KeyGroup, Vec<u8>)>,
}

impl StagedState {
    pub(crate) fn meta(&self) -> StateMeta {
        StateMeta {
            name: self.name.clone(),
            kind: StateMeta::code_of(self.kind, self.ttl),
            value_type: self.value_type.clone(),
            serializer: self.serializer.clone(),
        }
    }
}

/// Restored canonical key groups, per state, until the function registers
/// the state (each is decoded then, with its types). A state the function
/// never registers again is carried into every snapshot, so state a
/// function stops using is not lost silently.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestoreStaging {
    states: Vec<StagedState>,
}

impl RestoreStaging {
    /// Whether nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Stages the key groups of `range` from one canonical snapshot payload
    /// (written by any subtask at any parallelism).
    pub(crate) fn add_file(
        &mut self,
        bytes: &[u8],
        range: KeyGroupRange,
        max_parallelism: u32,
    ) -> Result<(), StateError> {
        let file = KeyedStateFile::decode(bytes)?;
        if file.max_parallelism != max_parallelism {
            return Err(StateError::MaxParallelismMismatch {
                snapshot: file.max_parallelism,
                operator: max_parallelism,
            });
        }
        for group in file
            .key_groups
            .into_iter()
            .filter(|g| range.contains(g.key_group))
        {
            for (idx, entries) in group.states {
                let meta = file
                    .states
                    .get(idx as usize)
                    .ok_or_else(|| StateError::Codec {
                        action: "decode",
                        what: "keyed state snapshot".into(),
                        reason: format!("state index {idx} out of range"),
                    })?;
                self.stage(meta, group.key_group, entries)?;
            }
        }
        Ok(())
    }

    /// Stages one key group's canonical entries of a restored state (shared
    /// by canonical and native restores): snapshots must agree on a state's
    /// kind and hold each key group once.
    pub(crate) fn stage(
        &mut self,
        meta: &StateMeta,
        key_group: KeyGroup,
        entries: Vec<u8>,
    ) -> Result<(), StateError> {
        let kind = meta
            .state_kind()
            .ok_or_else(|| StateError::UnknownStateKind {
                name: meta.name.clone(),
                code: meta.kind,
            })?;
        let ttl = meta.has_ttl();
        let pos = match self.states.iter().position(|r| r.name == meta.name) {
            Some(p) => p,
            None => {
                self.states.push(StagedState {
                    name: meta.name.clone(),
                    kind,
                    ttl,
                    value_type: meta.value_type.clone(),
                    serializer: meta.serializer.clone(),
                    key_groups: Vec::new(),
                });
                self.states.len() - 1
            }
        };
        let r = &mut self.states[pos];
        if r.kind != kind {
            return Err(StateError::InconsistentSnapshots {
                what: format!("state '{}'", meta.name),
                reason: format!("its kind is {} in one and {kind} in another", r.kind),
            });
        }
        if r.ttl != ttl {
            return Err(StateError::InconsistentSnapshots {
                what: format!("state '{}'", meta.name),
                reason: "it has a TTL in one and none in another".into(),
            });
        }
        match (&r.serializer, &meta.serializer) {
            (Some(a), Some(b)) if a != b => {
                return Err(StateError::InconsistentSnapshots {
                    what: format!("state '{}'", meta.name),
                    reason: format!(
                        "it was written as {} in one and as {} in another",
                        a.describe(kind),
                        b.describe(kind)
                    ),
                });
            }
            (None, Some(b)) => r.serializer = Some(b.clone()),
            _ => {}
        }
        if r.key_groups.iter().any(|(g, _)| *g == key_group) {
            return Err(StateError::InconsistentSnapshots {
                what: format!("state '{}'", meta.name),
                reason: format!("key group {key_group} appears in more than one"),
            });
        }
        r.key_groups.push((key_group, entries));
        Ok(())
    }

    /// Takes the staged state `name` out (it is being registered).
    pub(crate) fn take(&mut self, name: &str) -> Option<StagedState> {
        let pos = self.states.iter().position(|r| r.name == name)?;
        Some(self.states.remove(pos))
    }

    /// Stages `state` again (its registration failed).
    pub(crate) fn put_back(&mut self, state: StagedState) {
        self.states.push(state);
    }
}

/// A frozen copy of one subtask's keyed state, independent of the backend
/// it came from; `Send`, so it can be encoded and uploaded off the task thread.
pub struct KeyedStateSnapshot {
    range: KeyGroupRange,
    max_parallelism: u32,
    /// Registered states (with a frozen table) first, then carried ones.
    states: Vec<StateMeta>,
    frozen: Vec<Box<dyn FrozenTable>>,
    carried: Vec<StagedState>,
    /// The encoded size of the backend's previous snapshot, shared with the
    /// backend: the output is allocated once at about the right size.
    size_hint: Arc<AtomicUsize>,
    /// A native (incremental) snapshot instead of frozen tables.
    native: Option<NativeSnapshot>,
}

impl KeyedStateSnapshot {
    /// A canonical snapshot of the states `states` (registered ones, then
    /// those only the store holds) frozen as `frozen`, plus the states
    /// `staged` still holds unregistered.
    pub(crate) fn canonical(
        range: KeyGroupRange,
        max_parallelism: u32,
        mut states: Vec<StateMeta>,
        frozen: Vec<Box<dyn FrozenTable>>,
        staged: &RestoreStaging,
        size_hint: Arc<AtomicUsize>,
    ) -> Self {
        states.extend(staged.states.iter().map(StagedState::meta));
        KeyedStateSnapshot {
            range,
            max_parallelism,
            states,
            frozen,
            carried: staged.states.clone(),
            size_hint,
            native: None,
        }
    }

    /// A native snapshot of the states `states`.
    pub(crate) fn native_files(
        range: KeyGroupRange,
        max_parallelism: u32,
        states: Vec<StateMeta>,
        native: NativeSnapshot,
        size_hint: Arc<AtomicUsize>,
    ) -> Self {
        KeyedStateSnapshot {
            range,
            max_parallelism,
            states,
            frozen: Vec::new(),
            carried: Vec::new(),
            size_hint,
            native: Some(native),
        }
    }

    /// The asynchronous part: the snapshot's canonical bytes.
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the snapshot's canonical bytes (a postcard [`KeyedStateFile`])
    /// to `out`, streaming each key group's entries straight from the frozen
    /// maps instead of building the file in memory first.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), StateError> {
        const WHAT: &str = "keyed state snapshot";
        let start = out.len();
        out.reserve(self.size_hint());
        codec::encode_into(
            &(
                self.max_parallelism,
                self.range.start,
                self.range.end,
                &self.states,
            ),
            out,
            WHAT,
        )?;
        let carried = |kg: KeyGroup| {
            self.carried.iter().enumerate().filter_map(move |(j, c)| {
                let (_, bytes) = c.key_groups.iter().find(|(g, _)| *g == kg)?;
                Some((self.frozen.len() + j, bytes))
            })
        };
        let states_in = |offset: usize, kg: KeyGroup| {
            self.frozen.iter().filter(|t| t.has_entries(offset)).count() + carried(kg).count()
        };
        let groups = self
            .range
            .iter()
            .enumerate()
            .filter(|(offset, kg)| states_in(*offset, *kg) > 0)
            .count();
        codec::encode_into(&groups, out, WHAT)?;
        // One group's entries of one state at a time, so their length
        // prefix can be written before them; reused across groups.
        let mut entries = Vec::new();
        for (offset, kg) in self.range.iter().enumerate() {
            let n = states_in(offset, kg);
            if n == 0 {
                continue;
            }
            codec::encode_into(&(kg, n), out, WHAT)?;
            for (i, table) in self.frozen.iter().enumerate() {
                entries.clear();
                let what = format!("state '{}' in key group {kg}", self.states[i].name);
                if table.encode_key_group(offset, &mut entries, &what)? {
                    codec::encode_into(&(i as u32, entries.len()), out, WHAT)?;
                    out.extend_from_slice(&entries);
                }
            }
            for (i, bytes) in carried(kg) {
                codec::encode_into(&(i as u32, bytes.len()), out, WHAT)?;
                out.extend_from_slice(bytes);
            }
        }
        self.size_hint.store(out.len() - start, Ordering::Relaxed);
        Ok(())
    }

    /// The native files, when this is an incremental RocksDB snapshot: the
    /// runtime uploads the new ones and writes a manifest with
    /// [`encode_native_into`](Self::encode_native_into) instead of
    /// [`encode_into`](Self::encode_into).
    pub fn native(&self) -> Option<&NativeSnapshot> {
        self.native.as_ref()
    }

    /// Appends the manifest of a native snapshot (a postcard
    /// [`NativeKeyedStateFile`](crate::native::NativeKeyedStateFile)) whose
    /// SST files are stored as `shared`; the small private files are read
    /// from the checkpoint directory and inlined.
    pub fn encode_native_into(
        &self,
        shared: Vec<NativeSharedFile>,
        out: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        let native = self.native.as_ref().ok_or(StateError::NoNativeFiles)?;
        let mut private = Vec::with_capacity(native.private.len());
        for name in &native.private {
            let path = native.dir.join(name);
            let bytes =
                std::fs::read(&path).map_err(|source| StateError::ReadFile { path, source })?;
            private.push((name.clone(), bytes));
        }
        let file = NativeKeyedStateFile {
            max_parallelism: self.max_parallelism,
            key_group_start: self.range.start,
            key_group_end: self.range.end,
            states: self.states.clone(),
            shared,
            private,
        };
        codec::encode_into(&file, out, "native keyed state snapshot")
    }

    /// The expected encoded size: that of the backend's previous snapshot.
    pub fn size_hint(&self) -> usize {
        self.size_hint.load(Ordering::Relaxed)
    }

    /// The states in the snapshot.
    pub fn states(&self) -> &[StateMeta] {
        &self.states
    }
}
