//! Maintenance windows (`[[suppression]]` in the rules file): alerts are still tracked and
//! written, but marked with `suppressed_by` so that delivery does not page for them.
//!
//! ```toml
//! [[suppression]]
//! name = "elevator-maintenance-2026-03"   # unique; [A-Za-z0-9_.:-]+
//! grid_id = "41061100100101"              # exactly one of device_id / grid_id / community_id
//! start = "2026-03-02T09:00:00+08:00"     # RFC 3339, inclusive
//! end = "2026-03-02T12:00:00+08:00"       # RFC 3339, exclusive; after start
//! reason = "planned elevator camera work" # optional free text
//! rules = ["ebike_in_elevator_repeat"]    # optional: only these rules (must exist); default all
//! ```
//!
//! Matching: a FIRING state change (a new alert or an update) is marked with the name of the
//! first suppression, in file order, that is active at the change's event time (`updated_at`:
//! the start of a new alert, the event time of an update), applies to the alert's rule, and
//! whose target is the alert's `device_id` (immediate alerts carry the triggering device),
//! `grid_id`, or `community_id` (a community suppression covers the community's cell and
//! community alerts; a grid suppression does not cover community-scope alerts, which have no
//! grid). RESOLVED changes are never marked: a resolution is always delivered, so an alert
//! paged before a maintenance window began is closed normally, and resolving an alert that
//! was never paged is harmless. `active_alerts` marks each firing alert the same way, at its
//! `updated_at`.

use super::ruleset::{Suppression, SuppressionTarget};
use crate::proto::{Alert, AlertStatus};
use crate::time::timestamp_to_millis;

/// The name of the suppression that matches `alert`, if any (always `None` for RESOLVED).
pub fn matching_suppression<'a>(suppressions: &'a [Suppression], alert: &Alert) -> Option<&'a str> {
    if alert.status != AlertStatus::Firing as i32 {
        return None;
    }
    let at_millis = timestamp_to_millis(alert.updated_at.as_ref()?);
    suppressions
        .iter()
        .find(|suppression| {
            (suppression.start_millis..suppression.end_millis).contains(&at_millis)
                && (suppression.rules.is_empty() || suppression.rules.contains(&alert.rule))
                && match &suppression.target {
                    SuppressionTarget::Device(device_id) => {
                        !alert.device_id.is_empty() && *device_id == alert.device_id
                    }
                    SuppressionTarget::Grid(grid_id) => {
                        !alert.grid_id.is_empty() && *grid_id == alert.grid_id
                    }
                    SuppressionTarget::Community(community_id) => {
                        !alert.community_id.is_empty() && *community_id == alert.community_id
                    }
                }
        })
        .map(|suppression| suppression.name.as_str())
}

/// Sets `suppressed_by` on each alert (the matching suppression's name, or empty); returns how
/// many were marked.
pub fn mark_suppressed(suppressions: &[Suppression], alerts: &mut [Alert]) -> usize {
    let mut marked = 0;
    for alert in alerts {
        match matching_suppression(suppressions, alert) {
            Some(name) => {
                alert.suppressed_by = name.to_string();
                marked += 1;
            }
            None => alert.suppressed_by.clear(),
        }
    }
    marked
}
