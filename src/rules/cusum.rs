//! CUSUM rules: a one-sided Poisson CUSUM chart per (rule, unit, type) that catches a
//! sustained upward shift of the rate — a fraud wave building over hours — that no single
//! window makes improbable on its own.
//!
//! # The chart
//!
//! Counts are taken per `interval` (a multiple of the pane size, aligned to the epoch). When
//! the watermark passes the end of an interval, every chart of the rule is updated with that
//! interval's count x_t:
//!
//! ```text
//! λ0  = expected count in the interval (baseline, floored at MIN_CUSUM_EXPECTED)
//! λ1  = shift · λ0                  (default shift 2.0)
//! k   = (λ1 − λ0) / ln(λ1/λ0)       (the likelihood-ratio reference value)
//! S_t = max(0, S_{t−1} + x_t − k)
//! ```
//!
//! and the chart fires when S_t ≥ h. λ0 changes with the hour of day and week, so k and h are
//! computed per λ0 *bucket*, and when a chart moves to another bucket its S is rescaled by
//! h_new / h_old (S keeps its distance to the alarm as a fraction of h; without this the
//! excess built up under a busy daytime h would alarm against the smaller night-time h —
//! a week of simulated traffic showed 4 such false alarms over 20 charts). Buckets: λ0 is
//! rounded to the nearest of 20 log-spaced values per decade (about 12%
//! apart) and the bucket's representative λ0 gives k and h, cached for the process (not
//! snapshotted: derived). `expected` on the alert is the unrounded λ0.
//!
//! # Choosing h (Brook & Evans)
//!
//! h is the decision interval whose in-control average run length (ARL, in intervals) is the
//! rule's `arl0` (default 2000; at 15-minute intervals that is one false alarm per chart per
//! ~21 days — per chart: the default rules file uses 20,000 because the city has hundreds of
//! charts). The ARL of a given h is computed with the Markov chain of Brook & Evans (1972),
//! made exact for integer counts as in Lucas (1985): k is rounded to a rational a/r within
//! 0.5% ([`Lattice`]), so that S measured in units of 1/r moves on the integers 0..H (H = h·r,
//! alarm at S ≥ H/r), and ARL = ((I − R)⁻¹·1)₀ with R the transitions among the non-absorbing
//! states. Small chains (≤ 150 states) are solved by Gaussian elimination; the long chains of
//! a tiny λ0 (k ≈ 1/r with r in the thousands) by "shooting" (every L_i is affine in the top a
//! unknowns, computed downward from the chain equations; stable because P(X = 0) ≈ 1 there).
//! ARL grows with H, so H is the smallest integer with ARL ≥ `arl0` (doubling, then
//! bisection). Counts are integers, so ARL is a step function of h (it jumps where h + k
//! crosses an integer, most visibly for large λ0): the achieved ARL
//! ([`CusumLimits::in_control_arl`]) is at least `arl0` and may exceed it by one step — up to
//! about 1.5 × `arl0` for the tested rates (conservative: fewer false alarms, slightly slower
//! detection). When λ0 is so small that even alarming on the first event has an ARL
//! 1/P(X ≥ 1) above `arl0`, the chart alarms on the first event. The test `cusum_h_gives_the_target_in_control_arl` checks that bound and
//! simulates in-control Poisson streams: the empirical ARL is within 15% of the chain's ARL.
//!
//! # Lifecycle
//!
//! - FIRING at the interval end where S_t ≥ h **and** at least `min_events` matching events
//!   (default 3) fell within the last `min_events_within` (default 24 h). Where λ0 sits near
//!   the floor, S crosses h on one or two isolated events however far apart (two fraud reports
//!   28 h apart in one community fired before this check): a wave needs corroboration.
//!   `observed` = S_t, `threshold` = h, `expected`
//!   = λ0, `event_type` = the chart's type, `event_ids` = its recent events; while firing,
//!   `observed` keeps the largest S.
//! - RESOLVED at the first interval end where S_t is back at 0 (the chart has "forgotten" the
//!   excess: the rate has been at or below the reference value long enough to cancel it).
//! - A chart with S = 0, no counts and no alert is forgotten.
//! - The first watermark only sets the chart's clock (the interval it falls in is not
//!   counted). A watermark that jumps more than [`MAX_CATCH_UP_INTERVALS`] intervals updates
//!   only the most recent ones (the skipped ones had no counts and only lower S).
//!
//! # Measured behaviour (asserted in `src/rules/tests_stats.rs`)
//!
//! The default community-scope `fraud_wave_cusum` (15-minute intervals, shift 2, ARL0 20,000)
//! detects the ×30, 8-hour fraud wave of the spike test within 16 intervals (measured: 11, i.e.
//! 165 min: with a base rate of ~0.01 events per interval, k ≈ 0.0145 and h ≈ 6, the chart
//! needs about six excess events), and raises at most 1 false alarm over a simulated normal
//! week of 10 communities (20 charts × 672 intervals; the ARL predicts 0.7).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, AlertOccurrence};
use super::baseline::{BaselineView, ExpectationCache};
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::series::{
    collect_firing_series, count_matching_event, event_ids_before, first_watermark_past,
    pane_start, remove_series_of_rule, state_of_rule, AlertLifecycle, AlertingSeries, RecentEvent,
    SeriesByRule,
};
use super::statistics::cusum_reference_value;
use super::units::{evaluated_with_input, unit_labels};
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by CUSUM rules.
pub const RULE_KIND_CUSUM: &str = "cusum";

