//! Grid resolution: which grid cell an event belongs to.
//!
//! The registry (communities, grid cells with polygons, devices) is loaded from `seeds/`
//! (embedded in the binary by default). Resolution order: the event's `grid_id` when it is in
//! the registry; else the device registry; else lat/lon (normalized from GCJ-02 / BD-09 to
//! WGS-84) by point-in-polygon through an R-tree; else the event is rejected as `unknown_grid`.
//!
//! Everything here is synchronous and owns no tasks or locks.

pub mod coords;

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use geo::{BoundingRect, Centroid, Contains, InteriorPoint, Intersects};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use serde::{Deserialize, Serialize};

use crate::proto::{Crs, EventType, IncidentEvent};

/// Dense index of a grid cell in the registry (stable for a given seeds set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellIndex(pub u32);

/// Dense index of a community in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommunityIndex(pub u32);

/// A county-level division (district or county) of Hebi.
#[derive(Debug, Clone)]
pub struct District {
    /// 6-digit GB/T 2260 code, e.g. "410611".
    pub code: String,
    /// Chinese name, e.g. "淇滨区".
    pub name_zh: String,
    /// Pinyin/English name, e.g. "Qibin".
    pub name_en: String,
}

/// A smart-security community (智慧安防小区).
#[derive(Debug, Clone)]
pub struct Community {
    /// 12-digit community code.
    pub id: String,
    /// Community name (Chinese).
    pub name: String,
    /// 6-digit code of the district it belongs to.
    pub district_code: String,
    /// Resident population (the fraud-incidence denominator).
    pub population: u32,
    /// WGS-84 centroid (longitude, latitude).
    pub centroid: (f64, f64),
    /// The community's grid cells.
    pub cells: Vec<CellIndex>,
}

/// One grid cell (网格) of a community.
#[derive(Debug, Clone)]
pub struct Cell {
    /// 14-digit grid id: community code + 2-digit grid number.
    pub grid_id: String,
    /// The community the cell belongs to.
    pub community: CommunityIndex,
    /// Cell boundary in WGS-84 (x = longitude, y = latitude).
    pub polygon: geo::Polygon<f64>,
}

/// A registered device.
#[derive(Debug, Clone)]
pub struct Device {
    /// 20-digit GB/T 28181 style id.
    pub device_id: String,
    /// The cell the device is installed in.
    pub cell: CellIndex,
    /// Event types the device can report (from its kind).
    pub event_types: Vec<EventType>,
}

/// Why an event could not be placed in a cell.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridResolveError {
    /// No grid id, device or coordinates matched the registry.
    #[error("no registered grid cell matches grid_id {grid_id:?}, device_id {device_id:?} or the coordinates")]
    UnknownGrid {
        /// The grid id the event carried (may be empty).
        grid_id: String,
        /// The device id the event carried (may be empty).
        device_id: String,
    },
    /// Coordinates are present but not finite or outside the valid range.
    #[error("invalid coordinates lat {lat} lon {lon}")]
    InvalidCoordinates {
        /// Latitude as received.
        lat: f64,
        /// Longitude as received.
        lon: f64,
    },
}

/// Errors loading the registry from seed files.
#[derive(Debug, thiserror::Error)]
pub enum GridLoadError {
    /// A seed file could not be read.
    #[error("cannot read seed file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A seed file's content is invalid.
    #[error("invalid seed file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The kind of a registered device, which decides the event types it can report.
///
/// This table is the single source of truth for `seeds/devices.csv` (`kind` column) and is
/// documented in `seeds/README.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Smoke detector (烟感).
    SmokeDetector,
    /// Combustible gas sensor (燃气探测器).
    GasSensor,
    /// Electrical-safety monitor on a distribution board (智慧用电).
    ElectricalMonitor,
    /// One-button SOS alarm (一键报警).
    SosButton,
    /// Wearable for elderly residents living alone (独居老人手环).
    ElderWearable,
    /// Perimeter video camera with intrusion analytics (周界摄像机).
    PerimeterCamera,
    /// Upward-facing camera detecting objects thrown from height (高空抛物摄像机).
    HighAltitudeCamera,
    /// Building access controller (门禁).
    AccessController,
    /// Elevator-car camera detecting e-bikes (电梯摄像机).
    ElevatorCamera,
    /// Camera watching a fire lane (消防通道摄像机).
    FireLaneCamera,
}

impl DeviceKind {
    /// Every kind, in declaration order.
    pub const ALL: [DeviceKind; 10] = [
        DeviceKind::SmokeDetector,
        DeviceKind::GasSensor,
        DeviceKind::ElectricalMonitor,
        DeviceKind::SosButton,
        DeviceKind::ElderWearable,
        DeviceKind::PerimeterCamera,
        DeviceKind::HighAltitudeCamera,
        DeviceKind::AccessController,
        DeviceKind::ElevatorCamera,
        DeviceKind::FireLaneCamera,
    ];

