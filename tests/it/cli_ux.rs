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
fn gridwatch_config_is_honoured_by_replay_and_simulate() {
    let directory = tempfile::tempdir().unwrap();
    let input = simulate_jsonl(directory.path(), 10);
    let missing = directory.path().join("no-such-config.toml");
    let replay = gridwatch()
        .env("GRIDWATCH_CONFIG", &missing)
        .args(["replay", "--no-progress", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(directory.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(3), "{}", stderr(&replay));
    assert!(stderr(&replay).contains("no-such-config.toml does not exist"));
    let simulate = gridwatch()
        .env("GRIDWATCH_CONFIG", &missing)
        .args(["simulate", "--quiet", "--events", "1", "--out"])
        .arg(directory.path().join("x.jsonl"))
        .output()
        .unwrap();
    assert_eq!(simulate.status.code(), Some(3), "{}", stderr(&simulate));
}

#[test]
fn run_logs_flat_json_without_colour_on_stderr_including_the_listening_line() {
    use std::io::BufReader;
    let mut child = gridwatch()
        .args(["run", "--log-format", "json"])
        .env("GRIDWATCH_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = crate::support::read_http_address(&mut stdout);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let logs = stderr(&output);
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
const HELP_PAGES: [&[&str]; 14] = [
    &[],
    &["run"],
    &["replay"],
    &["simulate"],
    &["produce"],
    &["dlq"],
    &["dlq", "replay"],
    &["fraud"],
    &["fraud", "import"],
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
