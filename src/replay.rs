//! `gridwatch replay`: a file through the pipeline as fast as possible, outputs to JSONL files,
//! a summary at the end. At end of input every open window is closed and emitted.
//!
//! Replay is deterministic: the wall clock is read once at start (for the clock-skew check),
//! and the watermark never advances with processing time, so the same file always gives the
//! same outputs.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::decode::InputFormat;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::pipeline::{Outputs, Pipeline, PipelineSettings, RecordResult};
use crate::rules::RuleSet;
use crate::sink::file::JsonlFileSink;
use crate::source::file::FileReader;

/// What to replay and where to write.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The input file.
    pub input: PathBuf,
    /// Its format.
    pub format: InputFormat,
    /// Where `windows.jsonl`, `alerts.jsonl` and `dead_letter.jsonl` go.
    pub output_dir: PathBuf,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub show_progress: bool,
}

/// Counts of a finished replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Records read from the file.
    pub records: u64,
    /// Events accepted into windows.
    pub accepted: u64,
    /// Re-sent events counted once.
    pub duplicates: u64,
    /// Final windows written.
    pub windows: u64,
    /// Alert state changes written.
    pub alerts: u64,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Wall time of the replay.
    #[serde(skip)]
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Records per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Total dead letters.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(formatter, "records      {}", self.records)?;
        writeln!(formatter, "accepted     {}", self.accepted)?;
        writeln!(formatter, "duplicates   {}", self.duplicates)?;
        writeln!(formatter, "windows      {}", self.windows)?;
        writeln!(formatter, "alerts       {}", self.alerts)?;
        writeln!(formatter, "dead letters {}", self.dead_letter_total())?;
        for (reason, count) in &self.dead_letters {
            writeln!(formatter, "  {reason:<24} {count}")?;
        }
        write!(
            formatter,
            "elapsed      {:.3} s ({:.0} events/s)",
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )
    }
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be read.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// An output could not be written.
    #[error(transparent)]
    Sink(#[from] crate::sink::file::FileSinkError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Outputs are written in chunks of this many records.
const WRITE_EVERY_RECORDS: u64 = 4096;
/// Dead-letter payload bytes buffered before the outputs are written anyway.
const MAX_BUFFERED_DEAD_LETTER_BYTES: usize = 4 * 1024 * 1024;

/// Replays `options.input` with `config`'s window, ingest and privacy settings.
pub fn replay(
    options: &ReplayOptions,
    config: &Config,
    registry: Arc<GridRegistry>,
    rules: RuleSet,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let mut settings = PipelineSettings::from_config(config);
    settings.window.idle_timeout_millis = crate::time::NEVER_MILLIS;
    let metrics = Arc::new(Metrics::new(&["file"], rules.version())?);
    let mut pipeline = Pipeline::new(settings, registry, rules, metrics, "file");
    let mut reader = FileReader::open(&options.input, options.format)?
        .with_max_record_bytes(config.ingest.max_record_bytes);
    let mut sink = JsonlFileSink::open(&options.output_dir, false)?;
    let progress = progress_bar(options.show_progress, reader.total_bytes());
    let wall_millis = crate::time::wall_clock_millis();
    let mut summary = ReplaySummary::default();
    let mut outputs = Outputs::default();
    let mut buffered_dead_letter_bytes: usize = 0;
    while let Some(record) = reader.next() {
        let record = record?;
        summary.records += 1;
        match pipeline.process(record, wall_millis, &mut outputs) {
            RecordResult::Accepted => summary.accepted += 1,
            RecordResult::Duplicate => summary.duplicates += 1,
            RecordResult::Rejected(_) => {
                buffered_dead_letter_bytes += outputs
                    .dead_letters
                    .last()
                    .map_or(0, |dead_letter| dead_letter.payload.len());
            }
        }
        // Dead letters of hostile input are large (up to the payload limit each): written
        // early, so that buffering them never holds much of the input in memory.
        if summary.records % WRITE_EVERY_RECORDS == 0
            || buffered_dead_letter_bytes > MAX_BUFFERED_DEAD_LETTER_BYTES
        {
            drain(&mut outputs, &mut sink, &mut summary)?;
            buffered_dead_letter_bytes = 0;
            progress.set_position(reader.bytes_read());
        }
    }
    pipeline.finish(wall_millis, &mut outputs);
    drain(&mut outputs, &mut sink, &mut summary)?;
    sink.flush()?;
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn drain(
    outputs: &mut Outputs,
    sink: &mut JsonlFileSink,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    sink.write(outputs)?;
    summary.windows += outputs.windows.len() as u64;
    summary.alerts += outputs.alerts.len() as u64;
    for dead_letter in &outputs.dead_letters {
        *summary
            .dead_letters
            .entry(dead_letter.reason.clone())
            .or_default() += 1;
    }
    outputs.clear();
    Ok(())
}

fn progress_bar(show: bool, total_bytes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Path helper for tests and the CLI: the three output files of a replay directory.
pub fn output_files(directory: &Path) -> [PathBuf; 3] {
    [
        directory.join(crate::sink::file::WINDOWS_FILE),
        directory.join(crate::sink::file::ALERTS_FILE),
        directory.join(crate::sink::file::DEAD_LETTER_FILE),
    ]
}
