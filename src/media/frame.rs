//! One media message of a stream, chunk-encoded once into refcounted bytes that every
//! viewer's queue shares.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::tag::{self, TagInfo};
use crate::protocol::message as msg;

/// The message stream id every viewer plays on: we hand out 1 to a player's first
/// createStream, so one encoding serves all of them.
pub const SHARED_STREAM_ID: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// onMetaData (stripped of @setDataFrame)
    Metadata,
    /// other data messages (cue points, text)
    Data,
}

impl MediaKind {
    pub fn type_id(self) -> u8 {
        match self {
            Self::Audio => msg::AUDIO,
            Self::Video => msg::VIDEO,
            Self::Metadata | Self::Data => msg::DATA_AMF0,
        }
    }

    fn csid(self) -> u32 {
        match self {
            Self::Audio => msg::CSID_AUDIO,
            Self::Video => msg::CSID_VIDEO,
            Self::Metadata | Self::Data => msg::CSID_STATUS,
        }
    }
}

#[derive(Debug)]
pub struct Frame {
    pub kind: MediaKind,
    pub timestamp: u32,
    pub info: TagInfo,
    pub payload: Bytes,
    /// The whole message as chunks (fmt0 + fmt3) at the outgoing chunk size, on stream 1.
    pub wire: Bytes,
    /// When the owner shard received it, for latency histograms.
    pub ingest: Instant,
}

pub type SharedFrame = Arc<Frame>;

impl Frame {
    pub fn new(kind: MediaKind, timestamp: u32, payload: Bytes, chunk_size: u32) -> Self {
        let info = match kind {
            MediaKind::Audio => tag::inspect_audio(&payload),
            MediaKind::Video => tag::inspect_video(&payload),
            _ => TagInfo::default(),
        };
        let wire = encode(kind, timestamp, &payload, chunk_size, SHARED_STREAM_ID);
        Self {
            kind,
            timestamp,
            info,
            payload,
            wire,
            ingest: Instant::now(),
        }
    }

    /// The frame encoded for a different timestamp or stream id (late-join preamble,
    /// players on an unusual stream id).
    pub fn encode_as(&self, timestamp: u32, stream_id: u32, chunk_size: u32) -> Bytes {
        encode(self.kind, timestamp, &self.payload, chunk_size, stream_id)
    }

    pub fn is_video_keyframe(&self) -> bool {
        self.kind == MediaKind::Video && self.info.keyframe
    }

    /// Headers a decoder needs before any frame: cached and replayed to late joiners.
    pub fn is_config(&self) -> bool {
        self.info.sequence_header || self.info.ext_metadata
    }
}

fn encode(
    kind: MediaKind,
    timestamp: u32,
    payload: &[u8],
    chunk_size: u32,
    stream_id: u32,
) -> Bytes {
    let mut out = BytesMut::new();
    msg::write_message(
        &mut out,
        chunk_size,
        kind.csid(),
        timestamp,
        kind.type_id(),
        stream_id,
        payload,
    );
    out.freeze()
}
