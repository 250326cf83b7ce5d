//! Tests of the tracker and the report: aggregation, pro-rating, projection, pairing, order,
//! and the exact interval against SciPy fixtures.

use proptest::prelude::*;

use super::calendar::HOUR_MILLIS;
use super::*;
use crate::config::{FraudConfig, PopulationSource};
use crate::event::AcceptedEvent;
use crate::grid::{Cell, CellIndex, Community, CommunityIndex, District, GridRegistry};
use crate::proto::{EventType, IncidentEvent};

/// Community ids of the test registry: two in Qibin (populations 1,000 and 9,000), one in Xun
/// (5,000).
const COMMUNITY_A: &str = "410611001001";
const COMMUNITY_B: &str = "410611001002";
const COMMUNITY_C: &str = "410621100001";

fn millis(text: &str) -> i64 {
    crate::time::rfc3339_to_millis(text).expect("valid test time")
}

fn square(west: f64, south: f64) -> geo::Polygon<f64> {
    geo::Polygon::new(
        geo::LineString::from(vec![
            (west, south),
            (west + 0.001, south),
            (west + 0.001, south + 0.001),
            (west, south + 0.001),
            (west, south),
        ]),
        Vec::new(),
    )
}

/// Two districts, three communities of one cell each (cell index = community index).
fn test_registry() -> GridRegistry {
    let districts = vec![
        District {
            code: "410611".to_string(),
            name_zh: "淇滨区".to_string(),
            name_en: "Qibin".to_string(),
        },
        District {
            code: "410621".to_string(),
            name_zh: "浚县".to_string(),
            name_en: "Xun".to_string(),
        },
    ];
    let community = |id: &str, population: u32| Community {
        id: id.to_string(),
        name: format!("社区{id}"),
        district_code: id[..6].to_string(),
        population,
        centroid: (114.3, 35.7),
        cells: Vec::new(),
    };
    let communities = vec![
        community(COMMUNITY_A, 1_000),
        community(COMMUNITY_B, 9_000),
        community(COMMUNITY_C, 5_000),
    ];
    let cells = [COMMUNITY_A, COMMUNITY_B, COMMUNITY_C]
        .iter()
        .enumerate()
        .map(|(index, id)| Cell {
            grid_id: format!("{id}01"),
            community: CommunityIndex(index as u32),
            polygon: square(114.3 + index as f64 * 0.01, 35.7),
        })
        .collect();
    GridRegistry::from_parts(districts, communities, cells, Vec::new()).expect("valid registry")
}

/// A baseline with the given filed-case counts per month (Jan..) for each community; months
/// not given are 0. Reports are filed + 1 so the column choice is visible.
fn baseline_with(rows: &[(&str, &[u64])]) -> FraudBaseline {
    let mut text =
        String::from("community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n");
    for (community_id, months) in rows {
        for month in 1..=12_usize {
            let filed = months.get(month - 1).copied().unwrap_or(0);
            text.push_str(&format!(
                "{community_id},2023,{month},{},{},{filed}\n",
                filed * 5,
                filed + 1
            ));
        }
    }
    FraudBaseline::from_csv(&text).expect("valid baseline")
}

/// Feeds events into a tracker.
struct Feeder {
    tracker: FraudTracker,
    registry: GridRegistry,
    next_id: u64,
}

impl Feeder {
    fn new() -> Feeder {
        Feeder {
            tracker: FraudTracker::new(&FraudSettings::default()),
            registry: test_registry(),
            next_id: 0,
        }
    }

    fn feed(
        &mut self,
        community_slot: u32,
        event_type: EventType,
        occurred_at_millis: i64,
        phone: Option<&str>,
    ) -> Option<PairedDissuasion> {
        self.next_id += 1;
        let mut event = IncidentEvent {
            event_id: format!("event-{}", self.next_id),
            event_type: event_type as i32,
            ..IncidentEvent::default()
        };
        if let Some(phone) = phone {
            event
                .attributes
                .insert("phone".to_string(), phone.to_string());
        }
        let accepted = AcceptedEvent {
            event: &event,
            event_type,
            severity: 2,
            occurred_at_millis,
            cell: CellIndex(community_slot),
        };
        self.tracker.on_event(&accepted, &self.registry)
    }

    /// The stream flowed over `[start, end)` for every community (an event every 10 minutes).
    fn cover(&mut self, start: i64, end: i64) {
        let community_count = self.registry.communities().len();
        let mut at = start;
        while at < end {
            for slot in 0..community_count {
                self.tracker
                    .observe_stream(at, CommunityIndex(slot as u32), community_count);
            }
            at = (at + 600_000).min(end - 1).max(at + 1);
        }
    }

    fn feed_many(&mut self, community_slot: u32, event_type: EventType, count: u32, at: i64) {
        for offset in 0..count {
            self.feed(community_slot, event_type, at + i64::from(offset), None);
        }
    }

    fn report(&self, now: i64, baseline: &FraudBaseline) -> FraudReport {
        self.tracker
            .report(now, &self.registry, baseline, &FraudSettings::default())
    }
}

fn community<'a>(report: &'a FraudReport, id: &str) -> &'a FraudEntry {
    report
        .communities
        .iter()
        .find(|entry| entry.community_id.as_deref() == Some(id))
        .expect("community in report")
}

