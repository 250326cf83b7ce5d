//! Dedup by event id.
