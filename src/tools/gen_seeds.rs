//! The generator of the `seeds/` reference data: districts, communities, grid cells, devices
//! and the fraud baseline.
//!
//! The data is synthetic but follows the facts of the source document and the standards
//! around it (162 communities, Hebi's GB/T 2260 division codes, 12-digit community codes,
//! 14-digit grid ids, 20-digit GB/T 28181 device ids); `seeds/README.md` says which is which.
//! Generation is deterministic: one ChaCha8 stream with a fixed seed, every collection written
//! in a fixed order, and every number formatted explicitly. A test regenerates the files and
//! checks that they are byte-identical to the committed ones.

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use crate::grid::DeviceKind;

/// Seed of the generator's random stream. Changing it changes every seed file.
const GENERATOR_SEED: u64 = 0x4865_6269_2024_0162;

/// Metres per degree of latitude (and of longitude at the equator), spherical approximation.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// Minimum gap kept between the bounding boxes of two communities, in metres.
const COMMUNITY_GAP_METRES: f64 = 80.0;

/// Attempts at placing one community before the generator gives up.
const MAX_PLACEMENT_ATTEMPTS: usize = 200_000;

/// The baseline year of `fraud_baseline.csv`.
const FRAUD_BASELINE_YEAR: u32 = 2023;

/// Names of the files the generator writes, in the order it writes them.
pub const SEED_FILE_NAMES: [&str; 5] = [
    "districts.csv",
    "communities.csv",
    "grids.geojson",
    "devices.csv",
    "fraud_baseline.csv",
];

/// Why the seed files could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SeedsError {
    /// The output directory or a file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file's content could not be serialized.
    #[error("cannot serialize {file}: {message}")]
    Serialize {
        /// The seed file being built.
        file: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A community could not be placed without overlapping the others.
    #[error("cannot place community {community_id} without overlap after {attempts} attempts")]
    Placement {
        /// The community being placed.
        community_id: String,
        /// How many positions were tried.
        attempts: usize,
    },
    /// A Poisson rate was not a positive finite number.
    #[error("invalid Poisson rate {rate} for community {community_id}")]
    InvalidRate {
        /// The community being generated.
        community_id: String,
        /// The offending rate.
        rate: f64,
    },
}

/// How one county-level division's communities are generated.
struct DistrictPlan {
    /// GB/T 2260 code.
    code: &'static str,
    /// Chinese name.
    name_zh: &'static str,
    /// Pinyin name.
    name_en: &'static str,
    /// Number of smart-security communities in the division.
    community_count: usize,
    /// Approximate centre of the division's built-up area (WGS-84 lon, lat).
    centre: (f64, f64),
    /// Half-widths (degrees of lon, lat) of the box in which community centroids are drawn.
    spread: (f64, f64),
    /// Whether the division is a county (towns coded 1xx) rather than a district (streets 0xx).
    is_county: bool,
}

/// The five county-level divisions of Hebi, in code order; 60 + 35 + 17 + 28 + 22 = 162.
const DISTRICT_PLANS: [DistrictPlan; 5] = [
    DistrictPlan {
        code: "410602",
        name_zh: "鹤山区",
        name_en: "Heshan",
        community_count: 17,
        centre: (114.16, 35.95),
        spread: (0.05, 0.025),
        is_county: false,
    },
    DistrictPlan {
        code: "410603",
        name_zh: "山城区",
        name_en: "Shancheng",
        community_count: 35,
        centre: (114.18, 35.90),
        spread: (0.06, 0.03),
        is_county: false,
    },
    DistrictPlan {
        code: "410611",
        name_zh: "淇滨区",
        name_en: "Qibin",
        community_count: 60,
        centre: (114.30, 35.74),
        spread: (0.07, 0.05),
        is_county: false,
    },
    DistrictPlan {
        code: "410621",
        name_zh: "浚县",
        name_en: "Xun",
        community_count: 28,
        centre: (114.55, 35.67),
        spread: (0.06, 0.045),
        is_county: true,
    },
    DistrictPlan {
        code: "410622",
        name_zh: "淇县",
        name_en: "Qi",
        community_count: 22,
        centre: (114.20, 35.61),
        spread: (0.05, 0.04),
        is_county: true,
    },
];

