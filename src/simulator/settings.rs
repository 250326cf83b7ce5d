//! What a simulation is asked for ([`SimulatorSettings`]) and why it may be refused
//! ([`SimulatorError`]): settings are checked once, before any event is drawn.

use serde::{Deserialize, Serialize};

use super::scenarios::Scenario;

/// Latest accepted simulation start: 9999-12-31T23:59:59.999Z (keeps every clock computation
/// far from overflow).
const MAX_START_MILLIS: i64 = 253_402_300_799_999;

/// Settings of the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Seed of the random generator: the same seed and settings give the same events.
    pub seed: u64,
    /// Event time of the simulation start, epoch milliseconds. For real-time pacing the
    /// caller sets it to the current wall-clock time.
    pub start_millis: i64,
    /// Multiplies every background rate (not the clock): 60 makes an hour's worth of events
    /// occur every minute.
    pub rate_multiplier: f64,
    /// Incidents layered on top of the background traffic.
    pub scenarios: Vec<Scenario>,
    /// Fraction of events delivered a second time with the same `event_id`.
    pub duplicate_fraction: f64,
    /// Upper bound of the delivery delay (out-of-order delivery); must stay below the
    /// pipeline's allowed out-of-orderness.
    pub max_delivery_delay_millis: i64,
    /// Fraction of events carrying only GCJ-02 or BD-09 coordinates (no grid id, no device).
    pub coordinate_fraction: f64,
    /// Fraction of device events carrying only their device id (no grid id).
    pub device_only_fraction: f64,
    /// Events delivered per second in every hour (duplicate copies included: the background
    /// runs at this rate ÷ (1 + `duplicate_fraction`)), instead of the daily profile's total:
    /// each hour keeps its own mix of types and cells (intrusions at night, e-bikes by day) at
    /// this total. For a load generator sending at a fixed rate, whose event times must keep
    /// pace with the wall clock; `None` (the default) follows the profile, whose total swings
    /// twentyfold between night and evening.
    pub steady_rate_per_second: Option<f64>,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        SimulatorSettings {
            seed: 0,
            // 2026-03-02T00:00:00+08:00
            start_millis: 1_772_380_800_000,
            rate_multiplier: 1.0,
            scenarios: Vec::new(),
            duplicate_fraction: 0.002,
            max_delivery_delay_millis: 5_000,
            coordinate_fraction: 0.02,
            device_only_fraction: 0.1,
            steady_rate_per_second: None,
        }
    }
}

impl SimulatorSettings {
    /// Deliveries per generated event: each is delivered once, and `duplicate_fraction` of
    /// them a second time. Converts a count or rate of deliveries (what a consumer sees)
    /// into one of generated events (what the clock advances by).
    pub(super) fn deliveries_per_event(&self) -> f64 {
        1.0 + self.duplicate_fraction
    }
}

/// Invalid simulator settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulatorError {
    /// A setting is out of its valid range.
    #[error("invalid simulator setting {name}: {message}")]
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A scenario is invalid.
    #[error("invalid simulator scenario #{index} ({kind}): {message}")]
    InvalidScenario {
        /// 0-based index of the scenario in the settings.
        index: usize,
        /// The scenario's kind.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The registry offers nothing to simulate (no cell with devices or residents).
    #[error("the grid registry has no cell that can produce events")]
    NoEventSources,
}

pub(super) fn check_fraction(name: &'static str, value: f64) -> Result<(), SimulatorError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(SimulatorError::InvalidSetting {
        name,
        message: format!("{value} is not a fraction between 0 and 1"),
    })
}

pub(super) fn validate_settings(settings: &SimulatorSettings) -> Result<(), SimulatorError> {
    check_fraction("duplicate_fraction", settings.duplicate_fraction)?;
    check_fraction("coordinate_fraction", settings.coordinate_fraction)?;
    check_fraction("device_only_fraction", settings.device_only_fraction)?;
    if settings.coordinate_fraction + settings.device_only_fraction > 1.0 {
        return Err(SimulatorError::InvalidSetting {
            name: "coordinate_fraction",
            message: "coordinate_fraction + device_only_fraction exceeds 1".to_string(),
        });
    }
    if !(settings.rate_multiplier.is_finite() && settings.rate_multiplier > 0.0) {
        return Err(SimulatorError::InvalidSetting {
            name: "rate_multiplier",
            message: format!("{} is not a positive number", settings.rate_multiplier),
        });
    }
    if let Some(rate) = settings.steady_rate_per_second {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(SimulatorError::InvalidSetting {
                name: "steady_rate_per_second",
                message: format!("{rate} is not a positive number of events per second"),
            });
        }
    }
    if !(0..=MAX_START_MILLIS).contains(&settings.start_millis) {
        return Err(SimulatorError::InvalidSetting {
            name: "start_millis",
            message: format!(
                "{} is not between 1970 and 9999 (epoch milliseconds)",
                settings.start_millis
            ),
        });
    }
    if settings.max_delivery_delay_millis < 0 {
        return Err(SimulatorError::InvalidSetting {
            name: "max_delivery_delay_millis",
            message: "must not be negative".to_string(),
        });
    }
    Ok(())
}
