//! Sinks: where outputs go. JSONL files take whole [`crate::pipeline::Outputs`] batches;
//! alert state changes are also delivered to Alertmanager and a CloudEvents webhook
//! ([`delivery`]), enriched with labels and annotations ([`enrich`]); [`kafka`] writes the
//! output topics (`gridwatch dlq replay`, [`crate::tools::dlq_replay`], reads its dead
//! letters back).

// No panic path reachable from input, state or configuration (README "Security").

pub mod alertmanager;
pub mod cloudevents;
pub mod delivery;
pub mod enrich;
pub mod file;
pub mod kafka;
pub mod webhook;
pub mod window_json;

use crate::grid::GridRegistry;
use crate::proto::CellWindow;
use crate::window::ClosedPane;

/// Names a final window for its readers: `pane` with its cell's grid, community and district
/// ids from `registry`, written into `window`'s own strings (a sink reuses one window for all).
/// The stateful stages emit panes with the cell as an index, so that emitting a window copies
/// no ids on the counting thread. `false` when the cell is not in `registry` (only state
/// restored from a foreign snapshot could hold one; the pipeline does not emit such panes).
pub fn fill_cell_window(
    registry: &GridRegistry,
    pane: &ClosedPane,
    window: &mut CellWindow,
) -> bool {
    let Some((cell, community)) = registry.get_cell_and_community(pane.key.cell) else {
        return false;
    };
    window.grid_id.clone_from(&cell.grid_id);
    window.community_id.clone_from(&community.id);
    window.event_type = pane.key.event_type;
    window.window_start = Some(crate::time::millis_to_timestamp(pane.window_start_millis));
    window.window_end = Some(crate::time::millis_to_timestamp(pane.window_end_millis));
    window.count = u64::from(pane.counts.count);
    window.severity_sum = u64::from(pane.counts.severity_sum);
    window.count_by_severity.clear();
    window.count_by_severity.extend(
        pane.counts
            .count_by_severity
            .iter()
            .map(|count| u64::from(*count)),
    );
    window.district_id.clone_from(&community.district_code);
    true
}

/// [`fill_cell_window`] into a new window.
pub fn cell_window(registry: &GridRegistry, pane: &ClosedPane) -> Option<CellWindow> {
    let mut window = CellWindow::default();
    fill_cell_window(registry, pane, &mut window).then_some(window)
}
