//! The one delivery loop every destination runs: wait for queued state changes, send them
//! batch by batch with retries, run the destination's periodic work (Alertmanager's resend)
//! in between, and at shutdown give what is still queued one attempt. A [`Destination`] says
//! only what is specific to it: how a batch becomes a request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};
use tokio_util::sync::CancellationToken;

use super::queue::{AlertQueue, QueuedAlert};
use super::retry::{send_once, send_with_retry, AttemptError, RetryPolicy};
use crate::metrics::Metrics;

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
    /// A CA bundle or client certificate of `[alerting.tls]` cannot be used.
    #[error("alerting.tls: {setting} {path}: {message}")]
    Tls {
        /// The setting (`ca_file`, `cert_file`/`key_file`).
        setting: &'static str,
        /// The file named by it.
        path: String,
        /// Why it cannot be used (never the file's content).
        message: String,
    },
    /// A configured URL is not usable.
    #[error("invalid {sink} URL {url:?}: {message}")]
    Url {
        /// `alertmanager` or `webhook`.
        sink: &'static str,
        /// The URL as configured.
        url: String,
        /// Why the URL does not parse.
        message: String,
    },
}

/// The HTTP client of a destination: `timeout` per request, gridwatch's user agent, the
/// system's trusted roots (and the built-in Mozilla ones) plus `tls.ca_file`, and the client
/// certificate of `tls.cert_file`/`key_file` when set. The files are read here, at start.
pub(crate) fn http_client(
    sink: &'static str,
    timeout: Duration,
    tls: &crate::config::HttpClientTlsConfig,
) -> Result<reqwest::Client, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &tls.ca_file {
        let tls_error = |message: String| DeliveryError::Tls {
            setting: "ca_file",
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|error| tls_error(error.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| tls_error(format!("not a PEM certificate bundle ({error})")))?;
        if certificates.is_empty() {
            return Err(tls_error("holds no PEM certificate".to_string()));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let (Some(cert_path), Some(key_path)) = (&tls.cert_file, &tls.key_file) {
        let tls_error = |message: String| DeliveryError::Tls {
            setting: "cert_file/key_file",
            path: format!("{} {}", cert_path.display(), key_path.display()),
            message,
        };
        let mut pem = std::fs::read(cert_path).map_err(|error| tls_error(error.to_string()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key_path).map_err(|error| tls_error(error.to_string()))?);
        // The error of a key that does not parse says what kind of problem it is, never the
        // key.
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            tls_error("not a PEM certificate chain and unencrypted private key".to_string())
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|source| DeliveryError::Client { sink, source })
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

/// What is specific to one kind of receiver (Alertmanager, the webhook).
pub(crate) trait Destination: Send + Sync + 'static {
    /// The `sink` label of its metrics and logs.
    const SINK: &'static str;
    /// Most alerts in one request.
    const MAX_BATCH_ALERTS: usize;
    /// A batch made ready to send: built once, sent again by each retry.
    type Prepared: Send + Sync;

    /// Readies a batch (fails when it cannot be serialized: nothing is sent).
    fn prepare(&self, batch: &[QueuedAlert]) -> Result<Self::Prepared, AttemptError>;

    /// The request of one attempt.
    fn request(&self, prepared: &Self::Prepared) -> reqwest::RequestBuilder;

    /// Names the receiver in logs (never a URL with credentials or tokens in it).
    fn receiver(&self) -> String;

    /// How often [`Destination::periodic`] runs; `None` for never.
    fn periodic_interval(&self) -> Option<Duration> {
        None
    }

    /// Work between state changes (Alertmanager re-sends its firing alerts).
    fn periodic(&self, cancel: &CancellationToken) -> impl Future<Output = ()> + Send {
        let _ = cancel;
        async {}
    }
}

/// One destination's delivery task.
pub(crate) struct DeliveryWorker<D: Destination> {
    /// What is specific to the receiver.
    destination: D,
    /// State changes waiting for this receiver.
    queue: Arc<AlertQueue>,
    /// Retries of state changes.
    policy: RetryPolicy,
    /// Delivery metrics of the destination's sink.
    metrics: SinkMetrics,
    /// Stops the loop; queued alerts then get one attempt.
    cancel: CancellationToken,
}

impl<D: Destination> DeliveryWorker<D> {
    /// A worker delivering `queue` to `destination`.
    pub(crate) fn new(
        destination: D,
        queue: Arc<AlertQueue>,
        policy: RetryPolicy,
        metrics: SinkMetrics,
        cancel: CancellationToken,
    ) -> DeliveryWorker<D> {
        DeliveryWorker {
            destination,
            queue,
            policy,
            metrics,
            cancel,
        }
    }

    /// Delivers state changes as they come and runs the periodic work, until shutdown; then
    /// gives what is queued one attempt.
    pub(crate) async fn run(self) {
        // Without periodic work the ticker exists (any period) but its branch is disabled.
        let periodic_interval = self.destination.periodic_interval();
        let mut ticker =
            tokio::time::interval(periodic_interval.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = self.queue.wait() => self.drain_queue(true).await,
                _ = ticker.tick(), if periodic_interval.is_some() => {
                    self.destination.periodic(&self.cancel).await
                }
            }
        }
        // At shutdown: one attempt for whatever is still queued.
        self.drain_queue(false).await;
    }

    /// Sends everything queued, batch by batch: while running with retries (stopping when
    /// shutdown interrupts them), at shutdown (`with_retries` false) one attempt per batch.
    async fn drain_queue(&self, with_retries: bool) {
        loop {
            let batch = self.queue.take_batch(D::MAX_BATCH_ALERTS);
            if batch.is_empty() {
                return;
            }
            let result = match self.destination.prepare(&batch) {
                Ok(prepared) if with_retries => {
                    send_with_retry(
                        || self.destination.request(&prepared),
                        &self.policy,
                        &self.metrics.retried,
                        batch.len() as u64,
                        D::SINK,
                        &self.cancel,
                    )
                    .await
                }
                Ok(prepared) => send_once(self.destination.request(&prepared)).await,
                Err(error) => Err(error),
            };
            self.record(&batch, result);
            if with_retries && self.cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Counts a batch's outcome.
    fn record(&self, batch: &[QueuedAlert], result: Result<(), AttemptError>) {
        let Err(error) = result else {
            self.metrics.record_sent(batch);
            return;
        };
        self.metrics.failed.inc_by(batch.len() as u64);
        tracing::error!(
            sink = D::SINK,
            receiver = %self.destination.receiver(),
            alerts = batch.len(),
            first_alert_id = batch.first().map(|queued| queued.alert.alert_id.as_str()).unwrap_or_default(),
            %error,
            "alert delivery failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use prometheus::HistogramOpts;

    use super::*;
    use crate::proto::Alert;

    /// A destination whose batches never serialize (and whose requests would go nowhere).
    struct Unserializable;

    impl Destination for Unserializable {
        const SINK: &'static str = "test";
        const MAX_BATCH_ALERTS: usize = 2;
        type Prepared = ();

        fn prepare(&self, _batch: &[QueuedAlert]) -> Result<(), AttemptError> {
            Err(AttemptError::Encode(serde::ser::Error::custom(
                "not serializable",
            )))
        }

        fn request(&self, _prepared: &()) -> reqwest::RequestBuilder {
            reqwest::Client::new().post("http://127.0.0.1:9/unreachable")
        }

        fn receiver(&self) -> String {
            "test".to_string()
        }
    }

    fn sink_metrics() -> SinkMetrics {
        let counter = |name: &str| IntCounter::new(name, "test").unwrap();
        SinkMetrics {
            sent: counter("sent"),
            failed: counter("failed"),
            retried: counter("retried"),
            suppressed: counter("suppressed"),
            dropped: counter("dropped"),
            latency: Histogram::with_opts(HistogramOpts::new("latency", "test")).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_batch_that_cannot_be_serialized_fails_at_once_without_retries() {
        let metrics = sink_metrics();
        let queue = Arc::new(AlertQueue::new(10, metrics.dropped.clone()));
        for index in 0..3 {
            let alert = Alert {
                alert_id: index.to_string(),
                ..Alert::default()
            };
            queue.offer(alert, Instant::now());
        }
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_attempts: 5,
        };
        let worker = DeliveryWorker::new(
            Unserializable,
            queue.clone(),
            policy,
            metrics.clone(),
            CancellationToken::new(),
        );
        worker.drain_queue(true).await;
        assert_eq!(metrics.failed.get(), 3, "every alert of both batches");
        assert_eq!(metrics.retried.get(), 0, "an encoding error is not retried");
        assert_eq!(metrics.sent.get(), 0);
        assert!(queue.take_batch(10).is_empty());
    }
}
