//! Kafka's one home: what every Kafka client of gridwatch shares — the error type, header
//! names and content types, the dense source partition ids, the librdkafka client settings
//! and the header helpers. A leaf: the source ([`crate::source::kafka`]), the state topic
//! ([`crate::state::kafka`]), the output topics ([`crate::sink::kafka`]), `dlq replay`
//! ([`crate::tools::dlq_replay`]) and the load generator ([`crate::tools::produce`]) depend on it,
//! never the other way round.

// No panic path reachable from input, state or configuration (README "Security").

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};

use crate::config::{KafkaConfig, KafkaPayloadFormat};

/// The header naming a record's payload format.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// `content-type` of JSON records.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// `content-type` of protobuf records.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// State-topic header: the input offset the snapshot's state is complete up to (exclusive), decimal.
pub const NEXT_OFFSET_HEADER: &str = "gridwatch_next_offset";
/// State-topic header: the input topic of the snapshot's partition.
pub const INPUT_TOPIC_HEADER: &str = "gridwatch_input_topic";
/// State-topic header: the input partition number of the snapshot.
pub const INPUT_PARTITION_HEADER: &str = "gridwatch_input_partition";
/// Header of a record `dlq replay` produced: names the dead letter it came from,
/// `<dead-letter topic>/<partition>/<offset>`.
pub const REPLAYED_FROM_HEADER: &str = "gridwatch_replayed_from";
/// Dead-letter header: the rejection reason (see [`crate::dead_letter::DeadLetterReason`]).
pub const REASON_HEADER: &str = "reason";
/// Dead-letter header: the source the record was read from (`kafka`, `file`,
/// `simulator`).
pub const SOURCE_HEADER: &str = "source";
/// Dead-letter header: what exactly was wrong.
pub const DETAIL_HEADER: &str = "detail";
/// Dead-letter header: where in its source the record was (`partition <id> position <n>`).
pub const POSITION_HEADER: &str = "position";
/// Dead-letter header (Kafka input): the topic of the original record.
pub const KAFKA_TOPIC_HEADER: &str = "kafka_topic";
/// Dead-letter header (Kafka input): the partition of the original record.
pub const KAFKA_PARTITION_HEADER: &str = "kafka_partition";
/// Dead-letter header (Kafka input): the offset of the original record.
pub const KAFKA_OFFSET_HEADER: &str = "kafka_offset";

/// Status-topic key prefix of a partition's fraud counts: `fraud/<group_id>/<topic>/<partition>`.
pub const STATUS_FRAUD_KEY_PREFIX: &str = "fraud/";
/// Status-topic key prefix of an instance's status: `instance/<instance_id>`.
pub const STATUS_INSTANCE_KEY_PREFIX: &str = "instance/";

/// Kafka partitions per topic representable in a source partition id.
const PARTITIONS_PER_TOPIC: u32 = 1 << 16;

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
    /// A consumer or probe thread could not be started.
    #[error("a kafka client thread cannot start: {0}")]
    ThreadStart(#[source] std::io::Error),
    /// A blocking lookup handed to a worker thread did not finish (the runtime is shutting
    /// down).
    #[error("kafka: {context}: the lookup task did not finish")]
    LookupAborted {
        /// What gridwatch was looking up.
        context: &'static str,
        /// Why the task did not finish.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The consumer thread has stopped: nothing can be committed any more.
    #[error("kafka consumer thread: the consumer thread has stopped")]
    ConsumerStopped,
}

impl KafkaError {
    /// A [`KafkaError::Client`]: librdkafka's `source` while gridwatch was doing `context`.
    pub fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> KafkaError {
        KafkaError::Client {
            context: context.into(),
            source,
        }
    }
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

/// The source partition id of `kafka_partition` of `topic`, when `topic` is one of `topics`
/// (in config order) and the partition can be numbered.
pub fn source_partition_of(topics: &[String], topic: &str, kafka_partition: i32) -> Option<u32> {
    let topic_index = topics.iter().position(|name| name == topic)?;
    source_partition_id(topic_index, kafka_partition)
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
pub fn group_client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    client_config
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // librdkafka stops fetching a partition whose local queue is over its threshold for
        // this long (default 1 s): a consumer that processes rather than just counts drains
        // the queue well before that and then idles (measured: half the run waiting).
        .set("fetch.queue.backoff.ms", "20");
    for (key, value) in &config.properties {
        client_config.set(key, value);
    }
    client_config
}

/// librdkafka settings of clients outside the consumer group (state producer and reader, the
/// metadata probe, the output producer): brokers, then `defaults`, then the user's properties
/// (TLS, SASL, and overrides of the defaults), minus consumer-group settings that make no
/// sense here.
pub fn non_group_client_config(config: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    client_config.set("bootstrap.servers", &config.brokers);
    for (key, value) in defaults {
        client_config.set(*key, *value);
    }
    for (key, value) in &config.properties {
        if matches!(
            key.as_str(),
            "group.id"
                | "session.timeout.ms"
                | "max.poll.interval.ms"
                | "heartbeat.interval.ms"
                | "partition.assignment.strategy"
                | "group.instance.id"
                | "auto.offset.reset"
                | "enable.auto.commit"
                | "enable.auto.offset.store"
                | "statistics.interval.ms"
        ) {
            continue;
        }
        client_config.set(key, value);
    }
    client_config
}

/// librdkafka settings from `brokers`, then `defaults`, then the user's `properties` (TLS,
/// SASL, overrides of the defaults): the shape of every client of the command-line tools,
/// which set what must not be overridden after this.
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut client_config = ClientConfig::new();
    client_config.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        client_config.set(*key, *value);
    }
    for (key, value) in properties {
        client_config.set(key, value);
    }
    client_config
}

