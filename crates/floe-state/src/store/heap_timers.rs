//! The heap store's timer queues (Flink's `HeapPriorityQueueSet` per key
//! group under a `KeyGroupPartitionedPriorityQueue`).
//!
//! Per key group and time domain a [`TimerSet`]: a hash set of the typed
//! timers, so that registering one that exists (a function registering a
//! timer per record) costs one hash lookup and encodes nothing, and an
//! ordered set of `(timestamp, key bytes ++ namespace bytes)` giving the
//! firing order with O(log n) insert, delete and pop. The key's bytes are
//! what makes the order the RocksDB store's (which can only compare
//! bytes); they are encoded once per new timer, into the set's node when
//! they fit [`INLINE_BYTES`]. A [`GroupHeads`] per domain finds the
//! earliest group.
//!
//! Key groups are copy-on-write with snapshots, as the state tables are:
//! a snapshot shares every group, and the first change to a group it
//! still shares encodes that group for the snapshot before changing it.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use floe_core::KeyGroup;
use hashbrown::{Equivalent, HashSet};
use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::codec;
use crate::error::StateError;
use crate::store::FrozenTable;
use crate::store::timer_heads::GroupHeads;
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::types::Key;

/// Key and namespace bytes up to this size live in the ordered set's node.
pub(crate) const INLINE_BYTES: usize = 22;

/// A timer's sort key after its timestamp: the postcard bytes of its key
/// followed by those of its namespace, compared as bytes (postcard
/// encodings are self-delimiting, so this compares key bytes first, then
/// namespace bytes).
///
/// Timers of one key group mostly share their timestamp (a timer per key
/// at the end of a second or window), so the bytes decide most
/// comparisons: their first eight, big-endian in a `u64`, are compared as
/// one integer, and the rest only when those are equal.
#[derive(Clone)]
pub(crate) struct SortBytes {
    /// The first 8 bytes, big-endian, zero-padded: when two differ, they
    /// order the whole byte strings the same way.
    head: u64,
    stored: Stored,
}

/// The bytes of a [`SortBytes`].
#[derive(Clone)]
enum Stored {
    /// Short enough to stay in the node.
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    /// Longer: on the heap.
    Spilled(Box<[u8]>),
}

impl SortBytes {
    /// The bytes.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.stored {
            Stored::Inline { len, bytes } => &bytes[..*len as usize],
            Stored::Spilled(b) => b,
        }
    }

    /// The sort bytes of `key` and `namespace`.
    #[inline]
    pub(crate) fn encode<K: Serialize, N: Serialize>(
        key: &K,
        namespace: &N,
    ) -> Result<Self, StateError> {
        let mut w = SortBytesWriter {
            len: 0,
            bytes: [0; INLINE_BYTES],
            spilled: None,
        };
        postcard::serialize_with_flavor(&(key, namespace), &mut w).map_err(|e| {
            StateError::Codec {
                action: "encode",
                what: "a timer's key and namespace".into(),
                reason: e.to_string(),
            }
        })?;
        let stored = match w.spilled {
            None => Stored::Inline {
                len: w.len as u8,
                bytes: w.bytes,
            },
            Some(v) => Stored::Spilled(v.into_boxed_slice()),
        };
        let mut head = [0u8; 8];
        let slice = match &stored {
            Stored::Inline { len, bytes } => &bytes[..*len as usize],
            Stored::Spilled(b) => &b[..],
        };
        let n = slice.len().min(8);
        head[..n].copy_from_slice(&slice[..n]);
        Ok(SortBytes {
            head: u64::from_be_bytes(head),
            stored,
        })
    }
}

impl PartialEq for SortBytes {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.as_slice() == other.as_slice()
    }
}

impl Eq for SortBytes {}

impl PartialOrd for SortBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortBytes {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.as_slice().cmp(other.as_slice()))
    }
}

/// A postcard output flavor writing [`SortBytes`]: in place while they
/// fit, then into a vector.
struct SortBytesWriter {
    len: usize,
    bytes: [u8; INLINE_BYTES],
    spilled: Option<Vec<u8>>,
}

impl postcard::ser_flavors::Flavor for &mut SortBytesWriter {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if let Some(v) = &mut self.spilled {
            v.extend_from_slice(data);
        } else if self.len + data.len() <= INLINE_BYTES {
            self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        } else {
            let mut v = Vec::with_capacity(2 * (self.len + data.len()));
            v.extend_from_slice(&self.bytes[..self.len]);
            v.extend_from_slice(data);
            self.spilled = Some(v);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A pending timer as the hash set holds it.
#[derive(Clone)]
struct TimerId<K, N> {
    key: K,
    namespace: N,
    timestamp: i64,
}

impl<K: Hash, N: Hash> Hash for TimerId<K, N> {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key.hash(h);
        self.namespace.hash(h);
        self.timestamp.hash(h);
    }
}

impl<K: Eq, N: Eq> PartialEq for TimerId<K, N> {
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp
            && self.key == other.key
            && self.namespace == other.namespace
    }
}

