//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the operator API
//! of `docs/read-model-and-api.md` under `/api/v1/`: [`alerts`], [`cells`] (list, detail,
//! GeoJSON), [`areas`] (communities, districts, fraud, status), [`stream`] (Server-Sent
//! Events) and [`openapi`] (the document generated from these handlers).
//!
//! Handlers read only the city-wide [`ReadModel`] (one atomic snapshot load per request), never
//! the pipeline's state, so every instance answers for the whole city. One convention holds
//! everywhere: snake_case JSON, RFC 3339 `Z` times, enum names as strings, and every error as
//! an `application/problem+json` [`problem::ApiError`] (unknown routes and methods, bad
//! query strings and path values included). Answers are gzip-compressed for clients that
//! accept it (the GeoJSON shrinks several times); the stream is not compressed.

pub mod alerts;
pub mod areas;
pub mod catalog;
pub mod cells;
pub mod openapi;
pub mod problem;
pub mod query;
pub mod stream;
pub mod stream_limits;

pub use openapi::openapi_document;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;

use crate::config::HttpConfig;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::read_model::ReadModel;
use catalog::Catalog;
use stream_limits::{StreamLimits, StreamMetrics};

/// Liveness and readiness signals shared between the pipeline task and the API.
#[derive(Debug, Default)]
pub struct Health {
    /// Wall time (ms) of the pipeline loop's last turn; `/healthz` fails if it is stale.
    pub pipeline_heartbeat_millis: AtomicI64,
    /// Wall time (ms) at which the source last delivered records or reported itself healthy;
    /// 0 until then. `/readyz` needs it.
    pub source_ready_millis: AtomicI64,
    /// The Kafka source's cluster reachability (its metadata probe), once a Kafka source
    /// runs (the instance status of the read model).
    pub kafka_broker_reachable: std::sync::OnceLock<std::sync::Arc<AtomicBool>>,
    /// Whether the Kafka source's cluster ever answered, once a Kafka source runs: `/readyz`
    /// is not ready until it is true (see [`readiness`]).
    pub kafka_broker_seen: std::sync::OnceLock<std::sync::Arc<AtomicBool>>,
}

/// `/readyz`: ready once the source runs and, with Kafka, once the cluster has answered at
/// least once. A later Kafka outage does not make the instance unready: every replica would
/// drop out of the Service at once and the operators' API (alerts, cells, the fraud report)
/// would go dark exactly during the incident. Consumption health is
/// `gridwatch_kafka_broker_up`, `gridwatch_kafka_consumer_lag` and their alerts instead.
pub fn readiness(source_ready: bool, kafka_broker_seen: Option<bool>) -> Result<(), &'static str> {
    if !source_ready {
        return Err("source not ready");
    }
    if kafka_broker_seen == Some(false) {
        return Err("kafka cluster not reached yet");
    }
    Ok(())
}

/// A pipeline loop silent longer than this is reported unhealthy.
pub const HEARTBEAT_STALE_MILLIS: i64 = 15_000;

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    /// The stream metrics could not be registered.
    #[error("registering the stream metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Metrics to encode.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// The city-wide read model every `/api/v1/` answer comes from.
    pub read_model: ReadModel,
    /// What the filters accept, and the cells' geometry.
    pub catalog: Arc<Catalog>,
    /// The stream caps.
    pub streams: StreamLimits,
    /// Ends the open streams at shutdown (they would otherwise hold the server's grace).
    pub shutdown: CancellationToken,
}

impl ApiState {
    /// The state over `read_model`, with the filters of `registry` and `views`, the stream
    /// caps of `http`, and the stream metrics registered on `metrics`.
    pub fn new(
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        read_model: ReadModel,
        registry: &GridRegistry,
        views: Vec<String>,
        http: &HttpConfig,
        shutdown: CancellationToken,
    ) -> Result<ApiState, ApiSetupError> {
        let stream_metrics = StreamMetrics::register(&metrics.registry)?;
        Ok(ApiState {
            metrics,
            health,
            read_model,
            catalog: Arc::new(Catalog::new(registry, views)),
            streams: StreamLimits::new(
                http.max_streams_per_client,
                http.max_streams,
                stream_metrics,
            ),
            shutdown,
        })
    }
}

/// The router with every endpoint; unknown routes and methods answer problems.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/cells", get(cells::list_cells))
        .route("/api/v1/cells.geojson", get(cells::cells_geojson))
        .route("/api/v1/cells/{grid_id}", get(cells::cell_detail))
        .route("/api/v1/communities", get(areas::communities))
        .route("/api/v1/districts", get(areas::districts))
        .route("/api/v1/fraud", get(areas::fraud))
        .route("/api/v1/status", get(areas::status))
        .route("/api/v1/openapi.json", get(openapi::openapi_handler))
        .layer(CompressionLayer::new().gzip(true))
        .route("/api/v1/stream", get(stream::stream));
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .merge(api)
        .fallback(problem::unknown_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
        .merge(crate::console::router())
}

async fn metrics_handler(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode_text(),
    )
        .into_response()
}

async fn healthz_handler(State(state): State<ApiState>) -> Response {
    let heartbeat = state
        .health
        .pipeline_heartbeat_millis
        .load(Ordering::Relaxed);
    let age = crate::time::wall_clock_millis() - heartbeat;
    if heartbeat == 0 || age > HEARTBEAT_STALE_MILLIS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("pipeline loop stalled for {age} ms\n"),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz_handler(State(state): State<ApiState>) -> Response {
    let source_ready = state.health.source_ready_millis.load(Ordering::Relaxed) != 0;
    let kafka_broker_seen = state
        .health
        .kafka_broker_seen
        .get()
        .map(|seen| seen.load(Ordering::Relaxed));
    match readiness(source_ready, kafka_broker_seen) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::readiness;

    #[test]
    fn not_ready_until_the_source_runs_and_kafka_has_answered_once() {
        assert_eq!(readiness(false, None), Err("source not ready"));
        assert_eq!(
            readiness(true, Some(false)),
            Err("kafka cluster not reached yet")
        );
        assert_eq!(readiness(true, None), Ok(()));
        assert_eq!(readiness(true, Some(true)), Ok(()));
    }
}
