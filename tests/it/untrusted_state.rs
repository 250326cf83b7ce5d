//! Snapshots are untrusted input: whoever can write the state topic (or the snapshot file) can
//! hand any bytes to every instance. A snapshot from another registry, or one whose indexes
//! do not fit, is refused with a clear error; and whatever bytes decode, the restored pipeline
//! never panics (fuzzed with random and mutated snapshots in `tests/fuzz.rs`).

use std::sync::Arc;

use crate::support::{pipeline_over, record, simulated_events, WALL_MILLIS};
use gridwatch::grid::{Cell, GridRegistry, RegistryShape};
use gridwatch::pipeline::Outputs;
use gridwatch::state::{SnapshotError, SnapshotFit};

/// The embedded registry cut down to its first community: the same ids, far fewer cells.
fn one_community_registry() -> Arc<GridRegistry> {
    let full = GridRegistry::embedded();
    let cells: Vec<Cell> = full
        .cells()
        .iter()
        .filter(|cell| cell.community.0 == 0)
        .cloned()
        .collect();
    Arc::new(
        GridRegistry::from_parts(
            full.districts().to_vec(),
            full.communities()[..1].to_vec(),
            cells,
            Vec::new(),
        )
        .unwrap(),
    )
}

/// A snapshot of a pipeline over the whole city after `events` simulated events.
fn city_snapshot(events: usize) -> Vec<u8> {
    let mut pipeline = pipeline_over(GridRegistry::embedded());
    let mut outputs = Outputs::default();
    for (position, event) in simulated_events(5, events, 1.0).iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    gridwatch::state::snapshot(&pipeline).unwrap()
}

#[test]
fn a_snapshot_from_another_registry_is_refused() {
    let small = one_community_registry();
    let fit = SnapshotFit::of(&pipeline_over(small));
    let error = gridwatch::state::decode(&city_snapshot(2_000), &fit).unwrap_err();
    assert!(
        matches!(error, SnapshotError::RegistryMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("other seeds"), "{error}");
}

/// The field defect: a snapshot that decodes but holds cell indexes past the running registry
/// (here: its fingerprint forged to match) used to restore and panic on the first tick.
#[test]
fn a_forged_fingerprint_does_not_let_foreign_indexes_through() {
    let small = one_community_registry();
    let fit = SnapshotFit::of(&pipeline_over(small.clone()));
    let mut bytes = city_snapshot(2_000);
    let city_fingerprint = RegistryShape::of(&GridRegistry::embedded())
        .fingerprint
        .to_le_bytes();
    let at = bytes
        .windows(8)
        .position(|window| window == city_fingerprint)
        .expect("the snapshot carries the registry fingerprint");
    bytes[at..at + 8].copy_from_slice(&fit.registry.fingerprint.to_le_bytes());

    let error = gridwatch::state::decode(&bytes, &fit).unwrap_err();
    assert!(matches!(error, SnapshotError::OutOfBounds(_)), "{error}");
    assert!(error.to_string().contains("is not below"), "{error}");
    // The partition starts empty instead, and keeps working.
    let mut pipeline = pipeline_over(small);
    assert!(gridwatch::state::restore(&mut pipeline, &bytes).is_err());
    let mut outputs = Outputs::default();
    pipeline.advance(WALL_MILLIS, &mut outputs);
    assert_eq!(pipeline.open_pane_count(), 0);
}
