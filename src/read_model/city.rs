//! [`CityModel`]: the whole city as gridwatch's output records describe it. Synchronous, owned
//! by one task, time as an argument: `apply` folds in one record, `publish` builds the
//! immutable [`CitySnapshot`] readers see and the stream events of what changed since the
//! last publish.
//!
//! Counts per view are kept as running totals: a closed pane adds its count to every view
//! whose span covers it, and when the newest pane end (the model's watermark) moves on, the
//! panes that fall out of a view's span are subtracted. Re-applying a pane replaces its count,
//! so a replayed output topic (after a crash, or read again by a new instance) never double
//! counts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::snapshot::{AreaState, CellState, CitySnapshot, RecentWindow};
use super::views::{
    AlertView, CellCounts, CellsChange, InstanceView, PipelineStatus, Place, StreamPayload,
};
use super::OutputRecord;
use crate::fraud::{FraudBaseline, FraudLedger, FraudReport, FraudSettings};
use crate::grid::{CellIndex, CommunityIndex, GridRegistry};
use crate::proto::{Alert, FraudPartial, InstanceStatus};
use crate::time::{millis_to_rfc3339, timestamp_to_millis};
use crate::window::read_back::ReadBackPane;

/// Event type numbers tracked per cell (the proto enum's 0..=23); a record with another number
/// counts under 0 (`EVENT_TYPE_0`) rather than vanishing.
pub const EVENT_TYPE_SLOTS: usize = 24;
/// Closed panes kept per cell for its detail page.
pub const RECENT_WINDOWS_PER_CELL: usize = 60;
/// Most fraud partials (input partitions) and instances remembered: a bound on what records
/// from a shared topic can make the model hold.
const MAX_KEYED_RECORDS: usize = 4096;

type TypeCounts = [u64; EVENT_TYPE_SLOTS];

/// What the model is told once.
#[derive(Debug, Clone)]
pub struct CityModelSettings {
    /// View names, e.g. "15m", "1h", "24h".
    pub view_names: Vec<String>,
    /// View spans in milliseconds, parallel to `view_names`.
    pub view_spans_millis: Vec<i64>,
    /// How long a resolved alert stays listed (event time after it resolved).
    pub resolved_alert_retention_millis: i64,
    /// An instance without a status for this long is shown stale.
    pub instance_stale_after_millis: i64,
    /// An instance without a status for this long is forgotten.
    pub instance_forget_after_millis: i64,
    /// Window of the dead-letter counts of the pipeline strip.
    pub dead_letter_window_millis: i64,
    /// Version of the local rules (what `rules_version` shows).
    pub rules_version: String,
}

impl CityModelSettings {
    /// The defaults for `view_names` / `view_spans_millis`.
    pub fn new(
        view_names: Vec<String>,
        view_spans_millis: Vec<i64>,
        rules_version: String,
    ) -> Self {
        CityModelSettings {
            view_names,
            view_spans_millis,
            resolved_alert_retention_millis: 15 * 60 * 1000,
            instance_stale_after_millis: 15_000,
            instance_forget_after_millis: 5 * 60 * 1000,
            dead_letter_window_millis: 15 * 60 * 1000,
            rules_version,
        }
    }

    /// The longest view span (how far back panes are kept).
    pub fn longest_view_millis(&self) -> i64 {
        self.view_spans_millis.iter().copied().max().unwrap_or(0)
    }
}

/// The fraud target's inputs, when the model reports it.
#[derive(Debug, Clone)]
pub struct FraudReporting {
    /// Target, case types, time zone.
    pub settings: FraudSettings,
    /// The baseline year's counts.
    pub baseline: FraudBaseline,
}

/// Why a record was not applied (counted by the caller in
/// `gridwatch_read_model_records_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordRejected {
    /// A window or alert about a grid cell or community not in the registry.
    #[error("unknown cell or community")]
    UnknownPlace,
    /// A window without times, or ending before it starts; an alert without a fingerprint.
    #[error("malformed record")]
    Malformed,
    /// An alert change older than the one already applied (a replayed duplicate).
    #[error("superseded by a newer change")]
    Superseded,
    /// More distinct partitions or instances than the model keeps.
    #[error("too many keyed records")]
    TooMany,
}

