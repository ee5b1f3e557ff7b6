//! Restart strategies: whether, and after how long, a failed job restarts
//! from its latest completed checkpoint (Flink's semantics).
//!
//! A strategy is set in code or through the job configuration with Flink's
//! `restart-strategy.*` keys, read by [`RestartStrategy::from_configuration`],
//! so a Flink user's configuration carries over unchanged.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use floe_core::config::parse_duration_value;
use floe_core::{ConfigError, ConfigOption, Configuration};

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

    /// Reads the strategy named by `restart-strategy.type` and its sub-keys
    /// over Flink's defaults, so a Flink configuration carries over unchanged.
    ///
    /// `Ok(None)` when `restart-strategy.type` is unset: the caller then
    /// applies the default that depends on checkpointing (see
    /// [`RestartStrategy::default_with_checkpointing`]). As in Flink, sub-keys
    /// of another strategy type are ignored, not even parsed. A bad value is
    /// an error naming the key, the value and what is expected.
    pub fn from_configuration(
        config: &Configuration,
    ) -> Result<Option<RestartStrategy>, RestartConfigError> {
        use options::*;
        let Some(mut strategy) = config.get(&TYPE)? else {
            return Ok(None);
        };
        match &mut strategy {
            RestartStrategy::None => {}
            RestartStrategy::FixedDelay { attempts, delay } => {
                read(config, &FIXED_DELAY_ATTEMPTS, attempts)?;
                read(config, &FIXED_DELAY_DELAY, delay)?;
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                read(
                    config,
                    &FAILURE_RATE_MAX_FAILURES_PER_INTERVAL,
                    max_failures,
                )?;
                read(config, &FAILURE_RATE_INTERVAL, interval)?;
                read(config, &FAILURE_RATE_DELAY, delay)?;
            }
            RestartStrategy::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_threshold,
                jitter,
            } => {
                read(config, &EXPONENTIAL_DELAY_INITIAL_BACKOFF, initial_backoff)?;
                read(config, &EXPONENTIAL_DELAY_MAX_BACKOFF, max_backoff)?;
                read(config, &EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER, multiplier)?;
                read(
                    config,
                    &EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD,
                    reset_threshold,
                )?;
                read(config, &EXPONENTIAL_DELAY_JITTER_FACTOR, jitter)?;
                if initial_backoff > max_backoff {
                    // Blame the key the user set; the other one may be a default.
                    let (key, reason) = match config.get_raw(EXPONENTIAL_DELAY_MAX_BACKOFF.key) {
                        Some(_) => (
                            EXPONENTIAL_DELAY_MAX_BACKOFF.key,
                            format!(
                                "expected at least {} ({initial_backoff:?})",
                                EXPONENTIAL_DELAY_INITIAL_BACKOFF.key
                            ),
                        ),
                        None => (
                            EXPONENTIAL_DELAY_INITIAL_BACKOFF.key,
                            format!(
                                "expected at most {} ({max_backoff:?})",
                                EXPONENTIAL_DELAY_MAX_BACKOFF.key
                            ),
                        ),
                    };
                    return Err(RestartConfigError::Inconsistent {
                        key,
                        value: config.get_raw(key).unwrap_or_default().to_string(),
                        reason,
                    });
                }
            }
        }
        Ok(Some(strategy))
    }
}

/// Overwrites `slot` with the option's value when the key is set.
fn read<T>(
    config: &Configuration,
    option: &ConfigOption<T>,
    slot: &mut T,
) -> Result<(), ConfigError> {
    if let Some(v) = config.get(option)? {
        *slot = v;
    }
    Ok(())
}

/// Why the restart strategy in a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RestartConfigError {
    /// A value does not parse or is out of range; the inner error names the
    /// key, the value and what is expected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two values that are each valid do not fit together (an initial
    /// backoff above the maximum backoff).
    #[error("invalid value {value:?} for configuration key '{key}': {reason}")]
    Inconsistent {
        /// The key that was set and conflicts.
        key: &'static str,
        /// Its raw value.
        value: String,
        /// What is expected, naming the other key.
        reason: String,
    },
}

/// Every accepted spelling of `restart-strategy.type`, for error messages.
const TYPE_NAMES: &str = "none, off, disable, fixed-delay, fixeddelay, failure-rate, \
failurerate, exponential-delay or exponentialdelay (case-insensitive)";

