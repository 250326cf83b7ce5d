//! Rules and alerts: the rules file ([`RuleSet`]) and the engine ([`RuleEngine`]) that turns
//! accepted events and watermark advances into alert state changes ([`crate::proto::Alert`]).
//!
//! Six kinds of rule: `immediate` and `threshold` (below), the statistical `spike`
//! ([`spike`]) and `cusum` ([`cusum`]) rules over a learned Poisson baseline ([`baseline`],
//! [`statistics`]), the space-time scan `scan` ([`scan`], [`space_time`]) for clusters of
//! neighbouring communities, and the operations rule `data_gap` ([`data_gap`]). Maintenance windows
//! ([`suppression`]) mark alerts instead of dropping them.
//!
//! # Where a kind lives
//!
//! Each kind is one file: its `[[rule]]` table, validation, snapshot state and runtime, behind
//! the [`RuleKind`] trait ([`kind`]). The engine below knows no kind by name: the kinds are
//! listed once, in [`kinds`], which writes the [`Rule`] enum, the tagged rules-file table,
//! the snapshot state ([`RuleEngineState`], one field per kind) and the loops over kinds.
//! What every kind's series share — the alert lifecycle that keeps occurrences from
//! overlapping, pane counts, recent event ids — is in [`series`]; alert units and their labels
//! are in [`units`]. Adding a kind is therefore one file plus one line in [`kinds`].
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
//! scope = "cell"                  # optional: "cell" (default) or "community" (its cells summed)
//!
//! [[rule]]
//! name = "fraud_wave_spike"
//! kind = "spike"                  # improbable count under the baseline (see `spike`)
//! event_types = ["FRAUD_WARNING", "FRAUD_REPORTED"]   # one series per type
//! window = "1h"                   # a multiple of the pane size
//! scope = "community"             # optional, default "cell"
//! min_count = 3                   # optional, default 3
//! fdr = 0.01                      # optional: Benjamini–Hochberg q, in (0, 1), default 0.01
//! resolve_at_expected = 1.0       # optional: "back near baseline" is count ≤ this × expected, 0..=100
//! resolve_hold = "1h"             # optional: resolve once back near baseline this long, ≤ 7 days, default 1h
//! severity = 2                    # optional, as for threshold
//!
//! [[rule]]
//! name = "fraud_wave_cusum"
//! kind = "cusum"                  # sustained rate shift (see `cusum`)
//! event_types = ["FRAUD_WARNING", "FRAUD_REPORTED"]
//! interval = "15m"                # a multiple of the pane size
//! scope = "community"             # optional, default "cell"
//! shift = 2.0                     # optional: λ1/λ0, in (1, 100], default 2
//! arl0 = 2000                     # optional: in-control ARL in intervals, 10..=1e7, default 2000
//! min_events = 3                  # optional: events within min_events_within before it fires, 1..=20
//! min_events_within = "24h"       # optional, default 24 h
//! severity = 2                    # optional, as for threshold
//!
//! [[rule]]
//! name = "data_gap"
//! kind = "data_gap"               # silent cells / offline devices (see `data_gap`); no event_types
//! scope = "cell"                  # optional, default "cell"
//! window = "10m"                  # optional: offline devices are counted within it, default 10m
//! min_offline_devices = 3         # optional, default 3
//! silence = "2h"                  # optional: a multiple of the pane size, default 2h
//! alpha = 1e-7                    # optional: silence fires when P(0 events) < alpha, default 1e-7
//! severity = 4                    # optional: default 4 for cells, 2 for communities
//!
//! [baseline]                      # optional table
//! weeks = 4                       # learned baseline: trailing mean of this many weeks (1..=52)
//! shrinkage_weeks = 2.0           # k of the shrinkage toward the community mean (0..=1000)
//!
//! [[suppression]]                 # maintenance windows, see `suppression`
//! name = "elevator-maintenance-2026-03"
//! grid_id = "41061100100101"      # exactly one of device_id / grid_id / community_id
//! start = "2026-03-02T09:00:00+08:00"
//! end = "2026-03-02T12:00:00+08:00"
//! reason = "planned elevator camera work"
//! rules = ["ebike_in_elevator_repeat"]
//! ```
//!
//! Event types are the protobuf enum names. Durations use humantime syntax ("90s", "5m",
//! "1h 30m"), at most 30 days. Validation does no IO and reports every problem at once
//! ([`RulesError::Invalid`], one problem per line, each naming the rule by 1-based index and
//! name): duplicate names, names outside `[a-z0-9_]+`, empty `event_types`, unknown type names
//! (all of them), `EVENT_TYPE_UNSPECIFIED`, a type listed twice, a zero or too long
//! `window`/`cooldown`, a window that is not a multiple of the pane size, `min_count` 0,
//! `severity` outside 1..=4, `fdr`/`alpha` outside (0, 1), `shift` outside (1, 100], `arl0`
//! outside 10..=1e7, `min_offline_devices` 0, invalid `[baseline]` values, no rules at all;
//! and for suppressions: a duplicate or malformed name, not exactly one target, an
//! unparsable time, `end` not after `start`, unknown rule names. A TOML syntax or shape error (including an unknown
//! field or `kind`, or an unparsable duration) is [`RulesError::Parse`]. The defaults are
//! embedded from `seeds/rules.toml`; [`RuleSet::version`] is the first 12 hex chars of the
//! sha256 of the file text.
//!
//! # Alert identity
//!
//! - `fingerprint` = first 16 hex chars of sha256(`"{rule}|{location}|{scope}"`), where the
//!   location is the grid id (or the community id for `scope = "community"` rules, whose
//!   alerts have an empty `grid_id`) and scope is the event type name for immediate, spike and
//!   cusum rules (one alert per rule, unit and type), the rule's type names sorted and joined
//!   by `+` for threshold rules (one alert per rule and unit), and `data_gap` for data-gap
//!   rules.
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
//! # Order, reloads and snapshots
//!
//! One event emits its alerts in rule file order (data-gap resolutions included). One
//! watermark call emits its alerts — RESOLVED ones, and the FIRING ones of spike, cusum and
//! data-gap rules — sorted by fingerprint (stable). Every emitted FIRING change is then marked
//! with `suppressed_by` ([`suppression`]). The state ([`RuleEngineState`]) keys everything by
//! rule name and carries what a resolution needs, so a snapshot restored under an edited rule
//! set stays consistent: immediate alerts of a removed rule still resolve after their
//! cooldown; threshold, spike, cusum and data-gap alerts of a removed rule resolve at the next
//! watermark. The learned baseline is part of the state.
//!
//! [`RuleEngine::replace_rules`] (hot reload) swaps the rule set in place: rules whose
//! definition is unchanged (same name, equal validated [`Rule`]) keep their state; the state
//! of removed or changed rules is dropped, and their FIRING alerts are emitted RESOLVED at once
//! into the caller's `out` (with `ends_at` = the last watermark, or the alert's last update if
//! later), sorted by fingerprint, so nothing vanishes silently. Counters ([`RuleStats`]) are
//! kept for every name (they count from process start, like Prometheus counters).

