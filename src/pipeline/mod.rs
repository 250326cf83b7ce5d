//! The synchronous pipeline: one record in, outputs appended. Every stage is a plain method
//! call; time arrives as an argument, so the whole flow is tested with ordinary `#[test]`s and
//! driven by an async shell ([`crate::service`]) or a plain loop ([`crate::replay`]).
//!
//! Order of stages for one record: decode → validate (and pseudonymize) → grid → dedup →
//! lateness → window → rules → watermark advance (which may close windows, expire dedup
//! entries and resolve alerts). The watermark advances after every accepted event, so which
//! events are late never depends on how the input was batched.

// No panic path reachable from input, state or configuration (README "Security").

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dead_letter::DeadLetterReason;
use crate::decode::{DecodeSettings, Rejection};
use crate::dedup::Deduplicator;
use crate::event::AcceptedEvent;
use crate::fraud::FraudTracker;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::proto::{Alert, DeadLetter, IncidentEvent};
use crate::rules::{RuleEngine, RuleEngineState, RuleSet};
use crate::source::SourceRecord;
use crate::window::progress::{ClockGuardSettings, ProgressObservation};

mod admission;
pub(crate) mod metrics;
mod rule_stage;

pub use admission::{
    Admission, Admitted, AdmittedRecord, DecodedRecord, Decoding, EncodedRecord, RejectedInput,
    SpareEvents,
};
pub use rule_stage::{RuleStage, RuleVerdict, RuleWork};

use crate::window::sliding::SlidingViews;
use crate::window::tumbling::{RecordOutcome, TumblingWindows};
use crate::window::watermark::WatermarkTracker;
use crate::window::{ClosedPane, PaneKey, WindowSettings};
use metrics::PipelineMetrics;

/// Settings of one pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Pane size, out-of-orderness, lateness, idle timeout.
    pub window: WindowSettings,
    /// How far one source may run ahead before it is no longer believed alone.
    pub clock_guard: ClockGuardSettings,
    /// Spans of the sliding views (e.g. 15 min, 1 h, 24 h), multiples of the pane size.
    pub view_spans_millis: Vec<i64>,
    /// Event-time horizon of the dedup set.
    pub dedup_horizon_millis: i64,
    /// Validation limits and the pseudonymization key.
    pub decode: DecodeSettings,
    /// What one record may cost (sizes of records, ids, attributes, dead letters).
    pub limits: crate::limits::IngestLimits,
    /// Whether this pipeline sees only part of the city (one Kafka partition): data-gap
    /// silence is then tested only for cells that have had activity here, since the other
    /// cells' events go to other partitions.
    pub partial_input: bool,
}

impl PipelineSettings {
    /// The settings a [`crate::config::Config`] describes.
    pub fn from_config(config: &crate::config::Config) -> PipelineSettings {
        PipelineSettings {
            window: config.window_settings(),
            clock_guard: config.clock_guard_settings(),
            view_spans_millis: config
                .window
                .views
                .iter()
                .map(|span| crate::time::duration_millis(*span))
                .collect(),
            dedup_horizon_millis: crate::time::duration_millis(config.ingest.dedup_horizon),
            decode: DecodeSettings {
                max_clock_skew_millis: crate::time::duration_millis(config.ingest.max_clock_skew),
                min_occurred_at_millis: crate::decode::DEFAULT_MIN_OCCURRED_AT_MILLIS,
                privacy: config.privacy.settings(),
            },
            limits: config.ingest.limits(),
            partial_input: false,
        }
    }
}

/// What processing produced; sinks drain it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    /// Final windows, in emission order, their cells by index: sinks name them with the
    /// registry ([`crate::sink::fill_cell_window`]), so that emitting one copies no ids.
    pub windows: Vec<ClosedPane>,
    /// Alert state changes, in emission order.
    pub alerts: Vec<Alert>,
    /// Rejected inputs.
    pub dead_letters: Vec<DeadLetter>,
}

