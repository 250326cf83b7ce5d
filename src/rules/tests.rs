//! Engine tests: immediate and threshold lifecycles, determinism and snapshots.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::event::default_severity;
use crate::grid::{Cell, CellIndex, Community, CommunityIndex, District};
use crate::proto::{AlertStatus, EventType, IncidentEvent};
use crate::time::timestamp_to_millis;

pub(super) const MINUTE: i64 = 60_000;
/// A minute-aligned event time (2023-11-14).
pub(super) const T0: i64 = 28_333_333 * MINUTE;

const TEST_RULES: &str = r#"
[[rule]]
name = "life_safety"
kind = "immediate"
event_types = ["FIRE_SMOKE", "GAS_LEAK", "SOS"]
cooldown = "5m"

[[rule]]
name = "perimeter_intrusion_burst"
kind = "threshold"
event_types = ["PERIMETER_INTRUSION"]
window = "15m"
min_count = 3
"#;

/// A registry of one district, one community and four square cells `41061100100100..=03`.
pub(super) fn tiny_registry() -> GridRegistry {
    let districts = vec![District {
        code: "410611".to_string(),
        name_zh: "淇滨区".to_string(),
        name_en: "Qibin".to_string(),
    }];
    let communities = vec![Community {
        id: "410611001001".to_string(),
        name: "测试小区".to_string(),
        district_code: "410611".to_string(),
        population: 1_000,
        centroid: (114.302, 35.741),
        cells: Vec::new(),
    }];
    let cells = (0..4_u32)
        .map(|cell_number| {
            let west = 114.300 + f64::from(cell_number) * 0.001;
            Cell {
                grid_id: format!("410611001001{cell_number:02}"),
                community: CommunityIndex(0),
                polygon: geo::Polygon::new(
                    geo::LineString::from(vec![
                        (west, 35.740),
                        (west + 0.001, 35.740),
                        (west + 0.001, 35.741),
                        (west, 35.741),
                        (west, 35.740),
                    ]),
                    Vec::new(),
                ),
            }
        })
        .collect();
    GridRegistry::from_parts(districts, communities, cells, Vec::new())
        .expect("tiny registry is valid")
}

/// Feeds an engine through its public API with events placed in the tiny registry's cells.
pub(super) struct Harness {
    /// The engine under test.
    pub(super) engine: RuleEngine,
    /// The registry the events' cells come from.
    pub(super) registry: GridRegistry,
}

impl Harness {
    pub(super) fn new(rules_text: &str) -> Harness {
        let rules = RuleSet::from_toml_str(rules_text, MINUTE).expect("valid test rules");
        Harness {
            engine: RuleEngine::new(rules),
            registry: tiny_registry(),
        }
    }

    pub(super) fn event(
        &mut self,
        event_id: &str,
        event_type: EventType,
        device_id: &str,
        cell: u32,
        occurred_at_millis: i64,
    ) -> Vec<Alert> {
        let incident_event = IncidentEvent {
            event_id: event_id.to_string(),
            device_id: device_id.to_string(),
            event_type: event_type as i32,
            ..IncidentEvent::default()
        };
        let accepted_event = AcceptedEvent {
            event: &incident_event,
            event_type,
            severity: default_severity(event_type),
            occurred_at_millis,
            cell: CellIndex(cell),
        };
        let mut out = Vec::new();
        self.engine
            .on_event(&accepted_event, &self.registry, &mut out);
        out
    }

    pub(super) fn watermark(&mut self, watermark_millis: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        self.engine
            .on_watermark(watermark_millis, &self.registry, &mut out);
        out
    }

    pub(super) fn counters(&self, rule_name: &str) -> RuleCounters {
        self.engine
            .stats()
            .per_rule
            .get(rule_name)
            .copied()
            .unwrap_or_default()
    }
}

pub(super) fn millis(timestamp: &Option<pbjson_types::Timestamp>) -> Option<i64> {
    timestamp.as_ref().map(timestamp_to_millis)
}

pub(super) fn single(alerts: Vec<Alert>) -> Alert {
    assert_eq!(
        alerts.len(),
        1,
        "expected exactly one alert, got {alerts:#?}"
    );
    alerts.into_iter().next().unwrap()
}

// ---------------------------------------------------------------- immediate

#[test]
fn immediate_rule_fires_at_once_on_the_first_event() {
    let mut harness = Harness::new(TEST_RULES);
    let alert = single(harness.event("e1", EventType::FireSmoke, "dev-a", 1, T0 + 1_234));
    assert_eq!(alert.status, AlertStatus::Firing as i32);
    assert_eq!(alert.rule, "life_safety");
    assert_eq!(alert.rule_kind, "immediate");
    assert_eq!(alert.grid_id, "41061100100101");
    assert_eq!(alert.community_id, "410611001001");
    assert_eq!(alert.district_id, "410611");
    assert_eq!(alert.event_type, EventType::FireSmoke as i32);
    assert_eq!(alert.severity, 1);
    assert_eq!(millis(&alert.starts_at), Some(T0 + 1_234));
    assert_eq!(millis(&alert.updated_at), Some(T0 + 1_234));
    assert_eq!(alert.ends_at, None);
    assert_eq!((alert.observed, alert.threshold), (1.0, 1.0));
    assert_eq!(alert.event_ids, vec!["e1"]);
    assert_eq!(alert.device_id, "dev-a");
    assert_eq!(
        alert.fingerprint,
        fingerprint("life_safety", "41061100100101", "FIRE_SMOKE")
    );
    assert_eq!(alert.alert_id, alert_id(&alert.fingerprint, T0 + 1_234));
    assert_eq!(harness.counters("life_safety").fired, 1);
    assert_eq!(harness.engine.active_alerts(), vec![alert]);
}

