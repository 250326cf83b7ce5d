//! Optional HTTPS with rustls from PEM certificate and key files, re-read when they change.
//!
//! The certificate lives behind a [`ResolvesServerCert`] whose current key is swapped in
//! place, so a renewed certificate (cert-manager, a rotated Secret) is served to new
//! connections without a restart and without dropping open ones. The directories are watched
//! rather than the files, because Secrets and editors replace files by renaming over them; a
//! new pair that does not load is logged and the previous certificate stays.
//!
//! Errors name the files, never their content: the key is a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::Watcher;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// File events closer together than this are one change (a cert and its key are usually
/// written one after the other).
const COALESCE: Duration = Duration::from_millis(250);

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no readable PEM certificate.
    #[error("http.tls_cert_file {path}: no PEM certificate could be read")]
    Certificate {
        /// The file.
        path: String,
    },
    /// The key file holds no readable PEM private key.
    #[error("http.tls_key_file {path}: no PEM private key could be read")]
    Key {
        /// The file.
        path: String,
    },
    /// The key is of a kind rustls cannot sign with, or does not match the certificate.
    #[error("http.tls_key_file {path}: the key is unsupported or does not match the certificate")]
    KeyMismatch {
        /// The file.
        path: String,
    },
    /// The TLS settings could not be built.
    #[error("tls settings: {0}")]
    Settings(String),
    /// The certificate directory cannot be watched.
    #[error("cannot watch the tls files: {0}")]
    Watch(#[from] notify::Error),
}

/// Reads the certificate chain and key into a key rustls signs with.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certificate_error = || TlsError::Certificate {
        path: cert_path.display().to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|_| certificate_error())?
        .collect::<Result<_, _>>()
        .map_err(|_| certificate_error())?;
    if chain.is_empty() {
        return Err(certificate_error());
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|_| TlsError::Key {
        path: key_path.display().to_string(),
    })?;
    let mismatch = || TlsError::KeyMismatch {
        path: key_path.display().to_string(),
    };
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| mismatch())?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| mismatch())?;
    Ok(certified)
}

/// The certificate being served, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCertificate {
    /// Serves `initial` until [`ReloadingCertificate::replace`].
    pub fn new(initial: CertifiedKey) -> ReloadingCertificate {
        ReloadingCertificate {
            current: RwLock::new(Arc::new(initial)),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a complete Arc: serving it beats failing handshakes.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `next` to new connections; returns whether the certificate chain changed.
    fn replace(&self, next: CertifiedKey) -> bool {
        let changed = self.current().cert != next.cert;
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(next);
        changed
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certificate files and what serves them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// The certificate being served.
    pub certificate: Arc<ReloadingCertificate>,
}

impl TlsFiles {
    /// Loads the pair once (an error stops the service from starting).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsFiles, TlsError> {
        let initial = load_certified_key(cert_path, key_path)?;
        Ok(TlsFiles {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            certificate: Arc::new(ReloadingCertificate::new(initial)),
        })
    }

    /// The TLS acceptor (HTTP/1.1 only: the header-read timeout is an HTTP/1 setting).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Settings(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the pair whenever something in their directories changes, until `cancel`.
    pub fn watch(
        &self,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, TlsError> {
        let (event_sender, mut event_receiver) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    return;
                };
                // Our own reads yield access events: only writes, creations, renames and removals
                // can change the pair.
                let may_change_content = !matches!(
                    event.kind,
                    notify::EventKind::Access(_)
                        | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                );
                if may_change_content {
                    let _ = event_sender.send(());
                }
            })?;
        let mut directories: Vec<PathBuf> = [&self.cert_path, &self.key_path]
            .iter()
            .map(|path| match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        directories.dedup();
        for directory in &directories {
            watcher.watch(directory, notify::RecursiveMode::NonRecursive)?;
        }
        let files = self.clone();
        Ok(tokio::spawn(async move {
            // The watcher stops when dropped: keep it alive for the task's lifetime.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    received = event_receiver.recv() => {
                        if received.is_none() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(COALESCE).await;
                while event_receiver.try_recv().is_ok() {}
                files.reload();
            }
        }))
    }

    /// Loads the pair again and serves it if it is valid.
    fn reload(&self) {
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(next) => {
                if self.certificate.replace(next) {
                    tracing::info!(cert = %self.cert_path.display(), "tls certificate reloaded");
                }
            }
            Err(error) => {
                tracing::error!(%error, "tls files rejected; the previous certificate stays");
            }
        }
    }
}
