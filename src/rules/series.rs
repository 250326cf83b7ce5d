//! The shape every alerting series shares, whatever its kind: the alert lifecycle (firing,
//! then resolved, never overlapping the previous occurrence), event-time buckets of matching
//! events, and the recent events whose ids a future alert carries.
//!
//! Kinds differ in *when* they fire and resolve; they must not differ in *how*: an occurrence
//! starts no earlier than the previous one ended (so alert ids never repeat), and a rule
//! dropped by a reload resolves what it was firing. Both live here once, so a new kind gets
//! them right by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::{push_capped_event_id, AlertOccurrence, MAX_ALERT_EVENT_IDS};
use crate::event::AcceptedEvent;
use crate::proto::Alert;

/// The alert of one series (one rule and unit, or rule, unit and type): the firing occurrence,
/// if any, and when the previous one ended.
///
/// Serialized as its two fields in order, exactly as the series structs carried them before
/// this type existed, so snapshots keep their shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertLifecycle {
    /// The firing alert, if any.
    pub firing: Option<AlertOccurrence>,
    /// `ends_at` of the last resolved occurrence while the series is kept: the next one starts
    /// no earlier, so occurrences never overlap and alert ids never repeat.
    pub previous_ends_at_millis: Option<i64>,
}

impl AlertLifecycle {
    /// Whether an alert is firing.
    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// Start of a new occurrence whose condition became true at `condition_millis`: that
    /// time, or the previous occurrence's end if later (a late event inside the previous
    /// occurrence's span must not start one that overlaps it).
    pub fn next_start_millis(&self, condition_millis: i64) -> i64 {
        self.previous_ends_at_millis
            .map_or(condition_millis, |ends_at_millis| {
                ends_at_millis.max(condition_millis)
            })
    }

    /// Emits `occurrence` as FIRING and keeps it as the firing alert.
    pub fn fire(&mut self, occurrence: AlertOccurrence, out: &mut Vec<Alert>) {
        out.push(occurrence.firing_alert());
        self.firing = Some(occurrence);
    }

    /// Emits the firing alert, if any, as RESOLVED at `ends_at_millis` and remembers that
    /// end. Returns whether an alert resolved.
    pub fn resolve(&mut self, ends_at_millis: i64, out: &mut Vec<Alert>) -> bool {
        let Some(firing) = self.firing.take() else {
            return false;
        };
        out.push(firing.resolved_alert(ends_at_millis));
        self.previous_ends_at_millis = Some(ends_at_millis);
        true
    }

    /// [`AlertLifecycle::resolve`] at `ends_at_millis` or at the alert's last update if later:
    /// for kinds whose resolution time (a boundary, an event time) may precede the update
    /// that fired the alert, since an alert must not end before it was last updated.
    pub fn resolve_no_earlier_than_last_update(
        &mut self,
        ends_at_millis: i64,
        out: &mut Vec<Alert>,
    ) -> bool {
        let last_update_millis = self
            .firing
            .as_ref()
            .map_or(ends_at_millis, |firing| firing.updated_at_millis);
        self.resolve(ends_at_millis.max(last_update_millis), out)
    }
}

/// A matching event remembered for the `event_ids` of a future alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// Its event time, to keep the list in time order and prune it with the panes.
    pub occurred_at_millis: i64,
    /// Its id.
    pub event_id: String,
}

/// Start of the pane (or interval) of size `pane_size_millis` containing `millis`
/// (saturating at the far past instead of overflowing).
pub(crate) fn pane_start(millis: i64, pane_size_millis: i64) -> i64 {
    if pane_size_millis <= 0 {
        return millis;
    }
    millis.saturating_sub(millis.rem_euclid(pane_size_millis))
}

