//! The fast path of protobuf decoding, for the messages almost every producer writes.
//!
//! prost's generated `merge` reads any valid `IncidentEvent`: each field through a generic
//! merge function, each string checked by the standard UTF-8 check after it was copied, each
//! timestamp through a nested merge with its own recursion guard. On a replay of protobuf
//! input that was more than half of the reading thread. This path reads the wire format of
//! the flat messages producers write — fields 1 to 12 with their declared wire types, each
//! key in one byte, each timestamp once with only its two fields — straight into the reused
//! event, and answers `false` for anything else (the attributes map, unknown fields, a
//! timestamp given twice, a truncated or malformed message), which prost then decodes
//! exactly as before. So it only ever produces the event prost would (a property test holds
//! it to prost on generated and mutated messages), and every rejection keeps prost's reason
//! and detail.

use std::ops::Range;

use super::assign;
use crate::proto::IncidentEvent;

/// A field's wire type, the low three bits of its key.
const WIRE_TYPE_VARINT: u8 = 0;
const WIRE_TYPE_FIXED64: u8 = 1;
const WIRE_TYPE_LENGTH_DELIMITED: u8 = 2;

/// Decodes one protobuf message of the flat shape into `event`, reusing its string buffers,
/// and answers whether it did; on `false` prost must decide and `event` holds nothing
/// meaningful (the caller clears and overwrites it).
pub(super) fn decode_flat_protobuf_into(message: &[u8], event: &mut IncidentEvent) -> bool {
    // What prost's `merge` starts from in the caller: every field at its default, the
    // strings' buffers kept.
    prost::Message::clear(event);
    read_flat_event(message, event).is_some()
}

/// The fields of one flat message, in any order; a repeated scalar field keeps its last value,
/// as prost's merge does.
fn read_flat_event(message: &[u8], event: &mut IncidentEvent) -> Option<()> {
    let mut reader = WireReader::new(message);
    // Where the five string fields (1 to 5) are in the message: checked as UTF-8 together once
    // every field is read.
    let mut string_fields: [Option<Range<usize>>; 5] = Default::default();
    while !reader.is_at_end() {
        let (field_number, wire_type) = reader.single_byte_key()?;
        match (field_number, wire_type) {
            (1..=5, WIRE_TYPE_LENGTH_DELIMITED) => {
                let field = string_fields.get_mut(usize::from(field_number - 1))?;
                // prost checks every occurrence of a string, the last one kept; a repeated
                // string is left to it.
                if field.is_some() {
                    return None;
                }
                *field = Some(reader.length_delimited()?);
            }
            (6, WIRE_TYPE_VARINT) => event.event_type = low_32_bits_as_i32(reader.varint()?),
            (7, WIRE_TYPE_VARINT) => event.severity = low_32_bits(reader.varint()?),
            // A second occurrence would merge into the first; prost decides that.
            (8, WIRE_TYPE_LENGTH_DELIMITED) if event.occurred_at.is_none() => {
                event.occurred_at = Some(reader.timestamp()?);
            }
            (9, WIRE_TYPE_LENGTH_DELIMITED) if event.received_at.is_none() => {
                event.received_at = Some(reader.timestamp()?);
            }
            (10, WIRE_TYPE_FIXED64) => event.lat = Some(f64::from_le_bytes(reader.eight_bytes()?)),
            (11, WIRE_TYPE_FIXED64) => event.lon = Some(f64::from_le_bytes(reader.eight_bytes()?)),
            (12, WIRE_TYPE_VARINT) => event.crs = low_32_bits_as_i32(reader.varint()?),
            _ => return None,
        }
    }
    let [event_id, source, device_id, community_id, grid_id] = string_fields;
    let strings = [
        (event_id, &mut event.event_id),
        (source, &mut event.source),
        (device_id, &mut event.device_id),
        (community_id, &mut event.community_id),
        (grid_id, &mut event.grid_id),
    ];
    assign_checked_strings(message, strings)
}

