//! The code of the command-line tools beside `run` and `replay`: `gridwatch produce` (the
//! simulator as a Kafka load generator). `gen-seeds` lives in [`crate::seeds`] and
//! `dlq replay` in [`crate::sink::dlq`], beside the formats they write and read.

pub mod produce;
