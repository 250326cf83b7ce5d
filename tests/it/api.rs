//! The operator API's conventions (docs/read-model-and-api.md), over HTTP against the service
//! in-process: problem+json for every error with the parameter and its allowed values,
//! cursors, the GeoJSON of all cells (gzip on request), the Server-Sent Events stream with
//! its caps, CORS off by default and on for a configured origin, and the OpenAPI document
//! checked by an OpenAPI validator. Every JSON answer is also checked against the document by
//! `support::get_text`.

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use crate::support::{get_text, metric_value, wait_for_body, InProcessService};
use gridwatch::config::Config;
use gridwatch::grid::GridRegistry;
use gridwatch::simulator::{Scenario, ScenarioTime};

/// A simulator service with a backlog of `backlog_minutes` and `scenarios`.
async fn service_with(
    backlog_minutes: u64,
    scenarios: Vec<Scenario>,
    config: Option<Config>,
) -> InProcessService {
    let mut config = config.unwrap_or_default();
    config.simulator.backfill = Duration::from_secs(backlog_minutes * 60);
    config.simulator.rate_multiplier = 5.0;
    config.simulator.scenarios = scenarios;
    InProcessService::start(config).await
}

/// Waits until `/api/v1/cells?view=24h` lists cells (closed panes have reached the model).
async fn wait_for_cells(client: &reqwest::Client, service: &InProcessService) -> serde_json::Value {
    let body = wait_for_body(
        client,
        &service.url("/api/v1/cells?view=24h&top=100"),
        Duration::from_secs(60),
        |body| body.contains("grid_id"),
    )
    .await;
    serde_json::from_str(&body).unwrap()
}

/// GETs `path` and returns its status and problem document, checking the media type.
async fn problem(
    client: &reqwest::Client,
    service: &InProcessService,
    path: &str,
) -> (u16, serde_json::Value) {
    let response = client.get(service.url(path)).send().await.unwrap();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (status, body) = crate::support::checked_text(&service.url(path), response).await;
    assert_eq!(content_type, "application/problem+json", "{path}: {body}");
    (status, serde_json::from_str(&body).unwrap())
}

