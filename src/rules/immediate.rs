//! Immediate rules: alert on every matching event, folding a device's repeats into the firing
//! alert for the rule's cooldown; resolve once the watermark passes the last event + cooldown.
//!
//! A firing alert changes at most once per pane: another device's report inside the pane of
//! the alert's last change is counted (and its id kept, capped) but goes out with the next
//! change, so a flood of devices in one cell cannot make the alert re-emit itself per device.
//! Devices past their cooldown are forgotten once an alert remembers many.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alert::{alert_id, fingerprint, push_capped_event_id, AlertOccurrence};
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::units::CellLabels;
use crate::event::AcceptedEvent;
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by immediate rules.
pub const RULE_KIND_IMMEDIATE: &str = "immediate";

/// Cooldown of an immediate rule that does not set one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// A `kind = "immediate"` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmediateSpec {
    /// Unique rule name.
    name: String,
    /// Proto enum names of the matched types.
    event_types: Vec<String>,
    /// Per-device cooldown for repeats.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    cooldown: Duration,
}

fn default_cooldown() -> Duration {
    DEFAULT_COOLDOWN
}

/// A rule that alerts on every matching event, folding a device's repeats into the firing
/// alert for `cooldown_millis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmediateRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types, sorted by enum number, without duplicates.
    pub event_types: Vec<EventType>,
    /// Per-device cooldown for repeats, and how long after the last matching event the alert
    /// resolves.
    pub cooldown_millis: i64,
}

/// What the engine keeps derived for immediate rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImmediateDerived {
    /// No immediate alert resolves (nor is a resolved one forgotten) before this watermark (a
    /// lower bound; `None` means unknown): the kind's next due watermark, so that frequent
    /// watermark advances skip scanning the immediate state, which holds every firing
    /// life-safety alert of the city.
    earliest_resolution_millis: Option<i64>,
}

impl RuleKind for ImmediateRule {
    const NAME: &'static str = RULE_KIND_IMMEDIATE;
    const SEES_LATE_EVENTS: bool = true;
    type Spec = ImmediateSpec;
    type State = ImmediateState;
    type Derived = ImmediateDerived;

    fn spec_name(spec: &ImmediateSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: ImmediateSpec, validation: &mut RuleValidation<'_>) -> ImmediateRule {
        let event_types = validation.event_types(&spec.event_types);
        let cooldown_millis = validation.duration(spec.cooldown, "cooldown");
        ImmediateRule {
            name: spec.name,
            event_types,
            cooldown_millis,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    fn on_matching_event(
        &self,
        state: &mut ImmediateState,
        derived: &mut ImmediateDerived,
        event: &MatchingEvent<'_>,
        out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let (outcome, resolves_at_millis) = on_matching_event(
            state,
            self,
            event.accepted_event,
            event.cell_labels,
            event.pane_size_millis,
            out,
        );
        if let Some(earliest_millis) = &mut derived.earliest_resolution_millis {
            *earliest_millis = (*earliest_millis).min(resolves_at_millis);
        }
        EventOutcome {
            fired: outcome == ImmediateOutcome::Fired,
            updated: outcome == ImmediateOutcome::Updated,
            suppressed_repeat: outcome == ImmediateOutcome::Suppressed,
            resolved: false,
        }
    }

    /// The earliest resolution (a matching event brings it forward to its alert's).
    fn next_due_millis(
        _state: &ImmediateState,
        derived: &ImmediateDerived,
        _rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        derived.earliest_resolution_millis.unwrap_or(i64::MIN)
    }

    fn on_watermark(
        state: &mut ImmediateState,
        derived: &mut ImmediateDerived,
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        // The engine calls this only once the earliest resolution is due (`next_due_millis`).
        let earliest_remaining_millis = resolve_due(state, watermark.watermark_millis, out);
        derived.earliest_resolution_millis = Some(earliest_remaining_millis);
    }

    fn remove_rule(state: &mut ImmediateState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        if let Some(firing_alerts) = state.firing.remove(rule_name) {
            firing.extend(
                firing_alerts
                    .into_values()
                    .map(|firing_alert| firing_alert.occurrence),
            );
        }
        state.recently_resolved.remove(rule_name);
    }

    fn check_state_bounds(
        state: &Self::State,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        let firing_keys = state.firing.values().flat_map(|alerts| alerts.keys());
        let resolved_keys = state
            .recently_resolved
            .values()
            .flat_map(|alerts| alerts.keys());
        firing_keys
            .chain(resolved_keys)
            .try_for_each(|(cell, event_type)| {
                shape.check_cell("immediate rules", *cell)?;
                shape.check_event_type("immediate rules", *event_type)
            })
    }

    fn collect_firing<'state>(
        state: &'state ImmediateState,
        firing: &mut Vec<&'state AlertOccurrence>,
    ) {
        firing.extend(
            state
                .firing
                .values()
                .flat_map(|alerts_of_rule| alerts_of_rule.values())
                .map(|firing_alert| &firing_alert.occurrence),
        );
    }
}

/// Mutable state of all immediate rules: the firing alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImmediateState {
    /// Firing alerts by rule name, then by (`CellIndex.0`, `EventType as i32`): one alert per
    /// fingerprint. Keyed by name so a restored snapshot survives reordered rules.
    pub firing: BTreeMap<String, BTreeMap<(u32, i32), FiringImmediateAlert>>,
    /// Recently resolved alerts by rule name, then (`CellIndex.0`, `EventType as i32`): the
    /// `ends_at` of the last occurrence and when to forget it (`ends_at` + cooldown). A new
    /// occurrence starts no earlier than the previous one ended, so occurrences never overlap
    /// and alert ids (hash of fingerprint and start) never repeat.
    pub recently_resolved: BTreeMap<String, BTreeMap<(u32, i32), ResolvedImmediateAlert>>,
}

