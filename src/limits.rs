//! Input limits: what one record may cost. Input cannot buy unbounded memory or output — a
//! 200 MB line, 50 KB event ids or thousands of attributes are refused with a dead letter
//! naming the limit, before anything stores or repeats them (alerts, dedup, dead letters).
//!
//! Pure functions of the event and the limits; the pipeline turns a [`FieldTooLong`] into a
//! `field_too_long` dead letter and an oversized record into an `oversized` one.

use crate::proto::IncidentEvent;

/// Default largest record (one JSON line, protobuf message or Kafka value).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Default largest dead-letter payload kept (the rest is cut, and the detail says so).
pub const DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;
/// Default largest id (`event_id`, `device_id`, `source`, `grid_id`, `community_id`).
pub const DEFAULT_MAX_ID_BYTES: usize = 256;
/// Default most attributes per event.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 64;
/// Default largest attribute (key plus value).
pub const DEFAULT_MAX_ATTRIBUTE_BYTES: usize = 4096;

/// The limits of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest record; a longer one is dead-lettered `oversized` (its first bytes kept).
    pub max_record_bytes: usize,
    /// Largest dead-letter payload kept.
    pub max_dead_letter_payload_bytes: usize,
    /// Largest id field.
    pub max_id_bytes: usize,
    /// Most attributes.
    pub max_attributes: usize,
    /// Largest attribute, key plus value.
    pub max_attribute_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_dead_letter_payload_bytes: DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES,
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_attribute_bytes: DEFAULT_MAX_ATTRIBUTE_BYTES,
        }
    }
}

/// A field of an event above its limit. The detail names the field and the sizes, never the
/// value (input values do not belong in error texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {size} bytes, above the {limit}-byte limit")]
pub struct FieldTooLong {
    /// Which field (`event_id`, `attributes`, …).
    pub field: &'static str,
    /// Its size (bytes, or the attribute count for `attributes`).
    pub size: usize,
    /// The limit it exceeds.
    pub limit: usize,
}

/// Checks every size-limited field of `event`.
pub fn check_event_fields(
    event: &IncidentEvent,
    limits: &IngestLimits,
) -> Result<(), FieldTooLong> {
    let ids = [
        ("event_id", &event.event_id),
        ("device_id", &event.device_id),
        ("source", &event.source),
        ("grid_id", &event.grid_id),
        ("community_id", &event.community_id),
    ];
    for (field, value) in ids {
        if value.len() > limits.max_id_bytes {
            return Err(FieldTooLong {
                field,
                size: value.len(),
                limit: limits.max_id_bytes,
            });
        }
    }
    if event.attributes.len() > limits.max_attributes {
        return Err(FieldTooLong {
            field: "attributes",
            size: event.attributes.len(),
            limit: limits.max_attributes,
        });
    }
    let largest_attribute = event
        .attributes
        .iter()
        .map(|(key, value)| key.len().saturating_add(value.len()))
        .max()
        .unwrap_or(0);
    if largest_attribute > limits.max_attribute_bytes {
        return Err(FieldTooLong {
            field: "attribute",
            size: largest_attribute,
            limit: limits.max_attribute_bytes,
        });
    }
    Ok(())
}

/// `text` cut to at most `max_bytes`, at a character boundary.
pub fn truncate_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> IncidentEvent {
        IncidentEvent {
            event_id: "e1".to_string(),
            device_id: "41060200011340000001".to_string(),
            ..IncidentEvent::default()
        }
    }

    #[test]
    fn an_ordinary_event_is_within_every_limit() {
        assert_eq!(
            check_event_fields(&event(), &IngestLimits::default()),
            Ok(())
        );
    }

    #[test]
    fn a_long_id_is_named_without_its_value() {
        let long = IncidentEvent {
            device_id: "x".repeat(50_000),
            ..event()
        };
        let error = check_event_fields(&long, &IngestLimits::default()).unwrap_err();
        assert_eq!(error.field, "device_id");
        assert_eq!(
            error.to_string(),
            "device_id is 50000 bytes, above the 256-byte limit"
        );
    }

    #[test]
    fn too_many_or_too_large_attributes_are_refused() {
        let mut many = event();
        for index in 0..65 {
            many.attributes.insert(format!("k{index}"), "v".to_string());
        }
        assert_eq!(
            check_event_fields(&many, &IngestLimits::default())
                .unwrap_err()
                .field,
            "attributes"
        );
        let mut large = event();
        large
            .attributes
            .insert("note".to_string(), "x".repeat(5_000));
        assert_eq!(
            check_event_fields(&large, &IngestLimits::default())
                .unwrap_err()
                .field,
            "attribute"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_at_char_boundary("电话号码", 7), "电话");
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
        assert_eq!(truncate_at_char_boundary("电", 1), "");
    }
}
