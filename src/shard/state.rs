//! A shard's stream table. For streams this shard owns, the `Source`: the publisher slot,
//! the cache late joiners start from, timestamp rebasing across republishes, and which
//! shards want its frames. For streams with viewers here, the `Mirror`: the local cache
//! replica and the viewers. Frames cross shards once per shard, never once per viewer.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, warn};

use super::stats::{self, ShardStats};
use super::{ShardMsg, Shared};
use crate::fanout::viewer::{Delivery, DropReason, Viewer, ViewerPolicy};
use crate::media::cache::StreamCache;
use crate::media::frame::{Frame, MediaKind, SharedFrame};

pub type StreamKey = Arc<str>;

/// Which shard owns a stream: a stable hash, so every shard agrees without talking.
pub fn owner_of(key: &str, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("stream is already being published")]
    BadName,
}

/// Keeps one stream's timestamps moving forward when a publisher reconnects from zero.
#[derive(Default)]
struct Rebase {
    offset: u32,
    last_out: Option<u32>,
    need_base: bool,
}

impl Rebase {
    fn apply(&mut self, ts: u32) -> u32 {
        if self.need_base {
            self.need_base = false;
            // First publish passes timestamps through; a republish continues after the last.
            self.offset = self
                .last_out
                .map(|l| l.wrapping_add(1).wrapping_sub(ts))
                .unwrap_or(0);
        }
        let out = ts.wrapping_add(self.offset);
        self.last_out = Some(out);
        out
    }
}

/// A consumer of a stream on its owner shard other than players: a recording, a push
/// destination. Called synchronously on the owner shard, so implementations only queue
/// (bounded) and return; their I/O runs elsewhere.
pub trait StreamSink {
    /// Names the sink, so a factory never attaches the same one to a stream twice.
    fn id(&self) -> &str;
    /// A publisher (re)started the stream.
    fn on_publish(&mut self);
    fn on_frame(&mut self, frame: &SharedFrame);
    /// The publisher left. Return true to stay attached (e.g. a push waiting out its grace
    /// period for a republish), false to be dropped.
    fn on_unpublish(&mut self) -> bool;
    /// A sink that finished on its own (grace period over) is dropped at the next event.
    fn is_done(&self) -> bool {
        false
    }
    /// Its configuration went away (a push destination removed or disabled at runtime):
    /// wind down and finish.
    fn stop(&mut self) {}
    /// What the HTTP API shows about it; None for sinks it does not list.
    fn info(&self) -> Option<super::query::SinkInfo> {
        None
    }
}

/// Makes the sinks a stream gets when it starts publishing (called on the owner shard).
pub trait SinkFactory: Send + Sync {
    fn sinks_for(
        &self,
        shard: &ShardState,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>>;
    /// Whether a running sink this factory made should stay (its destination still exists
    /// and is enabled); None when the sink is not this factory's.
    fn keeps(&self, _key: &StreamKey, _sink_id: &str) -> Option<bool> {
        None
    }
}

#[derive(Default)]
struct Source {
    publisher: Option<u64>,
    cache: StreamCache,
    rebase: Rebase,
    subscribers: Vec<usize>,
    sinks: Vec<Box<dyn StreamSink>>,
    /// What the API shows: when the publisher started, ingest volume and codecs.
    since: Option<Instant>,
    bytes_in: u64,
    rate_mark: Option<(Instant, u64)>,
    bitrate_bps: f64,
    video: Option<String>,
    audio: Option<String>,
    /// width, height, framerate from onMetaData.
    picture: (Option<u32>, Option<u32>, Option<f64>),
}

impl Source {
    fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.subscribers.is_empty() && self.sinks.is_empty()
    }
}

struct Mirror {
    cache: StreamCache,
    /// Frames are ignored until the owner's snapshot arrives.
    synced: bool,
    live: bool,
    viewers: Slab<Viewer>,
}

pub struct ShardState {
    pub id: usize,
    me: Weak<ShardState>,
    /// Streams this shard is pulling from an origin (one upstream per stream), with the
    /// origin currently tried.
    pub pulls: RefCell<HashMap<StreamKey, String>>,
    /// Every connection on this shard, for the API (list, kick) and the role gauges.
    pub clients: RefCell<HashMap<u64, Rc<super::conn::Tag>>>,
    pub shared: Arc<Shared>,
    sources: RefCell<HashMap<StreamKey, Source>>,
    mirrors: RefCell<HashMap<StreamKey, Mirror>>,
    pub stats: ShardStats,
    pub viewer_policy: ViewerPolicy,
}

