//! A connection's outgoing byte queue: refcounted chunks waiting for its writer task.
//! Single-threaded (lives on one shard). Every push wakes the writer: coalescing happens
//! before the queue, where a shard gathers a stream's frames into one run per tick.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

/// Most iovecs the kernel takes in one writev (IOV_MAX).
pub const MAX_IOVECS: usize = 1024;

#[derive(Default)]
pub struct OutQueue {
    items: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    closed: Cell<bool>,
    killed: Cell<bool>,
    notify: Notify,
    kill_notify: Notify,
    /// When the oldest item still queued was pushed (how far behind the reader is).
    oldest_push: Cell<Option<Instant>>,
    /// Ingest time of the oldest live frame queued since the last batch (fan-out latency).
    oldest_ingest: Cell<Option<Instant>>,
    /// When a player asked to play, until its first audio/video frame is queued and
    /// taken for writing (time to first frame).
    play_at: Cell<Option<Instant>>,
    media_queued: Cell<bool>,
    /// When the write in progress started (the stall sweep closes a peer that stopped
    /// reading).
    writing_since: Cell<Option<Instant>>,
}

/// One vectored write's worth of queued bytes.
pub struct Batch {
    pub bufs: Vec<Bytes>,
    pub oldest_ingest: Option<Instant>,
}

