//! The pipeline's Prometheus handles, resolved once per pipeline so that the per-record path
//! never looks a label set up, and one `record_*` method per thing the pipeline counts.
//!
//! What is counted per record or per window goes to prometheus' *local* counters (plain
//! integers owned by this pipeline) and reaches the shared metrics at [`PipelineMetrics::flush`]:
//! every [`FLUSH_EVERY_RECORDS`] records, whenever the shell writes a batch's outputs, and when
//! the pipeline is dropped. An atomic increment per counter per record cost more than all the
//! window arithmetic (5 % of a replay in `perf`); a scrape sees the counts of the last written
//! batch, which is what it would see anyway.

use std::sync::Arc;

use crate::dead_letter::DeadLetterReason;
use crate::grid::{Community, CommunityIndex, GridRegistry};
use crate::metrics::Metrics;
use crate::proto::{Alert, AlertStatus, EventType, IncidentEvent};
use prometheus::local::LocalIntCounter;

/// How many fast-clock sources one pipeline names in its log before it only counts them.
const MAX_CLOCK_AHEAD_SOURCES_LOGGED: usize = 1024;

/// Records after which the local counters are flushed even if the shell never asks.
const FLUSH_EVERY_RECORDS: u32 = 4096;

/// Event type numbers per community in `incident_counters` (0 = unspecified … 23).
const INCIDENT_TYPE_SLOTS: usize = crate::event::ALL_EVENT_TYPES.len() + 1;

/// What one pipeline counts, and where.
pub(super) struct PipelineMetrics {
    /// The registry of every metric.
    metrics: Arc<Metrics>,
    /// `gridwatch_events_accepted_total` of this source, indexed by event type number.
    accepted_by_type: Vec<LocalIntCounter>,
    /// `gridwatch_dead_letters_total`, indexed by [`DeadLetterReason::index`].
    dead_letters_by_reason: Vec<prometheus::IntCounter>,
    /// Duplicates of this source.
    duplicates: LocalIntCounter,
    /// Records received from this source.
    received: LocalIntCounter,
    /// Records of this source that decoded.
    decoded: LocalIntCounter,
    /// `gridwatch_incidents_total` handles, resolved on first use, indexed by community
    /// index × [`INCIDENT_TYPE_SLOTS`] + event type number.
    incident_counters: Vec<Option<LocalIntCounter>>,
    /// The slots of `incident_counters` counted since the last flush, each once: a flush
    /// visits these rather than every handle of every community and type (thousands, most
    /// untouched since the last flush: walking them all was 1.3 % of a windows-only replay's
    /// `perf` samples, for 0.2 % of its instructions).
    incident_slots_to_flush: Vec<usize>,
    /// `gridwatch_windows_emitted_total`.
    windows_emitted: LocalIntCounter,
    /// `gridwatch_window_emit_delay_seconds` (`None` once a replay turned it off).
    window_emit_delay: Option<prometheus::local::LocalHistogram>,
    /// Records counted since the last flush.
    records_since_flush: u32,
    /// Sources already logged as running ahead (at most [`MAX_CLOCK_AHEAD_SOURCES_LOGGED`]),
    /// so a fast clock is named once, not on every event; the metric counts every event.
    clock_ahead_sources_logged: rustc_hash::FxHashSet<u64>,
}

impl PipelineMetrics {
    /// The handles of `source_name` in `metrics`.
    pub(super) fn new(metrics: Arc<Metrics>, source_name: &'static str) -> PipelineMetrics {
        let accepted_by_type = (0..=crate::event::ALL_EVENT_TYPES.len() as i32)
            .map(|number| {
                let name = EventType::try_from(number)
                    .map(|event_type| event_type.as_str_name())
                    .unwrap_or("EVENT_TYPE_UNSPECIFIED");
                metrics
                    .events_accepted
                    .with_label_values(&[source_name, name])
                    .local()
            })
            .collect();
        let dead_letters_by_reason = DeadLetterReason::ALL
            .iter()
            .map(|reason| metrics.dead_letters.with_label_values(&[reason.as_str()]))
            .collect();
        PipelineMetrics {
            duplicates: metrics
                .events_duplicate
                .with_label_values(&[source_name])
                .local(),
            received: metrics
                .events_received
                .with_label_values(&[source_name])
                .local(),
            decoded: metrics
                .events_decoded
                .with_label_values(&[source_name])
                .local(),
            accepted_by_type,
            dead_letters_by_reason,
            incident_counters: Vec::new(),
            incident_slots_to_flush: Vec::new(),
            windows_emitted: metrics.windows_emitted.local(),
            window_emit_delay: Some(metrics.window_emit_delay.local()),
            records_since_flush: 0,
            clock_ahead_sources_logged: rustc_hash::FxHashSet::default(),
            metrics,
        }
    }

