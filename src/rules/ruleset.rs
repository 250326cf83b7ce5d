//! The rules file: its TOML shape, validation (every problem reported at once, no IO) and the
//! validated [`RuleSet`].

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::event::default_severity;
use crate::proto::EventType;

/// The default rules, embedded in the binary (`seeds/rules.toml`).
pub const EMBEDDED_RULES_TOML: &str = include_str!("../../seeds/rules.toml");

/// Cooldown of an immediate rule that does not set one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// Longest accepted `window` or `cooldown` (30 days): keeps every time computation far from
/// `i64` overflow and bounds the panes kept per cell.
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The text is not TOML of the rules file's shape (syntax error, unknown field, wrong type,
    /// unknown `kind`, unparsable duration...).
    #[error("cannot parse the rules file: {0}")]
    Parse(String),
    /// The file parsed but its content is invalid; every problem found is listed.
    #[error("{}", problems.join("\n"))]
    Invalid {
        /// One human-readable problem per entry, naming the rule (1-based index and name).
        problems: Vec<String>,
    },
}

/// The file as written: a list of `[[rule]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    /// The `[[rule]]` tables, in file order.
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// One `[[rule]]` table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RuleSpec {
    /// `kind = "immediate"`.
    Immediate {
        /// Unique rule name.
        name: String,
        /// Proto enum names of the matched types.
        event_types: Vec<String>,
        /// Per-device cooldown for repeats.
        #[serde(default = "default_cooldown", with = "humantime_serde")]
        cooldown: Duration,
    },
    /// `kind = "threshold"`.
    Threshold {
        /// Unique rule name.
        name: String,
        /// Proto enum names of the matched types.
        event_types: Vec<String>,
        /// Sliding window length.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Signed so that a negative value is a validation problem, not a parse error.
        min_count: i64,
        /// Signed and wide so that any out-of-range value is a validation problem.
        #[serde(default)]
        severity: Option<i64>,
    },
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

/// A rule that alerts when at least `min_count` matching events of one cell fall within a
/// sliding window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types, sorted by enum number, without duplicates.
    pub event_types: Vec<EventType>,
    /// Sliding window length, a positive multiple of the pane size.
    pub window_millis: i64,
    /// Events in the window needed to fire (at least 1).
    pub min_count: u32,
    /// Severity of the alerts (1..=4): as configured, else the most severe default severity
    /// of the matched types.
    pub severity: u8,
    /// The alert scope used in fingerprints: the sorted type names joined by `+`.
    pub scope: String,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Alert on every matching event.
    Immediate(ImmediateRule),
    /// Alert on a count in a sliding window.
    Threshold(ThresholdRule),
}

impl Rule {
    /// The rule's unique name.
    pub fn name(&self) -> &str {
        match self {
            Rule::Immediate(rule) => &rule.name,
            Rule::Threshold(rule) => &rule.name,
        }
    }

    /// `"immediate"` or `"threshold"`: the `rule_kind` of its alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Immediate(_) => super::alert::RULE_KIND_IMMEDIATE,
            Rule::Threshold(_) => super::alert::RULE_KIND_THRESHOLD,
        }
    }

    /// The matched event types.
    pub fn event_types(&self) -> &[EventType] {
        match self {
            Rule::Immediate(rule) => &rule.event_types,
            Rule::Threshold(rule) => &rule.event_types,
        }
    }
}

/// A validated set of rules, with the pane size its windows were checked against and the
/// version of the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules in file order (the order in which one event's alerts are emitted).
    rules: Vec<Rule>,
    /// Pane size the threshold windows are multiples of; the engine aligns panes to it.
    pane_size_millis: i64,
    /// First 12 hex chars of sha256 of the file text, to tell deployments apart.
    version: String,
}

