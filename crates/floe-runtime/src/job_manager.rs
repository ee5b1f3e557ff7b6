//! The JobManager role: plans, deploys and supervises a job.
//!
//! Planning turns the logical graph into tasks: it resolves every operator's
//! max parallelism and uid, validates the graph, and chains each operator
//! into its input's task when the edge is forward with equal parallelism and
//! nothing else consumes the input (no channel hop inside a chain). It then
//! creates one bounded channel per (sender, receiver) pair of every exchange,
//! builds each subtask's chain from its tail to its head, and deploys the
//! tasks to the TaskManager. The first failure cancels every other task.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use floe_core::JobId;
use floe_state::key_group::default_max_parallelism;

use crate::channel::CancelFlag;
use crate::checkpoint::TaskEnvironment;
use crate::context::TaskInfo;
use crate::error::{JobError, OperatorFailure, TaskError};
use crate::graph::{AnyBox, JobGraph, Partitioning, VertexId, VertexKind, WriterArgs};
use crate::task::TaskDriver;
use crate::task_manager::{TaskManager, TaskReport};

/// Runtime settings that shape execution (from configuration).
#[derive(Debug, Clone)]
pub struct ExecutionSettings {
    /// Records per batch between tasks.
    pub batch_size: usize,
    /// Batches per channel before the sender blocks.
    pub channel_capacity: usize,
    /// Job-wide max parallelism, when configured.
    pub max_parallelism: Option<u32>,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        ExecutionSettings {
            batch_size: 1024,
            channel_capacity: 8,
            max_parallelism: None,
        }
    }
}

/// The outcome of a job that ran to its end.
#[derive(Debug, Clone)]
pub struct JobExecutionResult {
    /// The job's id.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// Wall time from deployment to the last task's end.
    pub net_runtime: Duration,
}

/// A vertex after planning.
#[derive(Debug, Clone)]
pub struct PlannedVertex {
    /// Resolved uid.
    pub uid: Arc<str>,
    /// Resolved max parallelism (number of key groups).
    pub max_parallelism: u32,
}

/// The physical plan: chains of vertices, each run as one task per subtask.
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    /// Per-vertex resolved settings, indexed by vertex id.
    pub vertices: Vec<PlannedVertex>,
    /// Chains, head first.
    pub chains: Vec<Vec<VertexId>>,
    /// Edges inside a chain (no channel).
    pub chained_edges: HashSet<usize>,
}

/// Plans and runs jobs.
#[derive(Debug, Clone, Default)]
pub struct JobManager {
    settings: ExecutionSettings,
}

/// A submitted job: wait for it or cancel it.
pub struct JobClient {
    job_id: JobId,
    job_name: String,
    cancel: CancelFlag,
    reports: crossbeam_channel::Receiver<TaskReport>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

fn derived_uid(index: usize, input_uids: &[&str]) -> String {
    // Stable for an unchanged graph: position plus the uids of the inputs.
    let h = floe_state::key_hash(&(index as u64, input_uids));
    format!("auto-{index}-{h:08x}")
}

impl JobManager {
    /// A JobManager with the given settings.
    pub fn new(settings: ExecutionSettings) -> Self {
        JobManager { settings }
    }

