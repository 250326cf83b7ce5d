//! Grid resolution: which grid cell an event belongs to.
//!
//! The registry (communities, grid cells with polygons, devices) is loaded from `seeds/`
//! (embedded in the binary by default). Resolution order: the event's `grid_id` when it is in
//! the registry; else the device registry; else lat/lon (normalized from GCJ-02 / BD-09 to
//! WGS-84) by point-in-polygon through an R-tree; else the event is rejected as `unknown_grid`.
//!
//! Three rooms: [`model`] (what a district, community, cell and device are, and the
//! registry's read accessors), [`loading`] (seed files to a validated registry) and
//! [`resolution`] (event to cell); [`coords`] converts the Chinese map frames to WGS-84.
//!
//! Everything here is synchronous and owns no tasks or locks.

// No panic path reachable from input, state or configuration (README "Security").

pub mod coords;
mod grid_features;
pub mod loading;
pub mod model;
pub mod resolution;
pub mod shape;

pub use loading::GridLoadError;
pub use model::{
    Cell, CellIndex, Community, CommunityIndex, Device, DeviceKind, District, GridRegistry,
};
pub use resolution::GridResolveError;
pub use shape::{RegistryShape, StateOutOfBounds};

#[cfg(test)]
pub(crate) mod tests;
