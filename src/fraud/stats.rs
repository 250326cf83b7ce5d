//! The exact (conditional) confidence interval for the ratio of two Poisson rates, and its
//! transformation into the fraud target's "drop" (`1 − ratio`).
//!
//! Conditional on the total `n = cases_now + cases_base`, `cases_now` is
//! `Binomial(n, p)` with `p = E_now·ρ / (E_now·ρ + E_base)`, where `ρ = rate_now / rate_base` and
//! the `E` are the exposures (population × time). The Clopper–Pearson interval for `p`
//! (Beta quantiles) maps monotonically to an interval for `ρ = (p / (1 − p)) · (E_base / E_now)`:
//!
//! - `p_low  = Beta(cases_now, cases_base + 1).quantile(α/2)`, or 0 when `cases_now = 0`;
//! - `p_high = Beta(cases_now + 1, cases_base).quantile(1 − α/2)`, or 1 when `cases_base = 0`.
//!
//! The same Beta quantiles are defined for non-integer counts, so a pro-rated (fractional)
//! baseline count gets the continuous extension of the interval; for whole counts it is the
//! textbook exact interval (checked against SciPy in `tests/fixtures/fraud/`).

use serde::{Deserialize, Serialize};

/// Why a rate ratio cannot be computed at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateRatioError {
    /// A count is negative or not finite.
    #[error("case counts must be finite and non-negative, got now {cases_now} and baseline {cases_base}")]
    InvalidCounts {
        /// Cases of the current period.
        cases_now: f64,
        /// Cases of the baseline period.
        cases_base: f64,
    },
    /// An exposure (population × time) is zero, negative or not finite.
    #[error("exposures must be positive, got now {exposure_now} and baseline {exposure_base}")]
    InvalidExposure {
        /// Exposure of the current period.
        exposure_now: f64,
        /// Exposure of the baseline period.
        exposure_base: f64,
    },
    /// The confidence level is not strictly between 0 and 1.
    #[error("confidence must be strictly between 0 and 1, got {0}")]
    InvalidConfidence(f64),
}

/// The rate ratio `rate_now / rate_base` with its exact interval. `None` stands for an
/// unbounded (infinite) value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateRatioInterval {
    /// Point estimate `(cases_now / E_now) / (cases_base / E_base)`; `None` when the baseline
    /// has no cases (the ratio is infinite or, with no cases at all, undefined).
    pub ratio: Option<f64>,
    /// Lower bound (0 when there are no current cases).
    pub ratio_low: f64,
    /// Upper bound; `None` (infinite) when the baseline has no cases.
    pub ratio_high: Option<f64>,
}

/// The drop `1 − ratio` with its interval (bounds swap: a high ratio is a low drop). `None`
/// stands for an unbounded value (`−∞` for the lower bound) or an undefined point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DropInterval {
    /// Point estimate `1 − ratio`.
    pub drop: Option<f64>,
    /// Lower bound `1 − ratio_high`; `None` (−∞) when the baseline has no cases.
    pub drop_low: Option<f64>,
    /// Upper bound `1 − ratio_low` (at most 1).
    pub drop_high: f64,
}

impl RateRatioInterval {
    /// The same interval expressed as a drop `1 − ratio`.
    pub fn to_drop(self) -> DropInterval {
        DropInterval {
            drop: self.ratio.map(|ratio| 1.0 - ratio),
            drop_low: self.ratio_high.map(|ratio_high| 1.0 - ratio_high),
            drop_high: 1.0 - self.ratio_low,
        }
    }
}

/// Exact conditional (Clopper–Pearson) interval for the ratio of two Poisson rates at the given
/// two-sided `confidence` (e.g. 0.95).
pub fn exact_rate_ratio(
    cases_now: f64,
    exposure_now: f64,
    cases_base: f64,
    exposure_base: f64,
    confidence: f64,
) -> Result<RateRatioInterval, RateRatioError> {
    let counts_valid =
        cases_now.is_finite() && cases_base.is_finite() && cases_now >= 0.0 && cases_base >= 0.0;
    if !counts_valid {
        return Err(RateRatioError::InvalidCounts {
            cases_now,
            cases_base,
        });
    }
    let exposures_valid = exposure_now.is_finite()
        && exposure_base.is_finite()
        && exposure_now > 0.0
        && exposure_base > 0.0;
    if !exposures_valid {
        return Err(RateRatioError::InvalidExposure {
            exposure_now,
            exposure_base,
        });
    }
    if !(confidence.is_finite() && confidence > 0.0 && confidence < 1.0) {
        return Err(RateRatioError::InvalidConfidence(confidence));
    }
    let tail_probability = (1.0 - confidence) / 2.0;
    let exposure_factor = exposure_base / exposure_now;
    let ratio = if cases_base > 0.0 {
        Some((cases_now / exposure_now) / (cases_base / exposure_base))
    } else {
        None
    };
    let ratio_low = if cases_now > 0.0 {
        let (p_low, one_minus_p_low) =
            beta_quantile_with_complement(cases_now, cases_base + 1.0, tail_probability);
        p_low / one_minus_p_low * exposure_factor
    } else {
        0.0
    };
    let ratio_high = if cases_base > 0.0 {
        let (p_high, one_minus_p_high) =
            beta_quantile_with_complement(cases_now + 1.0, cases_base, 1.0 - tail_probability);
        Some(p_high / one_minus_p_high * exposure_factor)
    } else {
        None
    };
    Ok(RateRatioInterval {
        ratio,
        ratio_low,
        ratio_high,
    })
}

