//! The only place that touches tokio-uring sockets: read, vectored write of shared
//! buffers, shutdown, and fd hand-off. Keeping it thin lets the runtime be swapped. A TLS
//! connection carries its sans-IO session here: reads come back decrypted and writes go
//! out sealed, so the RTMP code above is the same for both.

use std::cell::RefCell;
use std::io;
use std::io::IoSlice;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use tokio_uring::net::TcpStream;

use crate::fanout::queue::MAX_IOVECS;
use crate::tls::{TlsError, TlsInfo, TlsSession};

pub struct Conn {
    stream: TcpStream,
    /// Boxed: plain connections (most of them) pay one pointer.
    tls: Option<Box<RefCell<TlsSession>>>,
}

/// Why a TLS handshake did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection during the TLS handshake")]
    Closed,
}

impl HandshakeError {
    /// Label for the handshake failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Tls(e) => e.reason(),
            HandshakeError::Io(_) | HandshakeError::Closed => "closed",
        }
    }
}

/// Plaintext sealed per socket write: one full TLS record, which carries a whole batch at
/// usual bitrates and write budgets; a join burst (a GOP) takes several writes instead of a
/// large buffer per joining viewer.
const SEAL_STEP: usize = 16 * 1024;
/// Ciphertext buffers kept per shard for reuse; a writer holds one only while it writes.
const POOL_KEEP: usize = 64;
/// How long a closing TLS connection tries to deliver its close_notify.
const CLOSE_NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    static OUT_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_out() -> Vec<u8> {
    OUT_POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SEAL_STEP + 512))
}

fn give_out(mut v: Vec<u8>) {
    // One huge frame may have grown it; keep only ordinary ones.
    if v.capacity() <= 2 * SEAL_STEP {
        v.clear();
        OUT_POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_KEEP {
                p.push(v);
            }
        });
    }
}

/// See [`Conn::shutdown_guard`].
pub struct ShutdownGuard {
    fd: RawFd,
    armed: bool,
}

