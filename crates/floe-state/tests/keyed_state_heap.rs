//! The keyed-state suite (`keyed_state/suite.rs`) on the heap backend.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

include!("keyed_state/suite.rs");
