//! Streams drawn at the seeded rates, and waves on top of them, run through a [`RuleEngine`]
//! directly: what the false-alarm budget test (`tests_budget.rs`) and the wave-detection power
//! benchmark (`benches/power.rs`) are made of, so that both judge the rules on the same model.
//!
//! The rules are driven as the pipeline drives them (events in time order, the watermark
//! visiting every one-minute pane boundary), without decode, windows or sinks: the rules only
//! see accepted events, so nothing else can change their alerts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};

use super::baseline::{epoch_hour, local_hour_of_day, HOUR_MILLIS};
use super::{Baseline, RuleEngine, RuleSet, RulesError, EMBEDDED_RULES_TOML};
use crate::event::{default_severity, AcceptedEvent};
use crate::grid::{CellIndex, CommunityIndex, GridRegistry};
use crate::proto::{Alert, EventType, IncidentEvent};

/// The pane the simulations run with (the default window).
pub const SIMULATION_PANE_MILLIS: i64 = 60_000;

/// One drawn event: event time, cell, type.
pub type SimulatedEvent = (i64, CellIndex, EventType);

/// Draws the seeded stream of `event_types` over every cell of `registry` for `hours` hours
/// from `start` (hour-aligned), sorted by time.
///
/// A seeded rate factors as (daily rate of the cell) × (share of the local hour), so per type
/// and epoch hour the city-wide count is Poisson(Σ cells' hourly rates) and each event falls
/// in a cell with probability proportional to its daily rate: the splitting property of the
/// Poisson process, exactly the per-cell processes, with one draw per (type, hour) instead of
/// one per (cell, type, hour). Events are placed uniformly within their hour.
pub fn seeded_stream(
    registry: &GridRegistry,
    baseline: &Baseline,
    event_types: &[EventType],
    start: i64,
    hours: i64,
    seed: u64,
) -> Vec<SimulatedEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    for event_type in event_types {
        let Some(type_seed) = baseline.seed(*event_type) else {
            continue;
        };
        // Cumulative daily rates over the cells (hour share 1 = the whole day).
        let mut cumulative = Vec::with_capacity(registry.cells().len());
        let mut daily_total = 0.0;
        for cell_number in 0..registry.cells().len() {
            let cell = CellIndex(cell_number as u32);
            let daily: f64 = (0..24)
                .map(|local_hour| {
                    baseline.seeded_hourly_rate(registry, cell, *event_type, local_hour)
                })
                .sum();
            daily_total += daily;
            cumulative.push(daily_total);
        }
        if daily_total <= 0.0 {
            continue;
        }
        for hour in 0..hours {
            let hour_start = start + hour * HOUR_MILLIS;
            let share = type_seed.hour_share(local_hour_of_day(epoch_hour(hour_start)));
            let Ok(poisson) = Poisson::new(daily_total * share) else {
                continue;
            };
            let count = poisson.sample(&mut rng) as u64;
            for _ in 0..count {
                let pick = rng.random_range(0.0..daily_total);
                let cell_number = cumulative.partition_point(|total| *total <= pick);
                let offset = rng.random_range(0..HOUR_MILLIS);
                events.push((
                    hour_start + offset,
                    CellIndex(cell_number as u32),
                    *event_type,
                ));
            }
        }
    }
    sort_by_time(&mut events);
    events
}

