//! Data-gap rules: operations alerts for a cell (or community) whose devices go silent. A
//! silent cell is a blind spot, never "zero incidents", so it must be visible.
//!
//! # Conditions (either fires; one alert per rule and unit)
//!
//! - **Offline devices**: on a `DEVICE_OFFLINE` event, the distinct devices of the unit that
//!   reported offline within `[t − window, t]` (default window 10 min) are counted; at least
//!   `min_offline_devices` (default 3) fires at once, at the event's time. `observed` = the
//!   distinct devices, `threshold` = `min_offline_devices`, `event_type` = DEVICE_OFFLINE.
//! - **Silence**: at the first pane boundary `b` of every 5 minutes of event time, a unit whose last *activity* (any accepted event
//!   except DEVICE_OFFLINE and VIDEO_LOSS, which report the problem rather than activity) is
//!   at least `silence` (default 2 h) before `b` is tested: E = the seeded expectation of all
//!   event types over `[last activity, b)` (the unit's cells summed; [`super::baseline`],
//!   truncated to 7 days); it fires when P(0 events | E) = e^(−E) < `alpha` (default 1e-7),
//!   i.e. E > −ln α ≈ 16.1 events. `observed` = 0 (events), `threshold` = −ln α, `expected` =
//!   E, `p_value` = e^(−E), `event_type` unspecified. A unit with no activity since the
//!   engine's first watermark counts as silent since then.
//!
//! With a partial input (one Kafka partition of a topic keyed by cell,
//! [`super::RuleEngine::set_partial_input`]) only cells that have had activity in this engine
//! are tested — the others belong to other partitions — and a community's silence is tested
//! over those of its cells.
//!
//! **Choosing α.** Every event starts a new chance for a gap, so the false-alarm rate is about
//! (events per week) × α per unit: a simulated cell sees ~500 events a week, and with α = 1e-3
//! a week of 120 normal cells produced false silences after ordinary quiet nights. With the
//! default 1e-7 the 1,911 cells of the city expect about 0.1 false alarms a week. The price is
//! detection time: a daytime cell (~3–5 events per hour) is flagged after 3–5 hours of
//! silence, a whole community (12 cells) within about half an hour; a quiet night (about 0.5
//! events per cell per hour) never reaches it. The offline-device condition is what catches a
//! real outage at once (the simulator's `device_outage` reports every device offline).
//!
//! # Resolution
//!
//! RESOLVED at the first activity in the unit (`ends_at` = that event's time, or the alert's
//! start if later): events arriving again is what ends a data gap.
//!
//! Severity defaults to 4 (operations) for a cell and 2 for a community (a whole community
//! blind is serious). Fingerprint: (rule, grid id or community id, `"data_gap"`).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, AlertOccurrence};
use super::baseline::BaselineView;
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::series::{
    collect_firing_series, first_watermark_past, next_pane_boundary, remove_series_of_rule,
    state_of_rule, AlertLifecycle, AlertingSeries, SeriesByRule,
};
use super::statistics::poisson_zero_probability;
use super::units::{unit_count, unit_key_of, unit_labels, CellLabels};
use crate::event::{AcceptedEvent, ALL_EVENT_TYPES};
use crate::grid::{CellIndex, GridRegistry};
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by data-gap rules.
pub const RULE_KIND_DATA_GAP: &str = "data_gap";

/// Fingerprint scope of data-gap alerts.
const DATA_GAP_SCOPE: &str = "data_gap";

/// Default `window` of a data-gap rule (distinct offline devices are counted within it).
pub const DEFAULT_DATA_GAP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Default `min_offline_devices` of a data-gap rule.
pub const DEFAULT_MIN_OFFLINE_DEVICES: i64 = 3;
/// Default `silence` of a data-gap rule: shorter silences never alert.
pub const DEFAULT_DATA_GAP_SILENCE: Duration = Duration::from_secs(2 * 60 * 60);
/// Default `alpha` of a data-gap rule: the silence alerts once P(no events) < alpha. Small
/// because every event starts a new chance of a gap: a cell sees ~500 events a week, so the
/// city's 1,911 cells get ~1e6 chances a week, and α = 1e-7 keeps false alarms near 0.1 a week.
pub const DEFAULT_DATA_GAP_ALPHA: f64 = 1e-7;
/// Default severity of a cell-scope data-gap rule (operations, not an incident).
pub const DEFAULT_DATA_GAP_CELL_SEVERITY: u8 = 4;
/// Default severity of a community-scope data-gap rule (a whole community blind is serious).
pub const DEFAULT_DATA_GAP_COMMUNITY_SEVERITY: u8 = 2;

