//! Configuration: one TOML file layered with `GRIDWATCH_*` environment variables over embedded
//! defaults (figment). Unknown keys are errors. [`Config::validate`] does no IO and reports
//! every problem at once.
//!
//! Environment variables name a key path with `__` between levels, e.g.
//! `GRIDWATCH_WINDOW__SIZE=2m` or `GRIDWATCH_HTTP__LISTEN=0.0.0.0:9750`. Variables without a
//! `__` (such as `GRIDWATCH_CONFIG`, the config file path) are not configuration keys.

// No panic path reachable from input, state or configuration (README "Security").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![deny(clippy::panic, clippy::unreachable, clippy::unimplemented)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::decode::InputFormat;
use crate::proto::EventType;
use crate::source::simulator::Scenario;
use crate::time::duration_millis;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which source feeds the pipeline.
    pub source: SourceConfig,
    /// Simulator settings (used when `source.kind = "simulator"`).
    pub simulator: SimulatorConfig,
    /// File replay settings (used when `source.kind = "file"`).
    pub file: FileConfig,
    /// Kafka consumer settings (used when `source.kind = "kafka"`).
    pub kafka: KafkaConfig,
    /// Event-time windows and watermark.
    pub window: WindowConfig,
    /// Validation limits and dedup.
    pub ingest: IngestConfig,
    /// Where the alert rules come from.
    pub rules: RulesConfig,
    /// The HTTP endpoint (metrics, health, API).
    pub http: HttpConfig,
    /// File outputs.
    pub output: OutputConfig,
    /// Pseudonymization of personal data.
    pub privacy: PrivacyConfig,
    /// Reference data (communities, grid cells, devices).
    pub seeds: SeedsConfig,
    /// State snapshots across restarts.
    pub state: StateConfig,
    /// Logging.
    pub log: LogConfig,
    /// Alert delivery to Alertmanager and a CloudEvents webhook.
    pub alerting: AlertingConfig,
    /// The fraud target (case definition, baseline year, target; see `src/fraud/`).
    pub fraud: FraudConfig,
}

/// Source selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `simulator` (default: no broker needed) or `file`.
    pub kind: SourceKind,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Simulator,
        }
    }
}

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The built-in simulator of the 162 communities.
    Simulator,
    /// A JSONL or length-delimited protobuf file, read once.
    File,
    /// Kafka topics, consumed in a consumer group (see [`KafkaConfig`]).
    Kafka,
}

/// Payload format of Kafka records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum KafkaPayloadFormat {
    /// One protobuf `IncidentEvent` per record (no length prefix).
    Protobuf,
    /// One proto3-JSON `IncidentEvent` per record.
    Json,
}

impl KafkaPayloadFormat {
    /// The decoder's input format for one record of this payload format.
    pub fn input_format(self) -> InputFormat {
        match self {
            KafkaPayloadFormat::Protobuf => InputFormat::Protobuf,
            KafkaPayloadFormat::Json => InputFormat::Jsonl,
        }
    }
}

/// The Kafka source (`[kafka]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Consumer group id: instances sharing it split the partitions between them.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Payload format of records without a `content-type` header (default protobuf).
    pub format: KafkaPayloadFormat,
    /// Per-topic payload formats overriding `format` (e.g. a legacy JSON topic).
    pub topic_formats: std::collections::BTreeMap<String, KafkaPayloadFormat>,
    /// Any librdkafka property, passed through as is (TLS, SASL, timeouts...); applied after
    /// gridwatch's own settings, so these win.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Output topics (`[kafka.sinks]`): windows, alerts and dead letters produced to Kafka.
    pub sinks: KafkaSinksConfig,
    /// Topic of per-partition state snapshots (must exist; compacted on a real cluster): one
    /// record per input partition and snapshot, keyed `<group_id>/<topic>/<partition>`.
    pub state_topic: String,
    /// How often each owned partition's state is snapshotted to `state_topic` and its offset
    /// committed (also on revoke and shutdown). A crash replays at most this much input.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// How long a rebalance may wait for a partition's state to be read from `state_topic`
    /// (on assignment) or written (on revoke).
    #[serde(with = "humantime_serde")]
    pub state_timeout: Duration,
}

