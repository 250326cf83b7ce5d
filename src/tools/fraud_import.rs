//! `gridwatch fraud import --from FILE`: validates a case history (see
//! [`crate::fraud::history`]) against the configured registry, then stores it where every
//! instance finds it:
//!
//! - in `fraud.history_path` (written atomically in canonical form; the service loads it at
//!   start), and
//! - with Kafka outputs on (`kafka.sinks.enabled` and a `status_topic`), as the compacted
//!   status-topic record `fraud/<group_id>/imported`, which every instance's read model
//!   applies within seconds, without a restart.
//!
//! Importing replaces the previous import (both destinations are keyed), so importing the same
//! file twice changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::fraud::history::{HistoryError, ImportedHistory};
use crate::fraud::FraudSettings;
use crate::grid::GridRegistry;

/// How long the import waits for the broker to acknowledge the status record.
const KAFKA_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum FraudImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid history (every problem listed).
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problems.
        source: HistoryError,
    },
    /// Neither destination is configured.
    #[error("nowhere to store the history: set fraud.history_path, or kafka.sinks.enabled with kafka.sinks.status_topic")]
    NoDestination,
    /// Writing `fraud.history_path` failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `[fraud]` section or the registry is invalid.
    #[error("{0}")]
    Config(String),
    /// The status topic did not take the record.
    #[error("producing the history to the status topic {topic}: {message}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The producer's error.
        message: String,
    },
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportSummary {
    /// Rows (community × month) imported.
    pub rows: usize,
    /// Cases filed over all rows.
    pub cases_filed: u64,
    /// Reports over all rows.
    pub reported: u64,
    /// The file written, if any.
    pub written_to: Option<PathBuf>,
    /// Whether the history file already held exactly this history.
    pub unchanged: bool,
    /// The status topic and key produced to, if any.
    pub produced_to: Option<(String, String)>,
    /// Whether nothing was stored (`--dry-run`).
    pub dry_run: bool,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        write!(
            formatter,
            "{verb} {} community-months ({} cases filed, {} reports)",
            self.rows, self.cases_filed, self.reported
        )?;
        if let Some(path) = &self.written_to {
            let state = match (self.unchanged, self.dry_run) {
                (true, _) => "unchanged",
                (false, true) => "would be written",
                (false, false) => "written",
            };
            write!(formatter, "; {} {state}", path.display())?;
        }
        if let Some((topic, key)) = &self.produced_to {
            let verb = if self.dry_run {
                "would be produced to"
            } else {
                "produced to"
            };
            write!(formatter, "; {verb} {topic} as {key}")?;
        }
        Ok(())
    }
}

/// Validates `from` and stores it (unless `dry_run`).
pub async fn import_history(
    config: &Config,
    registry: &GridRegistry,
    from: &Path,
    dry_run: bool,
    now_millis: i64,
) -> Result<ImportSummary, FraudImportError> {
    import_history_with_progress(config, registry, from, dry_run, now_millis, &mut |_| {}).await
}

/// As [`import_history`], telling `on_step` each step as it starts (the command line's
/// progress: validating, writing, producing).
pub async fn import_history_with_progress(
    config: &Config,
    registry: &GridRegistry,
    from: &Path,
    dry_run: bool,
    now_millis: i64,
    on_step: &mut (dyn FnMut(&str) + Send),
) -> Result<ImportSummary, FraudImportError> {
    on_step(&format!("validating {}", from.display()));
    let settings = FraudSettings::from_config(&config.fraud)
        .map_err(|error| FraudImportError::Config(error.to_string()))?;
    let text = std::fs::read_to_string(from).map_err(|source| FraudImportError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    let history =
        ImportedHistory::from_csv(&text, registry, now_millis, settings.timezone_offset_hours)
            .map_err(|source| FraudImportError::Invalid {
                path: from.to_path_buf(),
                source,
            })?;
    let sinks = &config.kafka.sinks;
    let status_topic =
        (sinks.enabled && !sinks.status_topic.is_empty()).then(|| sinks.status_topic.clone());
    if config.fraud.history_path.is_none() && status_topic.is_none() {
        return Err(FraudImportError::NoDestination);
    }
    let total = history.total();
    let mut summary = ImportSummary {
        rows: history.len(),
        cases_filed: total.cases_filed,
        reported: total.reported,
        written_to: config.fraud.history_path.clone(),
        unchanged: false,
        produced_to: None,
        dry_run,
    };
    let canonical = history.to_csv();
    if let Some(path) = &config.fraud.history_path {
        summary.unchanged = std::fs::read_to_string(path).is_ok_and(|old| old == canonical);
        if !dry_run && !summary.unchanged {
            on_step(&format!("writing {}", path.display()));
            write_atomically(path, &canonical).map_err(|source| FraudImportError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    if let Some(topic) = status_topic {
        let partial = history.to_partial(now_millis);
        let key = crate::sink::kafka::fraud_partial_key(&config.kafka.group_id, &partial);
        if !dry_run {
            on_step(&format!("producing to {topic}"));
            produce_status_record(config, &topic, &key, &partial).await?;
        }
        summary.produced_to = Some((topic, key));
    }
    Ok(summary)
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path` (a reader
/// never sees half a history).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

async fn produce_status_record(
    config: &Config,
    topic: &str,
    key: &str,
    partial: &crate::proto::FraudPartial,
) -> Result<(), FraudImportError> {
    use prost::Message;
    let kafka_error = |message: String| FraudImportError::Kafka {
        topic: topic.to_string(),
        message,
    };
    let producer: FutureProducer = crate::kafka::non_group_client_config(
        &config.kafka,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .create()
    .map_err(|error| kafka_error(error.to_string()))?;
    let value = partial.encode_to_vec();
    let headers = crate::kafka::owned_headers(&[(
        crate::kafka::CONTENT_TYPE_HEADER,
        crate::kafka::PROTOBUF_CONTENT_TYPE.to_string(),
    )]);
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&value)
                .headers(headers),
            KAFKA_DELIVERY_TIMEOUT,
        )
        .await
        .map_err(|(error, _)| kafka_error(error.to_string()))?;
    Ok(())
}
