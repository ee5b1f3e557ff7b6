//! A run's channels to other TaskManagers, on the data plane.

use std::sync::Arc;

use floe_core::JobId;
use floe_network::{NetworkEnvironment, Peer};
use floe_runtime::deployment::{ExchangeWiring, WiringError};
use floe_runtime::graph::{AnyBox, JobGraph, StreamTypeOps};
use floe_runtime::metrics::TaskTimes;
use floe_runtime::plan::ExecutionPlan;
use floe_runtime::remote::ChannelId;

/// Places a run's subtasks as its deployment says and makes the channels
/// that cross TaskManagers on this TaskManager's data plane.
pub(crate) struct NetworkWiring<'a> {
    pub network: &'a NetworkEnvironment,
    pub job: JobId,
    pub attempt: u64,
    /// Per chain, per subtask: the index of its TaskManager in `peers`.
    pub placement: &'a [Vec<u32>],
    /// The run's TaskManagers.
    pub peers: &'a [Peer],
    /// Which of `peers` this TaskManager is.
    pub this_peer: u32,
    /// Per edge: the chains of its source and its target.
    pub edge_chains: Vec<(usize, usize)>,
}

impl<'a> NetworkWiring<'a> {
    /// Per edge of `graph`, the chains of its ends in `plan`.
    pub fn edge_chains(graph: &JobGraph, plan: &ExecutionPlan) -> Vec<(usize, usize)> {
        let mut chain_of = vec![0; graph.vertices.len()];
        for (c, chain) in plan.chains.iter().enumerate() {
            for v in chain {
                chain_of[v.0] = c;
            }
        }
        graph
            .edges
            .iter()
            .map(|e| (chain_of[e.source.0], chain_of[e.target.0]))
            .collect()
    }

    fn peer(&self, chain: usize, subtask: u32, channel: ChannelId) -> Result<&Peer, WiringError> {
        self.placement
            .get(chain)
            .and_then(|c| c.get(subtask as usize))
            .and_then(|p| self.peers.get(*p as usize))
            .ok_or_else(|| WiringError {
                channel,
                reason: format!("subtask {subtask} of chain {chain} is placed nowhere"),
            })
    }
}

impl ExchangeWiring for NetworkWiring<'_> {
    fn is_local(&self, chain: usize, subtask: u32) -> bool {
        self.placement
            .get(chain)
            .and_then(|c| c.get(subtask as usize))
            .is_some_and(|p| *p == self.this_peer)
    }

    fn remote_output(
        &mut self,
        channel: ChannelId,
        ops: &dyn StreamTypeOps,
    ) -> Result<AnyBox, WiringError> {
        let (_, target_chain) = self.edge_chains[channel.edge as usize];
        let peer = *self.peer(target_chain, channel.receiver, channel)?;
        let sink = self
            .network
            .output(self.job, self.attempt, &peer, channel)
            .map_err(|e| WiringError {
                channel,
                reason: e.to_string(),
            })?;
        Ok(ops.remote_output(sink))
    }

    fn remote_input(
        &mut self,
        channel: ChannelId,
        ops: &dyn StreamTypeOps,
        capacity: usize,
        times: Arc<TaskTimes>,
    ) -> Result<AnyBox, WiringError> {
        let (source_chain, _) = self.edge_chains[channel.edge as usize];
        let peer = *self.peer(source_chain, channel.sender, channel)?;
        self.network
            .register_input(
                self.job,
                self.attempt,
                &peer,
                channel,
                capacity,
                |credits| ops.remote_input(capacity, credits, times),
            )
            .map_err(|e| WiringError {
                channel,
                reason: e.to_string(),
            })
    }
}
