//! One RTMP connection on a shard: a reader that feeds the sans-IO session and acts on its
//! events, and a writer that drains the connection's queue with vectored writes. A
//! publisher whose stream another shard owns is handed over to that shard, socket and all.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_uring::net::TcpStream;

use super::io::Conn;
use super::state::{PublishError, ShardState, StreamKey};
use super::stats;
use super::{Handoff, ShardMsg};
use crate::auth::{Action, AuthRequest};
use crate::fanout::queue::OutQueue;
use crate::fanout::viewer::Viewer;
use crate::media::frame::MediaKind;
use crate::protocol::session::{Event, ServerSession, SessionConfig};

/// Handshake and connect; then players only send acks and pings, while publishers get a
/// bigger buffer once they publish.
/// Who a log line is about. Every line names the connection, peer, shard and stream key as
/// fields rather than through a tracing span: a span per connection costs the subscriber
/// ~4 KiB, which at 10,000 viewers is most of their memory.
pub struct Tag {
    pub id: u64,
    pub peer: SocketAddr,
    pub shard: usize,
    pub key: std::cell::RefCell<Option<StreamKey>>,
    pub role: std::cell::Cell<ClientRole>,
    pub since: Instant,
    /// flashVer from connect (the API shows it).
    pub agent: std::cell::RefCell<Option<Box<str>>>,
    /// The connection's output; killing it closes the connection (API kicks).
    pub queue: Rc<OutQueue>,
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
}

macro_rules! clog {
    ($lvl:ident, $t:expr, $($arg:tt)+) => {
        tracing::$lvl!(conn = $t.id, peer = %$t.peer, shard = $t.shard, key = &*$t.key(), $($arg)+)
    };
}

const READ_BUF_SMALL: usize = 2 * 1024;
const READ_BUF_PLAYER: usize = 512;
const READ_BUF_PUBLISHER: usize = 64 * 1024;

enum Role {
    None,
    Publisher { key: StreamKey, stream_id: u32 },
    Player { key: StreamKey, slot: usize },
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
}

pub fn accept(state: Rc<ShardState>, stream: TcpStream, peer: SocketAddr) {
    let conn_id = state.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let cfg = &state.shared.cfg;
    let session = ServerSession::new(SessionConfig {
        out_chunk_size: cfg.chunk_size,
        max_message_size: cfg.max_message_size,
        epoch: 0,
        seed: conn_id ^ (peer.port() as u64) << 32 ^ seed_from_clock(),
    });
    metrics::counter!("rtmp_connections_accepted_total").increment(1);
    let queue = Rc::new(OutQueue::new());
    let tag = Rc::new(Tag {
        id: conn_id,
        peer,
        shard: state.id,
        key: Default::default(),
        role: std::cell::Cell::new(ClientRole::Handshake),
        since: Instant::now(),
        agent: Default::default(),
        queue: queue.clone(),
    });
    clog!(debug, tag, "accepted");
    let ctx = ConnCtx {
        conn: Rc::new(Conn::new(stream)),
        queue,
        session,
        role: Role::None,
        tag,
        closing: false,
        pending: None,
        connect_query: None,
        tc_url: None,
        state,
    };
    tokio_uring::spawn(run(ctx, None));
}

/// Takes over a publisher handed from another shard.
pub fn adopt(state: Rc<ShardState>, h: Handoff) {
    let queue = Rc::new(OutQueue::new());
    let tag = Rc::new(Tag {
        id: h.conn_id,
        peer: h.peer,
        shard: state.id,
        key: Default::default(),
        role: std::cell::Cell::new(ClientRole::Handshake),
        since: h.since,
        agent: std::cell::RefCell::new(h.agent),
        queue: queue.clone(),
    });
    clog!(debug, tag, "adopted publisher");
    let ctx = ConnCtx {
        conn: Rc::new(Conn::from_fd(h.fd)),
        queue,
        session: *h.session,
        role: Role::None,
        tag,
        closing: false,
        pending: None,
        connect_query: None,
        tc_url: None,
        state,
    };
    // Authorized on the shard that accepted it.
    let first = Event::Publish {
        stream_id: h.stream_id,
        name: h.name,
        query: h.query,
    };
    tokio_uring::spawn(run(ctx, Some(first)));
}

/// Stream names become map keys and log fields: bound them and keep them printable.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 512 && !name.chars().any(char::is_control)
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Keeps a connection in its shard's client table (API, role gauges) while it runs.
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