impl RuleSet {
    /// Parses and validates a rules file. `pane_size_millis` is the tumbling pane size
    /// (threshold windows must be positive multiples of it).
    ///
    /// Syntax and shape errors are [`RulesError::Parse`]; content problems are collected and
    /// returned all at once as [`RulesError::Invalid`].
    pub fn from_toml_str(text: &str, pane_size_millis: i64) -> Result<RuleSet, RulesError> {
        let rules_file: RulesFile =
            toml::from_str(text).map_err(|error| RulesError::Parse(error.to_string()))?;
        let mut problems: Vec<String> = Vec::new();
        if pane_size_millis <= 0 {
            problems.push(format!(
                "pane size must be positive, got {pane_size_millis} ms"
            ));
        }
        if rules_file.rule.is_empty() {
            problems
                .push("the file defines no rules (add at least one [[rule]] table)".to_string());
        }
        let mut seen_names: BTreeSet<String> = BTreeSet::new();
        let mut rules: Vec<Rule> = Vec::with_capacity(rules_file.rule.len());
        for (zero_based_index, rule_spec) in rules_file.rule.into_iter().enumerate() {
            let rule_index = zero_based_index + 1;
            if let Some(rule) = validate_rule(
                rule_spec,
                rule_index,
                pane_size_millis,
                &mut seen_names,
                &mut problems,
            ) {
                rules.push(rule);
            }
        }
        if !problems.is_empty() {
            return Err(RulesError::Invalid { problems });
        }
        Ok(RuleSet {
            rules,
            pane_size_millis,
            version: text_version(text),
        })
    }

    /// The default rules embedded in the binary ([`EMBEDDED_RULES_TOML`]), validated against
    /// `pane_size_millis`. The embedded windows (15 min, 1 h) fit every pane size that divides
    /// 15 minutes; another pane size is reported as [`RulesError::Invalid`].
    pub fn embedded_default(pane_size_millis: i64) -> Result<RuleSet, RulesError> {
        RuleSet::from_toml_str(EMBEDDED_RULES_TOML, pane_size_millis)
    }

    /// First 12 hex chars of sha256 of the file text: changes whenever the file changes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name() == name)
    }

    /// The pane size the rules were validated against.
    pub fn pane_size_millis(&self) -> i64 {
        self.pane_size_millis
    }
}

fn text_version(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut version = hex::encode(digest);
    version.truncate(12);
    version
}

/// Validates one rule, pushing each problem; returns the rule only when it has none.
fn validate_rule(
    rule_spec: RuleSpec,
    rule_index: usize,
    pane_size_millis: i64,
    seen_names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let problems_before = problems.len();
    let (name, event_type_names) = match &rule_spec {
        RuleSpec::Immediate {
            name, event_types, ..
        }
        | RuleSpec::Threshold {
            name, event_types, ..
        } => (name.clone(), event_types.clone()),
    };
    let label = format!("rule {rule_index} ({name:?})");
    validate_name(&name, &label, seen_names, problems);
    let event_types = validate_event_types(&event_type_names, &label, problems);
    let rule = match rule_spec {
        RuleSpec::Immediate { cooldown, .. } => {
            let cooldown_millis = validate_duration(cooldown, "cooldown", &label, problems);
            Rule::Immediate(ImmediateRule {
                name,
                event_types,
                cooldown_millis,
            })
        }
        RuleSpec::Threshold {
            window,
            min_count,
            severity,
            ..
        } => {
            let window_millis = validate_duration(window, "window", &label, problems);
            if pane_size_millis > 0 && window_millis > 0 && window_millis % pane_size_millis != 0 {
                problems.push(format!(
                    "{label}: window {} is not a multiple of the pane size ({pane_size_millis} ms)",
                    humantime_serde::re::humantime::format_duration(window)
                ));
            }
            let valid_min_count = match u32::try_from(min_count) {
                Ok(count) if count >= 1 => count,
                _ => {
                    problems.push(format!(
                        "{label}: min_count must be between 1 and {}, got {min_count}",
                        u32::MAX
                    ));
                    1
                }
            };
            let valid_severity = match severity {
                None => event_types
                    .iter()
                    .map(|event_type| default_severity(*event_type))
                    .min()
                    .unwrap_or(4),
                Some(configured) => match u8::try_from(configured) {
                    Ok(value) if (1..=4).contains(&value) => value,
                    _ => {
                        problems.push(format!(
                            "{label}: severity must be between 1 and 4, got {configured}"
                        ));
                        4
                    }
                },
            };
            let mut type_names: Vec<&str> = event_types
                .iter()
                .map(|event_type| event_type.as_str_name())
                .collect();
            type_names.sort_unstable();
            Rule::Threshold(ThresholdRule {
                name,
                scope: type_names.join("+"),
                event_types,
                window_millis,
                min_count: valid_min_count,
                severity: valid_severity,
            })
        }
    };
    if problems.len() > problems_before {
        return None;
    }
    Some(rule)
}

