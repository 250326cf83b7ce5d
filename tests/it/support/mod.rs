//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod openapi;
pub mod secure_kafka;
pub mod tansu;
pub mod tools;

use std::sync::Arc;

use gridwatch::config::Config;
use gridwatch::grid::GridRegistry;
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::IncidentEvent;
use gridwatch::rules::RuleSet;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::source::{RecordPayload, SourceRecord};

/// 2026-03-02T00:00:00Z: the simulated streams of the tests start here.
pub const START_MILLIS: i64 = 1_772_409_600_000;
/// The wall clock the tests pretend it is: a day after the simulated start.
pub const WALL_MILLIS: i64 = START_MILLIS + 86_400_000 * 30;

/// A pipeline with the default configuration and embedded seeds and rules, as replay runs it
/// (no processing-time watermark advance).
pub fn default_pipeline() -> (Pipeline, Arc<Metrics>) {
    pipeline_with_settings(replay_pipeline_settings())
}

/// The default configuration's pipeline settings, as replay runs them (no processing-time
/// watermark advance).
pub fn replay_pipeline_settings() -> PipelineSettings {
    let mut settings = PipelineSettings::from_config(&Config::default());
    settings.window.idle_timeout_millis = i64::MAX;
    settings
}

/// A pipeline with `settings` and the embedded seeds and rules.
pub fn pipeline_with_settings(settings: PipelineSettings) -> (Pipeline, Arc<Metrics>) {
    let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    let pipeline = Pipeline::new(
        settings,
        GridRegistry::embedded(),
        rules,
        metrics.clone(),
        "file",
    );
    (pipeline, metrics)
}

/// A registered smoke detector (its FIRE_SMOKE events locate by device alone): its device id
/// and its community id.
pub fn smoke_detector() -> (String, String) {
    let registry = GridRegistry::embedded();
    let device = (0..registry.cells().len())
        .flat_map(|index| registry.devices_in_cell(gridwatch::grid::CellIndex(index as u32)))
        .find(|device| {
            device
                .event_types
                .contains(&gridwatch::proto::EventType::FireSmoke)
        })
        .expect("the seeds have smoke detectors");
    let community_id = registry.community_of(device.cell).id.clone();
    (device.device_id.clone(), community_id)
}

/// Simulator events with the default realism (jitter, duplicates, coordinates).
pub fn simulated_events(seed: u64, count: usize, rate_multiplier: f64) -> Vec<IncidentEvent> {
    let settings = SimulatorSettings {
        seed,
        start_millis: START_MILLIS,
        rate_multiplier,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, GridRegistry::embedded()).unwrap();
    (0..count).map(|_| simulator.next_event()).collect()
}

/// A source record carrying an already-structured event.
pub fn record(event: &IncidentEvent, position: u64) -> SourceRecord {
    SourceRecord {
        payload: RecordPayload::Event(Box::new(event.clone())),
        partition: 0,
        position,
    }
}

/// Feeds events through a fresh pipeline and closes every window at the end.
pub fn run_events(events: &[IncidentEvent]) -> Outputs {
    let (mut pipeline, _) = default_pipeline();
    let mut outputs = Outputs::default();
    for (position, event) in events.iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    pipeline.finish(WALL_MILLIS, &mut outputs);
    outputs
}

/// Windows as sortable JSON lines (emission order may legitimately differ between inputs).
pub fn sorted_window_lines(outputs: &Outputs) -> Vec<String> {
    let registry = GridRegistry::embedded();
    let mut lines: Vec<String> = outputs
        .windows
        .iter()
        .map(|pane| {
            let window = gridwatch::sink::cell_window(&registry, pane).unwrap();
            serde_json::to_string(&window).unwrap()
        })
        .collect();
    lines.sort();
    lines
}

/// A gridwatch service running in this test process on a free 127.0.0.1 port.
pub struct InProcessService {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Completes the service's shutdown future.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The running `service::run`.
    task: Option<tokio::task::JoinHandle<Result<(), gridwatch::service::ServiceError>>>,
}

