//! The stable binary encoding of keys and state values.
//!
//! Floe uses postcard: compact (varints), fast, and with a documented wire
//! format that is stable across its 1.x releases, so bytes written by one
//! version of Floe (key hashes, snapshots, savepoints) read the same in the
//! next. Key hashing encodes into a stack buffer, so routing a record costs no
//! allocation for keys up to [`STACK_KEY_BYTES`] bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StateError;
pub use crate::key_bytes::{STACK_KEY_BYTES, with_key_bytes};

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(|e| StateError::Codec {
        action: "encode",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Appends the encoding of a value to `out` (no intermediate buffer).
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    what: &str,
) -> Result<(), StateError> {
    postcard::serialize_with_flavor(value, AppendVec(out)).map_err(|e| StateError::Codec {
        action: "encode",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// A postcard output flavor appending to a borrowed `Vec`.
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let n = data.len();
        if n > 8 {
            self.0.extend_from_slice(data);
            return Ok(());
        }
        // Varints and small fields: one unaligned 8-byte store instead of a
        // libc memcpy call per field (snapshots encode millions of them).
        let mut word = 0u64;
        for (i, b) in data.iter().enumerate() {
            word |= u64::from(*b) << (8 * i);
        }
        self.0.reserve(8);
        let len = self.0.len();
        // SAFETY: `reserve(8)` guarantees 8 bytes of capacity after `len`;
        // the store writes exactly those, and only the `n <= 8` bytes that
        // `data` supplied become part of the vector.
        unsafe {
            let dst = self.0.as_mut_ptr().add(len);
            std::ptr::write_unaligned(dst.cast::<[u8; 8]>(), word.to_le_bytes());
            self.0.set_len(len + n);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends postcard's encoding of a sequence of `(key, value)` pairs (its
/// length, then each key and value) when both types are machine integers
/// (`u64`, `u32`, `i64`, `i32`), and returns true; returns false, appending
/// nothing, for any other types.
///
/// Snapshots of the heap backend encode every entry of every key group, and
/// integer keys with integer counts or sums are the most common keyed state.
/// Serde's path costs a call and a byte loop per varint; this one writes
/// each varint with one unaligned store. The bytes are postcard's exactly
/// (pinned against postcard by tests), so snapshots read back the same.
#[inline]
pub(crate) fn encode_int_pairs<'a, K: 'static, V: 'static>(
    len: usize,
    pairs: impl Iterator<Item = (&'a K, &'a V)>,
    out: &mut Vec<u8>,
) -> bool {
    if !(is_varint_int::<K>() && is_varint_int::<V>()) {
        return false;
    }
    // At least a byte per integer; the vector doubles if more is needed.
    out.reserve(10 + len.saturating_mul(2));
    push_varint(out, len as u64);
    for (k, v) in pairs {
        let (k, v) = (varint_int(k), varint_int(v));
        if (k | v) >= 1 << 56 {
            push_varint(out, k);
            push_varint(out, v);
            continue;
        }
        let ((kw, kn), (vw, vn)) = (varint_word(k), varint_word(v));
        out.reserve(16);
        let at = out.len();
        // SAFETY: `reserve(16)` leaves 16 bytes of capacity after `at`; the
        // stores write bytes `at..at + 8` and `at + kn..at + kn + 8` with
        // `kn <= 8`, and only the `kn + vn` varint bytes become part of the
        // vector.
        unsafe {
            let p = out.as_mut_ptr().add(at);
            std::ptr::write_unaligned(p.cast::<[u8; 8]>(), kw.to_le_bytes());
            std::ptr::write_unaligned(p.add(kn).cast::<[u8; 8]>(), vw.to_le_bytes());
            out.set_len(at + kn + vn);
        }
    }
    true
}

/// True for the integer types postcard writes as a (zigzag) varint and
/// [`varint_int`] converts.
#[inline(always)]
fn is_varint_int<T: 'static>() -> bool {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    t == TypeId::of::<u64>()
        || t == TypeId::of::<u32>()
        || t == TypeId::of::<i64>()
        || t == TypeId::of::<i32>()
}

/// The unsigned value postcard writes as a varint for an integer of a type
/// [`is_varint_int`] accepts: the value itself, or its zigzag encoding when
/// signed (an `i32`'s zigzag is the same number as its `i64`'s).
#[inline(always)]
fn varint_int<T: 'static>(v: &T) -> u64 {
    let any = v as &dyn std::any::Any;
    if let Some(x) = any.downcast_ref::<u64>() {
        *x
    } else if let Some(x) = any.downcast_ref::<u32>() {
        u64::from(*x)
    } else if let Some(x) = any.downcast_ref::<i64>() {
        ((*x << 1) ^ (*x >> 63)) as u64
    } else if let Some(x) = any.downcast_ref::<i32>() {
        let x = i64::from(*x);
        ((x << 1) ^ (x >> 63)) as u64
    } else {
        unreachable!("checked by is_varint_int")
    }
}

/// `VARINT_LEN[lz]`: the bytes of the varint of a non-zero value with `lz`
/// leading zero bits (7 value bits per byte).
const VARINT_LEN: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut lz = 0;
    while lz < 64 {
        t[lz] = (64 - lz).div_ceil(7) as u8;
        lz += 1;
    }
    t
};

/// `CONTINUATION[n]`: the continuation bits of an `n`-byte varint (every
/// byte but the last), for `n` in 1..=8.
const CONTINUATION: [u64; 9] = {
    let mut t = [0u64; 9];
    let mut n = 1;
    while n <= 8 {
        t[n] = 0x8080_8080_8080_8080 & ((1u64 << (8 * (n - 1))) - 1);
        n += 1;
    }
    t
};

/// The LEB128 varint (postcard's integer encoding) of `v < 2^56` as
/// little-endian bytes in a word, and how many of them it has (1..=8).
/// Branch-free: the 7-bit groups are spread over the bytes in three
/// halving steps instead of a loop.
#[inline(always)]
fn varint_word(v: u64) -> (u64, usize) {
    debug_assert!(v < 1 << 56);
    // 28-bit halves into 32-bit lanes, 14-bit halves into 16-bit lanes,
    // 7-bit halves into bytes.
    let x = (v & 0x0fff_ffff) | ((v & 0x00ff_ffff_f000_0000) << 4);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x0fff_c000_0fff_c000) << 2);
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x3f80_3f80_3f80_3f80) << 1);
    let n = VARINT_LEN[(v | 1).leading_zeros() as usize] as usize;
    (x | CONTINUATION[n], n)
}

