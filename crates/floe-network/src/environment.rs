//! [`NetworkEnvironment`]: a TaskManager's data port, its connections to
//! the other TaskManagers, and the channels the runtime opens on them.
//!
//! Connections are kept per peer id. When two TaskManagers dial each other
//! at the same moment, the connection dialed by the lower id survives: the
//! higher one's hello is answered "duplicate" and its dialer waits for the
//! winner, so both ends agree without a further round trip.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use floe_core::JobId;
use floe_runtime::remote::{ChannelId, CreditReturn, FrameHandler, FrameSink};

use crate::config::NetworkConfig;
use crate::connection::{Connection, Context};
use crate::error::{ConnectionError, NetworkError, NetworkEvent};
use crate::fence::{Admission, Fences};
use crate::handshake;
use crate::outbound::NetworkSink;
use crate::peer::{Peer, TaskManagerId};
use crate::wire::{ChannelKey, HandshakeStatus};

/// Where the connection to one peer stands.
enum Slot {
    /// This TaskManager is dialing it.
    Dialing,
    /// Our dial lost a simultaneous-dial race: the peer's connection is
    /// coming, and will be accepted whoever has the lower id.
    Awaiting,
    /// Up (or failed, until replaced).
    Connected(Arc<Connection>),
}

struct Shared {
    config: NetworkConfig,
    cx: Arc<Context>,
    peers: Mutex<HashMap<TaskManagerId, Slot>>,
    peers_changed: Condvar,
    events: Receiver<NetworkEvent>,
    shut_down: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The data plane of one TaskManager process: one listening data port,
/// one TCP connection per peer TaskManager carrying every channel between
/// the two in both directions, and the fencing of job attempts.
///
/// Dropping it shuts it down: connections close (peers see them lost) and
/// its threads are joined.
pub struct NetworkEnvironment {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl NetworkEnvironment {
    /// Binds the data port and starts accepting peers.
    pub fn start(config: NetworkConfig) -> Result<Self, NetworkError> {
        let bind = config.bind;
        let listener =
            TcpListener::bind(bind).map_err(|source| NetworkError::Bind { addr: bind, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NetworkError::Bind { addr: bind, source })?;
        let (tx, rx): (Sender<NetworkEvent>, _) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            cx: Arc::new(Context {
                fences: Arc::new(Fences::default()),
                events: tx,
                max_message_bytes: config.max_message_bytes,
                send_backlog_frames: config.send_backlog_frames,
            }),
            config,
            peers: Mutex::new(HashMap::new()),
            peers_changed: Condvar::new(),
            events: rx,
            shut_down: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let me = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("floe-net-accept".into())
            .spawn(move || me.accept_loop(listener))
            .map_err(|source| NetworkError::Bind { addr: bind, source })?;
        Ok(NetworkEnvironment {
            shared,
            local_addr,
            acceptor: Some(acceptor),
        })
    }

    /// This TaskManager's id.
    pub fn id(&self) -> TaskManagerId {
        self.shared.config.id
    }

    /// The bound data port, to announce to the JobManager.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Failures the TaskManager must act on (a lost connection fails every
    /// job attempt with a channel to that peer). Every clone sees each
    /// event once, whichever clone takes it.
    pub fn events(&self) -> Receiver<NetworkEvent> {
        self.shared.events.clone()
    }

    /// Peers with a live connection (one per peer by construction).
    pub fn connected_peers(&self) -> Vec<TaskManagerId> {
        let peers = self.shared.peers.lock().expect("peer table lock");
        let mut ids: Vec<TaskManagerId> = peers
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Connected(c) if !c.is_failed()))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Registers `channel` of `job`'s `attempt` that this TaskManager
    /// receives from `peer`, with room for `capacity` frames (all granted
    /// to the sender as credit at once). `make` builds the frame handler
    /// around the credit return the receiving task must call; it is the
    /// runtime's `StreamTypeOps::remote_input`, and what it returns beside
    /// the handler (the task's input channel) is returned.
    ///
    /// An attempt newer than any registered before for the job releases
    /// the older attempts' channels on this TaskManager.
    pub fn register_input<R>(
        &self,
        job: JobId,
        attempt: u64,
        peer: &Peer,
        channel: ChannelId,
        capacity: usize,
        make: impl FnOnce(Arc<dyn CreditReturn>) -> (Box<dyn FrameHandler>, R),
    ) -> Result<R, NetworkError> {
        let capacity = u32::try_from(capacity)
            .ok()
            .filter(|c| *c > 0)
            .ok_or(NetworkError::BadCapacity(capacity))?;
        self.admit(job, attempt)?;
        let conn = self.shared.connect(peer)?;
        let key = ChannelKey {
            job,
            attempt,
            channel,
        };
        conn.register_inbound(key, capacity, make)
    }

