//! Golden test: `tests/fixtures/golden/events.jsonl` through `replay` gives exactly the
//! committed windows, alerts and dead letters (see the fixture's README for what each line
//! exercises). `GRIDWATCH_BLESS=1` rewrites the expected files after a deliberate change.

use std::path::Path;

use gridwatch::config::Config;
use gridwatch::decode::InputFormat;
use gridwatch::grid::GridRegistry;
use gridwatch::replay::{replay, ReplayOptions};
use gridwatch::rules::RuleSet;

const FIXTURE: &str = "tests/fixtures/golden";

#[test]
fn golden_replay_matches_expected_windows_alerts_and_dead_letters() {
    let output_directory = tempfile::tempdir().unwrap();
    let config = Config::default();
    let options = ReplayOptions {
        input: Path::new(FIXTURE).join("events.jsonl"),
        format: InputFormat::Jsonl,
        output_dir: output_directory.path().to_path_buf(),
        show_progress: false,
    };
    let rules = RuleSet::embedded_default(config.window_settings().size_millis).unwrap();
    let summary = replay(&options, &config, GridRegistry::embedded(), rules).unwrap();
    assert_eq!(summary.records, 22);
    assert_eq!(summary.duplicates, 2);
    assert_eq!(summary.dead_letter_total(), 9);

    let bless = std::env::var_os("GRIDWATCH_BLESS").is_some();
    let expected_directory = Path::new(FIXTURE).join("expected");
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
}
