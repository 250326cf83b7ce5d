//! Who may hold `/api/v1/stream` connections: at most `http.max_streams_per_client` per client
//! address (IPv6 by /64, as the rate limit) and `http.max_streams` in all. A stream is cheap
//! for the pipeline (it never waits for one) but holds a connection slot and a buffer for as
//! long as the client likes, so a client opening thousands is refused with a 429 problem
//! rather than let it take the connection slots of the rest of the API.
//!
//! Metrics: `gridwatch_stream_clients` (streams open now),
//! `gridwatch_stream_clients_refused_total{reason}` (`client_cap`, `total_cap`) and
//! `gridwatch_stream_clients_dropped_total{reason}` (`slow_client`: a client that did not keep
//! up was disconnected), registered on the service's registry by [`StreamMetrics::register`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::problem::ApiError;

/// Why a client was disconnected from a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its buffer filled up or it fell behind the live feed: the client does not keep up.
    SlowClient,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::SlowClient => "slow_client",
        }
    }
}

/// The stream metrics.
#[derive(Debug, Clone)]
pub struct StreamMetrics {
    /// Streams open now.
    pub clients: IntGauge,
    /// Streams refused, by cap.
    pub refused: IntCounterVec,
    /// Streams ended by the server, by reason.
    pub dropped: IntCounterVec,
}

impl StreamMetrics {
    /// Creates the stream metrics and registers them on `registry` (label sets pre-created,
    /// so dashboards see zeros before the first event).
    pub fn register(registry: &Registry) -> Result<StreamMetrics, prometheus::Error> {
        let clients = IntGauge::new(
            "gridwatch_stream_clients",
            "Server-Sent Events clients connected to /api/v1/stream now.",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "gridwatch_stream_clients_refused_total",
                "/api/v1/stream connections refused with 429: client_cap (http.max_streams_per_client) or total_cap (http.max_streams).",
            ),
            &["reason"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "gridwatch_stream_clients_dropped_total",
                "/api/v1/stream clients disconnected by the server: slow_client (its bounded buffer filled or it fell behind the live feed; the pipeline never waits for a client).",
            ),
            &["reason"],
        )?;
        for reason in ["client_cap", "total_cap"] {
            refused.with_label_values(&[reason]);
        }
        dropped.with_label_values(&[DropReason::SlowClient.label()]);
        registry.register(Box::new(clients.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(StreamMetrics {
            clients,
            refused,
            dropped,
        })
    }

    /// Counts a client disconnected for `reason`.
    pub fn count_drop(&self, reason: DropReason) {
        self.dropped.with_label_values(&[reason.label()]).inc();
    }
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// The stream caps and the streams open now.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    per_client: usize,
    total: usize,
    open: Arc<Mutex<OpenStreams>>,
    metrics: StreamMetrics,
}

/// One open stream's place; dropping it (when the stream ends) frees the place.
#[derive(Debug)]
pub struct StreamPermit {
    client: IpAddr,
    open: Arc<Mutex<OpenStreams>>,
    metrics: StreamMetrics,
}

impl StreamLimits {
    /// Caps of `per_client` streams per client address and `total` in all.
    pub fn new(per_client: usize, total: usize, metrics: StreamMetrics) -> StreamLimits {
        StreamLimits {
            per_client,
            total,
            open: Arc::default(),
            metrics,
        }
    }

    /// The metrics the streams report to.
    pub fn metrics(&self) -> &StreamMetrics {
        &self.metrics
    }

    /// A place for one more stream of `client`, or the 429 problem when a cap is reached.
    pub fn admit(&self, client: IpAddr) -> Result<StreamPermit, ApiError> {
        let client = crate::http::limits::rate_key(client);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            self.metrics.refused.with_label_values(&["total_cap"]).inc();
            return Err(ApiError::TooManyStreams(format!(
                "the server holds its maximum of {} streams; retry later",
                self.total
            )));
        }
        let held = open.by_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client {
            self.metrics
                .refused
                .with_label_values(&["client_cap"])
                .inc();
            return Err(ApiError::TooManyStreams(format!(
                "this client already holds its maximum of {} streams; close one first",
                self.per_client
            )));
        }
        open.total += 1;
        open.by_client.insert(client, held + 1);
        self.metrics.clients.inc();
        Ok(StreamPermit {
            client,
            open: self.open.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_client.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_client.remove(&self.client);
            }
        }
        self.metrics.clients.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_client: usize, total: usize) -> (StreamLimits, Registry) {
        let registry = Registry::new();
        let metrics = StreamMetrics::register(&registry).unwrap();
        (StreamLimits::new(per_client, total, metrics), registry)
    }

    #[test]
    fn a_client_over_its_cap_is_refused_while_others_are_served() {
        let (limits, _registry) = limits(2, 10);
        let greedy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(greedy).unwrap();
        let _second = limits.admit(greedy).unwrap();
        let refused = limits.admit(greedy).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(limits.admit(other).is_ok());
        drop(first);
        assert!(
            limits.admit(greedy).is_ok(),
            "a closed stream frees its place"
        );
        assert_eq!(
            limits
                .metrics()
                .refused
                .with_label_values(&["client_cap"])
                .get(),
            1
        );
    }

    #[test]
    fn the_total_cap_holds_across_clients_and_the_gauge_follows_open_streams() {
        let (limits, _registry) = limits(4, 2);
        let a = limits.admit("10.0.0.1".parse().unwrap()).unwrap();
        let _b = limits.admit("10.0.0.2".parse().unwrap()).unwrap();
        assert!(limits.admit("10.0.0.3".parse().unwrap()).is_err());
        assert_eq!(limits.metrics().clients.get(), 2);
        drop(a);
        assert_eq!(limits.metrics().clients.get(), 1);
        assert_eq!(
            limits
                .metrics()
                .refused
                .with_label_values(&["total_cap"])
                .get(),
            1
        );
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_a_client_cap() {
        let (limits, _registry) = limits(1, 10);
        let _held = limits.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(limits.admit("2001:db8:1:2::9".parse().unwrap()).is_err());
        assert!(limits.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}
