//! One stream's HLS timeline, sans-IO: the window of segments and parts the packager made,
//! the answers to blocking requests, and the playlists (multivariant, media with the
//! Low-Latency HLS tags of draft-pantos-hls-rfc8216bis, delta updates) written by hand.
//!
//! Resource names carry an epoch (when this timeline was made), so a URL never names two
//! different bodies even across a server restart: a CDN may cache them forever.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;

use super::packager::{Init, Out, Part};

/// A publisher gone this long ends the playlist (EXT-X-ENDLIST); a quicker republish
/// continues it.
pub const ENDLIST_AFTER_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct TimelineConfig {
    /// Complete segments kept and listed.
    pub window: usize,
    pub segment_ms: u64,
    pub part_ms: u64,
}

#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    pub init: Arc<Init>,
    pub discontinuity: bool,
    /// Wall clock of its first sample, ms since the Unix epoch.
    pub pdt_ms: u64,
    pub parts: Vec<Arc<Part>>,
    pub complete: bool,
}

impl Segment {
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// It starts with a keyframe (or has no video).
    pub fn independent(&self) -> bool {
        self.parts.first().is_none_or(|p| p.independent)
    }

    /// The segment's body: its parts back to back (a CMAF segment of several fragments).
    pub fn body(&self) -> Vec<Bytes> {
        self.parts
            .iter()
            .flat_map(|p| p.data.iter().cloned())
            .collect()
    }
}

/// Who reads a media playlist.
#[derive(Debug, Clone, Copy)]
enum Audience {
    /// A client of the media listener: LL-HLS with blocking reloads and preload hints.
    Viewer { skip: bool },
    /// A bucket a CDN serves from.
    Bucket { parts: bool, ended: bool },
}

/// What a blocking playlist request (`_HLS_msn`, `_HLS_part`) gets now.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    Yes,
    /// Not yet: wait for a change.
    Wait,
    /// Too far ahead: 400.
    TooFar,
}

/// A part or segment request.
#[derive(Debug)]
pub enum Resource {
    Body(Vec<Bytes>, usize),
    /// The next part (the preload hint): wait for it.
    Soon,
    Gone,
}

#[derive(Debug)]
pub struct Timeline {
    cfg: TimelineConfig,
    pub epoch: String,
    pub segments: VecDeque<Segment>,
    /// Segments that left the playlist, still served for three target durations
    /// (rfc8216bis 6.2.2: a client may have just read a playlist that lists them).
    retired: VecDeque<Segment>,
    next_msn: u64,
    discontinuity_seq: u64,
    init: Option<Arc<Init>>,
    pending_discontinuity: bool,
    /// Stream ms and wall ms that PROGRAM-DATE-TIME maps between.
    anchor: Option<(u64, u64)>,
    /// A publisher feeds it (parts will come: advertise the preload hint).
    pub live: bool,
    /// EXT-X-TARGETDURATION, as the packager fixed it.
    target_secs: u64,
    /// Wall clock (ms) when the publisher left, for expiry.
    pub ended_at_ms: Option<u64>,
}

impl Timeline {
    pub fn new(cfg: TimelineConfig, now_ms: u64) -> Self {
        Self {
            cfg,
            epoch: format!("{:x}", now_ms),
            segments: VecDeque::new(),
            retired: VecDeque::new(),
            next_msn: 0,
            discontinuity_seq: 0,
            init: None,
            pending_discontinuity: false,
            anchor: None,
            live: true,
            target_secs: cfg.segment_ms.div_ceil(1000).max(1),
            ended_at_ms: None,
        }
    }

    pub fn config(&self) -> TimelineConfig {
        self.cfg
    }

    pub fn current_init(&self) -> Option<&Arc<Init>> {
        self.init.as_ref()
    }

    pub fn target_secs(&self) -> u64 {
        self.target_secs
    }

    /// A publisher started (again): PROGRAM-DATE-TIME is anchored afresh.
    pub fn on_publish(&mut self) {
        self.live = true;
        self.ended_at_ms = None;
        self.anchor = None;
    }

    pub fn apply(&mut self, out: Out, now_ms: u64) {
        match out {
            Out::Init(i) => {
                self.close_open();
                self.pending_discontinuity = !self.segments.is_empty();
                self.init = Some(i);
            }
            Out::Part(p) => {
                let Some(init) = self.init.clone() else {
                    return;
                };
                let open = self.segments.back().is_some_and(|s| !s.complete);
                if p.starts_segment || !open {
                    self.close_open();
                    // The part was cut when its successor arrived: its first sample came
                    // in about its duration ago.
                    let (stream0, wall0) = *self
                        .anchor
                        .get_or_insert((p.start_ms, now_ms.saturating_sub(p.duration_ms)));
                    let pdt_ms = (wall0 + p.start_ms).saturating_sub(stream0);
                    let discontinuity = std::mem::take(&mut self.pending_discontinuity);
                    self.segments.push_back(Segment {
                        msn: self.next_msn,
                        init,
                        discontinuity,
                        pdt_ms,
                        parts: Vec::new(),
                        complete: false,
                    });
                    self.next_msn += 1;
                }
                self.target_secs = p.target_secs;
                if let Some(s) = self.segments.back_mut() {
                    s.parts.push(Arc::new(p));
                }
                self.trim();
            }
            Out::End => {
                self.close_open();
                self.live = false;
                self.ended_at_ms = Some(now_ms);
            }
        }
    }

