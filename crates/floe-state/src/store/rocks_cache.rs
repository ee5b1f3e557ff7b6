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
//! `taskmanager.memory.managed.size` however many subtasks run.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustc_hash::FxHashMap;

/// Bytes charged per cached entry besides its key and value (the table
/// slot, the boxed key and vector headers).
const ENTRY_OVERHEAD: usize = 64;

/// Bytes held by every cache of the process.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// One cached key: its current bytes (`None`: known to have no value),
/// whether RocksDB has yet to see them, and whether RocksDB may hold a value
/// for the key at all. A key first seen absent and deleted again before a
/// flush (a count a timer clears within the same checkpoint interval) then
/// costs RocksDB nothing: no tombstone is written for a key it never held.
struct Slot {
    value: Option<Vec<u8>>,
    dirty: bool,
    stored: bool,
}

/// The cache of one subtask's database; one table per state index (`None`
/// for lists and maps).
pub(crate) struct ValueCache {
    tables: Vec<Option<FxHashMap<Box<[u8]>, Slot>>>,
    /// Bytes this cache has charged to [`IN_USE`].
    bytes: usize,
    /// The process-wide budget.
    limit: usize,
    /// Some entry may be dirty.
    dirty: bool,
    /// Where `put` encodes before swapping the bytes into a slot.
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
            .push((cached && self.limit > 0).then(FxHashMap::default));
    }

    /// Whether any state can be cached at all (the budget is not zero).
    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Forgets the state added last.
    pub(crate) fn pop_state(&mut self) {
        if let Some(Some(t)) = self.tables.pop() {
            let freed: usize = t.iter().map(|(k, s)| charge(k, s)).sum();
            self.release(freed);
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
            Some(Some(t)) => match t.get(key) {
                Some(slot) => Cached::Hit(slot.value.as_deref()),
                None => Cached::Miss,
            },
            _ => Cached::Miss,
        }
    }

    /// Remembers what RocksDB holds for `key` (after a miss).
    pub(crate) fn insert_clean(&mut self, idx: u32, key: &[u8], value: Option<Vec<u8>>) {
        let slot = Slot {
            stored: value.is_some(),
            value,
            dirty: false,
        };
        let add = charge(key, &slot);
        if let Some(Some(t)) = self.tables.get_mut(idx as usize) {
            if let Some(old) = t.insert(key.into(), slot) {
                self.release(charge(key, &old));
            }
            self.bytes += add;
            IN_USE.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// Sets `key`'s bytes to what `write` leaves in the buffer it is given,
    /// or deletes it (`write` = `None`); RocksDB sees it at the next flush.
    /// The bytes are encoded into a scratch buffer first, so a failed
    /// encoding changes nothing; the slot's old buffer becomes the next
    /// scratch, so an update allocates nothing.
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
        let Some(Some(t)) = self.tables.get_mut(idx as usize) else {
            unreachable!("put on a state the cache does not hold")
        };
        self.dirty = true;
        if let Some(slot) = t.get_mut(key) {
            let before = slot.value.as_ref().map_or(0, Vec::capacity);
            slot.value = if encoded {
                let old = slot.value.take().unwrap_or_default();
                Some(std::mem::replace(&mut self.scratch, old))
            } else {
                None
            };
            slot.dirty = true;
            let after = slot.value.as_ref().map_or(0, Vec::capacity);
            if after > before {
                self.bytes += after - before;
                IN_USE.fetch_add(after - before, Ordering::Relaxed);
            } else if before > after {
                self.release(before - after);
            }
            return Ok(());
        }
        let value = encoded.then(|| std::mem::take(&mut self.scratch));
        // Not read before: RocksDB may hold a value this write replaces.
        let slot = Slot {
            value,
            dirty: true,
            stored: true,
        };
        let add = charge(key, &slot);
        t.insert(key.into(), slot);
        self.bytes += add;
        IN_USE.fetch_add(add, Ordering::Relaxed);
        Ok(())
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
    /// once it succeeds.
    /// A deletion of a key RocksDB never held is not handed over.
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
        for (idx, table) in self.tables.iter_mut().enumerate() {
            let Some(t) = table else { continue };
            let mut dirty: Vec<(&[u8], Option<&[u8]>)> = t
                .iter()
                .filter(|(_, s)| s.dirty && (s.stored || s.value.is_some()))
                .map(|(k, s)| (&k[..], s.value.as_deref()))
                .collect();
            // In key order: RocksDB's memtable inserts a sorted run next to
            // the previous insert instead of searching its skiplist from the
            // top for each key (the memtable's cost dominated large-state
            // flushes in hash order).
            dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
            write(idx as u32, &mut dirty.into_iter())?;
            for slot in t.values_mut() {
                if slot.dirty {
                    slot.dirty = false;
                    slot.stored = slot.value.is_some();
                }
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Drops every (clean) entry, returning its bytes to the budget.
    pub(crate) fn clear(&mut self) {
        debug_assert!(!self.dirty, "clearing a cache with unflushed writes");
        for t in self.tables.iter_mut().flatten() {
            t.clear();
        }
        self.release(self.bytes);
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

fn charge(key: &[u8], slot: &Slot) -> usize {
    key.len() + slot.value.as_ref().map_or(0, Vec::capacity) + ENTRY_OVERHEAD
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
        c.insert_clean(0, b"a", Some(b"1".to_vec()));
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
        c.insert_clean(0, b"old", Some(b"1".to_vec()));
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
        let mut c = ValueCache::new(200);
        c.push_state(true);
        put(&mut c, b"k1", Some(&[0; 50]));
        assert!(c.bytes >= 50 + ENTRY_OVERHEAD);
        put(&mut c, b"k2", Some(&[0; 50]));
        assert!(c.over_budget());
        flushed(&mut c);
        c.clear();
        assert_eq!(c.bytes, 0);
        assert!(matches!(c.get(0, b"k1"), Cached::Miss));
    }
}