/// The `probability` quantile `x` of `Beta(shape_a, shape_b)` together with `1 − x`, each
/// computed where it has full relative precision (the smaller of the two is computed directly,
/// through the symmetry `1 − Beta(a, b) = Beta(b, a)`), so that `x / (1 − x)` stays accurate
/// near both ends. Shapes must be positive and `probability` in (0, 1).
fn beta_quantile_with_complement(shape_a: f64, shape_b: f64, probability: f64) -> (f64, f64) {
    let quantile = inverse_beta(shape_a, shape_b, probability);
    if quantile <= 0.5 {
        return (quantile, 1.0 - quantile);
    }
    let complement = inverse_beta(shape_b, shape_a, 1.0 - probability);
    (1.0 - complement, complement)
}

/// The `probability` quantile of `Beta(shape_a, shape_b)` (`statrs`'s inverse regularized
/// incomplete beta, AS 109 with Newton steps; within 1e-9 relative of SciPy on the fixtures).
fn inverse_beta(shape_a: f64, shape_b: f64, probability: f64) -> f64 {
    statrs::function::beta::inv_beta_reg(shape_a, shape_b, probability.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rates_give_an_interval_around_one() {
        let interval = exact_rate_ratio(50.0, 1000.0, 50.0, 1000.0, 0.95).unwrap();
        assert_eq!(interval.ratio, Some(1.0));
        assert!(interval.ratio_low < 1.0 && interval.ratio_high.unwrap() > 1.0);
    }

    #[test]
    fn no_current_cases_give_a_zero_ratio_and_a_finite_upper_bound() {
        let interval = exact_rate_ratio(0.0, 1.0, 10.0, 1.0, 0.95).unwrap();
        assert_eq!(interval.ratio, Some(0.0));
        assert_eq!(interval.ratio_low, 0.0);
        let high = interval.ratio_high.unwrap();
        assert!(high.is_finite() && high > 0.0 && high < 1.0, "{high}");
        let drop = interval.to_drop();
        assert_eq!(drop.drop, Some(1.0));
        assert_eq!(drop.drop_high, 1.0);
        assert!(drop.drop_low.unwrap() > 0.0);
    }

    #[test]
    fn no_baseline_cases_leave_the_ratio_and_its_upper_bound_unbounded() {
        let interval = exact_rate_ratio(4.0, 1.0, 0.0, 1.0, 0.95).unwrap();
        assert_eq!(interval.ratio, None);
        assert_eq!(interval.ratio_high, None);
        assert!(interval.ratio_low > 0.0 && interval.ratio_low.is_finite());
        assert_eq!(interval.to_drop().drop_low, None);
    }

    #[test]
    fn invalid_inputs_are_errors_not_panics() {
        assert!(exact_rate_ratio(-1.0, 1.0, 1.0, 1.0, 0.95).is_err());
        assert!(exact_rate_ratio(1.0, 0.0, 1.0, 1.0, 0.95).is_err());
        assert!(exact_rate_ratio(1.0, 1.0, f64::NAN, 1.0, 0.95).is_err());
        assert!(exact_rate_ratio(1.0, 1.0, 1.0, 1.0, 1.0).is_err());
        assert!(exact_rate_ratio(1.0, 1.0, 1.0, 1.0, 0.0).is_err());
    }

    #[test]
    fn a_higher_confidence_widens_the_interval() {
        let narrow = exact_rate_ratio(7.0, 2.0, 20.0, 3.0, 0.80).unwrap();
        let wide = exact_rate_ratio(7.0, 2.0, 20.0, 3.0, 0.99).unwrap();
        assert!(wide.ratio_low < narrow.ratio_low);
        assert!(wide.ratio_high.unwrap() > narrow.ratio_high.unwrap());
    }
}
