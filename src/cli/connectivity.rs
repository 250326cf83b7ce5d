//! Reaching the brokers before a command-line tool starts its work, visibly: `produce` and
//! `dlq replay` would otherwise queue records silently while librdkafka retries an
//! unreachable broker for minutes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Producer};

/// How long one metadata request may take before the next attempt (and the next log line).
const ATTEMPT: Duration = Duration::from_secs(2);

/// The brokers did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No broker answered a metadata request within the timeout.
    #[error("cannot reach the Kafka brokers {brokers} within {timeout}: {last_error} (check --brokers or kafka.brokers, the network, TLS and SASL settings; --connect-timeout sets how long to try)", timeout = humantime::format_duration(*.timeout))]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long they were tried.
        timeout: Duration,
        /// librdkafka's last word.
        last_error: String,
    },
    /// The client could not be created from the settings.
    #[error("cannot create a Kafka client: {0}")]
    Client(String),
}

/// Waits until a broker of `brokers` answers a metadata request, logging a warning every
/// [`ATTEMPT`] while none does, and gives up after `timeout`. Returns how long it took.
pub fn wait_for_brokers(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Duration, ConnectError> {
    // With SASL a refused sign-in looks like a transport failure to a metadata request;
    // the tool's own client reports the broker's refusal in its words, so it goes first.
    if properties.keys().any(|key| key.starts_with("sasl.")) {
        return Ok(Duration::ZERO);
    }
    let producer: BaseProducer = crate::kafka::client_config(brokers, &[], properties)
        .create()
        .map_err(|error| ConnectError::Client(error.to_string()))?;
    let started = Instant::now();
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let attempt = ATTEMPT.min(remaining).max(Duration::from_millis(100));
        match producer.client().fetch_metadata(None, attempt) {
            Ok(_) => {
                tracing::debug!(
                    brokers,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "kafka brokers reachable"
                );
                return Ok(started.elapsed());
            }
            Err(error) if !is_unreachable(&error) => {
                // A broker answered but refused (SASL, ACLs): the tool's own client reports
                // that refusal in its words.
                tracing::debug!(brokers, %error, "kafka brokers answered with an error");
                return Ok(started.elapsed());
            }
            Err(error) => {
                if started.elapsed() >= timeout {
                    return Err(ConnectError::Unreachable {
                        brokers: brokers.to_string(),
                        timeout,
                        last_error: error.to_string(),
                    });
                }
                tracing::warn!(
                    brokers,
                    %error,
                    waited_s = started.elapsed().as_secs(),
                    timeout_s = timeout.as_secs(),
                    "kafka brokers not reachable yet; retrying"
                );
                // A refused connection fails at once: pace the attempts.
                let spent = started.elapsed();
                std::thread::sleep(Duration::from_millis(500).min(timeout.saturating_sub(spent)));
            }
        }
    }
}

/// Whether `error` means no broker could be reached at all (as opposed to a refusal).
fn is_unreachable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode;
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
        ) | None
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_gives_up_after_the_timeout_with_a_clear_error() {
        let started = Instant::now();
        let error =
            wait_for_brokers("127.0.0.1:1", &BTreeMap::new(), Duration::from_secs(3)).unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("cannot reach the Kafka brokers 127.0.0.1:1 within 3s"),
            "{message}"
        );
    }
}
