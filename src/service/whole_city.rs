//! The pipeline task's side of the whole-city detector ([`crate::rules::whole_city`]): which
//! whole-city alerts are firing, and whether this instance publishes them — it does while it
//! owns input partition 0. When that changes, Alertmanager's re-sends move with it: the new
//! publisher starts refreshing the firing alerts, the old one stops (without resolving them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::proto::Alert;
use crate::sink::alertmanager::ActiveAlerts;

/// The whole-city alerts firing, and whether this instance publishes.
#[derive(Debug, Default)]
pub(crate) struct WholeCityRole {
    firing: ActiveAlerts,
    /// Whether this instance publishes, shared with the detector's task: only the publisher
    /// writes the detector's learned history ([`crate::read_model::learned_history`]).
    publishing: Arc<AtomicBool>,
}

/// What [`WholeCityRole::set_publishing`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoleChange {
    /// This instance publishes from now on.
    Became,
    /// Another instance publishes from now on.
    Lost,
    /// As before.
    Unchanged,
}

impl WholeCityRole {
    /// A role that also tells `publishing`'s other holders whether this instance publishes.
    pub(crate) fn sharing(publishing: Arc<AtomicBool>) -> WholeCityRole {
        WholeCityRole {
            publishing,
            ..WholeCityRole::default()
        }
    }

    /// Whether this instance publishes.
    pub(crate) fn is_publishing(&self) -> bool {
        self.publishing.load(Ordering::Relaxed)
    }

    /// Follows alert changes (published here or not).
    pub(crate) fn note(&mut self, changes: &[Alert]) {
        for alert in changes {
            self.firing.apply(alert);
        }
    }

    /// The detector's whole firing set (after its catch-up).
    pub(crate) fn replace_firing(&mut self, firing: &[Alert]) {
        self.firing = ActiveAlerts::default();
        self.note(firing);
    }

    /// Whether this instance publishes from now on (it owns input partition 0).
    pub(crate) fn set_publishing(&mut self, publishing: bool) -> RoleChange {
        match (
            self.publishing.swap(publishing, Ordering::Relaxed),
            publishing,
        ) {
            (false, true) => RoleChange::Became,
            (true, false) => RoleChange::Lost,
            _ => RoleChange::Unchanged,
        }
    }

    /// The firing alerts, by fingerprint.
    pub(crate) fn firing(&self) -> Vec<Alert> {
        self.firing.firing().cloned().collect()
    }

    /// The firing alerts' fingerprints.
    pub(crate) fn firing_fingerprints(&self) -> impl Iterator<Item = &str> {
        self.firing.firing().map(|alert| alert.fingerprint.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AlertStatus;

    fn alert(fingerprint: &str, status: AlertStatus) -> Alert {
        Alert {
            fingerprint: fingerprint.to_string(),
            status: status as i32,
            ..Alert::default()
        }
    }

    #[test]
    fn the_role_follows_firing_and_resolved_changes_and_says_when_publishing_moves() {
        let shared = Arc::new(AtomicBool::new(false));
        let mut role = WholeCityRole::sharing(shared.clone());
        role.replace_firing(&[alert("a", AlertStatus::Firing)]);
        role.note(&[
            alert("b", AlertStatus::Firing),
            alert("a", AlertStatus::Resolved),
        ]);
        assert_eq!(role.firing_fingerprints().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(role.set_publishing(false), RoleChange::Unchanged);
        assert_eq!(role.set_publishing(true), RoleChange::Became);
        assert!(role.is_publishing());
        assert!(
            shared.load(Ordering::Relaxed),
            "the detector's task is told"
        );
        assert_eq!(role.set_publishing(true), RoleChange::Unchanged);
        assert_eq!(role.set_publishing(false), RoleChange::Lost);
        assert_eq!(role.firing().len(), 1);
    }
}
