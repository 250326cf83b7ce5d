//! The fast path of JSON decoding, for the shape almost every producer writes.
//!
//! pbjson's generated deserializer accepts everything the proto3 JSON mapping allows (numbers
//! as strings, enum numbers, `NaN`, unknown fields, …) and parses every timestamp with chrono's
//! general RFC 3339 parser; on a replay that was two thirds of the decoding thread. This path
//! accepts only the common shape — known field names in snake_case or lowerCamelCase, string
//! ids, an enum *name*, a numeric severity, RFC 3339 timestamps of the form
//! `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, numeric coordinates, string attributes — and
//! answers `None` for anything else, which then takes the pbjson path exactly as before. So the
//! fast path can only ever produce the event pbjson would have produced (a property test holds
//! it to pbjson on generated lines), and every rejection keeps its pbjson-derived reason and
//! detail.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer};

use super::assign;
use crate::proto::{Crs, EventType, IncidentEvent};

/// One event in the common shape, its ids borrowed from the line (copied into a reused event's
/// buffers, so a replay allocates nothing per id; an id with escapes is unescaped into an owned
/// string). Every field that may be absent defaults the way pbjson
/// defaults it, and every field whose JSON `null` pbjson would refuse is a non-`Option` (so a
/// `null` fails here too and falls back). Unknown fields fall back to pbjson, which ignores
/// them; a field given twice (also once per spelling) fails here as it fails there.
#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct CommonShapeEvent<'line> {
    #[serde(default, borrow, alias = "eventId")]
    event_id: Cow<'line, str>,
    #[serde(default, borrow)]
    source: Cow<'line, str>,
    #[serde(default, borrow, alias = "deviceId")]
    device_id: Cow<'line, str>,
    #[serde(default, borrow, alias = "communityId")]
    community_id: Cow<'line, str>,
    #[serde(default, borrow, alias = "gridId")]
    grid_id: Cow<'line, str>,
    /// The enum name, borrowed (a name with escapes fails to borrow and falls back).
    #[serde(default, borrow, alias = "eventType", deserialize_with = "present")]
    event_type: Option<&'line str>,
    #[serde(default)]
    severity: u32,
    /// `null` is allowed: pbjson reads a message field as an `Option`.
    #[serde(default, borrow, alias = "occurredAt")]
    occurred_at: Option<&'line str>,
    #[serde(default, borrow, alias = "receivedAt")]
    received_at: Option<&'line str>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default, borrow, deserialize_with = "present")]
    crs: Option<&'line str>,
    /// `None` unless the line has them: an empty map made for every line (its hasher's keys
    /// drawn each time) cost as much as a field. `null` is refused, as a map refuses it.
    #[serde(default, deserialize_with = "present_map")]
    attributes: Option<HashMap<String, String>>,
}

/// A field that, when present, must not be `null` (pbjson refuses `null` enums).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de str>, D::Error> {
    <&'de str>::deserialize(deserializer).map(Some)
}

/// A map that, when present, must not be `null` (pbjson refuses a `null` map).
fn present_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HashMap<String, String>>, D::Error> {
    HashMap::deserialize(deserializer).map(Some)
}

/// The event of one JSON line when it has the common shape, or `None` when the general
/// (pbjson) path must decide — including every line that pbjson would reject.
#[cfg(test)]
pub(super) fn decode_common_shape(line: &[u8]) -> Option<IncidentEvent> {
    let mut event = IncidentEvent::default();
    decode_common_shape_into(line, &mut event).then_some(event)
}

/// Decodes one JSON line of the common shape into `event`, reusing its string buffers, and
/// answers whether it did; on `false` the general (pbjson) path must decide and `event` holds
/// nothing meaningful (the caller overwrites it).
pub(super) fn decode_common_shape_into(line: &[u8], event: &mut IncidentEvent) -> bool {
    // Vectorized where the CPU allows (the standard check of every line was a twentieth of
    // the reading thread); it accepts exactly the lines the standard check does.
    let Ok(text) = simdutf8::basic::from_utf8(line) else {
        return false;
    };
    // Filled in place: the event is large enough that moving it out of a return value twice
    // cost as much as a field.
    let mut shape = CommonShapeEvent::default();
    if scan_flat_line_into(text, &mut shape).is_none() {
        let Ok(parsed) = serde_json::from_str::<CommonShapeEvent<'_>>(text) else {
            return false;
        };
        shape = parsed;
    }
    let event_type = match shape.event_type {
        None => EventType::Unspecified,
        Some(name) => match EventType::from_str_name(name) {
            Some(event_type) => event_type,
            None => return false,
        },
    };
    let crs = match shape.crs {
        None => Crs::default(),
        Some(name) => match Crs::from_str_name(name) {
            Some(crs) => crs,
            None => return false,
        },
    };
    // A line's two timestamps, and a stream's consecutive lines, mostly share their minute:
    // its seconds are computed once.
    let mut minute_memo = LAST_MINUTE.get();
    let Some(occurred_at) = optional_timestamp(shape.occurred_at, &mut minute_memo) else {
        return false;
    };
    let Some(received_at) = optional_timestamp(shape.received_at, &mut minute_memo) else {
        return false;
    };
    LAST_MINUTE.set(minute_memo);
    assign(&mut event.event_id, &shape.event_id);
    assign(&mut event.source, &shape.source);
    assign(&mut event.device_id, &shape.device_id);
    assign(&mut event.community_id, &shape.community_id);
    assign(&mut event.grid_id, &shape.grid_id);
    event.event_type = event_type as i32;
    event.severity = shape.severity;
    event.occurred_at = occurred_at;
    event.received_at = received_at;
    event.lat = shape.lat;
    event.lon = shape.lon;
    event.crs = crs as i32;
    // Most lines have no attributes: the reused event's (empty) map is kept rather than
    // dropped and replaced by another empty one.
    match shape.attributes.filter(|attributes| !attributes.is_empty()) {
        Some(attributes) => event.attributes = attributes,
        None => event.attributes.clear(),
    }
    true
}

