//! Tests of loading, resolution and the embedded seeds.

use std::sync::Arc;

use geo::{BoundingRect, Intersects};
use proptest::prelude::*;

use super::*;
use crate::proto::{Crs, EventType, IncidentEvent};

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
            event_types: DeviceKind::SmokeDetector.event_types(),
        },
        Device {
            device_id: "41061100011310000001".to_string(),
            cell: CellIndex(1),
            event_types: DeviceKind::PerimeterCamera.event_types(),
        },
    ];
    (districts, communities, cells, devices)
}

/// The registry of [`tiny_parts`] (also for other modules' tests that need a registry other
/// than the embedded one).
pub(crate) fn tiny_registry() -> GridRegistry {
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
fn ids_are_matched_only_as_the_exact_digit_strings_registered() {
    let registry = tiny_registry();
    let grid_id = registry.cells()[1].grid_id.clone();
    let device_id = "41061100011310000001";
    assert_eq!(registry.cell_by_grid_id(&grid_id), Some(CellIndex(1)));
    assert_eq!(registry.cell_by_device(device_id), Some(CellIndex(1)));
    // The same number spelled otherwise names no cell: ids are keyed by the number they spell,
    // which stands for the text only when the text is exactly the registered count of digits.
    for other_grid_spelling in [
        format!("0{grid_id}"),
        format!("+{}", &grid_id[1..]),
        format!(" {}", &grid_id[1..]),
        grid_id[1..].to_string(),
        format!("{}\u{FF11}", &grid_id[..13]),
        String::new(),
    ] {
        assert_eq!(
            registry.cell_by_grid_id(&other_grid_spelling),
            None,
            "{other_grid_spelling:?}"
        );
    }
    for other_device_spelling in [
        format!("0{device_id}"),
        device_id[1..].to_string(),
        format!("{}a", &device_id[..19]),
        "99999999999999999999999999999999999999999".to_string(),
    ] {
        assert_eq!(registry.cell_by_device(&other_device_spelling), None);
        assert!(registry.device(&other_device_spelling).is_none());
    }
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
    let communities_csv = "community_id,name,district_code,population,centroid_lon,centroid_lat\n\
                           410611001001,朝阳社区,410611,5000,114.3,35.74\n";
    let grids_geojson = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"grid_id":"41061100100101","community_id":"410611001001","grid_no":1},
         "geometry":{"type":"Polygon","coordinates":[[[114.3,35.74],[114.301,35.74],[114.301,35.741],[114.3,35.741],[114.3,35.74]]]}}]}"#;
    let good_devices = "device_id,grid_id,kind\n41061100011340000001,41061100100101,gas_sensor\n";
    let registry =
        GridRegistry::from_seed_texts(districts_csv, communities_csv, grids_geojson, good_devices);
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

    let unknown_kind = "device_id,grid_id,kind\n41061100011340000001,41061100100101,gas_sensor\n\
                        41061100011340000002,41061100100101,toaster\n";
    let result =
        GridRegistry::from_seed_texts(districts_csv, communities_csv, grids_geojson, unknown_kind);
    let Err(GridLoadError::Invalid { path, message }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(path, "devices.csv");
    assert!(
        message.contains("row 2: unknown device kind \"toaster\""),
        "{message}"
    );

    let missing_column = "device_id,grid_id,kind\n41061100011340000001,41061100100101\n";
    let result = GridRegistry::from_seed_texts(
        districts_csv,
        communities_csv,
        grids_geojson,
        missing_column,
    );
    assert!(
        matches!(&result, Err(GridLoadError::Invalid { path, .. }) if path == "devices.csv"),
        "{result:?}"
    );

    // A quoted field is read as its text (each row is borrowed from the reader's record).
    let quoted = "device_id,grid_id,kind\n\"41061100011340000001\",41061100100101,\"gas_sensor\"\n";
    let registry =
        GridRegistry::from_seed_texts(districts_csv, communities_csv, grids_geojson, quoted)
            .expect("quoted fields load");
    assert!(registry.device("41061100011340000001").is_some());
}

/// `grids.geojson` must be a `FeatureCollection` of `Feature`s: anything else is refused at
/// start-up, naming the file and what was found instead.
#[test]
fn text_loader_refuses_a_geojson_that_is_not_a_collection_of_features() {
    let districts_csv = "code,name_zh,name_en\n410611,淇滨区,Qibin\n";
    let communities_csv = "community_id,name,district_code,population,centroid_lon,centroid_lat\n\
                           410611001001,朝阳社区,410611,5000,114.3,35.74\n";
    let devices_csv = "device_id,grid_id,kind\n";
    let feature = r#"{"type":"Feature","properties":{"grid_id":"41061100100101","community_id":"410611001001"},
         "geometry":{"type":"Polygon","coordinates":[[[114.3,35.74],[114.301,35.74],[114.301,35.741],[114.3,35.741],[114.3,35.74]]]}}"#;
    let collection_of =
        |kind: &str, feature: &str| format!(r#"{{"type":"{kind}","features":[{feature}]}}"#);
    let load = |grids_geojson: &str| {
        GridRegistry::from_seed_texts(districts_csv, communities_csv, grids_geojson, devices_csv)
    };
    assert!(load(&collection_of("FeatureCollection", feature)).is_ok());
    let cases = [
        (
            collection_of("GeometryCollection", feature),
            "expected a FeatureCollection, found GeometryCollection",
        ),
        (
            collection_of(
                "FeatureCollection",
                &feature.replacen("\"Feature\"", "\"Polygon\"", 1),
            ),
            "feature 0 is a Polygon, not a Feature",
        ),
    ];
    for (grids_geojson, expected) in cases {
        match load(&grids_geojson) {
            Err(GridLoadError::Invalid { path, message }) => {
                assert_eq!(path, "grids.geojson");
                assert_eq!(message, expected);
            }
            other => panic!("{grids_geojson}: {other:?}"),
        }
    }
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

proptest! {
    /// A grid id read as two words of eight digits is the number its digits spell one by one,
    /// and any text that is not fourteen digits has none (mostly digits, so that near misses
    /// are tried).
    #[test]
    fn grid_ids_read_eight_digits_at_a_time_match_digit_by_digit(
        text in prop_oneof!["[0-9]{14}", "[0-9]{0,9}[^0-9]?[0-9]{0,9}", ".{0,20}"],
    ) {
        let by_digit = super::model::digit_string_value(&text, super::model::GRID_ID_DIGITS)
            .and_then(|value| u64::try_from(value).ok());
        prop_assert_eq!(super::model::grid_id_key(&text), by_digit);
    }
}