/// Default `shift` (λ1 / λ0) of a CUSUM rule.
pub const DEFAULT_CUSUM_SHIFT: f64 = 2.0;
/// Default in-control average run length `arl0` (in intervals) of a CUSUM rule.
pub const DEFAULT_CUSUM_ARL0: f64 = 2000.0;
/// Smallest accepted `arl0`: below it the chart alarms every few intervals anyway.
pub const MIN_CUSUM_ARL0: f64 = 10.0;
/// Largest accepted `arl0` (keeps the numeric search for `h` bounded).
pub const MAX_CUSUM_ARL0: f64 = 1.0e7;

/// A `kind = "cusum"` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CusumSpec {
    /// Unique rule name.
    name: String,
    /// Proto enum names of the matched types (one chart per type).
    event_types: Vec<String>,
    /// Counting interval of the chart.
    #[serde(with = "humantime_serde")]
    interval: Duration,
    /// Per cell (default) or per community.
    #[serde(default)]
    scope: AlertScope,
    /// Out-of-control mean as a multiple of the in-control mean (λ1 / λ0).
    #[serde(default = "default_cusum_shift")]
    shift: f64,
    /// Target in-control average run length, in intervals.
    #[serde(default = "default_cusum_arl0")]
    arl0: f64,
    /// Alert severity (default: the most severe default severity of the types).
    #[serde(default)]
    severity: Option<i64>,
    /// Fewest matching events within `min_events_within` for the chart to fire (default 3).
    #[serde(default = "default_cusum_min_events")]
    min_events: u32,
    /// The span those events must fall in (default 24 h).
    #[serde(default = "default_cusum_min_events_within", with = "humantime_serde")]
    min_events_within: Duration,
    /// Alerts a day city-wide expected under the seeded baseline (documentation the budget
    /// test enforces; validated, otherwise unused by the engine).
    #[serde(default)]
    alert_budget_per_day: Option<f64>,
}

fn default_cusum_min_events() -> u32 {
    DEFAULT_CUSUM_MIN_EVENTS
}

fn default_cusum_min_events_within() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_cusum_shift() -> f64 {
    DEFAULT_CUSUM_SHIFT
}

fn default_cusum_arl0() -> f64 {
    DEFAULT_CUSUM_ARL0
}

/// A one-sided Poisson CUSUM chart per unit and type.
#[derive(Debug, Clone, PartialEq)]
pub struct CusumRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types (one chart per unit and type), sorted, without duplicates.
    pub event_types: Vec<EventType>,
    /// Counting interval, a positive multiple of the pane size.
    pub interval_millis: i64,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// λ1 / λ0, greater than 1.
    pub shift: f64,
    /// Target in-control average run length in intervals.
    pub arl0: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
    /// Fewest matching events within `min_events_within_millis` before the chart may fire:
    /// where λ0 is near zero (a quiet community at night, a type that almost never happens)
    /// S crosses h on one or two isolated events, which is not a wave.
    pub min_events: u32,
    /// The span of that corroboration.
    pub min_events_within_millis: i64,
}

impl RuleKind for CusumRule {
    const NAME: &'static str = RULE_KIND_CUSUM;
    const LEARNS_BASELINE: bool = true;
    type Spec = CusumSpec;
    type State = CusumState;
    /// k and h per λ0 bucket: derived, so not in the snapshot.
    type Derived = CusumLimitsCache;

