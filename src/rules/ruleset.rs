//! The rules file: its TOML shape, validation (every problem reported at once, no IO) and the
//! validated [`RuleSet`] (rules, maintenance-window suppressions and baseline settings).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kind::RegisteredKind;
pub use super::kinds::Rule;
use super::kinds::RuleSpec;
use crate::event::default_severity;
use crate::proto::EventType;
use crate::time::{rfc3339_to_millis, HOUR_MILLIS};

/// The default rules, embedded in the binary (`seeds/rules.toml`).
pub const EMBEDDED_RULES_TOML: &str = include_str!("../../seeds/rules.toml");

/// Longest accepted `window`, `interval`, `silence` or `cooldown` (30 days): keeps every time
/// computation far from `i64` overflow and bounds the panes kept per series.
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Default `[baseline] weeks`: the learned baseline is the mean of this many weeks.
pub const DEFAULT_BASELINE_WEEKS: u32 = 4;
/// Default `[baseline] shrinkage_weeks` (k of the shrinkage formula).
pub const DEFAULT_SHRINKAGE_WEEKS: f64 = 2.0;
/// Most weeks a baseline may average over.
pub const MAX_BASELINE_WEEKS: u32 = 52;

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

/// The file as written: `[[rule]]` tables, `[[suppression]]` tables and a `[baseline]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    /// The `[[rule]]` tables, in file order.
    #[serde(default)]
    rule: Vec<RuleSpec>,
    /// The `[[suppression]]` tables (maintenance windows), in file order.
    #[serde(default)]
    suppression: Vec<SuppressionSpec>,
    /// The optional `[baseline]` table.
    #[serde(default)]
    baseline: Option<BaselineSpec>,
}

/// The `[baseline]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineSpec {
    /// Weeks averaged by the learned baseline; signed so that 0 or less is a validation problem.
    #[serde(default = "default_baseline_weeks")]
    weeks: i64,
    /// k of the shrinkage toward the community mean, in weeks.
    #[serde(default = "default_shrinkage_weeks")]
    shrinkage_weeks: f64,
}

fn default_baseline_weeks() -> i64 {
    i64::from(DEFAULT_BASELINE_WEEKS)
}

fn default_shrinkage_weeks() -> f64 {
    DEFAULT_SHRINKAGE_WEEKS
}

/// One `[[suppression]]` table as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionSpec {
    /// Unique name (carried by suppressed alerts in `suppressed_by`).
    name: String,
    /// Target: one device.
    #[serde(default)]
    device_id: Option<String>,
    /// Target: one grid cell.
    #[serde(default)]
    grid_id: Option<String>,
    /// Target: one community.
    #[serde(default)]
    community_id: Option<String>,
    /// RFC 3339 start (inclusive).
    start: String,
    /// RFC 3339 end (exclusive).
    end: String,
    /// Why (free text for operators).
    #[serde(default)]
    reason: String,
    /// Only these rules (default: all).
    #[serde(default)]
    rules: Option<Vec<String>>,
}

/// What one alert series covers: one grid cell, one whole community (its cells summed) or one
/// district (its communities summed).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertScope {
    /// One series per grid cell (`scope = "cell"`, the default).
    #[default]
    Cell,
    /// One series per community (`scope = "community"`): alerts carry no `grid_id`.
    Community,
    /// One series per district (`scope = "district"`, its communities summed): alerts carry
    /// only a `district_id`. A wave spread over a district is invisible per community at
    /// fraud's rates and plain at district scope (README "Wave detection power").
    District,
    /// A space-time cluster of neighbouring communities found by a `kind = "scan"` rule: its
    /// alerts name the cluster's centre community and list every member
    /// (`cluster_community_ids`). Not a counting unit: no other kind accepts it as `scope`.
    Cluster,
    /// The whole city, found by a `kind = "scan"` rule with `scopes` including `"city"`: its
    /// alerts name no grid, community or district. Not a counting unit either.
    City,
}

