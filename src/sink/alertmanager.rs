//! Alertmanager sink: `POST {url}/api/v2/alerts` with a JSON array of
//! `{labels, annotations, startsAt, endsAt, generatorURL}` (RFC 3339 times), the way
//! Prometheus talks to Alertmanager.
//!
//! - **Labels and annotations** come from [`super::enrich`].
//! - **`startsAt`** is the alert's `starts_at` (event time of the event that fired it).
//! - **`endsAt` of a firing alert** is `now + 4 × alerting.resend_interval` (Prometheus sends
//!   `now + 4 × resend delay`): if gridwatch dies, Alertmanager resolves the alert by itself
//!   after four missed resends instead of paging forever; as long as gridwatch runs, the
//!   resend pushes `endsAt` forward.
//! - **`endsAt` of a resolved alert** is its `ends_at`, clamped to `[startsAt, now]` (event
//!   time may run slightly ahead of the wall clock, and Alertmanager would otherwise keep a
//!   resolved alert active until then). A resolved alert is sent once and forgotten.
//! - **Resend.** Every firing alert (the set of active alerts, by fingerprint) is re-sent
//!   every `resend_interval` (default 60 s), as Alertmanager expects of its clients: a
//!   restarted Alertmanager (or one that missed a state change) converges within one
//!   interval. Resends are not counted in `gridwatch_alert_deliveries_total` (they are not
//!   state changes) and are not retried (the next resend is the retry). If a RESOLVED state
//!   change is dropped or fails, the alert is no longer re-sent, so Alertmanager resolves it
//!   at its last `endsAt`, within `4 × resend_interval`.
//! - **HA.** Alertmanager clusters (`--cluster.*` gossip) deduplicate notifications, not
//!   alerts: every member must receive every alert. Each configured URL has its own queue,
//!   task and retries, so one member being down delays nothing for the others.
//! - State changes are sent in batches of at most [`MAX_BATCH_ALERTS`], in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;
use crate::grid::GridRegistry;
use crate::proto::{Alert, AlertStatus};
use crate::sink::delivery::queue::{lock, QueuedAlert};
use crate::sink::delivery::retry::{send_once, AttemptError};
use crate::sink::delivery::worker::{http_client, DeliveryError, Destination};
use crate::sink::enrich::{alertmanager_labels, annotations, operator_url};
use crate::time::{millis_to_rfc3339, timestamp_to_millis, wall_clock_millis};

/// Most alerts in one POST.
pub const MAX_BATCH_ALERTS: usize = 64;

/// How many resend intervals a firing alert stays active in Alertmanager without a resend.
pub const ENDS_AT_RESEND_INTERVALS: i64 = 4;

/// One alert as Alertmanager's API v2 accepts it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostableAlert {
    /// Identifying labels.
    pub labels: BTreeMap<String, String>,
    /// Descriptive annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it ends (RFC 3339): in the future while firing, the resolution time when resolved.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Link back to the operator API's view of the cell.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The Alertmanager form of `alert` at wall time `now_millis` (see the module docs for the
/// `endsAt` policy).
pub fn postable_alert(
    alert: &Alert,
    registry: &GridRegistry,
    external_url: &str,
    now_millis: i64,
    resend_interval: Duration,
) -> PostableAlert {
    let starts_at_millis = alert
        .starts_at
        .as_ref()
        .or(alert.updated_at.as_ref())
        .map(timestamp_to_millis)
        .unwrap_or(now_millis);
    let ends_at_millis = if alert.status == AlertStatus::Resolved as i32 {
        let resolved_millis = alert
            .ends_at
            .as_ref()
            .map(timestamp_to_millis)
            .unwrap_or(now_millis);
        resolved_millis.min(now_millis).max(starts_at_millis)
    } else {
        let resend_millis = crate::time::duration_millis(resend_interval);
        now_millis
            .saturating_add(resend_millis.saturating_mul(ENDS_AT_RESEND_INTERVALS))
            .max(starts_at_millis)
    };
    PostableAlert {
        labels: alertmanager_labels(alert, registry),
        annotations: annotations(alert, registry, external_url),
        starts_at: millis_to_rfc3339(starts_at_millis),
        ends_at: millis_to_rfc3339(ends_at_millis),
        generator_url: operator_url(external_url, alert),
    }
}

/// The firing alerts, by fingerprint: what the resend loop sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveAlerts {
    /// The latest firing state of each alerting fingerprint.
    firing: BTreeMap<String, Alert>,
}

impl ActiveAlerts {
    /// Records a state change: FIRING replaces the fingerprint's entry, RESOLVED removes it.
    pub fn apply(&mut self, alert: &Alert) {
        if alert.status == AlertStatus::Resolved as i32 {
            self.firing.remove(&alert.fingerprint);
            return;
        }
        if alert.status == AlertStatus::Firing as i32 {
            self.firing.insert(alert.fingerprint.clone(), alert.clone());
        }
    }