    /// The sending end of `channel` of `job`'s `attempt` to `peer`, for
    /// the runtime's `StreamTypeOps::remote_output`. It sends only with the
    /// receiver's credit, so its first frame waits until the receiver
    /// registered the channel.
    pub fn output(
        &self,
        job: JobId,
        attempt: u64,
        peer: &Peer,
        channel: ChannelId,
    ) -> Result<Box<dyn FrameSink>, NetworkError> {
        self.admit(job, attempt)?;
        let conn = self.shared.connect(peer)?;
        let key = ChannelKey {
            job,
            attempt,
            channel,
        };
        Ok(Box::new(NetworkSink(conn.register_outbound(key)?)))
    }

    /// Drops every channel of `job`'s `attempt` (and older attempts):
    /// receiving tasks see their inputs disconnected, blocked senders
    /// return `TaskError::Cancelled`, and late frames of the attempt are
    /// dropped. The attempt cannot be registered again.
    pub fn release_job(&self, job: JobId, attempt: u64) {
        self.shared.cx.fences.release(job, attempt);
        self.shared
            .release_where(|k| k.job == job && k.attempt <= attempt);
    }

    /// Closes the connection to `peer` as failed, with `why`: for a peer
    /// the control plane declared lost (missed heartbeats) while its socket
    /// still looks open, so that writes blocked on it end and every channel
    /// to it fails now rather than at a TCP timeout.
    pub fn disconnect(&self, peer: TaskManagerId, why: &str) {
        let conn = match self.shared.lock_peers().get(&peer) {
            Some(Slot::Connected(c)) => Some(Arc::clone(c)),
            _ => None,
        };
        if let Some(c) = conn {
            c.fail(ConnectionError::Disconnected(why.to_string()));
        }
    }

    fn admit(&self, job: JobId, attempt: u64) -> Result<(), NetworkError> {
        if self.shared.shut_down.load(Ordering::Acquire) {
            return Err(NetworkError::ShutDown);
        }
        if let Admission::Newer = self.shared.cx.fences.admit(job, attempt)? {
            self.shared
                .release_where(|k| k.job == job && k.attempt < attempt);
        }
        Ok(())
    }

