//! The wire protocol between clients, proxies and servers.
//!
//! A connection opens with a 6-byte hello from the client — the magic
//! `FLQS` and the protocol version (u16, little endian) — which the server
//! echoes with its own version; a different version ends the connection
//! with an error naming both. Then each side sends frames: a u32
//! little-endian length followed by that many bytes of postcard, a
//! [`KvRequest`] from the client, a [`KvResponse`] from the server. Requests
//! carry an id and may be answered in any order, so a client keeps many in
//! flight on one connection.

use floe_runtime::QueryError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first four bytes of every connection.
pub const MAGIC: [u8; 4] = *b"FLQS";

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;

/// The largest frame either side accepts (a key or a state value larger
/// than this is refused rather than buffered). Responses may be this large;
/// requests are held to a much smaller limit by the service (see
/// [`DEFAULT_MAX_REQUEST_FRAME`]).
pub const MAX_FRAME: usize = 64 << 20;

/// The default limit on a request frame at the proxy and the server: a
/// request is a job id, a state name and a key, so 64 KiB leaves room for
/// very long keys while a peer that announces a huge frame is refused at
/// once instead of being buffered
/// (`queryable-state.max-request-size` raises it).
pub const DEFAULT_MAX_REQUEST_FRAME: usize = 64 << 10;

/// A frame's body is read in steps of at most this many bytes beyond what
/// has arrived: memory follows the bytes a peer actually sent, never the
/// length it announced.
const READ_STEP: usize = 64 << 10;

/// One query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// Chosen by the client; the response carries it back.
    pub id: u64,
    /// The job, as its 32 hexadecimal characters.
    pub job_id: String,
    /// The queryable state name.
    pub name: String,
    /// The key, postcard-encoded.
    pub key: Vec<u8>,
    /// For a server: the subtask the key was routed to (refused if it does
    /// not own the key). `None` on the proxy, which routes itself.
    pub subtask: Option<u32>,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// The request's id.
    pub id: u64,
    /// The key's state as postcard bytes, `None` when it has none.
    pub result: Result<Option<Vec<u8>>, QueryError>,
}

/// Why the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer is not a Floe queryable-state endpoint.
    #[error("the peer is not a Floe queryable-state endpoint (no FLQS hello)")]
    NotQueryableState,
    /// The peer speaks another protocol version.
    #[error("the peer speaks queryable-state protocol version {peer}, this build speaks {VERSION}")]
    Version {
        /// The peer's version.
        peer: u16,
    },
    /// A frame over the reader's limit ([`MAX_FRAME`] or the request
    /// limit).
    #[error("a frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The length the peer announced.
        len: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A frame that does not decode.
    #[error("a malformed frame: {0}")]
    Malformed(String),
}

/// The 6-byte hello.
pub fn hello() -> [u8; 6] {
    let mut h = [0u8; 6];
    h[..4].copy_from_slice(&MAGIC);
    h[4..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Reads the peer's hello and checks it.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), ProtocolError> {
    let mut h = [0u8; 6];
    r.read_exact(&mut h).await?;
    if h[..4] != MAGIC {
        return Err(ProtocolError::NotQueryableState);
    }
    let peer = u16::from_le_bytes([h[4], h[5]]);
    if peer != VERSION {
        return Err(ProtocolError::Version { peer });
    }
    Ok(())
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let body = postcard::to_extend(message, std::mem::take(out))
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    *out = body;
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads one frame of at most `limit` bytes into `buf` and decodes it;
/// `None` at a clean end of the stream (between frames).
///
/// The body is read incrementally: `buf` grows by at most [`READ_STEP`]
/// (or its own size, whichever is larger) beyond the bytes received so far,
/// so a peer that announces a large frame and sends nothing more costs a
/// small, fixed amount of memory.
pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Option<T>, ProtocolError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    let limit = limit.min(MAX_FRAME);
    if len > limit {
        return Err(ProtocolError::FrameTooLarge { len, limit });
    }
    buf.clear();
    while buf.len() < len {
        let have = buf.len();
        let step = (len - have).min(have.max(READ_STEP));
        buf.resize(have + step, 0);
        r.read_exact(&mut buf[have..]).await?;
    }
    decode(buf).map(Some)
}

/// Decodes one frame's body: all of it must be one message.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    match postcard::take_from_bytes(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(ProtocolError::Malformed(format!(
            "{} byte(s) after the message",
            rest.len()
        ))),
        Err(e) => Err(ProtocolError::Malformed(e.to_string())),
    }
}

