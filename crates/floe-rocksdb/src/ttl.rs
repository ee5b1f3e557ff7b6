//! State TTL at the byte level: which stored values have expired, and the
//! compaction filter that drops them without anyone reading them (Flink's
//! `FlinkCompactionFilter`).
//!
//! A TTL state's value bytes start with the time of the value's last
//! write (or access), [`TTL_TIMESTAMP_BYTES`] big-endian bytes of an `i64`
//! in milliseconds, then the user value; `floe_state` gives its `TtlValue`
//! that postcard encoding. Value-like states carry one such value per key,
//! map states one per user key, list states one per element (the list's
//! count header, then the elements one after the other). The timestamp is
//! a fixed-size prefix so that this layer, which knows no user types, can
//! read it; splitting a list into its elements needs the element type, so
//! a list's filter gets the length of one element from a function of the
//! typed layer ([`ElementLen`]).
//!
//! Every column family of a [`crate::KeyedDb`] gets the same compaction
//! filter factory, bound to the column family's state name, which looks the
//! state up in the database's [`TtlRegistry`] when a compaction starts: a
//! state is registered with TTL only when the function registers it, which
//! may be after its column family was opened (a restored database). A
//! state without TTL keeps every entry.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};

use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::list::{LIST_HEADER_BYTES, split_list_value};

/// Bytes of the timestamp that prefixes every TTL value.
pub const TTL_TIMESTAMP_BYTES: usize = 8;

/// The compaction filter factory's name, recorded by RocksDB in the
/// OPTIONS file.
const FACTORY_NAME: &str = "floe.ttl-compaction-filter.v1";

/// The current processing time in milliseconds, as the state backend sees
/// it (an injectable clock, read by compactions on RocksDB's threads).
pub type TtlClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The encoded length of the first list element in `bytes` (timestamp
/// included); `None` when it does not decode.
pub type ElementLen = fn(&[u8]) -> Option<usize>;

/// The timestamp a TTL value starts with; `None` when it is too short.
#[inline]
pub fn ttl_timestamp(value: &[u8]) -> Option<i64> {
    let stamp: [u8; TTL_TIMESTAMP_BYTES] = value.get(..TTL_TIMESTAMP_BYTES)?.try_into().ok()?;
    Some(i64::from_be_bytes(stamp))
}

/// Flink's expiry rule: a value last stamped at `timestamp` is expired
/// from `timestamp + ttl` on (saturating, so a huge TTL never wraps).
#[inline]
pub fn ttl_expired(timestamp: i64, ttl_ms: i64, now: i64) -> bool {
    timestamp.saturating_add(ttl_ms) <= now
}

/// What to do with one stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlDecision {
    /// Nothing in it expired (or it cannot be read: keep rather than lose).
    Keep,
    /// Everything in it expired.
    Remove,
    /// Some list elements expired: the value to keep instead was written
    /// to the caller's buffer.
    Change,
}

/// How one TTL state's values expire.
#[derive(Debug, Clone, Copy)]
pub struct TtlFilter {
    /// The time to live, in milliseconds.
    pub ttl_ms: i64,
    /// For a list state (values in the list format of [`crate::list`]):
    /// the length of one encoded element. `None` for value-like and map
    /// states, whose every stored value is one TTL value.
    pub element_len: Option<ElementLen>,
}

impl TtlFilter {
    /// Whether `value` (as stored in the state's column family) is
    /// expired at `now`; for a list with some expired elements, the
    /// unexpired ones are written to `out` as a list value.
    pub fn decide(&self, value: &[u8], now: i64, out: &mut Vec<u8>) -> TtlDecision {
        match self.element_len {
            None => match ttl_timestamp(value) {
                Some(ts) if ttl_expired(ts, self.ttl_ms, now) => TtlDecision::Remove,
                _ => TtlDecision::Keep,
            },
            Some(element_len) => Self::decide_list(self.ttl_ms, element_len, value, now, out),
        }
    }

    fn decide_list(
        ttl_ms: i64,
        element_len: ElementLen,
        value: &[u8],
        now: i64,
        out: &mut Vec<u8>,
    ) -> TtlDecision {
        let Some((count, elements)) = split_list_value(value) else {
            return TtlDecision::Keep;
        };
        out.clear();
        out.extend_from_slice(&[0; LIST_HEADER_BYTES]);
        let (mut pos, mut kept) = (0usize, 0u32);
        for _ in 0..count {
            let rest = &elements[pos..];
            let Some(len) = element_len(rest).filter(|l| *l <= rest.len()) else {
                return TtlDecision::Keep;
            };
            let element = &rest[..len];
            match ttl_timestamp(element) {
                Some(ts) if ttl_expired(ts, ttl_ms, now) => {}
                Some(_) => {
                    out.extend_from_slice(element);
                    kept += 1;
                }
                None => return TtlDecision::Keep,
            }
            pos += len;
        }
        if pos != elements.len() || kept == count {
            return TtlDecision::Keep;
        }
        if kept == 0 {
            return TtlDecision::Remove;
        }
        out[..LIST_HEADER_BYTES].copy_from_slice(&kept.to_le_bytes());
        TtlDecision::Change
    }
}

