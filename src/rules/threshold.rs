//! Threshold rules: per (rule, cell) — or (rule, community) for `scope = "community"` — pane
//! counts of matching events; fire when a sliding window's count reaches `min_count`, resolve
//! when the watermark slides it below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::{
    alert_id, fingerprint, push_capped_event_id, AlertOccurrence, MAX_ALERT_EVENT_IDS,
    RULE_KIND_THRESHOLD,
};
use super::ruleset::{Rule, RuleSet, ThresholdRule};
use super::CellLabels;
use crate::event::AcceptedEvent;
use crate::proto::Alert;

/// Mutable state of all threshold rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Series by rule name, then by unit: `CellIndex.0` (cell scope) or `CommunityIndex.0`
    /// (community scope). A series exists while it has panes in the window or is firing.
    pub series: BTreeMap<String, BTreeMap<u32, ThresholdSeries>>,
    /// Pane-aligned watermark of the last evaluation: resolution only depends on it, so
    /// evaluation runs once per pane boundary (kept in the snapshot so that a restored engine
    /// evaluates exactly when the original would have).
    pub last_evaluated_aligned_millis: Option<i64>,
}

/// One (rule, cell) series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSeries {
    /// Matching events per pane start (epoch millis, aligned to the pane size).
    pub pane_counts: BTreeMap<i64, u32>,
    /// The most recent matching events by event time (at most
    /// [`MAX_ALERT_EVENT_IDS`], oldest first): the event ids of an alert when it fires.
    pub recent_events: Vec<RecentEvent>,
    /// The firing alert, if any.
    pub firing: Option<AlertOccurrence>,
    /// `ends_at` of the last resolved occurrence while the series is kept: the next one starts
    /// no earlier, so occurrences never overlap and alert ids never repeat.
    pub previous_ends_at_millis: Option<i64>,
}

/// A matching event remembered for the `event_ids` of a future alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// Its event time, to keep the list in time order and prune it with the panes.
    pub occurred_at_millis: i64,
    /// Its id.
    pub event_id: String,
}

/// Start of the pane containing `millis` (saturating at the far past instead of overflowing).
pub(crate) fn pane_start(millis: i64, pane_size_millis: i64) -> i64 {
    if pane_size_millis <= 0 {
        return millis;
    }
    millis.saturating_sub(millis.rem_euclid(pane_size_millis))
}

/// The pane boundary at or below `watermark_millis` when it is newer than the last one
/// evaluated (and records it), else `None`: rules that evaluate once per pane boundary call
/// this first.
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

/// Counts one event matched by `rule` in the series of `unit_key` (cell or community index,
/// per the rule's scope; `labels` are the unit's); appends a FIRING alert when it completes
/// the condition and the series was not firing. Returns whether it fired.
pub(crate) fn on_matching_event(
    state: &mut ThresholdState,
    rule: &ThresholdRule,
    pane_size_millis: i64,
    accepted_event: &AcceptedEvent<'_>,
    unit_key: u32,
    labels: &CellLabels<'_>,
    out: &mut Vec<Alert>,
) -> bool {
    let occurred_at_millis = accepted_event.occurred_at_millis;
    let event_id = accepted_event.event.event_id.as_str();
    let event_pane_start = pane_start(occurred_at_millis, pane_size_millis);
    let series = state
        .series
        .entry(rule.name.clone())
        .or_default()
        .entry(unit_key)
        .or_default();
    let pane_count = series.pane_counts.entry(event_pane_start).or_insert(0);
    *pane_count = pane_count.saturating_add(1);
    remember_recent_event(&mut series.recent_events, occurred_at_millis, event_id);

    // `min` only matters where saturation at the far past would invert the range.
    let lowest_counted_pane_start = event_pane_start
        .saturating_sub(rule.window_millis)
        .saturating_add(pane_size_millis)
        .min(event_pane_start);
    let window_count: u64 = series
        .pane_counts
        .range(lowest_counted_pane_start..=event_pane_start)
        .map(|(_, count)| u64::from(*count))
        .sum();
    if let Some(firing) = &mut series.firing {
        firing.observed = firing.observed.max(window_count as f64);
        push_capped_event_id(&mut firing.event_ids, event_id);
        return false;
    }
    if window_count < u64::from(rule.min_count) {
        return false;
    }
    let counted_until_millis = event_pane_start.saturating_add(pane_size_millis);
    let event_ids: Vec<String> = series
        .recent_events
        .iter()
        .filter(|recent| {
            recent.occurred_at_millis >= lowest_counted_pane_start
                && recent.occurred_at_millis < counted_until_millis
        })
        .map(|recent| recent.event_id.clone())
        .collect();
    let starts_at_millis = series
        .previous_ends_at_millis
        .map_or(occurred_at_millis, |ends_at_millis| {
            ends_at_millis.max(occurred_at_millis)
        });
    let alert_fingerprint = fingerprint(&rule.name, labels.location(), &rule.scope);
    let occurrence = AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, starts_at_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: RULE_KIND_THRESHOLD.to_string(),
        grid_id: labels.grid_id.to_string(),
        community_id: labels.community_id.to_string(),
        district_id: labels.district_id.to_string(),
        event_type: accepted_event.event_type as i32,
        severity: u32::from(rule.severity),
        starts_at_millis,
        updated_at_millis: starts_at_millis,
        observed: window_count as f64,
        threshold: f64::from(rule.min_count),
        expected: 0.0,
        p_value: 0.0,
        event_ids,
        device_id: String::new(),
    };
    out.push(occurrence.firing_alert());
    series.firing = Some(occurrence);
    true
}

