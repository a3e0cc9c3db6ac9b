//! What a channel compares between its slate and its sources: video codec and picture
//! size, audio sample rate and channels, read from their decoder configurations. A
//! difference makes players and platforms reinitialise (or end the broadcast), so it is
//! reported, or refused in strict mode.

use std::fmt;

use bytes::Bytes;

use crate::media::codec::{self, AudioPacket, VideoCodec, VideoPacket};
use crate::media::frame::MediaKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub channels: u16,
}

/// A stream's format as far as its configuration records tell (None: no such record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    pub video: Option<VideoFormat>,
    pub audio: Option<AudioFormat>,
}

impl Format {
    /// From a stream's sequence headers (anything else is ignored).
    pub fn from_configs<'a>(frames: impl IntoIterator<Item = (MediaKind, &'a Bytes)>) -> Self {
        let mut f = Self::default();
        for (kind, payload) in frames {
            match kind {
                MediaKind::Video => {
                    if let VideoPacket::Config(c) = codec::video(payload) {
                        f.video = Some(VideoFormat {
                            codec: c.codec,
                            width: c.width,
                            height: c.height,
                        });
                    }
                }
                MediaKind::Audio => {
                    if let AudioPacket::Config(c) = codec::audio(payload) {
                        f.audio = Some(AudioFormat {
                            sample_rate: c.sample_rate,
                            channels: c.channels,
                        });
                    }
                }
                _ => {}
            }
        }
        f
    }

    pub fn is_known(&self) -> bool {
        self.video.is_some() || self.audio.is_some()
    }

    /// How `other` differs from `self`, in words; empty when it does not.
    pub fn differences(&self, other: &Format) -> Vec<String> {
        let mut out = Vec::new();
        if self.video != other.video {
            out.push(format!(
                "video {} instead of {}",
                show_video(other.video),
                show_video(self.video)
            ));
        }
        if self.audio != other.audio {
            out.push(format!(
                "audio {} instead of {}",
                show_audio(other.audio),
                show_audio(self.audio)
            ));
        }
        out
    }
}

fn show_video(v: Option<VideoFormat>) -> String {
    match v {
        Some(v) => {
            let codec = match v.codec {
                VideoCodec::Avc => "H.264",
                VideoCodec::Hevc => "H.265",
            };
            format!("{codec} {}x{}", v.width, v.height)
        }
        None => "none".into(),
    }
}

fn show_audio(a: Option<AudioFormat>) -> String {
    match a {
        Some(a) => format!("AAC {} Hz {} ch", a.sample_rate, a.channels),
        None => "none".into(),
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", show_video(self.video), show_audio(self.audio))
    }
}
