//! The rules file: its TOML shape, validation (every problem reported at once, no IO) and the
//! validated [`RuleSet`] (rules, maintenance-window suppressions and baseline settings).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::event::{default_severity, ALL_EVENT_TYPES};
use crate::proto::EventType;
use crate::time::rfc3339_to_millis;

/// The default rules, embedded in the binary (`seeds/rules.toml`).
pub const EMBEDDED_RULES_TOML: &str = include_str!("../../seeds/rules.toml");

/// Cooldown of an immediate rule that does not set one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// Longest accepted `window`, `interval`, `silence` or `cooldown` (30 days): keeps every time
/// computation far from `i64` overflow and bounds the panes kept per series.
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Default `min_count` of a spike rule.
pub const DEFAULT_SPIKE_MIN_COUNT: i64 = 3;
/// Default false discovery rate `fdr` (Benjamini–Hochberg q) of a spike rule.
pub const DEFAULT_SPIKE_FDR: f64 = 0.01;
/// Default `shift` (λ1 / λ0) of a CUSUM rule.
pub const DEFAULT_CUSUM_SHIFT: f64 = 2.0;
/// Default in-control average run length `arl0` (in intervals) of a CUSUM rule.
pub const DEFAULT_CUSUM_ARL0: f64 = 2000.0;
/// Smallest accepted `arl0`: below it the chart alarms every few intervals anyway.
pub const MIN_CUSUM_ARL0: f64 = 10.0;
/// Largest accepted `arl0` (keeps the numeric search for `h` bounded).
pub const MAX_CUSUM_ARL0: f64 = 1.0e7;
/// Default `window` of a data-gap rule (distinct offline devices are counted within it).
pub const DEFAULT_DATA_GAP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Default `min_offline_devices` of a data-gap rule.
pub const DEFAULT_MIN_OFFLINE_DEVICES: i64 = 3;
/// Default `silence` of a data-gap rule: shorter silences never alert.
pub const DEFAULT_DATA_GAP_SILENCE: Duration = Duration::from_secs(2 * 60 * 60);
/// Default `alpha` of a data-gap rule: the silence alerts once P(no events) < alpha. Small
/// because every event starts a new chance of a gap: a cell sees ~500 events a week, so the
/// city's 1,911 cells get ~1e6 chances a week, and α = 1e-7 keeps false alarms near 0.1 a week.
pub const DEFAULT_DATA_GAP_ALPHA: f64 = 1e-7;
/// Default severity of a cell-scope data-gap rule (operations, not an incident).
pub const DEFAULT_DATA_GAP_CELL_SEVERITY: u8 = 4;
/// Default severity of a community-scope data-gap rule (a whole community blind is serious).
pub const DEFAULT_DATA_GAP_COMMUNITY_SEVERITY: u8 = 2;
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
        /// Per cell (default) or per community.
        #[serde(default)]
        scope: AlertScope,
    },
    /// `kind = "spike"`.
    Spike {
        /// Unique rule name.
        name: String,
        /// Proto enum names of the matched types (one series per type).
        event_types: Vec<String>,
        /// Counting window, ending at the evaluated pane boundary.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Per cell (default) or per community.
        #[serde(default)]
        scope: AlertScope,
        /// Smallest count that may alert.
        #[serde(default = "default_spike_min_count")]
        min_count: i64,
        /// Benjamini–Hochberg false discovery rate q.
        #[serde(default = "default_spike_fdr")]
        fdr: f64,
        /// Alert severity (default: the most severe default severity of the types).
        #[serde(default)]
        severity: Option<i64>,
    },
    /// `kind = "cusum"`.
    Cusum {
        /// Unique rule name.
        name: String,
        /// Proto enum names of the matched types (one chart per type).
        event_types: Vec<String>,
        /// Counting interval of the chart.
        #[serde(with = "humantime_serde")]
        interval: Duration,
        /// Per cell (default) or per community.
        #[serde(default)]
        scope: AlertScope,
        /// Out-of-control mean as a multiple of the in-control mean (λ1 / λ0).
        #[serde(default = "default_cusum_shift")]
        shift: f64,
        /// Target in-control average run length, in intervals.
        #[serde(default = "default_cusum_arl0")]
        arl0: f64,
        /// Alert severity (default: the most severe default severity of the types).
        #[serde(default)]
        severity: Option<i64>,
    },
    /// `kind = "data_gap"`.
    DataGap {
        /// Unique rule name.
        name: String,
        /// Per cell (default) or per community.
        #[serde(default)]
        scope: AlertScope,
        /// Window in which distinct offline devices are counted.
        #[serde(default = "default_data_gap_window", with = "humantime_serde")]
        window: Duration,
        /// Distinct devices reporting DEVICE_OFFLINE within `window` that alert.
        #[serde(default = "default_min_offline_devices")]
        min_offline_devices: i64,
        /// Shortest silence that may alert.
        #[serde(default = "default_data_gap_silence", with = "humantime_serde")]
        silence: Duration,
        /// The silence alerts once P(no events | baseline) < alpha.
        #[serde(default = "default_data_gap_alpha")]
        alpha: f64,
        /// Alert severity (default 4 per cell, 2 per community).
        #[serde(default)]
        severity: Option<i64>,
    },
}

