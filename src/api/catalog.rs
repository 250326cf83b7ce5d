//! What the API's filters accept, computed once from the registry and the configured views,
//! so that a bad value is refused with the list of good ones (issue 10, "Bad input") instead
//! of quietly matching nothing; and the cells' GeoJSON geometry, serialized once (1,911
//! polygons do not change while the service runs).

use std::collections::BTreeSet;

use serde::Serialize;
use utoipa::ToSchema;

use super::problem::{Allowed, ApiError};
use crate::event::ALL_EVENT_TYPES;
use crate::grid::GridRegistry;

/// Alert statuses a client may filter by (the proto enum names).
pub const ALERT_STATUSES: [&str; 2] = ["FIRING", "RESOLVED"];
/// Alert severities: 1 (most urgent) to 4.
pub const SEVERITY_RANGE: (u8, u8) = (1, 4);
/// Decimal places of GeoJSON coordinates: 6 is about 0.1 m, far below a cell's size.
const COORDINATE_DECIMALS: i32 = 6;

/// The accepted values of the API's filters.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// View names, e.g. `["15m", "1h", "24h"]` (the first is the default view).
    pub views: Vec<String>,
    /// Event type names (`FIRE_SMOKE`, ...).
    pub event_types: Vec<&'static str>,
    /// District ids (6-digit codes), sorted.
    pub district_ids: Vec<String>,
    /// Community ids (12-digit), sorted.
    pub community_ids: BTreeSet<String>,
    /// Each cell's GeoJSON geometry, by cell index.
    pub cell_geometries: Vec<PolygonGeometry>,
}

impl Catalog {
    /// The catalog of `registry` and `views`.
    pub fn new(registry: &GridRegistry, views: Vec<String>) -> Catalog {
        let mut district_ids: Vec<String> = registry
            .districts()
            .iter()
            .map(|district| district.code.clone())
            .collect();
        district_ids.sort();
        Catalog {
            views,
            event_types: ALL_EVENT_TYPES
                .iter()
                .map(|event_type| event_type.as_str_name())
                .collect(),
            district_ids,
            community_ids: registry
                .communities()
                .iter()
                .map(|community| community.id.clone())
                .collect(),
            cell_geometries: registry
                .cells()
                .iter()
                .map(|cell| polygon_geometry(&cell.polygon))
                .collect(),
        }
    }

    /// The index of view `name` (`None`: the first, default view).
    pub fn view_index(&self, name: Option<&str>) -> Result<usize, ApiError> {
        let Some(name) = name else {
            return Ok(0);
        };
        self.views
            .iter()
            .position(|view| view == name)
            .ok_or_else(|| {
                ApiError::bad_parameter("view", "unknown view", Allowed::values(self.views.clone()))
            })
    }

    /// `name` when it is an event type name.
    pub fn event_type<'a>(&self, name: &'a str) -> Result<&'a str, ApiError> {
        if self.event_types.contains(&name) {
            return Ok(name);
        }
        Err(ApiError::bad_parameter(
            "event_type",
            "unknown event type",
            Allowed::values(self.event_types.iter().copied()),
        ))
    }

    /// `id` when it is a district id.
    pub fn district<'a>(&self, id: &'a str) -> Result<&'a str, ApiError> {
        if self.district_ids.iter().any(|known| known == id) {
            return Ok(id);
        }
        Err(ApiError::bad_parameter(
            "district",
            "unknown district id",
            Allowed::values(self.district_ids.clone()),
        ))
    }

    /// `id` when it is a community id.
    pub fn community<'a>(&self, id: &'a str) -> Result<&'a str, ApiError> {
        if self.community_ids.contains(id) {
            return Ok(id);
        }
        Err(ApiError::bad_parameter(
            "community",
            "unknown community id",
            Allowed::values(self.community_ids.iter().cloned()),
        ))
    }
}

/// `severity` when it is 1–4.
pub fn severity(severity: u8) -> Result<u8, ApiError> {
    let (minimum, maximum) = SEVERITY_RANGE;
    if (minimum..=maximum).contains(&severity) {
        return Ok(severity);
    }
    Err(ApiError::bad_parameter(
        "severity",
        "severity is 1 (most urgent) to 4",
        severity_allowed(),
    ))
}