    /// A record arrived.
    pub(super) fn record_received(&mut self) {
        self.received.inc();
        self.records_since_flush += 1;
        if self.records_since_flush >= FLUSH_EVERY_RECORDS {
            self.flush();
        }
    }

    /// Adds the local counts to the shared metrics.
    pub(super) fn flush(&mut self) {
        self.records_since_flush = 0;
        self.received.flush();
        self.decoded.flush();
        self.duplicates.flush();
        self.windows_emitted.flush();
        if let Some(window_emit_delay) = &self.window_emit_delay {
            window_emit_delay.flush();
        }
        for counter in &self.accepted_by_type {
            counter.flush();
        }
        for slot in self.incident_slots_to_flush.drain(..) {
            if let Some(Some(counter)) = self.incident_counters.get(slot) {
                counter.flush();
            }
        }
    }

    /// A record decoded.
    pub(super) fn record_decoded(&self) {
        self.decoded.inc();
    }

    /// A re-sent event was recognised.
    pub(super) fn record_duplicate(&self) {
        self.duplicates.inc();
    }

    /// An event was accepted into its window.
    pub(super) fn record_accepted(&self, event_type: EventType) {
        if let Some(counter) = self.accepted_by_type.get(event_type as usize) {
            counter.inc();
        }
    }

    /// A record was dead-lettered.
    pub(super) fn record_dead_letter(&self, reason: DeadLetterReason) {
        if let Some(counter) = self.dead_letters_by_reason.get(reason.index()) {
            counter.inc();
        }
    }

    /// An event arrived after its window was final.
    pub(super) fn record_late_event(&self) {
        self.metrics.late_events.inc();
    }

    /// An accepted incident of `community` (at `community_index`): incidents per community
    /// and type, and the fraud warning and dissuasion counters.
    pub(super) fn record_incident(
        &mut self,
        community_index: CommunityIndex,
        community: &Community,
        event_type: EventType,
    ) {
        let slot = (community_index.0 as usize)
            .saturating_mul(INCIDENT_TYPE_SLOTS)
            .saturating_add(event_type as usize);
        if self.incident_counters.len() <= slot {
            self.incident_counters.resize(slot + 1, None);
        }
        if let Some(handle) = self.incident_counters.get_mut(slot) {
            let counter = handle.get_or_insert_with(|| {
                self.metrics
                    .incidents
                    .with_label_values(&[
                        community.district_code.as_str(),
                        community.id.as_str(),
                        event_type.as_str_name(),
                    ])
                    .local()
            });
            if counter.get() == 0 {
                self.incident_slots_to_flush.push(slot);
            }
            counter.inc();
        }
        let fraud_labels = [community.district_code.as_str(), community.id.as_str()];
        match event_type {
            EventType::FraudWarning => self
                .metrics
                .fraud
                .warnings
                .with_label_values(&fraud_labels)
                .inc(),
            EventType::FraudDissuaded => self
                .metrics
                .fraud
                .dissuaded
                .with_label_values(&fraud_labels)
                .inc(),
            _ => {}
        }
    }

    /// A dissuasion was paired with its warning `seconds` later.
    pub(super) fn record_warning_to_dissuasion(&self, district_code: &str, seconds: f64) {
        self.metrics
            .fraud
            .warning_to_dissuasion_seconds
            .with_label_values(&[district_code])
            .observe(seconds);
    }

    /// Counts (and logs, once per source) an event held ahead of its partition's event time:
    /// the device's clock is wrong and someone has to fix it.
    pub(super) fn record_clock_ahead(
        &mut self,
        registry: &GridRegistry,
        event: &IncidentEvent,
        source_key: u64,
        lead_millis: i64,
    ) {
        let registered_device = registry.device(&event.device_id).is_some();
        let device_label = if registered_device {
            event.device_id.as_str()
        } else {
            "unregistered"
        };
        self.metrics
            .clock_ahead_events
            .with_label_values(&[device_label])
            .inc();
        if self.clock_ahead_sources_logged.len() >= MAX_CLOCK_AHEAD_SOURCES_LOGGED
            || !self.clock_ahead_sources_logged.insert(source_key)
        {
            return;
        }
        tracing::warn!(
            device_id = device_label,
            lead_seconds = lead_millis / 1000,
            "event time far ahead of its partition: the watermark ignores this clock until other sources corroborate it"
        );
    }