fn district<'a>(report: &'a FraudReport, code: &str) -> &'a FraudEntry {
    report
        .districts
        .iter()
        .find(|entry| entry.district_code.as_deref() == Some(code))
        .expect("district in report")
}

fn assert_close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

#[test]
fn city_and_district_incidence_sum_cases_and_population_before_dividing() {
    let mut feeder = Feeder::new();
    let now = millis("2026-06-01T12:00:00+08:00");
    feeder.feed_many(0, EventType::FraudCaseFiled, 5, now - 86_400_000);
    feeder.feed_many(1, EventType::FraudCaseFiled, 9, now - 86_400_000);
    let report = feeder.report(now, &baseline_with(&[]));
    let incidence_a = community(&report, COMMUNITY_A).incidence_per_10k.unwrap();
    let incidence_b = community(&report, COMMUNITY_B).incidence_per_10k.unwrap();
    assert_close(incidence_a, 50.0, 1e-12);
    assert_close(incidence_b, 10.0, 1e-12);
    let qibin = district(&report, "410611");
    assert_eq!((qibin.cases_ytd, qibin.population), (14, 10_000));
    assert_close(qibin.incidence_per_10k.unwrap(), 14.0, 1e-12);
    assert!((qibin.incidence_per_10k.unwrap() - (incidence_a + incidence_b) / 2.0).abs() > 1.0);
    assert_eq!(report.city.cases_ytd, 14);
    assert_eq!(report.city.population, 15_000);
    assert_close(
        report.city.incidence_per_10k.unwrap(),
        14.0 / 15_000.0 * 10_000.0,
        1e-12,
    );
}

