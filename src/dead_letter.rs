//! Why an input becomes a dead letter: the stable reasons shared by decoding, grid
//! resolution (`unknown_grid`, `invalid_coordinates`) and windowing (`late`). A leaf, so that
//! every stage and the metrics can name a reason without depending on each other.

// No panic path reachable from input, state or configuration (README "Security").

/// Why an input was rejected. The snake_case names are stable: they are metric label values
/// and dead-letter `reason` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterReason {
    /// The line is not JSON, or not a JSON object matching `IncidentEvent`.
    InvalidJson,
    /// The bytes are not a protobuf `IncidentEvent` (or the stream could not be framed).
    InvalidProtobuf,
    /// `event_id` is empty: without it an event cannot be deduplicated.
    MissingEventId,
    /// `event_type` is missing, unspecified, or not in the taxonomy.
    UnknownEventType,
    /// `severity` is not 0 (type default) or 1..=4.
    SeverityOutOfRange,
    /// `occurred_at` is absent.
    MissingOccurredAt,
    /// `occurred_at` is further ahead of the wall clock than the allowed skew, or absurdly old.
    TimestampOutOfRange,
    /// No registered grid cell matches the grid id, the device or the coordinates.
    UnknownGrid,
    /// Coordinates are present but not valid numbers in range.
    InvalidCoordinates,
    /// The event's window was already final when it arrived.
    Late,
    /// The record is larger than `ingest.max_record_bytes` (only its first bytes are kept).
    Oversized,
    /// An id or attribute is larger than its limit (`ingest.max_id_bytes`, …).
    FieldTooLong,
}

impl DeadLetterReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [DeadLetterReason; 12] = [
        DeadLetterReason::InvalidJson,
        DeadLetterReason::InvalidProtobuf,
        DeadLetterReason::MissingEventId,
        DeadLetterReason::UnknownEventType,
        DeadLetterReason::SeverityOutOfRange,
        DeadLetterReason::MissingOccurredAt,
        DeadLetterReason::TimestampOutOfRange,
        DeadLetterReason::UnknownGrid,
        DeadLetterReason::InvalidCoordinates,
        DeadLetterReason::Late,
        DeadLetterReason::Oversized,
        DeadLetterReason::FieldTooLong,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::InvalidJson => "invalid_json",
            DeadLetterReason::InvalidProtobuf => "invalid_protobuf",
            DeadLetterReason::MissingEventId => "missing_event_id",
            DeadLetterReason::UnknownEventType => "unknown_event_type",
            DeadLetterReason::SeverityOutOfRange => "severity_out_of_range",
            DeadLetterReason::MissingOccurredAt => "missing_occurred_at",
            DeadLetterReason::TimestampOutOfRange => "timestamp_out_of_range",
            DeadLetterReason::UnknownGrid => "unknown_grid",
            DeadLetterReason::InvalidCoordinates => "invalid_coordinates",
            DeadLetterReason::Late => "late",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::FieldTooLong => "field_too_long",
        }
    }

    /// Position of the reason in [`DeadLetterReason::ALL`], for per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}
