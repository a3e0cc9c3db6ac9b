//! One stream's packaging, sans-IO: RTMP frames in (with the wall clock of their arrival),
//! init segments and CMAF parts out. Segments start at video keyframes once the target
//! duration is reached (audio-only streams cut on duration); parts close near the part
//! target and at every keyframe, so each keyframe starts an independent part.
//!
//! The playlist's target duration may never change (rfc8216bis 4.4.3.1), yet a GOP may run
//! longer than any target: the first segment fixes it (the configured one, or that segment's
//! rounded length if longer), and a later segment that would outgrow it is cut at a
//! non-key frame; such a segment is not independent, and the next keyframe ends it
//! whatever its length, so segments start at keyframes again.
//!
//! A sample is written once the next sample of its track arrives, so every duration is
//! the real difference of decode times rather than a guess; the cost is one frame of
//! delay. Times are milliseconds unwrapped from RTMP's 32-bit timestamps.

use std::sync::Arc;

use bytes::Bytes;

use super::fmp4::{self, Run, Sample, Tracks, AUDIO_TRACK, VIDEO_TRACK};
use crate::media::codec::{self, AudioConfig, AudioPacket, Coded, VideoConfig, VideoPacket};
use crate::media::frame::{Frame, MediaKind};

#[derive(Debug, Clone, Copy)]
pub struct PackagerConfig {
    pub segment_ms: u64,
    pub part_ms: u64,
}

/// How long audio may run without any video configuration before the stream is packaged
/// as audio-only.
const AUDIO_ONLY_AFTER_MS: u64 = 1000;
/// Samples per AAC frame, in the AudioSpecificConfig's sample-rate timescale.
const AAC_FRAME: u64 = 1024;

/// The PART-TARGET a playlist states for parts cut near `part_ms`: parts end at the frame
/// nearest the target, up to half a frame past it.
pub fn part_target_ms(part_ms: u64) -> u64 {
    part_ms + part_ms / 10
}

/// An init segment and what the multivariant playlist says about it.
#[derive(Debug)]
pub struct Init {
    pub id: u32,
    pub data: Bytes,
    pub tracks: Tracks,
}

/// One CMAF fragment: a part, and a piece of its segment.
#[derive(Debug, Clone)]
pub struct Part {
    pub data: Vec<Bytes>,
    pub len: usize,
    pub duration_ms: u64,
    pub independent: bool,
    /// The first part of a new segment.
    pub starts_segment: bool,
    /// EXT-X-TARGETDURATION, seconds: fixed once the first segment ends.
    pub target_secs: u64,
    /// Stream time of its first sample, ms.
    pub start_ms: u64,
    /// When the earliest frame in it reached the server (packaging latency).
    pub first_ingest: Option<std::time::Instant>,
}

#[derive(Debug)]
pub enum Out {
    /// A new init segment: the next part starts a segment after a discontinuity.
    Init(Arc<Init>),
    Part(Part),
    /// The publisher left: the open segment is complete.
    End,
}

#[derive(Debug, Clone)]
struct Pending {
    t: u64,
    coded: Coded,
    ingest: std::time::Instant,
}

#[derive(Debug, Default)]
struct TrackState {
    pending: Option<Pending>,
    /// Completed samples of the open part: (decode time ms, cts ms, keyframe, data, dur ms).
    done: Vec<(u64, Pending, u64)>,
    last_duration: u64,
}

pub struct Packager {
    cfg: PackagerConfig,
    video_cfg: Option<VideoConfig>,
    audio_cfg: Option<AudioConfig>,
    init: Option<Arc<Init>>,
    next_init_id: u32,
    /// A configuration differs from the init's: a new init at the next chance.
    reinit: bool,
    /// A republish: the next keyframe starts a new segment.
    cut_next: bool,
    first_audio_ms: Option<u64>,
    video: TrackState,
    audio: TrackState,
    part_start: u64,
    part_starts_segment: bool,
    segment_start: u64,
    /// The target duration in ms, fixed when the first segment ends.
    target_ms: Option<u64>,
    /// The open segment starts with a keyframe (or has no video).
    segment_keyed: bool,
    sequence: u32,
    last_ts: Option<u32>,
    unwrapped: u64,
    /// Where the last sample written ends: a republish continues from here, whatever
    /// timestamps the new publisher starts at (its source may be a fresh one from zero).
    end_ms: u64,
    resume: bool,
    /// Where the next audio sample falls, in audio ticks.
    audio_next_tick: Option<u64>,
}