/// Asks librdkafka itself whether `config`'s client settings are usable, without connecting:
/// the consumer (gridwatch's settings and `kafka.properties`) and the idempotent producer of
/// the outputs and state are created with `bootstrap.servers` removed, so librdkafka checks
/// every property name and value, the security protocol (SSL needs OpenSSL in the build), the
/// SASL mechanism (a provider must exist), the compression codec, and that the certificate and
/// key files it is told to load load — and starts no broker connection. Every problem is
/// returned, secret property values replaced by `***` (librdkafka may quote a value).
pub fn check_client_settings(config: &KafkaConfig) -> Vec<String> {
    let consumer_settings = group_client_config(config);
    let producer_settings = non_group_client_config(config, &[("enable.idempotence", "true")]);
    check_settings(
        &[
            ("consumer", consumer_settings),
            ("producer", producer_settings),
        ],
        &config.properties,
    )
}

/// The problems of a command-line tool's client settings (`brokers`, then `properties`), as
/// [`check_client_settings`] finds them for the service.
pub fn check_tool_client_settings(properties: &BTreeMap<String, String>) -> Vec<String> {
    let settings = client_config("", &[], properties);
    check_settings(&[("client", settings)], properties)
}

/// Creates a producer (or consumer) for each of `clients` without brokers and collects what
/// librdkafka refuses, with the values of `properties` that are secrets redacted.
fn check_settings(
    clients: &[(&str, ClientConfig)],
    properties: &BTreeMap<String, String>,
) -> Vec<String> {
    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;
    let mut problems: Vec<String> = Vec::new();
    for (role, settings) in clients {
        let mut offline = settings.clone();
        offline
            .remove("bootstrap.servers")
            .set_log_level(RDKafkaLogLevel::Emerg);
        let created = if *role == "consumer" {
            offline.create::<BaseConsumer>().map(drop)
        } else {
            offline.create::<BaseProducer>().map(drop)
        };
        if let Err(error) = created {
            let text = crate::secret::redact_property_values(&error.to_string(), properties);
            let problem =
                format!("kafka.properties: librdkafka refuses the {role} settings: {text}");
            if !problems.iter().any(|known| known.ends_with(&text)) {
                problems.push(problem);
            }
        }
    }
    problems
}

/// librdkafka headers of `(name, text value)` pairs, in order.
pub fn owned_headers<Value: AsRef<str>>(headers: &[(&str, Value)]) -> OwnedHeaders {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(value.as_ref().as_bytes()),
        });
    }
    owned
}

/// The `(key, value)` headers of a consumed message.
pub fn message_headers<'a>(message: &'a BorrowedMessage<'a>) -> Vec<(&'a str, Option<&'a [u8]>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key, header.value))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the first header named exactly `name`.
pub fn header_value<'a>(headers: &[(&'a str, Option<&'a [u8]>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| *value)
}

/// The value of header `name`, as text.
pub fn header_text<'message>(
    message: &'message BorrowedMessage<'_>,
    name: &str,
) -> Option<&'message str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_config(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            properties: properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn librdkafka_accepts_tls_scram_plain_and_every_codec_of_this_build() {
        for codec in ["zstd", "lz4", "snappy", "gzip"] {
            let config = kafka_config(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "gridwatch"),
                ("sasl.password", "p"),
                ("compression.type", codec),
            ]);
            assert_eq!(
                check_client_settings(&config),
                Vec::<String>::new(),
                "{codec}"
            );
        }
        let plain = kafka_config(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "gridwatch"),
            ("sasl.password", "p"),
        ]);
        assert!(check_client_settings(&plain).is_empty());
    }

    #[test]
    fn librdkafka_refusals_are_reported_once_without_secret_values() {
        let config = kafka_config(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "GSSAPI"),
            ("sasl.password", "GSSAPI-secret"),
        ]);
        let problems = check_client_settings(&config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("No provider for SASL mechanism GSSAPI"),
            "{problems:?}"
        );
        assert!(!problems[0].contains("GSSAPI-secret"));
        let unknown = kafka_config(&[("no.such.property", "1")]);
        assert!(!check_client_settings(&unknown).is_empty());
    }

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
}
