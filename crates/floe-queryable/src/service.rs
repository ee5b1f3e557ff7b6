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

use floe_core::{JobId, PortRanges};
use floe_runtime::{QueryError, QueryableStateRegistry};
use floe_state::{QueryFormat, QueryValue};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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
    },
    /// The runtime thread could not start.
    #[error("cannot start the queryable-state service: {0}")]
    Start(String),
}

type Jobs = Arc<RwLock<HashMap<JobId, Arc<QueryableStateRegistry>>>>;

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
    /// running keeps its ports: one TaskManager has one proxy.)
    pub fn shared(
        address: &str,
        proxy_ports: &PortRanges,
        server_ports: &PortRanges,
    ) -> Result<Arc<Self>, QueryableServiceError> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shared.as_ref().and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(Self::start(address, proxy_ports, server_ports)?);
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
                            accept_loop(listener, role, jobs).await
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
    let mut last = String::from("no port given");
    for port in ports.ports() {
        match StdListener::bind((address, port)) {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
    }
    Err(QueryableServiceError::Bind {
        role,
        address: address.to_string(),
        key,
        ports: ports.to_string(),
        reason: last,
    })
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// Routes each query by key group.
    Proxy,
    /// Serves queries routed to one of its subtasks.
    Server,
}

async fn accept_loop(listener: TcpListener, role: Role, jobs: Jobs) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, role, jobs).await {
                        tracing::debug!(%peer, "queryable-state connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("queryable-state {role:?} accept failed: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Reads requests and hands each to its job; answers come back from the
/// task threads through a channel to the writer, in whatever order they
/// are ready, written in batches.
async fn serve_connection(stream: TcpStream, role: Role, jobs: Jobs) -> Result<(), ProtocolError> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    protocol::read_hello(&mut read).await.inspect_err(|_| {
        // Tell a peer of another version who we are before closing.
        let _ = write.try_write(&protocol::hello());
    })?;
    protocol::write_frames(&mut write, &protocol::hello()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<KvResponse>();
    let writer = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(first) = rx.recv().await {
            frames.clear();
            protocol::encode_frame(&first, &mut frames)?;
            while let Ok(more) = rx.try_recv() {
                protocol::encode_frame(&more, &mut frames)?;
            }
            protocol::write_frames(&mut write, &frames).await?;
        }
        Ok::<_, ProtocolError>(())
    });
    let mut buf = Vec::new();
    let result = loop {
        let request: KvRequest = match protocol::read_frame(&mut read, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        dispatch(request, role, &jobs, &tx);
    };
    drop(tx);
    let _ = writer.await;
    result
}

/// Routes one request to the task owning its key (or answers it at once
/// with an error).
fn dispatch(request: KvRequest, role: Role, jobs: &Jobs, tx: &mpsc::UnboundedSender<KvResponse>) {
    let id = request.id;
    let registry = request.job_id.parse::<JobId>().ok().and_then(|job| {
        jobs.read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job)
            .cloned()
    });
    let Some(registry) = registry else {
        let _ = tx.send(KvResponse {
            id,
            result: Err(QueryError::UnknownJob {
                job_id: request.job_id,
            }),
        });
        return;
    };
    let subtask = match role {
        Role::Proxy => None,
        Role::Server => match request.subtask {
            Some(s) => Some(s),
            None => {
                let _ = tx.send(KvResponse {
                    id,
                    result: Err(QueryError::Failed {
                        name: request.name,
                        reason: "a query sent to the server port must name its subtask; clients connect to the proxy port".into(),
                    }),
                });
                return;
            }
        },
    };
    let reply_tx = tx.clone();
    let name = request.name.clone();
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
            let _ = reply_tx.send(KvResponse { id, result });
        }),
    );
    if let Err(e) = submitted {
        let _ = tx.send(KvResponse { id, result: Err(e) });
    }
}
