//! Who is at the other end of a data connection.

use std::fmt;
use std::net::SocketAddr;

/// The identity of a TaskManager process, exchanged in the handshake.
/// Connections are kept per id, not per address, so a peer reached both
/// by dialing and by being dialed shares one connection, and the lower id
/// decides which of two simultaneous connections survives.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskManagerId(pub u128);

impl fmt::Display for TaskManagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TaskManagerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskManagerId({self})")
    }
}

/// A TaskManager as the control plane announces it: its id and the
/// address of its data port. Both are needed: the address to dial, the id
/// to find a connection the peer may have dialed first and to check that
/// the process answering is the one expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's id.
    pub id: TaskManagerId,
    /// The peer's data port.
    pub data_addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskManager {} at {}", self.id, self.data_addr)
    }
}
