//! rtmp-floor: the plain-sender floor for fan-out benchmarks (`loadtest/compare.sh -f`).
//! It answers RTMP like a server (publishers and players), but does nothing a relay does
//! beyond sending: no per-viewer queue budget, no GOP cache, no admission, no metrics.
//! Each batch of the publisher's messages is chunk-encoded once into one buffer, and that
//! buffer is written to every player with rtmp-edge's batch policy (`--write-coalesce-ms`:
//! 0 sends every read's messages at once, N every N ms), on the same kind of shards
//! (threads, one io_uring and one SO_REUSEPORT listener each). What it costs per byte is
//! what any relay with that batch policy must pay: the floor a relay's cost is held to.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use rtmp_edge::media::frame::{Frame, MediaKind};
use rtmp_edge::protocol::session::{Event, ServerSession, SessionConfig};
use rtmp_edge::shard::io::Conn;
use rtmp_edge::shard::listener::bind_reuseport;
use tokio::sync::{broadcast, Notify};
use tokio_uring::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rtmp-floor",
    about = "Plain RTMP sender: the fan-out cost floor"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:1935")]
    listen: SocketAddr,
    /// Threads, each with its own listener and io_uring (rtmp-edge's shards).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// 0: send each read's messages at once; N: send what gathered every N ms.
    #[arg(long, default_value_t = 0)]
    write_coalesce_ms: u64,
    /// While coalescing, send early once this many bytes wait (rtmp-edge's default).
    #[arg(long, default_value_t = 64 << 10)]
    write_coalesce_bytes: usize,
    #[arg(long, default_value_t = 4096)]
    chunk_size: u32,
}

/// What every thread shares: batches go out on `batches`; a new player first gets the
/// latest decoder configurations.
struct Shared {
    batches: broadcast::Sender<Bytes>,
    configs: Mutex<Vec<(MediaKind, Bytes)>>,
    args: Args,
}

struct Player {
    conn: Rc<Conn>,
    queue: RefCell<VecDeque<Bytes>>,
    ready: Notify,
    gone: Cell<bool>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listeners = bind_reuseport(args.listen, args.threads.max(1))?;
    let (batches, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        batches,
        configs: Mutex::new(Vec::new()),
        args,
    });
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let shared = shared.clone();
            std::thread::spawn(move || tokio_uring::start(shard(shared, l)))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

async fn shard(shared: Arc<Shared>, listener: std::net::TcpListener) {
    let listener = TcpListener::from_std(listener);
    let players: Rc<RefCell<Vec<Rc<Player>>>> = Rc::default();
    let mut rx = shared.batches.subscribe();
    let fan = players.clone();
    tokio_uring::spawn(async move {
        loop {
            let batch = match rx.recv().await {
                Ok(b) => b,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            fan.borrow_mut().retain(|p| !p.gone.get());
            for p in fan.borrow().iter() {
                p.queue.borrow_mut().push_back(batch.clone());
                p.ready.notify_one();
            }
        }
    });
    let pending: Rc<RefCell<BytesMut>> = Rc::default();
    let coalesce = Duration::from_millis(shared.args.write_coalesce_ms);
    if !coalesce.is_zero() {
        let (pending, shared) = (pending.clone(), shared.clone());
        tokio_uring::spawn(async move {
            let mut tick = tokio::time::interval(coalesce);
            loop {
                tick.tick().await;
                flush(&shared, &mut pending.borrow_mut());
            }
        });
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (shared, players, pending) = (shared.clone(), players.clone(), pending.clone());
        tokio_uring::spawn(async move { serve(shared, stream, players, pending).await });
    }
}

fn flush(shared: &Shared, pending: &mut BytesMut) {
    if !pending.is_empty() {
        let _ = shared.batches.send(pending.split().freeze());
    }
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    players: Rc<RefCell<Vec<Rc<Player>>>>,
    pending: Rc<RefCell<BytesMut>>,
) {
    let conn = Rc::new(Conn::new(stream));
    conn.set_nodelay(shared.args.write_coalesce_ms > 0);
    let mut session = ServerSession::new(SessionConfig {
        out_chunk_size: shared.args.chunk_size,
        ..SessionConfig::default()
    });
    let chunk = shared.args.chunk_size;
    let mut player: Option<Rc<Player>> = None;
    // Players only send acks; a publisher gets a bigger buffer (rtmp-edge does the same).
    let mut buf = vec![0u8; 2 * 1024];
    loop {
        let (res, b) = conn.read(buf).await;
        buf = b;
        let n = match res {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        if session.feed(&buf[..n]).is_err() {
            break;
        }
        let mut media = false;
        while let Some(ev) = session.poll_event() {
            let (kind, ts, payload) = match ev {
                Event::Publish {
                    stream_id, name, ..
                } => {
                    session.accept_publish(stream_id, &name);
                    buf.resize(64 * 1024, 0);
                    continue;
                }
                Event::Play {
                    stream_id,
                    name,
                    reset,
                    ..
                } => {
                    session.accept_play(stream_id, &name, reset);
                    let mut first = session.take_output().into_iter().collect::<Vec<_>>();
                    if let Ok(c) = shared.configs.lock() {
                        first.extend(c.iter().map(|(_, w)| w.clone()));
                    }
                    let p = Rc::new(Player {
                        conn: conn.clone(),
                        queue: RefCell::new(first.into()),
                        ready: Notify::new(),
                        gone: Cell::new(false),
                    });
                    p.ready.notify_one();
                    tokio_uring::spawn(write_loop(p.clone()));
                    players.borrow_mut().push(p.clone());
                    player = Some(p);
                    continue;
                }
                Event::Audio { timestamp, payload } => (MediaKind::Audio, timestamp, payload),
                Event::Video { timestamp, payload } => (MediaKind::Video, timestamp, payload),
                Event::Metadata { timestamp, payload } => (MediaKind::Metadata, timestamp, payload),
                _ => continue,
            };
            let frame = Frame::new(kind, ts, payload, chunk);
            if frame.is_config() {
                if let Ok(mut c) = shared.configs.lock() {
                    c.retain(|(k, _)| *k != kind);
                    c.push((kind, frame.wire().clone()));
                }
            }
            pending.borrow_mut().extend_from_slice(frame.wire());
            media = true;
        }
        if media {
            let mut p = pending.borrow_mut();
            if shared.args.write_coalesce_ms == 0 || p.len() >= shared.args.write_coalesce_bytes {
                flush(&shared, &mut p);
            }
        }
        if let Some(out) = session.take_output() {
            match &player {
                Some(p) => {
                    p.queue.borrow_mut().push_back(out);
                    p.ready.notify_one();
                }
                None => {
                    if conn.writev_all(vec![out]).await.0.is_err() {
                        break;
                    }
                }
            }
        }
    }
    if let Some(p) = player {
        p.gone.set(true);
        p.ready.notify_one();
    }
    conn.shutdown();
}

async fn write_loop(p: Rc<Player>) {
    let mut batch = Vec::new();
    while !p.gone.get() {
        p.ready.notified().await;
        batch.extend(p.queue.borrow_mut().drain(..));
        if batch.is_empty() {
            continue;
        }
        let (res, emptied) = p.conn.writev_all(std::mem::take(&mut batch)).await;
        batch = emptied;
        batch.clear();
        if res.is_err() {
            p.gone.set(true);
        }
    }
    p.conn.shutdown();
}
