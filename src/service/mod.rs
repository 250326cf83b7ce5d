//! `gridwatch run`: the service. A source task (simulator, file) or the Kafka consumer thread
//! feeds record batches through a bounded channel (backpressure) to the pipeline task, which
//! owns the [`PartitionedPipelines`] and feeds the city-wide read model the HTTP API reads
//! (published about once a second). With Kafka it also snapshots partition state to the state topic and commits the
//! offsets the snapshots cover (periodically, on revoke, at shutdown). Shutdown (the
//! `shutdown` future) stops the source, writes the last outputs, flushes the sinks and the
//! state snapshot, then stops the HTTP server.

//!
//! This file is the wiring; each idea has its room: [`source_task`] (pumping a source into
//! the channel), [`pipeline_loop`] (the select loop), [`output_sinks`] (files, Kafka topics
//! and alert delivery together), [`checkpointing`] (state across restarts), [`live_view`]
//! (view names) and [`gauges`] (what Prometheus shows, computed from the partitions).

mod checkpointing;
mod gauges;
mod live_view;
mod output_sinks;
mod pipeline_loop;
mod source_task;
mod status;
#[cfg(test)]
mod test_support;
mod whole_city;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiState, Health};
use crate::config::{Config, SimulatorPacing, SourceKind};
use crate::fraud::{FraudBaseline, FraudSettings};
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::partitions::{PartitionedPipelines, PipelineFactory, SourceMessage};
use crate::pipeline::{Outputs, PipelineSettings};
use crate::read_model::{CityModel, CityModelSettings, FraudReporting, ReadModel, ReadModelWriter};
use crate::rules::RuleSet;
use crate::sink::delivery::AlertDelivery;
use crate::sink::file::JsonlFileSink;
use crate::sink::kafka::KafkaSink;
use crate::source::file::FileSource;
use crate::source::kafka::KafkaSource;
use crate::source::simulator::{Pacing, Simulator, SimulatorSettings, SimulatorSource};
use crate::state::kafka::StateWriter;
use crate::time::wall_clock_millis;
use checkpointing::{Checkpointing, FileCheckpoint, KafkaCheckpoint};
use gauges::CellGauges;
use live_view::view_names;
use output_sinks::OutputSinks;
use pipeline_loop::PipelineLoop;
use source_task::source_loop;
use status::StatusReporter;

