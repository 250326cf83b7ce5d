//! Configuration: one TOML file layered with `GRIDWATCH_*` environment variables over embedded
//! defaults (figment). Unknown keys are errors. [`Config::validate`] does no IO and reports
//! every problem at once.
//!
//! Environment variables name a key path with `__` between levels, e.g.
//! `GRIDWATCH_WINDOW__SIZE=2m` or `GRIDWATCH_HTTP__LISTEN=0.0.0.0:9750`. Variables without a
//! `__` (such as `GRIDWATCH_CONFIG`, the config file path) are not configuration keys.

// No panic path reachable from input, state or configuration (README "Security").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::decode::InputFormat;
use crate::privacy::{PrivacySettings, DEFAULT_PII_ATTRIBUTE_KEYS};
use crate::proto::EventType;
use crate::secret::{redact_url, Secret};
use crate::source::simulator::Scenario;
use crate::time::duration_millis;

mod sources;
pub use sources::{Layers, ShownValue, ValueSource};

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
    /// One binary protobuf event per record.
    Protobuf,
    /// One JSON event per record (the older name `json` is still accepted).
    #[value(name = "jsonl", alias = "json")]
    #[serde(alias = "jsonl")]
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

/// The Kafka source (`[kafka]`). `Debug` prints secret properties as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// gridwatch's own settings, so these win. Put secrets (`sasl.password`,
    /// `ssl.key.password`) in `property_files` instead: the config file is not a secret store.
    pub properties: std::collections::BTreeMap<String, String>,
    /// librdkafka properties whose value is read from a file at start (a secret mount), e.g.
    /// `"sasl.password" = "/run/secrets/kafka-password"`; a trailing newline is dropped.
    pub property_files: std::collections::BTreeMap<String, PathBuf>,
    /// Output topics (`[kafka.sinks]`): windows, alerts and dead letters produced to Kafka.
    pub sinks: KafkaSinksConfig,
    /// Topic of per-partition state snapshots (must exist; compacted on a real cluster): one
    /// record per input partition and snapshot, keyed `<group_id>/<topic>/<partition>`, and
    /// the whole-city detector's learned history, keyed `<group_id>/whole-city/learned-history`.
    pub state_topic: String,
    /// How often each owned partition's state is snapshotted to `state_topic` and its offset
    /// committed (also on revoke and shutdown). A crash replays at most this much input. Also
    /// the least time between two writes of the whole-city detector's learned history.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// How long a rebalance may wait for a partition's state to be read from `state_topic`
    /// (on assignment) or written (on revoke); also how long the learned history may take to
    /// be read (on start) or written.
    #[serde(with = "humantime_serde")]
    pub state_timeout: Duration,
    /// Threads that run the owned partitions' engines side by side, each partition's records
    /// in their order: `0` (the default) picks by cores ([`KafkaConfig::engine_threads_for`]),
    /// `1` runs them one after the other on the pipeline task.
    pub engine_threads: usize,
}

/// Cores from which `kafka.engine_threads = 0` runs the partitions' engines side by side.
/// Below it the consumer thread, librdkafka's threads, the read-model feed and the pipeline
/// task already fill the cores: on the 2-core development machine, with the broker on the same
/// two cores, the engines in parallel measured no faster (README "Kafka throughput benchmark").
pub const CORES_FOR_ENGINE_THREADS: usize = 4;

/// The most engine threads a configuration may ask for.
pub const MAX_ENGINE_THREADS: usize = 256;

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
    /// Compacted topic of the instances' status for the city-wide read model: per input
    /// partition fraud counts (`fraud/<group>/<topic>/<partition>`) and per instance health
    /// (`instance/<id>`, a tombstone at clean shutdown); empty = off.
    pub status_topic: String,
}

impl Default for KafkaSinksConfig {
    fn default() -> Self {
        KafkaSinksConfig {
            enabled: false,
            alerts_topic: "gridwatch.alerts.v1".to_string(),
            windows_topic: "gridwatch.windows.v1".to_string(),
            dead_letter_topic: "gridwatch.deadletter.v1".to_string(),
            status_topic: "gridwatch.status.v1".to_string(),
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
            ("status_topic", &self.status_topic),
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
            && self.status_topic.is_empty()
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
            property_files: std::collections::BTreeMap::new(),
            sinks: KafkaSinksConfig::default(),
            state_topic: "gridwatch.state.v1".to_string(),
            snapshot_interval: Duration::from_secs(10),
            state_timeout: Duration::from_secs(30),
            engine_threads: 0,
        }
    }
}

impl KafkaConfig {
    /// The engine threads to run on a machine with `cores` cores: `engine_threads` when set;
    /// else none below [`CORES_FOR_ENGINE_THREADS`], and half the cores from there (the other
    /// half for the consumer, librdkafka, the read-model feed and the HTTP server).
    pub fn engine_threads_for(&self, cores: usize) -> usize {
        if self.engine_threads > 0 {
            return self.engine_threads;
        }
        if cores < CORES_FOR_ENGINE_THREADS {
            return 1;
        }
        cores / 2
    }
}

/// Environment variables `GRIDWATCH_KAFKA_PROPERTY_<NAME>` set the librdkafka property
/// `<name>`: lowercased, every `_` a `.` (`GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD` →
/// `sasl.password`); no librdkafka property that takes a string has an `_` in its name.
pub const KAFKA_PROPERTY_VARIABLE_PREFIX: &str = "GRIDWATCH_KAFKA_PROPERTY_";

/// [`KAFKA_PROPERTY_VARIABLE_PREFIX`] without `GRIDWATCH_`, as figment's filter sees it.
const KAFKA_PROPERTY_VARIABLE_INFIX: &str = "KAFKA_PROPERTY_";

