//! HTTP viewers of the media listener. HTTP-FLV viewers (`--flv-viewers`) read one
//! chunked response and count its bytes. HLS viewers (`--hls-viewers`): each keeps one HTTP/1.1 connection to the media listener,
//! loads the multivariant and media playlists and the init segment, then follows the live
//! edge: with `--hls-low-latency` by blocking reloads (`_HLS_msn`/`_HLS_part`) and every
//! part, otherwise by polling the playlist and fetching whole segments. It measures what a
//! player would feel: delivery, stalls, request latency, and live-edge latency (now
//! against the PROGRAM-DATE-TIME of the newest media received).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// One media playlist, as far as a viewer needs it.
#[derive(Debug, Default)]
struct Playlist {
    target_secs: f64,
    map: Option<String>,
    /// (msn, part index or None for a whole segment, URI, wall ms of its end)
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    msn: u64,
    part: Option<usize>,
    uri: String,
    end_wall_ms: f64,
}

fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    // YYYY-MM-DDTHH:MM:SS.mmmZ
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let ms = if b.get(19) == Some(&b'.') {
        n(20..23).unwrap_or(0)
    } else {
        0
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000 + ms) as f64)
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    rest.split(',')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

fn parse(text: &str) -> Playlist {
    let mut p = Playlist::default();
    let mut msn = 0u64;
    let mut part = 0usize;
    let mut wall: Option<f64> = None;
    let mut extinf = 0.0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_secs = v.parse().unwrap_or(2.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            msn += attr(&format!("X:{v}"), "SKIPPED-SEGMENTS")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        } else if line.starts_with("#EXT-X-MAP:") {
            p.map = attr(line, "URI").map(str::to_string);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            wall = parse_rfc3339_ms(v);
        } else if line.starts_with("#EXT-X-PART:") {
            let dur: f64 = attr(line, "DURATION")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0.0);
            let end = wall.map_or(0.0, |w| w + dur * 1000.0);
            wall = wall.map(|w| w + dur * 1000.0);
            if let Some(uri) = attr(line, "URI") {
                p.entries.push(Entry {
                    msn,
                    part: Some(part),
                    uri: uri.to_string(),
                    end_wall_ms: end,
                });
            }
            part += 1;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = v.trim_end_matches(',').parse().unwrap_or(0.0);
        } else if !line.starts_with('#') && !line.is_empty() {
            // The segment's PDT was its start; parts (if listed) moved `wall` to its end.
            let end = if part > 0 {
                wall.unwrap_or(0.0)
            } else {
                wall.map_or(0.0, |w| w + extinf * 1000.0)
            };
            p.entries.push(Entry {
                msn,
                part: None,
                uri: line.to_string(),
                end_wall_ms: end,
            });
            msn += 1;
            part = 0;
            wall = None;
        }
    }
    p
}

/// What one HLS viewer measured.
#[derive(Debug, Default, Clone)]
pub struct HlsResult {
    pub connected: bool,
    pub error: Option<String>,
    pub first_media_ms: Option<f64>,
    pub bytes: u64,
    pub active_secs: f64,
    pub stalls: u64,
    pub requests: u64,
    pub request_ms: Vec<f64>,
    pub edge_latency_ms: Vec<f64>,
}

pub struct HlsParams {
    pub addr: SocketAddr,
    /// `/app/name/` (with the trailing slash).
    pub base: String,
    pub low_latency: bool,
    pub end: Instant,
}

