//! A push destination's sink on the stream's owner shard: admits each frame into a bounded
//! queue (the shared admission policy) and keeps the config to replay; the session task
//! (`session`) drains it to the destination. Also what the API and the log show of it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tracing::info;

use super::config::{Destination, PushPolicy};
use super::session;
use super::LATENCY_FAMILY;
use crate::fanout::admission::{queue_len, Admission, AdmissionPolicy, Verdict};
use crate::media::cache::StreamCache;
use crate::media::frame::SharedFrame;
use crate::shard::hooks::{SinkContext, StreamSink, Telemetry};
use crate::shard::query::SinkInfo;
use crate::shard::state::StreamKey;
use crate::util::histogram::latency_histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    Connecting,
    Live,
    BackingOff,
    Finished,
}

impl PushState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::BackingOff => "backing_off",
            Self::Finished => "finished",
        }
    }
}

/// What the sink (owner shard, synchronous) and the session task share.
pub(super) struct Link {
    pub queue: RefCell<VecDeque<SharedFrame>>,
    pub queued_bytes: Cell<usize>,
    pub notify: Notify,
    /// Metadata and decoder configuration to replay after every (re)connect.
    pub config: RefCell<StreamCache>,
    publishing: Cell<bool>,
    pub unpublished_at: Cell<Option<Instant>>,
    /// Video skipped until a keyframe (after a drop or a reconnect), queue budget.
    pub admission: RefCell<Admission>,
    pub state: Cell<PushState>,
    pub last_error: RefCell<Option<String>>,
    pub bytes: Cell<u64>,
    pub frames: Cell<u64>,
    drops: Cell<u64>,
    pub reconnects: Cell<u64>,
    /// Ingest -> handed to the destination socket, microseconds, since the last export
    /// to the control plane; `log_window` since the last stats line.
    pub latency: RefCell<Histogram<u64>>,
    log_window: RefCell<Histogram<u64>>,
    /// The destination was removed or disabled, or the server shuts down: finish now, no
    /// grace.
    stopped: Cell<bool>,
    /// Registry id of the destination (metric label, API).
    dest_id: String,
    pub m_bytes: metrics::Counter,
    m_drops: metrics::Counter,
    pub m_reconnects: metrics::Counter,
    telemetry: Option<Arc<dyn Telemetry>>,
}

pub struct PushSink {
    id: String,
    link: Rc<Link>,
}

impl PushSink {
    pub(super) fn start(
        ctx: &SinkContext,
        id: String,
        dest_id: String,
        dest: Destination,
        dest_key: String,
        stream: StreamKey,
        policy: PushPolicy,
    ) -> Self {
        let admission = AdmissionPolicy {
            max_queue_bytes: policy.queue_bytes,
            // A destination is never closed for lagging: it only drops to keyframes (a
            // dead one fails its writes and reconnects).
            max_queue_age: Duration::MAX,
            max_behind: Duration::MAX,
            audio_headroom: 2,
        };
        let link = Rc::new(Link {
            queue: RefCell::default(),
            queued_bytes: Cell::new(0),
            notify: Notify::new(),
            config: RefCell::default(),
            publishing: Cell::new(true),
            unpublished_at: Cell::new(None),
            admission: RefCell::new(Admission::new(admission)),
            state: Cell::new(PushState::Connecting),
            last_error: RefCell::new(None),
            bytes: Cell::new(0),
            frames: Cell::new(0),
            drops: Cell::new(0),
            reconnects: Cell::new(0),
            latency: RefCell::new(latency_histogram()),
            log_window: RefCell::new(latency_histogram()),
            stopped: Cell::new(false),
            m_bytes: metrics::counter!("rtmp_push_bytes_total", "destination" => dest_id.clone()),
            m_drops: metrics::counter!("rtmp_push_dropped_frames_total", "destination" => dest_id.clone()),
            m_reconnects: metrics::counter!("rtmp_push_reconnects_total", "destination" => dest_id.clone()),
            dest_id,
            telemetry: ctx.telemetry(),
        });
        let finished = ctx.on_finished(&stream);
        if let Some(tasks) = ctx.tasks() {
            tasks.spawn(session::run(
                tasks.clone(),
                finished,
                link.clone(),
                dest,
                dest_key,
                stream,
                policy,
            ));
        }
        Self { id, link }
    }
}