/// Parses a strategy type into that strategy with Flink's defaults, which
/// the sub-keys then override.
fn parse_type(s: &str) -> Result<RestartStrategy, String> {
    let second = Duration::from_secs;
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "disable" => RestartStrategy::None,
        "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay {
            attempts: 1,
            delay: second(1),
        },
        "failure-rate" | "failurerate" => RestartStrategy::FailureRate {
            max_failures: 1,
            interval: second(60),
            delay: second(1),
        },
        "exponential-delay" | "exponentialdelay" => RestartStrategy::ExponentialDelay {
            initial_backoff: second(1),
            max_backoff: second(60),
            multiplier: 1.5,
            reset_threshold: second(3600),
            jitter: 0.1,
        },
        _ => return Err(format!("expected one of {TYPE_NAMES}")),
    })
}

/// Parses a count from 1 to `u32::MAX`; zero and negative counts are
/// rejected rather than read as "never restart" (use type `none` for that).
fn parse_count(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(v) if v >= 1 => u32::try_from(v).map_err(|_| count_expected()),
        _ => Err(count_expected()),
    }
}

fn count_expected() -> String {
    format!("expected an integer from 1 to {}", u32::MAX)
}

/// A duration of at least 1 ms, Flink's lower bound for backoffs and windows.
fn parse_at_least_1ms(s: &str) -> Result<Duration, String> {
    let d = parse_duration_value(s)?;
    if d < Duration::from_millis(1) {
        Err("expected a duration of at least 1 ms".into())
    } else {
        Ok(d)
    }
}

fn parse_multiplier(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err("expected a number of at least 1".into()),
    }
}

