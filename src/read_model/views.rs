//! What the API, the stream and the console show: plain serializable views, built once when
//! a record is applied or a snapshot is published, so a request only filters and copies.
//! Field names and shapes follow `docs/read-model-and-api.md` (snake_case, RFC 3339 `Z`
//! times, enum names as strings).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::grid::{CellIndex, CommunityIndex, GridRegistry};
use crate::proto::{Alert, AlertStatus, EventType};
use crate::time::{millis_to_rfc3339, timestamp_to_millis};

/// Where a cell, community or alert is: codes, names (Chinese, and English for districts)
/// and a centroid, resolved once from the registry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Place {
    /// 14-digit grid id (`null` for a community).
    pub grid_id: Option<String>,
    /// 12-digit community id.
    pub community_id: String,
    /// Community name (Chinese).
    pub community_name: String,
    /// 6-digit district code.
    pub district_id: String,
    /// District name (Chinese).
    pub district_name: String,
    /// District name (English).
    pub district_name_en: String,
    /// WGS-84 `[longitude, latitude]`.
    pub centroid: [f64; 2],
}

impl Place {
    /// A place the registry does not know (ids only, filled in by the caller).
    pub fn unknown() -> Place {
        Place {
            grid_id: None,
            community_id: String::new(),
            community_name: String::new(),
            district_id: String::new(),
            district_name: String::new(),
            district_name_en: String::new(),
            centroid: [0.0, 0.0],
        }
    }

    /// The place of a registered cell.
    pub fn of_cell(registry: &GridRegistry, cell: CellIndex) -> Option<Place> {
        let (cell_record, community) = registry.get_cell_and_community(cell)?;
        let (longitude, latitude) = registry.cell_centroid(cell);
        let mut place = Place::of_community_record(registry, community);
        place.grid_id = Some(cell_record.grid_id.clone());
        place.centroid = [longitude, latitude];
        Some(place)
    }

    /// The place of a registered community (its centroid, no grid).
    pub fn of_community(registry: &GridRegistry, community: CommunityIndex) -> Option<Place> {
        registry
            .get_community(community)
            .map(|record| Place::of_community_record(registry, record))
    }

    /// The place of a district (district-scope alerts): no community, the mean of its
    /// communities' centroids.
    pub fn of_district(registry: &GridRegistry, district: &crate::grid::District) -> Place {
        let centroids: Vec<(f64, f64)> = registry
            .communities()
            .iter()
            .filter(|community| community.district_code == district.code)
            .map(|community| community.centroid)
            .collect();
        let count = centroids.len().max(1) as f64;
        let (longitude_sum, latitude_sum) = centroids
            .iter()
            .fold((0.0, 0.0), |(x, y), (longitude, latitude)| {
                (x + longitude, y + latitude)
            });
        Place {
            district_id: district.code.clone(),
            district_name: district.name_zh.clone(),
            district_name_en: district.name_en.clone(),
            centroid: [longitude_sum / count, latitude_sum / count],
            ..Place::unknown()
        }
    }

    /// The whole city (a city-wide alert): no ids, the mean of the communities' centroids.
    pub fn of_city(registry: &GridRegistry) -> Place {
        let communities = registry.communities();
        let count = communities.len().max(1) as f64;
        let (longitude_sum, latitude_sum) =
            communities.iter().fold((0.0, 0.0), |(x, y), community| {
                (x + community.centroid.0, y + community.centroid.1)
            });
        Place {
            centroid: [longitude_sum / count, latitude_sum / count],
            ..Place::unknown()
        }
    }

    fn of_community_record(registry: &GridRegistry, community: &crate::grid::Community) -> Place {
        let district = registry.district(&community.district_code);
        Place {
            grid_id: None,
            community_id: community.id.clone(),
            community_name: community.name.clone(),
            district_id: community.district_code.clone(),
            district_name: district
                .map(|district| district.name_zh.clone())
                .unwrap_or_default(),
            district_name_en: district
                .map(|district| district.name_en.clone())
                .unwrap_or_default(),
            centroid: [community.centroid.0, community.centroid.1],
        }
    }
}

/// Event types whose alerts are life safety: the console lists them first and pulses their
/// cells. (The same five types the default `life_safety` rule alerts on at once.)
pub const LIFE_SAFETY_EVENT_TYPES: [EventType; 5] = [
    EventType::FireSmoke,
    EventType::GasLeak,
    EventType::ElectricalFault,
    EventType::Sos,
    EventType::ElderFall,
];

/// Whether an alert about `event_type` is about someone's life or safety.
pub fn is_life_safety(event_type: i32) -> bool {
    LIFE_SAFETY_EVENT_TYPES
        .iter()
        .any(|life_safety| *life_safety as i32 == event_type)
}

/// The proto enum name of an event type number (`"EVENT_TYPE_<n>"` for an unknown number, so
/// a newer producer's type still shows up rather than vanishing).
pub fn event_type_name(event_type: i32) -> String {
    match EventType::try_from(event_type) {
        Ok(known) => known.as_str_name().to_string(),
        Err(_) => format!("EVENT_TYPE_{event_type}"),
    }
}

