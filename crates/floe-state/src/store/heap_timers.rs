//! The heap store's timer queues (Flink's `HeapPriorityQueueSet` per key
//! group under a `KeyGroupPartitionedPriorityQueue`).
//!
//! Per key group and time domain a [`TimerSet`]: a hash set of the typed
//! timers, so that registering one that exists (a function registering a
//! timer per record) costs one hash lookup and encodes nothing, and the
//! timers' sort keys (timestamp, key bytes ++ namespace bytes, encoded
//! once per new timer) in a [`Chunk`] per 1,024 timestamps. The key's
//! bytes are what makes the order the RocksDB store's (which can only
//! compare bytes).
//!
//! A chunk is a vector: registering pushes, and a chunk is sorted when
//! polling reaches it rather than every timer kept ordered as it arrives;
//! timers registered into a chunk being polled wait for its next sort,
//! or, the few that fall within the sorted part, go to a small heap
//! beside it. Deleting is lazy: the hash set decides which copies are
//! timers, a count per timestamp keeps the head exact, a chunk is dropped
//! when it has no timer left, polling skips dead copies and duplicates,
//! and a chunk whose dead copies outnumber its timers is compacted. A
//! snapshot writes only the timers, in firing order. A [`GroupHeads`] per
//! domain finds the earliest group.
//!
//! Key groups are copy-on-write with snapshots, as the state tables are:
//! a snapshot shares every group, and the first change to a group it
//! still shares encodes that group for the snapshot before changing it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
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

/// Key and namespace bytes up to this size live in the chunk's vector.
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
    /// Short enough to stay in the chunk.
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

/// A timer's place in the firing order: its timestamp, then its key and
/// namespace bytes.
type SortKey = (i64, SortBytes);

/// One time domain's timers in one key group.
#[derive(Clone)]
struct TimerSet<K, N> {
    /// Every timer, typed: whether one exists without encoding it, and
    /// the authority on which of the chunks' copies are still pending.
    index: HashSet<TimerId<K, N>, FxBuildHasher>,
    /// Timers of the index per timestamp: the first is the head, exact
    /// whatever dead copies the chunks hold.
    counts: BTreeMap<i64, usize>,
    /// The timers' sort keys by [`chunk_of`] their timestamp; only chunks
    /// with a timer of the index.
    chunks: BTreeMap<i64, Chunk>,
}

/// Timestamps per chunk, as a power of two: a chunk holds a second's
/// worth of millisecond timestamps, so that timers which rarely share a
/// timestamp (a timeout some time after each record) still share a
/// vector, while the few timestamps of timers that do (the end of a
/// second or window) mostly get one each.
const CHUNK_BITS: u32 = 10;

/// The chunk of `timestamp`: its first timestamp, shifted.
#[inline]
fn chunk_of(timestamp: i64) -> i64 {
    timestamp >> CHUNK_BITS
}

impl<K, N> TimerSet<K, N> {
    fn new() -> Self {
        TimerSet {
            index: HashSet::with_hasher(FxBuildHasher),
            counts: BTreeMap::new(),
            chunks: BTreeMap::new(),
        }
    }

    /// The earliest timestamp.
    #[inline]
    fn head(&self) -> Option<i64> {
        self.counts.first_key_value().map(|(ts, _)| *ts)
    }

    /// One timer fewer at `timestamp`, in `counts` and its chunk (dropped
    /// when it has none left; `false` then, `true` if it still has some).
    #[inline]
    fn forget(&mut self, timestamp: i64) -> bool {
        if let Some(n) = self.counts.get_mut(&timestamp) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&timestamp);
            }
        }
        let c = chunk_of(timestamp);
        let Some(chunk) = self.chunks.get_mut(&c) else {
            return false;
        };
        chunk.live -= 1;
        if chunk.live == 0 {
            self.chunks.remove(&c);
            return false;
        }
        true
    }
}

impl<K: Key, N: Namespace> TimerSet<K, N> {
    /// Drops the dead copies and duplicates of the chunk of `timestamp`
    /// once they outnumber its timers (timers deleted, or deleted and
    /// registered again, over and over while their chunk has other
    /// timers), so that a chunk's memory stays proportional to its timers.
    fn compact_if_mostly_dead(&mut self, timestamp: i64) {
        let Some(chunk) = self.chunks.get_mut(&chunk_of(timestamp)) else {
            return;
        };
        if chunk.len() <= 2 * chunk.live + COMPACT_SLACK {
            return;
        }
        let mut copies = std::mem::take(&mut chunk.run);
        copies.append(&mut chunk.pending);
        copies.extend(
            std::mem::take(&mut chunk.late)
                .into_iter()
                .map(|Reverse(s)| s),
        );
        copies.sort_unstable_by(|a, b| b.cmp(a));
        copies.dedup();
        copies.retain(|(ts, s)| is_live(&self.index, *ts, s));
        // Polling pops from a run: one remains, now up to the largest
        // copy. Never polled, the copies stay pending.
        if chunk.run_max.is_some() {
            chunk.run_max = copies.first().map(|(ts, _)| *ts);
            chunk.run = copies;
        } else {
            chunk.pending = copies;
        }
    }
}

