//! `gridwatch run`: the service. A source task (simulator, file) or the Kafka consumer thread
//! feeds record batches through a bounded channel (backpressure) to the pipeline task, which
//! owns the [`PartitionedPipelines`] and publishes a [`LiveView`] for the HTTP API about once
//! a second. With Kafka it also snapshots partition state to the state topic and commits the
//! offsets the snapshots cover (periodically, on revoke, at shutdown). Shutdown (the
//! `shutdown` future) stops the source, writes the last outputs, flushes the sinks and the
//! state snapshot, then stops the HTTP server.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiState, CellActivity, CellDetail, CellQuery, Health, LiveView};
use crate::config::{Config, SimulatorPacing, SourceKind};
use crate::fraud::{FraudBaseline, FraudSettings};
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::partitions::{AssignedPartition, PartitionedPipelines, PipelineFactory, SourceMessage};
use crate::pipeline::{Outputs, PipelineSettings};
use crate::rules::RuleSet;
use crate::sink::delivery::AlertDelivery;
use crate::sink::file::JsonlFileSink;
use crate::sink::kafka::KafkaSink;
use crate::source::file::FileSource;
use crate::source::kafka::KafkaSource;
use crate::source::simulator::{Pacing, Simulator, SimulatorSettings, SimulatorSource};
use crate::source::Source;
use crate::state::kafka::{SnapshotRecord, StateWriter};
use crate::time::wall_clock_millis;

