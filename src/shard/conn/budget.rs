//! What a connection may cost the server, given back when it ends: its share of the
//! server-wide bytes of partial incoming messages (`BufferShare`), and its slot in the
//! connection limits, overall and per client address (`ConnSlot`).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::shard::Shared;

/// A connection's part of `Shared::buffered`, the server-wide count of bytes held by
/// partial incoming messages; given back when the connection ends (or moves shards).
pub(super) struct BufferShare {
    pub(super) shared: Arc<Shared>,
    pub(super) held: usize,
}

impl BufferShare {
    /// Records that this connection holds `now` bytes. Err(total) when it grew and the
    /// server-wide total is past the limit: this connection is the newest offender.
    pub(super) fn update(&mut self, now: usize) -> Result<(), usize> {
        let total = &self.shared.buffered;
        let before = self.held;
        self.held = now;
        if now <= before {
            total.fetch_sub(before - now, Ordering::Relaxed);
            return Ok(());
        }
        let sum = total.fetch_add(now - before, Ordering::Relaxed) + (now - before);
        if sum > self.shared.cfg.max_buffered_total {
            return Err(sum);
        }
        Ok(())
    }
}

impl Drop for BufferShare {
    fn drop(&mut self) {
        self.shared.buffered.fetch_sub(self.held, Ordering::Relaxed);
        RELEASED.with(|r| r.set(r.get() + self.held));
    }
}

thread_local! {
    /// Partial-message bytes connections on this shard gave back since the last
    /// `take_released`.
    static RELEASED: Cell<usize> = const { Cell::new(0) };
}

/// Bytes of partial messages freed by connections on this thread since the last call.
pub fn take_released() -> usize {
    RELEASED.with(|r| r.replace(0))
}

/// Which limit refused a connection (the `rtmp_connections_refused_total` reason).
pub const REFUSE_REASONS: [&str; 3] = ["max_conns", "max_conns_per_ip", "max_handshakes_per_ip"];

/// A connection's place under `--max-conns`, `--max-conns-per-ip` and, until it publishes
/// or plays, `--max-handshakes-per-ip`; moves with a publisher handed to another shard.
pub struct ConnSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
    /// Counted among its address's connections not yet publishing or playing.
    pending: bool,
}

fn count_up(map: &Mutex<HashMap<IpAddr, u32>>, ip: IpAddr, limit: u32) -> bool {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let count = map.entry(ip).or_insert(0);
    if *count >= limit {
        return false;
    }
    *count += 1;
    true
}

fn count_down(map: &Mutex<HashMap<IpAddr, u32>>, ip: IpAddr) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(count) = map.get_mut(&ip) {
        *count -= 1;
        if *count == 0 {
            map.remove(&ip);
        }
    }
}

impl ConnSlot {
    /// A slot for a new connection from `ip`, or the limit that refuses it.
    pub(crate) fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
        let cfg = &shared.cfg;
        let n = shared.conns.fetch_add(1, Ordering::Relaxed) + 1;
        if cfg.max_conns > 0 && n > cfg.max_conns {
            shared.conns.fetch_sub(1, Ordering::Relaxed);
            return Err(REFUSE_REASONS[0]);
        }
        let ip = ip.to_canonical();
        if cfg.max_conns_per_ip > 0 && !count_up(&shared.per_ip, ip, cfg.max_conns_per_ip) {
            shared.conns.fetch_sub(1, Ordering::Relaxed);
            return Err(REFUSE_REASONS[1]);
        }
        let mut slot = ConnSlot {
            shared: shared.clone(),
            ip,
            pending: false,
        };
        if cfg.max_handshakes_per_ip > 0 && !ip.is_loopback() {
            if !count_up(&shared.pending_per_ip, ip, cfg.max_handshakes_per_ip) {
                return Err(REFUSE_REASONS[2]); // the dropped slot gives the rest back
            }
            slot.pending = true;
        }
        Ok(slot)
    }

    /// The connection publishes or plays now: it no longer counts as a handshake.
    pub(crate) fn settle(&mut self) {
        if std::mem::take(&mut self.pending) {
            count_down(&self.shared.pending_per_ip, self.ip);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.settle();
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
        if self.shared.cfg.max_conns_per_ip > 0 {
            count_down(&self.shared.per_ip, self.ip);
        }
    }
}
