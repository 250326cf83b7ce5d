//! Tests of the simulator: determinism, rates, daily cycles, scenarios and bounded disorder.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::generator::capable_device_indexes;
use super::profiles::{
    is_fraud_type, local_hour_of_day, next_hour_boundary, normalized_profile, DAYS_PER_YEAR,
    DAY_MILLIS, HOUR_MILLIS, MINUTE_MILLIS,
};
use super::scenarios::parse_duration_millis;
use super::*;
use crate::event::ALL_EVENT_TYPES;
use crate::grid::{CellIndex, GridRegistry};
use crate::proto::{Crs, EventType, IncidentEvent};
use crate::time::timestamp_to_millis;

const WEEK_MILLIS: i64 = 7 * 24 * HOUR_MILLIS;

/// The embedded registry (also used by the source's tests).
pub(crate) fn registry() -> Arc<GridRegistry> {
    GridRegistry::embedded()
}

/// Default settings with `seed` (also used by the source's tests).
pub(crate) fn settings_with_seed(seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        seed,
        ..SimulatorSettings::default()
    }
}

fn occurred_millis(event: &IncidentEvent) -> i64 {
    timestamp_to_millis(event.occurred_at.as_ref().unwrap())
}

fn event_type_of(event: &IncidentEvent) -> EventType {
    EventType::try_from(event.event_type).unwrap()
}

/// Every event with event time in `[start, end)`, in delivery order (duplicates included).
fn events_until(simulator: &mut Simulator, end_millis: i64) -> Vec<IncidentEvent> {
    let max_delay = simulator.settings().max_delivery_delay_millis;
    let mut events = Vec::new();
    loop {
        let event = simulator.next_event();
        let occurred = occurred_millis(&event);
        if occurred >= end_millis + max_delay {
            return events;
        }
        if occurred < end_millis {
            events.push(event);
        }
    }
}

/// The cell with the most devices (a busy cell, for scenario tests).
fn busiest_cell(registry: &GridRegistry) -> CellIndex {
    (0..registry.cells().len() as u32)
        .map(CellIndex)
        .max_by_key(|cell| registry.devices_in_cell(*cell).len())
        .unwrap()
}

fn assert_within_five_sigma(observed: f64, expected: f64, what: &str) {
    let tolerance = 5.0 * expected.sqrt() + 1.0;
    assert!(
        (observed - expected).abs() <= tolerance,
        "{what}: observed {observed}, expected {expected} ± {tolerance}"
    );
}

#[test]
fn same_seed_gives_the_same_events_and_another_seed_different_ones() {
    let first: Vec<IncidentEvent> = {
        let mut simulator = Simulator::new(settings_with_seed(7), registry()).unwrap();
        (0..1000).map(|_| simulator.next_event()).collect()
    };
    let again: Vec<IncidentEvent> = {
        let mut simulator = Simulator::new(settings_with_seed(7), registry()).unwrap();
        (0..1000).map(|_| simulator.next_event()).collect()
    };
    let other: Vec<IncidentEvent> = {
        let mut simulator = Simulator::new(settings_with_seed(8), registry()).unwrap();
        (0..1000).map(|_| simulator.next_event()).collect()
    };
    assert_eq!(first, again);
    let differing = first
        .iter()
        .zip(&other)
        .filter(|(left, right)| {
            (left.grid_id.as_str(), left.event_type, left.occurred_at)
                != (right.grid_id.as_str(), right.event_type, right.occurred_at)
        })
        .count();
    assert!(differing > 900, "only {differing} of 1000 events differ");
}

#[test]
fn event_ids_are_unique_except_for_identical_duplicates() {
    let settings = SimulatorSettings {
        duplicate_fraction: 0.05,
        ..settings_with_seed(3)
    };
    let mut simulator = Simulator::new(settings, registry()).unwrap();
    let mut seen: HashMap<String, IncidentEvent> = HashMap::new();
    let mut duplicates = 0_u32;
    for _ in 0..20_000 {
        let event = simulator.next_event();
        assert!(event.event_id.starts_with("sim-3-"), "{}", event.event_id);
        match seen.get(&event.event_id) {
            Some(original) => {
                assert_eq!(original, &event, "a duplicate must repeat the content");
                duplicates += 1;
            }
            None => {
                seen.insert(event.event_id.clone(), event);
            }
        }
    }
    // 5 % of ~20,000 generated events, with wide tolerance.
    assert!(
        (700..=1300).contains(&duplicates),
        "{duplicates} duplicates"
    );
}

