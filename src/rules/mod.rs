//! Rules and alerts: the rules file ([`RuleSet`]) and the engine ([`RuleEngine`]) that turns
//! accepted events and watermark advances into alert state changes ([`crate::proto::Alert`]).
//!
//! Everything is synchronous, owns no tasks or locks, and is deterministic: the same events and
//! watermarks in the same order produce the same alerts with the same ids (all state lives in
//! `BTreeMap`s; time is only ever event time passed in as an argument).
//!
//! # The rules file
//!
//! TOML, a list of `[[rule]]` tables (unknown fields are refused), tagged by `kind`:
//!
//! ```toml
//! [[rule]]
//! name = "life_safety"            # unique, snake_case [a-z0-9_]+
//! kind = "immediate"
//! event_types = ["FIRE_SMOKE", "GAS_LEAK", "ELECTRICAL_FAULT", "SOS", "ELDER_FALL"]
//! cooldown = "5m"                 # per-device cooldown for repeats (default 5m)
//!
//! [[rule]]
//! name = "perimeter_intrusion_burst"
//! kind = "threshold"
//! event_types = ["PERIMETER_INTRUSION"]
//! window = "15m"                  # sliding, a positive multiple of the pane size
//! min_count = 3
//! severity = 2                    # optional; default: the most severe default severity of the types
//! ```
//!
//! Event types are the protobuf enum names. Durations use humantime syntax ("90s", "5m",
//! "1h 30m"), at most 30 days. Validation does no IO and reports every problem at once
//! ([`RulesError::Invalid`], one problem per line, each naming the rule by 1-based index and
//! name): duplicate names, names outside `[a-z0-9_]+`, empty `event_types`, unknown type names
//! (all of them), `EVENT_TYPE_UNSPECIFIED`, a type listed twice, a zero or too long
//! `window`/`cooldown`, a window that is not a multiple of the pane size, `min_count` 0,
//! `severity` outside 1..=4, no rules at all. A TOML syntax or shape error (including an unknown
//! field or `kind`, or an unparsable duration) is [`RulesError::Parse`]. The defaults are
//! embedded from `seeds/rules.toml`; [`RuleSet::version`] is the first 12 hex chars of the
//! sha256 of the file text.
//!
//! # Alert identity
//!
//! - `fingerprint` = first 16 hex chars of sha256(`"{rule}|{grid_id}|{scope}"`), where scope is
//!   the event type name for immediate rules (one alert per rule, cell and type) and the rule's
//!   type names sorted and joined by `+` for threshold rules (one alert per rule and cell).
//! - `alert_id` = first 32 hex chars of sha256(`"{fingerprint}|{starts_at_millis}"`): every
//!   occurrence (fire → resolve) of a fingerprint has its own id; updates keep it.
//! - `event_ids` holds at most 20 ids, oldest first (the most recent ones are kept).
//! - `updated_at` is the event time of the state change (`ends_at` for a RESOLVED alert).
//! - Occurrences of one fingerprint never overlap: a new occurrence starts at the later of its
//!   first event's time and the previous occurrence's `ends_at` (when still remembered: for a
//!   cooldown after an immediate alert resolved; while a threshold series has panes). So
//!   alert ids never repeat as long as the allowed lateness is shorter than the cooldowns and
//!   windows (a late event cannot then predate a forgotten occurrence's end).
//!
//! # Immediate rules
//!
//! For each matching event, keyed by (rule, cell, event type):
//! - no alert firing → FIRING is emitted: `starts_at` = the event time (see above for a late
//!   event inside the previous occurrence), `observed` = 1,
//!   `threshold` = 1, `severity` = the event's, `device_id` = its device, `event_ids` = [its id];
//! - firing, and the same device emitted a change less than `cooldown` before this event's time
//!   (by event time; an out-of-order earlier repeat counts as inside) → a suppressed repeat:
//!   nothing is emitted, the repeat is counted in [`RuleStats`] and folded into the state
//!   (`observed`, `event_ids`, most severe `severity`, last event time);
//! - firing, and another device (or the device's cooldown has passed) → an update is emitted:
//!   same `alert_id`, FIRING, `observed` incremented (it counts every matching event of the
//!   occurrence, suppressed repeats included), `updated_at` = the event time, `event_ids`
//!   grown; `device_id` stays the device that triggered the alert. Events without a device id
//!   share one "device". Nothing else rate-limits severity-1 events.
//! - Resolution: when the watermark reaches (≥) the latest matching event time + `cooldown`,
//!   RESOLVED is emitted with `ends_at` = that time, and the next matching event fires a new
//!   occurrence (a new `alert_id`).
//!
//! # Threshold rules
//!
//! Per (rule, cell), pane counts of matching events (panes aligned to the pane size `P`):
//! - on an event at `t`: its pane `p = floor(t/P)·P` is incremented; the count over the panes
//!   in `[p − window + P, p]` is taken; if not firing and it is ≥ `min_count` → FIRING with
//!   `starts_at` = `t` (the event that completed the condition), `observed` = that count,
//!   `threshold` = `min_count`, `event_type` = that event's type, `severity` = the rule's, and
//!   `event_ids` = the remembered matching events within those panes (oldest first, ≤ 20).
//!   While firing nothing is emitted; `observed` keeps the largest such count and `event_ids`
//!   grows (capped).
//! - on a watermark `W`, once per pane boundary: `aligned = floor(W/P)·P`; panes starting
//!   before `aligned − window` are pruned; a firing series whose remaining count (all kept
//!   panes, including panes ahead of `W`) is below `min_count` → RESOLVED with `ends_at` =
//!   `aligned` (and the largest `observed`). Empty, non-firing series are forgotten. Firing
//!   again later is a new occurrence with a new `alert_id`.
//!
//! # Order and reloads
//!
//! One event emits its alerts in rule file order. One watermark call emits its RESOLVED alerts
//! sorted by fingerprint (immediate and threshold together). The state
//! ([`RuleEngineState`]) keys everything by rule name and carries what a resolution needs, so
//! a snapshot restored under an edited rule set stays consistent: immediate alerts of a removed
//! rule still resolve after their cooldown, threshold series of a removed rule resolve at the
//! next pane boundary.

