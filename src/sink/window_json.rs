//! Final windows as proto3 JSON lines without serde: one window is written per event or so,
//! and the generic path (pbjson's `Serialize`, which formats every number into a `String`,
//! collects the severity counts into a `Vec<String>` and formats each timestamp with chrono)
//! was a tenth of a replay. This writer produces the very same bytes — a property test below
//! holds it to `serde_json::to_writer` for any window — and falls back to that path for
//! anything it does not expect (an unknown event type number, text that needs escaping).

// No panic path reachable from input, state or configuration (README "Security").

use std::sync::Arc;

use super::{pane_members, WindowMembers};
use crate::byte_words;
use crate::grid::GridRegistry;
use crate::proto::{CellWindow, EventType};
use crate::window::ClosedPane;

/// Encodes windows, remembering the last timestamps' text (consecutive windows share their
/// start and end) and, per cell, the members that come from the registry.
#[derive(Debug, Default)]
pub struct WindowJsonWriter {
    repeated: RepeatedMembers,
    /// The registry whose cells `cell_members` remembers, held so that it stays the same
    /// registry: a registry is never changed once built, and while this handle lives no other
    /// can take its address, so a cell index names the same ids for as long as it is held.
    /// (Comparing the three ids per window instead: the writing thread of a 1 M-event replay
    /// took 767 M instructions, 688 M without.)
    members_registry: Option<Arc<GridRegistry>>,
    /// Per `CellIndex.0` of `members_registry`, its members as [`Self::write_pane`] wrote them;
    /// `Some(None)` when an id needs escaping, so the cell's windows take serde_json's path.
    cell_members: Vec<Option<Option<CellMembers>>>,
}

/// A cell's members as [`WindowJsonWriter::write_members`] writes them.
#[derive(Debug)]
struct CellMembers {
    /// `{` and the grid and community members (those not empty).
    head: Box<[u8]>,
    /// `,"districtId":"…"` (empty when the district id is).
    district_member: Box<[u8]>,
}

impl CellMembers {
    /// The members of `members`' ids; `None` when an id needs escaping.
    fn of<Counts>(members: &WindowMembers<'_, Counts>) -> Option<CellMembers> {
        if !ids_are_plain(members) {
            return None;
        }
        let mut head = Vec::new();
        let mut fields = FieldList::new(&mut head);
        fields.id_members(members);
        let district_member = if members.district_id.is_empty() {
            Box::default()
        } else {
            prewritten_string_member(DISTRICT_MEMBER_START, members.district_id.as_bytes())
        };
        Some(CellMembers {
            head: head.into_boxed_slice(),
            district_member,
        })
    }
}

/// A string member written once to be copied whole, with its comma whatever comes before it
/// ([`FieldList::prewritten_member`] drops the comma when the member is first).
fn prewritten_string_member(member_start: &'static [u8], plain_text: &[u8]) -> Box<[u8]> {
    let mut member = Vec::new();
    FieldList {
        out: &mut member,
        first: false,
    }
    .string_member(member_start, plain_text);
    member.into_boxed_slice()
}

/// What opens the district member.
const DISTRICT_MEMBER_START: &[u8] = b",\"districtId\":\"";

/// Whether serde_json writes the three ids of `members` unchanged.
fn ids_are_plain<Counts>(members: &WindowMembers<'_, Counts>) -> bool {
    [members.grid_id, members.community_id, members.district_id]
        .iter()
        .all(|text| is_plain_json_text(text))
}

impl WindowJsonWriter {
    /// A writer with nothing remembered.
    pub fn new() -> WindowJsonWriter {
        WindowJsonWriter::default()
    }

    /// Appends `window` as one JSON object (no newline), exactly as
    /// `serde_json::to_writer(out, window)` would.
    pub fn write(
        &mut self,
        window: &CellWindow,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        let members = WindowMembers {
            grid_id: &window.grid_id,
            community_id: &window.community_id,
            event_type: window.event_type,
            window_start: window.window_start,
            window_end: window.window_end,
            count: window.count,
            severity_sum: window.severity_sum,
            count_by_severity: window.count_by_severity.iter().copied(),
            district_id: &window.district_id,
        };
        if !self.write_members(members, out)? {
            serde_json::to_writer(out, window)?;
        }
        Ok(())
    }

