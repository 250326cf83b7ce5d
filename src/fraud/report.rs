//! The report: year-to-date incidence, the drop against the baseline year with its exact
//! interval, the projection to 31 December and the levers, for the city, every district and
//! every community, ordered furthest behind the target first; and its Prometheus gauges.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::baseline::FraudBaseline;
use super::calendar::{self, YearToDate};
use super::ledger::FraudLedger;
use super::settings::FraudSettings;
use super::stats::{exact_rate_ratio, DropInterval, RateRatioError};
use super::tracker::FraudTracker;
use crate::config::PopulationSource;
use crate::grid::{CommunityIndex, GridRegistry};

/// Residents per incidence unit (万人发案率).
const PER_RESIDENTS: f64 = 10_000.0;
/// Milliseconds per day.
const DAY_MILLIS: f64 = 86_400_000.0;
/// Seconds per day (metrics use the base unit).
const SECONDS_PER_DAY: f64 = 86_400.0;

impl FraudTracker {
    /// The report of this tracker alone (one partition, or counts already merged).
    pub fn report(
        &self,
        now_millis: i64,
        registry: &GridRegistry,
        baseline: &FraudBaseline,
        settings: &FraudSettings,
    ) -> FraudReport {
        let mut ledger = FraudLedger::new(registry.communities().len());
        ledger.add_tracker(self);
        ledger.report(now_millis, registry, baseline, settings)
    }
}

impl FraudLedger {
    /// The report at `now_millis` (wall time): year to date of `now`'s local year, for the
    /// city, every district of the registry and every community, over the covered time only.
    pub fn report(
        &self,
        now_millis: i64,
        registry: &GridRegistry,
        baseline: &FraudBaseline,
        settings: &FraudSettings,
    ) -> FraudReport {
        let year_to_date = calendar::year_to_date(now_millis, settings.timezone_offset_hours);
        let context = ReportContext {
            settings,
            year_to_date,
        };
        let community_sums: Vec<(CommunityIndex, ScopeSums)> = (0..registry.communities().len())
            .map(|slot| {
                let index = CommunityIndex(slot as u32);
                (
                    index,
                    self.community_sums(
                        index,
                        now_millis,
                        year_to_date,
                        registry,
                        baseline,
                        settings,
                    ),
                )
            })
            .collect();
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
            minimum_coverage_days: settings.minimum_coverage_days,
            split_communities: self
                .split_communities()
                .filter_map(|(community, partitions)| {
                    Some(SplitCommunity {
                        community_id: registry.get_community(community)?.id.clone(),
                        partitions: partitions.to_vec(),
                    })
                })
                .collect(),
            city: context.entry(city_identity, &city_sums),
            districts,
            communities,
        }
    }

    /// One community's sums of the current year: imported months whole, streamed counts of
    /// the other months with the baseline expected over their covered spans only.
    fn community_sums(
        &self,
        index: CommunityIndex,
        now_millis: i64,
        year_to_date: YearToDate,
        registry: &GridRegistry,
        baseline: &FraudBaseline,
        settings: &FraudSettings,
    ) -> ScopeSums {
        let community = registry.community(index);
        let year = year_to_date.year;
        let offset = settings.timezone_offset_hours;
        let baseline_months = baseline.months(settings.baseline_year, &community.id);
        let mut sums = ScopeSums {
            population: u64::from(community.population),
            has_baseline: baseline_months.is_some(),
            community_count: 1,
            ..ScopeSums::default()
        };
        let mut covered_millis: i64 = 0;
        for month in 1..=12u32 {
            let baseline_cases = baseline_months
                .and_then(|months| months.get(month as usize - 1))
                .map_or(0, |counts| counts.cases(&settings.case_event_types));
            sums.baseline_full_year_cases += baseline_cases;
            if month > year_to_date.month {
                continue;
            }
            let month_start = calendar::month_start_millis(year, month, offset);
            let month_end = calendar::month_start_millis(year, month + 1, offset).min(now_millis);
            if month_end <= month_start {
                continue;
            }
            let baseline_daily_cases =
                baseline_cases as f64 / calendar::days_in_month(settings.baseline_year, month);
            let expected_over = |start: i64, end: i64| {
                calendar::expected_over(
                    baseline_daily_cases,
                    &settings.case_hour_shares,
                    start,
                    end,
                    offset,
                )
            };
            let (counts, covered) = match self.imported(year, month, index) {
                Some(imported) => {
                    let cases = imported.cases(&settings.case_event_types);
                    sums.cases_imported += cases;
                    sums.covered_days_imported_x_population += (month_end - month_start) as f64
                        / DAY_MILLIS
                        * f64::from(community.population);
                    sums.baseline_cases_covered += expected_over(month_start, month_end);
                    (imported, month_end - month_start)
                }
                None => {
                    let streamed = self.streamed(year, month, index);
                    sums.cases_streamed += streamed.cases(&settings.case_event_types);
                    let spans = self
                        .coverage(index)
                        .map(|coverage| coverage.clipped(month_start, month_end))
                        .unwrap_or_default();
                    for (start, end) in spans.spans() {
                        sums.baseline_cases_covered += expected_over(*start, *end);
                    }
                    (streamed, spans.total_millis())
                }
            };
            covered_millis = covered_millis.saturating_add(covered);
            sums.warnings += counts.warnings;
            sums.dissuaded += counts.dissuaded;
            sums.paired_dissuasions += counts.paired_dissuasions;
            sums.warning_to_dissuasion_seconds_sum += counts.warning_to_dissuasion_seconds_sum;
        }
        let covered_days = covered_millis as f64 / DAY_MILLIS;
        sums.covered_days_sum = covered_days;
        sums.covered_days_x_population = covered_days * f64::from(community.population);
        sums
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

/// The verdict of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FraudStatus {
    /// Less observed time than `minimum_coverage_days`: no verdict, whatever the counts.
    InsufficientData,
    /// The projected year-end drop reaches the target.
    OnTrack,
    /// The projected year-end drop falls short of the target.
    OffTrack,
    /// No baseline cases (or no residents): the drop is undefined.
    NoBaseline,
}