#[test]
fn event_in_a_cell_unknown_to_the_registry_is_skipped_and_counted() {
    let mut harness = Harness::new(TEST_RULES);
    assert!(harness
        .event("e1", EventType::FireSmoke, "dev-a", 99, T0)
        .is_empty());
    assert_eq!(harness.engine.stats().events_with_unknown_cell, 1);
    assert!(harness.engine.active_alerts().is_empty());
}

#[test]
fn unmatched_event_types_raise_nothing() {
    let mut harness = Harness::new(TEST_RULES);
    assert!(harness
        .event("e1", EventType::Loitering, "dev-a", 1, T0)
        .is_empty());
    assert!(harness
        .event("e2", EventType::ElderFall, "dev-a", 1, T0)
        .is_empty());
    assert!(harness.engine.active_alerts().is_empty());
    assert_eq!(harness.engine.state(), &RuleEngineState::default());
}

#[test]
fn repeat_from_the_same_device_inside_cooldown_is_suppressed_and_counted() {
    let mut harness = Harness::new(TEST_RULES);
    let fired = single(harness.event("e1", EventType::FireSmoke, "dev-a", 1, T0));
    assert!(harness
        .event("e2", EventType::FireSmoke, "dev-a", 1, T0 + 30_000)
        .is_empty());
    assert!(harness
        .event("e3", EventType::FireSmoke, "dev-a", 1, T0 + 4 * MINUTE)
        .is_empty());
    assert_eq!(harness.counters("life_safety").suppressed_repeats, 2);
    assert_eq!(harness.counters("life_safety").updated, 0);
    let active = single(harness.engine.active_alerts());
    assert_eq!(active.alert_id, fired.alert_id);
    assert_eq!(active.event_ids, vec!["e1", "e2", "e3"]);
    assert_eq!(active.observed, 3.0);
    assert_eq!(
        millis(&active.updated_at),
        Some(T0),
        "suppressed repeats are not state changes"
    );
}

#[test]
fn another_device_updates_the_same_alert() {
    let mut harness = Harness::new(TEST_RULES);
    let fired = single(harness.event("e1", EventType::FireSmoke, "dev-a", 1, T0));
    let updated = single(harness.event("e2", EventType::FireSmoke, "dev-b", 1, T0 + MINUTE));
    assert_eq!(updated.status, AlertStatus::Firing as i32);
    assert_eq!(updated.alert_id, fired.alert_id);
    assert_eq!(updated.fingerprint, fired.fingerprint);
    assert_eq!(updated.observed, 2.0);
    assert_eq!(millis(&updated.starts_at), Some(T0));
    assert_eq!(millis(&updated.updated_at), Some(T0 + MINUTE));
    assert_eq!(updated.event_ids, vec!["e1", "e2"]);
    assert_eq!(updated.device_id, "dev-a", "the triggering device stays");
    // dev-b is now inside its own cooldown too.
    assert!(harness
        .event("e3", EventType::FireSmoke, "dev-b", 1, T0 + 2 * MINUTE)
        .is_empty());
    assert_eq!(harness.counters("life_safety").updated, 1);
}

#[test]
fn same_device_updates_again_once_its_cooldown_passed_while_the_alert_still_fires() {
    let mut harness = Harness::new(TEST_RULES);
    let fired = single(harness.event("e1", EventType::Sos, "dev-a", 2, T0));
    single(harness.event("e2", EventType::Sos, "dev-b", 2, T0 + 4 * MINUTE));
    let updated = single(harness.event("e3", EventType::Sos, "dev-a", 2, T0 + 6 * MINUTE));
    assert_eq!(updated.alert_id, fired.alert_id);
    assert_eq!(updated.observed, 3.0);
}

#[test]
fn different_types_and_cells_are_different_alerts() {
    let mut harness = Harness::new(TEST_RULES);
    let smoke = single(harness.event("e1", EventType::FireSmoke, "dev-a", 1, T0));
    let gas = single(harness.event("e2", EventType::GasLeak, "dev-a", 1, T0));
    let other_cell = single(harness.event("e3", EventType::FireSmoke, "dev-c", 2, T0));
    assert_ne!(smoke.fingerprint, gas.fingerprint);
    assert_ne!(smoke.fingerprint, other_cell.fingerprint);
    assert_eq!(harness.counters("life_safety").fired, 3);
    let active = harness.engine.active_alerts();
    assert_eq!(active.len(), 3);
    assert!(active
        .windows(2)
        .all(|pair| pair[0].fingerprint < pair[1].fingerprint));
}

