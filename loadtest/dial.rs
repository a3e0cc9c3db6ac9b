//! Where load clients connect: TCP, and for `rtmps://` URLs a TLS handshake on top, so
//! TLS fan-out can be measured with the same viewers and publishers.

use std::net::SocketAddr;
use std::time::Duration;

use rtmp_edge::shard::io::Conn;
use rtmp_edge::tls::ClientTls;

#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `rtmps://`: whom to trust and the name to verify (and send as SNI).
    pub tls: Option<(ClientTls, String)>,
}

/// Connects (and runs the TLS handshake) within `timeout`.
pub async fn dial(t: &Target, timeout: Duration) -> Result<Conn, String> {
    let connect = async {
        let stream = tokio_uring::net::TcpStream::connect(t.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let Some((trust, host)) = &t.tls else {
            return Ok(Conn::new(stream));
        };
        let session = trust.session(host).map_err(|e| format!("tls: {e}"))?;
        let conn = Conn::with_tls(stream, session);
        let guard = conn.shutdown_guard();
        conn.tls_handshake()
            .await
            .map_err(|e| format!("tls handshake: {e}"))?;
        guard.disarm();
        Ok(conn)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| Err("connect timeout".into()))
}
