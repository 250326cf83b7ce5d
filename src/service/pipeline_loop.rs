//! The pipeline task: one `select!` loop over source batches, Kafka rebalances, the
//! one-second tick, reloaded rules and the API's cell queries. It owns the
//! [`PartitionedPipelines`] and hands their outputs to the [`OutputSinks`]; what it shows
//! ([`super::live_view`], [`super::gauges`]) and how it keeps state ([`Checkpointing`]) live
//! in their own rooms.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::checkpointing::Checkpointing;
use super::gauges::{
    partition_gauges, publish_partition_gauges, remove_partition_series, view_counts, CellGauges,
};
use super::output_sinks::{FlushError, OutputSinks};
use super::status::{fraud_partials, StatusReporter};
use super::whole_city::{RoleChange, WholeCityRole};
use crate::api::Health;
use crate::metrics::Metrics;
use crate::partitions::{AssignedPartition, PartitionedPipelines, SourceMessage};
use crate::pipeline::{AdmittedRecord, Outputs};
use crate::read_model::detection::WholeCityUpdate;
use crate::read_model::OutputRecord;
use crate::rules::RuleSet;
use crate::source::SourceRecord;
use crate::time::wall_clock_millis;

/// How often the pipeline advances by wall time, publishes the live view and flushes sinks.
const TICK: Duration = Duration::from_secs(1);
/// The most admitted records the pipeline task takes at once from batches waiting in its
/// channel when the engines have threads (eight consumer batches; see
/// [`PipelineLoop::on_source_message`]). Measured without a broker (`cargo bench --bench
/// pipeline -- partition_engines`), two engine threads on two cores did a batch of 8,192
/// records 1.36× faster than one thread, a batch of 1,024 only 1.09×.
const MAX_COALESCED_RECORDS: usize = 8 * 1024;
/// How long shutdown waits for Kafka output records to be acknowledged.
const KAFKA_SINK_FLUSH_GRACE: Duration = Duration::from_secs(10);
/// How long a periodic snapshot round waits for output and state acknowledgements (short:
/// the pipeline does not process meanwhile, and `/healthz` goes stale after 15 s).
const PERIODIC_SNAPSHOT_GRACE: Duration = Duration::from_secs(5);

/// The pipeline task's link to the whole-city detector.
pub(crate) struct WholeCityLink {
    /// Where reloaded rules go.
    pub(crate) rules: mpsc::Sender<RuleSet>,
    /// Firing whole-city alerts, and whether this instance publishes them.
    pub(crate) role: WholeCityRole,
}

/// The pipeline task's state.
pub(crate) struct PipelineLoop {
    /// One synchronous pipeline per owned input partition.
    pub(crate) pipelines: PartitionedPipelines,
    /// Where outputs go.
    pub(crate) sinks: OutputSinks,
    /// How state survives restarts (and, with Kafka, which offsets are committed).
    pub(crate) checkpointing: Checkpointing,
    /// Set when Kafka output records were lost with a Kafka source: the loop stops and
    /// nothing more is committed, so a restart re-sends them from the last snapshot.
    pub(crate) outputs_lost: Option<u64>,
    /// The output buffer, reused between batches.
    pub(crate) outputs: Outputs,
    /// Processing latency, gauges, fraud metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The pipeline's heartbeat for `/healthz`.
    pub(crate) health: Arc<Health>,
    /// Names of the views, e.g. "15m" (API and the `view` metric label).
    pub(crate) view_labels: Vec<String>,
    /// The cell incident series published, to remove those of cells gone quiet.
    pub(crate) cell_gauges: CellGauges,
    /// Builds this instance's status records for the city-wide read model.
    pub(crate) status: StatusReporter,
    /// The whole-city detector's link (Kafka source and outputs).
    pub(crate) whole_city: Option<WholeCityLink>,
}