// No panic path reachable from input, state or configuration (README "Security").

pub mod alert;
pub mod baseline;
pub mod cusum;
pub mod data_gap;
pub mod immediate;
pub mod kind;
pub mod kinds;
pub mod ruleset;
pub mod scan;
pub mod series;
pub mod simulation;
pub mod space_time;
pub mod spike;
pub mod statistics;
pub mod suppression;
pub mod threshold;
pub mod units;
pub mod whole_city;

use std::collections::{BTreeMap, BTreeSet};

pub use alert::{alert_id, fingerprint, AlertOccurrence, MAX_ALERT_EVENT_IDS};
pub use baseline::{Baseline, BaselineError, BaselineState, SeedRate, TypeSeed};
pub use kind::RuleKind;
pub use kinds::{Rule, RuleEngineState, RULE_KIND_NAMES};
pub use ruleset::{
    AlertScope, BaselineSettings, RuleSet, RulesError, Suppression, SuppressionTarget,
    EMBEDDED_RULES_TOML, MAX_RULE_DURATION,
};
pub use series::{AlertLifecycle, RecentEvent};

use crate::event::AcceptedEvent;
use crate::grid::GridRegistry;
use crate::proto::{Alert, AlertStatus, EventType};
use kind::{EventOutcome, MatchingEvent};
#[cfg(test)]
use kinds::DueMillis;
use kinds::{DerivedKindState, WatermarkInputs};
use units::cell_labels;

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
    /// FIRING state changes (new alerts and updates) marked `suppressed_by` a maintenance
    /// window: written, but not to be paged.
    pub maintenance_suppressed: u64,
}

