//! Writing record batches (Kafka's v2 "magic 2" format) straight from
//! borrowed keys and values: the producer's hot path appends each record's
//! bytes to one buffer, with no per-record allocation, and seals the batch
//! with its header and CRC-32C when it is sent.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before the first record: base offset (8), batch length (4),
/// partition leader epoch (4), magic (1), CRC (4), attributes (2), last
/// offset delta (4), base timestamp (8), max timestamp (8), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
const HEADER_LEN: usize = 61;
/// Where the CRC-covered part starts (the attributes).
const CRC_START: usize = 21;
/// Attribute bit of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;

/// Who writes a batch: idempotent and transactional producers stamp their
/// id, epoch and per-partition sequence on every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerIdentity {
    /// The producer id the broker assigned (InitProducerId).
    pub producer_id: i64,
    /// The epoch of that id; a higher one fences older producers.
    pub epoch: i16,
}

impl ProducerIdentity {
    /// A plain producer: no id, no sequences.
    pub const NONE: ProducerIdentity = ProducerIdentity {
        producer_id: -1,
        epoch: -1,
    };
}

/// One partition's records being gathered into a batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn put_varint(buf: &mut BytesMut, v: i32) {
    put_varlong(buf, v as i64)
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
        }
    }

    /// Records gathered so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's encoded size so far.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record. `timestamp` is milliseconds since the epoch (the
    /// record's `CreateTime`).
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - self.base_timestamp;
        let offset_delta = self.count;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = value.map_or(-1, |v| v.len() as i64);
        let body = 1
            + varlong_len(ts_delta)
            + varlong_len(offset_delta as i64)
            + varlong_len(key_len)
            + key.map_or(0, |k| k.len())
            + varlong_len(value_len)
            + value.map_or(0, |v| v.len())
            + varlong_len(0);
        put_varlong(&mut self.buf, body as i64);
        self.buf.put_i8(0);
        put_varlong(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varlong(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.put_slice(k);
        }
        put_varlong(&mut self.buf, value_len);
        if let Some(v) = value {
            self.buf.put_slice(v);
        }
        put_varint(&mut self.buf, 0);
        self.count += 1;
    }

    /// Seals the batch: its header for `producer`, sequence numbers from
    /// `base_sequence` (-1 for a plain producer), the transactional flag,
    /// and the CRC. The builder is empty afterwards.
    pub fn finish(
        &mut self,
        producer: ProducerIdentity,
        base_sequence: i32,
        transactional: bool,
    ) -> Bytes {
        let mut batch = std::mem::replace(&mut self.buf, BytesMut::new());
        let batch_length = (batch.len() - 12) as i32;
        let mut h = &mut batch[..HEADER_LEN];
        h.put_i64(0); // base offset: the broker assigns offsets
        h.put_i32(batch_length);
        h.put_i32(-1); // partition leader epoch: the broker fills it
        h.put_i8(2); // magic
        h.put_u32(0); // CRC, below
        h.put_i16(if transactional { TRANSACTIONAL } else { 0 });
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(producer.producer_id);
        h.put_i16(producer.epoch);
        h.put_i32(base_sequence);
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        *self = BatchBuilder::new();
        batch.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn batches_decode_with_the_reference_decoder() {
        let mut b = BatchBuilder::new();
        b.push(Some(b"k1"), Some(b"hello"), 1_700_000_000_000);
        b.push(None, Some(&[7u8; 300]), 1_700_000_000_005);
        b.push(Some(b""), None, 1_699_999_999_999);
        let id = ProducerIdentity {
            producer_id: 42,
            epoch: 3,
        };
        let mut bytes = b.finish(id, 17, true);
        assert!(b.is_empty());
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        let r = &set.records;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(r[1].key, None);
        assert_eq!(r[1].value.as_deref(), Some(&[7u8; 300][..]));
        assert_eq!(r[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(r[2].value, None);
        assert_eq!(
            r.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            [1_700_000_000_000, 1_700_000_000_005, 1_699_999_999_999]
        );
        assert_eq!(r.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            r.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [17, 18, 19]
        );
        assert!(r.iter().all(|r| r.transactional && !r.control));
        assert!(
            r.iter()
                .all(|r| r.producer_id == 42 && r.producer_epoch == 3)
        );
    }

    /// The exact bytes of a small batch, pinned: a change of the encoding
    /// must be deliberate.
    #[test]
    fn batch_bytes_are_pinned() {
        let mut b = BatchBuilder::new();
        b.push(Some(b"a"), Some(b"1"), 1000);
        let bytes = b.finish(ProducerIdentity::NONE, -1, false);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Header: base offset 0, length 58, leader epoch -1, magic 2, the
        // CRC-32C (which the reference decoder checks above), attributes 0,
        // last offset delta 0, timestamps 1000, no producer id, epoch or
        // sequence, one record; then the record: length 8, attributes,
        // deltas 0, key "a", value "1", no headers.
        assert_eq!(
            hex,
            "0000000000000000\
             0000003a\
             ffffffff\
             02\
             bd332eaf\
             0000\
             00000000\
             00000000000003e8\
             00000000000003e8\
             ffffffffffffffff\
             ffff\
             ffffffff\
             00000001\
             1000000002610231\
             00"
        );
    }

    #[test]
    fn varint_lengths_match_encodings() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v), "{v}");
        }
    }
}
