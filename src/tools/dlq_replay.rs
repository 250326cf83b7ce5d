//! `gridwatch dlq replay`: re-inject dead letters after a fix.
//!
//! It reads exactly the record format [`crate::sink::kafka::dead_letter_record`] writes to
//! `gridwatch.deadletter.v1` (no key, value = the original or re-encoded payload, headers
//! `reason`, `detail`, `source`, `position` and, for Kafka input, `kafka_topic`,
//! `kafka_partition`, `kafka_offset`); the header names live once, in [`crate::kafka`], so
//! writer and reader cannot drift apart.
//!
//! The work is split in two:
//! - [`decide_replay`] (synchronous, no I/O): one dead-letter record and the selected reasons
//!   → whether it is replayed and, if so, the record to produce: the same value, the
//!   dead letter's key if it has one, a `content-type` header when the original format can be
//!   told from the headers ([`original_content_type`]), and `gridwatch_replayed_from` =
//!   `<topic>/<partition>/<offset>` of the dead letter so operators can trace it.
//! - [`replay_dead_letters`] (blocking): reads every partition of the dead-letter topic from
//!   the beginning up to its end as of the start (partitions found through metadata, assigned
//!   explicitly — no consumer group, nothing committed — and the end detected per partition
//!   with librdkafka's `enable.partition.eof`, because tansu reports wrong high watermarks),
//!   and produces the selected records through an idempotent producer, waiting for every
//!   acknowledgement.
//!
//! The end of a partition is its first end-of-partition event: dead letters appended while
//! the replay runs are included only if they arrive before the reader reaches that end. That
//! is also why replaying a topic into itself is refused: the reader could chase its own
//! output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaConfRes;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::{
    client_config, header_value, message_headers, owned_headers, KafkaError, CONTENT_TYPE_HEADER,
    JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE, REASON_HEADER, REPLAYED_FROM_HEADER, SOURCE_HEADER,
};

/// The per-reason key of dead letters without a `reason` header (not written by gridwatch,
/// but a dead-letter topic may hold anything).
pub const MISSING_REASON: &str = "(none)";
/// The default dead-letter topic (`kafka.sinks.dead_letter_topic`).
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "gridwatch.deadletter.v1";
/// The consumer's `group.id`: required by librdkafka, never joined or committed to.
pub const REPLAY_GROUP_ID: &str = "gridwatch-dlq-replay";
/// How long one consumer poll or producer flush waits before the loop checks progress.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Which reasons are replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonFilter {
    /// The selected reasons; empty = every reason (including dead letters without one).
    selected: BTreeSet<String>,
}

impl ReasonFilter {
    /// Every dead letter, whatever its reason.
    pub fn all() -> ReasonFilter {
        ReasonFilter::default()
    }

    /// Only dead letters whose reason is one of `reasons`; no reasons = all.
    pub fn only<I, S>(reasons: I) -> ReasonFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ReasonFilter {
            selected: reasons.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether a dead letter with `reason` is replayed.
    pub fn matches(&self, reason: &str) -> bool {
        self.selected.is_empty() || self.selected.contains(reason)
    }

    /// The selected reasons, sorted; empty = all.
    pub fn selected(&self) -> impl Iterator<Item = &str> {
        self.selected.iter().map(String::as_str)
    }
}

/// One record read from the dead-letter topic, borrowed from the consumer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterRecord<'a> {
    /// The dead-letter topic, for the trace header.
    pub topic: &'a str,
    /// The record's partition, for the trace header.
    pub partition: i32,
    /// The record's offset, for the trace header.
    pub offset: i64,
    /// The record's key: replayed as is (gridwatch writes none, other writers may).
    pub key: Option<&'a [u8]>,
    /// The record's value: the payload to replay.
    pub value: Option<&'a [u8]>,
    /// The record's headers in order: the reason and what tells the original format.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// A record to produce to the replay topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The dead letter's key, if it had one.
    pub key: Option<Vec<u8>>,
    /// The dead letter's value, byte for byte (`None` = a null value stays null).
    pub value: Option<Vec<u8>>,
    /// `content-type` (when the original format is known), then `gridwatch_replayed_from`.
    pub headers: Vec<(&'static str, String)>,
}

/// What to do with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayDecision {
    /// The dead letter's reason ([`MISSING_REASON`] without a `reason` header), for the
    /// per-reason counts.
    pub reason: String,
    /// The record to produce; `None` when the reason is not selected.
    pub replay: Option<ReplayRecord>,
}

