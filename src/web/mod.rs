//! The media HTTP listener for viewers (`--http-media`), apart from the control API: HLS
//! playlists, init segments, segments and parts from memory, with blocking playlist
//! reloads and preload-hinted parts held until they exist. It runs on its own runtime
//! threads and only reads what the shards' HLS sinks published; it never blocks a shard.

mod body;
mod flv;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::time::Instant;
use tracing::{error, info};

use crate::auth::SharedAuth;
use crate::hls::playlist::{Ready, Resource, Timeline};
use crate::hls::{Hls, StreamHls};
use crate::httpflv::HttpFlv;
use crate::shard::hooks::{Action, AuthRequest};
use body::Chunks;

/// Worker threads of the media listener's runtime.
const THREADS: usize = 2;
/// How long a first playlist request waits for packaging to produce something (on demand,
/// packaging starts at the next keyframe).
const FIRST_WAIT: Duration = Duration::from_secs(10);
/// How long a request for a stream an edge does not have waits for its pull to go live:
/// the pull's connect plus the origin's first media (it gives up on an origin after 5 s).
const FETCH_WAIT: Duration = Duration::from_secs(6);

/// Asks the stream's owner shard to pull it from the origin (edge mode).
pub type Fetch = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("media HTTP listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Every `rtmp_http_requests_total` kind.
pub const REQUEST_KINDS: [&str; 7] = [
    "flv",
    "multivariant",
    "playlist",
    "init",
    "segment",
    "part",
    "page",
];

/// What the media listener serves besides the streams: the preview page's player scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub hls_js: String,
    pub mpegts_js: String,
}

#[derive(Clone)]
struct Ctx {
    hls: Arc<Hls>,
    flv: Arc<HttpFlv>,
    auth: Arc<SharedAuth>,
    fetch: Option<Fetch>,
    page: Arc<str>,
}

impl Ctx {
    /// What `get` finds of a live stream; on an edge, a stream not live here is pulled
    /// first: the owner shard is asked, and `get` tried again until the pull is live.
    async fn live_or_fetched<T>(&self, key: &str, get: impl Fn() -> Option<T>) -> Option<T> {
        if let Some(t) = get() {
            return Some(t);
        }
        let fetch = self.fetch.as_ref()?;
        fetch(key);
        let end = Instant::now() + FETCH_WAIT;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(t) = get() {
                return Some(t);
            }
        }
        None
    }

    /// The same play authorization as RTMP (tokens, signed URLs, callback), on the query
    /// string of each request; the denial is counted like an RTMP one.
    async fn authorize(&self, key: &str, query: &str, peer: SocketAddr) -> Result<(), Response> {
        let auth = self.auth.current();
        if auth.is_open(Action::Play) {
            return Ok(());
        }
        let (app, name) = key.split_once('/').unwrap_or((key, ""));
        let req = AuthRequest {
            action: Action::Play,
            app: app.to_string(),
            name: name.to_string(),
            query: Some(query.trim_start_matches('?').to_string()).filter(|q| !q.is_empty()),
            connect_query: None,
            tc_url: None,
            peer,
            conn_id: 0,
        };
        auth.check(req).await.map_err(|reason| {
            metrics::counter!("rtmp_auth_denied_total", "action" => "play", "reason" => reason.label())
                .increment(1);
            status(StatusCode::FORBIDDEN)
        })
    }
}

/// Serves the media endpoints on their own threads; returns the bound address.
pub fn serve(
    hls: Arc<Hls>,
    flv: Arc<HttpFlv>,
    auth: Arc<SharedAuth>,
    fetch: Option<Fetch>,
    cfg: &WebConfig,
    addr: SocketAddr,
) -> Result<SocketAddr, WebError> {
    let bind = |source| WebError::Bind { addr, source };
    let page: Arc<str> = page::render(cfg).into();
    describe_metrics();
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    let local = std_listener.local_addr().map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .thread_name("media-http")
        .enable_all()
        .build()
        .map_err(bind)?;
    std::thread::Builder::new()
        .name("media-http-main".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "media HTTP listener failed");
                        return;
                    }
                };
                let sweeper = hls.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        sweeper.sweep();
                    }
                });
                if let Err(e) = axum::serve(
                    listener,
                    router(Ctx {
                        hls,
                        flv,
                        auth,
                        fetch,
                        page,
                    })
                    .into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                {
                    error!(error = %e, "media HTTP server stopped");
                }
            });
        })
        .map_err(bind)?;
    info!(addr = %local, "media http listening");
    Ok(local)
}

