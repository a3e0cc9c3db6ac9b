//! One RTMP connection on a shard. `reader` feeds the sans-IO session with what the socket
//! gives, `handler` decides what each session event means (publish, play, refuse, hand
//! over), `writer` drains the connection's queue with vectored writes, and `handoff` moves
//! a publisher to the shard that owns its stream, socket and all.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_uring::net::TcpStream;

use super::io::Conn;
use super::state::{ShardState, StreamKey};
use super::transmission::Handoff;
use crate::fanout::queue::OutQueue;
use crate::protocol::session::{Event, ServerSession, SessionConfig};
use crate::tls::TlsInfo;

/// Logs with the connection's id, peer, shard and stream key as fields rather than through
/// a tracing span: a span per connection costs the subscriber ~4 KiB, which at 10,000
/// viewers is most of their memory.
macro_rules! clog {
    ($lvl:ident, $t:expr, $($arg:tt)+) => {
        tracing::$lvl!(conn = $t.id, peer = %$t.peer, shard = $t.shard, key = &*$t.key(), $($arg)+)
    };
}

mod budget;
mod handler;
mod handoff;
mod reader;
mod writer;

use budget::BufferShare;
pub use budget::{take_released, ConnSlot, REFUSE_REASONS};

pub use handler::REJECT_REASONS;
pub use reader::{BUFFER_BUDGET_SERVER, TIMEOUT_KINDS, TLS_RECORD_ERROR};
pub use writer::sweep_stalled_writes;

/// Who a connection is, for log lines, the API and the shutdown.
pub struct Tag {
    pub id: u64,
    pub peer: SocketAddr,
    pub shard: usize,
    pub key: RefCell<Option<StreamKey>>,
    pub role: Cell<ClientRole>,
    pub since: Instant,
    /// flashVer from connect (the API shows it).
    pub agent: RefCell<Option<Box<str>>>,
    /// The connection's output; killing it closes the connection (API kicks).
    pub queue: Rc<OutQueue>,
    /// The socket, for `end_reads`; valid while the tag is in the shard's client table.
    fd: RawFd,
    /// What the TLS handshake agreed on (RTMPS connections).
    pub tls: RefCell<Option<Box<TlsInfo>>>,
}

/// What a connection is doing, for the API and the per-role gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// Handshake and connect, not yet publishing or playing.
    Handshake = 0,
    Publisher = 1,
    Player = 2,
}

impl ClientRole {
    pub const ALL: [ClientRole; 3] = [Self::Handshake, Self::Publisher, Self::Player];

    pub fn label(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Publisher => "publisher",
            Self::Player => "player",
        }
    }
}

impl Tag {
    fn key(&self) -> StreamKey {
        self.key.borrow().clone().unwrap_or_else(|| Arc::from(""))
    }

