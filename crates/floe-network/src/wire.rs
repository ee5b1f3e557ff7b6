//! The bytes on a data connection: the handshake and the two messages.
//!
//! Two builds of Floe on two hosts must agree on these bytes, so the layout
//! is pinned in `tests/wire.rs` and every number is little-endian and fixed
//! width: parsing a header is a few loads, with no varint branches on the
//! hot path. A data message's payload is the runtime's frame
//! (`floe_runtime::remote::encode_message`), passed through untouched.
//!
//! ```text
//! hello   = magic "FLNW" | version u16 | TaskManager id u128          (22 bytes)
//! reply   = hello | status u8                                          (23 bytes)
//! message = length u32 (of what follows) | kind u8 | body
//! scope   = job u128 | attempt u64 | edge u32 | sender u32 | receiver u32
//! DATA    (kind 1) body = scope | backlog u32 | payload
//! CREDIT  (kind 2) body = scope | credits u32
//! ```

use floe_core::JobId;
use floe_runtime::remote::ChannelId;

use crate::error::ConnectionError;
use crate::peer::TaskManagerId;

/// First bytes of every data connection, so a stray client (or another
/// protocol on the port) is refused at once instead of parsed as frames.
pub const MAGIC: [u8; 4] = *b"FLNW";
/// Bumped on any change of the bytes below; peers of other versions are
/// refused during the handshake with a reason naming both versions.
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of a hello.
pub const HELLO_LEN: usize = 22;
/// Length of the acceptor's reply: its hello and a status byte.
pub const REPLY_LEN: usize = HELLO_LEN + 1;

/// Kind byte of a data message.
pub const KIND_DATA: u8 = 1;
/// Kind byte of a credit announcement.
pub const KIND_CREDIT: u8 = 2;

/// Bytes of the scope that prefixes both messages' bodies.
const SCOPE_LEN: usize = 16 + 8 + 4 * 3;
/// Bytes of a data message before its payload, length prefix included.
pub const DATA_HEADER_LEN: usize = 4 + 1 + SCOPE_LEN + 4;
/// Bytes of a whole credit message, length prefix included.
pub const CREDIT_LEN: usize = 4 + 1 + SCOPE_LEN + 4;

/// Why the acceptor answered a hello the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// The connection is the one both sides use.
    Accepted = 0,
    /// Both sides dialed at once and the other connection wins (or one
    /// is already up): the dialer uses the connection the acceptor makes.
    Duplicate = 1,
    /// The acceptor speaks another protocol version.
    VersionMismatch = 2,
}

impl HandshakeStatus {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => HandshakeStatus::Accepted,
            1 => HandshakeStatus::Duplicate,
            2 => HandshakeStatus::VersionMismatch,
            _ => return None,
        })
    }
}

/// Which channel of which job attempt a message belongs to. Every message
/// carries it so that frames of a stale attempt can be told apart and
/// dropped, whatever the connection's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// The job.
    pub job: JobId,
    /// The job's attempt (generation).
    pub attempt: u64,
    /// The channel within the job graph.
    pub channel: ChannelId,
}

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of job {} attempt {}",
            self.channel, self.job, self.attempt
        )
    }
}

/// A hello: who is speaking which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the speaker uses.
    pub version: u16,
    /// The speaker's TaskManager id.
    pub id: TaskManagerId,
}

/// The hello of this build's protocol for `id`.
pub fn encode_hello(id: TaskManagerId) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out[6..].copy_from_slice(&id.0.to_le_bytes());
    out
}

/// Reads a hello; refuses anything that does not start with the magic.
pub fn decode_hello(b: &[u8; HELLO_LEN]) -> Result<Hello, ConnectionError> {
    if b[..4] != MAGIC {
        return Err(ConnectionError::Handshake(format!(
            "not a Floe data connection (first bytes {:02x?}, expected {:02x?})",
            &b[..4],
            MAGIC
        )));
    }
    Ok(Hello {
        version: u16::from_le_bytes([b[4], b[5]]),
        id: TaskManagerId(u128::from_le_bytes(b[6..].try_into().expect("16 bytes"))),
    })
}

/// The acceptor's reply: its hello and its verdict.
pub fn encode_reply(id: TaskManagerId, status: HandshakeStatus) -> [u8; REPLY_LEN] {
    let mut out = [0u8; REPLY_LEN];
    out[..HELLO_LEN].copy_from_slice(&encode_hello(id));
    out[HELLO_LEN] = status as u8;
    out
}

