//! Alert delivery: hands the pipeline's alert state changes to Alertmanager
//! ([`super::alertmanager`]) and a CloudEvents webhook ([`super::webhook`]) without ever
//! blocking the pipeline.
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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use prometheus::{Histogram, IntCounter};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;
use crate::grid::GridRegistry;
use crate::metrics::Metrics;
use crate::proto::Alert;
use crate::sink::alertmanager::{ActiveAlerts, AlertmanagerWorker};
use crate::sink::enrich::should_deliver;
use crate::sink::webhook::WebhookWorker;

/// Errors starting alert delivery.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The HTTP client could not be built (e.g. no TLS backend).
    #[error("cannot build the HTTP client for {sink}: {source}")]
    Client {
        /// `alertmanager` or `webhook`.
        sink: &'static str,
        /// The client error.
        source: reqwest::Error,
    },
    /// A configured URL is not usable.
    #[error("invalid {sink} URL {url:?}: {message}")]
    Url {
        /// `alertmanager` or `webhook`.
        sink: &'static str,
        /// The URL as configured.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The policy of the `[alerting]` section.
    pub fn from_config(config: &AlertingConfig) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: config.retry_initial_backoff,
            max_backoff: config.retry_max_backoff,
            max_attempts: config.retry_max_attempts,
        }
    }

    /// Exponential backoff (factor 2) with jitter, `max_attempts - 1` retries.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff.max(self.initial_backoff))
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
    }
}

/// A FIFO of at most `capacity` items that drops the oldest item to make room.
#[derive(Debug, Clone)]
pub struct BoundedQueue<T> {
    /// Waiting items, oldest first.
    items: VecDeque<T>,
    /// Largest number of waiting items (at least 1).
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (0 is treated as 1).
    pub fn new(capacity: usize) -> BoundedQueue<T> {
        BoundedQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends `item`; when the queue was full, the oldest item is removed and returned.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// Removes and returns up to `max_items` of the oldest items.
    pub fn take_batch(&mut self, max_items: usize) -> Vec<T> {
        let count = max_items.min(self.items.len());
        self.items.drain(..count).collect()
    }

    /// Waiting items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An alert waiting for delivery, with its hand-off time for the latency histogram.
#[derive(Debug, Clone)]
pub struct QueuedAlert {
    /// The alert state change.
    pub alert: Alert,
    /// When the pipeline handed it over.
    pub handed_off: Instant,
}

/// The counters and histogram of one sink.
#[derive(Clone)]
pub(crate) struct SinkMetrics {
    /// `result="sent"`.
    pub(crate) sent: IntCounter,
    /// `result="failed"`.
    pub(crate) failed: IntCounter,
    /// `result="retried"`.
    pub(crate) retried: IntCounter,
    /// `result="suppressed"`.
    pub(crate) suppressed: IntCounter,
    /// Dropped from a full queue.
    pub(crate) dropped: IntCounter,
    /// Hand-off to acknowledgement.
    pub(crate) latency: Histogram,
}

impl SinkMetrics {
    /// The series of `sink` (`alertmanager` or `webhook`).
    pub(crate) fn new(metrics: &Metrics, sink: &str) -> SinkMetrics {
        let result = |name: &str| metrics.alert_deliveries.with_label_values(&[sink, name]);
        SinkMetrics {
            sent: result("sent"),
            failed: result("failed"),
            retried: result("retried"),
            suppressed: result("suppressed"),
            dropped: metrics.alert_delivery_dropped.with_label_values(&[sink]),
            latency: metrics.alert_delivery_latency.with_label_values(&[sink]),
        }
    }

    /// Counts a delivered batch and observes each alert's latency.
    pub(crate) fn record_sent(&self, batch: &[QueuedAlert]) {
        self.sent.inc_by(batch.len() as u64);
        for queued in batch {
            self.latency
                .observe(queued.handed_off.elapsed().as_secs_f64());
        }
    }
}

/// Locks a mutex, recovering the data of a poisoned one (a panicked holder cannot leave a
/// queue or a map half-updated in a way that matters here).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One destination's queue, shared by the pipeline (producer) and its delivery task.
pub(crate) struct AlertQueue {
    /// Waiting alerts.
    queue: Mutex<BoundedQueue<QueuedAlert>>,
    /// Wakes the delivery task after a push.
    wakeup: Notify,
    /// Counts alerts dropped from the full queue.
    dropped: IntCounter,
}

impl AlertQueue {
    /// An empty queue of `capacity` alerts.
    pub(crate) fn new(capacity: usize, dropped: IntCounter) -> AlertQueue {
        AlertQueue {
            queue: Mutex::new(BoundedQueue::new(capacity)),
            wakeup: Notify::new(),
            dropped,
        }
    }

    /// Appends without blocking (dropping the oldest when full) and wakes the task.
    pub(crate) fn offer(&self, alert: Alert, handed_off: Instant) {
        let dropped = lock(&self.queue).push(QueuedAlert { alert, handed_off });
        if let Some(dropped) = dropped {
            self.dropped.inc();
            tracing::warn!(
                alert_id = %dropped.alert.alert_id,
                "alert delivery queue full; dropped the oldest waiting alert"
            );
        }
        self.wakeup.notify_one();
    }

    /// Takes up to `max_items` waiting alerts, oldest first.
    pub(crate) fn take_batch(&self, max_items: usize) -> Vec<QueuedAlert> {
        lock(&self.queue).take_batch(max_items)
    }

    /// Waits until something was pushed since the last wait.
    pub(crate) async fn wait(&self) {
        self.wakeup.notified().await
    }
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No answer: connection refused, reset, timed out. (The URL is stripped from the error:
    /// webhook URLs may carry tokens, and logs name the destination separately.)
    #[error("request failed: {0}")]
    Transport(reqwest::Error),
    /// The receiver answered with an error status.
    #[error("receiver answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// Shutdown interrupted the retries.
    #[error("cancelled by shutdown")]
    Cancelled,
}

impl From<reqwest::Error> for AttemptError {
    fn from(error: reqwest::Error) -> AttemptError {
        AttemptError::Transport(error.without_url())
    }
}

impl AttemptError {
    /// Whether trying again may succeed: transport errors, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Transport(_) => true,
            AttemptError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            AttemptError::Cancelled => false,
        }
    }
}

/// Longest response body kept in an error.
const ERROR_BODY_CHARS: usize = 300;

/// Sends one request; any 2xx is success.
pub(crate) async fn send_once(request: reqwest::RequestBuilder) -> Result<(), AttemptError> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect();
    Err(AttemptError::Status {
        status: status.as_u16(),
        body,
    })
}

