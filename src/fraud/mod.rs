//! The city's fraud target: cut the incidence of telecom and network fraud (电信网络诈骗发案率)
//! by [`FraudSettings::target_drop`] (60%) against a baseline year.
//!
//! [`FraudTracker`] counts the anti-fraud chain (warning → dissuasion → report → case filed)
//! per community and local calendar year from accepted events, and pairs each dissuasion with
//! a warning to time the warning-to-dissuasion lever. [`FraudTracker::report`] turns the counts,
//! the registry's populations and the [`FraudBaseline`] into a [`FraudReport`] for the city,
//! each district/county and each community. Everything is synchronous; time is an argument.
//!
//! # Definitions
//!
//! - **Cases** are the accepted events of [`FraudSettings::case_event_types`]
//!   (`FRAUD_CASE_FILED` by default), counted in the local calendar year of their
//!   `occurred_at` (UTC offset [`FraudSettings::timezone_offset_hours`], +8).
//! - **Incidence** = cases ÷ population × 10,000, year to date. For a district and the city,
//!   cases and populations are summed over their communities *before* dividing (never an
//!   average of community rates). Populations come from the registry (`communities.csv`,
//!   `population_source = "seeds"`), the same for the current and the baseline year.
//! - **Baseline, same period**: the baseline year's whole months before the current month plus
//!   the current month pro-rated by its elapsed fraction ([`calendar`]), from the configured
//!   case columns of `fraud_baseline.csv`.
//! - **Drop** = 1 − rate_now ÷ rate_baseline, where a rate is cases ÷ exposure and exposure =
//!   population × span (days elapsed this year; the same-period span of the baseline year).
//!   With equal spans this is 1 − incidence ÷ baseline incidence. Its interval is the exact
//!   conditional (Clopper–Pearson) interval of the rate ratio ([`stats`]) at
//!   [`FraudSettings::confidence`]. With no baseline cases in the same period the ratio is
//!   undefined: `drop` is `null` and `drop_note` says why.
//! - **Projection**: projected cases = cases_ytd × days_in_year ÷ elapsed_days (the current
//!   pace held to 31 December); projected drop = 1 − projected incidence ÷ the full baseline
//!   year's incidence; `on_track` when the projected drop ≥ the target.
//! - **Levers**: warnings (`FRAUD_WARNING`) and dissuasions (`FRAUD_DISSUADED`) year to date;
//!   dissuasion rate = dissuaded ÷ warnings (may exceed 1 when a community dissuades people
//!   warned before the year began or not through a warning); warning-to-dissuasion time from
//!   pairing (see [`FraudTracker::on_event`]).
//! - **Order**: districts and communities are sorted by distance from the target, furthest
//!   behind first (`target_drop − drop` descending); entries whose drop is undefined come last;
//!   ties by code.

pub mod baseline;
pub mod calendar;
pub mod stats;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::{FraudConfig, PopulationSource};
use crate::event::AcceptedEvent;
use crate::grid::{CommunityIndex, GridRegistry};
use crate::proto::EventType;

pub use baseline::{BaselineMonth, FraudBaseline, FraudBaselineError};
pub use calendar::YearToDate;
pub use stats::{exact_rate_ratio, DropInterval, RateRatioError, RateRatioInterval};

/// Calendar years of counts kept: the newest year seen and the two before it (so a late event
/// of last year, or a report just after New Year, still finds its year).
const KEPT_YEARS: i32 = 3;
/// Most unpaired warnings remembered per community (the oldest are forgotten first).
const MAX_PENDING_WARNINGS_PER_COMMUNITY: usize = 1024;
/// Residents per incidence unit (万人发案率).
const PER_RESIDENTS: f64 = 10_000.0;
/// Milliseconds per hour.
const HOUR_MILLIS: i64 = 3_600_000;

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
        Ok(FraudSettings {
            case_event_types: config
                .case_event_types
                .iter()
                .filter_map(|name| EventType::from_str_name(name))
                .collect(),
            baseline_year: config.baseline_year,
            target_drop: config.target_drop,
            confidence: config.confidence,
            population_source: config.population_source,
            timezone_offset_hours: config.timezone_offset_hours,
            warning_pairing_horizon_millis: crate::time::duration_millis(
                config.warning_pairing_horizon,
            ),
        })
    }

    /// Whether `event_type` counts as a case.
    pub fn is_case(&self, event_type: EventType) -> bool {
        self.case_event_types.contains(&event_type)
    }
}

