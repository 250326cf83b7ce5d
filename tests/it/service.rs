//! The whole service in-process: start `run` on port 0 with the simulator, scrape `/metrics`,
//! query the API, shut down, and check the outputs were flushed.

use std::time::Duration;

use crate::support::{get_text, metric_value, wait_for_body, InProcessService};
use gridwatch::config::{Config, SimulatorPacing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_api_and_flushes_outputs_on_shutdown() {
    let output_directory = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(30 * 60);
    config.simulator.rate_multiplier = 5.0;
    config.output.dir = Some(output_directory.path().to_path_buf());
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    let base = service.base_url.clone();

    wait_for_body(
        &client,
        &format!("{base}/healthz"),
        Duration::from_secs(20),
        |body| body.contains("ok"),
    )
    .await;
    wait_for_body(
        &client,
        &format!("{base}/readyz"),
        Duration::from_secs(20),
        |body| body.contains("ready"),
    )
    .await;
    let metrics = wait_for_body(
        &client,
        &format!("{base}/metrics"),
        Duration::from_secs(60),
        |body| {
            metric_value(body, "gridwatch_windows_emitted_total", &[])
                .is_some_and(|value| value > 0.0)
        },
    )
    .await;
    assert!(
        metric_value(
            &metrics,
            "gridwatch_events_received_total",
            &["source=\"simulator\""]
        )
        .unwrap()
            > 0.0
    );
    assert!(metrics.contains("# HELP gridwatch_dead_letters_total"));
    assert!(metrics.contains("gridwatch_processing_latency_seconds_bucket"));
    for sink in ["file", "read_model"] {
        assert!(
            metric_value(
                &metrics,
                "gridwatch_output_write_seconds_count",
                &[&format!("sink=\"{sink}\"")]
            )
            .is_some_and(|batches| batches > 0.0),
            "the pipeline times its writes to the {sink} sink: {metrics}"
        );
    }
    assert!(
        metric_value(&metrics, "gridwatch_watermark_lag_seconds", &[]).is_some(),
        "{metrics}"
    );

    let cells = wait_for_body(
        &client,
        &format!("{base}/api/v1/cells?top=5"),
        Duration::from_secs(30),
        |body| body.contains("grid_id"),
    )
    .await;
    let cells: serde_json::Value = serde_json::from_str(&cells).unwrap();
    let listed = cells["cells"].as_array().unwrap();
    assert!(!listed.is_empty() && listed.len() <= 5, "{cells}");
    let counts: Vec<u64> = listed
        .iter()
        .map(|cell| cell["events"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|pair| pair[0] >= pair[1]),
        "hottest first: {counts:?}"
    );
    assert_eq!(listed[0]["grid_id"].as_str().unwrap().len(), 14);

    let hottest_grid = listed[0]["grid_id"].as_str().unwrap();
    // The 15 min view slides while the backlog is processed (between the listing and this
    // request its events may all leave it); the 24 h view holds the whole simulated hour.
    let (status, detail) = get_text(
        &client,
        &format!("{base}/api/v1/cells/{hottest_grid}?view=24h"),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["grid_id"], hottest_grid);
    assert_eq!(detail["view"], "24h");
    assert_eq!(detail["centroid"].as_array().unwrap().len(), 2);
    assert!(detail["district_name_en"].as_str().is_some(), "{detail}");
    let by_type = detail["events_by_type"].as_object().unwrap();
    assert!(!by_type.is_empty(), "{detail}");
    let day_view_total: u64 = by_type.values().map(|count| count.as_u64().unwrap()).sum();
    assert!(day_view_total > 0, "{detail}");
    assert_eq!(detail["events"].as_u64(), Some(day_view_total));
    let windows = detail["windows"].as_array().unwrap();
    assert!(!windows.is_empty() && windows.len() <= 60, "{detail}");
    assert!(windows[0]["window_end"].as_str().unwrap().ends_with('Z'));
    assert!(detail["alerts"].is_array());
    let (status, _) = get_text(&client, &format!("{base}/api/v1/cells/99999999999999")).await;
    assert_eq!(status, 404);

    let (status, body) = get_text(&client, &format!("{base}/api/v1/cells?view=7m")).await;
    assert_eq!(status, 400, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["parameter"], "view");

    let (status, alerts) = get_text(&client, &format!("{base}/api/v1/alerts")).await;
    assert_eq!(status, 200);
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    assert!(alerts["alerts"].is_array());
    assert!(!alerts["rules_version"].as_str().unwrap().is_empty());

    service.stop().await;
    let windows = std::fs::read_to_string(output_directory.path().join("windows.jsonl")).unwrap();
    assert!(
        windows.lines().count() > 0,
        "final windows were flushed to disk"
    );
    for line in windows.lines() {
        let window: gridwatch::proto::CellWindow = serde_json::from_str(line).unwrap();
        assert!(window.count > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_a_state_snapshot_that_restores_into_a_pipeline() {
    let directory = tempfile::tempdir().unwrap();
    let snapshot_path = directory.path().join("gridwatch.snapshot");
    let mut config = Config::default();
    config.simulator.backfill = Duration::from_secs(20 * 60);
    config.simulator.rate_multiplier = 5.0;
    config.state.snapshot_path = Some(snapshot_path.clone());
    let service = InProcessService::start(config).await;
    let client = reqwest::Client::new();
    wait_for_body(
        &client,
        &service.url("/metrics"),
        Duration::from_secs(60),
        |body| {
            metric_value(body, "gridwatch_windows_emitted_total", &[])
                .is_some_and(|value| value > 0.0)
        },
    )
    .await;
    service.stop().await;

    let bytes = std::fs::read(&snapshot_path).expect("snapshot written at shutdown");
    let (mut pipeline, _) = crate::support::default_pipeline();
    assert_eq!(pipeline.watermark_millis(), None);
    gridwatch::state::restore(&mut pipeline, &bytes).unwrap();
    assert!(
        pipeline.watermark_millis().is_some(),
        "restored state carries the watermark"
    );
    assert!(
        !pipeline.top_cells(0, 5).is_empty(),
        "restored state carries the panes"
    );
}
