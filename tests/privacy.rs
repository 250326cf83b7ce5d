//! Privacy that holds: a corpus of phone and ID-card numbers, in every format and every
//! position an event can carry them (attribute keys and values, free text, event ids, device
//! ids, the source, bad JSON, bad protobuf), never appears in clear in any output: the replay
//! output files (dead-letter payloads decoded), the binary's stdout and stderr, and — for the
//! running service — its logs, `/metrics` and `/api/v1/*`; and, through a Kafka-protocol
//! broker (tansu), the output topics' values and headers.

#[path = "it/support/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use gridwatch::config::{Config, SourceKind};
use gridwatch::decode::InputFormat;
use gridwatch::proto::IncidentEvent;
use prost::Message;

use common::tansu::{consume_topic, fast_group_join_properties, tansu_binary, TansuBroker};
use common::{get_text, metric_value, InProcessService};

/// A registered grid cell of the embedded seeds.
const GRID_ID: &str = "41060200100101";

/// Every number of the corpus, as planted (the spelling) and in national digits.
const CORPUS: [(&str, &str); 12] = [
    ("13800138000", "13800138000"),
    ("+8613800138001", "13800138001"),
    ("0086 138 0013 8002", "13800138002"),
    ("138-0013-8003", "13800138003"),
    ("138 0013 8004", "13800138004"),
    ("13800138005", "13800138005"), // planted as a JSON number
    ("010-62345678", "01062345678"),
    ("0371 6888 1234", "037168881234"),
    ("+86 21 5555 6666", "02155556666"),
    ("110101199003078515", "110101199003078515"),
    ("44030419851231002X", "44030419851231002X"),
    ("13800138011", "13800138011"), // behind a forged `pseudo:` prefix
];

fn spelling(index: usize) -> &'static str {
    CORPUS.get(index).map(|(planted, _)| *planted).unwrap_or("")
}

/// JSON lines: accepted events with numbers in every field, rejected-but-decoded events, and
/// lines that do not decode at all.
fn jsonl_corpus() -> String {
    let at = "2026-03-02T08:00:05Z";
    let accepted = |event_id: String, device_id: &str, attributes: serde_json::Value| {
        serde_json::json!({
            "event_id": event_id,
            "source": format!("gateway {}", spelling(3)),
            "grid_id": GRID_ID,
            "device_id": device_id,
            "event_type": "FIRE_SMOKE",
            "occurred_at": at,
            "attributes": attributes,
        })
        .to_string()
    };
    let mut lines = vec![
        accepted(
            format!("evt-{}", spelling(0)),
            spelling(1),
            serde_json::json!({
                "tel": spelling(2),
                "联系电话": spelling(6),
                "手机": spelling(4),
                spelling(9): "an id number as a key",
                "note": format!("请回电 {} 或 {}，身份证 {}", spelling(3), spelling(7), spelling(10)),
                "victim_mobile": format!("pseudo:{}", spelling(11)),
                "forged": format!("pseudo:k1:{}", spelling(11)),
            }),
        ),
        accepted(
            format!("evt-{}", spelling(8)),
            spelling(9),
            serde_json::json!({ "contact": spelling(10), "channel": "96110" }),
        ),
        // Decoded but rejected (severity out of range): the dead letter re-encodes the event.
        serde_json::json!({
            "event_id": format!("bad-severity-{}", spelling(0)),
            "grid_id": GRID_ID,
            "event_type": "SOS",
            "severity": 7,
            "occurred_at": at,
            "attributes": { "电话": spelling(1), "free": spelling(7) },
        })
        .to_string(),
        // Unknown grid: the detail used to echo the grid id and device id.
        serde_json::json!({
            "event_id": "unknown-grid",
            "grid_id": spelling(9),
            "device_id": spelling(0),
            "event_type": "SOS",
            "occurred_at": at,
        })
        .to_string(),
        // Unknown event type spelled as a number.
        format!(
            r#"{{"event_id":"e-type","event_type":"{}","occurred_at":"{at}"}}"#,
            spelling(3)
        ),
        // A JSON number where a string belongs, and a truncated line.
        format!(
            r#"{{"event_id":"e-number","event_type":"SOS","occurred_at":"{at}","attributes":{{"phone":{}}}}}"#,
            spelling(5)
        ),
        format!(
            r#"{{"event_id":"{}","attributes":{{"tel":"{}""#,
            spelling(0),
            spelling(6)
        ),
        // A string where a number belongs: serde's message would quote it.
        format!(
            r#"{{"event_id":"e-severity","event_type":"SOS","severity":"{}","occurred_at":"{at}"}}"#,
            spelling(7)
        ),
    ];
    lines.push(String::new());
    lines.join("\n")
}