/// A `kind = "data_gap"` table as written (no `event_types`: it sees every event).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataGapSpec {
    /// Unique rule name.
    name: String,
    /// Per cell (default) or per community.
    #[serde(default)]
    scope: AlertScope,
    /// Window in which distinct offline devices are counted.
    #[serde(default = "default_data_gap_window", with = "humantime_serde")]
    window: Duration,
    /// Distinct devices reporting DEVICE_OFFLINE within `window` that alert.
    #[serde(default = "default_min_offline_devices")]
    min_offline_devices: i64,
    /// Shortest silence that may alert.
    #[serde(default = "default_data_gap_silence", with = "humantime_serde")]
    silence: Duration,
    /// The silence alerts once P(no events | baseline) < alpha.
    #[serde(default = "default_data_gap_alpha")]
    alpha: f64,
    /// Alert severity (default 4 per cell, 2 per community).
    #[serde(default)]
    severity: Option<i64>,
    /// Alerts a day city-wide expected under the seeded baseline (documentation the budget
    /// test enforces; validated, otherwise unused by the engine).
    #[serde(default)]
    alert_budget_per_day: Option<f64>,
}

fn default_data_gap_window() -> Duration {
    DEFAULT_DATA_GAP_WINDOW
}

fn default_min_offline_devices() -> i64 {
    DEFAULT_MIN_OFFLINE_DEVICES
}

fn default_data_gap_silence() -> Duration {
    DEFAULT_DATA_GAP_SILENCE
}

fn default_data_gap_alpha() -> f64 {
    DEFAULT_DATA_GAP_ALPHA
}

/// An operations rule: a cell (or community) whose devices go offline or that falls silent.
#[derive(Debug, Clone, PartialEq)]
pub struct DataGapRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// Window in which distinct DEVICE_OFFLINE devices are counted.
    pub window_millis: i64,
    /// Distinct offline devices within `window_millis` that fire (at least 1).
    pub min_offline_devices: u32,
    /// Shortest silence that may fire.
    pub silence_millis: i64,
    /// The silence fires once P(no events over it | baseline) < alpha, in (0, 1).
    pub alpha: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
}

/// Mutable state of all data-gap rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataGapState {
    /// Per `CellIndex.0`: event time of its latest activity. Updated by every event while a
    /// data-gap rule is loaded, so a hash map (a tree walk each was 1 % of a replay's CPU),
    /// written to snapshots in key order like the tree it replaced.
    #[serde(with = "crate::sorted_map")]
    pub last_activity_millis: FxHashMap<u32, i64>,
    /// The first watermark the engine saw: units without activity are silent since then.
    pub observed_since_millis: Option<i64>,
    /// Per rule name, then per unit (`CellIndex.0` or `CommunityIndex.0`).
    pub units: SeriesByRule<u32, DataGapUnit>,
    /// Pane-aligned watermark of the last silence evaluation.
    pub last_evaluated_aligned_millis: Option<i64>,
}

/// One (rule, unit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataGapUnit {
    /// Per device id: the time of its latest DEVICE_OFFLINE report within the window.
    pub offline_devices: BTreeMap<String, i64>,
    /// The unit's alert.
    pub alert: AlertLifecycle,
}

impl AlertingSeries for DataGapUnit {
    fn alert(&self) -> &AlertLifecycle {
        &self.alert
    }
}

