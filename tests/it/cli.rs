//! The `gridwatch` binary end to end: simulate → replay in both formats, and check-config.

use std::path::Path;
use std::process::Command;

fn gridwatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    command.env_remove("RUST_LOG");
    command
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("gridwatch runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn simulate(directory: &Path, format: &str, file_name: &str) -> std::path::PathBuf {
    let path = directory.join(file_name);
    run_ok(
        gridwatch()
            .args([
                "simulate",
                "--events",
                "20000",
                "--seed",
                "9",
                "--rate-multiplier",
                "20",
                "--format",
                format,
                "--out",
            ])
            .arg(&path),
    );
    path
}

fn replay(input: &Path, format: &str, output_directory: &Path) -> String {
    run_ok(
        gridwatch()
            .args(["replay", "--no-progress", "--format", format, "--input"])
            .arg(input)
            .arg("--output-dir")
            .arg(output_directory),
    )
}

#[test]
fn jsonl_and_protobuf_replays_of_the_same_simulation_agree() {
    let directory = tempfile::tempdir().unwrap();
    let jsonl = simulate(directory.path(), "jsonl", "events.jsonl");
    let protobuf = simulate(directory.path(), "protobuf", "events.pb");
    let jsonl_output = directory.path().join("out-jsonl");
    let protobuf_output = directory.path().join("out-protobuf");
    let jsonl_summary = replay(&jsonl, "jsonl", &jsonl_output);
    let protobuf_summary = replay(&protobuf, "protobuf", &protobuf_output);
    assert!(
        jsonl_summary.contains("records      20000"),
        "{jsonl_summary}"
    );
    assert!(jsonl_summary.contains("events/s"), "{jsonl_summary}");
    assert!(
        protobuf_summary.contains("records      20000"),
        "{protobuf_summary}"
    );
    for name in ["windows.jsonl", "alerts.jsonl"] {
        let from_jsonl = std::fs::read_to_string(jsonl_output.join(name)).unwrap();
        let from_protobuf = std::fs::read_to_string(protobuf_output.join(name)).unwrap();
        assert_eq!(from_jsonl, from_protobuf, "{name}");
        if name == "windows.jsonl" {
            assert!(
                from_jsonl.lines().count() > 100,
                "a busy simulation produces windows"
            );
        }
    }
    // Dead-letter payloads keep their input format, so compare the reasons.
    let reasons = |directory: &Path| -> Vec<String> {
        std::fs::read_to_string(directory.join("dead_letter.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["reason"].to_string()
            })
            .collect()
    };
    assert_eq!(reasons(&jsonl_output), reasons(&protobuf_output));
    // A second replay of the same file is byte-identical (determinism).
    let again = directory.path().join("again");
    replay(&jsonl, "jsonl", &again);
    for name in ["windows.jsonl", "alerts.jsonl", "dead_letter.jsonl"] {
        assert_eq!(
            std::fs::read(jsonl_output.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn check_config_accepts_the_shipped_example_and_default_rules() {
    let stdout = run_ok(gridwatch().args(["check-config", "deploy/gridwatch.example.toml"]));
    assert!(stdout.contains("ok"), "{stdout}");
    let stdout = run_ok(gridwatch().args(["check-config", "seeds/rules.toml"]));
    assert!(stdout.contains("rules version"), "{stdout}");
}

#[test]
fn check_config_reports_every_problem_and_fails() {
    let directory = tempfile::tempdir().unwrap();
    let bad_config = directory.path().join("bad.toml");
    std::fs::write(
        &bad_config,
        "[window]\nsize = \"0s\"\n[ingest]\ndedup_horizon = \"1s\"\n[http]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let output = gridwatch()
        .arg("check-config")
        .arg(&bad_config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["window.size", "ingest.dedup_horizon", "http.listen"] {
        assert!(stderr.contains(expected), "missing {expected}:\n{stderr}");
    }

    let bad_rules = directory.path().join("rules.toml");
    std::fs::write(
        &bad_rules,
        "[[rule]]\nname = \"Bad Name\"\nkind = \"threshold\"\nevent_types = [\"UFO\"]\nwindow = \"90s\"\nmin_count = 0\n",
    )
    .unwrap();
    let output = gridwatch()
        .arg("check-config")
        .arg(&bad_rules)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["Bad Name", "UFO", "multiple of the pane size", "min_count"] {
        assert!(stderr.contains(expected), "missing {expected}:\n{stderr}");
    }
}

/// A `gridwatch run` child process and the HTTP address it printed.
struct RunningService {
    /// The process.
    child: std::process::Child,
    /// host:port of its HTTP endpoint.
    address: String,
}

impl RunningService {
    /// Starts `gridwatch run` with a 30 min simulator backlog and the given extra variables.
    fn start(extra_environment: &[(&str, &std::ffi::OsStr)]) -> RunningService {
        let mut command = gridwatch();
        command
            .arg("run")
            .env("GRIDWATCH_HTTP__LISTEN", "127.0.0.1:0")
            .env("GRIDWATCH_SIMULATOR__BACKFILL", "30m")
            .env("GRIDWATCH_SIMULATOR__RATE_MULTIPLIER", "5")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in extra_environment {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let (address, _log_reader) =
            crate::support::follow_log(child.stderr.take().unwrap(), std::io::sink());
        RunningService { child, address }
    }

    /// The body of `GET /metrics`, if the service answers.
    fn metrics(&self) -> Option<String> {
        crate::support::http_get(&self.address, "/metrics").map(|(_, body)| body)
    }

    /// Waits up to 60 s until a metrics line satisfies `predicate`.
    fn wait_for_metric_line(&self, what: &str, predicate: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if self
                .metrics()
                .is_some_and(|body| body.lines().any(&predicate))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Sends a signal with `kill`.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn run_prints_its_address_and_sigterm_flushes_outputs_and_exits_cleanly() {
    let directory = tempfile::tempdir().unwrap();
    let mut service =
        RunningService::start(&[("GRIDWATCH_OUTPUT__DIR", directory.path().as_os_str())]);
    // The 30 min backlog closes many windows at once.
    service.wait_for_metric_line("windows", |line| {
        line.starts_with("gridwatch_windows_emitted_total ") && !line.ends_with(" 0")
    });
    service.signal("TERM");
    let exit = service.child.wait().unwrap();
    assert!(exit.success(), "gridwatch exits 0 on SIGTERM: {exit:?}");
    let windows = std::fs::read_to_string(directory.path().join("windows.jsonl")).unwrap();
    assert!(windows.lines().count() > 0, "windows flushed at shutdown");
}

#[test]
fn sighup_rereads_the_rules_file() {
    let directory = tempfile::tempdir().unwrap();
    let rules_path = directory.path().join("rules.toml");
    std::fs::copy("seeds/rules.toml", &rules_path).unwrap();
    let mut service = RunningService::start(&[("GRIDWATCH_RULES__PATH", rules_path.as_os_str())]);
    service.wait_for_metric_line("the service", |line| {
        line.starts_with("gridwatch_build_info")
    });
    service.signal("HUP");
    // The file did not change: the reload is counted as unchanged, and the process lives on.
    service.wait_for_metric_line("the sighup reload", |line| {
        line.starts_with("gridwatch_rules_reloads_total")
            && line.contains("trigger=\"sighup\"")
            && line.contains("result=\"unchanged\"")
            && line.ends_with(" 1")
    });
    service.signal("TERM");
    assert!(service.child.wait().unwrap().success());
}

#[test]
fn fraud_import_of_a_malformed_file_lists_every_bad_row_and_stores_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let (config, history) = crate::support::fraud_import_config(directory.path());
    let cases = directory.path().join("cases.csv");
    std::fs::write(
        &cases,
        "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n\
         410602001001,2026,1,3,1,1\n\
         000000000000,2026,1,3,1,1\n\
         410602001001,2026,0,3,1,1\n\
         410602001002,2026,1,three,1,1\n",
    )
    .unwrap();
    let output = gridwatch()
        .args(["fraud", "import", "--config"])
        .arg(&config)
        .arg("--from")
        .arg(&cases)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "3 problem(s)",
        "line 3: community \"000000000000\" is not in the registry",
        "line 4: month 0",
        "line 5: column \"fraud_warnings\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert!(!history.exists(), "nothing imported");

    std::fs::write(
        &cases,
        "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n\
         410602001001,2026,1,3,1,1\n",
    )
    .unwrap();
    let stdout = run_ok(
        gridwatch()
            .args(["fraud", "import", "--config"])
            .arg(&config)
            .arg("--from")
            .arg(&cases),
    );
    assert!(
        stdout.contains("imported 1 community-months (1 cases filed"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&history)
        .unwrap()
        .contains("410602001001,2026,1,3,1,1,0"));
    let stdout = run_ok(
        gridwatch()
            .args(["fraud", "import", "--config"])
            .arg(&config)
            .arg("--from")
            .arg(&cases),
    );
    assert!(stdout.contains("unchanged"), "{stdout}");

    // A dry run of a changed file says what it would do and stores nothing.
    std::fs::write(
        &cases,
        "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n\
         410602001001,2026,1,3,1,2\n",
    )
    .unwrap();
    let stdout = run_ok(
        gridwatch()
            .args(["fraud", "import", "--dry-run", "--config"])
            .arg(&config)
            .arg("--from")
            .arg(&cases),
    );
    assert!(
        stdout.contains("would import 1 community-months (2 cases filed"),
        "{stdout}"
    );
    assert!(stdout.contains("would be written"), "{stdout}");
    assert!(std::fs::read_to_string(&history)
        .unwrap()
        .contains("410602001001,2026,1,3,1,1,0"));
}
