//! What the command line needs beyond parsing, kept in the library so that it is tested here
//! and `main.rs` stays a thin dispatcher: exit codes, input-format sniffing, the verdict on a
//! mostly rejected replay, logging setup, and the completions and man page generated from
//! the clap definitions.

pub mod check;
pub mod connectivity;
pub mod docs;
pub mod exit;
pub mod logging;
pub mod output;
pub mod progress;
pub mod show;
pub mod sniff;
pub mod verdict;