/// What the engine keeps derived for data-gap rules.
#[derive(Debug, Clone, Default)]
pub struct DataGapDerived {
    /// Whether some rule is a data-gap rule: activity is recorded only then, so the state
    /// does not grow for deployments without one.
    has_rules: bool,
    /// Seeded events per hour of every type together, per cell (`CellIndex.0`) and local hour
    /// of day: a function of the seeds and the registry only, computed once per cell instead
    /// of once per silent cell at every pane boundary (23 types and a device scan each).
    /// Indexed by `CellIndex.0`, filled on first use (one allocation of about 200 bytes a
    /// cell).
    seeded_hourly_by_cell: Vec<Option<SeededHourly>>,
    /// The silence check's view of the latest activity per cell (`CellIndex.0`): empty until
    /// the first check after the rules or the state were replaced fills it from the state
    /// (one slot per registry cell), then kept up to date by every event (refilling it at each
    /// check, from a map of every active cell, was most of the check's instructions: 82 M in
    /// a 1 M-event replay).
    last_activity_by_cell: Vec<Option<i64>>,
    /// Per data-gap rule (by position among them) and unit: the earliest check at which the
    /// unit's silence could alert, as its last check found. Activity only moves that later,
    /// so a unit is skipped until then instead of tested again at every check (silent units
    /// far from alerting were summed over their whole silence every five minutes: 232,471
    /// sums in a 1 M-event replay; skipping took its checks from 661 to 250 M instructions).
    silence_not_before: Vec<Vec<i64>>,
    /// What those times assumed (partial input, cells with activity when the input is partial,
    /// start of observation): anything else, such as a cell newly counted in a community,
    /// drops them.
    silence_not_before_basis: Option<(bool, usize, i64)>,
    /// Each data-gap rule's unit scope, by rule name: what `units_with_state` is built from.
    scope_by_rule: BTreeMap<String, AlertScope>,
    /// The units some data-gap rule holds state for, built from the state at the first event
    /// after the rules or the state were replaced (`None` until then).
    units_with_state: Option<UnitsWithState>,
}

/// How many data-gap rules hold state for each unit, by scope and key. Most events are
/// activity, and activity changes nothing for a unit that no rule holds: the two tree lookups
/// that found that out for every event and rule (the rule's units by name, then the unit)
/// were the rule's whole per-event cost, and a simulated city holds a handful of units at a
/// time. Counted where a unit is created and where the pane's retain drops it; a rule's
/// units dropped any other way (a rule removed or changed) go with a rebuild, since the rules
/// changed too.
#[derive(Debug, Clone, Default)]
struct UnitsWithState {
    /// Per scope ([`scope_slot`]), per unit key: the rules holding it.
    counts_by_scope: [Vec<u16>; 3],
}

impl UnitsWithState {
    /// The units of `units`, each rule's under its scope in `scope_by_rule` (the units of a
    /// rule no longer loaded are left out: no event looks them up, and the next pane drops
    /// them).
    fn of_state(
        units: &SeriesByRule<u32, DataGapUnit>,
        scope_by_rule: &BTreeMap<String, AlertScope>,
    ) -> UnitsWithState {
        let mut built = UnitsWithState::default();
        for (rule_name, rule_units) in units {
            let Some(scope) = scope_by_rule.get(rule_name) else {
                continue;
            };
            for unit_key in rule_units.keys() {
                built.insert(*scope, *unit_key);
            }
        }
        built
    }

    /// A rule of `scope` created its unit `unit_key`.
    fn insert(&mut self, scope: AlertScope, unit_key: u32) {
        let Some(counts) = scope_slot(scope).and_then(|slot| self.counts_by_scope.get_mut(slot))
        else {
            return;
        };
        let index = unit_key as usize;
        if counts.len() <= index {
            counts.resize(index + 1, 0);
        }
        if let Some(count) = counts.get_mut(index) {
            *count = count.saturating_add(1);
        }
    }

    /// A rule of `scope` dropped its unit `unit_key`.
    fn remove(&mut self, scope: AlertScope, unit_key: u32) {
        let count = scope_slot(scope)
            .and_then(|slot| self.counts_by_scope.get_mut(slot))
            .and_then(|counts| counts.get_mut(unit_key as usize));
        if let Some(count) = count {
            *count = count.saturating_sub(1);
        }
    }

    /// Whether a rule of `scope` may hold state for `unit_key` (always, for a scope without a
    /// slot).
    fn may_hold(&self, scope: AlertScope, unit_key: u32) -> bool {
        let Some(slot) = scope_slot(scope) else {
            return true;
        };
        self.counts_by_scope
            .get(slot)
            .and_then(|counts| counts.get(unit_key as usize))
            .is_some_and(|count| *count > 0)
    }
}

/// The unit `unit_key` of a rule of `scope`, created (and counted in `units_with_state`, when
/// built) when absent.
fn unit_entry<'units>(
    units: &'units mut BTreeMap<u32, DataGapUnit>,
    unit_key: u32,
    scope: AlertScope,
    units_with_state: &mut Option<UnitsWithState>,
) -> &'units mut DataGapUnit {
    match units.entry(unit_key) {
        Entry::Occupied(occupied) => occupied.into_mut(),
        Entry::Vacant(vacant) => {
            if let Some(units_with_state) = units_with_state.as_mut() {
                units_with_state.insert(scope, unit_key);
            }
            vacant.insert(DataGapUnit::default())
        }
    }
}