/// The `content-type` the dead letter's payload was originally in, when the headers tell:
/// - a `content-type` header on the dead letter itself (gridwatch does not write one today;
///   kept if a writer does);
/// - reason `invalid_json` / `invalid_protobuf`: gridwatch read the record as JSON /
///   protobuf (from its own `content-type` header or the topic's configured format) and the
///   value is those original bytes, so the replay is read the same way;
/// - source `simulator`: the pipeline re-encodes simulator events as JSON.
///
/// Otherwise (a decodable event rejected later, from a file or Kafka) the value is the event
/// re-encoded in its input format, which the headers do not name: `None`, and the consumer's
/// default format applies.
pub fn original_content_type(headers: &[(&str, Option<&[u8]>)]) -> Option<String> {
    let declared = headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
        .find_map(|(_, value)| value.and_then(|bytes| std::str::from_utf8(bytes).ok()));
    if let Some(content_type) = declared {
        return Some(content_type.to_string());
    }
    match header_value(headers, REASON_HEADER) {
        Some(b"invalid_json") => return Some(JSON_CONTENT_TYPE.to_string()),
        Some(b"invalid_protobuf") => return Some(PROTOBUF_CONTENT_TYPE.to_string()),
        _ => {}
    }
    if header_value(headers, SOURCE_HEADER) == Some(b"simulator".as_slice()) {
        return Some(JSON_CONTENT_TYPE.to_string());
    }
    None
}

