//! Sliding views derived from panes.
//!
//! The longer views (for example 15 min, 1 h and 24 h) are not windows of their own: they sum
//! the closed 1-minute panes that fall inside them, and live readers add the still-open panes.
//!
//! A view of span `L` at watermark `W` covers the closed panes with
//! `window_end > W_aligned − L`, where `W_aligned` is the end of the last pane that is final at
//! `W`: `floor((W − allowed_lateness) / size) × size`. With the default lateness of 0 that is
//! `floor(W / size) × size`.
//!
//! # Cost
//!
//! Each view keeps a running sum per key. Closed panes also go into one time-ordered queue
//! (`window_start → [(key, count)]`); each view remembers up to which `window_start` it has
//! subtracted expired panes, so every pane is added once and subtracted once per view
//! (O(1) amortized per pane and view, plus an O(log n) queue lookup per advance). Queue
//! entries leave once the longest view has passed them. Nothing is kept per minute per key.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{ClosedPane, PaneCounts, PaneKey};
use crate::grid::CellIndex;

/// One view: a span and the running sums of the panes inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SlidingView {
    /// Length of the view (a multiple of the pane size, e.g. 15 min).
    span_millis: i64,
    /// Panes with `window_start ≤` this have left the view (were subtracted, or were never added
    /// because they closed after leaving it). `None` until the first advance.
    expired_through_start_millis: Option<i64>,
    /// Sum of closed-pane counts per key inside the view; keys whose sum drops to 0 are removed,
    /// so the map only holds non-zero entries. A hash map (this is the hot path of every closed
    /// pane), written to snapshots in key order.
    #[serde(with = "crate::sorted_map")]
    sums: rustc_hash::FxHashMap<PaneKey, u64>,
}

impl SlidingView {
    /// Whether a pane starting at `window_start_millis` is already outside this view.
    fn has_expired(&self, window_start_millis: i64) -> bool {
        self.expired_through_start_millis
            .is_some_and(|expired_through| window_start_millis <= expired_through)
    }

    /// Adds a pane count to the running sum of `key`.
    fn add(&mut self, key: PaneKey, count: u32) {
        let sum = self.sums.entry(key).or_insert(0);
        *sum = sum.saturating_add(u64::from(count));
    }

    /// Subtracts a pane count from the running sum of `key`, dropping the entry at zero.
    fn subtract(&mut self, key: PaneKey, count: u32) {
        let Some(sum) = self.sums.get_mut(&key) else {
            return;
        };
        *sum = sum.saturating_sub(u64::from(count));
        if *sum == 0 {
            self.sums.remove(&key);
        }
    }
}

/// The sliding views (e.g. 15 min, 1 h, 24 h) over closed panes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingViews {
    /// Size of the tumbling panes the views are made of (≥ 1 ms).
    pane_size_millis: i64,
    /// The panes' allowed lateness (≥ 0), so that `W_aligned` is the end of the last final pane.
    allowed_lateness_millis: i64,
    /// The views, in the order given to [`SlidingViews::new`] (the `span_index` of the readers).
    views: Vec<SlidingView>,
    /// Closed panes still inside at least one view, by `window_start`; the views' cursors walk it
    /// to subtract panes as they expire.
    queue: BTreeMap<i64, Vec<(PaneKey, u32)>>,
}

impl SlidingViews {
    /// Views of the given spans (e.g. `[15 min, 1 h, 24 h]`), each a multiple of
    /// `pane_size_millis`, over panes with no allowed lateness (see
    /// [`SlidingViews::with_allowed_lateness`]). A non-positive pane size is treated as 1 ms.
    pub fn new(spans_millis: Vec<i64>, pane_size_millis: i64) -> Self {
        let views = spans_millis
            .into_iter()
            .map(|span_millis| SlidingView {
                span_millis,
                expired_through_start_millis: None,
                sums: rustc_hash::FxHashMap::default(),
            })
            .collect();
        Self {
            pane_size_millis: pane_size_millis.max(1),
            allowed_lateness_millis: 0,
            views,
            queue: BTreeMap::new(),
        }
    }

