//! The city-wide read model over Kafka, against a real Kafka-protocol broker (tansu 0.6, see
//! `support::tansu`): every instance reads gridwatch's output topics outside the consumer
//! group, so every instance shows the whole city, whichever input partitions it owns, and
//! keeps showing it when an instance dies and its partitions move.
//!
//! Under `CI=true` a missing broker fails the tests; otherwise they print
//! "skipping: tansu not installed" and pass.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::tansu::{
    checking_consumer, fast_group_join_properties, tansu_binary, TansuBroker,
};
use crate::support::{metric_sum, metric_value, START_MILLIS};
use gridwatch::config::{Config, KafkaPayloadFormat, SourceKind};
use gridwatch::grid::GridRegistry;
use gridwatch::read_model::kafka_feed::{KafkaFeed, KafkaFeedSettings, StartOffset, TopicKind};
use gridwatch::read_model::OutputRecord;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::tools::produce::{produce_simulated, ProduceOptions};

const INPUT_TOPIC: &str = "gridwatch.events.v1";
const WINDOWS_TOPIC: &str = "gridwatch.windows.v1";
const ALERTS_TOPIC: &str = "gridwatch.alerts.v1";
const STATUS_TOPIC: &str = "gridwatch.status.v1";
const INPUT_PARTITIONS: u32 = 6;

/// Creates `topic` compacted (`cleanup.policy=compact`) when tansu takes the setting, else
/// plain; says which.
fn create_compacted_topic(broker: &TansuBroker, topic: &str, partitions: u32) -> bool {
    let output = Command::new(&broker.binary)
        .args(["topic", "create", topic])
        .arg(format!("--broker=tcp://{}", broker.address))
        .arg(format!("--partitions={partitions}"))
        .arg("--config=cleanup.policy=compact")
        .output()
        .expect("run tansu topic create");
    if output.status.success() {
        return true;
    }
    println!(
        "tansu refused cleanup.policy=compact ({}); creating {topic} plain",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    broker.create_topic(topic, partitions);
    false
}

/// A gridwatch service in this process, which can be stopped cleanly or aborted.
struct Member {
    name: String,
    base_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), gridwatch::service::ServiceError>>>,
}

