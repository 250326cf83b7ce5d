//! The city model's behaviour, record by record, with time as an argument.

use std::sync::Arc;

use super::*;
use crate::grid::GridRegistry;
use crate::proto::{AlertStatus, CommunityYearCounts, EventType};
use crate::time::millis_to_timestamp;

/// 2026-03-02 00:00 UTC, on a minute boundary.
const T0: i64 = 1_772_409_600_000;
const MINUTE: i64 = 60_000;

fn model() -> (CityModel, Arc<GridRegistry>) {
    let registry = GridRegistry::embedded();
    let settings = CityModelSettings::new(
        vec!["15m".to_string(), "1h".to_string()],
        vec![15 * MINUTE, 60 * MINUTE],
        "v1".to_string(),
    );
    let fraud = FraudReporting {
        settings: crate::fraud::FraudSettings::default(),
        baseline: crate::fraud::FraudBaseline::embedded().unwrap(),
    };
    (
        CityModel::new(registry.clone(), settings, Some(fraud)),
        registry,
    )
}

fn grid(registry: &GridRegistry, slot: usize) -> String {
    registry.cells()[slot].grid_id.clone()
}

/// A window record as the feed reads it, its grid resolved in the model's (embedded) registry.
fn pane(grid_id: &str, event_type: EventType, start: i64, count: u64) -> OutputRecord {
    let window = crate::proto::CellWindow {
        grid_id: grid_id.to_string(),
        event_type: event_type as i32,
        window_start: Some(millis_to_timestamp(start)),
        window_end: Some(millis_to_timestamp(start + MINUTE)),
        count,
        ..Default::default()
    };
    OutputRecord::Window(ReadBackPane::of_cell_window(
        &window,
        &GridRegistry::embedded(),
    ))
}

fn alert(
    grid_id: &str,
    event_type: EventType,
    severity: u32,
    starts: i64,
    status: AlertStatus,
) -> OutputRecord {
    let resolved = status == AlertStatus::Resolved;
    OutputRecord::Alert(Box::new(crate::proto::Alert {
        alert_id: format!("{grid_id}-{starts}"),
        fingerprint: format!("{grid_id}-{}", event_type as i32),
        rule: "rule".to_string(),
        rule_kind: "immediate".to_string(),
        status: status as i32,
        grid_id: grid_id.to_string(),
        event_type: event_type as i32,
        severity,
        starts_at: Some(millis_to_timestamp(starts)),
        updated_at: Some(millis_to_timestamp(starts + i64::from(resolved) * MINUTE)),
        ends_at: resolved.then(|| millis_to_timestamp(starts + MINUTE)),
        ..Default::default()
    }))
}

fn events(snapshot: &CitySnapshot, grid_id: &str) -> Vec<u64> {
    snapshot.cell(grid_id).unwrap().events.clone()
}