/// The end of the last occurrence of an immediate alert, remembered for a while after it
/// resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImmediateAlert {
    /// `ends_at` of the resolved occurrence: the earliest start of the next one.
    pub ends_at_millis: i64,
    /// Watermark at which this record is dropped (`ends_at` + cooldown): an event accepted
    /// later than that lies after `ends_at` unless the allowed lateness exceeds the cooldown.
    pub forget_at_millis: i64,
}

/// One firing immediate alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringImmediateAlert {
    /// What is emitted for it.
    pub occurrence: AlertOccurrence,
    /// Latest event time of any matching event (including suppressed repeats): the alert
    /// resolves at this + cooldown.
    pub last_event_millis: i64,
    /// The rule's cooldown when the last event arrived; kept so the alert resolves even if
    /// the rule disappears from a reloaded rule set.
    pub cooldown_millis: i64,
    /// Per device, the event time of its last emitted change (fire or update): a repeat from
    /// the device before this + cooldown is suppressed. Devices without id share the key "".
    pub device_last_emitted_millis: BTreeMap<String, i64>,
}

impl FiringImmediateAlert {
    /// Event time at which the alert resolves (watermark ≥ this).
    pub fn resolves_at_millis(&self) -> i64 {
        self.last_event_millis.saturating_add(self.cooldown_millis)
    }
}

/// What one matching event did to its immediate alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImmediateOutcome {
    /// A new alert fired (one FIRING alert emitted).
    Fired,
    /// Another device (or a device past its cooldown) updated the firing alert (one FIRING
    /// alert emitted with the same alert id).
    Updated,
    /// A repeat from the same device inside its cooldown: state updated, nothing emitted.
    Suppressed,
}

/// Applies one event matched by `rule`; returns what it did and the time at which the
/// affected alert now resolves.
pub(crate) fn on_matching_event(
    state: &mut ImmediateState,
    rule: &ImmediateRule,
    accepted_event: &AcceptedEvent<'_>,
    labels: &CellLabels<'_>,
    pane_size_millis: i64,
    out: &mut Vec<Alert>,
) -> (ImmediateOutcome, i64) {
    let occurred_at_millis = accepted_event.occurred_at_millis;
    let device_id = accepted_event.event.device_id.as_str();
    let event_id = accepted_event.event.event_id.as_str();
    let event_type_number = accepted_event.event_type as i32;
    let alerts_of_rule = state.firing.entry(rule.name.clone()).or_default();
    let key = (accepted_event.cell.0, event_type_number);
    let Some(firing) = alerts_of_rule.get_mut(&key) else {
        let previous_ends_at_millis = state
            .recently_resolved
            .get_mut(rule.name.as_str())
            .and_then(|resolved_of_rule| resolved_of_rule.remove(&key))
            .map(|resolved| resolved.ends_at_millis);
        // A late event inside the previous occurrence's span starts the new one at its end.
        let starts_at_millis = previous_ends_at_millis
            .map_or(occurred_at_millis, |ends_at_millis| {
                ends_at_millis.max(occurred_at_millis)
            });
        let alert_fingerprint = fingerprint(
            &rule.name,
            labels.grid_id,
            accepted_event.event_type.as_str_name(),
        );
        let occurrence = AlertOccurrence {
            alert_id: alert_id(&alert_fingerprint, starts_at_millis),
            fingerprint: alert_fingerprint,
            rule: rule.name.clone(),
            rule_kind: RULE_KIND_IMMEDIATE.to_string(),
            grid_id: labels.grid_id.to_string(),
            community_id: labels.community_id.to_string(),
            district_id: labels.district_id.to_string(),
            event_type: event_type_number,
            severity: u32::from(accepted_event.severity),
            starts_at_millis,
            updated_at_millis: starts_at_millis,
            observed: 1.0,
            threshold: 1.0,
            expected: 0.0,
            p_value: 0.0,
            event_ids: vec![event_id.to_string()],
            device_id: device_id.to_string(),
            scope: AlertScope::Cell,
            window_millis: 0,
            baseline_weeks: 0,
            cluster_community_ids: Vec::new(),
        };
        out.push(occurrence.firing_alert());
        let new_alert = FiringImmediateAlert {
            occurrence,
            last_event_millis: starts_at_millis,
            cooldown_millis: rule.cooldown_millis,
            device_last_emitted_millis: BTreeMap::from([(device_id.to_string(), starts_at_millis)]),
        };
        let resolves_at_millis = new_alert.resolves_at_millis();
        alerts_of_rule.insert(key, new_alert);
        return (ImmediateOutcome::Fired, resolves_at_millis);
    };
    firing.last_event_millis = firing.last_event_millis.max(occurred_at_millis);
    firing.cooldown_millis = rule.cooldown_millis;
    firing.occurrence.observed += 1.0;
    firing.occurrence.severity = firing
        .occurrence
        .severity
        .min(u32::from(accepted_event.severity));
    push_capped_event_id(&mut firing.occurrence.event_ids, event_id);
    let inside_device_cooldown = firing
        .device_last_emitted_millis
        .get(device_id)
        .is_some_and(|last_emitted_millis| {
            occurred_at_millis < last_emitted_millis.saturating_add(rule.cooldown_millis)
        });
    if inside_device_cooldown {
        return (ImmediateOutcome::Suppressed, firing.resolves_at_millis());
    }
    forget_devices_past_cooldown(firing, occurred_at_millis, rule.cooldown_millis);
    firing
        .device_last_emitted_millis
        .insert(device_id.to_string(), occurred_at_millis);
    // One change per alert per pane: a flood of new devices in one cell cannot make the alert
    // re-emit itself once per device. The event is in the state (count, event ids) and goes
    // out with the alert's next change.
    let pane_of = |millis: i64| millis.div_euclid(pane_size_millis.max(1));
    if pane_of(occurred_at_millis) <= pane_of(firing.occurrence.updated_at_millis) {
        return (ImmediateOutcome::Suppressed, firing.resolves_at_millis());
    }
    firing.occurrence.updated_at_millis = occurred_at_millis;
    out.push(firing.occurrence.firing_alert());
    (ImmediateOutcome::Updated, firing.resolves_at_millis())
}