/// The librdkafka properties set by `GRIDWATCH_KAFKA_PROPERTY_*` among `variables` (see
/// [`KAFKA_PROPERTY_VARIABLE_PREFIX`]); a variable without a property name, or whose value is
/// not UTF-8, is a problem named by the variable, never by its value.
pub fn kafka_properties_from_environment(
    variables: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<std::collections::BTreeMap<String, String>, Vec<String>> {
    let mut properties = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in variables {
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(property) = name.strip_prefix(KAFKA_PROPERTY_VARIABLE_PREFIX) else {
            continue;
        };
        let property = property.to_ascii_lowercase().replace('_', ".");
        if property.is_empty() || property.split('.').any(str::is_empty) {
            problems.push(format!(
                "{name} does not name a librdkafka property: write {KAFKA_PROPERTY_VARIABLE_PREFIX}SECURITY_PROTOCOL for security.protocol"
            ));
            continue;
        }
        match value.into_string() {
            Ok(value) => {
                properties.insert(property, value);
            }
            Err(_) => problems.push(format!("{name}: the value is not UTF-8")),
        }
    }
    if problems.is_empty() {
        Ok(properties)
    } else {
        Err(problems)
    }
}

impl KafkaConfig {
    /// Reads `property_files` into `properties`; every unreadable file (by path) and every
    /// property set both ways goes to `problems`.
    fn read_property_files(&mut self, problems: &mut Vec<String>) {
        for (property, path) in &self.property_files {
            if self.properties.contains_key(property) {
                problems.push(format!("kafka.property_files.{property:?} is also set in kafka.properties (or {KAFKA_PROPERTY_VARIABLE_PREFIX}*); set it once"));
            }
            let setting = format!("kafka.property_files.{property:?}");
            if let Some(value) = read_secret_file(&setting, path, problems) {
                self.properties.insert(property.clone(), value);
            }
        }
    }

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
        if self.engine_threads > MAX_ENGINE_THREADS {
            problems.push(format!(
                "kafka.engine_threads must be at most {MAX_ENGINE_THREADS} (0 picks by cores)"
            ));
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
    /// Largest record (line, message, Kafka value) in bytes (default 1 MiB); a longer one is
    /// dead-lettered `oversized` without being buffered whole.
    pub max_record_bytes: usize,
    /// Largest dead-letter payload kept, in bytes (default 64 KiB); the rest is cut.
    pub max_dead_letter_payload_bytes: usize,
    /// Largest `event_id`, `device_id`, `source`, `grid_id` or `community_id` in bytes
    /// (default 256); a longer one is dead-lettered `field_too_long`.
    pub max_id_bytes: usize,
    /// Most attributes per event (default 64).
    pub max_attributes: usize,
    /// Largest attribute, key plus value, in bytes (default 4096).
    pub max_attribute_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let limits = crate::limits::IngestLimits::default();
        IngestConfig {
            max_clock_skew: Duration::from_secs(3600),
            dedup_horizon: Duration::from_secs(600),
            max_record_bytes: limits.max_record_bytes,
            max_dead_letter_payload_bytes: limits.max_dead_letter_payload_bytes,
            max_id_bytes: limits.max_id_bytes,
            max_attributes: limits.max_attributes,
            max_attribute_bytes: limits.max_attribute_bytes,
        }
    }
}

impl IngestConfig {
    /// The input limits this section sets.
    pub fn limits(&self) -> crate::limits::IngestLimits {
        crate::limits::IngestLimits {
            max_record_bytes: self.max_record_bytes,
            max_dead_letter_payload_bytes: self.max_dead_letter_payload_bytes,
            max_id_bytes: self.max_id_bytes,
            max_attributes: self.max_attributes,
            max_attribute_bytes: self.max_attribute_bytes,
        }
    }

    /// Every problem of the limits (each must be positive).
    fn limit_problems(&self, problems: &mut Vec<String>) {
        let limits = [
            ("ingest.max_record_bytes", self.max_record_bytes),
            (
                "ingest.max_dead_letter_payload_bytes",
                self.max_dead_letter_payload_bytes,
            ),
            ("ingest.max_id_bytes", self.max_id_bytes),
            ("ingest.max_attributes", self.max_attributes),
            ("ingest.max_attribute_bytes", self.max_attribute_bytes),
        ];
        for (name, value) in limits {
            if value == 0 {
                problems.push(format!("{name} must be positive"));
            }
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

/// HTTP endpoint settings (see the README's "HTTP security" part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for `/metrics`, `/healthz`, `/readyz` and `/api/v1/*`.
    pub listen: String,
    /// A file of API bearer tokens, one `<role> <token>` per line (roles `viewer`, `admin`).
    /// The tokens themselves never live in the config, so `check-config` cannot print them;
    /// `GRIDWATCH_HTTP_TOKENS` may carry the same lines instead. Without any token the API is
    /// open, which is only allowed on a loopback `listen` address.
    pub tokens_file: Option<PathBuf>,
    /// Whether `/metrics` needs a token (viewer) too; off by default so that scrapers on the
    /// cluster network need no secret.
    pub metrics_require_token: bool,
    /// PEM certificate chain for HTTPS; needs `tls_key_file`. Re-read when the file changes.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS; needs `tls_cert_file`. Re-read when the file changes.
    pub tls_key_file: Option<PathBuf>,
    /// How long a client may take to send a request's headers (and the TLS handshake) before
    /// the connection is closed: slow clients cannot hold connections for long.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long one request may take before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Requests per second each client address may make to the API and `/metrics` (the
    /// probes `/healthz` and `/readyz` are never limited); 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// Requests a client may make in one burst above the steady rate.
    pub rate_limit_burst: u32,
    /// Origins (`scheme://host[:port]`) whose browser pages may call the API cross-origin
    /// (CORS), e.g. a Grafana on another host; empty (the default) sends no CORS headers, so
    /// only the console served by gridwatch itself can use the API from a browser.
    pub cors_allowed_origins: Vec<String>,
    /// `/api/v1/stream` connections one client address may hold at once: a console needs
    /// one, a few tabs a few; a client opening thousands is refused (429) instead of holding
    /// connection slots and replay work.
    pub max_streams_per_client: usize,
    /// `/api/v1/stream` connections served at once in total, whoever holds them; each costs a
    /// connection slot and a bounded buffer, so this bounds what streaming can take from the
    /// rest of the API.
    pub max_streams: usize,
}

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9750";

/// The environment variable that may carry API tokens (same lines as `http.tokens_file`).
pub const HTTP_TOKENS_VARIABLE: &str = "GRIDWATCH_HTTP_TOKENS";

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP_LISTEN.to_string(),
            tokens_file: None,
            metrics_require_token: false,
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            rate_limit_per_second: 20,
            rate_limit_burst: 40,
            cors_allowed_origins: Vec::new(),
            max_streams_per_client: 4,
            max_streams: 200,
        }
    }
}