fn default_cooldown() -> Duration {
    DEFAULT_COOLDOWN
}

fn default_spike_min_count() -> i64 {
    DEFAULT_SPIKE_MIN_COUNT
}

fn default_spike_fdr() -> f64 {
    DEFAULT_SPIKE_FDR
}

fn default_cusum_shift() -> f64 {
    DEFAULT_CUSUM_SHIFT
}

fn default_cusum_arl0() -> f64 {
    DEFAULT_CUSUM_ARL0
}

fn default_data_gap_window() -> Duration {
    DEFAULT_DATA_GAP_WINDOW
}

fn default_min_offline_devices() -> i64 {
    DEFAULT_MIN_OFFLINE_DEVICES
}

fn default_data_gap_silence() -> Duration {
    DEFAULT_DATA_GAP_SILENCE
}

fn default_data_gap_alpha() -> f64 {
    DEFAULT_DATA_GAP_ALPHA
}

/// What one alert series covers: one grid cell, or one whole community (its cells summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertScope {
    /// One series per grid cell (`scope = "cell"`, the default).
    #[default]
    Cell,
    /// One series per community (`scope = "community"`): alerts carry no `grid_id`.
    Community,
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

/// A rule that alerts when at least `min_count` matching events of one cell (or community)
/// fall within a sliding window.
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
    /// Whether events are counted per cell or per community.
    pub unit: AlertScope,
}

/// A rule that alerts when a window's count of one type is improbably high under the
/// Poisson baseline (Benjamini–Hochberg across the rule's series); see [`super::spike`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types (one series per unit and type), sorted, without duplicates.
    pub event_types: Vec<EventType>,
    /// Counting window, a positive multiple of the pane size.
    pub window_millis: i64,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// Smallest count that may alert (at least 1).
    pub min_count: u32,
    /// Benjamini–Hochberg false discovery rate, in (0, 1).
    pub fdr: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
}

/// A one-sided Poisson CUSUM chart per unit and type; see [`super::cusum`].
#[derive(Debug, Clone, PartialEq)]
pub struct CusumRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Matched event types (one chart per unit and type), sorted, without duplicates.
    pub event_types: Vec<EventType>,
    /// Counting interval, a positive multiple of the pane size.
    pub interval_millis: i64,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// λ1 / λ0, greater than 1.
    pub shift: f64,
    /// Target in-control average run length in intervals.
    pub arl0: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
}

