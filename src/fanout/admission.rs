//! The one frame-admission policy: what a subscriber that may fall behind (a player's
//! queue, a push destination's queue) takes of each frame. Video is gated on a keyframe;
//! past the byte or age budget video goes first, audio and decoder config stay while the
//! bytes allow, and video resumes at a keyframe; a subscriber behind for too long is
//! disconnected. Every subscriber measures its queue the same way: wire bytes
//! (`Frame::wire`), the size the frame has on a socket.

use std::time::{Duration, Instant};

use crate::media::frame::{Frame, MediaKind};

#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// Bytes a subscriber may have queued; past it, frames are dropped.
    pub max_queue_bytes: usize,
    /// How long the oldest queued byte may wait; past it, video is dropped.
    pub max_queue_age: Duration,
    /// A subscriber dropping frames for longer than this is disconnected.
    pub max_behind: Duration,
    /// Audio and data may fill the queue to this many times `max_queue_bytes` (decoder
    /// config always may go to twice). A push destination keeps sound longer than a
    /// player: platforms flag audio gaps sooner than frozen video.
    pub audio_headroom: usize,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self {
            max_queue_bytes: 4 << 20,
            max_queue_age: Duration::from_secs(5),
            max_behind: Duration::from_secs(10),
            audio_headroom: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    QueueBytes,
    QueueAge,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::QueueBytes, DropReason::QueueAge];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueBytes => "queue_bytes",
            Self::QueueAge => "queue_age",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it.
    Admit,
    /// Not for this subscriber now (waiting for a keyframe, a track it turned off).
    Skip,
    Drop(DropReason),
    /// Behind for too long: close the subscriber.
    Kick,
}

/// One subscriber's admission state.
#[derive(Debug, Clone)]
pub struct Admission {
    pub policy: AdmissionPolicy,
    waiting_key: bool,
    /// Since when this subscriber has been dropping frames.
    behind_since: Option<Instant>,
}

/// How a frame counts against a queue's byte budget.
pub fn queue_len(f: &Frame) -> usize {
    f.wire_len()
}

