//! Scenarios: incidents layered on the background traffic (fires, intrusion bursts, fraud
//! waves, device outages), as configured and as resolved against the registry, and the
//! scheduled events they produce, merged with the background stream by event time.

use std::cmp::Reverse;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::generator::{capable_device_indexes, Simulator};
use crate::grid::{CellIndex, CommunityIndex};
use crate::proto::{EventType, IncidentEvent};
use crate::time::{millis_to_rfc3339, rfc3339_to_millis};

/// An instant of a scenario: RFC 3339 text (`"2026-03-02T20:15:00+08:00"`) or an offset from
/// the simulation start (`"+2h"`, `"+1h30m"`, `"+90s"`, `"+1d"`; units `ms`, `s`, `m`, `h`,
/// `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ScenarioTime {
    /// An absolute instant, epoch milliseconds.
    At(i64),
    /// Milliseconds after [`super::SimulatorSettings::start_millis`].
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
pub(super) fn parse_duration_millis(text: &str) -> Result<i64, String> {
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

/// A fraud wave resolved against the registry.
#[derive(Debug, Clone)]
pub(super) struct ResolvedFraudWave {
    /// The community.
    pub(super) community: CommunityIndex,
    /// Start, epoch milliseconds.
    pub(super) start_millis: i64,
    /// End (exclusive), epoch milliseconds.
    pub(super) end_millis: i64,
    /// Rate multiplier.
    pub(super) multiplier: f64,
}

/// An outage resolved against the registry.
#[derive(Debug, Clone)]
pub(super) struct ResolvedOutage {
    /// The silent cell.
    pub(super) cell: CellIndex,
    /// Start, epoch milliseconds.
    pub(super) start_millis: i64,
    /// End (exclusive), epoch milliseconds.
    pub(super) end_millis: i64,
}

/// An intrusion burst resolved against the registry.
#[derive(Debug, Clone)]
pub(super) struct ResolvedIntrusionBurst {
    /// The cell.
    pub(super) cell: CellIndex,
    /// Start, epoch milliseconds.
    pub(super) start_millis: i64,
    /// Spacing of events, milliseconds.
    pub(super) interval_millis: f64,
    /// Number of events in all.
    pub(super) event_count: u64,
    /// Intrusion-capable devices of the cell (indexes into `devices_in_cell`).
    pub(super) devices: Vec<u32>,
}

/// What a scheduled (scenario) event is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ScheduledKind {
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
pub(super) struct ScheduledEvent {
    /// Event time, epoch milliseconds.
    pub(super) occurred_millis: i64,
    /// Insertion order (ties).
    pub(super) order: u64,
    /// What to generate.
    pub(super) kind: ScheduledKind,
}

impl Simulator {
    pub(super) fn push_scheduled(&mut self, occurred_millis: i64, kind: ScheduledKind) {
        self.scheduled_order += 1;
        self.scheduled.push(Reverse(ScheduledEvent {
            occurred_millis,
            order: self.scheduled_order,
            kind,
        }));
    }

    /// Schedules fires, the first event of each intrusion burst and the offline events of
    /// outages.
    pub(super) fn schedule_scenarios(&mut self, fires: &[(CellIndex, i64)]) {
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

    pub(super) fn schedule_intrusion(&mut self, burst_index: usize, ordinal: u64) {
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
    pub(super) fn generate_scheduled(&mut self) -> Option<IncidentEvent> {
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
    pub(super) fn scenario_event(
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
}
