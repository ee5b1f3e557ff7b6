//! The stream environment: where a job's graph is built and executed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use floe_checkpoint::{CheckpointConfig, CheckpointStorage};
use floe_core::JobId;
use floe_core::config::options;
use floe_core::{ConfigOption, Configuration, PortRanges};
use floe_queryable::{QueryableServiceError, QueryableStateService, ServiceLimits};
use floe_runtime::ProcessingClock;
use floe_runtime::checkpoint::CheckpointStore;
use floe_runtime::graph::{
    JobEdge, JobVertex, SideOutputEdge, StreamTypeOps, VertexKind, WriterFactory,
};
use floe_runtime::job_manager::{ExecutionSettings, JobClient};
use floe_runtime::restart::RestartStrategy;
use floe_runtime::{
    GraphError, JobError, JobExecutionResult, JobGraph, JobManager, Partitioning, RestoreConflict,
    VertexId,
};
use floe_state::{HeapConfig, RocksDbConfig, StateBackendKind, StateBackendSettings};

use crate::job_args::JobArgs;

/// Settings operator factories need when the job is built.
#[derive(Debug, Clone)]
pub(crate) struct BuildSettings {
    pub(crate) batch_size: usize,
    pub(crate) backend: StateBackendSettings,
}

/// Makes a vertex's factory once the job's settings are known.
pub(crate) type MakeKind = Box<dyn Fn(&BuildSettings) -> VertexKind>;

pub(crate) struct VertexSpec {
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    pub(crate) parallelism: Option<u32>,
    pub(crate) max_parallelism: Option<u32>,
    pub(crate) non_parallel: bool,
    pub(crate) make: MakeKind,
    pub(crate) input_type: Option<Arc<dyn StreamTypeOps>>,
    pub(crate) output_type: Arc<dyn StreamTypeOps>,
}

pub(crate) struct EdgeSpec {
    pub(crate) source: usize,
    pub(crate) target: usize,
    /// `None`: forward when parallelism matches, otherwise rebalance.
    pub(crate) partitioning: Option<Partitioning>,
    /// Set for key-group edges, which need the key selector.
    pub(crate) writer: Option<WriterFactory>,
    /// Set when the edge carries a side output of its source.
    pub(crate) side: Option<SideOutputEdge>,
}

#[derive(Default)]
pub(crate) struct EnvInner {
    pub(crate) vertices: Vec<VertexSpec>,
    pub(crate) edges: Vec<EdgeSpec>,
    /// File and `-D` values.
    config: Configuration,
    /// Values set in code, which win over everything else.
    code: Configuration,
    /// Set in code; otherwise `state.backend.type`.
    backend: Option<StateBackendKind>,
    /// `-s`: a savepoint (or retained checkpoint) to restore from.
    restore_from: Option<String>,
    /// `-n`: skip snapshot state that maps to no operator.
    allow_non_restored_state: bool,
    /// `--fromCheckpoint`: a retained checkpoint to start from.
    restore_checkpoint: Option<String>,
    /// Adjustments of the checkpoint configuration made in code.
    checkpoint_overrides: Vec<CheckpointOverride>,
    /// Where checkpoints go (default: the JobManager's memory).
    checkpoint_store: Option<Arc<dyn CheckpointStore>>,
    /// Set in code; otherwise Flink's default for the checkpointing mode.
    restart: Option<RestartStrategy>,
    /// Where tasks read processing time (a manual clock in tests).
    processing_clock: ProcessingClock,
    /// Side outputs asked for, by (vertex, tag), with their record type.
    side_outputs: std::collections::HashMap<(usize, String), &'static str>,
}

/// A code-side adjustment of the checkpoint configuration.
type CheckpointOverride = Box<dyn Fn(CheckpointConfig) -> CheckpointConfig>;

/// The context in which a job is built and executed (Flink's
/// `StreamExecutionEnvironment`). Cheap to clone: streams keep a handle to it.
#[derive(Clone, Default)]
pub struct StreamEnvironment {
    pub(crate) inner: Rc<RefCell<EnvInner>>,
}

