//! Reading record batches (Kafka's v2 "magic 2" format) in place: a Fetch
//! answer's bytes are walked batch by batch, a compressed batch is
//! inflated once into one buffer, and each record is a view of borrowed
//! key, value and header slices — no allocation per record, where
//! `kafka-protocol`'s `RecordBatchDecoder` allocates a `Record` for each.

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

/// Bytes before the first record of a v2 batch.
const HEADER_LEN: usize = 61;
/// Where the CRC-covered part of a batch starts (the attributes).
const CRC_START: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME: i16 = 0x08;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// Why bytes a broker sent are not record batches Floe can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CorruptBatch(pub String);

fn corrupt(message: impl Into<String>) -> CorruptBatch {
    CorruptBatch(message.into())
}

/// The header of one batch: what the reader needs to skip it, to filter
/// transactions, and to number and stamp its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The offset of the batch's first record.
    pub base_offset: i64,
    /// The offset of its last record (kept through compaction, so the
    /// position after the batch is `last_offset + 1`).
    pub last_offset: i64,
    /// The batch attributes (compression, timestamp type, flags).
    pub attributes: i16,
    /// The first record's timestamp; records store deltas from it.
    pub base_timestamp: i64,
    /// The largest timestamp (every record's under `LogAppendTime`).
    pub max_timestamp: i64,
    /// The writing producer's id (-1 for a plain producer).
    pub producer_id: i64,
    /// How many records the batch holds.
    pub record_count: i32,
}

impl BatchHeader {
    /// A transaction's batch (its records count only once committed).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// A batch of control records (transaction markers), never user data.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// True when the broker stamped the records (`LogAppendTime`): each
    /// record's timestamp is then `max_timestamp`.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME != 0
    }
}

/// One batch, its records still as the broker sent them (maybe
/// compressed).
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// The batch header.
    pub header: BatchHeader,
    body: Bytes,
}

impl RawBatch {
    /// True when a control batch's first record is an ABORT marker (a
    /// marker's key is version i16 then type i16: 0 abort, 1 commit).
    pub fn is_abort_marker(&self) -> Result<bool, CorruptBatch> {
        let mut records = self.clone().records()?;
        match records.next_record()? {
            Some(r) => Ok(r.key.is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0])),
            None => Ok(false),
        }
    }

    /// The batch's records, inflated if the batch is compressed.
    pub fn records(self) -> Result<RecordCursor, CorruptBatch> {
        let h = self.header;
        let mut body = self.body;
        let data = match h.attributes & COMPRESSION_MASK {
            0 => body,
            1 => inflate::<Gzip>(&mut body, "gzip")?,
            2 => inflate::<Snappy>(&mut body, "snappy")?,
            3 => inflate::<Lz4>(&mut body, "lz4")?,
            4 => inflate::<Zstd>(&mut body, "zstd")?,
            other => return Err(corrupt(format!("unknown compression codec {other}"))),
        };
        Ok(RecordCursor {
            data,
            pos: 0,
            remaining: h.record_count.max(0),
            base_offset: h.base_offset,
            base_timestamp: h.base_timestamp,
            log_append_time: h.is_log_append_time().then_some(h.max_timestamp),
        })
    }
}

fn inflate<D: Decompressor<Bytes, Buf = Bytes>>(
    body: &mut Bytes,
    codec: &str,
) -> Result<Bytes, CorruptBatch> {
    D::decompress(body, |out: &mut Bytes| Ok(std::mem::take(out)))
        .map_err(|e| corrupt(format!("cannot decompress a {codec} batch: {e:#}")))
}

/// Walks the batches of a Fetch answer's record bytes.
#[derive(Debug, Clone, Default)]
pub struct BatchReader {
    bytes: Bytes,
    check_crcs: bool,
}

impl BatchReader {
    /// The batches in `bytes` (whole batches, as
    /// [`complete_batches`](super::complete_batches) leaves them); with
    /// `check_crcs` each batch's CRC-32C is verified (Kafka's `check.crcs`).
    pub fn new(bytes: Bytes, check_crcs: bool) -> Self {
        BatchReader { bytes, check_crcs }
    }

