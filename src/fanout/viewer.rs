//! One player's view of a stream: what it is sent and when. Starts from the cached
//! preamble, gates video on a keyframe, and when the player falls behind drops inter
//! frames (audio kept while the byte budget allows), resumes at a keyframe, and is
//! disconnected if it stays behind. Never grows past its budget, never blocks anyone.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::queue::OutQueue;
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame, SHARED_STREAM_ID};
use crate::protocol::session;

#[derive(Debug, Clone, Copy)]
pub struct ViewerPolicy {
    /// Bytes a viewer may have queued; past it, frames are dropped.
    pub max_queue_bytes: usize,
    /// How long the oldest queued byte may wait; past it, inter frames are dropped.
    pub max_queue_age: Duration,
    /// A viewer dropping frames for longer than this is disconnected.
    pub max_behind: Duration,
    /// Hold live frames for the shard's coalescing tick instead of waking the writer.
    pub coalesce: bool,
    /// Wake the writer anyway once this many bytes wait (bounds a tick's burst).
    pub flush_bytes: usize,
}

impl Default for ViewerPolicy {
    fn default() -> Self {
        Self {
            max_queue_bytes: 4 << 20,
            max_queue_age: Duration::from_secs(5),
            max_behind: Duration::from_secs(10),
            coalesce: false,
            flush_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    QueueBytes,
    QueueAge,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueBytes => "queue_bytes",
            Self::QueueAge => "queue_age",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Waiting for a keyframe (join without GOP, after a drop, after a republish).
    Skipped,
    Dropped(DropReason),
    /// Behind for too long: the connection is being closed.
    Kicked,
}

pub struct Viewer {
    pub queue: Rc<OutQueue>,
    pub stream_id: u32,
    pub name: String,
    chunk_size: u32,
    policy: ViewerPolicy,
    waiting_key: bool,
    /// Since when this viewer has been dropping frames.
    behind_since: Option<Instant>,
    pub receive_audio: bool,
    pub receive_video: bool,
}

impl Viewer {
    pub fn new(
        queue: Rc<OutQueue>,
        stream_id: u32,
        name: String,
        chunk_size: u32,
        policy: ViewerPolicy,
    ) -> Self {
        Self {
            queue,
            stream_id,
            name,
            chunk_size,
            policy,
            waiting_key: true,
            behind_since: None,
            receive_audio: true,
            receive_video: true,
        }
    }

    /// Sends the late-join preamble; live frames follow through `deliver`.
    pub fn start(&mut self, cache: &StreamCache) {
        let (preamble, has_gop) = cache.start_sequence(self.stream_id, self.chunk_size);
        self.queue.push_all(preamble);
        if has_gop {
            self.queue.mark_media();
        }
        self.waiting_key = !has_gop;
    }

    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.waiting_key
    }

    pub fn deliver(&mut self, f: &SharedFrame, now: Instant) -> Delivery {
        if self.queue.is_closed() {
            return Delivery::Skipped;
        }
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        let inter_video = f.kind == MediaKind::Video && !config;
        match f.kind {
            MediaKind::Video if !self.receive_video && !config => return Delivery::Skipped,
            MediaKind::Audio if !self.receive_audio && !config => return Delivery::Skipped,
            _ => {}
        }
        if inter_video && self.waiting_key && !f.is_video_keyframe() {
            return Delivery::Skipped;
        }
        let len = f.wire.len();
        let queued = self.queue.queued_bytes();
        let over_bytes = queued + len > self.policy.max_queue_bytes;
        let over_age = self.queue.age(now) > self.policy.max_queue_age;
        if over_bytes || over_age {
            let since = *self.behind_since.get_or_insert(now);
            if now.saturating_duration_since(since) > self.policy.max_behind {
                self.queue.kill();
                return Delivery::Kicked;
            }
            let reason = if over_bytes {
                DropReason::QueueBytes
            } else {
                DropReason::QueueAge
            };
            // Video goes first; audio and decoder config stay while the bytes allow, so
            // the player keeps sound and can decode the keyframe it resumes at.
            let keep = match f.kind {
                MediaKind::Video if !config => false,
                _ if config => queued + len <= self.policy.max_queue_bytes * 2,
                _ => !over_bytes,
            };
            if !keep {
                if inter_video {
                    self.waiting_key = true;
                }
                return Delivery::Dropped(reason);
            }
        } else if inter_video && self.waiting_key {
            // Resuming at a keyframe with a healthy queue: caught up.
            self.behind_since = None;
        }
        if inter_video {
            self.waiting_key = false;
        }
        let wire = if self.stream_id == SHARED_STREAM_ID {
            f.wire.clone()
        } else {
            f.encode_as(f.timestamp, self.stream_id, self.chunk_size)
        };
        let wake = !self.policy.coalesce || queued + len >= self.policy.flush_bytes;
        self.queue.push_media(wire, f.ingest, now, wake);
        if matches!(f.kind, MediaKind::Audio | MediaKind::Video) {
            self.queue.mark_media();
        }
        Delivery::Queued
    }

    /// The publisher left: tell the player, and restart from a keyframe when one returns.
    pub fn unpublished(&mut self) {
        self.queue.clear_play();
        self.queue.push(session::unpublish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.waiting_key = true;
    }

    pub fn published(&mut self) {
        self.queue.push(session::publish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.waiting_key = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::media::frame::Frame;

    fn frame(kind: MediaKind, ts: u32, p: &'static [u8], pad: usize) -> SharedFrame {
        let mut v = p.to_vec();
        v.resize(p.len() + pad, 0);
        Arc::new(Frame::new(kind, ts, Bytes::from(v), 4096))
    }

    fn viewer(policy: ViewerPolicy) -> Viewer {
        Viewer::new(Rc::new(OutQueue::new()), 1, "t".into(), 4096, policy)
    }

    #[test]
    fn gates_video_on_keyframe() {
        let mut v = viewer(ViewerPolicy::default());
        let now = Instant::now();
        let inter = frame(MediaKind::Video, 0, &[0x27, 1], 10);
        let key = frame(MediaKind::Video, 33, &[0x17, 1], 10);
        let audio = frame(MediaKind::Audio, 10, &[0xAF, 1], 10);
        assert_eq!(v.deliver(&inter, now), Delivery::Skipped);
        assert_eq!(v.deliver(&audio, now), Delivery::Queued);
        assert_eq!(v.deliver(&key, now), Delivery::Queued);
        assert_eq!(v.deliver(&inter, now), Delivery::Queued);
    }

    #[test]
    fn slow_viewer_drops_video_keeps_audio_resumes_at_key_then_is_kicked() {
        let policy = ViewerPolicy {
            max_queue_bytes: 10_000,
            max_behind: Duration::from_secs(2),
            ..ViewerPolicy::default()
        };
        let mut v = viewer(policy);
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 4000);
        let inter = frame(MediaKind::Video, 33, &[0x27, 1], 4000);
        let audio = frame(MediaKind::Audio, 40, &[0xAF, 1], 100);
        assert_eq!(v.deliver(&key, t0), Delivery::Queued);
        assert_eq!(v.deliver(&inter, t0), Delivery::Queued);
        // 8 KB queued: the next inter frame would pass the budget.
        assert_eq!(
            v.deliver(&inter, t0),
            Delivery::Dropped(DropReason::QueueBytes)
        );
        assert!(v.is_waiting_for_keyframe());
        assert_eq!(v.deliver(&audio, t0), Delivery::Queued);
        assert_eq!(v.deliver(&inter, t0), Delivery::Skipped);
        // The reader catches up: the queue drains, and video resumes at a keyframe.
        v.queue.take_batch();
        assert_eq!(v.deliver(&inter, t0), Delivery::Skipped);
        assert_eq!(v.deliver(&key, t0), Delivery::Queued);
        assert_eq!(v.deliver(&inter, t0), Delivery::Queued);
        // Falls behind again and stays behind: kicked after max_behind.
        assert!(matches!(v.deliver(&key, t0), Delivery::Dropped(_)));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(v.deliver(&key, later), Delivery::Kicked);
        assert!(v.queue.is_killed());
        assert_eq!(v.deliver(&audio, later), Delivery::Skipped);
    }

    #[test]
    fn old_queue_drops_by_age() {
        let mut v = viewer(ViewerPolicy {
            max_queue_age: Duration::from_millis(500),
            ..ViewerPolicy::default()
        });
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 10);
        let inter = frame(MediaKind::Video, 33, &[0x27, 1], 10);
        assert_eq!(v.deliver(&key, t0), Delivery::Queued);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            v.deliver(&inter, t1),
            Delivery::Dropped(DropReason::QueueAge)
        );
    }

    #[test]
    fn coalescing_defers_the_wake_until_enough_bytes() {
        let mut v = viewer(ViewerPolicy {
            coalesce: true,
            flush_bytes: 5000,
            ..ViewerPolicy::default()
        });
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 3000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let woke = |q: &OutQueue| {
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(5), q.wait()).await })
                .is_ok()
        };
        assert_eq!(v.deliver(&key, t0), Delivery::Queued);
        assert!(!woke(&v.queue), "one small frame waits for the tick");
        assert_eq!(v.deliver(&key, t0), Delivery::Queued);
        assert!(woke(&v.queue), "past flush_bytes the writer is woken");
        v.queue.flush();
        assert!(woke(&v.queue), "the tick wakes a non-empty queue");
    }
}
