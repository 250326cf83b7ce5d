//! The city-wide read model fed from gridwatch's own output topics: with a Kafka source and
//! Kafka outputs, every instance reads the windows, alerts and status topics **outside** the
//! consumer group, so its model shows the whole city whichever input partitions it owns, and
//! survives rebalances untouched (see `docs/read-model-and-api.md`).
//!
//! - [`KafkaFeed`]: a librdkafka consumer on its own thread with no group membership: every
//!   partition of the three topics is assigned by hand (new partitions are picked up by a
//!   periodic metadata refresh); nothing is ever committed (`enable.auto.commit=false`, a
//!   `group.id` unique to the process only because librdkafka wants one);
//!   `isolation.level=read_committed`. Windows and alerts are read from the offset of
//!   "now − longest view − one pane" (offsets-for-times; from the beginning when the broker
//!   does not answer it), the compacted status topic from the beginning. Records become
//!   [`OutputRecord`]s ([`RecordDecoder`]; a window by its fields into a `Copy` pane, its
//!   grid resolved here); undecodable ones are counted in
//!   `gridwatch_read_model_undecodable_total{topic}` and skipped. Batches go to the writer
//!   over a bounded channel (a slow writer slows the reader, never the pipeline).
//! - [`run_kafka_read_model`]: the task owning the [`ReadModelWriter`]: applies the batches
//!   and publishes a snapshot about once a second, with the feed's lag
//!   (`gridwatch_read_model_lag_seconds`: wall time minus the newest record read, 0 once
//!   every partition is read to its end).
//! - [`KafkaReadModel`]: both together, what the service starts and stops.
//!
//! The client takes the same settings as every other Kafka client of gridwatch
//! ([`crate::kafka::non_group_client_config`]: `kafka.properties`, TLS and SASL, with the
//! secrets of `kafka.property_files` already read in).

// No panic path reachable from a record (README "Security"): sizes are checked before
// decoding, so a record cannot make the reader allocate more than `MAX_RECORD_BYTES` for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KafkaConfig, KafkaPayloadFormat, SourceKind};
use crate::grid::GridRegistry;
use crate::kafka::{
    format_of_content_type, non_group_client_config, KafkaError, CONTENT_TYPE_HEADER,
    STATUS_FRAUD_KEY_PREFIX, STATUS_INSTANCE_KEY_PREFIX,
};
use crate::metrics::Metrics;
use crate::proto::{CellWindow, FraudPartial, InstanceStatus};
use crate::read_model::detection::WholeCityDetection;
use crate::read_model::{OutputRecord, ReadModelWriter};
use crate::time::{duration_millis, wall_clock_millis};
use crate::window::read_back::{CellWindowFields, ReadBackPane};

/// Largest record value decoded; a longer one is skipped (our records are a few KiB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest status-topic key read (ours are a group, a topic and a partition, or an id).
const MAX_KEY_BYTES: usize = 1024;
/// Records polled before a batch goes to the writer.
const RECORDS_PER_BATCH: usize = 1024;
/// How long records are gathered into one batch once the first arrived.
const BATCH_LINGER: Duration = Duration::from_millis(20);
/// How long one poll waits when nothing arrives.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the topics' partitions are looked up again (partitions added later).
const METADATA_REFRESH: Duration = Duration::from_secs(30);
/// How soon a topic that could not be described is looked up again.
const METADATA_RETRY: Duration = Duration::from_secs(2);
/// How long a metadata or offsets-for-times request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the writer publishes a snapshot.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Batches queued between the reader and the writer.
const CHANNEL_BATCHES: usize = 64;

/// One batch from the reader thread to the writer task.
#[derive(Debug, Default)]
pub struct FeedBatch {
    /// The records, in the order read (per partition).
    pub records: Vec<OutputRecord>,
    /// Every assigned partition was read to its end once this batch is applied (sent once,
    /// in order with the records: the whole-city detector's catch-up ends there).
    pub read_to_end: bool,
}

/// Which output topic a record came from: it decides how the record decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `kafka.sinks.windows_topic`: `CellWindow`s.
    Windows,
    /// `kafka.sinks.alerts_topic`: `Alert`s.
    Alerts,
    /// `kafka.sinks.status_topic`: `FraudPartial`s and `InstanceStatus`es by key.
    Status,
}

impl TopicKind {
    /// Whether the topic is read from "now − lookback" (windows, alerts) rather than from its
    /// beginning (the compacted status topic, whose every key is current).
    fn reads_from_lookback(self) -> bool {
        matches!(self, TopicKind::Windows | TopicKind::Alerts)
    }
}

/// What the feed reads, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaFeedSettings {
    /// The topics and their kinds.
    pub topics: Vec<(String, TopicKind)>,
    /// `kafka.group_id`: only this deployment's fraud partials are read (a status topic may be
    /// shared).
    pub group_id: String,
    /// How far back windows and alerts are read: the longest view plus one pane, so the
    /// longest view is complete from the start.
    pub lookback_millis: i64,
}