/// `<topic>/<partition>/<offset>` of a dead letter: the `gridwatch_replayed_from` value.
pub fn replayed_from(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// Whether `record` is replayed under `filter`, and the record to produce if so.
pub fn decide_replay(record: &DeadLetterRecord<'_>, filter: &ReasonFilter) -> ReplayDecision {
    let reason = header_value(record.headers, REASON_HEADER)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_else(|| MISSING_REASON.to_string());
    if !filter.matches(&reason) {
        return ReplayDecision {
            reason,
            replay: None,
        };
    }
    let mut headers = Vec::with_capacity(2);
    if let Some(content_type) = original_content_type(record.headers) {
        headers.push((CONTENT_TYPE_HEADER, content_type));
    }
    headers.push((
        REPLAYED_FROM_HEADER,
        replayed_from(record.topic, record.partition, record.offset),
    ));
    ReplayDecision {
        reason,
        replay: Some(ReplayRecord {
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers,
        }),
    }
}

/// Parses a `key=value` librdkafka property (`--property`).
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("{text:?} is not key=value"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{text:?} has an empty property name"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// What `gridwatch dlq replay` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// The dead-letter topic read.
    pub from_topic: String,
    /// The topic the selected dead letters are produced to.
    pub to_topic: String,
    /// Which reasons are replayed.
    pub reasons: ReasonFilter,
    /// Count only; produce nothing.
    pub dry_run: bool,
    /// librdkafka properties (TLS, SASL, timeouts) for the consumer and the producer, applied
    /// over gridwatch's settings.
    pub properties: BTreeMap<String, String>,
    /// How long reading or acknowledgement may make no progress before the replay fails (an
    /// unreachable broker must not hang the command).
    pub stall_timeout: Duration,
}

impl ReplayOptions {
    /// Options with every reason, producing, no extra properties and a 30 s stall timeout.
    pub fn new(brokers: &str, from_topic: &str, to_topic: &str) -> ReplayOptions {
        ReplayOptions {
            brokers: brokers.to_string(),
            from_topic: from_topic.to_string(),
            to_topic: to_topic.to_string(),
            reasons: ReasonFilter::all(),
            dry_run: false,
            properties: BTreeMap::new(),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// The dead-letter topic read.
    pub from_topic: String,
    /// The replay topic.
    pub to_topic: String,
    /// Partitions of the dead-letter topic read to their end.
    pub partitions: usize,
    /// Dead letters read.
    pub read: u64,
    /// Dead letters whose reason was selected.
    pub matched: u64,
    /// Matched dead letters produced and acknowledged (0 on a dry run).
    pub replayed: u64,
    /// Whether nothing was produced.
    pub dry_run: bool,
    /// Dead letters read per reason (sorted by reason): what the topic holds.
    pub read_by_reason: BTreeMap<String, u64>,
    /// Dead letters matched per reason (sorted by reason): what was (or would be) replayed.
    pub matched_by_reason: BTreeMap<String, u64>,
}

impl ReplaySummary {
    /// Counts one decision as read, and as matched if it is replayed.
    pub fn count(&mut self, decision: &ReplayDecision) {
        self.read += 1;
        *self
            .read_by_reason
            .entry(decision.reason.clone())
            .or_default() += 1;
        if decision.replay.is_some() {
            self.matched += 1;
            *self
                .matched_by_reason
                .entry(decision.reason.clone())
                .or_default() += 1;
        }
    }

    /// `reason=count` pairs, comma-separated, sorted by reason (`-` when empty).
    pub fn reason_counts_text(counts: &BTreeMap<String, u64>) -> String {
        if counts.is_empty() {
            return "-".to_string();
        }
        counts
            .iter()
            .map(|(reason, count)| format!("{reason}={count}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "read {} dead letters from {} ({} partitions), {} matched",
            self.read, self.from_topic, self.partitions, self.matched
        )?;
        if self.dry_run {
            write!(formatter, ", dry run: none replayed to {}", self.to_topic)?;
        } else {
            write!(
                formatter,
                ", {} replayed to {}",
                self.replayed, self.to_topic
            )?;
        }
        write!(
            formatter,
            "; read by reason: {}; matched by reason: {}",
            ReplaySummary::reason_counts_text(&self.read_by_reason),
            ReplaySummary::reason_counts_text(&self.matched_by_reason)
        )
    }
}

/// Tallies the producer's delivery reports.
#[derive(Default)]
struct DeliveryTally {
    /// Records acknowledged by the broker.
    acknowledged: AtomicU64,
    /// The first failed delivery: the dead letter it replays and why it failed.
    first_failure: Mutex<Option<(String, RdKafkaError)>>,
}

impl ClientContext for DeliveryTally {}

impl ProducerContext for DeliveryTally {
    /// The `gridwatch_replayed_from` value of the record, to name it in a failure.
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, delivery_result: &DeliveryResult<'_>, replayed_from: Self::DeliveryOpaque) {
        match delivery_result {
            Ok(_) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _message)) => {
                tracing::warn!(%error, replayed_from = %replayed_from, "replayed dead letter not delivered");
                if let Ok(mut first_failure) = self.first_failure.lock() {
                    if first_failure.is_none() {
                        *first_failure = Some((*replayed_from, error.clone()));
                    }
                }
            }
        }
    }
}

impl DeliveryTally {
    /// The first failed delivery, taken out.
    fn take_failure(&self) -> Option<(String, RdKafkaError)> {
        self.first_failure
            .lock()
            .ok()
            .and_then(|mut first_failure| first_failure.take())
    }
}

/// The dead-letter consumer's context: end-of-partition events are expected here (they end
/// the replay), so librdkafka's copy of them on the error callback is not logged as an
/// error; other client errors are warnings (librdkafka retries them; the stall timeout bounds
/// the wait).
struct ReplayConsumerContext;

impl ClientContext for ReplayConsumerContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            RdKafkaError::PartitionEOF(_) | RdKafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::warn!(%error, reason, "dead-letter consumer error");
        }
    }
}

