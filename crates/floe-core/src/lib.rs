//! Floe's shared vocabulary.
//!
//! Everything that more than one layer (state, runtime, API, CLI) must agree on
//! lives here so that no layer depends on another's internals just to name a
//! type: job ids, the in-band stream messages (records, watermarks, checkpoint
//! barriers, end of input), durations in Flink's notation, and configuration.

pub mod config;
pub mod duration;
pub mod failpoint;
pub mod ids;
pub mod message;

pub use config::{ConfigError, ConfigOption, Configuration, PortRanges, YamlError};
pub use duration::{DurationParseError, parse_duration};
pub use ids::{JobId, JobIdParseError};
pub use message::{
    Batch, CheckpointBarrier, CheckpointKind, KeyGroup, NO_TIMESTAMP, StreamMessage, Watermark,
    WatermarkStatus,
};
