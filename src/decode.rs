//! Decoding and validation: bytes (one JSON line or one protobuf message) → a validated
//! [`IncidentEvent`], or a [`Rejection`] with a stable snake_case reason.
//!
//! JSON follows the proto3 JSON mapping of `IncidentEvent` (pbjson): snake_case or
//! lowerCamelCase field names, `occurred_at` as RFC 3339, `event_type` as the enum name
//! (`"FIRE_SMOKE"`) or number; unknown fields are ignored so newer producers keep working.
//! Personal data (phone and ID-card numbers, personal attributes) is pseudonymized by
//! [`crate::privacy`] before the event reaches any output, dead letters included; rejection
//! details describe what was wrong without echoing input values.

mod common_shape;
mod flat_protobuf;

use prost::Message;

use crate::dead_letter::DeadLetterReason;
use crate::event::default_severity;
use crate::privacy::{PrivacySettings, Pseudonymizer};
use crate::proto::{EventType, IncidentEvent};
use crate::time::timestamp_to_millis;

/// Replaces `target`'s text with `text`, keeping its allocation: how both fast paths fill a
/// reused event's ids.
fn assign(target: &mut String, text: &str) {
    target.clear();
    target.push_str(text);
}

/// Wire format of encoded records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// One JSON event per line.
    Jsonl,
    /// Binary protobuf events, each preceded by its length (a protobuf varint).
    Protobuf,
}

impl InputFormat {
    /// The lowercase name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Jsonl => "jsonl",
            InputFormat::Protobuf => "protobuf",
        }
    }
}

/// A rejected input: the reason, a human-readable detail and the event id when known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// Stable reason.
    pub reason: DeadLetterReason,
    /// What exactly was wrong, for the operator reading the dead letter.
    pub detail: String,
    /// The event id, when decoding got that far (empty otherwise).
    pub event_id: String,
}

impl Rejection {
    fn new(reason: DeadLetterReason, detail: impl Into<String>, event_id: &str) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
            event_id: event_id.to_string(),
        }
    }
}

/// What validation established about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedFields {
    /// A taxonomy member (never `Unspecified`).
    pub event_type: EventType,
    /// Effective severity 1..=4.
    pub severity: u8,
    /// Event time, epoch milliseconds.
    pub occurred_at_millis: i64,
}

/// Decoding and validation settings (from config `[ingest]` and `[privacy]`).
#[derive(Debug, Clone)]
pub struct DecodeSettings {
    /// An `occurred_at` more than this ahead of the wall clock is `timestamp_out_of_range`.
    pub max_clock_skew_millis: i64,
    /// An `occurred_at` before this instant is `timestamp_out_of_range` (catches zeroed clocks).
    pub min_occurred_at_millis: i64,
    /// Key, key id and personal attribute keys for pseudonyms.
    pub privacy: PrivacySettings,
}

/// 2000-01-01T00:00:00Z: nothing in this system happened earlier.
pub const DEFAULT_MIN_OCCURRED_AT_MILLIS: i64 = 946_684_800_000;

/// Decodes and validates events.
#[derive(Clone)]
pub struct Decoder {
    /// Limits and keys.
    settings: DecodeSettings,
    /// Replaces personal data with pseudonyms.
    pseudonymizer: Pseudonymizer,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Decoder")
            .field(
                "max_clock_skew_millis",
                &self.settings.max_clock_skew_millis,
            )
            .field(
                "min_occurred_at_millis",
                &self.settings.min_occurred_at_millis,
            )
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder with the given settings.
    pub fn new(settings: DecodeSettings) -> Decoder {
        let pseudonymizer = Pseudonymizer::new(&settings.privacy);
        Decoder {
            settings,
            pseudonymizer,
        }
    }

    /// Decodes one record's bytes. A rejection's event id is scrubbed of personal data.
    pub fn decode(&self, bytes: &[u8], format: InputFormat) -> Result<IncidentEvent, Rejection> {
        let mut event = IncidentEvent::default();
        self.decode_into(bytes, format, &mut event)?;
        Ok(event)
    }