/// An operations rule: a cell (or community) whose devices go offline or that falls silent;
/// see [`super::data_gap`].
#[derive(Debug, Clone, PartialEq)]
pub struct DataGapRule {
    /// Unique rule name (`[a-z0-9_]+`), the `rule` of its alerts.
    pub name: String,
    /// Per cell or per community.
    pub unit: AlertScope,
    /// Window in which distinct DEVICE_OFFLINE devices are counted.
    pub window_millis: i64,
    /// Distinct offline devices within `window_millis` that fire (at least 1).
    pub min_offline_devices: u32,
    /// Shortest silence that may fire.
    pub silence_millis: i64,
    /// The silence fires once P(no events over it | baseline) < alpha, in (0, 1).
    pub alpha: f64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
}

/// One validated rule. Two rules are the same definition when they compare equal (every
/// field is canonical: defaults filled in, types sorted).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Alert on every matching event.
    Immediate(ImmediateRule),
    /// Alert on a count in a sliding window.
    Threshold(ThresholdRule),
    /// Alert on an improbable count under the baseline.
    Spike(SpikeRule),
    /// Alert on a sustained upward shift of the rate.
    Cusum(CusumRule),
    /// Alert operations about silent cells and offline devices.
    DataGap(DataGapRule),
}

impl Rule {
    /// The rule's unique name.
    pub fn name(&self) -> &str {
        match self {
            Rule::Immediate(rule) => &rule.name,
            Rule::Threshold(rule) => &rule.name,
            Rule::Spike(rule) => &rule.name,
            Rule::Cusum(rule) => &rule.name,
            Rule::DataGap(rule) => &rule.name,
        }
    }