/// Counts of one community in one local calendar year.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CommunityYearCounts {
    /// `FRAUD_WARNING` events: warnings received (a lever).
    pub warnings: u64,
    /// `FRAUD_DISSUADED` events: dissuasions by grid workers (a lever).
    pub dissuaded: u64,
    /// `FRAUD_REPORTED` events (a possible case definition).
    pub reported: u64,
    /// `FRAUD_CASE_FILED` events (the default case definition).
    pub cases_filed: u64,
    /// Dissuasions of this year paired with a warning (how many times were observed).
    pub paired_dissuasions: u64,
    /// Sum of the paired warning-to-dissuasion times, in seconds (for the mean).
    pub warning_to_dissuasion_seconds_sum: f64,
}

impl CommunityYearCounts {
    /// The count of the configured case types.
    pub fn cases(&self, case_event_types: &[EventType]) -> u64 {
        case_event_types
            .iter()
            .map(|event_type| match event_type {
                EventType::FraudCaseFiled => self.cases_filed,
                EventType::FraudReported => self.reported,
                EventType::FraudWarning => self.warnings,
                EventType::FraudDissuaded => self.dissuaded,
                _ => 0,
            })
            .sum()
    }
}

/// A warning waiting for its dissuasion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingWarning {
    /// The warning's event time.
    occurred_at_millis: i64,
    /// Its pseudonymized `phone` attribute, when it carried one.
    phone: Option<String>,
}

/// A dissuasion paired with its warning (what the histogram observes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDissuasion {
    /// The community of both events.
    pub community: CommunityIndex,
    /// Dissuasion `occurred_at` minus warning `occurred_at`, in seconds (never negative).
    pub seconds: f64,
    /// Whether the pair was matched by phone pseudonym (else first-in-first-out).
    pub matched_by_phone: bool,
}

/// Counts of the anti-fraud chain per community and local year, and the unpaired warnings.
///
/// Years: each event counts in the local calendar year of its `occurred_at`, whatever the
/// wall clock; the newest year seen and the two before it are kept (older ones are dropped),
/// so a report is always about the year of its `now` and a New Year rollover needs no reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudTracker {
    /// Local time's offset from UTC in hours (year boundaries).
    timezone_offset_hours: i32,
    /// How far back a dissuasion may reach for its warning.
    warning_pairing_horizon_millis: i64,
    /// year → counts indexed by community index.
    years: BTreeMap<i32, Vec<CommunityYearCounts>>,
    /// Unpaired warnings per community index, oldest first.
    pending_warnings: Vec<VecDeque<PendingWarning>>,
}

impl FraudTracker {
    /// An empty tracker.
    pub fn new(settings: &FraudSettings) -> FraudTracker {
        FraudTracker {
            timezone_offset_hours: settings.timezone_offset_hours,
            warning_pairing_horizon_millis: settings.warning_pairing_horizon_millis,
            years: BTreeMap::new(),
            pending_warnings: Vec::new(),
        }
    }

    /// Takes over the counts and pending warnings of a restored snapshot, keeping this
    /// tracker's settings (the running configuration wins).
    pub fn restore(&mut self, restored: FraudTracker) {
        self.years = restored.years;
        self.pending_warnings = restored.pending_warnings;
    }

    /// Adds the year counts of `other` (another partition's tracker) to this one, for a report
    /// over several partitions. Pending warnings are not merged: pairing stays per partition.
    pub fn add_counts_of(&mut self, other: &FraudTracker) {
        for (year, other_counts) in &other.years {
            let counts = self.years.entry(*year).or_default();
            if counts.len() < other_counts.len() {
                counts.resize(other_counts.len(), CommunityYearCounts::default());
            }
            for (total, added) in counts.iter_mut().zip(other_counts) {
                total.warnings += added.warnings;
                total.dissuaded += added.dissuaded;
                total.reported += added.reported;
                total.cases_filed += added.cases_filed;
                total.paired_dissuasions += added.paired_dissuasions;
                total.warning_to_dissuasion_seconds_sum += added.warning_to_dissuasion_seconds_sum;
            }
        }
    }

