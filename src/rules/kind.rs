//! What a rule kind is to the engine: the [`RuleKind`] trait and the context each of its
//! hooks receives.
//!
//! The engine knows no kind by name. It hands an event to the rules whose types match, a
//! watermark to every kind, and asks every kind for its firing alerts; the kinds themselves are
//! listed once, in [`super::kinds`]. So a new kind is one file — its rules-file table
//! (`Spec`), validation, snapshot state and runtime, with `impl RuleKind` — plus one line of
//! registration.
//!
//! # Adding a kind
//!
//! 1. Write `src/rules/<kind>.rs`: the `[[rule]]` table as a `Spec` struct
//!    (`deny_unknown_fields`), the validated rule type, the snapshot `State` (series carry an
//!    [`super::series::AlertLifecycle`], so occurrences never overlap), and `impl RuleKind`
//!    for the rule type. Optionally `next_due_millis` (with `EVENTS_BRING_DUE_FORWARD`), so
//!    that the engine skips the kind's watermark calls between its boundaries; without it the
//!    kind is called at every watermark advance, which is correct but costs every event.
//! 2. Declare the module in `src/rules/mod.rs` and append one line to the list in
//!    [`super::kinds`] (at the end: the snapshot state serializes in list order).

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::alert::AlertOccurrence;
use super::baseline::BaselineView;
use super::kinds::Rule;
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::units::{unit_key_of, unit_labels, CellLabels};
use crate::event::AcceptedEvent;
use crate::grid::{GridRegistry, RegistryShape, StateOutOfBounds};
use crate::proto::{Alert, EventType};

/// A kind of rule, implemented by its validated rule type (e.g. [`super::spike::SpikeRule`]).
pub trait RuleKind: Debug + Clone + PartialEq + Sized {
    /// The `kind` of its `[[rule]]` tables and the `rule_kind` of its alerts.
    const NAME: &'static str;
    /// Whether its rules need the learned baseline of their event types (the engine learns
    /// only the types some rule needs).
    const LEARNS_BASELINE: bool = false;
    /// Whether its rules also see events whose window was already final (dead-lettered as
    /// late). Only life-safety kinds do: a final window must never stop an alarm, while a
    /// counting rule's window was decided without the event.
    const SEES_LATE_EVENTS: bool = false;

    /// Its `[[rule]]` table as written (unknown fields refused).
    type Spec: DeserializeOwned + Debug;
    /// The mutable state of all its rules: part of the snapshot, keyed by rule name so that a
    /// snapshot survives reordered or edited rules.
    type State: Debug + Clone + Default + PartialEq + Serialize + DeserializeOwned;
    /// What the engine derives from the rule set for this kind (caches, indexes): rebuilt
    /// whenever the rules or the state are replaced, never snapshotted.
    type Derived: Debug + Default;

    /// The `name` of a table, for the label of its validation problems.
    fn spec_name(spec: &Self::Spec) -> &str;

