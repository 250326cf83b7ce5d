//! Hostile-input benchmark: what input can buy. Writes a file of hostile records — a flood at
//! ten times the simulator's rate mixed with huge ids, thousands of devices firing in one cell,
//! many cells and types, attribute floods and one 200 MB line — replays it with the release
//! binary (`gridwatch replay`), and reports the binary's peak RSS and output bytes per input
//! byte. Targets (issue 15): peak RSS ≤ 256 MB and output ≤ 2× input. Not a test: figures are
//! printed and written to `target/hostile.json`.
//!
//! Run: `cargo bench --bench hostile` (builds the release binary first).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gridwatch::grid::GridRegistry;
use gridwatch::simulator::{Simulator, SimulatorSettings};

/// 2026-03-02T00:00:00Z.
const START_MILLIS: i64 = 1_772_409_600_000;

fn main() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "gridwatch"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "release build failed");
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/gridwatch");
    let directory = tempfile::tempdir().expect("temporary directory");
    let input = directory.path().join("hostile.jsonl");
    let input_bytes = write_hostile_input(&input);
    let output = directory.path().join("out");

    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args(["replay", "--no-progress", "--input"])
        .arg(&input)
        .arg("--output-dir")
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start gridwatch replay");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib: u64 = 0;
    loop {
        if let Some(high_water_kib) = high_water_mark_kib(&status_path) {
            peak_rss_kib = peak_rss_kib.max(high_water_kib);
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "replay failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let output_bytes: u64 = std::fs::read_dir(&output)
        .expect("output directory")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    let ratio = output_bytes as f64 / input_bytes as f64;
    let peak_rss_mib = peak_rss_kib as f64 / 1024.0;
    println!("hostile input     {:.1} MB", input_bytes as f64 / 1e6);
    println!("replay time       {:.2} s", elapsed.as_secs_f64());
    println!("peak RSS          {peak_rss_mib:.1} MiB (target <= 256 MiB)");
    println!(
        "output            {:.1} MB = {ratio:.3} x input (target <= 2)",
        output_bytes as f64 / 1e6
    );
    let report = format!(
        "{{\"input_bytes\":{input_bytes},\"output_bytes\":{output_bytes},\"output_per_input\":{ratio:.4},\"peak_rss_mib\":{peak_rss_mib:.1},\"seconds\":{:.2}}}\n",
        elapsed.as_secs_f64()
    );
    let report_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/hostile.json");
    std::fs::write(&report_path, report).expect("write the report");
    println!("report            {}", report_path.display());
}

/// `VmHWM` (peak resident set) of a running process, in KiB.
fn high_water_mark_kib(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes the hostile file; returns its size.
fn write_hostile_input(path: &Path) -> u64 {
    let registry = GridRegistry::embedded();
    let mut writer = BufWriter::new(std::fs::File::create(path).expect("create input"));
    let settings = SimulatorSettings {
        seed: 99,
        start_millis: START_MILLIS,
        rate_multiplier: 10.0,
        ..SimulatorSettings::default()
    };
    let mut simulator = Simulator::new(settings, registry.clone()).expect("simulator");
    let fire_cell = registry.cells()[0].grid_id.clone();
    let huge_id = "9".repeat(50_000);
    let long_id = "7".repeat(200);
    for round in 0..200_000_u64 {
        // The normal flood: a simulated event at ten times the usual rate.
        let event = simulator.next_event();
        serde_json::to_writer(&mut writer, &event).expect("write");
        writer.write_all(b"\n").expect("write");
        let occurred_at = event
            .occurred_at
            .as_ref()
            .map_or(START_MILLIS, |timestamp| timestamp.seconds * 1000);
        let when = gridwatch::time::millis_to_rfc3339(occurred_at);
        match round % 100 {
            // Thousands of devices firing in one cell, ids just under the limit.
            0..=9 => writeln!(
                writer,
                r#"{{"event_id":"fire-{round}-{long_id}","device_id":"dev-{round}-{long_id}","grid_id":"{fire_cell}","event_type":"FIRE_SMOKE","occurred_at":"{when}"}}"#
            ),
            // Huge ids: refused as field_too_long.
            10 => writeln!(
                writer,
                r#"{{"event_id":"huge-{round}-{huge_id}","grid_id":"{fire_cell}","event_type":"SOS","occurred_at":"{when}"}}"#
            ),
            // Many cells and types, unknown devices.
            11..=19 => {
                let cell = &registry.cells()[(round as usize * 7) % registry.cells().len()];
                let event_type = gridwatch::event::ALL_EVENT_TYPES
                    [(round as usize) % gridwatch::event::ALL_EVENT_TYPES.len()];
                writeln!(
                    writer,
                    r#"{{"event_id":"spread-{round}","device_id":"rogue-{round}","grid_id":"{}","event_type":"{}","occurred_at":"{when}"}}"#,
                    cell.grid_id,
                    event_type.as_str_name()
                )
            }
            // An attribute flood.
            20 => {
                let attributes: Vec<String> = (0..500)
                    .map(|index| format!(r#""k{index}":"{}""#, "v".repeat(100)))
                    .collect();
                writeln!(
                    writer,
                    r#"{{"event_id":"attrs-{round}","grid_id":"{fire_cell}","event_type":"LOITERING","occurred_at":"{when}","attributes":{{{}}}}}"#,
                    attributes.join(",")
                )
            }
            _ => Ok(()),
        }
        .expect("write");
    }
    // One 200 MB line.
    let chunk = vec![b'x'; 1024 * 1024];
    writer
        .write_all(b"{\"event_id\":\"giant\",\"note\":\"")
        .expect("write");
    for _ in 0..200 {
        writer.write_all(&chunk).expect("write");
    }
    writer.write_all(b"\"}\n").expect("write");
    writer.flush().expect("flush");
    std::fs::metadata(path).expect("input size").len()
}
