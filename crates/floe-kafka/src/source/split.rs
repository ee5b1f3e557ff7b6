//! Splits of a Kafka source: one per topic partition, who owns it, what it
//! is called for per-split watermarks, and how its position is saved.
//!
//! Ownership follows Flink's `KafkaSourceEnumerator.getSplitOwner`, so a
//! partition lands on the same subtask index as in a Flink job of the same
//! parallelism, and every subtask computes it alone from the topic name —
//! no central enumerator is needed.

use crate::client::TopicPartition;
use crate::error::KafkaError;
use floe_runtime::SplitId;

/// Java's `String.hashCode` (over UTF-16 code units, wrapping `i32`
/// arithmetic): the owner formula is defined on it.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The subtask (of `num_readers`) that reads `tp`: Flink's
/// `startIndex = ((topic.hashCode() * 31) & 0x7FFFFFFF) % numReaders;
/// owner = (startIndex + partition) % numReaders`. Partitions of one topic
/// go round-robin from a start that depends on the topic, so several
/// topics spread over all subtasks.
pub fn split_owner(tp: &TopicPartition, num_readers: u32) -> u32 {
    assert!(num_readers > 0, "a source has at least one reader");
    let n = i64::from(num_readers);
    let start = i64::from(java_string_hash(&tp.topic).wrapping_mul(31) & 0x7FFF_FFFF) % n;
    ((start + i64::from(tp.partition)) % n) as u32
}

/// The stable id of `tp` as a split (for per-split watermarks): FNV-1a over
/// the topic's bytes and the partition, the same in every run.
pub fn split_id(tp: &TopicPartition) -> SplitId {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tp
        .topic
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&tp.partition.to_be_bytes())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
    }
    h
}

/// A split's position as a checkpoint keeps it: the next offset to read
/// and, for a bounded source, where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPosition {
    /// The topic partition.
    pub partition: TopicPartition,
    /// The offset of the next record to emit.
    pub next_offset: i64,
    /// The offset at which the split ends (exclusive), if bounded.
    pub stopping_offset: Option<i64>,
}

/// Leads every encoded position list.
const MAGIC: &[u8; 4] = b"FKSP";
/// The encoding's version: bump it (and keep decoding the old one) for
/// any change of the layout.
const VERSION: u8 = 1;
/// Stands for "no stopping offset" (Flink's `NO_STOPPING_OFFSET`).
const NO_STOP: i64 = i64::MIN;

/// Encodes a reader's positions for a checkpoint: `FKSP`, version 1, the
/// count (u32), then per split the topic (u16 length + UTF-8), partition
/// (i32), next offset (i64) and stopping offset (i64, `i64::MIN` for
/// none), all big-endian. Pinned by a test: savepoints must stay readable.
pub fn encode_positions(positions: &[SplitPosition]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + positions.len() * 32);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(positions.len() as u32).to_be_bytes());
    for p in positions {
        let topic = p.partition.topic.as_bytes();
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&p.partition.partition.to_be_bytes());
        out.extend_from_slice(&p.next_offset.to_be_bytes());
        out.extend_from_slice(&p.stopping_offset.unwrap_or(NO_STOP).to_be_bytes());
    }
    out
}

