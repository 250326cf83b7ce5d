//! Loading the registry: from the seed files embedded in the binary, from a seed directory, or
//! from parts (tests), validating every identifier and reference once so that resolution can
//! trust them.

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use geo::{BoundingRect, Centroid, Contains, InteriorPoint};
use rstar::primitives::Rectangle;
use rstar::RTree;
use serde::Deserialize;

use super::grid_features::{GridFeatureCollection, StringOrOther};
use super::model::{
    device_id_key, digit_string_value, grid_id_key, Cell, CellBox, CellIndex, Community,
    CommunityIndex, Device, DeviceKind, District, GridRegistry, DEVICE_ID_DIGITS, GRID_ID_DIGITS,
};

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

/// Whether `text` is exactly `digit_count` ASCII digits (the check the grid and device id
/// keys make).
fn is_digit_string(text: &str, digit_count: usize) -> bool {
    digit_string_value(text, digit_count).is_some()
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

/// A row of `devices.csv`, borrowed from its record.
#[derive(Debug, Deserialize)]
struct DeviceRow<'record> {
    /// 20-digit device id.
    device_id: &'record str,
    /// 14-digit grid id of the cell it is installed in.
    grid_id: &'record str,
    /// Device kind (snake_case).
    kind: &'record str,
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
fn feature_string_property<'feature>(
    value: Option<&'feature StringOrOther<'_>>,
    name: &str,
    feature_number: usize,
) -> Result<&'feature str, GridLoadError> {
    value.and_then(StringOrOther::as_str).ok_or_else(|| {
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
                );
                // Compile-time data, loaded by this module's tests on every CI run: this
                // panic is reachable only by a broken build, never by input.
                #[allow(clippy::panic)]
                let registry = registry
                    .unwrap_or_else(|error| panic!("the embedded seeds are invalid: {error}"));
                Arc::new(registry)
            })
            .clone()
    }

    /// The registry of `seeds.dir`: loaded from that directory, or the embedded seeds.
    pub fn of_seeds(dir: Option<&Path>) -> Result<Arc<GridRegistry>, GridLoadError> {
        match dir {
            Some(directory) => Ok(Arc::new(GridRegistry::from_seed_dir(directory)?)),
            None => Ok(GridRegistry::embedded()),
        }
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

        let feature_collection: GridFeatureCollection<'_> = serde_json::from_str(grids_geojson)
            .map_err(|error| invalid(GRIDS_FILE, error.to_string()))?;
        if feature_collection.kind != "FeatureCollection" {
            return Err(invalid(
                GRIDS_FILE,
                format!(
                    "expected a FeatureCollection, found {}",
                    feature_collection.kind
                ),
            ));
        }
        let mut cells = Vec::with_capacity(feature_collection.features.len());
        for (feature_number, feature) in feature_collection.features.into_iter().enumerate() {
            if feature.kind != "Feature" {
                return Err(invalid(
                    GRIDS_FILE,
                    format!(
                        "feature {feature_number} is a {}, not a Feature",
                        feature.kind
                    ),
                ));
            }
            let properties = feature.properties.as_ref();
            let grid_id = feature_string_property(
                properties.and_then(|properties| properties.grid_id.as_ref()),
                "grid_id",
                feature_number,
            )?;
            let community_id = feature_string_property(
                properties.and_then(|properties| properties.community_id.as_ref()),
                "community_id",
                feature_number,
            )?;
            let community = *community_by_id.get(community_id).ok_or_else(|| {
                invalid(
                    GRIDS_FILE,
                    format!("grid {grid_id}: unknown community_id {community_id}"),
                )
            })?;
            let geometry = feature
                .geometry
                .ok_or_else(|| invalid(GRIDS_FILE, format!("grid {grid_id} has no geometry")))?;
            let polygon = geometry.into_polygon().map_err(|error| {
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
        // Row by row from one reused record, its fields borrowed: collected into rows of three
        // owned strings first, the 19,111 seeded devices made 57,333 small allocations (and
        // their fresh pages) at every start.
        let csv_problem = |error: csv::Error| invalid(DEVICES_FILE, error.to_string());
        let mut reader = csv::Reader::from_reader(devices_csv.as_bytes());
        let headers = reader.headers().map_err(csv_problem)?.clone();
        let mut record = csv::StringRecord::new();
        // A device a line (the header's line leaves room for a last line without a newline):
        // grown by doubling instead, the list was copied onto fresh pages over and over.
        let mut devices =
            Vec::with_capacity(memchr::memchr_iter(b'\n', devices_csv.as_bytes()).count());
        let mut row_number = 0;
        while reader.read_record(&mut record).map_err(csv_problem)? {
            row_number += 1;
            let row: DeviceRow<'_> = record.deserialize(Some(&headers)).map_err(csv_problem)?;
            let kind = DeviceKind::from_name(row.kind).ok_or_else(|| {
                invalid(
                    DEVICES_FILE,
                    format!("row {row_number}: unknown device kind {:?}", row.kind),
                )
            })?;
            let cell = *cell_by_grid_id.get(row.grid_id).ok_or_else(|| {
                invalid(
                    DEVICES_FILE,
                    format!(
                        "device {}: grid {} is not in {GRIDS_FILE}",
                        row.device_id, row.grid_id
                    ),
                )
            })?;
            devices.push(Device {
                device_id: row.device_id.to_string(),
                cell,
                event_types: kind.event_types(),
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
        let mut cell_by_grid_id: HashMap<u64, CellIndex> =
            HashMap::with_capacity_and_hasher(cells.len(), Default::default());
        let mut computed_community_cells: Vec<Vec<CellIndex>> = vec![Vec::new(); communities.len()];
        let mut cell_boxes_to_load = Vec::with_capacity(cells.len());
        let mut cell_representative_points = Vec::with_capacity(cells.len());
        for (index, cell) in (0..cell_count).zip(cells.iter()) {
            let cell_index = CellIndex(index);
            let Some(grid_key) = grid_id_key(&cell.grid_id) else {
                return Err(invalid(
                    GRIDS_FILE,
                    format!("grid id {:?} is not {GRID_ID_DIGITS} digits", cell.grid_id),
                ));
            };
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
            if cell_by_grid_id.insert(grid_key, cell_index).is_some() {
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

        // Sized before they fill: grown by doubling, the 19,111 seeded devices' lists and map
        // were reallocated onto fresh pages over and over at every start.
        let mut devices_per_cell = vec![0usize; cells.len()];
        for device in &devices {
            if let Some(count) = devices_per_cell.get_mut(device.cell.0 as usize) {
                *count += 1;
            }
        }
        let mut devices_by_cell: Vec<Vec<Device>> = devices_per_cell
            .into_iter()
            .map(Vec::with_capacity)
            .collect();
        let mut device_location_by_id: HashMap<u128, (CellIndex, usize)> =
            HashMap::with_capacity_and_hasher(devices.len(), Default::default());
        for device in devices {
            let Some(device_key) = device_id_key(&device.device_id) else {
                return Err(invalid(
                    DEVICES_FILE,
                    format!(
                        "device id {:?} is not {DEVICE_ID_DIGITS} digits",
                        device.device_id
                    ),
                ));
            };
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
            if device_location_by_id.insert(device_key, location).is_some() {
                return Err(invalid(
                    DEVICES_FILE,
                    format!("duplicate device id {}", device.device_id),
                ));
            }
            cell_devices.push(device);
        }

        let mut communities_by_district = vec![Vec::new(); districts.len()];
        for (community_position, district_position) in community_district.iter().enumerate() {
            if let Some(members) = communities_by_district.get_mut(*district_position) {
                members.push(CommunityIndex(community_position as u32));
            }
        }
        Ok(GridRegistry {
            districts,
            communities,
            community_district,
            communities_by_district,
            cells,
            cell_representative_points,
            devices_by_cell,
            cell_by_grid_id,
            device_location_by_id,
            community_by_id,
            cell_boxes: RTree::bulk_load(cell_boxes_to_load),
        })
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
