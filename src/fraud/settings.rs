//! The validated `[fraud]` settings: what counts as a case, the baseline year, the target and
//! the confidence of its interval. Validated here, at the boundary, so that the tracker and the
//! report never see an impossible setting.

use serde::{Deserialize, Serialize};

use super::baseline::FraudBaselineError;
use super::calendar::HOUR_MILLIS;
use crate::config::{FraudConfig, PopulationSource};
use crate::proto::EventType;

/// Errors of the fraud module at its boundary (configuration, baseline).
#[derive(Debug, thiserror::Error)]
pub enum FraudError {
    /// The `[fraud]` configuration is invalid.
    #[error("invalid [fraud] configuration: {}", problems.join("; "))]
    InvalidSettings {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The baseline file could not be loaded.
    #[error(transparent)]
    Baseline(#[from] FraudBaselineError),
    /// The baseline file has no row for the configured baseline year.
    #[error("the fraud baseline has no rows for baseline_year {0}")]
    MissingBaselineYear(i32),
}

/// The validated `[fraud]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudSettings {
    /// Which accepted event types count as a case (their baseline columns are summed).
    pub case_event_types: Vec<EventType>,
    /// The year the target compares against.
    pub baseline_year: i32,
    /// The drop the city must reach (0.60).
    pub target_drop: f64,
    /// Two-sided confidence level of the drop's interval (0.95).
    pub confidence: f64,
    /// Where populations come from (the registry's `communities.csv`).
    pub population_source: PopulationSource,
    /// Local time's offset from UTC in hours (+8): year and month boundaries.
    pub timezone_offset_hours: i32,
    /// How far back a dissuasion may be paired with a warning (event time).
    pub warning_pairing_horizon_millis: i64,
    /// Longest silence of a partition's stream still counted as observed (coverage).
    pub coverage_max_gap_millis: i64,
    /// Observed days a scope needs before its drop is judged (`insufficient_data` below).
    pub minimum_coverage_days: f64,
    /// Share of a day's cases in each local hour (sums to 1): the baseline's hour-of-day shape
    /// over covered time, from the seeded profile of the case types.
    pub case_hour_shares: [f64; 24],
}

impl Default for FraudSettings {
    fn default() -> Self {
        FraudSettings {
            case_event_types: vec![EventType::FraudCaseFiled],
            baseline_year: 2023,
            target_drop: 0.60,
            confidence: 0.95,
            population_source: PopulationSource::Seeds,
            timezone_offset_hours: 8,
            warning_pairing_horizon_millis: 30 * 24 * HOUR_MILLIS,
            coverage_max_gap_millis: 15 * 60 * 1000,
            minimum_coverage_days: 14.0,
            case_hour_shares: seeded_case_hour_shares(&[EventType::FraudCaseFiled]),
        }
    }
}

impl FraudSettings {
    /// The settings a `[fraud]` section describes, or every problem with it.
    pub fn from_config(config: &FraudConfig) -> Result<FraudSettings, FraudError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(FraudError::InvalidSettings { problems });
        }
        let case_event_types: Vec<EventType> = config
            .case_event_types
            .iter()
            .filter_map(|name| EventType::from_str_name(name))
            .collect();
        Ok(FraudSettings {
            case_hour_shares: seeded_case_hour_shares(&case_event_types),
            case_event_types,
            baseline_year: config.baseline_year,
            target_drop: config.target_drop,
            confidence: config.confidence,
            population_source: config.population_source,
            timezone_offset_hours: config.timezone_offset_hours,
            warning_pairing_horizon_millis: crate::time::duration_millis(
                config.warning_pairing_horizon,
            ),
            coverage_max_gap_millis: crate::time::duration_millis(config.coverage_max_gap),
            minimum_coverage_days: config.minimum_coverage.as_secs_f64() / 86_400.0,
        })
    }

    /// Whether `event_type` counts as a case.
    pub fn is_case(&self, event_type: EventType) -> bool {
        self.case_event_types.contains(&event_type)
    }
}

/// The hour-of-day shape of the case types' seeded rates (`seeds/baseline_rates.csv`),
/// weighted by each type's rate; uniform when no case type has a seed.
fn seeded_case_hour_shares(case_event_types: &[EventType]) -> [f64; 24] {
    let seeds = crate::rules::baseline::Baseline::embedded();
    let mut shares = [0.0; 24];
    for event_type in case_event_types {
        let Some(seed) = seeds.seed(*event_type) else {
            continue;
        };
        // The case types share a unit (per 10,000 residents per year), so their rates weigh
        // their profiles directly.
        let seed_weight = match seed.rate {
            crate::rules::baseline::SeedRate::PerCellPerDay(rate)
            | crate::rules::baseline::SeedRate::PerTenThousandResidentsPerYear(rate) => rate,
        };
        for (hour, share) in shares.iter_mut().enumerate() {
            *share += seed_weight * seed.hour_share(hour);
        }
    }
    let total: f64 = shares.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return [1.0 / 24.0; 24];
    }
    shares.map(|share| share / total)
}
