//! Fuzzing on the stable toolchain: proptest drives mutations of real inputs (event lines,
//! protobuf records, framed files, a snapshot, the example configuration, the default rules)
//! through everything that parses untrusted bytes, and fails on any panic (proptest catches
//! it, shrinks the input and prints it).
//!
//! `cargo fuzz` needs nightly, which this project does not use; proptest is already a
//! dev-dependency and runs inside `cargo test`. Mutating valid seeds (bytes, tokens, whole JSON
//! values, TOML values) gets past the first byte into validation, resolution, the rules and
//! restore, where random bytes alone would be refused at once.
//!
//! Sizes: by default each target runs a CI-sized number of cases (the whole file takes about a
//! minute in a debug build on two cores). `GRIDWATCH_FUZZ_CASES=N` runs N cases per target;
//! `GRIDWATCH_FUZZ_SECONDS=S` runs each target for S seconds instead (in batches, with fresh
//! random seeds) — `scripts/fuzz-long.sh` uses it. Every target prints a line
//! `fuzz target <name>: <n> inputs executed, <k> panics found` (shown with `--nocapture`).

use std::cell::RefCell;
use std::io::Cursor;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::support::{
    pipeline_over, record, replay_pipeline_settings, simulated_events, snapshot_fixture,
    use_restored, WALL_MILLIS,
};
use gridwatch::config::Config;
use gridwatch::decode::InputFormat;
use gridwatch::grid::{GridRegistry, RegistryShape};
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline, PipelineSettings};
use gridwatch::proto::IncidentEvent;
use gridwatch::rules::RuleSet;
use gridwatch::source::file::FileReader;
use gridwatch::source::{RecordPayload, SourceRecord};
use gridwatch::state::SnapshotFit;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};

// ---------------------------------------------------------------------------------------------
// The harness: a target runs a strategy and a body for a number of cases or seconds.

/// Cases per batch when running for a time budget: small enough to stop close to the budget,
/// large enough that the per-batch set-up (a fresh pipeline) is negligible.
const CASES_PER_TIMED_BATCH: u32 = 2_000;

/// How long a target runs: a number of cases, or a time budget.
enum FuzzBudget {
    Cases(u32),
    Seconds(Duration),
}

/// `GRIDWATCH_FUZZ_SECONDS` beats `GRIDWATCH_FUZZ_CASES`, which beats the target's CI default.
fn fuzz_budget(default_cases: u32) -> FuzzBudget {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
    };
    if let Some(seconds) = from_env("GRIDWATCH_FUZZ_SECONDS") {
        return FuzzBudget::Seconds(Duration::from_secs(seconds));
    }
    FuzzBudget::Cases(
        from_env("GRIDWATCH_FUZZ_CASES")
            .and_then(|cases| u32::try_from(cases).ok())
            .unwrap_or(default_cases),
    )
}

/// Runs `body` over inputs from `strategy` within the budget; `fresh_state` is called once per
/// batch (a pipeline that the batch's inputs flow through, so state builds up across inputs as
/// in a stream). Panics (and so fails the test) with the shrunk input on the first panic.
fn run_fuzz_target<S, State>(
    name: &str,
    default_cases: u32,
    strategy: S,
    fresh_state: impl Fn() -> State,
    body: impl Fn(&mut State, S::Value) -> Reached,
) where
    S: Strategy,
{
    let started = Instant::now();
    let (batch_cases, deadline) = match fuzz_budget(default_cases) {
        FuzzBudget::Cases(cases) => (cases, None),
        FuzzBudget::Seconds(budget) => (CASES_PER_TIMED_BATCH, Some(started + budget)),
    };
    let mut executed: u64 = 0;
    let past_parsing = std::cell::Cell::new(0_u64);
    loop {
        let config = ProptestConfig {
            cases: batch_cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let mut runner = TestRunner::new(config);
        let state = RefCell::new(fresh_state());
        let outcome = runner.run(&strategy, |input| {
            if body(&mut state.borrow_mut(), input) == Reached::PastParsing {
                past_parsing.set(past_parsing.get() + 1);
            }
            Ok::<(), TestCaseError>(())
        });
        if let Err(error) = outcome {
            let message = match error {
                TestError::Fail(reason, input) => format!("{reason}; minimal input: {input:?}"),
                TestError::Abort(reason) => format!("aborted: {reason}"),
            };
            eprintln!(
                "fuzz target {name}: {executed} inputs executed before the failing batch, 1 panic found"
            );
            panic!("fuzz target {name} found a panic: {message}");
        }
        executed += u64::from(batch_cases);
        if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
            break;
        }
    }
    eprintln!(
        "fuzz target {name}: {executed} inputs executed, 0 panics found ({:.1} s; {} got past parsing)",
        started.elapsed().as_secs_f64(),
        past_parsing.get()
    );
}

