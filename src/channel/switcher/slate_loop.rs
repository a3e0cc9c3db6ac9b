//! The slate on air: played from its first keyframe right after the output's last frame,
//! each frame when its time comes, looped with continuous timestamps.

use std::time::{Duration, Instant};

use super::{cts, Emit, OnAir, Reason, Switcher};

/// A slate frame this late is not sent in a burst with the ones before it.
const MAX_SLATE_LAG: Duration = Duration::from_millis(500);

pub(super) struct SlatePlay {
    started: Instant,
    /// Output timestamp of the current loop's first frame.
    base: u32,
    next: usize,
}

impl Switcher {
    /// When [`Self::poll`] has something to do next (a slate frame), at the latest.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.on_air != OnAir::Slate {
            return None;
        }
        let (p, s) = (self.playing.as_ref()?, self.slate.as_ref()?);
        let at = match s.frames.get(p.next) {
            Some(f) => p.started + Duration::from_millis(u64::from(f.at)),
            None => p.started + Duration::from_millis(u64::from(s.loop_ms + s.frames.first()?.at)),
        };
        Some(at.max(now))
    }

    /// Plays the slate from its first frame, right after the output's last one.
    pub(super) fn start_slate(
        &mut self,
        reason: Option<Reason>,
        now: Instant,
        out: &mut Vec<Emit>,
    ) {
        let Some(slate) = self.usable_slate() else {
            return;
        };
        let first_cts = slate.frames.first().map_or(0, |f| cts(f.kind, &f.payload));
        let start = self.out.next_start(first_cts);
        self.out.fill_audio(start, out);
        self.out
            .send_headers(&slate.config, slate.format, start, out);
        self.playing = Some(SlatePlay {
            started: now,
            base: start,
            next: 0,
        });
        match reason {
            Some(reason) => self.switched(OnAir::Slate, reason, now),
            None if self.on_air != OnAir::Slate => {
                // On air from the start (or after nothing was): not a switch.
                self.on_air = OnAir::Slate;
                self.slate_since = Some(now);
            }
            None => {}
        }
        self.play_slate(now, out);
    }

    pub(super) fn play_slate(&mut self, now: Instant, out: &mut Vec<Emit>) {
        if self.on_air != OnAir::Slate {
            return;
        }
        let (Some(slate), Some(p)) = (self.slate.clone(), self.playing.as_mut()) else {
            return;
        };
        let mut due = Vec::new();
        loop {
            if p.next >= slate.frames.len() {
                // Next loop: the file's first keyframe again, one loop length later.
                p.started += Duration::from_millis(u64::from(slate.loop_ms));
                p.base = p.base.wrapping_add(slate.loop_ms);
                p.next = 0;
            }
            let f = &slate.frames[p.next];
            let at = p.started + Duration::from_millis(u64::from(f.at));
            if at > now {
                break;
            }
            if now.duration_since(at) > MAX_SLATE_LAG {
                // The task was held up: carry on from now rather than burst the backlog.
                p.started += now.duration_since(at);
            }
            p.next += 1;
            due.push((f.kind, p.base.wrapping_add(f.at), f.payload.clone()));
        }
        for (kind, ts, payload) in due {
            self.out.emit(kind, ts, payload, out);
        }
    }
}
