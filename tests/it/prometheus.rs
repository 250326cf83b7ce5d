//! The Prometheus and Grafana artefacts in `deploy/` against a REAL Prometheus.
//!
//! `every_dashboard_query_and_recording_rule_returns_data` starts gridwatch in-process (the
//! simulator with a two-hour backfill, a fire and an intrusion burst, so alert metrics have
//! series), starts the `prometheus` binary scraping it every second with the recording and
//! alerting rules of `deploy/prometheus/` evaluated every second, then checks that every PromQL
//! expression of every Grafana panel and variable, and every recording rule, returns at least
//! one series: no dashboard panel may be empty. It also runs `promtool check metrics` on a live
//! scrape.
//!
//! Grafana variables are replaced before querying (see [`substitute_grafana_variables`]):
//! `$__rate_interval` → `1m`, `$__interval` → `15s`, `$__range` → `5m` (`$__range_s` → `300`),
//! and each dashboard variable by its default: the `allValue` (`.*`) when the default is "All",
//! else its current value (e.g. `$view` → `15m`).
//!
//! The tools (`prometheus`, `promtool`, Debian package `prometheus`) are installed by `.ci/run`;
//! when one is missing the tests fail under `CI=true` and are skipped with a notice otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gridwatch::config::{Config, SimulatorPacing};
use gridwatch::grid::GridRegistry;
use gridwatch::source::simulator::Scenario;

/// Metrics a Kafka source alone registers series for (per topic and partition, per group).
const KAFKA_SOURCE_ONLY_METRICS: [&str; 2] =
    ["gridwatch_kafka_consumer_lag", "gridwatch_kafka_broker_up"];

/// Total time allowed for every query to return data (rates need two scrapes, recording rules
/// one evaluation after that).
const QUERY_BUDGET: Duration = Duration::from_secs(60);

fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The tool's path, or `None` (after printing a notice) when it is missing and CI is unset.
/// Panics when it is missing under `CI=true`: `.ci/run` must have installed it.
fn required_tool(name: &str) -> Option<PathBuf> {
    crate::support::tools::tool_on_path(&[name], ".ci/run installs the Debian package prometheus")
}

/// A `prometheus` process, killed when dropped.
struct PrometheusProcess {
    /// The running server.
    child: Child,
    /// Base URL of its HTTP API.
    base_url: String,
    /// Its log file (printed when a check fails).
    log_path: PathBuf,
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

fn free_local_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Starts `prometheus` scraping `target` every second, with the repository's rule files
/// evaluated every second.
fn start_prometheus(binary: &Path, work_directory: &Path, target: &str) -> PrometheusProcess {
    let rule_files: Vec<String> = ["gridwatch.rules.yml", "gridwatch-alerts.rules.yml"]
        .iter()
        .map(|file| {
            repository_path("deploy/prometheus")
                .join(file)
                .display()
                .to_string()
        })
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: gridwatch\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rule_files
            .iter()
            .map(|path| format!("  - {path:?}\n"))
            .collect::<String>()
    );
    let config_path = work_directory.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    let port = free_local_port();
    let log_path = work_directory.join("prometheus.log");
    let log_file = std::fs::File::create(&log_path).expect("create prometheus.log");
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work_directory.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log file"))
        .stderr(log_file)
        .spawn()
        .expect("start prometheus");
    PrometheusProcess {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
        log_path,
    }
}