#[test]
fn weekly_counts_per_type_match_the_configured_rates() {
    let settings = SimulatorSettings {
        duplicate_fraction: 0.0,
        ..settings_with_seed(11)
    };
    let start = settings.start_millis;
    let mut simulator = Simulator::new(settings, registry()).unwrap();
    let events = events_until(&mut simulator, start + WEEK_MILLIS);
    let mut counts: BTreeMap<i32, f64> = BTreeMap::new();
    for event in &events {
        *counts.entry(event.event_type).or_default() += 1.0;
    }
    let mut checked_types = 0;
    for event_type in ALL_EVENT_TYPES {
        let expected = 7.0 * simulator.expected_daily_count(event_type);
        if expected == 0.0 {
            continue;
        }
        checked_types += 1;
        let observed = counts.get(&(event_type as i32)).copied().unwrap_or(0.0);
        assert_within_five_sigma(observed, expected, &format!("{event_type:?}"));
    }
    assert!(checked_types >= 10, "only {checked_types} types can occur");
}

#[test]
fn fraud_case_rate_scales_with_population_as_documented() {
    let registry = registry();
    let simulator = Simulator::new(settings_with_seed(1), Arc::clone(&registry)).unwrap();
    let population: f64 = registry
        .communities()
        .iter()
        .filter(|community| !community.cells.is_empty())
        .map(|community| f64::from(community.population))
        .sum();
    assert!(population > 0.0);
    let expected_per_year = 8.0 * population / 10_000.0;
    let configured_per_year =
        simulator.expected_daily_count(EventType::FraudCaseFiled) * DAYS_PER_YEAR;
    assert!(
        (configured_per_year - expected_per_year).abs() < 1e-6 * expected_per_year,
        "{configured_per_year} vs {expected_per_year}"
    );
}

#[test]
fn daily_cycle_puts_intrusions_at_night_and_fraud_in_office_hours() {
    let settings = SimulatorSettings {
        rate_multiplier: 4.0,
        duplicate_fraction: 0.0,
        ..settings_with_seed(5)
    };
    let start = settings.start_millis;
    let mut simulator = Simulator::new(settings, registry()).unwrap();
    let events = events_until(&mut simulator, start + 2 * 24 * HOUR_MILLIS);
    let count_in_hours = |types: &[EventType], hours: std::ops::Range<usize>| {
        events
            .iter()
            .filter(|event| types.contains(&event_type_of(event)))
            .filter(|event| hours.contains(&local_hour_of_day(occurred_millis(event))))
            .count() as f64
    };
    let intrusion_types = [EventType::PerimeterIntrusion, EventType::Tripwire];
    let intrusions_at_night = count_in_hours(&intrusion_types, 0..5);
    let intrusions_by_day = count_in_hours(&intrusion_types, 9..14);
    assert!(
        intrusions_at_night > 3.0 * intrusions_by_day,
        "night {intrusions_at_night} vs day {intrusions_by_day}"
    );
    let fraud_types = [EventType::FraudWarning, EventType::FraudDissuaded];
    let fraud_at_night = count_in_hours(&fraud_types, 0..5);
    let fraud_by_day = count_in_hours(&fraud_types, 9..14);
    assert!(
        fraud_by_day > 5.0 * fraud_at_night.max(1.0),
        "day {fraud_by_day} vs night {fraud_at_night}"
    );
}

