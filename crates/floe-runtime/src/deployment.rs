//! Deployment: turning a planned job into the tasks of one process.
//!
//! Embedded, one process runs every subtask and every channel is local. In
//! a cluster each TaskManager builds only the subtasks placed on it, and a
//! channel whose ends are in two processes is made of the network stack's
//! byte channels (`remote.rs`). Both build through [`build_tasks`], so a
//! subtask is wired the same wherever it runs: its input channels in the
//! same order (an unaligned checkpoint's channel state is kept in that
//! order) and its task index the same (the checkpoint coordinator
//! addresses tasks by it).

use std::sync::Arc;

use floe_core::JobId;

use crate::channel::CancelFlag;
use crate::context::TaskInfo;
use crate::graph::{
    AnyBox, JobGraph, Partitioning, SideOutputEdge, StreamTypeOps, VertexId, VertexKind, WriterArgs,
};
use crate::metered::MeteredSide;
use crate::metrics::{JobMetrics, TaskTimes};
use crate::plan::ExecutionPlan;
use crate::remote::ChannelId;
use crate::side_output::SideOutputs;
use crate::task::TaskDriver;

/// Where each subtask runs, and how a channel to or from another process
/// is made. The embedded runtime is [`LocalWiring`].
pub trait ExchangeWiring {
    /// Whether subtask `subtask` of chain `chain` (an index into
    /// [`ExecutionPlan::chains`]) runs in this process.
    fn is_local(&self, chain: usize, subtask: u32) -> bool;

    /// The sending end of `channel`, whose receiver runs in another
    /// process: a `Box<dyn OutputChannel<T>>` made by `ops`.
    fn remote_output(
        &mut self,
        channel: ChannelId,
        ops: &dyn StreamTypeOps,
    ) -> Result<AnyBox, WiringError>;

    /// The receiving end of `channel`, whose sender runs in another
    /// process: an `InputChannel<T>` made by `ops` that holds at most
    /// `capacity` messages.
    fn remote_input(
        &mut self,
        channel: ChannelId,
        ops: &dyn StreamTypeOps,
        capacity: usize,
        times: Arc<TaskTimes>,
    ) -> Result<AnyBox, WiringError>;
}

/// A channel to or from another process could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect {channel}: {reason}")]
pub struct WiringError {
    /// The channel.
    pub channel: ChannelId,
    /// Why (the network stack's error).
    pub reason: String,
}

/// Every subtask in this process: every channel is local.
pub struct LocalWiring;

impl ExchangeWiring for LocalWiring {
    fn is_local(&self, _chain: usize, _subtask: u32) -> bool {
        true
    }

    fn remote_output(
        &mut self,
        channel: ChannelId,
        _ops: &dyn StreamTypeOps,
    ) -> Result<AnyBox, WiringError> {
        unreachable!("no channel leaves an embedded job ({channel})")
    }

    fn remote_input(
        &mut self,
        channel: ChannelId,
        _: &dyn StreamTypeOps,
        _: usize,
        _: Arc<TaskTimes>,
    ) -> Result<AnyBox, WiringError> {
        unreachable!("no channel enters an embedded job ({channel})")
    }
}

/// What building a job's tasks needs.
pub struct BuildContext<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its name, shown in task names and errors.
    pub job_name: &'a str,
    /// The logical graph.
    pub graph: &'a JobGraph,
    /// Its plan.
    pub plan: &'a ExecutionPlan,
    /// The run's cancellation flag.
    pub cancel: &'a CancelFlag,
    /// Where operators and tasks account.
    pub metrics: &'a JobMetrics,
    /// Messages per channel.
    pub channel_capacity: usize,
    /// Records per batch.
    pub batch_size: usize,
}

/// One task of a run, built and ready to deploy.
pub struct BuiltTask {
    /// Its index among all tasks of the job (see [`task_index`]).
    pub index: usize,
    /// `<chain> (<subtask>/<parallelism>)`.
    pub name: String,
    /// Whether its chain starts with a source.
    pub is_source: bool,
    /// The loop that runs it.
    pub driver: Box<dyn TaskDriver>,
    /// Where it accounts for its time.
    pub times: Arc<TaskTimes>,
}

