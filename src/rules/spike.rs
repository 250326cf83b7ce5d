//! Spike rules: a window's count of one event type in one cell (or community) that is
//! improbable under the Poisson baseline.
//!
//! # Decision
//!
//! Per (rule, unit, type) the engine keeps pane counts of matching events (a unit is a cell,
//! or a community with `scope = "community"`, whose cells are summed). Whenever the watermark
//! crosses a pane boundary `b` (evaluated once per boundary, at the newest one when the
//! watermark jumps several), every series of the rule is tested over the closed panes of
//! `[b − window, b)`:
//!
//! - `expected` λ = the baseline expectation over that span ([`super::baseline`]), floored at
//!   [`MIN_SPIKE_EXPECTED`] so that a unit without any history or capable device cannot turn
//!   a single event into p = 0;
//! - `p` = P(X ≥ observed | Poisson(λ)) (1 for a count of 0).
//!
//! **Multiple testing.** One rule tests many series at once (thousands of cells × types), so
//! a per-test α would page someone every few minutes somewhere in the city. The tests of one
//! rule at one boundary are one family, controlled with Benjamini–Hochberg at false discovery
//! rate `fdr` (q, default 0.01): with the p-values sorted, R = max{ i : p₍ᵢ₎ ≤ i·q/m } and the
//! R smallest are significant. m is the number of series *in the rule's scope* — registry
//! cells (or communities) × the rule's types — not just the series with events: the series
//! with no events are tests too (p = 1), and leaving them out would make the procedure
//! anti-conservative exactly when few units are active. Each boundary is its own family
//! (the windows of consecutive boundaries overlap, so the families are dependent; BH stays
//! valid under the positive dependence of overlapping counts).
//!
//! A series fires when it is significant **and** its count is ≥ `min_count` (default 3): the
//! minimum keeps units with a tiny expectation from alerting on one or two events.
//!
//! # Lifecycle
//!
//! - FIRING at the boundary `b` (`starts_at` = `b`, or the previous occurrence's end if
//!   later): `observed` = the count, `threshold` = the critical count (the smallest count
//!   whose tail probability is at or below the BH cutoff, at least `min_count`), `expected` =
//!   λ, `p_value` = p, `event_type` = the series' type, `event_ids` = the window's events
//!   (≤ 20, most recent). While firing nothing more is emitted; `observed` keeps the largest
//!   count.
//! - RESOLVED at the first later boundary where the condition no longer holds (not
//!   significant, or count < `min_count`), `ends_at` = that boundary.
//! - Fingerprint: (rule, grid id — or community id for community scope —, type name).
//!
//! # Measured behaviour (asserted in `src/rules/tests_stats.rs`)
//!
//! On the simulator over the 10 most populous communities (about 120 cells), seeded:
//! - a fraud wave (`fraud_wave`, ×30 fraud-chain rates for 8 h from 09:00 in the largest
//!   community, whose usual rate is about one FRAUD_WARNING every two days) is detected by the
//!   default community-scope `fraud_wave_spike` (1 h window) within 2 h of its start
//!   (measured: 60 min), with no fraud alert in the other communities;
//! - a normal week (default rates, no scenario) raises at most 1 false alert over all series
//!   of the default spike rules (`fraud_wave_spike`, `door_forced_spike`; measured: 0).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, AlertOccurrence, RULE_KIND_SPIKE};
use super::baseline::BaselineView;
use super::ruleset::{Rule, RuleSet, SpikeRule};
use super::statistics::{benjamini_hochberg, critical_count, poisson_upper_tail};
use super::threshold::{count_matching_event, next_pane_boundary, pane_start, RecentEvent};
use super::{unit_count, unit_labels};
use crate::event::AcceptedEvent;
use crate::grid::GridRegistry;
use crate::proto::{Alert, EventType};

/// Smallest expectation a spike test uses (events per window).
pub const MIN_SPIKE_EXPECTED: f64 = 0.01;

/// Mutable state of all spike rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeState {
    /// Series by rule name, then by (unit, `EventType as i32`), where the unit is a
    /// `CellIndex.0` or a `CommunityIndex.0` per the rule's scope. A series exists while it
    /// has panes in the window or is firing.
    pub series: BTreeMap<String, BTreeMap<(u32, i32), SpikeSeries>>,
    /// Pane-aligned watermark of the last evaluation (once per pane boundary).
    pub last_evaluated_aligned_millis: Option<i64>,
}

/// One (rule, unit, type) series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeSeries {
    /// Matching events per pane start.
    pub pane_counts: BTreeMap<i64, u32>,
    /// The most recent matching events, for the alert's event ids.
    pub recent_events: Vec<RecentEvent>,
    /// The firing alert, if any.
    pub firing: Option<AlertOccurrence>,
    /// `ends_at` of the last resolved occurrence: the next starts no earlier.
    pub previous_ends_at_millis: Option<i64>,
}

/// Counts one event matched by `rule` in the series of `unit_key`.
pub(crate) fn on_matching_event(
    state: &mut SpikeState,
    rule: &SpikeRule,
    pane_size_millis: i64,
    accepted_event: &AcceptedEvent<'_>,
    unit_key: u32,
) {
    let series = state
        .series
        .entry(rule.name.clone())
        .or_default()
        .entry((unit_key, accepted_event.event_type as i32))
        .or_default();
    let pane = pane_start(accepted_event.occurred_at_millis, pane_size_millis);
    count_matching_event(
        &mut series.pane_counts,
        pane,
        &mut series.recent_events,
        series.firing.as_mut(),
        accepted_event,
    );
}

