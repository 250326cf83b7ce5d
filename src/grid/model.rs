//! The registry's model: districts, communities, grid cells and devices as the rest of the
//! crate sees them, their dense indexes, the device kinds (which event types a device can
//! report) and the registry's read accessors. Loading and resolution are beside it
//! ([`super::loading`], [`super::resolution`]).

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::proto::EventType;

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
    /// Event types the device can report (its kind's: shared, not a list per device, which
    /// was 19,111 allocations at every start).
    pub event_types: &'static [EventType],
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

/// Digits in a grid id (the 12-digit community code and a 2-digit cell number).
pub(super) const GRID_ID_DIGITS: usize = 14;
/// Digits in a device id.
pub(super) const DEVICE_ID_DIGITS: usize = 20;

/// A grid id as the number it spells, or `None` unless it is exactly [`GRID_ID_DIGITS`] ASCII
/// digits. The registry accepts only such ids, so two ids are equal exactly when their keys
/// are, and any other text matches none. Every event looks its cell up this way: a number
/// is hashed and compared in place, where a string key sent each probe to a second memory
/// read (the lookups were 8 % of a replay's CPU).
pub(super) fn grid_id_key(grid_id: &str) -> Option<u64> {
    // Every event's grid id is read here: as two overlapping words of eight digits
    // ([`crate::byte_words::eight_digits_value`]) instead of digit by digit in `u128`
    // ([`digit_string_value`], which gives the same), 82 → 37 M instructions in a 1 M-event
    // replay. The first word's last two digits are the second word's first two.
    const FIRST_WORD_EXCESS: u64 = 10u64.pow((16 - GRID_ID_DIGITS) as u32);
    let bytes = grid_id.as_bytes();
    if bytes.len() != GRID_ID_DIGITS {
        return None;
    }
    let digits_at = |at: usize| {
        crate::byte_words::word_at(bytes, at).and_then(crate::byte_words::eight_digits_value)
    };
    let first = digits_at(0)?;
    let last = digits_at(GRID_ID_DIGITS - 8)?;
    Some(first / FIRST_WORD_EXCESS * 100_000_000 + last)
}

/// A device id as the number it spells, or `None` unless it is exactly [`DEVICE_ID_DIGITS`]
/// ASCII digits (as [`grid_id_key`]; 20 digits need more than 64 bits).
pub(super) fn device_id_key(device_id: &str) -> Option<u128> {
    digit_string_value(device_id, DEVICE_ID_DIGITS)
}

/// The value of a text of exactly `digit_count` ASCII digits (at most 38, so it fits), or
/// `None` for any other text.
pub(super) fn digit_string_value(text: &str, digit_count: usize) -> Option<u128> {
    if text.len() != digit_count || digit_count > 38 {
        return None;
    }
    text.bytes().try_fold(0u128, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u128::from(byte - b'0'))
    })
}

/// An R-tree entry: a cell's bounding box, carrying the cell index.
pub(super) type CellBox = GeomWithData<Rectangle<[f64; 2]>, CellIndex>;

/// The registry of districts, communities, cells and devices, with the indexes that resolve
/// an event to its cell.
#[derive(Debug)]
pub struct GridRegistry {
    /// County-level divisions, in seed order.
    pub(super) districts: Vec<District>,
    /// Communities, indexed by `CommunityIndex`.
    pub(super) communities: Vec<Community>,
    /// Index into `districts` of each community's district (parallel to `communities`), so
    /// that `district_of` needs no lookup by string.
    pub(super) community_district: Vec<usize>,
    /// The communities of each district (parallel to `districts`), for district-scope rules.
    pub(super) communities_by_district: Vec<Vec<CommunityIndex>>,
    /// Cells, indexed by `CellIndex`.
    pub(super) cells: Vec<Cell>,
    /// A point inside each cell (parallel to `cells`), for simulators and tests.
    pub(super) cell_representative_points: Vec<(f64, f64)>,
    /// Devices grouped by the cell they are installed in (parallel to `cells`).
    pub(super) devices_by_cell: Vec<Vec<Device>>,
    /// Resolution by grid id (keyed by [`grid_id_key`]): the first and cheapest path.
    pub(super) cell_by_grid_id: HashMap<u64, CellIndex>,
    /// Resolution by device id (keyed by [`device_id_key`]): (cell, position in
    /// `devices_by_cell[cell]`).
    pub(super) device_location_by_id: HashMap<u128, (CellIndex, usize)>,
    /// Community lookup by 12-digit code.
    pub(super) community_by_id: HashMap<String, CommunityIndex>,
    /// Bounding boxes of the cells, for point-in-polygon candidates.
    pub(super) cell_boxes: RTree<CellBox>,
}

