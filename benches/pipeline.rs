//! Criterion benchmarks, per stage so that a regression shows where it happened: decoding
//! (JSON, protobuf, with validation and pseudonyms), grid resolution, deduplication, the window
//! record path, window JSON encoding, the whole pipeline per event, and the whole pipeline with
//! the default rules reduced to one kind at a time (`rules/<kind>` minus `rules/none` is what
//! that kind costs per event). Run with `cargo bench --bench pipeline`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gridwatch::config::Config;
use gridwatch::decode::{DecodeSettings, Decoder, InputFormat, DEFAULT_MIN_OCCURRED_AT_MILLIS};
use gridwatch::dedup::Deduplicator;
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::{CellWindow, IncidentEvent};
use gridwatch::rules::{RuleSet, EMBEDDED_RULES_TOML, RULE_KIND_NAMES};
use gridwatch::sink::window_json::WindowJsonWriter;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::source::{RecordPayload, SourceRecord};
use gridwatch::window::tumbling::TumblingWindows;
use gridwatch::window::PaneKey;
use prost::Message;

const START_MILLIS: i64 = 1_772_409_600_000;
const WALL_MILLIS: i64 = START_MILLIS + 86_400_000 * 30;
const EVENTS: usize = 10_000;

fn simulated(count: usize) -> Vec<IncidentEvent> {
    let settings = SimulatorSettings {
        seed: 7,
        start_millis: START_MILLIS,
        rate_multiplier: 20.0,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, GridRegistry::embedded()).unwrap();
    (0..count).map(|_| simulator.next_event()).collect()
}

fn decoder() -> Decoder {
    Decoder::new(DecodeSettings {
        max_clock_skew_millis: 3_600_000,
        min_occurred_at_millis: DEFAULT_MIN_OCCURRED_AT_MILLIS,
        privacy: gridwatch::privacy::PrivacySettings {
            key: b"bench".to_vec(),
            key_id: "k1".to_string(),
            pii_attribute_keys: vec!["phone".to_string()],
        },
    })
}

fn bench_decode(criterion: &mut Criterion) {
    let events = simulated(EVENTS);
    let json_lines: Vec<Vec<u8>> = events
        .iter()
        .map(|event| serde_json::to_vec(event).unwrap())
        .collect();
    let protobuf_messages: Vec<Vec<u8>> =
        events.iter().map(|event| event.encode_to_vec()).collect();
    let decoder = decoder();
    let mut group = criterion.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("json", |bencher| {
        bencher.iter(|| {
            for line in &json_lines {
                let mut event = decoder.decode(line, InputFormat::Jsonl).unwrap();
                std::hint::black_box(decoder.validate(&mut event, WALL_MILLIS).ok());
            }
        })
    });
    group.bench_function("protobuf", |bencher| {
        bencher.iter(|| {
            for message in &protobuf_messages {
                let mut event = decoder.decode(message, InputFormat::Protobuf).unwrap();
                std::hint::black_box(decoder.validate(&mut event, WALL_MILLIS).ok());
            }
        })
    });
    group.finish();
}

