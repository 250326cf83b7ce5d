//! A seeded, realistic simulator of the event streams of Hebi's 162 smart-security
//! communities, and [`SimulatorSource`], which paces it as a live [`Source`].
//!
//! # Model
//!
//! Background events are independent Poisson processes, one per (grid cell, event type). A
//! device type only occurs in a cell that has a device able to report it (a cell without
//! smoke detectors never reports `FIRE_SMOKE`); fraud-chain events need no device and occur
//! in every cell of a community with residents. Each type has a base rate and an hour-of-day
//! profile (local time, UTC+8) whose mean over the day is 1, so the base rate is the daily
//! mean. The rates (before [`SimulatorSettings::rate_multiplier`]) model a grid cell of about
//! 300 households:
//!
//! | type | rate | daily profile |
//! |---|---|---|
//! | FIRE_SMOKE | 0.03 / cell / day (mostly cooking smoke) | meal times |
//! | GAS_LEAK | 0.005 / cell / day | meal times |
//! | ELECTRICAL_FAULT | 0.02 / cell / day | evening load |
//! | SOS | 0.02 / cell / day | mild evening peak |
//! | ELDER_FALL | 0.01 / cell / day | early morning |
//! | ELDER_INACTIVE | 0.015 / cell / day | late morning (no activity since night) |
//! | PERIMETER_INTRUSION | 0.4 / cell / day | night |
//! | TRIPWIRE | 0.6 / cell / day | night |
//! | HIGH_ALTITUDE_THROW | 0.05 / cell / day | daytime activity |
//! | DOOR_FORCED | 0.1 / cell / day | night |
//! | DEVICE_TAMPER | 0.03 / cell / day | night |
//! | EBIKE_IN_ELEVATOR | 3 / cell / day | daytime activity |
//! | EBIKE_CHARGING | 0.4 / cell / day | evening load |
//! | FIRE_LANE_BLOCKED | 1.5 / cell / day | daytime activity |
//! | LOITERING | 25 / cell / day | daytime activity |
//! | CROWD_GATHERING | 2 / cell / day | daytime activity |
//! | TAILGATING | 40 / cell / day | daytime activity |
//! | FRAUD_WARNING | 120 / 10,000 residents / year | office hours |
//! | FRAUD_DISSUADED | 90 / 10,000 residents / year | office hours |
//! | FRAUD_REPORTED | 12 / 10,000 residents / year | office hours |
//! | FRAUD_CASE_FILED | 8 / 10,000 residents / year | office hours |
//! | DEVICE_OFFLINE | 0.2 / cell / day | flat |
//! | VIDEO_LOSS | 0.1 / cell / day | flat |
//!
//! Fraud rates are per resident: a cell's rate is its community's
//! [`Community::population`](crate::grid::Community) divided by the community's cell count.
//! Filed cases (8 per 10,000 residents per year) sit in the 6–10 range typical of a Chinese
//! city before the anti-fraud campaign.
//!
//! # Generation
//!
//! Because every profile is constant within an hour, the superposition of all background
//! processes is, within one hour, a single Poisson process of the total rate of that hour: the
//! simulator draws the next city-wide arrival from an exponential with that total rate (a draw
//! that crosses the hour boundary restarts at the boundary, which is exact by
//! memorylessness), then picks the (cell, type) with a per-hour [`WeightedAliasIndex`]. Scenario
//! modulations (fraud waves, outages) are applied by thinning: an entry affected by a scenario
//! is weighted by its largest multiplier and accepted with probability `multiplier(t) / max`.
//!
//! Scenario bursts (fires, intrusion bursts, the `DEVICE_OFFLINE` events of an outage) are
//! scheduled events merged with the background stream by event time. Scenario events always
//! carry `grid_id`, `community_id` and (when the cell has a suitable device) `device_id`, and an
//! attribute `scenario` naming their scenario kind.
//!
//! # Delivery
//!
//! Each event gets a delivery delay in `[0, max_delivery_delay_millis]` (mostly a few hundred
//! milliseconds, sometimes up to the bound); `received_at = occurred_at + delay`, and events
//! are handed out in delivery order. Hence an event never arrives more than
//! `max_delivery_delay_millis` (event time) after an event that occurred later than it. A
//! fraction of events is delivered twice (same `event_id`, identical content, the copy later
//! but still within the bound).
//!
//! Everything is deterministic for a seed ([`ChaCha8Rng`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use geo::{BoundingRect, Contains};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::weighted::WeightedAliasIndex;
use rand_distr::{Distribution, Exp1};
use serde::{Deserialize, Serialize};

use super::{RecordPayload, Source, SourceError, SourceRecord};
use crate::event::{default_severity, ALL_EVENT_TYPES};
use crate::grid::{coords, CellIndex, CommunityIndex, GridRegistry};
use crate::proto::{Crs, EventType, IncidentEvent};
use crate::time::{millis_to_rfc3339, millis_to_timestamp, rfc3339_to_millis};

/// Milliseconds per hour.
const HOUR_MILLIS: i64 = 3_600_000;
/// Milliseconds per minute.
const MINUTE_MILLIS: i64 = 60_000;
/// Milliseconds per day.
const DAY_MILLIS: f64 = 86_400_000.0;
/// Offset of China Standard Time from UTC (the daily profiles are in local time).
const LOCAL_UTC_OFFSET_MILLIS: i64 = 8 * HOUR_MILLIS;
/// Days per year, for per-year fraud rates.
const DAYS_PER_YEAR: f64 = 365.0;
/// Most events an intrusion burst may produce per minute (one per millisecond).
const MAX_INTRUSIONS_PER_MINUTE: u32 = 60_000;
/// Latest accepted simulation start: 9999-12-31T23:59:59.999Z (keeps every clock computation
/// far from overflow).
const MAX_START_MILLIS: i64 = 253_402_300_799_999;
/// Attempts at drawing a coordinate that resolves back to its cell before falling back to a
/// grid-id event.
const COORDINATE_ATTEMPTS: usize = 4;

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
        }
    }
}

/// An instant of a scenario: RFC 3339 text (`"2026-03-02T20:15:00+08:00"`) or an offset from
/// the simulation start (`"+2h"`, `"+1h30m"`, `"+90s"`, `"+1d"`; units `ms`, `s`, `m`, `h`,
/// `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ScenarioTime {
    /// An absolute instant, epoch milliseconds.
    At(i64),
    /// Milliseconds after [`SimulatorSettings::start_millis`].
    AfterStart(i64),
}

impl ScenarioTime {
    /// The instant in epoch milliseconds for a simulation starting at `start_millis`.
    pub fn resolve(self, start_millis: i64) -> i64 {
        match self {
            ScenarioTime::At(millis) => millis,
            ScenarioTime::AfterStart(offset) => start_millis.saturating_add(offset),
        }
    }
}

impl TryFrom<String> for ScenarioTime {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let trimmed = text.trim();
        if let Some(offset_text) = trimmed.strip_prefix('+') {
            return parse_duration_millis(offset_text).map(ScenarioTime::AfterStart);
        }
        rfc3339_to_millis(trimmed).map(ScenarioTime::At).map_err(|error| {
            format!("scenario time {text:?} is neither RFC 3339 nor an offset like \"+2h\": {error}")
        })
    }
}

impl From<ScenarioTime> for String {
    fn from(time: ScenarioTime) -> String {
        match time {
            ScenarioTime::At(millis) => millis_to_rfc3339(millis),
            ScenarioTime::AfterStart(offset) => format!("+{offset}ms"),
        }
    }
}

/// A scenario duration: `"30m"`, `"2h"`, `"1h30m"`, `"90s"`, `"1d"` (units `ms`, `s`, `m`, `h`,
/// `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScenarioDuration(pub i64);

impl TryFrom<String> for ScenarioDuration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        parse_duration_millis(text.trim()).map(ScenarioDuration)
    }
}

impl From<ScenarioDuration> for String {
    fn from(duration: ScenarioDuration) -> String {
        format!("{}ms", duration.0)
    }
}

/// Parses `"1h30m"`-style durations (humantime syntax) into milliseconds.
fn parse_duration_millis(text: &str) -> Result<i64, String> {
    let duration =
        humantime::parse_duration(text).map_err(|error| format!("duration {text:?}: {error}"))?;
    i64::try_from(duration.as_millis()).map_err(|_| format!("duration {text:?} overflows"))
}

