//! Checkpoint configuration with Flink's semantics, defaults and key names.
//!
//! A job's checkpointing behaviour is set either in code (the `with_*`
//! builder methods on [`CheckpointConfig`]) or through the job configuration
//! (`floe-conf.yaml`, `-D key=value`), read by
//! [`CheckpointConfig::from_configuration`]. Keys, accepted values and
//! defaults are Flink's, so a Flink user's configuration carries over
//! unchanged and its documentation applies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use floe_core::config::{parse_bool, parse_duration_value, parse_positive_u32};
use floe_core::{ConfigError, ConfigOption, Configuration};

/// Flink's lower bound for the checkpoint interval and the checkpoint timeout
/// (`CheckpointConfig.MINIMAL_CHECKPOINT_TIME`): anything shorter would spend
/// the job's time checkpointing rather than processing.
pub const MINIMAL_CHECKPOINT_TIME: Duration = Duration::from_millis(10);

/// Why a checkpoint configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointConfigError {
    /// A configuration value did not parse as its key's type or range; the
    /// inner error names the key and the value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A value set in code (or a combination of values) is out of range.
    #[error("invalid value {value} for checkpoint setting '{key}': {reason}")]
    Invalid {
        /// The Flink key of the setting, also for values set in code, so the
        /// message points at the documentation of that setting.
        key: &'static str,
        /// The offending value as text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// The consistency guarantee a checkpoint gives (Flink's `CheckpointingMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CheckpointingMode {
    /// Barriers are aligned: an operator with several inputs snapshots only
    /// once the barrier arrived on every input, so every record affects the
    /// restored state exactly once.
    #[default]
    ExactlyOnce,
    /// Barriers are not aligned: records that overtake a barrier may be
    /// reflected in the snapshot and replayed after a restore. Lower latency,
    /// duplicates after recovery.
    AtLeastOnce,
}

impl CheckpointingMode {
    /// Flink's spelling of the value (`EXACTLY_ONCE`, `AT_LEAST_ONCE`), used
    /// when the mode is shown or written back to a configuration.
    pub fn as_flink_str(self) -> &'static str {
        match self {
            CheckpointingMode::ExactlyOnce => "EXACTLY_ONCE",
            CheckpointingMode::AtLeastOnce => "AT_LEAST_ONCE",
        }
    }
}

impl fmt::Display for CheckpointingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_flink_str())
    }
}

impl FromStr for CheckpointingMode {
    type Err = String;

    /// Accepts Flink's enum names in any case, with `_` or `-`
    /// (`EXACTLY_ONCE`, `exactly-once`, `At_Least_Once`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match normalize_enum(s).as_str() {
            "EXACTLY_ONCE" => Ok(CheckpointingMode::ExactlyOnce),
            "AT_LEAST_ONCE" => Ok(CheckpointingMode::AtLeastOnce),
            _ => Err("expected EXACTLY_ONCE or AT_LEAST_ONCE".into()),
        }
    }
}

/// What happens to a job's retained checkpoints when the job is cancelled
/// (Flink's `ExternalizedCheckpointRetention`). Checkpoints of a job that
/// fails are always kept, so it can be resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ExternalizedCheckpointRetention {
    /// Cancelling the job deletes its checkpoints: a cancelled job is not
    /// meant to be resumed, and its checkpoints would only use storage.
    #[default]
    DeleteOnCancellation,
    /// Cancelling the job keeps its checkpoints, so it can be resumed from
    /// the latest one with `--fromCheckpoint` (they must then be cleaned up
    /// by hand).
    RetainOnCancellation,
}

impl ExternalizedCheckpointRetention {
    /// Flink's spelling of the value.
    pub fn as_flink_str(self) -> &'static str {
        match self {
            ExternalizedCheckpointRetention::DeleteOnCancellation => "DELETE_ON_CANCELLATION",
            ExternalizedCheckpointRetention::RetainOnCancellation => "RETAIN_ON_CANCELLATION",
        }
    }
}

impl fmt::Display for ExternalizedCheckpointRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_flink_str())
    }
}

