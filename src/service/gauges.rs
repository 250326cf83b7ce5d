//! Gauges of the partitions' state: incidents per cell and events per community per view,
//! and per Kafka partition the consumer lag and watermark. The values are pure functions of
//! [`PartitionedPipelines`] ([`view_counts`], [`partition_gauges`]); publishing them is a
//! separate step that also removes the series that went away.

use std::collections::{BTreeMap, BTreeSet};

use crate::grid::{CellIndex, GridRegistry};
use crate::metrics::Metrics;
use crate::partitions::PartitionedPipelines;

/// What the cell and community gauges show for each view.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ViewCounts {
    /// Incident events by (cell, view index); cells without incidents in a view are absent.
    pub(crate) incidents_by_cell: BTreeMap<(CellIndex, usize), u64>,
    /// For each view, the events of every registered community in registry order (0 for
    /// silent ones).
    pub(crate) events_by_community: Vec<Vec<u64>>,
}

/// The counts of the first `view_count` views.
pub(crate) fn view_counts(pipelines: &PartitionedPipelines, view_count: usize) -> ViewCounts {
    let registry = pipelines.registry();
    let mut counts = ViewCounts::default();
    for view_index in 0..view_count {
        let mut events_by_community = vec![0_u64; registry.communities().len()];
        for (key, count) in pipelines.view_counts(view_index) {
            // Keys come from (restored) view state: one the registry does not know is skipped,
            // so that `publish` only ever sees this registry's cells.
            let Some(cell) = registry.get_cell(key.cell) else {
                continue;
            };
            let community_index = cell.community;
            if let Some(community_events) = events_by_community.get_mut(community_index.0 as usize)
            {
                *community_events += count;
            }
            let is_incident = crate::proto::EventType::try_from(key.event_type)
                .map(crate::event::is_incident)
                .unwrap_or(false);
            if is_incident {
                *counts
                    .incidents_by_cell
                    .entry((key.cell, view_index))
                    .or_default() += count;
            }
        }
        counts.events_by_community.push(events_by_community);
    }
    counts
}

/// The `gridwatch_cell_incidents` series currently published, so that the ones whose cell
/// went quiet can be removed (a bounded label set: registered cells only).
#[derive(Debug, Default)]
pub(crate) struct CellGauges {
    /// (cell, view index) pairs with a series.
    published: BTreeSet<(CellIndex, usize)>,
}

impl CellGauges {
    /// Sets the cell and community gauges to `counts`, then removes the cell series that went
    /// to zero (set first: a reset would let a concurrent scrape see every series missing).
    pub(crate) fn publish(
        &mut self,
        metrics: &Metrics,
        registry: &GridRegistry,
        view_labels: &[String],
        counts: &ViewCounts,
    ) {
        let cell_labels = |cell_index: CellIndex, view_label: &str| {
            let cell = registry.cell(cell_index);
            let community = registry.community(cell.community);
            [
                community.district_code.clone(),
                community.id.clone(),
                cell.grid_id.clone(),
                view_label.to_string(),
            ]
        };
        for ((cell_index, view_index), incidents) in &counts.incidents_by_cell {
            let Some(view_label) = view_labels.get(*view_index) else {
                continue;
            };
            let labels = cell_labels(*cell_index, view_label);
            metrics
                .cell_incidents
                .with_label_values(&labels.each_ref().map(String::as_str))
                .set(*incidents as f64);
        }
        for (view_label, events_by_community) in view_labels.iter().zip(&counts.events_by_community)
        {
            for (community, events) in registry.communities().iter().zip(events_by_community) {
                metrics
                    .community_events
                    .with_label_values(&[
                        community.district_code.as_str(),
                        community.id.as_str(),
                        view_label.as_str(),
                    ])
                    .set(*events as f64);
            }
        }
        let published_now: BTreeSet<(CellIndex, usize)> =
            counts.incidents_by_cell.keys().copied().collect();
        for (cell_index, view_index) in self.published.difference(&published_now) {
            let Some(view_label) = view_labels.get(*view_index) else {
                continue;
            };
            let labels = cell_labels(*cell_index, view_label);
            let _ = metrics
                .cell_incidents
                .remove_label_values(&labels.each_ref().map(String::as_str));
        }
        self.published = published_now;
    }
}

/// The lag and watermark gauges of one owned Kafka partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartitionGauge {
    /// Input topic.
    pub(crate) topic: String,
    /// Kafka partition number.
    pub(crate) kafka_partition: i32,
    /// Records between the partition's next position and the broker's high watermark, when
    /// the statistics reported one.
    pub(crate) lag: Option<i64>,
    /// The partition pipeline's watermark, epoch seconds, once it has one.
    pub(crate) watermark_seconds: Option<f64>,
}

