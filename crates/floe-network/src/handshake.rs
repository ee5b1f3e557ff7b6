//! Opening a data connection: who is speaking, in which protocol version.
//!
//! The socket I/O of the handshake only; which of two simultaneous
//! connections survives is decided by the environment's peer table.
//! Reads use `read_exact` on the bare stream (no buffering), so the first
//! messages after the handshake stay in the socket for the reader thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::ConnectionError;
use crate::peer::TaskManagerId;
use crate::wire::{self, HandshakeStatus, Hello, PROTOCOL_VERSION};

/// Dials `addr`, says hello as `me` and reads the acceptor's verdict,
/// checking that the acceptor is `expected`.
pub(crate) fn dial(
    addr: SocketAddr,
    me: TaskManagerId,
    expected: TaskManagerId,
    connect_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<(TcpStream, HandshakeStatus), ConnectionError> {
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    configure(&stream, handshake_timeout)?;
    stream.write_all(&wire::encode_hello(me))?;
    let mut reply = [0u8; wire::REPLY_LEN];
    stream.read_exact(&mut reply).map_err(|e| {
        ConnectionError::Handshake(format!("no reply to the hello from {addr}: {e}"))
    })?;
    let (hello, status) = wire::decode_reply(&reply)?;
    if status == HandshakeStatus::VersionMismatch || hello.version != PROTOCOL_VERSION {
        return Err(version_mismatch(hello.version));
    }
    if hello.id != expected {
        return Err(ConnectionError::WrongPeer {
            expected,
            actual: hello.id,
        });
    }
    stream.set_read_timeout(None)?;
    Ok((stream, status))
}

/// Reads the dialer's hello on an accepted stream. A dialer of another
/// version is told so before the connection is closed.
pub(crate) fn read_hello(
    stream: &mut TcpStream,
    me: TaskManagerId,
    handshake_timeout: Duration,
) -> Result<Hello, ConnectionError> {
    configure(stream, handshake_timeout)?;
    let mut hello = [0u8; wire::HELLO_LEN];
    stream.read_exact(&mut hello)?;
    let hello = wire::decode_hello(&hello)?;
    if hello.version != PROTOCOL_VERSION {
        let _ = stream.write_all(&wire::encode_reply(me, HandshakeStatus::VersionMismatch));
        return Err(version_mismatch(hello.version));
    }
    Ok(hello)
}

/// Sends the acceptor's verdict and leaves the stream ready for messages.
pub(crate) fn reply(
    mut stream: &TcpStream,
    me: TaskManagerId,
    status: HandshakeStatus,
) -> Result<(), ConnectionError> {
    stream.write_all(&wire::encode_reply(me, status))?;
    stream.set_read_timeout(None)?;
    Ok(())
}

fn configure(stream: &TcpStream, handshake_timeout: Duration) -> std::io::Result<()> {
    // Frames are batched by the writer; Nagle's delay would only add
    // latency to barriers and the last frames before a pause.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(handshake_timeout))?;
    stream.set_write_timeout(None)
}

fn version_mismatch(theirs: u16) -> ConnectionError {
    ConnectionError::Handshake(format!(
        "protocol version {theirs} is not this TaskManager's version {PROTOCOL_VERSION}"
    ))
}
