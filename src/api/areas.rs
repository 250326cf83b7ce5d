//! Communities and districts (`/api/v1/communities`, `/api/v1/districts`), the fraud report
//! (`/api/v1/fraud`) and the pipeline strip (`/api/v1/status`): whole-city answers read from
//! the snapshot as they are.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::cells::ViewQuery;
use super::problem::{ApiError, Problem};
use super::query::ApiQuery;
use super::ApiState;
use crate::fraud::FraudReport;
use crate::read_model::{AreaView, PipelineStatus};

/// What `/api/v1/communities` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityList {
    /// When the snapshot was built.
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// The view of the counts.
    pub view: String,
    /// Every community, by id.
    pub communities: Vec<AreaView>,
}

/// What `/api/v1/districts` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistrictList {
    /// When the snapshot was built.
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// The view of the counts.
    pub view: String,
    /// Every district, by code.
    pub districts: Vec<AreaView>,
}

/// `GET /api/v1/communities`.
#[utoipa::path(
    get,
    path = "/api/v1/communities",
    tag = "areas",
    params(ViewQuery),
    responses(
        (status = 200, description = "Every community with its counts in the view.", body = CommunityList),
        (status = 400, description = "A bad parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn communities(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ViewQuery>,
) -> Result<Json<CommunityList>, ApiError> {
    let view = state.catalog.view_index(query.view.as_deref())?;
    let snapshot = state.read_model.snapshot();
    let mut communities: Vec<AreaView> = snapshot
        .communities
        .iter()
        .map(|area| area.view(view, false))
        .collect();
    communities.sort_by(|left, right| left.id.cmp(&right.id));
    Ok(Json(CommunityList {
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        view: state.catalog.views.get(view).cloned().unwrap_or_default(),
        communities,
    }))
}

/// `GET /api/v1/districts`.
#[utoipa::path(
    get,
    path = "/api/v1/districts",
    tag = "areas",
    params(ViewQuery),
    responses(
        (status = 200, description = "Every district with its counts in the view.", body = DistrictList),
        (status = 400, description = "A bad parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn districts(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ViewQuery>,
) -> Result<Json<DistrictList>, ApiError> {
    let view = state.catalog.view_index(query.view.as_deref())?;
    let snapshot = state.read_model.snapshot();
    let mut districts: Vec<AreaView> = snapshot
        .districts
        .iter()
        .map(|area| area.view(view, true))
        .collect();
    districts.sort_by(|left, right| left.id.cmp(&right.id));
    Ok(Json(DistrictList {
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        view: state.catalog.views.get(view).cloned().unwrap_or_default(),
        districts,
    }))
}

/// Query of routes without parameters: any parameter is refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

impl super::query::QueryParams for NoQuery {
    const NAMES: &'static [&'static str] = &[];

    fn allowed(_parameter: &str) -> super::problem::Allowed {
        super::problem::Allowed::Values(Vec::new())
    }
}

/// `GET /api/v1/status`.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    responses(
        (status = 200, description = "The pipeline strip over every live instance.", body = PipelineStatus),
        (status = 400, description = "A query parameter was given (none is accepted).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status(
    State(state): State<ApiState>,
    ApiQuery(_no_query): ApiQuery<NoQuery>,
) -> Json<PipelineStatus> {
    Json(state.read_model.snapshot().status.clone())
}

/// `GET /api/v1/fraud`.
#[utoipa::path(
    get,
    path = "/api/v1/fraud",
    tag = "fraud",
    responses(
        (status = 200, description = "The fraud target: city, districts and communities, furthest behind first.", body = FraudReport),
        (status = 400, description = "A query parameter was given (none is accepted).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The report is not computed yet.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn fraud(
    State(state): State<ApiState>,
    ApiQuery(_no_query): ApiQuery<NoQuery>,
) -> Result<Json<FraudReport>, ApiError> {
    match &state.read_model.snapshot().fraud {
        Some(report) => Ok(Json(report.as_ref().clone())),
        None => Err(ApiError::Unavailable(
            "the fraud report is not computed yet".to_string(),
        )),
    }
}
