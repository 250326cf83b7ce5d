//! Watermarks per partition.
//!
//! Each source partition (a Kafka partition, or the single partition of a file replay or the
//! simulator) contributes `max occurred_at seen − max_out_of_orderness`. The operator watermark is
//! the minimum over the partitions that are still active. A partition that has had no event for
//! `idle_timeout` of wall-clock time is idle and stops holding the watermark back. When every
//! partition is idle, the watermark advances with processing time (see
//! [`WatermarkTracker::watermark`]). The operator watermark never decreases, and there is none
//! before the first event.
//!
//! A partition's own progress is not simply its largest event time: one source with a clock
//! far ahead is not believed on its own ([`super::progress`]), so a bad clock cannot make
//! other sources' events late.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::progress::{ClockGuardSettings, CorroboratedProgress, ProgressObservation};

/// What the tracker knows about one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionProgress {
    /// Largest believed `occurred_at` (epoch millis) among the accepted events of this
    /// partition; the partition promises (up to the out-of-orderness bound) not to go below it
    /// again. Sources far ahead are held out of it until corroborated.
    event_time: CorroboratedProgress,
    /// Wall-clock time (epoch millis) of the partition's most recent event; decides idleness.
    last_activity_wall_millis: i64,
}

/// Tracks event-time progress per partition and derives the operator watermark.
///
/// Deterministic and snapshot-friendly: partitions live in a `BTreeMap`, and every decision
/// depends only on the recorded times and the wall time passed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkTracker {
    /// How far behind the largest event time an event may still arrive (bounded disorder).
    max_out_of_orderness_millis: i64,
    /// Wall-clock silence after which a partition no longer holds the watermark back.
    idle_timeout_millis: i64,
    /// How far one source may jump ahead on its own ([`super::progress`]).
    clock_guard: ClockGuardSettings,
    /// Progress of each partition that has delivered at least one event and was not removed.
    partitions: BTreeMap<u32, PartitionProgress>,
    /// The last watermark handed out; kept so that the watermark never decreases (for example
    /// when an idle partition becomes active again, or a partition is revoked).
    current_watermark_millis: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker with no partitions yet (so no watermark).
    ///
    /// Negative durations are treated as zero.
    pub fn new(max_out_of_orderness_millis: i64, idle_timeout_millis: i64) -> Self {
        Self {
            max_out_of_orderness_millis: max_out_of_orderness_millis.max(0),
            idle_timeout_millis: idle_timeout_millis.max(0),
            clock_guard: ClockGuardSettings::OFF,
            partitions: BTreeMap::new(),
            current_watermark_millis: None,
        }
    }

    /// The same tracker with a clock guard: a source far ahead of its partition does not move
    /// the partition's watermark until enough other sources corroborate the time.
    pub fn with_clock_guard(mut self, clock_guard: ClockGuardSettings) -> Self {
        self.clock_guard = clock_guard;
        self
    }

    /// Records an accepted event's time for a partition at wall time `wall_millis`, from a
    /// single anonymous source (every event is one clock's word).
    pub fn observe(&mut self, partition: u32, occurred_at_millis: i64, wall_millis: i64) {
        self.observe_source(partition, 0, occurred_at_millis, wall_millis);
    }

    /// Records an accepted event of the source `source_key` ([`super::progress::source_key`])
    /// for a partition at wall time `wall_millis`; says whether the event moved the
    /// partition's progress or was held ahead.
    ///
    /// The partition's progress only grows; its last activity is the latest wall time seen (a
    /// wall clock stepping backwards does not make the partition look older).
    pub fn observe_source(
        &mut self,
        partition: u32,
        source_key: u64,
        occurred_at_millis: i64,
        wall_millis: i64,
    ) -> ProgressObservation {
        let clock_guard = self.clock_guard;
        let progress = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionProgress {
                event_time: CorroboratedProgress::starting_at(occurred_at_millis),
                last_activity_wall_millis: wall_millis,
            });
        progress.last_activity_wall_millis = progress.last_activity_wall_millis.max(wall_millis);
        progress
            .event_time
            .observe(source_key, occurred_at_millis, clock_guard)
    }

    /// Current operator watermark (monotonic), `None` before any event.
    ///
    /// - Some partition active (`wall − last_activity < idle_timeout`): the minimum of the active
    ///   partitions' watermarks.
    /// - Every partition idle: `max partition watermark + (wall − latest activity −
    ///   idle_timeout)`, where the processing-time advance never carries it beyond
    ///   `wall − max_out_of_orderness`. (When events carry future times, the maximum partition
    ///   watermark alone may already exceed that bound; it is then used as is, since no
    ///   partition holds it back.)
    ///
    /// The result is never below a previously returned watermark.
    pub fn watermark(&mut self, wall_millis: i64) -> Option<i64> {
        let candidate = self.candidate_watermark(wall_millis);
        let next = match (self.current_watermark_millis, candidate) {
            (Some(current), Some(candidate)) => Some(current.max(candidate)),
            (current, candidate) => current.or(candidate),
        };
        self.current_watermark_millis = next;
        next
    }

    /// The watermark the partitions justify right now, before the monotonic clamp.
    fn candidate_watermark(&self, wall_millis: i64) -> Option<i64> {
        let active_minimum = self
            .partitions
            .values()
            .filter(|progress| !self.is_idle(progress, wall_millis))
            .map(|progress| self.partition_watermark(progress))
            .min();
        if active_minimum.is_some() {
            return active_minimum;
        }
        let maximum_partition_watermark = self
            .partitions
            .values()
            .map(|progress| self.partition_watermark(progress))
            .max()?;
        let latest_activity_wall_millis = self
            .partitions
            .values()
            .map(|progress| progress.last_activity_wall_millis)
            .max()?;
        let idle_advance_millis = wall_millis
            .saturating_sub(latest_activity_wall_millis)
            .saturating_sub(self.idle_timeout_millis)
            .max(0);
        let processing_time_ceiling = wall_millis.saturating_sub(self.max_out_of_orderness_millis);
        let advanced = maximum_partition_watermark
            .saturating_add(idle_advance_millis)
            .min(processing_time_ceiling);
        Some(advanced.max(maximum_partition_watermark))
    }

    /// Whether a partition has been silent for at least the idle timeout.
    fn is_idle(&self, progress: &PartitionProgress, wall_millis: i64) -> bool {
        wall_millis.saturating_sub(progress.last_activity_wall_millis) >= self.idle_timeout_millis
    }

    /// One partition's own watermark.
    fn partition_watermark(&self, progress: &PartitionProgress) -> i64 {
        progress
            .event_time
            .progress_millis()
            .saturating_sub(self.max_out_of_orderness_millis)
    }

    /// Forgets a revoked partition (Kafka rebalance). The operator watermark keeps its value.
    pub fn remove_partition(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// Per-partition watermarks (for metrics): `(partition, progress − ooo)`, by partition.
    pub fn partition_watermarks(&self) -> Vec<(u32, i64)> {
        self.partitions
            .iter()
            .map(|(partition, progress)| (*partition, self.partition_watermark(progress)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT_OF_ORDERNESS: i64 = 10_000;
    const IDLE_TIMEOUT: i64 = 30_000;

    #[test]
    fn no_watermark_before_the_first_event() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        assert_eq!(tracker.watermark(0), None);
        assert_eq!(tracker.watermark(1_000_000), None);
        assert!(tracker.partition_watermarks().is_empty());
    }

    #[test]
    fn single_partition_watermark_is_max_event_time_minus_out_of_orderness() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(0, 100_000, 5);
        tracker.observe(0, 90_000, 6);
        assert_eq!(tracker.watermark(7), Some(90_000));
        tracker.observe(0, 130_000, 8);
        assert_eq!(tracker.watermark(9), Some(120_000));
    }

    #[test]
    fn operator_watermark_is_the_minimum_over_active_partitions() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(0, 200_000, 1_000);
        tracker.observe(1, 150_000, 1_000);
        tracker.observe(2, 180_000, 1_000);
        assert_eq!(tracker.watermark(2_000), Some(140_000));
        assert_eq!(
            tracker.partition_watermarks(),
            vec![(0, 190_000), (1, 140_000), (2, 170_000)]
        );
    }

    #[test]
    fn idle_partition_stops_holding_the_watermark_back() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(0, 200_000, 0);
        tracker.observe(1, 100_000, 0);
        assert_eq!(tracker.watermark(1_000), Some(90_000));
        // Partition 0 keeps delivering; partition 1 falls silent.
        tracker.observe(0, 210_000, 20_000);
        assert_eq!(tracker.watermark(29_999), Some(90_000));
        assert_eq!(tracker.watermark(30_000), Some(200_000));
    }

    #[test]
    fn all_idle_partitions_advance_with_processing_time_up_to_wall_minus_out_of_orderness() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        let wall_start = 1_000_000;
        tracker.observe(0, 500_000, wall_start);
        tracker.observe(1, 400_000, wall_start - 5_000);
        assert_eq!(tracker.watermark(wall_start), Some(390_000));
        // Both idle from wall_start + IDLE_TIMEOUT: the max partition watermark, then growing.
        assert_eq!(tracker.watermark(wall_start + IDLE_TIMEOUT), Some(490_000));
        assert_eq!(
            tracker.watermark(wall_start + IDLE_TIMEOUT + 7_000),
            Some(497_000)
        );
        // Far later: capped at wall − ooo.
        let far_wall = wall_start + 10_000_000;
        let far_watermark = tracker.watermark(far_wall);
        assert_eq!(
            far_watermark,
            Some(far_wall - IDLE_TIMEOUT - wall_start + 490_000)
        );
        assert!(far_watermark.unwrap() <= far_wall - OUT_OF_ORDERNESS);
    }

    #[test]
    fn idle_advance_is_capped_at_wall_minus_out_of_orderness() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        // Device clock 50 s ahead of ours: the processing-time advance hits the cap.
        tracker.observe(0, 1_050_000, 1_000_000);
        assert_eq!(tracker.watermark(1_000_000), Some(1_040_000));
        // Idle, but the advance would pass wall − ooo: the partition watermark stands.
        assert_eq!(tracker.watermark(1_040_000), Some(1_040_000));
        assert_eq!(tracker.watermark(1_060_000), Some(1_050_000));
        assert_eq!(tracker.watermark(1_100_000), Some(1_090_000));
    }

    #[test]
    fn watermark_never_decreases_when_an_idle_partition_returns_or_is_removed() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(0, 200_000, 0);
        tracker.observe(1, 100_000, 0);
        assert_eq!(tracker.watermark(IDLE_TIMEOUT), Some(190_000));
        // Partition 1 comes back with an old event: its own watermark is lower, the operator's is not.
        tracker.observe(1, 110_000, IDLE_TIMEOUT + 1);
        assert_eq!(tracker.watermark(IDLE_TIMEOUT + 2), Some(190_000));
        tracker.remove_partition(0);
        tracker.remove_partition(1);
        assert_eq!(tracker.watermark(IDLE_TIMEOUT + 3), Some(190_000));
        assert!(tracker.partition_watermarks().is_empty());
    }

    #[test]
    fn removed_partition_no_longer_holds_the_watermark_back() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(0, 200_000, 0);
        tracker.observe(1, 100_000, 0);
        assert_eq!(tracker.watermark(1), Some(90_000));
        tracker.remove_partition(1);
        assert_eq!(tracker.watermark(2), Some(190_000));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut tracker = WatermarkTracker::new(i64::MAX, i64::MAX);
        tracker.observe(0, i64::MIN, i64::MIN);
        tracker.observe(1, i64::MAX, i64::MAX);
        assert!(tracker.watermark(i64::MAX).is_some());
        assert!(tracker.watermark(i64::MIN).is_some());
    }

    #[test]
    fn postcard_round_trip_preserves_watermarks() {
        let mut tracker = WatermarkTracker::new(OUT_OF_ORDERNESS, IDLE_TIMEOUT);
        tracker.observe(3, 200_000, 0);
        tracker.observe(7, 150_000, 10);
        assert_eq!(tracker.watermark(20), Some(140_000));
        let bytes = postcard::to_allocvec(&tracker).unwrap();
        let mut restored: WatermarkTracker = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, tracker);
        for wall in [25, IDLE_TIMEOUT + 5, IDLE_TIMEOUT + 50, 10_000_000] {
            assert_eq!(restored.watermark(wall), tracker.watermark(wall));
        }
    }
}