    fn spec_name(spec: &CusumSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: CusumSpec, validation: &mut RuleValidation<'_>) -> CusumRule {
        validation.alert_budget(spec.alert_budget_per_day);
        let event_types = validation.event_types(&spec.event_types);
        let interval_millis = validation.pane_multiple(spec.interval, "interval");
        let CusumSpec { shift, arl0, .. } = spec;
        if !(shift.is_finite() && shift > 1.0 && shift <= 100.0) {
            validation.problem(format!(
                "shift must be greater than 1 and at most 100, got {shift}"
            ));
        }
        if !(arl0.is_finite() && (MIN_CUSUM_ARL0..=MAX_CUSUM_ARL0).contains(&arl0)) {
            validation.problem(format!(
                "arl0 must be between {MIN_CUSUM_ARL0} and {MAX_CUSUM_ARL0} intervals, got {arl0}"
            ));
        }
        let severity = validation.severity(spec.severity, &event_types);
        let min_events = spec.min_events;
        if !(1..=MAX_CUSUM_MIN_EVENTS).contains(&min_events) {
            validation.problem(format!(
                "min_events must be between 1 and {MAX_CUSUM_MIN_EVENTS} (the events an alert remembers), got {min_events}"
            ));
        }
        let min_events_within_millis = crate::time::duration_millis(spec.min_events_within);
        if min_events_within_millis <= 0 {
            validation.problem("min_events_within must be positive".to_string());
        }
        CusumRule {
            name: spec.name,
            event_types,
            interval_millis,
            unit: validation.counting_scope(spec.scope),
            shift,
            arl0,
            severity,
            min_events,
            min_events_within_millis,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    fn whole_city_history_millis(&self) -> Option<i64> {
        (!evaluated_with_input(self.unit, true))
            .then_some(self.interval_millis.max(self.min_events_within_millis))
    }

    /// Counts the event in the chart of its unit and type (ignored when its interval was
    /// already folded in).
    fn on_matching_event(
        &self,
        state: &mut CusumState,
        _derived: &mut CusumLimitsCache,
        event: &MatchingEvent<'_>,
        _out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let Some(unit_key) = event.unit_key(self.unit) else {
            return EventOutcome::default();
        };
        let accepted_event = event.accepted_event;
        let interval_start = pane_start(accepted_event.occurred_at_millis, self.interval_millis);
        if state
            .updated_until_millis
            .get(&self.name)
            .is_some_and(|updated_until| interval_start < *updated_until)
        {
            return EventOutcome::default();
        }
        let Some(series_by_key) = state_of_rule(&mut state.series, &self.name) else {
            return EventOutcome::default();
        };
        let series = series_by_key
            .entry((unit_key, accepted_event.event_type as i32))
            .or_default();
        count_matching_event(
            &mut series.interval_counts,
            interval_start,
            &mut series.recent_events,
            series.alert.firing.as_mut(),
            accepted_event,
        );
        EventOutcome::default()
    }

    const EVENTS_BRING_DUE_FORWARD: bool = false;

    /// The first interval end a chart has not been updated through (at once for a rule whose
    /// charts have not started). `on_watermark`, which this follows, has already resolved and
    /// dropped the state of rules no longer in the set.
    fn next_due_millis(
        state: &CusumState,
        _derived: &CusumLimitsCache,
        rules: &RuleSet,
        partial_input: bool,
    ) -> i64 {
        rules
            .rules_of_kind::<CusumRule>()
            .filter(|rule| evaluated_with_input(rule.unit, partial_input))
            .map(|rule| {
                state
                    .updated_until_millis
                    .get(&rule.name)
                    .map_or(i64::MIN, |updated_until| {
                        first_watermark_past(Some(*updated_until), rule.interval_millis)
                    })
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    fn on_watermark(
        state: &mut CusumState,
        derived: &mut CusumLimitsCache,
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        on_watermark(
            state,
            watermark.rules,
            &watermark.baseline,
            derived,
            watermark.watermark_millis,
            watermark.partial_input,
            out,
        );
    }

    fn remove_rule(state: &mut CusumState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        remove_series_of_rule(&mut state.series, rule_name, firing);
        state.updated_until_millis.remove(rule_name);
    }

    fn check_state_bounds(
        state: &Self::State,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        super::series::check_series_bounds(&state.series, "cusum rules", shape)
    }

    fn collect_firing<'state>(
        state: &'state CusumState,
        firing: &mut Vec<&'state AlertOccurrence>,
    ) {
        collect_firing_series(&state.series, firing);
    }
}

/// Default fewest events within `min_events_within` before a chart may fire.
pub const DEFAULT_CUSUM_MIN_EVENTS: u32 = 3;
/// Largest `min_events`: the chart remembers this many recent events.
pub const MAX_CUSUM_MIN_EVENTS: u32 = super::alert::MAX_ALERT_EVENT_IDS as u32;

/// Smallest λ0 a chart uses (events per interval).
pub const MIN_CUSUM_EXPECTED: f64 = 1e-4;
/// Most intervals one watermark advance updates.
pub const MAX_CATCH_UP_INTERVALS: i64 = 2_000;
/// λ0 buckets per decade.
const BUCKETS_PER_DECADE: f64 = 20.0;

/// Mutable state of all CUSUM rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    /// Charts by rule name, then by (unit, `EventType as i32`).
    pub series: SeriesByRule<(u32, i32), CusumSeries>,
    /// Per rule name: the end of the last interval the charts were updated with.
    pub updated_until_millis: BTreeMap<String, i64>,
    /// Hourly expectations already computed (a memo, not in the snapshot).
    #[serde(skip)]
    pub expectations: ExpectationCache,
}

/// One (rule, unit, type) chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumSeries {
    /// Matching events per interval start, for intervals not yet folded into the chart.
    pub interval_counts: BTreeMap<i64, u32>,
    /// The CUSUM statistic S.
    pub statistic: f64,
    /// h of the interval S was last compared with (0 before the first update): S is rescaled
    /// by h_new / h_old when the baseline moves to another bucket.
    pub last_decision_interval: f64,
    /// The most recent matching events, for the alert's event ids.
    pub recent_events: Vec<RecentEvent>,
    /// The chart's alert.
    pub alert: AlertLifecycle,
}

impl AlertingSeries for CusumSeries {
    fn alert(&self) -> &AlertLifecycle {
        &self.alert
    }
}

/// k and h of one λ0 bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CusumLimits {
    /// The bucket's representative λ0.
    pub lambda0: f64,
    /// Reference value k (rounded to the lattice a/r, within 0.5% of the formula).
    pub reference: f64,
    /// Decision interval h.
    pub decision_interval: f64,
    /// The in-control ARL of (k, h) by the Brook–Evans chain: at least the target, and above
    /// it by the discreteness step of Poisson counts (ARL jumps where h + k crosses an
    /// integer, so the target cannot always be met exactly).
    pub in_control_arl: f64,
}

/// Cache of [`CusumLimits`] by (shift bits, arl0 bits, λ0 bucket): derived, not snapshotted.
#[derive(Debug, Clone, Default)]
pub struct CusumLimitsCache {
    /// The computed limits.
    limits: BTreeMap<(u64, u64, i64), CusumLimits>,
}

impl CusumLimitsCache {
    /// The limits for λ0 (bucketed), computing them on first use. `None` for invalid input.
    pub fn limits(&mut self, lambda0: f64, shift: f64, arl0: f64) -> Option<CusumLimits> {
        if !(lambda0.is_finite() && lambda0 > 0.0) {
            return None;
        }
        let bucket = (lambda0.log10() * BUCKETS_PER_DECADE).round() as i64;
        let key = (shift.to_bits(), arl0.to_bits(), bucket);
        if let Some(limits) = self.limits.get(&key) {
            return Some(*limits);
        }
        let representative = 10f64.powf(bucket as f64 / BUCKETS_PER_DECADE);
        let exact_reference = cusum_reference_value(representative, shift * representative)?;
        let lattice = Lattice::for_reference(exact_reference)?;
        let (alarm_state, in_control_arl) = alarm_state_for_arl(representative, lattice, arl0)?;
        let limits = CusumLimits {
            lambda0: representative,
            reference: lattice.reference(),
            decision_interval: alarm_state as f64 / lattice.per_event as f64,
            in_control_arl,
        };
        self.limits.insert(key, limits);
        Some(limits)
    }

