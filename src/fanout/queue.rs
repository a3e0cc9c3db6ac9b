//! A connection's outgoing byte queue: refcounted chunks waiting for its writer task.
//! Single-threaded (lives on one shard); bounded in bytes by whoever pushes media into it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::Notify;

/// Most iovecs the kernel takes in one writev (IOV_MAX).
pub const MAX_IOVECS: usize = 1024;

#[derive(Default)]
pub struct OutQueue {
    items: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    closed: Cell<bool>,
    notify: Notify,
}

impl OutQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues bytes for the writer; control replies and media share this one order.
    pub fn push(&self, b: Bytes) {
        if b.is_empty() || self.closed.get() {
            return;
        }
        self.bytes.set(self.bytes.get() + b.len());
        self.items.borrow_mut().push_back(b);
        self.notify.notify_one();
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    /// Takes up to `MAX_IOVECS` buffers for one vectored write.
    pub fn take_batch(&self) -> Vec<Bytes> {
        let mut items = self.items.borrow_mut();
        let n = items.len().min(MAX_IOVECS);
        let batch: Vec<Bytes> = items.drain(..n).collect();
        let taken: usize = batch.iter().map(Bytes::len).sum();
        self.bytes.set(self.bytes.get() - taken);
        batch
    }

    /// Stops accepting bytes and wakes the writer so it can finish.
    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Waits until something is queued or the queue is closed.
    pub async fn ready(&self) {
        while self.is_empty() && !self.is_closed() {
            self.notify.notified().await;
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
        assert_eq!(q.take_batch().len(), MAX_IOVECS);
        assert_eq!(q.queued_bytes(), 15);
        assert_eq!(q.take_batch().len(), 5);
        assert!(q.is_empty());
        q.close();
        q.push(Bytes::from_static(b"late"));
        assert!(q.is_empty());
    }
}
