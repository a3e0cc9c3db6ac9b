//! The connection's writer: drains its queue with vectored writes, records fan-out latency
//! and time to first frame, and ends when the queue is killed (a kick, a viewer too far
//! behind, a write stalled past `--write-timeout-secs`: see [`sweep_stalled_writes`]).

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::Tag;
use crate::fanout::queue::OutQueue;
use crate::shard::io::Conn;
use crate::shard::state::ShardState;
use crate::shard::stats;

pub(super) async fn write_loop(
    state: Rc<ShardState>,
    conn: Rc<Conn>,
    queue: Rc<OutQueue>,
    tag: Rc<Tag>,
) {
    // Raced once for the connection's life, not around each write: thousands of viewers
    // writing several times a second would each register a waiter (and a timer) per write.
    let shut = tokio::select! {
        shut = drain(&state, &conn, &queue, &tag) => shut,
        // Killed, perhaps while a write hangs on a full socket: the shutdown below ends it.
        () = queue.killed() => true,
    };
    queue.close();
    if shut {
        // The reader learns through the shutdown: its read completes with 0 or an error.
        conn.shutdown();
    }
}

/// Writes until the queue is closed and drained (false: the socket stays open, a
/// publisher being handed to another shard shares it with its new owner), killed or a
/// write fails (true: shut the socket).
async fn drain(state: &ShardState, conn: &Conn, queue: &OutQueue, tag: &Tag) -> bool {
    let mut batch = Vec::new();
    // A write takes at most a batch's worth; what is left (a join burst) goes next, at once.
    let mut more = false;
    loop {
        if !more {
            queue.wait().await;
        }
        let oldest_ingest = queue.take_into(&mut batch);
        more = !queue.is_empty();
        if batch.is_empty() && !conn.has_pending_output() {
            if queue.is_closed() {
                return queue.is_killed();
            }
            continue;
        }
        if let Some(ingest) = oldest_ingest {
            stats::record(&state.stats.fanout, ingest.elapsed());
        }
        let play_start = queue.take_play_start();
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        queue.begin_write(Instant::now());
        let (res, mut emptied) = conn.writev_all(std::mem::take(&mut batch)).await;
        queue.end_write();
        if let Err(e) = res {
            clog!(debug, tag, error = %e, "write failed");
            return true;
        }
        // A join burst (a whole GOP) grows it; an idle viewer keeps a small one.
        if emptied.capacity() > 16 {
            emptied.shrink_to(4);
        }
        batch = emptied;
        stats::bump(&state.stats.egress_bytes, bytes as u64);
        if let Some(t) = play_start {
            stats::record(&state.stats.first_frame, t.elapsed());
        }
    }
}

/// Once a second: a connection whose write has waited on the peer past the write timeout
/// is closed (its queue killed, which ends the writer and the write with it).
pub fn sweep_stalled_writes(state: &ShardState, now: Instant) {
    let stall = state.shared.cfg.write_timeout;
    for tag in state.clients.borrow().values() {
        if tag.queue.write_stalled(now, stall) && !tag.queue.is_killed() {
            clog!(
                warn,
                tag,
                stall_s = stall.as_secs(),
                "peer stopped reading, closing"
            );
            stats::bump(&state.stats.write_stalls, 1);
            tag.queue.kill();
        }
    }
}