#[test]
fn delivery_order_disorder_is_bounded_by_the_max_delivery_delay() {
    let settings = SimulatorSettings {
        rate_multiplier: 50.0,
        max_delivery_delay_millis: 3_000,
        duplicate_fraction: 0.01,
        ..settings_with_seed(9)
    };
    let mut simulator = Simulator::new(settings, registry()).unwrap();
    let mut latest_occurred = i64::MIN;
    let mut latest_delivery = i64::MIN;
    let mut largest_lag = 0;
    for _ in 0..50_000 {
        let (delivery, event) = simulator.next_delivery();
        let occurred = occurred_millis(&event);
        let received = timestamp_to_millis(event.received_at.as_ref().unwrap());
        assert!(delivery >= latest_delivery, "delivery order");
        assert!((occurred..=occurred + 3_000).contains(&received));
        assert!((received..=occurred + 3_000).contains(&delivery));
        latest_delivery = delivery;
        latest_occurred = latest_occurred.max(occurred);
        largest_lag = largest_lag.max(latest_occurred - occurred);
    }
    assert!(largest_lag <= 3_000, "lag {largest_lag}");
    assert!(
        largest_lag > 0,
        "events should arrive out of order sometimes"
    );
}

#[test]
fn every_event_resolves_to_its_community_in_the_registry() {
    let settings = SimulatorSettings {
        coordinate_fraction: 0.2,
        device_only_fraction: 0.3,
        ..settings_with_seed(21)
    };
    let registry = registry();
    let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
    let mut coordinate_events = 0;
    let mut device_only_events = 0;
    for _ in 0..20_000 {
        let event = simulator.next_event();
        let cell = registry
            .resolve(&event)
            .unwrap_or_else(|error| panic!("{event:?} does not resolve: {error}"));
        assert_eq!(registry.community_of(cell).id, event.community_id);
        if event.lat.is_some() {
            coordinate_events += 1;
            assert!(event.grid_id.is_empty() && event.device_id.is_empty());
            assert!(event.crs == Crs::Gcj02 as i32 || event.crs == Crs::Bd09 as i32);
        } else if event.grid_id.is_empty() {
            device_only_events += 1;
            assert_eq!(registry.cell_by_device(&event.device_id), Some(cell));
        }
        let event_type = event_type_of(&event);
        if is_fraud_type(event_type) {
            assert!(event.device_id.is_empty());
            let phone = event.attributes.get("phone").unwrap();
            assert_eq!(phone.len(), 11);
            assert!(phone.starts_with('1'));
            assert!(event.attributes.contains_key("channel"));
        } else if !event.device_id.is_empty() {
            let device = registry
                .devices_in_cell(cell)
                .iter()
                .find(|device| device.device_id == event.device_id)
                .unwrap();
            assert!(device.event_types.contains(&event_type));
        }
        assert!(event.severity <= 4);
    }
    assert!(coordinate_events > 3_000, "{coordinate_events}");
    assert!(device_only_events > 3_000, "{device_only_events}");
}

fn fraud_count_in_community(
    events: &[IncidentEvent],
    community_id: &str,
    window: std::ops::Range<i64>,
) -> f64 {
    events
        .iter()
        .filter(|event| event.community_id == community_id)
        .filter(|event| is_fraud_type(event_type_of(event)))
        .filter(|event| window.contains(&occurred_millis(event)))
        .count() as f64
}

#[test]
fn fraud_wave_multiplies_the_community_fraud_counts() {
    let registry = registry();
    let community = registry
        .communities()
        .iter()
        .filter(|community| !community.cells.is_empty())
        .max_by_key(|community| community.population)
        .unwrap()
        .clone();
    let settings = SimulatorSettings {
        duplicate_fraction: 0.0,
        scenarios: vec![Scenario::FraudWave {
            community_id: community.id.clone(),
            start: ScenarioTime::AfterStart(24 * HOUR_MILLIS),
            duration: ScenarioDuration(24 * HOUR_MILLIS),
            multiplier: 10.0,
        }],
        ..settings_with_seed(13)
    };
    let start = settings.start_millis;
    let baseline_simulator = Simulator::new(settings_with_seed(13), Arc::clone(&registry)).unwrap();
    let community_daily_fraud: f64 = baseline_simulator
        .entries
        .iter()
        .filter(|entry| is_fraud_type(entry.event_type))
        .filter(|entry| registry.community_of(entry.cell).id == community.id)
        .map(|entry| entry.mean_rate_per_millis * DAY_MILLIS)
        .sum();
    let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
    let events = events_until(&mut simulator, start + 2 * 24 * HOUR_MILLIS);
    let day = 24 * HOUR_MILLIS;
    let before = fraud_count_in_community(&events, &community.id, start..start + day);
    let during = fraud_count_in_community(&events, &community.id, start + day..start + 2 * day);
    assert_within_five_sigma(before, community_daily_fraud, "before the wave");
    assert_within_five_sigma(during, 10.0 * community_daily_fraud, "during the wave");
    assert!(
        during > 3.0 * before.max(1.0),
        "during {during}, before {before}"
    );
}

