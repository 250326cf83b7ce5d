//! The statistics behind the statistical rules: Poisson tail probabilities (through `statrs`'s
//! regularized incomplete gamma function), Benjamini–Hochberg decisions, critical counts and
//! the Poisson CUSUM reference value.
//!
//! All functions are total: invalid inputs (NaN, negative rates) give conservative answers
//! (probability 1, nothing rejected) instead of panicking. The values are checked against
//! SciPy in `tests/fixtures/stats/` (see `gen_fixtures.py` there).

use statrs::function::gamma::checked_gamma_lr;

/// P(X ≥ `count`) for X ~ Poisson(`lambda`).
///
/// Uses P(X ≥ x) = P(x, λ), the regularized lower incomplete gamma function, which keeps its
/// relative accuracy deep in the upper tail (no `1 − cdf` cancellation). `count` 0 gives 1; a
/// non-positive or non-finite `lambda` is a degenerate distribution at 0 (so any positive
/// count gives 0) except NaN, which gives 1 (never alert on garbage).
pub fn poisson_upper_tail(lambda: f64, count: u64) -> f64 {
    if count == 0 || lambda.is_nan() {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda.is_infinite() {
        return 1.0;
    }
    match checked_gamma_lr(count as f64, lambda) {
        Ok(probability) if probability.is_finite() => probability.clamp(0.0, 1.0),
        _ => 1.0,
    }
}

/// Whether P(X ≥ `count`) for X ~ Poisson(`lambda`) is certainly above `level`, decided
/// without the incomplete gamma function: the tail holds at least the mass of `count` itself,
/// P(X = c) = exp(c·ln λ − λ − ln c!), two logarithms (ln c! from statrs's table of
/// factorials). A test above the level of every decision made with it need not know its exact
/// p-value: a spike rule tests every series with events at every pane, nearly all of them far
/// from significant (a 1 M-event replay of the simulator: 261,365 tests, the tails' instructions
/// 134.5 M, with this bound first 63.2 M). The margin is far above
/// the rounding of these few operations and of [`poisson_upper_tail`], so whenever this
/// answers `true`, that function's value is above `level` too (a property test holds it to
/// that). `false` whenever unsure, including every degenerate input.
pub fn poisson_upper_tail_is_above(lambda: f64, count: u64, level: f64) -> bool {
    if !(lambda.is_finite() && lambda > 0.0 && level.is_finite() && level > 0.0) {
        return false;
    }
    let count_value = count as f64;
    let count_term = count_value * lambda.ln();
    let log_factorial = statrs::function::factorial::ln_factorial(count);
    let log_mass = count_term - lambda - log_factorial;
    let margin = 1e-9 * (1.0 + count_term.abs() + lambda + log_factorial);
    log_mass - margin > level.ln()
}

/// P(X = 0) for X ~ Poisson(`lambda`) (1 for a non-positive or NaN rate).
pub fn poisson_zero_probability(lambda: f64) -> f64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    (-lambda).exp()
}

/// The outcome of the Benjamini–Hochberg step-up procedure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenjaminiHochberg {
    /// Number of rejected hypotheses R = max{ i : p₍ᵢ₎ ≤ i·q/m } (0 when none).
    pub rejected_count: usize,
    /// The p-value cutoff: a hypothesis is rejected exactly when its p ≤ `cutoff`. It is
    /// R·q/m, or q/m (the smallest possible cutoff) when nothing is rejected, in which case
    /// `rejects` is false for every p above q/m and the cutoff is only informative.
    pub cutoff: f64,
}

impl BenjaminiHochberg {
    /// Whether a hypothesis with p-value `p_value` is rejected.
    pub fn rejects(&self, p_value: f64) -> bool {
        self.rejected_count > 0 && p_value <= self.cutoff
    }
}

