//! Alert delivery: hands the pipeline's alert state changes to Alertmanager
//! ([`super::alertmanager`]) and a CloudEvents webhook ([`super::webhook`]) without ever
//! blocking the pipeline.
//!
//! This module is the fan-out ([`AlertDelivery`]: one queue and one task per destination);
//! the plumbing has its own rooms: [`queue`] (bounded, drop-oldest), [`retry`] (one request,
//! backoff), [`worker`] (the one delivery loop every destination runs). What differs between
//! receivers sits beside them: [`super::alertmanager`] and [`super::webhook`] each implement
//! [`worker::Destination`].
//!
//! # Semantics
//!
//! - **Hand-off never blocks.** [`AlertDelivery::offer`] pushes each alert into one bounded
//!   in-memory queue per destination (each Alertmanager URL, the webhook) under a mutex held
//!   for a push, and wakes that destination's task. A slow or down receiver only fills its own
//!   queue: processing, the other destinations and the other HA members are unaffected.
//! - **Queue and drop policy.** Each queue holds at most `alerting.queue_capacity` alerts
//!   (default 10 000). When full, the **oldest** waiting alert is dropped (the newest state of
//!   an incident is the one worth delivering) and counted in
//!   `gridwatch_alert_delivery_dropped_total{sink}`.
//! - **At-least-once, with retries.** A request is retried with exponential backoff and jitter
//!   (`alerting.retry_initial_backoff`, doubled per retry up to `retry_max_backoff`, plus a
//!   random jitter of up to the same delay again, at most
//!   `retry_max_attempts` attempts in all) on connection errors, timeouts, 408, 429 and 5xx.
//!   Other 4xx answers are permanent (the receiver rejected the content) and not retried.
//!   An alert whose delivery gave up counts as `failed`; a re-delivered alert may reach a
//!   receiver twice, so receivers deduplicate (Alertmanager does by labels; the webhook's
//!   CloudEvents `source` + `id` is the idempotency key). Order is kept per destination.
//! - **Suppressed alerts** (tracked but not paging, see [`super::enrich::should_deliver`])
//!   are not sent; they count as `gridwatch_alert_deliveries_total{result="suppressed"}`.
//! - **Metrics:** `gridwatch_alert_deliveries_total{sink, result}` (`sent`, `failed`, one per
//!   alert and destination; `retried`, one per alert and retry),
//!   `gridwatch_alert_delivery_latency_seconds{sink}` (hand-off to acknowledgement, queueing
//!   and retries included), `gridwatch_alert_delivery_dropped_total{sink}`.
//! - **Shutdown.** [`AlertDelivery::shut_down`] stops retrying, gives what is still queued one
//!   attempt, and waits at most a grace period.

pub mod queue;
pub mod retry;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::proto::Alert;
use crate::sink::alertmanager::{ActiveAlerts, AlertmanagerDestination};
use crate::sink::enrich::should_deliver;
use crate::sink::webhook::WebhookDestination;
use queue::{lock, AlertQueue};
use retry::RetryPolicy;
use worker::{DeliveryWorker, SinkMetrics};

pub use worker::DeliveryError;

/// The running delivery tasks and the queues that feed them.
pub struct AlertDelivery {
    /// One queue per Alertmanager URL.
    alertmanager_queues: Vec<Arc<AlertQueue>>,
    /// Firing alerts by fingerprint, re-sent to every Alertmanager every resend interval.
    active_alerts: Arc<Mutex<ActiveAlerts>>,
    /// The webhook's queue, when a webhook is configured.
    webhook_queue: Option<Arc<AlertQueue>>,
    /// Counts suppressed alerts per enabled sink.
    suppressed: Vec<IntCounter>,
    /// The delivery tasks.
    tasks: Vec<JoinHandle<()>>,
    /// Stops the tasks.
    cancel: CancellationToken,
}

