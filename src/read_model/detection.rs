//! The whole-city detector beside the city-wide read model, in the task that reads the output
//! topics ([`super::kafka_feed::run_kafka_read_model`]): it sees every pane the read model
//! sees and asks the model which instances are live and which alert changes the alerts topic
//! already shows. What it decides is in [`crate::rules::whole_city`]; this is the plumbing:
//! records in, alert changes out to the pipeline task (which publishes them only where it owns
//! input partition 0), metrics.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::learned_history::LearnedHistoryStore;
use super::{CityModel, OutputRecord};
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::proto::Alert;
use crate::rules::whole_city::{UnconfirmedAlerts, WholeCityDetector};
use crate::rules::RuleSet;

/// What the detector hands the pipeline task.
#[derive(Debug, Clone, PartialEq)]
pub enum WholeCityUpdate {
    /// Alert changes to publish: new ones, or ones the alerts topic does not show yet.
    Publish(Vec<Alert>),
    /// Every whole-city alert firing after the catch-up (some were published before this
    /// start): what the publisher keeps fresh in Alertmanager.
    Firing(Vec<Alert>),
}

/// The detector, its pending changes and its channels.
pub struct WholeCityDetection {
    detector: WholeCityDetector,
    registry: Arc<GridRegistry>,
    unconfirmed: UnconfirmedAlerts,
    /// To the pipeline task, which publishes where it owns input partition 0.
    publish: mpsc::Sender<WholeCityUpdate>,
    /// Reloaded rule sets, from the pipeline task.
    reloaded_rules: mpsc::Receiver<RuleSet>,
    metrics: Arc<Metrics>,
    /// Alert changes of the current step, reused.
    changes: Vec<Alert>,
    /// Where the learned history is kept across restarts (none without a state topic writer,
    /// e.g. in tests).
    learned_history: Option<LearnedHistoryStore>,
}

impl std::fmt::Debug for WholeCityDetection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WholeCityDetection")
            .field("watermark_millis", &self.detector.watermark_millis())
            .field("unconfirmed", &self.unconfirmed.len())
            .finish_non_exhaustive()
    }
}

impl WholeCityDetection {
    /// Wires `detector` to its channels; it catches up until the feed has read every output
    /// partition to its end ([`WholeCityDetection::on_read_to_end`]).
    pub fn new(
        detector: WholeCityDetector,
        registry: Arc<GridRegistry>,
        publish: mpsc::Sender<WholeCityUpdate>,
        reloaded_rules: mpsc::Receiver<RuleSet>,
        metrics: Arc<Metrics>,
        learned_history: Option<LearnedHistoryStore>,
    ) -> WholeCityDetection {
        metrics.whole_city_catching_up.set(1);
        WholeCityDetection {
            detector,
            registry,
            unconfirmed: UnconfirmedAlerts::default(),
            publish,
            reloaded_rules,
            metrics,
            changes: Vec::new(),
            learned_history,
        }
    }

    /// Hands the detector the learned history kept on the state topic, before it catches up
    /// (once, on start).
    pub async fn restore_learned_history(&mut self) {
        if let Some(store) = self.learned_history.as_mut() {
            store.restore_into(&mut self.detector).await;
        }
        self.set_learned_history_seconds();
    }

    fn set_learned_history_seconds(&self) {
        let hours = i64::try_from(self.detector.learned_hours()).unwrap_or(i64::MAX);
        self.metrics
            .whole_city_learned_history_seconds
            .set(hours.saturating_mul(3600));
    }