/// The Kafka output topics (`[kafka.sinks]`), produced to `kafka.brokers` with
/// `kafka.properties` applied; any source may feed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinksConfig {
    /// Whether gridwatch produces its outputs to Kafka at all (off by default).
    pub enabled: bool,
    /// Topic of alert state changes (`Alert` protobuf, CloudEvents headers); empty = off.
    pub alerts_topic: String,
    /// Topic of final windows (`CellWindow` protobuf); empty = off.
    pub windows_topic: String,
    /// Topic of dead letters (the original bytes, reason headers); empty = off.
    pub dead_letter_topic: String,
}

impl Default for KafkaSinksConfig {
    fn default() -> Self {
        KafkaSinksConfig {
            enabled: false,
            alerts_topic: "gridwatch.alerts.v1".to_string(),
            windows_topic: "gridwatch.windows.v1".to_string(),
            dead_letter_topic: "gridwatch.deadletter.v1".to_string(),
        }
    }
}

/// Whether `topic` is a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -).
fn is_kafka_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "._-".contains(character))
}

impl KafkaSinksConfig {
    /// Appends every problem of `[kafka.sinks]` to `problems` (only when enabled).
    fn validate(&self, brokers: &str, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        if brokers.trim().is_empty() {
            problems.push(
                "kafka.brokers must name at least one host:port when kafka.sinks.enabled"
                    .to_string(),
            );
        }
        let named_topics = [
            ("alerts_topic", &self.alerts_topic),
            ("windows_topic", &self.windows_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ];
        for (field, topic) in named_topics {
            if !topic.is_empty() && !is_kafka_topic_name(topic) {
                problems.push(format!(
                    "kafka.sinks.{field}: {topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -; empty = off)"
                ));
            }
        }
        if self.alerts_topic.is_empty()
            && self.windows_topic.is_empty()
            && self.dead_letter_topic.is_empty()
        {
            problems.push("kafka.sinks.enabled but every topic is empty".to_string());
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            group_id: "gridwatch".to_string(),
            topics: vec!["gridwatch.events.v1".to_string()],
            format: KafkaPayloadFormat::Protobuf,
            topic_formats: std::collections::BTreeMap::new(),
            properties: std::collections::BTreeMap::new(),
            sinks: KafkaSinksConfig::default(),
            state_topic: "gridwatch.state.v1".to_string(),
            snapshot_interval: Duration::from_secs(10),
            state_timeout: Duration::from_secs(30),
        }
    }
}

impl KafkaConfig {
    /// The payload format of records of `topic` without a `content-type` header.
    pub fn format_of_topic(&self, topic: &str) -> KafkaPayloadFormat {
        self.topic_formats
            .get(topic)
            .copied()
            .unwrap_or(self.format)
    }

    /// Appends every problem of the `[kafka]` section to `problems`.
    fn validate(&self, problems: &mut Vec<String>) {
        for topic in self.topic_formats.keys() {
            if !self.topics.contains(topic) {
                problems.push(format!(
                    "kafka.topic_formats names {topic:?}, which is not in kafka.topics"
                ));
            }
        }
        if self.brokers.trim().is_empty() {
            problems.push("kafka.brokers must name at least one host:port".to_string());
        }
        if self.group_id.trim().is_empty() {
            problems.push("kafka.group_id must not be empty".to_string());
        }
        if self.topics.is_empty() {
            problems.push("kafka.topics must list at least one topic".to_string());
        }
        for topic in &self.topics {
            if !is_kafka_topic_name(topic) {
                problems.push(format!(
                    "kafka.topics: {topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                ));
            }
        }
        if !is_kafka_topic_name(&self.state_topic) {
            problems.push(format!(
                "kafka.state_topic: {:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                self.state_topic
            ));
        }
        if self.topics.contains(&self.state_topic) {
            problems.push("kafka.state_topic must not be one of kafka.topics".to_string());
        }
        if self.snapshot_interval.is_zero() {
            problems.push("kafka.snapshot_interval must be positive".to_string());
        }
        if self.state_timeout.is_zero() {
            problems.push("kafka.state_timeout must be positive".to_string());
        }
        if self.topics.len() > usize::from(u16::MAX) {
            problems.push("kafka.topics lists too many topics".to_string());
        }
        for key in ["enable.auto.commit", "group.id", "bootstrap.servers"] {
            if self.properties.contains_key(key) {
                problems.push(format!(
                    "kafka.properties.{key:?} is set by gridwatch (use kafka.brokers / kafka.group_id; offsets are committed after processing)"
                ));
            }
        }
    }
}

/// Simulator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// RNG seed: the same seed gives the same event stream.
    pub seed: u64,
    /// Multiplies every base rate (e.g. 10 for a busier demo).
    pub rate_multiplier: f64,
    /// `realtime` (events released as the wall clock reaches them) or `fast` (no waiting:
    /// event time runs ahead of the wall clock until events exceed the clock-skew limit).
    pub pacing: SimulatorPacing,
    /// Start the simulated stream this far in the past (default 1 h); with `realtime` pacing
    /// the backlog is produced at once, so the API and dashboards show a full hour from the
    /// first second, then events follow the wall clock.
    #[serde(with = "humantime_serde")]
    pub backfill: Duration,
    /// Injected scenarios (fire, intrusion burst, fraud wave, device outage).
    pub scenarios: Vec<Scenario>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 42,
            rate_multiplier: 1.0,
            pacing: SimulatorPacing::Realtime,
            backfill: Duration::from_secs(3600),
            scenarios: Vec::new(),
        }
    }
}