/// Copies each string field's bytes into its reused buffer, each accepted exactly when the
/// standard UTF-8 check accepts it (prost's check). Called once per string, that check was
/// 390 M of the 880 M instructions prost spent on the strings of 1 M messages (its set-up
/// dominates on short ids), so the stretch of the message from the first string to the last
/// (the string fields are usually written together) is checked once, vectorized; a
/// piece of a valid stretch that starts and ends on character boundaries is valid itself.
/// Only a piece that the stretch's check cannot vouch for is checked alone.
fn assign_checked_strings(
    message: &[u8],
    strings: [(Option<Range<usize>>, &mut String); 5],
) -> Option<()> {
    let ranges = || strings.iter().filter_map(|(range, _)| range.as_ref());
    let stretch_start = ranges().map(|range| range.start).min().unwrap_or_default();
    let stretch_end = ranges().map(|range| range.end).max().unwrap_or_default();
    let stretch = message
        .get(stretch_start..stretch_end)
        .and_then(|bytes| simdutf8::basic::from_utf8(bytes).ok());
    for (range, target) in strings {
        let Some(range) = range else {
            continue;
        };
        let within_stretch = stretch.and_then(|stretch| {
            stretch.get(
                range.start.checked_sub(stretch_start)?..range.end.checked_sub(stretch_start)?,
            )
        });
        let text = match within_stretch {
            Some(text) => text,
            None => std::str::from_utf8(message.get(range)?).ok()?,
        };
        assign(target, text);
    }
    Some(())
}

/// The low 32 bits of a varint, as prost reads an `int32` or enum field (`value as i32`).
fn low_32_bits_as_i32(value: u64) -> i32 {
    i32::from_le_bytes(low_32_bits(value).to_le_bytes())
}

/// The low 32 bits of a varint, as prost reads a `uint32` field (`value as u32`).
fn low_32_bits(value: u64) -> u32 {
    u32::try_from(value & u64::from(u32::MAX)).unwrap_or_default()
}

/// The low seven bits of each of a word's bytes (the first byte lowest), packed into 56
/// contiguous bits: byte pairs into 14 bits, those pairs into 28, those into 56.
fn packed_seven_bit_groups(word: u64) -> u64 {
    let groups = word & 0x7f7f_7f7f_7f7f_7f7f;
    let pairs = (groups & 0x007f_007f_007f_007f) | ((groups & 0x7f00_7f00_7f00_7f00) >> 1);
    let quads = (pairs & 0x0000_3fff_0000_3fff) | ((pairs & 0x3fff_0000_3fff_0000) >> 2);
    (quads & 0x0000_0000_0fff_ffff) | ((quads & 0x0fff_ffff_0000_0000) >> 4)
}

/// A position in a message; every method answers `None` at anything the fast path leaves to
/// prost.
struct WireReader<'message> {
    /// The whole message, also when reading a nested one (its words may be read across the
    /// nested message's end; what is read never goes past `end`).
    message: &'message [u8],
    position: usize,
    /// Where the message being read ends (a nested message's end within `message`).
    end: usize,
}

impl<'message> WireReader<'message> {
    fn new(message: &'message [u8]) -> WireReader<'message> {
        WireReader {
            message,
            position: 0,
            end: message.len(),
        }
    }

    fn is_at_end(&self) -> bool {
        self.position >= self.end
    }

    /// The byte at the position, if the message being read has one.
    #[inline]
    fn next_byte(&self) -> Option<u8> {
        self.message.get(self.position..self.end)?.first().copied()
    }

    /// The eight bytes from the position as a little-endian word; near the message's end, its
    /// last eight bytes shifted down, zeros past the end.
    fn word_from_position(&self) -> Option<u64> {
        if let Some(word) = crate::byte_words::word_at(self.message, self.position) {
            return Some(word);
        }
        let last_word_start = self.message.len().checked_sub(8)?;
        let bytes_before = self.position.checked_sub(last_word_start)?;
        let bits_before = u32::try_from(bytes_before * 8).ok()?;
        crate::byte_words::word_at(self.message, last_word_start)?.checked_shr(bits_before)
    }

    /// A key written in one byte: a field number from 1 to 15 and its wire type. Longer keys
    /// (field numbers from 16, or a key's varint padded) are not in the flat shape.
    fn single_byte_key(&mut self) -> Option<(u8, u8)> {
        let key = self.next_byte()?;
        if key & 0x80 != 0 {
            return None;
        }
        self.position += 1;
        Some((key >> 3, key & 0x07))
    }

    /// A varint, read as prost reads one. Lengths, enums and severities take one byte, read
    /// here where the call is (a call cost as much as the read).
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        let first_byte = self.next_byte()?;
        if first_byte & 0x80 == 0 {
            self.position += 1;
            return Some(u64::from(first_byte));
        }
        self.longer_varint()
    }

