//! The ledger: everything the report is computed from, merged from any number of partitions
//! and the imported history — per community and local month, streamed counts and imported
//! months, and per community the event time the stream covered.
//!
//! Merging rules:
//! - **Streamed** counts of several partitions add up (each event is counted on one partition).
//!   A community is covered by a partition's spans from the first event of that community on
//!   that partition on; the union over partitions is its coverage.
//! - **Imported** months are authoritative: where a (community, month) is imported, its
//!   imported counts are used and the whole month counts as covered; streamed counts and
//!   coverage of that month are ignored, so importing a month the stream also saw never counts
//!   a case twice. Importing again replaces the imported history (the record is keyed).

use std::collections::BTreeMap;

use super::coverage::TimeSpans;
use super::tracker::{ChainCounts, CommunityMonths, FraudTracker};
use crate::grid::{CommunityIndex, GridRegistry};
use crate::proto::{FraudCountSource, FraudPartial};

/// One community's imported months of one year (`Some` = imported, with its counts).
pub type ImportedMonths = [Option<ChainCounts>; 12];

/// The report's input, merged from partitions and the imported history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FraudLedger {
    /// Communities of the registry (indexes at or beyond are ignored).
    community_count: usize,
    /// year → streamed counts by community index and month.
    streamed: BTreeMap<i32, Vec<CommunityMonths>>,
    /// year → imported months by community index.
    imported: BTreeMap<i32, Vec<ImportedMonths>>,
    /// Streamed coverage by community index.
    coverage: Vec<TimeSpans>,
    /// The named partitions that carried each community's events (by community index).
    partitions_by_community: BTreeMap<u32, Vec<String>>,
}