    /// The `rule_kind` of its alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Immediate(_) => super::alert::RULE_KIND_IMMEDIATE,
            Rule::Threshold(_) => super::alert::RULE_KIND_THRESHOLD,
            Rule::Spike(_) => super::alert::RULE_KIND_SPIKE,
            Rule::Cusum(_) => super::alert::RULE_KIND_CUSUM,
            Rule::DataGap(_) => super::alert::RULE_KIND_DATA_GAP,
        }
    }

    /// The event types the rule sees (a data-gap rule sees every type).
    pub fn event_types(&self) -> &[EventType] {
        match self {
            Rule::Immediate(rule) => &rule.event_types,
            Rule::Threshold(rule) => &rule.event_types,
            Rule::Spike(rule) => &rule.event_types,
            Rule::Cusum(rule) => &rule.event_types,
            Rule::DataGap(_) => &ALL_EVENT_TYPES,
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
    /// The learned rate is the mean of this many most recent weeks (per hour of week).
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

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name() == name)
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

/// Validates one rule, pushing each problem; returns the rule only when it has none.
fn validate_rule(
    rule_spec: RuleSpec,
    rule_index: usize,
    pane_size_millis: i64,
    seen_names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let problems_before = problems.len();
    let name = match &rule_spec {
        RuleSpec::Immediate { name, .. }
        | RuleSpec::Threshold { name, .. }
        | RuleSpec::Spike { name, .. }
        | RuleSpec::Cusum { name, .. }
        | RuleSpec::DataGap { name, .. } => name.clone(),
    };
    let label = format!("rule {rule_index} ({name:?})");
    validate_name(&name, &label, seen_names, problems);
    let event_types = match &rule_spec {
        RuleSpec::Immediate { event_types, .. }
        | RuleSpec::Threshold { event_types, .. }
        | RuleSpec::Spike { event_types, .. }
        | RuleSpec::Cusum { event_types, .. } => {
            validate_event_types(event_types, &label, problems)
        }
        RuleSpec::DataGap { .. } => Vec::new(),
    };
    let pane_multiple = |duration: Duration, field: &str, problems: &mut Vec<String>| -> i64 {
        let millis = validate_duration(duration, field, &label, problems);
        if pane_size_millis > 0 && millis > 0 && millis % pane_size_millis != 0 {
            problems.push(format!(
                "{label}: {field} {} is not a multiple of the pane size ({pane_size_millis} ms)",
                humantime_serde::re::humantime::format_duration(duration)
            ));
        }
        millis
    };
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
            scope,
            ..
        } => {
            let window_millis = pane_multiple(window, "window", problems);
            let valid_min_count = validate_count(min_count, "min_count", &label, problems);
            let valid_severity = validate_severity(severity, &event_types, &label, problems);
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
                unit: scope,
            })
        }
        RuleSpec::Spike {
            window,
            scope,
            min_count,
            fdr,
            severity,
            ..
        } => {
            let window_millis = pane_multiple(window, "window", problems);
            let valid_min_count = validate_count(min_count, "min_count", &label, problems);
            if !(fdr.is_finite() && fdr > 0.0 && fdr < 1.0) {
                problems.push(format!(
                    "{label}: fdr must be strictly between 0 and 1, got {fdr}"
                ));
            }
            let valid_severity = validate_severity(severity, &event_types, &label, problems);
            Rule::Spike(SpikeRule {
                name,
                event_types,
                window_millis,
                unit: scope,
                min_count: valid_min_count,
                fdr,
                severity: valid_severity,
            })
        }
        RuleSpec::Cusum {
            interval,
            scope,
            shift,
            arl0,
            severity,
            ..
        } => {
            let interval_millis = pane_multiple(interval, "interval", problems);
            if !(shift.is_finite() && shift > 1.0 && shift <= 100.0) {
                problems.push(format!(
                    "{label}: shift must be greater than 1 and at most 100, got {shift}"
                ));
            }
            if !(arl0.is_finite() && (MIN_CUSUM_ARL0..=MAX_CUSUM_ARL0).contains(&arl0)) {
                problems.push(format!(
                    "{label}: arl0 must be between {MIN_CUSUM_ARL0} and {MAX_CUSUM_ARL0} intervals, got {arl0}"
                ));
            }
            let valid_severity = validate_severity(severity, &event_types, &label, problems);
            Rule::Cusum(CusumRule {
                name,
                event_types,
                interval_millis,
                unit: scope,
                shift,
                arl0,
                severity: valid_severity,
            })
        }
        RuleSpec::DataGap {
            scope,
            window,
            min_offline_devices,
            silence,
            alpha,
            severity,
            ..
        } => {
            let window_millis = validate_duration(window, "window", &label, problems);
            let silence_millis = pane_multiple(silence, "silence", problems);
            let valid_min_offline_devices =
                validate_count(min_offline_devices, "min_offline_devices", &label, problems);
            if !(alpha.is_finite() && alpha > 0.0 && alpha < 1.0) {
                problems.push(format!(
                    "{label}: alpha must be strictly between 0 and 1, got {alpha}"
                ));
            }
            let default_severity_of_scope = match scope {
                AlertScope::Cell => DEFAULT_DATA_GAP_CELL_SEVERITY,
                AlertScope::Community => DEFAULT_DATA_GAP_COMMUNITY_SEVERITY,
            };
            let valid_severity = match severity {
                None => default_severity_of_scope,
                Some(_) => validate_severity(severity, &[], &label, problems),
            };
            Rule::DataGap(DataGapRule {
                name,
                unit: scope,
                window_millis,
                min_offline_devices: valid_min_offline_devices,
                silence_millis,
                alpha,
                severity: valid_severity,
            })
        }
    };
    if problems.len() > problems_before {
        return None;
    }
    Some(rule)
}

/// A count field that must be between 1 and `u32::MAX`; 1 with a problem otherwise.
fn validate_count(value: i64, field: &str, label: &str, problems: &mut Vec<String>) -> u32 {
    match u32::try_from(value) {
        Ok(count) if count >= 1 => count,
        _ => {
            problems.push(format!(
                "{label}: {field} must be between 1 and {}, got {value}",
                u32::MAX
            ));
            1
        }
    }
}

/// The configured severity (1..=4), or the most severe default severity of the types.
fn validate_severity(
    severity: Option<i64>,
    event_types: &[EventType],
    label: &str,
    problems: &mut Vec<String>,
) -> u8 {
    match severity {
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
