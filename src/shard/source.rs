//! The owner side of a stream: the publisher slot, the cache late joiners start from,
//! timestamp rebasing across republishes, the stream's sinks (recording, pushes) and which
//! shards mirror it. Frames are encoded once here and cross to each mirror shard once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::warn;

use super::hooks::StreamSink;
use super::state::{PublishError, ShardState, StreamKey};
use super::stats;
use super::transmission::{ControlMsg, MediaMsg};
use crate::media::cache::StreamCache;
use crate::media::frame::{Frame, MediaKind, SharedFrame};
use crate::media::metadata::Picture;
use crate::media::tag;

/// How long a publisher must have been silent before a new publish of its key replaces it.
const TAKEOVER_QUIET: Duration = Duration::from_secs(2);

/// Keeps one stream's timestamps moving forward when a publisher reconnects from zero.
#[derive(Default)]
pub(super) struct Rebase {
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

#[derive(Default)]
pub(super) struct Source {
    pub publisher: Option<u64>,
    pub cache: StreamCache,
    rebase: Rebase,
    pub subscribers: Vec<usize>,
    pub sinks: Vec<Box<dyn StreamSink>>,
    /// What the API shows: when the publisher started, ingest volume and codecs.
    pub since: Option<Instant>,
    bytes_in: u64,
    rate_mark: Option<(Instant, u64)>,
    /// Since when the publisher has sent nothing (seen at the once-a-second stats tick).
    quiet_since: Option<Instant>,
    pub bitrate_bps: f64,
    pub video: Option<String>,
    pub audio: Option<String>,
    pub picture: Picture,
}

impl Source {
    fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.subscribers.is_empty() && self.sinks.is_empty()
    }

    /// Ingest bitrate, smoothed over a few seconds: a keyframe every 2 s would make the
    /// per-second figure jump.
    pub fn update_bitrate(&mut self, now: Instant) {
        if self.publisher.is_none() {
            return;
        }
        if let Some((at, bytes)) = self.rate_mark {
            if self.bytes_in == bytes {
                self.quiet_since.get_or_insert(at);
            } else {
                self.quiet_since = None;
            }
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                let bps = (self.bytes_in - bytes) as f64 * 8.0 / secs;
                self.bitrate_bps = if self.bitrate_bps == 0.0 {
                    bps
                } else {
                    0.7 * self.bitrate_bps + 0.3 * bps
                };
            }
        }
        self.rate_mark = Some((now, self.bytes_in));
    }
}

impl ShardState {
    pub(super) fn subscribe(&self, key: StreamKey, shard: usize, epoch: u64) {
        let mut sources = self.sources.borrow_mut();
        let src = sources.entry(key.clone()).or_default();
        if !src.subscribers.contains(&shard) {
            src.subscribers.push(shard);
        }
        let live = src.publisher.is_some();
        let snapshot = MediaMsg::Snapshot {
            key: key.clone(),
            cache: src.cache.clone(),
            live,
            epoch,
        };
        drop(sources);
        self.route_media(shard, snapshot);
        if !live {
            self.open_upstream(&key);
        }
    }

    /// Someone wants a stream nobody publishes here: an edge fetches it from its origin
    /// (a no-op on a server without one, or with that pull already under way).
    fn open_upstream(&self, key: &StreamKey) {
        if let (Some(up), Some(me)) = (&self.shared.hooks.upstream, self.rc()) {
            up.open(&me, key);
        }
    }

    /// `key` wanted by a viewer that is not a player (HTTP): on its owner shard, an edge
    /// starts pulling it when nobody publishes it here.
    pub(super) fn fetch(&self, key: &str) {
        if self.owner_of(key) != self.id {
            return;
        }
        let live = self
            .sources
            .borrow()
            .get(key)
            .is_some_and(|s| s.publisher.is_some());
        if !live {
            self.open_upstream(&Arc::from(key));
        }
    }

    pub(super) fn unsubscribe(&self, key: &str, shard: usize) {
        let mut sources = self.sources.borrow_mut();
        if let Some(src) = sources.get_mut(key) {
            src.subscribers.retain(|&s| s != shard);
            if src.is_unused() {
                sources.remove(key);
            }
        }
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

    /// Whether anyone watches `key`: players on any shard, or a sink's own viewers
    /// (HTTP-FLV, HLS). An edge keeps its pull open while it is.
    pub fn is_watched(&self, key: &str) -> bool {
        self.sources
            .borrow()
            .get(key)
            .is_some_and(|s| !s.subscribers.is_empty() || s.sinks.iter().any(|k| k.has_viewers()))
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
            self.route_media(s, MediaMsg::Published { key: key.clone() });
        }
    }

