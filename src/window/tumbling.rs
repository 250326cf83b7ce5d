//! Tumbling event-time panes.
//!
//! One pane per ([`PaneKey`], window), windows of `size` aligned to the epoch:
//! `window_start = floor(t / size) * size` (Euclidean, so negative times work), covering
//! `[start, start + size)`. A pane is final once the watermark reaches
//! `window_end + allowed_lateness`; it is then emitted exactly once, in `(window_start, key)`
//! order. An event whose window is already final is late and is not counted.
//!
//! # Memory per open pane
//!
//! Open panes live in a hash map from `(window_start, key)` to their counts, found in one probe
//! per event, and a B-tree of window starts, each with the keys of its panes, which a flush
//! pops in order and sorts (the emission order is `(window_start, key)`). A B-tree of every
//! pane kept them in that order all along, but each new pane shifted a leaf's entries and
//! searched four levels: a tenth of the counting thread when most panes hold one event.
//!
//! Per pane, at worst: the hash map's entry (a 16-byte key, a 24-byte value and a control
//! byte) at its lowest load, 7/16 right after growing, `41 × 16 / 7 ≈ 94` bytes; its key in its
//! window's list, 8 bytes and as many spare after the list grows (16); and, for a window of a
//! single pane, the window's B-tree entry (an 8-byte start and a 24-byte list, in leaves of
//! 11 entries at least half full: `(11 × 32 + 12) / 5 ≈ 73` bytes, plus ≈ 15 for internal
//! nodes) with its one-key list (8). Worst case ≈ 190 bytes per open (cell, type, window), a
//! window of many panes ≈ 110, against the 200-byte budget. In a postcard snapshot (the same
//! bytes as before: one map from `(window_start, key)` to counts, in order) a pane takes 6–20
//! bytes (varints). Both are checked by `open_pane_memory_stays_within_budget` below. Unlike a
//! B-tree, a hash map keeps its room as panes leave: it holds room for the most panes open at
//! once (each within the bound above) until the open panes fall to an eighth of that room,
//! then gives it back (`the_room_of_a_burst_is_given_back_once_its_windows_close`).

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{ClosedPane, PaneCounts, PaneKey, WindowSettings};
use crate::grid::CellIndex;

/// What happened to one recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The event was added to its (still open) pane.
    Accepted,
    /// The event's window was already final; it was not counted (dead-letter reason `late`).
    Late {
        /// End (exclusive) of the window the event belonged to.
        window_end_millis: i64,
        /// The watermark that made the window final.
        watermark_millis: i64,
    },
}

/// The open tumbling panes of every (cell, event type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TumblingWindows {
    /// Pane size, lateness and so on (sanitized: size ≥ 1, lateness ≥ 0).
    settings: WindowSettings,
    /// Open panes, emitted window by window in `(window_start, key)` order.
    open: OpenPanes,
    /// The highest watermark ever passed to [`TumblingWindows::flush_until`] or
    /// [`TumblingWindows::record`]; windows final at it were emitted, so events for them stay
    /// late even if a caller later passes an older (or no) watermark. Guarantees exactly-once.
    highest_watermark_millis: Option<i64>,
}

impl TumblingWindows {
    /// Empty panes with these settings. A non-positive size is treated as 1 ms and a negative
    /// lateness as 0, so that nothing can divide by zero.
    pub fn new(settings: WindowSettings) -> Self {
        let sanitized = WindowSettings {
            size_millis: settings.size_millis.max(1),
            allowed_lateness_millis: settings.allowed_lateness_millis.max(0),
            ..settings
        };
        Self {
            settings: sanitized,
            open: OpenPanes::default(),
            highest_watermark_millis: None,
        }
    }

