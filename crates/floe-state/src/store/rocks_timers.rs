//! The RocksDB store's timer queues (Flink's
//! `RocksDBCachingPriorityQueueSet` per key group under a
//! `KeyGroupPartitionedPriorityQueue`).
//!
//! A queue is a column family of its own whose keys are the timers
//! (`floe_rocksdb::key::encode_timer_key`: key group, time domain,
//! timestamp, key bytes, namespace bytes; no value), so RocksDB keeps each
//! key group's timers of each domain in firing order. In front of it, per
//! key group and domain, a [`GroupCache`] holds the first few timers
//! (up to the configured cache size, Flink's 128 by default) in memory:
//! the head of every group is always known without a read, so the
//! earliest timer overall, and whether one is due, come from memory
//! ([`GroupHeads`]); RocksDB is read only when a group's cached timers are
//! used up (a seek and a short scan).
//!
//! Changes are buffered per group ([`Pending`]) and written in one batch
//! when the buffer is full, before a group is read back, and before every
//! snapshot (the store flushes first), so a snapshot of the database holds
//! every timer. Flink writes each change at once; buffering is what a
//! keyed function that sets the same timer for every record of a key
//! needs (one write, not one per record), and a timer that fires before
//! its buffer is written, known not to be in RocksDB, is never written at
//! all.

use std::collections::BTreeSet;

use floe_core::KeyGroup;
use floe_rocksdb::key::{decode_timer_key, encode_timer_key, timer_domain_bounds};
use floe_rocksdb::{KeyedDb, StateId};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::codec;
use crate::error::StateError;
use crate::store::heap_timers::decode_sort_bytes;
use crate::store::timer_heads::GroupHeads;
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::types::Key;

/// A timer change not yet written to RocksDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The timer exists; `fresh`: it was registered when it was known not
    /// to be in RocksDB, so removing it needs no write.
    Put { fresh: bool },
    /// The timer does not exist (it may still be in RocksDB).
    Delete,
}

impl Pending {
    /// The change as a write: a put of no value, or a delete.
    fn value(self) -> Option<&'static [u8]> {
        match self {
            Pending::Put { .. } => Some(&[]),
            Pending::Delete => None,
        }
    }
}

/// The first timers of one key group in one domain, and its unwritten
/// changes.
///
/// The group's timers are RocksDB's with `pending` applied. Invariants:
/// `cached` holds the smallest of them (a prefix of their order), and every
/// other one sorts after all of them; `complete` says there is no other;
/// an empty cache is complete (it is refilled as soon as it empties); a
/// timer with a pending delete is not cached.
#[derive(Debug, Default)]
struct GroupCache {
    cached: BTreeSet<Box<[u8]>>,
    complete: bool,
    /// By raw key: looked up by every registration, so hashed; RocksDB
    /// needs no order in a write batch.
    pending: FxHashMap<Box<[u8]>, Pending>,
}

impl GroupCache {
    /// Whether a timer that is not cached cannot exist: the cache holds
    /// every timer, or ones after `raw`.
    #[inline]
    fn rules_out(&self, raw: &[u8]) -> bool {
        self.complete || self.cached.last().is_some_and(|last| raw < &last[..])
    }

    /// Whether `raw` sorts after every cached timer while others are
    /// not cached: it is not cached, and whether it exists is unknown. One
    /// comparison, where a lookup in the cache takes several; the common
    /// case of a timer set for later than what fires next.
    #[inline]
    fn beyond(&self, raw: &[u8]) -> bool {
        !self.complete && self.cached.last().is_some_and(|last| raw > &last[..])
    }

    /// The head's timestamp.
    #[inline]
    fn head(&self) -> Option<i64> {
        self.cached
            .first()
            .and_then(|raw| decode_timer_key(raw))
            .map(|t| t.timestamp)
    }

    /// Records that timer `raw`, which exists, is gone; returns the change
    /// in the number of pending entries.
    fn forget(&mut self, raw: &[u8]) -> isize {
        match self.pending.get_mut(raw) {
            Some(Pending::Put { fresh: true }) => {
                self.pending.remove(raw);
                -1
            }
            Some(p) => {
                *p = Pending::Delete;
                0
            }
            None => {
                self.pending.insert(raw.into(), Pending::Delete);
                1
            }
        }
    }
}

