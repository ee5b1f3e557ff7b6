//! The byte layout of RocksDB keys.
//!
//! Every entry of every state (column family) is stored under
//!
//! ```text
//! key group (u16, big-endian) | key length (LEB128 varint) | key bytes | [map user key bytes]
//! ```
//!
//! * The big-endian key group comes first so that each key group is one
//!   contiguous, ordered byte range: a snapshot or a rescale cuts the
//!   database by key group with a seek or a `delete_range`, never a scan.
//! * The key's length comes before its bytes so that the key is
//!   self-delimiting: the entries of one map state key all share the prefix
//!   `key group | length | key`, and no other key's entries can fall into
//!   that prefix range (without the length, key `"a"` with user key `"b"`
//!   and key `"ab"` would collide).
//! * Map user keys are appended raw: they are the rest of the RocksDB key.
//!
//! The key and user key arrive already encoded with postcard; this layer
//! never interprets them. Within a key group, entries are therefore ordered
//! by (encoded key length, key bytes, user key bytes).
//!
//! # Timers
//!
//! A timer queue (a column family of its own) stores one entry per timer,
//! with an empty value, under
//!
//! ```text
//! key group (u16 BE) | 0x09 | domain (u8) | timestamp ^ 2^63 (u64 BE) | key bytes | namespace bytes
//! ```
//!
//! which is the layout above with the 9 bytes `domain | timestamp` as the
//! "key" and `key | namespace` as the "user key", so key-group scans,
//! rescaling (range deletes, ingestion) and checkpoints treat a timer
//! queue like any state. The timestamp's sign bit is flipped so that the
//! big-endian bytes sort like the signed number: within a key group and a
//! time domain, timers are ordered by (timestamp, key bytes, namespace
//! bytes), the order in which they fire ([`encode_timer_key`]).

use std::fmt;

use floe_core::KeyGroup;

use crate::error::RocksDbError;

/// The largest key group this layer accepts in a [`KeyGroupRange`]: Floe's
/// max parallelism is at most 32768, so key groups are `0..=32767`. Keeping
/// one spare bit means the exclusive end of any range (`end + 1`) still fits
/// in the two-byte big-endian prefix.
pub const MAX_KEY_GROUP: KeyGroup = 32767;

/// Number of bytes of the key-group prefix.
pub const KEY_GROUP_BYTES: usize = 2;

/// A contiguous, inclusive range of key groups owned by one subtask.
///
/// This mirrors `floe_state::KeyGroupRange`, which cannot be used here
/// because `floe-state` depends on this crate; converting is a field copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    /// First key group (inclusive).
    pub start: KeyGroup,
    /// Last key group (inclusive).
    pub end: KeyGroup,
}

impl KeyGroupRange {
    /// The range `[start, end]`; rejects `start > end` and key groups above
    /// [`MAX_KEY_GROUP`] instead of panicking, since ranges come from
    /// checkpoint metadata that may be corrupt.
    pub fn new(start: KeyGroup, end: KeyGroup) -> Result<Self, RocksDbError> {
        if start > end || end > MAX_KEY_GROUP {
            return Err(RocksDbError::invalid(
                "KeyGroupRange::new",
                format!("key group range {start}..={end} is empty or exceeds {MAX_KEY_GROUP}"),
            ));
        }
        Ok(KeyGroupRange { start, end })
    }

    /// Checks a range built by struct literal (fields are public).
    pub(crate) fn validate(self, operation: &'static str) -> Result<Self, RocksDbError> {
        KeyGroupRange::new(self.start, self.end).map_err(|_| {
            RocksDbError::invalid(
                operation,
                format!("invalid key group range {}..={}", self.start, self.end),
            )
        })
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }

    /// Always false: a range holds at least one key group.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when `kg` is in the range.
    pub fn contains(&self, kg: KeyGroup) -> bool {
        self.start <= kg && kg <= self.end
    }

