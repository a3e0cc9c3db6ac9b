//! A shard's stream table: the streams this shard owns (`source`), the streams it mirrors
//! for local viewers (`mirror`), its connections, and its stats. The behaviour lives in
//! `source` (owner side), `mirror` (viewer side), `router` (cross-shard delivery) and
//! `admin` (control-plane answers); this file holds the state they share.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use super::conn::{ClientRole, Tag};
use super::hooks::SinkContext;
use super::mirror::Mirror;
use super::source::Source;
use super::stats::ShardStats;
use super::tasks::TaskRegistry;
use super::Shared;
use crate::fanout::viewer::ViewerPolicy;

pub type StreamKey = Arc<str>;

/// Which shard owns a stream: a stable hash, so every shard agrees without talking.
pub fn owner_of(key: &str, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("stream is already being published")]
    BadName,
    /// Nothing starts while the shard drains: a new publish would start sinks (pushes)
    /// that the shutdown already stopped.
    #[error("the server is shutting down")]
    ShuttingDown,
}

pub struct ShardState {
    pub id: usize,
    me: Weak<ShardState>,
    /// Streams this shard feeds from elsewhere (origin pulls), with where from (for the API).
    pub upstreams: RefCell<HashMap<StreamKey, String>>,
    /// Every connection on this shard, for the API (list, kick), the role gauges and the
    /// shutdown.
    pub clients: RefCell<HashMap<u64, Rc<Tag>>>,
    pub shared: Arc<Shared>,
    pub(super) sources: RefCell<HashMap<StreamKey, Source>>,
    pub(super) mirrors: RefCell<HashMap<StreamKey, Mirror>>,
    pub stats: ShardStats,
    pub viewer_policy: ViewerPolicy,
    pub tasks: Rc<TaskRegistry>,
    mirror_epochs: std::cell::Cell<u64>,
    /// With merged reads (`read_coalesce`): publishers wait for this shard-wide tick
    /// between reads, so their reads go out together and find data waiting.
    pub(super) read_tick: tokio::sync::Notify,
    /// Whether they do now: the shard ingests `read_coalesce_from` streams or more (set
    /// by the tick).
    pub(super) merging_reads: std::cell::Cell<bool>,
}

impl ShardState {
    /// On a busy shard (merged reads, `merging_reads`), waits for the next read tick, so
    /// the caller's next read finds several messages waiting and leaves with the others'.
    /// Otherwise returns at once. Publishers (`conn::reader`) and origin pulls share it.
    pub async fn await_read_tick_if_busy(&self) {
        if self.merging_reads.get() {
            self.read_tick.notified().await;
        }
    }

    /// `me` is this state's own `Rc` (built with `Rc::new_cyclic`), so it can hand tasks
    /// (sinks, origin pulls) a way back to it that outlives the call that started them.
    pub fn new(id: usize, shared: Arc<Shared>, me: Weak<ShardState>) -> Self {
        Self {
            id,
            me,
            upstreams: RefCell::default(),
            clients: RefCell::default(),
            sources: RefCell::default(),
            mirrors: RefCell::default(),
            stats: ShardStats::default(),
            viewer_policy: shared.cfg.viewer,
            tasks: TaskRegistry::new(),
            mirror_epochs: Default::default(),
            read_tick: tokio::sync::Notify::new(),
            merging_reads: Default::default(),
            shared,
        }
    }

    pub(super) fn next_mirror_epoch(&self) -> u64 {
        let e = self.mirror_epochs.get() + 1;
        self.mirror_epochs.set(e);
        e
    }

    pub fn owner_of(&self, key: &str) -> usize {
        owner_of(key, self.shared.links.len())
    }

    pub fn chunk_size(&self) -> u32 {
        self.shared.cfg.chunk_size
    }

    /// This state's own `Rc`, for tasks started from a `&self` method.
    pub(super) fn rc(&self) -> Option<Rc<ShardState>> {
        self.me.upgrade()
    }

    pub(super) fn sink_context(&self) -> SinkContext {
        SinkContext {
            state: self.me.clone(),
        }
    }

    /// Once a second: latency histograms and counters to the control plane, and gauges.
    pub fn export(&self) {
        self.stats.export(&*self.shared.hooks.telemetry, self.id);
        let shard = self.id.to_string();
        let viewers: usize = self
            .mirrors
            .borrow()
            .values()
            .map(|m| m.viewers.len())
            .sum();
        let streams = self
            .sources
            .borrow()
            .values()
            .filter(|s| s.publisher.is_some())
            .count();
        metrics::gauge!("rtmp_viewers", "shard" => shard.clone()).set(viewers as f64);
        metrics::gauge!("rtmp_streams", "shard" => shard.clone()).set(streams as f64);
        let mut roles = [0usize; 3];
        let mut tls = 0usize;
        for t in self.clients.borrow().values() {
            roles[t.role.get() as usize] += 1;
            tls += usize::from(t.tls.borrow().is_some());
        }
        metrics::gauge!("rtmp_tls_connections", "shard" => shard.clone()).set(tls as f64);
        for (role, n) in ClientRole::ALL.iter().zip(roles) {
            metrics::gauge!("rtmp_connections", "shard" => shard.clone(), "role" => role.label())
                .set(n as f64);
        }
        let now = Instant::now();
        for src in self.sources.borrow_mut().values_mut() {
            src.update_bitrate(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..8 {
            let o = owner_of("live/test", n);
            assert!(o < n);
            assert_eq!(o, owner_of("live/test", n));
        }
    }
}