/// Simulator pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorPacing {
    /// Release events when the wall clock reaches their time.
    Realtime,
    /// As fast as possible.
    Fast,
}

/// File source settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The input file.
    pub path: Option<PathBuf>,
    /// Its format.
    pub format: InputFormat,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: None,
            format: InputFormat::Jsonl,
        }
    }
}

/// Window and watermark settings. Durations are written like `"1m"`, `"10s"`, `"24h"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Tumbling pane size (default 1 minute).
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Watermark = max event time − this (default 10 s).
    #[serde(with = "humantime_serde")]
    pub max_out_of_orderness: Duration,
    /// A window is final when watermark ≥ end + this (default 0).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A source/partition silent this long stops holding the watermark back (default 30 s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Spans of the sliding views derived from panes (default 15m, 1h, 24h).
    #[serde(with = "duration_list")]
    pub views: Vec<Duration>,
    /// A source (device, or reporting system) whose event is further than this ahead of its
    /// partition's event time does not move the watermark on its own (default 10 min): one
    /// fast clock must not make everyone else's events late. See README "The window contract".
    #[serde(with = "humantime_serde")]
    pub clock_jump_tolerance: Duration,
    /// How many sources may be that far ahead at once without moving the watermark; one more
    /// reporting the same jump makes it believed (default 2, at most 16).
    pub fast_clock_sources: u16,
}

/// Upper bound of `window.fast_clock_sources`: the per-partition list of sources ahead has
/// at most one more entry, scanned on every event that is ahead.
pub const MAX_FAST_CLOCK_SOURCES: u16 = 16;

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size: Duration::from_secs(60),
            max_out_of_orderness: Duration::from_secs(10),
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(30),
            views: vec![
                Duration::from_secs(15 * 60),
                Duration::from_secs(3600),
                Duration::from_secs(24 * 3600),
            ],
            clock_jump_tolerance: Duration::from_secs(10 * 60),
            fast_clock_sources: 2,
        }
    }
}

/// Validation and dedup settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Events further ahead of the wall clock than this are `timestamp_out_of_range`
    /// (default 1 h), so one bad clock cannot drag the watermark forward.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Event-time horizon over which re-sent event ids are recognised (default 10 min).
    #[serde(with = "humantime_serde")]
    pub dedup_horizon: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_clock_skew: Duration::from_secs(3600),
            dedup_horizon: Duration::from_secs(600),
        }
    }
}

/// Rules file location.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// A rules TOML file; the embedded `seeds/rules.toml` when absent.
    pub path: Option<PathBuf>,
}

/// HTTP endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for `/metrics`, `/healthz`, `/readyz` and `/api/v1/*`.
    pub listen: String,
}

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9750";

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP_LISTEN.to_string(),
        }
    }
}

/// File outputs of the service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// When set, `windows.jsonl`, `alerts.jsonl` and `dead_letter.jsonl` are appended here.
    pub dir: Option<PathBuf>,
}

/// Personal-data handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// HMAC key for phone-number pseudonyms. Set it in production
    /// (`GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY`); the built-in default is logged as a warning.
    pub pseudonymization_key: String,
}

/// The built-in pseudonymization key: fine for the simulator, never for real data.
pub const DEFAULT_PSEUDONYMIZATION_KEY: &str = "gridwatch-default-key-change-me";

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            pseudonymization_key: DEFAULT_PSEUDONYMIZATION_KEY.to_string(),
        }
    }
}

