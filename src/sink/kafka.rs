//! Kafka output topics (`[kafka.sinks]`): final windows, alert state changes and dead letters,
//! produced by an idempotent librdkafka producer (`enable.idempotence=true`, with the
//! `[kafka] properties` pass-through applied over gridwatch's settings).
//!
//! | topic (default)            | key                                           | value                    | headers |
//! |----------------------------|-----------------------------------------------|--------------------------|---------|
//! | `gridwatch.windows.v1`     | `{grid_id}\|{EVENT_TYPE}\|{window_start millis}` | `CellWindow` protobuf  | `content-type` |
//! | `gridwatch.alerts.v1`      | the alert's fingerprint                       | `Alert` protobuf         | CloudEvents 1.0 binary mode: `ce_id`, `ce_source`, `ce_type`, `ce_specversion`, `ce_time`, `ce_subject` (grid id); `content-type` |
//! | `gridwatch.deadletter.v1`  | none                                          | the original payload bytes | `reason`, `detail`, `source`, `position`; Kafka input: `kafka_topic`, `kafka_partition`, `kafka_offset` |
//! | `gridwatch.status.v1` (compacted) | `fraud/<group_id>/<topic>/<partition>`; `instance/<instance_id>` | `FraudPartial` protobuf; `InstanceStatus` protobuf, or none (a tombstone) at clean shutdown | `content-type` |
//!
//! Outputs are deterministic: the same input gives byte-identical records with the same keys
//! (protobuf encoding of the same message is stable, and `ce_id` is
//! `<alert_id>:<status>:<updated_at millis>`, the webhook's id). Downstream consumers should
//! upsert or deduplicate by key (windows, alerts) or by `ce_id` (alert state changes): a record
//! re-sent after a crash and replay is then seen once.
//!
//! Producing never blocks the pipeline loop for long: records are queued with a non-blocking
//! send on a [`ThreadedProducer`] (its own thread polls deliveries); while librdkafka's queue
//! is full, one [`KafkaSink::write`] call waits at most [`QUEUE_FULL_GRACE`] in total, then
//! drops and counts the rest in `gridwatch_kafka_produce_errors_total{topic}`. Acknowledged
//! records count in `gridwatch_kafka_produced_total{topic}`.
//!
//! Status records ([`KafkaSink::write_status`]) go through a producer of their own: they are
//! rebuilt every few seconds, so one lost is replaced by the next, and the outputs' flush —
//! which gates offset commits — never waits for them (nor for a status topic that does not
//! exist). They count as produce errors but never as lost outputs; the instance's tombstone
//! is flushed when the sink is dropped at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::kafka::{
    non_group_client_config, owned_headers, split_source_partition_id, KafkaError,
    CONTENT_TYPE_HEADER, DETAIL_HEADER, KAFKA_OFFSET_HEADER, KAFKA_PARTITION_HEADER,
    KAFKA_TOPIC_HEADER, POSITION_HEADER, PROTOBUF_CONTENT_TYPE, REASON_HEADER, SOURCE_HEADER,
    STATUS_FRAUD_KEY_PREFIX, STATUS_INSTANCE_KEY_PREFIX,
};
use crate::metrics::Metrics;
use crate::pipeline::Outputs;
use crate::proto::{Alert, CellWindow, DeadLetter, FraudPartial};
use crate::read_model::OutputRecord as ReadModelRecord;
use crate::sink::cloudevents::CloudEventAttributes;
use crate::time::timestamp_to_millis;

/// How long one [`KafkaSink::write`] waits in total for room in a full producer queue.
pub const QUEUE_FULL_GRACE: Duration = Duration::from_millis(500);
/// How long a dropped sink waits for its status records (the instance's tombstone).
const STATUS_FLUSH_GRACE: Duration = Duration::from_secs(2);
/// The wait between retries of a send into a full queue.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(5);
/// The wait between a flush's checks that every queued record has been acknowledged.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(1);
/// `linger.ms` of the output producer: how long a record may wait for others to join its
/// batch. Each batch librdkafka starts wakes a broker thread, which on a busy machine takes the
/// core of the pipeline task that is producing, and contends with it for the partition queue's
/// lock: at 5 ms the pipeline task spent about 0.57 s of its 3.3 s of busy time (1 M events)
/// switched out inside librdkafka's produce call. At 25 ms, in four alternated `kafka_e2e`
/// pairs (README "Kafka throughput benchmark"), the pipeline task was busy 3.25 → 3.03 s, the
/// process used 5.4 → 5.2 µs of CPU per event and the broker threads 1.13 → 0.79 s, for at
/// most 20 ms more before a record leaves. Alerts reach Alertmanager and webhooks without
/// Kafka, and a snapshot round's flush sends what lingers without waiting it out.
/// `kafka.properties` overrides it.
const OUTPUT_LINGER_MS: &str = "25";