/// The slot of [`UnitsWithState`] for the scopes whose units a key names.
fn scope_slot(scope: AlertScope) -> Option<usize> {
    match scope {
        AlertScope::Cell => Some(0),
        AlertScope::Community => Some(1),
        AlertScope::District => Some(2),
        AlertScope::Cluster | AlertScope::City => None,
    }
}

impl DataGapDerived {
    /// The units with state, built from `state` when not yet built.
    fn units_with_state(&mut self, state: &DataGapState) -> &mut UnitsWithState {
        let scope_by_rule = &self.scope_by_rule;
        self.units_with_state
            .get_or_insert_with(|| UnitsWithState::of_state(&state.units, scope_by_rule))
    }
}

/// One cell's seeded events per hour of every type together, by local hour of day, and the
/// largest of them.
#[derive(Debug, Clone, Copy)]
struct SeededHourly {
    by_local_hour: [f64; 24],
    /// The busiest hour's rate: times a span, a bound on what the span expects.
    peak: f64,
}

impl SeededHourly {
    fn new(by_local_hour: [f64; 24]) -> SeededHourly {
        let peak = by_local_hour.iter().copied().fold(0.0, f64::max);
        SeededHourly {
            by_local_hour,
            peak,
        }
    }
}

/// Relative margin by which a unit's bound must stay below the alerting threshold to skip its
/// exact expectation: far above the rounding of either sum, so a skipped unit is one whose
/// exact expectation could not have alerted.
const BOUND_MARGIN: f64 = 1e-9;

impl RuleKind for DataGapRule {
    const NAME: &'static str = RULE_KIND_DATA_GAP;
    type Spec = DataGapSpec;
    type State = DataGapState;
    type Derived = DataGapDerived;