/// Reference data location.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedsConfig {
    /// A directory with the seed files; the embedded `seeds/` when absent.
    pub dir: Option<PathBuf>,
}

/// State snapshot settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// When set, the pipeline state is written here on shutdown (and periodically) and
    /// restored from it at start.
    pub snapshot_path: Option<PathBuf>,
    /// How often to write the snapshot while running (default 60 s).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            snapshot_path: None,
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json` (one JSON object per line, for log shippers).
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is unset, e.g. `info` or `gridwatch=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

/// The fraud target: which events are cases, the baseline year, the target drop, the
/// confidence of its interval, where populations come from and the local time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Event types counted as cases (`FRAUD_CASE_FILED`, `FRAUD_REPORTED`, or both: their
    /// baseline columns are summed).
    pub case_event_types: Vec<String>,
    /// The year of `fraud_baseline.csv` the target compares against.
    pub baseline_year: i32,
    /// The drop to reach (0.60 = 60% fewer cases per resident than the baseline).
    pub target_drop: f64,
    /// Two-sided confidence level of the drop's exact interval.
    pub confidence: f64,
    /// Where resident populations come from: `seeds` (`communities.csv`).
    pub population_source: PopulationSource,
    /// Offset of local time from UTC, hours: year and month boundaries of "year to date".
    pub timezone_offset_hours: i32,
    /// How far back a dissuasion may be paired with a warning (warning-to-dissuasion time).
    #[serde(with = "humantime_serde")]
    pub warning_pairing_horizon: Duration,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            case_event_types: vec!["FRAUD_CASE_FILED".to_string()],
            baseline_year: 2023,
            target_drop: 0.60,
            confidence: 0.95,
            population_source: PopulationSource::Seeds,
            timezone_offset_hours: 8,
            warning_pairing_horizon: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The event types whose baseline column exists and that may count as a "case".
pub const FRAUD_CASE_EVENT_TYPE_CHOICES: [EventType; 2] =
    [EventType::FraudCaseFiled, EventType::FraudReported];

impl FraudConfig {
    /// Every problem of the `[fraud]` section (empty when valid): [`Config::validate`] lists
    /// them with the others, and `FraudSettings::from_config` refuses a section that has any.
    pub fn problems(&self) -> Vec<String> {
        let config = self;
        let mut problems = Vec::new();
        if config.case_event_types.is_empty() {
            problems.push("fraud.case_event_types must name at least one event type".to_string());
        }
        let mut seen = Vec::new();
        for name in &config.case_event_types {
            let allowed = EventType::from_str_name(name)
                .is_some_and(|event_type| FRAUD_CASE_EVENT_TYPE_CHOICES.contains(&event_type));
            if !allowed {
                problems.push(format!(
                "fraud.case_event_types: {name:?} is not FRAUD_CASE_FILED or FRAUD_REPORTED (the types with a baseline column)"
            ));
            }
            if seen.contains(&name) {
                problems.push(format!("fraud.case_event_types lists {name:?} twice"));
            }
            seen.push(name);
        }
        if !(2000..=9999).contains(&config.baseline_year) {
            problems.push(format!(
                "fraud.baseline_year must be between 2000 and 9999, got {}",
                config.baseline_year
            ));
        }
        if !(config.target_drop.is_finite()
            && config.target_drop > 0.0
            && config.target_drop <= 1.0)
        {
            problems.push(format!(
                "fraud.target_drop must be in (0, 1], got {}",
                config.target_drop
            ));
        }
        if !(config.confidence.is_finite() && config.confidence > 0.0 && config.confidence < 1.0) {
            problems.push(format!(
                "fraud.confidence must be strictly between 0 and 1, got {}",
                config.confidence
            ));
        }
        if !(-12..=14).contains(&config.timezone_offset_hours) {
            problems.push(format!(
                "fraud.timezone_offset_hours must be between -12 and 14, got {}",
                config.timezone_offset_hours
            ));
        }
        if config.warning_pairing_horizon.is_zero() {
            problems.push("fraud.warning_pairing_horizon must be positive".to_string());
        }
        problems
    }
}

