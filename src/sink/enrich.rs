//! Alert enrichment: the labels, annotations and links an [`Alert`] carries when it leaves
//! gridwatch for Alertmanager or a webhook. Pure functions of the alert, the registry and the
//! configured external URL, so they are tested without any network.
//!
//! - **Labels identify an alert** and are kept stable and low-cardinality (Alertmanager groups,
//!   inhibits and silences by them): `alertname`, `severity`, `district`, `community`, `grid`,
//!   `event_type`, `rule`, `team`. Empty values are left out (an empty label is no label).
//! - `team` names the desk that acts on the alert, so Alertmanager routes by it
//!   ([`team_label`]): `duty-desk` for life-safety event types (fire, gas, electrical, SOS,
//!   falls, an elder inactive: the types whose default severity is 1), `anti-fraud` for the
//!   fraud chain, `grid` (the community's grid staff) for the rest. Pipeline alerts from
//!   Prometheus carry `team: ops`; none of gridwatch's does.
//! - `alertname` is `Gridwatch` followed by the rule name in UpperCamelCase
//!   (`life_safety` → `GridwatchLifeSafety`), so gridwatch alerts are recognisable among other
//!   Alertmanager clients' alerts; the rule name itself is the `rule` label.
//! - `severity` maps the 1–4 scale (1 most severe, GB/T 28181 alarm priority) to
//!   Alertmanager's customary names: 1 → `critical`, 2 → `warning`, 3 and 4 (and anything
//!   else) → `info`.
//! - **Annotations describe it** and may change between state changes: `summary` (English),
//!   `summary_zh` (Chinese, with the district and community names and the Chinese type name),
//!   `description` (observed vs threshold, and the expected value when the rule has one),
//!   `event_ids`, `alert_id`, `fingerprint`, `device_id` (when known), `late` (`"true"` when
//!   the alarm came from an event whose window was already final: the alarm is real, its
//!   window count does not include it) and `operator_url`, the
//!   operator API's view of the cell: `{external_url}/api/v1/cells/{grid}` (also the
//!   `generatorURL`).
//!
//! [`should_deliver`] is the single place that decides whether an alert pages at all.

use std::collections::BTreeMap;

use crate::grid::GridRegistry;
use crate::proto::{Alert, AlertStatus, EventType};
use crate::rules::alert::is_city_wide;

/// Whether `alert` is delivered to Alertmanager and the webhook. Alerts that are tracked but
/// must not page (suppressed alerts) return `false`; the sinks count them as
/// `gridwatch_alert_deliveries_total{result="suppressed"}` instead of sending them.
///
/// Today every alert with a known status is delivered; once the `Alert` proto carries
/// `suppressed_by`, this becomes `alert.suppressed_by.is_empty()` (and the status check).
pub fn should_deliver(alert: &Alert) -> bool {
    let known_status =
        alert.status == AlertStatus::Firing as i32 || alert.status == AlertStatus::Resolved as i32;
    // A maintenance window marks FIRING changes only, so a resolution is always delivered.
    known_status && alert.suppressed_by.is_empty()
}

/// The value a statistical rule expected, when it has one (shown in the description).
fn expected_value(alert: &Alert) -> Option<f64> {
    (alert.expected > 0.0).then_some(alert.expected)
}

/// `Gridwatch` + the rule name in UpperCamelCase: `life_safety` → `GridwatchLifeSafety`.
/// Characters other than ASCII letters and digits separate words.
pub fn alert_name(rule: &str) -> String {
    let mut name = String::from("Gridwatch");
    for word in rule.split(|character: char| !character.is_ascii_alphanumeric()) {
        let mut characters = word.chars();
        if let Some(first) = characters.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(characters);
        }
    }
    name
}

/// Alertmanager severity name of a 1–4 severity: 1 `critical`, 2 `warning`, otherwise `info`.
pub fn severity_label(severity: u32) -> &'static str {
    match severity {
        1 => "critical",
        2 => "warning",
        _ => "info",
    }
}

