//! Event-time windows: the watermark, 1-minute tumbling panes per (grid cell, event type), and
//! the longer sliding views (15 min, 1 h, 24 h) derived from the panes.
//!
//! All synchronous; time is always an argument. See README "Window contract".

pub mod sliding;
pub mod tumbling;
pub mod watermark;

use serde::{Deserialize, Serialize};

use crate::grid::CellIndex;

/// Identity of a pane series: one grid cell and one event type (the enum's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PaneKey {
    /// The grid cell.
    pub cell: CellIndex,
    /// `EventType as i32`.
    pub event_type: i32,
}

/// Aggregates of one pane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaneCounts {
    /// Events in the pane.
    pub count: u32,
    /// Sum of effective severities.
    pub severity_sum: u32,
    /// Events per severity; index 0 is severity 1 (most severe).
    pub count_by_severity: [u32; 4],
}

/// A pane that became final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedPane {
    /// Cell and type.
    pub key: PaneKey,
    /// Window start, epoch milliseconds (aligned to the epoch).
    pub window_start_millis: i64,
    /// Window end (exclusive), epoch milliseconds.
    pub window_end_millis: i64,
    /// The aggregates.
    pub counts: PaneCounts,
}

/// Window and watermark settings (from config `[window]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSettings {
    /// Tumbling pane size.
    pub size_millis: i64,
    /// Watermark = max event time − this.
    pub max_out_of_orderness_millis: i64,
    /// A window is final when watermark ≥ window_end + this.
    pub allowed_lateness_millis: i64,
    /// A partition with no events for this long (wall clock) stops holding the watermark back.
    pub idle_timeout_millis: i64,
}