/// Replaces Grafana's built-in and dashboard variables by concrete values (longest names
/// first, so `$district` never eats part of `$districts`). `${name}` and `$name` both work.
fn substitute_grafana_variables(expression: &str, variables: &BTreeMap<String, String>) -> String {
    let mut all_variables: Vec<(String, String)> = [
        ("__rate_interval", "1m"),
        ("__interval_ms", "15000"),
        ("__interval", "15s"),
        ("__range_s", "300"),
        ("__range_ms", "300000"),
        ("__range", "5m"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .chain(
        variables
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    )
    .collect();
    all_variables.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut substituted = expression.to_string();
    for (name, value) in &all_variables {
        substituted = substituted
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    substituted
}

/// Each dashboard variable's default value: its `allValue` when the default is "All".
fn dashboard_variable_defaults(dashboard: &serde_json::Value) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for variable in variables {
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let current = &variable["current"]["value"];
        let first_value = match current {
            serde_json::Value::Array(values) => values
                .first()
                .and_then(|value| value.as_str())
                .unwrap_or_default(),
            other => other.as_str().unwrap_or_default(),
        };
        let value = if first_value == "$__all" {
            variable["allValue"]
                .as_str()
                .unwrap_or_else(|| panic!("variable {name} defaults to All but has no allValue"))
        } else {
            first_value
        };
        defaults.insert(name, value.to_string());
    }
    defaults
}

/// One PromQL query the dashboards or rules need answered.
#[derive(Debug, Clone)]
struct RequiredQuery {
    /// Where it comes from (dashboard file, panel title, refId; or rule name).
    origin: String,
    /// The PromQL, variables substituted.
    expression: String,
    /// A label every returned series must carry (Grafana `label_values(…, label)`).
    required_label: Option<String>,
}

fn collect_panel_queries(
    panels: &[serde_json::Value],
    file_name: &str,
    variables: &BTreeMap<String, String>,
    queries: &mut Vec<RequiredQuery>,
) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if panel["type"] != "row" {
            assert!(
                !targets.is_empty(),
                "{file_name}: panel {title:?} has no query"
            );
        }
        for target in targets {
            let expression = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file_name}: panel {title:?} target without expr"));
            queries.push(RequiredQuery {
                origin: format!(
                    "{file_name} panel {title:?} ref {}",
                    target["refId"].as_str().unwrap_or("?")
                ),
                expression: substitute_grafana_variables(expression, variables),
                required_label: None,
            });
        }
        if let Some(nested) = panel["panels"].as_array() {
            collect_panel_queries(nested, file_name, variables, queries);
        }
    }
}

/// `label_values(selector, label)` of a query variable as a query for `selector`.
fn variable_queries(
    dashboard: &serde_json::Value,
    file_name: &str,
    variables: &BTreeMap<String, String>,
) -> Vec<RequiredQuery> {
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let definition = variable["definition"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        let arguments = definition
            .trim()
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("{file_name}: variable {name}: expected label_values(selector, label), got {definition:?}")
            });
        let (selector, label) = arguments.rsplit_once(',').unwrap_or_else(|| {
            panic!("{file_name}: variable {name}: label_values needs a selector and a label")
        });
        queries.push(RequiredQuery {
            origin: format!("{file_name} variable {name}"),
            expression: substitute_grafana_variables(selector.trim(), variables),
            required_label: Some(label.trim().to_string()),
        });
    }
    queries
}

/// Every dashboard query (panels and variables): each must return data.
fn dashboard_queries() -> Vec<RequiredQuery> {
    let directory = repository_path("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("deploy/grafana/dashboards")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the three dashboards: {files:?}");
    let mut queries = Vec::new();
    for file in files {
        let file_name = file
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("read dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{file_name} is not JSON: {error}"));
        let variables = dashboard_variable_defaults(&dashboard);
        let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
        assert!(!panels.is_empty(), "{file_name} has no panels");
        let mut file_queries = Vec::new();
        collect_panel_queries(&panels, &file_name, &variables, &mut file_queries);
        file_queries.extend(variable_queries(&dashboard, &file_name, &variables));
        queries.extend(file_queries);
    }
    for query in &queries {
        assert!(
            !query.expression.contains('$'),
            "{}: unsubstituted variable in {:?}",
            query.origin,
            query.expression
        );
    }
    queries
}

/// Rules files of deploy/prometheus, as parsed YAML.
fn rule_groups(file: &str) -> Vec<serde_norway::Value> {
    let text = std::fs::read_to_string(repository_path("deploy/prometheus").join(file))
        .expect("read rules file");
    let parsed: serde_norway::Value = serde_norway::from_str(&text).expect("rules YAML");
    parsed["groups"].as_sequence().cloned().unwrap_or_default()
}

/// Each recording rule's expression, and its output series (the recorded name).
fn recording_rule_queries() -> Vec<RequiredQuery> {
    let mut queries = Vec::new();
    for group in rule_groups("gridwatch.rules.yml") {
        for rule in group["rules"].as_sequence().cloned().unwrap_or_default() {
            let record = rule["record"]
                .as_str()
                .expect("every rule of gridwatch.rules.yml records")
                .to_string();
            let expression = rule["expr"].as_str().expect("rule expr").to_string();
            queries.push(RequiredQuery {
                origin: format!("recording rule {record} (expression)"),
                expression,
                required_label: None,
            });
            queries.push(RequiredQuery {
                origin: format!("recording rule {record} (recorded series)"),
                expression: record,
                required_label: None,
            });
        }
    }
    assert!(queries.len() >= 10, "too few recording rules: {queries:?}");
    queries
}