impl Admission {
    pub fn new(policy: AdmissionPolicy) -> Self {
        Self {
            policy,
            waiting_key: true,
            behind_since: None,
        }
    }

    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.waiting_key
    }

    /// Video waits for the next keyframe (after a gap: a join, a republish, a reconnect).
    pub fn wait_for_keyframe(&mut self) {
        self.waiting_key = true;
    }

    /// A join that starts with a whole GOP needs no keyframe first.
    pub fn set_waiting_for_keyframe(&mut self, waiting: bool) {
        self.waiting_key = waiting;
    }

    /// Whether `admit` would take every frame of a run of `bytes` (wire bytes) in a row,
    /// changing nothing: no keyframe awaited, and the whole run fits the budget as it
    /// stands (`admit` checks each frame against the same two limits).
    pub fn admits_whole(&self, bytes: usize, queued: usize, age: Duration) -> bool {
        !self.waiting_key
            && queued + bytes <= self.policy.max_queue_bytes
            && age <= self.policy.max_queue_age
    }

    /// Decides on `f`, given what the subscriber has queued (`queued` bytes, the oldest
    /// waiting `age`).
    pub fn admit(&mut self, f: &Frame, queued: usize, age: Duration, now: Instant) -> Verdict {
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        let video = f.kind == MediaKind::Video && !config;
        if video && self.waiting_key && !f.is_video_keyframe() {
            return Verdict::Skip;
        }
        let len = queue_len(f);
        let max = self.policy.max_queue_bytes;
        let over_bytes = queued + len > max;
        let over_age = age > self.policy.max_queue_age;
        if over_bytes || over_age {
            let since = *self.behind_since.get_or_insert(now);
            if now.saturating_duration_since(since) > self.policy.max_behind {
                return Verdict::Kick;
            }
            let reason = if over_bytes {
                DropReason::QueueBytes
            } else {
                DropReason::QueueAge
            };
            // Video goes first; audio and decoder config stay while the bytes allow, so
            // the subscriber keeps sound and can decode the keyframe it resumes at.
            let keep = match f.kind {
                MediaKind::Video if !config => false,
                _ if config => queued + len <= max * 2,
                _ => queued + len <= max * self.policy.audio_headroom,
            };
            if !keep {
                if video {
                    self.waiting_key = true;
                }
                return Verdict::Drop(reason);
            }
        } else if video && self.waiting_key {
            // Resuming at a keyframe with a healthy queue: caught up.
            self.behind_since = None;
        }
        if video {
            self.waiting_key = false;
        }
        Verdict::Admit
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::media::frame::SharedFrame;

    fn frame(kind: MediaKind, p: &'static [u8], pad: usize) -> SharedFrame {
        let mut v = p.to_vec();
        v.resize(p.len() + pad, 0);
        Arc::new(Frame::new(kind, 0, Bytes::from(v), 4096))
    }

    /// How push destinations use it: a byte budget only (audio to twice it), never kicked
    /// for lagging.
    #[test]
    fn budget_only_drops_video_to_a_keyframe_keeps_config_and_never_kicks() {
        let mut a = Admission::new(AdmissionPolicy {
            max_queue_bytes: 10_000,
            max_queue_age: Duration::MAX,
            max_behind: Duration::MAX,
            audio_headroom: 2,
        });
        let key = frame(MediaKind::Video, &[0x17, 1], 4000);
        let inter = frame(MediaKind::Video, &[0x27, 1], 4000);
        let audio = frame(MediaKind::Audio, &[0xAF, 1], 100);
        let config = frame(MediaKind::Video, &[0x17, 0], 100);
        let t0 = Instant::now();
        let zero = Duration::ZERO;
        assert_eq!(
            a.admit(&inter, 0, zero, t0),
            Verdict::Skip,
            "keyframe first"
        );
        assert_eq!(a.admit(&key, 0, zero, t0), Verdict::Admit);
        assert_eq!(a.admit(&inter, 4100, zero, t0), Verdict::Admit);
        assert_eq!(
            a.admit(&inter, 8200, zero, t0),
            Verdict::Drop(DropReason::QueueBytes)
        );
        assert!(a.is_waiting_for_keyframe());
        assert_eq!(
            a.admit(&audio, 9950, zero, t0),
            Verdict::Admit,
            "audio to 2x"
        );
        assert_eq!(
            a.admit(&audio, 19_950, zero, t0),
            Verdict::Drop(DropReason::QueueBytes),
            "audio goes past 2x the budget"
        );
        assert_eq!(
            a.admit(&config, 15_000, zero, t0),
            Verdict::Admit,
            "config up to 2x"
        );
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            a.admit(&inter, 9000, zero, later),
            Verdict::Skip,
            "behind for an hour: still only waiting for a keyframe"
        );
        assert_eq!(
            a.admit(&key, 0, zero, later),
            Verdict::Admit,
            "resumes at a keyframe"
        );
        assert_eq!(queue_len(&key), key.wire().len());
    }

    /// `admits_whole` is a promise about `admit`: where it holds, each frame of the run is
    /// admitted in turn; it does not hold while a keyframe is awaited or past either limit.
    #[test]
    fn admits_whole_only_where_admit_takes_every_frame() {
        let policy = AdmissionPolicy {
            max_queue_bytes: 50_000,
            max_queue_age: Duration::from_millis(500),
            ..AdmissionPolicy::default()
        };
        let key = frame(MediaKind::Video, &[0x17, 1], 9000);
        let inter = frame(MediaKind::Video, &[0x27, 1], 9000);
        let audio = frame(MediaKind::Audio, &[0xAF, 1], 300);
        let run = [inter.clone(), audio.clone(), inter.clone(), audio, inter];
        let bytes: usize = run.iter().map(|f| queue_len(f)).sum();
        let t0 = Instant::now();
        let young = Duration::from_millis(100);

        let mut a = Admission::new(policy);
        assert!(!a.admits_whole(bytes, 0, young), "a keyframe is awaited");
        assert_eq!(a.admit(&key, 0, young, t0), Verdict::Admit);
        let queued = queue_len(&key);
        assert!(a.admits_whole(bytes, queued, young));
        let mut q = queued;
        for f in &run {
            assert_eq!(a.admit(f, q, young, t0), Verdict::Admit);
            q += queue_len(f);
        }
        assert!(!a.is_waiting_for_keyframe());
        assert!(
            !a.admits_whole(bytes, 50_000 - bytes + 1, young),
            "one byte past the budget"
        );
        assert!(!a.admits_whole(bytes, queued, Duration::from_millis(501)));
    }
}
