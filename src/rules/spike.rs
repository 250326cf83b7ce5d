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
//! - RESOLVED once the window's count has been back at or below `resolve_at_expected` × λ
//!   (default 1: the baseline) at every boundary for `resolve_hold` (default 1 h), `ends_at`
//!   = the boundary where the hold is complete; a significant or above-baseline window in
//!   between restarts the hold, so a wave that pauses is one occurrence
//!   (`a_wave_that_pauses_for_less_than_the_hold_time_stays_one_alert_occurrence`). Not at the
//!   first window that is merely no longer significant: a wave's events come in clumps, the
//!   sliding window holds more or fewer of them, and resolving there split one wave into
//!   several occurrences (issue 14; `a_wave_straddling_hour_boundaries_is_one_alert_occurrence`).
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
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, AlertOccurrence};
use super::baseline::{BaselineView, ExpectationCache};
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::series::{
    collect_firing_series, count_matching_event, drop_expired_panes, event_ids_before,
    first_watermark_past, next_pane_boundary, pane_start, remove_series_of_rule, state_of_rule,
    AlertLifecycle, AlertingSeries, RecentEvent, SeriesByRule,
};
use super::statistics::{
    benjamini_hochberg, critical_count, poisson_upper_tail, poisson_upper_tail_is_above,
};
use super::units::{evaluated_with_input, unit_count, unit_labels};
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by spike rules.
pub const RULE_KIND_SPIKE: &str = "spike";

/// Smallest expectation a spike test uses (events per window).
pub const MIN_SPIKE_EXPECTED: f64 = 0.01;

/// Default `min_count` of a spike rule.
pub const DEFAULT_SPIKE_MIN_COUNT: i64 = 3;
/// Default false discovery rate `fdr` (Benjamini–Hochberg q) of a spike rule.
pub const DEFAULT_SPIKE_FDR: f64 = 0.01;
/// Default `resolve_hold`: a wave that pauses for less than an hour (one default window) is
/// still the same wave.
pub const DEFAULT_SPIKE_RESOLVE_HOLD: Duration = Duration::from_secs(3600);
/// Longest `resolve_hold` accepted (a week: longer would keep alerts of one-off bursts open
/// past the learned baseline's horizon).
const MAX_SPIKE_RESOLVE_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// A `kind = "spike"` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeSpec {
    /// Unique rule name.
    name: String,
    /// Proto enum names of the matched types (one series per type).
    event_types: Vec<String>,
    /// Counting window, ending at the evaluated pane boundary.
    #[serde(with = "humantime_serde")]
    window: Duration,
    /// Per cell (default) or per community.
    #[serde(default)]
    scope: AlertScope,
    /// Smallest count that may alert.
    #[serde(default = "default_spike_min_count")]
    min_count: i64,
    /// Benjamini–Hochberg false discovery rate q.
    #[serde(default = "default_spike_fdr")]
    fdr: f64,
    /// Alert severity (default: the most severe default severity of the types).
    #[serde(default)]
    severity: Option<i64>,
    /// A firing alert resolves only when the window's count is back at or below this multiple
    /// of the expected count (default 1.0), not at the first window that is merely no longer
    /// significant.
    #[serde(default = "default_spike_resolve_at_expected")]
    resolve_at_expected: f64,
    /// How long the window's count must stay back near the baseline (at or below
    /// `resolve_at_expected` × expected) before a firing alert resolves (default 1 h).
    #[serde(default = "default_spike_resolve_hold", with = "humantime_serde")]
    resolve_hold: Duration,
    /// Alerts a day city-wide expected under the seeded baseline (documentation the budget
    /// test enforces; validated, otherwise unused by the engine).
    #[serde(default)]
    alert_budget_per_day: Option<f64>,
}

fn default_spike_resolve_hold() -> Duration {
    DEFAULT_SPIKE_RESOLVE_HOLD
}

fn default_spike_resolve_at_expected() -> f64 {
    1.0
}

fn default_spike_min_count() -> i64 {
    DEFAULT_SPIKE_MIN_COUNT
}

fn default_spike_fdr() -> f64 {
    DEFAULT_SPIKE_FDR
}

/// A rule that alerts when a window's count of one type is improbably high under the
/// Poisson baseline (Benjamini–Hochberg across the rule's series).
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types (one series per unit and type), sorted, without duplicates.
    pub event_types: Vec<EventType>,
    /// Counting window, a positive multiple of the pane size.
    pub window_millis: i64,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// Smallest count that may alert (at least 1).
    pub min_count: u32,
    /// Benjamini–Hochberg false discovery rate, in (0, 1).
    pub fdr: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
    /// Hysteresis: a firing alert resolves once the window count is at most this multiple of
    /// the expected count. A wave does not stay significant in every window (its events come
    /// in clumps, and each evaluation tests a sliding window), so resolving at the first
    /// non-significant window split one wave into several alert occurrences.
    pub resolve_at_expected: f64,
    /// Hysteresis in time: a firing alert resolves only once the window count has been at
    /// most `resolve_at_expected` × expected at every boundary for this long (a multiple of
    /// the pane size, 0 = at the first such boundary). A wave that pauses (a quiet lunch hour
    /// between two mornings of calls) stays one occurrence with updates.
    pub resolve_hold_millis: i64,
}

