//! The imported case history: monthly anti-fraud chain counts per community for the months
//! before gridwatch observed the stream (`gridwatch fraud import --from FILE`), so that a
//! fresh deployment reports the real year to date on day one.
//!
//! The file has the shape of `seeds/fraud_baseline.csv` — `community_id,year,month,
//! fraud_warnings,fraud_reported,fraud_cases_filed` — optionally with `fraud_dissuaded`. Each
//! row declares one community's **whole month**: the month counts as observed (zeros
//! included) and its counts replace whatever the stream counted in that month (see
//! [`super::ledger`]). The file is validated whole: every bad row is listed and nothing is
//! imported unless all rows are good. Importing is idempotent: the history is stored in a
//! canonical form (sorted rows), and importing again replaces it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::calendar;
use super::tracker::ChainCounts;
use crate::grid::GridRegistry;
use crate::proto::{FraudCountSource, FraudPartial};

/// The `partition` name of the imported history's [`FraudPartial`] (its status-topic key is
/// `fraud/<group>/imported`).
pub const IMPORTED_PARTITION: &str = "imported";

/// Most rows accepted (162 communities × 12 months × a few years, with room to spare).
pub const MAX_ROWS: usize = 100_000;

/// Most problems listed (the count of the rest is given).
const MAX_LISTED_PROBLEMS: usize = 50;

/// Why a history file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Rows (or the header) are invalid; nothing was imported.
    #[error("{} problem(s) in the fraud history, nothing imported:\n{}", problems.len(), list(problems))]
    Invalid {
        /// One line per problem, naming the line of the file.
        problems: Vec<String>,
    },
}

fn list(problems: &[String]) -> String {
    let mut text: Vec<String> = problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|problem| format!("  {problem}"))
        .collect();
    if problems.len() > MAX_LISTED_PROBLEMS {
        text.push(format!(
            "  … and {} more",
            problems.len() - MAX_LISTED_PROBLEMS
        ));
    }
    text.join("\n")
}

/// One row as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryRow {
    community_id: String,
    year: i32,
    month: u32,
    fraud_warnings: u64,
    fraud_reported: u64,
    fraud_cases_filed: u64,
    #[serde(default)]
    fraud_dissuaded: u64,
}

/// A validated history: counts by (community id, year, month).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportedHistory {
    months: BTreeMap<(String, i32, u32), ChainCounts>,
}

impl ImportedHistory {
    /// Parses and validates `text`: every community must be in the registry, months 1–12,
    /// no month after `now_millis`'s local month, no duplicate (community, year, month),
    /// counts non-negative integers.
    pub fn from_csv(
        text: &str,
        registry: &GridRegistry,
        now_millis: i64,
        timezone_offset_hours: i32,
    ) -> Result<ImportedHistory, HistoryError> {
        let (current_year, current_month) =
            calendar::local_year_month(now_millis, timezone_offset_hours);
        let mut problems = Vec::new();
        let mut history = ImportedHistory::default();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().cloned();
        match &headers {
            Ok(headers) => {
                for required in [
                    "community_id",
                    "year",
                    "month",
                    "fraud_warnings",
                    "fraud_reported",
                    "fraud_cases_filed",
                ] {
                    if !headers.iter().any(|header| header == required) {
                        problems.push(format!("line 1: the header has no column {required:?}"));
                    }
                }
            }
            Err(error) => problems.push(format!("line 1: {error}")),
        }
        if !problems.is_empty() {
            return Err(HistoryError::Invalid { problems });
        }
        let headers = headers.unwrap_or_default();
        for (row_index, result) in reader.deserialize::<HistoryRow>().enumerate() {
            let line = row_index + 2;
            if row_index >= MAX_ROWS {
                problems.push(format!("line {line}: more than {MAX_ROWS} rows"));
                break;
            }
            let row = match result {
                Ok(row) => row,
                Err(error) => {
                    problems.push(format!(
                        "line {line}: {}",
                        describe_csv_error(&error, &headers)
                    ));
                    continue;
                }
            };
            let mut row_problems = Vec::new();
            if registry.community_by_id(&row.community_id).is_none() {
                row_problems.push(format!(
                    "community {:?} is not in the registry",
                    row.community_id
                ));
            }
            if !(1..=12).contains(&row.month) {
                row_problems.push(format!("month {} is not in 1..=12", row.month));
            } else if (row.year, row.month) > (current_year, current_month) {
                row_problems.push(format!(
                    "{}-{:02} is in the future (now {current_year}-{current_month:02})",
                    row.year, row.month
                ));
            }
            if !(2000..=9999).contains(&row.year) {
                row_problems.push(format!("year {} is not in 2000..=9999", row.year));
            }
            let key = (row.community_id.clone(), row.year, row.month);
            if row_problems.is_empty() && history.months.contains_key(&key) {
                row_problems.push(format!(
                    "a second row for community {} {}-{:02}",
                    row.community_id, row.year, row.month
                ));
            }
            if !row_problems.is_empty() {
                problems.push(format!("line {line}: {}", row_problems.join("; ")));
                continue;
            }
            history.months.insert(
                key,
                ChainCounts {
                    warnings: row.fraud_warnings,
                    dissuaded: row.fraud_dissuaded,
                    reported: row.fraud_reported,
                    cases_filed: row.fraud_cases_filed,
                    ..ChainCounts::default()
                },
            );
        }
        if !problems.is_empty() {
            return Err(HistoryError::Invalid { problems });
        }
        Ok(history)
    }

    /// Rows imported.
    pub fn len(&self) -> usize {
        self.months.len()
    }

    /// Whether nothing is imported.
    pub fn is_empty(&self) -> bool {
        self.months.is_empty()
    }

    /// Every row's counts added up (for the import summary).
    pub fn total(&self) -> ChainCounts {
        let mut total = ChainCounts::default();
        for counts in self.months.values() {
            total.add(counts);
        }
        total
    }

    /// The canonical file: the header and the rows sorted by community, year and month (so
    /// the same history always writes the same bytes).
    pub fn to_csv(&self) -> String {
        let mut text = String::from(
            "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed,fraud_dissuaded\n",
        );
        for ((community_id, year, month), counts) in &self.months {
            text.push_str(&format!(
                "{community_id},{year},{month},{},{},{},{}\n",
                counts.warnings, counts.reported, counts.cases_filed, counts.dissuaded
            ));
        }
        text
    }

    /// The history as the record the read model applies (and the status topic carries).
    pub fn to_partial(&self, wall_millis: i64) -> FraudPartial {
        FraudPartial {
            partition: IMPORTED_PARTITION.to_string(),
            counts: self
                .months
                .iter()
                .map(|((community_id, year, month), counts)| {
                    counts.to_record(community_id, *year, *month)
                })
                .collect(),
            updated_at: Some(crate::time::millis_to_timestamp(wall_millis)),
            source: FraudCountSource::Imported as i32,
            coverage: Vec::new(),
            community_first_seen_ms: Default::default(),
        }
    }
}

/// A CSV error without the csv crate's position prefix (the caller names the line).
fn describe_csv_error(error: &csv::Error, headers: &csv::StringRecord) -> String {
    match error.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(field) => format!(
                "column {:?}: {}",
                headers.get(field as usize).unwrap_or("?"),
                err.kind()
            ),
            None => err.kind().to_string(),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        _ => error.to_string(),
    }
}
