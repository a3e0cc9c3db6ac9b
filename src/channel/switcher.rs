//! The channel's switcher, sans-IO: source events and clock ticks in, the channel's frames
//! out. It decides which source is on air (priority order, failover on an end or a stall,
//! switch back once a higher one has been stable, an operator's pin), plays the slate when
//! none is, and keeps one continuous output timeline (`output`): every switch lands on a
//! keyframe and is rebased (audio and video together) to the last output timestamp plus one
//! frame, sequence headers go out only when they change, and the audio gap before a switch
//! is filled with silence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use super::event::{Event, OnAir, Pin, Reason};
use super::format::Format;
pub use super::output::Emit;
use super::output::{cts, Output};
use super::slate::Slate;
use crate::media::cache::StreamCache;
use crate::media::frame::{MediaKind, SharedFrame};
use slate_loop::SlatePlay;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub source_timeout: Duration,
    pub switch_back_after: Duration,
    pub strict: bool,
}

#[derive(Default)]
struct Feed {
    live: bool,
    /// Delivering without a gap since (how stable it is).
    since: Option<Instant>,
    /// The last coded audio or video frame (headers and metadata do not count).
    last_media: Option<Instant>,
    /// The last coded video frame, once it sent any: a source whose pictures stopped is
    /// lost even if its audio goes on.
    last_video: Option<Instant>,
    cache: StreamCache,
    format: Format,
    /// Its format was compared since it published, and what the last comparison found.
    checked: bool,
    reported: Vec<String>,
}

impl Feed {
    fn fresh(&self, now: Instant, timeout: Duration) -> bool {
        let recent = |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) < timeout);
        self.live
            && recent(self.last_media)
            && (self.last_video.is_none() || recent(self.last_video))
    }
}

/// A loss whose replacement has not sent its first frame yet.
struct Loss {
    at: Instant,
    from: OnAir,
}

pub struct Switcher {
    settings: Settings,
    feeds: Vec<Feed>,
    slate: Option<Arc<Slate>>,
    playing: Option<SlatePlay>,
    on_air: OnAir,
    /// Output timestamp = source timestamp + offset (wrapping), for the source on air.
    offset: u32,
    /// A planned switch waiting for that source's next keyframe.
    pending: Option<(usize, Reason)>,
    pin: Option<Pin>,
    loss: Option<Loss>,
    out: Output,
    events: Vec<Event>,
    slate_since: Option<Instant>,
    slate_total: Duration,
    switches: u64,
}

impl Switcher {
    pub fn new(sources: usize, slate: Option<Arc<Slate>>, settings: Settings) -> Self {
        Self {
            settings,
            feeds: (0..sources).map(|_| Feed::default()).collect(),
            slate,
            playing: None,
            on_air: OnAir::Nothing,
            offset: 0,
            pending: None,
            pin: None,
            loss: None,
            out: Output::default(),
            events: Vec::new(),
            slate_since: None,
            slate_total: Duration::ZERO,
            switches: 0,
        }
    }

    pub fn on_air(&self) -> OnAir {
        self.on_air
    }

    pub fn pin(&self) -> Option<Pin> {
        self.pin
    }

    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Time spent on the slate so far.
    pub fn slate_time(&self, now: Instant) -> Duration {
        self.slate_total
            + self
                .slate_since
                .map_or(Duration::ZERO, |s| now.duration_since(s))
    }

    pub fn slate(&self) -> Option<&Arc<Slate>> {
        self.slate.as_ref()
    }

    /// Per source: published, delivering now, and its format.
    pub fn source_state(&self, i: usize, now: Instant) -> (bool, bool, Format) {
        let f = &self.feeds[i];
        (f.live, f.fresh(now, self.settings.source_timeout), f.format)
    }

