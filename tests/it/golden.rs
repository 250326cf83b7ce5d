//! Golden tests: `tests/fixtures/<fixture>/events.jsonl` through `replay` gives exactly the
//! committed windows, alerts and dead letters (see each fixture's README for what each line
//! exercises). `GRIDWATCH_BLESS=1` rewrites the expected files after a deliberate change.

use std::path::Path;

use gridwatch::config::Config;
use gridwatch::decode::InputFormat;
use gridwatch::grid::GridRegistry;
use gridwatch::replay::{replay, ReplayOptions, RulesThread};
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
        rules_thread: RulesThread::Auto,
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

/// The threaded replay recycles what its threads hand each other (events into the reader,
/// windows into the counter) and lends records from its read buffer, and runs the rules apart
/// from the counting (after each batch, or on a thread of their own): on a stream long enough
/// for every hand-back to happen many times, in both formats and with the rules on either
/// thread, it must write byte for byte what one pipeline processing record after record
/// (nothing reused, nothing lent, the rules run on each record in turn) writes.
#[test]
fn the_threaded_replay_writes_what_one_pipeline_record_by_record_writes() {
    use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
    use gridwatch::sink::file::JsonlFileSink;
    use gridwatch::source::file::{EventWriter, FileReader};

    let events = crate::support::simulated_events(17, 40_000, 30.0);
    let config = Config::default();
    for format in [InputFormat::Jsonl, InputFormat::Protobuf] {
        let directory = tempfile::tempdir().unwrap();
        let input = directory.path().join("events");
        let mut writer = EventWriter::create(&input, format).unwrap();
        for event in &events {
            writer.write(event).unwrap();
        }
        writer.finish().unwrap();
        let rules = || RuleSet::embedded_default(config.window_settings().size_millis).unwrap();

        let threaded_with_rules_on = |rules_thread: RulesThread| {
            let output_dir = directory.path().join(format!("threaded-{rules_thread:?}"));
            std::fs::create_dir_all(&output_dir).unwrap();
            let options = ReplayOptions {
                input: input.clone(),
                format,
                output_dir: output_dir.clone(),
                show_progress: false,
                rules_thread,
            };
            let mut summary = replay(&options, &config, GridRegistry::embedded(), rules()).unwrap();
            summary.elapsed = std::time::Duration::ZERO;
            (output_dir, summary)
        };
        let (threaded, summary) = threaded_with_rules_on(RulesThread::Counting);
        let (rules_apart, summary_of_rules_apart) = threaded_with_rules_on(RulesThread::Own);
        assert_eq!(
            summary, summary_of_rules_apart,
            "{format:?}: the rules' own thread changed the replay's counts"
        );

        let sequential = directory.path().join("sequential");
        std::fs::create_dir_all(&sequential).unwrap();
        let mut settings = PipelineSettings::from_config(&config);
        settings.window.idle_timeout_millis = gridwatch::time::NEVER_MILLIS;
        let metrics = std::sync::Arc::new(
            gridwatch::metrics::Metrics::new(&["file"], rules().version()).unwrap(),
        );
        let mut pipeline =
            Pipeline::new(settings, GridRegistry::embedded(), rules(), metrics, "file");
        let wall_millis = gridwatch::time::wall_clock_millis();
        let mut outputs = Outputs::default();
        for record in FileReader::open(&input, format).unwrap() {
            pipeline.process(record.unwrap(), wall_millis, &mut outputs);
        }
        pipeline.finish(wall_millis, &mut outputs);
        let mut sink = JsonlFileSink::open(&sequential, false, GridRegistry::embedded()).unwrap();
        sink.write(&outputs).unwrap();
        sink.flush().unwrap();

        for name in ["windows.jsonl", "alerts.jsonl", "dead_letter.jsonl"] {
            let sequential_bytes = std::fs::read(sequential.join(name)).unwrap();
            for replayed in [&threaded, &rules_apart] {
                let threaded_bytes = std::fs::read(replayed.join(name)).unwrap();
                assert!(
                    threaded_bytes == sequential_bytes,
                    "{format:?} {name} in {}: the threaded replay wrote {} bytes, record by \
                     record {}",
                    replayed.display(),
                    threaded_bytes.len(),
                    sequential_bytes.len()
                );
            }
        }
        assert!(
            summary.alerts > 0,
            "{format:?}: no alert, so the rules' placement was not put to the test"
        );
        let windows = std::fs::read_to_string(threaded.join("windows.jsonl")).unwrap();
        assert!(
            windows.lines().count() > 20_000,
            "{format:?}: too few windows to recycle"
        );
    }
}
