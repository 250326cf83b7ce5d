//! One request and its retries: exponential backoff with jitter on connection errors,
//! timeouts, 408, 429 and 5xx; other 4xx answers are permanent (the receiver rejected the
//! content). Shutdown interrupts the retries.

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
            AttemptError::Encode(_) | AttemptError::Cancelled => false,
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
}