/// Name roots for synthetic community names ("{root}社区", "{root}东社区", ...).
const COMMUNITY_NAME_ROOTS: [&str; 60] = [
    "朝阳", "建设", "解放", "人民", "和平", "幸福", "新华", "文化", "光明", "胜利", "长江", "黄河",
    "华夏", "振兴", "团结", "红旗", "东风", "春晓", "阳光", "金山", "银河", "翠竹", "兴隆", "泰和",
    "福田", "康乐", "安居", "长青", "绿园", "桃园", "梨园", "杏花", "牡丹", "紫荆", "玉兰", "海棠",
    "丹桂", "松林", "柳湖", "湖滨", "滨河", "河畔", "鹤鸣", "鹤翔", "云梦", "九州", "嘉禾", "丰收",
    "育才", "友谊", "兴业", "青年", "工人", "花园", "锦绣", "富康", "和谐", "龙泉", "金鹤", "裕华",
];

/// Modifiers combined with the roots to make more unique names.
const COMMUNITY_NAME_MODIFIERS: [&str; 5] = ["", "东", "西", "南", "北"];

/// GB/T 28181 industry code of community-access devices (社会治安社区接入).
const GBT28181_INDUSTRY_CODE: &str = "01";

/// GB/T 28181 network identifier (0: monitoring and alarm private network).
const GBT28181_NETWORK_CODE: &str = "0";

/// A row of `districts.csv`.
#[derive(Serialize)]
struct DistrictRecord {
    /// 6-digit division code.
    code: &'static str,
    /// Chinese name.
    name_zh: &'static str,
    /// Pinyin name.
    name_en: &'static str,
}

/// A row of `communities.csv`.
#[derive(Serialize)]
struct CommunityRecord {
    /// 12-digit community code.
    community_id: String,
    /// Synthetic Chinese name.
    name: String,
    /// 6-digit division code.
    district_code: &'static str,
    /// Resident population.
    population: u32,
    /// Centroid longitude (WGS-84), formatted with 6 decimals.
    centroid_lon: String,
    /// Centroid latitude (WGS-84), formatted with 6 decimals.
    centroid_lat: String,
}

/// A row of `devices.csv`.
#[derive(Serialize)]
struct DeviceRecord {
    /// 20-digit GB/T 28181 style id.
    device_id: String,
    /// 14-digit grid id of the cell it is installed in.
    grid_id: String,
    /// Device kind (snake_case).
    kind: &'static str,
}

/// A row of `fraud_baseline.csv`.
#[derive(Serialize)]
struct FraudBaselineRecord {
    /// 12-digit community code.
    community_id: String,
    /// Baseline year.
    year: u32,
    /// Month 1–12.
    month: u32,
    /// Anti-fraud warnings pushed to the community that month.
    fraud_warnings: u64,
    /// Fraud reports received that month.
    fraud_reported: u64,
    /// Fraud cases filed that month.
    fraud_cases_filed: u64,
}

/// One GeoJSON feature of `grids.geojson`; a struct (not a map) so that the key order is
/// fixed whatever serde_json features are enabled.
#[derive(Serialize)]
struct GridFeature {
    /// Always "Feature".
    #[serde(rename = "type")]
    feature_type: &'static str,
    /// The cell's identifiers.
    properties: GridProperties,
    /// The cell's rectangle.
    geometry: PolygonGeometry,
}

/// Properties of a grid feature.
#[derive(Serialize)]
struct GridProperties {
    /// 14-digit grid id.
    grid_id: String,
    /// 12-digit community code.
    community_id: String,
    /// Grid number within the community, from 1.
    grid_no: u32,
}

/// A GeoJSON Polygon geometry.
#[derive(Serialize)]
struct PolygonGeometry {
    /// Always "Polygon".
    #[serde(rename = "type")]
    geometry_type: &'static str,
    /// One closed, counter-clockwise exterior ring of [lon, lat] positions.
    coordinates: Vec<Vec<[f64; 2]>>,
}

/// Axis-aligned box in degrees, used to keep communities apart.
#[derive(Clone, Copy)]
struct DegreeBox {
    /// West edge.
    min_lon: f64,
    /// South edge.
    min_lat: f64,
    /// East edge.
    max_lon: f64,
    /// North edge.
    max_lat: f64,
}

impl DegreeBox {
    /// Whether two boxes overlap (touching counts as overlapping).
    fn overlaps(&self, other: &DegreeBox) -> bool {
        self.min_lon <= other.max_lon
            && other.min_lon <= self.max_lon
            && self.min_lat <= other.max_lat
            && other.min_lat <= self.max_lat
    }
}

