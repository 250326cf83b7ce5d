//! The city-wide read model: what the API, the live stream and the console show, built from
//! gridwatch's own **output records** rather than from the pipeline's state, so every instance
//! shows the whole city whichever input partitions it owns (see
//! `docs/read-model-and-api.md`).
//!
//! - [`city`]: [`CityModel`], the synchronous model (`apply` a record, `publish` a snapshot);
//! - [`snapshot`]: [`CitySnapshot`], the immutable picture readers get;
//! - [`views`]: the serializable shapes (alerts, cells, areas, the pipeline strip);
//! - [`feed`]: the change feed behind `GET /api/v1/stream`;
//! - [`kafka_feed`]: the model fed from the output topics (Kafka source with Kafka outputs),
//!   read outside the consumer group.
//!
//! [`ReadModelWriter`] owns the model (in the pipeline task with a simulator or file source,
//! in the output-topic reader with Kafka); [`ReadModel`] is the readers' cheap, cloneable
//! handle: [`ReadModel::snapshot`] is one atomic load, never blocked by the writer.

pub mod city;
pub mod detection;
pub mod feed;
pub mod kafka_feed;
pub mod learned_history;
pub mod snapshot;
pub mod views;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use city::{CityModel, CityModelSettings, FraudReporting, RecordRejected};
pub use feed::{ChangeFeed, Resume, Subscription};
pub use snapshot::{AreaState, CellState, CitySnapshot, RecentWindow, WindowView};
pub use views::{
    AlertView, AreaView, CellCounts, CellView, CellsChange, InstanceView, PipelineStatus, Place,
    StreamEvent, StreamPayload,
};

use crate::proto::{Alert, FraudPartial, InstanceStatus};
use crate::window::read_back::ReadBackPane;

/// One output record, whatever carried it (a Kafka topic or the pipeline in-process).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputRecord {
    /// A final window (`windows` topic), its grid resolved where it was read.
    Window(ReadBackPane),
    /// An alert state change (`alerts` topic), boxed: an alert is several times the size of
    /// the other records.
    Alert(Box<Alert>),
    /// One input partition's fraud-chain counts (status topic, `fraud/…` keys).
    FraudPartial(FraudPartial),
    /// One instance's health (status topic, `instance/…` keys).
    InstanceStatus(InstanceStatus),
    /// An instance stopped cleanly (a tombstone of its `instance/…` key).
    InstanceGone {
        /// The instance's name.
        instance_id: String,
    },
}

impl OutputRecord {
    /// The metric label of a window.
    pub const WINDOW_KIND: &'static str = "window";

    /// The metric label of the record's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            OutputRecord::Window(_) => OutputRecord::WINDOW_KIND,
            OutputRecord::Alert(_) => "alert",
            OutputRecord::FraudPartial(_) => "fraud_partial",
            OutputRecord::InstanceStatus(_) | OutputRecord::InstanceGone { .. } => {
                "instance_status"
            }
        }
    }
}

/// The `result` label of a record the model applied.
const APPLIED: &str = "applied";

/// The readers' handle: the current snapshot and the change feed.
#[derive(Debug, Clone)]
pub struct ReadModel {
    current: Arc<ArcSwap<CitySnapshot>>,
    feed: Arc<ChangeFeed>,
}

impl ReadModel {
    /// The newest snapshot (one atomic load; the writer never waits for it).
    pub fn snapshot(&self) -> Arc<CitySnapshot> {
        self.current.load_full()
    }

    /// Subscribes to the stream after `last_event_id` (see [`ChangeFeed::subscribe`]).
    pub fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        self.feed.subscribe(last_event_id)
    }

    /// Live stream subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.feed.subscriber_count()
    }
}

/// The writer: owns the [`CityModel`], publishes snapshots and stream events.
pub struct ReadModelWriter {
    model: CityModel,
    current: Arc<ArcSwap<CitySnapshot>>,
    feed: Arc<ChangeFeed>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// `gridwatch_read_model_records_total{kind="window",result="applied"}`, looked up once:
    /// with Kafka about one window is applied per input event.
    applied_windows: Option<prometheus::IntCounter>,
    /// The fraud report last written into the fraud gauges.
    fraud_report_in_metrics: Option<Arc<crate::fraud::FraudReport>>,
}

