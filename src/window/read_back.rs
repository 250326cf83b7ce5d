//! A final window as its readers take it back: the city read model and the whole-city
//! detector read the windows topic (or are handed the pipeline's panes in-process) and use only
//! a window's cell, type, span and counts.
//!
//! [`ReadBackPane`] is that much of a `CellWindow`, its grid id resolved to the cell once, where
//! the record enters, into a `Copy` value. On the Kafka path about one window is read back per
//! input event: decoding each into a whole `CellWindow` made three strings and a vector on the
//! feed's thread, freed on the writer's; [`CellWindowFields`] decodes the same bytes into
//! buffers reused from record to record.

// No panic path reachable from input, state or configuration (README "Security").

use super::ClosedPane;
use crate::grid::{CellIndex, GridRegistry};
use crate::proto::CellWindow;
use crate::time::timestamp_to_millis;

/// Severity slots a window breaks its count into (`count_by_severity`: 1 = most severe … 4).
pub const SEVERITY_SLOTS: usize = 4;

/// The most bytes of grid id, and entries of severity counts, that [`CellWindowFields`] keeps
/// room for between records (gridwatch writes 14-digit ids and four counts): a larger buffer
/// was grown by a record gridwatch did not write, and is released.
const KEPT_BUFFER_ENTRIES: usize = 64;

/// What the readers of a final window use of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBackPane {
    /// The window's cell; `None` when its grid id is not in this instance's registry.
    pub cell: Option<CellIndex>,
    /// The event type's number as written (not necessarily a known type).
    pub event_type: i32,
    /// `[start, end)` in epoch milliseconds; `None` when the record lacks either.
    pub span_millis: Option<(i64, i64)>,
    /// Events in the window.
    pub count: u64,
    /// The first [`SEVERITY_SLOTS`] entries of `count_by_severity` as written, missing ones 0
    /// (readers take no more than these).
    pub count_by_severity: [u64; SEVERITY_SLOTS],
}

impl ReadBackPane {
    /// The pane of a decoded `CellWindow`, its grid looked up in `registry`.
    pub fn of_cell_window(window: &CellWindow, registry: &GridRegistry) -> ReadBackPane {
        ReadBackPane::of_parts(
            registry.cell_by_grid_id(&window.grid_id),
            window.event_type,
            window.window_start.as_ref().zip(window.window_end.as_ref()),
            window.count,
            &window.count_by_severity,
        )
    }

    /// The pane the pipeline closed, handed over in-process (its cell already an index).
    pub fn of_closed_pane(pane: &ClosedPane) -> ReadBackPane {
        ReadBackPane {
            cell: Some(pane.key.cell),
            event_type: pane.key.event_type,
            span_millis: Some((pane.window_start_millis, pane.window_end_millis)),
            count: u64::from(pane.counts.count),
            count_by_severity: pane.counts.count_by_severity.map(u64::from),
        }
    }

    fn of_parts(
        cell: Option<CellIndex>,
        event_type: i32,
        span: Option<(&pbjson_types::Timestamp, &pbjson_types::Timestamp)>,
        count: u64,
        written_by_severity: &[u64],
    ) -> ReadBackPane {
        let mut count_by_severity = [0; SEVERITY_SLOTS];
        for (slot, written) in count_by_severity.iter_mut().zip(written_by_severity) {
            *slot = *written;
        }
        ReadBackPane {
            cell,
            event_type,
            span_millis: span
                .map(|(start, end)| (timestamp_to_millis(start), timestamp_to_millis(end))),
            count,
            count_by_severity,
        }
    }
}

/// The fields of a protobuf `CellWindow` that a [`ReadBackPane`] takes, by the same tags; prost
/// skips the others (community and district ids, the severity sum). Kept by the reader and
/// decoded into again for every record: prost clears a string or vector in place, so after
/// the first records a window decodes without allocating. A test holds it to `CellWindow`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CellWindowFields {
    #[prost(string, tag = "1")]
    grid_id: String,
    #[prost(int32, tag = "3")]
    event_type: i32,
    #[prost(message, optional, tag = "4")]
    window_start: Option<pbjson_types::Timestamp>,
    #[prost(message, optional, tag = "5")]
    window_end: Option<pbjson_types::Timestamp>,
    #[prost(uint64, tag = "6")]
    count: u64,
    #[prost(uint64, repeated, tag = "8")]
    count_by_severity: Vec<u64>,
}