    /// Counts the panes among `records` (one feed batch).
    pub fn on_records(&mut self, records: &[OutputRecord], wall_millis: i64) {
        // One label lookup per result and batch, not per pane (about one pane per input event
        // on the Kafka path; most return at once, their type counted by no whole-city rule).
        let mut panes_by_result: Vec<(&'static str, u64)> = Vec::new();
        for record in records {
            let OutputRecord::Window(window) = record else {
                continue;
            };
            let result = match self
                .detector
                .apply_pane(window, &self.registry, &mut self.changes)
            {
                Ok(read) => read.as_str(),
                Err(skipped) => skipped.as_str(),
            };
            match panes_by_result
                .iter_mut()
                .find(|(counted, _)| *counted == result)
            {
                Some((_, panes)) => *panes += 1,
                None => panes_by_result.push((result, 1)),
            }
        }
        for (result, panes) in panes_by_result {
            self.metrics
                .whole_city_panes
                .with_label_values(&[result])
                .inc_by(panes);
        }
        self.offer_changes(wall_millis);
    }

    /// The feed has read every output partition to its end: the history is replayed, and
    /// the alerts firing at its end that the alerts topic does not show are offered.
    pub fn on_read_to_end(&mut self, model: &CityModel, wall_millis: i64) {
        if !self.detector.is_catching_up() {
            return;
        }
        if let Some(watermark) = model.live_watermark_millis(wall_millis) {
            self.detector.hear_watermark(watermark, wall_millis);
        }
        let firing = self.detector.finish_catch_up(&self.registry);
        self.metrics.whole_city_catching_up.set(0);
        tracing::info!(
            firing = firing.len(),
            watermark = ?self.detector.watermark_millis(),
            "whole-city detector caught up"
        );
        self.changes.extend(
            firing
                .iter()
                .filter(|alert| !model.shows_alert(alert))
                .cloned(),
        );
        self.send(WholeCityUpdate::Firing(firing));
        self.offer_changes(wall_millis);
    }

    /// Once a second: reloaded rules, the whole city's watermark, and changes the alerts topic
    /// still does not show offered again.
    pub fn on_tick(&mut self, model: &CityModel, wall_millis: i64) {
        while let Ok(rules) = self.reloaded_rules.try_recv() {
            self.detector.replace_rules(&rules, &mut self.changes);
        }
        if let Some(watermark) = model.live_watermark_millis(wall_millis) {
            self.detector.hear_watermark(watermark, wall_millis);
        }
        self.detector
            .advance(wall_millis, &self.registry, &mut self.changes);
        self.offer_changes(wall_millis);
        self.unconfirmed.confirm(|alert| model.shows_alert(alert));
        let mut again = Vec::new();
        let counts = self.unconfirmed.due(wall_millis, &mut again);
        self.count_alerts("resent", counts.resent);
        self.count_alerts("given_up", counts.given_up);
        if !again.is_empty() {
            self.send(WholeCityUpdate::Publish(again));
        }
        if let Some(watermark) = self.detector.watermark_millis() {
            self.metrics
                .whole_city_watermark
                .set(watermark as f64 / 1000.0);
        }
        self.set_learned_history_seconds();
        if let Some(store) = self.learned_history.as_mut() {
            store.on_tick(&mut self.detector, wall_millis);
        }
    }

    fn offer_changes(&mut self, wall_millis: i64) {
        if self.changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        self.count_alerts("detected", changes.len());
        self.unconfirmed.offered(&changes, wall_millis);
        self.send(WholeCityUpdate::Publish(changes));
    }

    /// Hands changes to the pipeline task without waiting: a full channel only delays them
    /// to the next resend.
    fn send(&self, update: WholeCityUpdate) {
        if let Err(error) = self.publish.try_send(update) {
            tracing::debug!(%error, "whole-city alerts not handed to the pipeline task now; offered again later");
        }
    }

    fn count_alerts(&self, result: &str, count: usize) {
        if count > 0 {
            self.metrics
                .whole_city_alerts
                .with_label_values(&[result])
                .inc_by(count as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_the_detector_cannot_count_are_counted_in_the_metric_by_reason() {
        let registry = GridRegistry::embedded();
        let metrics = Arc::new(Metrics::new(&["kafka"], "test").unwrap());
        let rules = RuleSet::embedded_default(60_000).unwrap();
        let (publish, _updates) = mpsc::channel(4);
        let (_rules_sender, reloaded_rules) = mpsc::channel(1);
        let mut detection = WholeCityDetection::new(
            WholeCityDetector::new(&rules, crate::rules::Baseline::embedded()),
            registry.clone(),
            publish,
            reloaded_rules,
            metrics.clone(),
            None,
        );
        let pane = |grid_id: &str, length: i64| {
            OutputRecord::Window(crate::rules::whole_city::one_fraud_report_pane(
                &registry, grid_id, length,
            ))
        };
        let grid_id = registry.cells()[0].grid_id.clone();
        detection.on_records(
            &[
                pane("nowhere", 60_000),
                pane(&grid_id, 5 * 60_000),
                pane(&grid_id, 60_000),
            ],
            0,
        );
        let count = |result: &str| metrics.whole_city_panes.with_label_values(&[result]).get();
        assert_eq!(count("unknown_grid"), 1);
        assert_eq!(count("not_a_pane"), 1);
        assert_eq!(count("waiting"), 1, "read while catching up");
        assert_eq!(metrics.whole_city_catching_up.get(), 1);
    }
}