    /// Drops `fingerprint` without a state change (another instance keeps it fresh now).
    pub fn forget(&mut self, fingerprint: &str) {
        self.firing.remove(fingerprint);
    }

    /// The firing alerts, in fingerprint order.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }

    /// How many alerts are firing.
    pub fn len(&self) -> usize {
        self.firing.len()
    }

    /// Whether nothing is firing.
    pub fn is_empty(&self) -> bool {
        self.firing.is_empty()
    }
}

/// `{base}/api/v2/alerts` of an Alertmanager base URL (which may carry a path prefix).
pub fn alerts_endpoint(base_url: &str) -> Result<reqwest::Url, DeliveryError> {
    let text = format!("{}/api/v2/alerts", base_url.trim_end_matches('/'));
    reqwest::Url::parse(&text).map_err(|error| DeliveryError::Url {
        sink: "alertmanager",
        url: crate::secret::redact_url(base_url),
        message: error.to_string(),
    })
}

/// One Alertmanager as a delivery destination: state changes in batches, with retries (by
/// the [`DeliveryWorker`](crate::sink::delivery::worker::DeliveryWorker)), and every firing
/// alert re-sent every resend interval.
pub(crate) struct AlertmanagerDestination {
    /// HTTP client with the configured timeout.
    client: reqwest::Client,
    /// `{url}/api/v2/alerts` without credentials: what logs and errors show.
    endpoint: reqwest::Url,
    /// `user`, `password` from the configured URL's `user:pass@` (else
    /// `[alerting.alertmanager_auth]`), sent as basic auth so that the endpoint itself never
    /// carries them into a log line or a reqwest error.
    basic_auth: Option<(String, crate::secret::Secret)>,
    /// `alerting.alertmanager_auth.bearer_token`, when set.
    bearer_token: Option<crate::secret::Secret>,
    /// Firing alerts shared by every Alertmanager's resend loop.
    active_alerts: Arc<Mutex<ActiveAlerts>>,
    /// For labels and annotations.
    registry: Arc<GridRegistry>,
    /// Base of the operator links.
    external_url: String,
    /// How often firing alerts are re-sent.
    resend_interval: Duration,
}

impl AlertmanagerDestination {
    /// The Alertmanager at `base_url`.
    pub(crate) fn new(
        base_url: &str,
        config: &AlertingConfig,
        registry: Arc<GridRegistry>,
        active_alerts: Arc<Mutex<ActiveAlerts>>,
    ) -> Result<AlertmanagerDestination, DeliveryError> {
        let (endpoint, url_credentials) =
            crate::secret::split_url_credentials(&alerts_endpoint(base_url)?);
        let auth = &config.alertmanager_auth;
        let basic_auth = url_credentials.or_else(|| {
            (!auth.username.is_empty()).then(|| (auth.username.clone(), auth.password.clone()))
        });
        let bearer_token = (!auth.bearer_token.is_empty()).then(|| auth.bearer_token.clone());
        Ok(AlertmanagerDestination {
            client: http_client("alertmanager", config.timeout, &config.tls)?,
            endpoint,
            basic_auth,
            bearer_token,
            active_alerts,
            registry,
            external_url: config.external_url.clone(),
            resend_interval: config.resend_interval,
        })
    }

    /// The POST of `alerts` at the current wall time (`endsAt` of firing alerts moves with it,
    /// so every attempt computes it afresh).
    fn post(&self, alerts: &[Alert]) -> reqwest::RequestBuilder {
        let now_millis = wall_clock_millis();
        let body: Vec<PostableAlert> = alerts
            .iter()
            .map(|alert| {
                postable_alert(
                    alert,
                    &self.registry,
                    &self.external_url,
                    now_millis,
                    self.resend_interval,
                )
            })
            .collect();
        let request = self.client.post(self.endpoint.clone()).json(&body);
        match (&self.basic_auth, &self.bearer_token) {
            (Some((username, password)), _) => {
                request.basic_auth(username, Some(password.expose()))
            }
            (None, Some(token)) => request.bearer_auth(token.expose()),
            (None, None) => request,
        }
    }

    /// Re-sends every firing alert once (no retries: the next resend is the retry).
    async fn resend_active(&self, cancel: &CancellationToken) {
        let firing: Vec<Alert> = lock(&self.active_alerts).firing().cloned().collect();
        for chunk in firing.chunks(MAX_BATCH_ALERTS) {
            let result = tokio::select! {
                result = send_once(self.post(chunk)) => result,
                _ = cancel.cancelled() => return,
            };
            if let Err(error) = result {
                tracing::warn!(endpoint = %self.endpoint, %error, "re-sending firing alerts to alertmanager failed");
                return;
            }
        }
    }
}

impl Destination for AlertmanagerDestination {
    const SINK: &'static str = "alertmanager";
    const MAX_BATCH_ALERTS: usize = MAX_BATCH_ALERTS;
    type Prepared = Vec<Alert>;

    fn prepare(&self, batch: &[QueuedAlert]) -> Result<Vec<Alert>, AttemptError> {
        Ok(batch.iter().map(|queued| queued.alert.clone()).collect())
    }