impl RecordRejected {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordRejected::UnknownPlace => "unknown_place",
            RecordRejected::Malformed => "malformed",
            RecordRejected::Superseded => "superseded",
            RecordRejected::TooMany => "too_many",
        }
    }
}

/// One applied alert.
#[derive(Debug, Clone)]
struct AlertEntry {
    view: Arc<AlertView>,
    /// (starts_at, updated_at, resolved): later changes order after earlier ones.
    order: (i64, i64, bool),
    /// Event time the alert resolved (`None` while firing).
    resolved_at_millis: Option<i64>,
    cell: Option<CellIndex>,
    community: Option<CommunityIndex>,
}

/// One instance's last status and the dead-letter totals it reported over the window.
#[derive(Debug, Clone)]
struct InstanceEntry {
    status: InstanceStatus,
    seen_wall_millis: i64,
    /// (wall time, dead letters by reason since the instance started), oldest first.
    dead_letter_samples: VecDeque<(i64, BTreeMap<String, u64>)>,
}

/// The city-wide model. See the module documentation.
#[derive(Debug)]
pub struct CityModel {
    registry: Arc<GridRegistry>,
    settings: CityModelSettings,
    fraud: Option<FraudReporting>,
    places: Vec<Arc<Place>>,
    /// window_start → (cell, type slot) → count. (Fx: the keys are registry positions, not
    /// text a record chooses, and every window read back inserts one.)
    panes: BTreeMap<i64, rustc_hash::FxHashMap<(u32, u8), u64>>,
    /// End of the newest pane applied.
    watermark_millis: Option<i64>,
    /// Per view: panes starting at or after this count in it.
    view_left_edges: Vec<i64>,
    /// Per view, per cell: counts by type slot.
    totals: Vec<Vec<TypeCounts>>,
    /// Per cell: its newest panes, newest first.
    recent_windows: Vec<VecDeque<RecentWindow>>,
    /// Cells whose counts or recent panes changed since the last publish.
    dirty_cells: Vec<bool>,
    alerts: HashMap<String, AlertEntry>,
    /// Fingerprints changed since the last publish, in order of change.
    changed_alerts: Vec<String>,
    /// Newest event time any record carried (resolved-alert retention).
    event_clock_millis: i64,
    fraud_partials: BTreeMap<String, FraudPartial>,
    fraud_changed: bool,
    fraud_report: Option<Arc<FraudReport>>,
    /// When the report was computed last (it ages with the wall clock: elapsed days,
    /// coverage ratio, month boundaries).
    fraud_report_computed_at_millis: i64,
    instances: BTreeMap<String, InstanceEntry>,
    /// How far the model trails the output topics (set by the Kafka feed).
    feed_lag_seconds: f64,
    /// The counts published last, per cell (to send only what changed).
    published_cells: Vec<Arc<CellState>>,
    last_status_payload_millis: i64,
}

/// How often the fraud report is recomputed when no partial changed.
const FRAUD_REPORT_REFRESH_MILLIS: i64 = 60_000;

/// How often the stream carries the pipeline strip.
const STATUS_EVENT_INTERVAL_MILLIS: i64 = 5_000;

impl CityModel {
    /// An empty model of `registry`'s city.
    pub fn new(
        registry: Arc<GridRegistry>,
        settings: CityModelSettings,
        fraud: Option<FraudReporting>,
    ) -> CityModel {
        let cell_count = registry.cells().len();
        let places: Vec<Arc<Place>> = (0..cell_count)
            .map(|slot| {
                Arc::new(
                    Place::of_cell(&registry, CellIndex(slot as u32))
                        .unwrap_or_else(Place::unknown),
                )
            })
            .collect();
        let view_count = settings.view_names.len();
        let published_cells = places
            .iter()
            .map(|place| Arc::new(CellState::empty(place.clone(), view_count)))
            .collect();
        CityModel {
            totals: vec![vec![[0; EVENT_TYPE_SLOTS]; cell_count]; view_count],
            view_left_edges: vec![i64::MIN; view_count],
            recent_windows: vec![VecDeque::new(); cell_count],
            dirty_cells: vec![false; cell_count],
            places,
            registry,
            settings,
            fraud,
            panes: BTreeMap::new(),
            watermark_millis: None,
            alerts: HashMap::new(),
            changed_alerts: Vec::new(),
            event_clock_millis: i64::MIN,
            fraud_partials: BTreeMap::new(),
            fraud_changed: true,
            fraud_report: None,
            fraud_report_computed_at_millis: i64::MIN,
            instances: BTreeMap::new(),
            feed_lag_seconds: 0.0,
            published_cells,
            last_status_payload_millis: i64::MIN,
        }
    }

