//! TLS for RTMPS, sans-IO: rustls connections fed with ciphertext and asked for
//! ciphertext, never touching a socket (the shard's io layer does). Owns the server's
//! certificate store (SNI, reload), the client trust settings for pushes and pulls, and the
//! names of handshake failures.

mod client;
mod server;
mod session;

use std::path::PathBuf;

pub use client::ClientTls;
pub use server::{Acceptor, CertConfig, PreparedCerts};
pub use session::{TlsInfo, TlsSession};

/// A TLS record layer or handshake failure, or a certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("no certificate configured")]
    NoCertificate,
    #[error("bad server name {0:?}")]
    ServerName(String),
    #[error("TLS input refused: {0}")]
    Read(String),
    #[error("TLS input not consumed")]
    Stuck,
}

impl TlsError {
    /// Short label for the `rtmp_tls_handshake_failures_total` counter.
    pub fn reason(&self) -> &'static str {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match self {
            TlsError::Tls(e) => match e {
                E::InvalidMessage(_) | E::PeerSentOversizedRecord => "not_tls",
                E::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
                E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "cert_expired",
                E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    "cert_name_mismatch"
                }
                E::InvalidCertificate(_) | E::NoCertificatesPresented => "bad_certificate",
                E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => {
                    "peer_rejected_certificate"
                }
                E::AlertReceived(_) => "alert_received",
                E::PeerIncompatible(_) => "incompatible",
                E::General(_) => "no_certificate",
                _ => "other",
            },
            TlsError::Read(_) | TlsError::Stuck => "other",
            TlsError::File { .. } | TlsError::NoCertificate | TlsError::ServerName(_) => "config",
        }
    }
}

/// Every reason `TlsError::reason` gives, plus "timeout" and "closed" (the caller's
/// deadline, the peer hanging up), so the counters can be exported at zero.
pub const FAILURE_REASONS: [&str; 13] = [
    "not_tls",
    "timeout",
    "closed",
    "config",
    "unknown_ca",
    "cert_expired",
    "cert_name_mismatch",
    "bad_certificate",
    "peer_rejected_certificate",
    "alert_received",
    "incompatible",
    "no_certificate",
    "other",
];

/// The crypto provider every config uses. ring builds with a C compiler alone (aws-lc-rs
/// needs more of a toolchain); rustls deprecates it only for lacking post-quantum key
/// exchange, which no RTMPS peer offers today.
#[allow(deprecated)]
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
