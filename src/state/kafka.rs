//! Partition state in a Kafka topic (`kafka.state_topic`, default `gridwatch.state.v1`): one
//! record per snapshot of one input partition, keyed `<group id>/<input topic>/<partition>`
//! (consumer groups are independent consumers, each with its own state), value = the
//! [`crate::state::snapshot`] bytes of that partition's pipeline, headers
//! `gridwatch_next_offset` (the input offset the state is complete up to, exclusive),
//! `gridwatch_input_topic` and `gridwatch_input_partition`.
//!
//! The snapshot of input partition `p` goes to state partition `p mod n` (`n` = the state
//! topic's partition count), so restoring a partition reads one state partition, from its
//! start to its end (end = librdkafka's partition EOF, which comes from Fetch responses; tansu's
//! ListOffsets high watermark is wrong, measured, so it is not used). Among the records of a
//! key, the one with the largest `gridwatch_next_offset` wins: state is a deterministic
//! function of the input prefix, so any snapshot at offset N — whoever wrote it, even a zombie
//! instance whose record arrived late — is the state after the first N records.
//!
//! The whole-city detector's learned history ([`crate::read_model::learned_history`]) is kept
//! in the same topic: key [`learned_history_key`], state partition 0, header
//! [`WATERMARK_HEADER`] (the detector's watermark when it was written; the latest wins).
//!
//! The topic grows by one record per partition and snapshot interval: on a real Kafka cluster
//! create it with `cleanup.policy=compact` (the latest record per key is all a restore needs)
//! and a `max.message.bytes` above the largest `gridwatch_kafka_state_snapshot_size_bytes`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::kafka::{
    header_text, non_group_client_config, KafkaError, INPUT_PARTITION_HEADER, INPUT_TOPIC_HEADER,
    NEXT_OFFSET_HEADER,
};

/// How long metadata lookups of the state topic may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest state record the producer accepts (librdkafka `message.max.bytes`).
const MAX_STATE_RECORD_BYTES: &str = "100000000";

/// The record key of an input partition's state in consumer group `group_id`: groups are
/// independent consumers of the same input, each with its own state.
pub fn state_key(group_id: &str, input_topic: &str, input_partition: i32) -> String {
    format!("{group_id}/{input_topic}/{input_partition}")
}

/// The record key of the whole-city detector's learned history in consumer group `group_id`
/// ([`crate::rules::whole_city`]): one per group, written by the instance that publishes
/// whole-city alerts, on state partition [`LEARNED_HISTORY_STATE_PARTITION`].
pub fn learned_history_key(group_id: &str) -> String {
    format!("{group_id}/whole-city/learned-history")
}

/// The state partition of the learned history (every state topic has a partition 0).
pub const LEARNED_HISTORY_STATE_PARTITION: i32 = 0;

/// Header of a learned-history record: the detector's watermark (epoch ms) when it was taken.
pub const WATERMARK_HEADER: &str = "gridwatch_watermark";

/// The state partition that holds input partition `input_partition`'s snapshots.
pub fn state_partition_of(input_partition: i32, state_partition_count: i32) -> i32 {
    input_partition.rem_euclid(state_partition_count.max(1))
}

/// The latest snapshot of one input partition found in the state topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// Input offset to resume consuming from.
    pub next_offset: u64,
    /// [`crate::state::snapshot`] bytes.
    pub bytes: Vec<u8>,
}

/// One snapshot to write.
#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    /// Input topic of the partition.
    pub input_topic: String,
    /// Input partition number.
    pub input_partition: i32,
    /// Input offset the state is complete up to (exclusive).
    pub next_offset: u64,
    /// [`crate::state::snapshot`] bytes.
    pub bytes: Vec<u8>,
}

/// The partition count of `topic`, looked up through `client`'s metadata.
fn partition_count<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| KafkaError::Client {
            context: format!("reading metadata of the state topic {topic}"),
            source,
        })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)
        .filter(|found| found.error().is_none())
        .map(|found| found.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        return Err(KafkaError::Client {
            context: format!(
                "the state topic {topic} does not exist (create it, compacted, before starting gridwatch)"
            ),
            source: ClientError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        });
    }
    Ok(i32::try_from(partitions).unwrap_or(i32::MAX))
}

