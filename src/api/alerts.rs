//! `GET /api/v1/alerts`: the city's firing alerts (life safety first, then severity 1→4, then
//! oldest start) and those resolved in the last 15 minutes (newest end first), filtered and
//! paginated. The order is the snapshot's; the cursor is the position in that order, so a
//! page boundary holds while alerts change between two requests.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::catalog::{alert_status, severity, severity_allowed, ALERT_STATUSES};
use super::problem::{Allowed, ApiError, Problem};
use super::query::{
    cursor_allowed, limit_range, page_limit, paginate, ApiQuery, QueryParams, MAX_LIMIT,
};
use super::ApiState;
use crate::read_model::AlertView;
use crate::rules::RULE_KIND_NAMES;

/// Query of `/api/v1/alerts`: every filter is optional, and all given filters must match.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `FIRING` or `RESOLVED`.
    pub status: Option<String>,
    /// 1 (most urgent) to 4.
    #[param(minimum = 1, maximum = 4)]
    pub severity: Option<u8>,
    /// Rule name, e.g. `fire_immediate`.
    pub rule: Option<String>,
    /// `immediate`, `threshold`, `spike`, `cusum`, `data_gap` or `scan`.
    pub rule_kind: Option<String>,
    /// Event type name, e.g. `FIRE_SMOKE`.
    pub event_type: Option<String>,
    /// 6-digit district code.
    pub district: Option<String>,
    /// 12-digit community id.
    pub community: Option<String>,
    /// 14-digit grid id.
    pub grid: Option<String>,
    /// Only life-safety alerts (`true`) or only the others (`false`).
    pub life_safety: Option<bool>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl QueryParams for AlertsQuery {
    const NAMES: &'static [&'static str] = &[
        "status",
        "severity",
        "rule",
        "rule_kind",
        "event_type",
        "district",
        "community",
        "grid",
        "life_safety",
        "limit",
        "cursor",
    ];

    fn allowed(parameter: &str) -> Allowed {
        match parameter {
            "status" => Allowed::values(ALERT_STATUSES),
            "severity" => severity_allowed(),
            "rule_kind" => Allowed::values(RULE_KIND_NAMES.iter().copied()),
            "life_safety" => Allowed::values(["true", "false"]),
            "limit" => limit_range(MAX_LIMIT),
            "cursor" => cursor_allowed(),
            _ => Allowed::values(["a name or id as the alerts carry it"]),
        }
    }
}

/// What `/api/v1/alerts` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// When the snapshot was built.
    pub generated_at: String,
    /// End of the newest closed pane.
    pub watermark: Option<String>,
    /// Version (hash) of the rules.
    pub rules_version: String,
    /// The page of alerts.
    pub alerts: Vec<AlertView>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// The validated filters.
struct AlertFilter {
    status: Option<String>,
    severity: Option<u32>,
    rule: Option<String>,
    rule_kind: Option<String>,
    event_type: Option<String>,
    district: Option<String>,
    community: Option<String>,
    grid: Option<String>,
    life_safety: Option<bool>,
}

impl AlertFilter {
    fn matches(&self, alert: &AlertView) -> bool {
        let equal = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == actual)
        };
        equal(&self.status, &alert.status)
            && self.severity.is_none_or(|wanted| wanted == alert.severity)
            && equal(&self.rule, &alert.rule)
            && equal(&self.rule_kind, &alert.rule_kind)
            && equal(&self.event_type, &alert.event_type)
            && equal(&self.district, &alert.place.district_id)
            && equal(&self.community, &alert.place.community_id)
            && equal(
                &self.grid,
                alert.place.grid_id.as_deref().unwrap_or_default(),
            )
            && self
                .life_safety
                .is_none_or(|wanted| wanted == alert.life_safety)
    }
}

