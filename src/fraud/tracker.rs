//! The tracker: counts of the anti-fraud chain (warning → dissuasion → report → case filed) per
//! community and local calendar year, and the pairing of each dissuasion with a warning that
//! times the warning-to-dissuasion lever. It is the fraud state a snapshot carries.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::calendar;
use super::coverage::TimeSpans;
use super::settings::FraudSettings;
use crate::event::AcceptedEvent;
use crate::grid::{CommunityIndex, GridRegistry};
use crate::proto::EventType;

/// Calendar years of counts kept: the newest year seen and the two before it (so a late event
/// of last year, or a report just after New Year, still finds its year).
const KEPT_YEARS: i32 = 3;
/// Most unpaired warnings remembered per community (the oldest are forgotten first).
const MAX_PENDING_WARNINGS_PER_COMMUNITY: usize = 1024;
/// Counts of the anti-fraud chain of one community in one local calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainCounts {
    /// `FRAUD_WARNING` events: warnings received (a lever).
    pub warnings: u64,
    /// `FRAUD_DISSUADED` events: dissuasions by grid workers (a lever).
    pub dissuaded: u64,
    /// `FRAUD_REPORTED` events (a possible case definition).
    pub reported: u64,
    /// `FRAUD_CASE_FILED` events (the default case definition).
    pub cases_filed: u64,
    /// Dissuasions of this year paired with a warning (how many times were observed).
    pub paired_dissuasions: u64,
    /// Sum of the paired warning-to-dissuasion times, in seconds (for the mean).
    pub warning_to_dissuasion_seconds_sum: f64,
}

impl ChainCounts {
    /// The counts a `FraudPartial` record carries (community, year and month are the caller's).
    pub fn from_record(record: &crate::proto::CommunityYearCounts) -> ChainCounts {
        ChainCounts {
            warnings: record.warnings,
            dissuaded: record.dissuaded,
            reported: record.reported,
            cases_filed: record.cases_filed,
            paired_dissuasions: record.paired_dissuasions,
            warning_to_dissuasion_seconds_sum: record.warning_to_dissuasion_seconds_sum,
        }
    }

    /// These counts as a `FraudPartial` record of `community_id` in `month` (1–12) of `year`.
    pub fn to_record(
        &self,
        community_id: &str,
        year: i32,
        month: u32,
    ) -> crate::proto::CommunityYearCounts {
        crate::proto::CommunityYearCounts {
            community_id: community_id.to_string(),
            year,
            month,
            warnings: self.warnings,
            dissuaded: self.dissuaded,
            reported: self.reported,
            cases_filed: self.cases_filed,
            paired_dissuasions: self.paired_dissuasions,
            warning_to_dissuasion_seconds_sum: self.warning_to_dissuasion_seconds_sum,
        }
    }

    /// Adds `other`'s counts (saturating: counts from outside are not trusted to be small).
    pub fn add(&mut self, other: &ChainCounts) {
        self.warnings = self.warnings.saturating_add(other.warnings);
        self.dissuaded = self.dissuaded.saturating_add(other.dissuaded);
        self.reported = self.reported.saturating_add(other.reported);
        self.cases_filed = self.cases_filed.saturating_add(other.cases_filed);
        self.paired_dissuasions = self
            .paired_dissuasions
            .saturating_add(other.paired_dissuasions);
        self.warning_to_dissuasion_seconds_sum += other.warning_to_dissuasion_seconds_sum;
    }

    /// The count of the configured case types.
    pub fn cases(&self, case_event_types: &[EventType]) -> u64 {
        case_event_types
            .iter()
            .map(|event_type| match event_type {
                EventType::FraudCaseFiled => self.cases_filed,
                EventType::FraudReported => self.reported,
                EventType::FraudWarning => self.warnings,
                EventType::FraudDissuaded => self.dissuaded,
                _ => 0,
            })
            .sum()
    }
}

/// A warning waiting for its dissuasion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingWarning {
    /// The warning's event time.
    occurred_at_millis: i64,
    /// Its pseudonymized `phone` attribute, when it carried one.
    phone: Option<String>,
}

/// A dissuasion paired with its warning (what the histogram observes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDissuasion {
    /// The community of both events.
    pub community: CommunityIndex,
    /// Dissuasion `occurred_at` minus warning `occurred_at`, in seconds (never negative).
    pub seconds: f64,
    /// Whether the pair was matched by phone pseudonym (else first-in-first-out).
    pub matched_by_phone: bool,
}

/// One community's counts in each month of one local year (index 0 = January).
pub type CommunityMonths = [ChainCounts; 12];