/// What one query returned.
enum QueryOutcome {
    /// At least one series (carrying the required label, if any).
    HasData,
    /// A valid query with no (suitable) series yet.
    Empty(String),
    /// Prometheus rejected the query: no amount of waiting helps.
    Rejected(String),
}

async fn run_query(
    client: &reqwest::Client,
    base_url: &str,
    query: &RequiredQuery,
) -> QueryOutcome {
    let response = match client
        .get(format!("{base_url}/api/v1/query"))
        .query(&[("query", query.expression.as_str())])
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return QueryOutcome::Empty(format!("request failed: {error}")),
    };
    let status = response.status();
    let body: serde_json::Value = match response.json().await {
        Ok(body) => body,
        Err(error) => return QueryOutcome::Empty(format!("unreadable answer: {error}")),
    };
    if body["status"] != "success" {
        if status.as_u16() == 400 || body["errorType"] == "bad_data" {
            return QueryOutcome::Rejected(body.to_string());
        }
        return QueryOutcome::Empty(body.to_string());
    }
    let data = &body["data"];
    if data["resultType"] == "scalar" || data["resultType"] == "string" {
        return QueryOutcome::HasData;
    }
    let series = data["result"].as_array().cloned().unwrap_or_default();
    let suitable = series.iter().any(|each| match &query.required_label {
        None => true,
        Some(label) => each["metric"][label.as_str()].is_string(),
    });
    if suitable {
        QueryOutcome::HasData
    } else {
        QueryOutcome::Empty(body.to_string())
    }
}