#[test]
fn baseline_over_covered_time_follows_the_months_and_the_hours_of_the_day() {
    let mut feeder = Feeder::new();
    // Observed from 1 January to 16 March 12:00 local: January + February + 15 days of March
    // + the morning of 16 March by the hour-of-day shape.
    let now = millis("2026-03-16T12:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    let baseline = baseline_with(&[(COMMUNITY_A, &[3, 4, 10, 100])]);
    let report = feeder.report(now, &baseline);
    let entry = community(&report, COMMUNITY_A);
    let shares = FraudSettings::default().case_hour_shares;
    let morning_share: f64 = shares[..12].iter().sum();
    assert_close(
        entry.baseline_cases_covered,
        3.0 + 4.0 + 10.0 / 31.0 * (15.0 + morning_share),
        1e-9,
    );
    assert_eq!(entry.baseline_full_year_cases, 117);
    assert_close(report.elapsed_days, 31.0 + 28.0 + 15.5, 1e-12);
    assert_close(entry.covered_days, 31.0 + 28.0 + 15.5, 1e-6);
    assert_eq!(entry.status, crate::fraud::FraudStatus::OnTrack);
}

#[test]
fn two_observed_days_of_thirty_compare_with_the_baseline_of_those_two_days_only() {
    let mut feeder = Feeder::new();
    let now = millis("2026-04-30T12:00:00+08:00");
    // The stream flowed on 10 and 11 April only; B reported 3 cases then.
    feeder.cover(
        millis("2026-04-10T00:00:00+08:00"),
        millis("2026-04-12T00:00:00+08:00"),
    );
    feeder.feed_many(
        1,
        EventType::FraudCaseFiled,
        3,
        millis("2026-04-11T10:00:00+08:00"),
    );
    let baseline = baseline_with(&[(
        COMMUNITY_B,
        &[30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
    )]);
    let settings = FraudSettings {
        minimum_coverage_days: 1.0,
        ..FraudSettings::default()
    };
    let report = feeder
        .tracker
        .report(now, &feeder.registry, &baseline, &settings);
    let entry = community(&report, COMMUNITY_B);
    // April averages 1 case a day: 2 expected over the two observed days.
    assert_close(entry.baseline_cases_covered, 2.0, 1e-9);
    assert_close(entry.covered_days, 2.0, 1e-6);
    assert_close(entry.drop.unwrap(), 1.0 - 3.0 / 2.0, 1e-9);
    assert_eq!(entry.cases_streamed, 3);
    assert_close(
        entry.coverage_ratio.unwrap(),
        2.0 / report.elapsed_days,
        1e-6,
    );
}

#[test]
fn a_fresh_start_has_insufficient_data_and_never_a_verdict() {
    let mut feeder = Feeder::new();
    let now = millis("2026-12-02T12:00:00+08:00");
    // One hour observed, no case: the old report said "drop 100 %, on track".
    feeder.cover(now - 3_600_000, now);
    let report = feeder.report(now, &FraudBaseline::embedded().unwrap());
    for entry in std::iter::once(&report.city)
        .chain(&report.districts)
        .chain(&report.communities)
    {
        assert_eq!(entry.status, crate::fraud::FraudStatus::InsufficientData);
        assert_eq!(entry.on_track, None);
    }
    assert!(report.city.covered_days < 0.05);
}

#[test]
fn configured_case_column_decides_the_baseline() {
    let mut feeder = Feeder::new();
    let now = millis("2026-02-01T00:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    let baseline = baseline_with(&[(COMMUNITY_A, &[3])]);
    let settings = FraudSettings {
        case_event_types: vec![EventType::FraudReported],
        ..FraudSettings::default()
    };
    let report = feeder
        .tracker
        .report(now, &feeder.registry, &baseline, &settings);
    // fraud_reported = filed + 1 in the test baseline.
    assert_close(
        community(&report, COMMUNITY_A).baseline_cases_covered,
        4.0,
        1e-12,
    );
    assert_eq!(report.case_event_types, vec!["FRAUD_REPORTED".to_string()]);
}

#[test]
fn drop_compares_rates_over_the_covered_time_and_has_an_interval_around_it() {
    let mut feeder = Feeder::new();
    let now = millis("2026-04-01T00:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    feeder.feed_many(1, EventType::FraudCaseFiled, 4, now - 1000);
    let baseline = baseline_with(&[(COMMUNITY_B, &[3, 3, 4])]);
    let report = feeder.report(now, &baseline);
    let entry = community(&report, COMMUNITY_B);
    // Observed January to March, the baseline's 10 cases of those months: drop = 1 − 4/10.
    assert_close(entry.drop.unwrap(), 0.6, 1e-12);
    assert!(entry.drop_ci_low.unwrap() < 0.6 && 0.6 < entry.drop_ci_high.unwrap());
    assert_close(entry.distance_from_target.unwrap(), 0.0, 1e-12);
}

#[test]
fn projection_follows_the_baseline_months_not_a_straight_line() {
    let mut feeder = Feeder::new();
    // 1 April 00:00 local: January to March observed.
    let now = millis("2026-04-01T00:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    feeder.feed_many(0, EventType::FraudCaseFiled, 9, now - 1000);
    feeder.feed_many(1, EventType::FraudCaseFiled, 15, now - 1000);
    // 30 baseline cases in January–March, 70 in the rest of the year (100 in all).
    let full_year: &[u64] = &[10, 10, 10, 10, 10, 10, 10, 10, 5, 5, 5, 5];
    let baseline = baseline_with(&[(COMMUNITY_A, full_year), (COMMUNITY_B, full_year)]);
    let report = feeder.report(now, &baseline);
    let on_track = community(&report, COMMUNITY_A);
    // Observed ratio 9/30 = 0.3 applied to the 70 baseline cases still to come: 9 + 21.
    assert_close(on_track.projected_cases.unwrap(), 30.0, 1e-9);
    assert_close(on_track.projected_incidence_per_10k.unwrap(), 300.0, 1e-9);
    assert_close(on_track.projected_drop.unwrap(), 0.7, 1e-9);
    assert!(
        on_track.projected_drop_low.unwrap() < 0.7 && 0.7 < on_track.projected_drop_high.unwrap()
    );
    // The projection's interval is narrower than the drop's: the observed part is known.
    assert!(
        on_track.projected_drop_high.unwrap() - on_track.projected_drop_low.unwrap()
            < on_track.drop_ci_high.unwrap() - on_track.drop_ci_low.unwrap()
    );
    assert_eq!(on_track.on_track, Some(true));
    let behind = community(&report, COMMUNITY_B);
    // 15/30 = 0.5: 15 + 35 = 50 of 100, a drop of 0.5 < 0.6.
    assert_close(behind.projected_drop.unwrap(), 0.5, 1e-9);
    assert_eq!(behind.on_track, Some(false));
    assert_eq!(behind.status, crate::fraud::FraudStatus::OffTrack);
    // No baseline at all for C: no projected drop, no verdict.
    let unknown = community(&report, COMMUNITY_C);
    assert_eq!(unknown.projected_drop, None);
    assert_eq!(unknown.on_track, None);
    assert_eq!(unknown.status, crate::fraud::FraudStatus::NoBaseline);
}

#[test]
fn zero_baseline_leaves_the_drop_null_and_says_why() {
    let mut feeder = Feeder::new();
    let now = millis("2026-04-01T00:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    feeder.feed_many(2, EventType::FraudCaseFiled, 2, now - 1000);
    let baseline = baseline_with(&[(COMMUNITY_C, &[0, 0, 0, 7])]);
    let report = feeder.report(now, &baseline);
    let entry = community(&report, COMMUNITY_C);
    assert_eq!(entry.drop, None);
    assert_eq!(entry.drop_ci_low, None);
    assert!(entry
        .drop_note
        .as_deref()
        .unwrap()
        .contains("expects no cases"));
    // No cases now against a positive baseline: drop 1, finite lower bound.
    let zero_now = community(&report, COMMUNITY_A);
    assert_eq!(zero_now.drop, None, "A has no baseline rows at all");
    let baseline_with_a = baseline_with(&[(COMMUNITY_A, &[2, 2, 2])]);
    let report = feeder.report(now, &baseline_with_a);
    let zero_now = community(&report, COMMUNITY_A);
    assert_eq!(zero_now.drop, Some(1.0));
    assert!(zero_now.drop_ci_low.unwrap().is_finite());
    assert_eq!(zero_now.drop_ci_high, Some(1.0));
}

#[test]
fn dissuasion_pairs_by_phone_first_then_first_in_first_out() {
    let mut feeder = Feeder::new();
    let t0 = millis("2026-05-01T09:00:00+08:00");
    assert_eq!(
        feeder.feed(0, EventType::FraudWarning, t0, Some("pseudo:aaa")),
        None
    );
    feeder.feed(0, EventType::FraudWarning, t0 + 10_000, Some("pseudo:bbb"));
    feeder.feed(0, EventType::FraudWarning, t0 + 20_000, None);
    let by_phone = feeder
        .feed(
            0,
            EventType::FraudDissuaded,
            t0 + 60_000,
            Some("pseudo:bbb"),
        )
        .unwrap();
    assert!(by_phone.matched_by_phone);
    assert_close(by_phone.seconds, 50.0, 1e-12);
    let fifo = feeder
        .feed(
            0,
            EventType::FraudDissuaded,
            t0 + 100_000,
            Some("pseudo:zzz"),
        )
        .unwrap();
    assert!(!fifo.matched_by_phone);
    assert_close(fifo.seconds, 100.0, 1e-12);
    let fifo_without_phone = feeder
        .feed(0, EventType::FraudDissuaded, t0 + 120_000, None)
        .unwrap();
    assert_close(fifo_without_phone.seconds, 100.0, 1e-12);
    assert_eq!(feeder.tracker.pending_warning_count(), 0);
    // Another community's warnings are never taken.
    feeder.feed(1, EventType::FraudWarning, t0, Some("pseudo:ccc"));
    assert_eq!(
        feeder.feed(
            0,
            EventType::FraudDissuaded,
            t0 + 200_000,
            Some("pseudo:ccc")
        ),
        None
    );
    let report = feeder.report(t0 + 300_000, &baseline_with(&[]));
    let entry = community(&report, COMMUNITY_A);
    assert_eq!((entry.warnings, entry.dissuaded), (3, 4));
    assert_close(entry.dissuasion_rate.unwrap(), 4.0 / 3.0, 1e-12);
    assert_eq!(entry.paired_dissuasions, 3);
    assert_close(
        entry.mean_warning_to_dissuasion_seconds.unwrap(),
        250.0 / 3.0,
        1e-9,
    );
}

#[test]
fn warning_without_dissuasion_stays_unpaired_and_a_dissuasion_never_pairs_backwards() {
    let mut feeder = Feeder::new();
    let t0 = millis("2026-05-01T09:00:00+08:00");
    feeder.feed(0, EventType::FraudWarning, t0, Some("pseudo:aaa"));
    // A dissuasion that occurred before the only warning cannot be its consequence.
    assert_eq!(
        feeder.feed(0, EventType::FraudDissuaded, t0 - 5_000, Some("pseudo:aaa")),
        None
    );
    assert_eq!(feeder.tracker.pending_warning_count(), 1);
    let report = feeder.report(t0 + 1000, &baseline_with(&[]));
    let entry = community(&report, COMMUNITY_A);
    assert_eq!(entry.paired_dissuasions, 0);
    assert_eq!(entry.mean_warning_to_dissuasion_seconds, None);
    // Beyond the pairing horizon (30 days) the warning is forgotten.
    let later = t0 + 31 * 86_400_000;
    assert_eq!(feeder.feed(0, EventType::FraudDissuaded, later, None), None);
    assert_eq!(feeder.tracker.pending_warning_count(), 0);
}

#[test]
fn report_lists_the_furthest_behind_first_and_undefined_drops_last() {
    let mut feeder = Feeder::new();
    let now = millis("2026-04-01T00:00:00+08:00");
    feeder.cover(millis("2026-01-01T00:00:00+08:00"), now);
    // A: 8 vs 10 (drop 0.2); B: 1 vs 10 (drop 0.9); C: no baseline (undefined).
    feeder.feed_many(0, EventType::FraudCaseFiled, 8, now - 1000);
    feeder.feed_many(1, EventType::FraudCaseFiled, 1, now - 1000);
    feeder.feed_many(2, EventType::FraudCaseFiled, 3, now - 1000);
    let baseline = baseline_with(&[(COMMUNITY_A, &[4, 3, 3]), (COMMUNITY_B, &[4, 3, 3])]);
    let report = feeder.report(now, &baseline);
    let order: Vec<&str> = report
        .communities
        .iter()
        .map(|entry| entry.community_id.as_deref().unwrap())
        .collect();
    assert_eq!(order, vec![COMMUNITY_A, COMMUNITY_B, COMMUNITY_C]);
    // Qibin: 9 vs 20 (drop 0.55, behind); Xun: undefined.
    let district_order: Vec<&str> = report
        .districts
        .iter()
        .map(|entry| entry.district_code.as_deref().unwrap())
        .collect();
    assert_eq!(district_order, vec!["410611", "410621"]);
    assert_close(report.districts[0].drop.unwrap(), 1.0 - 9.0 / 20.0, 1e-12);
}

#[test]
fn events_count_in_their_own_local_year_and_old_years_are_dropped() {
    let mut feeder = Feeder::new();
    // 31 Dec 2025 23:30 local is 2025; 1 Jan 2026 00:30 local is 2026 (15:30/16:30 UTC).
    feeder.feed(
        0,
        EventType::FraudCaseFiled,
        millis("2025-12-31T23:30:00+08:00"),
        None,
    );
    feeder.feed(
        0,
        EventType::FraudCaseFiled,
        millis("2026-01-01T00:30:00+08:00"),
        None,
    );
    feeder.feed(
        0,
        EventType::FraudCaseFiled,
        millis("2026-01-01T00:40:00+08:00"),
        None,
    );
    assert_eq!(
        feeder.tracker.counts(2025, CommunityIndex(0)).cases_filed,
        1
    );
    assert_eq!(
        feeder.tracker.counts(2026, CommunityIndex(0)).cases_filed,
        2
    );
    let report = feeder.report(millis("2026-01-01T01:00:00+08:00"), &baseline_with(&[]));
    assert_eq!((report.year, report.city.cases_ytd), (2026, 2));
    feeder.feed(
        0,
        EventType::FraudCaseFiled,
        millis("2028-03-01T00:00:00+08:00"),
        None,
    );
    assert_eq!(feeder.tracker.years(), vec![2026, 2028]);
    feeder.feed(
        0,
        EventType::FraudCaseFiled,
        millis("2024-03-01T00:00:00+08:00"),
        None,
    );
    assert_eq!(feeder.tracker.years(), vec![2026, 2028]);
}

#[test]
fn tracker_survives_a_postcard_snapshot() {
    let mut feeder = Feeder::new();
    let t0 = millis("2026-05-01T09:00:00+08:00");
    feeder.feed(0, EventType::FraudWarning, t0, Some("pseudo:aaa"));
    feeder.feed(1, EventType::FraudCaseFiled, t0, None);
    feeder.cover(t0 - 3_600_000, t0);
    assert!(!feeder.tracker.coverage().is_empty());
    let bytes = postcard::to_allocvec(&feeder.tracker).unwrap();
    let restored: FraudTracker = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored, feeder.tracker);
    let mut fresh = FraudTracker::new(&FraudSettings::default());
    fresh.restore(restored);
    assert_eq!(fresh, feeder.tracker);
}

#[test]
fn invalid_fraud_config_lists_every_problem() {
    let config = FraudConfig {
        case_event_types: vec!["FIRE_SMOKE".to_string(), "NOPE".to_string()],
        baseline_year: 1900,
        target_drop: 1.5,
        confidence: 1.0,
        population_source: PopulationSource::Seeds,
        timezone_offset_hours: 20,
        warning_pairing_horizon: std::time::Duration::ZERO,
        coverage_max_gap: std::time::Duration::ZERO,
        minimum_coverage: std::time::Duration::from_secs(400 * 86_400),
        history_path: None,
    };
    let problems = config.problems();
    assert_eq!(problems.len(), 9, "{problems:#?}");
    assert!(FraudSettings::from_config(&config).is_err());
    let defaults = FraudSettings::from_config(&FraudConfig::default()).unwrap();
    assert_eq!(defaults, FraudSettings::default());
}

#[test]
fn embedded_seeds_report_covers_every_community_and_district() {
    let registry = GridRegistry::embedded();
    let baseline = FraudBaseline::embedded().unwrap();
    let mut tracker = FraudTracker::new(&FraudSettings::default());
    let start = millis("2026-01-01T00:00:00+08:00");
    let end = millis("2026-12-31T23:59:59+08:00");
    let mut at = start;
    while at < end {
        for slot in 0..registry.communities().len() {
            tracker.observe_stream(
                at,
                CommunityIndex(slot as u32),
                registry.communities().len(),
            );
        }
        at = (at + 600_000).min(end);
    }
    let report = tracker.report(end, &registry, &baseline, &FraudSettings::default());
    assert_eq!(report.communities.len(), 162);
    assert_eq!(report.districts.len(), 5);
    assert_eq!(report.city.population, 1_414_232);
    // A whole year observed without a case against 1,085 in the whole baseline: full drop,
    // on track.
    assert_close(report.city.baseline_cases_covered, 1085.0, 1e-2);
    assert_eq!(report.city.drop, Some(1.0));
    assert_eq!(report.city.on_track, Some(true));
}

/// One case of `tests/fixtures/fraud/rate_ratio_cases.json` (written by `gen_fixtures.py`
/// with SciPy).
#[derive(Debug, serde::Deserialize)]
struct FixtureCase {
    cases_now: f64,
    cases_base: f64,
    exposure_now: f64,
    exposure_base: f64,
    confidence: f64,
    ratio: Option<f64>,
    ratio_ci_low: f64,
    ratio_ci_high: Option<f64>,
    drop: Option<f64>,
    drop_ci_low: Option<f64>,
    drop_ci_high: f64,
}

/// Relative difference (absolute near zero, where relative is meaningless).
fn relative_difference(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs().max(1e-300)
}

#[test]
fn exact_interval_matches_scipy_fixtures_to_1e_9_relative() {
    let text = include_str!("../../tests/fixtures/fraud/rate_ratio_cases.json");
    let cases: Vec<FixtureCase> = serde_json::from_str(text).unwrap();
    assert!(cases.len() >= 20);
    for case in &cases {
        let interval = exact_rate_ratio(
            case.cases_now,
            case.exposure_now,
            case.cases_base,
            case.exposure_base,
            case.confidence,
        )
        .unwrap();
        let context = format!("{case:?} -> {interval:?}");
        let close = |actual: f64, expected: f64| {
            // Ratios relative; drops (= 1 − ratio) to 1e-9 of max(|drop|, ratio scale).
            relative_difference(actual, expected) <= 1e-9
        };
        match (interval.ratio, case.ratio) {
            (Some(actual), Some(expected)) => assert!(close(actual, expected), "ratio {context}"),
            (None, None) => {}
            _ => panic!("ratio presence differs: {context}"),
        }
        if case.ratio_ci_low == 0.0 {
            assert_eq!(interval.ratio_low, 0.0, "{context}");
        } else {
            assert!(
                close(interval.ratio_low, case.ratio_ci_low),
                "low {context}"
            );
        }
        match (interval.ratio_high, case.ratio_ci_high) {
            (Some(actual), Some(expected)) => assert!(close(actual, expected), "high {context}"),
            (None, None) => {}
            _ => panic!("upper bound presence differs: {context}"),
        }
        let drop = interval.to_drop();
        let drop_close = |actual: f64, expected: f64, ratio_scale: f64| {
            (actual - expected).abs() <= 1e-9 * expected.abs().max(ratio_scale).max(1e-300)
        };
        match (drop.drop, case.drop, case.ratio) {
            (Some(actual), Some(expected), Some(ratio)) => {
                assert!(drop_close(actual, expected, ratio), "drop {context}")
            }
            (None, None, _) => {}
            _ => panic!("drop presence differs: {context}"),
        }
        match (drop.drop_low, case.drop_ci_low, case.ratio_ci_high) {
            (Some(actual), Some(expected), Some(ratio_high)) => {
                assert!(
                    drop_close(actual, expected, ratio_high),
                    "drop low {context}"
                )
            }
            (None, None, _) => {}
            _ => panic!("drop lower bound presence differs: {context}"),
        }
        assert!(
            drop_close(drop.drop_high, case.drop_ci_high, case.ratio_ci_low),
            "drop high {context}"
        );
    }
}

proptest! {
    #[test]
    fn drop_lies_inside_its_interval(
        cases_now in 0_u32..500,
        cases_base in 1_u32..500,
        exposure_now in 0.1_f64..1e7,
        exposure_base in 0.1_f64..1e7,
        confidence in 0.5_f64..0.999,
    ) {
        let interval = exact_rate_ratio(
            f64::from(cases_now),
            exposure_now,
            f64::from(cases_base),
            exposure_base,
            confidence,
        )
        .unwrap();
        let drop = interval.to_drop();
        let point = drop.drop.unwrap();
        let low = drop.drop_low.unwrap();
        prop_assert!(low <= point + 1e-12 && point <= drop.drop_high + 1e-12, "{:?}", drop);
        prop_assert!(drop.drop_high <= 1.0);
    }

    #[test]
    fn city_cases_are_the_sum_of_district_and_community_cases(
        counts in proptest::collection::vec((0_u32..3, 0_u32..4), 0..60),
    ) {
        let mut feeder = Feeder::new();
        let now = millis("2026-09-01T00:00:00+08:00");
        let case_types = [
            EventType::FraudCaseFiled,
            EventType::FraudReported,
            EventType::FraudWarning,
            EventType::FraudDissuaded,
        ];
        for (index, (community_slot, type_index)) in counts.iter().enumerate() {
            let event_type = case_types[*type_index as usize];
            feeder.feed(*community_slot, event_type, now - 1000 - index as i64, None);
        }
        let report = feeder.report(now, &baseline_with(&[(COMMUNITY_A, &[1, 2, 3])]));
        let district_cases: u64 = report.districts.iter().map(|entry| entry.cases_ytd).sum();
        let community_cases: u64 = report.communities.iter().map(|entry| entry.cases_ytd).sum();
        prop_assert_eq!(report.city.cases_ytd, district_cases);
        prop_assert_eq!(report.city.cases_ytd, community_cases);
        let district_warnings: u64 = report.districts.iter().map(|entry| entry.warnings).sum();
        prop_assert_eq!(report.city.warnings, district_warnings);
    }
}

/// A pipeline on the embedded seeds with fraud tracking enabled, fed fraud events of one
/// cell, then snapshotted and restored.
#[test]
fn pipeline_feeds_the_tracker_metrics_and_snapshot() {
    use crate::pipeline::{Outputs, Pipeline, PipelineSettings};
    use crate::source::{RecordPayload, SourceRecord};

    let config = crate::config::Config::default();
    let mut pipeline_settings = PipelineSettings::from_config(&config);
    pipeline_settings.window.idle_timeout_millis = i64::MAX;
    let rules =
        crate::rules::RuleSet::embedded_default(pipeline_settings.window.size_millis).unwrap();
    let metrics =
        std::sync::Arc::new(crate::metrics::Metrics::new(&["file"], rules.version()).unwrap());
    let registry = GridRegistry::embedded();
    let new_pipeline = || {
        let mut pipeline = Pipeline::new(
            pipeline_settings.clone(),
            registry.clone(),
            crate::rules::RuleSet::embedded_default(pipeline_settings.window.size_millis).unwrap(),
            metrics.clone(),
            "file",
        );
        pipeline.enable_fraud_tracking(FraudTracker::new(&FraudSettings::default()));
        pipeline
    };
    let mut pipeline = new_pipeline();
    let community = &registry.communities()[0];
    let cell = &registry.cell(community.cells[0]);
    let t0 = millis("2026-05-01T09:00:00+08:00");
    let events = [
        (EventType::FraudWarning, t0, "13800000001"),
        (EventType::FraudDissuaded, t0 + 90_000, "13800000001"),
        (EventType::FraudCaseFiled, t0 + 120_000, "13800000002"),
        (EventType::FireSmoke, t0 + 130_000, ""),
    ];
    let mut outputs = Outputs::default();
    for (position, (event_type, occurred_at, phone)) in events.iter().enumerate() {
        let mut event = IncidentEvent {
            event_id: format!("fraud-test-{position}"),
            community_id: community.id.clone(),
            grid_id: cell.grid_id.clone(),
            event_type: *event_type as i32,
            occurred_at: Some(crate::time::millis_to_timestamp(*occurred_at)),
            ..IncidentEvent::default()
        };
        if !phone.is_empty() {
            event
                .attributes
                .insert("phone".to_string(), phone.to_string());
        }
        let record = SourceRecord {
            payload: RecordPayload::Event(Box::new(event)),
            partition: 0,
            position: position as u64,
        };
        pipeline.process(record, t0 + 3_600_000, &mut outputs);
    }
    assert!(
        outputs.dead_letters.is_empty(),
        "{:?}",
        outputs.dead_letters
    );
    let tracker = pipeline.fraud_tracker().unwrap();
    let counts = tracker.counts(2026, CommunityIndex(0));
    assert_eq!(
        (
            counts.warnings,
            counts.dissuaded,
            counts.cases_filed,
            counts.paired_dissuasions
        ),
        (1, 1, 1, 1)
    );
    // Paired by the (pseudonymized) phone: 90 s.
    assert_close(counts.warning_to_dissuasion_seconds_sum, 90.0, 1e-12);
    // What the shell does whenever it writes a batch's outputs.
    pipeline.flush_metrics();
    let text = metrics.encode_text();
    let district = &community.district_code;
    let id = &community.id;
    for expected in [
        format!("gridwatch_fraud_warning_to_dissuasion_seconds_count{{district=\"{district}\"}} 1"),
        format!("gridwatch_fraud_warnings_total{{community=\"{id}\",district=\"{district}\"}} 1"),
        format!(
            "gridwatch_incidents_total{{community=\"{id}\",district=\"{district}\",event_type=\"FIRE_SMOKE\"}} 1"
        ),
    ] {
        assert!(text.contains(&expected), "missing {expected}");
    }
    let snapshot = crate::state::snapshot(&pipeline).unwrap();
    let mut restored = new_pipeline();
    crate::state::restore(&mut restored, &snapshot).unwrap();
    assert_eq!(restored.fraud_tracker(), pipeline.fraud_tracker());
}

#[test]
fn huge_counts_still_give_a_finite_interval() {
    let interval = exact_rate_ratio(4.0e7, 1.0e9, 1.0e8, 1.0e9, 0.95).unwrap();
    assert_close(interval.ratio.unwrap(), 0.4, 1e-12);
    assert!(interval.ratio_low < 0.4 && interval.ratio_high.unwrap() > 0.4);
    assert!(interval.ratio_high.unwrap() - interval.ratio_low < 0.001);
}

#[test]
fn fraud_section_of_the_config_file_is_parsed_and_validated() {
    let config = crate::config::Config::from_toml_str(
        "[fraud]\ncase_event_types = [\"FRAUD_REPORTED\", \"FRAUD_CASE_FILED\"]\nbaseline_year = 2024\ntarget_drop = 0.5\nwarning_pairing_horizon = \"7d\"",
    )
    .unwrap();
    let settings = FraudSettings::from_config(&config.fraud).unwrap();
    assert_eq!(
        settings.case_event_types,
        vec![EventType::FraudReported, EventType::FraudCaseFiled]
    );
    assert_eq!((settings.baseline_year, settings.target_drop), (2024, 0.5));
    assert_eq!(
        settings.warning_pairing_horizon_millis,
        7 * 24 * HOUR_MILLIS
    );
    let error = crate::config::Config::from_toml_str(
        "[fraud]\ncase_event_types = [\"FRAUD_WARNING\"]\nconfidence = 1.5",
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("fraud.case_event_types") && text.contains("fraud.confidence"),
        "{text}"
    );
    assert!(crate::config::Config::from_toml_str("[fraud]\nbaseline = 2023").is_err());
}

/// The header of an import file (the baseline's shape).
const HISTORY_HEADER: &str =
    "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n";

#[test]
fn imported_months_give_the_exact_drop_and_interval_of_their_counts() {
    let feeder = Feeder::new();
    let now = millis("2026-04-01T00:00:00+08:00");
    let csv = format!(
        "{HISTORY_HEADER}{COMMUNITY_A},2026,1,9,2,1\n{COMMUNITY_A},2026,2,9,2,2\n{COMMUNITY_A},2026,3,9,2,0\n"
    );
    let history = history::ImportedHistory::from_csv(&csv, &feeder.registry, now, 8).unwrap();
    assert_eq!(history.len(), 3);
    let mut ledger = FraudLedger::new(feeder.registry.communities().len());
    ledger.add_partial(&history.to_partial(now), &feeder.registry);
    let baseline = baseline_with(&[(COMMUNITY_A, &[4, 3, 3, 10, 10, 10, 10, 10, 10, 10, 10, 10])]);
    let settings = FraudSettings::default();
    let report = ledger.report(now, &feeder.registry, &baseline, &settings);
    let entry = community(&report, COMMUNITY_A);
    assert_eq!((entry.cases_imported, entry.cases_streamed), (3, 0));
    assert_close(entry.covered_days_imported, 90.0, 1e-9);
    assert_close(entry.baseline_cases_covered, 10.0, 1e-9);
    let expected = exact_rate_ratio(3.0, 10.0, 100.0, 100.0, 0.95)
        .unwrap()
        .to_drop();
    assert_close(entry.drop.unwrap(), 0.7, 1e-12);
    assert_close(
        entry.drop_ci_low.unwrap(),
        expected.drop_low.unwrap(),
        1e-12,
    );
    assert_close(entry.drop_ci_high.unwrap(), expected.drop_high, 1e-12);
    assert_eq!(entry.status, FraudStatus::OnTrack);
}

#[test]
fn an_imported_month_replaces_what_the_stream_counted_in_it_and_later_months_add_up() {
    let mut feeder = Feeder::new();
    let now = millis("2026-04-15T00:00:00+08:00");
    // The stream ran from 20 March: it saw 2 cases in March and 1 in April.
    feeder.cover(millis("2026-03-20T00:00:00+08:00"), now);
    feeder.feed_many(
        0,
        EventType::FraudCaseFiled,
        2,
        millis("2026-03-25T10:00:00+08:00"),
    );
    feeder.feed_many(
        0,
        EventType::FraudCaseFiled,
        1,
        millis("2026-04-02T10:00:00+08:00"),
    );
    // The import covers January to March whole, March's 2 cases included.
    let csv = format!(
        "{HISTORY_HEADER}{COMMUNITY_A},2026,1,0,0,1\n{COMMUNITY_A},2026,2,0,0,0\n{COMMUNITY_A},2026,3,0,0,2\n"
    );
    let history = history::ImportedHistory::from_csv(&csv, &feeder.registry, now, 8).unwrap();
    let mut ledger = FraudLedger::new(feeder.registry.communities().len());
    ledger.add_tracker(&feeder.tracker);
    ledger.add_partial(&history.to_partial(now), &feeder.registry);
    let report = ledger.report(
        now,
        &feeder.registry,
        &baseline_with(&[]),
        &FraudSettings::default(),
    );
    let entry = community(&report, COMMUNITY_A);
    assert_eq!((entry.cases_imported, entry.cases_streamed), (3, 1));
    assert_eq!(entry.cases_ytd, 4, "March is counted once, from the import");
    assert_close(entry.covered_days, 31.0 + 28.0 + 31.0 + 14.0, 1e-6);
    // Importing the same history again changes nothing.
    let before = report.clone();
    ledger.add_partial(&history.to_partial(now), &feeder.registry);
    let mut fresh = FraudLedger::new(feeder.registry.communities().len());
    fresh.add_tracker(&feeder.tracker);
    fresh.add_partial(&history.to_partial(now), &feeder.registry);
    let again = fresh.report(
        now,
        &feeder.registry,
        &baseline_with(&[]),
        &FraudSettings::default(),
    );
    assert_eq!(again, before);
    let reparsed =
        history::ImportedHistory::from_csv(&history.to_csv(), &feeder.registry, now, 8).unwrap();
    assert_eq!(reparsed, history);
    assert_eq!(reparsed.to_csv(), history.to_csv());
}

#[test]
fn a_malformed_history_lists_every_bad_row_and_imports_nothing() {
    let registry = test_registry();
    let now = millis("2026-04-15T00:00:00+08:00");
    let csv = format!(
        "{HISTORY_HEADER}{COMMUNITY_A},2026,1,0,0,1\n\
         999999999999,2026,1,0,0,1\n\
         {COMMUNITY_A},2026,13,0,0,1\n\
         {COMMUNITY_A},2026,1,0,0,5\n\
         {COMMUNITY_B},2026,2,-1,0,1\n\
         {COMMUNITY_B},2026,6,0,0,1\n\
         {COMMUNITY_C},2026,2,0,0\n"
    );
    let error = history::ImportedHistory::from_csv(&csv, &registry, now, 8).unwrap_err();
    let history::HistoryError::Invalid { problems } = &error;
    assert_eq!(problems.len(), 6, "{problems:#?}");
    for (line, expected) in [
        (3, "not in the registry"),
        (4, "month 13"),
        (5, "second row"),
        (6, "fraud_warnings"),
        (7, "in the future"),
        (8, "fields"),
    ] {
        assert!(
            problems
                .iter()
                .any(|problem| problem.starts_with(&format!("line {line}:"))
                    && problem.contains(expected)),
            "line {line} should say {expected:?}: {problems:#?}"
        );
    }
    let missing_column = "community_id,year,month\n";
    let error = history::ImportedHistory::from_csv(missing_column, &registry, now, 8).unwrap_err();
    assert!(error.to_string().contains("fraud_cases_filed"), "{error}");
}
