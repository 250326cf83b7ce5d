//! Secrets never leak: a marker secret planted in every secret setting (the pseudonymization
//! key, the webhook secret, Alertmanager credentials in URLs from a file and from the
//! environment, a Kafka SASL password from a property file and from
//! `GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD`, Alertmanager sign-in secrets) never appears in `check-config`
//! output (valid or not), in the running binary's stdout and stderr, `/metrics`,
//! `/api/v1/*`, or the output files — while alert delivery to the credentialed receivers is
//! failing and being logged.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MARKERS: [&str; 6] = [
    "marker-pseudonymization-key-5e1f",
    "marker-webhook-secret-5e1f",
    "marker-alertmanager-password-5e1f",
    "marker-env-alertmanager-password-5e1f",
    "marker-sasl-password-5e1f",
    "marker-webhook-url-token-5e1f",
];

fn gridwatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridwatch"));
    command.env_remove("RUST_LOG").env(
        "GRIDWATCH_ALERTING__ALERTMANAGER_URLS",
        format!("[\"http://ops:{}@127.0.0.1:{}/\"]", MARKERS[3], dead_port()),
    );
    command
}

/// A local port nothing listens on: delivery to it fails fast and is logged.
fn dead_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    })
}

fn write_secret(directory: &Path, name: &str, content: &str) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path
}

