//! The generator: background (cell, type) Poisson processes drawn as one superposed process
//! per hour with an alias table, thinned by scenario multipliers, and turned into events with
//! a device, a grid id or only coordinates.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use geo::{BoundingRect, Contains};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::weighted::WeightedAliasIndex;
use rand_distr::{Distribution, Exp1};

use super::disorder::QueuedDelivery;
use super::profiles::{
    is_fraud_type, local_hour_of_day, next_hour_boundary, normalized_profile, type_model, BaseRate,
    DAYS_PER_YEAR, DAY_MILLIS, HOUR_MILLIS, MINUTE_MILLIS,
};
use super::scenarios::{
    ResolvedFraudWave, ResolvedIntrusionBurst, ResolvedOutage, Scenario, ScenarioDuration,
    ScheduledEvent,
};
use super::settings::{validate_settings, SimulatorError, SimulatorSettings};
use crate::event::{default_severity, ALL_EVENT_TYPES};
use crate::grid::{coords, CellIndex, GridRegistry};
use crate::proto::{Crs, EventType, IncidentEvent};
use crate::time::millis_to_timestamp;

/// Attempts at drawing a coordinate that resolves back to its cell before falling back to a
/// grid-id event.
const COORDINATE_ATTEMPTS: usize = 4;
/// Most events an intrusion burst may produce per minute (one per millisecond).
const MAX_INTRUSIONS_PER_MINUTE: u32 = 60_000;

/// One background Poisson process: a (cell, type) pair.
#[derive(Debug, Clone)]
pub(super) struct BackgroundEntry {
    /// The cell the events occur in.
    pub(super) cell: CellIndex,
    /// The type of the events.
    pub(super) event_type: EventType,
    /// Indexes (into `devices_in_cell(cell)`) of the devices able to report the type; empty
    /// for fraud types.
    pub(super) capable_devices: Vec<u32>,
    /// Mean rate in events per millisecond (base rate × rate multiplier).
    pub(super) mean_rate_per_millis: f64,
    /// Largest scenario multiplier that can apply to this entry (1 when none raises it); the
    /// alias weights use it so that thinning can only lower the rate.
    pub(super) max_multiplier: f64,
    /// Whether some scenario modulates this entry (skip the thinning draw when not).
    pub(super) modulated: bool,
}

/// Geometry of a cell for coordinate-only events.
#[derive(Debug, Clone, Copy)]
pub(super) struct CellGeometry {
    /// WGS-84 point inside the cell (the registry's representative point: the centroid
    /// unless the polygon is concave around it), the centre of the jitter.
    pub(super) centroid: (f64, f64),
    /// Half extents of the bounding box (lon, lat), for jitter.
    pub(super) half_extent: (f64, f64),
}

/// The next background arrival, drawn but not yet turned into an event.
#[derive(Debug, Clone, Copy)]
pub(super) struct BackgroundArrival {
    /// Event time, epoch milliseconds.
    pub(super) occurred_millis: i64,
    /// Index into the background entries.
    pub(super) entry: usize,
}

