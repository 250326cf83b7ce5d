//! Alert identity (fingerprints, alert ids) and the stored form of a firing alert.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ruleset::AlertScope;
use crate::proto::{Alert, AlertStatus};
use crate::time::millis_to_timestamp;

/// `rule_kind` of data-gap alerts, at the path other modules use (each kind names its own
/// `rule_kind` in its file).
pub use super::data_gap::RULE_KIND_DATA_GAP;

/// At most this many event ids are carried by an alert (the most recent ones, oldest first).
pub const MAX_ALERT_EVENT_IDS: usize = 20;

/// Stable identity of what is alerting: the first 16 hex chars of
/// sha256(`"{rule}|{grid_id}|{scope}"`).
pub fn fingerprint(rule_name: &str, grid_id: &str, scope: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule_name.as_bytes());
    hasher.update(b"|");
    hasher.update(grid_id.as_bytes());
    hasher.update(b"|");
    hasher.update(scope.as_bytes());
    let mut text = hex::encode(hasher.finalize());
    text.truncate(16);
    text
}

/// Id of one alert occurrence: the first 32 hex chars of sha256(`"{fingerprint}|{starts_at_millis}"`).
pub fn alert_id(fingerprint: &str, starts_at_millis: i64) -> String {
    let mut text = hex::encode(Sha256::digest(
        format!("{fingerprint}|{starts_at_millis}").as_bytes(),
    ));
    text.truncate(32);
    text
}

/// Whether `alert` is about the whole city (a scan rule's city zone): scope `city`, and no
/// grid, community or district. The one test the sinks, the read model and the console's API
/// use to place it.
pub fn is_city_wide(alert: &Alert) -> bool {
    alert.scope == AlertScope::City.as_str()
        && alert.grid_id.is_empty()
        && alert.community_id.is_empty()
        && alert.district_id.is_empty()
}

/// Appends an event id, dropping the oldest ids beyond [`MAX_ALERT_EVENT_IDS`].
pub(crate) fn push_capped_event_id(event_ids: &mut Vec<String>, event_id: &str) {
    event_ids.push(event_id.to_string());
    if event_ids.len() > MAX_ALERT_EVENT_IDS {
        let excess = event_ids.len() - MAX_ALERT_EVENT_IDS;
        event_ids.drain(..excess);
    }
}

/// Everything needed to render one firing alert occurrence as a [`crate::proto::Alert`],
/// kept in the engine state (so that snapshots, resolution and `active_alerts` need neither
/// the rule nor the registry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertOccurrence {
    /// Deterministic id of this occurrence (fingerprint + starts_at).
    pub alert_id: String,
    /// Stable identity across occurrences (rule, grid, scope).
    pub fingerprint: String,
    /// Name of the rule that raised it.
    pub rule: String,
    /// The `NAME` of the rule's kind ([`super::RuleKind::NAME`]).
    pub rule_kind: String,
    /// 14-digit grid id of the cell, copied from the registry when it fired (empty for
    /// community-scope rules).
    pub grid_id: String,
    /// 12-digit community code of the cell.
    pub community_id: String,
    /// 6-digit district code of the community.
    pub district_id: String,
    /// `EventType as i32`: the type of the event that fired it.
    pub event_type: i32,
    /// 1 (most severe) to 4.
    pub severity: u32,
    /// Event time at which it fired.
    pub starts_at_millis: i64,
    /// Event time of the last emitted state change.
    pub updated_at_millis: i64,
    /// Observed value: matching events (immediate), the largest window count (threshold,
    /// spike), the CUSUM statistic (cusum), offline devices or 0 events (data gap).
    pub observed: f64,
    /// The value it was compared with (1 for immediate rules, `min_count` for threshold, the
    /// critical count for spike, `h` for cusum).
    pub threshold: f64,
    /// Expected value under the baseline (statistical rules; 0 otherwise).
    pub expected: f64,
    /// Poisson tail probability behind the decision (statistical rules; 0 otherwise).
    pub p_value: f64,
    /// Ids of the events behind it, oldest first, capped at [`MAX_ALERT_EVENT_IDS`].
    pub event_ids: Vec<String>,
    /// Device that triggered an immediate alert (empty for threshold alerts).
    pub device_id: String,
    /// Where the rule counts ("cell" or "community"): the alert explains itself.
    pub scope: AlertScope,
    /// The rule's window or interval in milliseconds (0 for immediate rules): the scale.
    pub window_millis: i64,
    /// Weeks of learned history behind `expected` (0 = seeded rates only).
    pub baseline_weeks: u32,
    /// Member communities of a space-time cluster (scan rules), centre first; empty for every
    /// other kind.
    pub cluster_community_ids: Vec<String>,
}

