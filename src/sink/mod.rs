//! Sinks: where outputs go. This issue writes JSONL files; the Kafka and Alertmanager sinks of
//! later issues take the same [`crate::pipeline::Outputs`] batches.

pub mod file;