impl AlertScope {
    /// The name in the rules file and on alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertScope::Cell => "cell",
            AlertScope::Community => "community",
            AlertScope::District => "district",
            AlertScope::Cluster => "cluster",
            AlertScope::City => "city",
        }
    }
}

/// What a maintenance window covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuppressionTarget {
    /// Alerts whose `device_id` is this device.
    Device(String),
    /// Alerts whose `grid_id` is this cell.
    Grid(String),
    /// Alerts whose `community_id` is this community (cell and community scope alike).
    Community(String),
}

/// A maintenance window: alerts it matches are still tracked and written, but marked with
/// `suppressed_by` so that delivery does not page; see [`super::suppression`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Unique name, written into `suppressed_by`.
    pub name: String,
    /// The device, cell or community it covers.
    pub target: SuppressionTarget,
    /// Start (inclusive), epoch milliseconds.
    pub start_millis: i64,
    /// End (exclusive), epoch milliseconds; greater than the start.
    pub end_millis: i64,
    /// Why, for operators.
    pub reason: String,
    /// The rules it applies to; empty means every rule.
    pub rules: Vec<String>,
}

/// Settings of the learned baseline (the `[baseline]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineSettings {
    /// The learned rate comes from this many most recent weeks (per hour of week for cells,
    /// one level over all hours for communities, districts and scans).
    pub weeks: u32,
    /// k of the shrinkage `(n·cell + k·prior)/(n + k)`, in weeks (≥ 0).
    pub shrinkage_weeks: f64,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings {
            weeks: DEFAULT_BASELINE_WEEKS,
            shrinkage_weeks: DEFAULT_SHRINKAGE_WEEKS,
        }
    }
}

/// A validated set of rules, with the pane size its windows were checked against and the
/// version of the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// Rules in file order (the order in which one event's alerts are emitted).
    rules: Vec<Rule>,
    /// Maintenance windows in file order (the first match names a suppressed alert).
    suppressions: Vec<Suppression>,
    /// Settings of the learned baseline.
    baseline: BaselineSettings,
    /// Pane size the windows are multiples of; the engine aligns panes to it.
    pane_size_millis: i64,
    /// First 12 hex chars of sha256 of the file text, to tell deployments apart.
    version: String,
}

impl RuleSet {
    /// Parses and validates a rules file. `pane_size_millis` is the tumbling pane size
    /// (windows and intervals must be positive multiples of it).
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
            let problems_before = problems.len();
            let mut validation = RuleValidation::new(
                zero_based_index + 1,
                rule_spec.name(),
                pane_size_millis,
                &mut seen_names,
                &mut problems,
            );
            let rule = rule_spec.validate(&mut validation);
            if problems.len() == problems_before {
                rules.push(rule);
            }
        }
        let baseline = validate_baseline(rules_file.baseline, &mut problems);
        let suppressions =
            validate_suppressions(rules_file.suppression, &seen_names, &mut problems);
        if !problems.is_empty() {
            return Err(RulesError::Invalid { problems });
        }
        Ok(RuleSet {
            rules,
            suppressions,
            baseline,
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

    /// The rules only an engine that sees every community can judge
    /// ([`Rule::needs_whole_city`]), with the same maintenance windows, baseline settings,
    /// pane size and version: what the whole-city detector evaluates.
    pub fn whole_city_part(&self) -> RuleSet {
        RuleSet {
            rules: self
                .rules
                .iter()
                .filter(|rule| rule.needs_whole_city())
                .cloned()
                .collect(),
            suppressions: self.suppressions.clone(),
            baseline: self.baseline,
            pane_size_millis: self.pane_size_millis,
            version: self.version.clone(),
        }
    }

    /// The longest event-time history a whole-city rule counts over; `None` without such
    /// rules.
    pub fn whole_city_history_millis(&self) -> Option<i64> {
        self.rules
            .iter()
            .filter_map(Rule::whole_city_history_millis)
            .max()
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name() == name)
    }

    /// The rules of kind `K`, in file order.
    pub fn rules_of_kind<K: RegisteredKind + 'static>(&self) -> impl Iterator<Item = &K> {
        self.rules.iter().filter_map(K::from_rule)
    }

    /// The rule named `name` if it is of kind `K`.
    pub fn rule_of_kind<K: RegisteredKind + 'static>(&self, name: &str) -> Option<&K> {
        self.rule(name).and_then(K::from_rule)
    }

    /// The maintenance windows, in file order.
    pub fn suppressions(&self) -> &[Suppression] {
        &self.suppressions
    }

    /// Settings of the learned baseline.
    pub fn baseline_settings(&self) -> BaselineSettings {
        self.baseline
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

/// The validation of one `[[rule]]` table: what every kind checks the same way (names, event
/// types, durations, counts, severities), each problem labelled with the rule's 1-based index
/// and name so that all problems of a file can be reported at once.
pub struct RuleValidation<'a> {
    /// `rule {index} ({name:?})`, the prefix of every problem.
    label: String,
    /// Pane size that windows must be multiples of.
    pane_size_millis: i64,
    /// Every problem of the file so far.
    problems: &'a mut Vec<String>,
}