/// An incident layered on the background traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scenario {
    /// A fire: a burst of `FIRE_SMOKE` from up to four smoke detectors of one cell, the first
    /// at `at`, the others joining as smoke spreads, each repeating its alarm, over about five
    /// minutes.
    Fire {
        /// The cell on fire.
        grid_id: String,
        /// When the first detector alarms.
        at: ScenarioTime,
    },
    /// A burst of `PERIMETER_INTRUSION` in one cell: `per_minute` events in every minute of
    /// `[start, start + duration)` (at least `per_minute × minutes` events in all).
    IntrusionBurst {
        /// The cell.
        grid_id: String,
        /// First minute of the burst.
        start: ScenarioTime,
        /// Length of the burst.
        duration: ScenarioDuration,
        /// Events per minute.
        per_minute: u32,
    },
    /// A fraud wave: the fraud-chain rates (warning, dissuaded, reported, case filed) of one
    /// community are multiplied by `multiplier` during `[start, start + duration)`.
    FraudWave {
        /// The 12-digit community id.
        community_id: String,
        /// Start of the wave.
        start: ScenarioTime,
        /// Length of the wave.
        duration: ScenarioDuration,
        /// Rate multiplier (10 = ten times the usual fraud traffic; 0 silences it).
        multiplier: f64,
    },
    /// A device outage: every device of the cell reports `DEVICE_OFFLINE` at `start`, then the
    /// cell is silent (no events at all) until `start + duration`.
    DeviceOutage {
        /// The cell.
        grid_id: String,
        /// When the devices go offline.
        start: ScenarioTime,
        /// How long the cell stays silent.
        duration: ScenarioDuration,
    },
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

/// Daily profile shapes (hour 0..23, local time); normalized to mean 1 when used.
mod profiles {
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
        EventType::FireSmoke => (Cell(0.03), &profiles::MEAL_TIMES),
        EventType::GasLeak => (Cell(0.005), &profiles::MEAL_TIMES),
        EventType::ElectricalFault => (Cell(0.02), &profiles::EVENING_LOAD),
        EventType::Sos => (Cell(0.02), &profiles::MILD_EVENING),
        EventType::ElderFall => (Cell(0.01), &profiles::EARLY_MORNING),
        EventType::ElderInactive => (Cell(0.015), &profiles::LATE_MORNING),
        EventType::PerimeterIntrusion => (Cell(0.4), &profiles::NIGHT),
        EventType::Tripwire => (Cell(0.6), &profiles::NIGHT),
        EventType::HighAltitudeThrow => (Cell(0.05), &profiles::DAYTIME_ACTIVITY),
        EventType::DoorForced => (Cell(0.1), &profiles::NIGHT),
        EventType::DeviceTamper => (Cell(0.03), &profiles::NIGHT),
        EventType::EbikeInElevator => (Cell(3.0), &profiles::DAYTIME_ACTIVITY),
        EventType::EbikeCharging => (Cell(0.4), &profiles::EVENING_LOAD),
        EventType::FireLaneBlocked => (Cell(1.5), &profiles::DAYTIME_ACTIVITY),
        EventType::Loitering => (Cell(25.0), &profiles::DAYTIME_ACTIVITY),
        EventType::CrowdGathering => (Cell(2.0), &profiles::DAYTIME_ACTIVITY),
        EventType::Tailgating => (Cell(40.0), &profiles::DAYTIME_ACTIVITY),
        EventType::FraudWarning => (Residents(120.0), &profiles::OFFICE_HOURS),
        EventType::FraudDissuaded => (Residents(90.0), &profiles::OFFICE_HOURS),
        EventType::FraudReported => (Residents(12.0), &profiles::OFFICE_HOURS),
        EventType::FraudCaseFiled => (Residents(8.0), &profiles::OFFICE_HOURS),
        EventType::DeviceOffline => (Cell(0.2), &profiles::FLAT),
        EventType::VideoLoss => (Cell(0.1), &profiles::FLAT),
        EventType::Unspecified => (Cell(0.0), &profiles::FLAT),
    }
}

/// Whether the type belongs to the anti-fraud chain (no device, reported by people).
fn is_fraud_type(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::FraudWarning
            | EventType::FraudDissuaded
            | EventType::FraudReported
            | EventType::FraudCaseFiled
    )
}

/// The daily profile of a type normalized to mean 1.
fn normalized_profile(event_type: EventType) -> [f64; 24] {
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
fn local_hour_of_day(millis: i64) -> usize {
    let local_hours = millis
        .saturating_add(LOCAL_UTC_OFFSET_MILLIS)
        .div_euclid(HOUR_MILLIS);
    // rem_euclid(24) is in 0..24.
    local_hours.rem_euclid(24) as usize
}

/// The first full-hour instant strictly after `millis`.
fn next_hour_boundary(millis: i64) -> i64 {
    let local_hours = millis
        .saturating_add(LOCAL_UTC_OFFSET_MILLIS)
        .div_euclid(HOUR_MILLIS);
    (local_hours + 1)
        .saturating_mul(HOUR_MILLIS)
        .saturating_sub(LOCAL_UTC_OFFSET_MILLIS)
}

/// One background Poisson process: a (cell, type) pair.
#[derive(Debug, Clone)]
struct BackgroundEntry {
    /// The cell the events occur in.
    cell: CellIndex,
    /// The type of the events.
    event_type: EventType,
    /// Indexes (into `devices_in_cell(cell)`) of the devices able to report the type; empty
    /// for fraud types.
    capable_devices: Vec<u32>,
    /// Mean rate in events per millisecond (base rate × rate multiplier).
    mean_rate_per_millis: f64,
    /// Largest scenario multiplier that can apply to this entry (1 when none raises it); the
    /// alias weights use it so that thinning can only lower the rate.
    max_multiplier: f64,
    /// Whether some scenario modulates this entry (skip the thinning draw when not).
    modulated: bool,
}

/// A fraud wave resolved against the registry.
#[derive(Debug, Clone)]
struct ResolvedFraudWave {
    /// The community.
    community: CommunityIndex,
    /// Start, epoch milliseconds.
    start_millis: i64,
    /// End (exclusive), epoch milliseconds.
    end_millis: i64,
    /// Rate multiplier.
    multiplier: f64,
}

/// An outage resolved against the registry.
#[derive(Debug, Clone)]
struct ResolvedOutage {
    /// The silent cell.
    cell: CellIndex,
    /// Start, epoch milliseconds.
    start_millis: i64,
    /// End (exclusive), epoch milliseconds.
    end_millis: i64,
}

/// An intrusion burst resolved against the registry.
#[derive(Debug, Clone)]
struct ResolvedIntrusionBurst {
    /// The cell.
    cell: CellIndex,
    /// Start, epoch milliseconds.
    start_millis: i64,
    /// Spacing of events, milliseconds.
    interval_millis: f64,
    /// Number of events in all.
    event_count: u64,
    /// Intrusion-capable devices of the cell (indexes into `devices_in_cell`).
    devices: Vec<u32>,
}

/// What a scheduled (scenario) event is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ScheduledKind {
    /// A fire alarm from a detector (index into `devices_in_cell`) or from no known device.
    Fire {
        /// The cell.
        cell: CellIndex,
        /// The detector.
        device: Option<u32>,
    },
    /// The `ordinal`-th event of an intrusion burst.
    Intrusion {
        /// Index into the resolved bursts.
        burst: usize,
        /// 0-based ordinal within the burst.
        ordinal: u64,
    },
    /// A device going offline at the start of an outage.
    Offline {
        /// The cell.
        cell: CellIndex,
        /// The device (index into `devices_in_cell`).
        device: u32,
    },
}

/// A scheduled event, ordered by event time then insertion order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ScheduledEvent {
    /// Event time, epoch milliseconds.
    occurred_millis: i64,
    /// Insertion order (ties).
    order: u64,
    /// What to generate.
    kind: ScheduledKind,
}

/// An event waiting in the delivery queue.
#[derive(Debug, Clone)]
struct QueuedDelivery {
    /// When the event is delivered, epoch milliseconds.
    delivery_millis: i64,
    /// Insertion order (ties).
    order: u64,
    /// The event.
    event: IncidentEvent,
}

impl PartialEq for QueuedDelivery {
    fn eq(&self, other: &Self) -> bool {
        (self.delivery_millis, self.order) == (other.delivery_millis, other.order)
    }
}

impl Eq for QueuedDelivery {}

impl PartialOrd for QueuedDelivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueuedDelivery {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.delivery_millis, self.order).cmp(&(other.delivery_millis, other.order))
    }
}

/// Geometry of a cell for coordinate-only events.
#[derive(Debug, Clone, Copy)]
struct CellGeometry {
    /// WGS-84 point inside the cell (the registry's representative point: the centroid
    /// unless the polygon is concave around it), the centre of the jitter.
    centroid: (f64, f64),
    /// Half extents of the bounding box (lon, lat), for jitter.
    half_extent: (f64, f64),
}

/// The next background arrival, drawn but not yet turned into an event.
#[derive(Debug, Clone, Copy)]
struct BackgroundArrival {
    /// Event time, epoch milliseconds.
    occurred_millis: i64,
    /// Index into the background entries.
    entry: usize,
}

/// Representation of an event's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocationForm {
    /// grid_id, community_id and device_id (when there is one).
    Full,
    /// device_id and community_id, no grid_id.
    DeviceOnly,
    /// lat/lon in GCJ-02 or BD-09, no grid_id, no device_id.
    CoordinatesOnly,
}

