//! Scan rules: space-time clusters of neighbouring communities whose events, summed over a
//! recent window, are improbable under the baseline even where no single community's are
//! (the statistic is in [`super::space_time`]).
//!
//! # Decision
//!
//! Per (rule, community, type) the engine keeps hourly counts of matching events. Windows and
//! `interval` are whole hours, and the rule is evaluated at every `interval` boundary `b`
//! (once, at the newest boundary when the watermark jumps several). At `b`, for every window
//! `w` of `windows` and every community, the count over `[b − w, b)` and its baseline
//! expectation (all the rule's types summed; the learned baseline uses history strictly before
//! the longest window, so no window is judged against itself) make the map. Every cylinder —
//! a zone of up to `max_communities` neighbours within `max_radius_km`, times a window — is
//! scored, and the best score gets a Monte Carlo p-value over all cylinders at once
//! (`replications` maps drawn under the baseline, stopping early once it cannot reach
//! `alpha`). The best cylinder and the next ones sharing no community with it fire when their
//! p-value is at most `alpha` and their count at least `min_count`.
//!
//! `alpha` is per evaluation and covers every zone and window together: with hourly
//! evaluations and hysteresis, `alpha = 0.001` (the default) is about one false cluster in ten
//! weeks at the seeded rates, and the shipped rule's 0.005 about one in three, which spends
//! its budget of one a week on power (seeds/rules.toml; the four-week budget test holds the
//! rule to its `alert_budget_per_day`).
//!
//! # Lifecycle
//!
//! - FIRING at `b` with `scope = "cluster"`: `community_id` the zone's centre,
//!   `cluster_community_ids` every member (centre first, then by distance), `observed` the
//!   cylinder's count, `expected` its expectation, `threshold` the smallest count that would
//!   have been significant in it, `p_value` the Monte Carlo p-value, `window_seconds` the
//!   window it fired on, `event_type` the type with most of its events.
//! - While firing, a significant cylinder that shares a community with the alert is the same
//!   wave: when it adds communities, the alert is updated (same id, members grown, its
//!   figures); otherwise nothing is emitted. A wave that drifts to a neighbour stays one alert.
//! - RESOLVED once the members' count over the **shortest** window has looked ordinary —
//!   P(X ≥ count | expected) above `resolve_p_value` (default 0.05) — at every evaluation for
//!   `resolve_hold` (default 12 h), and no significant cylinder touched it meanwhile. Not the
//!   window it fired on: a 72 h window still holds the wave's events for up to three days
//!   after it ended. Not "count ≤ expected" either:
//!   a cluster expects half an event in 6 h, so one ordinary event restarted the hold for
//!   days. The hold outlasts a night, when fraud quietens even during a wave, so a wave of
//!   several days stays one alert.
//! - Fingerprint: (rule, centre community id, "cluster").
//!
//! With Kafka input each partition's engine holds only some communities, so scan rules are
//! evaluated only by an engine that sees the whole city, like district rules: the pipeline's
//! with the simulator or a file, the whole-city detector's with Kafka ([`super::whole_city`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::alert::{
    alert_id, fingerprint, push_capped_event_id, AlertOccurrence, MAX_ALERT_EVENT_IDS,
};
use super::baseline::{epoch_hour, BaselineView, ExpectationCache, HOUR_MILLIS};
use super::kind::{EventOutcome, MatchingEvent, RuleKind, WatermarkContext};
use super::ruleset::{AlertScope, RuleSet, RuleValidation};
use super::series::{
    count_matching_event, drop_expired_buckets, drop_expired_events, first_watermark_past,
    next_pane_boundary, pane_start, state_of_rule, AlertLifecycle, RecentEvent,
};
use super::space_time::{
    allowed_exceedances, non_overlapping, poisson_log_likelihood_ratio, Cylinder, NullMaxima,
    ScanCounts, ScanMap, ScanZones, ZoneKind, MAX_SCAN_WINDOWS, MIN_CYLINDER_EXPECTED,
};
use super::statistics::poisson_upper_tail;
use super::units::evaluated_with_input;
use crate::grid::GridRegistry;
use crate::proto::{Alert, EventType};

/// `rule_kind` of alerts raised by scan rules.
pub const RULE_KIND_SCAN: &str = "scan";

/// Default `interval`: one evaluation an hour.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(3600);
/// Default `max_communities` of a zone.
pub const DEFAULT_SCAN_MAX_COMMUNITIES: i64 = 5;
/// Default `max_radius_km` of a zone.
pub const DEFAULT_SCAN_MAX_RADIUS_KM: f64 = 3.0;
/// Default `alpha` (per evaluation, over every zone and window).
pub const DEFAULT_SCAN_ALPHA: f64 = 0.001;
/// Default `replications` of the Monte Carlo test.
pub const DEFAULT_SCAN_REPLICATIONS: i64 = 999;
/// Default `min_count` of a cluster.
pub const DEFAULT_SCAN_MIN_COUNT: i64 = 3;
/// Default `resolve_hold`: fraud quietens at night, even during a wave, so the hold must
/// outlast a night for a wave of several days to stay one alert.
pub const DEFAULT_SCAN_RESOLVE_HOLD: Duration = Duration::from_secs(12 * 3600);
/// Default `resolve_p_value`: a count is ordinary again when at least this likely.
pub const DEFAULT_SCAN_RESOLVE_P_VALUE: f64 = 0.05;
/// Longest window (a week: the learned baseline's horizon per same hour of week).
const MAX_SCAN_WINDOW_HOURS: i64 = 168;
/// The zone scopes a scan rule may list in `scopes`.
const SCANNED_SCOPES: [AlertScope; 3] =
    [AlertScope::Cluster, AlertScope::District, AlertScope::City];
/// Most communities per zone.
const MAX_SCAN_COMMUNITIES: i64 = 20;
/// Most secondary clusters reported per evaluation (besides the best one).
const MAX_CLUSTERS_PER_EVALUATION: usize = 5;

/// A `kind = "scan"` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// Unique rule name.
    name: String,
    /// Proto enum names of the matched types (summed into one map).
    event_types: Vec<String>,
    /// Window lengths (whole hours, at most 7 days), each ending at the evaluation.
    windows: Vec<humantime_serde::Serde<Duration>>,
    /// Time between evaluations (whole hours, at most a day).
    #[serde(default = "default_scan_interval", with = "humantime_serde")]
    interval: Duration,
    /// What zones to scan: `"cluster"` (neighbourhoods), `"district"` (each district whole),
    /// `"city"` (the whole city); all in one family, so one `alpha` covers them together.
    #[serde(default = "default_scan_scopes")]
    scopes: Vec<String>,
    /// Most communities in a zone (the centre and its nearest neighbours).
    #[serde(default = "default_scan_max_communities")]
    max_communities: i64,
    /// No zone member is farther than this from the zone's centre (km, between centroids).
    #[serde(default = "default_scan_max_radius_km")]
    max_radius_km: f64,
    /// p-value at or below which a cluster alerts (per evaluation, all cylinders together).
    #[serde(default = "default_scan_alpha")]
    alpha: f64,
    /// Monte Carlo replications.
    #[serde(default = "default_scan_replications")]
    replications: i64,
    /// Fewest events a cluster may alert with.
    #[serde(default = "default_scan_min_count")]
    min_count: i64,
    /// A firing cluster is back to normal when its members' count over the shortest window
    /// has a Poisson tail probability above this.
    #[serde(default = "default_scan_resolve_p_value")]
    resolve_p_value: f64,
    /// How long it must stay back there before it resolves.
    #[serde(default = "default_scan_resolve_hold", with = "humantime_serde")]
    resolve_hold: Duration,
    /// Alert severity (default: the most severe default severity of the types).
    #[serde(default)]
    severity: Option<i64>,
    /// Alerts a day city-wide expected under the seeded baseline (enforced by the budget test).
    #[serde(default)]
    alert_budget_per_day: Option<f64>,
}