/// One time domain of a queue.
struct DomainCache {
    groups: Vec<GroupCache>,
    heads: GroupHeads,
}

/// One registered timer queue of the RocksDB store: its column family,
/// the cached heads of its key groups and their unwritten changes.
pub(crate) struct RocksTimers {
    cf: StateId,
    /// The range's first key group.
    first: KeyGroup,
    domains: [DomainCache; 2],
    /// Timers cached per group and domain (at least 1).
    cache_size: usize,
    /// Pending changes over all groups that trigger a write.
    write_buffer: usize,
    /// Pending changes over all groups.
    pending: usize,
    /// Where a timer's RocksDB key is built, reused.
    buf: Vec<u8>,
}

fn rocks_error(operator: &str, action: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Backend {
        operator: operator.to_string(),
        reason: format!("RocksDB timers {action}: {e}"),
    }
}

/// Writes `pending` changes of column family `cf` in one batch.
fn write_pending<'a>(
    db: &mut KeyedDb,
    cf: StateId,
    pending: impl IntoIterator<Item = (&'a Box<[u8]>, &'a Pending)>,
    operator: &str,
) -> Result<(), StateError> {
    db.write_values(cf, pending.into_iter().map(|(k, p)| (&k[..], p.value())))
        .map_err(|e| rocks_error(operator, "write", e))
}

/// How a queue caches and buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimerSettings {
    /// Timers kept in memory per key group and domain (at least 1).
    pub(crate) cache_size: usize,
    /// Pending changes that trigger a write (0: write every change).
    pub(crate) write_buffer: usize,
}

impl RocksTimers {
    /// The queue in column family `cf` for the `groups` key groups from
    /// `first`, with its heads read from the database (which holds the
    /// restored timers, if any).
    pub(crate) fn open(
        db: &mut KeyedDb,
        cf: StateId,
        first: KeyGroup,
        groups: usize,
        settings: TimerSettings,
        operator: &str,
    ) -> Result<Self, StateError> {
        let domain = || DomainCache {
            groups: (0..groups).map(|_| GroupCache::default()).collect(),
            heads: GroupHeads::new(groups),
        };
        let mut timers = RocksTimers {
            cf,
            first,
            domains: [domain(), domain()],
            cache_size: settings.cache_size.max(1),
            write_buffer: settings.write_buffer,
            pending: 0,
            buf: Vec::with_capacity(64),
        };
        // One seek tells whether the range holds any timer (a new queue
        // does not); only then is each group read.
        let last = first + (groups - 1) as KeyGroup;
        let (lo, hi) = floe_rocksdb::key_group_range_bounds(first, last);
        let any = db
            .scan_raw(cf, &lo, &hi, 1, |_| {})
            .map_err(|e| rocks_error(operator, "open", e))?
            > 0;
        for d in TimeDomain::ALL {
            for offset in 0..groups {
                if any {
                    timers.refill(db, d, offset, None, operator)?;
                } else {
                    timers.domains[d.index()].groups[offset].complete = true;
                }
            }
        }
        Ok(timers)
    }

    /// Writes every pending change: before the database is snapshotted or
    /// read as a whole.
    pub(crate) fn flush(&mut self, db: &mut KeyedDb, operator: &str) -> Result<(), StateError> {
        if self.pending == 0 {
            return Ok(());
        }
        let all = self
            .domains
            .iter()
            .flat_map(|d| d.groups.iter())
            .flat_map(|g| g.pending.iter());
        write_pending(db, self.cf, all, operator)?;
        for g in self.domains.iter_mut().flat_map(|d| d.groups.iter_mut()) {
            g.pending.clear();
        }
        self.pending = 0;
        Ok(())
    }