/// The seeded simulator: an endless stream of [`IncidentEvent`]s in delivery order.
pub struct Simulator {
    /// The settings it was built from.
    settings: SimulatorSettings,
    /// The registry events are drawn from.
    registry: Arc<GridRegistry>,
    /// The random generator (all randomness comes from here).
    rng: ChaCha8Rng,
    /// Background (cell, type) processes.
    entries: Vec<BackgroundEntry>,
    /// Per local hour: alias table over `entries` weighted by the hour's (max) rate.
    hourly_alias: Vec<Option<WeightedAliasIndex<f64>>>,
    /// Per local hour: total (max) rate in events per millisecond.
    hourly_total_rate: [f64; 24],
    /// Background clock: time of the last background arrival (fractional milliseconds).
    background_clock_millis: f64,
    /// The next background arrival, once drawn.
    pending_background: Option<BackgroundArrival>,
    /// Scenario events not yet generated, earliest first.
    scheduled: BinaryHeap<Reverse<ScheduledEvent>>,
    /// Counter for `ScheduledEvent::order`.
    scheduled_order: u64,
    /// Resolved fraud waves.
    fraud_waves: Vec<ResolvedFraudWave>,
    /// Resolved outages.
    outages: Vec<ResolvedOutage>,
    /// Resolved intrusion bursts.
    intrusion_bursts: Vec<ResolvedIntrusionBurst>,
    /// Per cell: geometry for coordinate events (None when the polygon is degenerate).
    cell_geometry: Vec<Option<CellGeometry>>,
    /// Events generated so far (the sequence in `event_id`).
    generated_count: u64,
    /// Events waiting for their delivery time, earliest first.
    delivery_queue: BinaryHeap<Reverse<QueuedDelivery>>,
    /// Counter for `QueuedDelivery::order`.
    delivery_order: u64,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Simulator")
            .field("settings", &self.settings)
            .field("entries", &self.entries.len())
            .field("generated_count", &self.generated_count)
            .finish()
    }
}

fn check_fraction(name: &'static str, value: f64) -> Result<(), SimulatorError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(SimulatorError::InvalidSetting {
        name,
        message: format!("{value} is not a fraction between 0 and 1"),
    })
}