pub mod alert;
pub mod immediate;
pub mod ruleset;
pub mod threshold;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use alert::{
    alert_id, fingerprint, AlertOccurrence, MAX_ALERT_EVENT_IDS, RULE_KIND_IMMEDIATE,
    RULE_KIND_THRESHOLD,
};
pub use immediate::{FiringImmediateAlert, ImmediateState, ResolvedImmediateAlert};
pub use ruleset::{
    ImmediateRule, Rule, RuleSet, RulesError, ThresholdRule, DEFAULT_COOLDOWN, EMBEDDED_RULES_TOML,
    MAX_RULE_DURATION,
};
pub use threshold::{RecentEvent, ThresholdSeries, ThresholdState};

use crate::event::AcceptedEvent;
use crate::grid::{CellIndex, GridRegistry};
use crate::proto::Alert;
use immediate::ImmediateOutcome;

/// The registry labels of a cell that alerts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CellLabels<'a> {
    /// 14-digit grid id.
    pub(crate) grid_id: &'a str,
    /// 12-digit community code.
    pub(crate) community_id: &'a str,
    /// 6-digit district code.
    pub(crate) district_id: &'a str,
}

/// The labels of a cell, or `None` for an index that is not in `registry`.
fn cell_labels(registry: &GridRegistry, cell: CellIndex) -> Option<CellLabels<'_>> {
    let cell_record = registry.cells().get(usize::try_from(cell.0).ok()?)?;
    let community = registry
        .communities()
        .get(usize::try_from(cell_record.community.0).ok()?)?;
    Some(CellLabels {
        grid_id: &cell_record.grid_id,
        community_id: &community.id,
        district_id: &community.district_code,
    })
}

/// Counters of one rule, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// FIRING alerts that started a new occurrence.
    pub fired: u64,
    /// FIRING updates of an already firing alert (immediate rules only).
    pub updated: u64,
    /// Repeats from the same device inside its cooldown, folded in without an alert.
    pub suppressed_repeats: u64,
    /// RESOLVED alerts.
    pub resolved: u64,
}

