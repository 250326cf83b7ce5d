//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the operator API
//! `/api/v1/cells?top=N&view=15m` (hottest cells now), `/api/v1/alerts` (active alerts) and
//! `/api/v1/fraud` (the fraud target: incidence, drop vs baseline, projection, levers).
//!
//! Handlers only read [`LiveView`], which the pipeline task publishes about once a second
//! through a `watch` channel: no handler ever touches the pipeline's state directly.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::proto::Alert;

/// One cell in the hottest-cells list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellActivity {
    /// 14-digit grid id.
    pub grid_id: String,
    /// 12-digit community id.
    pub community_id: String,
    /// Community name.
    pub community_name: String,
    /// 6-digit district code.
    pub district_code: String,
    /// District name (Chinese).
    pub district_name: String,
    /// Incidents and other events in the view (closed panes plus open ones).
    pub events: u64,
}

/// What the pipeline publishes for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveView {
    /// Current watermark, RFC 3339 (absent before the first event).
    pub watermark: Option<String>,
    /// Spans of the views, e.g. ["15m", "1h", "24h"].
    pub views: Vec<String>,
    /// For each view, the hottest cells (top 100) in descending order.
    pub hottest_cells: Vec<Vec<CellActivity>>,
    /// Firing alerts.
    pub active_alerts: Vec<Alert>,
    /// Version (hash) of the loaded rules.
    pub rules_version: String,
    /// The fraud target report (absent until the first tick).
    pub fraud: Option<crate::fraud::FraudReport>,
}

/// Liveness and readiness signals shared between the pipeline task and the API.
#[derive(Debug, Default)]
pub struct Health {
    /// Wall time (ms) of the pipeline loop's last turn; `/healthz` fails if it is stale.
    pub pipeline_heartbeat_millis: AtomicI64,
    /// Wall time (ms) at which the source last delivered records or reported itself healthy;
    /// 0 until then. `/readyz` needs it.
    pub source_ready_millis: AtomicI64,
    /// The Kafka source's cluster reachability (its metadata probe), once a Kafka source
    /// runs: `/readyz` is not ready while it is false.
    pub kafka_broker_reachable: std::sync::OnceLock<std::sync::Arc<AtomicBool>>,
}

/// A pipeline loop silent longer than this is reported unhealthy.
pub const HEARTBEAT_STALE_MILLIS: i64 = 15_000;

/// A request for one cell's detail, answered by the pipeline task (which owns the panes).
#[derive(Debug)]
pub struct CellQuery {
    /// The 14-digit grid id asked for.
    pub grid_id: String,
    /// Where the answer goes; `None` for a grid id that is not in the registry.
    pub reply: tokio::sync::oneshot::Sender<Option<CellDetail>>,
}

/// One cell as the operator API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellDetail {
    /// Where the cell is.
    #[serde(flatten)]
    pub cell: CellActivity,
    /// Current watermark, RFC 3339.
    pub watermark: Option<String>,
    /// Names of the views the counts are for, e.g. ["15m", "1h", "24h"].
    pub views: Vec<String>,
    /// Events per type name: one count per view (closed and open panes).
    pub events_by_type: std::collections::BTreeMap<String, Vec<u64>>,
    /// The cell's firing alerts.
    pub active_alerts: Vec<Alert>,
}

/// How long a cell query may wait for the pipeline task.
const CELL_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Metrics to encode.
    pub metrics: Arc<Metrics>,
    /// Latest live view.
    pub live: watch::Receiver<Arc<LiveView>>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// Asks the pipeline task about one cell.
    pub cell_queries: tokio::sync::mpsc::Sender<CellQuery>,
    /// The city-wide read model.
    pub read_model: crate::read_model::ReadModel,
}

/// The router with every endpoint.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .route("/api/v1/cells", get(cells_handler))
        .route("/api/v1/cells/{grid_id}", get(cell_handler))
        .route("/api/v1/alerts", get(alerts_handler))
        .route("/api/v1/fraud", get(fraud_handler))
        .with_state(state)
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
    if state.health.source_ready_millis.load(Ordering::Relaxed) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "source not ready\n").into_response();
    }
    let broker_unreachable = state
        .health
        .kafka_broker_reachable
        .get()
        .is_some_and(|reachable| !reachable.load(Ordering::Relaxed));
    if broker_unreachable {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka cluster unreachable\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// Query of `/api/v1/cells`.
#[derive(Debug, Deserialize)]
pub struct CellsQuery {
    /// How many cells (default 10, at most 100).
    pub top: Option<usize>,
    /// Which view, e.g. "15m" (default: the first configured view).
    pub view: Option<String>,
}

/// Most cells `/api/v1/cells` returns.
pub const MAX_TOP_CELLS: usize = 100;

async fn cells_handler(State(state): State<ApiState>, Query(query): Query<CellsQuery>) -> Response {
    let live = state.live.borrow().clone();
    let top = query.top.unwrap_or(10).min(MAX_TOP_CELLS);
    let view_index = match &query.view {
        None => 0,
        Some(view) => match live.views.iter().position(|name| name == view) {
            Some(index) => index,
            None => {
                let message = format!(
                    "unknown view {view:?}; known views: {}",
                    live.views.join(", ")
                );
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({ "error": message })),
                )
                    .into_response();
            }
        },
    };
    let cells: Vec<CellActivity> = live
        .hottest_cells
        .get(view_index)
        .map(|cells| cells.iter().take(top).cloned().collect())
        .unwrap_or_default();
    Json(serde_json::json!({
        "watermark": live.watermark,
        "view": live.views.get(view_index),
        "cells": cells,
    }))
    .into_response()
}

/// Query of `/api/v1/alerts`.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    /// Only alerts of this community (12-digit id), e.g. for community-scope rules.
    pub community: Option<String>,
    /// Only alerts of this grid cell (14-digit id).
    pub grid: Option<String>,
}

async fn alerts_handler(
    State(state): State<ApiState>,
    Query(query): Query<AlertsQuery>,
) -> Response {
    let live = state.live.borrow().clone();
    let alerts: Vec<&Alert> = live
        .active_alerts
        .iter()
        .filter(|alert| {
            query
                .community
                .as_ref()
                .is_none_or(|community| &alert.community_id == community)
        })
        .filter(|alert| {
            query
                .grid
                .as_ref()
                .is_none_or(|grid| &alert.grid_id == grid)
        })
        .collect();
    Json(serde_json::json!({
        "rules_version": live.rules_version,
        "alerts": alerts,
    }))
    .into_response()
}

async fn cell_handler(
    State(state): State<ApiState>,
    axum::extract::Path(grid_id): axum::extract::Path<String>,
) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let query = CellQuery {
        grid_id: grid_id.clone(),
        reply,
    };
    if state.cell_queries.send(query).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "pipeline stopped\n").into_response();
    }
    match tokio::time::timeout(CELL_QUERY_TIMEOUT, answer).await {
        Ok(Ok(Some(detail))) => Json(detail).into_response(),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("grid {grid_id:?} is not a registered cell") })),
        )
            .into_response(),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "pipeline busy\n").into_response(),
    }
}

/// `GET /api/v1/fraud`: the fraud target report (city, districts, communities, furthest
/// behind the target first); 503 until the pipeline has computed it once.
async fn fraud_handler(State(state): State<ApiState>) -> Response {
    let live = state.live.borrow().clone();
    match &live.fraud {
        Some(report) => Json(report).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the fraud report is not computed yet" })),
        )
            .into_response(),
    }
}
