//! One player's view of a stream: what it is sent and when. Starts from the cached
//! preamble, gates video on a keyframe, and when the player falls behind drops inter
//! frames (audio kept while the byte budget allows), resumes at a keyframe, and is
//! disconnected if it stays behind. Never grows past its budget, never blocks anyone.

use std::rc::Rc;
use std::time::Instant;

use super::admission::{queue_len, Admission, AdmissionPolicy, Verdict};
use super::queue::OutQueue;
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame, SHARED_STREAM_ID};
use crate::protocol::session;

#[derive(Debug, Clone, Copy)]
pub struct ViewerPolicy {
    /// Queue budget and how long a viewer may stay behind.
    pub admission: AdmissionPolicy,
    /// Hold live frames for the shard's coalescing tick instead of waking the writer.
    pub coalesce: bool,
    /// Wake the writer anyway once this many bytes wait (bounds a tick's burst).
    pub flush_bytes: usize,
}

impl Default for ViewerPolicy {
    fn default() -> Self {
        Self {
            admission: AdmissionPolicy::default(),
            coalesce: false,
            flush_bytes: 64 << 10,
        }
    }
}

pub struct Viewer {
    pub queue: Rc<OutQueue>,
    pub stream_id: u32,
    pub name: String,
    chunk_size: u32,
    policy: ViewerPolicy,
    admission: Admission,
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
            admission: Admission::new(policy.admission),
            policy,
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
        self.admission.set_waiting_for_keyframe(!has_gop);
    }

    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.admission.is_waiting_for_keyframe()
    }

    pub fn deliver(&mut self, f: &SharedFrame, now: Instant) -> Verdict {
        if self.queue.is_closed() {
            return Verdict::Skip;
        }
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        match f.kind {
            MediaKind::Video if !self.receive_video && !config => return Verdict::Skip,
            MediaKind::Audio if !self.receive_audio && !config => return Verdict::Skip,
            _ => {}
        }
        let queued = self.queue.queued_bytes();
        let verdict = self.admission.admit(f, queued, self.queue.age(now), now);
        match verdict {
            Verdict::Admit => {}
            Verdict::Kick => {
                self.queue.kill();
                return verdict;
            }
            Verdict::Skip | Verdict::Drop(_) => return verdict,
        }
        let wire = if self.stream_id == SHARED_STREAM_ID {
            f.wire().clone()
        } else {
            f.encode_as(f.timestamp, self.stream_id, self.chunk_size)
        };
        let wake = !self.policy.coalesce || queued + queue_len(f) >= self.policy.flush_bytes;
        self.queue.push_media(wire, f.ingest, now, wake);
        if matches!(f.kind, MediaKind::Audio | MediaKind::Video) {
            self.queue.mark_media();
        }
        Verdict::Admit
    }

    /// The publisher left: tell the player, and restart from a keyframe when one returns.
    pub fn unpublished(&mut self) {
        self.queue.clear_play();
        self.queue.push(session::unpublish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.admission.wait_for_keyframe();
    }

    pub fn published(&mut self) {
        self.queue.push(session::publish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.admission.wait_for_keyframe();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use std::time::Duration;

    use crate::fanout::admission::DropReason;
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
        assert_eq!(v.deliver(&inter, now), Verdict::Skip);
        assert_eq!(v.deliver(&audio, now), Verdict::Admit);
        assert_eq!(v.deliver(&key, now), Verdict::Admit);
        assert_eq!(v.deliver(&inter, now), Verdict::Admit);
    }

    #[test]
    fn slow_viewer_drops_video_keeps_audio_resumes_at_key_then_is_kicked() {
        let policy = ViewerPolicy {
            admission: AdmissionPolicy {
                max_queue_bytes: 10_000,
                max_behind: Duration::from_secs(2),
                ..AdmissionPolicy::default()
            },
            ..ViewerPolicy::default()
        };
        let mut v = viewer(policy);
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 4000);
        let inter = frame(MediaKind::Video, 33, &[0x27, 1], 4000);
        let audio = frame(MediaKind::Audio, 40, &[0xAF, 1], 100);
        assert_eq!(v.deliver(&key, t0), Verdict::Admit);
        assert_eq!(v.deliver(&inter, t0), Verdict::Admit);
        // 8 KB queued: the next inter frame would pass the budget.
        assert_eq!(v.deliver(&inter, t0), Verdict::Drop(DropReason::QueueBytes));
        assert!(v.is_waiting_for_keyframe());
        assert_eq!(v.deliver(&audio, t0), Verdict::Admit);
        assert_eq!(v.deliver(&inter, t0), Verdict::Skip);
        // The reader catches up: the queue drains, and video resumes at a keyframe.
        v.queue.take_batch();
        assert_eq!(v.deliver(&inter, t0), Verdict::Skip);
        assert_eq!(v.deliver(&key, t0), Verdict::Admit);
        assert_eq!(v.deliver(&inter, t0), Verdict::Admit);
        // Falls behind again and stays behind: kicked after max_behind.
        assert!(matches!(v.deliver(&key, t0), Verdict::Drop(_)));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(v.deliver(&key, later), Verdict::Kick);
        assert!(v.queue.is_killed());
        assert_eq!(v.deliver(&audio, later), Verdict::Skip);
    }

    #[test]
    fn old_queue_drops_by_age() {
        let mut v = viewer(ViewerPolicy {
            admission: AdmissionPolicy {
                max_queue_age: Duration::from_millis(500),
                ..AdmissionPolicy::default()
            },
            ..ViewerPolicy::default()
        });
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 10);
        let inter = frame(MediaKind::Video, 33, &[0x27, 1], 10);
        assert_eq!(v.deliver(&key, t0), Verdict::Admit);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(v.deliver(&inter, t1), Verdict::Drop(DropReason::QueueAge));
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
        assert_eq!(v.deliver(&key, t0), Verdict::Admit);
        assert!(!woke(&v.queue), "one small frame waits for the tick");
        assert_eq!(v.deliver(&key, t0), Verdict::Admit);
        assert!(woke(&v.queue), "past flush_bytes the writer is woken");
        v.queue.flush();
        assert!(woke(&v.queue), "the tick wakes a non-empty queue");
    }
}
