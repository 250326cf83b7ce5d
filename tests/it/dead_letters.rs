//! Every dead-letter reason, fed through the pipeline: the record is rejected with the stable
//! reason, the dead letter carries the payload and position, the per-reason counter moves,
//! and nothing panics.

use crate::support::{default_pipeline, WALL_MILLIS};
use bytes::Bytes;
use gridwatch::dead_letter::DeadLetterReason;
use gridwatch::decode::InputFormat;
use gridwatch::grid::GridRegistry;
use gridwatch::pipeline::{Outputs, RecordResult};
use gridwatch::source::{RecordPayload, SourceRecord};
use gridwatch::time::millis_to_rfc3339;

fn json_record(line: &str, position: u64) -> SourceRecord {
    SourceRecord {
        payload: RecordPayload::Encoded {
            bytes: Bytes::from(line.to_string()),
            format: InputFormat::Jsonl,
        },
        partition: 0,
        position,
    }
}

fn registered_grid_id() -> String {
    GridRegistry::embedded().cells()[0].grid_id.clone()
}

fn event_line(event_id: &str, grid_id: &str, event_type: &str, occurred_at_millis: i64) -> String {
    format!(
        r#"{{"event_id":"{event_id}","grid_id":"{grid_id}","event_type":"{event_type}","occurred_at":"{}"}}"#,
        millis_to_rfc3339(occurred_at_millis)
    )
}

/// Feeds one line to a fresh pipeline (after `warm_up` lines) and checks the rejection.
fn assert_rejected(warm_up: &[String], line: &str, expected: DeadLetterReason) {
    let (mut pipeline, metrics) = default_pipeline();
    let mut outputs = Outputs::default();
    for (position, warm_up_line) in warm_up.iter().enumerate() {
        let result = pipeline.process(
            json_record(warm_up_line, position as u64 + 1),
            WALL_MILLIS,
            &mut outputs,
        );
        assert_eq!(
            result,
            RecordResult::Accepted,
            "warm-up line {warm_up_line}"
        );
    }
    outputs.dead_letters.clear();
    let position = warm_up.len() as u64 + 1;
    let result = pipeline.process(json_record(line, position), WALL_MILLIS, &mut outputs);
    assert_eq!(result, RecordResult::Rejected(expected), "line {line}");
    assert_eq!(outputs.dead_letters.len(), 1);
    let dead_letter = &outputs.dead_letters[0];
    assert_eq!(dead_letter.reason, expected.as_str());
    assert!(!dead_letter.detail.is_empty());
    assert!(!dead_letter.payload.is_empty(), "the payload is kept");
    assert_eq!(
        dead_letter.position,
        format!("partition 0 position {position}")
    );
    let counter = metrics
        .dead_letters
        .with_label_values(&[expected.as_str()])
        .get();
    assert_eq!(counter, 1, "dead-letter counter for {expected}");
}

#[test]
fn invalid_json_is_dead_lettered() {
    assert_rejected(&[], r#"{"event_id": "x", "#, DeadLetterReason::InvalidJson);
}

#[test]
fn invalid_protobuf_is_dead_lettered() {
    let (mut pipeline, metrics) = default_pipeline();
    let mut outputs = Outputs::default();
    let record = SourceRecord {
        payload: RecordPayload::Encoded {
            bytes: Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff]),
            format: InputFormat::Protobuf,
        },
        partition: 0,
        position: 77,
    };
    let result = pipeline.process(record, WALL_MILLIS, &mut outputs);
    assert_eq!(
        result,
        RecordResult::Rejected(DeadLetterReason::InvalidProtobuf)
    );
    assert_eq!(
        outputs.dead_letters[0].payload,
        vec![0x0a, 0xff, 0xff, 0xff]
    );
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["invalid_protobuf"])
            .get(),
        1
    );
}

#[test]
fn unframed_protobuf_tail_is_dead_lettered() {
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    let record = SourceRecord {
        payload: RecordPayload::Unframed {
            bytes: Bytes::from_static(&[0x85, 0x03]),
            format: InputFormat::Protobuf,
            detail: "truncated length-delimited message".to_string(),
        },
        partition: 0,
        position: 120,
    };
    let result = pipeline.process(record, WALL_MILLIS, &mut outputs);
    assert_eq!(
        result,
        RecordResult::Rejected(DeadLetterReason::InvalidProtobuf)
    );
    assert_eq!(
        outputs.dead_letters[0].detail,
        "truncated length-delimited message"
    );
}

