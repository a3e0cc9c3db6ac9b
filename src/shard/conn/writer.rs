//! The connection's writer: drains its queue with vectored writes, records fan-out latency
//! and time to first frame, and gives up on a peer that stops reading.

use std::rc::Rc;

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
    let stall = state.shared.cfg.write_timeout;
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
            if queue.is_killed() {
                break; // the reader may be idle in a read: the shutdown below ends it
            }
            if queue.is_closed() {
                // Closed and drained. No shutdown here: a publisher being handed to another
                // shard shares this socket with its new owner.
                return;
            }
            continue;
        }
        if let Some(ingest) = oldest_ingest {
            stats::record(&state.stats.fanout, ingest.elapsed());
        }
        let play_start = queue.take_play_start();
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let write = tokio::time::timeout(stall, conn.writev_all(std::mem::take(&mut batch)));
        tokio::select! {
            res = write => match res {
                Ok((Ok(()), mut emptied)) => {
                    // A join burst (a whole GOP) grows it; an idle viewer keeps a small one.
                    emptied.shrink_to(32);
                    batch = emptied;
                    stats::bump(&state.stats.egress_bytes, bytes as u64);
                    if let Some(t) = play_start {
                        stats::record(&state.stats.first_frame, t.elapsed());
                    }
                }
                Ok((Err(e), _)) => {
                    clog!(debug, tag, error = %e, "write failed");
                    break;
                }
                Err(_) => {
                    clog!(warn, tag, stall_s = stall.as_secs(), "peer stopped reading, closing");
                    stats::bump(&state.stats.write_stalls, 1);
                    break;
                }
            },
            // Kicked while a write hangs on a full socket: the shutdown below ends it.
            _ = queue.killed() => break,
        }
    }
    // The reader learns through the shutdown: its read completes with 0 or an error.
    queue.close();
    conn.shutdown();
}
