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
//! and the chart fires when S_t ≥ h. λ0 changes with the hour of week, so k and h are computed
//! per λ0 *bucket*: λ0 is rounded to the nearest of 20 log-spaced values per decade (about 12%
//! apart) and the bucket's representative λ0 gives k and h, cached for the process (not
//! snapshotted: derived). `expected` on the alert is the unrounded λ0.
//!
//! # Choosing h (Brook & Evans)
//!
//! h is the decision interval whose in-control average run length (ARL, in intervals) is the
//! rule's `arl0` (default 2000; at 15-minute intervals that is one false alarm per chart per
//! ~21 days). The ARL of a given h is computed with the Markov-chain approximation of Brook &
//! Evans (1972): the state S is discretized into an atom at 0 and [`CHAIN_STATES`] intervals of
//! width h/N on (0, h], each represented by its midpoint; the transition probabilities are
//! Poisson(λ0) probabilities of the jumps between them, and ARL = ((I − R)⁻¹·1)₀ with R the
//! transitions among the non-absorbing states. ARL grows with h, so h is found by bisection
//! (relative precision 1e-4). The test `cusum_h_gives_the_target_in_control_arl` simulates
//! in-control Poisson streams and checks the empirical ARL is within 15% of the target.
//!
//! # Lifecycle
//!
//! - FIRING at the interval end where S_t ≥ h: `observed` = S_t, `threshold` = h, `expected`
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
//! The default community-scope fraud CUSUM (15-minute intervals, shift 2, ARL0 2000) detects a
//! ×10 fraud wave in one community within 8 intervals (2 h), and raises no false alarm over a
//! simulated normal week of 10 communities.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, push_capped_event_id, AlertOccurrence, RULE_KIND_CUSUM};
use super::baseline::BaselineView;
use super::ruleset::{CusumRule, Rule, RuleSet};
use super::statistics::cusum_reference_value;
use super::threshold::{pane_start, remember_recent_event, RecentEvent};
use super::unit_labels;
use crate::event::AcceptedEvent;
use crate::proto::{Alert, EventType};

/// Smallest λ0 a chart uses (events per interval).
pub const MIN_CUSUM_EXPECTED: f64 = 1e-4;
/// States of the Brook–Evans chain (besides the atom at 0).
pub const CHAIN_STATES: usize = 80;
/// Most intervals one watermark advance updates.
pub const MAX_CATCH_UP_INTERVALS: i64 = 2_000;
/// λ0 buckets per decade.
const BUCKETS_PER_DECADE: f64 = 20.0;

/// Mutable state of all CUSUM rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    /// Charts by rule name, then by (unit, `EventType as i32`).
    pub series: BTreeMap<String, BTreeMap<(u32, i32), CusumSeries>>,
    /// Per rule name: the end of the last interval the charts were updated with.
    pub updated_until_millis: BTreeMap<String, i64>,
}

/// One (rule, unit, type) chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumSeries {
    /// Matching events per interval start, for intervals not yet folded into the chart.
    pub interval_counts: BTreeMap<i64, u32>,
    /// The CUSUM statistic S.
    pub statistic: f64,
    /// The most recent matching events, for the alert's event ids.
    pub recent_events: Vec<RecentEvent>,
    /// The firing alert, if any.
    pub firing: Option<AlertOccurrence>,
    /// `ends_at` of the last resolved occurrence: the next starts no earlier.
    pub previous_ends_at_millis: Option<i64>,
}

