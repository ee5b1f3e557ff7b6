//! The snapshot suite (`snapshot_restore/suite.rs`) on the heap backend.

const BACKEND: floe_state::StateBackendKind = floe_state::StateBackendKind::HashMap;

include!("snapshot_restore/suite.rs");
