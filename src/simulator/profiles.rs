//! The traffic model: each event type's base rate (per cell, or per resident for the
//! anti-fraud chain) and its hour-of-day profile in local time. The table in
//! [`super`]'s documentation is this file; `seeds/baseline_rates.csv` is tested against it.

use crate::proto::EventType;

pub(super) use crate::time::HOUR_MILLIS;
/// Milliseconds per minute.
pub(super) const MINUTE_MILLIS: i64 = 60_000;
/// Milliseconds per day.
pub(super) const DAY_MILLIS: f64 = 86_400_000.0;
/// Offset of China Standard Time from UTC (the daily profiles are in local time).
pub(super) const LOCAL_UTC_OFFSET_MILLIS: i64 = 8 * HOUR_MILLIS;
/// Days per year, for per-year fraud rates.
pub(super) const DAYS_PER_YEAR: f64 = 365.0;

/// Daily profile shapes (hour 0..23, local time); normalized to mean 1 when used.
mod shapes {
    /// Constant over the day.
    pub const FLAT: [f64; 24] = [1.0; 24];
    /// Cooking: peaks at lunch and dinner.
    pub const MEAL_TIMES: [f64; 24] = [
        0.4, 0.3, 0.3, 0.3, 0.3, 0.4, 0.8, 1.2, 1.0, 0.8, 1.0, 2.2, 2.2, 1.2, 0.8, 0.8, 1.2, 2.4,
        2.6, 1.6, 1.0, 0.8, 0.6, 0.5,
    ];
    /// Household electrical load and e-bike charging: evening.
    pub const EVENING_LOAD: [f64; 24] = [
        1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.9, 1.2,
        1.6, 2.0, 2.2, 2.2, 1.8, 1.4,
    ];
    /// Intrusions: night.
    pub const NIGHT: [f64; 24] = [
        2.2, 2.4, 2.4, 2.2, 1.8, 1.2, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.5,
        0.7, 0.9, 1.2, 1.5, 1.8, 2.0,
    ];
    /// Elder falls: getting up in the morning.
    pub const EARLY_MORNING: [f64; 24] = [
        0.3, 0.3, 0.3, 0.4, 0.6, 1.4, 2.4, 2.6, 2.2, 1.6, 1.2, 1.0, 0.9, 0.9, 0.9, 0.9, 1.0, 1.0,
        1.0, 0.9, 0.8, 0.6, 0.5, 0.4,
    ];
    /// Elder inactivity: detected in the late morning when nothing moved since the night.
    pub const LATE_MORNING: [f64; 24] = [
        0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.5, 0.8, 1.6, 2.4, 2.6, 2.0, 1.4, 1.0, 1.0, 1.0, 1.0, 1.0,
        1.0, 0.8, 0.6, 0.5, 0.4, 0.3,
    ];
    /// SOS buttons: mild evening peak.
    pub const MILD_EVENING: [f64; 24] = [
        0.6, 0.5, 0.5, 0.5, 0.5, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.1, 1.1, 1.0, 1.0, 1.0, 1.1, 1.2,
        1.4, 1.5, 1.5, 1.3, 1.0, 0.8,
    ];
    /// Camera analytics: people around, commute peaks.
    pub const DAYTIME_ACTIVITY: [f64; 24] = [
        0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.4, 1.8, 1.2, 1.0, 1.2, 1.3, 1.1, 1.0, 1.1, 1.3, 1.8,
        2.0, 1.8, 1.5, 1.1, 0.6, 0.4,
    ];
    /// Fraud chain: office hours of scammers, hotline and grid workers.
    pub const OFFICE_HOURS: [f64; 24] = [
        0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.6, 2.2, 2.4, 2.2, 1.6, 1.8, 2.2, 2.2, 2.0,
        1.6, 1.2, 0.9, 0.7, 0.5, 0.3, 0.2,
    ];
}

/// How a type's base rate is expressed (crate-visible so that the rules' seeded baseline,
/// `seeds/baseline_rates.csv`, is tested against it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum BaseRate {
    /// Events per grid cell per day.
    PerCellPerDay(f64),
    /// Events per 10,000 residents per year.
    PerTenThousandResidentsPerYear(f64),
}