    fn close_open(&mut self) {
        if let Some(s) = self.segments.back_mut() {
            s.complete = true;
        }
    }

    fn trim(&mut self) {
        let complete = self.segments.iter().filter(|s| s.complete).count();
        let mut extra = complete.saturating_sub(self.cfg.window);
        while extra > 0 {
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            extra -= 1;
            // The next segment keeps its discontinuity flag; the sequence counts the
            // ones that left (rfc8216bis 4.4.3.3).
            if let Some(next) = self.segments.front() {
                if next.discontinuity {
                    self.discontinuity_seq += 1;
                }
            }
            self.retired.push_back(s);
        }
        let keep_ms = 3 * self.target_secs * 1000;
        while self.retired.len() > 1
            && self
                .retired
                .iter()
                .skip(1)
                .map(|s| s.duration_ms())
                .sum::<u64>()
                >= keep_ms
        {
            self.retired.pop_front();
        }
        // A discontinuity on the first listed segment is already counted; keep the tag only
        // when a segment precedes it.
        if let Some(first) = self.segments.front_mut() {
            first.discontinuity = false;
        }
    }

    pub fn has_complete_segment(&self) -> bool {
        self.segments.iter().any(|s| s.complete)
    }

    fn last_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// Whether a blocking reload for `msn` (and `part`) can be answered.
    pub fn ready(&self, msn: u64, part: Option<usize>) -> Ready {
        let Some(last) = self.last_msn() else {
            return if msn <= 2 { Ready::Wait } else { Ready::TooFar };
        };
        // A playlist lists no segment before the first is complete (and fixes the target).
        let first_pending = self.live && !self.has_complete_segment();
        if msn > last + 2 {
            return Ready::TooFar;
        }
        // Advance Part Limit (rfc8216bis 6.2.5.2): no more than three seconds of parts ahead.
        let limit = (3000 / self.cfg.part_ms.max(1)) as usize;
        let listed = match self.segments.back() {
            Some(s) if s.msn == msn && !s.complete => s.parts.len(),
            _ if msn > last => 0,
            _ => usize::MAX / 2,
        };
        if part.is_some_and(|p| p > listed + limit) {
            return Ready::TooFar;
        }
        if !self.live {
            return Ready::Yes; // nothing more is coming for now: answer at once
        }
        if first_pending {
            return Ready::Wait;
        }
        let Some(s) = self.segments.iter().find(|s| s.msn == msn) else {
            return if msn < last { Ready::Yes } else { Ready::Wait };
        };
        match part {
            _ if s.complete => Ready::Yes,
            None => Ready::Wait,
            Some(p) if p < s.parts.len() => Ready::Yes,
            Some(_) => Ready::Wait,
        }
    }

    /// A listed or recently retired segment.
    fn find(&self, msn: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .chain(self.retired.iter())
            .find(|s| s.msn == msn)
    }

    pub fn segment(&self, msn: u64) -> Resource {
        match self.find(msn) {
            Some(s) if s.complete => Resource::Body(s.body(), s.len()),
            Some(_) => Resource::Soon,
            None if self.live && self.last_msn().is_some_and(|l| msn == l + 1) => Resource::Soon,
            None => Resource::Gone,
        }
    }

    pub fn part(&self, msn: u64, index: usize) -> Resource {
        match self.find(msn) {
            Some(s) => match s.parts.get(index) {
                Some(p) => Resource::Body(p.data.clone(), p.len),
                None if !s.complete && self.live && index == s.parts.len() => Resource::Soon,
                None => Resource::Gone,
            },
            // The hint may name part 0 of the next segment.
            None if self.live && index == 0 && self.last_msn().is_some_and(|l| msn == l + 1) => {
                Resource::Soon
            }
            None => Resource::Gone,
        }
    }

    pub fn init_body(&self, id: u32) -> Option<Bytes> {
        self.segments
            .iter()
            .chain(self.retired.iter())
            .map(|s| &s.init)
            .chain(self.init.iter())
            .find(|i| i.id == id)
            .map(|i| i.data.clone())
    }