/// Engine counters for metrics. Not part of the snapshot state: like Prometheus counters they
/// count from process start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Counters per rule name (every rule of the set has an entry, plus any removed rule that
    /// resolved alerts restored from a snapshot or replaced).
    pub per_rule: BTreeMap<String, RuleCounters>,
    /// Events matched by some rule whose cell is not in the registry (skipped; cannot happen
    /// when cells come from the same registry).
    pub events_with_unknown_cell: u64,
    /// All FIRING state changes marked `suppressed_by` (the sum of the per-rule
    /// `maintenance_suppressed`).
    pub maintenance_suppressed_total: u64,
}

impl RuleStats {
    /// Applies `update` to the counters of `rule_name`, created on first use. Looked up by
    /// `&str` first: this runs for every rule an event matches, and building the owned key
    /// each time (an allocation, then a tree search by it) showed in the counting thread's
    /// profile.
    fn update_counters(&mut self, rule_name: &str, update: impl FnOnce(&mut RuleCounters)) {
        if let Some(counters) = self.per_rule.get_mut(rule_name) {
            update(counters);
            return;
        }
        update(self.per_rule.entry(rule_name.to_string()).or_default());
    }

    /// Counts what one matching event did to `rule_name`'s alert. Most matching events change
    /// no alert: their rule's counters (a search by name) are then left alone, and inlined,
    /// the call too (it was called for every matching event, 2 M times in a 1 M-event replay;
    /// a plain `#[inline]` left the call in place).
    #[inline(always)]
    fn record_outcome(&mut self, rule_name: &str, outcome: EventOutcome) {
        if outcome == EventOutcome::default() {
            return;
        }
        self.update_counters(rule_name, |counters| counters.record(outcome));
    }
}

impl RuleCounters {
    /// Counts what one matching event did.
    fn record(&mut self, outcome: EventOutcome) {
        if outcome.fired {
            self.fired = self.fired.saturating_add(1);
        }
        if outcome.updated {
            self.updated = self.updated.saturating_add(1);
        }
        if outcome.suppressed_repeat {
            self.suppressed_repeats = self.suppressed_repeats.saturating_add(1);
        }
        if outcome.resolved {
            self.resolved = self.resolved.saturating_add(1);
        }
    }
}

/// Evaluates a [`RuleSet`] over accepted events and watermark advances.
#[derive(Debug)]
pub struct RuleEngine {
    /// The rules ([`RuleEngine::replace_rules`] swaps them).
    rules: RuleSet,
    /// The seeded baseline rates.
    baseline: Baseline,
    /// Rule indexes by `EventType as i32`, in file order: which rules an event type feeds.
    rule_indexes_by_event_type: Vec<Vec<usize>>,
    /// `EventType as i32` of the types whose baseline is learned (those of rules that need
    /// it, [`Rule::learns_baseline`]).
    learned_types: BTreeSet<i32>,
    /// The snapshot-able state.
    state: RuleEngineState,
    /// What each kind derives from the rules (caches, indexes): rebuilt whenever the rules or
    /// the state are replaced, so not in the snapshot.
    derived: DerivedKindState,
    /// Counters for metrics.
    stats: RuleStats,
    /// The engine sees one partition of the city: data-gap silence only for cells with
    /// activity here (a setting, not state).
    partial_input: bool,
}