fn parse_jitter(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

/// The restart strategy keys, with Flink's names and defaults.
///
/// Every key here is also listed in [`floe_core::config::KNOWN_KEYS`] (a
/// test keeps the two in step), so setting it draws no unknown-key warning.
pub mod options {
    use super::*;

    /// Which strategy; parses to that strategy with Flink's defaults.
    pub const TYPE: ConfigOption<RestartStrategy> = ConfigOption {
        key: "restart-strategy.type",
        description: "Restart strategy after a failure: none (also off, disable), fixed-delay, failure-rate or exponential-delay (default: none without checkpointing, else fixed-delay with unlimited attempts every 1 s).",
        parse: parse_type,
    };

    /// Restarts allowed by fixed-delay before the job fails.
    pub const FIXED_DELAY_ATTEMPTS: ConfigOption<u32> = ConfigOption {
        key: "restart-strategy.fixed-delay.attempts",
        description: "With fixed-delay, restarts allowed before the job fails, at least 1 (default 1).",
        parse: parse_count,
    };

    /// Wait before each fixed-delay restart.
    pub const FIXED_DELAY_DELAY: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.fixed-delay.delay",
        description: "With fixed-delay, wait before each restart (default 1 s).",
        parse: parse_duration_value,
    };

    /// Failures failure-rate tolerates within one interval.
    pub const FAILURE_RATE_MAX_FAILURES_PER_INTERVAL: ConfigOption<u32> = ConfigOption {
        key: "restart-strategy.failure-rate.max-failures-per-interval",
        description: "With failure-rate, failures tolerated within the interval before the job fails, at least 1 (default 1).",
        parse: parse_count,
    };

    /// The sliding window failure-rate counts failures in.
    pub const FAILURE_RATE_INTERVAL: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.failure-rate.failure-rate-interval",
        description: "With failure-rate, sliding window in which failures are counted, at least 1 ms (default 1 min).",
        parse: parse_at_least_1ms,
    };

    /// Wait before each failure-rate restart.
    pub const FAILURE_RATE_DELAY: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.failure-rate.delay",
        description: "With failure-rate, wait before each restart (default 1 s).",
        parse: parse_duration_value,
    };

    /// First exponential-delay backoff.
    pub const EXPONENTIAL_DELAY_INITIAL_BACKOFF: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.exponential-delay.initial-backoff",
        description: "With exponential-delay, wait before the first restart, at least 1 ms (default 1 s).",
        parse: parse_at_least_1ms,
    };

    /// Largest exponential-delay backoff.
    pub const EXPONENTIAL_DELAY_MAX_BACKOFF: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.exponential-delay.max-backoff",
        description: "With exponential-delay, longest wait before a restart, at least the initial backoff (default 1 min).",
        parse: parse_at_least_1ms,
    };

    /// Growth of the exponential-delay backoff per failure.
    pub const EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER: ConfigOption<f64> = ConfigOption {
        key: "restart-strategy.exponential-delay.backoff-multiplier",
        description: "With exponential-delay, factor the wait grows by after each failure, at least 1 (default 1.5).",
        parse: parse_multiplier,
    };

    /// Failure-free time after which exponential-delay starts over.
    pub const EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD: ConfigOption<Duration> = ConfigOption {
        key: "restart-strategy.exponential-delay.reset-backoff-threshold",
        description: "With exponential-delay, failure-free time after which the wait starts over from the initial backoff, at least 1 ms (default 1 h).",
        parse: parse_at_least_1ms,
    };

    /// Random spread of each exponential-delay backoff.
    pub const EXPONENTIAL_DELAY_JITTER_FACTOR: ConfigOption<f64> = ConfigOption {
        key: "restart-strategy.exponential-delay.jitter-factor",
        description: "With exponential-delay, random spread of each wait as a fraction of it, 0 to 1 (default 0.1).",
        parse: parse_jitter,
    };

    /// Every restart option as `(key, description)`, in the order of
    /// [`floe_core::config::KNOWN_KEYS`].
    pub const ALL: &[(&str, &str)] = &[
        (TYPE.key, TYPE.description),
        (FIXED_DELAY_ATTEMPTS.key, FIXED_DELAY_ATTEMPTS.description),
        (FIXED_DELAY_DELAY.key, FIXED_DELAY_DELAY.description),
        (
            FAILURE_RATE_MAX_FAILURES_PER_INTERVAL.key,
            FAILURE_RATE_MAX_FAILURES_PER_INTERVAL.description,
        ),
        (FAILURE_RATE_INTERVAL.key, FAILURE_RATE_INTERVAL.description),
        (FAILURE_RATE_DELAY.key, FAILURE_RATE_DELAY.description),
        (
            EXPONENTIAL_DELAY_INITIAL_BACKOFF.key,
            EXPONENTIAL_DELAY_INITIAL_BACKOFF.description,
        ),
        (
            EXPONENTIAL_DELAY_MAX_BACKOFF.key,
            EXPONENTIAL_DELAY_MAX_BACKOFF.description,
        ),
        (
            EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER.key,
            EXPONENTIAL_DELAY_BACKOFF_MULTIPLIER.description,
        ),
        (
            EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD.key,
            EXPONENTIAL_DELAY_RESET_BACKOFF_THRESHOLD.description,
        ),
        (
            EXPONENTIAL_DELAY_JITTER_FACTOR.key,
            EXPONENTIAL_DELAY_JITTER_FACTOR.description,
        ),
    ];
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

    fn config(pairs: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for (k, v) in pairs {
            c.set(*k, *v);
        }
        c
    }

    fn read(pairs: &[(&str, &str)]) -> Option<RestartStrategy> {
        RestartStrategy::from_configuration(&config(pairs)).unwrap()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        RestartStrategy::from_configuration(&config(pairs))
            .unwrap_err()
            .to_string()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn absent_type_is_none_even_with_sub_keys() {
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[("restart-strategy.fixed-delay.attempts", "3")]),
            None
        );
    }

    #[test]
    fn every_no_restart_spelling_in_any_case() {
        for t in ["none", "off", "disable", "NONE", "Off", " Disable "] {
            assert_eq!(
                read(&[("restart-strategy.type", t)]),
                Some(RestartStrategy::None),
                "{t}"
            );
        }
    }

    #[test]
    fn fixed_delay_defaults_and_sub_keys() {
        let defaults = Some(RestartStrategy::FixedDelay {
            attempts: 1,
            delay: S(1),
        });
        for t in ["fixed-delay", "fixeddelay", "FIXED-DELAY", "FixedDelay"] {
            assert_eq!(read(&[("restart-strategy.type", t)]), defaults, "{t}");
        }
        assert_eq!(
            read(&[
                ("restart-strategy.type", "fixed-delay"),
                ("restart-strategy.fixed-delay.attempts", "3"),
                ("restart-strategy.fixed-delay.delay", "10 s"),
            ]),
            Some(RestartStrategy::FixedDelay {
                attempts: 3,
                delay: S(10),
            })
        );
        // A zero delay is allowed, as in Flink.
        assert_eq!(
            read(&[
                ("restart-strategy.type", "fixed-delay"),
                ("restart-strategy.fixed-delay.attempts", "4294967295"),
                ("restart-strategy.fixed-delay.delay", "0"),
            ]),
            Some(RestartStrategy::FixedDelay {
                attempts: u32::MAX,
                delay: Duration::ZERO,
            })
        );
    }

    #[test]
    fn failure_rate_defaults_and_sub_keys() {
        let defaults = Some(RestartStrategy::FailureRate {
            max_failures: 1,
            interval: S(60),
            delay: S(1),
        });
        for t in ["failure-rate", "failurerate", "Failure-Rate", "FAILURERATE"] {
            assert_eq!(read(&[("restart-strategy.type", t)]), defaults, "{t}");
        }
        assert_eq!(
            read(&[
                ("restart-strategy.type", "failure-rate"),
                (
                    "restart-strategy.failure-rate.max-failures-per-interval",
                    "3"
                ),
                (
                    "restart-strategy.failure-rate.failure-rate-interval",
                    "5 min"
                ),
                ("restart-strategy.failure-rate.delay", "250 ms"),
            ]),
            Some(RestartStrategy::FailureRate {
                max_failures: 3,
                interval: S(300),
                delay: MS(250),
            })
        );
    }

    #[test]
    fn exponential_delay_defaults_and_sub_keys() {
        let defaults = Some(RestartStrategy::ExponentialDelay {
            initial_backoff: S(1),
            max_backoff: S(60),
            multiplier: 1.5,
            reset_threshold: S(3600),
            jitter: 0.1,
        });
        for t in ["exponential-delay", "exponentialdelay", "Exponential-Delay"] {
            assert_eq!(read(&[("restart-strategy.type", t)]), defaults, "{t}");
        }
        assert_eq!(
            read(&[
                ("restart-strategy.type", "exponential-delay"),
                ("restart-strategy.exponential-delay.initial-backoff", "10 s"),
                ("restart-strategy.exponential-delay.max-backoff", "2 min"),
                (
                    "restart-strategy.exponential-delay.backoff-multiplier",
                    "2.0"
                ),
                (
                    "restart-strategy.exponential-delay.reset-backoff-threshold",
                    "10 min"
                ),
                ("restart-strategy.exponential-delay.jitter-factor", "0"),
            ]),
            Some(RestartStrategy::ExponentialDelay {
                initial_backoff: S(10),
                max_backoff: S(120),
                multiplier: 2.0,
                reset_threshold: S(600),
                jitter: 0.0,
            })
        );
        // The bounds themselves are accepted.
        assert!(matches!(
            read(&[
                ("restart-strategy.type", "exponential-delay"),
                ("restart-strategy.exponential-delay.initial-backoff", "1 min"),
                ("restart-strategy.exponential-delay.backoff-multiplier", "1"),
                ("restart-strategy.exponential-delay.jitter-factor", "1"),
            ]),
            Some(RestartStrategy::ExponentialDelay { multiplier, jitter, .. })
                if multiplier == 1.0 && jitter == 1.0
        ));
    }

    #[test]
    fn nested_yaml_reads_like_flat_keys() {
        let yaml = "restart-strategy:\n  type: fixed-delay\n  fixed-delay:\n    attempts: 3\n    delay: 10 s\n";
        let c = Configuration::from_yaml_str(yaml).unwrap();
        assert_eq!(
            RestartStrategy::from_configuration(&c).unwrap(),
            Some(RestartStrategy::FixedDelay {
                attempts: 3,
                delay: S(10),
            })
        );
    }

    #[test]
    fn sub_keys_of_another_type_are_ignored_even_when_invalid() {
        assert_eq!(
            read(&[
                ("restart-strategy.type", "fixed-delay"),
                (
                    "restart-strategy.failure-rate.max-failures-per-interval",
                    "-1"
                ),
                ("restart-strategy.exponential-delay.jitter-factor", "7"),
            ]),
            Some(RestartStrategy::FixedDelay {
                attempts: 1,
                delay: S(1),
            })
        );
        assert_eq!(
            read(&[
                ("restart-strategy.type", "none"),
                ("restart-strategy.fixed-delay.attempts", "zero"),
            ]),
            Some(RestartStrategy::None)
        );
    }

    #[test]
    fn unknown_type_lists_the_valid_ones() {
        let err = error(&[("restart-strategy.type", "fixed_delay")]);
        assert!(err.contains("'restart-strategy.type'"), "{err}");
        assert!(err.contains("\"fixed_delay\""), "{err}");
        for valid in [
            "none",
            "off",
            "disable",
            "fixed-delay",
            "fixeddelay",
            "failure-rate",
            "failurerate",
            "exponential-delay",
            "exponentialdelay",
        ] {
            assert!(err.contains(valid), "{valid} missing: {err}");
        }
        assert!(error(&[("restart-strategy.type", "")]).contains("expected one of"));
    }

    #[test]
    fn each_bad_value_names_the_key_and_the_value() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("fixed-delay", "fixed-delay.attempts", "0", "from 1 to"),
            ("fixed-delay", "fixed-delay.attempts", "-1", "from 1 to"),
            (
                "fixed-delay",
                "fixed-delay.attempts",
                "4294967296",
                "from 1 to",
            ),
            ("fixed-delay", "fixed-delay.attempts", "three", "from 1 to"),
            (
                "fixed-delay",
                "fixed-delay.delay",
                "-5 s",
                "does not start with a number",
            ),
            (
                "fixed-delay",
                "fixed-delay.delay",
                "5 fortnights",
                "unknown unit",
            ),
            (
                "failure-rate",
                "failure-rate.max-failures-per-interval",
                "0",
                "from 1 to",
            ),
            (
                "failure-rate",
                "failure-rate.max-failures-per-interval",
                "-2",
                "from 1 to",
            ),
            (
                "failure-rate",
                "failure-rate.failure-rate-interval",
                "0 s",
                "at least 1 ms",
            ),
            (
                "failure-rate",
                "failure-rate.failure-rate-interval",
                "soon",
                "does not start",
            ),
            (
                "failure-rate",
                "failure-rate.delay",
                "1 fortnight",
                "unknown unit",
            ),
            (
                "exponential-delay",
                "exponential-delay.initial-backoff",
                "0",
                "at least 1 ms",
            ),
            (
                "exponential-delay",
                "exponential-delay.max-backoff",
                "500 us",
                "at least 1 ms",
            ),
            (
                "exponential-delay",
                "exponential-delay.backoff-multiplier",
                "0.5",
                "at least 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.backoff-multiplier",
                "NaN",
                "at least 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.backoff-multiplier",
                "inf",
                "at least 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.backoff-multiplier",
                "x",
                "at least 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.reset-backoff-threshold",
                "0 ms",
                "at least 1 ms",
            ),
            (
                "exponential-delay",
                "exponential-delay.jitter-factor",
                "1.5",
                "from 0 to 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.jitter-factor",
                "-0.1",
                "from 0 to 1",
            ),
            (
                "exponential-delay",
                "exponential-delay.jitter-factor",
                "NaN",
                "from 0 to 1",
            ),
        ];
        for (ty, sub, value, expected) in cases {
            let key = format!("restart-strategy.{sub}");
            let err = error(&[("restart-strategy.type", ty), (&key, value)]);
            assert!(err.contains(&format!("'{key}'")), "{key}={value}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{key}={value}: {err}");
            assert!(err.contains(expected), "{key}={value}: {err}");
        }
    }

    #[test]
    fn initial_backoff_above_max_blames_the_key_that_was_set() {
        let ty = ("restart-strategy.type", "exponential-delay");
        // Only max-backoff set, below the default initial backoff (1 s).
        let err = error(&[
            ty,
            ("restart-strategy.exponential-delay.max-backoff", "500 ms"),
        ]);
        assert!(
            err.contains("'restart-strategy.exponential-delay.max-backoff'"),
            "{err}"
        );
        assert!(err.contains("\"500 ms\""), "{err}");
        assert!(err.contains("initial-backoff"), "{err}");
        // Only initial-backoff set, above the default max backoff (1 min).
        let err = error(&[
            ty,
            (
                "restart-strategy.exponential-delay.initial-backoff",
                "2 min",
            ),
        ]);
        assert!(
            err.contains("'restart-strategy.exponential-delay.initial-backoff'"),
            "{err}"
        );
        assert!(err.contains("\"2 min\""), "{err}");
        assert!(err.contains("max-backoff"), "{err}");
    }

    #[test]
    fn every_option_is_a_known_key_with_the_same_description() {
        for (key, description) in options::ALL {
            let known = floe_core::config::KNOWN_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} missing from floe_core::config::KNOWN_KEYS"));
            assert_eq!(known.1, *description, "description of {key} differs");
        }
        let mut c = Configuration::new();
        for (key, _) in options::ALL {
            c.set(*key, "x");
        }
        assert!(c.unknown_keys().is_empty(), "{:?}", c.unknown_keys());
    }
}
