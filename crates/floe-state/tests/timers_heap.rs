//! The timer suite (`timers/suite.rs`) on the heap backend.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

include!("timers/suite.rs");
