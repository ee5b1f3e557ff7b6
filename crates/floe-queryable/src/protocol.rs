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
/// than this is refused rather than buffered).
pub const MAX_FRAME: usize = 64 << 20;

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
    /// A frame over [`MAX_FRAME`].
    #[error("a frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    FrameTooLarge(usize),
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
        return Err(ProtocolError::FrameTooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads one frame into `buf` and decodes it; `None` at a clean end of
/// the stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, ProtocolError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    postcard::from_bytes(buf)
        .map(Some)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))
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
        let got: Option<KvResponse> = read_frame(&mut reader, &mut buf).await.unwrap();
        assert_eq!(got, Some(response));
        let end: Option<KvResponse> = read_frame(&mut reader, &mut buf).await.unwrap();
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
}
