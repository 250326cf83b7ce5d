//! Grid resolution: which grid cell an event belongs to.
//!
//! The registry (communities, grid cells with polygons, devices) is loaded from `seeds/`
//! (embedded in the binary by default). Resolution order: the event's `grid_id` when it is in
//! the registry; else the device registry; else lat/lon (normalized from GCJ-02 / BD-09 to
//! WGS-84) by point-in-polygon through an R-tree; else the event is rejected as `unknown_grid`.
//!
//! Everything here is synchronous and owns no tasks or locks.

pub mod coords;

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

/// The registry of districts, communities, cells and devices, with the indexes that resolve
/// an event to its cell.
#[derive(Debug)]
pub struct GridRegistry {
    // Filled in by the registry implementation.
}

impl GridRegistry {
    /// The registry built from the seeds embedded in the binary (`seeds/`).
    pub fn embedded() -> std::sync::Arc<GridRegistry> {
        todo!()
    }

    /// Resolves an event to its cell, in the documented order.
    pub fn resolve(&self, _event: &IncidentEvent) -> Result<CellIndex, GridResolveError> {
        todo!()
    }

    /// The cell for a registered 14-digit grid id.
    pub fn cell_by_grid_id(&self, _grid_id: &str) -> Option<CellIndex> {
        todo!()
    }

    /// The cell for a registered device id.
    pub fn cell_by_device(&self, _device_id: &str) -> Option<CellIndex> {
        todo!()
    }

    /// The cell containing a point given in `crs` (normalized to WGS-84 first).
    pub fn cell_at(&self, _lon: f64, _lat: f64, _crs: Crs) -> Option<CellIndex> {
        todo!()
    }

    /// A cell by index. Panics on an index not from this registry.
    pub fn cell(&self, _cell: CellIndex) -> &Cell {
        todo!()
    }

    /// A community by index.
    pub fn community(&self, _community: CommunityIndex) -> &Community {
        todo!()
    }

    /// The community of a cell.
    pub fn community_of(&self, cell: CellIndex) -> &Community {
        self.community(self.cell(cell).community)
    }

    /// The district a community belongs to.
    pub fn district(&self, _code: &str) -> Option<&District> {
        todo!()
    }

    /// All cells, indexed by `CellIndex`.
    pub fn cells(&self) -> &[Cell] {
        todo!()
    }

    /// All communities, indexed by `CommunityIndex`.
    pub fn communities(&self) -> &[Community] {
        todo!()
    }

    /// All districts.
    pub fn districts(&self) -> &[District] {
        todo!()
    }

    /// Devices installed in a cell.
    pub fn devices_in_cell(&self, _cell: CellIndex) -> &[Device] {
        todo!()
    }
}