impl KafkaFeedSettings {
    /// The feed of `config`, when the read model is built from the output topics: a Kafka
    /// source with `kafka.sinks.enabled` and windows and alerts topics. `None` otherwise (the
    /// pipeline then feeds the model in-process). Without a status topic the model has no
    /// fraud counts and no instances.
    pub fn from_config(config: &Config) -> Option<KafkaFeedSettings> {
        let sinks = &config.kafka.sinks;
        if config.source.kind != SourceKind::Kafka
            || !sinks.enabled
            || sinks.windows_topic.is_empty()
            || sinks.alerts_topic.is_empty()
        {
            return None;
        }
        let mut topics = vec![
            (sinks.windows_topic.clone(), TopicKind::Windows),
            (sinks.alerts_topic.clone(), TopicKind::Alerts),
        ];
        if !sinks.status_topic.is_empty() {
            topics.push((sinks.status_topic.clone(), TopicKind::Status));
        }
        let longest_view = config
            .window
            .views
            .iter()
            .copied()
            .max()
            .unwrap_or_default();
        Some(KafkaFeedSettings {
            topics,
            group_id: config.kafka.group_id.clone(),
            lookback_millis: duration_millis(longest_view)
                .saturating_add(duration_millis(config.window.size)),
        })
    }
}

/// Why a record was skipped (counted per topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// The value or key is longer than the reader accepts.
    #[error("record too large")]
    TooLarge,
    /// A `content-type` naming neither protobuf nor JSON.
    #[error("unknown content-type")]
    UnknownContentType,
    /// The value does not decode as the topic's message.
    #[error("value does not decode")]
    Value,
    /// A windows or alerts record without a value.
    #[error("no value")]
    NoValue,
    /// A status-topic key that is missing, not UTF-8 or of an unknown kind.
    #[error("unknown status key")]
    Key,
    /// A status record whose key names another partition or instance than its value.
    #[error("key and value disagree")]
    KeyMismatch,
}

/// Decodes output-topic records into [`OutputRecord`]s, a window's grid resolved in the
/// registry the model uses.
#[derive(Debug)]
pub struct RecordDecoder {
    registry: Arc<GridRegistry>,
    /// Reused from window to window (see [`CellWindowFields`]).
    window_fields: CellWindowFields,
}

impl RecordDecoder {
    /// A decoder resolving grids in `registry`.
    pub fn new(registry: Arc<GridRegistry>) -> RecordDecoder {
        RecordDecoder {
            registry,
            window_fields: CellWindowFields::default(),
        }
    }

    /// The read-model record of one output-topic record: `Ok(None)` for a record that is
    /// deliberately not applied (another deployment's fraud partial, a fraud partial's
    /// tombstone). `content_type` is the record's `content-type` header (protobuf without
    /// one).
    pub fn decode(
        &mut self,
        kind: TopicKind,
        group_id: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        content_type: Option<&[u8]>,
    ) -> Result<Option<OutputRecord>, Undecodable> {
        if value.is_some_and(|value| value.len() > MAX_RECORD_BYTES)
            || key.is_some_and(|key| key.len() > MAX_KEY_BYTES)
        {
            return Err(Undecodable::TooLarge);
        }
        let format = match content_type {
            None => KafkaPayloadFormat::Protobuf,
            Some(content_type) => {
                format_of_content_type(content_type).ok_or(Undecodable::UnknownContentType)?
            }
        };
        match kind {
            TopicKind::Windows => {
                let value = value.ok_or(Undecodable::NoValue)?;
                Ok(Some(OutputRecord::Window(
                    self.decode_window(value, format)?,
                )))
            }
            TopicKind::Alerts => {
                let value = value.ok_or(Undecodable::NoValue)?;
                Ok(Some(OutputRecord::Alert(Box::new(decode_value(
                    value, format,
                )?))))
            }
            TopicKind::Status => decode_status(group_id, key, value, format),
        }
    }

    /// A window record: protobuf by its fields into the reused buffers, JSON whole.
    fn decode_window(
        &mut self,
        value: &[u8],
        format: KafkaPayloadFormat,
    ) -> Result<ReadBackPane, Undecodable> {
        match format {
            KafkaPayloadFormat::Protobuf => self
                .window_fields
                .decode_pane(value, &self.registry)
                .map_err(|_| Undecodable::Value),
            KafkaPayloadFormat::Json => {
                let window: CellWindow = decode_value(value, format)?;
                Ok(ReadBackPane::of_cell_window(&window, &self.registry))
            }
        }
    }
}