/// Where the fraud target's resident populations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopulationSource {
    /// The `population` column of the registry's `communities.csv`, the same for the current
    /// and the baseline year.
    Seeds,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Alert delivery (see [`crate::sink::delivery`]): Alertmanager API v2 and a CloudEvents
/// webhook. Both are off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Alertmanager base URLs, e.g. `["http://am-0:9093", "http://am-1:9093"]`. Every URL (an
    /// HA cluster's members) receives every alert. Empty disables Alertmanager delivery.
    pub alertmanager_urls: Vec<String>,
    /// How often every firing alert is re-sent to Alertmanager (default 60 s); firing alerts
    /// carry `endsAt = now + 4 × resend_interval`, as Prometheus does.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Base URL of this service's HTTP API as operators reach it, used for the alert's
    /// `generatorURL` and `operator_url` links (default `http://127.0.0.1:9750`).
    pub external_url: String,
    /// Name of this instance in CloudEvents `source` (`gridwatch/<instance>`); the host name
    /// when empty.
    pub instance: String,
    /// Alerts waiting per destination; beyond this the oldest waiting alert is dropped and
    /// counted (default 10 000).
    pub queue_capacity: usize,
    /// Per-request timeout for Alertmanager (default 10 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a failed delivery (default 500 ms), doubled per retry, with
    /// jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Largest retry delay (default 30 s).
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Attempts per delivery, the first one included (default 8), before it counts as failed.
    pub retry_max_attempts: u32,
    /// The CloudEvents webhook.
    pub webhook: WebhookConfig,
}

/// Default `alerting.external_url`.
pub const DEFAULT_EXTERNAL_URL: &str = "http://127.0.0.1:9750";

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            alertmanager_urls: Vec::new(),
            resend_interval: Duration::from_secs(60),
            external_url: DEFAULT_EXTERNAL_URL.to_string(),
            instance: String::new(),
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(30),
            retry_max_attempts: 8,
            webhook: WebhookConfig::default(),
        }
    }
}

/// The CloudEvents webhook (`[alerting.webhook]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Receiver URL; empty disables the webhook.
    pub url: String,
    /// HMAC-SHA256 key for the `X-Gridwatch-Signature` header; empty sends no signature.
    pub secret: String,
    /// Per-request timeout (default 5 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: String::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `text` is an absolute `http` or `https` URL.
fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .map(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .unwrap_or(false)
}

impl AlertingConfig {
    /// Appends every problem of the `[alerting]` section to `problems`.
    fn validate(&self, problems: &mut Vec<String>) {
        for url in &self.alertmanager_urls {
            if !is_http_url(url) {
                problems.push(format!(
                    "alerting.alertmanager_urls: {url:?} is not an http(s) URL like http://127.0.0.1:9093"
                ));
            }
        }
        if !is_http_url(&self.external_url) {
            problems.push(format!(
                "alerting.external_url {:?} is not an http(s) URL",
                self.external_url
            ));
        }
        if !self.webhook.url.is_empty() && !is_http_url(&self.webhook.url) {
            problems.push(format!(
                "alerting.webhook.url {:?} is not an http(s) URL",
                self.webhook.url
            ));
        }
        for (name, value) in [
            ("alerting.resend_interval", self.resend_interval),
            ("alerting.timeout", self.timeout),
            ("alerting.retry_initial_backoff", self.retry_initial_backoff),
            ("alerting.webhook.timeout", self.webhook.timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be positive"));
            }
        }
        if self.retry_max_backoff < self.retry_initial_backoff {
            problems.push(
                "alerting.retry_max_backoff must be at least alerting.retry_initial_backoff"
                    .to_string(),
            );
        }
        if self.retry_max_attempts == 0 {
            problems.push("alerting.retry_max_attempts must be at least 1".to_string());
        }
        if self.queue_capacity == 0 {
            problems.push("alerting.queue_capacity must be at least 1".to_string());
        }
    }
}

/// Errors loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named does not exist.
    #[error("cannot load configuration: config file {path} does not exist")]
    MissingFile {
        /// The path given.
        path: String,
    },
    /// The file or environment could not be parsed into the schema.
    #[error("cannot load configuration: {message}")]
    Load {
        /// Every parse error, joined (figment's own message names only the first).
        message: String,
        /// The parse errors.
        #[source]
        source: Box<figment::Error>,
    },
    /// The configuration parsed but is not valid; every problem is listed.
    #[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// A [`ConfigError::Load`] naming every error of `error`.
    fn load(error: figment::Error) -> ConfigError {
        let messages: Vec<String> = error
            .clone()
            .into_iter()
            .map(|each| each.to_string())
            .collect();
        ConfigError::Load {
            message: messages.join("; "),
            source: Box::new(error),
        }
    }
}