fn validate_settings(settings: &SimulatorSettings) -> Result<(), SimulatorError> {
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

impl Simulator {
    /// Builds a simulator over `registry`. Fails on invalid settings or scenarios naming
    /// cells/communities that are not in the registry.
    pub fn new(
        settings: SimulatorSettings,
        registry: Arc<GridRegistry>,
    ) -> Result<Simulator, SimulatorError> {
        validate_settings(&settings)?;
        let start_millis = settings.start_millis;
        let mut fraud_waves = Vec::new();
        let mut outages = Vec::new();
        let mut intrusion_bursts = Vec::new();
        let mut fires = Vec::new();
        for (index, scenario) in settings.scenarios.iter().enumerate() {
            let scenario_error =
                |kind: &'static str, message: String| SimulatorError::InvalidScenario {
                    index,
                    kind,
                    message,
                };
            let cell_of = |kind: &'static str, grid_id: &str| {
                registry
                    .cell_by_grid_id(grid_id)
                    .ok_or_else(|| scenario_error(kind, format!("unknown grid_id {grid_id:?}")))
            };
            let positive = |kind: &'static str, duration: ScenarioDuration| {
                if duration.0 > 0 {
                    return Ok(duration.0);
                }
                Err(scenario_error(
                    kind,
                    "duration must be positive".to_string(),
                ))
            };
            match scenario {
                Scenario::Fire { grid_id, at } => {
                    let cell = cell_of("fire", grid_id)?;
                    fires.push((cell, at.resolve(start_millis)));
                }
                Scenario::IntrusionBurst {
                    grid_id,
                    start,
                    duration,
                    per_minute,
                } => {
                    let kind = "intrusion_burst";
                    let cell = cell_of(kind, grid_id)?;
                    let duration_millis = positive(kind, *duration)?;
                    if *per_minute == 0 || *per_minute > MAX_INTRUSIONS_PER_MINUTE {
                        return Err(scenario_error(
                            kind,
                            format!("per_minute must be between 1 and {MAX_INTRUSIONS_PER_MINUTE}"),
                        ));
                    }
                    let minutes = (duration_millis as f64) / (MINUTE_MILLIS as f64);
                    let event_count = (minutes * f64::from(*per_minute)).ceil() as u64;
                    let devices =
                        capable_device_indexes(&registry, cell, EventType::PerimeterIntrusion);
                    intrusion_bursts.push(ResolvedIntrusionBurst {
                        cell,
                        start_millis: start.resolve(start_millis),
                        interval_millis: (MINUTE_MILLIS as f64) / f64::from(*per_minute),
                        event_count,
                        devices,
                    });
                }
                Scenario::FraudWave {
                    community_id,
                    start,
                    duration,
                    multiplier,
                } => {
                    let kind = "fraud_wave";
                    let community = registry.community_by_id(community_id).ok_or_else(|| {
                        scenario_error(kind, format!("unknown community_id {community_id:?}"))
                    })?;
                    let duration_millis = positive(kind, *duration)?;
                    if !(multiplier.is_finite() && *multiplier >= 0.0) {
                        return Err(scenario_error(
                            kind,
                            format!("multiplier {multiplier} must be a non-negative number"),
                        ));
                    }
                    let wave_start = start.resolve(start_millis);
                    fraud_waves.push(ResolvedFraudWave {
                        community,
                        start_millis: wave_start,
                        end_millis: wave_start.saturating_add(duration_millis),
                        multiplier: *multiplier,
                    });
                }
                Scenario::DeviceOutage {
                    grid_id,
                    start,
                    duration,
                } => {
                    let kind = "device_outage";
                    let cell = cell_of(kind, grid_id)?;
                    let duration_millis = positive(kind, *duration)?;
                    let outage_start = start.resolve(start_millis);
                    outages.push(ResolvedOutage {
                        cell,
                        start_millis: outage_start,
                        end_millis: outage_start.saturating_add(duration_millis),
                    });
                }
            }
        }

        let entries = build_entries(&registry, &settings, &fraud_waves, &outages);
        let mut profiles = vec![[0.0; 24]; EventType::VideoLoss as usize + 1];
        for event_type in ALL_EVENT_TYPES {
            if let Some(slot) = profiles.get_mut(event_type as usize) {
                *slot = normalized_profile(event_type);
            }
        }
        let mut hourly_alias = Vec::with_capacity(24);
        let mut hourly_total_rate = [0.0; 24];
        for (hour, total_slot) in hourly_total_rate.iter_mut().enumerate() {
            let weights: Vec<f64> = entries
                .iter()
                .map(|entry| {
                    let profile_value = profiles
                        .get(entry.event_type as usize)
                        .and_then(|profile| profile.get(hour))
                        .copied()
                        .unwrap_or(0.0);
                    entry.mean_rate_per_millis * profile_value * entry.max_multiplier
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 && total.is_finite() {
                *total_slot = total;
                hourly_alias.push(WeightedAliasIndex::new(weights).ok());
            } else {
                hourly_alias.push(None);
            }
        }
        if hourly_alias.iter().all(Option::is_none) {
            return Err(SimulatorError::NoEventSources);
        }
        for (hour, alias) in hourly_alias.iter().enumerate() {
            if alias.is_none() {
                if let Some(total_slot) = hourly_total_rate.get_mut(hour) {
                    *total_slot = 0.0;
                }
            }
        }

        let cell_geometry = registry
            .cells()
            .iter()
            .enumerate()
            .map(|(cell_position, cell)| {
                let rect = cell.polygon.bounding_rect()?;
                Some(CellGeometry {
                    centroid: registry.cell_centroid(CellIndex(cell_position as u32)),
                    half_extent: (rect.width() / 2.0, rect.height() / 2.0),
                })
            })
            .collect();

        let mut simulator = Simulator {
            rng: ChaCha8Rng::seed_from_u64(settings.seed),
            background_clock_millis: settings.start_millis as f64,
            settings,
            registry,
            entries,
            hourly_alias,
            hourly_total_rate,
            pending_background: None,
            scheduled: BinaryHeap::new(),
            scheduled_order: 0,
            fraud_waves,
            outages,
            intrusion_bursts,
            cell_geometry,
            generated_count: 0,
            delivery_queue: BinaryHeap::new(),
            delivery_order: 0,
        };
        simulator.schedule_scenarios(&fires);
        Ok(simulator)
    }

    /// The settings the simulator was built from.
    pub fn settings(&self) -> &SimulatorSettings {
        &self.settings
    }

    /// The registry events are drawn from.
    pub fn registry(&self) -> &Arc<GridRegistry> {
        &self.registry
    }

    /// Events generated so far (excluding duplicate copies).
    pub fn generated_count(&self) -> u64 {
        self.generated_count
    }

    /// Expected background events of `event_type` per day city-wide (daily mean, rate
    /// multiplier included, scenarios excluded).
    pub fn expected_daily_count(&self, event_type: EventType) -> f64 {
        self.entries
            .iter()
            .filter(|entry| entry.event_type == event_type)
            .map(|entry| entry.mean_rate_per_millis * DAY_MILLIS)
            .sum()
    }

    /// The next event in delivery order.
    pub fn next_event(&mut self) -> IncidentEvent {
        self.next_delivery().1
    }

    /// The next event in delivery order with its delivery time (epoch milliseconds). The
    /// delivery time equals `received_at`, except for duplicate copies, which are delivered
    /// later than the `received_at` they share with the original.
    pub fn next_delivery(&mut self) -> (i64, IncidentEvent) {
        loop {
            let next_background = self.peek_background();
            let next_scheduled = self
                .scheduled
                .peek()
                .map(|Reverse(scheduled)| scheduled.occurred_millis);
            let frontier = match next_scheduled {
                Some(scheduled_millis) => scheduled_millis.min(next_background.occurred_millis),
                None => next_background.occurred_millis,
            };
            if let Some(Reverse(head)) = self.delivery_queue.peek() {
                if head.delivery_millis <= frontier {
                    if let Some(Reverse(delivered)) = self.delivery_queue.pop() {
                        return (delivered.delivery_millis, delivered.event);
                    }
                }
            }
            let generated = if next_scheduled
                .is_some_and(|scheduled_millis| scheduled_millis < next_background.occurred_millis)
            {
                self.generate_scheduled()
            } else {
                self.pending_background = None;
                self.generate_background(next_background)
            };
            if let Some(event) = generated {
                self.enqueue(event);
            }
        }
    }

    /// Draws (once) and returns the next background arrival.
    fn peek_background(&mut self) -> BackgroundArrival {
        if let Some(arrival) = self.pending_background {
            return arrival;
        }
        let arrival = self.draw_background_arrival();
        self.pending_background = Some(arrival);
        arrival
    }

    /// Draws the next accepted background arrival (superposition per hour plus thinning).
    fn draw_background_arrival(&mut self) -> BackgroundArrival {
        loop {
            let clock = self.background_clock_millis;
            let clock_millis = clock.floor() as i64;
            let hour = local_hour_of_day(clock_millis);
            let boundary = next_hour_boundary(clock_millis) as f64;
            let total_rate = self.hourly_total_rate.get(hour).copied().unwrap_or(0.0);
            let alias = self.hourly_alias.get(hour).and_then(Option::as_ref);
            let Some(alias) = alias.filter(|_| total_rate > 0.0) else {
                self.background_clock_millis = boundary;
                continue;
            };
            let unit_exponential: f64 = Exp1.sample(&mut self.rng);
            let candidate = clock + unit_exponential / total_rate;
            if candidate >= boundary {
                self.background_clock_millis = boundary;
                continue;
            }
            self.background_clock_millis = candidate;
            let entry_index = alias.sample(&mut self.rng);
            let Some(entry) = self.entries.get(entry_index) else {
                continue;
            };
            let occurred_millis = candidate.floor() as i64;
            if entry.modulated {
                let multiplier = self.multiplier_at(entry, occurred_millis);
                let acceptance = multiplier / entry.max_multiplier;
                if acceptance < 1.0 && self.rng.random::<f64>() >= acceptance {
                    continue;
                }
            }
            return BackgroundArrival {
                occurred_millis,
                entry: entry_index,
            };
        }
    }

    /// The scenario multiplier of an entry's rate at an instant.
    fn multiplier_at(&self, entry: &BackgroundEntry, millis: i64) -> f64 {
        if self.is_silenced(entry.cell, millis) {
            return 0.0;
        }
        if !is_fraud_type(entry.event_type) {
            return 1.0;
        }
        let community = self.registry.cell(entry.cell).community;
        self.fraud_waves
            .iter()
            .filter(|wave| {
                wave.community == community
                    && (wave.start_millis..wave.end_millis).contains(&millis)
            })
            .map(|wave| wave.multiplier)
            .product()
    }

    /// Whether a cell is in an outage at an instant.
    fn is_silenced(&self, cell: CellIndex, millis: i64) -> bool {
        self.outages.iter().any(|outage| {
            outage.cell == cell && (outage.start_millis..outage.end_millis).contains(&millis)
        })
    }

    fn push_scheduled(&mut self, occurred_millis: i64, kind: ScheduledKind) {
        self.scheduled_order += 1;
        self.scheduled.push(Reverse(ScheduledEvent {
            occurred_millis,
            order: self.scheduled_order,
            kind,
        }));
    }

    /// Schedules fires, the first event of each intrusion burst and the offline events of
    /// outages.
    fn schedule_scenarios(&mut self, fires: &[(CellIndex, i64)]) {
        for &(cell, at_millis) in fires {
            let detectors = capable_device_indexes(&self.registry, cell, EventType::FireSmoke);
            let detector_slots: Vec<Option<u32>> = if detectors.is_empty() {
                vec![None]
            } else {
                let rotation = self.rng.random_range(0..detectors.len());
                (0..detectors.len().min(4))
                    .map(|offset| {
                        detectors
                            .get((rotation + offset) % detectors.len())
                            .copied()
                    })
                    .collect()
            };
            let mut detector_start = at_millis;
            for device in detector_slots {
                let alarms = self.rng.random_range(3..=5_u32);
                let mut alarm_millis = detector_start;
                for _ in 0..alarms {
                    self.push_scheduled(alarm_millis, ScheduledKind::Fire { cell, device });
                    alarm_millis += self.rng.random_range(30_000..=60_000_i64);
                }
                detector_start += self.rng.random_range(20_000..=60_000_i64);
            }
        }
        for burst_index in 0..self.intrusion_bursts.len() {
            self.schedule_intrusion(burst_index, 0);
        }
        let outages = self.outages.clone();
        for outage in outages {
            let device_count = self.registry.devices_in_cell(outage.cell).len();
            for device in 0..device_count {
                let stagger = self.rng.random_range(0..2_000_i64);
                self.push_scheduled(
                    outage.start_millis.saturating_add(stagger),
                    ScheduledKind::Offline {
                        cell: outage.cell,
                        device: device as u32,
                    },
                );
            }
        }
    }

    fn schedule_intrusion(&mut self, burst_index: usize, ordinal: u64) {
        let Some(burst) = self.intrusion_bursts.get(burst_index) else {
            return;
        };
        if ordinal >= burst.event_count {
            return;
        }
        let slot_start = burst.start_millis as f64 + ordinal as f64 * burst.interval_millis;
        let interval = burst.interval_millis;
        let jitter = self.rng.random::<f64>() * interval;
        self.push_scheduled(
            (slot_start + jitter).floor() as i64,
            ScheduledKind::Intrusion {
                burst: burst_index,
                ordinal,
            },
        );
    }

    /// Generates the earliest scheduled event (None when the cell is silenced).
    fn generate_scheduled(&mut self) -> Option<IncidentEvent> {
        let Reverse(scheduled) = self.scheduled.pop()?;
        let occurred_millis = scheduled.occurred_millis;
        match scheduled.kind {
            ScheduledKind::Fire { cell, device } => {
                if self.is_silenced(cell, occurred_millis) {
                    return None;
                }
                let mut event = self.scenario_event(cell, device, EventType::FireSmoke, "fire");
                event.severity = 1;
                Some(self.stamp(event, occurred_millis))
            }
            ScheduledKind::Intrusion { burst, ordinal } => {
                self.schedule_intrusion(burst, ordinal + 1);
                let resolved = self.intrusion_bursts.get(burst)?;
                let cell = resolved.cell;
                let device = match resolved.devices.len() {
                    0 => None,
                    count => resolved
                        .devices
                        .get((ordinal % count as u64) as usize)
                        .copied(),
                };
                if self.is_silenced(cell, occurred_millis) {
                    return None;
                }
                let event = self.scenario_event(
                    cell,
                    device,
                    EventType::PerimeterIntrusion,
                    "intrusion_burst",
                );
                Some(self.stamp(event, occurred_millis))
            }
            ScheduledKind::Offline { cell, device } => {
                let event = self.scenario_event(
                    cell,
                    Some(device),
                    EventType::DeviceOffline,
                    "device_outage",
                );
                Some(self.stamp(event, occurred_millis))
            }
        }
    }

    /// A scenario event with full location (grid, community, device when known).
    fn scenario_event(
        &self,
        cell: CellIndex,
        device: Option<u32>,
        event_type: EventType,
        scenario_kind: &str,
    ) -> IncidentEvent {
        let cell_record = self.registry.cell(cell);
        let device_id = device
            .and_then(|device_index| {
                self.registry
                    .devices_in_cell(cell)
                    .get(device_index as usize)
            })
            .map(|device| device.device_id.clone())
            .unwrap_or_default();
        IncidentEvent {
            source: "simulator".to_string(),
            device_id,
            community_id: self.registry.community_of(cell).id.clone(),
            grid_id: cell_record.grid_id.clone(),
            event_type: event_type as i32,
            attributes: [("scenario".to_string(), scenario_kind.to_string())]
                .into_iter()
                .collect(),
            ..IncidentEvent::default()
        }
    }

    /// Generates the event of a background arrival.
    fn generate_background(&mut self, arrival: BackgroundArrival) -> Option<IncidentEvent> {
        let entry = self.entries.get(arrival.entry)?;
        let cell = entry.cell;
        let event_type = entry.event_type;
        let device_index = match entry.capable_devices.len() {
            0 => None,
            count => entry
                .capable_devices
                .get(self.rng.random_range(0..count))
                .copied(),
        };
        let registry = Arc::clone(&self.registry);
        let device_id = device_index
            .and_then(|index| registry.devices_in_cell(cell).get(index as usize))
            .map(|device| device.device_id.clone())
            .unwrap_or_default();
        let location_draw: f64 = self.rng.random();
        let mut location_form = if location_draw < self.settings.coordinate_fraction {
            LocationForm::CoordinatesOnly
        } else if location_draw
            < self.settings.coordinate_fraction + self.settings.device_only_fraction
            && !device_id.is_empty()
        {
            LocationForm::DeviceOnly
        } else {
            LocationForm::Full
        };
        let mut coordinates = None;
        if location_form == LocationForm::CoordinatesOnly {
            coordinates = self.coordinates_in(cell);
            if coordinates.is_none() {
                location_form = LocationForm::Full;
            }
        }
        let severity_draw: f64 = self.rng.random();
        let severity = if severity_draw < 0.9 {
            0
        } else if severity_draw < 0.97 {
            u32::from(default_severity(event_type))
        } else {
            self.rng.random_range(1..=4_u32)
        };
        let mut event = IncidentEvent {
            source: "simulator".to_string(),
            community_id: registry.community_of(cell).id.clone(),
            event_type: event_type as i32,
            severity,
            ..IncidentEvent::default()
        };
        match location_form {
            LocationForm::Full => {
                event.grid_id = registry.cell(cell).grid_id.clone();
                event.device_id = device_id;
            }
            LocationForm::DeviceOnly => event.device_id = device_id,
            LocationForm::CoordinatesOnly => {
                if let Some((lon, lat, crs)) = coordinates {
                    event.lon = Some(lon);
                    event.lat = Some(lat);
                    event.crs = crs as i32;
                }
            }
        }
        if is_fraud_type(event_type) {
            let channel = if event_type == EventType::FraudWarning {
                "96110"
            } else {
                "grid_worker"
            };
            event.source = channel.to_string();
            event
                .attributes
                .insert("phone".to_string(), self.phone_number());
            event
                .attributes
                .insert("channel".to_string(), channel.to_string());
        }
        Some(self.stamp(event, arrival.occurred_millis))
    }

    /// A Chinese mobile number: "1", a digit 3–9, nine digits.
    fn phone_number(&mut self) -> String {
        let second_digit = self.rng.random_range(3..=9_u32);
        let rest = self.rng.random_range(0..1_000_000_000_u32);
        format!("1{second_digit}{rest:09}")
    }

    /// A point near the cell's centroid, inside the cell, in GCJ-02 or BD-09, that the
    /// registry resolves back to the cell.
    fn coordinates_in(&mut self, cell: CellIndex) -> Option<(f64, f64, Crs)> {
        let geometry = self.cell_geometry.get(cell.0 as usize).copied().flatten()?;
        let crs = if self.rng.random::<bool>() {
            Crs::Gcj02
        } else {
            Crs::Bd09
        };
        let registry = Arc::clone(&self.registry);
        let polygon = &registry.cell(cell).polygon;
        for _ in 0..COORDINATE_ATTEMPTS {
            let lon_jitter = self.rng.random_range(-0.5..=0.5) * geometry.half_extent.0;
            let lat_jitter = self.rng.random_range(-0.5..=0.5) * geometry.half_extent.1;
            let wgs84_lon = geometry.centroid.0 + lon_jitter;
            let wgs84_lat = geometry.centroid.1 + lat_jitter;
            if !polygon.contains(&geo::Point::new(wgs84_lon, wgs84_lat)) {
                continue;
            }
            let (lon, lat) = coords::from_wgs84(wgs84_lon, wgs84_lat, crs);
            if registry.cell_at(lon, lat, crs) == Some(cell) {
                return Some((lon, lat, crs));
            }
        }
        None
    }

    /// Sets id and times of a generated event.
    fn stamp(&mut self, mut event: IncidentEvent, occurred_millis: i64) -> IncidentEvent {
        event.event_id = format!("sim-{:x}-{:010}", self.settings.seed, self.generated_count);
        self.generated_count += 1;
        event.occurred_at = Some(millis_to_timestamp(occurred_millis));
        event
    }

    /// A delivery delay: mostly short (exponential, mean a few hundred milliseconds), one in
    /// ten uniform up to the bound.
    fn delivery_delay(&mut self) -> i64 {
        let max_delay = self.settings.max_delivery_delay_millis;
        if max_delay <= 0 {
            return 0;
        }
        if self.rng.random::<f64>() < 0.1 {
            return self.rng.random_range(0..=max_delay);
        }
        let mean = (max_delay as f64 / 16.0).clamp(1.0, 300.0);
        let unit_exponential: f64 = Exp1.sample(&mut self.rng);
        ((unit_exponential * mean) as i64).min(max_delay)
    }

    /// Sets `received_at` and queues the event (and maybe a duplicate) for delivery.
    fn enqueue(&mut self, mut event: IncidentEvent) {
        let occurred_millis = event
            .occurred_at
            .as_ref()
            .map(crate::time::timestamp_to_millis)
            .unwrap_or(self.settings.start_millis);
        let delay = self.delivery_delay();
        let delivery_millis = occurred_millis.saturating_add(delay);
        event.received_at = Some(millis_to_timestamp(delivery_millis));
        if self.settings.duplicate_fraction > 0.0
            && self.rng.random::<f64>() < self.settings.duplicate_fraction
        {
            let max_delivery =
                occurred_millis.saturating_add(self.settings.max_delivery_delay_millis);
            let duplicate_delivery = self.rng.random_range(delivery_millis..=max_delivery);
            self.delivery_order += 1;
            self.delivery_queue.push(Reverse(QueuedDelivery {
                delivery_millis: duplicate_delivery,
                order: self.delivery_order,
                event: event.clone(),
            }));
        }
        self.delivery_order += 1;
        self.delivery_queue.push(Reverse(QueuedDelivery {
            delivery_millis,
            order: self.delivery_order,
            event,
        }));
    }
}