impl CellWindowFields {
    /// The pane of one protobuf `CellWindow` record, its grid looked up in `registry`.
    pub fn decode_pane(
        &mut self,
        bytes: &[u8],
        registry: &GridRegistry,
    ) -> Result<ReadBackPane, prost::DecodeError> {
        prost::Message::clear(self);
        let merged = prost::Message::merge(self, bytes);
        let pane = ReadBackPane::of_parts(
            registry.cell_by_grid_id(&self.grid_id),
            self.event_type,
            self.window_start.as_ref().zip(self.window_end.as_ref()),
            self.count,
            &self.count_by_severity,
        );
        // A record far larger than gridwatch writes (up to the feed's limit) may have grown
        // the buffers to its size: that room is not kept for the next one.
        self.grid_id.clear();
        self.grid_id.shrink_to(KEPT_BUFFER_ENTRIES);
        self.count_by_severity.clear();
        self.count_by_severity.shrink_to(KEPT_BUFFER_ENTRIES);
        merged.map(|()| pane)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EventType;
    use crate::time::millis_to_timestamp;
    use prost::Message;

    fn full_window(registry: &GridRegistry) -> CellWindow {
        CellWindow {
            grid_id: registry.cells()[3].grid_id.clone(),
            community_id: "community".to_string(),
            event_type: EventType::GasLeak as i32,
            window_start: Some(millis_to_timestamp(120_000)),
            window_end: Some(millis_to_timestamp(180_000)),
            count: 7,
            severity_sum: 9,
            count_by_severity: vec![5, 1, 1, 0],
            district_id: "410602".to_string(),
        }
    }

    #[test]
    fn a_window_decoded_by_its_fields_is_the_pane_of_the_whole_decoded_window() {
        let registry = GridRegistry::embedded();
        let mut fields = CellWindowFields::default();
        let unknown_grid = CellWindow {
            grid_id: "nowhere".to_string(),
            ..full_window(&registry)
        };
        let no_end = CellWindow {
            window_end: None,
            ..full_window(&registry)
        };
        let more_severities = CellWindow {
            count_by_severity: vec![1, 2, 3, 4, 5],
            ..full_window(&registry)
        };
        // Decoded one after another into the same fields: nothing of a record stays behind.
        for window in [
            full_window(&registry),
            unknown_grid,
            CellWindow::default(),
            no_end,
            more_severities,
            full_window(&registry),
        ] {
            let bytes = window.encode_to_vec();
            let whole = CellWindow::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                fields.decode_pane(&bytes, &registry).unwrap(),
                ReadBackPane::of_cell_window(&whole, &registry),
                "{window:?}"
            );
        }
        let pane = ReadBackPane::of_cell_window(&full_window(&registry), &registry);
        assert_eq!(
            pane.cell,
            registry.cell_by_grid_id(&registry.cells()[3].grid_id)
        );
        assert_eq!(pane.span_millis, Some((120_000, 180_000)));
        assert_eq!(pane.count_by_severity, [5, 1, 1, 0]);
        assert!(fields.decode_pane(&[0xff, 0xff, 0xff], &registry).is_err());
    }

    #[test]
    fn an_oversized_record_leaves_no_large_buffers_behind() {
        let registry = GridRegistry::embedded();
        let oversized = CellWindow {
            grid_id: "4".repeat(100_000),
            count_by_severity: vec![1; 100_000],
            ..full_window(&registry)
        };
        let mut fields = CellWindowFields::default();
        let pane = fields
            .decode_pane(&oversized.encode_to_vec(), &registry)
            .unwrap();
        assert_eq!(pane.cell, None);
        assert_eq!(pane.count_by_severity, [1; SEVERITY_SLOTS]);
        assert!(fields.grid_id.capacity() <= KEPT_BUFFER_ENTRIES);
        assert!(fields.count_by_severity.capacity() <= KEPT_BUFFER_ENTRIES);
    }
}
