//! Key groups, with Flink's formulas (`KeyGroupRangeAssignment`).
//!
//! A key hashes to one of `max_parallelism` key groups; key groups are dealt to
//! the `parallelism` subtasks of an operator in contiguous, inclusive ranges.
//! Because the number of key groups never changes for a job, rescaling moves
//! whole key groups between subtasks and never rehashes a key.
//!
//! The hash is MurmurHash3 (x86, 32 bit, seed 0) over the key's canonical
//! postcard bytes: identical across processes, runs, platforms and Floe
//! releases. Rust's randomly seeded default hasher must never be used here.

use std::fmt;

use floe_core::KeyGroup;
use serde::Serialize;

use crate::key_bytes::with_key_bytes;

/// Smallest default max parallelism (Flink's `DEFAULT_LOWER_BOUND_MAX_PARALLELISM`).
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;
/// Largest max parallelism (Flink's `UPPER_BOUND_MAX_PARALLELISM`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 32768;

/// A contiguous, inclusive range of key groups owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    /// First key group (inclusive).
    pub start: KeyGroup,
    /// Last key group (inclusive).
    pub end: KeyGroup,
}

impl KeyGroupRange {
    /// The range `[start, end]`; `start <= end`.
    pub fn new(start: KeyGroup, end: KeyGroup) -> Self {
        assert!(start <= end, "key group range {start}..={end} is empty");
        KeyGroupRange { start, end }
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize + 1
    }

    /// Always false: a range holds at least one key group.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the two ranges share a key group (a snapshot written by a
    /// subtask of `other`'s range holds state this one restores).
    pub fn overlaps(&self, other: &KeyGroupRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// True when `kg` is in the range.
    pub fn contains(&self, kg: KeyGroup) -> bool {
        self.start <= kg && kg <= self.end
    }

    /// Every key group in the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> {
        self.start..=self.end
    }

    /// The range subtask `operator_index` of `parallelism` owns
    /// (Flink's `computeKeyGroupRangeForOperatorIndex`).
    pub fn for_operator_index(max_parallelism: u32, parallelism: u32, operator_index: u32) -> Self {
        check_parallelism(max_parallelism, parallelism);
        assert!(operator_index < parallelism);
        let (mp, p, i) = (
            max_parallelism as u64,
            parallelism as u64,
            operator_index as u64,
        );
        let start = (i * mp).div_ceil(p);
        let end = ((i + 1) * mp - 1) / p;
        KeyGroupRange::new(start as KeyGroup, end as KeyGroup)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

fn check_parallelism(max_parallelism: u32, parallelism: u32) {
    assert!(
        (1..=UPPER_BOUND_MAX_PARALLELISM).contains(&max_parallelism),
        "max parallelism {max_parallelism} out of 1..=32768"
    );
    assert!(
        (1..=max_parallelism).contains(&parallelism),
        "parallelism {parallelism} out of 1..={max_parallelism}"
    );
}

/// Flink's default max parallelism: 1.5 × parallelism rounded up to a power of
/// two, clamped to `[128, 32768]`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = parallelism as u64;
    let target = (p + p / 2).max(1).next_power_of_two();
    target.clamp(
        DEFAULT_LOWER_BOUND_MAX_PARALLELISM as u64,
        UPPER_BOUND_MAX_PARALLELISM as u64,
    ) as u32
}

/// The stable 32-bit hash of a key: MurmurHash3_x86_32(postcard(key), 0).
#[inline]
pub fn key_hash<K: Serialize + ?Sized>(key: &K) -> u32 {
    with_key_bytes(key, |bytes| mur3::murmurhash3_x86_32(bytes, 0))
}

/// The key group of a key hash.
#[inline]
pub fn key_group_for_hash(hash: u32, max_parallelism: u32) -> KeyGroup {
    (hash % max_parallelism) as KeyGroup
}

/// The key group of a key given as its postcard bytes (a query carries
/// the key encoded; the result equals [`key_group_for_key`] of the key).
#[inline]
pub fn key_group_for_key_bytes(bytes: &[u8], max_parallelism: u32) -> KeyGroup {
    key_group_for_hash(mur3::murmurhash3_x86_32(bytes, 0), max_parallelism)
}

/// The key group of a key (Flink's `assignToKeyGroup`).
#[inline]
pub fn key_group_for_key<K: Serialize + ?Sized>(key: &K, max_parallelism: u32) -> KeyGroup {
    key_group_for_hash(key_hash(key), max_parallelism)
}

/// The subtask that owns a key group (Flink's `computeOperatorIndexForKeyGroup`).
#[inline]
pub fn operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: KeyGroup,
) -> u32 {
    (key_group as u64 * parallelism as u64 / max_parallelism as u64) as u32
}

/// Routes keys to key groups and subtasks with no division on the hot path
/// when max parallelism is a power of two (the default) and a table lookup for
/// the subtask.
#[derive(Debug, Clone)]
pub struct KeyGroupRouter {
    max_parallelism: u32,
    /// `max_parallelism - 1` when it is a power of two.
    mask: Option<u32>,
    subtask_of: Box<[u16]>,
}