/// Whether a copy is a timer of `index`. A copy that does not decode is
/// kept: it was encoded from a timer, and polling it reports the failure.
fn is_live<K: Key, N: Namespace>(
    index: &HashSet<TimerId<K, N>, FxBuildHasher>,
    timestamp: i64,
    sort: &SortBytes,
) -> bool {
    decode_sort_bytes::<K, N>(sort.as_slice()).map_or(true, |(key, namespace)| {
        index.contains(&TimerRef {
            key: &key,
            namespace: &namespace,
            timestamp,
        })
    })
}

/// Dead copies a chunk may hold beyond twice its timers before it is
/// compacted.
const COMPACT_SLACK: usize = 32;

/// The sort keys of the timers of one chunk of timestamps, in a vector in
/// arrival order (registering a timer is a push) until the chunk is
/// polled, sorted then into a run that polling pops from. Cheaper than
/// keeping every timer ordered as it arrives: the order is needed once,
/// and only for the earliest chunk. Timers registered into a chunk being
/// polled go after its run (the next run) or, the few that fall within
/// it, to a heap beside it.
///
/// Deletion is lazy: the set's index decides which copies are timers, a
/// chunk only counts them (`live`), and polling skips the rest. Deleting
/// a timer and registering it again leaves two copies; the first polled
/// while the timer is in the index fires it.
#[derive(Clone, Default)]
struct Chunk {
    /// Sorted copies, descending, so that polling pops the least from
    /// the end; none later than `run_max`.
    run: Vec<SortKey>,
    /// The latest timestamp the run was made with (`None`: never polled).
    run_max: Option<i64>,
    /// Copies added since, up to `run_max`: they interleave with the run
    /// (timers registered at a timestamp that is firing).
    late: BinaryHeap<Reverse<SortKey>>,
    /// Copies added since, after `run_max` (all of them before the first
    /// poll), in arrival order: they come after the run and `late`, and
    /// are sorted into the next run when those are empty.
    pending: Vec<SortKey>,
    /// Timers of the index in this chunk.
    live: usize,
}

impl Chunk {
    /// Copies, dead ones included.
    #[inline]
    fn len(&self) -> usize {
        self.run.len() + self.late.len() + self.pending.len()
    }

    #[inline(always)]
    fn push(&mut self, key: SortKey) {
        if self.run_max.is_some_and(|max| key.0 <= max) {
            self.push_late(key);
        } else {
            self.pending.push(key);
        }
    }

    #[cold]
    #[inline(never)]
    fn push_late(&mut self, key: SortKey) {
        self.late.push(Reverse(key));
    }

    #[inline]
    fn late_least(&self) -> Option<&SortKey> {
        self.late.peek().map(|Reverse(s)| s)
    }

    /// Whether the least copy is `late`'s rather than the run's.
    #[inline]
    fn least_is_late(&self) -> bool {
        match (self.run.last(), self.late_least()) {
            (Some(r), Some(l)) => l < r,
            (None, _) => true,
            (Some(_), None) => false,
        }
    }

    /// The least copy: the run's or `late`'s, or, when both are empty,
    /// the least pending one, sorted into a new run first.
    #[inline]
    fn least(&mut self) -> Option<&SortKey> {
        if self.run.is_empty() && self.late.is_empty() && !self.pending.is_empty() {
            // The spent run's vector takes the next copies.
            std::mem::swap(&mut self.run, &mut self.pending);
            self.run.sort_unstable_by(|a, b| b.cmp(a));
            self.run_max = self.run.first().map(|(ts, _)| *ts);
        }
        if self.least_is_late() {
            self.late_least()
        } else {
            self.run.last()
        }
    }

    /// Removes the least copy (after [`least`](Self::least)).
    #[inline]
    fn pop_least(&mut self) {
        if self.least_is_late() {
            self.late.pop();
        } else {
            self.run.pop();
        }
    }

    /// Appends every copy to `out`, in ascending order.
    fn sorted_copies<'a>(&'a self, out: &mut Vec<&'a SortKey>) {
        let start = out.len();
        out.extend(self.run.iter().rev());
        out.extend(self.late.iter().map(|Reverse(s)| s));
        out.extend(self.pending.iter());
        if out.len() > start + self.run.len() {
            out[start..].sort_unstable();
        }
    }
}

/// Both time domains' timers of one key group: what a snapshot shares.
#[derive(Clone)]
struct GroupTimers<K, N> {
    sets: [TimerSet<K, N>; 2],
}

