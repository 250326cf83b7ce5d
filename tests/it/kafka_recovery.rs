//! Effectively-once against a REAL Kafka-protocol broker (tansu, see `crate::support::tansu`): the
//! real `gridwatch` binary consumes a multi-partition topic in a consumer group while events
//! are still being produced, and is killed with SIGKILL, scaled out, or cut off from a paused
//! broker. Afterwards the windows and alerts on the output topics must equal an uninterrupted
//! run's — computed here by feeding each input partition, read back in offset order, through
//! the same per-partition pipelines — with every re-sent record byte-identical under its key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::tansu::{checking_consumer, committed_offsets, tansu_binary, TansuBroker};
use gridwatch::config::{Config, KafkaPayloadFormat, SourceKind};
use gridwatch::decode::InputFormat;
use gridwatch::kafka::source_partition_id;
use gridwatch::partitions::{PartitionedPipelines, PipelineFactory};
use gridwatch::pipeline::Outputs;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::source::{RecordPayload, SourceRecord};
use gridwatch::tools::produce::{produce_simulated, ProduceOptions};
use prost::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

/// The input topic.
const INPUT_TOPIC: &str = "gridwatch.events.v1";
/// Output topics (one partition each, so they read back in order) and the state topic.
const WINDOWS_TOPIC: &str = "gridwatch.windows.v1";
const ALERTS_TOPIC: &str = "gridwatch.alerts.v1";
const DEAD_LETTER_TOPIC: &str = "gridwatch.deadletter.v1";
const STATE_TOPIC: &str = "gridwatch.state.v1";

/// A broker with the input topic (`partitions` partitions), the state topic (as many) and
/// the output topics.
fn broker_with_topics(binary: &Path, partitions: u32) -> TansuBroker {
    let broker = TansuBroker::start(binary);
    broker.create_topic(INPUT_TOPIC, partitions);
    broker.create_topic(STATE_TOPIC, partitions);
    for output_topic in [WINDOWS_TOPIC, ALERTS_TOPIC, DEAD_LETTER_TOPIC] {
        broker.create_topic(output_topic, 1);
    }
    broker
}

/// Produces `events` simulator events (seed 11) at `rate` per second, keyed by grid cell.
fn spawn_producer(brokers: &str, events: u64, rate: f64) -> std::thread::JoinHandle<u64> {
    let options = ProduceOptions {
        brokers: brokers.to_string(),
        topic: INPUT_TOPIC.to_string(),
        events: Some(events),
        rate_per_second: Some(rate),
        format: KafkaPayloadFormat::Protobuf,
        properties: Default::default(),
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let settings = SimulatorSettings {
            seed: 11,
            start_millis: crate::support::START_MILLIS,
            ..SimulatorSettings::default()
        };
        let mut simulator =
            Simulator::new(settings, gridwatch::grid::GridRegistry::embedded()).unwrap();
        runtime
            .block_on(produce_simulated(&options, &mut simulator))
            .unwrap()
    })
}

/// A `gridwatch run` process consuming the input topic in `group_id`.
struct Instance {
    /// The process.
    child: Child,
    /// host:port of its HTTP endpoint.
    address: String,
    /// Its name in messages.
    name: String,
}

impl Instance {
    /// Starts the binary with a config file written to `directory`; its log goes to
    /// `<directory>/<name>.log`.
    fn start(brokers: &str, group_id: &str, directory: &Path, name: &str) -> Instance {
        Instance::start_with_engine_threads(brokers, group_id, directory, name, 0)
    }