impl Packager {
    pub fn new(cfg: PackagerConfig) -> Self {
        Self {
            cfg,
            video_cfg: None,
            audio_cfg: None,
            init: None,
            next_init_id: 0,
            reinit: false,
            cut_next: false,
            first_audio_ms: None,
            video: TrackState::default(),
            audio: TrackState::default(),
            part_start: 0,
            part_starts_segment: true,
            segment_start: 0,
            target_ms: None,
            segment_keyed: true,
            sequence: 0,
            last_ts: None,
            unwrapped: 0,
            end_ms: 0,
            resume: false,
            audio_next_tick: None,
        }
    }

    pub fn init(&self) -> Option<&Arc<Init>> {
        self.init.as_ref()
    }

    /// EXT-X-TARGETDURATION: the configured segment length until the first segment ends.
    pub fn target_secs(&self) -> u64 {
        self.target_ms
            .map_or(self.cfg.segment_ms.div_ceil(1000).max(1), |ms| ms / 1000)
    }

    /// The open segment ends at `end`: the first one to end fixes the target duration
    /// (EXTINF rounds to the nearest second and must not exceed it).
    fn segment_ends(&mut self, end: u64) {
        if self.target_ms.is_none() && end > self.segment_start {
            let rounded = (end - self.segment_start + 500) / 1000;
            self.target_ms = Some(self.target_secs().max(rounded) * 1000);
        }
    }

    /// Whether the open segment must end at `t`, keyframe or not: waiting for the next
    /// frame (about `next` ms away, with half a frame of jitter) would make its EXTINF round
    /// above the target duration.
    fn must_cut(&self, t: u64, next: u64) -> bool {
        let Some(target) = self.target_ms else {
            return false;
        };
        let age = t.saturating_sub(self.segment_start);
        age > 0 && age + next + next / 2 >= target + 500
    }

    /// RTMP timestamps wrap after 49.7 days; tfdt must not.
    fn unwrap_ts(&mut self, ts: u32) -> u64 {
        match self.last_ts {
            None => self.unwrapped = u64::from(ts),
            Some(_) if std::mem::take(&mut self.resume) => self.unwrapped = self.end_ms,
            Some(last) => {
                let step = ts.wrapping_sub(last) as i32;
                self.unwrapped = self.unwrapped.saturating_add_signed(i64::from(step));
            }
        }
        self.last_ts = Some(ts);
        self.unwrapped
    }

    /// A publisher (re)started the stream: a new segment begins at its first keyframe.
    pub fn on_publish(&mut self) {
        self.cut_next = true;
        self.resume = self.last_ts.is_some();
    }

    /// The publisher left: what is pending becomes the last part, and the segment ends.
    pub fn on_unpublish(&mut self, out: &mut Vec<Out>) {
        if self.init.is_some() {
            let end = self.flush_pending();
            self.segment_ends(end);
            self.emit_part(end, out);
            out.push(Out::End);
        }
        self.cut_next = true;
        self.first_audio_ms = None;
    }

    pub fn push(&mut self, f: &Frame, out: &mut Vec<Out>) {
        match f.kind {
            MediaKind::Video => match codec::video(&f.payload) {
                VideoPacket::Config(c) => {
                    if self.video_cfg.as_ref() != Some(&c) {
                        self.reinit |= self.init.is_some();
                        self.video_cfg = Some(c);
                    }
                }
                VideoPacket::Frame(coded) => {
                    let t = self.unwrap_ts(f.timestamp);
                    self.on_video(t, coded, f.ingest, out);
                }
                VideoPacket::Other => {}
            },
            MediaKind::Audio => match codec::audio(&f.payload) {
                AudioPacket::Config(c) => {
                    if self.audio_cfg.as_ref() != Some(&c) {
                        self.reinit |= self.init.is_some();
                        self.audio_cfg = Some(c);
                    }
                }
                AudioPacket::Frame(data) => {
                    let t = self.unwrap_ts(f.timestamp);
                    self.on_audio(t, data, f.ingest, out);
                }
                AudioPacket::Other => {}
            },
            MediaKind::Metadata | MediaKind::Data => {}
        }
    }