    /// Appends the final window of `pane`, named from `registry`, exactly as [`Self::write`]
    /// writes the window [`crate::sink::fill_cell_window`] fills: the ids are read from the
    /// registry where they are ([`pane_members`]), not copied into a window first, and their
    /// members are written once per cell of `registry` ([`CellMembers`]). `false` when the cell
    /// is not in `registry` (nothing is written).
    pub fn write_pane(
        &mut self,
        registry: &Arc<GridRegistry>,
        pane: &ClosedPane,
        out: &mut Vec<u8>,
    ) -> Result<bool, serde_json::Error> {
        let Some(members) = pane_members(registry, pane) else {
            return Ok(false);
        };
        // In the registry (`pane_members` found it), so at most its cell count.
        let cell = pane.key.cell.0 as usize;
        if !self
            .members_registry
            .as_ref()
            .is_some_and(|remembered| Arc::ptr_eq(remembered, registry))
        {
            self.cell_members.clear();
            self.members_registry = Some(Arc::clone(registry));
        }
        if self.cell_members.len() <= cell {
            self.cell_members.resize_with(cell + 1, || None);
        }
        if let Some(slot @ None) = self.cell_members.get_mut(cell) {
            *slot = Some(CellMembers::of(&members));
        }
        let cell_members = self
            .cell_members
            .get(cell)
            .and_then(|slot| slot.as_ref()?.as_ref());
        let written = match (cell_members, EventType::try_from(members.event_type)) {
            (Some(cell_members), Ok(event_type)) => {
                out.extend_from_slice(&cell_members.head);
                let mut fields = FieldList {
                    out,
                    first: cell_members.head.len() == 1,
                };
                self.repeated
                    .counted_members(&mut fields, event_type, members)?;
                fields.prewritten_member(&cell_members.district_member);
                fields.end();
                true
            }
            _ => false,
        };
        if !written {
            if let Some(window) = crate::sink::cell_window(registry, pane) {
                serde_json::to_writer(out, &window)?;
            }
        }
        Ok(true)
    }

    /// Appends `members` as serde_json writes a `CellWindow` of them, or answers `false`
    /// (nothing written) for what it does not expect: an unknown event type number, or text
    /// that needs escaping.
    fn write_members(
        &mut self,
        members: WindowMembers<'_, impl ExactSizeIterator<Item = u64>>,
        out: &mut Vec<u8>,
    ) -> Result<bool, serde_json::Error> {
        let Ok(event_type) = EventType::try_from(members.event_type) else {
            return Ok(false);
        };
        if !ids_are_plain(&members) {
            return Ok(false);
        }
        let district_id = members.district_id;
        let mut fields = FieldList::new(out);
        fields.id_members(&members);
        self.repeated
            .counted_members(&mut fields, event_type, members)?;
        if !district_id.is_empty() {
            fields.string_member(DISTRICT_MEMBER_START, district_id.as_bytes());
        }
        fields.end();
        Ok(true)
    }
}

/// The members that repeat from window to window, each formatted once: the event type member
/// of each type, and the window start and end members of the last span written (a batch's
/// windows come by window start, so most share the span of the one before). One copy each
/// instead of a key, a text and a quote: the writing thread of a 1 M-event replay 688 → 603 M
/// instructions.
#[derive(Debug, Default)]
struct RepeatedMembers {
    /// By event type number: `,"eventType":"NAME"`.
    event_types: Vec<Option<Box<[u8]>>>,
    /// The last span, (start, end) as (seconds, nanos), and its `,"windowStart":…,"windowEnd":…`.
    span: Option<(WindowSpan, Vec<u8>)>,
    /// The texts of the spans' timestamps.
    timestamps: TimestampTexts,
}

/// A window's start and end as (seconds, nanos).
type WindowSpan = ((i64, i32), (i64, i32));

