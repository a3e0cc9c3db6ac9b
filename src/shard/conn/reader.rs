//! The connection's reader: socket bytes into the sans-IO session, with the handshake
//! deadline and the publisher idle timeout, and a publish or play parked while its
//! authorization runs.

use std::time::{Duration, Instant};

use super::{
    ConnCtx, Exit, Role, READ_BUF_PLAYER, READ_BUF_PUBLISHER, READ_BUF_PUBLISHER_MAX,
    READ_BUF_SMALL,
};
use crate::protocol::session::Event;
use crate::shard::stats;

pub(super) async fn read_loop(ctx: &mut ConnCtx, first: Option<Box<Event>>) -> Exit {
    let cfg = &ctx.state.shared.cfg;
    let handshake_timeout = cfg.handshake_timeout;
    // From the accept: an RTMPS connection's TLS handshake spent part of it already. A
    // connection that ends its publish or play (deleteStream) gets a fresh one to start
    // the next.
    let mut handshake_deadline = ctx.tag.since + handshake_timeout;
    let mut had_role = false;
    let publisher_timeout = cfg.publisher_timeout;
    if let Some(ev) = first {
        if let Some(exit) = ctx.on_authorized(*ev) {
            return exit;
        }
        if let Some(exit) = ctx.drain_events() {
            return exit;
        }
    }
    let mut buf = vec![0u8; READ_BUF_SMALL];
    // One timer for the connection's life, re-armed only when it fires early: a publisher's
    // reads (dozens a second) touch no timer at all. It stays parked far ahead while none
    // applies (a player).
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(far.into());
    tokio::pin!(timer);
    let mut armed = far;
    ctx.last_read = Instant::now();
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
        match (&ctx.role, had_role) {
            (Role::None, true) => {
                handshake_deadline = Instant::now() + handshake_timeout;
                had_role = false;
            }
            (Role::None, false) => {}
            _ => had_role = true,
        }
        let deadline = |role: &Role, last_read: Instant| match role {
            Role::None => Some(handshake_deadline),
            Role::Publisher { .. } => Some(last_read + publisher_timeout),
            Role::Player { .. } => None,
        };
        if let Some(d) = deadline(&ctx.role, ctx.last_read) {
            if armed > d {
                timer.as_mut().reset(d.into());
                armed = d;
            }
        }
        let (res, b) = {
            let read = ctx.conn.read(buf);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    // A completed read makes the timer moot: skip polling it.
                    biased;
                    r = &mut read => break r,
                    _ = &mut timer => {
                        // Fired at the deadline it was armed for; the real one may have moved
                        // on since (reads came in): re-arm, the read in flight stays.
                        match deadline(&ctx.role, ctx.last_read) {
                            Some(d) if d <= Instant::now() => {
                                let (what, secs) =
                                    timeout_kind(&ctx.role, handshake_timeout, publisher_timeout);
                                clog!(warn, ctx.tag, timeout_s = secs, "{what} timeout, closing");
                                metrics::counter!("rtmp_timeouts_total", "kind" => what).increment(1);
                                return Exit::Closed;
                            }
                            d => {
                                armed = d.unwrap_or(far);
                                timer.as_mut().reset(armed.into());
                            }
                        }
                    }
                }
            }
        };
        ctx.last_read = Instant::now();
        buf = b;
        let n = match res {
            Ok(0) => return Exit::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Only a TLS connection's read says this: a record that did not decrypt.
                clog!(warn, ctx.tag, error = %e, "TLS record error, closing connection");
                metrics::counter!("rtmp_protocol_errors_total", "kind" => TLS_RECORD_ERROR)
                    .increment(1);
                return Exit::Closed;
            }
            Err(e) => {
                clog!(debug, ctx.tag, error = %e, "read failed");
                return Exit::Closed;
            }
        };
        stats::bump(&ctx.state.stats.ingress_bytes, n as u64);
        let grow = n == buf.len() && matches!(ctx.role, Role::Publisher { .. });
        let fed = ctx.session.feed(&buf[..n]);
        let over = ctx.share.update(ctx.session.buffered());
        // Accepted publishers count in the total but are held to their own cap: the
        // connections closed for it are the ones nobody vouched for yet.
        if let (Err(total), false) = (over, matches!(ctx.role, Role::Publisher { .. })) {
            let limit = ctx.state.shared.cfg.max_buffered_total;
            clog!(
                warn,
                ctx.tag,
                held = ctx.share.held,
                total,
                limit,
                "server-wide buffer budget exceeded by this connection's partial messages, closing"
            );
            metrics::counter!("rtmp_protocol_errors_total", "kind" => BUFFER_BUDGET_SERVER)
                .increment(1);
            return Exit::Closed;
        }
        if let Err(e) = fed {
            clog!(warn, ctx.tag, error = %e, "protocol error, closing connection");
            metrics::counter!("rtmp_protocol_errors_total", "kind" => e.kind()).increment(1);
            ctx.flush();
            return Exit::Closed;
        }
        if let Some(exit) = ctx.drain_events() {
            return exit;
        }
        if grow && buf.len() < READ_BUF_PUBLISHER_MAX {
            buf.resize(buf.len() * 2, 0);
        }
        if ctx.conn.has_pending_output() {
            // TLS answered something while reading (a key update): let the writer send it.
            ctx.queue.wake();
        }
        // Merged reads: let a publisher's bytes gather in the socket until the shard's next
        // read tick, so the read finds them there (no poll to arm) and takes several
        // messages at once, and all publishers' reads leave in one submission.
        if matches!(ctx.role, Role::Publisher { .. }) && !grow {
            ctx.state.await_read_tick_if_busy().await;
        }
    }
}

/// The `rtmp_protocol_errors_total` kind of a TLS record that did not decrypt or parse
/// after the handshake (the session's own kinds are `SessionError::KINDS`).
pub const TLS_RECORD_ERROR: &str = "tls_record";

/// The `rtmp_protocol_errors_total` kind of a connection (not an accepted publisher) closed
/// because all connections' partial messages together passed `--max-buffered-bytes-total`
/// when it added to them.
pub const BUFFER_BUDGET_SERVER: &str = "buffer_budget_server";

/// The `rtmp_timeouts_total` kinds, every one (so they can be exported at 0).
pub const TIMEOUT_KINDS: [&str; 2] = ["handshake/connect", "publisher idle"];

fn timeout_kind(role: &Role, handshake: Duration, publisher: Duration) -> (&'static str, u64) {
    if matches!(role, Role::None) {
        (TIMEOUT_KINDS[0], handshake.as_secs())
    } else {
        (TIMEOUT_KINDS[1], publisher.as_secs())
    }
}