    /// Flushes once the pending changes exceed the buffer.
    #[inline]
    fn flush_if_full(&mut self, db: &mut KeyedDb, operator: &str) -> Result<(), StateError> {
        if self.pending > self.write_buffer {
            self.flush(db, operator)?;
        }
        Ok(())
    }

    /// Reads group `offset`'s first timers of `domain` into its empty
    /// cache, from `after` (the timer just removed, which every remaining
    /// one follows) or the group's start; the group's pending changes are
    /// written first, so RocksDB holds exactly its timers.
    fn refill(
        &mut self,
        db: &mut KeyedDb,
        domain: TimeDomain,
        offset: usize,
        after: Option<&[u8]>,
        operator: &str,
    ) -> Result<(), StateError> {
        let kg = self.first + offset as KeyGroup;
        let (lo, hi) = timer_domain_bounds(kg, domain.code());
        let from = after.unwrap_or(&lo);
        let limit = self.cache_size;
        let dc = &mut self.domains[domain.index()];
        let g = &mut dc.groups[offset];
        debug_assert!(g.cached.is_empty());
        if !g.pending.is_empty() {
            write_pending(db, self.cf, &g.pending, operator)?;
            self.pending -= g.pending.len();
            g.pending.clear();
        }
        let mut corrupt = false;
        let n = db
            .scan_raw(self.cf, from, &hi, limit, |raw| {
                if decode_timer_key(raw).is_none() {
                    corrupt = true;
                }
                g.cached.insert(raw.into());
            })
            .map_err(|e| rocks_error(operator, "read", e))?;
        if corrupt {
            g.cached.clear();
            g.complete = true;
            return Err(rocks_error(
                operator,
                "read",
                format!("a key in key group {kg} does not follow the timer layout"),
            ));
        }
        g.complete = n < limit;
        let head = g.head();
        dc.heads.set(offset, head);
        Ok(())
    }

    /// Builds the RocksDB key of a timer of the key `key_bytes` (postcard)
    /// in `buf`.
    fn build_key<N: Serialize>(
        &mut self,
        kg: KeyGroup,
        key_bytes: &[u8],
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
    ) -> Result<(), StateError> {
        self.buf.clear();
        encode_timer_key(&mut self.buf, kg, domain.code(), timestamp, key_bytes);
        codec::encode_into(namespace, &mut self.buf, "a timer's namespace")
    }