impl FraudStatus {
    /// Every status, in the order of the `status` label values.
    pub const ALL: [FraudStatus; 4] = [
        FraudStatus::InsufficientData,
        FraudStatus::OnTrack,
        FraudStatus::OffTrack,
        FraudStatus::NoBaseline,
    ];

    /// The label value used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FraudStatus::InsufficientData => "insufficient_data",
            FraudStatus::OnTrack => "on_track",
            FraudStatus::OffTrack => "off_track",
            FraudStatus::NoBaseline => "no_baseline",
        }
    }
}

/// The fraud target for one scope (city, district or community), year to date, over the
/// event time actually observed (streamed spans and imported months).
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
    /// The verdict: `insufficient_data` below the minimum coverage, never `on_track` there.
    pub status: FraudStatus,
    /// Cases (the configured case types) this local year so far: imported + streamed.
    pub cases_ytd: u64,
    /// Cases of imported months.
    pub cases_imported: u64,
    /// Cases counted from the stream (months not imported).
    pub cases_streamed: u64,
    /// Observed days this year (population-weighted mean over the scope's communities).
    pub covered_days: f64,
    /// Of which imported months.
    pub covered_days_imported: f64,
    /// Of which streamed spans.
    pub covered_days_streamed: f64,
    /// `covered_days ÷ elapsed_days`: the share of the year so far that was observed.
    pub coverage_ratio: Option<f64>,
    /// Residents (sum over the scope's communities).
    pub population: u64,
    /// Cases per 10,000 residents, year to date (`null` for a zero population).
    pub incidence_per_10k: Option<f64>,
    /// Baseline cases expected over the covered time (the baseline year's month and hour of
    /// day shape over the same spans; fractional).
    pub baseline_cases_covered: f64,
    /// Baseline cases per 10,000 residents over the covered time.
    pub baseline_incidence_per_10k: Option<f64>,
    /// 1 − rate ratio (`null` when undefined: see `drop_note`).
    pub drop: Option<f64>,
    /// Lower bound of the drop's exact interval (`null` = unbounded below).
    pub drop_ci_low: Option<f64>,
    /// Upper bound of the drop's exact interval.
    pub drop_ci_high: Option<f64>,
    /// Why the drop or a bound is `null`, or why there is no verdict, when so.
    pub drop_note: Option<String>,
    /// `target_drop − drop`: how far behind the target (negative = ahead); the sort key.
    pub distance_from_target: Option<f64>,
    /// Cases by 31 December: observed cases plus the baseline's remaining cases (uncovered
    /// past and the rest of the year, by its monthly shape) scaled by the observed ratio.
    pub projected_cases: Option<f64>,
    /// Lower end of the projection's interval (the drop interval's ratio bounds).
    pub projected_cases_low: Option<f64>,
    /// Upper end of the projection's interval (`null` = unbounded).
    pub projected_cases_high: Option<f64>,
    /// Projected cases per 10,000 residents for the whole year.
    pub projected_incidence_per_10k: Option<f64>,
    /// Cases of the whole baseline year.
    pub baseline_full_year_cases: u64,
    /// Cases per 10,000 residents of the whole baseline year.
    pub baseline_full_year_incidence_per_10k: Option<f64>,
    /// 1 − projected cases ÷ the whole baseline year's cases.
    pub projected_drop: Option<f64>,
    /// Lower bound of the projected drop (`null` = unbounded below).
    pub projected_drop_low: Option<f64>,
    /// Upper bound of the projected drop.
    pub projected_drop_high: Option<f64>,
    /// Whether the projected drop reaches the target; `null` without a verdict
    /// (`insufficient_data`, `no_baseline`).
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
    /// Days elapsed in the local year.
    pub elapsed_days: f64,
    /// Days in the current year.
    pub days_in_year: f64,
    /// Observed days a scope needs for a verdict (below: `insufficient_data`).
    pub minimum_coverage_days: f64,
    /// Communities whose events arrived on more than one input partition: their
    /// community-scope statistics are split (key the input by community id). Empty when the
    /// input is keyed right.
    pub split_communities: Vec<SplitCommunity>,
    /// The whole city.
    pub city: FraudEntry,
    /// Each district/county, furthest behind the target first.
    pub districts: Vec<FraudEntry>,
    /// Each community, furthest behind the target first.
    pub communities: Vec<FraudEntry>,
}