/// The extra events of a wave: in each of `cells`, for each of `event_types` and each hour
/// from `start` (hour-aligned) for `hours` hours, Poisson(`extra_multiple` × the cell's seeded
/// hourly rate) events placed uniformly in the hour. Added to a [`seeded_stream`], the cells
/// then run at (1 + `extra_multiple`) × their baseline: a "×10 wave" has `extra_multiple` 9.
#[allow(clippy::too_many_arguments)]
pub fn wave_stream(
    registry: &GridRegistry,
    baseline: &Baseline,
    cells: &[CellIndex],
    event_types: &[EventType],
    extra_multiple: f64,
    start: i64,
    hours: i64,
    seed: u64,
) -> Vec<SimulatedEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    for hour in 0..hours {
        let hour_start = start + hour * HOUR_MILLIS;
        let local_hour = local_hour_of_day(epoch_hour(hour_start));
        for cell in cells {
            for event_type in event_types {
                let rate = extra_multiple
                    * baseline.seeded_hourly_rate(registry, *cell, *event_type, local_hour);
                let Ok(poisson) = Poisson::new(rate) else {
                    continue;
                };
                for _ in 0..poisson.sample(&mut rng) as u64 {
                    events.push((
                        hour_start + rng.random_range(0..HOUR_MILLIS),
                        *cell,
                        *event_type,
                    ));
                }
            }
        }
    }
    sort_by_time(&mut events);
    events
}

/// The median community by population and its `count − 1` nearest neighbours by centroid,
/// nearest first, grouped as a scan rule's zones group them: where the tests put a wave over
/// "adjacent communities". Fewer when the city has fewer communities.
pub fn median_community_and_neighbours(
    registry: &GridRegistry,
    count: usize,
) -> Vec<CommunityIndex> {
    let communities = registry.communities();
    let mut by_population: Vec<usize> = (0..communities.len()).collect();
    by_population.sort_by_key(|index| {
        communities
            .get(*index)
            .map(|community| community.population)
    });
    let Some(median) = by_population.get(by_population.len() / 2).copied() else {
        return Vec::new();
    };
    let centroids: Vec<(f64, f64)> = communities
        .iter()
        .map(|community| community.centroid)
        .collect();
    let zones = super::space_time::ScanZones::from_centroids(&centroids, count, f64::INFINITY);
    zones
        .zones()
        .iter()
        .filter(|members| members.first() == Some(&(median as u32)))
        .max_by_key(|members| members.len())
        .map(|members| {
            members
                .iter()
                .map(|member| CommunityIndex(*member))
                .collect()
        })
        .unwrap_or_default()
}

/// Sorts a drawn stream by time (ties by cell and type, so that runs are reproducible).
pub fn sort_by_time(events: &mut [SimulatedEvent]) {
    events.sort_unstable_by_key(|(occurred_at, cell, event_type)| {
        (*occurred_at, cell.0, *event_type as i32)
    });
}