#[test]
fn a_pane_counts_in_every_view_covering_it_and_leaves_the_short_view_as_time_moves_on() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    model
        .apply(pane(&cell, EventType::Tailgating, T0, 3), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(events(&snapshot, &cell), [3, 3]);
    // Another cell's pane 20 minutes later moves the watermark: the first pane is now only
    // in the 1 h view.
    let other = grid(&registry, 1);
    model
        .apply(pane(&other, EventType::Tailgating, T0 + 20 * MINUTE, 1), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(events(&snapshot, &cell), [0, 3]);
    assert_eq!(events(&snapshot, &other), [1, 1]);
    assert_eq!(snapshot.watermark_millis, Some(T0 + 21 * MINUTE));
    // And 70 minutes on, out of both.
    model
        .apply(pane(&other, EventType::Tailgating, T0 + 70 * MINUTE, 1), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(events(&snapshot, &cell), [0, 0]);
    assert_eq!(events(&snapshot, &other), [1, 2]);
}

#[test]
fn a_pane_applied_twice_counts_once_and_a_corrected_pane_replaces_its_count() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    model
        .apply(pane(&cell, EventType::Tailgating, T0, 3), T0)
        .unwrap();
    model
        .apply(pane(&cell, EventType::Tailgating, T0, 3), T0)
        .unwrap();
    model
        .apply(pane(&cell, EventType::DoorForced, T0, 1), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(events(&snapshot, &cell), [4, 4]);
    let view = snapshot.cell(&cell).unwrap().view(0);
    assert_eq!(view.events_by_type["TAILGATING"], 3);
    assert_eq!(view.events_by_type["DOOR_FORCED"], 1);
    model
        .apply(pane(&cell, EventType::Tailgating, T0, 5), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(events(&snapshot, &cell), [6, 6]);
    assert_eq!(snapshot.cell(&cell).unwrap().recent_windows.len(), 2);
}

#[test]
fn a_cells_recent_panes_are_newest_first_a_reapplied_pane_replaces_its_copy_and_only_sixty_are_kept(
) {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    let listed = |snapshot: &CitySnapshot| -> Vec<(String, String, u64)> {
        snapshot
            .cell(&cell)
            .unwrap()
            .recent_windows
            .iter()
            .map(|pane| {
                let view = pane.view();
                (view.window_start, view.event_type, view.count)
            })
            .collect()
    };
    let start = |minute: i64| crate::time::millis_to_rfc3339(T0 + minute * MINUTE);
    for (event_type, minute, count) in [
        (EventType::Tailgating, 1, 1),
        (EventType::Tailgating, 0, 2),
        (EventType::DoorForced, 1, 3),
        (EventType::Tailgating, 2, 4),
    ] {
        model
            .apply(pane(&cell, event_type, T0 + minute * MINUTE, count), T0)
            .unwrap();
    }
    let (snapshot, _) = model.publish(T0);
    assert_eq!(
        listed(&snapshot),
        [
            (start(2), "TAILGATING".to_string(), 4),
            (start(1), "DOOR_FORCED".to_string(), 3),
            (start(1), "TAILGATING".to_string(), 1),
            (start(0), "TAILGATING".to_string(), 2),
        ],
        "newest first; of two panes with one start, the one applied last first"
    );
    // A grown count replaces the pane's copy (no second copy), which moves to the front of
    // the panes with its start.
    model
        .apply(pane(&cell, EventType::Tailgating, T0 + MINUTE, 7), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(
        listed(&snapshot),
        [
            (start(2), "TAILGATING".to_string(), 4),
            (start(1), "TAILGATING".to_string(), 7),
            (start(1), "DOOR_FORCED".to_string(), 3),
            (start(0), "TAILGATING".to_string(), 2),
        ]
    );
    // 60 newer panes push the older ones out, and a pane older than all 60 is not listed.
    for minute in 10..70 {
        model
            .apply(
                pane(&cell, EventType::Tailgating, T0 + minute * MINUTE, 1),
                T0,
            )
            .unwrap();
    }
    model
        .apply(pane(&cell, EventType::DoorForced, T0 + 5 * MINUTE, 1), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    let panes = listed(&snapshot);
    assert_eq!(panes.len(), city::RECENT_WINDOWS_PER_CELL);
    assert_eq!(panes.first().unwrap().0, start(69));
    assert_eq!(panes.last().unwrap().0, start(10));
}

#[test]
fn records_about_unknown_places_or_without_times_are_rejected_not_counted() {
    let (mut model, _registry) = model();
    assert_eq!(
        model.apply(pane("99999999999999", EventType::Tailgating, T0, 1), T0),
        Err(RecordRejected::UnknownPlace)
    );
    let registry = GridRegistry::embedded();
    let no_times = OutputRecord::Window(ReadBackPane::of_cell_window(
        &crate::proto::CellWindow {
            grid_id: grid(&registry, 0),
            ..Default::default()
        },
        &registry,
    ));
    assert_eq!(model.apply(no_times, T0), Err(RecordRejected::Malformed));
    let (snapshot, _) = model.publish(T0);
    assert!(snapshot.rankings[0].is_empty());
    assert_eq!(snapshot.watermark_millis, None);
}

#[test]
fn hottest_cells_rank_by_events_in_the_view() {
    let (mut model, registry) = model();
    let (busy, quiet) = (grid(&registry, 5), grid(&registry, 3));
    model
        .apply(pane(&quiet, EventType::Tailgating, T0, 1), T0)
        .unwrap();
    model
        .apply(pane(&busy, EventType::Tailgating, T0, 7), T0)
        .unwrap();
    let (snapshot, _) = model.publish(T0);
    let ranked: Vec<String> = snapshot
        .ranked_cells(0)
        .map(|cell| cell.place.grid_id.clone().unwrap())
        .collect();
    assert_eq!(ranked, [busy, quiet]);
}

#[test]
fn firing_alerts_list_life_safety_first_then_severity_then_age_and_resolved_ones_after() {
    let (mut model, registry) = model();
    let (a, b, c) = (grid(&registry, 0), grid(&registry, 1), grid(&registry, 2));
    model
        .apply(
            alert(&a, EventType::DoorForced, 2, T0, AlertStatus::Firing),
            T0,
        )
        .unwrap();
    model
        .apply(
            alert(
                &b,
                EventType::FireSmoke,
                1,
                T0 + MINUTE,
                AlertStatus::Firing,
            ),
            T0,
        )
        .unwrap();
    model
        .apply(
            alert(&c, EventType::Loitering, 3, T0, AlertStatus::Firing),
            T0,
        )
        .unwrap();
    model
        .apply(
            alert(&c, EventType::Loitering, 3, T0, AlertStatus::Resolved),
            T0,
        )
        .unwrap();
    let (snapshot, payloads) = model.publish(T0);
    let order: Vec<(&str, &str)> = snapshot
        .alerts
        .iter()
        .map(|alert| (alert.event_type.as_str(), alert.status.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("FIRE_SMOKE", "FIRING"),
            ("DOOR_FORCED", "FIRING"),
            ("LOITERING", "RESOLVED")
        ]
    );
    assert!(snapshot.alerts[0].life_safety);
    assert_eq!(
        snapshot.alerts[0].place.grid_id.as_deref(),
        Some(b.as_str())
    );
    let cell = snapshot.cell(&b).unwrap();
    assert!(cell.life_safety_firing);
    assert_eq!(cell.firing_alerts, 1);
    // One stream event per alert changed, the last state of each.
    let alert_events = payloads
        .iter()
        .filter(|payload| matches!(payload, StreamPayload::Alert(_)))
        .count();
    assert_eq!(alert_events, 3);
}

#[test]
fn an_older_change_of_an_alert_replayed_after_a_newer_one_is_ignored() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    model
        .apply(
            alert(&cell, EventType::FireSmoke, 1, T0, AlertStatus::Resolved),
            T0,
        )
        .unwrap();
    assert_eq!(
        model.apply(
            alert(&cell, EventType::FireSmoke, 1, T0, AlertStatus::Firing),
            T0
        ),
        Err(RecordRejected::Superseded)
    );
    let (snapshot, _) = model.publish(T0);
    assert_eq!(snapshot.alerts[0].status, "RESOLVED");
    assert!(!snapshot.cell(&cell).unwrap().life_safety_firing);
}

#[test]
fn a_resolved_alert_is_forgotten_fifteen_minutes_of_event_time_after_it_resolved() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    model
        .apply(
            alert(&cell, EventType::FireSmoke, 1, T0, AlertStatus::Resolved),
            T0,
        )
        .unwrap();
    model
        .apply(pane(&cell, EventType::Tailgating, T0 + 15 * MINUTE, 1), T0)
        .unwrap();
    assert_eq!(
        model.publish(T0).0.alerts.len(),
        1,
        "resolved 15 min ago: still listed"
    );
    model
        .apply(pane(&cell, EventType::Tailgating, T0 + 17 * MINUTE, 1), T0)
        .unwrap();
    assert!(model.publish(T0).0.alerts.is_empty());
}

fn partial(partition: &str, community_id: &str, cases_filed: u64) -> OutputRecord {
    OutputRecord::FraudPartial(crate::proto::FraudPartial {
        source: crate::proto::FraudCountSource::Streamed as i32,
        coverage: Vec::new(),
        community_first_seen_ms: Default::default(),
        partition: partition.to_string(),
        counts: vec![CommunityYearCounts {
            community_id: community_id.to_string(),
            year: 2026,
            month: 1,
            cases_filed,
            ..Default::default()
        }],
        updated_at: None,
    })
}

#[test]
fn fraud_counts_sum_over_partitions_and_a_newer_partial_of_a_partition_replaces_its_old_one() {
    let (mut model, registry) = model();
    let community = registry.communities()[0].id.clone();
    model.apply(partial("events/0", &community, 2), T0).unwrap();
    model.apply(partial("events/1", &community, 3), T0).unwrap();
    model.apply(partial("events/0", &community, 4), T0).unwrap();
    let (snapshot, payloads) = model.publish(T0);
    let report = snapshot.fraud.as_ref().unwrap();
    assert_eq!(report.city.cases_ytd, 7);
    let entry = report
        .communities
        .iter()
        .find(|entry| entry.community_id.as_deref() == Some(community.as_str()))
        .unwrap();
    assert_eq!(entry.cases_ytd, 7);
    assert!(payloads
        .iter()
        .any(|payload| matches!(payload, StreamPayload::Fraud(_))));
    let (_, payloads) = model.publish(T0 + 1000);
    assert!(
        !payloads
            .iter()
            .any(|payload| matches!(payload, StreamPayload::Fraud(_))),
        "no fraud event without a change"
    );
}

fn status(instance: &str, dead_late: u64, events_per_second: f64) -> OutputRecord {
    OutputRecord::InstanceStatus(crate::proto::InstanceStatus {
        instance_id: instance.to_string(),
        partitions: vec!["events/0".to_string(), "events/1".to_string()],
        events_per_second,
        dead_letters_total: [("late".to_string(), dead_late)].into_iter().collect(),
        broker_reachable: true,
        source: "kafka".to_string(),
        ..Default::default()
    })
}

#[test]
fn the_pipeline_strip_sums_live_instances_and_differences_dead_letters_over_fifteen_minutes() {
    let (mut model, _registry) = model();
    model.apply(status("gw-1", 10, 100.0), T0).unwrap();
    model.apply(status("gw-2", 0, 50.0), T0).unwrap();
    model.apply(status("gw-1", 14, 100.0), T0 + 5_000).unwrap();
    model.apply(status("gw-2", 0, 50.0), T0 + 5_000).unwrap();
    let (snapshot, _) = model.publish(T0 + 5_000);
    let strip = &snapshot.status;
    assert_eq!(strip.events_per_second, 150.0);
    assert_eq!(
        strip.partitions_total, 2,
        "both claim events/0 and events/1"
    );
    assert_eq!(strip.dead_letters_15m["late"], 4);
    assert_eq!(strip.broker_reachable, Some(true));
    // gw-2 goes silent: stale after 15 s, no longer summed; gone after its tombstone.
    model.apply(status("gw-1", 14, 100.0), T0 + 25_000).unwrap();
    let (snapshot, _) = model.publish(T0 + 25_000);
    let stale: Vec<bool> = snapshot.status.instances.iter().map(|i| i.stale).collect();
    assert_eq!(stale, [false, true]);
    assert_eq!(snapshot.status.events_per_second, 100.0);
    model
        .apply(
            OutputRecord::InstanceGone {
                instance_id: "gw-2".to_string(),
            },
            T0 + 26_000,
        )
        .unwrap();
    assert_eq!(model.publish(T0 + 26_000).0.status.instances.len(), 1);
}

#[test]
fn only_cells_whose_counts_changed_are_streamed() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    model
        .apply(pane(&cell, EventType::Tailgating, T0, 1), T0)
        .unwrap();
    let (_, payloads) = model.publish(T0);
    let changed: Vec<&CellsChange> = payloads
        .iter()
        .filter_map(|payload| match payload {
            StreamPayload::Cells(change) => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].cells.len(), 1);
    assert_eq!(changed[0].cells[0].grid_id, cell);
    let (_, payloads) = model.publish(T0 + 1000);
    assert!(!payloads
        .iter()
        .any(|payload| matches!(payload, StreamPayload::Cells(_))));
}

#[test]
fn the_writer_publishes_stream_events_before_the_snapshot_that_includes_them() {
    let (model, registry) = model();
    let (mut writer, reader) = ReadModelWriter::new(model);
    let mut subscription = reader.subscribe(None);
    writer.apply(pane(&grid(&registry, 0), EventType::Tailgating, T0, 2), T0);
    writer.publish(T0);
    let snapshot = reader.snapshot();
    let event = subscription.live.try_recv().unwrap();
    assert!(event.id <= snapshot.last_event_id);
    assert_eq!(snapshot.cells[0].events, [2, 2]);
    assert_eq!(
        snapshot.districts.iter().map(|d| d.events[0]).sum::<u64>(),
        2
    );
    assert_eq!(
        snapshot
            .communities
            .iter()
            .map(|c| c.events[0])
            .sum::<u64>(),
        2
    );
}

#[test]
fn a_partition_claimed_by_a_dead_instance_and_its_new_owner_counts_once() {
    let (mut model, _registry) = model();
    // gw-1 held events/0 and events/1 and died; gw-2 took them over within the stale time.
    model.apply(status("gw-1", 0, 10.0), T0).unwrap();
    model.apply(status("gw-2", 0, 10.0), T0 + 1_000).unwrap();
    let (snapshot, _) = model.publish(T0 + 2_000);
    assert_eq!(snapshot.status.instances.len(), 2);
    assert_eq!(snapshot.status.partitions_total, 2);
}

#[test]
fn a_community_seen_on_two_partitions_is_named_in_the_report() {
    let (mut model, registry) = model();
    let community = registry.communities()[3].id.clone();
    let seen_on = |partition: &str| {
        OutputRecord::FraudPartial(crate::proto::FraudPartial {
            partition: partition.to_string(),
            source: crate::proto::FraudCountSource::Streamed as i32,
            coverage: vec![crate::proto::TimeSpan {
                start_ms: T0 - 60_000,
                end_ms: T0,
            }],
            community_first_seen_ms: [(community.clone(), T0 - 60_000)].into_iter().collect(),
            ..Default::default()
        })
    };
    model.apply(seen_on("events/0"), T0).unwrap();
    let (snapshot, _) = model.publish(T0);
    assert!(snapshot
        .fraud
        .as_ref()
        .unwrap()
        .split_communities
        .is_empty());
    model.apply(seen_on("events/4"), T0).unwrap();
    let (snapshot, _) = model.publish(T0);
    let split = &snapshot.fraud.as_ref().unwrap().split_communities;
    assert_eq!(split.len(), 1);
    assert_eq!(split[0].community_id, community);
    assert_eq!(split[0].partitions, vec!["events/0", "events/4"]);
}

/// A firing fraud alert of `rule_kind` with no grid and no community: district scope when
/// `district_id` is set, else whatever `scope` says.
fn unplaced_fraud_alert(rule_kind: &str, scope: &str, district_id: &str) -> OutputRecord {
    OutputRecord::Alert(Box::new(crate::proto::Alert {
        alert_id: format!("{rule_kind}-{scope}-{district_id}-a"),
        fingerprint: format!("{rule_kind}-{scope}-{district_id}-f"),
        rule: format!("fraud_{rule_kind}"),
        rule_kind: rule_kind.to_string(),
        status: AlertStatus::Firing as i32,
        scope: scope.to_string(),
        district_id: district_id.to_string(),
        event_type: EventType::FraudWarning as i32,
        severity: 2,
        starts_at: Some(millis_to_timestamp(T0)),
        updated_at: Some(millis_to_timestamp(T0)),
        ..Default::default()
    }))
}

#[test]
fn a_district_scope_alert_is_placed_at_its_district_and_one_of_an_unknown_district_is_rejected() {
    let (mut model, registry) = model();
    let district = registry.districts()[0].clone();
    let district_alert = |district_id: &str| unplaced_fraud_alert("spike", "", district_id);
    assert_eq!(
        model.apply(district_alert("999999"), T0),
        Err(RecordRejected::UnknownPlace)
    );
    model.apply(district_alert(&district.code), T0).unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(snapshot.alerts.len(), 1);
    let place = &snapshot.alerts[0].place;
    assert_eq!(place.district_id, district.code);
    assert_eq!(place.district_name, district.name_zh);
    assert!(place.community_id.is_empty() && place.grid_id.is_none());
    assert_ne!(place.centroid, [0.0, 0.0]);
}

#[test]
fn a_city_wide_alert_is_placed_at_the_city_and_an_unplaced_alert_of_another_scope_is_rejected() {
    let (mut model, _registry) = model();
    let city_alert = |scope: &str| unplaced_fraud_alert("scan", scope, "");
    assert_eq!(
        model.apply(city_alert("cluster"), T0),
        Err(RecordRejected::UnknownPlace)
    );
    model.apply(city_alert("city"), T0).unwrap();
    let (snapshot, _) = model.publish(T0);
    assert_eq!(snapshot.alerts.len(), 1);
    let place = &snapshot.alerts[0].place;
    assert!(place.district_id.is_empty() && place.community_id.is_empty());
    assert_ne!(place.centroid, [0.0, 0.0]);
}

fn status_with_watermark(instance: &str, updated: i64, watermark: Option<i64>) -> OutputRecord {
    OutputRecord::InstanceStatus(crate::proto::InstanceStatus {
        instance_id: instance.to_string(),
        updated_at: Some(millis_to_timestamp(updated)),
        watermark: watermark.map(millis_to_timestamp),
        source: "kafka".to_string(),
        ..Default::default()
    })
}

#[test]
fn the_live_watermark_is_the_oldest_of_instances_that_reported_lately_by_their_own_clock() {
    let (mut model, _registry) = model();
    assert_eq!(model.live_watermark_millis(T0), None);
    let wall = T0 + 60 * MINUTE;
    // A dead instance's last status, read back from the compacted topic just now: its own
    // updated_at is an hour old, so it does not hold the whole city back.
    model
        .apply(
            status_with_watermark("gw-dead", T0, Some(T0 - 30 * MINUTE)),
            wall,
        )
        .unwrap();
    model
        .apply(
            status_with_watermark("gw-1", wall - 2_000, Some(T0 + 50 * MINUTE)),
            wall,
        )
        .unwrap();
    model
        .apply(
            status_with_watermark("gw-2", wall - 4_000, Some(T0 + 40 * MINUTE)),
            wall,
        )
        .unwrap();
    // Live, without a watermark yet (no event): not counted either.
    model
        .apply(status_with_watermark("gw-3", wall - 1_000, None), wall)
        .unwrap();
    assert_eq!(model.live_watermark_millis(wall), Some(T0 + 40 * MINUTE));
    // Statuses go stale 15 s after their own updated_at: gw-2's first, then only gw-1 counts.
    assert_eq!(
        model.live_watermark_millis(wall + 10_000),
        Some(T0 + 40 * MINUTE)
    );
    assert_eq!(
        model.live_watermark_millis(wall + 12_000),
        Some(T0 + 50 * MINUTE)
    );
    assert_eq!(model.live_watermark_millis(wall + 20_000), None);
}

#[test]
fn the_model_shows_an_alert_change_once_it_holds_that_change_or_a_newer_one() {
    let (mut model, registry) = model();
    let cell = grid(&registry, 0);
    let firing = alert(&cell, EventType::FireSmoke, 1, T0, AlertStatus::Firing);
    let resolved = alert(&cell, EventType::FireSmoke, 1, T0, AlertStatus::Resolved);
    let alert_of = |record: &OutputRecord| match record {
        OutputRecord::Alert(alert) => alert.as_ref().clone(),
        _ => crate::proto::Alert::default(),
    };
    let (firing_alert, resolved_alert) = (alert_of(&firing), alert_of(&resolved));
    assert!(!model.shows_alert(&firing_alert));
    model.apply(firing, T0).unwrap();
    assert!(model.shows_alert(&firing_alert));
    assert!(
        !model.shows_alert(&resolved_alert),
        "the resolution is newer"
    );
    model.apply(resolved, T0 + MINUTE).unwrap();
    assert!(model.shows_alert(&resolved_alert));
    assert!(
        model.shows_alert(&firing_alert),
        "an older change is shown by a newer one"
    );
}
