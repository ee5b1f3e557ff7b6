//! The backend-independent (canonical) encoding of a checkpoint, for
//! savepoints that a heap backend can read and vice versa.
//!
//! For one state and one key group, the heap backend writes the postcard
//! encoding of the sequence of `(key, per-key value)` pairs
//! (`floe_state`'s `FrozenTable::encode_key_group`):
//!
//! ```text
//! varint(n) ++ (key bytes ++ value bytes)*n
//! ```
//!
//! where the per-key value is the postcard encoding of what the heap stores
//! for that key:
//!
//! * value / reducing / aggregating states: the value itself — RocksDB
//!   stores exactly those bytes, copied as-is;
//! * list states: a `Vec<T>`, i.e. `varint(count) ++ elements` — RocksDB
//!   stores `u32 LE count ++ elements`, so only the header is rewritten;
//! * map states: a map, i.e. `varint(m) ++ (user key ++ user value)*m` —
//!   RocksDB stores one entry per user key under the key's prefix, so the
//!   entries of one key (contiguous) are counted and concatenated.
//!
//! * timer queues: per timer the tuple `(domain: u8, timestamp: i64, key,
//!   namespace)`, i.e. `domain ++ zigzag varint(timestamp) ++ key ++
//!   namespace` — RocksDB stores the same parts in the timer's key
//!   ([`crate::key::encode_timer_key`]), so they are rearranged. Both
//!   backends write timers in the order (domain, timestamp, key bytes,
//!   namespace bytes), so a key group's timer bytes are the same whichever
//!   backend wrote them.
//!
//! Nothing is decoded: keys, values and elements stay opaque bytes. Only
//! the order of pairs differs from the heap's (RocksDB yields keys sorted by
//! `(encoded length, bytes)` and map entries by user-key bytes, the heap
//! its hash order); both sides decode into hash maps, so order carries no
//! meaning.

use std::path::{Path, PathBuf};

use floe_core::KeyGroup;
use rocksdb::ColumnFamily;

use crate::checkpoint::{ReadOnlyCheckpoint, open_read_only};
use crate::db::{Db, EntryIter, cf_name};
use crate::error::RocksDbError;
use crate::key::{decode_timer_key, write_varint};
use crate::list::split_list_value;
use crate::resources::RocksDbResources;
use crate::ttl::{TtlDecision, TtlFilter};

/// How a state's per-key value is stored, which decides its canonical
/// encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateLayout {
    /// One value per key stored as-is (value, reducing and aggregating
    /// states).
    ValueLike,
    /// A list per key in the merge format (`u32 LE count ++ elements`).
    List,
    /// One RocksDB entry per map user key.
    Map,
    /// A timer queue: one RocksDB entry per timer, everything in its key
    /// (see [`crate::key`]).
    Timers,
}

/// A checkpoint directory opened read-only to produce canonical bytes, off
/// the task thread (the live database is not touched).
pub struct CheckpointReader {
    cp: ReadOnlyCheckpoint,
    path: PathBuf,
    /// Reused per-key buffer of map entries.
    map_scratch: Vec<u8>,
    /// Reused buffer of one key group's pairs (their count goes first).
    pairs: Vec<u8>,
}

impl std::fmt::Debug for CheckpointReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointReader")
            .field("path", &self.path)
            .field("states", &self.cp.states)
            .finish()
    }
}

impl CheckpointReader {
    /// Opens checkpoint `dir` read-only, charging its block reads to the
    /// shared `resources` (scans bypass the cache, see [`EntryIter`]).
    pub fn open(
        dir: impl Into<PathBuf>,
        resources: &RocksDbResources,
    ) -> Result<Self, RocksDbError> {
        let path = dir.into();
        let cp = open_read_only(&path, resources)?;
        Ok(CheckpointReader {
            cp,
            path,
            map_scratch: Vec::new(),
            pairs: Vec::new(),
        })
    }

    /// The checkpoint directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The states in the checkpoint, in column family order.
    pub fn state_names(&self) -> &[String] {
        &self.cp.states
    }

    /// Appends the canonical bytes of key group `kg` of state `state` to
    /// `out`; returns false, appending nothing, when the key group holds no
    /// entry of that state (the heap backend then omits the state from the
    /// key group).
    pub fn encode_key_group(
        &mut self,
        state: &str,
        layout: StateLayout,
        kg: KeyGroup,
        out: &mut Vec<u8>,
    ) -> Result<bool, RocksDbError> {
        self.encode_key_group_ttl(state, layout, kg, out, None)
    }