impl AlertDelivery {
    /// Spawns one task per Alertmanager URL and one for the webhook. `None` when neither is
    /// configured. Must be called within a Tokio runtime.
    pub fn start(
        config: &AlertingConfig,
        registry: Arc<GridRegistry>,
        metrics: &Metrics,
    ) -> Result<Option<AlertDelivery>, DeliveryError> {
        if config.alertmanager_urls.is_empty() && config.webhook.url.is_empty() {
            return Ok(None);
        }
        let cancel = CancellationToken::new();
        let policy = RetryPolicy::from_config(config);
        let active_alerts = Arc::new(Mutex::new(ActiveAlerts::default()));
        let mut alertmanager_queues = Vec::new();
        let mut webhook_queue = None;
        let mut suppressed = Vec::new();
        let mut workers: Vec<BoxedWorker> = Vec::new();

        if !config.alertmanager_urls.is_empty() {
            let sink_metrics = SinkMetrics::new(metrics, "alertmanager");
            suppressed.push(sink_metrics.suppressed.clone());
            for url in &config.alertmanager_urls {
                let queue = Arc::new(AlertQueue::new(
                    config.queue_capacity,
                    sink_metrics.dropped.clone(),
                ));
                let destination = AlertmanagerDestination::new(
                    url,
                    config,
                    registry.clone(),
                    active_alerts.clone(),
                )?;
                let worker = DeliveryWorker::new(
                    destination,
                    queue.clone(),
                    policy,
                    sink_metrics.clone(),
                    cancel.clone(),
                );
                alertmanager_queues.push(queue);
                workers.push(Box::pin(worker.run()));
            }
        }
        if !config.webhook.url.is_empty() {
            let sink_metrics = SinkMetrics::new(metrics, "webhook");
            suppressed.push(sink_metrics.suppressed.clone());
            let queue = Arc::new(AlertQueue::new(
                config.queue_capacity,
                sink_metrics.dropped.clone(),
            ));
            let worker = DeliveryWorker::new(
                WebhookDestination::new(config)?,
                queue.clone(),
                policy,
                sink_metrics,
                cancel.clone(),
            );
            webhook_queue = Some(queue);
            workers.push(Box::pin(worker.run()));
        }
        let tasks = workers.into_iter().map(tokio::spawn).collect();
        tracing::info!(
            alertmanagers = config.alertmanager_urls.len(),
            webhook = !config.webhook.url.is_empty(),
            "alert delivery started"
        );
        Ok(Some(AlertDelivery {
            alertmanager_queues,
            active_alerts,
            webhook_queue,
            suppressed,
            tasks,
            cancel,
        }))
    }

    /// Hands alert state changes to every destination. Never blocks on the network.
    pub fn offer(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let handed_off = Instant::now();
        for alert in alerts {
            if !should_deliver(alert) {
                for counter in &self.suppressed {
                    counter.inc();
                }
                continue;
            }
            if !self.alertmanager_queues.is_empty() {
                lock(&self.active_alerts).apply(alert);
                for queue in &self.alertmanager_queues {
                    queue.offer(alert.clone(), handed_off);
                }
            }
            if let Some(queue) = &self.webhook_queue {
                queue.offer(alert.clone(), handed_off);
            }
        }
    }

    /// Makes already-firing alerts (e.g. restored from a snapshot) known to the Alertmanager
    /// resend loop, without sending them as new state changes to the webhook.
    pub fn offer_active(&self, firing_alerts: &[Alert]) {
        if self.alertmanager_queues.is_empty() {
            return;
        }
        let mut active = lock(&self.active_alerts);
        for alert in firing_alerts.iter().filter(|alert| should_deliver(alert)) {
            active.apply(alert);
        }
    }

    /// Stops re-sending `fingerprints` to Alertmanager without resolving them: another
    /// instance now owns what raised them (a revoked partition, or the whole-city detector's
    /// publishing) and keeps them fresh from now on.
    pub fn forget_active<'a>(&self, fingerprints: impl IntoIterator<Item = &'a str>) {
        if self.alertmanager_queues.is_empty() {
            return;
        }
        let mut active = lock(&self.active_alerts);
        for fingerprint in fingerprints {
            active.forget(fingerprint);
        }
    }

    /// Stops retrying, gives queued alerts one attempt, and waits at most `grace` for the
    /// tasks; tasks still running then are aborted.
    pub async fn shut_down(self, grace: Duration) {
        self.cancel.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        for task in self.tasks {
            let abort_handle = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("alert delivery did not finish within the shutdown grace period");
                abort_handle.abort();
            }
        }
    }
}

/// A delivery task's future, as spawned by [`AlertDelivery::start`].
type BoxedWorker = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;
