//! Threshold rules: per (rule, cell) — or (rule, community) for `scope = "community"` — pane
//! counts of matching events; fire when a sliding window's count reaches `min_count`, resolve
//! when the watermark slides it below.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, push_capped_event_id, AlertOccurrence};
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::series::{
    collect_firing_series, first_watermark_past, next_pane_boundary, pane_start,
    remember_recent_event, remove_series_of_rule, state_of_rule, AlertLifecycle, AlertingSeries,
    RecentEvent, SeriesByRule,
};
use super::units::CellLabels;
use crate::event::AcceptedEvent;
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by threshold rules.
pub const RULE_KIND_THRESHOLD: &str = "threshold";

/// A `kind = "threshold"` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Unique rule name.
    name: String,
    /// Proto enum names of the matched types.
    event_types: Vec<String>,
    /// Sliding window length.
    #[serde(with = "humantime_serde")]
    window: Duration,
    /// Signed so that a negative value is a validation problem, not a parse error.
    min_count: i64,
    /// Signed and wide so that any out-of-range value is a validation problem.
    #[serde(default)]
    severity: Option<i64>,
    /// Per cell (default) or per community.
    #[serde(default)]
    scope: AlertScope,
    /// Alerts a day city-wide expected under the seeded baseline (documentation the budget
    /// test enforces; validated, otherwise unused by the engine).
    #[serde(default)]
    alert_budget_per_day: Option<f64>,
}

/// A rule that alerts when at least `min_count` matching events of one cell (or community)
/// fall within a sliding window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types, sorted by enum number, without duplicates.
    pub event_types: Vec<EventType>,
    /// Sliding window length, a positive multiple of the pane size.
    pub window_millis: i64,
    /// Events in the window needed to fire (at least 1).
    pub min_count: u32,
    /// Severity of the alerts (1..=4): as configured, else the most severe default severity
    /// of the matched types.
    pub severity: u8,
    /// The alert scope used in fingerprints: the sorted type names joined by `+`.
    pub scope: String,
    /// Whether events are counted per cell or per community.
    pub unit: AlertScope,
}

/// Mutable state of all threshold rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Series by rule name, then by unit: `CellIndex.0` (cell scope) or `CommunityIndex.0`
    /// (community scope). A series exists while it has panes in the window or is firing.
    pub series: SeriesByRule<u32, ThresholdSeries>,
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
    /// [`super::MAX_ALERT_EVENT_IDS`], oldest first): the event ids of an alert when it fires.
    pub recent_events: Vec<RecentEvent>,
    /// The series' alert.
    pub alert: AlertLifecycle,
}

impl AlertingSeries for ThresholdSeries {
    fn alert(&self) -> &AlertLifecycle {
        &self.alert
    }
}

impl RuleKind for ThresholdRule {
    const NAME: &'static str = RULE_KIND_THRESHOLD;
    type Spec = ThresholdSpec;
    type State = ThresholdState;
    type Derived = ();

