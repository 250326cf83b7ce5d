//! Cells: the busiest cells of a view (`/api/v1/cells`), one cell's detail
//! (`/api/v1/cells/{grid_id}`), and every cell as GeoJSON with its counts
//! (`/api/v1/cells.geojson`, for the console's map, Grafana's geomap and GIS tools).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::catalog::PolygonGeometry;
use super::problem::{Allowed, ApiError, Problem};
use super::query::{bounded, cursor_allowed, limit_range, paginate, ApiQuery, QueryParams};
use super::ApiState;
use crate::read_model::{AlertView, CellState, CellView, RecentWindow, WindowView};

/// Default number of cells of `/api/v1/cells`.
pub const DEFAULT_TOP_CELLS: u32 = 10;
/// Most cells one page of `/api/v1/cells` holds.
pub const MAX_TOP_CELLS: u32 = 100;
/// The media type of GeoJSON (RFC 7946).
pub const GEOJSON: &str = "application/geo+json";

/// Query of `/api/v1/cells`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CellsQuery {
    /// View name, e.g. `15m` (default: the first configured view).
    pub view: Option<String>,
    /// Cells per page, 1–100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub top: Option<u32>,
    /// Only cells of this district (6-digit code).
    pub district: Option<String>,
    /// Only cells of this community (12-digit id).
    pub community: Option<String>,
    /// Rank by this event type's count (cells without it are left out).
    pub event_type: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl QueryParams for CellsQuery {
    const NAMES: &'static [&'static str] = &[
        "view",
        "top",
        "district",
        "community",
        "event_type",
        "cursor",
    ];

    fn allowed(parameter: &str) -> Allowed {
        match parameter {
            "top" => limit_range(MAX_TOP_CELLS),
            "cursor" => cursor_allowed(),
            _ => Allowed::values(["a value listed by the 400 of an unknown one"]),
        }
    }
}

/// Query with a view only (`/api/v1/cells.geojson`, `/api/v1/cells/{grid_id}`, areas).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// View name, e.g. `1h` (default: the first configured view).
    pub view: Option<String>,
}

impl QueryParams for ViewQuery {
    const NAMES: &'static [&'static str] = &["view"];

    fn allowed(_parameter: &str) -> Allowed {
        Allowed::values(["a configured view name, e.g. 15m"])
    }
}

/// What `/api/v1/cells` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellList {
    /// When the snapshot was built.
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// The view of the counts.
    pub view: String,
    /// Cells with events, most first.
    pub cells: Vec<CellView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// What `/api/v1/cells/{grid_id}` answers: the cell, its last panes and its alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellDetail {
    /// The cell in the requested view.
    #[serde(flatten)]
    pub cell: CellView,
    /// When the snapshot was built.
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// The view of `events` and `events_by_type`.
    pub view: String,
    /// Its last closed panes, newest first (at most 60).
    pub windows: Vec<WindowView>,
    /// Its firing and recently resolved alerts.
    pub alerts: Vec<AlertView>,
}

