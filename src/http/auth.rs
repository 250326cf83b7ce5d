//! Bearer-token authentication with two roles: `viewer` (console, read API, and `/metrics`
//! when it is protected) and `admin` (everything a viewer may, plus routes that change state,
//! `/api/v1/admin/*`). `/healthz` and `/readyz` are always open so that probes need no secret.
//!
//! Tokens come from `http.tokens_file` and/or the `GRIDWATCH_HTTP_TOKENS` variable, never from
//! the command line (visible to every user in `ps`) nor from the config itself (printed by
//! `check-config`). Format, one entry per line or comma-separated (handy in a variable):
//!
//! ```text
//! # role   token (at least 16 visible ASCII characters, no spaces or commas)
//! viewer   3f0c8e1d9b7a4c2e6f1a0b9c8d7e6f5a
//! admin    9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d
//! ```
//!
//! Only SHA-256 digests of the tokens are kept in memory, and a presented token is compared
//! with every digest in constant time, so neither a memory dump nor response timing gives a
//! token away. Errors name the file and the line number, never a line's content.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::problem::problem_response;
use crate::config::{HttpConfig, HTTP_TOKENS_VARIABLE};

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read the console, the API and (when protected) `/metrics`.
    Viewer,
    /// Everything a viewer may, plus state-changing routes.
    Admin,
}

impl Role {
    /// Parses a role name of the token file.
    fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may use a route that needs `required`.
    pub fn grants(self, required: Role) -> bool {
        self >= required
    }
}

/// Why the tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The tokens file could not be read.
    #[error("cannot read http.tokens_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `<role> <token>` (its content is not shown: it may hold a secret).
    #[error("{origin} line {line_number}: {problem}")]
    Line {
        /// The file path or the variable name.
        origin: String,
        /// 1-based line (or entry) number.
        line_number: usize,
        /// What is wrong, without the line's content.
        problem: &'static str,
    },
    /// The file or variable holds no token at all.
    #[error("{origin} holds no token: add `viewer <token>` and `admin <token>` lines")]
    Empty {
        /// The file path or the variable name.
        origin: String,
    },
}

/// The configured tokens, as SHA-256 digests with their roles.
#[derive(Clone)]
pub struct ApiTokens {
    digests: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests stay out of logs too: they would allow offline guessing.
        write!(formatter, "ApiTokens({} tokens)", self.digests.len())
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two digests that takes the same time wherever they differ.
fn digests_equal(left: &[u8; 32], right: &[u8; 32]) -> bool {
    let difference = left
        .iter()
        .zip(right.iter())
        .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
    std::hint::black_box(difference) == 0
}

fn is_token_character(character: char) -> bool {
    character.is_ascii_graphic() && character != ','
}

/// The token and role of one `<role> <token>` entry, or what is wrong with it.
fn parse_entry(entry: &str) -> Result<(&str, Role), &'static str> {
    let mut words = entry.split_whitespace();
    let (Some(role_name), Some(token), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected `<role> <token>`");
    };
    let role = Role::parse(role_name).ok_or("unknown role (expected viewer or admin)")?;
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err("token shorter than 16 characters");
    }
    if !token.chars().all(is_token_character) {
        return Err("token must be visible ASCII without commas");
    }
    Ok((token, role))
}