/// Engine counters for metrics. Not part of the snapshot state: like Prometheus counters they
/// count from process start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Counters per rule name (every rule of the set has an entry, plus any removed rule that
    /// resolved alerts restored from a snapshot).
    pub per_rule: BTreeMap<String, RuleCounters>,
    /// Events matched by some rule whose cell is not in the registry (skipped; cannot happen
    /// when cells come from the same registry).
    pub events_with_unknown_cell: u64,
}

/// The engine's mutable state, the part that a snapshot must carry (postcard-friendly and
/// deterministic: only `BTreeMap`s, `Vec`s and plain values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEngineState {
    /// Firing immediate alerts.
    pub immediate: ImmediateState,
    /// Threshold pane counts and firing threshold alerts.
    pub threshold: ThresholdState,
}

/// Evaluates a [`RuleSet`] over accepted events and watermark advances.
#[derive(Debug)]
pub struct RuleEngine {
    /// The rules (immutable; a reload builds a new engine and restores the state into it).
    rules: RuleSet,
    /// Rule indexes by `EventType as i32`, in file order: which rules an event type feeds.
    rule_indexes_by_event_type: Vec<Vec<usize>>,
    /// The snapshot-able state.
    state: RuleEngineState,
    /// Counters for metrics.
    stats: RuleStats,
    /// No immediate alert resolves (nor is a resolved one forgotten) before this watermark (a
    /// lower bound; `None` means unknown): lets frequent watermark advances skip scanning the
    /// immediate state. Derived, so not in the snapshot.
    earliest_immediate_resolution_millis: Option<i64>,
}

impl RuleEngine {
    /// An engine with empty state.
    pub fn new(rules: RuleSet) -> Self {
        let mut rule_indexes_by_event_type: Vec<Vec<usize>> = Vec::new();
        let mut per_rule: BTreeMap<String, RuleCounters> = BTreeMap::new();
        for (rule_index, rule) in rules.rules().iter().enumerate() {
            per_rule.insert(rule.name().to_string(), RuleCounters::default());
            for event_type in rule.event_types() {
                let Ok(type_number) = usize::try_from(*event_type as i32) else {
                    continue;
                };
                if rule_indexes_by_event_type.len() <= type_number {
                    rule_indexes_by_event_type.resize_with(type_number + 1, Vec::new);
                }
                if let Some(rule_indexes) = rule_indexes_by_event_type.get_mut(type_number) {
                    rule_indexes.push(rule_index);
                }
            }
        }
        RuleEngine {
            rules,
            rule_indexes_by_event_type,
            state: RuleEngineState::default(),
            stats: RuleStats {
                per_rule,
                events_with_unknown_cell: 0,
            },
            earliest_immediate_resolution_millis: None,
        }
    }

    /// The rules being evaluated.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Called for every accepted (not duplicate, not late) event, in arrival order; appends
    /// the alert state changes it causes (in rule file order).
    pub fn on_event(
        &mut self,
        accepted_event: &AcceptedEvent<'_>,
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        if !self.has_rules_for(accepted_event) {
            return;
        }
        let Some(labels) = cell_labels(registry, accepted_event.cell) else {
            self.stats.events_with_unknown_cell =
                self.stats.events_with_unknown_cell.saturating_add(1);
            return;
        };
        self.apply_matching_event(accepted_event, &labels, out);
    }

    /// Called whenever the operator watermark advances (after windows were flushed); appends
    /// the RESOLVED alerts it causes, sorted by fingerprint.
    pub fn on_watermark(
        &mut self,
        watermark_millis: i64,
        _registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        self.advance_watermark(watermark_millis, out);
    }