impl Config {
    /// Loads defaults, then `path` (if any), then `GRIDWATCH_*` environment variables, and
    /// validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(config_path) = path {
            if !config_path.exists() {
                return Err(ConfigError::MissingFile {
                    path: config_path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file(config_path));
        }
        // Only `GRIDWATCH_<SECTION>__<KEY>` variables are configuration: `GRIDWATCH_CONFIG`
        // (the file path) and other single-level names are not keys.
        figment = figment.merge(
            Env::prefixed("GRIDWATCH_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = figment.extract().map_err(ConfigError::load)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML text over the defaults (no environment), and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(ConfigError::load)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule of the configuration without IO; lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let window = &self.window;
        if window.size.is_zero()
            || window.size.subsec_millis() != 0
            || window.size.subsec_nanos() % 1_000_000 != 0
        {
            problems.push(format!(
                "window.size must be a positive whole number of seconds, got {:?}",
                window.size
            ));
        }
        if window.idle_timeout.is_zero() {
            problems.push("window.idle_timeout must be positive".to_string());
        }
        for view in &window.views {
            if window.size.is_zero()
                || view.as_millis() % window.size.as_millis().max(1) != 0
                || view.is_zero()
            {
                problems.push(format!(
                    "window.views: {} is not a positive multiple of window.size {}",
                    humantime::format_duration(*view),
                    humantime::format_duration(window.size)
                ));
            }
        }
        if window.views.is_empty() {
            problems.push("window.views must list at least one span (e.g. \"15m\")".to_string());
        }
        if window.clock_jump_tolerance <= window.max_out_of_orderness {
            problems.push(format!(
                "window.clock_jump_tolerance {} must exceed window.max_out_of_orderness {}: a jump within the out-of-orderness bound is ordinary disorder",
                humantime::format_duration(window.clock_jump_tolerance),
                humantime::format_duration(window.max_out_of_orderness)
            ));
        }
        if window.fast_clock_sources > MAX_FAST_CLOCK_SOURCES {
            problems.push(format!(
                "window.fast_clock_sources must be at most {MAX_FAST_CLOCK_SOURCES}, got {}",
                window.fast_clock_sources
            ));
        }
        // Saturating: the durations come from the file, and a sum past `Duration::MAX` is a
        // problem to report, not a panic.
        let smallest_useful_horizon = window
            .size
            .saturating_add(window.max_out_of_orderness)
            .saturating_add(window.allowed_lateness);
        if self.ingest.dedup_horizon < smallest_useful_horizon {
            problems.push(format!(
                "ingest.dedup_horizon {} must be at least window.size + max_out_of_orderness + allowed_lateness = {}, or re-sent events of still-open windows would be counted twice",
                humantime::format_duration(self.ingest.dedup_horizon),
                humantime::format_duration(smallest_useful_horizon)
            ));
        }
        if !(self.simulator.rate_multiplier.is_finite() && self.simulator.rate_multiplier > 0.0) {
            problems.push(format!(
                "simulator.rate_multiplier must be a positive number, got {}",
                self.simulator.rate_multiplier
            ));
        }
        if self.source.kind == SourceKind::File && self.file.path.is_none() {
            problems.push("source.kind = \"file\" needs file.path".to_string());
        }
        if self.source.kind == SourceKind::Kafka {
            self.kafka.validate(&mut problems);
            if self.state.snapshot_path.is_some() {
                problems.push(
                    "state.snapshot_path is for the simulator and file sources; with source.kind = \"kafka\" state lives in kafka.state_topic"
                        .to_string(),
                );
            }
        }
        self.kafka
            .sinks
            .validate(&self.kafka.brokers, &mut problems);
        if self.http.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen {:?} is not an address like 127.0.0.1:9750",
                self.http.listen
            ));
        }
        if self.privacy.pseudonymization_key.is_empty() {
            problems.push("privacy.pseudonymization_key must not be empty".to_string());
        }
        if self.state.snapshot_interval.is_zero() {
            problems.push("state.snapshot_interval must be positive".to_string());
        }
        self.alerting.validate(&mut problems);
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level {:?} is not a valid filter",
                self.log.level
            ));
        }
        problems.extend(self.fraud.problems());
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid { problems })
    }

    /// The window settings in milliseconds, as the window module takes them.
    pub fn window_settings(&self) -> crate::window::WindowSettings {
        crate::window::WindowSettings {
            size_millis: duration_millis(self.window.size),
            max_out_of_orderness_millis: duration_millis(self.window.max_out_of_orderness),
            allowed_lateness_millis: duration_millis(self.window.allowed_lateness),
            idle_timeout_millis: duration_millis(self.window.idle_timeout),
        }
    }

    /// The clock guard of every partition's watermark ([`crate::window::progress`]).
    pub fn clock_guard_settings(&self) -> crate::window::progress::ClockGuardSettings {
        crate::window::progress::ClockGuardSettings {
            jump_tolerance_millis: duration_millis(self.window.clock_jump_tolerance),
            tolerated_fast_sources: self.window.fast_clock_sources,
        }
    }
}

