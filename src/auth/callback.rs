//! The HTTP callback client: POSTs a JSON description of a publish/play request to a
//! configured `http://` URL and reports the answer's status.
//!
//! Requests run on one process-wide worker thread ("auth-callback") that owns a
//! current-thread tokio runtime with its own I/O and timer drivers. Callers (the io_uring
//! shard threads) only hand a job over an unbounded channel and await a oneshot answer, so
//! no socket of the callback ever lives on a shard runtime and the shard never blocks.
//! The timeout is applied on the worker around resolve + connect + request + response
//! head; the caller's wait is guarded by the same timeout plus a margin, so a dead or stuck
//! worker cannot hang a connection. Jobs in flight are capped ([`MAX_IN_FLIGHT`]); over
//! the cap a request fails (closed) at once instead of queueing without bound.
//!
//! Only plain HTTP/1.1 is spoken (hyper's client connection); there is no TLS client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

use super::params::{RequestParams, MAX_QUERY_LEN};
use super::AuthRequest;

/// Callback requests being worked on at once, process-wide.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Extra time the caller waits beyond the worker's own timeout before giving up on it.
const WORKER_GRACE: Duration = Duration::from_secs(1);

/// Why a callback URL in the config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "https is not supported (there is no TLS client); use an http:// URL, e.g. a local proxy"
    )]
    Https,
    #[error("only http:// URLs are supported")]
    Scheme,
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("no host")]
    NoHost,
    #[error("user info (user:pass@) is not supported")]
    UserInfo,
}

/// Why a callback produced no answer. Every one of these denies (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("callback worker unavailable")]
    WorkerUnavailable,
    #[error("too many callback requests in flight")]
    Busy,
}

/// A parsed callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    url: String,
    /// Host as written (IPv6 in brackets), for resolving.
    host: String,
    port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let lower = url.trim().to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(UrlError::Https);
        }
        if !lower.starts_with("http://") {
            return Err(UrlError::Scheme);
        }
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| UrlError::Invalid(e.to_string()))?;
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Target {
            url: url.trim().to_string(),
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: path.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// POSTs `body` (JSON) to `target` on the worker thread; the answer's status code.
pub async fn post(target: &Target, body: Bytes, timeout: Duration) -> Result<u16, CallbackError> {
    let worker = worker().ok_or(CallbackError::WorkerUnavailable)?;
    let slot = InFlight::acquire().ok_or(CallbackError::Busy)?;
    let (reply, answer) = oneshot::channel();
    let job = Job {
        target: target.clone(),
        body,
        timeout,
        reply,
        _slot: slot,
    };
    worker
        .send(job)
        .map_err(|_| CallbackError::WorkerUnavailable)?;
    // The worker answers within `timeout`; the margin only matters if it is stuck or gone.
    match tokio::time::timeout(timeout.saturating_add(WORKER_GRACE), answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(CallbackError::WorkerUnavailable),
        Err(_) => Err(CallbackError::Timeout(timeout)),
    }
}

struct Job {
    target: Target,
    body: Bytes,
    timeout: Duration,
    reply: oneshot::Sender<Result<u16, CallbackError>>,
    /// Held until the job's task ends, however it ends.
    _slot: InFlight,
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn acquire() -> Option<InFlight> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker's job queue, started on first use. `None` if the thread or its runtime could
/// not be created (then every callback fails closed, logged once here).
fn worker() -> Option<&'static mpsc::UnboundedSender<Job>> {
    static WORKER: OnceLock<Option<mpsc::UnboundedSender<Job>>> = OnceLock::new();
    WORKER.get_or_init(start_worker).as_ref()
}

fn start_worker() -> Option<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "auth callback runtime could not start");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("auth-callback".into())
        .spawn(move || {
            rt.block_on(async move {
                while let Some(job) = rx.recv().await {
                    tokio::spawn(run(job));
                }
            })
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "auth callback thread could not start");
        return None;
    }
    Some(tx)
}

async fn run(job: Job) {
    let result = match tokio::time::timeout(job.timeout, exchange(&job.target, job.body)).await {
        Ok(r) => r,
        Err(_) => Err(CallbackError::Timeout(job.timeout)),
    };
    // The caller may have given up already; nothing to do then.
    let _ = job.reply.send(result);
}

/// One request on a fresh connection; returns as soon as the response head arrives (the
/// body is not read) and drops the connection.
async fn exchange(target: &Target, body: Bytes) -> Result<u16, CallbackError> {
    let stream = connect(target).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("rtmp-edge/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))?;
    // The connection future does the I/O; drive it alongside the request instead of
    // spawning it, so a timeout drops (and closes) everything at once. It may finish (the
    // server closing after its answer) in the same poll that delivers the response, so
    // when it ends the request's own result is still awaited: that is the response, or
    // hyper's error for a connection that closed without one.
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(req));
    let resp = tokio::select! {
        resp = &mut send => resp?,
        _ = &mut conn => send.await?,
    };
    Ok(resp.status().as_u16())
}

async fn connect(target: &Target) -> Result<tokio::net::TcpStream, CallbackError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host_for_lookup(), target.port))
        .await
        .map_err(|source| CallbackError::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(source) => last = Some(CallbackError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| CallbackError::NoAddress {
        host: target.host.clone(),
    }))
}

/// The JSON body POSTed for `req`: what the docs promise callbacks, field for field.
pub fn request_body(req: &AuthRequest, params: &RequestParams) -> Bytes {
    let bounded = |s: &Option<String>| s.clone().filter(|s| s.len() <= MAX_QUERY_LEN);
    let params: serde_json::Map<String, serde_json::Value> = params
        .merged()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
    let body = serde_json::json!({
        "action": req.action.label(),
        "app": req.app,
        "name": req.name,
        "stream": format!("{}/{}", req.app, req.name),
        "query": bounded(&req.query),
        "params": params,
        "tc_url": bounded(&req.tc_url),
        "client_ip": req.peer.ip().to_string(),
        "client_port": req.peer.port(),
        "client_id": req.conn_id,
    });
    Bytes::from(body.to_string())
}

impl Target {
    /// `lookup_host((host, port))` wants IPv6 literals without brackets.
    fn host_for_lookup(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let t = Target::parse("http://127.0.0.1:8080/auth/publish?x=1").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "/auth/publish?x=1")
        );
        let t = Target::parse("http://auth.example").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = Target::parse("HTTP://[::1]:9/a").unwrap();
        assert_eq!((t.host_for_lookup(), t.port), ("::1", 9));
    }

    #[test]
    fn refuses_other_urls() {
        assert_eq!(Target::parse("https://a/b"), Err(UrlError::Https));
        assert!(UrlError::Https
            .to_string()
            .contains("https is not supported"));
        assert_eq!(Target::parse("ftp://a/b"), Err(UrlError::Scheme));
        assert_eq!(Target::parse("a/b"), Err(UrlError::Scheme));
        assert_eq!(Target::parse("http://u:p@a/b"), Err(UrlError::UserInfo));
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("http://a b/").is_err());
    }
}