impl StreamSink for PushSink {
    fn id(&self) -> &str {
        &self.id
    }

    fn on_publish(&mut self) {
        self.link.publishing.set(true);
        self.link.unpublished_at.set(None);
        self.link.notify.notify_one();
    }

    fn on_frame(&mut self, f: &SharedFrame) {
        let link = &self.link;
        link.config.borrow_mut().apply(f);
        let queued = link.queued_bytes.get();
        let verdict = link
            .admission
            .borrow_mut()
            .admit(f, queued, Duration::ZERO, Instant::now());
        match verdict {
            Verdict::Admit => {
                link.queued_bytes.set(queued + queue_len(f));
                link.queue.borrow_mut().push_back(f.clone());
                link.notify.notify_one();
            }
            Verdict::Drop(_) | Verdict::Kick => link.drop_frame(),
            Verdict::Skip => {}
        }
    }

    fn on_unpublish(&mut self) -> bool {
        self.link.publishing.set(false);
        self.link.unpublished_at.set(Some(Instant::now()));
        self.link.notify.notify_one();
        self.link.state.get() != PushState::Finished
    }

    fn is_done(&self) -> bool {
        self.link.state.get() == PushState::Finished
    }

    fn stop(&mut self) {
        self.link.stopped.set(true);
        self.link.notify.notify_one();
    }

    fn info(&self) -> Option<SinkInfo> {
        let l = &self.link;
        Some(SinkInfo {
            destination: l.dest_id.clone(),
            state: l.state.get().label(),
            bytes: l.bytes.get(),
            reconnects: l.reconnects.get(),
            dropped_frames: l.drops.get(),
            last_error: l.last_error.borrow().clone(),
        })
    }
}

impl Link {
    fn drop_frame(&self) {
        self.drops.set(self.drops.get() + 1);
        self.m_drops.increment(1);
    }

    /// Hands the latency recorded since the last call to the control plane (its
    /// Prometheus histogram) and to the log window.
    pub fn export_latency(&self) {
        let mut h = self.latency.borrow_mut();
        if h.is_empty() {
            return;
        }
        if let Some(t) = &self.telemetry {
            t.merge_latency(LATENCY_FAMILY, &self.dest_id, &h);
        }
        let _ = self.log_window.borrow_mut().add(&*h);
        h.reset();
    }

    pub fn grace_over(&self, grace: Duration) -> bool {
        self.stopped.get()
            || !self.publishing.get()
                && self
                    .unpublished_at
                    .get()
                    .is_some_and(|t| t.elapsed() >= grace)
    }

    pub fn set_state(&self, s: PushState, dest: &str, stream: &str) {
        if self.state.get() != s {
            info!(id = %self.dest_id, stream, dest, state = s.label(), "push destination state");
            self.state.set(s);
        }
    }

    pub fn log_stats(&self, dest: &str, stream: &str) {
        let mut h = self.log_window.borrow_mut();
        let (p50, p99) = if h.is_empty() {
            (0, 0)
        } else {
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
        };
        info!(
            id = %self.dest_id,
            stream,
            dest,
            state = self.state.get().label(),
            bytes = self.bytes.get(),
            frames = self.frames.get(),
            drops = self.drops.get(),
            reconnects = self.reconnects.get(),
            latency_p50_us = p50,
            latency_p99_us = p99,
            last_error = self.last_error.borrow().as_deref().unwrap_or(""),
            "push stats"
        );
        h.reset();
    }
}
