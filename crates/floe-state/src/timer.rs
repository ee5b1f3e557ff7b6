//! Timers as keyed state: what a keyed operator schedules per key and
//! namespace, kept by the state backend (Flink's `InternalTimerService`
//! over `KeyGroupPartitionedPriorityQueue`).
//!
//! A function registers a named queue once ([`KeyedStateBackend::timer_queue`]
//! in `open`); each queue holds event-time and processing-time timers. A
//! timer is `(timestamp, key, namespace)` in one [`TimeDomain`], unique: a
//! second registration of the same one is a no-op. Timers live per key group
//! in the backend's store, go into every snapshot and savepoint, and are
//! restored and rescaled by key group like any keyed state.
//!
//! Timers fire in one total order, the same on every backend and after any
//! restore: by timestamp, then key group, then the key's canonical
//! (postcard) bytes, then the namespace's. The runtime polls them one at a
//! time ([`KeyedStateBackend::poll_timer`]) and may register or delete
//! timers between two polls; nothing is held across polls.
//!
//! This module only defines the public types; the storage is in each
//! store (`store/heap_timers.rs`, `store/rocks_timers.rs`), the calls in
//! the backend.
//!
//! [`KeyedStateBackend::timer_queue`]: crate::KeyedStateBackend::timer_queue
//! [`KeyedStateBackend::poll_timer`]: crate::KeyedStateBackend::poll_timer

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use floe_core::KeyGroup;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which clock a timer follows. Each queue keeps the two apart, since they
/// advance independently (watermarks and the wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the operator's watermark reaches the timestamp.
    EventTime,
    /// Fires when the wall clock reaches the timestamp.
    ProcessingTime,
}

impl TimeDomain {
    /// Both domains, in code order.
    pub const ALL: [TimeDomain; 2] = [TimeDomain::EventTime, TimeDomain::ProcessingTime];

    /// The domain's code in snapshots and RocksDB keys; never renumber.
    #[inline]
    pub fn code(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }

    /// The domain of a code.
    #[inline]
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TimeDomain::EventTime),
            1 => Some(TimeDomain::ProcessingTime),
            _ => None,
        }
    }

    /// The domain's index in per-domain arrays.
    #[inline]
    pub(crate) fn index(self) -> usize {
        self.code() as usize
    }
}

impl fmt::Display for TimeDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeDomain::EventTime => "event time",
            TimeDomain::ProcessingTime => "processing time",
        })
    }
}

/// What a timer's namespace must be: `()` for a process function, a window
/// later. Hashable (a registration that exists is found without encoding)
/// and serializable (snapshots, RocksDB, and the firing order, which
/// compares encoded bytes).
pub trait Namespace:
    Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Namespace for T {}

/// A registered timer queue, as the operator keeps it (like a state
/// handle): small, `Copy`, usable only with the backend that registered it.
pub struct TimerQueue<N> {
    /// The queue's registration index (shared with states).
    pub(crate) id: u32,
    /// The registering backend's identity.
    pub(crate) owner: u64,
    _n: PhantomData<fn() -> N>,
}

impl<N> TimerQueue<N> {
    pub(crate) fn new(id: u32, owner: u64) -> Self {
        TimerQueue {
            id,
            owner,
            _n: PhantomData,
        }
    }
}

impl<N> Clone for TimerQueue<N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for TimerQueue<N> {}

impl<N> fmt::Debug for TimerQueue<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerQueue").field("id", &self.id).finish()
    }
}

/// A timer taken off its queue because it is due: what `on_timer` is
/// called with, after the runtime made `key` the current key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// When it was due.
    pub timestamp: i64,
    /// The key it was registered under.
    pub key: K,
    /// That key's key group (to set it as the current key without hashing
    /// it again).
    pub key_group: KeyGroup,
    /// The namespace it was registered with.
    pub namespace: N,
}