    /// What the model was told.
    pub fn settings(&self) -> &CityModelSettings {
        &self.settings
    }

    /// The registry the model locates records with.
    pub fn registry(&self) -> &Arc<GridRegistry> {
        &self.registry
    }

    /// The version of the rules now running (after a reload), shown from the next publish.
    pub fn set_rules_version(&mut self, rules_version: String) {
        self.settings.rules_version = rules_version;
    }

    /// How far the model trails the output topics, for the pipeline strip.
    pub fn set_feed_lag_seconds(&mut self, lag_seconds: f64) {
        self.feed_lag_seconds = lag_seconds;
    }

    /// Folds in one output record received at wall time `wall_millis`.
    pub fn apply(&mut self, record: OutputRecord, wall_millis: i64) -> Result<(), RecordRejected> {
        match record {
            OutputRecord::Window(window) => self.apply_window(&window),
            OutputRecord::Alert(alert) => self.apply_alert(&alert),
            OutputRecord::FraudPartial(partial) => self.apply_fraud_partial(partial),
            OutputRecord::InstanceStatus(status) => self.apply_instance_status(status, wall_millis),
            OutputRecord::InstanceGone { instance_id } => {
                self.instances.remove(&instance_id);
                Ok(())
            }
        }
    }

    fn apply_window(&mut self, window: &ReadBackPane) -> Result<(), RecordRejected> {
        let cell = window.cell.ok_or(RecordRejected::UnknownPlace)?;
        let (start_millis, end_millis) = window.span_millis.ok_or(RecordRejected::Malformed)?;
        if end_millis <= start_millis {
            return Err(RecordRejected::Malformed);
        }
        let slot = u8::try_from(window.event_type)
            .ok()
            .filter(|slot| usize::from(*slot) < EVENT_TYPE_SLOTS)
            .unwrap_or(0);
        if self
            .watermark_millis
            .is_none_or(|watermark| end_millis > watermark)
        {
            self.advance_watermark(end_millis);
        }
        self.event_clock_millis = self.event_clock_millis.max(end_millis);
        let oldest_kept = self.oldest_kept_start();
        if start_millis < oldest_kept {
            return Ok(()); // older than every view: nothing to count
        }
        let previous = self
            .panes
            .entry(start_millis)
            .or_default()
            .insert((cell.0, slot), window.count)
            .unwrap_or(0);
        for (view, left_edge) in self.view_left_edges.iter().enumerate() {
            if start_millis < *left_edge {
                continue;
            }
            if let Some(counts) = self
                .totals
                .get_mut(view)
                .and_then(|cells| cells.get_mut(cell.0 as usize))
                .and_then(|counts| counts.get_mut(usize::from(slot)))
            {
                *counts = counts.saturating_sub(previous).saturating_add(window.count);
            }
        }
        if let Some(recent) = self.recent_windows.get_mut(cell.0 as usize) {
            recent.retain(|kept| {
                !(kept.start_millis == start_millis && kept.event_type == window.event_type)
            });
            let position = recent
                .iter()
                .position(|kept| kept.start_millis <= start_millis)
                .unwrap_or(recent.len());
            if position < RECENT_WINDOWS_PER_CELL {
                recent.insert(
                    position,
                    RecentWindow {
                        start_millis,
                        end_millis,
                        event_type: window.event_type,
                        count: window.count,
                    },
                );
                recent.truncate(RECENT_WINDOWS_PER_CELL);
            }
        }
        self.mark_dirty(cell);
        Ok(())
    }

