//! gridwatch: a real-time community-safety event-stream processor.
//!
//! The flow of one event, module by module:
//!
//! ```text
//! source/ ──► decode ──► grid ──► dedup ──► window ──► rules ──► sink/
//! (simulator,  (JSON or   (which   (event_id  (event-time (immediate, (JSONL files,
//!  file replay, protobuf,  cell)    horizon)   tumbling    threshold,  Alertmanager,
//!  Kafka)       validate)                      panes,      spike,      CloudEvents
//!                                              sliding     cusum,      webhook, Kafka)
//!                                              views)      data_gap)
//! ```
//!
//! [`pipeline::Pipeline`] wires the synchronous stages together: it takes one source record
//! and the current wall-clock time, and appends final windows, alert state changes and dead
//! letters to an [`pipeline::Outputs`] buffer. Everything stateful in it can be snapshotted to
//! bytes and restored ([`state`]); [`partitions`] keeps one pipeline per input partition, the
//! unit of state that follows a Kafka partition from instance to instance. The async shell around it lives in [`service`] (the `run`
//! command: sources, HTTP [`api`], [`metrics`], graceful shutdown) and [`replay`] (a file, as
//! fast as possible). [`config`] holds the layered TOML + `GRIDWATCH_*` configuration, and
//! [`seeds`] generates the reference data (communities, cells, devices) that [`grid`] loads.
//! Beside the flow: [`fraud`] tracks the city's fraud-incidence target, [`reload`] swaps in a
//! changed rules file, and [`event`] holds the taxonomy.

pub mod api;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod dedup;
pub mod event;
pub mod fraud;
pub mod grid;
pub mod kafka;
pub mod metrics;
pub mod partitions;
pub mod pipeline;
pub mod privacy;
pub mod proto;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod secret;
pub mod seeds;
pub mod service;
pub mod sink;
pub mod sorted_map;
pub mod source;
pub mod state;
pub mod time;
pub mod tools;
pub mod window;
