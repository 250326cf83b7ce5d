//! The read model fed in-process (simulator, file, or Kafka without output topics): the
//! pipeline's windows and alerts as they are written, and every tick this instance's fraud
//! counts (one `FraudPartial`, partition `local`) and health (one `InstanceStatus`), then a
//! publish. The same records a Kafka deployment carries on its output topics, through the same
//! `CityModel::apply`.

use crate::dead_letter::DeadLetterReason;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::partitions::PartitionedPipelines;
use crate::pipeline::Outputs;
use crate::proto::{CommunityYearCounts, FraudPartial, InstanceStatus};
use crate::read_model::{OutputRecord, ReadModelWriter};
use crate::time::millis_to_timestamp;

/// The partition name of in-process fraud counts.
const LOCAL_PARTITION: &str = "local";

/// Feeds one [`ReadModelWriter`] from the pipeline task.
pub(crate) struct ReadModelFeed {
    /// The writer (the model's only owner).
    pub(crate) writer: ReadModelWriter,
    /// This instance's name in the pipeline strip.
    pub(crate) instance_id: String,
    /// `simulator`, `file` or `kafka`.
    pub(crate) source_name: &'static str,
    /// Input events counted at the previous tick, and when (events per second).
    last_events: Option<(u64, i64)>,
}

impl ReadModelFeed {
    /// A feed of `writer` for the instance `instance_id` reading `source_name`.
    pub(crate) fn new(
        writer: ReadModelWriter,
        instance_id: String,
        source_name: &'static str,
    ) -> ReadModelFeed {
        ReadModelFeed {
            writer,
            instance_id,
            source_name,
            last_events: None,
        }
    }

    /// Applies the windows and alerts about to be written.
    pub(crate) fn apply_outputs(&mut self, outputs: &Outputs, wall_millis: i64) {
        self.writer.apply_outputs(outputs, wall_millis);
    }

    /// This tick's fraud counts and health, then a publish.
    pub(crate) fn tick(
        &mut self,
        pipelines: &PartitionedPipelines,
        metrics: &Metrics,
        wall_millis: i64,
    ) {
        if let Some(tracker) = pipelines.fraud_tracker() {
            let partial = fraud_partial(&tracker, pipelines.registry(), wall_millis);
            self.writer
                .apply(OutputRecord::FraudPartial(partial), wall_millis);
        }
        let status = self.instance_status(pipelines, metrics, wall_millis);
        self.writer
            .apply(OutputRecord::InstanceStatus(status), wall_millis);
        self.writer.publish(wall_millis);
    }

    fn instance_status(
        &mut self,
        pipelines: &PartitionedPipelines,
        metrics: &Metrics,
        wall_millis: i64,
    ) -> InstanceStatus {
        let events_total = metrics
            .events_received
            .with_label_values(&[self.source_name])
            .get();
        let events_per_second = match self.last_events {
            Some((previous, at)) if wall_millis > at => {
                events_total.saturating_sub(previous) as f64 * 1000.0 / (wall_millis - at) as f64
            }
            _ => 0.0,
        };
        self.last_events = Some((events_total, wall_millis));
        let dead_letters_total = DeadLetterReason::ALL
            .iter()
            .map(|reason| {
                let total = metrics
                    .dead_letters
                    .with_label_values(&[reason.as_str()])
                    .get();
                (reason.as_str().to_string(), total)
            })
            .filter(|(_, total)| *total > 0)
            .collect();
        InstanceStatus {
            instance_id: self.instance_id.clone(),
            partitions: Vec::new(),
            events_per_second,
            watermark: pipelines
                .watermark_millis(wall_millis)
                .map(millis_to_timestamp),
            dead_letters_total,
            broker_reachable: true,
            updated_at: Some(millis_to_timestamp(wall_millis)),
            source: self.source_name.to_string(),
            events_total,
        }
    }
}

/// The fraud counts of every partition of this instance, as one `local` partial.
fn fraud_partial(
    tracker: &crate::fraud::FraudTracker,
    registry: &GridRegistry,
    wall_millis: i64,
) -> FraudPartial {
    let counts = tracker
        .year_counts()
        .filter_map(|(year, community, counts)| {
            let community = registry.get_community(community)?;
            Some(CommunityYearCounts {
                community_id: community.id.clone(),
                year,
                warnings: counts.warnings,
                dissuaded: counts.dissuaded,
                reported: counts.reported,
                cases_filed: counts.cases_filed,
                paired_dissuasions: counts.paired_dissuasions,
                warning_to_dissuasion_seconds_sum: counts.warning_to_dissuasion_seconds_sum,
            })
        })
        .collect();
    FraudPartial {
        partition: LOCAL_PARTITION.to_string(),
        counts,
        updated_at: Some(millis_to_timestamp(wall_millis)),
    }
}
