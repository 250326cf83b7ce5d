//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use gridwatch::config::Config;
use gridwatch::grid::GridRegistry;
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::IncidentEvent;
use gridwatch::rules::RuleSet;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::source::{RecordPayload, SourceRecord};

/// 2026-03-02T00:00:00Z: the simulated streams of the tests start here.
pub const START_MILLIS: i64 = 1_772_409_600_000;
/// The wall clock the tests pretend it is: a day after the simulated start.
pub const WALL_MILLIS: i64 = START_MILLIS + 86_400_000 * 30;

/// A pipeline with the default configuration and embedded seeds and rules, as replay runs it
/// (no processing-time watermark advance).
pub fn default_pipeline() -> (Pipeline, Arc<Metrics>) {
    let config = Config::default();
    let mut settings = PipelineSettings::from_config(&config);
    settings.window.idle_timeout_millis = i64::MAX;
    let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    let pipeline = Pipeline::new(
        settings,
        GridRegistry::embedded(),
        rules,
        metrics.clone(),
        "file",
    );
    (pipeline, metrics)
}

/// Simulator events with the default realism (jitter, duplicates, coordinates).
pub fn simulated_events(seed: u64, count: usize, rate_multiplier: f64) -> Vec<IncidentEvent> {
    let settings = SimulatorSettings {
        seed,
        start_millis: START_MILLIS,
        rate_multiplier,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, GridRegistry::embedded()).unwrap();
    (0..count).map(|_| simulator.next_event()).collect()
}

/// A source record carrying an already-structured event.
pub fn record(event: &IncidentEvent, position: u64) -> SourceRecord {
    SourceRecord {
        payload: RecordPayload::Event(Box::new(event.clone())),
        partition: 0,
        position,
    }
}

/// Feeds events through a fresh pipeline and closes every window at the end.
pub fn run_events(events: &[IncidentEvent]) -> Outputs {
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    for (position, event) in events.iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    pipeline.finish(WALL_MILLIS, &mut outputs);
    outputs
}

/// Windows as sortable JSON lines (emission order may legitimately differ between inputs).
pub fn sorted_window_lines(outputs: &Outputs) -> Vec<String> {
    let mut lines: Vec<String> = outputs
        .windows
        .iter()
        .map(|window| serde_json::to_string(window).unwrap())
        .collect();
    lines.sort();
    lines
}