/// A status-topic record by its key: `fraud/<group>/<topic>/<partition>` or
/// `instance/<id>` (no value: the instance stopped).
fn decode_status(
    group_id: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    format: KafkaPayloadFormat,
) -> Result<Option<OutputRecord>, Undecodable> {
    let key = key
        .and_then(|key| std::str::from_utf8(key).ok())
        .ok_or(Undecodable::Key)?;
    if let Some(rest) = key.strip_prefix(STATUS_FRAUD_KEY_PREFIX) {
        let Some(partition) = rest
            .strip_prefix(group_id)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            // Another deployment's group on a shared topic.
            return Ok(None);
        };
        let Some(value) = value else {
            // A partition's counts deleted: the model keeps the last ones it saw (they are
            // still that partition's history).
            return Ok(None);
        };
        let partial: FraudPartial = decode_value(value, format)?;
        if partial.partition != partition {
            return Err(Undecodable::KeyMismatch);
        }
        return Ok(Some(OutputRecord::FraudPartial(partial)));
    }
    if let Some(instance_id) = key.strip_prefix(STATUS_INSTANCE_KEY_PREFIX) {
        if instance_id.is_empty() {
            return Err(Undecodable::Key);
        }
        let Some(value) = value else {
            return Ok(Some(OutputRecord::InstanceGone {
                instance_id: instance_id.to_string(),
            }));
        };
        let status: InstanceStatus = decode_value(value, format)?;
        if status.instance_id != instance_id {
            return Err(Undecodable::KeyMismatch);
        }
        return Ok(Some(OutputRecord::InstanceStatus(status)));
    }
    Err(Undecodable::Key)
}

/// Decodes a protobuf or proto3-JSON value.
fn decode_value<T>(value: &[u8], format: KafkaPayloadFormat) -> Result<T, Undecodable>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match format {
        KafkaPayloadFormat::Protobuf => T::decode(value).map_err(|_| Undecodable::Value),
        KafkaPayloadFormat::Json => serde_json::from_slice(value).map_err(|_| Undecodable::Value),
    }
}

/// The feed's lag in seconds, shared by the reader thread (which measures it) and the writer
/// (which shows it in the pipeline strip).
#[derive(Debug, Clone, Default)]
pub struct FeedLag(Arc<AtomicU64>);

impl FeedLag {
    /// The last measured lag, seconds.
    pub fn seconds(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, seconds: f64) {
        self.0.store(seconds.to_bits(), Ordering::Relaxed);
    }
}

/// Where a partition's reading started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// At this offset (offsets-for-times answered).
    At(i64),
    /// At the beginning (the status topic, a partition added later, or offsets-for-times
    /// not answered).
    Beginning,
    /// At the end as librdkafka finds it when it starts fetching (no record in the lookback,
    /// and the end could not be read before asking).
    End,
}

impl StartOffset {
    fn offset(self) -> Offset {
        match self {
            StartOffset::At(offset) => Offset::Offset(offset),
            StartOffset::Beginning => Offset::Beginning,
            StartOffset::End => Offset::End,
        }
    }
}

/// One assigned partition's progress.
#[derive(Debug, Clone, Copy)]
struct PartitionProgress {
    /// Where reading started.
    start: StartOffset,
    /// The offset after the last record read, once one was.
    next_offset: Option<i64>,
}

/// The broker's view of one partition, from librdkafka statistics.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionEnds {
    /// Log start offset.
    low: i64,
    /// The end a `read_committed` consumer can reach (last stable offset, else the high
    /// watermark).
    end: i64,
}

/// Keeps the partitions' ends from librdkafka statistics (served by `poll`).
#[derive(Default)]
struct FeedContext {
    ends: Mutex<BTreeMap<(String, i32), PartitionEnds>>,
}

impl ClientContext for FeedContext {
    fn stats(&self, statistics: Statistics) {
        let mut ends = lock(&self.ends);
        for (topic_name, topic) in &statistics.topics {
            for (kafka_partition, partition) in &topic.partitions {
                let end = if partition.ls_offset >= 0 {
                    partition.ls_offset
                } else {
                    partition.hi_offset
                };
                if end < 0 || *kafka_partition < 0 {
                    continue;
                }
                ends.insert(
                    (topic_name.clone(), *kafka_partition),
                    PartitionEnds {
                        low: partition.lo_offset.max(0),
                        end,
                    },
                );
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "read model kafka client error");
    }
}

impl ConsumerContext for FeedContext {}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The output-topic reader: a consumer outside the group on its own thread.
pub struct KafkaFeed {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    lag: FeedLag,
    starts: Arc<Mutex<BTreeMap<(String, i32), StartOffset>>>,
}

impl std::fmt::Debug for KafkaFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaFeed")
            .field("lag_seconds", &self.lag.seconds())
            .finish_non_exhaustive()
    }
}