    /// Peak bits per second over the listed segments (the open one included).
    pub fn bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.duration_ms() > 0)
            .map(|s| s.len() as u64 * 8 * 1000 / s.duration_ms())
            .max()
            .unwrap_or(0)
    }

    /// The multivariant playlist: one variant stream, the media playlist.
    pub fn multivariant(&self, query: &str) -> Option<String> {
        let init = self.init.as_ref()?;
        // No EXT-X-INDEPENDENT-SEGMENTS here: a GOP longer than the target duration makes
        // segments that do not start with a keyframe; the media playlist says when all do.
        let mut out = String::from("#EXTM3U\n");
        let bw = self.bandwidth().max(1);
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},CODECS=\"{}\"",
            init.tracks.codecs()
        );
        if let Some(v) = &init.tracks.video {
            if v.width > 0 && v.height > 0 {
                let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
            }
        }
        let _ = writeln!(out, "\nmedia.m3u8{query}");
        Some(out)
    }

    /// The media playlist. `query` (`?token=..` or empty) is carried into every URI;
    /// `skip` asks for a delta update (`_HLS_skip=YES`).
    pub fn media(&self, query: &str, skip: bool, now_ms: u64) -> String {
        self.render(query, Audience::Viewer { skip }, now_ms)
    }

    /// The media playlist as an object in a bucket: nothing to block on, no preload hint,
    /// parts only when they are stored too, ENDLIST once the publisher left.
    pub fn media_static(&self, parts: bool, ended: bool) -> String {
        self.render("", Audience::Bucket { parts, ended }, 0)
    }

    fn render(&self, query: &str, to: Audience, now_ms: u64) -> String {
        let td = self.target_secs;
        let part_s = super::packager::part_target_ms(self.cfg.part_ms) as f64 / 1000.0;
        let skip_until = 6 * td;
        let skip = matches!(to, Audience::Viewer { skip: true });
        let with_parts = matches!(
            to,
            Audience::Viewer { .. } | Audience::Bucket { parts: true, .. }
        );
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{td}\n",
            // EXT-X-MAP needs 6, EXT-X-SKIP 9; a playlist asks for no more than it uses.
            if skip { 9 } else { 6 },
        );
        match to {
            Audience::Viewer { .. } => {
                let _ = writeln!(
                    out,
                    "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until}.0,\
                     PART-HOLD-BACK={:.3}",
                    3.0 * part_s
                );
            }
            Audience::Bucket { parts: true, .. } => {
                let _ = writeln!(
                    out,
                    "#EXT-X-SERVER-CONTROL:PART-HOLD-BACK={:.3}",
                    3.0 * part_s
                );
            }
            Audience::Bucket { .. } => {}
        }
        if with_parts {
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_s:.3}");
        }
        if self.segments.iter().all(|s| s.independent()) {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let first = self.segments.front().map_or(self.next_msn, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_seq
        );

        // Segments that end more than CAN-SKIP-UNTIL before the end may be skipped.
        let total: u64 = self.segments.iter().map(|s| s.duration_ms()).sum();
        let mut skipped = 0;
        if skip {
            let mut end = 0;
            for s in self.segments.iter().filter(|s| s.complete) {
                end += s.duration_ms();
                if total - end >= skip_until * 1000 {
                    skipped += 1;
                } else {
                    break;
                }
            }
            if skipped > 0 {
                let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            }
        }
        // Parts are listed for the segments within three target durations of the end.
        let mut tail = 0;
        let mut parts_from = self.segments.len();
        for (i, s) in self.segments.iter().enumerate().rev() {
            if tail >= 3 * td * 1000 {
                break;
            }
            tail += s.duration_ms();
            parts_from = i;
        }
        let epoch = &self.epoch;
        let mut map: Option<u32> = None;
        for (i, s) in self.segments.iter().enumerate().skip(skipped) {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(s.init.id) {
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"init-{epoch}-{}.mp4{query}\"",
                    s.init.id
                );
                map = Some(s.init.id);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_ms(s.pdt_ms));
            if with_parts && i >= parts_from {
                for (n, p) in s.parts.iter().enumerate() {
                    let _ = write!(
                        out,
                        "#EXT-X-PART:DURATION={:.3},URI=\"part-{epoch}-{}-{n}.m4s{query}\"",
                        p.duration_ms as f64 / 1000.0,
                        s.msn
                    );
                    out.push_str(if p.independent {
                        ",INDEPENDENT=YES\n"
                    } else {
                        "\n"
                    });
                }
            }
            if s.complete {
                let _ = write!(
                    out,
                    "#EXTINF:{:.3},\nseg-{epoch}-{}.m4s{query}\n",
                    s.duration_ms() as f64 / 1000.0,
                    s.msn
                );
            }
        }
        let ended = match to {
            Audience::Bucket { ended, .. } => ended,
            Audience::Viewer { .. } => self
                .ended_at_ms
                .is_some_and(|at| now_ms.saturating_sub(at) >= ENDLIST_AFTER_MS),
        };
        if ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else if self.live && matches!(to, Audience::Viewer { .. }) {
            let (msn, n) = match self.segments.back() {
                Some(s) if !s.complete => (s.msn, s.parts.len()),
                _ => (self.next_msn, 0),
            };
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{epoch}-{msn}-{n}.m4s{query}\""
            );
        }
        out
    }
}

/// `2026-12-05T15:46:05.123Z`
pub fn rfc3339_ms(ms: u64) -> String {
    let c = crate::util::time::Civil::from_unix((ms / 1000) as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        ms % 1000
    )
}

#[cfg(test)]
mod tests;
