//! The TaskManager role: its gRPC endpoint (heartbeats, deploy, cancel,
//! commands, release), its connection to the JobManager (registration with
//! retries, heartbeats, re-registration after a loss), and the sender
//! through which its tasks report events.

mod connection;
mod events;
mod service;
mod state;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_core::Configuration;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use connection::Registered;
pub use events::TaskEventSender;

use crate::config::TaskManagerConfig;
use crate::error::ClusterError;
use crate::fence::{AttemptFence, SessionFence};
use crate::handler::{Hardware, TaskExecutorHandler};
use crate::heartbeat::Liveness;
use crate::ids::TaskManagerId;
use crate::proto::job_manager_client::JobManagerClient;
use crate::proto::task_manager_server::TaskManagerServer;
use crate::rpc;
use connection::Connection;
use state::TaskManagerState;

/// What is told about each (re-)registration.
pub type RegistrationObserver = Arc<dyn Fn(&Registered) + Send + Sync>;

/// How to start a TaskManager beyond its configuration.
#[derive(Clone)]
pub struct TaskManagerOptions {
    /// The JobManager's RPC address, `host:port`.
    pub jobmanager: String,
    /// Bind (and advertised) address, `host` or `host:port`, overriding
    /// `taskmanager.host` and `taskmanager.rpc.port` (the CLI's `--bind`).
    pub bind: Option<String>,
    /// Slots, overriding `taskmanager.numberOfTaskSlots` (`--slots`).
    pub slots: Option<u32>,
    /// The data plane's address to advertise, once it is bound; without
    /// it, `<host>:<taskmanager.data.port>` is advertised.
    pub data_address: Option<String>,
    /// Called after each successful registration (on the role's runtime).
    pub on_registered: Option<RegistrationObserver>,
}

impl TaskManagerOptions {
    /// Options for a TaskManager of the JobManager at `jobmanager`.
    pub fn new(jobmanager: impl Into<String>) -> Self {
        TaskManagerOptions {
            jobmanager: jobmanager.into(),
            bind: None,
            slots: None,
            data_address: None,
            on_registered: None,
        }
    }
}