#[test]
fn the_openapi_document_passes_an_openapi_3_1_validator() {
    let Some(validator) = crate::support::tools::tool_on_path(
        &["openapi-spec-validator"],
        ".ci/run installs it from .ci/openapi-requirements.txt",
    ) else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("openapi.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(crate::support::openapi::document()).unwrap(),
    )
    .unwrap();
    let output = std::process::Command::new(validator)
        .arg("--schema")
        .arg("3.1")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_naming_the_parameter_and_what_it_accepts() {
    let service = service_with(5, Vec::new(), None).await;
    let client = reqwest::Client::new();
    wait_for_body(
        &client,
        &service.url("/healthz"),
        Duration::from_secs(30),
        |body| body.contains("ok"),
    )
    .await;

    let (status, body) = problem(&client, &service, "/api/v1/cells?view=7m").await;
    assert_eq!(status, 400);
    assert_eq!(body["parameter"], "view");
    assert_eq!(body["allowed"], serde_json::json!(["15m", "1h", "24h"]));

    let (status, body) = problem(&client, &service, "/api/v1/cells?top=abc").await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("top")));
    let (_, body) = problem(&client, &service, "/api/v1/cells?top=101").await;
    assert_eq!(
        body["allowed"],
        serde_json::json!({"minimum": 1, "maximum": 100})
    );

    let (_, body) = problem(&client, &service, "/api/v1/alerts?severity=9").await;
    assert_eq!(body["parameter"], "severity");
    assert_eq!(
        body["allowed"],
        serde_json::json!({"minimum": 1, "maximum": 4})
    );
    let (_, body) = problem(&client, &service, "/api/v1/alerts?status=firing").await;
    assert_eq!(body["allowed"], serde_json::json!(["FIRING", "RESOLVED"]));
    let (_, body) = problem(&client, &service, "/api/v1/alerts?district=1").await;
    assert_eq!(body["parameter"], "district");
    assert_eq!(body["allowed"].as_array().unwrap().len(), 5);
    let (_, body) = problem(&client, &service, "/api/v1/alerts?event_type=fire").await;
    assert!(body["allowed"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("FIRE_SMOKE")));
    let (_, body) = problem(&client, &service, "/api/v1/alerts?life_safety=maybe").await;
    assert_eq!(body["parameter"], "life_safety");
    let (_, body) = problem(&client, &service, "/api/v1/alerts?limit=501").await;
    assert_eq!(body["parameter"], "limit");
    assert_eq!(body["allowed"]["maximum"], 500);
    assert!(body["detail"].as_str().unwrap().contains("500"));
    let (_, body) = problem(&client, &service, "/api/v1/alerts?cursor=garbage").await;
    assert_eq!(body["parameter"], "cursor");
    let (status, body) = problem(&client, &service, "/api/v1/alerts?colour=red").await;
    assert_eq!(status, 400);
    assert_eq!(body["parameter"], "colour");
    assert!(body["allowed"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("severity")));
    let (_, body) = problem(&client, &service, "/api/v1/communities?view=2h").await;
    assert_eq!(body["parameter"], "view");
    let (_, body) = problem(&client, &service, "/api/v1/cells.geojson?top=3").await;
    assert_eq!(body["parameter"], "top");

    let (status, _) = problem(&client, &service, "/api/v1/no-such-route").await;
    assert_eq!(status, 404);
    let (status, _) = problem(&client, &service, "/api/v1/cells/99999999999999").await;
    assert_eq!(status, 404);
    let posted = client
        .post(service.url("/api/v1/alerts"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
    assert_eq!(
        posted.headers()[reqwest::header::CONTENT_TYPE],
        "application/problem+json"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_walk_a_list_without_repeats_in_its_order() {
    let service = service_with(30, Vec::new(), None).await;
    let client = reqwest::Client::new();
    let first = wait_for_cells(&client, &service).await;
    assert!(first["cells"].as_array().unwrap().len() > 10, "{first}");

    let mut seen = HashSet::new();
    let mut counts = Vec::new();
    let mut path = "/api/v1/cells?view=24h&top=7".to_string();
    for _ in 0..5 {
        let (status, body) = get_text(&client, &service.url(&path)).await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let cells = page["cells"].as_array().unwrap();
        assert!(cells.len() <= 7);
        for cell in cells {
            assert!(
                seen.insert(cell["grid_id"].as_str().unwrap().to_string()),
                "served twice: {cell}"
            );
            counts.push(cell["events"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/cells?view=24h&top=7&cursor={cursor}"),
            None => break,
        }
    }
    assert!(seen.len() > 7, "more than one page was served");
    // Counts can grow between requests, so order is checked within each page's neighbours
    // only loosely: the first page holds the busiest cells.
    assert!(counts.first() >= counts.last(), "{counts:?}");

    let (status, body) = get_text(&client, &service.url("/api/v1/alerts?limit=1")).await;
    assert_eq!(status, 200, "{body}");
    let alerts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(alerts["alerts"].as_array().unwrap().len() <= 1);
    assert!(
        alerts.get("next_cursor").is_some(),
        "next_cursor is always present: {alerts}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_geojson_has_every_cell_with_names_and_counts_and_is_gzipped_on_request() {
    let service = service_with(30, Vec::new(), None).await;
    let client = reqwest::Client::new();
    wait_for_cells(&client, &service).await;
    let registry = GridRegistry::embedded();

    let (status, plain) = get_text(&client, &service.url("/api/v1/cells.geojson?view=24h")).await;
    assert_eq!(status, 200, "{plain}");
    let collection: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(collection["type"], "FeatureCollection");
    let features = collection["features"].as_array().unwrap();
    assert_eq!(features.len(), registry.cells().len());
    assert_eq!(features.len(), 1911);
    let counted: u64 = features
        .iter()
        .map(|feature| feature["properties"]["events"].as_u64().unwrap())
        .sum();
    assert!(counted > 0, "the 24 h view has events");
    let first = &features[0];
    assert_eq!(first["geometry"]["type"], "Polygon");
    for field in [
        "grid_id",
        "community_name",
        "district_name",
        "district_name_en",
        "events_by_type",
        "life_safety_firing",
    ] {
        assert!(
            first["properties"].get(field).is_some(),
            "{field} in {first}"
        );
    }
    assert!(first["properties"].get("centroid").is_none());

    let gzipped = client
        .get(service.url("/api/v1/cells.geojson?view=24h"))
        .header(reqwest::header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()[reqwest::header::CONTENT_ENCODING], "gzip");
    let compressed = gzipped.bytes().await.unwrap();
    let mut inflated = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut inflated)
        .unwrap();
    let inflated: serde_json::Value = serde_json::from_str(&inflated).unwrap();
    assert_eq!(inflated["features"].as_array().unwrap().len(), 1911);
    println!(
        "cells.geojson: {} bytes plain, {} bytes gzip ({:.1} %)",
        plain.len(),
        compressed.len(),
        compressed.len() as f64 * 100.0 / plain.len() as f64
    );
    assert!(
        compressed.len() * 4 < plain.len(),
        "gzip shrinks the GeoJSON at least 4x"
    );
    service.stop().await;
}

/// Reads Server-Sent Events from `response` until `enough` holds for the events so far (each
/// as (id, event, data)) or `timeout`.
async fn read_events(
    response: &mut reqwest::Response,
    timeout: Duration,
    enough: impl Fn(&[(Option<u64>, String, String)]) -> bool,
) -> Vec<(Option<u64>, String, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = String::new();
    let mut events = Vec::new();
    while !enough(&events) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(chunk) = tokio::time::timeout(remaining, response.chunk()).await else {
            break;
        };
        let Some(chunk) = chunk.unwrap() else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut name, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().parse().ok();
                } else if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim());
                }
            }
            if !name.is_empty() {
                events.push((id, name, data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_numbered_events_resumes_after_last_event_id_and_caps_clients() {
    let fire_grid = GridRegistry::embedded().cells()[11].grid_id.clone();
    let mut config = Config::default();
    config.http.max_streams_per_client = 2;
    let service = service_with(
        10,
        vec![Scenario::Fire {
            grid_id: fire_grid.clone(),
            at: ScenarioTime::AfterStart(10 * 60 * 1000 + 3000),
        }],
        Some(config),
    )
    .await;
    let client = reqwest::Client::new();
    wait_for_body(
        &client,
        &service.url("/healthz"),
        Duration::from_secs(30),
        |body| body.contains("ok"),
    )
    .await;

    let mut stream = client
        .get(service.url("/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_events(&mut stream, Duration::from_secs(60), |events| {
        events
            .iter()
            .any(|(_, name, data)| name == "alert" && data.contains(&fire_grid))
            && events.iter().any(|(_, name, _)| name == "cells")
    })
    .await;
    let names: Vec<&str> = events.iter().map(|(_, name, _)| name.as_str()).collect();
    let fire = events
        .iter()
        .find(|(_, name, data)| name == "alert" && data.contains(&fire_grid))
        .unwrap_or_else(|| panic!("no fire alert on the stream: {names:?}"));
    let alert: serde_json::Value = serde_json::from_str(&fire.2).unwrap();
    crate::support::openapi::assert_matches_component("AlertView", &alert);
    assert_eq!(alert["event_type"], "FIRE_SMOKE");
    let cells = events.iter().find(|(_, name, _)| name == "cells").unwrap();
    crate::support::openapi::assert_matches_component(
        "CellsChange",
        &serde_json::from_str(&cells.2).unwrap(),
    );
    let ids: Vec<u64> = events.iter().filter_map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), events.len(), "every event has an id");
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase: {ids:?}"
    );

    // A second stream of the same client fits the cap of 2; a third is refused.
    let resume_after = fire.0.unwrap();
    let mut resumed = client
        .get(service.url("/api/v1/stream"))
        .header("Last-Event-ID", (resume_after - 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let third = client
        .get(service.url("/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(
        third.headers()[reqwest::header::CONTENT_TYPE],
        "application/problem+json"
    );
    let replayed = read_events(&mut resumed, Duration::from_secs(10), |events| {
        !events.is_empty()
    })
    .await;
    assert!(!replayed.is_empty());
    assert!(
        replayed[0].1 == "reset" || replayed[0].0 == Some(resume_after),
        "replay starts right after Last-Event-ID (or says reset): {:?}",
        replayed[0]
    );

    let metrics = get_text(&client, &service.url("/metrics")).await.1;
    assert_eq!(
        metric_value(&metrics, "gridwatch_stream_clients", &[]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "gridwatch_stream_clients_refused_total",
            &["reason=\"client_cap\""]
        ),
        Some(1.0)
    );
    drop(stream);
    drop(resumed);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_are_sent_only_for_configured_origins() {
    let allowed = "https://grafana.example.org";
    for configured in [false, true] {
        let mut config = Config::default();
        if configured {
            config.http.cors_allowed_origins = vec![allowed.to_string()];
        }
        let service = service_with(1, Vec::new(), Some(config)).await;
        let client = reqwest::Client::new();
        wait_for_body(
            &client,
            &service.url("/healthz"),
            Duration::from_secs(30),
            |body| body.contains("ok"),
        )
        .await;
        let preflight = client
            .request(reqwest::Method::OPTIONS, service.url("/api/v1/alerts"))
            .header("Origin", allowed)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        let simple = client
            .get(service.url("/api/v1/status"))
            .header("Origin", allowed)
            .send()
            .await
            .unwrap();
        let stranger = client
            .get(service.url("/api/v1/status"))
            .header("Origin", "https://evil.example.com")
            .send()
            .await
            .unwrap();
        let allow_origin = |response: &reqwest::Response| {
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|value| value.to_str().unwrap().to_string())
        };
        assert!(allow_origin(&stranger).is_none());
        if configured {
            assert_eq!(allow_origin(&preflight).as_deref(), Some(allowed));
            assert!(preflight.status().is_success(), "{}", preflight.status());
            let allowed_headers = preflight.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .to_lowercase();
            assert!(
                allowed_headers.contains("authorization"),
                "{allowed_headers}"
            );
            assert_eq!(allow_origin(&simple).as_deref(), Some(allowed));
        } else {
            assert!(allow_origin(&preflight).is_none());
            assert!(allow_origin(&simple).is_none());
        }
        service.stop().await;
    }
}
