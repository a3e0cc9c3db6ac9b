//! HTTP-FLV (`GET /{app}/{name}.flv` on the media listener): each published stream gets a
//! sink on its owner shard that hands every frame, framed as an FLV tag once, to the
//! stream's HTTP viewers. A new viewer waits in the stream's pending list and rings the
//! sink's bell; the owner shard then starts it from the stream's own late-join cache (at
//! once, or at the first frame if the stream has no media yet): the sink keeps no second
//! cache, and a stream nobody watches over HTTP costs it nothing per frame. Each
//! viewer is a subscriber with the same admission policy (keyframe gating, byte/age budget,
//! video dropped first, kicked when behind too long) and bounded queue as an RTMP player;
//! the media listener's threads drain the queues into the sockets, so the shard never
//! waits on one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::fanout::admission::{Admission, AdmissionPolicy, Verdict};
use crate::media::cache::StreamCache;
use crate::media::flv::{self, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::media::frame::{MediaKind, SharedFrame};
use crate::shard::hooks::{JoinBell, SinkContext, SinkFactory, StreamSink};
use crate::shard::state::StreamKey;

const SINK_ID: &str = "httpflv";

/// One frame as an FLV tag: header, the shared payload, PreviousTagSize.
#[derive(Debug)]
pub struct Tag {
    pub frame: SharedFrame,
    pub head: Bytes,
    pub tail: Bytes,
}

impl Tag {
    fn new(frame: &SharedFrame, timestamp: u32) -> Arc<Self> {
        let size = frame.payload.len() as u32;
        let tag_type = match frame.kind {
            MediaKind::Audio => TAG_AUDIO,
            MediaKind::Video => TAG_VIDEO,
            MediaKind::Metadata | MediaKind::Data => TAG_SCRIPT,
        };
        Arc::new(Self {
            frame: frame.clone(),
            head: Bytes::copy_from_slice(&flv::tag_header(tag_type, timestamp, size)),
            tail: Bytes::copy_from_slice(&(size + 11).to_be_bytes()),
        })
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.frame.payload.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What the viewer's response body takes next.
pub enum Next {
    Data(Bytes),
    Wait,
    End,
}

struct ViewerState {
    items: VecDeque<(Instant, Bytes)>,
    bytes: usize,
    admission: Admission,
    waker: Option<Waker>,
    closed: bool,
}

/// One HTTP-FLV viewer's queue: filled on the owner shard, drained by its response body.
pub struct Viewer {
    state: Mutex<ViewerState>,
}

impl Viewer {
    /// The next buffer to send; registers `waker` when there is none yet.
    pub fn next(&self, waker: &Waker) -> Next {
        let Ok(mut s) = self.state.lock() else {
            return Next::End;
        };
        if let Some((_, b)) = s.items.pop_front() {
            s.bytes -= b.len();
            return Next::Data(b);
        }
        if s.closed {
            return Next::End;
        }
        s.waker = Some(waker.clone());
        Next::Wait
    }

    fn push_all(s: &mut ViewerState, now: Instant, bufs: impl IntoIterator<Item = Bytes>) {
        for b in bufs {
            s.bytes += b.len();
            s.items.push_back((now, b));
        }
    }

    /// Offers a tag; false when the viewer must go (kicked or gone).
    fn offer(&self, tag: &Tag, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.closed {
            return false;
        }
        let age = s
            .items
            .front()
            .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at));
        let queued = s.bytes;
        match s.admission.admit(&tag.frame, queued, age, now) {
            Verdict::Admit => {
                Self::push_all(
                    &mut s,
                    now,
                    [
                        tag.head.clone(),
                        tag.frame.payload.clone(),
                        tag.tail.clone(),
                    ],
                );
            }
            Verdict::Skip => return true,
            Verdict::Drop(reason) => {
                metrics::counter!("rtmp_httpflv_dropped_frames_total", "reason" => reason.label())
                    .increment(1);
                return true;
            }
            Verdict::Kick => {
                metrics::counter!("rtmp_httpflv_kicked_total").increment(1);
                s.closed = true;
            }
        }
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        !s.closed
    }

    /// Fills a pending viewer's queue with the FLV header, metadata, decoder configs and the
    /// cached GOP; live tags follow.
    fn start(&self, cache: &StreamCache) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let has = |k: MediaKind| cache.config_frames().iter().any(|f| f.kind == k);
        let (audio, video) = match (has(MediaKind::Audio), has(MediaKind::Video)) {
            (false, false) => (true, true),
            known => known,
        };
        let mut bufs = vec![Bytes::copy_from_slice(&flv::file_header(audio, video))];
        let start_ts = cache.gop().first().map_or(0, |f| f.timestamp);
        let mut tag = |f: &SharedFrame, ts: u32| {
            let t = Tag::new(f, ts);
            bufs.extend([t.head.clone(), f.payload.clone(), t.tail.clone()]);
        };
        // ffmpeg's FLV demuxer reads onMetaData as metadata only at timestamp 0.
        if let Some(m) = cache.metadata() {
            tag(m, 0);
        }
        for f in cache.config_frames() {
            tag(f, start_ts);
        }
        for f in cache.gop() {
            tag(f, f.timestamp);
        }
        s.admission.set_waiting_for_keyframe(!cache.has_gop());
        Self::push_all(&mut s, Instant::now(), bufs);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Ends the response once the queue is drained (the publisher left, or a kick).
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

#[derive(Default)]
struct StreamState {
    /// Subscribed, not yet started by the sink.
    pending: Vec<Arc<Viewer>>,
    live: bool,
    /// The current sink's: asks the owner shard to start the pending viewers.
    bell: Option<Arc<JoinBell>>,
}

/// One stream's HTTP-FLV side, shared by its sink and the media listener.
#[derive(Default)]
pub struct FlvStream {
    state: Mutex<StreamState>,
    /// `state.pending` is not empty: the sink looks at the lock only then.
    has_pending: AtomicBool,
}

/// Every stream's HTTP-FLV side: a `SinkFactory` for the shards, viewers for the listener.
pub struct HttpFlv {
    policy: AdmissionPolicy,
    streams: Mutex<HashMap<StreamKey, Arc<FlvStream>>>,
    viewers: AtomicUsize,
}

impl HttpFlv {
    /// `policy` is the RTMP players' admission policy.
    pub fn new(policy: AdmissionPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            streams: Mutex::default(),
            viewers: AtomicUsize::new(0),
        })
    }

    /// The streams published now, sorted (the preview page lists them).
    pub fn live_keys(&self) -> Vec<StreamKey> {
        let Ok(map) = self.streams.lock() else {
            return Vec::new();
        };
        let mut keys: Vec<StreamKey> = map
            .iter()
            .filter(|(_, s)| s.state.lock().is_ok_and(|st| st.live))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// A new viewer of `key`; None when the stream is not live. Its queue gets the FLV
    /// header, metadata, decoder configs and the cached GOP when the owner shard answers
    /// the bell.
    pub fn subscribe(self: &Arc<Self>, key: &str) -> Option<ViewerGuard> {
        let stream = self.streams.lock().ok()?.get(key).cloned()?;
        let mut st = stream.state.lock().ok()?;
        if !st.live {
            return None;
        }
        let viewer = Arc::new(Viewer {
            state: Mutex::new(ViewerState {
                items: VecDeque::new(),
                bytes: 0,
                admission: Admission::new(self.policy),
                waker: None,
                closed: false,
            }),
        });
        st.pending.push(viewer.clone());
        stream.has_pending.store(true, Ordering::Release);
        if let Some(bell) = &st.bell {
            bell.ring();
        }
        self.viewers.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("rtmp_httpflv_viewers").increment(1.0);
        Some(ViewerGuard {
            hub: self.clone(),
            viewer,
        })
    }
}

/// A subscribed viewer; dropping it (the response finished or the client left)
/// unsubscribes it.
pub struct ViewerGuard {
    hub: Arc<HttpFlv>,
    pub viewer: Arc<Viewer>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        // The sink drops closed viewers at its next frame; mark it so.
        self.viewer.close();
        self.hub.viewers.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("rtmp_httpflv_viewers").decrement(1.0);
    }
}