impl<K: Eq, N: Eq> Eq for TimerId<K, N> {}

/// A timer looked up without cloning its key: hashes exactly as the
/// [`TimerId`] it is equivalent to.
struct TimerRef<'a, K, N> {
    key: &'a K,
    namespace: &'a N,
    timestamp: i64,
}

impl<K: Hash, N: Hash> Hash for TimerRef<'_, K, N> {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key.hash(h);
        self.namespace.hash(h);
        self.timestamp.hash(h);
    }
}

impl<K: Eq, N: Eq> Equivalent<TimerId<K, N>> for TimerRef<'_, K, N> {
    #[inline]
    fn equivalent(&self, t: &TimerId<K, N>) -> bool {
        self.timestamp == t.timestamp && *self.key == t.key && *self.namespace == t.namespace
    }
}

/// One time domain's timers in one key group.
#[derive(Clone)]
struct TimerSet<K, N> {
    /// Every timer, typed: whether one exists without encoding it.
    index: HashSet<TimerId<K, N>, FxBuildHasher>,
    /// The same timers in firing order.
    order: BTreeSet<(i64, SortBytes)>,
}

impl<K, N> TimerSet<K, N> {
    fn new() -> Self {
        TimerSet {
            index: HashSet::with_hasher(FxBuildHasher),
            order: BTreeSet::new(),
        }
    }

    /// The earliest timestamp.
    #[inline]
    fn head(&self) -> Option<i64> {
        self.order.first().map(|(ts, _)| *ts)
    }
}

/// Both time domains' timers of one key group: what a snapshot shares.
#[derive(Clone)]
struct GroupTimers<K, N> {
    sets: [TimerSet<K, N>; 2],
}

impl<K, N> GroupTimers<K, N> {
    fn is_empty(&self) -> bool {
        self.sets.iter().all(|s| s.order.is_empty())
    }
}

/// A snapshot's key group: still shared with the live table, already
/// encoded (by the first change after the snapshot), or taken by the
/// encoder.
enum FrozenGroup<K, N> {
    Shared(Arc<GroupTimers<K, N>>),
    Encoded(Vec<u8>),
    Taken { has_entries: bool },
}

type FrozenGroups<K, N> = [Mutex<FrozenGroup<K, N>>];

/// One registered timer queue of the heap store.
pub(crate) struct TimerTable<K, N> {
    groups: Vec<Arc<GroupTimers<K, N>>>,
    /// `shared[o]`: a snapshot was taken since group `o` last changed.
    shared: Vec<bool>,
    /// The latest snapshot's cells, for encode-on-write.
    frozen: Option<Weak<FrozenGroups<K, N>>>,
    /// Per time domain, the earliest group.
    heads: [GroupHeads; 2],
}

