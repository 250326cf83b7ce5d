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

/// The members of a final window, borrowed: from a `CellWindow`, or a pane's counts with its
/// cell's ids from the registry ([`pane_members`]); `count_by_severity` yields the counts in
/// order.
pub(crate) struct WindowMembers<'text, Counts> {
    pub(crate) grid_id: &'text str,
    pub(crate) community_id: &'text str,
    pub(crate) event_type: i32,
    pub(crate) window_start: Option<pbjson_types::Timestamp>,
    pub(crate) window_end: Option<pbjson_types::Timestamp>,
    pub(crate) count: u64,
    pub(crate) severity_sum: u64,
    pub(crate) count_by_severity: Counts,
    pub(crate) district_id: &'text str,
}

/// The final window of `pane` as its readers see it: the pane's counts with its cell's grid,
/// community and district ids from `registry`, borrowed. The stateful stages emit panes with
/// the cell as an index, so that emitting a window copies no ids on the counting thread.
/// `None` when the cell is not in `registry` (only state restored from a foreign snapshot
/// could hold one; the pipeline does not emit such panes).
pub(crate) fn pane_members<'pane>(
    registry: &'pane GridRegistry,
    pane: &'pane ClosedPane,
) -> Option<WindowMembers<'pane, impl ExactSizeIterator<Item = u64> + 'pane>> {
    let (cell, community) = registry.get_cell_and_community(pane.key.cell)?;
    Some(WindowMembers {
        grid_id: &cell.grid_id,
        community_id: &community.id,
        event_type: pane.key.event_type,
        window_start: Some(crate::time::millis_to_timestamp(pane.window_start_millis)),
        window_end: Some(crate::time::millis_to_timestamp(pane.window_end_millis)),
        count: u64::from(pane.counts.count),
        severity_sum: u64::from(pane.counts.severity_sum),
        count_by_severity: pane
            .counts
            .count_by_severity
            .iter()
            .map(|count| u64::from(*count)),
        district_id: &community.district_code,
    })
}

/// Names a final window for its readers ([`pane_members`]), written into `window`'s own
/// strings (a sink reuses one window for all). `false` when the cell is not in `registry`.
pub fn fill_cell_window(
    registry: &GridRegistry,
    pane: &ClosedPane,
    window: &mut CellWindow,
) -> bool {
    let Some(members) = pane_members(registry, pane) else {
        return false;
    };
    let assign = |target: &mut String, text: &str| {
        target.clear();
        target.push_str(text);
    };
    assign(&mut window.grid_id, members.grid_id);
    assign(&mut window.community_id, members.community_id);
    window.event_type = members.event_type;
    window.window_start = members.window_start;
    window.window_end = members.window_end;
    window.count = members.count;
    window.severity_sum = members.severity_sum;
    window.count_by_severity.clear();
    window.count_by_severity.extend(members.count_by_severity);
    assign(&mut window.district_id, members.district_id);
    true
}

/// [`fill_cell_window`] into a new window.
pub fn cell_window(registry: &GridRegistry, pane: &ClosedPane) -> Option<CellWindow> {
    let mut window = CellWindow::default();
    fill_cell_window(registry, pane, &mut window).then_some(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::CellIndex;
    use crate::proto::EventType;
    use crate::window::read_back::ReadBackPane;
    use crate::window::{PaneCounts, PaneKey};

    #[test]
    fn a_pane_handed_over_in_process_reads_as_its_window_read_back() {
        let registry = GridRegistry::embedded();
        let closed = ClosedPane {
            key: PaneKey {
                cell: CellIndex(3),
                event_type: EventType::GasLeak as i32,
            },
            window_start_millis: 120_000,
            window_end_millis: 180_000,
            counts: PaneCounts {
                count: 7,
                severity_sum: 9,
                count_by_severity: [5, 1, 1, 0],
            },
        };
        let written = crate::sink::cell_window(&registry, &closed).unwrap();
        assert_eq!(
            ReadBackPane::of_closed_pane(&closed),
            ReadBackPane::of_cell_window(&written, &registry)
        );
    }
}