    /// How source `i`'s format differs from the slate's, while it is live.
    pub fn differences(&self, i: usize) -> &[String] {
        let f = &self.feeds[i];
        if f.live {
            &f.reported
        } else {
            &[]
        }
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Replaces the slate, after comparing it with every live source: a difference is
    /// reported, and in strict mode the new slate is refused (the old one stays) and the
    /// differences returned.
    pub fn set_slate(
        &mut self,
        slate: Arc<Slate>,
        now: Instant,
        out: &mut Vec<Emit>,
    ) -> Result<(), Vec<String>> {
        let mut all = Vec::new();
        for i in 0..self.feeds.len() {
            let f = &self.feeds[i];
            if !(f.live && f.checked) {
                continue;
            }
            let differences = slate.format.differences(&f.format);
            if differences.is_empty() {
                continue;
            }
            // Said of the slate: "video <the slate's> instead of <the source's>".
            all.extend(f.format.differences(&slate.format));
            if !self.settings.strict {
                self.events.push(Event::Mismatch {
                    source: i,
                    differences,
                    slate_refused: false,
                });
            }
        }
        if self.settings.strict && !all.is_empty() {
            return Err(all);
        }
        self.slate = Some(slate);
        if self.on_air == OnAir::Slate {
            // The new file starts at its own keyframe, right after the old one's last frame.
            self.start_slate(None, now, out);
        }
        Ok(())
    }

    /// Pins the channel (None: back to the priority order).
    pub fn force(&mut self, pin: Option<Pin>, now: Instant, out: &mut Vec<Emit>) {
        self.pin = pin;
        self.pending = None;
        self.poll(now, out);
    }

    pub fn on_publish(&mut self, i: usize) {
        self.feeds[i] = Feed {
            live: true,
            ..Feed::default()
        };
    }

    pub fn on_unpublish(&mut self, i: usize, now: Instant, out: &mut Vec<Emit>) {
        let f = &mut self.feeds[i];
        f.live = false;
        f.since = None;
        f.cache.clear();
        if self.on_air == OnAir::Source(i) {
            self.lose(i, Reason::Ended, now, out);
        }
        if self.pending.is_some_and(|(p, _)| p == i) {
            self.pending = None;
        }
    }

    pub fn on_frame(&mut self, i: usize, frame: &SharedFrame, now: Instant, out: &mut Vec<Emit>) {
        let timeout = self.settings.source_timeout;
        let f = &mut self.feeds[i];
        if !f.live {
            return;
        }
        let coded = matches!(frame.kind, MediaKind::Audio | MediaKind::Video) && !frame.is_config();
        if coded {
            if !f.fresh(now, timeout) {
                f.since = Some(now);
            }
            f.last_media = Some(now);
            if frame.kind == MediaKind::Video {
                f.last_video = Some(now);
            }
        }
        f.cache.apply(frame);
        let mut check = false;
        if frame.is_config() {
            f.format =
                Format::from_configs(f.cache.config_frames().iter().map(|c| (c.kind, &c.payload)));
            check = f.checked; // a header changed mid-stream
        } else if coded && !f.checked {
            // Compared once its headers are in: at its first keyframe (audio only: at once).
            check = frame.is_video_keyframe() || f.format.video.is_none() && f.last_video.is_none();
            f.checked = check;
        }
        if check {
            self.check_format(i, now);
        }
        if !coded {
            if self.on_air == OnAir::Source(i) {
                self.forward(frame, out);
            }
            return;
        }
        if self.on_air == OnAir::Source(i) {
            self.forward(frame, out);
        } else if self.pending.is_some_and(|(p, _)| p == i) && self.starts_here(i, frame) {
            let (_, reason) = self.pending.take().unwrap_or((i, Reason::Returned));
            self.go_to_source(i, std::slice::from_ref(frame), reason, now, out);
        }
    }

    /// A frame a switch to source `i` can start at: a video keyframe, or any audio frame of
    /// a source without video.
    fn starts_here(&self, i: usize, frame: &SharedFrame) -> bool {
        frame.is_video_keyframe()
            || (frame.kind == MediaKind::Audio && self.feeds[i].format.video.is_none())
    }

    /// Stalls, returns, pins, and the slate's due frames. Call at [`Self::next_wake`].
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Emit>) {
        let timeout = self.settings.source_timeout;
        if let OnAir::Source(i) = self.on_air {
            if !self.feeds[i].fresh(now, timeout) {
                self.lose(i, Reason::Stalled, now, out);
            }
        }
        if let Some((p, _)) = self.pending {
            if !self.eligible(p, now) {
                self.pending = None;
            }
        }
        self.choose(now, out);
        self.play_slate(now, out);
    }