    fn oldest_kept_start(&self) -> i64 {
        self.view_left_edges
            .iter()
            .copied()
            .min()
            .unwrap_or(i64::MIN)
    }

    /// Moves the watermark to `new_watermark`: panes leaving a view's span are subtracted
    /// from it, panes older than every view are dropped.
    fn advance_watermark(&mut self, new_watermark: i64) {
        for (view, span) in self.settings.view_spans_millis.iter().enumerate() {
            let Some(left_edge) = self.view_left_edges.get(view).copied() else {
                continue;
            };
            let new_left_edge = new_watermark.saturating_sub(*span);
            if new_left_edge <= left_edge {
                continue;
            }
            for (_, panes) in self.panes.range(left_edge..new_left_edge) {
                for ((cell, slot), count) in panes {
                    if let Some(total) = self
                        .totals
                        .get_mut(view)
                        .and_then(|cells| cells.get_mut(*cell as usize))
                        .and_then(|counts| counts.get_mut(usize::from(*slot)))
                    {
                        *total = total.saturating_sub(*count);
                    }
                    if let Some(dirty) = self.dirty_cells.get_mut(*cell as usize) {
                        *dirty = true;
                    }
                }
            }
            if let Some(edge) = self.view_left_edges.get_mut(view) {
                *edge = new_left_edge;
            }
        }
        self.watermark_millis = Some(new_watermark);
        let oldest_kept = self.oldest_kept_start();
        while self
            .panes
            .first_key_value()
            .is_some_and(|(start, _)| *start < oldest_kept)
        {
            self.panes.pop_first();
        }
    }

    fn mark_dirty(&mut self, cell: CellIndex) {
        if let Some(dirty) = self.dirty_cells.get_mut(cell.0 as usize) {
            *dirty = true;
        }
    }

    fn apply_alert(&mut self, alert: &Alert) -> Result<(), RecordRejected> {
        if alert.fingerprint.is_empty() {
            return Err(RecordRejected::Malformed);
        }
        let cell = self.registry.cell_by_grid_id(&alert.grid_id);
        let community = self.registry.community_by_id(&alert.community_id);
        let known_district_scope = alert.grid_id.is_empty()
            && alert.community_id.is_empty()
            && self.registry.district(&alert.district_id).is_some();
        let city_scope = crate::rules::alert::is_city_wide(alert);
        if cell.is_none() && community.is_none() && !known_district_scope && !city_scope {
            return Err(RecordRejected::UnknownPlace);
        }
        let view = Arc::new(AlertView::of_alert(alert, &self.registry));
        let order = alert_order(alert);
        let (_, updated_at, resolved) = order;
        if let Some(existing) = self.alerts.get(&alert.fingerprint) {
            if order < existing.order {
                return Err(RecordRejected::Superseded);
            }
            if let Some(old_cell) = existing.cell {
                self.mark_dirty(old_cell);
            }
        }
        let resolved_at_millis = resolved.then(|| {
            alert
                .ends_at
                .as_ref()
                .map_or(updated_at, timestamp_to_millis)
        });
        self.event_clock_millis = self.event_clock_millis.max(updated_at);
        if let Some(cell) = cell {
            self.mark_dirty(cell);
        }
        self.alerts.insert(
            alert.fingerprint.clone(),
            AlertEntry {
                view,
                order,
                resolved_at_millis,
                cell,
                community,
            },
        );
        self.changed_alerts.push(alert.fingerprint.clone());
        Ok(())
    }

    /// Whether the model holds `alert`'s change or a newer one of its fingerprint: what the
    /// whole-city detector asks before offering a change again
    /// ([`crate::rules::whole_city::UnconfirmedAlerts`]).
    pub fn shows_alert(&self, alert: &Alert) -> bool {
        self.alerts
            .get(&alert.fingerprint)
            .is_some_and(|existing| existing.order >= alert_order(alert))
    }