/// Benjamini–Hochberg at false discovery rate `q` over `total_tests` hypotheses, of which
/// `p_values` are the ones that may be below 1 (the others have p = 1 and are never rejected
/// for q < 1). `total_tests` is raised to `p_values.len()` if smaller. NaN p-values count as 1.
pub fn benjamini_hochberg(p_values: &[f64], total_tests: usize, q: f64) -> BenjaminiHochberg {
    let m = total_tests.max(p_values.len()).max(1) as f64;
    let mut sorted: Vec<f64> = p_values
        .iter()
        .map(|p_value| if p_value.is_nan() { 1.0 } else { *p_value })
        .collect();
    sorted.sort_by(f64::total_cmp);
    let mut rejected_count = 0;
    for (zero_based_rank, p_value) in sorted.iter().enumerate() {
        let rank = zero_based_rank + 1;
        if *p_value <= rank as f64 * q / m {
            rejected_count = rank;
        }
    }
    BenjaminiHochberg {
        rejected_count,
        cutoff: rejected_count.max(1) as f64 * q / m,
    }
}

/// The smallest count c with P(X ≥ c) ≤ `cutoff` under Poisson(`lambda`), searched up to a
/// bound far in the tail (λ + 40·√λ + 60); `None` when not found there (a cutoff of 0 or a
/// degenerate rate).
pub fn critical_count(lambda: f64, cutoff: f64) -> Option<u64> {
    if !(lambda.is_finite() && lambda >= 0.0 && cutoff.is_finite() && cutoff > 0.0) {
        return None;
    }
    let upper_bound = (lambda + 40.0 * lambda.sqrt() + 60.0).ceil() as u64;
    let start = lambda.floor() as u64;
    // Below the mean the tail is above 1/2, so the search can start at floor(λ) whenever the
    // cutoff is below 1/2; otherwise start at 0.
    let first = if cutoff < 0.5 { start } else { 0 };
    (first..=upper_bound).find(|count| poisson_upper_tail(lambda, *count) <= cutoff)
}