#[test]
fn intrusion_burst_produces_at_least_per_minute_times_minutes_events_in_the_cell() {
    let registry = registry();
    let cell = busiest_cell(&registry);
    let grid_id = registry.cell(cell).grid_id.clone();
    let settings = SimulatorSettings {
        scenarios: vec![Scenario::IntrusionBurst {
            grid_id: grid_id.clone(),
            start: ScenarioTime::AfterStart(30 * MINUTE_MILLIS),
            duration: ScenarioDuration(10 * MINUTE_MILLIS),
            per_minute: 12,
        }],
        ..settings_with_seed(17)
    };
    let burst_start = settings.start_millis + 30 * MINUTE_MILLIS;
    let burst_end = burst_start + 10 * MINUTE_MILLIS;
    let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
    let events = events_until(&mut simulator, burst_end + HOUR_MILLIS);
    let burst_events: Vec<&IncidentEvent> = events
        .iter()
        .filter(|event| {
            event.attributes.get("scenario").map(String::as_str) == Some("intrusion_burst")
        })
        .collect();
    let unique_ids: std::collections::BTreeSet<&str> = burst_events
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    assert!(unique_ids.len() >= 120, "{} burst events", unique_ids.len());
    for event in burst_events {
        assert_eq!(event.grid_id, grid_id);
        assert_eq!(event_type_of(event), EventType::PerimeterIntrusion);
        assert!((burst_start..burst_end).contains(&occurred_millis(event)));
    }
}

#[test]
fn device_outage_reports_offline_devices_then_silences_the_cell() {
    let registry = registry();
    let cell = busiest_cell(&registry);
    let grid_id = registry.cell(cell).grid_id.clone();
    let device_count = registry.devices_in_cell(cell).len();
    assert!(device_count > 0);
    let settings = SimulatorSettings {
        rate_multiplier: 20.0,
        duplicate_fraction: 0.0,
        scenarios: vec![Scenario::DeviceOutage {
            grid_id,
            start: ScenarioTime::AfterStart(2 * HOUR_MILLIS),
            duration: ScenarioDuration(2 * HOUR_MILLIS),
        }],
        ..settings_with_seed(19)
    };
    let outage_start = settings.start_millis + 2 * HOUR_MILLIS;
    let outage_end = outage_start + 2 * HOUR_MILLIS;
    let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
    let events = events_until(&mut simulator, outage_end + 2 * HOUR_MILLIS);
    let mut offline_reports = 0;
    let mut before = 0;
    let mut after = 0;
    for event in &events {
        if registry.resolve(event).ok() != Some(cell) {
            continue;
        }
        let occurred = occurred_millis(event);
        if event.attributes.get("scenario").map(String::as_str) == Some("device_outage") {
            assert_eq!(event_type_of(event), EventType::DeviceOffline);
            offline_reports += 1;
            continue;
        }
        assert!(
            !(outage_start..outage_end).contains(&occurred),
            "event during the outage: {event:?}"
        );
        if occurred < outage_start {
            before += 1;
        } else {
            after += 1;
        }
    }
    assert_eq!(offline_reports, device_count);
    assert!(before > 0 && after > 0, "before {before}, after {after}");
}

