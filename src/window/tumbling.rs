//! Tumbling event-time panes.