    fn has_video(&self) -> bool {
        self.init.as_ref().is_some_and(|i| i.tracks.video.is_some())
    }

    fn on_video(&mut self, t: u64, coded: Coded, ingest: std::time::Instant, out: &mut Vec<Out>) {
        if self.video_cfg.is_none() {
            return;
        }
        let key = coded.keyframe;
        if key && (self.init.is_none() || self.reinit || !self.has_video()) {
            if self.init.is_some() {
                let end = self.flush_pending().max(t);
                self.segment_ends(end);
                self.emit_part(end, out);
            }
            self.start_init(t, out);
        } else if !self.has_video() {
            return; // before the first keyframe, or a video track the init lacks
        }
        let key_cut = key
            && (self.cut_next
                || !self.segment_keyed
                || t >= self.segment_start + self.cfg.segment_ms);
        self.complete(true, t);
        let next = self.video.last_duration;
        let seg_cut = key_cut || (!self.cut_next && self.must_cut(t, next));
        self.cut(seg_cut, t, next, !self.video.done.is_empty(), out);
        if key_cut {
            self.cut_next = false;
        }
        if seg_cut {
            self.segment_keyed = key;
        }
        self.video.pending = Some(Pending { t, coded, ingest });
    }

    fn on_audio(&mut self, t: u64, data: Bytes, ingest: std::time::Instant, out: &mut Vec<Out>) {
        if self.audio_cfg.is_none() {
            return;
        }
        let first = *self.first_audio_ms.get_or_insert(t);
        if self.video_cfg.is_none()
            && (self.init.is_none() || self.reinit)
            && t >= first + AUDIO_ONLY_AFTER_MS
        {
            if self.init.is_some() {
                let end = self.flush_pending().max(t);
                self.segment_ends(end);
                self.emit_part(end, out);
            }
            self.start_init(t, out);
        }
        let Some(init) = &self.init else {
            return;
        };
        if init.tracks.audio.is_none() {
            return;
        }
        let coded = Coded {
            cts_ms: 0,
            keyframe: true,
            data,
        };
        if init.tracks.video.is_some() {
            if self.cut_next {
                return; // the next segment starts at the coming keyframe; audio joins it there
            }
            self.complete(false, t);
            self.audio.pending = Some(Pending { t, coded, ingest });
            return;
        }
        // Audio-only: audio drives parts and segments.
        self.complete(false, t);
        let next = self.audio.last_duration;
        let seg_cut = self.cut_next
            || t >= self.segment_start + self.cfg.segment_ms
            || self.must_cut(t, next);
        self.cut(seg_cut, t, next, !self.audio.done.is_empty(), out);
        self.cut_next = false;
        self.audio.pending = Some(Pending { t, coded, ingest });
    }

    /// Ends the open part at `t` when the segment ends there, or when `t` is the frame
    /// nearest the part target: parts stay within half a frame of it (rfc8216bis wants them
    /// between 85 % and 100 % of PART-TARGET, which the playlist sets a little above the
    /// target). Keyframes inside a segment do not cut a part.
    fn cut(&mut self, seg_cut: bool, t: u64, next: u64, has_samples: bool, out: &mut Vec<Out>) {
        let part_age = t.saturating_sub(self.part_start);
        if seg_cut || (has_samples && part_age + next / 2 > self.cfg.part_ms) {
            if seg_cut {
                self.segment_ends(t);
            }
            self.emit_part(t, out);
            self.part_start = t;
            self.part_starts_segment = seg_cut;
        }
        if seg_cut {
            self.segment_start = t;
        }
    }

    /// The pending sample of a track is complete now that the next one is here at `t`.
    fn complete(&mut self, video: bool, t: u64) {
        let tr = if video {
            &mut self.video
        } else {
            &mut self.audio
        };
        if let Some(p) = tr.pending.take() {
            let d = t.saturating_sub(p.t);
            tr.last_duration = d;
            tr.done.push((p.t, p, d));
        }
    }

