//! The CloudEvents webhook against a local receiver (axum on 127.0.0.1:0): envelope, content
//! type and HMAC signature; retries while the receiver answers 503; no retries of a 400; and
//! the pipeline keeps processing while every alert destination is down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gridwatch::config::{AlertingConfig, Config, SimulatorPacing, WebhookConfig};
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::metrics::Metrics;
use gridwatch::proto::{Alert, AlertStatus};
use gridwatch::sink::delivery::AlertDelivery;
use gridwatch::source::simulator::{Scenario, ScenarioTime};
use gridwatch::time::{millis_to_timestamp, timestamp_to_millis};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What the test receiver does and saw.
#[derive(Clone, Default)]
struct Receiver {
    /// Requests answered 200: headers and raw body.
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Requests seen so far (any answer).
    requests: Arc<AtomicUsize>,
    /// The first this-many requests get 503.
    unavailable_first: Arc<AtomicUsize>,
    /// Every request gets 400.
    reject: Arc<AtomicBool>,
    /// Requests hang (longer than any client timeout) while set.
    hang: Arc<AtomicBool>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let index = receiver.requests.fetch_add(1, Ordering::SeqCst);
    if receiver.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if index < receiver.unavailable_first.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if receiver.reject.load(Ordering::SeqCst) {
        return StatusCode::BAD_REQUEST;
    }
    receiver.received.lock().unwrap().push((headers, body));
    StatusCode::OK
}

impl Receiver {
    /// Serves on a free port; returns the webhook URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        format!("http://{address}/hook")
    }

    fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests were accepted, or panics after `timeout`.
    async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<(HeaderMap, Bytes)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "received {} of {count} events ({} requests)",
                received.len(),
                self.requests.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn webhook_alerting(url: String, secret: &str) -> AlertingConfig {
    AlertingConfig {
        instance: "test-instance".to_string(),
        retry_initial_backoff: Duration::from_millis(20),
        retry_max_backoff: Duration::from_millis(100),
        retry_max_attempts: 6,
        webhook: WebhookConfig {
            url,
            secret: secret.into(),
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        },
        ..AlertingConfig::default()
    }
}

fn firing_alert(registry: &GridRegistry) -> Alert {
    crate::support::firing_alert(registry, 3, "5f0c3d1e9a8b7c6d", 1_772_409_600_000)
}