async fn wait_until_target_is_up(client: &reqwest::Client, prometheus: &PrometheusProcess) {
    let query = RequiredQuery {
        origin: "target up".to_string(),
        expression: "up{job=\"gridwatch\"} == 1".to_string(),
        required_label: None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let QueryOutcome::HasData = run_query(client, &prometheus.base_url, &query).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus never scraped gridwatch successfully; its log:\n{}",
            prometheus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Config of the in-process gridwatch: two hours of backlog at 20× the background rates, a
/// fire five minutes ago (a firing immediate alert) and an intrusion burst running through now
/// (a firing threshold alert).
fn busy_simulator_config() -> Config {
    let registry = GridRegistry::embedded();
    let mut grid_ids = registry.cells().iter().map(|cell| cell.grid_id.clone());
    let fire_grid_id = grid_ids.next().expect("a registered cell");
    let intrusion_grid_id = grid_ids.next().expect("a second registered cell");
    let mut config = Config::default();
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(2 * 3600);
    config.simulator.rate_multiplier = 20.0;
    config.simulator.scenarios = vec![
        serde_json::from_value::<Scenario>(serde_json::json!({
            "kind": "fire", "grid_id": fire_grid_id, "at": "+115m"
        }))
        .expect("fire scenario"),
        serde_json::from_value::<Scenario>(serde_json::json!({
            "kind": "intrusion_burst", "grid_id": intrusion_grid_id, "start": "+110m",
            "duration": "1h", "per_minute": 2
        }))
        .expect("intrusion scenario"),
    ];
    config
}

async fn scrape_after_backlog(client: &reqwest::Client, metrics_url: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(metrics_url).send().await {
            let text = response.text().await.unwrap_or_default();
            let windows_emitted = text
                .lines()
                .find_map(|line| line.strip_prefix("gridwatch_windows_emitted_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if windows_emitted > 0.0 && text.contains("gridwatch_alerts_active{") {
                return text;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gridwatch never emitted a window"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pipes `scrape_text` through `promtool check metrics` and returns its verdict.
fn promtool_check_metrics(promtool: &Path, scrape_text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(scrape_text.as_bytes())
        .expect("write scrape to promtool");
    let output = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && report.trim().is_empty(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_recording_rule_returns_data() {
    let Some(prometheus_binary) = required_tool("prometheus") else {
        return;
    };
    let Some(promtool) = required_tool("promtool") else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(gridwatch::service::run(
        busy_simulator_config(),
        listener,
        async move {
            let _ = shutdown_receiver.await;
        },
    ));
    let client = reqwest::Client::new();
    let scrape_text = scrape_after_backlog(&client, &format!("http://{address}/metrics")).await;

    let communities = GridRegistry::embedded().communities().len();
    let count_series = |name: &str| {
        scrape_text
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .count()
    };
    assert_eq!(count_series("gridwatch_community_info"), communities);
    assert_eq!(
        count_series("gridwatch_community_events"),
        communities * Config::default().window.views.len(),
        "every community has a series per view, silent ones included"
    );

    let (metrics_are_clean, promtool_report) = promtool_check_metrics(&promtool, &scrape_text);
    assert!(
        metrics_are_clean,
        "promtool check metrics found problems:\n{promtool_report}"
    );

    let work_directory = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(
        &prometheus_binary,
        work_directory.path(),
        &address.to_string(),
    );
    wait_until_target_is_up(&client, &prometheus).await;

    let mut pending = dashboard_queries();
    pending.extend(recording_rule_queries());
    // Series only a Kafka source exports (this gridwatch runs the simulator): Prometheus must
    // accept those panels' queries, but cannot have data for them here.
    let (kafka_only, checked): (Vec<RequiredQuery>, Vec<RequiredQuery>) =
        pending.into_iter().partition(|query| {
            KAFKA_SOURCE_ONLY_METRICS.iter().any(|metric| {
                query.expression.contains(metric) && !scrape_text.contains(&format!("{metric}{{"))
            })
        });
    pending = checked;
    assert!(kafka_only.len() <= 2, "{kafka_only:?}");
    for query in &kafka_only {
        if let QueryOutcome::Rejected(answer) =
            run_query(&client, &prometheus.base_url, query).await
        {
            panic!(
                "{}: prometheus rejected {:?}: {answer}",
                query.origin, query.expression
            );
        }
        eprintln!(
            "{}: accepted (Kafka source only: no data expected here)",
            query.origin
        );
    }
    let total = pending.len();
    let deadline = tokio::time::Instant::now() + QUERY_BUDGET;
    let mut last_answers: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut still_pending = Vec::new();
        for query in pending {
            match run_query(&client, &prometheus.base_url, &query).await {
                QueryOutcome::HasData => {}
                QueryOutcome::Empty(answer) => {
                    last_answers.insert(query.origin.clone(), answer);
                    still_pending.push(query);
                }
                QueryOutcome::Rejected(answer) => panic!(
                    "{}: prometheus rejected {:?}: {answer}",
                    query.origin, query.expression
                ),
            }
        }
        pending = still_pending;
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failures: Vec<String> = pending
        .iter()
        .map(|query| {
            format!(
                "{}\n    {}\n    last answer: {}",
                query.origin,
                query.expression,
                last_answers
                    .get(&query.origin)
                    .map(String::as_str)
                    .unwrap_or("")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} queries returned no series within {QUERY_BUDGET:?}:\n{}\nprometheus log:\n{}",
        failures.len(),
        failures.join("\n"),
        prometheus.log_text()
    );
    eprintln!("{total} dashboard and recording-rule queries returned data");

    drop(prometheus);
    shutdown_sender.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("service stops")
        .unwrap()
        .unwrap();
}

#[test]
fn deploy_prometheus_config_and_rules_pass_promtool_checks() {
    let Some(promtool) = required_tool("promtool") else {
        return;
    };
    let prometheus_directory = repository_path("deploy/prometheus");
    let check_config = Command::new(&promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&prometheus_directory)
        .output()
        .expect("run promtool check config");
    assert!(
        check_config.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&check_config.stdout),
        String::from_utf8_lossy(&check_config.stderr)
    );
    let unit_tests = Command::new(&promtool)
        .args(["test", "rules", "tests/gridwatch-alerts.test.yml"])
        .current_dir(&prometheus_directory)
        .output()
        .expect("run promtool test rules");
    assert!(
        unit_tests.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&unit_tests.stdout),
        String::from_utf8_lossy(&unit_tests.stderr)
    );
}

#[test]
fn grafana_variables_are_substituted_longest_name_first() {
    let variables = BTreeMap::from([
        ("district".to_string(), ".*".to_string()),
        ("district_name".to_string(), "x".to_string()),
        ("view".to_string(), "15m".to_string()),
    ]);
    assert_eq!(
        substitute_grafana_variables(
            "rate(a{district=~\"$district\", n=\"${district_name}\", v=\"$view\"}[$__rate_interval]) / $__range_s",
            &variables
        ),
        "rate(a{district=~\".*\", n=\"x\", v=\"15m\"}[1m]) / 300"
    );
}