impl HttpConfig {
    /// Whether API tokens are configured (a file, or the environment variable).
    pub fn tokens_configured(&self) -> bool {
        self.tokens_file.is_some()
            || std::env::var_os(HTTP_TOKENS_VARIABLE).is_some_and(|value| !value.is_empty())
    }

    /// Appends every problem of the `[http]` section to `problems`.
    fn validate(&self, problems: &mut Vec<String>) {
        match listen_host_is_loopback(&self.listen) {
            None => problems.push(format!(
                "http.listen {:?} is not an address like 127.0.0.1:9750 or localhost:9750",
                self.listen
            )),
            Some(false) if !self.tokens_configured() => {
                problems.push(format!(
                    "http.listen {} is reachable from other hosts but no API tokens are configured: set http.tokens_file (or {HTTP_TOKENS_VARIABLE}) with `viewer <token>` and `admin <token>` lines, or listen on 127.0.0.1",
                    self.listen
                ));
            }
            Some(_) => {}
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems
                .push("http.tls_cert_file and http.tls_key_file must be set together".to_string());
        }
        if self.header_read_timeout.is_zero() {
            problems.push("http.header_read_timeout must be positive".to_string());
        }
        if self.request_timeout.is_zero() {
            problems.push("http.request_timeout must be positive".to_string());
        }
        if self.max_connections == 0 {
            problems.push("http.max_connections must be positive".to_string());
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            problems.push(
                "http.rate_limit_burst must be positive when http.rate_limit_per_second is set"
                    .to_string(),
            );
        }
        if self.max_streams == 0 {
            problems.push("http.max_streams must be positive".to_string());
        }
        if self.max_streams_per_client == 0 || self.max_streams_per_client > self.max_streams {
            problems.push(format!(
                "http.max_streams_per_client must be between 1 and http.max_streams ({})",
                self.max_streams
            ));
        }
        if self.max_streams > self.max_connections {
            problems.push(format!(
                "http.max_streams ({}) must not exceed http.max_connections ({}): streams would hold every connection slot",
                self.max_streams, self.max_connections
            ));
        }
        for origin in &self.cors_allowed_origins {
            if !is_cors_origin(origin) {
                problems.push(format!(
                    "http.cors_allowed_origins entry {origin:?} is not an origin like https://grafana.example.org (scheme, host, optional port; no path, no wildcard)"
                ));
            }
        }
    }
}

/// Whether the `http.listen` value `listen` is loopback-only, or `None` when it is not
/// `ip:port` or `host:port`. Checked without IO (validation never resolves names): the name
/// is resolved where the listener binds. Only `localhost` (and `*.localhost`, which resolvers
/// keep on loopback) counts as loopback among names; any other name may resolve to an
/// address other hosts reach.
fn listen_host_is_loopback(listen: &str) -> Option<bool> {
    if let Ok(address) = listen.parse::<SocketAddr>() {
        return Some(address.ip().is_loopback());
    }
    let (host, port) = listen.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let is_host_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '-')
        });
    if !is_host_name {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(host == "localhost" || host.ends_with(".localhost"))
}

/// Whether `origin` is a browser origin: `http://` or `https://`, a host of letters, digits,
/// dots, dashes (or a bracketed IPv6 address), an optional port, nothing after; the exact
/// string a browser sends in `Origin`, which CORS compares byte for byte.
fn is_cors_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.chars().all(|character| {
                character.is_ascii_alphanumeric() || matches!(character, '.' | '-')
            })
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    host_ok && port_ok
}

/// File outputs of the service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// When set, `windows.jsonl`, `alerts.jsonl` and `dead_letter.jsonl` are appended here.
    pub dir: Option<PathBuf>,
}

/// Personal-data handling (`[privacy]`, see [`crate::privacy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// HMAC key for pseudonyms. Set it from the environment
    /// (`GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY`) or `pseudonymization_key_file`; the
    /// built-in default is refused for a Kafka source unless `allow_builtin_key`.
    pub pseudonymization_key: Secret,
    /// A file holding the key (a secret mount); read at start, a trailing newline dropped.
    pub pseudonymization_key_file: Option<PathBuf>,
    /// Id of the key, written into every pseudonym (`pseudo:k1:…`): change it with the key,
    /// so pseudonyms of different keys are told apart. 1–8 lowercase letters or digits,
    /// starting with a letter.
    pub key_id: String,
    /// Accept the built-in key with a Kafka source (test data only: anyone can reverse
    /// pseudonyms made with the public key).
    pub allow_builtin_key: bool,
    /// Attribute keys whose values are personal whatever they look like. Entries of up to
    /// three characters (`tel`) match whole tokens of a key, longer ones anywhere in it.
    pub pii_attribute_keys: Vec<String>,
}

/// The built-in pseudonymization key: fine for the simulator, never for real data.
pub const DEFAULT_PSEUDONYMIZATION_KEY: &str = "gridwatch-default-key-change-me";