fn default_scan_interval() -> Duration {
    DEFAULT_SCAN_INTERVAL
}

fn default_scan_scopes() -> Vec<String> {
    vec![AlertScope::Cluster.as_str().to_string()]
}

fn default_scan_max_communities() -> i64 {
    DEFAULT_SCAN_MAX_COMMUNITIES
}

fn default_scan_max_radius_km() -> f64 {
    DEFAULT_SCAN_MAX_RADIUS_KM
}

fn default_scan_alpha() -> f64 {
    DEFAULT_SCAN_ALPHA
}

fn default_scan_replications() -> i64 {
    DEFAULT_SCAN_REPLICATIONS
}

fn default_scan_min_count() -> i64 {
    DEFAULT_SCAN_MIN_COUNT
}

fn default_scan_resolve_p_value() -> f64 {
    DEFAULT_SCAN_RESOLVE_P_VALUE
}

fn default_scan_resolve_hold() -> Duration {
    DEFAULT_SCAN_RESOLVE_HOLD
}

/// A rule that alerts on space-time clusters of its event types.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRule {
    /// Unique rule name.
    pub name: String,
    /// Matched event types, sorted, without duplicates.
    pub event_types: Vec<EventType>,
    /// Window lengths in milliseconds, whole hours, strictly increasing.
    pub windows_millis: Vec<i64>,
    /// Evaluation interval in milliseconds, whole hours.
    pub interval_millis: i64,
    /// The zone scopes scanned: cluster, district and/or city (sorted, no duplicates).
    pub scopes: Vec<AlertScope>,
    /// Most communities per zone.
    pub max_communities: usize,
    /// Zone radius in metres.
    pub max_radius_meters: f64,
    /// Per-evaluation significance level.
    pub alpha: f64,
    /// Monte Carlo replications.
    pub replications: usize,
    /// Fewest events a cluster may alert with.
    pub min_count: u32,
    /// Hysteresis level: the shortest window's count is ordinary when its tail probability
    /// is above this.
    pub resolve_p_value: f64,
    /// Hysteresis time in milliseconds.
    pub resolve_hold_millis: i64,
    /// Severity of the alerts (1..=4).
    pub severity: u8,
}

impl ScanRule {
    fn longest_window_millis(&self) -> i64 {
        self.windows_millis.last().copied().unwrap_or(HOUR_MILLIS)
    }
}

/// Mutable state of all scan rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanState {
    /// Per rule name.
    pub rules: BTreeMap<String, ScanRuleState>,
    /// Seeded community rates already computed (a memo, not in the snapshot).
    #[serde(skip)]
    pub expectations: ExpectationCache,
}

/// One scan rule's counts and alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanRuleState {
    /// Matching events per (`CommunityIndex.0`, `EventType as i32`), per hour start.
    pub hour_counts: BTreeMap<(u32, i32), BTreeMap<i64, u32>>,
    /// The most recent matching events per community, for the alerts' event ids.
    pub recent_events: BTreeMap<u32, Vec<RecentEvent>>,
    /// Interval-aligned time of the last evaluation.
    pub last_evaluated_aligned_millis: Option<i64>,
    /// The firing clusters.
    pub clusters: Vec<FiringCluster>,
}

/// A firing cluster alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FiringCluster {
    /// What the alert is about: a neighbourhood cluster, a district or the city. Only
    /// significant zones of the same kind (and district) continue it.
    pub kind: ZoneKind,
    /// Member community positions, centre first.
    pub members: Vec<u32>,
    /// Index into the rule's windows of the window it fired (or was last updated) on.
    pub window_index: usize,
    /// The alert.
    pub alert: AlertLifecycle,
    /// First evaluation of the current run back near the baseline.
    pub near_baseline_since_millis: Option<i64>,
}

/// The zones of each scan rule, built from the registry at the rule's first evaluation (never
/// snapshotted: they depend only on the rule and the seeds).
#[derive(Debug, Default)]
pub struct ScanDerived {
    zones_by_rule: BTreeMap<String, ScanZones>,
}

impl RuleKind for ScanRule {
    const NAME: &'static str = RULE_KIND_SCAN;
    const LEARNS_BASELINE: bool = true;
    type Spec = ScanSpec;
    type State = ScanState;
    type Derived = ScanDerived;

    fn spec_name(spec: &ScanSpec) -> &str {
        &spec.name
    }