/// How far an input got: refused by the parser, or past it into validation and the stages
/// behind (counted, to show the mutations are structured enough to matter).
#[derive(Debug, PartialEq, Eq)]
enum Reached {
    Parser,
    PastParsing,
}

impl Reached {
    fn past_parsing_if(condition: bool) -> Reached {
        if condition {
            Reached::PastParsing
        } else {
            Reached::Parser
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of valid seeds.

/// One edit of a byte string. Indexes are `Index`es, resolved against the current length, so
/// every mutation applies to any input.
#[derive(Debug, Clone)]
enum ByteMutation {
    Replace(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, Vec<u8>),
    InsertToken(Index, Index),
    Delete(Index, usize),
    Truncate(Index),
    DuplicateRange(Index, usize, Index),
    SpliceWithSeed(Index, Index, Index),
}

fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| ByteMutation::Replace(at, byte)),
        (any::<Index>(), 0_u8..8).prop_map(|(at, bit)| ByteMutation::FlipBit(at, bit)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| ByteMutation::Insert(at, bytes)),
        (any::<Index>(), any::<Index>())
            .prop_map(|(at, token)| ByteMutation::InsertToken(at, token)),
        (any::<Index>(), 1_usize..32).prop_map(|(at, length)| ByteMutation::Delete(at, length)),
        any::<Index>().prop_map(ByteMutation::Truncate),
        (any::<Index>(), 1_usize..64, any::<Index>())
            .prop_map(|(from, length, to)| ByteMutation::DuplicateRange(from, length, to)),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, seed, from)| ByteMutation::SpliceWithSeed(at, seed, from)),
    ]
}

/// A position in `bytes` (insertion point: up to and including the end).
fn position(at: &Index, bytes: &[u8]) -> usize {
    at.index(bytes.len() + 1)
}

fn apply_byte_mutation(
    bytes: &mut Vec<u8>,
    mutation: &ByteMutation,
    seeds: &[Vec<u8>],
    tokens: &[&[u8]],
) {
    match mutation {
        ByteMutation::Replace(at, byte) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        ByteMutation::FlipBit(at, bit) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        ByteMutation::Insert(at, inserted) => {
            let at = position(at, bytes);
            bytes.splice(at..at, inserted.iter().copied());
        }
        ByteMutation::InsertToken(at, token) if !tokens.is_empty() => {
            let at = position(at, bytes);
            let token = tokens[token.index(tokens.len())];
            bytes.splice(at..at, token.iter().copied());
        }
        ByteMutation::Delete(at, length) => {
            let at = position(at, bytes);
            let end = (at + length).min(bytes.len());
            bytes.drain(at..end);
        }
        ByteMutation::Truncate(at) => {
            let at = position(at, bytes);
            bytes.truncate(at);
        }
        ByteMutation::DuplicateRange(from, length, to) if !bytes.is_empty() => {
            let from = from.index(bytes.len());
            let end = (from + length).min(bytes.len());
            let copied = bytes[from..end].to_vec();
            let to = position(to, bytes);
            bytes.splice(to..to, copied);
        }
        ByteMutation::SpliceWithSeed(at, seed, from) if !seeds.is_empty() => {
            let other = &seeds[seed.index(seeds.len())];
            let at = position(at, bytes);
            let from = position(from, other);
            bytes.truncate(at);
            bytes.extend_from_slice(&other[from..]);
        }
        _ => {}
    }
}

/// A seed picked from `seeds` with one to eight byte mutations applied.
fn mutated_seed(
    seeds: Arc<Vec<Vec<u8>>>,
    tokens: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    (any::<Index>(), prop::collection::vec(byte_mutation(), 1..8)).prop_map(
        move |(seed, mutations)| {
            let mut bytes = seeds[seed.index(seeds.len())].clone();
            for mutation in &mutations {
                apply_byte_mutation(&mut bytes, mutation, &seeds, tokens);
            }
            bytes
        },
    )
}

