//! Restart strategies: whether, and after how long, a failed job restarts
//! from its latest completed checkpoint (Flink's semantics).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a job reacts to a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job at the first failure.
    None,
    /// Restart up to `attempts` times (`u32::MAX`: unlimited), waiting `delay`.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart unless more than `max_failures` happened within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The sliding window.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart with a backoff growing by `multiplier` up to `max_backoff`,
    /// reset after `reset_threshold` without failure; `jitter` (0..=1) spreads
    /// restarts of many jobs.
    ExponentialDelay {
        /// First backoff.
        initial_backoff: Duration,
        /// Largest backoff.
        max_backoff: Duration,
        /// Growth per failure.
        multiplier: f64,
        /// Quiet time after which the backoff starts over.
        reset_threshold: Duration,
        /// Relative random spread of each backoff.
        jitter: f64,
    },
}

impl RestartStrategy {
    /// Flink's default with checkpointing on: fixed delay, unlimited, 1 s.
    pub fn default_with_checkpointing() -> Self {
        RestartStrategy::FixedDelay {
            attempts: u32::MAX,
            delay: Duration::from_secs(1),
        }
    }
}

/// A strategy's memory of past failures within one job.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<Instant>,
    backoff: Option<Duration>,
    last_failure: Option<Instant>,
}

impl RestartTracker {
    /// A tracker for `strategy`.
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            failures: VecDeque::new(),
            backoff: None,
            last_failure: None,
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// A failure happened now: the delay before restarting, or `None` when
    /// the job must fail.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (self.restarts < *attempts).then_some(*delay)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > *interval)
                {
                    self.failures.pop_front();
                }
                (self.failures.len() as u32 <= *max_failures).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_threshold,
                jitter,
            } => {
                let reset = self
                    .last_failure
                    .is_none_or(|t| now.duration_since(t) >= *reset_threshold);
                let base = match (self.backoff, reset) {
                    (Some(b), false) => b.mul_f64(*multiplier).min(*max_backoff),
                    _ => *initial_backoff,
                };
                self.backoff = Some(base);
                let spread = if *jitter > 0.0 {
                    let r: f64 = rand::random::<f64>() * 2.0 - 1.0;
                    base.mul_f64((1.0 + r * jitter.clamp(0.0, 1.0)).max(0.0))
                } else {
                    base
                };
                Some(spread.min(*max_backoff))
            }
        };
        self.last_failure = Some(now);
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_counts_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(5),
        });
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(now), None);
        assert_eq!(
            RestartTracker::new(RestartStrategy::None).on_failure(now),
            None
        );
    }

    #[test]
    fn failure_rate_uses_a_sliding_window() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(10),
            delay: Duration::ZERO,
        });
        let t0 = Instant::now();
        assert!(t.on_failure(t0).is_some());
        assert!(t.on_failure(t0 + Duration::from_secs(1)).is_some());
        assert!(t.on_failure(t0 + Duration::from_secs(2)).is_none());
        // Once old failures leave the window, restarts are allowed again.
        assert!(t.on_failure(t0 + Duration::from_secs(13)).is_some());
    }

    #[test]
    fn exponential_backoff_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            multiplier: 2.0,
            reset_threshold: Duration::from_secs(60),
            jitter: 0.0,
        });
        let t0 = Instant::now();
        assert_eq!(t.on_failure(t0), Some(Duration::from_millis(100)));
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(1)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(2)),
            Some(Duration::from_millis(350))
        );
        assert_eq!(
            t.on_failure(t0 + Duration::from_secs(100)),
            Some(Duration::from_millis(100))
        );
    }
}
