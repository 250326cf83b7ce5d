//! One request and its retries: exponential backoff with jitter on connection errors,
//! timeouts, 408, 429 and 5xx; other 4xx answers are permanent (the receiver rejected the
//! content). Shutdown interrupts the retries, and the request then in flight is made once
//! more.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;

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
    /// The request body could not be serialized (nothing was sent; retrying cannot help).
    #[error("cannot serialize the request body: {0}")]
    Encode(#[source] serde_json::Error),
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
            AttemptError::Encode(_) => false,
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
        // Shutdown interrupts the retries, not the delivery: the request in flight (which the
        // receiver may already have) is made once more, as queued alerts get one attempt at
        // shutdown. Dropping it counted a delivered alert as failed, and lost an undelivered one.
        _ = cancel.cancelled() => send_once(make_request()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn shutdown_during_a_request_makes_it_once_more_instead_of_dropping_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A receiver that answers its first request after 2 s, later ones at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let number = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0_u8; 4096];
                    let _ = stream.read(&mut request).await;
                    if number == 0 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        let cancel = CancellationToken::new();
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_attempts: 3,
        };
        let retried = IntCounter::new("retried", "test").unwrap();
        let client = reqwest::Client::new();
        let url = format!("http://{address}/api/v2/alerts");
        let sending = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                send_with_retry(
                    || client.post(&url).body("[]"),
                    &policy,
                    &retried,
                    1,
                    "test",
                    &cancel,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), sending)
            .await
            .expect("the last attempt ends")
            .expect("the task");
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2, "made once more");
    }
}
