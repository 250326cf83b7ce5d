//! Calendar arithmetic of the fraud target in local time (a fixed UTC offset, +8 for China
//! Standard Time): which year an event belongs to, how much of the current year has elapsed,
//! and the "same period" of the baseline year.
//!
//! The same period of the baseline year is **the whole months before the current month plus
//! the current month pro-rated by the fraction of it that has elapsed** (elapsed time in the
//! month ÷ the month's length, both in the current year). On 16 March 12:00 that is January,
//! February and 15.5/31 of March of the baseline year. Pro-rating by the fraction (not by a
//! count of days) keeps 29 February of a leap year from reaching past the baseline February.

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// Milliseconds per day.
const DAY_MILLIS: f64 = 86_400_000.0;
pub(super) use crate::time::HOUR_MILLIS;
/// Latest instant handled: 9999-12-31T23:59:59.999Z (clamping keeps chrono in range).
const LATEST_MILLIS: i64 = 253_402_300_799_999;
/// Earliest instant handled: 0001-01-01T00:00:00Z.
const EARLIEST_MILLIS: i64 = -62_135_596_800_000;

/// How far the current (local) year has advanced at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YearToDate {
    /// The local calendar year.
    pub year: i32,
    /// The local calendar month, 1–12.
    pub month: u32,
    /// Days elapsed since local 1 January 00:00 (fractional).
    pub elapsed_days: f64,
    /// Length of the year in days (365 or 366), for the year-end projection.
    pub days_in_year: f64,
    /// Fraction of the current month elapsed, in [0, 1): pro-rates the baseline's month.
    pub month_fraction: f64,
}

/// The local date-time of an epoch-milliseconds instant at a fixed UTC offset (clamped into the
/// years 1–9999).
fn local_date_time(millis: i64, timezone_offset_hours: i32) -> NaiveDateTime {
    let local_millis = millis
        .clamp(EARLIEST_MILLIS, LATEST_MILLIS)
        .saturating_add(i64::from(timezone_offset_hours).saturating_mul(HOUR_MILLIS))
        .clamp(EARLIEST_MILLIS, LATEST_MILLIS);
    chrono::DateTime::from_timestamp_millis(local_millis)
        .unwrap_or_default()
        .naive_utc()
}

/// The local calendar year of an instant.
pub fn local_year(millis: i64, timezone_offset_hours: i32) -> i32 {
    local_date_time(millis, timezone_offset_hours).year()
}

/// The local calendar year and month (1–12) of an instant.
pub fn local_year_month(millis: i64, timezone_offset_hours: i32) -> (i32, u32) {
    let local = local_date_time(millis, timezone_offset_hours);
    (local.year(), local.month())
}

/// The instant (epoch milliseconds) at which local `month` (1–12) of `year` begins; month 13
/// is January of the next year, so `month_start_millis(y, m + 1, ..)` ends month `m`.
pub fn month_start_millis(year: i32, month: u32, timezone_offset_hours: i32) -> i64 {
    let (year, month) = if month > 12 {
        (year.saturating_add(1), 1)
    } else {
        (year, month.max(1))
    };
    let local_start = NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|start| start.and_utc().timestamp_millis())
        .unwrap_or(if year < 1 {
            EARLIEST_MILLIS
        } else {
            LATEST_MILLIS
        });
    local_start.saturating_sub(i64::from(timezone_offset_hours).saturating_mul(HOUR_MILLIS))
}

/// Expected baseline cases over `[start, end)` (epoch ms, inside one month) when the month
/// averages `daily_cases` a day spread over local hours by `hour_shares` (summing to 1):
/// whole local days count `daily_cases`, partial days their hours' shares pro rata.
pub fn expected_over(
    daily_cases: f64,
    hour_shares: &[f64; 24],
    start: i64,
    end: i64,
    timezone_offset_hours: i32,
) -> f64 {
    let offset_millis = i64::from(timezone_offset_hours).saturating_mul(HOUR_MILLIS);
    let day = DAY_MILLIS as i64;
    let mut local = start.saturating_add(offset_millis);
    let local_end = end.saturating_add(offset_millis);
    let mut expected = 0.0;
    while local < local_end {
        let day_start = local.div_euclid(day) * day;
        if local == day_start && local_end >= day_start.saturating_add(day) {
            expected += daily_cases;
            local = day_start.saturating_add(day);
            continue;
        }
        let hour = (local - day_start) / HOUR_MILLIS;
        let hour_end = day_start
            .saturating_add((hour + 1).saturating_mul(HOUR_MILLIS))
            .min(local_end);
        let share = hour_shares.get(hour as usize).copied().unwrap_or(0.0);
        expected += daily_cases * share * (hour_end - local) as f64 / HOUR_MILLIS as f64;
        local = hour_end;
    }
    expected
}

