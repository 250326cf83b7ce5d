//! Life safety first, and one bad clock harms no one else: a late fire alarm is dead-lettered
//! *and* alerted; one device whose clock runs far ahead, in the middle of a 100 k-event
//! replay, changes no other window, loses no alarm and raises no data gap.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::support::{
    pipeline_with_settings, record, replay_pipeline_settings, simulated_events, smoke_detector,
    sorted_window_lines, START_MILLIS, WALL_MILLIS,
};
use gridwatch::config::Config;
use gridwatch::grid::GridRegistry;
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, RecordResult};
use gridwatch::proto::{Alert, AlertStatus, EventType, IncidentEvent};
use gridwatch::time::millis_to_timestamp;
use gridwatch::window::progress::ClockGuardSettings;

const MINUTE: i64 = 60_000;

/// A pipeline as replay runs it (no processing-time advance), with the given clock guard.
fn pipeline_with_clock_guard(clock_guard: ClockGuardSettings) -> (Pipeline, Arc<Metrics>) {
    let mut settings = replay_pipeline_settings();
    settings.clock_guard = clock_guard;
    pipeline_with_settings(settings)
}

/// Runs `events` through a fresh pipeline and closes every window at the end.
fn run(events: &[IncidentEvent], clock_guard: ClockGuardSettings) -> (Outputs, Arc<Metrics>) {
    let (mut pipeline, metrics) = pipeline_with_clock_guard(clock_guard);
    let mut outputs = Outputs::default();
    for (position, event) in events.iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    pipeline.finish(WALL_MILLIS, &mut outputs);
    (outputs, metrics)
}

fn occurred_at_millis(event: &IncidentEvent) -> i64 {
    let timestamp = event.occurred_at.as_ref().unwrap();
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

fn fire_event(event_id: &str, device_id: &str, occurred_at_millis: i64) -> IncidentEvent {
    IncidentEvent {
        event_id: event_id.to_string(),
        source: "gateway".to_string(),
        device_id: device_id.to_string(),
        event_type: EventType::FireSmoke as i32,
        occurred_at: Some(millis_to_timestamp(occurred_at_millis)),
        ..IncidentEvent::default()
    }
}

fn alert_lines(alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|alert| serde_json::to_string(alert).unwrap())
        .collect()
}

#[test]
fn a_late_fire_alarm_is_dead_lettered_and_still_alerted() {
    let (device_id, _) = smoke_detector();
    let loitering_elsewhere = IncidentEvent {
        event_id: "move-time".to_string(),
        source: "gateway".to_string(),
        grid_id: GridRegistry::embedded().cells()[0].grid_id.clone(),
        event_type: EventType::Loitering as i32,
        occurred_at: Some(millis_to_timestamp(START_MILLIS + 5 * MINUTE)),
        ..IncidentEvent::default()
    };
    let first = IncidentEvent {
        event_id: "first".to_string(),
        occurred_at: Some(millis_to_timestamp(START_MILLIS)),
        ..loitering_elsewhere.clone()
    };
    let (mut pipeline, metrics) = pipeline_with_clock_guard(ClockGuardSettings::OFF);
    let mut outputs = Outputs::default();
    pipeline.process(record(&first, 0), WALL_MILLIS, &mut outputs);
    pipeline.process(record(&loitering_elsewhere, 1), WALL_MILLIS, &mut outputs);
    // The minute of this alarm is final (watermark start + 4 min 50 s).
    let late_fire = fire_event("late-fire", &device_id, START_MILLIS + 30_000);
    let result = pipeline.process(record(&late_fire, 2), WALL_MILLIS, &mut outputs);

    assert_eq!(
        result,
        RecordResult::Rejected(gridwatch::dead_letter::DeadLetterReason::Late)
    );
    assert_eq!(outputs.dead_letters.len(), 1);
    assert_eq!(outputs.dead_letters[0].reason, "late");
    let fired: Vec<&Alert> = outputs
        .alerts
        .iter()
        .filter(|alert| alert.status == AlertStatus::Firing as i32)
        .collect();
    assert_eq!(fired.len(), 1, "{:?}", outputs.alerts);
    assert_eq!(fired[0].rule, "life_safety");
    assert_eq!(fired[0].event_ids, vec!["late-fire".to_string()]);
    assert!(fired[0].late, "the alert says it came from a late event");
    assert_eq!(metrics.late_events.get(), 1);
    assert_eq!(
        metrics
            .late_alerts
            .with_label_values(&["life_safety"])
            .get(),
        1
    );
    // A late event that is not life-safety raises nothing.
    let late_loitering = IncidentEvent {
        event_id: "late-loitering".to_string(),
        occurred_at: Some(millis_to_timestamp(START_MILLIS + 40_000)),
        ..loitering_elsewhere
    };
    let alerts_before = outputs.alerts.len();
    pipeline.process(record(&late_loitering, 3), WALL_MILLIS, &mut outputs);
    assert_eq!(outputs.alerts.len(), alerts_before);
    assert_eq!(outputs.dead_letters.len(), 2);
}

