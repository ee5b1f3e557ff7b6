//! The queryable-state endpoints of this process (its TaskManager role).
//!
//! One [`QueryableStateService`] per process, started by the first job that
//! enables queryable state and shared by every later one: a proxy port
//! (clients connect here; each query is routed by key group) and a server
//! port (queries already routed to a subtask). Both run on one small
//! dedicated tokio runtime thread, so queries never borrow a task thread
//! except for the lookup itself, which the owning task performs between
//! two batches.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use floe_core::{JobId, PortRanges};
use floe_runtime::{QueryError, QueryableStateRegistry};
use floe_state::{QueryFormat, QueryValue};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::protocol::{self, KvRequest, KvResponse, ProtocolError};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum QueryableServiceError {
    /// No port of the configured ranges could be bound.
    #[error(
        "cannot bind the queryable-state {role} on {address} to any port of {key}={ports}: {reason}"
    )]
    Bind {
        /// `proxy` or `server`.
        role: &'static str,
        /// The address.
        address: String,
        /// The configuration key.
        key: &'static str,
        /// The ports tried.
        ports: String,
        /// The last bind error.
        reason: String,
        /// Its kind: a port in use (or reserved) is the ports key's fault,
        /// anything else the address's.
        kind: std::io::ErrorKind,
    },
    /// The runtime thread could not start.
    #[error("cannot start the queryable-state service: {0}")]
    Start(String),
}

type Jobs = Arc<RwLock<HashMap<JobId, Arc<QueryableStateRegistry>>>>;

/// What one peer may cost the service: the ports face the network, so no
/// peer may make it buffer more than it sent or hold resources forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Connections each port (proxy, server) serves at once; further ones
    /// are closed right after they are accepted
    /// (`queryable-state.max-connections`).
    pub max_connections: usize,
    /// The largest request frame accepted; a peer announcing a larger one
    /// is disconnected before its body is read
    /// (`queryable-state.max-request-size`).
    pub max_request_size: usize,
    /// How long a connection may go without completing a frame (its hello
    /// included) before it is closed (`queryable-state.idle-timeout`).
    pub idle_timeout: Duration,
}

/// Default of [`ServiceLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default of [`ServiceLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Queries one connection may have in flight: beyond this the service
/// stops reading from it until answers have been written, so a client that
/// sends without reading cannot make answers pile up in memory.
const MAX_IN_FLIGHT: usize = 1024;

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_request_size: protocol::DEFAULT_MAX_REQUEST_FRAME,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// This process's queryable-state proxy and server.
pub struct QueryableStateService {
    proxy: SocketAddr,
    server: SocketAddr,
    jobs: Jobs,
    /// Stops the runtime thread (and closes both ports) when dropped.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for QueryableStateService {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// Keeps a job reachable through the service; dropping it removes the job
/// (queries then get "unknown job").
pub struct JobRegistration {
    job_id: JobId,
    jobs: Jobs,
}

impl Drop for JobRegistration {
    fn drop(&mut self) {
        self.jobs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.job_id);
    }
}

/// The running service, if any (it lives as long as some job holds it).
static SHARED: Mutex<Option<Weak<QueryableStateService>>> = Mutex::new(None);

impl QueryableStateService {
    /// The process's service: the running one, or a new one bound on
    /// `address` to the first free port of each range. (A service already
    /// running keeps its ports and limits: one TaskManager has one proxy.)
    pub fn shared(
        address: &str,
        proxy_ports: &PortRanges,
        server_ports: &PortRanges,
        limits: ServiceLimits,
    ) -> Result<Arc<Self>, QueryableServiceError> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shared.as_ref().and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(Self::start(address, proxy_ports, server_ports, limits)?);
        *shared = Some(Arc::downgrade(&s));
        Ok(s)
    }

    /// The process's service, if one runs.
    pub fn running() -> Option<Arc<Self>> {
        SHARED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Starts a service of its own (tests and benchmarks; jobs use
    /// [`QueryableStateService::shared`]).
    pub fn start(
        address: &str,
        proxy_ports: &PortRanges,
        server_ports: &PortRanges,
        limits: ServiceLimits,
    ) -> Result<Self, QueryableServiceError> {
        let proxy = bind(
            "proxy",
            address,
            floe_core::config::options::QUERYABLE_STATE_PROXY_PORTS.key,
            proxy_ports,
        )?;
        let server = bind(
            "server",
            address,
            floe_core::config::options::QUERYABLE_STATE_SERVER_PORTS.key,
            server_ports,
        )?;
        let addrs = (
            proxy
                .local_addr()
                .map_err(|e| QueryableServiceError::Start(e.to_string()))?,
            server
                .local_addr()
                .map_err(|e| QueryableServiceError::Start(e.to_string()))?,
        );
        let jobs: Jobs = Arc::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| QueryableServiceError::Start(e.to_string()))?;
        let serve_jobs = jobs.clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("queryable-state".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let accept = |std: StdListener, role: Role| {
                        let jobs = serve_jobs.clone();
                        async move {
                            let listener = match std
                                .set_nonblocking(true)
                                .and_then(|_| TcpListener::from_std(std))
                            {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::error!("queryable-state {role:?} cannot listen: {e}");
                                    return;
                                }
                            };
                            accept_loop(listener, role, jobs, limits).await
                        }
                    };
                    let proxy = tokio::spawn(accept(proxy, Role::Proxy));
                    let server = tokio::spawn(accept(server, Role::Server));
                    // The service ends when dropped (with the last job
                    // holding it).
                    let _ = stopped.await;
                    proxy.abort();
                    server.abort();
                })
            })
            .map_err(|e| QueryableServiceError::Start(e.to_string()))?;
        tracing::info!(proxy = %addrs.0, server = %addrs.1, "queryable state served");
        Ok(QueryableStateService {
            proxy: addrs.0,
            server: addrs.1,
            jobs,
            shutdown: Some(shutdown),
        })
    }

    /// Where clients connect.
    pub fn proxy_address(&self) -> SocketAddr {
        self.proxy
    }

    /// Where already-routed queries go.
    pub fn server_address(&self) -> SocketAddr {
        self.server
    }

    /// Makes a job's queryable states reachable until the registration is
    /// dropped.
    pub fn register(&self, registry: Arc<QueryableStateRegistry>) -> JobRegistration {
        let job_id = registry.job_id();
        self.jobs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id, registry);
        JobRegistration {
            job_id,
            jobs: self.jobs.clone(),
        }
    }
}