async fn run(mut ctx: ConnCtx, first: Option<Event>) {
    // Not a wrapper future around the rest: that would hold a second ConnCtx in every
    // connection's future (~1.4 KB each at 10,000 viewers).
    let _registered = Registered::new(&ctx.state, &ctx.tag);
    let writer = tokio_uring::spawn(write_loop(
        ctx.state.clone(),
        ctx.conn.clone(),
        ctx.queue.clone(),
        ctx.tag.clone(),
    ));
    let exit = read_loop(&mut ctx, first).await;
    ctx.leave_role();
    ctx.queue.close();
    match exit {
        Exit::Migrate {
            owner,
            stream_id,
            name,
            query,
        } => {
            let _ = writer.await;
            let ConnCtx {
                state,
                conn,
                session,
                tag,
                ..
            } = ctx;
            let fd = match Rc::try_unwrap(conn).map(Conn::into_fd) {
                Ok(Ok(fd)) => fd,
                _ => {
                    clog!(warn, tag, "publisher hand-off failed: socket still in use");
                    return;
                }
            };
            clog!(
                debug,
                tag,
                to_shard = owner,
                "handing publisher to owner shard"
            );
            let handoff = Box::new(Handoff {
                fd,
                session: Box::new(session),
                conn_id: tag.id,
                peer: tag.peer,
                since: tag.since,
                agent: tag.agent.borrow_mut().take(),
                stream_id,
                name,
                query,
            });
            if state.shared.senders[owner]
                .send(ShardMsg::Adopt(handoff))
                .await
                .is_err()
            {
                clog!(warn, tag, "owner shard gone; publisher dropped");
            }
        }
        Exit::Closed => {
            // Let queued replies (e.g. a BadName status) go out, but not wait on a dead peer.
            let mut writer = writer;
            if tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .is_err()
            {
                ctx.conn.shutdown();
                let _ = writer.await;
            }
            ctx.conn.shutdown();
            clog!(debug, ctx.tag, "closed");
        }
    }
}

async fn read_loop(ctx: &mut ConnCtx, first: Option<Event>) -> Exit {
    let cfg = &ctx.state.shared.cfg;
    let handshake_secs = cfg.handshake_timeout_secs;
    let handshake_deadline = Instant::now() + Duration::from_secs(handshake_secs);
    let publisher_timeout = Duration::from_secs(cfg.publisher_timeout_secs);
    if let Some(ev) = first {
        if let Some(exit) = ctx.on_authorized(ev) {
            return exit;
        }
        if let Some(exit) = ctx.drain_events() {
            return exit;
        }
    }
    let mut buf = vec![0u8; READ_BUF_SMALL];
    loop {
        // A publish or play waits for its authorization; events behind it wait too.
        while let Some(ev) = ctx.pending.take().map(|b| *b) {
            // Boxed: the authorization future (callback, cache) is large and rare; inline it
            // would grow every connection's future, players included, for their whole life.
            if let Some(exit) = Box::pin(ctx.authorize(ev)).await {
                return exit;
            }
            // A refusal after authorization (e.g. BadName) must reach the client.
            ctx.flush();
            if ctx.closing {
                break;
            }
            if let Some(exit) = ctx.drain_events() {
                return exit;
            }
        }
        if ctx.closing {
            return Exit::Closed;
        }
        match ctx.role {
            Role::Publisher { .. } if buf.len() < READ_BUF_PUBLISHER => {
                buf.resize(READ_BUF_PUBLISHER, 0);
            }
            // Thousands of players each hold a buffer for acks and pings: keep it small.
            Role::Player { .. } if buf.len() > READ_BUF_PLAYER => buf = vec![0u8; READ_BUF_PLAYER],
            _ => {}
        }
        let limit = match ctx.role {
            Role::None => Some(handshake_deadline.saturating_duration_since(Instant::now())),
            Role::Publisher { .. } => Some(publisher_timeout),
            Role::Player { .. } => None,
        };
        let read = ctx.conn.read(buf);
        let (res, b) = match limit {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(r) => r,
                Err(_) => {
                    // Log the configured timeout: `limit` is only what was left of the
                    // handshake deadline for this read (e.g. 1 s of a 2 s timeout).
                    let (what, secs) = if matches!(ctx.role, Role::None) {
                        ("handshake/connect", handshake_secs)
                    } else {
                        ("publisher idle", publisher_timeout.as_secs())
                    };
                    clog!(warn, ctx.tag, timeout_s = secs, "{what} timeout, closing");
                    metrics::counter!("rtmp_timeouts_total", "kind" => what).increment(1);
                    return Exit::Closed;
                }
            },
            None => read.await,
        };
        buf = b;
        let n = match res {
            Ok(0) => return Exit::Closed,
            Ok(n) => n,
            Err(e) => {
                clog!(debug, ctx.tag, error = %e, "read failed");
                return Exit::Closed;
            }
        };
        stats::bump(&ctx.state.stats.ingress_bytes, n as u64);
        if let Err(e) = ctx.session.feed(&buf[..n]) {
            clog!(warn, ctx.tag, error = %e, "protocol error, closing connection");
            metrics::counter!("rtmp_protocol_errors_total", "kind" => e.kind()).increment(1);
            ctx.flush();
            return Exit::Closed;
        }
        if let Some(exit) = ctx.drain_events() {
            return exit;
        }
    }
}