/// Counts deliveries per topic from librdkafka's delivery callbacks.
pub struct DeliveryCounter {
    /// `gridwatch_kafka_produced_total{topic}` and `gridwatch_kafka_produce_errors_total{topic}`
    /// of each topic the producer writes (it writes no other), looked up once: a callback runs
    /// for every record (about one per input event), and finding a series by its label hashed
    /// the topic's name under the vector's lock each time (6–11 % of the polling thread's
    /// profile samples).
    topics: Vec<TopicDeliveryCounters>,
    /// Records lost so far (dropped or not delivered), shared with the [`KafkaSink`].
    lost: Arc<AtomicU64>,
}

/// One topic's delivery counters.
struct TopicDeliveryCounters {
    topic: String,
    produced: prometheus::IntCounter,
    produce_errors: prometheus::IntCounter,
}

impl DeliveryCounter {
    /// Counters for `topics` (each series exists from the start, at zero).
    fn new<'topic>(
        topics: impl IntoIterator<Item = &'topic String>,
        metrics: &Metrics,
        lost: Arc<AtomicU64>,
    ) -> DeliveryCounter {
        let topics = topics
            .into_iter()
            .map(|topic| TopicDeliveryCounters {
                topic: topic.clone(),
                produced: metrics.kafka_produced.with_label_values(&[topic.as_str()]),
                produce_errors: metrics
                    .kafka_produce_errors
                    .with_label_values(&[topic.as_str()]),
            })
            .collect();
        DeliveryCounter { topics, lost }
    }

    fn counters_of(&self, topic: &str) -> Option<&TopicDeliveryCounters> {
        self.topics.iter().find(|counters| counters.topic == topic)
    }

    /// Counts a record of `topic` not delivered, or dropped before it was queued.
    fn count_error(&self, topic: &str) {
        if let Some(counters) = self.counters_of(topic) {
            counters.produce_errors.inc();
        }
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, delivery_result: &DeliveryResult<'_>, _opaque: Self::DeliveryOpaque) {
        match delivery_result {
            Ok(message) => {
                if let Some(counters) = self.counters_of(message.topic()) {
                    counters.produced.inc();
                }
            }
            Err((error, message)) => {
                tracing::warn!(%error, topic = message.topic(), "kafka output record not delivered");
                self.count_error(message.topic());
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The output topics in use; `None` = that output is not produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkTopics {
    /// Final windows.
    pub windows: Option<String>,
    /// Alert state changes.
    pub alerts: Option<String>,
    /// Dead letters.
    pub dead_letters: Option<String>,
    /// Fraud partials and instance status for the city-wide read model (compacted).
    pub status: Option<String>,
}

impl KafkaSinkTopics {
    /// The topics of `[kafka.sinks]`; empty names are off.
    pub fn from_config(config: &KafkaConfig) -> KafkaSinkTopics {
        let named = |topic: &String| Some(topic.clone()).filter(|name| !name.is_empty());
        KafkaSinkTopics {
            windows: named(&config.sinks.windows_topic),
            alerts: named(&config.sinks.alerts_topic),
            dead_letters: named(&config.sinks.dead_letter_topic),
            status: named(&config.sinks.status_topic),
        }
    }
}

/// Produces outputs to their Kafka topics.
pub struct KafkaSink {
    /// The idempotent producer; its thread polls delivery reports.
    producer: ThreadedProducer<DeliveryCounter>,
    /// The status topic's producer (`None` without a status topic): apart from `producer`,
    /// so that flushing the outputs never waits for status records.
    status_producer: Option<ThreadedProducer<DeliveryCounter>>,
    /// Which topics are produced.
    topics: KafkaSinkTopics,
    /// CloudEvents `source` of alert records (`gridwatch/<instance>`).
    event_source: String,
    /// The Kafka source's topics in config order, to name a dead letter's input topic.
    input_topics: Vec<String>,
    /// `kafka.group_id`, in fraud-partial keys: deployments sharing a status topic keep
    /// apart.
    group_id: String,
    /// Records lost so far (dropped before queueing or not delivered): with a Kafka source,
    /// offsets must not be committed past a loss.
    lost: Arc<AtomicU64>,
    /// Names the windows' cells ([`crate::sink::fill_cell_window`]).
    registry: Arc<crate::grid::GridRegistry>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaSink")
            .field("topics", &self.topics)
            .field("event_source", &self.event_source)
            .finish_non_exhaustive()
    }
}

/// One record ready to queue.
pub struct OutputRecord {
    /// Destination topic.
    pub topic: String,
    /// Record key (none for dead letters).
    pub key: Option<String>,
    /// Record value.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
}

/// The key of a fraud partial on the status topic: `fraud/<group_id>/<topic>/<partition>`
/// (`partition` is the partial's `topic/partition`).
pub fn fraud_partial_key(group_id: &str, partial: &FraudPartial) -> String {
    format!("{STATUS_FRAUD_KEY_PREFIX}{group_id}/{}", partial.partition)
}

/// The key of an instance's status on the status topic: `instance/<instance_id>`.
pub fn instance_key(instance_id: &str) -> String {
    format!("{STATUS_INSTANCE_KEY_PREFIX}{instance_id}")
}

/// The status-topic record of a read-model record: a fraud partial, an instance status, or
/// the tombstone (no value) of a stopped instance; `None` for windows and alerts, which have
/// their own topics.
pub fn status_record(
    record: &ReadModelRecord,
    topic: &str,
    group_id: &str,
) -> Option<StatusRecord> {
    let (key, value) = match record {
        ReadModelRecord::FraudPartial(partial) => (
            fraud_partial_key(group_id, partial),
            Some(partial.encode_to_vec()),
        ),
        ReadModelRecord::InstanceStatus(status) => (
            instance_key(&status.instance_id),
            Some(status.encode_to_vec()),
        ),
        ReadModelRecord::InstanceGone { instance_id } => (instance_key(instance_id), None),
        ReadModelRecord::Window(_) | ReadModelRecord::Alert(_) => return None,
    };
    let headers = if value.is_some() {
        vec![(CONTENT_TYPE_HEADER, PROTOBUF_CONTENT_TYPE.to_string())]
    } else {
        Vec::new()
    };
    Some(StatusRecord {
        topic: topic.to_string(),
        key,
        value,
        headers,
    })
}

/// One status-topic record ready to queue: a value, or none for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    /// Destination topic.
    pub topic: String,
    /// Record key.
    pub key: String,
    /// Record value; `None` is a tombstone (compaction then drops the key).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
}

/// The key of a window record: `{grid_id}|{EVENT_TYPE name}|{window_start millis}` (the
/// type's number when gridwatch does not know it).
pub fn window_key(window: &CellWindow) -> String {
    let mut key = String::new();
    push_window_key(window, &mut key);
    key
}

fn push_window_key(window: &CellWindow, key: &mut String) {
    let mut digits = itoa::Buffer::new();
    key.push_str(&window.grid_id);
    key.push('|');
    match crate::proto::EventType::try_from(window.event_type) {
        Ok(known) => key.push_str(known.as_str_name()),
        Err(_) => key.push_str(digits.format(window.event_type)),
    }
    key.push('|');
    let window_start_millis = window
        .window_start
        .as_ref()
        .map(timestamp_to_millis)
        .unwrap_or_default();
    key.push_str(digits.format(window_start_millis));
}

/// The headers of a window record.
const WINDOW_HEADERS: [(&str, &str); 1] = [(CONTENT_TYPE_HEADER, PROTOBUF_CONTENT_TYPE)];

/// A window record's key and value, written into buffers the caller keeps: the sink writes
/// about one window per input event, so a batch reuses two buffers rather than allocating a
/// record per window (what librdkafka is handed it copies).
#[derive(Debug, Default)]
pub struct WindowRecordBuffers {
    /// The key ([`window_key`]).
    pub key: String,
    /// The protobuf `CellWindow`.
    pub value: Vec<u8>,
}

impl WindowRecordBuffers {
    /// Replaces the buffers' contents with `window`'s key and value.
    pub fn encode(&mut self, window: &CellWindow) -> Result<(), prost::EncodeError> {
        self.key.clear();
        push_window_key(window, &mut self.key);
        self.value.clear();
        window.encode(&mut self.value)
    }
}

/// The record of a final window on `topic`.
pub fn window_record(window: &CellWindow, topic: &str) -> OutputRecord {
    OutputRecord {
        topic: topic.to_string(),
        key: Some(window_key(window)),
        value: window.encode_to_vec(),
        headers: WINDOW_HEADERS
            .iter()
            .map(|(name, value)| (*name, value.to_string()))
            .collect(),
    }
}

/// The record of an alert state change on `topic`: CloudEvents 1.0 binary mode, with the
/// webhook's id, type and time.
pub fn alert_record(alert: &Alert, topic: &str, event_source: &str) -> OutputRecord {
    let mut headers = CloudEventAttributes::of_alert(alert, event_source)
        .kafka_headers()
        .to_vec();
    headers.push((CONTENT_TYPE_HEADER, PROTOBUF_CONTENT_TYPE.to_string()));
    OutputRecord {
        topic: topic.to_string(),
        key: Some(alert.fingerprint.clone()),
        value: alert.encode_to_vec(),
        headers,
    }
}

/// The Kafka `(topic, partition, offset)` of a dead letter from the Kafka source, read from
/// its `position` text (`partition <source partition id> position <offset>`, see
/// [`crate::source::kafka`]) and the input topics in config order; `None` for other sources.
pub fn kafka_input_position(
    dead_letter: &DeadLetter,
    input_topics: &[String],
) -> Option<(String, i32, u64)> {
    if dead_letter.source != "kafka" {
        return None;
    }
    let rest = dead_letter.position.strip_prefix("partition ")?;
    let (partition_text, offset_text) = rest.split_once(" position ")?;
    let source_partition: u32 = partition_text.parse().ok()?;
    let offset: u64 = offset_text.parse().ok()?;
    let (topic_index, kafka_partition) = split_source_partition_id(source_partition);
    let topic = input_topics.get(topic_index)?;
    Some((topic.clone(), kafka_partition, offset))
}

/// The record of a dead letter on `topic`: the original bytes, and why in headers; for Kafka
/// input also `kafka_topic`, `kafka_partition` and `kafka_offset` of the original record.
pub fn dead_letter_record(
    dead_letter: &DeadLetter,
    topic: &str,
    input_topics: &[String],
) -> OutputRecord {
    let mut headers = vec![
        (REASON_HEADER, dead_letter.reason.clone()),
        (DETAIL_HEADER, dead_letter.detail.clone()),
        (SOURCE_HEADER, dead_letter.source.clone()),
        (POSITION_HEADER, dead_letter.position.clone()),
    ];
    if let Some((input_topic, partition, offset)) = kafka_input_position(dead_letter, input_topics)
    {
        headers.push((KAFKA_TOPIC_HEADER, input_topic));
        headers.push((KAFKA_PARTITION_HEADER, partition.to_string()));
        headers.push((KAFKA_OFFSET_HEADER, offset.to_string()));
    }
    OutputRecord {
        topic: topic.to_string(),
        key: None,
        value: dead_letter.payload.clone(),
        headers,
    }
}

impl KafkaSink {
    /// Creates the idempotent producer for `[kafka.sinks]`; `None` when the sinks are off.
    pub fn create(
        config: &KafkaConfig,
        event_source: String,
        metrics: &Metrics,
        registry: Arc<crate::grid::GridRegistry>,
    ) -> Result<Option<KafkaSink>, KafkaError> {
        if !config.sinks.enabled {
            return Ok(None);
        }
        let topics = KafkaSinkTopics::from_config(config);
        let client_config = output_producer_config(config);
        let lost = Arc::new(AtomicU64::new(0));
        let output_topics = [&topics.windows, &topics.alerts, &topics.dead_letters]
            .into_iter()
            .flatten();
        let context = DeliveryCounter::new(output_topics, metrics, lost.clone());
        let producer: ThreadedProducer<DeliveryCounter> = client_config
            .create_with_context(context)
            .map_err(|source| KafkaError::Client {
                context: "creating the output producer".to_string(),
                source,
            })?;
        let status_producer = match &topics.status {
            None => None,
            Some(_) => {
                let status_config = non_group_client_config(
                    config,
                    &[("linger.ms", "5"), ("message.timeout.ms", "10000")],
                );
                let status_context =
                    DeliveryCounter::new(&topics.status, metrics, Arc::new(AtomicU64::new(0)));
                Some(
                    status_config
                        .create_with_context(status_context)
                        .map_err(|source| {
                            KafkaError::client("creating the status producer", source)
                        })?,
                )
            }
        };
        Ok(Some(KafkaSink {
            producer,
            status_producer,
            topics,
            event_source,
            input_topics: config.topics.clone(),
            registry,
            group_id: config.group_id.clone(),
            lost,
        }))
    }

    /// Output records lost since the sink started (dropped before queueing, or not delivered).
    pub fn lost_records(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The alert and dead-letter records of one batch of outputs, in output order (the
    /// windows are encoded as they are queued, see [`KafkaSink::write`]).
    pub fn records_of(&self, outputs: &Outputs) -> Vec<OutputRecord> {
        let mut records = Vec::new();
        if let Some(topic) = &self.topics.alerts {
            records.extend(
                outputs
                    .alerts
                    .iter()
                    .map(|alert| alert_record(alert, topic, &self.event_source)),
            );
        }
        if let Some(topic) = &self.topics.dead_letters {
            records.extend(
                outputs
                    .dead_letters
                    .iter()
                    .map(|dead_letter| dead_letter_record(dead_letter, topic, &self.input_topics)),
            );
        }
        records
    }

    /// Queues every output of a batch; returns how many records were dropped (queue full past
    /// [`QUEUE_FULL_GRACE`], or refused), each counted as a produce error.
    pub fn write(&self, outputs: &Outputs) -> usize {
        let deadline = Instant::now() + QUEUE_FULL_GRACE;
        let mut dropped = 0;
        let mut count_if_dropped = |queued: bool, topic: &str| {
            if !queued {
                dropped += 1;
                self.lost.fetch_add(1, Ordering::Relaxed);
                self.producer.context().count_error(topic);
            }
        };
        if let Some(topic) = &self.topics.windows {
            let mut window = CellWindow::default();
            let mut buffers = WindowRecordBuffers::default();
            for pane in &outputs.windows {
                if !crate::sink::fill_cell_window(&self.registry, pane, &mut window) {
                    continue;
                }
                let queued = match buffers.encode(&window) {
                    Ok(()) => send_parts(
                        &self.producer,
                        topic,
                        Some(&buffers.key),
                        Some(&buffers.value),
                        &WINDOW_HEADERS,
                        deadline,
                    ),
                    Err(error) => {
                        tracing::warn!(%error, topic, "kafka output window not encoded");
                        false
                    }
                };
                count_if_dropped(queued, topic);
            }
        }
        for record in self.records_of(outputs) {
            count_if_dropped(self.send(&record, deadline), &record.topic);
        }
        dropped
    }

    /// Queues this instance's status records (fraud partials, instance status, the
    /// tombstone at shutdown) on the status topic; windows and alerts in `records` are
    /// ignored (they go with [`KafkaSink::write`]). Returns how many were dropped, each
    /// counted as a produce error but not as a lost output (the next status replaces it).
    pub fn write_status(&self, records: &[ReadModelRecord]) -> usize {
        let (Some(topic), Some(producer)) = (&self.topics.status, &self.status_producer) else {
            return 0;
        };
        let deadline = Instant::now() + QUEUE_FULL_GRACE;
        let mut dropped = 0;
        for record in records {
            let Some(status) = status_record(record, topic, &self.group_id) else {
                continue;
            };
            if !send_parts(
                producer,
                &status.topic,
                Some(&status.key),
                status.value.as_deref(),
                &status.headers,
                deadline,
            ) {
                dropped += 1;
                producer.context().count_error(&status.topic);
            }
        }
        dropped
    }

    /// Queues one record, retrying while the queue is full until `deadline`; whether it was
    /// queued.
    fn send(&self, record: &OutputRecord, deadline: Instant) -> bool {
        send_parts(
            &self.producer,
            &record.topic,
            record.key.as_deref(),
            Some(record.value.as_slice()),
            &record.headers,
            deadline,
        )
    }

    /// Waits up to `timeout` for every queued record to be acknowledged or failed (each
    /// snapshot round, before offsets are committed, and at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        flush_producer(&self.producer, timeout).map_err(|source| KafkaError::Client {
            context: "flushing the output producer".to_string(),
            source,
        })
    }
}