/// Mutable state of all spike rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeState {
    /// Series by rule name, then by (unit, `EventType as i32`), where the unit is a
    /// `CellIndex.0` or a `CommunityIndex.0` per the rule's scope. A series exists while it
    /// has panes in the window or is firing.
    pub series: SeriesByRule<(u32, i32), SpikeSeries>,
    /// Pane-aligned watermark of the last evaluation (once per pane boundary).
    pub last_evaluated_aligned_millis: Option<i64>,
    /// Hourly expectations already computed (a memo, not in the snapshot).
    #[serde(skip)]
    pub expectations: ExpectationCache,
}

/// One (rule, unit, type) series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeSeries {
    /// Matching events per pane start.
    pub pane_counts: BTreeMap<i64, u32>,
    /// The most recent matching events, for the alert's event ids.
    pub recent_events: Vec<RecentEvent>,
    /// The series' alert.
    pub alert: AlertLifecycle,
    /// While firing: the first boundary of the current run of boundaries at which the window
    /// count was back near the baseline (`None` while it is above); the alert resolves once
    /// the run lasts `resolve_hold`.
    pub near_baseline_since_millis: Option<i64>,
}

impl AlertingSeries for SpikeSeries {
    fn alert(&self) -> &AlertLifecycle {
        &self.alert
    }
}

impl RuleKind for SpikeRule {
    const NAME: &'static str = RULE_KIND_SPIKE;
    const LEARNS_BASELINE: bool = true;
    type Spec = SpikeSpec;
    type State = SpikeState;
    type Derived = ();

