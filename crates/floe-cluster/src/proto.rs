//! The generated protobuf messages and tonic services of
//! `proto/floe_cluster.proto` (package `floe.cluster.v1`), built by
//! `build.rs` without a system `protoc`. Everything else in the crate
//! speaks the domain types of [`crate::ids`]; conversions live here so the
//! services stay short.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("floe.cluster.v1");
