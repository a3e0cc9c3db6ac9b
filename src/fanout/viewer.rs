//! One player's view of a stream: what it is sent and when. Starts from the cached
//! preamble, gates video on a keyframe, and drops instead of growing past its byte budget.

use std::rc::Rc;

use bytes::Bytes;

use super::queue::OutQueue;
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame, SHARED_STREAM_ID};
use crate::protocol::session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Waiting for a keyframe (join without GOP, after a drop, after a republish).
    Skipped,
    /// Over the queue budget.
    Dropped,
}

pub struct Viewer {
    pub queue: Rc<OutQueue>,
    pub stream_id: u32,
    pub name: String,
    chunk_size: u32,
    max_queue_bytes: usize,
    waiting_key: bool,
    pub receive_audio: bool,
    pub receive_video: bool,
}

impl Viewer {
    pub fn new(
        queue: Rc<OutQueue>,
        stream_id: u32,
        name: String,
        chunk_size: u32,
        max_queue_bytes: usize,
    ) -> Self {
        Self {
            queue,
            stream_id,
            name,
            chunk_size,
            max_queue_bytes,
            waiting_key: true,
            receive_audio: true,
            receive_video: true,
        }
    }

    /// Sends the late-join preamble; live frames follow through `deliver`.
    pub fn start(&mut self, cache: &StreamCache) {
        let (preamble, has_gop) = cache.start_sequence(self.stream_id, self.chunk_size);
        self.queue.push(preamble);
        self.waiting_key = !has_gop;
    }

    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.waiting_key
    }

    pub fn deliver(&mut self, f: &SharedFrame) -> Delivery {
        let config = f.is_config() || f.kind == MediaKind::Metadata;
        match f.kind {
            MediaKind::Video if !self.receive_video && !config => return Delivery::Skipped,
            MediaKind::Audio if !self.receive_audio && !config => return Delivery::Skipped,
            MediaKind::Video if !config && self.waiting_key => {
                if !f.is_video_keyframe() {
                    return Delivery::Skipped;
                }
                self.waiting_key = false;
            }
            _ => {}
        }
        let wire = if self.stream_id == SHARED_STREAM_ID {
            f.wire.clone()
        } else {
            f.encode_as(f.timestamp, self.stream_id, self.chunk_size)
        };
        // Decoder configuration is small and vital, so it may use a second budget.
        let budget = if config {
            self.max_queue_bytes * 2
        } else {
            self.max_queue_bytes
        };
        if self.queue.queued_bytes() + wire.len() > budget {
            if f.kind == MediaKind::Video {
                self.waiting_key = true;
            }
            return Delivery::Dropped;
        }
        self.queue.push(wire);
        Delivery::Queued
    }

    /// The publisher left: tell the player, and restart from a keyframe when one returns.
    pub fn unpublished(&mut self) {
        self.queue.push(session::unpublish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.waiting_key = true;
    }

    pub fn published(&mut self) {
        self.queue.push(session::publish_notice(
            self.chunk_size,
            self.stream_id,
            &self.name,
        ));
        self.waiting_key = true;
    }

    pub fn push_raw(&self, b: Bytes) {
        self.queue.push(b);
    }
}