impl KafkaFeed {
    /// Creates the consumer (the client settings of `config`) and starts the reader thread,
    /// which sends batches of records to `sender` until stopped or until `sender`'s receiver
    /// is gone. Windows' grids are resolved in `registry` (the model's).
    pub fn start(
        config: &KafkaConfig,
        settings: KafkaFeedSettings,
        registry: Arc<GridRegistry>,
        sender: mpsc::Sender<FeedBatch>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaFeed, KafkaError> {
        let consumer: BaseConsumer<FeedContext> = feed_client_config(config)
            .create_with_context(FeedContext::default())
            .map_err(|source| KafkaError::client("creating the read model consumer", source))?;
        let stop = Arc::new(AtomicBool::new(false));
        let lag = FeedLag::default();
        let starts = Arc::new(Mutex::new(BTreeMap::new()));
        let mut reader = Reader {
            consumer,
            settings,
            sender,
            metrics,
            lag: lag.clone(),
            starts: starts.clone(),
            read: ReadProgress::default(),
            decoder: RecordDecoder::new(registry),
            next_metadata_refresh: Instant::now(),
            announced_read_to_end: false,
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("read-model-feed".to_string())
            .spawn(move || reader.run(&thread_stop))
            .map_err(KafkaError::ThreadStart)?;
        Ok(KafkaFeed {
            stop,
            thread: Some(thread),
            lag,
            starts,
        })
    }

    /// The lag the reader measured last.
    pub fn lag(&self) -> FeedLag {
        self.lag.clone()
    }

    /// Where each assigned partition started (offsets-for-times, beginning or end).
    pub fn start_offsets(&self) -> BTreeMap<(String, i32), StartOffset> {
        lock(&self.starts).clone()
    }

    /// Stops the reader thread and waits for it (blocking: call off the async runtime).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the read model feed thread panicked");
            }
        }
    }
}