/// The common shape of the simplest lines, read without serde: one flat object whose members
/// are the known fields, each once, with strings free of escapes, a severity of plain digits,
/// and no coordinates or attributes. `None` for anything else, which serde_json then reads
/// (and, when it too refuses, pbjson): so this only ever answers what serde_json would, and a
/// property test holds it to that. Worth it because serde_json's generic walk (a visitor per
/// field, a key matched by string comparisons, an escape scan per string) was three quarters
/// of decoding a line, and decoding a third of a replay's instructions.
fn scan_flat_line_into<'line>(text: &'line str, shape: &mut CommonShapeEvent<'line>) -> Option<()> {
    let mut scanner = FlatScanner { text, position: 0 };
    let mut seen_fields: u16 = 0;
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    scanner.skip_whitespace();
    if !scanner.take(b'}') {
        loop {
            let field = scanner.member_key()?;
            // A producer's lines are mostly compact: one look for the colon and one for the
            // separator after the value, the whitespace skipped only where there is some.
            if !scanner.take(b':') {
                scanner.skip_whitespace();
                scanner.expect(b':')?;
            }
            scanner.skip_whitespace();
            let field_bit = 1 << field as u16;
            if seen_fields & field_bit != 0 {
                return None;
            }
            seen_fields |= field_bit;
            match field {
                CommonShapeField::EventId => {
                    shape.event_id = Cow::Borrowed(scanner.plain_string()?)
                }
                CommonShapeField::Source => shape.source = Cow::Borrowed(scanner.plain_string()?),
                CommonShapeField::DeviceId => {
                    shape.device_id = Cow::Borrowed(scanner.plain_string()?);
                }
                CommonShapeField::CommunityId => {
                    shape.community_id = Cow::Borrowed(scanner.plain_string()?);
                }
                CommonShapeField::GridId => shape.grid_id = Cow::Borrowed(scanner.plain_string()?),
                CommonShapeField::EventType => shape.event_type = Some(scanner.plain_string()?),
                CommonShapeField::Severity => shape.severity = scanner.plain_u32()?,
                CommonShapeField::OccurredAt => {
                    shape.occurred_at = Some(scanner.plain_string()?);
                }
                CommonShapeField::ReceivedAt => {
                    shape.received_at = Some(scanner.plain_string()?);
                }
                CommonShapeField::Crs => shape.crs = Some(scanner.plain_string()?),
            }
            match scanner.next_byte() {
                Some(b',') => scanner.position += 1,
                Some(b'}') => {
                    scanner.position += 1;
                    break;
                }
                _ => {
                    scanner.skip_whitespace();
                    if scanner.take(b'}') {
                        break;
                    }
                    scanner.expect(b',')?;
                }
            }
            scanner.skip_whitespace();
        }
    }
    scanner.skip_whitespace();
    scanner.is_at_end().then_some(())
}

/// The members [`scan_flat_line_into`] reads; its bit marks a member as seen (a repeated member,
/// in either spelling, is an error to serde_json).
#[derive(Clone, Copy)]
enum CommonShapeField {
    EventId,
    Source,
    DeviceId,
    CommunityId,
    GridId,
    EventType,
    Severity,
    OccurredAt,
    ReceivedAt,
    Crs,
}

impl CommonShapeField {
    /// The spellings of the keys that start with `first_letter`, each with its quotes, and the
    /// field it names. Coordinates and attributes are not here: serde_json reads those lines
    /// (its float parsing and its map are the reference), as it reads unknown keys.
    fn spellings_starting_with(first_letter: u8) -> &'static [KeySpelling] {
        use CommonShapeField::*;
        const E: [KeySpelling; 4] = [
            KeySpelling::new(b"\"eventId\"", EventId),
            KeySpelling::new(b"\"event_id\"", EventId),
            KeySpelling::new(b"\"eventType\"", EventType),
            KeySpelling::new(b"\"event_type\"", EventType),
        ];
        const S: [KeySpelling; 2] = [
            KeySpelling::new(b"\"source\"", Source),
            KeySpelling::new(b"\"severity\"", Severity),
        ];
        const D: [KeySpelling; 2] = [
            KeySpelling::new(b"\"deviceId\"", DeviceId),
            KeySpelling::new(b"\"device_id\"", DeviceId),
        ];
        const C: [KeySpelling; 3] = [
            KeySpelling::new(b"\"communityId\"", CommunityId),
            KeySpelling::new(b"\"community_id\"", CommunityId),
            KeySpelling::new(b"\"crs\"", Crs),
        ];
        const G: [KeySpelling; 2] = [
            KeySpelling::new(b"\"gridId\"", GridId),
            KeySpelling::new(b"\"grid_id\"", GridId),
        ];
        const O: [KeySpelling; 2] = [
            KeySpelling::new(b"\"occurredAt\"", OccurredAt),
            KeySpelling::new(b"\"occurred_at\"", OccurredAt),
        ];
        const R: [KeySpelling; 2] = [
            KeySpelling::new(b"\"receivedAt\"", ReceivedAt),
            KeySpelling::new(b"\"received_at\"", ReceivedAt),
        ];
        match first_letter {
            b'e' => &E,
            b's' => &S,
            b'd' => &D,
            b'c' => &C,
            b'g' => &G,
            b'o' => &O,
            b'r' => &R,
            _ => &[],
        }
    }
}

/// A key's spelling, quotes included (at most 16 bytes), with its bytes as two little-endian
/// words and the masks of the bytes it has: a key is matched by two word comparisons instead
/// of a call to compare bytes (those calls were a twentieth of the reading thread).
struct KeySpelling {
    spelling: &'static [u8],
    field: CommonShapeField,
    /// Bytes 0..8 and 8..16, zero past the spelling.
    words: [u64; 2],
    /// 0xff for each byte the spelling has.
    masks: [u64; 2],
}