/// Errors that stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Reference data could not be loaded.
    #[error(transparent)]
    Seeds(#[from] crate::grid::GridLoadError),
    /// The rules file is missing or invalid.
    #[error("rules file {path}: {message}")]
    Rules {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The source could not be opened.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// An output could not be opened.
    #[error(transparent)]
    Sink(#[from] crate::sink::file::FileSinkError),
    /// Alert delivery could not start.
    #[error(transparent)]
    Delivery(#[from] crate::sink::delivery::DeliveryError),
    /// The Kafka consumer could not start.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// The fraud settings or baseline are invalid.
    #[error(transparent)]
    Fraud(#[from] crate::fraud::FraudError),
    /// Kafka output records were lost (dropped or not delivered) with a Kafka source: the
    /// service stops without committing past them, so that a restart replays them from the
    /// last snapshot.
    #[error("{lost} kafka output records were lost; stopping without committing so that a restart re-sends them from the last snapshot")]
    OutputsLost {
        /// Records lost.
        lost: u64,
    },
}

/// Records per source batch.
const BATCH_SIZE: usize = 1024;
/// Batches buffered between the source and the pipeline (backpressure beyond this).
const CHANNEL_BATCHES: usize = 8;
/// How often the pipeline advances by wall time, publishes the live view and flushes sinks.
const TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for queued alerts to be delivered.
const ALERT_DELIVERY_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for Kafka output records to be acknowledged.
const KAFKA_SINK_FLUSH_GRACE: Duration = Duration::from_secs(10);
/// How long a periodic snapshot round waits for output and state acknowledgements (short:
/// the pipeline does not process meanwhile, and `/healthz` goes stale after 15 s).
const PERIODIC_SNAPSHOT_GRACE: Duration = Duration::from_secs(5);
/// Cells kept per view in the live view.
const LIVE_TOP_CELLS: usize = 100;

/// Loads the registry named by the config (or the embedded seeds).
pub fn load_registry(config: &Config) -> Result<Arc<GridRegistry>, ServiceError> {
    match &config.seeds.dir {
        Some(directory) => Ok(Arc::new(GridRegistry::from_seed_dir(directory)?)),
        None => Ok(GridRegistry::embedded()),
    }
}

/// Loads the rules named by the config (or the embedded default rules).
pub fn load_rules(config: &Config) -> Result<RuleSet, ServiceError> {
    let pane_size_millis = config.window_settings().size_millis;
    let Some(path) = &config.rules.path else {
        return RuleSet::embedded_default(pane_size_millis).map_err(|error| ServiceError::Rules {
            path: "(embedded seeds/rules.toml)".to_string(),
            message: error.to_string(),
        });
    };
    let text = std::fs::read_to_string(path).map_err(|error| ServiceError::Rules {
        path: path.display().to_string(),
        message: error.to_string(),
    })?;
    RuleSet::from_toml_str(&text, pane_size_millis).map_err(|error| ServiceError::Rules {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

/// Loads the fraud baseline named by the config (`fraud_baseline.csv` of `seeds.dir`, or the
/// embedded one) and checks it has the baseline year.
pub fn load_fraud_baseline(
    config: &Config,
    settings: &FraudSettings,
) -> Result<FraudBaseline, ServiceError> {
    let baseline = match &config.seeds.dir {
        Some(directory) => {
            FraudBaseline::from_seed_dir(directory).map_err(crate::fraud::FraudError::Baseline)?
        }
        None => FraudBaseline::embedded().map_err(crate::fraud::FraudError::Baseline)?,
    };
    if !baseline.has_year(settings.baseline_year) {
        return Err(crate::fraud::FraudError::MissingBaselineYear(settings.baseline_year).into());
    }
    Ok(baseline)
}

/// The settings of each partition's pipeline. With a Kafka source, a partition's watermark
/// moves with its own records only (no processing-time advance while it is idle), so a replay
/// after a crash decides lateness exactly as the first run did — idle partitions never hold
/// others back, since state is per partition — and data-gap silence is tested only for the
/// partition's own cells.
pub fn partition_pipeline_settings(config: &Config) -> PipelineSettings {
    let mut settings = PipelineSettings::from_config(config);
    if config.source.kind == SourceKind::Kafka {
        settings.window.idle_timeout_millis = i64::MAX;
        settings.partial_input = true;
    }
    settings
}

/// Runs the service until `shutdown` completes. HTTP is served on `listener` (bind it to port
/// 0 in tests).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let registry = load_registry(&config)?;
    let rules = load_rules(&config)?;
    let source_name = match config.source.kind {
        SourceKind::Simulator => "simulator",
        SourceKind::File => "file",
        SourceKind::Kafka => "kafka",
    };
    let metrics = Arc::new(Metrics::new(&[source_name], rules.version())?);
    set_community_info(&metrics, &registry);
    let health = Arc::new(Health::default());
    let rules_version = rules.version().to_string();
    let fraud_settings = FraudSettings::from_config(&config.fraud)?;
    let fraud_baseline = load_fraud_baseline(&config, &fraud_settings)?;
    let mut pipelines = PartitionedPipelines::new(PipelineFactory {
        settings: partition_pipeline_settings(&config),
        registry: registry.clone(),
        rules,
        metrics: metrics.clone(),
        source_name,
        fraud_settings: Some(fraud_settings.clone()),
    })
    .with_operator_idle_timeout(config.window_settings().idle_timeout_millis);
    if let Some(path) = &config.state.snapshot_path {
        restore_snapshot_file(&mut pipelines, path);
    }
    if config.privacy.pseudonymization_key == crate::config::DEFAULT_PSEUDONYMIZATION_KEY {
        tracing::warn!("using the built-in pseudonymization key; set privacy.pseudonymization_key for real data");
    }
    let mut sink = match &config.output.dir {
        Some(directory) => Some(JsonlFileSink::open(directory, true)?),
        None => None,
    };
    let kafka_sink = KafkaSink::create(
        &config.kafka,
        crate::sink::cloudevents::event_source(&config.alerting.instance),
        &metrics,
    )?;
    let alert_delivery = AlertDelivery::start(&config.alerting, registry.clone(), &metrics)?;
    if let Some(delivery) = &alert_delivery {
        delivery.offer_active(&pipelines.active_alerts());
    }

    let cancel = CancellationToken::new();
    let (batch_sender, batch_receiver) = mpsc::channel::<SourceMessage>(CHANNEL_BATCHES);
    let mut kafka_source = None;
    let mut state_writer = None;
    let source_task = match config.source.kind {
        SourceKind::Simulator => {
            let settings = SimulatorSettings {
                seed: config.simulator.seed,
                start_millis: wall_clock_millis()
                    - crate::time::duration_millis(config.simulator.backfill),
                rate_multiplier: config.simulator.rate_multiplier,
                scenarios: config.simulator.scenarios.clone(),
                ..SimulatorSettings::default()
            };
            let pacing = match config.simulator.pacing {
                SimulatorPacing::Realtime => Pacing::RealTime,
                SimulatorPacing::Fast => Pacing::AsFastAsPossible,
            };
            let simulator = Simulator::new(settings, registry.clone())
                .map_err(crate::source::SourceError::Simulator)?;
            let source = SimulatorSource::new(simulator, pacing);
            Some(tokio::spawn(source_loop(
                source,
                batch_sender,
                cancel.clone(),
                health.clone(),
            )))
        }
        SourceKind::File => {
            let path = config.file.path.clone().unwrap_or_default();
            let source = FileSource::open(&path, config.file.format)?;
            Some(tokio::spawn(source_loop(
                source,
                batch_sender,
                cancel.clone(),
                health.clone(),
            )))
        }
        SourceKind::Kafka => {
            state_writer = Some(StateWriter::create(&config.kafka)?);
            let source = KafkaSource::start(
                &config.kafka,
                config.window_settings(),
                batch_sender,
                metrics.clone(),
            )?;
            let _ = health
                .kafka_broker_reachable
                .set(source.progress().broker_reachable.clone());
            kafka_source = Some(source);
            health
                .source_ready_millis
                .store(wall_clock_millis(), Ordering::Relaxed);
            None
        }
    };

    let (live_sender, live_receiver) = watch::channel(Arc::new(LiveView {
        rules_version: rules_version.clone(),
        views: view_names(&config),
        ..LiveView::default()
    }));
    let (cell_query_sender, cell_query_receiver) = mpsc::channel::<CellQuery>(64);
    let api_state = ApiState {
        metrics: metrics.clone(),
        live: live_receiver,
        health: health.clone(),
        cell_queries: cell_query_sender,
    };
    // Before the HTTP server: once it answers, SIGHUP is already a reload.
    let (rules_sender, rules_receiver) = mpsc::channel::<RuleSet>(4);
    let reload_task = match &config.rules.path {
        Some(path) => Some(crate::reload::spawn(
            path.clone(),
            config.window_settings().size_millis,
            rules_version.clone(),
            metrics.clone(),
            rules_sender,
            cancel.clone(),
        )),
        None => {
            tracing::info!("rules are the embedded defaults; set rules.path to reload them on SIGHUP or change");
            None
        }
    };
    let local_address = listener.local_addr()?;
    tracing::info!(address = %local_address, source = source_name, rules_version = %rules_version, "gridwatch serving");
    let server_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, crate::api::router(api_state))
            .with_graceful_shutdown(async move { server_cancel.cancelled().await })
            .await
    });

    let view_labels = view_names(&config);
    let mut loop_state = PipelineLoop {
        pipelines,
        sink,
        kafka_sink,
        alert_delivery,
        kafka_source,
        state_writer,
        kafka_snapshot_interval: config.kafka.snapshot_interval,
        kafka_state_timeout: config.kafka.state_timeout,
        last_kafka_snapshot: Instant::now(),
        outputs_lost: None,
        outputs: Outputs::default(),
        metrics: metrics.clone(),
        health: health.clone(),
        live_sender,
        view_labels,
        cell_series: std::collections::BTreeSet::new(),
        rules_version,
        snapshot_path: config.state.snapshot_path.clone(),
        snapshot_interval: config.state.snapshot_interval,
        last_snapshot: Instant::now(),
        fraud_settings,
        fraud_baseline,
    };
    loop_state
        .drive(
            batch_receiver,
            cell_query_receiver,
            rules_receiver,
            shutdown,
        )
        .await;
    cancel.cancel();
    loop_state.shut_down().await;
    let outputs_lost = loop_state.outputs_lost;
    sink = loop_state.sink.take();
    drop(sink);
    if let Some(source) = loop_state.kafka_source.take() {
        // Joining the consumer thread lets it leave the group; it blocks, so off the runtime.
        if let Err(error) = tokio::task::spawn_blocking(move || source.stop()).await {
            tracing::error!(%error, "stopping the kafka consumer failed");
        }
    }
    if let Some(delivery) = loop_state.alert_delivery.take() {
        delivery.shut_down(ALERT_DELIVERY_GRACE).await;
    }
    if let Some(task) = source_task {
        if let Err(error) = task.await {
            tracing::error!(%error, "source task failed");
        }
    }
    if let Some(task) = reload_task {
        if let Err(error) = task.await {
            tracing::error!(%error, "rules reload task failed");
        }
    }
    match server.await {
        Ok(result) => result?,
        Err(error) => tracing::error!(%error, "http server task failed"),
    }
    if let Some(lost) = outputs_lost {
        return Err(ServiceError::OutputsLost { lost });
    }
    tracing::info!("gridwatch stopped");
    Ok(())
}

/// Publishes `gridwatch_community_info` (names by community id) for dashboard joins.
fn set_community_info(metrics: &Metrics, registry: &GridRegistry) {
    for community in registry.communities() {
        let district_name = registry
            .district(&community.district_code)
            .map(|district| district.name_zh.as_str())
            .unwrap_or_default();
        metrics
            .community_info
            .with_label_values(&[
                community.district_code.as_str(),
                district_name,
                community.id.as_str(),
                community.name.as_str(),
            ])
            .set(1);
    }
}

/// Names of the views as the API and the `view` metric label spell them: "15m", "1h", "24h".
fn view_names(config: &Config) -> Vec<String> {
    config
        .window
        .views
        .iter()
        .map(|span| view_name(*span))
        .collect()
}

/// The shortest whole-unit spelling of a view span: hours, else minutes, else seconds.
fn view_name(span: Duration) -> String {
    let seconds = span.as_secs();
    if seconds > 0 && seconds % 3600 == 0 {
        return format!("{}h", seconds / 3600);
    }
    if seconds > 0 && seconds % 60 == 0 {
        return format!("{}m", seconds / 60);
    }
    format!("{seconds}s")
}

/// Pulls batches from a source into the channel until cancelled or the source ends.
async fn source_loop<S: Source>(
    mut source: S,
    batch_sender: mpsc::Sender<SourceMessage>,
    cancel: CancellationToken,
    health: Arc<Health>,
) {
    health
        .source_ready_millis
        .store(wall_clock_millis(), Ordering::Relaxed);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = source.next_batch(BATCH_SIZE) => batch,
        };
        match batch {
            Ok(Some(records)) => {
                health
                    .source_ready_millis
                    .store(wall_clock_millis(), Ordering::Relaxed);
                if batch_sender
                    .send(SourceMessage::Records(records))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {
                tracing::info!(source = source.name(), "source reached end of input");
                return;
            }
            Err(error) => {
                tracing::warn!(source = source.name(), %error, "source error; retrying in 1 s");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The pipeline task's state.
struct PipelineLoop {
    /// One synchronous pipeline per owned input partition.
    pipelines: PartitionedPipelines,
    /// JSONL outputs, when configured.
    sink: Option<JsonlFileSink>,
    /// Kafka output topics, when `kafka.sinks.enabled` (queueing waits boundedly).
    kafka_sink: Option<KafkaSink>,
    /// Alertmanager / webhook delivery, when configured (hand-off never blocks).
    alert_delivery: Option<AlertDelivery>,
    /// The Kafka consumer (Kafka source only): commits offsets, reports lag and reachability.
    kafka_source: Option<KafkaSource>,
    /// Writes partition snapshots to the state topic (Kafka source only).
    state_writer: Option<StateWriter>,
    /// How often partitions are snapshotted and their offsets committed.
    kafka_snapshot_interval: Duration,
    /// How long a revoke may take to snapshot its partitions.
    kafka_state_timeout: Duration,
    /// When the last Kafka snapshot round ran.
    last_kafka_snapshot: Instant,
    /// Set when Kafka output records were lost with a Kafka source: the loop stops, nothing
    /// more is committed.
    outputs_lost: Option<u64>,
    /// Reused output buffer.
    outputs: Outputs,
    /// Metrics (gauges refreshed on each tick).
    metrics: Arc<Metrics>,
    /// Heartbeat for `/healthz`.
    health: Arc<Health>,
    /// Publishes the live view to the API.
    live_sender: watch::Sender<Arc<LiveView>>,
    /// Names of the views, e.g. "15m".
    view_labels: Vec<String>,
    /// (cell, view) pairs that currently have a `gridwatch_cell_incidents` series.
    cell_series: std::collections::BTreeSet<(crate::grid::CellIndex, usize)>,
    /// Rules version for the live view.
    rules_version: String,
    /// Where snapshots go, when configured.
    snapshot_path: Option<std::path::PathBuf>,
    /// How often to snapshot.
    snapshot_interval: Duration,
    /// When the last snapshot was written.
    last_snapshot: Instant,
    /// The fraud target's settings (report and metrics on each tick).
    fraud_settings: FraudSettings,
    /// The fraud target's baseline.
    fraud_baseline: FraudBaseline,
}

impl PipelineLoop {
    async fn drive(
        &mut self,
        mut batch_receiver: mpsc::Receiver<SourceMessage>,
        mut cell_query_receiver: mpsc::Receiver<CellQuery>,
        mut rules_receiver: mpsc::Receiver<RuleSet>,
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
                    Some(SourceMessage::Records(records)) => self.on_batch(records),
                    Some(SourceMessage::Assigned(partitions)) => self.on_assigned(partitions),
                    Some(SourceMessage::Revoked { partitions, done }) => {
                        let committable = self.on_revoked(&partitions).await;
                        let _ = done.send(committable);
                    }
                    None => {
                        input_open = false;
                        let wall_millis = wall_clock_millis();
                        self.pipelines.finish(wall_millis, &mut self.outputs);
                        self.write_outputs();
                        tracing::info!("input ended; all windows closed; still serving until shutdown");
                    }
                },
                _ = ticker.tick() => self.on_tick().await,
                Some(rules) = rules_receiver.recv() => self.on_new_rules(rules),
                Some(query) = cell_query_receiver.recv() => {
                    let detail = self.cell_detail(&query.grid_id);
                    let _ = query.reply.send(detail);
                }
            }
        }
    }

    fn on_batch(&mut self, records: Vec<crate::source::SourceRecord>) {
        let started = Instant::now();
        let wall_millis = wall_clock_millis();
        for record in records {
            self.pipelines
                .process(record, wall_millis, &mut self.outputs);
        }
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
        }
    }

    /// Snapshots revoked partitions (their records all processed: the consumer sent them
    /// first), drops them, and returns the offsets their acknowledged snapshots cover.
    async fn on_revoked(&mut self, partitions: &[u32]) -> Vec<(u32, u64)> {
        let timeout = self.kafka_state_timeout;
        let committable = self.snapshot_round(Some(partitions), timeout).await;
        for partition in partitions {
            self.pipelines.revoke(*partition);
            self.remove_partition_series(*partition);
        }
        tracing::info!(partitions = ?partitions, snapshotted = committable.len(), "partitions released");
        committable
    }

    /// One snapshot round over `only` (or every owned partition): outputs acknowledged, each
    /// changed partition's state written to the state topic and acknowledged. Returns the
    /// `(partition, next offset)` pairs now safe to commit; nothing when any step failed.
    async fn snapshot_round(&mut self, only: Option<&[u32]>, timeout: Duration) -> Vec<(u32, u64)> {
        if self.state_writer.is_none() || self.kafka_source.is_none() {
            return Vec::new();
        }
        let started = Instant::now();
        self.write_outputs();
        if let Some(sink) = self.sink.as_mut() {
            if let Err(error) = sink.flush() {
                tracing::error!(%error, "flushing outputs failed; no snapshot this round");
                self.metrics.sink_errors.with_label_values(&["file"]).inc();
                return Vec::new();
            }
        }
        if let Some(kafka_sink) = &self.kafka_sink {
            if let Err(error) = kafka_sink.flush(timeout) {
                tracing::warn!(%error, "kafka outputs not acknowledged; no snapshot this round");
                return Vec::new();
            }
            let lost = kafka_sink.lost_records();
            if lost > 0 {
                tracing::error!(
                    lost,
                    "kafka output records lost; stopping without committing, a restart re-sends them from the last snapshot"
                );
                self.outputs_lost = Some(lost);
                return Vec::new();
            }
        }
        let Some(kafka_source) = &self.kafka_source else {
            return Vec::new();
        };
        // In step: the partition and offset each state record covers, and the records.
        let mut snapshotted: Vec<(u32, u64)> = Vec::new();
        let mut records: Vec<SnapshotRecord> = Vec::new();
        for (partition, owned) in self.pipelines.partitions() {
            if only.is_some_and(|selected| !selected.contains(&partition)) {
                continue;
            }
            let Some(next_offset) = owned.next_position else {
                continue;
            };
            if owned.snapshotted_position == Some(next_offset) {
                continue;
            }
            let Some((input_topic, kafka_partition)) = kafka_source.topic_partition_of(partition)
            else {
                continue;
            };
            match crate::state::snapshot(&owned.pipeline) {
                Ok(bytes) => {
                    self.metrics.kafka.snapshot_size.observe(bytes.len() as f64);
                    snapshotted.push((partition, next_offset));
                    records.push(SnapshotRecord {
                        input_topic: input_topic.to_string(),
                        input_partition: kafka_partition,
                        next_offset,
                        bytes,
                    });
                }
                Err(error) => {
                    tracing::error!(%error, partition, "serializing partition state failed");
                    self.metrics
                        .kafka
                        .snapshots
                        .with_label_values(&["failed"])
                        .inc();
                }
            }
        }
        if records.is_empty() {
            return Vec::new();
        }
        let Some(state_writer) = &self.state_writer else {
            return Vec::new();
        };
        if let Err(error) = state_writer.write(&records, timeout).await {
            tracing::warn!(%error, partitions = records.len(), "partition snapshots not acknowledged; offsets not committed");
            self.metrics
                .kafka
                .snapshots
                .with_label_values(&["failed"])
                .inc_by(records.len() as u64);
            return Vec::new();
        }
        self.metrics
            .kafka
            .snapshots
            .with_label_values(&["ok"])
            .inc_by(records.len() as u64);
        self.metrics
            .kafka
            .snapshot_duration
            .observe(started.elapsed().as_secs_f64());
        for (partition, next_offset) in &snapshotted {
            if let Some(owned) = self.pipelines.partition_mut(*partition) {
                owned.snapshotted_position = Some(*next_offset);
            }
        }
        snapshotted
    }

    /// Kafka lag and per-partition watermark gauges of the owned partitions.
    fn update_kafka_gauges(&self) {
        let Some(kafka_source) = &self.kafka_source else {
            return;
        };
        let high_watermarks = kafka_source.progress().high_watermarks_now();
        for (partition, owned) in self.pipelines.partitions() {
            let Some((topic, kafka_partition)) = kafka_source.topic_partition_of(partition) else {
                continue;
            };
            let partition_label = kafka_partition.to_string();
            let labels = [topic, partition_label.as_str()];
            if let Some(high_watermark) = high_watermarks.get(&partition) {
                let next_offset = owned
                    .next_position
                    .and_then(|next| i64::try_from(next).ok())
                    .unwrap_or(0);
                self.metrics
                    .kafka
                    .consumer_lag
                    .with_label_values(&labels)
                    .set((high_watermark - next_offset).max(0));
            }
            if let Some(watermark) = owned.pipeline.watermark_millis() {
                self.metrics
                    .kafka
                    .partition_watermark
                    .with_label_values(&labels)
                    .set(watermark as f64 / 1000.0);
            }
        }
    }

    /// Removes the per-partition series of a partition no longer owned.
    fn remove_partition_series(&self, partition: u32) {
        let Some(kafka_source) = &self.kafka_source else {
            return;
        };
        let Some((topic, kafka_partition)) = kafka_source.topic_partition_of(partition) else {
            return;
        };
        let partition_label = kafka_partition.to_string();
        let labels = [topic, partition_label.as_str()];
        let _ = self.metrics.kafka.consumer_lag.remove_label_values(&labels);
        let _ = self
            .metrics
            .kafka
            .partition_watermark
            .remove_label_values(&labels);
    }

    async fn on_tick(&mut self) {
        let wall_millis = wall_clock_millis();
        self.health
            .pipeline_heartbeat_millis
            .store(wall_millis, Ordering::Relaxed);
        self.pipelines.advance(wall_millis, &mut self.outputs);
        self.write_outputs();
        if let Some(sink) = self.sink.as_mut() {
            if let Err(error) = sink.flush() {
                tracing::error!(%error, "flushing outputs failed");
                self.metrics.sink_errors.with_label_values(&["file"]).inc();
            }
        }
        self.pipelines.update_gauges(wall_millis);
        self.update_kafka_gauges();
        self.publish_live_view();
        if self.snapshot_path.is_some() && self.last_snapshot.elapsed() >= self.snapshot_interval {
            self.write_snapshot();
        }
        let broker_reachable = self
            .kafka_source
            .as_ref()
            .is_some_and(|source| source.progress().broker_reachable.load(Ordering::Relaxed));
        if broker_reachable && self.last_kafka_snapshot.elapsed() >= self.kafka_snapshot_interval {
            self.last_kafka_snapshot = Instant::now();
            let committable = self
                .snapshot_round(None, PERIODIC_SNAPSHOT_GRACE.min(self.kafka_state_timeout))
                .await;
            if let Some(kafka_source) = &self.kafka_source {
                kafka_source.commit_async(committable);
            }
        }
    }

    fn write_outputs(&mut self) {
        if self.outputs.is_empty() {
            return;
        }
        if let Some(delivery) = &self.alert_delivery {
            delivery.offer(&self.outputs.alerts);
        }
        if let Some(kafka_sink) = &self.kafka_sink {
            let dropped = kafka_sink.write(&self.outputs);
            if dropped > 0 {
                tracing::error!(
                    dropped,
                    "kafka output records dropped (producer queue full or refused)"
                );
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            if let Err(error) = sink.write(&self.outputs) {
                tracing::error!(%error, "writing outputs failed");
                let lost = self.outputs.windows.len()
                    + self.outputs.alerts.len()
                    + self.outputs.dead_letters.len();
                self.metrics
                    .sink_errors
                    .with_label_values(&["file"])
                    .inc_by(lost as u64);
            }
        }
        self.outputs.clear();
    }

    fn publish_live_view(&mut self) {
        let registry = self.pipelines.registry().clone();
        let hottest_cells = (0..self.view_labels.len())
            .map(|view_index| {
                self.pipelines
                    .top_cells(view_index, LIVE_TOP_CELLS)
                    .into_iter()
                    .map(|(cell_index, events)| cell_activity(&registry, cell_index, events))
                    .collect()
            })
            .collect();
        self.update_cell_gauges(&registry);
        let fraud = self.pipelines.fraud_tracker().map(|tracker| {
            tracker.report(
                wall_clock_millis(),
                &registry,
                &self.fraud_baseline,
                &self.fraud_settings,
            )
        });
        if let Some(report) = &fraud {
            crate::fraud::publish_metrics(report, &self.metrics.fraud);
        }
        let live = LiveView {
            watermark: self
                .pipelines
                .watermark_millis(wall_clock_millis())
                .map(crate::time::millis_to_rfc3339),
            views: self.view_labels.clone(),
            hottest_cells,
            active_alerts: self.pipelines.active_alerts(),
            rules_version: self.rules_version.clone(),
            fraud,
        };
        self.live_sender.send_replace(Arc::new(live));
    }

    fn on_new_rules(&mut self, rules: RuleSet) {
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
        self.rules_version = version;
    }

    fn cell_detail(&self, grid_id: &str) -> Option<CellDetail> {
        let registry = self.pipelines.registry().clone();
        let cell_index = registry.cell_by_grid_id(grid_id)?;
        let activity = self.pipelines.cell_activity(cell_index);
        let events_in_first_view: u64 = activity
            .iter()
            .filter_map(|(_, counts)| counts.first())
            .sum();
        let events_by_type = activity
            .into_iter()
            .map(|(event_type, counts)| {
                let name = crate::proto::EventType::try_from(event_type)
                    .map(|known| known.as_str_name().to_string())
                    .unwrap_or_else(|_| event_type.to_string());
                (name, counts)
            })
            .collect();
        let active_alerts = self
            .pipelines
            .active_alerts()
            .into_iter()
            .filter(|alert| alert.grid_id == grid_id)
            .collect();
        Some(CellDetail {
            cell: cell_activity(&registry, cell_index, events_in_first_view),
            watermark: self
                .pipelines
                .watermark_millis(wall_clock_millis())
                .map(crate::time::millis_to_rfc3339),
            views: self.view_labels.clone(),
            events_by_type,
            active_alerts,
        })
    }

    /// Per-cell incident gauges, for registered cells only (bounded label set): cells with no
    /// incidents in a view have no series for that view. Per-community event gauges cover
    /// every registered community, silent ones included (0).
    fn update_cell_gauges(&mut self, registry: &GridRegistry) {
        // Set the new values first, then remove only the series that went to zero: a reset
        // would let a concurrent scrape see every cell series missing for a moment.
        let mut cell_series_now = std::collections::BTreeSet::new();
        for (view_index, view_label) in self.view_labels.iter().enumerate() {
            let mut incidents_by_cell: std::collections::BTreeMap<crate::grid::CellIndex, u64> =
                std::collections::BTreeMap::new();
            let mut events_by_community = vec![0_u64; registry.communities().len()];
            for (key, count) in self.pipelines.view_counts(view_index) {
                let community_index = registry.cell(key.cell).community;
                if let Some(community_events) =
                    events_by_community.get_mut(community_index.0 as usize)
                {
                    *community_events += count;
                }
                let is_incident = crate::proto::EventType::try_from(key.event_type)
                    .map(crate::event::is_incident)
                    .unwrap_or(false);
                if is_incident {
                    *incidents_by_cell.entry(key.cell).or_default() += count;
                }
            }
            for (cell_index, incidents) in incidents_by_cell {
                cell_series_now.insert((cell_index, view_index));
                let cell = registry.cell(cell_index);
                let community = registry.community(cell.community);
                self.metrics
                    .cell_incidents
                    .with_label_values(&[
                        community.district_code.as_str(),
                        community.id.as_str(),
                        cell.grid_id.as_str(),
                        view_label.as_str(),
                    ])
                    .set(incidents as f64);
            }
            for (community, events) in registry.communities().iter().zip(&events_by_community) {
                self.metrics
                    .community_events
                    .with_label_values(&[
                        community.district_code.as_str(),
                        community.id.as_str(),
                        view_label.as_str(),
                    ])
                    .set(*events as f64);
            }
        }
        for (cell_index, view_index) in self.cell_series.difference(&cell_series_now) {
            let cell = registry.cell(*cell_index);
            let community = registry.community(cell.community);
            let Some(view_label) = self.view_labels.get(*view_index) else {
                continue;
            };
            let _ = self.metrics.cell_incidents.remove_label_values(&[
                community.district_code.as_str(),
                community.id.as_str(),
                cell.grid_id.as_str(),
                view_label.as_str(),
            ]);
        }
        self.cell_series = cell_series_now;
    }

    fn write_snapshot(&mut self) {
        let Some(path) = self.snapshot_path.clone() else {
            return;
        };
        self.last_snapshot = Instant::now();
        let Some((_, owned)) = self.pipelines.partitions().next() else {
            return;
        };
        let bytes = match crate::state::snapshot(&owned.pipeline) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "state snapshot failed");
                return;
            }
        };
        let temporary_path = path.with_extension("tmp");
        let written = std::fs::write(&temporary_path, &bytes)
            .and_then(|()| std::fs::rename(&temporary_path, &path));
        match written {
            Ok(()) => self.metrics.state_snapshot_bytes.set(bytes.len() as i64),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "writing state snapshot failed")
            }
        }
    }

    /// Last outputs, flushes, the last snapshots (file, or state topic + synchronous commit).
    async fn shut_down(&mut self) {
        self.write_outputs();
        if let Some(sink) = self.sink.as_mut() {
            if let Err(error) = sink.flush() {
                tracing::error!(%error, "flushing outputs at shutdown failed");
            }
        }
        if let Some(kafka_sink) = &self.kafka_sink {
            if let Err(error) = kafka_sink.flush(KAFKA_SINK_FLUSH_GRACE) {
                tracing::error!(%error, "kafka output records not all acknowledged at shutdown");
            }
        }
        if self.snapshot_path.is_some() {
            self.write_snapshot();
        }
        if self.kafka_source.is_some() && self.outputs_lost.is_none() {
            let committable = self.snapshot_round(None, self.kafka_state_timeout).await;
            if let Some(kafka_source) = &self.kafka_source {
                let commit = kafka_source.commit(committable);
                match tokio::time::timeout(self.kafka_state_timeout, commit).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(%error, "committing offsets at shutdown failed")
                    }
                    Err(_elapsed) => tracing::error!("committing offsets at shutdown timed out"),
                }
            }
        }
    }
}

