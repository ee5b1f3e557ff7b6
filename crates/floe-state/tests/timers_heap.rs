//! The timer suite (`timers/suite.rs`) on the heap backend.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

/// The backend's default settings.
fn settings() -> floe_state::StateBackendSettings {
    BACKEND.into()
}

include!("timers/suite.rs");