/// The output producer's settings: idempotent, [`OUTPUT_LINGER_MS`], then `kafka.properties`.
fn output_producer_config(config: &KafkaConfig) -> rdkafka::ClientConfig {
    non_group_client_config(
        config,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", OUTPUT_LINGER_MS),
        ],
    )
}

/// Waits up to `timeout` until `producer` has no record left in flight: each queued record
/// acknowledged, or failed and counted (its delivery report handled by the producer's polling
/// thread, which librdkafka finishes before it lets a record go).
///
/// Not rdkafka's `Producer::flush(timeout)`: between its checks that one runs the producer's
/// poll loop for the whole of the next 100 ms (`BaseProducer::poll` returns at its deadline,
/// not at the first delivery report), so every flush that found a record in flight took at
/// least 100 ms, and each snapshot round held the pipeline that long. Here each check is
/// librdkafka's flush without a wait (it also wakes the broker threads to send what lingers),
/// and the checks are a millisecond apart.
fn flush_producer(
    producer: &ThreadedProducer<DeliveryCounter>,
    timeout: Duration,
) -> Result<(), RdKafkaError> {
    // `None`: a timeout too long to reach (from the configuration) never runs out.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if deadline.is_none_or(|deadline| Instant::now() < deadline) =>
            {
                std::thread::sleep(FLUSH_CHECK_INTERVAL);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Queues one record of `topic` on `producer` (no value: a tombstone), retrying while the queue is
/// full until `deadline`; whether it was queued.
fn send_parts<HeaderValue: AsRef<str>>(
    producer: &ThreadedProducer<DeliveryCounter>,
    topic: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
    headers: &[(&str, HeaderValue)],
    deadline: Instant,
) -> bool {
    loop {
        let mut base_record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(topic).headers(owned_headers(headers));
        if let Some(value) = value {
            base_record = base_record.payload(value);
        }
        if let Some(key) = key {
            base_record = base_record.key(key);
        }
        match producer.send(base_record) {
            Ok(()) => return true,
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(QUEUE_FULL_RETRY);
            }
            Err((error, _)) => {
                tracing::warn!(%error, topic, "kafka output record dropped");
                return false;
            }
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // The instance's tombstone (queued at shutdown) should reach the status topic; a
        // status topic that does not exist must not hold the shutdown long.
        if let Some(status_producer) = &self.status_producer {
            if let Err(error) = flush_producer(status_producer, STATUS_FLUSH_GRACE) {
                tracing::warn!(%error, "status records not all delivered at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AlertStatus, EventType};

    fn timestamp(millis: i64) -> pbjson_types::Timestamp {
        pbjson_types::Timestamp {
            seconds: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
        }
    }

    /// A producer of `out.windows` (no linger) on librdkafka's mock broker, which answers each
    /// request after `round_trip`; the cluster lives as long as it is kept.
    fn producer_on_a_mock_broker(
        round_trip: Duration,
    ) -> (
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        ThreadedProducer<DeliveryCounter>,
        Metrics,
    ) {
        lingering_producer_on_a_mock_broker(round_trip, Duration::ZERO)
    }

    /// [`producer_on_a_mock_broker`] with records waiting up to `linger` for a batch.
    fn lingering_producer_on_a_mock_broker(
        round_trip: Duration,
        linger: Duration,
    ) -> (
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        ThreadedProducer<DeliveryCounter>,
        Metrics,
    ) {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("out.windows", 1, 1).unwrap();
        cluster.broker_round_trip_time(1, round_trip).unwrap();
        let metrics = Metrics::new(&["kafka"], "rules").unwrap();
        let topics = ["out.windows".to_string()];
        let context = DeliveryCounter::new(&topics, &metrics, Arc::new(AtomicU64::new(0)));
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", linger.as_millis().to_string())
            .create_with_context(context)
            .unwrap();
        (cluster, producer, metrics)
    }

    /// Queues one record of `out.windows` (a key, a value, a header).
    fn queue_one_record(producer: &ThreadedProducer<DeliveryCounter>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let queued = send_parts(
            producer,
            "out.windows",
            Some("k"),
            Some(b"v"),
            &[("a", "b")],
            deadline,
        );
        assert!(queued);
    }

    /// How long a flush of one newly queued record takes.
    fn send_and_flush(producer: &ThreadedProducer<DeliveryCounter>) -> Duration {
        queue_one_record(producer);
        let started = Instant::now();
        flush_producer(producer, Duration::from_secs(10)).unwrap();
        started.elapsed()
    }

    /// A flush returns once its records are acknowledged, not when a poll it started ends:
    /// rdkafka's own flush polled for the whole of the next 100 ms after any check that found
    /// a record in flight, so no flush of a record in flight was ever shorter. (librdkafka's
    /// mock broker, answering each request after 20 ms so the record is always in flight.)
    #[test]
    fn a_flush_returns_once_its_records_are_acknowledged() {
        let (_cluster, producer, metrics) = producer_on_a_mock_broker(Duration::from_millis(20));
        // The first record also waits for the connection and the topic's metadata.
        send_and_flush(&producer);
        let fastest = (0..5).map(|_| send_and_flush(&producer)).min().unwrap();
        assert!(
            fastest < Duration::from_millis(90),
            "fastest flush {fastest:?}"
        );
        assert_eq!(producer.in_flight_count(), 0);
        let produced = metrics
            .kafka_produced
            .with_label_values(&["out.windows"])
            .get();
        assert_eq!(
            produced, 6,
            "every flushed record was acknowledged and counted"
        );
    }

    /// A snapshot round's flush does not wait out the output producer's linger: librdkafka's
    /// flush sends a batch that is still waiting for more records at once.
    #[test]
    fn a_flush_sends_lingering_records_without_waiting_out_the_linger() {
        let linger = Duration::from_secs(2);
        let (_cluster, producer, _metrics) =
            lingering_producer_on_a_mock_broker(Duration::from_millis(1), linger);
        send_and_flush(&producer);
        let slowest = (0..3).map(|_| send_and_flush(&producer)).max().unwrap();
        assert!(slowest < linger / 4, "slowest flush {slowest:?}");
        assert_eq!(producer.in_flight_count(), 0);
    }

    #[test]
    fn the_output_producer_lingers_25_ms_unless_kafka_properties_say_otherwise() {
        let mut config = KafkaConfig::default();
        let settings = output_producer_config(&config);
        assert_eq!(settings.get("linger.ms"), Some("25"));
        assert_eq!(settings.get("enable.idempotence"), Some("true"));
        config
            .properties
            .insert("linger.ms".to_string(), "0".to_string());
        assert_eq!(output_producer_config(&config).get("linger.ms"), Some("0"));
    }

    /// A timeout the clock cannot reach (`kafka.state_timeout` is the configuration's, and
    /// rdkafka's own flush added it to the clock and panicked) is a wait without an end.
    #[test]
    fn a_flush_with_a_timeout_beyond_the_clock_does_not_panic() {
        let (_cluster, producer, _metrics) = producer_on_a_mock_broker(Duration::from_millis(20));
        queue_one_record(&producer);
        assert!(flush_producer(&producer, Duration::MAX).is_ok());
        assert_eq!(producer.in_flight_count(), 0);
    }

    /// A flush that runs out of time says so, after waiting its whole timeout.
    #[test]
    fn a_flush_with_records_never_acknowledged_times_out() {
        let (_cluster, producer, _metrics) = producer_on_a_mock_broker(Duration::from_secs(5));
        queue_one_record(&producer);
        let started = Instant::now();
        let result = flush_producer(&producer, Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(
            matches!(
                result,
                Err(RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            ),
            "{result:?}"
        );
        assert_eq!(producer.in_flight_count(), 1);
    }

    #[test]
    fn delivery_counters_are_registered_at_zero_and_found_by_their_topic() {
        let metrics = Metrics::new(&["kafka"], "rules").unwrap();
        let topics = ["out.windows".to_string(), "out.alerts".to_string()];
        let counter = DeliveryCounter::new(&topics, &metrics, Arc::new(AtomicU64::new(0)));
        let text = metrics.encode_text();
        for topic in &topics {
            for name in [
                "gridwatch_kafka_produced_total",
                "gridwatch_kafka_produce_errors_total",
            ] {
                assert!(
                    text.contains(&format!("{name}{{topic=\"{topic}\"}} 0")),
                    "{name} {topic}: {text}"
                );
            }
        }
        counter.counters_of("out.alerts").unwrap().produced.inc();
        counter.counters_of("out.alerts").unwrap().produced.inc();
        counter.count_error("out.windows");
        assert!(counter.counters_of("out.other").is_none());
        let count = |series: &prometheus::IntCounterVec, topic: &str| {
            series.with_label_values(&[topic]).get()
        };
        assert_eq!(count(&metrics.kafka_produced, "out.alerts"), 2);
        assert_eq!(count(&metrics.kafka_produce_errors, "out.windows"), 1);
        assert_eq!(count(&metrics.kafka_produced, "out.windows"), 0);
        assert_eq!(count(&metrics.kafka_produce_errors, "out.alerts"), 0);
    }

    #[test]
    fn window_records_are_keyed_by_grid_type_and_start_and_decode_back() {
        let window = CellWindow {
            grid_id: "41060200100101".to_string(),
            event_type: EventType::FireSmoke as i32,
            window_start: Some(timestamp(1_767_225_600_000)),
            window_end: Some(timestamp(1_767_225_660_000)),
            count: 3,
            ..CellWindow::default()
        };
        let record = window_record(&window, "w");
        assert_eq!(
            record.key.as_deref(),
            Some("41060200100101|FIRE_SMOKE|1767225600000")
        );
        assert_eq!(CellWindow::decode(record.value.as_slice()).unwrap(), window);
        let again = window_record(&window, "w");
        assert_eq!(again.value, record.value, "encoding is deterministic");
    }

    #[test]
    fn reused_window_buffers_hold_exactly_the_last_windows_key_and_value() {
        let long = CellWindow {
            grid_id: "41060200100101".to_string(),
            event_type: EventType::FireSmoke as i32,
            window_start: Some(timestamp(1_767_225_600_000)),
            window_end: Some(timestamp(1_767_225_660_000)),
            count: 300,
            severity_sum: 900,
            count_by_severity: vec![0, 100, 100, 100],
            ..CellWindow::default()
        };
        let short = CellWindow {
            grid_id: "4106".to_string(),
            event_type: 999,
            window_start: Some(timestamp(60_000)),
            count: 1,
            ..CellWindow::default()
        };
        let mut buffers = WindowRecordBuffers::default();
        for window in [&long, &short, &long] {
            buffers.encode(window).unwrap();
            let record = window_record(window, "w");
            assert_eq!(Some(buffers.key.as_str()), record.key.as_deref());
            assert_eq!(buffers.value, record.value);
        }
        buffers.encode(&short).unwrap();
        assert_eq!(
            buffers.key, "4106|999|60000",
            "an unknown type is keyed by its number"
        );
        assert_eq!(CellWindow::decode(buffers.value.as_slice()).unwrap(), short);
    }

    #[test]
    fn alert_records_carry_cloudevents_binary_headers_with_the_webhook_id() {
        let alert = Alert {
            alert_id: "a1".to_string(),
            fingerprint: "fp1".to_string(),
            status: AlertStatus::Resolved as i32,
            updated_at: Some(timestamp(5_000)),
            ..Alert::default()
        };
        let record = alert_record(&alert, "alerts", "gridwatch/test");
        assert_eq!(record.key.as_deref(), Some("fp1"));
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(header("ce_id").as_deref(), Some("a1:resolved:5000"));
        assert_eq!(
            header("ce_type").as_deref(),
            Some(crate::sink::cloudevents::RESOLVED_EVENT_TYPE)
        );
        assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(header("ce_source").as_deref(), Some("gridwatch/test"));
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(Alert::decode(record.value.as_slice()).unwrap(), alert);
    }

    #[test]
    fn status_records_are_keyed_by_group_and_partition_or_instance_and_shutdown_is_a_tombstone() {
        let partial = FraudPartial {
            partition: "gridwatch.events.v1/3".to_string(),
            ..FraudPartial::default()
        };
        let record = status_record(
            &ReadModelRecord::FraudPartial(partial.clone()),
            "status",
            "gw",
        )
        .unwrap();
        assert_eq!(record.key, "fraud/gw/gridwatch.events.v1/3");
        assert_eq!(
            FraudPartial::decode(record.value.unwrap().as_slice()).unwrap(),
            partial
        );
        assert_eq!(
            record.headers,
            vec![("content-type", "application/x-protobuf".to_string())]
        );
        let status = crate::proto::InstanceStatus {
            instance_id: "gw-1".to_string(),
            ..crate::proto::InstanceStatus::default()
        };
        let record =
            status_record(&ReadModelRecord::InstanceStatus(status), "status", "gw").unwrap();
        assert_eq!(record.key, "instance/gw-1");
        let gone = ReadModelRecord::InstanceGone {
            instance_id: "gw-1".to_string(),
        };
        let tombstone = status_record(&gone, "status", "gw").unwrap();
        assert_eq!(tombstone.key, "instance/gw-1");
        assert_eq!(tombstone.value, None);
        assert!(tombstone.headers.is_empty());
        let window =
            ReadModelRecord::Window(crate::window::read_back::ReadBackPane::of_cell_window(
                &CellWindow::default(),
                &crate::grid::GridRegistry::embedded(),
            ));
        assert_eq!(status_record(&window, "status", "gw"), None);
    }

    #[test]
    fn dead_letter_records_carry_the_original_bytes_and_the_reason() {
        let dead_letter = DeadLetter {
            reason: "invalid_json".to_string(),
            detail: "eof".to_string(),
            payload: b"{\"x\":".to_vec(),
            source: "kafka".to_string(),
            position: "partition 0 position 1".to_string(),
            event_id: String::new(),
        };
        let input_topics = vec!["events.a".to_string(), "events.b".to_string()];
        let record = dead_letter_record(&dead_letter, "dlq", &input_topics);
        assert_eq!(record.value, b"{\"x\":");
        assert_eq!(record.key, None);
        assert_eq!(
            record.headers,
            vec![
                ("reason", "invalid_json".to_string()),
                ("detail", "eof".to_string()),
                ("source", "kafka".to_string()),
                ("position", "partition 0 position 1".to_string()),
                ("kafka_topic", "events.a".to_string()),
                ("kafka_partition", "0".to_string()),
                ("kafka_offset", "1".to_string()),
            ]
        );
    }

    #[test]
    fn kafka_input_position_names_the_topic_of_a_dense_partition_id() {
        let input_topics = vec!["events.a".to_string(), "events.b".to_string()];
        let mut dead_letter = DeadLetter {
            source: "kafka".to_string(),
            position: format!("partition {} position 42", 65_536 + 3),
            ..DeadLetter::default()
        };
        assert_eq!(
            kafka_input_position(&dead_letter, &input_topics),
            Some(("events.b".to_string(), 3, 42))
        );
        dead_letter.position = format!("partition {} position 42", 2 * 65_536);
        assert_eq!(kafka_input_position(&dead_letter, &input_topics), None);
        dead_letter.position = "line 7".to_string();
        assert_eq!(kafka_input_position(&dead_letter, &input_topics), None);
        dead_letter.source = "file".to_string();
        dead_letter.position = "partition 0 position 1".to_string();
        assert_eq!(kafka_input_position(&dead_letter, &input_topics), None);
    }
}
