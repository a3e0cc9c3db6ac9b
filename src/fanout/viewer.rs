//! One player's view of a stream: what it is sent and when. Starts from the cached
//! preamble, gates video on a keyframe, and when the player falls behind drops inter
//! frames (audio kept while the byte budget allows), resumes at a keyframe, and is
//! disconnected if it stays behind. Never grows past its budget, never blocks anyone.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::admission::{queue_len, Admission, AdmissionPolicy, Verdict};
use super::queue::OutQueue;
use super::run::Run;
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame, SHARED_STREAM_ID};
use crate::protocol::session;

#[derive(Debug, Clone, Copy)]
pub struct ViewerPolicy {
    /// Queue budget and how long a viewer may stay behind.
    pub admission: AdmissionPolicy,
    /// Gather a stream's live frames into a run the shard's coalescing tick offers to
    /// every viewer at once (`deliver_run`) instead of offering each as it comes (`deliver`).
    pub coalesce: bool,
    /// Offer the run early once it holds this many bytes (bounds a tick's burst).
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
    admission: Admission,
    pub receive_audio: bool,
    pub receive_video: bool,
    /// Frames at the head of the stream's pending run that its start already sent (the
    /// cache had them): the next run offered skips them.
    run_skip: usize,
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
            receive_audio: true,
            receive_video: true,
            run_skip: 0,
        }
    }

    /// Sends the late-join preamble; live frames follow through `deliver`, or through
    /// `deliver_run` after the first `pending` frames of the run (the cache holds them).
    pub fn start_within_run(&mut self, cache: &StreamCache, pending: usize) {
        self.start(cache);
        self.run_skip = pending;
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
        let queued = self.queue.queued_bytes();
        let verdict = self.admit(f, queued, self.queue.age(now), now);
        if verdict != Verdict::Admit {
            return verdict;
        }
        self.queue.push_media(self.wire_for(f), f.ingest, now);
        if f.is_media() {
            self.queue.mark_media();
        }
        Verdict::Admit
    }

    /// Offers a coalescing flush's frames at once, each through admission as if it had
    /// come alone (against the bytes queued before it). Admitted whole, on the shared
    /// stream id, the run goes in as its one merged buffer. Calls `verdict` per frame.
    pub fn deliver_run(&mut self, run: &Run, now: Instant, mut verdict: impl FnMut(Verdict)) {
        let skip = std::mem::take(&mut self.run_skip).min(run.frames().len());
        let frames = &run.frames()[skip..];
        if self.queue.is_closed() || frames.is_empty() {
            return;
        }
        let age = self.queue.age(now);
        let mut queued = self.queue.queued_bytes();
        // The common case at a flush, thousands of times over: a viewer in step, taking
        // the whole run. Same outcome as the loop below, without a verdict per frame.
        if skip == 0
            && self.stream_id == SHARED_STREAM_ID
            && self.receive_audio
            && self.receive_video
            && self.admission.admits_whole(run.bytes(), queued, age)
        {
            for _ in frames {
                verdict(Verdict::Admit);
            }
            self.queue
                .push_media(run.merged().clone(), frames[0].ingest, now);
            if run.has_media() {
                self.queue.mark_media();
            }
            return;
        }
        // Bit i: frame i admitted (runs past 128 frames take the per-frame path).
        let mut admitted = 0u128;
        let mut media = false;
        for (i, f) in frames.iter().enumerate() {
            let v = self.admit(f, queued, age, now);
            verdict(v);
            match v {
                Verdict::Admit => {
                    queued += queue_len(f);
                    admitted |= 1u128.checked_shl(i as u32).unwrap_or(0);
                    media |= f.is_media();
                }
                Verdict::Kick => return,
                Verdict::Skip | Verdict::Drop(_) => {}
            }
        }
        let n = frames.len();
        let whole = skip == 0 && n <= 128 && admitted == u128::MAX >> (128 - n);
        if whole && self.stream_id == SHARED_STREAM_ID {
            self.queue
                .push_media(run.merged().clone(), frames[0].ingest, now);
        } else {
            for (i, f) in frames.iter().enumerate() {
                if admitted & 1u128.checked_shl(i as u32).unwrap_or(0) != 0 {
                    self.queue.push_media(self.wire_for(f), f.ingest, now);
                }
            }
        }
        if media {
            self.queue.mark_media();
        }
    }

    /// Admission, after the tracks the player turned off; a kick closes the queue.
    fn admit(&mut self, f: &SharedFrame, queued: usize, age: Duration, now: Instant) -> Verdict {
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        match f.kind {
            MediaKind::Video if !self.receive_video && !config => return Verdict::Skip,
            MediaKind::Audio if !self.receive_audio && !config => return Verdict::Skip,
            _ => {}
        }
        let verdict = self.admission.admit(f, queued, age, now);
        if verdict == Verdict::Kick {
            self.queue.kill();
        }
        verdict
    }

    fn wire_for(&self, f: &SharedFrame) -> Bytes {
        if self.stream_id == SHARED_STREAM_ID {
            f.wire().clone()
        } else {
            f.encode_as(f.timestamp, self.stream_id, self.chunk_size)
        }
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
    fn a_run_admitted_whole_is_one_buffer_and_a_partial_one_goes_frame_by_frame() {
        let t0 = Instant::now();
        let key = frame(MediaKind::Video, 0, &[0x17, 1], 500);
        let inter = frame(MediaKind::Video, 33, &[0x27, 1], 500);
        let audio = frame(MediaKind::Audio, 40, &[0xAF, 1], 100);
        let mut run = Run::default();
        for f in [&key, &inter, &audio] {
            run.push(f, t0);
        }
        let whole: Vec<u8> = [&key, &inter, &audio]
            .iter()
            .flat_map(|f| f.wire().to_vec())
            .collect();
        assert_eq!(run.bytes(), whole.len());

        // In sync: the run's one merged buffer, the same one for every such viewer.
        let (mut a, mut b) = (
            viewer(ViewerPolicy::default()),
            viewer(ViewerPolicy::default()),
        );
        a.admission.set_waiting_for_keyframe(false);
        b.admission.set_waiting_for_keyframe(false);
        let mut verdicts = Vec::new();
        a.deliver_run(&run, t0, |v| verdicts.push(v));
        b.deliver_run(&run, t0, |_| {});
        assert_eq!(verdicts, vec![Verdict::Admit; 3]);
        let (ba, bb) = (a.queue.take_batch().bufs, b.queue.take_batch().bufs);
        assert_eq!((ba.len(), &ba[0][..]), (1, &whole[..]));
        assert_eq!(ba[0].as_ptr(), bb[0].as_ptr());

        // Audio turned off: the rest, one by one, in order.
        let mut c = viewer(ViewerPolicy::default());
        c.admission.set_waiting_for_keyframe(false);
        c.receive_audio = false;
        c.deliver_run(&run, t0, |_| {});
        let bufs = c.queue.take_batch().bufs;
        assert_eq!(bufs.len(), 2);
        assert_eq!(&bufs[1][..], &inter.wire()[..]);

        // Joined while the run was pending: what its start sent from the cache is skipped.
        let mut j = viewer(ViewerPolicy::default());
        let mut cache = StreamCache::default();
        for f in [&key, &inter] {
            cache.apply(f);
        }
        j.start_within_run(&cache, 2);
        let preamble = j.queue.take_batch().bufs.len();
        j.deliver_run(&run, t0, |_| {});
        let bufs = j.queue.take_batch().bufs;
        assert!(preamble >= 2, "{preamble}");
        assert_eq!((bufs.len(), &bufs[0][..]), (1, &audio.wire()[..]));
        // The skip is spent: the next run comes whole.
        j.deliver_run(&run, t0, |_| {});
        assert_eq!(j.queue.take_batch().bufs.len(), 1);
        assert_eq!(j.queue.queued_bytes(), 0);

        // Another stream id: encoded for it, never the shared buffer.
        let mut d = Viewer::new(
            Rc::new(OutQueue::new()),
            3,
            "t".into(),
            4096,
            Default::default(),
        );
        d.admission.set_waiting_for_keyframe(false);
        d.deliver_run(&run, t0, |_| {});
        let bufs = d.queue.take_batch().bufs;
        assert_eq!(bufs.len(), 3);
        assert_eq!(bufs[0], key.encode_as(0, 3, 4096));

        // Over budget part way: admission sees each frame against what went before it.
        let mut e = viewer(ViewerPolicy {
            admission: AdmissionPolicy {
                max_queue_bytes: key.wire_len() + 100,
                ..AdmissionPolicy::default()
            },
            ..ViewerPolicy::default()
        });
        e.admission.set_waiting_for_keyframe(false);
        let mut verdicts = Vec::new();
        e.deliver_run(&run, t0, |v| verdicts.push(v));
        assert_eq!(
            verdicts[..2],
            [Verdict::Admit, Verdict::Drop(DropReason::QueueBytes)]
        );
        assert_eq!(e.queue.take_batch().bufs[0], key.wire().clone());
    }
}