/// k and h of one λ0 bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CusumLimits {
    /// The bucket's representative λ0.
    pub lambda0: f64,
    /// Reference value k.
    pub reference: f64,
    /// Decision interval h.
    pub decision_interval: f64,
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
        let reference = cusum_reference_value(representative, shift * representative)?;
        let decision_interval = decision_interval_for_arl(representative, reference, arl0)?;
        let limits = CusumLimits {
            lambda0: representative,
            reference,
            decision_interval,
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

/// Poisson CDF table P(X ≤ x) for x in 0..len.
fn poisson_cdf_table(lambda: f64, len: usize) -> Vec<f64> {
    let mut table = Vec::with_capacity(len);
    // Work in logs so that a large λ does not underflow e^{−λ}.
    let mut log_pmf = -lambda;
    let mut cumulative = 0.0;
    for x in 0..len {
        if x > 0 {
            log_pmf += lambda.ln() - (x as f64).ln();
        }
        cumulative += log_pmf.exp();
        table.push(cumulative.min(1.0));
    }
    table
}

/// In-control ARL (intervals) of the chart with reference `reference` and decision interval
/// `decision_interval` under Poisson(`lambda0`), by the Brook–Evans chain.
pub fn average_run_length(lambda0: f64, reference: f64, decision_interval: f64) -> Option<f64> {
    if !(lambda0 > 0.0 && reference >= 0.0 && decision_interval > 0.0) {
        return None;
    }
    let state_count = CHAIN_STATES + 1;
    let width = decision_interval / CHAIN_STATES as f64;
    // Largest count that can matter: a jump from 0 to beyond h.
    let table_len = (decision_interval + reference).ceil() as usize + 2;
    let cdf_table = poisson_cdf_table(lambda0, table_len);
    let cdf = |bound: f64| -> f64 {
        if bound < 0.0 {
            return 0.0;
        }
        let index = bound.floor() as usize;
        cdf_table.get(index).copied().unwrap_or(1.0)
    };
    let value_of = |state: usize| -> f64 {
        if state == 0 {
            0.0
        } else {
            (state as f64 - 0.5) * width
        }
    };
    // Build A = I − R (row-major) and solve A·L = 1.
    let mut matrix = vec![0.0; state_count * state_count];
    for from in 0..state_count {
        let start = value_of(from);
        for to in 0..state_count {
            let probability = if to == 0 {
                cdf(reference - start)
            } else {
                let upper = to as f64 * width + reference - start;
                let lower = (to as f64 - 1.0) * width + reference - start;
                cdf(upper) - cdf(lower)
            };
            let identity = if from == to { 1.0 } else { 0.0 };
            if let Some(slot) = matrix.get_mut(from * state_count + to) {
                *slot = identity - probability;
            }
        }
    }
    let solution = solve_linear_system(&mut matrix, vec![1.0; state_count])?;
    solution.first().copied().filter(|arl| arl.is_finite())
}

/// Gaussian elimination with partial pivoting on a square row-major system.
fn solve_linear_system(matrix: &mut [f64], mut right_hand_side: Vec<f64>) -> Option<Vec<f64>> {
    let size = right_hand_side.len();
    if matrix.len() != size * size {
        return None;
    }
    for column in 0..size {
        let pivot_row = (column..size).max_by(|left, right| {
            let left_value = matrix.get(left * size + column).copied().unwrap_or(0.0).abs();
            let right_value = matrix.get(right * size + column).copied().unwrap_or(0.0).abs();
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
        for row in (column + 1)..size {
            let factor = matrix.get(row * size + column).copied()? / pivot;
            if factor == 0.0 {
                continue;
            }
            for index in column..size {
                let above = matrix.get(column * size + index).copied()?;
                if let Some(slot) = matrix.get_mut(row * size + index) {
                    *slot -= factor * above;
                }
            }
            let above_rhs = right_hand_side.get(column).copied()?;
            if let Some(slot) = right_hand_side.get_mut(row) {
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

/// The decision interval h whose in-control ARL is `target_arl` (bisection on h, relative
/// precision 1e-4); `None` if none is found below a generous bound.
pub fn decision_interval_for_arl(lambda0: f64, reference: f64, target_arl: f64) -> Option<f64> {
    let mut low = 0.0_f64;
    let mut high = 1.0_f64.max(reference);
    let upper_bound = 1_000.0 + 100.0 * lambda0;
    while average_run_length(lambda0, reference, high)? < target_arl {
        low = high;
        high *= 2.0;
        if high > upper_bound {
            return None;
        }
    }
    while high - low > 1e-4 * high {
        let middle = 0.5 * (low + high);
        if average_run_length(lambda0, reference, middle)? < target_arl {
            low = middle;
        } else {
            high = middle;
        }
    }
    Some(high)
}

/// Counts one event matched by `rule` in the chart of `unit_key` (ignored when its interval
/// was already folded in).
pub(crate) fn on_matching_event(
    state: &mut CusumState,
    rule: &CusumRule,
    accepted_event: &AcceptedEvent<'_>,
    unit_key: u32,
) {
    let interval_start = pane_start(accepted_event.occurred_at_millis, rule.interval_millis);
    if state
        .updated_until_millis
        .get(&rule.name)
        .is_some_and(|updated_until| interval_start < *updated_until)
    {
        return;
    }
    let series = state
        .series
        .entry(rule.name.clone())
        .or_default()
        .entry((unit_key, accepted_event.event_type as i32))
        .or_default();
    let count = series.interval_counts.entry(interval_start).or_insert(0);
    *count = count.saturating_add(1);
    remember_recent_event(
        &mut series.recent_events,
        accepted_event.occurred_at_millis,
        &accepted_event.event.event_id,
    );
    if let Some(firing) = &mut series.firing {
        push_capped_event_id(&mut firing.event_ids, &accepted_event.event.event_id);
    }
}

/// Updates every chart with the intervals the watermark completed; appends FIRING and
/// RESOLVED alerts in unspecified order. Charts of rules no longer in `rules` resolve at the watermark and are
/// forgotten.
pub(crate) fn on_watermark(
    state: &mut CusumState,
    rules: &RuleSet,
    baseline: &BaselineView<'_>,
    cache: &mut CusumLimitsCache,
    watermark_millis: i64,
    out: &mut Vec<Alert>,
) {
    state.series.retain(|rule_name, series_by_key| {
        if matches!(rules.rule(rule_name), Some(Rule::Cusum(_))) {
            return true;
        }
        for series in series_by_key.values() {
            if let Some(firing) = &series.firing {
                out.push(firing.resolved_alert(watermark_millis.max(firing.updated_at_millis)));
            }
        }
        false
    });
    state
        .updated_until_millis
        .retain(|rule_name, _| matches!(rules.rule(rule_name), Some(Rule::Cusum(_))));
    for rule in rules.rules() {
        let Rule::Cusum(rule) = rule else {
            continue;
        };
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
                cache,
                interval_start,
                interval_end,
                out,
            );
            interval_start = interval_end;
        }
        series_by_key.retain(|_, series| {
            series.interval_counts = series.interval_counts.split_off(&completed_until);
            series.firing.is_some() || series.statistic > 0.0 || !series.interval_counts.is_empty()
        });
        if series_by_key.is_empty() {
            state.series.remove(&rule.name);
        }
        state
            .updated_until_millis
            .insert(rule.name.clone(), completed_until);
    }
}

fn update_charts(
    rule: &CusumRule,
    series_by_key: &mut BTreeMap<(u32, i32), CusumSeries>,
    baseline: &BaselineView<'_>,
    cache: &mut CusumLimitsCache,
    interval_start: i64,
    interval_end: i64,
    out: &mut Vec<Alert>,
) {
    for (key, series) in series_by_key.iter_mut() {
        let count = series
            .interval_counts
            .get(&interval_start)
            .copied()
            .unwrap_or(0);
        if count == 0 && series.statistic <= 0.0 && series.firing.is_none() {
            continue;
        }
        let Some(event_type) = EventType::try_from(key.1).ok() else {
            continue;
        };
        let expected = baseline
            .expected_count(rule.unit, key.0, event_type, interval_start, interval_end)
            .max(MIN_CUSUM_EXPECTED);
        let Some(limits) = cache.limits(expected, rule.shift, rule.arl0) else {
            continue;
        };
        series.statistic = (series.statistic + f64::from(count) - limits.reference).max(0.0);
        match &mut series.firing {
            Some(firing) => {
                if series.statistic <= 0.0 {
                    let ends_at_millis = interval_end.max(firing.updated_at_millis);
                    out.push(firing.resolved_alert(ends_at_millis));
                    series.previous_ends_at_millis = Some(ends_at_millis);
                    series.firing = None;
                } else {
                    firing.observed = firing.observed.max(series.statistic);
                }
            }
            None => {
                if series.statistic < limits.decision_interval {
                    continue;
                }
                let Some(labels) = unit_labels(baseline.registry, rule.unit, key.0) else {
                    continue;
                };
                let starts_at_millis = series
                    .previous_ends_at_millis
                    .map_or(interval_end, |ends_at_millis| ends_at_millis.max(interval_end));
                let alert_fingerprint =
                    fingerprint(&rule.name, labels.location(), event_type.as_str_name());
                let occurrence = AlertOccurrence {
                    alert_id: alert_id(&alert_fingerprint, starts_at_millis),
                    fingerprint: alert_fingerprint,
                    rule: rule.name.clone(),
                    rule_kind: RULE_KIND_CUSUM.to_string(),
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
                    event_ids: series
                        .recent_events
                        .iter()
                        .filter(|recent| recent.occurred_at_millis < interval_end)
                        .map(|recent| recent.event_id.clone())
                        .collect(),
                    device_id: String::new(),
                };
                out.push(occurrence.firing_alert());
                series.firing = Some(occurrence);
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
        // give a standard error of about 4%, the tolerance is 15%.
        let target = 400.0;
        let mut cache = CusumLimitsCache::default();
        for (index, lambda0) in [0.3_f64, 1.0, 4.0, 12.0].into_iter().enumerate() {
            let limits = cache.limits(lambda0, 2.0, target).expect("limits");
            let empirical = simulated_arl(limits.lambda0, &limits, 700, 7 + index as u64);
            assert!(
                (empirical / target - 1.0).abs() <= 0.15,
                "λ0 = {lambda0}: h = {}, empirical ARL {empirical}, target {target}",
                limits.decision_interval
            );
        }
    }

    #[test]
    fn average_run_length_grows_with_h() {
        let reference = cusum_reference_value(1.0, 2.0).expect("k");
        let short = average_run_length(1.0, reference, 2.0).expect("arl");
        let long = average_run_length(1.0, reference, 6.0).expect("arl");
        assert!(short < long, "{short} < {long}");
        assert!(short >= 1.0);
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