/// Tokens that change the meaning of JSON text rather than only breaking it.
const JSON_TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-",
    b"-0",
    b"1e309",
    b"-1e309",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.000000000000000000001",
    b"NaN",
    b"\"\"",
    b"{}",
    b"[]",
    b"\xff",
    b"\xe2\x80",
    b"\r",
    b"\n",
    b"\"attributes\":{\"phone\":\"13800138000\"}",
    b"\"occurredAt\":\"9999-12-31T23:59:59Z\"",
    b"\"lat\":1e308",
    b"\"lon\":-0.0",
    b"\"crs\":\"BD09\"",
    b"\"severity\":4294967295",
];

/// Interesting values for a JSON field, as JSON text.
const JSON_VALUES: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1",
    "4294967296",
    "18446744073709551615",
    "-9223372036854775808",
    "1e308",
    "-1e308",
    "1.5",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[1,2]",
    "{\"a\":\"b\"}",
    "\"2026-03-02T00:00:00Z\"",
    "\"1970-01-01T00:00:00Z\"",
    "\"9999-12-31T23:59:59.999999999Z\"",
    "\"0001-01-01T00:00:00Z\"",
    "\"2026-02-30T25:61:61Z\"",
    "\"FIRE_SMOKE\"",
    "\"SOS\"",
    "\"EVENT_TYPE_UNSPECIFIED\"",
    "\"WGS84\"",
    "\"GCJ02\"",
    "\"BD09\"",
    "999",
    "-999",
    "\"13800138000\"",
    "\"pseudo:\"",
    "\"41060300100702\"",
    "\"410603001007\"",
    "\"\\u0000\\ud83d\\ude00\"",
];

/// Where a JSON edit applies: the n-th value of the document (objects, arrays, scalars).
fn json_value_count(value: &serde_json::Value) -> usize {
    1 + match value {
        serde_json::Value::Object(map) => map.values().map(json_value_count).sum(),
        serde_json::Value::Array(items) => items.iter().map(json_value_count).sum(),
        _ => 0,
    }
}

fn json_value_at(
    value: &mut serde_json::Value,
    mut target: usize,
) -> Option<&mut serde_json::Value> {
    if target == 0 {
        return Some(value);
    }
    target -= 1;
    let children: Vec<&mut serde_json::Value> = match value {
        serde_json::Value::Object(map) => map.values_mut().collect(),
        serde_json::Value::Array(items) => items.iter_mut().collect(),
        _ => return None,
    };
    for child in children {
        let size = json_value_count(child);
        if target < size {
            return json_value_at(child, target);
        }
        target -= size;
    }
    None
}

/// One semantic edit of a JSON document: a value replaced, a key added or removed.
#[derive(Debug, Clone)]
enum JsonEdit {
    ReplaceValue(Index, Index),
    ReplaceWithString(Index, String),
    ReplaceWithNumber(Index, f64),
    AddKey(Index, String, Index),
    RemoveKey(Index, Index),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    const EVENT_KEYS: &[&str] = &[
        "eventId",
        "deviceId",
        "gridId",
        "communityId",
        "lat",
        "lon",
        "crs",
        "attributes",
        "severity",
        "occurredAt",
        "receivedAt",
        "eventType",
    ];
    let keys = prop_oneof![
        prop::sample::select(EVENT_KEYS).prop_map(str::to_string),
        ".{0,12}",
    ];
    prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(at, value)| JsonEdit::ReplaceValue(at, value)),
        (any::<Index>(), ".{0,40}").prop_map(|(at, text)| JsonEdit::ReplaceWithString(at, text)),
        (any::<Index>(), any::<f64>())
            .prop_map(|(at, number)| JsonEdit::ReplaceWithNumber(at, number)),
        (any::<Index>(), keys, any::<Index>())
            .prop_map(|(at, key, value)| JsonEdit::AddKey(at, key, value)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, key)| JsonEdit::RemoveKey(at, key)),
    ]
}