/// Writes the bytes of whole frames.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[u8],
) -> Result<(), ProtocolError> {
    w.write_all(frames).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire format is a contract with clients built from other
    /// versions of Floe: these bytes must not change within version 1.
    #[test]
    fn frames_are_pinned() {
        assert_eq!(hello(), [b'F', b'L', b'Q', b'S', 1, 0]);
        let mut out = Vec::new();
        encode_frame(
            &KvRequest {
                id: 300,
                job_id: "ab".into(),
                name: "count".into(),
                key: vec![7],
                subtask: Some(1),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            [
                15, 0, 0, 0, // length
                0xac, 0x02, // id 300 (varint)
                2, b'a', b'b', // job id
                5, b'c', b'o', b'u', b'n', b't', // name
                1, 7, // key
                1, 1, // Some(1)
            ]
        );
        out.clear();
        encode_frame(
            &KvResponse {
                id: 1,
                result: Ok(Some(vec![42])),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [5, 0, 0, 0, 1, 0, 1, 1, 42]);
        out.clear();
        encode_frame(
            &KvResponse {
                id: 2,
                result: Err(QueryError::Disabled {
                    job_id: "ab".into(),
                }),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [6, 0, 0, 0, 2, 1, 1, 2, b'a', b'b']);
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_is_none() {
        let mut out = Vec::new();
        let response = KvResponse {
            id: 9,
            result: Ok(None),
        };
        encode_frame(&response, &mut out).unwrap();
        let mut reader = &out[..];
        let mut buf = Vec::new();
        let got: Option<KvResponse> = read_frame(&mut reader, &mut buf, MAX_FRAME).await.unwrap();
        assert_eq!(got, Some(response));
        let end: Option<KvResponse> = read_frame(&mut reader, &mut buf, MAX_FRAME).await.unwrap();
        assert_eq!(end, None);
        let mut bad = &[b'H', b'T', b'T', b'P', 1, 0][..];
        assert!(matches!(
            read_hello(&mut bad).await,
            Err(ProtocolError::NotQueryableState)
        ));
        let mut v2 = &[b'F', b'L', b'Q', b'S', 2, 0][..];
        assert!(matches!(
            read_hello(&mut v2).await,
            Err(ProtocolError::Version { peer: 2 })
        ));
    }

    /// A peer announcing a frame over the limit is refused before any of
    /// its body is read.
    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_unread() {
        let mut wire = (100_000u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[0xff; 16]);
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        let err = read_frame::<_, KvRequest>(&mut reader, &mut buf, 65_536)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::FrameTooLarge {
                    len: 100_000,
                    limit: 65_536
                }
            ),
            "{err:?}"
        );
        assert_eq!(reader.len(), 16, "the body must stay unread");
        assert_eq!(buf.capacity(), 0);
        assert!(err.to_string().contains("100000"), "{err}");
    }

    /// Memory follows the bytes that arrived, not the announced length:
    /// a 64 MiB announcement followed by 10 bytes and the end of the
    /// stream allocates one read step, not 64 MiB.
    #[tokio::test]
    async fn an_announced_length_is_not_allocated_before_the_bytes_arrive() {
        let mut wire = (MAX_FRAME as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[1; 10]);
        let mut reader = &wire[..];
        let mut buf = Vec::new();
        let err = read_frame::<_, KvResponse>(&mut reader, &mut buf, MAX_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
        assert!(buf.capacity() <= 2 * READ_STEP, "{}", buf.capacity());
    }

    /// A frame spanning many read steps arrives whole; trailing bytes in a
    /// frame are malformed.
    #[tokio::test]
    async fn large_frames_arrive_whole_and_trailing_bytes_are_refused() {
        let request = KvRequest {
            id: 1,
            job_id: "ab".into(),
            name: "n".into(),
            key: (0..1_000_000u32).map(|i| i as u8).collect(),
            subtask: None,
        };
        let mut out = Vec::new();
        encode_frame(&request, &mut out).unwrap();
        let mut reader = &out[..];
        let mut buf = Vec::new();
        let got: Option<KvRequest> = read_frame(&mut reader, &mut buf, MAX_FRAME).await.unwrap();
        assert_eq!(got, Some(request));
        // `KvResponse { id: 1, result: Ok(None) }` and one byte more.
        let mut bad = 4u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&[1, 0, 0, 9]);
        let mut reader = &bad[..];
        let err = read_frame::<_, KvResponse>(&mut reader, &mut buf, MAX_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Malformed(m) if m.contains("after the message")),
            "{err:?}"
        );
    }

    mod fuzz {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        }

        /// Reads frames from `wire` until it ends or fails; the largest
        /// buffer capacity seen.
        fn drain<T: serde::de::DeserializeOwned>(wire: &[u8], limit: usize) -> usize {
            runtime().block_on(async {
                let mut reader = wire;
                let mut buf = Vec::new();
                let mut most = 0;
                loop {
                    let r = read_frame::<_, T>(&mut reader, &mut buf, limit).await;
                    most = most.max(buf.capacity());
                    match r {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return most,
                    }
                }
            })
        }

        /// Frames whose length announces anything, then arbitrary bytes.
        fn frames() -> impl Strategy<Value = Vec<u8>> {
            vec(
                (any::<u32>(), vec(any::<u8>(), 0..300)).prop_map(|(len, body)| {
                    // Mostly lengths near the body's, sometimes anything.
                    let len = if len % 4 == 0 {
                        len
                    } else {
                        (body.len() as u32)
                            .saturating_add(len % 3)
                            .saturating_sub(1)
                    };
                    let mut f = len.to_le_bytes().to_vec();
                    f.extend(body);
                    f
                }),
                0..8,
            )
            .prop_map(|fs| fs.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary bytes never panic the decoder, and the buffer
            /// never grows beyond a small multiple of what arrived.
            #[test]
            fn arbitrary_streams_decode_or_fail_with_bounded_memory(
                wire in prop_oneof![frames(), vec(any::<u8>(), 0..2048)]
            ) {
                let bound = 4 * wire.len().max(READ_STEP);
                prop_assert!(drain::<KvRequest>(&wire, DEFAULT_MAX_REQUEST_FRAME) <= bound);
                prop_assert!(drain::<KvResponse>(&wire, MAX_FRAME) <= bound);
            }

            /// Any body decodes to a message or a `Malformed` error.
            #[test]
            fn arbitrary_bodies_are_messages_or_malformed(body in vec(any::<u8>(), 0..512)) {
                for r in [
                    decode::<KvRequest>(&body).map(|_| ()),
                    decode::<KvResponse>(&body).map(|_| ()),
                ] {
                    prop_assert!(matches!(r, Ok(()) | Err(ProtocolError::Malformed(_))));
                }
            }

            /// Valid requests survive the round trip; one flipped byte
            /// decodes to something or fails cleanly.
            #[test]
            fn requests_round_trip_and_corruption_fails_cleanly(
                id in any::<u64>(),
                name in ".{0,40}",
                key in vec(any::<u8>(), 0..100),
                subtask in proptest::option::of(any::<u32>()),
                flip in any::<(usize, u8)>(),
            ) {
                let request = KvRequest { id, job_id: "ab".into(), name, key, subtask };
                let mut wire = Vec::new();
                encode_frame(&request, &mut wire).unwrap();
                let mut reader = &wire[..];
                let mut buf = Vec::new();
                let got: Option<KvRequest> = runtime()
                    .block_on(read_frame(&mut reader, &mut buf, DEFAULT_MAX_REQUEST_FRAME))
                    .unwrap();
                prop_assert_eq!(got, Some(request));
                let at = 4 + flip.0 % (wire.len() - 4);
                wire[at] ^= flip.1 | 1;
                drain::<KvRequest>(&wire, DEFAULT_MAX_REQUEST_FRAME);
            }
        }
    }
}