/// Errors that stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Reference data could not be loaded.
    #[error(transparent)]
    Seeds(#[from] crate::grid::GridLoadError),
    /// The rules file is missing or invalid.
    #[error("rules file {path}: {source}")]
    Rules {
        /// The rules file as configured (or the embedded defaults), for the operator to fix.
        path: String,
        /// Why it could not be read or is invalid.
        #[source]
        source: RulesFileError,
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
    /// The HTTP server's tokens or certificate could not be loaded.
    #[error(transparent)]
    HttpSetup(#[from] crate::http::HttpSetupError),
    /// The API could not be set up.
    #[error(transparent)]
    Api(#[from] crate::api::ApiSetupError),
    /// The fraud settings or baseline are invalid.
    #[error(transparent)]
    Fraud(#[from] crate::fraud::FraudError),
    /// The partitions' engine threads could not start.
    #[error(transparent)]
    EngineThreads(#[from] crate::partitions::EngineThreadsError),
    /// Kafka output records were lost (dropped or not delivered) with a Kafka source: the
    /// service stops without committing past them, so that a restart replays them from the
    /// last snapshot.
    #[error("{lost} kafka output records were lost; stopping without committing so that a restart re-sends them from the last snapshot")]
    OutputsLost {
        /// Records lost since the sink started: what the restart will re-send.
        lost: u64,
    },
}

/// Why the rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The file is not a valid rules file.
    #[error(transparent)]
    Invalid(#[from] crate::rules::RulesError),
}

/// Batches buffered between the source and the pipeline (backpressure beyond this).
const CHANNEL_BATCHES: usize = 8;
/// How long shutdown waits for queued alerts to be delivered.
const ALERT_DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// Loads the registry named by the config (or the embedded seeds).
pub fn load_registry(config: &Config) -> Result<Arc<GridRegistry>, ServiceError> {
    Ok(GridRegistry::of_seeds(config.seeds.dir.as_deref())?)
}

/// Loads the rules named by the config (or the embedded default rules).
pub fn load_rules(config: &Config) -> Result<RuleSet, ServiceError> {
    let pane_size_millis = config.window_settings().size_millis;
    let Some(path) = &config.rules.path else {
        return RuleSet::embedded_default(pane_size_millis).map_err(|error| ServiceError::Rules {
            path: "(embedded seeds/rules.toml)".to_string(),
            source: error.into(),
        });
    };
    let rules_file_error = |source: RulesFileError| ServiceError::Rules {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|error| rules_file_error(error.into()))?;
    RuleSet::from_toml_str(&text, pane_size_millis).map_err(|error| rules_file_error(error.into()))
}

/// The imported fraud history of `fraud.history_path`, when configured and present. A file
/// that no longer validates (the registry changed since the import) is logged and skipped:
/// the report then says `insufficient_data` rather than the service refusing to start.
fn load_fraud_history(
    config: &Config,
    registry: &GridRegistry,
    settings: &FraudSettings,
) -> Option<crate::fraud::history::ImportedHistory> {
    let path = config.fraud.history_path.as_ref()?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no imported fraud history yet");
            return None;
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read the imported fraud history");
            return None;
        }
    };
    match crate::fraud::history::ImportedHistory::from_csv(
        &text,
        registry,
        crate::time::wall_clock_millis(),
        settings.timezone_offset_hours,
    ) {
        Ok(history) => {
            tracing::info!(path = %path.display(), rows = history.len(), "imported fraud history loaded");
            Some(history)
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "imported fraud history not loaded");
            None
        }
    }
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

/// The whole-city detector for a read model fed from the output topics
/// ([`crate::rules::whole_city`]), when there is a status topic (its watermarks time the
/// detector): it reads the windows topic back as far as the rules count (`settings`' lookback
/// grows to it), its learned history is kept on the state topic
/// ([`crate::read_model::learned_history`]), and the pipeline task gets its end of the channels
/// ([`WholeCityPublishing`]). It runs even without whole-city rules, so that a reload can add
/// one.
fn whole_city_detection(
    rules: &RuleSet,
    kafka: &crate::config::KafkaConfig,
    registry: Arc<GridRegistry>,
    metrics: Arc<Metrics>,
    settings: &mut crate::read_model::kafka_feed::KafkaFeedSettings,
) -> Result<
    (
        Option<crate::read_model::detection::WholeCityDetection>,
        Option<WholeCityPublishing>,
    ),
    ServiceError,
> {
    let has_status_topic = settings
        .topics
        .iter()
        .any(|(_, kind)| *kind == crate::read_model::kafka_feed::TopicKind::Status);
    if !has_status_topic {
        tracing::warn!("district, cluster and city-wide rules are not evaluated: the whole-city detector follows the instances' watermarks on kafka.sinks.status_topic, which is empty");
        return Ok((None, None));
    }
    let detector =
        crate::rules::whole_city::WholeCityDetector::new(rules, crate::rules::Baseline::embedded());
    if let Some(lookback) = crate::rules::whole_city::whole_city_lookback_millis(rules) {
        settings.lookback_millis = settings.lookback_millis.max(lookback);
    }
    let publishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let learned_history = crate::read_model::learned_history::LearnedHistoryStore::new(
        crate::state::kafka::StateReader::create(kafka)?,
        StateWriter::create(kafka)?,
        publishing.clone(),
        crate::read_model::learned_history::LearnedHistorySettings {
            interval: kafka.snapshot_interval,
            timeout: kafka.state_timeout,
        },
        registry.clone(),
        metrics.clone(),
    );
    let (updates_sender, updates) = mpsc::channel(WHOLE_CITY_CHANNEL_BATCHES);
    let (rules_sender, rules_receiver) = mpsc::channel(4);
    let detection = crate::read_model::detection::WholeCityDetection::new(
        detector,
        registry,
        updates_sender,
        rules_receiver,
        metrics,
        Some(learned_history),
    );
    Ok((
        Some(detection),
        Some(WholeCityPublishing {
            updates,
            rules: rules_sender,
            publishing,
        }),
    ))
}

/// Batches of whole-city alert changes queued for the pipeline task.
const WHOLE_CITY_CHANNEL_BATCHES: usize = 64;

/// The pipeline task's end of the whole-city detector: the updates it publishes where it owns
/// input partition 0, and where reloaded rules go.
#[derive(Debug)]
pub(crate) struct WholeCityPublishing {
    pub(crate) updates: mpsc::Receiver<crate::read_model::detection::WholeCityUpdate>,
    pub(crate) rules: mpsc::Sender<RuleSet>,
    /// Whether this instance publishes, for the detector's task.
    pub(crate) publishing: Arc<std::sync::atomic::AtomicBool>,
}

/// The settings of each partition's pipeline. With a Kafka source, a partition's watermark
/// moves with its own records only (no processing-time advance while it is idle), so a replay
/// after a crash decides lateness exactly as the first run did — idle partitions never hold
/// others back, since state is per partition — and data-gap silence is tested only for the
/// partition's own cells.
pub fn partition_pipeline_settings(config: &Config) -> PipelineSettings {
    let mut settings = PipelineSettings::from_config(config);
    if config.source.kind == SourceKind::Kafka {
        settings.window.idle_timeout_millis = crate::time::NEVER_MILLIS;
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
    let http_security = crate::http::HttpSecurity::from_config(&config.http)?;
    let source_name = match config.source.kind {
        SourceKind::Simulator => "simulator",
        SourceKind::File => "file",
        SourceKind::Kafka => "kafka",
    };
    let metrics = Arc::new(Metrics::new(&[source_name], rules.version())?);
    set_community_info(&metrics, &registry);
    set_cell_info(&metrics, &registry);
    let health = Arc::new(Health::default());
    let rules_version = rules.version().to_string();
    let fraud_settings = FraudSettings::from_config(&config.fraud)?;
    let fraud_baseline = load_fraud_baseline(&config, &fraud_settings)?;
    let whole_city_rules = rules.clone();
    let mut pipelines = PartitionedPipelines::new(PipelineFactory {
        settings: partition_pipeline_settings(&config),
        registry: registry.clone(),
        rules,
        metrics: metrics.clone(),
        source_name,
        fraud_settings: Some(fraud_settings.clone()),
    })
    .with_operator_idle_timeout(config.window_settings().idle_timeout_millis);
    if config.source.kind == SourceKind::Kafka {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let engine_threads = config.kafka.engine_threads_for(cores);
        pipelines = pipelines.with_engine_threads(engine_threads)?;
        tracing::info!(engine_threads, cores, "partition engines");
    }
    let file_checkpoint = config
        .state
        .snapshot_path
        .clone()
        .map(|path| FileCheckpoint::new(path, config.state.snapshot_interval));
    if let Some(checkpoint) = &file_checkpoint {
        checkpoint.restore(&mut pipelines, &metrics);
    }
    if config.privacy.uses_builtin_key() {
        tracing::warn!("using the built-in pseudonymization key; set privacy.pseudonymization_key for real data");
    }
    let (read_model_writer, read_model) = city_read_model(
        &config,
        &registry,
        &rules_version,
        FraudReporting {
            settings: fraud_settings.clone(),
            baseline: fraud_baseline.clone(),
        },
    );
    let mut read_model_writer = read_model_writer.with_metrics(metrics.clone());
    if let Some(history) = load_fraud_history(&config, &registry, &fraud_settings) {
        read_model_writer.apply(
            crate::read_model::OutputRecord::FraudPartial(
                history.to_partial(crate::time::wall_clock_millis()),
            ),
            crate::time::wall_clock_millis(),
        );
    }
    // With Kafka outputs the model reads the output topics (the whole city); otherwise the
    // pipeline feeds it in-process.
    let (read_model_writer, kafka_read_model, whole_city) =
        match crate::read_model::kafka_feed::KafkaFeedSettings::from_config(&config) {
            Some(mut settings) => {
                let (detection, whole_city) = whole_city_detection(
                    &whole_city_rules,
                    &config.kafka,
                    registry.clone(),
                    metrics.clone(),
                    &mut settings,
                )?;
                (
                    None,
                    Some(crate::read_model::kafka_feed::KafkaReadModel::start(
                        &config.kafka,
                        settings,
                        read_model_writer,
                        detection,
                        metrics.clone(),
                    )?),
                    whole_city,
                )
            }
            None => {
                if config.source.kind == SourceKind::Kafka
                    && whole_city_rules.whole_city_history_millis().is_some()
                {
                    tracing::warn!("district, cluster and city-wide rules are not evaluated: with a kafka source they need kafka output topics (kafka.sinks)");
                }
                (Some(read_model_writer), None, None)
            }
        };
    let sinks = OutputSinks {
        file: match &config.output.dir {
            Some(directory) => Some(JsonlFileSink::open(directory, true, registry.clone())?),
            None => None,
        },
        kafka: KafkaSink::create(
            &config.kafka,
            crate::sink::cloudevents::event_source(&config.alerting.instance),
            &metrics,
            registry.clone(),
        )?,
        delivery: AlertDelivery::start(&config.alerting, registry.clone(), &metrics)?,
        read_model: read_model_writer,
        metrics: metrics.clone(),
    };
    if let Some(delivery) = &sinks.delivery {
        delivery.offer_active(&pipelines.active_alerts());
    }

    let cancel = CancellationToken::new();
    let (batch_sender, batch_receiver) = mpsc::channel::<SourceMessage>(CHANNEL_BATCHES);
    let mut checkpointing = match file_checkpoint {
        Some(checkpoint) => Checkpointing::File(checkpoint),
        None => Checkpointing::None,
    };
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
            let source = FileSource::open(&path, config.file.format)?
                .with_max_record_bytes(config.ingest.max_record_bytes);
            Some(tokio::spawn(source_loop(
                source,
                batch_sender,
                cancel.clone(),
                health.clone(),
            )))
        }
        SourceKind::Kafka => {
            let state_writer = StateWriter::create(&config.kafka)?;
            let settings = partition_pipeline_settings(&config);
            let source = KafkaSource::start(
                &config.kafka,
                crate::state::SnapshotFit::new(&settings, &registry),
                crate::pipeline::Admission::of_settings(&settings, registry.clone()),
                batch_sender,
                metrics.clone(),
            )?;
            let _ = health
                .kafka_broker_reachable
                .set(source.progress().broker_reachable.clone());
            let _ = health
                .kafka_broker_seen
                .set(source.progress().broker_seen.clone());
            checkpointing = Checkpointing::Kafka(KafkaCheckpoint::new(
                source,
                state_writer,
                config.kafka.snapshot_interval,
                config.kafka.state_timeout,
            ));
            health
                .source_ready_millis
                .store(wall_clock_millis(), Ordering::Relaxed);
            None
        }
    };

    let api_state = ApiState::new(
        metrics.clone(),
        health.clone(),
        read_model,
        &registry,
        view_names(&config),
        &config.http,
        cancel.clone(),
    )?;
    // Before the HTTP server: once it answers, SIGHUP is already a reload.
    let (rules_sender, rules_receiver) = mpsc::channel::<RuleSet>(4);
    let mut admin_state = crate::http::AdminState::default();
    let reload_task = match &config.rules.path {
        Some(path) => {
            let (reload_request_sender, reload_request_receiver) = mpsc::channel(4);
            admin_state.reload_requests = Some(reload_request_sender);
            Some(crate::reload::spawn(
                path.clone(),
                config.window_settings().size_millis,
                rules_version.clone(),
                metrics.clone(),
                rules_sender,
                reload_request_receiver,
                cancel.clone(),
            ))
        }
        None => {
            tracing::info!("rules are the embedded defaults; set rules.path to reload them on SIGHUP or change");
            None
        }
    };
    let local_address = listener.local_addr()?;
    tracing::info!(
        address = %local_address,
        scheme = http_security.scheme(),
        tokens = http_security.access.tokens.is_some(),
        source = source_name,
        rules_version = %rules_version,
        "gridwatch serving"
    );
    let router =
        crate::http::secured_router(crate::api::router(api_state), admin_state, &http_security);
    let server = tokio::spawn(crate::http::serve(
        listener,
        router,
        http_security,
        cancel.clone(),
    ));

    let (whole_city_updates, whole_city) = whole_city
        .map(|publishing| {
            (
                publishing.updates,
                pipeline_loop::WholeCityLink {
                    rules: publishing.rules,
                    role: whole_city::WholeCityRole::sharing(publishing.publishing),
                },
            )
        })
        .unzip();
    let mut loop_state = PipelineLoop {
        pipelines,
        sinks,
        checkpointing,
        outputs_lost: None,
        outputs: Outputs::default(),
        metrics: metrics.clone(),
        health: health.clone(),
        view_labels: view_names(&config),
        cell_gauges: CellGauges::default(),
        status: StatusReporter::new(
            crate::sink::cloudevents::instance_name(&config.alerting.instance),
            source_name,
        ),
        whole_city,
    };
    loop_state
        .drive(batch_receiver, rules_receiver, whole_city_updates, shutdown)
        .await;
    cancel.cancel();
    loop_state.shut_down().await;
    let outputs_lost = loop_state.outputs_lost;
    if let Checkpointing::Kafka(kafka) =
        std::mem::replace(&mut loop_state.checkpointing, Checkpointing::None)
    {
        // Joining the consumer thread lets it leave the group; it blocks, so off the runtime.
        let source = kafka.source;
        if let Err(error) = tokio::task::spawn_blocking(move || source.stop()).await {
            tracing::error!(%error, "stopping the kafka consumer failed");
        }
    }
    loop_state.sinks.shut_down(ALERT_DELIVERY_GRACE).await;
    if let Some(kafka_read_model) = kafka_read_model {
        kafka_read_model.stop().await;
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

/// The city-wide read model of `registry`'s city with the configured views, and its readers'
/// handle.
pub fn city_read_model(
    config: &Config,
    registry: &Arc<GridRegistry>,
    rules_version: &str,
    fraud: FraudReporting,
) -> (ReadModelWriter, ReadModel) {
    let settings = CityModelSettings::new(
        view_names(config),
        config
            .window
            .views
            .iter()
            .map(|span| crate::time::duration_millis(*span))
            .collect(),
        rules_version.to_string(),
    );
    ReadModelWriter::new(CityModel::new(registry.clone(), settings, Some(fraud)))
}

/// Publishes `gridwatch_cell_info` (each cell's centroid) for the dashboards' map.
fn set_cell_info(metrics: &Metrics, registry: &GridRegistry) {
    for (cell, (latitude, longitude)) in registry.cells().iter().zip(cell_centroids(registry)) {
        metrics
            .cell_info
            .with_label_values(&[
                cell.grid_id.as_str(),
                &format!("{latitude:.6}"),
                &format!("{longitude:.6}"),
            ])
            .set(1);
    }
}

/// (latitude, longitude) of every cell's centroid, in `registry.cells()` order; a degenerate
/// polygon (no area) falls back to its first vertex.
fn cell_centroids(registry: &GridRegistry) -> Vec<(f64, f64)> {
    use geo::Centroid;
    registry
        .cells()
        .iter()
        .map(|cell| {
            let point = cell
                .polygon
                .centroid()
                .or_else(|| cell.polygon.exterior().points().next())
                .unwrap_or_else(|| geo::Point::new(0.0, 0.0));
            (point.y(), point.x())
        })
        .collect()
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

#[cfg(test)]
mod cell_info_tests {
    use super::cell_centroids;
    use crate::grid::GridRegistry;
    use geo::Contains;

    #[test]
    fn every_cell_centroid_lies_inside_its_cell() {
        let registry = GridRegistry::embedded();
        let centroids = cell_centroids(&registry);
        assert_eq!(centroids.len(), registry.cells().len());
        for (cell, (latitude, longitude)) in registry.cells().iter().zip(&centroids) {
            assert!(
                cell.polygon
                    .contains(&geo::Point::new(*longitude, *latitude)),
                "{}: ({latitude}, {longitude})",
                cell.grid_id
            );
        }
    }
}
