//! `gridwatch dlq replay` against a REAL Kafka-protocol broker: tansu 0.6 (see
//! `tests/it/support/tansu.rs`). Dead letters are put on a multi-partition dead-letter topic in
//! exactly the format the service's Kafka sink writes
//! ([`gridwatch::sink::kafka::dead_letter_record`]), then replayed.
//!
//! Under `CI=true` a missing broker fails the tests; otherwise they print
//! "skipping: tansu not installed" and pass.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::tansu::{consume_topic, header_text, tansu_binary, TansuBroker};
use gridwatch::kafka::owned_headers;
use gridwatch::proto::{DeadLetter, IncidentEvent};
use gridwatch::sink::kafka::dead_letter_record;
use gridwatch::tools::dlq_replay::{
    replay_dead_letters, ReasonFilter, ReplayOptions, ReplaySummary,
};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The dead-letter topic of the tests.
const DEAD_LETTER_TOPIC: &str = "gridwatch.deadletter.v1";
/// Partitions of the dead-letter topic; the last one stays empty.
const DEAD_LETTER_PARTITIONS: i32 = 4;
/// The gridwatch input topic the dead letters came from.
const INPUT_TOPIC: &str = "gridwatch.events.v1";

/// Runs the tests of this file one at a time: each picks its broker's port by binding port 0
/// and releasing it (tests/it/support/tansu.rs), and librdkafka's mock cluster binds ephemeral
/// ports too, so parallel tests could race for a port (a full-suite run once found its
/// broker's address refusing connections mid-test).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One dead letter put on the topic, and where it landed.
#[derive(Debug, Clone)]
struct PlacedDeadLetter {
    /// Its reason header.
    reason: String,
    /// The record key (gridwatch writes none; one record gets a key as another writer would).
    key: Option<String>,
    /// The record value.
    value: Vec<u8>,
    /// Whether the sink's headers say where the original came from (`source`).
    source: String,
    /// `<topic>/<partition>/<offset>` on the dead-letter topic.
    location: String,
}

/// The dead letters of the tests: several reasons, Kafka and simulator sources, protobuf,
/// JSON and garbage payloads.
fn dead_letters() -> Vec<(DeadLetter, Option<&'static str>)> {
    let event = IncidentEvent {
        event_id: "evt-unknown-grid".to_string(),
        grid_id: "41069999999999".to_string(),
        ..IncidentEvent::default()
    };
    let protobuf_event = prost::Message::encode_to_vec(&event);
    let json_event = serde_json::to_vec(&event).unwrap();
    let dead_letter = |reason: &str, payload: Vec<u8>, source: &str, offset: u64| DeadLetter {
        reason: reason.to_string(),
        detail: format!("test {reason}"),
        payload,
        source: source.to_string(),
        position: format!("partition 0 position {offset}"),
        event_id: String::new(),
    };
    vec![
        (
            dead_letter("unknown_grid", protobuf_event.clone(), "kafka", 10),
            None,
        ),
        (
            dead_letter("invalid_json", b"{\"event_id\": ".to_vec(), "kafka", 11),
            None,
        ),
        (
            dead_letter("unknown_grid", protobuf_event, "kafka", 12),
            Some("41069999999999"),
        ),
        (
            dead_letter("late", b"late event bytes".to_vec(), "kafka", 13),
            None,
        ),
        (
            dead_letter(
                "invalid_protobuf",
                vec![0xff, 0xff, 0x00, 0x01],
                "kafka",
                14,
            ),
            None,
        ),
        (
            dead_letter("unknown_grid", json_event, "simulator", 15),
            None,
        ),
        (
            dead_letter("late", b"another late event".to_vec(), "kafka", 16),
            None,
        ),
        (
            dead_letter("unknown_grid", b"third unknown grid".to_vec(), "kafka", 17),
            None,
        ),
    ]
}