/// Writes partition snapshots to the state topic (idempotent producer, compressed).
pub struct StateWriter {
    /// Idempotent, so a retried snapshot is never written twice out of order.
    producer: FutureProducer,
    /// The state topic.
    topic: String,
    /// The state topic's partition count, looked up at the first write (not at start: an
    /// instance started during a broker outage must keep running and wait it out).
    state_partition_count: std::sync::OnceLock<i32>,
    /// The consumer group whose state this is (part of every key).
    group_id: String,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StateWriter")
            .field("topic", &self.topic)
            .field("state_partition_count", &self.state_partition_count)
            .finish_non_exhaustive()
    }
}

impl StateWriter {
    /// Creates the producer; the state topic (which must exist) is looked up at the first
    /// write, so creating needs no broker.
    pub fn create(config: &KafkaConfig) -> Result<StateWriter, KafkaError> {
        let producer: FutureProducer = non_group_client_config(config, &[])
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("message.max.bytes", MAX_STATE_RECORD_BYTES)
            .set("linger.ms", "0")
            .create()
            .map_err(|source| KafkaError::Client {
                context: "creating the state producer".to_string(),
                source,
            })?;
        Ok(StateWriter {
            producer,
            topic: config.state_topic.clone(),
            state_partition_count: std::sync::OnceLock::new(),
            group_id: config.group_id.clone(),
        })
    }

    /// The state topic's partition count: looked up (off the async runtime, since the metadata
    /// request blocks) until it is known once.
    async fn state_partition_count(&self) -> Result<i32, KafkaError> {
        if let Some(count) = self.state_partition_count.get() {
            return Ok(*count);
        }
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let count = tokio::task::spawn_blocking(move || {
            partition_count(producer.client(), &topic, METADATA_TIMEOUT)
        })
        .await
        .map_err(|source| KafkaError::LookupAborted {
            context: "looking up the state topic",
            source,
        })??;
        Ok(*self.state_partition_count.get_or_init(|| count))
    }

    /// Produces every snapshot and waits (at most `timeout`) until the broker acknowledged
    /// all of them; the first failure is the error.
    pub async fn write(
        &self,
        snapshots: &[SnapshotRecord],
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let state_partition_count = self.state_partition_count().await?;
        let mut deliveries = Vec::with_capacity(snapshots.len());
        for snapshot in snapshots {
            let key = state_key(
                &self.group_id,
                &snapshot.input_topic,
                snapshot.input_partition,
            );
            let next_offset = snapshot.next_offset.to_string();
            let input_partition = snapshot.input_partition.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: NEXT_OFFSET_HEADER,
                    value: Some(next_offset.as_str()),
                })
                .insert(Header {
                    key: INPUT_TOPIC_HEADER,
                    value: Some(snapshot.input_topic.as_str()),
                })
                .insert(Header {
                    key: INPUT_PARTITION_HEADER,
                    value: Some(input_partition.as_str()),
                });
            let record = FutureRecord::to(&self.topic)
                .partition(state_partition_of(
                    snapshot.input_partition,
                    state_partition_count,
                ))
                .key(key.as_str())
                .payload(snapshot.bytes.as_slice())
                .headers(headers);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(source, _record)| KafkaError::Client {
                    context: format!("queueing a state snapshot of {key}"),
                    source,
                })?;
            deliveries.push(delivery);
        }
        self.await_acknowledged(deliveries, timeout).await
    }

    /// Writes the whole-city detector's learned history ([`crate::state::learned_history_snapshot`]
    /// bytes) as of the detector's `watermark_millis`, and waits (at most `timeout`) until the
    /// broker acknowledged it.
    pub async fn write_learned_history(
        &self,
        bytes: &[u8],
        watermark_millis: i64,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let key = learned_history_key(&self.group_id);
        let watermark = watermark_millis.to_string();
        let record = FutureRecord::to(&self.topic)
            .partition(LEARNED_HISTORY_STATE_PARTITION)
            .key(key.as_str())
            .payload(bytes)
            .headers(OwnedHeaders::new().insert(Header {
                key: WATERMARK_HEADER,
                value: Some(watermark.as_str()),
            }));
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(source, _record)| KafkaError::Client {
                context: format!("queueing the learned history {key}"),
                source,
            })?;
        self.await_acknowledged(vec![delivery], timeout).await
    }

    /// Waits (at most `timeout`) until every delivery is acknowledged; the first failure is
    /// the error.
    async fn await_acknowledged(
        &self,
        deliveries: Vec<rdkafka::producer::DeliveryFuture>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let all_acknowledged = async {
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_delivered)) => {}
                    Ok(Err((source, _message))) => {
                        return Err(KafkaError::Client {
                            context: format!("writing state to {}", self.topic),
                            source,
                        })
                    }
                    Err(_cancelled) => {
                        return Err(KafkaError::Client {
                            context: format!("writing state to {}", self.topic),
                            source: ClientError::Canceled,
                        })
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, all_acknowledged).await {
            Ok(result) => result,
            Err(_elapsed) => Err(KafkaError::Client {
                context: format!(
                    "state not acknowledged by {} within {timeout:?}",
                    self.topic
                ),
                source: ClientError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            }),
        }
    }
}