    /// Validates the graph and decides chains, uids and max parallelism.
    pub fn plan(&self, graph: &JobGraph) -> Result<ExecutionPlan, JobError> {
        let mut vertices: Vec<PlannedVertex> = Vec::with_capacity(graph.vertices.len());
        let mut seen_uids = HashSet::new();
        for (i, v) in graph.vertices.iter().enumerate() {
            let id = VertexId(i);
            if v.parallelism == 0 {
                return Err(JobError::InvalidGraph(format!(
                    "operator '{}' has parallelism 0",
                    v.name
                )));
            }
            if v.non_parallel && v.parallelism != 1 {
                return Err(JobError::InvalidGraph(format!(
                    "source '{}' is not parallel and must have parallelism 1, not {}",
                    v.name, v.parallelism
                )));
            }
            let max_p = v
                .max_parallelism
                .or(self.settings.max_parallelism)
                .unwrap_or_else(|| default_max_parallelism(v.parallelism));
            if !(1..=32768).contains(&max_p) {
                return Err(JobError::InvalidGraph(format!(
                    "operator '{}' has max parallelism {max_p}, outside 1..=32768",
                    v.name
                )));
            }
            if v.parallelism > max_p {
                return Err(JobError::InvalidGraph(format!(
                    "operator '{}' has parallelism {} above its max parallelism {max_p}",
                    v.name, v.parallelism
                )));
            }
            let input_uids: Vec<&str> = graph
                .inputs(id)
                .map(|(_, e)| &*vertices[e.source.0].uid)
                .collect();
            let uid = match &v.uid {
                Some(u) => u.clone(),
                None => derived_uid(i, &input_uids),
            };
            if !seen_uids.insert(uid.clone()) {
                return Err(JobError::InvalidGraph(format!(
                    "uid '{uid}' is used by more than one operator; uids must be unique"
                )));
            }
            vertices.push(PlannedVertex {
                uid: uid.into(),
                max_parallelism: max_p,
            });
        }
        for e in &graph.edges {
            let (s, t) = (&graph.vertices[e.source.0], &graph.vertices[e.target.0]);
            if e.partitioning == Partitioning::Forward && s.parallelism != t.parallelism {
                return Err(JobError::InvalidGraph(format!(
                    "forward partitioning from '{}' (parallelism {}) to '{}' (parallelism {}) does not allow a change of parallelism; use rebalance()",
                    s.name, s.parallelism, t.name, t.parallelism
                )));
            }
            if matches!(t.kind, VertexKind::Source(_)) {
                return Err(JobError::InvalidGraph(format!(
                    "source '{}' cannot have inputs",
                    t.name
                )));
            }
        }
        let mut chained_edges = HashSet::new();
        let mut chain_of: Vec<usize> = Vec::with_capacity(graph.vertices.len());
        let mut chains: Vec<Vec<VertexId>> = Vec::new();
        for (i, v) in graph.vertices.iter().enumerate() {
            let id = VertexId(i);
            let inputs: Vec<(usize, _)> = graph.inputs(id).collect();
            let chain_into = match inputs.as_slice() {
                [(ei, e)]
                    if e.partitioning == Partitioning::Forward
                        && graph.vertices[e.source.0].parallelism == v.parallelism
                        && graph.outputs(e.source).count() == 1 =>
                {
                    Some((*ei, chain_of[e.source.0]))
                }
                _ => None,
            };
            if matches!(v.kind, VertexKind::Operator(_)) && inputs.is_empty() {
                return Err(JobError::InvalidGraph(format!(
                    "operator '{}' has no input",
                    v.name
                )));
            }
            match chain_into {
                Some((ei, c)) => {
                    chained_edges.insert(ei);
                    chains[c].push(id);
                    chain_of.push(c);
                }
                None => {
                    chains.push(vec![id]);
                    chain_of.push(chains.len() - 1);
                }
            }
        }
        Ok(ExecutionPlan {
            vertices,
            chains,
            chained_edges,
        })
    }

    /// Plans, deploys and waits for a job.
    pub fn execute(
        &self,
        job_name: &str,
        graph: &JobGraph,
    ) -> Result<JobExecutionResult, JobError> {
        self.submit(job_name, graph)?.wait()
    }

    /// Plans and deploys a job; returns at once.
    pub fn submit(&self, job_name: &str, graph: &JobGraph) -> Result<JobClient, JobError> {
        let plan = self.plan(graph)?;
        let job_id = JobId::random();
        let cancel = CancelFlag::new();
        let drivers = self.build_tasks(job_id, job_name, graph, &plan, &cancel);
        eprintln!("Job {job_name} started with JobID {job_id}");
        tracing::info!(%job_id, job = job_name, tasks = drivers.len(), "deploying job");
        let (tx, rx) = crossbeam_channel::unbounded();
        let tm = TaskManager::new(tx);
        let started = Instant::now();
        let mut threads = Vec::with_capacity(drivers.len());
        for (i, (name, driver)) in drivers.into_iter().enumerate() {
            let env = TaskEnvironment::new(cancel.clone(), i);
            match tm.deploy(i, name.clone(), driver, env) {
                Ok(t) => threads.push(t),
                Err(reason) => {
                    cancel.cancel();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(JobError::Spawn { task: name, reason });
                }
            }
        }
        Ok(JobClient {
            job_id,
            job_name: job_name.to_string(),
            cancel,
            reports: rx,
            threads,
            started,
        })
    }