    fn spec_name(spec: &DataGapSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: DataGapSpec, validation: &mut RuleValidation<'_>) -> DataGapRule {
        validation.alert_budget(spec.alert_budget_per_day);
        let window_millis = validation.duration(spec.window, "window");
        let silence_millis = validation.pane_multiple(spec.silence, "silence");
        let min_offline_devices = validation.count(spec.min_offline_devices, "min_offline_devices");
        let alpha = spec.alpha;
        if !(alpha.is_finite() && alpha > 0.0 && alpha < 1.0) {
            validation.problem(format!(
                "alpha must be strictly between 0 and 1, got {alpha}"
            ));
        }
        let unit = validation.counting_scope(spec.scope);
        let default_severity_of_scope = match unit {
            AlertScope::Cell => DEFAULT_DATA_GAP_CELL_SEVERITY,
            AlertScope::Community => DEFAULT_DATA_GAP_COMMUNITY_SEVERITY,
            // A whole district falling silent is an outage of the feed, which the source's
            // own health (lag, broker reachability) reports sooner than a statistical test.
            AlertScope::District => {
                validation
                    .problem("a data_gap rule counts per cell or per community, not per district");
                DEFAULT_DATA_GAP_COMMUNITY_SEVERITY
            }
            // Refused by `counting_scope`.
            AlertScope::Cluster | AlertScope::City => DEFAULT_DATA_GAP_COMMUNITY_SEVERITY,
        };
        let severity = match spec.severity {
            None => default_severity_of_scope,
            Some(_) => validation.severity(spec.severity, &[]),
        };
        DataGapRule {
            name: spec.name,
            unit,
            window_millis,
            min_offline_devices,
            silence_millis,
            alpha,
            severity,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Every type: any event may be activity or an offline report.
    fn event_types(&self) -> &[EventType] {
        &ALL_EVENT_TYPES
    }

    fn derive(rules: &RuleSet) -> DataGapDerived {
        DataGapDerived {
            has_rules: rules.rules_of_kind::<DataGapRule>().next().is_some(),
            seeded_hourly_by_cell: Vec::new(),
            last_activity_by_cell: Vec::new(),
            silence_not_before: Vec::new(),
            silence_not_before_basis: None,
            scope_by_rule: rules
                .rules_of_kind::<DataGapRule>()
                .map(|rule| (rule.name.clone(), rule.unit))
                .collect(),
            units_with_state: None,
        }
    }

    /// Records activity before the rules run: shared by every data-gap rule.
    fn observe_event(
        state: &mut DataGapState,
        derived: &mut DataGapDerived,
        accepted_event: &AcceptedEvent<'_>,
    ) {
        if derived.has_rules {
            record_activity(state, derived, accepted_event);
        }
    }

    fn on_matching_event(
        &self,
        state: &mut DataGapState,
        derived: &mut DataGapDerived,
        event: &MatchingEvent<'_>,
        out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let (fired, resolved) = on_event(
            state,
            derived,
            self,
            event.registry,
            event.accepted_event,
            out,
        );
        EventOutcome {
            fired,
            resolved,
            ..EventOutcome::default()
        }
    }

    const EVENTS_BRING_DUE_FORWARD: bool = false;

    /// The next pane boundary, once the first advance set the start of observation.
    fn next_due_millis(
        state: &DataGapState,
        _derived: &DataGapDerived,
        rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        if state.observed_since_millis.is_none() {
            return i64::MIN;
        }
        first_watermark_past(
            state.last_evaluated_aligned_millis,
            rules.pane_size_millis(),
        )
    }

    fn on_watermark(
        state: &mut DataGapState,
        derived: &mut DataGapDerived,
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        on_watermark(
            state,
            derived,
            watermark.rules,
            &watermark.baseline,
            watermark.watermark_millis,
            watermark.partial_input,
            out,
        );
    }

    fn remove_rule(state: &mut DataGapState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        remove_series_of_rule(&mut state.units, rule_name, firing);
    }

    fn check_state_bounds(
        state: &Self::State,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        // The largest cell is in bounds only if all are (and names the same one every time).
        if let Some(largest_cell) = state.last_activity_millis.keys().max() {
            shape.check_cell("data-gap activity", *largest_cell)?;
        }
        super::series::check_series_bounds(&state.units, "data-gap rules", shape)
    }

    fn collect_firing<'state>(
        state: &'state DataGapState,
        firing: &mut Vec<&'state AlertOccurrence>,
    ) {
        collect_firing_series(&state.units, firing);
    }
}

/// Whether an event shows the cell is producing data.
fn is_activity(event_type: EventType) -> bool {
    !matches!(event_type, EventType::DeviceOffline | EventType::VideoLoss)
}

/// Records activity (before the rules run): shared by every data-gap rule.
fn record_activity(
    state: &mut DataGapState,
    derived: &mut DataGapDerived,
    accepted_event: &AcceptedEvent<'_>,
) {
    if !is_activity(accepted_event.event_type) {
        return;
    }
    let latest = state
        .last_activity_millis
        .entry(accepted_event.cell.0)
        .or_insert(accepted_event.occurred_at_millis);
    *latest = (*latest).max(accepted_event.occurred_at_millis);
    // Before the view is filled it is empty, and the fill will read this event's activity.
    if let Some(slot) = derived
        .last_activity_by_cell
        .get_mut(accepted_event.cell.0 as usize)
    {
        *slot = Some(*latest);
    }
}

/// Applies one event to `rule`: activity resolves a firing alert of the unit; an offline
/// report may fire. Returns `(fired, resolved)`.
fn on_event(
    state: &mut DataGapState,
    derived: &mut DataGapDerived,
    rule: &DataGapRule,
    registry: &GridRegistry,
    accepted_event: &AcceptedEvent<'_>,
    out: &mut Vec<Alert>,
) -> (bool, bool) {
    let Some(unit_key) = unit_key_of(registry, rule.unit, accepted_event.cell) else {
        return (false, false);
    };
    let occurred_at_millis = accepted_event.occurred_at_millis;
    if is_activity(accepted_event.event_type) {
        if !derived
            .units_with_state(state)
            .may_hold(rule.unit, unit_key)
        {
            return (false, false);
        }
        let Some(unit) = state
            .units
            .get_mut(rule.name.as_str())
            .and_then(|units| units.get_mut(&unit_key))
        else {
            return (false, false);
        };
        unit.offline_devices.clear();
        let resolved = unit
            .alert
            .resolve_no_earlier_than_last_update(occurred_at_millis, out);
        return (false, resolved);
    }
    if accepted_event.event_type != EventType::DeviceOffline {
        return (false, false);
    }
    let Some(units) = state_of_rule(&mut state.units, &rule.name) else {
        return (false, false);
    };
    let unit = unit_entry(units, unit_key, rule.unit, &mut derived.units_with_state);
    let latest = unit
        .offline_devices
        .entry(accepted_event.event.device_id.clone())
        .or_insert(occurred_at_millis);
    *latest = (*latest).max(occurred_at_millis);
    let window_start = occurred_at_millis.saturating_sub(rule.window_millis);
    unit.offline_devices
        .retain(|_, reported_at| *reported_at >= window_start);
    let offline_count = unit
        .offline_devices
        .values()
        .filter(|reported_at| **reported_at <= occurred_at_millis)
        .count();
    if unit.alert.is_firing() || offline_count < rule.min_offline_devices as usize {
        return (false, false);
    }
    let Some(labels) = unit_labels(registry, rule.unit, unit_key) else {
        return (false, false);
    };
    let occurrence = new_occurrence(
        rule,
        &labels,
        unit.alert.next_start_millis(occurred_at_millis),
        OccurrenceValues {
            event_type: EventType::DeviceOffline as i32,
            observed: offline_count as f64,
            threshold: f64::from(rule.min_offline_devices),
            expected: 0.0,
            p_value: 0.0,
            event_ids: vec![accepted_event.event.event_id.clone()],
            baseline_weeks: 0,
        },
    );
    unit.alert.fire(occurrence, out);
    (true, false)
}

/// The values that differ between the two conditions.
struct OccurrenceValues {
    /// `EventType as i32` of the alert.
    event_type: i32,
    /// `observed`.
    observed: f64,
    /// `threshold`.
    threshold: f64,
    /// `expected`.
    expected: f64,
    /// `p_value`.
    p_value: f64,
    /// `event_ids`.
    event_ids: Vec<String>,
    /// Learned weeks behind `expected` (0 = seeded only, or no baseline).
    baseline_weeks: u32,
}

fn new_occurrence(
    rule: &DataGapRule,
    labels: &CellLabels<'_>,
    starts_at_millis: i64,
    values: OccurrenceValues,
) -> AlertOccurrence {
    let alert_fingerprint = fingerprint(&rule.name, labels.location(), DATA_GAP_SCOPE);
    AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, starts_at_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: DataGapRule::NAME.to_string(),
        grid_id: labels.grid_id.to_string(),
        community_id: labels.community_id.to_string(),
        district_id: labels.district_id.to_string(),
        event_type: values.event_type,
        severity: u32::from(rule.severity),
        starts_at_millis,
        updated_at_millis: starts_at_millis,
        observed: values.observed,
        threshold: values.threshold,
        expected: values.expected,
        p_value: values.p_value,
        event_ids: values.event_ids,
        device_id: String::new(),
        scope: rule.unit,
        window_millis: rule.window_millis,
        baseline_weeks: values.baseline_weeks,
        cluster_community_ids: Vec::new(),
    }
}

