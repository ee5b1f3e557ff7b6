//! Snapshots of keyed state, in a canonical format cut by key group.
//!
//! A snapshot has two parts, as in Flink. The synchronous part,
//! [`KeyedStateBackend::snapshot`], runs on the task thread between two
//! records and only freezes a private copy of the tables. The asynchronous
//! part, [`KeyedStateSnapshot::encode`], turns that copy into bytes on any
//! thread while the task goes on processing.
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

use crate::Key;
use crate::backend::{FrozenTable, KeyedStateBackend};
use crate::codec;
use crate::descriptor::StateKind;
use crate::error::StateError;
use crate::key_group::KeyGroupRange;

/// Name, kind and declared value type of one state in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state's name (its identity).
    pub name: String,
    /// [`StateKind`] as its stable code.
    pub kind: u8,
    /// The Rust type the state was declared with (informational: a value
    /// is compatible when its bytes decode as the new type).
    pub value_type: String,
}

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

impl StateKind {
    /// The kind's code in snapshots; never renumber.
    pub fn code(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
        }
    }

    /// The kind of a snapshot code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            _ => return None,
        })
    }
}

/// Restored bytes of a state that the function has not registered (yet).
#[derive(Debug, Clone)]
pub(crate) struct RestoredState {
    pub(crate) name: String,
    pub(crate) kind: StateKind,
    pub(crate) value_type: String,
    pub(crate) key_groups: Vec<(KeyGroup, Vec<u8>)>,
}

/// A frozen copy of one subtask's keyed state, independent of the backend
/// it came from; `Send`, so it can be encoded and uploaded off the task thread.
pub struct KeyedStateSnapshot {
    range: KeyGroupRange,
    max_parallelism: u32,
    /// Registered states (with a frozen table) first, then carried ones.
    states: Vec<StateMeta>,
    frozen: Vec<Box<dyn FrozenTable>>,
    carried: Vec<RestoredState>,
    /// The encoded size of the backend's previous snapshot, shared with the
    /// backend: the output is allocated once at about the right size.
    size_hint: Arc<AtomicUsize>,
    /// A native (incremental) snapshot instead of frozen tables.
    native: Option<crate::native::NativeSnapshot>,
}

impl KeyedStateSnapshot {
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
    pub fn native(&self) -> Option<&crate::native::NativeSnapshot> {
        self.native.as_ref()
    }

