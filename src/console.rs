//! The operators' console: the static page at `/` and its assets under `/console/…`, embedded
//! into the binary at compile time so that `gridwatch run` shows it on a closed network with
//! nothing else installed (no CDN, no fonts, no map tiles).
//!
//! The page carries no data: it reads the city from `/api/v1/*` (see
//! `docs/read-model-and-api.md`), so this module is a leaf that knows nothing of the API or the
//! service; the service mounts [`router`] beside the API routes.
//!
//! Every asset is answered with an ETag (a hash of its bytes) and `Cache-Control: no-cache`: a
//! browser revalidates on every load and gets `304 Not Modified` while the binary is unchanged,
//! and picks up a new console as soon as the binary is upgraded (no stale page on the wall).

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::problem::problem_response;

/// One embedded file of the console.
struct Asset {
    /// File name under `/console/` (`index.html` is also served at `/`).
    name: &'static str,
    /// `Content-Type` header value.
    content_type: &'static str,
    /// The file's bytes, as compiled in.
    bytes: &'static [u8],
}

/// The console's files. A new file must be listed here (and nowhere else).
const ASSETS: [Asset; 3] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../assets/console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/console/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/console/style.css"),
    },
];

/// The page may load only its own scripts and styles and talk only to its own origin: the
/// console runs on an operations network where nothing else should be reachable from it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Strong ETags of the assets (in [`ASSETS`] order), hashed once on first use.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = xxhash_rust::xxh3::xxh3_64(asset.bytes);
            HeaderValue::from_str(&format!("\"{digest:016x}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// `GET /` (the page) and `GET /console/{file}` (its assets); an unknown file is a 404
/// problem.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index_handler))
        .route("/console/{file}", get(asset_handler))
}

async fn index_handler(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset_handler(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// The asset `name` (with its ETag), `304` when the client's `If-None-Match` already names
/// that ETag, or a 404 problem for a name that is not embedded.
fn serve(name: &str, request_headers: &HeaderMap) -> Response {
    let Some((asset, etag)) = ASSETS
        .iter()
        .zip(ETAGS.iter())
        .find(|(asset, _)| asset.name == name)
    else {
        return problem_response(StatusCode::NOT_FOUND, "Not Found", "no such console asset");
    };
    let revalidated = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|candidate| candidate.trim() == "*" || candidate.trim() == etag)
        });
    let mut response = if revalidated {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::builder().uri(path);
        if let Some(etag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn root_serves_the_page_with_its_type_cache_policy_and_etag() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert!(headers[header::ETAG].to_str().unwrap().starts_with('"'));
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        let body = body_text(response).await;
        assert!(body.contains("/console/app.js"), "{body}");
        assert!(body.contains("/console/style.css"), "{body}");
    }

    #[tokio::test]
    async fn assets_carry_their_own_content_types() {
        for (path, content_type) in [
            ("/console/app.js", "text/javascript; charset=utf-8"),
            ("/console/style.css", "text/css; charset=utf-8"),
            ("/console/index.html", "text/html; charset=utf-8"),
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
        }
    }

    #[tokio::test]
    async fn a_matching_if_none_match_is_answered_not_modified_without_a_body() {
        let first = get("/console/app.js", None).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let second = get("/console/app.js", Some(&format!("\"other\", {etag}"))).await;
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(second.headers()[header::ETAG], etag.as_str());
        assert!(body_text(second).await.is_empty());
        let stale = get("/console/app.js", Some("\"stale\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_problem() {
        for path in ["/console/nope.js", "/console/..%2Fsrc%2Flib.rs"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                crate::http::problem::PROBLEM_JSON
            );
        }
    }

    #[test]
    fn the_embedded_page_stays_small_and_loads_nothing_from_elsewhere() {
        let total: usize = ASSETS.iter().map(|asset| asset.bytes.len()).sum();
        assert!(total < 200_000, "console assets are {total} bytes");
        for asset in &ASSETS {
            // The SVG namespace is a name, not a location the browser fetches.
            let text = std::str::from_utf8(asset.bytes)
                .unwrap()
                .replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} must not load anything from another origin",
                asset.name
            );
        }
    }
}