impl RepeatedMembers {
    /// The members between the ids and the district: event type, window start and end, the
    /// counts.
    fn counted_members(
        &mut self,
        fields: &mut FieldList<'_>,
        event_type: EventType,
        members: WindowMembers<'_, impl ExactSizeIterator<Item = u64>>,
    ) -> Result<(), serde_json::Error> {
        if members.event_type != 0 {
            self.event_type_member(fields, event_type);
        }
        match (&members.window_start, &members.window_end) {
            (Some(start), Some(end)) => self.span_members(fields, start, end)?,
            (start, end) => {
                if let Some(start) = start {
                    let text = self.timestamps.text(start)?;
                    fields.key(b",\"windowStart\":").raw(text.as_bytes());
                }
                if let Some(end) = end {
                    let text = self.timestamps.text(end)?;
                    fields.key(b",\"windowEnd\":").raw(text.as_bytes());
                }
            }
        }
        if members.count != 0 {
            fields.key(b",\"count\":").quoted_number(members.count);
        }
        if members.severity_sum != 0 {
            fields
                .key(b",\"severitySum\":")
                .quoted_number(members.severity_sum);
        }
        if members.count_by_severity.len() != 0 {
            let out = fields.key(b",\"countBySeverity\":[");
            for (index, count) in members.count_by_severity.enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                push_quoted_number(out, count);
            }
            out.push(b']');
        }
        Ok(())
    }

    /// `,"eventType":"NAME"`, formatted on the type's first window.
    fn event_type_member(&mut self, fields: &mut FieldList<'_>, event_type: EventType) {
        const MEMBER_START: &[u8] = b",\"eventType\":\"";
        let name = event_type.as_str_name().as_bytes();
        let remembered = usize::try_from(event_type as i32)
            .ok()
            .and_then(|index| {
                if self.event_types.len() <= index {
                    self.event_types.resize_with(index + 1, || None);
                }
                self.event_types.get_mut(index)
            })
            .map(|slot| slot.get_or_insert_with(|| prewritten_string_member(MEMBER_START, name)));
        match remembered {
            Some(member) => fields.prewritten_member(member),
            None => fields.string_member(MEMBER_START, name),
        }
    }

    /// `,"windowStart":…,"windowEnd":…`, formatted when the span differs from the last one's.
    fn span_members(
        &mut self,
        fields: &mut FieldList<'_>,
        start: &pbjson_types::Timestamp,
        end: &pbjson_types::Timestamp,
    ) -> Result<(), serde_json::Error> {
        let span = ((start.seconds, start.nanos), (end.seconds, end.nanos));
        if self
            .span
            .as_ref()
            .is_none_or(|(remembered, _)| *remembered != span)
        {
            let mut text = self.span.take().map(|(_, text)| text).unwrap_or_default();
            text.clear();
            let mut span_fields = FieldList {
                out: &mut text,
                first: false,
            };
            span_fields
                .key(b",\"windowStart\":")
                .raw(self.timestamps.text(start)?.as_bytes());
            span_fields
                .key(b",\"windowEnd\":")
                .raw(self.timestamps.text(end)?.as_bytes());
            self.span = Some((span, text));
        }
        if let Some((_, text)) = &self.span {
            fields.prewritten_member(text);
        }
        Ok(())
    }
}

/// The last two (seconds, nanos) → JSON string (quotes included) formatted.
#[derive(Debug, Default)]
struct TimestampTexts {
    recent: [Option<((i64, i32), String)>; 2],
    /// The next slot of `recent` to replace.
    next_slot: usize,
}

impl TimestampTexts {
    /// The JSON text of a timestamp (pbjson's RFC 3339 form, quotes included), formatted by
    /// pbjson itself the first time it is seen, and lent from the remembered copy after that
    /// (two timestamps per window: a copy each was an allocation each).
    fn text(
        &mut self,
        timestamp: &pbjson_types::Timestamp,
    ) -> Result<std::borrow::Cow<'_, str>, serde_json::Error> {
        let key = (timestamp.seconds, timestamp.nanos);
        let remembered_slot = self.recent.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|(remembered, _)| *remembered == key)
        });
        let slot_index = match remembered_slot {
            Some(slot_index) => slot_index,
            None => {
                let slot_index = self.next_slot;
                let text = serde_json::to_string(timestamp)?;
                let Some(slot) = self.recent.get_mut(slot_index) else {
                    return Ok(std::borrow::Cow::Owned(text));
                };
                *slot = Some((key, text));
                self.next_slot = (self.next_slot + 1) % 2;
                slot_index
            }
        };
        match self.recent.get(slot_index) {
            Some(Some((_, text))) => Ok(std::borrow::Cow::Borrowed(text)),
            _ => serde_json::to_string(timestamp).map(std::borrow::Cow::Owned),
        }
    }
}