impl InProcessService {
    /// Starts `gridwatch::service::run(config)` on port 0.
    pub async fn start(config: Config) -> InProcessService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        InProcessService::start_on(config, listener)
    }

    /// Starts `gridwatch::service::run(config)` on `listener` (e.g. the port of a service that
    /// was stopped, to restart it where its clients are).
    pub fn start_on(config: Config, listener: tokio::net::TcpListener) -> InProcessService {
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gridwatch::service::run(config, listener, async move {
            let _ = shutdown_receiver.await;
        }));
        InProcessService {
            base_url,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Waits (at most `timeout`) for the service to end on its own, without a shutdown, and
    /// returns its result; panics if it is still running.
    pub async fn ended_by_itself(
        mut self,
        timeout: std::time::Duration,
    ) -> Result<(), gridwatch::service::ServiceError> {
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(timeout, task)
            .await
            .expect("the service ends by itself in time")
            .expect("service task");
        drop(self.shutdown.take());
        result
    }

    /// Shuts the service down and checks that it stopped cleanly within 20 s.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(std::time::Duration::from_secs(20), task)
            .await
            .expect("service stops within 20 s")
            .expect("service task")
            .expect("service ends without error");
    }
}

/// Status and body of a GET; an `/api/v1/` JSON answer is checked against the OpenAPI
/// document ([`openapi::check_response`]).
pub async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("request");
    checked_text(url, response).await
}

/// Status and body of `response` to a GET of `url`, checked as [`get_text`] does.
pub async fn checked_text(url: &str, response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.text().await.expect("body");
    openapi::check_response("GET", url, status, &content_type, &body);
    (status, body)
}

/// Polls `url` until it answers 200 with a body satisfying `predicate`, or panics after
/// `timeout` showing the last body.
pub async fn wait_for_body(
    client: &reqwest::Client,
    url: &str,
    timeout: std::time::Duration,
    predicate: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, body) = get_text(client, url).await;
        if status == 200 && predicate(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on {url}; last status {status}, body:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The value of the first sample line of `name` containing every label fragment
/// (e.g. `trigger="sighup"`); `None` when there is none.
pub fn metric_value(metrics_text: &str, name: &str, label_fragments: &[&str]) -> Option<f64> {
    metrics_text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            label_fragments
                .iter()
                .all(|fragment| line.contains(fragment))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A config file whose `fraud.history_path` is in `directory`: (the config, the history
/// path), for `gridwatch fraud import` tests.
pub fn fraud_import_config(
    directory: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let history = directory.join("history.csv");
    let config = directory.join("gridwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[fraud]\nhistory_path = {:?}\n",
            history.display().to_string()
        ),
    )
    .unwrap();
    (config, history)
}

/// Follows the stderr of a `gridwatch run` child: every line is copied to `copy_to` (a log
/// file, a buffer, `std::io::sink()`) as it comes, and the `address` of the `listening` log
/// line (text or JSON format) is returned as soon as it is logged. The handle gives
/// `copy_to` back once stderr closes (the process ended). Panics when the process ends, or
/// logs nothing of the kind within 2 minutes, without listening.
pub fn follow_log<W: std::io::Write + Send + 'static>(
    stderr: std::process::ChildStderr,
    mut copy_to: W,
) -> (String, std::thread::JoinHandle<W>) {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut sender = Some(sender);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = copy_to.write_all(&line);
            let _ = copy_to.flush();
            if let Some(address) = listening_address(&String::from_utf8_lossy(&line)) {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(address);
                }
            }
        }
        copy_to
    });
    let address = receiver
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("gridwatch run logged no listening line: {error}"));
    (address, handle)
}

/// The `address` field of a `listening` log line, in the JSON format (`"message":
/// "listening"`) or the text one (`... listening address=127.0.0.1:9750 url=...`).
pub fn listening_address(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        if value["message"] != "listening" {
            return None;
        }
        return value["address"].as_str().map(ToString::to_string);
    }
    let mut words = line.split_whitespace();
    words.find(|word| *word == "listening")?;
    words.find_map(|word| word.strip_prefix("address=").map(ToString::to_string))
}

