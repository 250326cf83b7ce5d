//! Prometheus metrics. One [`Metrics`] per running pipeline, with its own registry (no global
//! state), so tests can run several services in one process.
//!
//! Naming follows Prometheus conventions: `gridwatch_` prefix, base units (`_seconds`),
//! `_total` for counters. Label values are bounded: event types, dead-letter reasons, sources,
//! rule names from the validated rules file, severities 1–4.

// No panic path reachable from input, state or configuration (README "Security").

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::dead_letter::DeadLetterReason;
use crate::event::ALL_EVENT_TYPES;

/// Every metric gridwatch exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry that `/metrics` encodes.
    pub registry: Registry,
    /// Records handed to the pipeline, by source.
    pub events_received: IntCounterVec,
    /// Records that decoded into an `IncidentEvent` (before validation), by source.
    pub events_decoded: IntCounterVec,
    /// Events accepted into windows, by source and event type.
    pub events_accepted: IntCounterVec,
    /// Re-sent events recognised by event id, by source.
    pub events_duplicate: IntCounterVec,
    /// Rejected inputs, by reason.
    pub dead_letters: IntCounterVec,
    /// Events whose window was already final.
    pub late_events: IntCounter,
    /// Partition states at assignment or start, by store (file, kafka) and how they started
    /// (restored, empty, invalid: a snapshot that did not fit was refused).
    pub state_restores: IntCounterVec,
    /// Life-safety (immediate) alert changes raised by late events, by rule: the window was
    /// final, the alarm still went out.
    pub late_alerts: IntCounterVec,
    /// Accepted events whose time was too far ahead of their partition to move the watermark
    /// (a fast device clock), by device: registered device ids only, else "unregistered".
    pub clock_ahead_events: IntCounterVec,
    /// Final windows emitted.
    pub windows_emitted: IntCounter,
    /// Alert state changes, by rule and status (firing, resolved).
    pub alerts: IntCounterVec,
    /// Currently firing alerts, by rule and severity.
    pub alerts_active: IntGaugeVec,
    /// Repeats absorbed by a rule's per-device cooldown, by rule.
    pub alerts_suppressed: IntCounterVec,
    /// FIRING alert changes inside a maintenance window (tracked, not paged), by rule.
    pub alerts_maintenance_suppressed: IntCounterVec,
    /// Current operator watermark as a Unix time.
    pub watermark_timestamp: Gauge,
    /// Wall clock minus the watermark.
    pub watermark_lag: Gauge,
    /// Wall time spent processing each batch of records.
    pub processing_latency: Histogram,
    /// Wall time the pipeline spent handing each batch's outputs to each sink.
    pub output_write_seconds: HistogramVec,
    /// From the end of a window (event time) to its emission (wall time).
    pub window_emit_delay: Histogram,
    /// From an alerting event's `occurred_at` to the alert's emission (wall time), by rule kind.
    pub alert_latency: HistogramVec,
    /// Open panes (cell × type × window) held in memory.
    pub open_panes: IntGauge,
    /// Event ids remembered for dedup.
    pub dedup_entries: IntGauge,
    /// Size of the last state snapshot.
    pub state_snapshot_bytes: IntGauge,
    /// Output records that could not be written, by sink.
    pub sink_errors: IntCounterVec,
    /// Output records the city-wide read model received, by kind and result (`applied` or
    /// why not).
    pub read_model_records: IntCounterVec,
    /// How far the city-wide read model trails the output topics it reads (0 when caught up
    /// to their ends).
    pub read_model_lag_seconds: Gauge,
    /// Output-topic records the read model could not decode (skipped), by topic.
    pub read_model_undecodable: IntCounterVec,
    /// Windows-topic panes the whole-city detector read, by result (`counted`, `waiting`,
    /// `counted_late`, `unchanged`, or why skipped).
    pub whole_city_panes: IntCounterVec,
    /// Whole-city alert changes by result: `detected`, `published` (this instance owns
    /// partition 0), `not_publisher`, `resent`, `given_up`.
    pub whole_city_alerts: IntCounterVec,
    /// The whole-city detector's event time, epoch seconds (0 before its first advance).
    pub whole_city_watermark: Gauge,
    /// 1 while the whole-city detector reads back its history, else 0.
    pub whole_city_catching_up: IntGauge,
    /// The whole-city detector's learned history on the state topic, by result (`restored`,
    /// `none`, `refused`, `read_failed`, `written`, `write_failed`).
    pub whole_city_learned_history: IntCounterVec,
    /// Closed history behind the whole-city detector's learned levels, seconds.
    pub whole_city_learned_history_seconds: IntGauge,
    /// Build information (always 1).
    pub build_info: IntGaugeVec,
    /// Version (hash) of the loaded rules file (always 1).
    pub rules_version: IntGaugeVec,
    /// Rules reload attempts, by trigger (sighup, file_change) and result (applied, unchanged, invalid).
    pub rules_reloads: IntCounterVec,
    /// Process start time.
    pub start_time: Gauge,
    /// Incidents in each registered cell over the views (15m, 1h, 24h), by cell.
    pub cell_incidents: GaugeVec,
    /// Accepted incident events (crate::event::is_incident), by district, community and type.
    pub incidents: IntCounterVec,
    /// The fraud target's metrics.
    pub fraud: FraudMetrics,
    /// Events of every type from each registered community over the views: every community
    /// has a series (0 when silent), so an alert can notice a community whose devices stopped
    /// reporting (162 communities × views: bounded).
    pub community_events: GaugeVec,
    /// One series per registered community (value 1) carrying its and its district's names, so
    /// dashboards can join names onto the per-community series by `community`.
    pub community_info: IntGaugeVec,
    /// One series per registered grid cell (value 1) carrying its centroid (WGS-84), so the
    /// Grafana geomap can place per-cell series by joining on `grid` (1 911 cells: bounded).
    pub cell_info: IntGaugeVec,
    /// Alert deliveries by sink (alertmanager, webhook) and result (sent, failed, retried,
    /// suppressed), one per alert state change and destination.
    pub alert_deliveries: IntCounterVec,
    /// Alerts dropped because a delivery queue was full, by sink.
    pub alert_delivery_dropped: IntCounterVec,
    /// From an alert's hand-off to a sink to the receiver's acknowledgement, by sink.
    pub alert_delivery_latency: HistogramVec,
    /// Records the broker acknowledged on a Kafka output topic, by topic.
    pub kafka_produced: IntCounterVec,
    /// Records lost on a Kafka output topic (queue full past its grace, or delivery failed),
    /// by topic.
    pub kafka_produce_errors: IntCounterVec,
    /// The Kafka consumer: lag, watermarks, rebalances, state snapshots, commits.
    pub kafka: KafkaMetrics,
}

