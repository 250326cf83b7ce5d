//! A real tansu broker behind TLS, with SASL when asked, for the Kafka security tests.
//!
//! tansu 0.6.0 cannot serve TLS itself: its `--cert` and `--key` options share a clap group
//! that makes them mutually exclusive ("the argument '--cert <CERT>' cannot be used with
//! '--key <KEY>'"), and its broker enables TLS only with both. So TLS is terminated in front
//! of it by [`TlsTerminator`] (rustls, certificates from a test CA made with `rcgen`), and
//! tansu advertises the terminator's address: every client connection, bootstrap and
//! per-broker, goes through TLS; tansu speaks the Kafka protocol (and SASL) behind it.
//!
//! With `--authentication` tansu 0.6.0 requires SASL, but only SCRAM can be negotiated (a
//! PLAIN handshake ends in `NoSharedMechanism`), and SCRAM credentials can only be stored
//! through an authenticated connection (`tansu user create` is refused with
//! `NotAuthenticated`) in a storage engine that lives in the broker process (memory): no
//! client can ever sign in. So against tansu SASL is exercised up to the broker's
//! authenticator, which refuses it: the wrong-credentials path. librdkafka's mock cluster
//! has no SASL at all (librdkafka 2.12.1's mock handlers answer no SaslHandshake), so a
//! successful SASL sign-in is not proven by a test here (README "Kafka security").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::tansu::TansuBroker;

/// A test CA and a server certificate for `127.0.0.1` and `localhost` signed by it, as PEM
/// files in a temporary directory.
pub struct TestCertificates {
    /// Holds the files.
    pub directory: tempfile::TempDir,
    /// The CA certificate (what clients trust).
    pub ca_path: PathBuf,
    /// The server certificate chain (server certificate, then the CA).
    pub server_chain_pem: String,
    /// The server key.
    pub server_key_pem: String,
    /// An unrelated CA that signed nothing here (clients trusting only it must refuse).
    pub other_ca_path: PathBuf,
}

impl TestCertificates {
    /// Generates a CA, a server certificate, and an unrelated CA.
    pub fn generate() -> TestCertificates {
        let directory = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gridwatch test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let server_certificate = server_params.signed_by(&server_key, &ca).unwrap();

        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other_ca = other_params.self_signed(&other_key).unwrap();

        let ca_path = directory.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let other_ca_path = directory.path().join("other-ca.pem");
        std::fs::write(&other_ca_path, other_ca.pem()).unwrap();
        TestCertificates {
            server_chain_pem: format!("{}{}", server_certificate.pem(), ca.pem()),
            server_key_pem: server_key.serialize_pem(),
            ca_path,
            other_ca_path,
            directory,
        }
    }

    /// Writes the server certificate chain and key (for servers that read files) and returns
    /// their paths.
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        let cert = self.directory.path().join("server.pem");
        let key = self.directory.path().join("server-key.pem");
        std::fs::write(&cert, &self.server_chain_pem).unwrap();
        std::fs::write(&key, &self.server_key_pem).unwrap();
        (cert, key)
    }
}

/// Terminates TLS on a local port and forwards the plaintext to an upstream address, one
/// upstream connection per client connection. Stops when dropped.
pub struct TlsTerminator {
    /// `127.0.0.1:<port>` clients connect to.
    pub address: String,
    /// Stops the accept loop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The thread running the terminator's runtime.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsTerminator {
    /// Binds a free port now (so the broker can advertise it before it starts); forwarding
    /// begins with [`TlsTerminator::forward_to`].
    pub fn bind() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, address)
    }

    /// Serves TLS with `certificates`' server certificate on `listener` and forwards every
    /// connection to `upstream`.
    pub fn forward_to(
        listener: std::net::TcpListener,
        certificates: &TestCertificates,
        upstream: &str,
    ) -> TlsTerminator {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_slice_iter(
                certificates.server_chain_pem.as_bytes(),
            )
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
            certificates.server_key_pem.as_bytes(),
        )
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let address = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let upstream = upstream.to_string();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = &mut stopped => return,
                    };
                    let Ok((client, _)) = accepted else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        // A client that fails the handshake (an untrusted certificate) is
                        // simply dropped, as a TLS broker would.
                        let Ok(mut tls) = acceptor.accept(client).await else {
                            return;
                        };
                        let Ok(mut broker) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    });
                }
            });
        });
        TlsTerminator {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// tansu behind a [`TlsTerminator`]; with `--authentication` when `sasl` is set.
pub struct SecureBroker {
    /// The terminator: what clients use as `bootstrap.servers`.
    pub tls: TlsTerminator,
    /// The broker behind it (plaintext, loopback only).
    pub broker: TansuBroker,
    /// The CA and server certificate.
    pub certificates: TestCertificates,
}

impl SecureBroker {
    /// Starts the broker (advertising the terminator) and the terminator in front of it.
    pub fn start(binary: &Path, sasl: bool) -> SecureBroker {
        let certificates = TestCertificates::generate();
        let (listener, tls_address) = TlsTerminator::bind();
        let extra: &[&str] = if sasl { &["--authentication"] } else { &[] };
        let broker = TansuBroker::start_with(binary, Some(&tls_address), extra);
        let tls = TlsTerminator::forward_to(listener, &certificates, &broker.address);
        SecureBroker {
            tls,
            broker,
            certificates,
        }
    }

    /// `bootstrap.servers` of the clients: the TLS address.
    pub fn address(&self) -> &str {
        &self.tls.address
    }

    /// The librdkafka properties of a client that trusts the test CA, with `sasl`
    /// (`mechanism`, `user`, `password`) when given.
    pub fn client_properties(
        &self,
        sasl: Option<(&str, &str, &str)>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(
            "ssl.ca.location".to_string(),
            self.certificates.ca_path.display().to_string(),
        );
        match sasl {
            None => {
                properties.insert("security.protocol".to_string(), "ssl".to_string());
            }
            Some((mechanism, user, password)) => {
                properties.insert("security.protocol".to_string(), "sasl_ssl".to_string());
                properties.insert("sasl.mechanism".to_string(), mechanism.to_string());
                properties.insert("sasl.username".to_string(), user.to_string());
                properties.insert("sasl.password".to_string(), password.to_string());
            }
        }
        properties
    }

    /// Creates `topics` (one partition each) through librdkafka's admin API with
    /// `properties` (tansu's own CLI cannot authenticate).
    pub fn create_topics(
        &self,
        properties: &std::collections::BTreeMap<String, String>,
        topics: &[&str],
    ) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        for (key, value) in properties {
            config.set(key, value);
        }
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = config.create().unwrap();
        let new_topics: Vec<NewTopic> = topics
            .iter()
            .map(|topic| NewTopic::new(topic, 1, TopicReplication::Fixed(1)))
            .collect();
        // On a thread of its own: callers may be inside a Tokio runtime already.
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(admin.create_topics(
                        &new_topics,
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
                    ))
                })
                .join()
                .unwrap()
        })
        .unwrap_or_else(|error| {
            panic!(
                "creating topics failed: {error}; tansu log:\n{}",
                self.broker.log()
            )
        });
        for result in results {
            if let Err((topic, error)) = result {
                panic!("creating topic {topic} failed: {error}");
            }
        }
    }
}