/// The pane boundary at or below `watermark_millis` when it is newer than the last one
/// evaluated (and records it), else `None`: rules that evaluate once per pane boundary call
/// this first, so frequent watermark advances within a pane cost nothing.
pub(crate) fn next_pane_boundary(
    last_evaluated_aligned_millis: &mut Option<i64>,
    watermark_millis: i64,
    pane_size_millis: i64,
) -> Option<i64> {
    let aligned_millis = pane_start(watermark_millis, pane_size_millis);
    if last_evaluated_aligned_millis.is_some_and(|last_evaluated| aligned_millis <= last_evaluated)
    {
        return None;
    }
    *last_evaluated_aligned_millis = Some(aligned_millis);
    Some(aligned_millis)
}

/// The state of `rule_name` in a map keyed by rule name, inserted empty when absent. Every
/// matching event looks its rule up: unlike `entry(name.clone())`, this allocates the name
/// only the first time. `None` only if the map refused the key, which a `BTreeMap` never does.
pub(crate) fn state_of_rule<'map, State: Default>(
    states_by_rule: &'map mut BTreeMap<String, State>,
    rule_name: &str,
) -> Option<&'map mut State> {
    if !states_by_rule.contains_key(rule_name) {
        states_by_rule.insert(rule_name.to_string(), State::default());
    }
    states_by_rule.get_mut(rule_name)
}

/// The lowest watermark at which [`next_pane_boundary`] returns a boundary, given the last one
/// evaluated: the start of the pane after the one holding `last_evaluated_aligned_millis`
/// (`i64::MIN`, any watermark, before the first).
pub(crate) fn first_watermark_past(
    last_evaluated_aligned_millis: Option<i64>,
    pane_size_millis: i64,
) -> i64 {
    last_evaluated_aligned_millis.map_or(i64::MIN, |last_evaluated| {
        pane_start(last_evaluated, pane_size_millis).saturating_add(pane_size_millis.max(1))
    })
}

/// Counts one matching event of a counting series in its time bucket (pane or interval),
/// remembers its id for a future alert, and adds the id to the firing alert, if any.
pub(crate) fn count_matching_event(
    bucket_counts: &mut BTreeMap<i64, u32>,
    bucket_start_millis: i64,
    recent_events: &mut Vec<RecentEvent>,
    firing: Option<&mut AlertOccurrence>,
    accepted_event: &AcceptedEvent<'_>,
) {
    let count = bucket_counts.entry(bucket_start_millis).or_insert(0);
    *count = count.saturating_add(1);
    remember_recent_event(
        recent_events,
        accepted_event.occurred_at_millis,
        &accepted_event.event.event_id,
    );
    if let Some(firing) = firing {
        push_capped_event_id(&mut firing.event_ids, &accepted_event.event.event_id);
    }
}

/// Inserts an event in time order (after equal times, so arrival order breaks ties) and drops
/// the oldest beyond the cap. Once the cap is reached (a busy series, every event), the id
/// that leaves lends its allocation to the one that comes: no allocation per matching event.
pub(crate) fn remember_recent_event(
    recent_events: &mut Vec<RecentEvent>,
    occurred_at_millis: i64,
    event_id: &str,
) {
    let position =
        recent_events.partition_point(|recent| recent.occurred_at_millis <= occurred_at_millis);
    if recent_events.len() < MAX_ALERT_EVENT_IDS {
        recent_events.insert(
            position,
            RecentEvent {
                occurred_at_millis,
                event_id: event_id.to_string(),
            },
        );
        return;
    }
    // Full: the event is older than every remembered one and would leave at once.
    if position > 0 {
        let mut leaving = recent_events.remove(0);
        leaving.occurred_at_millis = occurred_at_millis;
        leaving.event_id.clear();
        leaving.event_id.push_str(event_id);
        recent_events.insert(position - 1, leaving);
    }
    // A restored state may hold more than the cap.
    let excess = recent_events.len().saturating_sub(MAX_ALERT_EVENT_IDS);
    recent_events.drain(..excess);
}

