//! The locked-down HTTP server around the API of [`crate::api`]: bearer-token roles
//! ([`auth`]), optional HTTPS re-read on change ([`tls`]), a per-client rate limit and a
//! request timeout ([`limits`]), a header-read timeout and a connection limit (here, in the
//! accept loop), and the one state-changing route, `POST /api/v1/admin/reload`.
//!
//! Handlers stay in `api.rs`; this room only decides who reaches them and for how long.
//! Connections are served on their own tasks, never on the pipeline task, so a slow or
//! hostile client cannot stall event processing; and since connections are capped and each
//! must send its headers within `http.header_read_timeout`, slow clients cannot exhaust the
//! process's file descriptors and take `/healthz` down with them.

pub mod auth;
pub mod limits;
pub mod probe;
pub mod problem;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::HttpConfig;
use crate::reload::{ReloadOutcome, ReloadRequest};
use auth::{AccessPolicy, ApiTokens};
use limits::{ClientAddress, ClientRateLimit};
use problem::problem_response;
use tls::TlsFiles;

/// How long open connections may finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long an admin reload request waits for the reload task.
const RELOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the HTTP server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The API tokens could not be loaded.
    #[error(transparent)]
    Tokens(#[from] auth::TokenError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Everything the server needs from `[http]`, loaded once at start.
#[derive(Debug, Clone)]
pub struct HttpSecurity {
    /// Who may use which route.
    pub access: AccessPolicy,
    /// HTTPS, when configured.
    pub tls: Option<TlsFiles>,
    /// Time allowed for a request's headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Time allowed for a request's answer.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests per second and burst per client.
    pub rate: (u32, u32),
    /// Browser origins allowed to call the API cross-origin; empty: no CORS headers.
    pub cors_allowed_origins: Vec<HeaderValue>,
}

impl HttpSecurity {
    /// Loads tokens and certificates named by `config`.
    pub fn from_config(config: &HttpConfig) -> Result<HttpSecurity, HttpSetupError> {
        let tokens = ApiTokens::load(config)?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert_path), Some(key_path)) => Some(TlsFiles::load(cert_path, key_path)?),
            _ => None,
        };
        Ok(HttpSecurity {
            access: AccessPolicy {
                tokens: tokens.map(Arc::new),
                metrics_require_token: config.metrics_require_token,
            },
            tls,
            header_read_timeout: config.header_read_timeout,
            request_timeout: config.request_timeout,
            max_connections: config.max_connections.max(1),
            rate: (config.rate_limit_per_second, config.rate_limit_burst),
            cors_allowed_origins: config
                .cors_allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect(),
        })
    }

    /// `https` with TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// What the admin routes act on.
#[derive(Debug, Clone, Default)]
pub struct AdminState {
    /// Asks the rules reload task for a reload; `None` when the rules are the embedded
    /// defaults (nothing to reload).
    pub reload_requests: Option<mpsc::Sender<ReloadRequest>>,
}

/// `POST /api/v1/admin/reload`: reloads the rules file as SIGHUP does and answers the outcome.
async fn reload_handler(State(admin): State<AdminState>) -> Response {
    let Some(requests) = admin.reload_requests else {
        return problem_response(
            StatusCode::CONFLICT,
            "Nothing To Reload",
            "the rules are the embedded defaults; set rules.path to reload them",
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if requests.send(ReloadRequest { reply }).await.is_err() {
        return problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "the rules reload task has stopped",
        );
    }
    match tokio::time::timeout(RELOAD_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(ReloadOutcome::Applied { version })) => {
            Json(serde_json::json!({ "result": "applied", "rules_version": version }))
                .into_response()
        }
        Ok(Ok(ReloadOutcome::Unchanged { version })) => {
            Json(serde_json::json!({ "result": "unchanged", "rules_version": version }))
                .into_response()
        }
        Ok(Ok(ReloadOutcome::Rejected { message })) => problem_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Rules Rejected",
            &format!("the rules file was rejected; the running rules stay: {message}"),
        ),
        Ok(Err(_)) | Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "the rules reload did not answer in time",
        ),
    }
}

