//! Everything that crosses shards, in one place. Each shard has two inbound lanes:
//!
//! * the media lane: one stream's history from its owner shard to a mirror shard, in order
//!   (snapshot, frames, published/unpublished). Only frames may be dropped, when a shard
//!   already has [`MEDIA_LANE_FRAMES`] frames waiting (counted by the sender); the stream
//!   sync messages between them are never dropped, so a mirror never sees a stream's
//!   events out of order.
//! * the control lane: subscriptions, publisher hand-offs, control-plane queries and
//!   shutdown; never dropped, never reordered, never blocks the sender.
//!
//! One dispatcher per shard drains both, control first.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::query::Query;
use super::state::StreamKey;
use crate::media::cache::StreamCache;
use crate::media::frame::SharedFrame;
use crate::protocol::session::ServerSession;

/// Frames that may wait in one shard's media lane; past it, frames to it are dropped.
pub const MEDIA_LANE_FRAMES: usize = 16 * 1024;

/// Owner shard to mirror shard: one stream's history.
pub enum MediaMsg {
    /// The cache a new mirror starts from; `epoch` is the subscription's.
    Snapshot {
        key: StreamKey,
        cache: StreamCache,
        live: bool,
        epoch: u64,
    },
    Frame {
        key: StreamKey,
        frame: SharedFrame,
    },
    Published {
        key: StreamKey,
    },
    Unpublished {
        key: StreamKey,
    },
}

pub enum ControlMsg {
    /// To the owner: `shard` wants this stream's frames. `epoch` names this mirror, so a
    /// snapshot answering an earlier subscription (the mirror was removed and made again
    /// meanwhile) is recognised as stale.
    Subscribe {
        key: StreamKey,
        shard: usize,
        epoch: u64,
    },
    Unsubscribe {
        key: StreamKey,
        shard: usize,
    },
    /// A publisher moving to the shard that owns its stream.
    Adopt(Box<Handoff>),
    /// From the control plane (HTTP API).
    Query(Query),
    /// Drain and stop (SIGTERM).
    Shutdown,
}

/// A publisher moving to the shard that owns its stream, with everything read so far.
pub struct Handoff {
    pub fd: OwnedFd,
    /// An RTMPS connection's TLS state: its keys and sequence numbers go with the socket.
    pub tls: Option<Box<crate::tls::TlsSession>>,
    /// Its place under the connection limits, kept across the move.
    pub slot: super::conn::ConnSlot,
    pub session: Box<ServerSession>,
    pub conn_id: u64,
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub since: std::time::Instant,
    pub agent: Option<Box<str>>,
    pub stream_id: u32,
    pub name: String,
    pub query: Option<String>,
}

/// The media lane was full: the frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneFull;

/// The sending side of one shard's lanes. Cheap to clone; any thread may send.
#[derive(Clone)]
pub struct ShardLink {
    media: mpsc::UnboundedSender<MediaMsg>,
    control: mpsc::UnboundedSender<ControlMsg>,
    frames_waiting: Arc<AtomicUsize>,
}

impl ShardLink {
    /// Sends one stream message; a frame is dropped (`LaneFull`) when the receiver is too
    /// far behind, anything else always goes.
    pub fn send_media(&self, msg: MediaMsg) -> Result<(), LaneFull> {
        if let MediaMsg::Frame { .. } = msg {
            if self.frames_waiting.fetch_add(1, Ordering::Relaxed) >= MEDIA_LANE_FRAMES {
                self.frames_waiting.fetch_sub(1, Ordering::Relaxed);
                return Err(LaneFull);
            }
        }
        // A closed lane means the shard is gone (shutdown): nothing to deliver to.
        let _ = self.media.send(msg);
        Ok(())
    }

    /// False when the shard is gone (its thread ended).
    pub fn send_control(&self, msg: ControlMsg) -> bool {
        self.control.send(msg).is_ok()
    }
}

/// The receiving side of one shard's lanes.
pub struct Lanes {
    media: mpsc::UnboundedReceiver<MediaMsg>,
    control: mpsc::UnboundedReceiver<ControlMsg>,
    frames_waiting: Arc<AtomicUsize>,
}

/// One message off a shard's lanes.
pub enum Inbound {
    Media(MediaMsg),
    Control(ControlMsg),
}

impl Lanes {
    /// The next message, control first; None once every sender is gone.
    pub async fn recv(&mut self) -> Option<Inbound> {
        let msg = tokio::select! {
            biased;
            Some(c) = self.control.recv() => Inbound::Control(c),
            Some(m) = self.media.recv() => Inbound::Media(m),
            else => return None,
        };
        if let Inbound::Media(MediaMsg::Frame { .. }) = msg {
            self.frames_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        Some(msg)
    }
}

/// Lanes for `n` shards: the senders every shard (and the control plane) shares, and each
/// shard's receiving end.
pub fn mesh(n: usize) -> (Vec<ShardLink>, Vec<Lanes>) {
    (0..n)
        .map(|_| {
            let (mtx, mrx) = mpsc::unbounded_channel();
            let (ctx, crx) = mpsc::unbounded_channel();
            let waiting = Arc::new(AtomicUsize::new(0));
            (
                ShardLink {
                    media: mtx,
                    control: ctx,
                    frames_waiting: waiting.clone(),
                },
                Lanes {
                    media: mrx,
                    control: crx,
                    frames_waiting: waiting,
                },
            )
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{Frame, MediaKind};

    fn frame() -> MediaMsg {
        MediaMsg::Frame {
            key: "live/x".into(),
            frame: Arc::new(Frame::new(
                MediaKind::Audio,
                0,
                bytes::Bytes::from_static(&[0xAF, 1, 0]),
                4096,
            )),
        }
    }

    #[test]
    fn frames_drop_when_full_sync_and_control_never_do() {
        let (links, mut lanes) = mesh(1);
        let link = &links[0];
        for _ in 0..MEDIA_LANE_FRAMES {
            link.send_media(frame()).unwrap();
        }
        assert_eq!(link.send_media(frame()), Err(LaneFull));
        link.send_media(MediaMsg::Unpublished {
            key: "live/x".into(),
        })
        .unwrap();
        link.send_control(ControlMsg::Shutdown);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // Control first, then the media lane in order: every frame, then the sync.
            assert!(matches!(
                lanes[0].recv().await,
                Some(Inbound::Control(ControlMsg::Shutdown))
            ));
            for _ in 0..MEDIA_LANE_FRAMES {
                assert!(matches!(
                    lanes[0].recv().await,
                    Some(Inbound::Media(MediaMsg::Frame { .. }))
                ));
            }
            assert!(matches!(
                lanes[0].recv().await,
                Some(Inbound::Media(MediaMsg::Unpublished { .. }))
            ));
        });
        // Drained: room again.
        link.send_media(frame()).unwrap();
        drop(links);
    }
}