    fn eligible(&self, i: usize, now: Instant) -> bool {
        self.feeds[i].fresh(now, self.settings.source_timeout)
    }

    fn stable(&self, i: usize, now: Instant) -> bool {
        self.feeds[i]
            .since
            .is_some_and(|s| now.duration_since(s) >= self.settings.switch_back_after)
    }

    /// Sources in the order the channel prefers them: the pinned one first.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.feeds.len()).collect();
        if let Some(Pin::Source(p)) = self.pin {
            order.retain(|&i| i != p);
            order.insert(0, p);
        }
        order
    }

    /// The slate, unless strict mode holds it back: it differs from a live source.
    fn usable_slate(&self) -> Option<Arc<Slate>> {
        let slate = self.slate.as_ref()?;
        let differs =
            |f: &Feed| f.live && f.checked && !slate.format.differences(&f.format).is_empty();
        (!(self.settings.strict && self.feeds.iter().any(differs))).then(|| slate.clone())
    }

    /// Strict mode's refusal of the slate is in force.
    pub fn slate_refused(&self) -> bool {
        self.slate.is_some() && self.usable_slate().is_none()
    }

    /// A source that can go on air now, from its cached keyframe (`order` filtered).
    fn startable(&self, candidates: &[usize]) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .find(|&j| self.feeds[j].cache.has_gop())
    }

    /// Planned switches: to a pinned slate at once; to a better source at its next keyframe.
    fn choose(&mut self, now: Instant, out: &mut Vec<Emit>) {
        if self.pin == Some(Pin::Slate) && self.usable_slate().is_some() {
            if self.on_air != OnAir::Slate {
                self.loss = None;
                self.start_slate(Some(Reason::Forced), now, out);
            }
            return;
        }
        if self.on_air == OnAir::Nothing {
            // Nothing on air: the best source that can start now, from its cached keyframe.
            let live: Vec<usize> = self
                .order()
                .into_iter()
                .filter(|&j| self.eligible(j, now))
                .collect();
            if let Some(j) = self.startable(&live) {
                let forced = self.pin == Some(Pin::Source(j));
                let reason = if forced {
                    Reason::Forced
                } else {
                    Reason::Returned
                };
                let gop = self.feeds[j].cache.gop().to_vec();
                self.go_to_source(j, &gop, reason, now, out);
                return;
            }
        }
        for j in self.order() {
            if self.on_air == OnAir::Source(j) {
                return; // nothing preferred over what is on air is ready
            }
            if !self.eligible(j, now) {
                continue;
            }
            let forced = self.pin == Some(Pin::Source(j));
            let reason = if forced {
                Reason::Forced
            } else {
                Reason::Returned
            };
            if matches!(self.on_air, OnAir::Source(_)) && !forced && !self.stable(j, now) {
                continue;
            }
            if self.pending.map(|(p, _)| p) != Some(j) {
                self.pending = Some((j, reason));
            }
            break;
        }
        if self.on_air == OnAir::Nothing && self.usable_slate().is_some() {
            self.start_slate(None, now, out);
        }
    }

    /// The source on air is gone: the next live one from its cached keyframe (the viewers
    /// have already waited out the timeout), else the slate.
    fn lose(&mut self, i: usize, reason: Reason, now: Instant, out: &mut Vec<Emit>) {
        let at = match reason {
            Reason::Stalled => self.feeds[i].last_media.unwrap_or(now),
            _ => now,
        };
        self.loss = Some(Loss {
            at,
            from: self.on_air,
        });
        self.on_air = OnAir::Nothing;
        self.pending = None;
        let live: Vec<usize> = self
            .order()
            .into_iter()
            .filter(|&j| j != i && self.eligible(j, now))
            .collect();
        if let Some(j) = self.startable(&live) {
            let gop = self.feeds[j].cache.gop().to_vec();
            self.go_to_source(j, &gop, reason, now, out);
            return;
        }
        let slate = self.usable_slate().is_some();
        if let Some(&j) = live.first() {
            // With a slate on air meanwhile, that source's arrival is a return.
            self.pending = Some((j, if slate { Reason::Returned } else { reason }));
        }
        if slate {
            self.start_slate(Some(reason), now, out);
        } else {
            // Off air until a source comes (logged, not counted as a switch). Without a
            // replacement waiting, the outage is not a switch time either.
            if self.pending.is_none() {
                self.loss = None;
            }
            self.events.push(Event::Switched {
                from: OnAir::Source(i),
                to: OnAir::Nothing,
                reason,
                switch_time: None,
            });
        }
    }

    /// A source's format against the slate's (when its headers are in, and when they
    /// change), reported when the finding changes. In strict mode a differing slate is held
    /// back while that source is live: falling back to it would change the format.
    fn check_format(&mut self, i: usize, now: Instant) {
        let Some(slate) = &self.slate else {
            return;
        };
        let differences = slate.format.differences(&self.feeds[i].format);
        if differences == self.feeds[i].reported {
            return;
        }
        self.feeds[i].reported = differences.clone();
        if differences.is_empty() {
            return;
        }
        let slate_refused = self.settings.strict;
        if slate_refused && self.on_air == OnAir::Slate {
            self.playing = None;
            self.on_air = OnAir::Nothing;
            if let Some(s) = self.slate_since.take() {
                self.slate_total += now.duration_since(s);
            }
        }
        self.events.push(Event::Mismatch {
            source: i,
            differences,
            slate_refused,
        });
    }

    fn switched(&mut self, to: OnAir, reason: Reason, now: Instant) {
        let from = self.on_air;
        self.on_air = to;
        self.switches += 1;
        if let Some(s) = self.slate_since.take() {
            self.slate_total += now.duration_since(s);
        }
        if to == OnAir::Slate {
            self.slate_since = Some(now);
        }
        let (from, switch_time) = match self.loss.take() {
            Some(l) => (l.from, Some(now.duration_since(l.at))),
            None => (from, None),
        };
        self.events.push(Event::Switched {
            from,
            to,
            reason,
            switch_time,
        });
    }

    fn go_to_source(
        &mut self,
        i: usize,
        frames: &[SharedFrame],
        reason: Reason,
        now: Instant,
        out: &mut Vec<Emit>,
    ) {
        let Some(first) = frames.first() else {
            return;
        };
        self.playing = None;
        self.pending = None;
        let start = self.out.next_start(cts(first.kind, &first.payload));
        self.out.fill_audio(start, out);
        self.offset = start.wrapping_sub(first.timestamp);
        let headers: Vec<(MediaKind, Bytes)> = self.feeds[i]
            .cache
            .config_frames()
            .iter()
            .filter(|c| c.info.sequence_header)
            .map(|c| (c.kind, c.payload.clone()))
            .collect();
        self.out
            .send_headers(&headers, self.feeds[i].format, start, out);
        self.switched(OnAir::Source(i), reason, now);
        for f in frames {
            self.forward(f, out);
        }
    }

    /// A source's frame on air: headers only when they change, media rebased (again, as at
    /// a switch, if the source's own clock jumped).
    fn forward(&mut self, f: &SharedFrame, out: &mut Vec<Emit>) {
        let mut ts = f.timestamp.wrapping_add(self.offset);
        if !f.is_config() && self.out.breaks(f.kind, ts) {
            let start = self.out.next_start(cts(f.kind, &f.payload));
            self.offset = start.wrapping_sub(f.timestamp);
            ts = start;
        }
        match f.kind {
            MediaKind::Metadata => {} // the channel announces its own
            MediaKind::Video | MediaKind::Audio if f.info.sequence_header => {
                let OnAir::Source(i) = self.on_air else {
                    return;
                };
                let format = self.feeds[i].format;
                self.out
                    .send_headers(&[(f.kind, f.payload.clone())], format, ts, out);
            }
            _ => self.out.emit(f.kind, ts, f.payload.clone(), out),
        }
    }
}

mod slate_loop;
#[cfg(test)]
mod tests;
