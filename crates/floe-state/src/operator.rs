//! Operator state: state that belongs to an operator subtask rather than to
//! a key (Flink's `OperatorStateStore`).
//!
//! Three shapes, differing only in how a restore hands the state out when
//! the parallelism changes:
//! - **list state** ([`OperatorStateMode::Split`]): the elements of every old
//!   subtask are concatenated and split evenly over the new subtasks (at an
//!   unchanged parallelism every subtask gets its own list back);
//! - **union list state** ([`OperatorStateMode::Union`]): every new subtask
//!   gets every element of every old subtask;
//! - **broadcast state** ([`OperatorStateMode::Broadcast`]): a map that is
//!   the same on every subtask; each new subtask gets a copy.
//!
//! Values live typed on the heap (no serialization on access) and are
//! encoded element by element at a snapshot, so redistribution works on
//! bytes without knowing the types. Raw state — bytes a custom operator
//! writes itself, per key group or per subtask — travels in the same file.

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor};
use crate::error::StateError;
use crate::key_group::KeyGroupRange;
use crate::schema::{SCHEMA_KIND_FLAG, SerializerIdentity};
use crate::types::{MapKey, StateValue};
use floe_core::KeyGroup;

/// How operator state is redistributed on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorStateMode {
    /// Even split of all elements over the new subtasks.
    Split,
    /// Every subtask receives all elements.
    Union,
    /// Every subtask receives a copy of one old subtask's map.
    Broadcast,
}

impl fmt::Display for OperatorStateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperatorStateMode::Split => "ListState",
            OperatorStateMode::Union => "UnionListState",
            OperatorStateMode::Broadcast => "BroadcastState",
        })
    }
}

impl OperatorStateMode {
    /// The mode's code in snapshots (serde's variant index, as before
    /// codes were spelled out); never renumber.
    fn code(self) -> u32 {
        match self {
            OperatorStateMode::Split => 0,
            OperatorStateMode::Union => 1,
            OperatorStateMode::Broadcast => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => OperatorStateMode::Split,
            1 => OperatorStateMode::Union,
            2 => OperatorStateMode::Broadcast,
            _ => return None,
        })
    }
}

/// One named operator state in a snapshot: its elements, each encoded on
/// its own (a broadcast entry is an encoded `(key, value)` pair).
///
/// On the wire (postcard) it is `(name, mode, type_name, elements)`, with
/// the [`SerializerIdentity`] after `type_name` when there is one, which
/// the mode's code then flags with [`SCHEMA_KIND_FLAG`]: files written
/// before identities read unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStateEntry {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: OperatorStateMode,
    /// The element type, for error messages.
    pub type_name: String,
    /// How the elements were written; `None` in files written before
    /// identities existed (accepted as they are on restore).
    pub serializer: Option<SerializerIdentity>,
    /// The encoded elements.
    pub elements: Vec<Vec<u8>>,
}

impl Serialize for OperatorStateEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let flag = if self.serializer.is_some() {
            u32::from(SCHEMA_KIND_FLAG)
        } else {
            0
        };
        let mut t = serializer.serialize_tuple(4 + usize::from(self.serializer.is_some()))?;
        t.serialize_element(&self.name)?;
        // A u32 is the varint serde's derived enum wrote: same bytes.
        t.serialize_element(&(self.mode.code() | flag))?;
        t.serialize_element(&self.type_name)?;
        if let Some(identity) = &self.serializer {
            t.serialize_element(identity)?;
        }
        t.serialize_element(&self.elements)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for OperatorStateEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = OperatorStateEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an operator state's name, mode, types and elements")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OperatorStateEntry, A::Error> {
                use serde::de::Error;
                let missing = |i| A::Error::invalid_length(i, &self);
                let name: String = seq.next_element()?.ok_or_else(|| missing(0))?;
                let code: u32 = seq.next_element()?.ok_or_else(|| missing(1))?;
                let flagged = code & u32::from(SCHEMA_KIND_FLAG) != 0;
                let mode = OperatorStateMode::from_code(code & !u32::from(SCHEMA_KIND_FLAG))
                    .ok_or_else(|| {
                        A::Error::custom(format!("unknown operator state mode {code}"))
                    })?;
                let type_name: String = seq.next_element()?.ok_or_else(|| missing(2))?;
                let serializer = if flagged {
                    Some(seq.next_element()?.ok_or_else(|| missing(3))?)
                } else {
                    None
                };
                let elements = seq.next_element()?.ok_or_else(|| missing(4))?;
                Ok(OperatorStateEntry {
                    name,
                    mode,
                    type_name,
                    serializer,
                    elements,
                })
            }
        }
        // Postcard reads tuple elements on demand: the identity only when
        // the mode flags it.
        deserializer.deserialize_tuple(5, EntryVisitor)
    }
}

