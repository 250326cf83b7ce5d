//! Watermarks per partition.
