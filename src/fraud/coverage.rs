//! Coverage: the event time gridwatch actually observed, as sorted disjoint spans.
//!
//! The fraud report compares observed cases with the baseline **over the observed time only**
//! (a process that saw one hour of the year must not be compared with 336 days of baseline).
//! A partition's stream counts as flowing between two of its events that are at most
//! [`super::FraudSettings::coverage_max_gap_millis`] apart in event time; a longer silence is
//! a gap (an outage, a restart without a snapshot, a stopped producer) and is not covered.
//! A community is covered by a partition's spans from the first event of that community on
//! that partition (see [`super::ledger`]).

use serde::{Deserialize, Serialize};

/// Most spans kept per set: beyond it the two spans with the smallest gap between them are
/// merged, so a pathological stream (an event every `max_gap` + 1 ms) costs bounded memory;
/// the error is at most that smallest gap, counted as covered.
pub const MAX_SPANS: usize = 4096;

/// Half-open event-time spans `[start, end)` in epoch milliseconds, sorted and disjoint
/// (touching spans are merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSpans {
    spans: Vec<(i64, i64)>,
}

impl TimeSpans {
    /// No coverage.
    pub fn new() -> TimeSpans {
        TimeSpans::default()
    }

    /// Spans from `(start, end)` pairs in any order; empty or inverted pairs are skipped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, i64)>) -> TimeSpans {
        let mut spans = TimeSpans::new();
        for (start, end) in pairs {
            spans.insert(start, end);
        }
        spans
    }

    /// The spans, oldest first.
    pub fn spans(&self) -> &[(i64, i64)] {
        &self.spans
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Covered milliseconds in all.
    pub fn total_millis(&self) -> i64 {
        self.spans
            .iter()
            .map(|(start, end)| end.saturating_sub(*start))
            .fold(0i64, i64::saturating_add)
    }

    /// Records an event at `at_millis`: the stream flowed from the nearest covered instant
    /// within `max_gap_millis` before or after it. An isolated event covers one millisecond
    /// (it proves the stream flowed at that instant, no more).
    pub fn observe(&mut self, at_millis: i64, max_gap_millis: i64) {
        let reach_back = at_millis.saturating_sub(max_gap_millis);
        let reach_forward = at_millis.saturating_add(1).saturating_add(max_gap_millis);
        // The common case on the per-event path: the stream flows in order and only the
        // newest span is within reach. Extending it in place is exactly what the general
        // merge would do (a property test holds them equal), without its searches and shifts.
        let count = self.spans.len();
        let previous_out_of_reach = count < 2
            || self
                .spans
                .get(count - 2)
                .is_some_and(|(_, previous_end)| *previous_end < reach_back);
        if let Some(last) = self.spans.last_mut() {
            if previous_out_of_reach && last.1 >= reach_back && last.0 <= reach_forward {
                last.0 = last.0.min(at_millis);
                last.1 = last.1.max(at_millis.saturating_add(1));
                return;
            }
        }
        self.observe_by_merging(at_millis, max_gap_millis);
    }

    /// [`TimeSpans::observe`] without its in-order shortcut: joins every span within reach.
    fn observe_by_merging(&mut self, at_millis: i64, max_gap_millis: i64) {
        let reach_back = at_millis.saturating_sub(max_gap_millis);
        let reach_forward = at_millis.saturating_add(1).saturating_add(max_gap_millis);
        // Spans ending within reach before the event join it, and so do spans starting within
        // reach after it; `insert` then merges everything in between.
        let first_joining = self
            .spans
            .partition_point(|(_, span_end)| *span_end < reach_back);
        let after_last_joining = self
            .spans
            .partition_point(|(span_start, _)| *span_start <= reach_forward);
        let mut start = at_millis;
        let mut end = at_millis.saturating_add(1);
        if first_joining < after_last_joining {
            if let (Some(first), Some(last)) = (
                self.spans.get(first_joining),
                self.spans.get(after_last_joining - 1),
            ) {
                start = start.min(first.0);
                end = end.max(last.1);
            }
        }
        self.insert(start, end);
    }

    /// Adds `[start, end)` (merging what it overlaps or touches).
    pub fn insert(&mut self, start: i64, end: i64) {
        if end <= start {
            return;
        }
        let first = self
            .spans
            .partition_point(|(_, span_end)| *span_end < start);
        let last = self
            .spans
            .partition_point(|(span_start, _)| *span_start <= end);
        let mut merged = (start, end);
        if first < last {
            if let (Some(first_span), Some(last_span)) =
                (self.spans.get(first), self.spans.get(last - 1))
            {
                merged = (start.min(first_span.0), end.max(last_span.1));
            }
            self.spans.drain(first..last);
        }
        self.spans.insert(first, merged);
        self.enforce_bound();
    }

    /// Adds every span of `other`.
    pub fn union_with(&mut self, other: &TimeSpans) {
        for (start, end) in &other.spans {
            self.insert(*start, *end);
        }
    }

    /// The part of these spans inside `[start, end)`.
    pub fn clipped(&self, start: i64, end: i64) -> TimeSpans {
        TimeSpans {
            spans: self
                .spans
                .iter()
                .filter_map(|(span_start, span_end)| {
                    let clipped = ((*span_start).max(start), (*span_end).min(end));
                    (clipped.0 < clipped.1).then_some(clipped)
                })
                .collect(),
        }
    }

    /// These spans minus `[start, end)`.
    pub fn remove(&mut self, start: i64, end: i64) {
        if end <= start {
            return;
        }
        let mut kept = Vec::with_capacity(self.spans.len() + 1);
        for (span_start, span_end) in self.spans.drain(..) {
            if span_end <= start || span_start >= end {
                kept.push((span_start, span_end));
                continue;
            }
            if span_start < start {
                kept.push((span_start, start));
            }
            if span_end > end {
                kept.push((end, span_end));
            }
        }
        self.spans = kept;
    }

    /// Merges the closest neighbours until at most [`MAX_SPANS`] remain.
    fn enforce_bound(&mut self) {
        while self.spans.len() > MAX_SPANS {
            let smallest_gap = self
                .spans
                .iter()
                .zip(self.spans.iter().skip(1))
                .enumerate()
                .min_by_key(|(_, (left, right))| right.0.saturating_sub(left.1))
                .map(|(index, _)| index);
            let Some(index) = smallest_gap else {
                return;
            };
            let next_end = self.spans.get(index + 1).map(|span| span.1);
            if let (Some(span), Some(next_end)) = (self.spans.get_mut(index), next_end) {
                span.1 = next_end;
            }
            self.spans.remove(index + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn events_closer_than_the_gap_cover_the_time_between_them() {
        let mut spans = TimeSpans::new();
        for minute in [0, 4, 9, 30, 33] {
            spans.observe(minute * MINUTE, 10 * MINUTE);
        }
        assert_eq!(
            spans.spans(),
            &[(0, 9 * MINUTE + 1), (30 * MINUTE, 33 * MINUTE + 1)]
        );
    }

    #[test]
    fn a_late_event_fills_the_gap_it_falls_into() {
        let mut spans = TimeSpans::new();
        spans.observe(0, 10 * MINUTE);
        spans.observe(18 * MINUTE, 10 * MINUTE);
        assert_eq!(spans.spans().len(), 2);
        spans.observe(9 * MINUTE, 10 * MINUTE);
        assert_eq!(spans.spans(), &[(0, 18 * MINUTE + 1)]);
    }

    #[test]
    fn clipping_and_removing_cut_spans_at_the_bounds() {
        let mut spans = TimeSpans::from_pairs([(0, 100), (200, 300)]);
        assert_eq!(spans.clipped(50, 250).spans(), &[(50, 100), (200, 250)]);
        spans.remove(50, 250);
        assert_eq!(spans.spans(), &[(0, 50), (250, 300)]);
        assert_eq!(spans.total_millis(), 100);
    }

    #[test]
    fn a_pathological_stream_keeps_a_bounded_number_of_spans() {
        let mut spans = TimeSpans::new();
        for index in 0..(MAX_SPANS as i64 + 100) {
            spans.observe(index * 10, 5);
        }
        assert_eq!(spans.spans().len(), MAX_SPANS);
    }

    proptest! {
        #[test]
        fn spans_stay_sorted_and_disjoint_whatever_the_order(
            events in proptest::collection::vec(0i64..10_000, 0..200),
            gap in 0i64..500,
        ) {
            let mut spans = TimeSpans::new();
            for at in &events {
                spans.observe(*at, gap);
            }
            for pair in spans.spans().windows(2) {
                prop_assert!(pair[0].1 < pair[1].0);
            }
            for (start, end) in spans.spans() {
                prop_assert!(start < end);
            }
            for at in &events {
                prop_assert!(spans.spans().iter().any(|(start, end)| start <= at && at < end));
            }
        }

        #[test]
        fn the_in_order_shortcut_covers_what_the_general_merge_covers(
            events in proptest::collection::vec(0i64..10_000, 0..200),
            gap in 0i64..500,
        ) {
            let mut shortcut = TimeSpans::new();
            let mut general = TimeSpans::new();
            for at in &events {
                shortcut.observe(*at, gap);
                general.observe_by_merging(*at, gap);
            }
            prop_assert_eq!(shortcut, general);
        }
    }
}