/// Where a cell is (names and codes) and how many events it had.
fn cell_activity(
    registry: &GridRegistry,
    cell_index: crate::grid::CellIndex,
    events: u64,
) -> CellActivity {
    let cell = registry.cell(cell_index);
    let community = registry.community(cell.community);
    let district_name = registry
        .district(&community.district_code)
        .map(|district| district.name_zh.clone())
        .unwrap_or_default();
    CellActivity {
        grid_id: cell.grid_id.clone(),
        community_id: community.id.clone(),
        community_name: community.name.clone(),
        district_code: community.district_code.clone(),
        district_name,
        events,
    }
}

/// Restores partition 0 (the simulator's or the file's) from the snapshot file, if any.
fn restore_snapshot_file(pipelines: &mut PartitionedPipelines, path: &Path) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot read state snapshot; starting empty");
            return;
        }
    };
    match pipelines.assign(0, Some(&bytes), None) {
        Ok(()) => {
            tracing::info!(path = %path.display(), bytes = bytes.len(), "state restored from snapshot")
        }
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot restore state snapshot; starting empty")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_names_are_the_short_spellings_the_api_documents() {
        let names: Vec<String> = [900, 3600, 86_400, 90, 5400]
            .into_iter()
            .map(|seconds| view_name(Duration::from_secs(seconds)))
            .collect();
        assert_eq!(names, ["15m", "1h", "24h", "90s", "90m"]);
    }
}