/// How often (event time) silence is tested: a unit that has been silent long enough fires at
/// the first check after that, i.e. at most this much later.
pub(crate) const SILENCE_CHECK_INTERVAL_MILLIS: i64 = 5 * 60 * 1000;

/// Tests silence at a new watermark (at most once per [`SILENCE_CHECK_INTERVAL_MILLIS`]); appends FIRING alerts (and
/// RESOLVED ones of rules no longer in `rules`).
fn on_watermark(
    state: &mut DataGapState,
    derived: &mut DataGapDerived,
    rules: &RuleSet,
    baseline: &BaselineView<'_>,
    watermark_millis: i64,
    partial_input: bool,
    out: &mut Vec<Alert>,
) {
    let DataGapDerived {
        seeded_hourly_by_cell,
        last_activity_by_cell,
        silence_not_before,
        silence_not_before_basis,
        units_with_state,
        ..
    } = derived;
    let observed_since = *state.observed_since_millis.get_or_insert(watermark_millis);
    let previously_evaluated_millis = state.last_evaluated_aligned_millis;
    let Some(aligned_millis) = next_pane_boundary(
        &mut state.last_evaluated_aligned_millis,
        watermark_millis,
        rules.pane_size_millis(),
    ) else {
        return;
    };
    state.units.retain(|rule_name, units| {
        if rules.rule_of_kind::<DataGapRule>(rule_name).is_some() {
            return true;
        }
        for unit in units.values_mut() {
            unit.alert
                .resolve_no_earlier_than_last_update(aligned_millis, out);
        }
        false
    });
    let registry = baseline.registry;
    // Filled at the first silence check of this call, shared by every data-gap rule.
    let mut last_activity_filled = false;
    for (rule_position, rule) in rules.rules_of_kind::<DataGapRule>().enumerate() {
        let units = state.units.entry(rule.name.clone()).or_default();
        // Forget offline reports that left the window.
        let window_start = aligned_millis.saturating_sub(rule.window_millis);
        units.retain(|unit_key, unit| {
            unit.offline_devices
                .retain(|_, reported_at| *reported_at >= window_start);
            let keep = unit.alert.is_firing()
                || !unit.offline_devices.is_empty()
                || unit.alert.previous_ends_at_millis.is_some_and(|ends_at| {
                    ends_at > aligned_millis.saturating_sub(rule.silence_millis)
                });
            if !keep {
                if let Some(units_with_state) = units_with_state.as_mut() {
                    units_with_state.remove(rule.unit, *unit_key);
                }
            }
            keep
        });
        // Silence is tested once per SILENCE_CHECK_INTERVAL_MILLIS of event time, not at every
        // pane: it walks every unit, and silences of an hour or more lose nothing by it.
        let silence_check_due = previously_evaluated_millis.is_none_or(|previous_millis| {
            previous_millis.div_euclid(SILENCE_CHECK_INTERVAL_MILLIS)
                != aligned_millis.div_euclid(SILENCE_CHECK_INTERVAL_MILLIS)
        });
        if !silence_check_due {
            continue;
        }
        if !last_activity_filled {
            if last_activity_by_cell.len() != registry.cells().len() {
                fill_dense_last_activity(
                    &state.last_activity_millis,
                    registry.cells().len(),
                    last_activity_by_cell,
                );
            }
            last_activity_filled = true;
            let basis = (
                partial_input,
                if partial_input {
                    state.last_activity_millis.len()
                } else {
                    0
                },
                observed_since,
            );
            if *silence_not_before_basis != Some(basis) {
                silence_not_before.clear();
                *silence_not_before_basis = Some(basis);
            }
        }
        let last_activity = &*last_activity_by_cell;
        let unit_total = u32::try_from(unit_count(registry, rule.unit)).unwrap_or(u32::MAX);
        if silence_not_before.len() <= rule_position {
            silence_not_before.resize_with(rule_position + 1, Vec::new);
        }
        let Some(not_before_by_unit) = silence_not_before.get_mut(rule_position) else {
            continue;
        };
        if not_before_by_unit.len() != unit_total as usize {
            not_before_by_unit.clear();
            not_before_by_unit.resize(unit_total as usize, i64::MIN);
        }
        // The expectation at which a silence alerts (P(0 events) = e^(−E) < alpha), and the
        // bound below which a unit is settled without its exact expectation: the same for
        // every unit, so computed once rather than for each silent one.
        let alerting_expectation = -rule.alpha.ln();
        let settled_below = alerting_expectation * (1.0 - BOUND_MARGIN);
        // The units firing before this check, ascending, walked in step with the loop (a tree
        // lookup per unit was a fifth of the check). A unit fired below has a key already
        // passed.
        let firing_unit_keys: Vec<u32> = units
            .iter()
            .filter(|(_, unit)| unit.alert.is_firing())
            .map(|(unit_key, _)| *unit_key)
            .collect();
        let mut firing_unit_keys = firing_unit_keys.into_iter().peekable();
        for unit_key in 0..unit_total {
            while firing_unit_keys
                .next_if(|firing| *firing < unit_key)
                .is_some()
            {}
            if firing_unit_keys.next_if_eq(&unit_key).is_some() {
                continue;
            }
            let Some(not_before) = not_before_by_unit.get_mut(unit_key as usize) else {
                continue;
            };
            if aligned_millis < *not_before {
                continue;
            }
            // Borrowed, not collected: this loop runs for every unit at every pane boundary.
            let single_cell = [CellIndex(unit_key)];
            let unit_cells: &[CellIndex] = match rule.unit {
                AlertScope::Cell => &single_cell,
                AlertScope::Community => registry
                    .communities()
                    .get(unit_key as usize)
                    .map(|community| community.cells.as_slice())
                    .unwrap_or_default(),
                // Refused by validation.
                AlertScope::District | AlertScope::Cluster | AlertScope::City => &[],
            };
            // With partial input, only this engine's cells (those it saw activity of) count;
            // filtered on the fly, since this runs for every unit.
            let last_activity_of =
                |cell: &CellIndex| last_activity.get(cell.0 as usize).copied().flatten();
            let counts_here =
                |cell: &&CellIndex| !partial_input || last_activity_of(cell).is_some();
            if !unit_cells.iter().any(|cell| counts_here(&cell)) {
                continue;
            }
            let silent_since = unit_cells
                .iter()
                .filter(counts_here)
                .map(|cell| {
                    last_activity_of(cell)
                        .unwrap_or(observed_since)
                        .max(observed_since)
                })
                .max()
                .unwrap_or(observed_since);
            if aligned_millis.saturating_sub(silent_since) < rule.silence_millis {
                *not_before = silent_since.saturating_add(rule.silence_millis);
                continue;
            }
            // Most silent units of a quiet city are far from alerting: a bound (the busiest
            // seeded hour times the span) settles them without summing the span hour by hour,
            // which for a cell silent for days was most of this check.
            let peak_rate: f64 = unit_cells
                .iter()
                .filter(counts_here)
                .map(|cell| {
                    with_seeded_hourly(seeded_hourly_by_cell, baseline, *cell, |hourly| hourly.peak)
                })
                .sum();
            let expected_at_most =
                super::baseline::seeded_count_bound(peak_rate, silent_since, aligned_millis);
            if expected_at_most < settled_below {
                // Later activity only shortens the silence, and with it the bound.
                *not_before = super::baseline::seeded_count_reaches_no_earlier_than(
                    peak_rate,
                    silent_since,
                    settled_below,
                )
                .unwrap_or(i64::MAX);
                continue;
            }
            let expected: f64 = unit_cells
                .iter()
                .filter(counts_here)
                .map(|cell| {
                    with_seeded_hourly(seeded_hourly_by_cell, baseline, *cell, |hourly| {
                        super::baseline::seeded_count_over(
                            &hourly.by_local_hour,
                            silent_since,
                            aligned_millis,
                        )
                    })
                })
                .sum();
            let p_value = poisson_zero_probability(expected);
            if p_value >= rule.alpha {
                // Each later hour adds at most the peak rate to the expectation.
                *not_before = super::baseline::seeded_count_reaches_no_earlier_than(
                    peak_rate,
                    aligned_millis,
                    settled_below - expected,
                )
                .unwrap_or(i64::MAX);
                continue;
            }
            let Some(labels) = unit_labels(registry, rule.unit, unit_key) else {
                continue;
            };
            let unit = unit_entry(units, unit_key, rule.unit, units_with_state);
            let occurrence = new_occurrence(
                rule,
                &labels,
                unit.alert.next_start_millis(aligned_millis),
                OccurrenceValues {
                    event_type: EventType::Unspecified as i32,
                    observed: 0.0,
                    threshold: alerting_expectation,
                    expected,
                    p_value,
                    event_ids: Vec::new(),
                    // Silence is judged on the seeded rates only.
                    baseline_weeks: 0,
                },
            );
            unit.alert.fire(occurrence, out);
        }
    }
}