    /// The snake_case name used in `devices.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::SmokeDetector => "smoke_detector",
            DeviceKind::GasSensor => "gas_sensor",
            DeviceKind::ElectricalMonitor => "electrical_monitor",
            DeviceKind::SosButton => "sos_button",
            DeviceKind::ElderWearable => "elder_wearable",
            DeviceKind::PerimeterCamera => "perimeter_camera",
            DeviceKind::HighAltitudeCamera => "high_altitude_camera",
            DeviceKind::AccessController => "access_controller",
            DeviceKind::ElevatorCamera => "elevator_camera",
            DeviceKind::FireLaneCamera => "fire_lane_camera",
        }
    }

    /// Parses the snake_case name used in `devices.csv`.
    pub fn from_name(name: &str) -> Option<DeviceKind> {
        DeviceKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The event types a device of this kind can report.
    pub fn event_types(self) -> &'static [EventType] {
        match self {
            DeviceKind::SmokeDetector => &[EventType::FireSmoke, EventType::DeviceOffline],
            DeviceKind::GasSensor => &[EventType::GasLeak, EventType::DeviceOffline],
            DeviceKind::ElectricalMonitor => &[
                EventType::ElectricalFault,
                EventType::EbikeCharging,
                EventType::DeviceOffline,
            ],
            DeviceKind::SosButton => &[EventType::Sos, EventType::DeviceOffline],
            DeviceKind::ElderWearable => &[
                EventType::ElderFall,
                EventType::ElderInactive,
                EventType::DeviceOffline,
            ],
            DeviceKind::PerimeterCamera => &[
                EventType::PerimeterIntrusion,
                EventType::Tripwire,
                EventType::Loitering,
                EventType::CrowdGathering,
                EventType::DeviceTamper,
                EventType::VideoLoss,
                EventType::DeviceOffline,
            ],
            DeviceKind::HighAltitudeCamera => &[
                EventType::HighAltitudeThrow,
                EventType::VideoLoss,
                EventType::DeviceOffline,
            ],
            DeviceKind::AccessController => &[
                EventType::DoorForced,
                EventType::Tailgating,
                EventType::DeviceTamper,
                EventType::DeviceOffline,
            ],
            DeviceKind::ElevatorCamera => &[
                EventType::EbikeInElevator,
                EventType::VideoLoss,
                EventType::DeviceOffline,
            ],
            DeviceKind::FireLaneCamera => &[
                EventType::FireLaneBlocked,
                EventType::VideoLoss,
                EventType::DeviceOffline,
            ],
        }
    }

    /// The 3-digit GB/T 28181 device type code used in the device id (digits 11–13):
    /// 131 camera, 134 alarm input device, 138 mobile transmission device.
    pub fn gbt28181_type_code(self) -> &'static str {
        match self {
            DeviceKind::PerimeterCamera
            | DeviceKind::HighAltitudeCamera
            | DeviceKind::ElevatorCamera
            | DeviceKind::FireLaneCamera => "131",
            DeviceKind::SmokeDetector
            | DeviceKind::GasSensor
            | DeviceKind::ElectricalMonitor
            | DeviceKind::SosButton
            | DeviceKind::AccessController => "134",
            DeviceKind::ElderWearable => "138",
        }
    }
}

/// Whether `text` is exactly `digit_count` ASCII digits.
fn is_digit_string(text: &str, digit_count: usize) -> bool {
    text.len() == digit_count && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// An R-tree entry: a cell's bounding box, carrying the cell index.
type CellBox = GeomWithData<Rectangle<[f64; 2]>, CellIndex>;

/// The registry of districts, communities, cells and devices, with the indexes that resolve
/// an event to its cell.
#[derive(Debug)]
pub struct GridRegistry {
    /// County-level divisions, in seed order.
    districts: Vec<District>,
    /// Communities, indexed by `CommunityIndex`.
    communities: Vec<Community>,
    /// Index into `districts` of each community's district (parallel to `communities`), so
    /// that `district_of` needs no lookup by string.
    community_district: Vec<usize>,
    /// Cells, indexed by `CellIndex`.
    cells: Vec<Cell>,
    /// A point inside each cell (parallel to `cells`), for simulators and tests.
    cell_representative_points: Vec<(f64, f64)>,
    /// Devices grouped by the cell they are installed in (parallel to `cells`).
    devices_by_cell: Vec<Vec<Device>>,
    /// Resolution by grid id: the first and cheapest path.
    cell_by_grid_id: HashMap<String, CellIndex>,
    /// Resolution by device id: (cell, position in `devices_by_cell[cell]`).
    device_location_by_id: HashMap<String, (CellIndex, usize)>,
    /// Community lookup by 12-digit code.
    community_by_id: HashMap<String, CommunityIndex>,
    /// Bounding boxes of the cells, for point-in-polygon candidates.
    cell_boxes: RTree<CellBox>,
}

/// A row of `districts.csv`.
#[derive(Debug, Deserialize)]
struct DistrictRow {
    /// 6-digit division code.
    code: String,
    /// Chinese name.
    name_zh: String,
    /// Pinyin name.
    name_en: String,
}

/// A row of `communities.csv`.
#[derive(Debug, Deserialize)]
struct CommunityRow {
    /// 12-digit community code.
    community_id: String,
    /// Community name.
    name: String,
    /// 6-digit division code.
    district_code: String,
    /// Resident population.
    population: u32,
    /// WGS-84 longitude of the centroid.
    centroid_lon: f64,
    /// WGS-84 latitude of the centroid.
    centroid_lat: f64,
}

/// A row of `devices.csv`.
#[derive(Debug, Deserialize)]
struct DeviceRow {
    /// 20-digit device id.
    device_id: String,
    /// 14-digit grid id of the cell it is installed in.
    grid_id: String,
    /// Device kind (snake_case).
    kind: String,
}

/// Builds a `GridLoadError::Invalid`.
fn invalid(path: &str, message: String) -> GridLoadError {
    GridLoadError::Invalid {
        path: path.to_string(),
        message,
    }
}

/// Deserializes every row of a CSV text with a header line.
fn parse_csv_rows<Row: serde::de::DeserializeOwned>(
    path: &str,
    text: &str,
) -> Result<Vec<Row>, GridLoadError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for row_result in reader.deserialize::<Row>() {
        let row = row_result.map_err(|error| invalid(path, error.to_string()))?;
        rows.push(row);
    }
    Ok(rows)
}

/// Reads a string property of a GeoJSON feature.
fn feature_string_property<'a>(
    feature: &'a geojson::Feature,
    name: &str,
    feature_number: usize,
) -> Result<&'a str, GridLoadError> {
    feature
        .properties
        .as_ref()
        .and_then(|properties| properties.get(name))
        .and_then(|value| value.as_str())
        .ok_or_else(|| {
            invalid(
                GRIDS_FILE,
                format!("feature {feature_number} has no string property {name:?}"),
            )
        })
}