/// Days in `month` (1–12) of `year`; 30 for an impossible month (never reached from valid
/// dates).
pub fn days_in_month(year: i32, month: u32) -> f64 {
    let first = NaiveDate::from_ymd_opt(year, month, 1);
    let next_first = if month >= 12 {
        NaiveDate::from_ymd_opt(year.saturating_add(1), 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    match (first, next_first) {
        (Some(first), Some(next_first)) => (next_first - first).num_days() as f64,
        _ => 30.0,
    }
}

/// Days in `year` (365 or 366).
pub fn days_in_year(year: i32) -> f64 {
    (1..=12).map(|month| days_in_month(year, month)).sum()
}

/// The year-to-date position of `now_millis` in local time.
pub fn year_to_date(now_millis: i64, timezone_offset_hours: i32) -> YearToDate {
    let local = local_date_time(now_millis, timezone_offset_hours);
    let year = local.year();
    let month = local.month();
    let start_of_year = NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .unwrap_or(local);
    let start_of_month = NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .unwrap_or(local);
    let elapsed_days = (local - start_of_year).num_milliseconds() as f64 / DAY_MILLIS;
    let elapsed_in_month_days = (local - start_of_month).num_milliseconds() as f64 / DAY_MILLIS;
    let month_fraction = (elapsed_in_month_days / days_in_month(year, month)).clamp(0.0, 1.0);
    YearToDate {
        year,
        month,
        elapsed_days,
        days_in_year: days_in_year(year),
        month_fraction,
    }
}

impl YearToDate {
    /// Length in days of the same period of `baseline_year`: its whole months before
    /// [`YearToDate::month`] plus that month's length × [`YearToDate::month_fraction`].
    pub fn baseline_span_days(&self, baseline_year: i32) -> f64 {
        let whole_months: f64 = (1..self.month)
            .map(|month| days_in_month(baseline_year, month))
            .sum();
        whole_months + days_in_month(baseline_year, self.month) * self.month_fraction
    }

    /// The same-period share of each baseline month: 1 for the months before the current one,
    /// the elapsed fraction for the current month, 0 after it (index 0 = January).
    pub fn baseline_month_weights(&self) -> [f64; 12] {
        let mut weights = [0.0; 12];
        for (index, weight) in weights.iter_mut().enumerate() {
            let month = index as u32 + 1;
            *weight = if month < self.month {
                1.0
            } else if month == self.month {
                self.month_fraction
            } else {
                0.0
            };
        }
        weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> i64 {
        crate::time::rfc3339_to_millis(text).unwrap()
    }

    #[test]
    fn local_year_turns_at_local_midnight() {
        // 2025-12-31T16:00Z is 2026-01-01 00:00 in UTC+8.
        assert_eq!(local_year(millis("2025-12-31T15:59:59Z"), 8), 2025);
        assert_eq!(local_year(millis("2025-12-31T16:00:00Z"), 8), 2026);
        assert_eq!(local_year(millis("2025-12-31T16:00:00Z"), 0), 2025);
    }

    #[test]
    fn mid_march_is_two_whole_months_and_half_of_march() {
        // 2026-03-16 12:00 local (UTC+8).
        let ytd = year_to_date(millis("2026-03-16T04:00:00Z"), 8);
        assert_eq!((ytd.year, ytd.month), (2026, 3));
        assert!((ytd.elapsed_days - (31.0 + 28.0 + 15.5)).abs() < 1e-12);
        assert!((ytd.month_fraction - 15.5 / 31.0).abs() < 1e-12);
        assert_eq!(ytd.days_in_year, 365.0);
        // 2024 is a leap year: January + February (29) + 15.5/31 of March.
        assert!((ytd.baseline_span_days(2024) - (31.0 + 29.0 + 15.5)).abs() < 1e-12);
        let weights = ytd.baseline_month_weights();
        assert_eq!(&weights[..2], &[1.0, 1.0]);
        assert!((weights[2] - 15.5 / 31.0).abs() < 1e-12);
        assert!(weights[3..].iter().all(|weight| *weight == 0.0));
    }

    #[test]
    fn leap_day_never_pro_rates_past_the_baseline_february() {
        let ytd = year_to_date(millis("2028-02-29T12:00:00+08:00"), 8);
        assert_eq!(ytd.month, 2);
        assert!(ytd.month_fraction < 1.0);
        assert!(ytd.baseline_span_days(2023) < 31.0 + 28.0);
        assert_eq!(ytd.days_in_year, 366.0);
    }

    #[test]
    fn months_begin_at_local_midnight_and_december_ends_at_new_year() {
        assert_eq!(
            month_start_millis(2026, 3, 8),
            millis("2026-02-28T16:00:00Z")
        );
        assert_eq!(
            month_start_millis(2026, 13, 8),
            month_start_millis(2027, 1, 8)
        );
        assert_eq!(
            local_year_month(millis("2026-02-28T16:00:00Z"), 8),
            (2026, 3)
        );
    }

    #[test]
    fn expected_cases_follow_the_hour_shape_within_a_day_and_count_whole_days_whole() {
        let mut shares = [0.0; 24];
        shares[9] = 0.5;
        shares[10] = 0.5;
        let day_start = millis("2026-03-02T00:00:00+08:00");
        let hour = HOUR_MILLIS;
        // Two whole days: 2 × 3 cases.
        assert!(
            (expected_over(3.0, &shares, day_start, day_start + 48 * hour, 8) - 6.0).abs() < 1e-12
        );
        // 09:30–10:00 is half of hour 9: 3 × 0.5 × 0.5.
        let expected = expected_over(
            3.0,
            &shares,
            day_start + 9 * hour + hour / 2,
            day_start + 10 * hour,
            8,
        );
        assert!((expected - 0.75).abs() < 1e-12);
        // The night has no share.
        assert_eq!(
            expected_over(3.0, &shares, day_start, day_start + 8 * hour, 8),
            0.0
        );
    }

    #[test]
    fn absurd_instants_are_clamped_not_panics() {
        assert_eq!(year_to_date(i64::MAX, 14).year, 9999);
        assert_eq!(year_to_date(i64::MIN, -12).year, 1);
    }
}
