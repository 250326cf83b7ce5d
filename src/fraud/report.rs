//! The report: year-to-date incidence, the drop against the baseline year with its exact
//! interval, the projection to 31 December and the levers, for the city, every district and
//! every community, ordered furthest behind the target first; and its Prometheus gauges.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::baseline::FraudBaseline;
use super::calendar::{self, YearToDate};
use super::settings::FraudSettings;
use super::stats::{exact_rate_ratio, DropInterval, RateRatioError};
use super::tracker::FraudTracker;
use crate::config::PopulationSource;
use crate::grid::{CommunityIndex, GridRegistry};

/// Residents per incidence unit (万人发案率).
const PER_RESIDENTS: f64 = 10_000.0;

impl FraudTracker {
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

/// The scope of a report entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