fn apply_json_edit(document: &mut serde_json::Value, edit: &JsonEdit) {
    let count = json_value_count(document);
    let pick = |value: &Index| -> serde_json::Value {
        serde_json::from_str(JSON_VALUES[value.index(JSON_VALUES.len())])
            .unwrap_or(serde_json::Value::Null)
    };
    let (at, replacement) = match edit {
        JsonEdit::ReplaceValue(at, value) => (at, Some(pick(value))),
        JsonEdit::ReplaceWithString(at, text) => {
            (at, Some(serde_json::Value::String(text.clone())))
        }
        JsonEdit::ReplaceWithNumber(at, number) => (
            at,
            Some(
                serde_json::Number::from_f64(*number)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
            ),
        ),
        JsonEdit::AddKey(at, key, value) => {
            if let Some(serde_json::Value::Object(map)) = json_value_at(document, at.index(count)) {
                map.insert(key.clone(), pick(value));
            }
            return;
        }
        JsonEdit::RemoveKey(at, key) => {
            if let Some(serde_json::Value::Object(map)) = json_value_at(document, at.index(count)) {
                if !map.is_empty() {
                    let removed = map.keys().nth(key.index(map.len())).cloned();
                    if let Some(removed) = removed {
                        map.remove(&removed);
                    }
                }
            }
            return;
        }
    };
    if let (Some(slot), Some(replacement)) = (json_value_at(document, at.index(count)), replacement)
    {
        *slot = replacement;
    }
}

/// A seed event line with semantic JSON edits (it still parses, so it reaches validation and
/// the stages behind it), or with byte mutations (it mostly does not).
fn mutated_json_line(seeds: Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> {
    let documents = seeds.clone();
    let edited = (any::<Index>(), prop::collection::vec(json_edit(), 1..5)).prop_map(
        move |(seed, edits)| {
            let mut document: serde_json::Value =
                serde_json::from_slice(&documents[seed.index(documents.len())])
                    .unwrap_or(serde_json::Value::Null);
            for edit in &edits {
                apply_json_edit(&mut document, edit);
            }
            serde_json::to_vec(&document).unwrap_or_default()
        },
    );
    prop_oneof![edited, mutated_seed(seeds, JSON_TOKENS)]
}

// ---------------------------------------------------------------------------------------------
// Seeds.

fn seed_events() -> &'static [IncidentEvent] {
    static EVENTS: OnceLock<Vec<IncidentEvent>> = OnceLock::new();
    EVENTS.get_or_init(|| simulated_events(21, 400, 1.0))
}

/// The seed events, each encoded by `encode`.
fn encoded_seed_events(encode: fn(&IncidentEvent) -> Vec<u8>) -> Arc<Vec<Vec<u8>>> {
    Arc::new(seed_events().iter().map(encode).collect())
}

fn json_seed_lines() -> Arc<Vec<Vec<u8>>> {
    encoded_seed_events(|event| serde_json::to_vec(event).unwrap())
}

fn protobuf_seed_records() -> Arc<Vec<Vec<u8>>> {
    encoded_seed_events(prost::Message::encode_to_vec)
}

/// A pipeline as replay runs it, with the embedded seeds and rules.
fn fresh_pipeline() -> (Pipeline, Outputs) {
    (pipeline_over(GridRegistry::embedded()), Outputs::default())
}

/// Feeds one encoded record through the pipeline (decode, validate, grid, dedup, windows,
/// rules), then lets the watermark advance now and then.
fn process_encoded(
    state: &mut (Pipeline, Outputs),
    bytes: Vec<u8>,
    format: InputFormat,
    position: u64,
) -> Reached {
    let record = SourceRecord {
        payload: RecordPayload::Encoded {
            bytes: bytes.into(),
            format,
        },
        partition: 0,
        position,
    };
    process_records(state, vec![record]);
    let refused_by_the_parser = state.1.dead_letters.iter().any(|dead_letter| {
        dead_letter.reason == "invalid_json" || dead_letter.reason == "invalid_protobuf"
    });
    Reached::past_parsing_if(!refused_by_the_parser)
}

// ---------------------------------------------------------------------------------------------
// Targets.

#[test]
fn fuzz_json_event_lines_never_panic_the_pipeline() {
    let position = std::sync::atomic::AtomicU64::new(0);
    run_fuzz_target(
        "json_decoder",
        12_000,
        mutated_json_line(json_seed_lines()),
        fresh_pipeline,
        |state, line| {
            let position = position.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            process_encoded(state, line, InputFormat::Jsonl, position)
        },
    );
}

