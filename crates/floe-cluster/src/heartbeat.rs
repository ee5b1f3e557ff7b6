//! Failure detection of one heartbeat target, the same on both sides: the
//! JobManager keeps one [`Liveness`] per TaskManager, a TaskManager one for
//! its JobManager.
//!
//! A target is lost when nothing was heard from it for `heartbeat.timeout`
//! (a frozen or partitioned process: its socket may still accept), or at
//! once when `heartbeat.rpc-failure-threshold` heartbeat RPCs in a row found
//! its endpoint refusing connections (a dead process on a live host: no
//! need to wait out the timeout). Anything heard — a heartbeat received, a
//! heartbeat answered — counts as contact and resets both.

use std::time::{Duration, Instant};

/// Whether a heartbeat target is still considered alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently enough.
    Alive,
    /// Silent for longer than the timeout.
    TimedOut {
        /// How long nothing was heard.
        silent_for: Duration,
    },
    /// Its endpoint refused this many connections in a row.
    Unreachable {
        /// The refusals.
        refusals: u32,
    },
}

impl Verdict {
    /// Why the target is lost, for logs and handlers; `None` while alive.
    pub fn reason(&self) -> Option<String> {
        match self {
            Verdict::Alive => None,
            Verdict::TimedOut { silent_for } => Some(format!(
                "heartbeat timed out: nothing heard for {} ms",
                silent_for.as_millis()
            )),
            Verdict::Unreachable { refusals } => Some(format!(
                "heartbeat target unreachable: {refusals} connection attempts in a row were refused"
            )),
        }
    }
}

/// What is known about one heartbeat target.
#[derive(Debug, Clone)]
pub struct Liveness {
    last_contact: Instant,
    refusals_in_a_row: u32,
}

impl Liveness {
    /// A target just heard from (it registered, or was registered with).
    pub fn new(now: Instant) -> Self {
        Liveness {
            last_contact: now,
            refusals_in_a_row: 0,
        }
    }

    /// Something was heard from the target.
    pub fn contact(&mut self, now: Instant) {
        self.last_contact = self.last_contact.max(now);
        self.refusals_in_a_row = 0;
    }

    /// A heartbeat RPC found the target's endpoint refusing connections.
    pub fn refused(&mut self) {
        self.refusals_in_a_row = self.refusals_in_a_row.saturating_add(1);
    }

    /// When the target was last heard from.
    pub fn last_contact(&self) -> Instant {
        self.last_contact
    }

    /// Whether the target is alive at `now`, given the timeout and how many
    /// refused connections in a row make it unreachable.
    pub fn verdict(&self, now: Instant, timeout: Duration, refusal_threshold: u32) -> Verdict {
        let silent_for = now.saturating_duration_since(self.last_contact);
        if silent_for > timeout {
            Verdict::TimedOut { silent_for }
        } else if self.refusals_in_a_row >= refusal_threshold {
            Verdict::Unreachable {
                refusals: self.refusals_in_a_row,
            }
        } else {
            Verdict::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_timeout_or_refusals_in_a_row_lose_a_target() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(1500);
        let mut l = Liveness::new(t0);
        assert_eq!(l.verdict(t0 + timeout, timeout, 2), Verdict::Alive);
        assert!(matches!(
            l.verdict(t0 + timeout + Duration::from_millis(1), timeout, 2),
            Verdict::TimedOut { .. }
        ));
        l.refused();
        assert_eq!(l.verdict(t0, timeout, 2), Verdict::Alive);
        l.refused();
        assert_eq!(
            l.verdict(t0, timeout, 2),
            Verdict::Unreachable { refusals: 2 }
        );
        l.contact(t0 + Duration::from_secs(1));
        assert_eq!(
            l.verdict(t0 + Duration::from_secs(2), timeout, 2),
            Verdict::Alive
        );
        // Contact never moves backwards.
        l.contact(t0);
        assert_eq!(l.last_contact(), t0 + Duration::from_secs(1));
        assert!(
            Verdict::Unreachable { refusals: 2 }
                .reason()
                .unwrap()
                .contains("refused")
        );
    }
}
