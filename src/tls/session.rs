//! One TLS connection as a state machine: ciphertext in, plaintext out; plaintext in,
//! ciphertext out. The caller owns the socket and decides when to read and write.

use std::io::{IoSlice, Read, Write};
use std::sync::Arc;

use super::TlsError;

/// Most plaintext kept between a feed and the reads that take it: one socket read's worth
/// plus a record, so what a peer can make us hold is bounded by our own read size.
const MAX_RECORD: usize = 16 * 1024 + 256;

/// A TLS connection (server or client side) with the plaintext it decrypted and nobody
/// read yet.
pub struct TlsSession {
    conn: rustls::Connection,
    plain: Vec<u8>,
    /// How much of `plain` was already read.
    plain_pos: usize,
    peer_closed: bool,
    /// A failure found while decrypting, reported once the plaintext before it was read.
    failed: Option<TlsError>,
}

/// What a finished handshake agreed on (for the API, logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsInfo {
    /// `TLSv1_3` / `TLSv1_2`.
    pub version: &'static str,
    /// e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// The name the client asked for (server side).
    pub sni: Option<Box<str>>,
}

impl TlsSession {
    pub fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, TlsError> {
        let conn = rustls::ServerConnection::new(config)?;
        Ok(Self::wrap(conn.into()))
    }

    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, TlsError> {
        let conn = rustls::ClientConnection::new(config, name)?;
        Ok(Self::wrap(conn.into()))
    }

    fn wrap(mut conn: rustls::Connection) -> Self {
        // We bound what we seal per step ourselves; rustls' own limit would make a write
        // silently short.
        conn.set_buffer_limit(None);
        Self {
            conn,
            plain: Vec::new(),
            plain_pos: 0,
            peer_closed: false,
            failed: None,
        }
    }

    /// Takes ciphertext from the socket, all of it, decrypting what completes records.
    /// Handshake replies wait in the session (`wants_write`). A failure comes back at once
    /// when nothing was decrypted before it; else after that plaintext (`take_failure`).
    pub fn feed(&mut self, mut cipher: &[u8]) -> Result<(), TlsError> {
        while !cipher.is_empty() && self.failed.is_none() {
            // Reads at most one buffer's worth; loop until the socket bytes are all in.
            let step = match self.conn.read_tls(&mut cipher) {
                Ok(0) => Err(TlsError::Stuck),
                Ok(_) => self.conn.process_new_packets().map_err(TlsError::from),
                Err(e) => Err(TlsError::Read(e.to_string())),
            };
            // Records before a bad one were decrypted: they are the peer's last words.
            self.drain_plaintext();
            match step {
                Ok(state) if state.peer_has_closed() => {
                    self.peer_closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => self.failed = Some(e),
            }
        }
        if !self.has_plain() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The failure `feed` kept back while plaintext before it waited to be read.
    pub fn take_failure(&mut self) -> Option<TlsError> {
        if self.has_plain() {
            None
        } else {
            self.failed.take()
        }
    }

    /// Moves what rustls decrypted into `plain` (sized by what arrived, not by a record).
    fn drain_plaintext(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            let got = self.conn.reader().read(&mut chunk).unwrap_or(0);
            if got == 0 {
                return;
            }
            if self.plain_pos == self.plain.len() {
                self.plain.clear();
                self.plain_pos = 0;
            }
            self.plain.extend_from_slice(&chunk[..got]);
        }
    }

    /// Copies decrypted bytes out; 0 when there are none.
    pub fn read_plain(&mut self, out: &mut [u8]) -> usize {
        let avail = &self.plain[self.plain_pos..];
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
            // A publisher's burst can grow it; an idle viewer should not keep that.
            if self.plain.capacity() > 4 * MAX_RECORD {
                self.plain = Vec::new();
            }
        }
        n
    }

    pub fn has_plain(&self) -> bool {
        self.plain_pos < self.plain.len()
    }

    /// The peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Encrypts `bufs` as one run of records (full-size records across buffer boundaries,
    /// not one per buffer). The ciphertext waits for `write_to`.
    pub fn seal(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut done = 0;
        let mut rest: Vec<IoSlice<'_>> = bufs.to_vec();
        while done < total {
            let n = self.conn.writer().write_vectored(&rest)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
            let mut skip = n;
            let mut whole = 0;
            while whole < rest.len() && skip >= rest[whole].len() {
                skip -= rest[whole].len();
                whole += 1;
            }
            rest.drain(..whole);
            if skip > 0 {
                rest[0].advance(skip);
            }
        }
        Ok(())
    }

    /// Ciphertext waiting to go out (handshake flights, sealed records, alerts).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Moves waiting ciphertext into `out`.
    pub fn write_to(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break; // a Vec never refuses; nothing else can fail here
            }
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Queues a close_notify alert (a polite close).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// What the handshake agreed on; None while it runs.
    pub fn info(&self) -> Option<TlsInfo> {
        if self.conn.is_handshaking() {
            return None;
        }
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1_3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1_2",
            _ => "other",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let sni = match &self.conn {
            rustls::Connection::Server(s) => s.server_name().map(Into::into),
            rustls::Connection::Client(_) => None,
        };
        Some(TlsInfo {
            version,
            cipher,
            sni,
        })
    }
}
