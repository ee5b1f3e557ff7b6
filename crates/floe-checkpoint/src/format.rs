//! The frame around every file Floe writes into checkpoint storage.
//!
//! A checkpoint is only useful if a restore can trust it. Object stores and
//! disks do lose the tail of a file (a crash mid-upload on a store without
//! atomic puts, a full disk, a copy interrupted by an operator), flip bits,
//! and hand back the wrong file when a path is mistyped. The frame makes each
//! of these a clear error naming the file instead of state silently restored
//! from garbage:
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"FLOE"             not a Floe file otherwise
//! 4       2     format version (u16, LE)   currently 1
//! 6       1     file kind (u8)             see FileKind; guards against mixing files up
//! 7       8     payload length (u64, LE)   detects truncation and trailing bytes
//! 15      n     payload
//! 15+n    4     CRC-32 (u32, LE)           over bytes 0..15+n, detects corruption
//! ```
//!
//! The checksum is CRC-32 (IEEE 802.3, the one of zlib, gzip and PNG)
//! computed with the `crc32fast` crate: it is the most widely used CRC crate
//! in the Rust ecosystem (the one `flate2`, `zip` and `png` use), small, free
//! of build scripts and C code, SIMD-accelerated with runtime detection and
//! a portable fallback; and because the polynomial is the common one, anyone
//! can verify a checkpoint file by hand (`zlib.crc32` in Python).
//!
//! The layout is pinned byte for byte by a test; changing it needs a new
//! [`FORMAT_VERSION`], while readers keep accepting the old one.

use std::fmt;

/// The first four bytes of every Floe checkpoint file.
pub const MAGIC: [u8; 4] = *b"FLOE";

/// The frame layout version written by this build of Floe.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes before the payload: magic, version, kind, payload length.
pub const HEADER_LEN: usize = 4 + 2 + 1 + 8;

/// Bytes after the payload: the checksum.
pub const TRAILER_LEN: usize = 4;

/// What a checkpoint file holds, stored in its frame so that a file can never
/// be read as something it is not (for example operator state restored from
/// a keyed-state file after a path mix-up). The numeric values are part of
/// the on-disk format and never change; new kinds take new values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
#[repr(u8)]
pub enum FileKind {
    /// A checkpoint's `_metadata`: which state handles make up the checkpoint.
    Metadata = 1,
    /// Keyed state of one subtask, grouped by key group.
    KeyedState = 2,
    /// Operator (non-keyed) state, including broadcast and source state.
    OperatorState = 3,
    /// In-flight records stored by an unaligned checkpoint.
    ChannelState = 4,
    /// Keyed state of one subtask in a backend's native format (RocksDB's
    /// files): the small private files inline, the SST files as references
    /// to shared state.
    KeyedStateNative = 5,
    /// A file of incremental state under `shared/` (an SST file), referenced
    /// by every checkpoint that still contains it.
    SharedState = 6,
}

impl FileKind {
    /// Every kind, for tests and tools that enumerate them.
    pub const ALL: [FileKind; 6] = [
        FileKind::Metadata,
        FileKind::KeyedState,
        FileKind::OperatorState,
        FileKind::ChannelState,
        FileKind::KeyedStateNative,
        FileKind::SharedState,
    ];

    /// The stable byte written into the frame.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kind with this stable byte, if any.
    pub const fn from_u8(value: u8) -> Option<FileKind> {
        match value {
            1 => Some(FileKind::Metadata),
            2 => Some(FileKind::KeyedState),
            3 => Some(FileKind::OperatorState),
            4 => Some(FileKind::ChannelState),
            5 => Some(FileKind::KeyedStateNative),
            6 => Some(FileKind::SharedState),
            _ => None,
        }
    }