    /// Completes pending samples with their track's last duration (nothing follows them);
    /// returns where the last one ends.
    fn flush_pending(&mut self) -> u64 {
        let mut end = self.part_start;
        for tr in [&mut self.video, &mut self.audio] {
            if let Some(p) = tr.pending.take() {
                let d = if tr.last_duration > 0 {
                    tr.last_duration
                } else {
                    20
                };
                end = end.max(p.t + d);
                tr.done.push((p.t, p, d));
            }
        }
        end
    }

    fn start_init(&mut self, t: u64, out: &mut Vec<Out>) {
        self.video.done.clear();
        self.audio.done.clear();
        self.video.pending = None;
        self.audio.pending = None;
        let tracks = Tracks {
            video: self.video_cfg.clone(),
            audio: self.audio_cfg.clone(),
        };
        let init = Arc::new(Init {
            id: self.next_init_id,
            data: fmp4::init_segment(&tracks),
            tracks,
        });
        self.next_init_id += 1;
        self.init = Some(init.clone());
        self.reinit = false;
        self.cut_next = true;
        self.part_start = t;
        self.segment_start = t;
        self.segment_keyed = true;
        self.part_starts_segment = true;
        out.push(Out::Init(init));
    }

    /// Writes the completed samples as one fragment ending at `end`.
    fn emit_part(&mut self, end: u64, out: &mut Vec<Out>) {
        let Some(init) = self.init.clone() else {
            return;
        };
        if self.video.done.is_empty() && self.audio.done.is_empty() {
            return;
        }
        let to_samples = |done: &[(u64, Pending, u64)], timescale: u32, video: bool| {
            let ticks = |ms: u64| ms * u64::from(timescale) / 1000;
            let samples: Vec<Sample> = done
                .iter()
                .map(|(t, p, d)| Sample {
                    duration: (ticks(t + d) - ticks(*t)) as u32,
                    cts: if video {
                        (i64::from(p.coded.cts_ms) * i64::from(timescale) / 1000) as i32
                    } else {
                        0
                    },
                    keyframe: p.coded.keyframe,
                    data: p.coded.data.clone(),
                })
                .collect();
            (done.first().map_or(0, |d| ticks(d.0)), samples)
        };
        let (vbase, vs) = to_samples(&self.video.done, fmp4::VIDEO_TIMESCALE, true);
        let (mut abase, mut as_) =
            to_samples(&self.audio.done, init.tracks.timescale(AUDIO_TRACK), false);
        // An AAC frame is 1024 samples: durations from millisecond timestamps would jitter
        // by a few samples (gaps and overlaps in the decoder). Frames follow each other
        // exactly unless the timestamps drift from that by more than a frame (a gap).
        if !as_.is_empty() {
            if let Some(next) = self.audio_next_tick {
                if next.abs_diff(abase) <= AAC_FRAME {
                    abase = next;
                }
            }
            for s in &mut as_ {
                s.duration = AAC_FRAME as u32;
            }
            self.audio_next_tick = Some(abase + AAC_FRAME * as_.len() as u64);
        }
        let independent = match self.video.done.first() {
            Some(v) => v.1.coded.keyframe,
            None => init.tracks.video.is_none(),
        };
        self.sequence = self.sequence.wrapping_add(1);
        let (data, len) = fmp4::fragment(
            self.sequence,
            &[
                Run {
                    track: VIDEO_TRACK,
                    base: vbase,
                    samples: &vs,
                    is_video: true,
                },
                Run {
                    track: AUDIO_TRACK,
                    base: abase,
                    samples: &as_,
                    is_video: false,
                },
            ],
        );
        let start_ms = self.part_start;
        let sample_end = |done: &[(u64, Pending, u64)]| done.iter().map(|(t, _, d)| t + d).max();
        self.end_ms = self
            .end_ms
            .max(end)
            .max(sample_end(&self.video.done).unwrap_or(0))
            .max(sample_end(&self.audio.done).unwrap_or(0));
        let first_ingest = self
            .video
            .done
            .iter()
            .chain(&self.audio.done)
            .map(|(_, p, _)| p.ingest)
            .min();
        out.push(Out::Part(Part {
            data,
            len,
            duration_ms: end.saturating_sub(start_ms),
            independent,
            starts_segment: self.part_starts_segment,
            target_secs: self.target_secs(),
            start_ms,
            first_ingest,
        }));
        self.video.done.clear();
        self.audio.done.clear();
    }
}

#[cfg(test)]
mod tests;
