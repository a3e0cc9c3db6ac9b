//! The thread-per-core data plane: one pinned thread per shard, each with its own
//! tokio-uring runtime, SO_REUSEPORT listener, connection tasks, stream table and task
//! registry. Shards share nothing but their lanes (`transmission`) and immutable frames.
//! What the data plane needs from features (auth, sinks, origin pulls, telemetry) it
//! states as traits in `hooks`; `main` wires the implementations in.

mod admin;
pub mod config;
pub mod conn;
pub mod hooks;
pub mod io;
pub mod listener;
mod mirror;
pub mod query;
mod router;
mod source;
pub mod state;
pub mod stats;
pub mod tasks;
pub mod transmission;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

pub use config::ShardConfig;
pub use hooks::Hooks;
use state::ShardState;
use transmission::{ControlMsg, Lanes, ShardLink};

/// What every shard can see.
pub struct Shared {
    pub cfg: ShardConfig,
    /// Every shard's lanes, this one's included.
    pub links: Vec<ShardLink>,
    pub next_conn_id: AtomicU64,
    pub hooks: Hooks,
    /// Bytes every connection's partial incoming messages hold (see `conn::BufferShare`).
    pub buffered: std::sync::atomic::AtomicUsize,
    /// Client connections open, overall and per address (see `conn::ConnSlot`).
    pub conns: std::sync::atomic::AtomicUsize,
    pub per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// Per address: connections not yet publishing or playing.
    pub pending_per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
}

/// A shard thread ended (after a shutdown, or by panicking).
#[derive(Debug, Clone, Copy)]
pub struct ShardExit {
    pub shard: usize,
    pub panicked: bool,
}

/// A running data plane.
pub struct Server {
    pub local_addr: SocketAddr,
    /// Every shard's lanes: the control plane's queries and the shutdown go through them.
    pub links: Vec<ShardLink>,
    /// One message per shard thread as it ends.
    pub exits: std_mpsc::Receiver<ShardExit>,
}

impl Server {
    /// Asks every shard to drain and stop (see [`ShardState::begin_shutdown`]).
    pub fn shutdown(links: &[ShardLink]) {
        for l in links {
            l.send_control(ControlMsg::Shutdown);
        }
    }
}

/// Tells `main` a shard thread ended, also when it panicked.
struct ExitNotice(usize, std_mpsc::Sender<ShardExit>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.1.send(ShardExit {
            shard: self.0,
            panicked: std::thread::panicking(),
        });
    }
}

/// Buffer bytes released on a shard within a second past which its allocator is asked to
/// return everything free at once (else only what its own delay allows), for this many
/// seconds.
const RELEASE_FORCE_BYTES: usize = 256 << 10;
const RELEASE_FORCE_TICKS: u32 = 3;

/// Binds the listeners and starts every shard thread.
pub fn start(cfg: ShardConfig, hooks: Hooks) -> std::io::Result<Server> {
    let n = cfg.shards.max(1);
    let listeners = listener::bind_reuseport(cfg.listen, n)?;
    let local_addr = listeners[0].local_addr()?;
    let mut tls_listeners: Vec<Option<std::net::TcpListener>> = match &cfg.tls {
        Some(t) => listener::bind_reuseport(t.addr, n)?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..n).map(|_| None).collect(),
    };
    let tls_addr = match tls_listeners.first() {
        Some(Some(l)) => Some(l.local_addr()?),
        _ => None,
    };
    let (links, lanes) = transmission::mesh(n);
    let shared = Arc::new(Shared {
        cfg,
        links: links.clone(),
        next_conn_id: AtomicU64::new(1),
        buffered: Default::default(),
        conns: Default::default(),
        per_ip: Default::default(),
        pending_per_ip: Default::default(),
        hooks,
    });
    let (exit_tx, exits) = std_mpsc::channel();
    for (id, (listener, lanes)) in listeners.into_iter().zip(lanes).enumerate() {
        let shared = shared.clone();
        let tls_listener = tls_listeners[id].take();
        let notice = ExitNotice(id, exit_tx.clone());
        std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                let _notice = notice;
                pin_to_core(id);
                tokio_uring::start(run_shard(id, listener, tls_listener, lanes, shared));
            })?;
    }
    info!(addr = %local_addr, shards = n, "listening");
    if let Some(a) = tls_addr {
        // Not `addr=`: scripts find the plain port by "listening addr=".
        info!(tls_addr = %a, shards = n, "rtmps listening");
    }
    Ok(Server {
        local_addr,
        links,
        exits,
    })
}

