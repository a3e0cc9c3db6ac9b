//! The client side, for pushes to and pulls from `rtmps://` servers: the Mozilla roots
//! (webpki-roots) plus an optional CA file per target, for private relays and tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{provider, TlsError, TlsSession};

/// Trust settings for outbound TLS. Equal when they trust the same roots (the CA file's
/// path and contents), so a reload can tell whether a destination changed.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    ca: Option<(PathBuf, Vec<u8>)>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
    }
}

impl ClientTls {
    /// The public roots, plus the certificates in `ca_file` (read now).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let Some(path) = ca_file else {
            return Ok(Self::public());
        };
        let file_err = |message: String| TlsError::File {
            path: path.to_path_buf(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
        let mut roots = public_roots();
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| file_err(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| file_err(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(file_err("no CERTIFICATE in the file".into()));
        }
        Ok(Self {
            config: build(roots)?,
            ca: Some((path.to_path_buf(), pem)),
        })
    }

    /// The public roots only (shared by every target without a CA file).
    pub fn public() -> Self {
        static PUBLIC: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        let config = PUBLIC
            .get_or_init(|| build(public_roots()).expect("ring supports the default versions"))
            .clone();
        Self { config, ca: None }
    }

    /// A client session for `host`: its name is sent as SNI (an IP address is verified
    /// against the certificate's IP names instead; SNI cannot carry one).
    pub fn session(&self, host: &str) -> Result<TlsSession, TlsError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.to_string()))?;
        TlsSession::client(self.config.clone(), name)
    }

    /// The rustls configuration, for clients that drive TLS through tokio-rustls (the
    /// storage uploader's HTTPS).
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(p, _)| p.as_path())
    }
}

fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn build(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
