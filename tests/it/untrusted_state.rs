//! Snapshots are untrusted input: whoever can write the state topic (or the snapshot file) can
//! hand any bytes to every instance. A snapshot from another registry, or one whose indexes
//! do not fit, is refused with a clear error; and whatever bytes decode, the restored pipeline
//! never panics.

use std::sync::Arc;

use crate::support::{record, replay_pipeline_settings, simulated_events, WALL_MILLIS};
use gridwatch::grid::{Cell, GridRegistry, RegistryShape};
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Outputs, Pipeline};
use gridwatch::rules::RuleSet;
use gridwatch::state::{SnapshotError, SnapshotFit};
use proptest::prelude::*;

/// A pipeline as replay runs it over `registry`.
fn pipeline_over(registry: Arc<GridRegistry>) -> Pipeline {
    let settings = replay_pipeline_settings();
    let rules = RuleSet::embedded_default(settings.window.size_millis).unwrap();
    let metrics = Arc::new(Metrics::new(&["file"], rules.version()).unwrap());
    Pipeline::new(settings, registry, rules, metrics, "file")
}

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

/// Exercises everything a restored pipeline does: records, watermark advances (closing panes,
/// resolving alerts), the operator queries and a new snapshot.
fn use_restored(pipeline: &mut Pipeline, continuation: &[gridwatch::proto::IncidentEvent]) {
    let mut outputs = Outputs::default();
    for (position, event) in continuation.iter().enumerate() {
        pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
    }
    pipeline.advance(WALL_MILLIS, &mut outputs);
    for view in 0..pipeline.settings().view_spans_millis.len() {
        pipeline.top_cells(view, 10);
    }
    for cell in 0..pipeline.registry().cells().len().min(50) {
        pipeline.cell_activity(gridwatch::grid::CellIndex(cell as u32));
    }
    pipeline.active_alerts();
    gridwatch::state::snapshot(pipeline).unwrap();
    pipeline.finish(WALL_MILLIS, &mut outputs);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("GRIDWATCH_FUZZ_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(128),
        ..ProptestConfig::default()
    })]

    /// Any few bytes of a real snapshot changed: it is refused, or it restores into a pipeline
    /// that processes, advances, answers queries and snapshots again without panicking.
    #[test]
    fn a_mutated_snapshot_is_refused_or_restores_into_a_working_pipeline(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let original = snapshot_fixture();
        let mut bytes = original.snapshot.clone();
        for (index, value) in &mutations {
            let at = index.index(bytes.len());
            bytes[at] = *value;
        }
        let mut pipeline = pipeline_over(GridRegistry::embedded());
        let fit = SnapshotFit::of(&pipeline);
        if let Ok(state) = gridwatch::state::decode(&bytes, &fit) {
            pipeline.restore_state(state);
            use_restored(&mut pipeline, &original.continuation);
        }
    }
}

/// A snapshot after 1,000 events and the 300 events that follow them.
struct SnapshotFixture {
    snapshot: Vec<u8>,
    continuation: Vec<gridwatch::proto::IncidentEvent>,
}

fn snapshot_fixture() -> &'static SnapshotFixture {
    static FIXTURE: std::sync::OnceLock<SnapshotFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let events = simulated_events(9, 1_300, 1.0);
        let mut pipeline = pipeline_over(GridRegistry::embedded());
        let mut outputs = Outputs::default();
        for (position, event) in events[..1_000].iter().enumerate() {
            pipeline.process(record(event, position as u64), WALL_MILLIS, &mut outputs);
        }
        SnapshotFixture {
            snapshot: gridwatch::state::snapshot(&pipeline).unwrap(),
            continuation: events[1_000..].to_vec(),
        }
    })
}
