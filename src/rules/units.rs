//! Alert units: a rule counts per grid cell, per community or per district (`scope`), and its alerts carry
//! the registry labels of that unit. Shared by every kind, so the labels of an alert never
//! depend on which kind raised it.

use super::ruleset::AlertScope;
use crate::grid::{CellIndex, GridRegistry};

/// The registry labels of a cell (or of a community, with an empty grid id) that alerts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellLabels<'a> {
    /// 14-digit grid id (empty for a community-scope alert).
    pub(crate) grid_id: &'a str,
    /// 12-digit community code.
    pub(crate) community_id: &'a str,
    /// 6-digit district code.
    pub(crate) district_id: &'a str,
}

impl CellLabels<'_> {
    /// What the fingerprint names: the grid id, else the community id, else the district id.
    pub(crate) fn location(&self) -> &str {
        if !self.grid_id.is_empty() {
            return self.grid_id;
        }
        if !self.community_id.is_empty() {
            return self.community_id;
        }
        self.district_id
    }
}

/// The labels of a cell, or `None` for an index that is not in `registry`.
pub(crate) fn cell_labels(registry: &GridRegistry, cell: CellIndex) -> Option<CellLabels<'_>> {
    let cell_record = registry.cells().get(usize::try_from(cell.0).ok()?)?;
    let community = registry
        .communities()
        .get(usize::try_from(cell_record.community.0).ok()?)?;
    Some(CellLabels {
        grid_id: &cell_record.grid_id,
        community_id: &community.id,
        district_id: &community.district_code,
    })
}

/// The labels of a unit: a cell (`CellIndex.0`) or a community (`CommunityIndex.0`).
pub(crate) fn unit_labels(
    registry: &GridRegistry,
    scope: AlertScope,
    unit_key: u32,
) -> Option<CellLabels<'_>> {
    match scope {
        AlertScope::Cell => cell_labels(registry, CellIndex(unit_key)),
        AlertScope::Community => {
            let community = registry
                .communities()
                .get(usize::try_from(unit_key).ok()?)?;
            Some(CellLabels {
                grid_id: "",
                community_id: &community.id,
                district_id: &community.district_code,
            })
        }
        AlertScope::Cluster | AlertScope::City => None,
        AlertScope::District => {
            let district = registry.districts().get(usize::try_from(unit_key).ok()?)?;
            Some(CellLabels {
                grid_id: "",
                community_id: "",
                district_id: &district.code,
            })
        }
    }
}

/// Number of units of a scope in the registry (cells or communities).
pub(crate) fn unit_count(registry: &GridRegistry, scope: AlertScope) -> usize {
    match scope {
        AlertScope::Cell => registry.cells().len(),
        AlertScope::Community => registry.communities().len(),
        AlertScope::District => registry.districts().len(),
        AlertScope::Cluster | AlertScope::City => 0,
    }
}

/// The unit key of `cell` under `scope`: the cell's index, or its community's.
pub(crate) fn unit_key_of(
    registry: &GridRegistry,
    scope: AlertScope,
    cell: CellIndex,
) -> Option<u32> {
    match scope {
        AlertScope::Cell => Some(cell.0),
        AlertScope::Community => registry
            .cells()
            .get(usize::try_from(cell.0).ok()?)
            .map(|cell_record| cell_record.community.0),
        AlertScope::Cluster | AlertScope::City => None,
        AlertScope::District => {
            let community = registry
                .cells()
                .get(usize::try_from(cell.0).ok()?)?
                .community;
            u32::try_from(registry.district_position_of(community)?).ok()
        }
    }
}

/// Whether a statistical rule of `scope` is evaluated in an engine that sees `partial_input`
/// (one Kafka partition): not for a district, since input is keyed by community and a
/// partition's engine holds only part of a district while the expectation is the whole
/// district's — never tested rather than tested wrong; the whole-city detector
/// ([`super::whole_city`]) evaluates such rules instead.
pub(crate) fn evaluated_with_input(scope: AlertScope, partial_input: bool) -> bool {
    !(matches!(
        scope,
        AlertScope::District | AlertScope::Cluster | AlertScope::City
    ) && partial_input)
}
