//! Alert delivery against REAL Alertmanager processes (Debian `prometheus-alertmanager`,
//! installed by `.ci/run`), each started by the test with `deploy/alertmanager/alertmanager.yml`
//! on a free port, without clustering, and killed at the end.
//!
//! Under `CI=true` a missing binary fails the tests; otherwise they print
//! "skipping: alertmanager not installed" and pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gridwatch::config::{AlertingConfig, Config, SimulatorPacing};
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::metrics::Metrics;
use gridwatch::proto::{Alert, AlertStatus, EventType};
use gridwatch::sink::delivery::AlertDelivery;
use gridwatch::source::simulator::{Scenario, ScenarioTime};
use gridwatch::time::{millis_to_timestamp, rfc3339_to_millis, wall_clock_millis};
use serde_json::Value;

/// The Alertmanager binary on PATH, or `None` (a test failure under CI).
fn alertmanager_binary() -> Option<PathBuf> {
    crate::support::tools::tool_on_path(
        &["prometheus-alertmanager", "alertmanager"],
        ".ci/run installs the Debian package prometheus-alertmanager",
    )
}

/// A running Alertmanager, killed when dropped.
struct AlertmanagerProcess {
    /// The child process.
    child: Child,
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// Storage directory and log file, removed after the process.
    directory: tempfile::TempDir,
}

