//! Sinks: where outputs go. JSONL files take whole [`crate::pipeline::Outputs`] batches;
//! alert state changes are also delivered to Alertmanager and a CloudEvents webhook
//! ([`delivery`]), enriched with labels and annotations ([`enrich`]); [`kafka`] writes the
//! output topics (`gridwatch dlq replay`, [`crate::tools::dlq_replay`], reads its dead
//! letters back).

// No panic path reachable from input, state or configuration (README "Security").

pub mod alertmanager;
pub mod cloudevents;
pub mod delivery;
pub mod enrich;
pub mod file;
pub mod kafka;
pub mod webhook;
pub mod window_json;