impl std::fmt::Debug for ReadModelWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReadModelWriter")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ReadModelWriter {
    /// A writer over `model` and the handle readers use.
    pub fn new(model: CityModel) -> (ReadModelWriter, ReadModel) {
        let registry = model.registry().clone();
        let empty = CitySnapshot::empty(
            registry,
            model.settings().view_names.clone(),
            model.settings().rules_version.clone(),
        );
        let current = Arc::new(ArcSwap::from_pointee(empty));
        let feed = Arc::new(ChangeFeed::new());
        let reader = ReadModel {
            current: current.clone(),
            feed: feed.clone(),
        };
        (
            ReadModelWriter {
                model,
                current,
                feed,
                metrics: None,
                applied_windows: None,
                fraud_report_in_metrics: None,
            },
            reader,
        )
    }

    /// Counts applied and rejected records in `metrics`, and writes the city-wide fraud report
    /// into its fraud gauges (so every instance exports the whole city's figures).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> ReadModelWriter {
        self.applied_windows = Some(
            metrics
                .read_model_records
                .with_label_values(&[OutputRecord::WINDOW_KIND, APPLIED]),
        );
        self.metrics = Some(metrics);
        self
    }

    /// Applies one record (rejections are counted, and logged at debug: a shared topic may
    /// carry another deployment's records).
    pub fn apply(&mut self, record: OutputRecord, wall_millis: i64) {
        let kind = record.kind();
        let result = match self.model.apply(record, wall_millis) {
            Ok(()) => APPLIED,
            Err(rejected) => {
                tracing::debug!(
                    kind,
                    reason = rejected.as_str(),
                    "read model record not applied"
                );
                rejected.as_str()
            }
        };
        if let (Some(applied_windows), OutputRecord::WINDOW_KIND, APPLIED) =
            (&self.applied_windows, kind, result)
        {
            applied_windows.inc();
        } else if let Some(metrics) = &self.metrics {
            metrics
                .read_model_records
                .with_label_values(&[kind, result])
                .inc();
        }
    }

    /// Applies the windows and alerts of one batch of pipeline outputs (the in-process feed).
    pub fn apply_outputs(&mut self, outputs: &crate::pipeline::Outputs, wall_millis: i64) {
        for pane in &outputs.windows {
            // Only what the windows topic would carry: the sinks write no window of a cell
            // the registry cannot name.
            if crate::sink::pane_members(self.model.registry(), pane).is_some() {
                let window = ReadBackPane::of_closed_pane(pane);
                self.apply(OutputRecord::Window(window), wall_millis);
            }
        }
        for alert in &outputs.alerts {
            self.apply(OutputRecord::Alert(Box::new(alert.clone())), wall_millis);
        }
    }

    /// The model, for what the whole-city detector asks it.
    pub fn model(&self) -> &CityModel {
        &self.model
    }

    /// The version of the rules now running (after a reload), shown from the next publish.
    pub fn set_rules_version(&mut self, rules_version: String) {
        self.model.set_rules_version(rules_version);
    }

    /// How far the model trails its source, for the pipeline strip.
    pub fn set_feed_lag_seconds(&mut self, lag_seconds: f64) {
        self.model.set_feed_lag_seconds(lag_seconds);
    }

    /// Publishes the stream events of what changed, then the snapshot that includes them.
    pub fn publish(&mut self, wall_millis: i64) {
        let (mut snapshot, payloads) = self.model.publish(wall_millis);
        for payload in payloads {
            self.feed.publish(payload);
        }
        snapshot.last_event_id = self.feed.current_id();
        if let (Some(metrics), Some(report)) = (&self.metrics, &snapshot.fraud) {
            let already_written = self
                .fraud_report_in_metrics
                .as_ref()
                .is_some_and(|written| Arc::ptr_eq(written, report));
            if !already_written {
                let newly_split = report.split_communities.iter().filter(|split| {
                    self.fraud_report_in_metrics.as_ref().is_none_or(|old| {
                        !old.split_communities
                            .iter()
                            .any(|old_split| old_split.community_id == split.community_id)
                    })
                });
                for split in newly_split {
                    tracing::warn!(
                        community_id = %split.community_id,
                        partitions = %split.partitions.join(","),
                        "community events arrive on more than one input partition: its community-scope statistics are split; key the input by community id"
                    );
                }
                crate::fraud::publish_metrics(report, &metrics.fraud);
                self.fraud_report_in_metrics = Some(report.clone());
            }
        }
        self.current.store(Arc::new(snapshot));
    }

    /// The readers' handle.
    pub fn reader(&self) -> ReadModel {
        ReadModel {
            current: self.current.clone(),
            feed: self.feed.clone(),
        }
    }
}
