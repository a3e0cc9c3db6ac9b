//! What the shard needs from the features above it, stated here as traits so the data
//! plane imports none of them: `main` builds the implementations (auth, recorder, push,
//! origin pull, control plane) and hands them over in [`Hooks`].
//!
//! Every method is called on a shard thread: implementations queue or spawn and return,
//! they never block the event loop.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::query::SinkInfo;
use super::state::{ShardState, StreamKey};
use super::tasks::TaskRegistry;
use crate::media::cache::StreamCache;
use crate::media::frame::SharedFrame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Publish,
    Play,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

/// What a client asked for, as the connection code saw it.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub action: Action,
    pub app: String,
    /// Stream name without its query.
    pub name: String,
    /// Query of the stream name (`cam1?token=x` -> `token=x`).
    pub query: Option<String>,
    /// Query from connect's app or tcUrl (`rtmp://h/live?token=x` -> `token=x`).
    pub connect_query: Option<String>,
    pub tc_url: Option<String>,
    pub peer: SocketAddr,
    pub conn_id: u64,
}

impl AuthRequest {
    /// `app/name`: what token patterns match and signatures cover.
    pub fn stream(&self) -> String {
        format!("{}/{}", self.app, self.name)
    }
}

/// A refused publish or play, with the reason as a metric label (`bad_token`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied(pub &'static str);

pub type AuthFuture = Pin<Box<dyn Future<Output = Result<(), Denied>>>>;

/// Publish and play authorization.
pub trait Authorize: Send + Sync {
    /// Nothing is configured for `action`: the connection skips authorization (no await).
    fn is_open(&self, action: Action) -> bool;
    fn check(&self, req: AuthRequest) -> AuthFuture;
}

/// A consumer of a stream on its owner shard other than players: a recording, a push
/// destination. Called synchronously on the owner shard, so implementations only queue
/// (bounded) and return; their I/O runs elsewhere.
pub trait StreamSink {
    /// Names the sink, so a factory never attaches the same one to a stream twice.
    fn id(&self) -> &str;
    /// A publisher (re)started the stream.
    fn on_publish(&mut self);
    fn on_frame(&mut self, frame: &SharedFrame);
    /// After `on_frame` of a live frame (that frame in the cache), and when the sink's
    /// [`JoinBell`] rang and the stream has media: the stream's late-join cache. A sink that
    /// starts late joiners of its own (HTTP-FLV) starts them from it here rather than
    /// keeping a second cache.
    fn serve_joiners(&mut self, _cache: &StreamCache) {}
    /// The publisher left. Return true to stay attached (e.g. a push waiting out its grace
    /// period for a republish), false to be dropped.
    fn on_unpublish(&mut self) -> bool;
    /// It serves viewers of its own (HTTP-FLV, HLS) now: an edge keeps pulling the stream.
    fn has_viewers(&self) -> bool {
        false
    }
    /// A sink that finished on its own (grace period over) is dropped at the next event.
    fn is_done(&self) -> bool {
        false
    }
    /// Its configuration went away (a push destination removed or disabled at runtime), or
    /// the server is shutting down: wind down now and finish.
    fn stop(&mut self) {}
    /// What the HTTP API shows about it; None for sinks it does not list.
    fn info(&self) -> Option<SinkInfo> {
        None
    }
}

/// Makes the sinks a stream gets when it starts publishing (called on the owner shard).
pub trait SinkFactory: Send + Sync {
    fn sinks_for(
        &self,
        ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>>;
    /// Whether a running sink this factory made should stay (its destination still exists
    /// and is enabled); None when the sink is not this factory's.
    fn keeps(&self, _key: &StreamKey, _sink_id: &str) -> Option<bool> {
        None
    }
}

/// What a sink may use of its owner shard: its task registry, its telemetry, and a way to
/// say it finished so the shard drops it.
pub struct SinkContext {
    pub(super) state: Weak<ShardState>,
}

impl SinkContext {
    /// Where a sink runs its I/O: the shard's task registry (drained at shutdown).
    pub fn tasks(&self) -> Option<Rc<TaskRegistry>> {
        self.state.upgrade().map(|s| s.tasks.clone())
    }

    /// Which shard this is (a label for the sink's metrics).
    pub fn shard_id(&self) -> Option<usize> {
        self.state.upgrade().map(|s| s.id)
    }

    pub fn telemetry(&self) -> Option<Arc<dyn Telemetry>> {
        self.state
            .upgrade()
            .map(|s| s.shared.hooks.telemetry.clone())
    }