impl AlertOccurrence {
    /// The still-firing alert as output.
    pub fn firing_alert(&self) -> Alert {
        self.to_alert(AlertStatus::Firing, None, self.updated_at_millis)
    }

    /// The resolved alert as output, ending (and updated) at `ends_at_millis`.
    pub fn resolved_alert(&self, ends_at_millis: i64) -> Alert {
        self.to_alert(AlertStatus::Resolved, Some(ends_at_millis), ends_at_millis)
    }

    fn to_alert(
        &self,
        status: AlertStatus,
        ends_at_millis: Option<i64>,
        updated_at_millis: i64,
    ) -> Alert {
        Alert {
            alert_id: self.alert_id.clone(),
            fingerprint: self.fingerprint.clone(),
            rule: self.rule.clone(),
            rule_kind: self.rule_kind.clone(),
            status: status as i32,
            grid_id: self.grid_id.clone(),
            community_id: self.community_id.clone(),
            district_id: self.district_id.clone(),
            event_type: self.event_type,
            severity: self.severity,
            starts_at: Some(millis_to_timestamp(self.starts_at_millis)),
            ends_at: ends_at_millis.map(millis_to_timestamp),
            observed: self.observed,
            threshold: self.threshold,
            event_ids: self.event_ids.clone(),
            device_id: self.device_id.clone(),
            updated_at: Some(millis_to_timestamp(updated_at_millis)),
            expected: self.expected,
            p_value: self.p_value,
            suppressed_by: String::new(),
            late: false,
            scope: self.scope.as_str().to_string(),
            window_seconds: u32::try_from(self.window_millis / 1000).unwrap_or(u32::MAX),
            baseline_weeks: self.baseline_weeks,
            cluster_community_ids: self.cluster_community_ids.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_and_alert_id_are_stable_hex_of_the_documented_length() {
        let fingerprint_value = fingerprint("life_safety", "41061100100101", "FIRE_SMOKE");
        assert_eq!(fingerprint_value.len(), 16);
        assert_eq!(
            fingerprint_value,
            fingerprint("life_safety", "41061100100101", "FIRE_SMOKE")
        );
        let expected_prefix = hex::encode(Sha256::digest(b"life_safety|41061100100101|FIRE_SMOKE"));
        assert!(expected_prefix.starts_with(&fingerprint_value));
        assert_ne!(
            fingerprint_value,
            fingerprint("life_safety", "41061100100101", "GAS_LEAK")
        );
        let id = alert_id(&fingerprint_value, 1_700_000_000_000);
        assert_eq!(id.len(), 32);
        let expected_id = hex::encode(Sha256::digest(
            format!("{fingerprint_value}|1700000000000").as_bytes(),
        ));
        assert!(expected_id.starts_with(&id));
        assert_ne!(id, alert_id(&fingerprint_value, 1_700_000_000_001));
    }

    #[test]
    fn event_ids_keep_the_most_recent_twenty_oldest_first() {
        let mut event_ids = Vec::new();
        for number in 0..25 {
            push_capped_event_id(&mut event_ids, &format!("e{number}"));
        }
        assert_eq!(event_ids.len(), MAX_ALERT_EVENT_IDS);
        assert_eq!(event_ids.first().map(String::as_str), Some("e5"));
        assert_eq!(event_ids.last().map(String::as_str), Some("e24"));
    }
}
