//! JSONL file sink: `windows.jsonl`, `alerts.jsonl` and `dead_letter.jsonl` in one directory,
//! one proto3-JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::grid::GridRegistry;
use crate::pipeline::Outputs;
use crate::sink::window_json::WindowJsonWriter;

/// Errors writing files.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// A file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Name of the final-windows file.
pub const WINDOWS_FILE: &str = "windows.jsonl";
/// Name of the alerts file.
pub const ALERTS_FILE: &str = "alerts.jsonl";
/// Name of the dead-letter file.
pub const DEAD_LETTER_FILE: &str = "dead_letter.jsonl";

/// Writes outputs to three JSONL files.
pub struct JsonlFileSink {
    /// The directory, for error messages.
    directory: PathBuf,
    /// Final windows.
    windows: BufWriter<File>,
    /// Alert state changes.
    alerts: BufWriter<File>,
    /// Dead letters.
    dead_letters: BufWriter<File>,
    /// Encodes windows without serde (the most frequent output).
    window_json: WindowJsonWriter,
    /// Reused buffer of a batch's window lines.
    window_lines: Vec<u8>,
    /// Names the windows' cells ([`WindowJsonWriter::write_pane`]).
    registry: Arc<GridRegistry>,
}

impl JsonlFileSink {
    /// Creates the directory and the three files; `append` keeps existing content (the
    /// service), otherwise files are truncated (a replay).
    pub fn open(
        directory: &Path,
        append: bool,
        registry: Arc<GridRegistry>,
    ) -> Result<JsonlFileSink, FileSinkError> {
        std::fs::create_dir_all(directory).map_err(|source| FileSinkError::Io {
            path: directory.to_path_buf(),
            source,
        })?;
        let open = |name: &str| -> Result<BufWriter<File>, FileSinkError> {
            let path = directory.join(name);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&path)
                .map_err(|source| FileSinkError::Io { path, source })?;
            Ok(BufWriter::with_capacity(1 << 16, file))
        };
        Ok(JsonlFileSink {
            directory: directory.to_path_buf(),
            windows: open(WINDOWS_FILE)?,
            alerts: open(ALERTS_FILE)?,
            dead_letters: open(DEAD_LETTER_FILE)?,
            window_json: WindowJsonWriter::new(),
            window_lines: Vec::new(),
            registry,
        })
    }

    /// Appends every output of a batch.
    pub fn write(&mut self, outputs: &Outputs) -> Result<(), FileSinkError> {
        let io_error = |source: std::io::Error| FileSinkError::Io {
            path: self.directory.join(WINDOWS_FILE),
            source,
        };
        self.window_lines.clear();
        for pane in &outputs.windows {
            let written = self
                .window_json
                .write_pane(&self.registry, pane, &mut self.window_lines)
                .map_err(|error| io_error(error.into()))?;
            if written {
                self.window_lines.push(b'\n');
            }
        }
        self.windows
            .write_all(&self.window_lines)
            .map_err(io_error)?;
        write_lines(
            &mut self.alerts,
            &outputs.alerts,
            &self.directory,
            ALERTS_FILE,
        )?;
        write_lines(
            &mut self.dead_letters,
            &outputs.dead_letters,
            &self.directory,
            DEAD_LETTER_FILE,
        )?;
        Ok(())
    }

    /// Flushes buffered lines to the files.
    pub fn flush(&mut self) -> Result<(), FileSinkError> {
        for (writer, name) in [
            (&mut self.windows, WINDOWS_FILE),
            (&mut self.alerts, ALERTS_FILE),
            (&mut self.dead_letters, DEAD_LETTER_FILE),
        ] {
            writer.flush().map_err(|source| FileSinkError::Io {
                path: self.directory.join(name),
                source,
            })?;
        }
        Ok(())
    }
}

fn write_lines<T: serde::Serialize>(
    writer: &mut BufWriter<File>,
    records: &[T],
    directory: &Path,
    name: &str,
) -> Result<(), FileSinkError> {
    let io_error = |source: std::io::Error| FileSinkError::Io {
        path: directory.join(name),
        source,
    };
    for record in records {
        serde_json::to_writer(&mut *writer, record).map_err(|error| io_error(error.into()))?;
        writer.write_all(b"\n").map_err(io_error)?;
    }
    Ok(())
}
