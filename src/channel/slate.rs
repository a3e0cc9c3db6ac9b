//! The offline slate: an FLV file read once (at start, and again on SIGHUP) into shared
//! frames that the switcher loops with continuous timestamps. Nothing is decoded or
//! re-encoded; the frames are the file's tag bodies.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::Format;
use crate::media::flv::{self, FlvError, TAG_AUDIO, TAG_VIDEO};
use crate::media::frame::MediaKind;
use crate::media::tag;

/// A slate larger than this is refused: it is held in memory whole.
const MAX_SLATE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct SlateFrame {
    pub kind: MediaKind,
    /// Milliseconds from the first keyframe.
    pub at: u32,
    pub payload: Bytes,
}

#[derive(Debug)]
pub struct Slate {
    pub path: PathBuf,
    /// Sequence headers, sent before the first frame (video first).
    pub config: Vec<(MediaKind, Bytes)>,
    /// Coded frames from the first video keyframe on, in file order.
    pub frames: Vec<SlateFrame>,
    /// One loop's length: where the next loop's first frame goes.
    pub loop_ms: u32,
    pub format: Format,
    /// The file's size and modification time when read (a reload skips an unchanged file).
    stamp: Option<(u64, std::time::SystemTime)>,
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[derive(Debug, thiserror::Error)]
pub enum SlateError {
    #[error("slate {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("slate {0}: larger than {MAX_SLATE_BYTES} bytes")]
    TooLarge(PathBuf),
    #[error("slate {0}: {1}")]
    Flv(PathBuf, FlvError),
    #[error("slate {0}: no audio or video frames")]
    Empty(PathBuf),
    #[error("slate {0}: video without a sequence header or a keyframe")]
    NoKeyframe(PathBuf),
}

impl Slate {
    pub fn load(path: &Path) -> Result<Slate, SlateError> {
        let err_path = || path.to_path_buf();
        let len = std::fs::metadata(path)
            .map_err(|e| SlateError::Read(err_path(), e))?
            .len();
        if len > MAX_SLATE_BYTES {
            return Err(SlateError::TooLarge(err_path()));
        }
        let file = Bytes::from(std::fs::read(path).map_err(|e| SlateError::Read(err_path(), e))?);
        let tags = flv::read_tags(&file).map_err(|e| SlateError::Flv(err_path(), e))?;
        let mut slate = Self::from_tags(path, tags)?;
        slate.stamp = stamp(path);
        Ok(slate)
    }

    /// The file on disk is not the one read.
    pub fn changed(&self) -> bool {
        self.stamp.is_none() || stamp(&self.path) != self.stamp
    }

