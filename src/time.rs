//! Conversions between epoch milliseconds (what the stages compute with) and protobuf
//! `Timestamp`s / RFC 3339 strings (what the schemas carry).

// No panic path reachable from input, state or configuration (README "Security").

use pbjson_types::Timestamp;

/// An instant later than any real one: "never" for deadlines and expiries stored as epoch
/// milliseconds (e.g. an idle timeout that never fires).
pub const NEVER_MILLIS: i64 = i64::MAX;

/// Milliseconds per hour.
pub const HOUR_MILLIS: i64 = 3_600_000;

/// Milliseconds since the Unix epoch of a protobuf timestamp.
///
/// Saturates instead of overflowing, so that absurd inputs become absurd (and rejected) times
/// rather than panics.
pub fn timestamp_to_millis(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos) / 1_000_000)
}

/// The protobuf timestamp of an epoch-milliseconds instant.
pub fn millis_to_timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(NEVER_MILLIS)
}

/// RFC 3339 text (UTC, millisecond precision) of an epoch-milliseconds instant.
pub fn millis_to_rfc3339(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(date_time) => date_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("invalid-time({millis}ms)"),
    }
}

/// Parses RFC 3339 text into epoch milliseconds.
pub fn rfc3339_to_millis(text: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|date_time| date_time.timestamp_millis())
}

/// The current wall-clock time in epoch milliseconds.
pub fn wall_clock_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_through_timestamp_including_negative_times() {
        for millis in [0_i64, 1, 999, 1_000, 1_700_000_000_123, -1, -1_001] {
            assert_eq!(timestamp_to_millis(&millis_to_timestamp(millis)), millis);
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let millis = rfc3339_to_millis("2026-03-01T08:15:30.250Z").unwrap();
        assert_eq!(millis_to_rfc3339(millis), "2026-03-01T08:15:30.250Z");
    }

    #[test]
    fn absurd_timestamp_saturates_instead_of_panicking() {
        let timestamp = Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        };
        assert_eq!(timestamp_to_millis(&timestamp), i64::MAX);
    }
}