/// A TTL state's compaction-filter settings.
#[derive(Clone)]
pub struct TtlCompaction {
    /// How its values expire.
    pub filter: TtlFilter,
    /// The current time.
    pub clock: TtlClock,
    /// Entries a compaction filters between two reads of the clock
    /// (Flink's `queryTimeAfterNumEntries`): reading it is not free, and a
    /// compaction is short next to a TTL.
    pub query_time_after: u32,
}

impl std::fmt::Debug for TtlCompaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCompaction")
            .field("filter", &self.filter)
            .field("query_time_after", &self.query_time_after)
            .finish()
    }
}

/// The TTL states of one database, by state name: what the compaction
/// filters consult when a compaction starts.
#[derive(Debug, Default)]
pub(crate) struct TtlRegistry {
    states: Mutex<HashMap<String, Arc<TtlCompaction>>>,
}

impl TtlRegistry {
    pub(crate) fn set(&self, state: &str, ttl: Option<TtlCompaction>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match ttl {
            Some(t) => states.insert(state.to_string(), Arc::new(t)),
            None => states.remove(state),
        };
    }

    fn get(&self, state: &str) -> Option<Arc<TtlCompaction>> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(state)
            .cloned()
    }
}

/// Makes one compaction filter per compaction of one column family.
pub(crate) struct TtlFilterFactory {
    state: String,
    registry: Arc<TtlRegistry>,
    name: CString,
}

impl TtlFilterFactory {
    pub(crate) fn new(state: &str, registry: Arc<TtlRegistry>) -> Self {
        TtlFilterFactory {
            state: state.to_string(),
            registry,
            name: CString::new(FACTORY_NAME).expect("no NUL in the name"),
        }
    }
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlCompactionFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlCompactionFilter {
        TtlCompactionFilter {
            ttl: self.registry.get(&self.state),
            now: 0,
            until_query: 0,
            buf: Vec::new(),
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// Drops a TTL state's expired entries (and list elements) as a
/// compaction rewrites them. RocksDB passes it stored values, not merge
/// operands: a list appended to since its last compaction is filtered once
/// a compaction has merged its appends into one value.
pub(crate) struct TtlCompactionFilter {
    ttl: Option<Arc<TtlCompaction>>,
    now: i64,
    /// Entries left before the clock is read again.
    until_query: u32,
    /// The changed value of the latest `Change`.
    buf: Vec<u8>,
    name: CString,
}

impl CompactionFilter for TtlCompactionFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> Decision {
        let Some(ttl) = &self.ttl else {
            return Decision::Keep;
        };
        if self.until_query == 0 {
            self.now = (ttl.clock)();
            self.until_query = ttl.query_time_after.max(1);
        }
        self.until_query -= 1;
        match ttl.filter.decide(value, self.now, &mut self.buf) {
            TtlDecision::Keep => Decision::Keep,
            TtlDecision::Remove => Decision::Remove,
            TtlDecision::Change => {
                // SAFETY: RocksDB copies the new value out of this slice
                // before `filter` returns (`new_value->assign` in the C
                // API's wrapper), and `buf` is not touched until the next
                // call; the `'static` the binding asks for is never relied
                // on beyond that copy.
                let changed: &'static [u8] =
                    unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&self.buf[..]) };
                Decision::Change(changed)
            }
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::encode_list_value;

    fn stamped(ts: i64, payload: u8) -> Vec<u8> {
        let mut v = ts.to_be_bytes().to_vec();
        v.push(payload);
        v
    }

    /// Elements of the tests are one timestamp and one byte.
    fn nine(bytes: &[u8]) -> Option<usize> {
        (bytes.len() >= 9).then_some(9)
    }

    #[test]
    fn values_expire_at_timestamp_plus_ttl() {
        let f = TtlFilter {
            ttl_ms: 10,
            element_len: None,
        };
        let mut out = Vec::new();
        assert_eq!(f.decide(&stamped(5, 1), 14, &mut out), TtlDecision::Keep);
        assert_eq!(f.decide(&stamped(5, 1), 15, &mut out), TtlDecision::Remove);
        // Too short to hold a timestamp: kept.
        assert_eq!(f.decide(&[1, 2], 100, &mut out), TtlDecision::Keep);
        assert!(!ttl_expired(i64::MAX - 1, i64::MAX, i64::MAX - 1));
    }

    #[test]
    fn lists_lose_their_expired_elements() {
        let f = TtlFilter {
            ttl_ms: 10,
            element_len: Some(nine),
        };
        let elements = [stamped(1, 7), stamped(20, 8), stamped(2, 9)].concat();
        let mut list = Vec::new();
        encode_list_value(&mut list, 3, &elements);
        let mut out = Vec::new();
        assert_eq!(f.decide(&list, 5, &mut out), TtlDecision::Keep);
        assert_eq!(f.decide(&list, 15, &mut out), TtlDecision::Change);
        let mut expected = Vec::new();
        encode_list_value(&mut expected, 1, &stamped(20, 8));
        assert_eq!(out, expected);
        assert_eq!(f.decide(&list, 30, &mut out), TtlDecision::Remove);
        // A list whose elements do not split is kept whole.
        encode_list_value(&mut list, 3, &elements[..20]);
        assert_eq!(f.decide(&list, 30, &mut out), TtlDecision::Keep);
    }
}