impl<K: Key, N: Namespace> TimerTable<K, N> {
    /// No timers, in `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        TimerTable {
            groups: (0..groups)
                .map(|_| {
                    Arc::new(GroupTimers {
                        sets: [TimerSet::new(), TimerSet::new()],
                    })
                })
                .collect(),
            shared: vec![false; groups],
            frozen: None,
            heads: [GroupHeads::new(groups), GroupHeads::new(groups)],
        }
    }

    /// Group `offset`, to change: encoded for a snapshot still sharing it
    /// first, then unshared (copied only if the encoder holds it now).
    #[inline]
    fn group_mut(&mut self, offset: usize) -> &mut GroupTimers<K, N> {
        if self.shared[offset] {
            self.shared[offset] = false;
            self.encode_frozen(offset);
        }
        Arc::make_mut(&mut self.groups[offset])
    }

    #[cold]
    fn encode_frozen(&mut self, offset: usize) {
        let Some(frozen) = self.frozen.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let mut cell = frozen[offset].lock().unwrap_or_else(|p| p.into_inner());
        if let FrozenGroup::Shared(group) = &*cell {
            let mut out = Vec::new();
            if !group.is_empty() {
                encode_group(group, &mut out);
            }
            *cell = FrozenGroup::Encoded(out);
        }
    }

    /// Registers `(timestamp, key, namespace)` in `domain` of key group
    /// `offset`; a no-op if it exists.
    #[inline]
    pub(crate) fn add(
        &mut self,
        key: &K,
        offset: usize,
        domain: TimeDomain,
        timestamp: i64,
        namespace: N,
    ) -> Result<(), StateError> {
        let d = domain.index();
        let probe = TimerRef {
            key,
            namespace: &namespace,
            timestamp,
        };
        if self.groups[offset].sets[d].index.contains(&probe) {
            return Ok(());
        }
        let sort = SortBytes::encode(key, &namespace)?;
        let set = &mut self.group_mut(offset).sets[d];
        set.index.insert(TimerId {
            key: key.clone(),
            namespace,
            timestamp,
        });
        set.order.insert((timestamp, sort));
        self.heads[d].offer(offset, timestamp);
        Ok(())
    }

    /// Deletes `(timestamp, key, namespace)` from `domain` of key group
    /// `offset`; a no-op if it does not exist.
    pub(crate) fn delete(
        &mut self,
        key: &K,
        offset: usize,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        let d = domain.index();
        let probe = TimerRef {
            key,
            namespace,
            timestamp,
        };
        if !self.groups[offset].sets[d].index.contains(&probe) {
            return Ok(());
        }
        let sort = SortBytes::encode(key, namespace)?;
        let set = &mut self.group_mut(offset).sets[d];
        set.index.remove(&probe);
        set.order.remove(&(timestamp, sort));
        let head = set.head();
        self.heads[d].set(offset, head);
        Ok(())
    }

    /// The earliest timestamp in `domain`.
    #[inline]
    pub(crate) fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.heads[domain.index()].earliest().map(|(_, ts)| ts)
    }

    /// Removes and returns the earliest timer of `domain` if it is due at
    /// `up_to`; `first` is the range's first key group.
    pub(crate) fn poll(
        &mut self,
        domain: TimeDomain,
        up_to: i64,
        first: KeyGroup,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        let d = domain.index();
        let Some((offset, ts)) = self.heads[d].earliest() else {
            return Ok(None);
        };
        if ts > up_to {
            return Ok(None);
        }
        // Decoded before anything changes: a failure leaves the queue as
        // it was.
        let Some((_, sort)) = self.groups[offset].sets[d].order.first() else {
            return Ok(None);
        };
        let (key, namespace) = decode_sort_bytes::<K, N>(sort.as_slice())?;
        let set = &mut self.group_mut(offset).sets[d];
        set.order.pop_first();
        set.index.remove(&TimerRef {
            key: &key,
            namespace: &namespace,
            timestamp: ts,
        });
        let head = set.head();
        self.heads[d].set(offset, head);
        Ok(Some(Timer {
            timestamp: ts,
            key,
            key_group: first + offset as KeyGroup,
            namespace,
        }))
    }

    /// The synchronous part of a snapshot: shares every group with it.
    pub(crate) fn freeze(&mut self) -> Box<dyn FrozenTable> {
        self.shared.iter_mut().for_each(|s| *s = true);
        let groups: Arc<FrozenGroups<K, N>> = self
            .groups
            .iter()
            .map(|g| Mutex::new(FrozenGroup::Shared(g.clone())))
            .collect();
        self.frozen = Some(Arc::downgrade(&groups));
        Box::new(FrozenTimerTable { groups })
    }

    /// Adds the timers of one key group's canonical bytes (see
    /// [`encode_group`]) to group `offset`.
    pub(crate) fn restore_key_group(
        &mut self,
        offset: usize,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), StateError> {
        for_each_canonical_timer::<K, N>(bytes, what, |domain, ts, key, ns| {
            self.add(&key, offset, domain, ts, ns)
        })
    }
}

/// Calls `f` on every timer `(domain, timestamp, key, namespace)` of one
/// key group's canonical bytes (the postcard sequence of `(u8, i64, K, N)`).
pub(crate) fn for_each_canonical_timer<K: Key, N: Namespace>(
    bytes: &[u8],
    what: &str,
    mut f: impl FnMut(TimeDomain, i64, K, N) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let err = |reason: String| StateError::Codec {
        action: "decode",
        what: what.to_string(),
        reason,
    };
    let take = |e: postcard::Error| err(e.to_string());
    let (n, mut rest) = postcard::take_from_bytes::<u64>(bytes).map_err(take)?;
    for _ in 0..n {
        let (code, r) = postcard::take_from_bytes::<u8>(rest).map_err(take)?;
        let domain = TimeDomain::from_code(code)
            .ok_or_else(|| err(format!("unknown time domain {code}")))?;
        let (ts, r) = postcard::take_from_bytes::<i64>(r).map_err(take)?;
        let (key, r) = postcard::take_from_bytes::<K>(r).map_err(take)?;
        let (ns, r) = postcard::take_from_bytes::<N>(r).map_err(take)?;
        f(domain, ts, key, ns)?;
        rest = r;
    }
    if !rest.is_empty() {
        return Err(err(format!("{} trailing bytes", rest.len())));
    }
    Ok(())
}