/// Counts of the anti-fraud chain per community and local month, the unpaired warnings, and
/// this partition's coverage (the event time its stream was observed flowing).
///
/// Years: each event counts in the local calendar month of its `occurred_at`, whatever the
/// wall clock; the newest year seen and the two before it are kept (older ones are dropped),
/// so a report is always about the year of its `now` and a New Year rollover needs no reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudTracker {
    /// Local time's offset from UTC in hours (year boundaries).
    timezone_offset_hours: i32,
    /// How far back a dissuasion may reach for its warning.
    warning_pairing_horizon_millis: i64,
    /// Longest silence of the stream still counted as flowing (coverage).
    coverage_max_gap_millis: i64,
    /// year → counts by month, indexed by community index.
    years: BTreeMap<i32, Vec<CommunityMonths>>,
    /// Unpaired warnings per community index, oldest first.
    pending_warnings: Vec<VecDeque<PendingWarning>>,
    /// Event-time spans during which this partition's stream flowed.
    coverage: TimeSpans,
    /// The first event time of each community (by index) on this partition.
    first_seen_millis: Vec<Option<i64>>,
}

impl FraudTracker {
    /// An empty tracker.
    pub fn new(settings: &FraudSettings) -> FraudTracker {
        FraudTracker {
            timezone_offset_hours: settings.timezone_offset_hours,
            warning_pairing_horizon_millis: settings.warning_pairing_horizon_millis,
            coverage_max_gap_millis: settings.coverage_max_gap_millis,
            years: BTreeMap::new(),
            pending_warnings: Vec::new(),
            coverage: TimeSpans::new(),
            first_seen_millis: Vec::new(),
        }
    }

    /// Checks restored counts: no year or warning list has more communities than the registry.
    pub fn check_bounds(
        &self,
        shape: &crate::grid::RegistryShape,
    ) -> Result<(), crate::grid::StateOutOfBounds> {
        let longest = self
            .years
            .values()
            .map(Vec::len)
            .chain(std::iter::once(self.pending_warnings.len()))
            .chain(std::iter::once(self.first_seen_millis.len()))
            .max()
            .unwrap_or(0);
        if longest <= shape.community_count {
            return Ok(());
        }
        Err(crate::grid::StateOutOfBounds::new(
            "fraud counts",
            format!(
                "{longest} communities counted, the registry has {}",
                shape.community_count
            ),
        ))
    }

    /// Takes over the counts, pending warnings and coverage of a restored snapshot, keeping
    /// this tracker's settings (the running configuration wins).
    pub fn restore(&mut self, restored: FraudTracker) {
        self.years = restored.years;
        self.pending_warnings = restored.pending_warnings;
        self.coverage = restored.coverage;
        self.first_seen_millis = restored.first_seen_millis;
    }