/// Length-delimited protobuf: an accepted event full of numbers, then a frame whose message
/// does not decode but carries numbers in its bytes.
fn protobuf_corpus() -> Vec<u8> {
    let event = IncidentEvent {
        event_id: format!("pb-{}", spelling(0)),
        source: spelling(8).to_string(),
        device_id: spelling(1).to_string(),
        grid_id: GRID_ID.to_string(),
        event_type: gridwatch::proto::EventType::FireSmoke as i32,
        occurred_at: Some(gridwatch::time::millis_to_timestamp(
            gridwatch::time::rfc3339_to_millis("2026-03-02T08:00:05Z").unwrap(),
        )),
        attributes: [
            ("tel".to_string(), spelling(2).to_string()),
            ("note".to_string(), format!("call {}", spelling(3))),
            (spelling(10).to_string(), "key".to_string()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let mut bytes = event.encode_length_delimited_to_vec();
    // Field 1 (string) announcing 100 bytes but holding fewer: does not decode.
    let mut broken = vec![0x0a, 100];
    broken.extend_from_slice(format!("{} {}", spelling(4), spelling(9)).as_bytes());
    prost::encoding::encode_varint(broken.len() as u64, &mut bytes);
    bytes.extend_from_slice(&broken);
    bytes
}

/// Every text of `directory`'s output files, with dead-letter payloads base64-decoded.
fn output_texts(directory: &Path) -> String {
    let mut texts = String::new();
    for path in gridwatch::replay::output_files(directory) {
        let Ok(content) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in content.lines() {
            texts.push_str(line);
            texts.push('\n');
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(payload) = value.get("payload").and_then(serde_json::Value::as_str) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .expect("payloads are base64");
                texts.push_str(&String::from_utf8_lossy(&decoded));
                texts.push('\n');
            }
        }
    }
    texts
}

/// Panics naming every corpus number found in `haystack` (from `origin`).
fn assert_no_number_in_clear(origin: &str, haystack: &str) {
    let leaked: Vec<&str> = CORPUS
        .iter()
        .flat_map(|(planted, national)| [*planted, *national])
        .filter(|number| haystack.contains(number))
        .collect();
    assert!(
        leaked.is_empty(),
        "{origin} shows {leaked:?} in clear:\n{haystack}"
    );
}

#[test]
fn no_phone_or_id_number_survives_a_replay_in_any_position_or_format() {
    let directory = tempfile::tempdir().unwrap();
    for (format, file_name, bytes) in [
        ("jsonl", "corpus.jsonl", jsonl_corpus().into_bytes()),
        ("protobuf", "corpus.pb", protobuf_corpus()),
    ] {
        let input = directory.path().join(file_name);
        std::fs::write(&input, bytes).unwrap();
        let output_directory = directory.path().join(format!("out-{format}"));
        let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .env("RUST_LOG", "trace")
            // The corpus is hostile on purpose: most records are dead-lettered.
            .args([
                "replay",
                "--no-progress",
                "--max-rejected-share",
                "1",
                "--format",
                format,
                "--input",
            ])
            .arg(&input)
            .arg("--output-dir")
            .arg(&output_directory)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        let outputs = output_texts(&output_directory);
        assert!(outputs.contains("pseudo:k1:"), "{outputs}");
        assert!(
            outputs.contains("\"reason\":\"invalid_") && outputs.contains("alert"),
            "the corpus reaches dead letters and alerts:\n{outputs}"
        );
        assert_no_number_in_clear(&format!("{format} replay outputs"), &outputs);
        assert_no_number_in_clear(&format!("{format} replay stdout"), &stdout);
        assert_no_number_in_clear(&format!("{format} replay stderr"), &stderr);
    }
}

/// A `tracing` writer that keeps every log line of this test binary.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_phone_or_id_number_reaches_the_running_services_logs_metrics_or_api() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("corpus.jsonl");
    let corpus = jsonl_corpus();
    std::fs::write(&input, &corpus).unwrap();
    let mut config = Config::default();
    config.source.kind = SourceKind::File;
    config.file.path = Some(input);
    config.file.format = InputFormat::Jsonl;
    config.output.dir = Some(directory.path().join("out"));
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    let records = corpus.lines().count() as f64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (status, body) = get_text(&client, &service.url("/metrics")).await;
        let received = metric_value(&body, "gridwatch_events_received_total", &[]);
        if status == 200 && received == Some(records) {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the corpus is not consumed: {received:?} of {records}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_no_number_in_clear("/metrics", &metrics);
    for path in [
        "/api/v1/cells?top=100",
        &format!("/api/v1/cells/{GRID_ID}"),
        "/api/v1/alerts",
        "/api/v1/fraud",
    ] {
        let (status, body) = get_text(&client, &service.url(path)).await;
        assert!(status < 500, "{path}: {status} {body}");
        assert_no_number_in_clear(path, &body);
    }
    // The API reads the live view the pipeline publishes about once a second: wait for the
    // corpus's alert to appear there.
    let alerts = common::wait_for_body(
        &client,
        &service.url("/api/v1/alerts"),
        Duration::from_secs(10),
        |body| body.contains("pseudo:k1:"),
    )
    .await;
    assert_no_number_in_clear("/api/v1/alerts", &alerts);
    service.stop().await;
    assert_no_number_in_clear(
        "service outputs",
        &output_texts(&directory.path().join("out")),
    );
    let captured = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        captured.contains("gridwatch"),
        "logs are captured: {captured}"
    );
    assert_no_number_in_clear("service logs", &captured);
}

/// The records of `topic` (partition 0) as text: values, keys and every header.
fn topic_texts(brokers: &str, topic: &str, expected: usize) -> (usize, String) {
    use rdkafka::message::{Headers, Message};
    let messages = consume_topic(brokers, topic, expected);
    let mut texts = String::new();
    for message in &messages {
        for bytes in [message.payload(), message.key()].into_iter().flatten() {
            texts.push_str(&String::from_utf8_lossy(bytes));
            texts.push('\n');
        }
        for header in message
            .headers()
            .into_iter()
            .flat_map(|headers| headers.iter())
        {
            texts.push_str(header.key);
            texts.push('=');
            texts.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
            texts.push('\n');
        }
    }
    (messages.len(), texts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_phone_or_id_number_reaches_a_kafka_output_topic_or_header() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    let input_topic = "privacy.events";
    for topic in [
        input_topic,
        "gridwatch.windows.v1",
        "gridwatch.alerts.v1",
        "gridwatch.deadletter.v1",
        "gridwatch.state.v1",
    ] {
        broker.create_topic(topic, 1);
    }
    let corpus = jsonl_corpus();
    let records: Vec<&str> = corpus.lines().collect();
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.address)
            .create()
            .unwrap();
        for record in &records {
            producer
                .send(BaseRecord::<(), str>::to(input_topic).payload(*record))
                .unwrap();
        }
        producer.flush(Duration::from_secs(20)).unwrap();
    }
    let mut config = Config::default();
    config.source.kind = SourceKind::Kafka;
    config.kafka.brokers = broker.address.clone();
    config.kafka.group_id = "privacy".to_string();
    config.kafka.topics = vec![input_topic.to_string()];
    config.kafka.format = gridwatch::config::KafkaPayloadFormat::Json;
    config.kafka.properties = fast_group_join_properties();
    config.kafka.sinks.enabled = true;
    config.privacy.pseudonymization_key = "a key only this test knows".into();
    config.validate().unwrap();
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get_text(&client, &service.url("/metrics")).await;
        let received = metric_value(
            &body,
            "gridwatch_events_received_total",
            &["source=\"kafka\""],
        );
        if received == Some(records.len() as f64) {
            assert_no_number_in_clear("/metrics (kafka)", &body);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the corpus is not consumed: {received:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    service.stop().await;
    let (dead_letters, dead_letter_texts) =
        topic_texts(&broker.address, "gridwatch.deadletter.v1", 6);
    assert!(dead_letters >= 6, "{dead_letter_texts}");
    assert!(dead_letter_texts.contains("detail="), "{dead_letter_texts}");
    assert_no_number_in_clear("dead-letter topic", &dead_letter_texts);
    let (alerts, alert_texts) = topic_texts(&broker.address, "gridwatch.alerts.v1", 1);
    assert!(alerts >= 1, "the fire events raise an alert");
    assert_no_number_in_clear("alerts topic", &alert_texts);
    let (_, window_texts) = topic_texts(&broker.address, "gridwatch.windows.v1", 0);
    assert_no_number_in_clear("windows topic", &window_texts);
}
