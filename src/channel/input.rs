//! How a source's frames reach its channel: a sink on the source's owner shard that sends
//! them (refcounts, no copies) to the channel's task on the channel's owner shard. Frames
//! waiting are bounded per channel by their bytes; publish and unpublish always get through,
//! in order (one per source connection's publish or end: bounded by the connections).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::slate::Slate;
use super::switcher::Pin;
use crate::media::frame::{MediaKind, SharedFrame};
use crate::shard::hooks::StreamSink;

/// Payload bytes that may wait for one channel's task; past it the source's frames are
/// dropped until its next keyframe. The task drains its inbox at every wake; this only
/// fills when its shard is overloaded.
pub const MAX_WAITING_BYTES: usize = 64 << 20;

pub enum Msg {
    Published(usize),
    Frame(usize, SharedFrame),
    Unpublished(usize),
    Force(Option<Pin>),
    Slate(Arc<Slate>),
}

/// The sending side of a channel task's inbox.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::UnboundedSender<Msg>,
    /// Payload bytes sent and not yet received.
    frames: Arc<AtomicUsize>,
}

/// The task's side.
pub struct Outlet {
    rx: mpsc::UnboundedReceiver<Msg>,
    frames: Arc<AtomicUsize>,
}

pub fn inbox() -> (Inbox, Outlet) {
    let (tx, rx) = mpsc::unbounded_channel();
    let frames = Arc::new(AtomicUsize::new(0));
    (
        Inbox {
            tx,
            frames: frames.clone(),
        },
        Outlet { rx, frames },
    )
}

impl Inbox {
    /// False when the task is gone (shutdown).
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// False when too many bytes wait already (the frame is not sent).
    fn send_frame(&self, source: usize, f: &SharedFrame) -> bool {
        let n = f.payload.len();
        if self.frames.fetch_add(n, Ordering::Relaxed) >= MAX_WAITING_BYTES {
            self.frames.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        let _ = self.tx.send(Msg::Frame(source, f.clone()));
        true
    }
}

impl Outlet {
    pub async fn recv(&mut self) -> Option<Msg> {
        let m = self.rx.recv().await;
        self.note(&m);
        m
    }

    pub fn try_recv(&mut self) -> Option<Msg> {
        let m = self.rx.try_recv().ok();
        self.note(&m);
        m
    }

    fn note(&self, m: &Option<Msg>) {
        if let Some(Msg::Frame(_, f)) = m {
            self.frames.fetch_sub(f.payload.len(), Ordering::Relaxed);
        }
    }
}

/// Attached to a source stream for one channel.
pub struct SourceSink {
    id: String,
    channel: Arc<str>,
    index: usize,
    inbox: Inbox,
    /// Frames were dropped: skip to the next keyframe so the channel never gets a broken GOP.
    resync: bool,
}

impl SourceSink {
    pub fn new(channel: Arc<str>, index: usize, inbox: Inbox) -> Self {
        Self {
            id: sink_id(&channel),
            channel,
            index,
            inbox,
            resync: false,
        }
    }
}

pub fn sink_id(channel: &str) -> String {
    format!("channel:{channel}")
}

impl StreamSink for SourceSink {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_publish(&mut self) {
        self.resync = false;
        self.inbox.send(Msg::Published(self.index));
    }

    fn on_frame(&mut self, f: &SharedFrame) {
        // Headers always go (the source's format must stay known); coded video waits for
        // a keyframe after a drop.
        if self.resync && f.kind == MediaKind::Video && !f.is_config() {
            if !f.is_video_keyframe() {
                return;
            }
            self.resync = false;
        }
        if !self.inbox.send_frame(self.index, f) {
            // A lost audio frame is a click; a lost video frame breaks the GOP.
            self.resync = f.kind == MediaKind::Video;
            metrics::counter!("rtmp_channel_input_drops_total", "channel" => self.channel.to_string())
                .increment(1);
        }
    }

    fn on_unpublish(&mut self) -> bool {
        self.inbox.send(Msg::Unpublished(self.index));
        false
    }
}
