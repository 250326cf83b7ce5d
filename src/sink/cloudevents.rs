//! The CloudEvents 1.0 envelope of an alert state change, in one place for both carriers:
//! the webhook sends it in structured mode ([`CloudEvent`] as JSON, see
//! [`super::webhook`]), the Kafka sink in binary mode (the attributes as `ce_*` headers of
//! the `Alert` protobuf record, see [`super::kafka`]). Both use the same `id`
//! (`<alert_id>:<status>:<updated_at millis>`), so a consumer of both deduplicates by it.

use serde::{Deserialize, Serialize};

use crate::proto::{Alert, AlertStatus};
use crate::time::{millis_to_rfc3339, timestamp_to_millis, wall_clock_millis};

/// The CloudEvents specification version gridwatch writes.
pub const SPEC_VERSION: &str = "1.0";

/// The structured-mode content type.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

/// CloudEvents `type` of a firing (or updated) alert.
pub const FIRING_EVENT_TYPE: &str = "cn.gridwatch.alert.firing.v1";

/// CloudEvents `type` of a resolved alert.
pub const RESOLVED_EVENT_TYPE: &str = "cn.gridwatch.alert.resolved.v1";

/// One CloudEvents 1.0 event in the JSON format (structured mode: the webhook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// `<alert_id>:<status>:<updated_at millis>`: unique per state change.
    pub id: String,
    /// `gridwatch/<instance>`.
    pub source: String,
    /// [`FIRING_EVENT_TYPE`] or [`RESOLVED_EVENT_TYPE`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the state change happened (the alert's `updated_at`), RFC 3339.
    pub time: String,
    /// Always `"application/json"`.
    pub datacontenttype: String,
    /// The grid cell.
    pub subject: String,
    /// The alert in the proto3 JSON mapping.
    pub data: serde_json::Value,
}

/// The context attributes of one alert state change: what both carriers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventAttributes {
    /// `<alert_id>:<status>:<updated_at millis>`: unique per state change.
    pub id: String,
    /// `gridwatch/<instance>`.
    pub source: String,
    /// [`FIRING_EVENT_TYPE`] or [`RESOLVED_EVENT_TYPE`].
    pub event_type: String,
    /// When the state change happened (the alert's `updated_at`), RFC 3339.
    pub time: String,
    /// The grid cell.
    pub subject: String,
}

impl CloudEventAttributes {
    /// The attributes of `alert`'s state change, from `source` (e.g. `gridwatch/host-1`).
    pub fn of_alert(alert: &Alert, source: &str) -> CloudEventAttributes {
        let resolved = alert.status == AlertStatus::Resolved as i32;
        let status_word = if resolved { "resolved" } else { "firing" };
        let updated_at_millis = alert
            .updated_at
            .as_ref()
            .or(alert.ends_at.as_ref().filter(|_| resolved))
            .or(alert.starts_at.as_ref())
            .map(timestamp_to_millis)
            .unwrap_or_else(wall_clock_millis);
        CloudEventAttributes {
            id: format!("{}:{}:{}", alert.alert_id, status_word, updated_at_millis),
            source: source.to_string(),
            event_type: if resolved {
                RESOLVED_EVENT_TYPE
            } else {
                FIRING_EVENT_TYPE
            }
            .to_string(),
            time: millis_to_rfc3339(updated_at_millis),
            subject: alert.grid_id.clone(),
        }
    }

    /// The binary-mode Kafka headers (`ce_specversion`, `ce_id`, `ce_source`, `ce_type`,
    /// `ce_time`, `ce_subject`), in that order.
    pub fn kafka_headers(self) -> [(&'static str, String); 6] {
        [
            ("ce_specversion", SPEC_VERSION.to_string()),
            ("ce_id", self.id),
            ("ce_source", self.source),
            ("ce_type", self.event_type),
            ("ce_time", self.time),
            ("ce_subject", self.subject),
        ]
    }
}

/// The structured-mode CloudEvent of one alert state change, from `source`; fails only when
/// the alert cannot be written as JSON (then nothing should be sent rather than an empty
/// `data`).
pub fn cloud_event(alert: &Alert, source: &str) -> Result<CloudEvent, serde_json::Error> {
    let data = serde_json::to_value(alert)?;
    let attributes = CloudEventAttributes::of_alert(alert, source);
    Ok(CloudEvent {
        specversion: SPEC_VERSION.to_string(),
        id: attributes.id,
        source: attributes.source,
        event_type: attributes.event_type,
        time: attributes.time,
        datacontenttype: "application/json".to_string(),
        subject: attributes.subject,
        data,
    })
}

/// The CloudEvents `source` of this process: `gridwatch/<instance>` (see [`instance_name`]).
pub fn event_source(instance: &str) -> String {
    format!("gridwatch/{}", instance_name(instance))
}

/// This process's name among gridwatch instances: `instance` when configured, else the host
/// name (a pod's name under Kubernetes), else `gridwatch`.
pub fn instance_name(instance: &str) -> String {
    if !instance.is_empty() {
        return instance.to_string();
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|| "gridwatch".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis_to_timestamp;

    fn alert(status: AlertStatus) -> Alert {
        Alert {
            alert_id: "abc".to_string(),
            fingerprint: "f".to_string(),
            rule: "life_safety".to_string(),
            status: status as i32,
            grid_id: "41061100100101".to_string(),
            starts_at: Some(millis_to_timestamp(1_772_409_600_000)),
            updated_at: Some(millis_to_timestamp(1_772_409_660_000)),
            ..Alert::default()
        }
    }

    #[test]
    fn cloud_event_id_type_and_subject_follow_the_state_change() {
        let firing = cloud_event(&alert(AlertStatus::Firing), "gridwatch/test").unwrap();
        assert_eq!(firing.specversion, "1.0");
        assert_eq!(firing.id, "abc:firing:1772409660000");
        assert_eq!(firing.event_type, FIRING_EVENT_TYPE);
        assert_eq!(firing.subject, "41061100100101");
        assert_eq!(firing.source, "gridwatch/test");
        assert_eq!(firing.time, "2026-03-02T00:01:00.000Z");
        assert_eq!(firing.datacontenttype, "application/json");
        assert_eq!(firing.data["alertId"], "abc");
        assert_eq!(firing.data["status"], "FIRING");

        let resolved = cloud_event(&alert(AlertStatus::Resolved), "gridwatch/test").unwrap();
        assert_eq!(resolved.id, "abc:resolved:1772409660000");
        assert_eq!(resolved.event_type, RESOLVED_EVENT_TYPE);
        assert_ne!(firing.id, resolved.id);
        let json = serde_json::to_value(&resolved).unwrap();
        assert_eq!(json["type"], RESOLVED_EVENT_TYPE);
    }

    #[test]
    fn kafka_headers_carry_the_webhook_event_attributes() {
        let firing = alert(AlertStatus::Firing);
        let event = cloud_event(&firing, "gridwatch/test").unwrap();
        let headers = CloudEventAttributes::of_alert(&firing, "gridwatch/test").kafka_headers();
        assert_eq!(
            headers.map(|(_, value)| value),
            [
                event.specversion,
                event.id,
                event.source,
                event.event_type,
                event.time,
                event.subject
            ]
        );
    }

    #[test]
    fn event_source_prefers_the_configured_instance() {
        assert_eq!(event_source("gw-1"), "gridwatch/gw-1");
        let host_source = event_source("");
        assert!(host_source.starts_with("gridwatch/") && host_source.len() > "gridwatch/".len());
    }
}