    /// The oldest watermark among instances whose last status is younger than
    /// `instance_stale_after` at `wall_millis` (by the status's own `updated_at`, so that a
    /// dead instance's status read back from the compacted topic does not count): how far the
    /// whole city's panes are closed. `None` when no live instance reported one.
    pub fn live_watermark_millis(&self, wall_millis: i64) -> Option<i64> {
        let oldest_live = wall_millis.saturating_sub(self.settings.instance_stale_after_millis);
        self.instances
            .values()
            .filter(|entry| {
                entry
                    .status
                    .updated_at
                    .as_ref()
                    .is_some_and(|updated| timestamp_to_millis(updated) >= oldest_live)
            })
            .filter_map(|entry| entry.status.watermark.as_ref().map(timestamp_to_millis))
            .min()
    }

    fn apply_fraud_partial(&mut self, partial: FraudPartial) -> Result<(), RecordRejected> {
        if partial.partition.is_empty() {
            return Err(RecordRejected::Malformed);
        }
        if !self.fraud_partials.contains_key(&partial.partition)
            && self.fraud_partials.len() >= MAX_KEYED_RECORDS
        {
            return Err(RecordRejected::TooMany);
        }
        self.fraud_partials
            .insert(partial.partition.clone(), partial);
        self.fraud_changed = true;
        Ok(())
    }

    fn apply_instance_status(
        &mut self,
        status: InstanceStatus,
        wall_millis: i64,
    ) -> Result<(), RecordRejected> {
        if status.instance_id.is_empty() {
            return Err(RecordRejected::Malformed);
        }
        if !self.instances.contains_key(&status.instance_id)
            && self.instances.len() >= MAX_KEYED_RECORDS
        {
            return Err(RecordRejected::TooMany);
        }
        let window = self.settings.dead_letter_window_millis;
        let dead_letters: BTreeMap<String, u64> = status
            .dead_letters_total
            .iter()
            .map(|(reason, total)| (reason.clone(), *total))
            .collect();
        let entry = self
            .instances
            .entry(status.instance_id.clone())
            .or_insert_with(|| InstanceEntry {
                status: status.clone(),
                seen_wall_millis: wall_millis,
                dead_letter_samples: VecDeque::new(),
            });
        entry
            .dead_letter_samples
            .push_back((wall_millis, dead_letters));
        // Keep one sample at or before the window's start (the baseline to difference from).
        while entry
            .dead_letter_samples
            .get(1)
            .is_some_and(|(seen, _)| *seen <= wall_millis.saturating_sub(window))
        {
            entry.dead_letter_samples.pop_front();
        }
        entry.status = status;
        entry.seen_wall_millis = wall_millis;
        Ok(())
    }

