//! The command line as a user meets it (issue 16): one test per row of the table,
//! the binary run as a user would, exit code and output checked; the generated completions
//! and man page; and the `--help` texts compared with reviewed copies in
//! `tests/fixtures/help/` (`GRIDWATCH_BLESS=1` rewrites them after a deliberate change).

use std::path::Path;
use std::process::{Command, Output};

fn gridwatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    command
        .env_remove("RUST_LOG")
        .env_remove("GRIDWATCH_CONFIG")
        .env_remove("NO_COLOR");
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn simulate_jsonl(directory: &Path, events: u32) -> std::path::PathBuf {
    let path = directory.join("events.jsonl");
    let output = gridwatch()
        .args([
            "simulate",
            "--quiet",
            "--events",
            &events.to_string(),
            "--out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    path
}

#[test]
fn replaying_jsonl_as_protobuf_fails_with_code_5_and_names_the_likely_format() {
    let directory = tempfile::tempdir().unwrap();
    let input = simulate_jsonl(directory.path(), 500);
    let output = gridwatch()
        .args(["replay", "--no-progress", "--format", "protobuf", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(directory.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let error = stderr(&output);
    assert!(
        error.contains("failed to decode as protobuf — is the file JSONL? (try --format jsonl)"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "one-line diagnosis: {error}");
}

#[test]
fn replay_without_format_detects_jsonl_and_succeeds() {
    let directory = tempfile::tempdir().unwrap();
    let input = simulate_jsonl(directory.path(), 500);
    let output = gridwatch()
        .args(["replay", "--no-progress", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(directory.path().join("out"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("records      500"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_missing_input_exits_4_and_says_so_once() {
    let directory = tempfile::tempdir().unwrap();
    let output = gridwatch()
        .args(["replay", "--input", "missing.jsonl", "--output-dir"])
        .arg(directory.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(
        stderr(&output),
        "error: cannot read input missing.jsonl: no such file\n"
    );
}

#[test]
fn produce_to_an_unreachable_broker_logs_within_seconds_and_gives_up_at_the_timeout() {
    let started = std::time::Instant::now();
    let output = gridwatch()
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--events",
            "10",
            "--connect-timeout",
            "4s",
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(elapsed < std::time::Duration::from_secs(15), "{elapsed:?}");
    let error = stderr(&output);
    assert!(
        error.contains("kafka brokers not reachable yet; retrying"),
        "{error}"
    );
    assert!(
        error.contains("error: cannot reach the Kafka brokers 127.0.0.1:1 within 4s"),
        "{error}"
    );
}

#[test]
fn simulate_shows_progress_lines_when_stderr_is_not_a_terminal_and_none_with_quiet() {
    let directory = tempfile::tempdir().unwrap();
    // Lines every 5 s and a last one at the end, whatever the machine's speed.
    let output = gridwatch()
        .args(["simulate", "--events", "150000", "--out"])
        .arg(directory.path().join("a.jsonl"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let progress = stderr(&output);
    assert!(
        progress
            .lines()
            .any(|line| line.starts_with("progress: ") && line.contains("/150000 events")),
        "{progress}"
    );
    assert!(stdout(&output).contains("wrote 150000 events"));
    let quiet = gridwatch()
        .args(["simulate", "--quiet", "--events", "1000", "--out"])
        .arg(directory.path().join("b.jsonl"))
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "");
}

#[test]
fn a_rules_file_whose_rule_line_has_a_comment_is_checked_as_rules() {
    let directory = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string("seeds/rules.toml")
        .unwrap()
        .replacen("[[rule]]\n", "[[rule]] # the first rule\n", 1);
    assert!(rules.contains("[[rule]] # the first rule"));
    let path = directory.path().join("rules.toml");
    std::fs::write(&path, rules).unwrap();
    let output = gridwatch().arg("check-config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(": ok (rules version"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_invalid_rules_file_exits_3_naming_the_file_and_line() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("rules.toml");
    std::fs::write(&path, "[[rule]] # fire\nname = \"fire\"\n").unwrap();
    let output = gridwatch().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let error = stderr(&output);
    assert!(error.contains("rules.toml: "), "{error}");
    assert!(error.contains("line 1"), "{error}");
    assert!(error.contains("missing field `kind`"), "{error}");
}

#[test]
fn run_logs_flat_json_without_colour_on_stderr_including_the_listening_line() {
    let mut child = gridwatch()
        .args(["run", "--log-format", "json"])
        .env("GRIDWATCH_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (address, log) = crate::support::follow_log(child.stderr.take().unwrap(), Vec::new());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(stdout(&output), "", "stdout carries no log line");
    let logs = String::from_utf8(log.join().unwrap()).unwrap();
    assert!(
        !logs.contains('\u{1b}'),
        "no escape codes in a file: {logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|line| line["message"].is_string() && line.get("fields").is_none()));
    let listening = lines
        .iter()
        .find(|line| line["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["url"], format!("http://{address}"));
}

#[test]
fn text_logs_have_no_colour_when_stderr_is_a_file() {
    let output = gridwatch()
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--connect-timeout",
            "3s",
        ])
        .output()
        .unwrap();
    let logs = stderr(&output);
    assert!(logs.contains(" WARN "), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs}");
}

#[test]
fn kafka_payload_formats_use_the_file_vocabulary_and_keep_the_old_name() {
    let help = stdout(&gridwatch().args(["produce", "--help"]).output().unwrap());
    let payload_line = help
        .lines()
        .find(|line| line.contains("One JSON event per record"))
        .unwrap_or_else(|| panic!("{help}"));
    assert!(
        payload_line.trim_start().starts_with("- jsonl:"),
        "{payload_line}"
    );
    // The old name still parses (it fails later, at the broker, not at the command line).
    let output = gridwatch()
        .args([
            "produce",
            "--format",
            "json",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--connect-timeout",
            "3s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_code_2() {
    let output = gridwatch().args(["replay", "--nope"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// `produce --rate` takes a positive number of events per second (zero once meant "as fast as
/// possible" without a word) and replaces `--rate-multiplier`, which it would silently undo;
/// both are refused before any broker is contacted.
#[test]
fn produce_refuses_a_rate_that_is_not_positive_or_comes_with_a_rate_multiplier() {
    for rate in ["0", "-5", "NaN", "inf", "fast"] {
        let output = gridwatch()
            .args(["produce", "--topic", "t", "--rate", rate])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--rate {rate}");
        assert!(
            stderr(&output).contains("is not a positive number of events per second"),
            "--rate {rate}: {}",
            stderr(&output)
        );
    }
    let output = gridwatch()
        .args([
            "produce",
            "--topic",
            "t",
            "--rate",
            "50",
            "--rate-multiplier",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "_gridwatch()"),
        ("zsh", "#compdef gridwatch"),
        ("fish", "complete -c gridwatch"),
    ] {
        let output = gridwatch().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: {script}");
        for subcommand in ["replay", "check-config", "completions"] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
}

#[test]
fn the_man_page_is_generated_from_the_clap_definitions() {
    let output = gridwatch().arg("man").output().unwrap();
    assert!(output.status.success());
    let page = stdout(&output);
    assert!(page.contains(".TH gridwatch 1"), "{page}");
    for expected in ["replay", "check\\-config", "Exit codes:"] {
        assert!(page.contains(expected), "man page lacks {expected}");
    }
}

/// Every subcommand whose `--help` is kept under review.
const HELP_PAGES: [&[&str]; 16] = [
    &[],
    &["run"],
    &["replay"],
    &["simulate"],
    &["produce"],
    &["dlq"],
    &["dlq", "replay"],
    &["fraud"],
    &["fraud", "import"],
    &["config"],
    &["config", "show"],
    &["check-config"],
    &["healthcheck"],
    &["gen-seeds"],
    &["completions"],
    &["man"],
];

#[test]
fn help_texts_match_their_reviewed_copies_and_each_has_examples() {
    let bless = std::env::var_os("GRIDWATCH_BLESS").is_some();
    let mut differences = Vec::new();
    for page in HELP_PAGES {
        let output = gridwatch().args(page).arg("--help").output().unwrap();
        assert!(output.status.success(), "{page:?}");
        let help = stdout(&output);
        assert!(
            help.contains("Examples:\n  gridwatch "),
            "{page:?} has no examples:\n{help}"
        );
        let name = if page.is_empty() {
            "gridwatch".to_string()
        } else {
            page.join("-")
        };
        let path = Path::new("tests/fixtures/help").join(format!("{name}.txt"));
        if bless {
            std::fs::write(&path, &help).unwrap();
            continue;
        }
        let reviewed = std::fs::read_to_string(&path).unwrap_or_default();
        if reviewed != help {
            differences.push(format!("{}:\n{help}", path.display()));
        }
    }
    assert!(
        differences.is_empty(),
        "--help changed; review and rerun with GRIDWATCH_BLESS=1:\n{}",
        differences.join("\n")
    );
}

#[test]
fn a_config_with_many_mistakes_reports_every_one_with_its_file_key_and_expectation() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("gridwatch.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"kafak\"\n\n[window]\nsize = 5\nsise = \"2m\"\n\n[http]\nlisten = \"nowhere\"\nmax_connections = \"many\"\n",
    )
    .unwrap();
    let output = gridwatch()
        .env("GRIDWATCH_INGEST__DEDUP_HORIZON", "banana")
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let error = stderr(&output);
    let file = format!("(file {})", path.display());
    for expected in [
        format!("source.kind: unknown value \"kafak\", expected one of \"simulator\", \"file\", \"kafka\" {file}"),
        format!("window.size: invalid type: found 5, expected a duration {file}"),
        "window.sise: unknown key, expected one of size, max_out_of_orderness, allowed_lateness".to_string(),
        format!("http.max_connections: invalid type: found \"many\", expected a whole number, 0 or more {file}"),
        "ingest.dedup_horizon: invalid value: found \"banana\", expected a duration (env GRIDWATCH_INGEST__DEDUP_HORIZON)".to_string(),
        format!("http.listen \"nowhere\" is not an address like 127.0.0.1:9750 or localhost:9750 {file}"),
    ] {
        assert!(error.contains(&expected), "{expected:?} in:\n{error}");
    }
    assert!(
        !error.contains("default."),
        "no profile name in key paths:\n{error}"
    );
    assert!(!error.contains("``"), "no doubled backticks:\n{error}");
}

#[test]
fn a_host_name_is_accepted_as_http_listen_and_resolved_where_the_service_binds() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("gridwatch.toml");
    std::fs::write(&path, "[http]\nlisten = \"localhost:9750\"\n").unwrap();
    let check = gridwatch().arg("check-config").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let mut child = gridwatch()
        .arg("run")
        .env("GRIDWATCH_HTTP__LISTEN", "localhost:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (address, _log) = crate::support::follow_log(child.stderr.take().unwrap(), std::io::sink());
    let health = crate::support::http_get(&address, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|address| address.ip().is_loopback()),
        "{address}"
    );
    assert_eq!(health.map(|(status, _)| status), Some(200));
}

#[test]
fn gridwatch_config_is_honoured_by_every_command_that_takes_config() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("no-such-config.toml");
    let cases = directory.path().join("cases.csv");
    std::fs::write(
        &cases,
        "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n",
    )
    .unwrap();
    let input = simulate_jsonl(directory.path(), 10);
    let output_dir = directory.path().join("out");
    let out = directory.path().join("x.jsonl");
    let commands: [&[&str]; 8] = [
        &["run"],
        &[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output-dir",
            output_dir.to_str().unwrap(),
        ],
        &["simulate", "--events", "1", "--out", out.to_str().unwrap()],
        &[
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--connect-timeout",
            "1s",
        ],
        &[
            "dlq",
            "replay",
            "--brokers",
            "127.0.0.1:1",
            "--to",
            "t",
            "--connect-timeout",
            "1s",
        ],
        &[
            "fraud",
            "import",
            "--dry-run",
            "--from",
            cases.to_str().unwrap(),
        ],
        &["healthcheck"],
        &["config", "show"],
    ];
    for command in commands {
        let output = gridwatch()
            .env("GRIDWATCH_CONFIG", &missing)
            .args(command)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(3),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("no-such-config.toml does not exist"),
            "{command:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn config_show_prints_every_effective_value_with_its_source_and_no_secret() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("gridwatch.toml");
    let key_file = directory.path().join("webhook-secret");
    std::fs::write(&key_file, "file-secret-7c1d\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[window]\nsize = \"5m\"\n\n[alerting.webhook]\nurl = \"https://hooks.example.org/x\"\nsecret_file = {:?}\n",
            key_file.display().to_string()
        ),
    )
    .unwrap();
    let output = gridwatch()
        .env("GRIDWATCH_CONFIG", &path)
        .env("GRIDWATCH_HTTP__LISTEN", "localhost:9751")
        .env(
            "GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY",
            "env-secret-4b2a-0123456789abcdef",
        )
        .env(
            "GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD",
            "kafka-secret-9e8f",
        )
        .env(
            "GRIDWATCH_ALERTING__ALERTMANAGER_URLS",
            "[\"http://ops:url-secret-5a5a@am:9093\"]",
        )
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output);
    let line = |key: &str| {
        shown
            .lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{shown}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("window.size"),
        format!("window.size = \"5m\" # file {}", path.display())
    );
    assert_eq!(
        line("http.listen"),
        "http.listen = \"localhost:9751\" # env GRIDWATCH_HTTP__LISTEN"
    );
    assert_eq!(line("source.kind"), "source.kind = \"simulator\" # default");
    assert_eq!(
        line("privacy.pseudonymization_key"),
        "privacy.pseudonymization_key = \"***\" # env GRIDWATCH_PRIVACY__PSEUDONYMIZATION_KEY"
    );
    assert_eq!(
        line("alerting.webhook.secret"),
        format!(
            "alerting.webhook.secret = \"***\" # read from {}",
            key_file.display()
        )
    );
    assert_eq!(
        line("kafka.properties.\"sasl.password\""),
        "kafka.properties.\"sasl.password\" = \"***\" # env GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD"
    );
    assert!(
        line("alerting.alertmanager_urls").contains("http://***:***@am:9093"),
        "{shown}"
    );
    assert!(shown.contains("# rules.path (unset)"), "{shown}");
    for secret in [
        "file-secret-7c1d",
        "env-secret-4b2a",
        "kafka-secret-9e8f",
        "url-secret-5a5a",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        assert!(!stderr(&output).contains(secret), "{secret} logged");
    }
}

#[test]
fn long_commands_print_a_json_summary_and_nothing_on_stderr_when_quiet() {
    let directory = tempfile::tempdir().unwrap();
    let events = directory.path().join("events.jsonl");
    let simulate = gridwatch()
        .args([
            "simulate",
            "--quiet",
            "--summary-json",
            "--events",
            "300",
            "--out",
        ])
        .arg(&events)
        .output()
        .unwrap();
    assert!(simulate.status.success(), "{}", stderr(&simulate));
    assert_eq!(stderr(&simulate), "");
    let summary = json_summary(&simulate);
    assert_eq!(summary["command"], "simulate");
    assert_eq!(summary["events"], 300);
    assert_eq!(summary["format"], "jsonl");

    let replay = gridwatch()
        .args(["replay", "--quiet", "--summary-json", "--input"])
        .arg(&events)
        .arg("--output-dir")
        .arg(directory.path().join("out"))
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert_eq!(stderr(&replay), "");
    assert_eq!(stdout(&replay).lines().count(), 1, "{}", stdout(&replay));
    let summary = json_summary(&replay);
    assert_eq!(summary["command"], "replay");
    assert_eq!(summary["records"], 300);
    assert!(
        summary["accepted"]
            .as_u64()
            .is_some_and(|accepted| accepted > 0),
        "{summary}"
    );
    assert!(summary["elapsed_seconds"].is_number());
}

#[test]
fn fraud_import_shows_its_steps_and_a_json_summary() {
    let directory = tempfile::tempdir().unwrap();
    let (config, history) = crate::support::fraud_import_config(directory.path());
    let cases = directory.path().join("cases.csv");
    std::fs::write(
        &cases,
        "community_id,year,month,fraud_warnings,fraud_reported,fraud_cases_filed\n410602001001,2026,1,3,1,1\n",
    )
    .unwrap();
    let output = gridwatch()
        .args(["fraud", "import", "--summary-json", "--config"])
        .arg(&config)
        .arg("--from")
        .arg(&cases)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let progress = stderr(&output);
    assert!(
        progress.contains(&format!("progress: validating {}", cases.display())),
        "{progress}"
    );
    assert!(
        progress.contains(&format!("progress: writing {}", history.display())),
        "{progress}"
    );
    let summary = json_summary(&output);
    assert_eq!(summary["command"], "fraud import");
    assert_eq!(summary["rows"], 1);
    assert_eq!(summary["dry_run"], false);
}

/// A stdout whose reading end is closed before the command starts: every write to it fails
/// with EPIPE, as with `gridwatch replay … | head -0` (a socket pair with one end dropped:
/// `std::io::pipe` is newer than the MSRV).
fn closed_pipe() -> std::process::Stdio {
    let (writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(reader);
    std::process::Stdio::from(std::os::fd::OwnedFd::from(writer))
}

/// The one-line JSON summary a command printed with `--summary-json`.
fn json_summary(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim())
        .unwrap_or_else(|error| panic!("{error}: {}", stdout(output)))
}

/// Whether the command wrote a progress line starting with `prefix` on stderr.
fn has_progress_line(output: &Output, prefix: &str) -> bool {
    stderr(output).lines().any(|line| line.starts_with(prefix))
}

#[test]
fn replay_into_a_closed_pipe_ends_quietly_with_its_usual_exit_code() {
    let directory = tempfile::tempdir().unwrap();
    let input = simulate_jsonl(directory.path(), 200);
    let output = gridwatch()
        .args(["replay", "--quiet", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(directory.path().join("out"))
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "", "no panic, no error");
    let rejected = gridwatch()
        .args(["replay", "--quiet", "--format", "protobuf", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(directory.path().join("out2"))
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(rejected.status.code(), Some(5), "{}", stderr(&rejected));
    assert!(
        !stderr(&rejected).contains("panicked"),
        "{}",
        stderr(&rejected)
    );
}

#[test]
fn produce_and_dlq_replay_show_progress_and_a_json_summary() {
    let Some(binary) = crate::support::tansu::tansu_binary() else {
        return;
    };
    let broker = crate::support::tansu::TansuBroker::start(&binary);
    broker.create_topic("cli.progress.events", 1);
    let produce = gridwatch()
        .args(["produce", "--summary-json", "--events", "500", "--brokers"])
        .arg(&broker.address)
        .args(["--topic", "cli.progress.events"])
        .output()
        .unwrap();
    assert!(produce.status.success(), "{}", stderr(&produce));
    assert!(
        has_progress_line(&produce, "progress: 500/500 events"),
        "{}",
        stderr(&produce)
    );
    let summary = json_summary(&produce);
    assert_eq!(summary["command"], "produce");
    assert_eq!(summary["produced"], 500);
    assert_eq!(summary["interrupted"], false);

    // The events are no dead letters, but they are records to read: a dry run counts them.
    let dry_run = |flag: &str| {
        gridwatch()
            .args(["dlq", "replay", "--dry-run", flag, "--brokers"])
            .arg(&broker.address)
            .args([
                "--from",
                "cli.progress.events",
                "--to",
                "cli.progress.replayed",
            ])
            .output()
            .unwrap()
    };
    let replay = dry_run("--summary-json");
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert!(
        has_progress_line(&replay, "progress: 500 dead letters"),
        "{}",
        stderr(&replay)
    );
    let summary = json_summary(&replay);
    assert_eq!(summary["command"], "dlq replay");
    assert_eq!(summary["read"], 500);
    assert_eq!(summary["dry_run"], true);
    let quiet = dry_run("--quiet");
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(
        !has_progress_line(&quiet, "progress:"),
        "{}",
        stderr(&quiet)
    );
    assert!(
        stdout(&quiet).starts_with("read 500 dead letters"),
        "{}",
        stdout(&quiet)
    );
}