    /// The same views over panes that stay open `allowed_lateness_millis` past their end, so that
    /// `W_aligned` is the end of the last pane that is really closed (negative means 0).
    pub fn with_allowed_lateness(mut self, allowed_lateness_millis: i64) -> Self {
        self.allowed_lateness_millis = allowed_lateness_millis.max(0);
        self
    }

    /// Checks restored views: the same pane size and spans as the running views, and every key
    /// naming a cell and type of the registry.
    pub fn check_bounds(
        &self,
        shape: &crate::grid::RegistryShape,
        pane_size_millis: i64,
        spans_millis: &[i64],
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        if self.pane_size_millis != pane_size_millis.max(1) || self.spans_millis() != spans_millis {
            return Err(crate::grid::StateOutOfBounds::new(
                "sliding views",
                format!(
                    "spans {:?} over {} ms panes differ from the running {spans_millis:?} over {pane_size_millis} ms",
                    self.spans_millis(),
                    self.pane_size_millis
                ),
            ));
        }
        let view_keys = self.views.iter().flat_map(|view| view.sums.keys());
        let queued_keys = self
            .queue
            .values()
            .flat_map(|panes| panes.iter().map(|(key, _)| key));
        view_keys
            .chain(queued_keys)
            .try_for_each(|key| key.check_bounds("sliding views", shape))
    }

    /// The spans of the views, by `span_index`.
    pub fn spans_millis(&self) -> Vec<i64> {
        self.views.iter().map(|view| view.span_millis).collect()
    }

    /// Adds a closed pane's count to every view it still belongs to.
    ///
    /// Panes normally close in `window_start` order, but any order gives the same sums: a pane
    /// that has already left a view (given the watermark of the last advance) is not added to it.
    pub fn on_pane_closed(&mut self, pane: &ClosedPane) {
        let count = pane.counts.count;
        if count == 0 {
            return;
        }
        let mut still_in_some_view = false;
        for view in &mut self.views {
            if view.has_expired(pane.window_start_millis) {
                continue;
            }
            view.add(pane.key, count);
            still_in_some_view = true;
        }
        if still_in_some_view {
            self.queue
                .entry(pane.window_start_millis)
                .or_default()
                .push((pane.key, count));
        }
    }

    /// The end of the last pane that is final at `watermark_millis`.
    fn aligned_watermark(&self, watermark_millis: i64) -> i64 {
        watermark_millis
            .saturating_sub(self.allowed_lateness_millis)
            .div_euclid(self.pane_size_millis)
            .saturating_mul(self.pane_size_millis)
    }

    /// Drops the panes that fell out of each view at `watermark_millis` (a view of span `L`
    /// keeps panes with `window_end > W_aligned − L`). An older watermark changes nothing.
    pub fn advance(&mut self, watermark_millis: i64) {
        let aligned_watermark = self.aligned_watermark(watermark_millis);
        for view in &mut self.views {
            // window_end ≤ W_aligned − L  ⇔  window_start ≤ W_aligned − L − size.
            let expire_through_start = aligned_watermark
                .saturating_sub(view.span_millis)
                .saturating_sub(self.pane_size_millis);
            if view.has_expired(expire_through_start) {
                continue;
            }
            let lower_bound = match view.expired_through_start_millis {
                Some(expired_through) => Bound::Excluded(expired_through),
                None => Bound::Unbounded,
            };
            let expiring = self
                .queue
                .range((lower_bound, Bound::Included(expire_through_start)));
            for (key, count) in expiring.flat_map(|(_, panes)| panes.iter()) {
                view.subtract(*key, *count);
            }
            view.expired_through_start_millis = Some(expire_through_start);
        }
        self.prune_queue();
    }