    /// [`Instance::start`] with `kafka.engine_threads` set (0: picked by cores, which on a
    /// 2-core machine keeps the partitions' engines on the pipeline task).
    fn start_with_engine_threads(
        brokers: &str,
        group_id: &str,
        directory: &Path,
        name: &str,
        engine_threads: usize,
    ) -> Instance {
        let config_path = directory.join(format!("{name}.toml"));
        let config_text = format!(
            r#"
[source]
kind = "kafka"

[http]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
group_id = "{group_id}"
topics = ["{INPUT_TOPIC}"]
snapshot_interval = "1s"
engine_threads = {engine_threads}

[kafka.properties]
"session.timeout.ms" = "6000"

[kafka.sinks]
enabled = true

# Simulated test data, compared with a reference made with the default configuration.
[privacy]
allow_builtin_key = true

[log]
level = "info"
"#
        );
        std::fs::write(&config_path, config_text).unwrap();
        let log = std::fs::File::create(directory.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gridwatch");
        // The log goes on to the file as it comes.
        let (address, _log_copier) = crate::support::follow_log(child.stderr.take().unwrap(), log);
        Instance {
            child,
            address,
            name: name.to_string(),
        }
    }

    /// The names of the process's threads (Linux `/proc/<pid>/task/*/comm`).
    fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        std::fs::read_to_string(entry.ok()?.path().join("comm")).ok()
                    })
                    .map(|name| name.trim_end().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the process is still running (it has not exited by itself).
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Status and body of `GET path`, if the process answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::support::http_get(&self.address, path)
    }

    /// The value of a metric series (first line starting with `series`), if present.
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Waits (at most `timeout`) until `metric(series) >= at_least`.
    fn wait_for_metric(&self, series: &str, at_least: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric(series).is_some_and(|value| value >= at_least) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {series} did not reach {at_least} within {timeout:?} (now {:?})",
                self.name,
                self.metric(series)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no last snapshot, no commit.
    fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        println!("{} killed with SIGKILL", self.name);
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "{} exited with {exit}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 60 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of every partition of `topic` from the beginning to the end.
fn read_topic(brokers: &str, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer = checking_consumer(
        brokers,
        "kafka-recovery-check",
        &[("enable.partition.eof", "true")],
    );
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partition_count = metadata.topics()[0].partitions().len() as i32;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..partition_count {
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut unfinished: BTreeSet<i32> = (0..partition_count).collect();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !unfinished.is_empty() {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    messages
}

/// The next offset of every input partition: where a consumer that saw everything commits.
fn end_offsets(input: &[rdkafka::message::OwnedMessage]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for message in input {
        let end = ends.entry(message.partition()).or_insert(0);
        *end = (*end).max(message.offset() + 1);
    }
    ends
}

/// Waits until `group_id` committed every partition's end offset.
fn wait_for_commits(brokers: &str, group_id: &str, ends: &BTreeMap<i32, i64>, timeout: Duration) {
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let committed = committed_offsets(brokers, group_id, INPUT_TOPIC, &partitions);
        if &committed == ends {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offsets not committed to the end within {timeout:?}: committed {committed:?}, ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What an uninterrupted run produces: each input partition's records, in offset order,
/// through the per-partition pipelines the service uses.
fn reference_outputs(input: &[rdkafka::message::OwnedMessage]) -> Outputs {
    let mut config = Config::default();
    config.source.kind = SourceKind::Kafka;
    let registry = gridwatch::service::load_registry(&config).unwrap();
    let rules = gridwatch::service::load_rules(&config).unwrap();
    let metrics = Arc::new(gridwatch::metrics::Metrics::new(&["kafka"], rules.version()).unwrap());
    let mut pipelines = PartitionedPipelines::new(PipelineFactory {
        settings: gridwatch::service::partition_pipeline_settings(&config),
        registry,
        rules,
        metrics,
        source_name: "kafka",
        fraud_settings: None,
    });
    let mut ordered: Vec<&rdkafka::message::OwnedMessage> = input.iter().collect();
    ordered.sort_by_key(|message| (message.partition(), message.offset()));
    let wall_millis = gridwatch::time::wall_clock_millis();
    let mut outputs = Outputs::default();
    for message in ordered {
        let record = SourceRecord {
            payload: RecordPayload::Encoded {
                bytes: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                format: InputFormat::Protobuf,
            },
            partition: source_partition_id(0, message.partition()).unwrap(),
            position: message.offset() as u64,
        };
        pipelines.process(record, wall_millis, &mut outputs);
    }
    outputs
}

/// The distinct `(key, value)` records of an output topic; panics when one key carries two
/// different values where the output is a pure function of its key (windows).
fn distinct_records(messages: &[rdkafka::message::OwnedMessage]) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    messages
        .iter()
        .map(|message| {
            (
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

/// The windows and alerts on the output topics equal the reference; every re-sent window is
/// byte-identical. Returns how many window records were re-sent (duplicates).
fn assert_outputs_equal_reference(brokers: &str) -> usize {
    let input = read_topic(brokers, INPUT_TOPIC);
    let reference = reference_outputs(&input);
    let registry = gridwatch::grid::GridRegistry::embedded();
    let expected_windows: BTreeSet<(Vec<u8>, Vec<u8>)> = reference
        .windows
        .iter()
        .map(|pane| {
            let window = gridwatch::sink::cell_window(&registry, pane).unwrap();
            (
                gridwatch::sink::kafka::window_key(&window).into_bytes(),
                window.encode_to_vec(),
            )
        })
        .collect();
    let window_messages = read_topic(brokers, WINDOWS_TOPIC);
    let received_windows = distinct_records(&window_messages);
    let mut values_by_key: BTreeMap<&[u8], BTreeSet<&[u8]>> = BTreeMap::new();
    for (key, value) in &received_windows {
        values_by_key.entry(key).or_default().insert(value);
    }
    for (key, values) in &values_by_key {
        assert_eq!(
            values.len(),
            1,
            "window {} was sent with different contents",
            String::from_utf8_lossy(key)
        );
    }
    assert!(
        expected_windows.len() > 500,
        "too few windows to compare: {}",
        expected_windows.len()
    );
    let missing = expected_windows.difference(&received_windows).count();
    let unexpected = received_windows.difference(&expected_windows).count();
    assert_eq!(
        (missing, unexpected),
        (0, 0),
        "windows differ from the uninterrupted reference ({} expected)",
        expected_windows.len()
    );
    let expected_alerts: BTreeSet<(Vec<u8>, Vec<u8>)> = reference
        .alerts
        .iter()
        .map(|alert| {
            (
                alert.fingerprint.clone().into_bytes(),
                alert.encode_to_vec(),
            )
        })
        .collect();
    let received_alerts = distinct_records(&read_topic(brokers, ALERTS_TOPIC));
    assert!(!expected_alerts.is_empty(), "the run raises alerts");
    assert_eq!(
        received_alerts, expected_alerts,
        "alerts differ from the reference"
    );
    let resent = window_messages.len() - received_windows.len();
    println!(
        "{} input records; {} windows and {} alert records equal the reference; {resent} window records re-sent byte-identical",
        input.len(),
        expected_windows.len(),
        expected_alerts.len()
    );
    resent
}

/// kill -9 at several points while events are still arriving, restart each time: nothing
/// lost, nothing double-counted, the state followed the partitions through the state topic.
#[test]
fn killed_instances_resume_from_their_snapshots_and_outputs_equal_the_reference() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = broker_with_topics(&binary, 3);
    let temporary = tempfile::tempdir().unwrap();
    let directory = temporary.path().to_path_buf();
    let group_id = "gridwatch-crash";
    let producer = spawn_producer(&broker.address, 12_000, 400.0);
    let received = "gridwatch_events_received_total{source=\"kafka\"}";
    let snapshots = "gridwatch_kafka_state_snapshots_total{result=\"ok\"}";
    // Killed after its first snapshot round, then after its second, each time with records
    // processed since that the next instance must replay. The first runs the partitions'
    // engines on two threads of their own, the others on the pipeline task: a partition's
    // state and outputs do not depend on where its engine ran.
    for (round, snapshots_before_kill, engine_threads) in [(1, 1.0, 2), (2, 2.0, 1)] {
        let name = format!("crash-{round}");
        let instance = Instance::start_with_engine_threads(
            &broker.address,
            group_id,
            &directory,
            &name,
            engine_threads,
        );
        instance.wait_for_metric(snapshots, snapshots_before_kill, Duration::from_secs(60));
        let engine_thread_names: Vec<String> = instance
            .thread_names()
            .into_iter()
            .filter(|thread| thread.starts_with("engine-"))
            .collect();
        assert_eq!(
            engine_thread_names.len(),
            if engine_threads > 1 {
                engine_threads
            } else {
                0
            },
            "{name}: engine threads {engine_thread_names:?}"
        );
        let processed = instance.metric(received).unwrap_or(0.0);
        instance.wait_for_metric(received, processed + 200.0, Duration::from_secs(60));
        println!(
            "{name}: {:?} partition snapshots, {:?} records before the kill",
            instance.metric(snapshots),
            instance.metric(received)
        );
        instance.kill_hard();
    }
    let last =
        Instance::start_with_engine_threads(&broker.address, group_id, &directory, "crash-last", 2);
    let produced = producer.join().unwrap();
    assert_eq!(produced, 12_000);
    let ends = end_offsets(&read_topic(&broker.address, INPUT_TOPIC));
    wait_for_commits(&broker.address, group_id, &ends, Duration::from_secs(90));
    let restored = last
        .metric("gridwatch_state_restores_total{result=\"restored\",store=\"kafka\"}")
        .unwrap_or(0.0);
    assert!(
        restored >= 1.0,
        "the last instance restored no partition state"
    );
    last.stop();
    assert_outputs_equal_reference(&broker.address);
}

/// Three instances share six partitions; one is killed mid-run: the survivors take its
/// partitions with their state from the state topic, and the outputs equal the reference.
#[test]
fn survivors_take_over_a_killed_instances_partitions_with_their_state() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = broker_with_topics(&binary, 6);
    let temporary = tempfile::tempdir().unwrap();
    let directory = temporary.path().to_path_buf();
    let group_id = "gridwatch-scale-out";
    let producer = spawn_producer(&broker.address, 12_000, 400.0);
    let instances: Vec<Instance> = (1..=3)
        .map(|number| {
            Instance::start(
                &broker.address,
                group_id,
                &directory,
                &format!("member-{number}"),
            )
        })
        .collect();
    let assigned = "gridwatch_kafka_assigned_partitions";
    let snapshots = "gridwatch_kafka_state_snapshots_total{result=\"ok\"}";
    // The group is stable once each member owns two of the six partitions.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let owned: Vec<Option<f64>> = instances
            .iter()
            .map(|instance| instance.metric(assigned))
            .collect();
        if owned.iter().all(|partitions| *partitions == Some(2.0)) {
            println!("three members own two partitions each");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not spread six partitions over three members: {owned:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut instances = instances.into_iter();
    let victim = instances.next().unwrap();
    let survivors: Vec<Instance> = instances.collect();
    let snapshots_so_far = victim.metric(snapshots).unwrap_or(0.0);
    victim.wait_for_metric(snapshots, snapshots_so_far + 2.0, Duration::from_secs(60));
    victim.kill_hard();
    let produced = producer.join().unwrap();
    assert_eq!(produced, 12_000);
    let ends = end_offsets(&read_topic(&broker.address, INPUT_TOPIC));
    assert_eq!(ends.len(), 6, "every partition received events");
    wait_for_commits(&broker.address, group_id, &ends, Duration::from_secs(120));
    let survivor_partitions: f64 = survivors
        .iter()
        .map(|instance| instance.metric(assigned).unwrap_or(0.0))
        .sum();
    assert_eq!(
        survivor_partitions, 6.0,
        "the survivors own all six partitions"
    );
    let restored: f64 = survivors
        .iter()
        .map(|instance| {
            instance
                .metric("gridwatch_state_restores_total{result=\"restored\",store=\"kafka\"}")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        restored >= 2.0,
        "the victim's two partitions were not restored from the state topic ({restored})"
    );
    for survivor in survivors {
        survivor.stop();
    }
    assert_outputs_equal_reference(&broker.address);
}

/// Sends `signal` (`-STOP`, `-CONT`) to `process` with kill(1).
fn signal_process(process: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An instance started while the broker is paused (SIGSTOP) keeps running — it serves
/// `/healthz`, reports not-ready, and retries — and once the broker resumes 20 s later it
/// consumes everything with the reference's results.
#[test]
fn an_instance_started_during_a_broker_outage_waits_it_out_and_completes_unchanged() {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = broker_with_topics(&binary, 3);
    let temporary = tempfile::tempdir().unwrap();
    let directory = temporary.path().to_path_buf();
    let group_id = "gridwatch-started-in-outage";
    let produced = spawn_producer(&broker.address, 3_000, 3_000.0)
        .join()
        .unwrap();
    assert_eq!(produced, 3_000);
    let signal = |name: &str| signal_process(&broker.child, name);
    signal("-STOP");
    let paused_at = Instant::now();
    let mut instance = Instance::start(&broker.address, group_id, &directory, "waiting");
    let mut healthy_checks = 0;
    while paused_at.elapsed() < Duration::from_secs(20) {
        assert!(
            instance.is_running(),
            "the instance exited during the outage; see {}/waiting.log",
            directory.display()
        );
        if instance.get("/healthz").map(|(status, _)| status) == Some(200) {
            healthy_checks += 1;
        }
        assert_ne!(
            instance.get("/readyz").map(|(status, _)| status),
            Some(200),
            "ready while the broker is paused"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    signal("-CONT");
    assert!(
        healthy_checks > 10,
        "/healthz answered {healthy_checks} times"
    );
    let ends = end_offsets(&read_topic(&broker.address, INPUT_TOPIC));
    wait_for_commits(&broker.address, group_id, &ends, Duration::from_secs(120));
    assert!(instance.is_running());
    instance.stop();
    assert_outputs_equal_reference(&broker.address);
}

/// The broker is paused (SIGSTOP) for 20 s mid-run: `/readyz` stays ready (the API keeps
/// serving through a Kafka outage; dropping every replica from the Service would blind the
/// operators exactly during an incident) while `gridwatch_kafka_broker_up` reports the outage
/// and recovers after it, and the run completes with the reference's results.
#[test]
fn a_paused_broker_shows_in_broker_up_while_the_instance_stays_ready_and_the_run_completes_unchanged(
) {
    let Some(binary) = tansu_binary() else {
        return;
    };
    let broker = broker_with_topics(&binary, 3);
    let temporary = tempfile::tempdir().unwrap();
    let directory = temporary.path().to_path_buf();
    let group_id = "gridwatch-outage";
    let producer = spawn_producer(&broker.address, 10_000, 400.0);
    let instance = Instance::start(&broker.address, group_id, &directory, "outage");
    instance.wait_for_metric(
        "gridwatch_kafka_state_snapshots_total{result=\"ok\"}",
        1.0,
        Duration::from_secs(60),
    );
    assert_eq!(instance.get("/readyz").map(|(status, _)| status), Some(200));
    let broker_up = format!("gridwatch_kafka_broker_up{{group=\"{group_id}\"}}");
    assert_eq!(instance.metric(&broker_up), Some(1.0));
    let signal = |name: &str| signal_process(&broker.child, name);
    signal("-STOP");
    let paused_at = Instant::now();
    let mut down_after = None;
    while paused_at.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            instance.get("/readyz").map(|(status, _)| status),
            Some(200),
            "unready during the outage"
        );
        if down_after.is_none() && instance.metric(&broker_up) == Some(0.0) {
            down_after = Some(paused_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal("-CONT");
    let down_after =
        down_after.expect("gridwatch_kafka_broker_up stayed 1 while the broker was paused");
    println!("gridwatch_kafka_broker_up went 0 {down_after:?} after the broker was paused");
    let resumed_at = Instant::now();
    loop {
        if instance.metric(&broker_up) == Some(1.0) {
            println!(
                "broker up again {:?} after the broker resumed",
                resumed_at.elapsed()
            );
            break;
        }
        assert!(
            resumed_at.elapsed() < Duration::from_secs(30),
            "gridwatch_kafka_broker_up did not recover after the broker resumed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let produced = producer.join().unwrap();
    assert_eq!(produced, 10_000);
    let ends = end_offsets(&read_topic(&broker.address, INPUT_TOPIC));
    wait_for_commits(&broker.address, group_id, &ends, Duration::from_secs(120));
    instance.stop();
    assert_outputs_equal_reference(&broker.address);
}