fn validate_name(
    name: &str,
    label: &str,
    seen_names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let is_snake_case = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if !is_snake_case {
        problems.push(format!(
            "{label}: name must be non-empty snake_case ([a-z0-9_]+)"
        ));
    }
    if !seen_names.insert(name.to_string()) {
        problems.push(format!("{label}: duplicate rule name {name:?}"));
    }
}

fn validate_event_types(
    names: &[String],
    label: &str,
    problems: &mut Vec<String>,
) -> Vec<EventType> {
    if names.is_empty() {
        problems.push(format!("{label}: event_types is empty"));
        return Vec::new();
    }
    let mut event_types: Vec<EventType> = Vec::with_capacity(names.len());
    let mut unknown_names: Vec<&str> = Vec::new();
    for name in names {
        match EventType::from_str_name(name) {
            None => unknown_names.push(name),
            Some(EventType::Unspecified) => {
                problems.push(format!(
                    "{label}: EVENT_TYPE_UNSPECIFIED cannot be matched by a rule"
                ));
            }
            Some(event_type) => {
                if event_types.contains(&event_type) {
                    problems.push(format!("{label}: event type {name} is listed twice"));
                } else {
                    event_types.push(event_type);
                }
            }
        }
    }
    if !unknown_names.is_empty() {
        problems.push(format!(
            "{label}: unknown event types: {}",
            unknown_names.join(", ")
        ));
    }
    event_types.sort_unstable();
    event_types
}

