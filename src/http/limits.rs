//! Per-client rate limit and request timeout, as axum middleware (tower layers).
//!
//! The rate limit keys on the client's IP address (the connection's peer, recorded by the
//! server as a [`ClientAddress`] extension; proxies' forwarding headers are not trusted). It
//! runs before authentication, so that guessing tokens is rate-limited too. The probes
//! `/healthz` and `/readyz` are never limited: a kubelet must always get its answer.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::problem::problem_response;

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Client addresses remembered before idle ones are dropped (bounds the limiter's memory).
const TRACKED_CLIENTS_BEFORE_PRUNING: usize = 10_000;

/// Requests per second and burst per client address.
#[derive(Clone)]
pub struct ClientRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl ClientRateLimit {
    /// A limit of `per_second` requests with bursts of `burst`; `None` when `per_second` is 0
    /// (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<ClientRateLimit> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(ClientRateLimit {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        })
    }

    /// Whether `client` may make one more request now; otherwise how long until it may.
    fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let client = rate_key(client);
        if self.limiter.len() > TRACKED_CLIENTS_BEFORE_PRUNING {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// The address a client is limited as: IPv6 clients by their /64 (one host may use a whole
/// /64, so single addresses would let it multiply its rate), IPv4-mapped ones as IPv4.
pub(crate) fn rate_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

/// Whether `path` is a probe, which is never limited.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Middleware: answers 429 (with `Retry-After`) to a client over its rate.
pub async fn limit_rate(
    State(limit): State<ClientRateLimit>,
    request: Request,
    next: Next,
) -> Response {
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<ClientAddress>()
        .map(|address| address.0)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let Err(wait) = limit.check(client) else {
        return next.run(request).await;
    };
    let mut response = problem_response(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        "this client exceeded its request rate; retry later",
    );
    let retry_after_seconds = wait.as_secs().max(1);
    if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Middleware: answers 503 to a request not answered within the configured time.
pub async fn limit_duration(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Request Timeout",
            "the request was not answered in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_burst_is_refused_and_others_are_not() {
        let Some(limit) = ClientRateLimit::new(1, 3) else {
            panic!("a positive rate is a limit");
        };
        let noisy = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let quiet = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        for _ in 0..3 {
            assert!(limit.check(noisy).is_ok());
        }
        let wait = limit.check(noisy).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check(quiet).is_ok());
    }

    #[test]
    fn ipv6_clients_of_one_64_share_a_limit() {
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let second: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(first), rate_key(second));
        assert_ne!(rate_key(first), rate_key(elsewhere));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(rate_key(mapped), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn a_zero_rate_means_no_limit() {
        assert!(ClientRateLimit::new(0, 10).is_none());
    }

    #[test]
    fn probes_are_never_limited() {
        assert!(is_probe("/healthz"));
        assert!(is_probe("/readyz"));
        assert!(!is_probe("/metrics"));
    }
}
