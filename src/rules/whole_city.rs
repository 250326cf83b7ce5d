//! The whole-city detector: district, cluster and city-wide rules in Kafka mode.
//!
//! Scaled out, each input partition has its own rule engine, which holds only some
//! communities: a district's count would be part of a district, and a scan over neighbouring
//! communities would miss the neighbours on other partitions. Those engines therefore skip
//! every rule that needs the whole city ([`super::Rule::needs_whole_city`]: district-scope
//! spike, CUSUM and threshold rules, and scan rules). This detector evaluates them instead,
//! from what every instance already reads: the closed panes of the `windows` topic (one
//! record per grid cell, event type and minute, from every partition), beside the city-wide
//! read model.
//!
//! - **Input.** Each pane becomes as many events as it counts, at the pane's start, with its
//!   severities, handed to an ordinary [`RuleEngine`] that sees the whole city. The rules
//!   count in panes, so they count what the partition engines counted. A pane read again
//!   (a replayed topic, a rebalance) adds only what it gained, never twice. Alerts carry no
//!   event ids (the panes have none); everything else is what a single engine would emit,
//!   which `whole_city_detector_alerts_equal_a_single_engines` proves on a simulated wave.
//! - **Time.** The detector's watermark is the oldest watermark among the instances that
//!   reported within the last seconds ([`crate::read_model::CityModel::live_watermark_millis`]),
//!   used [`WATERMARK_GRACE_MILLIS`] after it was heard: an instance's panes and its status
//!   travel on different topics, so the panes behind a watermark may arrive a little after
//!   it. A pane that arrives later still counts, from the next evaluation on.
//! - **Catching up.** On start, the read model's feed reads the windows topic from "now −
//!   the rules' longest history". The panes are buffered until the feed has read every
//!   partition to its end, then replayed in time order; the alerts of that replay are not
//!   sent again — only the alerts firing at its end are ([`WholeCityDetector::finish_catch_up`]),
//!   and only if the alerts topic does not already show them.
//! - **Learned history.** What the catch-up reads back (the rules' longest window plus a day)
//!   is far less than the weeks a learned level rests on, so the closed hours of an earlier
//!   run can be handed over ([`WholeCityDetector::restore_learned_history`], kept on the state
//!   topic by [`crate::read_model::learned_history`]): those before the detector's own input
//!   starts are adopted, the rest comes from the panes.
//! - **One publisher.** Every instance runs the detector (so a new publisher needs no
//!   warm-up), and only the instance owning input partition 0 publishes. Every alert change is
//!   kept as unconfirmed ([`UnconfirmedAlerts`]) until the alerts topic, read back into the
//!   read model, shows it; it is offered again every [`RESEND_AFTER_MILLIS`]. So after a
//!   rebalance the new owner of partition 0 publishes what the old one had not: at least
//!   once, converging; a duplicate is harmless (same alert id; the read model and
//!   Alertmanager keep the newest).

// No panic path reachable from a record (README "Security").

use std::collections::{BTreeMap, VecDeque};

use super::baseline::{Baseline, BaselineState};
use super::series::pane_start;
use super::{RuleEngine, RuleSet};
use crate::event::{default_severity, AcceptedEvent};
use crate::grid::{CellIndex, GridRegistry};
use crate::proto::{Alert, EventType, IncidentEvent};
use crate::time::timestamp_to_millis;
use crate::window::read_back::ReadBackPane;

/// How long after an instance's watermark is heard the detector moves to it.
pub const WATERMARK_GRACE_MILLIS: i64 = 10_000;
/// How long a published alert change may go unseen on the alerts topic before it is offered
/// again.
pub const RESEND_AFTER_MILLIS: i64 = 30_000;
/// How long an alert change is offered again at most (another instance's detector may have
/// published a slightly different version, which this one then never sees confirmed).
pub const GIVE_UP_AFTER_MILLIS: i64 = 600_000;
/// Most alert changes kept unconfirmed.
const MAX_UNCONFIRMED: usize = 4096;
/// Most panes buffered while catching up (about 40 bytes each).
const MAX_BUFFERED_PANES: usize = 2_000_000;
/// The shortest history read back, whatever the rules count over.
const MIN_HISTORY_MILLIS: i64 = 24 * 3_600_000;
/// Event ids carried by the events the detector makes of a pane: none.
const NO_EVENT_ID: &str = "";

/// Why a pane was not counted (the metric label is [`PaneSkipped::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaneSkipped {
    /// Its grid id is not in the registry.
    #[error("unknown grid")]
    UnknownGrid,
    /// No start or end, or not one pane long.
    #[error("not a pane")]
    NotAPane,
    /// It starts before the history the detector keeps.
    #[error("older than the rules' history")]
    TooOld,
    /// The catch-up buffer is full.
    #[error("catch-up buffer full")]
    BufferFull,
}

impl PaneSkipped {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PaneSkipped::UnknownGrid => "unknown_grid",
            PaneSkipped::NotAPane => "not_a_pane",
            PaneSkipped::TooOld => "too_old",
            PaneSkipped::BufferFull => "buffer_full",
        }
    }
}

/// What became of a pane read (the metric label is [`PaneRead::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaneRead {
    /// Nothing new, or no whole-city rule counts its type.
    Unchanged,
    /// Ahead of the watermark's pane (or read while catching up): counted when the
    /// watermark reaches it.
    Waiting,
    /// Counted in the watermark's pane.
    Counted,
    /// Counted after the watermark passed it: the evaluations in between missed it.
    CountedLate,
}

