//! The JobManager's view of its TaskManagers: who is registered, where they
//! are, their slots, and when each was last heard from. Plain data (the
//! JobManager keeps it under one lock); deciding *when* to look for lost
//! TaskManagers is the heartbeat monitor's job.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::HeartbeatConfig;
use crate::handler::TaskManagerInfo;
use crate::heartbeat::{Liveness, Verdict};
use crate::ids::{RegistrationId, TaskManagerId};

/// Why slots cannot be reserved or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The TaskManager is not registered.
    #[error("TaskManager {0} is not registered")]
    UnknownTaskManager(TaskManagerId),
    /// Fewer slots are free than asked for.
    #[error("TaskManager {id} has {free} free slot(s), {asked} asked")]
    NotEnoughSlots {
        /// The TaskManager.
        id: TaskManagerId,
        /// Its free slots.
        free: u32,
        /// The slots asked for.
        asked: u32,
    },
}

/// One registered TaskManager.
#[derive(Debug, Clone)]
pub struct RegisteredTaskManager {
    /// What it registered with.
    pub info: TaskManagerInfo,
    /// Slots not reserved by the job deployment layer.
    pub free_slots: u32,
    /// When it last registered (wall clock).
    pub registered_at: SystemTime,
    /// When it was last heard from (wall clock, for the REST API).
    pub last_heartbeat: SystemTime,
    liveness: Liveness,
}

impl RegisteredTaskManager {
    /// Milliseconds since the epoch of the last heartbeat.
    pub fn last_heartbeat_ms(&self) -> u64 {
        self.last_heartbeat
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Every registered TaskManager, by id.
#[derive(Debug, Default)]
pub struct TaskManagerRegistry {
    entries: BTreeMap<TaskManagerId, RegisteredTaskManager>,
}

impl TaskManagerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a registration; returns the one it replaces when the same
    /// TaskManager registers again while still registered.
    pub fn register(
        &mut self,
        info: TaskManagerInfo,
        now: Instant,
    ) -> Option<RegisteredTaskManager> {
        let wall = SystemTime::now();
        let entry = RegisteredTaskManager {
            free_slots: info.slots,
            info,
            registered_at: wall,
            last_heartbeat: wall,
            liveness: Liveness::new(now),
        };
        self.entries.insert(entry.info.id.clone(), entry)
    }

    /// Whether `registration` is `id`'s current one.
    pub fn is_current(&self, id: &TaskManagerId, registration: &RegistrationId) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| &e.info.registration == registration)
    }

    /// The TaskManager of `registration` was heard from; `false` when that
    /// registration is not (any more) current.
    pub fn contact(
        &mut self,
        id: &TaskManagerId,
        registration: &RegistrationId,
        now: Instant,
    ) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if &e.info.registration == registration => {
                e.liveness.contact(now);
                e.last_heartbeat = SystemTime::now();
                true
            }
            _ => false,
        }
    }

    /// A heartbeat to the TaskManager of `registration` found its endpoint
    /// refusing connections.
    pub fn refused(&mut self, id: &TaskManagerId, registration: &RegistrationId) {
        if let Some(e) = self.entries.get_mut(id)
            && &e.info.registration == registration
        {
            e.liveness.refused();
        }
    }

    /// The TaskManagers to declare lost at `now`, with why (they stay
    /// registered until [`TaskManagerRegistry::remove`]).
    pub fn lost(
        &self,
        now: Instant,
        heartbeat: &HeartbeatConfig,
    ) -> Vec<(TaskManagerId, RegistrationId, String)> {
        self.entries
            .values()
            .filter_map(|e| {
                let verdict: Verdict =
                    e.liveness
                        .verdict(now, heartbeat.timeout, heartbeat.rpc_failure_threshold);
                verdict
                    .reason()
                    .map(|r| (e.info.id.clone(), e.info.registration.clone(), r))
            })
            .collect()
    }

    /// Drops `id` if `registration` is still its current one.
    pub fn remove(
        &mut self,
        id: &TaskManagerId,
        registration: &RegistrationId,
    ) -> Option<RegisteredTaskManager> {
        if self.is_current(id, registration) {
            self.entries.remove(id)
        } else {
            None
        }
    }

    /// One TaskManager.
    pub fn get(&self, id: &TaskManagerId) -> Option<&RegisteredTaskManager> {
        self.entries.get(id)
    }

    /// Every TaskManager, by id.
    pub fn iter(&self) -> impl Iterator<Item = &RegisteredTaskManager> {
        self.entries.values()
    }

    /// How many are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total and free slots over all TaskManagers.
    pub fn slots(&self) -> (u32, u32) {
        self.entries
            .values()
            .fold((0, 0), |(t, f), e| (t + e.info.slots, f + e.free_slots))
    }

    /// Reserves `n` of `id`'s free slots (the job deployment layer's
    /// accounting; the TaskManager is not asked).
    pub fn reserve_slots(&mut self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| SlotError::UnknownTaskManager(id.clone()))?;
        if e.free_slots < n {
            return Err(SlotError::NotEnoughSlots {
                id: id.clone(),
                free: e.free_slots,
                asked: n,
            });
        }
        e.free_slots -= n;
        Ok(())
    }

    /// Gives back `n` reserved slots of `id` (never more than it has).
    pub fn release_slots(&mut self, id: &TaskManagerId, n: u32) -> Result<(), SlotError> {
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| SlotError::UnknownTaskManager(id.clone()))?;
        e.free_slots = (e.free_slots + n).min(e.info.slots);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info(id: &str, reg: &str, slots: u32) -> TaskManagerInfo {
        TaskManagerInfo {
            id: TaskManagerId::new(id),
            registration: RegistrationId::new(reg),
            rpc_address: "127.0.0.2:1".into(),
            data_address: "127.0.0.2:2".into(),
            slots,
            hardware: None,
        }
    }

    #[test]
    fn registrations_heartbeats_loss_and_slots() {
        let hb = HeartbeatConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(1500),
            rpc_failure_threshold: 2,
        };
        let t0 = Instant::now();
        let mut r = TaskManagerRegistry::new();
        assert!(r.register(info("a", "r1", 2), t0).is_none());
        assert!(r.register(info("b", "r1", 3), t0).is_none());
        assert_eq!(r.slots(), (5, 5));
        r.reserve_slots(&TaskManagerId::new("b"), 2).unwrap();
        assert!(matches!(
            r.reserve_slots(&TaskManagerId::new("b"), 2),
            Err(SlotError::NotEnoughSlots { free: 1, .. })
        ));
        assert_eq!(r.slots(), (5, 3));
        let (a, r1) = (TaskManagerId::new("a"), RegistrationId::new("r1"));
        assert!(r.contact(&a, &r1, t0 + Duration::from_secs(1)));
        assert!(!r.contact(&a, &RegistrationId::new("old"), t0));
        let lost = r.lost(t0 + Duration::from_secs(2), &hb);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, TaskManagerId::new("b"));
        assert!(lost[0].2.contains("timed out"), "{}", lost[0].2);
        // A re-registration replaces the old one; removing the old one is a no-op.
        let old = r.register(info("a", "r2", 2), t0).unwrap();
        assert_eq!(old.info.registration, r1);
        assert!(r.remove(&a, &r1).is_none());
        assert!(r.remove(&a, &RegistrationId::new("r2")).is_some());
        assert_eq!(r.len(), 1);
    }
}
