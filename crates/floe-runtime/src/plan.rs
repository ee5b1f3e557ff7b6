//! The physical plan of a job: what planning decided (uids, key groups,
//! chains), shared by the JobManager that plans and every process that
//! builds tasks from it.

use std::collections::HashSet;
use std::sync::Arc;

use crate::graph::VertexId;

/// A vertex after planning.
#[derive(Debug, Clone)]
pub struct PlannedVertex {
    /// Resolved uid.
    pub uid: Arc<str>,
    /// Resolved max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// Set explicitly (on the operator or job-wide), not derived.
    pub max_parallelism_explicit: bool,
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

impl ExecutionPlan {
    /// Fresh metrics for the tasks and operators of this plan of `graph`
    /// (every process running tasks of the job keeps its own).
    pub fn new_metrics(&self, graph: &crate::graph::JobGraph) -> Arc<crate::metrics::JobMetrics> {
        crate::metrics::JobMetrics::new(
            &graph
                .vertices
                .iter()
                .map(|v| v.parallelism)
                .collect::<Vec<_>>(),
            &self
                .chains
                .iter()
                .map(|c| c.iter().map(|v| v.0).collect())
                .collect::<Vec<_>>(),
        )
    }
}

/// `graph` with every operator's parallelism lowered to at most
/// `parallelism`: what a restart runs when the cluster lost slots (as
/// Flink's adaptive scheduler does). The plan of `graph` still holds for
/// it: uids and max parallelism (the key groups) do not depend on the
/// parallelism, and only forward edges chain, whose two sides have equal
/// parallelism before and after the cap. Deterministic, so the
/// JobManager and every TaskManager derive the same graph.
pub fn cap_parallelism(graph: &crate::graph::JobGraph, parallelism: u32) -> crate::graph::JobGraph {
    let mut capped = graph.clone();
    for v in &mut capped.vertices {
        v.parallelism = v.parallelism.min(parallelism.max(1));
    }
    capped
}

/// What must be equal in every process that builds tasks of one job: the
/// vertices with their uids and parallelism, the edges, the chains. Each
/// process of a cluster builds the job's graph by running the job's
/// function itself; a process whose build or arguments differ would wire
/// different tasks, so it compares signatures first and refuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanSignature {
    /// Per vertex: name, uid, parallelism, max parallelism.
    pub vertices: Vec<(String, String, u32, u32)>,
    /// Per edge: source, target, partitioning, side-output tag.
    pub edges: Vec<(usize, usize, String, Option<String>)>,
    /// Chains by vertex index.
    pub chains: Vec<Vec<usize>>,
}

impl PlanSignature {
    /// The signature of `plan` of `graph`.
    pub fn of(graph: &crate::graph::JobGraph, plan: &ExecutionPlan) -> Self {
        PlanSignature {
            vertices: graph
                .vertices
                .iter()
                .zip(&plan.vertices)
                .map(|(v, p)| {
                    (
                        v.name.clone(),
                        p.uid.to_string(),
                        v.parallelism,
                        p.max_parallelism,
                    )
                })
                .collect(),
            edges: graph
                .edges
                .iter()
                .map(|e| {
                    (
                        e.source.0,
                        e.target.0,
                        e.partitioning.to_string(),
                        e.side_output.as_ref().map(|s| s.tag.to_string()),
                    )
                })
                .collect(),
            chains: plan
                .chains
                .iter()
                .map(|c| c.iter().map(|v| v.0).collect())
                .collect(),
        }
    }

    /// The first difference from `expected`, in words; `None` if equal.
    pub fn mismatch(&self, expected: &PlanSignature) -> Option<String> {
        if self.vertices.len() != expected.vertices.len() {
            return Some(format!(
                "{} operators here, {} expected",
                self.vertices.len(),
                expected.vertices.len()
            ));
        }
        for (i, (a, b)) in self.vertices.iter().zip(&expected.vertices).enumerate() {
            if a != b {
                return Some(format!(
                    "operator {i} is '{}' (uid {}, parallelism {}, max parallelism {}) here, \
                     '{}' (uid {}, parallelism {}, max parallelism {}) expected",
                    a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3
                ));
            }
        }
        if self.edges != expected.edges {
            return Some("the operators are connected differently".into());
        }
        if self.chains != expected.chains {
            return Some("the operators are chained differently".into());
        }
        None
    }
}
