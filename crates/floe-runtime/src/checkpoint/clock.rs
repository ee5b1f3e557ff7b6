//! Where the coordinator reads the time: the system clock in a job, a
//! clock the test moves by hand in the coordinator's unit tests.

use std::time::Instant;

/// A source of time for the coordinator's decisions (trigger interval,
/// minimum pause, timeout) and its statistics.
///
/// The coordinator is generic over it, and the system clock is a
/// zero-sized type, so a job pays no indirection for the tests' ability to
/// control time.
pub trait Clock: Send {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Milliseconds since the Unix epoch (a barrier's timestamp).
    fn epoch_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn epoch_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
