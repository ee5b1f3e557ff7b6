//! The JobManager role: the gRPC endpoint TaskManagers register with, the
//! heartbeats and failure detection toward them, the REST endpoint with
//! the cluster's overview, and the gateways through which the job
//! deployment layer reaches each TaskManager.

mod gateway;
mod monitor;
mod rest;
mod service;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use floe_core::Configuration;
use floe_rest::RestServer;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use gateway::TaskManagerGateway;

use crate::config::JobManagerConfig;
use crate::error::{ClusterError, RpcError};
use crate::fence::AttemptFence;
use crate::handler::JobMasterHandler;
use crate::ids::{SessionId, TaskManagerId};
use crate::proto::job_manager_server::JobManagerServer;
use crate::registry::{RegisteredTaskManager, SlotError, TaskManagerRegistry};
use crate::rpc;
use state::JobManagerState;

/// How to start a JobManager beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct JobManagerOptions {
    /// `host:port` for the RPC endpoint, overriding `jobmanager.rpc.address`
    /// and `jobmanager.rpc.port` (the CLI's `--rpc-address`).
    pub rpc_address: Option<String>,
    /// Whether to serve the REST endpoint (`rest.address`, `rest.port`).
    pub serve_rest: bool,
    /// The job deployment layer's routes (submission, jobs) and the
    /// savepoint results they have not handed out yet (the endpoint
    /// lingers for them when stopped), served beside the cluster's.
    pub job_routes: Option<(axum::Router, floe_rest::UnfetchedResults)>,
}

/// A running JobManager role. Dropping it stops both endpoints.
pub struct JobManagerRole {
    state: Arc<JobManagerState>,
    rpc_address: SocketAddr,
    rest: Option<RestServer>,
    shutdown: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl JobManagerRole {
    /// Starts the role: binds the RPC endpoint (and the REST endpoint when
    /// asked) before returning, so a taken port is an error here.
    pub fn start(
        config: &Configuration,
        options: JobManagerOptions,
        handler: Arc<dyn JobMasterHandler>,
    ) -> Result<JobManagerRole, ClusterError> {
        let settings = JobManagerConfig::from_configuration(config)?;
        let (host, port) = match &options.rpc_address {
            Some(a) => {
                let (h, p) = rpc::split_host_port(a).ok_or_else(|| ClusterError::Address {
                    address: a.clone(),
                    reason: "expected host:port".into(),
                })?;
                (h.to_string(), p)
            }
            None => (settings.rpc_host.clone(), settings.rpc_port),
        };
        let listener = rpc::bind(&host, port)?;
        let rpc_address = listener.local_addr().map_err(ClusterError::Runtime)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("floe-jobmanager")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        let state = Arc::new(JobManagerState {
            session: SessionId::random(),
            started_at: SystemTime::now(),
            heartbeat: settings.heartbeat,
            registry: Mutex::new(TaskManagerRegistry::new()),
            fence: AttemptFence::new(),
            connections: Mutex::new(Default::default()),
            handler,
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        {
            let _guard = runtime.enter();
            let incoming = TcpIncoming::from(
                tokio::net::TcpListener::from_std(listener).map_err(ClusterError::Runtime)?,
            )
            .with_nodelay(Some(true));
            let service = JobManagerServer::new(service::JobManagerService {
                state: state.clone(),
            });
            runtime.spawn(async move {
                let served = Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the JobManager's RPC endpoint failed");
                }
            });
            monitor::spawn_failure_detector(state.clone());
        }
        let rest = if options.serve_rest {
            Some(match options.job_routes.clone() {
                Some((jobs, unfetched)) => RestServer::start_jobs_app(
                    rest::router(state.clone(), Some(jobs)),
                    unfetched,
                    &settings.rest_address,
                    settings.rest_port,
                )?,
                None => RestServer::start_app(
                    rest::router(state.clone(), None),
                    &settings.rest_address,
                    settings.rest_port,
                )?,
            })
        } else {
            None
        };
        tracing::info!(%rpc_address, session = %state.session, "JobManager started");
        Ok(JobManagerRole {
            state,
            rpc_address,
            rest,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        })
    }

    /// The RPC endpoint's address (with the chosen port when 0 was asked).
    pub fn rpc_address(&self) -> SocketAddr {
        self.rpc_address
    }

    /// The REST endpoint's address, when served.
    pub fn rest_address(&self) -> Option<SocketAddr> {
        self.rest.as_ref().map(RestServer::local_addr)
    }

    /// This JobManager process's session.
    pub fn session(&self) -> &SessionId {
        &self.state.session
    }

    /// When the role started.
    pub fn started_at(&self) -> SystemTime {
        self.state.started_at
    }

    /// The attempt fence of task events (see [`JobManagerHandle::attempts`]).
    pub fn attempts(&self) -> &AttemptFence {
        &self.state.fence
    }

    /// The TaskManagers registered now (see [`JobManagerHandle`]).
    pub fn taskmanagers(&self) -> Vec<RegisteredTaskManager> {
        self.handle().taskmanagers()
    }

    /// See [`JobManagerHandle::reserve_slots`].
    pub fn reserve_slots(&self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        self.handle().reserve_slots(id, n)
    }

    /// See [`JobManagerHandle::release_slots`].
    pub fn release_slots(&self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        self.handle().release_slots(id, n)
    }

    /// The gateway to a registered TaskManager.
    pub fn taskmanager(&self, id: &TaskManagerId) -> Option<TaskManagerGateway> {
        TaskManagerGateway::new(self.state.clone(), id.clone())
    }

    /// See [`JobManagerHandle::block_on`].
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle().block_on(future)
    }
}

impl JobManagerRole {
    /// A handle for the job deployment layer's own threads, which outlive
    /// no role: it reaches the registry, slots, gateways and the role's
    /// runtime while the role runs.
    pub fn handle(&self) -> JobManagerHandle {
        JobManagerHandle {
            state: self.state.clone(),
            runtime: self
                .runtime
                .as_ref()
                .expect("the runtime lives as long as the role")
                .handle()
                .clone(),
        }
    }
}

/// A cheap, cloneable handle on a running [`JobManagerRole`] (see
/// [`JobManagerRole::handle`]).
#[derive(Clone)]
pub struct JobManagerHandle {
    state: Arc<JobManagerState>,
    runtime: tokio::runtime::Handle,
}

impl JobManagerHandle {
    /// The TaskManagers registered now.
    pub fn taskmanagers(&self) -> Vec<RegisteredTaskManager> {
        let registry = self.state.registry.lock().expect("registry lock");
        registry.iter().cloned().collect()
    }