/// The embedded rules file with only the rules `keep(name, kind)` accepts, and its baseline
/// settings.
pub fn embedded_rules_where(keep: &dyn Fn(&str, &str) -> bool) -> Result<RuleSet, RulesError> {
    let document: toml::Table = toml::from_str(EMBEDDED_RULES_TOML)
        .map_err(|error| RulesError::Parse(error.to_string()))?;
    let mut kept = toml::Table::new();
    let rules: Vec<toml::Value> = document
        .get("rule")
        .and_then(toml::Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter(|rule| {
                    let field =
                        |name: &str| rule.get(name).and_then(toml::Value::as_str).unwrap_or("");
                    keep(field("name"), field("kind"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    kept.insert("rule".to_string(), toml::Value::Array(rules));
    if let Some(baseline_table) = document.get("baseline") {
        kept.insert("baseline".to_string(), baseline_table.clone());
    }
    let text = toml::to_string(&kept).map_err(|error| RulesError::Parse(error.to_string()))?;
    RuleSet::from_toml_str(&text, SIMULATION_PANE_MILLIS)
}

/// Feeds `stream` (sorted by time) to an engine with `rules` and the embedded baseline as the
/// pipeline would, the watermark visiting every pane boundary from `start` to `end`; returns
/// every alert change.
pub fn run_rules(
    registry: &GridRegistry,
    rules: RuleSet,
    stream: &[SimulatedEvent],
    start: i64,
    end: i64,
) -> Vec<Alert> {
    let engine = RuleEngine::with_baseline(rules, Baseline::embedded());
    run_engine(registry, engine, stream, start, end)
}

/// [`run_rules`] with a given engine (e.g. one set to partial input).
pub fn run_engine(
    registry: &GridRegistry,
    mut engine: RuleEngine,
    stream: &[SimulatedEvent],
    start: i64,
    end: i64,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    engine.on_watermark(start, registry, &mut alerts);
    let mut watermark = start;
    alerts.extend(continue_engine(
        registry,
        &mut engine,
        stream,
        0,
        &mut watermark,
        end,
    ));
    alerts
}

/// Calls `use_event` with simulated event number `number` as the pipeline would hand it to
/// the rules: id `e{number}`, device `d{cell}`, the type's default severity.
pub fn with_accepted_event<Output>(
    number: usize,
    (occurred_at, cell, event_type): &SimulatedEvent,
    use_event: impl FnOnce(&AcceptedEvent<'_>) -> Output,
) -> Output {
    let event = IncidentEvent {
        event_id: format!("e{number}"),
        device_id: format!("d{}", cell.0),
        event_type: *event_type as i32,
        ..IncidentEvent::default()
    };
    use_event(&AcceptedEvent {
        event: &event,
        event_type: *event_type,
        severity: default_severity(*event_type),
        occurred_at_millis: *occurred_at,
        cell: *cell,
    })
}

/// Drives `engine` on from `watermark` through `stream` (sorted, no earlier than the
/// watermark's pane) to `until`, the watermark visiting every pane boundary; events are
/// numbered from `first_event_number` (their ids are `e{number}`). What [`run_engine`] does
/// after its first watermark, so that a test can stop, snapshot and continue a run.
pub fn continue_engine(
    registry: &GridRegistry,
    engine: &mut RuleEngine,
    stream: &[SimulatedEvent],
    first_event_number: usize,
    watermark: &mut i64,
    until: i64,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (number, (occurred_at, cell, event_type)) in stream.iter().enumerate() {
        while *watermark + SIMULATION_PANE_MILLIS <= *occurred_at {
            *watermark += SIMULATION_PANE_MILLIS;
            engine.on_watermark(*watermark, registry, &mut alerts);
        }
        with_accepted_event(
            first_event_number + number,
            &(*occurred_at, *cell, *event_type),
            |accepted| engine.on_event(accepted, registry, &mut alerts),
        );
    }
    while *watermark < until {
        *watermark += SIMULATION_PANE_MILLIS;
        engine.on_watermark(*watermark, registry, &mut alerts);
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wave_adds_its_multiple_of_the_seeded_expectation() {
        let registry = GridRegistry::embedded();
        let baseline = Baseline::embedded();
        let cells: Vec<CellIndex> = (0..40).map(CellIndex).collect();
        let types = [EventType::FraudWarning, EventType::FraudReported];
        let start = 20_000 * HOUR_MILLIS;
        let hours = 24 * 7;
        let expected: f64 = (0..hours)
            .map(|hour| {
                let local_hour = local_hour_of_day(epoch_hour(start + hour * HOUR_MILLIS));
                cells
                    .iter()
                    .flat_map(|cell| types.iter().map(move |event_type| (cell, event_type)))
                    .map(|(cell, event_type)| {
                        baseline.seeded_hourly_rate(&registry, *cell, *event_type, local_hour)
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            * 30.0;
        let drawn = wave_stream(&registry, &baseline, &cells, &types, 30.0, start, hours, 5);
        let drawn_count = drawn.len() as f64;
        // Poisson: the count is within 5 standard deviations of its mean.
        assert!(expected > 50.0, "expected {expected}");
        assert!(
            (drawn_count - expected).abs() < 5.0 * expected.sqrt(),
            "drawn {drawn_count}, expected {expected}"
        );
        assert!(drawn.iter().all(|(occurred_at, cell, _)| {
            (start..start + hours * HOUR_MILLIS).contains(occurred_at) && cells.contains(cell)
        }));
        assert!(drawn.windows(2).all(|pair| pair[0].0 <= pair[1].0));
    }

    /// The district of the median community and its communities' cells.
    fn a_district(registry: &GridRegistry) -> (usize, Vec<CellIndex>) {
        let district_position = registry
            .district_position_of(crate::grid::CommunityIndex(0))
            .expect("community 0 has a district");
        let cells = registry
            .communities_of_district(district_position)
            .iter()
            .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
            .collect();
        (district_position, cells)
    }

    #[test]
    fn district_units_count_districts_and_label_only_the_district() {
        use super::super::units::{unit_count, unit_key_of, unit_labels};
        use super::super::AlertScope;
        let registry = GridRegistry::embedded();
        assert_eq!(
            unit_count(&registry, AlertScope::District),
            registry.districts().len()
        );
        let (district_position, cells) = a_district(&registry);
        let district_code = &registry.districts()[district_position].code;
        for cell in &cells {
            assert_eq!(
                unit_key_of(&registry, AlertScope::District, *cell),
                Some(district_position as u32)
            );
        }
        let labels =
            unit_labels(&registry, AlertScope::District, district_position as u32).expect("labels");
        assert_eq!(labels.grid_id, "");
        assert_eq!(labels.community_id, "");
        assert_eq!(labels.district_id, district_code);
        assert_eq!(labels.location(), district_code);
        assert!(unit_labels(&registry, AlertScope::District, 10_000).is_none());
    }

    #[test]
    fn a_district_wide_fraud_wave_raises_one_district_alert_that_no_normal_stream_does() {
        let registry = GridRegistry::embedded();
        let baseline = Baseline::embedded();
        let rules = embedded_rules_where(&|name, _| name == "fraud_wave_district_spike_6h")
            .expect("the district rule is in the embedded rules");
        let types = [EventType::FraudWarning, EventType::FraudReported];
        let start = 20_000 * HOUR_MILLIS;
        let onset = start + 48 * HOUR_MILLIS;
        let end = onset + 24 * HOUR_MILLIS;
        let (district_position, cells) = a_district(&registry);
        let district_code = registry.districts()[district_position].code.clone();
        let normal = seeded_stream(&registry, &baseline, &types, start, 72, 3);
        let firing_of = |alerts: &[Alert]| -> Vec<Alert> {
            let mut seen = std::collections::BTreeSet::new();
            alerts
                .iter()
                .filter(|alert| alert.status == crate::proto::AlertStatus::Firing as i32)
                .filter(|alert| seen.insert(alert.alert_id.clone()))
                .cloned()
                .collect()
        };
        let quiet = run_rules(&registry, rules.clone(), &normal, start, end);
        assert_eq!(firing_of(&quiet), Vec::new(), "no alert on a normal stream");

        let mut waved = normal.clone();
        waved.extend(wave_stream(
            &registry, &baseline, &cells, &types, 9.0, onset, 24, 4,
        ));
        sort_by_time(&mut waved);
        let mut partition_engine = RuleEngine::with_baseline(rules.clone(), Baseline::embedded());
        partition_engine.set_partial_input(true);
        assert_eq!(
            firing_of(&run_engine(&registry, partition_engine, &waved, start, end)),
            Vec::new(),
            "a partition's engine holds part of a district: its district rules stay silent"
        );
        let fired = firing_of(&run_rules(&registry, rules, &waved, start, end));
        assert_eq!(fired.len(), 1, "one wave, one alert: {fired:#?}");
        let alert = &fired[0];
        assert_eq!(alert.district_id, district_code);
        assert_eq!(alert.community_id, "");
        assert_eq!(alert.grid_id, "");
        let starts_millis = alert
            .starts_at
            .as_ref()
            .map_or(0, |starts| starts.seconds * 1000);
        assert!(
            (onset..end).contains(&starts_millis),
            "fired within the wave, at {starts_millis}"
        );
        assert!(alert.expected > 0.0 && alert.observed > alert.expected);
    }

    #[test]
    fn a_data_gap_rule_cannot_count_per_district() {
        let text = r#"
[[rule]]
name = "district_silence"
kind = "data_gap"
scope = "district"
"#;
        let error = RuleSet::from_toml_str(text, SIMULATION_PANE_MILLIS)
            .expect_err("district data gap refused");
        assert!(error.to_string().contains("not per district"), "{error}");
    }
}