/// Protobuf records: byte mutations of real records, and arbitrary field values encoded
/// properly (hostile but well-formed events: NaN coordinates, extreme timestamps, odd enums).
#[test]
fn fuzz_protobuf_records_never_panic_the_pipeline() {
    let arbitrary_event = (
        (".{0,24}", ".{0,8}", ".{0,24}", ".{0,14}", ".{0,14}"),
        (
            any::<i32>(),
            any::<u32>(),
            any::<Option<(i64, i32)>>(),
            any::<Option<f64>>(),
            any::<Option<f64>>(),
            any::<i32>(),
        ),
        prop::collection::btree_map(".{0,10}", ".{0,20}", 0..4),
    )
        .prop_map(
            |(
                (event_id, source, device_id, community_id, grid_id),
                (event_type, severity, occurred_at, lat, lon, crs),
                attributes,
            )| {
                let template = &seed_events()[severity as usize % seed_events().len()];
                let keep_template_ids = severity % 2 == 0;
                let event = IncidentEvent {
                    event_id,
                    source,
                    device_id: if keep_template_ids {
                        template.device_id.clone()
                    } else {
                        device_id
                    },
                    community_id,
                    grid_id: if keep_template_ids {
                        template.grid_id.clone()
                    } else {
                        grid_id
                    },
                    event_type: event_type % 40,
                    severity: severity % 8,
                    occurred_at: occurred_at
                        .map(|(seconds, nanos)| pbjson_types::Timestamp { seconds, nanos })
                        .or(template.occurred_at),
                    received_at: template.received_at,
                    lat,
                    lon,
                    crs: crs % 5,
                    attributes: attributes.into_iter().collect(),
                };
                prost::Message::encode_to_vec(&event)
            },
        );
    run_fuzz_target(
        "protobuf_decoder",
        12_000,
        prop_oneof![
            mutated_seed(
                protobuf_seed_records(),
                &[b"\x00", b"\xff\xff\xff\xff\x0f", b"\x80"]
            ),
            arbitrary_event,
        ],
        fresh_pipeline,
        {
            let position = std::sync::atomic::AtomicU64::new(0);
            move |state, record| {
                let position = position.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                process_encoded(state, record, InputFormat::Protobuf, position)
            }
        },
    );
}

/// Reads every record of `bytes` framed as `format`; the reader must end, and within one
/// record per input byte (plus the final error or end).
fn read_all_records(bytes: Vec<u8>, format: InputFormat) -> Vec<SourceRecord> {
    let input_length = bytes.len();
    let reader = FileReader::new(Cursor::new(bytes), format, "fuzz");
    let mut records = Vec::new();
    for (count, item) in reader.enumerate() {
        assert!(count <= input_length + 1, "the reader does not end");
        match item {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
    }
    records
}

/// Feeds framed records through the pipeline; past parsing when at least one was framed.
fn process_records(state: &mut (Pipeline, Outputs), records: Vec<SourceRecord>) -> Reached {
    let framed_any = !records.is_empty();
    let (pipeline, outputs) = state;
    outputs.windows.clear();
    outputs.alerts.clear();
    outputs.dead_letters.clear();
    for record in records {
        let position = record.position;
        pipeline.process(record, WALL_MILLIS, outputs);
        if position % 64 == 0 {
            pipeline.advance(WALL_MILLIS, outputs);
        }
    }
    Reached::past_parsing_if(framed_any)
}

/// A JSONL file: mutated lines joined by assorted line ends, mutated again as a whole.
#[test]
fn fuzz_jsonl_file_framing_never_panics() {
    let separators: &[&[u8]] = &[b"\n", b"\r\n", b"\r", b"", b"\n\n", b"\n\r\n"];
    let file = (
        prop::collection::vec((mutated_json_line(json_seed_lines()), any::<Index>()), 0..8),
        prop::collection::vec(byte_mutation(), 0..4),
    )
        .prop_map(move |(lines, mutations)| {
            let mut bytes = Vec::new();
            for (line, separator) in lines {
                bytes.extend_from_slice(&line);
                bytes.extend_from_slice(separators[separator.index(separators.len())]);
            }
            for mutation in &mutations {
                apply_byte_mutation(&mut bytes, mutation, &[], JSON_TOKENS);
            }
            bytes
        });
    run_fuzz_target(
        "jsonl_framing",
        2_500,
        file,
        fresh_pipeline,
        |state, bytes| {
            let records = read_all_records(bytes, InputFormat::Jsonl);
            for record in &records {
                if let RecordPayload::Encoded { bytes, .. } = &record.payload {
                    assert!(!bytes.contains(&b'\n'), "a JSONL record spans two lines");
                }
            }
            process_records(state, records)
        },
    );
}

/// A length-delimited protobuf file: real frames (some with mutated records), mutated again
/// as a whole (length prefixes included).
#[test]
fn fuzz_length_delimited_protobuf_framing_never_panics() {
    let seeds = protobuf_seed_records();
    let file = (
        prop::collection::vec(any::<Index>(), 0..8),
        prop::collection::vec(byte_mutation(), 0..4),
    )
        .prop_map(move |(frames, mutations)| {
            let mut bytes = Vec::new();
            for frame in frames {
                let record = &seeds[frame.index(seeds.len())];
                prost::encoding::encode_varint(record.len() as u64, &mut bytes);
                bytes.extend_from_slice(record);
            }
            for mutation in &mutations {
                apply_byte_mutation(
                    &mut bytes,
                    mutation,
                    &seeds,
                    &[
                        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                        b"\x80\x80\x80\x01",
                    ],
                );
            }
            bytes
        });
    run_fuzz_target(
        "protobuf_framing",
        5_000,
        file,
        fresh_pipeline,
        |state, bytes| process_records(state, read_all_records(bytes, InputFormat::Protobuf)),
    );
}

/// Tokens the postcard encoding gives meaning to: a zero, the largest 32-bit varint, a
/// one-byte varint's edge, a varint that runs long.
const POSTCARD_TOKENS: &[&[u8]] = &[
    b"\x00",
    b"\xff\xff\xff\xff\x0f",
    b"\x7f",
    b"\x80\x80\x80\x80\x08",
];

/// Random bytes behind the 8-byte header of `seed`.
fn random_bytes_behind_the_header_of(seed: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let header: Vec<u8> = seed.iter().take(8).copied().collect();
    prop::collection::vec(any::<u8>(), 0..256).prop_map(move |tail| {
        let mut bytes = header.clone();
        bytes.extend_from_slice(&tail);
        bytes
    })
}

/// `seeds[0]` with one to three bytes changed in place: the layout stays, so most still
/// decode, and the values (indexes, counts, times) are what the bounds checks and the restored
/// state must survive.
fn bytes_changed_in_place(seeds: Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<Index>(), any::<u8>()), 1..4).prop_map(move |changes| {
        let mut bytes = seeds[0].clone();
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        bytes
    })
}

