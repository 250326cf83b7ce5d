//! The false-alarm budget (issue 14 item 5): every non-life-safety rule of
//! `seeds/rules.toml` states `alert_budget_per_day`, the alerts a day it may raise city-wide
//! when the city behaves exactly like its seeded baseline; this test holds each rule to it
//! over four simulated normal weeks of all 162 communities.
//!
//! # Design (why it runs in seconds in a debug build)
//!
//! The rules are driven directly (a [`RuleEngine`] with the embedded rules, as the pipeline
//! drives it), not through decode, windows and sinks, and only the event types some budgeted
//! rule matches are drawn: the other types cannot change these rules' alerts (each kind only
//! sees its own types, and the learned baseline only learns the types of spike and CUSUM
//! rules). For each (cell, type, epoch hour) the count is drawn from Poisson(seeded hourly
//! rate) (`Baseline::seeded_hourly_rate`, the rates of `seeds/baseline_rates.csv`, which equal
//! the simulator's) and the events are placed uniformly within the hour: exactly a
//! non-homogeneous Poisson process with the seeded piecewise-constant rate. That is about
//! 8,000 events a day city-wide instead of the full stream's 150,000. The watermark visits
//! every pane boundary, as a busy stream's would.
//!
//! The data-gap rules are not simulated here: silence depends on every event type of a cell
//! (the whole stream), and a stream of four weeks of 1,911 cells is too slow for a debug test.
//! Their budget rests on `alpha` (one false silence per 1/alpha chances) and on
//! `a_simulated_normal_week_raises_at_most_the_documented_false_alarms` (0 gaps in a week of
//! the 10 most populous communities with every type).

use std::collections::BTreeMap;

use super::baseline::{epoch_hour, local_hour_of_day, HOUR_MILLIS};
use super::simulation::{run_rules, seeded_stream};
use super::tests::{MINUTE, T0};
use super::*;
use crate::grid::CellIndex;
use crate::proto::{AlertStatus, EventType};

/// Weeks simulated (the issue asks for at least four).
const WEEKS: i64 = 4;
/// Default budget of a statistical rule (spike, cusum): one false alarm a week.
const DEFAULT_STATISTICAL_BUDGET_PER_DAY: f64 = 1.0 / 7.0;
/// Default budget of a threshold rule: five a day.
const DEFAULT_THRESHOLD_BUDGET_PER_DAY: f64 = 5.0;

/// Budget and kind of every rule of the embedded rules file that states one.
fn stated_budgets() -> BTreeMap<String, (String, f64)> {
    let document: toml::Table = toml::from_str(EMBEDDED_RULES_TOML).expect("valid toml");
    let rules = document
        .get("rule")
        .and_then(toml::Value::as_array)
        .expect("rules");
    let mut budgets = BTreeMap::new();
    for rule in rules {
        let name = rule
            .get("name")
            .and_then(toml::Value::as_str)
            .expect("name");
        let kind = rule
            .get("kind")
            .and_then(toml::Value::as_str)
            .expect("kind");
        if kind == "immediate" {
            continue;
        }
        let budget = rule
            .get("alert_budget_per_day")
            .and_then(|value| {
                value
                    .as_float()
                    .or_else(|| value.as_integer().map(|integer| integer as f64))
            })
            .unwrap_or_else(|| panic!("rule {name} states no alert_budget_per_day"));
        budgets.insert(name.to_string(), (kind.to_string(), budget));
    }
    budgets
}

/// FIRING occurrences (not their updates) per rule.
fn occurrences_by_rule(alerts: &[Alert]) -> BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for alert in alerts {
        let firing = AlertStatus::try_from(alert.status) == Ok(AlertStatus::Firing);
        if firing && seen.insert(alert.alert_id.clone()) {
            *fired.entry(alert.rule.clone()).or_default() += 1;
        }
    }
    fired
}

/// The embedded rules file with only the rules `keep(name, kind)` accepts.
fn embedded_rules_where(keep: &dyn Fn(&str, &str) -> bool) -> RuleSet {
    super::simulation::embedded_rules_where(keep).expect("valid rules")
}

