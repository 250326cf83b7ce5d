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

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::AlertingConfig;
use crate::sink::cloudevents::{cloud_event, event_source, CLOUDEVENTS_CONTENT_TYPE};
use crate::sink::delivery::queue::QueuedAlert;
use crate::sink::delivery::retry::AttemptError;
use crate::sink::delivery::worker::{http_client, DeliveryError, Destination};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Gridwatch-Signature";

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

/// The webhook as a delivery destination: one CloudEvent per request, signed when a secret
/// is configured, with retries (by the
/// [`DeliveryWorker`](crate::sink::delivery::worker::DeliveryWorker)).
pub(crate) struct WebhookDestination {
    /// HTTP client with the configured timeout.
    client: reqwest::Client,
    /// Where events are POSTed (may carry a token: never logged whole).
    url: reqwest::Url,
    /// HMAC key; empty sends no signature.
    secret: Vec<u8>,
    /// CloudEvents `source`.
    source: String,
}

impl WebhookDestination {
    /// The receiver of `config.webhook`.
    pub(crate) fn new(config: &AlertingConfig) -> Result<WebhookDestination, DeliveryError> {
        let url = reqwest::Url::parse(&config.webhook.url).map_err(|error| DeliveryError::Url {
            sink: "webhook",
            url: crate::secret::redact_url(&config.webhook.url),
            message: error.to_string(),
        })?;
        Ok(WebhookDestination {
            client: http_client("webhook", config.webhook.timeout, &config.tls)?,
            url,
            secret: config.webhook.secret.expose().as_bytes().to_vec(),
            source: event_source(&config.instance),
        })
    }
}

impl Destination for WebhookDestination {
    const SINK: &'static str = "webhook";
    // One event per request: a receiver acknowledges (and deduplicates) state changes one by one.
    const MAX_BATCH_ALERTS: usize = 1;
    /// The serialized CloudEvents of the batch (one).
    type Prepared = Vec<u8>;

    fn prepare(&self, batch: &[QueuedAlert]) -> Result<Vec<u8>, AttemptError> {
        let [queued] = batch else {
            return Err(AttemptError::Encode(serde::ser::Error::custom(
                "a webhook request carries exactly one event",
            )));
        };
        let event = cloud_event(&queued.alert, &self.source).map_err(AttemptError::Encode)?;
        serde_json::to_vec(&event).map_err(AttemptError::Encode)
    }

    fn request(&self, body: &Vec<u8>) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE)
            .body(body.clone());
        if !self.secret.is_empty() {
            request = request.header(SIGNATURE_HEADER, signature(&self.secret, body));
        }
        request
    }

    fn receiver(&self) -> String {
        // The host only: webhook URLs may carry tokens in their path or query.
        self.url.host_str().unwrap_or_default().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
