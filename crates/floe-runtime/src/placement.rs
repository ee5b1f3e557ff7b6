//! Which TaskManager runs each subtask (cluster mode).
//!
//! As Flink with slot sharing: a job needs as many slots as its largest
//! parallelism, and slot `i` runs subtask `i` of every chain, so the
//! subtasks that exchange the most (same index, forward edges) share a
//! process. Slots are taken round robin over the TaskManagers (Flink's
//! `cluster.evenly-spread-out-slots`), so a job at parallelism 2 on two
//! TaskManagers uses both, and the loss of one TaskManager costs as few
//! subtasks as it can.

use crate::graph::JobGraph;
use crate::plan::ExecutionPlan;

/// A job needs more slots than the TaskManagers offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job needs {needed} task slots (its largest parallelism) and the cluster offers \
     {available}: start more TaskManagers, give them more slots \
     (taskmanager.numberOfTaskSlots), or lower the job's parallelism"
)]
pub struct NotEnoughSlots {
    /// Slots the job needs.
    pub needed: u32,
    /// Free slots of all TaskManagers.
    pub available: u32,
}

/// The slots a job needs: its largest parallelism.
pub fn slots_needed(graph: &JobGraph) -> u32 {
    graph
        .vertices
        .iter()
        .map(|v| v.parallelism)
        .max()
        .unwrap_or(0)
}

/// Places every subtask: per chain of `plan`, per subtask, the index of
/// its TaskManager in `free_slots` (each TaskManager's free slots, in the
/// order the caller lists them).
pub fn place_subtasks(
    graph: &JobGraph,
    plan: &ExecutionPlan,
    free_slots: &[u32],
) -> Result<Vec<Vec<u32>>, NotEnoughSlots> {
    let needed = slots_needed(graph);
    let slots = assign_slots(needed, free_slots)?;
    Ok(plan
        .chains
        .iter()
        .map(|chain| {
            let p = graph.vertices[chain[0].0].parallelism as usize;
            slots[..p].to_vec()
        })
        .collect())
}

/// The TaskManager of each of `needed` slots, round robin over those with
/// free slots left.
fn assign_slots(needed: u32, free_slots: &[u32]) -> Result<Vec<u32>, NotEnoughSlots> {
    let available: u32 = free_slots.iter().sum();
    if needed > available {
        return Err(NotEnoughSlots { needed, available });
    }
    let mut left = free_slots.to_vec();
    let mut slots = Vec::with_capacity(needed as usize);
    while slots.len() < needed as usize {
        for (tm, free) in left.iter_mut().enumerate() {
            if *free > 0 && slots.len() < needed as usize {
                *free -= 1;
                slots.push(tm as u32);
            }
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_round_robin_over_taskmanagers_with_room() {
        assert_eq!(assign_slots(2, &[1, 1]).unwrap(), [0, 1]);
        assert_eq!(assign_slots(4, &[2, 2]).unwrap(), [0, 1, 0, 1]);
        assert_eq!(assign_slots(5, &[1, 4, 0]).unwrap(), [0, 1, 1, 1, 1]);
        assert_eq!(assign_slots(3, &[2, 2, 2]).unwrap(), [0, 1, 2]);
        assert_eq!(assign_slots(0, &[]).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn too_few_slots_say_how_many_are_needed() {
        let e = assign_slots(4, &[1, 2]).unwrap_err();
        assert_eq!(
            e,
            NotEnoughSlots {
                needed: 4,
                available: 3
            }
        );
        assert!(e.to_string().contains("needs 4 task slots"), "{e}");
        assert!(e.to_string().contains("offers 3"), "{e}");
    }
}
