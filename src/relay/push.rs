//! Push destinations: every published stream that matches a destination gets its own
//! outbound RTMP publisher on the stream's owner shard, fed through a bounded queue. A dead,
//! slow or refusing destination only ever affects itself: it reconnects with capped,
//! jittered exponential backoff, re-sends metadata and sequence headers and resumes at a
//! keyframe. When the source publisher drops, the destination connection is held for a
//! grace period so a quick republish continues the same broadcast.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config_file::{glob_match, PushDestination};
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame};
use crate::protocol::client::{ClientConfig, ClientEvent, ClientSession};
use crate::protocol::message as msg;
use crate::protocol::url::RtmpUrl;
use crate::shard::io::Conn;
use crate::shard::state::{ShardState, SinkFactory, StreamKey, StreamSink};

#[derive(Debug, Clone, Copy)]
pub struct PushPolicy {
    /// Bytes a destination may have queued; past it, video drops until a keyframe.
    pub queue_bytes: usize,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a destination stays connected after its source publisher left.
    pub grace: Duration,
    pub connect_timeout: Duration,
    /// How long one write may stall before the destination counts as dead.
    pub write_timeout: Duration,
    pub stats_interval: Duration,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self {
            queue_bytes: 8 << 20,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    #[error("push destination {0}: {1}")]
    Url(String, crate::protocol::url::UrlError),
    #[error("[[push]] #{0} (id {1}): {2}")]
    Entry(usize, String, Box<PushConfigError>),
}

/// One configured destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: RtmpUrl,
    /// Key at the destination; None: the URL's key, else the source stream's name.
    pub key: Option<String>,
    /// Source streams (`app/name`, exact or glob); empty = all.
    pub streams: Vec<String>,
}

impl Destination {
    pub fn from_config(d: &PushDestination) -> Result<Self, PushConfigError> {
        Ok(Self {
            url: RtmpUrl::parse(&d.url).map_err(|e| PushConfigError::Url(redact(&d.url), e))?,
            key: d.key.clone(),
            streams: d.streams.clone(),
        })
    }

    /// A `--push URL` flag: every stream, keyed by its name unless the URL has a key.
    pub fn from_flag(url: &str) -> Result<Self, PushConfigError> {
        Ok(Self {
            url: RtmpUrl::parse(url).map_err(|e| PushConfigError::Url(redact(url), e))?,
            key: None,
            streams: Vec::new(),
        })
    }

    /// Same target and scope (a reload that left this destination alone).
    fn same_as(&self, other: &Destination) -> bool {
        self.url == other.url && self.key == other.key && self.streams == other.streams
    }

    fn matches(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|p| glob_match(p, stream))
    }

    /// The URL for logs: stream keys are credentials, so never printed.
    pub fn label(&self) -> String {
        format!("{}/<key>", self.url.public())
    }
}

/// Stream keys are credentials: a URL for logs keeps scheme, host and app only.
pub fn redact(url: &str) -> String {
    match RtmpUrl::parse(url) {
        Ok(u) => format!("{}/<key>", u.public()),
        Err(_) => "<unparsable push url>".to_string(),
    }
}

/// Where a destination came from: reload replaces the config file's, keeps the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Config,
    Api,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Config => "config",
            Self::Api => "api",
        }
    }
}

/// A destination as the registry holds it.
#[derive(Debug, Clone)]
pub struct PushEntry {
    /// Stable name: API paths and metric labels.
    pub id: String,
    pub dest: Destination,
    pub enabled: bool,
    pub origin: Origin,
    /// Bumped whenever the entry changes, so running sessions of an old version stop and
    /// new ones start.
    generation: u64,
}

impl PushEntry {
    fn sink_id(&self) -> String {
        format!("push:{}#{}", self.id, self.generation)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("a push destination with id {0:?} exists")]
    Exists(String),
    #[error("bad push destination id {0:?}: 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadId(String),
}