/// Client callbacks of the state reader: the partition ends it reads to are expected, not
/// errors worth a log line.
struct StateReaderContext;

impl rdkafka::client::ClientContext for StateReaderContext {
    fn error(&self, error: ClientError, reason: &str) {
        let is_partition_end = matches!(
            error,
            ClientError::PartitionEOF(_) | ClientError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if is_partition_end {
            return;
        }
        tracing::warn!(%error, reason, "state reader client error");
    }
}

impl rdkafka::consumer::ConsumerContext for StateReaderContext {}

/// Finds the latest snapshots of input partitions (blocking; runs on the consumer thread
/// during a rebalance).
pub struct StateReader {
    /// A consumer outside any group, assigned state partitions explicitly.
    consumer: BaseConsumer<StateReaderContext>,
    /// The state topic.
    topic: String,
    /// The consumer group whose state is read (part of every key).
    group_id: String,
}

impl std::fmt::Debug for StateReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StateReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl StateReader {
    /// Creates the reader.
    pub fn create(config: &KafkaConfig) -> Result<StateReader, KafkaError> {
        let consumer: BaseConsumer<StateReaderContext> = non_group_client_config(config, &[])
            .set("group.id", format!("{}-state-reader", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(StateReaderContext)
            .map_err(|source| KafkaError::Client {
                context: "creating the state reader".to_string(),
                source,
            })?;
        Ok(StateReader {
            consumer,
            topic: config.state_topic.clone(),
            group_id: config.group_id.clone(),
        })
    }

    /// The latest snapshot of each of `input_partitions` (input topic, partition) that has
    /// one, reading the state partitions that hold them to their end (at most `timeout`).
    pub fn read_latest(
        &self,
        input_partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<BTreeMap<(String, i32), PartitionSnapshot>, KafkaError> {
        let mut latest: BTreeMap<(String, i32), PartitionSnapshot> = BTreeMap::new();
        if input_partitions.is_empty() {
            return Ok(latest);
        }
        let state_partition_count =
            partition_count(self.consumer.client(), &self.topic, METADATA_TIMEOUT)?;
        let wanted_keys: BTreeMap<String, (String, i32)> = input_partitions
            .iter()
            .map(|(topic, partition)| {
                (
                    state_key(&self.group_id, topic, *partition),
                    (topic.clone(), *partition),
                )
            })
            .collect();
        let mut state_partitions: Vec<i32> = input_partitions
            .iter()
            .map(|(_, partition)| state_partition_of(*partition, state_partition_count))
            .collect();
        state_partitions.sort_unstable();
        state_partitions.dedup();
        self.read_to_end(&state_partitions, timeout, |message| {
            let Some(key) = message.key().and_then(|key| std::str::from_utf8(key).ok()) else {
                return;
            };
            let Some(input_partition) = wanted_keys.get(key) else {
                return;
            };
            let Some(next_offset) =
                header_text(message, NEXT_OFFSET_HEADER).and_then(|text| text.parse::<u64>().ok())
            else {
                tracing::warn!(
                    key,
                    offset = message.offset(),
                    "state record without a next offset; skipped"
                );
                return;
            };
            let is_newer = latest
                .get(input_partition)
                .is_none_or(|found| next_offset >= found.next_offset);
            if is_newer {
                latest.insert(
                    input_partition.clone(),
                    PartitionSnapshot {
                        next_offset,
                        bytes: message.payload().unwrap_or_default().to_vec(),
                    },
                );
            }
        })?;
        Ok(latest)
    }

    /// The whole-city detector's learned history, if the state topic holds one: of the records
    /// of its key, the one written at the latest detector watermark (a late record of an
    /// instance that no longer publishes loses to its successor's). Blocking; reads the state
    /// partition that holds it to its end (at most `timeout`).
    pub fn read_learned_history(&self, timeout: Duration) -> Result<Option<Vec<u8>>, KafkaError> {
        // A missing state topic is an error at once, not a wait until the timeout.
        partition_count(
            self.consumer.client(),
            &self.topic,
            timeout.min(METADATA_TIMEOUT),
        )?;
        let key = learned_history_key(&self.group_id);
        let mut latest: Option<(i64, Vec<u8>)> = None;
        self.read_to_end(&[LEARNED_HISTORY_STATE_PARTITION], timeout, |message| {
            if message.key() != Some(key.as_bytes()) {
                return;
            }
            let Some(watermark) =
                header_text(message, WATERMARK_HEADER).and_then(|text| text.parse::<i64>().ok())
            else {
                tracing::warn!(
                    offset = message.offset(),
                    "learned history without a watermark; skipped"
                );
                return;
            };
            if latest.as_ref().is_none_or(|(found, _)| watermark >= *found) {
                latest = Some((watermark, message.payload().unwrap_or_default().to_vec()));
            }
        })?;
        Ok(latest.map(|(_, bytes)| bytes))
    }

    /// Reads `state_partitions` from their start to their end (at most `timeout`), handing
    /// each record to `on_record`.
    fn read_to_end(
        &self,
        state_partitions: &[i32],
        timeout: Duration,
        mut on_record: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
    ) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        for state_partition in state_partitions {
            assignment
                .add_partition_offset(&self.topic, *state_partition, Offset::Beginning)
                .map_err(|source| KafkaError::Client {
                    context: format!("state partition {state_partition}"),
                    source,
                })?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|source| KafkaError::Client {
                context: format!("assigning {} state partitions", state_partitions.len()),
                source,
            })?;
        let mut unfinished: std::collections::BTreeSet<i32> =
            state_partitions.iter().copied().collect();
        let deadline = Instant::now() + timeout;
        let read_result = loop {
            if unfinished.is_empty() {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(KafkaError::Client {
                    context: format!(
                        "state partitions {unfinished:?} of {} not read to their end within {timeout:?}",
                        self.topic
                    ),
                    source: ClientError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut),
                });
            }
            let Some(polled) = self.consumer.poll(deadline - now) else {
                continue;
            };
            match polled {
                Ok(message) => on_record(&message),
                Err(ClientError::PartitionEOF(state_partition)) => {
                    unfinished.remove(&state_partition);
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "state reader error");
                }
            }
        };
        if let Err(error) = self.consumer.unassign() {
            tracing::warn!(%error, "state reader unassign failed");
        }
        read_result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_partitions_spread_over_the_state_partitions() {
        assert_eq!(state_partition_of(0, 6), 0);
        assert_eq!(state_partition_of(7, 6), 1);
        assert_eq!(state_partition_of(5, 1), 0);
        assert_eq!(state_partition_of(3, 0), 0);
        assert_eq!(
            state_key("gridwatch", "gridwatch.events.v1", 4),
            "gridwatch/gridwatch.events.v1/4"
        );
    }
}