/// Snapshots: random bytes behind a valid header, and structural mutations of a real snapshot
/// (bytes replaced, inserted, deleted, ranges duplicated, truncated). Whatever decodes must
/// restore into a pipeline that processes, advances, answers queries and snapshots again.
#[test]
fn fuzz_snapshots_are_refused_or_restore_into_a_working_pipeline() {
    let snapshot = Arc::new(vec![snapshot_fixture().snapshot.clone()]);
    let inputs = prop_oneof![
        1 => random_bytes_behind_the_header_of(&snapshot[0]),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        3 => mutated_seed(snapshot.clone(), POSTCARD_TOKENS),
        3 => bytes_changed_in_place(snapshot.clone()),
    ];
    run_fuzz_target(
        "snapshot_decode",
        1_500,
        inputs,
        || SnapshotFit::of(&pipeline_over(GridRegistry::embedded())),
        |fit, bytes| {
            let Ok(state) = gridwatch::state::decode(&bytes, fit) else {
                return Reached::Parser;
            };
            let mut pipeline = pipeline_over(GridRegistry::embedded());
            pipeline.restore_state(state);
            use_restored(&mut pipeline, &snapshot_fixture().continuation);
            Reached::PastParsing
        },
    );
}

const HOUR_MILLIS: i64 = 3_600_000;
/// Where the learned-history fuzz target's detector starts: an hour-aligned epoch time.
const DETECTOR_START_MILLIS: i64 = 20_000 * HOUR_MILLIS;

/// A learned history of two days of both fraud types in a few cells: the seed of the
/// learned-history target.
fn learned_history_seed() -> Vec<u8> {
    use gridwatch::proto::EventType;
    use gridwatch::rules::baseline::TypeLearning;
    let first_hour = DETECTOR_START_MILLIS / HOUR_MILLIS;
    let mut history = gridwatch::rules::BaselineState::default();
    for event_type in [EventType::FraudWarning, EventType::FraudReported] {
        let type_number = event_type as i32;
        history.types.insert(
            type_number,
            TypeLearning {
                since_millis: Some(DETECTOR_START_MILLIS),
                closed_hours: (first_hour..first_hour + 48).collect(),
                next_hour_to_close: Some(first_hour + 48),
            },
        );
        for cell in [0_u32, 7, 300] {
            history.hour_counts.insert(
                (cell, type_number),
                [(first_hour + 3, 2), (first_hour + 30, 1)].into(),
            );
        }
    }
    gridwatch::state::learned_history_snapshot(&history, &GridRegistry::embedded()).unwrap()
}