    /// True when every batch was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next batch, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RawBatch>, CorruptBatch> {
        if self.bytes.len() < 17 {
            self.bytes.clear();
            return Ok(None);
        }
        let b = &self.bytes[..];
        let base_offset = (&b[0..8]).get_i64();
        let length = (&b[8..12]).get_i32();
        let magic = b[16] as i8;
        if length < 0 || 12 + length as usize > b.len() {
            return Err(corrupt(format!(
                "batch at offset {base_offset} claims {length} bytes, {} are left",
                b.len() - 12
            )));
        }
        let total = 12 + length as usize;
        if magic != 2 {
            return Err(corrupt(format!(
                "batch at offset {base_offset} is in message format v{magic}; Floe reads v2 \
                 (Kafka 0.11 and later): upgrade the topic's message format"
            )));
        }
        if total < HEADER_LEN {
            return Err(corrupt(format!(
                "batch at offset {base_offset} is {total} bytes, shorter than its header"
            )));
        }
        let batch = self.bytes.split_to(total);
        let h = &batch[..HEADER_LEN];
        if self.check_crcs {
            let stored = (&h[17..21]).get_u32();
            let actual = crc32c::crc32c(&batch[CRC_START..]);
            if stored != actual {
                return Err(corrupt(format!(
                    "batch at offset {base_offset} fails its CRC check (stored {stored:08x}, computed {actual:08x})"
                )));
            }
        }
        let header = BatchHeader {
            base_offset,
            attributes: (&h[21..23]).get_i16(),
            last_offset: base_offset + (&h[23..27]).get_i32() as i64,
            base_timestamp: (&h[27..35]).get_i64(),
            max_timestamp: (&h[35..43]).get_i64(),
            producer_id: (&h[43..51]).get_i64(),
            record_count: (&h[57..61]).get_i32(),
        };
        Ok(Some(RawBatch {
            header,
            body: batch.slice(HEADER_LEN..),
        }))
    }
}

/// The records of one (inflated) batch, read one at a time.
#[derive(Debug, Clone, Default)]
pub struct RecordCursor {
    data: Bytes,
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (ms since the epoch): the producer's `CreateTime` or
    /// the broker's `LogAppendTime`.
    pub timestamp: i64,
    /// True for a broker-assigned timestamp.
    pub log_append_time: bool,
    /// Its key (`None` for a null key).
    pub key: Option<&'a [u8]>,
    /// Its value (`None` for a null value, a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its headers.
    pub headers: Headers<'a>,
}

fn varlong(buf: &[u8], pos: &mut usize) -> Result<i64, CorruptBatch> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *buf
            .get(*pos)
            .ok_or_else(|| corrupt("a record ends inside a varint"))?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(corrupt("a varint is longer than 10 bytes"));
        }
    }
    Ok((z >> 1) as i64 ^ -((z & 1) as i64))
}

/// A length-prefixed byte string (`-1` for null).
fn bytes_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, CorruptBatch> {
    let len = varlong(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|e| *e <= buf.len())
        .ok_or_else(|| corrupt(format!("a field of {len} bytes overruns its record")))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(Some(s))
}

impl RecordCursor {
    /// True when no record is left.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The next record, `None` after the last.
    pub fn next_record(&mut self) -> Result<Option<RecordView<'_>>, CorruptBatch> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let buf = &self.data[..];
        let mut pos = self.pos;
        let length = varlong(buf, &mut pos)?;
        let end = pos
            .checked_add(usize::try_from(length).map_err(|_| corrupt("negative record length"))?)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| corrupt(format!("a record of {length} bytes overruns its batch")))?;
        let record = &buf[..end];
        pos += 1; // attributes (unused)
        let timestamp_delta = varlong(record, &mut pos)?;
        let offset_delta = varlong(record, &mut pos)?;
        let key = bytes_field(record, &mut pos)?;
        let value = bytes_field(record, &mut pos)?;
        let header_count = varlong(record, &mut pos)?;
        let headers = Headers {
            data: record.get(pos..end).unwrap_or_default(),
            remaining: header_count.max(0) as usize,
        };
        self.pos = end;
        self.remaining -= 1;
        Ok(Some(RecordView {
            offset: self.base_offset + offset_delta,
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp + timestamp_delta),
            log_append_time: self.log_append_time.is_some(),
            key,
            value,
            headers,
        }))
    }
}

/// A record's headers, parsed as they are iterated: (key, value) with a
/// `None` value for a null one. Iteration stops at a malformed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    data: &'a [u8],
    remaining: usize,
}

impl<'a> Headers<'a> {
    /// How many headers the record has.
    pub fn len(&self) -> usize {
        self.remaining
    }