    /// Appends the manifest of a native snapshot (a postcard
    /// [`NativeKeyedStateFile`](crate::native::NativeKeyedStateFile)) whose
    /// SST files are stored as `shared`; the small private files are read
    /// from the checkpoint directory and inlined.
    pub fn encode_native_into(
        &self,
        shared: Vec<crate::native::NativeSharedFile>,
        out: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        let native = self.native.as_ref().ok_or_else(|| StateError::Codec {
            action: "encode",
            what: "native keyed state snapshot".into(),
            reason: "the snapshot is canonical, not native".into(),
        })?;
        let mut private = Vec::with_capacity(native.private.len());
        for name in &native.private {
            let path = native.dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| StateError::Codec {
                action: "encode",
                what: "native keyed state snapshot".into(),
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            private.push((name.clone(), bytes));
        }
        let file = crate::native::NativeKeyedStateFile {
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

impl<K: Key> KeyedStateBackend<K> {
    /// The synchronous part of a snapshot: freezes a copy-on-write view of
    /// every table (no entry is copied here). Processing may continue as
    /// soon as this returns.
    pub fn snapshot(&mut self) -> KeyedStateSnapshot {
        let (metas, frozen) = self.freeze_tables();
        let mut states = metas;
        states.extend(self.restored.iter().map(|r| StateMeta {
            name: r.name.clone(),
            kind: r.kind.code(),
            value_type: r.value_type.clone(),
        }));
        KeyedStateSnapshot {
            range: self.key_group_range(),
            max_parallelism: self.max_parallelism(),
            states,
            frozen,
            carried: self.restored.clone(),
            size_hint: self.snapshot_size_hint.clone(),
            native: None,
        }
    }

    /// The snapshot for checkpoint `checkpoint_id`: native and incremental
    /// on RocksDB with `state.backend.incremental` (building on checkpoint
    /// `base`, the latest completed one when this was triggered), else the
    /// canonical [`snapshot`](Self::snapshot). Savepoints always use the
    /// canonical one.
    pub fn snapshot_for_checkpoint(
        &mut self,
        checkpoint_id: u64,
        base: Option<u64>,
    ) -> KeyedStateSnapshot {
        #[cfg(feature = "rocksdb")]
        if self.restored.is_empty()
            && let crate::backend::Store::Rocks(r) = &mut self.store
            && r.incremental()
        {
            match r.snapshot_native(checkpoint_id, base) {
                Ok(native) => {
                    return KeyedStateSnapshot {
                        range: self.key_group_range(),
                        max_parallelism: self.max_parallelism(),
                        states: self.state_metas(),
                        frozen: Vec::new(),
                        carried: Vec::new(),
                        size_hint: self.snapshot_size_hint.clone(),
                        native: Some(native),
                    };
                }
                Err(e) => tracing::warn!(
                    checkpoint = checkpoint_id,
                    "native snapshot failed, taking a canonical one: {e}"
                ),
            }
        }
        let _ = (checkpoint_id, base);
        self.snapshot()
    }

    /// Loads snapshot payloads written by any number of subtasks at any
    /// parallelism, keeping the key groups this subtask owns. Must run before
    /// the function registers its states; each state's entries are decoded
    /// when it is registered (with its type).
    pub fn restore<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StateError> {
        if self.registered_states().next().is_some() {
            return Err(StateError::Codec {
                action: "restore",
                what: "keyed state".into(),
                reason: "restore must happen before any state is registered".into(),
            });
        }
        let range = self.key_group_range();
        for bytes in files {
            let file = KeyedStateFile::decode(bytes)?;
            if file.max_parallelism != self.max_parallelism() {
                return Err(StateError::MaxParallelismMismatch {
                    snapshot: file.max_parallelism,
                    operator: self.max_parallelism(),
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
                    self.stage_restored(meta, group.key_group, entries)?;
                }
            }
        }
        Ok(())
    }

    /// Stages one key group's canonical entries of a restored state until
    /// the function registers it (shared by canonical and native restores):
    /// snapshots must agree on a state's kind and hold each key group once.
    pub(crate) fn stage_restored(
        &mut self,
        meta: &StateMeta,
        key_group: KeyGroup,
        entries: Vec<u8>,
    ) -> Result<(), StateError> {
        let kind = StateKind::from_code(meta.kind).ok_or_else(|| StateError::Codec {
            action: "decode",
            what: format!("state '{}'", meta.name),
            reason: format!("unknown state kind code {}", meta.kind),
        })?;
        let pos = match self.restored.iter().position(|r| r.name == meta.name) {
            Some(p) => p,
            None => {
                self.restored.push(RestoredState {
                    name: meta.name.clone(),
                    kind,
                    value_type: meta.value_type.clone(),
                    key_groups: Vec::new(),
                });
                self.restored.len() - 1
            }
        };
        let r = &mut self.restored[pos];
        if r.kind != kind {
            return Err(StateError::Codec {
                action: "restore",
                what: format!("state '{}'", meta.name),
                reason: format!("snapshots disagree on its kind ({} and {kind})", r.kind),
            });
        }
        if r.key_groups.iter().any(|(g, _)| *g == key_group) {
            return Err(StateError::Codec {
                action: "restore",
                what: format!("state '{}'", meta.name),
                reason: format!("key group {key_group} appears in more than one snapshot"),
            });
        }
        r.key_groups.push((key_group, entries));
        Ok(())
    }
}