    /// Builds the snapshot at wall time `wall_millis` and the stream events of what changed
    /// since the last publish (alerts, cells, the fraud report, and the pipeline strip every
    /// few seconds).
    pub fn publish(&mut self, wall_millis: i64) -> (CitySnapshot, Vec<StreamPayload>) {
        let mut payloads = Vec::new();
        self.forget_old_entries(wall_millis);
        // Alerts changed since the last publish, once each, in order of their last change.
        let mut changed = std::mem::take(&mut self.changed_alerts);
        let mut seen = std::collections::HashSet::new();
        changed.reverse();
        changed.retain(|fingerprint| seen.insert(fingerprint.clone()));
        changed.reverse();
        for fingerprint in &changed {
            if let Some(entry) = self.alerts.get(fingerprint) {
                payloads.push(StreamPayload::Alert(Box::new(entry.view.as_ref().clone())));
            }
        }
        let (cell_firing, community_firing) = self.firing_per_place();
        let view_count = self.settings.view_names.len();
        let mut changed_cells = Vec::new();
        for (slot, place) in self.places.iter().enumerate() {
            let firing = cell_firing.get(slot).copied().unwrap_or((0, false));
            let was_dirty = self.dirty_cells.get(slot).copied().unwrap_or(false);
            let Some(published) = self.published_cells.get(slot) else {
                continue;
            };
            let firing_changed = (published.firing_alerts, published.life_safety_firing) != firing;
            if !was_dirty && !firing_changed {
                continue;
            }
            let state = Arc::new(CellState {
                place: place.clone(),
                events: (0..view_count)
                    .map(|view| self.cell_total(view, slot))
                    .collect(),
                type_counts: self.cell_type_counts(slot),
                firing_alerts: firing.0,
                life_safety_firing: firing.1,
                recent_windows: self
                    .recent_windows
                    .get(slot)
                    .map(|recent| recent.iter().copied().collect())
                    .unwrap_or_default(),
            });
            if state.events != published.events
                || state.life_safety_firing != published.life_safety_firing
            {
                changed_cells.push(CellCounts {
                    grid_id: place.grid_id.clone().unwrap_or_default(),
                    events: state.events.clone(),
                    life_safety_firing: state.life_safety_firing,
                });
            }
            if let Some(published) = self.published_cells.get_mut(slot) {
                *published = state;
            }
            if let Some(dirty) = self.dirty_cells.get_mut(slot) {
                *dirty = false;
            }
        }
        let watermark = self.watermark_millis.map(millis_to_rfc3339);
        if !changed_cells.is_empty() {
            payloads.push(StreamPayload::Cells(CellsChange {
                watermark: watermark.clone(),
                views: self.settings.view_names.clone(),
                cells: changed_cells,
            }));
        }
        let fraud_report_is_old = wall_millis.saturating_sub(self.fraud_report_computed_at_millis)
            >= FRAUD_REPORT_REFRESH_MILLIS;
        if self.fraud_changed || (self.fraud.is_some() && fraud_report_is_old) {
            self.fraud_changed = false;
            self.fraud_report_computed_at_millis = wall_millis;
            self.fraud_report = self.fraud_report(wall_millis).map(Arc::new);
            if let Some(report) = &self.fraud_report {
                payloads.push(StreamPayload::Fraud(Box::new(report.as_ref().clone())));
            }
        }
        let status = self.pipeline_status(wall_millis);
        if wall_millis.saturating_sub(self.last_status_payload_millis)
            >= STATUS_EVENT_INTERVAL_MILLIS
        {
            self.last_status_payload_millis = wall_millis;
            payloads.push(StreamPayload::Status(status.clone()));
        }
        let cells = self.published_cells.clone();
        let rankings = (0..view_count).map(|view| ranking(&cells, view)).collect();
        let snapshot = CitySnapshot {
            registry: self.registry.clone(),
            generated_at_millis: wall_millis,
            watermark_millis: self.watermark_millis,
            views: self.settings.view_names.clone(),
            rules_version: self.settings.rules_version.clone(),
            communities: self.areas_of_communities(&cells, &community_firing),
            districts: Vec::new(),
            cells,
            rankings,
            alerts: self.sorted_alerts(),
            fraud: self.fraud_report.clone(),
            status,
            last_event_id: 0,
        };
        let snapshot = snapshot.with_districts();
        (snapshot, payloads)
    }

    fn cell_total(&self, view: usize, slot: usize) -> u64 {
        self.totals
            .get(view)
            .and_then(|cells| cells.get(slot))
            .map(|counts| counts.iter().sum())
            .unwrap_or(0)
    }

