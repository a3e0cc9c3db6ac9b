//! A run: the live frames of one stream that arrived on a shard since its last coalescing
//! flush. With a latency budget every viewer of the stream gets the run at the same
//! moment, so it is offered whole: a viewer that admits all of it gets one buffer holding
//! the run's chunks back to back (one refcount and one iovec per viewer per flush, built
//! once per shard) instead of one buffer per frame.

use std::cell::OnceCell;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::admission::queue_len;
use crate::media::frame::SharedFrame;

#[derive(Default)]
pub struct Run {
    frames: Vec<SharedFrame>,
    bytes: usize,
    started: Option<Instant>,
    media: bool,
    merged: OnceCell<Bytes>,
}

impl Run {
    pub fn push(&mut self, f: &SharedFrame, now: Instant) {
        self.started.get_or_insert(now);
        self.bytes += queue_len(f);
        self.media |= f.is_media();
        self.frames.push(f.clone());
    }

    pub fn frames(&self) -> &[SharedFrame] {
        &self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Wire bytes of the frames in the run.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether it holds audio or video (not only metadata).
    pub fn has_media(&self) -> bool {
        self.media
    }

    /// When its first frame arrived.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// The frames' shared-stream wire forms back to back, built on first use.
    pub fn merged(&self) -> &Bytes {
        self.merged.get_or_init(|| {
            let mut out = BytesMut::with_capacity(self.bytes);
            for f in &self.frames {
                out.extend_from_slice(f.wire());
            }
            out.freeze()
        })
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        // A run of a burst (a keyframe's worth of frames) should not stay allocated.
        self.frames.shrink_to(64);
        self.bytes = 0;
        self.started = None;
        self.media = false;
        self.merged = OnceCell::new();
    }
}