/// Binds the first free port of `ports` on `address`.
fn bind(
    role: &'static str,
    address: &str,
    key: &'static str,
    ports: &PortRanges,
) -> Result<StdListener, QueryableServiceError> {
    let mut last = (
        String::from("no port given"),
        std::io::ErrorKind::InvalidInput,
    );
    for port in ports.ports() {
        match StdListener::bind((address, port)) {
            Ok(l) => return Ok(l),
            Err(e) => last = (e.to_string(), e.kind()),
        }
    }
    Err(QueryableServiceError::Bind {
        role,
        address: address.to_string(),
        key,
        ports: ports.to_string(),
        reason: last.0,
        kind: last.1,
    })
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// Routes each query by key group.
    Proxy,
    /// Serves queries routed to one of its subtasks.
    Server,
}

async fn accept_loop(listener: TcpListener, role: Role, jobs: Jobs, limits: ServiceLimits) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Refusals are logged at most every ten seconds, with their count, so
    // a flood of connections cannot flood the log too.
    let (mut refused, mut last_warning) = (0u64, None::<Instant>);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    // Closing at once is the refusal: the client sees the
                    // connection end before the hello.
                    drop(stream);
                    refused += 1;
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(
                            "queryable-state {role:?}: refused {refused} connection(s) (latest from {peer}): {} are open, the limit of queryable-state.max-connections",
                            limits.max_connections
                        );
                        refused = 0;
                        last_warning = Some(Instant::now());
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, role, jobs, limits).await {
                        tracing::debug!(%peer, "queryable-state connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("queryable-state {role:?} accept failed: {e}");
                // Out of file descriptors, typically: give connections
                // time to close instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `what` within the idle timeout, else an error saying so.
async fn within<T>(
    limits: &ServiceLimits,
    what: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(limits.idle_timeout, what)
        .await
        .unwrap_or_else(|_| {
            Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete frame within {:?} (queryable-state.idle-timeout)",
                    limits.idle_timeout
                ),
            )))
        })
}