    fn spec_name(spec: &SpikeSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: SpikeSpec, validation: &mut RuleValidation<'_>) -> SpikeRule {
        validation.alert_budget(spec.alert_budget_per_day);
        let event_types = validation.event_types(&spec.event_types);
        let window_millis = validation.pane_multiple(spec.window, "window");
        let min_count = validation.count(spec.min_count, "min_count");
        let fdr = spec.fdr;
        if !(fdr.is_finite() && fdr > 0.0 && fdr < 1.0) {
            validation.problem(format!("fdr must be strictly between 0 and 1, got {fdr}"));
        }
        let severity = validation.severity(spec.severity, &event_types);
        let resolve_at_expected = spec.resolve_at_expected;
        if !(resolve_at_expected.is_finite() && (0.0..=100.0).contains(&resolve_at_expected)) {
            validation.problem(format!(
                "resolve_at_expected must be between 0 and 100 (a multiple of the expected count), got {resolve_at_expected}"
            ));
        }
        let resolve_hold_millis = if spec.resolve_hold > MAX_SPIKE_RESOLVE_HOLD {
            validation.problem(format!(
                "resolve_hold must be at most 7 days, got {}",
                humantime_serde::re::humantime::format_duration(spec.resolve_hold)
            ));
            0
        } else if spec.resolve_hold.is_zero() {
            0
        } else {
            validation.pane_multiple(spec.resolve_hold, "resolve_hold")
        };
        SpikeRule {
            name: spec.name,
            event_types,
            window_millis,
            unit: validation.counting_scope(spec.scope),
            min_count,
            fdr,
            severity,
            resolve_at_expected,
            resolve_hold_millis,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    fn whole_city_history_millis(&self) -> Option<i64> {
        (!evaluated_with_input(self.unit, true)).then_some(self.window_millis)
    }

    /// Counts the event in the series of its unit and type.
    fn on_matching_event(
        &self,
        state: &mut SpikeState,
        _derived: &mut (),
        event: &MatchingEvent<'_>,
        _out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let Some(unit_key) = event.unit_key(self.unit) else {
            return EventOutcome::default();
        };
        let accepted_event = event.accepted_event;
        let Some(series_by_key) = state_of_rule(&mut state.series, &self.name) else {
            return EventOutcome::default();
        };
        let series = series_by_key
            .entry((unit_key, accepted_event.event_type as i32))
            .or_default();
        let pane = pane_start(accepted_event.occurred_at_millis, event.pane_size_millis);
        count_matching_event(
            &mut series.pane_counts,
            pane,
            &mut series.recent_events,
            series.alert.firing.as_mut(),
            accepted_event,
        );
        EventOutcome::default()
    }

    const EVENTS_BRING_DUE_FORWARD: bool = false;

    /// The next pane boundary.
    fn next_due_millis(
        state: &SpikeState,
        _derived: &(),
        rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        first_watermark_past(
            state.last_evaluated_aligned_millis,
            rules.pane_size_millis(),
        )
    }

    /// Evaluates every spike series at a new watermark (once per pane boundary). Series of
    /// rules no longer in the rule set resolve at the boundary and are forgotten.
    fn on_watermark(
        state: &mut SpikeState,
        _derived: &mut (),
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        let Some(aligned_millis) = next_pane_boundary(
            &mut state.last_evaluated_aligned_millis,
            watermark.watermark_millis,
            watermark.rules.pane_size_millis(),
        ) else {
            return;
        };
        for (rule_name, series_by_key) in &mut state.series {
            let Some(rule) = watermark.rules.rule_of_kind::<SpikeRule>(rule_name) else {
                for series in series_by_key.values_mut() {
                    series
                        .alert
                        .resolve_no_earlier_than_last_update(aligned_millis, out);
                }
                series_by_key.clear();
                continue;
            };
            if !evaluated_with_input(rule.unit, watermark.partial_input) {
                continue;
            }
            evaluate_rule(
                rule,
                series_by_key,
                &watermark.baseline,
                &mut state.expectations,
                aligned_millis,
                out,
            );
        }
        state
            .series
            .retain(|_, series_by_key| !series_by_key.is_empty());
    }

    fn remove_rule(state: &mut SpikeState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        remove_series_of_rule(&mut state.series, rule_name, firing);
    }

    fn check_state_bounds(
        state: &Self::State,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        super::series::check_series_bounds(&state.series, "spike rules", shape)
    }

    fn collect_firing<'state>(
        state: &'state SpikeState,
        firing: &mut Vec<&'state AlertOccurrence>,
    ) {
        collect_firing_series(&state.series, firing);
    }
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
    expectations: &mut ExpectationCache,
    aligned_millis: i64,
    out: &mut Vec<Alert>,
) {
    let window_start = aligned_millis.saturating_sub(rule.window_millis);
    let mut tests: Vec<SeriesTest> = Vec::new();
    let mut expectations = baseline.checked_memo(expectations);
    for (key, series) in series_by_key.iter_mut() {
        drop_expired_panes(
            &mut series.pane_counts,
            &mut series.recent_events,
            window_start,
        );
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
            .expected_count(
                Some(&mut expectations),
                rule.unit,
                key.0,
                event_type,
                window_start,
                aligned_millis,
            )
            .max(MIN_SPIKE_EXPECTED);
        // A test certainly above the rule's FDR level is rejected at no cutoff the
        // Benjamini–Hochberg step-up can reach (at most `fdr`) and changes no other test's
        // decision whatever its exact p-value above the level: 1 stands for it, and its
        // p-value is shown nowhere (only rejected tests raise alerts).
        let p_value = if poisson_upper_tail_is_above(expected, count, rule.fdr) {
            1.0
        } else {
            poisson_upper_tail(expected, count)
        };
        tests.push(SeriesTest {
            key: *key,
            count,
            expected,
            p_value,
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
        match (&mut series.alert.firing, significant.get(key)) {
            (Some(firing), Some(test)) => {
                firing.observed = firing.observed.max(test.count as f64);
                series.near_baseline_since_millis = None;
            }
            (Some(_), None) => {
                let still_above_baseline = tests.iter().any(|test| {
                    test.key == *key && test.count as f64 > test.expected * rule.resolve_at_expected
                });
                if still_above_baseline {
                    series.near_baseline_since_millis = None;
                } else {
                    let since = *series
                        .near_baseline_since_millis
                        .get_or_insert(aligned_millis);
                    if aligned_millis.saturating_sub(since) >= rule.resolve_hold_millis {
                        series
                            .alert
                            .resolve_no_earlier_than_last_update(aligned_millis, out);
                        series.near_baseline_since_millis = None;
                    }
                }
            }
            (None, Some(test)) => {
                if let Some(occurrence) = new_occurrence(
                    rule,
                    baseline,
                    series,
                    test,
                    decision.cutoff,
                    aligned_millis,
                ) {
                    series.alert.fire(occurrence, out);
                }
            }
            (None, None) => {}
        }
        series.alert.is_firing() || !series.pane_counts.is_empty()
    });
}

fn new_occurrence(
    rule: &SpikeRule,
    baseline: &BaselineView<'_>,
    series: &SpikeSeries,
    test: &SeriesTest,
    cutoff: f64,
    aligned_millis: i64,
) -> Option<AlertOccurrence> {
    let labels = unit_labels(baseline.registry, rule.unit, test.key.0)?;
    let event_type = EventType::try_from(test.key.1).ok()?;
    let window_start = aligned_millis.saturating_sub(rule.window_millis);
    let starts_at_millis = series.alert.next_start_millis(aligned_millis);
    let alert_fingerprint = fingerprint(&rule.name, labels.location(), event_type.as_str_name());
    let critical = critical_count(test.expected, cutoff)
        .unwrap_or(test.count)
        .max(u64::from(rule.min_count));
    Some(AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, starts_at_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: SpikeRule::NAME.to_string(),
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
        event_ids: event_ids_before(&series.recent_events, aligned_millis),
        device_id: String::new(),
        scope: rule.unit,
        window_millis: rule.window_millis,
        baseline_weeks: baseline.learned_weeks(rule.unit, event_type, window_start, aligned_millis),
        cluster_community_ids: Vec::new(),
    })
}
