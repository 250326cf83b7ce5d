//! Rules hot reload through the running service: a valid change takes effect without losing
//! window state; an invalid file is rejected (logged, counted) and the old rules keep firing.

use std::path::Path;
use std::time::Duration;

use crate::support::{metric_value, InProcessService};
use gridwatch::config::Config;
use gridwatch::grid::GridRegistry;
use gridwatch::source::simulator::{Scenario, ScenarioTime};

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let (_, body) = crate::support::get_text(client, url).await;
    serde_json::from_str(&body).expect("json")
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    crate::support::get_text(client, url).await.1
}

/// Polls until `predicate` holds, or panics after `timeout` with `what`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut predicate: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !predicate().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of the 24 h view over the hottest cells: it only grows while the simulated stream is
/// younger than 24 h, so a drop would mean lost window state.
async fn day_view_total(client: &reqwest::Client, base: &str) -> u64 {
    let cells = get_json(client, &format!("{base}/api/v1/cells?top=100&view=24h")).await;
    cells["cells"]
        .as_array()
        .map(|cells| {
            cells
                .iter()
                .map(|cell| cell["events"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rules_change_applies_without_losing_state_and_invalid_file_keeps_old_rules() {
    let directory = tempfile::tempdir().unwrap();
    let rules_path = directory.path().join("rules.toml");
    let original_rules = std::fs::read_to_string("seeds/rules.toml").unwrap();
    std::fs::write(&rules_path, &original_rules).unwrap();
    let fire_grid = GridRegistry::embedded().cells()[7].grid_id.clone();

    let mut config = Config::default();
    config.rules.path = Some(rules_path.clone());
    config.simulator.backfill = Duration::from_secs(30 * 60);
    config.simulator.rate_multiplier = 5.0;
    // The fire starts 12 s after the service (the stream starts 30 min in the past), i.e.
    // after both reloads below.
    config.simulator.scenarios = vec![Scenario::Fire {
        grid_id: fire_grid.clone(),
        at: ScenarioTime::AfterStart((30 * 60 + 12) * 1000),
    }];
    let service = InProcessService::start(config).await;
    let base = service.base_url.clone();
    let client = reqwest::Client::new();

    wait_until(
        Duration::from_secs(30),
        "windows from the backlog",
        || async {
            let metrics = get_text(&client, &format!("{base}/metrics")).await;
            metric_value(&metrics, "gridwatch_windows_emitted_total", &[])
                .is_some_and(|value| value > 0.0)
        },
    )
    .await;
    let original_version = get_json(&client, &format!("{base}/api/v1/alerts")).await
        ["rules_version"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(
        Duration::from_secs(30),
        "the live view of the backlog",
        || async { day_view_total(&client, &base).await > 0 },
    )
    .await;
    let total_before = day_view_total(&client, &base).await;

    // A valid change: the intrusion threshold becomes 4.
    let changed_rules = original_rules.replacen(
        "event_types = [\"PERIMETER_INTRUSION\"]\nwindow = \"15m\"\nmin_count = 3",
        "event_types = [\"PERIMETER_INTRUSION\"]\nwindow = \"15m\"\nmin_count = 4",
        1,
    );
    assert_ne!(
        changed_rules, original_rules,
        "the edit must change the file"
    );
    write_atomically(&rules_path, &changed_rules);
    wait_until(Duration::from_secs(20), "the new rules version", || async {
        let version =
            get_json(&client, &format!("{base}/api/v1/alerts")).await["rules_version"].clone();
        version
            .as_str()
            .is_some_and(|version| version != original_version)
    })
    .await;
    let new_version = get_json(&client, &format!("{base}/api/v1/alerts")).await["rules_version"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics = get_text(&client, &format!("{base}/metrics")).await;
    assert_eq!(
        metric_value(
            &metrics,
            "gridwatch_rules_reloads_total",
            &["trigger=\"file_change\"", "result=\"applied\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "gridwatch_rules_version_info",
            &[&format!("version=\"{new_version}\"")]
        ),
        Some(1.0)
    );
    assert!(
        day_view_total(&client, &base).await >= total_before,
        "window state survives the reload"
    );

    // An invalid file: rejected, counted, the running version stays.
    write_atomically(
        &rules_path,
        "[[rule]]\nname = \"broken\"\nkind = \"threshold\"\nevent_types = [\"UFO\"]\n",
    );
    wait_until(
        Duration::from_secs(20),
        "the invalid file to be counted",
        || async {
            let metrics = get_text(&client, &format!("{base}/metrics")).await;
            metric_value(
                &metrics,
                "gridwatch_rules_reloads_total",
                &["trigger=\"file_change\"", "result=\"invalid\""],
            )
            .is_some_and(|value| value >= 1.0)
        },
    )
    .await;
    let version_now =
        get_json(&client, &format!("{base}/api/v1/alerts")).await["rules_version"].clone();
    assert_eq!(version_now, new_version.as_str());

    // The old (running) rules keep firing: the fire that starts now raises a life-safety alert.
    wait_until(
        Duration::from_secs(40),
        "the life-safety alert of the fire",
        || async {
            let alerts = get_json(&client, &format!("{base}/api/v1/alerts?grid={fire_grid}")).await;
            alerts["alerts"].as_array().is_some_and(|alerts| {
                alerts.iter().any(|alert| {
                    alert["rule"] == "life_safety" && alert["event_type"] == "FIRE_SMOKE"
                })
            })
        },
    )
    .await;

    service.stop().await;
}