impl FromStr for ExternalizedCheckpointRetention {
    type Err = String;

    /// Accepts Flink's enum names in any case, with `_` or `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match normalize_enum(s).as_str() {
            "DELETE_ON_CANCELLATION" => Ok(ExternalizedCheckpointRetention::DeleteOnCancellation),
            "RETAIN_ON_CANCELLATION" => Ok(ExternalizedCheckpointRetention::RetainOnCancellation),
            _ => Err("expected DELETE_ON_CANCELLATION or RETAIN_ON_CANCELLATION".into()),
        }
    }
}

/// Upper-cases an enum value and turns `-` into `_`, so `exactly-once` and
/// `EXACTLY_ONCE` mean the same, as Flink's enum parsing does.
fn normalize_enum(s: &str) -> String {
    s.trim().to_ascii_uppercase().replace('-', "_")
}

fn parse_at_least_minimal(s: &str) -> Result<Duration, String> {
    let d = parse_duration_value(s)?;
    if d < MINIMAL_CHECKPOINT_TIME {
        Err(format!(
            "must be at least {} ms",
            MINIMAL_CHECKPOINT_TIME.as_millis()
        ))
    } else {
        Ok(d)
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|e| format!("not a non-negative integer ({e})"))
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// The checkpoint configuration keys, with Flink's names.
///
/// Every key here is also listed in [`floe_core::config::KNOWN_KEYS`] (a
/// test keeps the two in step), so setting it draws no unknown-key warning.
pub mod options {
    use super::*;

    /// How often a checkpoint is triggered; unset means no checkpoints.
    pub const INTERVAL: ConfigOption<Duration> = ConfigOption {
        key: "execution.checkpointing.interval",
        description: "Time between the start of two checkpoints, at least 10 ms (default: unset, checkpointing off).",
        parse: parse_at_least_minimal,
    };

    /// Exactly-once (aligned barriers) or at-least-once.
    pub const MODE: ConfigOption<CheckpointingMode> = ConfigOption {
        key: "execution.checkpointing.mode",
        description: "Checkpointing guarantee: EXACTLY_ONCE or AT_LEAST_ONCE (default EXACTLY_ONCE).",
        parse: |s| s.parse(),
    };

    /// How long a checkpoint may take before it is declared failed.
    pub const TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "execution.checkpointing.timeout",
        description: "Time after which a checkpoint in progress is aborted, at least 10 ms (default 10 min).",
        parse: parse_at_least_minimal,
    };

    /// The least time between the end of one checkpoint and the start of the next.
    pub const MIN_PAUSE: ConfigOption<Duration> = ConfigOption {
        key: "execution.checkpointing.min-pause",
        description: "Least time between the end of one checkpoint and the start of the next (default 0).",
        parse: parse_duration_value,
    };

    /// How many checkpoints may be in progress at once.
    pub const MAX_CONCURRENT_CHECKPOINTS: ConfigOption<u32> = ConfigOption {
        key: "execution.checkpointing.max-concurrent-checkpoints",
        description: "Checkpoints that may be in progress at the same time, at least 1 (default 1).",
        parse: parse_positive_u32,
    };

    /// How many checkpoints in a row may fail before the job fails.
    pub const TOLERABLE_FAILED_CHECKPOINTS: ConfigOption<u32> = ConfigOption {
        key: "execution.checkpointing.tolerable-failed-checkpoints",
        description: "Consecutive checkpoint failures tolerated before the job fails (default 0).",
        parse: parse_u32,
    };

    /// Whether cancelling a job keeps or deletes its checkpoints.
    pub const EXTERNALIZED_CHECKPOINT_RETENTION: ConfigOption<ExternalizedCheckpointRetention> =
        ConfigOption {
            key: "execution.checkpointing.externalized-checkpoint-retention",
            description: "Keep or delete checkpoints when the job is cancelled: DELETE_ON_CANCELLATION or RETAIN_ON_CANCELLATION (default DELETE_ON_CANCELLATION).",
            parse: |s| s.parse(),
        };

    /// Whether barriers may overtake in-flight records (unaligned checkpoints).
    pub const UNALIGNED_ENABLED: ConfigOption<bool> = ConfigOption {
        key: "execution.checkpointing.unaligned.enabled",
        description: "Let barriers overtake buffered records and store those records in the checkpoint; EXACTLY_ONCE only (default false).",
        parse: parse_bool,
    };

    /// How long an aligned checkpoint may wait before switching to unaligned.
    pub const ALIGNED_CHECKPOINT_TIMEOUT: ConfigOption<Duration> = ConfigOption {
        key: "execution.checkpointing.aligned-checkpoint-timeout",
        description: "With unaligned checkpoints enabled, how long alignment may take before the checkpoint switches to unaligned; 0 = start unaligned (default 0).",
        parse: parse_duration_value,
    };

    /// How many completed checkpoints are kept.
    pub const NUM_RETAINED: ConfigOption<u32> = ConfigOption {
        key: "state.checkpoints.num-retained",
        description: "Completed checkpoints kept in checkpoint storage, at least 1 (default 1).",
        parse: parse_positive_u32,
    };

    /// Where checkpoints are written.
    pub const CHECKPOINTS_DIR: ConfigOption<String> = ConfigOption {
        key: "state.checkpoints.dir",
        description: "Checkpoint storage: file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or jobmanager (default: unset, jobmanager: kept in memory).",
        parse: parse_non_empty,
    };

    /// Every checkpoint option as `(key, description)`, in the order of
    /// [`floe_core::config::KNOWN_KEYS`].
    pub const ALL: &[(&str, &str)] = &[
        (INTERVAL.key, INTERVAL.description),
        (MODE.key, MODE.description),
        (TIMEOUT.key, TIMEOUT.description),
        (MIN_PAUSE.key, MIN_PAUSE.description),
        (
            MAX_CONCURRENT_CHECKPOINTS.key,
            MAX_CONCURRENT_CHECKPOINTS.description,
        ),
        (
            TOLERABLE_FAILED_CHECKPOINTS.key,
            TOLERABLE_FAILED_CHECKPOINTS.description,
        ),
        (
            EXTERNALIZED_CHECKPOINT_RETENTION.key,
            EXTERNALIZED_CHECKPOINT_RETENTION.description,
        ),
        (UNALIGNED_ENABLED.key, UNALIGNED_ENABLED.description),
        (
            ALIGNED_CHECKPOINT_TIMEOUT.key,
            ALIGNED_CHECKPOINT_TIMEOUT.description,
        ),
        (NUM_RETAINED.key, NUM_RETAINED.description),
        (CHECKPOINTS_DIR.key, CHECKPOINTS_DIR.description),
    ];
}