#[test]
fn immediate_alert_resolves_when_the_watermark_passes_last_event_plus_cooldown() {
    let mut harness = Harness::new(TEST_RULES);
    let fired = single(harness.event("e1", EventType::GasLeak, "dev-a", 1, T0));
    assert!(harness
        .event("e2", EventType::GasLeak, "dev-a", 1, T0 + 2 * MINUTE)
        .is_empty());
    assert!(
        harness.watermark(T0 + 6 * MINUTE + 30_000).is_empty(),
        "a suppressed repeat keeps it alive"
    );
    assert!(harness.watermark(T0 + 7 * MINUTE - 1).is_empty());
    let resolved = single(harness.watermark(T0 + 7 * MINUTE));
    assert_eq!(resolved.status, AlertStatus::Resolved as i32);
    assert_eq!(resolved.alert_id, fired.alert_id);
    assert_eq!(millis(&resolved.ends_at), Some(T0 + 7 * MINUTE));
    assert_eq!(millis(&resolved.updated_at), Some(T0 + 7 * MINUTE));
    assert_eq!(millis(&resolved.starts_at), Some(T0));
    assert_eq!(resolved.event_ids, vec!["e1", "e2"]);
    assert!(harness.engine.active_alerts().is_empty());
    assert!(
        harness.watermark(T0 + 60 * MINUTE).is_empty(),
        "resolves once"
    );
    assert_eq!(harness.counters("life_safety").resolved, 1);
}

#[test]
fn immediate_refire_after_resolution_has_a_new_alert_id() {
    let mut harness = Harness::new(TEST_RULES);
    let first = single(harness.event("e1", EventType::FireSmoke, "dev-a", 1, T0));
    single(harness.watermark(T0 + 5 * MINUTE));
    let second = single(harness.event("e2", EventType::FireSmoke, "dev-a", 1, T0 + 20 * MINUTE));
    assert_eq!(second.status, AlertStatus::Firing as i32);
    assert_eq!(second.fingerprint, first.fingerprint);
    assert_ne!(second.alert_id, first.alert_id);
    assert_eq!(second.observed, 1.0);
    assert_eq!(second.event_ids, vec!["e2"]);
}

#[test]
fn late_event_inside_a_resolved_occurrence_starts_the_next_one_at_its_end() {
    let mut harness = Harness::new(TEST_RULES);
    let first = single(harness.event("e1", EventType::Sos, "dev-a", 1, T0));
    let resolved = single(harness.watermark(T0 + 5 * MINUTE));
    // A late event from another device, timed inside the first occurrence.
    let second = single(harness.event("e2", EventType::Sos, "dev-b", 1, T0));
    assert_ne!(second.alert_id, first.alert_id);
    assert_eq!(millis(&second.starts_at), millis(&resolved.ends_at));
    let second_resolved = single(harness.watermark(T0 + 10 * MINUTE));
    assert_eq!(millis(&second_resolved.ends_at), Some(T0 + 10 * MINUTE));
    // After a cooldown past its end the resolved occurrence is forgotten.
    assert!(harness.watermark(T0 + 15 * MINUTE).is_empty());
    assert!(harness
        .engine
        .state()
        .immediate
        .recently_resolved
        .is_empty());
}

#[test]
fn threshold_refire_from_late_events_starts_after_the_previous_end() {
    let mut harness = Harness::new(TEST_RULES);
    harness.event("p1", EventType::PerimeterIntrusion, "cam", 1, T0);
    harness.event("p2", EventType::PerimeterIntrusion, "cam", 1, T0);
    let first = single(harness.event(
        "p3",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 14 * MINUTE,
    ));
    let resolved = single(harness.watermark(T0 + 16 * MINUTE));
    assert_eq!(millis(&resolved.ends_at), Some(T0 + 16 * MINUTE));
    harness.event(
        "p4",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 14 * MINUTE,
    );
    let second = single(harness.event(
        "p5",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 14 * MINUTE,
    ));
    assert_ne!(second.alert_id, first.alert_id);
    assert_eq!(millis(&second.starts_at), Some(T0 + 16 * MINUTE));
}

#[test]
fn watermark_resolves_several_alerts_in_fingerprint_order() {
    let mut harness = Harness::new(TEST_RULES);
    for (number, cell) in [3_u32, 0, 2, 1].into_iter().enumerate() {
        single(harness.event(&format!("e{number}"), EventType::Sos, "dev", cell, T0));
    }
    let resolved = harness.watermark(T0 + 10 * MINUTE);
    assert_eq!(resolved.len(), 4);
    assert!(resolved
        .windows(2)
        .all(|pair| pair[0].fingerprint < pair[1].fingerprint));
}

#[test]
fn event_ids_are_capped_at_twenty_most_recent() {
    let mut harness = Harness::new(TEST_RULES);
    for number in 0..25 {
        harness.event(
            &format!("e{number:02}"),
            EventType::FireSmoke,
            "dev-a",
            1,
            T0 + number * 1_000,
        );
    }
    let active = single(harness.engine.active_alerts());
    assert_eq!(active.event_ids.len(), MAX_ALERT_EVENT_IDS);
    assert_eq!(active.event_ids.first().map(String::as_str), Some("e05"));
    assert_eq!(active.observed, 25.0);
}

