//! Webhook sink: each alert state change is POSTed to `alerting.webhook.url` as one
//! [CloudEvents 1.0](https://github.com/cloudevents/spec) event in structured mode
//! (`Content-Type: application/cloudevents+json`):
//!
//! ```json
//! {"specversion": "1.0",
//!  "id": "<alert_id>:<firing|resolved>:<updated_at epoch ms>",
//!  "source": "gridwatch/<alerting.instance, or the host name>",
//!  "type": "cn.gridwatch.alert.firing.v1",            // or cn.gridwatch.alert.resolved.v1
//!  "time": "<updated_at, RFC 3339>",
//!  "datacontenttype": "application/json",
//!  "subject": "<grid_id>",
//!  "data": { ...the Alert in the proto3 JSON mapping... }}
//! ```
//!
//! `id` is unique per state change and identical on re-delivery: `source` + `id` is the
//! idempotency key a receiver deduplicates on (deliveries are at-least-once, see
//! [`super::delivery`]).
//!
//! # Signature
//!
//! With `alerting.webhook.secret` set, every request carries
//! `X-Gridwatch-Signature: sha256=<hex of HMAC-SHA256(secret, raw request body)>`. A receiver
//! verifies it by computing the HMAC-SHA256 of the **raw body bytes as received** (before any
//! JSON parsing or re-serialization) with the shared secret, hex-encoding it (lowercase), and
//! comparing with the header value after `sha256=` in constant time; [`verify_signature`] does
//! exactly that. Requests without a valid signature must be rejected (401). Replays of a valid
//! request are harmless because of the idempotency key.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;
use crate::proto::{Alert, AlertStatus};
use crate::sink::delivery::{
    send_once, send_with_retry, AlertQueue, AttemptError, DeliveryError, QueuedAlert, RetryPolicy,
    SinkMetrics,
};
use crate::time::{millis_to_rfc3339, timestamp_to_millis, wall_clock_millis};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Gridwatch-Signature";

/// The structured-mode content type.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

/// CloudEvents `type` of a firing (or updated) alert.
pub const FIRING_EVENT_TYPE: &str = "cn.gridwatch.alert.firing.v1";

/// CloudEvents `type` of a resolved alert.
pub const RESOLVED_EVENT_TYPE: &str = "cn.gridwatch.alert.resolved.v1";

/// One CloudEvents 1.0 event in the JSON format.
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