impl StreamEnvironment {
    /// An environment with the built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// An environment configured by a job binary's standard flags
    /// (`--config`, `-D`, `-p`).
    pub fn from_job_args(args: &JobArgs) -> Self {
        let env = Self::new();
        {
            let mut inner = env.inner.borrow_mut();
            inner.config = args.configuration().clone();
            inner.restore_from = args.from_savepoint().map(str::to_string);
            inner.allow_non_restored_state = args.allow_non_restored_state();
            inner.restore_checkpoint = args.from_checkpoint().map(str::to_string);
        }
        env
    }

    /// An environment over an explicit configuration layer (file and flags).
    pub fn with_configuration(config: Configuration) -> Self {
        let env = Self::new();
        env.inner.borrow_mut().config = config;
        env
    }

    /// Default parallelism of operators that set none (wins over flags and files).
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        self.inner
            .borrow_mut()
            .code
            .set(options::PARALLELISM.key, parallelism.to_string());
        self
    }

    /// Job-wide number of key groups (wins over flags and files).
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> &Self {
        self.inner
            .borrow_mut()
            .code
            .set(options::MAX_PARALLELISM.key, max_parallelism.to_string());
        self
    }

    /// Chooses the state backend for keyed state.
    pub fn set_state_backend(&self, backend: StateBackendKind) -> &Self {
        self.inner.borrow_mut().backend = Some(backend);
        self
    }

    /// Incremental checkpoints on the RocksDB backend (Flink's
    /// `EmbeddedRocksDBStateBackend(true)`): each checkpoint uploads only
    /// the RocksDB files no retained checkpoint holds yet. Code wins over
    /// `state.backend.incremental`; savepoints stay canonical either way.
    pub fn enable_incremental_checkpointing(&self, incremental: bool) -> &Self {
        self.inner
            .borrow_mut()
            .code
            .set(options::INCREMENTAL.key, incremental.to_string());
        self
    }

    /// Starts the job from a savepoint (or a retained checkpoint) — `-s`.
    /// With `allow_non_restored_state` (`-n`), state of operators that are
    /// no longer in the job is skipped instead of refused.
    pub fn set_restore_from_savepoint(&self, path: &str, allow_non_restored_state: bool) -> &Self {
        let mut inner = self.inner.borrow_mut();
        inner.restore_from = Some(path.to_string());
        inner.allow_non_restored_state = allow_non_restored_state;
        self
    }

    /// Turns checkpointing on: a checkpoint every `interval` (Flink's
    /// `enableCheckpointing`). With it, a failed job restarts from its latest
    /// completed checkpoint (fixed delay, unlimited attempts, 1 s, unless a
    /// restart strategy is set).
    pub fn enable_checkpointing(&self, interval: std::time::Duration) -> &Self {
        self.set_config(
            floe_checkpoint::config::options::INTERVAL.key,
            &format!("{}ms", interval.as_millis()),
        )
    }

    /// Adjusts the checkpoint configuration in code (Flink's
    /// `getCheckpointConfig()`): `f` gets the configuration read from the
    /// job's configuration keys and returns it changed with
    /// [`CheckpointConfig`]'s `with_*` methods. Code wins over
    /// configuration; the result is validated once, with the same ranges
    /// and messages as the configuration keys.
    pub fn configure_checkpointing(
        &self,
        f: impl Fn(CheckpointConfig) -> CheckpointConfig + 'static,
    ) -> &Self {
        self.inner
            .borrow_mut()
            .checkpoint_overrides
            .push(Box::new(f));
        self
    }

    /// Starts the job from a retained checkpoint: a job's checkpoint
    /// directory (its latest completed checkpoint) or a `chk-<n>` directory.
    pub fn set_restore_from_checkpoint(&self, path: &str) -> &Self {
        self.inner.borrow_mut().restore_checkpoint = Some(path.to_string());
        self
    }

    /// Where checkpoints are written.
    pub fn set_checkpoint_store(&self, store: Arc<dyn CheckpointStore>) -> &Self {
        self.inner.borrow_mut().checkpoint_store = Some(store);
        self
    }

    /// How the job reacts to failures.
    pub fn set_restart_strategy(&self, strategy: RestartStrategy) -> &Self {
        self.inner.borrow_mut().restart = Some(strategy);
        self
    }

    /// Records that vertex `vertex`'s side output `tag` carries `type_name`;
    /// panics when it was claimed with another type (a graph that could
    /// not be wired).
    pub(crate) fn claim_side_output(&self, vertex: usize, tag: &str, type_name: &'static str) {
        let mut inner = self.inner.borrow_mut();
        let known = inner
            .side_outputs
            .entry((vertex, tag.to_string()))
            .or_insert(type_name);
        assert_eq!(
            *known, type_name,
            "side output '{tag}' is already used with type {known}, not {type_name}"
        );
    }

    /// Reads processing time from `clock` instead of the system clock:
    /// tests of processing-time timers and idleness move a
    /// [`ManualClock`](floe_runtime::ManualClock) by hand.
    pub fn set_processing_clock(&self, clock: ProcessingClock) -> &Self {
        self.inner.borrow_mut().processing_clock = clock;
        self
    }

    /// Sets any configuration key from code (highest precedence).
    pub fn set_config(&self, key: &str, value: &str) -> &Self {
        self.inner.borrow_mut().code.set(key, value);
        self
    }

    /// The effective configuration: defaults < file < `-D` < code.
    pub fn configuration(&self) -> Configuration {
        let inner = self.inner.borrow();
        let mut c = inner.config.clone();
        c.merge(&inner.code);
        c
    }

    /// The effective default parallelism.
    pub fn parallelism(&self) -> Result<u32, JobError> {
        Ok(self
            .configuration()
            .get(&options::PARALLELISM)?
            .unwrap_or(1))
    }

    fn get_or<T>(config: &Configuration, opt: &ConfigOption<T>, default: T) -> Result<T, JobError> {
        Ok(config.get(opt)?.unwrap_or(default))
    }

    pub(crate) fn add_vertex(&self, spec: VertexSpec) -> usize {
        let mut inner = self.inner.borrow_mut();
        inner.vertices.push(spec);
        inner.vertices.len() - 1
    }

    pub(crate) fn add_edge(&self, edge: EdgeSpec) {
        self.inner.borrow_mut().edges.push(edge);
    }

    pub(crate) fn with_vertex(&self, id: usize, f: impl FnOnce(&mut VertexSpec)) {
        f(&mut self.inner.borrow_mut().vertices[id]);
    }

    /// Builds the job graph with every default resolved.
    pub fn job_graph(&self) -> Result<(JobGraph, ExecutionSettings), JobError> {
        let config = self.configuration();
        for key in config.unknown_keys() {
            tracing::warn!("unknown configuration key '{key}' is ignored");
        }
        let parallelism = Self::get_or(&config, &options::PARALLELISM, 1)?;
        let settings = ExecutionSettings {
            batch_size: Self::get_or(&config, &options::BATCH_SIZE, 1024)? as usize,
            channel_capacity: Self::get_or(&config, &options::CHANNEL_CAPACITY, 8)? as usize,
            max_parallelism: config.get(&options::MAX_PARALLELISM)?,
            checkpointing: None,
            restart: RestartStrategy::None,
            restore: None,
            job_id: None,
            savepoint_dir: config.get(&options::SAVEPOINT_DIR)?,
            restore_path: None,
            allow_non_restored_state: self.inner.borrow().allow_non_restored_state,
            queryable_state: Self::get_or(&config, &options::QUERYABLE_STATE_ENABLE, false)?,
            queryable_state_max_staleness: Self::get_or(
                &config,
                &options::QUERYABLE_STATE_MAX_STALENESS,
                floe_runtime::queryable::DEFAULT_MAX_STALENESS,
            )?,
            processing_clock: self.inner.borrow().processing_clock.clone(),
            auto_watermark_interval: Self::get_or(
                &config,
                &options::AUTO_WATERMARK_INTERVAL,
                std::time::Duration::from_millis(200),
            )?,
            io_metrics: Self::get_or(&config, &options::METRICS_IO_ENABLED, true)?,
            configuration: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut settings = settings;
        let job_id = crate::executor::captured_job_id().unwrap_or_else(JobId::random);
        settings.job_id = Some(job_id);
        {
            let inner = self.inner.borrow();
            // Keys, then code, then one validation of the result.
            let cp = inner
                .checkpoint_overrides
                .iter()
                .fold(CheckpointConfig::read(&config)?, |cp, o| o(cp));
            cp.validate()?;
            if cp.is_checkpointing_enabled() {
                let store: Arc<dyn CheckpointStore> = match &inner.checkpoint_store {
                    Some(s) => s.clone(),
                    None => Arc::new(CheckpointStorage::for_config(&cp)?.job(job_id)),
                };
                settings.checkpointing = Some((cp.clone(), store));
            }
            match (&inner.restore_from, &inner.restore_checkpoint) {
                (Some(s), Some(c)) => {
                    return Err(RestoreConflict::TwoSnapshots {
                        savepoint: s.clone(),
                        checkpoint: c.clone(),
                    }
                    .into());
                }
                (Some(path), None) | (None, Some(path)) => {
                    // Relative to where the job was started, as a shell
                    // user means it.
                    let path = crate::job_args::absolute_location(path);
                    settings.restore = Some(Arc::new(load_snapshot(&path)?));
                    settings.restore_path = Some(path);
                }
                (None, None) => {}
            }
            // Code wins over configuration; without either, Flink's
            // default for whether checkpointing is on.
            let configured = RestartStrategy::from_configuration(&config)?;
            settings.restart =
                inner
                    .restart
                    .clone()
                    .or(configured)
                    .unwrap_or(if cp.is_checkpointing_enabled() {
                        RestartStrategy::default_with_checkpointing()
                    } else {
                        RestartStrategy::None
                    });
        }
        let inner = self.inner.borrow();
        if inner.vertices.is_empty() {
            return Err(JobError::InvalidGraph(GraphError::NoOperators));
        }
        let backend = match inner.backend {
            Some(b) => b,
            None => match config.get(&options::STATE_BACKEND)? {
                Some(name) => name.parse().map_err(|e: String| {
                    JobError::Config(floe_core::ConfigError::InvalidValue {
                        key: options::STATE_BACKEND.key.into(),
                        value: name.clone(),
                        reason: e,
                    })
                })?,
                None => StateBackendKind::default(),
            },
        };
        let mut heap = HeapConfig::default();
        if let Some(huge_pages) = config.get(&options::HEAP_HUGE_PAGES)? {
            heap.huge_pages = huge_pages;
        }
        let mut rocksdb = RocksDbConfig::default();
        if let Some(dir) = config.get(&options::ROCKSDB_LOCAL_DIR)? {
            rocksdb.local_dir = dir.into();
        }
        if let Some(size) = config.get(&options::MANAGED_MEMORY_SIZE)? {
            rocksdb.managed_memory = size;
        }
        if let Some(incremental) = config.get(&options::INCREMENTAL)? {
            rocksdb.incremental = incremental;
        }
        if let Some(size) = config.get(&options::ROCKSDB_WRITE_CACHE_SIZE)? {
            rocksdb.write_cache = Some(size);
        }
        if let Some(n) = config.get(&options::ROCKSDB_TIMER_CACHE_SIZE)? {
            rocksdb.timer_cache_size = n as usize;
        }
        if let Some(n) = config.get(&options::ROCKSDB_TIMER_WRITE_BUFFER)? {
            rocksdb.timer_write_buffer = n as usize;
        }
        rocksdb.native_metrics = floe_core::config::rocksdb_native_metrics(&config)?;
        let build = BuildSettings {
            batch_size: settings.batch_size,
            backend: StateBackendSettings {
                kind: backend,
                heap,
                rocksdb,
            },
        };
        let mut graph = JobGraph::new();
        for v in &inner.vertices {
            let p = v
                .parallelism
                .unwrap_or(if v.non_parallel { 1 } else { parallelism });
            graph.add_vertex(JobVertex {
                name: v.name.clone(),
                uid: v.uid.clone(),
                parallelism: p,
                max_parallelism: v.max_parallelism,
                non_parallel: v.non_parallel,
                kind: (v.make)(&build),
                input_type: v.input_type.clone(),
                output_type: v.output_type.clone(),
            });
        }
        for e in &inner.edges {
            let (ps, pt) = (
                graph.vertices[e.source].parallelism,
                graph.vertices[e.target].parallelism,
            );
            let partitioning = e.partitioning.unwrap_or(if ps == pt {
                Partitioning::Forward
            } else {
                Partitioning::Rebalance
            });
            let writer = match (&e.writer, &e.side) {
                (Some(w), _) => w.clone(),
                // A side output's records are of its tag's type.
                (None, Some(side)) => side.output_type.writer_factory(partitioning),
                (None, None) => graph.vertices[e.source]
                    .output_type
                    .writer_factory(partitioning),
            };
            graph.add_edge(JobEdge {
                source: VertexId(e.source),
                target: VertexId(e.target),
                partitioning,
                writer,
                side_output: e.side.clone(),
            });
        }
        Ok((graph, settings))
    }

    /// Starts the job and returns at once (Flink's `executeAsync`): the
    /// client waits for it, cancels it, and hands out a [`floe_runtime::JobControl`] for
    /// savepoints and stops. No REST API is served for it.
    pub fn execute_async(&self, job_name: &str) -> Result<JobClient, JobError> {
        let (graph, settings) = self.job_graph()?;
        let (graph, settings) = crate::executor::offer(job_name, graph, settings)?;
        let mut client = JobManager::new(settings).submit(job_name, &graph)?;
        if let Err(e) = self.serve_queryable_state(&mut client) {
            client.cancel();
            let _ = client.wait();
            return Err(e);
        }
        Ok(client)
    }

    /// With `queryable-state.enable`, makes the job's queryable states
    /// reachable through this process's proxy and server (started by the
    /// first such job on `rest.address` and the configured port ranges),
    /// for as long as the job runs.
    fn serve_queryable_state(&self, client: &mut JobClient) -> Result<(), JobError> {
        let control = client.control();
        if !control.queryable_state().is_enabled() {
            // Queries for this job at a proxy other jobs started are told
            // that the feature is off, not that the job is unknown.
            if let Some(service) = QueryableStateService::running() {
                let registration = service.register(control.queryable_state().clone());
                client.attach(Box::new((registration, service)));
            }
            return Ok(());
        }
        let config = self.configuration();
        let address = config
            .get(&options::REST_ADDRESS)?
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let ports = |opt: &floe_core::ConfigOption<PortRanges>, default: u16| {
            Ok::<_, JobError>(
                config
                    .get(opt)?
                    .unwrap_or_else(|| PortRanges(vec![(default, default)])),
            )
        };
        let proxy_ports = ports(&options::QUERYABLE_STATE_PROXY_PORTS, 9069)?;
        let server_ports = ports(&options::QUERYABLE_STATE_SERVER_PORTS, 9067)?;
        let defaults = ServiceLimits::default();
        let limits = ServiceLimits {
            max_connections: config
                .get(&options::QUERYABLE_STATE_MAX_CONNECTIONS)?
                .map_or(defaults.max_connections, |n| n as usize),
            max_request_size: config
                .get(&options::QUERYABLE_STATE_MAX_REQUEST_SIZE)?
                .map_or(defaults.max_request_size, |n| n as usize),
            idle_timeout: config
                .get(&options::QUERYABLE_STATE_IDLE_TIMEOUT)?
                .unwrap_or(defaults.idle_timeout),
        };
        let service = QueryableStateService::shared(&address, &proxy_ports, &server_ports, limits)
            .map_err(|e| {
                // Blame the key that is at fault: the ports when they
                // are taken or reserved, else the address.
                let (key, value) = match &e {
                    QueryableServiceError::Bind {
                        key, ports, kind, ..
                    } if port_at_fault(*kind) => (key.to_string(), ports.clone()),
                    _ => (options::REST_ADDRESS.key.to_string(), address.clone()),
                };
                JobError::Config(floe_core::ConfigError::InvalidValue {
                    key,
                    value,
                    reason: e.to_string(),
                })
            })?;
        eprintln!(
            "Queryable state proxy: {} (server {})",
            service.proxy_address(),
            service.server_address()
        );
        let registration = service.register(control.queryable_state().clone());
        client.attach(Box::new((registration, service)));
        Ok(())
    }

    /// Runs the job to its end (bounded sources) or its failure, serving
    /// the REST API (`rest.address`, `rest.port`) and registering the job
    /// with the host's job registry meanwhile, so `floe list`, `floe
    /// savepoint`, `floe stop` and `floe cancel` can reach it.
    pub fn execute(&self, job_name: &str) -> Result<JobExecutionResult, JobError> {
        let (graph, settings) = self.job_graph()?;
        let (graph, settings) = crate::executor::offer(job_name, graph, settings)?;
        let config = self.configuration();
        let address = config
            .get(&options::REST_ADDRESS)?
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let port = config.get(&options::REST_PORT)?.unwrap_or(0);
        let auth = floe_rest::RestAuth {
            token: config.get(&options::REST_AUTH_TOKEN)?,
            protect_reads: config
                .get(&options::REST_AUTH_PROTECT_READS)?
                .unwrap_or(false),
        };
        if auth.protect_reads && auth.token.is_none() {
            return Err(JobError::Config(floe_core::ConfigError::InvalidValue {
                key: options::REST_AUTH_PROTECT_READS.key.into(),
                value: "true".into(),
                reason: format!("needs {} to be set", options::REST_AUTH_TOKEN.key),
            }));
        }
        let mut client = JobManager::new(settings).submit(job_name, &graph)?;
        if let Err(e) = self.serve_queryable_state(&mut client) {
            client.cancel();
            let _ = client.wait();
            return Err(e);
        }
        let rest = match floe_rest::serve_job(client.control(), &address, port, auth) {
            Ok(r) => r,
            Err(e) => {
                client.cancel();
                let _ = client.wait();
                // A taken or reserved port is rest.port's fault; an address
                // of no local interface (or no address at all) is
                // rest.address's. The message names address:port and the OS reason.
                let (key, value) = match &e {
                    floe_rest::RestError::Bind { source, .. } if port_at_fault(source.kind()) => {
                        (options::REST_PORT.key, port.to_string())
                    }
                    _ => (options::REST_ADDRESS.key, address.clone()),
                };
                return Err(JobError::Config(floe_core::ConfigError::InvalidValue {
                    key: key.into(),
                    value,
                    reason: format!("cannot serve the REST API: {e}"),
                }));
            }
        };
        let prometheus = match config.get(&options::PROMETHEUS_PORT)? {
            None => None,
            Some(prom_port) => {
                match floe_rest::RestServer::start_prometheus(
                    client.control(),
                    &address,
                    &prom_port,
                ) {
                    Ok(server) => {
                        eprintln!(
                            "Prometheus endpoint: http://{}/metrics",
                            server.local_addr()
                        );
                        Some(server)
                    }
                    Err(e) => {
                        client.cancel();
                        let _ = client.wait();
                        return Err(JobError::Config(floe_core::ConfigError::InvalidValue {
                            key: options::PROMETHEUS_PORT.key.into(),
                            value: prom_port.to_string(),
                            reason: format!("cannot serve the Prometheus endpoint: {e}"),
                        }));
                    }
                }
            }
        };
        let result = client.wait();
        drop(prometheus);
        // Unregister before the endpoint goes, so the CLI never finds a
        // registry entry whose endpoint is gone. (The server stays up a
        // moment for a savepoint or stop result its requester has not
        // fetched yet.)
        let (server, registration) = rest;
        drop(registration);
        drop(server);
        result
    }
}

/// Whether a failed bind is the port's fault (taken, or reserved for
/// privileged users) rather than the address's.
fn port_at_fault(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
    )
}

/// Reads a savepoint's or a retained checkpoint's metadata and state files.
fn load_snapshot(path: &str) -> Result<floe_runtime::checkpoint::RestoredState, JobError> {
    let err = |source| JobError::Snapshot {
        context: format!("cannot restore from {path}"),
        source: Box::new(source),
    };
    let snapshot = floe_runtime::checkpoint::OpenedSnapshot::open(path).map_err(err)?;
    let restored = snapshot.load().map_err(err)?;
    tracing::info!(
        checkpoint = snapshot.metadata.checkpoint_id,
        savepoint = snapshot.metadata.is_savepoint,
        "restoring from {}",
        snapshot.url()
    );
    Ok(restored)
}
