//! The console in a real browser: gridwatch runs in-process on the simulator with a fire, and
//! headless Chromium (Debian's `chromium`, driven over WebDriver by `chromedriver`) opens `/`.
//! Everything asserted is read from the page itself: the cells drawn, the fire's alert in the
//! list and its cell marked, the labels after the English toggle, the browser's console, and
//! the page going from "reconnecting" back to live data across a service restart. Screenshots
//! at the wall (1920×1080) and laptop (1366×768) sizes go to
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`; page weight, time to first render and JS heap
//! are printed (`cargo test --test it console -- --nocapture`).
//!
//! Locally the test is skipped when Chromium or the read-model API is missing; under `CI=true`
//! both are failures (`.ci/run` installs `chromium` and `chromium-driver`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use gridwatch::config::{Config, SimulatorPacing};
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::proto::EventType;
use gridwatch::source::simulator::{Scenario, ScenarioDuration, ScenarioTime};
use serde_json::{json, Value};

use crate::support::tools::tool_on_path;
use crate::support::InProcessService;

const INSTALL_HINT: &str = "apt-get install chromium chromium-driver";
/// The city's cells (`seeds/grids.geojson`).
const CELLS: u64 = 1_911;
/// Simulated history before the service starts.
const BACKFILL_SECONDS: u64 = 120;
/// The fire starts this long after the service: the page is loaded and live by then.
const FIRE_AFTER_START_SECONDS: u64 = 20;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false")
}

/// A cell with a smoke detector: the fire scenario's alarms locate there.
fn cell_with_a_smoke_detector(registry: &GridRegistry) -> String {
    let cell = (0..registry.cells().len() as u32)
        .map(CellIndex)
        .find(|cell| {
            registry
                .devices_in_cell(*cell)
                .iter()
                .any(|device| device.event_types.contains(&EventType::FireSmoke))
        })
        .expect("a cell with a smoke detector");
    registry.cell(cell).grid_id.clone()
}

/// The simulator in real time with a fire in `grid_id` `FIRE_AFTER_START_SECONDS` after start.
fn fire_config(grid_id: &str) -> Config {
    let mut config = Config::default();
    config.simulator.pacing = SimulatorPacing::Realtime;
    config.simulator.backfill = Duration::from_secs(BACKFILL_SECONDS);
    config.simulator.rate_multiplier = 3.0;
    config.simulator.scenarios = vec![Scenario::Fire {
        grid_id: grid_id.to_string(),
        at: ScenarioTime::AfterStart(
            i64::try_from((BACKFILL_SECONDS + FIRE_AFTER_START_SECONDS) * 1000).unwrap(),
        ),
    }];
    config.window.max_out_of_orderness = Duration::from_secs(2);
    config.window.idle_timeout = Duration::from_secs(2);
    config.validate().unwrap();
    config
}

/// `chromedriver` on a free port, killed when dropped with the browsers it started: it runs
/// in a process group of its own, and the whole group is killed (a failed assertion used to
/// leave an orphaned Chromium busy on the machine).
struct ChromeDriver {
    url: String,
    process: tokio::process::Child,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.process.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl ChromeDriver {
    async fn start(binary: &PathBuf) -> ChromeDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = tokio::process::Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(|response| response.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver answers /status within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ChromeDriver { url, process }
    }

    /// A headless Chromium session that keeps the browser's console log and exposes precise
    /// heap figures and `gc()` (for the heap samples).
    async fn session(&self, chromium: &PathBuf) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1920,1080", "--enable-precise-memory-info",
                    "--js-flags=--expose-gc", "--no-first-run", "--disable-extensions",
                ],
            }),
        );
        capabilities.insert("goog:loggingPrefs".to_string(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }

    /// The browser console entries logged since the last call (chromedriver's log endpoint).
    async fn browser_log(&self, browser: &Client) -> Vec<Value> {
        let session = browser.session_id().await.unwrap().unwrap();
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"].as_array().cloned().unwrap_or_default()
    }
}

/// Runs `script` (a function body) in the page and returns its value.
async fn eval(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

/// Polls `script` until it returns a truthy value; panics with `what` after `timeout`.
async fn wait_until(browser: &Client, script: &str, timeout: Duration, what: &str) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = eval(browser, script).await;
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(flag) => *flag,
            Value::Number(number) => number.as_f64() != Some(0.0),
            Value::String(text) => !text.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            let probe = eval(
                browser,
                "return JSON.stringify({probe: window.__gridwatch, cells: document.querySelectorAll('#cells path').length})",
            )
            .await;
            panic!("{what}: not within {timeout:?}; page state: {probe}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Severe browser console entries that are not the expected failed requests of a restart.
fn unexpected_errors(entries: &[Value], restarting: bool) -> Vec<String> {
    entries
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
        .filter(|message| !(restarting && message.contains("net::ERR_")))
        .collect()
}

async fn screenshot(browser: &Client, width: u32, height: u32, name: &str) -> PathBuf {
    // The window's size includes the (headless) browser's frame, whose size a browser reports
    // only once a resize has taken effect (Chromium 156 answered with the previous size's
    // frame): resize, read the viewport, correct by what is missing, until it is
    // `width`×`height`.
    let (mut window_width, mut window_height) = (width, height);
    let mut viewport = json!(null);
    for _attempt in 0..8 {
        browser
            .set_window_size(window_width, window_height)
            .await
            .unwrap();
        // Let the layout (and the wall/laptop class) settle after the resize.
        tokio::time::sleep(Duration::from_millis(300)).await;
        viewport = eval(browser, "return [window.innerWidth, window.innerHeight]").await;
        let inner_width = u32::try_from(viewport[0].as_u64().unwrap()).unwrap();
        let inner_height = u32::try_from(viewport[1].as_u64().unwrap()).unwrap();
        if (inner_width, inner_height) == (width, height) {
            break;
        }
        window_width = (window_width + width).saturating_sub(inner_width);
        window_height = (window_height + height).saturating_sub(inner_height);
    }
    assert_eq!(viewport, json!([width, height]), "viewport for {name}");
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join(name);
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// What the page says about its own load: bytes transferred (the page, its assets and the
/// GeoJSON; the never-ending stream is left out), time to first full render and JS heap.
/// The alert of `fingerprint` in the API's list at `alerts_url` (panics with `what` when it
/// is not there).
async fn api_alert(alerts_url: &str, fingerprint: &str, what: &str) -> Value {
    let alerts: Value = reqwest::get(alerts_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["fingerprint"] == fingerprint)
        .cloned()
        .expect(what)
}

async fn page_figures(browser: &Client) -> Value {
    eval(
        browser,
        "const entries = performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'));
         const loaded = entries.filter((entry) => !entry.name.includes('/api/v1/stream'));
         return {
           transferred: loaded.reduce((sum, entry) => sum + (entry.transferSize || 0), 0),
           resources: loaded.map((entry) => [entry.name.replace(location.origin, ''), entry.transferSize, entry.decodedBodySize]),
           first_render_millis: window.__gridwatch.firstRenderMillis,
           geojson_fetch_millis: loaded.filter((entry) => entry.name.includes('cells.geojson'))
             .map((entry) => Math.round(entry.responseEnd - entry.startTime))[0],
           geojson_waiting_millis: loaded.filter((entry) => entry.name.includes('cells.geojson'))
             .map((entry) => Math.round(entry.responseStart - entry.requestStart))[0],
           heap: performance.memory ? performance.memory.usedJSHeapSize : null,
         };",
    )
    .await
}

/// The browser, the driver and the service, or `None` (after a notice) when this machine
/// cannot run the test and CI is unset.
struct Setup {
    chromium: PathBuf,
    driver: ChromeDriver,
}

/// One browser test at a time: two Chromiums and two services on a 2-core runner would blur
/// the timings the tests assert.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup() -> Option<Setup> {
    let driver_binary = tool_on_path(&["chromedriver"], INSTALL_HINT)?;
    let chromium = tool_on_path(&["chromium", "chromium-browser"], INSTALL_HINT)?;
    Some(Setup {
        chromium,
        driver: ChromeDriver::start(&driver_binary).await,
    })
}

/// Whether the service serves the endpoints the console reads; when it does not (the API
/// of docs/read-model-and-api.md not merged yet), the test is skipped locally and fails in CI.
async fn api_is_there(base_url: &str, token: Option<&str>) -> bool {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = client.get(format!("{base_url}/api/v1/cells.geojson?view=1h"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request
            .send()
            .await
            .map(|response| response.status().as_u16())
            .unwrap_or(0);
        match status {
            200 => return true,
            404 | 405 => {
                assert!(
                    !under_ci(),
                    "CI is set but {base_url}/api/v1/cells.geojson answers {status}"
                );
                println!("skipping: the service has no /api/v1/cells.geojson yet ({status})");
                return false;
            }
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("/api/v1/cells.geojson answered {status} for 30 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_city_and_a_fire_in_chromium_and_survives_a_restart() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(setup) = setup().await else {
        return;
    };
    let grid_id = cell_with_a_smoke_detector(&GridRegistry::embedded());
    let service = InProcessService::start(fire_config(&grid_id)).await;
    let base_url = service.base_url.clone();
    if !api_is_there(&base_url, None).await {
        service.stop().await;
        return;
    }
    let browser = setup.driver.session(&setup.chromium).await;
    browser.goto(&format!("{base_url}/")).await.unwrap();

    // Every cell of the city is drawn, and the page reports its first full render.
    let drawn = wait_until(
        &browser,
        "const n = document.querySelectorAll('#cells path[data-grid]').length; return n >= 1911 ? n : 0;",
        Duration::from_secs(30),
        "the city's cells are drawn",
    )
    .await;
    assert_eq!(drawn.as_u64(), Some(CELLS));
    wait_until(
        &browser,
        "return window.__gridwatch.firstRenderMillis !== null && window.__gridwatch.connection === 'live';",
        Duration::from_secs(20),
        "first render done and the stream live",
    )
    .await;
    assert_eq!(
        eval(&browser, "return document.documentElement.lang").await,
        "zh-CN",
        "Chinese by default"
    );

    // The fire: its life-safety alert enters the list within 5 s of its first event (the
    // alert's starts_at), its cell pulses and the red banner names it.
    let selector =
        format!("#alerts li[data-grid='{grid_id}'][data-life-safety='true'][data-status='FIRING']");
    let shown = wait_until(
        &browser,
        &format!(
            "const item = document.querySelector(\"{selector}\");
             if (!item) return null;
             const fingerprint = item.dataset.fingerprint;
             const listed = Array.from(document.querySelectorAll('#alerts li'));
             const position = listed.indexOf(item);
             const only_life_safety_above = listed.slice(0, position).every((above) => above.dataset.lifeSafety === 'true');
             return {{fingerprint, position, only_life_safety_above, shown_at: window.__gridwatch.alertShown[fingerprint]}};"
        ),
        Duration::from_secs(BACKFILL_SECONDS + FIRE_AFTER_START_SECONDS + 60),
        "the fire's life-safety alert in the list",
    )
    .await;
    let fingerprint = shown["fingerprint"].as_str().unwrap().to_string();
    let alert = api_alert(
        &format!("{base_url}/api/v1/alerts?grid={grid_id}"),
        &fingerprint,
        "the page's alert is the API's",
    )
    .await;
    let starts_at = alert["starts_at"].as_str().unwrap().to_string();
    let starts_millis = chrono::DateTime::parse_from_rfc3339(&starts_at)
        .unwrap()
        .timestamp_millis();
    let shown_millis = shown["shown_at"].as_i64().unwrap();
    let delay_millis = shown_millis - starts_millis;
    println!("fire alert shown {delay_millis} ms after its event ({starts_at})");
    assert!(
        delay_millis <= 5_000,
        "the fire's alert reached the list {delay_millis} ms after its event"
    );
    // The simulator's own life-safety events may be firing too, and an older one of the same
    // severity is listed before the fire: what must hold is that no other kind is above it.
    assert_eq!(
        shown["only_life_safety_above"], true,
        "life-safety alerts are listed first (the fire at position {})",
        shown["position"]
    );
    let marked = eval(
        &browser,
        &format!(
            "const cell = document.querySelector(\"#cells path[data-grid='{grid_id}']\");
             return {{cell: cell.getAttribute('class'), banner: !document.getElementById('banner').hidden,
                      ring: document.querySelectorAll('#markers circle.ls').length}};"
        ),
    )
    .await;
    assert!(
        marked["cell"]
            .as_str()
            .unwrap()
            .split(' ')
            .any(|class| class == "ls"),
        "the fire's cell pulses: {marked}"
    );
    assert_eq!(marked["banner"], true, "the red banner is up: {marked}");
    assert!(marked["ring"].as_u64().unwrap() >= 1, "{marked}");

    let figures = page_figures(&browser).await;
    println!("console figures: {figures}");
    let transferred = figures["transferred"].as_u64().unwrap();
    assert!(
        transferred <= 1_000_000,
        "page weight {transferred} bytes > 1 MB: {figures}"
    );
    // A fresh start has observed minutes of the year: the fraud panel says "insufficient
    // data" with the observed days, and no row claims "on track".
    let fraud = wait_until(
        &browser,
        "const head = document.getElementById('fraud-head');
         const rows = Array.from(document.querySelectorAll('#fraud li'));
         return head.dataset.status === 'insufficient_data' && rows.length > 0
           ? { head: head.textContent, statuses: Array.from(new Set(rows.map((row) => row.dataset.status))) }
           : null;",
        Duration::from_secs(30),
        "the fraud panel",
    )
    .await;
    assert!(
        fraud["head"].as_str().unwrap().contains("已观测")
            && fraud["head"].as_str().unwrap().contains("数据不足"),
        "{fraud}"
    );
    assert_eq!(fraud["statuses"], json!(["na"]), "{fraud}");
    screenshot(&browser, 1920, 1080, "wall-1920x1080-zh.png").await;
    let wall = eval(
        &browser,
        "return document.documentElement.classList.contains('wall')",
    )
    .await;
    assert_eq!(wall, true, "1920 px wide is the wall layout");

    // The English toggle changes the labels (and the event type names), and back.
    let label = "return document.querySelector('#alerts-panel h2 [data-i18n]').textContent + '|' + document.querySelector(\"".to_string()
        + &selector
        + " .rule\").textContent + '|' + document.documentElement.lang";
    assert_eq!(
        eval(&browser, &label).await,
        "告警|life_safety · 烟感报警|zh-CN"
    );
    browser
        .find(fantoccini::Locator::Id("lang-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        eval(&browser, &label).await,
        "Alerts|life_safety · Fire / smoke|en"
    );
    let errors = unexpected_errors(&setup.driver.browser_log(&browser).await, false);
    let page_errors = eval(&browser, "return window.__gridwatch.errors").await;
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    assert_eq!(page_errors, json!([]), "errors caught in the page");

    // A restart: the page shows that it is reconnecting, then live data from the new service
    // on the same port, without a reload.
    let address: SocketAddr = base_url.trim_start_matches("http://").parse().unwrap();
    let events_before = eval(&browser, "return window.__gridwatch.streamEvents").await;
    service.stop().await;
    wait_until(
        &browser,
        "return window.__gridwatch.connection === 'reconnecting' && document.getElementById('connection').dataset.state === 'reconnecting';",
        Duration::from_secs(15),
        "the page shows it is reconnecting",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listener = rebind(address).await;
    let mut config = fire_config(&grid_id);
    config.simulator.scenarios.clear();
    let restarted = InProcessService::start_on(config, listener);
    wait_until(
        &browser,
        "return window.__gridwatch.connection === 'live' && window.__gridwatch.connects >= 2;",
        Duration::from_secs(40),
        "the page is live again after the restart",
    )
    .await;
    let events_after_reconnect = eval(&browser, "return window.__gridwatch.streamEvents").await;
    wait_until(
        &browser,
        &format!("return window.__gridwatch.streamEvents > {events_after_reconnect} && document.querySelectorAll('#pipeline .item').length > 0;"),
        Duration::from_secs(20),
        "live events from the new service",
    )
    .await;
    assert!(events_after_reconnect.as_u64() >= events_before.as_u64());
    assert_eq!(
        eval(
            &browser,
            "return document.querySelectorAll('#cells path[data-grid]').length"
        )
        .await,
        json!(CELLS)
    );
    screenshot(&browser, 1366, 768, "laptop-1366x768-en.png").await;
    let wall = eval(
        &browser,
        "return document.documentElement.classList.contains('wall')",
    )
    .await;
    assert_eq!(wall, false, "1366 px wide is the laptop layout");
    let errors = unexpected_errors(&setup.driver.browser_log(&browser).await, true);
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    assert_eq!(
        eval(&browser, "return window.__gridwatch.errors").await,
        json!([])
    );

    browser.close().await.unwrap();
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_a_token_on_401_and_then_reads_the_api_with_it() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(setup) = setup().await else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let token = "console-test-viewer-token-1234";
    let tokens_path = directory.path().join("tokens");
    std::fs::write(&tokens_path, format!("viewer {token}\n")).unwrap();
    let mut config = Config::default();
    config.simulator.backfill = Duration::from_secs(60);
    config.http.tokens_file = Some(tokens_path);
    let service = InProcessService::start(config).await;
    let base_url = service.base_url.clone();
    if !api_is_there(&base_url, Some(token)).await {
        service.stop().await;
        return;
    }
    let browser = setup.driver.session(&setup.chromium).await;
    // The shell loads without a token; the API's 401 makes the page ask for one.
    browser.goto(&format!("{base_url}/")).await.unwrap();
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').hidden && window.__gridwatch.connection === 'unauthorized';",
        Duration::from_secs(20),
        "the page asks for a token",
    )
    .await;
    assert_eq!(
        eval(
            &browser,
            "return document.querySelectorAll('#cells path').length"
        )
        .await,
        json!(0),
        "nothing is drawn without a token"
    );
    browser
        .find(fantoccini::Locator::Id("token-input"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(fantoccini::Locator::Css("#token-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &browser,
        "return document.querySelectorAll('#cells path[data-grid]').length === 1911 && window.__gridwatch.connection === 'live' && document.getElementById('token-dialog').hidden;",
        Duration::from_secs(30),
        "the map and the stream with the token",
    )
    .await;
    let kept = eval(&browser, "return [sessionStorage.getItem('gridwatch.token') !== null, location.href.includes('token')]").await;
    assert_eq!(
        kept,
        json!([true, false]),
        "kept in sessionStorage, never in the URL"
    );
    // The refused requests before the token are the only console errors.
    let errors: Vec<String> = unexpected_errors(&setup.driver.browser_log(&browser).await, false)
        .into_iter()
        .filter(|message| !message.contains("status of 401"))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    assert_eq!(
        eval(&browser, "return window.__gridwatch.errors").await,
        json!([])
    );
    browser.close().await.unwrap();
    service.stop().await;
}

/// Binds `address` again once the stopped service has released it.
async fn rebind(address: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) if tokio::time::Instant::now() < deadline => {
                println!("rebinding {address}: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot rebind {address}: {error}"),
        }
    }
}

/// Samples the page's JS heap (after a forced GC) over `GRIDWATCH_SOAK_SECONDS` (default
/// 600) of live updates and prints the series; the heap must stay flat (the last sample
/// within 50 % + 2 MB of the first after warm-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes: run with --ignored to measure the console's heap over live updates"]
async fn console_heap_stays_flat_over_ten_minutes_of_live_updates() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(setup) = setup().await else {
        return;
    };
    let seconds: u64 = std::env::var("GRIDWATCH_SOAK_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(600);
    let grid_id = cell_with_a_smoke_detector(&GridRegistry::embedded());
    let mut config = fire_config(&grid_id);
    config.simulator.rate_multiplier = 10.0;
    let service = InProcessService::start(config).await;
    if !api_is_there(&service.base_url, None).await {
        service.stop().await;
        return;
    }
    let browser = setup.driver.session(&setup.chromium).await;
    browser
        .goto(&format!("{}/", service.base_url))
        .await
        .unwrap();
    wait_until(
        &browser,
        "return window.__gridwatch.connection === 'live';",
        Duration::from_secs(60),
        "the page is live",
    )
    .await;
    let sample = "if (window.gc) window.gc(); return {heap: performance.memory.usedJSHeapSize, events: window.__gridwatch.streamEvents, nodes: document.getElementsByTagName('*').length};";
    tokio::time::sleep(Duration::from_secs(30)).await;
    let first = eval(&browser, sample).await;
    println!("soak t=0s {first}");
    let mut last = first.clone();
    let step = 30;
    let mut elapsed = 0;
    while elapsed < seconds {
        tokio::time::sleep(Duration::from_secs(step)).await;
        elapsed += step;
        last = eval(&browser, sample).await;
        println!("soak t={elapsed}s {last}");
    }
    let first_heap = first["heap"].as_f64().unwrap();
    let last_heap = last["heap"].as_f64().unwrap();
    assert!(
        last["events"].as_u64() > first["events"].as_u64(),
        "live updates arrived during the soak"
    );
    assert!(
        last_heap <= first_heap * 1.5 + 2_000_000.0,
        "heap grew from {first_heap} to {last_heap} bytes"
    );
    let errors = unexpected_errors(&setup.driver.browser_log(&browser).await, false);
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    browser.close().await.unwrap();
    service.stop().await;
}

/// The ids of the median community by population and its two nearest neighbours.
fn three_adjacent_communities(registry: &GridRegistry) -> Vec<String> {
    gridwatch::rules::simulation::median_community_and_neighbours(registry, 3)
        .into_iter()
        .map(|community| registry.community(community).id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_a_space_time_cluster_with_every_member_community() {
    let _one_browser = ONE_BROWSER.lock().await;
    let Some(setup) = setup().await else {
        return;
    };
    let registry = GridRegistry::embedded();
    let members = three_adjacent_communities(&registry);
    // A day of history (whatever the hour the test runs at, it holds the day's office hours,
    // when fraud happens), a ×30 fraud wave over three neighbouring communities in all of it:
    // the hourly scan finds them as one cluster within the backfill. And a ×10 wave over
    // every community of another district, which the district rules find as the district.
    let centre_district = &registry
        .community(registry.community_by_id(&members[0]).unwrap())
        .district_code;
    let other_district = registry
        .districts()
        .iter()
        .find(|district| &district.code != centre_district)
        .unwrap()
        .clone();
    let district_communities: Vec<String> = registry
        .communities()
        .iter()
        .filter(|community| community.district_code == other_district.code)
        .map(|community| community.id.clone())
        .collect();
    let wave = |community_id: &String, multiplier: f64| Scenario::FraudWave {
        community_id: community_id.clone(),
        start: ScenarioTime::AfterStart(0),
        duration: ScenarioDuration(25 * 3600 * 1000),
        multiplier,
    };
    let mut config = Config::default();
    config.simulator.backfill = Duration::from_secs(24 * 3600);
    config.simulator.scenarios = members
        .iter()
        .map(|community_id| wave(community_id, 30.0))
        .chain(
            district_communities
                .iter()
                .map(|community_id| wave(community_id, 10.0)),
        )
        .collect();
    config.validate().unwrap();
    let service = InProcessService::start(config).await;
    let base_url = service.base_url.clone();
    if !api_is_there(&base_url, None).await {
        service.stop().await;
        return;
    }
    let browser = setup.driver.session(&setup.chromium).await;
    browser.goto(&format!("{base_url}/")).await.unwrap();
    let names: Vec<String> = members
        .iter()
        .map(|id| {
            let community = registry.community_by_id(id).unwrap();
            registry.community(community).name.clone()
        })
        .collect();
    // The wave's cluster: a firing item listing at least two of the three communities (which
    // of them the scan joins first depends on the draw; later evidence adds the others).
    let item = wait_until(
        &browser,
        &format!(
            "const names = {};
             const items = Array.from(document.querySelectorAll('#alerts li[data-status=\"FIRING\"]'))
               .filter((item) => item.querySelector('.members')
                 && names.filter((name) => item.querySelector('.members').textContent.includes(name)).length >= 2);
             return items.length ? {{ fingerprint: items[0].dataset.fingerprint,
                                     place: items[0].querySelector('.place').textContent,
                                     members: items[0].querySelector('.members').textContent,
                                     measure: items[0].querySelector('.measure').textContent }} : null;",
            json!(names)
        ),
        Duration::from_secs(90),
        "the three communities' cluster alert in the list",
    )
    .await;
    println!("cluster alert in the console: {item}");
    assert!(item["measure"].as_str().unwrap().contains("p="), "{item}");
    // The district wave: a district-scope alert placed at the whole district.
    let district_item = wait_until(
        &browser,
        &format!(
            "const items = Array.from(document.querySelectorAll('#alerts li[data-status=\"FIRING\"]'))
               .filter((item) => item.querySelector('.place').textContent === {});
             return items.length ? items[0].querySelector('.place').textContent : null;",
            json!(format!("{} / 全区", other_district.name_zh))
        ),
        Duration::from_secs(60),
        "the district alert in the list",
    )
    .await;
    println!("district alert in the console: {district_item}");
    // The API says the same: the alert of that fingerprint is a cluster whose members, in
    // order, are the names the console lists, and their number is the one the place gives.
    let cluster = api_alert(
        &format!("{base_url}/api/v1/alerts"),
        item["fingerprint"].as_str().unwrap(),
        "the console's cluster alert in the API",
    )
    .await;
    assert_eq!(cluster["scope"], "cluster", "{cluster}");
    let api_members: Vec<(&str, &str)> = cluster["cluster_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["community_id"].as_str().unwrap(),
                member["community_name"].as_str().unwrap(),
            )
        })
        .collect();
    // The console may have rendered an earlier state of a growing cluster: compare with the
    // API's members only when the counts agree, and always check the listed names are members.
    let listed = item["members"].as_str().unwrap();
    let listed_names: Vec<&str> = listed.split('、').collect();
    for name in &listed_names {
        assert!(
            api_members.iter().any(|(_, api_name)| api_name == name),
            "{name} listed but not a member: {cluster}"
        );
    }
    assert!(
        item["place"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{}个相邻社区聚集", listed_names.len())),
        "{item}"
    );
    assert_eq!(
        cluster["cluster_members"][0]["community_id"],
        cluster["community_id"]
    );
    assert!(
        api_members
            .iter()
            .filter(|(id, _)| members.iter().any(|member| member == id))
            .count()
            >= 2,
        "{cluster}"
    );
    screenshot(&browser, 1920, 1080, "cluster-1920x1080-zh.png").await;
    let errors = unexpected_errors(&setup.driver.browser_log(&browser).await, false);
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    assert_eq!(
        eval(&browser, "return window.__gridwatch.errors").await,
        json!([])
    );
    browser.close().await.unwrap();
    service.stop().await;
}
