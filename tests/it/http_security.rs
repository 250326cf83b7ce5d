//! The locked-down HTTP server: bearer-token roles with problem+json refusals, HTTPS from
//! certificate files that are re-read when they change, and slow clients that cannot keep
//! `/healthz` from answering. Every service here listens on 127.0.0.1 only.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::InProcessService;
use gridwatch::config::Config;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIEWER_TOKEN: &str = "viewer-test-token-5b0c9e2f";
const ADMIN_TOKEN: &str = "admin-test-token-8d1a7c3e";
const RELOAD: &str = "/api/v1/admin/reload";

/// A config with a tokens file and a copy of the default rules (so the admin reload has a
/// file to read), both in `directory`.
fn config_with_tokens(directory: &Path) -> Config {
    let tokens_path = directory.join("api-tokens");
    std::fs::write(
        &tokens_path,
        format!("# test tokens\nviewer {VIEWER_TOKEN}\nadmin {ADMIN_TOKEN}\n"),
    )
    .unwrap();
    let rules_path = directory.join("rules.toml");
    std::fs::copy("seeds/rules.toml", &rules_path).unwrap();
    let mut config = Config::default();
    config.http.tokens_file = Some(tokens_path);
    config.rules.path = Some(rules_path);
    config
}

/// Waits (at most 30 s) until `/healthz` answers 200 at `base_url`.
async fn wait_until_healthy(client: &reqwest::Client, base_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = client
            .get(format!("{base_url}/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `method path` to the service, with `token` as a bearer token when given.
async fn send(
    service: &InProcessService,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, service.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The status of `GET /healthz`, or `None` when it does not answer within `limit`.
async fn healthz_within(
    client: &reqwest::Client,
    service: &InProcessService,
    limit: Duration,
) -> Option<u16> {
    let response = tokio::time::timeout(limit, client.get(service.url("/healthz")).send())
        .await
        .ok()?;
    Some(response.unwrap().status().as_u16())
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_the_api_by_role_while_probes_and_metrics_stay_open() {
    let directory = tempfile::tempdir().unwrap();
    let service = InProcessService::start(config_with_tokens(directory.path())).await;
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &service.base_url).await;

    let readyz = client.get(service.url("/readyz")).send().await.unwrap();
    assert_ne!(readyz.status(), 401, "probes need no token");
    let metrics = client.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200, "/metrics is open by default");

    let anonymous = send(&service, Method::GET, "/api/v1/alerts", None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok()),
        Some("Bearer realm=\"gridwatch\"")
    );
    assert_eq!(content_type(&anonymous), "application/problem+json");
    let (_, body) = crate::support::checked_text(&service.url("/api/v1/alerts"), anonymous).await;
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 401);

    let wrong = send(
        &service,
        Method::GET,
        "/api/v1/alerts",
        Some("not-a-configured-token-at-all"),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let wrong_body = wrong.text().await.unwrap();
    assert!(
        !wrong_body.contains("not-a-configured-token"),
        "{wrong_body}"
    );

    let viewer_read = send(&service, Method::GET, "/api/v1/alerts", Some(VIEWER_TOKEN)).await;
    let (status, body) =
        crate::support::checked_text(&service.url("/api/v1/alerts"), viewer_read).await;
    assert_eq!(status, 200, "{body}");
    let alerts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(alerts["alerts"].is_array() && alerts.get("next_cursor").is_some());
    // Unknown routes need a token too (anonymous clients cannot map the API); with one they
    // are a 404 problem.
    let unknown = send(&service, Method::GET, "/api/v1/nowhere", Some(VIEWER_TOKEN)).await;
    let (status, _) = crate::support::checked_text(&service.url("/api/v1/nowhere"), unknown).await;
    assert_eq!(status, 404);

    let viewer_reload = send(&service, Method::POST, RELOAD, Some(VIEWER_TOKEN)).await;
    assert_eq!(viewer_reload.status(), 403);
    assert_eq!(content_type(&viewer_reload), "application/problem+json");

    let anonymous_reload = send(&service, Method::POST, RELOAD, None).await;
    assert_eq!(anonymous_reload.status(), 401);

    let admin_reload = send(&service, Method::POST, RELOAD, Some(ADMIN_TOKEN)).await;
    assert_eq!(admin_reload.status(), 200);
    let outcome: serde_json::Value = admin_reload.json().await.unwrap();
    assert_eq!(outcome["result"], "unchanged", "{outcome}");

    let admin_read = send(
        &service,
        Method::GET,
        "/api/v1/cells?top=1",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        admin_read.status(),
        200,
        "an admin may do what a viewer may"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_metrics_need_a_viewer_token() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = config_with_tokens(directory.path());
    config.http.metrics_require_token = true;
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &service.base_url).await;
    let anonymous = client.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let viewer = send(&service, Method::GET, "/metrics", Some(VIEWER_TOKEN)).await;
    assert_eq!(viewer.status(), 200);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_loopback_api_stays_open() {
    let service = InProcessService::start(Config::default()).await;
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &service.base_url).await;
    let alerts = send(&service, Method::GET, "/api/v1/alerts", None).await;
    assert_eq!(alerts.status(), 200);
    let reload = send(&service, Method::POST, RELOAD, None).await;
    assert_eq!(reload.status(), 409, "embedded rules: nothing to reload");
    assert_eq!(content_type(&reload), "application/problem+json");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_but_probes_always_answer() {
    let mut config = Config::default();
    config.http.rate_limit_per_second = 1;
    config.http.rate_limit_burst = 5;
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &service.base_url).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = send(&service, Method::GET, "/api/v1/alerts", None).await;
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    for _ in 0..20 {
        let healthz = client.get(service.url("/healthz")).send().await.unwrap();
        assert_eq!(healthz.status(), 200);
    }
    service.stop().await;
}

/// Raises the soft file-descriptor limit to `wanted` (or the hard limit) if it is lower.
fn ensure_file_descriptors(wanted: u64) {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else {
        return;
    };
    if soft < wanted {
        let _ = rlimit::Resource::NOFILE.set(wanted.min(hard), hard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_neither_block_healthz_nor_hold_their_connections() {
    const SLOW_CLIENTS: usize = 1_000;
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
    ensure_file_descriptors(4 * SLOW_CLIENTS as u64);
    let mut config = Config::default();
    config.http.header_read_timeout = HEADER_READ_TIMEOUT;
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &service.base_url).await;
    let address = service.base_url.trim_start_matches("http://").to_string();

    // Each slow client sends the start of a request, then one more header byte every 500 ms
    // (a slowloris), and reports how long the server kept its connection open.
    let opened_at = Instant::now();
    let mut slow_clients = Vec::with_capacity(SLOW_CLIENTS);
    for index in 0..SLOW_CLIENTS {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .unwrap_or_else(|error| panic!("slow client {index} cannot connect: {error}"));
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: gridwatch\r\nX-Slow: ")
            .await
            .unwrap();
        slow_clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buffer = [0u8; 64];
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => {
                        // EOF, a reset or an error answer: the server let go of us.
                        let _ = read;
                        return started.elapsed();
                    }
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if stream.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
                if started.elapsed() > Duration::from_secs(60) {
                    return started.elapsed();
                }
            }
        }));
    }
    let opening_took = opened_at.elapsed();

    // All slow clients are connected and trickling: a probe still answers within a second.
    let fresh_client = reqwest::Client::new();
    let healthz = healthz_within(&fresh_client, &service, Duration::from_secs(1)).await;
    assert_eq!(
        healthz,
        Some(200),
        "/healthz answers within a second despite 1,000 slow clients"
    );

    // And the slow clients are dropped once their header time is up, not held forever.
    let mut longest_held = Duration::ZERO;
    for slow_client in slow_clients {
        longest_held = longest_held.max(slow_client.await.unwrap());
    }
    assert!(
        longest_held < HEADER_READ_TIMEOUT + opening_took + Duration::from_secs(5),
        "a slow client was held {longest_held:?} (opening took {opening_took:?})"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_slow_clients_are_cut_after_a_second_so_probes_get_in() {
    const MAX_CONNECTIONS: usize = 4;
    // 4 regular slots and the minimum 16 overflow ones (one-second header time).
    const ALL_SLOTS: usize = MAX_CONNECTIONS + 16;
    let mut config = Config::default();
    config.http.max_connections = MAX_CONNECTIONS;
    config.http.header_read_timeout = Duration::from_secs(30);
    let service = InProcessService::start(config).await;
    let unpooled = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    wait_until_healthy(&unpooled, &service.base_url).await;
    let address = service.base_url.trim_start_matches("http://").to_string();
    let mut slow_clients = Vec::new();
    for _ in 0..ALL_SLOTS {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        slow_clients.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let blocked = healthz_within(&unpooled, &service, Duration::from_millis(300)).await;
    assert_eq!(blocked, None, "every slot is taken: the request waits");
    let healthz = healthz_within(&unpooled, &service, Duration::from_secs(3)).await;
    assert_eq!(
        healthz,
        Some(200),
        "an overflow slot frees within about a second"
    );
    drop(slow_clients);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_time() {
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
    let mut config = Config::default();
    config.http.header_read_timeout = HEADER_READ_TIMEOUT;
    let service = InProcessService::start(config).await;
    wait_until_healthy(&reqwest::Client::new(), &service.base_url).await;
    let address = service.base_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gridwatch\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(3), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(count) => received.extend_from_slice(buffer.get(..count).unwrap_or_default()),
            }
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "the request was answered"
    );
    assert!(
        closed.is_ok(),
        "the idle connection was still open after {:?}",
        started.elapsed()
    );
    service.stop().await;
}

/// A self-signed certificate for `gridwatch.test` as (certificate PEM, key PEM).
fn self_signed_certificate() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["gridwatch.test".to_string()])
        .expect("generate a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A client that trusts only `certificate_pem` and reaches `gridwatch.test` at `address`.
fn client_trusting(certificate_pem: &str, address: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("gridwatch.test", address)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_configured_certificate_and_rereads_it_when_the_files_change() {
    let directory = tempfile::tempdir().unwrap();
    let cert_path = directory.path().join("tls.crt");
    let key_path = directory.path().join("tls.key");
    let (first_certificate, first_key) = self_signed_certificate();
    std::fs::write(&cert_path, &first_certificate).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let mut config = Config::default();
    config.http.tls_cert_file = Some(cert_path.clone());
    config.http.tls_key_file = Some(key_path.clone());
    let service = InProcessService::start(config).await;
    let address: std::net::SocketAddr = service
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let https_url = format!("https://gridwatch.test:{}/healthz", address.port());

    let first_client = client_trusting(&first_certificate, address);
    wait_until_healthy(
        &first_client,
        &format!("https://gridwatch.test:{}", address.port()),
    )
    .await;
    let plain = reqwest::Client::new()
        .get(service.url("/healthz"))
        .send()
        .await;
    assert!(
        plain.map_or(true, |response| response.status() != 200),
        "plain http is not served on the https port"
    );

    let (second_certificate, second_key) = self_signed_certificate();
    write_atomically(&key_path, &second_key);
    write_atomically(&cert_path, &second_certificate);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let second_client = client_trusting(&second_certificate, address);
        if let Ok(response) = second_client.get(&https_url).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale_client = client_trusting(&first_certificate, address);
    assert!(
        stale_client.get(&https_url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    service.stop().await;
}
