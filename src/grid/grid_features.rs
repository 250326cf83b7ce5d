//! `grids.geojson` read as the one shape it holds: a GeoJSON `FeatureCollection` of `Polygon`
//! features, each with string `grid_id` and `community_id` properties.
//!
//! Read straight into these types rather than through the `geojson` crate, which builds a JSON
//! value for every coordinate and property before converting them: that was 78 M of the 100 M
//! instructions a replay spends before its first event (a 42 ms start on the development
//! machine, with one of its two cores idle). The coordinates are the same `f64`s (serde_json
//! parses a number the same way into a value or into an `f64`), and a polygon is built by
//! [`geo::Polygon::new`] from its rings as before, so the registry is the same.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Deserialize)]
pub(super) struct GridFeatureCollection<'text> {
    /// Must be `FeatureCollection`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'text, str>,
    /// The cells, in file order.
    #[serde(borrow)]
    pub features: Vec<GridFeature<'text>>,
}

/// One cell. Foreign members (`id`, `bbox`, …) are ignored, as GeoJSON allows.
#[derive(Deserialize)]
pub(super) struct GridFeature<'text> {
    /// Must be `Feature`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'text, str>,
    /// `null` or absent reads as no properties.
    #[serde(default, borrow)]
    pub properties: Option<GridProperties<'text>>,
    /// `null` or absent reads as no geometry.
    #[serde(default, borrow)]
    pub geometry: Option<GridGeometry<'text>>,
}

/// The properties the registry reads; others (`grid_no`, …) are ignored.
#[derive(Deserialize)]
pub(super) struct GridProperties<'text> {
    /// The cell's 14-digit id, when it is a string.
    #[serde(default, borrow)]
    pub grid_id: Option<StringOrOther<'text>>,
    /// Its community's 12-digit id, when it is a string.
    #[serde(default, borrow)]
    pub community_id: Option<StringOrOther<'text>>,
}

/// A property's value: a string, or anything else (which the loader reports as missing).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrOther<'text> {
    /// A string (borrowed when it has no escapes).
    Text(#[serde(borrow)] Cow<'text, str>),
    /// Any other JSON value.
    Other(IgnoredAny),
}

impl StringOrOther<'_> {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            StringOrOther::Text(text) => Some(text),
            StringOrOther::Other(_) => None,
        }
    }
}

/// A geometry: its type, and the coordinates of a polygon (rings of positions). A geometry
/// whose coordinates are not rings (a point, a multi-polygon) fails to read, with serde_json's
/// line and column; a collection (no `coordinates`) reads and is refused by its type.
#[derive(Deserialize)]
pub(super) struct GridGeometry<'text> {
    /// `Polygon` for every cell.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'text, str>,
    /// The rings, exterior first.
    #[serde(default)]
    pub coordinates: Option<Vec<Vec<Position>>>,
}

impl GridGeometry<'_> {
    /// The polygon, or what was found instead.
    pub fn into_polygon(self) -> Result<geo::Polygon<f64>, String> {
        if self.kind != "Polygon" {
            return Err(format!("expected a Polygon, found {}", self.kind));
        }
        let Some(rings) = self.coordinates else {
            return Err("a Polygon without coordinates".to_string());
        };
        let mut rings = rings.into_iter().map(|ring| {
            geo::LineString(
                ring.into_iter()
                    .map(|Position(x, y)| geo::Coord { x, y })
                    .collect(),
            )
        });
        let exterior = rings.next().unwrap_or_else(|| geo::LineString(Vec::new()));
        Ok(geo::Polygon::new(exterior, rings.collect()))
    }
}

/// A position: longitude and latitude; further members (an altitude) are ignored, and fewer
/// than two numbers fail to read.
pub(super) struct Position(f64, f64);

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PositionVisitor)
    }
}

struct PositionVisitor;

