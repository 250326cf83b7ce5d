//! The Kafka source: a consumer in a consumer group on its own thread ([`KafkaSource`]). The
//! load generator behind `gridwatch produce` is [`crate::tools::produce`]; what every Kafka
//! client shares (errors, headers, partition ids, client settings) is [`crate::kafka`].
//!
//! Records become [`SourceRecord`]s whose `partition` is a dense id of (topic, partition) —
//! the topic's index in `kafka.topics` times 65 536 plus the Kafka partition — so that state
//! and watermarks stay per input partition even with several topics, and whose `position` is
//! the Kafka offset. A `content-type` header of `application/json` selects JSON for that
//! record, `application/x-protobuf` (or `application/protobuf`) protobuf; otherwise the
//! topic's entry in `kafka.topic_formats`, else `kafka.format`, applies. The consumer thread
//! runs each record's stateless stages ([`crate::pipeline::Admission`]) as it polls, and hands
//! the pipeline task [`SourceMessage::Admitted`] batches: the pipeline task bounds the
//! service's throughput, so it runs only the stateful stages.
//!
//! Offsets are never auto-committed: rebalances hand partitions (with their restored state)
//! to the pipeline and take them back after their last snapshot, and the service commits
//! through [`KafkaSource::commit_async`] / [`KafkaSource::commit`] only what an acknowledged
//! state snapshot covers (see `crate::service`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::{KafkaConfig, KafkaPayloadFormat};
use crate::kafka::{
    format_of_content_type, group_client_config, non_group_client_config, source_partition_id,
    source_partition_of, split_source_partition_id, KafkaError, CONTENT_TYPE_HEADER,
};
use crate::metrics::Metrics;
use crate::partitions::{AssignedPartition, SourceMessage};
use crate::pipeline::{Admission, AdmittedRecord};
use crate::source::{RecordPayload, SourceRecord};
use crate::time::wall_clock_millis;

/// What the consumer thread shares with the pipeline task.
#[derive(Debug, Clone, Default)]
pub struct ConsumerProgress {
    /// Broker high watermark per source partition, from librdkafka statistics (Fetch
    /// responses), for the lag gauge.
    pub high_watermarks: Arc<Mutex<BTreeMap<u32, i64>>>,
    /// Whether the cluster answered the last metadata probe (`gridwatch_kafka_broker_up`).
    pub broker_reachable: Arc<AtomicBool>,
    /// Whether the cluster ever answered a metadata probe: `/readyz` waits for it at start
    /// (wrong brokers or credentials keep the pod unready) but a later outage leaves the API
    /// serving (the outage is `gridwatch_kafka_broker_up` 0 and its alert).
    pub broker_seen: Arc<AtomicBool>,
}

impl ConsumerProgress {
    /// The latest broker high watermark of every source partition seen in statistics.
    pub fn high_watermarks_now(&self) -> BTreeMap<u32, i64> {
        lock(&self.high_watermarks).clone()
    }
}

/// A request to commit offsets, served by the consumer thread (which alone owns the consumer).
#[derive(Debug)]
pub struct CommitRequest {
    /// `(source partition, next offset)` pairs.
    pub offsets: Vec<(u32, u64)>,
    /// Synchronous when set: the result is sent back here.
    pub reply: Option<tokio::sync::oneshot::Sender<Result<(), KafkaError>>>,
}

