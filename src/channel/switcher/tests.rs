use std::path::Path;

use super::*;
use crate::channel::output::silent_aac;
use crate::channel::slate::Slate;
use crate::media::codec::tests::{AVCC_640X360, HVCC_640X360};
use crate::media::flv::{FlvTag, TAG_AUDIO, TAG_VIDEO};
use crate::media::frame::Frame;

const AAC_44K_STEREO: [u8; 4] = [0xAF, 0x00, 0x12, 0x10];
const AAC_48K_MONO: [u8; 4] = [0xAF, 0x00, 0x11, 0x88];

fn video_config(record: &[u8], hevc: bool) -> Vec<u8> {
    let mut p = vec![if hevc { 0x1C } else { 0x17 }, 0, 0, 0, 0];
    p.extend_from_slice(record);
    p
}

/// A test source: 25 fps video with a keyframe every second, AAC every ~23 ms. The
/// first payload byte after the header tags which source (and slate) a frame came from.
struct Gen {
    id: u8,
    /// Source timestamp at its start (encoders do not start at the channel's zero).
    t0: u32,
    video: Vec<u8>,
    audio: [u8; 4],
    /// Its audio stopped (video goes on).
    mute: bool,
    /// Composition offset of its pictures (B-frames), ms.
    cts: u8,
}

impl Gen {
    fn new(id: u8, t0: u32) -> Self {
        Gen {
            id,
            t0,
            video: video_config(AVCC_640X360, false),
            audio: AAC_44K_STEREO,
            mute: false,
            cts: 0,
        }
    }

    fn config(&self) -> Vec<SharedFrame> {
        vec![
            frame(MediaKind::Video, self.t0, &self.video),
            frame(MediaKind::Audio, self.t0, &self.audio),
        ]
    }

    /// The frames due at `ms` since it started.
    fn at(&self, ms: u32) -> Vec<SharedFrame> {
        let mut v = Vec::new();
        if ms.is_multiple_of(40) {
            let key = ms.is_multiple_of(1000);
            let b0 = if key { 0x17 } else { 0x27 };
            v.push(frame(
                MediaKind::Video,
                self.t0.wrapping_add(ms),
                &[b0, 1, 0, 0, self.cts, self.id],
            ));
        }
        let k = (f64::from(ms) / (1_024_000.0 / 44100.0)).floor();
        let prev = (f64::from(ms.saturating_sub(1)) / (1_024_000.0 / 44100.0)).floor();
        if !self.mute && (ms == 0 || k != prev) {
            v.push(frame(
                MediaKind::Audio,
                self.t0.wrapping_add(ms),
                &[0xAF, 1, self.id],
            ));
        }
        v
    }
}

fn frame(kind: MediaKind, ts: u32, payload: &[u8]) -> SharedFrame {
    Arc::new(Frame::new(kind, ts, Bytes::copy_from_slice(payload), 4096))
}

fn slate(video: &[u8], audio: &[u8], id: u8) -> Arc<Slate> {
    let mut tags = vec![
        FlvTag {
            tag_type: TAG_VIDEO,
            timestamp: 0,
            data: Bytes::copy_from_slice(video),
        },
        FlvTag {
            tag_type: TAG_AUDIO,
            timestamp: 0,
            data: Bytes::copy_from_slice(audio),
        },
    ];
    for ms in 0..2000u32 {
        if ms % 40 == 0 {
            let b0 = if ms % 1000 == 0 { 0x17 } else { 0x27 };
            tags.push(FlvTag {
                tag_type: TAG_VIDEO,
                timestamp: ms,
                data: Bytes::copy_from_slice(&[b0, 1, 0, 0, 0, id]),
            });
        }
        if ms % 23 == 0 {
            tags.push(FlvTag {
                tag_type: TAG_AUDIO,
                timestamp: ms,
                data: Bytes::copy_from_slice(&[0xAF, 1, id]),
            });
        }
    }
    Arc::new(Slate::from_tags(Path::new("slate.flv"), tags).unwrap())
}