impl<'de> Visitor<'de> for PositionVisitor {
    type Value = Position;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a position of at least two numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Position, A::Error> {
        let Some(x) = seq.next_element::<f64>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let Some(y) = seq.next_element::<f64>()? else {
            return Err(de::Error::invalid_length(1, &self));
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Position(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polygon_of(geometry_json: &str) -> Result<geo::Polygon<f64>, String> {
        let geometry: GridGeometry<'_> =
            serde_json::from_str(geometry_json).map_err(|error| error.to_string())?;
        geometry.into_polygon()
    }

    #[test]
    fn a_polygon_reads_as_geojson_reads_it_with_altitudes_ignored_and_rings_closed() {
        let geometry = r#"{"coordinates":[[[114.1,35.9,80.0],[114.2,35.9],[114.2,36.0]],
            [[114.12,35.92],[114.13,35.92],[114.13,35.93]]],"type":"Polygon"}"#;
        let polygon = polygon_of(geometry).unwrap();
        let through_geojson: geojson::Geometry = geometry.parse().unwrap();
        let expected = geo::Polygon::<f64>::try_from(&through_geojson.value).unwrap();
        assert_eq!(polygon, expected);
        assert_eq!(polygon.exterior().0.len(), 4, "the ring is closed");
        assert_eq!(polygon.interiors().len(), 1);
    }

    #[test]
    fn the_seed_cells_read_as_the_geojson_crate_reads_them() {
        let text = include_str!("../../seeds/grids.geojson");
        let ours: GridFeatureCollection<'_> = serde_json::from_str(text).unwrap();
        let theirs: geojson::FeatureCollection = text.parse().unwrap();
        assert_eq!(ours.features.len(), theirs.features.len());
        assert!(ours.features.len() > 1000);
        for (our_feature, their_feature) in ours.features.into_iter().zip(&theirs.features) {
            let their_property = |name: &str| {
                their_feature
                    .properties
                    .as_ref()
                    .and_then(|properties| properties.get(name))
                    .and_then(|value| value.as_str())
            };
            let properties = our_feature.properties.as_ref().unwrap();
            assert_eq!(
                properties.grid_id.as_ref().and_then(StringOrOther::as_str),
                their_property("grid_id")
            );
            assert_eq!(
                properties
                    .community_id
                    .as_ref()
                    .and_then(StringOrOther::as_str),
                their_property("community_id")
            );
            let their_polygon =
                geo::Polygon::<f64>::try_from(&their_feature.geometry.as_ref().unwrap().value)
                    .unwrap();
            assert_eq!(
                our_feature.geometry.unwrap().into_polygon().unwrap(),
                their_polygon
            );
        }
    }

    #[test]
    fn other_geometries_and_short_positions_are_refused_with_a_reason() {
        for (geometry, reason) in [
            (
                r#"{"type":"Point","coordinates":[114.1,35.9]}"#,
                "invalid type",
            ),
            (
                r#"{"type":"LineString","coordinates":[[114.1,35.9],[114.2,35.9]]}"#,
                "invalid type",
            ),
            (
                r#"{"type":"GeometryCollection","geometries":[]}"#,
                "found GeometryCollection",
            ),
            (r#"{"type":"Polygon"}"#, "without coordinates"),
            (
                r#"{"type":"Polygon","coordinates":[[[114.1]]]}"#,
                "at least two numbers",
            ),
            (
                r#"{"type":"MultiPolygon","coordinates":[[[[114.1,35.9]]]]}"#,
                "invalid type",
            ),
        ] {
            let error = polygon_of(geometry).unwrap_err();
            assert!(error.contains(reason), "{geometry}: {error}");
        }
    }

    #[test]
    fn a_property_that_is_not_a_string_reads_as_no_string() {
        let properties: GridProperties<'_> = serde_json::from_str(
            r#"{"grid_id":41060200100101,"community_id":"410602001001","grid_no":1}"#,
        )
        .unwrap();
        assert_eq!(
            properties.grid_id.as_ref().and_then(StringOrOther::as_str),
            None
        );
        assert_eq!(
            properties
                .community_id
                .as_ref()
                .and_then(StringOrOther::as_str),
            Some("410602001001")
        );
        let escaped: GridProperties<'_> =
            serde_json::from_str(r#"{"grid_id":"4106020010010\u0031"}"#).unwrap();
        assert_eq!(
            escaped.grid_id.as_ref().and_then(StringOrOther::as_str),
            Some("41060200100101")
        );
    }
}
