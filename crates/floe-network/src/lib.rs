//! Floe's data plane: the channels between subtasks on different
//! TaskManagers, over TCP.
//!
//! Why it looks like this:
//!
//! - **One connection per TaskManager pair**, multiplexing every channel
//!   in both directions, as Flink does: a job with a few hundred channels
//!   between two hosts must not open a few hundred sockets, and one
//!   connection lets the writer put the frames of many channels into one
//!   system call.
//! - **Credit-based flow control per channel**, as Flink's: a shared
//!   connection must never stop for one slow task, or a single
//!   back-pressured channel would stall every other channel between the
//!   two hosts (head-of-line blocking) and could deadlock barrier
//!   alignment. The receiver grants a credit per free slot of the task's
//!   local channel, so the reader thread can always hand a frame over
//!   without waiting; the sender holds frames without credit on their own
//!   channel and announces how many (its backlog). Barriers, watermarks and
//!   the end of input are ordinary frames of their channel, so they stay
//!   in order with the records, exactly as on a local channel.
//! - **Blocking std sockets, a reader and a writer thread per
//!   connection**, not an async runtime: the tasks that produce and consume
//!   frames are plain threads that block on their channels, so an executor
//!   would only add a hand-off between a task and the socket. With a
//!   handful of peers per TaskManager, two threads per peer are cheap. The
//!   writer drains a byte queue the tasks append whole messages to, so
//!   under load many frames leave in one write without a flush timer,
//!   and an idle connection sends a frame at once (`TCP_NODELAY`).
//! - **No allocation per frame in steady state**: senders copy a frame
//!   straight into the connection's queue (two reused buffers swapped with
//!   the writer), the reader parses messages in place from one large
//!   buffer, and frames held back for credit reuse their buffers.
//! - **Fencing by attempt**: every message names its job and attempt, so
//!   after a restart, frames of the old attempt still in flight on a
//!   surviving connection are dropped, and a late registration of an old
//!   attempt is refused with an error naming both attempts.
//! - **A broken connection fails every channel on it at once**, and the
//!   TaskManager hears of it ([`NetworkEvent::ConnectionLost`]) to fail the
//!   job attempt immediately instead of waiting for a heartbeat timeout.
//!
//! The runtime's half (frame encoding per record type, the typed channels,
//! the `FrameSink`/`FrameHandler`/`CreditReturn` contract) is
//! `floe_runtime::remote`; this crate only moves bytes.

#![warn(missing_docs)]

mod config;
mod connection;
mod environment;
mod error;
mod fence;
mod handshake;
mod inbound;
mod out_queue;
mod outbound;
mod peer;
pub mod wire;

pub use config::NetworkConfig;
pub use environment::NetworkEnvironment;
pub use error::{ConnectionError, NetworkError, NetworkEvent};
pub use peer::{Peer, TaskManagerId};