    /// Decodes one record's bytes into `event`, reusing its string buffers (a replay recycles
    /// the events the counting thread is done with, so decoding allocates nothing per id).
    /// The result is exactly [`Decoder::decode`]'s; after a rejection `event` holds nothing
    /// meaningful.
    pub fn decode_into(
        &self,
        bytes: &[u8],
        format: InputFormat,
        event: &mut IncidentEvent,
    ) -> Result<(), Rejection> {
        let decoded = match format {
            InputFormat::Jsonl => decode_json_into(bytes, event),
            InputFormat::Protobuf if flat_protobuf::decode_flat_protobuf_into(bytes, event) => {
                Ok(())
            }
            InputFormat::Protobuf => {
                // `clear` keeps the buffers; prost's `merge` copies each string into them.
                event.clear();
                // prost's messages name fields and wire problems, never values.
                event.merge(bytes).map_err(|error| {
                    Rejection::new(DeadLetterReason::InvalidProtobuf, error.to_string(), "")
                })
            }
        };
        decoded.map_err(|rejection| self.scrub_rejection(rejection))
    }

    /// `rejection` with personal data scrubbed from its detail and event id: the last line of
    /// defence for texts that may carry input (the pipeline applies it to every dead letter).
    pub fn scrub_rejection(&self, rejection: Rejection) -> Rejection {
        Rejection {
            reason: rejection.reason,
            detail: self
                .pseudonymizer
                .scrub_text(&rejection.detail)
                .into_owned(),
            event_id: self
                .pseudonymizer
                .scrub_text(&rejection.event_id)
                .into_owned(),
        }
    }

    /// Validates a decoded event against `wall_millis` and pseudonymizes it in place.
    pub fn validate(
        &self,
        event: &mut IncidentEvent,
        wall_millis: i64,
    ) -> Result<ValidatedFields, Rejection> {
        self.pseudonymize(event);
        if event.event_id.is_empty() {
            return Err(Rejection::new(
                DeadLetterReason::MissingEventId,
                "event_id is empty",
                "",
            ));
        }
        let event_type = match EventType::try_from(event.event_type) {
            Ok(EventType::Unspecified) => {
                return Err(Rejection::new(
                    DeadLetterReason::UnknownEventType,
                    "event_type is missing or EVENT_TYPE_UNSPECIFIED",
                    &event.event_id,
                ))
            }
            Ok(event_type) => event_type,
            Err(_) => {
                return Err(Rejection::new(
                    DeadLetterReason::UnknownEventType,
                    format!("event_type {} is not in the taxonomy", event.event_type),
                    &event.event_id,
                ))
            }
        };
        let severity = match event.severity {
            0 => default_severity(event_type),
            explicit @ 1..=4 => explicit as u8,
            other => {
                return Err(Rejection::new(
                    DeadLetterReason::SeverityOutOfRange,
                    format!("severity {other} is not 0 (type default) or 1..=4"),
                    &event.event_id,
                ))
            }
        };
        let Some(occurred_at) = event.occurred_at.as_ref() else {
            return Err(Rejection::new(
                DeadLetterReason::MissingOccurredAt,
                "occurred_at is missing",
                &event.event_id,
            ));
        };
        let occurred_at_millis = timestamp_to_millis(occurred_at);
        let latest_allowed_millis = wall_millis.saturating_add(self.settings.max_clock_skew_millis);
        if occurred_at_millis > latest_allowed_millis {
            return Err(Rejection::new(
                DeadLetterReason::TimestampOutOfRange,
                format!(
                    "occurred_at {} is more than {} ms ahead of the wall clock",
                    crate::time::millis_to_rfc3339(occurred_at_millis),
                    self.settings.max_clock_skew_millis,
                ),
                &event.event_id,
            ));
        }
        if occurred_at_millis < self.settings.min_occurred_at_millis {
            return Err(Rejection::new(
                DeadLetterReason::TimestampOutOfRange,
                format!(
                    "occurred_at {} is before {}",
                    crate::time::millis_to_rfc3339(occurred_at_millis),
                    crate::time::millis_to_rfc3339(self.settings.min_occurred_at_millis)
                ),
                &event.event_id,
            ));
        }
        Ok(ValidatedFields {
            event_type,
            severity,
            occurred_at_millis,
        })
    }