impl Outputs {
    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.alerts.is_empty() && self.dead_letters.is_empty()
    }

    /// Empties every list, keeping the allocations.
    pub fn clear(&mut self) {
        self.windows.clear();
        self.alerts.clear();
        self.dead_letters.clear();
    }

    /// Moves every output of `other` to the end of these, each list in its order (`other` is
    /// left empty, its allocations kept).
    pub fn append(&mut self, other: &mut Outputs) {
        self.windows.append(&mut other.windows);
        self.alerts.append(&mut other.alerts);
        self.dead_letters.append(&mut other.dead_letters);
    }
}

/// The state of every stage but the rules (whose engine keeps its own): the one place a new
/// stateful stage is added, snapshotted and restored as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageState {
    /// Per-partition watermarks.
    pub watermarks: WatermarkTracker,
    /// The last watermark the pipeline acted on (windows closed up to it).
    pub watermark_millis: Option<i64>,
    /// Open tumbling panes.
    pub windows: TumblingWindows,
    /// Longer views derived from closed panes.
    pub views: SlidingViews,
    /// Accepted event ids within the horizon.
    pub dedup: Deduplicator,
    /// Fraud-target counts, when fraud tracking is enabled.
    pub fraud: Option<FraudTracker>,
}

/// Everything stateful in a pipeline: what a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    /// Watermarks, panes, views, dedup set, fraud counts.
    pub stages: StageState,
    /// Alert state of every rule.
    pub rules: RuleEngineState,
}

impl PipelineState {
    /// Checks every index and bound of a restored state against what the running pipelines
    /// can restore: their registry's shape, pane settings and view spans (see
    /// `state::decode`, which calls this with its `SnapshotFit`; the parts are passed
    /// one by one so that this module need not know the snapshot module).
    pub fn check_bounds(
        &self,
        registry: &crate::grid::RegistryShape,
        window: crate::window::WindowSettings,
        view_spans_millis: &[i64],
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        self.stages.windows.check_bounds(registry, window)?;
        self.stages
            .views
            .check_bounds(registry, window.size_millis, view_spans_millis)?;
        self.rules.check_bounds(registry)?;
        match &self.stages.fraud {
            Some(fraud) => fraud.check_bounds(registry),
            None => Ok(()),
        }
    }
}

/// What happened to one record (for callers that count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordResult {
    /// Accepted into a window.
    Accepted,
    /// A re-send of an accepted event: counted once, not dead-lettered.
    Duplicate,
    /// Rejected with this reason (a dead letter was appended).
    Rejected(DeadLetterReason),
}

/// The synchronous pipeline of one input (one source, or one Kafka consumer).
pub struct Pipeline {
    /// Decoding, validation, pseudonymization and grid resolution (stateless).
    admission: Admission,
    /// Communities, cells and devices.
    registry: Arc<GridRegistry>,
    /// The stateful stages but the rules (snapshotted as a whole with the rules' state).
    stages: StageState,
    /// Alert rules and their state.
    rules: RuleStage,
    /// Its Prometheus handles, resolved once.
    metrics: PipelineMetrics,
    /// Source name for dead letters.
    source_name: &'static str,
    /// Reused buffer for panes closed by one watermark advance.
    closed_panes: Vec<ClosedPane>,
    /// The last processed event, decoded into again by [`Pipeline::process`] (its strings
    /// reused: no allocation per id on the single-threaded path either).
    spare_event: Option<Box<IncidentEvent>>,
    /// Settings kept for snapshots' compatibility check.
    settings: PipelineSettings,
}

impl Pipeline {
    /// A pipeline with empty state.
    pub fn new(
        settings: PipelineSettings,
        registry: Arc<GridRegistry>,
        rules: RuleSet,
        metrics: Arc<Metrics>,
        source_name: &'static str,
    ) -> Pipeline {
        let decoding = Decoding::of_settings(&settings);
        Pipeline::with_decoding(decoding, settings, registry, rules, metrics, source_name)
    }

