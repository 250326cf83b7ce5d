//! Log output: text with colour only on a terminal, or flat JSON lines (`message` beside
//! the event's fields, as log shippers expect), always on stderr so that stdout carries
//! only a command's result.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// `--log-format`: overrides the config's `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One flat JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> LogFormat {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Whether text logs are coloured: only when stderr is a terminal and `NO_COLOR` is unset
/// (a file or a pipe gets no escape codes).
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the process's log subscriber: `RUST_LOG` when set (e.g.
/// `RUST_LOG=info,gridwatch::sink=debug`), else `level`; a second call does nothing.
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(use_colour()).try_init(),
    };
}