impl KeySpelling {
    const fn new(spelling: &'static [u8], field: CommonShapeField) -> KeySpelling {
        let (mut head, mut head_mask, mut tail, mut tail_mask) = (0u64, 0u64, 0u64, 0u64);
        let mut remaining = spelling;
        let mut index = 0u32;
        while let [byte, rest @ ..] = remaining {
            if index < 8 {
                head |= (*byte as u64) << (8 * index);
                head_mask |= 0xff << (8 * index);
            } else if index < 16 {
                tail |= (*byte as u64) << (8 * (index - 8));
                tail_mask |= 0xff << (8 * (index - 8));
            }
            remaining = rest;
            index += 1;
        }
        KeySpelling {
            spelling,
            field,
            words: [head, tail],
            masks: [head_mask, tail_mask],
        }
    }

    /// Whether the text whose first sixteen bytes are `head` and `tail` starts with this key.
    fn starts(&self, head: u64, tail: u64) -> bool {
        let [head_word, tail_word] = self.words;
        let [head_mask, tail_mask] = self.masks;
        head & head_mask == head_word && tail & tail_mask == tail_word
    }
}

/// A position in a line for [`scan_flat_line_into`]; every method answers `None` (or `false`) at
/// anything it does not expect, without moving past it.
struct FlatScanner<'line> {
    text: &'line str,
    position: usize,
}

impl<'line> FlatScanner<'line> {
    fn rest(&self) -> &'line [u8] {
        self.text
            .as_bytes()
            .get(self.position..)
            .unwrap_or_default()
    }

    fn is_at_end(&self) -> bool {
        self.position >= self.text.len()
    }

    /// The byte at the position, if any.
    fn next_byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    /// JSON's whitespace, the four bytes serde_json skips between tokens (a producer's lines
    /// mostly have none: one look at the next byte).
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.next_byte() {
            self.position += 1;
        }
    }

    /// Moves past `byte` when it is next.
    fn take(&mut self, byte: u8) -> bool {
        let next_is_byte = self.next_byte() == Some(byte);
        if next_is_byte {
            self.position += 1;
        }
        next_is_byte
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.take(byte).then_some(())
    }

    /// The field whose key, quotes included, is next: matched in place rather than read as a
    /// string and then compared (reading the keys was half of the scanner's strings). A key
    /// with an escape matches no spelling and goes to serde_json.
    fn member_key(&mut self) -> Option<CommonShapeField> {
        let rest = self.rest();
        let candidates = CommonShapeField::spellings_starting_with(*rest.get(1)?);
        let key = match (
            crate::byte_words::word_at(rest, 0),
            crate::byte_words::word_at(rest, 8),
        ) {
            (Some(head), Some(tail)) => candidates.iter().find(|key| key.starts(head, tail)),
            // Fewer than sixteen bytes left: the line ends within the member.
            _ => candidates.iter().find(|key| rest.starts_with(key.spelling)),
        }?;
        self.position += key.spelling.len();
        Some(key.field)
    }

    /// A string with no escape and no control character (both left to serde_json), borrowed.
    fn plain_string(&mut self) -> Option<&'line str> {
        self.expect(b'"')?;
        let start = self.position;
        let length = plain_run_length(self.rest());
        let content = self.text.get(start..start + length)?;
        if self.rest().get(length) != Some(&b'"') {
            return None;
        }
        self.position = start + length + 1;
        Some(content)
    }

    /// An unsigned integer written as serde_json reads one into a `u32`: `0`, or digits without
    /// a leading zero, within range; a sign, a fraction or an exponent is left to serde_json.
    fn plain_u32(&mut self) -> Option<u32> {
        let digits = self
            .rest()
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        let text = self.text.get(self.position..self.position + digits)?;
        if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
            return None;
        }
        let following = self.rest().get(digits);
        if matches!(following, Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let value = text.parse().ok()?;
        self.position += digits;
        Some(value)
    }
}

/// Bytes of `bytes` before its first `"`, `\` or control character (all of them when it has
/// none), sixteen at a time: three vector compares and a mask of the lanes (SSE2, which every
/// x86-64 has; `wide` does the same in plain code elsewhere). Eight bytes at a time, as before,
/// this was a third of decoding a line. Near the end, the last sixteen bytes are read again
/// with the lanes already read shifted out; a text shorter than sixteen is searched a byte at
/// a time. A property test holds this to a byte-at-a-time search.
fn plain_run_length(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(16);
    let mut offset = 0;
    for chunk in &mut chunks {
        let Ok(chunk) = <[u8; 16]>::try_from(chunk) else {
            break;
        };
        let specials = json_string_special_lanes(chunk);
        if specials != 0 {
            return offset + specials.trailing_zeros() as usize;
        }
        offset += 16;
    }
    let remaining = chunks.remainder();
    if remaining.is_empty() {
        return offset;
    }
    let last_sixteen = bytes
        .len()
        .checked_sub(16)
        .and_then(|start| bytes.get(start..))
        .and_then(|last| <[u8; 16]>::try_from(last).ok());
    let Some(last_sixteen) = last_sixteen else {
        return offset
            + remaining
                .iter()
                .position(is_string_special)
                .unwrap_or(remaining.len());
    };
    let already_read = 16 - remaining.len();
    let specials = json_string_special_lanes(last_sixteen) >> already_read;
    if specials == 0 {
        return bytes.len();
    }
    offset + specials.trailing_zeros() as usize
}

/// One bit per byte of `chunk` (the first byte lowest) that is a quote, a backslash or a
/// control character.
fn json_string_special_lanes(chunk: [u8; 16]) -> u32 {
    use wide::u8x16;
    let bytes = u8x16::new(chunk);
    let quotes = bytes.cmp_eq(u8x16::splat(b'"'));
    let backslashes = bytes.cmp_eq(u8x16::splat(b'\\'));
    let controls = crate::byte_words::lanes_at_most(bytes, 0x1f);
    crate::byte_words::lane_bits(quotes | backslashes | controls)
}