/// The key and namespace of a timer's sort bytes.
pub(crate) fn decode_sort_bytes<K: Key, N: Namespace>(bytes: &[u8]) -> Result<(K, N), StateError> {
    const WHAT: &str = "a timer's key and namespace";
    let (key, rest) = postcard::take_from_bytes::<K>(bytes).map_err(|e| StateError::Codec {
        action: "decode",
        what: WHAT.into(),
        reason: e.to_string(),
    })?;
    let namespace = codec::decode::<N>(rest, WHAT)?;
    Ok((key, namespace))
}

/// Appends one key group's canonical timer bytes: the postcard sequence of
/// `(domain code, timestamp, key, namespace)`, event time first, each
/// domain in firing order — the bytes the RocksDB store's snapshot reads
/// out of its keys, so both stores write the same.
fn encode_group<K, N>(group: &GroupTimers<K, N>, out: &mut Vec<u8>) {
    let n: usize = group.sets.iter().map(|s| s.order.len()).sum();
    codec::push_varint(out, n as u64);
    for (code, set) in group.sets.iter().enumerate() {
        for (ts, sort) in &set.order {
            out.push(code as u8);
            codec::push_varint(out, ((ts << 1) ^ (ts >> 63)) as u64);
            out.extend_from_slice(sort.as_slice());
        }
    }
}

/// A snapshot's view of one timer queue.
struct FrozenTimerTable<K, N> {
    groups: Arc<FrozenGroups<K, N>>,
}

impl<K, N> FrozenGroup<K, N> {
    fn has_entries(&self) -> bool {
        match self {
            FrozenGroup::Shared(g) => !g.is_empty(),
            FrozenGroup::Encoded(bytes) => !bytes.is_empty(),
            FrozenGroup::Taken { has_entries } => *has_entries,
        }
    }
}

impl<K: Key, N: Namespace> FrozenTable for FrozenTimerTable<K, N> {
    fn has_entries(&self, offset: usize) -> bool {
        self.groups[offset]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_entries()
    }

    fn encode_key_group(
        &self,
        offset: usize,
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<bool, StateError> {
        let taken = {
            let mut cell = self.groups[offset]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let has_entries = cell.has_entries();
            std::mem::replace(&mut *cell, FrozenGroup::Taken { has_entries })
        };
        out.clear();
        match taken {
            FrozenGroup::Shared(group) => {
                if group.is_empty() {
                    return Ok(false);
                }
                encode_group(&group, out);
                Ok(true)
            }
            FrozenGroup::Encoded(bytes) => {
                *out = bytes;
                Ok(!out.is_empty())
            }
            FrozenGroup::Taken { .. } => Err(StateError::SnapshotEncodedTwice {
                what: what.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_bytes_are_postcard_inline_or_spilled() {
        let short = SortBytes::encode(&42u64, &()).unwrap();
        assert!(matches!(short.stored, Stored::Inline { .. }));
        assert_eq!(short.as_slice(), &[42]);
        let s = "x".repeat(40);
        let long = SortBytes::encode(&s, &7u32).unwrap();
        assert!(matches!(long.stored, Stored::Spilled(_)));
        assert_eq!(long.as_slice(), postcard::to_allocvec(&(&s, 7u32)).unwrap());
        // Exactly full, then one byte over.
        let at = "y".repeat(INLINE_BYTES - 1);
        assert!(matches!(
            SortBytes::encode(&at, &()).unwrap().stored,
            Stored::Inline { .. }
        ));
        let over = "y".repeat(INLINE_BYTES);
        assert!(matches!(
            SortBytes::encode(&over, &()).unwrap().stored,
            Stored::Spilled(_)
        ));
        assert_eq!(
            decode_sort_bytes::<String, u32>(long.as_slice()).unwrap(),
            (s, 7)
        );
    }

    #[test]
    fn a_change_after_a_snapshot_encodes_the_group_for_it() {
        let mut t = TimerTable::<u64, ()>::new(2);
        t.add(&1, 0, TimeDomain::EventTime, 10, ()).unwrap();
        let frozen = t.freeze();
        t.add(&2, 0, TimeDomain::EventTime, 5, ()).unwrap();
        t.delete(&1, 0, TimeDomain::EventTime, 10, &()).unwrap();
        assert!(frozen.has_entries(0));
        assert!(!frozen.has_entries(1));
        let mut out = Vec::new();
        assert!(frozen.encode_key_group(0, &mut out, "t").unwrap());
        assert_eq!(
            out,
            postcard::to_allocvec(&vec![(0u8, 10i64, 1u64, ())]).unwrap()
        );
        assert!(!frozen.encode_key_group(1, &mut out, "t").unwrap());
        assert!(frozen.encode_key_group(0, &mut out, "t").is_err());
        assert_eq!(t.next(TimeDomain::EventTime), Some(5));
    }
}