impl<'a> RuleValidation<'a> {
    /// Starts validating the table at `rule_index` (1-based) named `name`, checking the name
    /// first: snake_case, and unique among `seen_names`.
    pub(crate) fn new(
        rule_index: usize,
        name: &str,
        pane_size_millis: i64,
        seen_names: &mut BTreeSet<String>,
        problems: &'a mut Vec<String>,
    ) -> RuleValidation<'a> {
        let mut validation = RuleValidation {
            label: format!("rule {rule_index} ({name:?})"),
            pane_size_millis,
            problems,
        };
        let is_snake_case = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if !is_snake_case {
            validation.problem("name must be non-empty snake_case ([a-z0-9_]+)");
        }
        if !seen_names.insert(name.to_string()) {
            validation.problem(format!("duplicate rule name {name:?}"));
        }
        validation
    }

    /// Reports a problem of this rule.
    pub(crate) fn problem(&mut self, message: impl std::fmt::Display) {
        self.problems.push(format!("{}: {message}", self.label));
    }

    /// An `alert_budget_per_day` as written: the alerts a day city-wide the rule is expected
    /// to raise under the seeded baseline (a promise the four-week budget test in
    /// `src/rules/tests_budget.rs` holds the rule to; the engine itself does not use it). Must
    /// be a non-negative number of at most 1,000.
    pub(crate) fn alert_budget(&mut self, budget: Option<f64>) {
        if let Some(budget) = budget {
            if !(budget.is_finite() && (0.0..=1000.0).contains(&budget)) {
                self.problem(format!(
                    "alert_budget_per_day must be between 0 and 1000 (alerts a day city-wide), got {budget}"
                ));
            }
        }
    }

    /// The event types named, sorted by enum number; every unknown, unspecified or repeated
    /// name is a problem, and so is an empty list.
    pub(crate) fn event_types(&mut self, names: &[String]) -> Vec<EventType> {
        if names.is_empty() {
            self.problem("event_types is empty");
            return Vec::new();
        }
        let mut event_types: Vec<EventType> = Vec::with_capacity(names.len());
        let mut unknown_names: Vec<&str> = Vec::new();
        for name in names {
            match EventType::from_str_name(name) {
                None => unknown_names.push(name),
                Some(EventType::Unspecified) => {
                    self.problem("EVENT_TYPE_UNSPECIFIED cannot be matched by a rule");
                }
                Some(event_type) => {
                    if event_types.contains(&event_type) {
                        self.problem(format!("event type {name} is listed twice"));
                    } else {
                        event_types.push(event_type);
                    }
                }
            }
        }
        if !unknown_names.is_empty() {
            self.problem(format!("unknown event types: {}", unknown_names.join(", ")));
        }
        event_types.sort_unstable();
        event_types
    }

    /// The duration in whole milliseconds, or 0 with a problem when it is zero or too long.
    pub(crate) fn duration(&mut self, duration: Duration, field: &str) -> i64 {
        if duration > MAX_RULE_DURATION {
            self.problem(format!(
                "{field} {} is longer than the maximum {}",
                humantime_serde::re::humantime::format_duration(duration),
                humantime_serde::re::humantime::format_duration(MAX_RULE_DURATION)
            ));
            return 0;
        }
        // At most 30 days, so the conversion cannot fail; 0 stands for "invalid" anyway.
        let millis = i64::try_from(duration.as_millis()).unwrap_or(0);
        if millis <= 0 {
            self.problem(format!("{field} must be at least 1 ms"));
            return 0;
        }
        millis
    }

    /// [`RuleValidation::duration`] that must also be a multiple of the pane size: series
    /// are counted in panes, so any other length could not be evaluated exactly.
    pub(crate) fn pane_multiple(&mut self, duration: Duration, field: &str) -> i64 {
        let millis = self.duration(duration, field);
        let pane_size_millis = self.pane_size_millis;
        if pane_size_millis > 0 && millis > 0 && millis % pane_size_millis != 0 {
            self.problem(format!(
                "{field} {} is not a multiple of the pane size ({pane_size_millis} ms)",
                humantime_serde::re::humantime::format_duration(duration)
            ));
        }
        millis
    }

    /// A duration that must be a whole number of hours between 1 and `max_hours`, in
    /// milliseconds (an hour, with a problem, otherwise): for rules evaluated on hour
    /// boundaries against hourly counts.
    pub(crate) fn whole_hours(&mut self, duration: Duration, field: &str, max_hours: i64) -> i64 {
        let seconds = duration.as_secs();
        let whole = duration.subsec_nanos() == 0 && seconds % 3600 == 0;
        let hours = i64::try_from(seconds / 3600).unwrap_or(i64::MAX);
        if !whole || hours < 1 || hours > max_hours {
            self.problem(format!(
                "{field} must be whole hours between 1h and {max_hours}h, got {}",
                humantime_serde::re::humantime::format_duration(duration)
            ));
            return HOUR_MILLIS;
        }
        hours * HOUR_MILLIS
    }

    /// A count field that must be between 1 and `u32::MAX`; 1 with a problem otherwise.
    pub(crate) fn count(&mut self, value: i64, field: &str) -> u32 {
        match u32::try_from(value) {
            Ok(count) if count >= 1 => count,
            _ => {
                self.problem(format!(
                    "{field} must be between 1 and {}, got {value}",
                    u32::MAX
                ));
                1
            }
        }
    }

    /// A counting rule's `scope`: a cell, a community or a district. `cluster` is what scan
    /// rules find, not a unit another kind can count in.
    pub(crate) fn counting_scope(&mut self, scope: AlertScope) -> AlertScope {
        if matches!(scope, AlertScope::Cluster | AlertScope::City) {
            self.problem(format!(
                "scope \"{}\" is found by kind = \"scan\" rules; count per cell, community or district",
                scope.as_str()
            ));
        }
        scope
    }

    /// The configured severity (1..=4), or the most severe default severity of the types.
    pub(crate) fn severity(&mut self, severity: Option<i64>, event_types: &[EventType]) -> u8 {
        match severity {
            None => event_types
                .iter()
                .map(|event_type| default_severity(*event_type))
                .min()
                .unwrap_or(4),
            Some(configured) => match u8::try_from(configured) {
                Ok(value) if (1..=4).contains(&value) => value,
                _ => {
                    self.problem(format!(
                        "severity must be between 1 and 4, got {configured}"
                    ));
                    4
                }
            },
        }
    }
}