    /// Counts one accepted event (only the four fraud-chain types matter).
    ///
    /// Pairing: a `FRAUD_DISSUADED` takes the earliest unpaired `FRAUD_WARNING` of the same
    /// community whose `phone` attribute (pseudonymized) equals its own, when both carry one;
    /// otherwise the earliest unpaired warning of the community (first in, first out). Only
    /// warnings that occurred no later than the dissuasion and no earlier than
    /// `warning_pairing_horizon` before it qualify; a dissuasion with none stays unpaired, and a
    /// warning never dissuaded stays pending until it leaves the horizon. Pairing follows
    /// arrival order: a dissuasion that arrives before its warning is not paired later.
    pub fn on_event(
        &mut self,
        accepted: &AcceptedEvent,
        registry: &GridRegistry,
    ) -> Option<PairedDissuasion> {
        let is_fraud_chain = matches!(
            accepted.event_type,
            EventType::FraudWarning
                | EventType::FraudDissuaded
                | EventType::FraudReported
                | EventType::FraudCaseFiled
        );
        if !is_fraud_chain {
            return None;
        }
        let community = registry.cells().get(accepted.cell.0 as usize)?.community;
        let community_slot = community.0 as usize;
        let community_count = registry.communities().len().max(community_slot + 1);
        let year = calendar::local_year(accepted.occurred_at_millis, self.timezone_offset_hours);
        let newest_year = self.years.keys().next_back().copied().unwrap_or(year);
        if year <= newest_year - KEPT_YEARS {
            return None;
        }
        let year_counts = self
            .years
            .entry(year)
            .or_insert_with(|| vec![CommunityYearCounts::default(); community_count]);
        if year_counts.len() < community_count {
            year_counts.resize(community_count, CommunityYearCounts::default());
        }
        let counts = year_counts.get_mut(community_slot)?;
        let phone = accepted
            .event
            .attributes
            .get("phone")
            .filter(|phone| !phone.is_empty())
            .cloned();
        let mut paired = None;
        match accepted.event_type {
            EventType::FraudWarning => counts.warnings += 1,
            EventType::FraudReported => counts.reported += 1,
            EventType::FraudCaseFiled => counts.cases_filed += 1,
            EventType::FraudDissuaded => counts.dissuaded += 1,
            _ => {}
        }
        if self.pending_warnings.len() < community_count {
            self.pending_warnings
                .resize_with(community_count, VecDeque::new);
        }
        let horizon_start = accepted
            .occurred_at_millis
            .saturating_sub(self.warning_pairing_horizon_millis);
        if let Some(pending) = self.pending_warnings.get_mut(community_slot) {
            while pending
                .front()
                .is_some_and(|warning| warning.occurred_at_millis < horizon_start)
            {
                pending.pop_front();
            }
            match accepted.event_type {
                EventType::FraudWarning => {
                    let position = pending.partition_point(|warning| {
                        warning.occurred_at_millis <= accepted.occurred_at_millis
                    });
                    pending.insert(
                        position,
                        PendingWarning {
                            occurred_at_millis: accepted.occurred_at_millis,
                            phone,
                        },
                    );
                    while pending.len() > MAX_PENDING_WARNINGS_PER_COMMUNITY {
                        pending.pop_front();
                    }
                }
                EventType::FraudDissuaded => {
                    paired = take_matching_warning(pending, accepted.occurred_at_millis, phone)
                        .map(|(warning, matched_by_phone)| PairedDissuasion {
                            community,
                            seconds: (accepted.occurred_at_millis - warning.occurred_at_millis)
                                .max(0) as f64
                                / 1000.0,
                            matched_by_phone,
                        });
                }
                _ => {}
            }
        }
        if let Some(pair) = &paired {
            counts.paired_dissuasions += 1;
            counts.warning_to_dissuasion_seconds_sum += pair.seconds;
        }
        let oldest_kept_year = self
            .years
            .keys()
            .next_back()
            .copied()
            .unwrap_or(year)
            .saturating_sub(KEPT_YEARS - 1);
        self.years
            .retain(|kept_year, _| *kept_year >= oldest_kept_year);
        paired
    }

    /// The counts of one community in one local year (zeros when none).
    pub fn counts(&self, year: i32, community: CommunityIndex) -> CommunityYearCounts {
        self.years
            .get(&year)
            .and_then(|counts| counts.get(community.0 as usize))
            .copied()
            .unwrap_or_default()
    }

    /// Years with counts, oldest first.
    pub fn years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    /// Unpaired warnings currently remembered (all communities).
    pub fn pending_warning_count(&self) -> usize {
        self.pending_warnings.iter().map(VecDeque::len).sum()
    }

