//! Progress of a long command: a bar on a terminal, a plain line every few seconds when
//! stderr is a file or a pipe (so a log shows the run is alive), nothing with `--quiet`.
//! A command whose total is not known up front (`produce` without `--events`, `dlq replay`)
//! gets a counter instead of a bar.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A plain line every [`PLAIN_EVERY`].
    Lines,
    /// Nothing (`--quiet`).
    Quiet,
}

impl ProgressMode {
    /// The mode for this process: `Quiet` when asked, else a bar on a terminal, else lines.
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// Counts units of work toward a total, known or not.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    label: &'static str,
    /// `None` when the total is not known up front.
    total: Option<u64>,
    bar: indicatif::ProgressBar,
    started: Instant,
    last_line: Instant,
    /// Units done at the last `set` (the final line reports it).
    done: u64,
}

impl Progress {
    /// Progress of `total` units named `label` (e.g. "events").
    pub fn new(mode: ProgressMode, label: &'static str, total: u64) -> Progress {
        Progress::with_total(mode, label, Some(total))
    }

    /// Progress of units named `label` whose total is not known: a counter and a rate.
    pub fn counter(mode: ProgressMode, label: &'static str) -> Progress {
        Progress::with_total(mode, label, None)
    }

    fn with_total(mode: ProgressMode, label: &'static str, total: Option<u64>) -> Progress {
        let bar = match (mode, total) {
            (ProgressMode::Bar, Some(total)) => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {human_pos}/{human_len} {msg} {per_sec} eta {eta} [{elapsed_precise}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(label);
                bar
            }
            (ProgressMode::Bar, None) => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {human_pos} {msg} {per_sec} [{elapsed_precise}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_message(label);
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            (ProgressMode::Lines | ProgressMode::Quiet, _) => indicatif::ProgressBar::hidden(),
        };
        let now = Instant::now();
        Progress {
            mode,
            label,
            total,
            bar,
            started: now,
            last_line: now,
            done: 0,
        }
    }

    /// Reports that `done` units are finished; cheap enough to call per unit.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match self.mode {
            ProgressMode::Bar => self.bar.set_position(done),
            ProgressMode::Lines => {
                if self.last_line.elapsed() >= PLAIN_EVERY {
                    self.last_line = Instant::now();
                    write_line(&self.line(done));
                }
            }
            ProgressMode::Quiet => {}
        }
    }

    /// A step of the work (`validating cases.csv`): the bar's message on a terminal, a
    /// plain line at once otherwise (steps are few).
    pub fn step(&mut self, text: &str) {
        match self.mode {
            ProgressMode::Bar => self.bar.set_message(text.to_string()),
            ProgressMode::Lines => write_line(&format!("progress: {text}")),
            ProgressMode::Quiet => {}
        }
    }

    /// The plain progress line for `done` units.
    pub fn line(&self, done: u64) -> String {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match self.total {
            Some(total) => {
                let percent = 100.0 * done as f64 / total.max(1) as f64;
                format!(
                    "progress: {done}/{total} {} ({percent:.1} %, {rate:.0}/s)",
                    self.label
                )
            }
            None => format!("progress: {done} {} ({rate:.0}/s)", self.label),
        }
    }

    /// Removes the bar (the command prints its own summary); without a terminal, prints a
    /// last plain line, so a log always shows how far a run got however short it was.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if self.mode == ProgressMode::Lines {
            write_line(&self.line(self.done));
        }
    }
}

/// Writes one line to stderr; a closed stderr (`2>&1 | head`) is not worth a panic.
fn write_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_how_far_and_how_fast() {
        let progress = Progress::new(ProgressMode::Quiet, "events", 200);
        let line = progress.line(50);
        assert!(
            line.starts_with("progress: 50/200 events (25.0 %, "),
            "{line}"
        );
        assert!(line.ends_with("/s)"), "{line}");
    }

    #[test]
    fn a_counter_line_says_how_many_without_a_total() {
        let progress = Progress::counter(ProgressMode::Quiet, "dead letters");
        let line = progress.line(7);
        assert!(line.starts_with("progress: 7 dead letters ("), "{line}");
    }
}