impl ShutdownGuard {
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: shutdown(2) on the socket of a Conn that outlives this guard.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
    }
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        // We batch writes ourselves (whole messages, coalescing budget); Nagle would only
        // add delay on top.
        let _ = stream.set_nodelay(true);
        Self { stream, tls: None }
    }

    /// A connection whose bytes pass through `session` (handshake still to run).
    pub fn with_tls(stream: TcpStream, session: TlsSession) -> Self {
        let mut c = Self::new(stream);
        c.tls = Some(Box::new(RefCell::new(session)));
        c
    }

    /// Lets the kernel merge small writes (Nagle), trading up to an RTT of delay for fewer
    /// segments when every frame is written as it arrives.
    pub fn set_nodelay(&self, on: bool) {
        let _ = self.stream.set_nodelay(on);
    }

    /// Adopts a socket handed over from another shard, with its TLS session if it has one.
    pub fn from_fd(fd: OwnedFd, tls: Option<Box<TlsSession>>) -> Self {
        let std = std::net::TcpStream::from(fd);
        let mut c = Self::new(TcpStream::from_std(std));
        c.tls = tls.map(|t| Box::new(RefCell::new(*t)));
        c
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Version, cipher and SNI once the handshake finished.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.tls.as_ref().and_then(|t| t.borrow().info())
    }

    /// Runs the TLS handshake to the end (no-op on a plain connection). The caller bounds
    /// it in time. Nothing else may read or write meanwhile.
    pub async fn tls_handshake(&self) -> Result<(), HandshakeError> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let mut buf = vec![0u8; 4096];
        loop {
            self.flush_tls(tls).await?;
            if !tls.borrow().is_handshaking() {
                return Ok(());
            }
            let (res, b) = self.stream.read(buf).await;
            buf = b;
            let n = res?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            let fed = tls.borrow_mut().feed(&buf[..n]);
            if let Err(e) = fed {
                // Tell the peer why (an alert), best effort.
                let _ = self.flush_tls(tls).await;
                return Err(e.into());
            }
        }
    }

    async fn flush_tls(&self, tls: &RefCell<TlsSession>) -> io::Result<()> {
        let mut out = take_out();
        tls.borrow_mut().write_to(&mut out);
        if out.is_empty() {
            give_out(out);
            return Ok(());
        }
        let (res, out) = self.stream.write_all(out).await;
        give_out(out);
        res
    }

    /// On a TLS connection, sends close_notify (best effort, within a second): the orderly
    /// end a TLS peer expects before the socket closes. Nothing else may write meanwhile.
    pub async fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().close();
            let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, self.flush_tls(tls)).await;
        }
    }

    /// Reads what the peer sent, decrypted on a TLS connection. Ok(0) at end of stream.
    pub async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let Some(tls) = &self.tls else {
            return self.stream.read(buf).await;
        };
        let mut buf = buf;
        loop {
            {
                let mut t = tls.borrow_mut();
                if t.has_plain() {
                    let n = t.read_plain(&mut buf);
                    return (Ok(n), buf);
                }
                if let Some(e) = t.take_failure() {
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf);
                }
                if t.peer_closed() {
                    return (Ok(0), buf);
                }
            }
            let (res, b) = self.stream.read(buf).await;
            buf = b;
            match res {
                Ok(0) => return (Ok(0), buf),
                Ok(n) => {
                    if let Err(e) = tls.borrow_mut().feed(&buf[..n]) {
                        return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf);
                    }
                }
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// TLS bytes wait to go out that no queued buffer will carry (e.g. a key update
    /// answered while reading).
    pub fn has_pending_output(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.borrow().wants_write())
    }

    /// Writes every buffer, in order, however many partial writes it takes. Hands the
    /// (emptied) vector back so the caller can reuse its allocation.
    pub async fn writev_all(&self, bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        match &self.tls {
            None => self.writev_plain(bufs).await,
            // Boxed: inline, the sealing state would grow every plain connection's writer
            // future too (by ~170 bytes, for the life of each viewer).
            Some(tls) => Box::pin(self.write_sealed(tls, bufs)).await,
        }
    }

    async fn writev_plain(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        while !bufs.is_empty() {
            let rest = if bufs.len() > MAX_IOVECS {
                bufs.split_off(MAX_IOVECS)
            } else {
                Vec::new()
            };
            let (res, mut sent) = self.stream.writev(bufs).await;
            let mut n = match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), sent),
                Ok(n) => n,
                Err(e) => return (Err(e), sent),
            };
            // Drop what went out, trim the partly written buffer, keep the rest in order.
            let mut first = 0;
            while first < sent.len() && n >= sent[first].len() {
                n -= sent[first].len();
                first += 1;
            }
            sent.drain(..first);
            if n > 0 {
                if let Some(b) = sent.first_mut() {
                    *b = Bytes::slice(b, n..);
                }
            }
            sent.extend(rest);
            bufs = sent;
        }
        (Ok(()), bufs)
    }

    /// Seals the batch a step at a time (full-size records across buffers, not one per
    /// frame; a large frame is cut into steps too) into a pooled buffer and writes each step
    /// whole, so a viewer never holds more than one step of ciphertext.
    async fn write_sealed(
        &self,
        tls: &RefCell<TlsSession>,
        mut bufs: Vec<Bytes>,
    ) -> (io::Result<()>, Vec<Bytes>) {
        let mut out = take_out();
        // Position in the batch: buffer index and offset into it.
        let (mut next, mut off) = (0, 0);
        let result = loop {
            let sealed = {
                let mut t = tls.borrow_mut();
                let mut slices: Vec<IoSlice<'_>> = Vec::new();
                let mut size = 0;
                while next < bufs.len() && size < SEAL_STEP {
                    let b = &bufs[next][off..];
                    let take = b.len().min(SEAL_STEP - size);
                    slices.push(IoSlice::new(&b[..take]));
                    size += take;
                    if take == b.len() {
                        (next, off) = (next + 1, 0);
                    } else {
                        off += take;
                    }
                }
                let sealed = if slices.is_empty() {
                    Ok(())
                } else {
                    t.seal(&slices)
                };
                // Even after a failure: rustls may have queued an alert saying why.
                t.write_to(&mut out);
                sealed
            };
            if let Err(e) = sealed {
                if !out.is_empty() {
                    let (_, o) = self.stream.write_all(out).await;
                    out = o;
                }
                break Err(e);
            }
            if out.is_empty() {
                break Ok(());
            }
            let (res, o) = self.stream.write_all(out).await;
            out = o;
            out.clear();
            if let Err(e) = res {
                break Err(e);
            }
            if next >= bufs.len() && !tls.borrow().wants_write() {
                break Ok(());
            }
        };
        give_out(out);
        bufs.clear();
        (result, bufs)
    }

    /// A guard that shuts this socket when dropped unless disarmed. For a future that owns
    /// the connection through a handshake and may be dropped (a timeout, a stop): the read
    /// it left in flight would otherwise keep the socket open until the peer spoke. Declare
    /// it after the `Conn`, so it drops first.
    pub fn shutdown_guard(&self) -> ShutdownGuard {
        ShutdownGuard {
            fd: self.stream.as_raw_fd(),
            armed: true,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Closes both directions now; in-flight reads complete instead of pinning the fd.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Duplicates the fd for a hand-off and drops this stream; the TLS session (if any)
    /// goes along. No op may be in flight.
    pub fn into_parts(self) -> io::Result<(OwnedFd, Option<Box<TlsSession>>)> {
        // SAFETY: fcntl on a valid fd we own; the result is a fresh fd we take ownership of.
        let dup = unsafe { libc::fcntl(self.stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a new, valid, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        Ok((fd, self.tls.map(|t| Box::new(t.into_inner()))))
    }
}