/// Forgets the pane counts and recent events before `oldest_kept_millis`. Called for every
/// active series at every pane boundary, so it allocates only when a pane or event is that old
/// (recent events are in time order: the first is the oldest).
pub(crate) fn drop_expired_panes(
    pane_counts: &mut BTreeMap<i64, u32>,
    recent_events: &mut Vec<RecentEvent>,
    oldest_kept_millis: i64,
) {
    drop_expired_buckets(pane_counts, oldest_kept_millis);
    drop_expired_events(recent_events, oldest_kept_millis);
}

/// The pane (or bucket) half of [`drop_expired_panes`], for state that keeps its counts and
/// its recent events apart.
pub(crate) fn drop_expired_buckets(
    bucket_counts: &mut BTreeMap<i64, u32>,
    oldest_kept_millis: i64,
) {
    if bucket_counts
        .first_key_value()
        .is_some_and(|(bucket, _)| *bucket < oldest_kept_millis)
    {
        *bucket_counts = bucket_counts.split_off(&oldest_kept_millis);
    }
}

/// The recent-events half of [`drop_expired_panes`].
pub(crate) fn drop_expired_events(recent_events: &mut Vec<RecentEvent>, oldest_kept_millis: i64) {
    if recent_events
        .first()
        .is_some_and(|recent| recent.occurred_at_millis < oldest_kept_millis)
    {
        recent_events.retain(|recent| recent.occurred_at_millis >= oldest_kept_millis);
    }
}

/// Ids of the remembered events that happened before `until_millis`, oldest first: the
/// `event_ids` of an alert decided at that boundary.
pub(crate) fn event_ids_before(recent_events: &[RecentEvent], until_millis: i64) -> Vec<String> {
    recent_events
        .iter()
        .filter(|recent| recent.occurred_at_millis < until_millis)
        .map(|recent| recent.event_id.clone())
        .collect()
}

/// A series that carries an alert: what lets the shared helpers below resolve and list the
/// alerts of any kind's series maps.
pub(crate) trait AlertingSeries {
    /// The series' alert.
    fn alert(&self) -> &AlertLifecycle;
}

/// Series of every rule of a kind, by rule name then by the kind's series key: the shape of
/// every counting kind's state.
pub(crate) type SeriesByRule<Key, Series> = BTreeMap<String, BTreeMap<Key, Series>>;

/// Drops the series of `rule_name`, appending their firing alerts to `firing`.
pub(crate) fn remove_series_of_rule<Key, Series: AlertingSeries>(
    series_by_rule: &mut SeriesByRule<Key, Series>,
    rule_name: &str,
    firing: &mut Vec<AlertOccurrence>,
) {
    let Some(series_of_rule) = series_by_rule.remove(rule_name) else {
        return;
    };
    firing.extend(
        series_of_rule
            .values()
            .filter_map(|series| series.alert().firing.clone()),
    );
}

/// Appends the firing alert of every series.
pub(crate) fn collect_firing_series<'state, Key, Series: AlertingSeries>(
    series_by_rule: &'state SeriesByRule<Key, Series>,
    firing: &mut Vec<&'state AlertOccurrence>,
) {
    firing.extend(
        series_by_rule
            .values()
            .flat_map(|series_of_rule| series_of_rule.values())
            .filter_map(|series| series.alert().firing.as_ref()),
    );
}