    /// Registers a timer of the current key (`key_bytes` in `kg`); a
    /// no-op if it exists. Buffered unless the cache or the buffer shows
    /// it exists; cached if it sorts among the cached ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add<N: Serialize>(
        &mut self,
        db: &mut KeyedDb,
        kg: KeyGroup,
        key_bytes: &[u8],
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
        operator: &str,
    ) -> Result<(), StateError> {
        self.build_key(kg, key_bytes, domain, timestamp, namespace)?;
        let offset = kg.wrapping_sub(self.first) as usize;
        let dc = &mut self.domains[domain.index()];
        let g = &mut dc.groups[offset];
        let beyond = g.beyond(&self.buf);
        if !beyond && g.cached.contains(&self.buf[..]) {
            return Ok(());
        }
        // Not cached, and not beyond the cache: the cache rules it out.
        let ruled_out = !beyond;
        debug_assert_eq!(ruled_out, g.rules_out(&self.buf));
        match g.pending.get_mut(&self.buf[..]) {
            Some(Pending::Put { .. }) => return Ok(()),
            // Deleted since the last write: it may still be in RocksDB.
            Some(p) => *p = Pending::Put { fresh: false },
            None => {
                // Ruled out with no pending change: not in RocksDB either.
                g.pending
                    .insert(self.buf[..].into(), Pending::Put { fresh: ruled_out });
                self.pending += 1;
            }
        }
        if ruled_out {
            g.cached.insert(self.buf[..].into());
            if g.cached.len() > self.cache_size {
                g.cached.pop_last();
                g.complete = false;
            }
            dc.heads.offer(offset, timestamp);
        }
        self.flush_if_full(db, operator)
    }

    /// Deletes a timer of the current key; a no-op if it does not exist
    /// (nothing is buffered when the cache or the buffer shows that).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn delete<N: Serialize>(
        &mut self,
        db: &mut KeyedDb,
        kg: KeyGroup,
        key_bytes: &[u8],
        domain: TimeDomain,
        timestamp: i64,
        namespace: &N,
        operator: &str,
    ) -> Result<(), StateError> {
        self.build_key(kg, key_bytes, domain, timestamp, namespace)?;
        let offset = kg.wrapping_sub(self.first) as usize;
        let g = &mut self.domains[domain.index()].groups[offset];
        let cached = !g.beyond(&self.buf) && g.cached.contains(&self.buf[..]);
        if !cached
            && (g.rules_out(&self.buf) || g.pending.get(&self.buf[..]) == Some(&Pending::Delete))
        {
            return Ok(());
        }
        let delta = g.forget(&self.buf);
        self.pending = self.pending.wrapping_add_signed(delta);
        if cached {
            let raw: Box<[u8]> = self.buf[..].into();
            self.removed(db, domain, offset, raw, operator)?;
        }
        self.flush_if_full(db, operator)
    }

    /// `raw` left group `offset`'s cache (and the group): refills an
    /// emptied cache from after it, and updates the group's head.
    fn removed(
        &mut self,
        db: &mut KeyedDb,
        domain: TimeDomain,
        offset: usize,
        raw: Box<[u8]>,
        operator: &str,
    ) -> Result<(), StateError> {
        let dc = &mut self.domains[domain.index()];
        let g = &mut dc.groups[offset];
        g.cached.remove(&raw);
        if g.cached.is_empty() && !g.complete {
            return self.refill(db, domain, offset, Some(&raw), operator);
        }
        let head = g.head();
        dc.heads.set(offset, head);
        Ok(())
    }

    /// The earliest timestamp in `domain`.
    #[inline]
    pub(crate) fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.domains[domain.index()]
            .heads
            .earliest()
            .map(|(_, ts)| ts)
    }

    /// Removes and returns the earliest timer of `domain` if it is due at
    /// `up_to`.
    pub(crate) fn poll<K: Key, N: Namespace>(
        &mut self,
        db: &mut KeyedDb,
        domain: TimeDomain,
        up_to: i64,
        operator: &str,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        let dc = &mut self.domains[domain.index()];
        let Some((offset, ts)) = dc.heads.earliest() else {
            return Ok(None);
        };
        if ts > up_to {
            return Ok(None);
        }
        let g = &mut dc.groups[offset];
        let Some(raw) = g.cached.first().cloned() else {
            return Ok(None);
        };
        let t = decode_timer_key(&raw)
            .ok_or_else(|| rocks_error(operator, "read", "a cached key lost the timer layout"))?;
        let (key, namespace) = decode_sort_bytes::<K, N>(t.key_and_namespace)?;
        let key_group = t.key_group;
        let delta = g.forget(&raw);
        self.pending = self.pending.wrapping_add_signed(delta);
        self.removed(db, domain, offset, raw, operator)?;
        self.flush_if_full(db, operator)?;
        Ok(Some(Timer {
            timestamp: ts,
            key,
            key_group,
            namespace,
        }))
    }
}

/// Writes one key group's canonical timers (see `heap_timers`) into
/// column family `cf`, in one batch.
pub(crate) fn restore_key_group<K: Key, N: Namespace>(
    db: &mut KeyedDb,
    cf: StateId,
    kg: KeyGroup,
    bytes: &[u8],
    what: &str,
    operator: &str,
) -> Result<(), StateError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    crate::store::heap_timers::for_each_canonical_timer::<K, N>(
        bytes,
        what,
        |domain, ts, key, ns| {
            let mut raw = Vec::with_capacity(32);
            encode_timer_key(&mut raw, kg, domain.code(), ts, &[]);
            codec::encode_into(&(key, ns), &mut raw, what)?;
            keys.push(raw);
            Ok(())
        },
    )?;
    db.write_values(cf, keys.iter().map(|k| (&k[..], Some(&[][..]))))
        .map_err(|e| rocks_error(operator, "restore", e))
}