/// One operator subtask's operator state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateFile {
    /// The subtask that wrote it.
    pub subtask: u32,
    /// The operator's parallelism when it was written.
    pub parallelism: u32,
    /// Named operator states, in registration order.
    pub states: Vec<OperatorStateEntry>,
    /// Raw operator state written by a custom operator.
    pub raw_operator: Option<Vec<u8>>,
    /// Raw keyed state written by a custom operator, per key group.
    pub raw_keyed: Vec<(KeyGroup, Vec<u8>)>,
}

impl OperatorStateFile {
    /// Encodes the file's payload.
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        codec::encode(self, "operator state")
    }

    /// Decodes a payload written by [`OperatorStateFile::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        codec::decode(bytes, "operator state")
    }
}

/// Typed storage of one registered state.
trait StateData: Send {
    fn encode(&self, what: &str) -> Result<Vec<Vec<u8>>, StateError>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: StateValue> StateData for Vec<T> {
    fn encode(&self, what: &str) -> Result<Vec<Vec<u8>>, StateError> {
        self.iter().map(|v| codec::encode(v, what)).collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<K: MapKey, V: StateValue> StateData for FxHashMap<K, V> {
    fn encode(&self, what: &str) -> Result<Vec<Vec<u8>>, StateError> {
        self.iter().map(|e| codec::encode(&e, what)).collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct RegisteredState {
    name: String,
    mode: OperatorStateMode,
    type_name: &'static str,
    serializer: SerializerIdentity,
    data: Box<dyn StateData>,
}

/// Restored elements of a state that has not been registered (yet).
struct RestoredEntry {
    mode: OperatorStateMode,
    type_name: String,
    serializer: Option<SerializerIdentity>,
    elements: Vec<Vec<u8>>,
}

/// One state's mode, type name, serializer identity and each old
/// subtask's elements, while a restore gathers them.
type StateParts = (
    OperatorStateMode,
    String,
    Option<SerializerIdentity>,
    Vec<(u32, Vec<Vec<u8>>)>,
);

/// The operator state of one operator subtask.
pub struct OperatorStateStore {
    operator: String,
    key_groups: Option<KeyGroupRange>,
    states: Vec<RegisteredState>,
    restored: BTreeMap<String, RestoredEntry>,
    is_restored: bool,
    restored_raw_operator: Vec<Vec<u8>>,
    restored_raw_keyed: Vec<(KeyGroup, Vec<u8>)>,
    raw_operator_out: Option<Vec<u8>>,
    raw_keyed_out: BTreeMap<KeyGroup, Vec<u8>>,
    /// Process-unique identity, what declared broadcast handles remember.
    owner: u64,
}

/// Mutable access to an operator state store, for handles (implemented by
/// the contexts that may change operator state).
pub trait OperatorStateAccess {
    /// The store.
    fn operator_state_store(&mut self) -> &mut OperatorStateStore;
}

/// Read-only access to an operator state store (a keyed function reads
/// broadcast state but must not change it: only the broadcast side may, so
/// that every subtask keeps the same copy).
pub trait OperatorStateRead {
    /// The store.
    fn operator_state_store_ref(&self) -> &OperatorStateStore;
}

/// What broadcast state is read through: the store, for as long as `'a`,
/// from a context borrowed for `'r`. Every [`OperatorStateRead`] context
/// lends it for its borrow (`'a` = `'r`); a context that can only read
/// (a keyed element's, whose broadcast state cannot change while it
/// lives) lends it for its whole life, so entries read from it stay
/// usable while the same context reads and writes keyed state.
pub trait BroadcastStateRead<'r, 'a> {
    /// The store.
    fn broadcast_store(&'r self) -> &'a OperatorStateStore;
}

impl<'r, T: OperatorStateRead + ?Sized> BroadcastStateRead<'r, 'r> for T {
    fn broadcast_store(&'r self) -> &'r OperatorStateStore {
        self.operator_state_store_ref()
    }
}

/// A broadcast state's entries, in no particular order.
pub type BroadcastEntries<'a, K, V> = std::collections::hash_map::Iter<'a, K, V>;

impl OperatorStateAccess for OperatorStateStore {
    fn operator_state_store(&mut self) -> &mut OperatorStateStore {
        self
    }
}

impl OperatorStateRead for OperatorStateStore {
    fn operator_state_store_ref(&self) -> &OperatorStateStore {
        self
    }
}

impl OperatorStateStore {
    /// An empty store for `operator`; `key_groups` is the subtask's range
    /// when the operator is keyed (raw keyed state needs it).
    pub fn new(operator: impl Into<String>, key_groups: Option<KeyGroupRange>) -> Self {
        OperatorStateStore {
            operator: operator.into(),
            key_groups,
            states: Vec::new(),
            restored: BTreeMap::new(),
            is_restored: false,
            restored_raw_operator: Vec::new(),
            restored_raw_keyed: Vec::new(),
            raw_operator_out: None,
            raw_keyed_out: BTreeMap::new(),
            owner: {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        }
    }

    /// The index of the registered state called `name`.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name == name)
    }

    /// True when this subtask was started from a snapshot (Flink's
    /// `isRestored()`), even if the snapshot held no state for it.
    pub fn is_restored(&self) -> bool {
        self.is_restored
    }

    /// Restores subtask `subtask` of `parallelism` from the operator state
    /// files of every old subtask, redistributing each state by its mode.
    pub fn restore(
        &mut self,
        files: &[&[u8]],
        subtask: u32,
        parallelism: u32,
    ) -> Result<(), StateError> {
        self.is_restored = true;
        let mut decoded: Vec<OperatorStateFile> = files
            .iter()
            .map(|b| OperatorStateFile::decode(b))
            .collect::<Result<_, _>>()?;
        decoded.sort_by_key(|f| f.subtask);
        let Some(old_parallelism) = decoded.first().map(|f| f.parallelism) else {
            return Ok(());
        };
        if let Some(f) = decoded.iter().find(|f| f.parallelism != old_parallelism) {
            return Err(self.inconsistent(format!(
                "subtask files disagree on the parallelism ({} and {})",
                old_parallelism, f.parallelism
            )));
        }
        let same = old_parallelism == parallelism;
        // Per state: its mode and each old subtask's elements.
        let mut by_name: BTreeMap<String, StateParts> = BTreeMap::new();
        for f in &mut decoded {
            for e in std::mem::take(&mut f.states) {
                let slot = by_name
                    .entry(e.name.clone())
                    .or_insert_with(|| (e.mode, e.type_name.clone(), None, Vec::new()));
                if slot.0 != e.mode {
                    return Err(self.inconsistent(format!(
                        "state '{}' is {} in one subtask and {} in another",
                        e.name, slot.0, e.mode
                    )));
                }
                match (&slot.2, &e.serializer) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(self.inconsistent(format!(
                            "state '{}' was written as {} in one subtask and as {} in another",
                            e.name,
                            a.describe(e.mode),
                            b.describe(e.mode)
                        )));
                    }
                    (None, Some(b)) => slot.2 = Some(b.clone()),
                    _ => {}
                }
                slot.3.push((f.subtask, e.elements));
            }
        }
        for (name, (mode, type_name, serializer, parts)) in by_name {
            let elements = match mode {
                OperatorStateMode::Split if same => parts
                    .into_iter()
                    .filter(|(s, _)| *s == subtask)
                    .flat_map(|(_, e)| e)
                    .collect(),
                OperatorStateMode::Split => {
                    let all: Vec<Vec<u8>> = parts.into_iter().flat_map(|(_, e)| e).collect();
                    let n = all.len();
                    let (p, i) = (parallelism as usize, subtask as usize);
                    let (from, to) = (n * i / p, n * (i + 1) / p);
                    all.into_iter().skip(from).take(to - from).collect()
                }
                OperatorStateMode::Union => parts.into_iter().flat_map(|(_, e)| e).collect(),
                OperatorStateMode::Broadcast => {
                    let pick = subtask as usize % parts.len();
                    parts
                        .into_iter()
                        .nth(pick)
                        .map(|(_, e)| e)
                        .unwrap_or_default()
                }
            };
            self.restored.insert(
                name,
                RestoredEntry {
                    mode,
                    type_name,
                    serializer,
                    elements,
                },
            );
        }
        for f in decoded {
            let owner = if same {
                f.subtask
            } else {
                f.subtask % parallelism
            };
            if let Some(raw) = f.raw_operator
                && owner == subtask
            {
                self.restored_raw_operator.push(raw);
            }
            for (kg, bytes) in f.raw_keyed {
                if self.key_groups.is_some_and(|r| r.contains(kg)) {
                    self.restored_raw_keyed.push((kg, bytes));
                }
            }
        }
        self.restored_raw_keyed.sort_by_key(|(kg, _)| *kg);
        Ok(())
    }

    /// Old subtasks' files that contradict each other.
    fn inconsistent(&self, reason: String) -> StateError {
        StateError::InconsistentSnapshots {
            what: format!("the operator state of '{}'", self.operator),
            reason,
        }
    }

    /// Registers (or finds) a state whose elements are written as
    /// `serializer`, creating it from restored elements once their
    /// recorded identity (if any) matches (see [`crate::schema`]).
    fn register<T: 'static, D: StateData + Default + 'static>(
        &mut self,
        name: &str,
        mode: OperatorStateMode,
        serializer: SerializerIdentity,
        decode: impl Fn(&[u8]) -> Result<T, StateError>,
        insert: impl Fn(&mut D, T),
    ) -> Result<usize, StateError> {
        let type_name = std::any::type_name::<T>();
        if let Some(i) = self.states.iter().position(|s| s.name == name) {
            let s = &self.states[i];
            if s.mode != mode || s.type_name != type_name {
                return Err(StateError::IncompatibleOperatorState {
                    name: name.to_string(),
                    existing: format!("{} of {}", s.mode, s.type_name),
                    requested: format!("{mode} of {type_name}"),
                    reason: "registered before with another shape".into(),
                });
            }
            return Ok(i);
        }
        let mut data = D::default();
        if let Some(r) = self.restored.remove(name) {
            let incompatible = |reason: String| StateError::IncompatibleOperatorState {
                name: name.to_string(),
                existing: format!("{} of {} (restored)", r.mode, r.type_name),
                requested: format!("{mode} of {type_name}"),
                reason,
            };
            if r.mode != mode {
                return Err(incompatible("the redistribution mode differs".into()));
            }
            if let Some(old) = &r.serializer
                && *old != serializer
            {
                return Err(StateError::IncompatibleSchema {
                    name: name.to_string(),
                    old: old.describe(r.mode),
                    new: serializer.describe(mode),
                    old_value_type: old.types.last().cloned().unwrap_or_default(),
                });
            }
            for e in &r.elements {
                insert(
                    &mut data,
                    decode(e).map_err(|e| incompatible(e.to_string()))?,
                );
            }
        }
        self.states.push(RegisteredState {
            name: name.to_string(),
            mode,
            type_name,
            serializer,
            data: Box::new(data),
        });
        Ok(self.states.len() - 1)
    }

    /// Registers a list state redistributed by even split (Flink's
    /// `getListState`).
    pub fn get_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>, StateError> {
        self.list_state(desc, OperatorStateMode::Split)
    }

    /// Registers a list state every subtask restores in full (Flink's
    /// `getUnionListState`).
    pub fn get_union_list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>, StateError> {
        self.list_state(desc, OperatorStateMode::Union)
    }

    fn list_state<T: StateValue>(
        &mut self,
        desc: &ListStateDescriptor<T>,
        mode: OperatorStateMode,
    ) -> Result<OperatorListState<T>, StateError> {
        let what = format!("element of operator state '{}'", desc.name());
        let index = self.register::<T, Vec<T>>(
            desc.name(),
            mode,
            SerializerIdentity::postcard(&[std::any::type_name::<T>()]),
            |b| codec::decode(b, &what),
            |v, t| v.push(t),
        )?;
        Ok(OperatorListState {
            index,
            _t: PhantomData,
        })
    }

    /// Registers a broadcast state: a map every subtask holds a copy of
    /// (Flink's `getBroadcastState`).
    pub fn get_broadcast_state<K: MapKey, V: StateValue>(
        &mut self,
        desc: &MapStateDescriptor<K, V>,
    ) -> Result<BroadcastState<K, V>, StateError> {
        let what = format!("entry of broadcast state '{}'", desc.name());
        let index = self.register::<(K, V), FxHashMap<K, V>>(
            desc.name(),
            OperatorStateMode::Broadcast,
            SerializerIdentity::postcard(&[std::any::type_name::<K>(), std::any::type_name::<V>()]),
            |b| codec::decode(b, &what),
            |m, (k, v)| {
                m.insert(k, v);
            },
        )?;
        Ok(BroadcastState {
            index: Cell::new(index),
            owner: Cell::new(REGISTERED),
            declared: None,
            _t: PhantomData,
        })
    }

    /// Names and modes of the registered states.
    pub fn registered_states(&self) -> impl Iterator<Item = (&str, OperatorStateMode)> {
        self.states.iter().map(|s| (s.name.as_str(), s.mode))
    }

    fn data<D: 'static>(&self, index: usize, name: &str) -> Result<&D, StateError> {
        self.states
            .get(index)
            .and_then(|s| s.data.as_any().downcast_ref())
            .ok_or_else(|| self.foreign(name))
    }

    fn data_mut<D: 'static>(&mut self, index: usize, name: &str) -> Result<&mut D, StateError> {
        let err = self.foreign(name);
        self.states
            .get_mut(index)
            .and_then(|s| s.data.as_any_mut().downcast_mut())
            .ok_or(err)
    }

    fn foreign(&self, what: &str) -> StateError {
        StateError::ForeignHandle {
            what: what.to_string(),
            operator: self.operator.clone(),
        }
    }

    /// The raw operator state restored to this subtask: one part per old
    /// subtask assigned to it (round robin when the parallelism changed).
    pub fn restored_raw_operator_state(&self) -> &[Vec<u8>] {
        &self.restored_raw_operator
    }

    /// The raw keyed state restored to this subtask, for the key groups of
    /// its range, ascending.
    pub fn restored_raw_keyed_state(&self) -> &[(KeyGroup, Vec<u8>)] {
        &self.restored_raw_keyed
    }

    /// Where a custom operator writes its raw operator state for the
    /// snapshot being taken.
    pub fn raw_operator_output(&mut self) -> &mut Vec<u8> {
        self.raw_operator_out.get_or_insert_with(Vec::new)
    }

    /// Where a custom operator writes the raw keyed state of key group `kg`
    /// (one of this subtask's) for the snapshot being taken.
    pub fn raw_keyed_output(&mut self, kg: KeyGroup) -> Result<&mut Vec<u8>, StateError> {
        match self.key_groups {
            Some(range) if range.contains(kg) => Ok(self.raw_keyed_out.entry(kg).or_default()),
            Some(range) => Err(StateError::KeyGroupOutOfRange {
                key_group: kg,
                range,
            }),
            None => Err(StateError::NotKeyed {
                name: "raw keyed state".into(),
                operator: self.operator.clone(),
            }),
        }
    }

    /// True when a snapshot would write nothing.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.restored.is_empty()
            && self.raw_operator_out.is_none()
            && self.raw_keyed_out.is_empty()
    }

    /// Encodes the snapshot of subtask `subtask` of `parallelism`, taking
    /// the raw state written for it. Restored states never registered are
    /// carried over unchanged, so a function that registers lazily loses
    /// nothing.
    pub fn snapshot(&mut self, subtask: u32, parallelism: u32) -> Result<Vec<u8>, StateError> {
        let mut states = Vec::with_capacity(self.states.len() + self.restored.len());
        for s in &self.states {
            let what = format!("element of operator state '{}'", s.name);
            states.push(OperatorStateEntry {
                name: s.name.clone(),
                mode: s.mode,
                type_name: s.type_name.to_string(),
                serializer: Some(s.serializer.clone()),
                elements: s.data.encode(&what)?,
            });
        }
        for (name, r) in &self.restored {
            states.push(OperatorStateEntry {
                name: name.clone(),
                mode: r.mode,
                type_name: r.type_name.clone(),
                serializer: r.serializer.clone(),
                elements: r.elements.clone(),
            });
        }
        OperatorStateFile {
            subtask,
            parallelism,
            states,
            raw_operator: self.raw_operator_out.take(),
            raw_keyed: std::mem::take(&mut self.raw_keyed_out)
                .into_iter()
                .collect(),
        }
        .encode()
    }
}

/// A list of values kept by an operator subtask (Flink's operator
/// `ListState`); split or union on restore, as registered.
pub struct OperatorListState<T> {
    index: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for OperatorListState<T> {
    fn clone(&self) -> Self {
        OperatorListState {
            index: self.index,
            _t: PhantomData,
        }
    }
}

impl<T: StateValue> OperatorListState<T> {
    /// The elements.
    pub fn get<'a>(&self, ctx: &'a impl OperatorStateRead) -> Result<&'a [T], StateError> {
        let v: &Vec<T> = ctx
            .operator_state_store_ref()
            .data(self.index, "operator list state")?;
        Ok(v)
    }

