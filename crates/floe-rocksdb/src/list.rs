//! The stored format of list state values and the merge operator that
//! appends to them.
//!
//! A list value is `u32 little-endian element count | concatenated postcard
//! elements`. The elements are opaque to this layer (postcard is not
//! self-describing, so they cannot be split without their type); the count
//! is what lets the canonical snapshot encoding write `varint(count) ++
//! elements`, exactly the postcard encoding of a `Vec<T>`, without decoding
//! a single element.
//!
//! Appending is a RocksDB merge whose operand has the same format: full and
//! partial merges add the counts and concatenate the element bytes, so an
//! append never reads the list (no read-modify-write on the hot path), and
//! merging is associative.

use rocksdb::MergeOperands;

/// Bytes of the count header.
pub const LIST_HEADER_BYTES: usize = 4;

/// The merge operator's name, recorded by RocksDB in the OPTIONS file: a
/// database written with it must be reopened with an operator of the same
/// name, so never rename it.
pub const LIST_MERGE_OPERATOR_NAME: &str = "floe.list-append.v1";

/// Splits a stored list value into `(count, element bytes)`; `None` when it
/// is shorter than its header.
#[inline]
pub fn split_list_value(value: &[u8]) -> Option<(u32, &[u8])> {
    let header: [u8; LIST_HEADER_BYTES] = value.get(..LIST_HEADER_BYTES)?.try_into().ok()?;
    Some((u32::from_le_bytes(header), &value[LIST_HEADER_BYTES..]))
}

/// Writes a list value (or merge operand) of `count` elements into `out`
/// (cleared first).
#[inline]
pub fn encode_list_value(out: &mut Vec<u8>, count: u32, elements: &[u8]) {
    out.clear();
    out.reserve(LIST_HEADER_BYTES + elements.len());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(elements);
}

/// The associative merge function for list states, used as both full merge
/// (`existing` is the stored value, if any) and partial merge (`existing`
/// is `None`). Returns `None` — which RocksDB reports as a corruption error
/// on the read that needed the merge, rather than a panic — when a value or
/// operand is shorter than its header or the count overflows `u32`.
pub fn list_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut total_len = existing.map_or(LIST_HEADER_BYTES, <[u8]>::len);
    for op in operands.iter() {
        total_len += op.len().saturating_sub(LIST_HEADER_BYTES);
    }
    let mut out = Vec::with_capacity(total_len);
    out.extend_from_slice(&[0; LIST_HEADER_BYTES]);
    let mut count: u32 = 0;
    for part in existing.into_iter().chain(operands.iter()) {
        let (n, elements) = split_list_value(part)?;
        count = count.checked_add(n)?;
        out.extend_from_slice(elements);
    }
    out[..LIST_HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_value_format_is_pinned() {
        let mut v = Vec::new();
        encode_list_value(&mut v, 2, &[0x01, 0x02]);
        assert_eq!(v, vec![2, 0, 0, 0, 1, 2]);
        assert_eq!(split_list_value(&v), Some((2, &[1u8, 2][..])));
        assert_eq!(split_list_value(&[1, 0, 0]), None);
    }
}