impl ConsumerContext for ReplayConsumerContext {}

/// The partitions of `topic`, sorted, from the cluster's metadata.
fn topic_partitions(
    consumer: &BaseConsumer<ReplayConsumerContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| {
            KafkaError::client(format!("fetching the metadata of {topic}"), source)
        })?;
    let Some(topic_metadata) = metadata.topics().iter().find(|entry| entry.name() == topic) else {
        return Err(KafkaError::client(
            format!("topic {topic} is not in the cluster's metadata"),
            RdKafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        ));
    };
    if let Some(error) = topic_metadata.error() {
        let code = RDKafkaErrorCode::from(error);
        let context = if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            format!("topic {topic} does not exist")
        } else {
            format!("reading the metadata of {topic}")
        };
        return Err(KafkaError::client(
            context,
            RdKafkaError::MetadataFetch(code),
        ));
    }
    let mut partitions: Vec<i32> = topic_metadata
        .partitions()
        .iter()
        .map(|partition| partition.id())
        .collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(KafkaError::client(
            format!("topic {topic} has no partitions"),
            RdKafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        ));
    }
    Ok(partitions)
}

/// The consumer reading the dead-letter topic: assigned partitions, no group, no commits,
/// end-of-partition events on.
fn create_consumer(
    options: &ReplayOptions,
) -> Result<BaseConsumer<ReplayConsumerContext>, KafkaError> {
    // librdkafka's consumer refuses `assign` without a group id; with explicit assignment
    // the group is never joined and, auto-commit off, nothing is committed to it.
    let mut client_config = client_config(
        &options.brokers,
        &[
            ("group.id", REPLAY_GROUP_ID),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ],
        &options.properties,
    );
    // The end of each partition is detected with these events: not overridable.
    client_config.set("enable.partition.eof", "true");
    client_config
        .create_with_context(ReplayConsumerContext)
        .map_err(|source| KafkaError::client("creating the dead-letter consumer", source))
}

/// The idempotent producer of replayed records.
fn create_producer(options: &ReplayOptions) -> Result<BaseProducer<DeliveryTally>, KafkaError> {
    let mut client_config =
        client_config(&options.brokers, &[("linger.ms", "5")], &options.properties);
    client_config.set("enable.idempotence", "true");
    client_config
        .create_with_context(DeliveryTally::default())
        .map_err(|source| KafkaError::client("creating the replay producer", source))
}

/// Queues one replayed record, serving delivery reports while librdkafka's queue is full
/// (for at most `stall_timeout`).
fn queue_record(
    producer: &BaseProducer<DeliveryTally>,
    to_topic: &str,
    record: &ReplayRecord,
    stall_timeout: Duration,
) -> Result<(), KafkaError> {
    let replayed_from = record
        .headers
        .iter()
        .find(|(key, _)| *key == REPLAYED_FROM_HEADER)
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let deadline = Instant::now() + stall_timeout;
    loop {
        let headers = owned_headers(&record.headers);
        let mut base_record: BaseRecord<'_, [u8], [u8], Box<String>> =
            BaseRecord::with_opaque_to(to_topic, Box::new(replayed_from.clone())).headers(headers);
        if let Some(key) = &record.key {
            base_record = base_record.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base_record = base_record.payload(value.as_slice());
        }
        match producer.send(base_record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                producer.poll(POLL_INTERVAL);
            }
            Err((source, _)) => {
                return Err(KafkaError::client(
                    format!("queueing the replay of {replayed_from} for {to_topic}"),
                    source,
                ))
            }
        }
    }
}