fn bench_window_record(criterion: &mut Criterion) {
    let settings = Config::default().window_settings();
    let keys: Vec<(PaneKey, i64)> = (0..EVENTS as i64)
        .map(|index| {
            let key = PaneKey {
                cell: CellIndex((index * 7919 % 1900) as u32),
                event_type: (index % 23 + 1) as i32,
            };
            (key, START_MILLIS + index * 50)
        })
        .collect();
    let mut group = criterion.benchmark_group("window");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("record_and_flush", |bencher| {
        bencher.iter_batched(
            || TumblingWindows::new(settings),
            |mut windows| {
                let mut closed = Vec::new();
                for (key, occurred_at_millis) in &keys {
                    let watermark = occurred_at_millis - 10_000;
                    windows.record(*key, *occurred_at_millis, 2, Some(watermark));
                    windows.flush_until(watermark, &mut closed);
                }
                closed
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Grid resolution, deduplication and window JSON encoding, each alone over the same events.
fn bench_stages(criterion: &mut Criterion) {
    let events = simulated(EVENTS);
    let registry = GridRegistry::embedded();
    let mut group = criterion.benchmark_group("stage");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("resolve", |bencher| {
        bencher.iter(|| {
            for event in &events {
                std::hint::black_box(registry.resolve(event).ok());
            }
        })
    });
    let occurred_at_millis: Vec<i64> = events
        .iter()
        .map(|event| {
            event
                .occurred_at
                .as_ref()
                .map_or(START_MILLIS, gridwatch::time::timestamp_to_millis)
        })
        .collect();
    group.bench_function("dedup", |bencher| {
        bencher.iter_batched(
            || Deduplicator::new(600_000),
            |mut deduplicator| {
                for (event, millis) in events.iter().zip(&occurred_at_millis) {
                    if !deduplicator.is_duplicate(&event.event_id) {
                        deduplicator.remember(&event.event_id, *millis);
                    }
                    deduplicator.expire(millis - 60_000);
                }
                deduplicator
            },
            BatchSize::LargeInput,
        )
    });
    let windows: Vec<CellWindow> = events
        .iter()
        .zip(&occurred_at_millis)
        .filter_map(|(event, millis)| {
            let cell = registry.resolve(event).ok()?;
            let window_start = millis - millis.rem_euclid(60_000);
            Some(CellWindow {
                grid_id: registry.cell(cell).grid_id.clone(),
                community_id: event.community_id.clone(),
                district_id: registry.district_of(cell).code.clone(),
                event_type: event.event_type,
                window_start: Some(gridwatch::time::millis_to_timestamp(window_start)),
                window_end: Some(gridwatch::time::millis_to_timestamp(window_start + 60_000)),
                count: 3,
                severity_sum: 7,
                count_by_severity: vec![0, 1, 1, 1],
            })
        })
        .collect();
    group.throughput(Throughput::Elements(windows.len() as u64));
    group.bench_function("encode_window_json", |bencher| {
        let mut writer = WindowJsonWriter::new();
        let mut out = Vec::with_capacity(windows.len() * 256);
        bencher.iter(|| {
            out.clear();
            for window in &windows {
                writer.write(window, &mut out).unwrap();
                out.push(b'\n');
            }
            std::hint::black_box(out.len())
        })
    });
    group.finish();
}

/// The rules of `benches/compare.sh`'s "windows only" case: one threshold rule that cannot
/// fire (a rules file must define one).
const WINDOWS_ONLY_RULES_TOML: &str = include_str!("compare/windows-only-rules.toml");

/// The embedded default rules with only the rules of `kind` kept, all other settings (the
/// baseline) as shipped.
fn default_rules_of_kind(kind: &str, pane_size_millis: i64) -> RuleSet {
    let mut document: toml::Table = toml::from_str(EMBEDDED_RULES_TOML).unwrap();
    if let Some(toml::Value::Array(rules)) = document.get_mut("rule") {
        rules.retain(|rule| rule.get("kind").and_then(toml::Value::as_str) == Some(kind));
    }
    RuleSet::from_toml_str(&toml::to_string(&document).unwrap(), pane_size_millis).unwrap()
}

/// Runs `payloads` through a fresh pipeline with `rules`, as the replay's counting thread does
/// (outputs collected, not written).
fn bench_pipeline_with(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    payloads: &[Bytes],
    format: InputFormat,
    rules_of: &dyn Fn(i64) -> RuleSet,
) {
    let config = Config::default();
    let registry = GridRegistry::embedded();
    let make_pipeline = || {
        let mut settings = PipelineSettings::from_config(&config);
        settings.window.idle_timeout_millis = i64::MAX;
        let rules = rules_of(settings.window.size_millis);
        let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
        Pipeline::new(settings, registry.clone(), rules, metrics, "file")
    };
    group.bench_function(name, |bencher| {
        bencher.iter_batched(
            make_pipeline,
            |mut pipeline| {
                let mut outputs = Outputs::default();
                for (position, bytes) in payloads.iter().enumerate() {
                    let record = SourceRecord {
                        payload: RecordPayload::Encoded {
                            bytes: bytes.clone(),
                            format,
                        },
                        partition: 0,
                        position: position as u64,
                    };
                    pipeline.process(record, WALL_MILLIS, &mut outputs);
                    if outputs.windows.len() > 4096 {
                        outputs.clear();
                    }
                }
                outputs
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench_pipeline(criterion: &mut Criterion) {
    let events = simulated(EVENTS);
    let json_lines: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::from(serde_json::to_vec(event).unwrap()))
        .collect();
    let protobuf_messages: Vec<Bytes> = events
        .iter()
        .map(|event| Bytes::from(event.encode_to_vec()))
        .collect();
    let default_rules = |pane_size_millis| RuleSet::embedded_default(pane_size_millis).unwrap();
    let mut group = criterion.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    bench_pipeline_with(
        &mut group,
        "json",
        &json_lines,
        InputFormat::Jsonl,
        &default_rules,
    );
    bench_pipeline_with(
        &mut group,
        "protobuf",
        &protobuf_messages,
        InputFormat::Protobuf,
        &default_rules,
    );
    group.finish();

    let mut group = criterion.benchmark_group("rules");
    group.throughput(Throughput::Elements(EVENTS as u64));
    bench_pipeline_with(
        &mut group,
        "none",
        &json_lines,
        InputFormat::Jsonl,
        &|pane| RuleSet::from_toml_str(WINDOWS_ONLY_RULES_TOML, pane).unwrap(),
    );
    for kind in RULE_KIND_NAMES {
        bench_pipeline_with(&mut group, kind, &json_lines, InputFormat::Jsonl, &|pane| {
            default_rules_of_kind(kind, pane)
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_stages,
    bench_window_record,
    bench_pipeline
);
criterion_main!(benches);
