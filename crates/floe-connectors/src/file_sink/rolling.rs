//! When a part file is closed and becomes pending (Flink's
//! `RollingPolicy`): by size, age and inactivity, or at every checkpoint.

use std::time::Duration;

/// What a rolling policy sees of an open part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFileInfo {
    /// The bucket the file belongs to.
    pub bucket_id: String,
    /// Bytes written so far.
    pub size: u64,
    /// Processing time (ms since the epoch) the file was opened.
    pub created_at_ms: u64,
    /// Processing time (ms since the epoch) of the last write.
    pub last_updated_at_ms: u64,
}

/// Flink's `DefaultRollingPolicy`: a part file stays open across
/// checkpoints until it reaches `max_part_size`, has been open
/// `rollover_interval`, or has not been written for `inactivity_interval`.
/// Big files, few of them: what a downstream reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRollingPolicy {
    max_part_size: u64,
    rollover_interval: Duration,
    inactivity_interval: Duration,
}

/// Flink's defaults: 128 MiB, 60 s, 60 s.
impl Default for DefaultRollingPolicy {
    fn default() -> Self {
        DefaultRollingPolicy {
            max_part_size: 128 * 1024 * 1024,
            rollover_interval: Duration::from_secs(60),
            inactivity_interval: Duration::from_secs(60),
        }
    }
}

impl DefaultRollingPolicy {
    /// A builder starting from the defaults (see [`Default`]).
    pub fn builder() -> DefaultRollingPolicyBuilder {
        DefaultRollingPolicyBuilder(DefaultRollingPolicy::default())
    }

    /// The size in bytes at which a part file rolls.
    pub fn max_part_size(&self) -> u64 {
        self.max_part_size
    }

    /// How long a part file may stay open.
    pub fn rollover_interval(&self) -> Duration {
        self.rollover_interval
    }

    /// How long a part file may go without writes before it rolls.
    pub fn inactivity_interval(&self) -> Duration {
        self.inactivity_interval
    }

    /// True if the file must roll before the next record is written: it
    /// reached the size limit (so a file exceeds it by at most one record).
    pub fn should_roll_on_event(&self, part: &PartFileInfo) -> bool {
        part.size >= self.max_part_size
    }

    /// True if the file must roll because of its age or inactivity at
    /// processing time `now_ms`.
    pub fn should_roll_on_processing_time(&self, part: &PartFileInfo, now_ms: u64) -> bool {
        let older = |since: u64, limit: Duration| {
            u128::from(now_ms.saturating_sub(since)) >= limit.as_millis()
        };
        older(part.created_at_ms, self.rollover_interval)
            || older(part.last_updated_at_ms, self.inactivity_interval)
    }
}

/// Builds a [`DefaultRollingPolicy`] (Flink's `DefaultRollingPolicy.builder()`).
#[derive(Debug, Clone, Copy)]
pub struct DefaultRollingPolicyBuilder(DefaultRollingPolicy);

impl DefaultRollingPolicyBuilder {
    /// Rolls a part file once it holds `bytes` (default 128 MiB); 0 rolls
    /// after every record.
    pub fn with_max_part_size(mut self, bytes: u64) -> Self {
        self.0.max_part_size = bytes;
        self
    }

    /// Rolls a part file once it has been open this long (default 60 s).
    pub fn with_rollover_interval(mut self, interval: Duration) -> Self {
        self.0.rollover_interval = interval;
        self
    }

    /// Rolls a part file once it has not been written this long (default
    /// 60 s).
    pub fn with_inactivity_interval(mut self, interval: Duration) -> Self {
        self.0.inactivity_interval = interval;
        self
    }

    /// The policy.
    pub fn build(self) -> DefaultRollingPolicy {
        self.0
    }
}

/// Flink's `OnCheckpointRollingPolicy`: every checkpoint closes the open
/// part files, so output is visible one checkpoint after it was written,
/// at the price of one file per bucket and subtask per checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnCheckpointRollingPolicy;

impl OnCheckpointRollingPolicy {
    /// The policy (Flink's `OnCheckpointRollingPolicy.build()`).
    pub fn build() -> Self {
        OnCheckpointRollingPolicy
    }
}

/// The rolling policies a [`FileSink`](super::FileSink) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingPolicy {
    /// Size, age and inactivity; files span checkpoints.
    Default(DefaultRollingPolicy),
    /// Every checkpoint.
    OnCheckpoint(OnCheckpointRollingPolicy),
}

impl Default for RollingPolicy {
    fn default() -> Self {
        RollingPolicy::Default(DefaultRollingPolicy::default())
    }
}

impl From<DefaultRollingPolicy> for RollingPolicy {
    fn from(p: DefaultRollingPolicy) -> Self {
        RollingPolicy::Default(p)
    }
}