impl PipelineLoop {
    /// Runs until `shutdown` completes or Kafka outputs were lost. The input ending does not
    /// stop it: the service keeps serving its last state.
    pub(crate) async fn drive(
        &mut self,
        mut batch_receiver: mpsc::Receiver<SourceMessage>,
        mut rules_receiver: mpsc::Receiver<RuleSet>,
        mut whole_city_updates: Option<mpsc::Receiver<WholeCityUpdate>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut input_open = true;
        self.on_tick().await;
        loop {
            if self.outputs_lost.is_some() {
                return;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                message = batch_receiver.recv(), if input_open => match message {
                    Some(message) => self.on_source_message(message, &mut batch_receiver).await,
                    None => {
                        input_open = false;
                        self.pipelines.finish(wall_clock_millis(), &mut self.outputs);
                        self.write_outputs();
                        tracing::info!("input ended; all windows closed; still serving until shutdown");
                    }
                },
                _ = ticker.tick() => self.on_tick().await,
                Some(rules) = rules_receiver.recv() => self.on_new_rules(rules),
                Some(update) = next_whole_city_update(&mut whole_city_updates) => {
                    self.on_whole_city_update(update);
                }
            }
        }
    }

    /// Handles `first` and, when it is a batch of admitted records and the partitions' engines
    /// have threads, the admitted batches already waiting behind it, as one batch of up to
    /// [`MAX_COALESCED_RECORDS`]: with a backlog, the engine threads' wake-ups are paid once
    /// for several consumer batches. (Without engine threads, taking them together measured
    /// no gain end to end, so each consumer batch stays a batch.) A message of another kind
    /// ends the batch and is handled after it, in order.
    async fn on_source_message(
        &mut self,
        first: SourceMessage,
        batch_receiver: &mut mpsc::Receiver<SourceMessage>,
    ) {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                SourceMessage::Records(records) => self.on_batch(records),
                SourceMessage::Admitted(mut records) => {
                    if self.pipelines.has_engine_threads() {
                        next = take_waiting_admitted(&mut records, batch_receiver);
                    }
                    self.on_admitted_batch(records);
                }
                SourceMessage::Assigned(partitions) => self.on_assigned(partitions),
                SourceMessage::Revoked { partitions, done } => {
                    let committable = self.on_revoked(&partitions).await;
                    let _ = done.send(committable);
                }
            }
        }
    }

    /// Writes what the pipelines produced, with their counts flushed to the shared metrics at
    /// the same moment (a scrape never shows windows whose counts it does not show).
    fn write_outputs(&mut self) {
        self.pipelines.flush_metrics();
        self.sinks.write(&mut self.outputs);
    }

    fn on_batch(&mut self, records: Vec<SourceRecord>) {
        let started = Instant::now();
        let wall_millis = wall_clock_millis();
        for record in records {
            self.pipelines
                .process(record, wall_millis, &mut self.outputs);
        }
        self.finish_batch(started);
    }

    /// A batch the source already admitted (Kafka): only the stateful stages run here.
    fn on_admitted_batch(&mut self, mut records: Vec<AdmittedRecord>) {
        let started = Instant::now();
        self.pipelines
            .process_admitted_batch(&mut records, wall_clock_millis(), &mut self.outputs);
        self.finish_batch(started);
    }

    /// Writes a batch's outputs and observes how long it took since `started`.
    fn finish_batch(&mut self, started: Instant) {
        self.write_outputs();
        self.metrics
            .processing_latency
            .observe(started.elapsed().as_secs_f64());
    }

    /// Takes over newly assigned Kafka partitions with their restored state.
    /// (The consumer thread decoded the snapshots and counted the restores.)
    fn on_assigned(&mut self, partitions: Vec<AssignedPartition>) {
        for assigned in partitions {
            let restored = assigned
                .restored
                .map(|(state, next_offset)| (state, Some(next_offset)));
            self.pipelines.assign_state(assigned.partition, restored);
            // Its restored firing alerts: this instance keeps them fresh in Alertmanager now.
            if let (Some(delivery), Some(owned)) = (
                &self.sinks.delivery,
                self.pipelines.partition(assigned.partition),
            ) {
                delivery.offer_active(&owned.pipeline.active_alerts());
            }
        }
        self.update_whole_city_role();
    }

    /// Snapshots revoked partitions (their records all processed: the consumer sent them
    /// first), drops them, and returns the offsets their acknowledged snapshots cover.
    async fn on_revoked(&mut self, partitions: &[u32]) -> Vec<(u32, u64)> {
        let Checkpointing::Kafka(kafka) = &self.checkpointing else {
            return Vec::new();
        };
        let timeout = kafka.state_timeout;
        let committable = self.snapshot_round(Some(partitions), timeout).await;
        for partition in partitions {
            // Its new owner keeps its firing alerts fresh in Alertmanager from now on.
            if let (Some(revoked), Some(delivery)) =
                (self.pipelines.revoke(*partition), &self.sinks.delivery)
            {
                let firing = revoked.pipeline.active_alerts();
                delivery.forget_active(firing.iter().map(|alert| alert.fingerprint.as_str()));
            }
            if let Some((topic, kafka_partition)) = self
                .checkpointing
                .kafka_source()
                .and_then(|source| source.topic_partition_of(*partition))
            {
                remove_partition_series(&self.metrics, topic, kafka_partition);
            }
        }
        self.update_whole_city_role();
        tracing::info!(partitions = ?partitions, snapshotted = committable.len(), "partitions released");
        committable
    }

    /// One Kafka snapshot round over `only` (or every owned partition): outputs made durable,
    /// each changed partition's state written to the state topic and acknowledged. Returns
    /// the `(partition, next offset)` pairs now safe to commit; nothing when any step failed.
    async fn snapshot_round(&mut self, only: Option<&[u32]>, timeout: Duration) -> Vec<(u32, u64)> {
        let round_started = Instant::now();
        if !matches!(self.checkpointing, Checkpointing::Kafka(_)) {
            return Vec::new();
        }
        self.write_outputs();
        let Checkpointing::Kafka(kafka) = &self.checkpointing else {
            return Vec::new();
        };
        match self.sinks.flush(Some(timeout)) {
            Ok(()) => {}
            Err(FlushError::KafkaRecordsLost { lost }) => {
                tracing::error!(
                    lost,
                    "kafka output records lost; stopping without committing, a restart re-sends them from the last snapshot"
                );
                self.outputs_lost = Some(lost);
                return Vec::new();
            }
            Err(error) => {
                tracing::warn!(%error, "outputs not durable; no snapshot this round");
                return Vec::new();
            }
        }
        kafka
            .write_snapshots(
                &mut self.pipelines,
                only,
                timeout,
                &self.metrics,
                round_started,
            )
            .await
    }

    async fn on_tick(&mut self) {
        let wall_millis = wall_clock_millis();
        self.health
            .pipeline_heartbeat_millis
            .store(wall_millis, Ordering::Relaxed);
        self.pipelines.advance(wall_millis, &mut self.outputs);
        self.write_outputs();
        if let Err(error) = self.sinks.flush(None) {
            tracing::error!(%error, "flushing outputs failed");
        }
        let whole_city_firing = match &self.whole_city {
            Some(whole_city) if whole_city.role.is_publishing() => whole_city.role.firing(),
            _ => Vec::new(),
        };
        self.pipelines
            .update_gauges(wall_millis, &whole_city_firing);
        self.pipelines.export_suppressed_repeats();
        self.publish_gauges();
        if self.status.is_due(wall_millis) {
            let records = self.status_records(wall_millis);
            self.sinks.write_status(records, wall_millis);
        }
        self.sinks.publish_read_model(wall_millis);
        match &mut self.checkpointing {
            Checkpointing::None => {}
            Checkpointing::File(file) => {
                if file.is_due() {
                    file.write(&self.pipelines, &self.metrics);
                }
            }
            Checkpointing::Kafka(kafka) => {
                if kafka.start_periodic_round() {
                    let timeout = PERIODIC_SNAPSHOT_GRACE.min(kafka.state_timeout);
                    let committable = self.snapshot_round(None, timeout).await;
                    if let Some(source) = self.checkpointing.kafka_source() {
                        source.commit_async(committable);
                    }
                }
            }
        }
    }

    /// Kafka partition gauges, cell and community gauges, and the fraud metrics. (The API
    /// reads the read model, fed through the sinks.)
    fn publish_gauges(&mut self) {
        if let Some(source) = self.checkpointing.kafka_source() {
            let high_watermarks = source.progress().high_watermarks_now();
            let gauges = partition_gauges(&self.pipelines, &high_watermarks, |partition| {
                source.topic_partition_of(partition)
            });
            publish_partition_gauges(&self.metrics, &gauges);
        }
        let registry = self.pipelines.registry().clone();
        let counts = view_counts(&self.pipelines, self.view_labels.len());
        self.cell_gauges
            .publish(&self.metrics, &registry, &self.view_labels, &counts);
    }

    /// This instance's fraud partials (one per owned partition) and instance status.
    fn status_records(&mut self, wall_millis: i64) -> Vec<OutputRecord> {
        let kafka_source = self.checkpointing.kafka_source();
        let partition_name = |partition: u32| match kafka_source
            .and_then(|source| source.topic_partition_of(partition))
        {
            Some((topic, kafka_partition)) => format!("{topic}/{kafka_partition}"),
            None => format!("local/{partition}"),
        };
        let broker_reachable = self
            .health
            .kafka_broker_reachable
            .get()
            .is_none_or(|reachable| reachable.load(Ordering::Relaxed));
        let mut records: Vec<OutputRecord> =
            fraud_partials(&self.pipelines, &partition_name, wall_millis)
                .into_iter()
                .map(OutputRecord::FraudPartial)
                .collect();
        records.push(OutputRecord::InstanceStatus(self.status.instance_status(
            &self.pipelines,
            &self.metrics,
            broker_reachable,
            &partition_name,
            wall_millis,
        )));
        records
    }

    /// Publishes the whole-city detector's alert changes if this instance owns input
    /// partition 0 (one publisher in the group; the detector offers a change again until the
    /// alerts topic shows it, so a rebalance loses none).
    fn on_whole_city_update(&mut self, update: WholeCityUpdate) {
        let Some(whole_city) = self.whole_city.as_mut() else {
            return;
        };
        let publishing = whole_city.role.is_publishing();
        match update {
            WholeCityUpdate::Firing(firing) => {
                whole_city.role.replace_firing(&firing);
                if let (true, Some(delivery)) = (publishing, &self.sinks.delivery) {
                    delivery.offer_active(&firing);
                }
            }
            WholeCityUpdate::Publish(changes) => {
                whole_city.role.note(&changes);
                let result = if publishing {
                    "published"
                } else {
                    "not_publisher"
                };
                self.metrics
                    .whole_city_alerts
                    .with_label_values(&[result])
                    .inc_by(changes.len() as u64);
                if publishing {
                    crate::pipeline::metrics::record_alert_changes(
                        &self.metrics,
                        &changes,
                        wall_clock_millis(),
                    );
                    self.outputs.alerts.extend(changes);
                    self.write_outputs();
                }
            }
        }
    }

    /// After a rebalance: this instance publishes whole-city alerts while it owns input
    /// partition 0. Alertmanager's re-sends of the firing ones move with the role.
    fn update_whole_city_role(&mut self) {
        let Some(whole_city) = self.whole_city.as_mut() else {
            return;
        };
        let owns_partition_zero = self
            .pipelines
            .partitions()
            .any(|(partition, _)| partition == 0);
        match whole_city.role.set_publishing(owns_partition_zero) {
            RoleChange::Became => {
                tracing::info!(
                    "this instance publishes whole-city alerts (it owns input partition 0)"
                );
                if let Some(delivery) = &self.sinks.delivery {
                    delivery.offer_active(&whole_city.role.firing());
                }
            }
            RoleChange::Lost => {
                tracing::info!("another instance publishes whole-city alerts now");
                if let Some(delivery) = &self.sinks.delivery {
                    delivery.forget_active(whole_city.role.firing_fingerprints());
                }
            }
            RoleChange::Unchanged => {}
        }
    }

    fn on_new_rules(&mut self, rules: RuleSet) {
        if let Some(whole_city) = &self.whole_city {
            if whole_city.rules.try_send(rules.clone()).is_err() {
                tracing::warn!("the whole-city detector did not take the reloaded rules");
            }
        }
        let version = rules.version().to_string();
        self.pipelines
            .replace_rules(rules, wall_clock_millis(), &mut self.outputs);
        self.write_outputs();
        self.metrics.rules_version.reset();
        self.metrics
            .rules_version
            .with_label_values(&[version.as_str()])
            .set(1);
        tracing::info!(version = %version, "new rules running");
        if let Some(read_model) = self.sinks.read_model.as_mut() {
            read_model.set_rules_version(version);
        }
    }

    /// Last outputs, flushes, the last snapshots (file, or state topic + synchronous commit).
    pub(crate) async fn shut_down(&mut self) {
        self.write_outputs();
        let gone = OutputRecord::InstanceGone {
            instance_id: self.status.instance_id.clone(),
        };
        self.sinks.write_status(vec![gone], wall_clock_millis());
        if let Err(error) = self.sinks.flush(Some(KAFKA_SINK_FLUSH_GRACE)) {
            tracing::error!(%error, "outputs not all durable at shutdown");
        }
        let state_timeout = match &mut self.checkpointing {
            Checkpointing::None => return,
            Checkpointing::File(file) => {
                file.write(&self.pipelines, &self.metrics);
                return;
            }
            Checkpointing::Kafka(kafka) => kafka.state_timeout,
        };
        if self.outputs_lost.is_some() {
            return;
        }
        let committable = self.snapshot_round(None, state_timeout).await;
        let Some(source) = self.checkpointing.kafka_source() else {
            return;
        };
        match tokio::time::timeout(state_timeout, source.commit(committable)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "committing offsets at shutdown failed"),
            Err(_elapsed) => tracing::error!("committing offsets at shutdown timed out"),
        }
    }
}

