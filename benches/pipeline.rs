//! Criterion benchmarks, per stage so that a regression shows where it happened: decoding
//! (JSON, protobuf, with validation and pseudonyms), grid resolution, deduplication, the window
//! record path, window JSON encoding, the whole pipeline per event, and the whole pipeline with
//! the default rules reduced to one kind at a time (`rules/<kind>` minus `rules/none` is what
//! that kind costs per event), and one evaluation of the space-time scan (`scan/…`: it runs
//! once an hour of event time, so its cost is per evaluation, not per event), and the Kafka
//! path's work beyond the replay's (`kafka_path/…`: encoding a window's output record, queueing it in
//! librdkafka, and the city-wide model folding it in when the feed reads it back). Run with
//! `cargo bench --bench pipeline`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gridwatch::config::Config;
use gridwatch::decode::{DecodeSettings, Decoder, InputFormat, DEFAULT_MIN_OCCURRED_AT_MILLIS};
use gridwatch::dedup::{Deduplicator, EventIdHash};
use gridwatch::grid::{CellIndex, GridRegistry};
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::EventType;
use gridwatch::proto::{CellWindow, IncidentEvent};
use gridwatch::rules::simulation::{
    continue_engine, embedded_rules_where, seeded_stream, sort_by_time, wave_stream, SimulatedEvent,
};
use gridwatch::rules::{Baseline, RuleEngine, RuleSet, EMBEDDED_RULES_TOML, RULE_KIND_NAMES};
use gridwatch::sink::window_json::WindowJsonWriter;
use gridwatch::source::simulator::{Simulator, SimulatorSettings};
use gridwatch::source::{RecordPayload, SourceRecord};
use gridwatch::window::read_back::ReadBackPane;
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
    // As the replay's reading thread decodes: into an event whose buffers are reused.
    for (name, payloads, format) in [
        ("json_into_reused", &json_lines, InputFormat::Jsonl),
        (
            "protobuf_into_reused",
            &protobuf_messages,
            InputFormat::Protobuf,
        ),
    ] {
        group.bench_function(name, |bencher| {
            let mut event = gridwatch::proto::IncidentEvent::default();
            bencher.iter(|| {
                for payload in payloads {
                    decoder.decode_into(payload, format, &mut event).unwrap();
                    std::hint::black_box(decoder.validate(&mut event, WALL_MILLIS).ok());
                }
            })
        });
    }
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
                    let event_id = EventIdHash::of(&event.event_id);
                    if !deduplicator.is_duplicate(event_id) {
                        deduplicator.remember(event_id, *millis);
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

/// The default settings with windows that never idle out, as in a replay.
fn replay_settings() -> PipelineSettings {
    let mut settings = PipelineSettings::from_config(&Config::default());
    settings.window.idle_timeout_millis = i64::MAX;
    settings
}

/// A pipeline as the replay builds one (windows never idle out), with the rules `rules_of`
/// gives for the pane size.
fn replay_pipeline(registry: &Arc<GridRegistry>, rules_of: &dyn Fn(i64) -> RuleSet) -> Pipeline {
    let settings = replay_settings();
    let rules = rules_of(settings.window.size_millis);
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    Pipeline::new(settings, registry.clone(), rules, metrics, "file")
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
    let registry = GridRegistry::embedded();
    let make_pipeline = || replay_pipeline(&registry, rules_of);
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

/// The city's seeded stream of `types` (start, hours, seed), and the same with a ×30 wave over
/// the first three communities (start, hours, seed).
fn quiet_and_waved(
    registry: &GridRegistry,
    types: &[EventType],
    (start, hours, seed): (i64, i64, u64),
    (wave_start, wave_hours, wave_seed): (i64, i64, u64),
) -> (Vec<SimulatedEvent>, Vec<SimulatedEvent>) {
    let baseline = Baseline::embedded();
    let quiet = seeded_stream(registry, &baseline, types, start, hours, seed);
    let mut waved = quiet.clone();
    let wave_cells: Vec<CellIndex> = registry.communities()[..3]
        .iter()
        .flat_map(|community| community.cells.clone())
        .collect();
    waved.extend(wave_stream(
        registry,
        &baseline,
        &wave_cells,
        types,
        29.0,
        wave_start,
        wave_hours,
        wave_seed,
    ));
    sort_by_time(&mut waved);
    (quiet, waved)
}

/// One hourly evaluation of the default scan rule (`fraud_wave_cluster`) after four days of
/// the city's seeded fraud stream: `quiet` (the usual case: the Monte Carlo test stops after a
/// few maps) and `wave` (a ×30 wave over three neighbouring communities has been running for
/// a day, so every one of the 999 maps is drawn).
fn bench_scan(criterion: &mut Criterion) {
    const HOUR: i64 = 3_600_000;
    let registry = GridRegistry::embedded();
    let rules = embedded_rules_where(&|name, _| name == "fraud_wave_cluster").unwrap();
    let fraud_types = [EventType::FraudWarning, EventType::FraudReported];
    let hours = 96;
    let end = START_MILLIS + hours * HOUR;
    let (quiet, waved) = quiet_and_waved(
        &registry,
        &fraud_types,
        (START_MILLIS, hours, 3),
        (end - 24 * HOUR, 24, 4),
    );
    let mut group = criterion.benchmark_group("scan");
    for (name, stream) in [("quiet", &quiet), ("wave", &waved)] {
        let mut warmed = RuleEngine::with_baseline(rules.clone(), Baseline::embedded());
        let mut watermark = START_MILLIS;
        warmed.on_watermark(watermark, &registry, &mut Vec::new());
        let before_last_hour = stream.partition_point(|(at, _, _)| *at < end - HOUR);
        continue_engine(
            &registry,
            &mut warmed,
            &stream[..before_last_hour],
            0,
            &mut watermark,
            end - HOUR - 60_000,
        );
        let state = warmed.state().clone();
        group.bench_function(format!("evaluation/{name}"), |bencher| {
            bencher.iter_batched(
                || {
                    // The evaluation an hour earlier builds the zones (once per engine in a
                    // service), outside the measurement.
                    let mut engine = RuleEngine::with_baseline(rules.clone(), Baseline::embedded());
                    engine.restore_state(state.clone());
                    engine.on_watermark(end - HOUR, &registry, &mut Vec::new());
                    engine
                },
                |mut engine| {
                    let mut alerts = Vec::new();
                    engine.on_watermark(end, &registry, &mut alerts);
                    alerts
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The whole-city detector (district and cluster rules with Kafka) through one day of the
/// city's panes, minute by minute as the service feeds it: the seeded fraud stream, and the
/// same with a ×30 wave over three communities all day. A fresh detector each time (its
/// first evaluation builds the scan's zones, as a service does once), so the day's time over
/// 1,440 is what one minute of event time costs.
fn bench_whole_city(criterion: &mut Criterion) {
    use gridwatch::rules::whole_city::{WholeCityDetector, WATERMARK_GRACE_MILLIS};
    use std::collections::BTreeMap;
    const MINUTE: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    let registry = GridRegistry::embedded();
    let rules = RuleSet::embedded_default(MINUTE).unwrap();
    let fraud_types = [
        EventType::FraudWarning,
        EventType::FraudDissuaded,
        EventType::FraudReported,
        EventType::FraudCaseFiled,
    ];
    let start = START_MILLIS + 8 * 3_600_000;
    let (quiet, waved) = quiet_and_waved(&registry, &fraud_types, (start, 24, 5), (start, 24, 6));
    let panes_of = |stream: &[SimulatedEvent]| {
        let mut counts: BTreeMap<(i64, u32, i32), u64> = BTreeMap::new();
        for (at, cell, event_type) in stream {
            *counts
                .entry((at - at.rem_euclid(MINUTE), cell.0, *event_type as i32))
                .or_default() += 1;
        }
        let mut by_minute: BTreeMap<i64, Vec<ReadBackPane>> = BTreeMap::new();
        for ((pane_start, cell, event_type), count) in counts {
            let window = CellWindow {
                grid_id: registry.cells()[cell as usize].grid_id.clone(),
                event_type,
                window_start: Some(gridwatch::time::millis_to_timestamp(pane_start)),
                window_end: Some(gridwatch::time::millis_to_timestamp(pane_start + MINUTE)),
                count,
                ..CellWindow::default()
            };
            by_minute
                .entry(pane_start)
                .or_default()
                .push(ReadBackPane::of_cell_window(&window, &registry));
        }
        by_minute
    };
    let mut group = criterion.benchmark_group("whole_city");
    group.sample_size(10);
    for (name, stream) in [("quiet_day", &quiet), ("wave_day", &waved)] {
        let panes = panes_of(stream);
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let mut detector = WholeCityDetector::new(&rules, Baseline::embedded());
                detector.finish_catch_up(&registry);
                let mut alerts = Vec::new();
                let mut wall = 0;
                for minute in 0..=(DAY / MINUTE) {
                    let pane_start = start + minute * MINUTE;
                    for pane in panes.get(&pane_start).into_iter().flatten() {
                        let _ = detector.apply_pane(pane, &registry, &mut alerts);
                    }
                    detector.hear_watermark(pane_start + MINUTE, wall);
                    wall += WATERMARK_GRACE_MILLIS;
                    detector.advance(wall, &registry, &mut alerts);
                }
                alerts
            })
        });
    }
    group.finish();
}

/// The Kafka path's work beyond the replay's, per window: encoding a window's output record
/// key and value into reused buffers (`kafka_path/window_records`, what `KafkaSink` hands
/// librdkafka); the whole of `KafkaSink::write` for the batch, encoding and queueing each
/// record in librdkafka (`kafka_path/sink_write`: a fresh sink per iteration whose broker
/// address answers nothing, so the records only queue; what the pipeline task spends per
/// output record before librdkafka's own threads take over), and folding it into the
/// city-wide model when the feed reads it back (`kafka_path/city_model_apply`); and one
/// publish of that model with every cell changed (`kafka_path/city_model_publish`: the feed
/// publishes about once a second, so its cost is per publish, not per window). The windows
/// are those one pipeline writes for 100,000 simulator events, in its order: a pane is
/// written again each time its count grows, and a cell's list of recent panes fills up as it
/// does in a long run.
fn bench_kafka_path(criterion: &mut Criterion) {
    use gridwatch::read_model::{CityModel, CityModelSettings, OutputRecord};
    let registry = GridRegistry::embedded();
    let mut pipeline = replay_pipeline(&registry, &|pane_size_millis| {
        RuleSet::embedded_default(pane_size_millis).unwrap()
    });
    let mut outputs = Outputs::default();
    for (position, event) in simulated(EVENTS * 10).into_iter().enumerate() {
        let record = SourceRecord {
            payload: RecordPayload::Event(Box::new(event)),
            partition: 0,
            position: position as u64,
        };
        pipeline.process(record, WALL_MILLIS, &mut outputs);
    }
    let windows: Vec<CellWindow> = outputs
        .windows
        .iter()
        .filter_map(|pane| gridwatch::sink::cell_window(&registry, pane))
        .collect();
    let model_settings = CityModelSettings::new(
        vec!["15m".into(), "1h".into(), "24h".into()],
        vec![900_000, 3_600_000, 86_400_000],
        "bench".into(),
    );
    let model_with = |windows: Vec<CellWindow>| {
        let mut model = CityModel::new(registry.clone(), model_settings.clone(), None);
        for window in windows {
            let pane = ReadBackPane::of_cell_window(&window, &registry);
            let _ = model.apply(OutputRecord::Window(pane), WALL_MILLIS);
        }
        model
    };
    let mut group = criterion.benchmark_group("kafka_path");
    group.sample_size(10);
    group.throughput(Throughput::Elements(windows.len() as u64));
    group.bench_function("window_records", |bencher| {
        let mut buffers = gridwatch::sink::kafka::WindowRecordBuffers::default();
        bencher.iter(|| {
            windows
                .iter()
                .map(|window| {
                    buffers.encode(window).unwrap();
                    buffers.key.len() + buffers.value.len()
                })
                .sum::<usize>()
        })
    });
    group.bench_function("sink_write", |bencher| {
        let metrics = Metrics::new(&["kafka"], "bench").unwrap();
        let mut config = gridwatch::config::KafkaConfig {
            // Nothing listens there: librdkafka queues the records and never sends them.
            brokers: "127.0.0.1:9".to_string(),
            ..gridwatch::config::KafkaConfig::default()
        };
        config.sinks.enabled = true;
        let panes = Outputs {
            windows: outputs.windows.clone(),
            ..Outputs::default()
        };
        bencher.iter_batched(
            || {
                gridwatch::sink::kafka::KafkaSink::create(
                    &config,
                    "bench".to_string(),
                    &metrics,
                    registry.clone(),
                )
                .unwrap()
                .unwrap()
            },
            |sink| {
                assert_eq!(sink.write(&panes), 0, "every record queued");
                sink
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("city_model_apply", |bencher| {
        bencher.iter_batched(|| windows.clone(), &model_with, BatchSize::LargeInput)
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("city_model_publish", |bencher| {
        bencher.iter_batched(
            || model_with(windows.clone()),
            |mut model| model.publish(WALL_MILLIS),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The partitions' engines as the Kafka pipeline task runs them, without a broker: 600,000
/// simulator events spread over 6 partitions by cell (as the input topic's keys spread them),
/// admitted as the consumer thread does, in batches that interleave the partitions: 1,024
/// records (one consumer batch) and 8,192 (what the pipeline task takes at once from a full
/// channel when the engines have threads); run one after the other on the caller's thread, then on 2 and 4 engine threads.
/// What one instance's pipeline task can gain from more cores.
fn bench_partition_engines(criterion: &mut Criterion) {
    use gridwatch::partitions::{PartitionedPipelines, PipelineFactory};
    use gridwatch::pipeline::{Admission, AdmittedRecord};
    const PARTITIONS: u64 = 6;
    let registry = GridRegistry::embedded();
    let settings = PipelineSettings {
        partial_input: true,
        ..replay_settings()
    };
    let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
    let factory = || PipelineFactory {
        settings: settings.clone(),
        registry: registry.clone(),
        rules: rules.clone(),
        metrics: Arc::new(Metrics::new(&["kafka"], rules.version()).unwrap()),
        source_name: "kafka",
        fraud_settings: None,
    };
    let events = simulated(EVENTS * 60);
    let admission = Admission::of_settings(&settings, registry.clone());
    let batches_of = |batch_size: usize| -> Vec<Vec<AdmittedRecord>> {
        let mut positions = [0_u64; PARTITIONS as usize];
        let mut admitted = events
            .iter()
            .map(|event| {
                let partition =
                    (xxhash_rust::xxh3::xxh3_64(event.grid_id.as_bytes()) % PARTITIONS) as usize;
                let record = SourceRecord {
                    payload: RecordPayload::Event(Box::new(event.clone())),
                    partition: partition as u32,
                    position: positions[partition],
                };
                positions[partition] += 1;
                admission.admit(record, WALL_MILLIS, Box::default())
            })
            .peekable();
        let mut batches = Vec::new();
        while admitted.peek().is_some() {
            batches.push(admitted.by_ref().take(batch_size).collect());
        }
        batches
    };
    let mut group = criterion.benchmark_group("partition_engines");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    for batch_size in [1_024, 8_192] {
        for engine_threads in [1, 2, 4] {
            let name = format!("batch_{batch_size}/{engine_threads}_threads");
            group.bench_function(name, |bencher| {
                bencher.iter_batched(
                    || {
                        let pipelines = PartitionedPipelines::new(factory())
                            .with_engine_threads(engine_threads)
                            .unwrap();
                        (pipelines, batches_of(batch_size))
                    },
                    |(mut pipelines, mut batches)| {
                        let mut outputs = Outputs::default();
                        let mut windows = 0;
                        for batch in &mut batches {
                            pipelines.process_admitted_batch(batch, WALL_MILLIS, &mut outputs);
                            windows += outputs.windows.len();
                            outputs.clear();
                        }
                        (windows, pipelines, batches)
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_stages,
    bench_window_record,
    bench_pipeline,
    bench_scan,
    bench_whole_city,
    bench_kafka_path,
    bench_partition_engines
);
criterion_main!(benches);
