//! Golden tests: `tests/fixtures/<fixture>/events.jsonl` through `replay` gives exactly the
//! committed windows, alerts and dead letters (see each fixture's README for what each line
//! exercises). `GRIDWATCH_BLESS=1` rewrites the expected files after a deliberate change.

use std::path::Path;

use gridwatch::config::Config;
use gridwatch::decode::InputFormat;
use gridwatch::grid::GridRegistry;
use gridwatch::replay::{replay, ReplayOptions};
use gridwatch::rules::RuleSet;

#[test]
fn golden_replay_matches_expected_windows_alerts_and_dead_letters() {
    let summary = replay_fixture_and_compare("tests/fixtures/golden");
    assert_eq!(summary.records, 22);
    assert_eq!(summary.duplicates, 2);
    assert_eq!(summary.dead_letter_total(), 9);
}

/// A smoke detector whose clock is 55 minutes fast, then a late fire alarm: the fast clock
/// moves no watermark, the late alarm is dead-lettered and still alerted.
#[test]
fn golden_fast_clock_replay_matches_expected_windows_alerts_and_dead_letters() {
    let summary = replay_fixture_and_compare("tests/fixtures/golden_fast_clock");
    assert_eq!(summary.records, 8);
    assert_eq!(summary.duplicates, 0);
    assert_eq!(summary.dead_letter_total(), 2);
}

/// Replays `fixture`'s events with the default configuration and compares (or, with
/// `GRIDWATCH_BLESS`, rewrites) its expected outputs.
fn replay_fixture_and_compare(fixture: &str) -> gridwatch::replay::ReplaySummary {
    let output_directory = tempfile::tempdir().unwrap();
    let config = Config::default();
    let options = ReplayOptions {
        input: Path::new(fixture).join("events.jsonl"),
        format: InputFormat::Jsonl,
        output_dir: output_directory.path().to_path_buf(),
        show_progress: false,
    };
    let rules = RuleSet::embedded_default(config.window_settings().size_millis).unwrap();
    let summary = replay(&options, &config, GridRegistry::embedded(), rules).unwrap();

    let bless = std::env::var_os("GRIDWATCH_BLESS").is_some();
    let expected_directory = Path::new(fixture).join("expected");
    for name in ["windows.jsonl", "alerts.jsonl", "dead_letter.jsonl"] {
        let actual = std::fs::read_to_string(output_directory.path().join(name)).unwrap();
        let expected_path = expected_directory.join(name);
        if bless {
            std::fs::create_dir_all(&expected_directory).unwrap();
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|error| panic!("{}: {error}", expected_path.display()));
        assert_eq!(
            actual,
            expected,
            "{name} differs from {}",
            expected_path.display()
        );
    }
    summary
}
