//! What this instance tells the city-wide read model about itself, every few seconds: one
//! [`FraudPartial`] per owned input partition (its fraud-chain counts, which follow the
//! partition across rebalances) and one [`InstanceStatus`] (owned partitions, events per
//! second, watermark, dead letters, broker reachability). With Kafka outputs they go to the
//! compacted status topic, so every instance's model sums all partitions and lists all
//! instances; otherwise they are applied to the in-process model.

use crate::metrics::Metrics;
use crate::partitions::PartitionedPipelines;
use crate::proto::{FraudPartial, InstanceStatus};
use crate::time::millis_to_timestamp;

/// How often the status records are built.
pub(crate) const STATUS_INTERVAL_MILLIS: i64 = 5_000;

/// Builds this instance's status records on their interval.
#[derive(Debug)]
pub(crate) struct StatusReporter {
    /// This instance's name.
    pub(crate) instance_id: String,
    /// `simulator`, `file` or `kafka`.
    pub(crate) source_name: &'static str,
    last_built_millis: Option<i64>,
    /// Events received at the last build (for events per second).
    last_events_total: u64,
}

impl StatusReporter {
    /// A reporter for instance `instance_id` reading `source_name`.
    pub(crate) fn new(instance_id: String, source_name: &'static str) -> StatusReporter {
        StatusReporter {
            instance_id,
            source_name,
            last_built_millis: None,
            last_events_total: 0,
        }
    }

    /// Whether the records are due at `wall_millis`.
    pub(crate) fn is_due(&self, wall_millis: i64) -> bool {
        self.last_built_millis
            .is_none_or(|last| wall_millis.saturating_sub(last) >= STATUS_INTERVAL_MILLIS)
    }

    /// This instance's status at `wall_millis`; `partition_name` names an owned partition
    /// (`topic/partition`).
    pub(crate) fn instance_status(
        &mut self,
        pipelines: &PartitionedPipelines,
        metrics: &Metrics,
        broker_reachable: bool,
        partition_name: &dyn Fn(u32) -> String,
        wall_millis: i64,
    ) -> InstanceStatus {
        let events_total = metrics
            .events_received
            .with_label_values(&[self.source_name])
            .get();
        let events_per_second = match self.last_built_millis {
            Some(last) if wall_millis > last => {
                events_total.saturating_sub(self.last_events_total) as f64
                    / ((wall_millis - last) as f64 / 1000.0)
            }
            _ => 0.0,
        };
        self.last_built_millis = Some(wall_millis);
        self.last_events_total = events_total;
        let dead_letters_total = crate::dead_letter::DeadLetterReason::ALL
            .iter()
            .filter_map(|reason| {
                let total = metrics
                    .dead_letters
                    .with_label_values(&[reason.as_str()])
                    .get();
                (total > 0).then(|| (reason.as_str().to_string(), total))
            })
            .collect();
        InstanceStatus {
            instance_id: self.instance_id.clone(),
            partitions: pipelines
                .partitions()
                .map(|(partition, _)| partition_name(partition))
                .collect(),
            events_per_second,
            watermark: pipelines
                .watermark_millis(wall_millis)
                .map(millis_to_timestamp),
            dead_letters_total,
            broker_reachable,
            updated_at: Some(millis_to_timestamp(wall_millis)),
            source: self.source_name.to_string(),
            events_total,
        }
    }
}

/// One [`FraudPartial`] per owned partition with fraud tracking on.
pub(crate) fn fraud_partials(
    pipelines: &PartitionedPipelines,
    partition_name: &dyn Fn(u32) -> String,
    wall_millis: i64,
) -> Vec<FraudPartial> {
    let registry = pipelines.registry();
    pipelines
        .partitions()
        .filter_map(|(partition, owned)| {
            let tracker = owned.pipeline.fraud_tracker()?;
            Some(crate::fraud::streamed_partial(
                tracker,
                registry,
                partition_name(partition),
                wall_millis,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::{pipelines, T0};

    #[test]
    fn the_first_status_has_no_rate_and_the_next_divides_events_by_the_interval() {
        let (pipelines, _registry) = pipelines();
        let metrics = Metrics::new(&["simulator"], "test").unwrap();
        let mut reporter = StatusReporter::new("gw-1".to_string(), "simulator");
        let name = |partition: u32| format!("local/{partition}");
        assert!(reporter.is_due(T0));
        let first = reporter.instance_status(&pipelines, &metrics, true, &name, T0);
        assert_eq!(first.events_per_second, 0.0);
        assert!(!reporter.is_due(T0 + 1000));
        metrics
            .events_received
            .with_label_values(&["simulator"])
            .inc_by(50);
        let second = reporter.instance_status(&pipelines, &metrics, true, &name, T0 + 5000);
        assert_eq!(second.events_per_second, 10.0);
        assert_eq!(second.events_total, 50);
        assert_eq!(second.instance_id, "gw-1");
    }
}
