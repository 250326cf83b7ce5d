//! The registry of rule kinds: the one place that lists them.
//!
//! From the list, the `register_rule_kinds!` macro writes what needs every kind: the [`Rule`]
//! enum of validated rules, the tagged `[[rule]]` table of the rules file, the snapshot state
//! ([`RuleEngineState`], one field per kind) and the loops with which the engine hands events,
//! watermarks, reloads and `active_alerts` to each kind. Order matters only for ties: kinds
//! are evaluated in list order, and the state serializes in list order (append new kinds at
//! the end, or old snapshots no longer restore).

use serde::{Deserialize, Serialize};

use super::alert::AlertOccurrence;
use super::baseline::{Baseline, BaselineState, BaselineView};
use super::kind::{EventOutcome, MatchingEvent, RegisteredKind, RuleKind, WatermarkContext};
use super::ruleset::{RuleSet, RuleValidation};
use crate::event::AcceptedEvent;
use crate::grid::{GridRegistry, RegistryShape, StateOutOfBounds};
use crate::proto::{Alert, EventType};

/// Writes the registry from a list of `state_field: Variant(RuleType)` lines (see the module
/// docs). A macro, not a trait object, because each kind's state is a different serde type that
/// must stay a plain field of the snapshot.
macro_rules! register_rule_kinds {
    ($( $(#[$variant_doc:meta])* $field:ident: $variant:ident($rule:ty) ),+ $(,)?) => {
        /// One validated rule. Two rules are the same definition when they compare equal
        /// (every field is canonical: defaults filled in, types sorted).
        #[derive(Debug, Clone, PartialEq)]
        pub enum Rule {
            $( $(#[$variant_doc])* $variant($rule), )+
        }

        /// The `kind` of every registered rule kind, in registration order.
        pub const RULE_KIND_NAMES: &[&str] = &[$( <$rule as RuleKind>::NAME, )+];

        impl Rule {
            /// The rule's unique name.
            pub fn name(&self) -> &str {
                match self {
                    $( Rule::$variant(rule) => RuleKind::name(rule), )+
                }
            }

            /// The `rule_kind` of its alerts.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Rule::$variant(_) => <$rule as RuleKind>::NAME, )+
                }
            }

            /// The event types the rule sees.
            pub fn event_types(&self) -> &[EventType] {
                match self {
                    $( Rule::$variant(rule) => RuleKind::event_types(rule), )+
                }
            }

            /// Whether only an engine that sees every community can judge the rule.
            pub fn needs_whole_city(&self) -> bool {
                self.whole_city_history_millis().is_some()
            }

            /// The event-time history a whole-city rule counts over (`None` for the others).
            pub fn whole_city_history_millis(&self) -> Option<i64> {
                match self {
                    $( Rule::$variant(rule) => RuleKind::whole_city_history_millis(rule), )+
                }
            }

            /// Whether the rule sees events whose window was already final.
            pub fn sees_late_events(&self) -> bool {
                match self {
                    $( Rule::$variant(_) => <$rule as RuleKind>::SEES_LATE_EVENTS, )+
                }
            }

            /// Whether the rule needs the learned baseline of its types.
            pub fn learns_baseline(&self) -> bool {
                match self {
                    $( Rule::$variant(_) => <$rule as RuleKind>::LEARNS_BASELINE, )+
                }
            }

            /// Hands one matching event to the rule's kind; where the event can make the kind
            /// due earlier (`RuleKind::EVENTS_BRING_DUE_FORWARD`), asks the kind again when it
            /// is next due under `rules` and the engine's `partial_input`.
            pub(crate) fn on_matching_event(
                &self,
                states: &mut RuleEngineState,
                derived: &mut DerivedKindState,
                (rules, partial_input): (&RuleSet, bool),
                event: &MatchingEvent<'_>,
                out: &mut Vec<Alert>,
            ) -> EventOutcome {
                match self {
                    $(
                        Rule::$variant(rule) => {
                            let outcome = rule.on_matching_event(
                                &mut states.$field,
                                &mut derived.$field,
                                event,
                                out,
                            );
                            if <$rule as RuleKind>::EVENTS_BRING_DUE_FORWARD {
                                derived.due.$field = derived.due.$field.min(
                                    <$rule as RuleKind>::next_due_millis(
                                        &states.$field,
                                        &derived.$field,
                                        rules,
                                        partial_input,
                                    ),
                                );
                            }
                            outcome
                        }
                    )+
                }
            }
        }

        $(
            impl RegisteredKind for $rule {
                fn from_rule(rule: &Rule) -> Option<&Self> {
                    #[allow(unreachable_patterns)]
                    match rule {
                        Rule::$variant(rule) => Some(rule),
                        _ => None,
                    }
                }
            }
        )+

        /// One `[[rule]]` table as written, tagged by `kind`.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub(crate) enum RuleSpec {
            $( $variant(<$rule as RuleKind>::Spec), )+
        }

        impl RuleSpec {
            /// The table's `name`.
            pub(crate) fn name(&self) -> &str {
                match self {
                    $( RuleSpec::$variant(spec) => <$rule as RuleKind>::spec_name(spec), )+
                }
            }

            /// Validates the table with its kind.
            pub(crate) fn validate(self, validation: &mut RuleValidation<'_>) -> Rule {
                match self {
                    $( RuleSpec::$variant(spec) => Rule::$variant(<$rule>::from_spec(spec, validation)), )+
                }
            }
        }

        /// The engine's mutable state, the part that a snapshot must carry (postcard-friendly
        /// and deterministic: only `BTreeMap`s, `Vec`s and plain values): the state of every
        /// kind, in registration order, then the learned baseline and the last watermark.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct RuleEngineState {
            $(
                #[doc = concat!("State of the `", stringify!($field), "` rules.")]
                pub $field: <$rule as RuleKind>::State,
            )+
            /// The learned baseline (hourly counts of the learned types).
            pub baseline: BaselineState,
            /// The latest watermark seen: the `ends_at` of alerts resolved by a rule
            /// replacement.
            pub last_watermark_millis: Option<i64>,
        }

        /// What the engine derives per kind from the rule set (never snapshotted).
        #[derive(Debug)]
        pub(crate) struct DerivedKindState {
            $( $field: <$rule as RuleKind>::Derived, )+
            /// When each kind's `on_watermark` is next due.
            pub(crate) due: DueMillis,
        }

        /// Per kind, and for the learned baseline, the watermark below which a watermark
        /// advance changes nothing ([`RuleKind::next_due_millis`]); `i64::MIN` (due at once)
        /// whenever the rules, the state or the input's scope are replaced.
        #[derive(Debug)]
        pub(crate) struct DueMillis {
            $( $field: i64, )+
            /// The learned baseline ([`BaselineState::next_due_millis`]).
            pub(crate) baseline: i64,
        }

        impl DerivedKindState {
            /// Derived afresh from `rules`.
            pub(crate) fn new(rules: &RuleSet) -> DerivedKindState {
                DerivedKindState {
                    $( $field: <$rule as RuleKind>::derive(rules), )+
                    due: DueMillis::at_once(),
                }
            }
        }

        impl DueMillis {
            /// Every kind and the baseline due at the next advance.
            pub(crate) fn at_once() -> DueMillis {
                DueMillis {
                    $( $field: i64::MIN, )+
                    baseline: i64::MIN,
                }
            }

            /// The earliest due time: before it, neither a kind nor the baseline is due.
            pub(crate) fn earliest(&self) -> i64 {
                let mut earliest = self.baseline;
                $( earliest = earliest.min(self.$field); )+
                earliest
            }
        }

        impl RuleEngineState {
            /// Lets every kind see an accepted event of a known cell before the rules run.
            pub(crate) fn observe_event(
                &mut self,
                derived: &mut DerivedKindState,
                accepted_event: &AcceptedEvent<'_>,
            ) {
                $( <$rule as RuleKind>::observe_event(&mut self.$field, &mut derived.$field, accepted_event); )+
            }

            /// Evaluates every kind at a watermark advance, in registration order, skipping the
            /// kinds not yet due.
            pub(crate) fn on_watermark(
                &mut self,
                derived: &mut DerivedKindState,
                inputs: &WatermarkInputs<'_>,
                out: &mut Vec<Alert>,
            ) {
                // The kinds' states are borrowed mutably while the learned baseline, a sibling
                // field, is read by all of them.
                let watermark = WatermarkContext {
                    watermark_millis: inputs.watermark_millis,
                    rules: inputs.rules,
                    baseline: BaselineView {
                        seeds: inputs.seeds,
                        state: &self.baseline,
                        settings: inputs.rules.baseline_settings(),
                        registry: inputs.registry,
                    },
                    partial_input: inputs.partial_input,
                };
                $(
                    if inputs.watermark_millis >= derived.due.$field {
                        <$rule as RuleKind>::on_watermark(&mut self.$field, &mut derived.$field, &watermark, out);
                        derived.due.$field = <$rule as RuleKind>::next_due_millis(
                            &self.$field,
                            &derived.$field,
                            inputs.rules,
                            inputs.partial_input,
                        );
                    }
                )+
            }

            /// Checks every index in a restored state against the running registry: a snapshot
            /// from another registry, or a forged one, is refused instead of crashing a tick.
            pub fn check_bounds(&self, shape: &RegistryShape) -> Result<(), StateOutOfBounds> {
                $( <$rule as RuleKind>::check_state_bounds(&self.$field, shape)?; )+
                self.baseline.check_bounds(shape)
            }

            /// Drops the state of a rule in every kind, appending its firing alerts.
            pub(crate) fn remove_rule(&mut self, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
                $( <$rule as RuleKind>::remove_rule(&mut self.$field, rule_name, firing); )+
            }

            /// Every firing alert of every kind.
            pub(crate) fn firing_alerts(&self) -> Vec<&AlertOccurrence> {
                let mut firing = Vec::new();
                $( <$rule as RuleKind>::collect_firing(&self.$field, &mut firing); )+
                firing
            }
        }
    };
}