/// The default `privacy.key_id`.
pub const DEFAULT_PSEUDONYM_KEY_ID: &str = "k1";

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            pseudonymization_key: Secret::new(DEFAULT_PSEUDONYMIZATION_KEY),
            pseudonymization_key_file: None,
            key_id: DEFAULT_PSEUDONYM_KEY_ID.to_string(),
            allow_builtin_key: false,
            pii_attribute_keys: DEFAULT_PII_ATTRIBUTE_KEYS
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl PrivacyConfig {
    /// Whether the key is the public built-in one.
    pub fn uses_builtin_key(&self) -> bool {
        self.pseudonymization_key.expose() == DEFAULT_PSEUDONYMIZATION_KEY
    }

    /// What the decoder's pseudonymizer takes.
    pub fn settings(&self) -> PrivacySettings {
        PrivacySettings {
            key: self.pseudonymization_key.expose().as_bytes().to_vec(),
            key_id: self.key_id.clone(),
            pii_attribute_keys: self.pii_attribute_keys.clone(),
        }
    }

    /// Appends every problem of the `[privacy]` section to `problems`.
    fn validate(&self, source_kind: SourceKind, problems: &mut Vec<String>) {
        if self.pseudonymization_key.is_empty() {
            problems.push("privacy.pseudonymization_key must not be empty".to_string());
        }
        if !crate::privacy::is_valid_key_id(&self.key_id) {
            problems.push(format!(
                "privacy.key_id {:?} must be 1 to 8 lowercase ASCII letters or digits, starting with a letter",
                self.key_id
            ));
        }
        if source_kind == SourceKind::Kafka && self.uses_builtin_key() && !self.allow_builtin_key {
            problems.push(
                "privacy.pseudonymization_key is the public built-in key, which lets anyone reverse pseudonyms: set GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY or privacy.pseudonymization_key_file for a Kafka source (or privacy.allow_builtin_key = true for test data)"
                    .to_string(),
            );
        }
        if self.pii_attribute_keys.iter().any(String::is_empty) {
            problems.push("privacy.pii_attribute_keys must not contain an empty key".to_string());
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
    /// Longest silence of a partition's stream (event time between two of its events) still
    /// counted as observed; a longer one is a gap in the fraud report's coverage.
    #[serde(with = "humantime_serde")]
    pub coverage_max_gap: Duration,
    /// Observed time a scope needs before its drop is judged: below it the status is
    /// `insufficient_data` (never `on_track`).
    #[serde(with = "humantime_serde")]
    pub minimum_coverage: Duration,
    /// The imported case history (`gridwatch fraud import` writes it; the service reads it at
    /// start). Relative to the working directory.
    pub history_path: Option<std::path::PathBuf>,
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
            coverage_max_gap: Duration::from_secs(15 * 60),
            minimum_coverage: Duration::from_secs(14 * 24 * 3600),
            history_path: None,
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
        if config.coverage_max_gap.is_zero()
            || config.coverage_max_gap > Duration::from_secs(24 * 3600)
        {
            problems.push(format!(
                "fraud.coverage_max_gap must be between 1s and 24h, got {}",
                humantime::format_duration(config.coverage_max_gap)
            ));
        }
        if config.minimum_coverage > Duration::from_secs(366 * 24 * 3600) {
            problems.push(format!(
                "fraud.minimum_coverage must be at most 366 days, got {}",
                humantime::format_duration(config.minimum_coverage)
            ));
        }
        problems
    }
}

/// Where the fraud target's resident populations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
/// webhook. Both are off by default. `Debug` prints URL credentials as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Alertmanager base URLs, e.g. `["http://am-0:9093", "http://am-1:9093"]`. Every URL (an
    /// HA cluster's members) receives every alert. Empty disables Alertmanager delivery.
    /// Credentials (`http://user:pass@am:9093`) are sent as basic auth and printed as `***`;
    /// put such URLs in `alertmanager_urls_file` or the environment, not in the config file.
    pub alertmanager_urls: Vec<String>,
    /// A file (a secret mount) with more Alertmanager base URLs, one per line; blank lines
    /// and `#` comments are skipped. Read at start.
    pub alertmanager_urls_file: Option<PathBuf>,
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
    /// TLS of the Alertmanager and webhook clients (`[alerting.tls]`).
    pub tls: HttpClientTlsConfig,
    /// How gridwatch signs in to Alertmanager (`[alerting.alertmanager_auth]`).
    pub alertmanager_auth: AlertmanagerAuthConfig,
}

/// TLS of the alert-delivery HTTP clients. The system's trusted roots (and the Mozilla roots
/// built in) are always trusted; `ca_file` adds a private CA (a city's own PKI) on top.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientTlsConfig {
    /// A PEM bundle of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate chain presented to receivers that ask for one (mutual TLS);
    /// needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`, from a secret
    /// mount; rustls reads no encrypted keys.
    pub key_file: Option<PathBuf>,
}

/// Credentials for Alertmanager's `--web.config.file` (basic auth) or a proxy in front of it
/// (bearer token). Secrets come from the environment
/// (`GRIDWATCH_ALERTING__ALERTMANAGER_AUTH__PASSWORD`, `…__BEARER_TOKEN`) or `*_file` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerAuthConfig {
    /// Basic-auth user; needs a password.
    pub username: String,
    /// Basic-auth password.
    pub password: Secret,
    /// A file holding the basic-auth password; read at start, a trailing newline dropped.
    pub password_file: Option<PathBuf>,
    /// Bearer token sent as `Authorization: Bearer …` (instead of basic auth).
    pub bearer_token: Secret,
    /// A file holding the bearer token.
    pub bearer_token_file: Option<PathBuf>,
}

impl AlertmanagerAuthConfig {
    /// Appends every problem of `[alerting.alertmanager_auth]` to `problems` (after the secret
    /// files were read).
    fn validate(&self, problems: &mut Vec<String>) {
        let has_password = !self.password.is_empty() || self.password_file.is_some();
        let basic = !self.username.is_empty() || has_password;
        if basic && (self.username.is_empty() || !has_password) {
            problems.push("alerting.alertmanager_auth: basic auth needs both username and password (or password_file)".to_string());
        }
        if basic && (!self.bearer_token.is_empty() || self.bearer_token_file.is_some()) {
            problems.push(
                "alerting.alertmanager_auth: set basic auth (username, password) or bearer_token, not both"
                    .to_string(),
            );
        }
    }
}

/// Default `alerting.external_url`.
pub const DEFAULT_EXTERNAL_URL: &str = "http://127.0.0.1:9750";

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            alertmanager_urls: Vec::new(),
            alertmanager_urls_file: None,
            resend_interval: Duration::from_secs(60),
            external_url: DEFAULT_EXTERNAL_URL.to_string(),
            instance: String::new(),
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(30),
            retry_max_attempts: 8,
            webhook: WebhookConfig::default(),
            tls: HttpClientTlsConfig::default(),
            alertmanager_auth: AlertmanagerAuthConfig::default(),
        }
    }
}