/// The duration in whole milliseconds, or 0 with a problem when it is zero or too long.
fn validate_duration(
    duration: Duration,
    field: &str,
    label: &str,
    problems: &mut Vec<String>,
) -> i64 {
    if duration > MAX_RULE_DURATION {
        problems.push(format!(
            "{label}: {field} {} is longer than the maximum {}",
            humantime_serde::re::humantime::format_duration(duration),
            humantime_serde::re::humantime::format_duration(MAX_RULE_DURATION)
        ));
        return 0;
    }
    // At most 30 days, so the conversion cannot fail; 0 stands for "invalid" anyway.
    let millis = i64::try_from(duration.as_millis()).unwrap_or(0);
    if millis <= 0 {
        problems.push(format!("{label}: {field} must be at least 1 ms"));
        return 0;
    }
    millis
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn embedded_default_parses_with_the_documented_rules() {
        let rule_set = RuleSet::embedded_default(MINUTE).expect("embedded rules are valid");
        let life_safety = rule_set.rule("life_safety").expect("life_safety rule");
        let Rule::Immediate(immediate) = life_safety else {
            panic!("life_safety must be immediate");
        };
        assert_eq!(
            immediate.event_types,
            vec![
                EventType::FireSmoke,
                EventType::GasLeak,
                EventType::ElectricalFault,
                EventType::Sos,
                EventType::ElderFall
            ]
        );
        assert_eq!(immediate.cooldown_millis, 5 * MINUTE);
        let Some(Rule::Threshold(perimeter)) = rule_set.rule("perimeter_intrusion_burst") else {
            panic!("perimeter_intrusion_burst must be a threshold rule");
        };
        assert_eq!(perimeter.window_millis, 15 * MINUTE);
        assert_eq!(perimeter.min_count, 3);
        assert_eq!(
            perimeter.severity, 2,
            "default: the type's default severity"
        );
        assert_eq!(perimeter.scope, "PERIMETER_INTRUSION");
        let Some(Rule::Threshold(ebike)) = rule_set.rule("ebike_in_elevator_repeat") else {
            panic!("ebike_in_elevator_repeat must be a threshold rule");
        };
        assert_eq!(ebike.severity, 3);
        assert!(rule_set.rules().len() >= 5);
        assert_eq!(rule_set.version().len(), 12);
    }

    #[test]
    fn embedded_default_is_refused_for_a_pane_size_that_does_not_divide_its_windows() {
        let error = RuleSet::embedded_default(7 * MINUTE).unwrap_err();
        let RulesError::Invalid { problems } = error else {
            panic!("expected Invalid");
        };
        assert!(
            problems
                .iter()
                .all(|problem| problem.contains("not a multiple")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [[rule]]
            name = "Bad-Name"
            kind = "immediate"
            event_types = ["FIRE_SMOKE"]

            [[rule]]
            name = "burst"
            kind = "threshold"
            event_types = ["NOT_A_TYPE", "ALSO_NOT_A_TYPE"]
            window = "15m"
            min_count = 0

            [[rule]]
            name = "burst"
            kind = "threshold"
            event_types = ["TRIPWIRE"]
            window = "90s"
            min_count = 3
        "#;
        let error = RuleSet::from_toml_str(text, MINUTE).unwrap_err();
        let RulesError::Invalid { problems } = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("rule 1") && problems[0].contains("snake_case"));
        assert!(
            problems[1].contains("rule 2") && problems[1].contains("NOT_A_TYPE, ALSO_NOT_A_TYPE")
        );
        assert!(problems[2].contains("rule 2") && problems[2].contains("min_count"));
        assert!(problems[3].contains("rule 3") && problems[3].contains("duplicate"));
        assert!(problems[4].contains("rule 3") && problems[4].contains("not a multiple"));
        assert_eq!(error.to_string().lines().count(), 5, "one problem per line");
    }

    #[test]
    fn remaining_validation_problems_are_each_reported() {
        let text = r#"
            [[rule]]
            name = "no_types"
            kind = "immediate"
            event_types = []

            [[rule]]
            name = "unspecified"
            kind = "immediate"
            event_types = ["EVENT_TYPE_UNSPECIFIED"]
            cooldown = "0s"

            [[rule]]
            name = "zero_window"
            kind = "threshold"
            event_types = ["DOOR_FORCED", "DOOR_FORCED"]
            window = "0s"
            min_count = 3
            severity = 5
        "#;
        let RulesError::Invalid { problems } = RuleSet::from_toml_str(text, MINUTE).unwrap_err()
        else {
            panic!("expected Invalid");
        };
        let expected_fragments = [
            "event_types is empty",
            "EVENT_TYPE_UNSPECIFIED",
            "cooldown must be at least 1 ms",
            "listed twice",
            "window must be at least 1 ms",
            "severity must be between 1 and 4",
        ];
        assert_eq!(problems.len(), expected_fragments.len(), "{problems:#?}");
        for (problem, fragment) in problems.iter().zip(expected_fragments) {
            assert!(
                problem.contains(fragment),
                "{problem:?} should mention {fragment:?}"
            );
        }
    }

    #[test]
    fn a_file_without_rules_is_invalid() {
        let error = RuleSet::from_toml_str("", MINUTE).unwrap_err();
        assert!(
            matches!(&error, RulesError::Invalid { problems } if problems.len() == 1),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let unknown_rule_field = r#"
            [[rule]]
            name = "life_safety"
            kind = "immediate"
            event_types = ["SOS"]
            colldown = "5m"
        "#;
        assert!(matches!(
            RuleSet::from_toml_str(unknown_rule_field, MINUTE),
            Err(RulesError::Parse(message)) if message.contains("colldown")
        ));
        let unknown_top_level = r#"
            rules_version = 2
            [[rule]]
            name = "life_safety"
            kind = "immediate"
            event_types = ["SOS"]
        "#;
        assert!(matches!(
            RuleSet::from_toml_str(unknown_top_level, MINUTE),
            Err(RulesError::Parse(_))
        ));
        let window_on_immediate = r#"
            [[rule]]
            name = "life_safety"
            kind = "immediate"
            event_types = ["SOS"]
            window = "5m"
        "#;
        assert!(matches!(
            RuleSet::from_toml_str(window_on_immediate, MINUTE),
            Err(RulesError::Parse(_))
        ));
    }

    #[test]
    fn unknown_kind_and_bad_duration_are_parse_errors() {
        let unknown_kind = r#"
            [[rule]]
            name = "spiky"
            kind = "spike"
            event_types = ["SOS"]
        "#;
        assert!(matches!(
            RuleSet::from_toml_str(unknown_kind, MINUTE),
            Err(RulesError::Parse(_))
        ));
        let bad_duration = r#"
            [[rule]]
            name = "sos"
            kind = "immediate"
            event_types = ["SOS"]
            cooldown = "five minutes"
        "#;
        assert!(matches!(
            RuleSet::from_toml_str(bad_duration, MINUTE),
            Err(RulesError::Parse(_))
        ));
    }

    #[test]
    fn cooldown_defaults_to_five_minutes_and_threshold_severity_to_the_most_severe_type() {
        let text = r#"
            [[rule]]
            name = "sos"
            kind = "immediate"
            event_types = ["SOS"]

            [[rule]]
            name = "mixed"
            kind = "threshold"
            event_types = ["TAILGATING", "DOOR_FORCED", "LOITERING"]
            window = "1h"
            min_count = 2
        "#;
        let rule_set = RuleSet::from_toml_str(text, MINUTE).unwrap();
        let Some(Rule::Immediate(sos)) = rule_set.rule("sos") else {
            panic!("sos");
        };
        assert_eq!(sos.cooldown_millis, 5 * MINUTE);
        let Some(Rule::Threshold(mixed)) = rule_set.rule("mixed") else {
            panic!("mixed");
        };
        assert_eq!(mixed.severity, 2);
        assert_eq!(mixed.scope, "DOOR_FORCED+LOITERING+TAILGATING");
        assert_eq!(
            mixed.event_types,
            vec![
                EventType::DoorForced,
                EventType::Loitering,
                EventType::Tailgating
            ]
        );
    }

    #[test]
    fn version_changes_with_content() {
        let first = RuleSet::from_toml_str(EMBEDDED_RULES_TOML, MINUTE).unwrap();
        let again = RuleSet::from_toml_str(EMBEDDED_RULES_TOML, MINUTE).unwrap();
        let edited_text = format!("{EMBEDDED_RULES_TOML}\n# edited\n");
        let edited = RuleSet::from_toml_str(&edited_text, MINUTE).unwrap();
        assert_eq!(first.version(), again.version());
        assert_ne!(first.version(), edited.version());
        assert!(first.version().bytes().all(|byte| byte.is_ascii_hexdigit()));
    }

    #[test]
    fn non_positive_pane_size_is_a_problem_not_a_panic() {
        let RulesError::Invalid { problems } = RuleSet::embedded_default(0).unwrap_err() else {
            panic!("expected Invalid");
        };
        assert!(problems[0].contains("pane size"), "{problems:?}");
    }
}
