//! Allocations per relayed message do not grow with the viewer count: a frame is encoded
//! once, and each viewer gets a refcounted handle in a queue whose storage is reused, drained
//! into a write vector that is reused too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtmp_edge::fanout::queue::OutQueue;
use rtmp_edge::fanout::viewer::{Viewer, ViewerPolicy};
use rtmp_edge::media::frame::{Frame, MediaKind};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per message while relaying `messages` frames to `viewers` viewers, each
/// drained like a writer does after every few frames.
fn allocs_per_message(viewers: usize, messages: u32) -> f64 {
    let mut vs: Vec<Viewer> = (0..viewers)
        .map(|_| {
            Viewer::new(
                Rc::new(OutQueue::new()),
                1,
                "a".into(),
                4096,
                ViewerPolicy::default(),
            )
        })
        .collect();
    let mut write_vecs: Vec<Vec<Bytes>> = (0..viewers).map(|_| Vec::with_capacity(64)).collect();
    let payload = |ts: u32| {
        let mut p = vec![if ts.is_multiple_of(60) { 0x17 } else { 0x27 }, 1];
        p.resize(3000, 0);
        Bytes::from(p)
    };
    let mut relay = |from: u32, to: u32| {
        let now = Instant::now();
        for ts in from..to {
            let frame = Arc::new(Frame::new(MediaKind::Video, ts * 33, payload(ts), 4096));
            for v in vs.iter_mut() {
                v.deliver(&frame, now);
            }
            if ts % 4 == 3 {
                for (v, w) in vs.iter().zip(write_vecs.iter_mut()) {
                    v.queue.take_into(w);
                    w.clear();
                }
            }
        }
    };
    relay(0, 120); // warm up: queues and write vectors reach their working size
    let before = ALLOCS.load(Relaxed);
    relay(120, 120 + messages);
    (ALLOCS.load(Relaxed) - before) as f64 / f64::from(messages)
}

#[test]
fn allocations_per_message_do_not_depend_on_viewers() {
    let few = allocs_per_message(10, 600);
    let many = allocs_per_message(1000, 600);
    eprintln!("allocations per relayed message: {few:.2} with 10 viewers, {many:.2} with 1000");
    // The frame itself (payload, Arc, encoded wire) costs a handful; viewers add nothing.
    assert!(few < 8.0, "{few} allocations per message with 10 viewers");
    assert!(
        many <= few + 0.5,
        "allocations grew with viewers: {few} -> {many} per message"
    );
}