    /// [`Pipeline::new`] decoding with `decoding` (of the same settings): a replay's reader
    /// decodes with it before the registry is there, and building the decoder (its
    /// personal-number pattern) once is enough.
    pub fn with_decoding(
        decoding: Decoding,
        settings: PipelineSettings,
        registry: Arc<GridRegistry>,
        rules: RuleSet,
        metrics: Arc<Metrics>,
        source_name: &'static str,
    ) -> Pipeline {
        let registry_for_rules = Arc::clone(&registry);
        Pipeline {
            admission: Admission::with_decoding(decoding, Arc::clone(&registry)),
            registry,
            stages: StageState {
                watermarks: WatermarkTracker::new(
                    settings.window.max_out_of_orderness_millis,
                    settings.window.idle_timeout_millis,
                )
                .with_clock_guard(settings.clock_guard),
                watermark_millis: None,
                windows: TumblingWindows::new(settings.window),
                views: SlidingViews::new(
                    settings.view_spans_millis.clone(),
                    settings.window.size_millis,
                )
                .with_allowed_lateness(settings.window.allowed_lateness_millis),
                dedup: Deduplicator::new(settings.dedup_horizon_millis),
                // The service enables it (enable_fraud_tracking); replay does not.
                fraud: None,
            },
            rules: RuleStage::new(
                rules,
                registry_for_rules,
                Arc::clone(&metrics),
                settings.partial_input,
            ),
            metrics: PipelineMetrics::new(metrics, source_name),
            source_name,
            closed_panes: Vec::new(),
            spare_event: None,
            settings,
        }
    }

    /// Stops observing the delay from a window's end to its emission
    /// (`gridwatch_window_emit_delay_seconds`): a replay emits windows months after their end
    /// by the wall clock, serves no metrics, and the observation (a linear search of the
    /// buckets, each time past the last) was about 130 instructions a window on the thread
    /// that bounds it. The windows emitted are still counted.
    pub fn without_emit_delay(&mut self) {
        self.metrics.stop_observing_emit_delay();
    }

    /// Starts counting the fraud target with `tracker` (fed with every accepted event).
    pub fn enable_fraud_tracking(&mut self, tracker: FraudTracker) {
        self.stages.fraud = Some(tracker);
    }

    /// The fraud tracker, when enabled.
    pub fn fraud_tracker(&self) -> Option<&FraudTracker> {
        self.stages.fraud.as_ref()
    }

    /// Incident and fraud metrics of one accepted event; feeds the fraud tracker (coverage
    /// with every accepted event, counts with the fraud chain's).
    fn count_incident_and_fraud(&mut self, accepted: &AcceptedEvent) {
        let Some((cell, community)) = self.registry.get_cell_and_community(accepted.cell) else {
            return;
        };
        if let Some(tracker) = self.stages.fraud.as_mut() {
            tracker.observe_stream(
                accepted.occurred_at_millis,
                cell.community,
                self.registry.communities().len(),
            );
        }
        if !crate::event::is_incident(accepted.event_type) {
            return;
        }
        self.metrics
            .record_incident(cell.community, community, accepted.event_type);
        let Some(tracker) = self.stages.fraud.as_mut() else {
            return;
        };
        if let Some(paired) = tracker.on_event(accepted, &self.registry) {
            self.metrics
                .record_warning_to_dissuasion(&community.district_code, paired.seconds);
        }
    }

    /// Processes one record at wall time `wall_millis`, appending to `outputs`.
    pub fn process(
        &mut self,
        record: SourceRecord,
        wall_millis: i64,
        outputs: &mut Outputs,
    ) -> RecordResult {
        let spare = self.spare_event.take().unwrap_or_default();
        let mut admitted = self.admission.admit(record, wall_millis, spare);
        let result = self.process_admitted(&mut admitted, wall_millis, outputs);
        if let Ok(located) = admitted.outcome {
            self.spare_event = Some(located.event);
        }
        result
    }

    /// Adds what this pipeline counted locally to the shared Prometheus metrics: the shell
    /// calls it whenever it writes a batch's outputs (see `pipeline/metrics.rs`).
    pub fn flush_metrics(&mut self) {
        self.metrics.flush();
    }

    /// The stateless stages of this pipeline, for a caller that runs them on another thread
    /// (and hands their results to [`Pipeline::process_admitted`] in input order).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The stateful stages of one record whose stateless stages
    /// ([`Admission::admit`], with the same wall time) have run. The record stays the
    /// caller's: its event is only read, so a replay hands it back to the reading thread to
    /// decode the next record into (a rejection's payload and texts are taken out of it).
    pub fn process_admitted(
        &mut self,
        admitted: &mut AdmittedRecord,
        wall_millis: i64,
        outputs: &mut Outputs,
    ) -> RecordResult {
        let (result, rule_work) = self.count_admitted(admitted, wall_millis, outputs);
        self.rules
            .apply(admitted, rule_work, wall_millis, &mut outputs.alerts);
        result
    }