    /// Validates a table, reporting every problem through `validation` (the rule is dropped if
    /// any was reported). The name is validated before.
    fn from_spec(spec: Self::Spec, validation: &mut RuleValidation<'_>) -> Self;

    /// The rule's unique name.
    fn name(&self) -> &str;

    /// The event types whose events the rule sees.
    fn event_types(&self) -> &[EventType];

    /// `Some(event-time history it counts over)` when the rule can only be judged by an engine
    /// that sees every community (a district, cluster or city-wide unit); `None` otherwise. An
    /// engine of one Kafka partition skips such rules, and the whole-city detector
    /// ([`super::whole_city`]) evaluates them from the output topics, read back that far.
    fn whole_city_history_millis(&self) -> Option<i64> {
        None
    }

    /// What the engine keeps derived for this kind under `rules` (by default: nothing that
    /// depends on the rules).
    fn derive(_rules: &RuleSet) -> Self::Derived {
        Self::Derived::default()
    }

    /// Sees every accepted event of a known cell before any rule does (for kinds that track
    /// more than their matching events); does nothing by default.
    fn observe_event(
        _state: &mut Self::State,
        _derived: &mut Self::Derived,
        _accepted_event: &AcceptedEvent<'_>,
    ) {
    }

    /// Applies one event matched by this rule; appends the alerts it emits.
    fn on_matching_event(
        &self,
        state: &mut Self::State,
        derived: &mut Self::Derived,
        event: &MatchingEvent<'_>,
        out: &mut Vec<Alert>,
    ) -> EventOutcome;

    /// Whether a matching event can make [`RuleKind::on_watermark`] due before the watermark
    /// [`RuleKind::next_due_millis`] gave (a new firing alert to resolve, new state to
    /// evaluate): the engine then asks `next_due_millis` again after each matching event and
    /// keeps the earlier of the two. `observe_event` must never do so.
    const EVENTS_BRING_DUE_FORWARD: bool = true;

    /// The lowest watermark at which [`RuleKind::on_watermark`] can change anything, given the
    /// state it just left (asked after every `on_watermark`, and after every matching event
    /// when [`RuleKind::EVENTS_BRING_DUE_FORWARD`]): the engine skips the kind below it. Most
    /// watermark advances fall between pane boundaries, and each call would still walk the
    /// kind's maps to find that out. The default, `i64::MIN`, has the kind called at every
    /// advance.
    fn next_due_millis(
        _state: &Self::State,
        _derived: &Self::Derived,
        _rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        i64::MIN
    }

    /// Evaluates all rules of the kind at a watermark advance; appends FIRING and RESOLVED
    /// alerts in any order (the engine sorts them). State of rules no longer in the rule set
    /// must be resolved and dropped here.
    fn on_watermark(
        state: &mut Self::State,
        derived: &mut Self::Derived,
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    );

    /// Drops the state of `rule_name` (removed or changed by a reload), appending its firing
    /// alerts to `firing` so that the engine resolves them.
    fn remove_rule(state: &mut Self::State, rule_name: &str, firing: &mut Vec<AlertOccurrence>);

    /// Checks every cell, community and event type index in a restored state against the
    /// running registry (see [`crate::grid::shape`]).
    fn check_state_bounds(
        state: &Self::State,
        shape: &RegistryShape,
    ) -> Result<(), StateOutOfBounds>;

    /// Appends every firing alert of the kind.
    fn collect_firing<'state>(
        state: &'state Self::State,
        firing: &mut Vec<&'state AlertOccurrence>,
    );
}

/// A rule kind listed in [`super::kinds`]: the registration provides the way back from a
/// [`Rule`] to the kind's own rule type.
pub trait RegisteredKind: RuleKind {
    /// The rule as this kind's type, or `None` for a rule of another kind.
    fn from_rule(rule: &Rule) -> Option<&Self>;
}

/// An accepted event matched by a rule, with what every kind needs to place it.
#[derive(Debug, Clone, Copy)]
pub struct MatchingEvent<'a> {
    /// The event.
    pub(crate) accepted_event: &'a AcceptedEvent<'a>,
    /// The labels of its cell (known to be in the registry).
    pub(crate) cell_labels: &'a CellLabels<'a>,
    /// Cells and communities, to place the event in a community-scope series.
    pub(crate) registry: &'a GridRegistry,
    /// The rule set's pane size.
    pub(crate) pane_size_millis: i64,
}

impl<'a> MatchingEvent<'a> {
    /// The unit key of the event's cell under `scope`: the cell's index, or its community's.
    pub(crate) fn unit_key(&self, scope: AlertScope) -> Option<u32> {
        unit_key_of(self.registry, scope, self.accepted_event.cell)
    }

    /// The labels of a unit of `scope`.
    pub(crate) fn unit_labels(&self, scope: AlertScope, unit_key: u32) -> Option<CellLabels<'a>> {
        unit_labels(self.registry, scope, unit_key)
    }
}

/// What one matching event did to its rule's alert, for the rule's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventOutcome {
    /// A new occurrence fired.
    pub fired: bool,
    /// A firing alert was updated (emitted again with the same id).
    pub updated: bool,
    /// A repeat inside its device's cooldown was folded in without an alert.
    pub suppressed_repeat: bool,
    /// A firing alert resolved.
    pub resolved: bool,
}

/// Everything a kind needs at a watermark advance.
#[derive(Debug, Clone, Copy)]
pub struct WatermarkContext<'a> {
    /// The new operator watermark.
    pub(crate) watermark_millis: i64,
    /// The rules now in force.
    pub(crate) rules: &'a RuleSet,
    /// Seeded and learned baseline, with the registry.
    pub(crate) baseline: BaselineView<'a>,
    /// The engine sees one partition of the city ([`super::RuleEngine::set_partial_input`]).
    pub(crate) partial_input: bool,
}