    fn vec<'a>(&self, ctx: &'a mut impl OperatorStateAccess) -> Result<&'a mut Vec<T>, StateError> {
        ctx.operator_state_store()
            .data_mut(self.index, "operator list state")
    }

    /// Appends one element.
    pub fn add(&self, ctx: &mut impl OperatorStateAccess, value: T) -> Result<(), StateError> {
        self.vec(ctx)?.push(value);
        Ok(())
    }

    /// Appends several elements.
    pub fn add_all(
        &self,
        ctx: &mut impl OperatorStateAccess,
        values: impl IntoIterator<Item = T>,
    ) -> Result<(), StateError> {
        self.vec(ctx)?.extend(values);
        Ok(())
    }

    /// Replaces the elements.
    pub fn update(
        &self,
        ctx: &mut impl OperatorStateAccess,
        values: Vec<T>,
    ) -> Result<(), StateError> {
        *self.vec(ctx)? = values;
        Ok(())
    }

    /// Removes every element.
    pub fn clear(&self, ctx: &mut impl OperatorStateAccess) -> Result<(), StateError> {
        self.vec(ctx)?.clear();
        Ok(())
    }
}

/// A map held identically by every subtask of an operator (Flink's
/// `BroadcastState`). Only the broadcast side changes it, so the copies
/// stay equal; the other side reads it.
///
/// Obtained in `initialize_state` from the store, or declared in a field
/// with [`BroadcastState::new`]: then found by name in whichever store it
/// is used with (the stream's `broadcast_with` declares it there).
pub struct BroadcastState<K, V> {
    index: Cell<usize>,
    /// [`REGISTERED`] for a handle from the store, else the identity of
    /// the store `index` belongs to (0: none yet).
    owner: Cell<u64>,
    declared: Option<Arc<MapStateDescriptor<K, V>>>,
    _t: PhantomData<fn() -> (K, V)>,
}

