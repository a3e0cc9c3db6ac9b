//! One push destination's outbound session, on the stream's owner shard: connect, publish,
//! stream what the sink queued, and on failure back off (capped, jittered) and reconnect
//! with metadata and sequence headers replayed and video resuming at a keyframe. Ends
//! with FCUnpublish/deleteStream when the grace period after the source left runs out, or
//! at once when the destination is removed or the server shuts down.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::warn;

use super::config::{Destination, PushPolicy};
use super::sink::{Link, PushState};
use crate::fanout::admission::queue_len;
use crate::media::frame::{MediaKind, SharedFrame};
use crate::protocol::client::{ClientConfig, ClientEvent, ClientSession};
use crate::protocol::message as msg;
use crate::relay::RelayError;
use crate::shard::hooks::SinkFinished;
use crate::shard::io::Conn;
use crate::shard::state::StreamKey;
use crate::shard::tasks::TaskRegistry;
use crate::util::backoff;

enum Ended {
    /// The grace period ran out with no publisher (or the sink was stopped): the
    /// broadcast is over.
    Grace,
}

pub(super) async fn run(
    tasks: Rc<TaskRegistry>,
    finished: SinkFinished,
    link: Rc<Link>,
    dest: Destination,
    dest_key: String,
    stream: StreamKey,
    policy: PushPolicy,
) {
    let label = dest.label();
    let mut attempt = 0u32;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    loop {
        if link.grace_over(policy.grace) {
            break;
        }
        link.set_state(PushState::Connecting, &label, &stream);
        match session(
            &tasks,
            &link,
            &dest,
            &dest_key,
            &stream,
            policy,
            &mut attempt,
        )
        .await
        {
            Ok(Ended::Grace) => break,
            Err(e) => {
                warn!(stream = &*stream, dest = %label, error = %e, "push destination failed");
                *link.last_error.borrow_mut() = Some(e.to_string());
                link.reconnects.set(link.reconnects.get() + 1);
                link.m_reconnects.increment(1);
                link.set_state(PushState::BackingOff, &label, &stream);
                let delay = backoff(attempt, policy.backoff_base, policy.backoff_cap, seed);
                attempt = attempt.saturating_add(1);
                // While waiting, frames keep arriving: keep only what a reconnect resumes
                // from. A removed destination stops waiting at once.
                let until = Instant::now() + delay;
                while Instant::now() < until && !link.grace_over(policy.grace) {
                    // Wake at the end of a grace period that runs out mid-wait, too.
                    let wake = link
                        .unpublished_at
                        .get()
                        .map_or(until, |t| (t + policy.grace).min(until));
                    let _ = tokio::time::timeout_at(wake.into(), link.notify.notified()).await;
                }
                drain_to_keyframe(&link);
            }
        }
    }
    link.set_state(PushState::Finished, &label, &stream);
    link.queue.borrow_mut().clear();
    link.queued_bytes.set(0);
    link.export_latency();
    link.log_stats(&label, &stream);
    // Nothing else drops a finished sink before the key is published again (most never
    // are): each would keep ~170 KiB (its latency histogram) and the stream's entry.
    finished.done();
}

/// After a gap the receiver needs a keyframe first: drop queued frames before the last one.
fn drain_to_keyframe(link: &Link) {
    let mut q = link.queue.borrow_mut();
    let last_key = q.iter().rposition(|f| f.is_video_keyframe());
    let drop_n = match last_key {
        Some(i) => i,
        None => {
            link.admission.borrow_mut().wait_for_keyframe();
            q.len()
        }
    };
    let dropped: usize = q.drain(..drop_n).map(|f| queue_len(&f)).sum();
    link.queued_bytes.set(link.queued_bytes.get() - dropped);
}

async fn session(
    tasks: &Rc<TaskRegistry>,
    link: &Rc<Link>,
    dest: &Destination,
    dest_key: &str,
    stream: &str,
    policy: PushPolicy,
    attempt: &mut u32,
) -> Result<Ended, RelayError> {
    // Removed or shut down while connecting (a dropped SYN, a slow lookup): give up now.
    let conn = tokio::select! {
        c = super::super::connect(&dest.url, policy.connect_timeout, Some(&dest.trust)) => Rc::new(c?),
        _ = ending(link, policy.grace) => return Ok(Ended::Grace),
    };
    let mut cfg = ClientConfig::new(&dest.url.app, &dest.url.tc_url());
    cfg.flash_ver = "FMLE/3.0 (compatible; rtmp-edge)".into();
    let s = Rc::new(RefCell::new(ClientSession::new(cfg)));
    s.borrow_mut().publish(dest_key);
    let result = publish_and_stream(tasks, link, &conn, &s, dest, stream, policy, attempt).await;
    conn.shutdown();
    result
}

async fn flush(conn: &Conn, s: &RefCell<ClientSession>, stall: Duration) -> Result<(), RelayError> {
    let Some(b) = s.borrow_mut().take_output() else {
        return Ok(());
    };
    // A destination that stops reading (frozen, or gone without a reset) never fails a
    // write: it would stay "live" forever while its frames drop. Treat it as dead.
    match tokio::time::timeout(stall, conn.writev_all(vec![b])).await {
        Ok((res, _)) => res.map_err(RelayError::Write),
        Err(_) => Err(RelayError::WriteStalled(stall.as_secs())),
    }
}