impl SinkFactory for HttpFlv {
    fn sinks_for(
        &self,
        ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        if existing.contains(&SINK_ID) {
            return Vec::new();
        }
        let Ok(mut map) = self.streams.lock() else {
            return Vec::new();
        };
        let stream = map.entry(key.clone()).or_default().clone();
        let bell = ctx.join_bell(key);
        if let Ok(mut st) = stream.state.lock() {
            st.bell = Some(bell.clone());
        }
        vec![Box::new(FlvSink {
            stream,
            viewers: Vec::new(),
            bell,
        })]
    }
}

/// One stream's HTTP-FLV feed on its owner shard.
struct FlvSink {
    stream: Arc<FlvStream>,
    /// Started viewers (only the sink touches them, so no lock per frame).
    viewers: Vec<Arc<Viewer>>,
    bell: Arc<JoinBell>,
}

impl Drop for FlvSink {
    fn drop(&mut self) {
        self.bell.close();
    }
}

impl FlvSink {
    fn end_viewers(&mut self) {
        let pending = match self.stream.state.lock() {
            Ok(mut st) => {
                st.live = false;
                self.stream.has_pending.store(false, Ordering::Relaxed);
                std::mem::take(&mut st.pending)
            }
            Err(_) => Vec::new(),
        };
        for v in self.viewers.drain(..).chain(pending) {
            v.close();
        }
    }
}