/// Every push destination, changeable at runtime (HTTP API, SIGHUP). Shards read it when
/// a stream starts publishing and when told to reconcile.
pub struct PushRegistry {
    entries: RwLock<Vec<PushEntry>>,
    policy: PushPolicy,
    generation: AtomicU64,
}

/// A destination id: 1-64 characters of A-Z a-z 0-9 `_` `.` `-` (URL path and label safe).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl PushRegistry {
    pub fn new(policy: PushPolicy) -> Self {
        Self {
            entries: RwLock::default(),
            policy,
            generation: AtomicU64::new(1),
        }
    }

    /// The destinations from `--push` flags and the config file's `[[push]]` entries.
    pub fn from_config(
        cfg: &crate::config::Config,
        file: &crate::config_file::FileConfig,
    ) -> Result<Self, PushConfigError> {
        let policy = PushPolicy {
            grace: Duration::from_secs(cfg.push_grace_secs),
            backoff_cap: Duration::from_secs(cfg.push_backoff_max_secs.max(1)),
            write_timeout: Duration::from_secs(cfg.write_timeout_secs.max(1)),
            stats_interval: Duration::from_secs(cfg.stats_interval_secs.max(1)),
            ..PushPolicy::default()
        };
        let reg = Self::new(policy);
        for (i, url) in cfg.push.iter().enumerate() {
            let dest = Destination::from_flag(url)?;
            reg.insert(format!("flag-{}", i + 1), dest, true, Origin::Flag);
        }
        reg.replace_config(file)?;
        Ok(reg)
    }

    fn insert(&self, id: String, dest: Destination, enabled: bool, origin: Origin) -> PushEntry {
        info!(id = %id, dest = %dest.label(), streams = ?dest.streams, enabled, source = origin.label(), "push destination configured");
        let e = PushEntry {
            id,
            dest,
            enabled,
            origin,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        };
        self.write().push(e.clone());
        e
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<PushEntry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<PushEntry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the config file's destinations (startup, SIGHUP). One that did not change
    /// keeps its running sessions; the others stop or start.
    pub fn replace_config(
        &self,
        file: &crate::config_file::FileConfig,
    ) -> Result<(), PushConfigError> {
        let mut fresh = Vec::new();
        for (i, d) in file.push.iter().enumerate() {
            let id = d.id.clone().unwrap_or_else(|| format!("config-{}", i + 1));
            let dest = Destination::from_config(d)
                .map_err(|e| PushConfigError::Entry(i + 1, id.clone(), Box::new(e)))?;
            fresh.push((id, dest, d.enabled));
        }
        let mut entries = self.write();
        let old: Vec<PushEntry> = entries
            .iter()
            .filter(|e| e.origin == Origin::Config)
            .cloned()
            .collect();
        entries.retain(|e| e.origin != Origin::Config);
        for (id, dest, enabled) in fresh {
            if entries.iter().any(|e| e.id == id) {
                warn!(id = %id, "push destination id also used by a flag or the API; config entry ignored");
                continue;
            }
            let same = old
                .iter()
                .find(|e| e.id == id && e.enabled == enabled && e.dest.same_as(&dest));
            let entry = match same {
                Some(e) => e.clone(),
                None => {
                    info!(id = %id, dest = %dest.label(), streams = ?dest.streams, enabled, "push destination configured");
                    PushEntry {
                        id,
                        dest,
                        enabled,
                        origin: Origin::Config,
                        generation: self.generation.fetch_add(1, Ordering::Relaxed),
                    }
                }
            };
            entries.push(entry);
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<PushEntry> {
        self.read().clone()
    }

    pub fn get(&self, id: &str) -> Option<PushEntry> {
        self.read().iter().find(|e| e.id == id).cloned()
    }

    /// Adds a destination (HTTP API); without an id one is made up.
    pub fn add(
        &self,
        id: Option<String>,
        dest: Destination,
        enabled: bool,
    ) -> Result<PushEntry, RegistryError> {
        let taken = |id: &str| self.read().iter().any(|e| e.id == id);
        let id = match id {
            Some(id) if !valid_id(&id) => return Err(RegistryError::BadId(id)),
            Some(id) if taken(&id) => return Err(RegistryError::Exists(id)),
            Some(id) => id,
            None => (1..)
                .map(|n| format!("api-{n}"))
                .find(|id| !taken(id))
                .expect("a free id"),
        };
        Ok(self.insert(id, dest, enabled, Origin::Api))
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut entries = self.write();
        let before = entries.len();
        entries.retain(|e| e.id != id);
        let removed = entries.len() != before;
        if removed {
            info!(id, "push destination removed");
        }
        removed
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Option<PushEntry> {
        let mut entries = self.write();
        let e = entries.iter_mut().find(|e| e.id == id)?;
        if e.enabled != enabled {
            e.enabled = enabled;
            e.generation = self.generation.fetch_add(1, Ordering::Relaxed);
            info!(id, enabled, "push destination changed");
        }
        Some(e.clone())
    }
}

impl SinkFactory for PushRegistry {
    fn sinks_for(
        &self,
        shard: &ShardState,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        let name = key.split_once('/').map_or(&**key, |(_, n)| n);
        self.read()
            .iter()
            .filter(|e| e.enabled && e.dest.matches(key))
            .filter_map(|e| {
                let id = e.sink_id();
                // An older session to the same destination (disabled and re-enabled, or
                // changed by a reload) is still unpublishing: start once it is gone, or
                // the destination would see the same key published twice.
                let prefix = format!("push:{}#", e.id);
                if existing.iter().any(|x| x.starts_with(&prefix)) {
                    return None;
                }
                let d = &e.dest;
                let dest_key = d
                    .key
                    .clone()
                    .or_else(|| d.url.key.clone())
                    .unwrap_or_else(|| name.to_string());
                let sink = PushSink::start(
                    shard.handle(),
                    id,
                    e.id.clone(),
                    d.clone(),
                    dest_key,
                    key.clone(),
                    self.policy,
                );
                Some(Box::new(sink) as Box<dyn StreamSink>)
            })
            .collect()
    }

    fn keeps(&self, key: &StreamKey, sink_id: &str) -> Option<bool> {
        if !sink_id.starts_with("push:") {
            return None;
        }
        Some(
            self.read()
                .iter()
                .any(|e| e.enabled && e.sink_id() == sink_id && e.dest.matches(key)),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    Connecting,
    Live,
    BackingOff,
    Finished,
}

impl PushState {
    fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::BackingOff => "backing_off",
            Self::Finished => "finished",
        }
    }
}

/// What the sink (owner shard, synchronous) and the connection task share.
struct Link {
    queue: RefCell<VecDeque<SharedFrame>>,
    queued_bytes: Cell<usize>,
    notify: Notify,
    /// Metadata and decoder configuration to replay after every (re)connect.
    config: RefCell<StreamCache>,
    publishing: Cell<bool>,
    unpublished_at: Cell<Option<Instant>>,
    /// Video is skipped until a keyframe (after a drop or a reconnect).
    waiting_key: Cell<bool>,
    state: Cell<PushState>,
    last_error: RefCell<Option<String>>,
    bytes: Cell<u64>,
    frames: Cell<u64>,
    drops: Cell<u64>,
    reconnects: Cell<u64>,
    /// Ingest -> handed to the destination socket, microseconds, since the last export
    /// to the control plane; `log_window` since the last stats line.
    latency: RefCell<Histogram<u64>>,
    log_window: RefCell<Histogram<u64>>,
    /// The destination was removed or disabled: finish now, no grace.
    stopped: Cell<bool>,
    /// Registry id of the destination (metric label, API).
    dest_id: String,
    m_bytes: metrics::Counter,
    m_drops: metrics::Counter,
    m_reconnects: metrics::Counter,
    control: Option<std::sync::Arc<crate::control::Control>>,
}

pub struct PushSink {
    id: String,
    link: Rc<Link>,
    policy: PushPolicy,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl PushSink {
    fn start(
        shard: Weak<ShardState>,
        id: String,
        dest_id: String,
        dest: Destination,
        dest_key: String,
        stream: StreamKey,
        policy: PushPolicy,
    ) -> Self {
        let link = Rc::new(Link {
            queue: RefCell::default(),
            queued_bytes: Cell::new(0),
            notify: Notify::new(),
            config: RefCell::default(),
            publishing: Cell::new(true),
            unpublished_at: Cell::new(None),
            waiting_key: Cell::new(true),
            state: Cell::new(PushState::Connecting),
            last_error: RefCell::new(None),
            bytes: Cell::new(0),
            frames: Cell::new(0),
            drops: Cell::new(0),
            reconnects: Cell::new(0),
            latency: RefCell::new(latency_histogram()),
            log_window: RefCell::new(latency_histogram()),
            stopped: Cell::new(false),
            m_bytes: metrics::counter!("rtmp_push_bytes_total", "destination" => dest_id.clone()),
            m_drops: metrics::counter!("rtmp_push_dropped_frames_total", "destination" => dest_id.clone()),
            m_reconnects: metrics::counter!("rtmp_push_reconnects_total", "destination" => dest_id.clone()),
            dest_id,
            control: shard.upgrade().map(|s| s.shared.control.clone()),
        });
        tokio_uring::spawn(run(shard, link.clone(), dest, dest_key, stream, policy));
        Self { id, link, policy }
    }
}

impl StreamSink for PushSink {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_publish(&mut self) {
        self.link.publishing.set(true);
        self.link.unpublished_at.set(None);
        self.link.notify.notify_one();
    }

    fn on_frame(&mut self, f: &SharedFrame) {
        let link = &self.link;
        link.config.borrow_mut().apply(f);
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        let inter_video = f.kind == MediaKind::Video && !config;
        if inter_video && link.waiting_key.get() {
            if !f.is_video_keyframe() {
                return;
            }
            link.waiting_key.set(false);
        }
        let len = f.payload.len();
        let queued = link.queued_bytes.get();
        // Over budget: video waits for the next keyframe; audio and config are small.
        if queued + len > self.policy.queue_bytes && (f.kind == MediaKind::Video && !config) {
            link.waiting_key.set(true);
            link.drop_frame();
            return;
        }
        if queued + len > self.policy.queue_bytes * 2 {
            link.drop_frame();
            return;
        }
        link.queued_bytes.set(queued + len);
        link.queue.borrow_mut().push_back(f.clone());
        link.notify.notify_one();
    }

    fn on_unpublish(&mut self) -> bool {
        self.link.publishing.set(false);
        self.link.unpublished_at.set(Some(Instant::now()));
        self.link.notify.notify_one();
        self.link.state.get() != PushState::Finished
    }

    fn is_done(&self) -> bool {
        self.link.state.get() == PushState::Finished
    }

    fn stop(&mut self) {
        self.link.stopped.set(true);
        self.link.notify.notify_one();
    }

    fn info(&self) -> Option<crate::shard::query::SinkInfo> {
        let l = &self.link;
        Some(crate::shard::query::SinkInfo {
            destination: l.dest_id.clone(),
            state: l.state.get().label(),
            bytes: l.bytes.get(),
            reconnects: l.reconnects.get(),
            dropped_frames: l.drops.get(),
            last_error: l.last_error.borrow().clone(),
        })
    }
}

impl Link {
    fn drop_frame(&self) {
        self.drops.set(self.drops.get() + 1);
        self.m_drops.increment(1);
    }

    /// Hands the latency recorded since the last call to the control plane (its
    /// Prometheus histogram) and to the log window.
    fn export_latency(&self) {
        let mut h = self.latency.borrow_mut();
        if h.is_empty() {
            return;
        }
        if let Some(c) = &self.control {
            c.latency
                .merge(crate::control::histograms::PUSH, &self.dest_id, &h);
        }
        let _ = self.log_window.borrow_mut().add(&*h);
        h.reset();
    }

    fn grace_over(&self, grace: Duration) -> bool {
        self.stopped.get()
            || !self.publishing.get()
                && self
                    .unpublished_at
                    .get()
                    .is_some_and(|t| t.elapsed() >= grace)
    }

    fn set_state(&self, s: PushState, dest: &str, stream: &str) {
        if self.state.get() != s {
            info!(id = %self.dest_id, stream, dest, state = s.label(), "push destination state");
            self.state.set(s);
        }
    }

    fn log_stats(&self, dest: &str, stream: &str) {
        let mut h = self.log_window.borrow_mut();
        let (p50, p99) = if h.is_empty() {
            (0, 0)
        } else {
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
        };
        info!(
            id = %self.dest_id,
            stream,
            dest,
            state = self.state.get().label(),
            bytes = self.bytes.get(),
            frames = self.frames.get(),
            drops = self.drops.get(),
            reconnects = self.reconnects.get(),
            latency_p50_us = p50,
            latency_p99_us = p99,
            last_error = self.last_error.borrow().as_deref().unwrap_or(""),
            "push stats"
        );
        h.reset();
    }
}

/// Capped exponential backoff with +-50 % jitter, so many destinations failing together
/// do not reconnect in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, seed: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let mut x = seed ^ (u64::from(attempt) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let jitter = 0.5 + (x % 1000) as f64 / 1000.0; // 0.5 .. 1.5
    exp.mul_f64(jitter).min(cap)
}

enum Ended {
    /// The grace period ran out with no publisher: the broadcast is over.
    Grace,
}

async fn run(
    shard: Weak<ShardState>,
    link: Rc<Link>,
    dest: Destination,
    dest_key: String,
    stream: StreamKey,
    policy: PushPolicy,
) {
    let label = dest.label();
    let mut attempt = 0u32;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    loop {
        if link.grace_over(policy.grace) {
            break;
        }
        link.set_state(PushState::Connecting, &label, &stream);
        match session(&link, &dest, &dest_key, &stream, policy, &mut attempt).await {
            Ok(Ended::Grace) => break,
            Err(e) => {
                warn!(stream = &*stream, dest = %label, error = %e, "push destination failed");
                *link.last_error.borrow_mut() = Some(e);
                link.reconnects.set(link.reconnects.get() + 1);
                link.m_reconnects.increment(1);
                link.set_state(PushState::BackingOff, &label, &stream);
                let delay = backoff(attempt, policy.backoff_base, policy.backoff_cap, seed);
                attempt = attempt.saturating_add(1);
                // While waiting, frames keep arriving: keep only what a reconnect resumes
                // from. A removed destination stops waiting at once.
                let until = Instant::now() + delay;
                while Instant::now() < until && !link.grace_over(policy.grace) {
                    // Wake at the end of a grace period that runs out mid-wait, too.
                    let wake = link
                        .unpublished_at
                        .get()
                        .map_or(until, |t| (t + policy.grace).min(until));
                    let _ = tokio::time::timeout_at(wake.into(), link.notify.notified()).await;
                }
                drain_to_keyframe(&link);
            }
        }
    }
    link.set_state(PushState::Finished, &label, &stream);
    link.queue.borrow_mut().clear();
    link.queued_bytes.set(0);
    link.export_latency();
    link.log_stats(&label, &stream);
    // Nothing else drops a finished sink before the key is published again (most never
    // are): each would keep ~170 KiB (its latency histogram) and the stream's entry.
    if let Some(state) = shard.upgrade() {
        state.reap_sinks(&stream);
    }
}

/// After a gap the receiver needs a keyframe first: drop queued frames before the last one.
fn drain_to_keyframe(link: &Link) {
    let mut q = link.queue.borrow_mut();
    let last_key = q.iter().rposition(|f| f.is_video_keyframe());
    let drop_n = match last_key {
        Some(i) => i,
        None => {
            link.waiting_key.set(true);
            q.len()
        }
    };
    let dropped: usize = q.drain(..drop_n).map(|f| f.payload.len()).sum();
    link.queued_bytes.set(link.queued_bytes.get() - dropped);
}

async fn session(
    link: &Rc<Link>,
    dest: &Destination,
    dest_key: &str,
    stream: &str,
    policy: PushPolicy,
    attempt: &mut u32,
) -> Result<Ended, String> {
    let addr = super::resolve(&dest.url).await?;
    let tcp = tokio::time::timeout(
        policy.connect_timeout,
        tokio_uring::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| "connect timeout".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let conn = Rc::new(Conn::new(tcp));
    let mut cfg = ClientConfig::new(&dest.url.app, &dest.url.tc_url());
    cfg.flash_ver = "FMLE/3.0 (compatible; rtmp-edge)".into();
    let s = Rc::new(RefCell::new(ClientSession::new(cfg)));
    s.borrow_mut().publish(dest_key);
    let result = publish_and_stream(link, &conn, &s, dest, stream, policy, attempt).await;
    conn.shutdown();
    result
}

async fn flush(conn: &Conn, s: &RefCell<ClientSession>, stall: Duration) -> Result<(), String> {
    let Some(b) = s.borrow_mut().take_output() else {
        return Ok(());
    };
    // A destination that stops reading (frozen, or gone without a reset) never fails a
    // write: it would stay "live" forever while its frames drop. Treat it as dead.
    match tokio::time::timeout(stall, conn.writev_all(vec![b])).await {
        Ok((res, _)) => res.map_err(|e| format!("write: {e}")),
        Err(_) => Err(format!("write stalled for {} s", stall.as_secs())),
    }
}

async fn publish_and_stream(
    link: &Rc<Link>,
    conn: &Rc<Conn>,
    s: &Rc<RefCell<ClientSession>>,
    dest: &Destination,
    stream: &str,
    policy: PushPolicy,
    attempt: &mut u32,
) -> Result<Ended, String> {
    // Handshake, connect, publish: until Publish.Start or a refusal.
    let deadline = Instant::now() + policy.connect_timeout;
    let mut buf = vec![0u8; 8192];
    'start: loop {
        flush(conn, s, policy.write_timeout).await?;
        let (res, b) = tokio::time::timeout_at(deadline.into(), conn.read(buf))
            .await
            .map_err(|_| "publish start timeout".to_string())?;
        buf = b;
        let n = res.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by destination before Publish.Start".into());
        }
        s.borrow_mut().feed(&buf[..n]).map_err(|e| e.to_string())?;
        while let Some(ev) = s.borrow_mut().poll_event() {
            match ev {
                ClientEvent::Started { .. } => break 'start,
                ClientEvent::Failed { code } => return Err(format!("refused: {code}")),
                _ => {}
            }
        }
    }
    let label = dest.label();
    link.set_state(PushState::Live, &label, stream);
    *attempt = 0;

    // The destination may ping or ack; a reader keeps the session fed and answers.
    let closed = Rc::new(Cell::new(false));
    let reader = {
        let (conn, s, closed, link) = (conn.clone(), s.clone(), closed.clone(), link.clone());
        tokio_uring::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (res, b) = conn.read(buf).await;
                buf = b;
                let ok = match res {
                    Ok(n) if n > 0 => s.borrow_mut().feed(&buf[..n]).is_ok(),
                    _ => false,
                };
                if !ok {
                    closed.set(true);
                    link.notify.notify_one();
                    return;
                }
                link.notify.notify_one(); // a pong may be waiting to go out
            }
        })
    };

    // A (re)connected receiver starts from metadata, sequence headers and a keyframe.
    replay_config(link, s);
    let mut last_stats = Instant::now();
    let mut last_export = Instant::now();
    let result = loop {
        if closed.get() {
            break Err("closed by destination".to_string());
        }
        if link.grace_over(policy.grace) {
            let sid = s.borrow().stream_id().unwrap_or(1);
            s.borrow_mut().unpublish(sid);
            let _ = flush(conn, s, policy.write_timeout).await;
            break Ok(Ended::Grace);
        }
        let frames: Vec<SharedFrame> = {
            let mut q = link.queue.borrow_mut();
            link.queued_bytes.set(0);
            q.drain(..).collect()
        };
        if !frames.is_empty() {
            let now = Instant::now();
            let mut sb = s.borrow_mut();
            for f in &frames {
                send_frame(&mut sb, f);
                let _ = link
                    .latency
                    .borrow_mut()
                    .record((now.duration_since(f.ingest).as_micros() as u64).max(1));
                link.bytes.set(link.bytes.get() + f.payload.len() as u64);
                link.m_bytes.increment(f.payload.len() as u64);
            }
            link.frames.set(link.frames.get() + frames.len() as u64);
        }
        if last_export.elapsed() >= Duration::from_secs(1) {
            link.export_latency();
            last_export = Instant::now();
        }
        if let Err(e) = flush(conn, s, policy.write_timeout).await {
            break Err(e);
        }
        if last_stats.elapsed() >= policy.stats_interval {
            link.export_latency();
            link.log_stats(&label, stream);
            last_stats = Instant::now();
        }
        // Wake for frames, a pong, a close, or to check the grace period.
        let _ = tokio::time::timeout(Duration::from_millis(500), link.notify.notified()).await;
    };
    conn.shutdown();
    let _ = reader.await;
    result
}

