//! Error answers of the HTTP layer as RFC 9457 problem details (`application/problem+json`),
//! so that clients get one machine-readable error shape for 401, 403, 429 and 503 alike.
//!
//! A problem's `detail` is always a fixed text chosen here: it never echoes a header, a token
//! or anything else the client sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem-details response with `status`, a short `title` and a fixed `detail`.
pub fn problem_response(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_responses_carry_the_problem_media_type_and_status() {
        let response = problem_response(StatusCode::FORBIDDEN, "Forbidden", "admin role needed");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(PROBLEM_JSON))
        );
    }
}