/// The event type's proto name (`FIRE_SMOKE`), or `EVENT_TYPE_UNSPECIFIED` for unknown numbers.
fn event_type_of(alert: &Alert) -> EventType {
    EventType::try_from(alert.event_type).unwrap_or(EventType::Unspecified)
}

/// The operator API's view of one grid cell: `{external_url}/api/v1/cells/{grid_id}`.
///
/// A community-scope alert has no grid: its link is the community's firing alerts,
/// `{external_url}/api/v1/alerts?community={community_id}`; a district-scope alert's is the
/// district's, `…/api/v1/alerts?district={district_id}`; a city-wide alert's is every alert of
/// its rule, `…/api/v1/alerts?rule={rule}`.
pub fn operator_url(external_url: &str, alert: &Alert) -> String {
    let base = external_url.trim_end_matches('/');
    if alert.grid_id.is_empty() && alert.community_id.is_empty() && alert.district_id.is_empty() {
        return format!("{base}/api/v1/alerts?rule={}", alert.rule);
    }
    if alert.grid_id.is_empty() && alert.community_id.is_empty() {
        return format!("{base}/api/v1/alerts?district={}", alert.district_id);
    }
    if alert.grid_id.is_empty() {
        return format!("{base}/api/v1/alerts?community={}", alert.community_id);
    }
    format!("{base}/api/v1/cells/{}", alert.grid_id)
}

/// The identifying labels of an alert in Alertmanager (see the module docs).
pub fn alertmanager_labels(alert: &Alert, registry: &GridRegistry) -> BTreeMap<String, String> {
    let district = if alert.district_id.is_empty() {
        registry
            .community_by_id(&alert.community_id)
            .map(|community| registry.community(community).district_code.clone())
            .unwrap_or_default()
    } else {
        alert.district_id.clone()
    };
    let candidates = [
        ("alertname", alert_name(&alert.rule)),
        ("severity", severity_label(alert.severity).to_string()),
        ("district", district),
        ("community", alert.community_id.clone()),
        ("grid", alert.grid_id.clone()),
        ("event_type", event_type_of(alert).as_str_name().to_string()),
        ("rule", alert.rule.clone()),
        ("team", team_label(event_type_of(alert)).to_string()),
    ];
    candidates
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The `team` label of alerts about `event_type` (see the module docs): a property of the
/// event type, never of a rule's configurable severity, so a re-tuned rule cannot page
/// another desk.
pub fn team_label(event_type: EventType) -> &'static str {
    match event_type {
        EventType::FraudWarning
        | EventType::FraudDissuaded
        | EventType::FraudReported
        | EventType::FraudCaseFiled => "anti-fraud",
        other if crate::event::default_severity(other) == 1 => "duty-desk",
        _ => "grid",
    }
}