/// Why a row of a partial record was not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// The community id of the row.
    pub community_id: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FraudLedger {
    /// An empty ledger for a registry of `community_count` communities.
    pub fn new(community_count: usize) -> FraudLedger {
        FraudLedger {
            community_count,
            streamed: BTreeMap::new(),
            imported: BTreeMap::new(),
            coverage: vec![TimeSpans::new(); community_count],
            partitions_by_community: BTreeMap::new(),
        }
    }

    /// Adds one partition's streamed counts and coverage.
    pub fn add_tracker(&mut self, tracker: &FraudTracker) {
        for (year, month, community, counts) in tracker.month_counts() {
            self.add_streamed_counts(year, month, community, counts);
        }
        for (community, first_seen) in tracker.first_seen() {
            self.add_coverage(community, tracker.coverage(), first_seen);
        }
    }

    /// Adds a `FraudPartial` record (a partition's, or the imported history); returns the rows
    /// that could not be merged (unknown community, impossible month).
    pub fn add_partial(
        &mut self,
        partial: &FraudPartial,
        registry: &GridRegistry,
    ) -> Vec<SkippedRow> {
        let mut skipped = Vec::new();
        let imported = partial.source() == FraudCountSource::Imported;
        for row in &partial.counts {
            let Some(community) = registry.community_by_id(&row.community_id) else {
                skipped.push(SkippedRow {
                    community_id: row.community_id.clone(),
                    reason: "unknown community",
                });
                continue;
            };
            if !(1..=12).contains(&row.month) {
                skipped.push(SkippedRow {
                    community_id: row.community_id.clone(),
                    reason: "month not in 1..=12",
                });
                continue;
            }
            let counts = ChainCounts::from_record(row);
            if imported {
                self.add_imported_month(row.year, row.month, community, &counts);
            } else {
                self.add_streamed_counts(row.year, row.month, community, &counts);
            }
        }
        if imported {
            return skipped;
        }
        let spans = TimeSpans::from_pairs(
            partial
                .coverage
                .iter()
                .map(|span| (span.start_ms, span.end_ms)),
        );
        for (community_id, first_seen) in &partial.community_first_seen_ms {
            let Some(community) = registry.community_by_id(community_id) else {
                skipped.push(SkippedRow {
                    community_id: community_id.clone(),
                    reason: "unknown community",
                });
                continue;
            };
            self.add_coverage(community, &spans, *first_seen);
            let partitions = self.partitions_by_community.entry(community.0).or_default();
            if !partitions.contains(&partial.partition) {
                partitions.push(partial.partition.clone());
            }
        }
        skipped
    }

    /// Communities whose events arrived on more than one partition, with those partitions:
    /// their community-scope statistics are split (the input is not keyed by community).
    pub fn split_communities(&self) -> impl Iterator<Item = (CommunityIndex, &[String])> + '_ {
        self.partitions_by_community
            .iter()
            .filter(|(_, partitions)| partitions.len() > 1)
            .map(|(slot, partitions)| (CommunityIndex(*slot), partitions.as_slice()))
    }

    /// Streamed counts of one community and month.
    pub fn add_streamed_counts(
        &mut self,
        year: i32,
        month: u32,
        community: CommunityIndex,
        counts: &ChainCounts,
    ) {
        let slot = community.0 as usize;
        if slot >= self.community_count {
            return;
        }
        let community_count = self.community_count;
        let year_counts = self
            .streamed
            .entry(year)
            .or_insert_with(|| vec![CommunityMonths::default(); community_count]);
        if let Some(total) = year_counts
            .get_mut(slot)
            .and_then(|months| months.get_mut(month.saturating_sub(1) as usize))
        {
            total.add(counts);
        }
    }

    /// An imported (community, month): covered whole, with these counts (rows for the same
    /// month add up).
    pub fn add_imported_month(
        &mut self,
        year: i32,
        month: u32,
        community: CommunityIndex,
        counts: &ChainCounts,
    ) {
        let slot = community.0 as usize;
        if slot >= self.community_count {
            return;
        }
        let community_count = self.community_count;
        let year_months = self
            .imported
            .entry(year)
            .or_insert_with(|| vec![ImportedMonths::default(); community_count]);
        if let Some(imported) = year_months
            .get_mut(slot)
            .and_then(|months| months.get_mut(month.saturating_sub(1) as usize))
        {
            imported
                .get_or_insert_with(ChainCounts::default)
                .add(counts);
        }
    }

    /// Covers `community` by `spans` from `first_seen_millis` on.
    fn add_coverage(&mut self, community: CommunityIndex, spans: &TimeSpans, first_seen: i64) {
        if let Some(coverage) = self.coverage.get_mut(community.0 as usize) {
            coverage.union_with(&spans.clipped(first_seen, i64::MAX));
        }
    }

    /// Streamed counts of one community and month (zeros when none).
    pub fn streamed(&self, year: i32, month: u32, community: CommunityIndex) -> ChainCounts {
        self.streamed
            .get(&year)
            .and_then(|communities| communities.get(community.0 as usize))
            .and_then(|months| months.get(month.saturating_sub(1) as usize))
            .copied()
            .unwrap_or_default()
    }

    /// Imported counts of one community and month (`None` when not imported).
    pub fn imported(
        &self,
        year: i32,
        month: u32,
        community: CommunityIndex,
    ) -> Option<ChainCounts> {
        self.imported
            .get(&year)
            .and_then(|communities| communities.get(community.0 as usize))
            .and_then(|months| months.get(month.saturating_sub(1) as usize))
            .copied()
            .flatten()
    }

    /// The streamed coverage of one community.
    pub fn coverage(&self, community: CommunityIndex) -> Option<&TimeSpans> {
        self.coverage.get(community.0 as usize)
    }
}

/// A partition's streamed counts and coverage as a [`FraudPartial`] record.
pub fn streamed_partial(
    tracker: &FraudTracker,
    registry: &GridRegistry,
    partition: String,
    wall_millis: i64,
) -> FraudPartial {
    let counts = tracker
        .month_counts()
        .filter_map(|(year, month, community, counts)| {
            let community = registry.get_community(community)?;
            Some(counts.to_record(&community.id, year, month))
        })
        .collect();
    let community_first_seen_ms = tracker
        .first_seen()
        .filter_map(|(community, first_seen)| {
            let community = registry.get_community(community)?;
            Some((community.id.clone(), first_seen))
        })
        .collect();
    FraudPartial {
        partition,
        counts,
        updated_at: Some(crate::time::millis_to_timestamp(wall_millis)),
        source: FraudCountSource::Streamed as i32,
        coverage: tracker
            .coverage()
            .spans()
            .iter()
            .map(|(start_ms, end_ms)| crate::proto::TimeSpan {
                start_ms: *start_ms,
                end_ms: *end_ms,
            })
            .collect(),
        community_first_seen_ms,
    }
}