/// Evaluates every spike series at a new watermark (once per pane boundary); appends FIRING
/// and RESOLVED alerts in unspecified order. Series of rules no longer in `rules` resolve at
/// the boundary and are forgotten.
pub(crate) fn on_watermark(
    state: &mut SpikeState,
    rules: &RuleSet,
    baseline: &BaselineView<'_>,
    watermark_millis: i64,
    out: &mut Vec<Alert>,
) {
    let Some(aligned_millis) = next_pane_boundary(
        &mut state.last_evaluated_aligned_millis,
        watermark_millis,
        rules.pane_size_millis(),
    ) else {
        return;
    };
    for (rule_name, series_by_key) in &mut state.series {
        let Some(Rule::Spike(rule)) = rules.rule(rule_name) else {
            for series in series_by_key.values() {
                if let Some(firing) = &series.firing {
                    out.push(firing.resolved_alert(aligned_millis.max(firing.updated_at_millis)));
                }
            }
            series_by_key.clear();
            continue;
        };
        evaluate_rule(rule, series_by_key, baseline, aligned_millis, out);
    }
    state
        .series
        .retain(|_, series_by_key| !series_by_key.is_empty());
}

/// One test of one series at one boundary.
struct SeriesTest {
    /// The series key.
    key: (u32, i32),
    /// Events in the window.
    count: u64,
    /// λ (floored).
    expected: f64,
    /// P(X ≥ count).
    p_value: f64,
}

fn evaluate_rule(
    rule: &SpikeRule,
    series_by_key: &mut BTreeMap<(u32, i32), SpikeSeries>,
    baseline: &BaselineView<'_>,
    aligned_millis: i64,
    out: &mut Vec<Alert>,
) {
    let window_start = aligned_millis.saturating_sub(rule.window_millis);
    let mut tests: Vec<SeriesTest> = Vec::new();
    for (key, series) in series_by_key.iter_mut() {
        series.pane_counts = series.pane_counts.split_off(&window_start);
        series
            .recent_events
            .retain(|recent| recent.occurred_at_millis >= window_start);
        let count: u64 = series
            .pane_counts
            .range(..aligned_millis)
            .map(|(_, count)| u64::from(*count))
            .sum();
        if count == 0 {
            continue;
        }
        let Some(event_type) = EventType::try_from(key.1).ok() else {
            continue;
        };
        let expected = baseline
            .expected_count(rule.unit, key.0, event_type, window_start, aligned_millis)
            .max(MIN_SPIKE_EXPECTED);
        tests.push(SeriesTest {
            key: *key,
            count,
            expected,
            p_value: poisson_upper_tail(expected, count),
        });
    }
    let total_tests = unit_count(baseline.registry, rule.unit) * rule.event_types.len();
    let p_values: Vec<f64> = tests.iter().map(|test| test.p_value).collect();
    let decision = benjamini_hochberg(&p_values, total_tests, rule.fdr);
    let mut significant: BTreeMap<(u32, i32), &SeriesTest> = BTreeMap::new();
    for test in &tests {
        if decision.rejects(test.p_value) && test.count >= u64::from(rule.min_count) {
            significant.insert(test.key, test);
        }
    }
    series_by_key.retain(|key, series| {
        match (&mut series.firing, significant.get(key)) {
            (Some(firing), Some(test)) => {
                firing.observed = firing.observed.max(test.count as f64);
            }
            (Some(firing), None) => {
                let ends_at_millis = aligned_millis.max(firing.updated_at_millis);
                out.push(firing.resolved_alert(ends_at_millis));
                series.previous_ends_at_millis = Some(ends_at_millis);
                series.firing = None;
            }
            (None, Some(test)) => {
                if let Some(occurrence) = new_occurrence(
                    rule,
                    baseline.registry,
                    series,
                    test,
                    decision.cutoff,
                    aligned_millis,
                ) {
                    out.push(occurrence.firing_alert());
                    series.firing = Some(occurrence);
                }
            }
            (None, None) => {}
        }
        series.firing.is_some() || !series.pane_counts.is_empty()
    });
}

fn new_occurrence(
    rule: &SpikeRule,
    registry: &GridRegistry,
    series: &SpikeSeries,
    test: &SeriesTest,
    cutoff: f64,
    aligned_millis: i64,
) -> Option<AlertOccurrence> {
    let labels = unit_labels(registry, rule.unit, test.key.0)?;
    let event_type = EventType::try_from(test.key.1).ok()?;
    let starts_at_millis = series
        .previous_ends_at_millis
        .map_or(aligned_millis, |ends_at_millis| {
            ends_at_millis.max(aligned_millis)
        });
    let alert_fingerprint = fingerprint(&rule.name, labels.location(), event_type.as_str_name());
    let critical = critical_count(test.expected, cutoff)
        .unwrap_or(test.count)
        .max(u64::from(rule.min_count));
    Some(AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, starts_at_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: RULE_KIND_SPIKE.to_string(),
        grid_id: labels.grid_id.to_string(),
        community_id: labels.community_id.to_string(),
        district_id: labels.district_id.to_string(),
        event_type: test.key.1,
        severity: u32::from(rule.severity),
        starts_at_millis,
        updated_at_millis: starts_at_millis,
        observed: test.count as f64,
        threshold: critical as f64,
        expected: test.expected,
        p_value: test.p_value,
        event_ids: series
            .recent_events
            .iter()
            .filter(|recent| recent.occurred_at_millis < aligned_millis)
            .map(|recent| recent.event_id.clone())
            .collect(),
        device_id: String::new(),
    })
}