/// Formats a count-like value without a trailing `.0` (3 rather than 3.0).
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The descriptive annotations of an alert (see the module docs).
pub fn annotations(
    alert: &Alert,
    registry: &GridRegistry,
    external_url: &str,
) -> BTreeMap<String, String> {
    let event_type = event_type_of(alert);
    let community_index = registry.community_by_id(&alert.community_id);
    let community_name = community_index
        .map(|index| registry.community(index).name.clone())
        .unwrap_or_else(|| alert.community_id.clone());
    let district = registry.district(&alert.district_id);
    let district_name_en = district
        .map(|district| district.name_en.clone())
        .unwrap_or_else(|| alert.district_id.clone());
    let district_name_zh = district
        .map(|district| district.name_zh.clone())
        .unwrap_or_default();
    let resolved = alert.status == AlertStatus::Resolved as i32;
    let observed = format_value(alert.observed);
    let threshold = format_value(alert.threshold);
    let expected = expected_value(alert);

    // A district-scope alert names neither a grid nor a community; a cluster names its centre
    // community and its members; a community-scope alert names no grid.
    let city_scope = is_city_wide(alert);
    let district_scope = alert.grid_id.is_empty() && alert.community_id.is_empty();
    let members = &alert.cluster_community_ids;
    let member_names_zh: Vec<String> = members
        .iter()
        .map(|member| {
            registry
                .community_by_id(member)
                .map(|index| registry.community(index).name.clone())
                .unwrap_or_else(|| member.clone())
        })
        .collect();
    let place = if city_scope {
        "in the whole city".to_string()
    } else if district_scope {
        format!("in district {} ({})", alert.district_id, district_name_en)
    } else if !members.is_empty() {
        format!(
            "in a cluster of {} neighbouring communities around community {} ({}, {}): {}",
            members.len(),
            alert.community_id,
            community_name,
            district_name_en,
            members.join(", ")
        )
    } else if alert.grid_id.is_empty() {
        format!(
            "in community {} ({}, {})",
            alert.community_id, community_name, district_name_en
        )
    } else {
        format!(
            "in grid {} of community {} ({}, {})",
            alert.grid_id, alert.community_id, community_name, district_name_en
        )
    };
    let place_zh = if city_scope {
        "全市".to_string()
    } else if district_scope {
        format!("{district_name_zh} 全区")
    } else if !members.is_empty() {
        format!(
            "{}{}等{}个相邻社区聚集（{}）",
            district_name_zh,
            community_name,
            members.len(),
            member_names_zh.join("、")
        )
    } else if alert.grid_id.is_empty() {
        format!("{district_name_zh}{community_name} 全社区")
    } else {
        format!(
            "{}{} 网格{}",
            district_name_zh, community_name, alert.grid_id
        )
    };
    let summary = format!(
        "{}{} {}: {} events (threshold {})",
        if resolved { "Resolved: " } else { "" },
        event_type.as_str_name(),
        place,
        observed,
        threshold,
    );
    let summary_zh = format!(
        "{}{} {}：{}起（阈值{}）",
        if resolved { "【已恢复】" } else { "" },
        place_zh,
        crate::event::chinese_name(event_type),
        observed,
        threshold,
    );
    let mut description = format!(
        "Rule {} ({}) observed {} {} event(s) {} against a threshold of {}",
        alert.rule,
        alert.rule_kind,
        observed,
        event_type.as_str_name(),
        place,
        threshold,
    );
    if let Some(expected) = expected.filter(|expected| *expected > 0.0) {
        description.push_str(&format!(
            " (expected {} from {})",
            format_value(expected),
            baseline_provenance(alert.baseline_weeks)
        ));
    }
    if alert.window_seconds > 0 {
        description.push_str(&format!(
            " over {} per {}",
            humantime::format_duration(std::time::Duration::from_secs(u64::from(
                alert.window_seconds
            ))),
            if alert.scope.is_empty() {
                "cell"
            } else {
                alert.scope.as_str()
            }
        ));
    }
    if alert.p_value > 0.0 {
        description.push_str(&format!(", p = {:.2e}", alert.p_value));
    }
    if let Some(starts_at) = &alert.starts_at {
        description.push_str(&format!(
            "; firing since {}",
            crate::time::millis_to_rfc3339(crate::time::timestamp_to_millis(starts_at))
        ));
    }
    if let Some(ends_at) = alert.ends_at.as_ref().filter(|_| resolved) {
        description.push_str(&format!(
            "; resolved at {}",
            crate::time::millis_to_rfc3339(crate::time::timestamp_to_millis(ends_at))
        ));
    }
    description.push('.');

    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), summary);
    annotations.insert("summary_zh".to_string(), summary_zh);
    annotations.insert("description".to_string(), description);
    annotations.insert("event_ids".to_string(), alert.event_ids.join(","));
    annotations.insert("alert_id".to_string(), alert.alert_id.clone());
    annotations.insert("fingerprint".to_string(), alert.fingerprint.clone());
    if !alert.device_id.is_empty() {
        annotations.insert("device_id".to_string(), alert.device_id.clone());
    }
    if alert.late {
        annotations.insert("late".to_string(), "true".to_string());
    }
    // The numbers behind a statistical decision, one annotation each, so that a receiver
    // (and the operator reading it) sees why without parsing the description.
    annotations.insert("observed".to_string(), format_value(alert.observed));
    annotations.insert("threshold".to_string(), format_value(alert.threshold));
    if !alert.scope.is_empty() {
        annotations.insert("scope".to_string(), alert.scope.clone());
    }
    if !members.is_empty() {
        annotations.insert("cluster_communities".to_string(), members.join(","));
    }
    if alert.window_seconds > 0 {
        annotations.insert(
            "scale".to_string(),
            humantime::format_duration(std::time::Duration::from_secs(u64::from(
                alert.window_seconds,
            )))
            .to_string(),
        );
    }
    if let Some(expected) = expected.filter(|expected| *expected > 0.0) {
        annotations.insert("expected".to_string(), format_value(expected));
        annotations.insert(
            "baseline".to_string(),
            baseline_provenance(alert.baseline_weeks),
        );
    }
    if alert.p_value > 0.0 {
        annotations.insert("p_value".to_string(), format!("{:.3e}", alert.p_value));
    }
    annotations.insert(
        "operator_url".to_string(),
        operator_url(external_url, alert),
    );
    annotations
}