    /// Number of cached buckets.
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

/// Largest lattice denominator r tried when rationalizing k.
const MAX_LATTICE_DENOMINATOR: i64 = 1_000_000;
/// Relative error allowed when rounding k to a/r.
const LATTICE_TOLERANCE: f64 = 0.005;
/// Chains with at most this many states are solved densely; larger ones by shooting.
const MAX_DENSE_STATES: usize = 150;
/// Most states a chain may have (bounds memory and time).
const MAX_CHAIN_STATES: i64 = 200_000;

/// k rounded to a rational a/r (a ≥ 1, relative error ≤ 0.5%): with S measured in units of
/// 1/r the chart moves on the integers, so its Markov chain is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lattice {
    /// Numerator a: the downward step per interval, in units of 1/r.
    pub step_down: i64,
    /// Denominator r: lattice points per event.
    pub per_event: i64,
}

impl Lattice {
    /// The lattice for reference value `reference` (> 0).
    pub fn for_reference(reference: f64) -> Option<Lattice> {
        if !(reference.is_finite() && reference > 0.0) {
            return None;
        }
        (1..=MAX_LATTICE_DENOMINATOR).find_map(|per_event| {
            let step_down = (reference * per_event as f64).round().max(1.0);
            let rounded = step_down / per_event as f64;
            ((rounded - reference).abs() <= LATTICE_TOLERANCE * reference).then_some(Lattice {
                step_down: step_down as i64,
                per_event,
            })
        })
    }