/// Whether a byte ends a plain string run: a quote, a backslash or a control character.
fn is_string_special(byte: &u8) -> bool {
    matches!(byte, b'"' | b'\\' | 0..=0x1f)
}

/// An optional timestamp field: `Some(None)` when absent, `None` when present but not of the
/// common shape.
fn optional_timestamp(
    text: Option<&str>,
    minute_memo: &mut Option<MinuteMemo>,
) -> Option<Option<pbjson_types::Timestamp>> {
    match text {
        None => Some(None),
        Some(text) => timestamp_with_minute_memo(text, minute_memo).map(Some),
    }
}

/// A minute already read: a timestamp's first sixteen bytes (`YYYY-MM-DDTHH:MM`, the two words
/// [`minute_of`] reads) and the seconds from 1970-01-01T00:00 to that minute as written (before
/// the offset): set only once the date, hour and minute were found valid. A producer's
/// timestamps mostly share their minute with the one before, so most are read from the
/// seconds on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MinuteMemo {
    /// The first sixteen bytes, as two little-endian words.
    text: (u64, u64),
    /// Seconds to the minute's start, before the offset.
    local_seconds: i64,
}

thread_local! {
    /// The minute of the last timestamp this thread read (a decoder is shared by the threads
    /// that decode): what the next line's timestamps most likely start with. A memo of a pure
    /// function of the text, so what a line decodes to never depends on the lines before.
    static LAST_MINUTE: std::cell::Cell<Option<MinuteMemo>> = const { std::cell::Cell::new(None) };
}

