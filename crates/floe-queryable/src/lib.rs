//! Queryable state over the network (Flink's queryable state, simpler).
//!
//! A job started with `queryable-state.enable: true` registers its
//! [`QueryableStateRegistry`](floe_runtime::QueryableStateRegistry) with
//! this process's [`QueryableStateService`]: a **proxy** that clients
//! connect to, which routes every query by key group to the subtask owning
//! the key, and a **server** that answers queries already routed to one of
//! its subtasks (what a proxy on another host would send). Both speak the
//! small binary [`protocol`]; [`QueryableStateClient`] is the async Rust
//! client. Queries pipeline on one connection, so one client reaches tens
//! of thousands of queries per second.
//!
//! The REST API (`GET /jobs/{id}/state/{name}?key=<json>`) and `floe query`
//! ask through the job's registry directly, in JSON.

pub mod client;
pub mod protocol;
pub mod service;

pub use client::{QueryClientError, QueryableStateClient};
pub use service::{JobRegistration, QueryableServiceError, QueryableStateService, ServiceLimits};