impl StreamSink for FlvSink {
    fn id(&self) -> &str {
        SINK_ID
    }

    fn on_publish(&mut self) {
        if let Ok(mut st) = self.stream.state.lock() {
            st.live = true;
        }
    }

    fn on_frame(&mut self, frame: &SharedFrame) {
        if self.viewers.is_empty() {
            return;
        }
        let ts = if frame.kind == MediaKind::Metadata {
            0
        } else {
            frame.timestamp
        };
        let tag = Tag::new(frame, ts);
        let now = Instant::now();
        self.viewers.retain(|v| v.offer(&tag, now));
    }

    fn has_viewers(&self) -> bool {
        !self.viewers.is_empty() || self.stream.has_pending.load(Ordering::Relaxed)
    }

    fn serve_joiners(&mut self, cache: &StreamCache) {
        if !self.stream.has_pending.load(Ordering::Acquire) {
            return;
        }
        let pending = match self.stream.state.lock() {
            Ok(mut st) => {
                self.stream.has_pending.store(false, Ordering::Relaxed);
                std::mem::take(&mut st.pending)
            }
            Err(_) => return,
        };
        for v in pending {
            v.start(cache);
            self.viewers.push(v);
        }
    }

    fn on_unpublish(&mut self) -> bool {
        self.end_viewers();
        false
    }

    fn stop(&mut self) {
        self.on_unpublish();
    }
}