/// How a job takes checkpoints: when, how often, how long they may take and
/// what is kept. The coordinator reads it; nothing here acts on its own.
///
/// Build it in code from [`CheckpointConfig::default`] with the `with_*`
/// methods, or from the job configuration with
/// [`CheckpointConfig::from_configuration`]. Either way, call
/// [`CheckpointConfig::validate`] before use (`from_configuration` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    interval: Option<Duration>,
    mode: CheckpointingMode,
    timeout: Duration,
    min_pause: Duration,
    max_concurrent_checkpoints: u32,
    tolerable_failed_checkpoints: u32,
    unaligned_enabled: bool,
    aligned_checkpoint_timeout: Duration,
    externalized_checkpoint_retention: ExternalizedCheckpointRetention,
    num_retained: u32,
    checkpoint_dir: Option<String>,
}

impl Default for CheckpointConfig {
    /// Flink's defaults: checkpointing off, exactly-once, 10 min timeout, no
    /// pause, one checkpoint at a time, no failure tolerated, aligned
    /// barriers, delete on cancellation, one retained checkpoint, state in
    /// JobManager memory.
    fn default() -> Self {
        CheckpointConfig {
            interval: None,
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(10 * 60),
            min_pause: Duration::ZERO,
            max_concurrent_checkpoints: 1,
            tolerable_failed_checkpoints: 0,
            unaligned_enabled: false,
            aligned_checkpoint_timeout: Duration::ZERO,
            externalized_checkpoint_retention:
                ExternalizedCheckpointRetention::DeleteOnCancellation,
            num_retained: 1,
            checkpoint_dir: None,
        }
    }
}