/// Base rate and daily profile of a type (the table in the module documentation);
/// crate-visible for the test that keeps `seeds/baseline_rates.csv` equal to it.
pub(crate) fn type_model(event_type: EventType) -> (BaseRate, &'static [f64; 24]) {
    use BaseRate::{PerCellPerDay as Cell, PerTenThousandResidentsPerYear as Residents};
    match event_type {
        EventType::FireSmoke => (Cell(0.03), &shapes::MEAL_TIMES),
        EventType::GasLeak => (Cell(0.005), &shapes::MEAL_TIMES),
        EventType::ElectricalFault => (Cell(0.02), &shapes::EVENING_LOAD),
        EventType::Sos => (Cell(0.02), &shapes::MILD_EVENING),
        EventType::ElderFall => (Cell(0.01), &shapes::EARLY_MORNING),
        EventType::ElderInactive => (Cell(0.015), &shapes::LATE_MORNING),
        EventType::PerimeterIntrusion => (Cell(0.4), &shapes::NIGHT),
        EventType::Tripwire => (Cell(0.6), &shapes::NIGHT),
        EventType::HighAltitudeThrow => (Cell(0.05), &shapes::DAYTIME_ACTIVITY),
        EventType::DoorForced => (Cell(0.1), &shapes::NIGHT),
        EventType::DeviceTamper => (Cell(0.03), &shapes::NIGHT),
        EventType::EbikeInElevator => (Cell(3.0), &shapes::DAYTIME_ACTIVITY),
        EventType::EbikeCharging => (Cell(0.4), &shapes::EVENING_LOAD),
        EventType::FireLaneBlocked => (Cell(1.5), &shapes::DAYTIME_ACTIVITY),
        EventType::Loitering => (Cell(25.0), &shapes::DAYTIME_ACTIVITY),
        EventType::CrowdGathering => (Cell(2.0), &shapes::DAYTIME_ACTIVITY),
        EventType::Tailgating => (Cell(40.0), &shapes::DAYTIME_ACTIVITY),
        EventType::FraudWarning => (Residents(120.0), &shapes::OFFICE_HOURS),
        EventType::FraudDissuaded => (Residents(90.0), &shapes::OFFICE_HOURS),
        EventType::FraudReported => (Residents(12.0), &shapes::OFFICE_HOURS),
        EventType::FraudCaseFiled => (Residents(8.0), &shapes::OFFICE_HOURS),
        EventType::DeviceOffline => (Cell(0.2), &shapes::FLAT),
        EventType::VideoLoss => (Cell(0.1), &shapes::FLAT),
        EventType::Unspecified => (Cell(0.0), &shapes::FLAT),
    }
}

/// Whether the type belongs to the anti-fraud chain (no device, reported by people).
pub(super) fn is_fraud_type(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::FraudWarning
            | EventType::FraudDissuaded
            | EventType::FraudReported
            | EventType::FraudCaseFiled
    )
}

/// The daily profile of a type normalized to mean 1.
pub(super) fn normalized_profile(event_type: EventType) -> [f64; 24] {
    let (_, shape) = type_model(event_type);
    let mean = shape.iter().sum::<f64>() / 24.0;
    let mut normalized = [0.0; 24];
    if mean <= 0.0 {
        return normalized;
    }
    for (target, value) in normalized.iter_mut().zip(shape.iter()) {
        *target = value / mean;
    }
    normalized
}

/// Local (UTC+8) hour of day of an instant.
pub(super) fn local_hour_of_day(millis: i64) -> usize {
    let local_hours = millis
        .saturating_add(LOCAL_UTC_OFFSET_MILLIS)
        .div_euclid(HOUR_MILLIS);
    // rem_euclid(24) is in 0..24.
    local_hours.rem_euclid(24) as usize
}

/// The first full-hour instant strictly after `millis`.
pub(super) fn next_hour_boundary(millis: i64) -> i64 {
    let local_hours = millis
        .saturating_add(LOCAL_UTC_OFFSET_MILLIS)
        .div_euclid(HOUR_MILLIS);
    (local_hours + 1)
        .saturating_mul(HOUR_MILLIS)
        .saturating_sub(LOCAL_UTC_OFFSET_MILLIS)
}