    /// Checks restored panes: the pane shape must be the running one (`running`), and every
    /// key must name a cell and type of the registry.
    pub fn check_bounds(
        &self,
        shape: &crate::grid::RegistryShape,
        running: WindowSettings,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        let same_shape = self.settings.size_millis == running.size_millis.max(1)
            && self.settings.allowed_lateness_millis == running.allowed_lateness_millis.max(0);
        if !same_shape {
            return Err(crate::grid::StateOutOfBounds::new(
                "open panes",
                format!(
                    "pane size {} ms / lateness {} ms differ from the running {} ms / {} ms",
                    self.settings.size_millis,
                    self.settings.allowed_lateness_millis,
                    running.size_millis,
                    running.allowed_lateness_millis
                ),
            ));
        }
        self.open
            .counts
            .keys()
            .try_for_each(|(_, key)| key.check_bounds("open panes", shape))
    }

    /// The (sanitized) settings in use.
    pub fn settings(&self) -> WindowSettings {
        self.settings
    }

    /// Start of the window containing `occurred_at_millis`: `floor(t / size) * size`.
    pub fn window_start(&self, occurred_at_millis: i64) -> i64 {
        occurred_at_millis
            .div_euclid(self.settings.size_millis)
            .saturating_mul(self.settings.size_millis)
    }

    /// End (exclusive) of the window starting at `window_start_millis`.
    fn window_end(&self, window_start_millis: i64) -> i64 {
        end_of_window(window_start_millis, self.settings)
    }

    /// Whether the window starting at `window_start_millis` is final at `watermark_millis`.
    fn is_final(&self, window_start_millis: i64, watermark_millis: i64) -> bool {
        let finality_time = self
            .window_end(window_start_millis)
            .saturating_add(self.settings.allowed_lateness_millis);
        watermark_millis >= finality_time
    }

    /// The later of the caller's watermark and the highest one seen so far.
    fn effective_watermark(&self, watermark_millis: Option<i64>) -> Option<i64> {
        match (watermark_millis, self.highest_watermark_millis) {
            (Some(given), Some(highest)) => Some(given.max(highest)),
            (given, highest) => given.or(highest),
        }
    }

    /// Whether an event at this time would be late given the watermark (`None` = nothing is
    /// late, unless an earlier flush already made its window final).
    pub fn is_late(&self, occurred_at_millis: i64, watermark_millis: Option<i64>) -> bool {
        match self.effective_watermark(watermark_millis) {
            Some(watermark) => self.is_final(self.window_start(occurred_at_millis), watermark),
            None => false,
        }
    }

    /// Adds one event to its pane, or reports it late.
    ///
    /// `severity` is 1..=4 (1 most severe); values outside are clamped into that range so that
    /// nothing panics (the decoder rejects them before they get here).
    pub fn record(
        &mut self,
        key: PaneKey,
        occurred_at_millis: i64,
        severity: u8,
        watermark_millis: Option<i64>,
    ) -> RecordOutcome {
        let window_start_millis = self.window_start(occurred_at_millis);
        let effective_watermark = self.effective_watermark(watermark_millis);
        self.highest_watermark_millis = effective_watermark;
        if let Some(watermark) = effective_watermark {
            if self.is_final(window_start_millis, watermark) {
                return RecordOutcome::Late {
                    window_end_millis: self.window_end(window_start_millis),
                    watermark_millis: watermark,
                };
            }
        }
        let clamped_severity = severity.clamp(1, 4);
        let counts = self.open.counts_mut(window_start_millis, key);
        counts.count = counts.count.saturating_add(1);
        counts.severity_sum = counts
            .severity_sum
            .saturating_add(u32::from(clamped_severity));
        let severity_slot = usize::from(clamped_severity - 1);
        if let Some(slot) = counts.count_by_severity.get_mut(severity_slot) {
            *slot = slot.saturating_add(1);
        }
        RecordOutcome::Accepted
    }

