//! The channel's output timeline: where each track stands, the last sequence header sent
//! per track, and the silence that fills an audio gap. The switcher decides what goes out;
//! this keeps it one continuous, ordered stream.

use bytes::Bytes;

use super::format::Format;
use crate::media::codec::{self, AudioPacket, VideoPacket};
use crate::media::frame::MediaKind;
use crate::protocol::amf::Amf0Value;

/// Video frame spacing assumed until the output has shown its own.
const DEFAULT_VIDEO_STEP_MS: u32 = 33;
/// Silence inserted at one switch, at most (about a second of AAC).
const MAX_FILL_FRAMES: u32 = 48;

/// One message the channel publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    pub kind: MediaKind,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// The last header sent per track, and where each track's output time stands.
#[derive(Default)]
pub struct Output {
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    last_video: Option<u32>,
    last_audio: Option<u32>,
    video_step: Option<u32>,
    /// AAC frames are 1024 samples: their spacing in ms, from the sample rate.
    audio_step: Option<f64>,
    channels: u16,
    metadata_sent: bool,
    /// The latest presentation time of a picture sent (decode time + composition offset).
    max_pts: Option<u32>,
}

/// How far `a` is after `b` on the output clock, which wraps (u32 milliseconds, about
/// 49.7 days: a channel may run longer).
pub fn after(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// The composition time offset of a coded video frame (B-frames), 0 for anything else.
pub fn cts(kind: MediaKind, payload: &Bytes) -> i32 {
    match (kind, codec::video(payload)) {
        (MediaKind::Video, VideoPacket::Frame(c)) => c.cts_ms,
        _ => 0,
    }
}

impl Output {
    /// An output that already ran up to `ts` (tests of the clock's wrap).
    #[cfg(test)]
    pub fn starting_at(ts: u32) -> Output {
        Output {
            last_video: Some(ts),
            last_audio: Some(ts),
            ..Output::default()
        }
    }

    fn video_step(&self) -> u32 {
        self.video_step.unwrap_or(DEFAULT_VIDEO_STEP_MS)
    }

    /// Where the next source or slate loop starts: one frame after the last frame of each
    /// track, and late enough that its first picture (shown `first_cts` after it is decoded)
    /// comes after every picture already shown.
    pub fn next_start(&self, first_cts: i32) -> u32 {
        let candidates = [
            self.last_video.map(|t| t.wrapping_add(self.video_step())),
            self.last_audio
                .map(|t| t.wrapping_add(self.audio_step.map_or(23, |s| s.round() as u32))),
            self.max_pts.map(|p| {
                p.wrapping_add(self.video_step())
                    .wrapping_sub(first_cts as u32)
            }),
        ];
        candidates
            .into_iter()
            .flatten()
            .reduce(|a, b| if after(b, a) > 0 { b } else { a })
            .unwrap_or(0)
    }

    /// Whether a frame at `ts` breaks its track's timeline (a source whose clock jumped back,
    /// or far ahead): the switcher rebases it like a switch instead.
    pub fn breaks(&self, kind: MediaKind, ts: u32) -> bool {
        let last = match kind {
            MediaKind::Video => self.last_video,
            MediaKind::Audio => self.last_audio,
            _ => None,
        };
        last.is_some_and(|l| !(-1000..=60_000).contains(&after(ts, l)))
    }

    pub fn send_headers(
        &mut self,
        headers: &[(MediaKind, Bytes)],
        format: Format,
        ts: u32,
        out: &mut Vec<Emit>,
    ) {
        if !self.metadata_sent {
            self.metadata_sent = true;
            out.push(Emit {
                kind: MediaKind::Metadata,
                timestamp: ts,
                payload: metadata(format),
            });
        }
        for (kind, payload) in headers {
            let slot = match kind {
                MediaKind::Video => &mut self.video_config,
                MediaKind::Audio => &mut self.audio_config,
                _ => continue,
            };
            if slot.as_ref() == Some(payload) {
                continue;
            }
            *slot = Some(payload.clone());
            if *kind == MediaKind::Audio {
                if let AudioPacket::Config(c) = codec::audio(payload) {
                    let rate = c.sample_rate.clamp(8_000, 96_000);
                    self.audio_step = Some(1_024_000.0 / f64::from(rate));
                    self.channels = c.channels;
                }
            }
            out.push(Emit {
                kind: *kind,
                timestamp: ts,
                payload: payload.clone(),
            });
        }
    }

    /// One output frame, kept in order per track: an audio frame at or before the last one
    /// (the old source's tail overlapping the new one's head) is dropped.
    pub fn emit(&mut self, kind: MediaKind, ts: u32, payload: Bytes, out: &mut Vec<Emit>) {
        match kind {
            MediaKind::Audio => {
                if self.last_audio.is_some_and(|l| after(ts, l) <= 0) {
                    return;
                }
                self.last_audio = Some(ts);
            }
            MediaKind::Video => {
                if let Some(l) = self.last_video {
                    let d = after(ts, l);
                    if (1..=200).contains(&d) {
                        self.video_step = Some(d as u32);
                    }
                }
                self.last_video = Some(ts);
                let pts = ts.wrapping_add(cts(kind, &payload) as u32);
                if self.max_pts.is_none_or(|m| after(pts, m) > 0) {
                    self.max_pts = Some(pts);
                }
            }
            _ => {}
        }
        out.push(Emit {
            kind,
            timestamp: ts,
            payload,
        });
    }

    /// Silent AAC frames on the last audio frame's grid up to `until`, at most
    /// `MAX_FILL_FRAMES` right before it, so the audio track has no hole where the video
    /// switched.
    pub fn fill_audio(&mut self, until: u32, out: &mut Vec<Emit>) {
        let (Some(last), Some(step), Some(frame)) =
            (self.last_audio, self.audio_step, silent_aac(self.channels))
        else {
            return;
        };
        let gap = f64::from(after(until, last));
        if gap <= step * 1.5 {
            return;
        }
        let k_max = ((gap - step / 2.0) / step).floor() as u32;
        let k_min = k_max.saturating_sub(MAX_FILL_FRAMES - 1).max(1);
        for k in k_min..=k_max {
            let ts = last.wrapping_add((f64::from(k) * step).round() as u32);
            let mut p = Vec::with_capacity(2 + frame.len());
            p.extend_from_slice(&[0xAF, 0x01]);
            p.extend_from_slice(frame);
            self.emit(MediaKind::Audio, ts, Bytes::from(p), out);
        }
    }
}

/// A raw AAC-LC frame of silence (no spectral data) for 1 or 2 channels: the same bytes at
/// every sample rate.
pub(crate) fn silent_aac(channels: u16) -> Option<&'static [u8]> {
    match channels {
        1 => Some(&[0x00, 0xc8, 0x00, 0x80, 0x23, 0x80]),
        2 => Some(&[0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80]),
        _ => None,
    }
}

/// The channel's own onMetaData, from what first goes on air: a source's or the slate's
/// would describe that input (a file's duration), not the channel.
fn metadata(format: Format) -> Bytes {
    let mut props: Vec<(&'static str, Amf0Value)> = Vec::new();
    if let Some(v) = format.video {
        props.push(("width", Amf0Value::Number(f64::from(v.width))));
        props.push(("height", Amf0Value::Number(f64::from(v.height))));
        let id = match v.codec {
            codec::VideoCodec::Avc => 7.0,
            codec::VideoCodec::Hevc => 12.0,
        };
        props.push(("videocodecid", Amf0Value::Number(id)));
    }
    if let Some(a) = format.audio {
        props.push(("audiocodecid", Amf0Value::Number(10.0)));
        props.push((
            "audiosamplerate",
            Amf0Value::Number(f64::from(a.sample_rate)),
        ));
        props.push(("stereo", Amf0Value::Boolean(a.channels >= 2)));
    }
    props.push(("encoder", Amf0Value::String("rtmp-edge channel".into())));
    let mut buf = Vec::new();
    Amf0Value::String("onMetaData".into()).encode(&mut buf);
    Amf0Value::object(props).encode(&mut buf);
    Bytes::from(buf)
}