impl Drop for KafkaFeed {
    fn drop(&mut self) {
        // An aborted service still ends the thread (it notices within a poll).
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reader's librdkafka settings: the shared client settings (brokers, TLS, SASL,
/// `kafka.properties`), then what a reader outside the group must have whatever the
/// properties say.
fn feed_client_config(config: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut client_config = non_group_client_config(
        config,
        &[
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("statistics.interval.ms", "1000"),
            // Records come as they are produced: a fetch waits at most this long for them.
            ("fetch.wait.max.ms", "100"),
        ],
    );
    let unique_group = format!(
        "{}.read-model.{}.{}",
        config.group_id,
        std::process::id(),
        wall_clock_millis()
    );
    client_config
        .set("group.id", unique_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    client_config
}

/// The reader thread's state.
struct Reader {
    consumer: BaseConsumer<FeedContext>,
    settings: KafkaFeedSettings,
    sender: mpsc::Sender<FeedBatch>,
    metrics: Arc<Metrics>,
    lag: FeedLag,
    starts: Arc<Mutex<BTreeMap<(String, i32), StartOffset>>>,
    read: ReadProgress,
    decoder: RecordDecoder,
    next_metadata_refresh: Instant,
    /// Whether a batch said `read_to_end` already.
    announced_read_to_end: bool,
}

/// What the reader has read so far.
#[derive(Debug, Default)]
struct ReadProgress {
    /// Every assigned partition.
    partitions: BTreeMap<(String, i32), PartitionProgress>,
    /// The newest record timestamp read.
    newest_timestamp_millis: Option<i64>,
}

impl Reader {
    fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(topics = ?self.topic_names(), "read model feed reading the output topics");
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= self.next_metadata_refresh {
                self.refresh_assignment();
            }
            let records = self.poll_batch();
            let read_to_end = self.update_lag() && !self.announced_read_to_end;
            self.announced_read_to_end |= read_to_end;
            if records.is_empty() && !read_to_end {
                continue;
            }
            let batch = FeedBatch {
                records,
                read_to_end,
            };
            if self.sender.blocking_send(batch).is_err() {
                break;
            }
        }
        tracing::info!("read model feed stopped");
    }

    fn topic_names(&self) -> Vec<&str> {
        self.settings
            .topics
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Looks the topics' partitions up and assigns any not assigned yet (all at the first
    /// call): windows and alerts from the lookback, the status topic and any partition added
    /// later from the beginning.
    fn refresh_assignment(&mut self) {
        let first = self.read.partitions.is_empty();
        let mut missing_topic = false;
        let mut new_partitions: Vec<(String, i32, TopicKind)> = Vec::new();
        for (topic, kind) in self.settings.topics.clone() {
            let partition_ids = match self.consumer.fetch_metadata(Some(&topic), REQUEST_TIMEOUT) {
                Ok(metadata) => metadata
                    .topics()
                    .iter()
                    .filter(|described| described.name() == topic && described.error().is_none())
                    .flat_map(|described| described.partitions().iter().map(|p| p.id()))
                    .collect::<Vec<i32>>(),
                Err(error) => {
                    tracing::warn!(%error, topic, "read model feed cannot describe an output topic");
                    Vec::new()
                }
            };
            if partition_ids.is_empty() {
                missing_topic = true;
            }
            for partition in partition_ids {
                if !self
                    .read
                    .partitions
                    .contains_key(&(topic.clone(), partition))
                {
                    new_partitions.push((topic.clone(), partition, kind));
                }
            }
        }
        self.next_metadata_refresh = Instant::now()
            + if missing_topic {
                METADATA_RETRY
            } else {
                METADATA_REFRESH
            };
        if new_partitions.is_empty() {
            return;
        }
        let lookback_starts = self.lookback_starts(&new_partitions, first);
        for (topic, partition, kind) in &new_partitions {
            let start = if kind.reads_from_lookback() && first {
                lookback_starts
                    .get(&(topic.clone(), *partition))
                    .copied()
                    .unwrap_or(StartOffset::Beginning)
            } else {
                StartOffset::Beginning
            };
            self.read.partitions.insert(
                (topic.clone(), *partition),
                PartitionProgress {
                    start,
                    next_offset: None,
                },
            );
        }
        let mut assignment = TopicPartitionList::new();
        for ((topic, partition), progress) in &self.read.partitions {
            let offset = match progress.next_offset {
                Some(next) => Offset::Offset(next),
                None => progress.start.offset(),
            };
            if let Err(error) = assignment.add_partition_offset(topic, *partition, offset) {
                tracing::warn!(%error, topic, partition, "read model feed cannot assign a partition");
            }
        }
        match self.consumer.assign(&assignment) {
            Ok(()) => tracing::info!(
                partitions = self.read.partitions.len(),
                added = new_partitions.len(),
                "read model feed assigned the output topics' partitions"
            ),
            Err(error) => {
                tracing::warn!(%error, "read model feed cannot assign its partitions; retrying");
                for (topic, partition, _) in &new_partitions {
                    self.read.partitions.remove(&(topic.clone(), *partition));
                }
                self.next_metadata_refresh = Instant::now() + METADATA_RETRY;
                return;
            }
        }
        *lock(&self.starts) = self
            .read
            .partitions
            .iter()
            .map(|(key, progress)| (key.clone(), progress.start))
            .collect();
    }

    /// The offsets of "now − lookback" of the windows and alerts partitions among `added`
    /// (only at the first assignment); partitions the broker did not answer for are absent
    /// (read from the beginning).
    fn lookback_starts(
        &self,
        added: &[(String, i32, TopicKind)],
        first: bool,
    ) -> BTreeMap<(String, i32), StartOffset> {
        let mut starts = BTreeMap::new();
        if !first {
            return starts;
        }
        let since_millis = wall_clock_millis().saturating_sub(self.settings.lookback_millis);
        let mut query = TopicPartitionList::new();
        let mut ends_before_query = BTreeMap::new();
        for (topic, partition, kind) in added {
            if kind.reads_from_lookback() {
                let _ = query.add_partition_offset(topic, *partition, Offset::Offset(since_millis));
                // Asked before offsets-for-times, so that no record can fall between the end
                // read here and the answer "nothing since" (see `lookback_start`).
                if let Ok((_, high)) =
                    self.consumer
                        .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                {
                    ends_before_query.insert((topic.clone(), *partition), high);
                }
            }
        }
        if query.count() == 0 {
            return starts;
        }
        match self.consumer.offsets_for_times(query, REQUEST_TIMEOUT) {
            Ok(answered) => {
                for element in answered.elements() {
                    if element.error().is_err() {
                        continue;
                    }
                    let key = (element.topic().to_string(), element.partition());
                    let end_before_query = ends_before_query.get(&key).copied();
                    if let Some(start) = lookback_start(element.offset(), end_before_query) {
                        starts.insert(key, start);
                    }
                }
            }
            Err(error) => tracing::warn!(
                %error,
                "offsets for times not answered; the read model reads windows and alerts from the beginning"
            ),
        }
        starts
    }

    /// Polls records until a batch is full, [`BATCH_LINGER`] passed since the first, or
    /// nothing arrives for [`POLL_TIMEOUT`].
    fn poll_batch(&mut self) -> Vec<OutputRecord> {
        let mut batch = Vec::new();
        // Set by the first record; the clock is read once per record after it.
        let mut linger_until: Option<Instant> = None;
        while batch.len() < RECORDS_PER_BATCH {
            let timeout = match linger_until {
                None => POLL_TIMEOUT,
                Some(until) => {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    until.saturating_duration_since(now)
                }
            };
            let Some(polled) = self.consumer.poll(timeout) else {
                break;
            };
            match polled {
                Ok(message) => {
                    linger_until.get_or_insert_with(|| Instant::now() + BATCH_LINGER);
                    if let Some(record) = self.read.record_of(
                        &self.settings,
                        &self.metrics,
                        &mut self.decoder,
                        &message,
                    ) {
                        batch.push(record);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "read model feed consumer error");
                    break;
                }
            }
        }
        batch
    }

    /// 0 once every assigned partition is read to its end (as the last statistics saw it),
    /// else wall time minus the newest record read (the lookback before any). Returns whether
    /// every partition is read to its end.
    fn update_lag(&self) -> bool {
        let ends = lock(&self.consumer.context().ends).clone();
        let caught_up = !self.read.partitions.is_empty()
            && self.read.partitions.iter().all(|(key, progress)| {
                ends.get(key)
                    .is_some_and(|ends| is_read_to_end(progress, ends))
            });
        let seconds = if caught_up {
            0.0
        } else {
            let newest = self.read.newest_timestamp_millis.unwrap_or_else(|| {
                wall_clock_millis().saturating_sub(self.settings.lookback_millis)
            });
            (wall_clock_millis().saturating_sub(newest).max(0) as f64) / 1000.0
        };
        self.lag.set(seconds);
        self.metrics.read_model_lag_seconds.set(seconds);
        caught_up
    }
}

impl ReadProgress {
    /// Notes the message's progress and decodes it (`None`: skipped, counted when
    /// undecodable).
    fn record_of(
        &mut self,
        settings: &KafkaFeedSettings,
        metrics: &Metrics,
        decoder: &mut RecordDecoder,
        message: &BorrowedMessage<'_>,
    ) -> Option<OutputRecord> {
        let topic = message.topic();
        if let Some(progress) = self
            .partitions
            .get_mut(&(topic.to_string(), message.partition()))
        {
            progress.next_offset = Some(message.offset().saturating_add(1));
        }
        if let Timestamp::CreateTime(millis) | Timestamp::LogAppendTime(millis) =
            message.timestamp()
        {
            self.newest_timestamp_millis = Some(
                self.newest_timestamp_millis
                    .map_or(millis, |newest| newest.max(millis)),
            );
        }
        let kind = settings
            .topics
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, kind)| *kind)?;
        let content_type = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
                .and_then(|header| header.value)
        });
        match decoder.decode(
            kind,
            &settings.group_id,
            message.key(),
            message.payload(),
            content_type,
        ) {
            Ok(record) => record,
            Err(reason) => {
                tracing::debug!(
                    topic,
                    partition = message.partition(),
                    offset = message.offset(),
                    %reason,
                    "read model skipped an undecodable record"
                );
                metrics
                    .read_model_undecodable
                    .with_label_values(&[topic])
                    .inc();
                None
            }
        }
    }
}