    fn build_tasks(
        &self,
        job_id: JobId,
        job_name: &str,
        graph: &JobGraph,
        plan: &ExecutionPlan,
        cancel: &CancelFlag,
    ) -> Vec<(String, Box<dyn TaskDriver>)> {
        let job_name: Arc<str> = job_name.into();
        // senders[edge][sending subtask] and receivers[vertex][subtask].
        let mut senders: Vec<Vec<Vec<AnyBox>>> = Vec::with_capacity(graph.edges.len());
        let mut receivers: Vec<Vec<Vec<AnyBox>>> = graph
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Vec::new()).collect())
            .collect();
        for (ei, e) in graph.edges.iter().enumerate() {
            let ps = graph.vertices[e.source.0].parallelism as usize;
            let pt = graph.vertices[e.target.0].parallelism as usize;
            let mut per_sender: Vec<Vec<AnyBox>> = (0..ps).map(|_| Vec::new()).collect();
            if !plan.chained_edges.contains(&ei) {
                let ops = graph.vertices[e.target.0]
                    .input_type
                    .as_ref()
                    .expect("operators have an input type");
                for (i, sender) in per_sender.iter_mut().enumerate() {
                    let targets: Vec<usize> = if e.partitioning == Partitioning::Forward {
                        vec![i]
                    } else {
                        (0..pt).collect()
                    };
                    for j in targets {
                        let (tx, rx) = ops.channel(self.settings.channel_capacity);
                        sender.push(tx);
                        receivers[e.target.0][j].push(rx);
                    }
                }
            }
            senders.push(per_sender);
        }

        let mut tasks = Vec::new();
        for chain in &plan.chains {
            let head = chain[0];
            let tail = *chain.last().expect("chains are not empty");
            let p = graph.vertices[head.0].parallelism;
            let chain_name = chain
                .iter()
                .map(|v| graph.vertices[v.0].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
            for i in 0..p {
                let info_of = |v: VertexId| TaskInfo {
                    job_id,
                    job_name: job_name.clone(),
                    operator_name: graph.vertices[v.0].name.as_str().into(),
                    uid: plan.vertices[v.0].uid.clone(),
                    subtask_index: i,
                    parallelism: p,
                    max_parallelism: plan.vertices[v.0].max_parallelism,
                };
                let outputs: Vec<AnyBox> = graph
                    .outputs(tail)
                    .map(|(ei, e)| {
                        (e.writer)(WriterArgs {
                            channels: std::mem::take(&mut senders[ei][i as usize]),
                            sender_index: i as usize,
                            target_max_parallelism: plan.vertices[e.target.0].max_parallelism,
                            batch_size: self.settings.batch_size,
                            cancel: cancel.clone(),
                            sender: info_of(tail),
                            target_name: graph.vertices[e.target.0].name.as_str().into(),
                        })
                    })
                    .collect();
                let mut downstream = graph.vertices[tail.0].output_type.fan_out(outputs);
                for &v in chain[1..].iter().rev() {
                    match &graph.vertices[v.0].kind {
                        VertexKind::Operator(f) => downstream = f(&info_of(v), downstream),
                        VertexKind::Source(_) => unreachable!("sources only head chains"),
                    }
                }
                let head_v = &graph.vertices[head.0];
                let driver = match &head_v.kind {
                    VertexKind::Source(f) => f(&info_of(head), downstream),
                    VertexKind::Operator(f) => {
                        let head_op = f(&info_of(head), downstream);
                        head_v
                            .input_type
                            .as_ref()
                            .expect("operators have an input type")
                            .input_task(
                                std::mem::take(&mut receivers[head.0][i as usize]),
                                head_op,
                                info_of(head),
                            )
                    }
                };
                tasks.push((format!("{chain_name} ({}/{p})", i + 1), driver));
            }
        }
        tasks
    }
}

impl JobClient {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Asks every task to stop; `wait` then reports the cancellation.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for every task to end. The first operator failure cancels the
    /// rest and is returned.
    pub fn wait(self) -> Result<JobExecutionResult, JobError> {
        let mut failure: Option<Box<OperatorFailure>> = None;
        let mut cancelled = false;
        for _ in 0..self.threads.len() {
            let Ok(report) = self.reports.recv() else {
                break;
            };
            match report.result {
                Ok(()) => {}
                Err(TaskError::Operator(f)) => {
                    tracing::info!(task = %report.name, "task failed: {f}");
                    self.cancel.cancel();
                    failure.get_or_insert(f);
                }
                Err(TaskError::Cancelled) => {
                    cancelled = true;
                    self.cancel.cancel();
                }
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(failure) = failure {
            return Err(JobError::Failed {
                job_name: self.job_name,
                job_id: self.job_id,
                failure,
            });
        }
        if cancelled {
            return Err(JobError::Cancelled {
                job_name: self.job_name,
                job_id: self.job_id,
            });
        }
        Ok(JobExecutionResult {
            job_id: self.job_id,
            job_name: self.job_name,
            net_runtime: self.started.elapsed(),
        })
    }
}
