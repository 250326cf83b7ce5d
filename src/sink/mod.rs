//! Sinks: where outputs go. JSONL files take whole [`crate::pipeline::Outputs`] batches;
//! alert state changes are also delivered to Alertmanager and a CloudEvents webhook
//! ([`delivery`]), enriched with labels and annotations ([`enrich`]).

pub mod alertmanager;
pub mod delivery;
pub mod enrich;
pub mod file;
pub mod kafka;
pub mod webhook;