    /// Appends every pane that is final at `watermark_millis` to `out`, in
    /// `(window_start, key)` order, and removes it.
    pub fn flush_until(&mut self, watermark_millis: i64, out: &mut Vec<ClosedPane>) {
        let effective_watermark = self
            .effective_watermark(Some(watermark_millis))
            .unwrap_or(watermark_millis);
        self.highest_watermark_millis = Some(effective_watermark);
        while let Some(first_window_start_millis) = self.open.first_window_start() {
            if !self.is_final(first_window_start_millis, effective_watermark) {
                return;
            }
            self.close_first_window(out);
        }
    }

    /// Closes the earliest open window: its panes, in key order, appended to `out`.
    fn close_first_window(&mut self, out: &mut Vec<ClosedPane>) {
        let settings = self.settings;
        self.open
            .pop_first_window(|window_start_millis, key, counts| {
                out.push(ClosedPane {
                    key,
                    window_start_millis,
                    window_end_millis: end_of_window(window_start_millis, settings),
                    counts,
                });
            });
    }

    /// Closes and appends every open pane (end of a file replay), in `(window_start, key)` order.
    ///
    /// Does not move the lateness boundary: the instance is meant to be finished afterwards.
    pub fn flush_all(&mut self, out: &mut Vec<ClosedPane>) {
        out.reserve(self.open.len());
        while self.open.first_window_start().is_some() {
            self.close_first_window(out);
        }
    }

    /// Number of open panes (one per key and window).
    pub fn open_pane_count(&self) -> usize {
        self.open.len()
    }

    /// Open panes for live views: `(window_start, key, counts)`, by window start (the panes of
    /// one window in no particular order).
    pub fn open_panes(&self) -> impl Iterator<Item = (i64, PaneKey, PaneCounts)> + '_ {
        self.open.by_window()
    }
}

/// `key` as one integer ordered as `PaneKey` orders: the cell in the high half, the type in
/// the low half with its sign bit flipped (so that negative types come first, as in `i32`).
fn pane_order(key: PaneKey) -> u64 {
    let type_bits = u32::from_ne_bytes(key.event_type.to_ne_bytes()) ^ 0x8000_0000;
    (u64::from(key.cell.0) << 32) | u64::from(type_bits)
}

/// The key whose [`pane_order`] is `order`.
fn pane_key_of_order(order: u64) -> PaneKey {
    let type_bits = (order as u32) ^ 0x8000_0000;
    PaneKey {
        cell: CellIndex((order >> 32) as u32),
        event_type: i32::from_ne_bytes(type_bits.to_ne_bytes()),
    }
}

/// Room for open panes that is never given back (a few windows of a quiet stream).
const MIN_PANE_ROOM: usize = 1024;

/// End (exclusive) of the window starting at `window_start_millis`.
fn end_of_window(window_start_millis: i64, settings: WindowSettings) -> i64 {
    window_start_millis.saturating_add(settings.size_millis)
}

/// The open panes: counts found by `(window_start, key)` in one probe, and the keys of each
/// window, so that a window closes without searching (see the module docs).
#[derive(Debug, Clone, Default)]
struct OpenPanes {
    /// Each open pane's counts.
    counts: FxHashMap<(i64, PaneKey), PaneCounts>,
    /// The keys of each open window's panes as [`pane_order`] integers, in the order they
    /// opened: sorted as plain integers when the window closes (sorted by an order computed
    /// in every comparison, closing the windows of a 1 M-event replay took 234.0 M
    /// instructions; this way 165.2 M).
    keys_by_window: BTreeMap<i64, Vec<u64>>,
}

