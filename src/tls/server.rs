//! The server side: certificates from PEM files, picked by SNI, swapped on reload while
//! connections made with the old ones go on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{provider, TlsError, TlsSession};

/// One certificate: its chain and key files, and the names it serves (empty: the default,
/// for clients whose SNI matches nothing or who send none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    #[serde(default)]
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Server TLS settings shared by every shard; `reload` swaps the certificates in place.
#[derive(Debug, Clone)]
pub struct Acceptor {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<SniCerts>,
}

impl Acceptor {
    pub fn new(certs: &[CertConfig]) -> Result<Self, TlsError> {
        let resolver = Arc::new(SniCerts {
            set: RwLock::new(Arc::new(CertSet::load(certs)?)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // RTMP clients reconnect with a full handshake; tickets would only cost bytes.
        config.send_tls13_tickets = 0;
        Ok(Self {
            config: Arc::new(config),
            certs: resolver,
        })
    }

    /// Reads every file again; on any error the old certificates stay.
    pub fn reload(&self, certs: &[CertConfig]) -> Result<(), TlsError> {
        let prepared = Self::prepare(certs)?;
        self.install(prepared);
        Ok(())
    }

    /// Loads and checks certificates without using them yet (a reload that may still be
    /// called off by another part of the configuration).
    pub fn prepare(certs: &[CertConfig]) -> Result<PreparedCerts, TlsError> {
        Ok(PreparedCerts(CertSet::load(certs)?))
    }

    /// New handshakes use these certificates from now on.
    pub fn install(&self, certs: PreparedCerts) {
        *self.certs.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certs.0);
    }

    pub fn session(&self) -> Result<TlsSession, TlsError> {
        TlsSession::server(self.config.clone())
    }
}

/// Certificates loaded by [`Acceptor::prepare`], not in use yet.
#[derive(Debug)]
pub struct PreparedCerts(CertSet);

#[derive(Debug)]
struct SniCerts {
    set: RwLock<Arc<CertSet>>,
}

#[derive(Debug, Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn load(certs: &[CertConfig]) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut set = CertSet::default();
        for c in certs {
            let key = Arc::new(load_pair(&c.cert, &c.key)?);
            if c.names.is_empty() {
                set.default.get_or_insert_with(|| key.clone());
            }
            for name in &c.names {
                let name = name.to_ascii_lowercase();
                let bad = |message: &str| TlsError::File {
                    path: c.cert.clone(),
                    message: format!("names: {name:?} {message}"),
                };
                let (map, key_name) = match name.strip_prefix("*.") {
                    Some(domain) => (&mut set.wildcard, domain.to_string()),
                    None => (&mut set.exact, name.clone()),
                };
                if key_name.is_empty() || key_name.contains('*') {
                    return Err(bad("is not a host name or *.domain wildcard"));
                }
                if map.insert(key_name, key.clone()).is_some() {
                    return Err(bad("is served by two certificates"));
                }
            }
        }
        // Without an explicit default, the first certificate answers unknown names.
        if set.default.is_none() {
            set.default = Some(Arc::new(load_pair(&certs[0].cert, &certs[0].key)?));
        }
        Ok(set)
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner()).clone();
        set.pick(hello.server_name())
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let file_err = |path: &Path, message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    CertifiedKey::from_der(chain, der, &provider())
        .map_err(|e| file_err(key, format!("key does not fit {}: {e}", cert.display())))
}