#[test]
fn a_flood_of_new_devices_changes_the_alert_at_most_once_per_pane() {
    let mut harness = Harness::new(TEST_RULES);
    let mut emitted = Vec::new();
    for device in 0..2_000 {
        emitted.extend(harness.event(
            &format!("e{device}"),
            EventType::FireSmoke,
            &format!("dev-{device}"),
            1,
            T0 + device,
        ));
    }
    assert_eq!(
        emitted.len(),
        1,
        "one FIRING, no update inside the same pane"
    );
    let next_pane = harness.event("late-comer", EventType::FireSmoke, "dev-x", 1, T0 + MINUTE);
    let updated = single(next_pane);
    assert_eq!(updated.observed, 2_001.0, "every event is counted");
    assert_eq!(updated.event_ids.len(), MAX_ALERT_EVENT_IDS);
    assert_eq!(harness.counters("life_safety").updated, 1);
}

#[test]
fn a_long_firing_alert_forgets_devices_past_their_cooldown() {
    let mut harness = Harness::new(TEST_RULES);
    // A new device every minute for three hours keeps the alert firing.
    for minute in 0..180 {
        harness.event(
            &format!("e{minute}"),
            EventType::FireSmoke,
            &format!("dev-{minute}"),
            1,
            T0 + minute * MINUTE,
        );
    }
    let remembered: usize = harness
        .engine
        .state()
        .immediate
        .firing
        .values()
        .flat_map(|alerts| alerts.values())
        .map(|firing| firing.device_last_emitted_millis.len())
        .sum();
    assert!(remembered <= 64, "{remembered} devices remembered");
}

// ---------------------------------------------------------------- threshold

#[test]
fn threshold_fires_on_the_third_event_within_the_window() {
    let mut harness = Harness::new(TEST_RULES);
    assert!(harness
        .event("p1", EventType::PerimeterIntrusion, "cam", 1, T0)
        .is_empty());
    assert!(harness
        .event(
            "p2",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 5 * MINUTE
        )
        .is_empty());
    let alert = single(harness.event(
        "p3",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 14 * MINUTE + 59_000,
    ));
    assert_eq!(alert.status, AlertStatus::Firing as i32);
    assert_eq!(alert.rule, "perimeter_intrusion_burst");
    assert_eq!(alert.rule_kind, "threshold");
    assert_eq!((alert.observed, alert.threshold), (3.0, 3.0));
    assert_eq!(alert.severity, 2);
    assert_eq!(alert.event_ids, vec!["p1", "p2", "p3"]);
    assert_eq!(millis(&alert.starts_at), Some(T0 + 14 * MINUTE + 59_000));
    assert_eq!(alert.device_id, "");
    assert_eq!(
        alert.fingerprint,
        fingerprint(
            "perimeter_intrusion_burst",
            "41061100100101",
            "PERIMETER_INTRUSION"
        )
    );
    assert_eq!(harness.counters("perimeter_intrusion_burst").fired, 1);
}

#[test]
fn threshold_counts_per_cell() {
    let mut harness = Harness::new(TEST_RULES);
    assert!(harness
        .event("p1", EventType::PerimeterIntrusion, "cam", 1, T0)
        .is_empty());
    assert!(harness
        .event("p2", EventType::PerimeterIntrusion, "cam", 2, T0)
        .is_empty());
    assert!(harness
        .event("p3", EventType::PerimeterIntrusion, "cam", 3, T0)
        .is_empty());
    assert!(harness
        .event("p4", EventType::PerimeterIntrusion, "cam", 1, T0)
        .is_empty());
}

#[test]
fn events_spread_over_more_than_the_window_do_not_fire() {
    let mut harness = Harness::new(TEST_RULES);
    for (number, minute) in [0_i64, 8, 16, 24, 32].into_iter().enumerate() {
        let occurred_at_millis = T0 + minute * MINUTE;
        assert!(harness
            .event(
                &format!("p{number}"),
                EventType::PerimeterIntrusion,
                "cam",
                1,
                occurred_at_millis
            )
            .is_empty());
        assert!(harness.watermark(occurred_at_millis).is_empty());
    }
    assert!(harness.engine.active_alerts().is_empty());
    // Only the panes of the last window are kept.
    let series = &harness.engine.state().threshold.series["perimeter_intrusion_burst"][&1];
    assert!(series
        .pane_counts
        .keys()
        .all(|pane_start| *pane_start >= T0 + 17 * MINUTE));
}

#[test]
fn threshold_keeps_quiet_while_firing_and_tracks_the_largest_count() {
    let mut harness = Harness::new(TEST_RULES);
    harness.event("p1", EventType::PerimeterIntrusion, "cam", 1, T0);
    harness.event("p2", EventType::PerimeterIntrusion, "cam", 1, T0);
    let fired = single(harness.event("p3", EventType::PerimeterIntrusion, "cam", 1, T0 + MINUTE));
    assert!(harness
        .event(
            "p4",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 2 * MINUTE
        )
        .is_empty());
    assert!(harness
        .event(
            "p5",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 3 * MINUTE
        )
        .is_empty());
    let active = single(harness.engine.active_alerts());
    assert_eq!(active.alert_id, fired.alert_id);
    assert_eq!(active.observed, 5.0);
    assert_eq!(active.event_ids, vec!["p1", "p2", "p3", "p4", "p5"]);
}