    /// The rounded reference value a/r.
    pub fn reference(&self) -> f64 {
        self.step_down as f64 / self.per_event as f64
    }
}

/// Poisson probabilities P(X = x) for x in 0..len (computed in logs: no underflow of e^{−λ}).
fn poisson_pmf_table(lambda: f64, len: usize) -> Vec<f64> {
    let mut table = Vec::with_capacity(len);
    let mut log_pmf = -lambda;
    for x in 0..len {
        if x > 0 {
            log_pmf += lambda.ln() - (x as f64).ln();
        }
        table.push(log_pmf.exp());
    }
    table
}

/// In-control ARL (intervals, starting from S = 0) of the chart on `lattice` that alarms at
/// S ≥ `alarm_state`/r, under Poisson(`lambda0`): the exact Markov chain (Brook & Evans) on
/// the lattice states 0..alarm_state.
pub fn lattice_average_run_length(lambda0: f64, lattice: Lattice, alarm_state: i64) -> Option<f64> {
    if !(lambda0.is_finite() && lambda0 > 0.0 && (1..=MAX_CHAIN_STATES).contains(&alarm_state)) {
        return None;
    }
    let state_count = usize::try_from(alarm_state).ok()?;
    let per_event = lattice.per_event;
    let step_down = lattice.step_down;
    // Largest count that can keep the chart below the alarm from state 0... or any state.
    let max_count = (alarm_state + step_down) / per_event + 2;
    let pmf = poisson_pmf_table(lambda0, usize::try_from(max_count).ok()?);
    // Successor of state i after a count x (None: alarm).
    let successor = |state: i64, count: i64| -> Option<usize> {
        let next = (state - step_down + per_event * count).max(0);
        if next >= alarm_state {
            return None;
        }
        usize::try_from(next).ok()
    };
    let arl = if state_count <= MAX_DENSE_STATES || step_down as usize >= state_count {
        dense_run_length(state_count, &pmf, successor)?
    } else {
        shooting_run_length(state_count, step_down, per_event, &pmf)?
    };
    arl.is_finite().then_some(arl).filter(|value| *value >= 1.0)
}

/// ARL from state 0 by solving (I − R)·L = 1 densely.
fn dense_run_length(
    state_count: usize,
    pmf: &[f64],
    successor: impl Fn(i64, i64) -> Option<usize>,
) -> Option<f64> {
    if state_count > 4 * MAX_DENSE_STATES {
        return None;
    }
    let mut matrix = vec![0.0; state_count * state_count];
    for from in 0..state_count {
        if let Some(slot) = matrix.get_mut(from * state_count + from) {
            *slot += 1.0;
        }
        for (count, probability) in pmf.iter().enumerate() {
            let Some(to) = successor(from as i64, count as i64) else {
                continue;
            };
            if let Some(slot) = matrix.get_mut(from * state_count + to) {
                *slot -= probability;
            }
        }
    }
    let solution = solve_linear_system(&mut matrix, vec![1.0; state_count])?;
    solution.first().copied()
}

/// ARL from state 0 by shooting: every L_i is affine in the unknown top `a` values, computed
/// downward from the chain's equations (L_{i−a} from the equation of state i), then the `a`
/// equations of the lowest states fix the unknowns. Stable when P(X = 0) is not small, which
/// holds where it is used (many states means a small k, hence a small λ0).
fn shooting_run_length(
    state_count: usize,
    step_down: i64,
    per_event: i64,
    pmf: &[f64],
) -> Option<f64> {
    let unknowns = usize::try_from(step_down).ok()?;
    if unknowns == 0 || unknowns > 16 || unknowns >= state_count {
        return None;
    }
    let zero_probability = pmf.first().copied()?;
    if zero_probability < 1e-3 {
        return None;
    }
    let per_event_usize = usize::try_from(per_event).ok()?;
    // L_i = constant[i] + Σ_m coefficients[i·unknowns + m] · t_m.
    let mut constant = vec![0.0; state_count];
    let mut coefficients = vec![0.0; state_count * unknowns];
    for unknown in 0..unknowns {
        let state = state_count - unknowns + unknown;
        if let Some(slot) = coefficients.get_mut(state * unknowns + unknown) {
            *slot = 1.0;
        }
    }
    let mut row = vec![0.0; unknowns];
    for state in (unknowns..state_count).rev() {
        let target = state - unknowns;
        // L_target = (L_state − 1 − Σ_{x≥1} p_x L_{target + r·x}) / p_0.
        let mut value = constant.get(state).copied()? - 1.0;
        row.copy_from_slice(coefficients.get(state * unknowns..(state + 1) * unknowns)?);
        let mut count = 1;
        while let Some(probability) = pmf.get(count) {
            let Some(next) = target.checked_add(per_event_usize.checked_mul(count)?) else {
                break;
            };
            if next >= state_count {
                break;
            }
            value -= probability * constant.get(next).copied()?;
            for (slot, coefficient) in row
                .iter_mut()
                .zip(coefficients.get(next * unknowns..(next + 1) * unknowns)?)
            {
                *slot -= probability * coefficient;
            }
            count += 1;
        }
        if let Some(slot) = constant.get_mut(target) {
            *slot = value / zero_probability;
        }
        for (slot, coefficient) in coefficients
            .get_mut(target * unknowns..(target + 1) * unknowns)?
            .iter_mut()
            .zip(&row)
        {
            *slot = coefficient / zero_probability;
        }
    }
    // The equations of states 0..a: L_i − Σ_x p_x L_{max(0, i − a + r·x)} = 1.
    let mut system = vec![0.0; unknowns * unknowns];
    let mut right_hand_side = vec![0.0; unknowns];
    for state in 0..unknowns {
        let mut constant_part = constant.get(state).copied()?;
        let mut row_part: Vec<f64> = coefficients
            .get(state * unknowns..(state + 1) * unknowns)?
            .to_vec();
        for (count, probability) in pmf.iter().enumerate() {
            let next = (state as i64 - step_down + per_event * count as i64).max(0);
            let Ok(next) = usize::try_from(next) else {
                continue;
            };
            if next >= state_count {
                break;
            }
            constant_part -= probability * constant.get(next).copied()?;
            for (slot, coefficient) in row_part
                .iter_mut()
                .zip(coefficients.get(next * unknowns..(next + 1) * unknowns)?)
            {
                *slot -= probability * coefficient;
            }
        }
        system
            .get_mut(state * unknowns..(state + 1) * unknowns)?
            .copy_from_slice(&row_part);
        if let Some(slot) = right_hand_side.get_mut(state) {
            *slot = 1.0 - constant_part;
        }
    }
    let unknown_values = solve_linear_system(&mut system, right_hand_side)?;
    let mut arl = constant.first().copied()?;
    for (coefficient, value) in coefficients.get(..unknowns)?.iter().zip(&unknown_values) {
        arl += coefficient * value;
    }
    Some(arl)
}

/// The smallest alarm state H (h = H/r) whose in-control ARL is at least `target_arl`, with
/// that ARL; `None` if none is found within the chain size limit.
pub fn alarm_state_for_arl(lambda0: f64, lattice: Lattice, target_arl: f64) -> Option<(i64, f64)> {
    let mut low = 0_i64; // ARL(low) < target (ARL(0) is 1 by convention).
    let mut high = lattice.per_event.max(1);
    let mut high_arl = lattice_average_run_length(lambda0, lattice, high)?;
    while high_arl < target_arl {
        low = high;
        high = high.checked_mul(2)?;
        if high > MAX_CHAIN_STATES {
            return None;
        }
        high_arl = lattice_average_run_length(lambda0, lattice, high)?;
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        let middle_arl = lattice_average_run_length(lambda0, lattice, middle)?;
        if middle_arl < target_arl {
            low = middle;
        } else {
            high = middle;
            high_arl = middle_arl;
        }
    }
    Some((high, high_arl))
}

/// Gaussian elimination with partial pivoting on a square row-major system.
fn solve_linear_system(matrix: &mut [f64], mut right_hand_side: Vec<f64>) -> Option<Vec<f64>> {
    let size = right_hand_side.len();
    if matrix.len() != size * size {
        return None;
    }
    for column in 0..size {
        let pivot_row = (column..size).max_by(|left, right| {
            let left_value = matrix
                .get(left * size + column)
                .copied()
                .unwrap_or(0.0)
                .abs();
            let right_value = matrix
                .get(right * size + column)
                .copied()
                .unwrap_or(0.0)
                .abs();
            left_value.total_cmp(&right_value)
        })?;
        let pivot = matrix.get(pivot_row * size + column).copied()?;
        if pivot.abs() < 1e-300 {
            return None;
        }
        if pivot_row != column {
            for index in 0..size {
                matrix.swap(column * size + index, pivot_row * size + index);
            }
            right_hand_side.swap(column, pivot_row);
        }
        // The pivot row's tail and the rows below it, as slices: the update is a loop over two
        // slices (no index arithmetic or bounds check per element), the same operations in the
        // same order as element by element, so the same values.
        let (through_pivot_row, below_pivot_row) = matrix.split_at_mut((column + 1) * size);
        let pivot_tail = through_pivot_row.get(column * size + column..)?;
        let above_rhs = right_hand_side.get(column).copied()?;
        for (row_offset, row_values) in below_pivot_row.chunks_exact_mut(size).enumerate() {
            let row_tail = row_values.get_mut(column..)?;
            let factor = row_tail.first().copied()? / pivot;
            if factor == 0.0 {
                continue;
            }
            for (slot, above) in row_tail.iter_mut().zip(pivot_tail) {
                *slot -= factor * above;
            }
            if let Some(slot) = right_hand_side.get_mut(column + 1 + row_offset) {
                *slot -= factor * above_rhs;
            }
        }
    }
    let mut solution = vec![0.0; size];
    for row in (0..size).rev() {
        let mut value = right_hand_side.get(row).copied()?;
        for index in (row + 1)..size {
            value -= matrix.get(row * size + index).copied()? * solution.get(index).copied()?;
        }
        let diagonal = matrix.get(row * size + row).copied()?;
        if let Some(slot) = solution.get_mut(row) {
            *slot = value / diagonal;
        }
    }
    Some(solution)
}

/// Updates every chart with the intervals the watermark completed; appends FIRING and
/// RESOLVED alerts in unspecified order. Charts of rules no longer in `rules` resolve at the watermark and are
/// forgotten.
fn on_watermark(
    state: &mut CusumState,
    rules: &RuleSet,
    baseline: &BaselineView<'_>,
    cache: &mut CusumLimitsCache,
    watermark_millis: i64,
    partial_input: bool,
    out: &mut Vec<Alert>,
) {
    state.series.retain(|rule_name, series_by_key| {
        if rules.rule_of_kind::<CusumRule>(rule_name).is_some() {
            return true;
        }
        for series in series_by_key.values_mut() {
            series
                .alert
                .resolve_no_earlier_than_last_update(watermark_millis, out);
        }
        false
    });
    state
        .updated_until_millis
        .retain(|rule_name, _| rules.rule_of_kind::<CusumRule>(rule_name).is_some());
    for rule in rules.rules_of_kind::<CusumRule>() {
        if !evaluated_with_input(rule.unit, partial_input) {
            continue;
        }
        let completed_until = pane_start(watermark_millis, rule.interval_millis);
        let Some(updated_until) = state.updated_until_millis.get(&rule.name).copied() else {
            state
                .updated_until_millis
                .insert(rule.name.clone(), completed_until);
            continue;
        };
        if completed_until <= updated_until {
            continue;
        }
        let earliest_start = completed_until
            .saturating_sub(MAX_CATCH_UP_INTERVALS.saturating_mul(rule.interval_millis));
        let mut interval_start = updated_until.max(earliest_start);
        let series_by_key = state.series.entry(rule.name.clone()).or_default();
        while interval_start < completed_until {
            let interval_end = interval_start.saturating_add(rule.interval_millis);
            update_charts(
                rule,
                series_by_key,
                baseline,
                ChartCaches {
                    limits: cache,
                    expectations: &mut state.expectations,
                },
                interval_start,
                interval_end,
                out,
            );
            interval_start = interval_end;
        }
        series_by_key.retain(|_, series| {
            series.interval_counts = series.interval_counts.split_off(&completed_until);
            series.alert.is_firing() || series.statistic > 0.0 || !series.interval_counts.is_empty()
        });
        if series_by_key.is_empty() {
            state.series.remove(&rule.name);
        }
        state
            .updated_until_millis
            .insert(rule.name.clone(), completed_until);
    }
}

/// What an interval's chart updates compute once and reuse.
struct ChartCaches<'cache> {
    /// k and h per λ0 bucket.
    limits: &'cache mut CusumLimitsCache,
    /// Hourly expectations.
    expectations: &'cache mut ExpectationCache,
}

