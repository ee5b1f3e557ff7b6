//! `floe jobmanager` and `floe taskmanager`: start a role with this
//! binary's jobs (the examples), print where it is, serve until SIGTERM or
//! SIGINT.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;

use floe::checkpoint::ha::HaStorage;
use floe::core::config::options::PROMETHEUS_PORT;
use floe_cluster::config::TaskManagerConfig;
use floe_cluster::taskmanager::bind_address;
use floe_cluster::{
    JobManagerConfig, JobManagerOptions, JobManagerRole, Registered, TaskManagerOptions,
    TaskManagerRole,
};
use floe_cluster_runtime::jobmaster::rest;
use floe_cluster_runtime::{
    ClusterJobMaster, ClusterTaskExecutor, DataEndpoint, JobRegistry, SlotWait,
};
use floe_network::{NetworkConfig, NetworkEnvironment, TaskManagerId as DataId};

use crate::cluster::settings::{Termination, load};
use floe_cli::examples::EXAMPLES;

/// Every example job, by name: what a cluster of `floe` processes runs.
fn registry() -> JobRegistry {
    let mut registry = JobRegistry::new();
    for (name, _, main) in EXAMPLES {
        let main = *main;
        registry.register(
            *name,
            Arc::new(move |argv: Vec<String>| main(floe::JobArgs::parse(argv)?)),
        );
    }
    registry
}

/// Who may use the JobManager's REST endpoint (`rest.auth.*`).
fn rest_auth(config: &floe::core::Configuration) -> anyhow::Result<floe::rest::RestAuth> {
    use floe::core::config::options;
    Ok(floe::rest::RestAuth {
        token: config.get(&options::REST_AUTH_TOKEN)?,
        protect_reads: config
            .get(&options::REST_AUTH_PROTECT_READS)?
            .unwrap_or(false),
    })
}

/// A role's Prometheus reporter as started on `host` and one of `ports`:
/// where it listens is printed, a failure names the key.
fn serve_reporter(
    started: Result<floe::rest::RestServer, floe::rest::RestError>,
    host: &str,
    ports: &floe::core::PortRanges,
) -> anyhow::Result<floe::rest::RestServer> {
    let server = started.map_err(|e| {
        anyhow::anyhow!(
            "{} = {ports}: cannot serve the Prometheus endpoint on {host}: {e}",
            PROMETHEUS_PORT.key
        )
    })?;
    eprintln!(
        "Prometheus endpoint: http://{}/metrics",
        server.local_addr()
    );
    Ok(server)
}

/// `floe jobmanager`.
pub fn jobmanager(
    rpc_address: Option<String>,
    config: Option<&str>,
    dynamic: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load(config, dynamic)?;
    floe::init_logging();
    let mut termination = Termination::install()?;
    let settings = JobManagerConfig::from_configuration(&config)?;
    let ha = settings
        .ha_storage_dir
        .as_deref()
        .map(HaStorage::open)
        .transpose()
        .map_err(|e| anyhow::anyhow!("high-availability.storageDir: {e}"))?;
    let slot_wait = SlotWait {
        request_timeout: settings.slot_request_timeout,
        stabilization_timeout: settings.resource_stabilization_timeout,
    };
    let master = ClusterJobMaster::new(registry(), slot_wait, ha);
    let role = JobManagerRole::start(
        &config,
        JobManagerOptions {
            rpc_address,
            serve_rest: true,
            job_routes: Some({
                let (jobs, unfetched) =
                    floe::rest::jobs_router(master.directory(), rest_auth(&config)?);
                (jobs.merge(rest::router(master.clone())), unfetched)
            }),
        },
        master.clone(),
    )?;
    master.attach(role.handle());
    // Every job's metrics on the reporter's port too, as on the REST port.
    let _prometheus = match config.get(&PROMETHEUS_PORT)? {
        None => None,
        Some(ports) => {
            let host = role
                .rest_address()
                .map_or_else(|| "0.0.0.0".to_string(), |a| a.ip().to_string());
            Some(serve_reporter(
                floe::rest::RestServer::start_prometheus_directory(
                    master.directory(),
                    &host,
                    &ports,
                ),
                &host,
                &ports,
            )?)
        }
    };
    // Jobs a previous JobManager left in the HA storage start again (each
    // waits for TaskManagers to register and offer slots).
    {
        let master = master.clone();
        std::thread::spawn(move || master.recover());
    }
    eprintln!("JobManager RPC: {}", role.rpc_address());
    if let Some(rest) = role.rest_address() {
        eprintln!("REST endpoint: http://{rest}");
    }
    let _ = termination.wait(std::future::pending::<()>());
    eprintln!("JobManager stopping");
    drop(role);
    Ok(ExitCode::SUCCESS)
}

/// `floe taskmanager`.
pub fn taskmanager(
    jobmanager: String,
    bind: Option<String>,
    slots: Option<u32>,
    config: Option<&str>,
    dynamic: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load(config, dynamic)?;
    floe::init_logging();
    let mut termination = Termination::install()?;
    let mut options = TaskManagerOptions::new(jobmanager);
    options.bind = bind;
    options.slots = slots;
    options.on_registered = Some(Arc::new(|r: &Registered| {
        eprintln!(
            "TaskManager {} registered with {}",
            r.taskmanager, r.jobmanager
        );
    }));
    // The data plane listens on the host the TaskManager advertises.
    let settings = TaskManagerConfig::from_configuration(&config)?;
    let (host, _) = bind_address(&settings, &options)?;
    let bind = (host.as_str(), settings.data_port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot bind the data plane on {host}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot bind the data plane on {host}: no address"))?;
    let id = rand::random::<u128>();
    let network = Arc::new(NetworkEnvironment::start(NetworkConfig::new(
        DataId(id),
        bind,
    ))?);
    options.data_address = Some(
        DataEndpoint {
            address: network.local_addr(),
            id,
        }
        .to_string(),
    );
    let executor = ClusterTaskExecutor::new(registry(), network);
    // Flink's reporter runs in every process: this TaskManager's own
    // subtasks and process figures, on the host it advertises. Bound
    // before registering, so a port taken fails the process before it
    // offers slots; the id is filled in once registered.
    let tm_id = Arc::new(std::sync::OnceLock::new());
    let _prometheus = match config.get(&PROMETHEUS_PORT)? {
        None => None,
        Some(ports) => {
            let source: floe::rest::HostedMetricsSource = {
                let executor = executor.clone();
                Arc::new(move || executor.hosted_metrics())
            };
            let app = floe::rest::taskmanager_metrics_router(tm_id.clone(), source);
            Some(serve_reporter(
                floe::rest::RestServer::start_app_on_first(app, &host, &ports),
                &host,
                &ports,
            )?)
        }
    };
    let mut role = TaskManagerRole::start(&config, options, executor.clone())?;
    executor.attach(role.events());
    let id = role.id().clone();
    let _ = tm_id.set(id.to_string());
    match termination.wait(role.failed()) {
        Ok(()) => {
            eprintln!("TaskManager {id} stopping");
            drop(role);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow::anyhow!("TaskManager {id}: {e}")),
    }
}
