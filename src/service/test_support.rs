//! Partition pipelines over the embedded seeds for the service rooms' unit tests.

use std::sync::Arc;

use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::partitions::{PartitionedPipelines, PipelineFactory};
use crate::pipeline::{Outputs, PipelineSettings};
use crate::proto::{EventType, IncidentEvent};
use crate::source::{RecordPayload, SourceRecord};

/// An event time in March 2026.
pub(crate) const T0: i64 = 1_772_409_600_000;

/// Empty pipelines (embedded seeds, default rules and config) and their registry.
pub(crate) fn pipelines() -> (PartitionedPipelines, Arc<GridRegistry>) {
    let config = crate::config::Config::default();
    let rules =
        crate::rules::RuleSet::embedded_default(config.window_settings().size_millis).unwrap();
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    let registry = GridRegistry::embedded();
    let pipelines = PartitionedPipelines::new(PipelineFactory {
        settings: PipelineSettings::from_config(&config),
        registry: registry.clone(),
        rules,
        metrics,
        source_name: "file",
        fraud_settings: None,
    });
    (pipelines, registry)
}

/// Processes one accepted TAILGATING event of `grid_id` (partition 0) at wall time
/// `occurred_at_millis`.
pub(crate) fn accepted_event(
    pipelines: &mut PartitionedPipelines,
    grid_id: &str,
    event_id: &str,
    occurred_at_millis: i64,
) {
    let event = IncidentEvent {
        event_id: event_id.to_string(),
        grid_id: grid_id.to_string(),
        event_type: EventType::Tailgating as i32,
        occurred_at: Some(crate::time::millis_to_timestamp(occurred_at_millis)),
        ..IncidentEvent::default()
    };
    let record = SourceRecord {
        payload: RecordPayload::Event(Box::new(event)),
        partition: 0,
        position: 0,
    };
    let mut outputs = Outputs::default();
    pipelines.process(record, occurred_at_millis, &mut outputs);
    assert!(
        outputs.dead_letters.is_empty(),
        "{:?}",
        outputs.dead_letters
    );
}