/// File name of the districts seed.
const DISTRICTS_FILE: &str = "districts.csv";
/// File name of the communities seed.
const COMMUNITIES_FILE: &str = "communities.csv";
/// File name of the grid polygons seed.
const GRIDS_FILE: &str = "grids.geojson";
/// File name of the devices seed.
const DEVICES_FILE: &str = "devices.csv";

impl GridRegistry {
    /// The registry built from the seeds embedded in the binary (`seeds/`), loaded once.
    ///
    /// The embedded seeds are compile-time data checked by this module's tests; should they
    /// ever fail to load, this panics with the loader's message rather than run with an empty
    /// registry that would reject every event.
    pub fn embedded() -> Arc<GridRegistry> {
        static EMBEDDED_REGISTRY: OnceLock<Arc<GridRegistry>> = OnceLock::new();
        EMBEDDED_REGISTRY
            .get_or_init(|| {
                let registry = GridRegistry::from_seed_texts(
                    include_str!("../../seeds/districts.csv"),
                    include_str!("../../seeds/communities.csv"),
                    include_str!("../../seeds/grids.geojson"),
                    include_str!("../../seeds/devices.csv"),
                )
                .unwrap_or_else(|error| panic!("the embedded seeds are invalid: {error}"));
                Arc::new(registry)
            })
            .clone()
    }

