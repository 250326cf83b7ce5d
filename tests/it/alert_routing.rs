//! Alert routing pages the right desk: `amtool config routes test` (Debian's
//! `prometheus-alertmanager`) on `deploy/alertmanager/alertmanager.yml` with the labels the
//! alerts really carry — every Prometheus pipeline rule's labels plus the scrape labels, and
//! gridwatch's own alerts as its Alertmanager sink labels them — and every pipeline rule has a
//! `runbook_url` whose section in `deploy/README.md` exists and says what the alert means,
//! what to check first and how to fix it.
//!
//! Under `CI=true` a missing amtool fails the tests; otherwise they print a skip notice.

use std::path::{Path, PathBuf};
use std::process::Command;

use gridwatch::grid::GridRegistry;
use gridwatch::proto::EventType;
use gridwatch::sink::enrich::alertmanager_labels;
use serde_norway::Value as Yaml;

fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every alerting rule of the pipeline rules file: (alertname, labels, annotations).
fn pipeline_rules() -> Vec<(String, Yaml, Yaml)> {
    let text = std::fs::read_to_string(repository_path(
        "deploy/prometheus/gridwatch-alerts.rules.yml",
    ))
    .unwrap();
    let rules: Yaml = serde_norway::from_str(&text).unwrap();
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            if let Some(name) = rule["alert"].as_str() {
                found.push((
                    name.to_string(),
                    rule["labels"].clone(),
                    rule["annotations"].clone(),
                ));
            }
        }
    }
    assert!(found.len() >= 10, "{} rules", found.len());
    found
}

/// The receiver `amtool` routes `labels` to (exactly one is expected).
fn routed_receiver(amtool: &Path, labels: &[(String, String)]) -> String {
    let output = Command::new(amtool)
        .args(["config", "routes", "test"])
        .arg(format!(
            "--config.file={}",
            repository_path("deploy/alertmanager/alertmanager.yml").display()
        ))
        .args(labels.iter().map(|(name, value)| format!("{name}={value}")))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A gridwatch alert of `event_type` from `rule` at `severity`, labelled by the sink.
fn gridwatch_labels(rule: &str, event_type: EventType, severity: u32) -> Vec<(String, String)> {
    let registry = GridRegistry::embedded();
    let mut alert = crate::support::firing_alert(&registry, 3, "fp", 1_772_409_600_000);
    alert.rule = rule.to_string();
    alert.event_type = event_type as i32;
    alert.severity = severity;
    alertmanager_labels(&alert, &registry).into_iter().collect()
}

#[test]
fn amtool_routes_every_class_of_alert_to_its_desk() {
    let Some(amtool) = crate::support::tools::tool_on_path(
        &["amtool"],
        ".ci/run installs the Debian package prometheus-alertmanager",
    ) else {
        return;
    };
    // Pipeline alerts, whatever their severity, go to operations — never the duty desk.
    for (name, labels, _) in pipeline_rules() {
        let mut routed = vec![
            ("alertname".to_string(), name.clone()),
            ("job".to_string(), "gridwatch".to_string()),
            ("instance".to_string(), "10.0.0.7:9750".to_string()),
        ];
        for (label, value) in labels.as_mapping().unwrap() {
            routed.push((
                label.as_str().unwrap().to_string(),
                value.as_str().unwrap().to_string(),
            ));
        }
        assert_eq!(routed_receiver(&amtool, &routed), "gridwatch-ops", "{name}");
    }
    let cases = [
        ("life_safety", EventType::FireSmoke, 1, "life-safety-duty"),
        ("life_safety", EventType::ElderFall, 1, "life-safety-duty"),
        (
            "fraud_wave_spike",
            EventType::FraudWarning,
            2,
            "anti-fraud-center",
        ),
        (
            "fraud_wave_cusum",
            EventType::FraudReported,
            2,
            "anti-fraud-center",
        ),
        (
            "perimeter_intrusion_burst",
            EventType::PerimeterIntrusion,
            2,
            "grid-operators",
        ),
        (
            "ebike_in_elevator_repeat",
            EventType::EbikeInElevator,
            3,
            "grid-operators",
        ),
        (
            "cell_data_gap",
            EventType::DeviceOffline,
            3,
            "grid-operators",
        ),
    ];
    for (rule, event_type, severity, receiver) in cases {
        let labels = gridwatch_labels(rule, event_type, severity);
        assert_eq!(
            routed_receiver(&amtool, &labels),
            receiver,
            "{rule} {event_type:?}: {labels:?}"
        );
    }
    // An alert of another client without a team still reaches someone.
    let foreign = [("alertname".to_string(), "NodeDown".to_string())];
    assert_eq!(routed_receiver(&amtool, &foreign), "grid-operators");
}

/// GitHub's anchor of a Markdown heading: lowercase, spaces to `-`, other punctuation dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|character| match character {
            ' ' => Some('-'),
            '-' | '_' => Some(character),
            other if other.is_alphanumeric() => Some(other),
            _ => None,
        })
        .collect()
}

#[test]
fn every_pipeline_rule_is_for_ops_and_links_a_runbook_section_that_exists() {
    let readme = std::fs::read_to_string(repository_path("deploy/README.md")).unwrap();
    // Each `### ` heading with its section's text (up to the next heading of any level).
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in readme.lines() {
        if line.starts_with('#') {
            if let Some((anchor, text)) = current.take() {
                sections.insert(anchor, text);
            }
            if let Some(heading) = line.strip_prefix("### ") {
                current = Some((anchor_of(heading), String::new()));
            }
            continue;
        }
        if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some((anchor, text)) = current {
        sections.insert(anchor, text);
    }
    for (name, labels, annotations) in pipeline_rules() {
        assert_eq!(labels["team"].as_str(), Some("ops"), "{name}");
        let url = annotations["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (document, anchor) = url.split_once('#').unwrap();
        assert!(document.ends_with("deploy/README.md"), "{name}: {url}");
        let section = sections
            .get(anchor)
            .unwrap_or_else(|| panic!("{name}: no section #{anchor} in deploy/README.md"));
        for part in ["What it means", "First checks", "Fix"] {
            assert!(
                section.contains(&format!("**{part}:**")),
                "{name}: the runbook section lacks **{part}:**:\n{section}"
            );
        }
    }
}