impl PaneRead {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PaneRead::Unchanged => "unchanged",
            PaneRead::Waiting => "waiting",
            PaneRead::Counted => "counted",
            PaneRead::CountedLate => "counted_late",
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct WholeCityDetector {
    engine: RuleEngine,
    pane_size_millis: i64,
    /// How far back panes are counted, behind the watermark.
    history_millis: i64,
    /// What was read per (pane start, cell, event type), by severity (index 0 is severity 1).
    read: BTreeMap<PaneKey, [u64; 4]>,
    /// What panes ahead of the watermark's pane gained, handed to the engine when the
    /// watermark reaches them: the engine sees a pane's events after the watermark moved to
    /// the pane's start and before it moves past, as a pipeline's engine does.
    ahead: BTreeMap<PaneKey, [u64; 4]>,
    /// Whether the history read on start is still being buffered.
    catching_up: bool,
    watermark_millis: Option<i64>,
    /// Watermarks heard, (wall time, watermark), oldest first, waiting for their grace.
    heard_watermarks: VecDeque<(i64, i64)>,
    /// The event a pane's events are made from (its ids stay empty).
    pane_event: IncidentEvent,
    /// The learned history of an earlier run ([`WholeCityDetector::restore_learned_history`]),
    /// adopted once the detector knows where its own input starts.
    pending_history: Option<BaselineState>,
    /// The detector's first watermark: its own input starts there.
    observed_from_millis: Option<i64>,
}

/// (pane start, `CellIndex.0`, `EventType as i32`): ordered by time first.
type PaneKey = (i64, u32, i32);

impl WholeCityDetector {
    /// A detector of `rules`' whole-city part (which may be empty until a reload adds such a
    /// rule), catching up until [`WholeCityDetector::finish_catch_up`].
    pub fn new(rules: &RuleSet, baseline: Baseline) -> WholeCityDetector {
        let history_millis = whole_city_lookback_millis(rules)
            .unwrap_or_else(|| MIN_HISTORY_MILLIS.saturating_add(rules.pane_size_millis()));
        WholeCityDetector {
            engine: RuleEngine::with_baseline(rules.whole_city_part(), baseline),
            pane_size_millis: rules.pane_size_millis().max(1),
            history_millis,
            read: BTreeMap::new(),
            ahead: BTreeMap::new(),
            catching_up: true,
            watermark_millis: None,
            heard_watermarks: VecDeque::new(),
            pane_event: IncidentEvent::default(),
            pending_history: None,
            observed_from_millis: None,
        }
    }

    /// The rules evaluated.
    pub fn rules(&self) -> &RuleSet {
        self.engine.rules()
    }

    /// The detector's event time (`None` before its first advance).
    pub fn watermark_millis(&self) -> Option<i64> {
        self.watermark_millis
    }

    /// Whether the detector is still buffering the history it reads on start.
    pub fn is_catching_up(&self) -> bool {
        self.catching_up
    }

    /// The learned history to keep across restarts: the closed hours of the learned baseline
    /// ([`BaselineState::closed_part`]).
    pub fn learned_history(&self) -> BaselineState {
        self.engine.learned_baseline().closed_part()
    }

    /// Closed hours of history the learned baseline rests on (of the type with the most).
    pub fn learned_hours(&self) -> usize {
        self.engine.learned_baseline().most_closed_hours()
    }

    /// Takes over the learned history of an earlier run (its [`WholeCityDetector::learned_history`]):
    /// the closed hours before this detector's own input starts, which the history it reads back
    /// on start does not reach. Before the first watermark it waits for that start.
    pub fn restore_learned_history(&mut self, earlier: BaselineState) {
        match self.observed_from_millis {
            Some(observed_from) => self.engine.adopt_learned_history(&earlier, observed_from),
            None => self.pending_history = Some(earlier),
        }
    }

    /// Swaps the rules (hot reload) for the whole-city part of `rules`: alerts of removed or
    /// changed rules resolve into `out`, as [`RuleEngine::replace_rules`] does.
    pub fn replace_rules(&mut self, rules: &RuleSet, out: &mut Vec<Alert>) {
        let first_new = out.len();
        self.engine.replace_rules(rules.whole_city_part(), out);
        if let Some(history_millis) = whole_city_lookback_millis(rules) {
            self.history_millis = history_millis;
        }
        without_event_ids(out.get_mut(first_new..));
    }

    /// Reads one closed pane of the windows topic (what it gained, if read before); its
    /// alert changes go to `out`.
    pub fn apply_pane(
        &mut self,
        window: &ReadBackPane,
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) -> Result<PaneRead, PaneSkipped> {
        let Ok(event_type) = EventType::try_from(window.event_type) else {
            return Ok(PaneRead::Unchanged);
        };
        if !self.engine.has_rules_for_type(event_type) {
            return Ok(PaneRead::Unchanged);
        }
        let cell = window.cell.ok_or(PaneSkipped::UnknownGrid)?;
        let (start_millis, end_millis) = window.span_millis.ok_or(PaneSkipped::NotAPane)?;
        if end_millis.checked_sub(start_millis) != Some(self.pane_size_millis)
            || start_millis.rem_euclid(self.pane_size_millis) != 0
        {
            return Err(PaneSkipped::NotAPane);
        }
        if let Some(watermark) = self.watermark_millis {
            if start_millis < watermark.saturating_sub(self.history_millis) {
                return Err(PaneSkipped::TooOld);
            }
        }
        let key = (start_millis, cell.0, event_type as i32);
        let by_severity = counts_by_severity(window, event_type);
        let already_read = self.read.get(&key).copied().unwrap_or([0; 4]);
        let mut gained = [0_u64; 4];
        for ((gain, new), old) in gained.iter_mut().zip(by_severity).zip(already_read) {
            *gain = new.saturating_sub(old);
        }
        if gained.iter().all(|gain| *gain == 0) {
            return Ok(PaneRead::Unchanged);
        }
        let waits = self.catching_up
            || self
                .watermark_millis
                .is_none_or(|watermark| start_millis > self.pane_start(watermark));
        if waits && self.ahead.len() >= MAX_BUFFERED_PANES && !self.ahead.contains_key(&key) {
            return Err(PaneSkipped::BufferFull);
        }
        let read = self.read.entry(key).or_insert([0; 4]);
        for (old, new) in read.iter_mut().zip(by_severity) {
            *old = (*old).max(new);
        }
        if waits {
            let waiting = self.ahead.entry(key).or_insert([0; 4]);
            for (sum, gain) in waiting.iter_mut().zip(gained) {
                *sum = sum.saturating_add(gain);
            }
            return Ok(PaneRead::Waiting);
        }
        let first_new = out.len();
        self.count(key, gained, registry, out);
        without_event_ids(out.get_mut(first_new..));
        let late = self
            .watermark_millis
            .is_some_and(|watermark| start_millis < self.pane_start(watermark));
        Ok(if late {
            PaneRead::CountedLate
        } else {
            PaneRead::Counted
        })
    }