/// The CloudEvent of one alert state change, from `source` (e.g. `gridwatch/host-1`).
pub fn cloud_event(alert: &Alert, source: &str) -> CloudEvent {
    let resolved = alert.status == AlertStatus::Resolved as i32;
    let status_word = if resolved { "resolved" } else { "firing" };
    let updated_at_millis = alert
        .updated_at
        .as_ref()
        .or(alert.ends_at.as_ref().filter(|_| resolved))
        .or(alert.starts_at.as_ref())
        .map(timestamp_to_millis)
        .unwrap_or_else(wall_clock_millis);
    CloudEvent {
        specversion: "1.0".to_string(),
        id: format!("{}:{}:{}", alert.alert_id, status_word, updated_at_millis),
        source: source.to_string(),
        event_type: if resolved {
            RESOLVED_EVENT_TYPE
        } else {
            FIRING_EVENT_TYPE
        }
        .to_string(),
        time: millis_to_rfc3339(updated_at_millis),
        datacontenttype: "application/json".to_string(),
        subject: alert.grid_id.clone(),
        data: serde_json::to_value(alert).unwrap_or(serde_json::Value::Null),
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (the `X-Gridwatch-Signature` value) is the signature of `body` under
/// `secret`, compared in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// The CloudEvents `source` of this process: `gridwatch/<instance>`, the host name when
/// `instance` is empty (and `gridwatch/gridwatch` when even that is unknown).
pub fn event_source(instance: &str) -> String {
    if !instance.is_empty() {
        return format!("gridwatch/{instance}");
    }
    let host_name = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "gridwatch".to_string());
    format!("gridwatch/{}", host_name.trim())
}

/// The webhook's delivery task.
pub(crate) struct WebhookWorker {
    /// HTTP client with the configured timeout.
    client: reqwest::Client,
    /// The receiver.
    url: reqwest::Url,
    /// HMAC key; empty sends no signature.
    secret: Vec<u8>,
    /// CloudEvents `source`.
    source: String,
    /// State changes waiting for delivery.
    queue: Arc<AlertQueue>,
    /// Retries.
    policy: RetryPolicy,
    /// Delivery metrics of the `webhook` sink.
    metrics: SinkMetrics,
    /// Shutdown.
    cancel: CancellationToken,
}

impl WebhookWorker {
    /// A worker for `config.webhook`.
    pub(crate) fn new(
        config: &AlertingConfig,
        policy: RetryPolicy,
        queue: Arc<AlertQueue>,
        metrics: SinkMetrics,
        cancel: CancellationToken,
    ) -> Result<WebhookWorker, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(config.webhook.timeout)
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| DeliveryError::Client {
                sink: "webhook",
                source,
            })?;
        let url = reqwest::Url::parse(&config.webhook.url).map_err(|error| DeliveryError::Url {
            sink: "webhook",
            url: config.webhook.url.clone(),
            message: error.to_string(),
        })?;
        Ok(WebhookWorker {
            client,
            url,
            secret: config.webhook.secret.as_bytes().to_vec(),
            source: event_source(&config.instance),
            queue,
            policy,
            metrics,
            cancel,
        })
    }

    /// Delivers queued state changes one by one, in order, until shutdown; then gives what
    /// is queued one attempt.
    pub(crate) async fn run(self) {
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = self.queue.wait() => self.deliver_queued().await,
            }
        }
        loop {
            let batch = self.queue.take_batch(1);
            let Some(queued) = batch.first() else {
                return;
            };
            let result = send_once(self.request(&self.body(&queued.alert))).await;
            self.record(queued, result);
        }
    }

    /// The serialized CloudEvent of `alert`.
    fn body(&self, alert: &Alert) -> Vec<u8> {
        serde_json::to_vec(&cloud_event(alert, &self.source)).unwrap_or_default()
    }

    /// The POST of one serialized event, signed when a secret is configured.
    fn request(&self, body: &[u8]) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE)
            .body(body.to_vec());
        if !self.secret.is_empty() {
            request = request.header(SIGNATURE_HEADER, signature(&self.secret, body));
        }
        request
    }

    /// Sends everything queued, one event per request, with retries.
    async fn deliver_queued(&self) {
        loop {
            let batch = self.queue.take_batch(1);
            let Some(queued) = batch.first() else {
                return;
            };
            let body = self.body(&queued.alert);
            let result = send_with_retry(
                || self.request(&body),
                &self.policy,
                &self.metrics.retried,
                1,
                "webhook",
                &self.cancel,
            )
            .await;
            self.record(queued, result);
            if self.cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Counts one delivery's outcome.
    fn record(&self, queued: &QueuedAlert, result: Result<(), AttemptError>) {
        match result {
            Ok(()) => self.metrics.record_sent(std::slice::from_ref(queued)),
            Err(error) => {
                self.metrics.failed.inc();
                tracing::error!(
                    receiver = self.url.host_str().unwrap_or_default(),
                    alert_id = %queued.alert.alert_id,
                    %error,
                    "alert delivery to the webhook failed"
                );
            }
        }
    }
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
        let firing = cloud_event(&alert(AlertStatus::Firing), "gridwatch/test");
        assert_eq!(firing.specversion, "1.0");
        assert_eq!(firing.id, "abc:firing:1772409660000");
        assert_eq!(firing.event_type, FIRING_EVENT_TYPE);
        assert_eq!(firing.subject, "41061100100101");
        assert_eq!(firing.source, "gridwatch/test");
        assert_eq!(firing.time, "2026-03-02T00:01:00.000Z");
        assert_eq!(firing.datacontenttype, "application/json");
        assert_eq!(firing.data["alertId"], "abc");
        assert_eq!(firing.data["status"], "FIRING");

        let resolved = cloud_event(&alert(AlertStatus::Resolved), "gridwatch/test");
        assert_eq!(resolved.id, "abc:resolved:1772409660000");
        assert_eq!(resolved.event_type, RESOLVED_EVENT_TYPE);
        assert_ne!(firing.id, resolved.id);
        let json = serde_json::to_value(&resolved).unwrap();
        assert_eq!(json["type"], RESOLVED_EVENT_TYPE);
    }

    #[test]
    fn signature_is_hmac_sha256_hex_and_verifies() {
        let body = br#"{"specversion":"1.0"}"#;
        let header = signature(b"secret", body);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), "sha256=".len() + 64);
        assert!(verify_signature(b"secret", body, &header));
        assert!(!verify_signature(b"other", body, &header));
        assert!(!verify_signature(b"secret", b"{}", &header));
        assert!(!verify_signature(b"secret", body, "sha1=abc"));
        assert!(!verify_signature(b"secret", body, "sha256=zz"));
    }

    #[test]
    fn signature_matches_a_published_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn event_source_prefers_the_configured_instance() {
        assert_eq!(event_source("gw-1"), "gridwatch/gw-1");
        let host_source = event_source("");
        assert!(host_source.starts_with("gridwatch/") && host_source.len() > "gridwatch/".len());
    }
}
