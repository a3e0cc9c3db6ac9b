//! Moving streams between servers: pushing published streams to other RTMP servers
//! (platforms, other relays), and pulling streams from an origin as an edge.

pub mod pull;
pub mod push;

use std::net::{SocketAddr, ToSocketAddrs};

use crate::protocol::url::RtmpUrl;

/// Resolves a peer's host off the shard thread: getaddrinfo blocks, and a shard is an
/// event loop serving thousands of sockets.
pub async fn resolve(url: &RtmpUrl) -> Result<SocketAddr, String> {
    let authority = url.authority();
    if let Ok(addr) = authority.parse() {
        return Ok(addr); // a literal address needs no lookup (and no thread)
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = authority
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))
            .and_then(|mut a| a.next().ok_or_else(|| "resolve: no address".to_string()));
        let _ = tx.send(r);
    });
    rx.await.map_err(|_| "resolver thread died".to_string())?
}
