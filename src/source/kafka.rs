//! The Kafka source: an rdkafka [`StreamConsumer`] in a consumer group, and the simulator as a
//! Kafka load generator ([`produce_simulated`], behind `gridwatch produce`).
//!
//! Records become [`SourceRecord`]s whose `partition` is a dense id of (topic, partition) —
//! the topic's index in `kafka.topics` times 65 536 plus the Kafka partition — so that
//! watermarks stay per input partition even with several topics, and whose `position` is the
//! Kafka offset. A `content-type` header of `application/json` selects JSON for that record,
//! `application/x-protobuf` (or `application/protobuf`) protobuf; otherwise `kafka.format`
//! applies.
//!
//! Offsets are not auto-committed: the service calls [`KafkaOffsetCommitter::commit_processed`]
//! after a batch was processed and its outputs were written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaConfig, KafkaPayloadFormat};
use crate::proto::IncidentEvent;
use crate::source::simulator::Simulator;
use crate::source::{RecordPayload, Source, SourceError, SourceRecord};

/// The header naming a record's payload format.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// `content-type` of JSON records.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// `content-type` of protobuf records.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// Kafka partitions per topic representable in a source partition id.
const PARTITIONS_PER_TOPIC: u32 = 1 << 16;
/// Records the load generator has waiting for acknowledgement before it waits for them.
const MAX_IN_FLIGHT: usize = 1000;
/// How long to wait after a consumer error before polling again.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// Errors of the Kafka client.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration or an operation.
    #[error("kafka: {context}: {source}")]
    Client {
        /// What gridwatch was doing.
        context: String,
        /// The underlying error.
        source: rdkafka::error::KafkaError,
    },
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] SourceError),
}

/// The source partition id of `(topic_index, kafka_partition)`; `None` when out of range.
pub fn source_partition_id(topic_index: usize, kafka_partition: i32) -> Option<u32> {
    let topic_index = u32::try_from(topic_index).ok()?;
    let kafka_partition = u32::try_from(kafka_partition).ok()?;
    if kafka_partition >= PARTITIONS_PER_TOPIC {
        return None;
    }
    topic_index
        .checked_mul(PARTITIONS_PER_TOPIC)?
        .checked_add(kafka_partition)
}

/// The `(topic_index, kafka_partition)` of a source partition id.
pub fn split_source_partition_id(source_partition: u32) -> (usize, i32) {
    let topic_index = (source_partition / PARTITIONS_PER_TOPIC) as usize;
    // Below 2^16, so it fits an i32.
    let kafka_partition = (source_partition % PARTITIONS_PER_TOPIC) as i32;
    (topic_index, kafka_partition)
}

/// The payload format named by a `content-type` header value, if it names one.
pub fn format_of_content_type(content_type: &[u8]) -> Option<KafkaPayloadFormat> {
    let text = std::str::from_utf8(content_type).ok()?;
    let media_type = text.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case(JSON_CONTENT_TYPE) {
        return Some(KafkaPayloadFormat::Json);
    }
    if media_type.eq_ignore_ascii_case(PROTOBUF_CONTENT_TYPE)
        || media_type.eq_ignore_ascii_case("application/protobuf")
    {
        return Some(KafkaPayloadFormat::Protobuf);
    }
    None
}

/// The librdkafka settings of the consumer: gridwatch's, then `kafka.properties` over them.
fn consumer_client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    client_config
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in &config.properties {
        client_config.set(key, value);
    }
    client_config
}

/// Consumes the configured topics in the configured group.
pub struct KafkaSource {
    /// The consumer, shared with the [`KafkaOffsetCommitter`].
    consumer: Arc<StreamConsumer>,
    /// The subscribed topics, in config order (the topic index of source partition ids).
    topics: Arc<Vec<String>>,
    /// Format of records without a `content-type` header.
    default_format: KafkaPayloadFormat,
}