/// `GET /api/v1/cells`.
#[utoipa::path(
    get,
    path = "/api/v1/cells",
    tag = "cells",
    params(CellsQuery),
    responses(
        (status = 200, description = "Cells with events in the view, most first.", body = CellList),
        (status = 400, description = "A bad parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_cells(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<CellsQuery>,
) -> Result<Json<CellList>, ApiError> {
    let catalog = &state.catalog;
    let view = catalog.view_index(query.view.as_deref())?;
    let top = bounded("top", query.top, DEFAULT_TOP_CELLS, MAX_TOP_CELLS)?;
    let district = query
        .district
        .as_deref()
        .map(|id| catalog.district(id))
        .transpose()?;
    let community = query
        .community
        .as_deref()
        .map(|id| catalog.community(id))
        .transpose()?;
    let event_type = query
        .event_type
        .as_deref()
        .map(|name| catalog.event_type(name))
        .transpose()?;
    let snapshot = state.read_model.snapshot();
    let mut ranked: Vec<(u64, CellView)> = snapshot
        .ranked_cells(view)
        .filter(|cell| district.is_none_or(|id| cell.place.district_id == id))
        .filter(|cell| community.is_none_or(|id| cell.place.community_id == id))
        .map(|cell| cell.view(view))
        .filter_map(|cell| {
            let rank = match event_type {
                Some(name) => cell.events_by_type.get(name).copied().unwrap_or(0),
                None => cell.events,
            };
            (rank > 0).then_some((rank, cell))
        })
        .collect();
    ranked.sort_by_cached_key(|(rank, cell)| cell_sort_key(*rank, cell));
    let list = format!(
        "cells:{}:{}:{}:{}",
        catalog
            .views
            .get(view)
            .map(String::as_str)
            .unwrap_or_default(),
        district.unwrap_or_default(),
        community.unwrap_or_default(),
        event_type.unwrap_or_default()
    );
    let page = paginate(
        ranked,
        |(rank, cell)| cell_sort_key(*rank, cell),
        &list,
        query.cursor.as_deref(),
        top,
    )?;
    Ok(Json(CellList {
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        view: catalog.views.get(view).cloned().unwrap_or_default(),
        cells: page.items.into_iter().map(|(_, cell)| cell).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Most events first, then by grid id (unique keys for the cursor).
fn cell_sort_key(rank: u64, cell: &CellView) -> (u64, String) {
    (
        u64::MAX - rank,
        cell.place.grid_id.clone().unwrap_or_default(),
    )
}

/// `GET /api/v1/cells/{grid_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/cells/{grid_id}",
    tag = "cells",
    params(("grid_id" = String, Path, description = "14-digit grid id"), ViewQuery),
    responses(
        (status = 200, description = "The cell, its last closed panes and its alerts.", body = CellDetail),
        (status = 400, description = "A bad parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No registered cell has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cell_detail(
    State(state): State<ApiState>,
    grid_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ApiQuery(query): ApiQuery<ViewQuery>,
) -> Result<Json<CellDetail>, ApiError> {
    let Path(grid_id) = grid_id.map_err(|_| {
        ApiError::bad_parameter(
            "grid_id",
            "the grid id is not valid UTF-8 text",
            Allowed::values(["a 14-digit grid id"]),
        )
    })?;
    let view = state.catalog.view_index(query.view.as_deref())?;
    let snapshot = state.read_model.snapshot();
    let Some(cell) = snapshot.cell(&grid_id) else {
        return Err(ApiError::NotFound(
            "no registered grid cell has this id".to_string(),
        ));
    };
    let alerts = snapshot
        .alerts
        .iter()
        .filter(|alert| alert.place.grid_id.as_deref() == Some(grid_id.as_str()))
        .map(|alert| alert.as_ref().clone())
        .collect();
    Ok(Json(CellDetail {
        cell: cell.view(view),
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        view: state.catalog.views.get(view).cloned().unwrap_or_default(),
        windows: cell.recent_windows.iter().map(RecentWindow::view).collect(),
        alerts,
    }))
}

/// The GeoJSON properties of a cell: the `Cell` fields except `centroid` (the geometry says
/// where it is).
#[derive(Debug, Serialize, ToSchema)]
pub struct CellProperties {
    /// 14-digit grid id.
    pub grid_id: String,
    /// 12-digit community id.
    pub community_id: String,
    /// Community name (Chinese).
    pub community_name: String,
    /// 6-digit district code.
    pub district_id: String,
    /// District name (Chinese).
    pub district_name: String,
    /// District name (English).
    pub district_name_en: String,
    /// Events in the view.
    pub events: u64,
    /// Events in the view per event type name.
    pub events_by_type: std::collections::BTreeMap<String, u64>,
    /// Firing alerts about the cell.
    pub firing_alerts: u32,
    /// Whether one of them is life safety.
    pub life_safety_firing: bool,
}

/// One cell as a GeoJSON feature.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellFeature {
    /// Always `Feature`.
    #[serde(rename = "type")]
    #[schema(example = "Feature")]
    pub feature_type: String,
    /// The grid id.
    pub id: String,
    /// The cell's polygon (WGS-84).
    pub geometry: PolygonGeometry,
    /// Names and counts.
    pub properties: CellProperties,
}

/// What `/api/v1/cells.geojson` answers: a GeoJSON `FeatureCollection` of every cell.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellFeatureCollection {
    /// Always `FeatureCollection`.
    #[serde(rename = "type")]
    #[schema(example = "FeatureCollection")]
    pub collection_type: String,
    /// When the snapshot was built (a foreign member, allowed by RFC 7946).
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// The view of the counts.
    pub view: String,
    /// Every registered cell, in registry order.
    pub features: Vec<CellFeature>,
}

fn cell_feature(cell: &CellState, view: usize, geometry: PolygonGeometry) -> CellFeature {
    let counts = cell.view(view);
    let place = counts.place;
    let grid_id = place.grid_id.unwrap_or_default();
    CellFeature {
        feature_type: "Feature".to_string(),
        id: grid_id.clone(),
        geometry,
        properties: CellProperties {
            grid_id,
            community_id: place.community_id,
            community_name: place.community_name,
            district_id: place.district_id,
            district_name: place.district_name,
            district_name_en: place.district_name_en,
            events: counts.events,
            events_by_type: counts.events_by_type,
            firing_alerts: counts.firing_alerts,
            life_safety_firing: counts.life_safety_firing,
        },
    }
}

/// `GET /api/v1/cells.geojson`.
#[utoipa::path(
    get,
    path = "/api/v1/cells.geojson",
    tag = "cells",
    params(ViewQuery),
    responses(
        (status = 200, description = "Every cell polygon with its names and counts in the view (gzip with Accept-Encoding: gzip).", body = CellFeatureCollection, content_type = "application/geo+json"),
        (status = 400, description = "A bad parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cells_geojson(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ViewQuery>,
) -> Result<Response, ApiError> {
    let view = state.catalog.view_index(query.view.as_deref())?;
    let snapshot = state.read_model.snapshot();
    let features = snapshot
        .cells
        .iter()
        .zip(&state.catalog.cell_geometries)
        .map(|(cell, geometry)| cell_feature(cell, view, geometry.clone()))
        .collect();
    let collection = CellFeatureCollection {
        collection_type: "FeatureCollection".to_string(),
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        view: state.catalog.views.get(view).cloned().unwrap_or_default(),
        features,
    };
    let body = serde_json::to_vec(&collection)
        .map_err(|_| ApiError::Unavailable("the GeoJSON could not be written".to_string()))?;
    Ok(([(header::CONTENT_TYPE, GEOJSON)], body).into_response())
}