impl RuleEngine {
    /// Marks the engine as seeing only part of the city's cells (one Kafka partition of an
    /// input keyed by cell): data-gap silence is then tested only for cells that have had
    /// activity in this engine, and a community's silence only over those of its cells.
    /// Rules that need the whole city ([`Rule::needs_whole_city`]) then see no events here:
    /// judged on part of a district they would be wrong, so the whole-city detector
    /// ([`whole_city`]) evaluates them instead.
    pub fn set_partial_input(&mut self, partial_input: bool) {
        self.partial_input = partial_input;
        self.index_rules();
    }

    /// An engine with empty state and the embedded seeded baseline ([`Baseline::embedded`]).
    pub fn new(rules: RuleSet) -> Self {
        RuleEngine::with_baseline(rules, Baseline::embedded())
    }

    /// An engine with empty state and the given seeded baseline.
    pub fn with_baseline(rules: RuleSet, baseline: Baseline) -> Self {
        let mut engine = RuleEngine {
            derived: DerivedKindState::new(&rules),
            rules,
            baseline,
            rule_indexes_by_event_type: Vec::new(),
            learned_types: BTreeSet::new(),
            state: RuleEngineState::default(),
            stats: RuleStats::default(),
            partial_input: false,
        };
        engine.index_rules();
        engine
    }

    /// Rebuilds everything derived from the rule set.
    fn index_rules(&mut self) {
        let mut rule_indexes_by_event_type: Vec<Vec<usize>> = Vec::new();
        let mut learned_types: BTreeSet<i32> = BTreeSet::new();
        for (rule_index, rule) in self.rules.rules().iter().enumerate() {
            // Every rule of the set has counters, even before its first event.
            self.stats.update_counters(rule.name(), |_| ());
            if rule.learns_baseline() {
                learned_types.extend(rule.event_types().iter().map(|t| *t as i32));
            }
            if self.partial_input && rule.needs_whole_city() {
                continue;
            }
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
        self.rule_indexes_by_event_type = rule_indexes_by_event_type;
        self.state.baseline.set_learned_types(&learned_types);
        self.learned_types = learned_types;
        self.derived = DerivedKindState::new(&self.rules);
    }

    /// The rules being evaluated.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The seeded baseline.
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Called for every accepted (not duplicate, not late) event, in arrival order; appends
    /// the alert state changes it causes (in rule file order), marked with `suppressed_by`.
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
        self.state.observe_event(&mut self.derived, accepted_event);
        self.state.baseline.on_event(
            accepted_event.cell,
            accepted_event.event_type,
            accepted_event.occurred_at_millis,
        );
        let first_new_alert = out.len();
        let matching_event = MatchingEvent {
            accepted_event,
            cell_labels: &labels,
            registry,
            pane_size_millis: self.rules.pane_size_millis(),
        };
        self.apply_matching_event(&matching_event, out);
        if let Some(new_alerts) = out.get_mut(first_new_alert..) {
            self.mark_suppressed(new_alerts);
        }
    }

    /// Called for a valid, located, non-duplicate event whose window was already final (it is
    /// dead-lettered as late): only immediate (life-safety) rules see it, since a late window
    /// must never stop a fire, gas, SOS or fall alarm. The alert changes it causes are marked
    /// `late`. Counting rules, baselines and data-gap activity do not see it, as its window
    /// was already decided without it.
    pub fn on_late_event(
        &mut self,
        accepted_event: &AcceptedEvent<'_>,
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        let Some(rule_indexes) =
            rules_of_event_type(&self.rule_indexes_by_event_type, accepted_event.event_type)
        else {
            return;
        };
        let Some(labels) = cell_labels(registry, accepted_event.cell) else {
            self.stats.events_with_unknown_cell =
                self.stats.events_with_unknown_cell.saturating_add(1);
            return;
        };
        let first_new_alert = out.len();
        let matching_event = MatchingEvent {
            accepted_event,
            cell_labels: &labels,
            registry,
            pane_size_millis: self.rules.pane_size_millis(),
        };
        for rule_index in rule_indexes {
            let Some(rule) = self.rules.rules().get(*rule_index) else {
                continue;
            };
            if !rule.sees_late_events() {
                continue;
            }
            let outcome = rule.on_matching_event(
                &mut self.state,
                &mut self.derived,
                (&self.rules, self.partial_input),
                &matching_event,
                out,
            );
            self.stats.record_outcome(rule.name(), outcome);
        }
        if let Some(new_alerts) = out.get_mut(first_new_alert..) {
            for alert in new_alerts.iter_mut() {
                alert.late = true;
            }
            self.mark_suppressed(new_alerts);
        }
    }

