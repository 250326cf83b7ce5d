//! Resolution: which grid cell an event belongs to, in the documented order (a registered
//! `grid_id`, else a registered device, else the coordinates by point-in-polygon), or why none.

use geo::{Contains, Intersects};

use super::coords;
use super::model::{device_id_key, grid_id_key, CellIndex, GridRegistry};
use crate::proto::{Crs, IncidentEvent};

/// Why an event could not be placed in a cell.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridResolveError {
    /// No grid id, device or coordinates matched the registry. The text names no value: it
    /// becomes a dead letter's `detail` (and a Kafka header), which must not echo input.
    #[error("no registered grid cell matches the event's grid_id, device_id or coordinates")]
    UnknownGrid {
        /// The grid id the event carried (may be empty).
        grid_id: String,
        /// The device id the event carried (may be empty).
        device_id: String,
    },
    /// Coordinates are present but not finite or outside the valid range.
    #[error(
        "invalid coordinates: lat and lon must be finite, within ±90 and ±180, in a known crs"
    )]
    InvalidCoordinates {
        /// Latitude as received.
        lat: f64,
        /// Longitude as received.
        lon: f64,
    },
}

impl GridRegistry {
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
        self.cell_by_grid_id.get(&grid_id_key(grid_id)?).copied()
    }

    /// The cell for a registered device id.
    pub fn cell_by_device(&self, device_id: &str) -> Option<CellIndex> {
        self.device_location_by_id
            .get(&device_id_key(device_id)?)
            .map(|(cell, _)| *cell)
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
}