    fn spec_name(spec: &ThresholdSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: ThresholdSpec, validation: &mut RuleValidation<'_>) -> ThresholdRule {
        validation.alert_budget(spec.alert_budget_per_day);
        let event_types = validation.event_types(&spec.event_types);
        let window_millis = validation.pane_multiple(spec.window, "window");
        let min_count = validation.count(spec.min_count, "min_count");
        let severity = validation.severity(spec.severity, &event_types);
        let mut type_names: Vec<&str> = event_types
            .iter()
            .map(|event_type| event_type.as_str_name())
            .collect();
        type_names.sort_unstable();
        ThresholdRule {
            name: spec.name,
            scope: type_names.join("+"),
            event_types,
            window_millis,
            min_count,
            severity,
            unit: validation.counting_scope(spec.scope),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    fn whole_city_history_millis(&self) -> Option<i64> {
        (!super::units::evaluated_with_input(self.unit, true)).then_some(self.window_millis)
    }

    fn on_matching_event(
        &self,
        state: &mut ThresholdState,
        _derived: &mut (),
        event: &MatchingEvent<'_>,
        out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let Some(unit_key) = event.unit_key(self.unit) else {
            return EventOutcome::default();
        };
        let Some(unit_labels) = event.unit_labels(self.unit, unit_key) else {
            return EventOutcome::default();
        };
        let fired = on_matching_event(
            state,
            self,
            event.pane_size_millis,
            event.accepted_event,
            unit_key,
            &unit_labels,
            out,
        );
        EventOutcome {
            fired,
            ..EventOutcome::default()
        }
    }

    const EVENTS_BRING_DUE_FORWARD: bool = false;

    /// The next pane boundary.
    fn next_due_millis(
        state: &ThresholdState,
        _derived: &(),
        rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        first_watermark_past(
            state.last_evaluated_aligned_millis,
            rules.pane_size_millis(),
        )
    }

    fn on_watermark(
        state: &mut ThresholdState,
        _derived: &mut (),
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        on_watermark(state, watermark.rules, watermark.watermark_millis, out);
    }

    fn remove_rule(state: &mut ThresholdState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        remove_series_of_rule(&mut state.series, rule_name, firing);
    }

    fn check_state_bounds(
        state: &Self::State,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        super::series::check_series_bounds(&state.series, "threshold rules", shape)
    }

    fn collect_firing<'state>(
        state: &'state ThresholdState,
        firing: &mut Vec<&'state AlertOccurrence>,
    ) {
        collect_firing_series(&state.series, firing);
    }
}

/// Counts one event matched by `rule` in the series of `unit_key` (cell or community index,
/// per the rule's scope; `labels` are the unit's); appends a FIRING alert when it completes
/// the condition and the series was not firing. Returns whether it fired.
fn on_matching_event(
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
    let Some(series_by_unit) = state_of_rule(&mut state.series, &rule.name) else {
        return false;
    };
    let series = series_by_unit.entry(unit_key).or_default();
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
    if let Some(firing) = &mut series.alert.firing {
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
    let starts_at_millis = series.alert.next_start_millis(occurred_at_millis);
    let alert_fingerprint = fingerprint(&rule.name, labels.location(), &rule.scope);
    let occurrence = AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, starts_at_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: ThresholdRule::NAME.to_string(),
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
        scope: rule.unit,
        window_millis: rule.window_millis,
        baseline_weeks: 0,
        cluster_community_ids: Vec::new(),
    };
    series.alert.fire(occurrence, out);
    true
}

/// Evaluates every series at a new watermark: once per pane boundary, prunes panes older than
/// `aligned − window`, resolves firing series whose remaining count is below `min_count`
/// (`ends_at = aligned`) and forgets empty series. Series of rules no longer in `rules` are
/// resolved at `aligned` and forgotten. RESOLVED alerts are appended in unspecified order.
fn on_watermark(
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
        let Some(rule) = rules.rule_of_kind::<ThresholdRule>(rule_name) else {
            for series in series_by_cell.values_mut() {
                series.alert.resolve(aligned_millis, resolved);
            }
            series_by_cell.clear();
            continue;
        };
        let oldest_kept_pane_start = aligned_millis.saturating_sub(rule.window_millis);
        series_by_cell.retain(|_, series| {
            // Every active series is visited at every pane boundary: only touch the maps when
            // something left the window (most boundaries, nothing did), and only sum the
            // window when an alert could resolve.
            drop_expired(series, oldest_kept_pane_start);
            if series.alert.is_firing() {
                let remaining_count: u64 = series
                    .pane_counts
                    .values()
                    .map(|count| u64::from(*count))
                    .sum();
                if remaining_count < u64::from(rule.min_count) {
                    series.alert.resolve(aligned_millis, resolved);
                }
            }
            // A resolved series is kept for one window after its end: a late event in that
            // window must start its next occurrence no earlier than that end
            // (`next_start_millis`), which a forgotten series no longer knows.
            let ended_within_the_window = series
                .alert
                .previous_ends_at_millis
                .is_some_and(|ends_at_millis| ends_at_millis > oldest_kept_pane_start);
            series.alert.is_firing() || !series.pane_counts.is_empty() || ended_within_the_window
        });
    }
    state
        .series
        .retain(|_, series_by_cell| !series_by_cell.is_empty());
}

/// Forgets the panes and recent events before `oldest_kept_millis`, without reallocating when
/// none is that old (recent events are in time order, so the first is the oldest).
fn drop_expired(series: &mut ThresholdSeries, oldest_kept_millis: i64) {
    super::series::drop_expired_panes(
        &mut series.pane_counts,
        &mut series.recent_events,
        oldest_kept_millis,
    );
}