fn update_charts(
    rule: &CusumRule,
    series_by_key: &mut BTreeMap<(u32, i32), CusumSeries>,
    baseline: &BaselineView<'_>,
    caches: ChartCaches<'_>,
    interval_start: i64,
    interval_end: i64,
    out: &mut Vec<Alert>,
) {
    let mut expectations = baseline.checked_memo(caches.expectations);
    for (key, series) in series_by_key.iter_mut() {
        let count = series
            .interval_counts
            .get(&interval_start)
            .copied()
            .unwrap_or(0);
        if count == 0 && series.statistic <= 0.0 && !series.alert.is_firing() {
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
                interval_start,
                interval_end,
            )
            .max(MIN_CUSUM_EXPECTED);
        let Some(limits) = caches.limits.limits(expected, rule.shift, rule.arl0) else {
            continue;
        };
        if series.last_decision_interval > 0.0
            && series.last_decision_interval != limits.decision_interval
        {
            series.statistic *= limits.decision_interval / series.last_decision_interval;
        }
        series.last_decision_interval = limits.decision_interval;
        series.statistic = (series.statistic + f64::from(count) - limits.reference).max(0.0);
        match &mut series.alert.firing {
            Some(firing) => {
                if series.statistic <= 0.0 {
                    series
                        .alert
                        .resolve_no_earlier_than_last_update(interval_end, out);
                } else {
                    firing.observed = firing.observed.max(series.statistic);
                }
            }
            None => {
                if series.statistic < limits.decision_interval {
                    continue;
                }
                let corroborating = series
                    .recent_events
                    .iter()
                    .filter(|recent| {
                        recent.occurred_at_millis < interval_end
                            && recent.occurred_at_millis
                                >= interval_end.saturating_sub(rule.min_events_within_millis)
                    })
                    .count();
                if corroborating < rule.min_events as usize {
                    continue;
                }
                let Some(labels) = unit_labels(baseline.registry, rule.unit, key.0) else {
                    continue;
                };
                let starts_at_millis = series.alert.next_start_millis(interval_end);
                let alert_fingerprint =
                    fingerprint(&rule.name, labels.location(), event_type.as_str_name());
                let occurrence = AlertOccurrence {
                    alert_id: alert_id(&alert_fingerprint, starts_at_millis),
                    fingerprint: alert_fingerprint,
                    rule: rule.name.clone(),
                    rule_kind: CusumRule::NAME.to_string(),
                    grid_id: labels.grid_id.to_string(),
                    community_id: labels.community_id.to_string(),
                    district_id: labels.district_id.to_string(),
                    event_type: key.1,
                    severity: u32::from(rule.severity),
                    starts_at_millis,
                    updated_at_millis: starts_at_millis,
                    observed: series.statistic,
                    threshold: limits.decision_interval,
                    expected,
                    p_value: 0.0,
                    event_ids: event_ids_before(&series.recent_events, interval_end),
                    device_id: String::new(),
                    scope: rule.unit,
                    window_millis: rule.interval_millis,
                    baseline_weeks: baseline.learned_weeks(
                        rule.unit,
                        event_type,
                        interval_end.saturating_sub(rule.interval_millis),
                        interval_end,
                    ),
                    cluster_community_ids: Vec::new(),
                };
                series.alert.fire(occurrence, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Poisson};

    /// Mean run length until S ≥ h over `runs` simulated in-control runs.
    fn simulated_arl(lambda0: f64, limits: &CusumLimits, runs: usize, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let poisson = Poisson::new(lambda0).expect("valid rate");
        let mut total: u64 = 0;
        for _ in 0..runs {
            let mut statistic = 0.0_f64;
            let mut length: u64 = 0;
            loop {
                length += 1;
                let count: f64 = poisson.sample(&mut rng);
                statistic = (statistic + count - limits.reference).max(0.0);
                if statistic >= limits.decision_interval {
                    break;
                }
            }
            total += length;
        }
        total as f64 / runs as f64
    }

    #[test]
    fn cusum_h_gives_the_target_in_control_arl() {
        // Target 400 intervals (smaller than the default 2000 to keep the test fast); 700 runs
        // give a standard error of about 4%, the tolerance is 15%. The chain's ARL at the
        // chosen h is at least the target and, for these rates, at most 1.5 × the target
        // (Poisson discreteness: see `CusumLimits::in_control_arl`).
        let target = 400.0;
        let mut cache = CusumLimitsCache::default();
        for (index, lambda0) in [0.001_f64, 0.05, 0.3, 1.0, 4.0, 12.0]
            .into_iter()
            .enumerate()
        {
            let limits = cache.limits(lambda0, 2.0, target).expect("limits");
            // Alarming on the first event is the shortest possible ARL: 1 / P(X ≥ 1).
            let first_event_arl = 1.0 / (1.0 - (-limits.lambda0).exp());
            assert!(
                limits.in_control_arl >= target
                    && limits.in_control_arl <= (1.5 * target).max(1.01 * first_event_arl),
                "λ0 = {lambda0}: chain ARL {} for target {target}",
                limits.in_control_arl
            );
            let empirical = simulated_arl(limits.lambda0, &limits, 700, 7 + index as u64);
            assert!(
                (empirical / limits.in_control_arl - 1.0).abs() <= 0.15,
                "λ0 = {lambda0}: h = {}, empirical ARL {empirical}, chain ARL {}",
                limits.decision_interval,
                limits.in_control_arl
            );
        }
    }

    #[test]
    fn average_run_length_grows_with_h() {
        let reference = cusum_reference_value(1.0, 2.0).expect("k");
        let lattice = Lattice::for_reference(reference).expect("lattice");
        assert!((lattice.reference() / reference - 1.0).abs() <= 0.005);
        let short = lattice_average_run_length(1.0, lattice, 2 * lattice.per_event).expect("arl");
        let long = lattice_average_run_length(1.0, lattice, 6 * lattice.per_event).expect("arl");
        assert!(short < long, "{short} < {long}");
        assert!(short >= 1.0);
    }

    #[test]
    fn dense_and_shooting_solutions_agree() {
        // A small λ0 whose chain fits both methods.
        let lambda0 = 0.02;
        let lattice =
            Lattice::for_reference(cusum_reference_value(lambda0, 2.0 * lambda0).expect("k"))
                .expect("lattice");
        let states = 120_usize;
        let pmf = poisson_pmf_table(lambda0, 10);
        let successor = |state: i64, count: i64| -> Option<usize> {
            let next = (state - lattice.step_down + lattice.per_event * count).max(0);
            if next >= states as i64 {
                return None;
            }
            usize::try_from(next).ok()
        };
        let dense = dense_run_length(states, &pmf, successor).expect("dense");
        let shooting =
            shooting_run_length(states, lattice.step_down, lattice.per_event, &pmf).expect("shoot");
        assert!(
            (dense / shooting - 1.0).abs() < 1e-9,
            "{dense} vs {shooting}"
        );
    }

    #[test]
    fn limits_are_cached_per_bucket() {
        let mut cache = CusumLimitsCache::default();
        let first = cache.limits(1.0, 2.0, 2000.0).expect("limits");
        let nearby = cache.limits(1.02, 2.0, 2000.0).expect("limits");
        assert_eq!(first, nearby);
        assert_eq!(cache.len(), 1);
        assert!(cache.limits(0.0, 2.0, 2000.0).is_none());
        assert!(first.decision_interval > 0.0);
    }
}
