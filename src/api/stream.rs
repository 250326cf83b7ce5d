//! `GET /api/v1/stream`: Server-Sent Events from the read model's change feed. A client gets
//! the events after its `Last-Event-ID` from the replay buffer (or one `reset` when it is too
//! far behind), then the live events, each with its `id:`; a `: keep-alive` comment every 15 s
//! keeps proxies from closing an idle stream.
//!
//! The feed's writer never waits: live events come through a bounded broadcast channel, and a
//! client that falls behind it (its connection too slow to take them) is disconnected and
//! counted (`gridwatch_stream_clients_dropped_total{reason="slow_client"}`); it reconnects with
//! its `Last-Event-ID` and resumes. Streams are capped per client and in total
//! ([`super::stream_limits`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::areas::NoQuery;
use super::problem::{Allowed, ApiError, Problem};
use super::query::ApiQuery;
use super::stream_limits::{DropReason, StreamMetrics, StreamPermit};
use super::ApiState;
use crate::http::limits::ClientAddress;
use crate::read_model::{Resume, StreamEvent};

/// Interval of the keep-alive comments.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The SSE event of one feed event.
fn sse_event(event: &StreamEvent) -> Event {
    let sse = Event::default()
        .id(event.id.to_string())
        .event(event.payload.event_name());
    match sse.clone().json_data(&event.payload) {
        Ok(with_data) => with_data,
        // Serializing plain views does not fail; should it, the client still sees the id.
        Err(_) => sse.data("{}"),
    }
}

/// The `reset` event: the client must re-read the REST endpoints.
fn reset_event(current_id: u64) -> Event {
    Event::default()
        .id(current_id.to_string())
        .event("reset")
        .data("{}")
}

/// One client's stream state.
struct ClientStream {
    /// Events to send before the live ones (the replay, or the reset).
    first: VecDeque<Event>,
    live: broadcast::Receiver<Arc<StreamEvent>>,
    /// The newest id sent (live events at or before it are not sent twice).
    last_id: u64,
    shutdown: CancellationToken,
    metrics: StreamMetrics,
    /// Held while the stream lives: its drop frees the client's place.
    _permit: StreamPermit,
}

impl ClientStream {
    /// The next event; `None` ends the stream (shutdown, or a client too slow to keep up).
    async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.first.pop_front() {
            return Some(event);
        }
        loop {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) if event.id <= self.last_id => continue,
                Ok(event) => {
                    self.last_id = event.id;
                    return Some(sse_event(&event));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.metrics.count_drop(DropReason::SlowClient);
                    tracing::debug!("stream client dropped: it fell behind the live feed");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn client_events(client: ClientStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(client, |mut client| async move {
        let event = client.next_event().await?;
        Some((Ok(event), client))
    })
}

/// The `Last-Event-ID` header as a number; a malformed one is a 400.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|text| text.parse::<u64>().ok());
    match parsed {
        Some(id) => Ok(Some(id)),
        None => Err(ApiError::bad_parameter(
            "Last-Event-ID",
            "the Last-Event-ID header is not an event id of this stream",
            Allowed::values(["the id: of the last event received"]),
        )),
    }
}

/// `GET /api/v1/stream`.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    params(("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "Server-Sent Events: `alert` (AlertView), `cells` (CellsChange), `status` (PipelineStatus), `fraud` (FraudReport), `reset` ({}).", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed Last-Event-ID or a query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client, or the server, holds its maximum of streams.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stream(
    State(state): State<ApiState>,
    client: Option<axum::Extension<ClientAddress>>,
    headers: HeaderMap,
    ApiQuery(_no_query): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let last_event_id = last_event_id(&headers)?;
    let address = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |client| client.0 .0);
    let permit = state.streams.admit(address)?;
    let subscription = state.read_model.subscribe(last_event_id);
    let (first, last_id) = match subscription.resume {
        Resume::Reset => (
            VecDeque::from([reset_event(subscription.current_id)]),
            subscription.current_id,
        ),
        Resume::Replay(events) => {
            let last_id = events
                .last()
                .map_or(last_event_id.unwrap_or(0), |event| event.id);
            (
                events.iter().map(|event| sse_event(event)).collect(),
                last_id,
            )
        }
    };
    let client = ClientStream {
        first,
        live: subscription.live,
        last_id,
        shutdown: state.shutdown.clone(),
        metrics: state.streams.metrics().clone(),
        _permit: permit,
    };
    let keep_alive = KeepAlive::new()
        .interval(KEEP_ALIVE_INTERVAL)
        .text("keep-alive");
    Ok(Sse::new(client_events(client))
        .keep_alive(keep_alive)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stream_limits::StreamLimits;
    use crate::read_model::{CellsChange, StreamPayload};

    fn event(id: u64) -> Arc<StreamEvent> {
        Arc::new(StreamEvent {
            id,
            payload: StreamPayload::Cells(CellsChange {
                watermark: None,
                views: vec!["15m".to_string()],
                cells: Vec::new(),
            }),
        })
    }

    fn client(
        live: broadcast::Receiver<Arc<StreamEvent>>,
        last_id: u64,
    ) -> (ClientStream, StreamLimits) {
        let registry = prometheus::Registry::new();
        let limits = StreamLimits::new(1, 1, StreamMetrics::register(&registry).unwrap());
        let permit = limits.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let client = ClientStream {
            first: VecDeque::new(),
            live,
            last_id,
            shutdown: CancellationToken::new(),
            metrics: limits.metrics().clone(),
            _permit: permit,
        };
        (client, limits)
    }

    #[tokio::test]
    async fn live_events_already_replayed_are_not_sent_twice() {
        let (sender, receiver) = broadcast::channel(8);
        let (mut client, _limits) = client(receiver, 11);
        for id in [10, 11, 12] {
            sender.send(event(id)).unwrap();
        }
        assert!(client.next_event().await.is_some());
        assert_eq!(client.last_id, 12, "10 and 11 were skipped");
    }

    #[tokio::test]
    async fn a_client_behind_the_live_feed_is_dropped_counted_and_frees_its_place() {
        let (sender, receiver) = broadcast::channel(2);
        let (mut client, limits) = client(receiver, 0);
        for id in 1..=5 {
            sender.send(event(id)).unwrap();
        }
        assert!(client.next_event().await.is_none(), "the stream ends");
        assert_eq!(
            limits
                .metrics()
                .dropped
                .with_label_values(&["slow_client"])
                .get(),
            1
        );
        assert!(limits.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_err());
        drop(client);
        assert!(limits.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok());
    }

    #[tokio::test]
    async fn shutdown_ends_an_idle_stream() {
        let (_sender, receiver) = broadcast::channel(2);
        let (mut client, _limits) = client(receiver, 0);
        client.shutdown.cancel();
        assert!(client.next_event().await.is_none());
    }

    #[test]
    fn a_malformed_last_event_id_is_a_bad_parameter() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers).unwrap(), None);
        headers.insert("last-event-id", "42".parse().unwrap());
        assert_eq!(last_event_id(&headers).unwrap(), Some(42));
        headers.insert("last-event-id", "x".parse().unwrap());
        assert!(matches!(
            last_event_id(&headers),
            Err(ApiError::BadParameter { .. })
        ));
    }
}