/// For tests and tools: the bytes a viewer gets, flattened.
pub fn drain(viewer: &Viewer) -> Vec<u8> {
    let waker = Waker::noop();
    let mut out = Vec::new();
    while let Next::Data(b) = viewer.next(waker) {
        out.extend_from_slice(&b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::read_tags;
    use crate::media::frame::Frame;

    fn frame(kind: MediaKind, ts: u32, payload: &'static [u8]) -> SharedFrame {
        Arc::new(Frame::new(kind, ts, Bytes::from_static(payload), 4096))
    }

    /// The sink with the stream's cache beside it, fed as the owner shard feeds them.
    struct Owner {
        sink: FlvSink,
        cache: StreamCache,
    }

    impl Owner {
        fn on_frame(&mut self, f: &SharedFrame) {
            self.cache.apply(f);
            self.sink.on_frame(f);
            self.sink.serve_joiners(&self.cache);
        }
    }

    fn hub_with_stream() -> (Arc<HttpFlv>, Owner) {
        let hub = HttpFlv::new(AdmissionPolicy::default());
        let key: StreamKey = Arc::from("live/x");
        let stream = Arc::new(FlvStream::default());
        hub.streams.lock().unwrap().insert(key, stream.clone());
        let sink = FlvSink {
            stream,
            viewers: Vec::new(),
            bell: Arc::default(),
        };
        (
            hub,
            Owner {
                sink,
                cache: StreamCache::default(),
            },
        )
    }

    #[test]
    fn late_joiner_gets_header_configs_gop_then_live() {
        let (hub, mut sink) = hub_with_stream();
        assert!(hub.subscribe("live/x").is_none(), "not live yet");
        sink.sink.on_publish();
        sink.on_frame(&frame(MediaKind::Video, 1000, &[0x17, 0, 0, 0, 0, 1, 2]));
        sink.on_frame(&frame(MediaKind::Audio, 1000, &[0xAF, 0, 0x12, 0x10]));
        sink.on_frame(&frame(MediaKind::Video, 1000, &[0x17, 1, 0, 0, 0, 9]));
        sink.on_frame(&frame(MediaKind::Video, 1040, &[0x27, 1, 0, 0, 0, 8]));
        let g = hub.subscribe("live/x").unwrap();
        assert_eq!(hub.viewers(), 1);
        // Started at the sink's next frame, from the cache that frame is already in: it
        // comes once, as the last tag.
        assert!(matches!(g.viewer.next(Waker::noop()), Next::Wait));
        sink.on_frame(&frame(MediaKind::Video, 1080, &[0x27, 1, 0, 0, 0, 7]));
        let bytes = Bytes::from(drain(&g.viewer));
        assert_eq!(&bytes[..5], b"FLV\x01\x05");
        let tags = read_tags(&bytes).unwrap();
        let ts: Vec<(u8, u32)> = tags.iter().map(|t| (t.tag_type, t.timestamp)).collect();
        assert_eq!(ts, [(9, 1000), (8, 1000), (9, 1000), (9, 1040), (9, 1080)]);
        assert_eq!(&tags[4].data[..], &[0x27, 1, 0, 0, 0, 7]);
        sink.on_frame(&frame(MediaKind::Video, 1120, &[0x27, 1, 0, 0, 0, 6]));
        // Only that frame's tag follows: header (ts 1120), payload, PreviousTagSize.
        let live = drain(&g.viewer);
        assert_eq!(live.len(), 11 + 6 + 4);
        assert_eq!(&live[4..7], &[0, 0x04, 0x60]);
        assert_eq!(&live[11..17], &[0x27, 1, 0, 0, 0, 6]);
        // The publisher leaving ends the response, and a viewer still pending.
        let pending = hub.subscribe("live/x").unwrap();
        sink.sink.on_unpublish();
        assert!(matches!(pending.viewer.next(Waker::noop()), Next::End));
        drop(pending);
        assert!(matches!(g.viewer.next(Waker::noop()), Next::End));
        drop(g);
        assert_eq!(hub.viewers(), 0);
    }

    #[test]
    fn a_viewer_that_stops_reading_is_dropped_then_kicked() {
        let (hub, mut sink) = hub_with_stream();
        sink.sink.on_publish();
        let g = {
            sink.on_frame(&frame(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1]));
            hub.subscribe("live/x").unwrap()
        };
        static BIG: [u8; 64 * 1024] = [0x27; 64 * 1024];
        let mut n = 0;
        // Never drained: 4 MiB budget, video dropped, kicked after 10 s behind; here the
        // budget is hit quickly and frames are dropped while the queue stays bounded.
        for i in 0..200u32 {
            let mut p = BIG.to_vec();
            p[0] = if i % 50 == 0 { 0x17 } else { 0x27 };
            p[1] = 1;
            sink.on_frame(&Arc::new(Frame::new(
                MediaKind::Video,
                i * 40,
                Bytes::from(p),
                4096,
            )));
            n += 1;
        }
        let queued = g.viewer.state.lock().unwrap().bytes;
        assert!(queued <= 4 << 20, "{queued} bytes queued after {n} frames");
        assert!(queued > 3 << 20);
    }
}