impl ShardState {
    /// `me` is this state's own `Rc` (built with `Rc::new_cyclic`), so it can start
    /// tasks (origin pulls) that outlive the call that decided to start them.
    pub fn new(id: usize, shared: Arc<Shared>, me: Weak<ShardState>) -> Self {
        Self {
            id,
            me,
            pulls: RefCell::default(),
            clients: RefCell::default(),
            sources: RefCell::default(),
            mirrors: RefCell::default(),
            stats: ShardStats::default(),
            viewer_policy: shared.cfg.viewer_policy(),
            shared,
        }
    }

    pub fn owner_of(&self, key: &str) -> usize {
        owner_of(key, self.shared.senders.len())
    }

    pub fn chunk_size(&self) -> u32 {
        self.shared.cfg.chunk_size
    }

    fn send(&self, shard: usize, msg: ShardMsg) {
        match self.shared.senders[shard].try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(ShardMsg::Frame { key, .. })) => {
                stats::bump(&self.stats.cross_shard_drops, 1);
                warn!(stream = %key, to_shard = shard, "cross-shard queue full, frame dropped");
            }
            Err(TrySendError::Full(msg)) => {
                // Control must arrive; wait for room off the hot path.
                let tx = self.shared.senders[shard].clone();
                tokio_uring::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Handles a message from another shard (or this one).
    pub fn on_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Subscribe { key, shard } => self.subscribe(key, shard),
            ShardMsg::Unsubscribe { key, shard } => self.unsubscribe(&key, shard),
            ShardMsg::Snapshot { key, cache, live } => self.mirror_snapshot(&key, cache, live),
            ShardMsg::Frame { key, frame } => {
                stats::record(&self.stats.cross_shard, frame.ingest.elapsed());
                self.mirror_frame(&key, &frame);
            }
            ShardMsg::Published { key } => self.mirror_published(&key),
            ShardMsg::Unpublished { key } => self.mirror_unpublished(&key),
            ShardMsg::Adopt(h) => super::conn::adopt(self.clone(), *h),
            ShardMsg::Query(q) => self.answer(q),
        }
    }

    // ---- owner side ----

    fn subscribe(&self, key: StreamKey, shard: usize) {
        let mut sources = self.sources.borrow_mut();
        let src = sources.entry(key.clone()).or_default();
        if !src.subscribers.contains(&shard) {
            src.subscribers.push(shard);
        }
        let live = src.publisher.is_some();
        let snapshot = ShardMsg::Snapshot {
            key: key.clone(),
            cache: src.cache.clone(),
            live,
        };
        drop(sources);
        self.route(shard, snapshot);
        // A player asked for a stream nobody publishes here: an edge fetches it.
        if !live && !self.shared.cfg.origin.is_empty() {
            if let Some(me) = self.me.upgrade() {
                crate::relay::pull::ensure(&me, &key);
            }
        }
    }

    /// A weak handle to this state, for tasks that report back after the call that
    /// started them returned (a push destination that finished).
    pub fn handle(&self) -> Weak<ShardState> {
        self.me.clone()
    }

    /// Drops the stream's sinks that finished on their own (a push whose grace period ran
    /// out), and the stream's entry once nothing else uses it. Otherwise they would stay
    /// until the key is published again, which for most keys is never.
    pub fn reap_sinks(&self, key: &str) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources.get_mut(key) else {
            return;
        };
        src.sinks.retain(|s| !s.is_done());
        if src.publisher.is_some() {
            // A sink that waited for its predecessor (same destination) to finish.
            let key: StreamKey = Arc::from(key);
            self.attach_new_sinks(&key, src);
        }
        if src.is_unused() {
            sources.remove(key);
        }
    }

    /// Shards with players of the stream (0 when nobody watches).
    pub fn subscriber_count(&self, key: &str) -> usize {
        self.sources
            .borrow()
            .get(key)
            .map_or(0, |s| s.subscribers.len())
    }

    /// The ingest was replaced (an origin reconnect) without the stream ending: players
    /// stay, timestamps continue forward, and the cache restarts from what comes next.
    pub fn restart_ingest(&self, key: &StreamKey) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources.get_mut(key) else {
            return;
        };
        src.rebase.need_base = true;
        src.cache.clear();
        let subs = src.subscribers.clone();
        drop(sources);
        // Mirrors restart their cache replicas too, or a late joiner on another shard
        // could get the old ingest's GOP behind the new one's config. They are still live,
        // so `Published` re-notifies no viewer; it only clears the replica.
        for s in subs {
            self.route(s, ShardMsg::Published { key: key.clone() });
        }
    }

    fn unsubscribe(&self, key: &str, shard: usize) {
        let mut sources = self.sources.borrow_mut();
        if let Some(src) = sources.get_mut(key) {
            src.subscribers.retain(|&s| s != shard);
            if src.is_unused() {
                sources.remove(key);
            }
        }
    }

    /// Delivers a message to a shard; to this shard it is handled in place.
    fn route(&self, shard: usize, msg: ShardMsg) {
        if shard == self.id {
            match msg {
                ShardMsg::Snapshot { key, cache, live } => self.mirror_snapshot(&key, cache, live),
                ShardMsg::Frame { key, frame } => self.mirror_frame(&key, &frame),
                ShardMsg::Published { key } => self.mirror_published(&key),
                ShardMsg::Unpublished { key } => self.mirror_unpublished(&key),
                ShardMsg::Subscribe { key, shard } => self.subscribe(key, shard),
                ShardMsg::Unsubscribe { key, shard } => self.unsubscribe(&key, shard),
                ShardMsg::Adopt(_) | ShardMsg::Query(_) => {
                    unreachable!("hand-offs and queries are never routed locally")
                }
            }
        } else {
            self.send(shard, msg);
        }
    }

    pub fn start_publish(&self, key: &StreamKey, conn_id: u64) -> Result<(), PublishError> {
        let mut sources = self.sources.borrow_mut();
        let src = sources.entry(key.clone()).or_default();
        if src.publisher.is_some() {
            return Err(PublishError::BadName);
        }
        src.publisher = Some(conn_id);
        src.cache.clear();
        src.rebase.need_base = true;
        src.since = Some(Instant::now());
        src.bytes_in = 0;
        src.rate_mark = None;
        src.bitrate_bps = 0.0;
        src.video = None;
        src.audio = None;
        src.picture = Default::default();
        src.sinks.retain(|s| !s.is_done());
        for sink in &mut src.sinks {
            sink.on_publish();
        }
        self.attach_new_sinks(key, src);
        let subs = src.subscribers.clone();
        drop(sources);
        for s in subs {
            self.route(s, ShardMsg::Published { key: key.clone() });
        }
        Ok(())
    }

    pub fn end_publish(&self, key: &StreamKey, conn_id: u64) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources.get_mut(key) else {
            return;
        };
        if src.publisher != Some(conn_id) {
            return;
        }
        src.publisher = None;
        src.since = None;
        src.cache.clear();
        src.sinks.retain_mut(|s| s.on_unpublish() && !s.is_done());
        let subs = src.subscribers.clone();
        if src.is_unused() {
            sources.remove(key);
        }
        drop(sources);
        for s in subs {
            self.route(s, ShardMsg::Unpublished { key: key.clone() });
        }
    }

    /// Ingests one message from the stream's publisher: encode once, cache, forward once per shard.
    pub fn publish_frame(&self, key: &StreamKey, kind: MediaKind, timestamp: u32, payload: Bytes) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources.get_mut(key) else {
            return;
        };
        let ts = src.rebase.apply(timestamp);
        src.bytes_in += payload.len() as u64;
        stats::bump(&self.stats.ingested[kind as usize], 1);
        match kind {
            MediaKind::Video if src.video.is_none() => {
                let info = crate::media::tag::inspect_video(&payload);
                src.video = Some(crate::media::tag::video_codec_name(info.codec));
            }
            MediaKind::Audio if src.audio.is_none() => {
                let info = crate::media::tag::inspect_audio(&payload);
                src.audio = Some(crate::media::tag::audio_codec_name(info.codec));
            }
            MediaKind::Metadata => src.picture = picture_of(&payload),
            _ => {}
        }
        let frame: SharedFrame = Arc::new(Frame::new(kind, ts, payload, self.chunk_size()));
        src.cache.apply(&frame);
        for sink in &mut src.sinks {
            sink.on_frame(&frame);
        }
        let subs = src.subscribers.clone();
        drop(sources);
        for s in subs {
            self.route(
                s,
                ShardMsg::Frame {
                    key: key.clone(),
                    frame: frame.clone(),
                },
            );
        }
    }

    // ---- mirror side ----

    /// Adds a player; it starts at once if this shard already mirrors the stream.
    pub fn add_viewer(&self, key: &StreamKey, mut viewer: Viewer) -> usize {
        let mut mirrors = self.mirrors.borrow_mut();
        let new = !mirrors.contains_key(key);
        let m = mirrors.entry(key.clone()).or_insert_with(|| Mirror {
            cache: StreamCache::default(),
            synced: false,
            live: false,
            viewers: Slab::new(),
        });
        if m.synced {
            viewer.start(&m.cache);
            if !m.live {
                viewer.queue.clear_play();
            }
        }
        let slot = m.viewers.insert(viewer);
        drop(mirrors);
        if new {
            let owner = self.owner_of(key);
            self.route(
                owner,
                ShardMsg::Subscribe {
                    key: key.clone(),
                    shard: self.id,
                },
            );
        }
        slot
    }

    pub fn remove_viewer(&self, key: &StreamKey, slot: usize) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        m.viewers.try_remove(slot);
        if m.viewers.is_empty() {
            mirrors.remove(key);
            drop(mirrors);
            let owner = self.owner_of(key);
            self.route(
                owner,
                ShardMsg::Unsubscribe {
                    key: key.clone(),
                    shard: self.id,
                },
            );
        }
    }

    pub fn with_viewer(&self, key: &StreamKey, slot: usize, f: impl FnOnce(&mut Viewer)) {
        if let Some(v) = self
            .mirrors
            .borrow_mut()
            .get_mut(key)
            .and_then(|m| m.viewers.get_mut(slot))
        {
            f(v);
        }
    }

    fn mirror_snapshot(&self, key: &str, cache: StreamCache, live: bool) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        m.cache = cache;
        m.synced = true;
        m.live = live;
        for (_, v) in m.viewers.iter_mut() {
            v.start(&m.cache);
            if !live {
                v.queue.clear_play();
            }
        }
    }

    fn mirror_frame(&self, key: &str, frame: &SharedFrame) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        if !m.synced {
            return;
        }
        m.cache.apply(frame);
        let now = std::time::Instant::now();
        let (mut bytes, mut age, mut kicked, mut queued) = (0, 0, 0, 0);
        for (_, v) in m.viewers.iter_mut() {
            match v.deliver(frame, now) {
                Delivery::Dropped(DropReason::QueueBytes) => bytes += 1,
                Delivery::Dropped(DropReason::QueueAge) => age += 1,
                Delivery::Kicked => kicked += 1,
                Delivery::Queued => queued += 1,
                Delivery::Skipped => {}
            }
        }
        stats::bump(&self.stats.relayed, queued);
        if bytes + age + kicked > 0 {
            stats::bump(&self.stats.drops_queue_bytes, bytes);
            stats::bump(&self.stats.drops_queue_age, age);
            stats::bump(&self.stats.kicked_behind, kicked);
            if kicked > 0 {
                warn!(stream = %key, viewers = kicked, "viewers stayed behind too long, disconnecting");
            }
        }
    }

    /// The coalescing tick: wake every viewer whose oldest waiting frame has used up
    /// `due` of its budget (the tick runs a fraction of the budget apart, so no frame
    /// waits past the budget and viewers fed by one stream still flush together).
    pub fn flush_viewers(&self, now: std::time::Instant, due: std::time::Duration) {
        for m in self.mirrors.borrow().values() {
            for (_, v) in m.viewers.iter() {
                if v.queue.age(now) >= due {
                    v.queue.flush();
                }
            }
        }
    }

    fn mirror_published(&self, key: &str) {
        if let Some(m) = self.mirrors.borrow_mut().get_mut(key) {
            m.cache.clear();
            if m.synced && !m.live {
                for (_, v) in m.viewers.iter_mut() {
                    v.published();
                }
            }
            m.live = true;
        }
    }

    fn mirror_unpublished(&self, key: &str) {
        if let Some(m) = self.mirrors.borrow_mut().get_mut(key) {
            m.cache.clear();
            m.live = false;
            debug!(stream = %key, viewers = m.viewers.len(), "publisher left, notifying viewers");
            for (_, v) in m.viewers.iter_mut() {
                v.unpublished();
            }
        }
    }

    /// Once a second: latency histograms and counters to the control plane, and gauges.
    pub fn export(&self) {
        self.stats.export(&self.shared.control, self.id);
        let shard = self.id.to_string();
        let viewers: usize = self
            .mirrors
            .borrow()
            .values()
            .map(|m| m.viewers.len())
            .sum();
        let streams = self
            .sources
            .borrow()
            .values()
            .filter(|s| s.publisher.is_some())
            .count();
        metrics::gauge!("rtmp_viewers", "shard" => shard.clone()).set(viewers as f64);
        metrics::gauge!("rtmp_streams", "shard" => shard.clone()).set(streams as f64);
        let mut roles = [0usize; 3];
        for t in self.clients.borrow().values() {
            roles[t.role.get() as usize] += 1;
        }
        for (role, n) in super::conn::ClientRole::ALL.iter().zip(roles) {
            metrics::gauge!("rtmp_connections", "shard" => shard.clone(), "role" => role.label())
                .set(n as f64);
        }
        let now = Instant::now();
        for src in self.sources.borrow_mut().values_mut() {
            if src.publisher.is_none() {
                continue;
            }
            if let Some((at, bytes)) = src.rate_mark {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    let bps = (src.bytes_in - bytes) as f64 * 8.0 / secs;
                    // Smoothed over a few seconds: a keyframe every 2 s would make the
                    // per-second figure jump.
                    src.bitrate_bps = if src.bitrate_bps == 0.0 {
                        bps
                    } else {
                        0.7 * src.bitrate_bps + 0.3 * bps
                    };
                }
            }
            src.rate_mark = Some((now, src.bytes_in));
        }
    }

    /// Starts the sinks a stream does not have yet (on publish, or when destinations
    /// were added at runtime).
    fn attach_new_sinks(&self, key: &StreamKey, src: &mut Source) {
        let existing: Vec<&str> = src.sinks.iter().map(|s| s.id()).collect();
        let mut new: Vec<Box<dyn StreamSink>> = self
            .shared
            .sinks
            .iter()
            .flat_map(|f| f.sinks_for(self, key, &existing))
            .collect();
        for sink in &mut new {
            sink.on_publish();
            // A stream already running: start the new sink from its cached preamble.
            for f in src
                .cache
                .metadata()
                .into_iter()
                .chain(src.cache.config_frames())
                .chain(src.cache.gop())
            {
                sink.on_frame(f);
            }
        }
        src.sinks.extend(new);
    }

    /// Answers the control plane.
    fn answer(&self, q: super::query::Query) {
        use super::query::Query;
        match q {
            Query::Streams(tx) => {
                let _ = tx.send(self.streams());
            }
            Query::Clients(tx) => {
                let _ = tx.send(self.client_list());
            }
            Query::KickClient(id, tx) => {
                let t = self.clients.borrow().get(&id).cloned();
                if let Some(t) = &t {
                    warn!(conn = id, peer = %t.peer, shard = self.id, "disconnected by the API");
                    t.queue.kill();
                }
                let _ = tx.send(t.is_some());
            }
            Query::KickPublisher(key, tx) => {
                let publisher = self
                    .sources
                    .borrow()
                    .get(key.as_str())
                    .and_then(|s| s.publisher);
                let t = publisher.and_then(|id| self.clients.borrow().get(&id).cloned());
                if let Some(t) = &t {
                    warn!(conn = t.id, peer = %t.peer, shard = self.id, key = %key, "publisher disconnected by the API");
                    t.queue.kill();
                }
                let _ = tx.send(t.is_some());
            }
            Query::ReconcileSinks => self.reconcile_sinks(),
        }
    }

    /// Stops sinks whose destination went away and starts those of new destinations, on
    /// every live stream; the others run on untouched.
    fn reconcile_sinks(&self) {
        let mut sources = self.sources.borrow_mut();
        for (key, src) in sources.iter_mut() {
            for sink in &mut src.sinks {
                if self
                    .shared
                    .sinks
                    .iter()
                    .any(|f| f.keeps(key, sink.id()) == Some(false))
                {
                    sink.stop();
                }
            }
            if src.publisher.is_some() {
                self.attach_new_sinks(key, src);
            }
        }
    }

    fn streams(&self) -> super::query::ShardStreams {
        use super::query::{CodecInfo, PublisherInfo, ShardStreams, StreamInfo};
        let clients = self.clients.borrow();
        let pulls = self.pulls.borrow();
        let now = Instant::now();
        let owned = self
            .sources
            .borrow()
            .iter()
            .filter(|(_, s)| s.publisher.is_some())
            .map(|(key, s)| {
                let (app, name) = key.split_once('/').unwrap_or(("", key));
                let publisher =
                    s.publisher
                        .and_then(|id| clients.get(&id))
                        .map(|t| PublisherInfo {
                            id: t.id,
                            peer: t.peer.to_string(),
                        });
                StreamInfo {
                    key: key.to_string(),
                    app: app.to_string(),
                    name: name.to_string(),
                    shard: self.id,
                    publisher,
                    origin: pulls.get(key).cloned(),
                    video: s.video.clone().map(|codec| CodecInfo {
                        codec,
                        width: s.picture.0,
                        height: s.picture.1,
                        framerate: s.picture.2,
                    }),
                    audio: s.audio.clone().map(|codec| CodecInfo {
                        codec,
                        ..Default::default()
                    }),
                    ingress_bitrate_bps: s.bitrate_bps.round(),
                    viewers: 0,
                    uptime_secs: s.since.map_or(0.0, |t| now.duration_since(t).as_secs_f64()),
                    push: s.sinks.iter().filter_map(|k| k.info()).collect(),
                }
            })
            .collect();
        let viewers = self
            .mirrors
            .borrow()
            .iter()
            .map(|(k, m)| (k.to_string(), m.viewers.len()))
            .collect();
        ShardStreams { owned, viewers }
    }

    fn client_list(&self) -> Vec<super::query::ClientInfo> {
        let now = Instant::now();
        self.clients
            .borrow()
            .values()
            .map(|t| super::query::ClientInfo {
                id: t.id,
                peer: t.peer.to_string(),
                shard: self.id,
                role: t.role.get().label(),
                stream: t.key.borrow().as_deref().map(str::to_string),
                connected_secs: now.duration_since(t.since).as_secs_f64(),
                agent: t.agent.borrow().as_deref().map(str::to_string),
            })
            .collect()
    }
}