/// Starts tansu with the dead-letter topic (4 partitions) and `targets` (1 partition each),
/// and puts [`dead_letters`] on partitions 0..=2 round-robin, as the sink formats them.
async fn broker_with_dead_letters(
    binary: &std::path::Path,
    targets: &[&str],
) -> (TansuBroker, Vec<PlacedDeadLetter>) {
    let broker = TansuBroker::start(binary);
    broker.create_topic(DEAD_LETTER_TOPIC, DEAD_LETTER_PARTITIONS as u32);
    for target in targets {
        broker.create_topic(target, 1);
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut placed = Vec::new();
    for (index, (dead_letter, key)) in dead_letters().into_iter().enumerate() {
        let output =
            dead_letter_record(&dead_letter, DEAD_LETTER_TOPIC, &[INPUT_TOPIC.to_string()]);
        assert_eq!(output.key, None, "the sink writes dead letters without key");
        let headers = owned_headers(&output.headers);
        let partition = (index % 3) as i32;
        let mut record = FutureRecord::to(&output.topic)
            .partition(partition)
            .payload(output.value.as_slice())
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .unwrap();
        assert_eq!(delivery.partition, partition);
        let offset = delivery.offset;
        placed.push(PlacedDeadLetter {
            reason: dead_letter.reason.clone(),
            key: key.map(str::to_string),
            value: output.value.clone(),
            source: dead_letter.source.clone(),
            location: format!("{DEAD_LETTER_TOPIC}/{partition}/{offset}"),
        });
    }
    (broker, placed)
}

/// Replays with the library function on a blocking thread.
async fn replay(options: ReplayOptions) -> ReplaySummary {
    tokio::task::spawn_blocking(move || replay_dead_letters(&options))
        .await
        .expect("replay task")
        .expect("replay succeeds")
}

/// Checks that `target` holds exactly the dead letters of `reasons`, each once, with its
/// bytes, key, trace header and the content-type its headers imply.
fn assert_target_holds_exactly(
    brokers: &str,
    target: &str,
    placed: &[PlacedDeadLetter],
    reasons: &[&str],
) {
    let expected: BTreeMap<&str, &PlacedDeadLetter> = placed
        .iter()
        .filter(|dead_letter| reasons.contains(&dead_letter.reason.as_str()))
        .map(|dead_letter| (dead_letter.location.as_str(), dead_letter))
        .collect();
    let replayed = consume_topic(brokers, target, expected.len());
    assert_eq!(
        replayed.len(),
        expected.len(),
        "{target} holds {} records, expected the {} dead letters of {reasons:?}",
        replayed.len(),
        expected.len()
    );
    let mut seen = BTreeMap::new();
    for message in &replayed {
        let trace = header_text(message, "gridwatch_replayed_from").expect("trace header");
        let original = expected
            .get(trace.as_str())
            .unwrap_or_else(|| panic!("{trace} was replayed but is not one of {reasons:?}"));
        assert_eq!(
            message.payload(),
            Some(original.value.as_slice()),
            "{trace}"
        );
        assert_eq!(
            message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            original.key,
            "{trace}"
        );
        let expected_content_type = match (original.reason.as_str(), original.source.as_str()) {
            ("invalid_json", _) | (_, "simulator") => Some("application/json"),
            ("invalid_protobuf", _) => Some("application/x-protobuf"),
            _ => None,
        };
        assert_eq!(
            header_text(message, "content-type").as_deref(),
            expected_content_type,
            "{trace}"
        );
        assert_eq!(
            header_text(message, "reason"),
            None,
            "dead-letter headers stay behind"
        );
        *seen.entry(trace).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|count| *count == 1),
        "a dead letter was replayed twice: {seen:?}"
    );
}

/// `text` without ANSI color sequences (`ESC [ ... m`), as the text log writes them.
fn without_ansi_colors(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            for skipped in characters.by_ref() {
                if skipped == 'm' {
                    break;
                }
            }
            continue;
        }
        plain.push(character);
    }
    plain
}

/// `--reason unknown_grid` replays exactly the `unknown_grid` dead letters of every partition
/// (an empty partition included) with identical bytes and keys and the trace header; the real
/// binary with two reasons does the same for both and prints the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_copies_exactly_the_selected_reasons_with_bytes_keys_and_trace() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Some(binary) = tansu_binary() else {
        return;
    };
    let library_target = "gridwatch.events.replayed";
    let binary_target = "gridwatch.events.replayed.cli";
    let (broker, placed) =
        broker_with_dead_letters(&binary, &[library_target, binary_target]).await;

    let mut options = ReplayOptions::new(&broker.address, DEAD_LETTER_TOPIC, library_target);
    options.reasons = ReasonFilter::only(["unknown_grid"]);
    options.stall_timeout = Duration::from_secs(20);
    let summary = tokio::time::timeout(Duration::from_secs(60), replay(options))
        .await
        .expect("replay finishes within 60 s");
    assert_eq!(summary.partitions, DEAD_LETTER_PARTITIONS as usize);
    assert_eq!(summary.read, 8);
    assert_eq!(summary.matched, 4);
    assert_eq!(summary.replayed, 4);
    assert!(!summary.dry_run);
    assert_eq!(
        ReplaySummary::reason_counts_text(&summary.read_by_reason),
        "invalid_json=1,invalid_protobuf=1,late=2,unknown_grid=4"
    );
    assert_eq!(
        ReplaySummary::reason_counts_text(&summary.matched_by_reason),
        "unknown_grid=4"
    );
    assert_target_holds_exactly(&broker.address, library_target, &placed, &["unknown_grid"]);

    let address = broker.address.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .args(["dlq", "replay", "--brokers", &address])
            .args(["--from", DEAD_LETTER_TOPIC, "--to", binary_target])
            .args(["--reason", "unknown_grid", "--reason", "invalid_json"])
            .args(["--property", "client.id=dlq-test", "--stall-timeout", "20s"])
            .output()
            .expect("run gridwatch dlq replay")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = without_ansi_colors(&String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "dlq replay failed: {stderr}");
    assert!(
        stdout.contains(&format!(
            "read 8 dead letters from {DEAD_LETTER_TOPIC} (4 partitions), 5 matched, 5 replayed to {binary_target}"
        )),
        "stdout: {stdout}"
    );
    assert!(
        stderr.contains("dead-letter replay finished")
            && stderr.contains("read=8 matched=5 replayed=5 dry_run=false")
            && stderr.contains("matched_by_reason=invalid_json=1,unknown_grid=4"),
        "structured summary line in the log: {stderr}"
    );
    assert_target_holds_exactly(
        &broker.address,
        binary_target,
        &placed,
        &["unknown_grid", "invalid_json"],
    );
}