/// Reads requests and hands each to its job; answers come back from the
/// task threads through a channel to the writer, in whatever order they
/// are ready, written in batches. Each answer carries a permit of the
/// connection's in-flight budget, returned once it is written.
async fn serve_connection(
    stream: TcpStream,
    role: Role,
    jobs: Jobs,
    limits: ServiceLimits,
) -> Result<(), ProtocolError> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    within(&limits, protocol::read_hello(&mut read))
        .await
        .inspect_err(|_| {
            // Tell a peer of another version who we are before closing.
            let _ = write.try_write(&protocol::hello());
        })?;
    protocol::write_frames(&mut write, &protocol::hello()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let mut writer = tokio::spawn(async move {
        let mut frames = Vec::new();
        let mut permits = Vec::new();
        while let Some((first, permit)) = rx.recv().await {
            frames.clear();
            protocol::encode_frame(&first, &mut frames)?;
            permits.push(permit);
            while let Ok((more, permit)) = rx.try_recv() {
                protocol::encode_frame(&more, &mut frames)?;
                permits.push(permit);
            }
            protocol::write_frames(&mut write, &frames).await?;
            permits.clear();
        }
        Ok::<_, ProtocolError>(())
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = Vec::new();
    let result = loop {
        let request: KvRequest = match within(
            &limits,
            protocol::read_frame(&mut read, &mut buf, limits.max_request_size),
        )
        .await
        {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // A client that sends without reading its answers waits here once
        // its budget is spent, and is closed if it reads nothing for the
        // idle timeout.
        let permit = within(&limits, async {
            in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ProtocolError::Malformed(e.to_string()))
        })
        .await;
        match permit {
            Ok(permit) => dispatch(request, role, &jobs, &tx, permit),
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    // Answers still due are written, unless the peer stopped reading.
    if tokio::time::timeout(limits.idle_timeout, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    result
}

/// An answer on its way to the writer, with its in-flight permit.
type Answer = (KvResponse, OwnedSemaphorePermit);

/// Routes one request to the task owning its key (or answers it at once
/// with an error).
fn dispatch(
    request: KvRequest,
    role: Role,
    jobs: &Jobs,
    tx: &mpsc::UnboundedSender<Answer>,
    permit: OwnedSemaphorePermit,
) {
    let id = request.id;
    let registry = request.job_id.parse::<JobId>().ok().and_then(|job| {
        jobs.read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job)
            .cloned()
    });
    let Some(registry) = registry else {
        let _ = tx.send((
            KvResponse {
                id,
                result: Err(QueryError::UnknownJob {
                    job_id: request.job_id,
                }),
            },
            permit,
        ));
        return;
    };
    let subtask = match role {
        Role::Proxy => None,
        Role::Server => match request.subtask {
            Some(s) => Some(s),
            None => {
                let _ = tx.send((
                    KvResponse {
                        id,
                        result: Err(QueryError::Failed {
                            name: request.name,
                            reason: "a query sent to the server port must name its subtask; clients connect to the proxy port".into(),
                        }),
                    },
                    permit,
                ));
                return;
            }
        },
    };
    let reply_tx = tx.clone();
    let name = request.name.clone();
    // The permit goes with the callback; a query refused below takes it
    // back through `slot`.
    let slot = Arc::new(Mutex::new(Some(permit)));
    let reply_slot = slot.clone();
    let submitted = registry.submit(
        &request.name,
        request.key,
        QueryFormat::Postcard,
        subtask,
        Box::new(move |result| {
            let result = result.and_then(|value| match value {
                None => Ok(None),
                Some(QueryValue::Postcard(bytes)) => Ok(Some(bytes)),
                Some(QueryValue::Json(_)) => Err(QueryError::Failed {
                    name,
                    reason: "the task answered in JSON instead of postcard".into(),
                }),
            });
            let permit = reply_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(permit) = permit {
                let _ = reply_tx.send((KvResponse { id, result }, permit));
            }
        }),
    );
    if let Err(e) = submitted {
        let permit = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(permit) = permit {
            let _ = tx.send((KvResponse { id, result: Err(e) }, permit));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use super::*;
    use crate::client::{QueryClientError, QueryableStateClient};

    fn service(limits: ServiceLimits) -> QueryableStateService {
        let any = PortRanges(vec![(0, 0)]);
        QueryableStateService::start("127.0.0.1", &any, &any, limits).unwrap()
    }

    /// A raw connection that has said hello and read the answer.
    fn greeted(addr: SocketAddr) -> StdStream {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&protocol::hello()).unwrap();
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(hello, protocol::hello());
        s
    }

    /// Whether a query is answered (an unknown job's error is an answer).
    fn answered(addr: SocketAddr) -> Result<(), QueryClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = QueryableStateClient::new("127.0.0.1", addr.port());
        match rt.block_on(client.get_kv_state::<u64, u64>(JobId::from_u128(9), "n", &1)) {
            Err(QueryClientError::Query(QueryError::UnknownJob { .. })) => Ok(()),
            Err(e) => Err(e),
            Ok(v) => panic!("an answer for a job that does not exist: {v:?}"),
        }
    }

    #[test]
    fn connections_over_the_limit_are_closed_and_slots_free_up() {
        let s = service(ServiceLimits {
            max_connections: 3,
            ..ServiceLimits::default()
        });
        for addr in [s.proxy_address(), s.server_address()] {
            let held: Vec<_> = (0..3).map(|_| greeted(addr)).collect();
            // The fourth is closed before any hello; the client says why.
            let err = answered(addr).unwrap_err().to_string();
            assert!(err.contains("queryable-state.max-connections"), "{err}");
            drop(held);
            // Closed connections give their slots back.
            let deadline = Instant::now() + Duration::from_secs(30);
            while answered(addr).is_err() {
                assert!(Instant::now() < deadline, "no slot was freed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn connections_that_complete_no_frame_in_time_are_closed() {
        let s = service(ServiceLimits {
            idle_timeout: Duration::from_millis(200),
            ..ServiceLimits::default()
        });
        let addr = s.proxy_address();
        // Silent after the hello; a frame started and never finished; no
        // hello at all: each is closed by the service (the read ends).
        let mut silent = greeted(addr);
        let mut partial = greeted(addr);
        partial.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        let mut mute = StdStream::connect(addr).unwrap();
        mute.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        for s in [&mut silent, &mut partial, &mut mute] {
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
        // Active clients are served.
        answered(addr).unwrap();
    }

    #[test]
    fn a_request_over_the_request_limit_ends_the_connection_unread() {
        let s = service(ServiceLimits {
            max_request_size: 1024,
            ..ServiceLimits::default()
        });
        let addr = s.proxy_address();
        let mut c = greeted(addr);
        c.write_all(&2000u32.to_le_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
        // A request within the limit is answered.
        answered(addr).unwrap();
    }
}