    /// The key groups both ranges hold, if any (used to pick a restore base
    /// and to clip copied ranges).
    pub fn intersect(&self, other: &KeyGroupRange) -> Option<KeyGroupRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(KeyGroupRange { start, end })
    }

    /// Every key group in the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> {
        self.start..=self.end
    }

    /// The `[start, end)` RocksDB key bounds holding exactly this range's
    /// entries (see [`key_group_range_bounds`]).
    pub fn bounds(&self) -> ([u8; KEY_GROUP_BYTES], [u8; KEY_GROUP_BYTES]) {
        key_group_range_bounds(self.start, self.end)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// The `[start, end)` byte bounds of key groups `first..=last`: every RocksDB
/// key of those key groups (and no other) sorts in `start <= key < end`.
///
/// `last` must be below `u16::MAX` so that `last + 1` fits; it saturates
/// otherwise (ranges built by [`KeyGroupRange::new`] are at most
/// [`MAX_KEY_GROUP`], so this never happens for them).
#[inline]
pub fn key_group_range_bounds(
    first: KeyGroup,
    last: KeyGroup,
) -> ([u8; KEY_GROUP_BYTES], [u8; KEY_GROUP_BYTES]) {
    (first.to_be_bytes(), last.saturating_add(1).to_be_bytes())
}

/// Appends the LEB128 encoding of `v` (7 bits per byte, low first, high bit
/// set on all but the last byte): the same varint postcard uses.
#[inline]
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint from the front of `bytes`; returns the value and the
/// number of bytes it took, or `None` if it is truncated or longer than 10
/// bytes.
#[inline]
pub fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Appends the full RocksDB key of `(kg, key, user_key)` to `out`. For value
/// and list states `user_key` is empty. [`KeyPrefix`] does the same without
/// re-encoding the prefix for every map entry.
pub fn encode_key(out: &mut Vec<u8>, kg: KeyGroup, key: &[u8], user_key: &[u8]) {
    out.extend_from_slice(&kg.to_be_bytes());
    write_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(user_key);
}

/// A RocksDB key split into its parts (borrowed from the raw key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    /// The key group.
    pub key_group: KeyGroup,
    /// The serialized (postcard) key.
    pub key: &'a [u8],
    /// The map user key bytes; empty for value and list states.
    pub user_key: &'a [u8],
    /// Length of `key group | length | key`, i.e. of the [`KeyPrefix`] this
    /// entry belongs to.
    pub prefix_len: usize,
}

/// Splits a raw RocksDB key; `None` when it does not follow the layout
/// (shorter than its key group, truncated varint, length past the end).
pub fn decode_key(raw: &[u8]) -> Option<DecodedKey<'_>> {
    let kg_bytes: [u8; KEY_GROUP_BYTES] = raw.get(..KEY_GROUP_BYTES)?.try_into().ok()?;
    let key_group = KeyGroup::from_be_bytes(kg_bytes);
    let (len, n) = read_varint(&raw[KEY_GROUP_BYTES..])?;
    let key_start = KEY_GROUP_BYTES + n;
    let key_end = key_start.checked_add(usize::try_from(len).ok()?)?;
    let key = raw.get(key_start..key_end)?;
    Some(DecodedKey {
        key_group,
        key,
        user_key: &raw[key_end..],
        prefix_len: key_end,
    })
}

/// The length byte of a timer's key: its `domain | timestamp` is the
/// 9-byte "key" of the general layout.
pub const TIMER_HEAD_BYTES: u8 = 9;

/// Bytes before a timer's key bytes: key group, length, domain, timestamp.
pub const TIMER_PREFIX_BYTES: usize = KEY_GROUP_BYTES + 1 + TIMER_HEAD_BYTES as usize;

/// Appends the RocksDB key of a timer (see the module docs):
/// `key_and_namespace` is the postcard bytes of the timer's key followed by
/// those of its namespace.
#[inline]
pub fn encode_timer_key(
    out: &mut Vec<u8>,
    kg: KeyGroup,
    domain: u8,
    timestamp: i64,
    key_and_namespace: &[u8],
) {
    out.extend_from_slice(&timer_domain_prefix(kg, domain));
    out.extend_from_slice(&timer_timestamp_bytes(timestamp));
    out.extend_from_slice(key_and_namespace);
}

/// The big-endian bytes of a timestamp with its sign bit flipped: they
/// sort like the signed number.
#[inline]
pub fn timer_timestamp_bytes(timestamp: i64) -> [u8; 8] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// The first bytes every timer of time domain `domain` in key group `kg`
/// starts with; [`timer_domain_bounds`] gives the whole range.
#[inline]
pub fn timer_domain_prefix(kg: KeyGroup, domain: u8) -> [u8; 4] {
    let [a, b] = kg.to_be_bytes();
    [a, b, TIMER_HEAD_BYTES, domain]
}