/// The field defect: one event 55 minutes ahead of the stream, in the middle of a
/// 100 k-event replay. With the guard (the default) every other window, every alert outside
/// the device's community and every fire alarm in it are exactly those of the replay without
/// that event; without the guard, the same input makes thousands of events late.
#[test]
fn one_fast_clock_in_a_100k_replay_changes_no_other_window_and_loses_no_fire_alarm() {
    let events = simulated_events(11, 100_000, 1.0);
    let middle = events.len() / 2;
    let (device_id, community_id) = smoke_detector();
    let fast_clock_event = fire_event(
        "fast-clock",
        &device_id,
        occurred_at_millis(&events[middle]) + 55 * MINUTE,
    );
    let mut skewed = events.clone();
    skewed.insert(middle, fast_clock_event.clone());

    let default_guard = Config::default().clock_guard_settings();
    let (reference, _) = run(&events, default_guard);
    let (guarded, metrics) = run(&skewed, default_guard);

    assert!(reference.dead_letters.is_empty());
    assert!(
        guarded.dead_letters.is_empty(),
        "no event became late: {:?}",
        guarded.dead_letters.first()
    );
    assert_eq!(
        metrics
            .clock_ahead_events
            .with_label_values(&[device_id.as_str()])
            .get(),
        1,
        "the fast clock is counted under its device"
    );

    // Windows: the reference's, plus one FIRE_SMOKE count in the fast clock's window.
    let reference_windows: BTreeSet<String> = sorted_window_lines(&reference).into_iter().collect();
    let guarded_windows: BTreeSet<String> = sorted_window_lines(&guarded).into_iter().collect();
    let only_guarded: Vec<&String> = guarded_windows.difference(&reference_windows).collect();
    let only_reference: Vec<&String> = reference_windows.difference(&guarded_windows).collect();
    assert_eq!(only_guarded.len(), 1, "{only_guarded:?}");
    assert!(only_guarded[0].contains("FIRE_SMOKE"));
    assert!(only_reference.len() <= 1, "{only_reference:?}");
    assert_eq!(
        guarded_windows.len(),
        reference_windows.len() + 1 - only_reference.len()
    );

    // Alerts: identical outside the device's community; every fire alarm identical inside it,
    // plus the fast clock's own.
    let outside = |alerts: &[Alert]| -> Vec<Alert> {
        alerts
            .iter()
            .filter(|alert| alert.community_id != community_id)
            .cloned()
            .collect()
    };
    assert_eq!(
        alert_lines(&outside(&guarded.alerts)),
        alert_lines(&outside(&reference.alerts))
    );
    let fire_alarms = |alerts: &[Alert]| -> Vec<String> {
        alerts
            .iter()
            .filter(|alert| alert.event_type == EventType::FireSmoke as i32)
            .filter(|alert| !alert.event_ids.contains(&"fast-clock".to_string()))
            .map(|alert| serde_json::to_string(alert).unwrap())
            .collect()
    };
    assert!(fire_alarms(&reference.alerts).len() > 10);
    assert_eq!(fire_alarms(&guarded.alerts), fire_alarms(&reference.alerts));
    assert!(guarded
        .alerts
        .iter()
        .any(|alert| alert.event_ids.contains(&"fast-clock".to_string())
            && alert.status == AlertStatus::Firing as i32));
    let data_gaps = |alerts: &[Alert]| {
        alerts
            .iter()
            .filter(|alert| alert.rule_kind == "data_gap")
            .count()
    };
    assert_eq!(data_gaps(&guarded.alerts), data_gaps(&reference.alerts));

    // The same input without the guard: the damage the guard prevents.
    let (unguarded, _) = run(&skewed, ClockGuardSettings::OFF);
    let late = unguarded
        .dead_letters
        .iter()
        .filter(|dead_letter| dead_letter.reason == "late")
        .count();
    assert!(
        late > 1_000,
        "without the guard the fast clock makes others late ({late})"
    );
}

/// Two distinct fast clocks are tolerated (default `window.fast_clock_sources` = 2); when a
/// third source reports the same jump, time has moved and the watermark follows.
#[test]
fn a_jump_reported_by_more_sources_than_tolerated_moves_the_watermark() {
    let registry = GridRegistry::embedded();
    let grid_ids: Vec<String> = registry
        .cells()
        .iter()
        .take(4)
        .map(|cell| cell.grid_id.clone())
        .collect();
    let event = |id: &str, source: &str, grid: usize, at: i64| IncidentEvent {
        event_id: id.to_string(),
        source: source.to_string(),
        grid_id: grid_ids[grid].clone(),
        event_type: EventType::Loitering as i32,
        occurred_at: Some(millis_to_timestamp(at)),
        ..IncidentEvent::default()
    };
    let (mut pipeline, _) = pipeline_with_clock_guard(Config::default().clock_guard_settings());
    let mut outputs = Outputs::default();
    let mut position = 0;
    let mut feed = |pipeline: &mut Pipeline, event: IncidentEvent, outputs: &mut Outputs| {
        position += 1;
        pipeline.process(record(&event, position), WALL_MILLIS, outputs)
    };
    feed(
        &mut pipeline,
        event("a", "s1", 0, START_MILLIS),
        &mut outputs,
    );
    let watermark_at_start = pipeline.watermark_millis();
    feed(
        &mut pipeline,
        event("b", "s2", 1, START_MILLIS + 60 * MINUTE),
        &mut outputs,
    );
    feed(
        &mut pipeline,
        event("c", "s3", 2, START_MILLIS + 61 * MINUTE),
        &mut outputs,
    );
    assert_eq!(pipeline.watermark_millis(), watermark_at_start);
    feed(
        &mut pipeline,
        event("d", "s4", 3, START_MILLIS + 62 * MINUTE),
        &mut outputs,
    );
    assert_eq!(
        pipeline.watermark_millis(),
        Some(START_MILLIS + 60 * MINUTE - 10_000),
        "the third largest of the three sources ahead, minus the out-of-orderness"
    );
}