/// The CloudEvents webhook (`[alerting.webhook]`). `Debug` prints URL credentials as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Receiver URL; empty disables the webhook.
    pub url: String,
    /// HMAC-SHA256 key for the `X-Gridwatch-Signature` header; empty sends no signature.
    /// Set it from the environment (`GRIDWATCH_ALERTING__WEBHOOK__SECRET`) or `secret_file`.
    pub secret: Secret,
    /// A file holding the secret (a secret mount); read at start, a trailing newline dropped.
    pub secret_file: Option<PathBuf>,
    /// Per-request timeout (default 5 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: Secret::default(),
            secret_file: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("format", &self.format)
            .field("topic_formats", &self.topic_formats)
            .field(
                "properties",
                &crate::secret::redacted_properties(&self.properties),
            )
            .field("property_files", &self.property_files)
            .field("sinks", &self.sinks)
            .field("state_topic", &self.state_topic)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("state_timeout", &self.state_timeout)
            .field("engine_threads", &self.engine_threads)
            .finish()
    }
}

impl std::fmt::Debug for AlertingConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .alertmanager_urls
            .iter()
            .map(|url| redact_url(url))
            .collect();
        formatter
            .debug_struct("AlertingConfig")
            .field("alertmanager_urls", &urls)
            .field("alertmanager_urls_file", &self.alertmanager_urls_file)
            .field("resend_interval", &self.resend_interval)
            .field("external_url", &redact_url(&self.external_url))
            .field("instance", &self.instance)
            .field("queue_capacity", &self.queue_capacity)
            .field("timeout", &self.timeout)
            .field("retry_initial_backoff", &self.retry_initial_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("retry_max_attempts", &self.retry_max_attempts)
            .field("webhook", &self.webhook)
            .field("tls", &self.tls)
            .field("alertmanager_auth", &self.alertmanager_auth)
            .finish()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .field("secret_file", &self.secret_file)
            .field("timeout", &self.timeout)
            .finish()
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
                    "alerting.alertmanager_urls: {:?} is not an http(s) URL like http://127.0.0.1:9093",
                    redact_url(url)
                ));
            }
        }
        if !is_http_url(&self.external_url) {
            problems.push(format!(
                "alerting.external_url {:?} is not an http(s) URL",
                redact_url(&self.external_url)
            ));
        }
        if !self.webhook.url.is_empty() && !is_http_url(&self.webhook.url) {
            problems.push(format!(
                "alerting.webhook.url {:?} is not an http(s) URL",
                redact_url(&self.webhook.url)
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
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push(
                "alerting.tls.cert_file and alerting.tls.key_file must be set together".to_string(),
            );
        }
        self.alertmanager_auth.validate(problems);
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
    /// The configuration does not parse into the schema or is not valid; every problem is
    /// listed, each naming its key and, when not a default, the file or variable it came
    /// from (values of keys that may hold a secret described by shape only).
    #[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl Config {
    /// Loads defaults, then `path` (if any), then `GRIDWATCH_*` environment variables, and
    /// validates the result: every problem at once, parse and validation alike.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_layers(path).map(|(config, _)| config)
    }

    /// As [`Config::load`], with the layers it came from (each value's source, for `config
    /// show`).
    pub fn load_with_layers(path: Option<&Path>) -> Result<(Config, Layers), ConfigError> {
        let layers = Config::layers(path, true)?;
        let (config, mut problems) = Config::extract(&layers);
        let Some(mut config) = config else {
            return Err(ConfigError::Invalid { problems });
        };
        problems.extend(config.secret_file_problems());
        problems.extend(
            config
                .validation_problems()
                .into_iter()
                .map(|problem| layers.attribute(problem)),
        );
        if problems.is_empty() {
            Ok((config, layers))
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// The `[kafka]` settings of the configuration a command-line tool (`produce`, `dlq
    /// replay`) shares with the service: defaults, `path`, `GRIDWATCH_*` variables (librdkafka
    /// properties from `GRIDWATCH_KAFKA_PROPERTY_*` included) and `kafka.property_files` read,
    /// so that TLS and SASL settings and their secrets never need the command line. The rest
    /// of the configuration is parsed (unknown keys are still errors) but not validated: a
    /// tool needs neither the pseudonymization key nor a valid HTTP section.
    pub fn load_kafka_settings(path: Option<&Path>) -> Result<KafkaConfig, ConfigError> {
        let layers = Config::layers(path, true)?;
        let (config, mut problems) = Config::extract(&layers);
        let Some(mut config) = config else {
            return Err(ConfigError::Invalid { problems });
        };
        config.kafka.read_property_files(&mut problems);
        if problems.is_empty() {
            return Ok(config.kafka);
        }
        Err(ConfigError::Invalid { problems })
    }

    /// Defaults, then `path`, then (with `environment`) the `GRIDWATCH_*` variables.
    fn layers(path: Option<&Path>, environment: bool) -> Result<Layers, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(config_path) = path {
            if !config_path.exists() {
                return Err(ConfigError::MissingFile {
                    path: config_path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(config_path));
        }
        if environment {
            // Only `GRIDWATCH_<SECTION>__<KEY>` variables are configuration: `GRIDWATCH_CONFIG`
            // (the file path) and other single-level names are not keys.
            // `GRIDWATCH_KAFKA_PROPERTY_*` are librdkafka properties, whose dotted names
            // figment's splitting cannot express: they are read in `extract`.
            figment = figment.merge(
                Env::prefixed("GRIDWATCH_")
                    .filter(|key| {
                        key.as_str().contains("__")
                            && !key
                                .as_str()
                                .to_ascii_uppercase()
                                .starts_with(KAFKA_PROPERTY_VARIABLE_INFIX)
                    })
                    .split("__"),
            );
        }
        Layers::new(figment).map_err(|problems| ConfigError::Invalid { problems })
    }

    /// `layers` parsed into the schema with every parse problem (no secret file read,
    /// nothing validated); the librdkafka properties of `GRIDWATCH_KAFKA_PROPERTY_*` added.
    fn extract(layers: &Layers) -> (Option<Config>, Vec<String>) {
        let (mut config, mut problems) = layers.extract();
        match kafka_properties_from_environment(std::env::vars_os()) {
            Ok(from_environment) => {
                if let Some(config) = &mut config {
                    config.kafka.properties.extend(from_environment);
                }
            }
            Err(more) => problems.extend(more),
        }
        (config, problems)
    }

    /// Reads the secrets named by `*_file` keys into their settings (the only IO of loading
    /// besides the config file). Every unreadable file is listed by path; contents never are.
    pub fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let problems = self.secret_file_problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid { problems })
    }

    /// Reads the secrets named by `*_file` keys into their settings; the problems.
    fn secret_file_problems(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(path) = &self.privacy.pseudonymization_key_file {
            if !self.privacy.uses_builtin_key() {
                problems.push("set privacy.pseudonymization_key or privacy.pseudonymization_key_file, not both".to_string());
            }
            if let Some(key) =
                read_secret_file("privacy.pseudonymization_key_file", path, &mut problems)
            {
                self.privacy.pseudonymization_key = Secret::new(key);
            }
        }
        if let Some(path) = &self.alerting.webhook.secret_file {
            if !self.alerting.webhook.secret.is_empty() {
                problems.push(
                    "set alerting.webhook.secret or alerting.webhook.secret_file, not both"
                        .to_string(),
                );
            }
            if let Some(secret) =
                read_secret_file("alerting.webhook.secret_file", path, &mut problems)
            {
                self.alerting.webhook.secret = Secret::new(secret);
            }
        }
        let auth = &mut self.alerting.alertmanager_auth;
        for (setting, path, secret) in [
            (
                "alerting.alertmanager_auth.password",
                &auth.password_file,
                &mut auth.password,
            ),
            (
                "alerting.alertmanager_auth.bearer_token",
                &auth.bearer_token_file,
                &mut auth.bearer_token,
            ),
        ] {
            let Some(path) = path else {
                continue;
            };
            if !secret.is_empty() {
                problems.push(format!("set {setting} or {setting}_file, not both"));
            }
            if let Some(value) = read_secret_file(&format!("{setting}_file"), path, &mut problems) {
                *secret = Secret::new(value);
            }
        }
        if let Some(path) = &self.alerting.alertmanager_urls_file {
            if let Some(text) =
                read_secret_file("alerting.alertmanager_urls_file", path, &mut problems)
            {
                self.alerting.alertmanager_urls.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty() && !line.starts_with('#'))
                        .map(ToString::to_string),
                );
            }
        }
        self.kafka.read_property_files(&mut problems);
        problems
    }

    /// Parses a TOML text over the defaults (no environment), and validates it: every
    /// problem at once.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        let layers = Layers::new(figment).map_err(|problems| ConfigError::Invalid { problems })?;
        let (config, mut problems) = layers.extract();
        let Some(config) = config else {
            return Err(ConfigError::Invalid { problems });
        };
        problems.extend(config.validation_problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// Checks every rule of the configuration without IO; lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.validation_problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid { problems })
    }

    /// Every problem of the configuration's rules (no IO).
    fn validation_problems(&self) -> Vec<String> {
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
        self.ingest.limit_problems(&mut problems);
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
        self.http.validate(&mut problems);
        self.privacy.validate(self.source.kind, &mut problems);
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
        problems
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

/// The content of the secret file `path` for `setting`, without its trailing newline; a
/// problem naming the path (never the content) when it cannot be read.
fn read_secret_file(setting: &str, path: &Path, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(content) => Some(content.trim_end_matches(['\n', '\r']).to_string()),
        Err(error) => {
            problems.push(format!(
                "{setting}: cannot read {}: {error}",
                path.display()
            ));
            None
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
    fn type_errors_are_collected_with_the_validation_problems_and_name_no_profile() {
        let error = Config::from_toml_str(
            "[source]\nkind = \"kafak\"\n[window]\nsize = 5\nsise = \"2m\"\n[http]\nmax_connections = \"many\"\nlisten = \"nowhere\"\n[[simulator.scenarios]]\nat = \"1h\"",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems } = error else {
            panic!("expected Invalid, got {error}");
        };
        let text = problems.join("\n");
        for expected in [
            "source.kind: unknown value \"kafak\", expected one of \"simulator\", \"file\", \"kafka\"",
            "window.size: invalid type: found 5, expected a duration",
            "window.sise: unknown key, expected one of size,",
            "http.max_connections: invalid type: found \"many\", expected a whole number, 0 or more",
            "simulator.scenarios.0: missing key kind",
            "http.listen \"nowhere\" is not an address",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(problems.len(), 6, "{text}");
        assert!(!text.contains("default."), "{text}");
    }

    #[test]
    fn engine_threads_default_to_none_below_four_cores_and_half_the_cores_from_there() {
        let mut kafka = KafkaConfig::default();
        assert_eq!(kafka.engine_threads_for(1), 1);
        assert_eq!(kafka.engine_threads_for(CORES_FOR_ENGINE_THREADS - 1), 1);
        assert_eq!(kafka.engine_threads_for(CORES_FOR_ENGINE_THREADS), 2);
        assert_eq!(kafka.engine_threads_for(8), 4);
        kafka.engine_threads = 3;
        assert_eq!(kafka.engine_threads_for(2), 3, "a set count wins");
        assert_rejected_with(
            "[source]\nkind = \"kafka\"\n[kafka]\nengine_threads = 100000",
            &["kafka.engine_threads must be at most 256"],
        );
    }

    /// Checks that `toml` is rejected with a problem mentioning each of `expected`.
    fn assert_rejected_with(toml: &str, expected: &[&str]) {
        let text = match Config::from_toml_str(toml) {
            Err(ConfigError::Invalid { problems }) => problems.join("\n"),
            other => panic!("expected Invalid, got {other:?}"),
        };
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|each| !text.contains(**each))
            .collect();
        assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
    }

    #[test]
    fn listening_beyond_loopback_without_tokens_is_refused_with_the_other_http_problems() {
        assert_rejected_with(
            "[window]\nsize = \"0s\"\n[http]\nlisten = \"0.0.0.0:9750\"\ntls_cert_file = \"cert.pem\"\nheader_read_timeout = \"0s\"\nrequest_timeout = \"0s\"\nmax_connections = 0\nrate_limit_burst = 0",
            &[
                "window.size",
                "http.listen 0.0.0.0:9750 is reachable from other hosts but no API tokens are configured",
                "http.tls_cert_file and http.tls_key_file must be set together",
                "http.header_read_timeout",
                "http.request_timeout",
                "http.max_connections",
                "http.rate_limit_burst",
            ],
        );
    }

    #[test]
    fn stream_caps_and_cors_origins_are_validated() {
        assert_rejected_with(
            "[http]\nmax_streams = 0\nmax_streams_per_client = 0\ncors_allowed_origins = [\"*\", \"https://grafana.example.org/path\", \"ftp://x\"]",
            &[
                "http.max_streams must be positive",
                "http.max_streams_per_client must be between 1",
                "\"*\" is not an origin",
                "\"https://grafana.example.org/path\" is not an origin",
                "\"ftp://x\" is not an origin",
            ],
        );
        assert_rejected_with(
            "[http]\nmax_connections = 10\nmax_streams = 20",
            &["http.max_streams (20) must not exceed http.max_connections (10)"],
        );
        let config = Config::from_toml_str(
            "[http]\ncors_allowed_origins = [\"https://grafana.example.org\", \"http://10.0.0.5:3000\", \"http://[::1]:3000\"]",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.http.cors_allowed_origins.len(), 3);
        assert_eq!(config.http.max_streams_per_client, 4);
        assert_eq!(config.http.max_streams, 200);
        assert!(Config::default().http.cors_allowed_origins.is_empty());
    }

    #[test]
    fn host_names_are_accepted_where_addresses_are_and_only_localhost_counts_as_loopback() {
        let config = Config::from_toml_str("[http]\nlisten = \"localhost:9750\"").unwrap();
        assert_eq!(config.http.listen, "localhost:9750");
        assert_rejected_with(
            "[http]\nlisten = \"gridwatch.example.org:9750\"",
            &["http.listen gridwatch.example.org:9750 is reachable from other hosts"],
        );
        for bad in [
            "localhost",
            "localhost:http",
            "-bad-:9750",
            ":9750",
            "a..b:1",
        ] {
            assert_rejected_with(
                &format!("[http]\nlisten = {bad:?}"),
                &[&format!("http.listen {bad:?} is not an address")],
            );
        }
    }

    #[test]
    fn listening_beyond_loopback_with_a_tokens_file_is_allowed() {
        let config = Config::from_toml_str(
            "[http]\nlisten = \"0.0.0.0:9750\"\ntokens_file = \"/run/secrets/api-tokens\"",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert!(config.http.tokens_configured());
        assert_eq!(config.http.max_connections, 1024);
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
            "[source]\nkind = \"kafka\"\n[kafka]\nbrokers = \"b:9092\"\ntopics = [\"events\"]\nformat = \"json\"\n[kafka.properties]\n\"security.protocol\" = \"ssl\"\n[privacy]\nallow_builtin_key = true",
        )
        .unwrap();
        assert_eq!(config.kafka.format, KafkaPayloadFormat::Json);
        assert_eq!(config.kafka.format.input_format(), InputFormat::Jsonl);
        assert_eq!(
            config.kafka.format_of_topic("events"),
            KafkaPayloadFormat::Json
        );
        let per_topic = Config::from_toml_str(
            "[source]\nkind = \"kafka\"\n[kafka]\ntopics = [\"events\", \"legacy\"]\n[kafka.topic_formats]\nlegacy = \"json\"\n[privacy]\nallow_builtin_key = true",
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
        assert_eq!(config.kafka.sinks.status_topic, "gridwatch.status.v1");
        config.validate().unwrap();
        let mut invalid = Config::default();
        invalid.kafka.brokers = String::new();
        invalid.kafka.sinks.enabled = true;
        invalid.kafka.sinks.windows_topic = "bad topic".to_string();
        invalid.kafka.sinks.status_topic = "status/v1".to_string();
        let problems = invalid.validate().unwrap_err().to_string();
        assert!(problems.contains("kafka.sinks.windows_topic"), "{problems}");
        assert!(problems.contains("kafka.sinks.status_topic"), "{problems}");
        assert!(problems.contains("kafka.brokers"), "{problems}");
        let mut all_off = Config::default();
        all_off.kafka.sinks.enabled = true;
        all_off.kafka.sinks.windows_topic.clear();
        all_off.kafka.sinks.alerts_topic.clear();
        all_off.kafka.sinks.dead_letter_topic.clear();
        all_off.kafka.sinks.status_topic.clear();
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
            assert_eq!(config.alerting.webhook.secret.expose(), "s3cret");
            Ok(())
        });
    }

    #[test]
    fn the_builtin_key_is_refused_for_kafka_unless_allowed_and_key_ids_are_checked() {
        let kafka = "[source]\nkind = \"kafka\"\n[kafka]\ntopics = [\"events\"]\n";
        let error = Config::from_toml_str(kafka).unwrap_err().to_string();
        assert!(error.contains("built-in key"), "{error}");
        Config::from_toml_str(&format!("{kafka}[privacy]\nallow_builtin_key = true")).unwrap();
        Config::from_toml_str(&format!(
            "{kafka}[privacy]\npseudonymization_key = \"a real key\""
        ))
        .unwrap();
        Config::from_toml_str("").unwrap();
        let error =
            Config::from_toml_str("[privacy]\nkey_id = \"K-1\"\npseudonymization_key = \"\"")
                .unwrap_err()
                .to_string();
        assert!(error.contains("privacy.key_id"), "{error}");
        assert!(error.contains("must not be empty"), "{error}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output_or_problems() {
        let mut config = Config::default();
        config.privacy.pseudonymization_key = Secret::new("marker-key-7f3a");
        config.alerting.webhook.secret = Secret::new("marker-webhook-7f3a");
        config.alerting.alertmanager_urls = vec!["http://user:marker-am-7f3a@[broken".to_string()];
        config.alerting.webhook.url = "https://user:marker-hook-7f3a@hooks.example/".to_string();
        config
            .kafka
            .properties
            .insert("sasl.password".to_string(), "marker-sasl-7f3a".to_string());
        let debug = format!("{config:?}");
        for marker in ["marker-am-7f3a", "marker-hook-7f3a", "marker-sasl-7f3a"] {
            assert!(!debug.contains(marker), "{debug}");
        }
        assert!(!debug.contains("marker-key-7f3a"), "{debug}");
        assert!(!debug.contains("marker-webhook-7f3a"), "{debug}");
        let problems = config.validate().unwrap_err().to_string();
        assert!(!problems.contains("marker-am-7f3a"), "{problems}");
        assert!(
            problems.contains("alerting.alertmanager_urls"),
            "{problems}"
        );
    }

    #[test]
    fn secret_files_are_read_at_load_and_unreadable_ones_are_listed_by_path() {
        let directory = tempfile::tempdir().unwrap();
        let key_path = directory.path().join("key");
        std::fs::write(&key_path, "from-a-file\n").unwrap();
        let urls_path = directory.path().join("alertmanagers");
        std::fs::write(&urls_path, "# comment\nhttp://u:p@am-0:9093\n\n").unwrap();
        let mut config = Config::default();
        config.privacy.pseudonymization_key_file = Some(key_path);
        config.alerting.alertmanager_urls_file = Some(urls_path);
        config.kafka.property_files.insert(
            "sasl.password".to_string(),
            directory.path().join("missing"),
        );
        let error = config.read_secret_files().unwrap_err().to_string();
        assert!(error.contains("kafka.property_files"), "{error}");
        assert!(error.contains("missing"), "{error}");
        assert_eq!(config.privacy.pseudonymization_key.expose(), "from-a-file");
        assert_eq!(
            config.alerting.alertmanager_urls,
            vec!["http://u:p@am-0:9093"]
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn a_numeric_secret_from_the_environment_is_taken_as_text_not_quoted_in_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY", "98765432123");
            jail.set_env("GRIDWATCH_ALERTING__WEBHOOK__SECRET", "true");
            let config = Config::load(None).map_err(|error| error.to_string())?;
            assert_eq!(config.privacy.pseudonymization_key.expose(), "98765432123");
            assert_eq!(config.alerting.webhook.secret.expose(), "true");
            // figment reads an unquoted all-digit value as a number (leading zeros lost): the
            // README says to quote such a secret or use a file.
            jail.set_env("GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY", "\"000123\"");
            let config = Config::load(None).map_err(|error| error.to_string())?;
            assert_eq!(config.privacy.pseudonymization_key.expose(), "000123");
            jail.set_env("GRIDWATCH_ALERTING__WEBHOOK__SECRET", "[98765432123]");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(!error.contains("98765432123"), "{error}");
            jail.set_env(
                "GRIDWATCH_ALERTING__ALERTMANAGER_URLS",
                "http://ops:marker-7f3a@am:9093",
            );
            let error = Config::load(None).unwrap_err().to_string();
            assert!(!error.contains("marker-7f3a"), "{error}");
            assert!(error.contains("alertmanager_urls"), "{error}");
            assert!(
                error.contains("found a string, expected a sequence"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn kafka_property_variables_name_dotted_librdkafka_properties() {
        let variables = [
            ("GRIDWATCH_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("GRIDWATCH_KAFKA_PROPERTY_sasl_password", "s3cret"),
            ("GRIDWATCH_KAFKA__BROKERS", "b:9092"),
            ("PATH", "/bin"),
        ]
        .map(|(name, value)| (name.into(), value.into()));
        let properties = kafka_properties_from_environment(variables).unwrap();
        assert_eq!(properties.len(), 2, "{properties:?}");
        assert_eq!(properties["security.protocol"], "SASL_SSL");
        assert_eq!(properties["sasl.password"], "s3cret");

        let bad = [
            ("GRIDWATCH_KAFKA_PROPERTY_", "secret-value"),
            ("GRIDWATCH_KAFKA_PROPERTY_SASL__PASSWORD", "secret-value"),
        ]
        .map(|(name, value)| (name.into(), value.into()));
        let problems = kafka_properties_from_environment(bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .all(|problem| !problem.contains("secret-value")));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn kafka_property_variables_reach_the_loaded_config_and_clash_with_property_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("sasl", "from-file\n")?;
            jail.set_env("GRIDWATCH_KAFKA_PROPERTY_SECURITY_PROTOCOL", "ssl");
            let config = Config::load(None).unwrap();
            assert_eq!(config.kafka.properties["security.protocol"], "ssl");
            jail.create_file(
                "gridwatch.toml",
                "[kafka.property_files]\n\"sasl.password\" = \"sasl\"",
            )?;
            jail.set_env("GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD", "from-env");
            let error = Config::load(Some(Path::new("gridwatch.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("set it once"), "{error}");
            assert!(!error.contains("from-env") && !error.contains("from-file"));
            Ok(())
        });
    }

    #[test]
    fn alertmanager_sign_in_takes_basic_auth_or_a_bearer_token_and_client_tls_pairs() {
        let mut config = Config::default();
        config.alerting.alertmanager_auth.username = "ops".to_string();
        config.alerting.alertmanager_auth.bearer_token = Secret::new("token-marker");
        config.alerting.tls.cert_file = Some(PathBuf::from("client.pem"));
        let problems = config.validate().unwrap_err().to_string();
        assert!(
            problems.contains("needs both username and password"),
            "{problems}"
        );
        assert!(problems.contains("not both"), "{problems}");
        assert!(problems.contains("alerting.tls.cert_file"), "{problems}");
        assert!(!problems.contains("token-marker"), "{problems}");

        let mut fine = Config::default();
        fine.alerting.alertmanager_auth.username = "ops".to_string();
        fine.alerting.alertmanager_auth.password_file = Some(PathBuf::from("/run/secrets/am"));
        fine.validate().unwrap();
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