async fn fetch(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    r: &mut HlsResult,
) -> anyhow::Result<Bytes> {
    let t = Instant::now();
    let req = Request::get(path)
        .header("host", "rtmp-load")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    r.requests += 1;
    r.request_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    anyhow::ensure!(status.is_success(), "{path}: HTTP {status}");
    Ok(body)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub async fn run(p: HlsParams) -> HlsResult {
    let mut r = HlsResult::default();
    let start = Instant::now();
    if let Err(e) = follow(&p, &mut r, start).await {
        r.error = Some(e.to_string());
    }
    r
}

async fn follow(p: &HlsParams, r: &mut HlsResult, start: Instant) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(p.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    r.connected = true;
    let base = &p.base;
    fetch(&mut sender, &format!("{base}index.m3u8"), r).await?;
    let mut pl = parse(std::str::from_utf8(
        &fetch(&mut sender, &format!("{base}media.m3u8"), r).await?,
    )?);
    if let Some(map) = &pl.map {
        r.bytes += fetch(&mut sender, &format!("{base}{map}"), r).await?.len() as u64;
    }
    // Start at the newest independent point: the last whole segment, or (LL) its parts.
    let mut last: Option<(u64, Option<usize>)> = None;
    let mut first_at: Option<Instant> = None;
    let mut last_media = Instant::now();
    while Instant::now() < p.end {
        let wanted: Vec<Entry> = pl
            .entries
            .iter()
            .filter(|e| e.part.is_some() == p.low_latency)
            .filter(|e| match last {
                None => true,
                Some((m, part)) => (e.msn, e.part) > (m, part),
            })
            .cloned()
            .collect();
        // A joiner takes only the newest entry (the live edge), not the window.
        let wanted = if last.is_none() {
            wanted.into_iter().last().into_iter().collect()
        } else {
            wanted
        };
        for e in wanted {
            let body = fetch(&mut sender, &format!("{base}{}", e.uri), r).await?;
            r.bytes += body.len() as u64;
            let now = Instant::now();
            if first_at.is_none() {
                first_at = Some(now);
                r.first_media_ms = Some(now.duration_since(start).as_secs_f64() * 1000.0);
            }
            if now.duration_since(last_media)
                > Duration::from_secs(1) + Duration::from_secs_f64(pl.target_secs)
            {
                r.stalls += 1;
            }
            last_media = now;
            if e.end_wall_ms > 0.0 {
                r.edge_latency_ms.push(now_ms() - e.end_wall_ms);
            }
            last = Some((e.msn, e.part));
        }
        if Instant::now() >= p.end {
            break;
        }
        let path = match (p.low_latency, last) {
            (true, Some((msn, Some(part)))) => {
                // After a segment's last part, the next one is part 0 of the next segment.
                let closed = pl.entries.iter().any(|e| e.msn == msn && e.part.is_none());
                let (m, n) = if closed {
                    (msn + 1, 0)
                } else {
                    (msn, part + 1)
                };
                format!("{base}media.m3u8?_HLS_msn={m}&_HLS_part={n}")
            }
            _ => {
                // Standard players poll about every half target duration.
                tokio::time::sleep(Duration::from_secs_f64(pl.target_secs.max(1.0) / 2.0)).await;
                format!("{base}media.m3u8")
            }
        };
        let text = fetch(&mut sender, &path, r).await?;
        pl = parse(std::str::from_utf8(&text)?);
    }
    if let Some(f) = first_at {
        r.active_secs = Instant::now().duration_since(f).as_secs_f64();
    }
    Ok(())
}

/// An HTTP-FLV viewer: `GET /app/name.flv`, read until `end`.
pub async fn run_flv(addr: SocketAddr, path: String, end: Instant) -> HlsResult {
    let mut r = HlsResult::default();
    let start = Instant::now();
    // When media first came: active time counts from here however the response ends (the
    // publisher leaving at the end of a run ends it too).
    let mut first: Option<Instant> = None;
    let res: anyhow::Result<()> = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        r.connected = true;
        let req = Request::get(&path)
            .header("host", "rtmp-load")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: HTTP {}", resp.status());
        let mut body = resp.into_body();
        let mut last = Instant::now();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(frame) = tokio::time::timeout(left, body.frame()).await else {
                break;
            };
            let Some(frame) = frame else {
                anyhow::bail!("{path}: the server ended the response");
            };
            if let Ok(data) = frame?.into_data() {
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now);
                    r.first_media_ms = Some(now.duration_since(start).as_secs_f64() * 1000.0);
                }
                if now.duration_since(last) > Duration::from_secs(1) {
                    r.stalls += 1;
                }
                last = now;
                r.bytes += data.len() as u64;
            }
        }
        Ok(())
    }
    .await;
    if let Some(f) = first {
        r.active_secs = Instant::now().min(end).duration_since(f).as_secs_f64();
    }
    if let Err(e) = res {
        r.error = Some(e.to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_entries_and_dates() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-MAP:URI=\"init-a-0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-05T15:46:05.000Z\n\
            #EXT-X-PART:DURATION=1.000,URI=\"part-a-7-0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=1.000,URI=\"part-a-7-1.m4s\"\n#EXTINF:2.000,\nseg-a-7.m4s\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-12-05T15:46:07.000Z\n\
            #EXT-X-PART:DURATION=0.200,URI=\"part-a-8-0.m4s\",INDEPENDENT=YES\n";
        let p = parse(text);
        assert_eq!(p.map.as_deref(), Some("init-a-0.mp4"));
        let got: Vec<(u64, Option<usize>, &str)> = p
            .entries
            .iter()
            .map(|e| (e.msn, e.part, e.uri.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (7, Some(0), "part-a-7-0.m4s"),
                (7, Some(1), "part-a-7-1.m4s"),
                (7, None, "seg-a-7.m4s"),
                (8, Some(0), "part-a-8-0.m4s")
            ]
        );
        let t0 = parse_rfc3339_ms("2026-12-05T15:46:05.000Z").unwrap();
        assert_eq!(t0, 1_796_485_565_000.0);
        assert_eq!(p.entries[2].end_wall_ms, t0 + 2000.0);
        assert_eq!(p.entries[3].end_wall_ms, t0 + 2200.0);
    }
}