/// Counts one matching event of a statistical series in its time bucket (pane or interval),
/// remembers its id for a future alert, and adds the id to the firing alert, if any.
pub(crate) fn count_matching_event(
    bucket_counts: &mut BTreeMap<i64, u32>,
    bucket_start_millis: i64,
    recent_events: &mut Vec<RecentEvent>,
    firing: Option<&mut super::alert::AlertOccurrence>,
    accepted_event: &crate::event::AcceptedEvent<'_>,
) {
    let count = bucket_counts.entry(bucket_start_millis).or_insert(0);
    *count = count.saturating_add(1);
    remember_recent_event(
        recent_events,
        accepted_event.occurred_at_millis,
        &accepted_event.event.event_id,
    );
    if let Some(firing) = firing {
        super::alert::push_capped_event_id(&mut firing.event_ids, &accepted_event.event.event_id);
    }
}

/// Inserts an event in time order (after equal times, so arrival order breaks ties) and drops
/// the oldest beyond the cap.
pub(crate) fn remember_recent_event(
    recent_events: &mut Vec<RecentEvent>,
    occurred_at_millis: i64,
    event_id: &str,
) {
    let position =
        recent_events.partition_point(|recent| recent.occurred_at_millis <= occurred_at_millis);
    recent_events.insert(
        position,
        RecentEvent {
            occurred_at_millis,
            event_id: event_id.to_string(),
        },
    );
    if recent_events.len() > MAX_ALERT_EVENT_IDS {
        let excess = recent_events.len() - MAX_ALERT_EVENT_IDS;
        recent_events.drain(..excess);
    }
}

/// Evaluates every series at a new watermark: once per pane boundary, prunes panes older than
/// `aligned − window`, resolves firing series whose remaining count is below `min_count`
/// (`ends_at = aligned`) and forgets empty series. Series of rules no longer in `rules` are
/// resolved at `aligned` and forgotten. RESOLVED alerts are appended in unspecified order.
pub(crate) fn on_watermark(
    state: &mut ThresholdState,
    rules: &RuleSet,
    watermark_millis: i64,
    resolved: &mut Vec<Alert>,
) {
    let Some(aligned_millis) = next_pane_boundary(
        &mut state.last_evaluated_aligned_millis,
        watermark_millis,
        rules.pane_size_millis(),
    ) else {
        return;
    };
    for (rule_name, series_by_cell) in &mut state.series {
        let Some(Rule::Threshold(rule)) = rules.rule(rule_name) else {
            for series in series_by_cell.values() {
                if let Some(firing) = &series.firing {
                    resolved.push(firing.resolved_alert(aligned_millis));
                }
            }
            series_by_cell.clear();
            continue;
        };
        let oldest_kept_pane_start = aligned_millis.saturating_sub(rule.window_millis);
        series_by_cell.retain(|_, series| {
            series.pane_counts = series.pane_counts.split_off(&oldest_kept_pane_start);
            series
                .recent_events
                .retain(|recent| recent.occurred_at_millis >= oldest_kept_pane_start);
            let remaining_count: u64 = series
                .pane_counts
                .values()
                .map(|count| u64::from(*count))
                .sum();
            if let Some(firing) = &series.firing {
                if remaining_count < u64::from(rule.min_count) {
                    resolved.push(firing.resolved_alert(aligned_millis));
                    series.firing = None;
                    series.previous_ends_at_millis = Some(aligned_millis);
                }
            }
            series.firing.is_some() || !series.pane_counts.is_empty()
        });
    }
    state
        .series
        .retain(|_, series_by_cell| !series_by_cell.is_empty());
}