impl OpenPanes {
    /// The counts of a pane, opened empty if it was not.
    fn counts_mut(&mut self, window_start_millis: i64, key: PaneKey) -> &mut PaneCounts {
        match self.counts.entry((window_start_millis, key)) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(new) => {
                self.keys_by_window
                    .entry(window_start_millis)
                    // Most windows hold many panes; a lone one costs one key, not four.
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push(pane_order(key));
                new.insert(PaneCounts::default())
            }
        }
    }

    /// The start of the earliest open window.
    fn first_window_start(&self) -> Option<i64> {
        self.keys_by_window
            .first_key_value()
            .map(|(start, _)| *start)
    }

    /// Removes the earliest open window, handing each of its panes to `close` in key order.
    fn pop_first_window(&mut self, mut close: impl FnMut(i64, PaneKey, PaneCounts)) {
        let Some((window_start_millis, mut keys)) = self.keys_by_window.pop_first() else {
            return;
        };
        // By one integer per key, in the order of `PaneKey`'s own (cell, then type): a
        // comparison of two fields per step was a tenth of closing a window.
        keys.sort_unstable();
        for key in keys.into_iter().map(pane_key_of_order) {
            if let Some(counts) = self.counts.remove(&(window_start_millis, key)) {
                close(window_start_millis, key, counts);
            }
        }
        // A hash map keeps its capacity: after a burst it is given back, so that the memory per
        // open pane stays within the bound the module docs compute (a B-tree freed its nodes
        // as panes left). Amortized: only after the open panes fell to an eighth of the room.
        let room = self.counts.capacity();
        if room > MIN_PANE_ROOM && self.counts.len() < room / 8 {
            self.counts.shrink_to(self.counts.len() * 2);
        }
    }

    /// Number of open panes.
    fn len(&self) -> usize {
        self.counts.len()
    }

    /// Every open pane, by window start.
    fn by_window(&self) -> impl Iterator<Item = (i64, PaneKey, PaneCounts)> + '_ {
        self.keys_by_window
            .iter()
            .flat_map(move |(window_start_millis, keys)| {
                keys.iter().filter_map(move |order| {
                    let key = pane_key_of_order(*order);
                    let counts = self.counts.get(&(*window_start_millis, key))?;
                    Some((*window_start_millis, key, *counts))
                })
            })
    }

    /// Every open pane in `(window_start, key)` order: the snapshot's order.
    fn in_order(&self) -> BTreeMap<(i64, PaneKey), PaneCounts> {
        self.counts
            .iter()
            .map(|(window_and_key, counts)| (*window_and_key, *counts))
            .collect()
    }
}

/// Two sets of open panes are equal when their panes are (the keys' order within a window is
/// only the order they opened in).
impl PartialEq for OpenPanes {
    fn eq(&self, other: &OpenPanes) -> bool {
        self.counts == other.counts
    }
}

impl Eq for OpenPanes {}