/// The whole-city detector's learned history, read from the state topic on start: random
/// bytes behind its header, and mutations of a real one. Whatever decodes is handed to a
/// detector that then catches up on a fraud pane and evaluates three more hours.
#[test]
fn fuzz_learned_histories_are_refused_or_restore_into_a_working_detector() {
    use gridwatch::rules::whole_city::WholeCityDetector;
    let seed = Arc::new(vec![learned_history_seed()]);
    let inputs = prop_oneof![
        1 => random_bytes_behind_the_header_of(&seed[0]),
        3 => mutated_seed(seed.clone(), POSTCARD_TOKENS),
        3 => bytes_changed_in_place(seed.clone()),
    ];
    let registry = GridRegistry::embedded();
    let rules = RuleSet::embedded_default(60_000).unwrap();
    let pane_at = DETECTOR_START_MILLIS + 49 * HOUR_MILLIS;
    let pane = gridwatch::window::read_back::ReadBackPane {
        cell: registry.cell_by_grid_id(&registry.cells()[7].grid_id),
        event_type: gridwatch::proto::EventType::FraudReported as i32,
        span_millis: Some((pane_at, pane_at + 60_000)),
        count: 3,
        count_by_severity: [0; 4],
    };
    run_fuzz_target(
        "learned_history_decode",
        300,
        inputs,
        || RegistryShape::of(&registry),
        |shape, bytes| {
            let Ok(history) = gridwatch::state::decode_learned_history(&bytes, shape) else {
                return Reached::Parser;
            };
            let mut detector =
                WholeCityDetector::new(&rules, gridwatch::rules::Baseline::embedded());
            detector.restore_learned_history(history);
            let mut changes = Vec::new();
            detector.apply_pane(&pane, &registry, &mut changes).unwrap();
            detector.hear_watermark(pane_at + 60_000, 0);
            detector.finish_catch_up(&registry);
            detector.hear_watermark(pane_at + 3 * HOUR_MILLIS, 0);
            detector.advance(60_000, &registry, &mut changes);
            let _ = detector.learned_history();
            Reached::PastParsing
        },
    );
}

/// Interesting TOML values: wrong types, extremes, durations that overflow milliseconds.
const TOML_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "nan",
    "inf",
    "-inf",
    "0.0",
    "true",
    "\"\"",
    "\"0s\"",
    "\"1ms\"",
    "\"1ns\"",
    "\"999999999999h\"",
    "\"584542y\"",
    "\"18446744073709551615s\"",
    "\"1h 1ns\"",
    "\"-1s\"",
    "[]",
    "[\"\"]",
    "[0]",
    "{}",
    "\"x\"",
    "\"FIRE_SMOKE\"",
    "[\"EVENT_TYPE_UNSPECIFIED\"]",
    "\"community\"",
    "\"cell\"",
    "\"0.0.0.0:0\"",
    "\"/nonexistent\"",
    "\"immediate\"",
    "\"threshold\"",
    "\"spike\"",
    "\"cusum\"",
    "\"data_gap\"",
    "1979-05-27T07:32:00Z",
];

const TOML_TOKENS: &[&[u8]] = &[
    b"=",
    b"[",
    b"]",
    b"[[rule]]\n",
    b"[[suppression]]\n",
    b"\"",
    b"'",
    b"\n",
    b"#",
    b".",
    b"{",
    b"}",
    b",",
    b"\\u0000",
    b"\"\"\"",
    b"0x",
    b"1_000",
];

/// One edit of a TOML text: a `key = value` line's value replaced, a line removed or
/// duplicated, or raw byte mutations.
#[derive(Debug, Clone)]
enum TomlEdit {
    ReplaceValue(Index, Index),
    RemoveLine(Index),
    DuplicateLine(Index, Index),
    Bytes(ByteMutation),
}

fn toml_edit() -> impl Strategy<Value = TomlEdit> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(line, value)| TomlEdit::ReplaceValue(line, value)),
        1 => any::<Index>().prop_map(TomlEdit::RemoveLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(line, to)| TomlEdit::DuplicateLine(line, to)),
        2 => byte_mutation().prop_map(TomlEdit::Bytes),
    ]
}