/// The index of subtask `subtask` of chain `chain` among all tasks of the
/// job: chains in plan order, each chain's subtasks in order. Every
/// process derives the same index from the same plan.
pub fn task_index(graph: &JobGraph, plan: &ExecutionPlan, chain: usize, subtask: u32) -> usize {
    plan.chains[..chain]
        .iter()
        .map(|c| graph.vertices[c[0].0].parallelism as usize)
        .sum::<usize>()
        + subtask as usize
}

/// Every task of the job in [`task_index`] order: the operators of its
/// chain and its subtask (what checkpoint statistics are reported against).
pub fn task_layout(graph: &JobGraph, plan: &ExecutionPlan) -> crate::checkpoint::TaskLayout {
    plan.chains
        .iter()
        .flat_map(|chain| {
            let vertices: Vec<usize> = chain.iter().map(|v| v.0).collect();
            (0..graph.vertices[chain[0].0].parallelism).map(move |subtask| {
                crate::checkpoint::TaskPosition {
                    vertices: vertices.clone(),
                    subtask,
                }
            })
        })
        .collect()
}

/// The number of tasks of the job.
pub fn task_count(graph: &JobGraph, plan: &ExecutionPlan) -> usize {
    task_index(graph, plan, plan.chains.len(), 0)
}

/// A task as every process of a cluster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    /// `<chain> (<subtask>/<parallelism>)`.
    pub name: String,
    /// Its subtask index.
    pub subtask: u32,
    /// Its chain's parallelism.
    pub parallelism: u32,
    /// Whether its chain starts with a source (the checkpoint coordinator
    /// triggers sources).
    pub is_source: bool,
}

/// Every task of the job in task-index order: what a JobManager tells the
/// checkpoint coordinator about tasks it does not run, and how it names a
/// task whose process is gone.
pub fn task_summaries(graph: &JobGraph, plan: &ExecutionPlan) -> Vec<TaskSummary> {
    plan.chains
        .iter()
        .flat_map(|chain| {
            let head = &graph.vertices[chain[0].0];
            let (p, is_source) = (head.parallelism, matches!(head.kind, VertexKind::Source(_)));
            let name = chain_name(graph, chain);
            (0..p).map(move |i| TaskSummary {
                name: format!("{name} ({}/{p})", i + 1),
                subtask: i,
                parallelism: p,
                is_source,
            })
        })
        .collect()
}