impl GridRegistry {
    /// A registered device by id.
    pub fn device(&self, device_id: &str) -> Option<&Device> {
        let (cell, position) = *self.device_location_by_id.get(&device_id_key(device_id)?)?;
        self.devices_by_cell.get(cell.0 as usize)?.get(position)
    }

    /// A cell by index, for an index this registry minted (resolution, or iteration over
    /// [`Self::cells`]). Panics on an index not from this registry: code holding an index
    /// from restored state or from another component uses [`Self::get_cell`] instead.
    #[allow(clippy::indexing_slicing)] // an index minted by this registry is below `cells.len()`
    pub fn cell(&self, cell: CellIndex) -> &Cell {
        &self.cells[cell.0 as usize]
    }

    /// A cell by index, or `None` for an index not from this registry: the accessor for
    /// indexes that crossed a trust boundary (restored state), so that a forged or foreign
    /// index costs one event or window rather than the process.
    pub fn get_cell(&self, cell: CellIndex) -> Option<&Cell> {
        self.cells.get(cell.0 as usize)
    }

    /// A community by index, for an index this registry minted. Panics on an index not from
    /// this registry: code holding an index from restored state uses
    /// [`Self::get_community`] instead.
    #[allow(clippy::indexing_slicing)] // an index minted by this registry is below `communities.len()`
    pub fn community(&self, community: CommunityIndex) -> &Community {
        &self.communities[community.0 as usize]
    }

    /// A community by index, or `None` for an index not from this registry (see
    /// [`Self::get_cell`]).
    pub fn get_community(&self, community: CommunityIndex) -> Option<&Community> {
        self.communities.get(community.0 as usize)
    }

    /// A cell and its community, or `None` when either index is not from this registry: the
    /// pair every output row names, looked up without a panic path.
    pub fn get_cell_and_community(&self, cell: CellIndex) -> Option<(&Cell, &Community)> {
        let cell = self.get_cell(cell)?;
        let community = self.get_community(cell.community)?;
        Some((cell, community))
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

    /// The district of a cell, for an index this registry minted. Panics on an index not
    /// from this registry.
    #[allow(clippy::indexing_slicing)] // loading builds `community_district` parallel to `communities`, each entry an index into `districts`
    pub fn district_of(&self, cell: CellIndex) -> &District {
        let community = self.cell(cell).community;
        &self.districts[self.community_district[community.0 as usize]]
    }

    /// Position in [`Self::districts`] of a community's district, or `None` for an index not
    /// from this registry.
    pub fn district_position_of(&self, community: CommunityIndex) -> Option<usize> {
        self.community_district.get(community.0 as usize).copied()
    }

    /// The communities of the district at `district_position` in [`Self::districts`] (empty
    /// for a position out of range).
    pub fn communities_of_district(&self, district_position: usize) -> &[CommunityIndex] {
        self.communities_by_district
            .get(district_position)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// A WGS-84 (longitude, latitude) point inside the cell: its centroid, or an interior
    /// point when the centroid falls outside a concave polygon. Simulators use it to emit
    /// coordinates that resolve back to the cell. Panics on an index not from this registry
    /// (simulators only iterate over the registry's own cells).
    #[allow(clippy::indexing_slicing)] // `cell_representative_points` is parallel to `cells`
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