/// Appends `v` as a LEB128 varint (postcard's unsigned integers and
/// lengths). Values below 2^56 (at most 8 bytes) take one unaligned store.
#[inline(always)]
pub(crate) fn push_varint(out: &mut Vec<u8>, v: u64) {
    if v >= 1 << 56 {
        return push_varint_slow(out, v);
    }
    let (w, n) = varint_word(v);
    out.reserve(8);
    let len = out.len();
    // SAFETY: `reserve(8)` leaves at least 8 bytes of capacity after `len`;
    // the store writes exactly those, and only the `n <= 8` bytes of the
    // varint become part of the vector.
    unsafe {
        std::ptr::write_unaligned(out.as_mut_ptr().add(len).cast::<[u8; 8]>(), w.to_le_bytes());
        out.set_len(len + n);
    }
}

#[cold]
fn push_varint_slow(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a value, requiring that every byte is consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StateError> {
    let err = |reason: String| StateError::Codec {
        action: "decode",
        what: what.to_string(),
        reason,
    };
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(err(format!("{} trailing bytes", rest.len())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fast path's bytes against postcard's own for the same pairs.
    fn same_as_postcard<K, V>(pairs: Vec<(K, V)>)
    where
        K: Serialize + 'static,
        V: Serialize + 'static,
    {
        let mut fast = vec![0xee]; // appends, keeping what was there
        assert!(encode_int_pairs(
            pairs.len(),
            pairs.iter().map(|(k, v)| (k, v)),
            &mut fast
        ));
        let mut want = vec![0xee];
        want.extend(postcard::to_allocvec(&pairs).unwrap());
        assert_eq!(fast, want);
    }

    #[test]
    fn integer_pairs_encode_exactly_as_postcard_at_every_varint_length() {
        let mut edges = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for bits in 1..64 {
            edges.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
        }
        same_as_postcard(edges.iter().map(|&v| (v, v)).collect());
        // One side of a pair on the fast path, the other not (>= 2^56).
        same_as_postcard(edges.iter().map(|&v| (v, u64::MAX - v)).collect());
        same_as_postcard(edges.iter().map(|&v| (v, 1u64 << 60)).collect());
        same_as_postcard(edges.iter().map(|&v| (v as i64, v as u32)).collect());
        same_as_postcard(edges.iter().map(|&v| (v as i32, v as i64)).collect());
        same_as_postcard(vec![(i64::MIN, i32::MIN), (i64::MAX, i32::MAX), (-1, -1)]);
        same_as_postcard(Vec::<(u64, u64)>::new());
        // A sequence length that needs several varint bytes.
        same_as_postcard((0..300u32).map(|i| (i, i)).collect());
    }

    #[test]
    fn other_types_take_the_serde_path() {
        let pairs = [(String::from("k"), 1u64)];
        let mut out = Vec::new();
        assert!(!encode_int_pairs(
            1,
            pairs.iter().map(|(k, v)| (k, v)),
            &mut out
        ));
        let pairs = [(1u64, 1u8)];
        assert!(!encode_int_pairs(
            1,
            pairs.iter().map(|(k, v)| (k, v)),
            &mut out
        ));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn random_integer_pairs_match_postcard(
            a in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..50),
            b in proptest::collection::vec((any::<i64>(), any::<i32>()), 0..50),
            c in proptest::collection::vec((any::<u32>(), any::<i64>()), 0..50),
        ) {
            same_as_postcard(a);
            same_as_postcard(b);
            same_as_postcard(c);
        }
    }
}