/// Indexes (into `devices_in_cell(cell)`) of the devices that can report `event_type`.
fn capable_device_indexes(
    registry: &GridRegistry,
    cell: CellIndex,
    event_type: EventType,
) -> Vec<u32> {
    registry
        .devices_in_cell(cell)
        .iter()
        .enumerate()
        .filter(|(_, device)| device.event_types.contains(&event_type))
        .map(|(index, _)| index as u32)
        .collect()
}

/// The background (cell, type) processes of the registry.
fn build_entries(
    registry: &GridRegistry,
    settings: &SimulatorSettings,
    fraud_waves: &[ResolvedFraudWave],
    outages: &[ResolvedOutage],
) -> Vec<BackgroundEntry> {
    let mut entries = Vec::new();
    for (cell_position, cell) in registry.cells().iter().enumerate() {
        let cell_index = CellIndex(cell_position as u32);
        let community = registry.community(cell.community);
        let cells_in_community = community.cells.len().max(1) as f64;
        let residents_in_cell = f64::from(community.population) / cells_in_community;
        let has_outage = outages.iter().any(|outage| outage.cell == cell_index);
        for event_type in ALL_EVENT_TYPES {
            let (base_rate, _) = type_model(event_type);
            let per_day = match base_rate {
                BaseRate::PerCellPerDay(rate) => rate,
                BaseRate::PerTenThousandResidentsPerYear(rate) => {
                    rate * residents_in_cell / 10_000.0 / DAYS_PER_YEAR
                }
            };
            let capable_devices = if is_fraud_type(event_type) {
                Vec::new()
            } else {
                let devices = capable_device_indexes(registry, cell_index, event_type);
                if devices.is_empty() {
                    continue;
                }
                devices
            };
            let mean_rate_per_millis = per_day * settings.rate_multiplier / DAY_MILLIS;
            if !(mean_rate_per_millis > 0.0 && mean_rate_per_millis.is_finite()) {
                continue;
            }
            let waves: Vec<&ResolvedFraudWave> = if is_fraud_type(event_type) {
                fraud_waves
                    .iter()
                    .filter(|wave| wave.community == cell.community)
                    .collect()
            } else {
                Vec::new()
            };
            // Waves may overlap, so the largest product is the product of the raising ones.
            let max_multiplier: f64 = waves.iter().map(|wave| wave.multiplier.max(1.0)).product();
            entries.push(BackgroundEntry {
                cell: cell_index,
                event_type,
                capable_devices,
                mean_rate_per_millis,
                max_multiplier,
                modulated: has_outage || !waves.is_empty(),
            });
        }
    }
    entries
}

