//! What a command prints on stdout: its result, as text or (`--summary-json`) as one JSON
//! object, the same way for every command. A reader that went away (`gridwatch replay … |
//! head`) ends the output quietly: the command still finishes and exits with its usual code.

use std::io::Write;
use std::time::Instant;

/// `--quiet` and `--summary-json`, shared by every long command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct OutputArgs {
    /// No progress on stderr (a bar on a terminal, else a line every 5 s); the summary is
    /// still printed.
    #[arg(long, alias = "no-progress")]
    pub quiet: bool,
    /// Print the final summary as one JSON object on stdout (its counts, `command` and
    /// `elapsed_seconds`) instead of text.
    #[arg(long)]
    pub summary_json: bool,
}

impl OutputArgs {
    /// How progress is shown (see [`super::progress::ProgressMode::detect`]).
    pub fn progress_mode(self) -> super::progress::ProgressMode {
        super::progress::ProgressMode::detect(self.quiet)
    }

    /// Prints `summary` of `command` as asked (see [`print_summary`]).
    pub fn print_summary<T>(
        self,
        command: &str,
        summary: &T,
        started: Instant,
    ) -> std::io::Result<()>
    where
        T: serde::Serialize + std::fmt::Display,
    {
        print_summary(command, summary, self.summary_json, started)
    }
}

/// Writes `bytes` to stdout and flushes; a closed pipe (EPIPE) is not an error.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(bytes).and_then(|()| stdout.flush());
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints `text` and a newline on stdout (see [`write_stdout`]).
pub fn print_line(text: &str) -> std::io::Result<()> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_stdout(line.as_bytes())
}

/// The final summary of `command`: its text, or with `json` one JSON object of its fields
/// with `command` and `elapsed_seconds` (since `started`) beside them, on one line.
pub fn render_summary<T>(command: &str, summary: &T, json: bool, started: Instant) -> String
where
    T: serde::Serialize + std::fmt::Display,
{
    if !json {
        return summary.to_string();
    }
    let mut object = match serde_json::to_value(summary) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(other) => {
            let mut object = serde_json::Map::new();
            object.insert("summary".to_string(), other);
            object
        }
        Err(error) => {
            let mut object = serde_json::Map::new();
            object.insert(
                "error".to_string(),
                serde_json::Value::String(error.to_string()),
            );
            object
        }
    };
    object.insert(
        "command".to_string(),
        serde_json::Value::String(command.to_string()),
    );
    object.insert(
        "elapsed_seconds".to_string(),
        serde_json::json!(started.elapsed().as_secs_f64()),
    );
    serde_json::Value::Object(object).to_string()
}

/// Prints the summary of `command` (see [`render_summary`]) on stdout.
pub fn print_summary<T>(
    command: &str,
    summary: &T,
    json: bool,
    started: Instant,
) -> std::io::Result<()>
where
    T: serde::Serialize + std::fmt::Display,
{
    print_line(&render_summary(command, summary, json, started))
}

/// What `simulate` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SimulateSummary {
    /// Events written.
    pub events: u64,
    /// The file written.
    pub out: std::path::PathBuf,
    /// Its format (`jsonl`, `protobuf`).
    pub format: String,
}

impl std::fmt::Display for SimulateSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "wrote {} events to {}",
            self.events,
            self.out.display()
        )
    }
}

/// What `produce` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProduceSummary {
    /// Events acknowledged by the broker (when interrupted: handed to the producer).
    pub produced: u64,
    /// The topic.
    pub topic: String,
    /// Whether SIGINT or SIGTERM ended the run (records handed to the producer may not all
    /// be delivered).
    pub interrupted: bool,
}

impl std::fmt::Display for ProduceSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.interrupted {
            write!(
                formatter,
                "interrupted after {} events to {}; records handed to the producer may not all be delivered",
                self.produced, self.topic
            )
        } else {
            write!(
                formatter,
                "produced {} events to {}",
                self.produced, self.topic
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_summary_is_one_line_with_the_command_and_the_fields() {
        let summary = SimulateSummary {
            events: 3,
            out: "a.jsonl".into(),
            format: "jsonl".to_string(),
        };
        let text = render_summary("simulate", &summary, false, Instant::now());
        assert_eq!(text, "wrote 3 events to a.jsonl");
        let json = render_summary("simulate", &summary, true, Instant::now());
        assert_eq!(json.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["command"], "simulate");
        assert_eq!(value["events"], 3);
        assert!(value["elapsed_seconds"].is_number());
    }
}