/// Rounds to a fixed number of decimals so that the written text and the parsed value agree.
fn round_to_decimals(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Degrees of longitude per metre at a latitude.
fn longitude_degrees_per_metre(latitude: f64) -> f64 {
    1.0 / (METRES_PER_DEGREE * latitude.to_radians().cos())
}

/// Serializes CSV records with a header line and `\n` line endings.
fn write_csv<Record: Serialize>(
    file: &'static str,
    records: &[Record],
) -> Result<String, SeedsError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for record in records {
        writer
            .serialize(record)
            .map_err(|error| SeedsError::Serialize {
                file,
                message: error.to_string(),
            })?;
    }
    let bytes = writer.into_inner().map_err(|error| SeedsError::Serialize {
        file,
        message: error.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|error| SeedsError::Serialize {
        file,
        message: error.to_string(),
    })
}

/// A Poisson draw; the rate must be positive and finite.
fn draw_poisson(random: &mut ChaCha8Rng, rate: f64, community_id: &str) -> Result<u64, SeedsError> {
    let distribution = Poisson::new(rate).map_err(|_| SeedsError::InvalidRate {
        community_id: community_id.to_string(),
        rate,
    })?;
    let draw: f64 = distribution.sample(random);
    // A Poisson draw is a non-negative whole number; the cast cannot lose information for
    // the small rates used here.
    Ok(draw as u64)
}

/// Builds the content of every seed file, in [`SEED_FILE_NAMES`] order.
pub fn seed_file_contents() -> Result<Vec<(&'static str, String)>, SeedsError> {
    let mut random = ChaCha8Rng::seed_from_u64(GENERATOR_SEED);

    let district_records: Vec<DistrictRecord> = DISTRICT_PLANS
        .iter()
        .map(|plan| DistrictRecord {
            code: plan.code,
            name_zh: plan.name_zh,
            name_en: plan.name_en,
        })
        .collect();

    let mut name_pool: Vec<String> = COMMUNITY_NAME_MODIFIERS
        .iter()
        .flat_map(|modifier| {
            COMMUNITY_NAME_ROOTS
                .iter()
                .map(move |root| format!("{root}{modifier}社区"))
        })
        .collect();
    name_pool.shuffle(&mut random);
    let mut names = name_pool.into_iter();

    let mut community_records = Vec::new();
    let mut grid_features = Vec::new();
    let mut device_records = Vec::new();
    let mut fraud_records = Vec::new();
    let mut placed_boxes: Vec<DegreeBox> = Vec::new();
    let mut device_serial_by_prefix: BTreeMap<String, u32> = BTreeMap::new();

    for plan in &DISTRICT_PLANS {
        let mut street_number: u32 = 1;
        let mut community_number_in_street: u32 = 0;
        let mut communities_left_in_street: u32 = random.random_range(6..=12);
        for _ in 0..plan.community_count {
            if communities_left_in_street == 0 {
                street_number += 1;
                community_number_in_street = 0;
                communities_left_in_street = random.random_range(6..=12);
            }
            communities_left_in_street -= 1;
            community_number_in_street += 1;
            let street_code = if plan.is_county {
                99 + street_number
            } else {
                street_number
            };
            let community_id = format!(
                "{}{street_code:03}{community_number_in_street:03}",
                plan.code
            );
            let name = names.next().ok_or_else(|| SeedsError::Serialize {
                file: "communities.csv",
                message: "ran out of synthetic community names".to_string(),
            })?;
            let population: u32 = random.random_range(3_000..=15_000);

            // Layout: a block of cells in rows of `column_count`, filled row by row from the
            // north-west corner.
            let cell_count: u32 = random.random_range(8..=15);
            let cell_width_metres: f64 = f64::from(random.random_range(150u32..=250));
            let cell_height_metres: f64 = f64::from(random.random_range(150u32..=250));
            let column_count = (f64::from(cell_count).sqrt().ceil()) as u32;
            let row_count = cell_count.div_ceil(column_count);
            let block_width_metres = cell_width_metres * f64::from(column_count);
            let block_height_metres = cell_height_metres * f64::from(row_count);
            let lat_degrees_per_metre = 1.0 / METRES_PER_DEGREE;
            let lon_degrees_per_metre = longitude_degrees_per_metre(plan.centre.1);
            let half_block_lon = block_width_metres / 2.0 * lon_degrees_per_metre;
            let half_block_lat = block_height_metres / 2.0 * lat_degrees_per_metre;
            let gap_lon = COMMUNITY_GAP_METRES * lon_degrees_per_metre;
            let gap_lat = COMMUNITY_GAP_METRES * lat_degrees_per_metre;

            let mut placement: Option<(f64, f64, DegreeBox)> = None;
            for _ in 0..MAX_PLACEMENT_ATTEMPTS {
                let centroid_lon = round_to_decimals(
                    plan.centre.0 + random.random_range(-plan.spread.0..=plan.spread.0),
                    6,
                );
                let centroid_lat = round_to_decimals(
                    plan.centre.1 + random.random_range(-plan.spread.1..=plan.spread.1),
                    6,
                );
                let padded_box = DegreeBox {
                    min_lon: centroid_lon - half_block_lon - gap_lon,
                    min_lat: centroid_lat - half_block_lat - gap_lat,
                    max_lon: centroid_lon + half_block_lon + gap_lon,
                    max_lat: centroid_lat + half_block_lat + gap_lat,
                };
                if placed_boxes
                    .iter()
                    .all(|placed| !placed.overlaps(&padded_box))
                {
                    placement = Some((centroid_lon, centroid_lat, padded_box));
                    break;
                }
            }
            let Some((centroid_lon, centroid_lat, padded_box)) = placement else {
                return Err(SeedsError::Placement {
                    community_id,
                    attempts: MAX_PLACEMENT_ATTEMPTS,
                });
            };
            placed_boxes.push(padded_box);

            // Grid lines are rounded once, so neighbouring cells share their edges exactly.
            let west = centroid_lon - half_block_lon;
            let north = centroid_lat + half_block_lat;
            let column_line = |column: u32| {
                round_to_decimals(
                    west + f64::from(column) * cell_width_metres * lon_degrees_per_metre,
                    7,
                )
            };
            let row_line = |row: u32| {
                round_to_decimals(
                    north - f64::from(row) * cell_height_metres * lat_degrees_per_metre,
                    7,
                )
            };
            for grid_number in 1..=cell_count {
                let row = (grid_number - 1) / column_count;
                let column = (grid_number - 1) % column_count;
                let (min_lon, max_lon) = (column_line(column), column_line(column + 1));
                let (min_lat, max_lat) = (row_line(row + 1), row_line(row));
                let grid_id = format!("{community_id}{grid_number:02}");
                grid_features.push(GridFeature {
                    feature_type: "Feature",
                    properties: GridProperties {
                        grid_id: grid_id.clone(),
                        community_id: community_id.clone(),
                        grid_no: grid_number,
                    },
                    geometry: PolygonGeometry {
                        geometry_type: "Polygon",
                        coordinates: vec![vec![
                            [min_lon, min_lat],
                            [max_lon, min_lat],
                            [max_lon, max_lat],
                            [min_lon, max_lat],
                            [min_lon, min_lat],
                        ]],
                    },
                });

                // One device of every kind, so that every cell can report every
                // device-reported event type.
                for kind in DeviceKind::ALL {
                    let prefix = format!(
                        "{}00{GBT28181_INDUSTRY_CODE}{}{GBT28181_NETWORK_CODE}",
                        plan.code,
                        kind.gbt28181_type_code()
                    );
                    let serial = device_serial_by_prefix.entry(prefix.clone()).or_insert(0);
                    *serial += 1;
                    device_records.push(DeviceRecord {
                        device_id: format!("{prefix}{:06}", *serial),
                        grid_id: grid_id.clone(),
                        kind: kind.as_str(),
                    });
                }
            }

            // Fraud baseline: a yearly filed-case rate of 6–10 per 10,000 residents, spread
            // evenly over the months with Poisson noise; reports exceed filed cases, and
            // warnings are several times the reports.
            let cases_per_ten_thousand: f64 = random.random_range(6.0..=10.0);
            let monthly_case_rate =
                f64::from(population) * cases_per_ten_thousand / 10_000.0 / 12.0;
            for month in 1..=12 {
                let fraud_cases_filed =
                    draw_poisson(&mut random, monthly_case_rate, &community_id)?;
                let unfiled_reports =
                    draw_poisson(&mut random, monthly_case_rate * 0.6, &community_id)?;
                let fraud_reported = fraud_cases_filed + unfiled_reports;
                let extra_warnings =
                    draw_poisson(&mut random, monthly_case_rate * 1.6 * 4.0, &community_id)?;
                fraud_records.push(FraudBaselineRecord {
                    community_id: community_id.clone(),
                    year: FRAUD_BASELINE_YEAR,
                    month,
                    fraud_warnings: fraud_reported + extra_warnings,
                    fraud_reported,
                    fraud_cases_filed,
                });
            }

            community_records.push(CommunityRecord {
                community_id,
                name,
                district_code: plan.code,
                population,
                centroid_lon: format!("{centroid_lon:.6}"),
                centroid_lat: format!("{centroid_lat:.6}"),
            });
        }
    }

    let mut grids_geojson = String::from("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for (position, feature) in grid_features.iter().enumerate() {
        let feature_json =
            serde_json::to_string(feature).map_err(|error| SeedsError::Serialize {
                file: "grids.geojson",
                message: error.to_string(),
            })?;
        grids_geojson.push_str(&feature_json);
        if position + 1 < grid_features.len() {
            grids_geojson.push(',');
        }
        grids_geojson.push('\n');
    }
    grids_geojson.push_str("]}\n");

    Ok(vec![
        (
            "districts.csv",
            write_csv("districts.csv", &district_records)?,
        ),
        (
            "communities.csv",
            write_csv("communities.csv", &community_records)?,
        ),
        ("grids.geojson", grids_geojson),
        ("devices.csv", write_csv("devices.csv", &device_records)?),
        (
            "fraud_baseline.csv",
            write_csv("fraud_baseline.csv", &fraud_records)?,
        ),
    ])
}

/// Writes every seed file into `out_dir` (created if missing), deterministically.
pub fn generate_seeds(out_dir: &Path) -> Result<(), SeedsError> {
    let contents = seed_file_contents()?;
    std::fs::create_dir_all(out_dir).map_err(|source| SeedsError::Io {
        path: out_dir.display().to_string(),
        source,
    })?;
    for (file_name, content) in contents {
        let path = out_dir.join(file_name);
        std::fs::write(&path, content).map_err(|source| SeedsError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed file `seeds/<file_name>`.
    fn committed_seed_file(file_name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(file_name);
        match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => panic!("cannot read {}: {error}", path.display()),
        }
    }

    fn generated_contents() -> Vec<(&'static str, String)> {
        match seed_file_contents() {
            Ok(contents) => contents,
            Err(error) => panic!("generation failed: {error}"),
        }
    }

    /// Parses `fraud_baseline.csv` into (community_id, month, warnings, reported, filed).
    fn fraud_rows(text: &str) -> Vec<(String, u32, u64, u64, u64)> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        reader
            .records()
            .map(|record| {
                let Ok(record) = record else {
                    panic!("valid csv");
                };
                let field = |position: usize| record.get(position).unwrap_or_default().to_string();
                let number = |position: usize| -> u64 {
                    match field(position).parse() {
                        Ok(value) => value,
                        Err(error) => panic!("column {position}: {error}"),
                    }
                };
                (
                    field(0),
                    u32::try_from(number(2)).unwrap_or(0),
                    number(3),
                    number(4),
                    number(5),
                )
            })
            .collect()
    }

    #[test]
    fn committed_seed_files_match_the_generator() {
        let out_dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("tempdir: {error}"),
        };
        if let Err(error) = generate_seeds(out_dir.path()) {
            panic!("generate_seeds failed: {error}");
        }
        for file_name in SEED_FILE_NAMES {
            let regenerated = match std::fs::read(out_dir.path().join(file_name)) {
                Ok(bytes) => bytes,
                Err(error) => panic!("cannot read regenerated {file_name}: {error}"),
            };
            assert!(
                regenerated == committed_seed_file(file_name),
                "seeds/{file_name} differs from the generator output; \
                 run `cargo run -- gen-seeds --out-dir seeds` and commit the result"
            );
        }
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(generated_contents(), generated_contents());
    }

    #[test]
    fn fraud_baseline_has_twelve_months_per_community_and_a_plausible_rate() {
        let contents = generated_contents();
        let Some((_, fraud_text)) = contents
            .iter()
            .find(|(file_name, _)| *file_name == "fraud_baseline.csv")
        else {
            panic!("fraud_baseline.csv is generated");
        };
        let Some((_, communities_text)) = contents
            .iter()
            .find(|(file_name, _)| *file_name == "communities.csv")
        else {
            panic!("communities.csv is generated");
        };
        let rows = fraud_rows(fraud_text);
        assert_eq!(rows.len(), 162 * 12);

        let mut months_by_community: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut total_filed = 0u64;
        let mut total_reported = 0u64;
        let mut total_warnings = 0u64;
        for (community_id, month, warnings, reported, filed) in &rows {
            assert!(reported >= filed, "{community_id} month {month}");
            assert!(warnings >= reported, "{community_id} month {month}");
            months_by_community
                .entry(community_id.clone())
                .or_default()
                .push(*month);
            total_filed += filed;
            total_reported += reported;
            total_warnings += warnings;
        }
        assert_eq!(months_by_community.len(), 162);
        for months in months_by_community.values() {
            assert_eq!(months, &(1..=12).collect::<Vec<u32>>());
        }

        let mut total_population = 0u64;
        let mut reader = csv::Reader::from_reader(communities_text.as_bytes());
        for record in reader.records() {
            let Ok(record) = record else {
                panic!("valid csv");
            };
            let population: u64 = record
                .get(3)
                .and_then(|field| field.parse().ok())
                .unwrap_or(0);
            assert!((3_000..=15_000).contains(&population));
            total_population += population;
        }
        let filed_per_ten_thousand = total_filed as f64 / total_population as f64 * 10_000.0;
        assert!(
            (6.0..=10.0).contains(&filed_per_ten_thousand),
            "city-wide baseline rate {filed_per_ten_thousand}"
        );
        assert!(total_reported > total_filed);
        assert!(total_warnings >= 3 * total_reported);
    }

    #[test]
    fn community_names_and_device_ids_are_unique() {
        let contents = generated_contents();
        for (file_name, column) in [("communities.csv", 1usize), ("devices.csv", 0usize)] {
            let Some((_, text)) = contents.iter().find(|(name, _)| *name == file_name) else {
                panic!("{file_name} is generated");
            };
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let mut seen = std::collections::BTreeSet::new();
            for record in reader.records() {
                let Ok(record) = record else {
                    panic!("valid csv");
                };
                let value = record.get(column).unwrap_or_default().to_string();
                assert!(
                    seen.insert(value.clone()),
                    "duplicate {value} in {file_name}"
                );
            }
            assert!(!seen.is_empty());
        }
    }

    /// Formats a count with thousands separators, as the README writes it.
    fn with_thousands_separators(count: usize) -> String {
        let digits = count.to_string();
        let mut formatted = String::new();
        for (position, digit) in digits.chars().enumerate() {
            if position > 0 && (digits.len() - position) % 3 == 0 {
                formatted.push(',');
            }
            formatted.push(digit);
        }
        formatted
    }

    #[test]
    fn readme_documents_the_device_kind_table_and_counts() {
        let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/README.md");
        let readme = match std::fs::read_to_string(&readme_path) {
            Ok(text) => text,
            Err(error) => panic!("cannot read seeds/README.md: {error}"),
        };
        for kind in DeviceKind::ALL {
            let row_start = format!("| `{}` |", kind.as_str());
            let Some(row) = readme.lines().find(|line| line.starts_with(&row_start)) else {
                panic!("seeds/README.md has no row for {}", kind.as_str());
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let expected_types: Vec<&str> = kind
                .event_types()
                .iter()
                .map(|event_type| event_type.as_str_name())
                .collect();
            assert_eq!(
                cells.get(4).copied(),
                Some(expected_types.join(", ").as_str()),
                "event types of {}",
                kind.as_str()
            );
            assert_eq!(
                cells.get(3).copied(),
                Some(kind.gbt28181_type_code()),
                "type code of {}",
                kind.as_str()
            );
        }

        let contents = generated_contents();
        let line_count = |file_name: &str| -> usize {
            let Some((_, text)) = contents.iter().find(|(name, _)| *name == file_name) else {
                panic!("{file_name} is generated");
            };
            text.lines().count()
        };
        let cell_count = line_count("grids.geojson") - 2;
        let device_count = line_count("devices.csv") - 1;
        assert!(readme.contains(&format!("{} cells", with_thousands_separators(cell_count))));
        assert!(readme.contains(&format!("{} rows", with_thousands_separators(device_count))));
    }
}