impl OutQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues bytes and wakes the writer now (protocol replies, notices).
    pub fn push(&self, b: Bytes) {
        if self.append(b, Instant::now()) {
            self.notify.notify_one();
        }
    }

    /// Queues several buffers and wakes the writer once.
    pub fn push_all(&self, bufs: Vec<Bytes>) {
        let now = Instant::now();
        let mut any = false;
        for b in bufs {
            any |= self.append(b, now);
        }
        if any {
            self.notify.notify_one();
        }
    }

    /// Queues a live frame (or a run of them), remembering its ingest time for latency.
    pub fn push_media(&self, b: Bytes, ingest: Instant, now: Instant) {
        if !self.append(b, now) {
            return;
        }
        if self.oldest_ingest.get().is_none() {
            self.oldest_ingest.set(Some(ingest));
        }
        self.notify.notify_one();
    }

    fn append(&self, b: Bytes, now: Instant) -> bool {
        if b.is_empty() || self.closed.get() {
            return false;
        }
        if self.oldest_push.get().is_none() {
            self.oldest_push.set(Some(now));
        }
        self.bytes.set(self.bytes.get() + b.len());
        self.items.borrow_mut().push_back(b);
        true
    }

    /// Wakes the writer with nothing new queued (the connection has bytes of its own to
    /// send, e.g. TLS records).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// How long the oldest queued item has waited.
    pub fn age(&self, now: Instant) -> std::time::Duration {
        self.oldest_push
            .get()
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    /// Takes up to `MAX_IOVECS` buffers for one vectored write.
    pub fn take_batch(&self) -> Batch {
        let mut bufs = Vec::new();
        let oldest_ingest = self.take_into(&mut bufs);
        Batch {
            bufs,
            oldest_ingest,
        }
    }

    /// Like `take_batch`, into a vector the writer reuses (no allocation per write).
    /// Returns the ingest time of the oldest live frame taken.
    pub fn take_into(&self, out: &mut Vec<Bytes>) -> Option<Instant> {
        let mut items = self.items.borrow_mut();
        let n = items.len().min(MAX_IOVECS);
        let before = out.len();
        out.extend(items.drain(..n));
        let taken: usize = out[before..].iter().map(Bytes::len).sum();
        self.bytes.set(self.bytes.get() - taken);
        // What stays behind has waited since at least now; close enough for the age limit.
        self.oldest_push.set((!items.is_empty()).then(Instant::now));
        // A join burst (a whole GOP) grows the ring; don't keep that per idle viewer (a
        // flush brings one or a few buffers).
        if items.is_empty() && items.capacity() > 16 {
            items.shrink_to(4);
        }
        self.oldest_ingest.take()
    }

    /// The writer handed a batch to the socket at `now`.
    pub fn begin_write(&self, now: Instant) {
        self.writing_since.set(Some(now));
    }

    /// The socket took the whole batch.
    pub fn end_write(&self) {
        self.writing_since.set(None);
    }

    /// A write has waited on the peer for longer than `limit`.
    pub fn write_stalled(&self, now: Instant, limit: std::time::Duration) -> bool {
        self.writing_since
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) > limit)
    }

    /// Starts the time-to-first-frame clock (a play request).
    pub fn mark_play(&self, at: Instant) {
        self.play_at.set(Some(at));
        self.media_queued.set(false);
    }

    /// Stops the time-to-first-frame clock without a measurement: the stream is not live,
    /// so the wait is the publisher's absence, not our latency.
    pub fn clear_play(&self) {
        self.play_at.set(None);
    }

    /// Audio or video for the player is in the queue.
    pub fn mark_media(&self) {
        self.media_queued.set(true);
    }

    /// Once, after the first media was taken for writing: when the play was requested.
    pub fn take_play_start(&self) -> Option<Instant> {
        if self.media_queued.get() {
            self.play_at.take()
        } else {
            None
        }
    }

    /// Stops accepting bytes and wakes the writer so it can finish what is queued.
    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
    }

    /// Closes the connection without finishing the queue (a viewer too far behind).
    pub fn kill(&self) {
        self.killed.set(true);
        self.items.borrow_mut().clear();
        self.bytes.set(0);
        self.close();
        self.kill_notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn is_killed(&self) -> bool {
        self.killed.get()
    }

    /// Waits for the writer's next wake-up: a push, a flush tick or a close.
    pub async fn wait(&self) {
        if self.closed.get() {
            return;
        }
        self.notify.notified().await;
    }

    /// Resolves once `kill` was called.
    pub async fn killed(&self) {
        while !self.killed.get() {
            self.kill_notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_capped_and_accounted() {
        let q = OutQueue::new();
        for _ in 0..(MAX_IOVECS + 5) {
            q.push(Bytes::from_static(b"abc"));
        }
        q.push(Bytes::new()); // ignored
        assert_eq!(q.queued_bytes(), 3 * (MAX_IOVECS + 5));
        assert_eq!(q.take_batch().bufs.len(), MAX_IOVECS);
        assert_eq!(q.queued_bytes(), 15);
        assert_eq!(q.take_batch().bufs.len(), 5);
        assert!(q.is_empty());
        q.close();
        q.push(Bytes::from_static(b"late"));
        assert!(q.is_empty());
    }

    #[test]
    fn media_tracks_oldest_ingest_and_age() {
        let q = OutQueue::new();
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(30);
        q.push_media(Bytes::from_static(b"a"), t0, t0);
        q.push_media(Bytes::from_static(b"b"), later, later);
        assert_eq!(q.age(later), std::time::Duration::from_millis(30));
        let b = q.take_batch();
        assert_eq!(b.oldest_ingest, Some(t0));
        assert_eq!(b.bufs.len(), 2);
        assert_eq!(q.age(later), std::time::Duration::ZERO);
        assert_eq!(q.take_batch().oldest_ingest, None);
    }

    #[test]
    fn time_to_first_frame_clock() {
        let q = OutQueue::new();
        let t = Instant::now();
        q.mark_play(t);
        assert_eq!(q.take_play_start(), None, "no media yet");
        q.mark_media();
        assert_eq!(q.take_play_start(), Some(t));
        assert_eq!(q.take_play_start(), None, "measured once");
        // A stream that is not live: the wait for its publisher is not measured.
        q.mark_play(t);
        q.clear_play();
        q.mark_media();
        assert_eq!(q.take_play_start(), None);
    }

    #[test]
    fn kill_drops_everything() {
        let q = OutQueue::new();
        q.push(Bytes::from_static(b"abc"));
        q.kill();
        assert!(q.is_killed() && q.is_closed() && q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }
}
