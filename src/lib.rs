//! gridwatch: a real-time community-safety event-stream processor.
//!
//! The flow of one event, module by module:
//!
//! ```text
//! source/ ──► decode ──► grid/ ──► dedup ──┬─► window/ ──► final windows ──┐
//! (simulator, (JSON or   (which   (event_id │   (panes, sliding views)     │
//!  file,       protobuf,  cell)    horizon) ├─► rules/ ───► alert changes ─┼─► sink/
//!  Kafka)      validate)                    │   (immediate, threshold,     │   (JSONL, Kafka
//!                                           │    spike, cusum, data_gap)   │    topics,
//!                                           └─► fraud/ ───► fraud report   │    Alertmanager,
//!   rejected at any step ──► dead letters ([`dead_letter`]) ───────────────┘    webhook)
//! ```
//!
//! An accepted event fans out to the window, the rules and the fraud tracker; rules keep
//! their own series and do not consume windows.
//!
//! [`pipeline::Pipeline`] wires the synchronous stages together: it takes one source record
//! and the current wall-clock time, and appends final windows, alert state changes and dead
//! letters to an [`pipeline::Outputs`] buffer. Everything stateful in it can be snapshotted to
//! bytes and restored ([`state`]); [`partitions`] keeps one pipeline per input partition, the
//! unit of state that follows a Kafka partition from instance to instance, and decides which
//! partition is due for a snapshot. Untrusted input is bounded by [`limits`] and stripped of
//! personal data by [`privacy`] while it is decoded; restored state is checked against the
//! registry's shape ([`grid::shape`]). The async shell around it lives in [`service`] (the
//! `run` command: sources, HTTP [`api`] and the operators' page ([`console`]) behind the locked-down server of [`http`], [`metrics`],
//! graceful shutdown) and [`replay`] (a file, as fast as possible). [`config`] holds the layered TOML + `GRIDWATCH_*` configuration, and
//! `gridwatch gen-seeds` ([`tools::gen_seeds`]) generates the reference data (communities,
//! cells, devices) that [`grid`] loads.
//! Beside the flow: [`fraud`] tracks the city's fraud-incidence target, [`reload`] swaps in a
//! changed rules file, [`simulator`] generates the seeded event streams that the simulator
//! source paces and `gridwatch simulate` writes, and [`event`] holds the taxonomy. [`kafka`] is
//! what every Kafka client shares (errors, headers, partition ids, client settings); [`tools`]
//! holds the code of the other commands (`produce`, `gen-seeds`, `dlq replay`).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![deny(clippy::panic, clippy::unreachable, clippy::unimplemented)]

pub mod api;
pub(crate) mod byte_words;
pub mod cli;
pub mod config;
pub mod console;
pub mod dead_letter;
pub mod decode;
pub mod dedup;
pub mod event;
pub mod fraud;
pub mod grid;
pub mod http;
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod partitions;
pub mod pipeline;
pub mod privacy;
pub mod proto;
pub mod read_model;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod secret;
pub mod service;
pub mod simulator;
pub mod sink;
pub mod sorted_map;
pub mod source;
pub mod state;
pub mod time;
pub mod tools;
pub mod window;