    /// Reserves `n` free slots of `id` (bookkeeping for the REST overview
    /// and for placement; the TaskManager is not asked).
    pub fn reserve_slots(&self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        let mut registry = self.state.registry.lock().expect("registry lock");
        registry.reserve_slots(id, n)
    }

    /// Gives back `n` slots of `id`.
    pub fn release_slots(&self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        let mut registry = self.state.registry.lock().expect("registry lock");
        registry.release_slots(id, n)
    }

    /// The gateway to a registered TaskManager.
    pub fn taskmanager(&self, id: &TaskManagerId) -> Option<TaskManagerGateway> {
        TaskManagerGateway::new(self.state.clone(), id.clone())
    }

    /// The attempt fence of task events: the job deployment layer advances
    /// it (`advance`) when it starts a job attempt, before deploying it.
    pub fn attempts(&self) -> &AttemptFence {
        &self.state.fence
    }

    /// Runs a gateway call (or any future) on the role's runtime from a
    /// plain thread. Panics when called from inside an async context, such
    /// as a handler method.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs a gateway call like [`JobManagerHandle::block_on`], giving up
    /// after `heartbeat.timeout`: a TaskManager that does not answer in
    /// that time is being declared lost (a frozen process accepts
    /// connections but never answers).
    pub fn call<T>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, RpcError>>,
    ) -> Result<T, RpcError> {
        let limit = self.state.heartbeat.timeout;
        self.runtime
            .block_on(async { tokio::time::timeout(limit, future).await })
            .unwrap_or_else(|_| {
                Err(RpcError::Unreachable {
                    peer: "TaskManager".into(),
                    message: format!(
                        "{what}: no answer within {} ms (heartbeat.timeout)",
                        limit.as_millis()
                    ),
                })
            })
    }
}

impl Drop for JobManagerRole {
    fn drop(&mut self) {
        self.rest.take();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