/// Waits until every queued record is acknowledged or failed; fails when the number in
/// flight stops falling for `stall_timeout`.
fn await_acknowledgements(
    producer: &BaseProducer<DeliveryTally>,
    to_topic: &str,
    stall_timeout: Duration,
) -> Result<(), KafkaError> {
    let mut in_flight = producer.in_flight_count();
    let mut last_progress = Instant::now();
    loop {
        match producer.flush(POLL_INTERVAL) {
            Ok(()) => return Ok(()),
            Err(RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(source) => {
                return Err(KafkaError::client(
                    format!("waiting for the acknowledgements of {to_topic}"),
                    source,
                ))
            }
        }
        let now_in_flight = producer.in_flight_count();
        if now_in_flight < in_flight {
            in_flight = now_in_flight;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() >= stall_timeout {
            return Err(KafkaError::client(
                format!(
                    "{in_flight} replayed records to {to_topic} still unacknowledged after {stall_timeout:?} without progress"
                ),
                RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
            ));
        }
    }
}

/// Replays the selected dead letters of `options.from_topic` to `options.to_topic` (see the
/// module docs); returns the counts, also logged as one structured `info` line. A record not
/// acknowledged by the broker fails the replay, naming it; so does a topic that does not
/// exist, or no progress for `options.stall_timeout`.
pub fn replay_dead_letters(options: &ReplayOptions) -> Result<ReplaySummary, KafkaError> {
    replay_dead_letters_with_progress(options, &mut |_| {})
}

/// As [`replay_dead_letters`], telling `on_read` how many dead letters were read after each
/// one (the command line's progress).
pub fn replay_dead_letters_with_progress(
    options: &ReplayOptions,
    on_read: &mut dyn FnMut(u64),
) -> Result<ReplaySummary, KafkaError> {
    if options.from_topic == options.to_topic {
        return Err(KafkaError::client(
            "refusing to replay a dead-letter topic into itself",
            RdKafkaError::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "--to must differ from --from".to_string(),
                "to".to_string(),
                options.to_topic.clone(),
            ),
        ));
    }
    let consumer = create_consumer(options)?;
    let partitions = topic_partitions(&consumer, &options.from_topic, options.stall_timeout)?;
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(&options.from_topic, *partition, Offset::Beginning)
            .map_err(|source| KafkaError::client("building the partition assignment", source))?;
    }
    consumer.assign(&assignment).map_err(|source| {
        KafkaError::client(
            format!("assigning the partitions of {}", options.from_topic),
            source,
        )
    })?;
    let producer = if options.dry_run {
        None
    } else {
        Some(create_producer(options)?)
    };
    let mut summary = ReplaySummary {
        from_topic: options.from_topic.clone(),
        to_topic: options.to_topic.clone(),
        partitions: partitions.len(),
        dry_run: options.dry_run,
        ..ReplaySummary::default()
    };
    let mut unfinished: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut last_progress = Instant::now();
    let stalled = |waiting_partitions: &BTreeSet<i32>| {
        KafkaError::client(
            format!(
                "no progress reading partitions {waiting_partitions:?} of {} for {:?}",
                options.from_topic, options.stall_timeout
            ),
            RdKafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
        )
    };
    while !unfinished.is_empty() {
        if let Some(producer) = &producer {
            producer.poll(Duration::ZERO);
            if let Some((replayed_from, source)) = producer.context().take_failure() {
                return Err(delivery_failure(options, replayed_from, source));
            }
        }
        let message = match consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => message,
            Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
                last_progress = Instant::now();
                continue;
            }
            Some(Err(error)) => {
                tracing::warn!(%error, topic = %options.from_topic, "dead-letter consumer error; retrying");
                if last_progress.elapsed() >= options.stall_timeout {
                    return Err(stalled(&unfinished));
                }
                continue;
            }
            None => {
                if last_progress.elapsed() >= options.stall_timeout {
                    return Err(stalled(&unfinished));
                }
                continue;
            }
        };
        last_progress = Instant::now();
        if !unfinished.contains(&message.partition()) {
            continue; // appended after that partition's end was reached
        }
        let headers = message_headers(&message);
        let record = DeadLetterRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
            headers: &headers,
        };
        let decision = decide_replay(&record, &options.reasons);
        summary.count(&decision);
        on_read(summary.read);
        if let (Some(producer), Some(replay)) = (&producer, &decision.replay) {
            queue_record(producer, &options.to_topic, replay, options.stall_timeout)?;
        }
    }
    if let Some(producer) = &producer {
        await_acknowledgements(producer, &options.to_topic, options.stall_timeout)?;
        if let Some((replayed_from, source)) = producer.context().take_failure() {
            return Err(delivery_failure(options, replayed_from, source));
        }
        summary.replayed = producer.context().acknowledged.load(Ordering::Relaxed);
    }
    tracing::info!(
        from = %summary.from_topic,
        to = %summary.to_topic,
        partitions = summary.partitions,
        read = summary.read,
        matched = summary.matched,
        replayed = summary.replayed,
        dry_run = summary.dry_run,
        read_by_reason = %ReplaySummary::reason_counts_text(&summary.read_by_reason),
        matched_by_reason = %ReplaySummary::reason_counts_text(&summary.matched_by_reason),
        "dead-letter replay finished"
    );
    Ok(summary)
}