    /// Removes queue entries that every view has passed.
    fn prune_queue(&mut self) {
        let mut passed_by_all: Option<i64> = None;
        for view in &self.views {
            let Some(expired_through) = view.expired_through_start_millis else {
                return;
            };
            passed_by_all = Some(match passed_by_all {
                Some(current) => current.min(expired_through),
                None => expired_through,
            });
        }
        let Some(passed_by_all) = passed_by_all else {
            self.queue.clear();
            return;
        };
        while let Some((window_start_millis, _)) = self.queue.first_key_value() {
            if *window_start_millis > passed_by_all {
                return;
            }
            self.queue.pop_first();
        }
    }

    /// Count of events of `key` in view `span_index` (closed panes only; 0 for an unknown view).
    pub fn count(&self, key: PaneKey, span_index: usize) -> u64 {
        self.views
            .get(span_index)
            .and_then(|view| view.sums.get(&key))
            .copied()
            .unwrap_or(0)
    }

    /// Per-cell totals (all types) for view `span_index`, including the `open` panes' counts
    /// (pass `tumbling.open_panes()`; open panes are never older than the view), top `top_n` by
    /// count descending then cell ascending. Empty for an unknown view.
    pub fn top_cells(
        &self,
        span_index: usize,
        open: impl Iterator<Item = (i64, PaneKey, PaneCounts)>,
        top_n: usize,
    ) -> Vec<(CellIndex, u64)> {
        let Some(view) = self.views.get(span_index) else {
            return Vec::new();
        };
        let mut totals_by_cell: BTreeMap<CellIndex, u64> = BTreeMap::new();
        for (key, sum) in &view.sums {
            let total = totals_by_cell.entry(key.cell).or_insert(0);
            *total = total.saturating_add(*sum);
        }
        for (_, key, counts) in open {
            if counts.count == 0 {
                continue;
            }
            let total = totals_by_cell.entry(key.cell).or_insert(0);
            *total = total.saturating_add(u64::from(counts.count));
        }
        let mut ranked: Vec<(CellIndex, u64)> = totals_by_cell.into_iter().collect();
        ranked.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(&right.0)));
        ranked.truncate(top_n);
        ranked
    }

    /// Per-(cell, type) counts of closed panes in a view, for metrics: the non-zero entries, by
    /// key. Empty for an unknown view.
    pub fn counts(&self, span_index: usize) -> impl Iterator<Item = (PaneKey, u64)> + '_ {
        let mut entries: Vec<(PaneKey, u64)> = self
            .views
            .get(span_index)
            .into_iter()
            .flat_map(|view| view.sums.iter().map(|(key, sum)| (*key, *sum)))
            .collect();
        entries.sort_unstable();
        entries.into_iter()
    }

    /// Number of closed panes kept for the views (for metrics and memory checks).
    pub fn queued_pane_count(&self) -> usize {
        self.queue.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn key(cell: u32, event_type: i32) -> PaneKey {
        PaneKey {
            cell: CellIndex(cell),
            event_type,
        }
    }

    fn pane(start_minute: i64, pane_key: PaneKey, count: u32) -> ClosedPane {
        ClosedPane {
            key: pane_key,
            window_start_millis: start_minute * MINUTE,
            window_end_millis: (start_minute + 1) * MINUTE,
            counts: PaneCounts {
                count,
                severity_sum: 3 * count,
                count_by_severity: [0, 0, count, 0],
            },
        }
    }

    fn standard_views() -> SlidingViews {
        SlidingViews::new(vec![15 * MINUTE, 60 * MINUTE, 24 * 60 * MINUTE], MINUTE)
    }

    #[test]
    fn fifteen_minute_view_counts_the_last_fifteen_closed_panes() {
        let mut views = standard_views();
        for minute in 0..20 {
            views.on_pane_closed(&pane(minute, key(1, 5), 1));
            views.on_pane_closed(&pane(minute, key(2, 5), 2));
            views.advance((minute + 1) * MINUTE);
        }
        // W_aligned = 20 min: the 15-min view holds panes ending after minute 5 (minutes 5..=19).
        assert_eq!(views.count(key(1, 5), 0), 15);
        assert_eq!(views.count(key(2, 5), 0), 30);
        assert_eq!(views.count(key(1, 5), 1), 20);
        assert_eq!(views.count(key(1, 5), 2), 20);
        assert_eq!(views.count(key(3, 5), 0), 0);
        assert_eq!(views.count(key(1, 5), 7), 0);
    }

    #[test]
    fn panes_expire_when_they_fall_out_of_the_view() {
        let mut views = standard_views();
        for minute in 0..20 {
            views.on_pane_closed(&pane(minute, key(1, 5), 1));
        }
        views.advance(20 * MINUTE + 59_999);
        assert_eq!(views.count(key(1, 5), 0), 15);
        views.advance(30 * MINUTE);
        assert_eq!(views.count(key(1, 5), 0), 5);
        views.advance(35 * MINUTE);
        assert_eq!(views.count(key(1, 5), 0), 0);
        assert_eq!(views.counts(0).count(), 0, "zero sums are dropped");
        assert_eq!(views.count(key(1, 5), 1), 20);
        views.advance(80 * MINUTE);
        assert_eq!(views.count(key(1, 5), 1), 0);
        assert_eq!(views.count(key(1, 5), 2), 20);
        // An older watermark changes nothing.
        views.advance(0);
        assert_eq!(views.count(key(1, 5), 2), 20);
        views.advance(24 * 60 * MINUTE + 19 * MINUTE);
        assert_eq!(views.count(key(1, 5), 2), 1);
        views.advance(24 * 60 * MINUTE + 20 * MINUTE);
        assert_eq!(views.count(key(1, 5), 2), 0);
        assert_eq!(views.queued_pane_count(), 0);
    }

    #[test]
    fn allowed_lateness_shifts_the_aligned_watermark() {
        let mut views = SlidingViews::new(vec![15 * MINUTE], MINUTE).with_allowed_lateness(30_000);
        for minute in 0..19 {
            views.on_pane_closed(&pane(minute, key(1, 5), 1));
        }
        // At W = 20:20 the last final pane ends at 19:00 (20:00 + 30 s > 20:20): the view holds
        // panes ending after 4:00, i.e. minutes 4..=18.
        views.advance(20 * MINUTE + 20_000);
        assert_eq!(views.count(key(1, 5), 0), 15);
        // At 20:30 pane 19 closes and pane 4 leaves.
        views.on_pane_closed(&pane(19, key(1, 5), 1));
        views.advance(20 * MINUTE + 30_000);
        assert_eq!(views.count(key(1, 5), 0), 15);
        views.advance(21 * MINUTE + 30_000);
        assert_eq!(views.count(key(1, 5), 0), 14);
    }

    #[test]
    fn pane_closing_after_it_left_a_view_is_not_added_to_it() {
        let mut views = standard_views();
        views.advance(30 * MINUTE);
        views.on_pane_closed(&pane(2, key(1, 5), 4));
        assert_eq!(views.count(key(1, 5), 0), 0);
        assert_eq!(views.count(key(1, 5), 1), 4);
        views.advance(70 * MINUTE);
        assert_eq!(views.count(key(1, 5), 1), 0);
        assert_eq!(views.count(key(1, 5), 2), 4);
    }

    #[test]
    fn top_cells_include_open_panes_and_order_ties_by_cell() {
        let mut views = standard_views();
        views.on_pane_closed(&pane(0, key(7, 1), 3));
        views.on_pane_closed(&pane(0, key(7, 2), 1));
        views.on_pane_closed(&pane(0, key(4, 1), 2));
        views.on_pane_closed(&pane(0, key(9, 1), 1));
        views.advance(MINUTE);
        let open = vec![
            (
                MINUTE,
                key(4, 3),
                PaneCounts {
                    count: 2,
                    ..PaneCounts::default()
                },
            ),
            (
                MINUTE,
                key(1, 1),
                PaneCounts {
                    count: 4,
                    ..PaneCounts::default()
                },
            ),
            (
                MINUTE,
                key(8, 1),
                PaneCounts {
                    count: 0,
                    ..PaneCounts::default()
                },
            ),
        ];
        let top = views.top_cells(0, open.clone().into_iter(), 10);
        assert_eq!(
            top,
            vec![
                (CellIndex(1), 4),
                (CellIndex(4), 4),
                (CellIndex(7), 4),
                (CellIndex(9), 1),
            ]
        );
        let top_two = views.top_cells(0, open.into_iter(), 2);
        assert_eq!(top_two, vec![(CellIndex(1), 4), (CellIndex(4), 4)]);
        assert!(views.top_cells(5, std::iter::empty(), 10).is_empty());
    }

    #[test]
    fn counts_iterates_non_zero_entries_by_key() {
        let mut views = standard_views();
        views.on_pane_closed(&pane(0, key(3, 1), 2));
        views.on_pane_closed(&pane(0, key(1, 9), 1));
        views.on_pane_closed(&pane(0, key(1, 2), 0));
        let counts: Vec<(PaneKey, u64)> = views.counts(1).collect();
        assert_eq!(counts, vec![(key(1, 9), 1), (key(3, 1), 2)]);
        assert_eq!(views.counts(3).count(), 0);
    }

    #[test]
    fn postcard_round_trip_preserves_views() {
        let mut views = standard_views();
        for minute in 0..40 {
            views.on_pane_closed(&pane(minute, key(minute as u32 % 3, 5), 1));
            views.advance((minute + 1) * MINUTE);
        }
        let bytes = postcard::to_allocvec(&views).unwrap();
        let mut restored: SlidingViews = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, views);
        restored.advance(100 * MINUTE);
        views.advance(100 * MINUTE);
        assert_eq!(restored, views);
        assert_eq!(restored.count(key(0, 5), 2), 14);
    }

    /// A generated step: either a pane closes or the watermark moves.
    #[derive(Debug, Clone)]
    enum Step {
        /// (start minute, cell, count)
        Close(i64, u32, u32),
        /// Watermark in millis.
        Advance(i64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                (0_i64..200, 0_u32..4, 1_u32..5)
                    .prop_map(|(minute, cell, count)| Step::Close(minute, cell, count)),
                (0_i64..300 * MINUTE).prop_map(Step::Advance),
            ],
            0..150,
        )
    }

    proptest! {
        #[test]
        fn running_sums_match_a_brute_force_scan(steps in steps(), lateness in 0_i64..120_000) {
            let spans = vec![15 * MINUTE, 60 * MINUTE, 120 * MINUTE];
            let mut views = SlidingViews::new(spans.clone(), MINUTE).with_allowed_lateness(lateness);
            let mut all_panes: Vec<ClosedPane> = Vec::new();
            let mut highest_aligned: Option<i64> = None;
            for step in steps {
                match step {
                    Step::Close(minute, cell, count) => {
                        let closed = pane(minute, key(cell, 1), count);
                        views.on_pane_closed(&closed);
                        all_panes.push(closed);
                    }
                    Step::Advance(watermark) => {
                        views.advance(watermark);
                        let aligned = (watermark - lateness).div_euclid(MINUTE) * MINUTE;
                        highest_aligned = Some(highest_aligned.map_or(aligned, |current: i64| current.max(aligned)));
                    }
                }
                for (span_index, span) in spans.iter().enumerate() {
                    for cell in 0..4 {
                        let expected: u64 = all_panes
                            .iter()
                            .filter(|closed| closed.key == key(cell, 1))
                            .filter(|closed| highest_aligned.is_none_or(|aligned| closed.window_end_millis > aligned - span))
                            .map(|closed| u64::from(closed.counts.count))
                            .sum();
                        prop_assert_eq!(views.count(key(cell, 1), span_index), expected);
                    }
                }
            }
        }
    }
}
