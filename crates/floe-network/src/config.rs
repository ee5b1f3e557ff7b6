//! What a TaskManager may tune about its data plane.

use std::net::SocketAddr;
use std::time::Duration;

use crate::peer::TaskManagerId;

/// Settings of one [`crate::NetworkEnvironment`].
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// This TaskManager's id, sent in every handshake.
    pub id: TaskManagerId,
    /// Where the data port listens (port 0: any free port).
    pub bind: SocketAddr,
    /// How long dialing a peer may take.
    pub connect_timeout: Duration,
    /// How long a handshake may take, and how long a dialer whose
    /// connection lost a simultaneous-dial race waits for the winner.
    pub handshake_timeout: Duration,
    /// Frames a sending task may hand over beyond its credit before it
    /// blocks: they wait on their channel (the backlog announced to the
    /// receiver), so a task need not stall on every credit round trip.
    pub send_backlog_frames: usize,
    /// Largest message a peer may send; anything larger is a malformed
    /// stream, refused before allocating for it.
    pub max_message_bytes: usize,
}

impl NetworkConfig {
    /// Defaults for TaskManager `id` listening on `bind`.
    pub fn new(id: TaskManagerId, bind: SocketAddr) -> Self {
        NetworkConfig {
            id,
            bind,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            send_backlog_frames: 2,
            max_message_bytes: 64 << 20,
        }
    }
}
