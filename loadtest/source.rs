//! What the load publisher sends: an FLV file looped with rebased timestamps, or a
//! synthetic stream of a given bitrate and GOP that any server and player accepts: a real
//! H.264 decoder configuration (64x64 Constrained Baseline) and AAC-LC one (48 kHz stereo),
//! every picture a tiny IDR slice padded to size with a filler-data NAL unit (decoders skip
//! it), and silent AAC frames.

use bytes::Bytes;
use rtmp_edge::media::flv::{self, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use rtmp_edge::protocol::message as msg;

#[derive(Debug, Clone)]
pub struct Item {
    pub type_id: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

pub enum Source {
    File {
        tags: Vec<Item>,
        next: usize,
        /// Added to every timestamp; grows by one file duration per loop.
        offset: u32,
        span: u32,
    },
    Synthetic {
        frame_bytes: usize,
        key_bytes: usize,
        fps: u32,
        gop_frames: u32,
        /// Frames by which the keyframes come early (the first frame is one regardless).
        shift: u32,
        frame: u64,
        /// Audio frames sent (frame n is at n * 1024 / 48000 s).
        audio_frames: u64,
        /// Sequence headers sent (video, then audio).
        headers: u8,
    },
}

impl Source {
    pub fn from_flv(path: &std::path::Path) -> anyhow::Result<Source> {
        let data = Bytes::from(std::fs::read(path)?);
        let tags: Vec<Item> = flv::read_tags(&data)?
            .into_iter()
            .filter_map(|t| {
                let type_id = match t.tag_type {
                    TAG_AUDIO => msg::AUDIO,
                    TAG_VIDEO => msg::VIDEO,
                    TAG_SCRIPT => msg::DATA_AMF0,
                    _ => return None,
                };
                Some(Item {
                    type_id,
                    timestamp: t.timestamp,
                    payload: t.data,
                })
            })
            .collect();
        anyhow::ensure!(!tags.is_empty(), "{} holds no FLV tags", path.display());
        let first = tags.iter().map(|t| t.timestamp).min().unwrap_or(0);
        let last = tags.iter().map(|t| t.timestamp).max().unwrap_or(0);
        let tags = tags
            .into_iter()
            .map(|mut t| {
                t.timestamp -= first;
                t
            })
            .collect();
        Ok(Source::File {
            tags,
            next: 0,
            offset: 0,
            // One frame interval past the last tag, so the loop seam keeps its cadence.
            span: last - first + 33,
        })
    }

    /// `phase` of `phases` shifts the keyframes of this publisher's stream: publisher i of
    /// n at phase i keyframes at 0, then i/n of a GOP later and every GOP on, so n
    /// publishers' GOPs are spread like independent encoders', not in step.
    pub fn synthetic(kbps: u32, gop_secs: f64, fps: u32, phase: usize, phases: usize) -> Source {
        let audio_bps = (AUDIO_FRAME.len() + 2) * 48_000 / 1024;
        let video_bps = (kbps as usize * 125).saturating_sub(audio_bps).max(1_000);
        let gop_frames = ((gop_secs * fps as f64).round() as u32).max(1);
        // A keyframe ~5x an inter frame, averaging to the requested bitrate.
        let per_gop = video_bps as f64 * gop_secs;
        let frame_bytes = (per_gop / (gop_frames as f64 + 4.0)).max(MIN_PICTURE as f64) as usize;
        let shift = (phase as u64 * u64::from(gop_frames) / phases.max(1) as u64) as u32;
        Source::Synthetic {
            frame_bytes,
            key_bytes: frame_bytes * 5,
            fps,
            gop_frames,
            shift,
            frame: 0,
            audio_frames: 0,
            headers: 0,
        }
    }

    /// The next message to send, in timestamp order.
    pub fn next_item(&mut self) -> Item {
        match self {
            Source::File {
                tags,
                next,
                offset,
                span,
            } => {
                // Script tags are sent once; looping them would re-announce metadata.
                loop {
                    if *next >= tags.len() {
                        *next = 0;
                        *offset = offset.wrapping_add(*span);
                    }
                    let t = &tags[*next];
                    *next += 1;
                    if t.type_id == msg::DATA_AMF0 && *offset > 0 {
                        continue;
                    }
                    return Item {
                        type_id: t.type_id,
                        timestamp: t.timestamp.wrapping_add(*offset),
                        payload: t.payload.clone(),
                    };
                }
            }
            Source::Synthetic {
                frame_bytes,
                key_bytes,
                fps,
                gop_frames,
                shift,
                frame,
                audio_frames,
                headers,
            } => {
                if *headers < 2 {
                    *headers += 1;
                    return Item {
                        type_id: if *headers == 1 {
                            msg::VIDEO
                        } else {
                            msg::AUDIO
                        },
                        timestamp: 0,
                        payload: if *headers == 1 {
                            video_config()
                        } else {
                            Bytes::from_static(&AUDIO_CONFIG)
                        },
                    };
                }
                let video_ms = *frame * 1000 / u64::from(*fps);
                let audio_ms = *audio_frames * 1024 / 48;
                if audio_ms <= video_ms {
                    *audio_frames += 1;
                    let mut p = vec![0xAF, 1];
                    p.extend_from_slice(&AUDIO_FRAME);
                    return Item {
                        type_id: msg::AUDIO,
                        timestamp: audio_ms as u32,
                        payload: Bytes::from(p),
                    };
                }
                let key = *frame == 0 || (*frame + u64::from(*shift)) % u64::from(*gop_frames) == 0;
                let variant = (*frame % 2) as usize;
                *frame += 1;
                Item {
                    type_id: msg::VIDEO,
                    timestamp: video_ms as u32,
                    payload: picture(key, variant, if key { *key_bytes } else { *frame_bytes }),
                }
            }
        }
    }
}

/// x264's SPS and PPS for 64x64 Constrained Baseline, level 1.
const SPS: [u8; 21] = [
    0x67, 0x42, 0xc0, 0x0a, 0xdc, 0x42, 0x6c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
    0x0f, 0x03, 0xc4, 0x89, 0xe0,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x0f, 0xc8];
/// Two IDR slices of a grey 64x64 picture with different `idr_pic_id`s: consecutive IDR
/// pictures must differ in it, so frames alternate between them.
const IDR: [[u8; 21]; 2] = [
    [
        0x65, 0x88, 0x82, 0x03, 0x28, 0x98, 0xa0, 0x00, 0x6e, 0x4e, 0x4e, 0x4e, 0xba, 0xeb, 0xae,
        0xba, 0xeb, 0xae, 0xba, 0xeb, 0xaf,
    ],
    [
        0x65, 0x88, 0x84, 0x0c, 0xa2, 0x62, 0x80, 0x01, 0xb9, 0x39, 0x39, 0x3a, 0xeb, 0xae, 0xba,
        0xeb, 0xae, 0xba, 0xeb, 0xae, 0xbc,
    ],
];
/// FLV video tag header (frame type, AVC, packet type, composition time) + 2 length-prefixed
/// NAL units' lengths.
const MIN_PICTURE: usize = 5 + 4 + IDR[0].len() + 4 + 2;
/// AAC-LC, 48 kHz, stereo.
const AUDIO_CONFIG: [u8; 4] = [0xAF, 0x00, 0x11, 0x90];
/// A raw AAC-LC stereo frame of silence.
const AUDIO_FRAME: [u8; 9] = [0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80];

/// The AVC sequence header: an AVCDecoderConfigurationRecord with the SPS and PPS.
fn video_config() -> Bytes {
    let mut p = vec![0x17, 0, 0, 0, 0, 1, SPS[1], SPS[2], SPS[3], 0xFF, 0xE1];
    p.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
    p.extend_from_slice(&SPS);
    p.push(1);
    p.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    p.extend_from_slice(&PPS);
    Bytes::from(p)
}

/// One picture of `size` bytes: an IDR slice, then a filler-data NAL unit (type 12) making
/// up the size.
fn picture(key: bool, variant: usize, size: usize) -> Bytes {
    let size = size.max(MIN_PICTURE);
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&[if key { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
    let idr = &IDR[variant % 2];
    p.extend_from_slice(&(idr.len() as u32).to_be_bytes());
    p.extend_from_slice(idr);
    let filler = size - p.len() - 4;
    p.extend_from_slice(&(filler as u32).to_be_bytes());
    p.push(0x0C);
    p.resize(size - 1, 0xFF);
    p.push(0x80);
    Bytes::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rate_and_gop() {
        let mut s = Source::synthetic(1000, 2.0, 30, 0, 1);
        let mut bytes = 0usize;
        let mut keys = 0;
        let mut last_ts = 0;
        loop {
            let it = s.next_item();
            if it.timestamp >= 10_000 {
                break;
            }
            assert!(it.timestamp >= last_ts || it.type_id != msg::VIDEO);
            last_ts = last_ts.max(it.timestamp);
            bytes += it.payload.len();
            if it.type_id == msg::VIDEO && it.payload[0] == 0x17 && it.payload[1] == 1 {
                keys += 1;
            }
        }
        let kbps = bytes * 8 / 10 / 1000;
        assert!((900..=1100).contains(&kbps), "{kbps} kbps");
        assert_eq!(keys, 5);
    }

    /// Keyframe timestamps of a synthetic stream, up to `until` ms.
    fn keyframes(mut s: Source, until: u32) -> Vec<u32> {
        let mut keys = Vec::new();
        loop {
            let it = s.next_item();
            if it.timestamp >= until {
                return keys;
            }
            if it.type_id == msg::VIDEO && it.payload[0] == 0x17 && it.payload[1] == 1 {
                keys.push(it.timestamp);
            }
        }
    }

    #[test]
    fn publishers_keyframes_are_spread_over_the_gop() {
        // 30 fps, 2 s GOP: 60 frames. Publisher 1 of 4 shifts by 15 frames (500 ms).
        assert_eq!(
            keyframes(Source::synthetic(1000, 2.0, 30, 0, 4), 5000),
            [0, 2000, 4000]
        );
        assert_eq!(
            keyframes(Source::synthetic(1000, 2.0, 30, 1, 4), 5000),
            [0, 1500, 3500]
        );
        assert_eq!(
            keyframes(Source::synthetic(1000, 2.0, 30, 3, 4), 5000),
            [0, 500, 2500, 4500]
        );
    }
}