    /// Closes every connection and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wakes the acceptor, which sees the flag and ends.
        let _ = TcpStream::connect_timeout(&dialable(self.local_addr), Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections: Vec<Arc<Connection>> = {
            let mut peers = self.shared.peers.lock().expect("peer table lock");
            peers
                .drain()
                .filter_map(|(_, s)| match s {
                    Slot::Connected(c) => Some(c),
                    _ => None,
                })
                .collect()
        };
        self.shared.peers_changed.notify_all();
        for c in connections {
            c.fail(ConnectionError::ShutDown);
        }
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock().expect("threads lock"));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

impl Drop for NetworkEnvironment {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address this host can connect to for a listener bound to `addr`.
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

impl Shared {
    fn me(&self) -> TaskManagerId {
        self.config.id
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<TaskManagerId, Slot>> {
        self.peers.lock().expect("peer table lock")
    }

    fn keep_threads(&self, handles: Vec<JoinHandle<()>>) {
        let mut threads = self.threads.lock().expect("threads lock");
        threads.retain(|t| !t.is_finished());
        threads.extend(handles);
    }

    fn release_where(&self, matches: impl Fn(&ChannelKey) -> bool) {
        let connections: Vec<Arc<Connection>> = self
            .lock_peers()
            .values()
            .filter_map(|s| match s {
                Slot::Connected(c) => Some(Arc::clone(c)),
                _ => None,
            })
            .collect();
        for c in connections {
            c.release(&matches);
        }
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.shut_down.load(Ordering::Acquire) {
                return;
            }
            match stream {
                Ok(stream) => {
                    let me = Arc::clone(&self);
                    match std::thread::Builder::new()
                        .name("floe-net-handshake".into())
                        .spawn(move || me.accept(stream))
                    {
                        Ok(t) => self.keep_threads(vec![t]),
                        Err(e) => tracing::warn!(error = %e, "cannot start a handshake thread"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a data connection failed");
                    // E.g. out of file descriptors: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Runs the acceptor's side of a handshake and publishes the
    /// connection if it wins.
    fn accept(&self, mut stream: TcpStream) {
        let addr = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let timeout = self.config.handshake_timeout;
        let hello = match handshake::read_hello(&mut stream, self.me(), timeout) {
            Ok(hello) => hello,
            Err(reason) => {
                if !self.shut_down.load(Ordering::Acquire) {
                    tracing::warn!(%addr, %reason, "refused a data connection");
                    let _ = self
                        .cx
                        .events
                        .send(NetworkEvent::HandshakeFailed { addr, reason });
                }
                return;
            }
        };
        let peer = hello.id;
        let conn = {
            let mut peers = self.lock_peers();
            if self.shut_down.load(Ordering::Acquire) {
                return;
            }
            let wins = match peers.get(&peer) {
                None | Some(Slot::Awaiting) => peer != self.me(),
                // Both dialed: the lower id's connection survives.
                Some(Slot::Dialing) => peer < self.me(),
                Some(Slot::Connected(c)) => c.is_failed(),
            };
            if !wins {
                drop(peers);
                let _ = handshake::reply(&stream, self.me(), HandshakeStatus::Duplicate);
                return;
            }
            let conn = Connection::new(peer, stream, Arc::clone(&self.cx));
            peers.insert(peer, Slot::Connected(Arc::clone(&conn)));
            conn
        };
        self.peers_changed.notify_all();
        // Messages queued meanwhile wait for the writer, which starts
        // after the reply, so the reply is the first thing on the wire.
        let result = handshake::reply(conn.stream(), self.me(), HandshakeStatus::Accepted)
            .and_then(|()| conn.start().map_err(ConnectionError::from));
        match result {
            Ok(threads) => self.keep_threads(threads),
            Err(reason) => conn.fail(reason),
        }
    }

    /// The live connection to `peer`, dialing it if there is none.
    fn connect(&self, peer: &Peer) -> Result<Arc<Connection>, NetworkError> {
        let connect_error = |reason| NetworkError::Connect {
            peer: peer.id,
            addr: peer.data_addr,
            reason,
        };
        if peer.id == self.me() {
            return Err(connect_error(ConnectionError::Handshake(
                "a TaskManager does not connect to itself: its own channels are local".into(),
            )));
        }
        let deadline = Instant::now() + self.config.connect_timeout + self.config.handshake_timeout;
        let mut peers = self.lock_peers();
        loop {
            if self.shut_down.load(Ordering::Acquire) {
                return Err(NetworkError::ShutDown);
            }
            match peers.get(&peer.id) {
                Some(Slot::Connected(c)) if !c.is_failed() => return Ok(Arc::clone(c)),
                Some(Slot::Dialing | Slot::Awaiting) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(connect_error(ConnectionError::Handshake(
                            "timed out waiting for another thread's connection".into(),
                        )));
                    }
                    peers = self
                        .peers_changed
                        .wait_timeout(peers, deadline - now)
                        .expect("peer table lock")
                        .0;
                }
                _ => {
                    peers.insert(peer.id, Slot::Dialing);
                    break;
                }
            }
        }
        drop(peers);
        let dialed = handshake::dial(
            peer.data_addr,
            self.me(),
            peer.id,
            self.config.connect_timeout,
            self.config.handshake_timeout,
        );
        let mut peers = self.lock_peers();
        let result = match dialed {
            Err(reason) => match peers.get(&peer.id) {
                // The peer's own connection arrived meanwhile and won.
                Some(Slot::Connected(c)) if !c.is_failed() => Ok(Arc::clone(c)),
                Some(Slot::Dialing) => {
                    peers.remove(&peer.id);
                    Err(connect_error(reason))
                }
                _ => Err(connect_error(reason)),
            },
            Ok(_) if self.shut_down.load(Ordering::Acquire) => {
                peers.remove(&peer.id);
                Err(NetworkError::ShutDown)
            }
            Ok((stream, HandshakeStatus::Accepted)) => match peers.get(&peer.id) {
                // Defensive: an accepted connection already won.
                Some(Slot::Connected(c)) if !c.is_failed() => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    Ok(Arc::clone(c))
                }
                _ => {
                    let conn = Connection::new(peer.id, stream, Arc::clone(&self.cx));
                    peers.insert(peer.id, Slot::Connected(Arc::clone(&conn)));
                    drop(peers);
                    self.peers_changed.notify_all();
                    match conn.start() {
                        Ok(threads) => self.keep_threads(threads),
                        Err(e) => conn.fail(e.into()),
                    }
                    return if conn.is_failed() {
                        Err(connect_error(ConnectionError::Closed))
                    } else {
                        Ok(conn)
                    };
                }
            },
            Ok((_, _)) => {
                // The peer's connection wins: wait for it to arrive.
                if matches!(peers.get(&peer.id), Some(Slot::Dialing)) {
                    peers.insert(peer.id, Slot::Awaiting);
                }
                let deadline = Instant::now() + self.config.handshake_timeout;
                loop {
                    match peers.get(&peer.id) {
                        Some(Slot::Connected(c)) if !c.is_failed() => break Ok(Arc::clone(c)),
                        Some(Slot::Awaiting) if Instant::now() < deadline => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            peers = self
                                .peers_changed
                                .wait_timeout(peers, left)
                                .expect("peer table lock")
                                .0;
                        }
                        _ => {
                            if matches!(peers.get(&peer.id), Some(Slot::Awaiting)) {
                                peers.remove(&peer.id);
                            }
                            break Err(connect_error(ConnectionError::Handshake(
                                "the peer kept its own connection, which never arrived".into(),
                            )));
                        }
                    }
                }
            }
        };
        drop(peers);
        self.peers_changed.notify_all();
        result
    }
}
