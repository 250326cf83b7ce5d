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
        AlertmanagerProcess::start_with(binary, None, &reqwest::Client::new()).await
    }

    /// Starts `binary` with the deploy configuration and `--web.config.file=web_config` (TLS,
    /// basic auth) when given, and waits until `/-/ready` answers 200 to `client`.
    async fn start_with(
        binary: &Path,
        web_config: Option<&Path>,
        client: &reqwest::Client,
    ) -> AlertmanagerProcess {
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
            .args(web_config.map(|path| format!("--web.config.file={}", path.display())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let scheme = if web_config.is_some() {
            "https"
        } else {
            "http"
        };
        let process = AlertmanagerProcess {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            directory,
        };
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

/// Alertmanager serving TLS (a certificate of a test CA, not in any system store) with basic
/// auth (a bcrypt hash made here) through `--web.config.file`: gridwatch delivers once it
/// trusts `alerting.tls.ca_file` and signs in with `[alerting.alertmanager_auth]` (password
/// from a file); without the CA, or with a wrong password, every delivery fails (a 401 is
/// not retried) and the alert never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_behind_tls_and_basic_auth_receives_alerts_from_a_trusting_signed_in_client() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let certificates = crate::support::secure_kafka::TestCertificates::generate();
    let (cert_path, key_path) = certificates.server_files();
    let password = "am-password-91c2";
    let hash = bcrypt::hash(password, 6).unwrap();
    let web_config = certificates.directory.path().join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  gridwatch: '{hash}'\n",
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(&certificates.ca_path).unwrap()).unwrap();
    let test_client = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let alertmanager =
        AlertmanagerProcess::start_with(&binary, Some(&web_config), &authenticated(&ca, password))
            .await;
    assert!(alertmanager.url.starts_with("https://"));
    let unauthenticated = test_client
        .get(format!("{}/api/v2/alerts", alertmanager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401, "basic auth is enforced");

    let registry = GridRegistry::embedded();
    let password_file = certificates.directory.path().join("am-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let secured = |ca_file: Option<&Path>, password: &str| {
        let mut config = alerting(vec![alertmanager.url.clone()]);
        config.tls.ca_file = ca_file.map(Path::to_path_buf);
        config.alertmanager_auth.username = "gridwatch".to_string();
        config.alertmanager_auth.password = gridwatch::secret::Secret::new(password);
        config
    };

    // Without the private CA: the system roots do not know it.
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let untrusting = AlertDelivery::start(&secured(None, password), registry.clone(), &metrics)
        .unwrap()
        .unwrap();
    untrusting.offer(&[firing_alert(&registry, 1, "fp-untrusted")]);
    wait_for_counter(&metrics, "failed", 1).await;
    untrusting.shut_down(Duration::from_secs(2)).await;

    // With the CA but a wrong password: 401, not retried.
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let wrong = AlertDelivery::start(
        &secured(Some(&certificates.ca_path), "not-the-password"),
        registry.clone(),
        &metrics,
    )
    .unwrap()
    .unwrap();
    wrong.offer(&[firing_alert(&registry, 2, "fp-wrong-password")]);
    wait_for_counter(&metrics, "failed", 1).await;
    assert_eq!(
        counter(&metrics, "alertmanager", "retried"),
        0,
        "a 401 is final"
    );
    wrong.shut_down(Duration::from_secs(2)).await;

    // With the CA and the password read from its file, as `Config::load` does.
    let mut config = secured(Some(&certificates.ca_path), "");
    config.alertmanager_auth.password = gridwatch::secret::Secret::default();
    let mut full = gridwatch::config::Config {
        alerting: config,
        ..gridwatch::config::Config::default()
    };
    full.alerting.alertmanager_auth.password_file = Some(password_file);
    full.read_secret_files().unwrap();
    full.validate().unwrap();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(&full.alerting, registry.clone(), &metrics)
        .unwrap()
        .unwrap();
    let firing = firing_alert(&registry, 0, "fp-secured");
    delivery.offer(std::slice::from_ref(&firing));
    let client = authenticated(&ca, password);
    alertmanager
        .wait_for_grid(
            &client,
            &firing.grid_id,
            Duration::from_secs(15),
            "the alert delivered over TLS with basic auth",
            |alerts| alerts.len() == 1,
        )
        .await;
    for other in [1, 2] {
        let grid = &firing_alert(&registry, other, "x").grid_id;
        assert!(alertmanager.alerts_of_grid(&client, grid).await.is_empty());
    }
    delivery.shut_down(Duration::from_secs(5)).await;
    assert_eq!(counter(&metrics, "alertmanager", "failed"), 0);
}

/// A client trusting `ca` with basic auth `gridwatch:password` on every request.
fn authenticated(ca: &reqwest::Certificate, password: &str) -> reqwest::Client {
    use base64::Engine as _;
    use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
    let token = base64::engine::general_purpose::STANDARD.encode(format!("gridwatch:{password}"));
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
    );
    reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Waits (10 s at most) until `result` deliveries to Alertmanager reach `at_least`.
async fn wait_for_counter(metrics: &Metrics, result: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counter(metrics, "alertmanager", result) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {result} delivery within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts `body` (an array of postable alerts) to Alertmanager's API, then lists its alerts
/// once it had a moment to apply the inhibition rules.
async fn post_then_list(client: &reqwest::Client, url: &str, body: &Value) -> Vec<Value> {
    let response = client
        .post(format!("{url}/api/v2/alerts"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .get(format!("{url}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An alert as gridwatch's Alertmanager sink posts it at `now`.
fn as_posted(alert: &Alert, registry: &GridRegistry, now: i64) -> Value {
    serde_json::to_value(gridwatch::sink::alertmanager::postable_alert(
        alert,
        registry,
        "http://127.0.0.1:9750",
        now,
        Duration::from_secs(60),
    ))
    .unwrap()
}

/// Whether an alert listed by Alertmanager is inhibited.
fn is_inhibited(alert: &Value) -> bool {
    !alert["status"]["inhibitedBy"]
        .as_array()
        .unwrap()
        .is_empty()
}

/// Inhibition never crosses instances or cells: an alert only inhibits targets that carry the
/// `equal` labels with the same values (real Alertmanager, alerts posted to its API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibition_stays_within_one_instance_and_one_cell() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = AlertmanagerProcess::start(&binary).await;
    let client = reqwest::Client::new();
    let registry = GridRegistry::embedded();
    let now = wall_clock_millis();
    let pipeline = |name: &str, severity: &str, instance: &str| {
        serde_json::json!({
            "labels": {"alertname": name, "severity": severity, "team": "ops",
                        "job": "gridwatch", "instance": instance},
            "startsAt": gridwatch::time::millis_to_rfc3339(now - 60_000),
        })
    };
    let life_safety = firing_alert(&registry, 5, "fp-life");
    let mut lower = life_safety.clone();
    lower.rule = "smoke_threshold".to_string();
    lower.severity = 2;
    let mut other_cell = lower.clone();
    let other = firing_alert(&registry, 6, "x");
    other_cell.grid_id = other.grid_id.clone();
    let as_posted = |alert: &Alert| as_posted(alert, &registry, now);
    let body = serde_json::Value::Array(vec![
        pipeline("GridwatchDown", "critical", "a:9750"),
        pipeline("GridwatchWatermarkLagHigh", "warning", "a:9750"),
        pipeline("GridwatchWatermarkLagHigh", "warning", "b:9750"),
        as_posted(&life_safety),
        as_posted(&lower),
        as_posted(&other_cell),
    ]);
    let alerts = post_then_list(&client, &alertmanager.url, &body).await;
    let inhibited = |predicate: &dyn Fn(&Value) -> bool| -> bool {
        let alert = alerts
            .iter()
            .find(|alert| predicate(alert))
            .unwrap_or_else(|| panic!("alert not found in {alerts:?}"));
        is_inhibited(alert)
    };
    let lag_of = |instance: &'static str| {
        move |alert: &Value| {
            label(alert, "alertname") == "GridwatchWatermarkLagHigh"
                && label(alert, "instance") == instance
        }
    };
    assert!(
        inhibited(&lag_of("a:9750")),
        "the down instance's own alert"
    );
    assert!(!inhibited(&lag_of("b:9750")), "another instance's alert");
    assert!(!inhibited(
        &|alert: &Value| label(alert, "alertname") == "GridwatchDown"
    ));
    assert!(inhibited(&|alert: &Value| label(alert, "rule")
        == "smoke_threshold"
        && label(alert, "grid") == life_safety.grid_id));
    assert!(!inhibited(&|alert: &Value| label(alert, "rule")
        == "smoke_threshold"
        && label(alert, "grid") == other.grid_id));
    assert!(!inhibited(
        &|alert: &Value| label(alert, "rule") == "life_safety"
    ));
}

/// A district alert inhibits the scan's clusters centred in its district, and only those
/// (real Alertmanager with the shipped `deploy/alertmanager/alertmanager.yml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_wave_inhibits_the_clusters_of_its_district_only() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = AlertmanagerProcess::start(&binary).await;
    let client = reqwest::Client::new();
    let registry = GridRegistry::embedded();
    let now = wall_clock_millis();
    let district = registry.districts()[0].code.clone();
    let community_in = registry
        .communities()
        .iter()
        .find(|community| community.district_code == district)
        .unwrap();
    let community_out = registry
        .communities()
        .iter()
        .find(|community| community.district_code != district)
        .unwrap();
    let fraud = |rule: &str, community: Option<&gridwatch::grid::Community>, district_id: &str| {
        let mut alert = firing_alert(&registry, 0, rule);
        alert.rule = rule.to_string();
        alert.rule_kind = if rule == "fraud_wave_cluster" {
            "scan"
        } else {
            "spike"
        }
        .to_string();
        alert.event_type = EventType::FraudWarning as i32;
        alert.severity = 2;
        alert.grid_id.clear();
        alert.device_id.clear();
        alert.district_id = district_id.to_string();
        alert.community_id = community.map(|c| c.id.clone()).unwrap_or_default();
        alert.cluster_community_ids = community.map(|c| vec![c.id.clone()]).unwrap_or_default();
        alert.fingerprint = format!("{rule}-{}", alert.community_id);
        alert
    };
    let district_alert = fraud("fraud_wave_district_spike_6h", None, &district);
    let cluster_in = fraud("fraud_wave_cluster", Some(community_in), &district);
    let cluster_out = fraud(
        "fraud_wave_cluster",
        Some(community_out),
        &community_out.district_code,
    );
    let body: Value = [&district_alert, &cluster_in, &cluster_out]
        .iter()
        .map(|alert| as_posted(alert, &registry, now))
        .collect();
    let alerts = post_then_list(&client, &alertmanager.url, &body).await;
    let inhibited = |rule: &str, community: &str| -> bool {
        let alert = alerts
            .iter()
            .find(|alert| label(alert, "rule") == rule && label(alert, "community") == community)
            .unwrap_or_else(|| panic!("{rule} {community} not in {alerts:?}"));
        is_inhibited(alert)
    };
    assert!(inhibited("fraud_wave_cluster", &community_in.id));
    assert!(!inhibited("fraud_wave_cluster", &community_out.id));
    assert!(!inhibited("fraud_wave_district_spike_6h", ""));
}
