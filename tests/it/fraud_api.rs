//! The fraud target through the running service: start `run` in-process with the simulator
//! (backfill, and fraud waves so that fraud events occur at any hour), then check
//! `GET /api/v1/fraud` and the fraud metrics.

use std::time::Duration;

use crate::support::{get_text, wait_for_body, InProcessService};
use gridwatch::config::{Config, SimulatorPacing};
use gridwatch::grid::GridRegistry;
use gridwatch::source::simulator::{Scenario, ScenarioDuration, ScenarioTime};

/// Polls `url` until `predicate` holds on its JSON body, or panics after `timeout`.
async fn wait_for_json(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    predicate: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let body = wait_for_body(client, url, timeout, |body| {
        serde_json::from_str::<serde_json::Value>(body).is_ok_and(|value| predicate(&value))
    })
    .await;
    serde_json::from_str(&body).expect("JSON body")
}

fn count(entry: &serde_json::Value, field: &str) -> u64 {
    entry[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {entry}"))
}

fn assert_sorted_by_distance_from_target(entries: &[serde_json::Value]) {
    let distances: Vec<Option<f64>> = entries
        .iter()
        .map(|entry| entry["distance_from_target"].as_f64())
        .collect();
    let first_undefined = distances
        .iter()
        .position(Option::is_none)
        .unwrap_or(distances.len());
    assert!(
        distances[first_undefined..].iter().all(Option::is_none),
        "undefined drops come last: {distances:?}"
    );
    let defined: Vec<f64> = distances[..first_undefined]
        .iter()
        .flatten()
        .copied()
        .collect();
    assert!(
        defined.windows(2).all(|pair| pair[0] >= pair[1]),
        "furthest behind first: {defined:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fraud_api_reports_city_districts_and_communities_consistently() {
    let registry = GridRegistry::embedded();
    let mut config = Config::default();
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(10 * 60);
    config.simulator.rate_multiplier = 20.0;
    config.simulator.scenarios = registry
        .communities()
        .iter()
        .take(5)
        .map(|community| Scenario::FraudWave {
            community_id: community.id.clone(),
            start: ScenarioTime::AfterStart(0),
            duration: ScenarioDuration(2 * 3_600_000),
            multiplier: 5_000.0,
        })
        .collect();
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    let base = service.base_url.clone();

    let report = wait_for_json(
        &client,
        &format!("{base}/api/v1/fraud"),
        Duration::from_secs(90),
        |report| {
            report["city"]["warnings"]
                .as_u64()
                .is_some_and(|warnings| warnings > 0)
        },
    )
    .await;
    assert_eq!(report["baseline_year"], 2023);
    assert_eq!(report["target_drop"], 0.6);
    assert_eq!(
        report["case_event_types"],
        serde_json::json!(["FRAUD_CASE_FILED"])
    );
    assert!(report["as_of"].as_str().unwrap().ends_with('Z'));
    let city = &report["city"];
    let districts = report["districts"].as_array().unwrap();
    let communities = report["communities"].as_array().unwrap();
    assert_eq!(city["scope"], "city");
    assert_eq!(districts.len(), 5);
    assert_eq!(communities.len(), 162);
    assert_eq!(count(city, "population"), 1_414_232);
    for field in [
        "cases_ytd",
        "population",
        "warnings",
        "dissuaded",
        "paired_dissuasions",
    ] {
        let district_sum: u64 = districts.iter().map(|entry| count(entry, field)).sum();
        let community_sum: u64 = communities.iter().map(|entry| count(entry, field)).sum();
        assert_eq!(
            count(city, field),
            district_sum,
            "{field}: city = sum of districts"
        );
        assert_eq!(
            count(city, field),
            community_sum,
            "{field}: city = sum of communities"
        );
    }
    let city_incidence = city["incidence_per_10k"].as_f64().unwrap();
    let expected_incidence = count(city, "cases_ytd") as f64 / 1_414_232.0 * 10_000.0;
    assert!((city_incidence - expected_incidence).abs() <= 1e-9 * expected_incidence.max(1.0));
    let city_baseline = city["baseline_cases_same_period"].as_f64().unwrap();
    let district_baseline: f64 = districts
        .iter()
        .map(|entry| entry["baseline_cases_same_period"].as_f64().unwrap())
        .sum();
    assert!((city_baseline - district_baseline).abs() < 1e-6);
    assert_eq!(count(city, "baseline_full_year_cases"), 1085);
    assert!(city["drop_ci_high"].as_f64().unwrap() <= 1.0);
    assert_sorted_by_distance_from_target(districts);
    assert_sorted_by_distance_from_target(communities);
    for entry in communities {
        assert_eq!(entry["scope"], "community");
        assert_eq!(entry["community_id"].as_str().unwrap().len(), 12);
    }

    let (status, metrics) = get_text(&client, &format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "gridwatch_fraud_cases_ytd",
        "gridwatch_fraud_incidence_per_10k",
        "gridwatch_fraud_baseline_incidence_per_10k",
        "gridwatch_fraud_drop_ratio",
        "gridwatch_fraud_drop_ci_low",
        "gridwatch_fraud_drop_ci_high",
        "gridwatch_fraud_projected_drop_ratio",
        "gridwatch_fraud_on_track",
        "gridwatch_fraud_target_drop_ratio",
        "gridwatch_fraud_warnings_total",
        "gridwatch_fraud_dissuaded_total",
        "gridwatch_fraud_warning_to_dissuasion_seconds",
        "gridwatch_incidents_total",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    assert!(metrics.contains("gridwatch_fraud_target_drop_ratio 0.6\n"));
    assert!(metrics.contains(
        "gridwatch_fraud_baseline_incidence_per_10k{community=\"\",district=\"\",scope=\"city\"}"
    ));
    let warnings_series = metrics
        .lines()
        .filter(|line| line.starts_with("gridwatch_fraud_warnings_total{"))
        .count();
    assert_eq!(warnings_series, 162, "one warnings series per community");
    assert!(metrics.contains("event_type=\"FRAUD_WARNING\""));

    service.stop().await;
}