/// So `.with_rolling_policy(DefaultRollingPolicy::builder().with_…(..))`
/// works without the final `.build()`.
impl From<DefaultRollingPolicyBuilder> for RollingPolicy {
    fn from(b: DefaultRollingPolicyBuilder) -> Self {
        RollingPolicy::Default(b.build())
    }
}

impl From<OnCheckpointRollingPolicy> for RollingPolicy {
    fn from(p: OnCheckpointRollingPolicy) -> Self {
        RollingPolicy::OnCheckpoint(p)
    }
}

impl RollingPolicy {
    /// True if the file must roll before the next record is written.
    pub fn should_roll_on_event(&self, part: &PartFileInfo) -> bool {
        match self {
            RollingPolicy::Default(p) => p.should_roll_on_event(part),
            RollingPolicy::OnCheckpoint(_) => false,
        }
    }

    /// [`RollingPolicy::should_roll_on_event`] for a file of `size`
    /// bytes, without building a [`PartFileInfo`] (the per-record check).
    pub(crate) fn should_roll_at_size(&self, size: u64) -> bool {
        match self {
            RollingPolicy::Default(p) => size >= p.max_part_size,
            RollingPolicy::OnCheckpoint(_) => false,
        }
    }

    /// True if the file must roll at processing time `now_ms`.
    pub fn should_roll_on_processing_time(&self, part: &PartFileInfo, now_ms: u64) -> bool {
        match self {
            RollingPolicy::Default(p) => p.should_roll_on_processing_time(part, now_ms),
            RollingPolicy::OnCheckpoint(_) => false,
        }
    }

    /// True if the file must roll at a checkpoint taken at `now_ms`:
    /// always on checkpoint rolling; otherwise if any condition holds.
    pub fn should_roll_on_checkpoint(&self, part: &PartFileInfo, now_ms: u64) -> bool {
        match self {
            RollingPolicy::Default(p) => {
                p.should_roll_on_event(part) || p.should_roll_on_processing_time(part, now_ms)
            }
            RollingPolicy::OnCheckpoint(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64, created: u64, updated: u64) -> PartFileInfo {
        PartFileInfo {
            bucket_id: String::new(),
            size,
            created_at_ms: created,
            last_updated_at_ms: updated,
        }
    }

    fn policy() -> RollingPolicy {
        DefaultRollingPolicy::builder()
            .with_max_part_size(4096)
            .with_rollover_interval(Duration::from_secs(10))
            .with_inactivity_interval(Duration::from_secs(3))
            .build()
            .into()
    }

    #[test]
    fn defaults_are_flinks() {
        let p = DefaultRollingPolicy::default();
        assert_eq!(p.max_part_size(), 128 * 1024 * 1024);
        assert_eq!(p.rollover_interval(), Duration::from_secs(60));
        assert_eq!(p.inactivity_interval(), Duration::from_secs(60));
        assert_eq!(DefaultRollingPolicy::builder().build(), p);
    }

    #[test]
    fn rolls_by_size() {
        let p = policy();
        assert!(!p.should_roll_on_event(&part(4095, 0, 0)));
        assert!(p.should_roll_on_event(&part(4096, 0, 0)));
        assert!(p.should_roll_on_checkpoint(&part(5000, 0, 0), 0));
        assert!(!p.should_roll_on_checkpoint(&part(4095, 0, 0), 0));
    }

    #[test]
    fn rolls_by_rollover_interval() {
        let p = policy();
        // Written every second: never inactive, but open 10 s at t=10 s.
        let at = |now: u64| part(1, 0, now - 1000);
        assert!(!p.should_roll_on_processing_time(&at(9_999), 9_999));
        assert!(p.should_roll_on_processing_time(&at(10_000), 10_000));
        assert!(p.should_roll_on_checkpoint(&at(10_000), 10_000));
    }

    #[test]
    fn rolls_by_inactivity() {
        let p = policy();
        let idle = part(1, 1_000, 2_000);
        assert!(!p.should_roll_on_processing_time(&idle, 4_999));
        assert!(p.should_roll_on_processing_time(&idle, 5_000));
        // A clock that went backwards rolls nothing.
        assert!(!p.should_roll_on_processing_time(&idle, 0));
    }

    #[test]
    fn on_checkpoint_rolls_at_every_checkpoint_only() {
        let p = RollingPolicy::from(OnCheckpointRollingPolicy::build());
        let huge = part(u64::MAX, 0, 0);
        assert!(!p.should_roll_on_event(&huge));
        assert!(!p.should_roll_on_processing_time(&huge, u64::MAX));
        assert!(p.should_roll_on_checkpoint(&part(0, 5, 5), 5));
    }
}