    /// Notes the whole city's watermark as heard at `wall_millis` (the oldest live
    /// instance's), to be moved to once its grace has passed.
    pub fn hear_watermark(&mut self, watermark_millis: i64, wall_millis: i64) {
        let newest_heard = self.heard_watermarks.back().map(|(_, heard)| *heard);
        if newest_heard.or(self.watermark_millis) >= Some(watermark_millis) {
            return;
        }
        self.heard_watermarks
            .push_back((wall_millis, watermark_millis));
    }

    /// Moves the watermark to the newest heard one whose grace has passed at `wall_millis`
    /// (not while catching up); alert changes go to `out`.
    pub fn advance(&mut self, wall_millis: i64, registry: &GridRegistry, out: &mut Vec<Alert>) {
        if self.catching_up {
            return;
        }
        let mut due = None;
        while let Some((heard_at, watermark)) = self.heard_watermarks.front().copied() {
            if wall_millis.saturating_sub(heard_at) < WATERMARK_GRACE_MILLIS {
                break;
            }
            due = Some(watermark);
            self.heard_watermarks.pop_front();
        }
        if let Some(watermark) = due {
            self.advance_to(watermark, registry, out);
        }
    }

    /// Ends the catch-up: the buffered panes are counted in time order, the watermark
    /// visiting every pane boundary up to the newest heard watermark (or the newest pane's
    /// end), and the alerts firing at the end are returned — the catch-up's own alert changes
    /// were published before, or are over.
    pub fn finish_catch_up(&mut self, registry: &GridRegistry) -> Vec<Alert> {
        if !self.catching_up {
            return Vec::new();
        }
        self.catching_up = false;
        let heard = self
            .heard_watermarks
            .back()
            .map(|(_, watermark)| *watermark);
        self.heard_watermarks.clear();
        let newest_pane_end = self
            .ahead
            .last_key_value()
            .map(|((start, _, _), _)| start.saturating_add(self.pane_size_millis));
        let mut replayed = Vec::new();
        if let Some(watermark) = heard.max(newest_pane_end) {
            self.advance_to(watermark, registry, &mut replayed);
        }
        let mut firing = self.engine.active_alerts();
        without_event_ids(Some(&mut firing[..]));
        firing
    }

    fn pane_start(&self, millis: i64) -> i64 {
        pane_start(millis, self.pane_size_millis)
    }

    /// Moves the watermark to `target`, visiting every pane boundary on the way (where the
    /// rules evaluate) and handing each waiting pane to the engine once the watermark reached
    /// its start. A jump longer than the history skips straight to its last part.
    fn advance_to(&mut self, target: i64, registry: &GridRegistry, out: &mut Vec<Alert>) {
        if self
            .watermark_millis
            .is_some_and(|current| target <= current)
        {
            return;
        }
        let first_new = out.len();
        let oldest_useful = self.pane_start(target.saturating_sub(self.history_millis));
        let mut next_boundary = match self.watermark_millis {
            Some(current) => self
                .pane_start(current)
                .saturating_add(self.pane_size_millis),
            None => self
                .ahead
                .first_key_value()
                .map_or(target, |((start, _, _), _)| *start),
        };
        if next_boundary < oldest_useful {
            next_boundary = oldest_useful;
            // Panes older than the history can no longer matter.
            self.ahead = self.ahead.split_off(&(oldest_useful, 0, i32::MIN));
        }
        if self.observed_from_millis.is_none() {
            // The first watermark: no pane before it is counted.
            let observed_from = next_boundary.min(target);
            self.observed_from_millis = Some(observed_from);
            if let Some(earlier) = self.pending_history.take() {
                self.engine.adopt_learned_history(&earlier, observed_from);
            }
        }
        while next_boundary <= target {
            self.move_watermark(next_boundary, registry, out);
            next_boundary = next_boundary.saturating_add(self.pane_size_millis);
        }
        if self.watermark_millis.is_none_or(|current| current < target) {
            self.move_watermark(target, registry, out);
        }
        without_event_ids(out.get_mut(first_new..));
        self.read = self.read.split_off(&(oldest_useful, 0, i32::MIN));
    }

    /// One step: the engine's watermark to `watermark`, then the waiting panes of its pane.
    fn move_watermark(&mut self, watermark: i64, registry: &GridRegistry, out: &mut Vec<Alert>) {
        self.watermark_millis = Some(watermark);
        self.engine.on_watermark(watermark, registry, out);
        let pane_end = self
            .pane_start(watermark)
            .saturating_add(self.pane_size_millis);
        let later = self.ahead.split_off(&(pane_end, 0, i32::MIN));
        let due = std::mem::replace(&mut self.ahead, later);
        for (key, gained) in due {
            self.count(key, gained, registry, out);
        }
    }