/// `last_activity_millis` as a vector indexed by cell: the silence check reads it for every
/// cell of every unit, and a tree lookup each was the top of the Kafka pipeline task's profile
/// (a replay of 59 h of event time on six partition engines). Keys beyond the registry (only a
/// foreign snapshot holds them) name no unit's cell and are left out.
fn fill_dense_last_activity(
    last_activity_millis: &FxHashMap<u32, i64>,
    cell_count: usize,
    last_activity_by_cell: &mut Vec<Option<i64>>,
) {
    last_activity_by_cell.clear();
    last_activity_by_cell.resize(cell_count, None);
    for (&cell, &millis) in last_activity_millis {
        if let Some(slot) = last_activity_by_cell.get_mut(cell as usize) {
            *slot = Some(millis);
        }
    }
}

/// `read` of the seeded all-types hourly rates of `cell`, computed on first use and kept in
/// `seeded_hourly_by_cell` (sized to the registry's cells). Lent, not copied: the silence
/// check reads every silent cell's peak at every check.
fn with_seeded_hourly<T>(
    seeded_hourly_by_cell: &mut Vec<Option<SeededHourly>>,
    baseline: &BaselineView<'_>,
    cell: CellIndex,
    read: impl FnOnce(&SeededHourly) -> T,
) -> T {
    let cell_count = baseline.registry.cells().len();
    if seeded_hourly_by_cell.len() != cell_count {
        *seeded_hourly_by_cell = vec![None; cell_count];
    }
    let computed = || SeededHourly::new(baseline.seeded_all_types_hourly(cell));
    match seeded_hourly_by_cell.get_mut(cell.0 as usize) {
        Some(slot) => read(slot.get_or_insert_with(computed)),
        None => read(&computed()),
    }
}