/// Reads the acceptor's reply.
pub fn decode_reply(b: &[u8; REPLY_LEN]) -> Result<(Hello, HandshakeStatus), ConnectionError> {
    let hello = decode_hello(b[..HELLO_LEN].try_into().expect("hello length"))?;
    let status = HandshakeStatus::from_byte(b[HELLO_LEN]).ok_or_else(|| {
        ConnectionError::Handshake(format!("unknown handshake status {}", b[HELLO_LEN]))
    })?;
    Ok((hello, status))
}

fn put_scope(out: &mut Vec<u8>, key: &ChannelKey) {
    out.extend_from_slice(&key.job.as_u128().to_le_bytes());
    out.extend_from_slice(&key.attempt.to_le_bytes());
    out.extend_from_slice(&key.channel.edge.to_le_bytes());
    out.extend_from_slice(&key.channel.sender.to_le_bytes());
    out.extend_from_slice(&key.channel.receiver.to_le_bytes());
}

/// Appends a data message carrying `payload` (one runtime frame) and the
/// sender's `backlog` (frames it still holds for the channel).
#[inline]
pub fn put_data(out: &mut Vec<u8>, key: &ChannelKey, backlog: u32, payload: &[u8]) {
    let len = 1 + SCOPE_LEN + 4 + payload.len();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(KIND_DATA);
    put_scope(out, key);
    out.extend_from_slice(&backlog.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends a credit announcement: the receiver has room for `credits`
/// more frames on the channel.
pub fn put_credit(out: &mut Vec<u8>, key: &ChannelKey, credits: u32) {
    out.extend_from_slice(&((1 + SCOPE_LEN + 4) as u32).to_le_bytes());
    out.push(KIND_CREDIT);
    put_scope(out, key);
    out.extend_from_slice(&credits.to_le_bytes());
}

/// One message, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A frame of a channel, with the sender's backlog.
    Data {
        /// Whose frame.
        key: ChannelKey,
        /// Frames the sender holds back for lack of credit.
        backlog: u32,
        /// The runtime's frame.
        payload: &'a [u8],
    },
    /// Room for more frames on a channel the peer receives.
    Credit {
        /// Which channel.
        key: ChannelKey,
        /// How many more frames.
        credits: u32,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn scope_at(b: &[u8]) -> ChannelKey {
    ChannelKey {
        job: JobId::from_u128(u128::from_le_bytes(b[..16].try_into().expect("16 bytes"))),
        attempt: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        channel: ChannelId {
            edge: u32_at(b, 24),
            sender: u32_at(b, 28),
            receiver: u32_at(b, 32),
        },
    }
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole message and the bytes it took.
    Message(Message<'a>, usize),
    /// The buffer holds only the first part of a message of this many
    /// bytes in all (0 while even its length is incomplete).
    Incomplete(usize),
}

/// Parses the message at the start of `buf`. Refuses lengths above
/// `max_len`, unknown kinds and bodies of the wrong size, so bad bytes end
/// the connection with a reason instead of a panic or a huge allocation.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Parsed<'_>, ConnectionError> {
    if buf.len() < 4 {
        return Ok(Parsed::Incomplete(0));
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Err(ConnectionError::Malformed("empty message".into()));
    }
    if len > max_len {
        return Err(ConnectionError::Malformed(format!(
            "message of {len} bytes exceeds the limit of {max_len}"
        )));
    }
    let total = 4 + len;
    if buf.len() < total {
        return Ok(Parsed::Incomplete(total));
    }
    let body = &buf[5..total];
    let msg = match buf[4] {
        KIND_DATA => {
            if body.len() < SCOPE_LEN + 4 {
                return Err(ConnectionError::Malformed(format!(
                    "data message of {len} bytes is shorter than its header"
                )));
            }
            Message::Data {
                key: scope_at(body),
                backlog: u32_at(body, SCOPE_LEN),
                payload: &body[SCOPE_LEN + 4..],
            }
        }
        KIND_CREDIT => {
            if body.len() != SCOPE_LEN + 4 {
                return Err(ConnectionError::Malformed(format!(
                    "credit message of {len} bytes, expected {}",
                    CREDIT_LEN - 4
                )));
            }
            Message::Credit {
                key: scope_at(body),
                credits: u32_at(body, SCOPE_LEN),
            }
        }
        kind => {
            return Err(ConnectionError::Malformed(format!(
                "unknown message kind {kind}"
            )));
        }
    };
    Ok(Parsed::Message(msg, total))
}
