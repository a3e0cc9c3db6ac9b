//! The thread-per-core data plane: one pinned thread per shard, each with its own
//! tokio-uring runtime, SO_REUSEPORT listener, connection tasks and stream table. Shards
//! share nothing but channels of `ShardMsg` and immutable frames.

pub mod conn;
pub mod io;
pub mod listener;
pub mod query;
pub mod state;
pub mod stats;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info};

use crate::config::Config;
use crate::media::cache::StreamCache;
use crate::media::frame::SharedFrame;
use crate::protocol::session::ServerSession;
use state::{ShardState, StreamKey};

/// Depth of each shard's inbox; frames beyond it are dropped and counted.
const INBOX_CAPACITY: usize = 16 * 1024;

/// A publisher moving to the shard that owns its stream, with everything read so far.
pub struct Handoff {
    pub fd: OwnedFd,
    pub session: Box<ServerSession>,
    pub conn_id: u64,
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub since: std::time::Instant,
    pub agent: Option<Box<str>>,
    pub stream_id: u32,
    pub name: String,
    pub query: Option<String>,
}

pub enum ShardMsg {
    /// To the owner: shard wants this stream's frames.
    Subscribe {
        key: StreamKey,
        shard: usize,
    },
    Unsubscribe {
        key: StreamKey,
        shard: usize,
    },
    /// From the owner: the cache a new mirror starts from.
    Snapshot {
        key: StreamKey,
        cache: StreamCache,
        live: bool,
    },
    Frame {
        key: StreamKey,
        frame: SharedFrame,
    },
    Published {
        key: StreamKey,
    },
    Unpublished {
        key: StreamKey,
    },
    Adopt(Box<Handoff>),
    /// From the control plane (HTTP API).
    Query(query::Query),
}

/// What every shard can see.
pub struct Shared {
    pub cfg: Config,
    pub senders: Vec<mpsc::Sender<ShardMsg>>,
    pub next_conn_id: AtomicU64,
    /// What a newly published stream gets besides players (recording, pushes).
    pub sinks: Vec<Arc<dyn state::SinkFactory>>,
    /// Readiness and exported histograms.
    pub control: Arc<crate::control::Control>,
}

/// A running data plane.
pub struct Server {
    pub local_addr: SocketAddr,
    pub threads: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts every shard thread.
pub fn start(cfg: Config) -> std::io::Result<Server> {
    let control = Arc::new(crate::control::Control::detached(cfg.shard_count()));
    start_with(cfg, Vec::new(), control)
}

/// `start`, with sink factories (recorder, push destinations) attached to every stream.
pub fn start_with(
    cfg: Config,
    sinks: Vec<Arc<dyn state::SinkFactory>>,
    control: Arc<crate::control::Control>,
) -> std::io::Result<Server> {
    let n = cfg.shard_count();
    let listeners = listener::bind_reuseport(cfg.listen, n)?;
    let local_addr = listeners[0].local_addr()?;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::channel(INBOX_CAPACITY)).unzip();
    control.attach_shards(senders.clone());
    let shared = Arc::new(Shared {
        cfg,
        senders,
        next_conn_id: AtomicU64::new(1),
        sinks,
        control,
    });
    let mut threads = Vec::with_capacity(n);
    for (id, (listener, rx)) in listeners.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                pin_to_core(id);
                tokio_uring::start(run_shard(id, listener, rx, shared));
            })?;
        threads.push(t);
    }
    info!(addr = %local_addr, shards = n, "listening");
    Ok(Server {
        local_addr,
        threads,
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
    mut rx: mpsc::Receiver<ShardMsg>,
    shared: Arc<Shared>,
) {
    let state = Rc::new_cyclic(|me| ShardState::new(id, shared, me.clone()));
    let inbox_state = state.clone();
    tokio_uring::spawn(async move {
        while let Some(msg) = rx.recv().await {
            inbox_state.on_message(msg);
        }
    });
    let coalesce = Duration::from_millis(state.shared.cfg.write_coalesce_ms);
    if !coalesce.is_zero() {
        // One tick wakes every waiting viewer together, so their writes leave in one
        // io_uring submission instead of trickling out frame by frame.
        let tick_state = state.clone();
        let every = (coalesce / 4).max(Duration::from_millis(2));
        let due = coalesce.saturating_sub(every);
        tokio_uring::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                tick_state.flush_viewers(std::time::Instant::now(), due);
            }
        });
    }
    let log_every = state.shared.cfg.stats_interval_secs;
    let stats_state = state.clone();
    tokio_uring::spawn(async move {
        // Once a second: histograms and counters to the control plane (cheap merges, off
        // the per-frame path); every --stats-interval-secs: a summary line in the log.
        let mut ticks = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stats_state.export();
            ticks += 1;
            if log_every > 0 && ticks.is_multiple_of(log_every) {
                stats_state.stats.log_and_reset(stats_state.id);
            }
        }
    });
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    state.shared.control.shard_ready();
    info!(shard = id, "shard running");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => conn::accept(state.clone(), stream, peer),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!(shard = id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