    fn request(&self, alerts: &Vec<Alert>) -> reqwest::RequestBuilder {
        self.post(alerts)
    }

    fn receiver(&self) -> String {
        self.endpoint.to_string()
    }

    fn periodic_interval(&self) -> Option<Duration> {
        Some(self.resend_interval)
    }

    fn periodic(&self, cancel: &CancellationToken) -> impl std::future::Future<Output = ()> + Send {
        self.resend_active(cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EventType;
    use crate::time::millis_to_timestamp;

    const NOW: i64 = 1_772_409_900_000;

    fn alert(status: AlertStatus) -> Alert {
        let registry = GridRegistry::embedded();
        let cell = registry.cell(crate::grid::CellIndex(0));
        let community = registry.community(cell.community);
        Alert {
            alert_id: "a1".to_string(),
            fingerprint: "f1".to_string(),
            rule: "life_safety".to_string(),
            rule_kind: "immediate".to_string(),
            status: status as i32,
            grid_id: cell.grid_id.clone(),
            community_id: community.id.clone(),
            district_id: community.district_code.clone(),
            event_type: EventType::FireSmoke as i32,
            severity: 1,
            starts_at: Some(millis_to_timestamp(NOW - 120_000)),
            ends_at: None,
            observed: 1.0,
            threshold: 1.0,
            ..Alert::default()
        }
    }

    #[test]
    fn firing_alert_ends_four_resend_intervals_from_now() {
        let registry = GridRegistry::embedded();
        let postable = postable_alert(
            &alert(AlertStatus::Firing),
            &registry,
            "http://127.0.0.1:9750",
            NOW,
            Duration::from_secs(60),
        );
        assert_eq!(postable.starts_at, millis_to_rfc3339(NOW - 120_000));
        assert_eq!(postable.ends_at, millis_to_rfc3339(NOW + 240_000));
        assert_eq!(postable.labels["alertname"], "GridwatchLifeSafety");
        assert!(postable
            .generator_url
            .starts_with("http://127.0.0.1:9750/api/v1/cells/"));
    }

    #[test]
    fn resolved_alert_ends_at_its_end_clamped_to_start_and_now() {
        let registry = GridRegistry::embedded();
        let resend = Duration::from_secs(60);
        let mut resolved = alert(AlertStatus::Resolved);
        resolved.ends_at = Some(millis_to_timestamp(NOW - 60_000));
        let postable = postable_alert(&resolved, &registry, "http://x", NOW, resend);
        assert_eq!(postable.ends_at, millis_to_rfc3339(NOW - 60_000));

        resolved.ends_at = Some(millis_to_timestamp(NOW + 30_000));
        let postable = postable_alert(&resolved, &registry, "http://x", NOW, resend);
        assert_eq!(
            postable.ends_at,
            millis_to_rfc3339(NOW),
            "not in the future"
        );

        resolved.starts_at = Some(millis_to_timestamp(NOW + 10_000));
        let postable = postable_alert(&resolved, &registry, "http://x", NOW, resend);
        assert_eq!(
            postable.ends_at,
            millis_to_rfc3339(NOW + 10_000),
            "never before startsAt (Alertmanager rejects that)"
        );
    }

    #[test]
    fn postable_alert_serializes_with_alertmanager_field_names() {
        let registry = GridRegistry::embedded();
        let postable = postable_alert(
            &alert(AlertStatus::Firing),
            &registry,
            "http://x",
            NOW,
            Duration::from_secs(60),
        );
        let json = serde_json::to_value(&postable).unwrap();
        for key in [
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }

    #[test]
    fn active_set_keeps_the_latest_firing_state_and_forgets_resolved_alerts() {
        let mut active = ActiveAlerts::default();
        let mut firing = alert(AlertStatus::Firing);
        active.apply(&firing);
        firing.observed = 2.0;
        active.apply(&firing);
        let mut other = alert(AlertStatus::Firing);
        other.fingerprint = "f2".to_string();
        active.apply(&other);
        assert_eq!(active.len(), 2);
        assert_eq!(active.firing().next().unwrap().observed, 2.0);
        active.apply(&alert(AlertStatus::Resolved));
        let remaining: Vec<&str> = active
            .firing()
            .map(|alert| alert.fingerprint.as_str())
            .collect();
        assert_eq!(remaining, ["f2"]);
        active.apply(&Alert::default());
        assert_eq!(active.len(), 1, "an unspecified status changes nothing");
        // Another instance owns it now: no longer re-sent here, and not resolved either.
        active.forget("f2");
        assert!(active.is_empty());
    }

    #[test]
    fn endpoint_appends_the_v2_path_to_the_base_url() {
        assert_eq!(
            alerts_endpoint("http://127.0.0.1:9093/").unwrap().as_str(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("https://am.example/prefix")
                .unwrap()
                .as_str(),
            "https://am.example/prefix/api/v2/alerts"
        );
        assert!(alerts_endpoint("not a url").is_err());
    }
}
