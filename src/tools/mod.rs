//! The code of the command-line tools beside `run` and `replay`, one module per command:
//! `gridwatch produce` ([`produce`], the simulator as a Kafka load generator), `gridwatch
//! gen-seeds` ([`gen_seeds`], the reference data) and `gridwatch dlq replay`
//! ([`dlq_replay`], re-injecting dead letters after a fix), `gridwatch fraud import`
//! ([`fraud_import`], the case history before the stream). What they share with the service
//! (record formats, Kafka headers and client settings) lives in the service's own modules,
//! e.g. [`crate::kafka`] and [`crate::sink::kafka`].

// No panic path reachable from input, state or configuration (README "Security").

pub mod dlq_replay;
pub mod fraud_import;
pub mod gen_seeds;
pub mod produce;