#[test]
fn threshold_resolves_when_the_watermark_slides_past() {
    let mut harness = Harness::new(TEST_RULES);
    harness.event("p1", EventType::PerimeterIntrusion, "cam", 1, T0 + 10_000);
    harness.event("p2", EventType::PerimeterIntrusion, "cam", 1, T0 + MINUTE);
    let fired = single(harness.event(
        "p3",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 2 * MINUTE,
    ));
    // aligned 15m keeps the pane at T0 (window_start ≥ aligned − window): still 3.
    assert!(harness.watermark(T0 + 15 * MINUTE + 59_999).is_empty());
    // aligned 16m prunes the pane at T0: 2 < 3.
    let resolved = single(harness.watermark(T0 + 16 * MINUTE + 5_000));
    assert_eq!(resolved.status, AlertStatus::Resolved as i32);
    assert_eq!(resolved.alert_id, fired.alert_id);
    assert_eq!(millis(&resolved.ends_at), Some(T0 + 16 * MINUTE));
    assert_eq!(resolved.observed, 3.0);
    assert!(harness.engine.active_alerts().is_empty());
    assert_eq!(harness.counters("perimeter_intrusion_burst").resolved, 1);
}

#[test]
fn threshold_does_not_resolve_while_events_ahead_of_the_watermark_keep_the_count() {
    let mut harness = Harness::new(TEST_RULES);
    harness.event("p1", EventType::PerimeterIntrusion, "cam", 1, T0);
    harness.event("p2", EventType::PerimeterIntrusion, "cam", 1, T0);
    single(harness.event("p3", EventType::PerimeterIntrusion, "cam", 1, T0));
    harness.event(
        "p4",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 20 * MINUTE,
    );
    harness.event(
        "p5",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 20 * MINUTE,
    );
    harness.event(
        "p6",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 21 * MINUTE,
    );
    assert!(
        harness.watermark(T0 + 19 * MINUTE).is_empty(),
        "three events ahead of W still count"
    );
    let resolved = single(harness.watermark(T0 + 37 * MINUTE));
    assert_eq!(millis(&resolved.ends_at), Some(T0 + 37 * MINUTE));
}

#[test]
fn threshold_refire_after_resolution_has_a_new_alert_id() {
    let mut harness = Harness::new(TEST_RULES);
    for number in 0..3 {
        harness.event(
            &format!("a{number}"),
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + number * MINUTE,
        );
    }
    let first = single(harness.engine.active_alerts());
    single(harness.watermark(T0 + 30 * MINUTE));
    assert!(harness
        .event(
            "b0",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 40 * MINUTE
        )
        .is_empty());
    assert!(harness
        .event(
            "b1",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 41 * MINUTE
        )
        .is_empty());
    let second = single(harness.event(
        "b2",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 42 * MINUTE,
    ));
    assert_eq!(second.fingerprint, first.fingerprint);
    assert_ne!(second.alert_id, first.alert_id);
    assert_eq!(
        second.event_ids,
        vec!["b0", "b1", "b2"],
        "pruned events are not carried over"
    );
}

#[test]
fn out_of_order_events_count_in_their_own_panes() {
    let mut harness = Harness::new(TEST_RULES);
    assert!(harness
        .event(
            "p1",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 10 * MINUTE
        )
        .is_empty());
    assert!(harness
        .event(
            "p2",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 30 * MINUTE
        )
        .is_empty());
    // Late-arriving event 5 minutes before p1: its window [T0 − 9m, T0 + 5m] holds only itself.
    assert!(harness
        .event(
            "p0",
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0 + 5 * MINUTE
        )
        .is_empty());
    let alert = single(harness.event(
        "p3",
        EventType::PerimeterIntrusion,
        "cam",
        1,
        T0 + 12 * MINUTE,
    ));
    assert_eq!(
        alert.event_ids,
        vec!["p0", "p1", "p3"],
        "time order, the later p2 excluded"
    );
}

#[test]
fn threshold_alerts_of_a_removed_rule_resolve_after_a_restore() {
    let mut harness = Harness::new(TEST_RULES);
    for number in 0..3 {
        harness.event(
            &format!("p{number}"),
            EventType::PerimeterIntrusion,
            "cam",
            1,
            T0,
        );
    }
    single(harness.event("f1", EventType::FireSmoke, "dev", 1, T0));
    let state = harness.engine.state().clone();
    let only_immediate = r#"
        [[rule]]
        name = "other"
        kind = "immediate"
        event_types = ["SOS"]
    "#;
    let mut reloaded = Harness::new(only_immediate);
    reloaded.engine.restore_state(state);
    assert_eq!(reloaded.engine.active_alerts().len(), 2);
    let resolved = reloaded.watermark(T0 + MINUTE);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].rule, "perimeter_intrusion_burst");
    assert_eq!(millis(&resolved[0].ends_at), Some(T0 + MINUTE));
    let resolved_later = single(reloaded.watermark(T0 + 5 * MINUTE));
    assert_eq!(resolved_later.rule, "life_safety");
    assert!(reloaded.engine.active_alerts().is_empty());
}

#[test]
fn extreme_event_times_do_not_panic() {
    let mut harness = Harness::new(TEST_RULES);
    for (number, occurred_at_millis) in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 0, -1]
        .into_iter()
        .enumerate()
    {
        for event_type in [EventType::PerimeterIntrusion, EventType::FireSmoke] {
            harness.event(
                &format!("e{number}"),
                event_type,
                "dev",
                1,
                occurred_at_millis,
            );
        }
        harness.watermark(occurred_at_millis);
    }
    harness.watermark(i64::MAX);
    assert!(harness
        .engine
        .active_alerts()
        .iter()
        .all(|alert| alert.rule_kind == "threshold"));
}

