//! `gridwatch healthcheck`: the container image's HEALTHCHECK. The runtime image has no curl
//! (nor any HTTP client), so the binary probes its own `/healthz` over loopback with a plain
//! HTTP/1.0 request: no dependency, no shell, and nothing but the status line is read.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a probe could not tell the status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `http.listen` is neither an `ip:port` address nor a `host:port` that resolves.
    #[error("http.listen {0:?} is not an ip:port address nor a host:port that resolves")]
    Listen(String),
    /// Connecting, writing or reading failed (refused, timed out, reset).
    #[error("probing {address}{path}: {source}")]
    Io {
        /// The probed address.
        address: SocketAddr,
        /// The probed path.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The answer did not start with an HTTP status line.
    #[error("{address}{path} did not answer with an HTTP status line")]
    NotHttp {
        /// The probed address.
        address: SocketAddr,
        /// The probed path.
        path: String,
    },
}

/// The address to probe for a listen address: the same port, over loopback when the service
/// listens on every interface (`0.0.0.0` / `::` cannot be connected to). A host name
/// (`localhost:9750`) is resolved here, as the service resolves it when it binds.
pub fn probe_address(listen: &str) -> Result<SocketAddr, ProbeError> {
    use std::net::ToSocketAddrs;
    let mut address: SocketAddr = match listen.parse() {
        Ok(address) => address,
        Err(_) => listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| ProbeError::Listen(listen.to_string()))?,
    };
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(address)
}

/// `GET path` on `address`; the response's status code. Every step is bounded by `timeout`.
pub fn http_status(address: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let io = |source| ProbeError::Io {
        address,
        path: path.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // One write: a request split over several segments could be half-read by a server that
    // answers and closes, which then resets the connection before the answer is read.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line fits in the first bytes: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let Some(rest) = head.get_mut(filled..) else {
            break;
        };
        let read = stream.read(rest).map_err(io)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let not_http = || ProbeError::NotHttp {
        address,
        path: path.to_string(),
    };
    let line =
        std::str::from_utf8(head.get(..filled).unwrap_or_default()).map_err(|_| not_http())?;
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => {
            code.parse().map_err(|_| not_http())
        }
        _ => Err(not_http()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering `response` to the first connection.
    fn answer_once(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Read the whole request before answering: closing with unread bytes would reset
            // the connection and the client could lose the answer.
            let mut request = Vec::new();
            let mut buffer = [0u8; 256];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = stream.write_all(response);
            let _ = stream.shutdown(std::net::Shutdown::Write);
        });
        address
    }

    #[test]
    fn every_interface_is_probed_over_loopback_on_the_same_port_and_names_are_resolved() {
        assert_eq!(
            probe_address("0.0.0.0:9750").unwrap(),
            "127.0.0.1:9750".parse().unwrap()
        );
        assert_eq!(
            probe_address("[::]:9750").unwrap(),
            "[::1]:9750".parse().unwrap()
        );
        assert_eq!(
            probe_address("10.0.0.7:9750").unwrap(),
            "10.0.0.7:9750".parse().unwrap()
        );
        assert!(probe_address("localhost:9750")
            .is_ok_and(|address| address.ip().is_loopback() && address.port() == 9750));
        assert!(matches!(
            probe_address("nowhere"),
            Err(ProbeError::Listen(_))
        ));
    }

    #[test]
    fn the_status_code_of_the_answer_is_returned() {
        let ok = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert_eq!(
            http_status(ok, "/healthz", Duration::from_secs(5)).unwrap(),
            200
        );
        let stalled = answer_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            http_status(stalled, "/healthz", Duration::from_secs(5)).unwrap(),
            503
        );
    }

    #[test]
    fn a_non_http_answer_or_a_closed_port_is_an_error_not_a_status() {
        let garbage = answer_once(b"\x16\x03\x01 not http");
        assert!(matches!(
            http_status(garbage, "/healthz", Duration::from_secs(5)),
            Err(ProbeError::NotHttp { .. })
        ));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            http_status(closed, "/healthz", Duration::from_secs(5)),
            Err(ProbeError::Io { .. })
        ));
    }
}