/// Where a partition is read from, given the broker's offsets-for-times `answer` and the
/// partition's end offset read just before asking (`None`: not answered; the partition is
/// then read from the beginning).
///
/// Kafka answers "no record since" with offset −1, which librdkafka calls `Offset::End`.
/// Assigning that logical end would let librdkafka resolve it later, when it starts fetching:
/// a record produced in between (at an instance's start, its own first windows and alerts)
/// would be skipped by this instance's model and seen by every other. So the end read before
/// the question is used instead: every record before it is older than the lookback, and
/// every record after it is read.
fn lookback_start(answer: Offset, end_before_query: Option<i64>) -> Option<StartOffset> {
    match answer {
        Offset::Offset(offset) if offset >= 0 => Some(StartOffset::At(offset)),
        Offset::End => Some(match end_before_query {
            Some(end) if end >= 0 => StartOffset::At(end),
            _ => StartOffset::End,
        }),
        _ => None,
    }
}

/// Whether a partition is read to `ends.end`: its next offset is there, or nothing was read
/// and it started there (or the partition is empty).
fn is_read_to_end(progress: &PartitionProgress, ends: &PartitionEnds) -> bool {
    match (progress.next_offset, progress.start) {
        (Some(next), _) => next >= ends.end,
        (None, StartOffset::End) => true,
        (None, StartOffset::At(offset)) => offset >= ends.end,
        (None, StartOffset::Beginning) => ends.low >= ends.end,
    }
}

/// The task owning the read model's writer when it is fed from the output topics: applies
/// each batch as it arrives (alerts show at the next publish), and every
/// [`PUBLISH_INTERVAL`] sets the feed's lag and publishes a snapshot. Ends at `shutdown` or
/// when the reader is gone.
pub async fn run_kafka_read_model(
    mut writer: ReadModelWriter,
    mut receiver: mpsc::Receiver<FeedBatch>,
    lag: FeedLag,
    mut detection: Option<WholeCityDetection>,
    shutdown: CancellationToken,
) {
    if let Some(detection) = detection.as_mut() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = detection.restore_learned_history() => {}
        }
    }
    let mut ticker = tokio::time::interval(PUBLISH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            batch = receiver.recv() => {
                let Some(batch) = batch else { break };
                let wall_millis = wall_clock_millis();
                if let Some(detection) = detection.as_mut() {
                    detection.on_records(&batch.records, wall_millis);
                }
                for record in batch.records {
                    writer.apply(record, wall_millis);
                }
                if batch.read_to_end {
                    if let Some(detection) = detection.as_mut() {
                        detection.on_read_to_end(writer.model(), wall_millis);
                    }
                }
            }
            _ = ticker.tick() => {
                let wall_millis = wall_clock_millis();
                if let Some(detection) = detection.as_mut() {
                    detection.on_tick(writer.model(), wall_millis);
                }
                writer.set_feed_lag_seconds(lag.seconds());
                writer.publish(wall_millis);
            }
        }
    }
}