    /// Starts `conn_id`'s publish of `key`. A publisher already there keeps the stream,
    /// unless it has sent nothing for `TAKEOVER_QUIET`: an encoder reconnecting after its
    /// network dropped finds its old connection still open (nothing tells a receiver that
    /// a silent peer is gone), and waiting out the publisher timeout would keep it off air.
    pub fn start_publish(&self, key: &StreamKey, conn_id: u64) -> Result<(), PublishError> {
        if self.tasks.is_stopping() {
            return Err(PublishError::ShuttingDown);
        }
        let stale = {
            let sources = self.sources.borrow();
            match sources.get(key) {
                Some(src) => match (src.publisher, src.quiet_since) {
                    (Some(old), Some(q)) if q.elapsed() >= TAKEOVER_QUIET => Some((old, q)),
                    (Some(_), _) => return Err(PublishError::BadName),
                    (None, _) => None,
                },
                None => None,
            }
        };
        if let Some((old, quiet)) = stale {
            // Only a client connection is replaced: it is closed here. An origin pull
            // holding the key keeps it (it fails over by itself).
            let Some(tag) = self.clients.borrow().get(&old).cloned() else {
                return Err(PublishError::BadName);
            };
            warn!(
                key = &**key,
                old_conn = old,
                new_conn = conn_id,
                quiet_ms = quiet.elapsed().as_millis() as u64,
                "silent publisher replaced by a new publish"
            );
            metrics::counter!("rtmp_publishers_replaced_total").increment(1);
            tag.queue.kill();
            self.end_publish(key, old);
        }
        let mut sources = self.sources.borrow_mut();
        let src = sources.entry(key.clone()).or_default();
        src.publisher = Some(conn_id);
        src.cache.clear();
        src.rebase.need_base = true;
        src.since = Some(Instant::now());
        src.bytes_in = 0;
        src.rate_mark = None;
        src.quiet_since = None;
        src.bitrate_bps = 0.0;
        src.video = None;
        src.audio = None;
        src.picture = Picture::default();
        src.sinks.retain(|s| !s.is_done());
        for sink in &mut src.sinks {
            sink.on_publish();
        }
        self.attach_new_sinks(key, src);
        let subs = src.subscribers.clone();
        drop(sources);
        for s in subs {
            self.route_media(s, MediaMsg::Published { key: key.clone() });
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
            self.route_media(s, MediaMsg::Unpublished { key: key.clone() });
        }
    }

    /// Ingests one message from the stream's publisher: encode once, cache, forward once per shard.
    /// Frames from a connection that no longer holds the publisher slot (just replaced, with
    /// bytes still buffered) are dropped. `at`: when it was read.
    pub fn publish_frame(
        &self,
        key: &StreamKey,
        publisher: u64,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        at: Instant,
    ) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources
            .get_mut(key)
            .filter(|s| s.publisher == Some(publisher))
        else {
            return;
        };
        let ts = src.rebase.apply(timestamp);
        src.bytes_in += payload.len() as u64;
        stats::bump(&self.stats.ingested[kind as usize], 1);
        match kind {
            MediaKind::Video if src.video.is_none() => {
                let info = tag::inspect_video(&payload);
                src.video = Some(tag::video_codec_name(info.codec));
            }
            MediaKind::Audio if src.audio.is_none() => {
                let info = tag::inspect_audio(&payload);
                src.audio = Some(tag::audio_codec_name(info.codec));
            }
            MediaKind::Metadata => src.picture = Picture::from_metadata(&payload),
            _ => {}
        }
        let frame: SharedFrame =
            Arc::new(Frame::received(kind, ts, payload, self.chunk_size(), at));
        src.cache.apply(&frame);
        for sink in &mut src.sinks {
            sink.on_frame(&frame);
            sink.serve_joiners(&src.cache);
        }
        let subs = src.subscribers.clone();
        drop(sources);
        for s in subs {
            self.route_media(
                s,
                MediaMsg::Frame {
                    key: key.clone(),
                    frame: frame.clone(),
                },
            );
        }
    }

    /// Starts `key`'s sinks' late joiners now (their bell rang), once the stream has media
    /// to start them with; until then its next frame does.
    pub(super) fn serve_joiners(&self, key: &StreamKey) {
        let mut sources = self.sources.borrow_mut();
        let Some(src) = sources.get_mut(key).filter(|s| s.publisher.is_some()) else {
            return;
        };
        if !src.cache.has_gop() && src.cache.config_frames().is_empty() {
            return;
        }
        for sink in &mut src.sinks {
            sink.serve_joiners(&src.cache);
        }
    }

    /// Starts the sinks a stream does not have yet (on publish, or when destinations
    /// were added at runtime).
    fn attach_new_sinks(&self, key: &StreamKey, src: &mut Source) {
        if self.tasks.is_stopping() {
            // A sink reaped during the drain must not come back as a new session.
            return;
        }
        let existing: Vec<&str> = src.sinks.iter().map(|s| s.id()).collect();
        let ctx = self.sink_context();
        let mut new: Vec<Box<dyn StreamSink>> = self
            .shared
            .hooks
            .sinks
            .iter()
            .flat_map(|f| f.sinks_for(&ctx, key, &existing))
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

    /// Stops sinks whose destination went away and starts those of new destinations, on
    /// every live stream; the others run on untouched.
    pub(super) fn reconcile_sinks(&self) {
        let mut sources = self.sources.borrow_mut();
        for (key, src) in sources.iter_mut() {
            for sink in &mut src.sinks {
                if self
                    .shared
                    .hooks
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

    /// Shutdown: every sink winds down now (pushes unpublish, recordings end); none is
    /// started again (`attach_new_sinks`).
    pub(super) fn stop_all_sinks(&self) {
        for src in self.sources.borrow_mut().values_mut() {
            for sink in &mut src.sinks {
                sink.stop();
            }
        }
    }

    /// Tells the stream's owner that this shard's mirror `epoch` wants its frames (None:
    /// no longer wants them); in place when this shard is the owner.
    pub(super) fn tell_owner(&self, key: &StreamKey, subscribe: Option<u64>) {
        let owner = self.owner_of(key);
        let key = key.clone();
        let shard = self.id;
        self.route_control(
            owner,
            match subscribe {
                Some(epoch) => ControlMsg::Subscribe { key, shard, epoch },
                None => ControlMsg::Unsubscribe { key, shard },
            },
        );
    }
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
}