    /// A human name for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            FileKind::Metadata => "checkpoint metadata",
            FileKind::KeyedState => "keyed state",
            FileKind::OperatorState => "operator state",
            FileKind::ChannelState => "channel state",
            FileKind::KeyedStateNative => "native keyed state",
            FileKind::SharedState => "shared incremental state",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the bytes of a checkpoint file cannot be trusted. Every variant names
/// the file, so a failed restore says which file to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than even an empty payload needs.
    #[error(
        "checkpoint file {file} is truncated: {len} bytes, but a Floe file has at least {min} (header and checksum)"
    )]
    TooShort {
        /// The file.
        file: String,
        /// Its length.
        len: usize,
        /// The smallest possible length.
        min: usize,
    },
    /// The file does not start with `FLOE`.
    #[error(
        "{file} is not a Floe checkpoint file: it starts with {found:02x?}, not the magic bytes \"FLOE\""
    )]
    BadMagic {
        /// The file.
        file: String,
        /// Its first (up to four) bytes.
        found: Vec<u8>,
    },
    /// Written by a Floe whose frame layout this build does not know.
    #[error(
        "checkpoint file {file} has format version {found}, but this build of Floe reads version {supported}; restore it with a newer Floe"
    )]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The kind byte is not one this build knows.
    #[error("checkpoint file {file} has unknown file kind {found}")]
    UnknownKind {
        /// The file.
        file: String,
        /// The kind byte.
        found: u8,
    },
    /// A valid file, but of another kind than the caller expected.
    #[error("checkpoint file {file} holds {found}, but {expected} was expected")]
    WrongKind {
        /// The file.
        file: String,
        /// The kind asked for.
        expected: FileKind,
        /// The kind in the file.
        found: FileKind,
    },
    /// The length in the header disagrees with the file's size: the file was
    /// cut short (or has bytes appended).
    #[error(
        "checkpoint file {file} is {}: its header declares a {declared}-byte payload, so the file should be {expected_len} bytes, but it is {actual_len}",
        if actual_len < expected_len { "truncated" } else { "longer than its header says" }
    )]
    LengthMismatch {
        /// The file.
        file: String,
        /// The payload length in the header.
        declared: u64,
        /// The file size that length implies (saturating).
        expected_len: u64,
        /// The actual file size.
        actual_len: u64,
    },
    /// The bytes changed after they were written.
    #[error(
        "checkpoint file {file} is corrupted: checksum {actual:#010x} does not match the stored {stored:#010x}"
    )]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes read.
        actual: u32,
    },
}

/// The checksum `_metadata` records for every state file: XXH3-64 over
/// the file's exact stored bytes (frame included).
///
/// The frame's CRC-32 proves a file is intact, not that it is the file the
/// checkpoint wrote: a state file of another checkpoint, subtask or job is
/// just as intact. `_metadata` therefore records a checksum of each file it
/// lists, and a restore refuses a file whose bytes differ. XXH3 is used
/// because it is fast enough to add no measurable time to a checkpoint
/// (tens of GB/s, one pass over a buffer already in cache) and its 64 bits
/// make two different files of the same size agree only by a 1 in 2^64
/// chance; it guards against mix-ups, not against a forger, who could
/// rewrite `_metadata` as well.
pub fn file_checksum(stored: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(stored)
}

/// The total size of a framed file with a payload of `payload_len` bytes.
pub const fn framed_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len + TRAILER_LEN
}

/// Frames `payload` as a file of the given kind.
pub fn encode(kind: FileKind, payload: &[u8]) -> Vec<u8> {
    let mut out = begin(payload.len());
    out.extend_from_slice(payload);
    seal(kind, &mut out);
    out
}

/// Starts a file whose payload a producer appends in place (no copy of a
/// large payload into a frame afterwards): room for the header, and capacity
/// for `payload_capacity` bytes of payload plus the trailer.
pub fn begin(payload_capacity: usize) -> Vec<u8> {
    begin_in(Vec::new(), payload_capacity)
}