    /// The report at `now_millis` (wall time): year to date of `now`'s local year, for the
    /// city, every district of the registry and every community.
    pub fn report(
        &self,
        now_millis: i64,
        registry: &GridRegistry,
        baseline: &FraudBaseline,
        settings: &FraudSettings,
    ) -> FraudReport {
        let year_to_date = calendar::year_to_date(now_millis, settings.timezone_offset_hours);
        let baseline_span_days = year_to_date.baseline_span_days(settings.baseline_year);
        let month_weights = year_to_date.baseline_month_weights();
        let context = ReportContext {
            settings,
            year_to_date,
            baseline_span_days,
        };
        let mut community_sums: Vec<(CommunityIndex, ScopeSums)> = Vec::new();
        for (slot, community) in registry.communities().iter().enumerate() {
            let index = CommunityIndex(slot as u32);
            let counts = self.counts(year_to_date.year, index);
            let mut sums = ScopeSums {
                cases_ytd: counts.cases(&settings.case_event_types),
                population: u64::from(community.population),
                warnings: counts.warnings,
                dissuaded: counts.dissuaded,
                paired_dissuasions: counts.paired_dissuasions,
                warning_to_dissuasion_seconds_sum: counts.warning_to_dissuasion_seconds_sum,
                has_baseline: false,
                ..ScopeSums::default()
            };
            if let Some(months) = baseline.months(settings.baseline_year, &community.id) {
                sums.has_baseline = true;
                for (month, weight) in months.iter().zip(month_weights) {
                    let cases = month.cases(&settings.case_event_types);
                    sums.baseline_cases_same_period += cases as f64 * weight;
                    sums.baseline_full_year_cases += cases;
                }
            }
            community_sums.push((index, sums));
        }
        let mut city_sums = ScopeSums::default();
        for (_, sums) in &community_sums {
            city_sums.add(sums);
        }
        let mut districts: Vec<FraudEntry> = registry
            .districts()
            .iter()
            .map(|district| {
                let mut district_sums = ScopeSums::default();
                for (index, sums) in &community_sums {
                    if registry.community(*index).district_code == district.code {
                        district_sums.add(sums);
                    }
                }
                let identity = EntryIdentity {
                    scope: FraudScope::District,
                    district_code: Some(district.code.clone()),
                    district_name: Some(district.name_zh.clone()),
                    community_id: None,
                    community_name: None,
                };
                context.entry(identity, &district_sums)
            })
            .collect();
        let mut communities: Vec<FraudEntry> = community_sums
            .iter()
            .map(|(index, sums)| {
                let community = registry.community(*index);
                let identity = EntryIdentity {
                    scope: FraudScope::Community,
                    district_code: Some(community.district_code.clone()),
                    district_name: registry
                        .district(&community.district_code)
                        .map(|district| district.name_zh.clone()),
                    community_id: Some(community.id.clone()),
                    community_name: Some(community.name.clone()),
                };
                context.entry(identity, sums)
            })
            .collect();
        sort_by_distance_from_target(&mut districts);
        sort_by_distance_from_target(&mut communities);
        let city_identity = EntryIdentity {
            scope: FraudScope::City,
            district_code: None,
            district_name: None,
            community_id: None,
            community_name: None,
        };
        FraudReport {
            as_of: crate::time::millis_to_rfc3339(now_millis),
            year: year_to_date.year,
            baseline_year: settings.baseline_year,
            target_drop: settings.target_drop,
            confidence: settings.confidence,
            case_event_types: settings
                .case_event_types
                .iter()
                .map(|event_type| event_type.as_str_name().to_string())
                .collect(),
            population_source: settings.population_source,
            timezone_offset_hours: settings.timezone_offset_hours,
            elapsed_days: year_to_date.elapsed_days,
            days_in_year: year_to_date.days_in_year,
            baseline_span_days,
            city: context.entry(city_identity, &city_sums),
            districts,
            communities,
        }
    }
}

