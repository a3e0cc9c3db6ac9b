//! HLS from the viewer's side for the tests: binary HTTP GETs with timing, a media playlist
//! parser, and a checker for the MUSTs of draft-pantos-hls-rfc8216bis that a playlist (and
//! its successor) must meet.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A GET with `Connection: close`; the body as sent (Content-Length or until close).
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the media listener");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let elapsed = start.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head from {path}: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
        elapsed,
    }
}

/// The status of a GET whose body may never end (HTTP-FLV): reads the head only.
pub fn status_only(addr: SocketAddr, path: &str) -> u16 {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to the media listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Part {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    /// None for the open segment (parts only).
    pub uri: Option<String>,
    pub duration: f64,
    pub parts: Vec<Part>,
    pub discontinuity: bool,
    pub map: String,
    pub pdt: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MediaPlaylist {
    pub target: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub part_target: Option<f64>,
    pub part_hold_back: Option<f64>,
    pub can_block: bool,
    pub independent_segments: bool,
    pub skipped: u64,
    pub segments: Vec<Segment>,
    pub preload_hint: Option<String>,
    pub endlist: bool,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    // Attribute lists: NAME=value pairs separated by commas outside quotes.
    let mut in_quotes = false;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                items.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&rest[start..]);
    items
        .into_iter()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

impl MediaPlaylist {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some("#EXTM3U") {
            return Err("does not start with #EXTM3U".into());
        }
        let mut p = MediaPlaylist::default();
        let mut target = None;
        let mut parts = Vec::new();
        let mut disc = false;
        let mut map = String::new();
        let mut pdt = None;
        let mut extinf: Option<f64> = None;
        let mut msn = None;
        for line in lines {
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{line}: {e}"));
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                target = Some(v.parse::<u64>().map_err(|e| format!("{line}: {e}"))?);
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().map_err(|e| format!("{line}: {e}"))?;
            } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                p.discontinuity_sequence = v.parse().map_err(|e| format!("{line}: {e}"))?;
            } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
                p.can_block = attr(line, "CAN-BLOCK-RELOAD") == Some("YES");
                p.part_hold_back = attr(line, "PART-HOLD-BACK").map(num).transpose()?;
            } else if line.starts_with("#EXT-X-PART-INF:") {
                p.part_target = attr(line, "PART-TARGET").map(num).transpose()?;
            } else if line.starts_with("#EXT-X-SKIP:") {
                p.skipped = attr(line, "SKIPPED-SEGMENTS")
                    .ok_or("SKIP without SKIPPED-SEGMENTS")?
                    .parse()
                    .map_err(|e| format!("{line}: {e}"))?;
            } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
                p.independent_segments = true;
            } else if line == "#EXT-X-DISCONTINUITY" {
                disc = true;
            } else if line.starts_with("#EXT-X-MAP:") {
                map = attr(line, "URI").ok_or("MAP without URI")?.to_string();
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                pdt = Some(v.to_string());
            } else if line.starts_with("#EXT-X-PART:") {
                parts.push(Part {
                    duration: num(attr(line, "DURATION").ok_or("PART without DURATION")?)?,
                    uri: attr(line, "URI").ok_or("PART without URI")?.to_string(),
                    independent: attr(line, "INDEPENDENT") == Some("YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                extinf = Some(num(v
                    .trim_end_matches(',')
                    .split(',')
                    .next()
                    .unwrap_or(""))?);
            } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
                p.preload_hint = attr(line, "URI").map(str::to_string);
            } else if line == "#EXT-X-ENDLIST" {
                p.endlist = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                let n = *msn.get_or_insert(p.media_sequence + p.skipped);
                let duration = extinf.take().ok_or(format!("URI {line} without EXTINF"))?;
                p.segments.push(Segment {
                    msn: n,
                    uri: Some(line.to_string()),
                    duration,
                    parts: std::mem::take(&mut parts),
                    discontinuity: std::mem::take(&mut disc),
                    map: map.clone(),
                    pdt: pdt.take(),
                });
                msn = Some(n + 1);
            }
        }
        if !parts.is_empty() {
            let n = msn.unwrap_or(p.media_sequence + p.skipped);
            p.segments.push(Segment {
                msn: n,
                uri: None,
                duration: parts.iter().map(|x| x.duration).sum(),
                parts,
                discontinuity: disc,
                map,
                pdt,
            });
        }
        p.target = target.ok_or("no EXT-X-TARGETDURATION")?;
        Ok(p)
    }

    /// The last complete segment's number.
    pub fn last_complete(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.uri.is_some())
            .map(|s| s.msn)
    }

    /// Every URI it lists: maps, segments, parts, the preload hint.
    pub fn uris(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.segments {
            if !out.contains(&s.map) {
                out.push(s.map.clone());
            }
            out.extend(s.parts.iter().map(|p| p.uri.clone()));
            out.extend(s.uri.clone());
        }
        out
    }

    /// The spec's MUSTs for one playlist, and against the previous one from the same URL.
    pub fn check(&self, prev: Option<&MediaPlaylist>) -> Result<(), String> {
        for w in self.segments.windows(2) {
            // Our dates are all `YYYY-MM-DDTHH:MM:SS.mmmZ`: text order is time order.
            if w[1].pdt < w[0].pdt {
                return Err(format!(
                    "PROGRAM-DATE-TIME went back at segment {}",
                    w[1].msn
                ));
            }
        }
        for s in &self.segments {
            if s.uri.is_some() && s.duration <= 0.0 {
                return Err(format!("segment {} lasts {} s", s.msn, s.duration));
            }
            if s.uri.is_some() && (s.duration.round() as u64) > self.target {
                return Err(format!(
                    "segment {} lasts {} s, target duration {}",
                    s.msn, s.duration, self.target
                ));
            }
            if s.map.is_empty() {
                return Err(format!("segment {} has no EXT-X-MAP", s.msn));
            }
            if s.pdt.is_none() {
                return Err(format!("segment {} has no PROGRAM-DATE-TIME", s.msn));
            }
            // A segment listed with its parts (all of them) shows how it starts.
            if self.independent_segments && s.parts.first().is_some_and(|p| !p.independent) {
                return Err(format!(
                    "INDEPENDENT-SEGMENTS, but segment {} starts with a dependent part",
                    s.msn
                ));
            }
            if let Some(pt) = self.part_target {
                for p in &s.parts {
                    if p.duration > pt + 0.0015 {
                        return Err(format!(
                            "part {} lasts {} s > PART-TARGET {pt}",
                            p.uri, p.duration
                        ));
                    }
                }
                if s.uri.is_some() && !s.parts.is_empty() {
                    let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
                    if (sum - s.duration).abs() > 0.002 * s.parts.len() as f64 {
                        return Err(format!(
                            "segment {}: parts sum to {sum}, EXTINF {}",
                            s.msn, s.duration
                        ));
                    }
                }
            }
        }
        if let (Some(pt), Some(phb)) = (self.part_target, self.part_hold_back) {
            if phb < 3.0 * pt - 1e-9 {
                return Err(format!("PART-HOLD-BACK {phb} < 3 x PART-TARGET {pt}"));
            }
        }
        if self.part_target.is_some() && self.part_hold_back.is_none() {
            return Err("PART-INF without PART-HOLD-BACK".into());
        }
        if let Some(prev) = prev {
            // rfc8216bis 4.4.3.1: MUST NOT change.
            if self.target != prev.target {
                return Err(format!(
                    "EXT-X-TARGETDURATION changed from {} to {}",
                    prev.target, self.target
                ));
            }
            if self.media_sequence < prev.media_sequence {
                return Err(format!(
                    "media sequence went back: {} after {}",
                    self.media_sequence, prev.media_sequence
                ));
            }
            if self.discontinuity_sequence < prev.discontinuity_sequence {
                return Err("discontinuity sequence went back".into());
            }
            // A segment in both must keep its URI and duration.
            for s in self.segments.iter().filter(|s| s.uri.is_some()) {
                if let Some(o) = prev
                    .segments
                    .iter()
                    .find(|o| o.msn == s.msn && o.uri.is_some())
                {
                    if o.uri != s.uri || (o.duration - s.duration).abs() > 1e-6 {
                        return Err(format!("segment {} changed between reloads", s.msn));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `base` is the playlist's folder (`/live/x/`); `uri` relative to it.
pub fn resolve(base: &str, uri: &str) -> String {
    format!("{base}{uri}")
}