/// `BroadcastState::owner` of a handle the store made.
const REGISTERED: u64 = u64::MAX;

impl<K, V> Clone for BroadcastState<K, V> {
    fn clone(&self) -> Self {
        BroadcastState {
            index: self.index.clone(),
            owner: self.owner.clone(),
            declared: self.declared.clone(),
            _t: PhantomData,
        }
    }
}

impl<K: MapKey, V: StateValue> BroadcastState<K, V> {
    /// A broadcast state declared by `descriptor` (the one given to
    /// `broadcast_with`), in a field of the function: found by name where
    /// it is used, with no `initialize_state`.
    pub fn new(descriptor: MapStateDescriptor<K, V>) -> Self {
        BroadcastState {
            index: Cell::new(0),
            owner: Cell::new(0),
            declared: Some(Arc::new(descriptor)),
            _t: PhantomData,
        }
    }

    /// The state's index in `store`: a declared handle looks its name up
    /// (registering it, when `register` and the stream did not) the first
    /// time it meets `store`.
    fn index_in(&self, store: &OperatorStateStore) -> Result<usize, StateError> {
        let owner = self.owner.get();
        if owner == REGISTERED || owner == store.owner {
            return Ok(self.index.get());
        }
        let name = self.declared.as_ref().map_or("", |d| d.name());
        let index = store
            .index_of(name)
            .ok_or_else(|| StateError::UndeclaredBroadcastState {
                name: name.to_string(),
                operator: store.operator.clone(),
            })?;
        self.index.set(index);
        self.owner.set(store.owner);
        Ok(index)
    }