/// Removes and returns the warning a dissuasion at `dissuaded_at_millis` pairs with: the
/// earliest eligible one with the same phone, else the earliest eligible one (the queue is
/// sorted by occurrence, so "eligible" = occurred no later than the dissuasion).
fn take_matching_warning(
    pending: &mut VecDeque<PendingWarning>,
    dissuaded_at_millis: i64,
    phone: Option<String>,
) -> Option<(PendingWarning, bool)> {
    let eligible_count =
        pending.partition_point(|warning| warning.occurred_at_millis <= dissuaded_at_millis);
    if eligible_count == 0 {
        return None;
    }
    if let Some(phone) = phone {
        let phone_match = pending
            .iter()
            .take(eligible_count)
            .position(|warning| warning.phone.as_deref() == Some(phone.as_str()));
        if let Some(position) = phone_match {
            return pending.remove(position).map(|warning| (warning, true));
        }
    }
    pending.pop_front().map(|warning| (warning, false))
}

/// The scope of a report entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudScope {
    /// The whole city (all communities).
    City,
    /// One district or county.
    District,
    /// One community.
    Community,
}

impl FraudScope {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FraudScope::City => "city",
            FraudScope::District => "district",
            FraudScope::Community => "community",
        }
    }
}

/// The fraud target for one scope (city, district or community), year to date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudEntry {
    /// City, district or community.
    pub scope: FraudScope,
    /// 6-digit district code (absent for the city).
    pub district_code: Option<String>,
    /// District name (absent for the city).
    pub district_name: Option<String>,
    /// 12-digit community id (communities only).
    pub community_id: Option<String>,
    /// Community name (communities only).
    pub community_name: Option<String>,
    /// Cases (the configured case types) this local year so far.
    pub cases_ytd: u64,
    /// Residents (sum over the scope's communities).
    pub population: u64,
    /// Cases per 10,000 residents, year to date (`null` for a zero population).
    pub incidence_per_10k: Option<f64>,
    /// Baseline cases of the same period (pro-rated current month: may be fractional).
    pub baseline_cases_same_period: f64,
    /// Baseline cases per 10,000 residents over the same period.
    pub baseline_incidence_per_10k: Option<f64>,
    /// 1 − rate ratio (`null` when undefined: see `drop_note`).
    pub drop: Option<f64>,
    /// Lower bound of the drop's exact interval (`null` = unbounded below).
    pub drop_ci_low: Option<f64>,
    /// Upper bound of the drop's exact interval.
    pub drop_ci_high: Option<f64>,
    /// Why the drop or a bound is `null`, when one is.
    pub drop_note: Option<String>,
    /// `target_drop − drop`: how far behind the target (negative = ahead); the sort key.
    pub distance_from_target: Option<f64>,
    /// Cases by 31 December at the current pace.
    pub projected_cases: Option<f64>,
    /// Projected cases per 10,000 residents for the whole year.
    pub projected_incidence_per_10k: Option<f64>,
    /// Cases of the whole baseline year.
    pub baseline_full_year_cases: u64,
    /// Cases per 10,000 residents of the whole baseline year.
    pub baseline_full_year_incidence_per_10k: Option<f64>,
    /// 1 − projected incidence ÷ full baseline-year incidence.
    pub projected_drop: Option<f64>,
    /// Whether the projected drop reaches the target (`null` when it is undefined).
    pub on_track: Option<bool>,
    /// Warnings (`FRAUD_WARNING`) received this year.
    pub warnings: u64,
    /// Dissuasions (`FRAUD_DISSUADED`) this year.
    pub dissuaded: u64,
    /// dissuaded ÷ warnings (`null` without warnings).
    pub dissuasion_rate: Option<f64>,
    /// Dissuasions paired with a warning this year.
    pub paired_dissuasions: u64,
    /// Mean warning-to-dissuasion time of the paired dissuasions, seconds.
    pub mean_warning_to_dissuasion_seconds: Option<f64>,
}

/// What `GET /api/v1/fraud` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudReport {
    /// When the report was computed (wall time, RFC 3339).
    pub as_of: String,
    /// The local calendar year reported.
    pub year: i32,
    /// The year compared against.
    pub baseline_year: i32,
    /// The drop the city must reach.
    pub target_drop: f64,
    /// Confidence level of the drop intervals.
    pub confidence: f64,
    /// Event types counted as cases.
    pub case_event_types: Vec<String>,
    /// Where populations come from.
    pub population_source: PopulationSource,
    /// Local time's offset from UTC (hours).
    pub timezone_offset_hours: i32,
    /// Days elapsed in the local year (exposure time of the current period).
    pub elapsed_days: f64,
    /// Days in the current year (projection).
    pub days_in_year: f64,
    /// Length in days of the same period of the baseline year (its exposure time).
    pub baseline_span_days: f64,
    /// The whole city.
    pub city: FraudEntry,
    /// Each district/county, furthest behind the target first.
    pub districts: Vec<FraudEntry>,
    /// Each community, furthest behind the target first.
    pub communities: Vec<FraudEntry>,
}

