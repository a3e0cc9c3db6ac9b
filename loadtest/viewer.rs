//! One load viewer: real RTMP (handshake, connect, createStream, play, acks) through the
//! crate's client session, reading only media headers and counting bytes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rtmp_edge::media::tag::inspect_video;
use rtmp_edge::protocol::client::{ClientConfig, ClientEvent, ClientSession};

use crate::dial::{dial, Target};
use crate::stats::{Live, SendTimes, ViewerResult};

pub struct ViewerParams {
    pub target: Target,
    pub cfg: ClientConfig,
    pub key: String,
    pub end: Instant,
    /// Stop reading once playing (a stuck player, for slow-viewer tests).
    pub paused: bool,
    pub send_times: Option<Arc<SendTimes>>,
    pub live: Arc<Live>,
    pub latency: Rc<RefCell<Histogram<u64>>>,
}

const STALL: Duration = Duration::from_secs(1);

pub async fn run(p: ViewerParams) -> ViewerResult {
    let mut r = ViewerResult {
        paused: p.paused,
        ..Default::default()
    };
    let start = Instant::now();
    let conn = match dial(&p.target, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => return failed(&p, r, e),
    };
    let mut session = ClientSession::new(p.cfg.clone());
    // Timestamps and frame types are all a load viewer reads; skip copying the rest.
    session.set_media_payload_limit(8);
    session.play(&p.key);
    let mut buf = vec![0u8; 16 * 1024];
    let mut play_sent = None;
    let mut key_at: Option<(Instant, u64)> = None;
    let mut last_media: Option<Instant> = None;
    loop {
        if let Some(out) = session.take_output() {
            if play_sent.is_none() && session.stream_id().is_some() {
                play_sent = Some(Instant::now());
            }
            if let (Err(e), _) = conn.writev_all(vec![out]).await {
                r.error = Some(format!("write: {e}"));
                break;
            }
        }
        if p.paused && r.first_media_ms.is_some() {
            // Hold the socket open without reading until the run ends.
            tokio::time::sleep_until(p.end.into()).await;
            break;
        }
        let read = tokio::time::timeout_at(p.end.into(), conn.read(buf)).await;
        let Ok((res, b)) = read else {
            break; // run over; shutdown below completes the read still in flight
        };
        buf = b;
        let n = match res {
            Ok(0) => {
                r.closed_by_server = true;
                break;
            }
            Ok(n) => n,
            Err(e) => {
                r.error = Some(format!("read: {e}"));
                break;
            }
        };
        p.live.bytes.fetch_add(n as u64, Relaxed);
        if let Err(e) = session.feed(&buf[..n]) {
            r.error = Some(format!("protocol: {e}"));
            break;
        }
        let now = Instant::now();
        while let Some(ev) = session.poll_event() {
            let (ts, video_key) = match ev {
                ClientEvent::Started { .. } => {
                    if !r.connected {
                        r.connected = true;
                        p.live.connected.fetch_add(1, Relaxed);
                    }
                    continue;
                }
                ClientEvent::Failed { code } => {
                    r.error = Some(code);
                    continue;
                }
                ClientEvent::Video { timestamp, payload } => {
                    let info = inspect_video(&payload);
                    (timestamp, info.keyframe)
                }
                ClientEvent::Audio { timestamp, .. } => (timestamp, false),
                _ => continue,
            };
            let since_start = now.duration_since(start).as_secs_f64() * 1000.0;
            r.first_media_ms.get_or_insert(since_start);
            if video_key && r.first_keyframe_ms.is_none() {
                r.first_keyframe_ms = Some(since_start);
            }
            let sent = match (&p.send_times, play_sent) {
                (Some(times), Some(play)) => times.sent_at(ts).filter(|&s| s >= play),
                _ => None,
            };
            // Delivery is measured from the first live keyframe: the cached GOP arrives as
            // a burst that would overstate the steady rate.
            let live_frame = sent.is_some() || p.send_times.is_none();
            if video_key && live_frame && key_at.is_none() {
                key_at = Some((now, session.bytes_received()));
            }
            if let Some(prev) = last_media {
                if now.duration_since(prev) > STALL && key_at.is_some() {
                    r.stalls += 1;
                }
            }
            last_media = Some(now);
            // Latency only for live frames: cached GOP frames were sent before we played.
            if let Some(sent) = sent {
                let us = now.saturating_duration_since(sent).as_micros() as u64;
                let _ = p.latency.borrow_mut().record(us.max(1));
            }
        }
    }
    conn.shutdown();
    r.total_bytes = session.bytes_received();
    if let Some((at, bytes)) = key_at {
        r.bytes_after_key = session.bytes_received() - bytes;
        r.active_secs = Instant::now().min(p.end).duration_since(at).as_secs_f64();
    }
    if r.closed_by_server {
        p.live.closed_early.fetch_add(1, Relaxed);
    }
    if !r.connected {
        p.live.failed.fetch_add(1, Relaxed);
    }
    r
}

fn failed(p: &ViewerParams, mut r: ViewerResult, why: String) -> ViewerResult {
    p.live.failed.fetch_add(1, Relaxed);
    r.error = Some(why);
    r
}