    fn map<'a>(&self, store: &'a OperatorStateStore) -> Result<&'a FxHashMap<K, V>, StateError> {
        store.data(self.index_in(store)?, "broadcast state")
    }

    fn map_mut<'a>(
        &self,
        ctx: &'a mut impl OperatorStateAccess,
    ) -> Result<&'a mut FxHashMap<K, V>, StateError> {
        let store = ctx.operator_state_store();
        let index = match (self.index_in(store), &self.declared) {
            // Declared here before the stream did (or it never will):
            // registered once, then found like any other.
            (Err(StateError::UndeclaredBroadcastState { .. }), Some(d)) => {
                store.get_broadcast_state(d)?;
                self.index_in(store)?
            }
            (found, _) => found?,
        };
        store.data_mut(index, "broadcast state")
    }

    /// The value under `key`.
    pub fn get<'r, 'a>(
        &self,
        ctx: &'r (impl BroadcastStateRead<'r, 'a> + ?Sized),
        key: &K,
    ) -> Result<Option<&'a V>, StateError> {
        Ok(self.map(ctx.broadcast_store())?.get(key))
    }

    /// True when `key` has a value.
    pub fn contains<'r, 'a>(
        &self,
        ctx: &'r (impl BroadcastStateRead<'r, 'a> + ?Sized),
        key: &K,
    ) -> Result<bool, StateError> {
        Ok(self.map(ctx.broadcast_store())?.contains_key(key))
    }

    /// Every entry, in no particular order. Read through a keyed
    /// element's context, the entries stay usable while that context
    /// reads and writes keyed state.
    pub fn entries<'r, 'a>(
        &self,
        ctx: &'r (impl BroadcastStateRead<'r, 'a> + ?Sized),
    ) -> Result<BroadcastEntries<'a, K, V>, StateError> {
        Ok(self.map(ctx.broadcast_store())?.iter())
    }

    /// Number of entries.
    pub fn len<'r, 'a>(
        &self,
        ctx: &'r (impl BroadcastStateRead<'r, 'a> + ?Sized),
    ) -> Result<usize, StateError> {
        Ok(self.map(ctx.broadcast_store())?.len())
    }

    /// True when there are no entries.
    pub fn is_empty<'r, 'a>(
        &self,
        ctx: &'r (impl BroadcastStateRead<'r, 'a> + ?Sized),
    ) -> Result<bool, StateError> {
        Ok(self.map(ctx.broadcast_store())?.is_empty())
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn put(
        &self,
        ctx: &mut impl OperatorStateAccess,
        key: K,
        value: V,
    ) -> Result<Option<V>, StateError> {
        Ok(self.map_mut(ctx)?.insert(key, value))
    }

    /// Removes `key`, returning its value.
    pub fn remove(
        &self,
        ctx: &mut impl OperatorStateAccess,
        key: &K,
    ) -> Result<Option<V>, StateError> {
        Ok(self.map_mut(ctx)?.remove(key))
    }

    /// Removes every entry.
    pub fn clear(&self, ctx: &mut impl OperatorStateAccess) -> Result<(), StateError> {
        self.map_mut(ctx)?.clear();
        Ok(())
    }
}