    /// Currently firing alerts, sorted by fingerprint.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let immediate_alerts = self
            .state
            .immediate
            .firing
            .values()
            .flat_map(|alerts_of_rule| alerts_of_rule.values())
            .map(|firing| firing.occurrence.firing_alert());
        let threshold_alerts = self
            .state
            .threshold
            .series
            .values()
            .flat_map(|series_by_cell| series_by_cell.values())
            .filter_map(|series| series.firing.as_ref())
            .map(AlertOccurrence::firing_alert);
        let mut alerts: Vec<Alert> = immediate_alerts.chain(threshold_alerts).collect();
        alerts.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        alerts
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &RuleStats {
        &self.stats
    }

    /// The mutable state, for snapshots.
    pub fn state(&self) -> &RuleEngineState {
        &self.state
    }

    /// Replaces the state with one from a snapshot (possibly taken under another rule set).
    pub fn restore_state(&mut self, state: RuleEngineState) {
        self.state = state;
        self.earliest_immediate_resolution_millis = None;
    }

    fn has_rules_for(&self, accepted_event: &AcceptedEvent<'_>) -> bool {
        usize::try_from(accepted_event.event_type as i32)
            .ok()
            .and_then(|type_number| self.rule_indexes_by_event_type.get(type_number))
            .is_some_and(|rule_indexes| !rule_indexes.is_empty())
    }

    /// [`RuleEngine::on_event`] once the cell's labels are known.
    fn apply_matching_event(
        &mut self,
        accepted_event: &AcceptedEvent<'_>,
        labels: &CellLabels<'_>,
        out: &mut Vec<Alert>,
    ) {
        let Some(rule_indexes) = usize::try_from(accepted_event.event_type as i32)
            .ok()
            .and_then(|type_number| self.rule_indexes_by_event_type.get(type_number))
        else {
            return;
        };
        for rule_index in rule_indexes {
            let Some(rule) = self.rules.rules().get(*rule_index) else {
                continue;
            };
            let counters = self
                .stats
                .per_rule
                .entry(rule.name().to_string())
                .or_default();
            match rule {
                Rule::Immediate(immediate_rule) => {
                    let (outcome, resolves_at_millis) = immediate::on_matching_event(
                        &mut self.state.immediate,
                        immediate_rule,
                        accepted_event,
                        labels,
                        out,
                    );
                    match outcome {
                        ImmediateOutcome::Fired => {
                            counters.fired = counters.fired.saturating_add(1)
                        }
                        ImmediateOutcome::Updated => {
                            counters.updated = counters.updated.saturating_add(1)
                        }
                        ImmediateOutcome::Suppressed => {
                            counters.suppressed_repeats =
                                counters.suppressed_repeats.saturating_add(1)
                        }
                    }
                    if let Some(earliest_millis) = &mut self.earliest_immediate_resolution_millis {
                        *earliest_millis = (*earliest_millis).min(resolves_at_millis);
                    }
                }
                Rule::Threshold(threshold_rule) => {
                    let fired = threshold::on_matching_event(
                        &mut self.state.threshold,
                        threshold_rule,
                        self.rules.pane_size_millis(),
                        accepted_event,
                        labels,
                        out,
                    );
                    if fired {
                        counters.fired = counters.fired.saturating_add(1);
                    }
                }
            }
        }
    }

    /// [`RuleEngine::on_watermark`] (which needs no registry: the state carries the labels).
    fn advance_watermark(&mut self, watermark_millis: i64, out: &mut Vec<Alert>) {
        let mut resolved: Vec<Alert> = Vec::new();
        let may_resolve_immediate = self
            .earliest_immediate_resolution_millis
            .is_none_or(|earliest_millis| watermark_millis >= earliest_millis);
        if may_resolve_immediate {
            let earliest_remaining_millis =
                immediate::resolve_due(&mut self.state.immediate, watermark_millis, &mut resolved);
            self.earliest_immediate_resolution_millis = Some(earliest_remaining_millis);
        }
        threshold::on_watermark(
            &mut self.state.threshold,
            &self.rules,
            watermark_millis,
            &mut resolved,
        );
        resolved.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        for alert in &resolved {
            let counters = self.stats.per_rule.entry(alert.rule.clone()).or_default();
            counters.resolved = counters.resolved.saturating_add(1);
        }
        out.append(&mut resolved);
    }
}

#[cfg(test)]
mod tests;
