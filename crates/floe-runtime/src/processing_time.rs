//! Processing time: the wall clock a task's operators read, and how they
//! ask the task to call them back at a given time.
//!
//! A task runs its chain on one thread and never blocks on a timer. An
//! operator that needs to act at a time (a processing-time timer, the
//! periodic watermark emission) calls [`ProcessingTimeService::request_wakeup`];
//! the task's loop checks the earliest request between batches (one
//! relaxed atomic load), bounds its waits by it, and when it is due calls
//! [`Operator::on_processing_time`](crate::Operator::on_processing_time)
//! down the chain. The clock is injectable so tests can move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Where processing time is read: the system clock, or a clock a test
/// moves (shared by every task of the job).
#[derive(Debug, Clone, Default)]
pub enum ProcessingClock {
    /// Milliseconds since the Unix epoch.
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(ManualClock),
}

impl ProcessingClock {
    /// The current processing time, in milliseconds.
    #[inline]
    pub fn now_ms(&self) -> i64 {
        match self {
            ProcessingClock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            ProcessingClock::Manual(c) => c.now_ms(),
        }
    }
}

/// A processing-time clock moved by hand, for tests of processing-time
/// timers and idleness that must not depend on how fast the machine is.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn new(ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    /// The time it shows.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves it to `ms` (never backwards).
    pub fn set_ms(&self, ms: i64) {
        self.0.fetch_max(ms, Ordering::AcqRel);
    }

    /// Moves it forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::AcqRel);
    }
}

/// One task's processing time: its clock, and the earliest time an
/// operator of its chain asked to be called back.
#[derive(Debug, Clone)]
pub struct ProcessingTimeService {
    clock: ProcessingClock,
    /// `i64::MAX` when nobody waits.
    wakeup: Arc<AtomicI64>,
}

impl Default for ProcessingTimeService {
    fn default() -> Self {
        Self::new(ProcessingClock::System)
    }
}

impl ProcessingTimeService {
    /// A service over `clock` with no wake-up requested.
    pub fn new(clock: ProcessingClock) -> Self {
        ProcessingTimeService {
            clock,
            wakeup: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// A service for another task over the same clock.
    pub fn for_task(&self) -> Self {
        Self::new(self.clock.clone())
    }

    /// The current processing time in milliseconds.
    #[inline]
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Asks for a call of `on_processing_time` once the clock reaches
    /// `at_ms` (the earliest of all requests wins; an operator asks again
    /// for what it still waits for after each call).
    #[inline]
    pub fn request_wakeup(&self, at_ms: i64) {
        self.wakeup.fetch_min(at_ms, Ordering::Relaxed);
    }

    /// The earliest requested wake-up, `None` when nobody waits.
    #[inline]
    pub fn next_wakeup(&self) -> Option<i64> {
        let at = self.wakeup.load(Ordering::Relaxed);
        (at != i64::MAX).then_some(at)
    }

    /// If a wake-up is due, clears it and returns the time to pass to
    /// the chain. Cheap when nothing is requested: no clock read.
    #[inline]
    pub fn take_due(&self) -> Option<i64> {
        let at = self.next_wakeup()?;
        let now = self.now_ms();
        if now < at {
            return None;
        }
        self.wakeup.store(i64::MAX, Ordering::Relaxed);
        Some(now)
    }

    /// How long a task may wait for input before a wake-up is due, at
    /// most `max`.
    pub fn wait_bound(&self, max: Duration) -> Duration {
        match self.next_wakeup() {
            None => max,
            Some(at) => {
                let left = at.saturating_sub(self.now_ms()).max(0) as u64;
                max.min(Duration::from_millis(left))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_request_is_due_once() {
        let clock = ManualClock::new(1_000);
        let s = ProcessingTimeService::new(ProcessingClock::Manual(clock.clone()));
        assert_eq!(s.take_due(), None);
        s.request_wakeup(1_500);
        s.request_wakeup(1_200);
        assert_eq!(s.next_wakeup(), Some(1_200));
        assert_eq!(
            s.wait_bound(Duration::from_secs(1)),
            Duration::from_millis(200)
        );
        assert_eq!(s.take_due(), None);
        clock.advance(Duration::from_millis(300));
        assert_eq!(s.take_due(), Some(1_300));
        assert_eq!(s.take_due(), None, "cleared: the operator asks again");
        clock.set_ms(10);
        assert_eq!(clock.now_ms(), 1_300, "a manual clock never goes back");
    }
}