/// How [`SimulatorSource`] releases events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// Release each event when the wall clock reaches its delivery time. Start the simulator
    /// at "now": a start in the past releases the backlog as fast as possible (catching up),
    /// a start in the future waits for it.
    RealTime,
    /// Release events immediately.
    AsFastAsPossible,
}

/// The simulator as a live [`Source`].
#[derive(Debug)]
pub struct SimulatorSource {
    /// The event generator.
    simulator: Simulator,
    /// How events are released.
    pacing: Pacing,
    /// Records to deliver before ending (None: endless, a live source).
    limit: Option<u64>,
    /// Records delivered so far (positions are 1-based delivery sequence numbers).
    delivered: u64,
    /// The next event when it was drawn but is not due yet: (delivery millis, event).
    pending: Option<(i64, IncidentEvent)>,
}

impl SimulatorSource {
    /// Wraps a simulator.
    pub fn new(simulator: Simulator, pacing: Pacing) -> SimulatorSource {
        SimulatorSource {
            simulator,
            pacing,
            limit: None,
            delivered: 0,
            pending: None,
        }
    }

    /// Ends the source after `limit` records.
    pub fn with_limit(mut self, limit: u64) -> SimulatorSource {
        self.limit = Some(limit);
        self
    }

    /// Records delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn take_next(&mut self) -> (i64, IncidentEvent) {
        match self.pending.take() {
            Some(pending) => pending,
            None => self.simulator.next_delivery(),
        }
    }

    fn record(&mut self, event: IncidentEvent) -> SourceRecord {
        self.delivered += 1;
        SourceRecord {
            payload: RecordPayload::Event(Box::new(event)),
            partition: 0,
            position: self.delivered,
        }
    }
}