impl CheckpointConfig {
    /// Reads every checkpoint key present in `config` over Flink's defaults
    /// and validates the result. A value that does not parse, or is out of
    /// range, is an error naming the key and the value.
    pub fn from_configuration(config: &Configuration) -> Result<Self, CheckpointConfigError> {
        let c = Self::read(config)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads every checkpoint key present in `config` over Flink's
    /// defaults, checking each value as it parses but not the result as a
    /// whole: for a caller that adjusts it in code next and then calls
    /// [`Self::validate`] once.
    pub fn read(config: &Configuration) -> Result<Self, CheckpointConfigError> {
        let mut c = CheckpointConfig::default();
        if let Some(v) = config.get(&options::INTERVAL)? {
            c.interval = Some(v);
        }
        if let Some(v) = config.get(&options::MODE)? {
            c.mode = v;
        }
        if let Some(v) = config.get(&options::TIMEOUT)? {
            c.timeout = v;
        }
        if let Some(v) = config.get(&options::MIN_PAUSE)? {
            c.min_pause = v;
        }
        if let Some(v) = config.get(&options::MAX_CONCURRENT_CHECKPOINTS)? {
            c.max_concurrent_checkpoints = v;
        }
        if let Some(v) = config.get(&options::TOLERABLE_FAILED_CHECKPOINTS)? {
            c.tolerable_failed_checkpoints = v;
        }
        if let Some(v) = config.get(&options::EXTERNALIZED_CHECKPOINT_RETENTION)? {
            c.externalized_checkpoint_retention = v;
        }
        if let Some(v) = config.get(&options::UNALIGNED_ENABLED)? {
            c.unaligned_enabled = v;
        }
        if let Some(v) = config.get(&options::ALIGNED_CHECKPOINT_TIMEOUT)? {
            c.aligned_checkpoint_timeout = v;
        }
        if let Some(v) = config.get(&options::NUM_RETAINED)? {
            c.num_retained = v;
        }
        if let Some(v) = config.get(&options::CHECKPOINTS_DIR)? {
            c.checkpoint_dir = Some(v);
        }
        Ok(c)
    }

    /// Checks the ranges Flink enforces, for values set in code: an
    /// interval and a timeout of at least 10 ms, at least one concurrent
    /// checkpoint, at least one retained checkpoint, a non-empty directory.
    pub fn validate(&self) -> Result<(), CheckpointConfigError> {
        let invalid = |key: &'static str, value: String, reason: String| {
            Err(CheckpointConfigError::Invalid { key, value, reason })
        };
        let minimal = format!(
            "must be at least {} ms",
            MINIMAL_CHECKPOINT_TIME.as_millis()
        );
        if let Some(interval) = self.interval {
            if interval < MINIMAL_CHECKPOINT_TIME {
                return invalid(options::INTERVAL.key, format!("{interval:?}"), minimal);
            }
        }
        if self.timeout < MINIMAL_CHECKPOINT_TIME {
            return invalid(options::TIMEOUT.key, format!("{:?}", self.timeout), minimal);
        }
        if self.max_concurrent_checkpoints == 0 {
            return invalid(
                options::MAX_CONCURRENT_CHECKPOINTS.key,
                "0".into(),
                "must be at least 1".into(),
            );
        }
        if self.num_retained == 0 {
            return invalid(
                options::NUM_RETAINED.key,
                "0".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(dir) = &self.checkpoint_dir {
            if let Err(reason) = crate::location::check_url_syntax(dir) {
                return invalid(
                    options::CHECKPOINTS_DIR.key,
                    format!("{dir:?}"),
                    reason.into(),
                );
            }
        }
        Ok(())
    }

    /// Turns periodic checkpoints on (`Some`) or off (`None`).
    pub fn with_interval(mut self, interval: Option<Duration>) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the consistency guarantee.
    pub fn with_mode(mut self, mode: CheckpointingMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets how long a checkpoint may run before it is aborted.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the least time between the end of one checkpoint and the start
    /// of the next.
    pub fn with_min_pause(mut self, min_pause: Duration) -> Self {
        self.min_pause = min_pause;
        self
    }

    /// Sets how many checkpoints may be in progress at once.
    pub fn with_max_concurrent_checkpoints(mut self, n: u32) -> Self {
        self.max_concurrent_checkpoints = n;
        self
    }

    /// Sets how many consecutive checkpoint failures the job survives.
    pub fn with_tolerable_failed_checkpoints(mut self, n: u32) -> Self {
        self.tolerable_failed_checkpoints = n;
        self
    }

    /// Enables or disables unaligned checkpoints.
    pub fn with_unaligned_enabled(mut self, enabled: bool) -> Self {
        self.unaligned_enabled = enabled;
        self
    }

    /// Sets how long alignment may take before a checkpoint switches to
    /// unaligned (only with unaligned checkpoints enabled; zero = at once).
    pub fn with_aligned_checkpoint_timeout(mut self, timeout: Duration) -> Self {
        self.aligned_checkpoint_timeout = timeout;
        self
    }

    /// Sets whether cancelling the job keeps its checkpoints.
    pub fn with_externalized_checkpoint_retention(
        mut self,
        retention: ExternalizedCheckpointRetention,
    ) -> Self {
        self.externalized_checkpoint_retention = retention;
        self
    }

    /// Sets how many completed checkpoints are kept.
    pub fn with_num_retained(mut self, n: u32) -> Self {
        self.num_retained = n;
        self
    }

    /// Sets the checkpoint storage URL (`None`: JobManager memory).
    pub fn with_checkpoint_dir(mut self, dir: Option<String>) -> Self {
        self.checkpoint_dir = dir;
        self
    }

    /// Time between the start of two checkpoints; `None` when checkpointing
    /// is off.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether periodic checkpoints are taken at all.
    pub fn is_checkpointing_enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// The consistency guarantee.
    pub fn mode(&self) -> CheckpointingMode {
        self.mode
    }

    /// How long a checkpoint may run before it is aborted.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Least time between the end of one checkpoint and the start of the
    /// next. As in Flink, a non-zero pause means at most one checkpoint is
    /// in progress, whatever [`Self::max_concurrent_checkpoints`] says.
    pub fn min_pause(&self) -> Duration {
        self.min_pause
    }

    /// How many checkpoints may be in progress at once (at least 1).
    pub fn max_concurrent_checkpoints(&self) -> u32 {
        self.max_concurrent_checkpoints
    }

    /// How many consecutive checkpoint failures the job survives.
    pub fn tolerable_failed_checkpoints(&self) -> u32 {
        self.tolerable_failed_checkpoints
    }

    /// Whether unaligned checkpoints were asked for.
    pub fn unaligned_enabled(&self) -> bool {
        self.unaligned_enabled
    }

    /// Whether checkpoints are actually taken unaligned: as in Flink, the
    /// setting only applies in [`CheckpointingMode::ExactlyOnce`] (at-least-
    /// once never aligns, so there is nothing to skip).
    pub fn is_unaligned_effective(&self) -> bool {
        self.unaligned_enabled && self.mode == CheckpointingMode::ExactlyOnce
    }

    /// How long alignment may take before switching to unaligned; zero
    /// means unaligned from the start.
    pub fn aligned_checkpoint_timeout(&self) -> Duration {
        self.aligned_checkpoint_timeout
    }

    /// Whether cancelling the job keeps its checkpoints.
    pub fn externalized_checkpoint_retention(&self) -> ExternalizedCheckpointRetention {
        self.externalized_checkpoint_retention
    }

    /// How many completed checkpoints are kept (at least 1).
    pub fn num_retained(&self) -> u32 {
        self.num_retained
    }

    /// The checkpoint storage URL; `None` keeps checkpoints in JobManager
    /// memory (see [`crate::CheckpointStorage::for_config`]).
    pub fn checkpoint_dir(&self) -> Option<&str> {
        self.checkpoint_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for (k, v) in pairs {
            c.set(*k, *v);
        }
        c
    }

    #[test]
    fn defaults_are_flinks() {
        let c = CheckpointConfig::from_configuration(&Configuration::new()).unwrap();
        assert_eq!(c, CheckpointConfig::default());
        assert_eq!(c.interval(), None);
        assert!(!c.is_checkpointing_enabled());
        assert_eq!(c.mode(), CheckpointingMode::ExactlyOnce);
        assert_eq!(c.timeout(), Duration::from_secs(600));
        assert_eq!(c.min_pause(), Duration::ZERO);
        assert_eq!(c.max_concurrent_checkpoints(), 1);
        assert_eq!(c.tolerable_failed_checkpoints(), 0);
        assert!(!c.unaligned_enabled());
        assert_eq!(c.aligned_checkpoint_timeout(), Duration::ZERO);
        assert_eq!(
            c.externalized_checkpoint_retention(),
            ExternalizedCheckpointRetention::DeleteOnCancellation
        );
        assert_eq!(c.num_retained(), 1);
        assert_eq!(c.checkpoint_dir(), None);
    }

    #[test]
    fn reads_every_key() {
        let c = CheckpointConfig::from_configuration(&config(&[
            ("execution.checkpointing.interval", "1 s"),
            ("execution.checkpointing.mode", "AT_LEAST_ONCE"),
            ("execution.checkpointing.timeout", "2 min"),
            ("execution.checkpointing.min-pause", "500ms"),
            ("execution.checkpointing.max-concurrent-checkpoints", "3"),
            ("execution.checkpointing.tolerable-failed-checkpoints", "5"),
            (
                "execution.checkpointing.externalized-checkpoint-retention",
                "RETAIN_ON_CANCELLATION",
            ),
            ("execution.checkpointing.unaligned.enabled", "true"),
            ("execution.checkpointing.aligned-checkpoint-timeout", "30 s"),
            ("state.checkpoints.num-retained", "4"),
            ("state.checkpoints.dir", "s3://bucket/ckpts"),
        ]))
        .unwrap();
        assert_eq!(c.interval(), Some(Duration::from_secs(1)));
        assert!(c.is_checkpointing_enabled());
        assert_eq!(c.mode(), CheckpointingMode::AtLeastOnce);
        assert_eq!(c.timeout(), Duration::from_secs(120));
        assert_eq!(c.min_pause(), Duration::from_millis(500));
        assert_eq!(c.max_concurrent_checkpoints(), 3);
        assert_eq!(c.tolerable_failed_checkpoints(), 5);
        assert_eq!(
            c.externalized_checkpoint_retention(),
            ExternalizedCheckpointRetention::RetainOnCancellation
        );
        assert!(c.unaligned_enabled());
        // At-least-once never aligns, so unaligned has no effect (Flink warns
        // and turns it off).
        assert!(!c.is_unaligned_effective());
        assert_eq!(c.aligned_checkpoint_timeout(), Duration::from_secs(30));
        assert_eq!(c.num_retained(), 4);
        assert_eq!(c.checkpoint_dir(), Some("s3://bucket/ckpts"));
    }

    #[test]
    fn bare_numbers_are_milliseconds_and_enums_ignore_case() {
        let c = CheckpointConfig::from_configuration(&config(&[
            ("execution.checkpointing.interval", "10"),
            ("execution.checkpointing.mode", "exactly-once"),
            (
                "execution.checkpointing.externalized-checkpoint-retention",
                "delete_on_cancellation",
            ),
            ("execution.checkpointing.unaligned.enabled", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(c.interval(), Some(Duration::from_millis(10)));
        assert_eq!(c.mode(), CheckpointingMode::ExactlyOnce);
        assert!(c.is_unaligned_effective());
        for s in ["EXACTLY_ONCE", "exactly_once", "Exactly-Once"] {
            assert_eq!(s.parse(), Ok(CheckpointingMode::ExactlyOnce), "{s}");
        }
        for s in ["AT_LEAST_ONCE", "at-least-once"] {
            assert_eq!(s.parse(), Ok(CheckpointingMode::AtLeastOnce), "{s}");
        }
        assert_eq!(
            "retain-on-cancellation".parse(),
            Ok(ExternalizedCheckpointRetention::RetainOnCancellation)
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("execution.checkpointing.interval", "5 ms", "at least 10 ms"),
            ("execution.checkpointing.interval", "0", "at least 10 ms"),
            ("execution.checkpointing.interval", "soon", "number"),
            ("execution.checkpointing.mode", "twice", "EXACTLY_ONCE"),
            ("execution.checkpointing.timeout", "1 ms", "at least 10 ms"),
            ("execution.checkpointing.min-pause", "1 fortnight", "unit"),
            (
                "execution.checkpointing.max-concurrent-checkpoints",
                "0",
                "at least 1",
            ),
            (
                "execution.checkpointing.tolerable-failed-checkpoints",
                "-1",
                "non-negative",
            ),
            (
                "execution.checkpointing.externalized-checkpoint-retention",
                "NO_EXTERNALIZED_CHECKPOINTS",
                "RETAIN_ON_CANCELLATION",
            ),
            ("execution.checkpointing.unaligned.enabled", "yes", "true"),
            (
                "execution.checkpointing.aligned-checkpoint-timeout",
                "-3s",
                "number",
            ),
            ("state.checkpoints.num-retained", "0", "at least 1"),
            ("state.checkpoints.dir", "  ", "empty"),
            ("state.checkpoints.dir", "file:relative", "absolute path"),
            ("state.checkpoints.dir", "file:./ckpts", "absolute path"),
            ("state.checkpoints.dir", "ckpts/here", "relative path"),
            ("state.checkpoints.dir", "/abs/no/scheme", "file:// scheme"),
            ("state.checkpoints.dir", "file:///", "file-system root"),
            ("state.checkpoints.dir", "s3:bucket/prefix", "'://'"),
        ];
        for (key, value, reason) in cases {
            let err = CheckpointConfig::from_configuration(&config(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}={value:?}: {err}");
            assert!(err.contains(value), "{key}={value:?}: {err}");
            assert!(err.contains(reason), "{key}={value:?}: {err}");
        }
    }

    #[test]
    fn builder_sets_and_validate_rejects_out_of_range_code_values() {
        let c = CheckpointConfig::default()
            .with_interval(Some(Duration::from_secs(5)))
            .with_mode(CheckpointingMode::AtLeastOnce)
            .with_timeout(Duration::from_secs(60))
            .with_min_pause(Duration::from_secs(1))
            .with_max_concurrent_checkpoints(2)
            .with_tolerable_failed_checkpoints(3)
            .with_unaligned_enabled(true)
            .with_aligned_checkpoint_timeout(Duration::from_secs(2))
            .with_externalized_checkpoint_retention(
                ExternalizedCheckpointRetention::RetainOnCancellation,
            )
            .with_num_retained(3)
            .with_checkpoint_dir(Some("file:///tmp/ckpt".into()));
        c.validate().unwrap();
        assert_eq!(c.interval(), Some(Duration::from_secs(5)));
        assert_eq!(c.max_concurrent_checkpoints(), 2);
        assert_eq!(c.checkpoint_dir(), Some("file:///tmp/ckpt"));

        let bad = [
            (
                CheckpointConfig::default().with_interval(Some(Duration::from_millis(9))),
                "execution.checkpointing.interval",
            ),
            (
                CheckpointConfig::default().with_timeout(Duration::from_millis(1)),
                "execution.checkpointing.timeout",
            ),
            (
                CheckpointConfig::default().with_max_concurrent_checkpoints(0),
                "execution.checkpointing.max-concurrent-checkpoints",
            ),
            (
                CheckpointConfig::default().with_num_retained(0),
                "state.checkpoints.num-retained",
            ),
            (
                CheckpointConfig::default().with_checkpoint_dir(Some(String::new())),
                "state.checkpoints.dir",
            ),
        ];
        for (config, key) in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
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