#[test]
fn the_listening_address_is_found_in_text_and_json_log_lines() {
    assert_eq!(
        listening_address("2026-12-03T09:00:00.1Z  INFO gridwatch: listening address=127.0.0.1:40123 url=http://127.0.0.1:40123\n"),
        Some("127.0.0.1:40123".to_string())
    );
    assert_eq!(
        listening_address(r#"{"level":"INFO","message":"listening","address":"[::1]:80"}"#),
        Some("[::1]:80".to_string())
    );
    assert_eq!(
        listening_address("INFO gridwatch: started address=1.2.3.4:5"),
        None
    );
    assert_eq!(
        listening_address(r#"{"message":"other","address":"x"}"#),
        None
    );
}

/// Status and body of a blocking `GET path` to `address` (`host:port`), for tests that drive
/// the real binary from plain threads; `None` when it does not answer within 5 s.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let content_type = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim())
        .unwrap_or_default();
    openapi::check_response(
        "GET",
        &format!("http://{address}{path}"),
        status,
        content_type,
        body,
    );
    Some((status, body.to_string()))
}

/// A pipeline as replay runs it over `registry`.
pub fn pipeline_over(registry: Arc<GridRegistry>) -> Pipeline {
    let settings = replay_pipeline_settings();
    let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    Pipeline::new(settings, registry, rules, metrics, "file")
}

/// Exercises everything a restored pipeline does: records, watermark advances (closing panes,
/// resolving alerts), the operator queries and a new snapshot.
pub fn use_restored(pipeline: &mut Pipeline, continuation: &[gridwatch::proto::IncidentEvent]) {
    let mut outputs = Outputs::default();
    for (position, event) in continuation.iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    pipeline.advance(WALL_MILLIS, &mut outputs);
    for view in 0..pipeline.settings().view_spans_millis.len() {
        pipeline.top_cells(view, 10);
    }
    for cell in 0..pipeline.registry().cells().len().min(50) {
        pipeline.cell_activity(gridwatch::grid::CellIndex(cell as u32));
    }
    pipeline.active_alerts();
    gridwatch::state::snapshot(pipeline).unwrap();
    pipeline.finish(WALL_MILLIS, &mut outputs);
}

/// A snapshot after 1,000 events and the 300 events that follow them.
pub struct SnapshotFixture {
    pub snapshot: Vec<u8>,
    pub continuation: Vec<gridwatch::proto::IncidentEvent>,
}

pub fn snapshot_fixture() -> &'static SnapshotFixture {
    static FIXTURE: std::sync::OnceLock<SnapshotFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let events = simulated_events(9, 1_300, 1.0);
        let mut pipeline = pipeline_over(GridRegistry::embedded());
        let mut outputs = Outputs::default();
        for (position, event) in events[..1_000].iter().enumerate() {
            pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
        }
        SnapshotFixture {
            snapshot: gridwatch::state::snapshot(&pipeline).unwrap(),
            continuation: events[1_000..].to_vec(),
        }
    })
}

/// The sum of every sample of `name` whose labels contain every fragment (0 when none) — for
/// counters split over labels the test does not care about ([`metric_value`] takes the first).
pub fn metric_sum(metrics_text: &str, name: &str, label_fragments: &[&str]) -> f64 {
    metrics_text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && label_fragments
                    .iter()
                    .all(|fragment| line.contains(fragment))
        })
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|value| value.parse::<f64>().ok())
        .sum()
}

/// A firing life-safety (FIRE_SMOKE) alert in cell `cell_index` of `registry`, started at
/// `starts_at_millis`, for the alert delivery tests.
pub fn firing_alert(
    registry: &gridwatch::grid::GridRegistry,
    cell_index: u32,
    fingerprint: &str,
    starts_at_millis: i64,
) -> gridwatch::proto::Alert {
    use gridwatch::proto::{Alert, AlertStatus, EventType};
    let cell = registry.cell(gridwatch::grid::CellIndex(cell_index));
    let community = registry.community(cell.community);
    Alert {
        alert_id: format!("{fingerprint}-occurrence"),
        fingerprint: fingerprint.to_string(),
        rule: "life_safety".to_string(),
        rule_kind: "immediate".to_string(),
        status: AlertStatus::Firing as i32,
        grid_id: cell.grid_id.clone(),
        community_id: community.id.clone(),
        district_id: community.district_code.clone(),
        event_type: EventType::FireSmoke as i32,
        severity: 1,
        starts_at: Some(gridwatch::time::millis_to_timestamp(starts_at_millis)),
        observed: 1.0,
        threshold: 1.0,
        event_ids: vec!["evt-1".to_string()],
        updated_at: Some(gridwatch::time::millis_to_timestamp(starts_at_millis)),
        ..Alert::default()
    }
}
