//! One TCP connection to a peer TaskManager, carrying every channel
//! between the two in both directions.
//!
//! Each connection has a reader thread and a writer thread. The reader
//! parses messages in place from a large buffer and hands each data frame
//! to its channel's handler, which never blocks (credits guarantee room),
//! so one slow task cannot stop frames for the others. The writer drains
//! the connection's [`OutQueue`]. A failure of either, or bad bytes from
//! the peer, fails the whole connection: every channel on it ends, and the
//! TaskManager hears of it once.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crossbeam_channel::Sender;
use floe_runtime::remote::{CreditReturn, FrameError, FrameHandler};

use crate::error::{ConnectionError, NetworkError, NetworkEvent};
use crate::fence::Fences;
use crate::inbound::{InboundChannel, InboundCredits};
use crate::out_queue::OutQueue;
use crate::outbound::{Closed, OutboundChannel};
use crate::peer::TaskManagerId;
use crate::wire::{self, ChannelKey, Message, Parsed};

/// Initial size of a reader's buffer; it grows for larger messages.
const READ_BUFFER: usize = 1 << 20;
/// Free room below which the reader moves a partial message to the front.
const MIN_READ_ROOM: usize = 64 << 10;

/// What a connection needs from its environment.
pub(crate) struct Context {
    pub(crate) fences: Arc<Fences>,
    pub(crate) events: Sender<NetworkEvent>,
    pub(crate) max_message_bytes: usize,
    pub(crate) send_backlog_frames: usize,
}

/// A live (or failed) connection to one peer.
pub(crate) struct Connection {
    pub(crate) peer: TaskManagerId,
    remote: SocketAddr,
    stream: TcpStream,
    out: Arc<OutQueue>,
    inbound: Mutex<HashMap<ChannelKey, InboundChannel>>,
    outbound: Mutex<HashMap<ChannelKey, Arc<OutboundChannel>>>,
    failure: OnceLock<ConnectionError>,
    cx: Arc<Context>,
}

impl Connection {
    /// Wraps a stream whose handshake is done; [`Connection::start`] runs it.
    pub(crate) fn new(peer: TaskManagerId, stream: TcpStream, cx: Arc<Context>) -> Arc<Self> {
        let remote = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Arc::new(Connection {
            peer,
            remote,
            stream,
            out: Arc::new(OutQueue::new()),
            inbound: Mutex::new(HashMap::new()),
            outbound: Mutex::new(HashMap::new()),
            failure: OnceLock::new(),
            cx,
        })
    }