#[test]
fn fire_scenario_bursts_smoke_alarms_in_the_cell_within_minutes() {
    let registry = registry();
    let cell = (0..registry.cells().len() as u32)
        .map(CellIndex)
        .find(|cell| capable_device_indexes(&registry, *cell, EventType::FireSmoke).len() >= 2)
        .unwrap_or_else(|| busiest_cell(&registry));
    let grid_id = registry.cell(cell).grid_id.clone();
    let settings = SimulatorSettings {
        scenarios: vec![Scenario::Fire {
            grid_id: grid_id.clone(),
            at: ScenarioTime::AfterStart(HOUR_MILLIS),
        }],
        ..settings_with_seed(23)
    };
    let fire_at = settings.start_millis + HOUR_MILLIS;
    let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
    let events = events_until(&mut simulator, fire_at + HOUR_MILLIS);
    let fire_events: Vec<&IncidentEvent> = events
        .iter()
        .filter(|event| event.attributes.get("scenario").map(String::as_str) == Some("fire"))
        .collect();
    assert!(fire_events.len() >= 3, "{} fire events", fire_events.len());
    for event in &fire_events {
        assert_eq!(event.grid_id, grid_id);
        assert_eq!(event_type_of(event), EventType::FireSmoke);
        assert_eq!(event.severity, 1);
        assert!((fire_at..fire_at + 10 * MINUTE_MILLIS).contains(&occurred_millis(event)));
    }
}

#[test]
fn settings_parse_from_toml_with_offsets_and_rfc3339_times() {
    let text = r#"
        seed = 42
        rate_multiplier = 60.0

        [[scenarios]]
        kind = "fire"
        grid_id = "41061100100101"
        at = "+1h30m"

        [[scenarios]]
        kind = "fraud_wave"
        community_id = "410611001001"
        start = "2026-03-02T09:00:00+08:00"
        duration = "8h"
        multiplier = 5.0
    "#;
    let settings: SimulatorSettings = toml::from_str(text).unwrap();
    assert_eq!(settings.seed, 42);
    assert_eq!(settings.duplicate_fraction, 0.002);
    assert_eq!(
        settings.scenarios[0],
        Scenario::Fire {
            grid_id: "41061100100101".to_string(),
            at: ScenarioTime::AfterStart(90 * MINUTE_MILLIS),
        }
    );
    assert_eq!(
        settings.scenarios[1],
        Scenario::FraudWave {
            community_id: "410611001001".to_string(),
            start: ScenarioTime::At(1_772_413_200_000),
            duration: ScenarioDuration(8 * HOUR_MILLIS),
            multiplier: 5.0,
        }
    );
    let round_trip: SimulatorSettings =
        toml::from_str(&toml::to_string(&settings).unwrap()).unwrap();
    assert_eq!(round_trip, settings);
}

#[test]
fn unknown_setting_fields_and_bad_durations_are_rejected() {
    assert!(toml::from_str::<SimulatorSettings>("sede = 1").is_err());
    let unknown_scenario_field = r#"
        [[scenarios]]
        kind = "fire"
        grid_id = "41061100100101"
        at = "+1h"
        size = "big"
    "#;
    assert!(toml::from_str::<SimulatorSettings>(unknown_scenario_field).is_err());
    assert!(parse_duration_millis("10 parsecs").is_err());
    assert_eq!(parse_duration_millis("10 minutes"), Ok(600_000));
    assert!(parse_duration_millis("h").is_err());
    assert!(parse_duration_millis("99999999999999999d").is_err());
    assert_eq!(parse_duration_millis("1d2h3m4s5ms"), Ok(93_784_005));
}

#[test]
fn a_steady_rate_gives_every_hour_the_same_total_and_its_own_mix() {
    let settings = SimulatorSettings {
        steady_rate_per_second: Some(0.5),
        duplicate_fraction: 0.0,
        ..settings_with_seed(17)
    };
    // The default start is a local midnight.
    let start = settings.start_millis;
    let mut simulator = Simulator::new(settings, registry()).unwrap();
    let events = events_until(&mut simulator, start + 20 * HOUR_MILLIS);
    let in_local_hour = |hour: usize| {
        events
            .iter()
            .filter(move |event| local_hour_of_day(occurred_millis(event)) == hour)
    };
    let intrusion_types = [EventType::PerimeterIntrusion, EventType::Tripwire];
    let intrusion_share = |hour: usize| {
        let intrusions = in_local_hour(hour)
            .filter(|event| intrusion_types.contains(&event_type_of(event)))
            .count() as f64;
        intrusions / in_local_hour(hour).count() as f64
    };
    // Without the steady rate, 02:00 has a tenth of 18:00's traffic (the profiles).
    for hour in [2, 18] {
        let observed = in_local_hour(hour).count() as f64;
        assert_within_five_sigma(observed, 0.5 * 3600.0, &format!("{hour}:00"));
    }
    assert!(
        intrusion_share(2) > 3.0 * intrusion_share(18),
        "intrusions are {} of 02:00's events and {} of 18:00's",
        intrusion_share(2),
        intrusion_share(18)
    );
}