/// Where an expectation came from: the seeded rates, or so many weeks of learned history.
fn baseline_provenance(learned_weeks: u32) -> String {
    match learned_weeks {
        0 => "seeded rates".to_string(),
        1 => "1 learned week".to_string(),
        weeks => format!("{weeks} learned weeks"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis_to_timestamp;

    /// A firing life-safety alert in the first cell of the embedded registry.
    pub(crate) fn sample_alert(registry: &GridRegistry) -> Alert {
        let cell = registry.cell(crate::grid::CellIndex(0));
        let community = registry.community(cell.community);
        Alert {
            alert_id: "0123456789abcdef0123456789abcdef".to_string(),
            fingerprint: "0123456789abcdef".to_string(),
            rule: "life_safety".to_string(),
            rule_kind: "immediate".to_string(),
            status: AlertStatus::Firing as i32,
            grid_id: cell.grid_id.clone(),
            community_id: community.id.clone(),
            district_id: community.district_code.clone(),
            event_type: EventType::FireSmoke as i32,
            severity: 1,
            starts_at: Some(millis_to_timestamp(1_772_409_600_000)),
            ends_at: None,
            observed: 3.0,
            threshold: 1.0,
            event_ids: vec!["e1".to_string(), "e2".to_string()],
            device_id: "41061100001320000001".to_string(),
            updated_at: Some(millis_to_timestamp(1_772_409_660_000)),
            ..Alert::default()
        }
    }

    #[test]
    fn alert_name_is_gridwatch_and_the_rule_in_upper_camel_case() {
        assert_eq!(alert_name("life_safety"), "GridwatchLifeSafety");
        assert_eq!(
            alert_name("perimeter_intrusion_burst"),
            "GridwatchPerimeterIntrusionBurst"
        );
        assert_eq!(alert_name("fraud-spike 2"), "GridwatchFraudSpike2");
        assert_eq!(alert_name(""), "Gridwatch");
    }

    #[test]
    fn severity_one_is_critical_two_warning_and_the_rest_info() {
        assert_eq!(severity_label(1), "critical");
        assert_eq!(severity_label(2), "warning");
        assert_eq!(severity_label(3), "info");
        assert_eq!(severity_label(4), "info");
        assert_eq!(severity_label(0), "info");
    }

    #[test]
    fn labels_are_the_eight_identifying_ones() {
        let registry = GridRegistry::embedded();
        let alert = sample_alert(&registry);
        let labels = alertmanager_labels(&alert, &registry);
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "alertname",
                "community",
                "district",
                "event_type",
                "grid",
                "rule",
                "severity",
                "team"
            ]
        );
        assert_eq!(labels["team"], "duty-desk");
        assert_eq!(labels["alertname"], "GridwatchLifeSafety");
        assert_eq!(labels["severity"], "critical");
        assert_eq!(labels["event_type"], "FIRE_SMOKE");
        assert_eq!(labels["grid"], alert.grid_id);
        assert_eq!(labels["community"], alert.community_id);
        assert_eq!(labels["district"].len(), 6);
        assert_eq!(labels["rule"], "life_safety");
    }

    #[test]
    fn the_team_follows_the_event_type() {
        assert_eq!(team_label(EventType::GasLeak), "duty-desk");
        assert_eq!(team_label(EventType::ElderFall), "duty-desk");
        assert_eq!(team_label(EventType::FraudWarning), "anti-fraud");
        assert_eq!(team_label(EventType::FraudCaseFiled), "anti-fraud");
        assert_eq!(team_label(EventType::PerimeterIntrusion), "grid");
        assert_eq!(team_label(EventType::DeviceOffline), "grid");
        assert_eq!(team_label(EventType::Unspecified), "grid");
    }

    #[test]
    fn labels_do_not_change_between_state_changes_of_one_alert() {
        let registry = GridRegistry::embedded();
        let firing = sample_alert(&registry);
        let mut resolved = firing.clone();
        resolved.status = AlertStatus::Resolved as i32;
        resolved.ends_at = Some(millis_to_timestamp(1_772_409_900_000));
        resolved.observed = 5.0;
        resolved.event_ids.push("e3".to_string());
        assert_eq!(
            alertmanager_labels(&firing, &registry),
            alertmanager_labels(&resolved, &registry)
        );
    }

    #[test]
    fn missing_district_is_looked_up_and_empty_labels_are_left_out() {
        let registry = GridRegistry::embedded();
        let mut alert = sample_alert(&registry);
        let district = alert.district_id.clone();
        alert.district_id.clear();
        alert.grid_id.clear();
        let labels = alertmanager_labels(&alert, &registry);
        assert_eq!(labels["district"], district);
        assert!(!labels.contains_key("grid"));
    }

    #[test]
    fn annotations_carry_both_summaries_the_numbers_and_the_operator_link() {
        let registry = GridRegistry::embedded();
        let alert = sample_alert(&registry);
        let community_index = registry.community_by_id(&alert.community_id).unwrap();
        let community_name = registry.community(community_index).name.clone();
        let annotations = annotations(&alert, &registry, "https://gridwatch.example/");
        assert!(
            annotations["summary"].contains("FIRE_SMOKE"),
            "{annotations:?}"
        );
        assert!(annotations["summary"].contains(&alert.grid_id));
        assert!(annotations["summary_zh"].contains(&community_name));
        assert!(annotations["summary_zh"].contains("烟感报警"));
        assert!(annotations["description"].contains("observed 3 FIRE_SMOKE"));
        assert!(annotations["description"].contains("threshold of 1"));
        assert!(annotations["description"].contains("firing since 2026-03-02T00:00:00"));
        assert_eq!(annotations["event_ids"], "e1,e2");
        assert_eq!(
            annotations["operator_url"],
            format!("https://gridwatch.example/api/v1/cells/{}", alert.grid_id)
        );
    }

    #[test]
    fn statistical_alerts_carry_their_numbers_scale_scope_and_baseline_provenance() {
        let registry = GridRegistry::embedded();
        let alert = Alert {
            rule: "fraud_wave_spike".to_string(),
            rule_kind: "spike".to_string(),
            grid_id: String::new(),
            event_type: EventType::FraudReported as i32,
            observed: 7.0,
            threshold: 5.0,
            expected: 0.42,
            p_value: 2.5e-7,
            scope: "community".to_string(),
            window_seconds: 3600,
            baseline_weeks: 3,
            ..sample_alert(&registry)
        };
        let annotations = annotations(&alert, &registry, "https://gridwatch.example/");
        assert_eq!(annotations["observed"], "7");
        assert_eq!(annotations["expected"], "0.42");
        assert_eq!(annotations["scale"], "1h");
        assert_eq!(annotations["scope"], "community");
        assert_eq!(annotations["baseline"], "3 learned weeks");
        assert_eq!(annotations["p_value"], "2.500e-7");
        let description = &annotations["description"];
        assert!(
            description.contains(
                "(expected 0.42 from 3 learned weeks) over 1h per community, p = 2.50e-7"
            ),
            "{description}"
        );
        let seeded = Alert {
            baseline_weeks: 0,
            ..alert
        };
        assert_eq!(
            annotations_of(&seeded, &registry)["baseline"],
            "seeded rates"
        );
    }

    fn annotations_of(alert: &Alert, registry: &GridRegistry) -> BTreeMap<String, String> {
        annotations(alert, registry, "https://gridwatch.example/")
    }

    #[test]
    fn late_alarms_say_so_and_others_carry_no_late_annotation() {
        let registry = GridRegistry::embedded();
        let mut alert = sample_alert(&registry);
        assert!(!annotations(&alert, &registry, "http://127.0.0.1:9750").contains_key("late"));
        alert.late = true;
        assert_eq!(
            annotations(&alert, &registry, "http://127.0.0.1:9750")["late"],
            "true"
        );
    }

    #[test]
    fn resolved_annotations_say_so_in_both_languages() {
        let registry = GridRegistry::embedded();
        let mut alert = sample_alert(&registry);
        alert.status = AlertStatus::Resolved as i32;
        alert.ends_at = Some(millis_to_timestamp(1_772_409_900_000));
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        assert!(annotations["summary"].starts_with("Resolved: "));
        assert!(annotations["summary_zh"].starts_with("【已恢复】"));
        assert!(annotations["description"].contains("resolved at 2026-03-02T00:05:00"));
    }

    #[test]
    fn alerts_with_a_known_status_are_delivered() {
        let registry = GridRegistry::embedded();
        let mut alert = sample_alert(&registry);
        assert!(should_deliver(&alert));
        alert.status = AlertStatus::Resolved as i32;
        assert!(should_deliver(&alert));
        alert.status = AlertStatus::Unspecified as i32;
        assert!(!should_deliver(&alert));
    }
}