fn validated(state: &ApiState, query: &AlertsQuery) -> Result<AlertFilter, ApiError> {
    let catalog = &state.catalog;
    let rule_kind = match &query.rule_kind {
        Some(kind) if !RULE_KIND_NAMES.contains(&kind.as_str()) => {
            return Err(ApiError::bad_parameter(
                "rule_kind",
                "unknown rule kind",
                Allowed::values(RULE_KIND_NAMES.iter().copied()),
            ))
        }
        other => other.clone(),
    };
    let grid = match &query.grid {
        Some(grid)
            if state
                .read_model
                .snapshot()
                .registry
                .cell_by_grid_id(grid)
                .is_none() =>
        {
            return Err(ApiError::bad_parameter(
                "grid",
                "not a registered grid cell",
                Allowed::values(["a 14-digit grid id of the registry (see /api/v1/cells.geojson)"]),
            ))
        }
        other => other.clone(),
    };
    let rule = match &query.rule {
        Some(rule) if !is_rule_name(rule) => {
            return Err(ApiError::bad_parameter(
                "rule",
                "not a rule name",
                Allowed::values(["a rule name of the rules file: 1-64 of a-z, 0-9, _ and -"]),
            ))
        }
        other => other.clone(),
    };
    Ok(AlertFilter {
        status: query
            .status
            .as_deref()
            .map(alert_status)
            .transpose()?
            .map(str::to_string),
        severity: query.severity.map(severity).transpose()?.map(u32::from),
        rule,
        rule_kind,
        event_type: query
            .event_type
            .as_deref()
            .map(|name| catalog.event_type(name))
            .transpose()?
            .map(str::to_string),
        district: query
            .district
            .as_deref()
            .map(|id| catalog.district(id))
            .transpose()?
            .map(str::to_string),
        community: query
            .community
            .as_deref()
            .map(|id| catalog.community(id))
            .transpose()?
            .map(str::to_string),
        grid,
        life_safety: query.life_safety,
    })
}

/// `GET /api/v1/alerts`.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, description = "Firing alerts, then recently resolved ones.", body = AlertList),
        (status = 400, description = "A bad parameter (named, with its allowed values).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_alerts(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AlertsQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = page_limit(query.limit)?;
    let filter = validated(&state, &query)?;
    let snapshot = state.read_model.snapshot();
    let mut matching: Vec<&AlertView> = snapshot
        .alerts
        .iter()
        .map(AsRef::as_ref)
        .filter(|alert| filter.matches(alert))
        .collect();
    matching.sort_by_cached_key(|alert| alert_sort_key(alert));
    let page = paginate(
        matching,
        |alert| alert_sort_key(alert),
        "alerts",
        query.cursor.as_deref(),
        limit,
    )?;
    Ok(Json(AlertList {
        generated_at: snapshot.generated_at(),
        watermark: snapshot.watermark(),
        rules_version: snapshot.rules_version.clone(),
        alerts: page.items.into_iter().cloned().collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Whether `rule` can be a rule name (the rules file's names are short snake_case words).
fn is_rule_name(rule: &str) -> bool {
    (1..=64).contains(&rule.len())
        && rule
            .chars()
            .all(|character| matches!(character, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// The sort key of an alert as the contract orders them: firing before resolved; firing by
/// life safety, severity, oldest start; resolved by newest end; the fingerprint last, so keys
/// are unique and a cursor (the last key served) holds while alerts change.
fn alert_sort_key(alert: &AlertView) -> (u8, u8, u32, String, String, String) {
    if alert.is_firing() {
        return (
            0,
            u8::from(!alert.life_safety),
            alert.severity,
            alert.starts_at.clone(),
            String::new(),
            alert.fingerprint.clone(),
        );
    }
    // Newest end first: the ends are RFC 3339 texts of one format, so inverting their digits
    // reverses their order.
    let inverted: String = alert
        .ends_at
        .as_deref()
        .unwrap_or_default()
        .chars()
        .map(|character| match character.to_digit(10) {
            Some(digit) => char::from_digit(9 - digit, 10).unwrap_or(character),
            None => character,
        })
        .collect();
    (1, 0, 0, String::new(), inverted, alert.fingerprint.clone())
}