fn counter(metrics: &Metrics, result: &str) -> u64 {
    metrics
        .alert_deliveries
        .with_label_values(&["webhook", result])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_signed_cloudevents_in_structured_mode() {
    let receiver = Receiver::default();
    let url = receiver.serve().await;
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(
        &webhook_alerting(url, "hunter2"),
        registry.clone(),
        &metrics,
    )
    .unwrap()
    .unwrap();
    let firing = firing_alert(&registry);
    let resolved = Alert {
        status: AlertStatus::Resolved as i32,
        ends_at: Some(millis_to_timestamp(1_772_409_900_000)),
        updated_at: Some(millis_to_timestamp(1_772_409_900_000)),
        ..firing.clone()
    };
    delivery.offer(&[firing.clone(), resolved.clone()]);
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 2);

    for ((headers, body), (alert, status_word)) in received
        .iter()
        .zip([(&firing, "firing"), (&resolved, "resolved")])
    {
        assert_eq!(
            headers["content-type"].to_str().unwrap(),
            "application/cloudevents+json"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hunter2").unwrap();
        mac.update(body);
        let expected_signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            headers["x-gridwatch-signature"].to_str().unwrap(),
            expected_signature
        );
        assert!(gridwatch::sink::webhook::verify_signature(
            b"hunter2",
            body,
            headers["x-gridwatch-signature"].to_str().unwrap()
        ));

        let event: Value = serde_json::from_slice(body).unwrap();
        let updated_at_millis = timestamp_to_millis(alert.updated_at.as_ref().unwrap());
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["id"],
            format!("{}:{status_word}:{updated_at_millis}", alert.alert_id)
        );
        assert_eq!(event["source"], "gridwatch/test-instance");
        assert_eq!(
            event["type"],
            format!("cn.gridwatch.alert.{status_word}.v1")
        );
        assert_eq!(
            event["time"],
            gridwatch::time::millis_to_rfc3339(updated_at_millis)
        );
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["subject"], alert.grid_id);
        let data: Alert = serde_json::from_value(event["data"].clone()).unwrap();
        assert_eq!(&data, alert, "data is the alert in proto3 JSON");
    }
    delivery.shut_down(Duration::from_secs(5)).await;
    assert_eq!(counter(&metrics, "sent"), 2);
    assert_eq!(counter(&metrics, "retried"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_receiver_is_retried_until_it_accepts() {
    let receiver = Receiver::default();
    receiver.unavailable_first.store(3, Ordering::SeqCst);
    let url = receiver.serve().await;
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(&webhook_alerting(url, ""), registry.clone(), &metrics)
        .unwrap()
        .unwrap();
    delivery.offer(&[firing_alert(&registry)]);
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        received[0].0.get("x-gridwatch-signature").is_none(),
        "no secret, no signature"
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 4);
    delivery.shut_down(Duration::from_secs(5)).await;
    assert_eq!(counter(&metrics, "retried"), 3);
    assert_eq!(counter(&metrics, "sent"), 1);
    assert_eq!(counter(&metrics, "failed"), 0);
    let latency = metrics
        .alert_delivery_latency
        .with_label_values(&["webhook"]);
    assert_eq!(latency.get_sample_count(), 1);
    assert!(
        latency.get_sample_sum() >= 0.06,
        "three backoffs of at least 20, 40, 80 ms... of which the first two at least: {}",
        latency.get_sample_sum()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_event_is_not_retried_and_counts_as_failed() {
    let receiver = Receiver::default();
    receiver.reject.store(true, Ordering::SeqCst);
    let url = receiver.serve().await;
    let registry = GridRegistry::embedded();
    let metrics = Metrics::new(&["test"], "v").unwrap();
    let delivery = AlertDelivery::start(&webhook_alerting(url, ""), registry.clone(), &metrics)
        .unwrap()
        .unwrap();
    delivery.offer(&[firing_alert(&registry)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counter(&metrics, "failed") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delivery.shut_down(Duration::from_secs(5)).await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 1);
    assert_eq!(counter(&metrics, "retried"), 0);
    assert_eq!(counter(&metrics, "sent"), 0);
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_keeps_processing_while_every_alert_destination_is_down() {
    let receiver = Receiver::default();
    receiver.hang.store(true, Ordering::SeqCst);
    let webhook_url = receiver.serve().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = GridRegistry::embedded();
    let mut config = Config::default();
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(30 * 60);
    config.simulator.rate_multiplier = 5.0;
    config.simulator.scenarios = vec![
        Scenario::Fire {
            grid_id: registry.cell(CellIndex(10)).grid_id.clone(),
            at: ScenarioTime::AfterStart(60_000),
        },
        Scenario::Fire {
            grid_id: registry.cell(CellIndex(500)).grid_id.clone(),
            at: ScenarioTime::AfterStart(120_000),
        },
    ];
    config.alerting = AlertingConfig {
        alertmanager_urls: vec![format!("http://127.0.0.1:{dead_port}")],
        queue_capacity: 2,
        retry_initial_backoff: Duration::from_millis(200),
        retry_max_backoff: Duration::from_millis(500),
        retry_max_attempts: 1000,
        webhook: WebhookConfig {
            url: webhook_url,
            timeout: Duration::from_millis(500),
            ..WebhookConfig::default()
        },
        ..AlertingConfig::default()
    };
    config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(gridwatch::service::run(config, listener, async move {
        let _ = shutdown_receiver.await;
    }));
    let client = reqwest::Client::new();

    // The 30-minute backlog (with two fires) is processed although no alert can be delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let text = scrape(&client, &base).await;
        let alerts = crate::support::metric_sum(
            &text,
            "gridwatch_alerts_total",
            &["rule=\"life_safety\"", "status=\"firing\""],
        );
        let lag = text
            .lines()
            .find(|line| line.starts_with("gridwatch_watermark_lag_seconds "))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok());
        if alerts >= 2.0 && lag.is_some_and(|lag| lag < 60.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog not processed while sinks are down:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let received_before = crate::support::metric_sum(
        &caught_up,
        "gridwatch_events_received_total",
        &["source=\"simulator\""],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = scrape(&client, &base).await;
    let received_after = crate::support::metric_sum(
        &later,
        "gridwatch_events_received_total",
        &["source=\"simulator\""],
    );
    assert!(
        received_after > received_before,
        "events keep flowing: {received_before} -> {received_after}"
    );
    for sink in ["alertmanager", "webhook"] {
        let sink_label = format!("sink=\"{sink}\"");
        assert_eq!(
            crate::support::metric_sum(
                &later,
                "gridwatch_alert_deliveries_total",
                &[&sink_label, "result=\"sent\""]
            ),
            0.0,
            "{sink} is down"
        );
        assert!(
            crate::support::metric_sum(
                &later,
                "gridwatch_alert_deliveries_total",
                &[&sink_label, "result=\"retried\""]
            ) > 0.0,
            "{sink} retries"
        );
    }
    let life_safety_alerts =
        crate::support::metric_sum(&later, "gridwatch_alerts_total", &["rule=\"life_safety\""]);
    assert!(life_safety_alerts >= 4.0, "two fires fire and resolve");
    assert!(
        crate::support::metric_sum(
            &later,
            "gridwatch_alert_delivery_dropped_total",
            &["sink=\"webhook\""]
        ) > 0.0,
        "more alerts than the queue (2) holds plus one in flight: the oldest are dropped"
    );

    // The receiver comes back: the retried event (and what the queue kept) get through.
    receiver.hang.store(false, Ordering::SeqCst);
    receiver.wait_for(1, Duration::from_secs(15)).await;

    shutdown_sender.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("service stops within the delivery grace period")
        .unwrap()
        .unwrap();
}