#[test]
fn missing_event_id_is_dead_lettered() {
    let line = format!(
        r#"{{"grid_id":"{}","event_type":"SOS","occurred_at":"{}"}}"#,
        registered_grid_id(),
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    assert_rejected(&[], &line, DeadLetterReason::MissingEventId);
}

#[test]
fn unknown_event_type_is_dead_lettered() {
    let line = event_line(
        "e1",
        &registered_grid_id(),
        "UFO_SIGHTING",
        crate::support::START_MILLIS,
    );
    assert_rejected(&[], &line, DeadLetterReason::UnknownEventType);
}

#[test]
fn severity_out_of_range_is_dead_lettered() {
    let line = format!(
        r#"{{"event_id":"e1","grid_id":"{}","event_type":"SOS","severity":9,"occurred_at":"{}"}}"#,
        registered_grid_id(),
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    assert_rejected(&[], &line, DeadLetterReason::SeverityOutOfRange);
}

#[test]
fn missing_occurred_at_is_dead_lettered() {
    let line = format!(
        r#"{{"event_id":"e1","grid_id":"{}","event_type":"SOS"}}"#,
        registered_grid_id()
    );
    assert_rejected(&[], &line, DeadLetterReason::MissingOccurredAt);
}

#[test]
fn event_from_a_clock_in_the_future_is_dead_lettered_and_does_not_move_the_watermark() {
    let grid_id = registered_grid_id();
    let future = event_line("future", &grid_id, "LOITERING", WALL_MILLIS + 2 * 3_600_000);
    assert_rejected(&[], &future, DeadLetterReason::TimestampOutOfRange);

    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    pipeline.process(
        json_record(
            &event_line("a", &grid_id, "LOITERING", crate::support::START_MILLIS),
            1,
        ),
        WALL_MILLIS,
        &mut outputs,
    );
    let watermark_before = pipeline.watermark_millis();
    pipeline.process(json_record(&future, 2), WALL_MILLIS, &mut outputs);
    assert_eq!(
        pipeline.watermark_millis(),
        watermark_before,
        "a bad clock never drags the watermark"
    );
    let on_time = event_line(
        "b",
        &grid_id,
        "LOITERING",
        crate::support::START_MILLIS + 1_000,
    );
    let result = pipeline.process(json_record(&on_time, 3), WALL_MILLIS, &mut outputs);
    assert_eq!(result, RecordResult::Accepted, "everyone else is not late");
}

#[test]
fn unknown_grid_is_dead_lettered() {
    let line = event_line("e1", "99999999999999", "SOS", crate::support::START_MILLIS);
    assert_rejected(&[], &line, DeadLetterReason::UnknownGrid);
}

#[test]
fn invalid_coordinates_are_dead_lettered() {
    let line = format!(
        r#"{{"event_id":"e1","event_type":"SOS","lat":123.0,"lon":114.3,"crs":"GCJ02","occurred_at":"{}"}}"#,
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    assert_rejected(&[], &line, DeadLetterReason::InvalidCoordinates);
}

#[test]
fn late_event_goes_to_dead_letters_with_reason_late() {
    let grid_id = registered_grid_id();
    let start = crate::support::START_MILLIS;
    // The second event moves the watermark to start + 5 min − 10 s: the first minute is final.
    let warm_up = vec![
        event_line("a", &grid_id, "LOITERING", start + 1_000),
        event_line("b", &grid_id, "LOITERING", start + 300_000),
    ];
    let late = event_line("c", &grid_id, "LOITERING", start + 2_000);
    assert_rejected(&warm_up, &late, DeadLetterReason::Late);
    let (mut pipeline, metrics) = default_pipeline();
    let mut outputs = Outputs::default();
    for (position, line) in warm_up.iter().chain(std::iter::once(&late)).enumerate() {
        pipeline.process(
            json_record(line, position as u64),
            WALL_MILLIS,
            &mut outputs,
        );
    }
    assert_eq!(metrics.late_events.get(), 1);
}

#[test]
fn resent_event_is_a_duplicate_not_a_dead_letter_even_after_its_window_closed() {
    let grid_id = registered_grid_id();
    let start = crate::support::START_MILLIS;
    let (mut pipeline, metrics) = default_pipeline();
    let mut outputs = Outputs::default();
    let first = event_line("a", &grid_id, "LOITERING", start + 1_000);
    assert_eq!(
        pipeline.process(json_record(&first, 1), WALL_MILLIS, &mut outputs),
        RecordResult::Accepted
    );
    let later = event_line("b", &grid_id, "LOITERING", start + 300_000);
    assert_eq!(
        pipeline.process(json_record(&later, 2), WALL_MILLIS, &mut outputs),
        RecordResult::Accepted
    );
    assert_eq!(outputs.windows.len(), 1, "the first minute closed");
    assert_eq!(
        pipeline.process(json_record(&first, 3), WALL_MILLIS, &mut outputs),
        RecordResult::Duplicate
    );
    assert!(outputs.dead_letters.is_empty());
    // What the shell does whenever it writes a batch's outputs.
    pipeline.flush_metrics();
    assert_eq!(
        metrics.events_duplicate.with_label_values(&["file"]).get(),
        1
    );
}

#[test]
fn phone_numbers_never_reach_dead_letters_in_clear() {
    let line = format!(
        r#"{{"event_id":"f1","grid_id":"99999999999999","event_type":"FRAUD_WARNING","occurred_at":"{}","attributes":{{"phone":"13800138000"}}}}"#,
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    let broken = r#"{"event_id":"f2","attributes":{"phone":"13800138000"#;
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    pipeline.process(json_record(&line, 1), WALL_MILLIS, &mut outputs);
    pipeline.process(json_record(broken, 2), WALL_MILLIS, &mut outputs);
    assert_eq!(outputs.dead_letters.len(), 2);
    for dead_letter in &outputs.dead_letters {
        let payload = String::from_utf8_lossy(&dead_letter.payload);
        assert!(!payload.contains("13800138000"), "{payload}");
        assert!(payload.contains("pseudo:"), "{payload}");
    }
}

#[test]
fn arbitrary_lines_never_panic() {
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    let lines = [
        "", "null", "{}", "[]", "\"x\"", "{\"event_id\":1}", "{\"occurred_at\":\"yesterday\"}",
        "{\"event_id\":\"x\",\"event_type\":\"SOS\",\"occurred_at\":\"9999-12-31T23:59:59Z\"}",
        "{\"event_id\":\"x\",\"event_type\":\"SOS\",\"occurred_at\":\"2026-03-02T00:00:00Z\",\"lat\":\"NaN\",\"lon\":1}",
        "\u{0}\u{1}\u{2}",
    ];
    for (position, line) in lines.iter().enumerate() {
        let result = pipeline.process(
            json_record(line, position as u64),
            WALL_MILLIS,
            &mut outputs,
        );
        assert!(
            matches!(result, RecordResult::Rejected(_)),
            "{line:?} -> {result:?}"
        );
    }
    assert_eq!(outputs.dead_letters.len(), lines.len());
}

#[test]
fn received_decoded_and_dead_letter_counters_tell_decoding_from_validation_failures() {
    let (mut pipeline, metrics) = default_pipeline();
    let mut outputs = Outputs::default();
    let valid = event_line(
        "a",
        &registered_grid_id(),
        "LOITERING",
        crate::support::START_MILLIS,
    );
    let unknown_grid = event_line(
        "b",
        "99999999999999",
        "LOITERING",
        crate::support::START_MILLIS,
    );
    pipeline.process(json_record(&valid, 1), WALL_MILLIS, &mut outputs);
    pipeline.process(json_record(&unknown_grid, 2), WALL_MILLIS, &mut outputs);
    pipeline.process(json_record("{broken", 3), WALL_MILLIS, &mut outputs);
    // What the shell does whenever it writes a batch's outputs.
    pipeline.flush_metrics();
    assert_eq!(
        metrics.events_received.with_label_values(&["file"]).get(),
        3
    );
    assert_eq!(metrics.events_decoded.with_label_values(&["file"]).get(), 2);
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["unknown_grid"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["invalid_json"])
            .get(),
        1
    );
}

#[test]
fn an_id_above_its_limit_is_dead_lettered_naming_the_field_not_the_value() {
    let grid_id = registered_grid_id();
    let long_device = "9".repeat(50_000);
    let line = format!(
        r#"{{"event_id":"long","grid_id":"{grid_id}","device_id":"{long_device}","event_type":"SOS","occurred_at":"{}","attributes":{{"phone":"13800138000"}}}}"#,
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    assert_rejected(&[], &line, DeadLetterReason::FieldTooLong);
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    pipeline.process(json_record(&line, 1), WALL_MILLIS, &mut outputs);
    let dead_letter = &outputs.dead_letters[0];
    assert_eq!(
        dead_letter.detail,
        "device_id is 50000 bytes, above the 256-byte limit"
    );
    assert!(outputs.alerts.is_empty(), "refused before any rule");
    let payload = String::from_utf8_lossy(&dead_letter.payload);
    assert!(
        !payload.contains("13800138000") && payload.contains("pseudo:"),
        "refused before validation, the payload is still pseudonymized: {payload:.200}"
    );
}

#[test]
fn a_record_above_the_record_limit_is_dead_lettered_oversized_with_a_capped_payload() {
    let grid_id = registered_grid_id();
    let huge_note = "x".repeat(2 * 1024 * 1024);
    let line = format!(
        r#"{{"event_id":"big","grid_id":"{grid_id}","event_type":"SOS","occurred_at":"{}","attributes":{{"note":"{huge_note}"}}}}"#,
        millis_to_rfc3339(crate::support::START_MILLIS)
    );
    assert_rejected(&[], &line, DeadLetterReason::Oversized);
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    pipeline.process(json_record(&line, 1), WALL_MILLIS, &mut outputs);
    let dead_letter = &outputs.dead_letters[0];
    assert_eq!(dead_letter.payload.len(), 64 * 1024);
    assert!(
        dead_letter.detail.contains("above the 1048576-byte limit"),
        "{}",
        dead_letter.detail
    );
}
