//! Coordinate normalization: GCJ-02 and BD-09 to WGS-84.
//!
//! Chinese map providers publish coordinates in GCJ-02 (AMap, Tencent; an obfuscated frame
//! derived from WGS-84) or BD-09 (Baidu; a further offset applied to GCJ-02). gridwatch keeps
//! its grid polygons in WGS-84 and normalizes event coordinates with [`to_wgs84`] at ingest.
//!
//! No maintained crate on crates.io provides these transforms (`prcoords` and `eviltransform`
//! are not published there; `coord_transforms` covers geodetic/ECEF frames only), so this
//! module implements the widely published algorithm (Krasovsky ellipsoid constants, the
//! polynomial-plus-sine offset of GCJ-02 and Baidu's polar offset of BD-09). The inverses are
//! computed by fixed-point iteration of the forward transform, which converges to well under
//! a centimetre in a few steps because the offsets change slowly with position.
//!
//! All functions take and return `(longitude, latitude)` in degrees.

use crate::proto::Crs;

/// Semi-major axis of the Krasovsky 1940 ellipsoid used by the GCJ-02 algorithm, in metres.
const KRASOVSKY_SEMI_MAJOR_AXIS_METRES: f64 = 6_378_245.0;

/// First eccentricity squared of the Krasovsky 1940 ellipsoid.
const KRASOVSKY_ECCENTRICITY_SQUARED: f64 = 0.006_693_421_622_965_943;

/// The angular factor of Baidu's BD-09 offset (π × 3000 / 180).
const BD09_ANGULAR_FACTOR: f64 = std::f64::consts::PI * 3000.0 / 180.0;

/// Maximum number of fixed-point iterations used by the inverse transforms.
const MAX_INVERSE_ITERATIONS: usize = 30;

/// Stop iterating once the correction is below this many degrees (≈ 0.1 mm).
const INVERSE_TOLERANCE_DEGREES: f64 = 1e-9;

/// Normalizes a point given in `crs` to WGS-84. `CRS_UNSPECIFIED` is taken to mean WGS-84.
pub fn to_wgs84(lon: f64, lat: f64, crs: Crs) -> (f64, f64) {
    match crs {
        Crs::Unspecified | Crs::Wgs84 => (lon, lat),
        Crs::Gcj02 => gcj02_to_wgs84(lon, lat),
        Crs::Bd09 => bd09_to_wgs84(lon, lat),
    }
}

/// Converts a WGS-84 point to `crs` (the inverse of [`to_wgs84`]); used to produce test and
/// simulator inputs in the frames Chinese map providers publish.
pub fn from_wgs84(lon: f64, lat: f64, crs: Crs) -> (f64, f64) {
    match crs {
        Crs::Unspecified | Crs::Wgs84 => (lon, lat),
        Crs::Gcj02 => wgs84_to_gcj02(lon, lat),
        Crs::Bd09 => wgs84_to_bd09(lon, lat),
    }
}

/// Whether a point lies outside the rectangle in which the GCJ-02 offset is applied. Outside
/// it GCJ-02 coordinates equal WGS-84 coordinates.
pub fn is_outside_china(lon: f64, lat: f64) -> bool {
    !((72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat))
}

/// The GCJ-02 latitude offset polynomial, in metres-like units before scaling.
fn gcj02_latitude_offset(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut offset = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    offset += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    offset += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    offset += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    offset
}

/// The GCJ-02 longitude offset polynomial, in metres-like units before scaling.
fn gcj02_longitude_offset(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut offset = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    offset += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    offset += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    offset += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    offset
}

/// The GCJ-02 offset (Δlon, Δlat) in degrees to add to a WGS-84 point inside China.
fn gcj02_offset_degrees(lon: f64, lat: f64) -> (f64, f64) {
    use std::f64::consts::PI;
    let raw_latitude_offset = gcj02_latitude_offset(lon - 105.0, lat - 35.0);
    let raw_longitude_offset = gcj02_longitude_offset(lon - 105.0, lat - 35.0);
    let latitude_radians = lat / 180.0 * PI;
    let sin_latitude = latitude_radians.sin();
    let magic = 1.0 - KRASOVSKY_ECCENTRICITY_SQUARED * sin_latitude * sin_latitude;
    let sqrt_magic = magic.sqrt();
    let latitude_offset_degrees = (raw_latitude_offset * 180.0)
        / ((KRASOVSKY_SEMI_MAJOR_AXIS_METRES * (1.0 - KRASOVSKY_ECCENTRICITY_SQUARED))
            / (magic * sqrt_magic)
            * PI);
    let longitude_offset_degrees = (raw_longitude_offset * 180.0)
        / (KRASOVSKY_SEMI_MAJOR_AXIS_METRES / sqrt_magic * latitude_radians.cos() * PI);
    (longitude_offset_degrees, latitude_offset_degrees)
}

