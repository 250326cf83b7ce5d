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
use crate::grid::{CellIndex, GridRegistry};
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
    let mut engine = RuleEngine::with_baseline(rules, Baseline::embedded());
    let mut alerts = Vec::new();
    let mut watermark = start;
    engine.on_watermark(watermark, registry, &mut alerts);
    for (number, (occurred_at, cell, event_type)) in stream.iter().enumerate() {
        while watermark + SIMULATION_PANE_MILLIS <= *occurred_at {
            watermark += SIMULATION_PANE_MILLIS;
            engine.on_watermark(watermark, registry, &mut alerts);
        }
        let event = IncidentEvent {
            event_id: format!("e{number}"),
            device_id: format!("d{}", cell.0),
            event_type: *event_type as i32,
            ..IncidentEvent::default()
        };
        let accepted = AcceptedEvent {
            event: &event,
            event_type: *event_type,
            severity: default_severity(*event_type),
            occurred_at_millis: *occurred_at,
            cell: *cell,
        };
        engine.on_event(&accepted, registry, &mut alerts);
    }
    while watermark < end {
        watermark += SIMULATION_PANE_MILLIS;
        engine.on_watermark(watermark, registry, &mut alerts);
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
}