/// Help texts, and the request series at 0 for every kind (status 200).
fn describe_metrics() {
    metrics::describe_counter!(
        "rtmp_http_requests_total",
        "Media listener requests, by kind (playlist, part, flv, ...) and status."
    );
    metrics::describe_counter!(
        "rtmp_http_bytes_out_total",
        "Media bytes sent by the media listener, by kind (hls, flv)."
    );
    for kind in REQUEST_KINDS {
        metrics::counter!("rtmp_http_requests_total", "kind" => kind, "status" => "200")
            .increment(0);
    }
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/api/streams", get(page::streams))
        .route("/{app}/{file}", get(flv::stream).options(preflight))
        .route("/{app}/{name}/{file}", get(hls_file).options(preflight))
        .with_state(ctx)
}

async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// What a viewer's query holds: the delivery directives, and the rest (tokens), which the
/// playlists carry into every URI.
#[derive(Debug, Default, PartialEq)]
struct Query {
    msn: Option<u64>,
    part: Option<usize>,
    skip: bool,
    /// `?a=b&c=d` without the `_HLS_` directives, or empty.
    carry: String,
    bad: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut q = Query::default();
        let mut carry = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "_HLS_msn" => {
                    q.msn = v.parse().ok().or_else(|| {
                        q.bad = true;
                        None
                    })
                }
                "_HLS_part" => {
                    q.part = v.parse().ok().or_else(|| {
                        q.bad = true;
                        None
                    })
                }
                // v2 would also skip date ranges, which we do not advertise.
                "_HLS_skip" => q.skip = v == "YES",
                _ => carry.push(pair),
            }
        }
        // A part without a segment number is meaningless (rfc8216bis 6.2.5.2).
        q.bad |= q.part.is_some() && q.msn.is_none();
        if !carry.is_empty() {
            q.carry = format!("?{}", carry.join("&"));
        }
        q
    }
}

/// Parses a request's file name and query as the handlers do (for the fuzzer): whether
/// both are well-formed.
pub fn parse_request(file: &str, raw_query: Option<&str>) -> bool {
    File::parse(file).is_some() && !Query::parse(raw_query).bad
}

enum File {
    Multivariant,
    Media,
    Init(String, u32),
    Segment(String, u64),
    Part(String, u64, usize),
}

impl File {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "index.m3u8" => return Some(Self::Multivariant),
            "media.m3u8" => return Some(Self::Media),
            _ => {}
        }
        if let Some(rest) = name
            .strip_prefix("init-")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            let (epoch, id) = rest.split_once('-')?;
            return Some(Self::Init(epoch.into(), id.parse().ok()?));
        }
        if let Some(rest) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            let (epoch, msn) = rest.split_once('-')?;
            return Some(Self::Segment(epoch.into(), msn.parse().ok()?));
        }
        let rest = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
        let mut it = rest.split('-');
        let (epoch, msn, i) = (it.next()?, it.next()?, it.next()?);
        Some(Self::Part(epoch.into(), msn.parse().ok()?, i.parse().ok()?))
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Multivariant => "multivariant",
            Self::Media => "playlist",
            Self::Init(..) => "init",
            Self::Segment(..) => "segment",
            Self::Part(..) => "part",
        }
    }
}

async fn hls_file(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, name, file)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(f) = File::parse(&file) else {
        return finish("other", status(StatusCode::NOT_FOUND));
    };
    let kind = f.kind();
    let key = format!("{app}/{name}");
    let q = Query::parse(raw.as_deref());
    if q.bad {
        return finish(kind, status(StatusCode::BAD_REQUEST));
    }
    // Every request carries the viewer's credentials (the playlists put them on every URI);
    // checked before the stream is looked up, so a refusal says nothing about it.
    if let Err(r) = ctx.authorize(&key, &q.carry, peer).await {
        return finish(kind, r);
    }
    // A playlist asks for the live stream (an edge pulls one it lacks); segments and parts
    // come from the timeline as it is, also just after the stream ended.
    let playlist = matches!(f, File::Multivariant | File::Media);
    let stream = if playlist && ctx.hls.policy().packages(&key) {
        let live = || ctx.hls.get(&key).filter(|s| s.is_attached());
        ctx.live_or_fetched(&key, live)
            .await
            .or_else(|| ctx.hls.get(&key))
    } else {
        ctx.hls.get(&key)
    };
    let Some(stream) = stream else {
        return finish(kind, status(StatusCode::NOT_FOUND));
    };
    let r = match f {
        File::Multivariant => multivariant(&stream, &q).await,
        File::Media => media(&stream, &q).await,
        File::Init(epoch, id) => {
            let body = stream
                .timeline
                .lock()
                .ok()
                .filter(|t| t.epoch == epoch)
                .and_then(|t| t.init_body(id));
            match body {
                Some(b) => {
                    let len = b.len();
                    media_body("video/mp4", vec![b], len)
                }
                None => status(StatusCode::NOT_FOUND),
            }
        }
        File::Segment(epoch, msn) => resource(&stream, &epoch, |t| t.segment(msn)).await,
        File::Part(epoch, msn, i) => resource(&stream, &epoch, |t| t.part(msn, i)).await,
    };
    finish(kind, r)
}