/// Sums over a scope's communities (summed before any division).
#[derive(Debug, Clone, Copy, Default)]
struct ScopeSums {
    /// Current cases.
    cases_ytd: u64,
    /// Residents.
    population: u64,
    /// Baseline cases of the same period (pro-rated).
    baseline_cases_same_period: f64,
    /// Baseline cases of the whole year.
    baseline_full_year_cases: u64,
    /// Warnings this year.
    warnings: u64,
    /// Dissuasions this year.
    dissuaded: u64,
    /// Paired dissuasions this year.
    paired_dissuasions: u64,
    /// Sum of paired times, seconds.
    warning_to_dissuasion_seconds_sum: f64,
    /// Whether any community of the scope has baseline rows.
    has_baseline: bool,
}

impl ScopeSums {
    fn add(&mut self, other: &ScopeSums) {
        self.cases_ytd += other.cases_ytd;
        self.population += other.population;
        self.baseline_cases_same_period += other.baseline_cases_same_period;
        self.baseline_full_year_cases += other.baseline_full_year_cases;
        self.warnings += other.warnings;
        self.dissuaded += other.dissuaded;
        self.paired_dissuasions += other.paired_dissuasions;
        self.warning_to_dissuasion_seconds_sum += other.warning_to_dissuasion_seconds_sum;
        self.has_baseline |= other.has_baseline;
    }
}

/// Names of an entry.
struct EntryIdentity {
    scope: FraudScope,
    district_code: Option<String>,
    district_name: Option<String>,
    community_id: Option<String>,
    community_name: Option<String>,
}

/// What every entry of one report shares.
struct ReportContext<'a> {
    settings: &'a FraudSettings,
    year_to_date: YearToDate,
    baseline_span_days: f64,
}

/// `numerator / denominator`, or `None` when the denominator is zero (or the result is not
/// finite).
fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator == 0.0 {
        return None;
    }
    Some(numerator / denominator).filter(|value| value.is_finite())
}

impl ReportContext<'_> {
    fn entry(&self, identity: EntryIdentity, sums: &ScopeSums) -> FraudEntry {
        let population = sums.population as f64;
        let cases = sums.cases_ytd as f64;
        let per_10k = |count: f64| ratio(count * PER_RESIDENTS, population);
        let exposure_now = population * self.year_to_date.elapsed_days;
        let exposure_base = population * self.baseline_span_days;
        let mut notes: Vec<&str> = Vec::new();
        let mut drop_interval: Option<DropInterval> = None;
        if !sums.has_baseline {
            notes.push("no baseline rows for this scope in the baseline year");
        }
        match exact_rate_ratio(
            cases,
            exposure_now,
            sums.baseline_cases_same_period,
            exposure_base,
            self.settings.confidence,
        ) {
            Ok(interval) => drop_interval = Some(interval.to_drop()),
            Err(RateRatioError::InvalidExposure { .. }) if population == 0.0 => {
                notes.push("no residents: the rates are undefined")
            }
            Err(RateRatioError::InvalidExposure { .. }) => {
                notes.push("no time has elapsed in the year or the baseline period yet")
            }
            Err(_) => notes.push("the rate ratio could not be computed"),
        }
        if drop_interval.is_some() && sums.baseline_cases_same_period == 0.0 {
            if sums.cases_ytd == 0 {
                notes.push("no cases in either period: the rate ratio is undefined");
            } else {
                notes.push(
                    "no baseline cases in the same period: the rate ratio is infinite, the drop and its lower bound are unbounded",
                );
            }
        }
        let drop = drop_interval.and_then(|interval| interval.drop);
        let projected_cases = ratio(
            cases * self.year_to_date.days_in_year,
            self.year_to_date.elapsed_days,
        );
        let projected_incidence = projected_cases.and_then(per_10k);
        let baseline_full_year_incidence = per_10k(sums.baseline_full_year_cases as f64);
        let projected_drop = match (projected_incidence, baseline_full_year_incidence) {
            (Some(projected), Some(full_year)) => ratio(projected, full_year).map(|r| 1.0 - r),
            _ => None,
        };
        FraudEntry {
            scope: identity.scope,
            district_code: identity.district_code,
            district_name: identity.district_name,
            community_id: identity.community_id,
            community_name: identity.community_name,
            cases_ytd: sums.cases_ytd,
            population: sums.population,
            incidence_per_10k: per_10k(cases),
            baseline_cases_same_period: sums.baseline_cases_same_period,
            baseline_incidence_per_10k: per_10k(sums.baseline_cases_same_period),
            drop,
            drop_ci_low: drop_interval.and_then(|interval| interval.drop_low),
            drop_ci_high: drop_interval.map(|interval| interval.drop_high),
            drop_note: if notes.is_empty() {
                None
            } else {
                Some(notes.join("; "))
            },
            distance_from_target: drop.map(|drop| self.settings.target_drop - drop),
            projected_cases,
            projected_incidence_per_10k: projected_incidence,
            baseline_full_year_cases: sums.baseline_full_year_cases,
            baseline_full_year_incidence_per_10k: baseline_full_year_incidence,
            projected_drop,
            on_track: projected_drop.map(|projected| projected >= self.settings.target_drop),
            warnings: sums.warnings,
            dissuaded: sums.dissuaded,
            dissuasion_rate: ratio(sums.dissuaded as f64, sums.warnings as f64),
            paired_dissuasions: sums.paired_dissuasions,
            mean_warning_to_dissuasion_seconds: ratio(
                sums.warning_to_dissuasion_seconds_sum,
                sums.paired_dissuasions as f64,
            ),
        }
    }
}