/// What the engine hands to [`RuleEngineState::on_watermark`]: everything of a
/// [`WatermarkContext`] except the learned baseline, which the state itself holds.
pub(crate) struct WatermarkInputs<'a> {
    /// The new operator watermark.
    pub(crate) watermark_millis: i64,
    /// The rules now in force.
    pub(crate) rules: &'a RuleSet,
    /// The seeded baseline rates.
    pub(crate) seeds: &'a Baseline,
    /// Cells and communities.
    pub(crate) registry: &'a GridRegistry,
    /// The engine sees one partition of the city.
    pub(crate) partial_input: bool,
}

register_rule_kinds! {
    /// Alert on every matching event.
    immediate: Immediate(super::immediate::ImmediateRule),
    /// Alert on a count in a sliding window.
    threshold: Threshold(super::threshold::ThresholdRule),
    /// Alert on an improbable count under the baseline.
    spike: Spike(super::spike::SpikeRule),
    /// Alert on a sustained upward shift of the rate.
    cusum: Cusum(super::cusum::CusumRule),
    /// Alert operations about silent cells and offline devices.
    data_gap: DataGap(super::data_gap::DataGapRule),
    /// Alert on space-time clusters of neighbouring communities.
    scan: Scan(super::scan::ScanRule),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_name_is_the_kind_tag_of_its_rules_file_table() {
        for kind_name in RULE_KIND_NAMES {
            let table_text = format!("kind = \"{kind_name}\"\nname = \"rule\"\n");
            let error_text = toml::from_str::<RuleSpec>(&table_text)
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(
                !error_text.contains("unknown variant"),
                "{kind_name}: {error_text}"
            );
        }
    }
}