/// The `[start, end)` byte bounds of the timers of time domain `domain` in
/// key group `kg` (`domain` below 255).
#[inline]
pub fn timer_domain_bounds(kg: KeyGroup, domain: u8) -> ([u8; 4], [u8; 4]) {
    (
        timer_domain_prefix(kg, domain),
        timer_domain_prefix(kg, domain.saturating_add(1)),
    )
}

/// A timer's RocksDB key split into its parts (borrowed from the raw key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedTimer<'a> {
    /// The key group.
    pub key_group: KeyGroup,
    /// The time domain's code.
    pub domain: u8,
    /// When it fires.
    pub timestamp: i64,
    /// The postcard bytes of the key, then of the namespace.
    pub key_and_namespace: &'a [u8],
}

/// Splits a timer's raw RocksDB key; `None` when it does not follow the
/// timer layout.
#[inline]
pub fn decode_timer_key(raw: &[u8]) -> Option<DecodedTimer<'_>> {
    if raw.len() < TIMER_PREFIX_BYTES || raw[KEY_GROUP_BYTES] != TIMER_HEAD_BYTES {
        return None;
    }
    let key_group = KeyGroup::from_be_bytes([raw[0], raw[1]]);
    let ts: [u8; 8] = raw[KEY_GROUP_BYTES + 2..TIMER_PREFIX_BYTES]
        .try_into()
        .ok()?;
    Some(DecodedTimer {
        key_group,
        domain: raw[KEY_GROUP_BYTES + 1],
        timestamp: (u64::from_be_bytes(ts) ^ (1 << 63)) as i64,
        key_and_namespace: &raw[TIMER_PREFIX_BYTES..],
    })
}

/// The smallest byte string greater than every string starting with
/// `prefix`, written into `out` (cleared first); false when there is none
/// (the prefix is all `0xFF`), meaning "no upper bound".
pub fn prefix_successor(prefix: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(prefix);
    while let Some(last) = out.pop() {
        if last != 0xFF {
            out.push(last + 1);
            return true;
        }
    }
    false
}

/// The current record's key prefix, `key group | key length | key`, kept in
/// one buffer reused across records: [`KeyPrefix::set`] allocates only when a
/// key is longer than any seen before.
///
/// Value and list states use the prefix itself as the RocksDB key; map
/// states append a user key to it ([`KeyPrefix::with_user_key`] does so in a
/// second reused buffer).
#[derive(Debug, Clone, Default)]
pub struct KeyPrefix {
    prefix: Vec<u8>,
    key_group: KeyGroup,
    /// `prefix ++ user key`, rebuilt by `with_user_key`.
    full: Vec<u8>,
}

impl KeyPrefix {
    /// An empty prefix (key group 0, empty key) with room for small keys.
    pub fn new() -> Self {
        let mut p = KeyPrefix {
            prefix: Vec::with_capacity(64),
            key_group: 0,
            full: Vec::with_capacity(96),
        };
        p.set(0, &[]);
        p
    }

    /// Makes this the prefix of `key` (postcard bytes) in key group `kg`.
    /// Key groups above [`MAX_KEY_GROUP`] are stored as given but fall
    /// outside every [`KeyGroupRange`], so snapshots would not see them; the
    /// caller (the keyed backend) checks the key group against its range.
    #[inline]
    pub fn set(&mut self, kg: KeyGroup, key: &[u8]) {
        self.prefix.clear();
        encode_key(&mut self.prefix, kg, key, &[]);
        self.key_group = kg;
    }

    /// The key group of the current key.
    #[inline]
    pub fn key_group(&self) -> KeyGroup {
        self.key_group
    }

    /// The serialized key (without key group and length).
    #[inline]
    pub fn key(&self) -> &[u8] {
        // The prefix was written by `set`, so it always decodes.
        decode_key(&self.prefix).map_or(&[][..], |d| d.key)
    }

    /// The prefix bytes: the RocksDB key of a value or list state entry.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.prefix
    }

    /// The RocksDB key of map entry `user_key` of the current key, built in
    /// a reused buffer.
    #[inline]
    pub fn with_user_key(&mut self, user_key: &[u8]) -> &[u8] {
        self.full.clear();
        self.full.extend_from_slice(&self.prefix);
        self.full.extend_from_slice(user_key);
        &self.full
    }
}