/// The `sink` label values of the alert delivery metrics.
pub const ALERT_SINKS: [&str; 2] = ["alertmanager", "webhook"];

/// The `result` label values of `gridwatch_alert_deliveries_total`.
pub const ALERT_DELIVERY_RESULTS: [&str; 4] = ["sent", "failed", "retried", "suppressed"];

/// Latency buckets from 1 ms to ~10 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of one batch's write to one sink, from 0.1 ms (a batch of about a thousand
/// outputs takes about 0.5 ms to the files and 1–2 ms to Kafka) to 10 s (a full producer queue).
const SINK_WRITE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Errors building metrics.
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric, pre-creating the bounded label sets so that
    /// dashboards see zero-valued series before the first event.
    pub fn new(sources: &[&str], rules_file_version: &str) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let events_received = IntCounterVec::new(
            Opts::new(
                "gridwatch_events_received_total",
                "Records handed to the pipeline by a source.",
            ),
            &["source"],
        )?;
        let events_decoded = IntCounterVec::new(
            Opts::new(
                "gridwatch_events_decoded_total",
                "Records that decoded into an IncidentEvent (JSON or protobuf), before validation, by source.",
            ),
            &["source"],
        )?;
        let events_accepted = IntCounterVec::new(
            Opts::new(
                "gridwatch_events_accepted_total",
                "Events accepted into event-time windows (valid, located, not duplicate, not late).",
            ),
            &["source", "event_type"],
        )?;
        let events_duplicate = IntCounterVec::new(
            Opts::new(
                "gridwatch_events_duplicate_total",
                "Re-sent events recognised by event_id within the dedup horizon and counted once.",
            ),
            &["source"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "gridwatch_dead_letters_total",
                "Rejected inputs written to the dead-letter output, by reason.",
            ),
            &["reason"],
        )?;
        let late_events = IntCounter::new(
            "gridwatch_late_events_total",
            "Events whose window was already final when they arrived (also dead-lettered as reason=late).",
        )?;
        let state_restores = IntCounterVec::new(
            Opts::new(
                "gridwatch_state_restores_total",
                "Partition states at assignment or start, by store (file, kafka) and result: restored, empty, or invalid (a snapshot that does not fit the running settings or registry was refused; the partition started empty from its committed offset).",
            ),
            &["store", "result"],
        )?;
        for store in ["file", "kafka"] {
            for result in ["restored", "empty", "invalid"] {
                state_restores.with_label_values(&[store, result]);
            }
        }
        let late_alerts = IntCounterVec::new(
            Opts::new(
                "gridwatch_late_alerts_total",
                "Life-safety alert changes raised by events whose window was already final (the event is also dead-lettered as late), by rule.",
            ),
            &["rule"],
        )?;
        let clock_ahead_events = IntCounterVec::new(
            Opts::new(
                "gridwatch_clock_ahead_events_total",
                "Accepted events too far ahead of their partition's event time to move the watermark (window.clock_jump_tolerance), by registered device id (else unregistered): a device clock to fix.",
            ),
            &["device_id"],
        )?;
        let windows_emitted = IntCounter::new(
            "gridwatch_windows_emitted_total",
            "Final (cell, event type) windows emitted.",
        )?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "gridwatch_alerts_total",
                "Alert state changes emitted, by rule and status.",
            ),
            &["rule", "status"],
        )?;
        let alerts_active = IntGaugeVec::new(
            Opts::new(
                "gridwatch_alerts_active",
                "Alerts currently firing, by rule and severity (1 most severe).",
            ),
            &["rule", "severity"],
        )?;
        let alerts_suppressed = IntCounterVec::new(
            Opts::new(
                "gridwatch_alerts_suppressed_total",
                "Repeat events absorbed by a rule's per-device cooldown instead of raising a new alert.",
            ),
            &["rule"],
        )?;
        let alerts_maintenance_suppressed = IntCounterVec::new(
            Opts::new(
                "gridwatch_alerts_maintenance_suppressed_total",
                "Firing alert changes inside a maintenance window of the rules file: written and tracked, never paged.",
            ),
            &["rule"],
        )?;
        let watermark_timestamp = Gauge::new(
            "gridwatch_watermark_timestamp_seconds",
            "Current event-time watermark as a Unix time.",
        )?;
        let watermark_lag = Gauge::new(
            "gridwatch_watermark_lag_seconds",
            "Wall clock minus the event-time watermark.",
        )?;
        let processing_latency = Histogram::with_opts(
            HistogramOpts::new(
                "gridwatch_processing_latency_seconds",
                "Wall time from a batch of records reaching the pipeline to its outputs being handed to the sinks.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let output_write_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gridwatch_output_write_seconds",
                "Wall time the pipeline spent handing one batch's outputs to a sink (kafka: encoding and queueing the records in the producer; file: writing the JSONL lines; read_model; delivery).",
            )
            .buckets(SINK_WRITE_BUCKETS.to_vec()),
            &["sink"],
        )?;
        let window_emit_delay = Histogram::with_opts(
            HistogramOpts::new(
                "gridwatch_window_emit_delay_seconds",
                "Wall time at a window's emission minus the window's end (event time).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let alert_latency = HistogramVec::new(
            HistogramOpts::new(
                "gridwatch_alert_latency_seconds",
                "Wall time at an alert's emission minus the occurred_at of the event that triggered it.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["rule_kind"],
        )?;
        let open_panes = IntGauge::new(
            "gridwatch_open_panes",
            "Open (cell, event type, window) panes held in memory.",
        )?;
        let dedup_entries = IntGauge::new(
            "gridwatch_dedup_entries",
            "Event ids remembered for deduplication.",
        )?;
        let state_snapshot_bytes = IntGauge::new(
            "gridwatch_state_snapshot_bytes",
            "Size of the last pipeline state snapshot.",
        )?;
        let sink_errors = IntCounterVec::new(
            Opts::new(
                "gridwatch_sink_errors_total",
                "Output records that could not be written, by sink.",
            ),
            &["sink"],
        )?;
        let read_model_records = IntCounterVec::new(
            Opts::new(
                "gridwatch_read_model_records_total",
                "Output records the city-wide read model received, by kind and result (applied, or why not).",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(read_model_records.clone()))?;
        let read_model_lag_seconds = Gauge::new(
            "gridwatch_read_model_lag_seconds",
            "How far the city-wide read model trails the output topics it reads: wall time minus the newest record read, 0 when caught up to their ends.",
        )?;
        registry.register(Box::new(read_model_lag_seconds.clone()))?;
        let whole_city_panes = IntCounterVec::new(
            Opts::new(
                "gridwatch_whole_city_panes_total",
                "Windows-topic panes the whole-city detector (district, cluster and city rules with Kafka) read, by result: counted, waiting, counted_late, unchanged, or why skipped.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(whole_city_panes.clone()))?;
        let whole_city_alerts = IntCounterVec::new(
            Opts::new(
                "gridwatch_whole_city_alerts_total",
                "Whole-city alert changes by result: detected, published (this instance owns input partition 0), not_publisher, resent (not yet seen on the alerts topic), given_up.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(whole_city_alerts.clone()))?;
        let whole_city_watermark = Gauge::new(
            "gridwatch_whole_city_watermark_timestamp_seconds",
            "Event time up to which the whole-city detector has evaluated, epoch seconds (0 before its first advance).",
        )?;
        registry.register(Box::new(whole_city_watermark.clone()))?;
        let whole_city_catching_up = IntGauge::new(
            "gridwatch_whole_city_catching_up",
            "1 while the whole-city detector reads back the windows topic's history after a start, else 0.",
        )?;
        registry.register(Box::new(whole_city_catching_up.clone()))?;
        let whole_city_learned_history = IntCounterVec::new(
            Opts::new(
                "gridwatch_whole_city_learned_history_total",
                "The whole-city detector's learned history on the state topic, kept across restarts, by result: restored, none (nothing to restore), refused (undecodable or of other seeds), read_failed, written (by the instance publishing whole-city alerts), write_failed.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(whole_city_learned_history.clone()))?;
        let whole_city_learned_history_seconds = IntGauge::new(
            "gridwatch_whole_city_learned_history_seconds",
            "Closed history behind the whole-city detector's learned levels, seconds (whole hours, of its learned type with the most); the level's weight grows with it, up to [baseline] weeks.",
        )?;
        registry.register(Box::new(whole_city_learned_history_seconds.clone()))?;
        let read_model_undecodable = IntCounterVec::new(
            Opts::new(
                "gridwatch_read_model_undecodable_total",
                "Output-topic records the city-wide read model could not decode and skipped, by topic.",
            ),
            &["topic"],
        )?;
        registry.register(Box::new(read_model_undecodable.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gridwatch_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        let rules_version = IntGaugeVec::new(
            Opts::new(
                "gridwatch_rules_version_info",
                "Hash of the loaded rules file; the value is always 1.",
            ),
            &["version"],
        )?;
        let rules_reloads = IntCounterVec::new(
            Opts::new(
                "gridwatch_rules_reloads_total",
                "Rules file reload attempts, by trigger and result; an invalid file leaves the running rules in place.",
            ),
            &["trigger", "result"],
        )?;
        let start_time = Gauge::new(
            "gridwatch_start_time_seconds",
            "Unix time at which the process started its pipeline.",
        )?;
        let cell_incidents = GaugeVec::new(
            Opts::new(
                "gridwatch_cell_incidents",
                "Incidents (all incident types) in one registered grid cell over a sliding view of closed panes.",
            ),
            &["district", "community", "grid", "view"],
        )?;

        let alert_deliveries = IntCounterVec::new(
            Opts::new(
                "gridwatch_alert_deliveries_total",
                "Alert state changes delivered per destination, by sink and result: sent (acknowledged), failed (given up after retries or rejected), retried (one per retry), suppressed (tracked but not paged).",
            ),
            &["sink", "result"],
        )?;
        let alert_delivery_dropped = IntCounterVec::new(
            Opts::new(
                "gridwatch_alert_delivery_dropped_total",
                "Alerts dropped (oldest first) because a sink's delivery queue was full.",
            ),
            &["sink"],
        )?;
        let alert_delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                "gridwatch_alert_delivery_latency_seconds",
                "Wall time from an alert's hand-off to a sink to the receiver's acknowledgement, queueing and retries included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["sink"],
        )?;

        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(events_decoded.clone()))?;
        registry.register(Box::new(events_accepted.clone()))?;
        registry.register(Box::new(events_duplicate.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(late_events.clone()))?;
        registry.register(Box::new(late_alerts.clone()))?;
        registry.register(Box::new(state_restores.clone()))?;
        registry.register(Box::new(clock_ahead_events.clone()))?;
        registry.register(Box::new(windows_emitted.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(alerts_active.clone()))?;
        registry.register(Box::new(alerts_suppressed.clone()))?;
        registry.register(Box::new(alerts_maintenance_suppressed.clone()))?;
        registry.register(Box::new(watermark_timestamp.clone()))?;
        registry.register(Box::new(watermark_lag.clone()))?;
        registry.register(Box::new(processing_latency.clone()))?;
        registry.register(Box::new(output_write_seconds.clone()))?;
        registry.register(Box::new(window_emit_delay.clone()))?;
        registry.register(Box::new(alert_latency.clone()))?;
        registry.register(Box::new(open_panes.clone()))?;
        registry.register(Box::new(dedup_entries.clone()))?;
        registry.register(Box::new(state_snapshot_bytes.clone()))?;
        registry.register(Box::new(sink_errors.clone()))?;
        let community_events = GaugeVec::new(
            Opts::new(
                "gridwatch_community_events",
                "Events (all types) from one registered community over a sliding view; 0 when the community is silent.",
            ),
            &["district", "community", "view"],
        )?;
        let community_info = IntGaugeVec::new(
            Opts::new(
                "gridwatch_community_info",
                "Names of a registered community and of its district; the value is always 1.",
            ),
            &["district", "district_name", "community", "name"],
        )?;

        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(rules_version.clone()))?;
        registry.register(Box::new(rules_reloads.clone()))?;
        registry.register(Box::new(start_time.clone()))?;
        registry.register(Box::new(cell_incidents.clone()))?;
        let incidents = IntCounterVec::new(
            Opts::new(
                "gridwatch_incidents_total",
                "Accepted incident events (every type but DEVICE_OFFLINE and VIDEO_LOSS), by district, community and event type.",
            ),
            &["district", "community", "event_type"],
        )?;
        registry.register(Box::new(incidents.clone()))?;
        let fraud = FraudMetrics::register(&registry)?;
        registry.register(Box::new(community_events.clone()))?;
        registry.register(Box::new(community_info.clone()))?;
        let cell_info = IntGaugeVec::new(
            Opts::new(
                "gridwatch_cell_info",
                "Centroid of a registered grid cell (WGS-84 degrees) for map panels; the value is always 1.",
            ),
            // No district / community: `grid` joins them from the per-cell series, and these
            // 1 911 series stay small in every scrape.
            &["grid", "latitude", "longitude"],
        )?;
        registry.register(Box::new(cell_info.clone()))?;
        registry.register(Box::new(alert_deliveries.clone()))?;
        registry.register(Box::new(alert_delivery_dropped.clone()))?;
        registry.register(Box::new(alert_delivery_latency.clone()))?;
        let kafka_produced = IntCounterVec::new(
            Opts::new(
                "gridwatch_kafka_produced_total",
                "Records acknowledged by the broker on a Kafka output topic, by topic.",
            ),
            &["topic"],
        )?;
        let kafka_produce_errors = IntCounterVec::new(
            Opts::new(
                "gridwatch_kafka_produce_errors_total",
                "Records lost on a Kafka output topic (producer queue full past its grace, or delivery failed), by topic.",
            ),
            &["topic"],
        )?;
        registry.register(Box::new(kafka_produced.clone()))?;
        registry.register(Box::new(kafka_produce_errors.clone()))?;
        let kafka = KafkaMetrics::register(&registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        for source in sources {
            events_received.with_label_values(&[*source]);
            events_decoded.with_label_values(&[*source]);
            events_duplicate.with_label_values(&[*source]);
            for event_type in ALL_EVENT_TYPES {
                events_accepted.with_label_values(&[*source, event_type.as_str_name()]);
            }
        }
        for reason in DeadLetterReason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        // The file sink exists in every deployment that writes outputs: a zero series lets
        // the sink-error panel and alert see it before the first error.
        sink_errors.with_label_values(&["file"]);
        for kind in crate::rules::RULE_KIND_NAMES {
            alert_latency.with_label_values(&[kind]);
        }
        for sink in ALERT_SINKS {
            alert_delivery_dropped.with_label_values(&[sink]);
            alert_delivery_latency.with_label_values(&[sink]);
            for result in ALERT_DELIVERY_RESULTS {
                alert_deliveries.with_label_values(&[sink, result]);
            }
        }
        for trigger in ["sighup", "file_change"] {
            for result in ["applied", "unchanged", "invalid"] {
                rules_reloads.with_label_values(&[trigger, result]);
            }
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        rules_version
            .with_label_values(&[rules_file_version])
            .set(1);
        start_time.set(crate::time::wall_clock_millis() as f64 / 1000.0);

        Ok(Metrics {
            registry,
            events_received,
            events_decoded,
            events_accepted,
            events_duplicate,
            dead_letters,
            late_events,
            state_restores,
            late_alerts,
            clock_ahead_events,
            windows_emitted,
            alerts,
            alerts_active,
            alerts_suppressed,
            alerts_maintenance_suppressed,
            watermark_timestamp,
            watermark_lag,
            processing_latency,
            output_write_seconds,
            window_emit_delay,
            alert_latency,
            open_panes,
            dedup_entries,
            state_snapshot_bytes,
            sink_errors,
            read_model_records,
            read_model_lag_seconds,
            read_model_undecodable,
            whole_city_panes,
            whole_city_alerts,
            whole_city_watermark,
            whole_city_catching_up,
            whole_city_learned_history,
            whole_city_learned_history_seconds,
            build_info,
            rules_version,
            rules_reloads,
            start_time,
            cell_incidents,
            incidents,
            fraud,
            community_events,
            community_info,
            cell_info,
            alert_deliveries,
            alert_delivery_dropped,
            alert_delivery_latency,
            kafka_produced,
            kafka_produce_errors,
            kafka,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode_text(&self) -> String {
        let metric_families = self.registry.gather();
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&metric_families, &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Scope labels of the fraud gauges: `scope` is `city`, `district` or `community`; `district`
/// and `community` are empty for the coarser scopes (always filter on `scope`).
const FRAUD_SCOPE_LABELS: &[&str] = &["scope", "district", "community"];

/// Buckets of the warning-to-dissuasion time: 1 min to 30 days.
const WARNING_TO_DISSUASION_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
    2592000.0,
];

/// The fraud target's metrics (see `src/fraud/`). The gauges are rewritten from the city-wide
/// `FraudReport` of the read model, so every instance exports the same whole-city series
/// (aggregate over instances with `max without (instance)`, never `sum`); the counters and the
/// histogram move with the events this instance accepted (sum them over instances). Label
/// values are registry district codes and community ids only.
#[derive(Clone)]
pub struct FraudMetrics {
    /// Cases (configured case types) year to date, per community and source (`imported`,
    /// `streamed`).
    pub cases_ytd: IntGaugeVec,
    /// Residents per community (sum them before dividing).
    pub population: IntGaugeVec,
    /// Baseline cases expected over the covered time, per community.
    pub baseline_cases_covered: GaugeVec,
    /// Cases of the whole baseline year, per community.
    pub baseline_full_year_cases: IntGaugeVec,
    /// The verdict as a state set: 1 on the current `status`, 0 on the others, by scope.
    pub status: GaugeVec,
    /// Observed time this year in seconds, by scope.
    pub covered_seconds: GaugeVec,
    /// Observed days ÷ elapsed days, by scope.
    pub coverage_ratio: GaugeVec,
    /// Lower bound of the projected year-end drop.
    pub projected_drop_ci_low: GaugeVec,
    /// Upper bound of the projected year-end drop.
    pub projected_drop_ci_high: GaugeVec,
    /// Observed time needed for a verdict, seconds.
    pub minimum_coverage_seconds: Gauge,
    /// Input partitions that carried a community's events, for communities on more than one.
    pub community_input_partitions: GaugeVec,
    /// Cases per 10,000 residents, year to date, by scope.
    pub incidence_per_10k: GaugeVec,
    /// Baseline cases per 10,000 residents over the same period of the baseline year.
    pub baseline_incidence_per_10k: GaugeVec,
    /// Drop = 1 − rate ratio vs the baseline's same period.
    pub drop_ratio: GaugeVec,
    /// Lower bound of the drop's exact interval.
    pub drop_ci_low: GaugeVec,
    /// Upper bound of the drop's exact interval.
    pub drop_ci_high: GaugeVec,
    /// Projected year-end drop vs the full baseline year.
    pub projected_drop_ratio: GaugeVec,
    /// Projected year-end cases per 10,000 residents.
    pub projected_incidence_per_10k: GaugeVec,
    /// 1 when the projected drop reaches the target, else 0.
    pub on_track: GaugeVec,
    /// Dissuaded ÷ warnings, year to date.
    pub dissuasion_ratio: GaugeVec,
    /// The target drop (0.6): the line on the dashboard.
    pub target_drop_ratio: Gauge,
    /// Accepted FRAUD_WARNING events, per community.
    pub warnings: IntCounterVec,
    /// Accepted FRAUD_DISSUADED events, per community.
    pub dissuaded: IntCounterVec,
    /// Warning-to-dissuasion time of paired dissuasions, by district.
    pub warning_to_dissuasion_seconds: HistogramVec,
}

impl FraudMetrics {
    /// Creates the fraud metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<FraudMetrics, prometheus::Error> {
        let scoped_gauge = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let gauge = GaugeVec::new(Opts::new(name, help), FRAUD_SCOPE_LABELS)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let incidence_per_10k = scoped_gauge(
            "gridwatch_fraud_incidence_per_10k",
            "Fraud cases per 10,000 residents this local year so far, by scope (city, district, community; cases and residents summed before dividing).",
        )?;
        let baseline_incidence_per_10k = scoped_gauge(
            "gridwatch_fraud_baseline_incidence_per_10k",
            "Baseline fraud cases per 10,000 residents expected over the observed time (the baseline year's month and hour-of-day shape over the same spans), by scope.",
        )?;
        let drop_ratio = scoped_gauge(
            "gridwatch_fraud_drop_ratio",
            "Drop of the fraud rate vs the baseline over the observed time: 1 - observed / expected cases, by scope (absent when undefined).",
        )?;
        let drop_ci_low = scoped_gauge(
            "gridwatch_fraud_drop_ci_low",
            "Lower bound of the exact (Clopper-Pearson, conditional) confidence interval of the fraud drop, by scope (absent when unbounded).",
        )?;
        let drop_ci_high = scoped_gauge(
            "gridwatch_fraud_drop_ci_high",
            "Upper bound of the exact (Clopper-Pearson, conditional) confidence interval of the fraud drop, by scope.",
        )?;
        let projected_drop_ratio = scoped_gauge(
            "gridwatch_fraud_projected_drop_ratio",
            "Projected year-end fraud drop vs the whole baseline year (observed cases plus the baseline's remaining cases at the observed ratio), by scope.",
        )?;
        let projected_incidence_per_10k = scoped_gauge(
            "gridwatch_fraud_projected_incidence_per_10k",
            "Projected year-end fraud cases per 10,000 residents (seasonal: the baseline's monthly shape), by scope.",
        )?;
        let on_track = scoped_gauge(
            "gridwatch_fraud_on_track",
            "1 when the projected year-end fraud drop reaches the target drop, 0 when it does not; absent without a verdict (insufficient_data, no_baseline), by scope.",
        )?;
        let status = GaugeVec::new(
            Opts::new(
                "gridwatch_fraud_status",
                "The fraud target's verdict by scope as a state set: 1 on the current status (insufficient_data, on_track, off_track, no_baseline), 0 on the others.",
            ),
            &["scope", "district", "community", "status"],
        )?;
        registry.register(Box::new(status.clone()))?;
        let covered_seconds = scoped_gauge(
            "gridwatch_fraud_covered_seconds",
            "Time of this local year observed, in seconds (streamed spans and imported months; population-weighted over a scope's communities), by scope.",
        )?;
        let coverage_ratio = scoped_gauge(
            "gridwatch_fraud_coverage_ratio",
            "Observed time divided by the time elapsed this local year, by scope.",
        )?;
        let projected_drop_ci_low = scoped_gauge(
            "gridwatch_fraud_projected_drop_ci_low",
            "Lower bound of the projected year-end fraud drop (the drop interval's bound applied to the unobserved time), by scope (absent when unbounded).",
        )?;
        let projected_drop_ci_high = scoped_gauge(
            "gridwatch_fraud_projected_drop_ci_high",
            "Upper bound of the projected year-end fraud drop, by scope.",
        )?;
        let community_labels = &["district", "community"];
        let population = IntGaugeVec::new(
            Opts::new(
                "gridwatch_fraud_population",
                "Residents per community (the fraud target's denominator; sum before dividing).",
            ),
            community_labels,
        )?;
        registry.register(Box::new(population.clone()))?;
        let baseline_cases_covered = GaugeVec::new(
            Opts::new(
                "gridwatch_fraud_baseline_cases_covered",
                "Baseline fraud cases expected over the observed time, per community (sum before dividing).",
            ),
            community_labels,
        )?;
        registry.register(Box::new(baseline_cases_covered.clone()))?;
        let baseline_full_year_cases = IntGaugeVec::new(
            Opts::new(
                "gridwatch_fraud_baseline_full_year_cases",
                "Fraud cases of the whole baseline year, per community.",
            ),
            community_labels,
        )?;
        registry.register(Box::new(baseline_full_year_cases.clone()))?;
        let minimum_coverage_seconds = Gauge::new(
            "gridwatch_fraud_minimum_coverage_seconds",
            "Observed time a scope needs before its fraud drop is judged, in seconds (insufficient_data below).",
        )?;
        registry.register(Box::new(minimum_coverage_seconds.clone()))?;
        let community_input_partitions = GaugeVec::new(
            Opts::new(
                "gridwatch_community_input_partitions",
                "Input partitions that carried a community's events, only for communities on more than one (their community-scope statistics are split: key the input by community id).",
            ),
            &["community"],
        )?;
        registry.register(Box::new(community_input_partitions.clone()))?;
        let dissuasion_ratio = scoped_gauge(
            "gridwatch_fraud_dissuasion_ratio",
            "Fraud dissuasions divided by fraud warnings this local year so far, by scope.",
        )?;
        let cases_ytd = IntGaugeVec::new(
            Opts::new(
                "gridwatch_fraud_cases_ytd",
                "Fraud cases (the configured case event types) this local year so far, per community and source (imported months, streamed).",
            ),
            &["district", "community", "source"],
        )?;
        registry.register(Box::new(cases_ytd.clone()))?;
        let target_drop_ratio = Gauge::new(
            "gridwatch_fraud_target_drop_ratio",
            "The fraud target: the drop of the fraud rate vs the baseline year to reach (0.6 = 60%).",
        )?;
        registry.register(Box::new(target_drop_ratio.clone()))?;
        let warnings = IntCounterVec::new(
            Opts::new(
                "gridwatch_fraud_warnings_total",
                "Accepted FRAUD_WARNING events (anti-fraud warnings received), per community.",
            ),
            &["district", "community"],
        )?;
        registry.register(Box::new(warnings.clone()))?;
        let dissuaded = IntCounterVec::new(
            Opts::new(
                "gridwatch_fraud_dissuaded_total",
                "Accepted FRAUD_DISSUADED events (dissuasions by grid workers), per community.",
            ),
            &["district", "community"],
        )?;
        registry.register(Box::new(dissuaded.clone()))?;
        let warning_to_dissuasion_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gridwatch_fraud_warning_to_dissuasion_seconds",
                "Time from a fraud warning to the dissuasion paired with it (same phone pseudonym, else first-in-first-out per community), by district.",
            )
            .buckets(WARNING_TO_DISSUASION_BUCKETS.to_vec()),
            &["district"],
        )?;
        registry.register(Box::new(warning_to_dissuasion_seconds.clone()))?;
        Ok(FraudMetrics {
            cases_ytd,
            population,
            baseline_cases_covered,
            baseline_full_year_cases,
            status,
            covered_seconds,
            coverage_ratio,
            projected_drop_ci_low,
            projected_drop_ci_high,
            minimum_coverage_seconds,
            community_input_partitions,
            incidence_per_10k,
            baseline_incidence_per_10k,
            drop_ratio,
            drop_ci_low,
            drop_ci_high,
            projected_drop_ratio,
            projected_incidence_per_10k,
            on_track,
            dissuasion_ratio,
            target_drop_ratio,
            warnings,
            dissuaded,
            warning_to_dissuasion_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_the_gridwatch_prefix() {
        let metrics = Metrics::new(&["simulator"], "abc123").unwrap();
        let text = metrics.encode_text();
        for family in metrics.registry.gather() {
            let name = family.name();
            if name.starts_with("process_") {
                continue;
            }
            assert!(name.starts_with("gridwatch_"), "{name}");
            assert!(!family.help().is_empty(), "{name} has no HELP");
        }
        assert!(
            text.contains("gridwatch_dead_letters_total{reason=\"late\"} 0"),
            "{text}"
        );
        assert!(text.contains("gridwatch_rules_version_info{version=\"abc123\"} 1"));
    }
}

/// Metrics of the Kafka consumer (`source.kind = "kafka"`). Per-partition series are labelled
/// with the input topic and the Kafka partition number; they exist only for partitions this
/// instance owns (removed on revoke), so `sum` over the group's instances is the group's view.
#[derive(Clone)]
pub struct KafkaMetrics {
    /// Records in a partition not yet processed: the broker's high watermark minus the next
    /// offset the pipeline will process (the `GridwatchConsumerLagGrowing` alert's input).
    pub consumer_lag: IntGaugeVec,
    /// Event-time watermark of each owned partition, epoch seconds.
    pub partition_watermark: GaugeVec,
    /// Partitions this instance owns now.
    pub assigned_partitions: IntGauge,
    /// Rebalance events by kind (assign, revoke).
    pub rebalances: IntCounterVec,
    /// Partition state snapshots written to the state topic, by result (ok, failed).
    pub snapshots: IntCounterVec,
    /// Time from starting a snapshot round to the broker's acknowledgement of its records.
    pub snapshot_duration: Histogram,
    /// Size of each partition snapshot record.
    pub snapshot_size: Histogram,
    /// Group offset commits, by result (ok, failed).
    pub commits: IntCounterVec,
    /// Times the consumer paused its partitions because the pipeline was behind.
    pub pauses: IntCounter,
    /// By consumer group: 1 while the cluster answers metadata requests, 0 while it does not
    /// (no series without a Kafka source).
    pub broker_up: IntGaugeVec,
}

impl KafkaMetrics {
    /// Creates the Kafka consumer metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<KafkaMetrics, prometheus::Error> {
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "gridwatch_kafka_consumer_lag",
                "Records of an owned input partition not yet processed (broker high watermark minus the next offset to process).",
            ),
            &["topic", "partition"],
        )?;
        let partition_watermark = GaugeVec::new(
            Opts::new(
                "gridwatch_kafka_partition_watermark_timestamp_seconds",
                "Event-time watermark of an owned input partition, epoch seconds.",
            ),
            &["topic", "partition"],
        )?;
        let assigned_partitions = IntGauge::new(
            "gridwatch_kafka_assigned_partitions",
            "Input partitions this instance owns.",
        )?;
        let rebalances = IntCounterVec::new(
            Opts::new(
                "gridwatch_kafka_rebalances_total",
                "Consumer-group rebalance events handled, by kind (assign, revoke).",
            ),
            &["kind"],
        )?;
        let snapshots = IntCounterVec::new(
            Opts::new(
                "gridwatch_kafka_state_snapshots_total",
                "Partition state snapshots written to the state topic, by result (ok, failed).",
            ),
            &["result"],
        )?;
        let snapshot_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gridwatch_kafka_state_snapshot_duration_seconds",
                "Time of one snapshot round: outputs acknowledged, partition states serialized and acknowledged on the state topic.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let snapshot_size = Histogram::with_opts(
            HistogramOpts::new(
                "gridwatch_kafka_state_snapshot_size_bytes",
                "Size of one partition's state snapshot record.",
            )
            .buckets(prometheus::exponential_buckets(1024.0, 4.0, 9)?),
        )?;
        let commits = IntCounterVec::new(
            Opts::new(
                "gridwatch_kafka_commits_total",
                "Consumer-group offset commits (after the snapshots they follow), by result (ok, failed).",
            ),
            &["result"],
        )?;
        let pauses = IntCounter::new(
            "gridwatch_kafka_consumer_pauses_total",
            "Times the consumer paused its partitions because the pipeline's input queue was full.",
        )?;
        let broker_up = IntGaugeVec::new(
            Opts::new(
                "gridwatch_kafka_broker_up",
                "1 while the Kafka cluster answers metadata requests within the probe timeout, else 0, by consumer group.",
            ),
            &["group"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
        registry.register(Box::new(partition_watermark.clone()))?;
        registry.register(Box::new(assigned_partitions.clone()))?;
        registry.register(Box::new(rebalances.clone()))?;
        registry.register(Box::new(snapshots.clone()))?;
        registry.register(Box::new(snapshot_duration.clone()))?;
        registry.register(Box::new(snapshot_size.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(pauses.clone()))?;
        registry.register(Box::new(broker_up.clone()))?;
        for kind in ["assign", "revoke"] {
            rebalances.with_label_values(&[kind]);
        }
        for result in ["ok", "failed"] {
            snapshots.with_label_values(&[result]);
            commits.with_label_values(&[result]);
        }
        Ok(KafkaMetrics {
            consumer_lag,
            partition_watermark,
            assigned_partitions,
            rebalances,
            snapshots,
            snapshot_duration,
            snapshot_size,
            commits,
            pauses,
            broker_up,
        })
    }
}