/// A series key that names a place (and maybe a type) of the registry.
pub(crate) trait SeriesKeyBounds {
    /// Checks the key against the running registry.
    fn check_bounds(
        &self,
        part: &'static str,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds>;
}

impl SeriesKeyBounds for u32 {
    fn check_bounds(
        &self,
        part: &'static str,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        shape.check_unit(part, *self)
    }
}

impl SeriesKeyBounds for (u32, i32) {
    fn check_bounds(
        &self,
        part: &'static str,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        shape.check_unit(part, self.0)?;
        shape.check_event_type(part, self.1)
    }
}

/// Checks every key of every rule's series.
pub(crate) fn check_series_bounds<Key: SeriesKeyBounds, Series>(
    series_by_rule: &SeriesByRule<Key, Series>,
    part: &'static str,
    shape: &crate::grid::RegistryShape,
) -> Result<(), crate::grid::StateOutOfBounds> {
    series_by_rule
        .values()
        .flat_map(|series| series.keys())
        .try_for_each(|key| key.check_bounds(part, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence_updated_at(updated_at_millis: i64) -> AlertOccurrence {
        AlertOccurrence {
            alert_id: "id".to_string(),
            fingerprint: "fingerprint".to_string(),
            rule: "rule".to_string(),
            rule_kind: "threshold".to_string(),
            grid_id: String::new(),
            community_id: String::new(),
            district_id: String::new(),
            event_type: 0,
            severity: 2,
            starts_at_millis: 0,
            updated_at_millis,
            observed: 1.0,
            threshold: 1.0,
            expected: 0.0,
            p_value: 0.0,
            event_ids: Vec::new(),
            device_id: String::new(),
            scope: crate::rules::ruleset::AlertScope::Cell,
            window_millis: 0,
            baseline_weeks: 0,
            cluster_community_ids: Vec::new(),
        }
    }

    #[test]
    fn a_new_occurrence_starts_no_earlier_than_the_previous_one_ended() {
        let mut lifecycle = AlertLifecycle::default();
        assert_eq!(lifecycle.next_start_millis(1_000), 1_000);
        let mut out = Vec::new();
        lifecycle.fire(occurrence_updated_at(1_000), &mut out);
        assert!(lifecycle.is_firing());
        assert!(lifecycle.resolve(5_000, &mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(lifecycle.next_start_millis(3_000), 5_000, "late condition");
        assert_eq!(lifecycle.next_start_millis(9_000), 9_000);
    }

    #[test]
    fn resolving_never_ends_before_the_last_update_and_needs_a_firing_alert() {
        let mut lifecycle = AlertLifecycle::default();
        let mut out = Vec::new();
        assert!(!lifecycle.resolve(5_000, &mut out), "nothing firing");
        lifecycle.fire(occurrence_updated_at(7_000), &mut out);
        lifecycle.resolve_no_earlier_than_last_update(5_000, &mut out);
        assert_eq!(lifecycle.previous_ends_at_millis, Some(7_000));
    }

    #[test]
    fn the_lifecycle_serializes_like_the_two_fields_it_replaced() {
        #[derive(Serialize)]
        struct BeforeTheLifecycleType {
            count: u32,
            firing: Option<AlertOccurrence>,
            previous_ends_at_millis: Option<i64>,
        }
        #[derive(Serialize)]
        struct WithTheLifecycleType {
            count: u32,
            lifecycle: AlertLifecycle,
        }
        let before = BeforeTheLifecycleType {
            count: 3,
            firing: Some(occurrence_updated_at(7)),
            previous_ends_at_millis: Some(5),
        };
        let after = WithTheLifecycleType {
            count: 3,
            lifecycle: AlertLifecycle {
                firing: Some(occurrence_updated_at(7)),
                previous_ends_at_millis: Some(5),
            },
        };
        assert_eq!(
            postcard::to_allocvec(&before).ok(),
            postcard::to_allocvec(&after).ok()
        );
    }

    #[test]
    fn recent_events_stay_in_time_order_and_capped() {
        let mut recent_events = Vec::new();
        for number in 0..25_i64 {
            remember_recent_event(&mut recent_events, 100 - number, &format!("e{number}"));
        }
        assert_eq!(recent_events.len(), MAX_ALERT_EVENT_IDS);
        assert!(recent_events
            .windows(2)
            .all(|pair| pair[0].occurred_at_millis <= pair[1].occurred_at_millis));
        assert_eq!(
            event_ids_before(&recent_events, 85).len(),
            4,
            "times 81..=84"
        );
    }
}