#[cfg(test)]
mod statistical_and_suppressed_alert_tests {
    use super::*;
    use crate::proto::EventType;

    fn community_spike_alert() -> Alert {
        let registry = GridRegistry::embedded();
        let community = &registry.communities()[0];
        Alert {
            alert_id: "a1".into(),
            fingerprint: "f1".into(),
            rule: "fraud_wave_spike".into(),
            rule_kind: "spike".into(),
            status: AlertStatus::Firing as i32,
            community_id: community.id.clone(),
            district_id: community.district_code.clone(),
            event_type: EventType::FraudWarning as i32,
            severity: 2,
            observed: 9.0,
            threshold: 3.0,
            expected: 0.75,
            p_value: 1.5e-7,
            ..Alert::default()
        }
    }

    #[test]
    fn maintenance_suppressed_firing_alert_is_not_delivered_but_its_resolution_is() {
        let mut alert = community_spike_alert();
        alert.suppressed_by = "planned-works".into();
        assert!(!should_deliver(&alert));
        alert.status = AlertStatus::Resolved as i32;
        alert.suppressed_by.clear();
        assert!(should_deliver(&alert));
    }

    #[test]
    fn community_alert_links_to_the_community_alerts_and_shows_the_expected_value() {
        let registry = GridRegistry::embedded();
        let alert = community_spike_alert();
        assert_eq!(
            operator_url("http://127.0.0.1:9750/", &alert),
            format!(
                "http://127.0.0.1:9750/api/v1/alerts?community={}",
                alert.community_id
            )
        );
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        assert!(
            annotations["description"].contains("0.75"),
            "{annotations:?}"
        );
        assert!(!alertmanager_labels(&alert, &registry).contains_key("grid"));
    }