fn send_frame(s: &mut ClientSession, f: &SharedFrame) {
    match f.kind {
        MediaKind::Audio => s.send_media(msg::AUDIO, f.timestamp, f.payload.clone()),
        MediaKind::Video => s.send_media(msg::VIDEO, f.timestamp, f.payload.clone()),
        MediaKind::Metadata => s.send_metadata(f.timestamp, &f.payload),
        MediaKind::Data => s.send_media(msg::DATA_AMF0, f.timestamp, f.payload.clone()),
    }
}

/// Sends the cached metadata and decoder configuration, stamped at the first frame about
/// to follow, and makes video resume at a keyframe.
fn replay_config(link: &Link, s: &RefCell<ClientSession>) {
    drain_to_keyframe(link);
    let first_ts = link.queue.borrow().front().map(|f| f.timestamp);
    let cache = link.config.borrow();
    let ts = first_ts.unwrap_or_else(|| {
        cache
            .config_frames()
            .iter()
            .map(|f| f.timestamp)
            .max()
            .unwrap_or(0)
    });
    let mut sb = s.borrow_mut();
    if let Some(m) = cache.metadata() {
        sb.send_metadata(ts, &m.payload);
    }
    for f in cache.config_frames() {
        let type_id = if f.kind == MediaKind::Audio {
            msg::AUDIO
        } else {
            msg::VIDEO
        };
        sb.send_media(type_id, ts, Bytes::clone(&f.payload));
    }
    // Config frames still queued would be sent twice; harmless, decoders take the latest.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for attempt in 0..20 {
            let d = backoff(attempt, base, cap, 42);
            let exp = base.saturating_mul(1 << attempt.min(16)).min(cap);
            assert!(d <= cap, "{d:?}");
            assert!(
                d >= exp / 2 && d <= exp.mul_f64(1.5),
                "attempt {attempt}: {d:?}"
            );
        }
        assert_ne!(backoff(3, base, cap, 1), backoff(3, base, cap, 2));
    }

    #[test]
    fn keys_never_reach_labels() {
        let d = Destination::from_flag("rtmp://a.example:1935/live2/sekr1t-key").unwrap();
        assert!(!d.label().contains("sekr1t"));
        assert!(!redact("rtmp://x/app/abc?token=zz").contains("abc"));
        assert!(!redact("garbage sekr1t").contains("sekr1t"));
    }

    fn file(toml_text: &str) -> crate::config_file::FileConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn registry_changes_and_reloads() {
        let reg = PushRegistry::new(PushPolicy::default());
        reg.replace_config(&file(
            r#"
            [[push]]
            id = "yt"
            url = "rtmp://a.example/live2"
            [[push]]
            url = "rtmp://b.example/app"
            streams = ["live/cam*"]
            "#,
        ))
        .unwrap();
        let ids: Vec<String> = reg.list().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["yt", "config-2"]);
        let yt = reg.get("yt").unwrap().sink_id();
        let key: StreamKey = "live/main".into();
        assert_eq!(reg.keeps(&key, &yt), Some(true));
        assert_eq!(reg.keeps(&key, "record"), None, "not a push sink");
        // config-2 only pushes live/cam*.
        let c2 = reg.get("config-2").unwrap().sink_id();
        assert_eq!(reg.keeps(&key, &c2), Some(false));
        assert_eq!(reg.keeps(&"live/cam1".into(), &c2), Some(true));

        // API: generated ids skip taken ones; duplicates and bad ids refused.
        let d = Destination::from_flag("rtmp://c.example/app").unwrap();
        assert_eq!(
            reg.add(Some("api-1".into()), d.clone(), true).unwrap().id,
            "api-1"
        );
        assert_eq!(reg.add(None, d.clone(), true).unwrap().id, "api-2");
        assert_eq!(
            reg.add(Some("yt".into()), d.clone(), true).unwrap_err(),
            RegistryError::Exists("yt".into())
        );
        assert!(matches!(
            reg.add(Some("a b".into()), d, true),
            Err(RegistryError::BadId(_))
        ));

        // Disabling changes the sink id (running sessions stop); unknown ids are None.
        let e = reg.set_enabled("yt", false).unwrap();
        assert!(!e.enabled);
        assert_eq!(reg.keeps(&key, &yt), Some(false));
        assert!(reg.set_enabled("nope", true).is_none());
        reg.set_enabled("yt", true).unwrap();
        let yt2 = reg.get("yt").unwrap().sink_id();
        assert_ne!(yt, yt2);

        // Reload: unchanged entries keep their sessions, changed ones restart, removed
        // ones go; API entries stay.
        reg.replace_config(&file(
            r#"
            [[push]]
            id = "yt"
            url = "rtmp://a.example/live2"
            [[push]]
            url = "rtmp://b.example/other"
            "#,
        ))
        .unwrap();
        assert_eq!(reg.get("yt").unwrap().sink_id(), yt2);
        assert_ne!(reg.get("config-2").unwrap().sink_id(), c2);
        assert_eq!(reg.keeps(&"live/cam1".into(), &c2), Some(false));
        assert!(reg.get("api-1").is_some() && reg.get("api-2").is_some());
        assert!(reg.remove("api-1"));
        assert!(!reg.remove("api-1"));
        // A bad file changes nothing.
        let before: Vec<String> = reg.list().into_iter().map(|e| e.sink_id()).collect();
        assert!(reg
            .replace_config(&file("[[push]]\nurl = \"not a url\""))
            .is_err());
        let after: Vec<String> = reg.list().into_iter().map(|e| e.sink_id()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn destination_matching_and_keys() {
        let mut d = Destination::from_flag("rtmp://h/app").unwrap();
        assert!(d.matches("live/anything"));
        d.streams = vec!["live/cam*".into()];
        assert!(d.matches("live/cam1") && !d.matches("live/other"));
    }
}