/// A running TaskManager role. Dropping it stops its endpoint and its
/// connection to the JobManager (without cancelling anything: the process
/// is going away).
pub struct TaskManagerRole {
    state: Arc<TaskManagerState>,
    rpc_address: SocketAddr,
    events: TaskEventSender,
    failure: oneshot::Receiver<ClusterError>,
    shutdown: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The host and RPC port a TaskManager binds and advertises: `--bind`,
/// else `taskmanager.host` and `taskmanager.rpc.port`, else the local
/// address of the interface that routes to the JobManager. The data plane
/// binds the same host.
pub fn bind_address(
    settings: &TaskManagerConfig,
    options: &TaskManagerOptions,
) -> Result<(String, u16), ClusterError> {
    Ok(match &options.bind {
        Some(b) => match rpc::split_host_port(b) {
            Some((h, p)) => (h.to_string(), p),
            None => (b.clone(), settings.rpc_port),
        },
        None => (
            match &settings.host {
                Some(h) => h.clone(),
                None => route_to(rpc::resolve(&options.jobmanager)?)?.to_string(),
            },
            settings.rpc_port,
        ),
    })
}

impl TaskManagerRole {
    /// Starts the role: binds its RPC endpoint before returning, then
    /// registers with the JobManager in the background (see
    /// [`TaskManagerRole::failed`] for giving up).
    pub fn start(
        config: &Configuration,
        options: TaskManagerOptions,
        handler: Arc<dyn TaskExecutorHandler>,
    ) -> Result<TaskManagerRole, ClusterError> {
        let mut settings = TaskManagerConfig::from_configuration(config)?;
        if let Some(slots) = options.slots {
            settings.slots = slots;
        }
        let (host, port) = bind_address(&settings, &options)?;
        let listener = rpc::bind(&host, port)?;
        let bound = listener.local_addr().map_err(ClusterError::Runtime)?;
        if bound.ip().is_unspecified() {
            return Err(ClusterError::Address {
                address: rpc::join_host_port(&host, port),
                reason: "a TaskManager advertises its bind address to the JobManager: give one it can reach, not a wildcard".into(),
            });
        }
        let rpc_address = rpc::join_host_port(&bound.ip().to_string(), bound.port());
        let data_address = options
            .data_address
            .clone()
            .unwrap_or_else(|| rpc::join_host_port(&bound.ip().to_string(), settings.data_port));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("floe-taskmanager")
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        let state = Arc::new(TaskManagerState {
            id: TaskManagerId::generate(&rpc_address),
            session: SessionFence::new(),
            registration: Mutex::new(None),
            fence: AttemptFence::new(),
            deployed: Mutex::new(HashMap::new()),
            jobmanager: Mutex::new(Liveness::new(Instant::now())),
            handler,
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let (failure_tx, failure) = oneshot::channel::<ClusterError>();
        let _guard = runtime.enter();
        let incoming = TcpIncoming::from(
            tokio::net::TcpListener::from_std(listener).map_err(ClusterError::Runtime)?,
        )
        .with_nodelay(Some(true));
        let service = TaskManagerServer::new(service::TaskManagerService {
            state: state.clone(),
        });
        let server = runtime.spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the TaskManager's RPC endpoint failed");
            }
        });
        let client = JobManagerClient::new(rpc::channel(
            &options.jobmanager,
            settings.registration.max_backoff,
        )?);
        let events = TaskEventSender::new(
            state.clone(),
            client.clone(),
            options.jobmanager.clone(),
            runtime.handle().clone(),
        );
        let connection = Connection {
            state: state.clone(),
            client,
            jobmanager: options.jobmanager.clone(),
            rpc_address: rpc_address.clone(),
            data_address,
            hardware: hardware(),
            config: settings,
            on_registered: options.on_registered.unwrap_or_else(|| Arc::new(|_| {})),
        };
        runtime.spawn(async move {
            let error = connection.run().await;
            server.abort();
            let _ = failure_tx.send(error);
        });
        drop(_guard);
        tracing::info!(id = %state.id, %rpc_address, "TaskManager started");
        Ok(TaskManagerRole {
            state,
            rpc_address: bound,
            events,
            failure,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        })
    }

    /// This TaskManager's id.
    pub fn id(&self) -> &TaskManagerId {
        &self.state.id
    }

    /// Its RPC endpoint's address.
    pub fn rpc_address(&self) -> SocketAddr {
        self.rpc_address
    }

    /// Whether it is registered with a JobManager right now.
    pub fn is_registered(&self) -> bool {
        self.state.session.current().is_some()
    }

    /// The sender through which tasks report events to the JobManager.
    pub fn events(&self) -> TaskEventSender {
        self.events.clone()
    }

    /// Resolves when the role gives up (registration timed out); it never
    /// resolves while the role keeps going.
    pub async fn failed(&mut self) -> ClusterError {
        match (&mut self.failure).await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for TaskManagerRole {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The local address of the interface that routes to `target` (no packet
/// is sent: a UDP socket is only connected), which is the address the
/// JobManager can reach this TaskManager at, as Flink finds it.
fn route_to(target: SocketAddr) -> Result<IpAddr, ClusterError> {
    let err = |e: std::io::Error| ClusterError::Address {
        address: target.to_string(),
        reason: format!(
            "cannot find the local address routing to the JobManager ({e}); set taskmanager.host"
        ),
    };
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let socket = UdpSocket::bind(any).map_err(err)?;
    socket.connect(target).map_err(err)?;
    Ok(socket.local_addr().map_err(err)?.ip())
}

/// This machine, as far as the standard library and `/proc` tell.
fn hardware() -> Option<Hardware> {
    let cpu_cores = std::thread::available_parallelism().ok()?.get() as u32;
    let physical_memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    Some(Hardware {
        cpu_cores,
        physical_memory_bytes,
    })
}