/// Devices remembered per firing alert beyond which those past their cooldown are forgotten.
const DEVICES_REMEMBERED_BEFORE_EXPIRY: usize = 64;

/// Forgets the devices whose cooldown has passed at `occurred_at_millis` (they can no longer
/// suppress anything), once the alert remembers many: a long-firing alert's device map stays
/// as large as the devices active within one cooldown, not every device ever seen.
fn forget_devices_past_cooldown(
    firing: &mut FiringImmediateAlert,
    occurred_at_millis: i64,
    cooldown_millis: i64,
) {
    if firing.device_last_emitted_millis.len() < DEVICES_REMEMBERED_BEFORE_EXPIRY {
        return;
    }
    firing
        .device_last_emitted_millis
        .retain(|_, last_emitted_millis| {
            last_emitted_millis.saturating_add(cooldown_millis) > occurred_at_millis
        });
}

/// Resolves every alert whose last event + cooldown ≤ `watermark_millis` (remembering its end
/// for a cooldown), appending RESOLVED alerts in unspecified order, and forgets resolved
/// alerts whose memory expired. Returns the earliest time at which calling this again can
/// change anything (`i64::MAX` when nothing is left).
pub(crate) fn resolve_due(
    state: &mut ImmediateState,
    watermark_millis: i64,
    resolved: &mut Vec<Alert>,
) -> i64 {
    let mut earliest_next_change_millis = i64::MAX;
    for resolved_of_rule in state.recently_resolved.values_mut() {
        resolved_of_rule.retain(|_, resolved_alert| {
            if watermark_millis >= resolved_alert.forget_at_millis {
                return false;
            }
            earliest_next_change_millis =
                earliest_next_change_millis.min(resolved_alert.forget_at_millis);
            true
        });
    }
    for (rule_name, alerts_of_rule) in &mut state.firing {
        let mut newly_resolved: Vec<((u32, i32), ResolvedImmediateAlert)> = Vec::new();
        alerts_of_rule.retain(|key, firing| {
            let resolves_at_millis = firing.resolves_at_millis();
            if watermark_millis >= resolves_at_millis {
                resolved.push(firing.occurrence.resolved_alert(resolves_at_millis));
                let forget_at_millis = resolves_at_millis.saturating_add(firing.cooldown_millis);
                if watermark_millis < forget_at_millis {
                    earliest_next_change_millis = earliest_next_change_millis.min(forget_at_millis);
                    newly_resolved.push((
                        *key,
                        ResolvedImmediateAlert {
                            ends_at_millis: resolves_at_millis,
                            forget_at_millis,
                        },
                    ));
                }
                return false;
            }
            earliest_next_change_millis = earliest_next_change_millis.min(resolves_at_millis);
            true
        });
        if !newly_resolved.is_empty() {
            state
                .recently_resolved
                .entry(rule_name.clone())
                .or_default()
                .extend(newly_resolved);
        }
    }
    state
        .firing
        .retain(|_, alerts_of_rule| !alerts_of_rule.is_empty());
    state
        .recently_resolved
        .retain(|_, resolved_of_rule| !resolved_of_rule.is_empty());
    earliest_next_change_millis
}