/// The gauges of every owned partition that numbers a subscribed topic
/// (`topic_partition_of`), given the brokers' latest `high_watermarks` by source partition.
pub(crate) fn partition_gauges<'topic>(
    pipelines: &PartitionedPipelines,
    high_watermarks: &BTreeMap<u32, i64>,
    topic_partition_of: impl Fn(u32) -> Option<(&'topic str, i32)>,
) -> Vec<PartitionGauge> {
    pipelines
        .partitions()
        .filter_map(|(partition, owned)| {
            let (topic, kafka_partition) = topic_partition_of(partition)?;
            let next_offset = owned
                .next_position
                .and_then(|next| i64::try_from(next).ok())
                .unwrap_or(0);
            Some(PartitionGauge {
                topic: topic.to_string(),
                kafka_partition,
                lag: high_watermarks
                    .get(&partition)
                    .map(|high_watermark| (high_watermark - next_offset).max(0)),
                watermark_seconds: owned
                    .pipeline
                    .watermark_millis()
                    .map(|watermark| watermark as f64 / 1000.0),
            })
        })
        .collect()
}

/// Sets the Kafka lag and watermark gauges.
pub(crate) fn publish_partition_gauges(metrics: &Metrics, gauges: &[PartitionGauge]) {
    for gauge in gauges {
        let partition_label = gauge.kafka_partition.to_string();
        let labels = [gauge.topic.as_str(), partition_label.as_str()];
        if let Some(lag) = gauge.lag {
            metrics
                .kafka
                .consumer_lag
                .with_label_values(&labels)
                .set(lag);
        }
        if let Some(watermark_seconds) = gauge.watermark_seconds {
            metrics
                .kafka
                .partition_watermark
                .with_label_values(&labels)
                .set(watermark_seconds);
        }
    }
}

/// Removes the lag and watermark series of a partition no longer owned.
pub(crate) fn remove_partition_series(metrics: &Metrics, topic: &str, kafka_partition: i32) {
    let partition_label = kafka_partition.to_string();
    let labels = [topic, partition_label.as_str()];
    let _ = metrics.kafka.consumer_lag.remove_label_values(&labels);
    let _ = metrics
        .kafka
        .partition_watermark
        .remove_label_values(&labels);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::{accepted_event, pipelines, T0};

    #[test]
    fn view_counts_sum_incidents_per_cell_and_events_per_community() {
        let (mut pipelines, registry) = pipelines();
        let cell = registry.cells()[0].clone();
        accepted_event(&mut pipelines, &cell.grid_id, "a", T0);
        accepted_event(&mut pipelines, &cell.grid_id, "b", T0 + 1000);
        // Views count closed panes: a later event moves the watermark past the first two.
        let later_cell = registry.cells()[1].grid_id.clone();
        accepted_event(&mut pipelines, &later_cell, "c", T0 + 300_000);
        let counts = view_counts(&pipelines, 1);
        let cell_index = registry.cell_by_grid_id(&cell.grid_id).unwrap();
        assert_eq!(
            counts.incidents_by_cell,
            BTreeMap::from([((cell_index, 0), 2)])
        );
        assert_eq!(counts.events_by_community.len(), 1);
        assert_eq!(
            counts.events_by_community[0].len(),
            registry.communities().len()
        );
        assert_eq!(counts.events_by_community[0][cell.community.0 as usize], 2);
        assert_eq!(counts.events_by_community[0].iter().sum::<u64>(), 2);
    }

    #[test]
    fn partition_gauges_report_lag_against_the_high_watermark_and_skip_unknown_topics() {
        let (mut pipelines, registry) = pipelines();
        accepted_event(&mut pipelines, &registry.cells()[0].grid_id, "a", T0);
        let high_watermarks = BTreeMap::from([(0, 10)]);
        let gauges = partition_gauges(&pipelines, &high_watermarks, |partition| {
            (partition == 0).then_some(("events", 0))
        });
        assert_eq!(gauges.len(), 1);
        assert_eq!(gauges[0].topic, "events");
        assert_eq!(
            gauges[0].lag,
            Some(9),
            "position 0 processed: next offset 1"
        );
        assert!(gauges[0].watermark_seconds.is_some());
        let unknown = partition_gauges(&pipelines, &high_watermarks, |_| None);
        assert!(unknown.is_empty());
    }

    #[test]
    fn a_cell_that_went_quiet_loses_its_series() {
        let (mut pipelines, registry) = pipelines();
        let metrics = Metrics::new(&["file"], "test").unwrap();
        let labels = vec!["15m".to_string()];
        let mut gauges = CellGauges::default();
        accepted_event(&mut pipelines, &registry.cells()[0].grid_id, "a", T0);
        accepted_event(
            &mut pipelines,
            &registry.cells()[1].grid_id,
            "b",
            T0 + 300_000,
        );
        gauges.publish(&metrics, &registry, &labels, &view_counts(&pipelines, 1));
        assert_eq!(gauges.published.len(), 1);
        gauges.publish(&metrics, &registry, &labels, &ViewCounts::default());
        assert!(gauges.published.is_empty());
    }
}
