//! Exit codes that tell a script what went wrong without parsing the message.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a runtime failure (a broker, a write, the service) |
//! | 2 | usage: the command line itself is wrong (clap's own code) |
//! | 3 | configuration: a config or rules file is missing or invalid |
//! | 4 | input: the input file does not exist or cannot be read |
//! | 5 | finished, but more than the allowed share of the input was rejected |

use crate::config::ConfigError;
use crate::service::ServiceError;

/// A runtime failure without a more specific code.
pub const FAILURE: u8 = 1;
/// The command line is wrong (clap exits with this code itself).
pub const USAGE: u8 = 2;
/// A config or rules file is missing or invalid.
pub const CONFIG: u8 = 3;
/// The input file does not exist or cannot be read.
pub const INPUT: u8 = 4;
/// The command finished but rejected more than the allowed share of its input.
pub const MOSTLY_REJECTED: u8 = 5;

/// An input file that cannot be read, said once: the path and the reason, no library
/// wording around it.
#[derive(Debug, thiserror::Error)]
#[error("cannot read input {path}: {reason}")]
pub struct InputError {
    /// The path as given.
    pub path: String,
    /// Why, in words (e.g. "no such file").
    pub reason: String,
}

impl InputError {
    /// The error for `path` from the I/O error of opening or reading it.
    pub fn from_io(path: &std::path::Path, error: &std::io::Error) -> InputError {
        let reason = match error.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
            _ => error.to_string(),
        };
        InputError {
            path: path.display().to_string(),
            reason,
        }
    }

    /// Checks that `path` is a readable file before a command starts working on it.
    pub fn check_readable(path: &std::path::Path) -> Result<(), InputError> {
        if path.is_dir() {
            return Err(InputError {
                path: path.display().to_string(),
                reason: "it is a directory".to_string(),
            });
        }
        std::fs::File::open(path)
            .map(drop)
            .map_err(|error| InputError::from_io(path, &error))
    }
}

/// A config or rules file that `check-config` rejects, said with its path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InvalidFile {
    /// The file.
    pub path: String,
    /// Every problem, as the parser or validator words it.
    pub message: String,
}

/// A command that finished but rejected more of its input than allowed.
#[derive(Debug, thiserror::Error)]
#[error("{diagnosis}")]
pub struct MostlyRejected {
    /// One line: how much was rejected, why, and what to try.
    pub diagnosis: String,
}

/// The exit code for `error`: the first cause in its chain that has a specific code.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() || cause.is::<InvalidFile>() {
            return CONFIG;
        }
        if let Some(ServiceError::Rules { .. }) = cause.downcast_ref::<ServiceError>() {
            return CONFIG;
        }
        if cause.is::<InputError>() {
            return INPUT;
        }
        if cause.is::<MostlyRejected>() {
            return MOSTLY_REJECTED;
        }
    }
    FAILURE
}

/// The error and its causes on one line, each cause only when the message so far does not
/// already say it (most errors print their source in their own message; `{:#}` would repeat
/// it, e.g. "No such file or directory (os error 2): No such file or directory (os error 2)").
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = error.to_string();
    for cause in error.chain().skip(1) {
        let cause_text = cause.to_string();
        if !report.contains(&cause_text) {
            report.push_str(": ");
            report.push_str(&cause_text);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_config_file_is_a_configuration_error() {
        let error = anyhow::Error::from(ConfigError::MissingFile {
            path: "x.toml".to_string(),
        });
        assert_eq!(exit_code(&error), CONFIG);
    }

    #[test]
    fn a_missing_input_is_an_input_error_even_under_context() {
        let missing = std::path::Path::new("/nonexistent/gridwatch-input.jsonl");
        let error = InputError::check_readable(missing).unwrap_err();
        assert_eq!(error.reason, "no such file");
        let error = anyhow::Error::from(error).context("replaying");
        assert_eq!(exit_code(&error), INPUT);
    }

    #[test]
    fn a_directory_is_not_a_readable_input() {
        let directory = tempfile::tempdir().unwrap();
        let error = InputError::check_readable(directory.path()).unwrap_err();
        assert_eq!(error.reason, "it is a directory");
    }

    #[test]
    fn a_mostly_rejected_run_has_its_own_code_and_other_failures_are_one() {
        let rejected = anyhow::Error::from(MostlyRejected {
            diagnosis: "x".to_string(),
        });
        assert_eq!(exit_code(&rejected), MOSTLY_REJECTED);
        assert_eq!(exit_code(&anyhow::anyhow!("broker down")), FAILURE);
    }

    #[test]
    fn the_report_says_a_repeated_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = anyhow::Error::new(io).context("reading x: gone");
        assert_eq!(error_report(&error), "reading x: gone");
        let error = anyhow::anyhow!("root").context("outer");
        assert_eq!(error_report(&error), "outer: root");
    }
}