/// Snapshotted as one map from `(window_start, key)` to counts, in order: the bytes of the
/// B-tree it used to be, so that snapshots written before still restore.
impl Serialize for OpenPanes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.in_order().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OpenPanes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let in_order = BTreeMap::<(i64, PaneKey), PaneCounts>::deserialize(deserializer)?;
        let mut open = OpenPanes::default();
        for ((window_start_millis, key), counts) in in_order {
            *open.counts_mut(window_start_millis, key) = counts;
        }
        Ok(open)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::grid::CellIndex;
    use crate::window::watermark::WatermarkTracker;

    proptest::proptest! {
        /// Panes sorted by their integer order are in `PaneKey`'s order (cells repeat, so that
        /// the order of types within a cell counts, negative ones included).
        #[test]
        fn the_integer_order_of_panes_is_their_key_order(
            keys in proptest::collection::vec(
                (
                    proptest::prop_oneof![0_u32..4, proptest::num::u32::ANY],
                    proptest::prop_oneof![-3_i32..30, proptest::num::i32::ANY],
                ),
                0..50,
            ),
        ) {
            let keys: Vec<PaneKey> = keys
                .into_iter()
                .map(|(cell, event_type)| PaneKey { cell: CellIndex(cell), event_type })
                .collect();
            let mut by_key = keys.clone();
            by_key.sort_unstable();
            let mut by_integer = keys;
            by_integer.sort_unstable_by_key(|key| pane_order(*key));
            proptest::prop_assert_eq!(by_integer, by_key);
        }

        /// A window's keys are kept as their integer order and read back from it.
        #[test]
        fn a_pane_key_is_read_back_from_its_integer_order(
            cell in proptest::num::u32::ANY,
            event_type in proptest::num::i32::ANY,
        ) {
            let key = PaneKey { cell: CellIndex(cell), event_type };
            proptest::prop_assert_eq!(pane_key_of_order(pane_order(key)), key);
        }
    }

    pub(crate) const MINUTE: i64 = 60_000;

    pub(crate) fn settings(allowed_lateness_millis: i64) -> WindowSettings {
        WindowSettings {
            size_millis: MINUTE,
            max_out_of_orderness_millis: 10_000,
            allowed_lateness_millis,
            idle_timeout_millis: 60_000,
        }
    }

    pub(crate) fn key(cell: u32, event_type: i32) -> PaneKey {
        PaneKey {
            cell: CellIndex(cell),
            event_type,
        }
    }

    #[test]
    fn windows_align_to_the_epoch_including_negative_times() {
        let windows = TumblingWindows::new(settings(0));
        assert_eq!(windows.window_start(0), 0);
        assert_eq!(windows.window_start(59_999), 0);
        assert_eq!(windows.window_start(60_000), 60_000);
        assert_eq!(
            windows.window_start(1_700_000_012_345),
            1_700_000_000_000 - 20_000
        );
        assert_eq!(windows.window_start(-1), -60_000);
        assert_eq!(windows.window_start(-60_000), -60_000);
        assert_eq!(windows.window_start(-60_001), -120_000);
        assert_eq!(windows.window_start(i64::MIN), i64::MIN);
    }

    #[test]
    fn event_exactly_at_window_end_goes_to_the_next_window() {
        let mut windows = TumblingWindows::new(settings(0));
        assert_eq!(
            windows.record(key(1, 1), 59_999, 2, None),
            RecordOutcome::Accepted
        );
        assert_eq!(
            windows.record(key(1, 1), 60_000, 2, None),
            RecordOutcome::Accepted
        );
        let starts: Vec<i64> = windows.open_panes().map(|(start, _, _)| start).collect();
        assert_eq!(starts, vec![0, 60_000]);
    }

    #[test]
    fn pane_counts_total_severity_sum_and_per_severity() {
        let mut windows = TumblingWindows::new(settings(0));
        for severity in [1, 1, 3, 4, 2] {
            windows.record(key(5, 9), 1_000, severity, None);
        }
        let mut out = Vec::new();
        windows.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].counts,
            PaneCounts {
                count: 5,
                severity_sum: 11,
                count_by_severity: [2, 1, 1, 1],
            }
        );
        assert_eq!(out[0].window_start_millis, 0);
        assert_eq!(out[0].window_end_millis, MINUTE);
    }

    #[test]
    fn out_of_range_severity_is_clamped_instead_of_panicking() {
        let mut windows = TumblingWindows::new(settings(0));
        windows.record(key(1, 1), 0, 0, None);
        windows.record(key(1, 1), 0, 200, None);
        let (_, _, counts) = windows.open_panes().next().unwrap();
        assert_eq!(counts.count_by_severity, [1, 0, 0, 1]);
        assert_eq!(counts.severity_sum, 5);
    }

    #[test]
    fn pane_is_emitted_once_only_when_watermark_reaches_window_end() {
        let mut windows = TumblingWindows::new(settings(0));
        windows.record(key(1, 1), 10_000, 3, None);
        let mut out = Vec::new();
        windows.flush_until(MINUTE - 1, &mut out);
        assert!(out.is_empty());
        windows.flush_until(MINUTE, &mut out);
        assert_eq!(out.len(), 1);
        windows.flush_until(MINUTE, &mut out);
        windows.flush_until(10 * MINUTE, &mut out);
        windows.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(windows.open_pane_count(), 0);
    }

    #[test]
    fn pane_with_allowed_lateness_is_emitted_once_at_window_end_plus_lateness() {
        let lateness = 15_000;
        let mut windows = TumblingWindows::new(settings(lateness));
        windows.record(key(1, 1), 10_000, 3, None);
        let mut out = Vec::new();
        windows.flush_until(MINUTE + lateness - 1, &mut out);
        assert!(out.is_empty());
        // Still within lateness: accepted, counted in the same pane.
        assert_eq!(
            windows.record(key(1, 1), 20_000, 3, Some(MINUTE + lateness - 1)),
            RecordOutcome::Accepted
        );
        windows.flush_until(MINUTE + lateness, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].counts.count, 2);
        windows.flush_until(MINUTE + lateness + 1, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn late_event_is_reported_late_after_its_window_is_final() {
        let mut windows = TumblingWindows::new(settings(0));
        windows.record(key(1, 1), 10_000, 3, None);
        let mut out = Vec::new();
        windows.flush_until(MINUTE, &mut out);
        assert_eq!(
            windows.record(key(1, 1), 59_000, 3, Some(MINUTE)),
            RecordOutcome::Late {
                window_end_millis: MINUTE,
                watermark_millis: MINUTE,
            }
        );
        assert!(windows.is_late(59_000, Some(MINUTE)));
        // Even if the caller forgets the watermark, the flushed window stays final.
        assert!(windows.is_late(59_000, None));
        assert!(matches!(
            windows.record(key(2, 1), 0, 3, None),
            RecordOutcome::Late { .. }
        ));
        assert_eq!(windows.open_pane_count(), 0);
        windows.flush_all(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn event_older_than_watermark_is_accepted_while_its_window_is_not_final() {
        let mut windows = TumblingWindows::new(settings(0));
        let watermark = MINUTE + 50_000;
        assert!(!windows.is_late(MINUTE + 1_000, Some(watermark)));
        assert_eq!(
            windows.record(key(1, 1), MINUTE + 1_000, 3, Some(watermark)),
            RecordOutcome::Accepted
        );
        assert!(windows.is_late(MINUTE - 1, Some(watermark)));
        // With no watermark at all, nothing is late.
        assert!(!TumblingWindows::new(settings(0)).is_late(MINUTE - 1, None));
    }

    #[test]
    fn closed_panes_are_ordered_by_window_start_then_key() {
        let mut windows = TumblingWindows::new(settings(0));
        windows.record(key(9, 1), MINUTE + 5, 3, None);
        windows.record(key(2, 7), MINUTE + 5, 3, None);
        windows.record(key(2, 3), MINUTE + 5, 3, None);
        windows.record(key(9, 9), 5, 3, None);
        windows.record(key(1, 1), 3 * MINUTE, 3, None);
        let mut out = Vec::new();
        windows.flush_until(2 * MINUTE, &mut out);
        let order: Vec<(i64, PaneKey)> = out
            .iter()
            .map(|pane| (pane.window_start_millis, pane.key))
            .collect();
        assert_eq!(
            order,
            vec![
                (0, key(9, 9)),
                (MINUTE, key(2, 3)),
                (MINUTE, key(2, 7)),
                (MINUTE, key(9, 1)),
            ]
        );
        assert_eq!(windows.open_pane_count(), 1);
    }

    #[test]
    fn open_pane_memory_stays_within_budget() {
        // In-memory (see the module docs): a hash entry at its lowest load, the key in its
        // window's list with as much spare, and a lone pane's own window entry in the B-tree.
        let key_bytes = std::mem::size_of::<PaneKey>();
        let hash_entry_bytes = std::mem::size_of::<((i64, PaneKey), PaneCounts)>() + 1;
        assert_eq!(key_bytes, 8);
        assert_eq!(std::mem::size_of::<PaneCounts>(), 24);
        assert_eq!(hash_entry_bytes, 41);
        let hash_bytes = hash_entry_bytes * 16 / 7;
        let window_entry_bytes = std::mem::size_of::<(i64, Vec<PaneKey>)>();
        assert_eq!(window_entry_bytes, 32);
        let leaf_node_bytes = 11 * window_entry_bytes + 8 + 2 + 2;
        let window_leaf_share = leaf_node_bytes / 5;
        let window_internal_share = (leaf_node_bytes + 12 * 8) / 6 / 5;
        let lone_pane = hash_bytes + key_bytes + window_leaf_share + window_internal_share;
        let pane_of_a_full_window = hash_bytes + 2 * key_bytes;
        let worst_case_per_pane = lone_pane.max(pane_of_a_full_window);
        assert!(worst_case_per_pane <= 200, "{worst_case_per_pane} bytes");

        // Snapshot: postcard bytes per pane with realistic values.
        let mut windows = TumblingWindows::new(settings(0));
        let pane_count = 10_000_u32;
        for index in 0..pane_count {
            let minute = i64::from(index % 10);
            let occurred_at = 1_772_000_000_000 + minute * MINUTE;
            for repeat in 0..3 {
                windows.record(key(index, 1 + (repeat % 2)), occurred_at, 2, None);
            }
        }
        let open = windows.open_pane_count();
        let bytes = postcard::to_allocvec(&windows).unwrap().len();
        let per_pane = bytes / open;
        eprintln!("{per_pane} snapshot bytes per pane, worst case {worst_case_per_pane} in memory");
        assert!(per_pane <= 40, "{per_pane} snapshot bytes per pane");
    }

    #[test]
    fn postcard_round_trip_preserves_open_panes_and_lateness_boundary() {
        let mut windows = TumblingWindows::new(settings(5_000));
        windows.record(key(1, 1), 10_000, 1, None);
        windows.record(key(1, 2), 70_000, 2, None);
        let mut out = Vec::new();
        windows.flush_until(65_000, &mut out);
        let bytes = postcard::to_allocvec(&windows).unwrap();
        let restored: TumblingWindows = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, windows);
        assert!(restored.is_late(1_000, None));
        assert_eq!(restored.open_pane_count(), 1);
    }

    #[test]
    fn open_panes_snapshot_as_the_ordered_map_they_were_kept_in_before() {
        let mut windows = TumblingWindows::new(settings(0));
        for (cell, event_type, occurred_at) in [(9, 1, 70_000), (2, 7, 5_000), (2, 3, 6_000)] {
            windows.record(key(cell, event_type), occurred_at, 2, None);
        }
        let ordered: BTreeMap<(i64, PaneKey), PaneCounts> = windows
            .open_panes()
            .map(|(start, key, counts)| ((start, key), counts))
            .collect();
        assert_eq!(
            postcard::to_allocvec(&windows.open).unwrap(),
            postcard::to_allocvec(&ordered).unwrap()
        );
        let restored: OpenPanes =
            postcard::from_bytes(&postcard::to_allocvec(&ordered).unwrap()).unwrap();
        assert_eq!(restored, windows.open);
    }

    #[test]
    fn the_room_of_a_burst_is_given_back_once_its_windows_close() {
        let mut windows = TumblingWindows::new(settings(0));
        for cell in 0..20_000 {
            windows.record(key(cell, 1), 1_000, 2, None);
        }
        let burst_room = windows.open.counts.capacity();
        windows.record(key(1, 1), 3 * MINUTE, 2, None);
        let mut out = Vec::new();
        windows.flush_until(2 * MINUTE, &mut out);
        assert_eq!(out.len(), 20_000);
        assert_eq!(windows.open_pane_count(), 1);
        let room_after = windows.open.counts.capacity();
        assert!(
            room_after <= MIN_PANE_ROOM && room_after < burst_room,
            "{burst_room} → {room_after}"
        );
    }

    /// One generated event: (arrival jitter, offset from the base time, cell, type, severity).
    type GeneratedEvent = (i64, i64, u32, i32, u8);

    /// Runs events through a watermark tracker driven by the events themselves (one partition,
    /// never idle) and the panes, flushing after every event and at the end.
    fn run_driven_by_events(
        window_settings: WindowSettings,
        events: &[(i64, PaneKey, u8)],
    ) -> (Vec<ClosedPane>, usize) {
        let mut tracker = WatermarkTracker::new(
            window_settings.max_out_of_orderness_millis,
            crate::time::NEVER_MILLIS,
        );
        let mut windows = TumblingWindows::new(window_settings);
        let mut out = Vec::new();
        let mut accepted = 0;
        for (occurred_at, pane_key, severity) in events {
            let watermark_before = tracker.watermark(0);
            if windows.record(*pane_key, *occurred_at, *severity, watermark_before)
                == RecordOutcome::Accepted
            {
                accepted += 1;
                tracker.observe(0, *occurred_at, 0);
            }
            if let Some(watermark_after) = tracker.watermark(0) {
                windows.flush_until(watermark_after, &mut out);
            }
        }
        windows.flush_all(&mut out);
        (out, accepted)
    }

    fn generated_events() -> impl Strategy<Value = Vec<GeneratedEvent>> {
        prop::collection::vec(
            (
                0_i64..10_000,
                -300_000_i64..600_000,
                0_u32..4,
                1_i32..4,
                1_u8..=4,
            ),
            0..200,
        )
    }

    proptest! {
        #[test]
        fn closed_pane_counts_sum_to_accepted_records(
            events in generated_events(),
            lateness in 0_i64..30_000,
        ) {
            // Arbitrary arrival order: some events are late, and the rest must all be counted.
            let arrivals: Vec<(i64, PaneKey, u8)> = events
                .iter()
                .map(|(_, offset, cell, event_type, severity)| (*offset, key(*cell, *event_type), *severity))
                .collect();
            let (closed, accepted) = run_driven_by_events(settings(lateness), &arrivals);
            let total: u64 = closed.iter().map(|pane| u64::from(pane.counts.count)).sum();
            prop_assert_eq!(total, accepted as u64);
            let by_severity: u64 = closed
                .iter()
                .flat_map(|pane| pane.counts.count_by_severity)
                .map(u64::from)
                .sum();
            prop_assert_eq!(by_severity, accepted as u64);
            // Each (window, key) is emitted once, in order.
            for pair in closed.windows(2) {
                prop_assert!(
                    (pair[0].window_start_millis, pair[0].key) < (pair[1].window_start_millis, pair[1].key)
                );
            }
        }

        #[test]
        fn bounded_disorder_permutation_yields_identical_closed_panes(
            events in generated_events(),
            lateness in 0_i64..30_000,
        ) {
            // Sorted by event time, versus arrival by time + jitter with jitter < ooo (10 s): any
            // event arriving after another is at most 10 s older than it, so none is late.
            let mut in_order: Vec<(i64, i64, PaneKey, u8)> = events
                .iter()
                .map(|(jitter, offset, cell, event_type, severity)| (*jitter, *offset, key(*cell, *event_type), *severity))
                .collect();
            in_order.sort_by_key(|(_, offset, _, _)| *offset);
            let mut shuffled = in_order.clone();
            shuffled.sort_by_key(|(jitter, offset, _, _)| offset + jitter);
            let strip = |events: &[(i64, i64, PaneKey, u8)]| -> Vec<(i64, PaneKey, u8)> {
                events.iter().map(|(_, offset, pane_key, severity)| (*offset, *pane_key, *severity)).collect()
            };
            let (closed_in_order, accepted_in_order) = run_driven_by_events(settings(lateness), &strip(&in_order));
            let (closed_shuffled, accepted_shuffled) = run_driven_by_events(settings(lateness), &strip(&shuffled));
            prop_assert_eq!(accepted_in_order, events.len());
            prop_assert_eq!(accepted_shuffled, events.len());
            prop_assert_eq!(closed_in_order, closed_shuffled);
        }
    }
}