    /// [`Pipeline::process_admitted`] but for the rules: returns what they must do with the
    /// record instead, for a caller that runs them elsewhere (a [`RuleStage`] of its own, fed
    /// every record and its work in input order). This pipeline's own rules then stay
    /// untouched: their alerts and state are the other stage's.
    pub fn count_admitted(
        &mut self,
        admitted: &mut AdmittedRecord,
        wall_millis: i64,
        outputs: &mut Outputs,
    ) -> (RecordResult, RuleWork) {
        self.metrics.record_received();
        if admitted.decoded {
            self.metrics.record_decoded();
        }
        let (partition, position) = (admitted.partition, admitted.position);
        let (rejected, verdict) = match &mut admitted.outcome {
            Ok(located) => match self.count(located, partition, wall_millis, outputs) {
                Ok(counted) => return counted,
                Err(late) => (late, RuleVerdict::Late),
            },
            Err(rejected) => (rejected.take(), RuleVerdict::Unseen),
        };
        let rule_work = RuleWork {
            verdict,
            watermark_after: None,
        };
        (
            self.reject(rejected, partition, position, outputs),
            rule_work,
        )
    }

    /// Dedup, lateness, windows and the watermark for one located event; what the rules must
    /// do with it. A late event is the one error: it is dead-lettered, and the rules see it as
    /// late.
    fn count(
        &mut self,
        admitted: &Admitted,
        partition: u32,
        wall_millis: i64,
        outputs: &mut Outputs,
    ) -> Result<(RecordResult, RuleWork), RejectedInput> {
        let Admitted {
            event,
            fields,
            cell,
            format,
            event_id_hash,
            source_key,
        } = admitted;
        let (fields, cell, format) = (*fields, *cell, *format);
        let Some(unseen_id) = self.stages.dedup.unseen(*event_id_hash) else {
            self.metrics.record_duplicate();
            return Ok((RecordResult::Duplicate, RuleWork::default()));
        };
        let key = PaneKey {
            cell,
            event_type: fields.event_type as i32,
        };
        let outcome = self.stages.windows.record(
            key,
            fields.occurred_at_millis,
            fields.severity,
            self.stages.watermark_millis,
        );
        if let RecordOutcome::Late {
            window_end_millis,
            watermark_millis,
        } = outcome
        {
            // The window is final, but nothing about windows may stop a fire, gas, SOS or
            // fall alarm: the rules see the event as late (`RuleVerdict::Late`).
            self.metrics.record_late_event();
            let rejection = Rejection {
                reason: DeadLetterReason::Late,
                detail: format!(
                    "window ending {} was final at watermark {}",
                    crate::time::millis_to_rfc3339(window_end_millis),
                    crate::time::millis_to_rfc3339(watermark_millis)
                ),
                event_id: event.event_id.clone(),
            };
            return Err(RejectedInput {
                rejection,
                payload: admission::encode_event(event, format),
            });
        }
        unseen_id.remember(fields.occurred_at_millis);
        self.metrics.record_accepted(fields.event_type);
        self.count_incident_and_fraud(&admitted.accepted_event());
        let observation = self.stages.watermarks.observe_source(
            partition,
            *source_key,
            fields.occurred_at_millis,
            wall_millis,
        );
        if let ProgressObservation::HeldAhead { lead_millis } = observation {
            self.metrics
                .record_clock_ahead(&self.registry, event, *source_key, lead_millis);
        }
        let rule_work = RuleWork {
            verdict: RuleVerdict::Accepted,
            watermark_after: self.advance_stages(wall_millis, outputs),
        };
        Ok((RecordResult::Accepted, rule_work))
    }

    /// Moves the watermark to what the partitions (and, for idle ones, the wall clock) allow,
    /// closing final windows, expiring dedup entries and resolving alerts.
    pub fn advance(&mut self, wall_millis: i64, outputs: &mut Outputs) {
        if let Some(watermark) = self.advance_stages(wall_millis, outputs) {
            self.rules
                .on_watermark(watermark, wall_millis, &mut outputs.alerts);
        }
    }