/// [`timestamp_with_minute_memo`] of one timestamp alone.
#[cfg(test)]
fn timestamp_of_common_shape(text: &str) -> Option<pbjson_types::Timestamp> {
    timestamp_with_minute_memo(text, &mut None)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` as a protobuf timestamp, equal to what chrono's
/// `DateTime::parse_from_rfc3339` (pbjson's parser) gives; `None` for anything else (a
/// lowercase `t`/`z`, a space, a leap second, more than nine fraction digits, an invalid
/// date), which pbjson then decides. The date, hour and minute are taken from `minute_memo`
/// when their text is the one it holds, and left there for the next timestamp.
fn timestamp_with_minute_memo(
    text: &str,
    minute_memo: &mut Option<MinuteMemo>,
) -> Option<pbjson_types::Timestamp> {
    let bytes = text.as_bytes();
    let date = crate::byte_words::word_at(bytes, 0)?;
    let day_hour_minute = crate::byte_words::word_at(bytes, 8)?;
    let minute_seconds = match *minute_memo {
        Some(memo) if memo.text == (date, day_hour_minute) => memo.local_seconds,
        _ => {
            let local_seconds = minute_of(date, day_hour_minute)?;
            *minute_memo = Some(MinuteMemo {
                text: (date, day_hour_minute),
                local_seconds,
            });
            local_seconds
        }
    };
    let (second, nanos, offset_seconds) =
        millisecond_offset_tail(bytes).or_else(|| seconds_fraction_offset(bytes))?;
    Some(pbjson_types::Timestamp {
        seconds: minute_seconds + second - offset_seconds,
        nanos: i32::try_from(nanos).ok()?,
    })
}

/// A 29-byte timestamp's tail `:SS.fff±HH:MM` (milliseconds and a numeric offset, what
/// producers mostly write) as its second, nanoseconds and offset in seconds, read from two
/// words checked against their templates (as [`minute_of`] reads the minute); `None` for any
/// other tail or a value out of range, which [`seconds_fraction_offset`] then decides. A line's
/// two timestamps were a sixth of decoding it (319.0 M instructions of 1 M simulator lines with
/// their tails read byte by byte, 277.0 M this way).
fn millisecond_offset_tail(bytes: &[u8]) -> Option<(i64, i64, i64)> {
    // `:SS.fff±` and `ff±HH:MM` (bytes 16 to 23 and 21 to 28), little-endian.
    const SECONDS_DIGITS: u64 = u64::from_le_bytes([0, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0]);
    const OFFSET_DIGITS: u64 = u64::from_le_bytes([0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff]);
    if bytes.len() != 29 {
        return None;
    }
    let seconds_word = crate::byte_words::word_at(bytes, 16)?;
    let offset_word = crate::byte_words::word_at(bytes, 21)?;
    let sign = bytes.get(23).copied()?;
    if sign != b'+' && sign != b'-' {
        return None;
    }
    let seconds_separators = u64::from_le_bytes([b':', 0, 0, b'.', 0, 0, 0, sign]);
    let offset_separators = u64::from_le_bytes([0, 0, sign, 0, 0, b':', 0, 0]);
    let holds_template = word_holds_template(seconds_word, SECONDS_DIGITS, seconds_separators)
        && word_holds_template(offset_word, OFFSET_DIGITS, offset_separators);
    if !holds_template {
        return None;
    }
    let second = lane_pair(seconds_word, 1);
    let millis = lane_digit(seconds_word, 4) * 100 + lane_pair(seconds_word, 5);
    let offset_hours = lane_pair(offset_word, 3);
    let offset_minutes = lane_pair(offset_word, 6);
    if second > 59 || offset_hours > 23 || offset_minutes > 59 {
        return None;
    }
    let magnitude = offset_hours * 3600 + offset_minutes * 60;
    let offset_seconds = if sign == b'-' { -magnitude } else { magnitude };
    Some((second, millis * 1_000_000, offset_seconds))
}

/// A timestamp's tail from byte 16, `:SS[.f{1,9}](Z|±HH:MM)`, read byte by byte: its second,
/// nanoseconds and offset in seconds; `None` for anything else.
fn seconds_fraction_offset(bytes: &[u8]) -> Option<(i64, i64, i64)> {
    let second = match bytes.get(16..19)? {
        [b':', tens, units] => two_digits(*tens, *units)?,
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let mut position = 19;
    let mut nanos: i64 = 0;
    if bytes.get(position) == Some(&b'.') {
        position += 1;
        let fraction_start = position;
        while let Some(digit) = bytes.get(position).and_then(|byte| digit_value(*byte)) {
            if position - fraction_start == 9 {
                return None;
            }
            nanos = nanos * 10 + digit;
            position += 1;
        }
        let fraction_digits = position - fraction_start;
        if fraction_digits == 0 {
            return None;
        }
        nanos *= *NANOS_PER_FRACTION_UNIT.get(fraction_digits)?;
    }
    let offset_seconds = match bytes.get(position..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), hours_tens, hours_units, b':', minutes_tens, minutes_units] => {
            let offset_hours = two_digits(*hours_tens, *hours_units)?;
            let offset_minutes = two_digits(*minutes_tens, *minutes_units)?;
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let magnitude = offset_hours * 3600 + offset_minutes * 60;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    Some((second, nanos, offset_seconds))
}

/// Nanoseconds per unit of a fraction with 1..=9 digits (index: the digit count; a fraction
/// without digits is refused before).
const NANOS_PER_FRACTION_UNIT: [i64; 10] = [
    0,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// The seconds from 1970-01-01T00:00 to the minute of a text starting `YYYY-MM-DDTHH:MM`,
/// given as its two eight-byte words (`YYYY-MM-`, `DDTHH:MM`): each is checked against its
/// template (digits where digits go, the separators elsewhere) at once, and the digits are the
/// low nibbles of the checked bytes. `None` unless the date is a valid one and the hour and
/// minute are in range. Byte by byte, the two timestamps of a line were a seventh of the
/// reading thread.
fn minute_of(date: u64, day_hour_minute: u64) -> Option<i64> {
    // Digit lanes (0xff) and separators of each word, little-endian (the first byte lowest).
    const DATE_DIGITS: u64 = u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0]);
    const DATE_SEPARATORS: u64 = u64::from_le_bytes([0, 0, 0, 0, b'-', 0, 0, b'-']);
    const DAY_DIGITS: u64 = u64::from_le_bytes([0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff]);
    const DAY_SEPARATORS: u64 = u64::from_le_bytes([0, 0, b'T', 0, 0, b':', 0, 0]);
    let holds_template = word_holds_template(date, DATE_DIGITS, DATE_SEPARATORS)
        && word_holds_template(day_hour_minute, DAY_DIGITS, DAY_SEPARATORS);
    if !holds_template {
        return None;
    }
    let year = lane_pair(date, 0) * 100 + lane_pair(date, 2);
    let month = lane_pair(date, 5);
    let day = lane_pair(day_hour_minute, 0);
    let hour = lane_pair(day_hour_minute, 3);
    let minute = lane_pair(day_hour_minute, 6);
    if hour > 23 || minute > 59 {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60)
}

/// The digit in lane `lane` of a word [`word_holds_template`] accepted: its low nibble.
fn lane_digit(word: u64, lane: u32) -> i64 {
    ((word >> (8 * lane)) & 0x0f) as i64
}

/// The two digits from lane `lane` of a word [`word_holds_template`] accepted, as a number.
fn lane_pair(word: u64, lane: u32) -> i64 {
    lane_digit(word, lane) * 10 + lane_digit(word, lane + 1)
}

/// Whether `word` has an ASCII digit in every lane of `digit_lanes` and equals `separators` in
/// the other lanes. A lane holds a digit when its high nibble is 3 and adding 6 to its low
/// nibble does not carry (the low nibble is at most 9; no lane's sum can reach the next lane).
fn word_holds_template(word: u64, digit_lanes: u64, separators: u64) -> bool {
    const HIGH_NIBBLES: u64 = u64::from_ne_bytes([0xf0; 8]);
    const LOW_NIBBLES: u64 = u64::from_ne_bytes([0x0f; 8]);
    const THREES: u64 = u64::from_ne_bytes([0x30; 8]);
    const SIXES: u64 = u64::from_ne_bytes([0x06; 8]);
    let high_nibbles_are_three = word & digit_lanes & HIGH_NIBBLES == THREES & digit_lanes;
    let low_nibbles_at_most_nine =
        ((word & digit_lanes & LOW_NIBBLES) + (SIXES & digit_lanes)) & HIGH_NIBBLES == 0;
    high_nibbles_are_three && low_nibbles_at_most_nine && word & !digit_lanes == separators
}

/// The value of an ASCII digit.
fn digit_value(byte: u8) -> Option<i64> {
    byte.is_ascii_digit().then(|| i64::from(byte - b'0'))
}

/// The value of two ASCII digits.
fn two_digits(tens: u8, units: u8) -> Option<i64> {
    Some(digit_value(tens)? * 10 + digit_value(units)?)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`scan_flat_line_into`] reads from `line`, if it reads it.
    fn scan_flat_line(line: &str) -> Option<CommonShapeEvent<'_>> {
        let mut shape = CommonShapeEvent::default();
        scan_flat_line_into(line, &mut shape).map(|()| shape)
    }

    fn by_pbjson(line: &str) -> Result<IncidentEvent, String> {
        serde_json::from_str::<IncidentEvent>(line).map_err(|error| error.to_string())
    }

    fn by_chrono(text: &str) -> Option<pbjson_types::Timestamp> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        let utc: chrono::DateTime<chrono::Utc> = parsed.into();
        Some(utc.into())
    }

    /// Lines in many shapes, common and not: each field present or not, in either spelling,
    /// with values of the right kind or of another (which must fall back).
    fn line_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let string_value = prop_oneof![
            "[a-z0-9-]{0,12}".prop_map(|text| format!("\"{text}\"")),
            Just("\"a\\\"b\\u00e9\"".to_string()),
            Just("null".to_string()),
            Just("7".to_string()),
        ];
        let event_type_value = prop_oneof![
            Just("\"FIRE_SMOKE\"".to_string()),
            Just("\"FRAUD_REPORTED\"".to_string()),
            Just("\"EVENT_TYPE_UNSPECIFIED\"".to_string()),
            Just("\"NOT_A_TYPE\"".to_string()),
            Just("\"FIRE\\u005fSMOKE\"".to_string()),
            Just("3".to_string()),
            Just("null".to_string()),
        ];
        let severity_value = prop_oneof![
            (0_u32..7).prop_map(|value| value.to_string()),
            Just("\"2\"".to_string()),
            Just("2.0".to_string()),
            Just("-1".to_string()),
            Just("null".to_string()),
        ];
        let timestamp_value = prop_oneof![
            timestamp_text_strategy().prop_map(|text| format!("\"{text}\"")),
            Just("null".to_string()),
            Just("12".to_string()),
        ];
        let number_value = prop_oneof![
            (-180.0_f64..180.0).prop_map(|value| value.to_string()),
            (-1000_i64..1000).prop_map(|value| value.to_string()),
            Just("\"NaN\"".to_string()),
            Just("null".to_string()),
            Just("1e400".to_string()),
        ];
        let crs_value = prop_oneof![
            Just("\"WGS84\"".to_string()),
            Just("\"GCJ02\"".to_string()),
            Just("\"CRS_UNSPECIFIED\"".to_string()),
            Just("1".to_string()),
            Just("null".to_string()),
        ];
        let attributes_value = prop_oneof![
            Just("{}".to_string()),
            Just("{\"phone\":\"13800138000\",\"k\":\"v\"}".to_string()),
            Just("{\"k\":\"a\",\"k\":\"b\"}".to_string()),
            Just("{\"k\":1}".to_string()),
            Just("null".to_string()),
        ];
        let field = prop_oneof![
            (
                prop_oneof![Just("event_id"), Just("eventId")],
                string_value.clone()
            ),
            (Just("source"), string_value.clone()),
            (
                prop_oneof![Just("device_id"), Just("deviceId")],
                string_value.clone()
            ),
            (
                prop_oneof![Just("community_id"), Just("communityId")],
                string_value.clone()
            ),
            (prop_oneof![Just("grid_id"), Just("gridId")], string_value),
            (
                prop_oneof![Just("event_type"), Just("eventType")],
                event_type_value
            ),
            (Just("severity"), severity_value),
            (
                prop_oneof![Just("occurred_at"), Just("occurredAt")],
                timestamp_value.clone()
            ),
            (
                prop_oneof![Just("received_at"), Just("receivedAt")],
                timestamp_value
            ),
            (Just("lat"), number_value.clone()),
            (Just("lon"), number_value),
            (Just("crs"), crs_value),
            (Just("attributes"), attributes_value),
            (Just("unknown_field"), Just("[1,2]".to_string())),
        ];
        proptest::collection::vec(field, 0..14).prop_map(|fields| {
            let members: Vec<String> = fields
                .into_iter()
                .map(|(name, value)| format!("\"{name}\":{value}"))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    }

    fn timestamp_text_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let date = (1_i64..10_000, 0_i64..14, 0_i64..33);
        let time = (0_i64..25, 0_i64..61, 0_i64..62);
        let fraction = prop_oneof![
            Just(String::new()),
            "\\.[0-9]{0,11}".prop_map(|text| text.to_string()),
        ];
        let offset = prop_oneof![
            Just("Z".to_string()),
            Just("z".to_string()),
            (prop_oneof![Just('+'), Just('-')], 0_i64..26, 0_i64..61)
                .prop_map(|(sign, hours, minutes)| format!("{sign}{hours:02}:{minutes:02}")),
            Just("+0800".to_string()),
        ];
        let separator = prop_oneof![Just('T'), Just('t'), Just(' ')];
        (date, separator, time, fraction, offset).prop_map(
            |((year, month, day), separator, (hour, minute, second), fraction, offset)| {
                format!(
                    "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{offset}"
                )
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn the_fast_path_decodes_exactly_what_pbjson_decodes(line in line_strategy()) {
            if let Some(fast) = decode_common_shape(line.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), by_pbjson(&line), "{}", line);
            }
        }

        #[test]
        fn a_plain_run_ends_where_a_byte_at_a_time_search_ends_it(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            text in "[ -~\\x00-\\x1f\\u{80}-\\u{ff}\\u{4e2d}]{0,30}",
        ) {
            for candidate in [bytes.as_slice(), text.as_bytes()] {
                let byte_at_a_time = candidate
                    .iter()
                    .position(is_string_special)
                    .unwrap_or(candidate.len());
                proptest::prop_assert_eq!(plain_run_length(candidate), byte_at_a_time);
            }
        }

        #[test]
        fn the_scanner_reads_only_what_serde_json_reads_the_same(
            line in line_strategy(),
            severity in proptest::sample::select(vec![
                "0", "7", "01", "00", "-0", "-1", "4294967295", "4294967296", "1e2", "1.0", "2 ",
                " 3", "3x", "\"3\"",
            ]),
            text in "[ -~\\x00-\\x1f\\u{e9}\\u{4e2d}]{0,6}",
            blank in proptest::sample::select(vec!["", " ", "\n", "\t", "\r", "\u{a0}", "\u{feff}", "\x0c"]),
            cut in 0_usize..400,
            tail in proptest::sample::select(vec!["", " ", "\n", "x", "}", ",", "{}"]),
        ) {
            let with_severity = format!("{{\"severity\":{severity},\"source\":\"{text}\",{}", line.get(1..).unwrap_or("}"));
            let spaced = line.replace(',', &format!("{blank},{blank}")).replace(':', &format!("{blank}:{blank}"));
            let truncated: String = line.chars().take(cut).collect();
            let candidates = [
                line.clone(),
                with_severity,
                spaced.clone(),
                format!("{blank}{spaced}{blank}"),
                format!("{line}{tail}"),
                truncated,
            ];
            for candidate in candidates {
                if let Some(scanned) = scan_flat_line(&candidate) {
                    let by_serde = serde_json::from_str::<CommonShapeEvent<'_>>(&candidate);
                    proptest::prop_assert!(by_serde.is_ok(), "{:?}: {:?}", candidate, by_serde.err());
                    proptest::prop_assert_eq!(Some(scanned), by_serde.ok(), "{:?}", candidate);
                }
            }
        }

        #[test]
        fn a_timestamp_read_after_another_is_read_as_if_alone(
            first in timestamp_text_strategy(),
            second in timestamp_text_strategy(),
            shared_prefix in 0_usize..20,
        ) {
            // The second often shares the first's date (or part of it).
            let second = format!(
                "{}{}",
                first.get(..shared_prefix).unwrap_or(""),
                second.get(shared_prefix..).unwrap_or(""),
            );
            let mut minute_memo = None;
            let first_read = timestamp_with_minute_memo(&first, &mut minute_memo);
            proptest::prop_assert_eq!(first_read, timestamp_of_common_shape(&first));
            proptest::prop_assert_eq!(
                timestamp_with_minute_memo(&second, &mut minute_memo),
                timestamp_of_common_shape(&second),
                "{} after {}", second, first
            );
        }

        /// The tail read from two words is the tail read byte by byte, for every tail the
        /// words accept (milliseconds with an offset, any digits, either sign).
        #[test]
        fn a_millisecond_tail_read_by_words_is_read_as_byte_by_byte(
            text in timestamp_text_strategy(),
            tail in proptest::prop_oneof![
                ":[0-9]{2}\\.[0-9]{3}[-+][0-9]{2}:[0-9]{2}",
                "[:0-9][0-9:]{2}[.0-9][0-9]{3}[-+Z][0-9]{2}[:0-9][0-9]{2}",
            ],
        ) {
            let prefix = text.get(..16).unwrap_or("2026-03-02T10:20");
            for candidate in [text.clone(), format!("{prefix}{tail}")] {
                if let Some(by_words) = millisecond_offset_tail(candidate.as_bytes()) {
                    proptest::prop_assert_eq!(
                        Some(by_words),
                        seconds_fraction_offset(candidate.as_bytes()),
                        "{}", candidate
                    );
                }
            }
        }

        #[test]
        fn common_shape_timestamps_equal_chronos(text in timestamp_text_strategy()) {
            if let Some(fast) = timestamp_of_common_shape(&text) {
                proptest::prop_assert_eq!(Some(fast), by_chrono(&text), "{}", text);
            }
        }

        #[test]
        fn decoding_into_a_reused_event_gives_what_decoding_fresh_gives(
            first in line_strategy(),
            second in line_strategy(),
        ) {
            use prost::Message;
            let decoder = crate::decode::tests::decoder();
            for format in [crate::decode::InputFormat::Jsonl, crate::decode::InputFormat::Protobuf] {
                let encoded = |line: &str| match format {
                    crate::decode::InputFormat::Jsonl => Some(line.as_bytes().to_vec()),
                    crate::decode::InputFormat::Protobuf => by_pbjson(line).ok().map(|event| event.encode_to_vec()),
                };
                let (Some(first), Some(second)) = (encoded(&first), encoded(&second)) else {
                    continue;
                };
                let mut reused = IncidentEvent::default();
                let _ = decoder.decode_into(&first, format, &mut reused);
                // Compared encoded (a NaN coordinate is not equal to itself), attributes in
                // order (two maps iterate in different orders).
                let comparable = |mut event: IncidentEvent| {
                    let attributes: std::collections::BTreeMap<String, String> =
                        std::mem::take(&mut event.attributes).into_iter().collect();
                    (event.encode_to_vec(), attributes)
                };
                let outcome = decoder
                    .decode_into(&second, format, &mut reused)
                    .map(|()| comparable(reused));
                let fresh = decoder.decode(&second, format).map(comparable);
                proptest::prop_assert_eq!(outcome, fresh);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_fast_path(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            let _ = decode_common_shape(&bytes);
        }
    }

    #[test]
    fn the_simulators_lines_without_coordinates_are_read_by_the_scanner() {
        let lines = [
            r#"{"eventId":"sim-2a-0000000000","source":"simulator","deviceId":"41060300011340000380","communityId":"410603001007","gridId":"41060300100702","eventType":"TAILGATING","occurredAt":"2026-03-02T00:00:00.291+00:00","receivedAt":"2026-03-02T00:00:00.679+00:00"}"#,
            r#"{"eventId":"sim-2a-0000000001","source":"simulator","deviceId":"41062100011310001129","communityId":"410621102011","gridId":"41062110201102","eventType":"LOITERING","severity":3,"occurredAt":"2026-03-02T00:00:02.520+00:00","receivedAt":"2026-03-02T00:00:02.779+00:00"}"#,
            " { \"event_id\" : \"e\" , \"crs\":\"WGS84\" }\n",
            "{}",
        ];
        for line in lines {
            let scanned = scan_flat_line(line);
            assert!(scanned.is_some(), "{line}");
            assert_eq!(
                scanned.ok_or("none"),
                serde_json::from_str(line).map_err(|_| "serde")
            );
        }
        // Left to serde_json: coordinates, attributes, escapes, nulls, repeats, other spellings.
        for line in [
            r#"{"event_id":"e","lat":35.7}"#,
            r#"{"event_id":"e","attributes":{}}"#,
            r#"{"event_id":"e\u0031"}"#,
            r#"{"event_id":null}"#,
            r#"{"event_id":"e","eventId":"f"}"#,
            r#"{"EventId":"e"}"#,
            r#"["e"]"#,
        ] {
            assert_eq!(scan_flat_line(line), None, "{line}");
        }
    }

    #[test]
    fn the_simulators_and_the_bench_streams_lines_take_the_fast_path() {
        let lines = [
            r#"{"event_id":"e-1","source":"sim","device_id":"41060200000000000001","community_id":"410602001001","grid_id":"41060200100101","event_type":"FIRE_SMOKE","severity":2,"occurred_at":"2026-03-02T00:00:01.250Z","lat":35.7,"lon":114.2,"crs":"WGS84","attributes":{"floor":"3"}}"#,
            r#"{"eventId":"e-2","communityId":"410602001001","eventType":"FRAUD_REPORTED","occurredAt":"2026-03-02T08:00:00+08:00","receivedAt":"2026-03-02T00:00:02Z"}"#,
        ];
        for line in lines {
            let fast = decode_common_shape(line.as_bytes());
            assert!(fast.is_some(), "{line}");
            assert_eq!(fast.ok_or("none"), by_pbjson(line).map_err(|_| "pbjson"));
        }
    }

    /// Lines are checked as UTF-8 whole before the scanner borrows their text: a long line
    /// with Chinese text takes the fast path, and the same line with one byte of a character
    /// broken, anywhere (in the vectorized part or in its tail), goes to the general path.
    #[test]
    fn a_line_is_read_by_the_fast_path_only_when_it_is_utf8_throughout() {
        let line = r#"{"eventId":"e-3","source":"网格员上报·平安小区","communityId":"410602001001","eventType":"FRAUD_REPORTED","occurredAt":"2026-03-02T08:00:00+08:00","receivedAt":"2026-03-02T00:00:02Z"}"#;
        let fast = decode_common_shape(line.as_bytes());
        assert!(fast.is_some(), "{line}");
        assert_eq!(fast.ok_or("none"), by_pbjson(line).map_err(|_| "pbjson"));
        let first_character = line.find('网').unwrap();
        for broken_at in [first_character, first_character + 1, line.len() - 3] {
            let mut bytes = line.as_bytes().to_vec();
            bytes[broken_at] = if broken_at == line.len() - 3 {
                0xe7
            } else {
                0xff
            };
            assert!(std::str::from_utf8(&bytes).is_err());
            assert_eq!(decode_common_shape(&bytes), None, "broken at {broken_at}");
        }
    }

    /// Each key's two-word test answers what a byte comparison answers, for its own spelling
    /// and every spelling with one byte changed, followed by the rest of a member.
    #[test]
    fn a_key_matches_by_words_exactly_when_its_bytes_match() {
        let all_keys: Vec<&KeySpelling> = b"esdcgor"
            .iter()
            .flat_map(|letter| CommonShapeField::spellings_starting_with(*letter))
            .collect();
        assert_eq!(all_keys.len(), 17);
        for key in &all_keys {
            assert!(key.spelling.len() <= 16, "{:?}", key.spelling);
            for other in &all_keys {
                for position in 0..other.spelling.len() {
                    for byte in [b'"', b'_', b'x', b'I', b'i', b':', 0] {
                        let mut text = other.spelling.to_vec();
                        text[position] = byte;
                        for tail in [&b":\"41060200100102\","[..], &b"\":1}"[..]] {
                            let mut line = text.clone();
                            line.extend_from_slice(tail);
                            let head = crate::byte_words::word_at(&line, 0);
                            let rest = crate::byte_words::word_at(&line, 8);
                            if let (Some(head), Some(rest)) = (head, rest) {
                                assert_eq!(
                                    key.starts(head, rest),
                                    line.starts_with(key.spelling),
                                    "{:?} against {:?}",
                                    key.spelling,
                                    String::from_utf8_lossy(&line)
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every printable byte at every position of a few valid timestamps: the word templates
    /// must refuse what chrono refuses (`:` to `?` share a digit's high nibble).
    #[test]
    fn a_timestamp_with_any_one_byte_changed_is_read_as_chrono_reads_it() {
        for valid in [
            "2026-03-02T10:20:30.123+08:00",
            "1999-12-31T23:59:59Z",
            "2024-02-29T00:00:00.000000001-11:30",
        ] {
            for position in 0..valid.len() {
                for byte in 0x20_u8..0x7f {
                    let mut bytes = valid.as_bytes().to_vec();
                    bytes[position] = byte;
                    let changed = String::from_utf8(bytes).unwrap();
                    if let Some(fast) = timestamp_of_common_shape(&changed) {
                        assert_eq!(Some(fast), by_chrono(&changed), "{changed}");
                    }
                }
            }
        }
    }

    #[test]
    fn timestamps_the_fast_path_leaves_to_pbjson_still_decode_there() {
        for text in [
            "2026-03-02t00:00:00Z",
            "2026-03-02T00:00:60Z",
            "2026-03-02T00:00:00.1234567891Z",
            "2026-02-30T00:00:00Z",
            "2026-03-02 00:00:00z",
        ] {
            assert_eq!(timestamp_of_common_shape(text), None, "{text}");
        }
        let line =
            r#"{"event_id":"e","event_type":"FIRE_SMOKE","occurred_at":"2026-03-02t00:00:00Z"}"#;
        assert_eq!(decode_common_shape(line.as_bytes()), None);
        assert!(by_pbjson(line).is_ok());
    }

    #[test]
    fn known_instants_match_chrono_on_both_sides_of_the_epoch_and_leap_days() {
        for text in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00+05:30",
            "2024-02-29T23:59:59-11:45",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.5Z",
        ] {
            assert_eq!(timestamp_of_common_shape(text), by_chrono(text), "{text}");
        }
    }
}
