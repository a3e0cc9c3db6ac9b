//! HLS to a storage target (`--hls-store`): after each change of a stream's timeline, the
//! objects a CDN needs to serve it from the bucket, as uploader jobs: init segments, every
//! completed segment (and each part with `--hls-store-parts`), the media playlist as a
//! bucket holds it, and the multivariant playlist when it changes. Segments that left the
//! window are deleted once a client that read an older playlist is done with them
//! (three target durations), or with a retention (`keep`) kept that long as an archive,
//! listed in a VOD playlist (`vod.m3u8`) written when the stream ends. Objects keep the
//! names the media listener serves, under `{prefix}{app}/{name}/`, so the playlists'
//! relative URIs resolve in the bucket too.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::playlist::{rfc3339_ms, Timeline};
use crate::shard::hooks::ObjectStore;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const PLAYLIST_CACHE: &str = "no-cache";
const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// Where a server's HLS goes, shared by every stream.
pub struct HlsStore {
    pub objects: Arc<dyn ObjectStore>,
    /// Upload parts too (LL-HLS from the bucket).
    pub parts: bool,
    /// Segments outlive the window this long (an archive); None deletes them.
    pub keep: Option<Duration>,
}

/// A stored segment the archive lists.
struct Archived {
    msn: u64,
    duration_ms: u64,
    discontinuity: bool,
    independent: bool,
    init: u32,
    pdt_ms: u64,
    /// Deleted from the bucket then.
    until: Instant,
}

/// What one stream has handed to the uploader so far.
pub struct StreamStore {
    cfg: Arc<HlsStore>,
    /// `app/name`: the folder, and the jobs' order key.
    key: String,
    inits: HashSet<u32>,
    /// The last segment uploaded whole.
    segments_done: Option<u64>,
    /// Parts uploaded of the open segment: (msn, count).
    parts_done: (u64, usize),
    /// The first segment the uploaded playlist listed.
    listed_from: Option<u64>,
    /// Objects to delete, when.
    deletions: VecDeque<(Instant, String)>,
    multivariant: String,
    epoch: String,
    archive: VecDeque<Archived>,
}

impl StreamStore {
    pub fn new(cfg: Arc<HlsStore>, key: &str) -> Self {
        Self {
            cfg,
            key: key.to_string(),
            inits: HashSet::new(),
            segments_done: None,
            parts_done: (0, 0),
            listed_from: None,
            deletions: VecDeque::new(),
            multivariant: String::new(),
            epoch: String::new(),
            archive: VecDeque::new(),
        }
    }

    fn submit(
        &self,
        file: &str,
        body: Vec<Bytes>,
        content_type: &'static str,
        cache: &'static str,
    ) {
        let name = format!("{}/{file}", self.key);
        self.cfg
            .objects
            .put(&self.key, name, body, content_type, cache);
    }

    fn delete(&self, file: String) {
        self.cfg
            .objects
            .delete(&self.key, format!("{}/{file}", self.key));
    }