/// WGS-84 → GCJ-02. Points outside China are returned unchanged.
pub fn wgs84_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    if is_outside_china(lon, lat) {
        return (lon, lat);
    }
    let (longitude_offset, latitude_offset) = gcj02_offset_degrees(lon, lat);
    (lon + longitude_offset, lat + latitude_offset)
}

/// GCJ-02 → WGS-84, by fixed-point iteration of [`wgs84_to_gcj02`] (error far below 1 m).
/// Points outside China are returned unchanged.
pub fn gcj02_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    invert_by_iteration(lon, lat, lon, lat, wgs84_to_gcj02)
}

/// GCJ-02 → BD-09 (Baidu).
pub fn gcj02_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    let radius = (lon * lon + lat * lat).sqrt() + 0.000_02 * (lat * BD09_ANGULAR_FACTOR).sin();
    let angle = lat.atan2(lon) + 0.000_003 * (lon * BD09_ANGULAR_FACTOR).cos();
    (radius * angle.cos() + 0.0065, radius * angle.sin() + 0.006)
}

/// BD-09 → GCJ-02: Baidu's published approximate inverse, refined by fixed-point iteration
/// of [`gcj02_to_bd09`] so that the round trip is exact to well under a centimetre.
pub fn bd09_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    let shifted_lon = lon - 0.0065;
    let shifted_lat = lat - 0.006;
    let radius = (shifted_lon * shifted_lon + shifted_lat * shifted_lat).sqrt()
        - 0.000_02 * (shifted_lat * BD09_ANGULAR_FACTOR).sin();
    let angle =
        shifted_lat.atan2(shifted_lon) - 0.000_003 * (shifted_lon * BD09_ANGULAR_FACTOR).cos();
    let approximate_lon = radius * angle.cos();
    let approximate_lat = radius * angle.sin();
    invert_by_iteration(lon, lat, approximate_lon, approximate_lat, gcj02_to_bd09)
}

/// WGS-84 → BD-09 (via GCJ-02).
pub fn wgs84_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    let (gcj_lon, gcj_lat) = wgs84_to_gcj02(lon, lat);
    gcj02_to_bd09(gcj_lon, gcj_lat)
}

/// BD-09 → WGS-84 (via GCJ-02).
pub fn bd09_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    let (gcj_lon, gcj_lat) = bd09_to_gcj02(lon, lat);
    gcj02_to_wgs84(gcj_lon, gcj_lat)
}

