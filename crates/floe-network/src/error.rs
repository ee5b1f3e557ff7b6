//! What can go wrong on the data plane, typed for the TaskManager.

use std::net::SocketAddr;

use floe_core::JobId;
use floe_runtime::remote::ChannelId;

use crate::peer::TaskManagerId;

/// Why a data connection failed. Cloneable: one failure is reported to
/// the TaskManager and remembered by every channel it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("I/O error ({kind:?}): {message}")]
    Io {
        /// The error's kind (reset, broken pipe, timed out, ...).
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer sent bytes that are not a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer broke the flow-control contract or named a channel it
    /// has no business sending on.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The handshake failed (wrong magic, version, or status).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Another TaskManager answered at the peer's address.
    #[error("expected TaskManager {expected} but {actual} answered")]
    WrongPeer {
        /// Whom the control plane announced there.
        expected: TaskManagerId,
        /// Who answered.
        actual: TaskManagerId,
    },
    /// This TaskManager closed the connection (the control plane declared
    /// the peer lost).
    #[error("closed by this TaskManager: {0}")]
    Disconnected(String),
    /// This TaskManager's network environment shut down.
    #[error("the network environment shut down")]
    ShutDown,
}

impl From<std::io::Error> for ConnectionError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return ConnectionError::Closed;
        }
        ConnectionError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Why a call into [`crate::NetworkEnvironment`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The data port could not be bound.
    #[error("cannot bind the data port {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No connection to the peer could be made.
    #[error("cannot connect to TaskManager {peer} at {addr}: {reason}")]
    Connect {
        /// The peer.
        peer: TaskManagerId,
        /// Its data address.
        addr: SocketAddr,
        /// The cause.
        reason: ConnectionError,
    },
    /// The connection failed while the channel was being registered.
    #[error("the connection to TaskManager {peer} failed: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: TaskManagerId,
        /// The cause.
        reason: ConnectionError,
    },
    /// A newer attempt of the job was already seen: this one is fenced off.
    #[error("attempt {requested} of job {job} is stale: attempt {newest} was already seen")]
    StaleAttempt {
        /// The job.
        job: JobId,
        /// The attempt asked for.
        requested: u64,
        /// The newest attempt seen.
        newest: u64,
    },
    /// The attempt was released; its channels cannot come back.
    #[error("attempt {attempt} of job {job} was released")]
    Released {
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: u64,
    },
    /// The channel is already registered in this direction.
    #[error(
        "{channel} of job {job} attempt {attempt} is already registered with TaskManager {peer}"
    )]
    DuplicateChannel {
        /// The peer.
        peer: TaskManagerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: u64,
        /// The channel.
        channel: ChannelId,
    },
    /// A receiving channel needs room for at least one frame.
    #[error("an input channel needs a capacity of at least 1 (and at most u32::MAX), got {0}")]
    BadCapacity(usize),
    /// The environment is shutting down.
    #[error("the network environment is shut down")]
    ShutDown,
}

/// What the TaskManager hears from its data plane without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// A connection failed: every channel on it has failed, and every job
    /// attempt with a channel to `peer` must fail now.
    ConnectionLost {
        /// The peer.
        peer: TaskManagerId,
        /// The socket address of the other end.
        addr: SocketAddr,
        /// Why.
        reason: ConnectionError,
    },
    /// A connection was refused before it became a peer's (a stray
    /// client, another protocol, or an incompatible Floe).
    HandshakeFailed {
        /// The socket address of the other end.
        addr: SocketAddr,
        /// Why.
        reason: ConnectionError,
    },
}

impl std::fmt::Display for NetworkEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkEvent::ConnectionLost { peer, addr, reason } => write!(
                f,
                "data connection to TaskManager {peer} ({addr}) lost: {reason}"
            ),
            NetworkEvent::HandshakeFailed { addr, reason } => {
                write!(f, "refused a data connection from {addr}: {reason}")
            }
        }
    }
}