    /// A varint of two or more bytes. Up to eight (every varint here but a negative number's)
    /// are read from one word: the first byte without its continuation bit ends it, and the
    /// 7-bit groups before it are packed together by three shifts.
    #[inline(never)]
    fn longer_varint(&mut self) -> Option<u64> {
        let Some(word) = self.word_from_position() else {
            return self.varint_byte_at_a_time();
        };
        let last_bytes = !word & crate::byte_words::TOP_BITS;
        if last_bytes == 0 {
            return self.varint_byte_at_a_time();
        }
        // The top bit of the varint's last byte: 7, 15, …, 63.
        let last_bit = last_bytes.trailing_zeros();
        let varint_end = self.position + (last_bit / 8 + 1) as usize;
        // Past the end, the zeros of a short word or the next field's bytes: the varint does
        // not end within its message, prost's error to report.
        if varint_end > self.end {
            return None;
        }
        self.position = varint_end;
        let varint_bits = u64::MAX >> (63 - last_bit);
        Some(packed_seven_bit_groups(word & varint_bits))
    }

    /// A varint of at most ten bytes, a byte at a time: a tenth byte may only carry the
    /// value's top bit (a larger one is prost's error to report).
    fn varint_byte_at_a_time(&mut self) -> Option<u64> {
        let rest = self.message.get(self.position..self.end)?;
        let mut value: u64 = 0;
        for (index, &byte) in rest.iter().take(10).enumerate() {
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.position += index + 1;
                return Some(value);
            }
        }
        None
    }

    /// Where the next `length` bytes are, as a length-delimited field's payload, moving past
    /// them.
    fn take(&mut self, length: u64) -> Option<Range<usize>> {
        let end = self.position.checked_add(usize::try_from(length).ok()?)?;
        if end > self.end {
            return None;
        }
        let taken = self.position..end;
        self.position = end;
        Some(taken)
    }

    fn length_delimited(&mut self) -> Option<Range<usize>> {
        let length = self.varint()?;
        self.take(length)
    }

    fn eight_bytes(&mut self) -> Option<[u8; 8]> {
        let range = self.take(8)?;
        <[u8; 8]>::try_from(self.message.get(range)?).ok()
    }

    /// A `google.protobuf.Timestamp` with only its `seconds` (1) and `nanos` (2) as varints,
    /// each possibly repeated (the last one counts) or absent (zero).
    fn timestamp(&mut self) -> Option<pbjson_types::Timestamp> {
        let range = self.length_delimited()?;
        let mut nested = WireReader {
            message: self.message,
            position: range.start,
            end: range.end,
        };
        let mut timestamp = pbjson_types::Timestamp::default();
        while !nested.is_at_end() {
            match nested.single_byte_key()? {
                (1, WIRE_TYPE_VARINT) => {
                    timestamp.seconds = i64::from_le_bytes(nested.varint()?.to_le_bytes());
                }
                (2, WIRE_TYPE_VARINT) => timestamp.nanos = low_32_bits_as_i32(nested.varint()?),
                _ => return None,
            }
        }
        Some(timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// What prost decodes from `bytes` into a fresh event, encoded again (a NaN coordinate
    /// is not equal to itself) with the attributes in order (two maps iterate differently).
    fn comparable(
        mut event: IncidentEvent,
    ) -> (Vec<u8>, std::collections::BTreeMap<String, String>) {
        let attributes = std::mem::take(&mut event.attributes).into_iter().collect();
        (event.encode_to_vec(), attributes)
    }

    fn by_the_fast_path(bytes: &[u8]) -> Option<IncidentEvent> {
        // A reused event with stale contents in every field: none may leak through.
        let mut event = IncidentEvent {
            event_id: "stale".into(),
            source: "stale".into(),
            device_id: "stale".into(),
            community_id: "stale".into(),
            grid_id: "stale".into(),
            event_type: 3,
            severity: 2,
            occurred_at: Some(pbjson_types::Timestamp {
                seconds: 9,
                nanos: 9,
            }),
            received_at: Some(pbjson_types::Timestamp {
                seconds: 9,
                nanos: 9,
            }),
            lat: Some(1.0),
            lon: Some(2.0),
            crs: 1,
            attributes: [("stale".to_string(), "stale".to_string())].into(),
        };
        decode_flat_protobuf_into(bytes, &mut event).then_some(event)
    }

    fn event_strategy() -> impl proptest::strategy::Strategy<Value = IncidentEvent> {
        use proptest::prelude::*;
        let text = "[a-z0-9\\-]{0,24}|[ -~\\u{e9}\\u{4e2d}]{0,8}";
        let timestamp = proptest::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| pbjson_types::Timestamp { seconds, nanos }),
        );
        let enum_value = prop_oneof![0_i32..40, any::<i32>()];
        let coordinate = proptest::option::of(prop_oneof![-180.0_f64..180.0, any::<f64>()]);
        let attributes = proptest::collection::hash_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..2);
        (
            (text, text, text, text, text),
            (
                enum_value.clone(),
                any::<u32>(),
                timestamp.clone(),
                timestamp,
            ),
            (coordinate.clone(), coordinate, enum_value),
            prop_oneof![4 => Just(Default::default()), 1 => attributes],
        )
            .prop_map(
                |(
                    (event_id, source, device_id, community_id, grid_id),
                    (event_type, severity, occurred_at, received_at),
                    (lat, lon, crs),
                    attributes,
                )| IncidentEvent {
                    event_id,
                    source,
                    device_id,
                    community_id,
                    grid_id,
                    event_type,
                    severity,
                    occurred_at,
                    received_at,
                    lat,
                    lon,
                    crs,
                    attributes,
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Whole messages, two messages one after the other (a protobuf merge: later fields
        /// win, timestamps merge), cut short, with a byte changed or with bytes appended: what
        /// the fast path reads, prost reads the same.
        #[test]
        fn the_fast_path_decodes_exactly_what_prost_decodes(
            first in event_strategy(),
            second in event_strategy(),
            cut in 0_usize..200,
            changed_at in 0_usize..200,
            changed_to in proptest::num::u8::ANY,
            appended in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ) {
            let first = first.encode_to_vec();
            let second = second.encode_to_vec();
            let mut changed = first.clone();
            if let Some(byte) = changed.get_mut(changed_at) {
                *byte = changed_to;
            }
            let candidates = [
                first.clone(),
                [first.as_slice(), second.as_slice()].concat(),
                first.iter().copied().take(cut).collect(),
                changed,
                [first.as_slice(), appended.as_slice()].concat(),
            ];
            for candidate in candidates {
                if let Some(fast) = by_the_fast_path(&candidate) {
                    let by_prost = IncidentEvent::decode(candidate.as_slice()).map(comparable);
                    proptest::prop_assert_eq!(Ok(comparable(fast)), by_prost.map_err(|error| error.to_string()));
                }
            }
        }

        /// The flat shape is read by the fast path, not left to prost: any message without
        /// attributes (negative numbers included, as ten-byte varints).
        #[test]
        fn a_flat_message_takes_the_fast_path(event in event_strategy()) {
            let encoded = event.encode_to_vec();
            let fast = by_the_fast_path(&encoded);
            proptest::prop_assert_eq!(fast.is_some(), event.attributes.is_empty());
            if let Some(fast) = fast {
                proptest::prop_assert_eq!(comparable(fast), comparable(event));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_fast_path(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            let _ = by_the_fast_path(&bytes);
        }
    }

    #[test]
    fn the_simulators_messages_take_the_fast_path() {
        let mut simulator = crate::simulator::Simulator::new(
            crate::simulator::SimulatorSettings::default(),
            crate::grid::GridRegistry::embedded(),
        )
        .unwrap();
        for _ in 0..2_000 {
            let event = simulator.next_event();
            let encoded = event.encode_to_vec();
            let fast = by_the_fast_path(&encoded);
            assert!(fast.is_some(), "{event:?}");
            assert_eq!(fast.map(comparable), Some(comparable(event)));
        }
    }

    /// Shapes prost accepts that the fast path leaves to it.
    #[test]
    fn messages_outside_the_flat_shape_go_to_prost() {
        let timestamp = pbjson_types::Timestamp {
            seconds: 5,
            nanos: 6,
        }
        .encode_to_vec();
        let occurred_at = [
            &[0x42, u8::try_from(timestamp.len()).unwrap()][..],
            &timestamp,
        ]
        .concat();
        for message in [
            // An unknown field (number 14, varint).
            vec![0x70, 0x01],
            // The attributes map.
            IncidentEvent {
                attributes: [("floor".to_string(), "3".to_string())].into(),
                ..Default::default()
            }
            .encode_to_vec(),
            // A timestamp given twice (prost merges the second into the first).
            [occurred_at.as_slice(), occurred_at.as_slice()].concat(),
            // A key padded to two bytes (field 1, length 0).
            vec![0x8a, 0x00, 0x00],
        ] {
            assert!(
                IncidentEvent::decode(message.as_slice()).is_ok(),
                "{message:?}"
            );
            assert!(by_the_fast_path(&message).is_none(), "{message:?}");
        }
    }

    /// A ten-byte varint carries only the value's top bit in its last byte: with that bit it
    /// is read as prost reads it (−1 as an event type), with more prost refuses it, and so
    /// the fast path leaves it to prost.
    #[test]
    fn a_ten_byte_varint_is_read_only_as_far_as_prost_reads_it() {
        let event_type_of = |last_byte: u8| {
            let mut message = vec![0x30];
            message.extend_from_slice(&[0xff; 9]);
            message.push(last_byte);
            message
        };
        let minus_one = event_type_of(0x01);
        assert_eq!(
            IncidentEvent::decode(minus_one.as_slice())
                .unwrap()
                .event_type,
            -1
        );
        assert_eq!(
            by_the_fast_path(&minus_one).map(|event| event.event_type),
            Some(-1)
        );
        for too_large in [0x02, 0x7f, 0x81] {
            let message = event_type_of(too_large);
            assert!(IncidentEvent::decode(message.as_slice()).is_err());
            assert!(by_the_fast_path(&message).is_none());
        }
    }

    proptest::proptest! {
        /// The word-at-a-time varint reads what the byte-at-a-time one and prost read, and
        /// stops at the same place, whatever the bytes and wherever the message ends.
        #[test]
        fn a_varint_read_from_a_word_is_read_as_byte_at_a_time(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..14),
            value in proptest::num::u64::ANY,
            shift in 0_u32..64,
            nested_end in 0_usize..24,
        ) {
            let mut encoded = Vec::new();
            prost::encoding::encode_varint(value >> shift, &mut encoded);
            for message in [bytes, [encoded.as_slice(), &[7, 7, 7, 7, 7, 7, 7, 7, 7]].concat()] {
                // Also as if the varint were in a nested message ending at `nested_end`.
                let end = nested_end.min(message.len());
                let mut by_word = WireReader { end, ..WireReader::new(&message) };
                let mut by_byte = WireReader { end, ..WireReader::new(&message) };
                let read = by_word.varint();
                proptest::prop_assert_eq!(read, by_byte.varint_byte_at_a_time());
                proptest::prop_assert_eq!(by_word.position, by_byte.position);
                if let Some(read) = read {
                    let by_prost = prost::encoding::decode_varint(&mut message.get(..end).unwrap_or_default());
                    proptest::prop_assert_eq!(by_prost.ok(), Some(read));
                }
            }
        }
    }
}