    /// Replaces personal data in `event` with pseudonyms (see [`crate::privacy`]). Idempotent.
    pub fn pseudonymize(&self, event: &mut IncidentEvent) {
        self.pseudonymizer.pseudonymize_event(event);
    }

    /// Scrubs phone and ID-card numbers (every format [`crate::privacy`] knows) from bytes
    /// that could not be decoded, so that even a dead letter of a broken record carries none
    /// in clear.
    pub fn scrub_undecodable(&self, bytes: &[u8]) -> Vec<u8> {
        self.pseudonymizer.scrub_bytes(bytes).into_owned()
    }
}

fn decode_json_into(bytes: &[u8], event: &mut IncidentEvent) -> Result<(), Rejection> {
    if common_shape::decode_common_shape_into(bytes, event) {
        return Ok(());
    }
    match serde_json::from_slice::<IncidentEvent>(bytes) {
        Ok(decoded) => {
            *event = decoded;
            Ok(())
        }
        Err(error) => Err(classify_json_error(bytes, error)),
    }
}

/// Slow path, only for rejected lines: tells an unknown event type apart from broken JSON.
fn classify_json_error(bytes: &[u8], error: serde_json::Error) -> Rejection {
    let invalid_json = |detail: String| Rejection::new(DeadLetterReason::InvalidJson, detail, "");
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return invalid_json(json_error_detail(&error));
    };
    let event_id = object
        .get("event_id")
        .or_else(|| object.get("eventId"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let event_type_value = object.get("event_type").or_else(|| object.get("eventType"));
    let event_type_is_unknown = match event_type_value {
        Some(serde_json::Value::String(name)) => EventType::from_str_name(name).is_none(),
        Some(serde_json::Value::Number(number)) => number
            .as_i64()
            .and_then(|value| i32::try_from(value).ok())
            .is_none_or(|value| EventType::try_from(value).is_err()),
        _ => false,
    };
    if event_type_is_unknown {
        let shown = shown_event_type(event_type_value);
        return Rejection::new(
            DeadLetterReason::UnknownEventType,
            format!("event_type {shown} is not in the taxonomy"),
            event_id,
        );
    }
    Rejection::new(
        DeadLetterReason::InvalidJson,
        json_error_detail(&error),
        event_id,
    )
}

/// serde_json's syntax errors are fixed texts with a position; its data errors quote the
/// offending value ("invalid type: string \"13800138000\"…"), so only their position is kept.
fn json_error_detail(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => error.to_string(),
        serde_json::error::Category::Data | serde_json::error::Category::Io => format!(
            "a field has the wrong type or an invalid value at line {} column {}",
            error.line(),
            error.column()
        ),
    }
}

