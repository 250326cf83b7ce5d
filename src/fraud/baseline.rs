//! The baseline of the fraud target: monthly counts per community for the baseline year(s),
//! from `seeds/fraud_baseline.csv` (`community_id,year,month,fraud_warnings,fraud_reported,
//! fraud_cases_filed`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::proto::EventType;

/// The committed baseline file, embedded in the binary.
const EMBEDDED_BASELINE_CSV: &str = include_str!("../../seeds/fraud_baseline.csv");

/// Name of the baseline file inside a seeds directory.
pub const BASELINE_FILE_NAME: &str = "fraud_baseline.csv";

/// Errors loading the baseline.
#[derive(Debug, thiserror::Error)]
pub enum FraudBaselineError {
    /// The file could not be read.
    #[error("cannot read fraud baseline {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A row could not be parsed.
    #[error("fraud baseline line {line}: {message}")]
    Invalid {
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Counts of one community in one baseline month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaselineMonth {
    /// Anti-fraud warnings pushed to the community (预警).
    pub warnings: u64,
    /// Fraud reports received (接报).
    pub reported: u64,
    /// Fraud cases filed (立案).
    pub cases_filed: u64,
}

impl BaselineMonth {
    /// The count of the configured case types: each type selects its column, several types
    /// sum their columns (`FRAUD_CASE_FILED` → `fraud_cases_filed`, `FRAUD_REPORTED` →
    /// `fraud_reported`, `FRAUD_WARNING` → `fraud_warnings`; other types have no column).
    pub fn cases(&self, case_event_types: &[EventType]) -> u64 {
        case_event_types
            .iter()
            .map(|event_type| match event_type {
                EventType::FraudCaseFiled => self.cases_filed,
                EventType::FraudReported => self.reported,
                EventType::FraudWarning => self.warnings,
                _ => 0,
            })
            .sum()
    }
}

/// Monthly baseline counts by year and community id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FraudBaseline {
    /// year → community id → months (index 0 = January). A month without a row counts 0.
    years: BTreeMap<i32, BTreeMap<String, [BaselineMonth; 12]>>,
}

/// One CSV row.
#[derive(Debug, Deserialize)]
struct BaselineRow {
    community_id: String,
    year: i32,
    month: u32,
    fraud_warnings: u64,
    fraud_reported: u64,
    fraud_cases_filed: u64,
}

impl FraudBaseline {
    /// Parses the CSV text; a duplicate (community, year, month) or a month outside 1–12 is an
    /// error.
    pub fn from_csv(text: &str) -> Result<FraudBaseline, FraudBaselineError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut baseline = FraudBaseline::default();
        let mut seen: std::collections::BTreeSet<(i32, String, u32)> = Default::default();
        for (row_index, result) in reader.deserialize::<BaselineRow>().enumerate() {
            let line = row_index as u64 + 2;
            let row = result.map_err(|error| FraudBaselineError::Invalid {
                line,
                message: error.to_string(),
            })?;
            if !(1..=12).contains(&row.month) {
                return Err(FraudBaselineError::Invalid {
                    line,
                    message: format!("month {} is not in 1..=12", row.month),
                });
            }
            if !seen.insert((row.year, row.community_id.clone(), row.month)) {
                return Err(FraudBaselineError::Invalid {
                    line,
                    message: format!(
                        "duplicate row for community {} {}-{:02}",
                        row.community_id, row.year, row.month
                    ),
                });
            }
            let months = baseline
                .years
                .entry(row.year)
                .or_default()
                .entry(row.community_id)
                .or_insert([BaselineMonth::default(); 12]);
            if let Some(month) = months.get_mut(row.month as usize - 1) {
                *month = BaselineMonth {
                    warnings: row.fraud_warnings,
                    reported: row.fraud_reported,
                    cases_filed: row.fraud_cases_filed,
                };
            }
        }
        Ok(baseline)
    }

    /// The committed `seeds/fraud_baseline.csv`.
    pub fn embedded() -> Result<FraudBaseline, FraudBaselineError> {
        FraudBaseline::from_csv(EMBEDDED_BASELINE_CSV)
    }

    /// `fraud_baseline.csv` of a seeds directory.
    pub fn from_seed_dir(directory: &Path) -> Result<FraudBaseline, FraudBaselineError> {
        let path = directory.join(BASELINE_FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| FraudBaselineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        FraudBaseline::from_csv(&text)
    }

    /// Whether the file has any row for `year`.
    pub fn has_year(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// The twelve months of one community in one year (`None` when it has no row).
    pub fn months(&self, year: i32, community_id: &str) -> Option<&[BaselineMonth; 12]> {
        self.years.get(&year)?.get(community_id)
    }

    /// Community ids with rows in `year`.
    pub fn community_ids(&self, year: i32) -> impl Iterator<Item = &str> {
        self.years
            .get(&year)
            .into_iter()
            .flat_map(|communities| communities.keys().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_baseline_has_162_communities_and_the_documented_totals() {
        let baseline = FraudBaseline::embedded().unwrap();
        assert!(baseline.has_year(2023));
        assert_eq!(baseline.community_ids(2023).count(), 162);
        let mut filed = 0;
        let mut reported = 0;
        let mut warnings = 0;
        for community_id in baseline.community_ids(2023) {
            for month in baseline.months(2023, community_id).unwrap() {
                filed += month.cases(&[EventType::FraudCaseFiled]);
                reported += month.cases(&[EventType::FraudReported]);
                warnings += month.warnings;
            }
        }
        // seeds/README.md: 1,085 filed cases, 1,769 reports and 9,093 warnings city-wide.
        assert_eq!((filed, reported, warnings), (1085, 1769, 9093));
    }

    #[test]
    fn several_case_types_sum_their_columns() {
        let month = BaselineMonth {
            warnings: 9,
            reported: 3,
            cases_filed: 2,
        };
        assert_eq!(
            month.cases(&[EventType::FraudCaseFiled, EventType::FraudReported]),
            5
        );
    }

    #[test]
    fn duplicate_rows_and_bad_months_are_rejected_with_their_line() {
        let header = "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n";
        let duplicate = format!("{header}410602001001,2023,1,5,0,0\n410602001001,2023,1,5,0,0\n");
        let error = FraudBaseline::from_csv(&duplicate).unwrap_err();
        assert!(error.to_string().contains("line 3"), "{error}");
        let bad_month = format!("{header}410602001001,2023,13,5,0,0\n");
        assert!(FraudBaseline::from_csv(&bad_month).is_err());
        let negative = format!("{header}410602001001,2023,1,-5,0,0\n");
        assert!(FraudBaseline::from_csv(&negative).is_err());
    }
}
