//! Edge pull: when a player asks for a stream that nobody publishes here, the stream's owner
//! shard plays it from an origin over one upstream connection and publishes it locally, so
//! every local player shares that one connection. The upstream closes once the stream has
//! had no players for the idle period. If the origin drops, players stay connected while
//! the edge reconnects or fails over to the next origin; timestamps keep moving forward.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::RelayError;
use crate::media::frame::MediaKind;
use crate::protocol::client::{ClientConfig, ClientEvent, ClientSession};
use crate::protocol::url::RtmpUrl;
use crate::shard::hooks::UpstreamFactory;
use crate::shard::io::Conn;
use crate::shard::state::{ShardState, StreamKey};
use crate::tls::ClientTls;
use crate::util::backoff;

/// How long an origin may take to start sending media before we try the next one (an origin
/// without the stream usually just waits, like nginx-rtmp and we do).
const FIRST_MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
/// An upstream silent this long is considered dead.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Edge mode: the origins to pull from, in order (`--origin`), and how long an upstream
/// stays open without players (`--origin-idle-secs`).
#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub origins: Vec<RtmpUrl>,
    pub idle: Duration,
    /// Whom `rtmps://` origins must prove to be (the public roots plus `--tls-ca-file`).
    pub trust: ClientTls,
}

