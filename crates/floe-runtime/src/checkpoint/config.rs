//! The settings the coordinator applies.

use std::time::Duration;

use super::aligner::AlignmentMode;

/// Checkpoint settings the coordinator applies (Flink's `CheckpointConfig`).
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// Time between triggers.
    pub interval: Duration,
    /// Aligned (exactly-once) or not (at-least-once).
    pub alignment: AlignmentMode,
    /// A checkpoint not complete by then is aborted.
    pub timeout: Duration,
    /// Least time between a completion and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated before the job fails over.
    pub tolerable_failures: u32,
    /// Completed checkpoints kept.
    pub num_retained: usize,
    /// Keep the checkpoints when the job is cancelled (they are always kept
    /// when it fails, and always discarded when it finishes).
    pub retain_on_cancellation: bool,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            interval: Duration::from_secs(1),
            alignment: AlignmentMode::Aligned,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            num_retained: 1,
            retain_on_cancellation: false,
        }
    }
}

impl CheckpointSettings {
    /// Checks the ranges the configuration keys enforce, for settings
    /// changed in code (`configure_checkpointing`).
    pub fn validate(&self) -> Result<(), String> {
        let min = Duration::from_millis(10);
        if self.interval < min {
            return Err(format!(
                "checkpoint interval {:?} is too short: it must be at least 10 ms",
                self.interval
            ));
        }
        if self.timeout < min {
            return Err(format!(
                "checkpoint timeout {:?} is too short: it must be at least 10 ms",
                self.timeout
            ));
        }
        if self.max_concurrent == 0 {
            return Err("max concurrent checkpoints must be at least 1".into());
        }
        if self.num_retained == 0 {
            return Err("the number of retained checkpoints must be at least 1".into());
        }
        Ok(())
    }
}