    /// [`encode_key_group`](Self::encode_key_group) leaving out what a TTL
    /// state's `ttl` filter finds expired at the given time (Flink's
    /// cleanup in full snapshots): keys whose values expired, map entries,
    /// list elements.
    pub fn encode_key_group_ttl(
        &mut self,
        state: &str,
        layout: StateLayout,
        kg: KeyGroup,
        out: &mut Vec<u8>,
        ttl: Option<(&TtlFilter, i64)>,
    ) -> Result<bool, RocksDbError> {
        let cf = self.cp.db.cf_handle(&cf_name(state)).ok_or_else(|| {
            RocksDbError::invalid(
                "CheckpointReader::encode_key_group",
                format!(
                    "state '{state}' is not in checkpoint {}",
                    self.path.display()
                ),
            )
        })?;
        encode_key_group(
            &self.cp.db,
            cf,
            &self.path,
            state,
            layout,
            kg,
            out,
            &mut self.pairs,
            &mut self.map_scratch,
            ttl,
        )
    }
}

/// Canonical bytes of key group `kg` of `cf` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_key_group(
    db: &Db,
    cf: &ColumnFamily,
    path: &Path,
    state: &str,
    layout: StateLayout,
    kg: KeyGroup,
    out: &mut Vec<u8>,
    pairs: &mut Vec<u8>,
    map_scratch: &mut Vec<u8>,
    ttl: Option<(&TtlFilter, i64)>,
) -> Result<bool, RocksDbError> {
    pairs.clear();
    // What the TTL filter says of a value, and where a trimmed list went.
    let mut trimmed = Vec::new();
    let decide = |value: &[u8], trimmed: &mut Vec<u8>| match ttl {
        Some((filter, now)) => filter.decide(value, now, trimmed),
        None => TtlDecision::Keep,
    };
    let mut n: u64 = 0;
    let mut it = EntryIter::new(db, cf, kg, kg, path, state);
    let corrupt = |reason: String| RocksDbError::corrupt(path, Some(state), reason);
    match layout {
        StateLayout::ValueLike => {
            while let Some(e) = it.next_entry()? {
                if decide(e.value, &mut trimmed) == TtlDecision::Remove {
                    continue;
                }
                pairs.extend_from_slice(e.key);
                pairs.extend_from_slice(e.value);
                n += 1;
            }
        }
        StateLayout::List => {
            while let Some(e) = it.next_entry()? {
                let value = match decide(e.value, &mut trimmed) {
                    TtlDecision::Keep => e.value,
                    TtlDecision::Remove => continue,
                    TtlDecision::Change => &trimmed[..],
                };
                let (count, elements) = split_list_value(value).ok_or_else(|| {
                    corrupt(format!(
                        "list value of {} bytes has no count header",
                        value.len()
                    ))
                })?;
                if count == 0 {
                    continue; // the heap never stores an empty list
                }
                pairs.extend_from_slice(e.key);
                write_varint(pairs, u64::from(count));
                pairs.extend_from_slice(elements);
                n += 1;
            }
        }
        StateLayout::Map => {
            // The entries of one key are contiguous (they share its
            // prefix): gather them, then write key ++ varint(m) ++ entries.
            let mut m: u64 = 0;
            let mut current_prefix: Vec<u8> = Vec::new();
            let mut key_start = 0usize; // offset of the key in `current_prefix`
            while let Some(e) = it.next_entry()? {
                if decide(e.value, &mut trimmed) == TtlDecision::Remove {
                    continue;
                }
                let prefix_len = e.raw_key.len() - e.user_key.len();
                let prefix = &e.raw_key[..prefix_len];
                if m == 0 || prefix != current_prefix.as_slice() {
                    if m > 0 {
                        pairs.extend_from_slice(&current_prefix[key_start..]);
                        write_varint(pairs, m);
                        pairs.extend_from_slice(map_scratch);
                        n += 1;
                    }
                    current_prefix.clear();
                    current_prefix.extend_from_slice(prefix);
                    key_start = prefix_len - e.key.len();
                    map_scratch.clear();
                    m = 0;
                }
                map_scratch.extend_from_slice(e.user_key);
                map_scratch.extend_from_slice(e.value);
                m += 1;
            }
            if m > 0 {
                pairs.extend_from_slice(&current_prefix[key_start..]);
                write_varint(pairs, m);
                pairs.extend_from_slice(map_scratch);
                n += 1;
            }
        }
        StateLayout::Timers => {
            while let Some(e) = it.next_entry()? {
                let t = decode_timer_key(e.raw_key).ok_or_else(|| {
                    corrupt(format!(
                        "a key of {} bytes does not follow the timer layout",
                        e.raw_key.len()
                    ))
                })?;
                pairs.push(t.domain);
                // Postcard's i64: the zigzag varint.
                write_varint(pairs, ((t.timestamp << 1) ^ (t.timestamp >> 63)) as u64);
                pairs.extend_from_slice(t.key_and_namespace);
                n += 1;
            }
        }
    }
    if n == 0 {
        return Ok(false);
    }
    write_varint(out, n);
    out.extend_from_slice(pairs);
    Ok(true)
}