impl ApiTokens {
    /// Parses token entries (`<role> <token>`, one per line or several separated by commas;
    /// `#` comment lines and blank entries skipped).
    pub fn parse(text: &str, origin: &str) -> Result<ApiTokens, TokenError> {
        let mut digests = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            for entry in line.split(',').map(str::trim) {
                if entry.is_empty() {
                    continue;
                }
                let (token, role) = parse_entry(entry).map_err(|problem| TokenError::Line {
                    origin: origin.to_string(),
                    line_number: index + 1,
                    problem,
                })?;
                digests.push((token_digest(token), role));
            }
        }
        if digests.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_string(),
            });
        }
        Ok(ApiTokens { digests })
    }

    /// The tokens of `http.tokens_file` and `GRIDWATCH_HTTP_TOKENS` together; `None` when
    /// neither is set (the API is then open, which validation allows on loopback only).
    pub fn load(config: &HttpConfig) -> Result<Option<ApiTokens>, TokenError> {
        let mut digests = Vec::new();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file = ApiTokens::parse(&text, &path.display().to_string())?;
            digests.extend(from_file.digests);
        }
        if let Some(text) = std::env::var_os(HTTP_TOKENS_VARIABLE).filter(|text| !text.is_empty()) {
            let text = text.to_string_lossy();
            let from_variable = ApiTokens::parse(&text, HTTP_TOKENS_VARIABLE)?;
            digests.extend(from_variable.digests);
        }
        if digests.is_empty() {
            return Ok(None);
        }
        Ok(Some(ApiTokens { digests }))
    }

    /// The highest role of `presented`, if it is a configured token. Every digest is compared,
    /// whatever matched, so the time taken does not say which entry (if any) matched.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented_digest = token_digest(presented);
        self.digests
            .iter()
            .filter(|(digest, _)| digests_equal(digest, &presented_digest))
            .map(|(_, role)| *role)
            .max()
    }
}

/// Who may use which route.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// The configured tokens; `None` leaves every route open.
    pub tokens: Option<Arc<ApiTokens>>,
    /// Whether `/metrics` needs a viewer token.
    pub metrics_require_token: bool,
}