    /// [`Pipeline::advance`] but for the rules: the new watermark, when it moved.
    fn advance_stages(&mut self, wall_millis: i64, outputs: &mut Outputs) -> Option<i64> {
        let watermark = self.stages.watermarks.watermark(wall_millis)?;
        if self
            .stages
            .watermark_millis
            .is_some_and(|current| watermark <= current)
        {
            return None;
        }
        self.stages.watermark_millis = Some(watermark);
        self.closed_panes.clear();
        self.stages
            .windows
            .flush_until(watermark, &mut self.closed_panes);
        self.emit_closed_panes(wall_millis, outputs);
        self.stages.views.advance(watermark);
        self.stages.dedup.expire(watermark);
        Some(watermark)
    }

    /// End of input (a file replay): closes and emits every open window.
    pub fn finish(&mut self, wall_millis: i64, outputs: &mut Outputs) {
        self.closed_panes.clear();
        self.stages.windows.flush_all(&mut self.closed_panes);
        self.emit_closed_panes(wall_millis, outputs);
    }

    fn emit_closed_panes(&mut self, wall_millis: i64, outputs: &mut Outputs) {
        for pane in &self.closed_panes {
            self.stages.views.on_pane_closed(pane);
            // A pane's cell comes from window state, which a restore checks against this
            // registry (`state::check_bounds`); should a foreign index slip through anyway,
            // its window is not emitted rather than a sink failing to name it.
            if self
                .registry
                .get_cell_and_community(pane.key.cell)
                .is_none()
            {
                continue;
            }
            outputs.windows.push(*pane);
            self.metrics
                .record_window_emitted(pane.window_end_millis, wall_millis);
        }
    }

    fn reject(
        &mut self,
        rejected: RejectedInput,
        partition: u32,
        position: u64,
        outputs: &mut Outputs,
    ) -> RecordResult {
        // Every detail text is written not to echo input; this catches what a future one might.
        let rejection = self.admission.decoder().scrub_rejection(rejected.rejection);
        let reason = rejection.reason;
        self.metrics.record_dead_letter(reason);
        let mut detail = rejection.detail;
        let mut payload = rejected.payload;
        let payload_limit = self.settings.limits.max_dead_letter_payload_bytes;
        if payload.len() > payload_limit {
            detail.push_str(&format!(
                " (payload cut from {} to {payload_limit} bytes)",
                payload.len()
            ));
            payload.truncate(payload_limit);
        }
        outputs.dead_letters.push(DeadLetter {
            reason: reason.as_str().to_string(),
            detail,
            payload,
            source: self.source_name.to_string(),
            position: format!("partition {partition} position {position}"),
            event_id: rejection.event_id,
        });
        RecordResult::Rejected(reason)
    }

    /// Swaps in a new (validated) rule set between two records: unchanged rules keep their
    /// state; firing alerts of removed or changed rules are resolved into `outputs`. Windows,
    /// views and dedup state are untouched.
    pub fn replace_rules(&mut self, rules: RuleSet, wall_millis: i64, outputs: &mut Outputs) {
        self.rules
            .replace_rules(rules, wall_millis, &mut outputs.alerts);
    }

    /// Open (cell, type, window) panes.
    pub fn open_pane_count(&self) -> usize {
        self.stages.windows.open_pane_count()
    }

    /// Event ids remembered by the dedup set.
    pub fn dedup_entry_count(&self) -> usize {
        self.stages.dedup.len()
    }

    /// The current operator watermark.
    pub fn watermark_millis(&self) -> Option<i64> {
        self.stages.watermark_millis
    }

    /// Currently firing alerts.
    pub fn active_alerts(&self) -> Vec<Alert> {
        self.rules.engine().active_alerts()
    }

    /// The registry this pipeline resolves against.
    pub fn registry(&self) -> &Arc<GridRegistry> {
        &self.registry
    }

    /// The rule engine (for stats and the rules version).
    pub fn rules(&self) -> &RuleEngine {
        self.rules.engine()
    }

    /// The hottest cells over view `span_index` (closed panes plus open ones).
    pub fn top_cells(&self, span_index: usize, top_n: usize) -> Vec<(crate::grid::CellIndex, u64)> {
        self.stages
            .views
            .top_cells(span_index, self.stages.windows.open_panes(), top_n)
    }