// ---------------------------------------------------------------- determinism and snapshots

/// One step of a generated scenario.
#[derive(Debug, Clone)]
enum Step {
    /// An event: type index into `SCENARIO_TYPES`, device number, cell, time offset in seconds.
    Event(usize, u8, u32, i64),
    /// A watermark advance by this many seconds.
    Advance(i64),
}

const SCENARIO_TYPES: [EventType; 4] = [
    EventType::FireSmoke,
    EventType::Sos,
    EventType::PerimeterIntrusion,
    EventType::Loitering,
];

/// Steps whose events are at most `max_lateness_seconds` behind the watermark.
fn step_strategy(max_lateness_seconds: i64) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SCENARIO_TYPES.len(), 0_u8..3, 0_u32..3, -max_lateness_seconds..600)
            .prop_map(|(type_index, device, cell, offset)| Step::Event(type_index, device, cell, offset)),
        1 => (0_i64..900).prop_map(Step::Advance),
    ]
}

/// Runs the steps; event times are relative to a running clock that watermark steps advance.
fn run_steps(
    harness: &mut Harness,
    steps: &[Step],
    start: (i64, usize),
) -> (Vec<Alert>, (i64, usize)) {
    let (mut watermark_millis, mut event_number) = start;
    let mut alerts = Vec::new();
    for step in steps {
        match step {
            Step::Event(type_index, device, cell, offset_seconds) => {
                event_number += 1;
                let occurred_at_millis = watermark_millis + offset_seconds * 1_000;
                alerts.extend(harness.event(
                    &format!("e{event_number}"),
                    SCENARIO_TYPES[*type_index],
                    &format!("dev-{device}"),
                    *cell,
                    occurred_at_millis,
                ));
            }
            Step::Advance(seconds) => {
                watermark_millis += seconds * 1_000;
                alerts.extend(harness.watermark(watermark_millis));
            }
        }
    }
    (alerts, (watermark_millis, event_number))
}

#[test]
fn alert_ids_are_deterministic_across_two_engines_fed_the_same_input() {
    let steps = vec![
        Step::Event(0, 0, 1, 0),
        Step::Event(0, 1, 1, 30),
        Step::Event(2, 0, 2, 10),
        Step::Event(2, 0, 2, 20),
        Step::Event(2, 1, 2, 30),
        Step::Advance(400),
        Step::Event(1, 0, 0, 0),
        Step::Advance(1_200),
        Step::Event(0, 0, 1, 0),
    ];
    let (first_alerts, _) = run_steps(&mut Harness::new(TEST_RULES), &steps, (T0, 0));
    let (second_alerts, _) = run_steps(&mut Harness::new(TEST_RULES), &steps, (T0, 0));
    assert!(first_alerts.len() >= 6, "{first_alerts:#?}");
    assert_eq!(first_alerts, second_alerts);
}

#[test]
fn snapshot_round_trip_then_continuing_gives_identical_alerts() {
    let before = vec![
        Step::Event(2, 0, 1, 0),
        Step::Event(2, 0, 1, 60),
        Step::Event(0, 0, 1, 0),
        Step::Advance(120),
    ];
    let after = vec![
        Step::Event(2, 1, 1, 0),
        Step::Event(0, 1, 1, 10),
        Step::Event(0, 0, 1, 20),
        Step::Advance(600),
        Step::Advance(900),
        Step::Event(2, 1, 1, 0),
    ];
    let mut uninterrupted = Harness::new(TEST_RULES);
    let (_, clock) = run_steps(&mut uninterrupted, &before, (T0, 0));
    let (expected_alerts, _) = run_steps(&mut uninterrupted, &after, clock);

    let mut original = Harness::new(TEST_RULES);
    run_steps(&mut original, &before, (T0, 0));
    let bytes = postcard::to_allocvec(original.engine.state()).expect("state serializes");
    let restored_state: RuleEngineState = postcard::from_bytes(&bytes).expect("state deserializes");
    assert_eq!(&restored_state, original.engine.state());
    let mut restored = Harness::new(TEST_RULES);
    restored.engine.restore_state(restored_state);
    let (restored_alerts, _) = run_steps(&mut restored, &after, clock);
    assert!(
        expected_alerts
            .iter()
            .any(|alert| alert.rule_kind == "threshold")
            && expected_alerts
                .iter()
                .any(|alert| alert.status == AlertStatus::Resolved as i32),
        "the scenario exercises firing and resolution: {expected_alerts:#?}"
    );
    assert_eq!(restored_alerts, expected_alerts);
}

#[test]
fn restored_engine_evaluates_threshold_windows_at_the_same_pane_boundaries() {
    // Old events fire a threshold alert after the watermark's pane was already evaluated; a
    // further watermark inside the same pane must not evaluate again, restored or not.
    let steps_before = vec![
        Step::Advance(30 * 60),
        Step::Event(2, 0, 1, -20 * 60),
        Step::Event(2, 0, 1, -20 * 60),
        Step::Event(2, 0, 1, -20 * 60),
    ];
    let steps_after = vec![Step::Advance(30), Step::Advance(60)];
    let mut uninterrupted = Harness::new(TEST_RULES);
    let (fired, clock) = run_steps(&mut uninterrupted, &steps_before, (T0, 0));
    assert_eq!(fired.len(), 1);
    let (expected_after, _) = run_steps(&mut uninterrupted, &steps_after, clock);
    let mut restored = Harness::new(TEST_RULES);
    let bytes = postcard::to_allocvec(&uninterrupted_state_before(&steps_before)).unwrap();
    restored
        .engine
        .restore_state(postcard::from_bytes(&bytes).unwrap());
    let (restored_after, _) = run_steps(&mut restored, &steps_after, clock);
    assert_eq!(
        expected_after.len(),
        1,
        "resolves at the next pane boundary: {expected_after:#?}"
    );
    assert_eq!(millis(&expected_after[0].ends_at), Some(T0 + 31 * MINUTE));
    assert_eq!(restored_after, expected_after);
}