impl Member {
    async fn start(config: Config, name: &str) -> Member {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gridwatch::service::run(config, listener, async move {
            let _ = shutdown_receiver.await;
        }));
        Member {
            name: name.to_string(),
            base_url,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> (u16, String) {
        match client
            .get(format!("{}{path}", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    async fn metrics(&self, client: &reqwest::Client) -> String {
        self.get(client, "/metrics").await.1
    }

    /// Ends the service without its shutdown: no last snapshot, no commit, no tombstone
    /// (its consumer and reader threads notice they were dropped and stop).
    async fn abort(mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        let _ = task.await;
        println!("{} aborted", self.name);
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the service stops within 30 s")
            .expect("service task")
            .expect("the service ends without error");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The config of member `name` of `group_id`: Kafka source and outputs (status topic on),
/// quick group joins, snapshots every second.
fn member_config(brokers: &str, group_id: &str, name: &str) -> Config {
    let mut config = Config::default();
    config.source.kind = SourceKind::Kafka;
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = group_id.to_string();
    config.kafka.topics = vec![INPUT_TOPIC.to_string()];
    config.kafka.properties = fast_group_join_properties();
    config.kafka.snapshot_interval = Duration::from_secs(1);
    config.kafka.sinks.enabled = true;
    config.alerting.instance = name.to_string();
    config.privacy.allow_builtin_key = true;
    config.validate().unwrap();
    config
}

/// Records on the windows and alerts topics (one partition each), and the newest one's
/// timestamp (when its producer sent it), epoch millis.
fn output_topic_totals(consumer: &rdkafka::consumer::BaseConsumer) -> (i64, Option<i64>) {
    let mut total = 0;
    let mut newest: Option<i64> = None;
    for topic in [WINDOWS_TOPIC, ALERTS_TOPIC] {
        let (_low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(5))
            .unwrap();
        total += high;
        if high > 0 {
            if let Some(timestamp) = record_timestamp(consumer, topic, high - 1) {
                newest = Some(newest.map_or(timestamp, |other: i64| other.max(timestamp)));
            }
        }
    }
    (total, newest)
}

/// The timestamp of the record at `offset` of partition 0 of `topic`.
fn record_timestamp(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    offset: i64,
) -> Option<i64> {
    use rdkafka::message::Message;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            if message.offset() == offset {
                return message.timestamp().to_millis();
            }
        }
    }
    None
}

/// Output records (windows and alerts) a member's read model received, applied or not.
fn received_outputs(metrics: &str) -> f64 {
    ["window", "alert"]
        .iter()
        .map(|kind| {
            metric_sum(
                metrics,
                "gridwatch_read_model_records_total",
                &[&format!("kind=\"{kind}\"")],
            )
        })
        .sum()
}

/// Waits until the output topics stop growing (3 s without a new record) and every member's
/// read model received all of their records; returns the totals, the newest record's time,
/// and the lag: when every member had received them all, minus when the newest was produced.
async fn wait_until_caught_up(
    members: &[&Member],
    client: &reqwest::Client,
    consumer: &rdkafka::consumer::BaseConsumer,
    timeout: Duration,
) -> (i64, i64, Duration) {
    let deadline = Instant::now() + timeout;
    let mut last_total = -1;
    let mut stable_since = Instant::now();
    // When each member first held each count.
    let mut first_seen: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(); members.len()];
    loop {
        let (total, newest) = output_topic_totals(consumer);
        if total != last_total {
            last_total = total;
            stable_since = Instant::now();
        }
        let now_millis = gridwatch::time::wall_clock_millis();
        let mut counts = Vec::new();
        for (index, member) in members.iter().enumerate() {
            let count = received_outputs(&member.metrics(client).await) as i64;
            first_seen[index].entry(count).or_insert(now_millis);
            counts.push(count);
        }
        if stable_since.elapsed() >= Duration::from_secs(3)
            // At least: a reader re-positioned after a metadata refresh may receive a record
            // twice (applying it again changes nothing).
            && counts.iter().all(|count| *count >= total)
        {
            let newest = newest.expect("output records were produced");
            let all_had_it = first_seen
                .iter()
                .map(|seen| {
                    seen.iter()
                        .filter(|(count, _)| **count >= total)
                        .map(|(_, at)| *at)
                        .min()
                        .unwrap()
                })
                .max()
                .unwrap();
            let lag = Duration::from_millis(u64::try_from(all_had_it - newest).unwrap_or(0));
            return (total, newest, lag);
        }
        assert!(
            Instant::now() < deadline,
            "the members' read models did not catch up: topics {total}, members {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `body` as JSON without the wall-time fields (`generated_at`, `last_seen`, `updated_at` of
/// instances…), which differ between instances by when they published.
fn without_wall_times(body: &str) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for key in ["generated_at", "as_of", "now"] {
                    map.remove(key);
                }
                for child in map.values_mut() {
                    strip(child);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: serde_json::Value =
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string()));
    strip(&mut value);
    value
}

/// The counts of a fraud report, per scope, sorted by place: what must agree between
/// instances. (The baseline's pro-rated share, the drop and its interval are functions of the
/// wall time each instance computed its report at, so they differ in the last digits.)
fn fraud_counts(report: &serde_json::Value) -> serde_json::Value {
    let entry_counts = |entry: &serde_json::Value| {
        serde_json::json!({
            "scope": entry["scope"],
            "district_code": entry["district_code"],
            "community_id": entry["community_id"],
            "cases_ytd": entry["cases_ytd"],
            "warnings": entry["warnings"],
            "dissuaded": entry["dissuaded"],
            "paired_dissuasions": entry["paired_dissuasions"],
            "population": entry["population"],
            "cases_streamed": entry["cases_streamed"],
            "cases_imported": entry["cases_imported"],
            "covered_days": entry["covered_days"],
            "status": entry["status"],
        })
    };
    let sorted = |entries: &serde_json::Value| {
        let mut counts: Vec<serde_json::Value> = entries
            .as_array()
            .map(|entries| entries.iter().map(entry_counts).collect())
            .unwrap_or_default();
        counts.sort_by_key(|entry| entry.to_string());
        serde_json::Value::Array(counts)
    };
    serde_json::json!({
        "year": report["year"],
        "city": entry_counts(&report["city"]),
        "districts": sorted(&report["districts"]),
        "communities": sorted(&report["communities"]),
        "split_communities": report["split_communities"],
    })
}

/// Whether the members' API answers from the city-wide read model (the contract's
/// `/api/v1/status` carries `read_model_lag_seconds`); until then it shows each instance's
/// own partitions and the body comparison is left out.
async fn api_reads_the_model(member: &Member, client: &reqwest::Client) -> bool {
    let (status, body) = member.get(client, "/api/v1/status").await;
    status == 200 && body.contains("read_model_lag_seconds")
}

/// The city paths compared across members.
const CITY_PATHS: [&str; 3] = [
    "/api/v1/alerts",
    "/api/v1/cells?top=20&view=1h",
    "/api/v1/fraud",
];

/// Waits (at most `timeout`) until every member answers each city path with the same body
/// (wall times aside); returns the bodies and how long it took.
async fn wait_for_equal_bodies(
    members: &[&Member],
    client: &reqwest::Client,
    timeout: Duration,
) -> (Vec<serde_json::Value>, Duration) {
    let started = Instant::now();
    loop {
        let mut per_path = Vec::new();
        let mut all_equal = true;
        for path in CITY_PATHS {
            let mut bodies = Vec::new();
            for member in members {
                let (status, body) = member.get(client, path).await;
                assert_eq!(status, 200, "{} {path}: {body}", member.name);
                let body = without_wall_times(&body);
                bodies.push(if path == "/api/v1/fraud" {
                    fraud_counts(&body)
                } else {
                    body
                });
            }
            if bodies.windows(2).any(|pair| pair[0] != pair[1]) {
                all_equal = false;
                if started.elapsed() >= timeout {
                    for (member, body) in members.iter().zip(&bodies) {
                        println!("{} {path}:\n{body}", member.name);
                    }
                    panic!("the members disagree on {path}");
                }
            }
            per_path.push(bodies.swap_remove(0));
        }
        if all_equal {
            return (per_path, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `events` more events of `simulator` to the input topic, all acknowledged.
async fn produce(brokers: &str, simulator: &mut Simulator, events: u64) {
    let options = ProduceOptions {
        brokers: brokers.to_string(),
        topic: INPUT_TOPIC.to_string(),
        events: Some(events),
        rate_per_second: None,
        format: KafkaPayloadFormat::Protobuf,
        properties: Default::default(),
    };
    let sent = produce_simulated(&options, simulator).await.unwrap();
    assert_eq!(sent, events);
}

/// The unlabelled metric `name` of each member, in order.
async fn each_metric(
    members: impl IntoIterator<Item = &Member>,
    client: &reqwest::Client,
    name: &str,
) -> Vec<Option<f64>> {
    let mut values = Vec::new();
    for member in members {
        values.push(metric_value(&member.metrics(client).await, name, &[]));
    }
    values
}

/// Waits until each member owns `partitions` input partitions.
async fn wait_for_assignment(members: &[&Member], client: &reqwest::Client, partitions: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let owned = each_metric(
            members.iter().copied(),
            client,
            "gridwatch_kafka_assigned_partitions",
        )
        .await;
        if owned.iter().all(|count| *count == Some(partitions)) {
            println!("{} members own {partitions} partitions each", members.len());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle at {partitions} partitions each: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three instances in one group over six input partitions (two each): every instance's read
/// model receives every output record (all partitions' windows and alerts), and their
/// `/api/v1/alerts`, `/api/v1/cells?top=20&view=1h` and `/api/v1/fraud` agree; after one is
/// aborted and its partitions move, the two left still agree and still have the whole city.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_instance_shows_the_whole_city_and_keeps_showing_it_when_one_dies() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    broker.create_topic(INPUT_TOPIC, INPUT_PARTITIONS);
    broker.create_topic("gridwatch.state.v1", INPUT_PARTITIONS);
    for topic in [WINDOWS_TOPIC, ALERTS_TOPIC, "gridwatch.deadletter.v1"] {
        broker.create_topic(topic, 1);
    }
    let compacted = create_compacted_topic(&broker, STATUS_TOPIC, 1);
    println!("status topic created compacted: {compacted}");
    let group_id = "gridwatch-city";
    let client = reqwest::Client::new();
    let mut members = Vec::new();
    for number in 1..=3 {
        let name = format!("gw-{number}");
        members.push(Member::start(member_config(&broker.address, group_id, &name), &name).await);
    }
    let all: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&all, &client, 2.0).await;

    let settings = SimulatorSettings {
        seed: 23,
        start_millis: START_MILLIS,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, GridRegistry::embedded()).unwrap();
    produce(&broker.address, &mut simulator, 6_000).await;
    let checker = checking_consumer(&broker.address, "city-check", &[]);
    let (total, _newest, lag) =
        wait_until_caught_up(&all, &client, &checker, Duration::from_secs(120)).await;
    println!(
        "3 instances: all {total} output records (windows and alerts) received by every read model {:.0} ms after the newest was produced",
        lag.as_secs_f64() * 1000.0
    );
    assert!(total > 100, "too few outputs to compare: {total}");
    for member in &all {
        let metrics = member.metrics(&client).await;
        let fraud_partials = metric_sum(
            &metrics,
            "gridwatch_read_model_records_total",
            &["kind=\"fraud_partial\"", "result=\"applied\""],
        );
        assert!(
            fraud_partials >= 6.0,
            "{}: {fraud_partials} fraud partials",
            member.name
        );
        let undecodable = metric_sum(&metrics, "gridwatch_read_model_undecodable_total", &[]);
        assert_eq!(undecodable, 0.0, "{}", member.name);
    }
    let api_on_model = api_reads_the_model(&members[0], &client).await;
    if api_on_model {
        let (bodies, took) = wait_for_equal_bodies(&all, &client, Duration::from_secs(10)).await;
        println!(
            "3 instances answer the same alerts, cells and fraud ({:.0} ms after the read models had every record)",
            took.as_secs_f64() * 1000.0
        );
        let alerts = bodies[0]["alerts"].as_array().map_or(0, Vec::len);
        let cells = bodies[1]["cells"].as_array().map_or(0, Vec::len);
        assert!(alerts > 0 && cells > 0, "alerts {alerts}, cells {cells}");
    } else {
        println!(
            "the API does not answer from the read model on this branch yet (no read_model_lag_seconds in /api/v1/status): bodies not compared"
        );
    }

    let victim = members.remove(0);
    victim.abort().await;
    let survivors: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&survivors, &client, 3.0).await;
    produce(&broker.address, &mut simulator, 3_000).await;
    let (after, _newest, lag) =
        wait_until_caught_up(&survivors, &client, &checker, Duration::from_secs(120)).await;
    println!(
        "after the kill: all {after} output records received by both survivors {:.0} ms after the newest was produced",
        lag.as_secs_f64() * 1000.0
    );
    assert!(after > total, "the moved partitions produced more outputs");
    if api_on_model {
        let (_bodies, took) =
            wait_for_equal_bodies(&survivors, &client, Duration::from_secs(10)).await;
        println!(
            "2 survivors answer the same alerts, cells and fraud ({:.0} ms after their read models had every record)",
            took.as_secs_f64() * 1000.0
        );
        // Statuses are sent every 5 s: a survivor's first status after it took the victim's
        // partitions may still be on its way.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, status) = members[0].get(&client, "/api/v1/status").await;
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            let Some(partitions) = status["partitions_total"].as_u64() else {
                break;
            };
            if partitions == 6 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the whole city's partitions: {status}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for member in members {
        member.stop().await;
    }
}

/// A window record for the feed test.
fn window(grid_id: &str, count: u64) -> gridwatch::proto::CellWindow {
    gridwatch::proto::CellWindow {
        grid_id: grid_id.to_string(),
        count,
        ..gridwatch::proto::CellWindow::default()
    }
}

/// Sends one record and waits for its acknowledgement.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: Option<Vec<u8>>,
    timestamp_millis: i64,
) {
    let mut record: FutureRecord<'_, str, Vec<u8>> = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .timestamp(timestamp_millis);
    if let Some(value) = &value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}

/// The reader on its own: windows and alerts start at "now − lookback" (when the broker
/// answers offsets-for-times; from the beginning otherwise), the status topic at its
/// beginning; status keys become fraud partials of this group only, instance statuses and,
/// for a tombstone, the instance's departure; an undecodable record is counted and skipped;
/// the lag falls to 0 once everything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_starts_at_the_lookback_and_decodes_the_status_keys() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    broker.create_topic(WINDOWS_TOPIC, 2);
    broker.create_topic(ALERTS_TOPIC, 1);
    let compacted = create_compacted_topic(&broker, STATUS_TOPIC, 1);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let now = gridwatch::time::wall_clock_millis();
    let two_days_ago = now - 2 * 86_400_000;
    // Two cells: the reader resolves a window's grid in the registry it is given.
    let registry = GridRegistry::embedded();
    let (old_grid, new_grid) = (&registry.cells()[0].grid_id, &registry.cells()[1].grid_id);
    for partition in 0..2 {
        for count in 1..=3 {
            let old = window(old_grid, count).encode_to_vec();
            send(
                &producer,
                WINDOWS_TOPIC,
                partition,
                "k",
                Some(old),
                two_days_ago,
            )
            .await;
        }
        for count in 1..=2 {
            let new = window(new_grid, count).encode_to_vec();
            send(&producer, WINDOWS_TOPIC, partition, "k", Some(new), now).await;
        }
    }
    send(
        &producer,
        WINDOWS_TOPIC,
        0,
        "k",
        Some(vec![0xff, 0xff]),
        now,
    )
    .await;
    let alert = gridwatch::proto::Alert {
        fingerprint: "fp".to_string(),
        ..gridwatch::proto::Alert::default()
    };
    send(
        &producer,
        ALERTS_TOPIC,
        0,
        "fp",
        Some(alert.encode_to_vec()),
        now,
    )
    .await;
    let status = |id: &str| gridwatch::proto::InstanceStatus {
        instance_id: id.to_string(),
        ..gridwatch::proto::InstanceStatus::default()
    };
    let partial = |partition: &str| gridwatch::proto::FraudPartial {
        partition: partition.to_string(),
        ..gridwatch::proto::FraudPartial::default()
    };
    // Old status records are current all the same: the status topic is read whole.
    let status_records: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("instance/gw-1", Some(status("gw-1").encode_to_vec())),
        ("instance/gw-2", Some(status("gw-2").encode_to_vec())),
        ("instance/gw-2", None),
        (
            "fraud/g/events/0",
            Some(partial("events/0").encode_to_vec()),
        ),
        (
            "fraud/other/events/0",
            Some(partial("events/0").encode_to_vec()),
        ),
    ];
    for (key, value) in status_records {
        send(&producer, STATUS_TOPIC, 0, key, value, two_days_ago).await;
    }

    let metrics = Arc::new(gridwatch::metrics::Metrics::new(&["kafka"], "test").unwrap());
    let mut config = Config::default();
    config.kafka.brokers = broker.address.clone();
    config.kafka.group_id = "g".to_string();
    let settings = KafkaFeedSettings {
        topics: vec![
            (WINDOWS_TOPIC.to_string(), TopicKind::Windows),
            (ALERTS_TOPIC.to_string(), TopicKind::Alerts),
            (STATUS_TOPIC.to_string(), TopicKind::Status),
        ],
        group_id: "g".to_string(),
        lookback_millis: 86_400_000 + 60_000,
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
    let feed = KafkaFeed::start(
        &config.kafka,
        settings,
        registry.clone(),
        sender,
        metrics.clone(),
    )
    .unwrap();
    let mut records: Vec<OutputRecord> = Vec::new();
    let mut read_to_end_batches = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !(read_to_end_batches > 0 && records.iter().any(|r| matches!(r, OutputRecord::Alert(_))))
    {
        if let Ok(Some(batch)) =
            tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await
        {
            read_to_end_batches += usize::from(batch.read_to_end);
            records.extend(batch.records);
        }
    }
    // Anything still queued.
    while let Ok(batch) = receiver.try_recv() {
        read_to_end_batches += usize::from(batch.read_to_end);
        records.extend(batch.records);
    }
    assert_eq!(
        read_to_end_batches, 1,
        "one batch says every partition was read to its end"
    );
    assert_eq!(feed.lag().seconds(), 0.0);
    let starts = feed.start_offsets();
    println!("start offsets: {starts:?}");
    let answered = starts
        .iter()
        .filter(|((topic, _), _)| topic == WINDOWS_TOPIC)
        .all(|(_, start)| *start == StartOffset::At(3));
    println!(
        "offsets-for-times: {}; status topic compacted at creation: {compacted}",
        if answered {
            "answered (windows start after the two-day-old records)"
        } else {
            "not answered: windows and alerts read from the beginning"
        }
    );
    assert_eq!(
        starts.get(&(STATUS_TOPIC.to_string(), 0)),
        Some(&StartOffset::Beginning)
    );
    let window_cells: Vec<_> = records
        .iter()
        .filter_map(|record| match record {
            OutputRecord::Window(window) => Some(window.cell),
            _ => None,
        })
        .collect();
    let windows_of = |grid_id: &str| {
        let cell = registry.cell_by_grid_id(grid_id);
        assert!(cell.is_some());
        window_cells.iter().filter(|read| **read == cell).count()
    };
    let (new_windows, old_windows) = (windows_of(new_grid), windows_of(old_grid));
    assert_eq!(new_windows, 4, "{records:?}");
    assert_eq!(old_windows, if answered { 0 } else { 6 }, "{records:?}");
    assert_eq!(
        records
            .iter()
            .filter(|record| matches!(record, OutputRecord::Alert(_)))
            .count(),
        1
    );
    let status_records: Vec<&OutputRecord> = records
        .iter()
        .filter(|record| {
            matches!(
                record,
                OutputRecord::InstanceStatus(_)
                    | OutputRecord::InstanceGone { .. }
                    | OutputRecord::FraudPartial(_)
            )
        })
        .collect();
    assert_eq!(
        status_records,
        vec![
            &OutputRecord::InstanceStatus(status("gw-1")),
            &OutputRecord::InstanceStatus(status("gw-2")),
            &OutputRecord::InstanceGone {
                instance_id: "gw-2".to_string()
            },
            &OutputRecord::FraudPartial(partial("events/0")),
        ],
        "in order; the other group's partial is left out"
    );
    assert_eq!(
        metrics
            .read_model_undecodable
            .with_label_values(&[WINDOWS_TOPIC])
            .get(),
        1
    );
    assert_eq!(feed.lag().seconds(), 0.0, "caught up");
    assert_eq!(metrics.read_model_lag_seconds.get(), 0.0);
    tokio::task::spawn_blocking(move || feed.stop())
        .await
        .unwrap();
}

/// A member of a group whose outputs go to topics of its own (`<topic>.<suffix>`), so two
/// groups reading the same input can be compared.
fn isolated_member_config(brokers: &str, group_id: &str, name: &str, suffix: &str) -> Config {
    let mut config = member_config(brokers, group_id, name);
    config.kafka.state_topic = format!("gridwatch.state.v1.{suffix}");
    config.kafka.sinks.windows_topic = format!("{WINDOWS_TOPIC}.{suffix}");
    config.kafka.sinks.alerts_topic = format!("{ALERTS_TOPIC}.{suffix}");
    config.kafka.sinks.status_topic = format!("{STATUS_TOPIC}.{suffix}");
    config.kafka.sinks.dead_letter_topic = format!("gridwatch.deadletter.v1.{suffix}");
    config.validate().unwrap();
    config
}

/// The fraud-wave alerts of `/api/v1/alerts`, without what names the instance or the wall
/// time: rule, place, type, status, event times and statistics.
async fn fraud_wave_alerts(member: &Member, client: &reqwest::Client) -> Vec<serde_json::Value> {
    let (status, body) = member.get(client, "/api/v1/alerts?limit=500").await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut alerts: Vec<serde_json::Value> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| {
            alert["rule"]
                .as_str()
                .is_some_and(|rule| rule.starts_with("fraud_wave"))
        })
        .map(|alert| {
            serde_json::json!({
                "rule": alert["rule"],
                "community_id": alert["place"]["community_id"],
                "event_type": alert["event_type"],
                "status": alert["status"],
                "starts_at": alert["starts_at"],
                "ends_at": alert["ends_at"],
                "observed": alert["observed"],
                "expected": alert["expected"],
            })
        })
        .collect();
    alerts.sort_by_key(|alert| alert.to_string());
    alerts
}

/// Three instances over six partitions and one instance reading the same six partitions (its
/// own group and output topics) raise the same fraud-wave alerts and report the same fraud
/// counts and coverage: with the input keyed by community, every community's events meet in
/// one pipeline whatever the number of instances, and no community is split.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_and_one_raise_the_same_fraud_alerts_and_report() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    broker.create_topic(INPUT_TOPIC, INPUT_PARTITIONS);
    for suffix in ["three", "one"] {
        broker.create_topic(&format!("gridwatch.state.v1.{suffix}"), INPUT_PARTITIONS);
        for topic in [WINDOWS_TOPIC, ALERTS_TOPIC, "gridwatch.deadletter.v1"] {
            broker.create_topic(&format!("{topic}.{suffix}"), 1);
        }
        create_compacted_topic(&broker, &format!("{STATUS_TOPIC}.{suffix}"), 1);
    }
    let registry = GridRegistry::embedded();
    // Fraud waves in three communities (their events spread over the partitions by key).
    let scenarios = registry
        .communities()
        .iter()
        .step_by(50)
        .take(3)
        .map(
            |community| gridwatch::source::simulator::Scenario::FraudWave {
                community_id: community.id.clone(),
                start: gridwatch::source::simulator::ScenarioTime::AfterStart(20 * 60_000),
                duration: gridwatch::source::simulator::ScenarioDuration(2 * 3_600_000),
                multiplier: 400.0,
            },
        )
        .collect();
    let settings = SimulatorSettings {
        seed: 31,
        start_millis: START_MILLIS,
        scenarios,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, registry.clone()).unwrap();
    produce(&broker.address, &mut simulator, 20_000).await;

    let client = reqwest::Client::new();
    let mut three = Vec::new();
    for number in 1..=3 {
        let name = format!("gw-{number}");
        three.push(
            Member::start(
                isolated_member_config(&broker.address, "gridwatch-three", &name, "three"),
                &name,
            )
            .await,
        );
    }
    let one = Member::start(
        isolated_member_config(&broker.address, "gridwatch-one", "solo", "one"),
        "solo",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let (alerts, report) = loop {
        let solo_alerts = fraud_wave_alerts(&one, &client).await;
        let (_, solo_fraud) = one.get(&client, "/api/v1/fraud").await;
        let solo_fraud = fraud_counts(&without_wall_times(&solo_fraud));
        let mut agree = !solo_alerts.is_empty()
            && solo_fraud["city"]["cases_streamed"]
                .as_u64()
                .is_some_and(|cases| cases > 0);
        for member in &three {
            let (_, fraud) = member.get(&client, "/api/v1/fraud").await;
            agree &= fraud_wave_alerts(member, &client).await == solo_alerts
                && fraud_counts(&without_wall_times(&fraud)) == solo_fraud;
        }
        let lag_zero = {
            let mut all = true;
            for member in three.iter().chain(std::iter::once(&one)) {
                let metrics = member.metrics(&client).await;
                let lag = metric_sum(&metrics, "gridwatch_kafka_consumer_lag", &[]);
                let owned = metric_value(&metrics, "gridwatch_kafka_assigned_partitions", &[]);
                all &= lag == 0.0 && owned.is_some_and(|owned| owned > 0.0);
            }
            all
        };
        if agree && lag_zero {
            break (solo_alerts, solo_fraud);
        }
        if Instant::now() >= deadline {
            println!("solo alerts: {solo_alerts:#?}");
            for member in &three {
                println!(
                    "{} alerts: {:#?}",
                    member.name,
                    fraud_wave_alerts(member, &client).await
                );
            }
            // Which of the conditions held, and what each read model read and decided: to
            // tell a lagging feed from a record read and not shown.
            println!("solo city fraud counts: {}", solo_fraud["city"]);
            for member in three.iter().chain(std::iter::once(&one)) {
                let (_, fraud) = member.get(&client, "/api/v1/fraud").await;
                let fraud = fraud_counts(&without_wall_times(&fraud));
                for part in [
                    "year",
                    "city",
                    "districts",
                    "communities",
                    "split_communities",
                ] {
                    if fraud[part] != solo_fraud[part] {
                        println!("{} fraud {part} differ: {}", member.name, fraud[part]);
                    }
                }
                let metrics = member.metrics(&client).await;
                let lines: Vec<&str> = metrics
                    .lines()
                    .filter(|line| {
                        line.starts_with("gridwatch_read_model")
                            || line.starts_with("gridwatch_whole_city")
                            || line.starts_with("gridwatch_kafka_consumer_lag")
                            || line.starts_with("gridwatch_kafka_assigned_partitions")
                    })
                    .collect();
                println!("{} metrics: {lines:#?}", member.name);
            }
            panic!("three instances and one do not agree on the fraud alerts and report");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "3 instances and 1 agree: {} fraud-wave alert(s), city cases {} / warnings {}, observed {} days",
        alerts.len(),
        report["city"]["cases_ytd"],
        report["city"]["warnings"],
        report["city"]["covered_days"]
    );
    assert_eq!(
        report["split_communities"],
        serde_json::json!([]),
        "keyed by community: no split"
    );
    for member in three {
        member.stop().await;
    }
    one.stop().await;
}

/// `gridwatch fraud import` with Kafka outputs: the history goes to the compacted status topic
/// as `fraud/<group>/imported`, and a running instance's report takes it within seconds,
/// without a restart; importing it again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_reaches_running_instances_through_the_status_topic() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let now = gridwatch::time::wall_clock_millis();
    let (year, month) = gridwatch::fraud::calendar::local_year_month(now, 8);
    if month == 1 {
        println!("skipped in January: no past month of this year to import");
        return;
    }
    let broker = TansuBroker::start(&binary);
    broker.create_topic(INPUT_TOPIC, 2);
    broker.create_topic("gridwatch.state.v1.import", 2);
    for topic in [WINDOWS_TOPIC, ALERTS_TOPIC, "gridwatch.deadletter.v1"] {
        broker.create_topic(&format!("{topic}.import"), 1);
    }
    create_compacted_topic(&broker, &format!("{STATUS_TOPIC}.import"), 1);
    let config = isolated_member_config(&broker.address, "gridwatch-import", "gw-import", "import");
    let member = Member::start(config.clone(), "gw-import").await;
    let client = reqwest::Client::new();

    let registry = GridRegistry::embedded();
    let mut csv =
        String::from("community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n");
    for community in registry.communities().iter().take(10) {
        csv.push_str(&format!("{},{year},{},4,2,1\n", community.id, month - 1));
    }
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("cases.csv");
    std::fs::write(&file, csv).unwrap();
    let summary =
        gridwatch::tools::fraud_import::import_history(&config, &registry, &file, false, now)
            .await
            .unwrap();
    assert_eq!(
        summary.produced_to,
        Some((
            format!("{STATUS_TOPIC}.import"),
            "fraud/gridwatch-import/imported".to_string()
        ))
    );
    let started = Instant::now();
    loop {
        let (status, body) = member.get(&client, "/api/v1/fraud").await;
        if status == 200 {
            let report: serde_json::Value = serde_json::from_str(&body).unwrap();
            if report["city"]["cases_imported"].as_u64() == Some(10) {
                println!(
                    "the imported history reached the running instance's report {} ms after the import returned",
                    started.elapsed().as_millis()
                );
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the import did not reach the running instance: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Imported again: the same key replaces the record; the report is unchanged.
    gridwatch::tools::fraud_import::import_history(&config, &registry, &file, false, now)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = member.get(&client, "/api/v1/fraud").await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["city"]["cases_imported"], 10);
    member.stop().await;
}

/// Fraud events at the seeded rates over five days: a ×30 wave over three neighbouring
/// communities on the second day, a ×10 wave over a whole district after it, and the
/// cluster's wave again on the fourth day. The simulation the rules' own tests use
/// ([`gridwatch::rules::simulation`]), as (time, cell, type).
fn fraud_waves(
    registry: &GridRegistry,
    start: i64,
) -> Vec<gridwatch::rules::simulation::SimulatedEvent> {
    use gridwatch::rules::simulation::{
        median_community_and_neighbours, seeded_stream, sort_by_time, wave_stream,
    };
    let baseline = gridwatch::rules::Baseline::embedded();
    let types = [
        gridwatch::proto::EventType::FraudWarning,
        gridwatch::proto::EventType::FraudReported,
    ];
    let cells_of =
        |communities: Vec<gridwatch::grid::CommunityIndex>| -> Vec<gridwatch::grid::CellIndex> {
            communities
                .into_iter()
                .flat_map(|community| registry.community(community).cells.clone())
                .collect()
        };
    let cluster = cells_of(median_community_and_neighbours(registry, 3));
    let district_position = registry
        .district_position_of(gridwatch::grid::CommunityIndex(0))
        .unwrap();
    let district = cells_of(registry.communities_of_district(district_position).to_vec());
    let mut stream = seeded_stream(registry, &baseline, &types, start, 120, 31);
    for (cells, extra, from_hour, hours, seed) in [
        (&cluster, 29.0, 24, 12, 32),
        (&district, 9.0, 40, 24, 33),
        (&cluster, 29.0, 90, 12, 34),
    ] {
        stream.extend(wave_stream(
            registry,
            &baseline,
            cells,
            &types,
            extra,
            start + from_hour * HOUR_MILLIS,
            hours,
            seed,
        ));
    }
    sort_by_time(&mut stream);
    stream
}

const HOUR_MILLIS: i64 = 3_600_000;

/// Produces `stream` to the input topic as protobuf events keyed by community (as `gridwatch
/// produce` keys them), all acknowledged; `first_number` numbers their ids.
async fn produce_stream(
    brokers: &str,
    registry: &GridRegistry,
    stream: &[gridwatch::rules::simulation::SimulatedEvent],
    first_number: usize,
) {
    use rdkafka::message::{Header, OwnedHeaders};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for (number, (occurred_at, cell, event_type)) in stream.iter().enumerate() {
        let cell_record = registry.cell(*cell);
        let community = registry.community(cell_record.community);
        let event = gridwatch::proto::IncidentEvent {
            event_id: format!("fraud-{}", first_number + number),
            source: "96110".to_string(),
            community_id: community.id.clone(),
            grid_id: cell_record.grid_id.clone(),
            event_type: *event_type as i32,
            occurred_at: Some(gridwatch::time::millis_to_timestamp(*occurred_at)),
            received_at: Some(gridwatch::time::millis_to_timestamp(*occurred_at + 500)),
            ..Default::default()
        };
        let value = event.encode_to_vec();
        let record = FutureRecord::to(INPUT_TOPIC)
            .key(community.id.as_str())
            .payload(&value)
            .headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/x-protobuf"),
            }));
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(error, _)| error)
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

/// An alert change as compared: (alert id, status, updated_at millis).
type AlertChange = (String, i32, i64);

fn change_of(alert: &gridwatch::proto::Alert) -> AlertChange {
    let updated = alert
        .updated_at
        .as_ref()
        .map_or(0, gridwatch::time::timestamp_to_millis);
    (alert.alert_id.clone(), alert.status, updated)
}

/// Whole-city alert changes on the alerts topic, in order.
fn whole_city_changes_on_topic(brokers: &str, whole_city_rules: &[String]) -> Vec<AlertChange> {
    let consumer = checking_consumer(brokers, "whole-city-check", &[]);
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(ALERTS_TOPIC, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let mut changes = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        let Some(received) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        quiet_since = Instant::now();
        let message = received.unwrap();
        let payload = rdkafka::message::Message::payload(&message).unwrap();
        let alert = gridwatch::proto::Alert::decode(payload).unwrap();
        if whole_city_rules.contains(&alert.rule) {
            changes.push(change_of(&alert));
        }
    }
    changes
}

/// Waits until every member's whole-city watermark is at least `at_least` and has not moved
/// for 20 s (longer than a status interval plus the detector's grace); returns the oldest.
async fn settled_whole_city_watermark(
    members: &[Member],
    client: &reqwest::Client,
    at_least: i64,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last: Vec<Option<f64>> = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let now = each_metric(
            members,
            client,
            "gridwatch_whole_city_watermark_timestamp_seconds",
        )
        .await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        let far_enough = last
            .iter()
            .all(|watermark| watermark.is_some_and(|seconds| seconds * 1000.0 >= at_least as f64));
        if far_enough && stable_since.elapsed() > Duration::from_secs(20) {
            let oldest = last
                .iter()
                .flatten()
                .map(|seconds| (seconds * 1000.0) as i64)
                .min();
            return oldest.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the detectors did not settle: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The topic's whole-city changes before `watermark`'s pane equal (each once) those of one
/// engine fed every event of `stream`, its watermark visiting every pane boundary up to it.
/// The engine starts at the first event's pane, as the detector does (the learned baseline
/// counts hours from its first watermark on).
fn assert_topic_equals_one_engine(
    brokers: &str,
    registry: &GridRegistry,
    stream: &[gridwatch::rules::simulation::SimulatedEvent],
    watermark: i64,
) -> Vec<AlertChange> {
    let first_event = stream.first().map_or(0, |(occurred_at, _, _)| *occurred_at);
    let start = first_event - first_event.rem_euclid(60_000);
    let rules = gridwatch::rules::RuleSet::embedded_default(60_000).unwrap();
    let whole_city_rules: Vec<String> = rules
        .whole_city_part()
        .rules()
        .iter()
        .map(|rule| rule.name().to_string())
        .collect();
    let last_boundary = watermark - watermark.rem_euclid(60_000);
    let one_engine = gridwatch::rules::simulation::run_rules(
        registry,
        rules.whole_city_part(),
        stream,
        start,
        last_boundary,
    );
    let kinds: std::collections::BTreeSet<&str> = one_engine
        .iter()
        .map(|alert| alert.rule_kind.as_str())
        .collect();
    assert!(
        kinds.contains("scan") && kinds.contains("spike"),
        "the waves raise scan and district spike alerts in one engine: {kinds:?}"
    );
    let reference: std::collections::BTreeSet<AlertChange> = one_engine
        .iter()
        .map(change_of)
        .filter(|(_, _, updated)| *updated < last_boundary)
        .collect();
    let published: Vec<AlertChange> = whole_city_changes_on_topic(brokers, &whole_city_rules)
        .into_iter()
        .filter(|(_, _, updated)| *updated < last_boundary)
        .collect();
    let distinct: std::collections::BTreeSet<AlertChange> = published.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        published.len(),
        "a change published twice: {published:#?}"
    );
    assert_eq!(distinct, reference);
    published
}

/// Whole-city alert changes `member` published and detected (its metrics).
async fn published_and_detected(member: &Member, client: &reqwest::Client) -> (f64, f64) {
    let metrics = member.metrics(client).await;
    let value = |result: &str| {
        metric_value(&metrics, "gridwatch_whole_city_alerts_total", &[result]).unwrap_or(0.0)
    };
    (value("\"published\""), value("\"detected\""))
}

/// Two instances over four input partitions keyed by community, so that no partition holds a
/// whole district or the three neighbouring communities of a wave (before the whole-city
/// detector, no district or cluster alert was raised with Kafka at all): the alerts topic
/// gets exactly the district-spike and scan alert changes one engine seeing every event
/// raises (same ids, so same starts), each once, published by the owner of input partition 0
/// alone. Then the publisher stops: the survivor takes every partition and publishes the
/// next wave's changes, still equal to one engine's over the whole stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn district_and_cluster_waves_split_over_partitions_are_alerted_once_as_one_engine_would() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = TansuBroker::start(&binary);
    broker.create_topic(INPUT_TOPIC, 4);
    broker.create_topic("gridwatch.state.v1", 4);
    for topic in [WINDOWS_TOPIC, ALERTS_TOPIC, "gridwatch.deadletter.v1"] {
        broker.create_topic(topic, 1);
    }
    create_compacted_topic(&broker, STATUS_TOPIC, 1);
    let group_id = "gridwatch-whole-city";
    let client = reqwest::Client::new();
    let mut members = Vec::new();
    for name in ["gw-1", "gw-2"] {
        let mut config = member_config(&broker.address, group_id, name);
        // A fraud-only stream has hours between a partition's events: each is a "jump" the
        // guard against one fast clock would not believe alone (it is meant for the dense
        // streams of every event type).
        config.window.clock_jump_tolerance = Duration::from_secs(7 * 24 * 3600);
        // Its partitions also idle between the test's steps: an idle partition's last pane
        // closes only with its next record, so a partition idle for longer than this would
        // not hold the whole-city watermark back and its last pane would count late.
        config.window.idle_timeout = Duration::from_secs(3600);
        config.validate().unwrap();
        members.push(Member::start(config, name).await);
    }
    wait_for_assignment(&members.iter().collect::<Vec<_>>(), &client, 2.0).await;

    let registry = GridRegistry::embedded();
    // Local 16:00 (UTC+8) on 2026-03-02, so that the waves fall in office hours.
    let start = START_MILLIS + 8 * HOUR_MILLIS;
    let stream = fraud_waves(&registry, start);
    let split =
        stream.partition_point(|(occurred_at, _, _)| *occurred_at < start + 72 * HOUR_MILLIS);
    let (first_days, last_days) = stream.split_at(split);
    produce_stream(&broker.address, &registry, first_days, 0).await;
    println!("{} fraud events of three days produced", first_days.len());
    let watermark = settled_whole_city_watermark(&members, &client, start + 66 * HOUR_MILLIS).await;
    let published = assert_topic_equals_one_engine(&broker.address, &registry, &stream, watermark);
    println!(
        "{} whole-city alert changes on the alerts topic equal one engine's",
        published.len()
    );
    let mut publisher = None;
    for (index, member) in members.iter().enumerate() {
        let (published_here, detected) = published_and_detected(member, &client).await;
        println!(
            "{}: detected {detected}, published {published_here}",
            member.name
        );
        assert!(detected >= published.len() as f64, "every instance detects");
        // The publisher counts what it published like any alert; the other does not.
        let district_fired = metric_value(
            &member.metrics(&client).await,
            "gridwatch_alerts_total",
            &["rule=\"fraud_wave_district_spike_6h\"", "status=\"firing\""],
        );
        if published_here > 0.0 {
            assert!(publisher.is_none(), "one publisher in the group");
            assert_eq!(district_fired, Some(1.0));
            publisher = Some(index);
        } else {
            assert_eq!(district_fired.unwrap_or(0.0), 0.0);
        }
    }

    // The publisher leaves; the survivor takes its partitions, partition 0 among them.
    let leaving = members.remove(publisher.expect("a publisher"));
    println!("{} stops", leaving.name);
    leaving.stop().await;
    wait_for_assignment(&members.iter().collect::<Vec<_>>(), &client, 4.0).await;
    produce_stream(&broker.address, &registry, last_days, split).await;
    println!("{} fraud events of two more days produced", last_days.len());
    let watermark =
        settled_whole_city_watermark(&members, &client, start + 114 * HOUR_MILLIS).await;

    let all_published =
        assert_topic_equals_one_engine(&broker.address, &registry, &stream, watermark);
    assert!(
        all_published.len() > published.len(),
        "the fourth day's wave was published: {all_published:#?}"
    );
    // A few panes may reach the survivor's detector after its watermark passed them (seen on
    // a slow day of the 2-core machine: 1 to 3 of the two days' panes, in 3 of 6 runs). The
    // likely cause, read from the code and not yet proven: once the stopped instance's status
    // is stale, the survivor's watermark alone is the city's, and it covers only its own
    // partitions until it has taken over and processed the others (counting a restored
    // partition as active from its assignment did not stop it: the gap opens earlier). The
    // detector still counts them from its next evaluation on (module docs of
    // `rules::whole_city`), and the alerts topic equalling one engine's, asserted above, is
    // what proves they changed nothing. Many late panes would mean the grace is broken.
    let survivor_metrics = members[0].metrics(&client).await;
    let counted_late = metric_value(
        &survivor_metrics,
        "gridwatch_whole_city_panes_total",
        &["counted_late"],
    )
    .unwrap_or(0.0);
    println!("{counted_late} panes counted late by the survivor's detector");
    assert!(
        counted_late <= 10.0,
        "{counted_late} panes arrived after the detector's watermark"
    );
    let (published_by_survivor, _) = published_and_detected(&members[0], &client).await;
    assert!(published_by_survivor > 0.0, "the survivor publishes");
    println!(
        "after the handover: {} whole-city alert changes equal one engine's; {} published by {}",
        all_published.len(),
        published_by_survivor,
        members[0].name
    );

    // A restart: a new instance reads back three days of panes, and the learned history
    // before them from the state topic, where the publisher keeps it.
    let learned_hours = |metrics: &str| {
        metric_value(metrics, "gridwatch_whole_city_learned_history_seconds", &[])
            .map(|seconds| seconds / 3600.0)
    };
    let learned_history = |metrics: &str, result: &str| {
        metric_value(
            metrics,
            "gridwatch_whole_city_learned_history_total",
            &[&format!("result=\"{result}\"")],
        )
        .unwrap_or(0.0)
    };
    let survivor_metrics = members[0].metrics(&client).await;
    assert!(learned_history(&survivor_metrics, "written") >= 1.0);
    let survivor_hours = learned_hours(&survivor_metrics).expect("the survivor's learned hours");
    assert!(
        survivor_hours > 100.0,
        "five days observed: {survivor_hours}"
    );
    let mut config = member_config(&broker.address, group_id, "gw-3");
    config.window.clock_jump_tolerance = Duration::from_secs(7 * 24 * 3600);
    config.window.idle_timeout = Duration::from_secs(3600);
    config.validate().unwrap();
    let restarted = Member::start(config, "gw-3").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let restarted_metrics = loop {
        let metrics = restarted.metrics(&client).await;
        let caught_up =
            metric_value(&metrics, "gridwatch_whole_city_catching_up", &[]) == Some(0.0);
        if caught_up && learned_hours(&metrics).is_some() {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted detector did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(learned_history(&restarted_metrics, "restored"), 1.0);
    let restarted_hours = learned_hours(&restarted_metrics).unwrap();
    println!(
        "restarted: {restarted_hours} learned hours, the survivor {survivor_hours} (the panes read back alone: under 72)"
    );
    assert!(
        restarted_hours >= survivor_hours - 1.0,
        "at most the hour the read-back starts in is missing: {restarted_hours} of {survivor_hours}"
    );
    restarted.stop().await;
    for member in members {
        member.stop().await;
    }
}
