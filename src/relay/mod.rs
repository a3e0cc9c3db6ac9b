//! Moving streams between servers: pushing published streams to other RTMP servers
//! (platforms, other relays), and pulling streams from an origin as an edge. Both are
//! outbound RTMP clients on the stream's owner shard; they implement the shard's
//! `SinkFactory` (push) and `UpstreamFactory` (pull).

pub mod pull;
pub mod push;

use std::net::{SocketAddr, ToSocketAddrs};

use crate::protocol::session::SessionError;
use crate::protocol::url::RtmpUrl;
use crate::shard::io::{Conn, HandshakeError};
use crate::tls::ClientTls;

/// Why an outbound session (push or pull) ended; shown as `last_error` and logged.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("resolve: {0}")]
    Resolve(std::io::Error),
    #[error("resolve: no address")]
    NoAddress,
    #[error("resolver thread died")]
    ResolverGone,
    #[error("connect timeout")]
    ConnectTimeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] HandshakeError),
    #[error("TLS handshake timeout")]
    TlsTimeout,
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("write stalled for {0} s")]
    WriteStalled(u64),
    #[error("{0}")]
    Protocol(#[from] SessionError),
    #[error("publish start timeout")]
    StartTimeout,
    #[error("closed by destination before Publish.Start")]
    ClosedBeforeStart,
    #[error("refused: {0}")]
    Refused(String),
    #[error("closed by destination")]
    ClosedByDestination,
    #[error("origin refused: {0}")]
    OriginRefused(String),
    #[error("origin closed the connection")]
    OriginClosed,
    #[error("no media from origin")]
    NoMedia,
    #[error("origin stalled")]
    OriginStalled,
}

/// Resolves a peer's host off the shard thread: getaddrinfo blocks, and a shard is an
/// event loop serving thousands of sockets.
pub async fn resolve(url: &RtmpUrl) -> Result<SocketAddr, RelayError> {
    let authority = url.authority();
    if let Ok(addr) = authority.parse() {
        return Ok(addr); // a literal address needs no lookup (and no thread)
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = authority
            .to_socket_addrs()
            .map_err(RelayError::Resolve)
            .and_then(|mut a| a.next().ok_or(RelayError::NoAddress));
        let _ = tx.send(r);
    });
    rx.await.map_err(|_| RelayError::ResolverGone)?
}

/// Data a relay peer leaves unacknowledged this long fails the connection
/// (`TCP_USER_TIMEOUT`): a destination or origin cut off by the network is noticed and
/// retried with backoff, instead of TCP retransmitting into silence for many minutes, or the
/// stream resuming late by itself only after the retransmission backoff. Matches the pull's
/// silence timeout.
const UNACKED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn fail_unacked_after(tcp: &tokio_uring::net::TcpStream, after: std::time::Duration) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `tcp`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    if let Err(e) = socket2::SockRef::from(&fd).set_tcp_user_timeout(Some(after)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
}

/// Connects to `url` within `timeout` (resolving off the shard) on the shard's runtime. An
/// `rtmps://` URL also runs the TLS handshake, verifying the server against `trust` (the
/// public roots when None), within the same time.
pub async fn connect(
    url: &RtmpUrl,
    timeout: std::time::Duration,
    trust: Option<&ClientTls>,
) -> Result<Conn, RelayError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addr = resolve(url).await?;
    let tcp = tokio::time::timeout_at(deadline, tokio_uring::net::TcpStream::connect(addr))
        .await
        .map_err(|_| RelayError::ConnectTimeout)?
        .map_err(RelayError::Connect)?;
    fail_unacked_after(&tcp, UNACKED_TIMEOUT);
    if !url.tls {
        return Ok(Conn::new(tcp));
    }
    let session = match trust {
        Some(t) => t.session(&url.host),
        None => ClientTls::public().session(&url.host),
    }
    .map_err(HandshakeError::from)?;
    let conn = Conn::with_tls(tcp, session);
    // Timed out, failed, or this future dropped by the caller: the socket closes now.
    let guard = conn.shutdown_guard();
    tokio::time::timeout_at(deadline, conn.tls_handshake())
        .await
        .map_err(|_| RelayError::TlsTimeout)??;
    guard.disarm();
    Ok(conn)
}
