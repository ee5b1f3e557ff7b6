//! The stream environment: where a job's graph is built and executed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use floe_checkpoint::{
    CheckpointConfig, CheckpointStorage, CheckpointingMode, ExternalizedCheckpointRetention,
};
use floe_core::JobId;
use floe_core::config::options;
use floe_core::{ConfigOption, Configuration};
use floe_runtime::checkpoint::AlignmentMode;
use floe_runtime::coordinator::{CheckpointSettings, CheckpointStore};
use floe_runtime::graph::{JobEdge, JobVertex, StreamTypeOps, VertexKind, WriterFactory};
use floe_runtime::job_manager::ExecutionSettings;
use floe_runtime::restart::RestartStrategy;
use floe_runtime::{JobError, JobExecutionResult, JobGraph, JobManager, Partitioning, VertexId};
use floe_state::StateBackendKind;

use crate::job_args::JobArgs;

/// Settings operator factories need when the job is built.
#[derive(Debug, Clone)]
pub(crate) struct BuildSettings {
    pub(crate) batch_size: usize,
    pub(crate) backend: StateBackendKind,
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
}

#[derive(Default)]
pub(crate) struct EnvInner {
    pub(crate) vertices: Vec<VertexSpec>,
    pub(crate) edges: Vec<EdgeSpec>,
    /// File and `-D` values.
    config: Configuration,
    /// Values set in code, which win over everything else.
    code: Configuration,
    backend: StateBackendKind,
    /// `-s`: a savepoint to restore from (not supported yet: refused at execute).
    restore_from: Option<String>,
    /// `--fromCheckpoint`: a retained checkpoint to start from.
    restore_checkpoint: Option<String>,
    /// Adjustments of the checkpoint settings made in code.
    checkpoint_overrides: Vec<CheckpointOverride>,
    /// Where checkpoints go (default: the JobManager's memory).
    checkpoint_store: Option<Arc<dyn CheckpointStore>>,
    /// Set in code; otherwise Flink's default for the checkpointing mode.
    restart: Option<RestartStrategy>,
}

/// A code-side adjustment of the checkpoint settings.
type CheckpointOverride = Box<dyn Fn(&mut CheckpointSettings)>;

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
        self.inner.borrow_mut().backend = backend;
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

    /// Adjusts the checkpoint settings in code (wins over configuration).
    pub fn configure_checkpointing(&self, f: impl Fn(&mut CheckpointSettings) + 'static) -> &Self {
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
        if let Some(path) = &self.inner.borrow().restore_from {
            return Err(JobError::Unsupported(format!(
                "cannot restore from savepoint {path}: restoring from savepoints is not implemented in this version of Floe"
            )));
        }
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
        };
        let mut settings = settings;
        let job_id = JobId::random();
        settings.job_id = Some(job_id);
        let cp = CheckpointConfig::from_configuration(&config)
            .map_err(|e| JobError::Checkpointing(e.to_string()))?;
        {
            let inner = self.inner.borrow();
            if let Some(interval) = cp.interval() {
                let mut s = CheckpointSettings {
                    interval,
                    alignment: match cp.mode() {
                        CheckpointingMode::ExactlyOnce if cp.is_unaligned_effective() => {
                            AlignmentMode::Unaligned {
                                aligned_timeout: cp.aligned_checkpoint_timeout(),
                            }
                        }
                        CheckpointingMode::ExactlyOnce => AlignmentMode::Aligned,
                        CheckpointingMode::AtLeastOnce => AlignmentMode::AtLeastOnce,
                    },
                    timeout: cp.timeout(),
                    min_pause: cp.min_pause(),
                    max_concurrent: cp.max_concurrent_checkpoints() as usize,
                    tolerable_failures: cp.tolerable_failed_checkpoints(),
                    num_retained: cp.num_retained() as usize,
                    retain_on_cancellation: cp.externalized_checkpoint_retention()
                        == ExternalizedCheckpointRetention::RetainOnCancellation,
                };
                for o in &inner.checkpoint_overrides {
                    o(&mut s);
                }
                s.validate().map_err(JobError::Checkpointing)?;
                let store: Arc<dyn CheckpointStore> = match &inner.checkpoint_store {
                    Some(s) => s.clone(),
                    None => Arc::new(
                        CheckpointStorage::for_config(&cp)
                            .map_err(|e| JobError::Checkpointing(e.to_string()))?
                            .job(job_id),
                    ),
                };
                settings.checkpointing = Some((s, store));
            }
            if let Some(path) = &inner.restore_checkpoint {
                settings.restore = Some(Arc::new(load_checkpoint(path)?));
            }
            // Code wins over configuration; without either, Flink's
            // default for whether checkpointing is on.
            let configured = RestartStrategy::from_configuration(&config)
                .map_err(|e| JobError::RestartStrategy(e.to_string()))?;
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
            return Err(JobError::InvalidGraph(
                "no operators defined in the job: add a source and a sink before execute()".into(),
            ));
        }
        let build = BuildSettings {
            batch_size: settings.batch_size,
            backend: inner.backend,
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
            let writer = match &e.writer {
                Some(w) => w.clone(),
                None => graph.vertices[e.source]
                    .output_type
                    .writer_factory(partitioning),
            };
            graph.add_edge(JobEdge {
                source: VertexId(e.source),
                target: VertexId(e.target),
                partitioning,
                writer,
            });
        }
        Ok((graph, settings))
    }

    /// Runs the job to its end (bounded sources) or its failure.
    pub fn execute(&self, job_name: &str) -> Result<JobExecutionResult, JobError> {
        let (graph, settings) = self.job_graph()?;
        JobManager::new(settings).execute(job_name, &graph)
    }
}

/// Reads a retained checkpoint's metadata and state files.
fn load_checkpoint(path: &str) -> Result<floe_runtime::checkpoint::RestoredState, JobError> {
    let err = |reason: String| {
        JobError::Restore(format!("cannot restore from checkpoint {path}: {reason}"))
    };
    let resolved = CheckpointStorage::resolve_checkpoint(path).map_err(|e| err(e.to_string()))?;
    let store: &dyn CheckpointStore = &resolved.job;
    let meta = floe_runtime::coordinator::CheckpointMetadata::decode(
        &store.read_metadata(resolved.checkpoint_id).map_err(err)?,
    )
    .map_err(err)?;
    let restored = meta.load(store).map_err(err)?;
    tracing::info!(
        checkpoint = resolved.checkpoint_id,
        "restoring from checkpoint {path}"
    );
    Ok(restored)
}
