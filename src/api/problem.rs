//! The API's error answers: every 4xx/5xx of `/api/v1/*` (unknown routes and rejected
//! extractors included) is an RFC 9457 `application/problem+json` body, and a bad parameter
//! names itself (`parameter`) and what it accepts (`allowed`), so that a client can fix its
//! request without reading the docs.
//!
//! Like [`crate::http::problem`], a `detail` never echoes the value the client sent: it names
//! the parameter and the accepted values only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::problem::PROBLEM_JSON;

/// What a bad parameter accepts: a list of values, or an inclusive integer range.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Allowed {
    /// The accepted values (e.g. view names, event type names, district ids).
    Values(Vec<String>),
    /// The accepted inclusive range (e.g. `limit` 1–500).
    Range {
        /// Smallest accepted value.
        minimum: i64,
        /// Largest accepted value.
        maximum: i64,
    },
}

impl Allowed {
    /// The values of `names`, as owned strings.
    pub fn values<I, S>(names: I) -> Allowed
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Allowed::Values(names.into_iter().map(Into::into).collect())
    }
}

/// An RFC 9457 problem document as the API sends it (the OpenAPI schema of every error).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` (the status says it all).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short, fixed summary of the status (e.g. "Bad Request").
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// The query or path parameter that was rejected, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What that parameter accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Allowed>,
}

/// Why an API request failed; answered as a [`Problem`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter is unknown, malformed or out of range.
    #[error("parameter {parameter}: {detail}")]
    BadParameter {
        /// The parameter's name.
        parameter: String,
        /// What is wrong with it (never the value itself).
        detail: String,
        /// What it accepts.
        allowed: Allowed,
    },
    /// The request could not be read at all (e.g. an undecodable query string).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The route or the resource does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client (or everyone) holds too many streams.
    #[error("too many streams: {0}")]
    TooManyStreams(String),
    /// The answer is not available yet (e.g. before the first report).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// A bad parameter with its allowed values.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>, allowed: Allowed) -> ApiError {
        ApiError::BadParameter {
            parameter: parameter.to_string(),
            detail: detail.into(),
            allowed,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        let (detail, parameter, allowed) = match self {
            ApiError::BadParameter {
                parameter,
                detail,
                allowed,
            } => (
                detail.clone(),
                Some(parameter.clone()),
                Some(allowed.clone()),
            ),
            ApiError::BadRequest(detail)
            | ApiError::NotFound(detail)
            | ApiError::TooManyStreams(detail)
            | ApiError::Unavailable(detail) => (detail.clone(), None, None),
            ApiError::MethodNotAllowed => (
                "this route does not answer this method (the API is read-only: GET)".to_string(),
                None,
                None,
            ),
        };
        Problem {
            problem_type: "about:blank".to_string(),
            title,
            status: status.as_u16(),
            detail,
            parameter,
            allowed,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_string(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The router's fallback: an unknown route is a 404 problem.
pub async fn unknown_route() -> ApiError {
    ApiError::NotFound(
        "no such route; the API's routes are listed in /api/v1/openapi.json".to_string(),
    )
}

/// The router's fallback for a known route asked with another method: a 405 problem.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The parameter and allowed values of a [`ApiError::BadParameter`] (tests of the
/// extractors and the catalog).
#[cfg(test)]
pub(crate) fn bad_parameter_of(error: ApiError) -> (String, Allowed) {
    match error {
        ApiError::BadParameter {
            parameter, allowed, ..
        } => (parameter, allowed),
        other => panic!("expected a bad parameter, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_parameter_names_itself_and_its_allowed_values() {
        let error = ApiError::bad_parameter(
            "view",
            "unknown view",
            Allowed::values(["15m", "1h", "24h"]),
        );
        let json = serde_json::to_value(error.problem()).unwrap();
        assert_eq!(json["status"], 400);
        assert_eq!(json["title"], "Bad Request");
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["parameter"], "view");
        assert_eq!(json["allowed"], serde_json::json!(["15m", "1h", "24h"]));
    }

    #[test]
    fn a_range_is_named_by_its_bounds_and_other_problems_carry_no_parameter() {
        let error = ApiError::bad_parameter(
            "limit",
            "above the cap",
            Allowed::Range {
                minimum: 1,
                maximum: 500,
            },
        );
        let json = serde_json::to_value(error.problem()).unwrap();
        assert_eq!(
            json["allowed"],
            serde_json::json!({"minimum": 1, "maximum": 500})
        );
        let missing = serde_json::to_value(ApiError::NotFound("x".into()).problem()).unwrap();
        assert_eq!(missing["status"], 404);
        assert!(missing.get("parameter").is_none());
    }

    #[tokio::test]
    async fn errors_answer_with_the_problem_media_type() {
        let response = unknown_route().await.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
    }
}