/// The Poisson CUSUM reference value k = (λ1 − λ0) / ln(λ1/λ0), the optimal (likelihood-ratio)
/// decrement for detecting a shift from λ0 to λ1 (> λ0 > 0); `None` for invalid rates.
pub fn cusum_reference_value(lambda0: f64, lambda1: f64) -> Option<f64> {
    if !(lambda0.is_finite() && lambda1.is_finite() && lambda0 > 0.0 && lambda1 > lambda0) {
        return None;
    }
    let reference = (lambda1 - lambda0) / (lambda1 / lambda0).ln();
    reference.is_finite().then_some(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The SciPy values (`tests/fixtures/stats/gen_fixtures.py`).
    const FIXTURE_JSON: &str = include_str!("../../tests/fixtures/stats/poisson.json");

    #[derive(Deserialize)]
    struct Fixtures {
        poisson_upper_tail: Vec<TailCase>,
        benjamini_hochberg: Vec<BhCase>,
        cusum_reference_value: Vec<ReferenceCase>,
    }

    #[derive(Deserialize)]
    struct TailCase {
        lambda: f64,
        count: u64,
        p_at_least: f64,
    }

    #[derive(Deserialize)]
    struct BhCase {
        p_values: Vec<f64>,
        total_tests: usize,
        q: f64,
        rejected: Vec<bool>,
    }

    #[derive(Deserialize)]
    struct ReferenceCase {
        lambda0: f64,
        lambda1: f64,
        k: f64,
    }

    fn fixtures() -> Fixtures {
        serde_json::from_str(FIXTURE_JSON).expect("the committed fixture parses")
    }

    fn assert_relative(actual: f64, expected: f64, tolerance: f64, context: &str) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() / scale <= tolerance,
            "{context}: got {actual:e}, SciPy says {expected:e}"
        );
    }

    #[test]
    fn poisson_upper_tail_matches_scipy_to_1e9_relative() {
        let cases = fixtures().poisson_upper_tail;
        assert!(cases.len() >= 10);
        for case in cases {
            assert_relative(
                poisson_upper_tail(case.lambda, case.count),
                case.p_at_least,
                1e-9,
                &format!("P(X >= {} | lambda = {})", case.count, case.lambda),
            );
        }
    }

    #[test]
    fn benjamini_hochberg_decisions_match_scipy() {
        for case in fixtures().benjamini_hochberg {
            let decision = benjamini_hochberg(&case.p_values, case.total_tests, case.q);
            let rejected: Vec<bool> = case
                .p_values
                .iter()
                .map(|p_value| decision.rejects(*p_value))
                .collect();
            assert_eq!(
                rejected, case.rejected,
                "p = {:?}, m = {}, q = {}",
                case.p_values, case.total_tests, case.q
            );
            assert_eq!(
                decision.rejected_count,
                case.rejected.iter().filter(|rejected| **rejected).count()
            );
        }
    }

    #[test]
    fn cusum_reference_value_matches_scipy() {
        for case in fixtures().cusum_reference_value {
            let k = cusum_reference_value(case.lambda0, case.lambda1).expect("valid rates");
            assert_relative(k, case.k, 1e-12, "k");
        }
    }

    proptest::proptest! {
        /// Whenever the cheap bound says a tail is above a level, the tail is, on rates and
        /// counts around the spike rules' (fractions of an event to hundreds) and far beyond.
        #[test]
        fn a_tail_said_to_be_above_a_level_is_above_it(
            lambda in proptest::prop_oneof![1e-4_f64..1.0, 1.0_f64..50.0, 50.0_f64..5_000.0],
            count in proptest::prop_oneof![0_u64..10, 0_u64..200, 0_u64..6_000],
            level in proptest::prop_oneof![1e-6_f64..0.05, 0.0_f64..1.0],
        ) {
            if poisson_upper_tail_is_above(lambda, count, level) {
                let tail = poisson_upper_tail(lambda, count);
                proptest::prop_assert!(tail > level, "P(X >= {}) = {} under {}", count, tail, lambda);
            }
        }
    }

    #[test]
    fn the_cheap_bound_settles_the_usual_quiet_series_and_nothing_near_the_level() {
        // A community expecting 0.0125 fraud events an hour sees one: p ≈ 0.0124, above 0.01.
        assert!(poisson_upper_tail_is_above(0.0125, 1, 0.01));
        // A district expecting 8 a day sees 9: p ≈ 0.41.
        assert!(poisson_upper_tail_is_above(8.0, 9, 0.003));
        // Just below the level, and a real spike, are left to the exact tail.
        assert!(poisson_upper_tail(0.01, 1) < 0.01);
        assert!(!poisson_upper_tail_is_above(0.01, 1, 0.01));
        assert!(!poisson_upper_tail_is_above(8.0, 25, 0.003));
        for degenerate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(!poisson_upper_tail_is_above(degenerate, 1, 0.01));
            assert!(!poisson_upper_tail_is_above(1.0, 1, degenerate));
        }
    }

    #[test]
    fn degenerate_inputs_give_conservative_answers() {
        assert_eq!(poisson_upper_tail(3.0, 0), 1.0);
        assert_eq!(poisson_upper_tail(f64::NAN, 5), 1.0);
        assert_eq!(poisson_upper_tail(0.0, 1), 0.0);
        assert_eq!(poisson_upper_tail(1e-3, 10_000), 0.0);
        assert_eq!(poisson_zero_probability(-1.0), 1.0);
        assert_eq!(cusum_reference_value(1.0, 1.0), None);
        assert_eq!(cusum_reference_value(0.0, 2.0), None);
        let nothing = benjamini_hochberg(&[], 0, 0.05);
        assert_eq!(nothing.rejected_count, 0);
        assert!(!nothing.rejects(0.0));
    }

    #[test]
    fn critical_count_is_the_first_count_at_or_below_the_cutoff() {
        for lambda in [0.001, 0.3, 2.0, 17.5, 400.0] {
            for cutoff in [1e-2, 1e-5, 1e-9] {
                let critical = critical_count(lambda, cutoff).expect("found");
                assert!(poisson_upper_tail(lambda, critical) <= cutoff);
                assert!(critical == 0 || poisson_upper_tail(lambda, critical - 1) > cutoff);
            }
        }
        assert_eq!(critical_count(1.0, 0.0), None);
    }
}