/// One alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertView {
    /// Id of this occurrence: hash(fingerprint, starts_at).
    pub alert_id: String,
    /// Stable identity of what is alerting.
    pub fingerprint: String,
    /// Rule name.
    pub rule: String,
    /// `immediate`, `threshold`, `spike`, `cusum`, `data_gap` or `scan`.
    pub rule_kind: String,
    /// `FIRING` or `RESOLVED`.
    pub status: String,
    /// A fire, gas, electrical, SOS or fall alert.
    pub life_safety: bool,
    /// 1 (most severe) to 4.
    pub severity: u32,
    /// Event type enum name, e.g. `FIRE_SMOKE`.
    pub event_type: String,
    /// Where (grid `null` for community-scope alerts; centroid of the cell, else community).
    #[serde(flatten)]
    pub place: Place,
    /// When it started firing.
    pub starts_at: String,
    /// Its last change.
    pub updated_at: String,
    /// When it resolved (`null` while firing).
    pub ends_at: Option<String>,
    /// What was observed (a count, or a CUSUM statistic).
    pub observed: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// Expected count under the baseline (statistical rules).
    pub expected: Option<f64>,
    /// p-value (spike rules).
    pub p_value: Option<f64>,
    /// The device of an immediate alert.
    pub device_id: Option<String>,
    /// Ids of (some of) the events behind it.
    pub event_ids: Vec<String>,
    /// The maintenance window that suppressed its paging.
    pub suppressed_by: Option<String>,
    /// Raised from an event that arrived after its window closed.
    pub late: bool,
    /// Where the rule counts: `cell` or `community` (`null` from older records).
    pub scope: Option<String>,
    /// The scale: the rule's window or interval, seconds (`null` for immediate rules).
    pub window_seconds: Option<u32>,
    /// Statistical rules: weeks of learned history behind `expected` (0 = seeded rates only;
    /// `null` for rules without a baseline).
    pub baseline_weeks: Option<u32>,
    /// A space-time cluster (`scope` `cluster`): its member communities, the centre first
    /// (empty for every other alert).
    pub cluster_members: Vec<ClusterMember>,
}

/// One community of a space-time cluster alert.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ClusterMember {
    /// 12-digit community id.
    pub community_id: String,
    /// Community name (Chinese; empty when the registry does not know it).
    pub community_name: String,
}