    fn from_spec(spec: ScanSpec, validation: &mut RuleValidation<'_>) -> ScanRule {
        validation.alert_budget(spec.alert_budget_per_day);
        let event_types = validation.event_types(&spec.event_types);
        let mut windows_millis: Vec<i64> = Vec::new();
        if spec.windows.is_empty() {
            validation.problem("windows is empty (list window lengths such as [\"6h\", \"24h\"])");
        }
        if spec.windows.len() > MAX_SCAN_WINDOWS {
            validation.problem(format!("at most {MAX_SCAN_WINDOWS} windows"));
        }
        for window in &spec.windows {
            let millis = validation.whole_hours(**window, "windows", MAX_SCAN_WINDOW_HOURS);
            if windows_millis.contains(&millis) {
                validation.problem("windows lists a length twice");
            }
            windows_millis.push(millis);
        }
        windows_millis.sort_unstable();
        let interval_millis = validation.whole_hours(spec.interval, "interval", 24);
        let mut scopes: Vec<AlertScope> = Vec::new();
        for name in &spec.scopes {
            let Some(scope) = SCANNED_SCOPES
                .into_iter()
                .find(|scope| scope.as_str() == name)
            else {
                validation.problem(format!(
                    "scopes may list \"cluster\", \"district\" and \"city\", not {name:?}"
                ));
                continue;
            };
            if scopes.contains(&scope) {
                validation.problem(format!("scopes lists {name:?} twice"));
            }
            scopes.push(scope);
        }
        if spec.scopes.is_empty() {
            validation.problem("scopes is empty");
        }
        scopes.sort_unstable();
        scopes.dedup();
        let max_communities = match spec.max_communities {
            count @ 1..=MAX_SCAN_COMMUNITIES => count as usize,
            other => {
                validation.problem(format!(
                    "max_communities must be between 1 and {MAX_SCAN_COMMUNITIES}, got {other}"
                ));
                1
            }
        };
        let radius_km = spec.max_radius_km;
        if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= 100.0) {
            validation.problem(format!(
                "max_radius_km must be above 0 and at most 100, got {radius_km}"
            ));
        }
        let replications = match spec.replications {
            count @ 9..=99_999 => count as usize,
            other => {
                validation.problem(format!(
                    "replications must be between 9 and 99999, got {other}"
                ));
                9
            }
        };
        let alpha = spec.alpha;
        if !(alpha.is_finite() && alpha > 0.0 && alpha < 1.0) {
            validation.problem(format!(
                "alpha must be strictly between 0 and 1, got {alpha}"
            ));
        } else if allowed_exceedances(alpha, replications).is_none() {
            validation.problem(format!(
                "alpha {alpha} needs at least {} replications (a Monte Carlo p-value is at least 1 / (replications + 1))",
                (1.0 / alpha).ceil() as u64 - 1
            ));
        }
        let min_count = validation.count(spec.min_count, "min_count");
        let resolve_p_value = spec.resolve_p_value;
        if !(resolve_p_value.is_finite() && resolve_p_value > 0.0 && resolve_p_value < 1.0) {
            validation.problem(format!(
                "resolve_p_value must be strictly between 0 and 1, got {resolve_p_value}"
            ));
        }
        let resolve_hold_millis = if spec.resolve_hold.is_zero() {
            0
        } else {
            validation.whole_hours(spec.resolve_hold, "resolve_hold", 168)
        };
        let severity = validation.severity(spec.severity, &event_types);
        ScanRule {
            name: spec.name,
            event_types,
            windows_millis,
            interval_millis,
            scopes,
            max_communities,
            max_radius_meters: radius_km * 1000.0,
            alpha,
            replications,
            min_count,
            resolve_p_value,
            resolve_hold_millis,
            severity,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> &[EventType] {
        &self.event_types
    }

    fn whole_city_history_millis(&self) -> Option<i64> {
        Some(self.longest_window_millis())
    }

    /// Counts the event in its community's hour.
    fn on_matching_event(
        &self,
        state: &mut ScanState,
        _derived: &mut ScanDerived,
        event: &MatchingEvent<'_>,
        _out: &mut Vec<Alert>,
    ) -> EventOutcome {
        let Some(community) = event.unit_key(AlertScope::Community) else {
            return EventOutcome::default();
        };
        let accepted_event = event.accepted_event;
        let Some(rule_state) = state_of_rule(&mut state.rules, &self.name) else {
            return EventOutcome::default();
        };
        let hour_start = pane_start(accepted_event.occurred_at_millis, HOUR_MILLIS);
        count_matching_event(
            rule_state
                .hour_counts
                .entry((community, accepted_event.event_type as i32))
                .or_default(),
            hour_start,
            rule_state.recent_events.entry(community).or_default(),
            None,
            accepted_event,
        );
        // Every firing alert the community is part of (its cluster, its district, the city)
        // carries the event's id.
        for cluster in &mut rule_state.clusters {
            if let Some(firing) = cluster
                .alert
                .firing
                .as_mut()
                .filter(|_| cluster.members.contains(&community))
            {
                push_capped_event_id(&mut firing.event_ids, &accepted_event.event.event_id);
            }
        }
        EventOutcome::default()
    }

    /// The first interval boundary a rule's state has not been evaluated at (at once for new
    /// state, or state of a rule no longer in the set, which resolves). A matching event may
    /// start a rule's state, so events bring it forward.
    fn next_due_millis(
        state: &ScanState,
        _derived: &ScanDerived,
        rules: &RuleSet,
        _partial_input: bool,
    ) -> i64 {
        state
            .rules
            .iter()
            .map(|(rule_name, rule_state)| {
                rules
                    .rule_of_kind::<ScanRule>(rule_name)
                    .map_or(i64::MIN, |rule| {
                        first_watermark_past(
                            rule_state.last_evaluated_aligned_millis,
                            rule.interval_millis,
                        )
                    })
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Evaluates every scan rule at its interval boundaries; state of rules no longer in the
    /// rule set resolves and is forgotten.
    fn on_watermark(
        state: &mut ScanState,
        derived: &mut ScanDerived,
        watermark: &WatermarkContext<'_>,
        out: &mut Vec<Alert>,
    ) {
        let ScanState {
            rules: rule_states,
            expectations,
        } = state;
        rule_states.retain(|rule_name, rule_state| {
            let Some(rule) = watermark.rules.rule_of_kind::<ScanRule>(rule_name) else {
                for cluster in &mut rule_state.clusters {
                    cluster
                        .alert
                        .resolve_no_earlier_than_last_update(watermark.watermark_millis, out);
                }
                return false;
            };
            let Some(boundary_millis) = next_pane_boundary(
                &mut rule_state.last_evaluated_aligned_millis,
                watermark.watermark_millis,
                rule.interval_millis,
            ) else {
                return true;
            };
            forget_before(
                rule_state,
                boundary_millis.saturating_sub(rule.longest_window_millis()),
            );
            if evaluated_with_input(AlertScope::Cluster, watermark.partial_input) {
                let zones = derived
                    .zones_by_rule
                    .entry(rule_name.clone())
                    .or_insert_with(|| zones_of(rule, watermark.baseline.registry));
                evaluate_rule(
                    rule,
                    rule_state,
                    zones,
                    &watermark.baseline,
                    expectations,
                    boundary_millis,
                    out,
                );
            }
            !rule_state.hour_counts.is_empty() || !rule_state.clusters.is_empty()
        });
    }

    fn remove_rule(state: &mut ScanState, rule_name: &str, firing: &mut Vec<AlertOccurrence>) {
        let Some(rule_state) = state.rules.remove(rule_name) else {
            return;
        };
        firing.extend(
            rule_state
                .clusters
                .into_iter()
                .filter_map(|cluster| cluster.alert.firing),
        );
    }

    fn check_state_bounds(
        state: &ScanState,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        const PART: &str = "scan rules";
        for rule_state in state.rules.values() {
            for (community, event_type) in rule_state.hour_counts.keys() {
                shape.check_community(PART, *community)?;
                shape.check_event_type(PART, *event_type)?;
            }
            for community in rule_state.recent_events.keys() {
                shape.check_community(PART, *community)?;
            }
            for cluster in &rule_state.clusters {
                for member in &cluster.members {
                    shape.check_community(PART, *member)?;
                }
            }
        }
        Ok(())
    }

    fn collect_firing<'state>(state: &'state ScanState, firing: &mut Vec<&'state AlertOccurrence>) {
        firing.extend(
            state
                .rules
                .values()
                .flat_map(|rule_state| rule_state.clusters.iter())
                .filter_map(|cluster| cluster.alert.firing.as_ref()),
        );
    }
}

/// The zones of `rule` on the registry's community centroids.
fn zones_of(rule: &ScanRule, registry: &GridRegistry) -> ScanZones {
    let centroids: Vec<(f64, f64)> = registry
        .communities()
        .iter()
        .map(|community| community.centroid)
        .collect();
    let mut zones = if rule.scopes.contains(&AlertScope::Cluster) {
        ScanZones::from_centroids(&centroids, rule.max_communities, rule.max_radius_meters)
    } else {
        ScanZones::default()
    };
    if rule.scopes.contains(&AlertScope::District) {
        for position in 0..registry.districts().len() {
            let members: Vec<u32> = registry
                .communities_of_district(position)
                .iter()
                .map(|community| community.0)
                .collect();
            zones.push_zone(members, ZoneKind::District(position as u32));
        }
    }
    if rule.scopes.contains(&AlertScope::City) {
        zones.push_zone(
            (0..registry.communities().len() as u32).collect(),
            ZoneKind::City,
        );
    }
    zones
}

/// Drops the hourly counts and recent events before `oldest_kept_millis`.
fn forget_before(rule_state: &mut ScanRuleState, oldest_kept_millis: i64) {
    rule_state.hour_counts.retain(|_, counts| {
        drop_expired_buckets(counts, oldest_kept_millis);
        !counts.is_empty()
    });
    rule_state.recent_events.retain(|_, recent_events| {
        drop_expired_events(recent_events, oldest_kept_millis);
        !recent_events.is_empty()
    });
}

/// The map of one evaluation: every community's count and expectation per window, and the
/// counts per type (for the alert's dominant type).
struct EvaluationMap {
    counts: ScanCounts,
    /// Events per (community, window, type position).
    by_type: Vec<u64>,
    windows: usize,
    types: usize,
    /// Weeks of learned history behind the expectations (the fewest over the types).
    learned_weeks: u32,
}

impl EvaluationMap {
    fn build(
        rule: &ScanRule,
        rule_state: &ScanRuleState,
        baseline: &BaselineView<'_>,
        expectations: &mut ExpectationCache,
        boundary_millis: i64,
    ) -> EvaluationMap {
        let communities = baseline.registry.communities().len();
        let windows = rule.windows_millis.len();
        let types = rule.event_types.len();
        let longest_hours = (rule.longest_window_millis() / HOUR_MILLIS) as usize;
        let first_hour = epoch_hour(boundary_millis.saturating_sub(rule.longest_window_millis()));
        let mut expected = vec![0.0f64; communities * windows];
        let mut learned_weeks = u32::MAX;
        for event_type in &rule.event_types {
            let level = baseline.community_level_expectations(
                expectations,
                *event_type,
                first_hour,
                longest_hours,
            );
            learned_weeks = learned_weeks.min(level.learned_weeks);
            for community in 0..communities {
                let row_end = (community + 1) * longest_hours;
                for (window, window_millis) in rule.windows_millis.iter().enumerate() {
                    let window_hours = (*window_millis / HOUR_MILLIS) as usize;
                    let recent = level
                        .hourly
                        .get(row_end.saturating_sub(window_hours)..row_end)
                        .unwrap_or_default();
                    if let Some(slot) = expected.get_mut(community * windows + window) {
                        *slot += recent.iter().sum::<f64>();
                    }
                }
            }
        }
        let mut by_type = vec![0u64; communities * windows * types];
        for ((community, type_number), counts) in &rule_state.hour_counts {
            let Some(type_position) = rule
                .event_types
                .iter()
                .position(|event_type| *event_type as i32 == *type_number)
            else {
                continue;
            };
            let community = *community as usize;
            if community >= communities {
                continue;
            }
            for (window, window_millis) in rule.windows_millis.iter().enumerate() {
                let window_start = boundary_millis.saturating_sub(*window_millis);
                let count: u64 = counts
                    .range(window_start..boundary_millis)
                    .map(|(_, count)| u64::from(*count))
                    .sum();
                if let Some(slot) =
                    by_type.get_mut((community * windows + window) * types + type_position)
                {
                    *slot += count;
                }
            }
        }
        let mut counts = ScanCounts::new(communities, windows);
        for community in 0..communities {
            for window in 0..windows {
                let index = community * windows + window;
                let observed = by_type
                    .get(index * types..(index + 1) * types)
                    .unwrap_or_default()
                    .iter()
                    .sum();
                let expected_here = expected.get(index).copied().unwrap_or(0.0);
                counts.set(community, window, observed, expected_here);
            }
        }
        EvaluationMap {
            counts,
            by_type,
            windows,
            types,
            learned_weeks: if learned_weeks == u32::MAX {
                0
            } else {
                learned_weeks
            },
        }
    }

    /// Events and expectation of `members` over window `window`.
    fn of_members(&self, members: &[u32], window: usize) -> (u64, f64) {
        let (observed, expected) = self.counts.totals_of(members, window);
        (observed, expected.max(MIN_CYLINDER_EXPECTED))
    }

    /// Position of the rule type with most events of `members` over `window` (ties: the
    /// lower enum number).
    fn dominant_type(&self, members: &[u32], window: usize) -> usize {
        let mut totals = vec![0u64; self.types];
        for member in members {
            let index = *member as usize * self.windows + window;
            for (type_position, total) in totals.iter_mut().enumerate() {
                *total += self
                    .by_type
                    .get(index * self.types + type_position)
                    .copied()
                    .unwrap_or(0);
            }
        }
        // The first of the largest totals: `max_by_key` keeps the last, so compare reversed
        // positions.
        totals
            .iter()
            .enumerate()
            .max_by_key(|(type_position, total)| (**total, std::cmp::Reverse(*type_position)))
            .map_or(0, |(type_position, _)| type_position)
    }
}

/// The seed of an evaluation's Monte Carlo draws: the rule and the boundary, so that replaying
/// the same stream (after a restart, on another replica) draws the same maps.
fn evaluation_seed(rule_name: &str, boundary_millis: i64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(rule_name.as_bytes()) ^ (boundary_millis as u64)
}

fn evaluate_rule(
    rule: &ScanRule,
    rule_state: &mut ScanRuleState,
    zones: &ScanZones,
    baseline: &BaselineView<'_>,
    expectations: &mut ExpectationCache,
    boundary_millis: i64,
    out: &mut Vec<Alert>,
) {
    if rule_state.hour_counts.is_empty() && rule_state.clusters.is_empty() {
        return;
    }
    let map = EvaluationMap::build(rule, rule_state, baseline, expectations, boundary_millis);
    let scan_map = ScanMap::new(zones, &map.counts);
    let cylinders = scan_map.scored_cylinders(u64::from(rule.min_count));
    let mut significant: Vec<(Cylinder, f64)> = Vec::new();
    let mut critical_score = f64::INFINITY;
    if let (Some(best), Some(allowed)) = (
        cylinders.first(),
        allowed_exceedances(rule.alpha, rule.replications),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(evaluation_seed(&rule.name, boundary_millis));
        let null = scan_map.null_maxima(
            u64::from(rule.min_count),
            rule.replications,
            best.score,
            allowed,
            &mut rng,
        );
        if null.is_complete() {
            critical_score = critical_score_of(&null, allowed);
            for cylinder in non_overlapping(zones, &cylinders, MAX_CLUSTERS_PER_EVALUATION) {
                let Some(p_value) = null.p_value(cylinder.score) else {
                    continue;
                };
                if p_value <= rule.alpha {
                    significant.push((cylinder, p_value));
                }
            }
        }
    }

    let mut touched = vec![false; rule_state.clusters.len()];
    for (cylinder, p_value) in &significant {
        let Some(members) = zones.zones().get(cylinder.zone) else {
            continue;
        };
        let kind = zones.kind(cylinder.zone);
        let overlapping = rule_state.clusters.iter().position(|cluster| {
            cluster.kind == kind
                && cluster
                    .members
                    .iter()
                    .any(|member| members.contains(member))
        });
        match overlapping {
            Some(position) => {
                let (Some(was_touched), Some(cluster)) = (
                    touched.get_mut(position),
                    rule_state.clusters.get_mut(position),
                ) else {
                    continue;
                };
                if *was_touched {
                    continue;
                }
                *was_touched = true;
                cluster.near_baseline_since_millis = None;
                let new_members: Vec<u32> = members
                    .iter()
                    .copied()
                    .filter(|member| !cluster.members.contains(member))
                    .collect();
                if new_members.is_empty() || kind != ZoneKind::Neighbourhood {
                    continue;
                }
                cluster.members.extend(new_members);
                cluster.window_index = cylinder.window;
                let Some(firing) = cluster.alert.firing.as_mut() else {
                    continue;
                };
                let Some(figures) = ClusterFigures::of(
                    rule,
                    &map,
                    baseline,
                    &rule_state.recent_events,
                    &cluster.members,
                    cylinder,
                    *p_value,
                    critical_score,
                    boundary_millis,
                ) else {
                    continue;
                };
                figures.apply_to(firing);
                firing.updated_at_millis = boundary_millis.max(firing.updated_at_millis);
                out.push(firing.firing_alert());
            }
            None => {
                let mut cluster = FiringCluster {
                    kind,
                    members: members.clone(),
                    window_index: cylinder.window,
                    alert: AlertLifecycle::default(),
                    near_baseline_since_millis: None,
                };
                let Some(occurrence) = new_occurrence(
                    rule,
                    &map,
                    baseline,
                    &rule_state.recent_events,
                    kind,
                    &cluster.members,
                    cylinder,
                    *p_value,
                    critical_score,
                    boundary_millis,
                ) else {
                    continue;
                };
                cluster.alert.fire(occurrence, out);
                rule_state.clusters.push(cluster);
                touched.push(true);
            }
        }
    }

    for (cluster, was_touched) in rule_state.clusters.iter_mut().zip(&touched) {
        if *was_touched {
            continue;
        }
        let (observed, expected) = map.of_members(&cluster.members, 0);
        if poisson_upper_tail(expected, observed) <= rule.resolve_p_value {
            cluster.near_baseline_since_millis = None;
            continue;
        }
        let since = *cluster
            .near_baseline_since_millis
            .get_or_insert(boundary_millis);
        if boundary_millis.saturating_sub(since) >= rule.resolve_hold_millis {
            cluster
                .alert
                .resolve_no_earlier_than_last_update(boundary_millis, out);
        }
    }
    rule_state
        .clusters
        .retain(|cluster| cluster.alert.is_firing());
}

/// The score a cylinder must exceed to be significant at `alpha`: the (allowed + 1)-th largest
/// replicate maximum.
fn critical_score_of(null: &NullMaxima, allowed: usize) -> f64 {
    null.largest(allowed + 1).unwrap_or(f64::INFINITY)
}

/// The figures an alert shows for a cluster cylinder.
struct ClusterFigures {
    community_ids: Vec<String>,
    observed: u64,
    expected: f64,
    threshold: u64,
    p_value: f64,
    window_millis: i64,
    event_type: i32,
    baseline_weeks: u32,
    event_ids: Vec<String>,
}

impl ClusterFigures {
    #[allow(clippy::too_many_arguments)]
    fn of(
        rule: &ScanRule,
        map: &EvaluationMap,
        baseline: &BaselineView<'_>,
        recent_events: &BTreeMap<u32, Vec<RecentEvent>>,
        members: &[u32],
        cylinder: &Cylinder,
        p_value: f64,
        critical_score: f64,
        boundary_millis: i64,
    ) -> Option<ClusterFigures> {
        let registry = baseline.registry;
        let community_ids: Vec<String> = members
            .iter()
            .map(|member| {
                registry
                    .communities()
                    .get(*member as usize)
                    .map(|community| community.id.clone())
            })
            .collect::<Option<Vec<String>>>()?;
        let window_millis = *rule.windows_millis.get(cylinder.window)?;
        let (observed, expected) = map.of_members(members, cylinder.window);
        let event_type = *rule
            .event_types
            .get(map.dominant_type(members, cylinder.window))?;
        let window_start = boundary_millis.saturating_sub(window_millis);
        Some(ClusterFigures {
            community_ids,
            observed,
            expected,
            threshold: critical_count(expected, critical_score, u64::from(rule.min_count))
                .unwrap_or(observed),
            p_value,
            window_millis,
            event_type: event_type as i32,
            baseline_weeks: map.learned_weeks,
            event_ids: cluster_event_ids(recent_events, members, window_start, boundary_millis),
        })
    }

    fn apply_to(self, occurrence: &mut AlertOccurrence) {
        occurrence.cluster_community_ids = self.community_ids;
        occurrence.observed = self.observed as f64;
        occurrence.expected = self.expected;
        occurrence.threshold = self.threshold as f64;
        occurrence.p_value = self.p_value;
        occurrence.window_millis = self.window_millis;
        occurrence.event_type = self.event_type;
        occurrence.baseline_weeks = self.baseline_weeks;
        occurrence.event_ids = self.event_ids;
    }
}

/// The smallest count (at least `min_count`) whose score over `expected` exceeds
/// `critical_score`, or `None` when no count up to a generous bound does.
fn critical_count(expected: f64, critical_score: f64, min_count: u64) -> Option<u64> {
    if !critical_score.is_finite() {
        return None;
    }
    let start = (expected.floor() as u64).max(min_count).max(1);
    let bound = start.saturating_add(10_000);
    (start..bound)
        .find(|count| poisson_log_likelihood_ratio(*count as f64, expected) > critical_score)
}

/// The ids of the members' most recent events in `[from, until)`, oldest first, capped.
fn cluster_event_ids(
    recent_events: &BTreeMap<u32, Vec<RecentEvent>>,
    members: &[u32],
    from_millis: i64,
    until_millis: i64,
) -> Vec<String> {
    let mut events: Vec<&RecentEvent> = members
        .iter()
        .filter_map(|member| recent_events.get(member))
        .flatten()
        .filter(|recent| (from_millis..until_millis).contains(&recent.occurred_at_millis))
        .collect();
    events.sort_by(|left, right| {
        left.occurred_at_millis
            .cmp(&right.occurred_at_millis)
            .then(left.event_id.cmp(&right.event_id))
    });
    let excess = events.len().saturating_sub(MAX_ALERT_EVENT_IDS);
    events
        .iter()
        .skip(excess)
        .map(|recent| recent.event_id.clone())
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn new_occurrence(
    rule: &ScanRule,
    map: &EvaluationMap,
    baseline: &BaselineView<'_>,
    recent_events: &BTreeMap<u32, Vec<RecentEvent>>,
    kind: ZoneKind,
    members: &[u32],
    cylinder: &Cylinder,
    p_value: f64,
    critical_score: f64,
    boundary_millis: i64,
) -> Option<AlertOccurrence> {
    let registry = baseline.registry;
    let centre = registry.communities().get(*members.first()? as usize)?;
    // A cluster names its centre (and lists its members); a district only its district; the
    // city nothing.
    let (scope, community_id, district_id, location) = match kind {
        ZoneKind::Neighbourhood => (
            AlertScope::Cluster,
            centre.id.clone(),
            centre.district_code.clone(),
            centre.id.clone(),
        ),
        ZoneKind::District(position) => {
            let district = registry.districts().get(position as usize)?;
            (
                AlertScope::District,
                String::new(),
                district.code.clone(),
                district.code.clone(),
            )
        }
        ZoneKind::City => (
            AlertScope::City,
            String::new(),
            String::new(),
            AlertScope::City.as_str().to_string(),
        ),
    };
    let alert_fingerprint = fingerprint(&rule.name, &location, scope.as_str());
    let figures = ClusterFigures::of(
        rule,
        map,
        baseline,
        recent_events,
        members,
        cylinder,
        p_value,
        critical_score,
        boundary_millis,
    )?;
    let mut occurrence = AlertOccurrence {
        alert_id: alert_id(&alert_fingerprint, boundary_millis),
        fingerprint: alert_fingerprint,
        rule: rule.name.clone(),
        rule_kind: ScanRule::NAME.to_string(),
        grid_id: String::new(),
        community_id,
        district_id,
        event_type: 0,
        severity: u32::from(rule.severity),
        starts_at_millis: boundary_millis,
        updated_at_millis: boundary_millis,
        observed: 0.0,
        threshold: 0.0,
        expected: 0.0,
        p_value: 0.0,
        event_ids: Vec::new(),
        device_id: String::new(),
        scope,
        window_millis: 0,
        baseline_weeks: 0,
        cluster_community_ids: Vec::new(),
    };
    figures.apply_to(&mut occurrence);
    if kind != ZoneKind::Neighbourhood {
        occurrence.cluster_community_ids.clear();
    }
    Some(occurrence)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::grid::{CellIndex, CommunityIndex};
    use crate::proto::AlertStatus;
    use crate::rules::simulation::{
        continue_engine, embedded_rules_where, median_community_and_neighbours, run_engine,
        run_rules, seeded_stream, sort_by_time, wave_stream, SimulatedEvent,
    };
    use crate::rules::{Baseline, RuleEngine, RuleEngineState, RuleSet};

    /// Distinct zones of `fraud_wave_cluster` on the embedded registry (README "Rules and
    /// alerts").
    const ZONES_OF_THE_DEFAULT_RULE: usize = 704;
    const FRAUD_TYPES: [EventType; 2] = [EventType::FraudWarning, EventType::FraudReported];
    /// Monday 2026-03-02 00:00 UTC.
    const START: i64 = 1_772_409_600_000;

    fn registry_communities() -> usize {
        GridRegistry::embedded().communities().len()
    }

    fn cells_of(registry: &GridRegistry, communities: &[CommunityIndex]) -> Vec<CellIndex> {
        communities
            .iter()
            .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
            .collect()
    }

    /// FIRING occurrences (first emission of each alert id).
    fn occurrences(alerts: &[Alert], rule: &str) -> Vec<Alert> {
        let mut seen = BTreeSet::new();
        alerts
            .iter()
            .filter(|alert| alert.rule == rule && alert.status == AlertStatus::Firing as i32)
            .filter(|alert| seen.insert(alert.alert_id.clone()))
            .cloned()
            .collect()
    }

    /// `alpha` of the shipped `fraud_wave_cluster` (seeds/rules.toml).
    const SHIPPED_ALPHA: f64 = 0.005;

    fn cluster_rules() -> RuleSet {
        embedded_rules_where(&|name, _| {
            matches!(
                name,
                "fraud_wave_cluster" | "fraud_wave_spike" | "fraud_wave_cusum"
            )
        })
        .expect("the fraud rules are in the embedded rules")
    }

    /// Two normal days, then a ×5 wave for three days in three adjacent communities, then two
    /// normal days. At ×5 the scan finds such a wave in only part of the draws (README "Wave
    /// detection power"); this draw is one where it does, and the tests below prove what the
    /// alert then is, not how often it comes.
    fn wave_over_three_communities(registry: &GridRegistry) -> (Vec<SimulatedEvent>, i64, i64) {
        let baseline = Baseline::embedded();
        let onset = START + 48 * HOUR_MILLIS;
        let end = onset + 72 * HOUR_MILLIS;
        let mut stream = seeded_stream(registry, &baseline, &FRAUD_TYPES, START, 121, 21);
        stream.extend(seeded_stream(
            registry,
            &baseline,
            &FRAUD_TYPES,
            START + 121 * HOUR_MILLIS,
            47,
            23,
        ));
        stream.extend(wave_stream(
            registry,
            &baseline,
            &cells_of(registry, &median_community_and_neighbours(registry, 3)),
            &FRAUD_TYPES,
            4.0,
            onset,
            72,
            22,
        ));
        sort_by_time(&mut stream);
        (stream, onset, end)
    }

    #[test]
    fn a_wave_over_three_adjacent_communities_is_one_cluster_alert_where_no_community_rule_fires() {
        let registry = GridRegistry::embedded();
        let affected: Vec<String> = median_community_and_neighbours(&registry, 3)
            .iter()
            .map(|community| registry.communities()[community.0 as usize].id.clone())
            .collect();
        let (stream, onset, end) = wave_over_three_communities(&registry);
        let alerts = run_rules(
            &registry,
            cluster_rules(),
            &stream,
            START,
            end + 48 * HOUR_MILLIS,
        );

        let clusters = occurrences(&alerts, "fraud_wave_cluster");
        assert_eq!(clusters.len(), 1, "one wave, one alert: {clusters:#?}");
        let cluster = &clusters[0];
        assert_eq!(cluster.scope, "cluster");
        assert_eq!(cluster.rule_kind, RULE_KIND_SCAN);
        for id in &affected {
            assert!(
                cluster.cluster_community_ids.contains(id),
                "member {id} missing from {cluster:#?}"
            );
        }
        assert_eq!(cluster.cluster_community_ids[0], cluster.community_id);
        let starts = cluster.starts_at.as_ref().map_or(0, |at| at.seconds * 1000);
        assert!((onset..=end).contains(&starts), "fired within the wave");
        assert!(cluster.observed > cluster.expected && cluster.expected > 0.0);
        assert!(cluster.threshold >= 4.0 && cluster.threshold <= cluster.observed);
        assert!(cluster.p_value > 0.0 && cluster.p_value <= SHIPPED_ALPHA);
        assert!(matches!(cluster.window_seconds, 21_600 | 86_400 | 259_200));
        assert!(!cluster.event_ids.is_empty());
        // It resolves within a day of the wave's end (a night of ordinary counts, not the
        // three days its 72 h window would hold the wave's events).
        let resolved: Vec<&Alert> = alerts
            .iter()
            .filter(|alert| {
                alert.alert_id == cluster.alert_id && alert.status == AlertStatus::Resolved as i32
            })
            .collect();
        assert_eq!(resolved.len(), 1, "{resolved:#?}");
        let ends = resolved[0]
            .ends_at
            .as_ref()
            .map_or(0, |at| at.seconds * 1000);
        assert!(
            (end..=end + 24 * HOUR_MILLIS).contains(&ends),
            "resolved {} h after the wave's end",
            (ends - end) / HOUR_MILLIS
        );
        eprintln!(
            "cluster fired {} h into the wave, resolved {} h after its end",
            (starts - onset) / HOUR_MILLIS,
            (ends - end) / HOUR_MILLIS
        );
        // No single community crossed its own threshold: the per-community rules saw nothing
        // in the affected communities.
        for rule in ["fraud_wave_spike", "fraud_wave_cusum"] {
            assert!(
                occurrences(&alerts, rule)
                    .iter()
                    .all(|alert| !affected.contains(&alert.community_id)),
                "{rule} fired in an affected community"
            );
        }
    }

    #[test]
    fn a_city_wide_wave_is_one_city_alert_and_a_district_wave_one_district_alert() {
        let registry = GridRegistry::embedded();
        let baseline = Baseline::embedded();
        let rules = embedded_rules_where(&|name, _| name == "fraud_wave_cluster").unwrap();
        let onset = START + 48 * HOUR_MILLIS;
        let end = onset + 24 * HOUR_MILLIS;
        let normal = seeded_stream(&registry, &baseline, &FRAUD_TYPES, START, 72, 31);
        let run_with_wave = |cells: &[CellIndex], multiple: f64| {
            let mut stream = normal.clone();
            stream.extend(wave_stream(
                &registry,
                &baseline,
                cells,
                &FRAUD_TYPES,
                multiple - 1.0,
                onset,
                24,
                32,
            ));
            sort_by_time(&mut stream);
            occurrences(
                &run_rules(&registry, rules.clone(), &stream, START, end),
                "fraud_wave_cluster",
            )
        };
        // ×2 everywhere: about 50 extra fraud events a day over 162 communities, too thin for
        // any neighbourhood, plain for the city.
        let all_cells: Vec<CellIndex> = (0..registry.cells().len() as u32).map(CellIndex).collect();
        let city = run_with_wave(&all_cells, 2.0);
        let city_alerts: Vec<&Alert> = city.iter().filter(|alert| alert.scope == "city").collect();
        assert_eq!(city_alerts.len(), 1, "{city:#?}");
        let alert = city_alerts[0];
        assert_eq!(
            (
                alert.grid_id.as_str(),
                alert.community_id.as_str(),
                alert.district_id.as_str()
            ),
            ("", "", "")
        );
        assert!(alert.cluster_community_ids.is_empty());
        assert!(alert.observed > alert.expected && alert.p_value <= SHIPPED_ALPHA);

        // ×5 in one district (28 communities).
        let district_position = 0;
        let district_cells: Vec<CellIndex> = registry
            .communities_of_district(district_position)
            .iter()
            .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
            .collect();
        let district = run_with_wave(&district_cells, 5.0);
        let district_alerts: Vec<&Alert> = district
            .iter()
            .filter(|alert| alert.scope == "district")
            .collect();
        assert_eq!(district_alerts.len(), 1, "{district:#?}");
        assert_eq!(
            district_alerts[0].district_id,
            registry.districts()[district_position].code
        );
        assert_eq!(district_alerts[0].community_id, "");
        assert!(
            district.iter().all(|alert| alert.scope != "city"),
            "one district is not the city: {district:#?}"
        );
    }

    #[test]
    fn a_partitions_engine_raises_no_cluster_alert() {
        let registry = GridRegistry::embedded();
        let (stream, _, end) = wave_over_three_communities(&registry);
        let mut engine = RuleEngine::with_baseline(cluster_rules(), Baseline::embedded());
        engine.set_partial_input(true);
        let alerts = run_engine(&registry, engine, &stream, START, end + HOUR_MILLIS);
        assert_eq!(occurrences(&alerts, "fraud_wave_cluster"), Vec::new());
    }

    #[test]
    fn a_snapshot_mid_wave_restores_into_the_same_cluster_alerts() {
        let registry = GridRegistry::embedded();
        let (stream, onset, end) = wave_over_three_communities(&registry);
        let rules = cluster_rules();
        // After the cluster fired (62 h into the wave), while it is firing.
        let cut = onset + 65 * HOUR_MILLIS + 17 * 60_000;
        let mut uninterrupted_engine =
            RuleEngine::with_baseline(rules.clone(), Baseline::embedded());
        let uninterrupted = {
            let mut watermark = START;
            let mut alerts = Vec::new();
            uninterrupted_engine.on_watermark(START, &registry, &mut alerts);
            alerts.extend(continue_engine(
                &registry,
                &mut uninterrupted_engine,
                &stream,
                0,
                &mut watermark,
                end + HOUR_MILLIS,
            ));
            alerts
        };

        let before_cut = stream.partition_point(|(occurred_at, _, _)| *occurred_at < cut);
        let mut first = RuleEngine::with_baseline(rules.clone(), Baseline::embedded());
        let mut alerts = Vec::new();
        let mut watermark = START;
        first.on_watermark(START, &registry, &mut alerts);
        alerts.extend(continue_engine(
            &registry,
            &mut first,
            &stream[..before_cut],
            0,
            &mut watermark,
            cut,
        ));
        let bytes = postcard::to_allocvec(first.state()).expect("state serializes");
        let restored_state: RuleEngineState = postcard::from_bytes(&bytes).expect("state restores");
        let mut restored = RuleEngine::with_baseline(rules, Baseline::embedded());
        restored.restore_state(restored_state);
        alerts.extend(continue_engine(
            &registry,
            &mut restored,
            &stream[before_cut..],
            before_cut,
            &mut watermark,
            end + HOUR_MILLIS,
        ));
        let fired_before_the_cut = occurrences(&uninterrupted, "fraud_wave_cluster")
            .iter()
            .any(|alert| {
                alert
                    .starts_at
                    .as_ref()
                    .is_some_and(|at| at.seconds * 1000 < cut)
            });
        assert!(fired_before_the_cut, "the snapshot holds a firing cluster");
        assert_eq!(alerts, uninterrupted);
        assert_eq!(
            restored.active_alerts(),
            uninterrupted_engine.active_alerts()
        );
    }

    proptest::proptest! {
        /// Issue 14 item 1: a window is never judged against itself. Events at or after the
        /// window's first hour (the window's own, in any community) leave every community's
        /// expectation over it unchanged; history before it moves them.
        #[test]
        fn the_expectation_of_a_window_does_not_change_with_its_own_events(
            history in proptest::collection::vec((0_u32..1911, 0_i64..(3 * 168)), 0..200),
            own in proptest::collection::vec((0_u32..1911, 0_i64..72), 1..100),
        ) {
            let registry = GridRegistry::embedded();
            let seeds = Baseline::embedded();
            let settings = cluster_rules().baseline_settings();
            let first_hour = epoch_hour(START) + 3 * 168;
            let mut state = crate::rules::BaselineState::default();
            state.set_learned_types(&[EventType::FraudWarning as i32].into_iter().collect());
            state.on_watermark(START, settings);
            for (cell, hour) in &history {
                state.on_event(CellIndex(*cell), EventType::FraudWarning, START + hour * HOUR_MILLIS);
            }
            let expectations_of = |state: &crate::rules::BaselineState| {
                let view = BaselineView { seeds: &seeds, state, settings, registry: &registry };
                view.community_level_expectations(
                    &mut ExpectationCache::default(),
                    EventType::FraudWarning,
                    first_hour,
                    72,
                )
            };
            let mut closed = state.clone();
            closed.on_watermark((first_hour + 72) * HOUR_MILLIS, settings);
            let before = expectations_of(&closed);
            let mut with_own = state;
            for (cell, offset) in &own {
                with_own.on_event(
                    CellIndex(*cell),
                    EventType::FraudWarning,
                    (first_hour + offset) * HOUR_MILLIS,
                );
            }
            with_own.on_watermark((first_hour + 72) * HOUR_MILLIS, settings);
            proptest::prop_assert_eq!(&expectations_of(&with_own), &before);
            proptest::prop_assert_eq!(before.learned_weeks, 3);
        }
    }

    #[test]
    fn learned_levels_follow_the_history_and_start_at_the_seeds() {
        let registry = GridRegistry::embedded();
        let seeds = Baseline::embedded();
        let settings = cluster_rules().baseline_settings();
        let first_hour = epoch_hour(START) + 3 * 168;
        let community = 0_usize;
        let expected_of = |state: &crate::rules::BaselineState| {
            let view = BaselineView {
                seeds: &seeds,
                state,
                settings,
                registry: &registry,
            };
            let level = view.community_level_expectations(
                &mut ExpectationCache::default(),
                EventType::FraudWarning,
                first_hour,
                24,
            );
            level.hourly[community * 24..(community + 1) * 24]
                .iter()
                .sum::<f64>()
        };
        let view_seeded = |state: &crate::rules::BaselineState| {
            let view = BaselineView {
                seeds: &seeds,
                state,
                settings,
                registry: &registry,
            };
            view.expected_count(
                None,
                AlertScope::Community,
                community as u32,
                EventType::FraudWarning,
                first_hour * HOUR_MILLIS,
                (first_hour + 24) * HOUR_MILLIS,
            )
        };
        let empty = crate::rules::BaselineState::default();
        assert!((expected_of(&empty) - view_seeded(&empty)).abs() < 1e-12);
        // Three quiet weeks lower the level; a busy history raises it.
        let mut quiet = crate::rules::BaselineState::default();
        quiet.set_learned_types(&[EventType::FraudWarning as i32].into_iter().collect());
        quiet.on_watermark(START, settings);
        let mut busy = quiet.clone();
        let cell = registry.communities()[community].cells[0];
        for hour in (0..3 * 168).step_by(6) {
            busy.on_event(cell, EventType::FraudWarning, START + hour * HOUR_MILLIS);
        }
        quiet.on_watermark(first_hour * HOUR_MILLIS, settings);
        busy.on_watermark(first_hour * HOUR_MILLIS, settings);
        let seeded = view_seeded(&empty);
        assert!(
            expected_of(&quiet) < seeded,
            "quiet history lowers the level"
        );
        assert!(expected_of(&quiet) > 0.0, "the prior keeps it above zero");
        assert!(expected_of(&busy) > seeded, "busy history raises it");
    }

    #[test]
    fn every_problem_of_a_scan_table_is_reported_at_once() {
        let text = r#"
[[rule]]
name = "bad_scan"
kind = "scan"
event_types = ["FRAUD_WARNING"]
windows = ["90m", "24h", "24h", "30d"]
interval = "15m"
max_communities = 0
max_radius_km = -1.0
alpha = 0.0001
replications = 999
resolve_hold = "30m"
"#;
        let error = RuleSet::from_toml_str(text, 60_000)
            .expect_err("invalid")
            .to_string();
        for expected in [
            "windows must be whole hours between 1h and 168h, got 1h 30m",
            "windows lists a length twice",
            "windows must be whole hours between 1h and 168h, got 30days",
            "interval must be whole hours between 1h and 24h, got 15m",
            "max_communities must be between 1 and 20, got 0",
            "max_radius_km must be above 0 and at most 100, got -1",
            "alpha 0.0001 needs at least 9999 replications",
            "resolve_hold must be whole hours",
        ] {
            assert!(error.contains(expected), "{expected:?} not in:\n{error}");
        }
    }

    #[test]
    fn cluster_is_not_a_scope_a_counting_rule_accepts() {
        let text = r#"
[[rule]]
name = "cluster_spike"
kind = "spike"
event_types = ["FRAUD_WARNING"]
window = "1h"
scope = "cluster"
"#;
        let error = RuleSet::from_toml_str(text, 60_000).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("scope \"cluster\" is found by kind = \"scan\""),
            "{error}"
        );
    }

    #[test]
    fn the_embedded_scan_rule_has_the_documented_defaults() {
        let rules = cluster_rules();
        let rule = rules
            .rule_of_kind::<ScanRule>("fraud_wave_cluster")
            .expect("scan rule");
        assert_eq!(
            rule.windows_millis,
            vec![6 * HOUR_MILLIS, 24 * HOUR_MILLIS, 72 * HOUR_MILLIS]
        );
        assert_eq!(rule.interval_millis, HOUR_MILLIS);
        assert_eq!(rule.replications, 999);
        // alpha 0.005 over 999 maps: significant when at most 4 null maps score higher.
        assert_eq!(rule.alpha, SHIPPED_ALPHA);
        assert_eq!(allowed_exceedances(rule.alpha, rule.replications), Some(4));
        let zones = zones_of(rule, &GridRegistry::embedded());
        let sizes: Vec<usize> = zones.zones().iter().map(Vec::len).collect();
        eprintln!(
            "{} zones, {} of 5 communities",
            sizes.len(),
            sizes.iter().filter(|size| **size == 5).count()
        );
        assert_eq!(sizes.len(), ZONES_OF_THE_DEFAULT_RULE);
        // 698 neighbourhoods of one to five communities, 5 districts, the city.
        assert_eq!(sizes.iter().filter(|size| **size <= 5).count(), 698);
        assert_eq!(sizes.last(), Some(&registry_communities()));
    }
}