/// The role `path` needs, `None` for open routes. Unknown paths need a viewer token, so an
/// anonymous client cannot even learn which routes exist. The console's shell (`/` and its
/// static assets under `/console/`) is open: it carries no data, and it is what asks the
/// operator for a token when the API answers 401.
pub fn required_role(path: &str, metrics_require_token: bool) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" | "/" => None,
        _ if path.starts_with("/console/") => None,
        "/metrics" if !metrics_require_token => None,
        _ if path.starts_with("/api/v1/admin/") => Some(Role::Admin),
        _ => Some(Role::Viewer),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(challenge: &'static str, detail: &str) -> Response {
    let mut response = problem_response(StatusCode::UNAUTHORIZED, "Unauthorized", detail);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The answer refusing `request` on a route that needs `required`, or `None` when its token's
/// role suffices. Logs say what was refused, never the path or the token (client input).
fn refusal(tokens: &ApiTokens, required: Role, request: &Request) -> Option<Response> {
    let Some(presented) = bearer_token(request) else {
        return Some(unauthorized(
            "Bearer realm=\"gridwatch\"",
            "this route needs an Authorization: Bearer token",
        ));
    };
    let Some(role) = tokens.role_of(presented) else {
        tracing::debug!("http request with an unknown token refused");
        return Some(unauthorized(
            "Bearer realm=\"gridwatch\", error=\"invalid_token\"",
            "the bearer token is not valid",
        ));
    };
    if role.grants(required) {
        return None;
    }
    tracing::debug!("http request refused: role too low");
    Some(problem_response(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "this route needs the admin role",
    ))
}

/// Runs `request` when no tokens are configured, its route needs no role, or its token's role
/// suffices; answers the refusal otherwise.
async fn run_if_allowed(
    policy: &AccessPolicy,
    required: Option<Role>,
    request: Request,
    next: Next,
) -> Response {
    let refused = match (&policy.tokens, required) {
        (Some(tokens), Some(required)) => refusal(tokens, required, &request),
        _ => None,
    };
    match refused {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// Middleware around every route: lets a request through when its route is open (see
/// [`required_role`]) or its token's role suffices; answers 401 (no or unknown token) or 403
/// (role too low) otherwise.
pub async fn authorize(
    State(policy): State<AccessPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let required = required_role(request.uri().path(), policy.metrics_require_token);
    run_if_allowed(&policy, required, request, next).await
}

/// Middleware on the admin routes themselves: whatever path reached them, they need the admin
/// role (a second check that does not depend on how [`required_role`] reads the path).
pub async fn authorize_admin(
    State(policy): State<AccessPolicy>,
    request: Request,
    next: Next,
) -> Response {
    run_if_allowed(&policy, Some(Role::Admin), request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWER_TOKEN: &str = "viewer-token-0123456789";
    const ADMIN_TOKEN: &str = "admin-token-0123456789";

    fn tokens() -> ApiTokens {
        ApiTokens::parse(
            &format!("# comment\n\nviewer {VIEWER_TOKEN}\nadmin\t{ADMIN_TOKEN}\n"),
            "tokens",
        )
        .unwrap()
    }

    #[test]
    fn configured_tokens_map_to_their_roles_and_others_to_none() {
        let tokens = tokens();
        assert_eq!(tokens.role_of(VIEWER_TOKEN), Some(Role::Viewer));
        assert_eq!(tokens.role_of(ADMIN_TOKEN), Some(Role::Admin));
        assert_eq!(tokens.role_of("admin-token-012345678"), None);
        assert_eq!(tokens.role_of(""), None);
    }

    #[test]
    fn entries_may_be_comma_separated() {
        let tokens = ApiTokens::parse(
            &format!("viewer {VIEWER_TOKEN},admin {ADMIN_TOKEN}"),
            HTTP_TOKENS_VARIABLE,
        )
        .unwrap();
        assert_eq!(tokens.role_of(ADMIN_TOKEN), Some(Role::Admin));
    }

    #[test]
    fn bad_lines_are_reported_by_number_without_their_content() {
        let cases = [
            ("viewer", "expected"),
            ("owner some-long-token-0123456789", "unknown role"),
            ("admin short", "shorter than 16"),
            ("admin a b", "expected"),
        ];
        for (line, expected) in cases {
            let error = ApiTokens::parse(&format!("# first\n{line}"), "tokens")
                .unwrap_err()
                .to_string();
            assert!(error.contains("line 2"), "{error}");
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("token-0123456789"), "{error}");
        }
        let empty = ApiTokens::parse("# nothing\n", "tokens").unwrap_err();
        assert!(matches!(empty, TokenError::Empty { .. }));
    }

    #[tokio::test]
    async fn admin_guarded_routes_refuse_viewers_whatever_their_path() {
        use tower::ServiceExt;
        let policy = AccessPolicy {
            tokens: Some(Arc::new(tokens())),
            metrics_require_token: false,
        };
        let router = axum::Router::new()
            .route("/healthz", axum::routing::post(|| async { "changed" }))
            .route_layer(axum::middleware::from_fn_with_state(
                policy,
                authorize_admin,
            ));
        let request_with = |token: &str| {
            axum::http::Request::post("/healthz")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let viewer = router
            .clone()
            .oneshot(request_with(VIEWER_TOKEN))
            .await
            .unwrap();
        assert_eq!(viewer.status(), StatusCode::FORBIDDEN);
        let admin = router.oneshot(request_with(ADMIN_TOKEN)).await.unwrap();
        assert_eq!(admin.status(), StatusCode::OK);
    }

    #[test]
    fn debug_output_shows_no_digest() {
        assert_eq!(format!("{:?}", tokens()), "ApiTokens(2 tokens)");
    }

    #[test]
    fn probes_and_the_console_shell_are_open_admin_routes_need_admin_and_everything_else_a_viewer()
    {
        assert_eq!(required_role("/healthz", true), None);
        assert_eq!(required_role("/readyz", true), None);
        assert_eq!(required_role("/", true), None);
        assert_eq!(required_role("/console/app.js", true), None);
        assert_eq!(required_role("/consolex", true), Some(Role::Viewer));
        assert_eq!(required_role("/metrics", false), None);
        assert_eq!(required_role("/metrics", true), Some(Role::Viewer));
        assert_eq!(required_role("/api/v1/cells", false), Some(Role::Viewer));
        assert_eq!(
            required_role("/api/v1/admin/reload", false),
            Some(Role::Admin)
        );
        assert_eq!(required_role("/nowhere", false), Some(Role::Viewer));
        assert!(Role::Admin.grants(Role::Viewer));
        assert!(!Role::Viewer.grants(Role::Admin));
    }
}
