//! The uploader's HTTP/1.1 client (hyper), over TCP or TLS (tokio-rustls with the same
//! roots as RTMPS pushes), keeping idle connections per origin for the next request. It
//! runs only on the uploader's own runtime.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::StorageError;
use crate::tls::ClientTls;

/// What an answer's body may hold (errors and small JSON); more is cut off.
const MAX_BODY: usize = 64 * 1024;
/// Idle connections kept per origin.
const MAX_IDLE: usize = 8;

/// `http(s)://host:port` of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn parse(endpoint: &str) -> Result<Origin, StorageError> {
        let bad = |why: &str| StorageError::Url {
            url: endpoint.to_string(),
            why: why.to_string(),
        };
        let (https, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("not an http(s) URL"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
                Ok(p) => (h, p),
                Err(_) if rest.starts_with('[') && rest.ends_with(']') => (rest, 0),
                Err(_) => return Err(bad("bad port")),
            },
            _ => (rest, 0),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = if port == 0 {
            if https {
                443
            } else {
                80
            }
        } else {
            port
        };
        Ok(Origin {
            https,
            host: host.to_string(),
            port,
        })
    }

    /// The Host header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        if self.port == if self.https { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same origin under another host name (S3 virtual-hosted buckets).
    pub fn with_host(&self, host: String) -> Origin {
        Origin {
            host,
            ..self.clone()
        }
    }
}

/// A response: its status and (up to [`MAX_BODY`] of) its body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// A request body: bytes in memory, or a file read as it is sent.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An in-memory body.
pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// What a file body reads per frame: big enough for few syscalls, small enough to stay
/// off the heap's large-allocation path.
const FILE_CHUNK: usize = 256 << 10;

/// `head`, then `len` bytes of `file` (read as they are sent), then `tail`: an upload of
/// a recording, possibly framed (a GCS multipart body), without holding it in memory.
pub fn file_body(head: Bytes, file: std::fs::File, len: u64, tail: Bytes) -> Body {
    FileBody {
        head: Some(head),
        file,
        left: len,
        tail: Some(tail),
    }
    .boxed()
}

struct FileBody {
    head: Option<Bytes>,
    file: std::fs::File,
    left: u64,
    tail: Option<Bytes>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(h) = self.head.take().filter(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if self.left > 0 {
            // A local disk read on the uploader's own thread (never a shard's).
            let mut buf = vec![0; FILE_CHUNK.min(self.left as usize)];
            return Poll::Ready(Some(match self.file.read(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    self.left -= n as u64;
                    Ok(Frame::data(Bytes::from(buf)))
                }
                Err(e) => Err(e),
            }));
        }
        match self.tail.take().filter(|t| !t.is_empty()) {
            Some(t) => Poll::Ready(Some(Ok(Frame::data(t)))),
            None => Poll::Ready(None),
        }
    }
}

type Sender = SendRequest<Body>;

pub struct HttpClient {
    tls: ClientTls,
    timeout: Duration,
    idle: Mutex<HashMap<Origin, Vec<Sender>>>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl HttpClient {
    pub fn new(tls: ClientTls, timeout: Duration) -> Self {
        Self {
            tls,
            timeout,
            idle: Mutex::default(),
        }
    }

    /// Sends `req` to `origin` (on an idle connection if one is left), within the timeout.
    pub async fn send(&self, origin: &Origin, req: Request<Body>) -> Result<Reply, StorageError> {
        self.send_within(origin, req, self.timeout).await
    }

    /// `send` with `extra` time, for a body that takes a while to send (a recording).
    pub async fn send_within(
        &self,
        origin: &Origin,
        req: Request<Body>,
        extra: Duration,
    ) -> Result<Reply, StorageError> {
        let limit = self.timeout + extra;
        match tokio::time::timeout(limit, self.exchange(origin, req)).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::Timeout(limit)),
        }
    }

    async fn exchange(&self, origin: &Origin, req: Request<Body>) -> Result<Reply, StorageError> {
        // An idle connection the server has closed meanwhile is not ready: open another.
        let idle = match self.take_idle(origin) {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match idle {
            Some(s) => s,
            None => self.connect(origin).await?,
        };
        let resp = sender.send_request(req).await.map_err(StorageError::http)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes());
        // Only a connection whose answer was read whole can carry the next request.
        let (body, whole) = match body {
            Ok(b) => (b, true),
            Err(_) => (Bytes::new(), false),
        };
        if whole && !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                let list = idle.entry(origin.clone()).or_default();
                if list.len() < MAX_IDLE {
                    list.push(sender);
                }
            }
        }
        Ok(Reply { status, body })
    }

    fn take_idle(&self, origin: &Origin) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(origin)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, StorageError> {
        let lookup = origin.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup, origin.port))
            .await
            .map_err(|e| StorageError::Connect(format!("resolving {}: {e}", origin.host)))?
            .collect();
        let mut last = format!("{} resolved to no address", origin.host);
        let mut tcp = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(StorageError::Connect(last))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if origin.https {
            let name = ServerName::try_from(lookup.to_string())
                .map_err(|_| StorageError::Connect(format!("bad TLS name {lookup}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.rustls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| StorageError::Connect(format!("TLS with {}: {e}", origin.host)))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(StorageError::http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = Origin::parse("http://127.0.0.1:18333").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port),
            (false, "127.0.0.1", 18333)
        );
        assert_eq!(o.authority(), "127.0.0.1:18333");
        let o = Origin::parse("https://s3.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(
            (o.port, o.authority().as_str()),
            (443, "s3.eu-west-1.amazonaws.com")
        );
        let o = Origin::parse("http://[::1]:9000").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("[::1]", 9000));
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("http://h:port").is_err());
    }
}