    /// A final window was emitted at wall time `wall_millis`.
    pub(super) fn record_window_emitted(&self, window_end_millis: i64, wall_millis: i64) {
        if let Some(window_emit_delay) = &self.window_emit_delay {
            window_emit_delay
                .observe(wall_millis.saturating_sub(window_end_millis).max(0) as f64 / 1000.0);
        }
        self.windows_emitted.inc();
    }

    /// Stops observing `gridwatch_window_emit_delay_seconds` (see
    /// [`super::Pipeline::without_emit_delay`]).
    pub(super) fn stop_observing_emit_delay(&mut self) {
        self.window_emit_delay = None;
    }
}

/// Counts alert state changes emitted at wall time `wall_millis` (by rule and status, late,
/// suppressed, latency): a pipeline's, and the whole-city detector's where this instance
/// publishes them.
pub(crate) fn record_alert_changes(metrics: &Metrics, alerts: &[Alert], wall_millis: i64) {
    for alert in alerts {
        let firing = alert.status == AlertStatus::Firing as i32;
        let status = if alert.status == AlertStatus::Resolved as i32 {
            "resolved"
        } else {
            "firing"
        };
        metrics
            .alerts
            .with_label_values(&[alert.rule.as_str(), status])
            .inc();
        if alert.late {
            metrics
                .late_alerts
                .with_label_values(&[alert.rule.as_str()])
                .inc();
        }
        if firing && !alert.suppressed_by.is_empty() {
            metrics
                .alerts_maintenance_suppressed
                .with_label_values(&[alert.rule.as_str()])
                .inc();
        }
        if !firing {
            continue;
        }
        if let Some(updated_at) = alert.updated_at.as_ref().or(alert.starts_at.as_ref()) {
            let latency_millis =
                wall_millis.saturating_sub(crate::time::timestamp_to_millis(updated_at));
            metrics
                .alert_latency
                .with_label_values(&[alert.rule_kind.as_str()])
                .observe(latency_millis.max(0) as f64 / 1000.0);
        }
    }
}

impl Drop for PipelineMetrics {
    /// A revoked partition's or a finished replay's last counts are not lost.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn community(id: &str) -> Community {
        Community {
            id: id.to_string(),
            name: String::new(),
            district_code: "410602".to_string(),
            population: 1,
            centroid: (0.0, 0.0),
            cells: Vec::new(),
        }
    }

    fn incidents(metrics: &Metrics, community_id: &str, event_type: &str) -> u64 {
        metrics
            .incidents
            .with_label_values(&["410602", community_id, event_type])
            .get()
    }

    /// A flush adds what each community and type counted since the last one, whether the
    /// handle is new, counted again after a flush, or left alone for a while; nothing is
    /// added twice.
    #[test]
    fn each_flush_adds_the_incidents_counted_since_the_last_one() {
        let metrics = Arc::new(Metrics::new(&["test"], "v1").unwrap());
        let mut pipeline_metrics = PipelineMetrics::new(Arc::clone(&metrics), "test");
        let (first, second) = (community("410602001001"), community("410602001002"));
        for _ in 0..3 {
            pipeline_metrics.record_incident(CommunityIndex(0), &first, EventType::FireSmoke);
        }
        pipeline_metrics.record_incident(CommunityIndex(1), &second, EventType::Tailgating);
        assert_eq!(incidents(&metrics, "410602001001", "FIRE_SMOKE"), 0);
        assert_eq!(pipeline_metrics.incident_slots_to_flush.len(), 2);
        pipeline_metrics.flush();
        assert!(pipeline_metrics.incident_slots_to_flush.is_empty());
        assert_eq!(incidents(&metrics, "410602001001", "FIRE_SMOKE"), 3);
        assert_eq!(incidents(&metrics, "410602001002", "TAILGATING"), 1);
        pipeline_metrics.record_incident(CommunityIndex(0), &first, EventType::FireSmoke);
        pipeline_metrics.flush();
        pipeline_metrics.flush();
        assert_eq!(incidents(&metrics, "410602001001", "FIRE_SMOKE"), 4);
        assert_eq!(incidents(&metrics, "410602001002", "TAILGATING"), 1);
        pipeline_metrics.record_incident(CommunityIndex(1), &second, EventType::Tailgating);
        pipeline_metrics.record_incident(CommunityIndex(1), &second, EventType::FireSmoke);
        drop(pipeline_metrics);
        assert_eq!(incidents(&metrics, "410602001002", "TAILGATING"), 2);
        assert_eq!(incidents(&metrics, "410602001002", "FIRE_SMOKE"), 1);
    }
}