    /// Shutdown: the reader sees end-of-stream and the connection closes the usual way,
    /// after its queued bytes (an UnpublishNotify) are written. Writes still work.
    pub fn end_reads(&self) {
        // SAFETY: shutdown(2) on the connection's socket, which stays open while the tag
        // is registered (the tag leaves the client table before the socket closes).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }
}

/// Handshake and connect get a small buffer; players only send acks and pings, while
/// publishers get a bigger one once they publish, doubled (up to the max) each time a read
/// fills it: a 1 Mbit/s camera reads ~2 KB at a time, and an origin holds thousands.
const READ_BUF_SMALL: usize = 2 * 1024;
const READ_BUF_PLAYER: usize = 512;
const READ_BUF_PUBLISHER: usize = 16 * 1024;
const READ_BUF_PUBLISHER_MAX: usize = 256 * 1024;

enum Role {
    None,
    Publisher {
        key: StreamKey,
        stream_id: u32,
        /// FCUnpublish named this stream: a publish that follows restarts the broadcast.
        released: bool,
    },
    Player {
        key: StreamKey,
        slot: usize,
    },
}

/// Why the reader stopped.
enum Exit {
    Closed,
    /// Hand the publisher to its stream's owner shard.
    Migrate {
        owner: usize,
        stream_id: u32,
        name: String,
        query: Option<String>,
    },
}

struct ConnCtx {
    state: Rc<ShardState>,
    conn: Rc<Conn>,
    queue: Rc<OutQueue>,
    session: ServerSession,
    role: Role,
    tag: Rc<Tag>,
    /// Set when the connection must close after its queued replies are written.
    closing: bool,
    /// A publish or play waiting for authorization (the rest of the session's events wait
    /// behind it).
    pending: Option<Box<Event>>,
    /// From `connect`, for authorization.
    connect_query: Option<String>,
    tc_url: Option<String>,
    /// This connection's part of the server-wide buffered bytes.
    share: BufferShare,
    /// Its place under the connection limits.
    slot: ConnSlot,
    /// When the reader last got bytes: the publisher idle timeout counts from it, and the
    /// frames of that read carry it as their ingest time.
    last_read: Instant,
}

impl ConnCtx {
    fn new(
        state: Rc<ShardState>,
        conn: Conn,
        session: ServerSession,
        tag: Tag,
        slot: ConnSlot,
    ) -> Self {
        let tag = Rc::new(tag);
        let share = BufferShare {
            shared: state.shared.clone(),
            held: 0,
        };
        Self {
            state,
            conn: Rc::new(conn),
            queue: tag.queue.clone(),
            session,
            role: Role::None,
            tag,
            closing: false,
            pending: None,
            connect_query: None,
            tc_url: None,
            share,
            slot,
            last_read: Instant::now(),
        }
    }
}

/// A connection the listener accepted; `tls` when it came in on the RTMPS port.
pub fn accept(
    state: Rc<ShardState>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    slot: ConnSlot,
) {
    let conn_id = state.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let cfg = &state.shared.cfg;
    let session = ServerSession::new(SessionConfig {
        out_chunk_size: cfg.chunk_size,
        max_message_size: cfg.max_message_size,
        preauth_buffer: cfg.preauth_buffer,
        epoch: 0,
        seed: conn_id ^ (peer.port() as u64) << 32 ^ seed_from_clock(),
    });
    metrics::counter!("rtmp_connections_accepted_total").increment(1);
    let tag = Tag {
        id: conn_id,
        peer,
        shard: state.id,
        key: Default::default(),
        role: Cell::new(ClientRole::Handshake),
        since: Instant::now(),
        agent: Default::default(),
        queue: Rc::new(OutQueue::new()),
        fd: stream.as_raw_fd(),
        tls: Default::default(),
    };
    let conn = if tls {
        let acceptor = cfg.tls.as_ref().map(|t| t.acceptor.session());
        match acceptor {
            Some(Ok(session)) => Conn::with_tls(stream, session),
            Some(Err(e)) => {
                clog!(error, tag, error = %e, "TLS session could not start, closing");
                return;
            }
            None => return, // a TLS listener exists only with TLS settings
        }
    } else {
        Conn::new(stream)
    };
    clog!(debug, tag, tls, "accepted");
    let ctx = ConnCtx::new(state.clone(), conn, session, tag, slot);
    state.tasks.spawn(run(ctx, None));
}

/// Takes over a publisher handed from another shard.
pub fn adopt(state: Rc<ShardState>, h: Handoff) {
    let conn = Conn::from_fd(h.fd, h.tls);
    let tag = Tag {
        id: h.conn_id,
        peer: h.peer,
        shard: state.id,
        key: Default::default(),
        role: Cell::new(ClientRole::Handshake),
        since: h.since,
        agent: RefCell::new(h.agent),
        queue: Rc::new(OutQueue::new()),
        fd: conn.raw_fd(),
        tls: RefCell::new(conn.tls_info().map(Box::new)),
    };
    clog!(debug, tag, "adopted publisher");
    let ctx = ConnCtx::new(state.clone(), conn, *h.session, tag, h.slot);
    // Authorized on the shard that accepted it.
    let first = Event::Publish {
        stream_id: h.stream_id,
        name: h.name,
        query: h.query,
    };
    state.tasks.spawn(run(ctx, Some(Box::new(first))));
}

/// The TLS handshake of an RTMPS connection, within the handshake deadline. Nothing else
/// reads or writes until it ends (the writer starts after).
async fn tls_accept(ctx: &ConnCtx) -> bool {
    let deadline = ctx.tag.since + ctx.state.shared.cfg.handshake_timeout;
    let result = tokio::time::timeout_at(deadline.into(), ctx.conn.tls_handshake()).await;
    let reason = match result {
        Ok(Ok(())) => {
            let info = ctx.conn.tls_info();
            if let Some(i) = &info {
                clog!(debug, ctx.tag, version = i.version, cipher = i.cipher, sni = ?i.sni, "TLS established");
                metrics::counter!("rtmp_tls_handshakes_total", "version" => i.version, "cipher" => i.cipher)
                    .increment(1);
            }
            *ctx.tag.tls.borrow_mut() = info.map(Box::new);
            return true;
        }
        Ok(Err(e)) => {
            clog!(warn, ctx.tag, reason = e.reason(), error = %e, "TLS handshake failed, closing");
            e.reason()
        }
        Err(_) => {
            let secs = ctx.state.shared.cfg.handshake_timeout.as_secs();
            clog!(
                warn,
                ctx.tag,
                reason = "timeout",
                timeout_s = secs,
                "TLS handshake failed, closing"
            );
            "timeout"
        }
    };
    // A shutdown ends handshakes in progress; that is no failure of theirs.
    if !ctx.state.tasks.is_stopping() {
        metrics::counter!("rtmp_tls_handshake_failures_total", "reason" => reason).increment(1);
    }
    false
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Keeps a connection in its shard's client table (API, role gauges, shutdown) while it
/// runs.
struct Registered {
    state: Rc<ShardState>,
    id: u64,
}

impl Registered {
    fn new(state: &Rc<ShardState>, tag: &Rc<Tag>) -> Self {
        state.clients.borrow_mut().insert(tag.id, tag.clone());
        Self {
            state: state.clone(),
            id: tag.id,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.clients.borrow_mut().remove(&self.id);
    }
}

/// A connection's life. A block, not an `async fn`: an `async fn` moves its parameters
/// into locals that sit beside the captured originals in its future, which held every
/// connection's `ConnCtx` twice (~0.6 KB per viewer). `first` is boxed for the same
/// reason: only a handed-over publisher has one.
#[allow(clippy::manual_async_fn)] // the point: see above
fn run(mut ctx: ConnCtx, first: Option<Box<Event>>) -> impl std::future::Future<Output = ()> {
    async move {
        // A local, so it drops before `ctx` (captured): the tag leaves the client table
        // before the socket closes, which `Tag::end_reads` relies on.
        let _registered = Registered::new(&ctx.state, &ctx.tag);
        if let Exit::Migrate {
            owner,
            stream_id,
            name,
            query,
        } = serve(&mut ctx, first).await
        {
            handoff::migrate(ctx, owner, stream_id, name, query);
        }
    }
}

/// Serves the connection until it closes, or until its publisher is to move to the
/// stream's owner shard (the reader stopped and the writer drained).
async fn serve(ctx: &mut ConnCtx, first: Option<Box<Event>>) -> Exit {
    if ctx.state.tasks.is_stopping() {
        // Adopted or accepted while shutting down: nothing to serve.
        ctx.conn.shutdown();
        return Exit::Closed;
    }
    if first.is_none() && ctx.conn.is_tls() && !tls_accept(ctx).await {
        ctx.conn.shutdown();
        return Exit::Closed;
    }
    let writer = ctx.state.tasks.spawn(writer::write_loop(
        ctx.state.clone(),
        ctx.conn.clone(),
        ctx.queue.clone(),
        ctx.tag.clone(),
    ));
    let exit = reader::read_loop(ctx, first).await;
    let why = if ctx.state.tasks.is_stopping() {
        "shutdown"
    } else {
        "disconnect"
    };
    ctx.leave_role(why);
    ctx.queue.close();
    match exit {
        Exit::Migrate { .. } => {
            let _ = writer.await;
        }
        Exit::Closed => {
            // Let queued replies (a BadName status, an UnpublishNotify) go out, but not
            // wait on a dead peer.
            let mut writer = writer;
            if tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .is_err()
            {
                ctx.conn.shutdown();
                let _ = writer.await;
            } else if !ctx.queue.is_killed() {
                // RTMPS: end with close_notify, so the peer sees a clean TLS close.
                ctx.conn.close_notify().await;
            }
            ctx.conn.shutdown();
            clog!(debug, ctx.tag, "closed");
        }
    }
    exit
}