impl AlertView {
    /// The view of an alert record, located through the registry (an alert of an unknown cell
    /// or community keeps its ids, with empty names and a zero centroid).
    pub fn of_alert(alert: &Alert, registry: &GridRegistry) -> AlertView {
        let place = registry
            .cell_by_grid_id(&alert.grid_id)
            .and_then(|cell| Place::of_cell(registry, cell))
            .or_else(|| {
                registry
                    .community_by_id(&alert.community_id)
                    .and_then(|community| Place::of_community(registry, community))
            })
            .or_else(|| {
                let district_scope = alert.grid_id.is_empty() && alert.community_id.is_empty();
                district_scope
                    .then(|| registry.district(&alert.district_id))
                    .flatten()
                    .map(|district| Place::of_district(registry, district))
            })
            .or_else(|| crate::rules::alert::is_city_wide(alert).then(|| Place::of_city(registry)))
            .unwrap_or_else(|| Place {
                grid_id: non_empty(&alert.grid_id),
                community_id: alert.community_id.clone(),
                district_id: alert.district_id.clone(),
                ..Place::unknown()
            });
        let status = AlertStatus::try_from(alert.status)
            .unwrap_or(AlertStatus::Unspecified)
            .as_str_name()
            .to_string();
        let time = |timestamp: &Option<pbjson_types::Timestamp>| {
            timestamp
                .as_ref()
                .map(|timestamp| millis_to_rfc3339(timestamp_to_millis(timestamp)))
        };
        let starts_at = time(&alert.starts_at).unwrap_or_default();
        AlertView {
            alert_id: alert.alert_id.clone(),
            fingerprint: alert.fingerprint.clone(),
            rule: alert.rule.clone(),
            rule_kind: alert.rule_kind.clone(),
            status,
            life_safety: is_life_safety(alert.event_type),
            severity: alert.severity,
            event_type: event_type_name(alert.event_type),
            place,
            updated_at: time(&alert.updated_at).unwrap_or_else(|| starts_at.clone()),
            starts_at,
            ends_at: time(&alert.ends_at),
            observed: alert.observed,
            threshold: alert.threshold,
            expected: (alert.expected != 0.0).then_some(alert.expected),
            p_value: (alert.p_value != 0.0).then_some(alert.p_value),
            scope: non_empty(&alert.scope),
            window_seconds: (alert.window_seconds != 0).then_some(alert.window_seconds),
            baseline_weeks: (alert.expected != 0.0).then_some(alert.baseline_weeks),
            device_id: non_empty(&alert.device_id),
            event_ids: alert.event_ids.clone(),
            suppressed_by: non_empty(&alert.suppressed_by),
            late: alert.late,
            cluster_members: alert
                .cluster_community_ids
                .iter()
                .map(|community_id| ClusterMember {
                    community_id: community_id.clone(),
                    community_name: registry
                        .community_by_id(community_id)
                        .map(|index| registry.community(index).name.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Whether the alert is firing.
    pub fn is_firing(&self) -> bool {
        self.status == AlertStatus::Firing.as_str_name()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// One cell's counts in one view, with where it is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CellView {
    /// Where the cell is.
    #[serde(flatten)]
    pub place: Place,
    /// Events in the view (closed panes).
    pub events: u64,
    /// Events in the view per event type name (types with events only).
    pub events_by_type: BTreeMap<String, u64>,
    /// Firing alerts about the cell.
    pub firing_alerts: u32,
    /// Whether one of them is life safety.
    pub life_safety_firing: bool,
}

/// A community's or district's counts in one view.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AreaView {
    /// 12-digit community id or 6-digit district code.
    pub id: String,
    /// Chinese name.
    pub name: String,
    /// English name (districts; communities have Chinese names only).
    pub name_en: Option<String>,
    /// The district (itself, for a district).
    pub district_id: String,
    /// The district's Chinese name.
    pub district_name: String,
    /// WGS-84 `[longitude, latitude]` (a district's is the mean of its communities').
    pub centroid: [f64; 2],
    /// Grid cells in the area.
    pub cells: u32,
    /// Residents.
    pub population: u64,
    /// Events in the view.
    pub events: u64,
    /// Events in the view per event type name.
    pub events_by_type: BTreeMap<String, u64>,
    /// Firing alerts in the area.
    pub firing_alerts: u32,
}

/// One instance of gridwatch as its last status record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct InstanceView {
    /// The instance's name (`alerting.instance`, else the host name).
    pub instance_id: String,
    /// Owned input partitions, `topic/partition`.
    pub partitions: Vec<String>,
    /// Input events per second.
    pub events_per_second: f64,
    /// Its watermark.
    pub watermark: Option<String>,
    /// When its last status was published.
    pub last_seen: String,
    /// No status for longer than three status intervals: probably gone.
    pub stale: bool,
    /// Its Kafka cluster was reachable.
    pub broker_reachable: bool,
    /// Its source: `simulator`, `file` or `kafka`.
    pub source: String,
}

/// The pipeline strip: the city's processing health over all live instances.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PipelineStatus {
    /// When this status was computed.
    pub generated_at: String,
    /// End of the newest closed pane applied to the read model.
    pub watermark: Option<String>,
    /// Wall time minus the oldest live instance's watermark, in seconds.
    pub watermark_lag_seconds: Option<f64>,
    /// Input events per second, summed over live instances.
    pub events_per_second: f64,
    /// Dead letters per reason in the last 15 minutes, summed over live instances.
    pub dead_letters_15m: BTreeMap<String, u64>,
    /// Whether every live instance reaches its Kafka cluster (`null` without Kafka).
    pub broker_reachable: Option<bool>,
    /// How far the read model trails gridwatch's output topics, in seconds (0 in-process).
    pub read_model_lag_seconds: f64,
    /// Distinct input partitions claimed by live instances.
    pub partitions_total: u32,
    /// Every instance seen recently, live or stale.
    pub instances: Vec<InstanceView>,
}

/// Cells whose counts changed: one `cells` stream event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CellsChange {
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// View names, in the order of each cell's `events`.
    pub views: Vec<String>,
    /// The changed cells.
    pub cells: Vec<CellCounts>,
}

/// One cell's counts in every view.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CellCounts {
    /// 14-digit grid id.
    pub grid_id: String,
    /// Events per view, in the order of `views`.
    pub events: Vec<u64>,
    /// Whether a life-safety alert about the cell is firing.
    pub life_safety_firing: bool,
}

/// What one stream event carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StreamPayload {
    /// An alert fired, changed or resolved (`event: alert`).
    Alert(Box<AlertView>),
    /// Cells whose counts changed (`event: cells`).
    Cells(CellsChange),
    /// The pipeline strip (`event: status`).
    Status(PipelineStatus),
    /// The fraud report changed (`event: fraud`).
    Fraud(Box<crate::fraud::FraudReport>),
}

impl StreamPayload {
    /// The SSE `event:` name.
    pub fn event_name(&self) -> &'static str {
        match self {
            StreamPayload::Alert(_) => "alert",
            StreamPayload::Cells(_) => "cells",
            StreamPayload::Status(_) => "status",
            StreamPayload::Fraud(_) => "fraud",
        }
    }
}

/// One event of the live stream: its sequence number (the SSE `id:`) and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Increasing sequence number; a client resumes after it with `Last-Event-ID`.
    pub id: u64,
    /// What happened.
    pub payload: StreamPayload,
}