/// Waits for `f` to give an answer, until `deadline`; the timeline's change signal wakes it.
async fn wait_for<R>(
    s: &StreamHls,
    deadline: Instant,
    f: impl Fn(&Timeline) -> Option<R>,
) -> Option<R> {
    let mut rx = s.changed.subscribe();
    let mut waited = false;
    loop {
        if let Some(r) = s.timeline.lock().ok().and_then(|t| f(&t)) {
            if waited {
                metrics::counter!("rtmp_hls_blocking_waits_total").increment(1);
            }
            return Some(r);
        }
        waited = true;
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

fn target(s: &StreamHls) -> Duration {
    let secs = s.timeline.lock().map_or(2, |t| t.target_secs());
    Duration::from_secs(secs)
}

async fn multivariant(s: &StreamHls, q: &Query) -> Response {
    s.touch();
    let deadline = Instant::now() + FIRST_WAIT;
    let body = wait_for(s, deadline, |t| {
        t.has_complete_segment().then(|| t.multivariant(&q.carry))?
    })
    .await;
    match body {
        Some(b) => playlist(b),
        None => status(StatusCode::NOT_FOUND),
    }
}

async fn media(s: &StreamHls, q: &Query) -> Response {
    s.touch();
    let Some(msn) = q.msn else {
        let deadline = Instant::now() + FIRST_WAIT;
        // Players that do not speak LL-HLS need a whole segment to start from.
        return match wait_for(s, deadline, |t| t.has_complete_segment().then_some(())).await {
            Some(()) => playlist(
                s.timeline
                    .lock()
                    .map(|t| t.media(&q.carry, q.skip, crate::hls::now_ms()))
                    .unwrap_or_default(),
            ),
            None => status(StatusCode::NOT_FOUND),
        };
    };
    // rfc8216bis 6.2.5.2: hold the request until the segment (part) exists, at most three
    // target durations; too far ahead is a bad request.
    let deadline = Instant::now() + 3 * target(s);
    let answer = wait_for(s, deadline, |t| match t.ready(msn, q.part) {
        Ready::Yes => Some(Ok(t.media(&q.carry, q.skip, crate::hls::now_ms()))),
        Ready::TooFar => Some(Err(StatusCode::BAD_REQUEST)),
        Ready::Wait => None,
    })
    .await;
    match answer {
        Some(Ok(b)) => playlist(b),
        Some(Err(code)) => status(code),
        None => status(StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn resource(s: &StreamHls, epoch: &str, f: impl Fn(&Timeline) -> Resource) -> Response {
    s.touch();
    let deadline = Instant::now() + 3 * target(s);
    let got = wait_for(s, deadline, |t| {
        if t.epoch != epoch {
            return Some(None);
        }
        match f(t) {
            Resource::Body(b, len) => Some(Some((b, len))),
            Resource::Gone => Some(None),
            Resource::Soon => None,
        }
    })
    .await;
    match got {
        Some(Some((b, len))) => media_body("video/iso.segment", b, len),
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response {
    let mut r = code.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn playlist(body: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn media_body(content_type: &'static str, data: Vec<bytes::Bytes>, len: usize) -> Response {
    metrics::counter!("rtmp_http_bytes_out_total", "kind" => "hls").increment(len as u64);
    let mut r = Response::new(axum::body::Body::new(Chunks::new(data, len)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Names carry the timeline's epoch: a URL never names two bodies.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

/// Adds the CORS header every media response carries, and counts it.
fn finish(kind: &'static str, mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    let code = r.status().as_u16().to_string();
    metrics::counter!("rtmp_http_requests_total", "kind" => kind, "status" => code).increment(1);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_tokens_and_reads_directives() {
        let q = Query::parse(Some(
            "token=a%20b&_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&x=1",
        ));
        assert_eq!(
            (q.msn, q.part, q.skip, q.bad),
            (Some(12), Some(3), true, false)
        );
        assert_eq!(q.carry, "?token=a%20b&x=1");
        assert!(Query::parse(Some("_HLS_part=1")).bad);
        assert!(Query::parse(Some("_HLS_msn=x")).bad);
        assert_eq!(Query::parse(None), Query::default());
    }

    #[test]
    fn file_names() {
        assert!(matches!(
            File::parse("index.m3u8"),
            Some(File::Multivariant)
        ));
        assert!(matches!(File::parse("part-19a-7-3.m4s"), Some(File::Part(e, 7, 3)) if e == "19a"));
        assert!(matches!(
            File::parse("seg-19a-7.m4s"),
            Some(File::Segment(_, 7))
        ));
        assert!(matches!(
            File::parse("init-19a-0.mp4"),
            Some(File::Init(_, 0))
        ));
        assert!(File::parse("seg-19a.m4s").is_none());
        assert!(File::parse("../etc/passwd").is_none());
    }
}