impl AsRef<[u8]> for KeyPrefix {
    fn as_ref(&self) -> &[u8] {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_bytes_are_pinned() {
        // Key group 0x0102, a 3-byte key.
        let mut p = KeyPrefix::new();
        p.set(0x0102, b"abc");
        assert_eq!(p.as_bytes(), &[0x01, 0x02, 0x03, b'a', b'b', b'c']);
        assert_eq!(p.key_group(), 0x0102);
        assert_eq!(p.key(), b"abc");

        // A map entry appends the user key raw.
        assert_eq!(
            p.with_user_key(&[0x07, 0x08]),
            &[0x01, 0x02, 0x03, b'a', b'b', b'c', 0x07, 0x08]
        );

        // Postcard of the String "hi" is [2, 'h', 'i']; its length (3) is
        // prepended again by the layout. Key group 127.
        let key = postcard::to_allocvec("hi").unwrap();
        p.set(127, &key);
        assert_eq!(p.as_bytes(), &[0x00, 0x7F, 0x03, 0x02, b'h', b'i']);

        // A 200-byte key: the length takes two varint bytes (200 = 0xC8 →
        // 0xC8 0x01). Largest key group.
        let long = vec![0xAAu8; 200];
        p.set(MAX_KEY_GROUP, &long);
        assert_eq!(&p.as_bytes()[..4], &[0x7F, 0xFF, 0xC8, 0x01]);
        assert_eq!(p.as_bytes().len(), 4 + 200);

        // Empty key (e.g. the unit type) in key group 0.
        p.set(0, &[]);
        assert_eq!(p.as_bytes(), &[0x00, 0x00, 0x00]);

        let mut out = Vec::new();
        encode_key(&mut out, 5, &[9], &[1, 2]);
        assert_eq!(out, vec![0x00, 0x05, 0x01, 0x09, 0x01, 0x02]);
    }

    #[test]
    fn varint_round_trips_like_postcard() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            write_varint(&mut ours, v);
            assert_eq!(ours, postcard::to_allocvec(&v).unwrap(), "varint of {v}");
            assert_eq!(read_varint(&ours), Some((v, ours.len())));
        }
        assert_eq!(read_varint(&[0x80]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn decode_key_splits_and_rejects_garbage() {
        let mut raw = Vec::new();
        encode_key(&mut raw, 42, b"key", b"uk");
        let d = decode_key(&raw).unwrap();
        assert_eq!(d.key_group, 42);
        assert_eq!(d.key, b"key");
        assert_eq!(d.user_key, b"uk");
        assert_eq!(d.prefix_len, 6);
        assert_eq!(decode_key(&[0x00]), None);
        assert_eq!(decode_key(&[0x00, 0x01, 0x05, b'a']), None);
        assert_eq!(decode_key(&[0x00, 0x01, 0xFF]), None);
    }

    #[test]
    fn key_group_bounds_enclose_exactly_their_groups() {
        let range = KeyGroupRange::new(3, 5).unwrap();
        let (lo, hi) = range.bounds();
        assert_eq!(lo, [0x00, 0x03]);
        assert_eq!(hi, [0x00, 0x06]);
        // Crossing a byte boundary: 255..=256.
        let (lo, hi) = key_group_range_bounds(255, 256);
        assert_eq!((lo, hi), ([0x00, 0xFF], [0x01, 0x01]));
        // The last allowed key group still has a two-byte exclusive end.
        let (_, hi) = key_group_range_bounds(MAX_KEY_GROUP, MAX_KEY_GROUP);
        assert_eq!(hi, [0x80, 0x00]);

        let mut k = Vec::new();
        for kg in 0..600u16 {
            for key in [&[][..], &[0u8][..], &[0xFF; 300][..]] {
                for uk in [&[][..], &[0xFFu8, 0xFF, 0xFF][..]] {
                    k.clear();
                    encode_key(&mut k, kg, key, uk);
                    for (first, last) in [(3u16, 5u16), (255, 256), (0, 0), (599, 599)] {
                        let (lo, hi) = key_group_range_bounds(first, last);
                        let inside = lo.as_slice() <= k.as_slice() && k.as_slice() < hi.as_slice();
                        assert_eq!(
                            inside,
                            (first..=last).contains(&kg),
                            "kg {kg} in {first}..={last}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn prefixes_of_different_keys_never_nest() {
        // Key "a" + user key "b" vs key "ab": distinct and neither is a
        // prefix of the other's prefix range.
        let mut a = KeyPrefix::new();
        a.set(1, b"a");
        let a_entry = a.with_user_key(b"b").to_vec();
        let mut ab = KeyPrefix::new();
        ab.set(1, b"ab");
        assert!(!ab.as_bytes().starts_with(a.as_bytes()));
        assert!(!a_entry.starts_with(ab.as_bytes()));
        let mut succ = Vec::new();
        assert!(prefix_successor(a.as_bytes(), &mut succ));
        assert!(a_entry.as_slice() < succ.as_slice());
        assert!(!(a.as_bytes() <= ab.as_bytes() && ab.as_bytes() < succ.as_slice()));
    }

    #[test]
    fn timer_keys_are_pinned_and_sort_as_timers_fire() {
        let mut raw = Vec::new();
        encode_timer_key(&mut raw, 0x0102, 1, -1, &[0x2a]);
        assert_eq!(
            raw,
            [
                0x01, 0x02, // key group
                0x09, // length of domain | timestamp
                0x01, // processing time
                0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // -1, sign flipped
                0x2a, // key ++ namespace
            ]
        );
        // The general layout reads it: the 9 bytes are the "key".
        let d = decode_key(&raw).unwrap();
        assert_eq!(
            (d.key_group, d.key.len(), d.user_key),
            (0x0102, 9, &[0x2a][..])
        );
        let t = decode_timer_key(&raw).unwrap();
        assert_eq!((t.key_group, t.domain, t.timestamp), (0x0102, 1, -1));
        assert_eq!(t.key_and_namespace, &[0x2a]);
        assert_eq!(decode_timer_key(&raw[..11]), None);
        assert_eq!(decode_timer_key(&[0, 1, 3, b'a', b'b', b'c']), None);

        // Byte order is (key group, domain, timestamp, key ++ namespace).
        let times = [i64::MIN, -5, -1, 0, 1, 255, 256, i64::MAX];
        let mut keys = Vec::new();
        for kg in [0u16, 1, 300] {
            for domain in [0u8, 1] {
                for ts in times {
                    for rest in [&[][..], &[0][..], &[0, 0][..], &[1][..]] {
                        let mut k = Vec::new();
                        encode_timer_key(&mut k, kg, domain, ts, rest);
                        keys.push(((kg, domain, ts, rest.to_vec()), k));
                    }
                }
            }
        }
        let mut by_bytes = keys.clone();
        by_bytes.sort_by(|a, b| a.1.cmp(&b.1));
        keys.sort();
        assert_eq!(by_bytes, keys);
        for (_, k) in &keys {
            let t = decode_timer_key(k).unwrap();
            let (lo, hi) = timer_domain_bounds(t.key_group, t.domain);
            assert!(lo.as_slice() <= k.as_slice() && k.as_slice() < hi.as_slice());
            let (glo, ghi) = key_group_range_bounds(t.key_group, t.key_group);
            assert!(glo.as_slice() <= k.as_slice() && k.as_slice() < ghi.as_slice());
        }
    }

    #[test]
    fn prefix_successor_carries() {
        let mut out = Vec::new();
        assert!(prefix_successor(&[1, 2, 3], &mut out));
        assert_eq!(out, vec![1, 2, 4]);
        assert!(prefix_successor(&[1, 0xFF, 0xFF], &mut out));
        assert_eq!(out, vec![2]);
        assert!(!prefix_successor(&[0xFF, 0xFF], &mut out));
    }

    #[test]
    fn key_group_range_validation() {
        assert!(KeyGroupRange::new(5, 4).is_err());
        assert!(KeyGroupRange::new(0, MAX_KEY_GROUP + 1).is_err());
        let r = KeyGroupRange::new(0, 63).unwrap();
        assert_eq!(r.len(), 64);
        assert_eq!(
            r.intersect(&KeyGroupRange::new(32, 95).unwrap()),
            Some(KeyGroupRange { start: 32, end: 63 })
        );
        assert_eq!(r.intersect(&KeyGroupRange::new(64, 95).unwrap()), None);
    }
}