fn uninterrupted_state_before(steps: &[Step]) -> RuleEngineState {
    let mut harness = Harness::new(TEST_RULES);
    run_steps(&mut harness, steps, (T0, 0));
    harness.engine.state().clone()
}

/// Checks the lifecycle of every fingerprint: FIRING with a new id starting no earlier than
/// the previous occurrence ended, FIRING updates with the same id, then RESOLVED with that id
/// and `ends_at` after `starts_at`.
fn assert_lifecycle_is_well_formed(alerts: &[Alert]) -> Result<(), TestCaseError> {
    let mut firing_id_by_fingerprint: BTreeMap<&str, &str> = BTreeMap::new();
    let mut last_ends_at_by_fingerprint: BTreeMap<&str, Option<i64>> = BTreeMap::new();
    let mut seen_alert_ids: Vec<&str> = Vec::new();
    for alert in alerts {
        let current = firing_id_by_fingerprint
            .get(alert.fingerprint.as_str())
            .copied();
        if alert.status == AlertStatus::Firing as i32 {
            match current {
                None => {
                    prop_assert!(
                        !seen_alert_ids.contains(&alert.alert_id.as_str()),
                        "reused id {:?}",
                        alert
                    );
                    if let Some(previous_ends_at) =
                        last_ends_at_by_fingerprint.get(alert.fingerprint.as_str())
                    {
                        prop_assert!(
                            millis(&alert.starts_at) >= *previous_ends_at,
                            "overlap {:?}",
                            alert
                        );
                    }
                    seen_alert_ids.push(&alert.alert_id);
                    firing_id_by_fingerprint.insert(&alert.fingerprint, &alert.alert_id);
                }
                Some(firing_id) => {
                    prop_assert_eq!(firing_id, alert.alert_id.as_str(), "update changed the id")
                }
            }
        } else {
            prop_assert_eq!(alert.status, AlertStatus::Resolved as i32);
            prop_assert_eq!(
                current,
                Some(alert.alert_id.as_str()),
                "resolved an alert that was not firing"
            );
            prop_assert!(
                millis(&alert.ends_at) > millis(&alert.starts_at),
                "{:?}",
                alert
            );
            firing_id_by_fingerprint.remove(alert.fingerprint.as_str());
            last_ends_at_by_fingerprint.insert(&alert.fingerprint, millis(&alert.ends_at));
        }
        prop_assert!(alert.event_ids.len() <= MAX_ALERT_EVENT_IDS);
    }
    Ok(())
}

/// Found by `lifecycles_are_well_formed_when_lateness_is_below_the_cooldown`: three intrusions
/// fire the threshold rule, which resolves at the pane boundary after they leave its 15-minute
/// window; then three late intrusions from before that boundary fire it again. The series had
/// been forgotten with its last end, so the new occurrence started before the previous one
/// ended (overlapping occurrences of one fingerprint). A resolved series is now kept for a
/// window after its end.
#[test]
fn a_threshold_alert_raised_again_by_late_events_starts_no_earlier_than_it_ended() {
    let intrusion = |offset_seconds| Step::Event(2, 0, 0, offset_seconds);
    let steps = [
        Step::Advance(4),
        intrusion(0),
        intrusion(0),
        intrusion(0),
        Step::Advance(959),
        intrusion(-124),
        intrusion(-124),
        intrusion(-4),
    ];
    let (alerts, _) = run_steps(&mut Harness::new(TEST_RULES), &steps, (T0, 0));
    let statuses: Vec<i32> = alerts.iter().map(|alert| alert.status).collect();
    assert_eq!(
        statuses,
        vec![
            AlertStatus::Firing as i32,
            AlertStatus::Resolved as i32,
            AlertStatus::Firing as i32
        ],
        "{alerts:#?}"
    );
    let ended = millis(&alerts[1].ends_at).expect("resolved");
    assert!(millis(&alerts[2].starts_at).expect("fired") >= ended);
    assert_ne!(alerts[2].alert_id, alerts[0].alert_id);
}