/// Commits processed offsets of a [`KafkaSource`]'s consumer.
#[derive(Clone)]
pub struct KafkaOffsetCommitter {
    /// The consumer whose group offsets are committed.
    consumer: Arc<StreamConsumer>,
    /// Topic names by topic index.
    topics: Arc<Vec<String>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaSource")
            .field("topics", &self.topics)
            .field("default_format", &self.default_format)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KafkaOffsetCommitter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaOffsetCommitter")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to `config.topics`; returns the source and the
    /// committer the pipeline uses once a batch's outputs are written.
    pub fn subscribe(
        config: &KafkaConfig,
    ) -> Result<(KafkaSource, KafkaOffsetCommitter), KafkaError> {
        let consumer: StreamConsumer =
            consumer_client_config(config)
                .create()
                .map_err(|source| KafkaError::Client {
                    context: "creating the consumer".to_string(),
                    source,
                })?;
        let topic_names: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_names)
            .map_err(|source| KafkaError::Client {
                context: format!("subscribing to {topic_names:?}"),
                source,
            })?;
        let consumer = Arc::new(consumer);
        let topics = Arc::new(config.topics.clone());
        let committer = KafkaOffsetCommitter {
            consumer: consumer.clone(),
            topics: topics.clone(),
        };
        let source = KafkaSource {
            consumer,
            topics,
            default_format: config.format,
        };
        Ok((source, committer))
    }

    /// The record of one Kafka message, or `None` for a topic or partition gridwatch cannot
    /// number (never for subscribed topics).
    fn record_of(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<SourceRecord> {
        let topic_index = self
            .topics
            .iter()
            .position(|topic| topic == message.topic())?;
        let partition = source_partition_id(topic_index, message.partition())?;
        let position = u64::try_from(message.offset()).ok()?;
        let header_format = message.headers().and_then(|headers| {
            headers
                .iter()
                .filter(|header| header.key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
                .find_map(|header| header.value.and_then(format_of_content_type))
        });
        let format = header_format.unwrap_or(self.default_format).input_format();
        let bytes = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
        Some(SourceRecord {
            payload: RecordPayload::Encoded { bytes, format },
            partition,
            position,
        })
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn next_batch(
        &mut self,
        max_records: usize,
    ) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let batch_size = max_records.max(1);
        let mut batch = Vec::with_capacity(batch_size.min(4096));
        loop {
            // The first record is awaited; the rest only while they are already buffered
            // (a zero timeout still polls the receive once).
            let received = if batch.is_empty() {
                self.consumer.recv().await
            } else {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_elapsed) => return Ok(Some(batch)),
                }
            };
            match received {
                Ok(message) => match self.record_of(&message) {
                    Some(record) => batch.push(record),
                    None => tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        "skipping a record gridwatch cannot number (partition beyond 65535?)"
                    ),
                },
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error");
                    if !batch.is_empty() {
                        return Ok(Some(batch));
                    }
                    tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                }
            }
            if batch.len() >= batch_size {
                return Ok(Some(batch));
            }
        }
    }
}

impl KafkaOffsetCommitter {
    /// Commits, per source partition, the offset after the largest processed position in
    /// `processed` (pairs of source partition id and Kafka offset), asynchronously.
    pub fn commit_processed(
        &self,
        processed: impl IntoIterator<Item = (u32, u64)>,
    ) -> Result<(), KafkaError> {
        let mut next_offsets: BTreeMap<u32, u64> = BTreeMap::new();
        for (partition, position) in processed {
            let next = position.saturating_add(1);
            let entry = next_offsets.entry(partition).or_insert(next);
            *entry = (*entry).max(next);
        }
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (source_partition, next_offset) in next_offsets {
            let (topic_index, kafka_partition) = split_source_partition_id(source_partition);
            let Some(topic) = self.topics.get(topic_index) else {
                continue;
            };
            let Ok(offset) = i64::try_from(next_offset) else {
                continue;
            };
            list.add_partition_offset(topic, kafka_partition, Offset::Offset(offset))
                .map_err(|source| KafkaError::Client {
                    context: format!("offset {offset} of {topic}/{kafka_partition}"),
                    source,
                })?;
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|source| KafkaError::Client {
                context: "committing offsets".to_string(),
                source,
            })
    }
}

/// What `gridwatch produce` sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// Destination topic.
    pub topic: String,
    /// Stop after this many events; `None` runs until the future is dropped.
    pub events: Option<u64>,
    /// Events per second; `None` sends as fast as the broker acknowledges.
    pub rate_per_second: Option<f64>,
    /// Payload format (and `content-type` header).
    pub format: KafkaPayloadFormat,
    /// librdkafka properties for the producer (e.g. TLS/SASL), applied last.
    pub properties: BTreeMap<String, String>,
}

/// The record key of an event: its grid id, else its device id, else its event id (so that
/// one cell's events stay in order on one partition).
pub fn record_key(event: &IncidentEvent) -> &str {
    if !event.grid_id.is_empty() {
        return &event.grid_id;
    }
    if !event.device_id.is_empty() {
        return &event.device_id;
    }
    &event.event_id
}

/// One event's record value in `format`.
pub fn encode_record_value(
    event: &IncidentEvent,
    format: KafkaPayloadFormat,
) -> Result<Vec<u8>, SourceError> {
    match format {
        KafkaPayloadFormat::Protobuf => Ok(event.encode_to_vec()),
        KafkaPayloadFormat::Json => {
            serde_json::to_vec(event).map_err(|source| SourceError::Serialize {
                event_id: event.event_id.clone(),
                source,
            })
        }
    }
}