struct Sim {
    sw: Switcher,
    t0: Instant,
    /// Milliseconds simulated so far.
    ms: u32,
    out: Vec<Emit>,
    /// Per source: when it started (sim ms), if running.
    running: Vec<Option<(u32, Gen)>>,
}

impl Sim {
    fn new(sources: usize, slate: Option<Arc<Slate>>, strict: bool) -> Sim {
        let settings = Settings {
            source_timeout: Duration::from_millis(1500),
            switch_back_after: Duration::from_secs(5),
            strict,
        };
        Sim {
            sw: Switcher::new(sources, slate, settings),
            t0: Instant::now(),
            ms: 0,
            out: Vec::new(),
            running: (0..sources).map(|_| None).collect(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(u64::from(self.ms))
    }

    fn publish(&mut self, i: usize, gen: Gen) {
        let now = self.now();
        self.sw.on_publish(i);
        for f in gen.config().into_iter().chain(gen.at(0)) {
            self.sw.on_frame(i, &f, now, &mut self.out);
        }
        self.running[i] = Some((self.ms, gen));
    }

    /// The source stops sending but stays published (a stalled encoder).
    fn stall(&mut self, i: usize) {
        self.running[i] = None;
    }

    fn unpublish(&mut self, i: usize) {
        self.running[i] = None;
        let now = self.now();
        self.sw.on_unpublish(i, now, &mut self.out);
    }

    fn run(&mut self, ms: u32) {
        for _ in 0..ms {
            self.ms += 1;
            let now = self.now();
            for i in 0..self.running.len() {
                let frames = match &self.running[i] {
                    Some((start, g)) => g.at(self.ms - start),
                    None => continue,
                };
                for f in frames {
                    self.sw.on_frame(i, &f, now, &mut self.out);
                }
            }
            if self.ms.is_multiple_of(10) || self.sw.next_wake(now).is_some_and(|w| w <= now) {
                self.sw.poll(now, &mut self.out);
            }
        }
    }

    /// Which input (source id byte) each output video frame came from, collapsed.
    fn video_runs(&self) -> Vec<u8> {
        let mut runs = Vec::new();
        for e in &self.out {
            if e.kind == MediaKind::Video && e.payload.len() == 6 {
                let id = e.payload[5];
                if runs.last() != Some(&id) {
                    runs.push(id);
                }
            }
        }
        runs
    }

    /// Every track's timestamps go forward by at most one frame + 100 ms.
    fn check_timeline(&self) {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let ts: Vec<u32> = self
                .out
                .iter()
                .filter(|e| e.kind == kind && e.payload.get(1) == Some(&1))
                .map(|e| e.timestamp)
                .collect();
            for w in ts.windows(2) {
                let step = if kind == MediaKind::Video { 40 } else { 24 };
                let d = w[1].wrapping_sub(w[0]) as i32;
                assert!(d > 0, "{kind:?} went back or repeated: {w:?}");
                assert!(d <= step + 100, "{kind:?} jumped: {w:?}");
            }
        }
        // Pictures are shown in order too (each test source has one composition offset).
        let pts: Vec<u32> = self
            .out
            .iter()
            .filter(|e| e.kind == MediaKind::Video && e.payload.len() == 6)
            .map(|e| e.timestamp.wrapping_add(u32::from(e.payload[4])))
            .collect();
        for w in pts.windows(2) {
            assert!(
                w[1].wrapping_sub(w[0]) as i32 > 0,
                "presentation went back: {w:?}"
            );
        }
    }

    fn switches(&mut self) -> Vec<(OnAir, OnAir, Reason, Option<Duration>)> {
        self.sw
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Switched {
                    from,
                    to,
                    reason,
                    switch_time,
                } => Some((from, to, reason, switch_time)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn the_first_source_starts_at_zero_with_metadata_and_headers() {
    let mut sim = Sim::new(2, None, false);
    sim.publish(0, Gen::new(1, 90_000));
    sim.run(100);
    let kinds: Vec<(MediaKind, u32)> = sim
        .out
        .iter()
        .take(4)
        .map(|e| (e.kind, e.timestamp))
        .collect();
    assert_eq!(
        kinds,
        [
            (MediaKind::Metadata, 0),
            (MediaKind::Video, 0),
            (MediaKind::Audio, 0),
            (MediaKind::Video, 0)
        ]
    );
    let meta = crate::media::metadata::Picture::from_metadata(&sim.out[0].payload);
    assert_eq!((meta.width, meta.height), (Some(640), Some(360)));
    assert_eq!(sim.sw.on_air(), OnAir::Source(0));
    sim.check_timeline();
}

#[test]
fn stall_goes_to_slate_then_backup_then_primary_after_it_is_stable() {
    let mut sim = Sim::new(
        2,
        Some(slate(
            &video_config(AVCC_640X360, false),
            &AAC_44K_STEREO,
            9,
        )),
        false,
    );
    sim.publish(0, Gen::new(1, 5_000));
    sim.run(3_000);
    sim.switches();
    sim.stall(0);
    sim.run(1_400);
    assert_eq!(sim.sw.on_air(), OnAir::Source(0), "not before the timeout");
    sim.run(200);
    assert_eq!(sim.sw.on_air(), OnAir::Slate);
    let s = sim.switches();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].0, s[0].1, s[0].2),
        (OnAir::Source(0), OnAir::Slate, Reason::Stalled)
    );
    let t = s[0].3.unwrap();
    assert!(
        t >= Duration::from_millis(1500) && t < Duration::from_millis(1700),
        "{t:?}"
    );
    sim.run(10_000);
    assert_eq!(sim.sw.on_air(), OnAir::Slate);
    // The backup publishes mid-GOP of the slate: it goes on air at its first keyframe.
    sim.publish(1, Gen::new(2, 0));
    sim.run(900);
    assert_eq!(sim.sw.on_air(), OnAir::Slate, "until its next keyframe");
    sim.run(200);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    let s = sim.switches();
    assert_eq!((s[0].1, s[0].2), (OnAir::Source(1), Reason::Returned));
    sim.run(2_000);
    // The primary returns; 5 s of stable delivery later it is back, at its keyframe.
    sim.publish(0, Gen::new(1, 0));
    sim.run(4_900);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    sim.run(1_200);
    assert_eq!(sim.sw.on_air(), OnAir::Source(0));
    let s = sim.switches();
    assert_eq!(
        (s[0].0, s[0].1, s[0].2, s[0].3),
        (OnAir::Source(1), OnAir::Source(0), Reason::Returned, None)
    );
    sim.run(1_000);
    assert_eq!(sim.video_runs(), [1, 9, 2, 1]);
    sim.check_timeline();
    // The slate's and the sources' headers are the same bytes: sent once.
    let headers = sim
        .out
        .iter()
        .filter(|e| e.kind != MediaKind::Metadata && e.payload.get(1) == Some(&0))
        .count();
    assert_eq!(headers, 2);
    // The slate looped (10 s of a 2 s file) with its first frame a keyframe each time.
    let slate_keys = sim
        .out
        .iter()
        .filter(|e| {
            e.kind == MediaKind::Video && e.payload[0] == 0x17 && e.payload.get(5) == Some(&9)
        })
        .count();
    assert!(slate_keys >= 10, "{slate_keys}");
}

#[test]
fn an_unpublished_primary_fails_over_to_the_backups_cached_gop_at_once() {
    let mut sim = Sim::new(2, None, false);
    sim.publish(0, Gen::new(1, 0));
    sim.publish(1, Gen::new(2, 70_000));
    sim.run(2_500);
    assert_eq!(sim.sw.on_air(), OnAir::Source(0));
    sim.switches();
    sim.unpublish(0);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    let s = sim.switches();
    assert_eq!(
        (s[0].1, s[0].2, s[0].3),
        (OnAir::Source(1), Reason::Ended, Some(Duration::ZERO))
    );
    sim.run(1_000);
    sim.check_timeline();
    assert_eq!(sim.video_runs(), [1, 2]);
}

#[test]
fn the_audio_gap_before_a_switch_is_filled_with_silence() {
    let mut sim = Sim::new(2, None, false);
    sim.publish(0, Gen::new(1, 0));
    sim.publish(1, Gen::new(2, 0));
    sim.run(2_000);
    // The primary's audio stops 300 ms before it unpublishes.
    if let Some((_, g)) = sim.running[0].as_mut() {
        g.mute = true;
    }
    sim.run(300);
    let before = sim.out.len();
    sim.unpublish(0);
    let silent: Vec<&Emit> = sim.out[before..]
        .iter()
        .filter(|e| e.kind == MediaKind::Audio && e.payload.len() == 11)
        .collect();
    assert!((11..=14).contains(&silent.len()), "{}", silent.len());
    assert_eq!(&silent[0].payload[2..], silent_aac(2).unwrap());
    sim.check_timeline();
}

#[test]
fn different_headers_are_sent_at_the_switch_and_strict_mode_refuses_the_source() {
    let mut sim = Sim::new(
        2,
        Some(slate(
            &video_config(AVCC_640X360, false),
            &AAC_44K_STEREO,
            9,
        )),
        false,
    );
    let mut other = Gen::new(2, 0);
    other.video = video_config(HVCC_640X360, true);
    other.audio = AAC_48K_MONO;
    sim.run(100);
    assert_eq!(
        sim.sw.on_air(),
        OnAir::Slate,
        "the slate plays from the start"
    );
    sim.publish(1, other);
    sim.run(1_200);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    let mismatch = sim.sw.take_events().into_iter().find_map(|e| match e {
        Event::Mismatch {
            differences,
            slate_refused,
            ..
        } => Some((differences, slate_refused)),
        _ => None,
    });
    let (d, refused) = mismatch.expect("a mismatch event");
    assert!(!refused);
    assert_eq!(d.len(), 2, "{d:?}");
    let headers = sim
        .out
        .iter()
        .filter(|e| e.kind != MediaKind::Metadata && e.payload.get(1) == Some(&0))
        .count();
    assert_eq!(headers, 4, "slate's two, then the source's two");
    assert!(sim.sw.slate().is_some(), "a warning only");

    // Strict: the slate that differs from a live source is held back, the source plays.
    let mut strict = Sim::new(
        2,
        Some(slate(
            &video_config(AVCC_640X360, false),
            &AAC_44K_STEREO,
            9,
        )),
        true,
    );
    strict.run(100);
    let mut other = Gen::new(2, 0);
    other.video = video_config(HVCC_640X360, true);
    strict.publish(1, other);
    strict.run(1_200);
    assert_eq!(strict.sw.on_air(), OnAir::Source(1));
    assert!(strict.sw.slate_refused());
    assert!(strict.sw.take_events().iter().any(|e| matches!(
        e,
        Event::Mismatch {
            slate_refused: true,
            ..
        }
    )));
    // A reloaded slate is checked against the live source: refused while it differs.
    let avc = slate(&video_config(AVCC_640X360, false), &AAC_44K_STEREO, 8);
    let now = strict.now();
    let mut out = Vec::new();
    assert!(strict.sw.set_slate(avc, now, &mut out).is_err());
    // The source stalls: it is still published, so the slate stays held back: nothing.
    strict.stall(1);
    strict.run(2_000);
    assert_eq!(strict.sw.on_air(), OnAir::Nothing);
    let off = strict.switches();
    assert_eq!(off.len(), 1);
    assert_eq!((off[0].1, off[0].3), (OnAir::Nothing, None));
    // It leaves: the slate is the channel's again.
    strict.unpublish(1);
    strict.run(100);
    assert_eq!(strict.sw.on_air(), OnAir::Slate);
    assert!(!strict.sw.slate_refused());
    let hevc = slate(&video_config(HVCC_640X360, true), &AAC_44K_STEREO, 8);
    let now = strict.now();
    assert!(
        strict.sw.set_slate(hevc, now, &mut out).is_ok(),
        "nothing live to differ from"
    );
}

#[test]
fn failover_takes_the_backup_that_can_start_now() {
    let mut sim = Sim::new(3, None, false);
    sim.publish(1, Gen::new(2, 0));
    sim.publish(2, Gen::new(3, 0));
    sim.run(1_500);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    // The preferred source is back but has sent no keyframe yet (headers and audio only).
    let now = sim.now();
    sim.sw.on_publish(0);
    for f in Gen::new(1, 0).config() {
        sim.sw.on_frame(0, &f, now, &mut sim.out);
    }
    sim.sw.on_frame(
        0,
        &frame(MediaKind::Audio, 0, &[0xAF, 1, 1]),
        now,
        &mut sim.out,
    );
    sim.switches();
    sim.unpublish(1);
    assert_eq!(
        sim.sw.on_air(),
        OnAir::Source(2),
        "the backup with a keyframe, at once"
    );
    let s = sim.switches();
    assert_eq!((s[0].2, s[0].3), (Reason::Ended, Some(Duration::ZERO)));
    sim.run(500);
    sim.check_timeline();
}

#[test]
fn timestamps_stay_continuous_across_the_clock_wrap_and_a_source_jump() {
    let mut sim = Sim::new(2, None, false);
    // The channel has run for 49.7 days: its clock wraps in 2 s.
    sim.sw.out = Output::starting_at(u32::MAX - 2_000);
    sim.publish(0, Gen::new(1, u32::MAX - 2_000));
    sim.run(4_000);
    // The encoder's clock jumps back 30 s without a republish.
    if let Some((_, g)) = sim.running[0].as_mut() {
        g.t0 = g.t0.wrapping_sub(30_000);
    }
    sim.run(2_000);
    let mut backup = Gen::new(2, 0);
    backup.cts = 80; // B-frames
    sim.publish(1, backup);
    sim.run(1_500);
    sim.unpublish(0);
    sim.run(1_000);
    sim.publish(0, Gen::new(1, 0));
    sim.run(6_500);
    assert_eq!(sim.video_runs(), [1, 2, 1]);
    sim.check_timeline();
}

#[test]
fn a_pin_switches_at_the_next_keyframe_and_holds_until_cleared() {
    let mut sim = Sim::new(
        2,
        Some(slate(
            &video_config(AVCC_640X360, false),
            &AAC_44K_STEREO,
            9,
        )),
        false,
    );
    sim.publish(0, Gen::new(1, 0));
    sim.publish(1, Gen::new(2, 0));
    sim.run(1_500);
    assert_eq!(sim.sw.on_air(), OnAir::Source(0));
    let now = sim.now();
    sim.sw.force(Some(Pin::Source(1)), now, &mut sim.out);
    sim.run(600);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1));
    sim.run(8_000);
    assert_eq!(sim.sw.on_air(), OnAir::Source(1), "the pin holds");
    let now = sim.now();
    sim.sw.force(Some(Pin::Slate), now, &mut sim.out);
    assert_eq!(sim.sw.on_air(), OnAir::Slate);
    sim.run(3_000);
    let now = sim.now();
    sim.sw.force(None, now, &mut sim.out);
    sim.run(1_000);
    assert_eq!(sim.sw.on_air(), OnAir::Source(0));
    let reasons: Vec<Reason> = sim.switches().iter().map(|s| s.2).collect();
    assert_eq!(
        reasons,
        [
            Reason::Returned,
            Reason::Forced,
            Reason::Forced,
            Reason::Returned
        ]
    );
    assert_eq!(sim.video_runs(), [1, 2, 9, 1]);
    sim.check_timeline();
    assert!(sim.sw.slate_time(sim.now()) >= Duration::from_millis(2_900));
}
