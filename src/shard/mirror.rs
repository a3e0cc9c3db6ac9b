//! The viewer side of a stream: a shard's replica of the owner's cache and its local
//! viewers. Each frame from the owner is offered to every local viewer's queue at once;
//! with a latency budget, frames gather in the stream's run instead, and the coalescing
//! tick offers the run to every viewer together once its first frame used up the budget.

use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, warn};

use super::state::{ShardState, StreamKey};
use super::stats;
use crate::fanout::admission::{DropReason, Verdict};
use crate::fanout::run::Run;
use crate::fanout::viewer::Viewer;
use crate::media::cache::StreamCache;
use crate::media::frame::SharedFrame;

pub(super) struct Mirror {
    cache: StreamCache,
    /// Frames are ignored until the owner's snapshot arrives.
    synced: bool,
    live: bool,
    /// Which subscription this mirror is: snapshots of another are stale.
    epoch: u64,
    pub viewers: Slab<Viewer>,
    /// Live frames not yet offered (coalescing only).
    run: Run,
}

/// What one offer did across viewers, for the shard's counters.
#[derive(Default)]
struct Tally {
    queued: u64,
    bytes: u64,
    age: u64,
    kicked: u64,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Drop(DropReason::QueueBytes) => self.bytes += 1,
            Verdict::Drop(DropReason::QueueAge) => self.age += 1,
            Verdict::Kick => self.kicked += 1,
            Verdict::Admit => self.queued += 1,
            Verdict::Skip => {}
        }
    }
}

impl ShardState {
    /// Adds a player; it starts at once if this shard already mirrors the stream.
    pub fn add_viewer(&self, key: &StreamKey, mut viewer: Viewer) -> usize {
        let mut mirrors = self.mirrors.borrow_mut();
        let new = !mirrors.contains_key(key);
        let m = mirrors.entry(key.clone()).or_insert_with(|| Mirror {
            cache: StreamCache::default(),
            synced: false,
            live: false,
            epoch: self.next_mirror_epoch(),
            viewers: Slab::new(),
            run: Run::default(),
        });
        let epoch = m.epoch;
        if m.synced {
            // The cache holds the pending run's frames already: not twice.
            viewer.start_within_run(&m.cache, m.run.frames().len());
            if !m.live {
                viewer.queue.clear_play();
            }
        }
        let slot = m.viewers.insert(viewer);
        drop(mirrors);
        if new {
            self.tell_owner(key, Some(epoch));
        }
        slot
    }

    pub fn remove_viewer(&self, key: &StreamKey, slot: usize) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        m.viewers.try_remove(slot);
        if m.viewers.is_empty() {
            mirrors.remove(key);
            drop(mirrors);
            self.tell_owner(key, None);
        }
    }

    pub fn with_viewer(&self, key: &StreamKey, slot: usize, f: impl FnOnce(&mut Viewer)) {
        if let Some(v) = self
            .mirrors
            .borrow_mut()
            .get_mut(key)
            .and_then(|m| m.viewers.get_mut(slot))
        {
            f(v);
        }
    }

    pub(super) fn mirror_snapshot(&self, key: &str, cache: StreamCache, live: bool, epoch: u64) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        // A viewer that left and came back quickly: the answer to the old subscription
        // arrives first, with the frames after it up to the unsubscribe; starting from it
        // would leave a gap, and the right snapshot would then start viewers twice.
        if epoch != m.epoch {
            return;
        }
        self.flush_run(key, m, Instant::now());
        m.cache = cache;
        m.synced = true;
        m.live = live;
        for (_, v) in m.viewers.iter_mut() {
            v.start(&m.cache);
            if !live {
                v.queue.clear_play();
            }
        }
    }

    pub(super) fn mirror_frame(&self, key: &str, frame: &SharedFrame) {
        let mut mirrors = self.mirrors.borrow_mut();
        let Some(m) = mirrors.get_mut(key) else {
            return;
        };
        // Not live: unpublished (a shutdown tells viewers first, while frames may still
        // be queued on the lane) or not yet published.
        if !m.synced || !m.live {
            return;
        }
        m.cache.apply(frame);
        let now = Instant::now();
        if self.viewer_policy.coalesce {
            m.run.push(frame, now);
            if m.run.bytes() >= self.viewer_policy.flush_bytes {
                self.flush_run(key, m, now);
            }
            return;
        }
        let mut tally = Tally::default();
        for (_, v) in m.viewers.iter_mut() {
            tally.add(v.deliver(frame, now));
        }
        self.count(key, &tally);
    }

    /// Offers the stream's run to every viewer together, and starts a new one.
    fn flush_run(&self, key: &str, m: &mut Mirror, now: Instant) {
        if m.run.is_empty() {
            return;
        }
        let mut tally = Tally::default();
        for (_, v) in m.viewers.iter_mut() {
            v.deliver_run(&m.run, now, |verdict| tally.add(verdict));
        }
        m.run.clear();
        self.count(key, &tally);
    }

    fn count(&self, key: &str, t: &Tally) {
        stats::bump(&self.stats.relayed, t.queued);
        if t.bytes + t.age + t.kicked > 0 {
            stats::bump(&self.stats.drops_queue_bytes, t.bytes);
            stats::bump(&self.stats.drops_queue_age, t.age);
            stats::bump(&self.stats.kicked_behind, t.kicked);
            if t.kicked > 0 {
                warn!(stream = %key, viewers = t.kicked, "viewers stayed behind too long, disconnecting");
            }
        }
    }

    /// The coalescing tick: offer each stream's run once its first frame has used up
    /// `due` of the budget (the tick runs a fraction of the budget apart, so no frame
    /// waits past the budget and a stream's viewers flush together).
    pub fn flush_viewers(&self, now: Instant, due: Duration) {
        for (key, m) in self.mirrors.borrow_mut().iter_mut() {
            if m.run
                .started()
                .is_some_and(|t| now.saturating_duration_since(t) >= due)
            {
                self.flush_run(key, m, now);
            }
        }
    }

    pub(super) fn mirror_published(&self, key: &str) {
        if let Some(m) = self.mirrors.borrow_mut().get_mut(key) {
            self.flush_run(key, m, Instant::now());
            m.cache.clear();
            if m.synced && !m.live {
                for (_, v) in m.viewers.iter_mut() {
                    v.published();
                }
            }
            m.live = true;
        }
    }

    pub(super) fn mirror_unpublished(&self, key: &str) {
        if let Some(m) = self.mirrors.borrow_mut().get_mut(key) {
            // Already told (the shutdown notifies viewers before the owner's message).
            if m.live || !m.synced {
                self.flush_run(key, m, Instant::now());
                unpublish(key, m);
            }
        }
    }

    /// Shutdown: every local viewer of a live stream hears that it ended.
    pub(super) fn unpublish_all_mirrors(&self) {
        for (key, m) in self.mirrors.borrow_mut().iter_mut() {
            if m.live {
                self.flush_run(key, m, Instant::now());
                unpublish(key, m);
            }
        }
    }
}

fn unpublish(key: &str, m: &mut Mirror) {
    m.cache.clear();
    m.live = false;
    debug!(stream = %key, viewers = m.viewers.len(), "publisher left, notifying viewers");
    for (_, v) in m.viewers.iter_mut() {
        v.unpublished();
    }
}
