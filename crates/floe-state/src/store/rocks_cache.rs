//! A write-back cache of value-like states (value, reducing, aggregating)
//! in front of RocksDB.
//!
//! A running count reads and writes the same key once per record; through
//! RocksDB that is a point lookup plus a memtable insert, about a microsecond.
//! The cache keeps each recently used key's current bytes on the heap: a hit
//! costs a hash lookup, and dirty entries reach RocksDB in one write batch
//! when the cache is flushed — at every snapshot (before the RocksDB
//! checkpoint, so the checkpoint holds every write), before anything that
//! iterates the database, and when the process's cache budget is full.
//! Lists and maps bypass it: lists append through the merge operator and
//! maps are entries of their own.
//!
//! All caches of a process share one byte budget
//! (`state.backend.rocksdb.write-cache.size`, a quarter of the managed memory
//! by default), so the RocksDB budget plus the caches stay within
//! `taskmanager.memory.managed.size` however many subtasks run. Entries are
//! charged as laid out in each state's arena plus its index; an arena's
//! spare capacity (it grows by a quarter at a time, and keeps its memory
//! when emptied) is not, so a cache may hold up to about a quarter more
//! than its share.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Bytes of an entry's header in the arena: key length, value capacity,
/// value length (`NONE`: no value) and flags, four bytes each.
const HEADER: usize = 16;
/// The value length that says "known to have no value".
const NONE: u32 = u32::MAX;
/// Flag: RocksDB has yet to see the entry's bytes.
const DIRTY: u32 = 1;
/// Flag: RocksDB may hold a value for the key. A key first seen absent and
/// deleted again before a flush (a count a timer clears within the same
/// checkpoint interval) then costs RocksDB nothing: no tombstone is written
/// for a key it never held.
const STORED: u32 = 2;
/// Bytes an arena grows by at least, so small caches do not reallocate
/// for every few entries.
const MIN_GROWTH: usize = 64 << 10;

/// Bytes held by every cache of the process.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// One state's cached keys. Entries live back to back in one arena
/// (header, key, value with room to grow), found through a hash table of
/// their offsets: no allocation per key, and emptying the cache is two
/// `clear`s instead of freeing every key and value one by one (which at
/// millions of keys made glibc's free lists the keyed thread's hot spot).
/// A value that outgrows its room moves to the arena's end; the old copy
/// stays as garbage until the cache is emptied.
struct Table {
    index: HashTable<usize>,
    arena: Vec<u8>,
}

/// A key's first eight bytes as a big-endian number (zero-padded): keys
/// compare as their prefixes do unless the prefixes are equal.
#[inline]
pub(crate) fn order_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Sorts `(order_prefix(key), item)` pairs into the keys' byte order.
/// Comparing the inline prefixes first keeps the sort in one contiguous
/// vector; only equal prefixes look at the keys themselves (wherever they
/// are in memory), which a sort by key slices did at every comparison.
pub(crate) fn sort_by_key_bytes<'k, T: Copy>(items: &mut [(u64, T)], key: impl Fn(T) -> &'k [u8]) {
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(key(b.1))));
}

/// An entry's header fields at offset `at`.
#[inline]
fn field(arena: &[u8], at: usize, n: usize) -> u32 {
    let i = at + 4 * n;
    u32::from_ne_bytes([arena[i], arena[i + 1], arena[i + 2], arena[i + 3]])
}

#[inline]
fn set_field(arena: &mut [u8], at: usize, n: usize, v: u32) {
    let i = at + 4 * n;
    arena[i..i + 4].copy_from_slice(&v.to_ne_bytes());
}

#[inline]
fn key_at(arena: &[u8], at: usize) -> &[u8] {
    let len = field(arena, at, 0) as usize;
    &arena[at + HEADER..at + HEADER + len]
}

#[inline]
fn value_at(arena: &[u8], at: usize) -> Option<&[u8]> {
    let len = field(arena, at, 2);
    (len != NONE).then(|| {
        let start = at + HEADER + field(arena, at, 0) as usize;
        &arena[start..start + len as usize]
    })
}