    /// A bell another thread rings to have this shard start `key`'s late joiners now (see
    /// [`JoinBell`]). Its waiting task ends when the bell is closed or the shard stops.
    pub fn join_bell(&self, key: &StreamKey) -> Arc<JoinBell> {
        let bell = Arc::new(JoinBell::default());
        let Some(state) = self.state.upgrade() else {
            return bell;
        };
        let (tasks, me, key, rung) = (
            state.tasks.clone(),
            self.state.clone(),
            key.clone(),
            bell.clone(),
        );
        state.tasks.spawn_service(async move {
            loop {
                tokio::select! {
                    _ = tasks.stopped() => break,
                    _ = rung.notify.notified() => {}
                }
                if rung.closed.load(Ordering::Acquire) {
                    break;
                }
                let Some(state) = me.upgrade() else { break };
                state.serve_joiners(&key);
            }
        });
        bell
    }

    /// A handle the sink's task calls when it is done, so the shard reaps it.
    pub fn on_finished(&self, key: &StreamKey) -> SinkFinished {
        SinkFinished {
            state: self.state.clone(),
            key: key.clone(),
        }
    }
}

pub struct SinkFinished {
    state: Weak<ShardState>,
    key: StreamKey,
}

impl SinkFinished {
    pub fn done(&self) {
        if let Some(s) = self.state.upgrade() {
            s.reap_sinks(&self.key);
        }
    }
}

/// Rung from any thread when a sink has a new late joiner: the owner shard then runs the
/// stream's `serve_joiners` without waiting for its next frame, which on a paused stream
/// or a 1 fps camera may be seconds away. Closed by the sink when it goes.
#[derive(Default)]
pub struct JoinBell {
    notify: tokio::sync::Notify,
    closed: AtomicBool,
}

impl JoinBell {
    pub fn ring(&self) {
        self.notify.notify_one();
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Feeds a stream nobody publishes on this server from elsewhere (an edge's origin).
pub trait UpstreamFactory: Send + Sync {
    /// A player asked for `key` and no publisher has it: start feeding it on this (its
    /// owner) shard, unless that is already under way.
    fn open(&self, shard: &Rc<ShardState>, key: &StreamKey);
}

/// Something a feature runs on a shard for the server's whole life (an always-on
/// channel publishing into that shard's stream table). Started once per shard when the
/// shard is up; what it spawns goes in the shard's task registry and ends with it.
pub trait ShardService: Send + Sync {
    fn start(&self, shard: &Rc<ShardState>);
}

/// Where a feature's files go besides memory (a directory, a bucket): objects named under
/// the target, written in order per `order` key (a stream). Calls only queue (bounded,
/// never waiting); the writing happens on the storage's own thread.
pub trait ObjectStore: Send + Sync {
    fn put(
        &self,
        order: &str,
        name: String,
        body: Vec<bytes::Bytes>,
        content_type: &'static str,
        cache_control: &'static str,
    );
    /// Uploads the file at `path` as `name`, reading it as it is sent; once stored, the
    /// files in `then_remove` (a journal marker, the local copy) are removed.
    fn put_file(
        &self,
        order: &str,
        name: String,
        path: std::path::PathBuf,
        content_type: &'static str,
        then_remove: Vec<std::path::PathBuf>,
    );
    fn delete(&self, order: &str, name: String);
}

/// Where the shards report what operators graph (the control plane).
pub trait Telemetry: Send + Sync {
    /// A shard's listener accepts connections (readiness).
    fn shard_ready(&self, shard: usize);
    /// Adds latencies (microseconds) recorded since the last call to a histogram family
    /// (see [`latency`]) under one label value (a shard, a push destination).
    fn merge_latency(&self, family: &'static str, label: &str, delta: &Histogram<u64>);
    /// Total CPU seconds a shard thread has used.
    fn shard_cpu(&self, shard: usize, seconds: f64);
}

/// The shard's latency histogram families.
pub mod latency {
    pub const CROSS_SHARD: &str = "rtmp_cross_shard_latency_seconds";
    pub const FANOUT: &str = "rtmp_fanout_latency_seconds";
    pub const FIRST_FRAME: &str = "rtmp_time_to_first_frame_seconds";
}

/// Everything the shards get from the features, wired by `main`.
pub struct Hooks {
    pub auth: Arc<dyn Authorize>,
    /// What a newly published stream gets besides players (recording, pushes).
    pub sinks: Vec<Arc<dyn SinkFactory>>,
    /// Origin pulls (edge mode); None when no origin is configured.
    pub upstream: Option<Arc<dyn UpstreamFactory>>,
    /// Started on every shard once it runs (always-on channels).
    pub services: Vec<Arc<dyn ShardService>>,
    pub telemetry: Arc<dyn Telemetry>,
}