/// How an unknown `event_type` is shown in a detail: a name made only of letters and `_`
/// (it cannot carry a number) or an in-range number; anything else is described, not echoed.
fn shown_event_type(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(name))
            if name.len() <= 64
                && name
                    .chars()
                    .all(|character| character.is_ascii_alphabetic() || character == '_') =>
        {
            format!("{name:?}")
        }
        Some(serde_json::Value::String(_)) => "(a string that is not a type name)".to_string(),
        Some(serde_json::Value::Number(number))
            if number
                .as_i64()
                .is_some_and(|value| i32::try_from(value).is_ok()) =>
        {
            number.to_string()
        }
        Some(_) => "(a value that is not a type name or number)".to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339_to_millis;

    /// A decoder with test settings (also for `common_shape`'s tests).
    pub(super) fn decoder() -> Decoder {
        Decoder::new(DecodeSettings {
            max_clock_skew_millis: 3_600_000,
            min_occurred_at_millis: DEFAULT_MIN_OCCURRED_AT_MILLIS,
            privacy: test_privacy_settings(b"test-key"),
        })
    }

    fn test_privacy_settings(key: &[u8]) -> PrivacySettings {
        PrivacySettings {
            key: key.to_vec(),
            key_id: "k1".to_string(),
            pii_attribute_keys: vec!["phone".to_string(), "mobile".to_string()],
        }
    }

    fn wall() -> i64 {
        rfc3339_to_millis("2026-03-02T12:00:00Z").unwrap()
    }

    fn decode_and_validate(line: &str) -> Result<(IncidentEvent, ValidatedFields), Rejection> {
        let decoder = decoder();
        let mut event = decoder.decode(line.as_bytes(), InputFormat::Jsonl)?;
        let fields = decoder.validate(&mut event, wall())?;
        Ok((event, fields))
    }

    #[test]
    fn snake_case_json_with_type_name_decodes() {
        let (event, fields) = decode_and_validate(
            r#"{"event_id":"e1","grid_id":"41061100100101","event_type":"FIRE_SMOKE","occurred_at":"2026-03-02T11:59:00Z"}"#,
        )
        .unwrap();
        assert_eq!(event.event_id, "e1");
        assert_eq!(fields.event_type, EventType::FireSmoke);
        assert_eq!(fields.severity, 1, "type default substituted for 0");
        assert_eq!(
            fields.occurred_at_millis,
            rfc3339_to_millis("2026-03-02T11:59:00Z").unwrap()
        );
    }

    #[test]
    fn lower_camel_case_json_and_numeric_type_decode() {
        let (event, fields) = decode_and_validate(
            r#"{"eventId":"e2","gridId":"41061100100101","eventType":7,"severity":3,"occurredAt":"2026-03-02T11:59:00+08:00","unknownFutureField":1}"#,
        )
        .unwrap();
        assert_eq!(event.grid_id, "41061100100101");
        assert_eq!(fields.event_type, EventType::PerimeterIntrusion);
        assert_eq!(fields.severity, 3);
    }

    #[test]
    fn broken_json_is_invalid_json() {
        let rejection = decode_and_validate(r#"{"event_id": "e1", "#).unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::InvalidJson);
        let rejection = decode_and_validate("   ").unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::InvalidJson);
        let rejection = decode_and_validate("[1,2]").unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::InvalidJson);
    }

    #[test]
    fn unknown_type_name_or_number_is_unknown_event_type_with_its_event_id() {
        for line in [
            r#"{"event_id":"e3","event_type":"UFO_SIGHTING","occurred_at":"2026-03-02T11:59:00Z"}"#,
            r#"{"event_id":"e3","event_type":999,"occurred_at":"2026-03-02T11:59:00Z"}"#,
            r#"{"event_id":"e3","occurred_at":"2026-03-02T11:59:00Z"}"#,
        ] {
            let rejection = decode_and_validate(line).unwrap_err();
            assert_eq!(
                rejection.reason,
                DeadLetterReason::UnknownEventType,
                "{line}"
            );
            assert_eq!(rejection.event_id, "e3");
        }
    }

    #[test]
    fn unknown_type_number_in_protobuf_is_unknown_event_type() {
        let event = IncidentEvent {
            event_id: "p1".into(),
            event_type: 77,
            occurred_at: Some(crate::time::millis_to_timestamp(wall())),
            ..Default::default()
        };
        let decoder = decoder();
        let mut decoded = decoder
            .decode(&event.encode_to_vec(), InputFormat::Protobuf)
            .unwrap();
        let rejection = decoder.validate(&mut decoded, wall()).unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::UnknownEventType);
    }

    #[test]
    fn garbage_bytes_are_invalid_protobuf() {
        let rejection = decoder()
            .decode(&[0xff, 0xff, 0xff, 0xff, 0x0f], InputFormat::Protobuf)
            .unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::InvalidProtobuf);
    }

    #[test]
    fn missing_event_id_is_rejected() {
        let rejection =
            decode_and_validate(r#"{"event_type":"SOS","occurred_at":"2026-03-02T11:59:00Z"}"#)
                .unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::MissingEventId);
    }

    #[test]
    fn severity_five_is_out_of_range() {
        let rejection = decode_and_validate(
            r#"{"event_id":"e4","event_type":"SOS","severity":5,"occurred_at":"2026-03-02T11:59:00Z"}"#,
        )
        .unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::SeverityOutOfRange);
    }

    #[test]
    fn missing_occurred_at_is_rejected() {
        let rejection = decode_and_validate(r#"{"event_id":"e5","event_type":"SOS"}"#).unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::MissingOccurredAt);
    }

    #[test]
    fn event_beyond_clock_skew_or_before_2000_is_timestamp_out_of_range() {
        let future = decode_and_validate(
            r#"{"event_id":"e6","event_type":"SOS","occurred_at":"2026-03-02T13:00:01Z"}"#,
        )
        .unwrap_err();
        assert_eq!(future.reason, DeadLetterReason::TimestampOutOfRange);
        let within_skew = decode_and_validate(
            r#"{"event_id":"e6","event_type":"SOS","occurred_at":"2026-03-02T12:59:59Z"}"#,
        );
        assert!(within_skew.is_ok());
        let epoch = decode_and_validate(
            r#"{"event_id":"e7","event_type":"SOS","occurred_at":"1970-01-01T00:00:00Z"}"#,
        )
        .unwrap_err();
        assert_eq!(epoch.reason, DeadLetterReason::TimestampOutOfRange);
    }

    #[test]
    fn phone_attributes_are_pseudonymized_deterministically_and_idempotently() {
        let line = r#"{"event_id":"f1","event_type":"FRAUD_WARNING","occurred_at":"2026-03-02T11:00:00Z","attributes":{"phone":"138-0013-8000","victim_mobile":"13900139000","channel":"96110"}}"#;
        let (event, _) = decode_and_validate(line).unwrap();
        let phone = event.attributes.get("phone").unwrap();
        assert!(
            phone.starts_with(crate::privacy::PSEUDONYM_PREFIX),
            "{phone}"
        );
        assert!(!phone.contains("13800138000"));
        assert_eq!(event.attributes.get("channel").unwrap(), "96110");
        let (again, _) = decode_and_validate(line).unwrap();
        assert_eq!(
            again.attributes, event.attributes,
            "same key, same pseudonym"
        );
        let mut twice = event.clone();
        decoder().pseudonymize(&mut twice);
        assert_eq!(
            twice.attributes, event.attributes,
            "pseudonymizing twice changes nothing"
        );
        let other_key = Decoder::new(DecodeSettings {
            privacy: test_privacy_settings(b"other"),
            ..decoder().settings
        });
        let mut with_other_key = decoder()
            .decode(line.as_bytes(), InputFormat::Jsonl)
            .unwrap();
        other_key.pseudonymize(&mut with_other_key);
        assert_ne!(
            with_other_key.attributes.get("phone"),
            event.attributes.get("phone")
        );
    }

    #[test]
    fn undecodable_bytes_lose_phone_numbers_but_keep_other_digits() {
        let scrubbed = decoder().scrub_undecodable(
            br#"{"phone":"13800138000","device_id":"41060000131100000001", "x":138001380001"#,
        );
        let text = String::from_utf8(scrubbed).unwrap();
        assert!(!text.contains("13800138000\""), "{text}");
        assert!(text.contains(crate::privacy::PSEUDONYM_PREFIX));
        assert!(text.contains("41060000131100000001"));
        assert!(
            text.contains("138001380001"),
            "12-digit runs are not phone numbers"
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let decoder = decoder();
            for format in [InputFormat::Jsonl, InputFormat::Protobuf] {
                if let Ok(mut event) = decoder.decode(&bytes, format) {
                    let _ = decoder.validate(&mut event, wall());
                }
            }
            let _ = decoder.scrub_undecodable(&bytes);
        }
    }
}