/// Sorts entries furthest behind the target first (`distance_from_target` descending), entries
/// with an undefined drop last, ties by community id then district code.
fn sort_by_distance_from_target(entries: &mut [FraudEntry]) {
    entries.sort_by(|left, right| {
        let by_distance = match (left.distance_from_target, right.distance_from_target) {
            (Some(left_distance), Some(right_distance)) => right_distance.total_cmp(&left_distance),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_distance
            .then_with(|| left.community_id.cmp(&right.community_id))
            .then_with(|| left.district_code.cmp(&right.district_code))
    });
}

/// Writes a report into the fraud gauges (see `crate::metrics::FraudMetrics`): every entry
/// sets its series; a value that is undefined removes its series rather than exporting NaN.
pub fn publish_metrics(report: &FraudReport, metrics: &crate::metrics::FraudMetrics) {
    metrics.target_drop_ratio.set(report.target_drop);
    let entries = std::iter::once(&report.city)
        .chain(report.districts.iter())
        .chain(report.communities.iter());
    for entry in entries {
        let district = entry.district_code.as_deref().unwrap_or("");
        let community = entry.community_id.as_deref().unwrap_or("");
        let labels = [entry.scope.as_str(), district, community];
        let on_track = entry
            .on_track
            .map(|on_track| if on_track { 1.0 } else { 0.0 });
        let values = [
            (&metrics.incidence_per_10k, entry.incidence_per_10k),
            (
                &metrics.baseline_incidence_per_10k,
                entry.baseline_incidence_per_10k,
            ),
            (&metrics.drop_ratio, entry.drop),
            (&metrics.drop_ci_low, entry.drop_ci_low),
            (&metrics.drop_ci_high, entry.drop_ci_high),
            (&metrics.projected_drop_ratio, entry.projected_drop),
            (
                &metrics.projected_incidence_per_10k,
                entry.projected_incidence_per_10k,
            ),
            (&metrics.on_track, on_track),
            (&metrics.dissuasion_ratio, entry.dissuasion_rate),
        ];
        for (gauge, value) in values {
            match value {
                Some(value) => gauge.with_label_values(&labels).set(value),
                None => {
                    // Absent series are fine: removing one that does not exist is a no-op.
                    let _ = gauge.remove_label_values(&labels);
                }
            }
        }
        if entry.scope == FraudScope::Community {
            metrics
                .cases_ytd
                .with_label_values(&[district, community])
                .set(i64::try_from(entry.cases_ytd).unwrap_or(i64::MAX));
            // Touch the counters so every community has a (zero) series from the start.
            metrics.warnings.with_label_values(&[district, community]);
            metrics.dissuaded.with_label_values(&[district, community]);
        }
        if entry.scope == FraudScope::District {
            metrics
                .warning_to_dissuasion_seconds
                .with_label_values(&[district]);
        }
    }
}

#[cfg(test)]
mod tests;