    /// Starts the reader and writer threads.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let reader = self.stream.try_clone()?;
        let writer = self.stream.try_clone()?;
        let name = |role: &str| format!("floe-net-{role}-{:08x}", self.peer.0 as u32);
        let me = Arc::clone(self);
        let w = std::thread::Builder::new()
            .name(name("write"))
            .spawn(move || me.write_loop(writer))?;
        let me = Arc::clone(self);
        let r = std::thread::Builder::new()
            .name(name("read"))
            .spawn(move || me.read_loop(reader))?;
        Ok(vec![w, r])
    }

    /// The socket (for the handshake's reply before the threads start).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// True once the connection failed.
    pub(crate) fn is_failed(&self) -> bool {
        self.failure.get().is_some()
    }

    fn lost(&self) -> NetworkError {
        NetworkError::ConnectionLost {
            peer: self.peer,
            reason: self
                .failure
                .get()
                .cloned()
                .unwrap_or(ConnectionError::Closed),
        }
    }

    /// Registers a channel this TaskManager receives on, granting its
    /// whole `capacity` as credit. `make` builds the handler around the
    /// credit return (the runtime's `remote_input`).
    pub(crate) fn register_inbound<R>(
        &self,
        key: ChannelKey,
        capacity: u32,
        make: impl FnOnce(Arc<dyn CreditReturn>) -> (Box<dyn FrameHandler>, R),
    ) -> Result<R, NetworkError> {
        let credits = InboundCredits::new(key, capacity, Arc::clone(&self.out));
        let (handler, made) = make(Arc::clone(&credits) as Arc<dyn CreditReturn>);
        {
            let mut map = lock(&self.inbound);
            if self.is_failed() {
                return Err(self.lost());
            }
            if map.contains_key(&key) {
                return Err(duplicate(self.peer, key));
            }
            map.insert(
                key,
                InboundChannel {
                    credits: Arc::clone(&credits),
                    handler: Some(handler),
                },
            );
        }
        credits.grant_initial(capacity);
        Ok(made)
    }

    /// The channel this TaskManager sends on, with any credit that arrived
    /// before it was asked for.
    pub(crate) fn register_outbound(
        &self,
        key: ChannelKey,
    ) -> Result<Arc<OutboundChannel>, NetworkError> {
        let ch = {
            let mut map = lock(&self.outbound);
            if self.is_failed() {
                return Err(self.lost());
            }
            Arc::clone(map.entry(key).or_insert_with(|| {
                OutboundChannel::new(key, Arc::clone(&self.out), self.cx.send_backlog_frames)
            }))
        };
        if !ch.attach() {
            return Err(duplicate(self.peer, key));
        }
        Ok(ch)
    }

    /// Drops every channel whose key matches: handlers go (the receiving
    /// tasks see their input disconnected), senders fail.
    pub(crate) fn release(&self, matches: impl Fn(&ChannelKey) -> bool) {
        let inbound: Vec<InboundChannel> = {
            let mut map = lock(&self.inbound);
            let keys: Vec<ChannelKey> = map.keys().filter(|k| matches(k)).copied().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for ch in &inbound {
            ch.credits.release();
        }
        drop(inbound);
        let outbound: Vec<Arc<OutboundChannel>> = {
            let mut map = lock(&self.outbound);
            let keys: Vec<ChannelKey> = map.keys().filter(|k| matches(k)).copied().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for ch in outbound {
            ch.close(Closed::Released);
        }
    }

    /// Fails the connection and every channel on it (first reason wins),
    /// and tells the TaskManager unless it is shutting down itself.
    pub(crate) fn fail(&self, reason: ConnectionError) {
        if self.failure.set(reason.clone()).is_err() {
            return;
        }
        self.out.close();
        let _ = self.stream.shutdown(Shutdown::Both);
        let inbound = std::mem::take(&mut *lock(&self.inbound));
        for ch in inbound.values() {
            ch.credits.release();
        }
        drop(inbound);
        let outbound = std::mem::take(&mut *lock(&self.outbound));
        for ch in outbound.values() {
            ch.close(Closed::ConnectionLost(reason.clone()));
        }
        if reason != ConnectionError::ShutDown {
            tracing::warn!(peer = %self.peer, addr = %self.remote, %reason, "data connection lost");
            let _ = self.cx.events.send(NetworkEvent::ConnectionLost {
                peer: self.peer,
                addr: self.remote,
                reason,
            });
        }
    }

    fn write_loop(&self, mut stream: TcpStream) {
        let mut batch = Vec::with_capacity(256 << 10);
        while self.out.take(&mut batch) {
            if let Err(e) = stream.write_all(&batch) {
                self.fail(e.into());
                return;
            }
            batch.clear();
        }
    }

    fn read_loop(&self, mut stream: TcpStream) {
        // A handler that panics (a bug: decoding returns errors) must
        // still fail the connection, or its peer would look alive.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.read_messages(&mut stream)
        }));
        let reason = match read {
            Ok(Err(reason)) => reason,
            Err(panic) => ConnectionError::Protocol(format!(
                "a frame handler panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)")
            )),
        };
        self.fail(reason);
    }

    /// Reads and dispatches messages until the stream fails or goes bad.
    fn read_messages(
        &self,
        stream: &mut TcpStream,
    ) -> Result<std::convert::Infallible, ConnectionError> {
        let mut buf = vec![0u8; READ_BUFFER];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            let mut need = 0;
            if start < end {
                let mut inbound = lock(&self.inbound);
                loop {
                    match wire::parse(&buf[start..end], self.cx.max_message_bytes)? {
                        Parsed::Message(msg, used) => {
                            self.dispatch(&mut inbound, msg)?;
                            start += used;
                        }
                        Parsed::Incomplete(total) => {
                            need = total;
                            break;
                        }
                    }
                }
            }
            if start == end {
                (start, end) = (0, 0);
            } else if buf.len() - end < MIN_READ_ROOM || start + need > buf.len() {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
                if need > buf.len() {
                    buf.resize(need, 0);
                }
            }
            match stream.read(&mut buf[end..]) {
                Ok(0) => return Err(ConnectionError::Closed),
                Ok(n) => end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn dispatch(
        &self,
        inbound: &mut HashMap<ChannelKey, InboundChannel>,
        msg: Message<'_>,
    ) -> Result<(), ConnectionError> {
        match msg {
            Message::Data {
                key,
                backlog,
                payload,
            } => match inbound.get_mut(&key) {
                Some(ch) => {
                    ch.credits.on_frame(backlog)?;
                    let Some(handler) = &mut ch.handler else {
                        return Ok(());
                    };
                    match handler.deliver(payload) {
                        Ok(()) => {}
                        // The task ended or failed; its late frames go nowhere.
                        Err(FrameError::Closed) => ch.handler = None,
                        Err(FrameError::Overflow) => {
                            return Err(ConnectionError::Protocol(format!(
                                "more frames than the capacity of {key}"
                            )));
                        }
                        Err(FrameError::Malformed(why)) => {
                            return Err(ConnectionError::Malformed(format!(
                                "frame of {key}: {why}"
                            )));
                        }
                    }
                }
                None if self.cx.fences.is_live(key.job, key.attempt) => {
                    return Err(ConnectionError::Protocol(format!(
                        "data for {key}, which was never registered here"
                    )));
                }
                // A stale or released attempt: dropped.
                None => {}
            },
            Message::Credit { key, credits } => {
                if !self.cx.fences.is_live(key.job, key.attempt) {
                    return Ok(());
                }
                let ch = {
                    let mut map = lock(&self.outbound);
                    Arc::clone(map.entry(key).or_insert_with(|| {
                        OutboundChannel::new(
                            key,
                            Arc::clone(&self.out),
                            self.cx.send_backlog_frames,
                        )
                    }))
                };
                ch.grant(credits);
            }
        }
        Ok(())
    }
}

/// Locks a channel table, surviving a panic of the thread that held it
/// (the tables stay consistent: every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duplicate(peer: TaskManagerId, key: ChannelKey) -> NetworkError {
    NetworkError::DuplicateChannel {
        peer,
        job: key.job,
        attempt: key.attempt,
        channel: key.channel,
    }
}