/// Whether serde_json writes `text` between quotes unchanged: printable ASCII without `"` and
/// `\`. (Grid, community and district ids are digits.) Eight bytes at a time: byte by byte,
/// this check of three ids was an eighth of the writing thread.
fn is_plain_json_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let word_needs_escaping_at =
        |start: usize| byte_words::word_at(bytes, start).is_none_or(word_needs_escaping);
    if bytes.len() < 8 {
        return bytes
            .iter()
            .all(|byte| (0x20..0x7f).contains(byte) && *byte != b'"' && *byte != b'\\');
    }
    // Whole words, then the eight bytes ending the text (looking at some bytes twice).
    let whole_words_plain = (0..bytes.len() / 8).all(|word| !word_needs_escaping_at(word * 8));
    whole_words_plain && !word_needs_escaping_at(bytes.len() - 8)
}

/// Whether any of eight bytes is a control character, `"`, `\`, DEL or not ASCII (exact for
/// the word, see [`crate::byte_words`]). A property test holds it to the byte-at-a-time test.
fn word_needs_escaping(word: u64) -> bool {
    (byte_words::json_string_specials(word)
        | (word & byte_words::TOP_BITS)
        | byte_words::bytes_equal_to(word, 0x7f))
        != 0
}

/// `"n"`: a count below ten (most severity counts and many window counts) without the
/// formatter, and written where it is asked for: as a call, the registers the formatter's path
/// needs were saved and restored for every number (six per window; the writing thread of a
/// 1 M-event replay 603 → 492 M instructions without).
#[inline(always)]
fn push_quoted_number(out: &mut Vec<u8>, number: u64) {
    if let Ok(digit @ 0..=9) = u8::try_from(number) {
        out.extend_from_slice(&[b'"', b'0' + digit, b'"']);
        return;
    }
    push_quoted_formatted_number(out, number);
}

/// `"n"` for any number, by the formatter.
#[inline(never)]
fn push_quoted_formatted_number(out: &mut Vec<u8>, number: u64) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
    out.push(b'"');
}

/// `{`, then `"key":value` pairs separated by commas, then `}`.
struct FieldList<'out> {
    out: &'out mut Vec<u8>,
    first: bool,
}