/// Runs the embedded rules (without the life-safety and data-gap rules) over a seeded normal
/// stream of all 162 communities; returns FIRING occurrences per rule.
fn normal_weeks_alerts(weeks: i64, seed: u64) -> BTreeMap<String, usize> {
    let registry = GridRegistry::embedded();
    let baseline = Baseline::embedded();
    let rules = embedded_rules_where(&|_, kind| kind != "immediate" && kind != "data_gap");
    let mut event_types: Vec<EventType> = rules
        .rules()
        .iter()
        .flat_map(|rule| rule.event_types().to_vec())
        .collect();
    event_types.sort_unstable();
    event_types.dedup();
    let start = epoch_hour(T0) * HOUR_MILLIS;
    let hours = weeks * 7 * 24;
    let stream = seeded_stream(&registry, &baseline, &event_types, start, hours, seed);
    let alerts = run_rules(
        &registry,
        rules,
        &stream,
        start,
        start + hours * HOUR_MILLIS,
    );
    occurrences_by_rule(&alerts)
}

#[test]
fn every_non_life_safety_rule_states_a_budget_within_the_defaults() {
    let budgets = stated_budgets();
    assert!(budgets.contains_key("ebike_in_elevator_repeat"));
    for (name, (kind, budget)) in &budgets {
        let cap = if kind == "threshold" {
            DEFAULT_THRESHOLD_BUDGET_PER_DAY
        } else {
            DEFAULT_STATISTICAL_BUDGET_PER_DAY
        };
        assert!(
            *budget <= cap + 1e-12,
            "{name} ({kind}) states {budget} alerts a day, above the default {cap}"
        );
    }
}

#[test]
fn four_normal_weeks_at_the_seeded_rates_keep_every_rule_within_its_budget() {
    let budgets = stated_budgets();
    let fired = normal_weeks_alerts(WEEKS, 14);

    let days = (WEEKS * 7) as f64;
    let mut over_budget = Vec::new();
    for (name, (kind, budget)) in &budgets {
        if kind == "data_gap" {
            continue;
        }
        let count = fired.get(name).copied().unwrap_or(0);
        let per_day = count as f64 / days;
        eprintln!("{name}: {count} alerts in {days} days = {per_day:.3}/day (budget {budget})");
        if per_day > *budget {
            over_budget.push(format!("{name}: {per_day:.3}/day > {budget}"));
        }
    }
    assert!(over_budget.is_empty(), "over budget: {over_budget:#?}");
}

#[test]
fn door_forced_spike_detects_three_forced_doors_in_one_cell_within_the_hour() {
    // What the rule can see at the seeded rates: a cell expects about 0.004 forced doors in a
    // night hour (0.1 a day, night profile), so three within its 1 h window have p ≈ 1e-8,
    // far below the Benjamini–Hochberg cutoff over 1,911 cells × 2 types (0.01 / 3,822 ≈
    // 2.6e-6 for one discovery); two are below min_count; three spread over three hours are
    // never three in one window. (Equally three DEVICE_TAMPER.)
    let registry = GridRegistry::embedded();
    let rules = embedded_rules_where(&|name, _| name == "door_forced_spike");
    // 02:00 local time on T0's day.
    let night = epoch_hour(T0) * HOUR_MILLIS
        - local_hour_of_day(epoch_hour(T0)) as i64 * HOUR_MILLIS
        + 26 * HOUR_MILLIS;
    let cell = CellIndex(7);
    let fired = |minutes: &[i64], event_type: EventType| {
        let stream: Vec<(i64, CellIndex, EventType)> = minutes
            .iter()
            .map(|minute| (night + minute * MINUTE, cell, event_type))
            .collect();
        let alerts = run_rules(
            &registry,
            rules.clone(),
            &stream,
            night - HOUR_MILLIS,
            night + 5 * HOUR_MILLIS,
        );
        occurrences_by_rule(&alerts)
            .get("door_forced_spike")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(fired(&[1, 10, 20], EventType::DoorForced), 1);
    assert_eq!(fired(&[1, 10, 20], EventType::DeviceTamper), 1);
    assert_eq!(
        fired(&[1, 20], EventType::DoorForced),
        0,
        "two are below min_count"
    );
    assert_eq!(
        fired(&[1, 80, 160], EventType::DoorForced),
        0,
        "three in three hours are never three in one window"
    );
}
