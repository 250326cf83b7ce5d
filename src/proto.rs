//! Generated protobuf types (prost) with their proto3 JSON mapping (pbjson).

// No panic path reachable from input, state or configuration (README "Security").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![deny(clippy::panic, clippy::unreachable, clippy::unimplemented)]
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/gridwatch.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/gridwatch.v1.serde.rs"));