/// Finds `source` with `forward(source) ≈ (target_lon, target_lat)`, starting from a guess,
/// by repeatedly subtracting the forward error. Converges because `forward` is a small,
/// slowly varying offset of the identity. Non-finite inputs are returned as they came.
fn invert_by_iteration(
    target_lon: f64,
    target_lat: f64,
    initial_lon: f64,
    initial_lat: f64,
    forward: fn(f64, f64) -> (f64, f64),
) -> (f64, f64) {
    if !(target_lon.is_finite() && target_lat.is_finite()) {
        return (target_lon, target_lat);
    }
    let mut candidate_lon = initial_lon;
    let mut candidate_lat = initial_lat;
    for _ in 0..MAX_INVERSE_ITERATIONS {
        let (forward_lon, forward_lat) = forward(candidate_lon, candidate_lat);
        let error_lon = forward_lon - target_lon;
        let error_lat = forward_lat - target_lat;
        candidate_lon -= error_lon;
        candidate_lat -= error_lat;
        if error_lon.abs() < INVERSE_TOLERANCE_DEGREES
            && error_lat.abs() < INVERSE_TOLERANCE_DEGREES
        {
            break;
        }
    }
    (candidate_lon, candidate_lat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Approximate ground distance in metres between two nearby points (equirectangular).
    fn distance_metres(a: (f64, f64), b: (f64, f64)) -> f64 {
        let mean_latitude = ((a.1 + b.1) / 2.0).to_radians();
        let dx = (a.0 - b.0).to_radians() * mean_latitude.cos() * 6_371_000.0;
        let dy = (a.1 - b.1).to_radians() * 6_371_000.0;
        (dx * dx + dy * dy).sqrt()
    }

    #[test]
    fn wgs84_to_gcj02_matches_published_reference_point() {
        // Reference from the widely used coordtransform library: WGS-84 (116.404, 39.915).
        let (lon, lat) = wgs84_to_gcj02(116.404, 39.915);
        assert!((lon - 116.410_244_499_169_38).abs() < 1e-9, "lon {lon}");
        assert!((lat - 39.916_404_281_501_64).abs() < 1e-9, "lat {lat}");
    }

    #[test]
    fn gcj02_to_bd09_matches_published_reference_point() {
        // Reference from the coordtransform library: GCJ-02 (116.404, 39.915).
        let (lon, lat) = gcj02_to_bd09(116.404, 39.915);
        assert!((lon - 116.410_369_493_710_29).abs() < 1e-9, "lon {lon}");
        assert!((lat - 39.921_336_993_510_21).abs() < 1e-9, "lat {lat}");
    }

    #[test]
    fn gcj02_offset_in_hebi_is_a_few_hundred_metres() {
        let wgs = (114.30, 35.74);
        let gcj = wgs84_to_gcj02(wgs.0, wgs.1);
        let offset = distance_metres(wgs, gcj);
        assert!((100.0..1_000.0).contains(&offset), "offset {offset} m");
    }

    #[test]
    fn points_outside_china_are_unchanged_by_gcj02() {
        for point in [(2.35, 48.85), (-74.0, 40.7), (151.2, -33.9), (0.0, 0.0)] {
            assert_eq!(wgs84_to_gcj02(point.0, point.1), point);
            assert_eq!(gcj02_to_wgs84(point.0, point.1), point);
        }
    }

    #[test]
    fn wgs84_is_the_identity_and_unspecified_means_wgs84() {
        assert_eq!(to_wgs84(114.3, 35.7, Crs::Wgs84), (114.3, 35.7));
        assert_eq!(to_wgs84(114.3, 35.7, Crs::Unspecified), (114.3, 35.7));
    }

    #[test]
    fn non_finite_input_does_not_loop_or_panic() {
        let (lon, lat) = gcj02_to_wgs84(f64::NAN, 35.0);
        assert!(lon.is_nan());
        assert_eq!(lat, 35.0);
        let (bd_lon, _) = bd09_to_gcj02(f64::INFINITY, 35.0);
        assert!(!bd_lon.is_finite());
    }

    proptest! {
        #[test]
        fn wgs_gcj_wgs_round_trip_within_half_a_metre_around_hebi(
            lon in 113.9f64..114.8, lat in 35.4f64..36.2
        ) {
            let (gcj_lon, gcj_lat) = wgs84_to_gcj02(lon, lat);
            let back = gcj02_to_wgs84(gcj_lon, gcj_lat);
            prop_assert!(distance_metres((lon, lat), back) < 0.5);
        }

        #[test]
        fn wgs_bd_wgs_round_trip_within_half_a_metre_around_hebi(
            lon in 113.9f64..114.8, lat in 35.4f64..36.2
        ) {
            let (bd_lon, bd_lat) = wgs84_to_bd09(lon, lat);
            prop_assert!(distance_metres((lon, lat), (bd_lon, bd_lat)) > 100.0);
            let back = to_wgs84(bd_lon, bd_lat, Crs::Bd09);
            prop_assert!(distance_metres((lon, lat), back) < 0.5);
        }

        #[test]
        fn from_wgs84_then_to_wgs84_is_the_identity_across_china(
            lon in 73.0f64..135.0, lat in 4.0f64..53.0, crs_number in 0i32..4
        ) {
            let crs = Crs::try_from(crs_number).unwrap_or(Crs::Unspecified);
            let (converted_lon, converted_lat) = from_wgs84(lon, lat, crs);
            let back = to_wgs84(converted_lon, converted_lat, crs);
            prop_assert!(distance_metres((lon, lat), back) < 0.01);
        }
    }
}