/// `--dry-run` reports the counts and produces nothing; replaying into the dead-letter topic
/// itself is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_counts_and_produces_nothing() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Some(binary) = tansu_binary() else {
        return;
    };
    let target = "gridwatch.events.dry";
    let (broker, _placed) = broker_with_dead_letters(&binary, &[target]).await;

    let mut options = ReplayOptions::new(&broker.address, DEAD_LETTER_TOPIC, target);
    options.reasons = ReasonFilter::only(["unknown_grid", "late"]);
    options.dry_run = true;
    options.stall_timeout = Duration::from_secs(20);
    let summary = tokio::time::timeout(Duration::from_secs(60), replay(options))
        .await
        .expect("dry run finishes within 60 s");
    assert!(summary.dry_run);
    assert_eq!(summary.read, 8);
    assert_eq!(summary.matched, 6);
    assert_eq!(summary.replayed, 0);
    assert_eq!(
        ReplaySummary::reason_counts_text(&summary.matched_by_reason),
        "late=2,unknown_grid=4"
    );
    assert!(summary.to_string().contains("dry run: none replayed"));
    // A sentinel after the dry run: anything the dry run had produced would come before it.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to(target).payload("sentinel"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
    let produced = consume_topic(&broker.address, target, 1);
    let payloads: Vec<Option<&[u8]>> = produced.iter().map(|message| message.payload()).collect();
    assert_eq!(
        payloads,
        vec![Some(b"sentinel".as_slice())],
        "a dry run produces nothing"
    );

    let mut into_itself = ReplayOptions::new(&broker.address, DEAD_LETTER_TOPIC, DEAD_LETTER_TOPIC);
    into_itself.stall_timeout = Duration::from_secs(20);
    let refused = replay_dead_letters(&into_itself).expect_err("replaying into itself is refused");
    assert!(refused.to_string().contains("into itself"), "{refused}");
}

/// A record the broker refuses fails the replay with an error naming the dead letter (the
/// CLI exits non-zero with it). librdkafka's in-process mock cluster refuses the produce
/// requests: tansu auto-creates topics and accepts every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_delivery_fails_the_replay_naming_the_dead_letter() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock_cluster = MockCluster::new(1).unwrap();
    let target = "gridwatch.events.refused";
    mock_cluster.create_topic(DEAD_LETTER_TOPIC, 1, 1).unwrap();
    mock_cluster.create_topic(target, 1, 1).unwrap();
    let brokers = mock_cluster.bootstrap_servers();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let (dead_letter, _key) = dead_letters().remove(0);
    let output = dead_letter_record(&dead_letter, DEAD_LETTER_TOPIC, &[INPUT_TOPIC.to_string()]);
    let headers = owned_headers(&output.headers);
    producer
        .send(
            FutureRecord::<str, [u8]>::to(DEAD_LETTER_TOPIC)
                .payload(output.value.as_slice())
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
    mock_cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );

    let mut options = ReplayOptions::new(&brokers, DEAD_LETTER_TOPIC, target);
    options.stall_timeout = Duration::from_secs(20);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || replay_dead_letters(&options)),
    )
    .await
    .expect("the replay ends within 60 s")
    .expect("replay task");
    let error = outcome.expect_err("a refused record fails the replay");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "the replay of dead letter {DEAD_LETTER_TOPIC}/0/0 to {target} was not delivered"
        )),
        "{message}"
    );
}