    #[test]
    fn district_alert_names_its_district_and_links_to_the_district_alerts() {
        let registry = GridRegistry::embedded();
        let mut alert = community_spike_alert();
        alert.rule = "fraud_wave_district_spike_6h".into();
        alert.community_id.clear();
        let district = registry.district(&alert.district_id).expect("district");
        assert_eq!(
            operator_url("http://127.0.0.1:9750", &alert),
            format!(
                "http://127.0.0.1:9750/api/v1/alerts?district={}",
                alert.district_id
            )
        );
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        assert!(
            annotations["summary"].contains(&format!(
                "in district {} ({})",
                alert.district_id, district.name_en
            )),
            "{annotations:?}"
        );
        assert!(
            annotations["summary_zh"].contains(&format!("{} 全区", district.name_zh)),
            "{annotations:?}"
        );
    }

    #[test]
    fn cluster_alert_names_its_centre_and_every_member_in_both_languages() {
        let registry = GridRegistry::embedded();
        let members: Vec<&crate::grid::Community> = registry.communities()[..3].iter().collect();
        let mut alert = community_spike_alert();
        alert.rule = "fraud_wave_cluster".into();
        alert.rule_kind = "scan".into();
        alert.scope = "cluster".into();
        alert.community_id = members[0].id.clone();
        alert.district_id = members[0].district_code.clone();
        alert.cluster_community_ids = members.iter().map(|member| member.id.clone()).collect();
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        let ids: Vec<&str> = members.iter().map(|member| member.id.as_str()).collect();
        assert!(
            annotations["summary"].contains(&format!(
                "in a cluster of 3 neighbouring communities around community {}",
                members[0].id
            )),
            "{annotations:?}"
        );
        assert!(annotations["description"].contains(&ids.join(", ")));
        assert_eq!(annotations["cluster_communities"], ids.join(","));
        let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
        assert!(
            annotations["summary_zh"].contains(&format!(
                "{}等3个相邻社区聚集（{}）",
                members[0].name,
                names.join("、")
            )),
            "{annotations:?}"
        );
        assert_eq!(annotations["scope"], "cluster");
        // Its link is the centre community's alerts.
        assert!(annotations["operator_url"].ends_with(&format!("?community={}", members[0].id)));
    }