async fn write_loop(state: Rc<ShardState>, conn: Rc<Conn>, queue: Rc<OutQueue>, tag: Rc<Tag>) {
    let stall = Duration::from_secs(state.shared.cfg.write_timeout_secs);
    let mut batch = Vec::new();
    loop {
        queue.wait().await;
        let oldest_ingest = queue.take_into(&mut batch);
        if batch.is_empty() {
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
                Ok((Ok(()), emptied)) => {
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

impl ConnCtx {
    fn flush(&mut self) {
        if let Some(b) = self.session.take_output() {
            self.queue.push(b);
        }
    }

    fn drain_events(&mut self) -> Option<Exit> {
        self.flush();
        while !self.closing && self.pending.is_none() {
            let Some(ev) = self.session.poll_event() else {
                break;
            };
            if let Some(exit) = self.on_event(ev) {
                return Some(exit);
            }
        }
        self.flush();
        None
    }

    fn stream_key(&self, name: &str) -> StreamKey {
        Arc::from(format!("{}/{}", self.session.app(), name))
    }

    fn on_event(&mut self, ev: Event) -> Option<Exit> {
        match ev {
            Event::Connected {
                app,
                tc_url,
                flash_ver,
                query,
            } => {
                clog!(debug, self.tag, %app, tc_url = tc_url.as_deref().unwrap_or("").split('?').next().unwrap_or(""), flash_ver = flash_ver.as_deref().unwrap_or(""), "connect");
                // Client input kept for the connection's life: bounded. Longer queries
                // carry no credentials auth would read (it ignores them past 4 KiB).
                self.connect_query = query
                    .or_else(|| {
                        tc_url
                            .as_deref()
                            .and_then(|u| u.split_once('?'))
                            .map(|(_, q)| q.to_string())
                    })
                    .filter(|q| q.len() <= 4096);
                self.tc_url = tc_url.filter(|u| u.len() <= 1024);
                // Bounded: it is client input kept for the connection's life.
                *self.tag.agent.borrow_mut() =
                    flash_ver.map(|v| v.chars().take(128).collect::<String>().into_boxed_str());
            }
            Event::Publish { .. } | Event::Play { .. } => {
                if matches!(ev, Event::Play { .. }) && matches!(self.role, Role::None) {
                    // Time to first frame counts from the request, authorization included.
                    self.queue.mark_play(Instant::now());
                }
                let action = match ev {
                    Event::Publish { .. } => Action::Publish,
                    _ => Action::Play,
                };
                if self.state.shared.control.auth().is_open(action) {
                    return self.on_authorized(ev);
                }
                self.pending = Some(Box::new(ev));
            }
            Event::Audio { timestamp, payload } => {
                self.ingest(MediaKind::Audio, timestamp, payload)
            }
            Event::Video { timestamp, payload } => {
                self.ingest(MediaKind::Video, timestamp, payload)
            }
            Event::Metadata { timestamp, payload } => {
                self.ingest(MediaKind::Metadata, timestamp, payload)
            }
            Event::Data { timestamp, payload } => self.ingest(MediaKind::Data, timestamp, payload),
            Event::CloseStream { stream_id } => {
                let ours = match &self.role {
                    Role::Publisher { stream_id: s, .. } => *s == stream_id,
                    Role::Player { .. } => true,
                    Role::None => false,
                };
                if ours {
                    self.leave_role();
                }
            }
            Event::ReceiveAudio(on) | Event::ReceiveVideo(on) => {
                if let Role::Player { key, slot } = &self.role {
                    let audio = matches!(ev, Event::ReceiveAudio(_));
                    self.state.with_viewer(key, *slot, |v| {
                        if audio {
                            v.receive_audio = on;
                        } else {
                            v.receive_video = on;
                        }
                    });
                }
            }
        }
        None
    }

    /// Runs the authorization of a publish or play, then acts on it or refuses it.
    async fn authorize(&mut self, ev: Event) -> Option<Exit> {
        let (action, stream_id, name, query) = match &ev {
            Event::Publish {
                stream_id,
                name,
                query,
            } => (Action::Publish, *stream_id, name, query),
            Event::Play {
                stream_id,
                name,
                query,
                ..
            } => (Action::Play, *stream_id, name, query),
            _ => return self.on_event(ev),
        };
        let req = AuthRequest {
            action,
            app: self.session.app().to_string(),
            name: name.clone(),
            query: query.clone(),
            connect_query: self.connect_query.clone(),
            tc_url: self.tc_url.clone(),
            peer: self.tag.peer,
            conn_id: self.tag.id,
        };
        let key = self.stream_key(name);
        let auth = self.state.shared.control.auth();
        let reason = match auth.check(req).await {
            Ok(()) => return self.on_authorized(ev),
            Err(reason) => reason,
        };
        // Only now: an allowed request sets the key when it starts (it may still be refused,
        // e.g. a second play on a connection that already plays another stream).
        *self.tag.key.borrow_mut() = Some(key);
        clog!(
            warn,
            self.tag,
            action = action.label(),
            reason = reason.label(),
            "{} refused: unauthorized",
            action.label()
        );
        metrics::counter!("rtmp_auth_denied_total", "action" => action.label(), "reason" => reason.label())
            .increment(1);
        match action {
            Action::Publish => {
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "unauthorized")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.Unauthorized",
                    "Not authorized to publish this stream.",
                );
            }
            Action::Play => {
                metrics::counter!("rtmp_play_rejects_total", "reason" => "unauthorized")
                    .increment(1);
                self.session.reject_play(
                    stream_id,
                    "NetStream.Play.Failed",
                    "Not authorized to play this stream.",
                );
            }
        }
        self.flush();
        self.closing = true;
        None
    }

    /// A publish or play that passed authorization (or needed none).
    fn on_authorized(&mut self, ev: Event) -> Option<Exit> {
        match ev {
            Event::Publish {
                stream_id,
                name,
                query,
            } => self.on_publish(stream_id, name, query),
            Event::Play {
                stream_id,
                name,
                reset,
                ..
            } => {
                self.on_play(stream_id, name, reset);
                None
            }
            other => self.on_event(other),
        }
    }

    fn on_publish(&mut self, stream_id: u32, name: String, query: Option<String>) -> Option<Exit> {
        if !valid_name(&name) || !matches!(self.role, Role::None) {
            clog!(
                warn,
                self.tag,
                name_len = name.len(),
                "publish refused: bad name or connection already in use"
            );
            self.session
                .reject_publish(stream_id, "NetStream.Publish.BadName", "Bad stream name.");
            self.closing = true;
            return None;
        }
        let key = self.stream_key(&name);
        *self.tag.key.borrow_mut() = Some(key.clone());
        let owner = self.state.owner_of(&key);
        if owner != self.state.id {
            return Some(Exit::Migrate {
                owner,
                stream_id,
                name,
                query,
            });
        }
        match self.state.start_publish(&key, self.tag.id) {
            Ok(()) => {
                clog!(info, self.tag, "publish started");
                self.tag.role.set(ClientRole::Publisher);
                metrics::counter!("rtmp_publishes_total").increment(1);
                self.session.accept_publish(stream_id, &name);
                self.role = Role::Publisher { key, stream_id };
            }
            Err(PublishError::BadName) => {
                clog!(
                    warn,
                    self.tag,
                    "publish refused: stream already has a publisher"
                );
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "bad_name")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.BadName",
                    &format!("{name} is already being published."),
                );
                self.closing = true;
            }
        }
        None
    }

    fn on_play(&mut self, stream_id: u32, name: String, reset: bool) {
        if !valid_name(&name) || !matches!(self.role, Role::None) {
            clog!(
                warn,
                self.tag,
                name_len = name.len(),
                "play refused: bad name or connection already in use"
            );
            metrics::counter!("rtmp_play_rejects_total", "reason" => "bad_name").increment(1);
            self.session.reject_play(
                stream_id,
                "NetStream.Play.StreamNotFound",
                "No such stream.",
            );
            return;
        }
        let key = self.stream_key(&name);
        *self.tag.key.borrow_mut() = Some(key.clone());
        self.session.accept_play(stream_id, &name, reset);
        // The play preamble must be queued before the media the mirror pushes next.
        self.flush();
        let viewer = Viewer::new(
            self.queue.clone(),
            stream_id,
            name,
            self.session.out_chunk_size(),
            self.state.viewer_policy,
        );
        if !self.state.shared.cfg.player_nodelay() {
            self.conn.set_nodelay(false);
        }
        let slot = self.state.add_viewer(&key, viewer);
        clog!(info, self.tag, "play started");
        self.tag.role.set(ClientRole::Player);
        metrics::counter!("rtmp_plays_total").increment(1);
        self.role = Role::Player { key, slot };
    }

    fn ingest(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        if let Role::Publisher { key, .. } = &self.role {
            self.state.publish_frame(key, kind, timestamp, payload);
        }
    }

    fn leave_role(&mut self) {
        self.tag.role.set(ClientRole::Handshake);
        match std::mem::replace(&mut self.role, Role::None) {
            Role::Publisher { key, .. } => {
                clog!(info, self.tag, "publish ended");
                self.state.end_publish(&key, self.tag.id);
            }
            Role::Player { key, slot } => {
                clog!(debug, self.tag, "play ended");
                self.state.remove_viewer(&key, slot);
            }
            Role::None => {}
        }
    }
}