/// CORS for the configured origins: GET (and the preflight) with the `Authorization` header,
/// exposing nothing beyond the CORS-safelisted headers; `None` when no origin is configured,
/// so that by default browsers keep other sites' pages away from the API.
fn cors_layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET])
            .allow_headers([
                header::AUTHORIZATION,
                header::ACCEPT,
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The API router with the admin routes, authentication, the rate limit and the request
/// timeout (outermost first: CORS, timeout, rate limit, authentication, handler). CORS is
/// outermost because a browser's preflight carries no token: it must be answered before
/// authentication would refuse it.
pub fn secured_router(api: Router, admin: AdminState, security: &HttpSecurity) -> Router {
    let admin_routes = Router::new()
        .route("/api/v1/admin/reload", post(reload_handler))
        .route_layer(axum::middleware::from_fn_with_state(
            security.access.clone(),
            auth::authorize_admin,
        ))
        .with_state(admin);
    let mut router = api.merge(admin_routes);
    router = router.layer(axum::middleware::from_fn_with_state(
        security.access.clone(),
        auth::authorize,
    ));
    if let Some(limit) = ClientRateLimit::new(security.rate.0, security.rate.1) {
        router = router.layer(axum::middleware::from_fn_with_state(
            limit,
            limits::limit_rate,
        ));
    }
    router = router.layer(axum::middleware::from_fn_with_state(
        security.request_timeout,
        limits::limit_duration,
    ));
    match cors_layer(&security.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Extra connections accepted once every regular slot is taken, so that a probe still gets
/// in while slow clients hold the regular ones: a sixteenth of the limit, at least 16.
fn overflow_connections(max_connections: usize) -> usize {
    (max_connections / 16).max(16)
}

/// An overflow connection must send its headers within this (or the configured time, if
/// shorter) and serves one request: a probe answers in milliseconds, a slow client is cut
/// after a second and frees its slot for the next.
const OVERFLOW_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The right to serve one connection; dropping it frees the slot.
struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    overflow: bool,
}

/// Connection slots: `max_connections` regular ones, then a few short-lived overflow ones.
struct ConnectionSlots {
    regular: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
}

impl ConnectionSlots {
    fn new(max_connections: usize) -> ConnectionSlots {
        ConnectionSlots {
            regular: Arc::new(Semaphore::new(max_connections)),
            overflow: Arc::new(Semaphore::new(overflow_connections(max_connections))),
        }
    }

    /// Waits for a free slot, regular ones first.
    async fn acquire(&self) -> Option<ConnectionSlot> {
        if let Ok(permit) = self.regular.clone().try_acquire_owned() {
            return Some(ConnectionSlot {
                _permit: permit,
                overflow: false,
            });
        }
        let (permit, overflow) = tokio::select! {
            biased;
            permit = self.regular.clone().acquire_owned() => (permit, false),
            permit = self.overflow.clone().acquire_owned() => (permit, true),
        };
        permit.ok().map(|permit| ConnectionSlot {
            _permit: permit,
            overflow,
        })
    }

    /// Waits (at most `grace`) until every connection has ended.
    async fn all_released(&self, max_connections: usize, grace: Duration) -> bool {
        let regular = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let overflow = u32::try_from(overflow_connections(max_connections)).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, async {
            let _ = self.regular.acquire_many(regular).await;
            let _ = self.overflow.acquire_many(overflow).await;
        })
        .await
        .is_ok()
    }
}

/// Serves `router` on `listener` until `cancel`: at most `max_connections` at once, plus a
/// few overflow connections with a one-second header time; further clients wait in the
/// kernel's backlog, costing no descriptor here. Each connection runs on its own task, with
/// TLS when configured. At shutdown open connections get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    security: HttpSecurity,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = match &security.tls {
        Some(files) => Some(files.acceptor().map_err(std::io::Error::other)?),
        None => None,
    };
    let certificate_watcher = match &security.tls {
        Some(files) => match files.watch(cancel.clone()) {
            Ok(task) => Some(task),
            Err(error) => {
                tracing::error!(%error, "tls files are not watched; restart to renew the certificate");
                None
            }
        },
        None => None,
    };
    let slots = ConnectionSlots::new(security.max_connections);
    loop {
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            slot = slots.acquire() => match slot {
                Some(slot) => slot,
                None => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting an http connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let connection = ConnectionSettings {
            peer,
            router: router.clone(),
            header_read_timeout: if slot.overflow {
                security
                    .header_read_timeout
                    .min(OVERFLOW_HEADER_READ_TIMEOUT)
            } else {
                security.header_read_timeout
            },
            keep_alive: !slot.overflow,
            cancel: cancel.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // Held for the connection's life: its drop frees the slot.
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let Some(acceptor) = acceptor else {
                serve_connection(stream, connection).await;
                return;
            };
            match tokio::time::timeout(connection.header_read_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls_stream)) => serve_connection(tls_stream, connection).await,
                Ok(Err(error)) => tracing::debug!(%error, "tls handshake failed"),
                Err(_) => tracing::debug!("tls handshake timed out"),
            }
        });
    }
    drop(listener);
    if !slots
        .all_released(security.max_connections, SHUTDOWN_GRACE)
        .await
    {
        tracing::warn!("http connections still open at shutdown are dropped");
    }
    if let Some(task) = certificate_watcher {
        let _ = task.await;
    }
    Ok(())
}

/// How one connection is served.
struct ConnectionSettings {
    /// The client (the rate limit's key).
    peer: SocketAddr,
    /// The routes.
    router: Router,
    /// Time for each request's headers.
    header_read_timeout: Duration,
    /// Whether more than one request may use the connection.
    keep_alive: bool,
    /// Shutdown.
    cancel: CancellationToken,
}

/// Serves HTTP/1.1 on one connection until it ends or shutdown (then gracefully).
async fn serve_connection<Io>(io: Io, settings: ConnectionSettings)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = ClientAddress(settings.peer.ip());
    let router = settings.router;
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(client);
            router.clone().oneshot(request)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(settings.keep_alive);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
        }
        _ = settings.cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}