    /// Loads the registry from the four seed files in `dir` (`districts.csv`,
    /// `communities.csv`, `grids.geojson`, `devices.csv`).
    pub fn from_seed_dir(dir: &Path) -> Result<GridRegistry, GridLoadError> {
        let read = |file_name: &str| -> Result<String, GridLoadError> {
            let path = dir.join(file_name);
            std::fs::read_to_string(&path).map_err(|source| GridLoadError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let districts_csv = read(DISTRICTS_FILE)?;
        let communities_csv = read(COMMUNITIES_FILE)?;
        let grids_geojson = read(GRIDS_FILE)?;
        let devices_csv = read(DEVICES_FILE)?;
        GridRegistry::from_seed_texts(
            &districts_csv,
            &communities_csv,
            &grids_geojson,
            &devices_csv,
        )
    }

    /// Loads the registry from the texts of the four seed files.
    pub fn from_seed_texts(
        districts_csv: &str,
        communities_csv: &str,
        grids_geojson: &str,
        devices_csv: &str,
    ) -> Result<GridRegistry, GridLoadError> {
        let districts: Vec<District> =
            parse_csv_rows::<DistrictRow>(DISTRICTS_FILE, districts_csv)?
                .into_iter()
                .map(|row| District {
                    code: row.code,
                    name_zh: row.name_zh,
                    name_en: row.name_en,
                })
                .collect();

        let communities: Vec<Community> =
            parse_csv_rows::<CommunityRow>(COMMUNITIES_FILE, communities_csv)?
                .into_iter()
                .map(|row| Community {
                    id: row.community_id,
                    name: row.name,
                    district_code: row.district_code,
                    population: row.population,
                    centroid: (row.centroid_lon, row.centroid_lat),
                    cells: Vec::new(),
                })
                .collect();
        let mut community_by_id: HashMap<&str, CommunityIndex> = HashMap::default();
        for (position, community) in communities.iter().enumerate() {
            let index = u32::try_from(position)
                .map_err(|_| invalid(COMMUNITIES_FILE, "too many communities".to_string()))?;
            community_by_id.insert(community.id.as_str(), CommunityIndex(index));
        }

        let feature_collection: geojson::FeatureCollection = grids_geojson
            .parse()
            .map_err(|error: geojson::Error| invalid(GRIDS_FILE, error.to_string()))?;
        let mut cells = Vec::with_capacity(feature_collection.features.len());
        for (feature_number, feature) in feature_collection.features.iter().enumerate() {
            let grid_id = feature_string_property(feature, "grid_id", feature_number)?;
            let community_id = feature_string_property(feature, "community_id", feature_number)?;
            let community = *community_by_id.get(community_id).ok_or_else(|| {
                invalid(
                    GRIDS_FILE,
                    format!("grid {grid_id}: unknown community_id {community_id}"),
                )
            })?;
            let geometry = feature
                .geometry
                .as_ref()
                .ok_or_else(|| invalid(GRIDS_FILE, format!("grid {grid_id} has no geometry")))?;
            let polygon = geo::Polygon::<f64>::try_from(&geometry.value).map_err(|error| {
                invalid(
                    GRIDS_FILE,
                    format!("grid {grid_id}: geometry is not a polygon: {error}"),
                )
            })?;
            cells.push(Cell {
                grid_id: grid_id.to_string(),
                community,
                polygon,
            });
        }
        drop(community_by_id);

        let cell_by_grid_id: HashMap<&str, CellIndex> = cells
            .iter()
            .enumerate()
            .filter_map(|(position, cell)| {
                u32::try_from(position)
                    .ok()
                    .map(|index| (cell.grid_id.as_str(), CellIndex(index)))
            })
            .collect();
        let mut devices = Vec::new();
        for (row_number, row) in parse_csv_rows::<DeviceRow>(DEVICES_FILE, devices_csv)?
            .into_iter()
            .enumerate()
        {
            let kind = DeviceKind::from_name(&row.kind).ok_or_else(|| {
                invalid(
                    DEVICES_FILE,
                    format!("row {}: unknown device kind {:?}", row_number + 1, row.kind),
                )
            })?;
            let cell = *cell_by_grid_id.get(row.grid_id.as_str()).ok_or_else(|| {
                invalid(
                    DEVICES_FILE,
                    format!(
                        "device {}: grid {} is not in {GRIDS_FILE}",
                        row.device_id, row.grid_id
                    ),
                )
            })?;
            devices.push(Device {
                device_id: row.device_id,
                cell,
                event_types: kind.event_types().to_vec(),
            });
        }
        drop(cell_by_grid_id);

        GridRegistry::from_parts(districts, communities, cells, devices)
    }

    /// Builds a registry from its parts, validating identifiers and references.
    ///
    /// `Community::cells` is computed from the cells when it is empty; when it is given it must
    /// list exactly that community's cells. Used by the seed loaders and by unit tests that
    /// need a tiny registry.
    pub fn from_parts(
        districts: Vec<District>,
        mut communities: Vec<Community>,
        cells: Vec<Cell>,
        devices: Vec<Device>,
    ) -> Result<GridRegistry, GridLoadError> {
        let mut district_position_by_code: HashMap<String, usize> = HashMap::default();
        for (position, district) in districts.iter().enumerate() {
            if !is_digit_string(&district.code, 6) {
                return Err(invalid(
                    DISTRICTS_FILE,
                    format!("district code {:?} is not 6 digits", district.code),
                ));
            }
            if district_position_by_code
                .insert(district.code.clone(), position)
                .is_some()
            {
                return Err(invalid(
                    DISTRICTS_FILE,
                    format!("duplicate district code {}", district.code),
                ));
            }
        }

        let community_count = u32::try_from(communities.len())
            .map_err(|_| invalid(COMMUNITIES_FILE, "too many communities".to_string()))?;
        let mut community_by_id: HashMap<String, CommunityIndex> = HashMap::default();
        let mut community_district = Vec::with_capacity(communities.len());
        for (index, community) in (0..community_count).zip(communities.iter()) {
            if !is_digit_string(&community.id, 12) {
                return Err(invalid(
                    COMMUNITIES_FILE,
                    format!("community id {:?} is not 12 digits", community.id),
                ));
            }
            let district_position = *district_position_by_code
                .get(&community.district_code)
                .ok_or_else(|| {
                    invalid(
                        COMMUNITIES_FILE,
                        format!(
                            "community {}: unknown district code {:?}",
                            community.id, community.district_code
                        ),
                    )
                })?;
            if !community.id.starts_with(&community.district_code) {
                return Err(invalid(
                    COMMUNITIES_FILE,
                    format!(
                        "community {} does not start with its district code {}",
                        community.id, community.district_code
                    ),
                ));
            }
            if !(community.centroid.0.is_finite() && community.centroid.1.is_finite()) {
                return Err(invalid(
                    COMMUNITIES_FILE,
                    format!("community {} has a non-finite centroid", community.id),
                ));
            }
            if community_by_id
                .insert(community.id.clone(), CommunityIndex(index))
                .is_some()
            {
                return Err(invalid(
                    COMMUNITIES_FILE,
                    format!("duplicate community id {}", community.id),
                ));
            }
            community_district.push(district_position);
        }

        let cell_count = u32::try_from(cells.len())
            .map_err(|_| invalid(GRIDS_FILE, "too many cells".to_string()))?;
        let mut cell_by_grid_id: HashMap<String, CellIndex> = HashMap::default();
        let mut computed_community_cells: Vec<Vec<CellIndex>> = vec![Vec::new(); communities.len()];
        let mut cell_boxes_to_load = Vec::with_capacity(cells.len());
        let mut cell_representative_points = Vec::with_capacity(cells.len());
        for (index, cell) in (0..cell_count).zip(cells.iter()) {
            let cell_index = CellIndex(index);
            if !is_digit_string(&cell.grid_id, 14) {
                return Err(invalid(
                    GRIDS_FILE,
                    format!("grid id {:?} is not 14 digits", cell.grid_id),
                ));
            }
            let community = communities.get(cell.community.0 as usize).ok_or_else(|| {
                invalid(
                    GRIDS_FILE,
                    format!(
                        "grid {}: community index {} out of range",
                        cell.grid_id, cell.community.0
                    ),
                )
            })?;
            if !cell.grid_id.starts_with(&community.id) {
                return Err(invalid(
                    GRIDS_FILE,
                    format!(
                        "grid {} does not belong to its community {}",
                        cell.grid_id, community.id
                    ),
                ));
            }
            if cell_by_grid_id
                .insert(cell.grid_id.clone(), cell_index)
                .is_some()
            {
                return Err(invalid(
                    GRIDS_FILE,
                    format!("duplicate grid id {}", cell.grid_id),
                ));
            }
            let all_coordinates_finite = cell
                .polygon
                .exterior()
                .coords()
                .chain(
                    cell.polygon
                        .interiors()
                        .iter()
                        .flat_map(|ring| ring.coords()),
                )
                .all(|coordinate| coordinate.x.is_finite() && coordinate.y.is_finite());
            if !all_coordinates_finite {
                return Err(invalid(
                    GRIDS_FILE,
                    format!("grid {} has non-finite coordinates", cell.grid_id),
                ));
            }
            let bounding_rect = cell.polygon.bounding_rect().ok_or_else(|| {
                invalid(
                    GRIDS_FILE,
                    format!("grid {} has an empty polygon", cell.grid_id),
                )
            })?;
            cell_boxes_to_load.push(CellBox::new(
                Rectangle::from_corners(
                    [bounding_rect.min().x, bounding_rect.min().y],
                    [bounding_rect.max().x, bounding_rect.max().y],
                ),
                cell_index,
            ));
            cell_representative_points.push(representative_point(&cell.polygon, bounding_rect));
            if let Some(community_cells) =
                computed_community_cells.get_mut(cell.community.0 as usize)
            {
                community_cells.push(cell_index);
            }
        }

        for (community, computed_cells) in communities.iter_mut().zip(computed_community_cells) {
            if community.cells.is_empty() {
                community.cells = computed_cells;
                continue;
            }
            let mut given_cells = community.cells.clone();
            given_cells.sort();
            given_cells.dedup();
            if given_cells != computed_cells {
                return Err(invalid(
                    COMMUNITIES_FILE,
                    format!(
                        "community {} lists cells that do not match the cells pointing to it",
                        community.id
                    ),
                ));
            }
            community.cells = given_cells;
        }

        let mut devices_by_cell: Vec<Vec<Device>> = vec![Vec::new(); cells.len()];
        let mut device_location_by_id: HashMap<String, (CellIndex, usize)> = HashMap::default();
        for device in devices {
            if !is_digit_string(&device.device_id, 20) {
                return Err(invalid(
                    DEVICES_FILE,
                    format!("device id {:?} is not 20 digits", device.device_id),
                ));
            }
            let Some(cell_devices) = devices_by_cell.get_mut(device.cell.0 as usize) else {
                return Err(invalid(
                    DEVICES_FILE,
                    format!(
                        "device {}: cell index {} out of range",
                        device.device_id, device.cell.0
                    ),
                ));
            };
            let location = (device.cell, cell_devices.len());
            if device_location_by_id
                .insert(device.device_id.clone(), location)
                .is_some()
            {
                return Err(invalid(
                    DEVICES_FILE,
                    format!("duplicate device id {}", device.device_id),
                ));
            }
            cell_devices.push(device);
        }

        Ok(GridRegistry {
            districts,
            communities,
            community_district,
            cells,
            cell_representative_points,
            devices_by_cell,
            cell_by_grid_id,
            device_location_by_id,
            community_by_id,
            cell_boxes: RTree::bulk_load(cell_boxes_to_load),
        })
    }

    /// Resolves an event to its cell, in the documented order: a registered `grid_id`; else a
    /// registered `device_id`; else `lat`/`lon` (both present) normalized from `crs` to
    /// WGS-84 and located by point-in-polygon; else `UnknownGrid`.
    ///
    /// Coordinates that are not finite, out of range, or given in an unknown `crs` value are
    /// `InvalidCoordinates`. The grid-id and device paths do not allocate.
    pub fn resolve(&self, event: &IncidentEvent) -> Result<CellIndex, GridResolveError> {
        if let Some(cell) = self.cell_by_grid_id(&event.grid_id) {
            return Ok(cell);
        }
        if let Some(cell) = self.cell_by_device(&event.device_id) {
            return Ok(cell);
        }
        if let (Some(lat), Some(lon)) = (event.lat, event.lon) {
            let in_range = lat.is_finite()
                && lon.is_finite()
                && (-90.0..=90.0).contains(&lat)
                && (-180.0..=180.0).contains(&lon);
            let crs = Crs::try_from(event.crs);
            let Ok(crs) = crs else {
                return Err(GridResolveError::InvalidCoordinates { lat, lon });
            };
            if !in_range {
                return Err(GridResolveError::InvalidCoordinates { lat, lon });
            }
            if let Some(cell) = self.cell_at(lon, lat, crs) {
                return Ok(cell);
            }
        }
        Err(GridResolveError::UnknownGrid {
            grid_id: event.grid_id.clone(),
            device_id: event.device_id.clone(),
        })
    }

    /// The cell for a registered 14-digit grid id.
    pub fn cell_by_grid_id(&self, grid_id: &str) -> Option<CellIndex> {
        if grid_id.is_empty() {
            return None;
        }
        self.cell_by_grid_id.get(grid_id).copied()
    }

    /// The cell for a registered device id.
    pub fn cell_by_device(&self, device_id: &str) -> Option<CellIndex> {
        if device_id.is_empty() {
            return None;
        }
        self.device_location_by_id
            .get(device_id)
            .map(|(cell, _)| *cell)
    }

    /// A registered device by id.
    pub fn device(&self, device_id: &str) -> Option<&Device> {
        let (cell, position) = *self.device_location_by_id.get(device_id)?;
        self.devices_by_cell.get(cell.0 as usize)?.get(position)
    }

    /// The cell containing a point given in `crs` (normalized to WGS-84 first). Points on a
    /// border shared by two cells go to the cell with the smaller index, so the answer is
    /// deterministic. Non-finite coordinates give `None`.
    pub fn cell_at(&self, lon: f64, lat: f64, crs: Crs) -> Option<CellIndex> {
        if !(lon.is_finite() && lat.is_finite()) {
            return None;
        }
        let (wgs84_lon, wgs84_lat) = coords::to_wgs84(lon, lat, crs);
        let point = geo::Point::new(wgs84_lon, wgs84_lat);
        let mut interior_match: Option<CellIndex> = None;
        let mut boundary_match: Option<CellIndex> = None;
        for candidate in self.cell_boxes.locate_all_at_point(&[wgs84_lon, wgs84_lat]) {
            let cell_index = candidate.data;
            let Some(cell) = self.cells.get(cell_index.0 as usize) else {
                continue;
            };
            if cell.polygon.contains(&point) {
                if interior_match.is_none_or(|best| cell_index < best) {
                    interior_match = Some(cell_index);
                }
            } else if cell.polygon.intersects(&point)
                && boundary_match.is_none_or(|best| cell_index < best)
            {
                boundary_match = Some(cell_index);
            }
        }
        interior_match.or(boundary_match)
    }

    /// A cell by index. Panics on an index not from this registry.
    pub fn cell(&self, cell: CellIndex) -> &Cell {
        &self.cells[cell.0 as usize]
    }

    /// A community by index. Panics on an index not from this registry.
    pub fn community(&self, community: CommunityIndex) -> &Community {
        &self.communities[community.0 as usize]
    }

    /// The community of a cell.
    pub fn community_of(&self, cell: CellIndex) -> &Community {
        self.community(self.cell(cell).community)
    }

    /// A community by its 12-digit code.
    pub fn community_by_id(&self, community_id: &str) -> Option<CommunityIndex> {
        self.community_by_id.get(community_id).copied()
    }

    /// The district a community belongs to.
    pub fn district(&self, code: &str) -> Option<&District> {
        self.districts.iter().find(|district| district.code == code)
    }

    /// The district of a cell. Panics on an index not from this registry.
    pub fn district_of(&self, cell: CellIndex) -> &District {
        let community = self.cell(cell).community;
        &self.districts[self.community_district[community.0 as usize]]
    }

    /// A WGS-84 (longitude, latitude) point inside the cell: its centroid, or an interior
    /// point when the centroid falls outside a concave polygon. Simulators use it to emit
    /// coordinates that resolve back to the cell. Panics on an index not from this registry.
    pub fn cell_centroid(&self, cell: CellIndex) -> (f64, f64) {
        self.cell_representative_points[cell.0 as usize]
    }

    /// All cells, indexed by `CellIndex`.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// All communities, indexed by `CommunityIndex`.
    pub fn communities(&self) -> &[Community] {
        &self.communities
    }

    /// All districts.
    pub fn districts(&self) -> &[District] {
        &self.districts
    }

    /// Devices installed in a cell (empty for an index not from this registry).
    pub fn devices_in_cell(&self, cell: CellIndex) -> &[Device] {
        self.devices_by_cell
            .get(cell.0 as usize)
            .map_or(&[], Vec::as_slice)
    }
}

/// A point inside `polygon`: the centroid when the polygon contains it, else geo's interior
/// point, else the bounding-box centre.
fn representative_point(polygon: &geo::Polygon<f64>, bounding_rect: geo::Rect<f64>) -> (f64, f64) {
    if let Some(centroid) = polygon.centroid() {
        if polygon.contains(&centroid) {
            return (centroid.x(), centroid.y());
        }
    }
    if let Some(interior_point) = polygon.interior_point() {
        return (interior_point.x(), interior_point.y());
    }
    let centre = bounding_rect.center();
    (centre.x, centre.y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A rectangle polygon from its corners.
    fn rectangle(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> geo::Polygon<f64> {
        geo::Rect::new(
            geo::coord! { x: min_lon, y: min_lat },
            geo::coord! { x: max_lon, y: max_lat },
        )
        .to_polygon()
    }

    /// One district, one community, two adjacent cells (west and east of lon 114.301) and
    /// one device in each.
    fn tiny_parts() -> (Vec<District>, Vec<Community>, Vec<Cell>, Vec<Device>) {
        let districts = vec![District {
            code: "410611".to_string(),
            name_zh: "淇滨区".to_string(),
            name_en: "Qibin".to_string(),
        }];
        let communities = vec![Community {
            id: "410611001001".to_string(),
            name: "朝阳社区".to_string(),
            district_code: "410611".to_string(),
            population: 5_000,
            centroid: (114.301, 35.7405),
            cells: Vec::new(),
        }];
        let cells = vec![
            Cell {
                grid_id: "41061100100101".to_string(),
                community: CommunityIndex(0),
                polygon: rectangle(114.300, 35.740, 114.301, 35.741),
            },
            Cell {
                grid_id: "41061100100102".to_string(),
                community: CommunityIndex(0),
                polygon: rectangle(114.301, 35.740, 114.302, 35.741),
            },
        ];
        let devices = vec![
            Device {
                device_id: "41061100011340000001".to_string(),
                cell: CellIndex(0),
                event_types: DeviceKind::SmokeDetector.event_types().to_vec(),
            },
            Device {
                device_id: "41061100011310000001".to_string(),
                cell: CellIndex(1),
                event_types: DeviceKind::PerimeterCamera.event_types().to_vec(),
            },
        ];
        (districts, communities, cells, devices)
    }

    fn tiny_registry() -> GridRegistry {
        let (districts, communities, cells, devices) = tiny_parts();
        match GridRegistry::from_parts(districts, communities, cells, devices) {
            Ok(registry) => registry,
            Err(error) => panic!("tiny registry must load: {error}"),
        }
    }

    fn event_at(lon: f64, lat: f64, crs: Crs) -> IncidentEvent {
        IncidentEvent {
            lat: Some(lat),
            lon: Some(lon),
            crs: crs as i32,
            ..Default::default()
        }
    }

    fn assert_invalid_parts(
        parts: (Vec<District>, Vec<Community>, Vec<Cell>, Vec<Device>),
        expected_fragment: &str,
    ) {
        let (districts, communities, cells, devices) = parts;
        match GridRegistry::from_parts(districts, communities, cells, devices) {
            Err(GridLoadError::Invalid { message, .. }) => assert!(
                message.contains(expected_fragment),
                "message {message:?} should mention {expected_fragment:?}"
            ),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("registry should have been rejected ({expected_fragment})"),
        }
    }

    #[test]
    fn registered_grid_id_resolves_before_device_and_coordinates() {
        let registry = tiny_registry();
        let event = IncidentEvent {
            grid_id: "41061100100102".to_string(),
            device_id: "41061100011340000001".to_string(),
            lat: Some(35.7405),
            lon: Some(114.3005),
            ..Default::default()
        };
        assert_eq!(registry.resolve(&event), Ok(CellIndex(1)));
    }

    #[test]
    fn unregistered_grid_id_falls_back_to_the_device() {
        let registry = tiny_registry();
        let event = IncidentEvent {
            grid_id: "41061100100199".to_string(),
            device_id: "41061100011310000001".to_string(),
            ..Default::default()
        };
        assert_eq!(registry.resolve(&event), Ok(CellIndex(1)));
        assert_eq!(
            registry
                .device("41061100011310000001")
                .map(|device| device.cell),
            Some(CellIndex(1))
        );
    }

    #[test]
    fn coordinates_resolve_when_ids_are_unknown() {
        let registry = tiny_registry();
        let mut event = event_at(114.3005, 35.7405, Crs::Wgs84);
        event.device_id = "99999999999999999999".to_string();
        assert_eq!(registry.resolve(&event), Ok(CellIndex(0)));
        let unspecified_frame = event_at(114.3015, 35.7405, Crs::Unspecified);
        assert_eq!(registry.resolve(&unspecified_frame), Ok(CellIndex(1)));
    }

    #[test]
    fn a_point_on_a_shared_edge_goes_to_the_smaller_cell_index() {
        let registry = tiny_registry();
        assert_eq!(
            registry.cell_at(114.301, 35.7405, Crs::Wgs84),
            Some(CellIndex(0))
        );
        // The outer corner belongs to one cell only.
        assert_eq!(
            registry.cell_at(114.302, 35.741, Crs::Wgs84),
            Some(CellIndex(1))
        );
    }

    #[test]
    fn nothing_matching_is_unknown_grid_with_the_ids_received() {
        let registry = tiny_registry();
        let outside = IncidentEvent {
            grid_id: "41061100100199".to_string(),
            device_id: "41061100011340009999".to_string(),
            lat: Some(35.0),
            lon: Some(114.0),
            ..Default::default()
        };
        assert_eq!(
            registry.resolve(&outside),
            Err(GridResolveError::UnknownGrid {
                grid_id: "41061100100199".to_string(),
                device_id: "41061100011340009999".to_string(),
            })
        );
        let only_latitude = IncidentEvent {
            lat: Some(35.7405),
            ..Default::default()
        };
        assert!(matches!(
            registry.resolve(&only_latitude),
            Err(GridResolveError::UnknownGrid { .. })
        ));
        assert!(matches!(
            registry.resolve(&IncidentEvent::default()),
            Err(GridResolveError::UnknownGrid { .. })
        ));
    }

    #[test]
    fn non_finite_or_out_of_range_coordinates_are_invalid() {
        let registry = tiny_registry();
        for (lon, lat) in [
            (f64::NAN, 35.0),
            (114.0, f64::INFINITY),
            (114.0, 90.5),
            (114.0, -91.0),
            (180.5, 35.0),
            (-181.0, 35.0),
        ] {
            let result = registry.resolve(&event_at(lon, lat, Crs::Wgs84));
            assert!(
                matches!(result, Err(GridResolveError::InvalidCoordinates { .. })),
                "({lon}, {lat}) gave {result:?}"
            );
        }
        let mut unknown_frame = event_at(114.3005, 35.7405, Crs::Wgs84);
        unknown_frame.crs = 42;
        assert!(matches!(
            registry.resolve(&unknown_frame),
            Err(GridResolveError::InvalidCoordinates { .. })
        ));
    }

    #[test]
    fn a_registered_grid_id_wins_over_invalid_coordinates() {
        let registry = tiny_registry();
        let mut event = event_at(f64::NAN, 95.0, Crs::Wgs84);
        event.grid_id = "41061100100101".to_string();
        assert_eq!(registry.resolve(&event), Ok(CellIndex(0)));
    }

    #[test]
    fn from_parts_computes_community_cells_and_indexes() {
        let registry = tiny_registry();
        assert_eq!(
            registry.communities()[0].cells,
            vec![CellIndex(0), CellIndex(1)]
        );
        assert_eq!(registry.district_of(CellIndex(1)).name_en, "Qibin");
        assert_eq!(
            registry.community_by_id("410611001001"),
            Some(CommunityIndex(0))
        );
        assert_eq!(registry.devices_in_cell(CellIndex(0)).len(), 1);
        assert!(registry.devices_in_cell(CellIndex(7)).is_empty());
        let (lon, lat) = registry.cell_centroid(CellIndex(1));
        assert!((lon - 114.3015).abs() < 1e-9 && (lat - 35.7405).abs() < 1e-9);
    }

    #[test]
    fn from_parts_rejects_community_cells_that_disagree() {
        let mut parts = tiny_parts();
        parts.1[0].cells = vec![CellIndex(0)];
        assert_invalid_parts(parts, "do not match");
    }

    #[test]
    fn loader_rejects_a_duplicate_grid_id() {
        let mut parts = tiny_parts();
        parts.2[1].grid_id = "41061100100101".to_string();
        assert_invalid_parts(parts, "duplicate grid id");
    }

    #[test]
    fn loader_rejects_bad_digit_counts() {
        let mut short_district = tiny_parts();
        short_district.0[0].code = "41061".to_string();
        assert_invalid_parts(short_district, "not 6 digits");

        let mut short_community = tiny_parts();
        short_community.1[0].id = "41061100100".to_string();
        assert_invalid_parts(short_community, "not 12 digits");

        let mut long_grid = tiny_parts();
        long_grid.2[0].grid_id = "410611001001011".to_string();
        assert_invalid_parts(long_grid, "not 14 digits");

        let mut lettered_device = tiny_parts();
        lettered_device.3[0].device_id = "4106110001134000000A".to_string();
        assert_invalid_parts(lettered_device, "not 20 digits");
    }

    #[test]
    fn loader_rejects_broken_references() {
        let mut foreign_grid = tiny_parts();
        foreign_grid.2[0].grid_id = "41061100100201".to_string();
        assert_invalid_parts(foreign_grid, "does not belong");

        let mut unknown_district = tiny_parts();
        unknown_district.1[0].district_code = "410612".to_string();
        assert_invalid_parts(unknown_district, "unknown district");

        let mut dangling_device = tiny_parts();
        dangling_device.3[0].cell = CellIndex(5);
        assert_invalid_parts(dangling_device, "out of range");

        let mut duplicate_device = tiny_parts();
        duplicate_device.3[1].device_id = duplicate_device.3[0].device_id.clone();
        assert_invalid_parts(duplicate_device, "duplicate device id");
    }

    #[test]
    fn text_loader_rejects_a_device_in_an_unknown_grid() {
        let districts_csv = "code,name_zh,name_en\n410611,淇滨区,Qibin\n";
        let communities_csv =
            "community_id,name,district_code,population,centroid_lon,centroid_lat\n\
                               410611001001,朝阳社区,410611,5000,114.3,35.74\n";
        let grids_geojson = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","properties":{"grid_id":"41061100100101","community_id":"410611001001","grid_no":1},
             "geometry":{"type":"Polygon","coordinates":[[[114.3,35.74],[114.301,35.74],[114.301,35.741],[114.3,35.741],[114.3,35.74]]]}}]}"#;
        let good_devices =
            "device_id,grid_id,kind\n41061100011340000001,41061100100101,gas_sensor\n";
        let registry = GridRegistry::from_seed_texts(
            districts_csv,
            communities_csv,
            grids_geojson,
            good_devices,
        );
        assert!(registry.is_ok(), "{registry:?}");

        let dangling_devices =
            "device_id,grid_id,kind\n41061100011340000001,41061100100102,gas_sensor\n";
        let result = GridRegistry::from_seed_texts(
            districts_csv,
            communities_csv,
            grids_geojson,
            dangling_devices,
        );
        assert!(matches!(result, Err(GridLoadError::Invalid { .. })));

        let unknown_kind = "device_id,grid_id,kind\n41061100011340000001,41061100100101,toaster\n";
        let result = GridRegistry::from_seed_texts(
            districts_csv,
            communities_csv,
            grids_geojson,
            unknown_kind,
        );
        assert!(matches!(result, Err(GridLoadError::Invalid { .. })));
    }

    #[test]
    fn device_kind_names_round_trip() {
        for kind in DeviceKind::ALL {
            assert_eq!(DeviceKind::from_name(kind.as_str()), Some(kind));
            assert!(kind.event_types().contains(&EventType::DeviceOffline));
        }
        assert_eq!(DeviceKind::from_name("Smoke_Detector"), None);
    }

    #[test]
    fn embedded_registry_has_162_communities_of_8_to_15_cells() {
        let registry = GridRegistry::embedded();
        assert_eq!(registry.districts().len(), 5);
        assert_eq!(registry.communities().len(), 162);
        for community in registry.communities() {
            assert!(
                (8..=15).contains(&community.cells.len()),
                "{} has {} cells",
                community.id,
                community.cells.len()
            );
            assert!((3_000..=15_000).contains(&community.population));
        }
        assert!(Arc::ptr_eq(&registry, &GridRegistry::embedded()));
    }

    #[test]
    fn every_embedded_cell_has_a_device_for_each_device_reported_type() {
        let registry = GridRegistry::embedded();
        let device_reported_types: std::collections::BTreeSet<i32> = DeviceKind::ALL
            .iter()
            .flat_map(|kind| {
                kind.event_types()
                    .iter()
                    .map(|event_type| *event_type as i32)
            })
            .collect();
        for (position, cell) in registry.cells().iter().enumerate() {
            let Ok(index) = u32::try_from(position) else {
                panic!("cell count fits u32");
            };
            let reportable: std::collections::BTreeSet<i32> = registry
                .devices_in_cell(CellIndex(index))
                .iter()
                .flat_map(|device| {
                    device
                        .event_types
                        .iter()
                        .map(|event_type| *event_type as i32)
                })
                .collect();
            assert_eq!(reportable, device_reported_types, "cell {}", cell.grid_id);
        }
    }

    #[test]
    fn every_embedded_cell_centroid_resolves_back_in_all_frames() {
        let registry = GridRegistry::embedded();
        for (position, cell) in registry.cells().iter().enumerate() {
            let Ok(index) = u32::try_from(position) else {
                panic!("cell count fits u32");
            };
            let expected = CellIndex(index);
            let (lon, lat) = registry.cell_centroid(expected);
            for crs in [Crs::Wgs84, Crs::Gcj02, Crs::Bd09] {
                let (converted_lon, converted_lat) = coords::from_wgs84(lon, lat, crs);
                assert_eq!(
                    registry.resolve(&event_at(converted_lon, converted_lat, crs)),
                    Ok(expected),
                    "cell {} in {crs:?}",
                    cell.grid_id
                );
            }
        }
    }

    #[test]
    fn gcj02_coordinates_taken_as_wgs84_would_land_elsewhere() {
        // Proves that the GCJ-02 test above depends on the normalization: the offset in Hebi
        // is larger than a cell, so skipping it misplaces the event.
        let registry = GridRegistry::embedded();
        let cell = CellIndex(0);
        let (lon, lat) = registry.cell_centroid(cell);
        let (gcj_lon, gcj_lat) = coords::wgs84_to_gcj02(lon, lat);
        assert_ne!(registry.cell_at(gcj_lon, gcj_lat, Crs::Wgs84), Some(cell));
        assert_eq!(registry.cell_at(gcj_lon, gcj_lat, Crs::Gcj02), Some(cell));
    }

    #[test]
    fn embedded_communities_do_not_overlap() {
        let registry = GridRegistry::embedded();
        let community_boxes: Vec<geo::Rect<f64>> = registry
            .communities()
            .iter()
            .filter_map(|community| {
                let polygons: Vec<geo::Polygon<f64>> = community
                    .cells
                    .iter()
                    .map(|cell| registry.cell(*cell).polygon.clone())
                    .collect();
                geo::MultiPolygon(polygons).bounding_rect()
            })
            .collect();
        assert_eq!(community_boxes.len(), 162);
        for (first_position, first_box) in community_boxes.iter().enumerate() {
            for second_box in community_boxes.iter().skip(first_position + 1) {
                assert!(!first_box.intersects(second_box));
            }
        }
    }

    #[test]
    fn embedded_ids_nest_district_community_grid() {
        let registry = GridRegistry::embedded();
        for cell in registry.cells() {
            let community = registry.community(cell.community);
            assert!(cell.grid_id.starts_with(&community.id));
            assert!(community.id.starts_with(&community.district_code));
            assert!(registry.district(&community.district_code).is_some());
        }
        let Some(first_device) = registry.devices_in_cell(CellIndex(0)).first() else {
            panic!("cell 0 has devices");
        };
        assert_eq!(
            registry.cell_by_device(&first_device.device_id),
            Some(CellIndex(0))
        );
    }

    proptest! {
        #[test]
        fn resolve_never_panics_on_any_coordinates(
            lon in proptest::num::f64::ANY,
            lat in proptest::num::f64::ANY,
            crs in -2i32..6,
        ) {
            let registry = tiny_registry();
            let event = IncidentEvent { lat: Some(lat), lon: Some(lon), crs, ..Default::default() };
            let _ = registry.resolve(&event);
        }

        #[test]
        fn points_inside_a_cell_resolve_to_it(
            lon_fraction in 0.01f64..0.99, lat_fraction in 0.01f64..0.99
        ) {
            let registry = tiny_registry();
            let lon = 114.301 + 0.001 * lon_fraction;
            let lat = 35.740 + 0.001 * lat_fraction;
            prop_assert_eq!(registry.cell_at(lon, lat, Crs::Wgs84), Some(CellIndex(1)));
        }
    }
}
