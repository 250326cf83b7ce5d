//! How the city-wide read model should be shared with its readers: an atomically swapped
//! immutable snapshot (`ArcSwap<CitySnapshot>`, what gridwatch uses) or a concurrent map
//! (`DashMap` of cell states, the design card's first idea). 200 reader threads answer
//! "top 20 cells in the 1 h view" as fast as they can while one writer applies closed panes
//! and, for the snapshot, publishes once a second of its work (every 1,000 panes here).
//!
//! Run: `cargo bench --bench read_model` (prints reads/s, writes/s and the readers' p99).
//! The figures are in README "Benchmarks".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use gridwatch::grid::GridRegistry;
use gridwatch::proto::{CellWindow, EventType};
use gridwatch::read_model::{CityModel, CityModelSettings, OutputRecord, ReadModelWriter};
use gridwatch::time::millis_to_timestamp;
use gridwatch::window::read_back::ReadBackPane;

const READERS: usize = 200;
const RUN: Duration = Duration::from_secs(4);
const PUBLISH_EVERY: u64 = 1_000;
const T0: i64 = 1_772_409_600_000;

fn pane(registry: &GridRegistry, sequence: u64) -> CellWindow {
    let cells = registry.cells();
    let cell = &cells[(sequence as usize * 7919) % cells.len()];
    let minute = (sequence / 500) as i64;
    CellWindow {
        grid_id: cell.grid_id.clone(),
        event_type: EventType::Tailgating as i32,
        window_start: Some(millis_to_timestamp(T0 + minute * 60_000)),
        window_end: Some(millis_to_timestamp(T0 + (minute + 1) * 60_000)),
        count: 1 + sequence % 5,
        ..Default::default()
    }
}

/// [`pane`] as the feed hands it to the model, its grid resolved.
fn window_record(registry: &GridRegistry, sequence: u64) -> OutputRecord {
    OutputRecord::Window(ReadBackPane::of_cell_window(
        &pane(registry, sequence),
        registry,
    ))
}

struct Figures {
    reads: u64,
    writes: u64,
    p99_micros: u128,
}

fn report(name: &str, figures: &Figures) {
    println!(
        "{name:<28} reads/s {:>12.0}  writes/s {:>10.0}  reader p99 {:>6} µs",
        figures.reads as f64 / RUN.as_secs_f64(),
        figures.writes as f64 / RUN.as_secs_f64(),
        figures.p99_micros
    );
}

/// Runs `read` on 200 threads and `write` on one until `RUN` is over.
fn contend(
    read: impl Fn() + Send + Sync + 'static,
    mut write: impl FnMut() + Send + 'static,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let read = Arc::new(read);
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (stop, reads, read) = (stop.clone(), reads.clone(), read.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    read();
                    latencies.push(started.elapsed().as_micros());
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut writes = 0_u64;
        while !writer_stop.load(Ordering::Relaxed) {
            write();
            writes += 1;
        }
        writes
    });
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u128> = readers
        .into_iter()
        .flat_map(|reader| reader.join().unwrap())
        .collect();
    latencies.sort_unstable();
    let p99_micros = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or(0);
    Figures {
        reads: reads.load(Ordering::Relaxed),
        writes: writer.join().unwrap(),
        p99_micros,
    }
}

fn swapped_snapshot(registry: Arc<GridRegistry>) -> Figures {
    let settings = CityModelSettings::new(
        vec!["15m".into(), "1h".into(), "24h".into()],
        vec![900_000, 3_600_000, 86_400_000],
        "bench".into(),
    );
    let (mut writer, reader) =
        ReadModelWriter::new(CityModel::new(registry.clone(), settings, None));
    let mut sequence = 0_u64;
    contend(
        move || {
            let snapshot = reader.snapshot();
            let top: Vec<u64> = snapshot
                .ranked_cells(1)
                .take(20)
                .map(|cell| cell.events[1])
                .collect();
            std::hint::black_box(top);
        },
        move || {
            writer.apply(window_record(&registry, sequence), T0);
            sequence += 1;
            if sequence % PUBLISH_EVERY == 0 {
                writer.publish(T0);
            }
        },
    )
}

fn concurrent_map(registry: Arc<GridRegistry>) -> Figures {
    // One entry per cell: counts per view, updated in place by the writer; a reader ranks
    // by scanning every shard (what "top N" needs without a published ranking).
    let cells: Arc<DashMap<String, [u64; 3]>> = Arc::new(DashMap::new());
    for cell in registry.cells() {
        cells.insert(cell.grid_id.clone(), [0; 3]);
    }
    let reader_cells = cells.clone();
    let mut sequence = 0_u64;
    contend(
        move || {
            let mut top: Vec<(u64, String)> = reader_cells
                .iter()
                .map(|entry| (entry.value()[1], entry.key().clone()))
                .filter(|(events, _)| *events > 0)
                .collect();
            top.sort_unstable_by(|left, right| right.cmp(left));
            top.truncate(20);
            std::hint::black_box(top);
        },
        move || {
            let window = pane(&registry, sequence);
            if let Some(mut counts) = cells.get_mut(&window.grid_id) {
                for count in counts.iter_mut() {
                    *count += window.count;
                }
            }
            sequence += 1;
        },
    )
}

/// The writer alone: panes applied per second and the cost of one publish with the city's
/// 24 h of panes in it (what the pipeline task pays once a second).
fn writer_alone(registry: Arc<GridRegistry>) {
    let settings = CityModelSettings::new(
        vec!["15m".into(), "1h".into(), "24h".into()],
        vec![900_000, 3_600_000, 86_400_000],
        "bench".into(),
    );
    let (mut writer, _reader) =
        ReadModelWriter::new(CityModel::new(registry.clone(), settings, None));
    let panes = 500_000_u64;
    let started = Instant::now();
    for sequence in 0..panes {
        writer.apply(window_record(&registry, sequence), T0);
    }
    let applying = started.elapsed();
    let started = Instant::now();
    let publishes = 20;
    for round in 0..publishes {
        writer.apply(window_record(&registry, panes + round), T0);
        writer.publish(T0);
    }
    println!(
        "writer alone: {:.0} panes/s applied; one publish {:.2} ms",
        panes as f64 / applying.as_secs_f64(),
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(publishes as u32)
    );
}

fn main() {
    writer_alone(GridRegistry::embedded());
    let registry = GridRegistry::embedded();
    println!("{READERS} readers (top 20 cells, 1 h view) against one writer, {RUN:?} each");
    report("arc-swap snapshot", &swapped_snapshot(registry.clone()));
    report("dashmap (scan per query)", &concurrent_map(registry));
}
