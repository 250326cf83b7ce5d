//! What the HTTP API shows, as pure functions of the partitions' state: the live view (hottest
//! cells per view, firing alerts, the fraud report) and one cell's detail. The pipeline task
//! computes them about once a second (or per request) and publishes the result; nothing here
//! keeps state or touches the network.

use std::time::Duration;

use crate::api::{CellActivity, CellDetail, LiveView};
use crate::config::Config;
use crate::fraud::FraudReport;
use crate::grid::{CellIndex, GridRegistry};
use crate::partitions::PartitionedPipelines;

/// Cells kept per view in the live view.
pub(crate) const LIVE_TOP_CELLS: usize = 100;

/// Names of the views as the API and the `view` metric label spell them: "15m", "1h", "24h".
pub(crate) fn view_names(config: &Config) -> Vec<String> {
    config
        .window
        .views
        .iter()
        .map(|span| view_name(*span))
        .collect()
}

/// The shortest whole-unit spelling of a view span: hours, else minutes, else seconds.
fn view_name(span: Duration) -> String {
    let seconds = span.as_secs();
    if seconds > 0 && seconds % 3600 == 0 {
        return format!("{}h", seconds / 3600);
    }
    if seconds > 0 && seconds % 60 == 0 {
        return format!("{}m", seconds / 60);
    }
    format!("{seconds}s")
}

/// The live view at wall time `wall_millis`: the [`LIVE_TOP_CELLS`] hottest cells of each of
/// `view_labels`, the firing alerts, and `fraud` (computed by the caller, which also
/// publishes its metrics).
pub(crate) fn live_view(
    pipelines: &PartitionedPipelines,
    view_labels: &[String],
    rules_version: &str,
    fraud: Option<FraudReport>,
    wall_millis: i64,
) -> LiveView {
    let registry = pipelines.registry();
    let hottest_cells = (0..view_labels.len())
        .map(|view_index| {
            pipelines
                .top_cells(view_index, LIVE_TOP_CELLS)
                .into_iter()
                .map(|(cell_index, events)| cell_activity(registry, cell_index, events))
                .collect()
        })
        .collect();
    LiveView {
        watermark: pipelines
            .watermark_millis(wall_millis)
            .map(crate::time::millis_to_rfc3339),
        views: view_labels.to_vec(),
        hottest_cells,
        active_alerts: pipelines.active_alerts(),
        rules_version: rules_version.to_string(),
        fraud,
    }
}

/// One cell's counts by event type and view, and its firing alerts; `None` for an unknown
/// grid id.
pub(crate) fn cell_detail(
    pipelines: &PartitionedPipelines,
    grid_id: &str,
    view_labels: &[String],
    wall_millis: i64,
) -> Option<CellDetail> {
    let registry = pipelines.registry();
    let cell_index = registry.cell_by_grid_id(grid_id)?;
    let activity = pipelines.cell_activity(cell_index);
    let events_in_first_view: u64 = activity
        .iter()
        .filter_map(|(_, counts)| counts.first())
        .sum();
    let events_by_type = activity
        .into_iter()
        .map(|(event_type, counts)| {
            let name = crate::proto::EventType::try_from(event_type)
                .map(|known| known.as_str_name().to_string())
                .unwrap_or_else(|_| event_type.to_string());
            (name, counts)
        })
        .collect();
    let active_alerts = pipelines
        .active_alerts()
        .into_iter()
        .filter(|alert| alert.grid_id == grid_id)
        .collect();
    Some(CellDetail {
        cell: cell_activity(registry, cell_index, events_in_first_view),
        watermark: pipelines
            .watermark_millis(wall_millis)
            .map(crate::time::millis_to_rfc3339),
        views: view_labels.to_vec(),
        events_by_type,
        active_alerts,
    })
}

/// Where a cell is (names and codes) and how many events it had.
fn cell_activity(registry: &GridRegistry, cell_index: CellIndex, events: u64) -> CellActivity {
    let cell = registry.cell(cell_index);
    let community = registry.community(cell.community);
    let district_name = registry
        .district(&community.district_code)
        .map(|district| district.name_zh.clone())
        .unwrap_or_default();
    CellActivity {
        grid_id: cell.grid_id.clone(),
        community_id: community.id.clone(),
        community_name: community.name.clone(),
        district_code: community.district_code.clone(),
        district_name,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::{accepted_event, pipelines, T0};

    #[test]
    fn view_names_are_the_short_spellings_the_api_documents() {
        let names: Vec<String> = [900, 3600, 86_400, 90, 5400]
            .into_iter()
            .map(|seconds| view_name(Duration::from_secs(seconds)))
            .collect();
        assert_eq!(names, ["15m", "1h", "24h", "90s", "90m"]);
    }

    #[test]
    fn the_live_view_ranks_cells_by_events_and_names_them() {
        let (mut pipelines, registry) = pipelines();
        let busy = registry.cells()[0].grid_id.clone();
        let quiet = registry.cells()[1].grid_id.clone();
        accepted_event(&mut pipelines, &busy, "a", T0);
        accepted_event(&mut pipelines, &busy, "b", T0 + 1000);
        accepted_event(&mut pipelines, &quiet, "c", T0 + 2000);
        let labels = vec!["15m".to_string()];
        let view = live_view(&pipelines, &labels, "v1", None, T0 + 3000);
        let ranked: Vec<(&str, u64)> = view.hottest_cells[0]
            .iter()
            .map(|cell| (cell.grid_id.as_str(), cell.events))
            .collect();
        assert_eq!(ranked, [(busy.as_str(), 2), (quiet.as_str(), 1)]);
        assert_eq!(view.views, labels);
        assert_eq!(view.rules_version, "v1");
        assert!(!view.hottest_cells[0][0].community_name.is_empty());
    }

    #[test]
    fn cell_detail_counts_by_event_type_and_knows_no_unknown_cells() {
        let (mut pipelines, registry) = pipelines();
        let grid_id = registry.cells()[0].grid_id.clone();
        accepted_event(&mut pipelines, &grid_id, "a", T0);
        let labels = vec!["15m".to_string()];
        let detail = cell_detail(&pipelines, &grid_id, &labels, T0).unwrap();
        assert_eq!(detail.cell.events, 1);
        assert_eq!(detail.events_by_type["TAILGATING"].first(), Some(&1));
        assert!(cell_detail(&pipelines, "no-such-cell", &labels, T0).is_none());
    }
}
