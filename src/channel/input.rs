//! How a source's frames reach its channel: a sink on the source's owner shard that sends
//! them (refcounts, no copies) to the channel's task on the channel's owner shard. Frames
//! are bounded per channel; publish and unpublish always get through, in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::slate::Slate;
use super::switcher::Pin;
use crate::media::frame::{MediaKind, SharedFrame};
use crate::shard::hooks::StreamSink;

/// Frames that may wait for one channel's task; past it the source's frames are dropped
/// until its next keyframe.
pub const MAX_WAITING_FRAMES: usize = 4096;

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

    /// False when too many frames wait already (the frame is not sent).
    fn send_frame(&self, source: usize, f: &SharedFrame) -> bool {
        if self.frames.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING_FRAMES {
            self.frames.fetch_sub(1, Ordering::Relaxed);
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
        if let Some(Msg::Frame(..)) = m {
            self.frames.fetch_sub(1, Ordering::Relaxed);
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
        if self.resync && !f.is_video_keyframe() && !f.is_config() {
            return;
        }
        self.resync = false;
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