/// The `[baseline]` settings, with a problem for each invalid value.
fn validate_baseline(spec: Option<BaselineSpec>, problems: &mut Vec<String>) -> BaselineSettings {
    let Some(spec) = spec else {
        return BaselineSettings::default();
    };
    let weeks = match u32::try_from(spec.weeks) {
        Ok(weeks) if (1..=MAX_BASELINE_WEEKS).contains(&weeks) => weeks,
        _ => {
            problems.push(format!(
                "baseline: weeks must be between 1 and {MAX_BASELINE_WEEKS}, got {}",
                spec.weeks
            ));
            DEFAULT_BASELINE_WEEKS
        }
    };
    if !(spec.shrinkage_weeks.is_finite() && (0.0..=1000.0).contains(&spec.shrinkage_weeks)) {
        problems.push(format!(
            "baseline: shrinkage_weeks must be between 0 and 1000, got {}",
            spec.shrinkage_weeks
        ));
    }
    BaselineSettings {
        weeks,
        shrinkage_weeks: spec.shrinkage_weeks,
    }
}

/// The `[[suppression]]` tables, with a problem for each invalid one (named by 1-based index
/// and name). `rule_names` are every rule name declared in the file.
fn validate_suppressions(
    specs: Vec<SuppressionSpec>,
    rule_names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Vec<Suppression> {
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut suppressions = Vec::with_capacity(specs.len());
    for (zero_based_index, spec) in specs.into_iter().enumerate() {
        let problems_before = problems.len();
        let label = format!("suppression {} ({:?})", zero_based_index + 1, spec.name);
        let name_is_valid = !spec.name.is_empty()
            && spec.name.bytes().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':')
            });
        if !name_is_valid {
            problems.push(format!(
                "{label}: name must be non-empty and use only [A-Za-z0-9_.:-]"
            ));
        }
        if !seen_names.insert(spec.name.clone()) {
            problems.push(format!(
                "{label}: duplicate suppression name {:?}",
                spec.name
            ));
        }
        let non_empty = |value: Option<String>| value.filter(|text| !text.is_empty());
        let targets: Vec<SuppressionTarget> = [
            non_empty(spec.device_id).map(SuppressionTarget::Device),
            non_empty(spec.grid_id).map(SuppressionTarget::Grid),
            non_empty(spec.community_id).map(SuppressionTarget::Community),
        ]
        .into_iter()
        .flatten()
        .collect();
        if targets.len() != 1 {
            problems.push(format!(
                "{label}: exactly one of device_id, grid_id, community_id must be set, got {}",
                targets.len()
            ));
        }
        let start_millis = parse_suppression_time(&spec.start, "start", &label, problems);
        let end_millis = parse_suppression_time(&spec.end, "end", &label, problems);
        if let (Some(start), Some(end)) = (start_millis, end_millis) {
            if end <= start {
                problems.push(format!("{label}: end must be after start"));
            }
        }
        let rules = spec.rules.unwrap_or_default();
        let unknown_rules: Vec<&str> = rules
            .iter()
            .filter(|rule_name| !rule_names.contains(rule_name.as_str()))
            .map(String::as_str)
            .collect();
        if !unknown_rules.is_empty() {
            problems.push(format!(
                "{label}: unknown rules: {}",
                unknown_rules.join(", ")
            ));
        }
        if problems.len() > problems_before {
            continue;
        }
        let (Some(target), Some(start_millis), Some(end_millis)) =
            (targets.into_iter().next(), start_millis, end_millis)
        else {
            continue;
        };
        suppressions.push(Suppression {
            name: spec.name,
            target,
            start_millis,
            end_millis,
            reason: spec.reason,
            rules,
        });
    }
    suppressions
}

fn parse_suppression_time(
    text: &str,
    field: &str,
    label: &str,
    problems: &mut Vec<String>,
) -> Option<i64> {
    match rfc3339_to_millis(text) {
        Ok(millis) => Some(millis),
        Err(error) => {
            problems.push(format!(
                "{label}: {field} {text:?} is not an RFC 3339 time: {error}"
            ));
            None
        }
    }
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
            name = "smooth"
            kind = "ewma"
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