impl AlertmanagerProcess {
    /// Starts `binary` with the deploy configuration and waits until `/-/ready` answers 200.
    async fn start(binary: &Path) -> AlertmanagerProcess {
        let directory = tempfile::tempdir().unwrap();
        let config_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager/alertmanager.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(directory.path().join("alertmanager.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", directory.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let process = AlertmanagerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            directory,
        };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{}/-/ready", process.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return process;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alertmanager not ready after 20 s; log:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// Active alerts whose `grid` label is `grid_id`.
    async fn alerts_of_grid(&self, client: &reqwest::Client, grid_id: &str) -> Vec<Value> {
        let response = client
            .get(format!("{}/api/v2/alerts", self.url))
            .query(&[("filter", format!("grid=\"{grid_id}\""))])
            .send()
            .await
            .expect("GET /api/v2/alerts");
        assert!(response.status().is_success(), "{response:?}");
        response.json::<Vec<Value>>().await.expect("alerts JSON")
    }

    /// Polls until `predicate` holds on the grid's alerts, or panics after `timeout`.
    async fn wait_for_grid(
        &self,
        client: &reqwest::Client,
        grid_id: &str,
        timeout: Duration,
        what: &str,
        predicate: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let alerts = self.alerts_of_grid(client, grid_id).await;
            if predicate(&alerts) {
                return alerts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} in {} for grid {grid_id}; last: {alerts:?}\nlog:\n{}",
                self.url,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for AlertmanagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A firing life-safety alert in cell `cell_index` of the embedded registry, started a minute ago.
fn firing_alert(registry: &GridRegistry, cell_index: u32, fingerprint: &str) -> Alert {
    crate::support::firing_alert(
        registry,
        cell_index,
        fingerprint,
        wall_clock_millis() - 60_000,
    )
}

fn resolved(alert: &Alert) -> Alert {
    let ends_at = Some(millis_to_timestamp(wall_clock_millis() - 1_000));
    Alert {
        status: AlertStatus::Resolved as i32,
        ends_at,
        updated_at: ends_at,
        ..alert.clone()
    }
}

/// Alerting settings for tests: fast retries, a long resend interval (so a firing alert's
/// `endsAt` is minutes away and only an explicit resolve can end it).
fn alerting(urls: Vec<String>) -> AlertingConfig {
    AlertingConfig {
        alertmanager_urls: urls,
        resend_interval: Duration::from_secs(30),
        retry_initial_backoff: Duration::from_millis(50),
        retry_max_backoff: Duration::from_millis(200),
        retry_max_attempts: 3,
        timeout: Duration::from_secs(2),
        ..AlertingConfig::default()
    }
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

fn counter(metrics: &Metrics, sink: &str, result: &str) -> u64 {
    metrics
        .alert_deliveries
        .with_label_values(&[sink, result])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_a_firing_alert_with_its_labels_then_resolves_it() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = AlertmanagerProcess::start(&binary).await;
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(
        &alerting(vec![alertmanager.url.clone()]),
        registry.clone(),
        &metrics,
    )
    .unwrap()
    .expect("alertmanager configured");
    let firing = firing_alert(&registry, 0, "fp-direct");
    let client = reqwest::Client::new();

    delivery.offer(std::slice::from_ref(&firing));
    let shown = alertmanager
        .wait_for_grid(
            &client,
            &firing.grid_id,
            Duration::from_secs(15),
            "the firing alert",
            |alerts| alerts.len() == 1,
        )
        .await;
    let alert = &shown[0];
    assert_eq!(label(alert, "alertname"), "GridwatchLifeSafety");
    assert_eq!(label(alert, "severity"), "critical");
    assert_eq!(label(alert, "district"), firing.district_id);
    assert_eq!(label(alert, "community"), firing.community_id);
    assert_eq!(label(alert, "event_type"), "FIRE_SMOKE");
    assert_eq!(label(alert, "rule"), "life_safety");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert!(alert["annotations"]["summary_zh"]
        .as_str()
        .unwrap()
        .contains("烟感报警"));
    assert_eq!(
        alert["generatorURL"],
        format!("http://127.0.0.1:9750/api/v1/cells/{}", firing.grid_id)
    );
    let ends_at_millis = rfc3339_to_millis(alert["endsAt"].as_str().unwrap()).unwrap();
    let expected_ends_at = wall_clock_millis() + 4 * 30_000;
    assert!(
        (expected_ends_at - 15_000..=expected_ends_at + 1_000).contains(&ends_at_millis),
        "firing endsAt is now + 4 x resend interval: {alert}"
    );
    let receivers: Vec<&str> = alert["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|receiver| receiver["name"].as_str().unwrap())
        .collect();
    assert_eq!(receivers, ["life-safety-duty"], "critical routes to duty");

    delivery.offer(&[resolved(&firing)]);
    alertmanager
        .wait_for_grid(
            &client,
            &firing.grid_id,
            Duration::from_secs(15),
            "the alert to resolve",
            |alerts| alerts.is_empty(),
        )
        .await;
    delivery.shut_down(Duration::from_secs(5)).await;
    assert_eq!(counter(&metrics, "alertmanager", "sent"), 2);
    assert_eq!(counter(&metrics, "alertmanager", "failed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_two_communities_form_separate_groups() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = AlertmanagerProcess::start(&binary).await;
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(
        &alerting(vec![alertmanager.url.clone()]),
        registry.clone(),
        &metrics,
    )
    .unwrap()
    .unwrap();
    let first_community = registry.cell(CellIndex(0)).community;
    let other_cell = (1..registry.cells().len() as u32)
        .find(|index| registry.cell(CellIndex(*index)).community != first_community)
        .expect("a second community");
    let same_community_cell = (1..registry.cells().len() as u32)
        .find(|index| registry.cell(CellIndex(*index)).community == first_community)
        .expect("a second cell in the first community");
    let alerts = [
        firing_alert(&registry, 0, "fp-group-a1"),
        firing_alert(&registry, same_community_cell, "fp-group-a2"),
        firing_alert(&registry, other_cell, "fp-group-b"),
    ];
    delivery.offer(&alerts);

    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let groups = loop {
        let groups: Vec<Value> = client
            .get(format!("{}/api/v2/alerts/groups", alertmanager.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alert_count: usize = groups
            .iter()
            .map(|group| group["alerts"].as_array().map_or(0, Vec::len))
            .sum();
        if alert_count == 3 {
            break groups;
        }
        assert!(tokio::time::Instant::now() < deadline, "groups: {groups:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(groups.len(), 2, "one group per community: {groups:#?}");
    let mut communities = Vec::new();
    for group in &groups {
        let labels = group["labels"].as_object().unwrap();
        let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alertname", "community", "district"], "{group}");
        let community = labels["community"].as_str().unwrap().to_string();
        for alert in group["alerts"].as_array().unwrap() {
            assert_eq!(label(alert, "community"), community);
        }
        let size = group["alerts"].as_array().unwrap().len();
        communities.push((community, size));
    }
    communities.sort();
    let mut expected = vec![
        (alerts[0].community_id.clone(), 2),
        (alerts[2].community_id.clone(), 1),
    ];
    expected.sort();
    assert_eq!(communities, expected);
    delivery.shut_down(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_an_ha_pair_receives_every_alert_even_with_a_third_url_down() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let first = AlertmanagerProcess::start(&binary).await;
    let second = AlertmanagerProcess::start(&binary).await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(
        &alerting(vec![
            format!("http://127.0.0.1:{dead_port}"),
            first.url.clone(),
            second.url.clone(),
        ]),
        registry.clone(),
        &metrics,
    )
    .unwrap()
    .unwrap();
    let firing = firing_alert(&registry, 7, "fp-ha");
    delivery.offer(std::slice::from_ref(&firing));
    let client = reqwest::Client::new();
    for member in [&first, &second] {
        let shown = member
            .wait_for_grid(
                &client,
                &firing.grid_id,
                Duration::from_secs(10),
                "the alert on every HA member",
                |alerts| alerts.len() == 1,
            )
            .await;
        assert_eq!(label(&shown[0], "alertname"), "GridwatchLifeSafety");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counter(&metrics, "alertmanager", "failed") == 0
        || counter(&metrics, "alertmanager", "sent") < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "the dead URL fails");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counter(&metrics, "alertmanager", "sent"), 2);
    assert_eq!(counter(&metrics, "alertmanager", "failed"), 1);
    assert_eq!(
        counter(&metrics, "alertmanager", "retried"),
        2,
        "3 attempts = 2 retries"
    );

    delivery.offer(&[resolved(&firing)]);
    for member in [&first, &second] {
        member
            .wait_for_grid(
                &client,
                &firing.grid_id,
                Duration::from_secs(10),
                "the alert to resolve on every HA member",
                |alerts| alerts.is_empty(),
            )
            .await;
    }
    delivery.shut_down(Duration::from_secs(5)).await;
}

/// A cell of the embedded registry with exactly one smoke detector (so a simulated fire is
/// one device's alarms, 30–60 s apart).
fn cell_with_one_smoke_detector(registry: &GridRegistry) -> CellIndex {
    (0..registry.cells().len() as u32)
        .map(CellIndex)
        .find(|cell| {
            registry
                .devices_in_cell(*cell)
                .iter()
                .filter(|device| device.event_types.contains(&EventType::FireSmoke))
                .count()
                == 1
        })
        .expect("a cell with one smoke detector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_fire_scenario_reaches_alertmanager_and_resolves_after_the_cooldown() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = AlertmanagerProcess::start(&binary).await;
    let registry = GridRegistry::embedded();
    let cell = cell_with_one_smoke_detector(&registry);
    let grid_id = registry.cell(cell).grid_id.clone();
    let community = registry.community(registry.cell(cell).community).clone();

    let directory = tempfile::tempdir().unwrap();
    let rules_path = directory.path().join("rules.toml");
    std::fs::write(
        &rules_path,
        "[[rule]]\nname = \"life_safety\"\nkind = \"immediate\"\nevent_types = [\"FIRE_SMOKE\"]\ncooldown = \"8s\"\n",
    )
    .unwrap();
    let mut config = Config::default();
    config.rules.path = Some(rules_path);
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(120);
    // The fire starts 3 s after the service does (the simulator starts `backfill` ago).
    config.simulator.scenarios = vec![Scenario::Fire {
        grid_id: grid_id.clone(),
        at: ScenarioTime::AfterStart(123_000),
    }];
    config.window.max_out_of_orderness = Duration::from_secs(1);
    config.window.idle_timeout = Duration::from_secs(1);
    config.alerting = alerting(vec![alertmanager.url.clone()]);
    config.validate().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_address = listener.local_addr().unwrap();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(gridwatch::service::run(config, listener, async move {
        let _ = shutdown_receiver.await;
    }));
    let client = reqwest::Client::new();

    let shown = alertmanager
        .wait_for_grid(
            &client,
            &grid_id,
            Duration::from_secs(20),
            "the fire's life-safety alert",
            |alerts| alerts.len() == 1,
        )
        .await;
    let alert = &shown[0];
    assert_eq!(label(alert, "alertname"), "GridwatchLifeSafety");
    assert_eq!(label(alert, "severity"), "critical");
    assert_eq!(label(alert, "district"), community.district_code);
    assert_eq!(label(alert, "community"), community.id);
    assert_eq!(label(alert, "grid"), grid_id);
    assert_eq!(label(alert, "event_type"), "FIRE_SMOKE");
    assert_eq!(label(alert, "rule"), "life_safety");
    assert!(alert["annotations"]["summary_zh"]
        .as_str()
        .unwrap()
        .contains(&community.name));

    // The detector repeats 30–60 s later; before that, the watermark passes the alarm + 8 s
    // cooldown and the pipeline resolves the alert: Alertmanager stops listing it long before
    // its firing endsAt (2 minutes away).
    alertmanager
        .wait_for_grid(
            &client,
            &grid_id,
            Duration::from_secs(25),
            "the resolution after the cooldown",
            |alerts| alerts.is_empty(),
        )
        .await;
    let metrics_text = client
        .get(format!("http://{service_address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent_line = metrics_text
        .lines()
        .find(|line| {
            line.starts_with("gridwatch_alert_deliveries_total{")
                && line.contains("result=\"sent\"")
                && line.contains("sink=\"alertmanager\"")
        })
        .expect("sent series");
    let sent: f64 = sent_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(sent >= 2.0, "firing and resolved were sent: {sent_line}");

    shutdown_sender.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("service stops")
        .unwrap()
        .unwrap();
}
