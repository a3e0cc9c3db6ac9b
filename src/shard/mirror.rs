//! The viewer side of a stream: a shard's replica of the owner's cache and its local
//! viewers. Each frame from the owner is offered to every local viewer's queue; the
//! coalescing tick wakes viewers whose oldest frame used up its budget.

use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, warn};

use super::state::{ShardState, StreamKey};
use super::stats;
use crate::fanout::admission::{DropReason, Verdict};
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
        });
        let epoch = m.epoch;
        if m.synced {
            viewer.start(&m.cache);
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
        let (mut bytes, mut age, mut kicked, mut queued) = (0, 0, 0, 0);
        for (_, v) in m.viewers.iter_mut() {
            match v.deliver(frame, now) {
                Verdict::Drop(DropReason::QueueBytes) => bytes += 1,
                Verdict::Drop(DropReason::QueueAge) => age += 1,
                Verdict::Kick => kicked += 1,
                Verdict::Admit => queued += 1,
                Verdict::Skip => {}
            }
        }
        stats::bump(&self.stats.relayed, queued);
        if bytes + age + kicked > 0 {
            stats::bump(&self.stats.drops_queue_bytes, bytes);
            stats::bump(&self.stats.drops_queue_age, age);
            stats::bump(&self.stats.kicked_behind, kicked);
            if kicked > 0 {
                warn!(stream = %key, viewers = kicked, "viewers stayed behind too long, disconnecting");
            }
        }
    }

    /// The coalescing tick: wake every viewer whose oldest waiting frame has used up
    /// `due` of its budget (the tick runs a fraction of the budget apart, so no frame
    /// waits past the budget and viewers fed by one stream still flush together).
    pub fn flush_viewers(&self, now: Instant, due: Duration) {
        for m in self.mirrors.borrow().values() {
            for (_, v) in m.viewers.iter() {
                if v.queue.age(now) >= due {
                    v.queue.flush();
                }
            }
        }
    }

    pub(super) fn mirror_published(&self, key: &str) {
        if let Some(m) = self.mirrors.borrow_mut().get_mut(key) {
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
                unpublish(key, m);
            }
        }
    }

    /// Shutdown: every local viewer of a live stream hears that it ended.
    pub(super) fn unpublish_all_mirrors(&self) {
        for (key, m) in self.mirrors.borrow_mut().iter_mut() {
            if m.live {
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
