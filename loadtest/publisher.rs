//! One load publisher: publishes over real RTMP and paces messages in real time from their
//! timestamps, recording when each timestamp went to the socket.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtmp_edge::protocol::client::{ClientConfig, ClientEvent, ClientSession};
use rtmp_edge::protocol::message as msg;
use rtmp_edge::shard::io::Conn;

use crate::dial::{dial, Target};
use crate::source::Source;
use crate::stats::{Live, SendTimes};

#[derive(Debug, Default, Clone)]
pub struct PublisherResult {
    pub key: String,
    pub error: Option<String>,
    pub payload_bytes: u64,
    pub seconds: f64,
}

pub async fn run(
    target: Target,
    cfg: ClientConfig,
    key: String,
    mut source: Source,
    times: Arc<SendTimes>,
    live: Arc<Live>,
    end: Instant,
) -> PublisherResult {
    let mut r = PublisherResult {
        key: key.clone(),
        ..Default::default()
    };
    let conn = match dial(&target, Duration::from_secs(10)).await {
        Ok(c) => Rc::new(c),
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let mut s = ClientSession::new(cfg);
    s.publish(&key);
    if let Err(e) = start(&conn, &mut s).await {
        r.error = Some(e);
        return r;
    }
    // Keep reading (acks) so the server never blocks on us; nothing in it matters here.
    let reader = conn.clone();
    tokio_uring::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (res, b) = reader.read(buf).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
    });
    let t0 = Instant::now();
    let mut first_ts = None;
    loop {
        let item = source.next_item();
        let base = *first_ts.get_or_insert(item.timestamp);
        let due = t0 + Duration::from_millis(u64::from(item.timestamp.wrapping_sub(base)));
        if due >= end {
            break;
        }
        if due > Instant::now() {
            if let Err(e) = flush(&conn, &mut s).await {
                r.error = Some(e);
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        r.payload_bytes += item.payload.len() as u64;
        live.published_bytes
            .fetch_add(item.payload.len() as u64, Relaxed);
        if item.type_id == msg::DATA_AMF0 {
            s.send_metadata(item.timestamp, &item.payload);
        } else {
            s.send_media(item.type_id, item.timestamp, item.payload);
        }
        times.record(item.timestamp, Instant::now());
    }
    let _ = flush(&conn, &mut s).await;
    r.seconds = t0.elapsed().as_secs_f64();
    conn.shutdown();
    r
}

async fn flush(conn: &Conn, s: &mut ClientSession) -> Result<(), String> {
    match s.take_output() {
        Some(out) => conn
            .writev_all(vec![out])
            .await
            .0
            .map_err(|e| format!("write: {e}")),
        None => Ok(()),
    }
}

/// Handshake, connect and publish, until Publish.Start (or a refusal), within 10 s.
async fn start(conn: &Conn, s: &mut ClientSession) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 8192];
    loop {
        flush(conn, s).await?;
        let (res, b) = tokio::time::timeout_at(deadline.into(), conn.read(buf))
            .await
            .map_err(|_| {
                conn.shutdown();
                "publish start timeout".to_string()
            })?;
        buf = b;
        let n = res.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before Publish.Start".into());
        }
        s.feed(&buf[..n]).map_err(|e| e.to_string())?;
        while let Some(ev) = s.poll_event() {
            match ev {
                ClientEvent::Started { .. } => {
                    flush(conn, s).await?;
                    return Ok(());
                }
                ClientEvent::Failed { code } => return Err(code),
                _ => {}
            }
        }
    }
}