/// Pins the calling thread to the `n`-th CPU this process may run on (modulo their
/// count). Not simply CPU `n`: in a container limited to a cpuset, or next to other
/// pinned processes, CPUs 0..n may be someone else's.
fn pin_to_core(n: usize) {
    // SAFETY: plain libc calls on zeroed cpu_set_t values owned by this function.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        let Some(&core) = cpus.get(n % cpus.len().max(1)) else {
            return;
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

async fn run_shard(
    id: usize,
    listener: std::net::TcpListener,
    tls_listener: Option<std::net::TcpListener>,
    mut lanes: Lanes,
    shared: Arc<Shared>,
) {
    let state = Rc::new_cyclic(|me| ShardState::new(id, shared, me.clone()));
    let tasks = state.tasks.clone();
    let inbox = state.clone();
    tasks.spawn_service(async move {
        while let Some(msg) = lanes.recv().await {
            inbox.on_inbound(msg);
        }
    });
    let coalesce = state.shared.cfg.write_coalesce;
    if !coalesce.is_zero() {
        // One tick wakes every waiting viewer together, so their writes leave in one
        // io_uring submission instead of trickling out frame by frame.
        let tick_state = state.clone();
        let every = (coalesce / 4).max(Duration::from_millis(2));
        let due = coalesce.saturating_sub(every);
        tasks.spawn_service(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                tick_state.flush_viewers(Instant::now(), due);
            }
        });
    }
    let read_every = state.shared.cfg.read_coalesce;
    if !read_every.is_zero() {
        let tick_state = state.clone();
        tasks.spawn_service(async move {
            let mut tick = tokio::time::interval(read_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let from = tick_state.shared.cfg.read_coalesce_from;
            loop {
                tick.tick().await;
                tick_state.read_tick.notify_waiters();
                let streams = tick_state.sources.borrow().len();
                let merge = streams >= from;
                if merge != tick_state.merging_reads.replace(merge) {
                    let every_ms = read_every.as_millis() as u64;
                    if merge {
                        info!(
                            shard = id,
                            streams, every_ms, "busy: merging publishers' reads"
                        );
                    } else {
                        info!(shard = id, streams, "publishers' reads at once again");
                    }
                }
            }
        });
    }
    let log_every = state.shared.cfg.stats_interval_secs;
    let stats_state = state.clone();
    tasks.spawn_service(async move {
        // Once a second: histograms and counters to the control plane (cheap merges, off
        // the per-frame path); every --stats-interval-secs: a summary line in the log.
        let mut ticks = 0u64;
        let mut force_ticks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stats_state.export();
            conn::sweep_stalled_writes(&stats_state, Instant::now());
            // Memory freed on this thread goes back to the OS now, not when the allocator
            // next needs the pages: after an attack or a burst, RSS returns to its baseline.
            // Forced for a few seconds after buffers were released (closes trail in).
            if conn::take_released() >= RELEASE_FORCE_BYTES {
                force_ticks = RELEASE_FORCE_TICKS;
            }
            (stats_state.shared.cfg.release_memory)(force_ticks > 0);
            force_ticks = force_ticks.saturating_sub(1);
            ticks += 1;
            if log_every > 0 && ticks.is_multiple_of(log_every) {
                stats_state.stats.log_and_reset(stats_state.id);
            }
        }
    });
    state.shared.hooks.telemetry.shard_ready(id);
    for service in &state.shared.hooks.services {
        service.start(&state);
    }
    info!(shard = id, "shard running");
    // Two loops polled together, not one select over two accepts: a dropped accept
    // that completes anyway would lose its connection.
    let plain = accept_loop(state.clone(), listener, false);
    let secure = async {
        if let Some(l) = tls_listener {
            accept_loop(state.clone(), l, true).await;
        }
    };
    tokio::join!(plain, secure);
    drain(&state).await;
}

/// Accepts connections until the shard stops, then closes the listener.
async fn accept_loop(state: Rc<ShardState>, listener: std::net::TcpListener, tls: bool) {
    let listen_fd = listener.as_raw_fd();
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    let tasks = state.tasks.clone();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = tasks.stopped() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match conn::ConnSlot::take(&state.shared, peer.ip()) {
                    Ok(slot) => conn::accept(state.clone(), stream, peer, tls, slot),
                    Err(reason) => {
                        // Closed before it costs anything; a flood logs once a second.
                        drop(stream);
                        metrics::counter!("rtmp_connections_refused_total", "reason" => reason)
                            .increment(1);
                        let now = Instant::now();
                        if last_refusal_log.is_none_or(|t| now - t >= Duration::from_secs(1)) {
                            last_refusal_log = Some(now);
                            warn!(shard = state.id, peer = %peer, reason, "connection refused: limit reached");
                        }
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!(shard = state.id, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Stop accepting: on Linux a shut-down listening socket refuses new connections, and
    // the accept still in flight completes.
    // SAFETY: shutdown(2) on the listener's fd, which is open until `listener` drops below.
    unsafe { libc::shutdown(listen_fd, libc::SHUT_RDWR) };
    drop(listener);
}

/// The end of a shutdown: waits for connections, sinks and pulls to finish within the
/// grace period, then closes whatever is left.
async fn drain(state: &Rc<ShardState>) {
    let grace = state.shared.cfg.shutdown_grace;
    if !state.tasks.drained(Instant::now() + grace).await {
        warn!(
            shard = state.id,
            tasks = state.tasks.live(),
            grace_s = grace.as_secs(),
            "shutdown grace period over, closing the rest"
        );
        for t in state.clients.borrow().values() {
            t.queue.kill();
        }
        state
            .tasks
            .drained(Instant::now() + Duration::from_secs(1))
            .await;
    }
    info!(shard = state.id, "shard stopped");
}

impl ShardState {
    /// SIGTERM: viewers hear their streams ended, sinks wind down (pushes unpublish,
    /// recordings end), the listener stops and every connection closes after its queued
    /// bytes. `drain` then waits for it all.
    pub fn begin_shutdown(&self) {
        if self.tasks.is_stopping() {
            return;
        }
        info!(
            shard = self.id,
            connections = self.clients.borrow().len(),
            "shutting down"
        );
        self.unpublish_all_mirrors();
        self.stop_all_sinks();
        self.tasks.begin_shutdown();
        for t in self.clients.borrow().values() {
            t.end_reads();
        }
    }
}