/// Appends to `records` the admitted batches waiting in `batch_receiver`, until it holds
/// [`MAX_COALESCED_RECORDS`] or more, the channel is empty, or a message of another kind comes
/// next: that message is returned, to be handled after these records.
fn take_waiting_admitted(
    records: &mut Vec<AdmittedRecord>,
    batch_receiver: &mut mpsc::Receiver<SourceMessage>,
) -> Option<SourceMessage> {
    while records.len() < MAX_COALESCED_RECORDS {
        match batch_receiver.try_recv() {
            Ok(SourceMessage::Admitted(more)) => records.extend(more),
            Ok(other) => return Some(other),
            Err(_empty_or_closed) => return None,
        }
    }
    None
}

/// The whole-city detector's next update; never, without a detector.
async fn next_whole_city_update(
    receiver: &mut Option<mpsc::Receiver<WholeCityUpdate>>,
) -> Option<WholeCityUpdate> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RejectedInput;

    /// `count` admitted records of `partition` (rejected ones: only their count matters here).
    fn admitted(partition: u32, count: usize) -> Vec<AdmittedRecord> {
        (0..count)
            .map(|position| AdmittedRecord {
                partition,
                position: position as u64,
                decoded: false,
                outcome: Err(RejectedInput {
                    rejection: crate::decode::Rejection {
                        reason: crate::dead_letter::DeadLetterReason::InvalidProtobuf,
                        detail: String::new(),
                        event_id: String::new(),
                    },
                    payload: Vec::new(),
                }),
            })
            .collect()
    }

    #[test]
    fn waiting_admitted_batches_join_the_first_until_another_kind_of_message_comes_next() {
        let (sender, mut receiver) = mpsc::channel(8);
        sender
            .try_send(SourceMessage::Admitted(admitted(1, 3)))
            .unwrap();
        sender
            .try_send(SourceMessage::Admitted(admitted(2, 4)))
            .unwrap();
        sender
            .try_send(SourceMessage::Assigned(Vec::new()))
            .unwrap();
        sender
            .try_send(SourceMessage::Admitted(admitted(3, 5)))
            .unwrap();
        let mut records = admitted(0, 2);
        let next = take_waiting_admitted(&mut records, &mut receiver);
        let partitions: Vec<u32> = records.iter().map(|record| record.partition).collect();
        assert_eq!(
            partitions,
            [0, 0, 1, 1, 1, 2, 2, 2, 2],
            "in the order they came"
        );
        assert!(matches!(next, Some(SourceMessage::Assigned(_))));
        let Ok(SourceMessage::Admitted(after)) = receiver.try_recv() else {
            panic!("the batch after the assignment stays in the channel");
        };
        assert_eq!(after.len(), 5);
        assert!(take_waiting_admitted(&mut records, &mut receiver).is_none());
        assert_eq!(records.len(), 9, "an empty channel adds nothing");
    }

    #[test]
    fn waiting_admitted_batches_stop_joining_at_the_coalescing_bound() {
        let (sender, mut receiver) = mpsc::channel(16);
        for _ in 0..10 {
            sender
                .try_send(SourceMessage::Admitted(admitted(0, 1024)))
                .unwrap();
        }
        let mut records = admitted(0, 1024);
        assert!(take_waiting_admitted(&mut records, &mut receiver).is_none());
        assert_eq!(records.len(), MAX_COALESCED_RECORDS);
        let mut rest = 0;
        while let Ok(SourceMessage::Admitted(batch)) = receiver.try_recv() {
            rest += batch.len();
        }
        assert_eq!(
            rest,
            11 * 1024 - MAX_COALESCED_RECORDS,
            "the rest waits for the next turn"
        );
    }
}