impl<'out> FieldList<'out> {
    fn new(out: &'out mut Vec<u8>) -> FieldList<'out> {
        out.push(b'{');
        FieldList { out, first: true }
    }

    /// Writes `member_start` — a comma, the quoted key, the colon and what opens the value,
    /// or a whole member written before — without its comma when first, and returns the
    /// buffer for the value. One copy of a literal per member instead of a push or copy per
    /// punctuation mark. Written where it is asked for, so that a literal's copy (not first:
    /// the usual case) has the literal's length, known where it is written, instead of a
    /// call to copy bytes (the writing thread of a 1 M-event replay 492 → 435 M instructions).
    #[inline(always)]
    fn key(&mut self, member_start: &[u8]) -> &mut Vec<u8> {
        if self.first {
            self.first = false;
            self.out
                .extend_from_slice(member_start.get(1..).unwrap_or_default());
        } else {
            self.out.extend_from_slice(member_start);
        }
        self.out
    }

    /// A string member: `member_start` ends with the value's opening quote.
    fn string_member(&mut self, member_start: &'static [u8], plain_text: &[u8]) {
        let out = self.key(member_start);
        out.extend_from_slice(plain_text);
        out.push(b'"');
    }

    /// The grid and community members of `members` (those not empty; their text plain).
    fn id_members<Counts>(&mut self, members: &WindowMembers<'_, Counts>) {
        if !members.grid_id.is_empty() {
            self.string_member(b",\"gridId\":\"", members.grid_id.as_bytes());
        }
        if !members.community_id.is_empty() {
            self.string_member(b",\"communityId\":\"", members.community_id.as_bytes());
        }
    }

    /// A member written before, starting with its comma (nothing when empty).
    fn prewritten_member(&mut self, member: &[u8]) {
        if !member.is_empty() {
            self.key(member);
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Value writers on the output buffer.
trait JsonValue {
    fn quoted_number(&mut self, number: u64);
    fn raw(&mut self, json: &[u8]);
}

impl JsonValue for Vec<u8> {
    fn quoted_number(&mut self, number: u64) {
        push_quoted_number(self, number);
    }

    fn raw(&mut self, json: &[u8]) {
        self.extend_from_slice(json);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn serde_bytes(window: &CellWindow) -> Vec<u8> {
        serde_json::to_vec(window).unwrap()
    }

    fn fast_bytes(writer: &mut WindowJsonWriter, window: &CellWindow) -> Vec<u8> {
        let mut out = Vec::new();
        writer.write(window, &mut out).unwrap();
        out
    }

    fn timestamp() -> impl Strategy<Value = Option<pbjson_types::Timestamp>> {
        prop_oneof![
            Just(None),
            (
                0i64..4_000_000_000,
                prop_oneof![Just(0i32), 0i32..1_000_000_000]
            )
                .prop_map(|(seconds, nanos)| Some(pbjson_types::Timestamp { seconds, nanos })),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9]{6,14}",
            any::<String>(),
            "[ -~]{0,8}",
        ]
    }

    prop_compose! {
        fn window()(
            grid_id in text(),
            community_id in text(),
            event_type in prop_oneof![Just(0i32), 1i32..24, -3i32..100],
            window_start in timestamp(),
            window_end in timestamp(),
            count in prop_oneof![Just(0u64), any::<u64>()],
            severity_sum in prop_oneof![Just(0u64), any::<u64>()],
            count_by_severity in proptest::collection::vec(any::<u64>(), 0..5),
            district_id in text(),
        ) -> CellWindow {
            CellWindow {
                grid_id, community_id, event_type, window_start, window_end, count,
                severity_sum, count_by_severity, district_id,
            }
        }
    }

    proptest! {
        #[test]
        fn writes_exactly_the_bytes_of_serde_json(windows in proptest::collection::vec(window(), 1..6)) {
            let mut writer = WindowJsonWriter::new();
            for window in &windows {
                // An unknown event type is an error on both paths.
                let expected = serde_json::to_vec(window).ok();
                let mut out = Vec::new();
                let written = writer.write(window, &mut out).ok().map(|()| out);
                prop_assert_eq!(written, expected);
            }
        }
    }

    proptest! {
        #[test]
        fn a_word_needs_escaping_exactly_when_one_of_its_bytes_does(word in any::<[u8; 8]>(), plain in proptest::collection::vec(0x20u8..0x7f, 8)) {
            let byte_needs_escaping =
                |byte: &u8| !(0x20..0x7f).contains(byte) || *byte == b'"' || *byte == b'\\';
            prop_assert_eq!(
                word_needs_escaping(u64::from_ne_bytes(word)),
                word.iter().any(byte_needs_escaping)
            );
            // Mostly plain words, with one byte of the random word at each position.
            for position in 0..8 {
                let mut mixed: [u8; 8] = plain.clone().try_into().unwrap();
                mixed[position] = word[position];
                prop_assert_eq!(
                    word_needs_escaping(u64::from_ne_bytes(mixed)),
                    mixed.iter().any(byte_needs_escaping)
                );
            }
        }
    }

    proptest! {
        /// A pane written straight from the registry gives the bytes of the window
        /// `fill_cell_window` fills, written; a cell outside the registry writes nothing.
        #[test]
        fn a_pane_is_written_as_the_window_filled_from_it(
            panes in proptest::collection::vec(
                (
                    0_u32..6_000,
                    prop_oneof![Just(0i32), 1i32..24, -3i32..100],
                    -4_000_000_000_000_i64..4_000_000_000_000,
                    1_i64..86_400_000,
                    any::<u32>(),
                    any::<u32>(),
                    any::<[u32; 4]>(),
                ),
                1..6,
            ),
        ) {
            let registry = crate::grid::GridRegistry::embedded();
            let mut by_pane = WindowJsonWriter::new();
            let mut by_window = WindowJsonWriter::new();
            for (cell, event_type, start, size, count, severity_sum, count_by_severity) in panes {
                let pane = ClosedPane {
                    key: crate::window::PaneKey { cell: crate::grid::CellIndex(cell), event_type },
                    window_start_millis: start,
                    window_end_millis: start + size,
                    counts: crate::window::PaneCounts { count, severity_sum, count_by_severity },
                };
                let mut direct = Vec::new();
                let written = by_pane.write_pane(&registry, &pane, &mut direct).ok();
                let mut window = CellWindow::default();
                let expected = if crate::sink::fill_cell_window(&registry, &pane, &mut window) {
                    let mut filled = Vec::new();
                    by_window.write(&window, &mut filled).ok().map(|()| (true, filled))
                } else {
                    Some((false, Vec::new()))
                };
                prop_assert_eq!(written.map(|written| (written, direct)), expected);
            }
        }
    }

    /// A writer handed another registry writes the ids of that registry's cell, not those
    /// it remembered of the same index in the first.
    #[test]
    fn a_cell_of_another_registry_is_written_with_that_registrys_ids() {
        let embedded = crate::grid::GridRegistry::embedded();
        let tiny = Arc::new(crate::grid::tests::tiny_registry());
        assert_ne!(
            embedded.cells()[0].grid_id,
            tiny.cells()[0].grid_id,
            "the test needs cell 0 to differ"
        );
        let pane = ClosedPane {
            key: crate::window::PaneKey {
                cell: crate::grid::CellIndex(0),
                event_type: EventType::Tailgating as i32,
            },
            window_start_millis: 1_772_409_600_000,
            window_end_millis: 1_772_409_660_000,
            counts: crate::window::PaneCounts {
                count: 2,
                severity_sum: 7,
                count_by_severity: [0, 0, 1, 1],
            },
        };
        let mut writer = WindowJsonWriter::new();
        for registry in [&embedded, &tiny, &embedded, &tiny] {
            let mut written = Vec::new();
            assert!(writer.write_pane(registry, &pane, &mut written).unwrap());
            let window = crate::sink::cell_window(registry, &pane).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&window).unwrap()
            );
        }
    }

    /// One byte that needs escaping at any position of a text of any length up to 24 is
    /// found, in whole words and in the last, overlapping one.
    #[test]
    fn a_byte_that_needs_escaping_is_found_at_any_position() {
        for length in 0..=24 {
            let plain = "4".repeat(length);
            assert!(is_plain_json_text(&plain), "{plain:?}");
            for position in 0..length {
                for special in ['"', '\\', '\n', '\u{7f}', '\u{e9}'] {
                    let mut text: Vec<char> = plain.chars().collect();
                    text[position] = special;
                    let text: String = text.into_iter().collect();
                    assert!(!is_plain_json_text(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn a_typical_window_is_written_as_serde_json_writes_it() {
        let window = CellWindow {
            grid_id: "41060200100102".into(),
            community_id: "410602001001".into(),
            event_type: EventType::Tailgating as i32,
            window_start: Some(pbjson_types::Timestamp {
                seconds: 1_772_409_600,
                nanos: 0,
            }),
            window_end: Some(pbjson_types::Timestamp {
                seconds: 1_772_409_660,
                nanos: 0,
            }),
            count: 1,
            severity_sum: 4,
            count_by_severity: vec![0, 0, 0, 1],
            district_id: "410602".into(),
        };
        let mut writer = WindowJsonWriter::new();
        let first = fast_bytes(&mut writer, &window);
        assert_eq!(first, serde_bytes(&window));
        // The remembered timestamps give the same text.
        assert_eq!(fast_bytes(&mut writer, &window), first);
        assert!(String::from_utf8(first)
            .unwrap()
            .starts_with(r#"{"gridId":"41060200100102","communityId":"410602001001","eventType":"TAILGATING","windowStart":""#));
    }
}