/// The error of a failed delivery, naming the dead letter whose replay failed.
fn delivery_failure(
    options: &ReplayOptions,
    replayed_from: String,
    source: RdKafkaError,
) -> KafkaError {
    KafkaError::client(
        format!(
            "the replay of dead letter {replayed_from} to {} was not delivered (records already acknowledged stay on {}; re-running replays them again)",
            options.to_topic, options.to_topic
        ),
        source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter<'a>(headers: &'a [(&'a str, Option<&'a [u8]>)]) -> DeadLetterRecord<'a> {
        DeadLetterRecord {
            topic: "gridwatch.deadletter.v1",
            partition: 2,
            offset: 17,
            key: None,
            value: Some(b"payload"),
            headers,
        }
    }

    fn header<'a>(record: &'a ReplayRecord, name: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn selected_reason_is_replayed_with_same_bytes_and_trace_header() {
        let headers = [
            ("reason", Some(b"unknown_grid".as_slice())),
            ("detail", Some(b"no cell".as_slice())),
            ("source", Some(b"kafka".as_slice())),
        ];
        let record = DeadLetterRecord {
            key: Some(b"grid-7"),
            ..dead_letter(&headers)
        };
        let decision = decide_replay(&record, &ReasonFilter::only(["unknown_grid"]));
        assert_eq!(decision.reason, "unknown_grid");
        let replay = decision.replay.expect("replayed");
        assert_eq!(replay.value.as_deref(), Some(b"payload".as_slice()));
        assert_eq!(replay.key.as_deref(), Some(b"grid-7".as_slice()));
        assert_eq!(
            replay.headers,
            vec![(
                REPLAYED_FROM_HEADER,
                "gridwatch.deadletter.v1/2/17".to_string()
            )],
            "a re-encoded Kafka event's format is unknown: no content-type"
        );
    }

    #[test]
    fn unselected_reason_is_counted_but_not_replayed() {
        let headers = [("reason", Some(b"late".as_slice()))];
        let decision = decide_replay(
            &dead_letter(&headers),
            &ReasonFilter::only(["unknown_grid", "invalid_json"]),
        );
        assert_eq!(decision.reason, "late");
        assert_eq!(decision.replay, None);
    }

    #[test]
    fn no_reason_filter_replays_everything_including_records_without_reason() {
        let headers = [("detail", Some(b"x".as_slice()))];
        let decision = decide_replay(&dead_letter(&headers), &ReasonFilter::all());
        assert_eq!(decision.reason, MISSING_REASON);
        assert!(decision.replay.is_some());
        let empty: [&str; 0] = [];
        assert!(ReasonFilter::only(empty).matches("anything"));
        assert!(!ReasonFilter::only(["late"]).matches(MISSING_REASON));
    }

    #[test]
    fn content_type_follows_the_format_gridwatch_read_the_record_in() {
        let json = [("reason", Some(b"invalid_json".as_slice()))];
        assert_eq!(
            original_content_type(&json).as_deref(),
            Some("application/json")
        );
        let protobuf = [("reason", Some(b"invalid_protobuf".as_slice()))];
        assert_eq!(
            original_content_type(&protobuf).as_deref(),
            Some("application/x-protobuf")
        );
        let simulator = [
            ("reason", Some(b"unknown_grid".as_slice())),
            ("source", Some(b"simulator".as_slice())),
        ];
        assert_eq!(
            original_content_type(&simulator).as_deref(),
            Some("application/json")
        );
        let kafka_event = [
            ("reason", Some(b"unknown_grid".as_slice())),
            ("source", Some(b"kafka".as_slice())),
        ];
        assert_eq!(original_content_type(&kafka_event), None);
        let declared = [
            ("reason", Some(b"invalid_protobuf".as_slice())),
            ("Content-Type", Some(b"application/json".as_slice())),
        ];
        assert_eq!(
            original_content_type(&declared).as_deref(),
            Some("application/json"),
            "a declared content-type wins over the reason"
        );
        let replay = decide_replay(&dead_letter(&json), &ReasonFilter::all())
            .replay
            .expect("replayed");
        assert_eq!(header(&replay, "content-type"), Some("application/json"));
        assert_eq!(
            replay.headers.last().map(|(key, _)| *key),
            Some(REPLAYED_FROM_HEADER)
        );
    }

    #[test]
    fn null_value_and_non_utf8_reason_do_not_panic_and_stay_as_they_are() {
        let headers = [("reason", Some([0xff, 0xfe].as_slice())), ("reason", None)];
        let record = DeadLetterRecord {
            value: None,
            ..dead_letter(&headers)
        };
        let decision = decide_replay(&record, &ReasonFilter::all());
        assert_eq!(decision.reason, "\u{fffd}\u{fffd}");
        assert_eq!(decision.replay.expect("replayed").value, None);
    }

    #[test]
    fn summary_counts_read_and_matched_per_reason_in_sorted_order() {
        let mut summary = ReplaySummary {
            from_topic: "dlq".to_string(),
            to_topic: "events".to_string(),
            partitions: 3,
            ..ReplaySummary::default()
        };
        let filter = ReasonFilter::only(["unknown_grid"]);
        for reason in ["unknown_grid", "late", "unknown_grid", "invalid_json"] {
            let headers = [("reason", Some(reason.as_bytes()))];
            summary.count(&decide_replay(&dead_letter(&headers), &filter));
        }
        assert_eq!(summary.read, 4);
        assert_eq!(summary.matched, 2);
        assert_eq!(
            ReplaySummary::reason_counts_text(&summary.read_by_reason),
            "invalid_json=1,late=1,unknown_grid=2"
        );
        assert_eq!(
            ReplaySummary::reason_counts_text(&summary.matched_by_reason),
            "unknown_grid=2"
        );
        summary.replayed = 2;
        assert_eq!(
            summary.to_string(),
            "read 4 dead letters from dlq (3 partitions), 2 matched, 2 replayed to events; \
             read by reason: invalid_json=1,late=1,unknown_grid=2; matched by reason: unknown_grid=2"
        );
        summary.dry_run = true;
        assert!(summary
            .to_string()
            .contains("dry run: none replayed to events"));
    }

    #[test]
    fn properties_parse_as_key_equals_value() {
        assert_eq!(
            parse_property("security.protocol=sasl_ssl"),
            Ok(("security.protocol".to_string(), "sasl_ssl".to_string()))
        );
        assert_eq!(
            parse_property("sasl.password=a=b"),
            Ok(("sasl.password".to_string(), "a=b".to_string()))
        );
        assert!(parse_property("no-equals").is_err());
        assert!(parse_property("=value").is_err());
    }

    #[test]
    fn replaying_a_topic_into_itself_is_refused_before_connecting() {
        let options = ReplayOptions::new("127.0.0.1:1", "dlq", "dlq");
        let error = replay_dead_letters(&options).expect_err("refused");
        assert!(error.to_string().contains("into itself"), "{error}");
    }
}