/// What `severity` accepts.
pub fn severity_allowed() -> Allowed {
    Allowed::Range {
        minimum: i64::from(SEVERITY_RANGE.0),
        maximum: i64::from(SEVERITY_RANGE.1),
    }
}

/// `status` when it is an alert status name.
pub fn alert_status(status: &str) -> Result<&str, ApiError> {
    if ALERT_STATUSES.contains(&status) {
        return Ok(status);
    }
    Err(ApiError::bad_parameter(
        "status",
        "unknown alert status",
        Allowed::values(ALERT_STATUSES),
    ))
}

fn rounded(value: f64) -> f64 {
    let scale = 10f64.powi(COORDINATE_DECIMALS);
    (value * scale).round() / scale
}

fn ring_coordinates(ring: &geo::LineString<f64>) -> Vec<[f64; 2]> {
    ring.coords()
        .map(|point| [rounded(point.x), rounded(point.y)])
        .collect()
}

/// A GeoJSON `Polygon` geometry (RFC 7946): the exterior ring, then holes; each ring closed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PolygonGeometry {
    /// Always `Polygon`.
    #[serde(rename = "type")]
    #[schema(example = "Polygon")]
    pub geometry_type: String,
    /// Rings of WGS-84 `[longitude, latitude]` positions.
    pub coordinates: Vec<Vec<[f64; 2]>>,
}

/// The GeoJSON geometry of `polygon`.
fn polygon_geometry(polygon: &geo::Polygon<f64>) -> PolygonGeometry {
    let mut rings = vec![ring_coordinates(polygon.exterior())];
    rings.extend(polygon.interiors().iter().map(ring_coordinates));
    PolygonGeometry {
        geometry_type: "Polygon".to_string(),
        coordinates: rings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(
            &GridRegistry::embedded(),
            vec!["15m".into(), "1h".into(), "24h".into()],
        )
    }

    use crate::api::problem::bad_parameter_of as allowed_of;

    #[test]
    fn views_default_to_the_first_and_unknown_ones_name_the_known() {
        let catalog = catalog();
        assert_eq!(catalog.view_index(None).unwrap(), 0);
        assert_eq!(catalog.view_index(Some("24h")).unwrap(), 2);
        let (parameter, allowed) = allowed_of(catalog.view_index(Some("7m")).unwrap_err());
        assert_eq!(parameter, "view");
        assert_eq!(allowed, Allowed::values(["15m", "1h", "24h"]));
    }

    #[test]
    fn filters_accept_registry_values_and_name_them_otherwise() {
        let catalog = catalog();
        assert_eq!(catalog.district_ids.len(), 5);
        assert_eq!(catalog.community_ids.len(), 162);
        assert!(catalog.district(&catalog.district_ids[0].clone()).is_ok());
        let (parameter, allowed) = allowed_of(catalog.district("999999").unwrap_err());
        assert_eq!(parameter, "district");
        assert_eq!(allowed, Allowed::values(catalog.district_ids.clone()));
        assert!(catalog.community("000000000000").is_err());
        assert!(catalog.event_type("FIRE_SMOKE").is_ok());
        assert!(!catalog.event_types.contains(&"EVENT_TYPE_UNSPECIFIED"));
        let (parameter, _) = allowed_of(catalog.event_type("fire").unwrap_err());
        assert_eq!(parameter, "event_type");
    }

    #[test]
    fn severities_are_1_to_4_and_statuses_the_proto_names() {
        assert!(severity(1).is_ok() && severity(4).is_ok());
        assert_eq!(allowed_of(severity(0).unwrap_err()).1, severity_allowed());
        assert!(severity(5).is_err());
        assert!(alert_status("FIRING").is_ok());
        assert_eq!(allowed_of(alert_status("firing").unwrap_err()).0, "status");
    }

    #[test]
    fn every_cell_has_a_closed_polygon_geometry() {
        let catalog = catalog();
        assert_eq!(catalog.cell_geometries.len(), 1911);
        for geometry in &catalog.cell_geometries {
            let value = serde_json::to_value(geometry).unwrap();
            assert_eq!(value["type"], "Polygon");
            let ring = value["coordinates"][0].as_array().unwrap();
            assert!(ring.len() >= 4);
            assert_eq!(ring.first(), ring.last(), "GeoJSON rings are closed");
        }
    }
}