fn chain_name(graph: &JobGraph, chain: &[VertexId]) -> String {
    chain
        .iter()
        .map(|v| graph.vertices[v.0].name.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Builds the tasks `wiring` places in this process, with a channel per
/// (sender, receiver) pair of every exchange that has an end here.
pub fn build_tasks(
    cx: &BuildContext<'_>,
    wiring: &mut dyn ExchangeWiring,
) -> Result<Vec<BuiltTask>, WiringError> {
    let BuildContext {
        job_id,
        graph,
        plan,
        cancel,
        metrics,
        ..
    } = *cx;
    let job_name: Arc<str> = cx.job_name.into();
    let mut chain_of = vec![0; graph.vertices.len()];
    for (c, chain) in plan.chains.iter().enumerate() {
        for v in chain {
            chain_of[v.0] = c;
        }
    }
    // senders[edge][sending subtask] and receivers[vertex][subtask]: only
    // the ends in this process are filled.
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
                let sends_here = wiring.is_local(chain_of[e.source.0], i as u32);
                for j in targets {
                    let receives_here = wiring.is_local(chain_of[e.target.0], j as u32);
                    let id = ChannelId {
                        edge: ei as u32,
                        sender: i as u32,
                        receiver: j as u32,
                    };
                    match (sends_here, receives_here) {
                        (true, true) => {
                            let (tx, rx) = ops.channel(cx.channel_capacity);
                            sender.push(tx);
                            receivers[e.target.0][j].push(rx);
                        }
                        (true, false) => sender.push(wiring.remote_output(id, ops.as_ref())?),
                        (false, true) => receivers[e.target.0][j].push(wiring.remote_input(
                            id,
                            ops.as_ref(),
                            cx.channel_capacity,
                            cx.metrics.task(e.target.0, j as u32),
                        )?),
                        (false, false) => {}
                    }
                }
            }
        }
        senders.push(per_sender);
    }

    let mut tasks = Vec::new();
    for (c, chain) in plan.chains.iter().enumerate() {
        let head = chain[0];
        let tail = *chain.last().expect("chains are not empty");
        let p = graph.vertices[head.0].parallelism;
        let chain_name = chain_name(graph, chain);
        for i in (0..p).filter(|i| wiring.is_local(c, *i)) {
            let info_of = |v: VertexId| TaskInfo {
                job_id,
                job_name: job_name.clone(),
                operator_name: graph.vertices[v.0].name.as_str().into(),
                uid: plan.vertices[v.0].uid.clone(),
                subtask_index: i,
                parallelism: p,
                max_parallelism: plan.vertices[v.0].max_parallelism,
            };
            let mut outputs: Vec<AnyBox> = Vec::new();
            // Side outputs by tag, each with its edges' writers. Only a
            // chain's tail has them: side edges are never chained, and a
            // vertex with more than one output ends its chain.
            let mut side: Vec<(&SideOutputEdge, Vec<AnyBox>)> = Vec::new();
            for (ei, e) in graph.outputs(tail) {
                let writer = (e.writer)(WriterArgs {
                    channels: std::mem::take(&mut senders[ei][i as usize]),
                    sender_index: i as usize,
                    target_max_parallelism: plan.vertices[e.target.0].max_parallelism,
                    batch_size: cx.batch_size,
                    cancel: cancel.clone(),
                    sender: info_of(tail),
                    target_name: graph.vertices[e.target.0].name.as_str().into(),
                });
                match &e.side_output {
                    None => outputs.push(writer),
                    Some(s) => match side.iter_mut().find(|(t, _)| t.tag == s.tag) {
                        Some((_, w)) => w.push(writer),
                        None => side.push((s, vec![writer])),
                    },
                }
            }
            let mut side_outputs = Some(SideOutputs::new(
                side.into_iter()
                    .map(|(s, writers)| (s.bind)(&s.tag, s.output_type.fan_out(writers)))
                    .collect(),
            ));
            let mut downstream = graph.vertices[tail.0].output_type.fan_out(outputs);
            // Every operator is counted on both sides (once per batch):
            // what it emits into `downstream`, what reaches it.
            let meter_out = |v: VertexId, downstream: AnyBox| {
                if !metrics.counts_io() {
                    return downstream;
                }
                let side = match graph.vertices[v.0].kind {
                    VertexKind::Source(_) => MeteredSide::Source,
                    VertexKind::Operator(_) => MeteredSide::Output,
                };
                graph.vertices[v.0]
                    .output_type
                    .metered(downstream, metrics.operator(v.0, i), side)
            };
            let meter_in = |v: VertexId, op: AnyBox| {
                if !metrics.counts_io() {
                    return op;
                }
                graph.vertices[v.0]
                    .input_type
                    .as_ref()
                    .expect("operators have an input type")
                    .metered(op, metrics.operator(v.0, i), MeteredSide::Input)
            };
            for &v in chain[1..].iter().rev() {
                let side = if v == tail {
                    side_outputs.take().unwrap_or_default()
                } else {
                    SideOutputs::default()
                };
                match &graph.vertices[v.0].kind {
                    VertexKind::Operator(f) => {
                        let op = f(&info_of(v), meter_out(v, downstream), side);
                        downstream = meter_in(v, op);
                    }
                    VertexKind::Source(_) => unreachable!("sources only head chains"),
                }
            }
            let head_v = &graph.vertices[head.0];
            let downstream = meter_out(head, downstream);
            let driver = match &head_v.kind {
                VertexKind::Source(f) => f(&info_of(head), downstream),
                VertexKind::Operator(f) => {
                    let side = side_outputs.take().unwrap_or_default();
                    let head_op = meter_in(head, f(&info_of(head), downstream, side));
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
            tasks.push(BuiltTask {
                index: task_index(graph, plan, c, i),
                name: format!("{chain_name} ({}/{p})", i + 1),
                is_source: matches!(head_v.kind, VertexKind::Source(_)),
                driver,
                times: metrics.task(head.0, i),
            });
        }
    }
    Ok(tasks)
}