    /// Per event type slot with events in any view: its count in each view.
    fn cell_type_counts(&self, slot: usize) -> Vec<(i32, Vec<u64>)> {
        (0..EVENT_TYPE_SLOTS)
            .filter_map(|type_slot| {
                let per_view: Vec<u64> = self
                    .totals
                    .iter()
                    .map(|cells| {
                        cells
                            .get(slot)
                            .and_then(|counts| counts.get(type_slot))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect();
                per_view
                    .iter()
                    .any(|count| *count > 0)
                    .then_some((type_slot as i32, per_view))
            })
            .collect()
    }

    /// Firing alerts per cell (count, any life safety) and per community (count).
    fn firing_per_place(&self) -> (Vec<(u32, bool)>, Vec<u32>) {
        let mut cells = vec![(0_u32, false); self.places.len()];
        let mut communities = vec![0_u32; self.registry.communities().len()];
        for entry in self.alerts.values() {
            if entry.resolved_at_millis.is_some() {
                continue;
            }
            if let Some(firing) = entry.cell.and_then(|cell| cells.get_mut(cell.0 as usize)) {
                firing.0 += 1;
                firing.1 |= entry.view.life_safety;
            }
            let community = entry.community.or_else(|| {
                entry
                    .cell
                    .and_then(|cell| self.registry.get_cell(cell))
                    .map(|cell| cell.community)
            });
            if let Some(count) =
                community.and_then(|community| communities.get_mut(community.0 as usize))
            {
                *count += 1;
            }
        }
        (cells, communities)
    }

    /// Firing alerts (life safety first, then severity, then oldest), then resolved ones
    /// (most recently resolved first).
    fn sorted_alerts(&self) -> Vec<Arc<AlertView>> {
        let mut firing: Vec<&AlertEntry> = Vec::new();
        let mut resolved: Vec<&AlertEntry> = Vec::new();
        for entry in self.alerts.values() {
            match entry.resolved_at_millis {
                None => firing.push(entry),
                Some(_) => resolved.push(entry),
            }
        }
        firing.sort_by(|left, right| {
            (
                !left.view.life_safety,
                left.view.severity,
                left.order.0,
                &left.view.fingerprint,
            )
                .cmp(&(
                    !right.view.life_safety,
                    right.view.severity,
                    right.order.0,
                    &right.view.fingerprint,
                ))
        });
        resolved.sort_by(|left, right| {
            (right.resolved_at_millis, &left.view.fingerprint)
                .cmp(&(left.resolved_at_millis, &right.view.fingerprint))
        });
        firing
            .into_iter()
            .chain(resolved)
            .map(|entry| entry.view.clone())
            .collect()
    }

    fn areas_of_communities(&self, cells: &[Arc<CellState>], firing: &[u32]) -> Vec<AreaState> {
        let view_count = self.settings.view_names.len();
        self.registry
            .communities()
            .iter()
            .enumerate()
            .map(|(slot, community)| {
                let mut area = AreaState::empty(
                    Place::of_community(&self.registry, CommunityIndex(slot as u32))
                        .unwrap_or_else(Place::unknown),
                    view_count,
                );
                area.cells = community.cells.len() as u32;
                area.population = u64::from(community.population);
                area.firing_alerts = firing.get(slot).copied().unwrap_or(0);
                for cell in &community.cells {
                    if let Some(state) = cells.get(cell.0 as usize) {
                        area.add_cell(state);
                    }
                }
                area
            })
            .collect()
    }

    /// The city-wide report from every partition's partial and the imported history.
    fn fraud_report(&self, wall_millis: i64) -> Option<FraudReport> {
        let reporting = self.fraud.as_ref()?;
        let mut ledger = FraudLedger::new(self.registry.communities().len());
        for partial in self.fraud_partials.values() {
            let skipped = ledger.add_partial(partial, &self.registry);
            if let Some(first) = skipped.first() {
                tracing::debug!(
                    partition = %partial.partition,
                    rows = skipped.len(),
                    community_id = %first.community_id,
                    reason = first.reason,
                    "fraud partial rows not merged"
                );
            }
        }
        Some(ledger.report(
            wall_millis,
            &self.registry,
            &reporting.baseline,
            &reporting.settings,
        ))
    }

    fn forget_old_entries(&mut self, wall_millis: i64) {
        let retention = self.settings.resolved_alert_retention_millis;
        let event_clock = self.event_clock_millis;
        let mut forgotten_cells = Vec::new();
        self.alerts.retain(|_, entry| {
            let keep = entry
                .resolved_at_millis
                .is_none_or(|resolved| resolved >= event_clock.saturating_sub(retention));
            if !keep {
                forgotten_cells.extend(entry.cell);
            }
            keep
        });
        for cell in forgotten_cells {
            self.mark_dirty(cell);
        }
        let forget_after = self.settings.instance_forget_after_millis;
        self.instances
            .retain(|_, entry| wall_millis.saturating_sub(entry.seen_wall_millis) < forget_after);
    }

    fn pipeline_status(&self, wall_millis: i64) -> PipelineStatus {
        let stale_after = self.settings.instance_stale_after_millis;
        let mut instances = Vec::new();
        let mut events_per_second = 0.0;
        let mut dead_letters: BTreeMap<String, u64> = BTreeMap::new();
        // Distinct partitions: after a rebalance a dead instance's last status still claims
        // the partitions their new owners now report, until it goes stale.
        let mut live_partitions = std::collections::BTreeSet::new();
        let mut oldest_watermark: Option<i64> = None;
        let mut broker_reachable: Option<bool> = None;
        for entry in self.instances.values() {
            let stale = wall_millis.saturating_sub(entry.seen_wall_millis) > stale_after;
            let watermark = entry.status.watermark.as_ref().map(timestamp_to_millis);
            if !stale {
                events_per_second += entry.status.events_per_second;
                live_partitions.extend(entry.status.partitions.iter().map(String::as_str));
                if let Some(watermark) = watermark {
                    oldest_watermark =
                        Some(oldest_watermark.map_or(watermark, |oldest| oldest.min(watermark)));
                }
                if entry.status.source == "kafka" {
                    broker_reachable =
                        Some(broker_reachable.unwrap_or(true) && entry.status.broker_reachable);
                }
                if let (Some((_, first)), Some((_, last))) = (
                    entry.dead_letter_samples.front(),
                    entry.dead_letter_samples.back(),
                ) {
                    for (reason, total) in last {
                        let before = first.get(reason).copied().unwrap_or(0);
                        // A restarted instance counts from zero again: its total is the delta.
                        let delta = if *total >= before {
                            total - before
                        } else {
                            *total
                        };
                        if delta > 0 {
                            *dead_letters.entry(reason.clone()).or_default() += delta;
                        }
                    }
                }
            }
            instances.push(InstanceView {
                instance_id: entry.status.instance_id.clone(),
                partitions: entry.status.partitions.clone(),
                events_per_second: entry.status.events_per_second,
                watermark: watermark.map(millis_to_rfc3339),
                last_seen: millis_to_rfc3339(entry.seen_wall_millis),
                stale,
                broker_reachable: entry.status.broker_reachable,
                source: entry.status.source.clone(),
            });
        }
        PipelineStatus {
            generated_at: millis_to_rfc3339(wall_millis),
            watermark: self.watermark_millis.map(millis_to_rfc3339),
            watermark_lag_seconds: oldest_watermark
                .map(|watermark| wall_millis.saturating_sub(watermark) as f64 / 1000.0),
            events_per_second,
            dead_letters_15m: dead_letters,
            broker_reachable,
            read_model_lag_seconds: self.feed_lag_seconds,
            partitions_total: u32::try_from(live_partitions.len()).unwrap_or(u32::MAX),
            instances,
        }
    }
}

/// Cell positions with events in `view`, most first (ties by grid id).
fn ranking(cells: &[Arc<CellState>], view: usize) -> Vec<u32> {
    let mut ranked: Vec<(u64, u32)> = cells
        .iter()
        .enumerate()
        .filter_map(|(slot, state)| {
            let events = state.events.get(view).copied().unwrap_or(0);
            (events > 0).then_some((events, slot as u32))
        })
        .collect();
    ranked.sort_by(|left, right| {
        right.0.cmp(&left.0).then_with(|| {
            let grid = |slot: u32| {
                cells
                    .get(slot as usize)
                    .and_then(|state| state.place.grid_id.as_deref())
            };
            grid(left.1).cmp(&grid(right.1))
        })
    });
    ranked.into_iter().map(|(_, slot)| slot).collect()
}

/// An alert change's place in its fingerprint's history: (starts_at, updated_at, resolved); a
/// change never replaces a later one.
fn alert_order(alert: &Alert) -> (i64, i64, bool) {
    let starts_at = alert
        .starts_at
        .as_ref()
        .map_or(i64::MIN, timestamp_to_millis);
    let updated_at = alert
        .updated_at
        .as_ref()
        .map_or(starts_at, timestamp_to_millis);
    let resolved = alert.status != crate::proto::AlertStatus::Firing as i32;
    (starts_at, updated_at, resolved)
}