fn apply_toml_edit(text: &mut Vec<u8>, edit: &TomlEdit) {
    let mut lines: Vec<Vec<u8>> = text
        .split(|byte| *byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    match edit {
        TomlEdit::ReplaceValue(line, value) => {
            let assignments: Vec<usize> = (0..lines.len())
                .filter(|&index| !lines[index].starts_with(b"#") && lines[index].contains(&b'='))
                .collect();
            if assignments.is_empty() {
                return;
            }
            let index = assignments[line.index(assignments.len())];
            let Some(equals) = lines[index].iter().position(|byte| *byte == b'=') else {
                return;
            };
            lines[index].truncate(equals + 1);
            lines[index].push(b' ');
            lines[index].extend_from_slice(TOML_VALUES[value.index(TOML_VALUES.len())].as_bytes());
        }
        TomlEdit::RemoveLine(line) => {
            let index = line.index(lines.len());
            lines.remove(index);
        }
        TomlEdit::DuplicateLine(line, to) => {
            let copied = lines[line.index(lines.len())].clone();
            let to = to.index(lines.len() + 1);
            lines.insert(to, copied);
        }
        TomlEdit::Bytes(mutation) => {
            apply_byte_mutation(text, mutation, &[], TOML_TOKENS);
            return;
        }
    }
    *text = lines.join(&b'\n');
}

fn mutated_toml(seeds: Vec<&'static str>) -> impl Strategy<Value = String> {
    (any::<Index>(), prop::collection::vec(toml_edit(), 1..6)).prop_map(move |(seed, edits)| {
        let mut text = seeds[seed.index(seeds.len())].as_bytes().to_vec();
        for edit in &edits {
            apply_toml_edit(&mut text, edit);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// The example configuration, mutated: parsing and validation either refuse it or accept a
/// configuration whose pipeline settings (durations to milliseconds) and rules build.
#[test]
fn fuzz_configuration_text_is_refused_or_builds_a_pipeline() {
    let seeds = vec![
        include_str!("../../deploy/gridwatch.example.toml"),
        "[window]\nsize = \"1m\"\nallowed_lateness = \"2m\"\n[dedup]\nhorizon = \"10m\"\n",
        "",
    ];
    run_fuzz_target(
        "config_toml",
        2_000,
        mutated_toml(seeds),
        || (),
        |_, text| {
            let Ok(config) = Config::from_toml_str(&text) else {
                return Reached::Parser;
            };
            let settings = PipelineSettings::from_config(&config);
            if let Ok(rules) = RuleSet::embedded_default(settings.window.size_millis) {
                let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
                let mut pipeline =
                    Pipeline::new(settings, GridRegistry::embedded(), rules, metrics, "file");
                let mut outputs = Outputs::default();
                for (position, event) in seed_events().iter().take(20).enumerate() {
                    pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
                }
                pipeline.advance(WALL_MILLIS, &mut outputs);
            }
            Reached::PastParsing
        },
    );
}

/// The default rules, mutated: parsing refuses them, or the rules run over a short stream
/// (events, watermark advances, alert resolution) without panicking.
#[test]
fn fuzz_rules_text_is_refused_or_runs_over_a_stream() {
    let settings = replay_pipeline_settings();
    let pane_size_millis = settings.window.size_millis;
    let seeds = vec![include_str!("../../seeds/rules.toml")];
    run_fuzz_target(
        "rules_toml",
        2_000,
        mutated_toml(seeds),
        || (),
        |_, text| {
            let Ok(rules) = RuleSet::from_toml_str(&text, pane_size_millis) else {
                return Reached::Parser;
            };
            let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
            let mut pipeline = Pipeline::new(
                settings.clone(),
                GridRegistry::embedded(),
                rules,
                metrics,
                "file",
            );
            let mut outputs = Outputs::default();
            for (position, event) in seed_events().iter().take(60).enumerate() {
                pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
            }
            pipeline.advance(WALL_MILLIS, &mut outputs);
            pipeline.active_alerts();
            Reached::PastParsing
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: panics the targets above found, fixed, and pinned here.

/// Found by `config_toml`: durations summed in validation overflowed `Duration` and panicked
/// (`overflow when adding durations`) instead of reporting the problem.
#[test]
fn a_window_size_near_the_duration_limit_is_refused_rather_than_a_panic() {
    let text = "[window]\nsize = \"18446744073709551615s\"\n";
    let error = Config::from_toml_str(text).expect_err("an absurd window size is refused");
    assert!(error.to_string().contains("dedup_horizon"), "{error}");
}