#[test]
fn a_backfill_from_the_expected_start_ends_near_its_end_at_any_hour() {
    let base = settings_with_seed(19);
    let probe = Simulator::new(base.clone(), registry()).unwrap();
    // Ends at 03:00 local (the quietest hours before it) and at 19:00 (the busiest).
    for end in [
        base.start_millis + 3 * HOUR_MILLIS,
        base.start_millis + 19 * HOUR_MILLIS,
    ] {
        let start = probe.start_for_expected_events(5_000, end);
        assert!(start < end);
        let settings = SimulatorSettings {
            start_millis: start,
            ..base.clone()
        };
        let mut simulator = Simulator::new(settings, registry()).unwrap();
        let delivered_by_the_end = events_until(&mut simulator, end).len() as f64;
        assert_within_five_sigma(delivered_by_the_end, 5_000.0, &format!("ending at {end}"));
    }
    let end = base.start_millis;
    assert_eq!(probe.start_for_expected_events(0, end), end);
    assert_eq!(
        probe.start_for_expected_events(u64::MAX, end),
        0,
        "never before 1970"
    );
}

#[test]
fn invalid_settings_and_unknown_scenario_targets_are_errors() {
    let bad_fraction = SimulatorSettings {
        coordinate_fraction: 1.5,
        ..SimulatorSettings::default()
    };
    assert!(matches!(
        Simulator::new(bad_fraction, registry()),
        Err(SimulatorError::InvalidSetting {
            name: "coordinate_fraction",
            ..
        })
    ));
    let bad_multiplier = SimulatorSettings {
        rate_multiplier: f64::NAN,
        ..SimulatorSettings::default()
    };
    assert!(Simulator::new(bad_multiplier, registry()).is_err());
    for bad_rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let bad_steady_rate = SimulatorSettings {
            steady_rate_per_second: Some(bad_rate),
            ..SimulatorSettings::default()
        };
        assert!(matches!(
            Simulator::new(bad_steady_rate, registry()),
            Err(SimulatorError::InvalidSetting {
                name: "steady_rate_per_second",
                ..
            })
        ));
    }
    let absurd_start = SimulatorSettings {
        start_millis: i64::MAX,
        ..SimulatorSettings::default()
    };
    assert!(matches!(
        Simulator::new(absurd_start, registry()),
        Err(SimulatorError::InvalidSetting {
            name: "start_millis",
            ..
        })
    ));
    let unknown_grid = SimulatorSettings {
        scenarios: vec![Scenario::Fire {
            grid_id: "00000000000000".to_string(),
            at: ScenarioTime::AfterStart(0),
        }],
        ..SimulatorSettings::default()
    };
    assert!(matches!(
        Simulator::new(unknown_grid, registry()),
        Err(SimulatorError::InvalidScenario {
            index: 0,
            kind: "fire",
            ..
        })
    ));
}

#[test]
fn local_hours_follow_china_standard_time() {
    // 2026-03-02T00:00:00+08:00 is local midnight.
    let midnight = 1_772_380_800_000;
    assert_eq!(local_hour_of_day(midnight), 0);
    assert_eq!(local_hour_of_day(midnight - 1), 23);
    assert_eq!(local_hour_of_day(midnight + 13 * HOUR_MILLIS + 5), 13);
    assert_eq!(next_hour_boundary(midnight), midnight + HOUR_MILLIS);
    assert_eq!(next_hour_boundary(midnight - 1), midnight);
}

#[test]
fn normalized_profiles_have_mean_one() {
    for event_type in ALL_EVENT_TYPES {
        let mean = normalized_profile(event_type).iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-9, "{event_type:?}: {mean}");
    }
}