/// Representation of an event's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocationForm {
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
    pub(super) settings: SimulatorSettings,
    /// The registry events are drawn from.
    pub(super) registry: Arc<GridRegistry>,
    /// The random generator (all randomness comes from here).
    pub(super) rng: ChaCha8Rng,
    /// Background (cell, type) processes.
    pub(super) entries: Vec<BackgroundEntry>,
    /// Per local hour: alias table over `entries` weighted by the hour's (max) rate.
    pub(super) hourly_alias: Vec<Option<WeightedAliasIndex<f64>>>,
    /// Per local hour: total (max) rate in events per millisecond.
    pub(super) hourly_total_rate: [f64; 24],
    /// Background clock: time of the last background arrival (fractional milliseconds).
    pub(super) background_clock_millis: f64,
    /// The next background arrival, once drawn.
    pub(super) pending_background: Option<BackgroundArrival>,
    /// Scenario events not yet generated, earliest first.
    pub(super) scheduled: BinaryHeap<Reverse<ScheduledEvent>>,
    /// Counter for `ScheduledEvent::order`.
    pub(super) scheduled_order: u64,
    /// Resolved fraud waves.
    pub(super) fraud_waves: Vec<ResolvedFraudWave>,
    /// Resolved outages.
    pub(super) outages: Vec<ResolvedOutage>,
    /// Resolved intrusion bursts.
    pub(super) intrusion_bursts: Vec<ResolvedIntrusionBurst>,
    /// Per cell: geometry for coordinate events (None when the polygon is degenerate).
    pub(super) cell_geometry: Vec<Option<CellGeometry>>,
    /// Events generated so far (the sequence in `event_id`).
    pub(super) generated_count: u64,
    /// Events waiting for their delivery time, earliest first.
    pub(super) delivery_queue: BinaryHeap<Reverse<QueuedDelivery>>,
    /// Counter for `QueuedDelivery::order`.
    pub(super) delivery_order: u64,
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
        if let Some(deliveries_per_second) = settings.steady_rate_per_second {
            // Only the total changes: each hour's alias table keeps its mix.
            let arrivals_per_millis =
                deliveries_per_second / settings.deliveries_per_event() / 1000.0;
            for total_slot in hourly_total_rate.iter_mut().filter(|total| **total > 0.0) {
                *total_slot = arrivals_per_millis;
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

    /// The start from which the background is expected to have delivered `events` events
    /// (duplicate copies included, scenarios excluded) by `end_millis`, walking the hourly
    /// rates back from there: a backfill sent as fast as possible then ends near the wall
    /// clock instead of running ahead of it. Rebuild the simulator with this start (the rates
    /// do not depend on it). Never before 1970.
    pub fn start_for_expected_events(&self, events: u64, end_millis: i64) -> i64 {
        let mut arrivals_left = events as f64 / self.settings.deliveries_per_event();
        let mut cursor_millis = end_millis;
        while arrivals_left > 0.0 && cursor_millis > 0 {
            let hour_start_millis = next_hour_boundary(cursor_millis - 1) - HOUR_MILLIS;
            let rate_per_millis = self
                .hourly_total_rate
                .get(local_hour_of_day(hour_start_millis))
                .copied()
                .unwrap_or(0.0);
            let expected_in_hour = rate_per_millis * (cursor_millis - hour_start_millis) as f64;
            if rate_per_millis > 0.0 && expected_in_hour >= arrivals_left {
                return cursor_millis - (arrivals_left / rate_per_millis).round() as i64;
            }
            arrivals_left -= expected_in_hour;
            cursor_millis = hour_start_millis;
        }
        cursor_millis.max(0)
    }

    /// The next event in delivery order.
    pub fn next_event(&mut self) -> IncidentEvent {
        self.next_delivery().1
    }

    /// Draws (once) and returns the next background arrival.
    pub(super) fn peek_background(&mut self) -> BackgroundArrival {
        if let Some(arrival) = self.pending_background {
            return arrival;
        }
        let arrival = self.draw_background_arrival();
        self.pending_background = Some(arrival);
        arrival
    }

    /// Draws the next accepted background arrival (superposition per hour plus thinning).
    pub(super) fn draw_background_arrival(&mut self) -> BackgroundArrival {
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
    pub(super) fn multiplier_at(&self, entry: &BackgroundEntry, millis: i64) -> f64 {
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
    pub(super) fn is_silenced(&self, cell: CellIndex, millis: i64) -> bool {
        self.outages.iter().any(|outage| {
            outage.cell == cell && (outage.start_millis..outage.end_millis).contains(&millis)
        })
    }

    /// Generates the event of a background arrival.
    pub(super) fn generate_background(
        &mut self,
        arrival: BackgroundArrival,
    ) -> Option<IncidentEvent> {
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
    pub(super) fn phone_number(&mut self) -> String {
        let second_digit = self.rng.random_range(3..=9_u32);
        let rest = self.rng.random_range(0..1_000_000_000_u32);
        format!("1{second_digit}{rest:09}")
    }

    /// A point near the cell's centroid, inside the cell, in GCJ-02 or BD-09, that the
    /// registry resolves back to the cell.
    pub(super) fn coordinates_in(&mut self, cell: CellIndex) -> Option<(f64, f64, Crs)> {
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
    pub(super) fn stamp(
        &mut self,
        mut event: IncidentEvent,
        occurred_millis: i64,
    ) -> IncidentEvent {
        event.event_id = format!("sim-{:x}-{:010}", self.settings.seed, self.generated_count);
        self.generated_count += 1;
        event.occurred_at = Some(millis_to_timestamp(occurred_millis));
        event
    }
}

/// Indexes (into `devices_in_cell(cell)`) of the devices that can report `event_type`.
pub(super) fn capable_device_indexes(
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
pub(super) fn build_entries(
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
