//! What the load publisher sends: an FLV file looped with rebased timestamps, or a
//! synthetic stream of a given bitrate and GOP (opaque bytes shaped like H.264 + AAC).

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
        frame: u64,
        audio_next_ms: u64,
        headers_sent: bool,
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

    pub fn synthetic(kbps: u32, gop_secs: f64, fps: u32) -> Source {
        let video_bps = (kbps as usize * 1000).saturating_sub(64_000).max(8_000) / 8;
        let gop_frames = ((gop_secs * fps as f64).round() as u32).max(1);
        // A keyframe ~5x an inter frame, averaging to the requested bitrate.
        let per_gop = video_bps as f64 * gop_secs;
        let frame_bytes = (per_gop / (gop_frames as f64 + 4.0)).max(16.0) as usize;
        Source::Synthetic {
            frame_bytes,
            key_bytes: frame_bytes * 5,
            fps,
            gop_frames,
            frame: 0,
            audio_next_ms: 0,
            headers_sent: false,
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
                frame,
                audio_next_ms,
                headers_sent,
            } => {
                if !*headers_sent {
                    *headers_sent = true;
                    return Item {
                        type_id: msg::VIDEO,
                        timestamp: 0,
                        payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF]),
                    };
                }
                let video_ms = *frame * 1000 / u64::from(*fps);
                if *audio_next_ms <= video_ms {
                    let ts = *audio_next_ms;
                    *audio_next_ms += 21; // ~1024 samples at 48 kHz
                    let mut p = vec![0u8; 170]; // ~64 kbps
                    p[0] = 0xAF;
                    p[1] = if ts == 0 { 0 } else { 1 };
                    return Item {
                        type_id: msg::AUDIO,
                        timestamp: ts as u32,
                        payload: Bytes::from(p),
                    };
                }
                let key = *frame % u64::from(*gop_frames) == 0;
                *frame += 1;
                let mut p = vec![0u8; if key { *key_bytes } else { *frame_bytes }];
                p[0] = if key { 0x17 } else { 0x27 };
                p[1] = 1;
                Item {
                    type_id: msg::VIDEO,
                    timestamp: video_ms as u32,
                    payload: Bytes::from(p),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rate_and_gop() {
        let mut s = Source::synthetic(1000, 2.0, 30);
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
}