    /// Hands a pane's (gained) events to the engine, at the pane's start (their alert changes
    /// carry empty event ids, which the public entry points strip once).
    fn count(
        &mut self,
        (start_millis, cell, event_type): PaneKey,
        count_by_severity: [u64; 4],
        registry: &GridRegistry,
        out: &mut Vec<Alert>,
    ) {
        let Ok(event_type) = EventType::try_from(event_type) else {
            return;
        };
        for (severity, count) in (1_u8..).zip(count_by_severity) {
            for _ in 0..count {
                let accepted = AcceptedEvent {
                    event: &self.pane_event,
                    event_type,
                    severity,
                    occurred_at_millis: start_millis,
                    cell: CellIndex(cell),
                };
                self.engine.on_event(&accepted, registry, out);
            }
        }
    }
}

/// A pane's counts by severity (index 0 is severity 1); events the producer did not break
/// down count at the type's default severity.
fn counts_by_severity(window: &ReadBackPane, event_type: EventType) -> [u64; 4] {
    let mut by_severity = window.count_by_severity;
    let broken_down = by_severity
        .iter()
        .fold(0_u64, |sum, count| sum.saturating_add(*count));
    let default_slot = usize::from(default_severity(event_type).clamp(1, 4) - 1);
    if let Some(slot) = by_severity.get_mut(default_slot) {
        *slot = slot.saturating_add(window.count.saturating_sub(broken_down));
    }
    by_severity
}

/// How far back the detector of `rules` reads the windows topic: the longest history a
/// whole-city rule counts over (at least a day), plus one pane. `None` without such rules.
pub fn whole_city_lookback_millis(rules: &RuleSet) -> Option<i64> {
    let history = rules.whole_city_history_millis()?;
    Some(
        history
            .max(MIN_HISTORY_MILLIS)
            .saturating_add(rules.pane_size_millis()),
    )
}

/// The detector's events have no ids; their alerts list none.
fn without_event_ids(alerts: Option<&mut [Alert]>) {
    for alert in alerts.into_iter().flatten() {
        alert.event_ids.retain(|id| id != NO_EVENT_ID);
    }
}

/// Alert changes offered for publication and not yet seen on the alerts topic.
#[derive(Debug, Default)]
pub struct UnconfirmedAlerts {
    /// By fingerprint: the newest change, when it was first and last offered.
    by_fingerprint: BTreeMap<String, Unconfirmed>,
}

#[derive(Debug)]
struct Unconfirmed {
    alert: Alert,
    first_offered_millis: i64,
    last_offered_millis: i64,
}

/// What [`UnconfirmedAlerts::due`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResendCounts {
    /// Offered again.
    pub resent: usize,
    /// Dropped after [`GIVE_UP_AFTER_MILLIS`] unseen.
    pub given_up: usize,
}

impl UnconfirmedAlerts {
    /// Notes `alerts` as offered at `wall_millis` (a newer change of a fingerprint replaces
    /// the older). Beyond the bound the oldest offered are forgotten.
    pub fn offered(&mut self, alerts: &[Alert], wall_millis: i64) {
        for alert in alerts {
            self.by_fingerprint.insert(
                alert.fingerprint.clone(),
                Unconfirmed {
                    alert: alert.clone(),
                    first_offered_millis: wall_millis,
                    last_offered_millis: wall_millis,
                },
            );
        }
        while self.by_fingerprint.len() > MAX_UNCONFIRMED {
            let oldest = self
                .by_fingerprint
                .iter()
                .min_by_key(|(_, entry)| entry.first_offered_millis)
                .map(|(fingerprint, _)| fingerprint.clone());
            let Some(oldest) = oldest else { break };
            self.by_fingerprint.remove(&oldest);
        }
    }

    /// Forgets the changes `is_published` says the alerts topic shows.
    pub fn confirm(&mut self, is_published: impl Fn(&Alert) -> bool) {
        self.by_fingerprint
            .retain(|_, entry| !is_published(&entry.alert));
    }

    /// The changes to offer again at `wall_millis` (appended to `out`, oldest first), and
    /// those given up.
    pub fn due(&mut self, wall_millis: i64, out: &mut Vec<Alert>) -> ResendCounts {
        let mut counts = ResendCounts::default();
        self.by_fingerprint.retain(|_, entry| {
            let keep =
                wall_millis.saturating_sub(entry.first_offered_millis) < GIVE_UP_AFTER_MILLIS;
            if !keep {
                counts.given_up += 1;
            }
            keep
        });
        let first_new = out.len();
        for entry in self.by_fingerprint.values_mut() {
            if wall_millis.saturating_sub(entry.last_offered_millis) >= RESEND_AFTER_MILLIS {
                entry.last_offered_millis = wall_millis;
                out.push(entry.alert.clone());
                counts.resent += 1;
            }
        }
        if let Some(resent) = out.get_mut(first_new..) {
            resent.sort_by(|left, right| {
                alert_millis(&left.updated_at).cmp(&alert_millis(&right.updated_at))
            });
        }
        counts
    }

    /// How many changes wait for confirmation.
    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }
}

fn alert_millis(timestamp: &Option<pbjson_types::Timestamp>) -> i64 {
    timestamp.as_ref().map_or(i64::MIN, timestamp_to_millis)
}

