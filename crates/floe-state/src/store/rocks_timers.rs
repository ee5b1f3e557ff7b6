//! The RocksDB store's timer queues (Flink's
//! `RocksDBCachingPriorityQueueSet` per key group under a
//! `KeyGroupPartitionedPriorityQueue`).
//!
//! A queue is a column family of its own whose keys are the timers
//! (`floe_rocksdb::key::encode_timer_key`: key group, time domain,
//! timestamp, key bytes, namespace bytes; no value), so RocksDB keeps each
//! key group's timers of each domain in firing order. In front of it, per
//! key group and domain, a [`GroupCache`] holds the first few timers
//! (up to [`CACHED_PER_GROUP`]) in memory: the head of every group is
//! always known without a read, so the earliest timer overall, and whether
//! one is due, come from memory ([`GroupHeads`]); RocksDB is read only when
//! a group's cached timers are used up (a seek and a short scan).
//!
//! Every change is written through to RocksDB at once (no WAL; checkpoints
//! flush), so a snapshot of the database holds every timer.

use std::collections::BTreeSet;

use floe_core::KeyGroup;
use floe_rocksdb::key::{decode_timer_key, encode_timer_key, timer_domain_bounds};
use floe_rocksdb::{KeyedDb, StateId};
use serde::Serialize;

use crate::codec;
use crate::error::StateError;
use crate::store::heap_timers::decode_sort_bytes;
use crate::store::timer_heads::GroupHeads;
use crate::timer::{Namespace, TimeDomain, Timer};
use crate::types::Key;

/// Timers of one key group and domain kept in memory (Flink's default).
pub(crate) const CACHED_PER_GROUP: usize = 128;

/// The first timers of one key group in one domain.
///
/// Invariants: `cached` holds the smallest RocksDB keys of the group (a
/// prefix of its order), and every timer only in RocksDB sorts after all
/// of them; `complete` says RocksDB holds no other; an empty cache is
/// complete (it is refilled as soon as it empties).
#[derive(Debug, Default)]
struct GroupCache {
    cached: BTreeSet<Box<[u8]>>,
    complete: bool,
}

impl GroupCache {
    /// Whether a timer that is not cached cannot exist: the cache holds
    /// every timer, or ones after `raw`.
    #[inline]
    fn rules_out(&self, raw: &[u8]) -> bool {
        self.complete || self.cached.last().is_some_and(|last| raw < &last[..])
    }

    /// The head's timestamp.
    #[inline]
    fn head(&self) -> Option<i64> {
        self.cached
            .first()
            .and_then(|raw| decode_timer_key(raw))
            .map(|t| t.timestamp)
    }
}

/// One time domain of a queue.
struct DomainCache {
    groups: Vec<GroupCache>,
    heads: GroupHeads,
}

/// One registered timer queue of the RocksDB store: its column family and
/// the cached heads of its key groups.
pub(crate) struct RocksTimers {
    cf: StateId,
    /// The range's first key group.
    first: KeyGroup,
    domains: [DomainCache; 2],
    /// Where a timer's RocksDB key is built, reused.
    buf: Vec<u8>,
}

fn rocks_error(operator: &str, action: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Backend {
        operator: operator.to_string(),
        reason: format!("RocksDB timers {action}: {e}"),
    }
}

impl RocksTimers {
    /// The queue in column family `cf` for the `groups` key groups from
    /// `first`, with its heads read from the database (which holds the
    /// restored timers, if any).
    pub(crate) fn open(
        db: &KeyedDb,
        cf: StateId,
        first: KeyGroup,
        groups: usize,
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

    /// Reads group `offset`'s first timers of `domain` into its empty
    /// cache, from `after` (the timer just removed, which every remaining
    /// one follows) or the group's start.
    fn refill(
        &mut self,
        db: &KeyedDb,
        domain: TimeDomain,
        offset: usize,
        after: Option<&[u8]>,
        operator: &str,
    ) -> Result<(), StateError> {
        let kg = self.first + offset as KeyGroup;
        let (lo, hi) = timer_domain_bounds(kg, domain.code());
        let from = after.unwrap_or(&lo);
        let dc = &mut self.domains[domain.index()];
        let g = &mut dc.groups[offset];
        debug_assert!(g.cached.is_empty());
        let mut corrupt = false;
        let n = db
            .scan_raw(self.cf, from, &hi, CACHED_PER_GROUP, |raw| {
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
        g.complete = n < CACHED_PER_GROUP;
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
    /// no-op if it exists. Written to RocksDB unless the cache shows it
    /// exists; cached if it sorts among the cached ones.
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
        if g.cached.contains(&self.buf[..]) {
            return Ok(());
        }
        db.put_raw(self.cf, &self.buf, &[])
            .map_err(|e| rocks_error(operator, "put", e))?;
        if g.rules_out(&self.buf) {
            g.cached.insert(self.buf[..].into());
            if g.cached.len() > CACHED_PER_GROUP {
                g.cached.pop_last();
                g.complete = false;
            }
            dc.heads.offer(offset, timestamp);
        }
        Ok(())
    }

    /// Deletes a timer of the current key; a no-op if it does not exist
    /// (RocksDB is not touched when the cache shows that).
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
        let cached = g.cached.contains(&self.buf[..]);
        if !cached && g.rules_out(&self.buf) {
            return Ok(());
        }
        db.delete_raw(self.cf, &self.buf)
            .map_err(|e| rocks_error(operator, "delete", e))?;
        if cached {
            let raw: Box<[u8]> = self.buf[..].into();
            self.removed(db, domain, offset, raw, operator)?;
        }
        Ok(())
    }

    /// `raw` left group `offset`'s cache (and RocksDB): refills an emptied
    /// cache from after it, and updates the group's head.
    fn removed(
        &mut self,
        db: &KeyedDb,
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
        let dc = &self.domains[domain.index()];
        let Some((offset, ts)) = dc.heads.earliest() else {
            return Ok(None);
        };
        if ts > up_to {
            return Ok(None);
        }
        let Some(raw) = dc.groups[offset].cached.first().cloned() else {
            return Ok(None);
        };
        let t = decode_timer_key(&raw)
            .ok_or_else(|| rocks_error(operator, "read", "a cached key lost the timer layout"))?;
        let (key, namespace) = decode_sort_bytes::<K, N>(t.key_and_namespace)?;
        let key_group = t.key_group;
        db.delete_raw(self.cf, &raw)
            .map_err(|e| rocks_error(operator, "delete", e))?;
        self.removed(db, domain, offset, raw, operator)?;
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