/// Width, height and frame rate from an onMetaData body (what encoders announce; the API
/// shows it). Anything unparsable gives nothing.
fn picture_of(payload: &[u8]) -> (Option<u32>, Option<u32>, Option<f64>) {
    let Ok(values) = crate::protocol::amf::decode_all(payload) else {
        return Default::default();
    };
    let Some(meta) = values.iter().find(|v| v.properties().is_some()) else {
        return Default::default();
    };
    let num = |k: &str| meta.get(k).and_then(|v| v.as_number());
    let dim = |k: &str| {
        num(k)
            .filter(|n| (1.0..=65535.0).contains(n))
            .map(|n| n as u32)
    };
    let fps = num("framerate")
        .or_else(|| num("fps"))
        .filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
    (dim("width"), dim("height"), fps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_passes_through_then_continues() {
        let mut r = Rebase {
            need_base: true,
            ..Default::default()
        };
        assert_eq!(r.apply(5000), 5000);
        assert_eq!(r.apply(5040), 5040);
        r.need_base = true; // republish from zero
        assert_eq!(r.apply(0), 5041);
        assert_eq!(r.apply(40), 5081);
    }

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..8 {
            let o = owner_of("live/test", n);
            assert!(o < n);
            assert_eq!(o, owner_of("live/test", n));
        }
    }
}