    /// Called whenever the operator watermark advances (after windows were flushed); appends
    /// the alert state changes it causes (RESOLVED alerts of every kind, FIRING alerts of
    /// spike, cusum and data-gap rules), sorted by fingerprint and marked with `suppressed_by`.
    pub fn on_watermark(
        &mut self,
        watermark_millis: i64,
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        self.advance_watermark(watermark_millis, registry, out);
    }

    /// Swaps the rule set (hot reload). Rules with an unchanged definition keep their state
    /// (firing alerts, counts, charts); the state of removed or changed rules is dropped and
    /// their FIRING alerts are appended to `out` as RESOLVED (`ends_at` = the last watermark,
    /// or the alert's last update if later), sorted by fingerprint. The learned baseline is
    /// kept for the types still learned.
    pub fn replace_rules(&mut self, rules: RuleSet, out: &mut Vec<Alert>) {
        let dropped_rule_names: BTreeSet<String> = self
            .rules
            .rules()
            .iter()
            .filter(|old_rule| rules.rule(old_rule.name()) != Some(*old_rule))
            .map(|old_rule| old_rule.name().to_string())
            .collect();
        let mut dropped_firing: Vec<AlertOccurrence> = Vec::new();
        for rule_name in &dropped_rule_names {
            self.state.remove_rule(rule_name, &mut dropped_firing);
        }
        let last_watermark_millis = self.state.last_watermark_millis;
        let mut resolved: Vec<Alert> = dropped_firing
            .iter()
            .map(|occurrence| {
                let ends_at_millis = last_watermark_millis
                    .map_or(occurrence.updated_at_millis, |watermark| {
                        watermark.max(occurrence.updated_at_millis)
                    });
                occurrence.resolved_alert(ends_at_millis)
            })
            .collect();
        resolved.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        self.count_resolved(&resolved);
        out.append(&mut resolved);
        self.rules = rules;
        self.index_rules();
    }

    /// Currently firing alerts, sorted by fingerprint, marked with `suppressed_by` at their
    /// `updated_at`.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self
            .state
            .firing_alerts()
            .into_iter()
            .map(AlertOccurrence::firing_alert)
            .collect();
        alerts.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        suppression::mark_suppressed(self.rules.suppressions(), &mut alerts);
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

    /// The learned baseline (hourly counts of the learned types).
    pub fn learned_baseline(&self) -> &BaselineState {
        &self.state.baseline
    }

    /// Takes over `earlier`'s closed hours that ended by `observed_from_millis`, where this
    /// engine's own input starts ([`BaselineState::adopt_closed_hours_before`]).
    pub fn adopt_learned_history(&mut self, earlier: &BaselineState, observed_from_millis: i64) {
        self.state
            .baseline
            .adopt_closed_hours_before(earlier, observed_from_millis);
        self.derived = DerivedKindState::new(&self.rules);
    }

    /// Replaces the state with one from a snapshot (possibly taken under another rule set).
    pub fn restore_state(&mut self, state: RuleEngineState) {
        self.state = state;
        self.state.baseline.set_learned_types(&self.learned_types);
        self.derived = DerivedKindState::new(&self.rules);
    }

    fn has_rules_for(&self, accepted_event: &AcceptedEvent<'_>) -> bool {
        self.has_rules_for_type(accepted_event.event_type)
    }

    /// Whether any rule this engine evaluates sees events of `event_type`.
    pub fn has_rules_for_type(&self, event_type: EventType) -> bool {
        rules_of_event_type(&self.rule_indexes_by_event_type, event_type)
            .is_some_and(|rule_indexes| !rule_indexes.is_empty())
    }

