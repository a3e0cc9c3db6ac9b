//! One media message of a stream, chunk-encoded once into refcounted bytes that every
//! viewer's queue shares: the first time a player needs it, so a stream nobody plays (an
//! origin's ingest, a recording) never pays for a second copy of its payload.

use std::sync::{Arc, OnceLock};
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
    /// The outgoing chunk size `wire` is built for.
    chunk_size: u32,
    /// The whole message as chunks (fmt0 + fmt3) at `chunk_size`, on stream 1.
    wire: OnceLock<Bytes>,
    /// When the owner shard received it, for latency histograms.
    pub ingest: Instant,
}

pub type SharedFrame = Arc<Frame>;

impl Frame {
    pub fn new(kind: MediaKind, timestamp: u32, payload: Bytes, chunk_size: u32) -> Self {
        Self::received(kind, timestamp, payload, chunk_size, Instant::now())
    }

    /// A frame that arrived at `at`: the messages of one read share its clock reading.
    pub fn received(
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        chunk_size: u32,
        at: Instant,
    ) -> Self {
        let info = match kind {
            MediaKind::Audio => tag::inspect_audio(&payload),
            MediaKind::Video => tag::inspect_video(&payload),
            _ => TagInfo::default(),
        };
        Self {
            kind,
            timestamp,
            info,
            payload,
            chunk_size,
            wire: OnceLock::new(),
            ingest: at,
        }
    }

    /// The message as chunks on the shared stream id, built on first use and then shared.
    pub fn wire(&self) -> &Bytes {
        self.wire.get_or_init(|| {
            encode(
                self.kind,
                self.timestamp,
                &self.payload,
                self.chunk_size,
                SHARED_STREAM_ID,
            )
        })
    }

    /// `wire().len()`, without building it.
    pub fn wire_len(&self) -> usize {
        crate::protocol::chunk::encoded_len(
            self.kind.csid(),
            self.timestamp,
            self.payload.len(),
            self.chunk_size,
        )
    }

    /// The frame encoded for a different timestamp or stream id (late-join preamble,
    /// players on an unusual stream id).
    pub fn encode_as(&self, timestamp: u32, stream_id: u32, chunk_size: u32) -> Bytes {
        encode(self.kind, timestamp, &self.payload, chunk_size, stream_id)
    }

    /// Audio or video (not metadata or other data).
    pub fn is_media(&self) -> bool {
        matches!(self.kind, MediaKind::Audio | MediaKind::Video)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_built_on_first_use_and_its_length_known_before() {
        for (len, ts, chunk) in [
            (0, 0, 128),
            (100, 40, 128),
            (5000, 0x00FF_FFFF, 4096),
            (9000, 0x0100_0000, 128),
        ] {
            let f = Frame::new(MediaKind::Video, ts, Bytes::from(vec![0x17; len]), chunk);
            assert!(f.wire.get().is_none(), "built before anyone asked");
            let n = f.wire_len();
            assert_eq!(f.wire().len(), n, "len {len} ts {ts} chunk {chunk}");
            let first = f.wire().as_ptr();
            assert_eq!(f.wire().as_ptr(), first, "built once");
        }
    }
}