impl OriginConfig {
    /// From the flags' URLs, in failover order; None without any. A bad URL is an error:
    /// an edge silently short of an origin would fail over to nothing.
    pub fn from_urls(
        urls: &[String],
        idle: Duration,
        trust: ClientTls,
    ) -> Result<Option<Self>, BadOrigin> {
        let origins = urls
            .iter()
            .map(|u| RtmpUrl::parse(u).map_err(|e| BadOrigin(shown(u), e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((!origins.is_empty()).then_some(Self {
            origins,
            idle,
            trust,
        }))
    }
}

/// An unparsable origin URL as it may be shown: without its query (a token may be there).
fn shown(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_string()
}

/// An `--origin` (or `[server] origin`) URL that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad origin {0}: {1}")]
pub struct BadOrigin(String, crate::protocol::url::UrlError);

/// The shard's upstream factory: one pull per stream, on the stream's owner shard.
pub struct OriginPull {
    config: OriginConfig,
    /// The origins' trust settings, re-read on reload; each connect takes the current one.
    trust: Arc<RwLock<ClientTls>>,
}

impl OriginPull {
    pub fn new(config: OriginConfig) -> Self {
        let trust = Arc::new(RwLock::new(config.trust.clone()));
        Self { config, trust }
    }

    /// Re-reads the CA file (SIGHUP); on an error the old settings stay.
    pub fn reload_trust(&self) -> Result<(), crate::tls::TlsError> {
        let current = self.trust.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(path) = current.ca_file() else {
            return Ok(());
        };
        let fresh = ClientTls::new(Some(path))?;
        if fresh != current {
            info!(ca_file = %path.display(), "origin CA file reloaded");
            *self.trust.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }
}

impl UpstreamFactory for OriginPull {
    /// Starts pulling `key` unless this shard already does.
    fn open(&self, state: &Rc<ShardState>, key: &StreamKey) {
        if state.upstreams.borrow().contains_key(key) || state.tasks.is_stopping() {
            return;
        }
        state
            .upstreams
            .borrow_mut()
            .insert(key.clone(), String::new());
        state.tasks.spawn(run(
            state.clone(),
            key.clone(),
            self.config.clone(),
            self.trust.clone(),
        ));
    }
}

enum End {
    /// Nobody watched for the idle period.
    Idle,
    /// A local publisher owns the key now.
    Taken,
}

struct Pull {
    state: Rc<ShardState>,
    key: StreamKey,
    name: String,
    /// Our publisher id in the stream table while we feed it.
    id: u64,
    publishing: bool,
    idle: Duration,
    idle_since: Option<Instant>,
    trust: Arc<RwLock<ClientTls>>,
    /// This upstream connection delivered media (the backoff restarts when it fails).
    streamed: bool,
}

async fn run(
    state: Rc<ShardState>,
    key: StreamKey,
    config: OriginConfig,
    trust: Arc<RwLock<ClientTls>>,
) {
    let origins = config.origins;
    let name = key.split_once('/').map_or(&*key, |(_, n)| n).to_string();
    let mut p = Pull {
        id: state.shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        idle: config.idle,
        trust,
        state,
        key,
        name,
        publishing: false,
        idle_since: None,
        streamed: false,
    };
    let mut next = 0usize;
    let mut failures = 0u32;
    loop {
        if p.idle_over() {
            break;
        }
        let origin = &origins[next % origins.len()];
        info!(stream = &*p.key, origin = %origin.public(), "pulling from origin");
        p.state
            .upstreams
            .borrow_mut()
            .insert(p.key.clone(), origin.public());
        match p.once(origin).await {
            Ok(End::Idle) | Ok(End::Taken) => break,
            Err(e) => {
                warn!(stream = &*p.key, origin = %origin.public(), error = %e, "origin pull failed");
                next += 1;
                // An upstream that streamed before failing starts the backoff over: hours
                // of streaming and one drop retry at once, as a first failure does.
                if std::mem::take(&mut p.streamed) {
                    failures = 0;
                }
                failures += 1;
                let delay = backoff(
                    failures.saturating_sub(origins.len() as u32),
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    p.id,
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = p.state.tasks.stopped() => {}
                }
            }
        }
    }
    if p.publishing {
        p.state.end_publish(&p.key, p.id);
    }
    info!(stream = &*p.key, "origin pull closed");
    p.state.upstreams.borrow_mut().remove(&p.key);
}

impl Pull {
    fn current_trust(&self) -> ClientTls {
        self.trust.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn idle_over(&mut self) -> bool {
        if self.state.tasks.is_stopping() {
            return true;
        }
        if self.state.is_watched(&self.key) {
            self.idle_since = None;
            return false;
        }
        self.idle_since.get_or_insert_with(Instant::now).elapsed() >= self.idle
    }

    async fn once(&mut self, origin: &RtmpUrl) -> Result<End, RelayError> {
        let trust = self.current_trust();
        let conn = tokio::select! {
            c = super::connect(origin, CONNECT_TIMEOUT, Some(&trust)) => Rc::new(c?),
            _ = self.state.tasks.stopped() => return Ok(End::Idle),
        };
        let mut s = ClientSession::new(ClientConfig::new(&origin.app, &origin.tc_url()));
        s.play(&self.name);
        // Reads carry no timeout (a dropped io_uring read stays in flight); a watchdog
        // decides when to give up and shuts the socket, which ends the read.
        let verdict: Rc<Cell<Option<Verdict>>> = Rc::default();
        let last_media: Rc<Cell<Option<Instant>>> = Rc::default();
        let watchdog = self.state.tasks.spawn(watch(
            self.state.clone(),
            self.key.clone(),
            self.idle,
            conn.clone(),
            verdict.clone(),
            last_media.clone(),
        ));
        let result = self.stream(&conn, &mut s, &last_media).await;
        watchdog.abort();
        conn.shutdown();
        match verdict.get() {
            Some(Verdict::Idle) => Ok(End::Idle),
            Some(Verdict::NoMedia) => Err(RelayError::NoMedia),
            Some(Verdict::Stalled) => Err(RelayError::OriginStalled),
            None => result,
        }
    }

    async fn stream(
        &mut self,
        conn: &Conn,
        s: &mut ClientSession,
        last_media: &Cell<Option<Instant>>,
    ) -> Result<End, RelayError> {
        let mut buf = vec![0u8; 64 * 1024];
        // No media yet on this upstream connection: the first media (re)starts our ingest.
        let mut fresh = true;
        loop {
            if let Some(out) = s.take_output() {
                conn.writev_all(vec![out])
                    .await
                    .0
                    .map_err(RelayError::Write)?;
            }
            let (res, b) = conn.read(buf).await;
            buf = b;
            let n = res.map_err(RelayError::Read)?;
            if n == 0 {
                return Err(RelayError::OriginClosed);
            }
            let now = Instant::now();
            s.feed(&buf[..n])?;
            while let Some(ev) = s.poll_event() {
                let (kind, timestamp, payload) = match ev {
                    ClientEvent::Audio { timestamp, payload } => {
                        (MediaKind::Audio, timestamp, payload)
                    }
                    ClientEvent::Video { timestamp, payload } => {
                        (MediaKind::Video, timestamp, payload)
                    }
                    ClientEvent::Data { timestamp, payload } => match data_kind(&payload) {
                        Some(k) => (k, timestamp, payload),
                        None => continue,
                    },
                    ClientEvent::Failed { code } => return Err(RelayError::OriginRefused(code)),
                    ClientEvent::Status { code, .. }
                        if code == "NetStream.Play.UnpublishNotify" =>
                    {
                        // The origin's publisher left: so did ours; players hear it from us.
                        if self.publishing {
                            self.state.end_publish(&self.key, self.id);
                            self.publishing = false;
                        }
                        continue;
                    }
                    _ => continue,
                };
                // After an UnpublishNotify we no longer publish, so the origin's republish
                // on this same connection begins again too.
                if fresh || !self.publishing {
                    if !self.begin() {
                        return Ok(End::Taken);
                    }
                    fresh = false;
                }
                last_media.set(Some(now));
                self.streamed = true;
                self.state
                    .publish_frame(&self.key, self.id, kind, timestamp, payload, now);
            }
            // Merged reads, as for publishers (`conn::reader`): on a busy shard an edge
            // pulling hundreds of streams reads each once per tick. A full buffer means
            // more is waiting: read again at once.
            if n < buf.len() {
                self.state.await_read_tick_if_busy().await;
            }
        }
    }

    /// First media of an upstream connection (or of the origin's republish): take the
    /// publisher slot (which rebases and clears the cache), or continue the stream if we
    /// still hold it. False if a local publisher got the key first.
    fn begin(&mut self) -> bool {
        if self.publishing {
            // The previous upstream ended without an UnpublishNotify (the origin died or
            // stalled), so we kept the slot and our players never heard of an end. The new
            // upstream's timestamps start wherever the origin's do (from zero after an
            // origin restart): rebase them to continue forward, and restart the cache.
            self.state.restart_ingest(&self.key);
        } else if self.state.start_publish(&self.key, self.id).is_err() {
            return false;
        }
        self.publishing = true;
        info!(stream = &*self.key, "origin stream live");
        true
    }
}

/// Metadata is relayed like a publisher's; the sample-access marker is ours to send.
fn data_kind(payload: &Bytes) -> Option<MediaKind> {
    if payload.starts_with(b"\x02\x00\x0aonMetaData") {
        Some(MediaKind::Metadata)
    } else if payload.starts_with(b"\x02\x00\x11|RtmpSampleAccess") {
        None
    } else {
        Some(MediaKind::Data)
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Idle,
    NoMedia,
    Stalled,
}

/// Checks once a second whether the upstream should end; if so, records why and shuts the
/// socket so the blocked read returns.
async fn watch(
    state: Rc<ShardState>,
    key: StreamKey,
    idle: Duration,
    conn: Rc<Conn>,
    verdict: Rc<Cell<Option<Verdict>>>,
    last_media: Rc<Cell<Option<Instant>>>,
) {
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.tasks.stopped() => {}
        }
        // The server shutting down ends an upstream like nobody watching does.
        let watched = state.is_watched(&key);
        if watched {
            idle_since = None;
        }
        let unwatched = !watched && idle_since.get_or_insert_with(Instant::now).elapsed() >= idle;
        let v = if state.tasks.is_stopping() || unwatched {
            Some(Verdict::Idle)
        } else {
            match last_media.get() {
                None if started.elapsed() > FIRST_MEDIA_TIMEOUT => Some(Verdict::NoMedia),
                Some(t) if t.elapsed() > STALL_TIMEOUT => Some(Verdict::Stalled),
                _ => None,
            }
        };
        if let Some(v) = v {
            verdict.set(Some(v));
            conn.shutdown();
            return;
        }
    }
}