    /// Queues what changed in `t` since the last call; `ended`: the publisher left.
    pub fn sync(&mut self, t: &Timeline, ended: bool, now: Instant) {
        if t.epoch != self.epoch {
            // A new timeline (the stream was forgotten and published again): start over.
            *self = Self::new(self.cfg.clone(), &self.key);
            self.epoch = t.epoch.clone();
        }
        let epoch = &t.epoch;
        let mut changed = ended;
        for s in &t.segments {
            if self.inits.insert(s.init.id) {
                let name = format!("init-{epoch}-{}.mp4", s.init.id);
                self.submit(&name, vec![s.init.data.clone()], "video/mp4", IMMUTABLE);
            }
            if self.cfg.parts {
                let (msn, done) = self.parts_done;
                let from = if msn == s.msn { done } else { 0 };
                if msn <= s.msn && from < s.parts.len() {
                    for (i, p) in s.parts.iter().enumerate().skip(from) {
                        let name = format!("part-{epoch}-{}-{i}.m4s", s.msn);
                        self.submit(&name, p.data.clone(), "video/iso.segment", IMMUTABLE);
                    }
                    self.parts_done = (s.msn, s.parts.len());
                    changed = true;
                }
            }
            if s.complete && self.segments_done.is_none_or(|d| s.msn > d) {
                let name = format!("seg-{epoch}-{}.m4s", s.msn);
                self.submit(&name, s.body(), "video/iso.segment", IMMUTABLE);
                self.segments_done = Some(s.msn);
                if let Some(keep) = self.cfg.keep {
                    self.archive.push_back(Archived {
                        msn: s.msn,
                        duration_ms: s.duration_ms(),
                        discontinuity: s.discontinuity,
                        independent: s.independent(),
                        init: s.init.id,
                        pdt_ms: s.pdt_ms,
                        until: now + keep,
                    });
                }
                changed = true;
            }
        }
        // Players that do not speak LL-HLS need a whole segment: no playlist before one.
        if !changed || !t.has_complete_segment() {
            return self.due_deletions(now);
        }
        if let Some(first) = t.segments.front().map(|s| s.msn) {
            // Segments that left the playlist: gone after three target durations.
            let at = now + Duration::from_secs(3 * t.target_secs());
            for msn in self.listed_from.unwrap_or(first)..first {
                if self.cfg.keep.is_none() {
                    self.deletions
                        .push_back((at, format!("seg-{epoch}-{msn}.m4s")));
                }
                if self.cfg.parts {
                    // Part counts of retired segments are unknown here: a segment is at
                    // most ~60 s / 50 ms parts, but the usual count is its duration / part.
                    for i in 0..parts_per_segment(t) {
                        self.deletions
                            .push_back((at, format!("part-{epoch}-{msn}-{i}.m4s")));
                    }
                }
            }
            self.listed_from = Some(first);
        }
        let media = t.media_static(self.cfg.parts, ended);
        self.submit(
            "media.m3u8",
            vec![Bytes::from(media)],
            PLAYLIST,
            PLAYLIST_CACHE,
        );
        if ended && self.cfg.keep.is_some() && !self.archive.is_empty() {
            let vod = self.vod(t);
            self.submit("vod.m3u8", vec![Bytes::from(vod)], PLAYLIST, PLAYLIST_CACHE);
        }
        if let Some(mv) = t.multivariant("") {
            if mv != self.multivariant {
                self.submit(
                    "index.m3u8",
                    vec![Bytes::from(mv.clone())],
                    PLAYLIST,
                    PLAYLIST_CACHE,
                );
                self.multivariant = mv;
            }
        }
        if ended {
            // No sync follows until a republish: what is due later goes now.
            for (_, name) in std::mem::take(&mut self.deletions) {
                self.delete(name);
            }
        }
        self.due_deletions(now);
    }

    /// The archive as a VOD playlist: every kept segment, start to end (a new init
    /// segment is a discontinuity).
    fn vod(&self, t: &Timeline) -> String {
        let epoch = &self.epoch;
        let longest = self.archive.iter().map(|a| (a.duration_ms + 500) / 1000);
        let td = longest.max().unwrap_or(0).max(t.target_secs());
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{td}\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        );
        if self.archive.iter().all(|a| a.independent) {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let first = self.archive.front().map_or(0, |a| a.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let mut map = None;
        for (i, a) in self.archive.iter().enumerate() {
            if i > 0 && (a.discontinuity || map != Some(a.init)) {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(a.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"init-{epoch}-{}.mp4\"", a.init);
                map = Some(a.init);
            }
            let _ = write!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\nseg-{epoch}-{}.m4s\n",
                rfc3339_ms(a.pdt_ms),
                a.duration_ms as f64 / 1000.0,
                a.msn
            );
        }
        out.push_str("#EXT-X-ENDLIST\n");
        out
    }

    fn due_deletions(&mut self, now: Instant) {
        // Kept segments go when their time is up and the live playlist no longer lists them.
        let listed = self.listed_from.unwrap_or(0);
        while self
            .archive
            .front()
            .is_some_and(|a| a.until <= now && a.msn < listed)
        {
            if let Some(a) = self.archive.pop_front() {
                self.delete(format!("seg-{}-{}.m4s", self.epoch, a.msn));
            }
        }
        while self.deletions.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, name)) = self.deletions.pop_front() {
                self.delete(name);
            }
        }
    }
}

/// Parts a segment may hold: its target duration over the part length, with room for the
/// parts cut short at keyframes.
fn parts_per_segment(t: &Timeline) -> usize {
    let cfg = t.config();
    ((t.target_secs() * 1000 / cfg.part_ms.max(1)) as usize + 2).min(1200)
}
