//! Criterion benchmarks: decoding (JSON, protobuf), the window record path, and the whole
//! pipeline per event. Run with `cargo bench --bench pipeline`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gridwatch::config::Config;
use gridwatch::decode::{DecodeSettings, Decoder, InputFormat, DEFAULT_MIN_OCCURRED_AT_MILLIS};
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::IncidentEvent;
use gridwatch::rules::RuleSet;
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
    let config = Config::default();
    let registry = GridRegistry::embedded();
    let make_pipeline = || {
        let mut settings = PipelineSettings::from_config(&config);
        settings.window.idle_timeout_millis = i64::MAX;
        let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
        let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
        Pipeline::new(settings, registry.clone(), rules, metrics, "file")
    };
    let mut group = criterion.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, payloads, format) in [
        ("json", &json_lines, InputFormat::Jsonl),
        ("protobuf", &protobuf_messages, InputFormat::Protobuf),
    ] {
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
    group.finish();
}

criterion_group!(benches, bench_decode, bench_window_record, bench_pipeline);
criterion_main!(benches);
