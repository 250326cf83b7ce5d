//! Rules and alerts.