/// A pane of `grid_id` holding one FRAUD_REPORTED event, from 0 to `length_millis`: what the
/// tests of panes the detector cannot count build (an unknown grid, a length that is not the
/// rules' pane).
#[cfg(test)]
pub(crate) fn one_fraud_report_pane(
    registry: &GridRegistry,
    grid_id: &str,
    length_millis: i64,
) -> ReadBackPane {
    ReadBackPane {
        cell: registry.cell_by_grid_id(grid_id),
        event_type: EventType::FraudReported as i32,
        span_millis: Some((0, length_millis)),
        count: 1,
        count_by_severity: [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::baseline::{Baseline, HOUR_MILLIS};
    use crate::rules::simulation::{
        median_community_and_neighbours, run_rules, seeded_stream, sort_by_time, wave_stream,
        SimulatedEvent, SIMULATION_PANE_MILLIS,
    };
    use crate::time::millis_to_timestamp;

    const FRAUD_TYPES: [EventType; 2] = [EventType::FraudWarning, EventType::FraudReported];

    fn default_rules() -> RuleSet {
        RuleSet::embedded_default(SIMULATION_PANE_MILLIS).expect("embedded rules")
    }

    /// The panes a partition engine would write for `stream`: counts per (pane, cell, type),
    /// by pane start.
    fn panes_of(stream: &[SimulatedEvent]) -> BTreeMap<i64, Vec<ReadBackPane>> {
        let mut counts: BTreeMap<(i64, u32, i32), u64> = BTreeMap::new();
        for (occurred_at, cell, event_type) in stream {
            let start = occurred_at - occurred_at.rem_euclid(SIMULATION_PANE_MILLIS);
            *counts
                .entry((start, cell.0, *event_type as i32))
                .or_default() += 1;
        }
        let mut panes: BTreeMap<i64, Vec<ReadBackPane>> = BTreeMap::new();
        for ((start, cell, event_type), count) in counts {
            panes.entry(start).or_default().push(ReadBackPane {
                cell: Some(CellIndex(cell)),
                event_type,
                span_millis: Some((start, start + SIMULATION_PANE_MILLIS)),
                count,
                count_by_severity: [0; 4],
            });
        }
        panes
    }

    /// Drives a caught-up detector pane by pane from `start` to `end` as the service does: a
    /// minute's panes arrive, then the instances' watermark passes them and is used after
    /// its grace. Returns every alert change.
    fn run_detector(
        registry: &GridRegistry,
        detector: &mut WholeCityDetector,
        panes: &BTreeMap<i64, Vec<ReadBackPane>>,
        start: i64,
        end: i64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut wall = 0;
        detector.hear_watermark(start, wall);
        wall += WATERMARK_GRACE_MILLIS;
        detector.advance(wall, registry, &mut alerts);
        let mut boundary = start;
        while boundary < end {
            for pane in panes.get(&boundary).into_iter().flatten() {
                detector
                    .apply_pane(pane, registry, &mut alerts)
                    .expect("a pane of the registry");
            }
            boundary += SIMULATION_PANE_MILLIS;
            detector.hear_watermark(boundary, wall);
            wall += WATERMARK_GRACE_MILLIS;
            detector.advance(wall, registry, &mut alerts);
        }
        alerts
    }

    fn without_ids(mut alerts: Vec<Alert>) -> Vec<Alert> {
        for alert in &mut alerts {
            alert.event_ids.clear();
        }
        alerts
    }

    /// Three days at the seeded rates with a ×10 fraud wave over a whole district on the
    /// third day and a ×30 one over three neighbouring communities on the second.
    fn waved_stream(registry: &GridRegistry, start: i64) -> Vec<SimulatedEvent> {
        let baseline = Baseline::embedded();
        let mut stream = seeded_stream(registry, &baseline, &FRAUD_TYPES, start, 72, 11);
        let district_position = registry
            .district_position_of(crate::grid::CommunityIndex(0))
            .expect("community 0 has a district");
        let district_cells: Vec<CellIndex> = registry
            .communities_of_district(district_position)
            .iter()
            .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
            .collect();
        stream.extend(wave_stream(
            registry,
            &baseline,
            &district_cells,
            &FRAUD_TYPES,
            9.0,
            start + 48 * HOUR_MILLIS,
            24,
            12,
        ));
        let cluster_cells: Vec<CellIndex> = median_community_and_neighbours(registry, 3)
            .iter()
            .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
            .collect();
        stream.extend(wave_stream(
            registry,
            &baseline,
            &cluster_cells,
            &FRAUD_TYPES,
            29.0,
            start + 24 * HOUR_MILLIS,
            12,
            13,
        ));
        sort_by_time(&mut stream);
        stream
    }

    /// The waved stream of three days from an hour-aligned start, its panes, and what one
    /// engine fed every event raises: computed once for the tests that compare with it.
    struct Scenario {
        registry: std::sync::Arc<GridRegistry>,
        rules: RuleSet,
        start: i64,
        end: i64,
        panes: BTreeMap<i64, Vec<ReadBackPane>>,
        one_engine: Vec<Alert>,
    }

    fn scenario() -> &'static Scenario {
        static SCENARIO: std::sync::OnceLock<Scenario> = std::sync::OnceLock::new();
        SCENARIO.get_or_init(|| {
            let registry = GridRegistry::embedded();
            let rules = default_rules();
            let start = 20_000 * HOUR_MILLIS;
            let end = start + 72 * HOUR_MILLIS;
            let stream = waved_stream(&registry, start);
            let panes = panes_of(&stream);
            let one_engine = without_ids(run_rules(
                &registry,
                rules.whole_city_part(),
                &stream,
                start,
                end,
            ));
            Scenario {
                registry,
                rules,
                start,
                end,
                panes,
                one_engine,
            }
        })
    }

    /// A caught-up detector of the scenario's rules whose watermark is at its start.
    fn detector_at_start(scenario: &Scenario) -> WholeCityDetector {
        let mut detector = WholeCityDetector::new(&scenario.rules, Baseline::embedded());
        assert!(detector.finish_catch_up(&scenario.registry).is_empty());
        let mut changes = Vec::new();
        detector.hear_watermark(scenario.start, 0);
        detector.advance(WATERMARK_GRACE_MILLIS, &scenario.registry, &mut changes);
        assert!(changes.is_empty());
        detector
    }

    #[test]
    fn whole_city_detector_alerts_equal_a_single_engines() {
        let scenario = scenario();
        let kinds: std::collections::BTreeSet<&str> = scenario
            .one_engine
            .iter()
            .map(|alert| alert.rule_kind.as_str())
            .collect();
        assert!(
            kinds.contains("scan") && kinds.contains("spike"),
            "the waves raise scan and district spike alerts: {kinds:?}"
        );
        let mut detector = WholeCityDetector::new(&scenario.rules, Baseline::embedded());
        assert!(detector.finish_catch_up(&scenario.registry).is_empty());
        let detected = run_detector(
            &scenario.registry,
            &mut detector,
            &scenario.panes,
            scenario.start,
            scenario.end,
        );
        assert_eq!(detected, scenario.one_engine);
    }

    #[test]
    fn panes_read_long_before_the_watermark_reaches_them_give_the_same_alerts() {
        let scenario = scenario();
        let mut detector = detector_at_start(scenario);
        let mut changes = Vec::new();
        // Three days of panes read at once (a fast consumer), newest first; then one jump.
        for pane in scenario.panes.values().rev().flatten() {
            assert_eq!(
                detector.apply_pane(pane, &scenario.registry, &mut changes),
                Ok(PaneRead::Waiting)
            );
        }
        assert!(changes.is_empty(), "panes ahead wait for the watermark");
        detector.hear_watermark(scenario.end, WATERMARK_GRACE_MILLIS);
        detector.advance(2 * WATERMARK_GRACE_MILLIS, &scenario.registry, &mut changes);
        assert_eq!(changes, scenario.one_engine);
    }

    #[test]
    fn pauses_at_watermarks_between_pane_boundaries_change_no_alert() {
        let scenario = scenario();
        let mut detector = detector_at_start(scenario);
        let mut changes = Vec::new();
        let mut wall = WATERMARK_GRACE_MILLIS;
        // The instances' watermark is an event's time: pause twice in the middle of a pane,
        // each time with the panes read up to it, then go on to the end.
        let mut unread = scenario.panes.iter().peekable();
        for pause in [
            scenario.start + 30 * HOUR_MILLIS + 754_321,
            scenario.start + 47 * HOUR_MILLIS + 12_345,
            scenario.end,
        ] {
            while let Some((_, windows)) = unread.next_if(|(start, _)| **start <= pause) {
                for pane in windows {
                    detector
                        .apply_pane(pane, &scenario.registry, &mut changes)
                        .expect("a pane of the registry");
                }
            }
            detector.hear_watermark(pause, wall);
            wall += WATERMARK_GRACE_MILLIS;
            detector.advance(wall, &scenario.registry, &mut changes);
            assert_eq!(detector.watermark_millis(), Some(pause));
        }
        assert_eq!(changes, scenario.one_engine);
    }

    #[test]
    fn a_pane_read_twice_counts_once_and_a_grown_pane_adds_what_it_gained() {
        let scenario = scenario();
        // Every pane twice, the first time with one event less where it counts more than one.
        let mut twice: BTreeMap<i64, Vec<ReadBackPane>> = BTreeMap::new();
        for (pane_start, windows) in &scenario.panes {
            let entry = twice.entry(*pane_start).or_default();
            for window in windows {
                let mut smaller = *window;
                smaller.count = window.count.saturating_sub(1).max(1);
                entry.push(smaller);
                entry.push(*window);
                entry.push(*window);
            }
        }
        let mut detector = WholeCityDetector::new(&scenario.rules, Baseline::embedded());
        detector.finish_catch_up(&scenario.registry);
        let detected = run_detector(
            &scenario.registry,
            &mut detector,
            &twice,
            scenario.start,
            scenario.end,
        );
        assert_eq!(detected, scenario.one_engine);
    }

    #[test]
    fn after_catching_up_the_detector_fires_what_a_detector_running_all_along_has_firing() {
        let Scenario {
            registry,
            rules,
            start,
            panes,
            ..
        } = scenario();
        let (registry, rules, start) = (registry, rules, *start);
        // Stop inside the district wave, which is then firing.
        let stop = start + 60 * HOUR_MILLIS;
        let mut all_along = WholeCityDetector::new(rules, Baseline::embedded());
        all_along.finish_catch_up(registry);
        let changes = run_detector(registry, &mut all_along, panes, start, stop);
        let mut firing: BTreeMap<String, Alert> = BTreeMap::new();
        for alert in changes {
            if alert.status == crate::proto::AlertStatus::Firing as i32 {
                firing.insert(alert.fingerprint.clone(), alert);
            } else {
                firing.remove(&alert.fingerprint);
            }
        }
        assert!(
            !firing.is_empty(),
            "the district wave is firing at the stop"
        );

        let mut restarted = WholeCityDetector::new(rules, Baseline::embedded());
        let mut discarded = Vec::new();
        // The history a restart reads back, out of order as partitions interleave.
        let lookback = whole_city_lookback_millis(rules).expect("whole-city rules");
        let mut read_back: Vec<&ReadBackPane> = panes
            .range(stop - lookback..stop)
            .flat_map(|(_, windows)| windows)
            .collect();
        read_back.reverse();
        for pane in read_back {
            assert_eq!(
                restarted.apply_pane(pane, registry, &mut discarded),
                Ok(PaneRead::Waiting)
            );
        }
        assert!(
            discarded.is_empty(),
            "nothing is evaluated while catching up"
        );
        assert!(restarted.is_catching_up());
        restarted.hear_watermark(stop, 0);
        let caught_up = restarted.finish_catch_up(registry);
        assert!(!restarted.is_catching_up());
        assert_eq!(restarted.watermark_millis(), Some(stop));
        let caught_up_fingerprints: Vec<&str> = caught_up
            .iter()
            .map(|alert| alert.fingerprint.as_str())
            .collect();
        let firing_fingerprints: Vec<&str> = firing.keys().map(String::as_str).collect();
        assert_eq!(caught_up_fingerprints, firing_fingerprints);
        for alert in &caught_up {
            assert!(alert.event_ids.is_empty(), "panes carry no event ids");
        }
    }

    #[test]
    fn panes_of_unknown_grids_or_of_another_length_are_skipped_with_a_reason() {
        let registry = GridRegistry::embedded();
        let mut detector = WholeCityDetector::new(&default_rules(), Baseline::embedded());
        detector.finish_catch_up(&registry);
        let grid_id = registry.cells()[0].grid_id.clone();
        let pane =
            |grid_id: &str, length_millis| one_fraud_report_pane(&registry, grid_id, length_millis);
        let mut out = Vec::new();
        assert_eq!(
            detector.apply_pane(
                &pane("nowhere", SIMULATION_PANE_MILLIS),
                &registry,
                &mut out
            ),
            Err(PaneSkipped::UnknownGrid)
        );
        assert_eq!(
            detector.apply_pane(
                &pane(&grid_id, 5 * SIMULATION_PANE_MILLIS),
                &registry,
                &mut out
            ),
            Err(PaneSkipped::NotAPane)
        );
        let mut smoke = pane(&grid_id, SIMULATION_PANE_MILLIS);
        smoke.event_type = EventType::FireSmoke as i32;
        assert_eq!(
            detector.apply_pane(&smoke, &registry, &mut out),
            Ok(PaneRead::Unchanged),
            "no whole-city rule counts smoke"
        );
        detector.hear_watermark(40 * 24 * HOUR_MILLIS, 0);
        detector.advance(WATERMARK_GRACE_MILLIS, &registry, &mut out);
        assert_eq!(
            detector.apply_pane(&pane(&grid_id, SIMULATION_PANE_MILLIS), &registry, &mut out),
            Err(PaneSkipped::TooOld)
        );
    }

    /// Six days of fraud at the seeded rates and their panes, from an hour-aligned start.
    struct LongHistory {
        registry: std::sync::Arc<GridRegistry>,
        rules: RuleSet,
        start: i64,
        panes: BTreeMap<i64, Vec<ReadBackPane>>,
    }

    fn long_history() -> &'static LongHistory {
        static HISTORY: std::sync::OnceLock<LongHistory> = std::sync::OnceLock::new();
        HISTORY.get_or_init(|| {
            let registry = GridRegistry::embedded();
            let start = 20_000 * HOUR_MILLIS;
            let stream = seeded_stream(
                &registry,
                &Baseline::embedded(),
                &FRAUD_TYPES,
                start,
                144,
                21,
            );
            let panes = panes_of(&stream);
            LongHistory {
                registry,
                rules: default_rules(),
                start,
                panes,
            }
        })
    }

    /// A detector restarted at `stop`: given `earlier`'s learned history (or none), it reads
    /// back the panes of its lookback, out of order, and catches up to `stop`.
    fn restarted_at(
        history: &LongHistory,
        stop: i64,
        earlier: Option<BaselineState>,
    ) -> WholeCityDetector {
        let mut restarted = WholeCityDetector::new(&history.rules, Baseline::embedded());
        if let Some(earlier) = earlier {
            restarted.restore_learned_history(earlier);
        }
        let lookback = whole_city_lookback_millis(&history.rules).expect("whole-city rules");
        let mut discarded = Vec::new();
        for pane in history
            .panes
            .range(stop - lookback..stop)
            .rev()
            .flat_map(|(_, windows)| windows)
        {
            restarted
                .apply_pane(pane, &history.registry, &mut discarded)
                .expect("a pane of the registry");
        }
        restarted.hear_watermark(stop, 0);
        restarted.finish_catch_up(&history.registry);
        restarted
    }

    /// A detector run over the history from its start to `stop`, and its learned history as
    /// it was at `snapshot_at`.
    fn run_all_along(
        history: &LongHistory,
        snapshot_at: i64,
        stop: i64,
    ) -> (WholeCityDetector, BaselineState) {
        let registry = &history.registry;
        let mut all_along = WholeCityDetector::new(&history.rules, Baseline::embedded());
        all_along.finish_catch_up(registry);
        run_detector(
            registry,
            &mut all_along,
            &history.panes,
            history.start,
            snapshot_at,
        );
        let snapshot = all_along.learned_history();
        run_detector(registry, &mut all_along, &history.panes, snapshot_at, stop);
        (all_along, snapshot)
    }

    /// (type, hour) of every closed hour, and (cell, type, hour) → count of every closed hour's
    /// count, of a detector's learned history.
    type ClosedHours = (
        std::collections::BTreeSet<(i32, i64)>,
        BTreeMap<(u32, i32, i64), u32>,
    );

    fn closed_hours_of(history: &BaselineState) -> ClosedHours {
        let mut hours = std::collections::BTreeSet::new();
        for (event_type, learning) in &history.types {
            hours.extend(
                learning
                    .closed_hours
                    .iter()
                    .map(|hour| (*event_type, *hour)),
            );
        }
        let mut counts = BTreeMap::new();
        for ((cell, event_type), by_hour) in &history.hour_counts {
            for (hour, count) in by_hour {
                counts.insert((*cell, *event_type, *hour), *count);
            }
        }
        (hours, counts)
    }

    #[test]
    fn a_restarted_detector_given_its_learned_history_rests_on_the_hours_of_one_running_all_along()
    {
        let history = long_history();
        // A restart in the middle of an hour, three hours after the last learned-history
        // snapshot.
        let stop = history.start + 140 * HOUR_MILLIS + 17 * 60_000;
        let snapshot_at = stop - 3 * HOUR_MILLIS;
        let (all_along, snapshot) = run_all_along(history, snapshot_at, stop);
        let (all_along_hours, all_along_counts) = closed_hours_of(&all_along.learned_history());
        assert!(
            all_along.learned_hours() >= 138,
            "{}",
            all_along.learned_hours()
        );

        let without_snapshot = restarted_at(history, stop, None);
        assert!(
            without_snapshot.learned_hours() < 72,
            "the read-back alone is less than the lookback: {}",
            without_snapshot.learned_hours()
        );

        let restarted = restarted_at(history, stop, Some(snapshot));
        let (restarted_hours, restarted_counts) = closed_hours_of(&restarted.learned_history());
        assert!(restarted_hours.is_subset(&all_along_hours));
        let missing: std::collections::BTreeSet<i64> = all_along_hours
            .difference(&restarted_hours)
            .map(|(_, hour)| *hour)
            .collect();
        // The read-back starts inside an hour: that one hour was seen in part by the
        // snapshot and by the read-back, and is left out rather than counted twice.
        let first_read_back_hour = epoch_hour_of(first_read_back_pane(history, stop));
        assert_eq!(
            missing,
            std::collections::BTreeSet::from([first_read_back_hour])
        );
        let all_along_without_missing: BTreeMap<(u32, i32, i64), u32> = all_along_counts
            .into_iter()
            .filter(|((_, _, hour), _)| !missing.contains(hour))
            .collect();
        assert_eq!(restarted_counts, all_along_without_missing);
        assert!(restarted.learned_hours() + 1 >= all_along.learned_hours());
    }

    #[test]
    fn hours_between_an_old_learned_history_and_the_read_back_stay_open() {
        let history = long_history();
        let snapshot_at = history.start + 40 * HOUR_MILLIS;
        let stop = history.start + 140 * HOUR_MILLIS;
        let (all_along, snapshot) = run_all_along(history, snapshot_at, stop);
        let (snapshot_hours, _) = closed_hours_of(&snapshot);
        let (all_along_hours, all_along_counts) = closed_hours_of(&all_along.learned_history());

        let restarted = restarted_at(history, stop, Some(snapshot));
        let (restarted_hours, restarted_counts) = closed_hours_of(&restarted.learned_history());
        let gap = epoch_hour_of(snapshot_at)..=epoch_hour_of(first_read_back_pane(history, stop));
        let expected: std::collections::BTreeSet<(i32, i64)> = all_along_hours
            .iter()
            .filter(|(_, hour)| !gap.contains(hour))
            .copied()
            .collect();
        assert_eq!(restarted_hours, expected);
        assert!(snapshot_hours.is_subset(&restarted_hours));
        for ((cell, event_type, hour), count) in &restarted_counts {
            assert_eq!(
                all_along_counts.get(&(*cell, *event_type, *hour)),
                Some(count)
            );
        }
    }

    /// Where the input of a detector restarted at `stop` starts: its first pane read back.
    fn first_read_back_pane(history: &LongHistory, stop: i64) -> i64 {
        let lookback = whole_city_lookback_millis(&history.rules).expect("whole-city rules");
        *history
            .panes
            .range(stop - lookback..)
            .next()
            .expect("panes in the lookback")
            .0
    }

    fn epoch_hour_of(millis: i64) -> i64 {
        crate::rules::baseline::epoch_hour(millis)
    }

    #[test]
    fn a_heard_watermark_is_used_only_after_its_grace() {
        let registry = GridRegistry::embedded();
        let mut detector = WholeCityDetector::new(&default_rules(), Baseline::embedded());
        detector.finish_catch_up(&registry);
        let mut out = Vec::new();
        detector.hear_watermark(HOUR_MILLIS, 1_000);
        detector.advance(1_000 + WATERMARK_GRACE_MILLIS - 1, &registry, &mut out);
        assert_eq!(detector.watermark_millis(), None);
        detector.hear_watermark(2 * HOUR_MILLIS, 5_000);
        detector.advance(1_000 + WATERMARK_GRACE_MILLIS, &registry, &mut out);
        assert_eq!(detector.watermark_millis(), Some(HOUR_MILLIS));
        detector.hear_watermark(HOUR_MILLIS / 2, 6_000);
        detector.advance(5_000 + WATERMARK_GRACE_MILLIS, &registry, &mut out);
        assert_eq!(
            detector.watermark_millis(),
            Some(2 * HOUR_MILLIS),
            "a watermark never goes back"
        );
    }

    #[test]
    fn partition_engines_leave_whole_city_rules_to_the_detector() {
        let rules = default_rules();
        let whole_city = rules.whole_city_part();
        let names: Vec<&str> = whole_city.rules().iter().map(|rule| rule.name()).collect();
        assert!(!names.is_empty());
        for rule in rules.rules() {
            let is_whole_city = names.contains(&rule.name());
            assert_eq!(rule.needs_whole_city(), is_whole_city, "{}", rule.name());
        }
        assert!(whole_city
            .rules()
            .iter()
            .all(|rule| matches!(rule.kind(), "spike" | "cusum" | "scan" | "threshold")));
    }

    #[test]
    fn a_detector_started_without_whole_city_rules_counts_once_a_reload_adds_them() {
        let registry = GridRegistry::embedded();
        let immediate_only =
            crate::rules::simulation::embedded_rules_where(&|_, kind| kind == "immediate")
                .expect("the embedded immediate rules");
        assert_eq!(immediate_only.whole_city_history_millis(), None);
        let mut detector = WholeCityDetector::new(&immediate_only, Baseline::embedded());
        detector.finish_catch_up(&registry);
        let pane = one_fraud_report_pane(
            &registry,
            &registry.cells()[0].grid_id,
            SIMULATION_PANE_MILLIS,
        );
        let mut out = Vec::new();
        assert_eq!(
            detector.apply_pane(&pane, &registry, &mut out),
            Ok(PaneRead::Unchanged)
        );
        detector.replace_rules(&default_rules(), &mut out);
        assert!(!detector.rules().rules().is_empty());
        assert_eq!(
            detector.apply_pane(&pane, &registry, &mut out),
            Ok(PaneRead::Waiting)
        );
    }

    fn alert(fingerprint: &str, updated_millis: i64) -> Alert {
        Alert {
            fingerprint: fingerprint.to_string(),
            alert_id: format!("{fingerprint}-id"),
            updated_at: Some(millis_to_timestamp(updated_millis)),
            ..Alert::default()
        }
    }

    #[test]
    fn unconfirmed_alerts_are_offered_again_until_the_topic_shows_them() {
        let mut unconfirmed = UnconfirmedAlerts::default();
        unconfirmed.offered(&[alert("a", 1), alert("b", 2)], 0);
        let mut out = Vec::new();
        assert_eq!(unconfirmed.due(RESEND_AFTER_MILLIS - 1, &mut out).resent, 0);
        unconfirmed.confirm(|alert| alert.fingerprint == "a");
        let counts = unconfirmed.due(RESEND_AFTER_MILLIS, &mut out);
        assert_eq!(counts.resent, 1);
        assert_eq!(out, vec![alert("b", 2)]);
        // A newer change of the same alert replaces the older one.
        unconfirmed.offered(&[alert("b", 3)], RESEND_AFTER_MILLIS);
        out.clear();
        unconfirmed.due(2 * RESEND_AFTER_MILLIS, &mut out);
        assert_eq!(out, vec![alert("b", 3)]);
        let counts = unconfirmed.due(RESEND_AFTER_MILLIS + GIVE_UP_AFTER_MILLIS, &mut out);
        assert_eq!(counts.given_up, 1);
        assert!(unconfirmed.is_empty());
    }
}
