//! The city's fraud target: cut the incidence of telecom and network fraud (电信网络诈骗发案率)
//! by [`FraudSettings::target_drop`] (60%) against a baseline year.
//!
//! [`FraudTracker`] counts the anti-fraud chain (warning → dissuasion → report → case filed)
//! per community and local calendar month from accepted events, records the event time its
//! partition's stream covered, and pairs each dissuasion with a warning to time the
//! warning-to-dissuasion lever. A [`FraudLedger`] merges any number of partitions' counts
//! (`FraudPartial` records) and the imported history; [`FraudLedger::report`] turns it, the
//! registry's populations and the [`FraudBaseline`] into a [`FraudReport`] for the city, each
//! district/county and each community. Everything is synchronous; time is an argument.
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
//! - **Coverage** ([`coverage`], [`ledger`]): the event time actually observed — a partition's
//!   stream counts as flowing between two of its events at most
//!   [`FraudSettings::coverage_max_gap_millis`] apart, and a community is covered by its
//!   partition's spans from its first event there on; imported months ([`history`]) count
//!   whole and replace the stream's counts of that month. A scope's `covered_days` is the
//!   population-weighted mean of its communities'.
//! - **Expected** cases: the baseline year's cases over the same spans — each month's count
//!   per day of that month, spread over the hours by the case types' seeded hour-of-day profile
//!   ([`calendar::expected_over`]).
//! - **Drop** = 1 − observed ÷ expected. Its interval is the exact conditional
//!   (Clopper–Pearson) interval of the Poisson rate ratio ([`stats`]) with exposures expected
//!   and the whole baseline year's cases (counts: observed and the baseline year's total), at
//!   [`FraudSettings::confidence`]. Undefined (`null`, with `drop_note`) without baseline cases.
//! - **Status**: `insufficient_data` below [`FraudSettings::minimum_coverage_days`] observed,
//!   whatever the counts; else `on_track` / `off_track` by the projection, or `no_baseline`.
//! - **Projection**: observed cases + the observed ratio × the baseline's cases of the time not
//!   observed (past gaps, the rest of the year: the baseline's monthly shape), with the interval
//!   from the ratio's bounds; `on_track` when the projected drop ≥ the target.
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