/// A community whose events arrived on several input partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitCommunity {
    /// 12-digit community id.
    pub community_id: String,
    /// The partitions (`topic/partition`) that carried its events.
    pub partitions: Vec<String>,
}

/// Sums over a scope's communities (summed before any division).
#[derive(Debug, Clone, Copy, Default)]
struct ScopeSums {
    /// Communities summed.
    community_count: u64,
    /// Cases of imported months.
    cases_imported: u64,
    /// Cases of streamed months.
    cases_streamed: u64,
    /// Residents.
    population: u64,
    /// Baseline cases expected over the covered time.
    baseline_cases_covered: f64,
    /// Baseline cases of the whole year.
    baseline_full_year_cases: u64,
    /// Covered days × residents (population-weighted mean's numerator).
    covered_days_x_population: f64,
    /// Imported covered days × residents.
    covered_days_imported_x_population: f64,
    /// Covered days summed over communities (the unweighted mean, for zero populations).
    covered_days_sum: f64,
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
        self.community_count += other.community_count;
        self.cases_imported += other.cases_imported;
        self.cases_streamed += other.cases_streamed;
        self.population += other.population;
        self.baseline_cases_covered += other.baseline_cases_covered;
        self.baseline_full_year_cases += other.baseline_full_year_cases;
        self.covered_days_x_population += other.covered_days_x_population;
        self.covered_days_imported_x_population += other.covered_days_imported_x_population;
        self.covered_days_sum += other.covered_days_sum;
        self.warnings += other.warnings;
        self.dissuaded += other.dissuaded;
        self.paired_dissuasions += other.paired_dissuasions;
        self.warning_to_dissuasion_seconds_sum += other.warning_to_dissuasion_seconds_sum;
        self.has_baseline |= other.has_baseline;
    }

    /// Observed days of the scope (population-weighted; unweighted without residents) and the
    /// imported part of them.
    fn covered_days(&self) -> (f64, f64) {
        if self.population > 0 {
            let population = self.population as f64;
            return (
                self.covered_days_x_population / population,
                self.covered_days_imported_x_population / population,
            );
        }
        let communities = self.community_count.max(1) as f64;
        (self.covered_days_sum / communities, 0.0)
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
        let cases_ytd = sums.cases_imported + sums.cases_streamed;
        let cases = cases_ytd as f64;
        let per_10k = |count: f64| ratio(count * PER_RESIDENTS, population);
        let (covered_days, covered_days_imported) = sums.covered_days();
        let baseline_full_year = sums.baseline_full_year_cases as f64;
        let mut notes: Vec<&str> = Vec::new();
        if !sums.has_baseline {
            notes.push("no baseline rows for this scope in the baseline year");
        }
        // The rate ratio over the covered time: observed cases against the baseline year's
        // whole count, each with its exposure in "baseline cases" (the covered share of the
        // baseline year's expected cases, and the whole year), so the ratio is
        // observed ÷ expected-over-the-covered-time and the interval uses the whole baseline.
        let mut drop_interval: Option<DropInterval> = None;
        let mut ratio_bounds: Option<(f64, Option<f64>, Option<f64>)> = None;
        match exact_rate_ratio(
            cases,
            sums.baseline_cases_covered,
            baseline_full_year,
            baseline_full_year,
            self.settings.confidence,
        ) {
            Ok(interval) => {
                drop_interval = Some(interval.to_drop());
                ratio_bounds = Some((interval.ratio_low, interval.ratio, interval.ratio_high));
            }
            Err(RateRatioError::InvalidExposure { .. }) if baseline_full_year == 0.0 => {
                notes.push("no baseline cases in the baseline year: the rate ratio is undefined")
            }
            Err(RateRatioError::InvalidExposure { .. })
                if sums.baseline_cases_covered == 0.0 && covered_days > 0.0 =>
            {
                notes.push(
                    "the baseline expects no cases over the observed time: the drop is undefined",
                )
            }
            Err(RateRatioError::InvalidExposure { .. }) => notes.push(
                "no observed time with baseline cases yet: nothing to compare with the baseline",
            ),
            Err(_) => notes.push("the rate ratio could not be computed"),
        }
        let drop = drop_interval.and_then(|interval| interval.drop);
        // Projection: the observed cases plus the baseline's cases of the time not observed
        // (gaps, and the rest of the year by the baseline's monthly shape) at the observed
        // ratio and at its interval's bounds.
        let remaining_expected = (baseline_full_year - sums.baseline_cases_covered).max(0.0);
        let project = |rate_ratio: f64| cases + rate_ratio * remaining_expected;
        let projected_cases = ratio_bounds.and_then(|(_, point, _)| point).map(project);
        let projected_cases_low = ratio_bounds.map(|(low, _, _)| project(low));
        let projected_cases_high = ratio_bounds.and_then(|(_, _, high)| high).map(project);
        let projected_drop_of = |projected: Option<f64>| {
            projected.and_then(|projected| ratio(projected, baseline_full_year).map(|r| 1.0 - r))
        };
        let projected_drop = projected_drop_of(projected_cases);
        let enough_coverage = covered_days >= self.settings.minimum_coverage_days;
        let status = match projected_drop {
            _ if !enough_coverage => FraudStatus::InsufficientData,
            None => FraudStatus::NoBaseline,
            Some(projected) if projected >= self.settings.target_drop => FraudStatus::OnTrack,
            Some(_) => FraudStatus::OffTrack,
        };
        if status == FraudStatus::InsufficientData {
            notes.push("less observed time than the minimum coverage: no verdict yet (import the year's history or wait)");
        }
        let elapsed_days = self.year_to_date.elapsed_days;
        FraudEntry {
            scope: identity.scope,
            district_code: identity.district_code,
            district_name: identity.district_name,
            community_id: identity.community_id,
            community_name: identity.community_name,
            status,
            cases_ytd,
            cases_imported: sums.cases_imported,
            cases_streamed: sums.cases_streamed,
            covered_days,
            covered_days_imported,
            covered_days_streamed: (covered_days - covered_days_imported).max(0.0),
            coverage_ratio: ratio(covered_days, elapsed_days).map(|share| share.min(1.0)),
            population: sums.population,
            incidence_per_10k: per_10k(cases),
            baseline_cases_covered: sums.baseline_cases_covered,
            baseline_incidence_per_10k: per_10k(sums.baseline_cases_covered),
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
            projected_cases_low,
            projected_cases_high,
            projected_incidence_per_10k: projected_cases.and_then(per_10k),
            baseline_full_year_cases: sums.baseline_full_year_cases,
            baseline_full_year_incidence_per_10k: per_10k(baseline_full_year),
            projected_drop,
            projected_drop_low: projected_drop_of(projected_cases_high),
            projected_drop_high: projected_drop_of(projected_cases_low),
            on_track: match status {
                FraudStatus::OnTrack => Some(true),
                FraudStatus::OffTrack => Some(false),
                FraudStatus::InsufficientData | FraudStatus::NoBaseline => None,
            },
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
    metrics.community_input_partitions.reset();
    for split in &report.split_communities {
        metrics
            .community_input_partitions
            .with_label_values(&[split.community_id.as_str()])
            .set(split.partitions.len() as f64);
    }
    metrics
        .minimum_coverage_seconds
        .set(report.minimum_coverage_days * SECONDS_PER_DAY);
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
            (&metrics.projected_drop_ci_low, entry.projected_drop_low),
            (&metrics.projected_drop_ci_high, entry.projected_drop_high),
            (
                &metrics.projected_incidence_per_10k,
                entry.projected_incidence_per_10k,
            ),
            (&metrics.on_track, on_track),
            (&metrics.dissuasion_ratio, entry.dissuasion_rate),
            (
                &metrics.covered_seconds,
                Some(entry.covered_days * SECONDS_PER_DAY),
            ),
            (&metrics.coverage_ratio, entry.coverage_ratio),
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
        for status in FraudStatus::ALL {
            let value = if status == entry.status { 1.0 } else { 0.0 };
            metrics
                .status
                .with_label_values(&[entry.scope.as_str(), district, community, status.as_str()])
                .set(value);
        }
        if entry.scope == FraudScope::Community {
            let community_labels = [district, community];
            let as_gauge = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
            for (source, cases) in [
                ("imported", entry.cases_imported),
                ("streamed", entry.cases_streamed),
            ] {
                metrics
                    .cases_ytd
                    .with_label_values(&[district, community, source])
                    .set(as_gauge(cases));
            }
            metrics
                .population
                .with_label_values(&community_labels)
                .set(as_gauge(entry.population));
            metrics
                .baseline_cases_covered
                .with_label_values(&community_labels)
                .set(entry.baseline_cases_covered);
            metrics
                .baseline_full_year_cases
                .with_label_values(&community_labels)
                .set(as_gauge(entry.baseline_full_year_cases));
            // Touch the counters so every community has a (zero) series from the start.
            metrics.warnings.with_label_values(&community_labels);
            metrics.dissuaded.with_label_values(&community_labels);
        }
        if entry.scope == FraudScope::District {
            metrics
                .warning_to_dissuasion_seconds
                .with_label_values(&[district]);
        }
    }
}
