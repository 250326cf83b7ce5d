//! The rules as a stage of their own. The counting stages (dedup, lateness, windows, the
//! watermark) decide what the rules must do with each record, a [`RuleWork`]; a
//! [`RuleStage`] then does it. A [`super::Pipeline`] does both for each record in turn; a
//! file replay on 4 or more cores runs them on two threads (`replay --rules-thread`), handing
//! the records and their work across in input order, so that the alerts are the same either
//! way.
//!
//! That split is sound because the rules read nothing of the counting stages' state and those
//! stages read nothing of the rules': all the rules learn of a record is whether it was
//! accepted or late, and the watermark after it.

// No panic path reachable from input, state or configuration (README "Security").

use std::sync::Arc;

use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::proto::Alert;
use crate::rules::{RuleEngine, RuleSet};

use super::admission::{Admitted, AdmittedRecord};

/// What the counting stages decided about one record, for the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuleVerdict {
    /// Rejected or a duplicate: the rules never see it.
    #[default]
    Unseen,
    /// Accepted into its window: every rule of its type sees it.
    Accepted,
    /// Valid, but its window was final: only the immediate (life-safety) rules see it.
    Late,
}

/// What the rules must do for one record: see its event (or not), then move to the
/// watermark the record advanced, if it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleWork {
    /// Whether and how the rules see the record's event.
    pub verdict: RuleVerdict,
    /// The watermark after the record, when it moved.
    pub watermark_after: Option<i64>,
}

/// The rule engine with what its alerts are counted in and its events located with.
pub struct RuleStage {
    engine: RuleEngine,
    registry: Arc<GridRegistry>,
    metrics: Arc<Metrics>,
}

impl RuleStage {
    /// A stage with empty rule state. `partial_input`: the stage sees one partition's events
    /// only (see [`super::PipelineSettings::partial_input`]).
    pub fn new(
        rules: RuleSet,
        registry: Arc<GridRegistry>,
        metrics: Arc<Metrics>,
        partial_input: bool,
    ) -> RuleStage {
        let mut engine = RuleEngine::new(rules);
        engine.set_partial_input(partial_input);
        RuleStage {
            engine,
            registry,
            metrics,
        }
    }

    /// Does `work` for `record` (the record the counting stages decided it for, in input
    /// order), appending the alert state changes to `alerts`.
    pub fn apply(
        &mut self,
        record: &AdmittedRecord,
        work: RuleWork,
        wall_millis: i64,
        alerts: &mut Vec<Alert>,
    ) {
        if let Ok(admitted) = &record.outcome {
            self.see_event(admitted, work.verdict, wall_millis, alerts);
        }
        if let Some(watermark_millis) = work.watermark_after {
            self.on_watermark(watermark_millis, wall_millis, alerts);
        }
    }

    fn see_event(
        &mut self,
        admitted: &Admitted,
        verdict: RuleVerdict,
        wall_millis: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let first_new_alert = alerts.len();
        match verdict {
            RuleVerdict::Unseen => return,
            RuleVerdict::Accepted => {
                self.engine
                    .on_event(&admitted.accepted_event(), &self.registry, alerts)
            }
            RuleVerdict::Late => {
                self.engine
                    .on_late_event(&admitted.accepted_event(), &self.registry, alerts)
            }
        }
        self.observe_alerts(first_new_alert, alerts, wall_millis);
    }

    /// The watermark moved to `watermark_millis`: resolves alerts, fires the statistical
    /// rules' (see [`RuleEngine::on_watermark`]).
    pub fn on_watermark(
        &mut self,
        watermark_millis: i64,
        wall_millis: i64,
        alerts: &mut Vec<Alert>,
    ) {
        let first_new_alert = alerts.len();
        self.engine
            .on_watermark(watermark_millis, &self.registry, alerts);
        self.observe_alerts(first_new_alert, alerts, wall_millis);
    }

    /// Swaps the rule set (see [`RuleEngine::replace_rules`]).
    pub fn replace_rules(&mut self, rules: RuleSet, wall_millis: i64, alerts: &mut Vec<Alert>) {
        let first_new_alert = alerts.len();
        self.engine.replace_rules(rules, alerts);
        self.observe_alerts(first_new_alert, alerts, wall_millis);
    }

    /// The engine, for stats, state and the active alerts.
    pub fn engine(&self) -> &RuleEngine {
        &self.engine
    }

    /// The engine, for a restore.
    pub fn engine_mut(&mut self) -> &mut RuleEngine {
        &mut self.engine
    }

    fn observe_alerts(&self, first_new_alert: usize, alerts: &[Alert], wall_millis: i64) {
        let new_alerts = alerts.get(first_new_alert..).unwrap_or_default();
        // Most records and watermarks change no alert: no call (a call per record, to loop
        // over nothing, was 28 M instructions of a 1 M-event replay).
        if new_alerts.is_empty() {
            return;
        }
        super::metrics::record_alert_changes(&self.metrics, new_alerts, wall_millis);
    }
}