    #[test]
    fn community_alert_names_no_grid() {
        let registry = GridRegistry::embedded();
        let alert = community_spike_alert();
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        assert!(
            annotations["summary"].contains(&format!("in community {} (", alert.community_id)),
            "{annotations:?}"
        );
        assert!(
            !annotations["description"].contains("in grid"),
            "{annotations:?}"
        );
        assert!(
            annotations["summary_zh"].contains("全社区"),
            "{annotations:?}"
        );
    }

    #[test]
    fn city_alert_names_the_whole_city_and_links_to_its_rule() {
        let registry = GridRegistry::embedded();
        let mut alert = community_spike_alert();
        alert.rule = "fraud_wave_cluster".into();
        alert.rule_kind = "scan".into();
        alert.scope = "city".into();
        alert.community_id.clear();
        alert.district_id.clear();
        let annotations = annotations(&alert, &registry, "http://127.0.0.1:9750");
        assert!(
            annotations["summary"].contains("in the whole city"),
            "{annotations:?}"
        );
        assert!(
            annotations["summary_zh"].starts_with("全市"),
            "{annotations:?}"
        );
        assert_eq!(
            annotations["operator_url"],
            "http://127.0.0.1:9750/api/v1/alerts?rule=fraud_wave_cluster"
        );
        assert!(!alertmanager_labels(&alert, &registry).contains_key("district"));
    }
}