/// The read model fed from the output topics: the reader thread and the writer task.
#[derive(Debug)]
pub struct KafkaReadModel {
    feed: Option<KafkaFeed>,
    task: Option<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl KafkaReadModel {
    /// Starts reading `settings`' topics into `writer` (call inside the runtime).
    pub fn start(
        config: &KafkaConfig,
        settings: KafkaFeedSettings,
        writer: ReadModelWriter,
        detection: Option<WholeCityDetection>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaReadModel, KafkaError> {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let registry = writer.model().registry().clone();
        let feed = KafkaFeed::start(config, settings, registry, sender, metrics)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_kafka_read_model(
            writer,
            receiver,
            feed.lag(),
            detection,
            shutdown.clone(),
        ));
        Ok(KafkaReadModel {
            feed: Some(feed),
            task: Some(task),
            shutdown,
        })
    }

    /// Stops the writer task and the reader thread, and waits for both.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "read model task failed");
            }
        }
        if let Some(feed) = self.feed.take() {
            if let Err(error) = tokio::task::spawn_blocking(move || feed.stop()).await {
                tracing::error!(%error, "stopping the read model feed failed");
            }
        }
    }
}

impl Drop for KafkaReadModel {
    fn drop(&mut self) {
        // The service was aborted: the task ends, and the feed's own drop stops its thread.
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Alert, CellWindow};
    use prost::Message as _;

    fn window() -> CellWindow {
        CellWindow {
            grid_id: "41060200100101".to_string(),
            count: 3,
            ..CellWindow::default()
        }
    }

    /// A decoder over the embedded registry.
    fn decoder() -> RecordDecoder {
        RecordDecoder::new(GridRegistry::embedded())
    }

    #[test]
    fn windows_and_alerts_decode_from_protobuf_or_json_by_content_type() {
        let registry = GridRegistry::embedded();
        let pane = OutputRecord::Window(ReadBackPane::of_cell_window(&window(), &registry));
        let bytes = window().encode_to_vec();
        let decoded = decoder().decode(TopicKind::Windows, "gw", None, Some(&bytes), None);
        assert_eq!(decoded, Ok(Some(pane.clone())));
        let json = serde_json::to_vec(&window()).unwrap();
        let decoded = decoder().decode(
            TopicKind::Windows,
            "gw",
            None,
            Some(&json),
            Some(b"application/json"),
        );
        assert_eq!(decoded, Ok(Some(pane)));
        let alert = Alert {
            fingerprint: "fp".to_string(),
            ..Alert::default()
        };
        let bytes = alert.encode_to_vec();
        let decoded = decoder().decode(
            TopicKind::Alerts,
            "gw",
            Some(b"fp"),
            Some(&bytes),
            Some(b"application/x-protobuf"),
        );
        assert_eq!(decoded, Ok(Some(OutputRecord::Alert(Box::new(alert)))));
    }

    #[test]
    fn garbage_unknown_content_types_missing_values_and_huge_records_are_undecodable() {
        let decode = |kind, value: Option<&[u8]>, content_type: Option<&[u8]>| {
            decoder().decode(kind, "gw", Some(b"k"), value, content_type)
        };
        assert_eq!(
            decode(TopicKind::Windows, Some(&[0xff, 0xff, 0xff]), None),
            Err(Undecodable::Value)
        );
        assert_eq!(
            decode(TopicKind::Alerts, Some(b"{"), Some(b"application/json")),
            Err(Undecodable::Value)
        );
        assert_eq!(
            decode(TopicKind::Windows, Some(b""), Some(b"text/plain")),
            Err(Undecodable::UnknownContentType)
        );
        assert_eq!(
            decode(TopicKind::Alerts, None, None),
            Err(Undecodable::NoValue)
        );
        let huge = vec![0u8; MAX_RECORD_BYTES + 1];
        assert_eq!(
            decode(TopicKind::Windows, Some(&huge), None),
            Err(Undecodable::TooLarge)
        );
        let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
        assert_eq!(
            decoder().decode(TopicKind::Status, "gw", Some(&long_key), None, None),
            Err(Undecodable::TooLarge)
        );
    }

    #[test]
    fn status_keys_select_fraud_partials_of_this_group_instances_and_tombstones() {
        let partial = FraudPartial {
            partition: "events/3".to_string(),
            ..FraudPartial::default()
        };
        let bytes = partial.encode_to_vec();
        let status = |key: &[u8], value: Option<&[u8]>| {
            decoder().decode(TopicKind::Status, "gw", Some(key), value, None)
        };
        assert_eq!(
            status(b"fraud/gw/events/3", Some(&bytes)),
            Ok(Some(OutputRecord::FraudPartial(partial.clone())))
        );
        assert_eq!(
            status(b"fraud/other/events/3", Some(&bytes)),
            Ok(None),
            "another deployment's partition"
        );
        assert_eq!(
            status(b"fraud/gwx/events/3", Some(&bytes)),
            Ok(None),
            "a group whose name starts with ours"
        );
        assert_eq!(
            status(b"fraud/gw/events/4", Some(&bytes)),
            Err(Undecodable::KeyMismatch)
        );
        assert_eq!(status(b"fraud/gw/events/3", None), Ok(None));
        let instance = InstanceStatus {
            instance_id: "gw-1".to_string(),
            ..InstanceStatus::default()
        };
        let bytes = instance.encode_to_vec();
        assert_eq!(
            status(b"instance/gw-1", Some(&bytes)),
            Ok(Some(OutputRecord::InstanceStatus(instance)))
        );
        assert_eq!(
            status(b"instance/gw-2", Some(&bytes)),
            Err(Undecodable::KeyMismatch)
        );
        assert_eq!(
            status(b"instance/gw-1", None),
            Ok(Some(OutputRecord::InstanceGone {
                instance_id: "gw-1".to_string()
            }))
        );
        assert_eq!(status(b"instance/", None), Err(Undecodable::Key));
        assert_eq!(status(b"other/x", Some(&bytes)), Err(Undecodable::Key));
        assert_eq!(status(&[0xff, 0xfe], None), Err(Undecodable::Key));
        assert_eq!(
            decoder().decode(TopicKind::Status, "gw", None, Some(&bytes), None),
            Err(Undecodable::Key)
        );
    }