    /// True for a record without headers.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The value of the first header named `key` (Kafka allows repeats).
    pub fn get(&self, key: &str) -> Option<Option<&'a [u8]>> {
        self.into_iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v)
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let mut pos = 0;
        let parsed = bytes_field(self.data, &mut pos).and_then(|k| {
            let v = bytes_field(self.data, &mut pos)?;
            Ok((k.unwrap_or_default(), v))
        });
        match parsed {
            Ok(item) => {
                self.data = &self.data[pos..];
                self.remaining -= 1;
                Some(item)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{BatchBuilder, ProducerIdentity};
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Offset, timestamp, key, value and header count of a record.
    type Read = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>, usize);

    fn read_all(bytes: Bytes) -> Vec<Read> {
        let mut reader = BatchReader::new(bytes, true);
        let mut out = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap() {
            let mut records = batch.records().unwrap();
            while let Some(r) = records.next_record().unwrap() {
                out.push((
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    r.headers.len(),
                ));
            }
        }
        out
    }

    #[test]
    fn reads_what_the_builder_writes() {
        let mut b = BatchBuilder::new();
        b.push(Some(b"k1"), Some(b"hello"), 1_700_000_000_000);
        b.push(None, Some(&[7u8; 300]), 1_700_000_000_005);
        b.push(Some(b""), None, 1_699_999_999_999);
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&b.finish(ProducerIdentity::NONE, -1, false));
        bytes.extend_from_slice(&b.finish(ProducerIdentity::NONE, -1, false));
        let out = read_all(bytes.freeze());
        assert_eq!(out.len(), 3, "the second batch is empty: {out:?}");
        assert_eq!(
            out[0],
            (
                0,
                1_700_000_000_000,
                Some(b"k1".to_vec()),
                Some(b"hello".to_vec()),
                0
            )
        );
        assert_eq!(out[1], (1, 1_700_000_000_005, None, Some(vec![7; 300]), 0));
        assert_eq!(out[2], (2, 1_699_999_999_999, Some(vec![]), None, 0));
    }

    fn encoded(compression: Compression, ts_type: TimestampType) -> Bytes {
        let records: Vec<Record> = (0..50)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: ts_type,
                offset: 100 + i,
                sequence: i as i32,
                timestamp: 5_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: (i % 7 != 0).then(|| Bytes::from(format!("value-{i}").repeat(20))),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from(format!("{i}"))),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn every_compression_codec_reads_back() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encoded(compression, TimestampType::Creation);
            let mut reader = BatchReader::new(bytes, true);
            let batch = reader.next_batch().unwrap().unwrap();
            assert_eq!(batch.header.last_offset, 149, "{compression:?}");
            let mut records = batch.records().unwrap();
            let mut n = 0;
            while let Some(r) = records.next_record().unwrap() {
                assert_eq!(r.offset, 100 + n, "{compression:?}");
                assert_eq!(r.timestamp, 5_000 + n);
                assert_eq!(r.key, Some(format!("key-{n}").as_bytes()));
                let value = (n % 7 != 0).then(|| format!("value-{n}").repeat(20));
                assert_eq!(r.value, value.as_deref().map(str::as_bytes));
                assert_eq!(r.headers.get("h"), Some(Some(format!("{n}").as_bytes())));
                assert_eq!(r.headers.get("x"), None);
                n += 1;
            }
            assert_eq!(n, 50, "{compression:?}");
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn log_append_time_stamps_every_record_with_the_max_timestamp() {
        // The reference encoder never sets the timestamp-type bit: set it
        // as a broker does, and seal the batch with a new CRC.
        let mut raw = encoded(Compression::None, TimestampType::LogAppend).to_vec();
        raw[22] |= LOG_APPEND_TIME as u8;
        let crc = crc32c::crc32c(&raw[CRC_START..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let bytes = Bytes::from(raw);
        let batch = BatchReader::new(bytes, true).next_batch().unwrap().unwrap();
        let max = batch.header.max_timestamp;
        let mut records = batch.records().unwrap();
        let mut n = 0;
        while let Some(r) = records.next_record().unwrap() {
            assert!(r.log_append_time);
            assert_eq!(r.timestamp, max);
            n += 1;
        }
        assert_eq!((n, max), (50, 5_049));
    }

    #[test]
    fn corruption_is_reported_not_read() {
        let mut b = BatchBuilder::new();
        b.push(Some(b"k"), Some(b"v"), 1);
        let good = b.finish(ProducerIdentity::NONE, -1, false);
        let mut bad = good.to_vec();
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        let err = BatchReader::new(Bytes::from(bad.clone()), true)
            .next_batch()
            .unwrap_err();
        assert!(err.0.contains("CRC"), "{err}");
        // Without the check the damaged value is read as it is.
        assert!(
            BatchReader::new(Bytes::from(bad), false)
                .next_batch()
                .unwrap()
                .is_some()
        );
        let mut old = good.to_vec();
        old[16] = 1;
        let err = BatchReader::new(Bytes::from(old), true)
            .next_batch()
            .unwrap_err();
        assert!(err.0.contains("message format v1"), "{err}");
        let mut short = good.to_vec();
        short[11] = 0xff;
        assert!(
            BatchReader::new(Bytes::from(short), true)
                .next_batch()
                .is_err()
        );
    }
}