    /// Every community's non-zero counts of every kept month, for publishing this partition's
    /// counts to the city-wide read model: `(year, month 1–12, community, counts)`.
    pub fn month_counts(
        &self,
    ) -> impl Iterator<Item = (i32, u32, CommunityIndex, &ChainCounts)> + '_ {
        self.years.iter().flat_map(|(year, communities)| {
            communities
                .iter()
                .enumerate()
                .flat_map(move |(slot, months)| {
                    months
                        .iter()
                        .enumerate()
                        .filter(|(_, counts)| **counts != ChainCounts::default())
                        .map(move |(month_index, counts)| {
                            (
                                *year,
                                month_index as u32 + 1,
                                CommunityIndex(slot as u32),
                                counts,
                            )
                        })
                })
        })
    }

    /// The event-time spans during which this partition's stream flowed.
    pub fn coverage(&self) -> &TimeSpans {
        &self.coverage
    }

    /// The first event time of each community seen on this partition.
    pub fn first_seen(&self) -> impl Iterator<Item = (CommunityIndex, i64)> + '_ {
        self.first_seen_millis
            .iter()
            .enumerate()
            .filter_map(|(slot, seen)| seen.map(|seen| (CommunityIndex(slot as u32), seen)))
    }

    /// Records that the stream carried an event of `community` at `occurred_at_millis` (every
    /// accepted event, fraud or not: coverage is about the stream flowing, and fraud cases are
    /// far too rare to show it). A community index beyond `community_count` is ignored.
    pub fn observe_stream(
        &mut self,
        occurred_at_millis: i64,
        community: CommunityIndex,
        community_count: usize,
    ) {
        self.coverage
            .observe(occurred_at_millis, self.coverage_max_gap_millis);
        let slot = community.0 as usize;
        if slot >= community_count {
            return;
        }
        if self.first_seen_millis.len() <= slot {
            self.first_seen_millis.resize(slot + 1, None);
        }
        if let Some(seen) = self.first_seen_millis.get_mut(slot) {
            *seen = Some(seen.map_or(occurred_at_millis, |seen| seen.min(occurred_at_millis)));
        }
    }

    /// Counts one accepted event (only the four fraud-chain types matter).
    ///
    /// Pairing: a `FRAUD_DISSUADED` takes the earliest unpaired `FRAUD_WARNING` of the same
    /// community whose `phone` attribute (pseudonymized) equals its own, when both carry one;
    /// otherwise the earliest unpaired warning of the community (first in, first out). Only
    /// warnings that occurred no later than the dissuasion and no earlier than
    /// `warning_pairing_horizon` before it qualify; a dissuasion with none stays unpaired, and a
    /// warning never dissuaded stays pending until it leaves the horizon. Pairing follows
    /// arrival order: a dissuasion that arrives before its warning is not paired later.
    pub fn on_event(
        &mut self,
        accepted: &AcceptedEvent,
        registry: &GridRegistry,
    ) -> Option<PairedDissuasion> {
        let is_fraud_chain = matches!(
            accepted.event_type,
            EventType::FraudWarning
                | EventType::FraudDissuaded
                | EventType::FraudReported
                | EventType::FraudCaseFiled
        );
        if !is_fraud_chain {
            return None;
        }
        let community = registry.cells().get(accepted.cell.0 as usize)?.community;
        let community_slot = community.0 as usize;
        let community_count = registry.communities().len().max(community_slot + 1);
        let (year, month) =
            calendar::local_year_month(accepted.occurred_at_millis, self.timezone_offset_hours);
        let newest_year = self.years.keys().next_back().copied().unwrap_or(year);
        if year <= newest_year - KEPT_YEARS {
            return None;
        }
        let year_counts = self
            .years
            .entry(year)
            .or_insert_with(|| vec![CommunityMonths::default(); community_count]);
        if year_counts.len() < community_count {
            year_counts.resize(community_count, CommunityMonths::default());
        }
        let counts = year_counts
            .get_mut(community_slot)?
            .get_mut(month.saturating_sub(1) as usize)?;
        let phone = accepted
            .event
            .attributes
            .get("phone")
            .filter(|phone| !phone.is_empty())
            .cloned();
        let mut paired = None;
        match accepted.event_type {
            EventType::FraudWarning => counts.warnings += 1,
            EventType::FraudReported => counts.reported += 1,
            EventType::FraudCaseFiled => counts.cases_filed += 1,
            EventType::FraudDissuaded => counts.dissuaded += 1,
            _ => {}
        }
        if self.pending_warnings.len() < community_count {
            self.pending_warnings
                .resize_with(community_count, VecDeque::new);
        }
        let horizon_start = accepted
            .occurred_at_millis
            .saturating_sub(self.warning_pairing_horizon_millis);
        if let Some(pending) = self.pending_warnings.get_mut(community_slot) {
            while pending
                .front()
                .is_some_and(|warning| warning.occurred_at_millis < horizon_start)
            {
                pending.pop_front();
            }
            match accepted.event_type {
                EventType::FraudWarning => {
                    let position = pending.partition_point(|warning| {
                        warning.occurred_at_millis <= accepted.occurred_at_millis
                    });
                    pending.insert(
                        position,
                        PendingWarning {
                            occurred_at_millis: accepted.occurred_at_millis,
                            phone,
                        },
                    );
                    while pending.len() > MAX_PENDING_WARNINGS_PER_COMMUNITY {
                        pending.pop_front();
                    }
                }
                EventType::FraudDissuaded => {
                    paired = take_matching_warning(pending, accepted.occurred_at_millis, phone)
                        .map(|(warning, matched_by_phone)| PairedDissuasion {
                            community,
                            seconds: (accepted.occurred_at_millis - warning.occurred_at_millis)
                                .max(0) as f64
                                / 1000.0,
                            matched_by_phone,
                        });
                }
                _ => {}
            }
        }
        if let Some(pair) = &paired {
            counts.paired_dissuasions += 1;
            counts.warning_to_dissuasion_seconds_sum += pair.seconds;
        }
        let oldest_kept_year = self
            .years
            .keys()
            .next_back()
            .copied()
            .unwrap_or(year)
            .saturating_sub(KEPT_YEARS - 1);
        self.years
            .retain(|kept_year, _| *kept_year >= oldest_kept_year);
        paired
    }

    /// The counts of one community in one local year, all months (zeros when none).
    pub fn counts(&self, year: i32, community: CommunityIndex) -> ChainCounts {
        let mut total = ChainCounts::default();
        if let Some(months) = self
            .years
            .get(&year)
            .and_then(|communities| communities.get(community.0 as usize))
        {
            for counts in months {
                total.add(counts);
            }
        }
        total
    }

    /// Years with counts, oldest first.
    pub fn years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    /// Unpaired warnings currently remembered (all communities).
    pub fn pending_warning_count(&self) -> usize {
        self.pending_warnings.iter().map(VecDeque::len).sum()
    }
}

/// Removes and returns the warning a dissuasion at `dissuaded_at_millis` pairs with: the
/// earliest eligible one with the same phone, else the earliest eligible one (the queue is
/// sorted by occurrence, so "eligible" = occurred no later than the dissuasion).
fn take_matching_warning(
    pending: &mut VecDeque<PendingWarning>,
    dissuaded_at_millis: i64,
    phone: Option<String>,
) -> Option<(PendingWarning, bool)> {
    let eligible_count =
        pending.partition_point(|warning| warning.occurred_at_millis <= dissuaded_at_millis);
    if eligible_count == 0 {
        return None;
    }
    if let Some(phone) = phone {
        let phone_match = pending
            .iter()
            .take(eligible_count)
            .position(|warning| warning.phone.as_deref() == Some(phone.as_str()));
        if let Some(position) = phone_match {
            return pending.remove(position).map(|warning| (warning, true));
        }
    }
    pending.pop_front().map(|warning| (warning, false))
}