    /// Events of one cell per event type and view (closed panes plus open ones): for each type
    /// with any events, its number and one count per view. For the operator API.
    pub fn cell_activity(&self, cell: crate::grid::CellIndex) -> Vec<(i32, Vec<u64>)> {
        let view_count = self.settings.view_spans_millis.len();
        let mut activity = Vec::new();
        for event_type in crate::event::ALL_EVENT_TYPES {
            let key = PaneKey {
                cell,
                event_type: event_type as i32,
            };
            let open_count: u64 = self
                .stages
                .windows
                .open_panes()
                .filter(|(_, open_key, _)| *open_key == key)
                .map(|(_, _, counts)| u64::from(counts.count))
                .sum();
            let per_view: Vec<u64> = (0..view_count)
                .map(|view_index| self.stages.views.count(key, view_index) + open_count)
                .collect();
            if per_view.iter().any(|count| *count > 0) {
                activity.push((event_type as i32, per_view));
            }
        }
        activity
    }

    /// The sliding views, for per-cell metrics.
    pub fn views(&self) -> &SlidingViews {
        &self.stages.views
    }

    /// The settings the pipeline runs with.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// A copy of all mutable state.
    pub fn state(&self) -> PipelineState {
        PipelineState {
            stages: self.stages.clone(),
            rules: self.rules.engine().state().clone(),
        }
    }

    /// Replaces all mutable state (after a restore). Fraud counts are taken over only when
    /// this pipeline tracks fraud, and keep this pipeline's fraud settings (the running
    /// configuration wins).
    pub fn restore_state(&mut self, state: PipelineState) {
        let running_fraud = self.stages.fraud.take();
        let PipelineState { stages, rules } = state;
        let restored_fraud = stages.fraud.clone();
        self.stages = stages;
        self.stages.fraud = running_fraud.map(|mut running| {
            if let Some(restored) = restored_fraud {
                running.restore(restored);
            }
            running
        });
        self.rules.engine_mut().restore_state(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EventType, IncidentEvent};
    use crate::source::{RecordPayload, SourceRecord};

    /// Windows emitted by a pipeline over three events a minute apart, and the emit delays it
    /// observed, after `prepare` ran on it.
    fn emitted_and_observed(prepare: impl Fn(&mut Pipeline)) -> (u64, u64) {
        let config = crate::config::Config::default();
        let settings = PipelineSettings::from_config(&config);
        let rules = crate::rules::RuleSet::embedded_default(settings.window.size_millis).unwrap();
        let metrics =
            std::sync::Arc::new(crate::metrics::Metrics::new(&["file"], rules.version()).unwrap());
        let registry = crate::grid::GridRegistry::embedded();
        let mut pipeline =
            Pipeline::new(settings, registry.clone(), rules, metrics.clone(), "file");
        prepare(&mut pipeline);
        let start = 1_777_600_000_000;
        let mut outputs = Outputs::default();
        for position in 0..3_i64 {
            let event = IncidentEvent {
                event_id: format!("emit-delay-{position}"),
                grid_id: registry.cells()[0].grid_id.clone(),
                event_type: EventType::Tailgating as i32,
                occurred_at: Some(crate::time::millis_to_timestamp(start + position * 60_000)),
                ..IncidentEvent::default()
            };
            let record = SourceRecord {
                payload: RecordPayload::Event(Box::new(event)),
                partition: 0,
                position: position as u64,
            };
            pipeline.process(record, start + 3_600_000, &mut outputs);
        }
        pipeline.finish(start + 3_600_000, &mut outputs);
        pipeline.flush_metrics();
        assert_eq!(outputs.windows.len(), 3, "{:?}", outputs.dead_letters);
        (
            metrics.windows_emitted.get(),
            metrics.window_emit_delay.get_sample_count(),
        )
    }

    #[test]
    fn a_pipeline_without_emit_delay_counts_its_windows_and_observes_no_delay() {
        assert_eq!(emitted_and_observed(|_| {}), (3, 3));
        assert_eq!(emitted_and_observed(Pipeline::without_emit_delay), (3, 0));
    }
}