impl KeyGroupRouter {
    /// A router for an operator with `parallelism` subtasks.
    pub fn new(max_parallelism: u32, parallelism: u32) -> Self {
        check_parallelism(max_parallelism, parallelism);
        let subtask_of = (0..max_parallelism)
            .map(|kg| {
                operator_index_for_key_group(max_parallelism, parallelism, kg as KeyGroup) as u16
            })
            .collect();
        KeyGroupRouter {
            max_parallelism,
            mask: max_parallelism
                .is_power_of_two()
                .then_some(max_parallelism - 1),
            subtask_of,
        }
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Key group and owning subtask of a key.
    #[inline]
    pub fn route<K: Serialize + ?Sized>(&self, key: &K) -> (KeyGroup, usize) {
        let h = key_hash(key);
        let kg = match self.mask {
            Some(m) => h & m,
            None => h % self.max_parallelism,
        } as usize;
        (kg as KeyGroup, self.subtask_of[kg] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_max_parallelism_matches_flink() {
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(2), 128);
        assert_eq!(default_max_parallelism(85), 128);
        assert_eq!(default_max_parallelism(86), 256);
        assert_eq!(default_max_parallelism(200), 512);
        assert_eq!(default_max_parallelism(20000), 32768);
        assert_eq!(default_max_parallelism(32768), 32768);
    }

    #[test]
    fn ranges_match_flink_examples() {
        assert_eq!(
            KeyGroupRange::for_operator_index(128, 2, 0),
            KeyGroupRange::new(0, 63)
        );
        assert_eq!(
            KeyGroupRange::for_operator_index(128, 2, 1),
            KeyGroupRange::new(64, 127)
        );
        assert_eq!(
            KeyGroupRange::for_operator_index(10, 3, 0),
            KeyGroupRange::new(0, 3)
        );
        assert_eq!(
            KeyGroupRange::for_operator_index(10, 3, 1),
            KeyGroupRange::new(4, 6)
        );
        assert_eq!(
            KeyGroupRange::for_operator_index(10, 3, 2),
            KeyGroupRange::new(7, 9)
        );
    }

    /// Pinned: a change to the hash, the encoding or the formula breaks every
    /// savepoint ever written, so these values must never change.
    #[test]
    fn pinned_hashes_and_key_groups() {
        // Expected values computed independently: Python's `mmh3.hash(bytes,
        // 0, signed=False)` over hand-encoded postcard bytes (LEB128 varints;
        // strings as varint length + UTF-8).
        let u64_keys: [(u64, u32, u16); 6] = [
            (0, 0x514e28b7, 55),
            (1, 0xe45ad1ab, 43),
            (42, 0x14336e1c, 28),
            (127, 0x5589d599, 25),
            (1 << 40, 0x01ec5805, 5),
            (u64::MAX, 0x3ce168f2, 114),
        ];
        for (k, h, kg) in u64_keys {
            assert_eq!(key_hash(&k), h, "hash of {k}");
            assert_eq!(key_group_for_key(&k, 128), kg, "key group of {k}");
        }
        let str_keys: [(&str, u32, u16); 4] = [
            ("", 0x514e28b7, 55),
            ("flink", 0x44998c76, 118),
            ("floe", 0x06918994, 20),
            ("hello world", 0x2ebaac4b, 75),
        ];
        for (k, h, kg) in str_keys {
            assert_eq!(key_hash(k), h, "hash of {k:?}");
            assert_eq!(key_group_for_key(k, 128), kg, "key group of {k:?}");
        }
        // A String and a &str key hash alike: same canonical bytes.
        assert_eq!(key_hash(&"floe".to_string()), key_hash("floe"));
        // Non-power-of-two max parallelism takes the modulo path.
        assert_eq!(key_group_for_key(&42u64, 100), 44);
    }

    #[test]
    fn long_keys_hash_like_their_bytes() {
        let long = "x".repeat(1000);
        let bytes = postcard::to_allocvec(&long).unwrap();
        assert_eq!(key_hash(&long), mur3::murmurhash3_x86_32(&bytes, 0));
    }

    proptest! {
        #[test]
        fn every_key_group_has_exactly_one_owner(max_p in 1u32..=2048, p_seed in 1u32..=2048) {
            let p = (p_seed % max_p) + 1;
            let mut next = 0u32;
            for i in 0..p {
                let r = KeyGroupRange::for_operator_index(max_p, p, i);
                // Contiguous, in order, no gaps or overlaps.
                prop_assert_eq!(r.start as u32, next);
                for kg in r.iter() {
                    prop_assert_eq!(operator_index_for_key_group(max_p, p, kg), i);
                }
                next = r.end as u32 + 1;
            }
            prop_assert_eq!(next, max_p);
        }

        #[test]
        fn router_agrees_with_formulas(key in any::<u64>(), max_p in 1u32..=4096, p_seed in 1u32..=4096) {
            let p = (p_seed % max_p) + 1;
            let router = KeyGroupRouter::new(max_p, p);
            let (kg, sub) = router.route(&key);
            prop_assert_eq!(kg, key_group_for_key(&key, max_p));
            prop_assert_eq!(sub as u32, operator_index_for_key_group(max_p, p, kg));
            prop_assert!(KeyGroupRange::for_operator_index(max_p, p, sub as u32).contains(kg));
        }
    }
}
