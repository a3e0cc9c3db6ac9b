//! What a late joiner is sent before live frames: metadata, the latest decoder
//! configuration per track, and the current GOP (from the last video keyframe on).

use bytes::{Bytes, BytesMut};

use super::frame::{MediaKind, SharedFrame};

#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// A GOP larger than this is dropped: joiners then wait for the next keyframe.
    pub max_gop_bytes: usize,
    pub max_gop_frames: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_gop_bytes: 32 << 20,
            max_gop_frames: 2500,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct StreamCache {
    limits: CacheLimits,
    metadata: Option<SharedFrame>,
    /// Latest sequence header / E-RTMP metadata per (kind, track, is_ext_metadata).
    config: Vec<SharedFrame>,
    gop: Vec<SharedFrame>,
    gop_bytes: usize,
    /// A GOP overflowed the limits: keep nothing until the next keyframe.
    gop_overflow: bool,
}

impl StreamCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Updates the cache with a frame that is being relayed live.
    pub fn apply(&mut self, f: &SharedFrame) {
        match f.kind {
            MediaKind::Metadata => self.metadata = Some(f.clone()),
            MediaKind::Audio | MediaKind::Video if f.is_config() => {
                let same = |c: &SharedFrame| {
                    c.kind == f.kind
                        && c.info.track == f.info.track
                        && c.info.ext_metadata == f.info.ext_metadata
                };
                match self.config.iter_mut().find(|c| same(c)) {
                    Some(slot) => *slot = f.clone(),
                    None => self.config.push(f.clone()),
                }
            }
            _ => {
                if f.is_video_keyframe() {
                    self.gop.clear();
                    self.gop_bytes = 0;
                    self.gop_overflow = false;
                } else if self.gop.is_empty() || self.gop_overflow {
                    return;
                }
                self.gop_bytes += f.wire_len();
                self.gop.push(f.clone());
                if self.gop_bytes > self.limits.max_gop_bytes
                    || self.gop.len() > self.limits.max_gop_frames
                {
                    self.gop.clear();
                    self.gop_bytes = 0;
                    self.gop_overflow = true;
                }
            }
        }
    }

    /// Forgets everything (the publisher left; a new one may use other codecs).
    pub fn clear(&mut self) {
        *self = Self::new(self.limits);
    }

    pub fn has_gop(&self) -> bool {
        !self.gop.is_empty()
    }

    pub fn gop_len(&self) -> usize {
        self.gop.len()
    }

    pub fn metadata(&self) -> Option<&SharedFrame> {
        self.metadata.as_ref()
    }

    pub fn config_frames(&self) -> &[SharedFrame] {
        &self.config
    }

    /// The frames since the last keyframe (empty until one arrived).
    pub fn gop(&self) -> &[SharedFrame] {
        &self.gop
    }

    /// The late-join preamble for a player on `stream_id`: metadata, decoder configs
    /// re-stamped to the GOP's start (so the player's clock starts where the pictures do),
    /// then the GOP frames, shared with the cache rather than copied (a copy per joiner would
    /// cost a whole GOP of memory each when thousands join at once). Returns the buffers and
    /// whether they end with a usable GOP.
    pub fn start_sequence(&self, stream_id: u32, chunk_size: u32) -> (Vec<Bytes>, bool) {
        let start_ts = self.gop.first().map(|f| f.timestamp).unwrap_or_else(|| {
            self.config
                .iter()
                .chain(self.metadata.iter())
                .map(|f| f.timestamp)
                .max()
                .unwrap_or(0)
        });
        let mut head = BytesMut::new();
        // ffmpeg's FLV demuxer takes onMetaData as metadata only at timestamp 0; any other
        // time turns it into a subtitle stream that remuxers then carry.
        if let Some(m) = &self.metadata {
            head.extend_from_slice(&m.encode_as(0, stream_id, chunk_size));
        }
        for f in &self.config {
            head.extend_from_slice(&f.encode_as(start_ts, stream_id, chunk_size));
        }
        let mut out = Vec::with_capacity(1 + self.gop.len());
        out.push(head.freeze());
        out.extend(self.gop.iter().map(|f| {
            if stream_id == super::frame::SHARED_STREAM_ID {
                f.wire().clone()
            } else {
                f.encode_as(f.timestamp, stream_id, chunk_size)
            }
        }));
        (out, self.has_gop())
    }
}
