//! Event-time progress of one partition that a few bad clocks cannot move.
//!
//! A partition's watermark follows the largest event time it has seen. One device whose clock
//! runs ahead would drag it forward alone, and every other device's events of the skipped
//! span would become late: in the field one smoke detector 55 minutes fast made half of all
//! later events late and silenced fire alerts. So a single source is not believed when it
//! jumps far ahead of everyone else.
//!
//! # The rule
//!
//! - Progress `P` is the largest *believed* event time. An event at most
//!   [`ClockGuardSettings::jump_tolerance_millis`] ahead of `P` is believed and moves `P` as
//!   before.
//! - An event further ahead is *ahead*: it is accepted into its pane like any other, but `P`
//!   stays, and its source (a device, or a reporting system for events without a device) is
//!   remembered with its largest time.
//! - Time has truly moved when `tolerated_fast_sources + 1` distinct sources are ahead at
//!   once: `P` moves to the `(tolerated_fast_sources + 1)`-th largest of their times, so up
//!   to `tolerated_fast_sources` bad clocks can never pick the new time.
//! - A source stops being ahead once `P` comes within the tolerance of its time (its clock
//!   was right after all, or real time caught up with it).
//!
//! Everything depends only on the events and their order, never on the wall clock, so a
//! replay of history and a live run decide the same, and a restored snapshot continues
//! exactly.

use serde::{Deserialize, Serialize};

/// How far one source may jump ahead on its own, and how many bad clocks are tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockGuardSettings {
    /// An event further than this ahead of the partition's progress does not move it on its
    /// own. [`NEVER_HELD`] turns the guard off.
    pub jump_tolerance_millis: i64,
    /// How many sources may be ahead at once without moving progress.
    pub tolerated_fast_sources: u16,
}

/// A tolerance no event time exceeds: every event is believed (the guard is off).
pub const NEVER_HELD: i64 = i64::MAX;

impl ClockGuardSettings {
    /// Every event moves progress (the behaviour without a guard).
    pub const OFF: ClockGuardSettings = ClockGuardSettings {
        jump_tolerance_millis: NEVER_HELD,
        tolerated_fast_sources: 0,
    };

    /// Distinct sources that must be ahead together before a jump is believed.
    fn corroborating_sources(self) -> usize {
        usize::from(self.tolerated_fast_sources).saturating_add(1)
    }
}

/// What one observed event did to the partition's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressObservation {
    /// Believed: progress is now at least the event's time.
    Believed,
    /// Too far ahead to be believed alone: progress did not move. `lead_millis` is how far
    /// the event is ahead of the progress.
    HeldAhead {
        /// Event time minus progress.
        lead_millis: i64,
    },
    /// Enough sources were ahead together: progress jumped to the corroborated time.
    Corroborated,
}

/// One source that is currently ahead of progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SourceAhead {
    /// Hash of the source's identity (see [`source_key`]).
    source_key: u64,
    /// Largest event time of the source beyond the tolerance.
    event_time_millis: i64,
}

/// Believed event-time progress of one partition (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorroboratedProgress {
    /// Largest believed event time (epoch millis).
    progress_millis: i64,
    /// Sources ahead of progress, at most `tolerated_fast_sources + 1` at any time.
    sources_ahead: Vec<SourceAhead>,
}

impl CorroboratedProgress {
    /// Progress starting at the partition's first event.
    pub fn starting_at(first_event_time_millis: i64) -> CorroboratedProgress {
        CorroboratedProgress {
            progress_millis: first_event_time_millis,
            sources_ahead: Vec::new(),
        }
    }

    /// The largest believed event time.
    pub fn progress_millis(&self) -> i64 {
        self.progress_millis
    }

    /// How many sources are currently held ahead.
    pub fn sources_ahead(&self) -> usize {
        self.sources_ahead.len()
    }

    /// Applies one accepted event of `source_key` at `event_time_millis`.
    pub fn observe(
        &mut self,
        source_key: u64,
        event_time_millis: i64,
        settings: ClockGuardSettings,
    ) -> ProgressObservation {
        let believable_until = self
            .progress_millis
            .saturating_add(settings.jump_tolerance_millis.max(0));
        if event_time_millis <= believable_until {
            if event_time_millis > self.progress_millis {
                self.progress_millis = event_time_millis;
                self.forget_sources_caught_up(settings);
            }
            return ProgressObservation::Believed;
        }
        match self
            .sources_ahead
            .iter_mut()
            .find(|ahead| ahead.source_key == source_key)
        {
            Some(ahead) => ahead.event_time_millis = ahead.event_time_millis.max(event_time_millis),
            None => self.sources_ahead.push(SourceAhead {
                source_key,
                event_time_millis,
            }),
        }
        let needed = settings.corroborating_sources();
        if self.sources_ahead.len() < needed {
            return ProgressObservation::HeldAhead {
                lead_millis: event_time_millis.saturating_sub(self.progress_millis),
            };
        }
        // Latest first; ties by key so that the order (and a snapshot) is deterministic.
        self.sources_ahead.sort_by(|left, right| {
            right
                .event_time_millis
                .cmp(&left.event_time_millis)
                .then(left.source_key.cmp(&right.source_key))
        });
        if let Some(corroborated) = self.sources_ahead.get(needed - 1) {
            self.progress_millis = self.progress_millis.max(corroborated.event_time_millis);
        }
        self.forget_sources_caught_up(settings);
        ProgressObservation::Corroborated
    }