proptest! {
    #[test]
    fn snapshot_at_any_point_changes_nothing(
        before in prop::collection::vec(step_strategy(1_800), 0..60),
        after in prop::collection::vec(step_strategy(1_800), 0..60),
    ) {
        let mut uninterrupted = Harness::new(TEST_RULES);
        let (expected_before, clock) = run_steps(&mut uninterrupted, &before, (T0, 0));
        let (expected_after, _) = run_steps(&mut uninterrupted, &after, clock);

        let mut original = Harness::new(TEST_RULES);
        let (alerts_before, _) = run_steps(&mut original, &before, (T0, 0));
        prop_assert_eq!(&alerts_before, &expected_before);
        let bytes = postcard::to_allocvec(original.engine.state()).unwrap();
        let mut restored = Harness::new(TEST_RULES);
        restored.engine.restore_state(postcard::from_bytes(&bytes).unwrap());
        let (restored_after, _) = run_steps(&mut restored, &after, clock);
        prop_assert_eq!(&restored_after, &expected_after);
        prop_assert_eq!(restored.engine.active_alerts(), uninterrupted.engine.active_alerts());
    }

    #[test]
    fn lifecycles_are_well_formed_when_lateness_is_below_the_cooldown(
        steps in prop::collection::vec(step_strategy(290), 0..150),
    ) {
        let (alerts, _) = run_steps(&mut Harness::new(TEST_RULES), &steps, (T0, 0));
        assert_lifecycle_is_well_formed(&alerts)?;
    }
}

// ---------------------------------------------------------------- skipping kinds until due

/// The engine skips a kind's watermark calls below the watermark the kind said it is next
/// due at (`RuleKind::next_due_millis`), and the baseline's within the hour. That must change
/// nothing: an engine whose watermark advances before every event, as a busy pipeline's does,
/// raises exactly the alerts, and ends with exactly the state, of one that calls every kind at
/// every advance. A day of the whole city at the seeded rates (every rule kind's types: life
/// safety, bursts, offline devices) with a ×30 fraud wave over three neighbouring communities
/// (spike, CUSUM, district and scan alerts).
#[test]
fn kinds_skipped_until_they_are_due_raise_what_kinds_called_at_every_advance_raise() {
    use super::baseline::HOUR_MILLIS;
    use super::simulation::{
        median_community_and_neighbours, seeded_stream, sort_by_time, wave_stream,
        with_accepted_event,
    };

    let registry = GridRegistry::embedded();
    let baseline = Baseline::embedded();
    let start = (T0 / HOUR_MILLIS) * HOUR_MILLIS;
    let hours = 24;
    let every_type: Vec<EventType> = (1..=i32::MAX)
        .map_while(|number| EventType::try_from(number).ok())
        .collect();
    let mut stream = seeded_stream(&registry, &baseline, &every_type, start, hours, 3);
    let wave_cells: Vec<CellIndex> = median_community_and_neighbours(&registry, 3)
        .iter()
        .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
        .collect();
    let fraud_types = [EventType::FraudWarning, EventType::FraudReported];
    stream.extend(wave_stream(
        &registry,
        &baseline,
        &wave_cells,
        &fraud_types,
        29.0,
        start + 4 * HOUR_MILLIS,
        12,
        4,
    ));
    // Two bursts of five intrusions in a cell within ten minutes (threshold rules), an odd
    // number of minutes apart, so that they resolve at pane boundaries of either parity.
    for (burst_start, cell) in [(9 * HOUR_MILLIS, 7), (13 * HOUR_MILLIS + MINUTE, 8)] {
        stream.extend((0..5).map(|event_number| {
            (
                start + burst_start + event_number * 2 * MINUTE,
                CellIndex(cell),
                EventType::PerimeterIntrusion,
            )
        }));
    }
    sort_by_time(&mut stream);

    let rules = RuleSet::embedded_default(MINUTE).expect("embedded rules");
    let mut skipping = RuleEngine::with_baseline(rules.clone(), baseline.clone());
    let mut calling_every_kind = RuleEngine::with_baseline(rules, baseline);
    let mut skipping_alerts = Vec::new();
    let mut calling_alerts = Vec::new();
    /// One watermark advance of both engines.
    fn advance(
        engines: (&mut RuleEngine, &mut RuleEngine),
        watermark: i64,
        registry: &GridRegistry,
        alerts: (&mut Vec<Alert>, &mut Vec<Alert>),
    ) {
        let (skipping, calling_every_kind) = engines;
        skipping.on_watermark(watermark, registry, alerts.0);
        calling_every_kind.derived.due = DueMillis::at_once();
        calling_every_kind.on_watermark(watermark, registry, alerts.1);
    }
    for (number, simulated_event) in stream.iter().enumerate() {
        advance(
            (&mut skipping, &mut calling_every_kind),
            simulated_event.0 - 5_000,
            &registry,
            (&mut skipping_alerts, &mut calling_alerts),
        );
        with_accepted_event(number, simulated_event, |accepted| {
            skipping.on_event(accepted, &registry, &mut skipping_alerts);
            calling_every_kind.on_event(accepted, &registry, &mut calling_alerts);
        });
    }
    advance(
        (&mut skipping, &mut calling_every_kind),
        start + (hours + 1) * HOUR_MILLIS,
        &registry,
        (&mut skipping_alerts, &mut calling_alerts),
    );

    let kinds_alerted: std::collections::BTreeSet<&str> = skipping_alerts
        .iter()
        .map(|alert| alert.rule_kind.as_str())
        .collect();
    assert_eq!(
        kinds_alerted,
        [
            "cusum",
            "data_gap",
            "immediate",
            "scan",
            "spike",
            "threshold"
        ]
        .into(),
        "the stream exercises every kind"
    );
    assert_eq!(skipping_alerts.len(), calling_alerts.len());
    assert!(
        skipping_alerts == calling_alerts,
        "the same alert changes in the same order"
    );
    assert!(skipping.state == calling_every_kind.state, "the same state");
}