/// Like [`begin`], in a buffer kept from an earlier file (its capacity is
/// reused, its contents discarded).
pub fn begin_in(mut buf: Vec<u8>, payload_capacity: usize) -> Vec<u8> {
    buf.clear();
    buf.reserve(framed_len(payload_capacity));
    buf.resize(HEADER_LEN, 0);
    buf
}

/// Completes a file started with [`begin`]: everything after the header is
/// the payload; writes the header and appends the checksum.
///
/// # Panics
/// If `buf` is shorter than a header (it did not come from [`begin`]).
pub fn seal(kind: FileKind, buf: &mut Vec<u8>) {
    assert!(
        buf.len() >= HEADER_LEN,
        "a framed file starts with its header"
    );
    let payload_len = (buf.len() - HEADER_LEN) as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.push(kind.as_u8());
    header.extend_from_slice(&payload_len.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);
    buf[..HEADER_LEN].copy_from_slice(&header);
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the frame of a file read back and returns its payload, borrowed
/// from `bytes`. `file_name` is only used in errors (pass the full path or
/// URL so the message says where the file is).
///
/// The checks run in an order that gives the most useful message: magic
/// (is it ours at all), version (can this build read the layout), length
/// (truncated), checksum (corrupted), and kind last, so that a corrupted
/// kind byte is reported as corruption.
pub fn decode<'a>(
    bytes: &'a [u8],
    expected_kind: FileKind,
    file_name: &str,
) -> Result<&'a [u8], FormatError> {
    let file = || file_name.to_string();
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::BadMagic {
            file: file(),
            found: bytes[..magic_len].to_vec(),
        });
    }
    let min = framed_len(0);
    if bytes.len() < min {
        return Err(FormatError::TooShort {
            file: file(),
            len: bytes.len(),
            min,
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            file: file(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let kind_byte = bytes[6];
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[7..HEADER_LEN]);
    let declared = u64::from_le_bytes(len_bytes);
    let expected_len = declared.saturating_add(min as u64);
    if expected_len != bytes.len() as u64 {
        return Err(FormatError::LengthMismatch {
            file: file(),
            declared,
            expected_len,
            actual_len: bytes.len() as u64,
        });
    }
    let body_end = bytes.len() - TRAILER_LEN;
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[body_end..]);
    let stored = u32::from_le_bytes(crc_bytes);
    let actual = crc32fast::hash(&bytes[..body_end]);
    if stored != actual {
        return Err(FormatError::ChecksumMismatch {
            file: file(),
            stored,
            actual,
        });
    }
    let found = FileKind::from_u8(kind_byte).ok_or_else(|| FormatError::UnknownKind {
        file: file(),
        found: kind_byte,
    })?;
    if found != expected_kind {
        return Err(FormatError::WrongKind {
            file: file(),
            expected: expected_kind,
            found,
        });
    }
    Ok(&bytes[HEADER_LEN..body_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bitwise CRC-32 (reflected, polynomial 0xEDB88320), written from the
    /// definition, so the pinned bytes do not rest on the crate alone.
    fn reference_crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn checksum_is_standard_crc32() {
        // The catalogue check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(reference_crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn encoding_is_pinned() {
        let bytes = encode(FileKind::KeyedState, b"floe");
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            b'F', b'L', b'O', b'E',         // magic
            0x01, 0x00,                     // version 1
            0x02,                           // kind: keyed state
            0x04, 0, 0, 0, 0, 0, 0, 0,      // payload length 4
            b'f', b'l', b'o', b'e',         // payload
            0x0b, 0x77, 0xd7, 0x39,         // CRC-32 0x39d7770b of the 19 bytes above
        ];
        assert_eq!(bytes, expected);
        assert_eq!(reference_crc32(&bytes[..19]), 0x39d7_770b);
        assert_eq!(decode(&bytes, FileKind::KeyedState, "f").unwrap(), b"floe");
    }

    #[test]
    fn kind_values_are_stable() {
        let values: Vec<u8> = FileKind::ALL.iter().map(|k| k.as_u8()).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
        for kind in FileKind::ALL {
            assert_eq!(FileKind::from_u8(kind.as_u8()), Some(kind));
        }
        assert_eq!(FileKind::from_u8(0), None);
        assert_eq!(FileKind::from_u8(7), None);
    }

    #[test]
    fn round_trips_empty_and_large_payloads() {
        for payload in [Vec::new(), (0..100_000u32).map(|i| i as u8).collect()] {
            for kind in FileKind::ALL {
                let framed = encode(kind, &payload);
                assert_eq!(framed.len(), framed_len(payload.len()));
                assert_eq!(decode(&framed, kind, "x").unwrap(), &payload[..]);
            }
        }
    }

    fn err(bytes: &[u8], kind: FileKind) -> FormatError {
        decode(bytes, kind, "ckpt/chk-7/state-1").unwrap_err()
    }

    #[test]
    fn every_defect_is_named_with_the_file() {
        let good = encode(FileKind::KeyedState, b"some keyed state");

        // Truncated inside the header, and an empty file.
        assert!(matches!(
            err(&good[..10], FileKind::KeyedState),
            FormatError::TooShort { len: 10, .. }
        ));
        assert!(matches!(
            err(&[], FileKind::KeyedState),
            FormatError::TooShort { len: 0, .. }
        ));
        // Truncated inside the payload.
        let e = err(&good[..good.len() - 6], FileKind::KeyedState);
        assert!(matches!(e, FormatError::LengthMismatch { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        // Bytes appended.
        let mut longer = good.clone();
        longer.push(0);
        let e = err(&longer, FileKind::KeyedState);
        assert!(e.to_string().contains("longer than its header says"), "{e}");
        // Not a Floe file, also when shorter than the magic.
        assert!(matches!(
            err(b"PK\x03\x04 a zip file", FileKind::KeyedState),
            FormatError::BadMagic { .. }
        ));
        assert!(matches!(
            err(b"{", FileKind::KeyedState),
            FormatError::BadMagic { .. }
        ));
        // A newer format.
        let mut newer = good.clone();
        newer[4] = 2;
        assert!(matches!(
            err(&newer, FileKind::KeyedState),
            FormatError::UnsupportedVersion { found: 2, .. }
        ));
        // A flipped payload bit, a flipped checksum bit, a flipped kind byte.
        for at in [HEADER_LEN + 3, good.len() - 1, 6] {
            let mut corrupt = good.clone();
            corrupt[at] ^= 0x10;
            assert!(
                matches!(
                    err(&corrupt, FileKind::KeyedState),
                    FormatError::ChecksumMismatch { .. }
                ),
                "flip at {at}"
            );
        }
        // A valid file of another kind.
        assert_eq!(
            err(&good, FileKind::Metadata),
            FormatError::WrongKind {
                file: "ckpt/chk-7/state-1".into(),
                expected: FileKind::Metadata,
                found: FileKind::KeyedState,
            }
        );
        // A valid frame with a kind this build does not know.
        let mut unknown = good[..good.len() - TRAILER_LEN].to_vec();
        unknown[6] = 200;
        let crc = crc32fast::hash(&unknown);
        unknown.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            err(&unknown, FileKind::KeyedState),
            FormatError::UnknownKind { found: 200, .. }
        ));
        // A declared length so large it would overflow.
        let mut huge = good.clone();
        huge[7..15].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            err(&huge, FileKind::KeyedState),
            FormatError::LengthMismatch { .. }
        ));

        // Every message names the file.
        for bytes in [&good[..3], &good[..good.len() - 1], &newer[..], &longer[..]] {
            let msg = err(bytes, FileKind::KeyedState).to_string();
            assert!(msg.contains("ckpt/chk-7/state-1"), "{msg}");
        }
    }
}