    pub(crate) fn from_tags(path: &Path, tags: Vec<flv::FlvTag>) -> Result<Slate, SlateError> {
        let mut config: Vec<(MediaKind, Bytes)> = Vec::new();
        let mut coded: Vec<(MediaKind, u32, Bytes, bool)> = Vec::new();
        for t in tags {
            let (kind, info) = match t.tag_type {
                TAG_VIDEO => (MediaKind::Video, tag::inspect_video(&t.data)),
                TAG_AUDIO => (MediaKind::Audio, tag::inspect_audio(&t.data)),
                _ => continue, // onMetaData describes the file (its duration), not a live stream
            };
            if info.sequence_header {
                if !config.iter().any(|(k, _)| *k == kind) {
                    config.push((kind, t.data));
                }
            } else if !info.ext_metadata && !t.data.is_empty() {
                coded.push((kind, t.timestamp, t.data, info.keyframe));
            }
        }
        config.sort_by_key(|(k, _)| *k != MediaKind::Video);
        let has_video = coded.iter().any(|c| c.0 == MediaKind::Video);
        let start = if has_video {
            let has_config = config.iter().any(|(k, _)| *k == MediaKind::Video);
            match coded.iter().position(|c| c.0 == MediaKind::Video && c.3) {
                Some(i) if has_config => i,
                _ => return Err(SlateError::NoKeyframe(path.to_path_buf())),
            }
        } else {
            0
        };
        let Some(first) = coded.get(start) else {
            return Err(SlateError::Empty(path.to_path_buf()));
        };
        let t0 = first.1;
        let frames: Vec<SlateFrame> = coded
            .into_iter()
            .skip(start)
            .filter(|c| c.1 >= t0)
            .map(|(kind, ts, payload, _)| SlateFrame {
                kind,
                at: ts - t0,
                payload,
            })
            .collect();
        let format = Format::from_configs(config.iter().map(|(k, p)| (*k, p)));
        let loop_ms = loop_length(&frames);
        Ok(Slate {
            path: path.to_path_buf(),
            config,
            frames,
            loop_ms,
            format,
            stamp: None,
        })
    }
}

/// Each track's last frame plus its usual frame spacing; the longer track decides, so
/// the next loop starts after everything of this one.
fn loop_length(frames: &[SlateFrame]) -> u32 {
    let mut end = 1u32;
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let times: Vec<u32> = frames
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.at)
            .collect();
        let Some(&last) = times.last() else {
            continue;
        };
        let step = times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .filter(|&d| d > 0)
            .min()
            .unwrap_or(40);
        end = end.max(last + step);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag_type: u8, timestamp: u32, data: &[u8]) -> flv::FlvTag {
        flv::FlvTag {
            tag_type,
            timestamp,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn starts_at_the_first_keyframe_and_measures_one_loop() {
        let tags = vec![
            tag(TAG_AUDIO, 0, &[0xAF, 0x00, 0x12, 0x10]),
            tag(TAG_VIDEO, 0, &[0x17, 0x00, 0, 0, 0, 1, 2]),
            tag(TAG_AUDIO, 0, &[0xAF, 0x01, 9]),
            tag(TAG_VIDEO, 0, &[0x27, 0x01, 0, 0, 0, 5]),
            tag(TAG_VIDEO, 40, &[0x17, 0x01, 0, 0, 0, 6]),
            tag(TAG_AUDIO, 46, &[0xAF, 0x01, 9]),
            tag(TAG_VIDEO, 80, &[0x27, 0x01, 0, 0, 0, 7]),
            tag(TAG_AUDIO, 69, &[0xAF, 0x01, 9]),
        ];
        let s = Slate::from_tags(Path::new("x.flv"), tags).unwrap();
        assert_eq!(s.config[0].0, MediaKind::Video, "video header first");
        assert_eq!(s.config.len(), 2);
        let times: Vec<(MediaKind, u32)> = s.frames.iter().map(|f| (f.kind, f.at)).collect();
        assert_eq!(
            times,
            [
                (MediaKind::Video, 0),
                (MediaKind::Audio, 6),
                (MediaKind::Video, 40),
                (MediaKind::Audio, 29)
            ]
        );
        // video ends at 40 + 40, audio at 29 + 23
        assert_eq!(s.loop_ms, 80);
    }

    #[test]
    fn refuses_video_without_keyframe_or_header() {
        let no_key = vec![
            tag(TAG_VIDEO, 0, &[0x17, 0x00, 0, 0, 0, 1]),
            tag(TAG_VIDEO, 0, &[0x27, 0x01, 0, 0, 0, 5]),
        ];
        assert!(matches!(
            Slate::from_tags(Path::new("x.flv"), no_key),
            Err(SlateError::NoKeyframe(_))
        ));
        let no_header = vec![tag(TAG_VIDEO, 0, &[0x17, 0x01, 0, 0, 0, 5])];
        assert!(matches!(
            Slate::from_tags(Path::new("x.flv"), no_header),
            Err(SlateError::NoKeyframe(_))
        ));
        assert!(matches!(
            Slate::from_tags(Path::new("x.flv"), vec![]),
            Err(SlateError::Empty(_))
        ));
    }
}
