//! Generated protobuf types (prost) with their proto3 JSON mapping (pbjson).

// No panic path reachable from input, state or configuration (README "Security").
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/gridwatch.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/gridwatch.v1.serde.rs"));
