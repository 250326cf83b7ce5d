//! The shape of a registry — how many cells and communities it has, and a fingerprint of what
//! they are — against which restored state is checked.
//!
//! State snapshots hold cell and community *indexes* into the registry they were taken with. A
//! snapshot from another `seeds/` registry, or one forged by whoever can write the state topic,
//! could otherwise hold an index past the end and crash every instance that restores it. So a
//! snapshot carries the [`RegistryShape::fingerprint`] it was taken with, and every index in it
//! is checked against the running shape before anything uses it.

use xxhash_rust::xxh3::Xxh3;

use super::model::GridRegistry;

/// Sizes and content fingerprint of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryShape {
    /// Number of grid cells (valid `CellIndex` values are below it).
    pub cell_count: usize,
    /// Number of communities (valid `CommunityIndex` values are below it).
    pub community_count: usize,
    /// Hash of every cell's grid id and community, and every community's id, in index order:
    /// equal fingerprints mean the indexes name the same places.
    pub fingerprint: u64,
}

/// An index or value in restored state that does not fit the running registry or settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {problem}")]
pub struct StateOutOfBounds {
    /// Which part of the state (e.g. "open panes").
    pub part: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl StateOutOfBounds {
    /// A problem in `part`.
    pub fn new(part: &'static str, problem: impl Into<String>) -> StateOutOfBounds {
        StateOutOfBounds {
            part,
            problem: problem.into(),
        }
    }
}

impl RegistryShape {
    /// The shape of `registry`.
    pub fn of(registry: &GridRegistry) -> RegistryShape {
        let mut hasher = Xxh3::new();
        for cell in registry.cells() {
            hasher.update(cell.grid_id.as_bytes());
            hasher.update(&cell.community.0.to_le_bytes());
        }
        hasher.update(b"|");
        for community in registry.communities() {
            hasher.update(community.id.as_bytes());
            hasher.update(community.district_code.as_bytes());
        }
        RegistryShape {
            cell_count: registry.cells().len(),
            community_count: registry.communities().len(),
            fingerprint: hasher.digest(),
        }
    }

    /// Checks a cell index.
    pub fn check_cell(&self, part: &'static str, cell: u32) -> Result<(), StateOutOfBounds> {
        if (cell as usize) < self.cell_count {
            return Ok(());
        }
        Err(StateOutOfBounds::new(
            part,
            format!("cell index {cell} is not below {}", self.cell_count),
        ))
    }

    /// Checks a community index.
    pub fn check_community(
        &self,
        part: &'static str,
        community: u32,
    ) -> Result<(), StateOutOfBounds> {
        if (community as usize) < self.community_count {
            return Ok(());
        }
        Err(StateOutOfBounds::new(
            part,
            format!(
                "community index {community} is not below {}",
                self.community_count
            ),
        ))
    }

    /// Checks the key of a rule's unit, a cell or a community depending on the rule's scope
    /// (which a snapshot may no longer know): it must be a valid index of one of them.
    pub fn check_unit(&self, part: &'static str, unit: u32) -> Result<(), StateOutOfBounds> {
        if (unit as usize) < self.cell_count.max(self.community_count) {
            return Ok(());
        }
        Err(StateOutOfBounds::new(
            part,
            format!("unit index {unit} is in no scope of the registry"),
        ))
    }

    /// Checks an event type number (a known, specified type).
    pub fn check_event_type(
        &self,
        part: &'static str,
        event_type: i32,
    ) -> Result<(), StateOutOfBounds> {
        let known = crate::event::ALL_EVENT_TYPES
            .iter()
            .any(|known_type| *known_type as i32 == event_type);
        if known {
            return Ok(());
        }
        Err(StateOutOfBounds::new(
            part,
            format!("event type {event_type} is not a known type"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_registry_has_a_stable_shape_and_checks_its_indexes() {
        let registry = GridRegistry::embedded();
        let shape = RegistryShape::of(&registry);
        assert_eq!(shape, RegistryShape::of(&GridRegistry::embedded()));
        assert_eq!(shape.cell_count, registry.cells().len());
        assert!(shape.check_cell("cells", 0).is_ok());
        assert!(shape.check_cell("cells", shape.cell_count as u32).is_err());
        assert!(shape.check_community("communities", 60_000).is_err());
        assert!(shape.check_unit("units", 1).is_ok());
        assert!(shape.check_event_type("types", 1).is_ok());
        assert!(shape.check_event_type("types", 0).is_err());
        assert!(shape.check_event_type("types", 99).is_err());
        let error = shape.check_cell("open panes", 60_000).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "open panes: cell index 60000 is not below {}",
                shape.cell_count
            )
        );
    }
}