/// Sends the request `make_request` builds, retrying per `policy`, until success, a permanent
/// error, the last attempt, or `cancel`. Each retry adds `alerts_in_request` to `retried`.
pub(crate) async fn send_with_retry(
    make_request: impl Fn() -> reqwest::RequestBuilder,
    policy: &RetryPolicy,
    retried: &IntCounter,
    alerts_in_request: u64,
    sink: &'static str,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let attempts = (|| send_once(make_request()))
        .retry(policy.backoff())
        .when(AttemptError::is_retryable)
        .notify(|error, delay| {
            retried.inc_by(alerts_in_request);
            tracing::warn!(sink, %error, retry_in = ?delay, "alert delivery failed; retrying");
        });
    tokio::select! {
        result = attempts => result,
        _ = cancel.cancelled() => Err(AttemptError::Cancelled),
    }
}

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
                let worker = AlertmanagerWorker::new(
                    url,
                    config,
                    policy,
                    registry.clone(),
                    queue.clone(),
                    active_alerts.clone(),
                    sink_metrics.clone(),
                    cancel.clone(),
                )?;
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
            let worker =
                WebhookWorker::new(config, policy, queue.clone(), sink_metrics, cancel.clone())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_item() {
        let mut queue = BoundedQueue::new(3);
        for item in 1..=3 {
            assert_eq!(queue.push(item), None);
        }
        assert_eq!(queue.push(4), Some(1));
        assert_eq!(queue.push(5), Some(2));
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.take_batch(2), vec![3, 4]);
        assert_eq!(queue.take_batch(10), vec![5]);
        assert!(queue.is_empty());
    }

    #[test]
    fn zero_capacity_queue_still_keeps_the_newest_item() {
        let mut queue = BoundedQueue::new(0);
        assert_eq!(queue.push("a"), None);
        assert_eq!(queue.push("b"), Some("a"));
        assert_eq!(queue.take_batch(5), vec!["b"]);
    }

    #[test]
    fn server_errors_and_throttling_are_retried_but_rejections_are_not() {
        let status = |status: u16| AttemptError::Status {
            status,
            body: String::new(),
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(status(408).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!AttemptError::Cancelled.is_retryable());
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_and_stops_after_the_attempts() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_attempts: 5,
        };
        let delays: Vec<Duration> = backon::BackoffBuilder::build(policy.backoff()).collect();
        assert_eq!(delays.len(), 4, "4 retries after the first attempt");
        let lower_bounds = [100, 200, 350, 350];
        for (delay, lower_bound) in delays.iter().zip(lower_bounds) {
            let millis = delay.as_millis() as u64;
            assert!(
                (lower_bound - 1..=2 * lower_bound + 1).contains(&millis),
                "{delays:?}"
            );
        }
    }

    #[test]
    fn queue_offer_counts_drops() {
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let queue = AlertQueue::new(2, dropped.clone());
        for index in 0..5 {
            queue.offer(
                Alert {
                    alert_id: index.to_string(),
                    ..Alert::default()
                },
                Instant::now(),
            );
        }
        assert_eq!(dropped.get(), 3);
        let ids: Vec<String> = queue
            .take_batch(10)
            .into_iter()
            .map(|queued| queued.alert.alert_id)
            .collect();
        assert_eq!(ids, ["3", "4"]);
    }
}
