//! [`CitySnapshot`]: one immutable, consistent picture of the city, swapped in whole about once
//! a second. Handlers filter and copy from it; nothing in it changes after publication, so a
//! reader never sees half of an update.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::views::{event_type_name, AlertView, AreaView, CellView, PipelineStatus, Place};
use crate::fraud::FraudReport;
use crate::grid::GridRegistry;
use crate::time::millis_to_rfc3339;

/// One closed pane of a cell, for its detail page.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WindowView {
    /// Pane start (inclusive).
    pub window_start: String,
    /// Pane end (exclusive).
    pub window_end: String,
    /// Event type enum name.
    pub event_type: String,
    /// Events in the pane.
    pub count: u64,
}

/// One closed pane of a cell as the model keeps it: numbers, turned into a [`WindowView`]'s
/// text only when the cell's detail page is asked for. The model keeps sixty per cell and the
/// feed applies about one window per input event; kept as text, each window cost three
/// strings formatted and freed, and each publish copied sixty views' strings per changed cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentWindow {
    /// Pane start (inclusive), epoch milliseconds.
    pub start_millis: i64,
    /// Pane end (exclusive), epoch milliseconds.
    pub end_millis: i64,
    /// Event type number.
    pub event_type: i32,
    /// Events in the pane.
    pub count: u64,
}

impl RecentWindow {
    /// The pane as the API shows it.
    pub fn view(&self) -> WindowView {
        WindowView {
            window_start: millis_to_rfc3339(self.start_millis),
            window_end: millis_to_rfc3339(self.end_millis),
            event_type: event_type_name(self.event_type),
            count: self.count,
        }
    }
}

/// One cell's counts in every view.
#[derive(Debug, Clone, PartialEq)]
pub struct CellState {
    /// Where it is.
    pub place: Arc<Place>,
    /// Events per view.
    pub events: Vec<u64>,
    /// (event type number, events per view) for types with events in some view.
    pub type_counts: Vec<(i32, Vec<u64>)>,
    /// Firing alerts about the cell.
    pub firing_alerts: u32,
    /// One of them is life safety.
    pub life_safety_firing: bool,
    /// Its newest closed panes, newest first.
    pub recent_windows: Vec<RecentWindow>,
}

impl CellState {
    /// A cell without events or alerts.
    pub fn empty(place: Arc<Place>, view_count: usize) -> CellState {
        CellState {
            place,
            events: vec![0; view_count],
            type_counts: Vec::new(),
            firing_alerts: 0,
            life_safety_firing: false,
            recent_windows: Vec::new(),
        }
    }

    /// The cell as the API shows it in view `view`.
    pub fn view(&self, view: usize) -> CellView {
        CellView {
            place: self.place.as_ref().clone(),
            events: self.events.get(view).copied().unwrap_or(0),
            events_by_type: by_type(&self.type_counts, view),
            firing_alerts: self.firing_alerts,
            life_safety_firing: self.life_safety_firing,
        }
    }
}

fn by_type(type_counts: &[(i32, Vec<u64>)], view: usize) -> BTreeMap<String, u64> {
    type_counts
        .iter()
        .filter_map(|(event_type, per_view)| {
            let count = per_view.get(view).copied().unwrap_or(0);
            (count > 0).then(|| (event_type_name(*event_type), count))
        })
        .collect()
}

/// A community's or district's sums over its cells.
#[derive(Debug, Clone, PartialEq)]
pub struct AreaState {
    /// Codes, names and centroid (`grid_id` is `None`).
    pub place: Place,
    /// Grid cells.
    pub cells: u32,
    /// Residents.
    pub population: u64,
    /// Events per view.
    pub events: Vec<u64>,
    /// (event type number, events per view).
    pub type_counts: Vec<(i32, Vec<u64>)>,
    /// Firing alerts.
    pub firing_alerts: u32,
}

impl AreaState {
    /// An area without cells.
    pub fn empty(place: Place, view_count: usize) -> AreaState {
        AreaState {
            place,
            cells: 0,
            population: 0,
            events: vec![0; view_count],
            type_counts: Vec::new(),
            firing_alerts: 0,
        }
    }

    /// Adds a cell's counts.
    pub fn add_cell(&mut self, cell: &CellState) {
        add_counts(
            &mut self.events,
            &mut self.type_counts,
            &cell.events,
            &cell.type_counts,
        );
    }

    fn add_area(&mut self, other: &AreaState) {
        add_counts(
            &mut self.events,
            &mut self.type_counts,
            &other.events,
            &other.type_counts,
        );
        self.cells += other.cells;
        self.population += other.population;
        self.firing_alerts += other.firing_alerts;
    }

    /// The area as the API shows it in view `view`; `name_en` for districts.
    pub fn view(&self, view: usize, is_district: bool) -> AreaView {
        let place = &self.place;
        AreaView {
            id: if is_district {
                place.district_id.clone()
            } else {
                place.community_id.clone()
            },
            name: if is_district {
                place.district_name.clone()
            } else {
                place.community_name.clone()
            },
            name_en: is_district.then(|| place.district_name_en.clone()),
            district_id: place.district_id.clone(),
            district_name: place.district_name.clone(),
            centroid: place.centroid,
            cells: self.cells,
            population: self.population,
            events: self.events.get(view).copied().unwrap_or(0),
            events_by_type: by_type(&self.type_counts, view),
            firing_alerts: self.firing_alerts,
        }
    }
}