impl<K, N> GroupTimers<K, N> {
    fn is_empty(&self) -> bool {
        self.sets.iter().all(|s| s.counts.is_empty())
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
        *set.counts.entry(timestamp).or_default() += 1;
        let chunk = set.chunks.entry(chunk_of(timestamp)).or_default();
        chunk.push((timestamp, sort));
        chunk.live += 1;
        if chunk.len() > chunk.live {
            set.compact_if_mostly_dead(timestamp);
        }
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
        let set = &mut self.group_mut(offset).sets[d];
        set.index.remove(&probe);
        if set.forget(timestamp) {
            set.compact_if_mostly_dead(timestamp);
        }
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
        let Some((offset, head)) = self.heads[d].earliest() else {
            return Ok(None);
        };
        if head > up_to {
            return Ok(None);
        }
        let set = &mut self.group_mut(offset).sets[d];
        let Some(mut entry) = set.chunks.first_entry() else {
            return Ok(None);
        };
        let chunk = entry.get_mut();
        // The first chunk has a timer of the index, every timer of the
        // index a copy in its chunk, and the least copy of the chunk that
        // is a timer is the earliest: this ends within the chunk, at
        // `head`.
        while let Some((ts, sort)) = chunk.least() {
            let ts = *ts;
            // Decoded before the copy goes: a failure leaves the queue as
            // it was (but for dead copies skipped).
            let (key, namespace) = decode_sort_bytes::<K, N>(sort.as_slice())?;
            chunk.pop_least();
            let fired = set.index.remove(&TimerRef {
                key: &key,
                namespace: &namespace,
                timestamp: ts,
            });
            if !fired {
                continue;
            }
            // It is the head: its count is the first, its chunk `entry`.
            if let Some(mut count) = set.counts.first_entry() {
                debug_assert_eq!(*count.key(), ts);
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
            chunk.live -= 1;
            if chunk.live == 0 {
                entry.remove();
            }
            let head = set.head();
            self.heads[d].set(offset, head);
            return Ok(Some(Timer {
                timestamp: ts,
                key,
                key_group: first + offset as KeyGroup,
                namespace,
            }));
        }
        debug_assert!(
            false,
            "the first chunk of key-group offset {offset} has no timer"
        );
        entry.remove();
        Ok(None)
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
/// out of its keys, so both stores write the same. Only the timers: each
/// chunk's copies sorted (a copy of the order, as the group is shared),
/// without duplicates and dead copies.
fn encode_group<K: Key, N: Namespace>(group: &GroupTimers<K, N>, out: &mut Vec<u8>) {
    let mut copies: Vec<&SortKey> = Vec::new();
    // Per time domain, the end of its copies.
    let mut ends = [0; 2];
    for (set, end) in group.sets.iter().zip(&mut ends) {
        for chunk in set.chunks.values() {
            let start = copies.len();
            chunk.sorted_copies(&mut copies);
            if chunk.len() != chunk.live {
                let mut kept = start;
                let mut prev: Option<&SortKey> = None;
                for i in start..copies.len() {
                    let c = copies[i];
                    if prev.replace(c) == Some(c) || !is_live(&set.index, c.0, &c.1) {
                        continue;
                    }
                    copies[kept] = c;
                    kept += 1;
                }
                copies.truncate(kept);
            }
        }
        *end = copies.len();
    }
    codec::push_varint(out, copies.len() as u64);
    let mut start = 0;
    for (code, end) in ends.into_iter().enumerate() {
        for (ts, sort) in &copies[start..end] {
            out.push(code as u8);
            codec::push_varint(out, ((ts << 1) ^ (ts >> 63)) as u64);
            out.extend_from_slice(sort.as_slice());
        }
        start = end;
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

    /// A timer deleted and set again, over and over, next to others at its
    /// timestamp: the chunk is compacted to exactly its timers whenever
    /// its copies pass about twice their number, and polling still fires
    /// each timer once, in order.
    #[test]
    fn a_chunk_of_mostly_dead_copies_is_compacted() {
        let mut t = TimerTable::<u64, u32>::new(1);
        let ev = TimeDomain::EventTime;
        for ns in 0..4 {
            t.add(&1, 0, ev, 10, ns).unwrap();
        }
        let copies = |t: &TimerTable<u64, u32>| t.groups[0].sets[0].chunks[&chunk_of(10)].len();
        let mut compactions = 0;
        let mut churn = |t: &mut TimerTable<u64, u32>, ns: u32, live: usize| {
            for (step, live) in [(0, live - 1), (1, live)] {
                let before = copies(t);
                if step == 0 {
                    t.delete(&1, 0, ev, 10, &ns).unwrap();
                } else {
                    t.add(&1, 0, ev, 10, ns).unwrap();
                }
                let after = copies(t);
                assert!(after <= 2 * live + COMPACT_SLACK, "{after} copies");
                if after < before {
                    assert_eq!(after, live, "compacted to its timers");
                    compactions += 1;
                }
            }
        };
        for round in 0..1_000 {
            churn(&mut t, round % 3, 4);
        }
        // The same while the chunk fires (a run, copies added later).
        let first = t.poll(ev, 10, 0).unwrap().unwrap();
        assert_eq!(first.namespace, 0);
        // Namespace 1, never churned, fires before the churned ones: the
        // compacted run keeps the order.
        for round in 0..1_000 {
            churn(&mut t, 2 + round % 2, 3);
        }
        assert!(compactions > 40, "{compactions}");
        let fired: Vec<u32> = std::iter::from_fn(|| t.poll(ev, 10, 0).unwrap())
            .map(|timer| timer.namespace)
            .collect();
        assert_eq!(fired, [1, 2, 3]);
        assert_eq!(t.next(ev), None);
    }
}