    /// Marks suppressed alerts and counts them. Inlined: called for every event and watermark
    /// advance, almost always with no alert.
    #[inline(always)]
    fn mark_suppressed(&mut self, alerts: &mut [Alert]) {
        for alert in alerts.iter_mut() {
            let Some(name) = suppression::matching_suppression(self.rules.suppressions(), alert)
            else {
                alert.suppressed_by.clear();
                continue;
            };
            alert.suppressed_by = name.to_string();
            self.stats.update_counters(&alert.rule, |counters| {
                counters.maintenance_suppressed = counters.maintenance_suppressed.saturating_add(1);
            });
            self.stats.maintenance_suppressed_total =
                self.stats.maintenance_suppressed_total.saturating_add(1);
        }
    }

    /// Counts RESOLVED alerts per rule. Inlined, like [`RuleEngine::mark_suppressed`].
    #[inline(always)]
    fn count_resolved(&mut self, alerts: &[Alert]) {
        for alert in alerts {
            if alert.status == AlertStatus::Resolved as i32 {
                self.stats.update_counters(&alert.rule, |counters| {
                    counters.resolved = counters.resolved.saturating_add(1);
                });
            }
        }
    }

    /// Hands an event of a known cell to every rule matching its type, in file order.
    fn apply_matching_event(&mut self, matching_event: &MatchingEvent<'_>, out: &mut Vec<Alert>) {
        let Some(rule_indexes) = rules_of_event_type(
            &self.rule_indexes_by_event_type,
            matching_event.accepted_event.event_type,
        ) else {
            return;
        };
        for rule_index in rule_indexes {
            let Some(rule) = self.rules.rules().get(*rule_index) else {
                continue;
            };
            let outcome = rule.on_matching_event(
                &mut self.state,
                &mut self.derived,
                (&self.rules, self.partial_input),
                matching_event,
                out,
            );
            self.stats.record_outcome(rule.name(), outcome);
        }
    }

    /// [`RuleEngine::on_watermark`].
    fn advance_watermark(
        &mut self,
        watermark_millis: i64,
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        self.state.last_watermark_millis = Some(
            self.state
                .last_watermark_millis
                .map_or(watermark_millis, |last| last.max(watermark_millis)),
        );
        // The watermark moves with nearly every event and most advances reach no due time;
        // such an advance changes nothing but the last watermark (it skipped every kind and the
        // baseline anyway, and then sorted and counted no changes: 87 instructions an advance).
        if watermark_millis < self.derived.due.earliest() {
            return;
        }
        let mut changes: Vec<Alert> = Vec::new();
        let inputs = WatermarkInputs {
            watermark_millis,
            rules: &self.rules,
            seeds: &self.baseline,
            registry,
            partial_input: self.partial_input,
        };
        self.state
            .on_watermark(&mut self.derived, &inputs, &mut changes);
        if watermark_millis >= self.derived.due.baseline {
            self.state
                .baseline
                .on_watermark(watermark_millis, self.rules.baseline_settings());
            self.derived.due.baseline = BaselineState::next_due_millis(watermark_millis);
        }
        changes.sort_by(|left, right| left.fingerprint.cmp(&right.fingerprint));
        for alert in &changes {
            if alert.status == AlertStatus::Firing as i32 {
                self.stats.update_counters(&alert.rule, |counters| {
                    counters.fired = counters.fired.saturating_add(1);
                });
            }
        }
        self.count_resolved(&changes);
        self.mark_suppressed(&mut changes);
        out.append(&mut changes);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_budget;
#[cfg(test)]
mod tests_stats;

/// The indexes of the rules `event_type` feeds (a free function, so the engine can borrow them
/// while it mutates its state).
fn rules_of_event_type(
    rule_indexes_by_event_type: &[Vec<usize>],
    event_type: EventType,
) -> Option<&Vec<usize>> {
    usize::try_from(event_type as i32)
        .ok()
        .and_then(|type_number| rule_indexes_by_event_type.get(type_number))
}