impl Source for SimulatorSource {
    fn name(&self) -> &'static str {
        "simulator"
    }

    async fn next_batch(
        &mut self,
        max_records: usize,
    ) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let remaining = match self.limit {
            Some(limit) => limit.saturating_sub(self.delivered),
            None => u64::MAX,
        };
        if remaining == 0 {
            return Ok(None);
        }
        let batch_size = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(max_records.max(1));
        let mut batch = Vec::with_capacity(batch_size.min(4096));
        match self.pacing {
            Pacing::AsFastAsPossible => {
                while batch.len() < batch_size {
                    let (_, event) = self.take_next();
                    batch.push(self.record(event));
                }
            }
            Pacing::RealTime => {
                // The next event stays in `pending` while sleeping, so that a cancelled call
                // (e.g. in a `select!` with shutdown) loses nothing.
                let (first_delivery, first_event) = self.take_next();
                self.pending = Some((first_delivery, first_event));
                let wait_millis = first_delivery - crate::time::wall_clock_millis();
                if wait_millis > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait_millis as u64)).await;
                }
                let now_millis = crate::time::wall_clock_millis().max(first_delivery);
                while batch.len() < batch_size {
                    let (delivery, event) = self.take_next();
                    if delivery > now_millis {
                        self.pending = Some((delivery, event));
                        break;
                    }
                    batch.push(self.record(event));
                }
            }
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::time::timestamp_to_millis;

    const WEEK_MILLIS: i64 = 7 * 24 * HOUR_MILLIS;

    fn registry() -> Arc<GridRegistry> {
        GridRegistry::embedded()
    }

    fn settings_with_seed(seed: u64) -> SimulatorSettings {
        SimulatorSettings {
            seed,
            ..SimulatorSettings::default()
        }
    }

    fn occurred_millis(event: &IncidentEvent) -> i64 {
        timestamp_to_millis(event.occurred_at.as_ref().unwrap())
    }

    fn event_type_of(event: &IncidentEvent) -> EventType {
        EventType::try_from(event.event_type).unwrap()
    }

    /// Every event with event time in `[start, end)`, in delivery order (duplicates included).
    fn events_until(simulator: &mut Simulator, end_millis: i64) -> Vec<IncidentEvent> {
        let max_delay = simulator.settings().max_delivery_delay_millis;
        let mut events = Vec::new();
        loop {
            let event = simulator.next_event();
            let occurred = occurred_millis(&event);
            if occurred >= end_millis + max_delay {
                return events;
            }
            if occurred < end_millis {
                events.push(event);
            }
        }
    }

    /// The cell with the most devices (a busy cell, for scenario tests).
    fn busiest_cell(registry: &GridRegistry) -> CellIndex {
        (0..registry.cells().len() as u32)
            .map(CellIndex)
            .max_by_key(|cell| registry.devices_in_cell(*cell).len())
            .unwrap()
    }

    fn assert_within_five_sigma(observed: f64, expected: f64, what: &str) {
        let tolerance = 5.0 * expected.sqrt() + 1.0;
        assert!(
            (observed - expected).abs() <= tolerance,
            "{what}: observed {observed}, expected {expected} ± {tolerance}"
        );
    }

    #[test]
    fn same_seed_gives_the_same_events_and_another_seed_different_ones() {
        let first: Vec<IncidentEvent> = {
            let mut simulator = Simulator::new(settings_with_seed(7), registry()).unwrap();
            (0..1000).map(|_| simulator.next_event()).collect()
        };
        let again: Vec<IncidentEvent> = {
            let mut simulator = Simulator::new(settings_with_seed(7), registry()).unwrap();
            (0..1000).map(|_| simulator.next_event()).collect()
        };
        let other: Vec<IncidentEvent> = {
            let mut simulator = Simulator::new(settings_with_seed(8), registry()).unwrap();
            (0..1000).map(|_| simulator.next_event()).collect()
        };
        assert_eq!(first, again);
        let differing = first
            .iter()
            .zip(&other)
            .filter(|(left, right)| {
                (left.grid_id.as_str(), left.event_type, left.occurred_at)
                    != (right.grid_id.as_str(), right.event_type, right.occurred_at)
            })
            .count();
        assert!(differing > 900, "only {differing} of 1000 events differ");
    }

    #[test]
    fn event_ids_are_unique_except_for_identical_duplicates() {
        let settings = SimulatorSettings {
            duplicate_fraction: 0.05,
            ..settings_with_seed(3)
        };
        let mut simulator = Simulator::new(settings, registry()).unwrap();
        let mut seen: HashMap<String, IncidentEvent> = HashMap::new();
        let mut duplicates = 0_u32;
        for _ in 0..20_000 {
            let event = simulator.next_event();
            assert!(event.event_id.starts_with("sim-3-"), "{}", event.event_id);
            match seen.get(&event.event_id) {
                Some(original) => {
                    assert_eq!(original, &event, "a duplicate must repeat the content");
                    duplicates += 1;
                }
                None => {
                    seen.insert(event.event_id.clone(), event);
                }
            }
        }
        // 5 % of ~20,000 generated events, with wide tolerance.
        assert!(
            (700..=1300).contains(&duplicates),
            "{duplicates} duplicates"
        );
    }

    #[test]
    fn weekly_counts_per_type_match_the_configured_rates() {
        let settings = SimulatorSettings {
            duplicate_fraction: 0.0,
            ..settings_with_seed(11)
        };
        let start = settings.start_millis;
        let mut simulator = Simulator::new(settings, registry()).unwrap();
        let events = events_until(&mut simulator, start + WEEK_MILLIS);
        let mut counts: BTreeMap<i32, f64> = BTreeMap::new();
        for event in &events {
            *counts.entry(event.event_type).or_default() += 1.0;
        }
        let mut checked_types = 0;
        for event_type in ALL_EVENT_TYPES {
            let expected = 7.0 * simulator.expected_daily_count(event_type);
            if expected == 0.0 {
                continue;
            }
            checked_types += 1;
            let observed = counts.get(&(event_type as i32)).copied().unwrap_or(0.0);
            assert_within_five_sigma(observed, expected, &format!("{event_type:?}"));
        }
        assert!(checked_types >= 10, "only {checked_types} types can occur");
    }

    #[test]
    fn fraud_case_rate_scales_with_population_as_documented() {
        let registry = registry();
        let simulator = Simulator::new(settings_with_seed(1), Arc::clone(&registry)).unwrap();
        let population: f64 = registry
            .communities()
            .iter()
            .filter(|community| !community.cells.is_empty())
            .map(|community| f64::from(community.population))
            .sum();
        assert!(population > 0.0);
        let expected_per_year = 8.0 * population / 10_000.0;
        let configured_per_year =
            simulator.expected_daily_count(EventType::FraudCaseFiled) * DAYS_PER_YEAR;
        assert!(
            (configured_per_year - expected_per_year).abs() < 1e-6 * expected_per_year,
            "{configured_per_year} vs {expected_per_year}"
        );
    }

    #[test]
    fn daily_cycle_puts_intrusions_at_night_and_fraud_in_office_hours() {
        let settings = SimulatorSettings {
            rate_multiplier: 4.0,
            duplicate_fraction: 0.0,
            ..settings_with_seed(5)
        };
        let start = settings.start_millis;
        let mut simulator = Simulator::new(settings, registry()).unwrap();
        let events = events_until(&mut simulator, start + 2 * 24 * HOUR_MILLIS);
        let count_in_hours = |types: &[EventType], hours: std::ops::Range<usize>| {
            events
                .iter()
                .filter(|event| types.contains(&event_type_of(event)))
                .filter(|event| hours.contains(&local_hour_of_day(occurred_millis(event))))
                .count() as f64
        };
        let intrusion_types = [EventType::PerimeterIntrusion, EventType::Tripwire];
        let intrusions_at_night = count_in_hours(&intrusion_types, 0..5);
        let intrusions_by_day = count_in_hours(&intrusion_types, 9..14);
        assert!(
            intrusions_at_night > 3.0 * intrusions_by_day,
            "night {intrusions_at_night} vs day {intrusions_by_day}"
        );
        let fraud_types = [EventType::FraudWarning, EventType::FraudDissuaded];
        let fraud_at_night = count_in_hours(&fraud_types, 0..5);
        let fraud_by_day = count_in_hours(&fraud_types, 9..14);
        assert!(
            fraud_by_day > 5.0 * fraud_at_night.max(1.0),
            "day {fraud_by_day} vs night {fraud_at_night}"
        );
    }

    #[test]
    fn delivery_order_disorder_is_bounded_by_the_max_delivery_delay() {
        let settings = SimulatorSettings {
            rate_multiplier: 50.0,
            max_delivery_delay_millis: 3_000,
            duplicate_fraction: 0.01,
            ..settings_with_seed(9)
        };
        let mut simulator = Simulator::new(settings, registry()).unwrap();
        let mut latest_occurred = i64::MIN;
        let mut latest_delivery = i64::MIN;
        let mut largest_lag = 0;
        for _ in 0..50_000 {
            let (delivery, event) = simulator.next_delivery();
            let occurred = occurred_millis(&event);
            let received = timestamp_to_millis(event.received_at.as_ref().unwrap());
            assert!(delivery >= latest_delivery, "delivery order");
            assert!((occurred..=occurred + 3_000).contains(&received));
            assert!((received..=occurred + 3_000).contains(&delivery));
            latest_delivery = delivery;
            latest_occurred = latest_occurred.max(occurred);
            largest_lag = largest_lag.max(latest_occurred - occurred);
        }
        assert!(largest_lag <= 3_000, "lag {largest_lag}");
        assert!(
            largest_lag > 0,
            "events should arrive out of order sometimes"
        );
    }

    #[test]
    fn every_event_resolves_to_its_community_in_the_registry() {
        let settings = SimulatorSettings {
            coordinate_fraction: 0.2,
            device_only_fraction: 0.3,
            ..settings_with_seed(21)
        };
        let registry = registry();
        let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
        let mut coordinate_events = 0;
        let mut device_only_events = 0;
        for _ in 0..20_000 {
            let event = simulator.next_event();
            let cell = registry
                .resolve(&event)
                .unwrap_or_else(|error| panic!("{event:?} does not resolve: {error}"));
            assert_eq!(registry.community_of(cell).id, event.community_id);
            if event.lat.is_some() {
                coordinate_events += 1;
                assert!(event.grid_id.is_empty() && event.device_id.is_empty());
                assert!(event.crs == Crs::Gcj02 as i32 || event.crs == Crs::Bd09 as i32);
            } else if event.grid_id.is_empty() {
                device_only_events += 1;
                assert_eq!(registry.cell_by_device(&event.device_id), Some(cell));
            }
            let event_type = event_type_of(&event);
            if is_fraud_type(event_type) {
                assert!(event.device_id.is_empty());
                let phone = event.attributes.get("phone").unwrap();
                assert_eq!(phone.len(), 11);
                assert!(phone.starts_with('1'));
                assert!(event.attributes.contains_key("channel"));
            } else if !event.device_id.is_empty() {
                let device = registry
                    .devices_in_cell(cell)
                    .iter()
                    .find(|device| device.device_id == event.device_id)
                    .unwrap();
                assert!(device.event_types.contains(&event_type));
            }
            assert!(event.severity <= 4);
        }
        assert!(coordinate_events > 3_000, "{coordinate_events}");
        assert!(device_only_events > 3_000, "{device_only_events}");
    }

    fn fraud_count_in_community(
        events: &[IncidentEvent],
        community_id: &str,
        window: std::ops::Range<i64>,
    ) -> f64 {
        events
            .iter()
            .filter(|event| event.community_id == community_id)
            .filter(|event| is_fraud_type(event_type_of(event)))
            .filter(|event| window.contains(&occurred_millis(event)))
            .count() as f64
    }

    #[test]
    fn fraud_wave_multiplies_the_community_fraud_counts() {
        let registry = registry();
        let community = registry
            .communities()
            .iter()
            .filter(|community| !community.cells.is_empty())
            .max_by_key(|community| community.population)
            .unwrap()
            .clone();
        let settings = SimulatorSettings {
            duplicate_fraction: 0.0,
            scenarios: vec![Scenario::FraudWave {
                community_id: community.id.clone(),
                start: ScenarioTime::AfterStart(24 * HOUR_MILLIS),
                duration: ScenarioDuration(24 * HOUR_MILLIS),
                multiplier: 10.0,
            }],
            ..settings_with_seed(13)
        };
        let start = settings.start_millis;
        let baseline_simulator =
            Simulator::new(settings_with_seed(13), Arc::clone(&registry)).unwrap();
        let community_daily_fraud: f64 = baseline_simulator
            .entries
            .iter()
            .filter(|entry| is_fraud_type(entry.event_type))
            .filter(|entry| registry.community_of(entry.cell).id == community.id)
            .map(|entry| entry.mean_rate_per_millis * DAY_MILLIS)
            .sum();
        let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
        let events = events_until(&mut simulator, start + 2 * 24 * HOUR_MILLIS);
        let day = 24 * HOUR_MILLIS;
        let before = fraud_count_in_community(&events, &community.id, start..start + day);
        let during = fraud_count_in_community(&events, &community.id, start + day..start + 2 * day);
        assert_within_five_sigma(before, community_daily_fraud, "before the wave");
        assert_within_five_sigma(during, 10.0 * community_daily_fraud, "during the wave");
        assert!(
            during > 3.0 * before.max(1.0),
            "during {during}, before {before}"
        );
    }

    #[test]
    fn intrusion_burst_produces_at_least_per_minute_times_minutes_events_in_the_cell() {
        let registry = registry();
        let cell = busiest_cell(&registry);
        let grid_id = registry.cell(cell).grid_id.clone();
        let settings = SimulatorSettings {
            scenarios: vec![Scenario::IntrusionBurst {
                grid_id: grid_id.clone(),
                start: ScenarioTime::AfterStart(30 * MINUTE_MILLIS),
                duration: ScenarioDuration(10 * MINUTE_MILLIS),
                per_minute: 12,
            }],
            ..settings_with_seed(17)
        };
        let burst_start = settings.start_millis + 30 * MINUTE_MILLIS;
        let burst_end = burst_start + 10 * MINUTE_MILLIS;
        let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
        let events = events_until(&mut simulator, burst_end + HOUR_MILLIS);
        let burst_events: Vec<&IncidentEvent> = events
            .iter()
            .filter(|event| {
                event.attributes.get("scenario").map(String::as_str) == Some("intrusion_burst")
            })
            .collect();
        let unique_ids: std::collections::BTreeSet<&str> = burst_events
            .iter()
            .map(|event| event.event_id.as_str())
            .collect();
        assert!(unique_ids.len() >= 120, "{} burst events", unique_ids.len());
        for event in burst_events {
            assert_eq!(event.grid_id, grid_id);
            assert_eq!(event_type_of(event), EventType::PerimeterIntrusion);
            assert!((burst_start..burst_end).contains(&occurred_millis(event)));
        }
    }

    #[test]
    fn device_outage_reports_offline_devices_then_silences_the_cell() {
        let registry = registry();
        let cell = busiest_cell(&registry);
        let grid_id = registry.cell(cell).grid_id.clone();
        let device_count = registry.devices_in_cell(cell).len();
        assert!(device_count > 0);
        let settings = SimulatorSettings {
            rate_multiplier: 20.0,
            duplicate_fraction: 0.0,
            scenarios: vec![Scenario::DeviceOutage {
                grid_id,
                start: ScenarioTime::AfterStart(2 * HOUR_MILLIS),
                duration: ScenarioDuration(2 * HOUR_MILLIS),
            }],
            ..settings_with_seed(19)
        };
        let outage_start = settings.start_millis + 2 * HOUR_MILLIS;
        let outage_end = outage_start + 2 * HOUR_MILLIS;
        let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
        let events = events_until(&mut simulator, outage_end + 2 * HOUR_MILLIS);
        let mut offline_reports = 0;
        let mut before = 0;
        let mut after = 0;
        for event in &events {
            if registry.resolve(event).ok() != Some(cell) {
                continue;
            }
            let occurred = occurred_millis(event);
            if event.attributes.get("scenario").map(String::as_str) == Some("device_outage") {
                assert_eq!(event_type_of(event), EventType::DeviceOffline);
                offline_reports += 1;
                continue;
            }
            assert!(
                !(outage_start..outage_end).contains(&occurred),
                "event during the outage: {event:?}"
            );
            if occurred < outage_start {
                before += 1;
            } else {
                after += 1;
            }
        }
        assert_eq!(offline_reports, device_count);
        assert!(before > 0 && after > 0, "before {before}, after {after}");
    }

    #[test]
    fn fire_scenario_bursts_smoke_alarms_in_the_cell_within_minutes() {
        let registry = registry();
        let cell = (0..registry.cells().len() as u32)
            .map(CellIndex)
            .find(|cell| capable_device_indexes(&registry, *cell, EventType::FireSmoke).len() >= 2)
            .unwrap_or_else(|| busiest_cell(&registry));
        let grid_id = registry.cell(cell).grid_id.clone();
        let settings = SimulatorSettings {
            scenarios: vec![Scenario::Fire {
                grid_id: grid_id.clone(),
                at: ScenarioTime::AfterStart(HOUR_MILLIS),
            }],
            ..settings_with_seed(23)
        };
        let fire_at = settings.start_millis + HOUR_MILLIS;
        let mut simulator = Simulator::new(settings, Arc::clone(&registry)).unwrap();
        let events = events_until(&mut simulator, fire_at + HOUR_MILLIS);
        let fire_events: Vec<&IncidentEvent> = events
            .iter()
            .filter(|event| event.attributes.get("scenario").map(String::as_str) == Some("fire"))
            .collect();
        assert!(fire_events.len() >= 3, "{} fire events", fire_events.len());
        for event in &fire_events {
            assert_eq!(event.grid_id, grid_id);
            assert_eq!(event_type_of(event), EventType::FireSmoke);
            assert_eq!(event.severity, 1);
            assert!((fire_at..fire_at + 10 * MINUTE_MILLIS).contains(&occurred_millis(event)));
        }
    }

    #[test]
    fn settings_parse_from_toml_with_offsets_and_rfc3339_times() {
        let text = r#"
            seed = 42
            rate_multiplier = 60.0

            [[scenarios]]
            kind = "fire"
            grid_id = "41061100100101"
            at = "+1h30m"

            [[scenarios]]
            kind = "fraud_wave"
            community_id = "410611001001"
            start = "2026-03-02T09:00:00+08:00"
            duration = "8h"
            multiplier = 5.0
        "#;
        let settings: SimulatorSettings = toml::from_str(text).unwrap();
        assert_eq!(settings.seed, 42);
        assert_eq!(settings.duplicate_fraction, 0.002);
        assert_eq!(
            settings.scenarios[0],
            Scenario::Fire {
                grid_id: "41061100100101".to_string(),
                at: ScenarioTime::AfterStart(90 * MINUTE_MILLIS),
            }
        );
        assert_eq!(
            settings.scenarios[1],
            Scenario::FraudWave {
                community_id: "410611001001".to_string(),
                start: ScenarioTime::At(1_772_413_200_000),
                duration: ScenarioDuration(8 * HOUR_MILLIS),
                multiplier: 5.0,
            }
        );
        let round_trip: SimulatorSettings =
            toml::from_str(&toml::to_string(&settings).unwrap()).unwrap();
        assert_eq!(round_trip, settings);
    }

    #[test]
    fn unknown_setting_fields_and_bad_durations_are_rejected() {
        assert!(toml::from_str::<SimulatorSettings>("sede = 1").is_err());
        let unknown_scenario_field = r#"
            [[scenarios]]
            kind = "fire"
            grid_id = "41061100100101"
            at = "+1h"
            size = "big"
        "#;
        assert!(toml::from_str::<SimulatorSettings>(unknown_scenario_field).is_err());
        assert!(parse_duration_millis("10 parsecs").is_err());
        assert_eq!(parse_duration_millis("10 minutes"), Ok(600_000));
        assert!(parse_duration_millis("h").is_err());
        assert!(parse_duration_millis("99999999999999999d").is_err());
        assert_eq!(parse_duration_millis("1d2h3m4s5ms"), Ok(93_784_005));
    }

    #[test]
    fn invalid_settings_and_unknown_scenario_targets_are_errors() {
        let bad_fraction = SimulatorSettings {
            coordinate_fraction: 1.5,
            ..SimulatorSettings::default()
        };
        assert!(matches!(
            Simulator::new(bad_fraction, registry()),
            Err(SimulatorError::InvalidSetting {
                name: "coordinate_fraction",
                ..
            })
        ));
        let bad_multiplier = SimulatorSettings {
            rate_multiplier: f64::NAN,
            ..SimulatorSettings::default()
        };
        assert!(Simulator::new(bad_multiplier, registry()).is_err());
        let absurd_start = SimulatorSettings {
            start_millis: i64::MAX,
            ..SimulatorSettings::default()
        };
        assert!(matches!(
            Simulator::new(absurd_start, registry()),
            Err(SimulatorError::InvalidSetting {
                name: "start_millis",
                ..
            })
        ));
        let unknown_grid = SimulatorSettings {
            scenarios: vec![Scenario::Fire {
                grid_id: "00000000000000".to_string(),
                at: ScenarioTime::AfterStart(0),
            }],
            ..SimulatorSettings::default()
        };
        assert!(matches!(
            Simulator::new(unknown_grid, registry()),
            Err(SimulatorError::InvalidScenario {
                index: 0,
                kind: "fire",
                ..
            })
        ));
    }

    #[test]
    fn local_hours_follow_china_standard_time() {
        // 2026-03-02T00:00:00+08:00 is local midnight.
        let midnight = 1_772_380_800_000;
        assert_eq!(local_hour_of_day(midnight), 0);
        assert_eq!(local_hour_of_day(midnight - 1), 23);
        assert_eq!(local_hour_of_day(midnight + 13 * HOUR_MILLIS + 5), 13);
        assert_eq!(next_hour_boundary(midnight), midnight + HOUR_MILLIS);
        assert_eq!(next_hour_boundary(midnight - 1), midnight);
    }

    #[test]
    fn normalized_profiles_have_mean_one() {
        for event_type in ALL_EVENT_TYPES {
            let mean = normalized_profile(event_type).iter().sum::<f64>() / 24.0;
            assert!((mean - 1.0).abs() < 1e-9, "{event_type:?}: {mean}");
        }
    }

    #[test]
    fn simulator_source_as_fast_as_possible_honours_the_limit() {
        let simulator = Simulator::new(settings_with_seed(2), registry()).unwrap();
        let mut source = SimulatorSource::new(simulator, Pacing::AsFastAsPossible).with_limit(250);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let batches = runtime.block_on(async {
            let mut batches = Vec::new();
            while let Some(batch) = source.next_batch(100).await.unwrap() {
                batches.push(batch);
            }
            batches
        });
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let positions: Vec<u64> = batches
            .iter()
            .flatten()
            .map(|record| record.position)
            .collect();
        assert_eq!(positions, (1..=250).collect::<Vec<u64>>());
        assert!(batches
            .iter()
            .flatten()
            .all(|record| matches!(record.payload, RecordPayload::Event(_))));
    }

    #[test]
    fn simulator_source_in_real_time_releases_only_due_events() {
        let now = crate::time::wall_clock_millis();
        let settings = SimulatorSettings {
            start_millis: now + 300,
            rate_multiplier: 1_000.0,
            ..settings_with_seed(4)
        };
        let simulator = Simulator::new(settings, registry()).unwrap();
        let mut source = SimulatorSource::new(simulator, Pacing::RealTime);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let batch = source.next_batch(10_000).await.unwrap().unwrap();
            let released_at = crate::time::wall_clock_millis();
            assert!(
                released_at >= now + 300,
                "released before the first event was due"
            );
            assert!(!batch.is_empty());
            for record in &batch {
                let RecordPayload::Event(event) = &record.payload else {
                    panic!("simulator records are events");
                };
                let received = timestamp_to_millis(event.received_at.as_ref().unwrap());
                assert!(
                    received <= released_at,
                    "event released before delivery time"
                );
            }
        });
    }
}