/// Produces the simulator's events to `options.topic` (acknowledged by the broker) and returns
/// how many were sent.
pub async fn produce_simulated(
    options: &ProduceOptions,
    simulator: &mut Simulator,
) -> Result<u64, KafkaError> {
    let mut client_config = ClientConfig::new();
    client_config
        .set("bootstrap.servers", &options.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (key, value) in &options.properties {
        client_config.set(key, value);
    }
    let producer: FutureProducer = client_config
        .create()
        .map_err(|source| KafkaError::Client {
            context: "creating the producer".to_string(),
            source,
        })?;
    let content_type = match options.format {
        KafkaPayloadFormat::Protobuf => PROTOBUF_CONTENT_TYPE,
        KafkaPayloadFormat::Json => JSON_CONTENT_TYPE,
    };
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut in_flight = Vec::new();
    while options.events.is_none_or(|limit| sent < limit) {
        if let Some(rate) = options.rate_per_second.filter(|rate| *rate > 0.0) {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        let event = simulator.next_event();
        let value = encode_record_value(&event, options.format)?;
        let headers = OwnedHeaders::new().insert(Header {
            key: CONTENT_TYPE_HEADER,
            value: Some(content_type),
        });
        let record = FutureRecord::to(&options.topic)
            .key(record_key(&event))
            .payload(&value)
            .headers(headers);
        let delivery =
            producer
                .send_result(record)
                .map_err(|(source, _record)| KafkaError::Client {
                    context: format!("queueing a record for {}", options.topic),
                    source,
                })?;
        in_flight.push(delivery);
        sent += 1;
        if in_flight.len() >= MAX_IN_FLIGHT {
            await_deliveries(&mut in_flight, &options.topic).await?;
        }
    }
    await_deliveries(&mut in_flight, &options.topic).await?;
    Ok(sent)
}

/// Waits for every queued delivery; the first failure is the error.
async fn await_deliveries(
    in_flight: &mut Vec<rdkafka::producer::DeliveryFuture>,
    topic: &str,
) -> Result<(), KafkaError> {
    for delivery in in_flight.drain(..) {
        match delivery.await {
            Ok(Ok(_delivered)) => {}
            Ok(Err((source, _message))) => {
                return Err(KafkaError::Client {
                    context: format!("producing to {topic}"),
                    source,
                })
            }
            Err(_cancelled) => {
                return Err(KafkaError::Client {
                    context: format!("producing to {topic}"),
                    source: rdkafka::error::KafkaError::Canceled,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_partition_ids_round_trip_and_reject_out_of_range() {
        assert_eq!(source_partition_id(0, 5), Some(5));
        assert_eq!(source_partition_id(2, 7), Some(2 * 65_536 + 7));
        assert_eq!(split_source_partition_id(2 * 65_536 + 7), (2, 7));
        assert_eq!(source_partition_id(0, -1), None);
        assert_eq!(source_partition_id(0, 65_536), None);
        assert_eq!(source_partition_id(70_000, 0), None);
    }

    #[test]
    fn content_type_selects_the_format_and_ignores_parameters() {
        assert_eq!(
            format_of_content_type(b"application/json; charset=utf-8"),
            Some(KafkaPayloadFormat::Json)
        );
        assert_eq!(
            format_of_content_type(b"application/x-protobuf"),
            Some(KafkaPayloadFormat::Protobuf)
        );
        assert_eq!(format_of_content_type(b"text/plain"), None);
        assert_eq!(format_of_content_type(&[0xff, 0xfe]), None);
    }

    #[test]
    fn record_key_prefers_grid_then_device_then_event_id() {
        let mut event = IncidentEvent {
            event_id: "e".to_string(),
            device_id: "d".to_string(),
            grid_id: "g".to_string(),
            ..IncidentEvent::default()
        };
        assert_eq!(record_key(&event), "g");
        event.grid_id.clear();
        assert_eq!(record_key(&event), "d");
        event.device_id.clear();
        assert_eq!(record_key(&event), "e");
    }

    #[test]
    fn encoded_values_decode_back_to_the_event() {
        let event = IncidentEvent {
            event_id: "e-1".to_string(),
            grid_id: "41060200100101".to_string(),
            ..IncidentEvent::default()
        };
        let protobuf = encode_record_value(&event, KafkaPayloadFormat::Protobuf).unwrap();
        assert_eq!(IncidentEvent::decode(protobuf.as_slice()).unwrap(), event);
        let json = encode_record_value(&event, KafkaPayloadFormat::Json).unwrap();
        let decoded: IncidentEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(decoded, event);
    }
}