/// Resolves once the session should end (grace over, or stopped).
async fn ending(link: &Link, grace: Duration) {
    while !link.grace_over(grace) {
        let _ = tokio::time::timeout(Duration::from_millis(500), link.notify.notified()).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_and_stream(
    tasks: &Rc<TaskRegistry>,
    link: &Rc<Link>,
    conn: &Rc<Conn>,
    s: &Rc<RefCell<ClientSession>>,
    dest: &Destination,
    stream: &str,
    policy: PushPolicy,
    attempt: &mut u32,
) -> Result<Ended, RelayError> {
    // Handshake, connect, publish: until Publish.Start or a refusal.
    let deadline = Instant::now() + policy.connect_timeout;
    let mut buf = vec![0u8; 8192];
    'start: loop {
        flush(conn, s, policy.write_timeout).await?;
        // Not published yet: nothing to unpublish if the session ends meanwhile.
        let (res, b) = tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), conn.read(buf)) => {
                r.map_err(|_| RelayError::StartTimeout)?
            }
            _ = ending(link, policy.grace) => return Ok(Ended::Grace),
        };
        buf = b;
        let n = res.map_err(RelayError::Read)?;
        if n == 0 {
            return Err(RelayError::ClosedBeforeStart);
        }
        s.borrow_mut().feed(&buf[..n])?;
        while let Some(ev) = s.borrow_mut().poll_event() {
            match ev {
                ClientEvent::Started { .. } => break 'start,
                ClientEvent::Failed { code } => return Err(RelayError::Refused(code)),
                _ => {}
            }
        }
    }
    let label = dest.label();
    link.set_state(PushState::Live, &label, stream);
    *attempt = 0;

    // The destination may ping or ack; a reader keeps the session fed and answers.
    let closed = Rc::new(Cell::new(false));
    let reader = {
        let (conn, s, closed, link) = (conn.clone(), s.clone(), closed.clone(), link.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (res, b) = conn.read(buf).await;
                buf = b;
                let ok = match res {
                    Ok(n) if n > 0 => s.borrow_mut().feed(&buf[..n]).is_ok(),
                    _ => false,
                };
                if !ok {
                    closed.set(true);
                    link.notify.notify_one();
                    return;
                }
                link.notify.notify_one(); // a pong may be waiting to go out
            }
        })
    };

    // A (re)connected receiver starts from metadata, sequence headers and a keyframe.
    replay_config(link, s);
    let mut last_stats = Instant::now();
    let mut last_export = Instant::now();
    let result = loop {
        if closed.get() {
            break Err(RelayError::ClosedByDestination);
        }
        if link.grace_over(policy.grace) {
            let sid = s.borrow().stream_id().unwrap_or(1);
            s.borrow_mut().unpublish(sid);
            let _ = flush(conn, s, policy.write_timeout).await;
            break Ok(Ended::Grace);
        }
        let frames: Vec<SharedFrame> = {
            let mut q = link.queue.borrow_mut();
            link.queued_bytes.set(0);
            q.drain(..).collect()
        };
        if !frames.is_empty() {
            let now = Instant::now();
            let mut sb = s.borrow_mut();
            for f in &frames {
                send_frame(&mut sb, f);
                crate::util::histogram::record(
                    &mut link.latency.borrow_mut(),
                    now.duration_since(f.ingest),
                );
                link.bytes.set(link.bytes.get() + f.payload.len() as u64);
                link.m_bytes.increment(f.payload.len() as u64);
            }
            link.frames.set(link.frames.get() + frames.len() as u64);
        }
        if last_export.elapsed() >= Duration::from_secs(1) {
            link.export_latency();
            last_export = Instant::now();
        }
        if let Err(e) = flush(conn, s, policy.write_timeout).await {
            break Err(e);
        }
        if last_stats.elapsed() >= policy.stats_interval {
            link.export_latency();
            link.log_stats(&label, stream);
            last_stats = Instant::now();
        }
        // Wake for frames, a pong, a close, or to check the grace period.
        let _ = tokio::time::timeout(Duration::from_millis(500), link.notify.notified()).await;
    };
    conn.close_notify().await;
    conn.shutdown();
    let _ = reader.await;
    result
}

fn send_frame(s: &mut ClientSession, f: &SharedFrame) {
    match f.kind {
        MediaKind::Audio => s.send_media(msg::AUDIO, f.timestamp, f.payload.clone()),
        MediaKind::Video => s.send_media(msg::VIDEO, f.timestamp, f.payload.clone()),
        MediaKind::Metadata => s.send_metadata(f.timestamp, &f.payload),
        MediaKind::Data => s.send_media(msg::DATA_AMF0, f.timestamp, f.payload.clone()),
    }
}

/// Sends the cached metadata and decoder configuration, stamped at the first frame about
/// to follow, and makes video resume at a keyframe.
fn replay_config(link: &Link, s: &RefCell<ClientSession>) {
    drain_to_keyframe(link);
    let first_ts = link.queue.borrow().front().map(|f| f.timestamp);
    let cache = link.config.borrow();
    let ts = first_ts.unwrap_or_else(|| {
        cache
            .config_frames()
            .iter()
            .map(|f| f.timestamp)
            .max()
            .unwrap_or(0)
    });
    let mut sb = s.borrow_mut();
    if let Some(m) = cache.metadata() {
        sb.send_metadata(ts, &m.payload);
    }
    for f in cache.config_frames() {
        let type_id = if f.kind == MediaKind::Audio {
            msg::AUDIO
        } else {
            msg::VIDEO
        };
        sb.send_media(type_id, ts, Bytes::clone(&f.payload));
    }
    // Config frames still queued would be sent twice; harmless, decoders take the latest.
}
