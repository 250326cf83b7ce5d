//! The city's fraud target: cut the incidence of telecom and network fraud (电信网络诈骗发案率)
//! by [`FraudSettings::target_drop`] (60%) against a baseline year.
//!
//! [`FraudTracker`] counts the anti-fraud chain (warning → dissuasion → report → case filed)
//! per community and local calendar year from accepted events, and pairs each dissuasion with
//! a warning to time the warning-to-dissuasion lever. [`FraudTracker::report`] turns the counts,
//! the registry's populations and the [`FraudBaseline`] into a [`FraudReport`] for the city,
//! each district/county and each community. Everything is synchronous; time is an argument.
//!
//! # Definitions
//!
//! - **Cases** are the accepted events of [`FraudSettings::case_event_types`]
//!   (`FRAUD_CASE_FILED` by default), counted in the local calendar year of their
//!   `occurred_at` (UTC offset [`FraudSettings::timezone_offset_hours`], +8).
//! - **Incidence** = cases ÷ population × 10,000, year to date. For a district and the city,
//!   cases and populations are summed over their communities *before* dividing (never an
//!   average of community rates). Populations come from the registry (`communities.csv`,
//!   `population_source = "seeds"`), the same for the current and the baseline year.
//! - **Baseline, same period**: the baseline year's whole months before the current month plus
//!   the current month pro-rated by its elapsed fraction ([`calendar`]), from the configured
//!   case columns of `fraud_baseline.csv`.
//! - **Drop** = 1 − rate_now ÷ rate_baseline, where a rate is cases ÷ exposure and exposure =
//!   population × span (days elapsed this year; the same-period span of the baseline year).
//!   With equal spans this is 1 − incidence ÷ baseline incidence. Its interval is the exact
//!   conditional (Clopper–Pearson) interval of the rate ratio ([`stats`]) at
//!   [`FraudSettings::confidence`]. With no baseline cases in the same period the ratio is
//!   undefined: `drop` is `null` and `drop_note` says why.
//! - **Projection**: projected cases = cases_ytd × days_in_year ÷ elapsed_days (the current
//!   pace held to 31 December); projected drop = 1 − projected incidence ÷ the full baseline
//!   year's incidence; `on_track` when the projected drop ≥ the target.
//! - **Levers**: warnings (`FRAUD_WARNING`) and dissuasions (`FRAUD_DISSUADED`) year to date;
//!   dissuasion rate = dissuaded ÷ warnings (may exceed 1 when a community dissuades people
//!   warned before the year began or not through a warning); warning-to-dissuasion time from
//!   pairing (see [`FraudTracker::on_event`]).
//! - **Order**: districts and communities are sorted by distance from the target, furthest
//!   behind first (`target_drop − drop` descending); entries whose drop is undefined come last;
//!   ties by code.

// No panic path reachable from input, state or configuration (README "Security").

pub mod baseline;
pub mod calendar;
pub mod coverage;
pub mod history;
pub mod ledger;
pub mod report;
pub mod settings;
pub mod stats;
pub mod tracker;

pub use baseline::{BaselineMonth, FraudBaseline, FraudBaselineError};
pub use calendar::YearToDate;
pub use coverage::TimeSpans;
pub use ledger::{streamed_partial, FraudLedger};
pub use report::{
    publish_metrics, FraudEntry, FraudReport, FraudScope, FraudStatus, SplitCommunity,
};
pub use settings::{FraudError, FraudSettings};
pub use stats::{exact_rate_ratio, DropInterval, RateRatioError, RateRatioInterval};
pub use tracker::{ChainCounts, CommunityMonths, FraudTracker, PairedDissuasion};

#[cfg(test)]
mod tests;