/// Serde for a list of human-readable durations (`["15m", "1h"]`).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        durations: &[Duration],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            durations
                .iter()
                .map(|duration| humantime::format_duration(*duration).to_string()),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| humantime::parse_duration(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.window.size, Duration::from_secs(60));
        assert_eq!(config.ingest.dedup_horizon, Duration::from_secs(600));
    }

    #[test]
    fn durations_are_human_readable() {
        let config = Config::from_toml_str(
            "[window]\nsize = \"2m\"\nmax_out_of_orderness = \"15s\"\nviews = [\"30m\"]",
        )
        .unwrap();
        assert_eq!(config.window_settings().size_millis, 120_000);
        assert_eq!(config.window_settings().max_out_of_orderness_millis, 15_000);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let error = Config::from_toml_str("[window]\nsise = \"2m\"").unwrap_err();
        assert!(error.to_string().contains("sise"), "{error}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = Config::from_toml_str(
            "[source]\nkind = \"file\"\n[window]\nsize = \"0s\"\n[ingest]\ndedup_horizon = \"1s\"\n[simulator]\nrate_multiplier = -1.0\n[http]\nlisten = \"nowhere\"",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems } = error else {
            panic!("expected Invalid, got {error}");
        };
        let text = problems.join("\n");
        for expected in [
            "window.size",
            "dedup_horizon",
            "rate_multiplier",
            "file.path",
            "http.listen",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }

    #[test]
    fn kafka_source_problems_are_listed() {
        let error = Config::from_toml_str(
            "[source]\nkind = \"kafka\"\n[kafka]\nbrokers = \"\"\ngroup_id = \"\"\ntopics = [\"bad topic\"]\nstate_topic = \"bad topic\"\nsnapshot_interval = \"0s\"\ntopic_formats = { \"other\" = \"json\" }\nproperties = { \"enable.auto.commit\" = \"true\" }\n[state]\nsnapshot_path = \"x.snapshot\"",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems } = error else {
            panic!("expected Invalid, got {error}");
        };
        let text = problems.join("\n");
        for expected in [
            "kafka.brokers",
            "kafka.group_id",
            "\"bad topic\"",
            "enable.auto.commit",
            "kafka.state_topic",
            "kafka.snapshot_interval",
            "kafka.topic_formats names \"other\"",
            "state.snapshot_path",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }

    #[test]
    fn kafka_section_parses_format_and_properties() {
        let config = Config::from_toml_str(
            "[source]\nkind = \"kafka\"\n[kafka]\nbrokers = \"b:9092\"\ntopics = [\"events\"]\nformat = \"json\"\n[kafka.properties]\n\"security.protocol\" = \"ssl\"",
        )
        .unwrap();
        assert_eq!(config.kafka.format, KafkaPayloadFormat::Json);
        assert_eq!(config.kafka.format.input_format(), InputFormat::Jsonl);
        assert_eq!(
            config.kafka.format_of_topic("events"),
            KafkaPayloadFormat::Json
        );
        let per_topic = Config::from_toml_str(
            "[source]\nkind = \"kafka\"\n[kafka]\ntopics = [\"events\", \"legacy\"]\n[kafka.topic_formats]\nlegacy = \"json\"",
        )
        .unwrap();
        assert_eq!(
            per_topic.kafka.format_of_topic("events"),
            KafkaPayloadFormat::Protobuf
        );
        assert_eq!(
            per_topic.kafka.format_of_topic("legacy"),
            KafkaPayloadFormat::Json
        );
        assert_eq!(
            config
                .kafka
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("ssl")
        );
    }

    #[test]
    fn kafka_sinks_are_off_by_default_and_their_problems_are_listed() {
        let config = Config::default();
        assert!(!config.kafka.sinks.enabled);
        assert_eq!(config.kafka.sinks.windows_topic, "gridwatch.windows.v1");
        assert_eq!(config.kafka.sinks.alerts_topic, "gridwatch.alerts.v1");
        assert_eq!(
            config.kafka.sinks.dead_letter_topic,
            "gridwatch.deadletter.v1"
        );
        config.validate().unwrap();
        let mut invalid = Config::default();
        invalid.kafka.brokers = String::new();
        invalid.kafka.sinks.enabled = true;
        invalid.kafka.sinks.windows_topic = "bad topic".to_string();
        let problems = invalid.validate().unwrap_err().to_string();
        assert!(problems.contains("kafka.sinks.windows_topic"), "{problems}");
        assert!(problems.contains("kafka.brokers"), "{problems}");
        let mut all_off = Config::default();
        all_off.kafka.sinks.enabled = true;
        all_off.kafka.sinks.windows_topic.clear();
        all_off.kafka.sinks.alerts_topic.clear();
        all_off.kafka.sinks.dead_letter_topic.clear();
        let problems = all_off.validate().unwrap_err().to_string();
        assert!(problems.contains("every topic is empty"), "{problems}");
    }

    #[test]
    fn alerting_is_off_by_default_and_its_problems_are_listed() {
        let config = Config::default();
        assert!(config.alerting.alertmanager_urls.is_empty());
        assert!(config.alerting.webhook.url.is_empty());
        let error = Config::from_toml_str(
            "[alerting]\nalertmanager_urls = [\"http://127.0.0.1:9093\", \"am:9093\"]\nresend_interval = \"0s\"\nexternal_url = \"nowhere\"\nretry_max_attempts = 0\nqueue_capacity = 0\n[alerting.webhook]\nurl = \"ftp://example\"",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems } = error else {
            panic!("expected Invalid, got {error}");
        };
        let text = problems.join("\n");
        for expected in [
            "\"am:9093\"",
            "alerting.resend_interval",
            "alerting.external_url",
            "alerting.retry_max_attempts",
            "alerting.queue_capacity",
            "alerting.webhook.url",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
        assert!(
            !text.contains("\"http://127.0.0.1:9093\""),
            "the valid URL is fine: {text}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn alerting_environment_overrides_reach_nested_keys_and_lists() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "GRIDWATCH_ALERTING__ALERTMANAGER_URLS",
                "[\"http://am-0:9093\", \"http://am-1:9093\"]",
            );
            jail.set_env("GRIDWATCH_ALERTING__RESEND_INTERVAL", "30s");
            jail.set_env(
                "GRIDWATCH_ALERTING__WEBHOOK__URL",
                "https://hooks.example/gridwatch",
            );
            jail.set_env("GRIDWATCH_ALERTING__WEBHOOK__SECRET", "s3cret");
            let config = Config::load(None).map_err(|error| error.to_string())?;
            assert_eq!(
                config.alerting.alertmanager_urls,
                vec![
                    "http://am-0:9093".to_string(),
                    "http://am-1:9093".to_string()
                ]
            );
            assert_eq!(config.alerting.resend_interval, Duration::from_secs(30));
            assert_eq!(
                config.alerting.webhook.url,
                "https://hooks.example/gridwatch"
            );
            assert_eq!(config.alerting.webhook.secret, "s3cret");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gridwatch.toml",
                "[window]\nsize = \"2m\"\nviews = [\"30m\"]",
            )?;
            jail.set_env("GRIDWATCH_WINDOW__SIZE", "5m");
            jail.set_env("GRIDWATCH_HTTP__LISTEN", "127.0.0.1:0");
            jail.set_env("GRIDWATCH_CONFIG", "gridwatch.toml");
            let config = Config::load(Some(Path::new("gridwatch.toml")))
                .map_err(|error| error.to_string())?;
            assert_eq!(config.window.size, Duration::from_secs(300));
            assert_eq!(config.http.listen, "127.0.0.1:0");
            Ok(())
        });
    }
}