/// The running Kafka consumer: a dedicated thread polling a consumer in the group, and a
/// probe thread checking that the cluster answers.
pub struct KafkaSource {
    /// Tells both threads to stop.
    stop: Arc<AtomicBool>,
    /// The consumer thread (joined on shutdown, so the consumer leaves the group cleanly).
    consumer_thread: Option<std::thread::JoinHandle<()>>,
    /// The thread probing cluster reachability for `/readyz` (joined on shutdown).
    probe_thread: Option<std::thread::JoinHandle<()>>,
    /// Commit requests to the consumer thread.
    commit_sender: std::sync::mpsc::Sender<CommitRequest>,
    /// Topic names by topic index.
    topics: Arc<Vec<String>>,
    /// Lag and reachability, shared with the threads.
    progress: ConsumerProgress,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaSource")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The consumer's callbacks: rebalances hand partitions and their state to the pipeline.
struct GroupContext {
    /// Subscribed topics by topic index.
    topics: Arc<Vec<String>>,
    /// To the pipeline task (records, assignments, revocations), in order.
    sender: mpsc::Sender<SourceMessage>,
    /// Records polled and admitted but not yet handed over (the pipeline was behind); sent
    /// before any rebalance message so the order per partition holds.
    pending: Mutex<Vec<AdmittedRecord>>,
    /// The stateless stages (decode, limits, validation, grid resolution), run on this
    /// thread as records are polled: the pipeline task, which bounds the service's
    /// throughput, then only runs the stateful ones.
    admission: Admission,
    /// Reads partition state on assignment.
    state_reader: crate::state::kafka::StateReader,
    /// How long to wait for state on assignment and for the pipeline on revoke.
    state_timeout: Duration,
    /// What the running pipelines can restore: a snapshot that does not fit is not used.
    snapshot_fit: crate::state::SnapshotFit,
    /// Rebalance, restore and commit counts.
    metrics: Arc<Metrics>,
    /// High watermarks from statistics.
    progress: ConsumerProgress,
    /// Set after every rebalance: the new assignment starts unpaused.
    assignment_changed: AtomicBool,
    /// Partitions assigned now, kept from the rebalance events themselves: asking librdkafka
    /// (`assignment()`) inside the rebalance callback can wait forever while the consumer
    /// closes (seen: a test hung > 10 min in `rd_kafka_assignment` during drop).
    assigned_count: std::sync::atomic::AtomicUsize,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let mut high_watermarks = lock(&self.progress.high_watermarks);
        for (topic_name, topic) in &statistics.topics {
            for (kafka_partition, partition) in &topic.partitions {
                if partition.hi_offset < 0 {
                    continue;
                }
                if let Some(source_partition) =
                    source_partition_of(&self.topics, topic_name, *kafka_partition)
                {
                    high_watermarks.insert(source_partition, partition.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl GroupContext {
    /// Hands `message` to the pipeline, waiting while its queue is full; false when the
    /// pipeline is gone (shutdown).
    fn send_blocking(&self, message: SourceMessage) -> bool {
        self.sender.blocking_send(message).is_ok()
    }

    /// Sends the records polled so far before a rebalance message.
    fn send_pending(&self) -> bool {
        let records = {
            let mut pending = lock(&self.pending);
            std::mem::take(&mut *pending)
        };
        if records.is_empty() {
            return true;
        }
        self.send_blocking(SourceMessage::Admitted(records))
    }

    /// The latest snapshots of `wanted`, retried with backoff while the state topic cannot be
    /// read (a broker outage during a rebalance or at start): starting the partitions empty
    /// would throw their state away, and the cluster has to come back before anything can be
    /// consumed anyway. `None` once the pipeline is gone (shutdown).
    fn read_partition_state(
        &self,
        wanted: &[(String, i32)],
    ) -> Option<BTreeMap<(String, i32), crate::state::kafka::PartitionSnapshot>> {
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(STATE_READ_RETRY_MIN_DELAY)
                .with_max_delay(STATE_READ_RETRY_MAX_DELAY)
                .without_max_times(),
        );
        loop {
            match self.state_reader.read_latest(wanted, self.state_timeout) {
                Ok(snapshots) => return Some(snapshots),
                Err(error) => {
                    if self.sender.is_closed() {
                        return None;
                    }
                    let delay = delays.next().unwrap_or(STATE_READ_RETRY_MAX_DELAY);
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot read partition state yet; retrying (the partitions wait for their state)");
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// Reads the state of newly assigned partitions, tells the pipeline, and positions the
    /// consumer at each restored snapshot's offset (others resume from the committed offset).
    fn on_assign(&self, assignment: &mut TopicPartitionList) {
        self.metrics
            .kafka
            .rebalances
            .with_label_values(&["assign"])
            .inc();
        let wanted: Vec<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|element| (element.topic().to_string(), element.partition()))
            .collect();
        let Some(snapshots) = self.read_partition_state(&wanted) else {
            return;
        };
        let mut assigned = Vec::with_capacity(wanted.len());
        for (topic, kafka_partition) in wanted {
            let Some(partition) = source_partition_of(&self.topics, &topic, kafka_partition) else {
                continue;
            };
            let snapshot = snapshots.get(&(topic.clone(), kafka_partition));
            // Decoded here, before the consumer is positioned at its offset: a snapshot that
            // does not restore must not move the partition past its committed offset.
            let restored = match snapshot {
                None => None,
                Some(found) => match crate::state::decode(&found.bytes, &self.snapshot_fit) {
                    Ok(state) => Some((state, found.next_offset)),
                    Err(error) => {
                        tracing::error!(%error, topic = %topic, partition = kafka_partition, "partition snapshot does not restore; the partition starts empty from its committed offset");
                        None
                    }
                },
            };
            let restore_result = match (snapshot, &restored) {
                (_, Some(_)) => "restored",
                (Some(_), None) => "invalid",
                (None, None) => "empty",
            };
            self.metrics
                .state_restores
                .with_label_values(&["kafka", restore_result])
                .inc();
            if let Some((_, next_offset)) = &restored {
                let resume_at = i64::try_from(*next_offset).unwrap_or(i64::MAX);
                if let Err(error) = assignment.set_partition_offset(
                    &topic,
                    kafka_partition,
                    Offset::Offset(resume_at),
                ) {
                    tracing::error!(%error, topic = %topic, partition = kafka_partition, "cannot position the consumer at the snapshot's offset");
                }
            }
            tracing::info!(
                topic = %topic,
                partition = kafka_partition,
                resume_offset = restored.as_ref().map(|(_, next_offset)| *next_offset),
                state_bytes = snapshot.map(|found| found.bytes.len()),
                restore = restore_result,
                "partition assigned"
            );
            assigned.push(AssignedPartition {
                partition,
                restored,
            });
        }
        self.send_blocking(SourceMessage::Assigned(assigned));
    }

    /// Hands the pipeline every record of the revoked partitions, waits until their state is
    /// snapshotted, and commits the offsets the snapshots cover.
    fn on_revoke(&self, consumer: &BaseConsumer<GroupContext>, revoked: &TopicPartitionList) {
        self.metrics
            .kafka
            .rebalances
            .with_label_values(&["revoke"])
            .inc();
        let partitions: Vec<u32> = revoked
            .elements()
            .iter()
            .filter_map(|element| {
                source_partition_of(&self.topics, element.topic(), element.partition())
            })
            .collect();
        if partitions.is_empty() || !self.send_pending() {
            return;
        }
        let (done, done_receiver) = std::sync::mpsc::sync_channel(1);
        if !self.send_blocking(SourceMessage::Revoked { partitions, done }) {
            return;
        }
        // The pipeline may wait for the outputs and then the state records, each up to the
        // state timeout.
        match done_receiver.recv_timeout(self.state_timeout.saturating_mul(3)) {
            Ok(offsets) => {
                // Counted and logged inside; the partitions are released either way.
                let _ = commit_offsets(consumer, &self.topics, &offsets, &self.metrics);
            }
            // The pipeline is gone: this is the revocation of a consumer closing at shutdown,
            // after the pipeline's final snapshot and commit; not an operator's concern.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                tracing::debug!(
                    "the pipeline stopped before the revocation; offsets stay as last committed"
                )
            }
            Err(error @ std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::error!(%error, "the pipeline did not snapshot the revoked partitions in time; their offsets stay as last committed")
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<GroupContext>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        self.assignment_changed.store(true, Ordering::Relaxed);
        let cooperative = matches!(
            base_consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(partitions);
                let assigned = if cooperative {
                    base_consumer.incremental_assign(partitions)
                } else {
                    base_consumer.assign(partitions)
                };
                if let Err(error) = assigned {
                    tracing::error!(%error, "assigning partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(base_consumer, partitions);
                let released = if cooperative {
                    base_consumer.incremental_unassign(partitions)
                } else {
                    base_consumer.unassign()
                };
                if let Err(error) = released {
                    tracing::error!(%error, "releasing partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; releasing the assignment");
                if let Err(error) = base_consumer.unassign() {
                    tracing::error!(%error, "releasing partitions failed");
                }
            }
        }
        let before = self.assigned_count.load(Ordering::Relaxed);
        let owned = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if cooperative => {
                before.saturating_add(partitions.count())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => partitions.count(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if cooperative => {
                before.saturating_sub(partitions.count())
            }
            _ => 0,
        };
        self.assigned_count.store(owned, Ordering::Relaxed);
        self.metrics.kafka.assigned_partitions.set(owned as i64);
    }
}

/// Locks `mutex`, taking over a poisoned one (its data stays usable: a list of records).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Commits `(source partition, next offset)` pairs for the group, synchronously (one round
/// trip, on the consumer thread), and counts the result.
fn commit_offsets(
    consumer: &BaseConsumer<GroupContext>,
    topics: &[String],
    offsets: &[(u32, u64)],
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let result = offset_list(topics, offsets).and_then(|list| {
        consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|source| KafkaError::Client {
                context: "committing offsets".to_string(),
                source,
            })
    });
    let label = if result.is_ok() { "ok" } else { "failed" };
    metrics.kafka.commits.with_label_values(&[label]).inc();
    if let Err(error) = &result {
        tracing::warn!(%error, "offset commit failed");
    }
    result
}

/// The topic-partition list of `(source partition, next offset)` pairs.
fn offset_list(
    topics: &[String],
    offsets: &[(u32, u64)],
) -> Result<TopicPartitionList, KafkaError> {
    let mut list = TopicPartitionList::new();
    for (source_partition, next_offset) in offsets {
        let (topic_index, kafka_partition) = split_source_partition_id(*source_partition);
        let Some(topic) = topics.get(topic_index) else {
            continue;
        };
        let offset = i64::try_from(*next_offset).unwrap_or(i64::MAX);
        list.add_partition_offset(topic, kafka_partition, Offset::Offset(offset))
            .map_err(|source| KafkaError::Client {
                context: format!("offset {offset} of {topic}/{kafka_partition}"),
                source,
            })?;
    }
    Ok(list)
}

/// Records polled per hand-over to the pipeline.
const RECORDS_PER_BATCH: usize = 1024;
/// How long one poll waits for a record.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the pipeline's queue must stay full before the partitions are paused.
const PAUSE_AFTER_FULL: Duration = Duration::from_secs(1);
/// How often a full queue is retried before pausing.
const FULL_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// First wait before reading the state topic again after a failed read.
const STATE_READ_RETRY_MIN_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between reads of an unreachable state topic.
const STATE_READ_RETRY_MAX_DELAY: Duration = Duration::from_secs(15);
/// How long a poll waits while paused (how soon a freed queue is noticed).
const PAUSED_POLL_TIMEOUT: Duration = Duration::from_millis(10);
/// How often the probe asks the cluster for metadata, and how long it waits.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a metadata probe may take before the cluster counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl KafkaSource {
    /// Subscribes to `config.topics` in `config.group_id` and starts the consumer thread,
    /// which sends [`SourceMessage`]s to `sender`; restored snapshots are checked against
    /// `snapshot_fit` (settings, registry, every index).
    pub fn start(
        config: &KafkaConfig,
        snapshot_fit: crate::state::SnapshotFit,
        admission: Admission,
        sender: mpsc::Sender<SourceMessage>,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaSource, KafkaError> {
        let topics = Arc::new(config.topics.clone());
        let progress = ConsumerProgress::default();
        let context = GroupContext {
            topics: topics.clone(),
            sender,
            pending: Mutex::new(Vec::new()),
            admission,
            state_reader: crate::state::kafka::StateReader::create(config)?,
            state_timeout: config.state_timeout,
            snapshot_fit,
            metrics: metrics.clone(),
            progress: progress.clone(),
            assignment_changed: AtomicBool::new(false),
            assigned_count: std::sync::atomic::AtomicUsize::new(0),
        };
        let consumer: BaseConsumer<GroupContext> = group_client_config(config)
            .create_with_context(context)
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
        let probe: BaseConsumer =
            non_group_client_config(config, &[])
                .create()
                .map_err(|source| KafkaError::Client {
                    context: "creating the metadata probe".to_string(),
                    source,
                })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (commit_sender, commit_receiver) = std::sync::mpsc::channel();
        let formats_by_topic: Vec<KafkaPayloadFormat> = config
            .topics
            .iter()
            .map(|topic| config.format_of_topic(topic))
            .collect();
        let consumer_stop = stop.clone();
        let consumer_topics = topics.clone();
        let consumer_thread = std::thread::Builder::new()
            .name("kafka-consumer".to_string())
            .spawn(move || {
                poll_loop(
                    consumer,
                    &consumer_topics,
                    &formats_by_topic,
                    &consumer_stop,
                    &commit_receiver,
                )
            })
            .map_err(KafkaError::ThreadStart)?;
        let probe_stop = stop.clone();
        let probe_progress = progress.clone();
        let group_id = config.group_id.clone();
        let probe_thread = std::thread::Builder::new()
            .name("kafka-probe".to_string())
            .spawn(move || probe_loop(&probe, &probe_stop, &probe_progress, &metrics, &group_id))
            .map_err(KafkaError::ThreadStart)?;
        Ok(KafkaSource {
            stop,
            consumer_thread: Some(consumer_thread),
            probe_thread: Some(probe_thread),
            commit_sender,
            topics,
            progress,
        })
    }

    /// Lag and reachability, updated by the threads.
    pub fn progress(&self) -> &ConsumerProgress {
        &self.progress
    }

    /// The input topic and Kafka partition of a source partition id, when it numbers one of
    /// the subscribed topics.
    pub fn topic_partition_of(&self, source_partition: u32) -> Option<(&str, i32)> {
        let (topic_index, kafka_partition) = split_source_partition_id(source_partition);
        let topic = self.topics.get(topic_index)?;
        Some((topic.as_str(), kafka_partition))
    }

    /// Asks the consumer thread to commit `offsets` without waiting for it (result in
    /// `gridwatch_kafka_commits_total`).
    pub fn commit_async(&self, offsets: Vec<(u32, u64)>) {
        if offsets.is_empty() {
            return;
        }
        let _ = self.commit_sender.send(CommitRequest {
            offsets,
            reply: None,
        });
    }

    /// Commits `offsets` and waits for the result (shutdown).
    pub async fn commit(&self, offsets: Vec<(u32, u64)>) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (reply, result) = tokio::sync::oneshot::channel();
        let request = CommitRequest {
            offsets,
            reply: Some(reply),
        };
        if self.commit_sender.send(request).is_err() {
            return Err(KafkaError::ConsumerStopped);
        }
        result.await.unwrap_or(Err(KafkaError::ConsumerStopped))
    }

    /// Stops both threads; the consumer leaves the group (its revoke callback finds the
    /// pipeline gone and releases the partitions at their committed offsets).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in [self.consumer_thread.take(), self.probe_thread.take()]
            .into_iter()
            .flatten()
        {
            if handle.join().is_err() {
                tracing::error!("a kafka thread panicked");
            }
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The record of one Kafka message, or `None` for a topic or partition gridwatch cannot
/// number (never for subscribed topics).
fn record_of(
    topics: &[String],
    formats_by_topic: &[KafkaPayloadFormat],
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> Option<SourceRecord> {
    let topic_index = topics.iter().position(|topic| topic == message.topic())?;
    let partition = source_partition_id(topic_index, message.partition())?;
    let position = u64::try_from(message.offset()).ok()?;
    let header_format = message.headers().and_then(|headers| {
        headers
            .iter()
            .filter(|header| header.key.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
            .find_map(|header| header.value.and_then(format_of_content_type))
    });
    let topic_format = formats_by_topic
        .get(topic_index)
        .copied()
        .unwrap_or(KafkaPayloadFormat::Protobuf);
    let format = header_format.unwrap_or(topic_format).input_format();
    let bytes = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
    Some(SourceRecord {
        payload: RecordPayload::Encoded { bytes, format },
        partition,
        position,
    })
}

/// The consumer thread: polls records into batches and hands them over. A full pipeline queue
/// is retried every millisecond for up to a second (a tick or a snapshot round); when it stays
/// full longer, the assigned partitions are paused — polling continues, so the group
/// membership and rebalances are served — and resumed once the batch went through.
fn poll_loop(
    consumer: BaseConsumer<GroupContext>,
    topics: &[String],
    formats_by_topic: &[KafkaPayloadFormat],
    stop: &AtomicBool,
    commit_requests: &std::sync::mpsc::Receiver<CommitRequest>,
) {
    let context = consumer.context();
    let mut paused = false;
    // Since when the pipeline's queue has been full (None while it takes batches).
    let mut full_since: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(request) = commit_requests.try_recv() {
            // Synchronous (one round trip, on this thread): the result is known and counted
            // here rather than in a callback.
            let result = commit_offsets(&consumer, topics, &request.offsets, &context.metrics);
            if let Some(reply) = request.reply {
                let _ = reply.send(result);
            }
        }
        if context.assignment_changed.swap(false, Ordering::Relaxed) {
            paused = false;
        }
        let pending_full = lock(&context.pending).len() >= RECORDS_PER_BATCH;
        if !pending_full {
            let mut timeout = POLL_TIMEOUT;
            loop {
                let Some(polled) = consumer.poll(timeout) else {
                    break;
                };
                timeout = Duration::ZERO;
                match polled {
                    Ok(message) => match record_of(topics, formats_by_topic, &message) {
                        Some(record) => {
                            let admitted = context.admission.admit(
                                record,
                                wall_clock_millis(),
                                Box::default(),
                            );
                            let mut pending = lock(&context.pending);
                            pending.push(admitted);
                            if pending.len() >= RECORDS_PER_BATCH {
                                break;
                            }
                        }
                        None => tracing::warn!(
                            topic = message.topic(),
                            partition = message.partition(),
                            offset = message.offset(),
                            "skipping a record gridwatch cannot number (partition beyond 65535?)"
                        ),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "kafka consumer error");
                        break;
                    }
                }
            }
        } else if paused {
            // Serve rebalances; paused partitions deliver nothing new (a record fetched before
            // the pause is kept).
            if let Some(Ok(message)) = consumer.poll(PAUSED_POLL_TIMEOUT) {
                if let Some(record) = record_of(topics, formats_by_topic, &message) {
                    let admitted =
                        context
                            .admission
                            .admit(record, wall_clock_millis(), Box::default());
                    lock(&context.pending).push(admitted);
                }
            }
        }
        let records = std::mem::take(&mut *lock(&context.pending));
        if records.is_empty() {
            continue;
        }
        match context.sender.try_send(SourceMessage::Admitted(records)) {
            Ok(()) => {
                full_since = None;
                if paused {
                    set_paused(&consumer, false);
                    paused = false;
                }
            }
            Err(mpsc::error::TrySendError::Full(SourceMessage::Admitted(records))) => {
                lock(&context.pending).splice(0..0, records);
                let full_for = full_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed();
                if paused {
                    continue;
                }
                if full_for >= PAUSE_AFTER_FULL {
                    set_paused(&consumer, true);
                    context.metrics.kafka.pauses.inc();
                    paused = true;
                } else {
                    // A short stall (a tick, a snapshot round): wait rather than pause, since
                    // a resume restarts fetching from scratch.
                    std::thread::sleep(FULL_RETRY_INTERVAL);
                }
            }
            Err(mpsc::error::TrySendError::Full(_other)) => {}
            Err(mpsc::error::TrySendError::Closed(_records)) => return,
        }
    }
}

/// Pauses or resumes every assigned partition.
fn set_paused(consumer: &BaseConsumer<GroupContext>, pause: bool) {
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(error) => {
            tracing::warn!(%error, "cannot read the assignment to pause or resume it");
            return;
        }
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => tracing::debug!(
            pause,
            partitions = assignment.count(),
            "consumer flow control"
        ),
        Err(error) => tracing::warn!(%error, pause, "pause/resume failed"),
    }
}

/// The probe thread: asks the cluster for metadata every second; the answer (within 2 s) is
/// what `gridwatch_kafka_broker_up` reports, and the first answer makes `/readyz` ready.
fn probe_loop(
    probe: &BaseConsumer,
    stop: &AtomicBool,
    progress: &ConsumerProgress,
    metrics: &Metrics,
    group_id: &str,
) {
    let broker_up = metrics.kafka.broker_up.with_label_values(&[group_id]);
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        let reachable = probe.fetch_metadata(None, PROBE_TIMEOUT).is_ok();
        let was_reachable = progress.broker_reachable.swap(reachable, Ordering::Relaxed);
        if reachable {
            progress.broker_seen.store(true, Ordering::Relaxed);
        }
        if was_reachable != reachable {
            tracing::info!(reachable, "kafka cluster reachability changed");
        }
        broker_up.set(i64::from(reachable));
        let next_probe = started + PROBE_INTERVAL;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < next_probe {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