/// Decodes what [`encode_positions`] wrote; an empty input (a reader that
/// never opened) is no positions.
pub fn decode_positions(bytes: &[u8]) -> Result<Vec<SplitPosition>, KafkaError> {
    let bad = |why: &str| KafkaError::Config(format!("a saved Kafka source position {why}"));
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() < 9 || &bytes[..4] != MAGIC {
        return Err(bad(
            "does not start with FKSP: it is not a Kafka source's state",
        ));
    }
    if bytes[4] != VERSION {
        return Err(bad(&format!(
            "has version {}; this Floe reads version {VERSION}",
            bytes[4]
        )));
    }
    let mut rest = &bytes[5..];
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (rest.len() >= n).then(|| rest.split_at(n))?;
        *rest = tail;
        Some(head)
    }
    let truncated = || bad("is truncated");
    let count = u32::from_be_bytes(
        take(&mut rest, 4)
            .ok_or_else(truncated)?
            .try_into()
            .unwrap(),
    );
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let len = u16::from_be_bytes(
            take(&mut rest, 2)
                .ok_or_else(truncated)?
                .try_into()
                .unwrap(),
        );
        let topic = std::str::from_utf8(take(&mut rest, len as usize).ok_or_else(truncated)?)
            .map_err(|_| bad("names a topic that is not UTF-8"))?
            .to_string();
        let fixed = take(&mut rest, 20).ok_or_else(truncated)?;
        let partition = i32::from_be_bytes(fixed[..4].try_into().unwrap());
        let next_offset = i64::from_be_bytes(fixed[4..12].try_into().unwrap());
        let stop = i64::from_be_bytes(fixed[12..].try_into().unwrap());
        out.push(SplitPosition {
            partition: TopicPartition::new(topic, partition),
            next_offset,
            stopping_offset: (stop != NO_STOP).then_some(stop),
        });
    }
    if !rest.is_empty() {
        return Err(bad("has trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by Java 17 for `String.hashCode` and Flink's formula
    /// (`Owner.java`: owners for 1, 2, 3, 4 and 7 readers, partitions 0–3).
    #[test]
    fn owners_match_flink() {
        let expected: &[(&str, i32, [u32; 20])] = &[
            (
                "orders",
                -1008770331,
                [0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 2, 0, 3, 0, 1, 2, 3, 4, 5, 6],
            ),
            (
                "t",
                116,
                [0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 5, 6, 0, 1],
            ),
            (
                "events-2024",
                955743540,
                [0, 0, 0, 0, 0, 1, 0, 1, 1, 2, 0, 1, 0, 1, 2, 3, 4, 5, 6, 0],
            ),
            (
                "\u{fc}ber",
                7604755,
                [0, 0, 0, 0, 1, 0, 1, 0, 1, 2, 0, 1, 1, 2, 3, 0, 5, 6, 0, 1],
            ),
            (
                "\u{1F600}emoji",
                -1233692477,
                [0, 0, 0, 0, 1, 0, 1, 0, 1, 2, 0, 1, 1, 2, 3, 0, 6, 0, 1, 2],
            ),
            (
                "",
                0,
                [0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3],
            ),
            (
                "a-very-long-topic-name-that-overflows-the-hash",
                1181555790,
                [0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 1, 0, 1, 2, 3],
            ),
        ];
        for (topic, hash, owners) in expected {
            assert_eq!(java_string_hash(topic), *hash, "{topic}");
            let mut got = Vec::new();
            for n in [1, 2, 3, 4, 7] {
                for p in 0..4 {
                    got.push(split_owner(&TopicPartition::new(*topic, p), n));
                }
            }
            assert_eq!(got, owners.to_vec(), "{topic}");
        }
    }

    #[test]
    fn split_ids_are_stable_and_distinct() {
        let a = split_id(&TopicPartition::new("orders", 0));
        assert_eq!(a, split_id(&TopicPartition::new("orders", 0)));
        assert_ne!(a, split_id(&TopicPartition::new("orders", 1)));
        assert_ne!(a, split_id(&TopicPartition::new("orders0", 0)));
    }

    /// The exact bytes of a position list, pinned: savepoints written
    /// today must decode in every later version.
    #[test]
    fn encoding_is_pinned() {
        let positions = vec![
            SplitPosition {
                partition: TopicPartition::new("ab", 3),
                next_offset: 258,
                stopping_offset: None,
            },
            SplitPosition {
                partition: TopicPartition::new("c", 0),
                next_offset: 0,
                stopping_offset: Some(7),
            },
        ];
        let bytes = encode_positions(&positions);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "464b5350\
             01\
             00000002\
             0002 6162 00000003 0000000000000102 8000000000000000\
             0001 63 00000000 0000000000000000 0000000000000007"
                .replace(' ', "")
        );
        assert_eq!(decode_positions(&bytes).unwrap(), positions);
        assert_eq!(decode_positions(&[]).unwrap(), vec![]);
    }

    #[test]
    fn foreign_or_damaged_positions_are_refused() {
        let good = encode_positions(&[SplitPosition {
            partition: TopicPartition::new("t", 1),
            next_offset: 5,
            stopping_offset: None,
        }]);
        for (bytes, needle) in [
            (b"FLKF\x01\0\0\0\0".to_vec(), "FKSP"),
            ([&good[..4], &[9], &good[5..]].concat(), "version 9"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([&good[..], &[0]].concat(), "trailing"),
        ] {
            let err = decode_positions(&bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