    /// Drops the sources that progress has come within the tolerance of.
    fn forget_sources_caught_up(&mut self, settings: ClockGuardSettings) {
        let believable_until = self
            .progress_millis
            .saturating_add(settings.jump_tolerance_millis.max(0));
        self.sources_ahead
            .retain(|ahead| ahead.event_time_millis > believable_until);
    }
}

/// The identity of an event's clock: its device, or for events without a device the system
/// that reported it (`source`), hashed so that progress state stays small whatever the ids.
pub fn source_key(device_id: &str, reporting_source: &str) -> u64 {
    if device_id.is_empty() {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(b"source:");
        hasher.update(reporting_source.as_bytes());
        return hasher.digest();
    }
    xxhash_rust::xxh3::xxh3_64(device_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const GUARD: ClockGuardSettings = ClockGuardSettings {
        jump_tolerance_millis: 10 * MINUTE,
        tolerated_fast_sources: 2,
    };

    #[test]
    fn events_within_the_tolerance_move_progress_as_the_largest_time() {
        let mut progress = CorroboratedProgress::starting_at(0);
        assert_eq!(
            progress.observe(1, 9 * MINUTE, GUARD),
            ProgressObservation::Believed
        );
        assert_eq!(
            progress.observe(2, 5 * MINUTE, GUARD),
            ProgressObservation::Believed
        );
        assert_eq!(progress.progress_millis(), 9 * MINUTE);
    }

    #[test]
    fn one_fast_clock_far_ahead_does_not_move_progress() {
        let mut progress = CorroboratedProgress::starting_at(0);
        assert_eq!(
            progress.observe(7, 55 * MINUTE, GUARD),
            ProgressObservation::HeldAhead {
                lead_millis: 55 * MINUTE
            }
        );
        assert_eq!(progress.progress_millis(), 0);
        // The same device again, even further: still one source.
        progress.observe(7, 56 * MINUTE, GUARD);
        progress.observe(1, MINUTE, GUARD);
        assert_eq!(progress.progress_millis(), MINUTE);
        assert_eq!(progress.sources_ahead(), 1);
    }

    #[test]
    fn as_many_fast_clocks_as_tolerated_cannot_move_progress() {
        let mut progress = CorroboratedProgress::starting_at(0);
        progress.observe(7, 55 * MINUTE, GUARD);
        progress.observe(8, 40 * MINUTE, GUARD);
        assert_eq!(progress.progress_millis(), 0);
        assert_eq!(progress.sources_ahead(), 2);
    }

    #[test]
    fn a_jump_is_believed_when_one_more_source_than_tolerated_reports_it() {
        let mut progress = CorroboratedProgress::starting_at(0);
        progress.observe(7, 90 * MINUTE, GUARD);
        progress.observe(8, 61 * MINUTE, GUARD);
        assert_eq!(
            progress.observe(9, 60 * MINUTE, GUARD),
            ProgressObservation::Corroborated
        );
        // The third largest of the three: no single fast clock chose it.
        assert_eq!(progress.progress_millis(), 60 * MINUTE);
        // 61 min is within the tolerance of 60 min; 90 min stays ahead.
        assert_eq!(progress.sources_ahead(), 1);
    }

    #[test]
    fn a_source_ahead_is_forgotten_once_progress_comes_within_the_tolerance() {
        let mut progress = CorroboratedProgress::starting_at(0);
        progress.observe(7, 25 * MINUTE, GUARD);
        for minute in 1..=15 {
            progress.observe(1, minute * MINUTE, GUARD);
        }
        assert_eq!(progress.sources_ahead(), 0);
        // Forgotten, not believed: progress is the honest clock's time.
        assert_eq!(progress.progress_millis(), 15 * MINUTE);
    }

    #[test]
    fn the_guard_turned_off_believes_every_event() {
        let mut progress = CorroboratedProgress::starting_at(0);
        assert_eq!(
            progress.observe(7, 1_000 * MINUTE, ClockGuardSettings::OFF),
            ProgressObservation::Believed
        );
        assert_eq!(progress.progress_millis(), 1_000 * MINUTE);
    }

    #[test]
    fn extreme_times_and_tolerances_do_not_overflow() {
        let mut progress = CorroboratedProgress::starting_at(i64::MIN);
        progress.observe(1, i64::MAX, GUARD);
        progress.observe(2, i64::MAX, GUARD);
        progress.observe(3, i64::MAX, GUARD);
        assert_eq!(progress.progress_millis(), i64::MAX);
        let negative = ClockGuardSettings {
            jump_tolerance_millis: -5,
            tolerated_fast_sources: u16::MAX,
        };
        progress.observe(4, i64::MIN, negative);
    }

    #[test]
    fn devices_and_reporting_systems_are_distinct_sources() {
        assert_ne!(
            source_key("41060200011340000001", ""),
            source_key("", "gateway")
        );
        assert_ne!(source_key("", "gateway"), source_key("", "96110"));
        assert_eq!(source_key("d1", "gateway"), source_key("d1", "96110"));
    }
}