/// A config whose every secret is a marker, read from files.
fn config_with_marked_secrets(directory: &Path, extra: &str) -> PathBuf {
    let key = write_secret(directory, "key", MARKERS[0]);
    let webhook_secret = write_secret(directory, "webhook-secret", MARKERS[1]);
    let alertmanagers = write_secret(
        directory,
        "alertmanagers",
        &format!("http://ops:{}@127.0.0.1:{}", MARKERS[2], dead_port()),
    );
    let sasl = write_secret(directory, "sasl", MARKERS[4]);
    let path = directory.join("gridwatch.toml");
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[simulator]
rate_multiplier = 50.0
backfill = "10m"

[output]
dir = "{output}"

[log]
format = "json"

[privacy]
pseudonymization_key_file = "{key}"

[alerting]
alertmanager_urls_file = "{alertmanagers}"
retry_initial_backoff = "100ms"
retry_max_backoff = "200ms"
retry_max_attempts = 2
resend_interval = "1s"

[alerting.webhook]
url = "http://hook:{token}@127.0.0.1:{port}/hook?token={token}"
secret_file = "{webhook_secret}"

[kafka.properties]
"security.protocol" = "sasl_plaintext"

[kafka.property_files]
"sasl.password" = "{sasl}"
{extra}"#,
        output = directory.join("out").display(),
        key = key.display(),
        alertmanagers = alertmanagers.display(),
        webhook_secret = webhook_secret.display(),
        sasl = sasl.display(),
        token = MARKERS[5],
        port = dead_port(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether the log shows a retried and a finally failed delivery to both sinks and a failed
/// Alertmanager resend: every log line that names a receiver.
fn every_failure_was_logged(log: &str) -> bool {
    let finally_failed = |sink: &str| {
        log.lines().any(|line| {
            line.contains("\"message\":\"alert delivery failed\"")
                && line.contains(&format!("\"sink\":\"{sink}\""))
        })
    };
    finally_failed("alertmanager")
        && finally_failed("webhook")
        && log.contains("re-sending firing alerts to alertmanager failed")
}

/// Whether the command succeeded, and everything it printed (stdout, then stderr).
fn status_and_printed(output: &std::process::Output) -> (bool, String) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

fn assert_no_marker(origin: &str, text: &str) {
    let leaked: Vec<&str> = MARKERS
        .iter()
        .copied()
        .filter(|marker| text.contains(marker))
        .collect();
    assert!(leaked.is_empty(), "{origin} shows {leaked:?}:\n{text}");
}

#[test]
fn check_config_never_prints_a_secret_valid_or_not() {
    let directory = tempfile::tempdir().unwrap();
    let valid = config_with_marked_secrets(directory.path(), "");
    let output = gridwatch()
        .arg("check-config")
        .arg(&valid)
        .output()
        .unwrap();
    let (succeeded, printed) = status_and_printed(&output);
    assert!(succeeded, "{printed}");
    assert_no_marker("check-config of a valid config", &printed);

    let invalid_directory = tempfile::tempdir().unwrap();
    let invalid = config_with_marked_secrets(
        invalid_directory.path(),
        &format!(
            "\n[source]\nkind = \"kafka\"\n[window]\nsize = \"0s\"\n[state]\nsnapshot_path = \"x\"\n[fraud]\nconfidence = 2.0\n# {}\n",
            "an invalid config"
        ),
    );
    let broken_urls = write_secret(
        invalid_directory.path(),
        "broken-urls",
        &format!("http://ops:{}@[::1", MARKERS[2]),
    );
    let output = gridwatch()
        .env(
            "GRIDWATCH_ALERTING__ALERTMANAGER_URLS_FILE",
            broken_urls.display().to_string(),
        )
        .env(
            "GRIDWATCH_ALERTING__EXTERNAL_URL",
            format!("ftp://ops:{}@nowhere", MARKERS[3]),
        )
        .arg("check-config")
        .arg(&invalid)
        .output()
        .unwrap();
    let (succeeded, printed) = status_and_printed(&output);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("alerting.alertmanager_urls"), "{printed}");
    assert!(printed.contains("alerting.external_url"), "{printed}");
    assert_no_marker("check-config of an invalid config", &printed);
}

#[test]
fn the_running_service_never_logs_or_serves_a_secret_while_delivery_fails() {
    let directory = tempfile::tempdir().unwrap();
    let config = config_with_marked_secrets(directory.path(), "");
    let log_path = directory.path().join("stderr.log");
    let mut child = gridwatch()
        .env("RUST_LOG", "debug")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (address, _log_copier) = crate::support::follow_log(
        child.stderr.take().unwrap(),
        std::fs::File::create(&log_path).unwrap(),
    );
    let mut served = String::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if every_failure_was_logged(&log) || Instant::now() > deadline {
            break;
        }
    }
    for path in [
        "/metrics",
        "/api/v1/alerts",
        "/api/v1/cells?top=20",
        "/api/v1/fraud",
    ] {
        if let Some((_, body)) = crate::support::http_get(&address, path) {
            served.push_str(&body);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut rest_of_stdout = String::new();
    let _ = stdout.read_to_string(&mut rest_of_stdout);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        every_failure_was_logged(&log),
        "delivery to the credentialed receivers failed and was logged:\n{log}"
    );
    assert!(served.contains("gridwatch_"), "{served}");
    assert_no_marker("stderr (logs)", &log);
    assert_no_marker("stdout", &rest_of_stdout);
    assert_no_marker("/metrics and /api/v1/*", &served);
    for path in gridwatch::replay::output_files(&directory.path().join("out")) {
        let content = std::fs::read_to_string(&path).unwrap_or_default();
        assert_no_marker(&path.display().to_string(), &content);
    }
}

#[test]
fn dlq_replay_refuses_a_secret_kafka_property_on_the_command_line() {
    let output = gridwatch()
        .args([
            "dlq",
            "replay",
            "--brokers",
            "127.0.0.1:1",
            "--to",
            "events",
        ])
        .args(["--property", &format!("sasl.password={}", MARKERS[4])])
        .output()
        .unwrap();
    let (succeeded, printed) = status_and_printed(&output);
    assert!(!succeeded, "{printed}");
    assert!(
        printed.contains("--property-file sasl.password"),
        "{printed}"
    );
    assert_no_marker("dlq replay", &printed);
}

/// Secrets of the Kafka client (from `GRIDWATCH_KAFKA_PROPERTY_*`) and of Alertmanager's
/// sign-in (`[alerting.alertmanager_auth]`, from the environment and a file) stay out of
/// `check-config`, `produce` and `dlq replay` output when the configuration is invalid and when
/// librdkafka refuses the client settings.
#[test]
fn kafka_and_alertmanager_sign_in_secrets_never_print_when_settings_are_refused() {
    const SASL: &str = "marker-env-sasl-password-8a4d";
    const KEY_PASSWORD: &str = "marker-env-key-password-8a4d";
    const AM_PASSWORD: &str = "marker-env-am-password-8a4d";
    const AM_TOKEN: &str = "marker-file-am-token-8a4d";
    let assert_clean = |origin: &str, printed: &str| {
        for marker in [SASL, KEY_PASSWORD, AM_PASSWORD, AM_TOKEN] {
            assert!(
                !printed.contains(marker),
                "{origin} shows {marker}:\n{printed}"
            );
        }
    };
    let directory = tempfile::tempdir().unwrap();
    let key = write_secret(directory.path(), "key", MARKERS[0]);
    let token = write_secret(directory.path(), "am-token", AM_TOKEN);
    let config = |extra: &str| {
        let path = directory.path().join("kafka.toml");
        std::fs::write(
            &path,
            format!(
                r#"[source]
kind = "kafka"

[privacy]
pseudonymization_key_file = "{key}"

[kafka]
brokers = "127.0.0.1:1"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "GSSAPI"
"sasl.username" = "gridwatch"
{extra}"#,
                key = key.display()
            ),
        )
        .unwrap();
        path
    };
    let with_secrets = |command: &mut Command| {
        command
            .env("GRIDWATCH_KAFKA_PROPERTY_SASL_PASSWORD", SASL)
            .env("GRIDWATCH_KAFKA_PROPERTY_SSL_KEY_PASSWORD", KEY_PASSWORD)
            .env(
                "GRIDWATCH_ALERTING__ALERTMANAGER_AUTH__PASSWORD",
                AM_PASSWORD,
            );
    };

    // Invalid: basic auth and a bearer token together, a username missing.
    let invalid = config(&format!(
        "\n[alerting.alertmanager_auth]\nbearer_token_file = \"{}\"\n",
        token.display()
    ));
    let mut command = gridwatch();
    with_secrets(&mut command);
    let output = command.arg("check-config").arg(&invalid).output().unwrap();
    let (succeeded, printed) = status_and_printed(&output);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("alerting.alertmanager_auth"), "{printed}");
    assert_clean("check-config of an invalid config", &printed);

    // Valid for gridwatch, refused by librdkafka (no GSSAPI provider in this build).
    let refused = config("");
    let mut command = gridwatch();
    with_secrets(&mut command);
    command.env("GRIDWATCH_ALERTING__ALERTMANAGER_AUTH__USERNAME", "ops");
    let output = command.arg("check-config").arg(&refused).output().unwrap();
    let (succeeded, printed) = status_and_printed(&output);
    assert!(!succeeded, "{printed}");
    assert!(printed.contains("librdkafka refuses"), "{printed}");
    assert!(printed.contains("GSSAPI"), "{printed}");
    assert_clean("check-config refused by librdkafka", &printed);

    for tool in [
        &["produce", "--topic", "events", "--events", "1"][..],
        &["dlq", "replay", "--to", "events"][..],
    ] {
        let mut command = gridwatch();
        with_secrets(&mut command);
        let output = command
            .args(tool)
            .env("GRIDWATCH_CONFIG", &refused)
            .output()
            .unwrap();
        let (succeeded, printed) = status_and_printed(&output);
        assert!(!succeeded, "{tool:?}: {printed}");
        assert!(
            printed.contains("librdkafka refuses"),
            "{tool:?}: {printed}"
        );
        assert_clean(&format!("{tool:?}"), &printed);
    }
}
