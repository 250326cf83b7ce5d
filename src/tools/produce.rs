//! `gridwatch produce`: the simulator as a Kafka load generator. Records are keyed by
//! community ([`record_key`]), as the Kafka source expects, and carry a `content-type` header.

use std::time::Duration;

use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaPayloadFormat;
use crate::grid::GridRegistry;
use crate::kafka::{KafkaError, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE};
use crate::proto::IncidentEvent;
use crate::source::simulator::Simulator;
use crate::source::SourceError;

/// Records the load generator has waiting for acknowledgement before it waits for them.
const MAX_IN_FLIGHT: usize = 1000;

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The producer could not be created or a record was not acknowledged.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] SourceError),
}

/// What `gridwatch produce` sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// Destination topic.
    pub topic: String,
    /// Stop after this many events; `None` runs until the future is dropped.
    pub events: Option<u64>,
    /// Events per second; `None` sends as fast as the broker acknowledges.
    pub rate_per_second: Option<f64>,
    /// Payload format (and `content-type` header).
    pub format: KafkaPayloadFormat,
    /// librdkafka properties for the producer (e.g. TLS/SASL), applied last.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// The record key of an event: the 12-digit id of its community, so that all of a
/// community's events meet on one partition — its cells' windows, the community-scope rules
/// (fraud-wave spike and CUSUM, data gaps) and its fraud counts are then exact in one pipeline,
/// whatever the number of partitions and instances (162 keys spread over the partitions by
/// the default partitioner). The community is the one `registry` resolves the event's cell to
/// (grid id, coordinates or device); an event that resolves to none is keyed by its device id,
/// else its event id (it will be dead-lettered anyway).
pub fn record_key<'event>(
    event: &'event IncidentEvent,
    registry: &'event GridRegistry,
) -> &'event str {
    if let Ok(cell) = registry.resolve(event) {
        let community = registry.cell(cell).community;
        return &registry.community(community).id;
    }
    if !event.device_id.is_empty() {
        return &event.device_id;
    }
    &event.event_id
}

/// One event's record value in `format`.
pub fn encode_record_value(
    event: &IncidentEvent,
    format: KafkaPayloadFormat,
) -> Result<Vec<u8>, SourceError> {
    match format {
        KafkaPayloadFormat::Protobuf => Ok(event.encode_to_vec()),
        KafkaPayloadFormat::Json => {
            serde_json::to_vec(event).map_err(|source| SourceError::Serialize {
                event_id: event.event_id.clone(),
                source,
            })
        }
    }
}

/// Produces the simulator's events to `options.topic` (acknowledged by the broker) and returns
/// how many were sent.
pub async fn produce_simulated(
    options: &ProduceOptions,
    simulator: &mut Simulator,
) -> Result<u64, ProduceError> {
    produce_simulated_with_progress(options, simulator, &mut |_| {}).await
}

/// As [`produce_simulated`], telling `on_sent` how many events were handed to the producer
/// after each one (the command line's progress).
pub async fn produce_simulated_with_progress(
    options: &ProduceOptions,
    simulator: &mut Simulator,
    on_sent: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ProduceError> {
    let producer: FutureProducer = crate::kafka::client_config(
        &options.brokers,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
        &options.properties,
    )
    .create()
    .map_err(|source| KafkaError::client("creating the producer", source))?;
    let content_type = match options.format {
        KafkaPayloadFormat::Protobuf => PROTOBUF_CONTENT_TYPE,
        KafkaPayloadFormat::Json => JSON_CONTENT_TYPE,
    };
    let registry = simulator.registry().clone();
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut in_flight = Vec::new();
    while options.events.is_none_or(|limit| sent < limit) {
        if let Some(rate) = options.rate_per_second.filter(|rate| *rate > 0.0) {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        let event = simulator.next_event();
        let value = encode_record_value(&event, options.format)?;
        let headers = OwnedHeaders::new().insert(Header {
            key: CONTENT_TYPE_HEADER,
            value: Some(content_type),
        });
        let record = FutureRecord::to(&options.topic)
            .key(record_key(&event, &registry))
            .payload(&value)
            .headers(headers);
        let delivery =
            producer
                .send_result(record)
                .map_err(|(source, _record)| KafkaError::Client {
                    context: format!("queueing a record for {}", options.topic),
                    source,
                })?;
        in_flight.push(delivery);
        sent += 1;
        on_sent(sent);
        if in_flight.len() >= MAX_IN_FLIGHT {
            await_deliveries(&mut in_flight, &options.topic).await?;
        }
    }
    await_deliveries(&mut in_flight, &options.topic).await?;
    Ok(sent)
}

/// Waits for every queued delivery; the first failure is the error.
async fn await_deliveries(
    in_flight: &mut Vec<rdkafka::producer::DeliveryFuture>,
    topic: &str,
) -> Result<(), KafkaError> {
    for delivery in in_flight.drain(..) {
        match delivery.await {
            Ok(Ok(_delivered)) => {}
            Ok(Err((source, _message))) => {
                return Err(KafkaError::Client {
                    context: format!("producing to {topic}"),
                    source,
                })
            }
            Err(_cancelled) => {
                return Err(KafkaError::Client {
                    context: format!("producing to {topic}"),
                    source: rdkafka::error::KafkaError::Canceled,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_key_is_the_community_of_the_event_whatever_identifies_it() {
        let registry = crate::grid::GridRegistry::embedded();
        let cell = registry.cells()[5].clone();
        let device = registry.devices_in_cell(crate::grid::CellIndex(5))[0].clone();
        let mut event = IncidentEvent {
            event_id: "e".to_string(),
            device_id: device.device_id.clone(),
            grid_id: cell.grid_id.clone(),
            ..IncidentEvent::default()
        };
        let community_id = &registry.community(cell.community).id;
        assert_eq!(record_key(&event, &registry), community_id);
        event.grid_id.clear();
        assert_eq!(
            record_key(&event, &registry),
            community_id,
            "by the device's cell"
        );
        event.device_id = "unknown-device".to_string();
        assert_eq!(record_key(&event, &registry), "unknown-device");
        event.device_id.clear();
        assert_eq!(record_key(&event, &registry), "e");
    }

    #[test]
    fn encoded_values_decode_back_to_the_event() {
        let event = IncidentEvent {
            event_id: "e-1".to_string(),
            grid_id: "41060200100101".to_string(),
            ..IncidentEvent::default()
        };
        let protobuf = encode_record_value(&event, KafkaPayloadFormat::Protobuf).unwrap();
        assert_eq!(IncidentEvent::decode(protobuf.as_slice()).unwrap(), event);
        let json = encode_record_value(&event, KafkaPayloadFormat::Json).unwrap();
        let decoded: IncidentEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(decoded, event);
    }
}