#[inline]
fn hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Room for a value of `len` bytes: the next power of two (at least 8),
/// so a growing value (a count's varint, a session window's list of
/// windows) is rewritten in place and moves — leaving garbage until the
/// cache is emptied — only when it doubles.
#[inline]
fn room(len: usize) -> usize {
    len.max(8).next_power_of_two()
}

impl Table {
    fn new() -> Self {
        Table {
            index: HashTable::new(),
            arena: Vec::new(),
        }
    }

    /// What the table holds, as charged to the budget.
    #[inline]
    fn charge(&self) -> usize {
        self.arena.len() + self.index.capacity() * (std::mem::size_of::<usize>() + 1)
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<usize> {
        let arena = &self.arena;
        self.index
            .find(hash(key), |&at| key_at(arena, at) == key)
            .copied()
    }

    /// Appends an entry and returns its offset. The arena grows by a
    /// quarter at a time, so its capacity stays close to what is charged.
    fn append(&mut self, key: &[u8], value: Option<&[u8]>, flags: u32) -> usize {
        let cap = room(value.map_or(0, <[u8]>::len));
        let need = HEADER + key.len() + cap;
        let at = self.arena.len();
        if self.arena.capacity() - at < need {
            let grow = need.max(self.arena.capacity() / 4).max(MIN_GROWTH);
            self.arena.reserve_exact(grow);
        }
        let len = value.map_or(NONE, |v| v.len() as u32);
        for v in [key.len() as u32, cap as u32, len, flags] {
            self.arena.extend_from_slice(&v.to_ne_bytes());
        }
        self.arena.extend_from_slice(key);
        let v = value.unwrap_or_default();
        self.arena.extend_from_slice(v);
        self.arena.resize(at + need, 0);
        at
    }

    /// Sets the value and flags of `key` (`flags` gets the old flags, if
    /// the key is cached), in place when the value fits its room, else in
    /// a new entry at the arena's end.
    fn set(&mut self, key: &[u8], value: Option<&[u8]>, flags: impl FnOnce(Option<u32>) -> u32) {
        let h = hash(key);
        let arena = &self.arena;
        let Some(&at) = self.index.find(h, |&at| key_at(arena, at) == key) else {
            let at = self.append(key, value, flags(None));
            let arena = &self.arena;
            self.index
                .insert_unique(h, at, |&at| hash(key_at(arena, at)));
            return;
        };
        let new_flags = flags(Some(field(&self.arena, at, 3)));
        let cap = field(&self.arena, at, 1) as usize;
        if value.is_some_and(|v| v.len() > cap) {
            let to = self.append(key, value, new_flags);
            if let Some(slot) = self.index.find_mut(h, |&o| o == at) {
                *slot = to;
            }
            return;
        }
        match value {
            Some(v) => {
                let start = at + HEADER + key.len();
                self.arena[start..start + v.len()].copy_from_slice(v);
                set_field(&mut self.arena, at, 2, v.len() as u32);
            }
            None => set_field(&mut self.arena, at, 2, NONE),
        }
        set_field(&mut self.arena, at, 3, new_flags);
    }

    fn clear(&mut self) {
        self.index.clear();
        self.arena.clear();
    }
}

/// The cache of one subtask's database; one table per state index (`None`
/// for lists and maps).
pub(crate) struct ValueCache {
    tables: Vec<Option<Table>>,
    /// Bytes this cache has charged to [`IN_USE`].
    bytes: usize,
    /// The process-wide budget.
    limit: usize,
    /// Some entry may be dirty.
    dirty: bool,
    /// Where `put` encodes before copying the bytes into the arena.
    scratch: Vec<u8>,
}

/// What a lookup found.
pub(crate) enum Cached<'a> {
    /// The key is cached: its bytes, or `None` for no value.
    Hit(Option<&'a [u8]>),
    /// Not cached (or the state is not cached at all).
    Miss,
}

impl ValueCache {
    /// An empty cache whose process shares `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        ValueCache {
            tables: Vec::new(),
            bytes: 0,
            limit,
            dirty: false,
            scratch: Vec::new(),
        }
    }

    /// Adds a state's table (cached when value-like and the cache has a
    /// budget at all).
    pub(crate) fn push_state(&mut self, cached: bool) {
        self.tables
            .push((cached && self.limit > 0).then(Table::new));
    }

    /// Whether any state can be cached at all (the budget is not zero).
    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Forgets the state added last.
    pub(crate) fn pop_state(&mut self) {
        if let Some(Some(t)) = self.tables.pop() {
            self.release(t.charge());
        }
    }

    /// Whether state `idx` goes through the cache.
    #[inline]
    pub(crate) fn caches(&self, idx: u32) -> bool {
        matches!(self.tables.get(idx as usize), Some(Some(_)))
    }

    /// The cached bytes of `key` in state `idx`.
    #[inline]
    pub(crate) fn get(&self, idx: u32, key: &[u8]) -> Cached<'_> {
        match self.tables.get(idx as usize) {
            Some(Some(t)) => match t.find(key) {
                Some(at) => Cached::Hit(value_at(&t.arena, at)),
                None => Cached::Miss,
            },
            _ => Cached::Miss,
        }
    }

    /// Remembers what RocksDB holds for `key` (after a miss).
    pub(crate) fn insert_clean(&mut self, idx: u32, key: &[u8], value: Option<&[u8]>) {
        let stored = if value.is_some() { STORED } else { 0 };
        self.update(idx, |t| t.set(key, value, |_| stored));
    }

    /// Sets `key`'s bytes to what `write` leaves in the buffer it is given,
    /// or deletes it (`write` = `None`); RocksDB sees it at the next flush.
    /// The bytes are encoded into a scratch buffer first, so a failed
    /// encoding changes nothing.
    #[inline]
    pub(crate) fn put<E>(
        &mut self,
        idx: u32,
        key: &[u8],
        write: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
    ) -> Result<(), E> {
        let encoded = match write {
            Some(write) => {
                self.scratch.clear();
                write(&mut self.scratch)?;
                true
            }
            None => false,
        };
        self.dirty = true;
        let scratch = std::mem::take(&mut self.scratch);
        let value = encoded.then_some(&scratch[..]);
        // Not read before: RocksDB may hold a value this write replaces.
        self.update(idx, |t| {
            t.set(key, value, |old| old.map_or(STORED, |f| f & STORED) | DIRTY)
        });
        self.scratch = scratch;
        Ok(())
    }

    /// Runs `f` on state `idx`'s table and charges what it grew by.
    #[inline]
    fn update(&mut self, idx: u32, f: impl FnOnce(&mut Table)) {
        let Some(Some(t)) = self.tables.get_mut(idx as usize) else {
            unreachable!("write to a state the cache does not hold")
        };
        let before = t.charge();
        f(t);
        let after = t.charge();
        if after > before {
            self.bytes += after - before;
            IN_USE.fetch_add(after - before, Ordering::Relaxed);
        }
    }

    /// The process's caches hold more than their budget: the caller should
    /// [`flush`](Self::flush) and [`clear`](Self::clear) this one.
    #[inline]
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > 0 && IN_USE.load(Ordering::Relaxed) > self.limit
    }

    /// Whether anything awaits a flush.
    #[inline]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Hands each state's dirty entries to `write` (state index, then
    /// `(key, Some(value) | None)` in key order), and marks them clean
    /// once it succeeds. A deletion of a key RocksDB never held is not
    /// handed over.
    pub(crate) fn flush<E>(
        &mut self,
        mut write: impl for<'a> FnMut(
            u32,
            &mut dyn Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        ) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.dirty {
            return Ok(());
        }
        let mut dirty: Vec<(u64, usize)> = Vec::new();
        for (idx, table) in self.tables.iter_mut().enumerate() {
            let Some(t) = table else { continue };
            let arena = &t.arena;
            dirty.clear();
            dirty.extend(
                t.index
                    .iter()
                    .copied()
                    .filter(|&at| {
                        let flags = field(arena, at, 3);
                        flags & DIRTY != 0 && (flags & STORED != 0 || field(arena, at, 2) != NONE)
                    })
                    .map(|at| (order_prefix(key_at(arena, at)), at)),
            );
            // In key order: RocksDB's memtable inserts a sorted run next to
            // the previous insert instead of searching its skiplist from the
            // top for each key (the memtable's cost dominated large-state
            // flushes in hash order).
            sort_by_key_bytes(&mut dirty, |at| key_at(arena, at));
            write(
                idx as u32,
                &mut dirty
                    .iter()
                    .map(|&(_, at)| (key_at(arena, at), value_at(arena, at))),
            )?;
            let Table { index, arena } = t;
            for &at in index.iter() {
                if field(arena, at, 3) & DIRTY != 0 {
                    let stored = if field(arena, at, 2) != NONE {
                        STORED
                    } else {
                        0
                    };
                    set_field(arena, at, 3, stored);
                }
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Drops every (clean) entry, returning its bytes to the budget. The
    /// arenas keep their memory for the entries that come next.
    pub(crate) fn clear(&mut self) {
        debug_assert!(!self.dirty, "clearing a cache with unflushed writes");
        for t in self.tables.iter_mut().flatten() {
            t.clear();
        }
        let held: usize = self.tables.iter().flatten().map(Table::charge).sum();
        self.release(self.bytes.saturating_sub(held));
    }

    fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        IN_USE.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for ValueCache {
    fn drop(&mut self) {
        IN_USE.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(c: &mut ValueCache, key: &[u8], v: Option<&[u8]>) {
        let w = v.map(|v| {
            move |buf: &mut Vec<u8>| {
                buf.extend_from_slice(v);
                Ok::<_, ()>(())
            }
        });
        c.put(0, key, w).unwrap();
    }

    fn flushed(c: &mut ValueCache) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        c.flush(|_, it| {
            out.extend(it.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))));
            Ok::<_, ()>(())
        })
        .unwrap();
        out.sort();
        out
    }

    #[test]
    fn writes_are_held_until_flushed_then_flushed_once() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        c.push_state(false);
        assert!(c.caches(0) && !c.caches(1));
        c.insert_clean(0, b"a", Some(b"1"));
        assert!(!c.is_dirty());
        put(&mut c, b"a", Some(b"2"));
        put(&mut c, b"b", None);
        put(&mut c, b"c", Some(b"3"));
        assert!(matches!(c.get(0, b"a"), Cached::Hit(Some(b"2"))));
        assert!(matches!(c.get(0, b"b"), Cached::Hit(None)));
        assert!(matches!(c.get(0, b"z"), Cached::Miss));
        assert_eq!(
            flushed(&mut c),
            vec![
                (b"a".to_vec(), Some(b"2".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(b"3".to_vec())),
            ]
        );
        assert!(flushed(&mut c).is_empty(), "a second flush writes nothing");
        // Still cached (clean) after the flush.
        assert!(matches!(c.get(0, b"c"), Cached::Hit(Some(b"3"))));
    }

    #[test]
    fn a_key_rocksdb_never_held_is_not_deleted_there() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        // Read absent, written, deleted again before a flush: nothing to do.
        c.insert_clean(0, b"new", None);
        put(&mut c, b"new", Some(b"1"));
        put(&mut c, b"new", None);
        // Read present and deleted: the deletion must reach RocksDB.
        c.insert_clean(0, b"old", Some(b"1"));
        put(&mut c, b"old", None);
        // Never read: RocksDB may hold it, so its deletion is written.
        put(&mut c, b"blind", None);
        assert_eq!(
            flushed(&mut c),
            vec![(b"blind".to_vec(), None), (b"old".to_vec(), None)]
        );
        // Written, flushed, then deleted: RocksDB holds it now.
        put(&mut c, b"new", Some(b"2"));
        assert_eq!(
            flushed(&mut c),
            vec![(b"new".to_vec(), Some(b"2".to_vec()))]
        );
        put(&mut c, b"new", None);
        assert_eq!(flushed(&mut c), vec![(b"new".to_vec(), None)]);
        // Deleted and flushed: absent again, so another deletion is free.
        put(&mut c, b"new", None);
        assert!(flushed(&mut c).is_empty());
    }

    #[test]
    fn a_failed_encoding_leaves_the_entry_as_it_was() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        put(&mut c, b"k", Some(b"v1"));
        flushed(&mut c);
        let failing = Some(|buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"partial");
            Err("cannot encode")
        });
        assert!(c.put(0, b"k", failing).is_err());
        assert!(matches!(c.get(0, b"k"), Cached::Hit(Some(b"v1"))));
        assert!(flushed(&mut c).is_empty(), "still clean: nothing to write");
        let bytes = c.bytes;
        put(&mut c, b"k", None);
        assert!(c.bytes <= bytes);
    }

    #[test]
    fn a_failed_flush_keeps_entries_dirty() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        put(&mut c, b"k", Some(b"v"));
        assert!(c.flush(|_, _| Err("disk full")).is_err());
        assert_eq!(flushed(&mut c), vec![(b"k".to_vec(), Some(b"v".to_vec()))]);
    }

    #[test]
    fn bytes_are_charged_and_released() {
        let mut c = ValueCache::new(150);
        c.push_state(true);
        put(&mut c, b"k1", Some(&[0; 50]));
        assert!(c.bytes >= 50 + HEADER);
        assert!(!c.over_budget());
        put(&mut c, b"k2", Some(&[0; 50]));
        assert!(c.over_budget());
        flushed(&mut c);
        c.clear();
        assert!(c.bytes < 50, "only the emptied index stays charged");
        assert!(!c.over_budget());
        assert!(matches!(c.get(0, b"k1"), Cached::Miss));
    }

    #[test]
    fn values_grow_in_place_then_move_and_stay_readable() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        put(&mut c, b"k", Some(b"1"));
        let charged = c.bytes;
        // Within the entry's room: rewritten in place, nothing charged.
        put(&mut c, b"k", Some(b"12345678"));
        put(&mut c, b"k", None);
        put(&mut c, b"k", Some(b"22"));
        assert_eq!(c.bytes, charged);
        // Larger than its room: moved to the arena's end.
        put(&mut c, b"k", Some(&[7; 100]));
        assert!(c.bytes >= charged + 100);
        assert!(matches!(c.get(0, b"k"), Cached::Hit(Some(v)) if v == [7; 100]));
        assert_eq!(flushed(&mut c), vec![(b"k".to_vec(), Some(vec![7; 100]))]);
    }

    #[test]
    fn keys_sort_into_byte_order_across_prefix_ties() {
        let keys: Vec<&[u8]> = vec![
            b"ab\0\0\0\0\0\0\x01",
            b"ab",
            b"ab\0",
            b"\xff",
            b"",
            b"ab\0\0\0\0\0\0",
            b"abcdefghij",
            b"abcdefghi",
            b"abcdefgh",
        ];
        let mut items: Vec<(u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (order_prefix(k), i))
            .collect();
        sort_by_key_bytes(&mut items, |i| keys[i]);
        let sorted: Vec<&[u8]> = items.iter().map(|&(_, i)| keys[i]).collect();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(sorted, want);
    }

    #[test]
    fn many_keys_survive_growth_flush_and_clear() {
        let mut c = ValueCache::new(usize::MAX);
        c.push_state(true);
        c.push_state(true);
        for round in 0..2u32 {
            for i in 0..20_000u32 {
                let key = i.to_be_bytes();
                put(
                    &mut c,
                    &key,
                    Some(&(i * 3 + round).to_le_bytes()[..1 + (i as usize % 4)]),
                );
                c.insert_clean(1, &key, (i % 2 == 0).then_some(&key[..]));
            }
            for i in 0..20_000u32 {
                let key = i.to_be_bytes();
                let want = (i * 3 + round).to_le_bytes();
                assert!(
                    matches!(c.get(0, &key), Cached::Hit(Some(v)) if v == &want[..1 + (i as usize % 4)])
                );
                let want = (i % 2 == 0).then_some(&key[..]);
                assert!(matches!(c.get(1, &key), Cached::Hit(v) if v == want));
            }
            let out = flushed(&mut c);
            assert_eq!(out.len(), 20_000, "state 0's writes; state 1 is clean");
            assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
            c.clear();
            assert!(matches!(c.get(0, &7u32.to_be_bytes()), Cached::Miss));
        }
    }
}
