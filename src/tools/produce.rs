//! `gridwatch produce`: the simulator as a Kafka load generator. Records are keyed by
//! community ([`record_key`]), as the Kafka source expects, and carry a `content-type` header.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaPayloadFormat;
use crate::grid::GridRegistry;
use crate::kafka::{KafkaError, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE};
use crate::proto::IncidentEvent;
use crate::source::simulator::{Simulator, SimulatorError, SimulatorSettings};
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
    /// Events per second; `None` sends as fast as the broker acknowledges. Only the sends are
    /// paced: event times are the simulator's, which [`load_generator_simulator`] keeps near
    /// the wall clock (a test replaying a fixed past start paces the simulator's own).
    pub rate_per_second: Option<f64>,
    /// Payload format (and `content-type` header).
    pub format: KafkaPayloadFormat,
    /// librdkafka properties for the producer (e.g. TLS/SASL), applied last.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// The simulator of `gridwatch produce`, timed so that its events stay near the wall clock:
/// the service dead-letters event times more than `ingest.max_clock_skew` ahead of it
/// (`timestamp_out_of_range`), and the simulator's own clock runs at the city's natural rate
/// (about two events a second), far slower than a load generator sends.
///
/// - At `rate_per_second` (sent at that pace from the first event on, see
///   [`produce_simulated`]): the simulator delivers that steady total, duplicate copies
///   included (each hour keeps its mix of types), so that the n-th event occurs about
///   n / rate seconds after `start_millis` (default `now_millis`), as it is sent.
/// - As fast as possible: `start_millis` defaults to where the hourly rates expect `events`
///   events to end at `now_millis` ([`Simulator::start_for_expected_events`]), a backfill
///   of the recent past.
pub fn load_generator_simulator(
    mut settings: SimulatorSettings,
    registry: Arc<GridRegistry>,
    rate_per_second: Option<f64>,
    events: Option<u64>,
    start_millis: Option<i64>,
    now_millis: i64,
) -> Result<Simulator, SimulatorError> {
    settings.start_millis = start_millis.unwrap_or(now_millis);
    if let Some(rate) = rate_per_second {
        settings.steady_rate_per_second = Some(rate);
        return Simulator::new(settings, registry);
    }
    let (None, Some(events)) = (start_millis, events) else {
        return Simulator::new(settings, registry);
    };
    let probe = Simulator::new(settings.clone(), Arc::clone(&registry))?;
    settings.start_millis = probe.start_for_expected_events(events, now_millis);
    Simulator::new(settings, registry)
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

    /// The n-th event's time, in seconds after `now_millis`.
    fn seconds_after(event: &IncidentEvent, now_millis: i64) -> f64 {
        let occurred = crate::time::timestamp_to_millis(event.occurred_at.as_ref().unwrap());
        (occurred - now_millis) as f64 / 1000.0
    }

    #[test]
    fn at_a_rate_the_nth_event_occurs_when_it_is_sent() {
        let now_millis = SimulatorSettings::default().start_millis + 3 * crate::time::HOUR_MILLIS;
        let registry = GridRegistry::embedded();
        for rate in [20.0, 500.0] {
            let mut simulator = load_generator_simulator(
                SimulatorSettings::default(),
                Arc::clone(&registry),
                Some(rate),
                None,
                None,
                now_millis,
            )
            .unwrap();
            let events: Vec<IncidentEvent> = (0..2_000).map(|_| simulator.next_event()).collect();
            // Sent at `rate` from `now`, the 2,000th leaves 2,000 / rate seconds in; its event
            // time is a Poisson arrival (standard deviation √2000 / rate) plus at most 5 s of
            // delivery delay earlier. At the city's natural rate at 03:00 it would occur two
            // hours in.
            let sent_after = 2_000.0 / rate;
            let occurred_after = seconds_after(&events[1_999], now_millis);
            let tolerance = 5.0 * 2_000f64.sqrt() / rate + 5.0;
            assert!(
                (occurred_after - sent_after).abs() <= tolerance,
                "at {rate}/s the 2,000th event occurs {occurred_after} s in, sent {sent_after} s in"
            );
        }
    }

    #[test]
    fn as_fast_as_possible_the_events_end_near_now_and_an_explicit_start_is_kept() {
        let registry = GridRegistry::embedded();
        let midnight = SimulatorSettings::default().start_millis;
        for now_millis in [
            midnight + 4 * crate::time::HOUR_MILLIS,
            midnight + 18 * crate::time::HOUR_MILLIS,
        ] {
            let mut simulator = load_generator_simulator(
                SimulatorSettings::default(),
                Arc::clone(&registry),
                None,
                Some(3_000),
                None,
                now_millis,
            )
            .unwrap();
            assert!(simulator.settings().start_millis < now_millis);
            let last = (0..3_000).map(|_| simulator.next_event()).last().unwrap();
            // 3,000 events are a quarter of an hour of the evening and over three hours of the
            // night (0.2 a second); sent from now they would end three hours ahead. From the
            // expected start they end near now: √3000 ≈ 55 events is 4 min of the night.
            let ends_after = seconds_after(&last, now_millis);
            assert!(
                ends_after.abs() < 1_800.0,
                "the backfill ends {ends_after} s after now"
            );
        }
        let explicit = midnight - crate::time::HOUR_MILLIS;
        let kept = load_generator_simulator(
            SimulatorSettings::default(),
            registry,
            None,
            Some(3_000),
            Some(explicit),
            midnight,
        )
        .unwrap();
        assert_eq!(kept.settings().start_millis, explicit);
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
