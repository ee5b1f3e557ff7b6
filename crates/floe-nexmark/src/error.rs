//! The crate's typed errors.

/// What can be wrong with a Nexmark configuration or a saved position.
#[derive(Debug, thiserror::Error)]
pub enum NexmarkError {
    /// A configuration value out of range.
    #[error("nexmark {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A source position (from a checkpoint) that does not decode.
    #[error("nexmark source position: {0}")]
    Position(String),
}