    #[test]
    fn the_feed_reads_output_topics_only_with_a_kafka_source_and_windows_and_alerts_topics() {
        let mut config = Config::default();
        config.kafka.sinks.enabled = true;
        assert_eq!(KafkaFeedSettings::from_config(&config), None, "simulator");
        config.source.kind = SourceKind::Kafka;
        let settings = KafkaFeedSettings::from_config(&config).unwrap();
        assert_eq!(
            settings.topics,
            vec![
                ("gridwatch.windows.v1".to_string(), TopicKind::Windows),
                ("gridwatch.alerts.v1".to_string(), TopicKind::Alerts),
                ("gridwatch.status.v1".to_string(), TopicKind::Status),
            ]
        );
        assert_eq!(
            settings.lookback_millis,
            24 * 3_600_000 + 60_000,
            "longest view and one pane"
        );
        config.kafka.sinks.alerts_topic.clear();
        assert_eq!(KafkaFeedSettings::from_config(&config), None);
        config.kafka.sinks.alerts_topic = "a".to_string();
        config.kafka.sinks.enabled = false;
        assert_eq!(KafkaFeedSettings::from_config(&config), None);
    }

    #[test]
    fn no_record_since_the_lookback_starts_at_the_end_read_before_asking_not_a_logical_end() {
        assert_eq!(
            lookback_start(Offset::Offset(7), Some(9)),
            Some(StartOffset::At(7))
        );
        assert_eq!(
            lookback_start(Offset::End, Some(9)),
            Some(StartOffset::At(9)),
            "a record produced after the question is read"
        );
        assert_eq!(
            lookback_start(Offset::End, Some(0)),
            Some(StartOffset::At(0)),
            "an empty partition is read from its first record"
        );
        assert_eq!(lookback_start(Offset::End, None), Some(StartOffset::End));
        assert_eq!(
            lookback_start(Offset::End, Some(-1)),
            Some(StartOffset::End)
        );
        assert_eq!(lookback_start(Offset::Offset(-5), Some(3)), None);
        assert_eq!(lookback_start(Offset::Beginning, Some(3)), None);
    }

    #[test]
    fn a_partition_is_read_to_its_end_by_its_next_offset_or_where_it_started() {
        let ends = PartitionEnds { low: 2, end: 10 };
        let progress = |start, next_offset| PartitionProgress { start, next_offset };
        assert!(is_read_to_end(
            &progress(StartOffset::Beginning, Some(10)),
            &ends
        ));
        assert!(!is_read_to_end(
            &progress(StartOffset::Beginning, Some(9)),
            &ends
        ));
        assert!(!is_read_to_end(
            &progress(StartOffset::Beginning, None),
            &ends
        ));
        assert!(is_read_to_end(
            &progress(StartOffset::Beginning, None),
            &PartitionEnds { low: 4, end: 4 }
        ));
        assert!(is_read_to_end(&progress(StartOffset::End, None), &ends));
        assert!(is_read_to_end(&progress(StartOffset::At(10), None), &ends));
        assert!(!is_read_to_end(&progress(StartOffset::At(3), None), &ends));
    }

    #[tokio::test]
    async fn the_writer_task_applies_batches_and_publishes_with_the_feed_lag() {
        let registry = crate::grid::GridRegistry::embedded();
        let settings = crate::read_model::CityModelSettings::new(
            vec!["15m".to_string()],
            vec![900_000],
            "test".to_string(),
        );
        let (writer, reader) =
            ReadModelWriter::new(crate::read_model::CityModel::new(registry, settings, None));
        let (sender, receiver) = mpsc::channel(4);
        let lag = FeedLag::default();
        lag.set(1.5);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_kafka_read_model(
            writer,
            receiver,
            lag.clone(),
            None,
            shutdown.clone(),
        ));
        let status = InstanceStatus {
            instance_id: "gw-1".to_string(),
            updated_at: Some(crate::time::millis_to_timestamp(wall_clock_millis())),
            ..InstanceStatus::default()
        };
        sender
            .send(FeedBatch {
                records: vec![OutputRecord::InstanceStatus(status)],
                read_to_end: true,
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reader.snapshot().status.instances.is_empty() {
            assert!(Instant::now() < deadline, "the status was never published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(reader.snapshot().status.read_model_lag_seconds, 1.5);
        shutdown.cancel();
        task.await.unwrap();
    }
}
