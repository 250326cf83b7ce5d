//! Sinks: where outputs go. JSONL files take whole [`crate::pipeline::Outputs`] batches;
//! alert state changes are also delivered to Alertmanager and a CloudEvents webhook
//! ([`delivery`]), enriched with labels and annotations ([`enrich`]). [`dlq`] replays the
//! dead letters [`kafka`] wrote.

pub mod alertmanager;
pub mod cloudevents;
pub mod delivery;
pub mod dlq;
pub mod enrich;
pub mod file;
pub mod kafka;
pub mod webhook;