fn add_counts(
    events: &mut [u64],
    type_counts: &mut Vec<(i32, Vec<u64>)>,
    added_events: &[u64],
    added_type_counts: &[(i32, Vec<u64>)],
) {
    for (total, added) in events.iter_mut().zip(added_events) {
        *total = total.saturating_add(*added);
    }
    for (event_type, added) in added_type_counts {
        match type_counts
            .iter_mut()
            .find(|(known, _)| known == event_type)
        {
            Some((_, totals)) => {
                for (total, added) in totals.iter_mut().zip(added) {
                    *total = total.saturating_add(*added);
                }
            }
            None => type_counts.push((*event_type, added.clone())),
        }
    }
    type_counts.sort_by_key(|(event_type, _)| *event_type);
}

/// The whole city at one instant.
#[derive(Debug, Clone)]
pub struct CitySnapshot {
    /// The registry (names, polygons, lookups by id).
    pub registry: Arc<GridRegistry>,
    /// Wall time it was built.
    pub generated_at_millis: i64,
    /// End of the newest closed pane.
    pub watermark_millis: Option<i64>,
    /// View names, e.g. "15m", "1h", "24h".
    pub views: Vec<String>,
    /// Version of the local rules.
    pub rules_version: String,
    /// Every registered cell, in registry order.
    pub cells: Vec<Arc<CellState>>,
    /// Per view: positions in `cells` with events, most first.
    pub rankings: Vec<Vec<u32>>,
    /// Every community, in registry order.
    pub communities: Vec<AreaState>,
    /// Every district, in registry order.
    pub districts: Vec<AreaState>,
    /// Firing alerts (life safety, severity, age), then recently resolved ones.
    pub alerts: Vec<Arc<AlertView>>,
    /// The fraud report over every partition's counts.
    pub fraud: Option<Arc<FraudReport>>,
    /// The pipeline strip.
    pub status: PipelineStatus,
    /// The newest stream event this snapshot includes (a client that read it resumes after).
    pub last_event_id: u64,
}

impl CitySnapshot {
    /// An empty city (before the first publish).
    pub fn empty(registry: Arc<GridRegistry>, views: Vec<String>, rules_version: String) -> Self {
        let view_count = views.len();
        let cells = (0..registry.cells().len())
            .map(|slot| {
                let place = Place::of_cell(&registry, crate::grid::CellIndex(slot as u32))
                    .unwrap_or_else(Place::unknown);
                Arc::new(CellState::empty(Arc::new(place), view_count))
            })
            .collect();
        let communities = (0..registry.communities().len())
            .map(|slot| {
                let place =
                    Place::of_community(&registry, crate::grid::CommunityIndex(slot as u32))
                        .unwrap_or_else(Place::unknown);
                AreaState::empty(place, view_count)
            })
            .collect();
        CitySnapshot {
            registry,
            generated_at_millis: 0,
            watermark_millis: None,
            rankings: vec![Vec::new(); view_count],
            views,
            rules_version,
            cells,
            communities,
            districts: Vec::new(),
            alerts: Vec::new(),
            fraud: None,
            status: PipelineStatus {
                generated_at: millis_to_rfc3339(0),
                watermark: None,
                watermark_lag_seconds: None,
                events_per_second: 0.0,
                dead_letters_15m: BTreeMap::new(),
                broker_reachable: None,
                read_model_lag_seconds: 0.0,
                partitions_total: 0,
                instances: Vec::new(),
            },
            last_event_id: 0,
        }
        .with_districts()
    }

    /// Fills `districts` from `communities` (sums over each district's communities; the
    /// centroid is the mean of theirs).
    pub fn with_districts(mut self) -> CitySnapshot {
        let view_count = self.views.len();
        let mut districts: Vec<AreaState> = Vec::new();
        for district in self.registry.districts() {
            let place = Place {
                district_id: district.code.clone(),
                district_name: district.name_zh.clone(),
                district_name_en: district.name_en.clone(),
                ..Place::unknown()
            };
            let mut area = AreaState::empty(place, view_count);
            let mut centroid_sum = [0.0, 0.0];
            let mut communities = 0.0;
            for community in self
                .communities
                .iter()
                .filter(|community| community.place.district_id == district.code)
            {
                area.add_area(community);
                centroid_sum[0] += community.place.centroid[0];
                centroid_sum[1] += community.place.centroid[1];
                communities += 1.0;
            }
            if communities > 0.0 {
                area.place.centroid =
                    [centroid_sum[0] / communities, centroid_sum[1] / communities];
            }
            districts.push(area);
        }
        self.districts = districts;
        self
    }

    /// The position of view `name` (e.g. "1h").
    pub fn view_index(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|view| view == name)
    }

    /// The cell with grid id `grid_id`.
    pub fn cell(&self, grid_id: &str) -> Option<&Arc<CellState>> {
        let cell = self.registry.cell_by_grid_id(grid_id)?;
        self.cells.get(cell.0 as usize)
    }

    /// The watermark as RFC 3339.
    pub fn watermark(&self) -> Option<String> {
        self.watermark_millis.map(millis_to_rfc3339)
    }

    /// When the snapshot was built, RFC 3339.
    pub fn generated_at(&self) -> String {
        millis_to_rfc3339(self.generated_at_millis)
    }

    /// Cells with events in view `view`, most first.
    pub fn ranked_cells(&self, view: usize) -> impl Iterator<Item = &Arc<CellState>> {
        self.rankings
            .get(view)
            .into_iter()
            .flatten()
            .filter_map(|slot| self.cells.get(*slot as usize))
    }
}
